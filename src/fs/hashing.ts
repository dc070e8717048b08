/**
 * Streaming file digests: the whole-file digest and the digests of sampled
 * regions, computed in one pass with a bounded buffer whatever the file size.
 *
 * SHA-256 streams through `node:crypto` (native; Web Crypto's `digest` cannot
 * stream and needs the whole input in memory). `xxh128` (via `hash-wasm`) is
 * offered for users who want speed over cryptographic strength.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { CkptkitError } from "../errors.ts";
import { formatCheckerFor } from "../formats/dispatch.ts";
import type { FormatChecker } from "../formats/checker.ts";
import type { FileFormatResult } from "../formats/files.ts";

/** The digest algorithms a manifest can use. */
export const HASH_ALGORITHMS = ["sha256", "xxh128"] as const;
/** A digest algorithm: `sha256` (default, cryptographic) or `xxh128` (fast). */
export type HashAlgorithm = typeof HASH_ALGORITHMS[number];
/** Default size of one sampled region recorded at commit time. */
export const DEFAULT_SAMPLE_BYTES = 65536;
/** Most regions sampled per file: head, tail and evenly spaced between. */
export const MAX_SAMPLE_REGIONS = 8;
/** Size of the read buffer; one per file being hashed. */
export const READ_CHUNK_BYTES = 2 * 1024 * 1024;
/**
 * Read size of blocking reads (hashing workers): small enough that the bytes
 * are still in the CPU cache when they are hashed.
 */
export const BLOCKING_READ_CHUNK_BYTES = 256 * 1024;

/** A byte range of a file. */
export interface Region {
  /** First byte of the region. */
  offset: number;
  /** Number of bytes. */
  length: number;
}

/** A byte range of a file with the digest of its bytes. */
export interface RegionDigest extends Region {
  /** Lower-case hex digest of the region's bytes. */
  digest: string;
}

/** An incremental digest. */
export interface Hasher {
  /** Feeds bytes. The chunk may be reused by the caller afterwards. */
  update(chunk: Uint8Array): void;
  /** Returns the lower-case hex digest; the hasher cannot be used after. */
  digest(): string;
}

/**
 * Creates an incremental hasher for `algorithm`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { createHasher } from "./hashing.ts";
 * const hasher = await createHasher("sha256");
 * hasher.update(new TextEncoder().encode("abc"));
 * assert.ok(
 *   hasher.digest() ===
 *     "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
 * );
 * ```
 */
export async function createHasher(algorithm: HashAlgorithm): Promise<Hasher> {
  if (algorithm === "sha256") {
    const hash = createHash("sha256");
    return {
      update: (chunk) => void hash.update(chunk),
      digest: () => hash.digest("hex"),
    };
  }
  if (algorithm === "xxh128") {
    // Loaded on demand: hashing workers import this module, and most never need xxh128 (or the deps barrel).
    const { createXXHash128 } = await import("../deps/xxhash.ts");
    const hash = await createXXHash128();
    hash.init();
    return {
      update: (chunk) => void hash.update(chunk),
      digest: () => hash.digest("hex"),
    };
  }
  throw new CkptkitError(
    "invalid_argument",
    `Unknown hash algorithm "${algorithm}": expected one of ${HASH_ALGORITHMS.join(", ")}`,
  );
}

/**
 * The regions sampled in a file of `size` bytes with regions of `sampleBytes`:
 * the head, the tail and up to {@linkcode MAX_SAMPLE_REGIONS} in all, evenly
 * spaced. A file no larger than one region is sampled whole. Deterministic, so
 * commit and validation agree.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { sampleRegions } from "./hashing.ts";
 * const regions = sampleRegions(1_000_000, 65536);
 * assert.ok(regions[0].offset === 0);
 * assert.ok(regions.at(-1)!.offset + 65536 === 1_000_000);
 * ```
 */
