/**
 * A streaming integrity check of a zip archive, read once front to back:
 * every local header, every entry's data (CRC-32 computed on the way), every
 * data descriptor, then the central directory and the end records
 * (including zip64's), and finally whether the central directory agrees with
 * what was walked. This is what a zip reader such as PyTorch's (miniz) relies
 * on: it finds the end record, reads the central directory, and trusts its
 * offsets, sizes and CRCs.
 *
 * Why walk the local entries rather than seek from the central directory:
 * the caller feeds bytes once, in order, while hashing. The central
 * directory comes last, so the walk records what it saw (names, offsets,
 * sizes, CRCs) and compares at the end.
 *
 * Entries written with "sizes in a data descriptor" (general purpose flag
 * bit 3, as torch's miniz writer does for every record) carry no size in
 * their local header: the walk finds the end of a stored entry's data by
 * looking for a descriptor signature whose sizes equal the bytes walked so
 * far, which data bytes match only by (astronomically unlikely) accident.
 *
 * CRCs: a zero CRC in both the descriptor and the central directory means
 * "not recorded" (`torch.save` with `compute_crc32=False` writes that, and
 * `torch.load`, which never checks CRCs, accepts it): noted, not a finding.
 *
 * Memory: a tail of the file (256 KiB at most), the central directory (up to
 * 64 MiB, captured as it streams past), one record per entry (up to 100,000,
 * about 30 MB), at most 24 bytes held across chunk boundaries inside entry
 * data (one local header, at most 128 KiB, otherwise), and deflated entries
 * up to 16 MiB to check their CRC. Anything that does not fit is skipped with
 * a note, never guessed at: a central directory beyond the capture (with the
 * walk lost before it) or listing more than 100,000 entries, a deflated entry
 * too large to inflate, entries past the 100,000th.
 *
 * @module
 */

import { crc32, inflateRawSync } from "node:zlib";
import { concat, GrowableBytes, startsWithAt, TailBuffer, u16, u32, u64 } from "./bytes.ts";
import { type FormatFinding, hex } from "./checker.ts";

/** Local file header signature, `PK\x03\x04`. */
const LOCAL_HEADER_SIGNATURE = 0x04034b50;
/** Central directory file header signature, `PK\x01\x02`. */
const CENTRAL_HEADER_SIGNATURE = 0x02014b50;
/** End of central directory record signature, `PK\x05\x06`. */
const EOCD_SIGNATURE = 0x06054b50;
/** Zip64 end of central directory record signature, `PK\x06\x06`. */
const ZIP64_EOCD_SIGNATURE = 0x06064b50;
/** Zip64 end of central directory locator signature, `PK\x06\x07`. */
const ZIP64_LOCATOR_SIGNATURE = 0x07064b50;
/** Data descriptor signature, `PK\x07\x08`. */
const DESCRIPTOR_SIGNATURE = 0x08074b50;

const DESCRIPTOR_BYTES = [0x50, 0x4b, 0x07, 0x08];
const LOCAL_HEADER_BYTES = 30;
const CENTRAL_HEADER_BYTES = 46;
const EOCD_BYTES = 22;
const ZIP64_LOCATOR_BYTES = 20;
const ZIP64_EOCD_BYTES = 56;
const MAX_COMMENT = 65535;
const FLAG_ENCRYPTED = 0x0001;
const FLAG_DESCRIPTOR = 0x0008;

/**
 * Default {@linkcode ZipVerifierOptions.tailBytes}.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { DEFAULT_TAIL_BYTES } from "./zip.ts";
 * // Enough for the end record, its longest comment and the zip64 records.
 * assert.ok(DEFAULT_TAIL_BYTES > 22 + 65535 + 56 + 20);
 * ```
 */
export const DEFAULT_TAIL_BYTES = 256 * 1024;
/** Default {@linkcode ZipVerifierOptions.maxCentralDirectoryBytes}. */
const DEFAULT_MAX_CENTRAL_DIRECTORY_BYTES = 64 * 1024 * 1024;
/** Default {@linkcode ZipVerifierOptions.maxInflateBytes}. */
const DEFAULT_MAX_INFLATE_BYTES = 16 * 1024 * 1024;
/** Default {@linkcode ZipVerifierOptions.maxEntries}. */
const DEFAULT_MAX_ENTRIES = 100_000;

/**
 * CRC and sizes of an entry, as one of its records states them.
 *
 * @example
 * ```ts
 * import type { EntrySizes } from "./zip.ts";
 * const sizes: EntrySizes = { crc: 0x49b0b1a6, compressedSize: 64, uncompressedSize: 64 };
 * ```
 */
export interface EntrySizes {
  /** CRC-32 of the uncompressed data. */
  crc: number;
  /** Bytes of (possibly compressed) data in the archive. */
  compressedSize: number;
  /** Bytes once decompressed. */
  uncompressedSize: number;
}

/**
 * An entry met walking the archive front to back.
 *
 * @example
 * ```ts
 * import type { LocalEntry } from "./zip.ts";
 * const entry: LocalEntry = {
 *   name: "test/data/0",
 *   headerOffset: 342,
 *   flags: 0x0808,
 *   method: 0,
 *   dataOffset: 448,
 *   zip64: false,
 *   header: { crc: 0, compressedSize: 0, uncompressedSize: 0 },
 * };
 * ```
 */
