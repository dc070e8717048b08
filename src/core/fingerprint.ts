/**
 * A metadata fingerprint of a checkpoint: the manifest's digest plus the
 * size and mtime of the manifest and of every file on disk. It changes when
 * any file is rewritten, truncated, added or removed, and costs only stat
 * calls, so `resume --policy last-known-good` can trust an earlier full
 * validation of a huge checkpoint without re-hashing it.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { MANIFEST_NAME } from "./layout.ts";
import { listTree } from "../fs/tree.ts";

/**
 * Computes the fingerprint of the checkpoint in `dir`, or `undefined` when
 * the folder or its manifest cannot be read or it holds a symlink or special
 * file.
 *
 * Requires `--allow-read`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { fingerprintCheckpoint } from "./fingerprint.ts";
 * const dir = await Deno.makeTempDir();
 * await Deno.writeTextFile(`${dir}/ckptkit.manifest.json`, "{}");
 * const before = await fingerprintCheckpoint(dir);
 * await Deno.writeTextFile(`${dir}/extra.bin`, "x");
 * assert.ok(before !== (await fingerprintCheckpoint(dir)));
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function fingerprintCheckpoint(
  dir: string,
): Promise<string | undefined> {
  let tree;
  try {
    tree = await listTree(dir);
  } catch {
    return undefined;
  }
  if (
    tree.errors.length > 0 || tree.oddities.length > 0 ||
    !tree.files.has(MANIFEST_NAME)
  ) {
    return undefined;
  }
  const hash = createHash("sha256");
  for (
    const file of [...tree.files.values()].sort((
      a,
      b,
    ) => (a.path < b.path ? -1 : 1))
  ) {
    hash.update(
      `${JSON.stringify(file.path)}\t${file.size}\t${file.mtimeMs}\n`,
    );
  }
  return "sha256:" + hash.digest("hex");
}