export function sampleRegions(size: number, sampleBytes: number): Region[] {
  if (sampleBytes <= 0 || size === 0) return [];
  if (size <= sampleBytes) return [{ offset: 0, length: size }];
  const count = Math.min(MAX_SAMPLE_REGIONS, Math.ceil(size / sampleBytes));
  const span = size - sampleBytes;
  const regions: Region[] = [];
  for (let i = 0; i < count; i++) {
    regions.push({
      offset: Math.floor((i * span) / (count - 1)),
      length: sampleBytes,
    });
  }
  return regions;
}

/** What {@linkcode hashFile} found. */
export interface FileDigest {
  /** Bytes read, equal to the size at open. */
  size: number;
  /** Digest of the whole file. */
  digest: string;
  /** Digests of the sampled regions. */
  samples: RegionDigest[];
  /** Modification time at open, in ms since the epoch (0 when unknown). */
  mtimeMs: number;
  /** The format check's result, when `formatPath` asked for one and a checker applies. */
  format?: FileFormatResult;
}

/** Options for {@linkcode hashFile}. */
export interface HashFileOptions {
  /** Digest algorithm (default `sha256`). */
  algorithm?: HashAlgorithm;
  /** Region size for sampled digests; 0 records none (default 65536). */
  sampleBytes?: number;
  /**
   * The regions to digest instead of those `sampleBytes` picks: the ones a manifest recorded, which validation
   * checks in the same pass as the whole file.
   */
  regions?: readonly Region[];
  /** fsync the file after reading it (commit does, to read each byte once). */
  sync?: boolean;
  /**
   * The size the caller expects: when the open file has another, nothing is read and the result carries that size
   * with an empty digest (validation reports the size, and does not spend a read on a file that cannot match).
   */
  expectedSize?: number;
  /**
   * Also check the file's format (torch zip or legacy, safetensors) in the same pass, choosing the checker by this
   * relative path. A plain string, so the option crosses to hashing workers.
   */
  formatPath?: string;
  /** Called with the number of bytes read after each chunk. */
  onProgress?: (bytes: number) => void;
  /** Stops reading when aborted. */
  signal?: AbortSignal;
  /**
   * Read with blocking calls on this thread, in {@linkcode BLOCKING_READ_CHUNK_BYTES} chunks. For hashing workers,
   * whose thread has nothing else to do: an awaited read runs on another thread for every chunk, and the bytes
   * cross threads and caches before they are hashed (measured in bench/RESULTS.md).
   */
  blockingReads?: boolean;
}

