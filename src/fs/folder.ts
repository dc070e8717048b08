/**
 * The one check of a folder given as an argument (a root, a checkpoint, a
 * staging folder), so that every command answers the same input with the
 * same reason: `not_found` when it is missing, `not_a_folder` when it is a
 * file or a device.
 *
 * @module
 */

import { CkptkitError } from "../errors.ts";

/** Options for {@linkcode requireFolder}. */
export interface RequireFolderOptions {
  /** Do not follow a symbolic link: a link is then `not_a_folder` too. */
  noFollow?: boolean;
  /** A missing folder is fine (it may be created later); only something else in its place is refused. */
  mayBeMissing?: boolean;
}

/**
 * Checks that `path` is a folder, throwing a {@linkcode CkptkitError}
 * otherwise: `not_found` (missing), `not_a_folder` (a file, a device, a path
 * through a file, or with `noFollow` a symbolic link), or `io_error`.
 * `what` names the argument in the message ("checkpoint root").
 *
 * Requires `--allow-read`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { requireFolder } from "./folder.ts";
 * const dir = await Deno.makeTempDir();
 * await requireFolder(dir, "checkpoint root");
 * await Deno.writeTextFile(`${dir}/file`, "x");
 * await assert.rejects(requireFolder(`${dir}/file`, "checkpoint root"), /not a folder/);
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function requireFolder(
  path: string,
  what: string,
  options: RequireFolderOptions = {},
): Promise<void> {
  let info: Deno.FileInfo;
  try {
    info = options.noFollow ? await Deno.lstat(path) : await Deno.stat(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) {
      if (options.mayBeMissing) return;
      throw new CkptkitError("not_found", `${capitalize(what)} ${path} does not exist`, { path, cause: err });
    }
    if (err instanceof Deno.errors.NotADirectory) throw notAFolder(path, what, "a path through a file");
    throw new CkptkitError(
      err instanceof Deno.errors.PermissionDenied ? "permission_denied" : "io_error",
      `Cannot read ${path}: ${(err as Error).message}`,
      { path, cause: err },
    );
  }
  if (info.isDirectory) return;
  throw notAFolder(
    path,
    what,
    info.isSymlink ? "a symbolic link" : info.isFile ? "a file" : "a device, FIFO or socket",
  );
}

/** The error for a `path` given as a folder that is `found` instead (e.g. "a file"). */
export function notAFolder(path: string, what: string, found: string): CkptkitError {
  return new CkptkitError("not_a_folder", `${path} is not a folder but ${found}; expected a ${what}`, { path });
}

function capitalize(text: string): string {
  return text.charAt(0).toUpperCase() + text.slice(1);
}
