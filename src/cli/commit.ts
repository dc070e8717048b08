/**
 * `ckptkit commit <staging-dir>`: seals a folder written by another program
 * and moves it into the root as `step-N`.
 *
 * @module
 */

import { Command, Option } from "../deps/commander.ts";
import { CkptkitError } from "../errors.ts";
import { DEFAULT_WAIT_TIMEOUT_MS } from "../defaults.ts";
import { type CliHandle, EXIT } from "./context.ts";
import { reportCommit, reportRank } from "./commit_output.ts";
import { parseNonNegativeInteger, parsePositiveInteger, parseSeconds } from "./parse.ts";
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
    .addOption(
      new Option(
        "--rank <r>",
        "multi-rank commit: this process's rank, 0-based (e.g. $SLURM_PROCID or $RANK); needs --world-size",
      ).argParser(parseNonNegativeInteger),
    )
    .addOption(
      new Option(
        "--world-size <n>",
        "multi-rank commit: number of ranks writing the checkpoint (e.g. $SLURM_NTASKS or $WORLD_SIZE)",
      ).argParser(parsePositiveInteger),
    )
    .addOption(
      new Option(
        "--rank-files <path...>",
        "multi-rank commit: the files or folders this rank wrote, relative to the staging folder",
      ),
    )
    .addOption(
      new Option(
        "--wait",
        "multi-rank commit: block until the checkpoint is committed (exit 4 when the commit fails or times out)",
      ),
    )
    .addOption(
      new Option(
        "--wait-timeout <duration>",
        `multi-rank commit: how long --wait blocks (default ${DEFAULT_WAIT_TIMEOUT_MS / 1000}s)`,
      ).argParser(parseSeconds),
    )
    .action(async (stagingDir, opts) => {
      await cli.run(async (ctx) => {
        const { commitCheckpoint } = await import("../core/commit.ts");
        const { commitRank } = await import("../multinode/multirank.ts");
        const hashing = resolveHashing(opts, ctx.config);
        const multiRank = opts.rank !== undefined || opts.worldSize !== undefined;
        if (multiRank && (opts.rank === undefined || opts.worldSize === undefined)) {
          throw new CkptkitError("invalid_argument", "--rank and --world-size go together: give both or neither");
        }
        if (!multiRank && (opts.rankFiles || opts.wait || opts.waitTimeout !== undefined)) {
          throw new CkptkitError(
            "invalid_argument",
            "--rank-files, --wait and --wait-timeout belong to a multi-rank commit: add --rank and --world-size",
          );
        }
        const progress = startProgress(ctx, "hashing");
        const common = {
          ...progress,
          root: resolveRoot(opts.root, ctx.config),
          step: opts.step,
          jobId: opts.jobId ?? ctx.config.job_id,
          runId: opts.runId ?? ctx.config.run_id,
          metadata: opts.metadata,
          ...hashing,
          lockTimeoutMs: resolveLockTimeoutMs(opts.lockTimeout, ctx.config),
          faultHook: ctx.faultHook,
        };
        if (multiRank) {
          const result = await commitRank(stagingDir, {
            ...common,
            rank: opts.rank!,
            worldSize: opts.worldSize!,
            rankFiles: opts.rankFiles ?? [],
            wait: opts.wait ?? false,
            waitTimeoutMs: opts.waitTimeout === undefined ? undefined : opts.waitTimeout * 1000,
          }).finally(() => progress.done());
          reportRank(ctx, result, { job_id: common.jobId ?? null, run_id: common.runId ?? null });
          return EXIT.ok;
        }
        const result = await commitCheckpoint(stagingDir, common).finally(() => progress.done());
        reportCommit(ctx, result);
        return EXIT.ok;
      });
    });
}
