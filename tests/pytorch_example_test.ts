/**
 * examples/pytorch_integration.py on the real torch this machine has (Debian's
 * python3-torch 1.13 here and in CI), through tests/pytorch_example_driver.py:
 * - torch.save/torch.load: Adam training committed, SIGKILLed mid-run and
 *   restarted to the weights of an uninterrupted run; SGD training resuming
 *   past a damaged newest model.pt; the weights_only facts of the installed torch;
 * - DCP: on torch < 2.2 the DcpUnavailableError (on >= 2.2 a one-rank save and load);
 * - two processes (torch.multiprocessing spawn, gloo on 127.0.0.1) committing
 *   one checkpoint with `commit_rank`, then resuming from it;
 * - AsyncCommitter: training overlaps the commit, a failed commit surfaces at
 *   the next save, and a SIGKILL during a commit leaves a root resume accepts;
 * - DeepSpeed and the Hugging Face callback against stand-ins (neither
 *   deepspeed nor transformers is packaged for Debian, so only they are stubbed).
 *
 * Nothing is skipped: without an importable torch every test fails and says
 * so. Every child runs in its own process group, killed in `finally`; waits
 * have backstops of minutes that only catch a hang.
 */

import assert from "node:assert/strict";
import { ckptkitFlags, flipByte, names, REPO, runCli, tempDir, torchPython } from "./_helpers.ts";
import { assertAllValid, stepDirs } from "./_checks.ts";
import { readLatest } from "../src/core/latest.ts";
import { validateCheckpoint } from "../src/core/validate.ts";

const DRIVER = `${REPO}/tests/pytorch_example_driver.py`;
const EXAMPLE = `${REPO}/examples/pytorch_integration.py`;
/** The ckptkit command line the example runs ($CKPTKIT): this checkout's cli.ts under the binary's permissions. */
const CKPTKIT_CMD = [Deno.execPath(), "run", "--quiet", ...ckptkitFlags(), `${REPO}/cli.ts`].map(shellQuote).join(" ");
const BACKSTOP_MS = 300_000;

/** Quoted for Python's shlex.split (the example splits $CKPTKIT; no shell ever runs it). */
function shellQuote(arg: string): string {
  return /^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replaceAll("'", `'"'"'`)}'`;
}

// --- subprocesses -------------------------------------------------------------------------------

interface Run {
  code: number;
  signal: Deno.Signal | null;
  stdout: string;
  stderr: string;
}

function killGroup(pid: number): void {
  try {
    Deno.kill(-pid, "SIGKILL");
  } catch {
    // the group is already gone
  }
}

/** The driver in its own process group (so a kill reaches the ckptkit commits and spawned ranks too). */
async function spawnDriver(args: string[], env: Record<string, string> = {}) {
  const inherited = Object.entries(Deno.env.toObject()).filter(([name]) => !name.startsWith("CKPTKIT"));
  return new Deno.Command(await torchPython(), {
    args: [DRIVER, ...args],
    cwd: REPO,
    env: {
      ...Object.fromEntries(inherited),
      NO_COLOR: "1",
      PYTHONDONTWRITEBYTECODE: "1", // no __pycache__ in the checkout
      CKPTKIT: CKPTKIT_CMD,
      CKPTKIT_JOB_ID: "torch-test",
      CKPTKIT_RUN_ID: "torch-test-run", // the same on every rank
      ...env,
    },
    clearEnv: true,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    detached: true,
  }).spawn();
}

/** Runs a driver command to completion (backstop: minutes) and asserts it succeeded. */
async function driver(args: string[], env: Record<string, string> = {}): Promise<string> {
  const child = await spawnDriver(args, env);
  const timer = setTimeout(() => killGroup(child.pid), BACKSTOP_MS);
  try {
    const out = await child.output();
    const run: Run = {
      code: out.code,
      signal: out.signal,
      stdout: new TextDecoder().decode(out.stdout),
      stderr: new TextDecoder().decode(out.stderr),
    };
    assert.equal(
      run.code,
      0,
      `driver ${args.join(" ")}: exit ${run.code} ${run.signal ?? ""}\n${run.stdout}${run.stderr}`,
    );
    return run.stdout;
  } finally {
    clearTimeout(timer);
    killGroup(child.pid);
  }
}

