/**
 * What else the machine is doing while the benchmark runs. Before every
 * round the benchmark looks at the CPU time the whole machine and every
 * process used over one second while the benchmark itself sat idle; when
 * something else is busy (a test suite, another benchmark) it waits for the
 * machine to go quiet, up to a limit, and the report says what it saw.
 *
 * @module
 */

import { capture, progress } from "./_process.ts";

/** One look at the machine over one second. */
export interface LoadSample {
  /** What the benchmark was about to do. */
  label: string;
  /** 1-minute load average. */
  load1: number;
  /** Cores' worth of CPU the machine used during the second (the benchmark was idle). */
  busyCores: number;
  /** Command lines of the processes outside the benchmark that used the CPU during the second. */
  others: string[];
}

/** Below this many cores' worth of CPU used by others, the machine counts as idle. */
const IDLE_CORES = 0.2;
/** A process using at least this share of one core during the second is named. */
const BUSY_SHARE = 0.05;

/** Per-process CPU ticks and the machine's, at one instant. */
interface Snapshot {
  /** utime + stime in clock ticks, and parent, by pid. */
  procs: Map<number, { ticks: number; ppid: number }>;
  /** Sum of the first `cpu` line of /proc/stat, and its idle + iowait part. */
  total: number;
  idle: number;
  cores: number;
}

async function snapshot(): Promise<Snapshot | null> {
  // Deno reads /proc only under --allow-all, which the bench task does not grant; cat may.
  const out = await capture("sh", ["-c", "cat /proc/stat; cat /proc/[0-9]*/stat 2>/dev/null"]).catch(() => null);
  if (!out) return null;
  const procs = new Map<number, { ticks: number; ppid: number }>();
  let total = 0;
  let idle = 0;
  let cores = 0;
  for (const line of out.stdout.split("\n")) {
    if (line.startsWith("cpu ")) {
      const fields = line.trim().split(/\s+/).slice(1).map(Number);
      total = fields.reduce((sum, n) => sum + n, 0);
      idle = fields[3] + (fields[4] ?? 0);
    } else if (/^cpu\d/.test(line)) {
      cores++;
    } else {
      // "pid (comm) state ppid … utime stime …"; comm may hold spaces and parentheses.
      const close = line.lastIndexOf(")");
      const pid = Number(line.slice(0, line.indexOf(" ")));
      if (close < 0 || !Number.isInteger(pid)) continue;
      const rest = line.slice(close + 2).split(" ");
      procs.set(pid, { ppid: Number(rest[1]), ticks: Number(rest[11]) + Number(rest[12]) });
    }
  }
  return { procs, total, idle, cores };
}

/** This process, its ancestors and its descendants. */
function ourTree(procs: Map<number, { ppid: number }>): Set<number> {
  const ours = new Set([Deno.pid]);
  for (let pid = procs.get(Deno.pid)?.ppid; pid && pid > 1 && !ours.has(pid); pid = procs.get(pid)?.ppid) {
    ours.add(pid);
  }
  for (let grew = true; grew;) {
    grew = false;
    for (const [pid, { ppid }] of procs) {
      if (!ours.has(pid) && ours.has(ppid)) {
        ours.add(pid);
        grew = true;
      }
    }
  }
  return ours;
}

/** A command line without its program's folder and permission flags, cut to a readable length. */
function shorten(args: string): string {
  const words = args.split(/\s+/).filter((word) => !/^--(allow|deny|quiet)/.test(word));
  if (words.length > 0) words[0] = words[0].slice(words[0].lastIndexOf("/") + 1);
  const text = words.join(" ");
  return text.length > 70 ? `${text.slice(0, 70)}…` : text;
}

