/**
 * The hostile-input corpus (`tests/corpus/`, made by `scripts/gen_corpus.ts`)
 * run through the CLI: for every case, a fresh temporary folder holds the
 * checkpoint root and, beside it, sentinel files the case points at; the CLI
 * runs as a subprocess with the exact permission flags of the `ckptkit` task
 * plus `--json`, under `strace` (when installed) and a 180 s backstop against hangs.
 *
 * Checked for every case: the exit code, the stable reasons, stdout is one
 * JSON document, stderr holds no stack trace, no path outside the root was
 * opened (strace: the sentinels never, nothing outside an allow-list of the
 * runtime's own files, and no path in the root that resolves outside it), the
 * access times of the files outside the root are untouched, nothing outside
 * the root changed, and unless a case says otherwise nothing in the root but
 * `.ckptkit/` changed.
 *
 * Cases run three at a time in the background; each test waits for its own.
 * `HOSTILE_ONLY=<regex>` restricts the run to matching case names.
 */

import assert from "node:assert/strict";
import { loadCases, type LoadedCase, materialize } from "../scripts/gen_corpus.ts";
import { ckptkitFlags, REPO } from "./_helpers.ts";

// A backstop for real hangs only: a busy machine (or a slow one) must never look like a hang.
const TIMEOUT_S = 180;
const CONCURRENCY = 3;
/** Access time the sentinels are set to before a run; reading them moves it (relatime). */
const OLD_ATIME = new Date(86_400_000);

const ONLY = Deno.env.get("HOSTILE_ONLY");
const cases = (await loadCases()).filter((c) => !ONLY || new RegExp(ONLY).test(c.name));
const IS_ROOT = Deno.uid() === 0;
const HAS_PYTHON = await found("python3", ["--version"]);
const STRACE = await which("strace");
const TIMEOUT = await which("timeout");
const DENO_DIR = await denoDir();

async function found(command: string, args: string[]): Promise<boolean> {
  try {
    return (await new Deno.Command(command, { args, stdout: "null", stderr: "null" }).output()).success;
  } catch {
    return false;
  }
}

/** Absolute path of a program on PATH (the CLI runs with a cleared environment). */
async function which(program: string): Promise<string | undefined> {
  try {
    const out = await new Deno.Command("sh", { args: ["-c", `command -v ${program}`], stderr: "null" }).output();
    const path = new TextDecoder().decode(out.stdout).trim();
    return out.success && path.startsWith("/") ? path : undefined;
  } catch {
    return undefined;
  }
}

async function denoDir(): Promise<string> {
  const out = await new Deno.Command(Deno.execPath(), { args: ["info", "--json"], stderr: "null" }).output();
  return JSON.parse(new TextDecoder().decode(out.stdout)).denoDir;
}

function missing(kase: LoadedCase): string | undefined {
  for (const need of kase.requires ?? []) {
    if (need === "root" && !IS_ROOT) return "needs root (mknod)";
    if (need === "python3" && !HAS_PYTHON) return "needs python3";
  }
  return undefined;
}

/** What one case produced, and every way it broke the rules. */
interface Outcome {
  code: number;
  stdout: string;
  stderr: string;
  seconds: number;
  timedOut: boolean;
  /** Rule violations found while running (outside access, changes). */
  violations: string[];
  /** The command line, for messages. */
  command: string;
  /** The test harness itself failed (setup, strace log…). */
  harnessError?: string;
}

// ---------------------------------------------------------------------------
// Running a case
// ---------------------------------------------------------------------------

async function runCase(kase: LoadedCase): Promise<Outcome> {
  try {
    return await runCaseOnce(kase);
  } catch (err) {
    return {
      code: -1,
      stdout: "",
      stderr: "",
      seconds: 0,
      timedOut: false,
      violations: [],
      command: kase.run.command,
      harnessError: (err as Error)?.stack ?? String(err),
    };
  }
}