/** Reads a child's stdout until a line matches; returns that line and everything read so far. */
async function readUntil(
  reader: ReadableStreamDefaultReader<string>,
  pattern: RegExp,
  seen = "",
): Promise<{ line: string; seen: string }> {
  for (;;) {
    const line = seen.split("\n").slice(0, -1).find((l) => pattern.test(l));
    if (line !== undefined) return { line, seen };
    const { done, value } = await reader.read();
    if (done) throw new Error(`stdout ended before ${pattern}: ${seen}`);
    seen += value;
  }
}

/**
 * Starts the driver, waits until its stdout has a line matching `pattern` (or
 * until `until` resolves true, polled), waits `delayMs`, SIGKILLs its whole
 * group and checks it was the kill that ended it. Returns what it printed.
 */
async function killDuring(
  args: string[],
  options: { pattern?: RegExp; until?: () => Promise<boolean>; delayMs?: number; env?: Record<string, string> },
): Promise<string> {
  const child = await spawnDriver(args, options.env);
  const stderr = new Response(child.stderr).text();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const backstop = setTimeout(() => killGroup(child.pid), BACKSTOP_MS);
  let seen = "";
  try {
    if (options.pattern) seen = (await readUntil(reader, options.pattern)).seen;
    while (options.until && !(await options.until())) await new Promise((r) => setTimeout(r, 20));
    await new Promise((r) => setTimeout(r, options.delayMs ?? 0));
    killGroup(child.pid);
    const status = await child.status;
    assert.equal(status.signal, "SIGKILL", `it ended before the kill (exit ${status.code}): ${seen}\n${await stderr}`);
    return seen;
  } finally {
    clearTimeout(backstop);
    killGroup(child.pid);
    await reader.cancel().catch(() => {});
    await child.status;
    await stderr;
  }
}

// --- checks on a root ---------------------------------------------------------------------------

async function exists(path: string): Promise<boolean> {
  return await Deno.stat(path).then(() => true, () => false);
}

/** `trained to step N; weights sha256 <hex>` → the hex. */
function finalDigest(stdout: string): string {
  const match = /^trained to step \d+; weights sha256 ([0-9a-f]{64})$/m.exec(stdout);
  assert.ok(match, stdout);
  return match[1];
}

async function resumeJson(root: string) {
  const run = await runCli(["resume", root, "--json", "--log-level", "warn"]);
  return { code: run.code, doc: JSON.parse(run.stdout) };
}

/** Scan of a root after kills: nothing invalid, only staging folders (and latest's temp files) left over. */
async function assertScanAfterKill(root: string): Promise<string[]> {
  const scan = await runCli(["scan", root, "--json", "--stale-after", "0", "--log-level", "warn"]);
  const report = JSON.parse(scan.stdout);
  assert.equal(report.summary.invalid, 0, scan.stdout);
  for (const stray of report.strays) assert.match(stray.name, /^\.latest\.tmp-/, JSON.stringify(stray));
  const staging = report.staging.map((s: { name: string }) => s.name);
  for (const name of staging) assert.match(name, /^\.staging-step-\d+-/);
  assert.equal(scan.code, staging.length ? 1 : 0, scan.stdout + scan.stderr);
  return staging;
}

// --- the tests ----------------------------------------------------------------------------------

Deno.test("pytorch example: torch imports, and the installed torch's weights_only facts hold", async () => {
  const facts = JSON.parse(await driver(["version", "-"]));
  console.log(
    `torch ${facts.torch} (${facts.version.join(".")}), weights_only reads floats: ${facts.weights_only_floats}`,
  );
  // torch 1.13's weights-only unpickler has no BINFLOAT (pytorch/pytorch#94670); 2.0 reads floats.
  assert.equal(facts.weights_only_floats, facts.version[0] >= 2, JSON.stringify(facts));
  await using tmp = await tempDir();
  for (const file of [EXAMPLE, DRIVER]) {
    const out = await new Deno.Command(await torchPython(), {
      args: ["-m", "py_compile", file],
      env: { PYTHONPYCACHEPREFIX: tmp.path },
      stderr: "piped",
    }).output();
    assert.ok(out.success, `${file}: ${new TextDecoder().decode(out.stderr)}`);
  }
});

