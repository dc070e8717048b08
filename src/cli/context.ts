/**
 * What every command shares: the I/O streams, the exit codes, the global
 * options merged with the config file, the logger, and the one place where
 * errors become a one-line message and an exit code.
 *
 * @module
 */

import type { Config } from "../core/config.ts";
import { CkptkitError, reasonOf, USAGE_ERROR_REASONS } from "../errors.ts";
import { createLogger, type LogFields, type LogFormat, type Logger, type LogLevel } from "../log.ts";
import { COMMIT_POINTS, REPAIR_POINTS } from "../commit_points.ts";
import type { LogChanges } from "./log_changes.ts";
import type { CommitPoint, RepairPoint } from "../commit_points.ts";

/** Exit codes, the same for every command. */
export const EXIT = {
  /** Success. */
  ok: 0,
  /** Integrity problems found. */
  problems: 1,
  /** Usage or config error. */
  usage: 2,
  /** Nothing to resume from. */
  nothingToResume: 3,
  /** Runtime error: I/O, lock held, no space, checkpoint exists. */
  runtime: 4,
} as const;

/** Where the CLI writes and what it reads from its environment. */
export interface CliIo {
  /** Writes to standard output. */
  stdout: (text: string) => void;
  /** Writes to standard error. */
  stderr: (text: string) => void;
  /** Reads an environment variable. */
  env: (name: string) => string | undefined;
  /** Whether stderr is a terminal (progress is shown only then, and log lines default to text). */
  stderrIsTerminal?: () => boolean;
  /**
   * For a caller that runs commands again and again (the validate loop): what was logged last, so a state
   * found on every pass is logged when it changes and at debug otherwise. The caller ends each pass.
   */
  logChanges?: LogChanges;
}

/** What a command builder gets from the program. */
export interface CliHandle {
  /** Standard streams and environment. */
  io: CliIo;
  /** The global options as parsed (call inside the action). */
  globals: () => GlobalOptions;
  /** Runs a command body with {@linkcode runCommand} and records its exit code. */
  run: (body: (ctx: CommandContext) => Promise<number>) => Promise<void>;
}

/** The global options, accepted before or after the command name. */
export interface GlobalOptions {
  config?: string;
  json?: boolean;
  logLevel?: string;
  logFormat?: string;
}

/** A command's view of the global options, the config and the logger. */
export interface CommandContext {
  io: CliIo;
  config: Config;
  json: boolean;
  logger: Logger;
  /**
   * Fields the `error` event of a failed command carries (the root or
   * checkpoint it worked on and whose they are); commands set them once known.
   */
  logScope: LogFields;
  /** Writes a JSON document (pretty, one per command) to stdout. */
  printJson: (value: unknown) => void;
  /** Fault injection from CKPTKIT_TEST_PAUSE_AT / CKPTKIT_TEST_FAIL_AT (tests only). */
  faultHook?: (point: CommitPoint | RepairPoint) => Promise<void>;
}

/** Builds the context of a command from its global options. */
export async function createContext(
  io: CliIo,
  globals: GlobalOptions,
): Promise<CommandContext> {
  // The config module loads yaml and zod: only when a config file is given (start-up is module loading).
  const config = globals.config ? await (await import("../core/config.ts")).loadConfig(globals.config) : {};
  const level = (globals.logLevel ?? config.log_level ?? "info") as LogLevel;
  // Text for a person at a terminal, JSON lines for a log pipeline (a pipe, a file, journald).
  const format = (globals.logFormat ?? config.log?.format ?? (io.stderrIsTerminal?.() ? "text" : "json")) as LogFormat;
  const written = contractLogger(createLogger({ write: io.stderr, level, format }));
  const logger = io.logChanges ? io.logChanges.wrap(written) : written;
  return {
    io,
    config,
    json: globals.json ?? false,
    logger,
    logScope: {},
    printJson: (value) => io.stdout(JSON.stringify(value, null, 2) + "\n"),
    faultHook: faultHookFromEnv(io),
  };
}

/**
 * Runs a command body and turns a thrown error into a one-line message on
 * stderr, an `error` log line, a JSON error document with `--json`, and an
 * exit code (2 for usage and config errors, 4 for everything else).
 */
