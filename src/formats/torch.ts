/**
 * Tells the two torch checkpoint formats apart from a file's first bytes
 * and hands the stream to the right checker: `PK` starts a zip archive
 * (`torch.save` since 1.6), a pickle `PROTO` opcode (0x80) starts the legacy
 * format, whose first pickle must then be torch's magic number. The tar
 * format of the earliest releases, which torch.load still reads, is
 * recognized and left unchecked.
 *
 * @module
 */

import type { FormatChecker, FormatFact, FormatFinding } from "./checker.ts";
import { hex } from "./checker.ts";
import { TorchLegacyChecker } from "./torch_legacy.ts";
import { TorchZipChecker } from "./torch_zip.ts";
import type { ZipVerifierOptions } from "./zip.ts";

/** Where a tar header's "ustar" magic ends: the bytes kept before giving up on a file. */
const TAR_MAGIC_END = 262;
const TAR_MAGIC = [0x75, 0x73, 0x74, 0x61, 0x72];

/**
 * Options for {@linkcode TorchChecker}.
 *
 * @example
 * ```ts
 * import { TorchChecker, type TorchCheckerOptions } from "./torch.ts";
 * const options: TorchCheckerOptions = { strict: false };
 * const checker = new TorchChecker(options);
 * ```
 */
export interface TorchCheckerOptions {
  /**
   * True (default) for extensions only torch writes (`.pt`, `.pth`,
   * `.ckpt`): a file that is neither format is a finding. False for `.bin`,
   * which other programs use too: such a file is left unchecked, with a note.
   */
  strict?: boolean;
  /** Buffer limits for the zip check. */
  zip?: Omit<ZipVerifierOptions, "onEntry">;
}

/**
 * A torch checkpoint checker that picks zip or legacy from the first bytes.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { TorchChecker } from "./torch.ts";
 * const file = await Deno.readFile(new URL("../../tests/fixtures/torch-legacy/reshape.bin", import.meta.url));
 * const checker = new TorchChecker();
 * assert.equal(checker.format, "torch");
 * checker.update(file);
 * assert.equal(checker.format, "torch-legacy");
 * assert.deepEqual(checker.finish(), []);
 * ```
 */
export class TorchChecker implements FormatChecker {
  readonly #strict: boolean;
  readonly #zipOptions: Omit<ZipVerifierOptions, "onEntry">;
  readonly #head = new Uint8Array(TAR_MAGIC_END);
  #have = 0;
  #inner: FormatChecker | undefined;
  #unrecognized = false;
  #tar = false;
  readonly #notes: string[] = [];

  /** A checker for one file. */
  constructor(options: TorchCheckerOptions = {}) {
    this.#strict = options.strict ?? true;
    this.#zipOptions = options.zip ?? {};
  }

  /** `torch` until decided, then the inner checker's format, `torch-tar` (not checked) or `unrecognized`. */
  get format(): string {
    return this.#inner?.format ?? (this.#tar ? "torch-tar" : this.#unrecognized ? "unrecognized" : "torch");
  }

  /** What could not be checked. */
  get notes(): readonly string[] {
    return this.#inner?.notes ?? this.#notes;
  }

  /** Facts read by the inner checker. */
  get facts(): Readonly<Record<string, FormatFact>> {
    return this.#inner?.facts ?? {};
  }

  /** Feeds the next bytes. */
  update(chunk: Uint8Array): void {
    if (this.#inner) return this.#inner.update(chunk);
    if (this.#unrecognized || this.#tar || chunk.length === 0) return;
    const n = Math.min(this.#head.length - this.#have, chunk.length);
    this.#head.set(chunk.subarray(0, n), this.#have);
    this.#have += n;
    const inner = this.#decide(false);
    if (!inner) return;
    inner.update(this.#head.subarray(0, this.#have));
    inner.update(chunk.subarray(n));
  }

  /** Ends the input and returns the findings. */
  finish(): FormatFinding[] {
    if (!this.#inner && !this.#unrecognized && !this.#tar) this.#decide(true);
    if (this.#inner) return this.#inner.finish();
    if (this.#tar) {
      this.#notes.push("the tar format of the earliest PyTorch releases: its format was not checked");
      return [];
    }
    const head = this.#head.subarray(0, Math.min(this.#have, 8));
    if (!this.#strict) {
      this.#notes.push(`not a torch file (it starts ${hex(head) || "empty"}); its format was not checked`);
      return [];
    }
    if (this.#have === 0) return [{ offset: 0, detail: "the file is empty; torch.load fails on it" }];
    return [{
      offset: 0,
      detail: `not a PyTorch checkpoint: it starts ${hex(head)}, while torch.save writes a zip archive ` +
        `(50 4b 03 04) or, before PyTorch 1.6, pickles (80 02 8a 0a …)`,
    }];
  }

  #decide(atEnd: boolean): FormatChecker | undefined {
    const head = this.#head;
    if (this.#have >= 1 && head[0] === 0x80) {
      this.#inner = new TorchLegacyChecker({ strict: this.#strict });
    } else if (this.#have >= 2 && head[0] === 0x50 && head[1] === 0x4b) {
      this.#inner = new TorchZipChecker(this.#zipOptions);
    } else if (this.#have >= TAR_MAGIC_END || atEnd) {
      // Neither: perhaps the tar format torch.load still reads ("ustar" at offset 257).
      this.#tar = this.#have >= TAR_MAGIC_END && TAR_MAGIC.every((byte, i) => head[257 + i] === byte);
      this.#unrecognized = !this.#tar;
    }
    return this.#inner;
  }
}
