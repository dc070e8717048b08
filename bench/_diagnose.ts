/**
 * Measurements that explain a missed target: ckptkit's own in-process
 * durations (`--json`), strace summaries, V8 CPU profiles, the npm files
 * loaded at start-up, the module-loading cost of each dependency, and
 * in-process probes of one hashing stream and of the hash pool's start-up.
 *
 * @module
 */

import { join } from "node:path";
import denoJson from "../deno.json" with { type: "json" };
import { capture, ckptkitArgv, ckptkitFlags, CONFIG, mustRun, mustShell, REPO, shellQuote } from "./_process.ts";
import { type Case, type Measurement, median, timeGroup, type Timer } from "./_timing.ts";
import type { HashProbe } from "./_probe_hash.ts";
import type { WorkerProbe } from "./_probe_worker.ts";

/** One line of an `strace -c` summary. */
export interface StraceRow {
  syscall: string;
  seconds: number;
  calls: number;
  errors: number;
}

/** An `strace -c -f` summary: the busiest syscalls and the totals. */
export interface StraceSummary {
  /** The rows, busiest first. */
  rows: StraceRow[];
  totalCalls: number;
  totalSeconds: number;
  /** The strace options used, for the report. */
  options: string;
}

/**
 * Runs `argv` under `strace -c -f` (plus `extra` options) and parses the
 * summary. Without `-w`, the seconds are system CPU time spent in each call,
 * summed over threads; with `-w`, wall time in the call.
 */
export async function straceSummary(
  strace: string,
  argv: string[],
  scratch: string,
  extra: string[] = [],
): Promise<StraceSummary> {
  const out = join(scratch, `strace-${crypto.randomUUID()}.txt`);
  const options = ["-c", "-f", ...extra];
  const run = await capture(strace, [...options, "-o", out, ...argv]);
  if (run.code !== 0) throw new Error(`strace ${argv.join(" ")} exited ${run.code}\n${run.stderr}`);
  const rows: StraceRow[] = [];
  let totalCalls = 0;
  let totalSeconds = 0;
  for (const line of (await Deno.readTextFile(out)).split("\n")) {
    // "% time     seconds  usecs/call     calls    errors syscall"; errors may be blank.
    const match = /^\s*([\d.]+)\s+([\d.]+)\s+(\d+)\s+(\d+)\s+(\d+\s+)?(\S+)\s*$/.exec(line);
    if (!match) continue;
    const row = {
      syscall: match[6],
      seconds: Number(match[2]),
      calls: Number(match[4]),
      errors: Number(match[5] ?? 0),
    };
    if (row.syscall === "total") {
      totalCalls = row.calls;
      totalSeconds = row.seconds;
    } else {
      rows.push(row);
    }
  }
  return { rows, totalCalls, totalSeconds, options: options.join(" ") };
}

/** Which threads made a run's full-size reads. */
export interface ReadThreads {
  /** Reads that returned exactly `chunkBytes`. */
  reads: number;
  chunkBytes: number;
  /** Distinct threads that made them. */
  threads: number;
  /** How many of them the main (JavaScript) thread made. */
  onMain: number;
}

/**
 * Runs `argv` under `strace -f -e trace=read` and counts which threads made
 * the reads of exactly `chunkBytes` (the hashing loop's reads); the first
 * thread in the trace is the main thread.
 */