async function runCaseOnce(kase: LoadedCase): Promise<Outcome> {
  const tmp = await Deno.realPath(await Deno.makeTempDir({ prefix: "ckptkit-hostile-" }));
  const logDir = await Deno.makeTempDir({ prefix: "ckptkit-hostile-log-" });
  try {
    const { root, outside } = await materialize(kase, tmp);
    const exempt = new Set((kase.atime_exempt ?? []).map((p) => `${tmp}/${p}`));
    await resetAtimes(outside, exempt);
    // Listing folders moves their access time: set it back (a folder's ctime is not compared).
    const outsideBefore = await snapshot(outside);
    await resetAtimes(outside, exempt, true);
    const rootBefore = await snapshot(root, (rel) => rel === ".ckptkit" || rel.startsWith(".ckptkit/"));

    const cliArgs = [
      "run",
      "--quiet",
      ...ckptkitFlags(),
      `${REPO}/cli.ts`,
      kase.run.command,
      `${tmp}/${kase.run.target}`,
      "--json",
      ...kase.run.args,
    ];
    const timed = ["--signal=KILL", `${TIMEOUT_S}s`, Deno.execPath(), ...cliArgs];
    const log = `${logDir}/strace.log`;
    const [program, args] = STRACE
      ? [STRACE, [
        "-f",
        "-qq",
        "--seccomp-bpf",
        "-s",
        "8192",
        "-e",
        "trace=open,openat,openat2",
        "-o",
        log,
        TIMEOUT!,
        ...timed,
      ]]
      : [TIMEOUT!, timed];
    const started = performance.now();
    const child = new Deno.Command(program, {
      args,
      cwd: REPO,
      env: { NO_COLOR: "1" },
      clearEnv: true,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    // A backstop in case `timeout` itself is stuck.
    const backstop = setTimeout(() => child.kill("SIGKILL"), (TIMEOUT_S + 15) * 1000);
    const output = await child.output().finally(() => clearTimeout(backstop));
    const seconds = (performance.now() - started) / 1000;

    const violations: string[] = [];
    for (const path of await touchedAtimes(outside, exempt)) {
      if (!outsideBefore.has(path.slice(outside.length + 1) || ".")) continue; // created: reported as a change
      violations.push(`read outside the root (access time moved): ${path}`);
    }
    for (const change of diff(outsideBefore, await snapshot(outside))) {
      violations.push(`changed outside the root: ${change}`);
    }
    const readOnly = kase.expect.root_unchanged ?? true;
    if (readOnly) {
      const rootAfter = await snapshot(root, (rel) => rel === ".ckptkit" || rel.startsWith(".ckptkit/"));
      for (const change of diff(rootBefore, rootAfter)) violations.push(`changed in the root: ${change}`);
    }
    const tmpEntries = (await Array.fromAsync(Deno.readDir(tmp))).map((e) => e.name).sort();
    if (tmpEntries.join() !== "outside,root") violations.push(`new entries beside the root: ${tmpEntries.join(", ")}`);
    if (STRACE) violations.push(...(await straceViolations(log, tmp, root, outside)));

    return {
      code: output.code,
      stdout: new TextDecoder().decode(output.stdout),
      stderr: new TextDecoder().decode(output.stderr),
      seconds,
      timedOut: seconds >= TIMEOUT_S - 0.5 || output.code === 124 || output.code === 137,
      violations,
      command: `ckptkit ${kase.run.command} ${kase.run.target} --json ${kase.run.args.join(" ")}`.trim(),
    };
  } finally {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
    await Deno.remove(logDir, { recursive: true }).catch(() => {});
  }
}

/** Sets the access time of everything (or every folder) under `dir` far in the past (mtime kept). */
async function resetAtimes(dir: string, exempt: Set<string>, foldersOnly = false): Promise<void> {
  for (const [path, info] of await walk(dir)) {
    if (exempt.has(path) || info.isSymlink || (foldersOnly && !info.isDirectory)) continue;
    await Deno.utime(path, OLD_ATIME, info.mtime ?? new Date());
  }
}

/**
 * Files under `dir` whose access time moved since {@linkcode resetAtimes}: their content was read.
 * Folders are left to strace: anything on the machine that lists /tmp moves their access time.
 */
async function touchedAtimes(dir: string, exempt: Set<string>): Promise<string[]> {
  const touched: string[] = [];
  for (const [path, info] of await walk(dir)) {
    if (exempt.has(path) || !info.isFile) continue;
    if (info.atime && info.atime.getTime() !== OLD_ATIME.getTime()) touched.push(path);
  }
  return touched;
}

/** Every path under `dir` (itself included) with its lstat, never following a link. */
async function walk(dir: string): Promise<[string, Deno.FileInfo][]> {
  const out: [string, Deno.FileInfo][] = [[dir, await Deno.lstat(dir)]];
  const pending = [dir];
  while (pending.length) {
    const current = pending.pop()!;
    for await (const entry of Deno.readDir(current)) {
      const path = `${current}/${entry.name}`;
      // A name that is not UTF-8 reaches us lossily (U+FFFD) and cannot be lstat'ed; its folder's entry stands in.
      const info = await Deno.lstat(path).catch(() => undefined);
      if (!info) continue;
      out.push([path, info]);
      if (info.isDirectory) pending.push(path);
    }
  }
  return out;
}

/** Type, size, mtime and ctime of every entry under `dir` (lstat only: reads no data, moves no atime). */
async function snapshot(dir: string, skip: (rel: string) => boolean = () => false): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const [path, info] of await walk(dir)) {
    const rel = path.slice(dir.length + 1);
    if (rel && skip(rel)) continue;
    const kind = info.isFile ? "file" : info.isDirectory ? "dir" : info.isSymlink ? "symlink" : "other";
    // A folder's own times change when ckptkit's state folder is created in it; entries are compared instead.
    const times = info.isDirectory
      ? ""
      : ` mtime=${info.mtime?.getTime()} ctime=${info.ctime?.getTime()} ino=${info.ino} nlink=${info.nlink}`;
    out.set(rel || ".", `${kind} size=${info.isDirectory ? "-" : info.size}${times}`);
  }
  return out;
}

