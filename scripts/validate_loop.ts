/**
 * `deno task validate-loop`: a periodic validator for setups without cron (a
 * sidecar container, a tmux pane). Every `--interval` it scans a checkpoint
 * root and exports its metrics with `ckptkit emit-metrics --json` (to the
 * `--textfile` and `--pushgateway` given, or those of the config's `metrics:`),
 * run in-process through `main()` of `cli.ts`, and prints one JSON line per
 * pass on stdout:
 *
 * ```json
 * {"ts":"2026-01-01T00:00:00.000Z","event":"validation_pass","root":"/ckpts","ok":true,
 *  "checkpoints":3,"valid":3,"invalid":0,"duration_s":1.234,"depth":"full","exit_code":0,"error":null,
 *  "textfile":"/var/lib/node_exporter/ckptkit.prom","pushgateway":null}
 * ```
 *
 * emit-metrics' own log lines go to stderr as usual (a problem found on every pass is logged when it changes). Passes never overlap:
 * the next one starts `--interval` after the previous one started, or at once
 * when a pass took longer than that. SIGINT or SIGTERM stops the loop after
 * the pass in progress (a second signal stops at once) and exits 0.
 *
 * Exit codes: with `--once` or `--max-runs`, the exit code of the last pass
 * (0 all valid, 1 problems found, 2 usage or config error, 4 runtime error,
 * including a failed push; the textfile is written before the push);
 * 0 when stopped by a signal; 2 for bad flags.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { main, processIo } from "../cli.ts";
import type { CliIo } from "../src/cli/context.ts";
import { LogChanges } from "../src/cli/log_changes.ts";
import { parseBytes, parsePositiveInteger, parseSeconds } from "../src/cli/parse.ts";
import { loadConfig } from "../src/core/config.ts";

const USAGE = `Usage: deno task validate-loop [options]

Every --interval, scans a checkpoint root and exports its metrics (ckptkit
emit-metrics), and prints one JSON line per pass.

Options:
  --root <dir>           checkpoint root (default: CKPTKIT_ROOT, then the config's root)
  --config <path>        ckptkit YAML config (default: CKPTKIT_CONFIG); its metrics.textfile
                         and metrics.pushgateway apply unless overridden below
  --interval <duration>  time between the starts of two passes: 30, 30s, 5m, 1h (default 300s)
  --fast                 check manifests, presence and sizes only (reads no file data)
  --sample-bytes <n>     check the sampled regions recorded at commit instead of every byte
  --textfile <path>      node_exporter textfile to write on each pass (must end in .prom), or
                         the collector's folder: one ckptkit-<slug>-<hash>.prom per root
  --pushgateway <url>    Pushgateway to push to on each pass
  --once                 run one pass, then exit with its exit code
  --max-runs <n>         stop after n passes, exiting with the last pass's exit code
  -h, --help             show this help

Each pass prints one JSON line on stdout; emit-metrics' log lines go to
stderr (quiet them with CKPTKIT_LOG_LEVEL=warn or log_level in the config).
A pass whose push failed exits 4 and the loop goes on. SIGINT or SIGTERM stops
the loop after the pass in progress and exits 0.
`;

/** Default time between the starts of two passes, in seconds. */
export const DEFAULT_INTERVAL_S = 300;
/** setTimeout cannot wait longer than this many milliseconds. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** The loop's settings, resolved from flags, environment and config. */
export interface LoopOptions {
  /** Checkpoint root, as given. */
  root: string;
  /** Config file passed on to every pass, when there is one. */
  configPath?: string;
  /** Seconds between the starts of two passes. */
  intervalS: number;
  /** Depth flags passed on to emit-metrics (`--fast`, `--sample-bytes N`, or none). */
  depthArgs: string[];
  /** node_exporter textfile to write (else the config's `metrics.textfile`, if any). */
  textfile?: string;
  /** Pushgateway URL to push to (else the config's `metrics.pushgateway`, if any). */
  pushgateway?: string;
  /** Passes to run before exiting; undefined runs until a signal. */
  maxRuns?: number;
}

