/**
 * Training-script integrations and `export-sums`:
 * - the stdlib Python toy loop (examples/toy_train_with_ckptkit.py) end to
 *   end, and killed with SIGKILL mid-way then restarted: it resumes from the
 *   last committed step and ends with the weights of an uninterrupted run;
 * - both Python examples compile (`python3 -m py_compile`); what
 *   pytorch_integration.py does is run on real torch by
 *   tests/pytorch_example_test.ts (its DeepSpeed and Hugging Face paths
 *   against stand-ins of those two, which are not installable here);
 * - the Deno toy loop (examples/toy_train.ts), which continues a Python run
 *   bit for bit;
 * - `export-sums`: the library, the command in-process, and (pending its
 *   registration in program.ts) the CLI as a subprocess, checked with
 *   coreutils `sha256sum -c`.
 *
 * Every child runs in its own process group (so a kill also reaches the
 * `ckptkit` subprocesses it started), every wait is bounded, and every group
 * is killed in `finally`.
 */

import assert from "node:assert/strict";
import { Command, CommanderError } from "@commander-js/extra-typings";
import { ckptkitFlags, flipByte, names, REPO, runCli, tempDir } from "./_helpers.ts";
import { assertAllValid, stepDirs } from "./_checks.ts";
import { exportSumsCommand } from "../src/cli/export_sums.ts";
import { type CliHandle, type CliIo, type GlobalOptions, runCommand } from "../src/cli/context.ts";
import { CkptkitError } from "../src/errors.ts";
import { exportSums, formatSumsLine, ManifestProblemError } from "../src/core/export_sums.ts";
import { readLatest } from "../src/core/latest.ts";
import { createManifest, serializeManifest } from "../src/core/manifest.ts";
import { validateCheckpoint } from "../src/core/validate.ts";
import { openCheckpointWriter } from "../src/core/writer.ts";

const TOY_PY = `${REPO}/examples/toy_train_with_ckptkit.py`;
const TORCH_PY = `${REPO}/examples/pytorch_integration.py`;
const TOY_TS = `${REPO}/examples/toy_train.ts`;
/** The ckptkit command line the Python examples run: this checkout's cli.ts under the binary's permissions. */
const CKPTKIT_CMD = [Deno.execPath(), "run", "--quiet", ...ckptkitFlags(), `${REPO}/cli.ts`].map(shellQuote).join(" ");

const PYTHON = await findExecutable(["python3", "-c", "import sys; print(sys.executable)"]);
const SHA256SUM = await findExecutable(["sh", "-c", "command -v sha256sum"]);

// --- subprocess helpers -------------------------------------------------------------------------

interface Run {
  code: number;
  signal: Deno.Signal | null;
  stdout: string;
  stderr: string;
}

/** The absolute path a probe prints, or undefined when the tool is missing. */
async function findExecutable([program, ...args]: string[]): Promise<string | undefined> {
  try {
    const out = await new Deno.Command(program, { args, stdout: "piped", stderr: "null" }).output();
    const path = new TextDecoder().decode(out.stdout).trim();
    return out.success && path ? path : undefined;
  } catch {
    return undefined;
  }
}

function shellQuote(arg: string): string {
  return /^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replaceAll("'", `'"'"'`)}'`;
}

/** Kills a child's whole process group (the child and the ckptkit runs it started); never throws. */
function killGroup(pid: number, signal: Deno.Signal = "SIGKILL"): void {
  try {
    Deno.kill(-pid, signal);
  } catch {
    // the group is already gone
  }
}

function inheritedEnv(): Record<string, string> {
  return Object.fromEntries(Object.entries(Deno.env.toObject()).filter(([name]) => !name.startsWith("CKPTKIT")));
}

/** A child in its own process group, with its stdout readable line by line. */
function spawnGroup(
  program: string,
  args: string[],
  options: { env?: Record<string, string>; cwd?: string } = {},
) {
  const child = new Deno.Command(program, {
    args,
    cwd: options.cwd ?? REPO,
    // The test environment's CKPTKIT_* variables (a root, a config) must not leak in.
    env: { ...inheritedEnv(), NO_COLOR: "1", ...options.env },
    clearEnv: true,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    detached: true, // its own process group, so killGroup reaches its children too
  }).spawn();
  return child;
}

