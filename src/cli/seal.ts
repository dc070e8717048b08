/**
 * `ckptkit seal <dir>`: writes a manifest in place for a checkpoint that
 * already exists, without moving it.
 *
 * @module
 */

import { Command } from "../deps.ts";
import { sealCheckpoint } from "../seal.ts";
import { type CliHandle, EXIT } from "./context.ts";
import { formatBytes, formatSeconds, plural } from "./format.ts";
import { startProgress } from "./progress.ts";
import { hashingOptions, identityOptions, resolveHashing, stepOption } from "./options.ts";

/** Builds the `seal` command. */
export function sealCommand(cli: CliHandle) {
  const [jobId, runId, metadata] = identityOptions();
  const [algorithm, sampleBytes, jobs] = hashingOptions();
  return new Command("seal")
    .description(
      "write a manifest in place for an existing checkpoint (adopt checkpoints written before ckptkit); " +
        "the step is inferred from names like step-10, checkpoint-500, global_step500",
    )
    .argument("<dir>", "the checkpoint folder")
    .addOption(stepOption())
    .addOption(jobId)
    .addOption(runId)
    .addOption(metadata)
    .addOption(algorithm)
    .addOption(sampleBytes)
    .addOption(jobs)
    .action(async (dir, opts) => {
      await cli.run(async (ctx) => {
        const progress = startProgress(ctx, "hashing");
        const result = await sealCheckpoint(dir, {
          ...progress,
          step: opts.step,
          jobId: opts.jobId ?? ctx.config.job_id,
          runId: opts.runId ?? ctx.config.run_id,
          metadata: opts.metadata,
          ...resolveHashing(opts, ctx.config),
        }).finally(() => progress.done());
        ctx.logger.log("info", "checkpoint_sealed", {
          job_id: opts.jobId ?? ctx.config.job_id ?? null,
          run_id: opts.runId ?? ctx.config.run_id ?? null,
          step: result.step,
          checkpoint_path: result.path,
          files: result.files,
          bytes: result.total_bytes,
        });
        if (ctx.json) {
          ctx.printJson({ ok: true, ...result });
        } else {
          ctx.io.stdout(
            `sealed ${result.path} as step ${result.step} (${plural(result.files, "file")}, ` +
              `${formatBytes(result.total_bytes)}, ${formatSeconds(result.duration_s)})\n`,
          );
        }
        return EXIT.ok;
      });
    });
}