export async function runCommand(
  io: CliIo,
  globals: GlobalOptions,
  body: (ctx: CommandContext) => Promise<number>,
): Promise<number> {
  let ctx: CommandContext | undefined;
  try {
    ctx = await createContext(io, globals);
    return await body(ctx);
  } catch (err) {
    const error = err instanceof CkptkitError ? err : unexpected(err);
    const code = USAGE_ERROR_REASONS.has(error.reason) ? EXIT.usage : EXIT.runtime;
    io.stderr(`ckptkit: error: ${oneLine(error.message)} [${error.reason}]\n`);
    // A push URL is not a checkpoint path: it gets its own field, and the path stays the command's.
    const url = error.path && /^[a-z][a-z0-9+.-]*:\/\//i.test(error.path) ? error.path : undefined;
    ctx?.logger.log("error", "error", {
      ...ctx.logScope,
      reason: error.reason,
      ...(error.path && !url ? { checkpoint_path: error.path } : {}),
      ...(url ? { url } : {}),
      message: oneLine(error.message),
    });
    if (globals.json) {
      io.stdout(
        JSON.stringify(
          {
            ok: false,
            error: {
              reason: error.reason,
              message: oneLine(error.message),
              path: error.path ?? null,
            },
          },
          null,
          2,
        ) + "\n",
      );
    }
    return code;
  }
}

/**
 * The log contract every command keeps, applied to every line in one place:
 * `checkpoint_path` (and `quarantine_path`, `target`) absolute, whatever the
 * user typed.
 */
function contractLogger(inner: Logger): Logger {
  return {
    log(severity, event, fields = {}) {
      const out: LogFields = { ...fields };
      for (const key of ["checkpoint_path", "quarantine_path", "target"]) {
        if (typeof out[key] === "string") out[key] = absolutePath(out[key] as string);
      }
      inner.log(severity, event, out);
    },
  };
}

/** `path` made absolute against the working directory, `.` and `..` resolved (no file system access). */
export function absolutePath(path: string): string {
  if (path === "") return path;
  const joined = path.startsWith("/") ? path : `${Deno.cwd()}/${path}`;
  const parts: string[] = [];
  for (const part of joined.split("/")) {
    if (part === "" || part === ".") continue;
    if (part === "..") parts.pop();
    else parts.push(part);
  }
  return "/" + parts.join("/");
}

/**
 * An error no code path wrapped still gets its real reason when it has one: a
 * full disk is no_space wherever it hits. A stray NotFound stays io_error
 * (exit 4), not the usage error not_found means elsewhere.
 */
function unexpected(err: unknown): CkptkitError {
  const message = (err as Error)?.message ?? String(err);
  const reason = reasonOf(err);
  if (reason === "no_space" || reason === "permission_denied" || reason === "cross_device") {
    return new CkptkitError(reason, message, { cause: err });
  }
  return new CkptkitError("io_error", `Unexpected error: ${message}`, { cause: err });
}

function oneLine(text: string): string {
  return text.replace(/\s*\n\s*/g, " ").trim();
}

/**
 * Test-only fault injection: `CKPTKIT_TEST_PAUSE_AT=<point>` logs
 * `test_paused` and waits until SIGUSR1 (a test lands a concurrent change,
 * then lets it go on) or until the test SIGKILLs the process;
 * `CKPTKIT_TEST_FAIL_AT=<point>` fails there as an I/O error would.
 */
function faultHookFromEnv(io: CliIo): ((point: CommitPoint | RepairPoint) => Promise<void>) | undefined {
  const pauseAt = readEnv(io, "CKPTKIT_TEST_PAUSE_AT");
  const failAt = readEnv(io, "CKPTKIT_TEST_FAIL_AT");
  if (!pauseAt && !failAt) return undefined;
  const points: readonly string[] = [...COMMIT_POINTS, ...REPAIR_POINTS];
  for (const point of [pauseAt, failAt]) {
    if (point && !points.includes(point)) {
      throw new CkptkitError(
        "invalid_argument",
        `Unknown fault point "${point}": expected one of ${points.join(", ")}`,
      );
    }
  }
  return async (point) => {
    if (point === failAt) {
      throw new CkptkitError(
        "io_error",
        `Injected failure at ${point} (CKPTKIT_TEST_FAIL_AT)`,
      );
    }
    if (point === pauseAt) {
      await new Promise<void>((resolve) => {
        // The pending timer keeps the event loop alive until the signal or the kill.
        const timer = setTimeout(resolve, 2 ** 31 - 1);
        const proceed = () => {
          clearTimeout(timer);
          Deno.removeSignalListener("SIGUSR1", proceed);
          resolve();
        };
        Deno.addSignalListener("SIGUSR1", proceed);
        io.stderr(
          JSON.stringify({ event: "test_paused", point, pid: Deno.pid }) + "\n",
        );
      });
    }
  };
}

function readEnv(io: CliIo, name: string): string | undefined {
  try {
    return io.env(name) || undefined;
  } catch {
    return undefined;
  }
}
