/**
 * The check of a legacy PyTorch checkpoint (`torch.save` before 1.6, or
 * with `_use_new_zipfile_serialization=False`). Such a file is five pickles
 * back to back, then raw storage bytes:
 *
 * 1. the magic number 0x1950a86a20f9469cfc6c,
 * 2. the protocol version 1001,
 * 3. sys_info (`little_endian`, `type_sizes`, …),
 * 4. the object itself, whose persistent ids name each storage's key, type
 *    and element count,
 * 5. the list of storage keys, in the order their bytes follow;
 *
 * then for each listed key: an 8-byte element count (in the byte order
 * sys_info states) and count × element size bytes. The file ends exactly
 * there. torch.load checks the count against the persistent id ("storage
 * has wrong size"), so a mismatch is a finding here too.
 *
 * Memory: one pickle walk at a time (at most 64 MiB of rebuilt values, byte
 * strings never kept) and one record per storage.
 *
 * @module
 */

import { capFindings, type FormatChecker, type FormatFact, type FormatFinding } from "./checker.ts";
import { entriesOf, type PickleValue, PickleWalker } from "./pickle.ts";
import { describe, type StorageRef, storageRefs, topLevelFacts } from "./torch_pickle.ts";

/** The legacy format's magic number, the first pickle of the file. */
const LEGACY_MAGIC = 0x1950a86a20f9469cfc6cn;
/** The legacy format's protocol version, the second pickle. */
const LEGACY_PROTOCOL_VERSION = 1001;

const PICKLES = ["magic number", "protocol version", "sys_info", "main", "storage keys"] as const;
type PickleName = typeof PICKLES[number];

/**
 * Options for {@linkcode TorchLegacyChecker}.
 *
 * @example
 * ```ts
 * import { TorchLegacyChecker, type TorchLegacyOptions } from "./torch_legacy.ts";
 * const options: TorchLegacyOptions = { strict: false };
 * const checker = new TorchLegacyChecker(options);
 * ```
 */
export interface TorchLegacyOptions {
  /**
   * When the first pickle is not the magic number: true (default) makes it
   * a finding; false gives up quietly with a note, for extensions such as
   * `.bin` that other programs use too.
   */
  strict?: boolean;
}

type Stage =
  | { kind: "pickle"; name: PickleName; start: number; walker: PickleWalker }
  | { kind: "count"; index: number; start: number; bytes: Uint8Array; have: number }
  | { kind: "data"; index: number; start: number; remaining: number; total: number }
  | { kind: "end"; start: number }
  | { kind: "stopped" };

/**
 * Checks a legacy torch checkpoint fed front to back.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { TorchLegacyChecker } from "./torch_legacy.ts";
 * const file = await Deno.readFile(new URL("../../tests/fixtures/torch-legacy/bool.bin", import.meta.url));
 * const checker = new TorchLegacyChecker();
 * checker.update(file);
 * assert.deepEqual(checker.finish(), []);
 * const cut = new TorchLegacyChecker();
 * cut.update(file.subarray(0, file.length - 5));
 * assert.match(cut.finish()[0].detail, /ends at offset 494 inside storage '71854480'/);
 * ```
 */
export class TorchLegacyChecker implements FormatChecker {
  readonly #strict: boolean;
  #format = "torch-legacy";
  #stage: Stage = { kind: "pickle", name: "magic number", start: 0, walker: new PickleWalker() };
  #offset = 0;
  #littleEndian = true;
  #refs = new Map<string, StorageRef>();
  #order: StorageRef[] = [];
  #trailing = 0;
  readonly #findings: FormatFinding[] = [];
  readonly #notes: string[] = [];
  #facts: Record<string, FormatFact> = {};

  /** A checker for one file. */
  constructor(options: TorchLegacyOptions = {}) {
    this.#strict = options.strict ?? true;
  }

  /** `torch-legacy`, or `unrecognized` when a non-strict check found no magic number. */
  get format(): string {
    return this.#format;
  }

  /** What could not be checked. */
  get notes(): readonly string[] {
    return this.#notes;
  }

