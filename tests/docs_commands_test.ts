/**
 * Every shell block of README.md and docs/ (```sh, ```bash, ```shell) is
 * claimed here by exactly one entry of {@linkcode ENTRIES}, found by its text
 * (pages move, blocks keep their text):
 *
 * - `run`: the block's commands run here for real with bash in a sandbox
 *   (tests/_doc_blocks.ts): `ckptkit` on PATH is `deno run <the ckptkit
 *   task's flags> <repo>/cli.ts`, the working folder is a checkout of symbolic
 *   links to the repository, absolute paths under /tmp, /mnt, /srv, /shared
 *   and /var/lib/node_exporter move under the sandbox, the examples' ports
 *   become free ones. A setup makes the block meaningful (checkpoints at the
 *   steps it names, a staging folder, a damaged file) and the assertions are
 *   on what the reader sees: each command's exit code, a key line of output,
 *   the files written.
 * - `elsewhere`: another test file runs the block as written; checked here to
 *   read the block's page and to find it by its heading or first command.
 * - `notRunnable`: cannot run here, with the reason; what can be checked (the
 *   files, tasks and flags the block names) is.
 *
 * A block no entry claims fails the first test, and so does an entry whose
 * block no page shows any more.
 */

import assert from "node:assert/strict";
import denoJson from "../deno.json" with { type: "json" };
import { openCheckpointWriter } from "../mod.ts";
import {
  alive,
  allShellBlocks,
  type CommandResult,
  commandsOf,
  type DocBlock,
  firstLine,
  type Sandbox,
  sandbox,
  shellBlocks,
  showResult,
  stripComment,
} from "./_doc_blocks.ts";
import { FIXTURES, flipByte, REPO, runCli } from "./_helpers.ts";
import {
  activeAlerts,
  type Alert,
  Fatal,
  get,
  ON_CI,
  onPath,
  type Server,
  serverCommand,
  startServer,
  stopServer,
  tail,
  until,
} from "./_servers.ts";

/** What a test may do with a block. */
interface Entry {
  /** Names the test. */
  title: string;
  /** The block's lines, exactly as the page shows them. */
  block: string[];
  /** (a) run here. */
  run?: (box: Sandbox, commands: string[]) => Promise<void>;
  /** Tools the run needs besides bash and deno (skipped without them, except on CI). */
  tools?: string[];
  /** Ports of the block (and of files it names) to move to free ones. */
  ports?: number[];
  /** (b) run as written by this test file (under tests/). */
  elsewhere?: string;
  /** (c) why it cannot run here, and the checks that can. */
  notRunnable?: { reason: string; check: (commands: string[]) => Promise<void> };
}

const text = (entry: Entry) => entry.block.map((line) => `${line}\n`).join("");

/** Asserts the exit code of each command, in order. */
function assertCodes(results: CommandResult[], codes: number[]): void {
  assert.equal(results.length, codes.length);
  results.forEach((r, i) => assert.equal(r.code, codes[i], showResult(r)));
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch {
    return false;
  }
}

/** Commits checkpoints at `steps` into a root through the CLI (small files, as `write` makes them). */
async function writeSteps(root: string, steps: number[], jobId = "demo", runId = "run1"): Promise<void> {
  for (const step of steps) {
    const run = await runCli([
      "write",
      "--root",
      root,
      "--job-id",
      jobId,
      "--run-id",
      runId,
      "--step",
      String(step),
      "--files",
      "2",
      "--file-size",
      "128KiB",
      "--log-level",
      "warn",
    ]);
    assert.equal(run.code, 0, run.stderr);
  }
}

/** Some bytes, different per name, for files the blocks commit or seal. */
async function fill(path: string, size: number): Promise<void> {
  await Deno.mkdir(path.slice(0, path.lastIndexOf("/")), { recursive: true });
  const seed = [...path].reduce((a, c) => a + c.charCodeAt(0), 0);
  await Deno.writeFile(path, new Uint8Array(size).map((_, i) => (i * 31 + seed) & 0xff));
}

/** Commits a checkpoint whose manifest says it was created at `at` (for --before-time). */
async function writeStepAt(root: string, step: number, at: string): Promise<void> {
  const RealDate = Date;
  const fixed = new RealDate(at).getTime();
  // Only the creation time is pinned: `new Date()` and Date.now() read `at`.
  class PinnedDate extends RealDate {
    constructor(...args: unknown[]) {
      super(...((args.length === 0 ? [fixed] : args) as [number]));
    }
    static override now(): number {
      return fixed;
    }
  }
  globalThis.Date = PinnedDate as DateConstructor;
  try {
    const writer = await openCheckpointWriter(root, { step, jobId: "llama", runId: "r1" });
    await writer.writeFile("model.pt", new Uint8Array(4096).fill(step & 0xff));
    await writer.commit();
  } finally {
    globalThis.Date = RealDate;
  }
}

