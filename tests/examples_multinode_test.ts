/**
 * Tests of the multi-node examples, run on this machine without a cluster:
 * - examples/slurm/: only what a real Slurm cannot stage. The scripts run
 *   under a real Slurm 22.05 in tests/slurm_real_test.ts (the docs'
 *   commands, submit_validation.sh, a failing and a cancelled shard,
 *   train_multirank.sbatch with srun and a requeue). Here, as bash with the
 *   SLURM_* variables set by hand (stand-ins, named so): the usage errors of
 *   a script run outside a job, and a merge of shards that saw different
 *   checkpoints (a commit landing between two tasks of one array, an order
 *   the scheduler does not let a test choose).
 * - examples/k8s/: the manifests' structure, then their pods' shell scripts
 *   run by tests/_fake_kubectl.ts (a pretend cluster that runs each pod's
 *   command with its volumes mapped to folders here), driven by
 *   run-sharded-validation.sh or `kubectl create job --from=cronjob/…`.
 *
 * Every `ckptkit` the scripts run is a wrapper around this checkout's cli.ts
 * under the binary's permission flags, on roots written by the library in
 * temporary folders. Every child runs in its own process group, killed when
 * its time is up.
 */

import assert from "node:assert/strict";
import { parseAllDocuments } from "yaml";
import { flipByte, names, REPO, runCli, tempDir, writeStep } from "./_helpers.ts";
import { sectionBlocks } from "./_docs.ts";
import { installCkptkit, type Run, run } from "./_slurm.ts";
import { onPath } from "./_servers.ts";

const SLURM = `${REPO}/examples/slurm`;
const K8S = `${REPO}/examples/k8s`;
const ARRAY_SBATCH = `${SLURM}/validate_array.sbatch`;
const MERGE_SBATCH = `${SLURM}/validate_merge.sbatch`;
const SUBMIT_SH = `${SLURM}/submit_validation.sh`;
const TRAIN_SBATCH = `${SLURM}/train_multirank.sbatch`;
const RUN_SHARDED_SH = `${K8S}/run-sharded-validation.sh`;
const ON_CI = Boolean(Deno.env.get("CI"));

// --- helpers ---------------------------------------------------------------------------------------

const show = (r: Run) => `exit ${r.code}\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`;

/** A root of three checkpoints of four files each (twelve files for the shards to share). */
async function makeRoot(root: string): Promise<void> {
  for (const step of [10, 20, 30]) await writeStep(root, step, 4);
}

/** The single-node verdict to compare a merge with: `ckptkit scan ROOT`. */
function singleNodeScan(root: string): Promise<Run> {
  return runCli(["scan", root, "--log-level", "warn"]);
}

/**
 * A scan's text with its timings blanked: the same checkpoints, problems,
 * latest and summary, line for line. JSON log lines are left out: `kubectl
 * logs` prints a container's stderr with its stdout.
 */
function withoutTimings(text: string): string {
  return text.split("\n").filter((line) => !line.startsWith("{")).join("\n").replace(/\b\d+(\.\d+)? s\b/g, "<t> s");
}

/** Asserts a merged report prints what a single-node scan of the same root prints, exit code included. */
function assertSameAsSingleNode(merged: Run, single: Run, context: string): void {
  assert.equal(merged.code, single.code, `${context}: exit code\nmerged: ${show(merged)}\nsingle: ${show(single)}`);
  assert.match(single.stdout, /^\d+ checkpoints?: /m, show(single));
  assert.equal(withoutTimings(merged.stdout), withoutTimings(single.stdout), `${context}: output`);
}

// --- Slurm -----------------------------------------------------------------------------------------

/** Environment of the Slurm scripts: the wrapper as CKPTKIT, the root, the submit folder. */
function slurmEnv(tmp: string, ckptkit: string, root: string, extra: Record<string, string> = {}) {
  return { CKPTKIT: ckptkit, CKPTKIT_ROOT: root, SLURM_SUBMIT_DIR: tmp, CKPTKIT_LOG_LEVEL: "warn", ...extra };
}