  /** Scalar top-level entries of the main pickle's dict. */
  get facts(): Readonly<Record<string, FormatFact>> {
    return this.#facts;
  }

  /** Feeds the next bytes. */
  update(chunk: Uint8Array): void {
    let pos = 0;
    while (pos < chunk.length) {
      const stage = this.#stage;
      let used: number;
      switch (stage.kind) {
        case "pickle":
          used = stage.walker.update(chunk.subarray(pos));
          if (stage.walker.error !== undefined) {
            this.#pickleFailed(stage);
            return;
          }
          if (stage.walker.done) this.#pickleDone(stage);
          break;
        case "count": {
          used = Math.min(8 - stage.have, chunk.length - pos);
          stage.bytes.set(chunk.subarray(pos, pos + used), stage.have);
          stage.have += used;
          if (stage.have === 8) this.#countDone(stage);
          break;
        }
        case "data":
          used = Math.min(stage.remaining, chunk.length - pos);
          stage.remaining -= used;
          if (stage.remaining === 0) this.#nextStorage(stage.index + 1, this.#offset + used);
          break;
        case "end":
          used = chunk.length - pos;
          this.#trailing += used;
          break;
        case "stopped":
          return;
      }
      pos += used;
      this.#offset += used;
    }
  }

  /** Ends the input and returns the findings. */
  finish(): FormatFinding[] {
    const stage = this.#stage;
    const size = this.#offset;
    switch (stage.kind) {
      case "pickle":
        if (stage.name === "magic number" && size === 0) {
          this.#findings.push({ offset: 0, detail: "the file is empty; torch.load fails on it" });
          break;
        }
        stage.walker.end();
        this.#findings.push({
          offset: stage.start,
          detail: `the file ends at offset ${size} inside the ${stage.name} pickle that starts at offset ` +
            `${stage.start}: the file is truncated`,
        });
        break;
      case "count":
      case "data": {
        const ref = this.#order[stage.index];
        const present = stage.kind === "count"
          ? `${stage.have} of the 8 bytes of its element count`
          : `${stage.total - stage.remaining} of its ${stage.total} bytes`;
        this.#findings.push({
          offset: stage.start,
          detail: `the file ends at offset ${size} inside storage '${ref.key}' ` +
            `(${stage.index + 1} of ${this.#order.length}, from offset ${stage.start}): ${present} are present; ` +
            `the file is truncated`,
        });
        break;
      }
      case "end":
        if (this.#trailing > 0) {
          this.#findings.push({
            offset: stage.start,
            detail: `${this.#trailing} bytes follow the last storage (which ends at offset ${stage.start}); ` +
              `torch.save writes nothing after it`,
          });
        }
        break;
      case "stopped":
        break;
    }
    return capFindings(this.#findings);
  }

  #stop(): void {
    this.#stage = { kind: "stopped" };
  }

  #pickleFailed(stage: Extract<Stage, { kind: "pickle" }>): void {
    if (stage.name === "magic number" && !this.#strict) {
      this.#notRecognized(`its first bytes are not a pickle (${stage.walker.error})`);
      return;
    }
    this.#findings.push({
      offset: stage.start + (stage.walker.errorOffset ?? 0),
      detail: `the ${stage.name} pickle at offset ${stage.start} is malformed: ${stage.walker.error}`,
    });
    this.#stop();
  }

  #notRecognized(why: string): void {
    this.#format = "unrecognized";
    this.#notes.push(`not a torch.save file (${why}); its format was not checked`);
    this.#stop();
  }

  #pickleDone(stage: Extract<Stage, { kind: "pickle" }>): void {
    const walker = stage.walker;
    const value = walker.value;
    const end = stage.start + walker.consumed;
    const next = (name: PickleName) => {
      this.#stage = { kind: "pickle", name, start: end, walker: new PickleWalker() };
    };
    switch (stage.name) {
      case "magic number":
        if (value !== LEGACY_MAGIC) {
          if (!this.#strict) return this.#notRecognized("its first pickle is not the legacy magic number");
          this.#findings.push({
            offset: 0,
            detail: `the first pickle is ${describe(value)}, not torch's magic number 0x1950a86a20f9469cfc6c: ` +
              `torch.load fails with "Invalid magic number; corrupt file?"`,
          });
          return this.#stop();
        }
        return next("protocol version");
      case "protocol version":
        if (value !== LEGACY_PROTOCOL_VERSION) {
          this.#findings.push({
            offset: stage.start,
            detail: `the protocol version pickle at offset ${stage.start} is ${describe(value)}, not 1001`,
          });
          return this.#stop();
        }
        return next("sys_info");
      case "sys_info":
        this.#readSysInfo(value, stage.start);
        return next("main");
      case "main":
        if (walker.limited) {
          this.#notes.push(
            `the main pickle builds more values than the walk keeps: storage sizes were not checked`,
          );
          return this.#stop();
        }
        this.#facts = topLevelFacts(value);
        this.#readMain(walker.persistentIds, stage.start);
        return next("storage keys");
      case "storage keys":
        this.#readKeys(value, stage.start, end);
        return;
    }
  }

  #readSysInfo(value: PickleValue | undefined, start: number): void {
    for (const [key, entry] of entriesOf(value)) {
      if (key === "little_endian") {
        if (typeof entry === "boolean") this.#littleEndian = entry;
        else {
          this.#findings.push({
            offset: start,
            detail: `sys_info's little_endian is ${describe(entry)}, not a boolean`,
          });
        }
      }
    }
  }

  #readMain(ids: readonly PickleValue[], start: number): void {
    const { refs, problems } = storageRefs(ids);
    for (const problem of problems) this.#findings.push({ offset: start, detail: `the main pickle's ${problem}` });
    this.#refs = new Map(refs.map((ref) => [ref.key, ref]));
  }

  #readKeys(value: PickleValue | undefined, start: number, end: number): void {
    const keys = typeof value === "object" && value !== null && value.kind === "list" ? value.items : undefined;
    if (!keys || keys.some((key) => typeof key !== "string")) {
      this.#findings.push({
        offset: start,
        detail: `the storage keys pickle at offset ${start} is ${describe(value)}, not a list of strings`,
      });
      return this.#stop();
    }
    const listed = new Set(keys as string[]);
    for (const key of keys as string[]) {
      const ref = this.#refs.get(key);
      if (!ref) {
        this.#findings.push({
          offset: start,
          detail: `the storage keys list names '${key}', which the main pickle never references ` +
            `(torch.load fails with a KeyError)`,
        });
        return this.#stop();
      }
      this.#order.push(ref);
    }
    for (const key of this.#refs.keys()) {
      if (!listed.has(key)) {
        this.#findings.push({
          offset: start,
          detail: `the main pickle references storage '${key}', which the storage keys list does not name: ` +
            `its bytes are not in the file`,
        });
      }
    }
    this.#nextStorage(0, end);
  }

  #nextStorage(index: number, start: number): void {
    if (index >= this.#order.length) {
      this.#stage = { kind: "end", start };
      return;
    }
    this.#stage = { kind: "count", index, start, bytes: new Uint8Array(8), have: 0 };
  }

  #countDone(stage: Extract<Stage, { kind: "count" }>): void {
    const ref = this.#order[stage.index];
    const view = new DataView(stage.bytes.buffer);
    const count = view.getBigUint64(0, this.#littleEndian);
    if (count !== BigInt(ref.numel)) {
      this.#findings.push({
        offset: stage.start,
        detail: `storage '${ref.key}' at offset ${stage.start} holds ${count} elements but the main pickle ` +
          `describes ${ref.type} of ${ref.numel} (torch.load fails with "storage has wrong size")`,
      });
      return this.#stop();
    }
    if (ref.elementSize === undefined) {
      this.#notes.push(
        `storage '${ref.key}' is a ${ref.type}, whose element size is not known here: ` +
          `it and the storages after it were not checked`,
      );
      return this.#stop();
    }
    const total = ref.numel * ref.elementSize;
    if (total === 0) {
      this.#nextStorage(stage.index + 1, stage.start + 8);
      return;
    }
    this.#stage = { kind: "data", index: stage.index, start: stage.start, remaining: total, total };
  }
}
