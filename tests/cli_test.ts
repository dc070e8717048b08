import assert from "node:assert/strict";
import denoJson from "../deno.json" with { type: "json" };
import { ckptkitFlags, flipByte, runCli, tempDir } from "./_helpers.ts";

async function writeCheckpoint(
  root: string,
  step: number,
  extra: string[] = [],
): Promise<void> {
  const run = await runCli([
    "write",
    "--root",
    root,
    "--step",
    String(step),
    "--files",
    "2",
    "--file-size",
    "8KiB",
    ...extra,
  ]);
  assert.equal(run.code, 0, run.stderr);
}

Deno.test("the compile tasks grant exactly the permissions the ckptkit task (and these tests) use", () => {
  const flags = ckptkitFlags().join(" ");
  assert.match(flags, /--allow-read/);
  assert.ok(
    !flags.includes("--allow-all") && !flags.includes("-A"),
    "no blanket permissions",
  );
  assert.ok(
    denoJson.tasks.compile.startsWith(`deno compile ${flags} `),
    denoJson.tasks.compile,
  );
  const builds = denoJson.tasks["compile:all"].split(" && ");
  assert.deepEqual(
    builds.map((b) => /--target (\S+)/.exec(b)?.[1]),
    [
      "x86_64-unknown-linux-gnu",
      "aarch64-unknown-linux-gnu",
      "x86_64-apple-darwin",
      "aarch64-apple-darwin",
    ],
  );
  for (const build of builds) {
    assert.ok(build.startsWith(`deno compile ${flags} `), build);
  }
});

Deno.test("global flags are accepted before and after the command name", async () => {
  await using tmp = await tempDir();
  await writeCheckpoint(tmp.path, 10);
  for (
    const args of [
      ["--json", "--log-level", "silent", "validate", `${tmp.path}/step-10`],
      ["validate", `${tmp.path}/step-10`, "--json", "--log-level", "silent"],
      ["validate", "--log-level=silent", `${tmp.path}/step-10`, "--json"],
    ]
  ) {
    const run = await runCli(args);
    assert.equal(run.code, 0, run.stderr);
    assert.equal(JSON.parse(run.stdout).ok, true);
    assert.equal(run.stderr, "", "silent means no log lines");
  }
});

Deno.test("validate --json has the documented shape and exit 1 on a flipped byte", async () => {
  await using tmp = await tempDir();
  await writeCheckpoint(tmp.path, 10);
  await flipByte(`${tmp.path}/step-10/shard-00000-of-00002.bin`, 4000);
  const run = await runCli(["validate", `${tmp.path}/step-10`, "--json"]);
  assert.equal(run.code, 1);
  const doc = JSON.parse(run.stdout);
  for (
    const key of [
      "path",
      "step",
      "ok",
      "depth",
      "problems",
      "bytes_checked",
      "duration_s",
    ]
  ) {
    assert.ok(key in doc, key);
  }
  assert.equal(doc.ok, false);
  assert.equal(doc.depth, "full");
  assert.equal(doc.step, 10);
  assert.deepEqual(
    doc.problems.map((
      p: { reason: string; path: string },
    ) => [p.reason, p.path]),
    [
      ["hash_mismatch", "shard-00000-of-00002.bin"],
    ],
  );
  const log = run.logs.find((l) => l.event === "validation_failed")!;
  assert.equal(log.reason, "hash_mismatch");
  assert.equal(log.severity, "warn");
  assert.equal(log.checkpoint_path, `${tmp.path}/step-10`);
  assert.equal(log.step, 10);
});

Deno.test("validate prints every problem with its reason in text mode", async () => {
  await using tmp = await tempDir();
  await writeCheckpoint(tmp.path, 10);
  await Deno.truncate(`${tmp.path}/step-10/shard-00000-of-00002.bin`, 10);
  await Deno.remove(`${tmp.path}/step-10/trainer_state.json`);
  await Deno.writeTextFile(`${tmp.path}/step-10/extra.bin`, "x");
  const run = await runCli(["validate", `${tmp.path}/step-10`, "--fast"]);
  assert.equal(run.code, 1);
  assert.match(
    run.stdout,
    /^FAILED .*step-10 \(fast, 3 files, 0 B read\): 3 problems$/m,
  );
  assert.match(
    run.stdout,
    /unexpected_file\s+extra\.bin: on disk but not listed in the manifest/,
  );
  assert.match(
    run.stdout,
    /size_mismatch\s+shard-00000-of-00002\.bin: size is 10 bytes, manifest says 8192/,
  );
  assert.match(run.stdout, /file_missing\s+trainer_state\.json/);
});

Deno.test("usage errors exit 2 with a suggestion for typos", async () => {
  const typo = await runCli(["valdate", "/tmp"]);
  assert.equal(typo.code, 2);
  assert.match(typo.stderr, /unknown command 'valdate'/);
  assert.match(typo.stderr, /Did you mean validate\?/);

  const option = await runCli(["validate", "/tmp", "--fsat"]);
  assert.equal(option.code, 2);
  assert.match(option.stderr, /Did you mean --fast\?/);

  const conflict = await runCli([
    "validate",
    "/tmp",
    "--fast",
    "--sample-bytes",
    "64KiB",
  ]);
  assert.equal(conflict.code, 2);
  assert.match(conflict.stderr, /cannot be used with/);

  const badStep = await runCli(["write", "--root", "/tmp/x", "--step", "ten"]);
  assert.equal(badStep.code, 2);
  assert.match(badStep.stderr, /--step <n>.*expected a non-negative integer/);

  const missing = await runCli(["write", "--root", "/tmp/x"]);
  assert.equal(missing.code, 2);
  assert.match(missing.stderr, /required option '--step <n>' not specified/);

  const noRoot = await runCli(["scan"]);
  assert.equal(noRoot.code, 2);
  assert.match(noRoot.stderr, /No checkpoint root: pass --root/);

  const gone = await runCli(["validate", "/nonexistent/step-1"]);
  assert.equal(gone.code, 2);
  assert.match(
    gone.stderr,
    /^ckptkit: error: Checkpoint folder \/nonexistent\/step-1 does not exist \[not_found\]$/m,
  );
});