/** One line of the loop's output. */
export interface PassLine {
  ts: string;
  event: "validation_pass";
  /** The root's real path as reported by emit-metrics, or the root as given when the pass failed. */
  root: string;
  ok: boolean;
  checkpoints: number | null;
  valid: number | null;
  invalid: number | null;
  /** Wall time of the pass. */
  duration_s: number;
  depth: string | null;
  exit_code: number;
  /** Why the pass failed (bad config, unreadable root, failed push), or null. */
  error: { reason: string; message: string } | null;
  /** The textfile written, or null (none configured, or the pass failed). */
  textfile: string | null;
  /** The push URL the metrics went to, or null (none configured, or the pass failed). */
  pushgateway: string | null;
}

/** A bad flag or setting: one line on stderr and exit 2. */
export class UsageError extends Error {}

/**
 * Parses the command line into {@linkcode LoopOptions}. The root comes from
 * `--root`, else `CKPTKIT_ROOT`, else the `root` of the config named by
 * `--config` or `CKPTKIT_CONFIG`. Throws {@linkcode UsageError}.
 */
export async function parseLoopArgs(
  args: string[],
  env: (name: string) => string | undefined,
): Promise<LoopOptions | "help"> {
  const values = parseFlags(args);
  if (values.help) return "help";

  const intervalS = values.interval === undefined
    ? DEFAULT_INTERVAL_S
    : flagValue("--interval", values.interval, parseSeconds);
  if (!(intervalS > 0)) {
    throw new UsageError("--interval: expected a duration above zero.");
  }
  if (intervalS * 1000 > MAX_TIMER_MS) {
    throw new UsageError("--interval: at most 24 days.");
  }

  if (values.fast && values["sample-bytes"] !== undefined) {
    throw new UsageError("--fast and --sample-bytes cannot be used together.");
  }
  const depthArgs = values.fast ? ["--fast"] : [];
  if (values["sample-bytes"] !== undefined) {
    // Checked here so a typo fails at start-up, not on every pass.
    flagValue("--sample-bytes", values["sample-bytes"], parseBytes);
    depthArgs.push("--sample-bytes", values["sample-bytes"]);
  }

  if (values.once && values["max-runs"] !== undefined) {
    throw new UsageError("--once and --max-runs cannot be used together.");
  }
  const maxRuns = values.once
    ? 1
    : values["max-runs"] === undefined
    ? undefined
    : flagValue("--max-runs", values["max-runs"], parsePositiveInteger);

  const textfile = values.textfile;
  if (textfile !== undefined && !textfile.endsWith(".prom") && !textfile.endsWith("/") && !isFolder(textfile)) {
    // node_exporter ignores other names; emit-metrics would refuse it on every pass.
    throw new UsageError(`--textfile ${JSON.stringify(textfile)}: must end in .prom, or be the collector's folder.`);
  }
  const pushgateway = values.pushgateway;
  if (pushgateway !== undefined && !/^https?:$/.test(URL.parse(pushgateway)?.protocol ?? "")) {
    throw new UsageError(`--pushgateway ${JSON.stringify(pushgateway)}: expected an http or https URL.`);
  }

  const configPath = values.config ?? (env("CKPTKIT_CONFIG") || undefined);
  let root = values.root ?? (env("CKPTKIT_ROOT") || undefined);
  if (root === undefined && configPath !== undefined) {
    try {
      root = (await loadConfig(configPath)).root;
    } catch (err) {
      throw new UsageError((err as Error).message.replace(/\s*\n\s*/g, " "));
    }
  }
  if (!root) {
    throw new UsageError(
      "no checkpoint root: pass --root, set CKPTKIT_ROOT, or set root in the config (--config).",
    );
  }
  return { root, configPath, intervalS, depthArgs, maxRuns, textfile, pushgateway };
}

function isFolder(path: string): boolean {
  try {
    return Deno.statSync(path).isDirectory;
  } catch {
    return false;
  }
}