function diff(before: Map<string, string>, after: Map<string, string>): string[] {
  const changes: string[] = [];
  for (const [path, was] of before) {
    const now = after.get(path);
    if (now === undefined) changes.push(`${JSON.stringify(path)} removed`);
    else if (now !== was) changes.push(`${JSON.stringify(path)} ${was} -> ${now}`);
  }
  for (const path of after.keys()) if (!before.has(path)) changes.push(`${JSON.stringify(path)} created`);
  return changes;
}

// ---------------------------------------------------------------------------
// strace: which paths were opened
// ---------------------------------------------------------------------------

/** Decodes a string as strace prints it (C escapes, octal for other bytes). */
function unescapeStrace(text: string): string {
  const bytes: number[] = [];
  const simple: Record<string, number> = { n: 10, t: 9, r: 13, v: 11, f: 12, '"': 34, "\\": 92 };
  for (let i = 0; i < text.length; i++) {
    const ch = text[i];
    if (ch !== "\\") {
      bytes.push(...new TextEncoder().encode(ch));
      continue;
    }
    const next = text[i + 1];
    if (next in simple) {
      bytes.push(simple[next]);
      i++;
    } else if (next === "x") {
      bytes.push(parseInt(text.slice(i + 2, i + 4), 16));
      i += 3;
    } else {
      const octal = /^[0-7]{1,3}/.exec(text.slice(i + 1))![0];
      bytes.push(parseInt(octal, 8));
      i += octal.length;
    }
  }
  return new TextDecoder().decode(new Uint8Array(bytes));
}

/** Every path the traced processes tried to open (absolute; relative ones resolved against the repository). */
async function openedPaths(log: string): Promise<string[]> {
  const text = await Deno.readTextFile(log).catch(() => "");
  const paths: string[] = [];
  const pattern = /\b(?:open|openat|openat2)\((?:(?:AT_FDCWD|-?\d+), )?"((?:[^"\\]|\\.)*)"/g;
  for (const match of text.matchAll(pattern)) {
    const path = unescapeStrace(match[1]);
    paths.push(path.startsWith("/") ? path : `${REPO}/${path}`);
  }
  return paths;
}

/**
 * What the CLI opened that it must not: anything under the sentinel folder,
 * anything else outside the root that is not the runtime's own (the
 * repository, Deno's cache, system folders, config probes in the
 * repository's ancestors), and any path in the root that resolves outside it.
 */
async function straceViolations(log: string, tmp: string, root: string, outside: string): Promise<string[]> {
  const home = Deno.env.get("HOME") ?? "/root";
  const allowed = [
    `${REPO}/`,
    `${DENO_DIR}/`,
    `${Deno.execPath().slice(0, Deno.execPath().lastIndexOf("/"))}/`,
    "/proc/",
    "/sys/",
    "/dev/",
    "/etc/",
    "/usr/",
    "/lib/",
    "/lib64/",
    "/bin/",
    "/sbin/",
  ];
  const ancestors = new Set<string>();
  for (let p = REPO; p; p = p.slice(0, p.lastIndexOf("/"))) ancestors.add(p);
  ancestors.add("");
  const violations = new Set<string>();
  const paths = await openedPaths(log);
  if (paths.length === 0) return ["strace recorded no open at all (is strace working?)"];
  for (const path of paths) {
    if (path === outside || path.startsWith(`${outside}/`)) {
      violations.add(`opened outside the root: ${path}`);
      continue;
    }
    if (path === root || path.startsWith(`${root}/`)) {
      // Deno resolves symlinks itself before opening; check the kernel's view too.
      const real = await Deno.realPath(path).catch(() => undefined);
      if (real && real !== root && !real.startsWith(`${root}/`)) {
        violations.add(`opened ${path}, which resolves outside the root to ${real}`);
      }
      continue;
    }
    if (path === tmp || path.startsWith(`${tmp}/`)) {
      violations.add(`opened beside the root: ${path}`);
      continue;
    }
    const folder = path.slice(0, path.lastIndexOf("/"));
    const probe = ancestors.has(folder) || path === `${home}/.npmrc`;
    if (!probe && !allowed.some((prefix) => path.startsWith(prefix) || path === prefix.slice(0, -1))) {
      violations.add(`opened outside the root: ${path}`);
    }
  }
  return [...violations];
}

