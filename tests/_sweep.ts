/**
 * The crash-at-every-call sweep (issue #12), shared by
 * `tests/crash_sweep_test.ts` (a strided subset in CI) and
 * `deno task torture --sweep` (every call of every command).
 *
 * For each mutating command it enumerates, with `strace -f -y`, the
 * file-system calls the command makes on paths inside its root (and its
 * textfile folder); then, for each call index, reruns the command from a
 * fresh copy of the same setup and kills it right before that call, checks
 * the crash invariants, retries the command (and runs the rest of the
 * sequence, e.g. the other rank), and checks the invariants again.
 *
 * How the kill is placed, and why: strace counts `when=` per syscall AND per
 * tracee (thread), and Deno runs file-system ops on a pool of blocking
 * threads chosen anew on every run, so `inject=fsync:when=5` means "the 5th
 * fsync of whichever thread gets there first", not the 5th of the process.
 * The sweep therefore never relies on a thread's count:
 * - the traced runs use `deno run --seed` (ckptkit's temp names come from
 *   `crypto.randomUUID()`) and a preloaded clock (the writer's staging
 *   folder and gc's trash entries carry `Date.now()`), so every call has the
 *   same path on every run; the retries run the real CLI, without either;
 * - `inject`: when call i is the FIRST call of its syscall on its path, the
 *   kill is `strace -P <path> -e trace=<syscall>
 *   -e inject=<syscall>:signal=KILL:when=1` (with `-P` only calls on that
 *   path count, and the first of them process-wide is the first of its
 *   thread): the signal is delivered on entry, so the call never runs;
 * - `after`: otherwise (the 2nd fsync of the root, a lock rewrite, a path
 *   with a timestamp in it), the crash point "right before call i" is
 *   reached as "right after call i-1 returned": strace delays the return of
 *   every call with call i-1's signature (`delay_exit`), the harness counts
 *   their completion lines in strace's log, which strace writes before the
 *   delay, and SIGKILLs the process (through the stopped thread's id) when
 *   the right one appears.
 * Both are verified: the log must show the intended call killed (inject) or
 * exactly the intended number of completions (after); a kill that did not
 * happen, or happened elsewhere, is counted as a miss, not a crash point
 * (a kill elsewhere is still checked). Only calls on paths inside the root
 * (and the textfile's folder) count: Deno writes its own caches under
 * DENO_DIR, and those writes, like ones on pipes, are no crash point of
 * ckptkit's; any other write outside is reported as a violation.
 *
 * @module
 */

import { ckptkitFlags, cliCommand, REPO, writeStep } from "./_helpers.ts";
import { readLatest } from "../src/core/latest.ts";
import { listRoot } from "../src/core/root.ts";
import { resumeFromRoot } from "../src/core/resume.ts";
import { collectGarbage } from "../src/core/gc.ts";
import { validateCheckpoint } from "../src/core/validate.ts";
import { commitRank } from "../src/multinode/multirank.ts";
import { ERROR_REASONS } from "../src/errors.ts";

/** Syscalls traced; a call is mutating when it is one of these on a path in scope (openat: only for writing). */
const TRACED = [
  "openat",
  "write",
  "pwrite64",
  "writev",
  "pwritev",
  "rename",
  "renameat",
  "renameat2",
  "link",
  "linkat",
  "symlink",
  "symlinkat",
  "unlink",
  "unlinkat",
  "mkdir",
  "mkdirat",
  "rmdir",
  "fsync",
  "fdatasync",
  "ftruncate",
  "truncate",
  "fallocate",
  "copy_file_range",
];

/** How long strace holds a call's return in the `after` method: the harness must kill within it. */
const DELAY_US = 1_000_000;

/** One traced call, parsed from `strace -f -y` output. */
export interface TracedCall {
  /** Position in the trace (all traced calls, in or out of scope). */
  seq: number;
  tid: number;
  name: string;
  /** The path it acts on (resolved against its directory fd). */
  target: string;
  /** What `strace -P` compares with: absolute path arguments and the paths of fd arguments. */
  matchable: string[];
  /** The path to give `-P` to select this call, if one exists. */
  selector: string | null;
  writes: boolean;
  /** The return value as printed (`?` when killed). */
  ret: string;
}

/** A crash point: a mutating call in scope, with how to kill right before it. */
export interface CrashPoint {
  index: number;
  call: TracedCall;
  /** 1-based occurrence of (syscall, selector) among the calls `-P selector` would count. */
  occurrence: number;
  /** Same path and order in a second enumeration run: its selector can be used. */
  reproducible: boolean;
}

/** What a scenario's setup produced. */
export interface Setup {
  root: string;
  /** The command line after `ckptkit`. */
  args: string[];
  /** Folders the command may write into (the root; the textfile's folder). */
  scope: string[];
  /** Commands run after the retry, in order (e.g. the other rank). */
  then?: string[][];
  /** Valid checkpoints the command (or what follows) may delete (gc). */
  mayDelete?: Set<string>;
  /** Checks of a successful end state; each returned string is a violation. */
  verify: (root: string) => Promise<string[]>;
  /** Checkpoint that is corrupt on purpose (not a violation while visible). */
  corrupt?: string;
  /** The setup planted a latest that names nothing (resume --repair): tolerated until a run repairs it. */
  plantedLatest?: string;
}