/** The raw flags; node:util's errors become a one-line {@linkcode UsageError}. */
function parseFlags(args: string[]) {
  try {
    return parseArgs({
      args,
      options: {
        root: { type: "string" },
        config: { type: "string" },
        interval: { type: "string" },
        fast: { type: "boolean" },
        "sample-bytes": { type: "string" },
        textfile: { type: "string" },
        pushgateway: { type: "string" },
        once: { type: "boolean" },
        "max-runs": { type: "string" },
        help: { type: "boolean", short: "h" },
      },
      strict: true,
      allowPositionals: false,
    }).values;
  } catch (err) {
    // Keep the first line: some of node:util's messages add a hint below it.
    throw new UsageError((err as Error).message.split("\n")[0]);
  }
}

/** Applies one of the CLI's value parsers, turning its error into a {@linkcode UsageError}. */
function flagValue<T>(flag: string, raw: string, parse: (v: string) => T): T {
  try {
    return parse(raw);
  } catch (err) {
    throw new UsageError(
      `${flag} ${JSON.stringify(raw)}: ${(err as Error).message}`,
    );
  }
}

/** The parts of `ckptkit emit-metrics --json` output the loop reads. */
interface EmitDocument {
  root?: unknown;
  ok?: unknown;
  textfile?: unknown;
  pushgateway?: { url?: unknown } | null;
  snapshot?: {
    counts?: { valid?: unknown; invalid?: unknown };
    last_validation?: { depth?: unknown };
  };
  error?: { reason?: unknown; message?: unknown };
}

function parseEmitDocument(text: string): EmitDocument | undefined {
  try {
    const doc: unknown = JSON.parse(text);
    return typeof doc === "object" && doc !== null ? doc as EmitDocument : undefined;
  } catch {
    return undefined;
  }
}

const count = (value: unknown): number | null => typeof value === "number" ? value : null;

/** Runs one emit-metrics pass in-process and describes it as a {@linkcode PassLine}. */
export async function runPass(options: LoopOptions, changes?: LogChanges): Promise<PassLine> {
  const started = performance.now();
  const ts = new Date().toISOString();
  let stdout = "";
  const io: CliIo = {
    stdout: (text) => {
      stdout += text;
    },
    stderr: (text) => processIo.stderr(text),
    env: (name) => Deno.env.get(name),
    stderrIsTerminal: processIo.stderrIsTerminal,
    logChanges: changes,
  };
  const args = [
    "emit-metrics",
    options.root,
    "--json",
    ...options.depthArgs,
    ...(options.configPath ? ["--config", options.configPath] : []),
    ...(options.textfile !== undefined ? ["--textfile", options.textfile] : []),
    ...(options.pushgateway !== undefined ? ["--pushgateway", options.pushgateway] : []),
  ];
  let exitCode: number;
  let crash: string | undefined;
  try {
    exitCode = await main(args, io);
  } catch (err) {
    // main() reports expected failures as exit codes; a throw is a bug, but
    // one pass failing must not take the validator down with it.
    exitCode = 4;
    crash = (err as Error)?.message ?? String(err);
  }
  const doc = parseEmitDocument(stdout);
  // A pass whose scan ran saw every state there is: what it did not see again is resolved.
  changes?.endPass(doc?.snapshot !== undefined);
  const counts = doc?.snapshot?.counts;
  const valid = count(counts?.valid);
  const invalid = count(counts?.invalid);
  const error = crash !== undefined ? { reason: "io_error", message: `emit-metrics crashed: ${crash}` } : doc?.error
    ? {
      reason: String(doc.error.reason ?? "io_error"),
      message: String(doc.error.message ?? ""),
    }
    : counts === undefined
    ? { reason: "io_error", message: "emit-metrics printed no JSON result" }
    : null;
  const depth = doc?.snapshot?.last_validation?.depth;
  const pushedUrl = doc?.pushgateway?.url;
  return {
    ts,
    event: "validation_pass",
    root: typeof doc?.root === "string" ? doc.root : options.root,
    ok: exitCode === 0 && doc?.ok === true,
    checkpoints: valid !== null && invalid !== null ? valid + invalid : null,
    valid,
    invalid,
    duration_s: Math.round(performance.now() - started) / 1000,
    depth: typeof depth === "string" ? depth : null,
    exit_code: exitCode,
    error,
    textfile: typeof doc?.textfile === "string" ? doc.textfile : null,
    pushgateway: typeof pushedUrl === "string" ? pushedUrl : null,
  };
}