export interface LocalEntry {
  /** The name in its local header. */
  name: string;
  /** Offset of its local header. */
  headerOffset: number;
  /** General purpose flags. */
  flags: number;
  /** Compression method (0 stored, 8 deflated). */
  method: number;
  /** Offset of its first data byte. */
  dataOffset: number;
  /** Whether the local header has a zip64 extra field (then a descriptor has 8-byte sizes). */
  zip64: boolean;
  /** CRC and sizes in the local header (zeros when flag bit 3 defers them to a descriptor). */
  header: EntrySizes;
  /** The data descriptor after the data, when there is one. */
  descriptor?: EntrySizes & { offset: number };
  /** Bytes of data walked; undefined while (or when) its end was not found. */
  dataLength?: number;
  /** CRC-32 of the uncompressed data, when it could be computed. */
  computedCrc?: number;
}

/**
 * An entry as the central directory records it.
 *
 * @example
 * ```ts
 * import type { CentralEntry } from "./zip.ts";
 * const entry: CentralEntry = {
 *   name: "test/data/0",
 *   recordOffset: 872,
 *   headerOffset: 342,
 *   flags: 0x0808,
 *   method: 0,
 *   crc: 0x49b0b1a6,
 *   compressedSize: 64,
 *   uncompressedSize: 64,
 * };
 * ```
 */
export interface CentralEntry extends EntrySizes {
  /** The entry's name. */
  name: string;
  /** Offset of this central directory record. */
  recordOffset: number;
  /** Offset of the entry's local header. */
  headerOffset: number;
  /** General purpose flags. */
  flags: number;
  /** Compression method. */
  method: number;
}

/**
 * What {@linkcode ZipVerifier.finish} found.
 *
 * @example
 * ```ts
 * import type { ZipReport } from "./zip.ts";
 * const truncated: ZipReport = { findings: [{ detail: "end of central directory record not found" }], notes: [], local: [] };
 * ```
 */
export interface ZipReport {
  /** Everything wrong with the archive's structure or data. */
  findings: FormatFinding[];
  /** What could not be checked, and why. */
  notes: string[];
  /** Entries walked, in file order. */
  local: LocalEntry[];
  /** The central directory, when it could be read; undefined otherwise. */
  central?: CentralEntry[];
  /**
   * False when a damaged record stopped the read of the central directory: `central` then holds only
   * the records before it, and says nothing about the entries after it.
   */
  centralComplete?: boolean;
}

/**
 * Receives an entry's uncompressed bytes, in order.
 *
 * @example
 * ```ts
 * import type { EntrySink } from "./zip.ts";
 * let bytes = 0;
 * const count: EntrySink = (chunk) => void (bytes += chunk.length);
 * ```
 */
export type EntrySink = (chunk: Uint8Array) => void;

/**
 * Options for {@linkcode ZipVerifier}.
 *
 * @example
 * ```ts
 * import { ZipVerifier, type ZipVerifierOptions } from "./zip.ts";
 * const options: ZipVerifierOptions = { onEntry: (entry) => entry.name.endsWith("/data.pkl") ? (_chunk) => {} : undefined };
 * const zip = new ZipVerifier(options);
 * ```
 */
export interface ZipVerifierOptions {
  /**
   * Called when an entry's local header has been read; return a sink to get
   * its uncompressed data as it streams (stored entries), or once inflated
   * (deflated ones).
   */
  onEntry?: (entry: LocalEntry) => EntrySink | undefined;
  /** Bytes of the file's end kept to find the end records (default 256 KiB). */
  tailBytes?: number;
  /** Largest central directory captured while it streams (default 64 MiB). */
  maxCentralDirectoryBytes?: number;
  /** Largest deflated entry buffered to check its CRC (default 16 MiB). */
  maxInflateBytes?: number;
  /** Most entries walked before giving up on the walk (default 100,000: about 30 MB of records). */
  maxEntries?: number;
}

type State =
  | { kind: "record" }
  | { kind: "data"; entry: Walk; remaining: number }
  | { kind: "descriptor"; entry: Walk }
  | { kind: "scan"; entry: Walk }
  | { kind: "central" }
  | { kind: "lost" };

interface Walk {
  entry: LocalEntry;
  length: number;
  crc: number;
  sink?: EntrySink;
  deflated?: GrowableBytes;
  crcPossible: boolean;
}

const utf8 = new TextDecoder("utf-8");

/**
 * Checks a zip archive fed front to back in chunks of any size.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ZipVerifier } from "./zip.ts";
 * const file = await Deno.readFile(new URL("../../tests/fixtures/torch-zip/test.pt", import.meta.url));
 * const zip = new ZipVerifier();
 * zip.update(file.subarray(0, 100));
 * zip.update(file.subarray(100));
 * const report = zip.finish();
 * assert.deepEqual(report.findings, []);
 * assert.equal(report.central?.length, 5);
 * ```
 */
