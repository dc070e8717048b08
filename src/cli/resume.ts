/**
 * `ckptkit resume [root]`: prints the path of the checkpoint a restarting
 * job should load (only the path, so `path=$(ckptkit resume …)` works);
 * exits 3 when the root has never held a checkpoint (start from scratch) and
 * 1 when it has but none is valid (stop: a person decides).
 *
 * @module
 */

import { RESUME_POLICIES } from "../defaults.ts";
import { Command, InvalidArgumentError, Option } from "../deps/commander.ts";
import { type CliHandle, EXIT } from "./context.ts";
import {
  depthOptions,
  lockTimeoutOption,
  resolveDepth,
  resolveLockTimeoutMs,
  resolveRoot,
  rootFallbackOption,
} from "./options.ts";
import { NO_IDENTITY, readIdentityOf } from "./log_fields.ts";
import { parseNonNegativeInteger } from "./parse.ts";

/** Builds the `resume` command. */
export function resumeCommand(cli: CliHandle) {
  const [fast, sampleBytes, jobs, deep] = depthOptions();
  return new Command("resume")
    .description(
      "print the path of the checkpoint to resume from (only the path); exit 3 when the root has never held a " +
        "checkpoint, 1 (no_valid_checkpoint) when it has but none is valid. " +
        "Changes nothing on disk unless --repair is given",
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
        "--policy <policy>",
        "latest-valid: newest checkpoint that validates, starting from latest; last-known-good: newest one " +
          "recorded as validated, without re-hashing; newest-before: newest valid one before --before-step/--before-time",
      ).choices(RESUME_POLICIES).default("latest-valid" as const),
    )
    .addOption(
      new Option("--before-step <n>", "with newest-before: only steps below N")
        .argParser(parseNonNegativeInteger),
    )
    .addOption(
      new Option(
        "--before-time <iso8601>",
        "with newest-before: only checkpoints created before this time",
      )
        .argParser(parseTime),
    )
    .addOption(fast)
    .addOption(sampleBytes)
    .addOption(jobs)
    .addOption(deep)
    .addOption(
      new Option(
        "--repair",
        "when latest is missing, unreadable or names an invalid checkpoint: rewrite it to the chosen one and " +
          "quarantine the invalid ones skipped",
      ),
    )
    .addOption(lockTimeoutOption())
    .action(async (rootArg, opts) => {
      await cli.run(async (ctx) => {
        const { resumeFromRoot } = await import("../core/resume.ts");
        const root = resolveRoot(rootArg ?? opts.root, ctx.config);
        ctx.logScope = { checkpoint_path: root };
        const decision = await resumeFromRoot(root, {
          ...resolveDepth(opts, ctx.config),
          policy: opts.policy,
          beforeStep: opts.beforeStep,
          beforeTime: opts.beforeTime,
          repair: opts.repair,
          lockTimeoutMs: resolveLockTimeoutMs(opts.lockTimeout, ctx.config),
          faultHook: ctx.faultHook,
        });
        // Whose each checkpoint is, from its manifest (where --repair moved it, for a quarantined one).
        const moved = new Map(
          decision.actions.filter((a) => a.action === "quarantined").map((a) => [a.name, a.detail]),
        );
        const identity = async (name: string) => {
          const found = await readIdentityOf(moved.get(name) ?? `${root}/${name}`);
          return found.job_id !== null || found.run_id !== null || !moved.has(name)
            ? found
            : await readIdentityOf(`${root}/${name}`);
        };
        for (const rejection of decision.rejected) {
          ctx.logger.log("warn", "resume_rejected", {
            ...(await identity(rejection.name)),
            step: rejection.step,
            checkpoint_path: rejection.path,
            reason: rejection.reasons[0] ?? null,
            detail: rejection.detail,
          });
        }
        for (const action of decision.actions) {
          if (action.action === "quarantined") {
            ctx.logger.log("warn", "checkpoint_quarantined", {
              ...(await identity(action.name)),
              checkpoint_path: `${root}/${action.name}`,
              reason: "repair",
              quarantine_path: action.detail,
            });
          } else {
            // latest named action.detail ("" when missing or unreadable) and now names action.name.
            const before = action.detail ? await identity(action.detail) : NO_IDENTITY;
            const after = await identity(action.name);
            ctx.logger.log("warn", "latest_rewritten", {
              ...(before.job_id !== null || before.run_id !== null ? before : after),
              checkpoint_path: action.detail ? `${root}/${action.detail}` : root,
              reason: "repair",
              previous: action.detail || null,
              target: `${root}/${action.name}`,
            });
          }
        }
        if (decision.chosen) {
          ctx.logger.log("info", "resume_selected", {
            ...(await identity(decision.chosen.name)),
            step: decision.chosen.step,
            checkpoint_path: decision.chosen.path,
            // With a fallback: why the newer candidates were refused (the first one's first problem).
            reason: decision.fallback ? decision.rejected[0]?.reasons[0] ?? "no_known_good" : null,
            policy: decision.policy,
            fallback: decision.fallback,
            detail: decision.fallback_reason,
          });
        } else {
          const newest = decision.rejected[0];
          ctx.logger.log("error", "resume_nothing", {
            ...(newest ? await identity(newest.name) : NO_IDENTITY),
            checkpoint_path: root,
            reason: decision.reason,
            policy: decision.policy,
            rejected: decision.rejected.length,
            detail: decision.message,
          });
        }
        if (ctx.json) {
          ctx.printJson(decision);
        } else if (decision.chosen) {
          ctx.io.stdout(decision.chosen.path + "\n");
        } else if (decision.reason === "no_valid_checkpoint") {
          ctx.io.stderr(
            `ckptkit: error: nothing valid to resume from in ${root} (policy ${decision.policy}): ` +
              `${decision.message} [no_valid_checkpoint]\n`,
          );
        } else {
          ctx.io.stderr(`ckptkit: nothing to resume from in ${root}: ${decision.message}\n`);
        }
        if (decision.chosen) return EXIT.ok;
        return decision.reason === "no_valid_checkpoint" ? EXIT.problems : EXIT.nothingToResume;
      });
    });
}

function parseTime(value: string): Date {
  const time = Date.parse(value);
  if (!/^\d{4}-\d{2}-\d{2}/.test(value) || Number.isNaN(time)) {
    throw new InvalidArgumentError(
      "expected an ISO 8601 time such as 2026-11-29T12:00:00Z.",
    );
  }
  return new Date(time);
}
