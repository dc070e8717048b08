/**
 * `ckptkit report merge <reports…>`: merges the reports of a distributed
 * `validate` or `scan` (`--shard i/N --report PATH`) into the verdict a
 * single-node run gives: the same output, exit code, state records and
 * metrics.
 *
 * @module
 */

import { identityOf, rootIdentity } from "./log_fields.ts";
import { Command, Option } from "../deps/commander.ts";
import { CkptkitError } from "../errors.ts";
import type { ScanResult } from "../core/scan.ts";
import { hostName } from "../version.ts";
import { type CliHandle, type CommandContext, EXIT } from "./context.ts";
import { lockTimeoutOption, resolveLockTimeoutMs } from "./options.ts";
import { printScan } from "./scan.ts";
import { logStateError, printValidation } from "./validate.ts";
import { logScan, logValidation } from "./validation_output.ts";

/** Builds the `report` command and its `merge` subcommand. */
export function reportCommand(cli: CliHandle) {
  const merge = new Command("merge")
    .description(
      "merge the JSON reports of `validate|scan --shard i/N --report PATH` into one verdict: the output, exit code " +
        "(0 valid, 1 problems) and state records of a single-node run; refuses unreadable, incomplete or " +
        "mismatched sets (exit 2)",
    )
    .argument("<reports...>", "the report of every shard, each once, in any order")
    .addOption(
      new Option(
        "--textfile <path>",
        "scan reports: write the root's metrics to this node_exporter textfile (.prom), or into this collector " +
          "folder as ckptkit-<root slug>-<root hash>.prom",
      ),
    )
    .addOption(new Option("--pushgateway <url>", "scan reports: push the root's metrics to this Pushgateway"))
    .addOption(
      new Option("--job-id <id>", "job_id label of the metrics (default: from the newest valid manifest)").env(
        "CKPTKIT_JOB_ID",
      ),
    )
    .addOption(
      new Option("--run-id <id>", "run_id label of the metrics (default: from the newest valid manifest)").env(
        "CKPTKIT_RUN_ID",
      ),
    )
    .addOption(
      new Option(
        "--root-label <name>",
        "root label of every series, e.g. a short name (default: the reports' root, its real path; config: " +
          "metrics.root_label)",
      ),
    )
    .addOption(new Option("--instance <name>", "instance label of the Pushgateway group (default: host name)"))
    .addOption(
      new Option("--quarantine", "scan reports: move every checkpoint with integrity problems into <root>/corrupt/"),
    )
    .addOption(lockTimeoutOption())
    .action(async (paths, opts) => {
      await cli.run(async (ctx) => {
        const { mergeShardReports } = await import("../multinode/report_merge.ts");
        const { readShardReport } = await import("../multinode/shard_report.ts");
        const reports = [];
        for (const path of paths) reports.push(await readShardReport(path));
        const metrics = opts.textfile !== undefined || opts.pushgateway !== undefined;
        if (metrics && reports[0].kind !== "scan") {
          throw new CkptkitError(
            "invalid_argument",
            "--textfile and --pushgateway describe a whole root: shard `ckptkit scan`, not `validate`",
          );
        }
        const merged = await mergeShardReports(reports, {
          names: paths,
          quarantine: opts.quarantine,
          lockTimeoutMs: resolveLockTimeoutMs(opts.lockTimeout, ctx.config),
        });
        const who = merged.kind === "validate" ? identityOf(merged.result) : rootIdentity(merged.result.checkpoints);
        ctx.logScope = { ...who, checkpoint_path: merged.target };
        ctx.logger.log("info", "reports_merged", {
          ...who,
          checkpoint_path: merged.target,
          kind: merged.kind,
          shards: merged.shards,
          ok: merged.result.ok,
        });
        if (merged.kind === "validate") {
          logValidation(ctx, merged.result);
          logStateError(ctx, merged.target, merged.state_error, who);
          printValidation(ctx, merged.result);
          return merged.result.ok ? EXIT.ok : EXIT.problems;
        }
        logScan(ctx, merged.result);
        if (metrics) await writeMetrics(ctx, merged.result, opts);
        printScan(ctx, merged.result);
        return merged.result.ok ? EXIT.ok : EXIT.problems;
      });
    });
  return new Command("report")
    .description("work with the reports of distributed validation (`validate|scan --shard i/N --report PATH`)")
    .addCommand(merge);
}

/**
 * Writes the metrics `emit-metrics` would after a scan, from the merged
 * scan instead of a new one; the root's state, quarantine folder and free
 * space are read here, after the merge recorded its results.
 */
async function writeMetrics(
  ctx: CommandContext,
  scan: ScanResult,
  opts: {
    textfile?: string;
    pushgateway?: string;
    jobId?: string;
    runId?: string;
    rootLabel?: string;
    instance?: string;
  },
): Promise<void> {
  // prom-client and the metrics code load only when metrics are asked for.
  const { snapshotOfScan } = await import("../metrics/collect.ts");
  const { groupingKey, pushMetrics } = await import("../metrics/pushgateway.ts");
  const { renderMetrics } = await import("../metrics/render.ts");
  const { resolveTextfile, writeTextfile } = await import("../metrics/textfile.ts");
  const rootLabel = opts.rootLabel ?? ctx.config.metrics?.root_label;
  const snapshot = await snapshotOfScan(scan, {
    jobId: opts.jobId ?? ctx.config.job_id,
    runId: opts.runId ?? ctx.config.run_id,
    rootLabel,
  });
  const text = await renderMetrics(snapshot);
  const who = {
    ...rootIdentity(scan.checkpoints),
    ...(snapshot.labels.job_id ? { job_id: snapshot.labels.job_id } : {}),
    ...(snapshot.labels.run_id ? { run_id: snapshot.labels.run_id } : {}),
    checkpoint_path: scan.root,
  };
  if (opts.textfile) {
    const textfile = await resolveTextfile(opts.textfile, scan.root, rootLabel);
    await writeTextfile(textfile, text);
    ctx.logger.log("info", "metrics_written", { ...who, textfile });
  }
  if (opts.pushgateway) {
    const pushed = await pushMetrics(opts.pushgateway, text, {
      grouping: groupingKey(snapshot.labels, opts.instance ?? hostName()),
    });
    ctx.logger.log("info", "metrics_pushed", {
      ...who,
      url: pushed.url,
      attempts: pushed.attempts,
    });
  }
}