Deno.test("pytorch example: Adam training through train/save_torch/load_torch, SIGKILLed mid-run, restarts to the weights of an uninterrupted run", async () => {
  await using tmp = await tempDir();
  const expected = finalDigest(await driver(["train", `${tmp.path}/reference`, "12", "2"]));

  const root = `${tmp.path}/root`;
  const delayMs = Math.floor(Math.random() * 300);
  await killDuring(["train", root, "12", "2", "sync", "0.05"], {
    until: () => exists(`${root}/step-4`),
    delayMs,
  });
  const latest = await readLatest(root);
  assert.equal(latest.state, "ok", `kill ${delayMs} ms after step-4`);
  const resumedFrom = Number(latest.name!.slice("step-".length));
  assert.ok(resumedFrom >= 4 && resumedFrom < 12, `latest ${latest.name}`);
  await assertAllValid(root, `after a kill ${delayMs} ms after step-4`);
  await assertScanAfterKill(root);
  console.log(`killed ${delayMs} ms after step-4: latest ${latest.name}, on disk ${(await names(root)).join(" ")}`);

  const restart = await driver(["train", root, "12", "2"]);
  assert.match(restart, new RegExp(`^resuming from ${root}/step-${resumedFrom} \\(step ${resumedFrom}\\)$`, "m"));
  assert.equal(finalDigest(restart), expected, "the same weights and optimizer state as an uninterrupted run");
  assert.deepEqual(await stepDirs(root), ["step-2", "step-4", "step-6", "step-8", "step-10", "step-12"]);
  await assertAllValid(root, "after the restart");

  // A fresh process loads what was committed; on torch 1.13 weights_only=True alone cannot.
  const load = await driver(["load", root]);
  assert.match(load, new RegExp(`^loaded step 12; weights sha256 ${expected}$`, "m"));
  const facts = JSON.parse(await driver(["version", "-"]));
  if (facts.weights_only_floats) {
    assert.match(load, /^weights_only=True loaded it$/m);
  } else {
    assert.match(load, /^weights_only=True refused it: UnpicklingError: .*Weights only load failed/m);
  }
});

Deno.test("pytorch example: SGD training resumes from the previous checkpoint when the newest model.pt has a flipped byte", async () => {
  await using tmp = await tempDir();
  const expected = finalDigest(await driver(["train", `${tmp.path}/reference`, "8", "2", "sync", "0", "sgd"]));
  const root = `${tmp.path}/root`;
  await driver(["train", root, "6", "2", "sync", "0", "sgd"]);
  const modelPt = `${root}/step-6/model.pt`;
  await flipByte(modelPt, Math.floor((await Deno.stat(modelPt)).size / 2));

  const before = await resumeJson(root);
  assert.equal(before.code, 0, JSON.stringify(before.doc));
  assert.equal(before.doc.chosen.name, "step-4");
  assert.equal(before.doc.fallback, true);
  assert.deepEqual(before.doc.rejected.map((r: { name: string }) => r.name), ["step-6"], JSON.stringify(before.doc));

  const run = await driver(["train", root, "8", "2", "sync", "0", "sgd"]);
  assert.match(run, new RegExp(`^resuming from ${root}/step-4 \\(step 4\\)$`, "m"));
  assert.equal(finalDigest(run), expected, "steps 5-8 retrained from step-4 give the uninterrupted run's weights");
  assert.deepEqual(
    await names(`${root}/corrupt`),
    ["step-6", "step-6.quarantine.json"],
    "the damaged step-6 set aside",
  );
  assert.deepEqual(await stepDirs(root), ["step-2", "step-4", "step-6", "step-8"]);
  await assertAllValid(root, "after the retraining");
  assert.equal((await readLatest(root)).name, "step-8");
});

