/**
 * `ckptkit commit <staging-dir>`: seals a folder written by another program
 * and moves it into the root as `step-N`.
 *
 * @module
 */

import { Command } from "../deps.ts";
import { commitCheckpoint } from "../commit.ts";
import { type CliHandle, EXIT } from "./context.ts";
import { reportCommit } from "./commit_output.ts";
import { startProgress } from "./progress.ts";
import {
  hashingOptions,
  identityOptions,
  lockTimeoutOption,
  resolveHashing,
  resolveLockTimeoutMs,
  resolveRoot,
  rootOption,
  stepOption,
} from "./options.ts";

/** Builds the `commit` command. */
export function commitCommand(cli: CliHandle) {
  const [jobId, runId, metadata] = identityOptions();
  const [algorithm, sampleBytes, jobs] = hashingOptions();
  return new Command("commit")
    .description(
      "hash every file of a folder written by another program (torch.save, DeepSpeed), write its manifest, " +
        "and move it into the root as step-N atomically",
    )
    .argument(
      "<staging-dir>",
      "folder holding the checkpoint's files, on the same file system as the root",
    )
    .addOption(rootOption())
    .addOption(stepOption().makeOptionMandatory())
    .addOption(jobId)
    .addOption(runId)
    .addOption(metadata)
    .addOption(algorithm)
    .addOption(sampleBytes)
    .addOption(jobs)
    .addOption(lockTimeoutOption())
    .action(async (stagingDir, opts) => {
      await cli.run(async (ctx) => {
        const hashing = resolveHashing(opts, ctx.config);
        const progress = startProgress(ctx, "hashing");
        const result = await commitCheckpoint(stagingDir, {
          ...progress,
          root: resolveRoot(opts.root, ctx.config),
          step: opts.step,
          jobId: opts.jobId ?? ctx.config.job_id,
          runId: opts.runId ?? ctx.config.run_id,
          metadata: opts.metadata,
          ...hashing,
          lockTimeoutMs: resolveLockTimeoutMs(opts.lockTimeout, ctx.config),
          faultHook: ctx.faultHook,
        }).finally(() => progress.done());
        reportCommit(ctx, result);
        return EXIT.ok;
      });
    });
}
