/**
 * Timing of the benchmark's commands: hyperfine (or a built-in fallback),
 * interleaved in rounds so that every command of a group sees the same
 * machine, and peak RSS with GNU time.
 *
 * @module
 */

import { join } from "node:path";
import { capture, childEnv, mustRun, progress, REPO } from "./_process.ts";

/** One timed command. */
export interface Case {
  /** Key used by the targets and findings. */
  id: string;
  /** Label in the tables. */
  name: string;
  /** Shell command line (run by hyperfine with `sh -c`). */
  command: string;
  /** Untimed shell command run before every run (hyperfine `--prepare`). */
  prepare?: string;
  /** Checkpoint bytes the command reads, for MB/s; null when MB/s means nothing. */
  bytes: number | null;
  /** Timed runs in each round (default 1; more for commands of a few ms). */
  runsPerRound?: number;
  /** Take part in at most this many rounds (slow baselines; default every round). */
  rounds?: number;
  /** Untimed runs before the first round (default 1; 0 for slow commands whose data is already cached). */
  warmup?: number;
}

/** A case with its wall times. */
export interface Measurement extends Case {
  /** Every timed run, in seconds. */
  times: number[];
  /** The same, by round (empty for rounds the case sat out). */
  perRound: number[][];
  median: number;
  min: number;
  max: number;
  /** Mean user + system CPU seconds per run (NaN with the built-in timer). */
  cpu: number;
}

/** How commands are timed. */
export interface Timer {
  /** Path of hyperfine, or null for the built-in timer. */
  hyperfine: string | null;
  /** Folder for hyperfine's JSON exports. */
  scratch: string;
  /** Called before every round with a label such as "validation, round 2" (waits for an idle machine). */
  beforeRound?: (label: string) => Promise<void>;
}

/** The middle value of `values` (the mean of the two middle ones for an even count). */
export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/** What one hyperfine invocation measured. */
interface Sample {
  times: number[];
  /** user + system seconds, summed over the runs. */
  cpuTotal: number;
}

/** Reads the one result of a hyperfine `--export-json` file. */
function parseHyperfineJson(text: string): Sample {
  const doc: unknown = JSON.parse(text);
  const results = typeof doc === "object" && doc !== null && "results" in doc ? doc.results : null;
  const first: unknown = Array.isArray(results) ? results[0] : null;
  if (typeof first !== "object" || first === null) throw new Error("hyperfine JSON has no results");
  const record = first as Record<string, unknown>;
  const times = record.times;
  if (!Array.isArray(times) || !times.every((t) => typeof t === "number")) {
    throw new Error("hyperfine JSON has no times");
  }
  const user = typeof record.user === "number" ? record.user : NaN;
  const system = typeof record.system === "number" ? record.system : NaN;
  return { times, cpuTotal: (user + system) * times.length };
}

/**
 * One hyperfine invocation: `warmup` untimed runs, then `runs` timed runs,
 * each after `prepare`. hyperfine fails on a non-zero exit, so a command that
 * reports a problem cannot pass for a fast one.
 */
async function hyperfineOnce(
  hyperfine: string,
  item: Case,
  runs: number,
  warmup: number,
  jsonPath: string,
): Promise<Sample> {
  const args = ["--runs", String(runs), "--warmup", String(warmup), "--style", "none", "--export-json", jsonPath];
  if (item.prepare) args.push("--prepare", item.prepare);
  args.push("--command-name", item.name, item.command);
  await mustRun(hyperfine, args);
  return parseHyperfineJson(await Deno.readTextFile(jsonPath));
}

