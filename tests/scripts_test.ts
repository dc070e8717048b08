/**
 * Tests of `scripts/demo.ts` and `scripts/validate_loop.ts`, run as
 * subprocesses under exactly the permission flags of their `deno task`
 * entries, on roots built by the real CLI in temporary folders.
 */

import assert from "node:assert/strict";
import denoJson from "../deno.json" with { type: "json" };
import { type CliRun, decode, flipByte, names, REPO, runCli, tempDir } from "./_helpers.ts";
import { DEFAULT_INTERVAL_S, parseLoopArgs } from "../scripts/validate_loop.ts";

type ScriptTask = "demo" | "validate-loop";

/** The permission flags of a script's task, parsed from deno.json. */
function taskFlags(task: ScriptTask): { flags: string[]; script: string } {
  const command = denoJson.tasks[task];
  const match = /^deno run (.*) (scripts\/\S+\.ts)$/.exec(command);
  if (!match) throw new Error(`unexpected ${task} task: ${command}`);
  return { flags: match[1].split(/\s+/), script: match[2] };
}

/**
 * The environment of a script run: this process's, minus CKPTKIT_* variables
 * (which would change what the scripts do), plus `extra`.
 */
function scriptEnv(extra: Record<string, string> = {}): Record<string, string> {
  const env = Object.fromEntries(
    Object.entries(Deno.env.toObject()).filter(([name]) => !name.startsWith("CKPTKIT_")),
  );
  return { ...env, NO_COLOR: "1", ...extra };
}

function scriptCommand(
  task: ScriptTask,
  args: string[],
  options: { cwd?: string; env?: Record<string, string> } = {},
): Deno.Command {
  const { flags, script } = taskFlags(task);
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "--quiet", ...flags, `${REPO}/${script}`, ...args],
    cwd: options.cwd ?? REPO,
    env: scriptEnv(options.env),
    clearEnv: true,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  });
}

async function runScript(
  task: ScriptTask,
  args: string[],
  options: { cwd?: string; env?: Record<string, string> } = {},
): Promise<CliRun> {
  return decode(await scriptCommand(task, args, options).output());
}

/** Writes a small checkpoint with the CLI. */
async function writeCheckpoint(root: string, step: number): Promise<void> {
  const run = await runCli([
    "write",
    "--root",
    root,
    "--job-id",
    "j",
    "--run-id",
    "r",
    "--step",
    String(step),
    "--files",
    "2",
    "--file-size",
    "4096",
    "--log-level",
    "warn",
  ]);
  assert.equal(run.code, 0, run.stderr);
}

/** A root holding step-10 and step-20. */
async function healthyRoot(dir: string): Promise<string> {
  const root = `${dir}/root`;
  await writeCheckpoint(root, 10);
  await writeCheckpoint(root, 20);
  return root;
}

/** The validation_pass lines a validate-loop run printed. */
function passLines(stdout: string): Record<string, unknown>[] {
  const lines = stdout.split("\n").filter((line) => line !== "");
  return lines.map((line) => JSON.parse(line));
}

Deno.test("the script tasks use the same permission flags as the ckptkit task", () => {
  const cli = /^deno run (.*) cli\.ts$/.exec(denoJson.tasks.ckptkit)?.[1];
  assert.equal(taskFlags("demo").flags.join(" "), cli);
  assert.equal(taskFlags("validate-loop").flags.join(" "), cli);
});

Deno.test("demo: the tour runs on ./demo-root, catches the bit rot and resumes from step-20", async () => {
  await using tmp = await tempDir();
  const run = await runScript("demo", [], { cwd: tmp.path });
  assert.equal(run.code, 0, run.stdout + run.stderr);
  const root = `${tmp.path}/demo-root`;
  const entries = await names(root);
  for (const name of [".ckptkit-demo", "latest", "step-10", "step-20", "step-30"]) {
    assert.ok(entries.includes(name), `${name} in ${entries}`);
  }
  assert.match(
    run.stdout,
    /^\$ ckptkit write --root demo-root --job-id demo --run-id run1 --step 10 --files 3 --file-size 1MiB$/m,
  );
  assert.match(run.stdout, /hash_mismatch/);
  assert.ok(
    run.stdout.includes(`\n${root}/step-20\n`),
    "resume printed the path of step-20",
  );
  assert.match(run.stdout, /Every step behaved as expected/);
  // Exactly one info line shows that logs exist; the rest runs at warn.
  assert.equal(
    run.logs.filter((l) => l.severity === "info").length,
    1,
    run.stderr,
  );
  assert.equal(run.logs[0].event, "checkpoint_committed");

  // A second run recognises its own root and starts it afresh.
  await Deno.writeTextFile(`${root}/step-30/leftover.bin`, "x");
  const again = await runScript("demo", [], { cwd: tmp.path });
  assert.equal(again.code, 0, again.stdout + again.stderr);
  assert.match(again.stdout, /previous demo root/);
  assert.deepEqual(await names(`${root}/step-30`), [
    "ckptkit.manifest.json",
    "shard-00000-of-00003.bin",
    "shard-00001-of-00003.bin",
    "shard-00002-of-00003.bin",
    "trainer_state.json",
  ]);
});