/** Runs a program to completion in its own process group, killed after `timeoutMs`. */
async function runBounded(
  program: string,
  args: string[],
  options: { env?: Record<string, string>; cwd?: string; timeoutMs?: number } = {},
): Promise<Run> {
  const child = spawnGroup(program, args, options);
  const timer = setTimeout(() => killGroup(child.pid), options.timeoutMs ?? 120_000);
  try {
    const out = await child.output();
    return {
      code: out.code,
      signal: out.signal,
      stdout: new TextDecoder().decode(out.stdout),
      stderr: new TextDecoder().decode(out.stderr),
    };
  } finally {
    clearTimeout(timer);
    killGroup(child.pid); // an orphaned grandchild, if any
  }
}

/** Runs the Python toy loop with this checkout's ckptkit. */
function toyPy(args: string[], options: { env?: Record<string, string>; timeoutMs?: number } = {}): Promise<Run> {
  return runBounded(PYTHON!, [TOY_PY, ...args], { ...options, env: { CKPTKIT: CKPTKIT_CMD, ...options.env } });
}

function lastLine(text: string): string {
  return text.trimEnd().split("\n").at(-1) ?? "";
}

/** The digest on the final line: `trained to step N (…); weights sha256 <hex>`. */
function finalDigest(run: Run): string {
  const match = /^trained to step \d+ \(.*\); weights sha256 ([0-9a-f]{64})$/.exec(lastLine(run.stdout));
  assert.ok(match, `final line: ${lastLine(run.stdout)}\n${run.stderr}`);
  return match[1];
}

// --- the Python toy loop ------------------------------------------------------------------------

Deno.test({
  name: "python toy loop: trains, commits every step or every N, and resumes",
  ignore: !PYTHON,
  async fn() {
    await using tmp = await tempDir();
    const every = `${tmp.path}/every`;
    const first = await toyPy(["--root", every, "--steps", "5", "--job-id", "toy", "--run-id", "r1"]);
    assert.equal(first.code, 0, first.stderr);
    assert.deepEqual(await stepDirs(every), ["step-1", "step-2", "step-3", "step-4", "step-5"]);
    assert.equal((await readLatest(every)).name, "step-5");
    assert.match(first.stdout, /^no checkpoint to resume from: starting at step 0\n/);
    assert.match(first.stdout, /^step 3: loss \d+\.\d{6} \(committed step-3\)$/m);
    assert.match(lastLine(first.stdout), /^trained to step 5 \(from scratch\); weights sha256 [0-9a-f]{64}$/);
    await assertAllValid(every, "after a clean run");
    const manifest = JSON.parse(await Deno.readTextFile(`${every}/step-5/ckptkit.manifest.json`));
    assert.deepEqual(manifest.files.map((f: { path: string }) => f.path), ["state.json", "weights.bin"]);
    assert.equal(manifest.files[1].size, 2048 * 8);
    assert.equal(manifest.job_id, "toy");
    assert.equal(manifest.run_id, "r1");

    const sparse = `${tmp.path}/sparse`;
    const second = await toyPy(["--root", sparse, "--steps", "5", "--save-every", "2"]);
    assert.equal(second.code, 0, second.stderr);
    assert.deepEqual(await stepDirs(sparse), ["step-2", "step-4", "step-5"], "every 2 steps and the last");
    assert.equal(finalDigest(second), finalDigest(first), "same weights whatever the save interval");

    const more = await toyPy(["--root", sparse, "--steps", "7", "--save-every", "2"]);
    assert.equal(more.code, 0, more.stderr);
    assert.match(more.stdout, new RegExp(`^resuming from ${sparse}/step-5 \\(step 5\\)\n`));
    assert.match(lastLine(more.stdout), /^trained to step 7 \(resumed from step 5\)/);
    assert.deepEqual(await stepDirs(sparse), ["step-2", "step-4", "step-5", "step-6", "step-7"]);
    assert.deepEqual(
      (await names(sparse)).filter((n) => n.startsWith(".staging-")),
      [],
      "no staging folder is left behind",
    );
  },
});

