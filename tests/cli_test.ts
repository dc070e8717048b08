import assert from "node:assert/strict";
import denoJson from "../deno.json" with { type: "json" };
import { sectionBlocks } from "./_docs.ts";
import {
  ckptkitFlags,
  cliCommand,
  type CliRun,
  copyTree,
  decode,
  flipByte,
  names,
  REPO,
  runCli,
  snapshot,
  tempDir,
  writeStep,
} from "./_helpers.ts";

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

const TARGETS = [
  "x86_64-unknown-linux-gnu",
  "aarch64-unknown-linux-gnu",
  "x86_64-apple-darwin",
  "aarch64-apple-darwin",
];

Deno.test("every task that runs the CLI or builds the binary grants exactly the compile task's permissions", () => {
  const flags = ckptkitFlags().join(" ");
  const tasks = denoJson.tasks;
  assert.equal(
    tasks.compile,
    `deno compile ${flags} --include src/fs/hash_worker.ts --frozen --output dist/ckptkit cli.ts`,
  );
  assert.equal(
    tasks["compile:all"],
    TARGETS.map((target) =>
      `deno compile ${flags} --include src/fs/hash_worker.ts --frozen --target ${target} --output dist/ckptkit-${target} cli.ts`
    ).join(" && "),
  );
  assert.equal(tasks.ckptkit, `deno run ${flags} cli.ts`);
  assert.equal(tasks.demo, `deno run ${flags} scripts/demo.ts`);
  assert.equal(tasks["validate-loop"], `deno run ${flags} scripts/validate_loop.ts`);
});

Deno.test("docs/installation.md's Building the binary section lists exactly the compile task's permissions", async () => {
  const blocks = await sectionBlocks("docs/installation.md", "## Building the binary", "");
  assert.equal(blocks.filter((block) => block.startsWith("--")).at(0), `${ckptkitFlags().join(" ")}\n`);
});

