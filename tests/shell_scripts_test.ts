/**
 * Tests of the shell scripts (`scripts/validate_loop.sh`,
 * `scripts/watch_corruption.sh`) and the deployment examples
 * (`examples/systemd/`, `examples/k8s/`).
 *
 * The scripts run under bash as subprocesses with `CKPTKIT` set to the
 * checkout's `deno run <ckptkit task flags> cli.ts`, on roots written by the
 * real CLI in temporary folders, with 1 s intervals; every wait is bounded
 * and every child is killed when a test ends. shellcheck, python3 and jq come
 * from Debian (`.ci/run` installs shellcheck); a test whose tool is missing is
 * skipped locally, and the shellcheck one fails on CI (`CI` set) instead.
 */

import assert from "node:assert/strict";
import { parseAllDocuments } from "yaml";
import { ckptkitFlags, flipByte, REPO, runCli, tempDir, truncateFile } from "./_helpers.ts";
import { onPath } from "./_servers.ts";

const VALIDATE_LOOP_SH = `${REPO}/scripts/validate_loop.sh`;
const WATCH_CORRUPTION_SH = `${REPO}/scripts/watch_corruption.sh`;
const ON_CI = Boolean(Deno.env.get("CI"));

/** `$CKPTKIT` for the scripts: the checkout's CLI with the binary's permission flags. */
const CKPTKIT = [Deno.execPath(), "run", "--quiet", ...ckptkitFlags(), `${REPO}/cli.ts`].join(" ");
if (/\s/.test(Deno.execPath()) || /\s/.test(REPO)) {
  throw new Error("the scripts split $CKPTKIT on whitespace: run the tests from a path without spaces");
}

/** This process's environment minus CKPTKIT_* (which would change what the scripts do), plus `extra`. */
function scriptEnv(extra: Record<string, string>): Record<string, string> {
  const env = Object.fromEntries(
    Object.entries(Deno.env.toObject()).filter(([name]) => !name.startsWith("CKPTKIT_")),
  );
  return { ...env, NO_COLOR: "1", CKPTKIT, ...extra };
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** A running script whose output is collected as it arrives; killed when disposed. */
class Script implements AsyncDisposable {
  stdout = "";
  stderr = "";
  exited: Deno.CommandStatus | undefined;
  readonly #child: Deno.ChildProcess;
  readonly #status: Promise<Deno.CommandStatus>;
  readonly #pumps: Promise<void>[];

  constructor(script: string, args: string[], env: Record<string, string>) {
    this.#child = new Deno.Command("bash", {
      args: [script, ...args],
      cwd: REPO,
      env: scriptEnv(env),
      clearEnv: true,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      // Its own process group: disposing kills the script's children too, which would otherwise keep its pipes open.
      detached: true,
    }).spawn();
    this.#status = this.#child.status.then((status) => this.exited = status);
    const pump = async (stream: ReadableStream<Uint8Array>, add: (text: string) => void) => {
      for await (const text of stream.pipeThrough(new TextDecoderStream())) add(text);
    };
    this.#pumps = [
      pump(this.#child.stdout, (text) => this.stdout += text),
      pump(this.#child.stderr, (text) => this.stderr += text),
    ];
  }

  /** Non-empty stdout lines. */
  get lines(): string[] {
    return this.stdout.split("\n").filter((line) => line !== "");
  }

  /** The JSON lines on stderr, parsed. */
  get logs(): Record<string, unknown>[] {
    return this.stderr.split("\n").filter((line) => line.startsWith("{")).map((line) => JSON.parse(line));
  }

  /** Waits until `ready()` holds; fails after `timeoutMs` or when the script exits first. */
  async waitFor(what: string, ready: () => boolean, timeoutMs = 15_000): Promise<void> {
    const deadline = Date.now() + backstop(timeoutMs);
    while (!ready()) {
      if (this.exited) {
        await this.#drain();
        if (ready()) return;
        assert.fail(`exited with ${this.exited.code} before ${what}\n${this.#output()}`);
      }
      if (Date.now() > deadline) assert.fail(`no ${what} within ${timeoutMs} ms\n${this.#output()}`);
      await sleep(50);
    }
  }

  /** Sends `signal` (when given) and waits at most `timeoutMs` for the script to exit. */
  async exit(timeoutMs: number, signal?: Deno.Signal): Promise<number> {
    if (signal) this.#child.kill(signal);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<"timeout">((resolve) =>
      timer = setTimeout(() => resolve("timeout"), backstop(timeoutMs))
    );
    const status = await Promise.race([this.#status, timeout]).finally(() => clearTimeout(timer));
    if (status === "timeout") {
      assert.fail(`still running ${timeoutMs} ms after ${signal ?? "waiting"}\n${this.#output()}`);
    }
    await this.#drain();
    return status.code;
  }

  async #drain(): Promise<void> {
    await Promise.all(this.#pumps);
  }

  #output(): string {
    return `stdout:\n${this.stdout}\nstderr:\n${this.stderr}`;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    try {
      // The group this script leads (by its PID): the script and whatever it started, never anything else.
      Deno.kill(-this.#child.pid, "SIGKILL");
    } catch {
      // the whole group is gone
    }
    await this.#status;
    await this.#drain();
  }
}

/** Writes a one-shard checkpoint of `step` with the CLI. */
async function writeCheckpoint(root: string, step: number): Promise<void> {
  const run = await runCli([
    "write",
    "--root",
    root,
    "--step",
    String(step),
    "--files",
    "1",
    "--file-size",
    "4KiB",
    "--log-level",
    "warn",
  ]);
  assert.equal(run.code, 0, run.stderr);
}

/** A local port nothing listens on: connections to it are refused. */
function refusedPort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}