/** `exec` in front of a command, after its variable assignments (`A=1 exec cmd`, as `exec A=1 cmd` is no command). */
function execForm(command: string): string {
  const [, assignments, rest] = /^((?:\w+=(?:"[^"]*"|'[^']*'|\S+)\s+)*)([\s\S]*)$/.exec(command)!;
  return `${assignments}exec ${rest}`;
}

/** A long-running command of a block, started as a server (bash execs it), stopped by its PID. */
async function startBlockServer(box: Sandbox, name: string, command: string, logDir: string): Promise<Server> {
  await Deno.mkdir(logDir, { recursive: true });
  const log = `${logDir}/${name}.log`;
  // bash writes the output straight to the files, so they can be read while the server runs.
  const child = new Deno.Command("bash", {
    args: ["--noprofile", "--norc", "-c", `${execForm(box.rewrite(stripComment(command)))} >${log}.stdout 2>${log}`],
    cwd: box.checkout,
    env: box.env(),
    clearEnv: true,
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  const server: Server = { name, child, log, drained: Promise.resolve(), exitCode: null };
  child.status.then((status) => server.exitCode = status.code);
  return server;
}

const BACKSTOP = 8 * 60_000; // against a hang, never a timing requirement

const ENTRIES: Entry[] = [
  {
    title: "set-up: deno task demo (deno task test is this suite)",
    block: [
      "deno task demo   # the main job: writes, damages and recovers checkpoints in ./demo-root",
      "deno task test   # the test suite",
    ],
    async run(box, [demo, test]) {
      const [ran] = await box.run([demo]);
      assertCodes([ran], [0]);
      assert.match(ran.stdout, /step-20/);
      assert.ok(await exists(`${box.checkout}/demo-root/step-20`), "demo-root in the checkout");
      // Running the suite from inside the suite would recurse: the task exists and covers tests/.
      assert.match(test, /^deno task test\b/);
      assert.match(denoJson.tasks.test, /^deno test .* tests\//);
    },
  },
  {
    title: "quickstart: the alias",
    block: [
      'alias ckptkit="deno run --no-prompt --allow-read --allow-write --allow-env=CKPTKIT_CONFIG,CKPTKIT_JOB_ID,CKPTKIT_LOG_FORMAT,CKPTKIT_LOG_LEVEL,CKPTKIT_ROOT,CKPTKIT_RUN_ID,CKPTKIT_TEST_FAIL_AT,CKPTKIT_TEST_PAUSE_AT --ignore-env --allow-sys=hostname,statfs --allow-net $PWD/cli.ts"',
    ],
    async run(box, [alias]) {
      assert.equal(
        /^alias ckptkit="(.*) \$PWD\/cli\.ts"$/.exec(alias)?.[1],
        denoJson.tasks.ckptkit.replace(/ cli\.ts$/, ""),
      );
      // No ckptkit on PATH: the version comes through the alias.
      const results = await box.run([alias, "ckptkit --version"], {
        preamble: "shopt -s expand_aliases",
        withoutCkptkit: true,
      });
      assertCodes(results, [0, 0]);
      assert.equal(results[1].stdout.trim(), denoJson.version);
    },
  },
  {
    title: "quickstart: write, validate, scan, resume",
    block: [
      "ckptkit write --root /tmp/ckpts --job-id demo --run-id run1 --step 10",
      "ckptkit validate /tmp/ckpts/step-10",
      "ckptkit scan /tmp/ckpts",
      "ckptkit resume /tmp/ckpts",
    ],
    async run(box, commands) {
      const results = await box.run(commands);
      assertCodes(results, [0, 0, 0, 0]);
      const root = box.path("/tmp/ckpts");
      assert.match(results[0].stdout, new RegExp(`^committed ${root}/step-10 \\(5 files, 4\\.0 MiB`));
      assert.match(results[1].stdout, new RegExp(`^OK ${root}/step-10 \\(full, 5 files`));
      assert.match(results[2].stdout, /1 checkpoint: 1 valid, 0 invalid/);
      assert.equal(results[3].stdout, `${root}/step-10\n`);
    },
  },
  {
    title: "write: 8 files of 64 MiB",
    block: ["ckptkit write --root /tmp/ckpts --job-id demo --run-id run1 --step 20 --files 8 --file-size 64MiB"],
    async run(box, commands) {
      const [write] = await box.run(commands);
      assertCodes([write], [0]);
      const step = box.path("/tmp/ckpts/step-20");
      assert.match(write.stdout, new RegExp(`^committed ${step} \\(`));
      const manifest = JSON.parse(await Deno.readTextFile(`${step}/ckptkit.manifest.json`));
      const big = manifest.files.filter((f: { size: number }) => f.size === 64 * 1024 * 1024);
      assert.equal(big.length, 8, JSON.stringify(manifest.files.map((f: { path: string }) => f.path)));
      assert.equal((await runCli(["validate", step, "--fast"])).code, 0);
    },
  },
  {
    title: "commit: a staging folder with metadata",
    block: [
      "ckptkit commit /mnt/ckpts/run/.staging-step-500 --root /mnt/ckpts/run --step 500 --job-id llama --metadata loss=1.92",
    ],
    async run(box, commands) {
      const staging = box.path("/mnt/ckpts/run/.staging-step-500");
      await fill(`${staging}/model.pt`, 300_000);
      await fill(`${staging}/optimizer.pt`, 200_000);
      const [commit] = await box.run(commands);
      assertCodes([commit], [0]);
      const step = box.path("/mnt/ckpts/run/step-500");
      assert.match(commit.stdout, new RegExp(`^committed ${step} `));
      assert.ok(!(await exists(staging)), "the staging folder became step-500");
      const manifest = JSON.parse(await Deno.readTextFile(`${step}/ckptkit.manifest.json`));
      assert.equal(manifest.job_id, "llama");
      assert.equal(String(manifest.metadata.loss), "1.92");
      assert.equal((await runCli(["validate", step])).code, 0);
    },
  },
  {
    title: "commit: one rank of a multi-rank checkpoint (--wait)",
    block: [
      "ckptkit commit /mnt/ckpts/run/.staging-step-500-$SLURM_JOB_ID --root /mnt/ckpts/run --step 500 \\",
      '  --rank "$SLURM_PROCID" --world-size "$SLURM_NTASKS" --rank-files "model-rank-$SLURM_PROCID.pt" --wait',
    ],
    run: (box, commands) => runRanks(box, commands, "/mnt/ckpts/run/.staging-step-500-4242"),
  },
  {
    title: "seal: one Hugging Face checkpoint",
    block: ["ckptkit seal /mnt/hf-run/checkpoint-500 --job-id hf-run"],
    async run(box, commands) {
      const checkpoint = box.path("/mnt/hf-run/checkpoint-500");
      await hfCheckpoint(checkpoint);
      const [seal] = await box.run(commands);
      assertCodes([seal], [0]);
      const manifest = JSON.parse(await Deno.readTextFile(`${checkpoint}/ckptkit.manifest.json`));
      assert.equal(manifest.job_id, "hf-run");
      assert.equal(manifest.step, 500);
      assert.equal((await runCli(["validate", checkpoint])).code, 0);
    },
  },
  {
    title: "seal --all: every checkpoint of a Hugging Face run",
    block: ["ckptkit seal /mnt/hf-run --all"],
    async run(box, commands) {
      for (const step of [500, 1000]) await hfCheckpoint(box.path(`/mnt/hf-run/checkpoint-${step}`));
      const [seal] = await box.run(commands);
      assertCodes([seal], [0]);
      for (const step of [500, 1000]) {
        const checkpoint = box.path(`/mnt/hf-run/checkpoint-${step}`);
        assert.ok(seal.stdout.includes(checkpoint), showResult(seal));
        assert.equal((await runCli(["validate", checkpoint])).code, 0);
      }
    },
  },
  {
    title: "validate at three depths",
    block: [
      "ckptkit validate /tmp/ckpts/step-10                       # full: every byte hashed",
      "ckptkit validate /tmp/ckpts/step-10 --fast                # manifest, presence and sizes: metadata only",
      "ckptkit validate /tmp/ckpts/step-10 --sample-bytes 65536  # the sampled regions recorded at commit",
    ],
    async run(box, commands) {
      await quickstartRoot(box);
      const results = await box.run(commands);
      assertCodes(results, [0, 0, 0]);
      const step = box.path("/tmp/ckpts/step-10");
      assert.match(results[0].stdout, new RegExp(`^OK ${step} \\(full,`));
      assert.match(results[1].stdout, new RegExp(`^OK ${step} \\(fast,`));
      assert.match(results[2].stdout, new RegExp(`^OK ${step} \\(sample,`));
      // The full depth sees a flipped byte.
      await flipByte(`${step}/shard-00000-of-00004.bin`, 300_000);
      const [damaged] = await box.run([commands[0]]);
      assertCodes([damaged], [1]);
    },
  },
  {
    title: "export-sums and sha256sum -c",
    block: [
      "ckptkit export-sums /tmp/ckpts/step-10 --output /tmp/step-10.sha256",
      'cd /tmp/ckpts/step-10 && sha256sum -c /tmp/step-10.sha256        # exit 1 and "FAILED" on any damaged file',
      "ckptkit export-sums /tmp/ckpts/step-10 | (cd /tmp/ckpts/step-10 && sha256sum --quiet -c -)",
    ],
    tools: ["sha256sum"],
    async run(box, commands) {
      await quickstartRoot(box);
      const results = await box.run(commands);
      assertCodes(results, [0, 0, 0]);
      assert.match(
        await Deno.readTextFile(box.path("/tmp/step-10.sha256")),
        /^[0-9a-f]{64} {2}shard-00000-of-00004\.bin$/m,
      );
      assert.match(results[1].stdout, /^shard-00000-of-00004\.bin: OK$/m);
      assert.equal(results[2].stdout, "");
      // As the comment says: a damaged file fails the check.
      await flipByte(box.path("/tmp/ckpts/step-10/shard-00001-of-00004.bin"), 10);
      const [, check, piped] = await box.run(commands);
      assertCodes([check, piped], [1, 1]);
      assert.match(check.stdout, /^shard-00001-of-00004\.bin: FAILED$/m);
    },
  },
  {
    title: "scan: sampled, then quarantining",
    block: [
      "ckptkit scan /mnt/ckpts/run --sample-bytes 64KiB",
      "ckptkit scan /mnt/ckpts/run --quarantine",
    ],
    async run(box, commands) {
      const root = box.path("/mnt/ckpts/run");
      await writeSteps(root, [10, 20, 30]);
      // Bit rot in a sampled region (the first 64 KiB) of step-20.
      await flipByte(`${root}/step-20/shard-00000-of-00002.bin`, 100);
      const results = await box.run(commands);
      assertCodes(results, [1, 1]);
      assert.match(results[0].stdout, /3 checkpoints: 2 valid, 1 invalid/);
      assert.match(results[0].stdout, /step-20/);
      assert.ok(!(await exists(`${root}/step-20`)), "step-20 quarantined");
      assert.ok(await exists(`${root}/corrupt`), showResult(results[1]));
      const [again] = await box.run([commands[0]]);
      assertCodes([again], [0]);
    },
  },
  {
    title: "scan by shards and merge into a textfile",
    block: [
      "ckptkit scan /mnt/ckpts/run --shard 0/4 --report /shared/reports/shard-0.json   # on each of 4 nodes: 0/4 … 3/4",
      "ckptkit report merge /shared/reports/shard-*.json --textfile /var/lib/node_exporter/textfile_collector/ckptkit.prom",
    ],
    run: (box, commands) => shardsAndMerge(box, commands, "/shared/reports"),
  },
  {
    title: "resume: newest valid, newest before a time, repair",
    block: [
      "ckptkit resume /mnt/ckpts/run",
      "ckptkit resume /mnt/ckpts/run --policy newest-before --before-time 2026-11-28T06:00:00Z --json",
      "ckptkit resume /mnt/ckpts/run --repair",
    ],
    async run(box, commands) {
      const root = box.path("/mnt/ckpts/run");
      await writeStepAt(root, 10, "2026-11-27T10:00:00Z");
      await writeStepAt(root, 20, "2026-11-28T05:00:00Z");
      await writeStepAt(root, 30, "2026-11-28T07:00:00Z");
      await writeStepAt(root, 40, "2026-11-28T08:00:00Z");
      // latest names step-40, which is damaged.
      await flipByte(`${root}/step-40/model.pt`, 5);
      const results = await box.run(commands);
      assertCodes(results, [0, 0, 0]);
      assert.equal(results[0].stdout, `${root}/step-30\n`);
      assert.equal(JSON.parse(results[1].stdout).path, `${root}/step-20`);
      assert.equal(results[2].stdout, `${root}/step-30\n`);
      assert.equal((await Deno.readTextFile(`${root}/latest`)).trim(), "step-30");
      assert.ok(!(await exists(`${root}/step-40`)), "--repair quarantined step-40");
    },
  },
  {
    title: "quarantine with a reason",
    block: ['ckptkit quarantine /mnt/ckpts/run/step-3000 --reason "loss spike at 2980"'],
    async run(box, commands) {
      const root = box.path("/mnt/ckpts/run");
      await writeSteps(root, [2000, 3000]);
      const [quarantine] = await box.run(commands);
      assertCodes([quarantine], [0]);
      assert.ok(!(await exists(`${root}/step-3000`)));
      const records = await Array.fromAsync(Deno.readDir(`${root}/corrupt`));
      const found = [];
      for (const entry of records) {
        if (entry.isFile) found.push(await Deno.readTextFile(`${root}/corrupt/${entry.name}`));
      }
      assert.ok(found.some((record) => record.includes("loss spike at 2980")), JSON.stringify(records));
      const [resume] = await box.run(["ckptkit resume /mnt/ckpts/run"]);
      assert.equal(resume.stdout, `${root}/step-2000\n`);
    },
  },
  {
    title: "gc --dry-run with keep-last and keep-every",
    block: ["ckptkit gc /mnt/ckpts/run --keep-last 3 --keep-every 1000 --dry-run"],
    async run(box, commands) {
      const root = box.path("/mnt/ckpts/run");
      const steps = [500, 1000, 1500, 2000, 2500, 3000, 3500, 4000];
      await writeSteps(root, steps);
      const [gc] = await box.run(commands);
      assertCodes([gc], [0]);
      for (const step of [500, 1500, 2500]) assert.match(gc.stdout, new RegExp(`delete\\s+step-${step}\\b`), gc.stdout);
      for (const step of [1000, 2000, 3000, 3500, 4000]) {
        assert.match(gc.stdout, new RegExp(`keep\\s+step-${step}\\b`), gc.stdout);
      }
      for (const step of steps) assert.ok(await exists(`${root}/step-${step}`), `dry run kept step-${step}`);
    },
  },
  {
    title: "emit-metrics: textfile, textfile folder, Pushgateway, promtool",
    block: [
      "ckptkit emit-metrics /srv/ckpts --textfile /var/lib/node_exporter/textfile_collector/ckptkit.prom --sample-bytes 64KiB",
      "ckptkit emit-metrics /srv/ckpts --textfile /var/lib/node_exporter/textfile_collector   # the folder: one file per root",
      "ckptkit emit-metrics /srv/ckpts --pushgateway http://pushgateway:9091/metrics",
      "ckptkit emit-metrics /srv/ckpts --fast | promtool check metrics",
    ],
    tools: ["prometheus-pushgateway", "promtool"],
    ports: [9091],
    async run(box, commands) {
      const root = box.path("/srv/ckpts");
      await writeSteps(root, [10, 20]);
      const collector = box.path("/var/lib/node_exporter/textfile_collector");
      await Deno.mkdir(collector, { recursive: true });
      const logs = `${box.dir}/logs`;
      await Deno.mkdir(logs);
      const port = box.port(9091);
      const pushgateway = await startServer(
        "pushgateway",
        serverCommand("prometheus-pushgateway", [`--web.listen-address=127.0.0.1:${port}`]),
        logs,
      );
      try {
        await until(
          "the Pushgateway",
          Date.now() + BACKSTOP,
          async () => (await get(`http://127.0.0.1:${port}/-/ready`)).status === 200 || undefined,
        );
        const results = await box.run(commands);
        assertCodes(results, [0, 0, 0, 0]);
        assert.match(
          await Deno.readTextFile(`${collector}/ckptkit.prom`),
          /^checkpoint_inventory\{[^}]*status="valid"\} 2$/m,
        );
        const perRoot = (await Array.fromAsync(Deno.readDir(collector))).map((e) => e.name).filter((n) =>
          n !== "ckptkit.prom"
        );
        assert.equal(perRoot.length, 1, JSON.stringify(perRoot));
        assert.match(perRoot[0], /^ckptkit-.*srv-ckpts-[0-9a-f]{10}\.prom$/);
        const pushed = await get(`http://127.0.0.1:${port}/metrics`);
        assert.match(pushed.body, /^checkpoint_inventory\{[^}]*status="valid"\} 2$/m);
      } catch (error) {
        console.error(await tail(pushgateway.log));
        throw error;
      } finally {
        await stopServer(pushgateway);
      }
    },
  },
  {
    title: "serve: the exporter",
    block: ["ckptkit serve /srv/ckpts --listen 127.0.0.1:9478 --interval 5m --sample-bytes 64KiB"],
    ports: [9478],
    async run(box, [serve]) {
      await writeSteps(box.path("/srv/ckpts"), [10, 20]);
      const server = await startBlockServer(box, "serve", serve, `${box.dir}/logs`);
      try {
        const metrics = await until("serve's first pass", Date.now() + BACKSTOP, async () => {
          if (server.exitCode !== null) throw new Fatal(`serve exited ${server.exitCode}: ${await tail(server.log)}`);
          const { body } = await get(`http://127.0.0.1:${box.port(9478)}/metrics`);
          return /^checkpoint_inventory\{/m.test(body) ? body : undefined;
        });
        assert.match(metrics, /^checkpoint_inventory\{[^}]*status="valid"\} 2$/m);
      } finally {
        await stopServer(server);
      }
      assert.equal(server.exitCode, 0, await tail(server.log));
    },
  },
  {
    title: "monitoring walkthrough: node_exporter, serve, Prometheus and the alerts",
    block: [
      "ckptkit write --root /tmp/ckpts --job-id demo --run-id run1 --step 10",
      "ckptkit write --root /tmp/ckpts --job-id demo --run-id run1 --step 20",
      "printf 'XXXXXXXX' | dd of=/tmp/ckpts/step-20/shard-00000-of-00004.bin bs=1 seek=1000 conv=notrunc  # bit rot",
      "mkdir -p /tmp/textfile",
      "ckptkit emit-metrics /tmp/ckpts --textfile /tmp/textfile             # exit 1: problems found; writes ckptkit-tmp-ckpts-<hash>.prom",
      "prometheus-node-exporter --collector.textfile.directory=/tmp/textfile --web.listen-address=127.0.0.1:9100 &",
      "ckptkit serve /tmp/ckpts --listen 127.0.0.1:9478 --interval 30s &",
      "prometheus --config.file=examples/prometheus.yml --storage.tsdb.path=/tmp/prom-data --web.listen-address=127.0.0.1:9090 &",
      "sleep 150",
      "curl -s http://127.0.0.1:9090/api/v1/alerts",
    ],
    tools: ["prometheus", "prometheus-node-exporter", "curl"],
    ports: [9100, 9478, 9090, 9091],
    run: monitoringWalkthrough,
  },
  {
    title: "running continuously: validate_loop.sh, watch_corruption.sh, deno task validate-loop",
    block: [
      'CKPTKIT_LOOP_ARGS="--textfile /var/lib/node_exporter/textfile_collector/ckptkit.prom" scripts/validate_loop.sh /srv/ckpts 5m',
      "scripts/watch_corruption.sh /srv/ckpts 30s",
      "deno task validate-loop --root /srv/ckpts --interval 5m --textfile /tmp/ckptkit.prom",
    ],
    tools: ["python3"],
    run: loops,
  },
  {
    title: "multi-node: shards and the merge",
    block: [
      "ckptkit scan /mnt/ckpts/run --shard 0/4 --report /shared/reports/run/shard-0.json   # 1/4, 2/4 and 3/4 on other nodes",
      "ckptkit report merge /shared/reports/run/shard-*.json --textfile /var/lib/node_exporter/textfile_collector/ckptkit.prom",
    ],
    run: (box, commands) => shardsAndMerge(box, commands, "/shared/reports/run"),
  },
  {
    title: "Slurm: the submit wrapper",
    block: [
      "deno task compile && cp dist/ckptkit /shared/bin/ckptkit   # one binary on the shared filesystem, nothing to install",
      "CKPTKIT=/shared/bin/ckptkit CKPTKIT_ROOT=/shared/ckpts/run examples/slurm/submit_validation.sh 8",
    ],
    elsewhere: "slurm_real_test.ts",
  },
  {
    title: "Slurm: the array and the merge by hand",
    block: [
      "export CKPTKIT=/shared/bin/ckptkit CKPTKIT_ROOT=/shared/ckpts/run",
      "id=$(sbatch --parsable --array=0-7 examples/slurm/validate_array.sbatch)",
      'sbatch --dependency=afterany:"${id%%;*}" examples/slurm/validate_merge.sbatch "${id%%;*}"',
    ],
    elsewhere: "slurm_real_test.ts",
  },
  {
    title: "Kubernetes: sharded validation",
    block: [
      "examples/k8s/run-sharded-validation.sh                          # once: shards, then the merge; prints the verdict",
      "kubectl apply -f examples/k8s/validate-sharded-cronjob.yaml     # every night",
    ],
    notRunnable: {
      reason: "needs a Kubernetes cluster (examples_multinode_test.ts runs the script against a stand-in kubectl)",
      async check(commands) {
        for (const command of commands) {
          const file = /examples\/k8s\/\S+/.exec(command)![0];
          const info = await Deno.stat(`${REPO}/${file}`);
          if (file.endsWith(".sh")) {
            assert.ok((info.mode! & 0o111) !== 0, `${file} is executable`);
            const syntax = await new Deno.Command("bash", { args: ["-n", `${REPO}/${file}`] }).output();
            assert.equal(syntax.code, 0, new TextDecoder().decode(syntax.stderr));
          } else {
            assert.match(await Deno.readTextFile(`${REPO}/${file}`), /^kind: CronJob$/m);
          }
        }
      },
    },
  },
  {
    title: "multi-rank commit under Slurm",
    block: [
      "STAGING=/mnt/ckpts/run/.staging-step-500-$SLURM_JOB_ID",
      'ckptkit commit "$STAGING" --root /mnt/ckpts/run --step 500 --job-id llama --run-id "$SLURM_JOB_ID" \\',
      '  --rank "$SLURM_PROCID" --world-size "$SLURM_NTASKS" --rank-files "model-rank-$SLURM_PROCID.pt" --wait',
    ],
    async run(box, commands) {
      await runRanks(box, commands, "/mnt/ckpts/run/.staging-step-500-4242");
      const manifest = JSON.parse(await Deno.readTextFile(box.path("/mnt/ckpts/run/step-500/ckptkit.manifest.json")));
      assert.deepEqual([manifest.job_id, manifest.run_id], ["llama", "4242"]);
    },
  },
  {
    title: "building the binary",
    block: [
      "deno task compile       # dist/ckptkit for this machine",
      "deno task compile:all   # dist/ckptkit-<target> for the four targets below",
      "dist/ckptkit --version  # the version of deno.json, compiled into the binary",
    ],
    notRunnable: {
      reason: "deno compile downloads its runtime base (denort) and there is no internet here",
      async check() {
        for (const task of ["compile", "compile:all"] as const) {
          assert.match(denoJson.tasks[task], /^deno compile .* --output dist\/ckptkit\S* cli\.ts/);
        }
        const version = await runCli(["--version"]);
        assert.equal(version.stdout.trim(), denoJson.version);
      },
    },
  },
  {
    title: "release checksums",
    block: [
      "(cd dist && sha256sum ckptkit-* > SHA256SUMS)   # where the binaries were built",
      "sha256sum --ignore-missing -c SHA256SUMS        # in the folder you downloaded them to",
    ],
    tools: ["sha256sum"],
    async run(box, [make, check]) {
      // The binaries compile:all names (stand-in bytes: compiling needs the internet).
      const targets = [...denoJson.tasks["compile:all"].matchAll(/--output dist\/(ckptkit-\S+)/g)].map((m) => m[1]);
      assert.equal(targets.length, 4);
      for (const name of targets) await fill(`${box.checkout}/dist/${name}`, 10_000);
      const [made] = await box.run([make]);
      assertCodes([made], [0]);
      // A download of two of the four and the sums.
      const downloads = `${box.dir}/downloads`;
      await Deno.mkdir(downloads);
      for (const name of [targets[0], targets[2], "SHA256SUMS"]) {
        await Deno.copyFile(`${box.checkout}/dist/${name}`, `${downloads}/${name}`);
      }
      const [checked] = await box.run([check], { cwd: downloads });
      assertCodes([checked], [0]);
      assert.deepEqual(checked.stdout.trimEnd().split("\n").sort(), [`${targets[0]}: OK`, `${targets[2]}: OK`].sort());
      await flipByte(`${downloads}/${targets[2]}`, 7);
      const [damaged] = await box.run([check], { cwd: downloads });
      assertCodes([damaged], [1]);
      assert.match(damaged.stdout, new RegExp(`^${targets[2]}: FAILED$`, "m"));
    },
  },
];

// --- shared set-ups -----------------------------------------------------------------------------------

/** The quickstart's root: /tmp/ckpts/step-10 as `write` makes it. */
async function quickstartRoot(box: Sandbox): Promise<void> {
  const results = await box.run(["ckptkit write --root /tmp/ckpts --job-id demo --run-id run1 --step 10"]);
  assertCodes(results, [0]);
}

/** A folder as Hugging Face's Trainer leaves it (real safetensors and torch.save files). */
async function hfCheckpoint(dir: string): Promise<void> {
  const step = Number(/checkpoint-(\d+)$/.exec(dir)![1]);
  await Deno.mkdir(dir, { recursive: true });
  await Deno.copyFile(`${FIXTURES}/safetensors/voices.safetensors`, `${dir}/model.safetensors`);
  await Deno.copyFile(`${FIXTURES}/torch-zip/test.pt`, `${dir}/optimizer.pt`);
  await Deno.copyFile(`${FIXTURES}/torch-zip/test_with_key.pt`, `${dir}/scheduler.pt`);
  await Deno.writeTextFile(`${dir}/trainer_state.json`, JSON.stringify({ global_step: step }));
}

/** Two ranks of one Slurm job run the block side by side on a shared staging folder. */
async function runRanks(box: Sandbox, commands: string[], staging: string): Promise<void> {
  for (const rank of [0, 1]) await fill(box.path(`${staging}/model-rank-${rank}.pt`), 100_000 + rank);
  const ranks = await Promise.all(
    [0, 1].map((rank) =>
      box.run(commands, { env: { SLURM_JOB_ID: "4242", SLURM_PROCID: String(rank), SLURM_NTASKS: "2" } })
    ),
  );
  for (const results of ranks) assertCodes(results.slice(-1), [0]);
  const step = box.path("/mnt/ckpts/run/step-500");
  const manifest = JSON.parse(await Deno.readTextFile(`${step}/ckptkit.manifest.json`));
  assert.deepEqual(manifest.files.map((f: { path: string }) => f.path).sort(), ["model-rank-0.pt", "model-rank-1.pt"]);
  assert.equal((await runCli(["validate", step])).code, 0);
}

/** Shard 0 as written, 1..3 as "the other nodes" run it, then the merge. */
async function shardsAndMerge(box: Sandbox, [shard, merge]: string[], reports: string): Promise<void> {
  const root = box.path("/mnt/ckpts/run");
  await writeSteps(root, [10, 20, 30]);
  await Deno.mkdir(box.path(reports), { recursive: true });
  await Deno.mkdir(box.path("/var/lib/node_exporter/textfile_collector"), { recursive: true });
  assert.match(shard, / --shard 0\/4 --report \S+\/shard-0\.json/);
  const others = [1, 2, 3].map((i) =>
    stripComment(shard).replace("--shard 0/4", `--shard ${i}/4`).replace("shard-0.json", `shard-${i}.json`)
  );
  const results = await box.run([shard, ...others, merge]);
  assertCodes(results, [0, 0, 0, 0, 0]);
  const single = await runCli(["scan", root]);
  // The merge prints what one node's scan prints (timings aside).
  const untimed = (out: string) => out.replace(/\b\d+(\.\d+)? s\b/g, "<t> s");
  assert.equal(untimed(results[4].stdout), untimed(single.stdout));
  assert.match(
    await Deno.readTextFile(box.path("/var/lib/node_exporter/textfile_collector/ckptkit.prom")),
    /^checkpoint_inventory\{[^}]*status="valid"\} 3$/m,
  );
}

/** The three loops of "Running it continuously", each started as written, checked, stopped by its PID. */
async function loops(box: Sandbox, [loop, watch, task]: string[]): Promise<void> {
  const root = box.path("/srv/ckpts");
  await writeSteps(root, [10, 20]);
  await Deno.mkdir(box.path("/var/lib/node_exporter/textfile_collector"), { recursive: true });
  const logs = `${box.dir}/logs`;
  const cases: [string, string, () => Promise<boolean>][] = [
    ["validate_loop", loop, async () =>
      /^checkpoint_inventory\{[^}]*status="valid"\} 2$/m.test(
        await Deno.readTextFile(box.path("/var/lib/node_exporter/textfile_collector/ckptkit.prom")),
      )],
    ["watch_corruption", watch, () => Promise.resolve(false)],
    [
      "validate-loop",
      task,
      // (step-20 was cut short for the watcher)
      async () =>
        /^checkpoint_inventory\{[^}]*status="invalid"\} 1$/m.test(
          await Deno.readTextFile(box.path("/tmp/ckptkit.prom")),
        ),
    ],
  ];
  for (const [name, command, ready] of cases) {
    if (name === "watch_corruption") {
      // A checkpoint cut short (what the watcher's --fast scans see): it prints it, once.
      await Deno.truncate(`${root}/step-20/shard-00001-of-00002.bin`, 1000);
    }
    const server = await startBlockServer(box, name, command, logs);
    try {
      await until(`${name}: its first pass`, Date.now() + 3 * 60_000, async () => {
        if (server.exitCode !== null) throw new Fatal(`exited ${server.exitCode}: ${await tail(server.log)}`);
        if (name === "watch_corruption") {
          return (await Deno.readTextFile(`${server.log}.stdout`)).includes("step-20") || undefined;
        }
        return (await ready().catch(() => false)) || undefined;
      });
    } catch (error) {
      console.error(`--- ${name}:\n${await tail(server.log)}`);
      throw error;
    } finally {
      await stopServer(server);
    }
    assert.equal(server.exitCode, 0, `${name} after SIGTERM: ${await tail(server.log)}`);
  }
}