/**
 * Turns SIGINT/SIGTERM into a stop request that the loop checks between
 * passes, and lets the wait between passes end early.
 */
class StopSignal {
  /** The signal that asked to stop, once one did. */
  received: Deno.Signal | undefined;
  #wake: (() => void) | undefined;
  #listeners: [Deno.Signal, () => void][] = [];

  constructor(signals: Deno.Signal[]) {
    for (const signal of signals) {
      const listener = () => this.#onSignal(signal);
      try {
        Deno.addSignalListener(signal, listener);
        this.#listeners.push([signal, listener]);
      } catch {
        // SIGTERM cannot be listened to on Windows; SIGINT still works.
      }
    }
  }

  #onSignal(signal: Deno.Signal): void {
    if (this.received !== undefined) {
      // A second signal means "now": a pass only reads checkpoints and
      // replaces files atomically, so leaving mid-pass leaves nothing half-done.
      processIo.stderr(`validate-loop: ${signal} again, stopping now\n`);
      Deno.exit(signal === "SIGINT" ? 130 : 143);
    }
    this.received = signal;
    this.#wake?.();
  }

  /** Waits `ms`, or less when a stop is requested. */
  sleep(ms: number): Promise<void> {
    if (this.received !== undefined || ms <= 0) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, ms);
      this.#wake = () => {
        clearTimeout(timer);
        resolve();
      };
    }).finally(() => {
      this.#wake = undefined;
    });
  }

  /** Removes the listeners, so nothing keeps the process alive. */
  dispose(): void {
    for (const [signal, listener] of this.#listeners) {
      Deno.removeSignalListener(signal, listener);
    }
    this.#listeners = [];
  }
}

/**
 * Runs passes until `maxRuns` is reached or a signal arrives, printing one
 * line per pass; returns the process exit code.
 */
export async function runLoop(options: LoopOptions): Promise<number> {
  const stop = new StopSignal(["SIGINT", "SIGTERM"]);
  // What the passes logged last: a problem found on every pass is logged when it changes.
  const changes = new LogChanges();
  try {
    let runs = 0;
    let lastCode = 0;
    while (stop.received === undefined) {
      const started = performance.now();
      const line = await runPass(options, changes);
      processIo.stdout(JSON.stringify(line) + "\n");
      runs++;
      lastCode = line.exit_code;
      if (options.maxRuns !== undefined && runs >= options.maxRuns) {
        return lastCode;
      }
      const elapsedMs = performance.now() - started;
      const waitMs = options.intervalS * 1000 - elapsedMs;
      if (waitMs <= 0) {
        processIo.stderr(
          `validate-loop: the pass took ${
            (elapsedMs / 1000).toFixed(1)
          } s, longer than --interval ${options.intervalS} s; starting the next one now\n`,
        );
      }
      await stop.sleep(waitMs);
    }
    processIo.stderr(
      `validate-loop: ${stop.received} received, stopped after ${runs} pass${runs === 1 ? "" : "es"}\n`,
    );
    return 0;
  } finally {
    stop.dispose();
  }
}

async function run(args: string[]): Promise<number> {
  let options: LoopOptions | "help";
  try {
    options = await parseLoopArgs(args, (name) => Deno.env.get(name));
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    processIo.stderr(`validate-loop: ${err.message} (see --help)\n`);
    return 2;
  }
  if (options === "help") {
    processIo.stdout(USAGE);
    return 0;
  }
  return await runLoop(options);
}

if (import.meta.main) {
  Deno.exit(await run(Deno.args));
}
