/**
 * Output shared by `validate`, `scan` and `resume`: a checkpoint's result as
 * text, and its problems as `validation_failed` log events.
 *
 * @module
 */

import type { ScanResult } from "../core/scan.ts";
import type { ValidationResult } from "../core/validate.ts";
import { logQuarantine } from "./quarantine.ts";
import type { CommandContext } from "./context.ts";
import { formatBytes, formatProblem, formatSeconds, plural } from "./format.ts";
import { identityOf, rootIdentity } from "./log_fields.ts";

/** Most problems logged per checkpoint; the rest are counted in one line. */
const MAX_LOGGED_PROBLEMS = 100;

/** Logs each problem of a result as a `validation_failed` event. */
export function logValidation(
  ctx: CommandContext,
  result: ValidationResult,
): void {
  const common = {
    job_id: result.job_id,
    run_id: result.run_id,
    step: result.step,
    checkpoint_path: result.path,
    depth: result.depth,
  };
  for (const problem of result.problems.slice(0, MAX_LOGGED_PROBLEMS)) {
    ctx.logger.log("warn", "validation_failed", {
      ...common,
      reason: problem.reason,
      file: problem.path,
      detail: problem.detail,
    });
  }
  if (result.problems.length > MAX_LOGGED_PROBLEMS) {
    ctx.logger.log("warn", "validation_failed_truncated", {
      ...common,
      omitted: result.problems.length - MAX_LOGGED_PROBLEMS,
    });
  }
  if (result.ok) {
    ctx.logger.log("debug", "validation_passed", {
      ...common,
      bytes_checked: result.bytes_checked,
    });
  }
}

/** The text report of one validated checkpoint. */
export function formatValidation(result: ValidationResult): string {
  const what = `${result.depth}, ${plural(result.files_checked, "file")}, ${formatBytes(result.bytes_checked)} read`;
  const structural = result.manifest_backed || result.depth !== "deep" ? "" : " [no manifest: formats and layout only]";
  if (result.ok) {
    return `OK ${result.path} (${what}, ${formatSeconds(result.duration_s)})${structural}\n` +
      result.notes.map((note) => `  note: ${note}\n`).join("");
  }
  return `FAILED ${result.path} (${what}): ${plural(result.problems.length, "problem")}\n` +
    result.problems.map((p) => formatProblem(p) + "\n").join("") +
    result.notes.map((note) => `  note: ${note}\n`).join("");
}

/**
 * Logs everything a scan found: quarantines, each checkpoint's problems, a
 * broken `latest`, stale staging, a state that could not be written, and
 * the `scan_completed` summary. Shared by scan, emit-metrics and serve so
 * their logs agree.
 */
export function logScan(ctx: CommandContext, result: ScanResult): void {
  const root = rootIdentity(result.checkpoints);
  ctx.logScope = { ...root, checkpoint_path: result.root };
  for (const moved of result.quarantined) {
    const validated = result.checkpoints.find((c) => c.path === moved.from);
    logQuarantine(ctx, moved, validated ? identityOf(validated) : root);
  }
  if (result.state_error) {
    ctx.logger.log("warn", "state_write_failed", { ...root, checkpoint_path: result.root, detail: result.state_error });
  }
  for (const checkpoint of result.checkpoints) logValidation(ctx, checkpoint);
  if (result.latest.problem) {
    // About the checkpoint latest names when it names one, else about the root.
    const named = result.latest.name ? `${result.root}/${result.latest.name}` : null;
    const validated = named ? result.checkpoints.find((c) => c.path === named) : undefined;
    ctx.logger.log("warn", "latest_invalid", {
      ...(validated ? identityOf(validated) : { ...root, step: result.latest.step ?? root.step }),
      checkpoint_path: named ?? result.root,
      reason: "latest_invalid",
      target: named,
      detail: result.latest.problem,
    });
  }
  for (const staging of result.staging.filter((s) => s.stale)) {
    ctx.logger.log("warn", "stale_staging", {
      // A staging folder has no manifest yet: whose root it is in, no step.
      job_id: root.job_id,
      run_id: root.run_id,
      checkpoint_path: staging.path,
      reason: "stale_staging",
      age_s: Math.round(staging.age_s),
    });
  }
  ctx.logger.log(result.ok ? "info" : "warn", "scan_completed", {
    ...root,
    checkpoint_path: result.root,
    ...result.summary,
  });
}