Deno.test("pytorch example: DCP functions detect the installed torch's API (torch < 2.2: a clear DcpUnavailableError, no folder made)", async () => {
  await using tmp = await tempDir();
  const root = `${tmp.path}/root`;
  const facts = JSON.parse(await driver(["version", "-"]));
  const out = await driver(["dcp", root]);
  if (facts.version[0] < 2 || (facts.version[0] === 2 && facts.version[1] < 2)) {
    for (const name of ["save_dcp", "save_dcp_sharded", "load_dcp"]) {
      assert.match(
        out,
        new RegExp(
          `^${name}: DcpUnavailableError: PyTorch DCP is unavailable in torch ${facts.torch.replaceAll(".", "\\.")}: ` +
            "save_dcp/load_dcp need torch >= 2\\.2 .*use save_torch/load_torch",
          "m",
        ),
      );
    }
    assert.equal(await exists(root), false, "nothing was made before the error");
  } else {
    // torch >= 2.2 (not in Debian 12): a one-rank gloo group saves, commits and loads.
    assert.match(out, new RegExp(`^save_dcp: ${root}/step-3$`, "m"));
    assert.match(out, /^load_dcp: step 3, same weights True$/m);
    await assertAllValid(root, "written by save_dcp");
  }
});

Deno.test("pytorch example: two ranks (torch.multiprocessing spawn, gloo on 127.0.0.1) each commit their own torch.save file: one checkpoint, the same path on both, and both resume from it", async () => {
  await using tmp = await tempDir();
  const root = `${tmp.path}/root`;
  const out = await driver(["multirank", root, tmp.path]);
  const reports = out.trim().split("\n").map((line) => JSON.parse(line));
  assert.deepEqual(reports.map((r) => r.rank), [0, 1]);
  for (const report of reports) {
    assert.equal(report.path, `${root}/step-2`, JSON.stringify(report));
    assert.deepEqual(report.paths, [`${root}/step-2`, `${root}/step-2`], "every rank got the same path");
    assert.equal(report.resumed, `${root}/step-2`);
    assert.equal(report.step, 2);
    assert.equal(report.same_weights, true, `rank ${report.rank} loaded back the state it saved`);
  }
  assert.deepEqual(await stepDirs(root), ["step-2"], "published once");
  assert.deepEqual((await names(root)).filter((n) => n.startsWith(".staging-")), [], "no staging or parts left");
  await assertAllValid(root, "committed by two ranks");
  const manifest = JSON.parse(await Deno.readTextFile(`${root}/step-2/ckptkit.manifest.json`));
  assert.deepEqual(manifest.files.map((f: { path: string }) => f.path), ["model-rank-0.pt", "model-rank-1.pt"]);
  assert.equal(manifest.ranks.world_size, 2);
  assert.deepEqual(manifest.ranks.parts.map((p: { rank: number; files: number }) => [p.rank, p.files]), [[0, 1], [
    1,
    1,
  ]], "one file recorded by each rank");
  assert.equal(manifest.run_id, "torch-test-run");
});

Deno.test("pytorch example: AsyncCommitter trains while the commit is in flight (steps counted between Popen and wait), and train_async ends like train", async () => {
  await using tmp = await tempDir();
  const root = `${tmp.path}/overlap`;
  // Every commit of this run is held before its rename until the driver sends SIGUSR1.
  const out = await driver(["async-overlap", root], { CKPTKIT_TEST_PAUSE_AT: "before_rename" });
  const steps = Number(/^steps trained while the commit ran: (\d+)$/m.exec(out)?.[1]);
  assert.ok(steps >= 1, out);
  assert.match(out, new RegExp(`^committed ${root}/step-1; running afterwards: False$`, "m"));
  await assertAllValid(root, "committed in the background");
  assert.equal((await readLatest(root)).name, "step-1");

  const sync = finalDigest(await driver(["train", `${tmp.path}/sync`, "8", "2"]));
  const background = await driver(["train", `${tmp.path}/async`, "8", "2", "async"]);
  assert.equal(finalDigest(background), sync);
  assert.deepEqual(await stepDirs(`${tmp.path}/async`), ["step-2", "step-4", "step-6", "step-8"]);
  assert.deepEqual((await names(`${tmp.path}/async`)).filter((n) => n.startsWith(".staging-")), []);
  await assertAllValid(`${tmp.path}/async`, "committed by train_async");
});

