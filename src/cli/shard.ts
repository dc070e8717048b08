/**
 * `--shard i/N --report PATH` of `validate` and `scan`: runs one shard of a
 * distributed validation, writes its report and prints this shard's share.
 * The verdict comes from `ckptkit report merge`.
 *
 * @module
 */

import { identityOf, rootIdentity } from "./log_fields.ts";
import { CkptkitError } from "../errors.ts";
import { parseShardSpec, type ShardSpec } from "../multinode/shard.ts";
import type { ValidateOptions } from "../core/validate.ts";
import { type CommandContext, EXIT } from "./context.ts";
import { formatBytes, formatSeconds, plural } from "./format.ts";
import { startProgress } from "./progress.ts";
import { formatValidation, logValidation } from "./validation_output.ts";

/** A shard run asked for on the command line. */
export interface ShardRequest {
  /** Which shard of how many. */
  shard: ShardSpec;
  /** Where its report goes. */
  report: string;
}

/**
 * The shard run `--shard` and `--report` ask for, or undefined when neither
 * is given. One without the other is a usage error.
 */
export function shardRequest(flags: { shard?: string; report?: string }): ShardRequest | undefined {
  if (flags.shard === undefined && flags.report === undefined) return undefined;
  if (flags.shard === undefined) {
    throw new CkptkitError(
      "invalid_argument",
      "--report is written by shard runs: add --shard i/N (--shard 0/1 for one report of the whole target)",
    );
  }
  if (flags.report === undefined) {
    throw new CkptkitError(
      "invalid_argument",
      `--shard ${flags.shard} needs --report <path>: \`ckptkit report merge\` combines the shards' reports`,
    );
  }
  return { shard: parseShardSpec(flags.shard), report: flags.report };
}

/** Runs one shard of `validate` (one checkpoint) or `scan` (a root) and returns the exit code of its share. */
export async function runShard(
  ctx: CommandContext,
  kind: "validate" | "scan",
  target: string,
  request: ShardRequest,
  options: ValidateOptions & { staleStagingAfterS?: number },
): Promise<number> {
  const { scanShard, validateShard } = await import("../multinode/shard_run.ts");
  const { refuseReportInside, resultOfParts, writeShardReport } = await import("../multinode/shard_report.ts");
  const { index, count } = request.shard;
  // Before any read: a report path that would be refused afterwards wastes the whole shard.
  const real = await Deno.realPath(target).catch(() => undefined);
  if (real) await refuseReportInside(request.report, real, kind);
  const progress = startProgress(ctx, `shard ${index}/${count}`);
  const shardOptions = { ...options, ...progress, shard: request.shard };
  const report = await (kind === "validate" ? validateShard(target, shardOptions) : scanShard(target, shardOptions))
    .finally(() => progress.done());
  await writeShardReport(request.report, report);
  const partial = report.checkpoints.filter((part) => !part.gone).map((part) =>
    resultOfParts(report.depth, part, part.whole, part.files, { layout: false, durationS: part.duration_s })
  );
  for (const result of partial) logValidation(ctx, result);
  ctx.logger.log(report.ok ? "info" : "warn", "shard_completed", {
    ...(kind === "validate" && partial[0] ? identityOf(partial[0]) : rootIdentity(partial)),
    checkpoint_path: report.target,
    shard: `${index}/${count}`,
    report: request.report,
    files: report.covered.files,
    bytes: report.covered.bytes,
    ok: report.ok,
    duration_s: report.duration_s,
  });
  if (ctx.json) {
    ctx.printJson(report);
    return report.ok ? EXIT.ok : EXIT.problems;
  }
  const share = `${plural(report.covered.files, "file")}, ${formatBytes(report.covered.bytes)} to read`;
  ctx.io.stdout(
    kind === "validate"
      ? `shard ${index}/${count} of ${report.path} (${report.depth}): ${share}\n`
      : `scanning ${report.path} (${report.depth}), shard ${index}/${count}: ${share}\n`,
  );
  for (const result of partial) {
    if (kind === "validate" || !result.ok) ctx.io.stdout(formatValidation(result));
  }
  for (const staging of report.root?.staging.filter((s) => s.stale) ?? []) {
    ctx.io.stdout(`staging: ${staging.name} (${formatSeconds(staging.age_s)} old; STALE: a crashed write)\n`);
  }
  if (kind === "scan") {
    const failed = partial.filter((r) => !r.ok).length;
    const read = partial.reduce((sum, r) => sum + r.bytes_checked, 0);
    ctx.io.stdout(
      `${plural(partial.length, "checkpoint")}: ${failed} with problems in this shard's share; ` +
        `${formatBytes(read)} read in ${formatSeconds(report.duration_s)}.\n`,
    );
  }
  ctx.io.stdout(
    `wrote ${request.report}: ${
      report.ok ? "no problems in this shard's share" : "PROBLEMS FOUND in this shard's share"
    }. ` +
      `The verdict comes from \`ckptkit report merge\` of all ${count} reports, once every shard has finished ` +
      `(Slurm: --dependency=afterany).\n`,
  );
  return report.ok ? EXIT.ok : EXIT.problems;
}
