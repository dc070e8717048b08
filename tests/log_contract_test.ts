/**
 * The log contract (docs/scripting.md, "Logs"), checked on every event the code can
 * emit: the list of events is read from the source (every `.log(severity,
 * "event"` call in src/), so a new event fails this test until it is produced
 * here; each is produced for real by the CLI on real roots, and every line
 * is checked: `ts`, `severity`, `event`, an absolute `checkpoint_path`,
 * `job_id`/`run_id`/`step` where a manifest names them, a documented `reason`.
 * Then the formats: JSON on a pipe, text on a terminal (a pty from
 * util-linux `script`), JSON on a terminal with `--log-format json`.
 */

import assert from "node:assert/strict";
import { ERROR_REASONS } from "../src/errors.ts";
import { LOG_REASONS } from "../src/log.ts";
import { PROBLEM_REASONS } from "../src/problems.ts";
import { readDoc, section as sectionOf } from "./_docs.ts";
import { ckptkitFlags, cliCommand, type CliRun, decode, REPO, runCli, tempDir } from "./_helpers.ts";

type Line = Record<string, unknown>;

/** Every event name logged by src/, from the source: `.log("info", "event", …)` and `.log(severity, "event", …)`. */
async function eventsInSource(): Promise<Set<string>> {
  const events = new Set<string>();
  const walk = async (dir: string): Promise<void> => {
    for await (const entry of Deno.readDir(dir)) {
      const path = `${dir}/${entry.name}`;
      if (entry.isDirectory) await walk(path);
      else if (entry.name.endsWith(".ts")) {
        // Doc comments hold examples, not events.
        const text = (await Deno.readTextFile(path)).replace(/\/\*\*[\s\S]*?\*\//g, "");
        const literal = [...text.matchAll(/\blogger\.log\(\s*[^,()]+(?:\([^()]*\))?[^,()]*,\s*"([a-z_]+)"/g)];
        for (const [, event] of literal) events.add(event);
        // An event name this test cannot read (a variable, a ternary) would hide an event from it.
        assert.equal(
          (text.match(/\blogger\.log\(/g) ?? []).length,
          literal.length,
          `${path}: event names must be literals`,
        );
      }
    }
  };
  await walk(`${REPO}/src`);
  return events;
}

/** The "Logs" section of docs/scripting.md. */
async function logsSection(): Promise<string> {
  return sectionOf(await readDoc("docs/scripting.md"), "## Logs", "docs/scripting.md");
}

/**
 * Events whose identity may be null in a named root (see docs/scripting.md, "Logs"): a refused seal wrote no manifest, a
 * usage error may come before any is read, and `serve` starts listening before its first pass reads one.
 */
const NO_IDENTITY_EVENTS = new Set(["seal_refused", "error", "exporter_started"]);

/** Events about no checkpoint in particular whose step may be null even in a named root (see docs/scripting.md, "Logs"). */
const STEPLESS = new Set(["stale_staging", "metrics_deleted", "exporter_started", "gc_delete"]);

const REASONS = new Set<string>([...ERROR_REASONS, ...PROBLEM_REASONS, ...LOG_REASONS]);

function checkLine(line: Line, named: boolean): void {
  const where = JSON.stringify(line);
  assert.equal(typeof line.ts, "string", where);
  assert.ok(!Number.isNaN(Date.parse(line.ts as string)), where);
  assert.ok(["debug", "info", "warn", "error"].includes(line.severity as string), where);
  assert.match(line.event as string, /^[a-z_]+$/, where);
  for (const key of ["run_id", "job_id", "step", "checkpoint_path", "reason"]) {
    assert.ok(key in line, `${key}: ${where}`);
  }
  if (line.checkpoint_path !== null) {
    assert.match(line.checkpoint_path as string, /^\//, `checkpoint_path absolute: ${where}`);
    assert.doesNotMatch(line.checkpoint_path as string, /\/\.\.?(\/|$)|:\/\//, where);
  }
  for (const key of ["quarantine_path", "target"]) {
    if (typeof line[key] === "string") assert.match(line[key] as string, /^\//, `${key} absolute: ${where}`);
  }
  if (line.reason !== null) assert.ok(REASONS.has(line.reason as string), `undocumented reason: ${where}`);
  if (named && !NO_IDENTITY_EVENTS.has(line.event as string)) {
    assert.equal(line.job_id, "job", `job_id: ${where}`);
    assert.equal(line.run_id, "run", `run_id: ${where}`);
    if (!STEPLESS.has(line.event as string)) {
      assert.equal(typeof line.step, "number", `step: ${where}`);
    }
  }
  if (line.event === "gc_delete" && line.reason === "retention") assert.equal(typeof line.step, "number", where);
  if (line.event === "resume_selected" && line.fallback) assert.notEqual(line.reason, null, where);
}

async function ckptkit(cwd: string, ...args: string[]): Promise<CliRun> {
  return await runCli(["--log-level", "debug", ...args], { cwd });
}

/** A checkpoint written by the CLI with the identity every line must carry. */
async function write(cwd: string, root: string, step: number, ...extra: string[]): Promise<CliRun> {
  const run = await ckptkit(
    cwd,
    "write",
    "--root",
    root,
    "--step",
    String(step),
    "--job-id",
    "job",
    "--run-id",
    "run",
    ...extra,
  );
  assert.equal(run.code, 0, run.stderr);
  return run;
}

async function flip(path: string): Promise<void> {
  const file = await Deno.open(path, { read: true, write: true });
  try {
    const byte = new Uint8Array(1);
    await file.seek(10, Deno.SeekMode.Start);
    await file.read(byte);
    byte[0] ^= 0xff;
    await file.seek(10, Deno.SeekMode.Start);
    await file.write(byte);
  } finally {
    file.close();
  }
}

/** A port nothing listens on. */
function closedPort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

Deno.test("every event the code logs keeps the contract, produced for real", async () => {
  await using tmp = await tempDir();
  const cwd = tmp.path;
  const lines: { line: Line; named: boolean }[] = [];
  const keep = (run: CliRun, named = true) => {
    for (const line of run.logs) lines.push({ line, named });
    return run;
  };
  // Relative paths on purpose: every checkpoint_path must come out absolute.
  for (const step of [10, 20, 30, 40]) keep(await write(cwd, "R", step));
  // A corrupt newest checkpoint: validate, scan (latest invalid, a stale staging folder), resume with fallback.
  await flip(`${cwd}/R/step-40/shard-00000-of-00004.bin`);
  keep(await ckptkit(cwd, "validate", "R/step-40"));
  keep(await ckptkit(cwd, "validate", "R/./step-30", "--fast"));
  await Deno.mkdir(`${cwd}/R/.staging-step-50-crashed`);
  await Deno.writeTextFile(`${cwd}/R/.staging-step-50-crashed/part`, "x");
  await new Promise((resolve) => setTimeout(resolve, 1100));
  keep(await ckptkit(cwd, "scan", "R", "--fast", "--stale-after", "1"));
  keep(await ckptkit(cwd, "resume", "R"));
  // Sharded validation and its merge.
  keep(await ckptkit(cwd, "validate", "R/step-30", "--shard", "0/1", "--report", "shard.json"));
  keep(await ckptkit(cwd, "report", "merge", "shard.json"));
  // More than 100 problems in one checkpoint: truncated.
  keep(await write(cwd, "M", 5, "--files", "120", "--file-size", "16"));
  for await (const entry of Deno.readDir(`${cwd}/M/step-5`)) {
    if (entry.name.startsWith("shard-")) await Deno.remove(`${cwd}/M/step-5/${entry.name}`);
  }
  keep(await ckptkit(cwd, "validate", "M/step-5", "--fast"));
  // Metrics: a textfile, a Pushgateway that answers, one that does not (push_failed).
  const pushes: string[] = [];
  await using gateway = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (request) => {
    pushes.push(request.method);
    return new Response(null, { status: request.method === "DELETE" ? 202 : 200 });
  });
  const pushgateway = `http://127.0.0.1:${gateway.addr.port}`;
  keep(await ckptkit(cwd, "emit-metrics", "R", "--fast", "--textfile", "m.prom", "--pushgateway", pushgateway));
  keep(await ckptkit(cwd, "emit-metrics", "R", "--delete", "--pushgateway", pushgateway));
  const failed = keep(
    await ckptkit(
      cwd,
      "emit-metrics",
      "R",
      "--fast",
      "--pushgateway",
      `http://127.0.0.1:${closedPort()}`,
      "--push-attempts",
      "1",
    ),
  );
  assert.equal(failed.code, 4, failed.stderr);
  const pushFailed = failed.logs.find((l) => l.event === "error")!;
  assert.equal(pushFailed.reason, "push_failed");
  assert.match(pushFailed.url as string, /^http:\/\/127\.0\.0\.1:\d+/);
  assert.equal(pushFailed.checkpoint_path, `${cwd}/R`);
  // Quarantine the corrupt checkpoint latest names: latest moves.
  keep(await ckptkit(cwd, "quarantine", "R/step-40"));
  // A repair: latest names an invalid checkpoint; resume --repair quarantines it and rewrites latest.
  await flip(`${cwd}/R/step-30/shard-00001-of-00004.bin`);
  keep(await ckptkit(cwd, "resume", "R", "--repair"));
  // gc deletes one by retention and a stale staging folder.
  await new Promise((resolve) => setTimeout(resolve, 1100));
  keep(await ckptkit(cwd, "gc", "R", "--keep-last", "1", "--stale-after", "1"));
  // Nothing to resume from: every checkpoint invalid.
  keep(await write(cwd, "N", 7));
  await flip(`${cwd}/N/step-7/shard-00000-of-00004.bin`);
  keep(await ckptkit(cwd, "resume", "N"));
  // Seal: an unsealed folder, and one --all refuses (a symbolic link inside).
  await Deno.mkdir(`${cwd}/S/step-3`, { recursive: true });
  await Deno.writeTextFile(`${cwd}/S/step-3/model.bin`, "weights");
  keep(await ckptkit(cwd, "seal", "S/step-3", "--job-id", "job", "--run-id", "run"));
  await Deno.mkdir(`${cwd}/S/step-4`);
  await Deno.symlink("/etc/hostname", `${cwd}/S/step-4/link`);
  await Deno.writeTextFile(`${cwd}/S/step-4/model.bin`, "weights");
  await Deno.mkdir(`${cwd}/S/step-5`);
  await Deno.writeTextFile(`${cwd}/S/step-5/model.bin`, "weights");
  keep(await ckptkit(cwd, "seal", "S", "--all", "--job-id", "job", "--run-id", "run"));
  // Multi-rank: rank 0 records its part, rank 1 completes the set.
  const stage = "T/.staging-step-8-job";
  await Deno.mkdir(`${cwd}/${stage}`, { recursive: true });
  for (const rank of [0, 1]) await Deno.writeTextFile(`${cwd}/${stage}/rank-${rank}.pt`, `rank ${rank}`);
  for (const rank of [0, 1]) {
    const run = keep(
      await ckptkit(
        cwd,
        "commit",
        stage,
        "--root",
        "T",
        "--step",
        "8",
        "--job-id",
        "job",
        "--run-id",
        "run",
        "--rank",
        String(rank),
        "--world-size",
        "2",
        "--rank-files",
        `rank-${rank}.pt`,
      ),
    );
    assert.equal(run.code, 0, run.stderr);
  }
  // The root's state cannot be written: state.json is a folder.
  keep(await write(cwd, "W", 1));
  await Deno.remove(`${cwd}/W/.ckptkit/state.json`);
  await Deno.mkdir(`${cwd}/W/.ckptkit/state.json`);
  keep(await ckptkit(cwd, "validate", "W/step-1")); // full: a clean fast validation records nothing
  // serve: passes that find the same problem (logged once), then the problem resolved, then a failed pass.
  for (const step of [1, 2]) keep(await write(cwd, "V", step));
  await Deno.remove(`${cwd}/V/step-2/shard-00000-of-00004.bin`); // found by --fast
  keep(
    await serve(cwd, "V", async () => {
      await Deno.remove(`${cwd}/V/step-2`, { recursive: true });
      await Deno.writeTextFile(`${cwd}/V/latest`, "step-1\n");
    }, async () => {
      await Deno.rename(`${cwd}/V`, `${cwd}/V.gone`);
    }),
  );

  // Every line keeps the contract.
  for (const { line, named } of lines) checkLine(line, named);
  // Every event the code can log was produced.
  const produced = new Set(lines.map(({ line }) => line.event as string));
  const missing = [...await eventsInSource()].filter((event) => !produced.has(event));
  assert.deepEqual(missing, [], "events never produced by this test");
  // docs/scripting.md documents every event and every reason.
  const section = await logsSection();
  for (const event of await eventsInSource()) {
    assert.ok(section.includes(`\`${event}\``), `docs/scripting.md Logs: ${event}`);
  }
  for (const reason of REASONS) {
    assert.ok(section.includes(`\`${reason}\``), `docs/scripting.md Logs reason: ${reason}`);
  }
  // The specifics the issue reported.
  const of = (event: string) => lines.map(({ line }) => line).filter((l) => l.event === event);
  assert.ok(of("resume_selected").some((l) => l.fallback === true && l.reason === "hash_mismatch"));
  assert.ok(of("checkpoint_quarantined").every((l) => (l.quarantine_path as string).includes("/corrupt/")));
  assert.ok(of("latest_rewritten").every((l) => !(l.checkpoint_path as string).includes("/corrupt/")));
  assert.ok(of("latest_rewritten").every((l) => typeof l.step === "number"));
  assert.ok(pushes.includes("PUT") && pushes.includes("DELETE"), pushes.join());
});

/**
 * Runs `serve` on `root` with a 1 s interval: two passes that see the same
 * problem, then `fix` and a pass that sees it resolved, then `breakIt` and a
 * pass that fails; SIGTERM. Checks the repeated states were logged at their
 * severity once and at debug after.
 */
async function serve(
  cwd: string,
  root: string,
  fix: () => Promise<void>,
  breakIt: () => Promise<void>,
): Promise<CliRun> {
  const child = cliCommand(
    ["--log-level", "debug", "serve", root, "--fast", "--interval", "1", "--no-watch", "--listen", "127.0.0.1:0"],
    { cwd },
  ).spawn();
  const [watch, collect] = child.stderr.tee();
  const stderr = new Response(collect).text();
  const stdout = new Response(child.stdout).arrayBuffer();
  const reader = watch.pipeThrough(new TextDecoderStream()).getReader();
  let seen = "";
  const passes = async (n: number) => {
    while ((seen.match(/"event":"validation_pass(_failed)?"/g) ?? []).length < n) {
      const { done, value } = await reader.read();
      if (done) throw new Error(`serve ended: ${seen}`);
      seen += value;
    }
  };
  await passes(3);
  await fix();
  await passes(5);
  await breakIt();
  await passes(7);
  child.kill("SIGTERM");
  // Drain the watching branch so the tee does not hold the output back.
  (async () => {
    while (!(await reader.read()).done);
  })();
  const status = await child.status;
  const run = decode({
    code: status.code,
    signal: null,
    success: status.success,
    stdout: new Uint8Array(await stdout),
    stderr: new TextEncoder().encode(await stderr),
  });
  assert.equal(run.code, 0, run.stderr);
  const failures = run.logs.filter((l) => l.event === "validation_failed");
  assert.ok(failures.length >= 3, run.stderr);
  assert.equal(failures.filter((l) => l.severity === "warn").length, 1, "a problem seen on every pass is warned once");
  assert.ok(run.logs.some((l) => l.event === "problem_resolved" && l.resolved === "validation_failed"), run.stderr);
  assert.equal(run.logs.filter((l) => l.event === "validation_pass" && l.severity === "info").length <= 3, true);
  return run;
}

Deno.test("log format: JSON on a pipe, text on a terminal, JSON on a terminal when asked", async () => {
  await using tmp = await tempDir();
  const root = `${tmp.path}/R`;
  const piped = await runCli(["write", "--root", root, "--step", "1", "--job-id", "job", "--run-id", "run"]);
  assert.equal(piped.code, 0, piped.stderr);
  assert.equal(piped.logs.length, 1);
  assert.equal(piped.logs[0].event, "checkpoint_committed");
  const cli = ["deno", "run", "--quiet", ...ckptkitFlags(), `${REPO}/cli.ts`].join(" ");
  const terminal = async (args: string) => {
    const output = await new Deno.Command("script", {
      args: ["-qfec", `${cli} ${args}`, "/dev/null"],
      env: { NO_COLOR: "1", PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin" },
      clearEnv: true,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    return new TextDecoder().decode(output.stdout).replaceAll("\r", "");
  };
  const text = await terminal(`write --root ${root} --step 2 --job-id job --run-id run`);
  const lines = text.split("\n").filter((line) => line !== "");
  assert.ok(lines.every((line) => !line.startsWith("{")), text);
  assert.ok(
    lines.some((line) => new RegExp(`^\\d\\d:\\d\\d:\\d\\d INFO  checkpoint_committed ${root}/step-2\\b`).test(line)),
    text,
  );
  const json = await terminal(`--log-format json write --root ${root} --step 3 --job-id job --run-id run`);
  const jsonLines = json.split("\n").filter((line) => line.startsWith("{"));
  assert.equal(jsonLines.length, 1, json);
  assert.equal(JSON.parse(jsonLines[0]).event, "checkpoint_committed");
  // The config's log.format, and a flag over it.
  await Deno.writeTextFile(`${tmp.path}/c.yaml`, "log:\n  format: text\n");
  const configured = await runCli(["--config", `${tmp.path}/c.yaml`, "write", "--root", root, "--step", "4"]);
  assert.match(configured.stderr, /^\d\d:\d\d:\d\d INFO {2}checkpoint_committed /m, configured.stderr);
  const flagged = await runCli([
    "--config",
    `${tmp.path}/c.yaml`,
    "--log-format",
    "json",
    "validate",
    `${root}/step-4`,
  ]);
  assert.equal(flagged.stderr, "", "validation_passed is debug");
  const env = await runCli(["write", "--root", root, "--step", "5"], { env: { CKPTKIT_LOG_FORMAT: "text" } });
  assert.match(env.stderr, /INFO {2}checkpoint_committed /);
});

Deno.test("validate-loop logs a problem found on every pass once, at debug after", async () => {
  await using tmp = await tempDir();
  for (const step of [1, 2]) await write(tmp.path, "R", step);
  await Deno.remove(`${tmp.path}/R/step-2/shard-00000-of-00004.bin`);
  const task = (await import("../deno.json", { with: { type: "json" } })).default.tasks["validate-loop"];
  const [, flags, script] = /^deno run (.*) (scripts\/\S+\.ts)$/.exec(task)!;
  const output = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--quiet",
      ...flags.split(/\s+/),
      `${REPO}/${script}`,
      "--root",
      "R",
      "--fast",
      "--interval",
      "1s",
      "--max-runs",
      "3",
    ],
    cwd: tmp.path,
    env: { NO_COLOR: "1", CKPTKIT_LOG_LEVEL: "debug" },
    clearEnv: true,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const run = decode(output);
  const failures = run.logs.filter((l) => l.event === "validation_failed");
  assert.equal(failures.length, 3, run.stderr);
  assert.deepEqual(failures.map((l) => l.severity), ["warn", "debug", "debug"]);
  for (const line of run.logs) checkLine(line, true);
});
