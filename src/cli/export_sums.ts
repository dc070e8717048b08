/**
 * `ckptkit export-sums <checkpoint>`: prints (or writes atomically) a
 * coreutils `SHA256SUMS` file from the checkpoint's manifest, so that
 * `sha256sum -c` verifies the checkpoint on a machine without ckptkit.
 *
 * @module
 */

import { dirname, resolve } from "node:path";
import type { ManifestProblemError } from "../core/export_sums.ts";
import { Command, Option } from "../deps/commander.ts";
import { writeFileAtomic } from "../fs/durable.ts";
import { asCkptkitError, CkptkitError } from "../errors.ts";
import { type CliHandle, type CommandContext, EXIT } from "./context.ts";
import { plural } from "./format.ts";

/** Builds the `export-sums` command. */
export function exportSumsCommand(cli: CliHandle) {
  return new Command("export-sums")
    .description(
      "print a SHA256SUMS file of the checkpoint's files from its manifest, so `sha256sum -c` verifies it with " +
        "coreutils alone; exit 1 when the manifest is missing, corrupt or lists unsafe paths, 2 when it uses xxh128",
    )
    .argument("<checkpoint>", "the checkpoint folder")
    .addOption(
      new Option(
        "--output <path>",
        "write the file here atomically instead of printing it (outside the checkpoint, or validate reports it " +
          "as an unexpected file)",
      ),
    )
    .action(async (path, opts) => {
      await cli.run(async (ctx) => {
        const { exportSums, ManifestProblemError } = await import("../core/export_sums.ts");
        let sums: string;
        try {
          sums = await exportSums(path);
        } catch (err) {
          if (err instanceof ManifestProblemError) return refuse(ctx, err);
          throw err;
        }
        const files = sums.length ? sums.split("\n").length - 1 : 0;
        if (opts.output !== undefined) {
          await refuseInside(opts.output, path);
          try {
            await writeFileAtomic(opts.output, sums);
          } catch (err) {
            throw asCkptkitError(err, `Writing ${opts.output}`, opts.output);
          }
        }
        if (ctx.json) {
          ctx.printJson({
            ok: true,
            path,
            algorithm: "sha256",
            files,
            output: opts.output ?? null,
            sums: opts.output === undefined ? sums : null,
          });
        } else if (opts.output !== undefined) {
          ctx.io.stdout(`wrote ${opts.output} (${plural(files, "file")} of ${path})\n`);
        } else {
          ctx.io.stdout(sums);
        }
        return EXIT.ok;
      });
    });
}

/**
 * An untrustworthy manifest is an integrity problem, as in `validate`: exit 1
 * with the problem's reason (`manifest_corrupt`, `unsafe_path`, …).
 */
function refuse(ctx: CommandContext, err: ManifestProblemError): number {
  const reason = err.problems[0].reason;
  const message = err.message.replace(/\s*\n\s*/g, " ").trim();
  ctx.io.stderr(`ckptkit: error: ${message} [${reason}]\n`);
  ctx.logger.log("error", "error", { reason, checkpoint_path: err.path ?? null, message });
  if (ctx.json) {
    ctx.printJson({ ok: false, error: { reason, message, path: err.path ?? null }, problems: err.problems });
  }
  return EXIT.problems;
}

/**
 * Refuses an output file inside the checkpoint: it would be a file the
 * manifest does not list, so `validate` and `scan` would call the checkpoint
 * invalid (`unexpected_file`).
 */
async function refuseInside(output: string, checkpoint: string): Promise<void> {
  let folder: string;
  let inside: string;
  try {
    folder = await Deno.realPath(dirname(resolve(output)));
    inside = await Deno.realPath(checkpoint);
  } catch (err) {
    throw asCkptkitError(err, `Resolving the folder of ${output}`, output);
  }
  if (folder === inside || folder.startsWith(inside.endsWith("/") ? inside : inside + "/")) {
    throw new CkptkitError(
      "invalid_argument",
      `--output ${output} is inside the checkpoint, where validate would report it as an unexpected file; ` +
        `write it beside the checkpoint and check with \`cd ${checkpoint} && sha256sum -c ../<file>\``,
      { path: output },
    );
  }
}
