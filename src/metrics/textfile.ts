/**
 * node_exporter's textfile collector output: written atomically (temp file in
 * the same folder, fsync, rename) so node_exporter never reads half a file.
 * The temp file's name does not end in `.prom`, so the collector ignores it.
 *
 * `--textfile` names either the file or the collector's folder: in a folder,
 * each root gets its own file, `ckptkit-<slug>-<hash>.prom`, so two roots on
 * one node never overwrite each other's file (node_exporter would otherwise
 * see one root, or drop a duplicate series with only a log line).
 *
 * @module
 */

import { createHash } from "node:crypto";
import { writeFileAtomic } from "../fs/durable.ts";
import { asCkptkitError, CkptkitError } from "../errors.ts";

/**
 * The textfile name of a root in a collector folder:
 * `ckptkit-<slug of the root label>-<first 10 hex digits of the SHA-256 of the root's real path>.prom`.
 * The slug keeps the name readable (the label's letters, digits, `.`, `_`
 * and `-`, other characters as `-`, its last 40 characters: a path's end
 * tells most); the hash keeps it unique per root, whatever the label.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { textfileName } from "./textfile.ts";
 * const name = textfileName("/mnt/ckpts/llama-7b");
 * assert.match(name, /^ckptkit-mnt-ckpts-llama-7b-[0-9a-f]{10}\.prom$/);
 * assert.match(textfileName("/a/x", "llama 7b"), /^ckptkit-llama-7b-[0-9a-f]{10}\.prom$/);
 * assert.notEqual(textfileName("/a/x", "x"), textfileName("/b/x", "x"));
 * ```
 */
export function textfileName(root: string, label: string = root): string {
  const slug = label.replace(/[^A-Za-z0-9._-]+/g, "-").replace(/-+$/, "").slice(-40).replace(/^[-.]+/, "");
  const hash = createHash("sha256").update(root).digest("hex").slice(0, 10);
  return `ckptkit-${slug || "root"}-${hash}.prom`;
}

/**
 * Where the metrics of `root` go for a `--textfile` value: `target` itself
 * when it is a file path, or {@linkcode textfileName} inside it when it is a
 * folder (an existing folder, or a path ending in `/`).
 *
 * Requires `--allow-read`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { resolveTextfile } from "./textfile.ts";
 * const dir = await Deno.makeTempDir();
 * assert.equal(await resolveTextfile(`${dir}/ckptkit.prom`, "/mnt/a"), `${dir}/ckptkit.prom`);
 * assert.match(await resolveTextfile(dir, "/mnt/a"), /\/ckptkit-mnt-a-[0-9a-f]{10}\.prom$/);
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function resolveTextfile(target: string, root: string, label?: string): Promise<string> {
  let folder = target.endsWith("/");
  if (!folder) {
    try {
      folder = (await Deno.stat(target)).isDirectory;
    } catch {
      // not there yet: a file path
    }
  }
  return folder ? `${target.replace(/\/+$/, "")}/${textfileName(root, label)}` : target;
}

/**
 * Writes exposition text to `path` atomically.
 *
 * Requires `--allow-read` and `--allow-write`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { writeTextfile } from "./textfile.ts";
 * const dir = await Deno.makeTempDir();
 * await writeTextfile(`${dir}/ckptkit.prom`, "# HELP x y\n# TYPE x gauge\nx 1\n");
 * assert.match(await Deno.readTextFile(`${dir}/ckptkit.prom`), /^x 1$/m);
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function writeTextfile(path: string, text: string): Promise<void> {
  if (!path.endsWith(".prom")) {
    throw new CkptkitError(
      "invalid_argument",
      `Textfile ${path} must end in .prom, or node_exporter's textfile collector ignores it`,
      { path },
    );
  }
  try {
    await writeFileAtomic(path, text);
  } catch (err) {
    throw asCkptkitError(err, `Writing the metrics textfile ${path}`, path);
  }
}
