/**
 * Logs of a process that repeats itself (`serve`, the validate loop): a
 * state seen on every pass is logged at its severity when it is first seen
 * or changes, at debug while it stays the same, and once more at info
 * (`problem_resolved`) when it goes away. One-shot commands log everything.
 *
 * @module
 */

import type { LogFields, Logger, Severity } from "../log.ts";

/** States that are problems: their end is logged as `problem_resolved`. */
const PROBLEMS: ReadonlySet<string> = new Set([
  "validation_failed",
  "validation_failed_truncated",
  "latest_invalid",
  "stale_staging",
  "state_write_failed",
  "validation_pass_failed",
  "error",
]);

/** Events that describe a state found by a pass, rather than something done: the problems and the pass summaries. */
const STATES: ReadonlySet<string> = new Set([...PROBLEMS, "scan_completed", "validation_pass"]);

/** Fields that change on every pass without the state changing. */
const VOLATILE = new Set(["duration_s", "bytes_checked", "age_s", "trigger", "message", "omitted"]);

interface Seen {
  signature: string;
  event: string;
  fields: LogFields;
}

/** The "last logged" state of a repeating process, kept across its passes. */
export class LogChanges {
  #previous = new Map<string, Seen>();
  #current = new Map<string, Seen>();
  #inner: Logger | undefined;

  /** A logger that logs states through `inner` by this rule; other events pass unchanged. */
  wrap(inner: Logger): Logger {
    this.#inner = inner;
    return {
      log: (severity: Severity, event: string, fields: LogFields = {}) => {
        if (!STATES.has(event)) return inner.log(severity, event, fields);
        const key = JSON.stringify([event, fields.checkpoint_path ?? null, fields.reason ?? null, fields.file ?? null]);
        const signature = JSON.stringify(Object.entries(fields).filter(([k]) => !VOLATILE.has(k)));
        const same = this.#previous.get(key)?.signature === signature;
        this.#current.set(key, { signature, event, fields });
        inner.log(same ? "debug" : severity, event, fields);
      },
    };
  }

  /**
   * Ends a pass: with `complete` (the pass ran), every problem logged in the
   * previous pass and not in this one is logged as `problem_resolved`; a
   * pass that could not run resolves nothing and keeps what it did not see.
   */
  endPass(complete: boolean, logger: Logger | undefined = this.#inner): void {
    for (const [key, seen] of this.#previous) {
      if (this.#current.has(key)) continue;
      if (!complete && seen.event !== "validation_pass_failed" && seen.event !== "error") {
        this.#current.set(key, seen);
      } else if (PROBLEMS.has(seen.event)) {
        const { job_id, run_id, step, checkpoint_path, reason, file } = seen.fields;
        logger?.log("info", "problem_resolved", {
          job_id,
          run_id,
          step,
          checkpoint_path,
          reason,
          resolved: seen.event,
          ...(file === undefined ? {} : { file }),
        });
      }
    }
    this.#previous = this.#current;
    this.#current = new Map();
  }
}