/** The walkthrough of "Monitoring", with `sleep 150` replaced by polling the alerts API. */
async function monitoringWalkthrough(box: Sandbox, commands: string[]): Promise<void> {
  const sleepAt = commands.indexOf("sleep 150");
  assert.ok(sleepAt > 0, "the walkthrough waits before asking for the alerts");
  // examples/prometheus.yml and its rules, with the example ports moved (nothing listens on the Pushgateway's).
  const config = `${box.dir}/prometheus/prometheus.yml`;
  await Deno.mkdir(`${box.dir}/prometheus`);
  await Deno.writeTextFile(config, box.rewrite(await Deno.readTextFile(`${REPO}/examples/prometheus.yml`)));
  await Deno.copyFile(`${REPO}/examples/alerts.yml`, `${box.dir}/prometheus/alerts.yml`);
  // (relative to the checkout, the working folder, so that no path rewrite applies to it)
  const before = commands.slice(0, sleepAt).map((c) =>
    c.replace("examples/prometheus.yml", "../prometheus/prometheus.yml")
  );
  const results = await box.run(before);
  try {
    assertCodes(results, [0, 0, 0, 0, 1, 0, 0, 0]);
    const root = box.path("/tmp/ckpts");
    const textfiles = await Array.fromAsync(Deno.readDir(box.path("/tmp/textfile")));
    assert.deepEqual(
      textfiles.map((e) => e.name).filter((n) => !/^ckptkit-.*tmp-ckpts-[0-9a-f]{10}\.prom$/.test(n)),
      [],
    );
    assert.equal(textfiles.length, 1);
    assert.equal((await box.backgroundPids()).length, 3);
    const prom = `http://127.0.0.1:${box.port(9090)}`;
    // Instead of `sleep 150`: poll until the alert the page promises fires.
    const isCorrupt = (a: Alert) =>
      a.labels.alertname === "CheckpointCorruptDetected" && a.state === "firing" && a.labels.checkpoint === "step-20";
    await until("CheckpointCorruptDetected for step-20", Date.now() + BACKSTOP, async () => {
      const gone = (await box.backgroundPids()).filter((pid) => !alive(pid));
      if (gone.length > 0) throw new Fatal(`background process ${gone.join(", ")} exited`);
      return (await activeAlerts(prom)).some(isCorrupt) || undefined;
    });
    const [curl] = await box.run(commands.slice(sleepAt + 1));
    assertCodes([curl], [0]);
    const alerts: Alert[] = JSON.parse(curl.stdout).data.alerts;
    const corrupt = alerts.find(isCorrupt);
    assert.ok(corrupt, curl.stdout);
    assert.equal(corrupt.labels.root, root);
    assert.ok(!alerts.some((a) => a.labels.alertname === "CheckpointNewCorruptionDetected"), curl.stdout);
    // And, as the page goes on: resume meanwhile picks step-10.
    const [resume] = await box.run(["ckptkit resume /tmp/ckpts"]);
    assert.equal(resume.stdout, `${root}/step-10\n`);
  } catch (error) {
    for (const log of await Array.fromAsync(Deno.readDir(`${box.dir}/.doc-commands`))) {
      if (log.name.endsWith(".log")) {
        console.error(`--- ${log.name}:\n${await tail(`${box.dir}/.doc-commands/${log.name}`)}`);
      }
    }
    throw error;
  } finally {
    await box.stopBackground();
  }
}

