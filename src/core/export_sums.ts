/**
 * Export of a checkpoint's manifest as a coreutils `SHA256SUMS` file, so
 * that `cd <checkpoint> && sha256sum -c SHA256SUMS` verifies every file with
 * coreutils alone, on a machine without ckptkit.
 *
 * The lines come from the manifest, not from reading the files: the file
 * states what the checkpoint must contain, and `sha256sum -c` checks it.
 *
 * @module
 */

import { CkptkitError } from "../errors.ts";
import { requireFolder } from "../fs/folder.ts";
import { MANIFEST_NAME } from "./layout.ts";
import { parseManifest, readManifestFile } from "./manifest.ts";
import type { Problem } from "../problems.ts";

/**
 * Thrown by {@linkcode exportSums} when the checkpoint's manifest cannot be
 * trusted: it is missing, corrupt, written by a newer format, or lists an
 * unsafe path. `problems` holds the validation problems, with the same
 * reasons `ckptkit validate` reports (`manifest_missing`,
 * `manifest_corrupt`, `manifest_unsupported`, `unsafe_path`, `symlink`,
 * `io_error`); the CLI exits 1 and names the first one.
 *
 * `reason` is `unsafe_path` when the only problems are unsafe paths and
 * `not_a_checkpoint` otherwise (the folder is not a checkpoint ckptkit can
 * vouch for).
 */
export class ManifestProblemError extends CkptkitError {
  /** Every problem found in the manifest (at least one). */
  readonly problems: Problem[];

  /** Creates the error for the checkpoint in `path`. */
  constructor(path: string, problems: Problem[]) {
    const first = problems[0];
    const onlyUnsafe = problems.every((p) => p.reason === "unsafe_path");
    super(
      onlyUnsafe ? "unsafe_path" : "not_a_checkpoint",
      `Cannot export sums of ${path}: ${first.path ? `${first.path}: ` : ""}${first.detail}` +
        (problems.length > 1 ? ` (and ${problems.length - 1} more problems)` : ""),
      { path },
    );
    this.name = "ManifestProblemError";
    this.problems = problems;
  }
}

/**
 * Formats one `sha256sum` line: `<digest>  <path>\n`. A path holding a
 * newline, a carriage return or a backslash is written the way GNU coreutils
 * writes it: the line starts with a backslash and those characters become
 * `\n`, `\r` and `\\` (coreutils 9.1 and later read `\r`; `\n` and `\\`
 * since 8.x). Manifests never list paths with backslashes (they are unsafe).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { formatSumsLine } from "./export_sums.ts";
 * const digest = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
 * assert.equal(formatSumsLine(digest, "model.pt"), `${digest}  model.pt\n`);
 * assert.equal(formatSumsLine(digest, "a\nb"), `\\${digest}  a\\nb\n`);
 * ```
 */
export function formatSumsLine(digest: string, path: string): string {
  if (!/[\\\n\r]/.test(path)) return `${digest}  ${path}\n`;
  const escaped = path.replace(/[\\\n\r]/g, (c) => c === "\\" ? "\\\\" : c === "\n" ? "\\n" : "\\r");
  return `\\${digest}  ${escaped}\n`;
}

/**
 * Returns the `SHA256SUMS` text of the checkpoint in `checkpointPath`: one
 * line `<sha256>  <relative path>` per file of its manifest, in the
 * manifest's order (sorted by path), with coreutils escaping for newlines
 * (see {@linkcode formatSumsLine}). Nothing but the manifest is read; the
 * files themselves are checked by whoever runs `sha256sum -c`.
 *
 * Throws a {@linkcode CkptkitError}:
 * - `not_found` / `not_a_folder` when the path is missing or not a folder;
 * - {@linkcode ManifestProblemError} when the manifest is missing, corrupt,
 *   newer than this ckptkit, or lists an unsafe path (nothing is exported
 *   then, not even the safe lines);
 * - `invalid_argument` when the manifest's digests are xxh128, which
 *   `sha256sum` cannot check (use `ckptkit validate` for those);
 * - `io_error` / `permission_denied` when the manifest cannot be read.
 *
 * Requires `--allow-read`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { openCheckpointWriter } from "./writer.ts";
 * import { exportSums } from "./export_sums.ts";
 * const root = await Deno.makeTempDir();
 * const writer = await openCheckpointWriter(root, { step: 1 });
 * await writer.writeFile("model.pt", "");
 * const { path } = await writer.commit();
 * assert.equal(
 *   await exportSums(path),
 *   "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855  model.pt\n",
 * );
 * await Deno.remove(root, { recursive: true });
 * ```
 */
export async function exportSums(checkpointPath: string): Promise<string> {
  await requireFolder(checkpointPath, "checkpoint folder");
  const text = await readManifestText(checkpointPath);
  const parsed = await parseManifest(text);
  if (!parsed.manifest || parsed.problems.length > 0) {
    throw new ManifestProblemError(checkpointPath, parsed.problems);
  }
  const { manifest } = parsed;
  if (manifest.hash.algorithm !== "sha256") {
    throw new CkptkitError(
      "invalid_argument",
      `${checkpointPath} was sealed with ${manifest.hash.algorithm} digests, which sha256sum cannot check; ` +
        "verify it with `ckptkit validate`, or commit or seal with --algorithm sha256 to export sums",
      { path: checkpointPath },
    );
  }
  const lines: string[] = [];
  for (const file of manifest.files) {
    // A lone UTF-16 surrogate (possible through a JSON \ud800 escape) has no
    // UTF-8 spelling: no file on disk can carry that name.
    if (!file.path.isWellFormed()) {
      throw new ManifestProblemError(checkpointPath, [{
        reason: "unsafe_path",
        path: file.path.toWellFormed(),
        detail: "path is not valid Unicode (lone surrogate)",
      }]);
    }
    if (!/^[0-9a-f]{64}$/.test(file.digest)) {
      throw new ManifestProblemError(checkpointPath, [{
        reason: "manifest_corrupt",
        path: MANIFEST_NAME,
        detail: `the digest of ${JSON.stringify(file.path)} is not a sha256 digest`,
      }]);
    }
    lines.push(formatSumsLine(file.digest, file.path));
  }
  return lines.join("");
}

/** Reads the manifest's text the way validation does (see `readManifestFile`); a problem is thrown. */
async function readManifestText(dir: string): Promise<string> {
  const read = await readManifestFile(dir);
  if ("problem" in read) throw new ManifestProblemError(dir, [read.problem]);
  return read.text;
}