// ---------------------------------------------------------------------------
// The background pool and the tests
// ---------------------------------------------------------------------------

const runnable = cases.filter((c) => !missing(c));
const results = new Map<string, Promise<Outcome>>();
let started = false;

/** Starts every runnable case, three at a time; slow ones (big generated files, FIFOs) first. */
function startPool(): void {
  if (started) return;
  started = true;
  const slowFirst = [...runnable].sort((a, b) => weight(b) - weight(a));
  const resolvers = new Map<string, (outcome: Promise<Outcome>) => void>();
  for (const kase of runnable) {
    results.set(kase.name, new Promise((resolve) => resolvers.set(kase.name, resolve)));
  }
  let next = 0;
  const lane = async () => {
    while (next < slowFirst.length) {
      const kase = slowFirst[next++];
      const outcome = runCase(kase);
      resolvers.get(kase.name)!(outcome);
      await outcome;
    }
  };
  for (let i = 0; i < CONCURRENCY; i++) lane();
}

function weight(kase: LoadedCase): number {
  const ops = kase.setup.map((s) => s.op);
  if (ops.includes("manifest_generate") || ops.includes("sample_amplifier")) return 3;
  if (ops.includes("truncate") || kase.bug) return 2;
  return ops.includes("fifo") ? 1 : 0;
}

function sorted(values: readonly string[]): string[] {
  return [...values].sort();
}

interface ProblemJson {
  reason: string;
  path: string;
  detail: string;
}

