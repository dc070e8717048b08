/**
 * The model-based harness, shared by `tests/state_machine_test.ts` (a few
 * hundred steps in CI) and `deno task torture --model-steps N` (thousands):
 * the root as a state machine. Each step is one operation (write, commit,
 * seal, validate, scan, resume --repair, quarantine, gc, through the library
 * in-process or the real CLI as subprocesses, some of them concurrent, some
 * killed or failed at a commit point) or one act of the environment (bit
 * rot, truncation, a deleted or unexpected file, a `cp -a` of a checkpoint
 * to a new step name, staging folders, a deleted or garbage `latest`). A
 * model records what is committed and what the environment damaged; after
 * every step the root is read back from the disk with full validation,
 * compared to the model, and the invariants are checked. The sequence of
 * operations is data: a violation prints the seed, the step and the whole
 * sequence so far as a replayable JSON list (`replay` option).
 */

import { createHash } from "node:crypto";
import { cliCommand, runCli } from "./_helpers.ts";
import { prng } from "./_crash.ts";
import { ERROR_REASONS } from "../src/errors.ts";
import { readLatest } from "../src/core/latest.ts";
import { listRoot } from "../src/core/root.ts";
import { validateCheckpoint, type ValidationDepth } from "../src/core/validate.ts";
import { openCheckpointWriter } from "../src/core/writer.ts";
import { commitCheckpoint } from "../src/core/commit.ts";
import { sealCheckpoint } from "../src/core/seal.ts";
import { scanRoot } from "../src/core/scan.ts";
import { resumeFromRoot } from "../src/core/resume.ts";
import { quarantineCheckpoint } from "../src/core/quarantine.ts";
import { collectGarbage } from "../src/core/gc.ts";
import { COMMIT_POINTS, type CommitPoint } from "../src/commit_points.ts";
import { CkptkitError } from "../src/errors.ts";

/** One step of a sequence: plain data, so a failing sequence can be printed and replayed. */
export interface ModelOp {
  /** What runs: `lib` in-process, `cli` one subprocess, `multi` several at once, `env` the environment. */
  via: "lib" | "cli" | "multi" | "env";
  kind: string;
  args: Record<string, string | number | boolean | string[]>;
}

/** What the harness measured. */
export interface ModelFigures {
  seed: number;
  steps: number;
  byKind: Record<string, number>;
  libraryOps: number;
  cliProcesses: number;
  concurrentSteps: number;
  environmentSteps: number;
  /** Every broken invariant, `step N (kind): [invariant] detail`. */
  violations: string[];
  /** Violations counted by invariant. */
  byInvariant: Record<string, number>;
  /** The first violation's step and the sequence up to it, replayable; null when none. */
  firstFailure: { step: number; sequence: ModelOp[] } | null;
  durationS: number;
}

/** Options of {@linkcode runModel}. */
export interface ModelOptions {
  steps: number;
  seed: number;
  /** An empty folder the harness owns: the root, a sibling outside it and a non-root folder go there. */
  work: string;
  /** Share of steps through the CLI (default 0.15) and of concurrent multi-process steps (default 0.05). */
  cliShare?: number;
  multiShare?: number;
  /** Run exactly these operations instead of drawing them from the seed. */
  replay?: ModelOp[];
  /** Stop at the first step with a violation (default false: re-sync the model and go on). */
  stopOnViolation?: boolean;
}

interface Known {
  step: number;
  /** False once the environment damaged it (or it was born a bad copy). */
  valid: boolean;
  why: string;
}

interface Disk {
  /** Committed checkpoints (step-N), newest first. */
  names: string[];
  steps: Map<string, number>;
  valid: Map<string, boolean>;
  problem: Map<string, string>;
  latestRaw: string | null;
  latestName: string | null;
  latestState: string;
  staging: Set<string>;
  corrupt: Set<string>;
  tempInside: string[];
}

const TEMP_FILE = /\.tmp-[0-9a-f]{8}$/;
const ERROR_LINE = /^ckptkit: error: .+ \[([a-z_]+)\]$/;
const STALE_AFTER = "1h";
const OLD = new Date(Date.now() - 3 * 86400_000);

const stepOf = (name: string) => Number(name.slice("step-".length));
const byStepDesc = (a: string, b: string) => stepOf(b) - stepOf(a);

async function exists(path: string): Promise<boolean> {
  return await Deno.lstat(path).then(() => true, () => false);
}

async function filesUnder(dir: string, rel = ""): Promise<string[]> {
  const out: string[] = [];
  for await (const entry of Deno.readDir(rel ? `${dir}/${rel}` : dir)) {
    const path = rel ? `${rel}/${entry.name}` : entry.name;
    if (entry.isDirectory) out.push(...await filesUnder(dir, path));
    else out.push(path);
  }
  return out.sort();
}

/** Every entry under `dir`: type, size, mtime, and content digest or link target. */
async function snapshotTree(dir: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const walk = async (rel: string) => {
    for await (const entry of Deno.readDir(rel ? `${dir}/${rel}` : dir)) {
      const path = rel ? `${rel}/${entry.name}` : entry.name;
      const full = `${dir}/${path}`;
      const info = await Deno.lstat(full);
      let content = "";
      if (info.isSymlink) content = `-> ${await Deno.readLink(full)}`;
      else if (info.isFile) content = createHash("sha256").update(await Deno.readFile(full)).digest("hex");
      out.set(
        path,
        `${info.isDirectory ? "d" : info.isSymlink ? "l" : "f"} ${info.size} ${info.mtime?.getTime()} ${
          info.mode?.toString(8)
        } ${content}`,
      );
      if (info.isDirectory) await walk(path);
    }
  };
  await walk("");
  return out;
}

async function setOldTimes(dir: string): Promise<void> {
  for (const file of await filesUnder(dir)) await Deno.utime(`${dir}/${file}`, OLD, OLD);
  await Deno.utime(dir, OLD, OLD);
}

async function copyA(from: string, to: string): Promise<void> {
  const out = await new Deno.Command("cp", { args: ["-a", from, to], stdout: "null", stderr: "piped" }).output();
  if (!out.success) throw new Error(`cp -a ${from} ${to}: ${new TextDecoder().decode(out.stderr)}`);
}

