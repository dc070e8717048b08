/**
 * `ckptkit scan [root]`: validates every checkpoint of a root and reports
 * crashed writes, a broken `latest` and strays; with `--shard i/N --report
 * PATH`, one shard's share.
 *
 * @module
 */

import { DEFAULT_STALE_STAGING_S } from "../defaults.ts";
import { Command, Option } from "../deps/commander.ts";
import { CkptkitError } from "../errors.ts";
import type { ScanResult } from "../core/scan.ts";
import { type CliHandle, type CommandContext, EXIT } from "./context.ts";
import { formatBytes, formatSeconds, plural } from "./format.ts";
import {
  depthOptions,
  lockTimeoutOption,
  resolveDepth,
  resolveLockTimeoutMs,
  resolveRoot,
  rootFallbackOption,
  shardOptions,
} from "./options.ts";
import { formatQuarantine } from "./quarantine.ts";
import { parseSeconds } from "./parse.ts";
import { startProgress } from "./progress.ts";
import { runShard, shardRequest } from "./shard.ts";
import { formatValidation, logScan } from "./validation_output.ts";

/** Builds the `scan` command. */
export function scanCommand(cli: CliHandle) {
  const [fast, sampleBytes, jobs, deep] = depthOptions();
  const [shard, report] = shardOptions();
  return new Command("scan")
    .description(
      "validate every checkpoint of a root, newest first, and report crashed writes, a broken latest " +
        "and folders that are not checkpoints; exit 0 when all is valid, 1 otherwise",
    )
    .argument(
      "[root]",
      "the checkpoint root (default: --root, CKPTKIT_ROOT or the config's root)",
    )
    .addOption(
      rootFallbackOption(),
    )
    .addOption(fast)
    .addOption(sampleBytes)
    .addOption(jobs)
    .addOption(deep)
    .addOption(
      new Option(
        "--stale-after <duration>",
        `staging folders in which nothing changed for longer (newest mtime or ctime in them) are crashed writes ` +
          `(default ${DEFAULT_STALE_STAGING_S / 3600}h)`,
      ).argParser(parseSeconds),
    )
    .addOption(
      new Option(
        "--quarantine",
        "move every checkpoint with integrity problems into <root>/corrupt/",
      ),
    )
    .addOption(lockTimeoutOption())
    .addOption(shard)
    .addOption(report)
    .action(async (rootArg, opts) => {
      await cli.run(async (ctx) => {
        const { scanRoot } = await import("../core/scan.ts");
        const root = resolveRoot(rootArg ?? opts.root, ctx.config);
        const sharded = shardRequest(opts);
        if (sharded) {
          if (opts.quarantine) {
            throw new CkptkitError(
              "invalid_argument",
              "--quarantine acts on the whole verdict, which a shard does not have: pass it to " +
                "`ckptkit report merge` instead",
            );
          }
          return await runShard(ctx, "scan", root, sharded, {
            ...resolveDepth(opts, ctx.config),
            staleStagingAfterS: opts.staleAfter,
          });
        }
        const progress = startProgress(ctx, "scanning");
        const result = await scanRoot(root, {
          ...resolveDepth(opts, ctx.config),
          ...progress,
          staleStagingAfterS: opts.staleAfter,
          quarantine: opts.quarantine,
          lockTimeoutMs: resolveLockTimeoutMs(opts.lockTimeout, ctx.config),
          faultHook: ctx.faultHook,
        }).finally(() => progress.done());
        logScan(ctx, result);
        printScan(ctx, result);
        return result.ok ? EXIT.ok : EXIT.problems;
      });
    });
}

/** Prints a scan as `scan` does: its JSON document, or one line per checkpoint and a summary. */
export function printScan(ctx: CommandContext, result: ScanResult): void {
  if (ctx.json) {
    ctx.printJson(result);
    return;
  }
  ctx.io.stdout(`scanning ${result.root} (${result.depth})\n`);
  for (const checkpoint of result.checkpoints) {
    ctx.io.stdout(formatValidation(checkpoint));
  }
  ctx.io.stdout(
    result.latest.state === "missing"
      ? `latest: missing${result.latest.problem ? ` (${result.latest.problem})` : ""}\n`
      : `latest: ${result.latest.name ?? "unreadable"}${
        result.latest.problem ? ` (PROBLEM: ${result.latest.problem})` : " (ok)"
      }\n`,
  );
  for (const staging of result.staging) {
    ctx.io.stdout(
      `staging: ${staging.name} (${formatSeconds(staging.age_s)} old; ${
        staging.stale ? "STALE: a crashed write, removed by gc" : "a write in progress"
      })\n`,
    );
  }
  for (const moved of result.quarantined) {
    ctx.io.stdout(formatQuarantine(moved));
  }
  for (const stray of result.strays) {
    ctx.io.stdout(`hint: ${stray.name}: ${stray.detail}\n`);
  }
  const s = result.summary;
  ctx.io.stdout(
    `${plural(s.checkpoints, "checkpoint")}: ${s.valid} valid, ${s.invalid} invalid` +
      (s.gone ? `, ${s.gone} removed during the scan` : "") +
      `; ${formatBytes(s.bytes_checked)} read in ${formatSeconds(s.duration_s)}. ` +
      (result.ok ? "No problems found.\n" : "PROBLEMS FOUND.\n"),
  );
}
