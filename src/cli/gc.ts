/**
 * `ckptkit gc [root]`: applies retention (keep-last valid, keep-every K) and
 * removes stale staging folders, with every safety rule of
 * `src/core/retention.ts`.
 *
 * @module
 */

import { Command, Option } from "../deps/commander.ts";
import { DEFAULT_STALE_STAGING_S } from "../defaults.ts";
import { type CliHandle, EXIT } from "./context.ts";
import { formatBytes, plural } from "./format.ts";
import { NO_IDENTITY, readIdentityOf } from "./log_fields.ts";
import {
  depthOptions,
  lockTimeoutOption,
  resolveDepth,
  resolveLockTimeoutMs,
  resolveRoot,
  rootFallbackOption,
} from "./options.ts";
import { parseNonNegativeInteger, parseSeconds } from "./parse.ts";

/** Builds the `gc` command. */
export function gcCommand(cli: CliHandle) {
  const [fast, sampleBytes, jobs, deep] = depthOptions();
  fast.description = "find corrupt checkpoints with manifest, presence and sizes only; the kept checkpoints a " +
    "deletion rests on are still hashed in full first (unless recorded known-good and unchanged since)";
  sampleBytes.description = "find corrupt checkpoints by the sampled regions recorded at commit; the kept " +
    "checkpoints a deletion rests on are still hashed in full first (unless recorded known-good and unchanged since)";
  return new Command("gc")
    .description(
      "delete checkpoints retention does not keep (never the one latest names, the newest valid or the " +
        "last-known-good; corrupt ones do not count toward keep-last) and stale staging folders; refuses a folder " +
        "that is not a ckptkit root",
    )
    .argument(
      "[root]",
      "the checkpoint root (default: --root, CKPTKIT_ROOT or the config's root)",
    )
    .addOption(
      rootFallbackOption(),
    )
    .addOption(
      new Option(
        "--keep-last <n>",
        "keep the newest N valid checkpoints (config: retention.keep_last)",
      ).argParser(
        parseNonNegativeInteger,
      ),
    )
    .addOption(
      new Option(
        "--keep-every <k>",
        "keep every checkpoint whose step is a multiple of K (config: retention.keep_every)",
      )
        .argParser(parseNonNegativeInteger),
    )
    .addOption(
      new Option(
        "--dry-run",
        "print what would be deleted and why each survivor is kept; change nothing",
      ),
    )
    .addOption(
      new Option(
        "--stale-after <duration>",
        `remove staging folders in which nothing changed for longer, by the newest mtime or ctime in them ` +
          `(a copy keeps old mtimes, never old ctimes) (default ${DEFAULT_STALE_STAGING_S / 3600}h)`,
      ).argParser(parseSeconds),
    )
    .addOption(fast)
    .addOption(sampleBytes)
    .addOption(jobs)
    .addOption(deep)
    .addOption(lockTimeoutOption())
    .action(async (rootArg, opts) => {
      await cli.run(async (ctx) => {
        const { collectGarbage } = await import("../core/gc.ts");
        const root = resolveRoot(rootArg ?? opts.root, ctx.config);
        ctx.logScope = { checkpoint_path: root };
        const result = await collectGarbage(root, {
          ...resolveDepth(opts, ctx.config),
          keepLast: opts.keepLast ?? ctx.config.retention?.keep_last,
          keepEvery: opts.keepEvery ?? ctx.config.retention?.keep_every,
          dryRun: opts.dryRun,
          staleStagingAfterS: opts.staleAfter,
          lockTimeoutMs: resolveLockTimeoutMs(opts.lockTimeout, ctx.config),
        });
        // Whose the root is: the newest checkpoint kept (its manifest), for the staging and summary lines.
        const newest = result.keep.find((k) => k.reasons.some((r) => r.startsWith("newest valid"))) ?? result.keep[0];
        const rootWho = newest ? await readIdentityOf(`${result.root}/${newest.name}`) : NO_IDENTITY;
        if (!result.dry_run) {
          for (const deleted of result.delete) {
            ctx.logger.log("info", "gc_delete", {
              job_id: deleted.job_id ?? null,
              run_id: deleted.run_id ?? null,
              step: deleted.step,
              checkpoint_path: `${result.root}/${deleted.name}`,
              reason: "retention",
              detail: deleted.why,
            });
          }
          for (const staging of result.delete_staging) {
            ctx.logger.log("info", "gc_delete", {
              job_id: rootWho.job_id,
              run_id: rootWho.run_id,
              checkpoint_path: `${result.root}/${staging.name}`,
              reason: "stale_staging",
              age_s: Math.round(staging.age_s),
            });
          }
        }
        ctx.logger.log("info", "gc_completed", {
          ...rootWho,
          checkpoint_path: result.root,
          dry_run: result.dry_run,
          kept: result.keep.length,
          deleted: result.delete.length + result.delete_staging.length,
          bytes_freed: result.bytes_freed,
          duration_s: result.duration_s,
        });
        if (ctx.json) {
          ctx.printJson({ ok: true, ...result });
          return EXIT.ok;
        }
        const verb = result.dry_run ? "would delete" : "deleted";
        for (const kept of result.keep) {
          ctx.io.stdout(`keep    ${kept.name}: ${kept.reasons.join("; ")}\n`);
        }
        for (const gone of result.delete) {
          ctx.io.stdout(`${verb.padEnd(12)} ${gone.name}: ${gone.why}\n`);
        }
        for (const s of result.delete_staging) {
          ctx.io.stdout(
            `${verb.padEnd(12)} ${s.name}: stale staging (a crashed write)\n`,
          );
        }
        for (const s of result.keep_staging) {
          ctx.io.stdout(`keep    ${s.name}: a write in progress\n`);
        }
        ctx.io.stdout(
          `${result.dry_run ? "dry run: " : ""}${plural(result.keep.length, "checkpoint")} kept, ` +
            `${result.delete.length + result.delete_staging.length} ${verb}, ${formatBytes(result.bytes_freed)} ` +
            `${result.dry_run ? "would be " : ""}freed\n`,
        );
        return EXIT.ok;
      });
    });
}