/** Runs tasks of a job array of `count` tasks at once, as Slurm would start them. */
function runArrayTasks(
  env: Record<string, string>,
  job: number,
  count: number,
  tasks: number[] = [...Array(count).keys()],
): Promise<Run[]> {
  return Promise.all(tasks.map((task) =>
    run("bash", [ARRAY_SBATCH], {
      cwd: env.SLURM_SUBMIT_DIR,
      env: {
        ...env,
        SLURM_JOB_ID: String(job + 1 + task),
        SLURM_ARRAY_JOB_ID: String(job),
        SLURM_ARRAY_TASK_ID: String(task),
        SLURM_ARRAY_TASK_COUNT: String(count),
      },
    })
  ));
}

function runMergeJob(env: Record<string, string>, job: number): Promise<Run> {
  return run("bash", [MERGE_SBATCH, String(job)], {
    cwd: env.SLURM_SUBMIT_DIR,
    env: { ...env, SLURM_JOB_ID: String(job + 100) },
  });
}

Deno.test({
  name: "shellcheck: the Slurm scripts, run-sharded-validation.sh and the k8s pods' sh scripts are clean",
  ignore: !onPath("shellcheck") && !ON_CI,
  async fn() {
    await using tmp = await tempDir();
    const scripts = (await names(SLURM)).map((name) => `${SLURM}/${name}`);
    assert.deepEqual((await names(SLURM)).sort(), [
      "submit_validation.sh",
      "train_multirank.sbatch",
      "validate_array.sbatch",
      "validate_merge.sbatch",
    ]);
    const bash = await run("shellcheck", ["--shell=bash", "--severity=style", ...scripts, RUN_SHARDED_SH]);
    assert.equal(bash.code, 0, show(bash));

    // The pods run their args under /bin/sh (dash in a Debian image): POSIX sh only.
    const podScripts: string[] = [];
    for (const file of ["validate-indexed-job.yaml", "validate-sharded-cronjob.yaml"]) {
      for (const [i, container] of (await podContainers(file)).entries()) {
        assert.deepEqual(container.command, ["/bin/sh", "-c"]);
        const path = `${tmp.path}/${file}-${i}.sh`;
        await Deno.writeTextFile(path, `#!/bin/sh\n${container.args[0]}`);
        podScripts.push(path);
      }
    }
    assert.equal(podScripts.length, 3);
    const sh = await run("shellcheck", ["--shell=sh", "--severity=style", ...podScripts]);
    assert.equal(sh.code, 0, show(sh));
  },
});

Deno.test("slurm scripts (stand-in: outside a job on purpose): executable, bash syntax, and usage errors exit 2 before any work", async () => {
  for (const name of await names(SLURM)) {
    const path = `${SLURM}/${name}`;
    assert.ok(((await Deno.stat(path)).mode ?? 0) & 0o111, `${name} is executable`);
    const syntax = await run("bash", ["-n", path]);
    assert.equal(syntax.code, 0, show(syntax));
  }
  await using tmp = await tempDir();
  const ckptkit = await installCkptkit(tmp.path);
  const env = slurmEnv(tmp.path, ckptkit, `${tmp.path}/root`);
  const task = (vars: Record<string, string>) => run("bash", [ARRAY_SBATCH], { cwd: tmp.path, env: vars });
  const array = { SLURM_ARRAY_JOB_ID: "7", SLURM_ARRAY_TASK_ID: "0", SLURM_ARRAY_TASK_COUNT: "3" };
  for (
    const [vars, message] of [
      [{ ...env, CKPTKIT_ROOT: "", ...array }, /set CKPTKIT_ROOT/],
      [env, /not a task of a job array/],
      [{ ...env, ...array, SLURM_ARRAY_TASK_ID: "3" }, /array task 3 is not one of the shards 0\.\.2.*--array=0-2/],
      [{ ...env, ...array, SLURM_ARRAY_TASK_ID: "1", SLURM_ARRAY_TASK_COUNT: "" }, /set CKPTKIT_SHARDS/],
      [{ ...env, ...array, CKPTKIT_SHARDS: "4" }, /CKPTKIT_SHARDS=4, but the array has 3 tasks/],
      [{ ...env, ...array, CKPTKIT: "/nonexistent/ckptkit" }, /cannot run ckptkit: '\/nonexistent\/ckptkit' not found/],
    ] as const
  ) {
    const result = await task(vars);
    assert.equal(result.code, 2, show(result));
    assert.match(result.stderr, message);
  }
  const noId = await run("bash", [MERGE_SBATCH], { cwd: tmp.path, env });
  assert.equal(noId.code, 2);
  assert.match(noId.stderr, /usage: sbatch --dependency=afterany:ARRAY_JOB_ID/);
  const noReports = await runMergeJob(env, 99);
  assert.equal(noReports.code, 2);
  assert.match(noReports.stderr, /incomplete: no shard report in .*\/ckptkit-reports\/99/);
  const help = await run("bash", [SUBMIT_SH, "--help"]);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /^Usage: examples\/slurm\/submit_validation\.sh \[N\]$/m);
  const noRoot = await run("bash", [SUBMIT_SH, "3"]);
  assert.equal(noRoot.code, 2);
  assert.match(noRoot.stderr, /set CKPTKIT_ROOT/);
  const notAJob = await run("bash", [TRAIN_SBATCH], { env: { CKPTKIT: ckptkit, CKPTKIT_ROOT: `${tmp.path}/r` } });
  assert.equal(notAJob.code, 2);
  assert.match(notAJob.stderr, /not in a Slurm job: submit with sbatch/);
});