// --- the tests ------------------------------------------------------------------------------------------

const BLOCKS = await allShellBlocks();

Deno.test("every shell block of README.md and docs/ is claimed by exactly one entry, and every entry by a block", () => {
  const problems: string[] = [];
  for (const block of BLOCKS) {
    const claims = ENTRIES.filter((entry) => text(entry) === block.text);
    if (claims.length === 0) {
      problems.push(
        `${block.page}:${block.line}: no entry runs the block starting \`${firstLine(block.text)}\`: ` +
          "add it to tests/docs_commands_test.ts",
      );
    } else if (claims.length > 1) {
      problems.push(`${block.page}:${block.line}: claimed by ${claims.map((e) => e.title).join(", ")}`);
    }
  }
  for (const entry of ENTRIES) {
    if (!BLOCKS.some((block) => block.text === text(entry))) {
      problems.push(`stale entry "${entry.title}": no page shows its block (starting \`${entry.block[0]}\`) any more`);
    }
    const kinds = [entry.run, entry.elsewhere, entry.notRunnable].filter(Boolean).length;
    if (kinds !== 1) problems.push(`entry "${entry.title}" must be exactly one of run, elsewhere, notRunnable`);
  }
  assert.deepEqual(problems, []);
});

Deno.test("the shell-block reader: fences, languages, continuations and comments", () => {
  const page = [
    "# T",
    "```sh",
    "a --x \\",
    "  --y   # why",
    "# only a comment",
    "",
    "echo '# kept' \"#kept\" x#kept # gone",
    "```",
    "````bash",
    "```",
    "b",
    "````",
    "- item:",
    "  ```shell",
    "  c",
    "  ```",
    "```ts",
    "d",
    "```",
  ].join("\n");
  const blocks = shellBlocks("x.md", page);
  assert.deepEqual(blocks.map((b) => [b.line, b.text]), [
    [2, "a --x \\\n  --y   # why\n# only a comment\n\necho '# kept' \"#kept\" x#kept # gone\n"],
    [9, "```\nb\n"],
    [14, "c\n"],
  ]);
  assert.deepEqual(commandsOf(blocks[0].text), ["a --x \\\n  --y   # why", "echo '# kept' \"#kept\" x#kept # gone"]);
  assert.equal(stripComment("echo '# kept' \"#kept\" x#kept # gone"), "echo '# kept' \"#kept\" x#kept");
  assert.equal(firstLine(blocks[0].text), "a --x \\");
});