/** Checks a case's outcome; returns every mismatch (empty when the case passes). */
function check(kase: LoadedCase, outcome: Outcome): string[] {
  const failures: string[] = [];
  const expect = kase.expect;
  if (outcome.harnessError) return [`the test harness failed: ${outcome.harnessError}`];
  if (outcome.timedOut) failures.push(`hang: killed after ${outcome.seconds.toFixed(1)} s`);
  if (outcome.code !== expect.exit) failures.push(`exit code ${outcome.code}, expected ${expect.exit}`);
  const stderrLines = outcome.stderr.split("\n");
  if (stderrLines.some((line) => line.startsWith("    at "))) failures.push("stderr holds a stack trace");
  if (/error: Uncaught|panicked at|Stack backtrace/.test(outcome.stderr)) {
    failures.push("stderr shows an uncaught error or a panic");
  }
  failures.push(...outcome.violations);
  let doc: Record<string, unknown> | undefined;
  try {
    doc = JSON.parse(outcome.stdout);
    if (typeof doc !== "object" || doc === null) throw new Error("not an object");
  } catch (err) {
    failures.push(`stdout is not one JSON document (${(err as Error).message}): ${outcome.stdout.slice(0, 200)}`);
  }
  if (!doc) return failures;

  const error = doc.error as { reason?: string; message?: string } | undefined;
  if (expect.error_reason !== undefined || error) {
    if (error?.reason !== expect.error_reason) {
      failures.push(
        `error reason ${JSON.stringify(error?.reason ?? null)} (${error?.message ?? "no error"}), ` +
          `expected ${JSON.stringify(expect.error_reason ?? null)}`,
      );
    }
    if (error) return failures;
  }

  let reasons: string[] = [];
  const details: string[] = [];
  if (kase.run.command === "validate") {
    const problems = (doc.problems ?? []) as ProblemJson[];
    reasons = problems.map((p) => p.reason);
    details.push(...problems.map((p) => p.detail));
    if (expect.problems) {
      const got = sorted(problems.map((p) => `${p.reason}:${p.path}`));
      if (JSON.stringify(got) !== JSON.stringify(sorted(expect.problems))) {
        failures.push(`problems ${JSON.stringify(got)}, expected ${JSON.stringify(sorted(expect.problems))}`);
      }
    }
  } else if (kase.run.command === "scan") {
    const checkpoints = (doc.checkpoints ?? []) as { path: string; problems: ProblemJson[] }[];
    const byName: Record<string, string[]> = {};
    for (const c of checkpoints) {
      byName[c.path.slice(c.path.lastIndexOf("/") + 1)] = sorted(c.problems.map((p) => p.reason));
      reasons.push(...c.problems.map((p) => p.reason));
      details.push(...c.problems.map((p) => p.detail));
    }
    if (expect.checkpoints) {
      const want = Object.fromEntries(Object.entries(expect.checkpoints).map(([k, v]) => [k, sorted(v)]));
      assertSame(failures, "checkpoints", byName, want);
    }
    const latest = doc.latest as { state?: string } | undefined;
    if (expect.latest && latest?.state !== expect.latest) {
      failures.push(`latest.state ${latest?.state}, expected ${expect.latest}`);
    }
    if (expect.strays) {
      const strays = sorted(((doc.strays ?? []) as { name: string }[]).map((s) => s.name));
      assertSame(failures, "strays", strays, sorted(expect.strays));
    }
  } else if (kase.run.command === "resume") {
    const rejected = (doc.rejected ?? []) as { name: string; reasons: string[]; detail: string }[];
    const byName: Record<string, string[]> = {};
    for (const r of rejected) {
      byName[r.name] = sorted(r.reasons);
      reasons.push(...r.reasons);
      details.push(r.detail);
    }
    if (expect.rejected) {
      const want = Object.fromEntries(Object.entries(expect.rejected).map(([k, v]) => [k, sorted(v)]));
      assertSame(failures, "rejected", byName, want);
    }
    if (expect.excluded) {
      assertSame(failures, "excluded", sorted((doc.excluded ?? []) as string[]), sorted(expect.excluded));
    }
    const chosen = (doc.chosen as { name?: string } | null)?.name ?? null;
    if (expect.chosen !== undefined && chosen !== expect.chosen) {
      failures.push(`chosen ${chosen}, expected ${expect.chosen}`);
    }
    if (expect.actions) {
      const actions = ((doc.actions ?? []) as { action: string; name: string }[]).map((a) => `${a.action}:${a.name}`);
      assertSame(failures, "actions", sorted(actions), sorted(expect.actions));
    }
  }
  assertSame(failures, "reasons", sorted(reasons), sorted(expect.reasons));
  if (expect.detail && !details.some((d) => new RegExp(expect.detail!).test(d))) {
    failures.push(`no problem detail matches /${expect.detail}/: ${JSON.stringify(details.slice(0, 5))}`);
  }
  return failures;
}

/** JSON with object keys sorted, so that key order never matters. */
function canonical(value: unknown): string {
  return JSON.stringify(
    value,
    (_key, v) =>
      v && typeof v === "object" && !Array.isArray(v)
        ? Object.fromEntries(Object.entries(v).sort(([a], [b]) => (a < b ? -1 : 1)))
        : v,
  );
}

function assertSame(failures: string[], what: string, got: unknown, want: unknown): void {
  const [a, b] = [canonical(got), canonical(want)];
  const cut = (text: string) => text.length > 300 ? `${text.slice(0, 300)}… (${text.length} chars)` : text;
  if (a !== b) failures.push(`${what} ${cut(a)}, expected ${cut(b)}`);
}

if (!TIMEOUT) throw new Error("hostile_test needs coreutils' timeout");
if (cases.length === 0) throw new Error(`no corpus cases${ONLY ? ` match HOSTILE_ONLY=${ONLY}` : ""}`);
if (!STRACE) console.warn("hostile_test: strace is not installed; checking access times and changes only");

for (const kase of cases) {
  const skip = missing(kase);
  Deno.test({
    name: `hostile ${kase.name}: ${kase.run.command}${skip ? ` (skipped: ${skip})` : ""}`,
    ignore: skip !== undefined,
    // The background pool runs other cases while this one is awaited.
    sanitizeOps: false,
    sanitizeResources: false,
    fn: async () => {
      startPool();
      const outcome = await results.get(kase.name)!;
      const failures = check(kase, outcome);
      const context = [
        `case ${kase.name}${kase.bug ? ` (exposes ${kase.bug}, see tests/corpus/README.md)` : ""}: ${kase.description}`,
        `ran: ${outcome.command} (exit ${outcome.code}, ${outcome.seconds.toFixed(2)} s)`,
        ...failures.map((f) => `  - ${f}`),
        `stderr: ${outcome.stderr.split("\n").filter((l) => !l.startsWith("{")).join(" | ").slice(0, 600)}`,
      ].join("\n");
      assert.deepEqual(failures, [], context);
    },
  });
}