Deno.test({
  name: "python toy loop: stops (exit 1) instead of starting from scratch when every checkpoint is invalid",
  ignore: !PYTHON,
  async fn() {
    await using tmp = await tempDir();
    const root = `${tmp.path}/root`;
    assert.equal((await toyPy(["--root", root, "--steps", "2"])).code, 0);
    for (const name of await stepDirs(root)) await flipByte(`${root}/${name}/weights.bin`, 7);
    const run = await toyPy(["--root", root, "--steps", "4"]);
    assert.equal(run.code, 1, run.stderr);
    assert.doesNotMatch(run.stdout, /starting at step 0/);
    assert.match(run.stderr, /toy_train: no valid checkpoint: 2 checkpoints rejected .* not starting from scratch/);
    assert.deepEqual(await stepDirs(root), ["step-1", "step-2"], "nothing trained, nothing committed");
  },
});

Deno.test({
  name: "python toy loop: finds the checkout's cli.ts through deno when ckptkit is not on PATH",
  ignore: !PYTHON,
  async fn() {
    await using tmp = await tempDir();
    const denoDir = Deno.execPath().replace(/\/[^/]+$/, "");
    const run = await runBounded(PYTHON!, [TOY_PY, "--root", `${tmp.path}/root`, "--steps", "2"], {
      env: { PATH: `${denoDir}:/usr/bin:/bin` },
    });
    assert.equal(run.code, 0, run.stderr);
    assert.deepEqual(await stepDirs(`${tmp.path}/root`), ["step-1", "step-2"]);
  },
});

Deno.test({
  name: "python toy loop: killed with SIGKILL at random instants, a restart resumes and ends with the same weights",
  ignore: !PYTHON,
  async fn() {
    await using tmp = await tempDir();
    const reference = await toyPy(["--root", `${tmp.path}/reference`, "--steps", "20"]);
    assert.equal(reference.code, 0, reference.stderr);
    const expected = finalDigest(reference);

    const root = `${tmp.path}/root`;
    let resumedFrom = 0;
    for (const killAfter of [7, 14]) {
      const delayMs = Math.floor(Math.random() * 400);
      const context = `kill ${delayMs} ms after step ${killAfter}`;
      const child = spawnGroup(PYTHON!, [TOY_PY, "--root", root, "--steps", "20", "--sleep", "0.05"], {
        env: { CKPTKIT: CKPTKIT_CMD },
      });
      const stderr = new Response(child.stderr).text();
      let printed = "";
      try {
        const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
        const deadline = setTimeout(() => killGroup(child.pid), 300_000);
        try {
          while (!new RegExp(`^step ${killAfter}: `, "m").test(printed)) {
            const { done, value } = await reader.read();
            if (done) break;
            printed += value;
          }
          // (No `await stderr` in assertion messages: it would wait for the child to exit.)
          assert.match(printed, new RegExp(`^step ${killAfter}: `, "m"), `${context}: ${printed}`);
          if (resumedFrom > 0) {
            assert.match(
              printed,
              new RegExp(`^resuming from ${root}/step-${resumedFrom} \\(step ${resumedFrom}\\)$`, "m"),
            );
          }
          await new Promise((resolve) => setTimeout(resolve, delayMs));
          killGroup(child.pid);
          const status = await child.status;
          assert.equal(
            status.signal,
            "SIGKILL",
            `${context}: it finished before the kill (exit ${status.code}): ${printed}\n${await stderr}`,
          );
        } finally {
          clearTimeout(deadline);
          await reader.cancel().catch(() => {});
        }
      } finally {
        killGroup(child.pid);
        await child.status;
        await stderr;
      }
      // Whatever the instant: latest names a valid checkpoint at or after the step
      // printed, and every visible checkpoint is complete.
      const latest = await readLatest(root);
      assert.equal(latest.state, "ok", context);
      resumedFrom = Number(latest.name!.slice("step-".length));
      assert.ok(resumedFrom >= killAfter, `${context}: latest is ${latest.name}`);
      await assertAllValid(root, `after a ${context}`);
      console.log(`${context}: latest ${latest.name}, on disk ${(await names(root)).join(" ")}`);
    }

    const restart = await toyPy(["--root", root, "--steps", "20"]);
    assert.equal(restart.code, 0, restart.stderr);
    assert.match(restart.stdout, new RegExp(`^resuming from ${root}/step-${resumedFrom} \\(step ${resumedFrom}\\)\n`));
    assert.match(lastLine(restart.stdout), new RegExp(`^trained to step 20 \\(resumed from step ${resumedFrom}\\);`));
    assert.equal(finalDigest(restart), expected, "the same final weights as an uninterrupted run");
    for (const file of ["state.json", "weights.bin"]) {
      assert.deepEqual(
        await Deno.readFile(`${root}/step-20/${file}`),
        await Deno.readFile(`${tmp.path}/reference/step-20/${file}`),
        `step-20/${file} is byte-identical`,
      );
    }
    assert.deepEqual((await stepDirs(root)).length, 20, "every step committed once, none lost");

    // A scan is clean except for staging folders the kills left behind …
    const scan = await runCli(["scan", root, "--json", "--stale-after", "0", "--log-level", "warn"]);
    const report = JSON.parse(scan.stdout);
    assert.equal(report.summary.invalid, 0, scan.stdout);
    assert.equal(report.latest.state, "ok");
    assert.equal(report.latest.name, "step-20");
    // A kill between writing latest's temporary file and renaming it leaves that file:
    // scan lists it as a stray (a hint, not a failure), and gc does not remove it.
    for (const stray of report.strays) assert.match(stray.name, /^\.latest\.tmp-/, JSON.stringify(stray));
    for (const staging of report.staging) assert.match(staging.name, /^\.staging-step-\d+-/);
    assert.equal(scan.code, report.staging.length ? 1 : 0, scan.stderr);
    // … which gc removes.
    const gc = await runCli(["gc", root, "--stale-after", "0", "--keep-last", "100", "--log-level", "warn"]);
    assert.equal(gc.code, 0, gc.stderr);
    const clean = await runCli(["scan", root, "--json", "--log-level", "warn"]);
    assert.equal(clean.code, 0, clean.stdout);
    assert.deepEqual(JSON.parse(clean.stdout).staging, []);
    assert.equal((await stepDirs(root)).length, 20, "gc kept every checkpoint");
  },
});