// Stand-in: the real test of a missing report is slurm_real_test.ts's cancelled shard (with CKPTKIT_SHARDS); here
// the merge without CKPTKIT_SHARDS, and shards that planned over different checkpoints, which needs a commit between
// two tasks of one array.
Deno.test("slurm (stand-in array tasks): the merge refuses a missing shard report and shards that saw different checkpoints (exit 2)", async () => {
  await using tmp = await tempDir();
  const root = `${tmp.path}/root`;
  await makeRoot(root);
  const ckptkit = await installCkptkit(tmp.path);
  const env = slurmEnv(tmp.path, ckptkit, root);

  // Task 2 failed before writing its report.
  const tasks = await runArrayTasks(env, 3000, 3, [0, 1]);
  assert.deepEqual(tasks.map((t) => t.code), [0, 0], tasks.map(show).join("\n"));
  const known = await runMergeJob({ ...env, CKPTKIT_SHARDS: "3" }, 3000);
  assert.equal(known.code, 2, show(known));
  assert.match(known.stderr, /incomplete: no report from shard\(s\) 2 of 3 in .*\/3000/);
  // Without CKPTKIT_SHARDS the reports themselves say there were three.
  const globbed = await runMergeJob(env, 3000);
  assert.equal(globbed.code, 2, show(globbed));
  assert.match(globbed.stderr, /incomplete set: missing shard 2 of 3.*\[report_mismatch\]/);

  // A checkpoint committed between the shards: they planned over different checkpoints.
  await runArrayTasks(env, 4000, 3, [0, 1]);
  await writeStep(root, 40, 4);
  const [late] = await runArrayTasks(env, 4000, 3, [2]);
  assert.equal(late.code, 0, show(late));
  const mismatched = await runMergeJob(env, 4000);
  assert.equal(mismatched.code, 2, show(mismatched));
  assert.match(mismatched.stderr, /plan mismatch: shards listed different checkpoints.*step-40.*\[report_mismatch\]/);
  assert.equal(mismatched.stdout, "");
});

// --- Kubernetes ------------------------------------------------------------------------------------

// deno-lint-ignore no-explicit-any
type Manifest = any;

async function loadManifests(file: string): Promise<Manifest[]> {
  const docs = parseAllDocuments(await Deno.readTextFile(`${K8S}/${file}`));
  for (const doc of docs) assert.deepEqual(doc.errors, [], file);
  return docs.map((doc) => doc.toJS());
}

/** The pod specs of a file's Jobs (a CronJob's job template included). */
async function podSpecs(file: string): Promise<Manifest[]> {
  return (await loadManifests(file)).flatMap((m) =>
    m.kind === "Job" ? [m.spec.template.spec] : m.kind === "CronJob" ? [m.spec.jobTemplate.spec.template.spec] : []
  );
}

async function podContainers(file: string): Promise<Manifest[]> {
  return (await podSpecs(file)).flatMap((pod) => pod.containers);
}

const envValue = (container: Manifest, name: string) =>
  container.env.find((e: Manifest) => e.name === name)?.value as string | undefined;

/** The claim mounted at `mountPath` in a pod, or undefined. */
function claimAt(pod: Manifest, mountPath: string): string | undefined {
  const mount = pod.containers[0].volumeMounts.find((m: Manifest) => m.mountPath === mountPath);
  return pod.volumes.find((v: Manifest) => v.name === mount?.name)?.persistentVolumeClaim?.claimName;
}

