/**
 * The typed error every library function throws for expected failures, with
 * a stable reason that the CLI maps to an exit code.
 *
 * @module
 */

/** Every reason a {@linkcode CkptkitError} can carry. */
export const ERROR_REASONS = [
  "invalid_argument",
  "config_invalid",
  "not_found",
  "not_a_checkpoint",
  "not_a_root",
  "not_a_folder",
  "report_invalid",
  "report_mismatch",
  "checkpoint_exists",
  "manifest_exists",
  "staging_invalid",
  "unsupported_entry",
  "unsafe_path",
  "cross_device",
  "mount_point",
  "file_changed",
  "part_conflict",
  "part_mismatch",
  "commit_failed",
  "wait_timeout",
  "lock_timeout",
  "push_failed",
  "no_space",
  "permission_denied",
  "io_error",
] as const;

/**
 * A stable reason for a failed operation (as opposed to a validation
 * {@linkcode Problem}, which describes a checkpoint).
 */
export type ErrorReason = typeof ERROR_REASONS[number];

/**
 * Reasons that mean the caller asked for something wrong (exit code 2): a
 * bad flag or config, a path argument that does not exist or is not a
 * folder, or the ranks of a multi-rank commit launched with arguments that
 * disagree (world size, step, overlapping files).
 */
export const USAGE_ERROR_REASONS: ReadonlySet<ErrorReason> = new Set([
  "invalid_argument",
  "config_invalid",
  "not_found",
  "not_a_checkpoint",
  // A destructive command (gc) pointed at a folder with no mark of a ckptkit root.
  "not_a_root",
  // A root, checkpoint or staging folder argument that is a file or a device.
  "not_a_folder",
  "part_conflict",
  "part_mismatch",
  // Shard reports that are unusable or do not form one set (`ckptkit report merge`).
  "report_invalid",
  "report_mismatch",
]);

/** Options for {@linkcode CkptkitError}. */
export interface CkptkitErrorOptions {
  /** The file or folder the error is about. */
  path?: string;
  /** The underlying error, kept for debugging. */
  cause?: unknown;
}

/**
 * An expected failure with a stable {@linkcode ErrorReason}.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { CkptkitError } from "./errors.ts";
 * const err = new CkptkitError("checkpoint_exists", "step-10 already exists", {
 *   path: "/tmp/ckpts/step-10",
 * });
 * assert.ok(err.reason === "checkpoint_exists");
 * ```
 */
export class CkptkitError extends Error {
  /** The stable reason. */
  readonly reason: ErrorReason;
  /** The file or folder the error is about, when there is one. */
  readonly path?: string;

  /** Creates an error with a stable reason and a one-line message. */
  constructor(
    reason: ErrorReason,
    message: string,
    options: CkptkitErrorOptions = {},
  ) {
    super(message, { cause: options.cause });
    this.name = "CkptkitError";
    this.reason = reason;
    this.path = options.path;
  }
}

/**
 * Turns an error thrown by the runtime (a `Deno.errors.*` or a Node-style
 * error with a `code`) into a {@linkcode CkptkitError} whose message names
 * what was being done.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { asCkptkitError } from "./errors.ts";
 * try {
 *   await Deno.readFile("/nonexistent/file");
 * } catch (err) {
 *   const e = asCkptkitError(err, "reading /nonexistent/file");
 *   assert.ok(e.reason === "not_found" || e.reason === "permission_denied");
 * }
 * ```
 */
export function asCkptkitError(
  err: unknown,
  doing: string,
  path?: string,
): CkptkitError {
  if (err instanceof CkptkitError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new CkptkitError(
    reasonOf(err),
    `${doing} failed: ${message}`,
    { path, cause: err },
  );
}

/**
 * The stable reason of any thrown error: a {@linkcode CkptkitError}'s own, or
 * the one matching a runtime error (`no_space` for ENOSPC and EDQUOT,
 * `permission_denied`, `not_found`, `cross_device`), else `io_error`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { reasonOf } from "./errors.ts";
 * assert.ok(reasonOf(new Error("No space left on device (os error 28)")) === "no_space");
 * ```
 */
export function reasonOf(err: unknown): ErrorReason {
  if (err instanceof CkptkitError) return err.reason;
  if (err instanceof Deno.errors.NotFound) return "not_found";
  if (
    err instanceof Deno.errors.PermissionDenied ||
    err instanceof Deno.errors.NotCapable
  ) {
    return "permission_denied";
  }
  const code = (err as { code?: unknown })?.code;
  const message = err instanceof Error ? err.message : "";
  if (
    code === "ENOSPC" || code === "EDQUOT" ||
    /os error (28|122)\b/.test(message)
  ) {
    return "no_space";
  }
  if (code === "EXDEV" || /os error 18\b/.test(message)) return "cross_device";
  return "io_error";
}
