/**
 * `ckptkit quarantine <path>`: moves a checkpoint into `<root>/corrupt/`
 * with a record of why.
 *
 * @module
 */

import { Command, Option } from "../deps/commander.ts";
import type { QuarantineResult } from "../quarantine.ts";
import { type CliHandle, type CommandContext, EXIT } from "./context.ts";
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
        const { quarantineCheckpoint } = await import("../quarantine.ts");
        const result = await quarantineCheckpoint(path, {
          reason: opts.reason,
          lockTimeoutMs: resolveLockTimeoutMs(opts.lockTimeout, ctx.config),
        });
        logQuarantine(ctx, result);
        if (ctx.json) {
          ctx.printJson({ ok: true, ...result });
        } else {
          ctx.io.stdout(formatQuarantine(result));
        }
        return EXIT.ok;
      });
    });
}

/** Logs a quarantine and any move of `latest` it caused. */
export function logQuarantine(
  ctx: CommandContext,
  result: QuarantineResult,
): void {
  ctx.logger.log("warn", "checkpoint_quarantined", {
    checkpoint_path: result.from,
    reason: "quarantined",
    to: result.to,
    detail: result.reason,
  });
  if (result.latest_changed) {
    ctx.logger.log("warn", "latest_rewritten", {
      checkpoint_path: result.to,
      reason: "quarantined",
      from: result.latest_changed.from,
      to: result.latest_changed.to,
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