/** Asserts a shard pod template: scans its /ckpts mount into reports on its /reports mount, N agreeing. */
function assertShardJob(spec: Manifest, context: string): { shards: number; script: string } {
  assert.equal(spec.completionMode, "Indexed", context);
  assert.equal(spec.parallelism, spec.completions, `${context}: parallelism = completions`);
  const pod = spec.template.spec;
  assert.equal(pod.restartPolicy, "Never");
  const [container] = pod.containers;
  const shards = Number(envValue(container, "SHARDS"));
  assert.equal(shards, spec.completions, `${context}: SHARDS = completions`);
  const script = container.args[0];
  assert.match(script, /ckptkit scan \/ckpts --shard "\$JOB_COMPLETION_INDEX\/\$SHARDS" --report "\$report"/);
  assert.match(script, /report="\$dir\/shard-\$JOB_COMPLETION_INDEX\.json"/);
  assert.match(script, /dir="\/reports\/\$JOB_NAME"/);
  assert.equal(claimAt(pod, "/ckpts"), "training-ckpts", `${context}: the checkpoints at /ckpts`);
  assert.equal(claimAt(pod, "/reports"), "ckptkit-reports", `${context}: the reports at /reports`);
  assert.deepEqual(container.env.find((e: Manifest) => e.name === "JOB_NAME").valueFrom, {
    fieldRef: { fieldPath: "metadata.labels['batch.kubernetes.io/job-name']" },
  });
  // Exit 2 (bad flag or config) fails the Job at once; a shard's exit 1 never reaches Kubernetes.
  const rule = spec.podFailurePolicy.rules[0];
  assert.equal(rule.action, "FailJob");
  assert.equal(rule.onExitCodes.containerName, container.name);
  assert.ok(rule.onExitCodes.values.includes(2));
  assert.ok(!spec.podFailurePolicy.rules.some((r: Manifest) => r.action === "Ignore"), "Ignore would rerun the pod");
  return { shards, script };
}

Deno.test("examples/k8s: the Indexed Job, its merge Job and the sharded CronJob agree on N, volumes and paths", async () => {
  const [claim, shards, merge] = await loadManifests("validate-indexed-job.yaml");
  assert.equal(claim.kind, "PersistentVolumeClaim");
  assert.equal(claim.metadata.name, "ckptkit-reports");
  assert.deepEqual(claim.spec.accessModes, ["ReadWriteMany"]);

  assert.equal(shards.kind, "Job");
  assert.equal(shards.metadata.name, "ckptkit-validate-shards");
  const { shards: n, script } = assertShardJob(shards.spec, "indexed job");
  assert.match(script, /if \[ "\$code" -eq 1 \]; then exit 0; fi/, "problems found is a verdict, not a failure");

  assert.equal(merge.kind, "Job");
  assert.equal(merge.metadata.name, "ckptkit-validate-merge");
  assert.equal(merge.spec.suspend, true, "created suspended: resumed once the shards are Complete");
  assert.equal(merge.spec.backoffLimit, 0, "a verdict is not retried");
  assert.equal(merge.spec.completionMode, undefined);
  const mergePod = merge.spec.template.spec;
  const [merger] = mergePod.containers;
  assert.equal(Number(envValue(merger, "SHARDS")), n);
  // The merge reads the folder the shards wrote: /reports/<the shard Job's name>, on the same claim,
  // and records the results in the root's state, mounted read-write where the shards read it.
  assert.equal(claimAt(mergePod, "/reports"), "ckptkit-reports");
  assert.equal(claimAt(mergePod, "/ckpts"), "training-ckpts");
  assert.equal(mergePod.containers[0].volumeMounts.find((m: Manifest) => m.mountPath === "/ckpts").readOnly, undefined);
  assert.equal(
    shards.spec.template.spec.containers[0].volumeMounts.find((m: Manifest) => m.mountPath === "/ckpts").readOnly,
    true,
    "shards only read",
  );
  assert.match(merger.args[0], new RegExp(`^dir=/reports/${shards.metadata.name}$`, "m"));
  assert.match(merger.args[0], /set -- "\$@" "\$dir\/shard-\$i\.json"/);
  assert.match(merger.args[0], /exec ckptkit report merge "\$@"/);

  const [cronClaim, cron] = await loadManifests("validate-sharded-cronjob.yaml");
  assert.deepEqual(cronClaim, claim, "the same reports claim in both files");
  assert.equal(cron.kind, "CronJob");
  assert.equal(cron.spec.concurrencyPolicy, "Forbid");
  const { script: cronScript } = assertShardJob(cron.spec.jobTemplate.spec, "cronjob");
  assert.deepEqual(cron.spec.jobTemplate.spec.podFailurePolicy.rules[0].onExitCodes.values, [2]);
  assert.match(cronScript, /if \[ "\$JOB_COMPLETION_INDEX" -ne 0 \]; then exit 0; fi/);
  assert.match(
    cronScript,
    /ckptkit report merge --pushgateway http:\/\/pushgateway:9091\/metrics \\\n\s+--instance training-ckpts-full "\$@"/,
  );

  for (const file of ["validate-indexed-job.yaml", "validate-sharded-cronjob.yaml"]) {
    for (const container of await podContainers(file)) {
      assert.equal(container.image, "registry.example.com/ckptkit:0.1.0");
      assert.equal(container.securityContext.readOnlyRootFilesystem, true);
    }
  }
});

