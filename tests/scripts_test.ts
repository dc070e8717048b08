/**
 * Tests of `scripts/demo.ts` and `scripts/validate_loop.ts`, run as
 * subprocesses under exactly the permission flags of their `deno task`
 * entries, on roots built by the real CLI in temporary folders.
 */

import assert from "node:assert/strict";
import denoJson from "../deno.json" with { type: "json" };
import { type CliRun, decode, flipByte, names, REPO, runCli, tempDir } from "./_helpers.ts";
import { DEFAULT_INTERVAL_S, parseLoopArgs } from "../scripts/validate_loop.ts";
import { textfileName } from "../src/metrics/textfile.ts";

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
  // No --textfile, --pushgateway or config: the pass exports nothing.
  assert.equal(line.textfile, null);
  assert.equal(line.pushgateway, null);
  assert.equal(line.error, null);
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
  // emit-metrics' own logs stay on stderr.
  assert.ok(
    run.logs.some((l) => l.event === "validation_failed" && l.reason === "hash_mismatch"),
    run.stderr,
  );

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
  // Never hang the suite if the loop misbehaves: it gets minutes (a backstop, not a timing check) to print a line.
  const watchdog = setTimeout(() => child.kill("SIGKILL"), 300_000);
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
      [["--root", root, "--textfile", `${root}/metrics.txt`], /--textfile ".*metrics\.txt": must end in \.prom/],
      [["--root", root, "--pushgateway", "pushgateway:9091"], /--pushgateway "pushgateway:9091": expected an http/],
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

/** One `checkpoint_inventory{status=...}` value of an exposition text. */
function inventory(text: string, status: string): number | undefined {
  const match = new RegExp(`^checkpoint_inventory\\{[^}]*status="${status}"\\} (\\S+)$`, "m").exec(text);
  return match ? Number(match[1]) : undefined;
}

Deno.test("validate-loop --textfile <folder>: each root writes its own file in the collector folder", async () => {
  await using tmp = await tempDir();
  const root = await healthyRoot(tmp.path);
  const folder = `${tmp.path}/collector`;
  await Deno.mkdir(folder);
  const run = await runScript("validate-loop", ["--root", root, "--textfile", folder, "--once"]);
  assert.equal(run.code, 0, run.stderr);
  const [line] = passLines(run.stdout);
  assert.equal(line.textfile, `${folder}/${textfileName(await Deno.realPath(root))}`);
  assert.deepEqual(await names(folder), [String(line.textfile).slice(folder.length + 1)]);
  const bad = await runScript("validate-loop", ["--root", root, "--textfile", `${tmp.path}/nope.txt`, "--once"]);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /must end in \.prom, or be the collector's folder/);
});

Deno.test("validate-loop --textfile: each pass writes the root's metrics to the textfile", async () => {
  await using tmp = await tempDir();
  const root = await healthyRoot(tmp.path);
  const textfile = `${tmp.path}/textfile/ckptkit.prom`;
  await Deno.mkdir(`${tmp.path}/textfile`);
  const run = await runScript("validate-loop", ["--root", root, "--textfile", textfile, "--once"]);
  assert.equal(run.code, 0, run.stderr);
  const [line] = passLines(run.stdout);
  assert.equal(line.ok, true);
  assert.equal(line.textfile, textfile);
  assert.equal(line.pushgateway, null);
  assert.equal(line.checkpoints, 2);
  const text = await Deno.readTextFile(textfile);
  assert.equal(inventory(text, "valid"), 2);
  assert.equal(inventory(text, "invalid"), 0);
  assert.match(text, /^checkpoint_last_success_step\{root="[^"]+",job_id="j",run_id="r"\} 20$/m);
  // Written atomically: nothing but the textfile is left in its folder.
  assert.deepEqual(await names(`${tmp.path}/textfile`), ["ckptkit.prom"]);
  assert.ok(run.logs.some((l) => l.event === "metrics_written" && l.textfile === textfile), run.stderr);

  // The next pass rewrites it: a corrupted checkpoint shows up.
  await flipByte(`${root}/step-20/shard-00001-of-00002.bin`, 100);
  const second = await runScript("validate-loop", ["--root", root, "--textfile", textfile, "--once"]);
  assert.equal(second.code, 1, second.stderr);
  assert.equal(passLines(second.stdout)[0].textfile, textfile);
  const after = await Deno.readTextFile(textfile);
  assert.equal(inventory(after, "valid"), 1);
  assert.equal(inventory(after, "invalid"), 1);
  assert.match(after, /^checkpoint_corrupt_detected\{[^}]*checkpoint="step-20",status="invalid"\} 1$/m);
});

