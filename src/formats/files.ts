/**
 * Reading files for the format checks when no hashing pass reads them
 * anyway: a whole file streamed through its checker, and the few small
 * files the layout checks need, each read only when small enough.
 *
 * @module
 */

import type { FormatFact, FormatFinding } from "./checker.ts";
import type { LayoutFile } from "./layouts.ts";
import { layoutFilesToRead } from "./layouts.ts";
import { formatCheckerFor } from "./dispatch.ts";

/** Read size, the same as hashing's, so a checker sees chunks as in validation. */
const CHUNK_BYTES = 2 * 1024 * 1024;

/**
 * What {@linkcode checkFileFormat} found.
 *
 * @example
 * ```ts
 * import type { FileFormatResult } from "./files.ts";
 * const ok: FileFormatResult = { format: "safetensors", findings: [], notes: [], facts: {} };
 * ```
 */
export interface FileFormatResult {
  /** The format checked (see {@linkcode FormatChecker.format}). */
  format: string;
  /** Everything wrong; `[]` when the file is well-formed. */
  findings: FormatFinding[];
  /** What could not be checked. */
  notes: readonly string[];
  /** Facts for layout checks. */
  facts: Readonly<Record<string, FormatFact>>;
}

/**
 * Streams a file through the checker its name calls for; undefined when no
 * checker applies. Requires `--allow-read`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { checkFileFormat } from "./files.ts";
 * const path = new URL("../../tests/fixtures/safetensors/overall.safetensors", import.meta.url).pathname;
 * const result = await checkFileFormat(path);
 * assert.equal(result?.format, "safetensors");
 * assert.deepEqual(result?.findings, []);
 * ```
 */
export async function checkFileFormat(path: string, relativePath = path): Promise<FileFormatResult | undefined> {
  using file = await Deno.open(path, { read: true });
  const size = (await file.stat()).size;
  const checker = formatCheckerFor(relativePath, size);
  if (!checker) return undefined;
  const buffer = new Uint8Array(Math.min(CHUNK_BYTES, Math.max(size, 1)));
  while (true) {
    const n = await file.read(buffer);
    if (n === null) break;
    checker.update(buffer.subarray(0, n));
  }
  const findings = checker.finish();
  return { format: checker.format, findings, notes: checker.notes, facts: checker.facts };
}

/**
 * Reads the small files {@linkcode layoutFilesToRead} asks for from the
 * checkpoint folder `dir`, skipping any larger than its limit (the layout
 * check then notes it as unchecked) or unreadable. Requires `--allow-read`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { readLayoutContents } from "./files.ts";
 * const dir = await Deno.makeTempDir();
 * await Deno.writeTextFile(`${dir}/latest`, "global_step5");
 * const contents = await readLayoutContents(dir, [{ path: "latest", size: 12 }]);
 * assert.equal(new TextDecoder().decode(contents.get("latest")), "global_step5");
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function readLayoutContents(
  dir: string,
  files: readonly LayoutFile[],
): Promise<Map<string, Uint8Array>> {
  const sizes = new Map(files.map((file) => [file.path, file.size]));
  const contents = new Map<string, Uint8Array>();
  for (const read of layoutFilesToRead(files)) {
    if ((sizes.get(read.path) ?? Infinity) > read.maxBytes) continue;
    try {
      const bytes = await Deno.readFile(`${dir}/${read.path}`);
      // A file that grew past its limit since it was listed is left out too.
      if (bytes.length <= read.maxBytes) contents.set(read.path, bytes);
    } catch {
      // Unreadable: the layout check notes it as not checked; validation reports the I/O error itself.
    }
  }
  return contents;
}