Deno.test("deno task compile builds a binary that runs, or stops only at downloading Deno's runtime base", async () => {
  await using tmp = await tempDir();
  const [deno, ...args] = denoJson.tasks.compile.split(" ");
  assert.equal(deno, "deno");
  const output = `${tmp.path}/ckptkit`;
  const build = await new Deno.Command(Deno.execPath(), {
    args: args.map((arg) => arg === "dist/ckptkit" ? output : arg),
    cwd: REPO,
    env: { NO_COLOR: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(300_000),
  }).output();
  const log = new TextDecoder().decode(build.stderr);
  // Up to here the flags parsed, deno.lock matched (--frozen), cli.ts type-checked and its graph was collected.
  assert.match(log, /^Compile .*cli\.ts to /m, log);
  if (!build.success) {
    // Offline (as on the build machines here): the runtime base cannot be fetched, and nothing else went wrong.
    assert.match(log, /Setting up base binary/, log);
    assert.match(log, /error sending request|dns error|Connect/, log);
    return;
  }
  const run = async (...argv: string[]) => {
    const out = await new Deno.Command(output, { args: argv, env: { NO_COLOR: "1" }, clearEnv: true }).output();
    return decode(out);
  };
  assert.equal((await run("--version")).stdout, `${denoJson.version}\n`);
  const root = `${tmp.path}/root`;
  assert.equal((await run("write", "--root", root, "--step", "1", "--files", "2", "--file-size", "64KiB")).code, 0);
  const validate = await run("validate", `${root}/step-1`, "--json");
  assert.equal(validate.code, 0, validate.stderr);
  assert.equal(JSON.parse(validate.stdout).ok, true);
});

/** The values of `--<name>=a,b` in `flags`, or null when the flag is absent or has no list. */
function listOf(flags: string[], name: string): string[] | null {
  const flag = flags.find((f) => f.startsWith(`--${name}=`));
  return flag ? flag.slice(name.length + 3).split(",") : null;
}

Deno.test("the binary's permissions are narrow: named variables, two sys calls, nothing blanket but read, write and net", async () => {
  const flags = ckptkitFlags();
  for (const flag of flags) {
    assert.match(flag, /^--(no-prompt|ignore-env|allow-(read|write|net)|allow-(env|sys)=[A-Za-z_,]+)$/, flag);
  }
  assert.ok(flags.includes("--no-prompt"), "a binary never stops to ask for a permission");
  // Every CKPTKIT_* variable the TypeScript code names (the shell scripts' own are read by bash) is granted.
  const named = new Set<string>();
  const scan = async (path: string): Promise<void> => {
    const info = await Deno.stat(path);
    if (info.isDirectory) {
      for await (const entry of Deno.readDir(path)) await scan(`${path}/${entry.name}`);
    } else if (path.endsWith(".ts")) {
      for (const [name] of (await Deno.readTextFile(path)).matchAll(/CKPTKIT_[A-Z][A-Z_]*[A-Z]/g)) named.add(name);
    }
  };
  for (const path of ["cli.ts", "mod.ts", "src", "scripts"]) await scan(`${REPO}/${path}`);
  assert.deepEqual(listOf(flags, "allow-env"), [...named].sort());
  // node:os hostname() for manifests and locks, node:fs statfs() for the free-bytes metric.
  assert.deepEqual(listOf(flags, "allow-sys"), ["hostname", "statfs"]);
});

/** Runs cli.ts under `flags` (not necessarily the binary's) with a clean environment plus `env`. */
async function runUnder(flags: string[], args: string[], env: Record<string, string> = {}): Promise<CliRun> {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--quiet", ...flags, `${REPO}/cli.ts`, ...args],
    env: { NO_COLOR: "1", ...env },
    clearEnv: true,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  return decode(output);
}

/** `flags` without one grant: `--allow-read`, or `env:NAME` / `sys:NAME` taken out of its list. */
function withoutGrant(flags: string[], grant: string): string[] {
  const [kind, name] = grant.split(":");
  if (!name) {
    assert.ok(flags.includes(grant), grant);
    return flags.filter((f) => f !== grant);
  }
  const flag = `allow-${kind}`;
  const values = listOf(flags, flag);
  assert.ok(values?.includes(name), grant);
  const rest = values!.filter((v) => v !== name);
  return flags.flatMap((f) => !f.startsWith(`--${flag}=`) ? [f] : rest.length ? [`--${flag}=${rest.join(",")}`] : []);
}

/** One granted permission: a CLI run that depends on it, and how its result differs without it. */
interface GrantCase {
  grant: string;
  run: (flags: string[], root: string) => Promise<CliRun>;
  granted: (run: CliRun, root: string) => void | Promise<void>;
  denied: (run: CliRun, root: string) => void | Promise<void>;
}

async function manifestOf(dir: string): Promise<Record<string, unknown>> {
  return JSON.parse(await Deno.readTextFile(`${dir}/ckptkit.manifest.json`));
}

const writeArgs = (root: string, step: number) => [
  "write",
  "--root",
  root,
  "--step",
  String(step),
  "--files",
  "1",
  "--file-size",
  "1KiB",
];

const GRANT_CASES: GrantCase[] = [
  {
    grant: "--allow-read",
    run: (flags, root) => runUnder(flags, ["validate", `${root}/step-1`, "--log-level", "silent"]),
    granted: (run) => assert.equal(run.code, 0, run.stderr),
    denied: (run) => {
      assert.equal(run.code, 4);
      assert.match(run.stderr, /Requires read access/);
    },
  },
  {
    grant: "--allow-write",
    run: (flags, root) => runUnder(flags, [...writeArgs(root, 2), "--log-level", "silent"]),
    granted: (run) => assert.equal(run.code, 0, run.stderr),
    denied: (run) => {
      assert.equal(run.code, 4);
      assert.match(run.stderr, /Requires write access/);
    },
  },
  {
    grant: "sys:hostname",
    run: (flags, root) => runUnder(flags, [...writeArgs(root, 3), "--log-level", "silent"]),
    granted: async (_, root) => {
      assert.equal((await manifestOf(`${root}/step-3`) as { writer: { host: string } }).writer.host, Deno.hostname());
    },
    denied: async (run, root) => {
      assert.equal(run.code, 0, "the host name is optional");
      assert.equal((await manifestOf(`${root}/step-3`) as { writer: { host: string } }).writer.host, "unknown-host");
    },
  },
  {
    grant: "sys:statfs",
    run: (flags, root) => runUnder(flags, ["emit-metrics", root, "--fast", "--log-level", "silent"]),
    granted: (run) => assert.match(run.stdout, /^checkpoint_directory_free_bytes\{.*\} [1-9]\d*$/m),
    denied: (run) => {
      assert.equal(run.code, 0, "free bytes are optional");
      assert.doesNotMatch(run.stdout, /^checkpoint_directory_free_bytes\{/m);
    },
  },
  {
    grant: "--allow-net",
    run: async (flags, root) => {
      await using gateway = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, () => new Response(""));
      const url = `http://127.0.0.1:${gateway.addr.port}`;
      return await runUnder(flags, ["emit-metrics", root, "--fast", "--pushgateway", url, "--push-attempts", "1"]);
    },
    granted: (run) => assert.equal(run.code, 0, run.stderr),
    denied: (run) => {
      assert.equal(run.code, 4);
      assert.match(run.stderr, /net access/);
    },
  },
  {
    grant: "env:CKPTKIT_ROOT",
    run: (flags, root) => runUnder(flags, ["scan", "--fast", "--json"], { CKPTKIT_ROOT: root }),
    granted: (run) => assert.equal(run.code, 0, run.stderr),
    denied: (run) => {
      assert.equal(run.code, 2);
      assert.match(run.stderr, /No checkpoint root/);
    },
  },
  {
    grant: "env:CKPTKIT_CONFIG",
    run: async (flags, root) => {
      await Deno.writeTextFile(`${root}/../ckptkit.yaml`, `root: ${root}\n`);
      return await runUnder(flags, ["scan", "--fast", "--json"], { CKPTKIT_CONFIG: `${root}/../ckptkit.yaml` });
    },
    granted: (run) => assert.equal(run.code, 0, run.stderr),
    denied: (run) => assert.equal(run.code, 2),
  },
  {
    grant: "env:CKPTKIT_LOG_LEVEL",
    run: (flags, root) => runUnder(flags, writeArgs(root, 4), { CKPTKIT_LOG_LEVEL: "silent" }),
    granted: (run) => assert.equal(run.stderr, ""),
    denied: (run) => assert.equal(run.logs[0]?.event, "checkpoint_committed"),
  },
  {
    grant: "env:CKPTKIT_LOG_FORMAT",
    run: (flags, root) => runUnder(flags, writeArgs(root, 6), { CKPTKIT_LOG_FORMAT: "text" }),
    granted: (run) => assert.match(run.stderr, /^\d\d:\d\d:\d\d INFO {2}checkpoint_committed /m, run.stderr),
    denied: (run) => assert.equal(run.logs[0]?.event, "checkpoint_committed"),
  },
  {
    grant: "env:CKPTKIT_JOB_ID",
    run: (flags, root) => runUnder(flags, [...writeArgs(root, 5), "--log-level", "silent"], { CKPTKIT_JOB_ID: "j" }),
    granted: async (_, root) => assert.equal((await manifestOf(`${root}/step-5`)).job_id, "j"),
    denied: async (_, root) => assert.equal((await manifestOf(`${root}/step-5`)).job_id, null),
  },
  {
    grant: "env:CKPTKIT_RUN_ID",
    run: (flags, root) => runUnder(flags, [...writeArgs(root, 6), "--log-level", "silent"], { CKPTKIT_RUN_ID: "r" }),
    granted: async (_, root) => assert.equal((await manifestOf(`${root}/step-6`)).run_id, "r"),
    denied: async (_, root) => assert.equal((await manifestOf(`${root}/step-6`)).run_id, null),
  },
  {
    grant: "env:CKPTKIT_TEST_FAIL_AT",
    run: (flags, root) =>
      runUnder(flags, [...writeArgs(root, 7), "--log-level", "silent"], { CKPTKIT_TEST_FAIL_AT: "before_rename" }),
    granted: (run) => {
      assert.equal(run.code, 4);
      assert.match(run.stderr, /Injected failure at before_rename/);
    },
    denied: (run) => assert.equal(run.code, 0, run.stderr),
  },
  {
    grant: "env:CKPTKIT_TEST_PAUSE_AT",
    run: async (flags, root) => {
      const child = new Deno.Command(Deno.execPath(), {
        args: ["run", "--quiet", ...flags, `${REPO}/cli.ts`, ...writeArgs(root, 8), "--log-level", "silent"],
        env: { NO_COLOR: "1", CKPTKIT_TEST_PAUSE_AT: "before_rename" },
        clearEnv: true,
        stdin: "null",
        stdout: "null",
        stderr: "piped",
      }).spawn();
      let stderr = "";
      for await (const chunk of child.stderr.pipeThrough(new TextDecoderStream())) {
        stderr += chunk;
        if (stderr.includes("test_paused")) child.kill("SIGKILL");
      }
      const { code } = await child.status;
      return { code, stdout: "", stderr, logs: [] };
    },
    granted: (run) => assert.match(run.stderr, /"event":"test_paused","point":"before_rename"/),
    denied: (run) => assert.equal(run.code, 0, run.stderr),
  },
];

Deno.test("each permission the binary is granted is needed: without it a CLI run fails or loses something", async (t) => {
  const flags = ckptkitFlags();
  const grants = flags.flatMap((flag) => {
    const list = /^--allow-(env|sys)=(.*)$/.exec(flag);
    if (list) return list[2].split(",").map((name) => `${list[1]}:${name}`);
    return flag.startsWith("--allow-") ? [flag] : [];
  });
  assert.deepEqual(GRANT_CASES.map((c) => c.grant).sort(), grants.sort(), "one case per grant");
  for (const kase of GRANT_CASES) {
    await t.step(kase.grant, async () => {
      for (
        const [label, underFlags, check] of [
          ["granted", flags, kase.granted],
          ["denied", withoutGrant(flags, kase.grant), kase.denied],
        ] as const
      ) {
        await using tmp = await tempDir();
        const root = `${tmp.path}/root`;
        await writeStep(root, 1);
        const run = await kase.run(underFlags, root);
        try {
          await check(run, root);
        } catch (err) {
          throw new Error(`${label}: ${(err as Error).message}\n${run.stdout}\n${run.stderr}`);
        }
      }
    });
  }
});

Deno.test("--ignore-env is needed: dependencies read variables the binary is not granted", async () => {
  await using tmp = await tempDir();
  const noIgnore = ckptkitFlags().filter((f) => f !== "--ignore-env");
  // yaml's parser reads LOG_TOKENS and LOG_STREAM for every token of a --config file.
  await Deno.writeTextFile(`${tmp.path}/ckptkit.yaml`, `root: ${tmp.path}\n`);
  const config = ["--config", `${tmp.path}/ckptkit.yaml`, "scan", "--json"];
  assert.equal((await runUnder(ckptkitFlags(), config)).code, 0);
  const failed = await runUnder(noIgnore, config);
  assert.equal(failed.code, 2);
  assert.match(failed.stderr, /Requires env access to "LOG_(TOKENS|STREAM)"/);
  // commander reads CLICOLOR_FORCE (and on a terminal node's tty reads TERM and more) unless NO_COLOR is set.
  const help = await runUnder(ckptkitFlags(), ["--help"], { NO_COLOR: "" });
  assert.equal(help.code, 0, help.stderr);
  assert.match(help.stdout, /^Usage: ckptkit /m);
  assert.match((await runUnder(noIgnore, ["--help"], { NO_COLOR: "" })).stderr, /NotCapable.*CLICOLOR_FORCE/);
});

Deno.test("help and usage errors work on a terminal without NO_COLOR under the binary's flags", async () => {
  const command = [Deno.execPath(), "run", "--quiet", ...ckptkitFlags(), `${REPO}/cli.ts`].join(" ");
  for (
    const [args, code, pattern] of [["--help", 0, /Usage: ckptkit /], [
      "valdate",
      2,
      /Did you mean validate\?/,
    ]] as const
  ) {
    const out = await new Deno.Command("script", {
      args: ["-qec", `${command} ${args}`, "/dev/null"],
      env: { TERM: "xterm-256color", PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin" },
      clearEnv: true,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(out.stdout);
    assert.equal(out.code, code, text);
    assert.match(text, pattern);
    assert.doesNotMatch(text, /NotCapable|Uncaught/);
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

Deno.test("--version is deno.json's version, compiled in as a module rather than read from disk at run time", async () => {
  // deno compile embeds the module graph of cli.ts; deno.json is in it (src/version.ts imports it as JSON).
  const info = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json", `${REPO}/cli.ts`],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.ok(info.success, new TextDecoder().decode(info.stderr));
  const graph = JSON.parse(new TextDecoder().decode(info.stdout));
  const module = graph.modules.find((m: { specifier: string }) => m.specifier === `file://${REPO}/deno.json`);
  assert.equal(module?.mediaType, "Json", "deno.json is a module of cli.ts's graph");
  // With no permission at all (no file reads), the version is still there: it came with the code.
  const bare = await runUnder(["--no-prompt"], ["--version"]);
  assert.equal(bare.code, 0, bare.stderr);
  assert.equal(bare.stdout, `${denoJson.version}\n`);
  const short = await runCli(["-V"]);
  assert.equal(short.stdout, `${denoJson.version}\n`);
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

Deno.test("resume prints only the path, falls back past a corrupt newest, and exits 1 with nothing valid", async () => {
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
  assert.equal(none.code, 1, "checkpoints exist but none is valid: stop, do not start from scratch");
  assert.match(none.stderr, /nothing valid to resume from .*\[no_valid_checkpoint\]/);
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
  // A faked old mtime does not age a staging folder (its ctime is new); a short --stale-after does.
  assert.doesNotMatch((await runCli(["scan", root])).stdout, /STALE/);
  const stale = await runCli(["scan", root, "--stale-after", "0s"]);
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

Deno.test("a copy of step-20 named step-30 is step_mismatch: validate fails it, resume and gc pass over it, scan and metrics report it", async () => {
  await using tmp = await tempDir();
  const root = tmp.path;
  await writeCheckpoint(root, 10);
  await writeCheckpoint(root, 20);
  await copyTree(`${root}/step-20`, `${root}/step-30`);

  for (const depth of [["--fast"], ["--sample-bytes", "1KiB"], []]) {
    const validate = await runCli(["validate", "--json", ...depth, `${root}/step-30`]);
    assert.equal(validate.code, 1, `${depth}: ${validate.stderr}`);
    assert.deepEqual(JSON.parse(validate.stdout).problems.map((p: { reason: string }) => p.reason), ["step_mismatch"]);
  }
  const resume = await runCli(["resume", root]);
  assert.equal(resume.code, 0, resume.stderr);
  assert.equal(resume.stdout.trim(), `${root}/step-20`);

  const scan = await runCli(["scan", "--json", "--fast", root]);
  assert.equal(scan.code, 1, scan.stderr);
  const scanned = JSON.parse(scan.stdout);
  const step30 = scanned.checkpoints.find((c: { path: string }) => c.path.endsWith("/step-30"));
  assert.deepEqual(step30.problems.map((p: { reason: string }) => p.reason), ["step_mismatch"]);

  const metrics = await runCli(["emit-metrics", "--fast", root]);
  assert.equal(metrics.code, 1, metrics.stderr);
  assert.match(metrics.stdout, /checkpoint_validation_failures_total\{[^}]*reason="step_mismatch"\} [1-9]/);
  assert.match(metrics.stdout, /checkpoint_resume_selected_step\{[^}]*\} 20\n/);

  const gc = await runCli(["gc", "--json", "--keep-last", "1", "--dry-run", root]);
  assert.equal(gc.code, 0, gc.stderr);
  const planned = JSON.parse(gc.stdout);
  assert.deepEqual(planned.keep.map((k: { name: string }) => k.name), ["step-20"]);
  assert.ok(planned.keep[0].reasons.includes("newest valid"));
});

Deno.test("every command given a file or a device where a root or checkpoint folder belongs exits 2 with not_a_folder", async () => {
  await using tmp = await tempDir();
  const file = `${tmp.path}/file`;
  await Deno.writeTextFile(file, "not a folder\n");
  const staging = `${tmp.path}/staging`;
  await Deno.mkdir(staging);
  await Deno.writeTextFile(`${staging}/a.bin`, "a");
  for (const path of [file, "/dev/null"]) {
    const commands = [
      ["validate", path],
      ["validate", "--fast", path],
      ["export-sums", path],
      ["seal", path, "--step", "1"],
      ["seal", "--all", path],
      ["quarantine", path],
      ["scan", path],
      ["scan", "--quarantine", path],
      ["resume", path],
      ["resume", "--repair", path],
      ["gc", "--keep-last", "1", path],
      ["emit-metrics", path],
      ["serve", "--listen", "127.0.0.1:0", path],
      ["commit", path, "--root", `${tmp.path}/root`, "--step", "1"],
      ["commit", staging, "--root", path, "--step", "1"],
      ["write", "--root", path, "--step", "1"],
    ];
    for (const args of commands) {
      const child = cliCommand(args).spawn();
      // Backstop for serve, which would otherwise run until stopped: minutes, only to end a stuck run.
      const backstop = setTimeout(() => child.kill("SIGKILL"), 180_000);
      const run = decode(await child.output());
      clearTimeout(backstop);
      const what = `${args.join(" ")}: ${run.stderr}`;
      assert.equal(run.code, 2, what);
      const errors = run.stderr.split("\n").filter((line) => line.startsWith("ckptkit: error:"));
      assert.equal(errors.length, 1, what);
      assert.match(errors[0], /\[not_a_folder\]$/, what);
    }
  }
  assert.equal(await Deno.readTextFile(file), "not a folder\n");
  assert.deepEqual(await names(staging), ["a.bin"]);
});

Deno.test("one step syntax everywhere: --step, --before-step, --keep-last and --keep-every refuse signs, spaces, leading zeros and non-decimal forms", async () => {
  await using tmp = await tempDir();
  const root = `${tmp.path}/root`;
  await writeCheckpoint(root, 10);
  const staging = `${tmp.path}/staging`;
  await Deno.mkdir(staging);
  await Deno.writeTextFile(`${staging}/a.bin`, "a");
  const bad = [" 7", "7 ", "010", "+7", "-1", "7.0", "1e3", "0x10", "", "9007199254740993"];
  const commands = (value: string) => [
    ["write", "--root", root, "--files", "1", "--file-size", "1KiB", "--step", value],
    ["commit", staging, "--root", root, "--step", value],
    ["seal", staging, "--step", value],
    ["resume", "--policy", "newest-before", "--before-step", value, root],
    ["gc", "--dry-run", "--keep-last", value, root],
    ["gc", "--dry-run", "--keep-every", value, root],
  ];
  const before = await snapshot(tmp.path);
  for (const value of bad) {
    for (const args of commands(value)) {
      const run = await runCli(args);
      const what = `${JSON.stringify(value)}: ${args.join(" ")}: ${run.stderr}`;
      assert.equal(run.code, 2, what);
      const errors = run.stderr.split("\n").filter((line) => line.startsWith("ckptkit: error:"));
      assert.equal(errors.length, 1, what);
      assert.match(errors[0], /\[invalid_argument\]$/, what);
    }
  }
  assert.deepEqual(await snapshot(tmp.path), before, "nothing written");
  // The canonical forms still work, "0" included.
  const resume = await runCli(["resume", "--policy", "newest-before", "--before-step", "11", root]);
  assert.equal(resume.stdout.trim(), `${root}/step-10`, resume.stderr);
  assert.equal((await runCli(["gc", "--dry-run", "--keep-last", "0", "--keep-every", "10", root])).code, 0);
});
