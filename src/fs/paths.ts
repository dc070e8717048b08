/**
 * Checks on the relative file paths a manifest lists. Manifests are untrusted
 * input: a path must name a file inside the checkpoint, in one canonical
 * spelling, so that no two entries name the same file and nothing outside the
 * checkpoint is ever opened.
 *
 * @module
 */

/** Longest relative path accepted, in UTF-16 code units (Linux PATH_MAX). */
export const MAX_PATH_LENGTH = 4096;

/**
 * Explains why a manifest path is unsafe, or returns `undefined` when it is a
 * normalised path inside the checkpoint: `/`-separated, relative, without
 * empty, `.` or `..` segments, backslashes or NUL bytes.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { unsafePathReason } from "./paths.ts";
 * assert.ok(unsafePathReason("shards/model-00001.bin") === undefined);
 * assert.ok(unsafePathReason("../etc/passwd") !== undefined);
 * assert.ok(unsafePathReason("/etc/passwd") !== undefined);
 * ```
 */
export function unsafePathReason(path: unknown): string | undefined {
  if (typeof path !== "string") return "path is not a string";
  if (path.length === 0) return "path is empty";
  if (path.length > MAX_PATH_LENGTH) {
    return `path is longer than ${MAX_PATH_LENGTH} characters`;
  }
  if (path.includes("\0")) return "path contains a NUL byte";
  if (path.startsWith("/")) return "path is absolute";
  if (/^[A-Za-z]:/.test(path)) return "path starts with a drive letter";
  if (path.includes("\\")) return "path contains a backslash";
  for (const segment of path.split("/")) {
    if (segment === "..") return "path escapes the checkpoint with '..'";
    if (segment === "." || segment === "") {
      return "path is not normalised (empty or '.' segment)";
    }
  }
  return undefined;
}

/**
 * Joins a checked relative path onto a folder with the platform separator.
 * The caller must have checked `relative` with {@linkcode unsafePathReason}.
 */
export function joinInside(folder: string, relative: string): string {
  const sep = folder.endsWith("/") ? "" : "/";
  return folder + sep + relative;
}

/** Folder part of a relative `/`-separated path ("" for a top-level file). */
export function parentOf(relative: string): string {
  const cut = relative.lastIndexOf("/");
  return cut < 0 ? "" : relative.slice(0, cut);
}
