/**
 * Output shared by `write` and `commit`: the human line, the JSON document
 * and the `checkpoint_committed` log event.
 *
 * @module
 */

import type { CommitResult } from "../commit.ts";
import type { CommandContext } from "./context.ts";
import { formatBytes, formatSeconds, plural } from "./format.ts";

/** Reports a commit on stdout (text or JSON) and in the log. */
export function reportCommit(ctx: CommandContext, result: CommitResult): void {
  ctx.logger.log("info", "checkpoint_committed", {
    job_id: result.job_id,
    run_id: result.run_id,
    step: result.step,
    checkpoint_path: result.path,
    files: result.files,
    bytes: result.total_bytes,
    duration_s: result.duration_s,
    latest_updated: result.latest_updated,
  });
  if (ctx.json) {
    ctx.printJson({ ok: true, ...result });
    return;
  }
  ctx.io.stdout(
    `committed ${result.path} (${plural(result.files, "file")}, ${formatBytes(result.total_bytes)}, ` +
      `${formatSeconds(result.duration_s)}); ` +
      (result.latest_updated ? `latest -> ${result.name}\n` : `latest unchanged (it names a newer step)\n`),
  );
}