/** Looks at the machine for one second while the benchmark does nothing. */
export async function sampleLoad(label: string): Promise<LoadSample> {
  const loadavg = await capture("cat", ["/proc/loadavg"]).catch(() => null);
  const load1 = Number(loadavg?.stdout.split(" ")[0] ?? NaN);
  const before = await snapshot();
  await new Promise((resolve) => setTimeout(resolve, 1000));
  const after = await snapshot();
  if (!before || !after || after.total <= before.total) return { label, load1, busyCores: NaN, others: [] };
  const elapsed = after.total - before.total;
  const busyCores = ((elapsed - (after.idle - before.idle)) / elapsed) * after.cores;
  // Ticks per core-second: total ticks over the second, per core.
  const ticksPerCore = elapsed / after.cores;
  const ours = ourTree(after.procs);
  const busyPids = [...after.procs]
    .filter(([pid, { ticks }]) =>
      !ours.has(pid) && (ticks - (before.procs.get(pid)?.ticks ?? 0)) >= BUSY_SHARE * ticksPerCore
    )
    .map(([pid]) => pid);
  const others: string[] = [];
  if (busyPids.length > 0) {
    const ps = await capture("ps", ["-o", "args=", "-p", busyPids.join(",")]).catch(() => null);
    for (const line of (ps?.stdout ?? "").split("\n")) if (line.trim()) others.push(shorten(line.trim()));
  }
  return { label, load1, busyCores, others };
}

/**
 * Samples the machine until nothing else is busy (others below
 * {@linkcode IDLE_CORES} cores), waiting 5 s between looks, for at most
 * `maxSeconds`. Returns every sample taken and the seconds spent waiting.
 */
export async function waitForIdle(
  label: string,
  maxSeconds: number,
): Promise<{ samples: LoadSample[]; waitedS: number }> {
  let started: number | undefined;
  const samples: LoadSample[] = [];
  for (;;) {
    const sample = await sampleLoad(label);
    samples.push(sample);
    // The first look is not waiting; everything after it is.
    started ??= performance.now();
    const waitedS = (performance.now() - started) / 1000;
    if (!(sample.busyCores >= IDLE_CORES) || waitedS >= maxSeconds) return { samples, waitedS };
    progress(
      `machine busy before ${label} (${sample.busyCores.toFixed(2)} cores: ${
        sample.others.join("; ") || "kernel"
      }); waiting`,
    );
    await new Promise((resolve) => setTimeout(resolve, 5000));
  }
}

/**
 * Watches the machine before every round, waiting for it to go idle while a
 * total budget of waiting lasts, and keeps every sample for the report.
 */
export class LoadWatch {
  readonly samples: LoadSample[] = [];
  waitedS = 0;
  readonly #budgetS: number;

  /** A watch that waits at most `budgetS` seconds over the whole run. */
  constructor(budgetS: number) {
    this.#budgetS = budgetS;
  }

  /** Waits for an idle machine (within the remaining budget) before `label`. */
  async beforeRound(label: string): Promise<void> {
    const { samples, waitedS } = await waitForIdle(label, Math.max(0, this.#budgetS - this.waitedS));
    this.samples.push(...samples);
    this.waitedS += waitedS;
  }
}

/** A summary of the samples for the report, and a warning when rounds ran on a busy machine. */
export function describeLoad(
  samples: LoadSample[],
  waitedS: number,
): { line: string; warning: string | null } {
  const last = new Map<string, LoadSample>();
  // The sample each round actually started after is the last one taken for it.
  for (const sample of samples) last.set(sample.label, sample);
  const started = [...last.values()];
  const busy = started.filter((s) => s.busyCores >= IDLE_CORES);
  const loads = samples.map((s) => s.load1).filter((n) => Number.isFinite(n));
  const line = `before each of ${started.length} rounds the benchmark watched the machine for 1 s while idle ` +
    `itself and waited for other work to stop (${waitedS.toFixed(0)} s of waiting in all); ${
      started.length - busy.length
    } of ${started.length} rounds started on an idle machine` +
    (loads.length > 0
      ? `; 1-minute load average ${Math.min(...loads).toFixed(2)}–${Math.max(...loads).toFixed(2)}`
      : "");
  const seen = new Map<string, number>();
  for (const sample of samples) {
    for (const command of new Set(sample.others)) seen.set(command, (seen.get(command) ?? 0) + 1);
  }
  if (busy.length === 0 && seen.size === 0) return { line, warning: null };
  const top = [...seen].sort((a, b) => b[1] - a[1]).slice(0, 5).map(([command]) => `\`${command}\``);
  return {
    line,
    warning: busy.length === 0
      ? `Other work ran on the machine during this run (${
        top.join(", ")
      }); the benchmark waited for it to stop before every round, but it may have started again within one.`
      : `**${busy.length} of ${started.length} rounds started while other work used the CPU** (${
        busy.map((s) => s.label).join(", ")
      }; seen: ${
        top.join(", ") || "kernel threads"
      }). Their load is in these numbers; rerun on an idle machine for representative figures.`,
  };
}
