/**
 * `ckptkit emit-metrics`: scans the root and writes its metrics to a
 * node_exporter textfile, a Pushgateway, both, or stdout.
 *
 * @module
 */

import { Command, Option } from "../deps/commander.ts";
import { hostName } from "../version.ts";
import { CkptkitError } from "../errors.ts";
import { type CliHandle, type CommandContext, EXIT } from "./context.ts";
import { depthOptions, resolveDepth, resolveRoot, rootFallbackOption } from "./options.ts";
import { parsePositiveInteger, parseSeconds } from "./parse.ts";
import { rootIdentity } from "./log_fields.ts";
import { logScan } from "./validation_output.ts";

/** Builds the `emit-metrics` command. */
export function emitMetricsCommand(cli: CliHandle) {
  const [fast, sampleBytes, jobs, deep] = depthOptions();
  return new Command("emit-metrics")
    .description(
      "scan the root and write its Prometheus metrics to a node_exporter textfile (atomically), push them to a " +
        "Pushgateway, or both; without either, print them on stdout. Exit 1 when the scan found problems, " +
        "4 when a push failed",
    )
    .argument("[root]", "the checkpoint root (default: --root, CKPTKIT_ROOT or the config's root)")
    .addOption(rootFallbackOption())
    .addOption(
      new Option(
        "--textfile <path>",
        "node_exporter textfile to write, ending in .prom, or the collector's folder: then " +
          "<folder>/ckptkit-<root slug>-<root hash>.prom, one file per root (config: metrics.textfile)",
      ),
    )
    .addOption(
      new Option("--pushgateway <url>", "Pushgateway URL, with or without /metrics (config: metrics.pushgateway)"),
    )
    .addOption(
      new Option("--job-id <id>", "job_id label (default: from the newest valid manifest)").env("CKPTKIT_JOB_ID"),
    )
    .addOption(
      new Option("--run-id <id>", "run_id label (default: from the newest valid manifest)").env("CKPTKIT_RUN_ID"),
    )
    .addOption(
      new Option(
        "--root-label <name>",
        "root label of every series, e.g. a short name (default: the root's real path; config: metrics.root_label)",
      ),
    )
    .addOption(new Option("--instance <name>", "instance label of the Pushgateway group (default: host name)"))
    .addOption(
      new Option("--push-timeout <duration>", "timeout of one push attempt (default 5s)").argParser(parseSeconds),
    )
    .addOption(
      new Option("--push-attempts <n>", "push attempts, with backoff from 0.5s (default 3)").argParser(
        parsePositiveInteger,
      ),
    )
    .addOption(
      new Option(
        "--delete",
        "delete this root's group (job_id, root, instance) from the Pushgateway instead of pushing (at the end " +
          "of a run, so its last values are not scraped forever)",
      ),
    )
    .addOption(fast)
    .addOption(sampleBytes)
    .addOption(jobs)
    .addOption(deep)
    .action(async (rootArg, opts) => {
      await cli.run(async (ctx) => {
        const { collectMetrics } = await import("../metrics/collect.ts");
        const { groupingKey, pushMetrics } = await import("../metrics/pushgateway.ts");
        const { renderMetrics } = await import("../metrics/render.ts");
        const { resolveTextfile, writeTextfile } = await import("../metrics/textfile.ts");
        if (opts.delete) return await deleteGroup(ctx, rootArg ?? opts.root, opts);
        const root = resolveRoot(rootArg ?? opts.root, ctx.config);
        ctx.logScope = { checkpoint_path: root };
        const pushgateway = opts.pushgateway ?? ctx.config.metrics?.pushgateway;
        const rootLabel = opts.rootLabel ?? ctx.config.metrics?.root_label;
        const { scan, snapshot } = await collectMetrics(root, {
          ...resolveDepth(opts, ctx.config),
          jobId: opts.jobId ?? ctx.config.job_id,
          runId: opts.runId ?? ctx.config.run_id,
          rootLabel,
        });
        logScan(ctx, scan);
        // The labels the metrics carry (flags win over the newest valid manifest), and the path: the root.
        const who = {
          ...rootIdentity(scan.checkpoints),
          ...(snapshot.labels.job_id ? { job_id: snapshot.labels.job_id } : {}),
          ...(snapshot.labels.run_id ? { run_id: snapshot.labels.run_id } : {}),
          checkpoint_path: scan.root,
        };
        ctx.logScope = who;
        const text = await renderMetrics(snapshot);
        const textfileOption = opts.textfile ?? ctx.config.metrics?.textfile;
        const textfile = textfileOption && await resolveTextfile(textfileOption, scan.root, rootLabel);
        if (textfile) {
          await writeTextfile(textfile, text);
          ctx.logger.log("info", "metrics_written", { ...who, textfile });
        }
        let pushed: { url: string; attempts: number } | null = null;
        if (pushgateway) {
          pushed = await pushMetrics(pushgateway, text, {
            grouping: groupingKey(snapshot.labels, opts.instance ?? hostName()),
            timeoutMs: opts.pushTimeout === undefined ? undefined : opts.pushTimeout * 1000,
            attempts: opts.pushAttempts,
          });
          ctx.logger.log("info", "metrics_pushed", {
            ...who,
            url: pushed.url,
            attempts: pushed.attempts,
          });
        }
        if (ctx.json) {
          ctx.printJson({ ok: scan.ok, root: scan.root, textfile: textfile ?? null, pushgateway: pushed, snapshot });
        } else if (!textfile && !pushgateway) {
          ctx.io.stdout(text);
        } else {
          if (textfile) ctx.io.stdout(`wrote ${textfile}\n`);
          if (pushed) ctx.io.stdout(`pushed to ${pushed.url}\n`);
        }
        return scan.ok ? EXIT.ok : EXIT.problems;
      });
    });
}

