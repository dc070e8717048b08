/**
 * The stable reasons a checkpoint can fail validation, shared by the JSON
 * output, the JSON logs and the `reason` label of metrics.
 *
 * @module
 */

/** Every reason a {@linkcode Problem} can carry, in documentation order. */
export const PROBLEM_REASONS = [
  "manifest_missing",
  "manifest_corrupt",
  "manifest_unsupported",
  "step_mismatch",
  "file_missing",
  "size_mismatch",
  "hash_mismatch",
  "unexpected_file",
  "unsafe_path",
  "symlink",
  "not_regular_file",
  "mount_point",
  "file_changed",
  "format_invalid",
  "io_error",
] as const;

/**
 * A stable, machine-readable reason for a validation problem.
 *
 * - `manifest_missing`: the checkpoint has no `ckptkit.manifest.json`.
 * - `manifest_corrupt`: the manifest cannot be read, parsed, or its
 *   self-digest does not match its content.
 * - `manifest_unsupported`: the manifest was written by a newer format version.
 * - `step_mismatch`: the folder is named for one step (`step-30`,
 *   `checkpoint-30`) and its manifest records another (a copied or renamed
 *   checkpoint, or a re-signed manifest).
 * - `file_missing`: a file the manifest lists is not on disk.
 * - `size_mismatch`: a file's size differs from the manifest.
 * - `hash_mismatch`: a file's digest (whole or sampled) differs from the manifest.
 * - `unexpected_file`: a file on disk is not listed in the manifest.
 * - `unsafe_path`: a manifest path is absolute, escapes the checkpoint, holds a
 *   NUL byte, is not normalised, or is listed twice.
 * - `symlink`: a symbolic link inside the checkpoint (never followed).
 * - `not_regular_file`: a listed path is a folder, FIFO, socket or device.
 * - `mount_point`: a folder or file inside the checkpoint is on another file
 *   system (a bind mount, a tmpfs); never entered.
 * - `file_changed`: a file changed size or mtime while it was being checked.
 * - `format_invalid`: a format-aware check (torch zip, safetensors) failed.
 * - `io_error`: a file could not be read (permissions, I/O error).
 */
export type ProblemReason = typeof PROBLEM_REASONS[number];

/**
 * One finding of validation: what is wrong, where, and a detail a human can
 * act on (got versus expected).
 *
 * @example
 * ```ts
 * import type { Problem } from "./problems.ts";
 * const problem: Problem = {
 *   reason: "size_mismatch",
 *   path: "model.pt",
 *   detail: "size is 10 bytes, manifest says 12",
 * };
 * ```
 */
export interface Problem {
  /** The stable reason, see {@linkcode ProblemReason}. */
  reason: ProblemReason;
  /** The path relative to the checkpoint, or "" for the checkpoint itself. */
  path: string;
  /** What was found versus what was expected, in plain words. */
  detail: string;
}

/**
 * Tells whether a string is one of the stable {@linkcode ProblemReason}s.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { isProblemReason } from "./problems.ts";
 * assert.ok(isProblemReason("hash_mismatch"));
 * assert.ok(!isProblemReason("bit_rot"));
 * ```
 */
export function isProblemReason(value: string): value is ProblemReason {
  return (PROBLEM_REASONS as readonly string[]).includes(value);
}
