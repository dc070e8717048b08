/**
 * `ckptkit seal <dir>`: writes a manifest in place for a checkpoint that
 * already exists, without moving it.
 *
 * @module
 */

import { Command, Option } from "../deps/commander.ts";
import { type CliHandle, EXIT } from "./context.ts";
import { formatBytes, formatProblem, formatSeconds, plural } from "./format.ts";
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
    .argument("<dir>", "the checkpoint folder (with --all: the root)")
    .addOption(
      new Option(
        "--all",
        "seal every checkpoint of the root <dir> that has no manifest, after a deep check of its formats and " +
          "layout (one with problems is refused); exit 1 when any is refused",
      ).conflicts("step"),
    )
    .addOption(stepOption())
    .addOption(jobId)
    .addOption(runId)
    .addOption(metadata)
    .addOption(algorithm)
    .addOption(sampleBytes)
    .addOption(jobs)
    .action(async (dir, opts) => {
      await cli.run(async (ctx) => {
        const { sealCheckpoint, sealRoot } = await import("../core/seal.ts");
        if (opts.all) {
          const all = await sealRoot(dir, {
            jobId: opts.jobId ?? ctx.config.job_id,
            runId: opts.runId ?? ctx.config.run_id,
            metadata: opts.metadata,
            ...resolveHashing(opts, ctx.config),
          });
          for (const sealed of all.sealed) {
            ctx.logger.log("info", "checkpoint_sealed", {
              job_id: opts.jobId ?? ctx.config.job_id ?? null,
              run_id: opts.runId ?? ctx.config.run_id ?? null,
              step: sealed.step,
              checkpoint_path: sealed.path,
            });
          }
          for (const refused of all.refused) {
            ctx.logger.log("warn", "seal_refused", {
              // Refused: no manifest was written, so nothing names its job or run.
              job_id: null,
              run_id: null,
              step: null,
              checkpoint_path: refused.path,
              reason: refused.problems[0]?.reason ?? null,
              detail: refused.problems[0]?.detail ?? null,
            });
          }
          if (ctx.json) {
            ctx.printJson({ ok: all.refused.length === 0, ...all });
          } else {
            for (const sealed of all.sealed) ctx.io.stdout(`sealed  ${sealed.path} as step ${sealed.step}\n`);
            for (const name of all.already_sealed) ctx.io.stdout(`already ${all.root}/${name}\n`);
            for (const refused of all.refused) {
              ctx.io.stdout(
                `REFUSED ${refused.path}\n${refused.problems.map((p) => formatProblem(p) + "\n").join("")}`,
              );
            }
            ctx.io.stdout(
              `${all.sealed.length} sealed, ${all.already_sealed.length} already sealed, ${all.refused.length} refused\n`,
            );
          }
          return all.refused.length === 0 ? EXIT.ok : EXIT.problems;
        }
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