/** The fake kubectl as a command line for KUBECTL (split on whitespace). */
const FAKE_KUBECTL = [
  Deno.execPath(),
  "run",
  "--quiet",
  "--config",
  `${REPO}/deno.json`,
  "--allow-all",
  `${REPO}/tests/_fake_kubectl.ts`,
].join(" ");

/** A pretend cluster: its state folder, whose pv/training-ckpts is the checkpoint root. */
async function fakeCluster(tmp: string) {
  const dir = `${tmp}/cluster`;
  const root = `${dir}/pv/training-ckpts`;
  await makeRoot(root);
  const ckptkit = await installCkptkit(tmp);
  const env = {
    FAKE_K8S_DIR: dir,
    KUBECTL: FAKE_KUBECTL,
    POLL_INTERVAL: "1",
    // ckptkit on the pods' PATH, as in the image.
    PATH: `${ckptkit.replace(/\/ckptkit$/, "")}:${Deno.env.get("PATH")}`,
  };
  const kubectl = (...args: string[]) => run(Deno.execPath(), [...FAKE_KUBECTL.split(" ").slice(1), ...args], { env });
  return { dir, root, env, kubectl };
}

Deno.test({
  name: "examples/k8s: run-sharded-validation.sh runs the Indexed Job, then the merge Job, and exits with the verdict",
  ignore: /\s/.test(Deno.execPath() + REPO),
  async fn() {
    await using tmp = await tempDir();
    const cluster = await fakeCluster(tmp.path);
    const help = await run("bash", [RUN_SHARDED_SH, "--help"]);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /^Usage: examples\/k8s\/run-sharded-validation\.sh \[MANIFEST\]$/m);

    const valid = await run("bash", [RUN_SHARDED_SH], { env: cluster.env });
    assertSameAsSingleNode(valid, await singleNodeScan(cluster.root), "all valid");
    assert.match(valid.stderr, /job\/ckptkit-validate-merge Complete, exit 0/);
    const calls = (await Deno.readTextFile(`${cluster.dir}/calls`)).trimEnd().split("\n");
    assert.deepEqual(calls.filter((c) => !c.startsWith("get ")), [
      "delete job ckptkit-validate-shards ckptkit-validate-merge --ignore-not-found",
      `apply -f ${K8S}/validate-indexed-job.yaml`,
      `patch job ckptkit-validate-merge --type=merge -p {"spec":{"suspend":false}}`,
      "logs job/ckptkit-validate-merge",
    ]);
    const reports = `${cluster.dir}/pv/ckptkit-reports/ckptkit-validate-shards`;
    assert.deepEqual(await names(reports), ["shard-0.json", "shard-1.json", "shard-2.json", "shard-3.json"]);

    // A flipped byte: the shard that finds it exits 0 all the same (the Job completes),
    // and the merge says 1; the next run replaces the Jobs and every report.
    await flipByte(`${cluster.root}/step-10/shard-0.bin`, 9);
    const corrupt = await run("bash", [RUN_SHARDED_SH], { env: cluster.env });
    assertSameAsSingleNode(corrupt, await singleNodeScan(cluster.root), "one flipped byte");
    assert.equal(corrupt.code, 1);
    assert.match(corrupt.stdout, /hash_mismatch/);
    assert.match(corrupt.stderr, /job\/ckptkit-validate-merge Failed, exit 1/);
    const state = JSON.parse(await Deno.readTextFile(`${cluster.dir}/state.json`));
    assert.deepEqual(state.jobs["ckptkit-validate-shards"].conditions, ["Complete"]);
    assert.deepEqual(state.jobs["ckptkit-validate-shards"].pods.map((p: { code: number }) => p.code), [0, 0, 0, 0]);

    // A bad flag in the shards (exit 2) fails their Job: nothing is merged, exit 4.
    const manifest = `${tmp.path}/bad.yaml`;
    await Deno.writeTextFile(
      manifest,
      (await Deno.readTextFile(`${K8S}/validate-indexed-job.yaml`)).replace("--report", "--no-such-flag --report"),
    );
    const failed = await run("bash", [RUN_SHARDED_SH, manifest], { env: cluster.env });
    assert.equal(failed.code, 4, show(failed));
    assert.match(failed.stderr, /job\/ckptkit-validate-shards: Failed, nothing merged/);
  },
});