/** Replaces a file atomically, so a pass never reads half of it. */
async function replaceFile(path: string, text: string): Promise<void> {
  await Deno.writeTextFile(`${path}.tmp`, text);
  await Deno.rename(`${path}.tmp`, path);
}

/** validate_loop.sh's pass lines: `<ts> pass=N exit=C <meaning>`. */
const PASS_LINE = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ pass=(\d+) exit=(\d+) \S.*$/;

function passCodes(script: Script): number[] {
  return script.lines.map((line) => {
    const match = PASS_LINE.exec(line);
    assert.ok(match, `not a pass line: ${JSON.stringify(line)}`);
    return Number(match[2]);
  });
}

const SHARD = "step-2/shard-00000-of-00001.bin";

Deno.test({
  name: "shellcheck: scripts/*.sh are clean",
  ignore: !onPath("shellcheck") && !ON_CI,
  fn: async () => {
    const scripts = (await Array.fromAsync(Deno.readDir(`${REPO}/scripts`)))
      .map((entry) => entry.name)
      .filter((name) => name.endsWith(".sh"))
      .sort();
    assert.deepEqual(scripts, ["validate_loop.sh", "watch_corruption.sh"]);
    const output = await new Deno.Command("shellcheck", {
      args: ["--shell=bash", "--severity=style", ...scripts.map((name) => `scripts/${name}`)],
      cwd: REPO,
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(output.stdout) + new TextDecoder().decode(output.stderr);
    assert.equal(output.code, 0, text);
  },
});

Deno.test("scripts: executable, bash syntax, --help, bad arguments exit 2", async () => {
  for (const script of [VALIDATE_LOOP_SH, WATCH_CORRUPTION_SH]) {
    const info = await Deno.stat(script);
    assert.ok(((info.mode ?? 0) & 0o111) !== 0, `${script} is executable`);
    const syntax = await new Deno.Command("bash", { args: ["-n", script], stderr: "piped" }).output();
    assert.equal(syntax.code, 0, new TextDecoder().decode(syntax.stderr));

    await using help = new Script(script, ["--help"], {});
    assert.equal(await help.exit(5_000), 0);
    assert.match(help.stdout, /^Usage: scripts\/\S+\.sh /m);
    assert.doesNotMatch(help.stdout, /^#|set -euo/m);
  }
  for (
    const [script, args, message] of [
      [VALIDATE_LOOP_SH, [], /expected ROOT and INTERVAL/],
      [VALIDATE_LOOP_SH, ["/tmp"], /expected ROOT and INTERVAL/],
      [VALIDATE_LOOP_SH, ["/tmp", "5x"], /INTERVAL '5x'/],
      [VALIDATE_LOOP_SH, ["/tmp", "0"], /above zero/],
      [VALIDATE_LOOP_SH, ["--bogus", "/tmp", "1s"], /unknown option '--bogus'/],
      [WATCH_CORRUPTION_SH, [], /expected ROOT \[INTERVAL\]/],
      [WATCH_CORRUPTION_SH, ["/tmp", "1.5s"], /INTERVAL '1.5s'/],
      [WATCH_CORRUPTION_SH, ["/tmp", "1s", "x"], /expected ROOT \[INTERVAL\]/],
    ] as const
  ) {
    await using run = new Script(script, [...args], {});
    assert.equal(await run.exit(5_000), 2, `${script} ${args.join(" ")}`);
    assert.equal(run.stdout, "");
    assert.match(run.stderr, message);
  }
  await using noCkptkit = new Script(VALIDATE_LOOP_SH, ["/tmp", "1s"], { CKPTKIT: "/nonexistent/ckptkit" });
  assert.equal(await noCkptkit.exit(5_000), 2);
  assert.match(noCkptkit.stderr, /cannot run ckptkit: \/nonexistent\/ckptkit not found/);
});

Deno.test("scripts: no command substitution inside $((...)), which bash 5.2 aborts on when a trap fires mid-parse", async () => {
  // bash 5.2.15 re-parses `$(cmd)` inside `$((...))` each time it runs; SIGTERM landing then ran the trap
  // inside the parser and the loop died with "unexpected EOF while looking for matching `)'" (exit 2,
  // seen by tests/docs_commands_test.ts). The scripts take such values into a variable first.
  for (const script of [VALIDATE_LOOP_SH, WATCH_CORRUPTION_SH]) {
    const nested = (await Deno.readTextFile(script)).split("\n").filter((line) =>
      !line.trimStart().startsWith("#") && /\$\(\([^)]*\$\(/.test(line)
    );
    assert.deepEqual(nested, [], script);
  }
});

Deno.test("validate_loop.sh: writes the textfile every interval, one line per pass, exit 0 on SIGTERM", async () => {
  await using tmp = await tempDir();
  const root = `${tmp.path}/root`;
  await writeCheckpoint(root, 1);
  const textfile = `${tmp.path}/ckptkit.prom`;
  await using loop = new Script(VALIDATE_LOOP_SH, [root, "1s"], {
    CKPTKIT_LOOP_ARGS: `--textfile ${textfile} --log-level warn`,
  });
  await loop.waitFor("two passes", () => loop.lines.length >= 2);
  const [first, second] = loop.lines;
  assert.match(first, / pass=1 exit=0 ok: no problems found, metrics written$/);
  assert.match(second, / pass=2 exit=0 /);
  assert.match(await Deno.readTextFile(textfile), /^checkpoint_inventory\{[^}]*status="valid"\} 1$/m);
  // emit-metrics' own output goes to stderr, keeping stdout one line per pass.
  assert.match(loop.stderr, new RegExp(`^wrote ${textfile}$`, "m"));

  assert.equal(await loop.exit(3_000, "SIGTERM"), 0);
  assert.ok(passCodes(loop).every((code) => code === 0), loop.stdout);
  assert.match(loop.stderr, /SIGTERM received, stopped after \d+ pass\(es\)/);
});

Deno.test("validate_loop.sh: SIGTERM or SIGINT while it sleeps or while a pass runs stops it at once", async () => {
  await using tmp = await tempDir();
  const root = `${tmp.path}/root`;
  await writeCheckpoint(root, 1);
  for (const signal of ["SIGTERM", "SIGINT"] as const) {
    await using loop = new Script(VALIDATE_LOOP_SH, [root, "1h"], { CKPTKIT_LOOP_ARGS: "--log-level warn" });
    await loop.waitFor("the first pass", () => loop.lines.length >= 1);
    assert.equal(await loop.exit(2_000, signal), 0, loop.stderr);
    assert.match(loop.stderr, new RegExp(`${signal} received, stopped after 1 pass`));
  }

  // A pass that takes long gets the signal too (an exec'd sleep stands in for ckptkit).
  const slow = `${tmp.path}/slow-ckptkit`;
  await Deno.writeTextFile(slow, `#!/bin/sh\necho started >&2\nexec sleep 60\n`);
  await Deno.chmod(slow, 0o755);
  await using loop = new Script(VALIDATE_LOOP_SH, [root, "1s"], { CKPTKIT: slow });
  await loop.waitFor("the pass to start", () => loop.stderr.includes("started"));
  assert.equal(await loop.exit(2_000, "SIGTERM"), 0, loop.stderr);
  assert.equal(loop.stdout, "", "an interrupted pass prints no line");
  assert.match(loop.stderr, /stopped after 0 pass/);
});

Deno.test("validate_loop.sh: a failing push (exit 4) is retried every pass; it recovers when the config is fixed", async () => {
  await using tmp = await tempDir();
  const root = `${tmp.path}/root`;
  await writeCheckpoint(root, 1);
  const textfile = `${tmp.path}/ckptkit.prom`;
  const config = `${tmp.path}/ckptkit.yaml`;
  await replaceFile(config, `metrics:\n  pushgateway: http://127.0.0.1:${refusedPort()}/metrics\n`);
  await using loop = new Script(VALIDATE_LOOP_SH, [root, "1s"], {
    CKPTKIT_LOOP_ARGS: `--config ${config} --textfile ${textfile} --push-attempts 1 --push-timeout 1s --log-level warn`,
  });
  await loop.waitFor("two failed passes", () => loop.lines.length >= 2);
  assert.deepEqual(passCodes(loop).slice(0, 2), [4, 4]);
  assert.match(loop.lines[0], / exit=4 runtime error/);
  assert.match(loop.stderr, /\[push_failed\]/);
  // The textfile is written before the push is tried.
  assert.match(await Deno.readTextFile(textfile), /^checkpoint_latest_valid\{[^}]*\} 1$/m);

  await replaceFile(config, "log_level: warn\n");
  await loop.waitFor("a pass that succeeds", () => loop.lines.some((line) => / exit=0 /.test(line)));
  assert.equal(loop.exited, undefined, "still running");
  assert.equal(await loop.exit(3_000, "SIGTERM"), 0);
});

Deno.test("validate_loop.sh: a bad config (exit 2) stops the loop with exit 2; --once passes the exit code on", async () => {
  await using tmp = await tempDir();
  const root = `${tmp.path}/root`;
  await writeCheckpoint(root, 1);
  await writeCheckpoint(root, 2);
  const config = `${tmp.path}/bad.yaml`;
  await Deno.writeTextFile(config, "metrics:\n  textfil: /tmp/x.prom\n");
  await using loop = new Script(VALIDATE_LOOP_SH, [root, "1s"], { CKPTKIT_LOOP_ARGS: `--config ${config}` });
  assert.equal(await loop.exit(10_000), 2);
  assert.deepEqual(passCodes(loop), [2]);
  assert.match(loop.lines[0], /usage or config error: stopping$/);
  assert.match(loop.stderr, /\[config_invalid\]/);

  await truncateFile(`${root}/${SHARD}`, 100);
  await using once = new Script(VALIDATE_LOOP_SH, ["--once", root, "1h"], { CKPTKIT_LOOP_ARGS: "--fast" });
  assert.equal(await once.exit(10_000), 1);
  assert.deepEqual(passCodes(once), [1]);
  assert.match(once.lines[0], /problems found/);
  assert.match(once.stderr, /^checkpoint_inventory\{[^}]*status="invalid"\} 1$/m, "metrics went to stderr");
});

/** The corruption_detected lines of a watch_corruption.sh run: stdout, and the JSON logs on stderr. */
function detections(watch: Script): { lines: string[]; logs: Record<string, unknown>[] } {
  return {
    lines: watch.lines.filter((line) => line.includes(" corruption_detected ")),
    logs: watch.logs.filter((log) => log.event === "corruption_detected"),
  };
}

/** Scans finished so far (the scans log scan_completed at CKPTKIT_LOG_LEVEL=info). */
const scans = (watch: Script) => watch.logs.filter((log) => log.event === "scan_completed").length;

Deno.test({
  name: "watch_corruption.sh: reports a corruption once, forgets it when fixed, reports it again (python3)",
  ignore: !onPath("python3"),
  fn: async () => {
    await using tmp = await tempDir();
    const root = `${tmp.path}/root`;
    await writeCheckpoint(root, 1);
    await writeCheckpoint(root, 2);
    const shard = `${root}/${SHARD}`;
    const original = await Deno.readFile(shard);
    await using watch = new Script(WATCH_CORRUPTION_SH, [root, "1s"], {
      CKPTKIT_LOG_LEVEL: "info",
      CKPTKIT_WATCH_PARSER: "python3",
    });
    await watch.waitFor("a first clean scan", () => scans(watch) >= 1);
    assert.equal(watch.stdout, "");

    // --fast (the default) sees a shard cut short.
    await truncateFile(shard, 100);
    await watch.waitFor("the corruption", () => detections(watch).lines.length >= 1);
    const seen = scans(watch);
    await watch.waitFor("three more scans", () => scans(watch) >= seen + 3);
    let found = detections(watch);
    assert.equal(found.lines.length, 1, watch.stdout);
    assert.match(
      found.lines[0],
      new RegExp(`^\\S+Z corruption_detected ${root}/step-2 size_mismatch: shard-00000-of-00001\\.bin: `),
    );
    assert.equal(found.logs.length, 1, watch.stderr);
    const [log] = found.logs;
    assert.equal(log.severity, "error");
    assert.equal(log.checkpoint_path, `${root}/step-2`);
    assert.equal(log.reason, "size_mismatch");
    assert.equal(log.step, 2);
    assert.ok(!Number.isNaN(Date.parse(String(log.ts))), String(log.ts));

    // Valid again: forgotten; corrupt again: reported again.
    await Deno.writeFile(shard, original);
    await watch.waitFor("the corruption to clear", () => watch.logs.some((l) => l.event === "corruption_cleared"));
    await truncateFile(shard, 10);
    // The line on stdout and the log line on stderr arrive through two pipes, in either order: wait for both.
    await watch.waitFor("the second corruption", () => {
      const seen = detections(watch);
      return seen.lines.length >= 2 && seen.logs.length >= 2;
    });
    found = detections(watch);
    assert.equal(found.logs.length, 2);
    assert.equal(found.logs[1].checkpoint_path, `${root}/step-2`);

    // A poll that fails outright (root gone: exit 2) stops the watcher.
    await Deno.rename(root, `${root}.moved`);
    assert.equal(await watch.exit(10_000), 2);
    assert.ok(watch.logs.some((l) => l.event === "watch_stopped" && l.reason === "not_found"), watch.stderr);
    assert.equal(detections(watch).lines.length, 2);
  },
});

Deno.test({
  name: "watch_corruption.sh: full depth finds a flipped byte (jq parser); SIGTERM exits 0",
  ignore: !onPath("jq"),
  fn: async () => {
    await using tmp = await tempDir();
    const root = `${tmp.path}/root`;
    await writeCheckpoint(root, 1);
    await writeCheckpoint(root, 2);
    await using watch = new Script(WATCH_CORRUPTION_SH, [root, "1s"], {
      CKPTKIT_LOG_LEVEL: "info",
      CKPTKIT_WATCH_PARSER: "jq",
      CKPTKIT_WATCH_ARGS: "", // full: every byte hashed
    });
    await watch.waitFor("a first clean scan", () => scans(watch) >= 1);
    await flipByte(`${root}/${SHARD}`, 1000);
    await watch.waitFor("the corruption", () => detections(watch).lines.length >= 1);
    const seen = scans(watch);
    await watch.waitFor("two more scans", () => scans(watch) >= seen + 2);
    const found = detections(watch);
    assert.equal(found.lines.length, 1, watch.stdout);
    assert.match(found.lines[0], new RegExp(` corruption_detected ${root}/step-2 hash_mismatch: `));
    assert.equal(found.logs.length, 1);
    assert.deepEqual(found.logs[0].reasons, ["hash_mismatch"]);
    assert.equal(await watch.exit(3_000, "SIGTERM"), 0, watch.stderr);
  },
});

Deno.test("examples/k8s: the manifests parse and say what the scripts and docs promise", async () => {
  const load = async (name: string) => {
    const docs = parseAllDocuments(await Deno.readTextFile(`${REPO}/examples/k8s/${name}`));
    for (const doc of docs) assert.deepEqual(doc.errors, [], name);
    // deno-lint-ignore no-explicit-any
    return docs.map((doc) => doc.toJS() as any);
  };

  const [cron] = await load("validate-cronjob.yaml");
  assert.equal(cron.apiVersion, "batch/v1");
  assert.equal(cron.kind, "CronJob");
  assert.equal(cron.spec.concurrencyPolicy, "Forbid");
  const pod = cron.spec.jobTemplate.spec.template.spec;
  assert.equal(pod.restartPolicy, "Never");
  const [job] = pod.containers;
  const script = job.args.join(" ");
  assert.match(script, /ckptkit emit-metrics \/ckpts\b/);
  assert.match(script, /--pushgateway http:\/\/pushgateway:9091\/metrics/);
  assert.match(script, /--instance \S+/, "a fixed Pushgateway instance");
  assert.deepEqual(job.volumeMounts.find((m: { name: string }) => m.name === "ckpts"), {
    name: "ckpts",
    mountPath: "/ckpts",
  });
  assert.ok(pod.volumes.some((v: { persistentVolumeClaim?: { claimName: string } }) => v.persistentVolumeClaim));
  // The shell snippet maps "problems found" (1) to success and keeps other codes.
  const sh = await new Deno.Command("sh", { args: ["-n", "-c", job.args[0]] }).output();
  assert.equal(sh.code, 0);

  const docs = await load("training-sidecar.yaml");
  assert.deepEqual(docs.map((d) => d.kind), ["PersistentVolumeClaim", "Deployment"]);
  const template = docs[1].spec.template;
  assert.equal(template.metadata.annotations["prometheus.io/scrape"], "true");
  assert.equal(template.metadata.annotations["prometheus.io/port"], "9478");
  const containers = template.spec.containers;
  assert.deepEqual(containers.map((c: { name: string }) => c.name), ["trainer", "ckptkit"]);
  const sidecar = containers[1];
  assert.deepEqual([...sidecar.command, ...sidecar.args].slice(0, 5), [
    "ckptkit",
    "serve",
    "/ckpts",
    "--listen",
    ":9478",
  ]);
  assert.equal(sidecar.livenessProbe.httpGet.path, "/healthz");
  assert.equal(sidecar.livenessProbe.httpGet.port, "metrics");
  assert.equal(sidecar.ports[0].containerPort, 9478);
  for (const container of containers) {
    assert.ok(container.volumeMounts.some((m: { name: string; mountPath: string }) => m.mountPath === "/ckpts"));
  }
});

/** The `Key=value` lines of a systemd unit, by key (repeated keys keep every value). */
async function unitKeys(name: string): Promise<Map<string, string[]>> {
  const keys = new Map<string, string[]>();
  for (const line of (await Deno.readTextFile(`${REPO}/examples/systemd/${name}`)).split("\n")) {
    const match = /^([A-Za-z]+)=(.*)$/.exec(line);
    if (match) keys.set(match[1], [...keys.get(match[1]) ?? [], match[2]]);
  }
  return keys;
}

Deno.test("examples/systemd: the units run the documented commands, hardened", async () => {
  const validate = await unitKeys("ckptkit-validate.service");
  assert.deepEqual(validate.get("Type"), ["oneshot"]);
  assert.deepEqual(validate.get("SuccessExitStatus"), ["1"]);
  assert.deepEqual(validate.get("ExecStart"), [
    "/usr/local/bin/ckptkit emit-metrics /srv/ckpts --textfile /var/lib/node_exporter/textfile_collector/ckptkit.prom " +
    "--sample-bytes 64KiB",
  ]);
  assert.deepEqual(validate.get("ReadWritePaths"), ["/srv/ckpts /var/lib/node_exporter/textfile_collector"]);

  const timer = await unitKeys("ckptkit-validate.timer");
  assert.deepEqual(timer.get("OnCalendar"), ["*:0/10"]);
  assert.deepEqual(timer.get("WantedBy"), ["timers.target"]);

  const serve = await unitKeys("ckptkit-serve.service");
  assert.deepEqual(serve.get("ExecStart"), [
    "/usr/local/bin/ckptkit serve /srv/ckpts --listen 127.0.0.1:9478 --interval 5m",
  ]);
  assert.deepEqual(serve.get("ReadWritePaths"), ["/srv/ckpts"]);
  assert.deepEqual(serve.get("RestartPreventExitStatus"), ["2"]);

  for (const unit of [validate, serve]) {
    for (const [key, value] of [["ProtectSystem", "strict"], ["NoNewPrivileges", "yes"], ["PrivateTmp", "yes"]]) {
      assert.deepEqual(unit.get(key), [value], key);
    }
    // V8's JIT needs writable and executable memory.
    assert.equal(unit.get("MemoryDenyWriteExecute"), undefined);
  }
});

Deno.test({
  name: "examples/systemd: systemd-analyze verify accepts the units",
  ignore: !onPath("systemd-analyze"),
  fn: async () => {
    await using tmp = await tempDir();
    // verify needs ExecStart's binary to exist: point it at a stand-in.
    const binary = `${tmp.path}/ckptkit`;
    await Deno.writeTextFile(binary, "#!/bin/sh\n");
    await Deno.chmod(binary, 0o755);
    const units = ["ckptkit-validate.service", "ckptkit-validate.timer", "ckptkit-serve.service"];
    for (const name of units) {
      const text = await Deno.readTextFile(`${REPO}/examples/systemd/${name}`);
      await Deno.writeTextFile(`${tmp.path}/${name}`, text.replaceAll("/usr/local/bin/ckptkit", binary));
    }
    const output = await new Deno.Command("systemd-analyze", {
      args: ["verify", "--man=no", ...units.map((name) => `${tmp.path}/${name}`)],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(output.stdout) + new TextDecoder().decode(output.stderr);
    assert.equal(output.code, 0, text);
    assert.equal(text.trim(), "", "no warnings");
  },
});

/**
 * The time the test names is what a script should take; a busy machine may take far longer without anything being
 * wrong, so the wait is only a backstop against a real hang (minutes), never a timing assertion.
 */
function backstop(timeoutMs: number): number {
  return Math.max(timeoutMs, 300_000);
}
