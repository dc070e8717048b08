/**
 * Structured logs: one line per event that changes state or finds a problem,
 * always with the same keys so log pipelines can index them; as JSON lines or
 * as readable text for a terminal.
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

/** The two log formats: one JSON object per line, or one readable text line per event. */
export type LogFormat = "json" | "text";
/** The accepted `--log-format` values. */
export const LOG_FORMATS: readonly LogFormat[] = ["json", "text"];

/**
 * Reasons a log line can carry besides the `ERROR_REASONS` (src/errors.ts) of a
 * failed command and the `PROBLEM_REASONS` (src/problems.ts) of a checkpoint: what a
 * state or an action is about.
 */
export const LOG_REASONS = [
  "latest_invalid",
  "stale_staging",
  "retention",
  "quarantined",
  "repair",
  "gone",
  "no_checkpoint",
  "no_valid_checkpoint",
  "no_known_good",
] as const;

/** Options for {@linkcode createLogger}. */
export interface LoggerOptions extends JsonLoggerOptions {
  /** `json` (default) or `text`. */
  format?: LogFormat;
}

/**
 * Creates a logger in the given format: {@linkcode createJsonLogger} for
 * `json`, and for `text` one line per event a person reads in a terminal:
 * short time, severity, event, path, reason (with the file or detail), then
 * the event's key fields, e.g.
 * `14:03:12 WARN  validation_failed /mnt/ckpts/run/step-40 hash_mismatch: shards/part-0.bin`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { createLogger } from "./log.ts";
 * const lines: string[] = [];
 * const logger = createLogger({ format: "text", write: (line) => lines.push(line), now: () => new Date(0) });
 * logger.log("warn", "validation_failed", { checkpoint_path: "/r/step-40", reason: "hash_mismatch", file: "a.bin" });
 * assert.match(lines[0], /^\d\d:\d\d:\d\d WARN  validation_failed \/r\/step-40 hash_mismatch: a\.bin\n$/);
 * ```
 */
export function createLogger(options: LoggerOptions): Logger {
  if ((options.format ?? "json") === "json") return createJsonLogger(options);
  const threshold = RANK[options.level ?? "info"];
  const now = options.now ?? (() => new Date());
  return {
    log(severity, event, fields = {}) {
      if (RANK[severity] < threshold) return;
      options.write(formatTextLine(now(), severity, event, { ...options.base, ...fields }));
    },
  };
}

/** Fields shown in a text line after the path and reason, by event (others show only `detail`). */
const TEXT_FIELDS: Record<string, readonly string[]> = {
  checkpoint_committed: ["step", "files", "bytes", "duration_s"],
  checkpoint_sealed: ["step", "files", "bytes"],
  rank_part_recorded: ["rank", "world_size", "outcome"],
  validation_failed_truncated: ["omitted"],
  validation_passed: ["step", "depth"],
  scan_completed: ["checkpoints", "valid", "invalid", "stale_staging", "duration_s"],
  validation_pass: ["trigger", "checkpoints", "valid", "invalid"],
  shard_completed: ["shard", "ok"],
  reports_merged: ["kind", "shards", "ok"],
  checkpoint_quarantined: ["quarantine_path"],
  latest_rewritten: ["target"],
  resume_selected: ["step", "policy", "fallback"],
  resume_nothing: ["policy", "rejected"],
  gc_delete: ["step"],
  metrics_written: ["textfile"],
  metrics_pushed: ["url", "attempts"],
  metrics_deleted: ["url"],
  exporter_started: ["url"],
  validation_pass_failed: ["trigger"],
  stale_staging: ["age_s"],
  problem_resolved: ["resolved"],
  error: ["url"],
};

const SHORT: Record<Severity, string> = { debug: "DEBUG", info: "INFO ", warn: "WARN ", error: "ERROR" };

function formatTextLine(time: Date, severity: Severity, event: string, fields: LogFields): string {
  const pad = (n: number) => String(n).padStart(2, "0");
  const parts = [`${pad(time.getHours())}:${pad(time.getMinutes())}:${pad(time.getSeconds())}`, SHORT[severity], event];
  if (fields.checkpoint_path) parts.push(String(fields.checkpoint_path));
  const about = fields.file ?? (fields.reason ? fields.detail ?? fields.message : undefined);
  if (fields.reason) {
    // A detail that starts with its reason says it once.
    const text = about === undefined || about === null ? "" : oneLine(about).replace(`${fields.reason}: `, "");
    parts.push(text ? `${fields.reason}: ${text}` : String(fields.reason));
  }
  const extra = (TEXT_FIELDS[event] ?? [])
    .filter((key) => fields[key] !== undefined && fields[key] !== null)
    // Seconds to the hundredth: a person reads 0.02s, not 0.024029.
    .map((key) =>
      `${key}=${
        key.endsWith("_s") && typeof fields[key] === "number"
          ? (fields[key] as number).toFixed(2)
          : oneLine(fields[key])
      }`
    );
  if (!fields.reason && (fields.detail ?? fields.message)) extra.push(`(${oneLine(fields.detail ?? fields.message)})`);
  else if (fields.file && fields.detail) extra.push(`(${oneLine(fields.detail)})`);
  // Separated by two spaces from the line's head, like the columns of a table.
  return parts.join(" ") + (extra.length > 0 ? `  ${extra.join(" ")}` : "") + "\n";
}

function oneLine(value: unknown): string {
  return String(value).replace(/\s*\n\s*/g, " ").trim();
}