/** What the merge printed on pod 0's stdout: from its "scanning <root> (<depth>)" line, after the shard's lines. */
function mergeOutput(output: string): string {
  const start = /^scanning \S+ \(\w+\)$/m.exec(output);
  assert.ok(start, output);
  return output.slice(start.index);
}

/** A stand-in Pushgateway on 127.0.0.1 that records every push; closed when disposed. */
function fakePushgateway() {
  const pushes: { method: string; path: string; body: string }[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (request) => {
    pushes.push({ method: request.method, path: new URL(request.url).pathname, body: await request.text() });
    return new Response("", { status: 200 });
  });
  return {
    url: `http://127.0.0.1:${server.addr.port}`,
    pushes,
    [Symbol.asyncDispose]: () => server.shutdown(),
  };
}

Deno.test({
  name: "examples/k8s: the sharded CronJob's pod 0 merges the reports of its own run and pushes the metrics",
  ignore: /\s/.test(Deno.execPath() + REPO),
  async fn() {
    await using tmp = await tempDir();
    await using pushgateway = fakePushgateway();
    const cluster = await fakeCluster(tmp.path);
    const reports = `${cluster.dir}/pv/ckptkit-reports`;
    // A folder of an old run (pruned) and a recent one of another run (kept, and never merged).
    await Deno.mkdir(`${reports}/ckptkit-validate-sharded-100/`, { recursive: true });
    const old = new Date(Date.now() - 8 * 86_400_000);
    await Deno.utime(`${reports}/ckptkit-validate-sharded-100`, old, old);
    await Deno.mkdir(`${reports}/ckptkit-validate-sharded-200`);
    await Deno.writeTextFile(`${reports}/ckptkit-validate-sharded-200/shard-0.json`, "{not json");

    // The manifest as it is, but for the Pushgateway's address.
    const manifest = `${tmp.path}/validate-sharded-cronjob.yaml`;
    const text = await Deno.readTextFile(`${K8S}/validate-sharded-cronjob.yaml`);
    assert.ok(text.includes("http://pushgateway:9091/metrics"));
    await Deno.writeTextFile(manifest, text.replaceAll("http://pushgateway:9091", pushgateway.url));
    const apply = await cluster.kubectl("apply", "-f", manifest);
    assert.equal(apply.code, 0, show(apply));
    const runJob = async (name: string) => {
      const created = await cluster.kubectl("create", "job", name, "--from=cronjob/ckptkit-validate-sharded");
      assert.equal(created.code, 0, show(created));
      const state = JSON.parse(await Deno.readTextFile(`${cluster.dir}/state.json`));
      return state.jobs[name] as {
        conditions: string[];
        pods: { index: number; code: number; stdout: string; stderr: string }[];
      };
    };
    const instance = `/instance@base64/${btoa("training-ckpts-full").replace(/=+$/, "")}`;

    const valid = await runJob("ckptkit-validate-sharded-300");
    assert.deepEqual(valid.conditions, ["Complete"], JSON.stringify(valid.pods, null, 1));
    assert.deepEqual(valid.pods.map((p) => [p.index, p.code]), [[0, 0], [1, 0], [2, 0], [3, 0]]);
    assertSameAsSingleNode(
      { code: 0, stdout: mergeOutput(valid.pods[0].stdout), stderr: "" },
      await singleNodeScan(cluster.root),
      "pod 0's merge",
    );
    assert.deepEqual(await names(reports), ["ckptkit-validate-sharded-200", "ckptkit-validate-sharded-300"]);
    assert.equal(pushgateway.pushes.length, 1, "one push, by pod 0");
    assert.equal(pushgateway.pushes[0].method, "PUT");
    const { path } = pushgateway.pushes[0];
    assert.ok(path.startsWith("/metrics/job/ckptkit/") && path.endsWith(instance), path);
    assert.match(pushgateway.pushes[0].body, /^checkpoint_inventory\{[^}]*status="valid"\} 3$/m);

    // A flipped byte: pod 0's merge finds it (exit 1), pushes the metrics and succeeds: the alerts page.
    await flipByte(`${cluster.root}/step-30/shard-2.bin`, 4000);
    const corrupt = await runJob("ckptkit-validate-sharded-400");
    assert.deepEqual(corrupt.conditions, ["Complete"], JSON.stringify(corrupt.pods, null, 1));
    assert.deepEqual(corrupt.pods.map((p) => [p.index, p.code]), [[0, 0], [1, 0], [2, 0], [3, 0]], "no retry");
    assertSameAsSingleNode(
      { code: 1, stdout: mergeOutput(corrupt.pods[0].stdout), stderr: "" },
      await singleNodeScan(cluster.root),
      "pod 0's merge, one flipped byte",
    );
    assert.match(corrupt.pods[0].stdout, /hash_mismatch/);
    assert.equal(pushgateway.pushes.length, 2);
    assert.match(pushgateway.pushes[1].body, /^checkpoint_inventory\{[^}]*status="invalid"\} 1$/m);
    assert.match(
      pushgateway.pushes[1].body,
      /^checkpoint_validation_failures_total\{[^}]*reason="hash_mismatch"\} [1-9]/m,
    );
  },
});