export class ZipVerifier {
  readonly #onEntry?: (entry: LocalEntry) => EntrySink | undefined;
  readonly #maxInflate: number;
  readonly #maxEntries: number;
  readonly #tail: TailBuffer;
  readonly #central: GrowableBytes;
  #centralStart: number | undefined;
  #centralOverflow = false;
  #state: State = { kind: "record" };
  #carry: Uint8Array = new Uint8Array(0);
  /** Stream offset of the next unprocessed byte (the carry's first byte when there is a carry). */
  #base = 0;
  #lostAt: number | undefined;
  #crcUnrecorded = 0;
  readonly #local: LocalEntry[] = [];
  readonly #findings: FormatFinding[] = [];
  readonly #notes: string[] = [];
  /** A damaged central directory record stopped its read: the records after it are unknown. */
  #centralCut = false;

  /** A verifier for one archive. */
  constructor(options: ZipVerifierOptions = {}) {
    this.#onEntry = options.onEntry;
    this.#maxInflate = options.maxInflateBytes ?? DEFAULT_MAX_INFLATE_BYTES;
    this.#maxEntries = options.maxEntries ?? DEFAULT_MAX_ENTRIES;
    this.#tail = new TailBuffer(options.tailBytes ?? DEFAULT_TAIL_BYTES);
    this.#central = new GrowableBytes(options.maxCentralDirectoryBytes ?? DEFAULT_MAX_CENTRAL_DIRECTORY_BYTES);
  }

  /** Feeds the next bytes of the archive. */
  update(chunk: Uint8Array): void {
    if (chunk.length === 0) return;
    this.#tail.push(chunk);
    let buf = chunk;
    if (this.#carry.length > 0) {
      buf = concat(this.#carry, chunk);
      this.#carry = new Uint8Array(0);
    }
    let pos = 0;
    while (pos < buf.length) {
      const next = this.#step(buf, pos);
      this.#base += next - pos;
      pos = next;
      if (this.#carry.length > 0) break;
    }
  }

  /** Ends the input and reports. */
  finish(): ZipReport {
    const size = this.#tail.seen;
    const state = this.#state;

    const end = this.#findEnd(size);
    if (state.kind !== "central" && state.kind !== "lost") {
      this.#reportUnfinishedWalk(state, size, end !== undefined);
    }
    const report: ZipReport = { findings: this.#findings, notes: this.#notes, local: this.#local };
    if (end === undefined) return report;
    const central = this.#readCentral(end, size);
    if (central === undefined) return report;
    report.central = central;
    report.centralComplete = !this.#centralCut;
    this.#compare(central, end.cdOffset);
    return report;
  }

  /** Processes bytes at `pos` according to the state; returns the new position. */
  #step(buf: Uint8Array, pos: number): number {
    const state = this.#state;
    switch (state.kind) {
      case "record":
        return this.#record(buf, pos);
      case "data": {
        const n = Math.min(state.remaining, buf.length - pos);
        this.#feed(state.entry, buf.subarray(pos, pos + n));
        state.remaining -= n;
        if (state.remaining === 0) {
          this.#endData(state.entry);
          this.#state = state.entry.entry.flags & FLAG_DESCRIPTOR
            ? { kind: "descriptor", entry: state.entry }
            : { kind: "record" };
        }
        return pos + n;
      }
      case "descriptor":
        return this.#descriptor(state.entry, buf, pos);
      case "scan":
        return this.#scan(state.entry, buf, pos);
      case "central":
        if (!this.#centralOverflow && !this.#central.append(buf.subarray(pos))) {
          this.#centralOverflow = true;
          this.#central.clear();
        }
        return buf.length;
      case "lost":
        return buf.length;
    }
  }

  /** Keeps the bytes from `pos` until more arrive; the caller's loop stops (returns `pos`). */
  #hold(buf: Uint8Array, pos: number): number {
    this.#carry = buf.slice(pos);
    return pos;
  }

  #lose(offset: number): void {
    this.#state = { kind: "lost" };
    this.#lostAt ??= offset;
  }