export async function readThreads(
  strace: string,
  argv: string[],
  chunkBytes: number,
  scratch: string,
): Promise<ReadThreads> {
  const out = join(scratch, `reads-${crypto.randomUUID()}.txt`);
  const run = await capture(strace, ["-f", "-e", "trace=read", "-o", out, ...argv]);
  if (run.code !== 0) throw new Error(`strace ${argv.join(" ")} exited ${run.code}\n${run.stderr}`);
  const lines = (await Deno.readTextFile(out)).split("\n");
  const main = /^(\d+)/.exec(lines[0] ?? "")?.[1];
  const byThread = new Map<string, number>();
  const suffix = `, ${chunkBytes}) = ${chunkBytes}`;
  for (const line of lines) {
    if (!line.endsWith(suffix)) continue;
    const tid = /^(\d+)/.exec(line)?.[1];
    if (tid) byThread.set(tid, (byThread.get(tid) ?? 0) + 1);
  }
  return {
    reads: [...byThread.values()].reduce((sum, n) => sum + n, 0),
    chunkBytes,
    threads: byThread.size,
    onMain: main ? byThread.get(main) ?? 0 : 0,
  };
}

/** Which npm packages a run loads, from the files it opens. */
export interface NpmFiles {
  /** Distinct .js/.cjs/.mjs files opened from the npm cache. */
  total: number;
  /** Opens of such files, repeats included (each worker loads its own modules). */
  opens: number;
  /** Files per package, most first. */
  byPackage: [string, number][];
}

/** Counts the npm module files `argv` opens (strace of openat), by package. */
export async function npmFilesLoaded(strace: string, argv: string[], scratch: string): Promise<NpmFiles> {
  const out = join(scratch, `openat-${crypto.randomUUID()}.txt`);
  const run = await capture(strace, ["-f", "-e", "trace=openat", "-o", out, ...argv]);
  if (run.code !== 0) throw new Error(`strace ${argv.join(" ")} exited ${run.code}\n${run.stderr}`);
  const files = new Set<string>();
  const byPackage = new Map<string, number>();
  let opens = 0;
  for (const line of (await Deno.readTextFile(out)).split("\n")) {
    if (/= -1 /.test(line)) continue;
    const path = /openat\([^,]+, "([^"]+)"/.exec(line)?.[1];
    const pkg = path && /\/registry\.npmjs\.org\/((?:@[^/]+\/)?[^/]+)\/[^/]+\/.+\.[cm]?js$/.exec(path)?.[1];
    if (!path || !pkg) continue;
    opens++;
    if (files.has(path)) continue;
    files.add(path);
    byPackage.set(pkg, (byPackage.get(pkg) ?? 0) + 1);
  }
  return { total: files.size, opens, byPackage: [...byPackage].sort((a, b) => b[1] - a[1]) };
}

/**
 * The "Top 10" line of a V8 CPU profile of the CLI (`deno run --cpu-prof
 * --cpu-prof-md`): the functions with the most self time.
 */
export async function cpuProfileTop(cliArgs: string[], scratch: string): Promise<string | null> {
  const dir = join(scratch, `cpu-prof-${crypto.randomUUID()}`);
  await Deno.mkdir(dir);
  const argv = ckptkitArgv();
  await capture(argv[0], [
    "run",
    "--cpu-prof",
    "--cpu-prof-md",
    `--cpu-prof-dir=${dir}`,
    ...argv.slice(2),
    ...cliArgs,
  ]);
  for await (const entry of Deno.readDir(dir)) {
    if (!entry.name.endsWith(".md")) continue;
    const text = await Deno.readTextFile(join(dir, entry.name));
    const top = /^\*\*Top 10:\*\*\s*(.+)$/m.exec(text)?.[1];
    const duration = /^\| ([\d.]+ms) \| \d+ \|/m.exec(text)?.[1];
    if (top) return `${duration ? `${duration} profiled; ` : ""}${top.trim()}`;
  }
  return null;
}

/**
 * Runs the CLI with `--json` `repeats` times and returns the median of the
 * duration it reports itself (`pick` reads it from the JSON document) and of
 * the wall time around the process: their difference is start-up and exit.
 */