Deno.test("demo: refuses to wipe a folder that is not a previous demo root", async () => {
  await using tmp = await tempDir();
  const precious = `${tmp.path}/precious`;
  await Deno.mkdir(precious);
  await Deno.writeTextFile(`${precious}/notes.txt`, "keep me");

  const run = await runScript("demo", ["--root", precious], { cwd: tmp.path });
  assert.notEqual(run.code, 0);
  assert.match(run.stderr, /not empty and has no \.ckptkit-demo marker/);
  assert.match(run.stderr, /refusing to delete it/);
  assert.deepEqual(await names(precious), ["notes.txt"]);
  assert.equal(await Deno.readTextFile(`${precious}/notes.txt`), "keep me");

  // The marker alone is not enough when the folder holds someone's files.
  await Deno.writeTextFile(`${precious}/.ckptkit-demo`, "");
  const marked = await runScript("demo", ["--root", precious], {
    cwd: tmp.path,
  });
  assert.notEqual(marked.code, 0);
  assert.match(marked.stderr, /"notes\.txt", which the demo never creates/);
  assert.deepEqual(await names(precious), [".ckptkit-demo", "notes.txt"]);
});

Deno.test("demo: bad flags exit 2", async () => {
  const run = await runScript("demo", ["--rot", "x"]);
  assert.equal(run.code, 2);
  assert.match(run.stderr, /^demo: .*'--rot'/);
});

Deno.test("validate-loop --once: a healthy root prints one ok line and exits 0", async () => {
  await using tmp = await tempDir();
  const root = await healthyRoot(tmp.path);
  const run = await runScript("validate-loop", ["--root", root, "--once"]);
  assert.equal(run.code, 0, run.stderr);
  const lines = passLines(run.stdout);
  assert.equal(lines.length, 1, run.stdout);
  const [line] = lines;
  assert.equal(line.event, "validation_pass");
  assert.equal(line.root, root);
  assert.equal(line.ok, true);
  assert.equal(line.checkpoints, 2);
  assert.equal(line.valid, 2);
  assert.equal(line.invalid, 0);
  assert.equal(line.depth, "full");
  assert.equal(typeof line.duration_s, "number");
  assert.ok(!Number.isNaN(Date.parse(String(line.ts))), String(line.ts));
  // The scan's own logs stay on stderr.
  assert.ok(run.logs.some((l) => l.event === "scan_completed"), run.stderr);
});

Deno.test("validate-loop --once: a corrupted checkpoint gives ok false and exit 1", async () => {
  await using tmp = await tempDir();
  const root = await healthyRoot(tmp.path);
  await flipByte(`${root}/step-20/shard-00000-of-00002.bin`, 2048);
  const run = await runScript("validate-loop", ["--root", root, "--once"]);
  assert.equal(run.code, 1, run.stderr);
  const lines = passLines(run.stdout);
  assert.equal(lines.length, 1, run.stdout);
  assert.equal(lines[0].ok, false);
  assert.equal(lines[0].valid, 1);
  assert.equal(lines[0].invalid, 1);
  assert.equal(lines[0].exit_code, 1);

  // --fast reads no file data, so the flipped byte goes unnoticed.
  const fast = await runScript("validate-loop", [
    "--root",
    root,
    "--once",
    "--fast",
  ]);
  assert.equal(fast.code, 0, fast.stderr);
  assert.equal(passLines(fast.stdout)[0].depth, "fast");
});