/** A mutating command of the sweep. */
export interface Scenario {
  name: string;
  setup: (work: string) => Promise<Setup>;
}

/** What the sweep found for one command. */
export interface SweepFigures {
  command: string;
  /** Mutating calls in scope that one run makes. */
  calls: number;
  /** Call indexes tried (all of them in a full sweep). */
  tried: number;
  /** Kills that landed right before the intended call. */
  covered: number;
  byMethod: { inject: number; after: number };
  /** Tried indexes where the kill did not land where intended (no kill, or elsewhere). */
  missed: string[];
  /** What the retry did: "succeeded" or "refused <reason> (exit N)", with counts. */
  retries: Record<string, number>;
  violations: string[];
  /** Crash points whose violations are a known hole of issue #12 (being fixed on other branches), by hole. */
  knownHoles: Record<string, number>;
  /** Violations that are not a known hole. */
  newViolations: string[];
  /** Per crash point: index, call, method, retry outcome. */
  points: string[];
  /** Mutating calls outside the scope and outside Deno's own files. */
  outside: string[];
  /** Calls at a different position in a second enumeration run (concurrent calls swap). */
  orderVaries: number;
}

const decoder = new TextDecoder();

/** Splits strace's argument list at top-level commas (quotes, <fd paths>, brackets respected). */
function splitArgs(text: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let current = "";
  let quoted = false;
  let angle = 0;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i];
    if (quoted) {
      current += ch;
      if (ch === "\\") current += text[++i] ?? "";
      else if (ch === '"') quoted = false;
      continue;
    }
    if (ch === '"') quoted = true;
    else if (ch === "<") angle++;
    else if (ch === ">" && angle > 0) angle--;
    else if ((ch === "{" || ch === "[") && angle === 0) depth++;
    else if ((ch === "}" || ch === "]") && angle === 0) depth--;
    else if (ch === "," && depth === 0 && angle === 0) {
      out.push(current.trim());
      current = "";
      continue;
    }
    current += ch;
  }
  if (current.trim()) out.push(current.trim());
  return out;
}