Deno.test("every command has --help, and --version prints the version", async () => {
  for (
    const command of ["write", "commit", "seal", "validate", "scan", "resume"]
  ) {
    const run = await runCli([command, "--help"]);
    assert.equal(run.code, 0, command);
    assert.match(run.stdout, new RegExp(`^Usage: ckptkit ${command} `, "m"));
  }
  const top = await runCli(["--help"]);
  assert.equal(top.code, 0);
  for (const flag of ["--config <path>", "--json", "--log-level <level>"]) {
    assert.ok(top.stdout.includes(flag), flag);
  }
  const version = await runCli(["--version"]);
  assert.equal(version.stdout.trim(), denoJson.version);
});

Deno.test("environment variables stand in for flags", async () => {
  await using tmp = await tempDir();
  const run = await runCli([
    "write",
    "--step",
    "3",
    "--files",
    "1",
    "--file-size",
    "1KiB",
  ], {
    env: {
      CKPTKIT_ROOT: tmp.path,
      CKPTKIT_JOB_ID: "env-job",
      CKPTKIT_LOG_LEVEL: "silent",
    },
  });
  assert.equal(run.code, 0, run.stderr);
  assert.equal(run.stderr, "");
  const manifest = JSON.parse(
    await Deno.readTextFile(`${tmp.path}/step-3/ckptkit.manifest.json`),
  );
  assert.equal(manifest.job_id, "env-job");
});

Deno.test("resume prints only the path, falls back past a corrupt newest, and exits 3 with nothing valid", async () => {
  await using tmp = await tempDir();
  const root = tmp.path;
  const empty = await runCli(["resume", root]);
  assert.equal(empty.code, 3);
  assert.equal(empty.stdout, "");
  await writeCheckpoint(root, 9);
  await writeCheckpoint(root, 10);
  const run = await runCli(["resume", root]);
  assert.equal(run.code, 0);
  assert.equal(run.stdout, `${root}/step-10\n`);
  await flipByte(`${root}/step-10/trainer_state.json`, 0);
  const fallback = await runCli(["resume", root, "--json"]);
  assert.equal(fallback.code, 0);
  const doc = JSON.parse(fallback.stdout);
  assert.equal(doc.path, `${root}/step-9`, "step-9 < step-10 numerically");
  assert.equal(doc.fallback, true);
  assert.deepEqual(
    doc.rejected.map((
      r: { name: string; reasons: string[] },
    ) => [r.name, r.reasons]),
    [
      ["step-10", ["hash_mismatch"]],
    ],
  );
  await flipByte(`${root}/step-9/trainer_state.json`, 0);
  const none = await runCli(["resume", root]);
  assert.equal(none.code, 3);
  assert.match(none.stderr, /nothing to resume from/);
});

Deno.test("scan reports each checkpoint, latest and stale staging, and exits 1 on any invalid one", async () => {
  await using tmp = await tempDir();
  const root = tmp.path;
  await writeCheckpoint(root, 9);
  await writeCheckpoint(root, 10);
  const clean = await runCli(["scan", root, "--json"]);
  assert.equal(clean.code, 0, clean.stdout);
  const doc = JSON.parse(clean.stdout);
  assert.deepEqual(doc.checkpoints.map((c: { step: number }) => c.step), [
    10,
    9,
  ]);
  assert.equal(doc.latest.name, "step-10");
  assert.equal(doc.summary.valid, 2);

  await Deno.mkdir(`${root}/.staging-step-11-crashed`);
  await Deno.utime(`${root}/.staging-step-11-crashed`, 0, 0);
  await Deno.mkdir(`${root}/step-011`);
  const stale = await runCli(["scan", root]);
  assert.equal(stale.code, 1);
  assert.match(stale.stdout, /staging: \.staging-step-11-crashed .*STALE/);
  assert.match(stale.stdout, /hint: step-011: name does not parse/);
});

Deno.test("progress is drawn on a terminal's stderr and never in pipes or with --json", async () => {
  await using tmp = await tempDir();
  await writeCheckpoint(tmp.path, 1);
  const piped = await runCli(["validate", `${tmp.path}/step-1`, "--log-level", "silent"]);
  assert.equal(piped.stderr, "", "no progress when stderr is a pipe");
  const command = ["deno", "run", "--quiet", ...ckptkitFlags(), "cli.ts"].join(" ");
  const onTerminal = async (extra: string) => {
    const out = await new Deno.Command("script", {
      args: ["-qec", `${command} validate ${tmp.path}/step-1 --log-level silent ${extra}`, "/dev/null"],
      stdout: "piped",
      stderr: "piped",
    }).output();
    return new TextDecoder().decode(out.stdout);
  };
  const shown = await onTerminal("");
  assert.ok(shown.includes("\r\x1b[2Kvalidating "), JSON.stringify(shown));
  assert.match(shown, /validating .*\/.* at .*\/s/);
  assert.match(shown, /OK .*step-1/);
  const json = await onTerminal("--json");
  assert.ok(!json.includes("validating"), "--json keeps the terminal free of progress");
});