Deno.test("validate-loop: --interval 1s --max-runs 2 prints two passes a second apart", async () => {
  await using tmp = await tempDir();
  const root = await healthyRoot(tmp.path);
  const run = await runScript("validate-loop", [
    "--root",
    root,
    "--interval",
    "1s",
    "--max-runs",
    "2",
  ]);
  assert.equal(run.code, 0, run.stderr);
  const lines = passLines(run.stdout);
  assert.equal(lines.length, 2, run.stdout);
  assert.ok(lines.every((l) => l.ok === true));
  const gap = Date.parse(String(lines[1].ts)) - Date.parse(String(lines[0].ts));
  assert.ok(gap >= 900, `passes ${gap} ms apart`);
});

Deno.test("validate-loop: the root comes from CKPTKIT_ROOT or the config's root", async () => {
  await using tmp = await tempDir();
  const root = await healthyRoot(tmp.path);
  const fromEnv = await runScript("validate-loop", ["--once"], {
    env: { CKPTKIT_ROOT: root },
  });
  assert.equal(fromEnv.code, 0, fromEnv.stderr);
  assert.equal(passLines(fromEnv.stdout)[0].root, root);

  const config = `${tmp.path}/ckptkit.yaml`;
  await Deno.writeTextFile(config, `root: ${root}\nlog_level: warn\n`);
  const fromConfig = await runScript("validate-loop", [
    "--config",
    config,
    "--once",
  ]);
  assert.equal(fromConfig.code, 0, fromConfig.stderr);
  assert.equal(passLines(fromConfig.stdout)[0].root, root);
  assert.equal(fromConfig.stderr, "", "the config's log_level reaches scan");
});

Deno.test("validate-loop: SIGTERM between passes stops it cleanly with exit 0", async () => {
  await using tmp = await tempDir();
  const root = await healthyRoot(tmp.path);
  const child = scriptCommand("validate-loop", [
    "--root",
    root,
    "--interval",
    "1h",
  ]).spawn();
  const stderr = new Response(child.stderr).text();
  // Never hang the suite if the loop misbehaves: it gets 30 s to print a line.
  const watchdog = setTimeout(() => child.kill("SIGKILL"), 30_000);
  let stdout = "";
  let signalled = false;
  for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) {
    stdout += chunk;
    // The first line is out, so the loop is now waiting for the next pass.
    if (!signalled && stdout.includes("\n")) {
      child.kill("SIGTERM");
      signalled = true;
    }
  }
  const status = await child.status;
  clearTimeout(watchdog);
  assert.equal(status.code, 0, await stderr);
  assert.equal(passLines(stdout).length, 1);
  assert.match(await stderr, /SIGTERM received, stopped after 1 pass/);
});

Deno.test("validate-loop: bad flags exit 2 with a one-line error", async () => {
  await using tmp = await tempDir();
  const root = await healthyRoot(tmp.path);
  for (
    const [args, message] of [
      [["--root", root, "--bogus"], /Unknown option '--bogus'/],
      [["--root", root, "--interval", "5x"], /--interval "5x"/],
      [["--root", root, "--interval", "0"], /above zero/],
      [["--root", root, "--max-runs", "0"], /--max-runs "0"/],
      [["--root", root, "--sample-bytes", "lots"], /--sample-bytes "lots"/],
      [["--root", root, "--fast", "--sample-bytes", "4KiB"], /together/],
      [["--root", root, "--once", "--max-runs", "2"], /together/],
      [["--root", root, "extra"], /Unexpected argument 'extra'/],
      [["--once"], /no checkpoint root/],
    ] as const
  ) {
    const run = await runScript("validate-loop", [...args]);
    assert.equal(run.code, 2, `${args.join(" ")}: ${run.stderr}`);
    assert.equal(run.stdout, "", args.join(" "));
    assert.match(run.stderr, message);
    assert.equal(run.stderr.trimEnd().split("\n").length, 1, run.stderr);
  }
});

Deno.test("validate-loop: --interval accepts 30, 30s, 5m and 1h", async () => {
  const env = (_: string) => undefined;
  for (
    const [value, seconds] of [
      ["30", 30],
      ["30s", 30],
      ["5m", 300],
      ["1h", 3600],
    ] as const
  ) {
    const options = await parseLoopArgs(["--root", "r", "--interval", value], env);
    assert.ok(options !== "help");
    assert.equal(options.intervalS, seconds);
  }
  const defaults = await parseLoopArgs(["--root", "r"], env);
  assert.ok(defaults !== "help");
  assert.equal(defaults.intervalS, DEFAULT_INTERVAL_S);
  assert.equal(defaults.maxRuns, undefined);
  assert.deepEqual(defaults.depthArgs, []);
});