// --- docs/multi-node.md ---------------------------------------------------------------------------

/** The sh code blocks of docs/multi-node.md ("# Multi-node use", its Slurm and Kubernetes sections included). */
function multiNodeBlocks(): Promise<string[]> {
  return sectionBlocks("docs/multi-node.md", "# Multi-node use", "sh");
}

Deno.test("docs/multi-node.md: the scan and k8s commands work as written (the Slurm ones: slurm_real_test.ts)", async () => {
  await using tmp = await tempDir();
  const root = `${tmp.path}/ckpts`;
  await makeRoot(root);
  const ckptkit = await installCkptkit(tmp.path);
  const moved = (text: string) =>
    text
      .replaceAll("/mnt/ckpts/run", root)
      .replaceAll("/shared/reports/run", `${tmp.path}/reports`)
      .replaceAll("/var/lib/node_exporter/textfile_collector", tmp.path)
      .replace(/^ckptkit /gm, `${ckptkit} `);
  const env = { CKPTKIT_LOG_LEVEL: "warn" };
  const sh = (script: string) => run("bash", ["-euo", "pipefail", "-c", script], { env });
  // The Slurm section's two blocks run under a real Slurm: tests/slurm_real_test.ts.
  const [scan, , , k8s] = await multiNodeBlocks();

  // Shard 0 as written, the other three "on other nodes", then the merge.
  await Deno.mkdir(`${tmp.path}/reports`);
  const [shardLine, mergeLine] = moved(scan).trimEnd().split("\n");
  assert.match(shardLine, / --shard 0\/4 --report /);
  for (const i of [0, 1, 2, 3]) {
    const shard = await sh(
      shardLine.replace("--shard 0/4", `--shard ${i}/4`).replace("shard-0.json", `shard-${i}.json`),
    );
    assert.equal(shard.code, 0, show(shard));
  }
  const merged = await sh(mergeLine);
  assertSameAsSingleNode(merged, await singleNodeScan(root), "docs/multi-node.md merge");
  assert.match(await Deno.readTextFile(`${tmp.path}/ckptkit.prom`), /^checkpoint_inventory\{[^}]*status="valid"\} 3$/m);

  // Kubernetes: the files and script the block names exist.
  for (const path of k8s.matchAll(/examples\/k8s\/\S+/g)) await Deno.stat(`${REPO}/${path[0]}`);
});