export async function inProcessSeconds(
  cliArgs: string[],
  pick: (doc: Record<string, unknown>) => unknown,
  repeats = 3,
  prepare?: string,
): Promise<{ inProcess: number; wall: number; doc: Record<string, unknown> }> {
  const argv = ckptkitArgv();
  const inside: number[] = [];
  const walls: number[] = [];
  let doc: Record<string, unknown> = {};
  for (let i = 0; i < repeats; i++) {
    if (prepare) await mustShell(prepare);
    const started = performance.now();
    const out = await capture(argv[0], [...argv.slice(1), ...cliArgs, "--json", "--log-level", "silent"]);
    walls.push((performance.now() - started) / 1000);
    if (out.code !== 0) throw new Error(`ckptkit ${cliArgs.join(" ")} exited ${out.code}\n${out.stderr}`);
    doc = JSON.parse(out.stdout) as Record<string, unknown>;
    const seconds = pick(doc);
    if (typeof seconds !== "number") throw new Error(`no duration in the JSON of ckptkit ${cliArgs.join(" ")}`);
    inside.push(seconds);
  }
  return { inProcess: median(inside), wall: median(walls), doc };
}

/** Where a commit's time goes, medians over a few runs. */
export interface CommitBreakdown {
  /** Wall time around the process. */
  wall: number;
  /** `duration_s` of `ckptkit commit --json`: everything inside the process. */
  inProcess: number;
  /** The manifest's `write_duration_s`: listing and hashing (with the per-file fsync). */
  hashing: number;
}

/**
 * Runs `ckptkit commit … --json` `repeats` times, each after `prepare`, and
 * splits its time into start-up and exit (wall − in-process), listing and
 * hashing (the manifest's `write_duration_s`) and the rest (manifest,
 * folder fsyncs, lock, rename, `latest`, state).
 */
export async function commitBreakdown(
  cliArgs: string[],
  prepare: string,
  manifestPath: string,
  repeats = 3,
): Promise<CommitBreakdown> {
  const walls: number[] = [];
  const inside: number[] = [];
  const hashing: number[] = [];
  for (let i = 0; i < repeats; i++) {
    const run = await inProcessSeconds(cliArgs, (doc) => doc.duration_s, 1, prepare);
    walls.push(run.wall);
    inside.push(run.inProcess);
    const manifest = JSON.parse(await Deno.readTextFile(manifestPath)) as { write_duration_s: number };
    hashing.push(manifest.write_duration_s);
  }
  return { wall: median(walls), inProcess: median(inside), hashing: median(hashing) };
}

/** Whether the sources import their dependencies through one re-exporting module. */
export interface BarrelInfo {
  /** `npm:` packages `src/deps.ts` re-exports (0 when there is no such file). */
  packages: number;
  /** Whether `src/fs/hashing.ts` (which every hash worker loads) imports from it. */
  hashingUsesIt: boolean;
  /** How many modules under src/ import from it. */
  importers: number;
}