async function chattr(flag: "+i" | "-i", path: string): Promise<boolean> {
  try {
    const out = await new Deno.Command("chattr", { args: [flag, path], stdout: "null", stderr: "null" }).output();
    return out.success;
  } catch {
    return false;
  }
}

/**
 * Runs the state machine for `options.steps` steps (or the replayed
 * sequence) and returns the figures; every broken invariant is in
 * `violations`.
 */
export async function runModel(options: ModelOptions): Promise<ModelFigures> {
  const started = performance.now();
  const random = prng(options.seed);
  const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)];
  const chance = (p: number) => random() < p;
  const cliShare = options.cliShare ?? 0.15;
  const multiShare = options.multiShare ?? 0.05;
  const figures: ModelFigures = {
    seed: options.seed,
    steps: 0,
    byKind: {},
    libraryOps: 0,
    cliProcesses: 0,
    concurrentSteps: 0,
    environmentSteps: 0,
    violations: [],
    byInvariant: {},
    firstFailure: null,
    durationS: 0,
  };
  await Deno.mkdir(options.work, { recursive: true });
  const work = await Deno.realPath(options.work);
  const root = `${work}/root`;
  const outside = `${work}/outside`;
  const notRoot = `${work}/not-a-root`;
  // A root before its first commit carries ckptkit's state folder (gc refuses folders without any mark of a root).
  await Deno.mkdir(`${root}/.ckptkit`, { recursive: true });
  await Deno.mkdir(`${outside}/sub`, { recursive: true });
  await Deno.writeTextFile(`${outside}/keep.txt`, "outside the root\n");
  await Deno.writeFile(`${outside}/sub/weights.bin`, new Uint8Array(3000).fill(9));
  await Deno.mkdir(`${outside}/.staging-outside`);
  await Deno.writeTextFile(`${outside}/.staging-outside/partial.pt`, "not ckptkit's\n");
  await setOldTimes(`${outside}/.staging-outside`);
  await setOldTimes(`${outside}/sub`);
  // Symlinks from the root out: a stray, a staging folder and a checkpoint file must never be followed.
  await Deno.symlink(`${outside}`, `${root}/link-out`);
  await Deno.symlink(`${outside}/sub`, `${root}/.staging-link-out`);
  await Deno.mkdir(`${notRoot}/.staging-user-data`, { recursive: true });
  await Deno.writeTextFile(`${notRoot}/.staging-user-data/notes.txt`, "a folder that is not a ckptkit root\n");
  await Deno.writeTextFile(`${notRoot}/readme.txt`, "hello\n");
  await setOldTimes(`${notRoot}/.staging-user-data`);
  const outsideBefore = await snapshotTree(outside);
  const notRootBefore = await snapshotTree(notRoot);
  const pretrained = `${work}/pretrained`;
  await Deno.mkdir(pretrained);
  await Deno.writeFile(`${pretrained}/model.safetensors`, new Uint8Array(2048).fill(5));
  await setOldTimes(pretrained);

  const model = {
    checkpoints: new Map<string, Known>(),
    /** Staging folders the environment made in this run: `copy` (cp -a, fresh) or `stale` (old mtimes). */
    staging: new Map<string, "copy" | "stale">(),
    nextStep: 1,
    serial: 0,
  };
  const sequence: ModelOp[] = [];
  /** Persistent findings (a damaged checkpoint that validates, a wrong resume choice) are reported once. */
  const reported = new Set<string>();
  let step = 0;
  let current: ModelOp;
  let stepViolations = 0;

  const violate = (invariant: string, detail: string) => {
    figures.violations.push(`step ${step} (${current.via} ${current.kind}): [${invariant}] ${detail}`);
    figures.byInvariant[invariant] = (figures.byInvariant[invariant] ?? 0) + 1;
    stepViolations++;
    if (!figures.firstFailure) figures.firstFailure = { step, sequence: [...sequence] };
  };

  const observe = async (): Promise<Disk> => {
    const listing = await listRoot(root);
    const disk: Disk = {
      names: [],
      steps: new Map(),
      valid: new Map(),
      problem: new Map(),
      latestRaw: await Deno.readTextFile(`${root}/latest`).catch(() => null),
      latestName: null,
      latestState: "missing",
      staging: new Set(listing.staging.map((s) => s.name)),
      corrupt: new Set(
        await Array.fromAsync(Deno.readDir(`${root}/corrupt`)).then((e) => e.map((x) => x.name), () => []),
      ),
      tempInside: [],
    };
    for (const checkpoint of listing.checkpoints) {
      if (checkpoint.foreign) continue;
      disk.names.push(checkpoint.name);
      disk.steps.set(checkpoint.name, checkpoint.step);
      const result = await validateCheckpoint(checkpoint.path, { depth: "full" }).catch((err) => ({
        ok: false,
        problems: [{ reason: "io_error", path: "", detail: String(err) }],
      }));
      disk.valid.set(checkpoint.name, result.ok);
      if (!result.ok) disk.problem.set(checkpoint.name, `${result.problems[0]?.reason} ${result.problems[0]?.path}`);
      const files = await filesUnder(checkpoint.path).catch(() => [] as string[]);
      for (const file of files) {
        if (TEMP_FILE.test(file)) disk.tempInside.push(`${checkpoint.name}/${file}`);
      }
    }
    disk.names.sort(byStepDesc);
    const latest = await readLatest(root);
    disk.latestState = latest.state;
    disk.latestName = latest.state === "ok" ? latest.name! : null;
    return disk;
  };
  /** Whether `name` went into corrupt/ during the step (as `name`, or `name.1`… when that name was taken). */
  const quarantinedBetween = (before: Disk, after: Disk, name: string) => {
    const copies = (disk: Disk) =>
      [...disk.corrupt].filter((n) => n === name || n.startsWith(`${name}.`) && /^\d+$/.test(n.slice(name.length + 1)))
        .length;
    return copies(after) > copies(before);
  };
  /** Valid on the disk (full validation) and not known by the model to be damaged. */
  const good = (disk: Disk, name: string) =>
    disk.valid.get(name) === true && model.checkpoints.get(name)?.valid !== false;
  const goodNames = (disk: Disk) => disk.names.filter((n) => good(disk, n));

  const checkCli = <T extends { code: number; stderr: string }>(label: string, run: T, expected: number[]): T => {
    figures.cliProcesses++;
    const lines = run.stderr.split("\n").filter((l) => l.trim() && !l.startsWith("{"));
    if (/^\s+at |Uncaught|panicked/m.test(run.stderr)) {
      violate("crash", `${label}: stack trace: ${run.stderr.slice(0, 300)}`);
    }
    if (run.code < 0 || run.code > 4) violate("exit-code", `${label}: undocumented exit ${run.code}`);
    else if (!expected.includes(run.code)) {
      violate("exit-code", `${label}: exit ${run.code}, expected ${expected.join(" or ")}: ${lines.at(-1) ?? ""}`);
    }
    if (run.code === 2 || run.code === 4) {
      const match = lines.length === 1 ? ERROR_LINE.exec(lines[0]) : null;
      if (!match || !(ERROR_REASONS as readonly string[]).includes(match[1])) {
        violate("error-line", `${label}: exit ${run.code} without one error line with a known reason: ${lines}`);
      }
    } else if (run.code === 1 || run.code === 3) {
      if (label.startsWith("resume") && lines.length !== 1) {
        violate("error-line", `${label}: exit ${run.code} printed ${lines.length} lines: ${lines}`);
      }
    }
    return run;
  };
  const cli = async (label: string, args: string[], expected: number[]) =>
    checkCli(label, await runCli([...args, "--log-level", "error"]), expected);
  const libError = (label: string, err: unknown, allowed: string[]) => {
    const reason = err instanceof CkptkitError ? err.reason : "not a CkptkitError";
    if (!allowed.includes(reason)) violate("library-error", `${label} threw ${reason}: ${(err as Error).message}`);
  };

  // Staging folders with real files, as a training script would write them, inside the root.
  const makeStaging = async (files: number, leftoverTemp = false): Promise<string> => {
    const path = `${root}/.staging-m-${++model.serial}`;
    await Deno.mkdir(`${path}/opt`, { recursive: true });
    for (let i = 0; i < files; i++) {
      const size = 512 + ((model.serial * 977 + i * 131) % 6000);
      await Deno.writeFile(
        `${path}/shard-${i}.bin`,
        new Uint8Array(size).map((_, j) => (j * 31 + i + model.serial) & 255),
      );
    }
    await Deno.writeTextFile(`${path}/opt/state.json`, JSON.stringify({ serial: model.serial }));
    // What a commit killed inside writeFileAtomic leaves behind: the manifest's temp file.
    if (leftoverTemp) await Deno.writeTextFile(`${path}/.ckptkit.manifest.json.tmp-0badc0de`, '{"partial":');
    return path;
  };
  const freshStep = (older: boolean): number => {
    if (older && model.nextStep > 3) {
      for (let tries = 0; tries < 10; tries++) {
        const candidate = 1 + Math.floor(random() * (model.nextStep - 1));
        if (!model.checkpoints.has(`step-${candidate}`)) return candidate;
      }
    }
    model.nextStep += 1 + Math.floor(random() * 3);
    return model.nextStep;
  };

  /** Draws the next operation from the seed and the model. */
  const draw = (disk: Disk): ModelOp => {
    const names = disk.names;
    const any = () => names.length ? pick(names) : "step-1";
    const damaged = names.filter((n) => !good(disk, n));
    const r = random();
    if (r < multiShare) {
      const kind = pick([
        "commit+commit",
        "commit-same-step",
        "commit+gc",
        "gc+repair+quarantine",
        "repair+commit",
        "scan-quarantine+gc",
        "lib-gc+cli-commit",
        "lib-repair+lib-commit",
      ]);
      return {
        via: "multi",
        kind,
        args: {
          stepA: freshStep(false),
          stepB: freshStep(false),
          target: damaged.length && chance(0.7) ? pick(damaged) : any(),
          breakLatest: chance(0.7),
          keepLast: 1 + Math.floor(random() * 3),
        },
      };
    }
    if (r < multiShare + 0.3) {
      const kind = pick([
        "flip",
        "flip",
        "truncate",
        "delete-file",
        "add-file",
        "stray",
        "clone",
        "stale-staging",
        "copy-staging",
        "delete-latest",
        "garbage-latest",
      ]);
      const target = any();
      return {
        via: "env",
        kind,
        args: {
          target,
          to: `step-${freshStep(chance(0.5))}`,
          pick: random(),
          text: pick(["step-99999\n", "garbage\n", "\u0000\u0001", "../outside\n", ""]),
        },
      };
    }
    const via = random() < cliShare / (1 - multiShare - 0.3) ? "cli" : "lib";
    const kind = pick([
      "write",
      "write",
      "commit",
      "commit",
      "commit-old-step",
      "commit-existing",
      "commit-retry",
      via === "cli" ? "commit-killed" : "commit-failed",
      "seal",
      "validate",
      "scan",
      "resume",
      "resume-repair",
      "resume-repair",
      "quarantine",
      via === "lib" ? "quarantine-blocked" : "gc-not-a-root",
      "gc",
      "gc",
      "gc-weak",
    ]);
    const args: ModelOp["args"] = {
      step: freshStep(kind === "commit-old-step"),
      files: 1 + Math.floor(random() * 3),
      target: kind === "quarantine" && damaged.length && chance(0.7) ? pick(damaged) : any(),
      keepLast: 1 + Math.floor(random() * 4),
      keepEvery: pick([0, 0, 4, 5]),
      depth: pick(["full", "full", "fast", "sample"]),
      point: pick(COMMIT_POINTS.filter((p) => !p.startsWith("part_"))),
      quarantine: chance(0.4),
    };
    if (kind === "commit-existing") args.step = names.length ? stepOf(pick(names)) : 1;
    return { via, kind, args };
  };

  const cliDepth = (depth: string) =>
    depth === "fast" ? ["--fast"] : depth === "sample" ? ["--sample-bytes", "1KiB"] : [];
  const libDepth = (depth: string): { depth?: ValidationDepth; sampleBytes?: number } =>
    depth === "fast"
      ? { depth: "fast" }
      : depth === "sample"
      ? { depth: "sample", sampleBytes: 1024 }
      : { depth: "full" };

  /** gc's promises, checked around any step that ran gc on the root. */
  const checkGc = (before: Disk, after: Disk, keepLast: number, keepEvery: number, label: string) => {
    const impostors = before.names.filter((n) => model.checkpoints.get(n)?.valid === false && before.valid.get(n));
    const note = impostors.length ? ` (damaged but validating, counted by gc: ${impostors.join(", ")})` : "";
    // Checkpoints committed while gc ran count toward keep-last like the others.
    const valid = [...new Set([...goodNames(before), ...goodNames(after)])].sort(byStepDesc);
    const keep = new Set(valid.slice(0, Math.max(keepLast, 1)));
    for (const name of valid) if (keepEvery > 0 && stepOf(name) % keepEvery === 0) keep.add(name);
    // A commit racing gc may move latest first; then the checkpoint latest names at the end is the protected one.
    const latest = current.via === "multi" ? after.latestName : before.latestName;
    if (latest && good(before, latest)) keep.add(latest);
    for (const name of keep) {
      if (!after.names.includes(name) && !quarantinedBetween(before, after, name)) {
        violate(
          "gc-deleted-kept",
          `${label} deleted ${name}, valid and kept by retention (keep-last ${keepLast}, ` +
            `keep-every ${keepEvery}, newest valid ${valid[0]}, latest ${before.latestName})${note}`,
        );
      }
    }
    for (const [name, kind] of model.staging) {
      if (kind === "copy" && before.staging.has(name) && !after.staging.has(name)) {
        violate("gc-deleted-fresh-staging", `${label} deleted ${name}, a staging folder copied with cp -a moments ago`);
      }
    }
  };

  /** Runs one operation; returns names it may legitimately remove (explicit quarantine) and what it committed. */
  /** Set when a commit of a staging folder holding a leftover temp file was refused (allowed, see commitOnce). */
  let refused = false;
  const execute = async (op: ModelOp, before: Disk): Promise<{ removable: Set<string>; gc?: [number, number] }> => {
    const a = op.args;
    const removable = new Set<string>();
    const target = String(a.target);
    const targetPath = `${root}/${target}`;
    const step = Number(a.step);
    const name = `step-${step}`;
    const depth = String(a.depth);
    if (op.via === "env") {
      figures.environmentSteps++;
      const known = model.checkpoints.get(target);
      const damage = async (why: string, act: () => Promise<void>) => {
        if (!before.names.includes(target)) return;
        await act();
        if (known) model.checkpoints.set(target, { ...known, valid: false, why });
      };
      const dataFiles = before.names.includes(target)
        // notes.txt is the environment's own added file: deleting it would undo that damage, not add to it.
        ? (await filesUnder(targetPath)).filter((f) => !f.startsWith("ckptkit.") && f !== "notes.txt")
        : [];
      const file = dataFiles.length ? dataFiles[Math.floor(Number(a.pick) * dataFiles.length)] : "";
      const victim = Number(a.pick) < 0.2 || !file ? "ckptkit.manifest.json" : file;
      // An earlier step may have deleted the manifest already: there is nothing left to damage in it.
      const victimThere = await exists(`${targetPath}/${victim}`);
      switch (op.kind) {
        case "flip":
          if (!victimThere) break;
          await damage(`bit flipped in ${victim}`, async () => {
            const bytes = await Deno.readFile(`${targetPath}/${victim}`);
            if (bytes.length === 0) return;
            bytes[Math.floor(Number(a.pick) * 7919) % bytes.length] ^= 0x10;
            await Deno.writeFile(`${targetPath}/${victim}`, bytes);
          });
          break;
        case "truncate":
          if (!victimThere) break;
          await damage(`${victim} truncated`, async () => {
            const size = (await Deno.stat(`${targetPath}/${victim}`)).size;
            await Deno.truncate(`${targetPath}/${victim}`, Math.floor(size / 2));
          });
          break;
        case "delete-file":
          if (victimThere) await damage(`${victim} deleted`, () => Deno.remove(`${targetPath}/${victim}`));
          break;
        case "add-file":
          await damage("unexpected file added", () => Deno.writeTextFile(`${targetPath}/notes.txt`, "added later\n"));
          break;
        case "stray":
          await Deno.writeTextFile(`${root}/stray-${++model.serial}.txt`, "not a checkpoint\n");
          break;
        case "clone": {
          const to = String(a.to);
          if (!before.names.includes(target) || (await exists(`${root}/${to}`))) break;
          await copyA(targetPath, `${root}/${to}`);
          // Its manifest names another step: a copy under a new name is not that checkpoint.
          model.checkpoints.set(to, { step: stepOf(to), valid: false, why: `cp -a of ${target}` });
          break;
        }
        case "stale-staging": {
          const path = `${root}/.staging-stale-${++model.serial}`;
          await Deno.mkdir(path);
          await Deno.writeTextFile(`${path}/half.pt`, "a crashed write\n");
          await setOldTimes(path);
          model.staging.set(`.staging-stale-${model.serial}`, "stale");
          break;
        }
        case "copy-staging": {
          // A write that starts from files copied with their old mtimes (cp -a of a pretrained model).
          const staged = `.staging-copy-${++model.serial}`;
          await copyA(pretrained, `${root}/${staged}`);
          model.staging.set(staged, "copy");
          break;
        }
        case "delete-latest":
          await Deno.remove(`${root}/latest`).catch(() => {});
          break;
        case "garbage-latest":
          await Deno.writeTextFile(`${root}/latest`, String(a.text));
          break;
      }
      return { removable };
    }

    if (op.via === "multi") {
      figures.concurrentSteps++;
      const stagingA = await makeStaging(2);
      const stagingB = await makeStaging(2);
      const commitArgs = (staging: string, s: number) => ["commit", staging, "--root", root, "--step", String(s)];
      const gcArgs = ["gc", root, "--keep-last", String(a.keepLast), "--stale-after", STALE_AFTER];
      if (a.breakLatest && op.kind.includes("repair")) await Deno.remove(`${root}/latest`).catch(() => {});
      const run = (args: string[]) => runCli([...args, "--log-level", "error"]);
      switch (op.kind) {
        case "commit+commit": {
          const [x, y] = await Promise.all([
            run(commitArgs(stagingA, Number(a.stepA))),
            run(commitArgs(stagingB, Number(a.stepB))),
          ]);
          checkCli("commit A", x, [0]);
          checkCli("commit B", y, [0]);
          break;
        }
        case "commit-same-step": {
          const [x, y] = await Promise.all([
            run(commitArgs(stagingA, Number(a.stepA))),
            run(commitArgs(stagingB, Number(a.stepA))),
          ]);
          checkCli("commit A", x, [0, 4]);
          checkCli("commit B", y, [0, 4]);
          if ([x.code, y.code].sort().join() !== "0,4") {
            violate("one-winner", `two commits of step ${a.stepA} exited ${x.code} and ${y.code}`);
          }
          for (const loser of [x, y].filter((o) => o.code === 4)) {
            if (!loser.stderr.includes("[checkpoint_exists]")) violate("one-winner", `loser: ${loser.stderr.trim()}`);
          }
          break;
        }
        case "commit+gc": {
          const [x, y] = await Promise.all([run(commitArgs(stagingA, Number(a.stepA))), run(gcArgs)]);
          checkCli("commit", x, [0]);
          checkCli("gc", y, [0]);
          return { removable, gc: [Number(a.keepLast), 0] };
        }
        case "gc+repair+quarantine": {
          const [x, y, z] = await Promise.all([
            run(gcArgs),
            run(["resume", root, "--repair"]),
            run(["quarantine", `${root}/${target}`, "--reason", "model"]),
          ]);
          checkCli("gc", x, [0]);
          checkCli("resume --repair", y, [0, 1, 3]);
          checkCli("quarantine", z, [0, 2]);
          removable.add(target);
          return { removable, gc: [Number(a.keepLast), 0] };
        }
        case "repair+commit": {
          const [x, y] = await Promise.all([
            run(["resume", root, "--repair"]),
            run(commitArgs(stagingA, Number(a.stepA))),
          ]);
          checkCli("resume --repair", x, [0, 1, 3]);
          checkCli("commit", y, [0]);
          break;
        }
        case "scan-quarantine+gc": {
          const [x, y] = await Promise.all([run(["scan", root, "--quarantine"]), run(gcArgs)]);
          checkCli("scan --quarantine", x, [0, 1]);
          checkCli("gc", y, [0]);
          return { removable, gc: [Number(a.keepLast), 0] };
        }
        case "lib-repair+lib-commit": {
          figures.libraryOps += 2;
          const [x, y] = await Promise.allSettled([
            resumeFromRoot(root, { repair: true }),
            commitCheckpoint(stagingA, { root, step: Number(a.stepA) }),
          ]);
          if (x.status === "rejected") libError("resume --repair", x.reason, []);
          if (y.status === "rejected") libError("commit", y.reason, []);
          break;
        }
        case "lib-gc+cli-commit": {
          const [x, y] = await Promise.allSettled([
            run(commitArgs(stagingA, Number(a.stepA))),
            collectGarbage(root, { keepLast: Number(a.keepLast), staleStagingAfterS: 3600 }),
          ]);
          if (x.status === "fulfilled") checkCli("commit", x.value, [0]);
          if (y.status === "rejected") libError("gc", y.reason, []);
          return { removable, gc: [Number(a.keepLast), 0] };
        }
      }
      for (const staging of [stagingA, stagingB]) await Deno.remove(staging, { recursive: true }).catch(() => {});
      return { removable };
    }

    const viaCli = op.via === "cli";
    if (!viaCli) figures.libraryOps++;
    const newest = goodNames(before)[0];
    const expectCommit = !before.names.includes(name);
    // A staging folder holding ckptkit's own leftover temp file may be committed (without it) or refused.
    const commitOnce = async (staging: string, label: string, leftover = false) => {
      if (viaCli) {
        const run = await cli(label, ["commit", staging, "--root", root, "--step", String(step)], [
          expectCommit && !leftover ? 0 : 4,
          ...(leftover && expectCommit ? [0] : []),
        ]);
        if (run.code === 4 && expectCommit && !/\[(staging_invalid|unsupported_entry)\]/.test(run.stderr)) {
          violate("commit", `${label} refused: ${run.stderr.trim().split("\n").at(-1)}`);
        }
        return run.code === 0;
      }
      return await commitCheckpoint(staging, { root, step, jobId: "model" }).then(
        () => {
          if (!expectCommit) violate("commit", `${label} replaced the existing ${name}`);
          return true;
        },
        (err) => {
          const allowed = expectCommit
            ? (leftover ? ["staging_invalid", "unsupported_entry"] : [])
            : ["checkpoint_exists"];
          libError(label, err, allowed);
          return false;
        },
      );
    };
    switch (op.kind) {
      case "write": {
        if (viaCli) {
          await cli("write", [
            "write",
            "--root",
            root,
            "--step",
            String(step),
            "--files",
            String(a.files),
            "--file-size",
            "3KiB",
          ], [
            expectCommit ? 0 : 4,
          ]);
        } else {
          try {
            const writer = await openCheckpointWriter(root, { step, jobId: "model", runId: "lib" });
            for (let i = 0; i < Number(a.files); i++) {
              await writer.writeFile(`part-${i}/data.bin`, new Uint8Array(700 + i * 333).fill(step & 255));
            }
            await writer.commit();
          } catch (err) {
            libError("write", err, expectCommit ? [] : ["checkpoint_exists"]);
          }
        }
        break;
      }
      case "commit":
      case "commit-old-step":
      case "commit-existing": {
        const staging = await makeStaging(Number(a.files));
        await commitOnce(staging, op.kind);
        await Deno.remove(staging, { recursive: true }).catch(() => {});
        break;
      }
      case "commit-retry": {
        // The retry of a commit killed while it wrote the manifest.
        const staging = await makeStaging(Number(a.files), true);
        refused = !(await commitOnce(staging, "commit after a killed attempt", true));
        await Deno.remove(staging, { recursive: true }).catch(() => {});
        break;
      }
      case "commit-failed":
      case "commit-killed": {
        const staging = await makeStaging(Number(a.files));
        const point = String(a.point) as CommitPoint;
        if (viaCli) {
          const child = cliCommand(
            ["commit", staging, "--root", root, "--step", String(step), "--log-level", "error"],
            {
              env: { CKPTKIT_TEST_PAUSE_AT: point },
            },
          ).spawn();
          const reader = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
          let seen = "";
          const backstop = setTimeout(() => child.kill("SIGKILL"), 120_000);
          while (!seen.includes("test_paused")) {
            const { done, value } = await reader.read();
            if (done) break;
            seen += value;
          }
          try {
            child.kill("SIGKILL");
          } catch { /* exited */ }
          await reader.cancel().catch(() => {});
          const status = await child.status;
          clearTimeout(backstop);
          await child.stdout.cancel().catch(() => {});
          figures.cliProcesses++;
          if (!seen.includes("test_paused") && expectCommit) {
            violate("commit", `commit never reached ${point} (exit ${status.code}): ${seen.slice(0, 300)}`);
          }
        } else {
          await commitCheckpoint(staging, {
            root,
            step,
            faultHook: (p) => {
              if (p === point) throw new CkptkitError("io_error", `injected at ${p}`);
              return Promise.resolve();
            },
          }).then(
            () => violate("commit", "a commit whose fault hook threw succeeded"),
            (err) => libError("commit", err, ["io_error", expectCommit ? "io_error" : "checkpoint_exists"]),
          );
        }
        // The operator retries with the same folder; after the rename the checkpoint is already there.
        const renamed = !(await exists(staging));
        if (renamed) {
          if (!(await exists(`${root}/${name}`)) && expectCommit) violate("commit", `${name} vanished after ${point}`);
        } else if (expectCommit) {
          if (viaCli) await cli("commit retry", ["commit", staging, "--root", root, "--step", String(step)], [0]);
          else await commitCheckpoint(staging, { root, step }).catch((err) => libError("commit retry", err, []));
        }
        await Deno.remove(staging, { recursive: true }).catch(() => {});
        break;
      }
      case "seal": {
        // Another tool wrote step-N in place; seal adopts it.
        if (!expectCommit) break;
        const tmp = await makeStaging(Number(a.files));
        await Deno.rename(tmp, `${root}/${name}`);
        if (viaCli) await cli("seal", ["seal", `${root}/${name}`], [0]);
        else await sealCheckpoint(`${root}/${name}`, { jobId: "model" }).catch((err) => libError("seal", err, []));
        model.checkpoints.set(name, { step, valid: true, why: "sealed" });
        break;
      }
      case "validate": {
        if (!before.names.includes(target)) break;
        const shouldPass = good(before, target);
        const mustFail = model.checkpoints.get(target)?.valid === false && depth === "full";
        if (viaCli) {
          await cli(
            "validate",
            ["validate", targetPath, ...cliDepth(depth)],
            shouldPass ? [0] : mustFail ? [1] : [0, 1],
          );
        } else {
          const result = await validateCheckpoint(targetPath, libDepth(depth));
          if (shouldPass && !result.ok) {
            violate("validate", `valid ${target} failed ${depth} validation: ${result.problems[0]?.reason}`);
          }
          if (mustFail && result.ok) {
            violate("damaged-validates", `${target} (${model.checkpoints.get(target)?.why}) passed validate`);
          }
        }
        break;
      }
      case "scan": {
        const quarantine = Boolean(a.quarantine);
        if (viaCli) {
          await cli("scan", ["scan", root, "--stale-after", STALE_AFTER, ...(quarantine ? ["--quarantine"] : [])], [
            0,
            1,
          ]);
        } else {
          const result = await scanRoot(root, { depth: "full", quarantine, staleStagingAfterS: 3600 });
          for (const checkpoint of result.checkpoints) {
            const nameOf = checkpoint.path.slice(root.length + 1);
            if (good(before, nameOf) && !checkpoint.ok) violate("scan", `scan found the valid ${nameOf} invalid`);
            if (model.checkpoints.get(nameOf)?.valid === false && checkpoint.ok) {
              violate("damaged-validates", `scan passed ${nameOf} (${model.checkpoints.get(nameOf)?.why})`);
            }
          }
        }
        break;
      }
      case "resume":
      case "resume-repair": {
        const repair = op.kind === "resume-repair";
        // 3 only for a root that never held a checkpoint (none there, none quarantined, no latest): a first start.
        const quarantined = [...before.corrupt].filter((n) => !n.startsWith(".") && !n.endsWith(".quarantine.json"));
        const expectedCode = newest
          ? 0
          : before.names.length || quarantined.length || before.latestRaw !== null
          ? 1
          : 3;
        let chosen: string | null;
        if (viaCli) {
          const run = await cli(op.kind, ["resume", root, ...(repair ? ["--repair"] : [])], [expectedCode]);
          chosen = run.code === 0 ? run.stdout.trim().slice(root.length + 1) : null;
        } else {
          chosen = (await resumeFromRoot(root, { repair })).chosen?.name ?? null;
        }
        if (chosen !== (newest ?? null)) {
          const why = chosen && model.checkpoints.get(chosen)?.valid === false
            ? ` (${chosen}: ${model.checkpoints.get(chosen)?.why})`
            : "";
          violate(
            "resume-choice",
            `resume chose ${chosen ?? "nothing"}, the newest valid is ${newest ?? "none"}${why}`,
          );
        }
        break;
      }
      case "quarantine": {
        if (!before.names.includes(target)) break;
        removable.add(target);
        if (viaCli) await cli("quarantine", ["quarantine", targetPath, "--reason", "model"], [0]);
        else {await quarantineCheckpoint(targetPath, { reason: "model" }).catch((err) =>
            libError("quarantine", err, [])
          );}
        break;
      }
      case "quarantine-blocked": {
        // A quarantine whose rename fails (an immutable folder): it must fail without moving latest.
        if (!before.names.includes(target) || !(await chattr("+i", targetPath))) break;
        try {
          await quarantineCheckpoint(targetPath, { reason: "model" }).then(
            () => violate("quarantine", `quarantine of an immutable ${target} succeeded`),
            (err) => libError("quarantine", err, ["io_error", "permission_denied"]),
          );
        } finally {
          await chattr("-i", targetPath);
        }
        if (before.latestRaw !== await Deno.readTextFile(`${root}/latest`).catch(() => null)) {
          violate(
            "quarantine-failed-latest-moved",
            `a failed quarantine of ${target} changed latest from ` +
              `${JSON.stringify(before.latestRaw)} to ${
                JSON.stringify(await Deno.readTextFile(`${root}/latest`).catch(() => null))
              }`,
          );
        }
        break;
      }
      case "gc":
      case "gc-weak": {
        const weak = op.kind === "gc-weak" ? (depth === "full" ? "fast" : depth) : "full";
        const keepLast = Number(a.keepLast);
        const keepEvery = Number(a.keepEvery);
        if (viaCli) {
          await cli(op.kind, [
            "gc",
            root,
            "--keep-last",
            String(keepLast),
            ...(keepEvery ? ["--keep-every", String(keepEvery)] : []),
            "--stale-after",
            STALE_AFTER,
            ...cliDepth(weak),
          ], [0]);
        } else {
          await collectGarbage(root, { keepLast, keepEvery, staleStagingAfterS: 3600, ...libDepth(weak) }).catch((
            err,
          ) => libError("gc", err, []));
        }
        return { removable, gc: [keepLast, keepEvery] };
      }
      case "gc-not-a-root": {
        await cli("gc on a folder that is not a root", ["gc", notRoot, "--keep-last", "1", "--stale-after", "1s"], [
          0,
          2,
        ]);
        const now = await snapshotTree(notRoot);
        for (const [path, entry] of notRootBefore) {
          if (now.get(path) !== entry) violate("not-a-root-touched", `gc on ${notRoot} changed or deleted ${path}`);
        }
        // What ckptkit may add there (its lock) is not the user's; put the folder back as it was.
        for (const path of now.keys()) {
          if (!notRootBefore.has(path) && !path.includes("/")) {
            await Deno.remove(`${notRoot}/${path}`, { recursive: true });
          }
        }
        break;
      }
    }
    return { removable };
  };

  let disk = await observe();
  const total = options.replay?.length ?? options.steps;
  for (step = 1; step <= total; step++) {
    current = options.replay ? options.replay[step - 1] : draw(disk);
    sequence.push(current);
    figures.steps++;
    const label = `${current.via}:${current.kind}`;
    figures.byKind[label] = (figures.byKind[label] ?? 0) + 1;
    stepViolations = 0;
    refused = false;
    const before = disk;
    const newestBefore = goodNames(before)[0];
    let result: Awaited<ReturnType<typeof execute>>;
    try {
      result = await execute(current, before);
    } catch (err) {
      violate("harness", `the step threw: ${(err as Error).stack ?? err}`);
      result = { removable: new Set() };
    }
    const after = await observe();
    disk = after;
    const isEnv = current.via === "env";

    // 1. A valid checkpoint stays valid, or is quarantined on request, or deleted by gc within retention.
    for (const name of goodNames(before)) {
      const present = after.names.includes(name);
      if (!present) {
        if (result.removable.has(name) || result.gc) continue;
        violate(
          quarantinedBetween(before, after, name) ? "valid-quarantined" : "valid-lost",
          `${name} was valid and is gone`,
        );
      } else if (!after.valid.get(name) && !isEnv) {
        violate("valid-became-invalid", `${name}: ${after.problem.get(name)}`);
      }
    }
    // 2. The newest valid checkpoint is never deleted (an operator's explicit quarantine aside).
    // (A commit that ran beside gc may have made a newer one, which gc then protects instead.)
    const newestAfter = goodNames(after)[0];
    if (
      newestBefore && !after.names.includes(newestBefore) && !result.removable.has(newestBefore) &&
      !(newestAfter && stepOf(newestAfter) > stepOf(newestBefore) && current.via === "multi")
    ) {
      violate("newest-valid-deleted", `${newestBefore}, the newest valid checkpoint, is gone`);
    }
    // latest never dangles because of ckptkit: what it named stays unless latest moved with it.
    if (
      !isEnv && after.latestName && after.latestName === before.latestName && before.names.includes(after.latestName) &&
      !after.names.includes(after.latestName)
    ) {
      violate("latest-missing", `${after.latestName}, named by latest, was removed and latest still names it`);
    }
    if (result.gc) checkGc(before, after, result.gc[0], result.gc[1], current.kind);
    // 3. What the environment damaged never validates.
    for (const name of after.names) {
      const known = model.checkpoints.get(name);
      if (known && !known.valid && after.valid.get(name) && !reported.has(name)) {
        reported.add(name);
        violate("damaged-validates", `${name} validates in full although ${known.why}`);
      }
    }
    // 4. latest, when ckptkit changed it, names a present valid checkpoint and never moves back past a valid one.
    // An operator's quarantine of the checkpoint latest names moves latest to the newest remaining one that passes
    // fast validation, as documented: that one may hide bit rot only full validation sees (resume still rejects it).
    let fastRepoint = false;
    if (!isEnv && after.latestRaw !== before.latestRaw && current.kind === "quarantine" && current.via !== "multi") {
      fastRepoint = true;
      let expected: string | null = null;
      for (const name of after.names) {
        if ((await validateCheckpoint(`${root}/${name}`, { depth: "fast" })).ok) {
          expected = name;
          break;
        }
      }
      // (Full validation for the new target is stricter, so the newest valid checkpoint is accepted too.)
      if (after.latestName !== expected && after.latestName !== (goodNames(after)[0] ?? null)) {
        violate("quarantine-latest", `latest is ${after.latestName} after the quarantine, expected ${expected}`);
      }
    }
    if (!isEnv && after.latestRaw !== before.latestRaw && !fastRepoint) {
      const validNow = goodNames(after);
      if (after.latestState === "invalid") violate("latest-unreadable", `latest is ${JSON.stringify(after.latestRaw)}`);
      else if (after.latestName === null && validNow.length) {
        violate("latest-removed", `latest was removed while ${validNow[0]} is valid`);
      } else if (after.latestName !== null) {
        if (!after.names.includes(after.latestName)) {
          violate("latest-missing", `latest names the missing ${after.latestName}`);
        } else if (!good(after, after.latestName)) {
          violate(
            "latest-invalid",
            `latest names ${after.latestName}, which is invalid (${
              after.problem.get(after.latestName) ?? model.checkpoints.get(after.latestName)?.why
            })`,
          );
        }
        const newer = validNow.filter((n) => stepOf(n) > stepOf(after.latestName!));
        // A commit of an older step may take a latest that named nothing present (documented: "unless latest
        // names a newer step"); every other change must leave latest at or past the newest valid checkpoint.
        const previousPresent = before.latestName !== null && before.names.includes(before.latestName);
        const olderCommit = current.via !== "multi" && `step-${current.args.step}` === after.latestName &&
          !previousPresent;
        if (newer.length && !olderCommit) {
          violate(
            "latest-backwards",
            `latest moved from ${JSON.stringify(before.latestRaw)} to ${after.latestName} while ${newer[0]} is valid`,
          );
        }
      }
    }
    // 5. A commit of the newest step moves latest to it.
    if (["write", "commit", "commit-retry", "commit-old-step"].includes(current.kind) && current.via !== "multi") {
      const name = `step-${current.args.step}`;
      const created = !before.names.includes(name) && after.names.includes(name);
      if (created && after.names[0] === name && after.latestName !== name) {
        violate("latest-not-updated", `${name} committed as the newest, latest is ${JSON.stringify(after.latestRaw)}`);
      }
      if (!before.names.includes(name) && !after.names.includes(name) && !refused) {
        violate("commit", `${name} was not committed`);
      }
    }
    // 6. Resume (latest-valid, read-only) chooses the newest valid checkpoint, never an invalid one.
    const decision = await resumeFromRoot(root, { depth: "full" });
    const newestNow = goodNames(after)[0] ?? null;
    const chosen = decision.chosen?.name;
    if ((chosen ?? null) !== newestNow && !reported.has(`resume ${chosen} ${newestNow}`)) {
      reported.add(`resume ${chosen} ${newestNow}`);
      violate(
        chosen && !good(after, chosen) ? "resume-chose-invalid" : "resume-choice",
        `resume would choose ${chosen ?? "nothing"}, the newest valid is ${newestNow ?? "none"}` +
          (chosen && !good(after, chosen) ? ` (${chosen}: ${model.checkpoints.get(chosen)?.why})` : ""),
      );
    }
    // 7. No ckptkit temp file inside a committed checkpoint.
    for (const path of after.tempInside) {
      if (!before.tempInside.includes(path)) violate("temp-inside", `${path} is inside a committed checkpoint`);
    }
    // 8. Nothing outside the root changed.
    const outsideNow = await snapshotTree(outside);
    for (const path of new Set([...outsideBefore.keys(), ...outsideNow.keys()])) {
      if (outsideBefore.get(path) !== outsideNow.get(path)) {
        violate("outside-changed", `${outside}/${path}: ${outsideBefore.get(path)} -> ${outsideNow.get(path)}`);
      }
    }

    // The model follows the disk: new checkpoints join (as committed, so valid), removed ones leave.
    for (const name of after.names) {
      if (!model.checkpoints.has(name)) {
        if (!after.valid.get(name) && !isEnv) {
          violate("created-invalid", `${name} appeared invalid: ${after.problem.get(name)}`);
        }
        model.checkpoints.set(name, {
          step: stepOf(name),
          valid: after.valid.get(name) === true,
          why: "appeared invalid",
        });
      }
    }
    for (const name of [...model.checkpoints.keys()]) {
      if (!after.names.includes(name)) {
        model.checkpoints.delete(name);
        reported.delete(name);
      }
    }
    for (const name of [...model.staging.keys()]) if (!after.staging.has(name)) model.staging.delete(name);
    // Keep the root small: the operator clears staging copies gc must keep, and quarantined folders.
    if (model.staging.size > 4) {
      const [oldest] = model.staging.keys();
      await Deno.remove(`${root}/${oldest}`, { recursive: true });
      model.staging.delete(oldest);
      disk = await observe();
    }
    if (after.corrupt.size > 12) {
      await Deno.remove(`${root}/corrupt`, { recursive: true });
      disk = await observe();
    }
    if (stepViolations > 0 && options.stopOnViolation) break;
  }
  figures.durationS = Math.round((performance.now() - started) / 100) / 10;
  return figures;
}