Deno.test("pytorch example: a failed background commit (exit 4, checkpoint_exists) is raised by the next save, once, and at exit", async () => {
  await using tmp = await tempDir();
  const root = `${tmp.path}/root`;
  await driver(["train", root, "2", "2"]); // step-2 is committed by "another run"
  const out = await driver(["async-fail", root]);
  assert.match(
    out,
    new RegExp(
      "^next save raised: step 2, exit 4, reason checkpoint_exists: ckptkit commit of step 2 failed \\(exit 4\\): " +
        `ckptkit: error: ${root}/step-2 already exists; a committed checkpoint is never replaced \\[checkpoint_exists\\]$`,
      "m",
    ),
  );
  assert.match(out, /^step 4 not started: True$/m);
  assert.match(out, new RegExp(`^then committed ${root}/step-4$`, "m"));
  assert.match(out, /^at exit: checkpoint_exists$/m);
  assert.deepEqual(await stepDirs(root), ["step-2", "step-4"]);
  await assertAllValid(root, "after the failed commits");
});

Deno.test("pytorch example: SIGKILL of the whole process during a background commit leaves the previous or the new checkpoint, never a partial one", async () => {
  await using tmp = await tempDir();
  // Held before the rename of step-2: the kill leaves step-1, and the staging folder for scan.
  const held = `${tmp.path}/held`;
  await killDuring(["async-kill", held, "pause"], { pattern: /^paused at step \d+$/ });
  assert.equal((await resumeJson(held)).doc.chosen.name, "step-1");
  assert.deepEqual(await stepDirs(held), ["step-1"]);
  const staging = await assertScanAfterKill(held);
  assert.equal(staging.length, 1, "the killed commit's staging folder is reported");
  assert.match(staging[0], /^\.staging-step-2-/);

  // At a random instant after the commit started: step-1 or a complete step-2.
  const random = `${tmp.path}/random`;
  const delayMs = Math.floor(Math.random() * 600);
  await killDuring(["async-kill", random, "run"], { pattern: /^committing step 2 /, delayMs });
  const chosen = (await resumeJson(random)).doc.chosen.name;
  assert.ok(["step-1", "step-2"].includes(chosen), `killed ${delayMs} ms into the commit: resume chose ${chosen}`);
  await assertAllValid(random, `after a kill ${delayMs} ms into the commit`);
  await assertScanAfterKill(random);
  console.log(`killed ${delayMs} ms into the background commit: resume chose ${chosen}`);

  // Training resumes from either.
  for (const root of [held, random]) {
    const run = await driver(["train", root, "4", "2"]);
    assert.match(run, /^resuming from .*\/step-[12] \(step [12]\)$/m);
    assert.deepEqual((await stepDirs(root)).slice(-1), ["step-4"]);
  }
});

Deno.test("pytorch example: DeepSpeed and Hugging Face paths on real torch, against stand-ins of deepspeed's engine and transformers.TrainerCallback (neither is installable here)", async () => {
  await using tmp = await tempDir();
  const root = `${tmp.path}/root`;
  const out = `${tmp.path}/hf-out`;
  assert.equal((await driver(["standins", root, out])).trim(), "ok");
  assert.deepEqual(await stepDirs(root), ["step-200", "step-300"]);
  assert.deepEqual(await names(out), ["checkpoint-400"], "checkpoint-300 was moved into the root");
  await assertAllValid(root, "written through pytorch_integration.py");
  assert.equal((await validateCheckpoint(`${out}/checkpoint-400`)).ok, true, "sealed in place");
});
