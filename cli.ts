#!/usr/bin/env -S deno run --allow-read --allow-write --allow-env --allow-sys --allow-net
/**
 * The `ckptkit` command-line tool. Run it with `deno task ckptkit <command>`,
 * `deno run -A cli.ts <command>`, or as the binary built by
 * `deno task compile`.
 *
 * @module
 */

import { runCli } from "./src/cli/program.ts";
import type { CliIo } from "./src/cli/context.ts";

const encoder = new TextEncoder();

function writeAll(stream: typeof Deno.stdout, text: string): void {
  const bytes = encoder.encode(text);
  let written = 0;
  while (written < bytes.length) {
    written += stream.writeSync(bytes.subarray(written));
  }
}

/** Standard output, standard error and the environment of this process. */
export const processIo: CliIo = {
  stdout: (text) => writeAll(Deno.stdout, text),
  stderr: (text) => writeAll(Deno.stderr, text),
  env: (name) => Deno.env.get(name),
  stderrIsTerminal: () => Deno.stderr.isTerminal(),
};

/**
 * Runs the CLI with `args` and returns the exit code (0 success, 1 integrity
 * problems, 2 usage or config error, 3 nothing to resume, 4 runtime error).
 *
 * @example
 * ```ts ignore
 * import { main } from "./cli.ts";
 * const code = await main(["validate", "/tmp/ckpts/step-10", "--fast"]);
 * ```
 */
export function main(args: string[], io: CliIo = processIo): Promise<number> {
  return runCli(args, io);
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