Deno.test("the sandbox moves the examples' paths and ports, and nothing else", async () => {
  await using box = await sandbox({ ports: [9090, 9091] });
  const d = box.dir;
  const p = box.port(9090);
  assert.equal(
    box.rewrite("ckptkit scan /mnt/ckpts/run --report /shared/r.json --textfile=/var/lib/node_exporter/x.prom"),
    `ckptkit scan ${d}/mnt/ckpts/run --report ${d}/shared/r.json --textfile=${d}/var/lib/node_exporter/x.prom`,
  );
  assert.equal(box.rewrite("(cd /tmp/ckpts && ls /srv)"), `(cd ${d}/tmp/ckpts && ls ${d}/srv)`);
  assert.equal(
    box.rewrite("curl -s http://127.0.0.1:9090/api/v1/alerts --pushgateway http://pushgateway:9091/metrics"),
    `curl -s http://127.0.0.1:${p}/api/v1/alerts --pushgateway http://127.0.0.1:${box.port(9091)}/metrics`,
  );
  for (const untouched of ["$PWD/cli.ts", "examples/prometheus.yml", "dist/ckptkit", "/tmpfoo", "/usr/bin/tmp"]) {
    assert.equal(box.rewrite(untouched), untouched);
  }
  // Each command's exit code and output apart; a background process recorded by PID and stopped by it.
  const results = await box.run(["echo one; false", "printf two", "sleep 300 &"]);
  assert.deepEqual(results.map((r) => [r.code, r.stdout]), [[1, "one\n"], [0, "two"], [0, ""]]);
  const [pid] = await box.backgroundPids();
  assert.ok(alive(pid));
  await box.stopBackground();
  assert.ok(!alive(pid));
  await assert.rejects(box.run(["exit 3"]), /bash stopped before the end of `exit 3`/);
});