/**
 * Starts the toy loop with every `ckptkit commit` pausing at `before_latest_rename`
 * (step-N renamed into place, `latest` not yet moved), waits until step-N appears,
 * and kills the whole group there: the narrowest crash window of the protocol.
 */
async function killAtLatestRename(root: string, step: number): Promise<void> {
  const child = spawnGroup(PYTHON!, [TOY_PY, "--root", root, "--steps", String(step)], {
    env: { CKPTKIT: CKPTKIT_CMD, CKPTKIT_TEST_PAUSE_AT: "before_latest_rename" },
  });
  const output = child.output();
  const latestTemps = async () => (await names(root)).filter((name) => name.startsWith(".latest.tmp-")).length;
  const tempsBefore = await latestTemps();
  try {
    // The commit pauses after writing latest's temporary file, so wait for that file, not only for step-N: a busy
    // machine can otherwise be caught between the two. A backstop of minutes only catches a real hang.
    const deadline = Date.now() + 300_000;
    while (
      !(await Deno.stat(`${root}/step-${step}`).then(() => true, () => false)) || (await latestTemps()) <= tempsBefore
    ) {
      assert.ok(Date.now() < deadline, `step-${step} and latest's temporary file never appeared`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  } finally {
    killGroup(child.pid);
    await output;
  }
  assert.equal((await readLatest(root)).name, `step-${step - 1}`, "killed before latest moved");
}

Deno.test({
  name: "python toy loop: killed between the rename and latest, a restart keeps or quarantines step-N",
  ignore: !PYTHON,
  async fn() {
    await using tmp = await tempDir();
    const reference = await toyPy(["--root", `${tmp.path}/reference`, "--steps", "7"]);
    assert.equal(reference.code, 0, reference.stderr);
    const root = `${tmp.path}/root`;
    assert.equal((await toyPy(["--root", root, "--steps", "3"])).code, 0);

    // step-4 is committed but latest still names step-3: resume takes the newest
    // valid checkpoint, step-4, so no step is trained twice.
    await killAtLatestRename(root, 4);
    const kept = await toyPy(["--root", root, "--steps", "5"]);
    assert.equal(kept.code, 0, kept.stderr);
    assert.match(kept.stdout, /^resuming from .*\/step-4 \(step 4\)$/m);
    assert.match(kept.stdout, /^step 5: .*\(committed step-5\)$/m);

    // The same at step-6, now damaged before the restart: it is quarantined and rewritten.
    await killAtLatestRename(root, 6);
    await flipByte(`${root}/step-6/weights.bin`, 100);
    const replaced = await toyPy(["--root", root, "--steps", "7"]);
    assert.equal(replaced.code, 0, replaced.stderr);
    assert.match(replaced.stdout, /^step 6: .*\(committed step-6, the earlier one quarantined\)$/m);
    assert.equal(finalDigest(replaced), finalDigest(reference));
    assert.deepEqual(await names(`${root}/corrupt`), ["step-6", "step-6.quarantine.json"]);
    await assertAllValid(root, "after the restarts");
    assert.equal((await readLatest(root)).name, "step-7");
    // Each kill left latest's temporary file, which scan reports as a stray (not a failure).
    const scan = await runCli(["scan", root, "--json", "--fast", "--log-level", "warn"]);
    assert.equal(scan.code, 0, scan.stdout);
    const strays = JSON.parse(scan.stdout).strays.map((s: { name: string }) => s.name);
    assert.equal(strays.length, 2, strays.join(" "));
    for (const name of strays) assert.match(name, /^\.latest\.tmp-/);
  },
});

Deno.test({
  name: "both Python examples compile (python3 -m py_compile)",
  ignore: !PYTHON,
  async fn() {
    await using tmp = await tempDir();
    for (const file of [TOY_PY, TORCH_PY]) {
      const run = await runBounded(PYTHON!, ["-m", "py_compile", file], {
        env: { PYTHONPYCACHEPREFIX: tmp.path }, // no __pycache__ in the checkout
        timeoutMs: 300_000,
      });
      assert.equal(run.code, 0, `${file}: ${run.stderr}`);
    }
  },
});

// --- the Deno toy loop --------------------------------------------------------------------------

function toyTs(args: string[]): Promise<Run> {
  return runBounded(Deno.execPath(), [
    "run",
    "--quiet",
    "--allow-read",
    "--allow-write",
    "--allow-env",
    "--allow-sys",
    TOY_TS,
    ...args,
  ]);
}

Deno.test("deno toy loop: trains and commits through the library writer, and resumes", async () => {
  await using tmp = await tempDir();
  const root = `${tmp.path}/root`;
  const run = await toyTs(["--root", root, "--steps", "5", "--save-every", "2"]);
  assert.equal(run.code, 0, run.stderr);
  assert.deepEqual(await stepDirs(root), ["step-2", "step-4", "step-5"]);
  assert.match(run.stdout, /^step 4: loss \d+\.\d{6} \(committed step-4\)$/m);
  assert.match(lastLine(run.stdout), /^trained to step 5 \(from scratch\)/);
  await assertAllValid(root, "written by the Deno loop");
  const again = await toyTs(["--root", root, "--steps", "6"]);
  assert.equal(again.code, 0, again.stderr);
  assert.match(lastLine(again.stdout), /^trained to step 6 \(resumed from step 5\)/);
  assert.equal((await names(root)).filter((n) => n.startsWith(".staging-")).length, 0);
});

Deno.test("deno toy loop: stops (exit 1) instead of starting from scratch when every checkpoint is invalid", async () => {
  await using tmp = await tempDir();
  const root = `${tmp.path}/root`;
  assert.equal((await toyTs(["--root", root, "--steps", "2"])).code, 0);
  for (const name of await stepDirs(root)) await flipByte(`${root}/${name}/weights.bin`, 3);
  const run = await toyTs(["--root", root, "--steps", "3"]);
  assert.equal(run.code, 1, run.stdout + run.stderr);
  assert.match(run.stderr, /toy_train: no valid checkpoint: 2 checkpoints rejected .* not starting from scratch/);
  assert.deepEqual(await stepDirs(root), ["step-1", "step-2"]);
});

Deno.test({
  name: "deno toy loop continues a Python run bit for bit",
  ignore: !PYTHON,
  async fn() {
    await using tmp = await tempDir();
    const python = await toyPy(["--root", `${tmp.path}/py`, "--steps", "6"]);
    assert.equal(python.code, 0, python.stderr);
    const started = await toyPy(["--root", `${tmp.path}/mixed`, "--steps", "3"]);
    assert.equal(started.code, 0, started.stderr);
    const continued = await toyTs(["--root", `${tmp.path}/mixed`, "--steps", "6"]);
    assert.equal(continued.code, 0, continued.stderr);
    assert.match(lastLine(continued.stdout), /\(resumed from step 3\)/);
    assert.equal(finalDigest(continued), finalDigest(python));
    assert.deepEqual(
      await Deno.readFile(`${tmp.path}/mixed/step-6/weights.bin`),
      await Deno.readFile(`${tmp.path}/py/step-6/weights.bin`),
    );
  },
});

// --- export-sums --------------------------------------------------------------------------------

/** Commits a checkpoint with a nested file and a file name holding a newline. */
async function sumsCheckpoint(root: string, algorithm: "sha256" | "xxh128" = "sha256"): Promise<string> {
  const writer = await openCheckpointWriter(root, { step: 10, algorithm });
  await writer.writeFile("model.pt", new Uint8Array(50_000).map((_, i) => (i * 7) & 0xff));
  await writer.writeFile("shards/part 1.bin", "shard one");
  await writer.writeFile("odd\nname.bin", "odd");
  await writer.writeFile("trainer_state.json", JSON.stringify({ step: 10 }));
  return (await writer.commit()).path;
}

async function sha256sumCheck(checkpoint: string, sumsFile: string): Promise<Run> {
  return await runBounded(SHA256SUM!, ["-c", sumsFile], { cwd: checkpoint, env: { LC_ALL: "C" }, timeoutMs: 300_000 });
}

Deno.test("formatSumsLine escapes newlines, carriage returns and backslashes as coreutils does", () => {
  const d = "0".repeat(64);
  assert.equal(formatSumsLine(d, "a b.bin"), `${d}  a b.bin\n`);
  assert.equal(formatSumsLine(d, "a\nb"), `\\${d}  a\\nb\n`);
  assert.equal(formatSumsLine(d, "a\rb\\c"), `\\${d}  a\\rb\\\\c\n`);
});

Deno.test({
  name: "exportSums: sha256sum -c accepts it, matches coreutils' own output, and catches a flipped byte",
  ignore: !SHA256SUM,
  async fn() {
    await using tmp = await tempDir();
    const checkpoint = await sumsCheckpoint(`${tmp.path}/root`);
    const sums = await exportSums(checkpoint);
    assert.equal(sums.split("\n").length - 1, 4, "one line per file, the manifest excluded");
    assert.ok(!sums.includes("ckptkit.manifest.json"));
    const sumsFile = `${tmp.path}/step-10.sha256`;
    await Deno.writeTextFile(sumsFile, sums);

    // Byte for byte what coreutils writes for the same files in the same order.
    const paths = sums.trimEnd().split("\n").map((line) =>
      line.startsWith("\\") ? line.slice(67).replaceAll("\\n", "\n") : line.slice(66)
    );
    const native = await runBounded(SHA256SUM!, ["--", ...paths], { cwd: checkpoint, timeoutMs: 300_000 });
    assert.equal(native.code, 0, native.stderr);
    assert.equal(sums, native.stdout);

    const ok = await sha256sumCheck(checkpoint, sumsFile);
    assert.equal(ok.code, 0, ok.stdout + ok.stderr);
    assert.equal(ok.stdout.match(/: OK$/gm)?.length, 4, ok.stdout);

    await flipByte(`${checkpoint}/model.pt`, 12_345);
    const bad = await sha256sumCheck(checkpoint, sumsFile);
    assert.notEqual(bad.code, 0);
    assert.match(bad.stdout, /^model\.pt: FAILED$/m);
    assert.match(bad.stderr, /1 computed checksum did NOT match/);
  },
});

Deno.test("exportSums refuses xxh128, missing, corrupt and unsafe manifests, and bad paths", async () => {
  await using tmp = await tempDir();
  const xxh = await sumsCheckpoint(`${tmp.path}/xxh`, "xxh128");
  await assert.rejects(exportSums(xxh), (err) => {
    assert.ok(err instanceof CkptkitError && !(err instanceof ManifestProblemError));
    assert.equal(err.reason, "invalid_argument");
    assert.match(err.message, /xxh128 digests, which sha256sum cannot check/);
    return true;
  });

  await Deno.mkdir(`${tmp.path}/bare`);
  await assert.rejects(exportSums(`${tmp.path}/bare`), (err) => {
    assert.ok(err instanceof ManifestProblemError);
    assert.equal(err.problems[0].reason, "manifest_missing");
    return true;
  });

  const corrupt = await sumsCheckpoint(`${tmp.path}/corrupt`);
  const manifestPath = `${corrupt}/ckptkit.manifest.json`;
  await Deno.writeTextFile(manifestPath, (await Deno.readTextFile(manifestPath)).replace('"step": 10', '"step": 11'));
  await assert.rejects(exportSums(corrupt), (err) => {
    assert.ok(err instanceof ManifestProblemError);
    assert.equal(err.problems[0].reason, "manifest_corrupt");
    assert.match(err.message, /self-digest mismatch/);
    return true;
  });

  // A consistent self-digest does not make a path safe: nothing is exported.
  const unsafe = `${tmp.path}/unsafe`;
  await Deno.mkdir(unsafe);
  const digest = "a".repeat(64);
  const manifest = await createManifest({
    job_id: null,
    run_id: null,
    step: 1,
    created_at: new Date(0).toISOString(),
    write_duration_s: 0,
    writer: { host: "h", ckptkit_version: "0.1.0" },
    hash: { algorithm: "sha256", sample_bytes: 0 },
    files: [{ path: "ok.bin", size: 0, digest, samples: [] }, {
      path: "../../etc/passwd",
      size: 0,
      digest,
      samples: [],
    }],
    metadata: {},
  });
  await Deno.writeTextFile(`${unsafe}/ckptkit.manifest.json`, serializeManifest(manifest));
  await assert.rejects(exportSums(unsafe), (err) => {
    assert.ok(err instanceof ManifestProblemError);
    assert.equal(err.reason, "unsafe_path");
    assert.equal(err.problems[0].reason, "unsafe_path");
    return true;
  });

  await assert.rejects(
    exportSums(`${tmp.path}/missing`),
    (err) => err instanceof CkptkitError && err.reason === "not_found",
  );
  await Deno.writeTextFile(`${tmp.path}/file`, "x");
  await assert.rejects(
    exportSums(`${tmp.path}/file`),
    (err) => err instanceof CkptkitError && err.reason === "not_a_folder",
  );
});

/**
 * Runs `export-sums` in-process under a minimal program with the real
 * program's global options and error handling (until the command is
 * registered in src/cli/program.ts, the real CLI does not know it).
 */
async function exportSumsInProcess(args: string[]): Promise<Run> {
  let stdout = "";
  let stderr = "";
  const io: CliIo = {
    stdout: (text) => void (stdout += text),
    stderr: (text) => void (stderr += text),
    env: () => undefined,
  };
  let code = 0;
  const program = new Command("ckptkit")
    .option("--config <path>")
    .option("--json")
    .option("--log-level <level>")
    .exitOverride()
    .configureOutput({ writeOut: io.stdout, writeErr: io.stderr });
  const globals = (): GlobalOptions => program.opts();
  const cli: CliHandle = {
    io,
    globals,
    run: async (body) => {
      code = await runCommand(io, globals(), body);
    },
  };
  const command = exportSumsCommand(cli);
  command.copyInheritedSettings(program);
  program.addCommand(command);
  try {
    await program.parseAsync(args, { from: "user" });
  } catch (err) {
    if (!(err instanceof CommanderError)) throw err;
    code = err.exitCode === 0 ? 0 : 2;
  }
  return { code, signal: null, stdout, stderr };
}

Deno.test({
  name: "export-sums command (in-process): stdout, --output, --json and exit codes",
  ignore: !SHA256SUM,
  async fn() {
    await using tmp = await tempDir();
    const checkpoint = await sumsCheckpoint(`${tmp.path}/root`);
    const printed = await exportSumsInProcess(["export-sums", checkpoint, "--log-level", "warn"]);
    assert.equal(printed.code, 0, printed.stderr);
    assert.equal(printed.stdout, await exportSums(checkpoint), "stdout is the SHA256SUMS text and nothing else");

    const output = `${tmp.path}/SHA256SUMS`;
    const written = await exportSumsInProcess(["export-sums", checkpoint, "--output", output]);
    assert.equal(written.code, 0, written.stderr);
    assert.equal(written.stdout, `wrote ${output} (4 files of ${checkpoint})\n`);
    assert.equal(await Deno.readTextFile(output), printed.stdout);
    assert.deepEqual((await names(tmp.path)).filter((n) => n.includes(".tmp-")), [], "no temp file left");
    assert.equal((await sha256sumCheck(checkpoint, output)).code, 0);

    const json = await exportSumsInProcess(["--json", "export-sums", checkpoint]);
    assert.equal(json.code, 0, json.stderr);
    const doc = JSON.parse(json.stdout);
    assert.equal(doc.ok, true);
    assert.equal(doc.files, 4);
    assert.equal(doc.sums, printed.stdout);

    const inside = await exportSumsInProcess(["export-sums", checkpoint, "--output", `${checkpoint}/SHA256SUMS`]);
    assert.equal(inside.code, 2);
    assert.match(inside.stderr, /inside the checkpoint.*\[invalid_argument\]/);
    assert.equal((await validateCheckpoint(checkpoint)).ok, true, "nothing was written into the checkpoint");

    const xxh = await exportSumsInProcess(["export-sums", await sumsCheckpoint(`${tmp.path}/xxh`, "xxh128")]);
    assert.equal(xxh.code, 2);
    assert.match(xxh.stderr, /^ckptkit: error: .*xxh128.* \[invalid_argument\]$/m);
    assert.equal(xxh.stdout, "");

    const corrupt = await sumsCheckpoint(`${tmp.path}/corrupt`);
    await Deno.writeTextFile(`${corrupt}/ckptkit.manifest.json`, "{not json");
    const refused = await exportSumsInProcess(["--json", "export-sums", corrupt]);
    assert.equal(refused.code, 1, "an untrustworthy manifest is an integrity problem");
    assert.match(refused.stderr, /^ckptkit: error: Cannot export sums of .*\[manifest_corrupt\]$/m);
    assert.equal(JSON.parse(refused.stdout).error.reason, "manifest_corrupt");

    const missing = await exportSumsInProcess(["export-sums", `${tmp.path}/nope`]);
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /\[not_found\]/);
  },
});

// PENDING: this test runs `cli.ts export-sums` as a subprocess, so it fails until
// `exportSumsCommand` is registered in src/cli/program.ts (the in-process test
// above covers the command until then).
Deno.test({
  name: "export-sums CLI subprocess [PENDING registration of exportSumsCommand in src/cli/program.ts]",
  ignore: !SHA256SUM,
  async fn() {
    await using tmp = await tempDir();
    const checkpoint = await sumsCheckpoint(`${tmp.path}/root`);
    const printed = await runCli(["export-sums", checkpoint, "--log-level", "warn"]);
    assert.equal(printed.code, 0, `export-sums is not registered in program.ts yet? ${printed.stderr}`);
    const output = `${tmp.path}/step-10.sha256`;
    const written = await runCli(["export-sums", checkpoint, "--output", output, "--log-level", "warn"]);
    assert.equal(written.code, 0, written.stderr);
    assert.equal(await Deno.readTextFile(output), printed.stdout);
    assert.equal((await sha256sumCheck(checkpoint, output)).code, 0);
    await flipByte(`${checkpoint}/shards/part 1.bin`);
    const bad = await sha256sumCheck(checkpoint, output);
    assert.notEqual(bad.code, 0);
    assert.match(bad.stdout, /^shards\/part 1\.bin: FAILED$/m);

    const xxh = await runCli(["export-sums", await sumsCheckpoint(`${tmp.path}/xxh`, "xxh128")]);
    assert.equal(xxh.code, 2, xxh.stderr);
    const corrupt = await sumsCheckpoint(`${tmp.path}/corrupt`);
    await Deno.writeTextFile(`${corrupt}/ckptkit.manifest.json`, "{}");
    const refused = await runCli(["export-sums", corrupt]);
    assert.equal(refused.code, 1, refused.stderr);
    assert.match(refused.stderr, /\[manifest_corrupt\]/);
  },
});