Deno.test("validate-loop: the config's metrics.textfile is written when --textfile is not given", async () => {
  await using tmp = await tempDir();
  const root = await healthyRoot(tmp.path);
  const textfile = `${tmp.path}/from-config.prom`;
  const config = `${tmp.path}/ckptkit.yaml`;
  await Deno.writeTextFile(config, `root: ${root}\nlog_level: warn\nmetrics:\n  textfile: ${textfile}\n`);
  const run = await runScript("validate-loop", ["--config", config, "--fast", "--once"]);
  assert.equal(run.code, 0, run.stderr);
  const [line] = passLines(run.stdout);
  assert.equal(line.textfile, textfile);
  assert.equal(line.depth, "fast");
  assert.equal(inventory(await Deno.readTextFile(textfile), "valid"), 2);
  assert.match(
    await Deno.readTextFile(textfile),
    /^checkpoint_last_validation_duration_seconds\{[^}]*depth="fast"\} /m,
  );
  assert.equal(run.stderr, "", "the config's log_level reaches emit-metrics");
});

Deno.test("validate-loop --pushgateway: pushes each pass; a refused push exits 4 and the loop goes on", async () => {
  await using tmp = await tempDir();
  const root = await healthyRoot(tmp.path);
  const pushes: { method: string; path: string; body: string }[] = [];
  await using gateway = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (request) => {
    pushes.push({ method: request.method, path: new URL(request.url).pathname, body: await request.text() });
    return new Response("");
  });
  const url = `http://127.0.0.1:${gateway.addr.port}/metrics`;
  const run = await runScript("validate-loop", ["--root", root, "--pushgateway", url, "--once"]);
  assert.equal(run.code, 0, run.stderr);
  const [line] = passLines(run.stdout);
  assert.equal(line.ok, true);
  assert.equal(line.textfile, null);
  assert.match(String(line.pushgateway), new RegExp(`^${url}/job/ckptkit/job_id@base64/`));
  assert.equal(pushes.length, 1);
  assert.equal(pushes[0].method, "PUT");
  assert.equal(inventory(pushes[0].body, "valid"), 2);

  // Nothing listens on a closed port: every attempt is refused.
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const refused = `http://127.0.0.1:${(listener.addr as Deno.NetAddr).port}/metrics`;
  listener.close();
  const textfile = `${tmp.path}/ckptkit.prom`;
  const failing = await runScript("validate-loop", [
    "--root",
    root,
    "--pushgateway",
    refused,
    "--textfile",
    textfile,
    "--interval",
    "1s",
    "--max-runs",
    "2",
  ]);
  assert.equal(failing.code, 4, failing.stderr);
  const lines = passLines(failing.stdout);
  assert.equal(lines.length, 2, failing.stdout);
  for (const pass of lines) {
    assert.equal(pass.ok, false);
    assert.equal(pass.exit_code, 4);
    assert.equal((pass.error as { reason: string }).reason, "push_failed");
    assert.equal(pass.pushgateway, null);
  }
  // The textfile is written before the push is tried.
  assert.equal(inventory(await Deno.readTextFile(textfile), "valid"), 2);
});
