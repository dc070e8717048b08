/**
 * `ckptkit validate <path>`: validates one checkpoint at the chosen depth and
 * reports every problem.
 *
 * @module
 */

import { Command } from "../deps.ts";
import { recordValidation, rootOfCheckpoint } from "../record.ts";
import { validateCheckpoint } from "../validate.ts";
import { type CliHandle, EXIT } from "./context.ts";
import { plural } from "./format.ts";
import { depthOptions, resolveDepth } from "./options.ts";
import { startProgress } from "./progress.ts";
import { formatValidation, logValidation } from "./validation_output.ts";

/** Builds the `validate` command. */
export function validateCommand(cli: CliHandle) {
  const [fast, sampleBytes, jobs, deep] = depthOptions();
  return new Command("validate")
    .description(
      "validate one checkpoint against its manifest (full: every byte hashed, unless --fast or --sample-bytes); " +
        "exit 0 when valid, 1 when problems are found",
    )
    .argument("<path>", "the checkpoint folder")
    .addOption(fast)
    .addOption(sampleBytes)
    .addOption(jobs)
    .addOption(deep)
    .action(async (path, opts) => {
      await cli.run(async (ctx) => {
        const progress = startProgress(ctx, "validating");
        const result = await validateCheckpoint(path, { ...resolveDepth(opts, ctx.config), ...progress })
          .finally(() => progress.done());
        logValidation(ctx, result);
        const root = await rootOfCheckpoint(path);
        const stateError = root ? await recordValidation(root, result, "validate") : null;
        if (stateError) {
          ctx.logger.log("warn", "state_write_failed", {
            checkpoint_path: path,
            detail: stateError,
          });
        }
        if (ctx.json) {
          ctx.printJson(result);
        } else {
          ctx.io.stdout(formatValidation(result));
          if (!result.ok) {
            ctx.io.stdout(
              `${plural(result.problems.length, "problem")} found: do not resume from this checkpoint; ` +
                `\`ckptkit resume <root>\` chooses the newest valid one.\n`,
            );
          }
        }
        return result.ok ? EXIT.ok : EXIT.problems;
      });
    });
}