const ON_PAGES = (entry: Entry) => BLOCKS.filter((block) => block.text === text(entry));

/** The heading a block sits under: the last `#` line before it outside code. */
async function headingOf(block: DocBlock): Promise<string> {
  const lines = (await Deno.readTextFile(`${REPO}/${block.page}`)).split("\n").slice(0, block.line - 1);
  let inFence = false;
  let heading = "";
  for (const line of lines) {
    if (/^\s*(```|~~~)/.test(line)) inFence = !inFence;
    else if (!inFence && /^#{1,6} /.test(line)) heading = line;
  }
  return heading;
}

for (const entry of ENTRIES) {
  const missing = (entry.tools ?? []).filter((tool) => !onPath(tool));
  if (entry.run) {
    Deno.test({
      name: `docs block runs as written: ${entry.title}`,
      // Skipped locally when a tool is missing; on CI it runs and fails naming the tool.
      ignore: missing.length > 0 && !ON_CI,
      async fn() {
        assert.deepEqual(missing, [], `not on PATH: ${missing.join(", ")} (Debian: apt-get install ...)`);
        await using box = await sandbox({ ports: entry.ports });
        await entry.run!(box, commandsOf(text(entry)));
      },
    });
  } else if (entry.elsewhere) {
    Deno.test(`docs block run by tests/${entry.elsewhere}: ${entry.title}`, async () => {
      const source = await Deno.readTextFile(`${REPO}/tests/${entry.elsewhere}`);
      const blocks = ON_PAGES(entry);
      assert.ok(blocks.length > 0, "the block is on a page");
      for (const block of blocks) {
        // The file reads the block's page, by the block's heading or its first command.
        assert.ok(source.includes(block.page), `tests/${entry.elsewhere} does not read ${block.page}`);
        const heading = await headingOf(block);
        assert.ok(
          (heading && source.includes(heading)) || source.includes(firstLine(block.text)),
          `tests/${entry.elsewhere} finds the block neither by its heading "${heading}" nor by its first command`,
        );
      }
      assert.match(source, /Deno\.test\(/);
    });
  } else {
    Deno.test(`docs block not runnable here (${entry.notRunnable!.reason}): ${entry.title}`, async () => {
      await entry.notRunnable!.check(commandsOf(text(entry)));
    });
  }
}