/**
 * Hashes a whole file and its sampled regions in one streaming pass with a
 * bounded buffer. Throws a `file_changed` {@linkcode CkptkitError} when the
 * file's size or mtime changes while it is read (a writer still appending).
 *
 * Requires `--allow-read`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { hashFile } from "./hashing.ts";
 * const dir = await Deno.makeTempDir();
 * await Deno.writeTextFile(`${dir}/a.bin`, "abc");
 * const { size, digest } = await hashFile(`${dir}/a.bin`);
 * assert.ok(size === 3 && digest.startsWith("ba7816bf"));
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function hashFile(
  path: string,
  options: HashFileOptions = {},
): Promise<FileDigest> {
  const algorithm = options.algorithm ?? "sha256";
  const sampleBytes = options.sampleBytes ?? DEFAULT_SAMPLE_BYTES;
  const file = await Deno.open(path, { read: true });
  try {
    const before = await file.stat();
    const size = before.size;
    if (options.expectedSize !== undefined && size !== options.expectedSize) {
      return { size, digest: "", samples: [], mtimeMs: before.mtime?.getTime() ?? 0 };
    }
    const whole = await createHasher(algorithm);
    const regions = options.regions ? [...options.regions] : sampleRegions(size, sampleBytes);
    const regionHashers = await Promise.all(
      regions.map(() => createHasher(algorithm)),
    );
    const checker = options.formatPath === undefined ? undefined : formatCheckerFor(options.formatPath, size);
    const blocking = options.blockingReads === true;
    const buffer = new Uint8Array(
      Math.min(blocking ? BLOCKING_READ_CHUNK_BYTES : READ_CHUNK_BYTES, Math.max(size, 1)),
    );
    let position = 0;
    while (true) {
      options.signal?.throwIfAborted();
      const n = blocking ? file.readSync(buffer) : await file.read(buffer);
      if (n === null) break;
      const chunk = buffer.subarray(0, n);
      whole.update(chunk);
      checker?.update(chunk);
      feedRegions(regions, regionHashers, position, chunk);
      position += n;
      options.onProgress?.(n);
      if (position > size) break;
    }
    const after = await file.stat();
    if (
      position !== size || after.size !== size ||
      (after.mtime?.getTime() ?? 0) !== (before.mtime?.getTime() ?? 0)
    ) {
      throw new CkptkitError(
        "file_changed",
        `${path} changed while it was read: size was ${size} bytes at open, ` +
          `${after.size} after, ${position} read`,
        { path },
      );
    }
    if (options.sync) await file.sync();
    return {
      size,
      digest: whole.digest(),
      samples: regions.map((region, i) => ({
        ...region,
        digest: regionHashers[i].digest(),
      })),
      mtimeMs: before.mtime?.getTime() ?? 0,
      ...(checker && { format: finishedFormat(checker) }),
    };
  } finally {
    file.close();
  }
}

function feedRegions(
  regions: Region[],
  hashers: Hasher[],
  position: number,
  chunk: Uint8Array,
): void {
  const end = position + chunk.length;
  for (let i = 0; i < regions.length; i++) {
    const start = Math.max(regions[i].offset, position);
    const stop = Math.min(regions[i].offset + regions[i].length, end);
    if (start < stop) {
      hashers[i].update(chunk.subarray(start - position, stop - position));
    }
  }
}

/**
 * Hashes only the given regions of a file, reading nothing else. Throws a
 * `file_changed` {@linkcode CkptkitError} when a region lies past the end.
 *
 * Requires `--allow-read`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { hashRegions } from "./hashing.ts";
 * const dir = await Deno.makeTempDir();
 * await Deno.writeTextFile(`${dir}/a.bin`, "xxabcxx");
 * const [region] = await hashRegions(`${dir}/a.bin`, [{ offset: 2, length: 3 }]);
 * assert.ok(region.digest.startsWith("ba7816bf"));
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function hashRegions(
  path: string,
  regions: readonly Region[],
  algorithm: HashAlgorithm = "sha256",
): Promise<RegionDigest[]> {
  const file = await Deno.open(path, { read: true });
  try {
    const out: RegionDigest[] = [];
    const buffer = new Uint8Array(
      Math.min(READ_CHUNK_BYTES, Math.max(1, ...regions.map((r) => r.length))),
    );
    for (const region of regions) {
      const hasher = await createHasher(algorithm);
      await file.seek(region.offset, Deno.SeekMode.Start);
      let remaining = region.length;
      while (remaining > 0) {
        const n = await file.read(
          buffer.subarray(0, Math.min(remaining, buffer.length)),
        );
        if (n === null) {
          throw new CkptkitError(
            "file_changed",
            `${path} ended inside the sampled region at offset ${region.offset}`,
            { path },
          );
        }
        hasher.update(buffer.subarray(0, n));
        remaining -= n;
      }
      out.push({ ...region, digest: hasher.digest() });
    }
    return out;
  } finally {
    file.close();
  }
}

/**
 * Files up to this size are hashed whole from one buffer, many per worker message ({@linkcode hashSmallFiles}):
 * for them the cost is the round trips of open, stat, read and close, not the bytes.
 */
export const SMALL_FILE_BYTES = 1024 * 1024;

