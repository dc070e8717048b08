/**
 * The concurrency harness, shared by `tests/race_test.ts` (seconds in CI) and
 * `deno task torture` (minutes): commit, gc, scan and resume --repair
 * processes racing on one root, then the invariants checked.
 */

import { ckptkitFlags, REPO } from "./_helpers.ts";
import { readLatest } from "../src/core/latest.ts";
import { listRoot } from "../src/core/root.ts";
import { validateCheckpoint } from "../src/core/validate.ts";

/** What the race measured. */
export interface RaceFigures {
  processes: number;
  operations: number;
  byOperation: Record<string, number>;
  /** Exits that are documented outcomes of a race (lock timeout, problems seen mid-gc). */
  expectedFailures: number;
  violations: string[];
  durationS: number;
}

/** Options of {@linkcode runRace}. */
export interface RaceOptions {
  root: string;
  /** The race lasts at least this long... */
  durationS: number;
  /** ...and until each writer committed this many times and gc, scan and resume ran this many times each (default 0). */
  minRounds?: number;
  writers?: number;
}

const DOCUMENTED: Record<string, number[]> = {
  write: [0],
  gc: [0],
  scan: [0, 1], // 1: a stale staging or a checkpoint gone mid-scan is reported
  resume: [0, 3],
};

/** Races writers, gc, scan and resume --repair on `root` for `durationS` seconds. */
export async function runRace(options: RaceOptions): Promise<RaceFigures> {
  const started = performance.now();
  const deadline = Date.now() + options.durationS * 1000;
  const writers = options.writers ?? 2;
  const minRounds = options.minRounds ?? 0;
  // Counts, not seconds, decide when a race has run enough: a busy machine only makes it last longer.
  let writersRunning = writers;
  const others = () => writersRunning > 0 || Date.now() < deadline;
  const figures: RaceFigures = {
    processes: writers + 3,
    operations: 0,
    byOperation: {},
    expectedFailures: 0,
    violations: [],
    durationS: 0,
  };
  const committed = new Set<string>();
  await Deno.mkdir(options.root, { recursive: true });
  // Until the first commit, nothing marks the folder as a root, and gc rightly refuses it (exit 2, not_a_root).
  const run = async (kind: string, args: string[], beforeAnyCommit = false) => {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--quiet", ...ckptkitFlags(), `${REPO}/cli.ts`, ...args, "--log-level", "error"],
      stdout: "piped",
      stderr: "piped",
    }).output();
    figures.operations++;
    figures.byOperation[kind] = (figures.byOperation[kind] ?? 0) + 1;
    const stderr = new TextDecoder().decode(out.stderr);
    if (/^\s+at |Uncaught|panicked/m.test(stderr)) figures.violations.push(`${kind} crashed: ${stderr.slice(0, 300)}`);
    if (!DOCUMENTED[kind].includes(out.code)) {
      if (out.code === 4 && /\[lock_timeout\]/.test(stderr)) figures.expectedFailures++;
      else if (!(beforeAnyCommit && out.code === 2 && /\[not_a_root\]/.test(stderr))) {
        figures.violations.push(`${kind} exited ${out.code}: ${stderr.trim().split("\n").at(-1)}`);
      }
    }
    return out;
  };
  const loops: Promise<void>[] = [];
  for (let w = 0; w < writers; w++) {
    loops.push((async () => {
      for (let i = 0; Date.now() < deadline || i < minRounds; i++) {
        const step = (i + 1) * writers + w; // disjoint steps per writer
        const out = await run("write", [
          "write",
          "--root",
          options.root,
          "--step",
          String(step),
          "--files",
          "2",
          "--file-size",
          "64KiB",
          "--lock-timeout",
          "30s",
        ]);
        if (out.code === 0) committed.add(`step-${step}`);
      }
      writersRunning--;
    })());
  }
  loops.push((async () => {
    for (let i = 0; others() || i < minRounds; i++) {
      const beforeAnyCommit = committed.size === 0;
      await run(
        "gc",
        ["gc", options.root, "--keep-last", "3", "--keep-every", "10", "--lock-timeout", "30s"],
        beforeAnyCommit,
      );
    }
  })());
  loops.push((async () => {
    for (let i = 0; others() || i < minRounds; i++) await run("scan", ["scan", options.root, "--fast"]);
  })());
  loops.push((async () => {
    for (let i = 0; others() || i < minRounds; i++) {
      const out = await run("resume", ["resume", options.root, "--repair", "--lock-timeout", "30s"]);
      const path = new TextDecoder().decode(out.stdout).trim();
      if (out.code === 0 && !(await Deno.lstat(path).then(() => true, () => false))) {
        // gc may delete an older choice after resume printed it only if it was not the newest valid; flag it.
        const listing = await listRoot(options.root);
        if (listing.checkpoints[0] && path.endsWith(`/${listing.checkpoints[0].name}`)) {
          figures.violations.push(`resume chose ${path}, which vanished while newest`);
        }
      }
    }
  })());
  await Promise.all(loops);

  const listing = await listRoot(options.root);
  const present = new Set(listing.checkpoints.map((c) => c.name));
  for (const checkpoint of listing.checkpoints) {
    if (!(await validateCheckpoint(checkpoint.path)).ok) figures.violations.push(`${checkpoint.name} is invalid`);
  }
  const newest = [...committed].sort((a, b) => Number(b.slice(5)) - Number(a.slice(5))).slice(0, 3);
  for (const name of newest) if (!present.has(name)) figures.violations.push(`lost ${name}, one of the 3 newest`);
  for (const name of committed) {
    if (Number(name.slice(5)) % 10 === 0 && !present.has(name)) figures.violations.push(`lost ${name} (keep-every 10)`);
  }
  const latest = await readLatest(options.root);
  if (committed.size > 0 && (latest.state !== "ok" || !present.has(latest.name!))) {
    figures.violations.push(`latest is ${latest.state} ${latest.name ?? ""}`);
  }
  figures.durationS = Math.round((performance.now() - started) / 100) / 10;
  return figures;
}

/** One line of figures. */
export function formatRaceFigures(f: RaceFigures): string {
  return `race: ${f.processes} processes, ${f.operations} operations (` +
    Object.entries(f.byOperation).map(([op, n]) => `${op} ${n}`).join(", ") +
    `) in ${f.durationS} s, ${f.violations.length} failures, ${f.expectedFailures} lock timeouts`;
}