  #record(buf: Uint8Array, pos: number): number {
    if (buf.length - pos < 4) return this.#hold(buf, pos);
    const signature = u32(buf, pos);
    if (signature === CENTRAL_HEADER_SIGNATURE || signature === ZIP64_EOCD_SIGNATURE || signature === EOCD_SIGNATURE) {
      this.#centralStart = this.#base;
      this.#state = { kind: "central" };
      return pos;
    }
    if (signature !== LOCAL_HEADER_SIGNATURE) {
      this.#findings.push({
        offset: this.#base,
        detail: `offset ${this.#base}: expected a local file header (50 4b 03 04) or the central directory, ` +
          `found ${hex(buf.subarray(pos, pos + 8))}; entries after it were not checked`,
      });
      this.#lose(this.#base);
      return buf.length;
    }
    if (buf.length - pos < LOCAL_HEADER_BYTES) return this.#hold(buf, pos);
    const nameLength = u16(buf, pos + 26);
    const extraLength = u16(buf, pos + 28);
    const total = LOCAL_HEADER_BYTES + nameLength + extraLength;
    if (buf.length - pos < total) return this.#hold(buf, pos);
    if (this.#local.length >= this.#maxEntries) {
      this.#notes.push(`more than ${this.#maxEntries} entries: entries from offset ${this.#base} on were not checked`);
      this.#lose(this.#base);
      return buf.length;
    }
    const flags = u16(buf, pos + 6);
    const method = u16(buf, pos + 8);
    const header: EntrySizes = {
      crc: u32(buf, pos + 14),
      compressedSize: u32(buf, pos + 18),
      uncompressedSize: u32(buf, pos + 22),
    };
    const extra = buf.subarray(pos + LOCAL_HEADER_BYTES + nameLength, pos + total);
    const zip64 = findExtra(extra, 0x0001);
    if (zip64 !== undefined) {
      // In a local header the zip64 field holds both sizes, in this order, whenever it is present.
      if (header.uncompressedSize === 0xffffffff && zip64.length >= 8) header.uncompressedSize = u64(zip64, 0);
      if (header.compressedSize === 0xffffffff && zip64.length >= 16) header.compressedSize = u64(zip64, 8);
    }
    const entry: LocalEntry = {
      name: utf8.decode(buf.subarray(pos + LOCAL_HEADER_BYTES, pos + LOCAL_HEADER_BYTES + nameLength)),
      headerOffset: this.#base,
      flags,
      method,
      dataOffset: this.#base + total,
      zip64: zip64 !== undefined,
      header,
    };
    this.#local.push(entry);
    const walk: Walk = { entry, length: 0, crc: 0, crcPossible: true };
    if (flags & FLAG_ENCRYPTED) {
      this.#findings.push({
        offset: entry.headerOffset,
        detail: `entry '${entry.name}' is encrypted; PyTorch cannot read encrypted entries`,
      });
      walk.crcPossible = false;
    }
    if (method !== 0 && method !== 8) {
      this.#findings.push({
        offset: entry.headerOffset,
        detail: `entry '${entry.name}' uses compression method ${method}; ` +
          `PyTorch's zip reader (miniz) reads only stored (0) and deflated (8) entries`,
      });
      walk.crcPossible = false;
    }
    if (walk.crcPossible) walk.sink = this.#onEntry?.(entry);
    if (method === 8 && walk.crcPossible) walk.deflated = new GrowableBytes(this.#maxInflate);
    const knownLength = !(flags & FLAG_DESCRIPTOR) || header.compressedSize !== 0;
    if (knownLength) {
      this.#state = { kind: "data", entry: walk, remaining: header.compressedSize };
      if (header.compressedSize === 0) {
        this.#endData(walk);
        this.#state = flags & FLAG_DESCRIPTOR ? { kind: "descriptor", entry: walk } : { kind: "record" };
      }
    } else {
      // Any method: its descriptor is the one whose compressed size equals the bytes walked.
      this.#state = { kind: "scan", entry: walk };
    }
    return pos + total;
  }

  #feed(walk: Walk, data: Uint8Array): void {
    if (data.length === 0) return;
    walk.length += data.length;
    if (!walk.crcPossible) return;
    if (walk.entry.method === 0) {
      walk.crc = crc32(data, walk.crc);
      walk.sink?.(data);
    } else if (walk.deflated && !walk.deflated.append(data)) {
      walk.deflated = undefined;
      this.#notes.push(
        `entry '${walk.entry.name}' is deflated and larger than ${this.#maxInflate} bytes: its CRC was not checked`,
      );
    }
  }

  #endData(walk: Walk): void {
    const entry = walk.entry;
    entry.dataLength = walk.length;
    if (!walk.crcPossible) return;
    if (entry.method === 0) {
      entry.computedCrc = walk.crc >>> 0;
      return;
    }
    if (!walk.deflated) return;
    try {
      const inflated = inflateRawSync(walk.deflated.view(), { maxOutputLength: this.#maxInflate });
      const data = new Uint8Array(inflated.buffer, inflated.byteOffset, inflated.byteLength);
      entry.computedCrc = crc32(data) >>> 0;
      walk.sink?.(data);
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      const code = (err as { code?: unknown }).code;
      if (code === "ERR_BUFFER_TOO_LARGE" || /maxOutputLength|larger than/i.test(message)) {
        this.#notes.push(
          `entry '${entry.name}' inflates to more than ${this.#maxInflate} bytes: its CRC was not checked`,
        );
      } else {
        this.#findings.push({
          offset: entry.dataOffset,
          detail: `entry '${entry.name}': its deflated data is corrupt (${message})`,
        });
      }
    }
    walk.deflated = undefined;
  }

  #descriptor(walk: Walk, buf: Uint8Array, pos: number): number {
    const entry = walk.entry;
    const withSignature = startsWithAt(buf, pos, DESCRIPTOR_BYTES);
    const size = (withSignature ? 4 : 0) + (entry.zip64 ? 20 : 12);
    if (buf.length - pos < Math.max(size, 4)) return this.#hold(buf, pos);
    const at = pos + (withSignature ? 4 : 0);
    entry.descriptor = {
      offset: this.#base,
      crc: u32(buf, at),
      compressedSize: entry.zip64 ? u64(buf, at + 4) : u32(buf, at + 4),
      uncompressedSize: entry.zip64 ? u64(buf, at + 12) : u32(buf, at + 8),
    };
    this.#state = { kind: "record" };
    return pos + size;
  }

  /** Walks stored data of unknown length, looking for the descriptor that ends it. */
  #scan(walk: Walk, buf: Uint8Array, pos: number): number {
    const entry = walk.entry;
    let from = pos;
    while (true) {
      const at = buf.indexOf(0x50, from);
      if (at < 0) {
        this.#feed(walk, buf.subarray(pos));
        return buf.length;
      }
      if (!startsWithAt(buf, at, DESCRIPTOR_BYTES)) {
        from = at + 1;
        continue;
      }
      // Prefer the descriptor form the local header announces (8-byte sizes with a zip64 field).
      const forms = entry.zip64 ? [24, 16] : [16, 24];
      if (buf.length - at < forms[0]) {
        this.#feed(walk, buf.subarray(pos, at));
        return this.#hold(buf, at);
      }
      const length = walk.length + (at - pos);
      for (const form of forms) {
        if (buf.length - at < form) continue;
        const compressed = form === 24 ? u64(buf, at + 8) : u32(buf, at + 8);
        const uncompressed = form === 24 ? u64(buf, at + 16) : u32(buf, at + 12);
        if (compressed !== length || (entry.method === 0 && uncompressed !== length)) continue;
        this.#feed(walk, buf.subarray(pos, at));
        this.#endData(walk);
        entry.descriptor = {
          offset: this.#base + (at - pos),
          crc: u32(buf, at + 4),
          compressedSize: compressed,
          uncompressedSize: uncompressed,
        };
        this.#state = { kind: "record" };
        return at + form;
      }
      from = at + 1;
    }
  }

  #reportUnfinishedWalk(state: Exclude<State, { kind: "central" | "lost" }>, size: number, hasEnd: boolean): void {
    const last = this.#local.at(-1);
    switch (state.kind) {
      case "record":
        if (this.#carry.length > 0) {
          this.#findings.push({
            offset: this.#base,
            detail: `the file ends at offset ${size} inside the record that starts at offset ${this.#base} ` +
              `(${this.#carry.length} of its bytes present): the file is truncated`,
          });
        } else {
          this.#findings.push({
            offset: size,
            detail: `the file ends at offset ${size}, ` +
              (last ? `right after entry '${last.name}', ` : "") +
              `where the next entry or the central directory should start: the file is truncated`,
          });
        }
        return;
      case "data": {
        const entry = state.entry.entry;
        this.#findings.push({
          offset: entry.dataOffset,
          detail: hasEnd
            ? `entry '${entry.name}' (local header at offset ${entry.headerOffset}): its local header gives it ` +
              `${entry.header.compressedSize} data bytes from offset ${entry.dataOffset}, past the archive's end ` +
              `records; its local header is damaged, entries after it were not checked`
            : `entry '${entry.name}' (local header at offset ${entry.headerOffset}) extends past the end of the file: ` +
              `${state.entry.length} of its ${entry.header.compressedSize} data bytes are present, ` +
              `the file ends at offset ${size}`,
        });
        this.#lostAt ??= entry.dataOffset;
        return;
      }
      case "descriptor": {
        const entry = state.entry.entry;
        this.#findings.push({
          offset: this.#base,
          detail:
            `the file ends at offset ${size} inside the data descriptor of entry '${entry.name}': the file is truncated`,
        });
        return;
      }
      case "scan": {
        const entry = state.entry.entry;
        if (!hasEnd && this.#carry.length >= 4 && u32(this.#carry, 0) === DESCRIPTOR_SIGNATURE) {
          this.#findings.push({
            offset: this.#base,
            detail: `the file ends at offset ${size} inside the data descriptor of entry '${entry.name}' at offset ` +
              `${this.#base}, after its ${state.entry.length} data bytes: the file is truncated`,
          });
          return;
        }
        this.#findings.push({
          offset: entry.dataOffset,
          detail: hasEnd
            ? `entry '${entry.name}' (local header at offset ${entry.headerOffset}): no data descriptor matching ` +
              `its data was found after offset ${entry.dataOffset}; its local header or descriptor is damaged, ` +
              `entries after it were not checked`
            : `entry '${entry.name}' (local header at offset ${entry.headerOffset}) extends past the end of the file: ` +
              `its data starts at offset ${entry.dataOffset} and the file ends at offset ${size} before its data descriptor`,
        });
        this.#lostAt ??= entry.dataOffset;
        return;
      }
    }
  }

  /** Bytes at `offset`, from the captured central directory or the tail, or undefined. */
  #read(offset: number, length: number): Uint8Array | undefined {
    if (this.#centralStart !== undefined && !this.#centralOverflow && offset >= this.#centralStart) {
      const from = offset - this.#centralStart;
      const view = this.#central.view();
      if (from + length <= view.length) return view.slice(from, from + length);
    }
    return this.#tail.slice(offset, length);
  }

  #earliestHeld(size: number): number {
    const tailStart = this.#tail.start;
    if (this.#centralStart !== undefined && !this.#centralOverflow) return Math.min(this.#centralStart, tailStart);
    return Math.min(tailStart, size);
  }

  #findEnd(size: number): End | undefined {
    const from = Math.max(this.#earliestHeld(size), size - EOCD_BYTES - MAX_COMMENT, 0);
    const window = size - from >= EOCD_BYTES ? this.#read(from, size - from) : undefined;
    let at = -1;
    if (window) {
      for (let i = window.length - EOCD_BYTES; i >= 0; i--) {
        if (u32(window, i) === EOCD_SIGNATURE) {
          at = i;
          break;
        }
      }
    }
    if (!window || at < 0) {
      const where = this.#state.kind === "central" && this.#centralStart !== undefined
        ? `the central directory starts at offset ${this.#centralStart} but the file ends at offset ${size} ` +
          `before its end record`
        : `no end record in the last ${size - from} bytes`;
      this.#findings.push({
        offset: size,
        detail: `end of central directory record not found (${where}): the file is truncated or its end was ` +
          `overwritten — PyTorch fails to load it with "failed finding central directory" ` +
          `(a file under 68 KiB gets an OSError from a negative seek instead)`,
      });
      return undefined;
    }
    const eocd = window.subarray(at);
    const offset = from + at;
    const commentLength = u16(eocd, 20);
    if (offset + EOCD_BYTES + commentLength !== size) {
      this.#findings.push({
        offset: offset + EOCD_BYTES,
        detail: `${size - offset - EOCD_BYTES} bytes follow the end of central directory record at offset ${offset} ` +
          `(its comment length says ${commentLength}): something was written past the archive's end`,
      });
    }
    if (u16(eocd, 4) !== 0 || u16(eocd, 6) !== 0) {
      this.#findings.push({
        offset,
        detail: `the end record describes a multi-disk archive, which PyTorch cannot read`,
      });
      return undefined;
    }
    if (u16(eocd, 8) !== u16(eocd, 10)) {
      this.#findings.push({
        offset,
        detail: `the end record counts ${u16(eocd, 8)} entries on this disk but ${u16(eocd, 10)} in all ` +
          `(a single-file archive has them equal): the end record is damaged`,
      });
    }
    const end: End = {
      offset,
      entries: u16(eocd, 10),
      cdSize: u32(eocd, 12),
      cdOffset: u32(eocd, 16),
      cdEnd: offset,
    };
    const saturated = end.entries === 0xffff || end.cdSize === 0xffffffff || end.cdOffset === 0xffffffff;
    const locator = offset >= ZIP64_LOCATOR_BYTES
      ? this.#read(offset - ZIP64_LOCATOR_BYTES, ZIP64_LOCATOR_BYTES)
      : undefined;
    if (locator && u32(locator, 0) === ZIP64_LOCATOR_SIGNATURE) {
      const zip64Offset = u64(locator, 8);
      const record = this.#read(zip64Offset, ZIP64_EOCD_BYTES);
      if (!record || u32(record, 0) !== ZIP64_EOCD_SIGNATURE) {
        this.#findings.push({
          offset: offset - ZIP64_LOCATOR_BYTES,
          detail:
            `the zip64 locator points at offset ${zip64Offset}, where there is no zip64 end of central directory record` +
            (record ? ` (found ${hex(record)})` : ""),
        });
        return undefined;
      }
      const recordEnd = zip64Offset + 12 + u64(record, 4);
      if (recordEnd !== offset - ZIP64_LOCATOR_BYTES) {
        this.#findings.push({
          offset: zip64Offset,
          detail: `the zip64 end record at offset ${zip64Offset} ends at offset ${recordEnd}, ` +
            `but its locator starts at offset ${offset - ZIP64_LOCATOR_BYTES}`,
        });
      }
      const zip64 = { entries: u64(record, 32), cdSize: u64(record, 40), cdOffset: u64(record, 48) };
      if (u64(record, 24) !== zip64.entries || u32(record, 16) !== 0 || u32(record, 20) !== 0) {
        this.#findings.push({
          offset: zip64Offset,
          detail: `the zip64 end record counts ${u64(record, 24)} entries on this disk but ${zip64.entries} in all, ` +
            `or names another disk: it is damaged`,
        });
      }
      for (const key of ["entries", "cdSize", "cdOffset"] as const) {
        const narrow = end[key];
        const max = key === "entries" ? 0xffff : 0xffffffff;
        if (narrow !== max && narrow !== zip64[key]) {
          this.#findings.push({
            offset,
            detail: `the end record and the zip64 end record disagree on the central directory's ` +
              `${key === "entries" ? "entry count" : key === "cdSize" ? "size" : "offset"}: ${narrow} versus ${
                zip64[key]
              }`,
          });
        }
      }
      Object.assign(end, zip64, { cdEnd: zip64Offset });
    } else if (saturated) {
      this.#findings.push({
        offset,
        detail: `the end record defers to zip64 end records (0xffff… fields), but there is no zip64 locator before it`,
      });
      return undefined;
    }
    if (end.cdOffset + end.cdSize !== end.cdEnd) {
      this.#findings.push({
        offset: end.cdEnd,
        detail: `the end records say the central directory is ${end.cdSize} bytes at offset ${end.cdOffset}, ` +
          `ending at offset ${end.cdOffset + end.cdSize}, but the end records start at offset ${end.cdEnd}`,
      });
      return undefined;
    }
    if (this.#centralStart !== undefined && this.#centralStart !== end.cdOffset) {
      this.#findings.push({
        offset: this.#centralStart,
        detail: `the entries end at offset ${this.#centralStart}, but the end records put the central directory ` +
          `at offset ${end.cdOffset}`,
      });
    }
    return end;
  }

  #readCentral(end: End, size: number): CentralEntry[] | undefined {
    const bytes = this.#read(end.cdOffset, end.cdSize);
    if (!bytes) {
      this.#notes.push(
        `the central directory (${end.cdSize} bytes at offset ${end.cdOffset}) was not kept in memory ` +
          `(file of ${size} bytes): it was not checked`,
      );
      return undefined;
    }
    if (end.entries > this.#maxEntries) {
      this.#notes.push(
        `the central directory lists ${end.entries} entries, more than the ${this.#maxEntries} checked: ` +
          `it was not checked`,
      );
      return undefined;
    }
    const entries: CentralEntry[] = [];
    let at = 0;
    for (let i = 0; i < end.entries; i++) {
      const recordOffset = end.cdOffset + at;
      if (bytes.length - at < CENTRAL_HEADER_BYTES || u32(bytes, at) !== CENTRAL_HEADER_SIGNATURE) {
        this.#findings.push({
          offset: recordOffset,
          detail: `central directory record ${i + 1} of ${end.entries} at offset ${recordOffset} is damaged ` +
            `(found ${hex(bytes.subarray(at, at + 8))}): PyTorch fails to load the file with ` +
            `"invalid header or archive is corrupted"`,
        });
        this.#centralCut = true;
        return entries;
      }
      const nameLength = u16(bytes, at + 28);
      const extraLength = u16(bytes, at + 30);
      const commentLength = u16(bytes, at + 32);
      const total = CENTRAL_HEADER_BYTES + nameLength + extraLength + commentLength;
      if (at + total > bytes.length) {
        this.#findings.push({
          offset: recordOffset,
          detail: `central directory record ${i + 1} at offset ${recordOffset} runs past the central directory's end`,
        });
        this.#centralCut = true;
        return entries;
      }
      const entry: CentralEntry = {
        name: utf8.decode(bytes.subarray(at + CENTRAL_HEADER_BYTES, at + CENTRAL_HEADER_BYTES + nameLength)),
        recordOffset,
        flags: u16(bytes, at + 8),
        method: u16(bytes, at + 10),
        crc: u32(bytes, at + 16),
        compressedSize: u32(bytes, at + 20),
        uncompressedSize: u32(bytes, at + 24),
        headerOffset: u32(bytes, at + 42),
      };
      const zip64 = findExtra(
        bytes.subarray(at + CENTRAL_HEADER_BYTES + nameLength, at + CENTRAL_HEADER_BYTES + nameLength + extraLength),
        0x0001,
      );
      // A central zip64 field holds only the values whose 32-bit field is saturated, in this order.
      let field = 0;
      for (const key of ["uncompressedSize", "compressedSize", "headerOffset"] as const) {
        if (entry[key] !== 0xffffffff) continue;
        if (!zip64 || zip64.length < field + 8) {
          this.#findings.push({
            offset: recordOffset,
            detail: `central directory record of '${entry.name}' defers its ${key} to a zip64 field it does not have`,
          });
          this.#centralCut = true;
          return entries;
        }
        entry[key] = u64(zip64, field);
        field += 8;
      }
      entries.push(entry);
      at += total;
    }
    if (at !== bytes.length) {
      this.#findings.push({
        offset: end.cdOffset + at,
        detail: `the central directory holds ${bytes.length - at} bytes after its ${end.entries} records ` +
          `(the end record's entry count is wrong, or records are damaged)`,
      });
    }
    return entries;
  }

  #compare(central: CentralEntry[], cdOffset: number): void {
    const byOffset = new Map(this.#local.map((entry) => [entry.headerOffset, entry]));
    const names = new Set<string>();
    let unchecked = 0;
    const matched = new Set<LocalEntry>();
    for (const record of central) {
      if (names.has(record.name)) {
        this.#findings.push({
          offset: record.recordOffset,
          detail: `the central directory lists '${record.name}' twice`,
        });
      }
      names.add(record.name);
      if (record.method === 0 && record.compressedSize !== record.uncompressedSize) {
        this.#findings.push({
          offset: record.recordOffset,
          detail: `entry '${record.name}' is stored but the central directory gives it ${record.compressedSize} ` +
            `bytes in the archive and ${record.uncompressedSize} uncompressed`,
        });
      }
      const local = byOffset.get(record.headerOffset);
      if (!local) {
        if (this.#lostAt !== undefined && record.headerOffset >= this.#lostAt) {
          unchecked++;
          continue;
        }
        this.#findings.push({
          offset: record.headerOffset,
          detail: record.headerOffset >= cdOffset
            ? `entry '${record.name}' at offset ${record.headerOffset} extends past the end of the entries ` +
              `(the central directory starts at offset ${cdOffset})`
            : `the central directory puts entry '${record.name}' at offset ${record.headerOffset}, ` +
              `where no local header starts`,
        });
        continue;
      }
      matched.add(local);
      this.#compareEntry(record, local, cdOffset);
    }
    // Entries whose records were past a damaged one are not missing from the central directory: unread.
    for (const local of this.#centralCut ? [] : this.#local) {
      if (!matched.has(local) && local.headerOffset < cdOffset) {
        this.#findings.push({
          offset: local.headerOffset,
          detail: `entry '${local.name}' at offset ${local.headerOffset} is not in the central directory`,
        });
      }
    }
    if (unchecked > 0) {
      this.#notes.push(
        `${unchecked} entries after offset ${this.#lostAt} were not checked against their local headers`,
      );
    }
    if (this.#crcUnrecorded > 0) {
      this.#notes.push(
        `${this.#crcUnrecorded} entries record no CRC-32 (0, as torch.save writes with compute_crc32=False): ` +
          `their data could not be checked against one`,
      );
    }
  }

  #compareEntry(record: CentralEntry, local: LocalEntry, cdOffset: number): void {
    const where = `entry '${record.name}' (local header at offset ${local.headerOffset})`;
    const mismatch = (what: string, localValue: string | number, centralValue: string | number, source: string) =>
      this.#findings.push({
        offset: local.headerOffset,
        detail: `${where}: its ${source} has ${what} ${localValue}, the central directory ${centralValue}`,
      });
    if (local.name !== record.name) {
      mismatch("name", JSON.stringify(local.name), JSON.stringify(record.name), "local header");
    }
    if (local.method !== record.method) mismatch("compression method", local.method, record.method, "local header");
    if (local.flags !== record.flags) {
      mismatch("flags", `0x${local.flags.toString(16)}`, `0x${record.flags.toString(16)}`, "local header");
    }
    const dataEnd = local.dataOffset + record.compressedSize;
    if (dataEnd > cdOffset) {
      this.#findings.push({
        offset: local.dataOffset,
        detail: `${where}: its ${record.compressedSize} data bytes from offset ${local.dataOffset} ` +
          `extend past the start of the central directory at offset ${cdOffset}`,
      });
    }
    if (local.dataLength === undefined) return;
    const stated = local.descriptor ?? local.header;
    const source = local.descriptor ? "data descriptor" : "local header";
    if (local.dataLength !== record.compressedSize) {
      mismatch("a data length of", local.dataLength, record.compressedSize, "walk");
    } else if (stated.compressedSize !== record.compressedSize) {
      mismatch("compressed size", stated.compressedSize, record.compressedSize, source);
    }
    if (stated.uncompressedSize !== record.uncompressedSize) {
      mismatch("uncompressed size", stated.uncompressedSize, record.uncompressedSize, source);
    }
    // torch.save with compute_crc32=False writes 0 for every CRC, and torch.load accepts that: not recorded.
    const unrecorded = record.crc === 0 && stated.crc === 0;
    if (unrecorded && local.computedCrc !== undefined && local.computedCrc !== 0) {
      this.#crcUnrecorded++;
    } else if (local.computedCrc !== undefined && local.computedCrc !== record.crc) {
      const agrees = stated.crc === record.crc;
      this.#findings.push({
        offset: local.dataOffset,
        detail: `${where}: CRC-32 of its data is ${crcHex(local.computedCrc)} but the archive records ` +
          `${crcHex(record.crc)}${agrees ? "" : ` (its ${source} says ${crcHex(stated.crc)})`}: its data is corrupt ` +
          `(torch.load does not check CRCs and would load it)`,
      });
    } else if (stated.crc !== record.crc) {
      mismatch("CRC-32", crcHex(stated.crc), crcHex(record.crc), source);
    }
  }
}

interface End {
  offset: number;
  entries: number;
  cdSize: number;
  cdOffset: number;
  /** Where the central directory must end: the zip64 end record, or the end record. */
  cdEnd: number;
}

function crcHex(crc: number): string {
  return crc.toString(16).padStart(8, "0");
}

/**
 * The data of the extra field with header id `id`, or undefined.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { findExtra } from "./zip.ts";
 * // torch's padding field "FB" (0x4246) with two bytes, then a zip64 field.
 * const extra = new Uint8Array([0x46, 0x42, 2, 0, 0x5a, 0x5a, 1, 0, 8, 0, 1, 0, 0, 0, 0, 0, 0, 0]);
 * assert.deepEqual([...findExtra(extra, 0x0001)!], [1, 0, 0, 0, 0, 0, 0, 0]);
 * assert.equal(findExtra(extra, 0x7075), undefined);
 * ```
 */
export function findExtra(extra: Uint8Array, id: number): Uint8Array | undefined {
  let at = 0;
  while (at + 4 <= extra.length) {
    const size = u16(extra, at + 2);
    if (u16(extra, at) === id) return extra.subarray(at + 4, Math.min(extra.length, at + 4 + size));
    at += 4 + size;
  }
  return undefined;
}