/** Reads src/deps.ts and who imports it: a barrel evaluates every package it re-exports. */
export async function barrelInfo(): Promise<BarrelInfo> {
  const read = (path: string) => Deno.readTextFile(join(REPO, path)).catch(() => "");
  const deps = await read("src/deps.ts");
  const packages = new Set([...deps.matchAll(/from\s+"npm:((?:@[^/"]+\/)?[^@"]+)@/g)].map((m) => m[1])).size;
  const usesBarrel = /from\s+"\.{1,2}\/(?:src\/)?deps\.ts"/;
  let importers = 0;
  for (const dir of ["src", "src/cli", "src/core", "src/fs", "src/metrics", "src/multinode"]) {
    try {
      for await (const entry of Deno.readDir(join(REPO, dir))) {
        if (entry.isFile && entry.name.endsWith(".ts") && usesBarrel.test(await read(`${dir}/${entry.name}`))) {
          importers++;
        }
      }
    } catch {
      // No such folder.
    }
  }
  return { packages, hashingUsesIt: usesBarrel.test(await read("src/fs/hashing.ts")), importers };
}

/** In-process probe of one hashing stream on `file` (see `_probe_hash.ts`). */
export async function hashProbe(file: string, repeats: number): Promise<HashProbe> {
  const out = await mustRun(Deno.execPath(), [
    "run",
    ...ckptkitFlags(),
    join(REPO, "bench", "_probe_hash.ts"),
    file,
    String(repeats),
  ]);
  return JSON.parse(out.stdout) as HashProbe;
}

/** In-process probe of the hash pool's start-up (see `_probe_worker.ts`). */
export async function workerProbe(repeats: number): Promise<WorkerProbe> {
  const out = await mustRun(Deno.execPath(), [
    "run",
    ...ckptkitFlags(),
    join(REPO, "bench", "_probe_worker.ts"),
    String(repeats),
  ]);
  return JSON.parse(out.stdout) as WorkerProbe;
}

/**
 * The `npm:` specifier the repository uses for package `name`: from
 * deno.json's import map, else from `src/deps.ts`, else unversioned.
 */
async function npmSpecifier(name: string): Promise<string> {
  const mapped = (denoJson as { imports?: Record<string, string> }).imports?.[name];
  if (mapped) return mapped;
  const deps = await Deno.readTextFile(join(REPO, "src", "deps.ts")).catch(() => "");
  const escaped = name.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");
  return new RegExp(`"(npm:${escaped}@[^"]+)"`).exec(deps)?.[1] ?? `npm:${name}`;
}

/** What a probe script of the start-up breakdown imports (`npm:` names are resolved). */
const STARTUP_PROBES: { id: string; name: string; imports: string[] }[] = [
  { id: "p_empty", name: "empty script (Deno alone)", imports: [] },
  { id: "p_node_crypto", name: "import node:crypto", imports: ["node:crypto"] },
  { id: "p_commander", name: "import commander (extra-typings)", imports: ["npm:@commander-js/extra-typings"] },
  { id: "p_zod", name: "import zod", imports: ["npm:zod"] },
  { id: "p_yaml", name: "import yaml", imports: ["npm:yaml"] },
  { id: "p_prom", name: "import prom-client", imports: ["npm:prom-client"] },
  { id: "p_hash_wasm", name: "import hash-wasm", imports: ["npm:hash-wasm"] },
  {
    id: "p_program",
    name: "import src/cli/program.ts (what every command loads today)",
    imports: ["src/cli/program.ts"],
  },
  {
    id: "p_lazy_validate",
    name: "import commander, zod, canonicalize, node:crypto (what `validate` needs)",
    imports: ["npm:@commander-js/extra-typings", "npm:zod", "npm:canonicalize", "node:crypto"],
  },
];

/**
 * Times `deno run` of scripts that only import one dependency (or the CLI's
 * whole module graph), with the CLI's flags and deno.json: what each costs
 * at start-up and what a CLI that loads modules lazily would pay.
 */
export async function startupBreakdown(work: string, rounds: number, timer: Timer): Promise<Measurement[]> {
  const dir = join(work, "probes");
  await Deno.mkdir(dir, { recursive: true });
  const deno = [Deno.execPath(), "run", ...ckptkitFlags(), "--config", CONFIG].map(shellQuote).join(" ");
  const cases: Case[] = [];
  for (const probe of STARTUP_PROBES) {
    const path = join(dir, `${probe.id}.ts`);
    const lines: string[] = [];
    for (const spec of probe.imports) {
      const resolved = spec.startsWith("src/")
        ? `file://${join(REPO, spec)}`
        : spec.startsWith("npm:")
        ? await npmSpecifier(spec.slice(4))
        : spec;
      lines.push(`import ${JSON.stringify(resolved)};`);
    }
    await Deno.writeTextFile(path, `${lines.join("\n")}\n`);
    cases.push({
      id: probe.id,
      name: probe.name,
      command: `${deno} ${shellQuote(path)}`,
      bytes: null,
      runsPerRound: 5,
    });
  }
  return await timeGroup("start-up breakdown (module loading)", cases, rounds, timer);
}
