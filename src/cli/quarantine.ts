/**
 * `ckptkit quarantine <path>`: moves a checkpoint into `<root>/corrupt/`
 * with a record of why.
 *
 * @module
 */

import { Command, Option } from "../deps/commander.ts";
import type { QuarantineResult } from "../core/quarantine.ts";
import { type CliHandle, type CommandContext, EXIT } from "./context.ts";
import type { ManifestIdentity } from "../core/identity.ts";
import { readIdentityOf } from "./log_fields.ts";
import { lockTimeoutOption, resolveLockTimeoutMs } from "./options.ts";

/** Builds the `quarantine` command. */
export function quarantineCommand(cli: CliHandle) {
  return new Command("quarantine")
    .description(
      "move a checkpoint into <root>/corrupt/ atomically, with a record (reason, time, host, problems found " +
        "by a fast validation) beside it; never overwrites an earlier quarantined one",
    )
    .argument("<path>", "the checkpoint folder, <root>/step-N")
    .addOption(
      new Option(
        "--reason <text>",
        "why, in your words (default: the first problem found)",
      ),
    )
    .addOption(lockTimeoutOption())
    .action(async (path, opts) => {
      await cli.run(async (ctx) => {
        const { quarantineCheckpoint } = await import("../core/quarantine.ts");
        ctx.logScope = { checkpoint_path: path };
        const result = await quarantineCheckpoint(path, {
          reason: opts.reason,
          lockTimeoutMs: resolveLockTimeoutMs(opts.lockTimeout, ctx.config),
        });
        logQuarantine(ctx, result, await readIdentityOf(result.to));
        if (ctx.json) {
          ctx.printJson({ ok: true, ...result });
        } else {
          ctx.io.stdout(formatQuarantine(result));
        }
        return EXIT.ok;
      });
    });
}

/**
 * Logs a quarantine and any move of `latest` it caused, with the identity of
 * the quarantined checkpoint: `checkpoint_path` is where it was,
 * `quarantine_path` where it is now; for `latest_rewritten`, `target` is the
 * checkpoint `latest` names now (null when removed).
 */
export function logQuarantine(
  ctx: CommandContext,
  result: QuarantineResult,
  identity: ManifestIdentity,
): void {
  ctx.logger.log("warn", "checkpoint_quarantined", {
    ...identity,
    checkpoint_path: result.from,
    reason: "quarantined",
    quarantine_path: result.to,
    detail: result.reason,
  });
  if (result.latest_changed) {
    const root = result.from.slice(0, result.from.lastIndexOf("/"));
    const { from, to } = result.latest_changed;
    ctx.logger.log("warn", "latest_rewritten", {
      ...identity,
      checkpoint_path: from ? `${root}/${from}` : root,
      reason: "quarantined",
      previous: from || null,
      target: to ? `${root}/${to}` : null,
    });
  }
}

/** The text report of a quarantine. */
export function formatQuarantine(result: QuarantineResult): string {
  return `quarantined ${result.from} -> ${result.to} (${result.reason})\n` +
    (result.latest_changed
      ? `latest: ${result.latest_changed.from} -> ${
        result.latest_changed.to ?? "(removed: no valid checkpoint left)"
      }\n`
      : "");
}