/** One file for {@linkcode hashSmallFiles}. */
export interface SmallFileJob {
  /** Absolute path. */
  path: string;
  /**
   * The size the caller expects (listing or manifest). When the open file has another size, nothing is read and
   * the result carries that size with an empty digest.
   */
  size: number;
  /** The regions to digest instead of those `sampleBytes` picks (a manifest's recorded regions). */
  regions?: readonly Region[];
  /** Relative path choosing a format checker, as {@linkcode HashFileOptions.formatPath}. */
  formatPath?: string;
}

/** Options shared by every file of a {@linkcode hashSmallFiles} batch (plain data: they cross to workers). */
export interface SmallFileOptions {
  /** Digest algorithm (default `sha256`). */
  algorithm?: HashAlgorithm;
  /** Region size for sampled digests when a job gives no regions; 0 records none (default 65536). */
  sampleBytes?: number;
  /**
   * fsync each file through the descriptor already open for reading (commit), and give its mtime at open. Without
   * it each file is read with one call and `mtimeMs` is 0 (validation needs neither).
   */
  sync?: boolean;
}

/** What {@linkcode hashSmallFiles} found for one file: its digests, or the error hashing it threw. */
export type SmallFileResult = { file: FileDigest } | { error: unknown };

/**
 * Hashes a batch of small files with blocking calls on this thread: per file open, fstat, read, read (end of file),
 * close — what a C tool does — with one buffer for the batch; with `sync`, the batch's files are then fsynced
 * side by side before the batch returns. Same digests, samples, errors and
 * `file_changed` for a file read at another length than at open as {@linkcode hashFile} (which also compares the
 * mtime after reading); one file's error does not stop the others.
 *
 * Requires `--allow-read`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { hashFile, hashSmallFiles } from "./hashing.ts";
 * const dir = await Deno.makeTempDir();
 * await Deno.writeTextFile(`${dir}/a.bin`, "abc");
 * const [found, missing] = await hashSmallFiles([{ path: `${dir}/a.bin`, size: 3 }, { path: `${dir}/b`, size: 1 }]);
 * // Without `sync` a file is read in one call, with no fstat: its mtime is not looked at (0).
 * assert.deepEqual(found, { file: { ...await hashFile(`${dir}/a.bin`), mtimeMs: 0 } });
 * assert.ok("error" in missing && missing.error instanceof Deno.errors.NotFound);
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function hashSmallFiles(
  jobs: readonly SmallFileJob[],
  options: SmallFileOptions = {},
): Promise<SmallFileResult[]> {
  const digestOf = await oneShotDigest(options.algorithm ?? "sha256");
  const sampleBytes = options.sampleBytes ?? DEFAULT_SAMPLE_BYTES;
  let buffer = new Uint8Array(0);
  const results: SmallFileResult[] = new Array(jobs.length);
  const unsynced: { index: number; file: Deno.FsFile }[] = [];
  let i = 0;
  // With sync, a hashed file stays open for its fsync below.
  const open = options.sync ? (file: Deno.FsFile) => void unsynced.push({ index: i, file }) : undefined;
  for (; i < jobs.length; i++) {
    const job = jobs[i];
    // One byte more than expected, so that a file that grew is seen without a third read.
    if (options.sync && buffer.length < job.size + 1) {
      buffer = new Uint8Array(Math.max(job.size + 1, Math.min(2 * buffer.length, SMALL_FILE_BYTES + 1)));
    }
    try {
      const file = hashSmallFileSync(job, sampleBytes, buffer, digestOf, open);
      results[i] = { file };
    } catch (err) {
      results[i] = { error: err };
    }
  }
  // fsync latency is the device's, not the CPU's: the batch's fsyncs wait side by side on Deno's blocking threads
  // (a journaling file system commits them together), each through the descriptor that read the file.
  await Promise.all(unsynced.map(async ({ index, file }) => {
    try {
      await file.sync();
    } catch (err) {
      results[index] = { error: err };
    } finally {
      file.close();
    }
  }));
  return results;
}

function hashSmallFileSync(
  job: SmallFileJob,
  sampleBytes: number,
  buffer: Uint8Array,
  digestOf: (bytes: Uint8Array) => string,
  keepOpen: ((file: Deno.FsFile) => void) | undefined,
): FileDigest {
  const { path } = job;
  if (!keepOpen) {
    // One call reads the whole file (open, fstat, read to the end, close), and Deno resolves the path for its
    // permission check once, where openSync resolves it twice (a readlink per path component each time): about a
    // third less CPU per file. The size was just stat'ed by the caller; a file swapped for a bigger one meanwhile is
    // still read whole, and then reported by its size.
    const bytes = Deno.readFileSync(path);
    if (bytes.length !== job.size) return { size: bytes.length, digest: "", samples: [], mtimeMs: 0 };
    return digestSmallFile(job, bytes, sampleBytes, 0, digestOf);
  }
  const file = Deno.openSync(path, { read: true });
  let kept = false;
  try {
    const before = file.statSync();
    const size = before.size;
    const mtimeMs = before.mtime?.getTime() ?? 0;
    // The caller reports the other size; reading a file that is not the one expected would only cost time.
    if (size !== job.size) return { size, digest: "", samples: [], mtimeMs };
    const data = buffer.length > size ? buffer : new Uint8Array(size + 1);
    let position = 0;
    while (position <= size) {
      const n = file.readSync(data.subarray(position));
      if (n === null) break;
      position += n;
    }
    // Read to the end of file in one or two calls: a file that grew or shrank since fstat reads another length. No
    // second fstat for the mtime, as a C tool makes none: for a file read in one call it is a third of the calls.
    if (position !== size) {
      throw new CkptkitError(
        "file_changed",
        `${path} changed while it was read: size was ${size} bytes at open, ${position} read`,
        { path },
      );
    }
    const digest = digestSmallFile(job, data.subarray(0, size), sampleBytes, mtimeMs, digestOf);
    keepOpen(file);
    kept = true;
    return digest;
  } finally {
    if (!kept) file.close();
  }
}

function digestSmallFile(
  job: SmallFileJob,
  bytes: Uint8Array,
  sampleBytes: number,
  mtimeMs: number,
  digestOf: (bytes: Uint8Array) => string,
): FileDigest {
  const size = bytes.length;
  const digest = digestOf(bytes);
  const regions = job.regions ?? sampleRegions(size, sampleBytes);
  const checker = job.formatPath === undefined ? undefined : formatCheckerFor(job.formatPath, size);
  checker?.update(bytes);
  return {
    size,
    digest,
    // A region covering the whole file (every file up to one region) has the whole file's digest: hashed once.
    samples: regions.map(({ offset, length }) => ({
      offset,
      length,
      digest: offset === 0 && length === size ? digest : digestOf(bytes.subarray(offset, offset + length)),
    })),
    mtimeMs,
    ...(checker && { format: finishedFormat(checker) }),
  };
}

/** A function digesting one buffer whole, for files read in one piece. */
async function oneShotDigest(algorithm: HashAlgorithm): Promise<(bytes: Uint8Array) => string> {
  if (algorithm === "sha256") return (bytes) => createHash("sha256").update(bytes).digest("hex");
  if (algorithm === "xxh128") {
    const { createXXHash128 } = await import("../deps/xxhash.ts");
    // One wasm instance for the batch: each digest starts from init().
    const hash = await createXXHash128();
    return (bytes) => {
      hash.init();
      hash.update(bytes);
      return hash.digest("hex");
    };
  }
  // Unknown: createHasher throws the error that names the algorithms.
  await createHasher(algorithm);
  throw new CkptkitError("invalid_argument", `Unknown hash algorithm "${algorithm}"`);
}

/** What a format checker found, once the whole file went through it. */
function finishedFormat(checker: FormatChecker): FileFormatResult {
  return { format: checker.format, findings: checker.finish(), notes: [...checker.notes], facts: { ...checker.facts } };
}
