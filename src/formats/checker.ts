/**
 * The contract every streaming format checker meets, so deep validation can
 * read each byte of a file once: the hashing loop hands the same chunks to
 * the digest and to the checker.
 *
 * @module
 */

/**
 * One thing wrong with a file's format. Validation turns it into a
 * `format_invalid` problem: `{ reason: "format_invalid", path, detail }`.
 *
 * @example
 * ```ts
 * import type { FormatFinding } from "./checker.ts";
 * const finding: FormatFinding = {
 *   detail: "end of central directory record not found: the file is truncated",
 *   offset: 1024,
 * };
 * ```
 */
export interface FormatFinding {
  /** What is wrong, with the numbers a human needs to act on it. */
  detail: string;
  /** The byte offset in the file the finding is about, when there is one. */
  offset?: number;
}

/**
 * A small fact read from a file, for layout checks (for example DeepSpeed's `dp_world_size`).
 *
 * @example
 * ```ts
 * import type { FormatFact } from "./checker.ts";
 * const facts: Record<string, FormatFact> = { dp_world_size: 8, ds_version: "0.14.0" };
 * ```
 */
export type FormatFact = string | number | boolean;

/**
 * A checker fed a file's bytes in order, from offset 0, in chunks of any
 * size. It keeps only what it needs (headers, a bounded tail), so memory stays
 * bounded whatever the file size.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { formatCheckerFor } from "./mod.ts";
 * const checker = formatCheckerFor("weights.safetensors", 16)!;
 * checker.update(new Uint8Array([8, 0, 0, 0, 0, 0, 0, 0]));
 * checker.update(new TextEncoder().encode("{}      "));
 * assert.deepEqual(checker.finish(), []);
 * ```
 */
export interface FormatChecker {
  /**
   * The format checked: `torch-zip`, `torch-legacy`, `safetensors`, or
   * `torch` until the first bytes have told zip from legacy, or
   * `unrecognized` for a `.bin` file that is not a torch file at all.
   */
  readonly format: string;
  /**
   * Feeds the next bytes. The caller may reuse `chunk` after the call returns:
   * checkers copy what they keep.
   */
  update(chunk: Uint8Array): void;
  /** Ends the input and returns every finding; `[]` when the file is well-formed. */
  finish(): FormatFinding[];
  /**
   * What could not be checked, and why (for example a central directory
   * larger than the buffer allowed). Not problems: a validation note each.
   * Complete once {@linkcode FormatChecker.finish} has returned.
   */
  readonly notes: readonly string[];
  /**
   * Small scalar facts read from the file (for a torch checkpoint: the
   * top-level string, number and boolean entries of its pickled dict, such
   * as `dp_world_size`), for layout checks. Complete after `finish`.
   */
  readonly facts: Readonly<Record<string, FormatFact>>;
}

/** Most findings one file reports; the rest are counted in one last finding. */
const MAX_FINDINGS = 100;

/**
 * Keeps the first {@linkcode MAX_FINDINGS} findings and counts the rest, so a
 * file damaged everywhere cannot flood a report.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { capFindings } from "./checker.ts";
 * const many = Array.from({ length: 5 }, (_, i) => ({ detail: `finding ${i}` }));
 * assert.deepEqual(capFindings(many, 2).map((f) => f.detail), ["finding 0", "finding 1", "3 more findings not listed"]);
 * ```
 */
export function capFindings(findings: FormatFinding[], max = MAX_FINDINGS): FormatFinding[] {
  if (findings.length <= max) return findings;
  return [...findings.slice(0, max), { detail: `${findings.length - max} more findings not listed` }];
}

/**
 * Shows up to `max` bytes as hex pairs, for findings about unexpected bytes.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { hex } from "./checker.ts";
 * assert.equal(hex(new Uint8Array([0x50, 0x4b, 3, 4])), "50 4b 03 04");
 * ```
 */
export function hex(data: Uint8Array, max = 8): string {
  const shown = [...data.subarray(0, max)].map((b) => b.toString(16).padStart(2, "0")).join(" ");
  return data.length > max ? `${shown} …` : shown;
}
