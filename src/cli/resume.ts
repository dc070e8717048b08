/**
 * `ckptkit resume [root]`: prints the path of the checkpoint a restarting
 * job should load (only the path, so `path=$(ckptkit resume …)` works), or
 * exits 3 when there is nothing to resume from.
 *
 * @module
 */

import { Command, Option } from "@commander-js/extra-typings";
import { resumeFromRoot } from "../resume.ts";
import { type CliHandle, EXIT } from "./context.ts";
import { depthOptions, resolveDepth, resolveRoot } from "./options.ts";

/** Builds the `resume` command. */
export function resumeCommand(cli: CliHandle) {
  const [fast, sampleBytes, jobs] = depthOptions();
  return new Command("resume")
    .description(
      "print the path of the newest checkpoint that validates (starting from latest, falling back to " +
        "older ones); exit 3 when there is none",
    )
    .argument(
      "[root]",
      "the checkpoint root (default: --root, CKPTKIT_ROOT or the config's root)",
    )
    .addOption(
      new Option(
        "--root <dir>",
        "checkpoint root, when not given as the argument",
      ).env("CKPTKIT_ROOT"),
    )
    .addOption(fast)
    .addOption(sampleBytes)
    .addOption(jobs)
    .action(async (rootArg, opts) => {
      await cli.run(async (ctx) => {
        const root = resolveRoot(rootArg ?? opts.root, ctx.config);
        const decision = await resumeFromRoot(
          root,
          resolveDepth(opts, ctx.config),
        );
        for (const rejection of decision.rejected) {
          ctx.logger.log("warn", "resume_rejected", {
            step: rejection.step,
            checkpoint_path: `${root}/${rejection.name}`,
            reason: rejection.reasons[0] ?? null,
            detail: rejection.detail,
          });
        }
        if (decision.chosen) {
          ctx.logger.log("info", "resume_selected", {
            step: decision.chosen.step,
            checkpoint_path: decision.chosen.path,
            fallback: decision.fallback,
            policy: decision.policy,
          });
        } else {
          ctx.logger.log("error", "resume_nothing", {
            checkpoint_path: root,
            reason: "no_valid_checkpoint",
            rejected: decision.rejected.length,
          });
        }
        if (ctx.json) {
          ctx.printJson({
            ok: decision.chosen !== null,
            path: decision.chosen?.path ?? null,
            ...decision,
          });
        } else if (decision.chosen) {
          ctx.io.stdout(decision.chosen.path + "\n");
        } else {
          ctx.io.stderr(
            `ckptkit: nothing to resume from in ${root}: ` +
              (decision.rejected.length
                ? `all ${decision.rejected.length} checkpoints are invalid`
                : "no checkpoints") +
              "\n",
          );
        }
        return decision.chosen ? EXIT.ok : EXIT.nothingToResume;
      });
    });
}
