/**
 * Writes the generated blocks of the command reference (docs/commands/) from
 * the CLI's own definitions: `deno task docs`. With `--check`, writes nothing
 * and exits 1 when a page is stale. Exits 2 when a page or its markers are
 * missing, or a page documents a command that no longer exists.
 *
 * Usage: deno run --allow-read --allow-write=docs/commands scripts/gen_cli_docs.ts [--check] [--dir <folder>]
 *
 * @module
 */

import { buildProgram } from "../src/cli/program.ts";
import { applyReference, ReferencePageError } from "../src/cli/reference.ts";

/** The reference's folder in this repository, whatever the working directory. */
export const REFERENCE_DIR = decodeURIComponent(new URL("../docs/commands", import.meta.url).pathname);

/** Reads every Markdown page of `dir` (not below it) into file name → text. */
export async function readPages(dir: string): Promise<Map<string, string>> {
  const pages = new Map<string, string>();
  for await (const entry of Deno.readDir(dir)) {
    if (entry.isFile && entry.name.endsWith(".md")) {
      pages.set(entry.name, await Deno.readTextFile(`${dir}/${entry.name}`));
    }
  }
  return pages;
}

/** The program whose reference is written: nothing it builds prints or runs. */
export function referenceProgram() {
  return buildProgram({ stdout: () => {}, stderr: () => {}, env: () => undefined }).program;
}

async function main(args: string[]): Promise<number> {
  const check = args.includes("--check");
  const at = args.indexOf("--dir");
  const dir = at >= 0 ? args[at + 1] : REFERENCE_DIR;
  const unknown = args.filter((arg, i) => arg !== "--check" && arg !== "--dir" && !(at >= 0 && i === at + 1));
  if (unknown.length > 0 || dir === undefined) {
    console.error("usage: gen_cli_docs.ts [--check] [--dir <folder>]");
    return 2;
  }
  const shown = at >= 0 ? dir.replace(/\/$/, "") : "docs/commands";
  let pages: Map<string, string>;
  try {
    pages = await readPages(dir);
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
    console.error(`gen_cli_docs: ${shown}/ does not exist: the command reference's pages live there`);
    return 2;
  }
  let applied;
  try {
    applied = applyReference(referenceProgram(), pages);
  } catch (err) {
    if (!(err instanceof ReferencePageError)) throw err;
    console.error(`gen_cli_docs: ${shown}/${err.message}`);
    return 2;
  }
  if (check) {
    for (const page of applied.changed) console.error(`gen_cli_docs: ${shown}/${page} is stale`);
    if (applied.changed.length > 0) {
      console.error("gen_cli_docs: the command reference is stale: run `deno task docs`");
      return 1;
    }
    console.log(`gen_cli_docs: ${shown}/: ${applied.pages.size} pages up to date`);
    return 0;
  }
  for (const page of applied.changed) {
    await Deno.writeTextFile(`${dir}/${page}`, applied.pages.get(page)!);
    console.log(`gen_cli_docs: wrote ${shown}/${page}`);
  }
  if (applied.changed.length === 0) console.log(`gen_cli_docs: ${shown}/: ${applied.pages.size} pages up to date`);
  return 0;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
