/**
 * Structured JSON-lines logs: one line per event that changes state or finds
 * a problem, always with the same keys so log pipelines can index them.
 * The library never logs by itself; the CLI (or a library user) passes
 * results to a logger.
 *
 * @module
 */

/** Severity of a log line. */
export type Severity = "debug" | "info" | "warn" | "error";
/** Lowest severity written; `silent` writes nothing. */
export type LogLevel = Severity | "silent";
/** The accepted `--log-level` values. */
export const LOG_LEVELS: readonly LogLevel[] = [
  "debug",
  "info",
  "warn",
  "error",
  "silent",
];

const RANK: Record<LogLevel, number> = {
  debug: 10,
  info: 20,
  warn: 30,
  error: 40,
  silent: 100,
};

/** The fields every log line has (null when unknown), plus event-specific ones. */
export interface LogFields {
  /** The training run. */
  run_id?: string | null;
  /** The training job. */
  job_id?: string | null;
  /** The checkpoint's step. */
  step?: number | null;
  /** The checkpoint folder concerned. */
  checkpoint_path?: string | null;
  /** The stable reason of a problem or error. */
  reason?: string | null;
  /** Anything else worth a field (message, counts, durations). */
  [key: string]: unknown;
}

/** Writes structured events. */
export interface Logger {
  /** Writes one event at `severity` if the level lets it through. */
  log(severity: Severity, event: string, fields?: LogFields): void;
}

/** Options for {@linkcode createJsonLogger}. */
export interface JsonLoggerOptions {
  /** Receives each line, newline included (e.g. a stderr writer). */
  write: (line: string) => void;
  /** Lowest severity written (default `info`). */
  level?: LogLevel;
  /** Fields added to every line (e.g. job_id and run_id). */
  base?: LogFields;
  /** Clock, for tests. */
  now?: () => Date;
}

/**
 * Creates a logger writing one JSON object per line with `ts`, `severity`,
 * `event`, `run_id`, `job_id`, `step`, `checkpoint_path`, `reason`, then any
 * other fields.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { createJsonLogger } from "./log.ts";
 * const lines: string[] = [];
 * const logger = createJsonLogger({ write: (line) => lines.push(line), level: "info" });
 * logger.log("info", "checkpoint_committed", { step: 10, checkpoint_path: "/tmp/ckpts/step-10" });
 * logger.log("debug", "ignored");
 * assert.ok(lines.length === 1 && JSON.parse(lines[0]).step === 10);
 * ```
 */
export function createJsonLogger(options: JsonLoggerOptions): Logger {
  const threshold = RANK[options.level ?? "info"];
  const now = options.now ?? (() => new Date());
  return {
    log(severity, event, fields = {}) {
      if (RANK[severity] < threshold) return;
      const merged = { ...options.base, ...fields };
      const { run_id, job_id, step, checkpoint_path, reason, ...rest } = merged;
      const line = {
        ts: now().toISOString(),
        severity,
        event,
        run_id: run_id ?? null,
        job_id: job_id ?? null,
        step: step ?? null,
        checkpoint_path: checkpoint_path ?? null,
        reason: reason ?? null,
        ...rest,
      };
      options.write(JSON.stringify(line) + "\n");
    },
  };
}

/** A logger that drops everything. */
export const silentLogger: Logger = { log() {} };