/** One line of figures for logs and the README. */
export function formatModelFigures(f: ModelFigures): string {
  const operations: Record<string, number> = {};
  const damage: Record<string, number> = {};
  for (const [label, n] of Object.entries(f.byKind)) {
    const [via, kind] = label.split(":");
    const into = via === "env" ? damage : operations;
    const key = via === "env" || via === "multi"
      ? kind
      : kind.replace(/-(old-step|existing|retry|failed|killed|repair|weak|blocked|not-a-root)$/, "");
    into[key] = (into[key] ?? 0) + n;
  }
  const list = (counts: Record<string, number>) =>
    Object.entries(counts).sort((a, b) => b[1] - a[1]).map(([k, n]) => `${k} ${n}`).join(", ");
  return `model: ${f.steps} steps (${f.libraryOps} library operations, ${f.cliProcesses} CLI processes, ` +
    `${f.concurrentSteps} concurrent steps; ${list(operations)}; environment: ${list(damage)}), ` +
    `${f.violations.length} invariant violations, ${f.durationS} s (seed ${f.seed})`;
}

/** The report of a failed run: seed, step, the violations and the replayable sequence. */
export function formatModelFailure(f: ModelFigures): string {
  if (!f.firstFailure) return "";
  const counts = Object.entries(f.byInvariant).map(([k, n]) => `${k} ${n}`).join(", ");
  return [
    `model: ${f.violations.length} violations (${counts}) with seed ${f.seed}; first at step ${f.firstFailure.step}`,
    ...f.violations.slice(0, 40).map((v) => `  ${v}`),
    `sequence up to step ${f.firstFailure.step}; save the list below as a file and replay it with ` +
    "`deno task torture --crash-trials 0 --race-seconds 0 --fuzz 0 --model-replay <file> --no-readme`:",
    JSON.stringify(f.firstFailure.sequence, null, 0).replaceAll("},{", "},\n{"),
  ].join("\n");
}
