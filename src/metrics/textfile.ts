/**
 * node_exporter's textfile collector output: written atomically (temp file in
 * the same folder, fsync, rename) so node_exporter never reads half a file.
 * The temp file's name does not end in `.prom`, so the collector ignores it.
 *
 * @module
 */

import { writeFileAtomic } from "../durable.ts";
import { asCkptkitError, CkptkitError } from "../errors.ts";

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