async function deleteGroup(
  ctx: CommandContext,
  rootArg: string | undefined,
  opts: {
    pushgateway?: string;
    jobId?: string;
    runId?: string;
    rootLabel?: string;
    instance?: string;
    pushTimeout?: number;
    pushAttempts?: number;
  },
): Promise<number> {
  const pushgateway = opts.pushgateway ?? ctx.config.metrics?.pushgateway;
  if (!pushgateway) {
    throw new CkptkitError("invalid_argument", "--delete needs --pushgateway or metrics.pushgateway in the config");
  }
  const { collectMetrics } = await import("../metrics/collect.ts");
  const { deleteMetrics, groupingKey } = await import("../metrics/pushgateway.ts");
  let jobId = opts.jobId || ctx.config.job_id;
  let runId = opts.runId ?? ctx.config.run_id ?? null;
  let rootLabel = opts.rootLabel ?? ctx.config.metrics?.root_label;
  const rootGiven = rootArg ?? ctx.config.root ?? null;
  if (rootGiven) ctx.logScope = { checkpoint_path: rootGiven };
  if (!jobId || !rootLabel) {
    // The group is keyed by the labels the pushes used: the newest valid manifest's job id, the root's real path.
    const root = resolveRoot(rootArg, ctx.config);
    const { snapshot } = await collectMetrics(root, { depth: "fast", record: false, jobId, rootLabel });
    ({ job_id: jobId, root: rootLabel } = snapshot.labels);
    runId ??= snapshot.labels.run_id || null;
  }
  const labels = { root: rootLabel, job_id: jobId };
  const deleted = await deleteMetrics(pushgateway, {
    grouping: groupingKey(labels, opts.instance ?? hostName()),
    timeoutMs: opts.pushTimeout === undefined ? undefined : opts.pushTimeout * 1000,
    attempts: opts.pushAttempts,
  });
  ctx.logger.log("info", "metrics_deleted", {
    job_id: jobId,
    run_id: runId,
    checkpoint_path: rootGiven,
    url: deleted.url,
  });
  if (ctx.json) ctx.printJson({ ok: true, deleted: deleted.url });
  else ctx.io.stdout(`deleted ${deleted.url}\n`);
  return EXIT.ok;
}
