/**
 * Output shared by `write` and `commit`: the human line, the JSON document
 * and the `checkpoint_committed` log event.
 *
 * @module
 */

import type { CommitResult } from "../core/record.ts";
import type { RankCommitResult } from "../multinode/multirank.ts";
import type { CommandContext } from "./context.ts";
import { formatBytes, formatSeconds, plural } from "./format.ts";

/** Reports a commit on stdout (text or JSON) and in the log. */
export function reportCommit(ctx: CommandContext, result: CommitResult): void {
  ctx.logger.log("info", "checkpoint_committed", {
    job_id: result.job_id,
    run_id: result.run_id,
    step: result.step,
    checkpoint_path: result.path,
    files: result.files,
    bytes: result.total_bytes,
    duration_s: result.duration_s,
    latest_updated: result.latest_updated,
  });
  if (ctx.json) {
    ctx.printJson({ ok: true, ...result });
    return;
  }
  ctx.io.stdout(
    `committed ${result.path} (${plural(result.files, "file")}, ${formatBytes(result.total_bytes)}, ` +
      `${formatSeconds(result.duration_s)}); ` +
      (result.latest_updated ? `latest -> ${result.name}\n` : `latest unchanged (it names a newer step)\n`),
  );
}

/** Reports what a multi-rank commit did for this rank, on stdout (text or JSON) and in the log. */
export function reportRank(
  ctx: CommandContext,
  result: RankCommitResult,
  identity: { job_id: string | null; run_id: string | null },
): void {
  if (result.commit) {
    ctx.logger.log("info", "checkpoint_committed", {
      job_id: result.commit.job_id,
      run_id: result.commit.run_id,
      step: result.step,
      checkpoint_path: result.path,
      files: result.commit.files,
      bytes: result.commit.total_bytes,
      duration_s: result.commit.duration_s,
      latest_updated: result.commit.latest_updated,
      rank: result.rank,
      world_size: result.world_size,
    });
  } else {
    ctx.logger.log("info", "rank_part_recorded", {
      ...identity,
      step: result.step,
      checkpoint_path: result.path,
      rank: result.rank,
      world_size: result.world_size,
      outcome: result.outcome,
      ranks_recorded: result.ranks_recorded,
      files: result.files,
      bytes: result.bytes,
    });
  }
  if (ctx.json) {
    ctx.printJson({ ok: true, ...result });
    return;
  }
  const mine = `rank ${result.rank}/${result.world_size} (${plural(result.files, "file")}, ${
    formatBytes(result.bytes)
  })`;
  const lines: Record<RankCommitResult["outcome"], () => string> = {
    committed: () =>
      `${mine} completed the set and committed ${result.path} (${plural(result.commit!.files, "file")}, ` +
      `${formatBytes(result.commit!.total_bytes)}); ` +
      (result.commit!.latest_updated ? `latest -> ${result.name}` : "latest unchanged (it names a newer step)"),
    committed_by_other: () => `${mine}: ${result.path} committed by rank ${result.committed_by}`,
    already_committed: () =>
      `${mine}: ${result.path} was already committed with this rank's files (by rank ${result.committed_by})`,
    recorded: () =>
      `${mine} recorded; ${result.ranks_recorded} of ${result.world_size} ranks so far` +
      (result.ranks_missing.length === 0 ? ", another rank is committing" : "; the last rank to finish commits"),
  };
  ctx.io.stdout(lines[result.outcome]() + "\n");
}
