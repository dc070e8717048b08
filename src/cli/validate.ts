/**
 * `ckptkit validate <path>`: validates one checkpoint at the chosen depth and
 * reports every problem; with `--shard i/N --report PATH`, one shard's share.
 *
 * @module
 */

import { Command } from "../deps/commander.ts";
import type { ValidationResult } from "../core/validate.ts";
import { type CliHandle, type CommandContext, EXIT } from "./context.ts";
import type { ManifestIdentity } from "../core/identity.ts";
import { plural } from "./format.ts";
import { identityOf } from "./log_fields.ts";
import { depthOptions, resolveDepth, shardOptions } from "./options.ts";
import { startProgress } from "./progress.ts";
import { runShard, shardRequest } from "./shard.ts";
import { formatValidation, logValidation } from "./validation_output.ts";

/** Builds the `validate` command. */
export function validateCommand(cli: CliHandle) {
  const [fast, sampleBytes, jobs, deep] = depthOptions();
  const [shard, report] = shardOptions();
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
    .addOption(shard)
    .addOption(report)
    .action(async (path, opts) => {
      await cli.run(async (ctx) => {
        const { recordValidation, rootOfCheckpoint } = await import("../core/record.ts");
        const { validateCheckpoint } = await import("../core/validate.ts");
        ctx.logScope = { checkpoint_path: path };
        const sharded = shardRequest(opts);
        if (sharded) return await runShard(ctx, "validate", path, sharded, resolveDepth(opts, ctx.config));
        const progress = startProgress(ctx, "validating");
        const result = await validateCheckpoint(path, { ...resolveDepth(opts, ctx.config), ...progress })
          .finally(() => progress.done());
        logValidation(ctx, result);
        const root = await rootOfCheckpoint(path);
        const stateError = root ? await recordValidation(root, result, "validate") : null;
        logStateError(ctx, path, stateError, identityOf(result));
        printValidation(ctx, result);
        return result.ok ? EXIT.ok : EXIT.problems;
      });
    });
}

/** Logs that the root's state could not be written, when it could not. */
export function logStateError(
  ctx: CommandContext,
  path: string,
  stateError: string | null,
  identity: ManifestIdentity,
): void {
  if (stateError) {
    ctx.logger.log("warn", "state_write_failed", {
      ...identity,
      checkpoint_path: path,
      detail: stateError,
    });
  }
}

/** Prints a checkpoint's validation as `validate` does: its JSON document, or text ending with what to do. */
export function printValidation(ctx: CommandContext, result: ValidationResult): void {
  if (ctx.json) {
    ctx.printJson(result);
    return;
  }
  ctx.io.stdout(formatValidation(result));
  if (!result.ok) {
    ctx.io.stdout(
      `${plural(result.problems.length, "problem")} found: do not resume from this checkpoint; ` +
        `\`ckptkit resume <root>\` chooses the newest valid one.\n`,
    );
  }
}