function unquote(token: string): string | null {
  const m = /^"((?:[^"\\]|\\.)*)"/.exec(token);
  if (!m) return null;
  return m[1].replace(/\\(["\\])/g, "$1");
}

function fdPath(token: string): string | null {
  const m = /^(?:-?\d+|AT_FDCWD)<(.*)>$/.exec(token);
  return m ? m[1] : null;
}

const ABSOLUTE = (p: string | null): p is string => p !== null && p.startsWith("/");

/** Parses one completed call (`name(args) = ret`). */
function parseCall(seq: number, tid: number, text: string): TracedCall | null {
  const m = /^(\w+)\((.*)\)\s+=\s+(.*)$/.exec(text);
  if (!m) return null;
  const [, name, argText, ret] = m;
  if (!TRACED.includes(name)) return null;
  const args = splitArgs(argText);
  const resolve = (dirToken: string | undefined, pathToken: string | undefined): string | null => {
    const path = pathToken === undefined ? null : unquote(pathToken);
    if (path === null) return null;
    if (path.startsWith("/")) return path;
    const dir = dirToken ? fdPath(dirToken) : null;
    return dir ? `${dir}/${path}` : path;
  };
  const matchable: string[] = [];
  for (const token of args) {
    const fd = fdPath(token);
    if (fd !== null && !token.startsWith("AT_FDCWD")) matchable.push(fd);
    const path = unquote(token);
    if (ABSOLUTE(path)) matchable.push(path);
  }
  let target: string | null = null;
  let selector: string | null = null;
  let writes = true;
  switch (name) {
    case "openat":
      target = resolve(args[0], args[1]);
      writes = /O_WRONLY|O_RDWR|O_CREAT|O_TRUNC/.test(args[2] ?? "");
      selector = ABSOLUTE(unquote(args[1] ?? "")) ? unquote(args[1]) : fdPath(args[0]);
      break;
    case "write":
    case "pwrite64":
    case "writev":
    case "pwritev":
    case "fsync":
    case "fdatasync":
    case "ftruncate":
    case "fallocate":
      target = fdPath(args[0]);
      selector = target;
      break;
    case "copy_file_range":
      target = fdPath(args[2]);
      selector = target;
      break;
    case "rename":
    case "link":
    case "symlink":
      target = unquote(args[1]);
      selector = ABSOLUTE(unquote(args[0])) && name === "rename" ? unquote(args[0]) : unquote(args[1]);
      break;
    case "renameat":
    case "renameat2":
    case "linkat":
      target = resolve(args[2], args[3]);
      selector = ABSOLUTE(unquote(args[1])) ? unquote(args[1]) : fdPath(args[0]);
      break;
    case "symlinkat":
      target = resolve(args[1], args[2]);
      selector = ABSOLUTE(unquote(args[2])) ? unquote(args[2]) : fdPath(args[1]);
      break;
    case "unlink":
    case "rmdir":
    case "mkdir":
    case "truncate":
      target = unquote(args[0]);
      selector = target;
      break;
    case "unlinkat":
    case "mkdirat":
      target = resolve(args[0], args[1]);
      selector = ABSOLUTE(unquote(args[1])) ? unquote(args[1]) : fdPath(args[0]);
      break;
  }
  if (target === null) return null;
  if (selector !== null && !matchable.includes(selector)) selector = null;
  return { seq, tid, name, target, matchable, selector, writes, ret: ret.trim() };
}

/** Parses an `strace -f -y -o` log into calls; a call cut by the kill has `ret` "?". */
export function parseTrace(log: string): TracedCall[] {
  const calls: TracedCall[] = [];
  const pending = new Map<number, string>();
  for (const line of log.split("\n")) {
    const m = /^(\d+)\s+(.*)$/.exec(line);
    if (!m) continue;
    const tid = Number(m[1]);
    let text = m[2];
    if (text.startsWith("+++") || text.startsWith("---")) continue;
    const resumed = /^<\.\.\. \w+ resumed>(.*)$/.exec(text);
    if (resumed) {
      const start = pending.get(tid);
      pending.delete(tid);
      if (start === undefined) continue;
      text = start + resumed[1];
    } else if (text.endsWith("<unfinished ...>")) {
      pending.set(tid, text.slice(0, -"<unfinished ...>".length).trimEnd());
      continue;
    }
    const call = parseCall(calls.length, tid, text);
    if (call) calls.push(call);
  }
  // Calls the kill cut short in the middle of another thread's line.
  for (const [tid, start] of pending) {
    const call = parseCall(calls.length, tid, `${start}) = ?`);
    if (call) calls.push(call);
  }
  return calls;
}

const inside = (path: string, dirs: string[]) => dirs.some((d) => path === d || path.startsWith(`${d}/`));

/** Deno's own files and the process's pipes: writes there are not ckptkit's. */
function denoOwn(path: string): boolean {
  const denoDir = Deno.env.get("DENO_DIR") ?? `${Deno.env.get("HOME") ?? "/root"}/.cache/deno`;
  return inside(path, [denoDir]) || /^(pipe|socket|anon_inode):/.test(path) ||
    ["/dev/null", "/dev/tty"].includes(path) || path.startsWith("/dev/pts/");
}

function isMutating(call: TracedCall, scope: string[]): boolean {
  return call.writes && inside(call.target, scope);
}

/**
 * A clock for the traced runs: `Date.now()` starts a day after the sweep's
 * start (so staging folders the setups made are old by it, as a crashed
 * write's would be) and advances by 1 ms per call, so names that carry the time (the library
 * writer's staging folder, gc's trash entries) repeat from run to run, while
 * time still moves forward (lock deadlines still expire).
 */
let clockPreload = "";

async function writeClockPreload(work: string): Promise<void> {
  clockPreload = `${work}/sweep-clock.js`;
  await Deno.writeTextFile(
    clockPreload,
    `{ let next = ${Date.now() + 86_400_000}; Date.now = () => next++; }\n`,
  );
}

/**
 * The argv of the CLI under strace: the compile task's flags, plus `--seed`
 * (ckptkit's temp names come from `crypto.randomUUID()`, which it seeds) and
 * the clock above, so that the paths of one run are those of the next.
 */
function denoArgv(args: string[], seed: boolean): string[] {
  return [
    Deno.execPath(),
    "run",
    "--quiet",
    ...(seed ? ["--seed", "12", "--preload", clockPreload] : []),
    ...ckptkitFlags(),
    `${REPO}/cli.ts`,
    ...args,
  ];
}

function strace(options: string[], args: string[], log: string): Deno.ChildProcess {
  return new Deno.Command("strace", {
    args: ["-f", "-y", "-qq", "-o", log, ...options, ...denoArgv(args, true)],
    clearEnv: true,
    env: { NO_COLOR: "1", HOME: Deno.env.get("HOME") ?? "/root", PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin" },
    cwd: REPO,
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
}

/** Runs the command once under a full trace and returns its calls. */
async function enumerate(setup: Setup, log: string): Promise<{ calls: TracedCall[]; code: number; stderr: string }> {
  const child = strace(["-e", `trace=${TRACED.join(",")}`], setup.args, log);
  const out = await child.output();
  return {
    calls: parseTrace(await Deno.readTextFile(log)),
    code: out.code,
    stderr: decoder.decode(out.stderr),
  };
}

/** Replaces the parts of a path that change from run to run (gc's trash names carry the time). */
function normalise(path: string): string {
  return path.replace(/-\d{12,14}-[0-9a-f]{8}/g, "-<time>-<id>");
}

function occurrence(calls: TracedCall[], upTo: number, name: string, selector: string): number {
  let n = 0;
  for (let i = 0; i <= upTo; i++) {
    if (calls[i].name === name && calls[i].matchable.some((p) => normalise(p) === normalise(selector))) n++;
  }
  return n;
}

/** Where a kill landed, as read from the kill run's log. */
interface KillResult {
  killed: boolean;
  /** The kill landed right before the intended call. */
  onTarget: boolean;
  detail: string;
}

async function killAt(
  point: CrashPoint,
  previous: CrashPoint | undefined,
  setup: Setup,
  log: string,
): Promise<{ method: "inject" | "after"; result: KillResult }> {
  const { call } = point;
  if (point.reproducible && call.selector && point.occurrence === 1) {
    const child = strace(
      ["-P", call.selector, "-e", `trace=${call.name}`, "-e", `inject=${call.name}:signal=KILL:when=1`],
      setup.args,
      log,
    );
    const status = await child.status;
    await child.stderr.cancel();
    const seen = parseTrace(await Deno.readTextFile(log).catch(() => ""));
    const cut = seen.filter((c) => c.ret === "?" && c.name === call.name && c.matchable.includes(call.selector!));
    const before = seen.filter((c) => c.ret !== "?");
    const killed = status.signal === "SIGKILL" || status.code === 137;
    return {
      method: "inject",
      result: {
        killed,
        onTarget: killed && cut.length === 1 && before.length === 0,
        detail: `${cut.length} cut, ${before.length} completed before`,
      },
    };
  }
  // "Right before call i" is reached as "right after call i-1 returned".
  if (!previous) {
    return { method: "after", result: { killed: false, onTarget: false, detail: "no previous call to stop after" } };
  }
  const prev = previous.call;
  const selector = prev.selector ?? prev.target;
  const usePath = previous.reproducible && prev.selector !== null;
  // Without -P every call of that syscall in the process would be held for a second: only for rare syscalls.
  if (!usePath && ["openat", "write", "pwrite64", "fsync", "writev"].includes(prev.name)) {
    return {
      method: "after",
      result: { killed: false, onTarget: false, detail: `no path that repeats from run to run to stop after` },
    };
  }
  const wanted = usePath
    ? previous.occurrence
    : occurrence(previousCalls.get(previous)!, previous.call.seq, prev.name, selector);
  const options = [
    ...(usePath ? ["-P", selector] : []),
    "-e",
    `trace=${prev.name}`,
    "-e",
    `inject=${prev.name}:delay_exit=${DELAY_US}`,
  ];
  const child = strace(options, setup.args, log);
  const stderr = child.stderr.cancel();
  let completions = 0;
  let killedAt = -1;
  let done = false;
  const status = child.status.then((s) => {
    done = true;
    return s;
  });
  while (!done) {
    const text = await Deno.readTextFile(log).catch(() => "");
    const seen = parseTrace(text).filter((c) =>
      c.ret !== "?" && c.name === prev.name && c.matchable.some((p) => normalise(p) === normalise(selector))
    );
    completions = seen.length;
    if (completions >= wanted) {
      // kill(2) of any thread's id signals its whole process (no need to read /proc, which Deno reserves to -A).
      try {
        Deno.kill(seen[wanted - 1].tid, "SIGKILL");
        killedAt = completions;
      } catch { /* exited meanwhile */ }
      break;
    }
    await new Promise((r) => setTimeout(r, 5));
  }
  const finished = await status;
  await stderr;
  const killed = finished.signal === "SIGKILL" || finished.code === 137;
  return {
    method: "after",
    result: {
      killed,
      onTarget: killed && killedAt === wanted,
      detail: `killed after ${killedAt} of ${wanted} ${prev.name} on ${normalise(selector)}`,
    },
  };
}

/** The trace each crash point came from (the `after` method counts in it). */
const previousCalls = new WeakMap<CrashPoint, TracedCall[]>();

/** The reason of a refusal, from the CLI's `ckptkit: error: … [reason]` line or its JSON log. */
function refusalReason(stderr: string): string {
  const plain = /ckptkit: error: .*\[([a-z_]+)\]\s*$/m.exec(stderr);
  if (plain) return plain[1];
  const json = /"reason":"([a-z_]+)"/.exec(stderr);
  return json ? json[1] : "unknown";
}

/** Runs the CLI (no trace) and returns its exit code and stderr. */
async function run(args: string[]): Promise<{ code: number; stderr: string }> {
  const out = await cliCommand(args).output();
  return { code: out.code, stderr: decoder.decode(out.stderr) };
}

/** What the root looked like before the command ran. */
interface Baseline {
  valid: Set<string>;
  latest: string | undefined;
}

async function baseline(root: string): Promise<Baseline> {
  const valid = new Set<string>();
  for (const checkpoint of (await listRoot(root)).checkpoints) {
    if ((await validateCheckpoint(checkpoint.path)).ok) valid.add(checkpoint.name);
  }
  return { valid, latest: (await readLatest(root)).name };
}

/** Every name under `dir` that looks like a ckptkit temp file. */
async function tempFilesUnder(dir: string): Promise<string[]> {
  const found: string[] = [];
  const walk = async (rel: string) => {
    for await (const entry of Deno.readDir(rel ? `${dir}/${rel}` : dir)) {
      const path = rel ? `${rel}/${entry.name}` : entry.name;
      if (/\.tmp-[0-9a-f]{8}$/.test(entry.name)) found.push(path);
      if (entry.isDirectory) await walk(path);
    }
  };
  await walk("").catch(() => {});
  return found;
}

/**
 * The crash invariants (those of tests/_crash.ts, for one root): every
 * visible checkpoint validates in full, latest names a valid one (it may lag
 * behind), resume never chooses an invalid one, committed checkpoints are
 * never lost, no ckptkit temp file sits inside a committed checkpoint, and
 * the state file and the textfile, when present, are whole.
 */
async function checkInvariants(setup: Setup, before: Baseline, phase: string): Promise<string[]> {
  const root = setup.root;
  const problems: string[] = [];
  const listing = await listRoot(root);
  const present = new Map(listing.checkpoints.map((c) => [c.name, c]));
  const valid = new Set<string>();
  for (const checkpoint of listing.checkpoints) {
    const result = await validateCheckpoint(checkpoint.path);
    if (result.ok) valid.add(checkpoint.name);
    else if (checkpoint.name !== setup.corrupt) {
      problems.push(`${phase}: visible ${checkpoint.name} is not valid (${result.problems[0]?.reason})`);
    }
    const temps = await tempFilesUnder(checkpoint.path);
    // seal writes its manifest in place, so a kill before the manifest's rename leaves the temporary file in a folder
    // that is still unsealed (no manifest: not a ckptkit checkpoint yet); the retry must clean it, which the check after
    // the retry enforces. Inside a folder with a manifest, a temporary file is always a violation.
    const unsealedMidSeal = phase.endsWith("after the kill") &&
      result.problems.some((p) => p.reason === "manifest_missing");
    if (temps.length && !unsealedMidSeal) {
      problems.push(`${phase}: ckptkit temp file inside ${checkpoint.name}: ${temps.join(", ")}`);
    }
  }
  for (const name of before.valid) {
    if (!present.has(name) && !setup.mayDelete?.has(name)) problems.push(`${phase}: committed ${name} was lost`);
  }
  const latest = await readLatest(root);
  if (latest.state === "invalid") problems.push(`${phase}: latest is unreadable (${latest.detail})`);
  if (latest.state === "missing" && present.size > 0) problems.push(`${phase}: latest is missing`);
  if (latest.state === "ok") {
    const planted = latest.name === setup.plantedLatest;
    if (!present.has(latest.name!) && !planted) problems.push(`${phase}: latest names ${latest.name}, not there`);
    if (present.has(latest.name!) && !valid.has(latest.name!) && latest.name !== before.latest) {
      problems.push(`${phase}: latest moved to the invalid ${latest.name}`);
    }
    const was = before.latest && /^step-(\d+)$/.exec(before.latest)?.[1];
    if (was && latest.step! < Number(was) && valid.has(before.latest!)) {
      problems.push(`${phase}: latest moved backwards from the valid ${before.latest} to ${latest.name}`);
    }
  }
  const decision = await resumeFromRoot(root, { depth: "full" });
  if (decision.chosen && !valid.has(decision.chosen.name)) {
    problems.push(`${phase}: resume chose the invalid ${decision.chosen.name}`);
  }
  if (!decision.chosen && valid.size > 0) problems.push(`${phase}: resume chose nothing with valid checkpoints`);
  const state = await Deno.readTextFile(`${root}/.ckptkit/state.json`).catch(() => null);
  if (state !== null) {
    try {
      JSON.parse(state);
    } catch {
      problems.push(`${phase}: .ckptkit/state.json is torn`);
    }
  }
  for (const dir of setup.scope.filter((d) => d !== root)) {
    for await (const entry of Deno.readDir(dir)) {
      if (!entry.name.endsWith(".prom")) continue;
      const text = await Deno.readTextFile(`${dir}/${entry.name}`);
      if (!text.endsWith("\n") || !text.includes("ckptkit_")) problems.push(`${phase}: textfile ${entry.name} is torn`);
    }
  }
  return problems;
}

/**
 * Holes of issue #12 known when the sweep was written, fixed on other
 * branches: a crash point whose violations match one is reported under its
 * name instead of as a new violation. Delete an entry once its fix is merged,
 * so that the sweep enforces it.
 */
export const KNOWN_HOLES: { name: string; pattern: RegExp }[] = [
  // Empty: the two holes this sweep first found (the manifest's temporary file committed by a retry, quarantine
  // leaving latest moved) are fixed (issue #12), so every violation now fails the sweep.
];

/** True when strace can be run. */
export async function hasStrace(): Promise<boolean> {
  return await new Deno.Command("strace", { args: ["-V"], stdout: "null", stderr: "null" }).output()
    .then((o) => o.success, () => false);
}

/** Options of {@linkcode runSweep}. */
export interface SweepOptions {
  /** Work folder (created; its contents are scratch). */
  work: string;
  /** Commands to sweep (default: all of {@linkcode SCENARIOS}). */
  only?: string[];
  /** Try every `stride`-th index (default 1: all). */
  stride?: number;
  /** Offset of the first index tried, modulo the stride (e.g. from a seed). */
  offset?: number;
  /** Instead of a stride: about this many indexes per command, evenly spread (CI). */
  perCommand?: number;
  /** Enumerate twice to find calls whose path or place changes from run to run (default true). */
  checkOrder?: boolean;
  /** Called after each crash point, for progress. */
  progress?: (line: string) => void;
}

/** Sweeps each command; returns one set of figures per command. */
export async function runSweep(options: SweepOptions): Promise<SweepFigures[]> {
  const stride = Math.max(1, options.stride ?? 1);
  if (!await hasStrace()) throw new Error("the sweep needs strace");
  await Deno.mkdir(options.work, { recursive: true });
  await writeClockPreload(options.work);
  const all: SweepFigures[] = [];
  for (const scenario of SCENARIOS.filter((s) => !options.only || options.only.includes(s.name))) {
    const figures: SweepFigures = {
      command: scenario.name,
      calls: 0,
      tried: 0,
      covered: 0,
      byMethod: { inject: 0, after: 0 },
      missed: [],
      retries: {},
      violations: [],
      knownHoles: {},
      newViolations: [],
      points: [],
      outside: [],
      orderVaries: 0,
    };
    all.push(figures);
    const base = `${options.work}/${scenario.name.replace(/[^a-z0-9]+/gi, "-")}`;
    const enumerations: { calls: TracedCall[]; setup: Setup }[] = [];
    // Every run uses the same folder, so that paths (and, with --seed, temp names) repeat from run to run.
    const work = `${base}/run`;
    const fresh = async () => {
      await Deno.remove(work, { recursive: true }).catch(() => {});
      await Deno.mkdir(work, { recursive: true });
    };
    for (const round of options.checkOrder === false ? [1] : [1, 2]) {
      await fresh();
      const setup = await scenario.setup(work);
      const before = await baseline(setup.root);
      const traced = await enumerate(setup, `${base}/enumerate-${round}.log`);
      if (traced.code !== 0) {
        figures.violations.push(`enumeration run failed (exit ${traced.code}): ${traced.stderr.trim().slice(-300)}`);
      }
      for (const call of traced.calls) {
        if (call.writes && !inside(call.target, setup.scope) && !denoOwn(call.target) && call.ret !== "?") {
          figures.outside.push(`${call.name} ${call.target}`);
        }
      }
      figures.violations.push(...await checkInvariants(setup, before, "enumeration run"));
      figures.violations.push(...(await setup.verify(setup.root)).map((v) => `enumeration run: ${v}`));
      enumerations.push({ calls: traced.calls, setup });
    }
    figures.newViolations.push(...figures.violations);
    if (figures.outside.length) {
      figures.newViolations.push(`wrote outside the root: ${[...new Set(figures.outside)].join(", ")}`);
      figures.violations.push(`wrote outside the root: ${[...new Set(figures.outside)].join(", ")}`);
    }
    const [first, second = first] = enumerations.map(({ calls, setup }) => {
      const rel = (p: string) => p.replace(setup.root, "<root>").replace(setup.scope.at(-1)!, "<scope>");
      return calls.filter((c) => isMutating(c, setup.scope)).map((c) => ({
        call: c,
        key: `${c.name} ${rel(c.target)}`,
      }));
    });
    figures.calls = first.length;
    // Concurrent calls (the per-file fsyncs of a commit run in parallel) may swap places from run to run.
    figures.orderVaries = first.filter((c, i) => c.key !== second[i]?.key).length;
    const secondKeys = new Set(second.map((c) => c.key));
    const points: CrashPoint[] = first.map(({ call, key }, index) => {
      const point: CrashPoint = {
        index,
        call,
        occurrence: call.selector ? occurrence(enumerations[0].calls, call.seq, call.name, call.selector) : 0,
        reproducible: secondKeys.has(key),
      };
      previousCalls.set(point, enumerations[0].calls);
      return point;
    });
    const step = options.perCommand ? Math.max(1, Math.ceil(points.length / options.perCommand)) : stride;
    const offset = ((options.offset ?? 0) % step + step) % step;
    for (let index = offset; index < points.length; index += step) {
      figures.tried++;
      const point = points[index];
      await fresh();
      const setup = await scenario.setup(work);
      const before = await baseline(setup.root);
      const label = `${scenario.name} #${index} ${point.call.name} ${
        normalise(point.call.target.replace(setup.root, "<root>").replace(work, "<work>"))
      }`;
      const { method, result } = await killAt(point, points[index - 1], setup, `${base}/kill.log`);
      if (!result.onTarget) {
        figures.missed.push(`${label}: ${result.killed ? "killed elsewhere" : "not killed"} (${result.detail})`);
        // A kill elsewhere is still a crash: checked and retried like the others, but not counted as this point.
        if (!result.killed) continue;
      } else {
        figures.covered++;
        figures.byMethod[method]++;
      }
      const violations = await checkInvariants(setup, before, `${label} [${method}] after the kill`);
      const retry = await run(setup.args);
      let outcome = "succeeded";
      if (retry.code !== 0) {
        const reason = refusalReason(retry.stderr);
        outcome = `refused ${reason} (exit ${retry.code})`;
        if (!(ERROR_REASONS as readonly string[]).includes(reason) || ![1, 2, 3, 4].includes(retry.code)) {
          violations.push(`${label}: retry failed without a documented reason: ${retry.stderr.trim().slice(-300)}`);
        }
      }
      for (const next of setup.then ?? []) {
        const after = await run(next);
        if (after.code !== 0) {
          outcome += `; then ${next[0]} ${next.includes("--rank") ? `rank ${next[next.indexOf("--rank") + 1]} ` : ""}` +
            `refused ${refusalReason(after.stderr)} (exit ${after.code})`;
        }
      }
      figures.retries[outcome] = (figures.retries[outcome] ?? 0) + 1;
      violations.push(...await checkInvariants(setup, before, `${label} after the retry`));
      if (retry.code === 0) {
        violations.push(...(await setup.verify(setup.root)).map((v) => `${label} after the retry: ${v}`));
      }
      const hole = violations.length ? KNOWN_HOLES.find((h) => violations.some((v) => h.pattern.test(v))) : undefined;
      if (hole) figures.knownHoles[hole.name] = (figures.knownHoles[hole.name] ?? 0) + 1;
      else figures.newViolations.push(...violations);
      figures.violations.push(...violations);
      figures.points.push(
        `${label} [${method}]: retry ${outcome}${
          violations.length ? ` VIOLATION${hole ? ` (known: ${hole.name})` : ""}` : ""
        }`,
      );
      options.progress?.(figures.points.at(-1)!);
      // Kept for a post-mortem.
      if (violations.length) await Deno.rename(work, `${base}/violation-${index}`).catch(() => {});
    }
    await Deno.remove(work, { recursive: true }).catch(() => {});
  }
  return all;
}

/** One line of figures per command, for logs and the README. */
export function formatSweepFigures(f: SweepFigures): string {
  const retries = Object.entries(f.retries).map(([what, n]) => `${n} ${what}`).join(", ");
  const tried = f.tried === f.calls ? `${f.calls} calls` : `${f.tried} tried (of ${f.calls} calls)`;
  return `${f.command}: ${f.covered} crash points covered of ${tried} (${f.byMethod.inject} inject, ` +
    `${f.byMethod.after} after)${f.missed.length ? `, ${f.missed.length} missed` : ""}; retry ${retries || "none"}; ` +
    `${f.newViolations.length} violations` +
    Object.entries(f.knownHoles).map(([hole, n]) => `, ${n} on the known hole "${hole}"`).join("");
}

// --- The commands and their setups -------------------------------------------------------------------------------

/** A root with step-1 and step-2 committed and latest naming step-2. */
async function twoSteps(work: string): Promise<string> {
  const root = `${work}/root`;
  await writeStep(root, 1);
  await writeStep(root, 2);
  return root;
}

async function expectStep(root: string, name: string, latest = true): Promise<string[]> {
  const problems: string[] = [];
  if (!(await validateCheckpoint(`${root}/${name}`).then((r) => r.ok, () => false))) {
    problems.push(`${name} is not a valid checkpoint`);
  }
  if (latest && (await readLatest(root)).name !== name) problems.push(`latest does not name ${name}`);
  return problems;
}

async function exists(path: string): Promise<boolean> {
  return await Deno.lstat(path).then(() => true, () => false);
}

const silent = ["--log-level", "warn"];

/** Every mutating command of the CLI, each with the setup it needs. */
export const SCENARIOS: Scenario[] = [
  {
    name: "write",
    setup: async (work) => {
      const root = await twoSteps(work);
      return {
        root,
        scope: [root],
        args: ["write", "--root", root, "--step", "3", "--files", "2", "--file-size", "8KiB", ...silent],
        verify: (r) => expectStep(r, "step-3"),
      };
    },
  },
  {
    name: "commit",
    setup: async (work) => {
      const root = await twoSteps(work);
      const staging = `${root}/.staging-ext-3`;
      await Deno.mkdir(`${staging}/sub`, { recursive: true });
      await Deno.writeFile(`${staging}/model.pt`, new Uint8Array(20_000).fill(7));
      await Deno.writeFile(`${staging}/sub/optim.pt`, new Uint8Array(3_000).fill(3));
      return {
        root,
        scope: [root],
        args: ["commit", staging, "--root", root, "--step", "3", ...silent],
        verify: (r) => expectStep(r, "step-3"),
      };
    },
  },
  {
    name: "commit --rank 1 --world-size 2 (first rank: records its part)",
    setup: async (work) => {
      const root = await twoSteps(work);
      const staging = `${root}/.staging-step-3-ranks`;
      await Deno.mkdir(staging, { recursive: true });
      for (const rank of [0, 1]) await Deno.writeFile(`${staging}/rank-${rank}.pt`, new Uint8Array(9_000).fill(rank));
      const rankArgs = (rank: number) => [
        "commit",
        staging,
        "--root",
        root,
        "--step",
        "3",
        "--rank",
        String(rank),
        "--world-size",
        "2",
        "--rank-files",
        `rank-${rank}.pt`,
        ...silent,
      ];
      return {
        root,
        scope: [root],
        args: rankArgs(1),
        then: [rankArgs(0)],
        // A retry after the rename reports already_committed and leaves latest lagging, as a commit killed there does.
        verify: async (r) => (await exists(`${r}/step-3`)) ? await expectStep(r, "step-3", false) : [],
      };
    },
  },
  {
    name: "commit --rank 0 --world-size 2 (last rank: merges and commits)",
    setup: async (work) => {
      const root = await twoSteps(work);
      const staging = `${root}/.staging-step-3-ranks`;
      await Deno.mkdir(staging, { recursive: true });
      for (const rank of [0, 1]) await Deno.writeFile(`${staging}/rank-${rank}.pt`, new Uint8Array(9_000).fill(rank));
      await commitRank(staging, { root, step: 3, rank: 1, worldSize: 2, rankFiles: ["rank-1.pt"] });
      return {
        root,
        scope: [root],
        args: [
          "commit",
          staging,
          "--root",
          root,
          "--step",
          "3",
          "--rank",
          "0",
          "--world-size",
          "2",
          "--rank-files",
          "rank-0.pt",
          ...silent,
        ],
        verify: (r) => expectStep(r, "step-3", false),
      };
    },
  },
  {
    name: "seal",
    setup: async (work) => {
      const root = await twoSteps(work);
      await Deno.mkdir(`${root}/step-3/sub`, { recursive: true });
      await Deno.writeFile(`${root}/step-3/model.pt`, new Uint8Array(20_000).fill(5));
      await Deno.writeFile(`${root}/step-3/sub/optim.pt`, new Uint8Array(2_000).fill(6));
      return {
        root,
        scope: [root],
        // Not a checkpoint until sealed: an invalid step-3 is the starting point, not a violation.
        corrupt: "step-3",
        args: ["seal", `${root}/step-3`, "--step", "3", ...silent],
        verify: (r) => expectStep(r, "step-3", false),
      };
    },
  },
  {
    name: "quarantine",
    setup: async (work) => {
      const root = await twoSteps(work);
      const bad = await writeStep(root, 3);
      const bytes = await Deno.readFile(`${bad}/shard-0.bin`);
      bytes[0] ^= 1;
      await Deno.writeFile(`${bad}/shard-0.bin`, bytes);
      return {
        root,
        scope: [root],
        corrupt: "step-3",
        args: ["quarantine", bad, ...silent],
        verify: async (r) => {
          const problems: string[] = [];
          if (await exists(`${r}/step-3`)) problems.push("step-3 is still in the root");
          // A retry never overwrites an earlier quarantine: it may land in corrupt/step-3.1 and so on.
          const moved = (await Array.fromAsync(Deno.readDir(`${r}/corrupt`)).catch(() => []))
            .filter((e) => e.isDirectory && /^step-3(\.\d+)?$/.test(e.name));
          if (moved.length !== 1) problems.push(`${moved.length} copies of step-3 in corrupt/`);
          for (const { name } of moved) {
            if (!(await exists(`${r}/corrupt/${name}.quarantine.json`))) problems.push(`no record beside ${name}`);
          }
          return problems;
        },
      };
    },
  },
  {
    name: "gc",
    setup: async (work) => {
      const root = `${work}/root`;
      for (const step of [1, 2, 3, 4, 5]) await writeStep(root, step);
      const stale = `${root}/.staging-crashed-9`;
      await Deno.mkdir(stale, { recursive: true });
      await Deno.writeTextFile(`${stale}/partial.bin`, "half a checkpoint");
      // Staleness is judged by ctime too, which no one can set back: the folder is made stale by waiting past a short
      // --stale-after (ctimes have whole seconds here).
      await new Promise((resolve) => setTimeout(resolve, 2200));
      const plan = await collectGarbage(root, { keepLast: 2, dryRun: true, staleStagingAfterS: 1 });
      const mayDelete = new Set(plan.delete.map((d) => d.name));
      return {
        root,
        scope: [root],
        mayDelete,
        args: ["gc", root, "--keep-last", "2", "--stale-after", "1s", ...silent],
        verify: async (r) => {
          const problems: string[] = [];
          for (const name of mayDelete) if (await exists(`${r}/${name}`)) problems.push(`${name} was not deleted`);
          if (await exists(stale)) problems.push("the stale staging folder was not removed");
          const trash = await Array.fromAsync(Deno.readDir(`${r}/.ckptkit/trash`)).catch(() => []);
          if (trash.length) problems.push(`${trash.length} entries left in the trash`);
          return problems;
        },
      };
    },
  },
  {
    name: "resume --repair",
    setup: async (work) => {
      const root = await twoSteps(work);
      await Deno.writeTextFile(`${root}/latest`, "step-9\n");
      return {
        root,
        scope: [root],
        plantedLatest: "step-9",
        args: ["resume", root, "--repair", ...silent],
        verify: async (r) => {
          const latest = await readLatest(r);
          return latest.name === "step-2" ? [] : [`latest names ${latest.name ?? latest.state}, not step-2`];
        },
      };
    },
  },
  {
    name: "validate (records into state.json)",
    setup: async (work) => {
      const root = await twoSteps(work);
      return {
        root,
        scope: [root],
        args: ["validate", `${root}/step-2`, ...silent],
        verify: async (r) =>
          (await exists(`${r}/.ckptkit/state.json`)) ? [] : ["validate did not record into state.json"],
      };
    },
  },
  {
    name: "scan (records into state.json)",
    setup: async (work) => {
      const root = await twoSteps(work);
      return {
        root,
        scope: [root],
        args: ["scan", root, ...silent],
        verify: async (r) => (await exists(`${r}/.ckptkit/state.json`)) ? [] : ["scan did not record into state.json"],
      };
    },
  },
  {
    name: "emit-metrics --textfile",
    setup: async (work) => {
      const root = await twoSteps(work);
      const textfiles = `${work}/textfiles`;
      await Deno.mkdir(textfiles, { recursive: true });
      return {
        root,
        scope: [root, textfiles],
        args: ["emit-metrics", root, "--textfile", `${textfiles}/ckptkit.prom`, ...silent],
        verify: async () => (await exists(`${textfiles}/ckptkit.prom`)) ? [] : ["the textfile was not written"],
      };
    },
  },
];
