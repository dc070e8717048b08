/**
 * `ckptkit serve`: the long-running exporter: validates on a schedule and
 * when a checkpoint appears, serves `/metrics` and `/healthz`, and shuts down
 * cleanly on SIGTERM or SIGINT.
 *
 * @module
 */

import { Command, Option } from "../deps/commander.ts";
import { type CliHandle, EXIT } from "./context.ts";
import { depthOptions, resolveDepth, resolveRoot, rootFallbackOption } from "./options.ts";
import { parseSeconds } from "./parse.ts";
import { LogChanges } from "./log_changes.ts";
import { NO_IDENTITY, rootIdentity } from "./log_fields.ts";
import { logScan } from "./validation_output.ts";

/** Builds the `serve` command. */
export function serveCommand(cli: CliHandle) {
  const [fast, sampleBytes, jobs, deep] = depthOptions();
  return new Command("serve")
    .description(
      "run a Prometheus exporter: validate the root every --interval and when a checkpoint appears, serve " +
        "/metrics and /healthz; stop cleanly on SIGTERM or SIGINT",
    )
    .argument("[root]", "the checkpoint root (default: --root, CKPTKIT_ROOT or the config's root)")
    .addOption(rootFallbackOption())
    .addOption(new Option("--listen <host:port>", "address to serve on").default("127.0.0.1:9478"))
    .addOption(
      new Option("--interval <duration>", "time between validation passes").argParser(parseSeconds).default(60, "60s"),
    )
    .addOption(new Option("--no-watch", "do not validate when a checkpoint appears, only on the interval"))
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
    .addOption(fast)
    .addOption(sampleBytes)
    .addOption(jobs)
    .addOption(deep)
    .action(async (rootArg, opts) => {
      await cli.run(async (outer) => {
        const { parseListen, runExporter } = await import("../metrics/exporter.ts");
        const root = resolveRoot(rootArg ?? opts.root, outer.config);
        outer.logScope = { checkpoint_path: root };
        // Every pass finds the same states again: log them when they change, at debug while they stay.
        const changes = new LogChanges();
        const ctx = { ...outer, logger: changes.wrap(outer.logger), logScope: { checkpoint_path: root } };
        // Before the first pass no manifest was read: only the labels asked for.
        let who = {
          ...NO_IDENTITY,
          job_id: opts.jobId ?? outer.config.job_id ?? null,
          run_id: opts.runId ?? outer.config.run_id ?? null,
        };
        const { hostname, port } = parseListen(opts.listen);
        const stop = new AbortController();
        const signals = ["SIGTERM", "SIGINT"] as const;
        const onSignal = () => stop.abort();
        for (const signal of signals) Deno.addSignalListener(signal, onSignal);
        try {
          await runExporter(root, {
            ...resolveDepth(opts, ctx.config),
            jobId: opts.jobId ?? ctx.config.job_id,
            runId: opts.runId ?? ctx.config.run_id,
            rootLabel: opts.rootLabel ?? ctx.config.metrics?.root_label,
            hostname,
            port,
            intervalS: opts.interval,
            watch: opts.watch,
            signal: stop.signal,
            onListen: (address) =>
              ctx.logger.log("info", "exporter_started", {
                ...who,
                checkpoint_path: root,
                url: `http://${
                  address.hostname.includes(":") ? `[${address.hostname}]` : address.hostname
                }:${address.port}/metrics`,
              }),
            onPass: ({ pass, error, trigger }) => {
              if (error) {
                ctx.logger.log("error", "validation_pass_failed", {
                  ...who,
                  checkpoint_path: root,
                  reason: (error as { reason?: string }).reason ?? "io_error",
                  message: error.message,
                  trigger,
                });
                changes.endPass(false);
                return;
              }
              who = rootIdentity(pass!.scan.checkpoints);
              logScan(ctx, pass!.scan);
              ctx.logger.log("info", "validation_pass", {
                ...who,
                checkpoint_path: pass!.scan.root,
                trigger,
                ok: pass!.scan.ok,
                ...pass!.scan.summary,
              });
              changes.endPass(true);
            },
          });
        } finally {
          for (const signal of signals) Deno.removeSignalListener(signal, onSignal);
        }
        ctx.logger.log("info", "exporter_stopped", { ...who, checkpoint_path: root });
        return EXIT.ok;
      });
    });
}