/** Runs a command line once under `sh -c`, output discarded, and returns its wall time in seconds. */
async function timeOnce(command: string): Promise<number> {
  const started = performance.now();
  const { code } = await new Deno.Command("sh", {
    args: ["-c", command],
    cwd: REPO,
    clearEnv: true,
    env: childEnv(),
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).output();
  const seconds = (performance.now() - started) / 1000;
  if (code !== 0) throw new Error(`exited ${code}: ${command}`);
  return seconds;
}

/** The fallback when hyperfine is missing: the same protocol, timed here. */
async function builtinOnce(item: Case, runs: number, warmup: number): Promise<Sample> {
  const times: number[] = [];
  for (let i = 0; i < warmup + runs; i++) {
    if (item.prepare) await mustRun("sh", ["-c", item.prepare]);
    const seconds = await timeOnce(item.command);
    if (i >= warmup) times.push(seconds);
  }
  return { times, cpuTotal: NaN };
}

/**
 * Times a group of cases in `rounds` interleaved rounds: each round runs
 * every case once (or `runsPerRound` times), so that a machine that speeds
 * up or slows down during the benchmark (a shared VM does) affects every case
 * of the group alike and their ratios stay meaningful. Within a round the
 * cases run in `order` (ids; default the given order), so that commands
 * compared by a target can run back to back; the results keep the given
 * order. Warm-up runs happen in the first round.
 */
export async function timeGroup(
  title: string,
  cases: Case[],
  rounds: number,
  timer: Timer,
  order: string[] = [],
): Promise<Measurement[]> {
  progress(`timing ${title}: ${cases.length} commands, ${rounds} interleaved rounds`);
  const rank = (item: Case) => {
    const at = order.indexOf(item.id);
    return at === -1 ? order.length + cases.indexOf(item) : at;
  };
  const runOrder = [...cases].sort((a, b) => rank(a) - rank(b));
  const samples = new Map(cases.map((item) => [item.id, { perRound: [] as number[][], cpuTotal: 0 }]));
  for (let round = 0; round < rounds; round++) {
    await timer.beforeRound?.(`${title}, round ${round + 1}`);
    for (const item of runOrder) {
      const sample = samples.get(item.id)!;
      if (round >= (item.rounds ?? rounds)) {
        sample.perRound.push([]);
        continue;
      }
      const runs = item.runsPerRound ?? 1;
      const warmup = round === 0 ? item.warmup ?? 1 : 0;
      const result = timer.hyperfine
        ? await hyperfineOnce(timer.hyperfine, item, runs, warmup, join(timer.scratch, `hyperfine-${item.id}.json`))
        : await builtinOnce(item, runs, warmup);
      sample.perRound.push(result.times);
      sample.cpuTotal += result.cpuTotal;
    }
    progress(`  round ${round + 1}/${rounds} done`);
  }
  return cases.map((item) => {
    const { perRound, cpuTotal } = samples.get(item.id)!;
    const times = perRound.flat();
    const result = {
      ...item,
      times,
      perRound,
      median: median(times),
      min: Math.min(...times),
      max: Math.max(...times),
      cpu: cpuTotal / times.length,
    };
    progress(`  ${item.name}: median ${result.median.toFixed(3)} s (${times.length} runs)`);
    return result;
  });
}

/**
 * The ratio `a / b` as the median of per-round ratios (each round's median of
 * `a` over that round's median of `b`, in the rounds both ran), which a
 * machine whose speed drifts from round to round disturbs less than the
 * ratio of the overall medians.
 */
export function pairedRatio(a: Measurement, b: Measurement): number {
  const ratios: number[] = [];
  for (let round = 0; round < Math.min(a.perRound.length, b.perRound.length); round++) {
    if (a.perRound[round].length > 0 && b.perRound[round].length > 0) {
      ratios.push(median(a.perRound[round]) / median(b.perRound[round]));
    }
  }
  return ratios.length > 0 ? median(ratios) : a.median / b.median;
}

/**
 * Peak resident set size in KiB of `argv` under GNU time (`-v`): the median
 * of `repeats` runs, each after the shell command `prepare` if given, or null
 * when the output has no such line. An exit code outside `okCodes` is an error.
 */
export async function peakRssKib(
  time: string,
  argv: string[],
  repeats = 3,
  prepare?: string,
  okCodes: number[] = [0],
): Promise<number | null> {
  const values: number[] = [];
  for (let i = 0; i < repeats; i++) {
    if (prepare) await mustRun("sh", ["-c", prepare]);
    const out = await capture(time, ["-v", ...argv]);
    if (!okCodes.includes(out.code)) throw new Error(`${argv.join(" ")} exited ${out.code}\n${out.stderr}`);
    const match = /Maximum resident set size \(kbytes\): (\d+)/.exec(out.stderr);
    if (!match) return null;
    values.push(Number(match[1]));
  }
  return median(values);
}
