/**
 * Tests of the multi-node examples, run for real on this machine without a
 * cluster:
 * - examples/slurm/: the validation job array and its merge job, run as bash
 *   with the SLURM_* variables a real array sets (three tasks at once, then
 *   the merge); submit_validation.sh against a stand-in `sbatch` that runs
 *   each job as it is submitted; train_multirank.sbatch against a stand-in
 *   `srun` that starts SLURM_NTASKS ranks at once.
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
import { ckptkitFlags, flipByte, names, REPO, runCli, tempDir, writeStep } from "./_helpers.ts";

const SLURM = `${REPO}/examples/slurm`;
const K8S = `${REPO}/examples/k8s`;
const ARRAY_SBATCH = `${SLURM}/validate_array.sbatch`;
const MERGE_SBATCH = `${SLURM}/validate_merge.sbatch`;
const SUBMIT_SH = `${SLURM}/submit_validation.sh`;
const TRAIN_SBATCH = `${SLURM}/train_multirank.sbatch`;
const RUN_SHARDED_SH = `${K8S}/run-sharded-validation.sh`;
const ON_CI = Boolean(Deno.env.get("CI"));

// --- helpers ---------------------------------------------------------------------------------------

/** Whether an executable named `tool` is on PATH. */
function onPath(tool: string): boolean {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    try {
      const info = Deno.statSync(`${dir || "."}/${tool}`);
      if (info.isFile && ((info.mode ?? 0o111) & 0o111) !== 0) return true;
    } catch {
      // not in this folder
    }
  }
  return false;
}

function shellQuote(arg: string): string {
  return /^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replaceAll("'", `'"'"'`)}'`;
}

/** Writes an executable file. */
async function writeExecutable(path: string, text: string): Promise<string> {
  await Deno.mkdir(path.replace(/\/[^/]+$/, ""), { recursive: true });
  await Deno.writeTextFile(path, text);
  await Deno.chmod(path, 0o755);
  return path;
}

/**
 * Puts `ckptkit` into `<dir>/bin`: this checkout's cli.ts under the binary's
 * permission flags, as the compiled binary would be on a node. Returns its path.
 */
function installCkptkit(dir: string): Promise<string> {
  const argv = [Deno.execPath(), "run", "--quiet", ...ckptkitFlags(), `${REPO}/cli.ts`];
  return writeExecutable(`${dir}/bin/ckptkit`, `#!/bin/sh\nexec ${argv.map(shellQuote).join(" ")} "$@"\n`);
}

/** This process's environment without CKPTKIT_* (which would change what ckptkit does), plus `extra`. */
function childEnv(extra: Record<string, string> = {}): Record<string, string> {
  const env = Object.fromEntries(
    Object.entries(Deno.env.toObject()).filter(([name]) => !name.startsWith("CKPTKIT") && !name.startsWith("SLURM_")),
  );
  return { ...env, NO_COLOR: "1", ...extra };
}

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a program to the end in its own process group; the group is killed after `timeoutMs`. */
async function run(
  program: string,
  args: string[],
  options: { env?: Record<string, string>; cwd?: string; timeoutMs?: number } = {},
): Promise<Run> {
  const child = new Deno.Command(program, {
    args,
    cwd: options.cwd ?? REPO,
    env: childEnv(options.env),
    clearEnv: true,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    detached: true,
  }).spawn();
  const killGroup = () => {
    try {
      Deno.kill(-child.pid, "SIGKILL");
    } catch {
      // already gone
    }
  };
  const timer = setTimeout(killGroup, options.timeoutMs ?? 120_000);
  try {
    const out = await child.output();
    const text = new TextDecoder();
    return { code: out.code, stdout: text.decode(out.stdout), stderr: text.decode(out.stderr) };
  } finally {
    clearTimeout(timer);
    killGroup();
  }
}

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

Deno.test("slurm scripts: executable, bash syntax, and usage errors exit 2 before any work", async () => {
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

Deno.test("slurm: three array tasks at once, then the merge job, give the single-node verdict; a flipped byte gives 1", async () => {
  await using tmp = await tempDir();
  const root = `${tmp.path}/root`;
  await makeRoot(root);
  const ckptkit = await installCkptkit(tmp.path);
  const textfile = `${tmp.path}/node_exporter/ckptkit.prom`;
  await Deno.mkdir(`${tmp.path}/node_exporter`);
  const env = slurmEnv(tmp.path, ckptkit, root, { CKPTKIT_TEXTFILE: textfile });

  const tasks = await runArrayTasks(env, 1000, 3);
  for (const [i, task] of tasks.entries()) {
    assert.equal(task.code, 0, `task ${i}: ${show(task)}`);
    assert.match(task.stdout, new RegExp(`shard ${i}/3 exit=0 no problems in this shard's files`));
  }
  assert.deepEqual(await names(`${tmp.path}/ckptkit-reports/1000`), ["shard-0.json", "shard-1.json", "shard-2.json"]);
  // Who last vouched for each checkpoint in the root's state: the commit, until a scan or a merge.
  const knownGoodBy = async () =>
    Object.entries(JSON.parse(await Deno.readTextFile(`${root}/.ckptkit/state.json`)).known_good)
      .map(([name, record]) => `${name} ${(record as { by: string }).by}`).sort();
  assert.deepEqual(
    await knownGoodBy(),
    ["step-10 commit", "step-20 commit", "step-30 commit"],
    "shards record nothing",
  );
  const merged = await runMergeJob(env, 1000);
  assert.equal(merged.code, 0, show(merged));
  assert.match(await Deno.readTextFile(textfile), /^checkpoint_inventory\{[^}]*status="valid"\} 3$/m);
  // The merge recorded the results in the root's state, as a single-node scan does.
  assert.deepEqual(await knownGoodBy(), ["step-10 scan", "step-20 scan", "step-30 scan"]);
  const knownGood = await runCli(["resume", root, "--policy", "last-known-good", "--log-level", "warn"]);
  assert.equal(knownGood.stdout, `${root}/step-30\n`, show(knownGood));
  assertSameAsSingleNode(merged, await singleNodeScan(root), "all valid");

  // One flipped byte: the shard holding that file finds it (exit 1, FAILED in sacct),
  // the others do not, and only the merge knows the whole verdict.
  await flipByte(`${root}/step-20/shard-1.bin`, 100);
  const again = await runArrayTasks(env, 2000, 3);
  assert.deepEqual(again.map((t) => t.code).sort(), [0, 0, 1], again.map(show).join("\n"));
  const failing = again.find((t) => t.code === 1)!;
  assert.match(failing.stdout, /exit=1 problems found in this shard's files \(the merge reports them\)/);
  const corrupt = await runMergeJob(env, 2000);
  assertSameAsSingleNode(corrupt, await singleNodeScan(root), "one flipped byte");
  assert.equal(corrupt.code, 1);
  assert.match(corrupt.stdout, /step-20/);
  assert.match(corrupt.stdout, /hash_mismatch/);
  const metrics = await Deno.readTextFile(textfile);
  assert.match(metrics, /^checkpoint_inventory\{[^}]*status="invalid"\} 1$/m);
  assert.match(metrics, /^checkpoint_validation_failures_total\{[^}]*reason="hash_mismatch"\} [1-9]/m);
});

Deno.test("slurm: the merge refuses a missing shard report and shards that saw different checkpoints (exit 2)", async () => {
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

/** A stand-in for sbatch: runs each job as it is submitted (an array's tasks at once) and records it. */
const FAKE_SBATCH = `#!/usr/bin/env bash
set -uo pipefail
dir=\${FAKE_SLURM_DIR:?}
printf '%s\\n' "$*" >>"$dir/calls"
id=$(cat "$dir/next-id" 2>/dev/null || echo 1000)
echo $((id + 1)) >"$dir/next-id"
array="" dependency="" parsable=0
while [[ $# -gt 0 && $1 == -* ]]; do
  case $1 in
    --parsable) parsable=1 ;;
    --export=ALL) ;;
    --array=*) array=\${1#*=} ;;
    --dependency=*) dependency=\${1#*=} ;;
    *) echo "fake sbatch: unsupported option $1" >&2 && exit 1 ;;
  esac
  shift
done
script=$1
shift
if [[ -n $dependency ]]; then
  if ! [[ $dependency =~ ^afterany:([0-9]+)$ && -e $dir/ended-\${BASH_REMATCH[1]} ]]; then
    echo "fake sbatch: dependency $dependency names no job that has ended" >&2 && exit 1
  fi
fi
export SLURM_SUBMIT_DIR=$PWD
if [[ -n $array ]]; then
  [[ $array =~ ^0-([0-9]+)$ ]] || { echo "fake sbatch: unsupported --array=$array" >&2 && exit 1; }
  last=\${BASH_REMATCH[1]}
  for ((i = 0; i <= last; i++)); do
    (
      export SLURM_JOB_ID=$((id * 100 + i)) SLURM_ARRAY_JOB_ID=$id SLURM_ARRAY_TASK_ID=$i SLURM_ARRAY_TASK_COUNT=$((last + 1))
      bash "$script" "$@" >"$dir/out-\${id}_$i" 2>&1
      echo $? >"$dir/exit-\${id}_$i"
    ) &
  done
  wait
else
  SLURM_JOB_ID=$id bash "$script" "$@" >"$dir/out-$id" 2>&1
  echo $? >"$dir/exit-$id"
fi
touch "$dir/ended-$id"
if ((parsable)); then echo "$id;cluster1"; else echo "Submitted batch job $id"; fi
`;

Deno.test("slurm: submit_validation.sh submits the array and an afterany merge; a corrupt shard fails its task, not the merge", async () => {
  await using tmp = await tempDir();
  const root = `${tmp.path}/root`;
  await makeRoot(root);
  const ckptkit = await installCkptkit(tmp.path);
  const slurm = `${tmp.path}/slurm`;
  await writeExecutable(`${slurm}/bin/sbatch`, FAKE_SBATCH);
  const submitDir = `${tmp.path}/home`;
  await Deno.mkdir(submitDir);
  const env = {
    CKPTKIT: ckptkit,
    CKPTKIT_ROOT: root,
    CKPTKIT_LOG_LEVEL: "warn",
    FAKE_SLURM_DIR: slurm,
    PATH: `${slurm}/bin:${Deno.env.get("PATH")}`,
  };
  const read = (name: string) => Deno.readTextFile(`${slurm}/${name}`);

  const first = await run("bash", [SUBMIT_SH, "3"], { cwd: submitDir, env });
  assert.equal(first.code, 0, show(first));
  assert.equal(
    first.stdout,
    `shards: job array 1000 (3 tasks), reports in ${submitDir}/ckptkit-reports/1000\n` +
      "merge:  job 1001 (after every shard has ended); verdict in ckptkit-validate-merge-1001.out\n",
  );
  assert.deepEqual((await read("calls")).trimEnd().split("\n"), [
    `--parsable --export=ALL --array=0-2 ${ARRAY_SBATCH}`,
    `--parsable --export=ALL --dependency=afterany:1000 ${MERGE_SBATCH} 1000`,
  ]);
  for (const i of [0, 1, 2]) assert.equal((await read(`exit-1000_${i}`)).trim(), "0", await read(`out-1000_${i}`));
  assert.equal((await read("exit-1001")).trim(), "0", await read("out-1001"));
  assert.match(await read("out-1001"), /3 checkpoints: 3 valid, 0 invalid/);

  await flipByte(`${root}/step-30/shard-3.bin`, 7);
  const second = await run("bash", [SUBMIT_SH], { cwd: submitDir, env: { ...env, CKPTKIT_SHARDS: "3" } });
  assert.equal(second.code, 0, show(second));
  const codes = await Promise.all([0, 1, 2].map(async (i) => Number(await read(`exit-1002_${i}`))));
  assert.deepEqual(codes.sort(), [0, 0, 1], "the shard holding the damaged file exits 1");
  // ... which is why the merge depends on the array with afterany: it ran, and says so.
  assert.equal((await read("exit-1003")).trim(), "1", await read("out-1003"));
  assert.match(await read("out-1003"), /3 checkpoints: 2 valid, 1 invalid/);
  assert.match(await read("out-1003"), /hash_mismatch/);
});

/** A stand-in for srun: starts SLURM_NTASKS copies of the command at once, rank i with SLURM_PROCID=i. */
const FAKE_SRUN = `#!/usr/bin/env bash
set -uo pipefail
while [[ $# -gt 0 && $1 == -* ]]; do
  case $1 in
    --kill-on-bad-exit=1) ;;
    *) echo "fake srun: unsupported option $1" >&2 && exit 1 ;;
  esac
  shift
done
pids=()
for ((i = 0; i < SLURM_NTASKS; i++)); do
  SLURM_PROCID=$i SLURM_LOCALID=$i SLURM_NODEID=0 "$@" &
  pids+=($!)
done
code=0
for pid in "\${pids[@]}"; do
  wait "$pid" || { rc=$?; ((code)) || code=$rc; }
done
exit "$code"
`;

/**
 * A stand-in for `python train.py`: resumes from CKPTKIT_RESUME_FROM, and at
 * every 10th step up to TRAIN_UNTIL writes this rank's file into the staging
 * folder and commits its share with the script's ckptkit_commit_rank. The
 * rank TRAIN_FAIL_RANK dies before writing anything.
 */
const STAND_IN_TRAINER = `#!/usr/bin/env bash
set -euo pipefail
echo "\${CKPTKIT_RESUME_FROM:-}" >"$TRAIN_LOG/resume-$SLURM_PROCID"
start=0
if [[ -n \${CKPTKIT_RESUME_FROM:-} ]]; then start=\${CKPTKIT_RESUME_FROM##*/step-}; fi
for ((step = start + 10; step <= TRAIN_UNTIL; step += 10)); do
  staging=$CKPTKIT_ROOT/.staging-step-$step-$SLURM_JOB_ID
  mkdir -p "$staging"
  if [[ $SLURM_PROCID == "\${TRAIN_FAIL_RANK:-}" ]]; then exit 1; fi
  printf 'rank %s of %s, step %s\\n' "$SLURM_PROCID" "$SLURM_NTASKS" "$step" >"$staging/model-rank-$SLURM_PROCID.pt"
  ckptkit_commit_rank "$step" "model-rank-$SLURM_PROCID.pt"
done
`;

Deno.test("slurm: train_multirank.sbatch: three ranks commit one checkpoint per step; a restart resumes from it", async () => {
  await using tmp = await tempDir();
  const root = `${tmp.path}/shared/ckpts`;
  const ckptkit = await installCkptkit(tmp.path);
  const bin = `${tmp.path}/slurm-bin`;
  await writeExecutable(`${bin}/srun`, FAKE_SRUN);
  const trainer = await writeExecutable(`${tmp.path}/train.sh`, STAND_IN_TRAINER);
  const log = `${tmp.path}/log`;
  await Deno.mkdir(log);
  const env = {
    CKPTKIT: ckptkit,
    CKPTKIT_ROOT: root,
    CKPTKIT_LOG_LEVEL: "warn",
    CKPTKIT_COMMIT_TIMEOUT: "60",
    SLURM_JOB_ID: "500",
    SLURM_NTASKS: "3",
    TRAIN_CMD: trainer,
    TRAIN_LOG: log,
    PATH: `${bin}:${Deno.env.get("PATH")}`,
  };
  const resumed = async () => await Promise.all([0, 1, 2].map((r) => Deno.readTextFile(`${log}/resume-${r}`)));
  const checkpoints = async () => (await names(root)).filter((n) => n.startsWith("step-"));
  const assertCheckpoint = async (step: number) => {
    const files = (await names(`${root}/step-${step}`)).filter((n) => n !== "ckptkit.manifest.json");
    assert.deepEqual(files, ["model-rank-0.pt", "model-rank-1.pt", "model-rank-2.pt"], `step-${step}`);
    for (const rank of [0, 1, 2]) {
      assert.equal(
        await Deno.readTextFile(`${root}/step-${step}/model-rank-${rank}.pt`),
        `rank ${rank} of 3, step ${step}\n`,
      );
    }
    const valid = await runCli(["validate", `${root}/step-${step}`, "--log-level", "warn"]);
    assert.equal(valid.code, 0, show(valid));
  };

  const first = await run("bash", [TRAIN_SBATCH], { env: { ...env, TRAIN_UNTIL: "20" } });
  assert.equal(first.code, 0, show(first));
  assert.match(first.stdout, /no checkpoint to resume from: starting from scratch/);
  assert.deepEqual(await resumed(), ["\n", "\n", "\n"]);
  assert.deepEqual(await checkpoints(), ["step-10", "step-20"]);
  await assertCheckpoint(10);
  await assertCheckpoint(20);
  assert.equal((await Deno.readTextFile(`${root}/latest`)).trim(), "step-20");

  // Rank 2 dies before writing step 30: the others wait for it, time out (exit 4),
  // and nothing is committed; their files stay in the staging folder.
  const broken = await run("bash", [TRAIN_SBATCH], {
    env: { ...env, TRAIN_UNTIL: "30", TRAIN_FAIL_RANK: "2", CKPTKIT_COMMIT_TIMEOUT: "3" },
  });
  assert.notEqual(broken.code, 0, show(broken));
  assert.match(broken.stdout, new RegExp(`resuming from ${root}/step-20`));
  assert.deepEqual(await checkpoints(), ["step-10", "step-20"]);
  assert.deepEqual(
    (await names(root)).filter((n) => n.startsWith(".staging")),
    [".staging-step-30-500", ".staging-step-30-500.parts"],
    "the dead attempt's staging folder and the parts of ranks 0 and 1 are left",
  );

  // The requeued job (same job id) removes that staging folder, and not another job's, resumes
  // from step-20 and commits step-30 with the files of this attempt's three ranks only.
  await Deno.mkdir(`${root}/.staging-step-30-499`);
  const requeued = await run("bash", [TRAIN_SBATCH], { env: { ...env, TRAIN_UNTIL: "30" } });
  assert.equal(requeued.code, 0, show(requeued));
  assert.match(requeued.stdout, /removing 2 staging folder\(s\) of an earlier attempt of job 500/);
  assert.deepEqual(await resumed(), Array(3).fill(`${root}/step-20\n`));
  assert.deepEqual(await checkpoints(), ["step-10", "step-20", "step-30"]);
  await assertCheckpoint(30);
  assert.deepEqual((await names(root)).filter((n) => n.startsWith(".staging")), [".staging-step-30-499"]);
});

Deno.test("slurm: train_multirank.sbatch stops, and starts no rank, when every checkpoint is invalid", async () => {
  await using tmp = await tempDir();
  const root = `${tmp.path}/shared/ckpts`;
  const ckptkit = await installCkptkit(tmp.path);
  const bin = `${tmp.path}/slurm-bin`;
  await writeExecutable(`${bin}/srun`, FAKE_SRUN);
  const trainer = await writeExecutable(`${tmp.path}/train.sh`, STAND_IN_TRAINER);
  const log = `${tmp.path}/log`;
  await Deno.mkdir(log);
  await Deno.mkdir(`${root}/step-10`, { recursive: true }); // a checkpoint without its manifest: invalid
  const job = await run("bash", [TRAIN_SBATCH], {
    env: {
      CKPTKIT: ckptkit,
      CKPTKIT_ROOT: root,
      CKPTKIT_LOG_LEVEL: "warn",
      SLURM_JOB_ID: "501",
      SLURM_NTASKS: "3",
      TRAIN_CMD: trainer,
      TRAIN_LOG: log,
      TRAIN_UNTIL: "20",
      PATH: `${bin}:${Deno.env.get("PATH")}`,
    },
  });
  assert.notEqual(job.code, 0, show(job));
  assert.match(job.stderr, /\[no_valid_checkpoint\]/);
  assert.match(job.stderr, /no valid checkpoint in .*: not starting from scratch/);
  assert.doesNotMatch(job.stdout, /starting from scratch/);
  assert.deepEqual(await names(log), [], "no rank was started");
  assert.deepEqual((await names(root)).filter((n) => n.startsWith("step-")), ["step-10"]);
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

// --- the README ------------------------------------------------------------------------------------

/** The sh code blocks of the README's "Multi-node use" section. */
async function multiNodeBlocks(): Promise<string[]> {
  const readme = await Deno.readTextFile(`${REPO}/README.md`);
  const start = readme.indexOf("\n## Multi-node use\n");
  assert.ok(start >= 0, "README has a Multi-node use section");
  const section = readme.slice(start, readme.indexOf("\n## ", start + 1));
  return [...section.matchAll(/```sh\n([\s\S]*?)```/g)].map((m) => m[1]);
}

Deno.test("README, Multi-node use: the commands work as written (paths moved into a temp folder)", async () => {
  await using tmp = await tempDir();
  const root = `${tmp.path}/ckpts`;
  await makeRoot(root);
  const ckptkit = await installCkptkit(tmp.path);
  const slurm = `${tmp.path}/slurm`;
  await writeExecutable(`${slurm}/bin/sbatch`, FAKE_SBATCH);
  const moved = (text: string) =>
    text
      .replaceAll("/mnt/ckpts/run", root)
      .replaceAll("/shared/ckpts/run", root)
      .replaceAll("/shared/bin/ckptkit", ckptkit)
      .replaceAll("/shared/reports/run", `${tmp.path}/reports`)
      .replaceAll("/var/lib/node_exporter/textfile_collector", tmp.path)
      .replace(/^ckptkit /gm, `${ckptkit} `);
  const env = {
    CKPTKIT_LOG_LEVEL: "warn",
    // The scripts' default is ckptkit-reports/ in the submit folder, here the checkout.
    CKPTKIT_REPORT_DIR: `${tmp.path}/slurm-reports`,
    FAKE_SLURM_DIR: slurm,
    PATH: `${slurm}/bin:${Deno.env.get("PATH")}`,
  };
  const sh = (script: string) => run("bash", ["-euo", "pipefail", "-c", script], { env });
  const [scan, submit, byHand, k8s] = await multiNodeBlocks();

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
  assertSameAsSingleNode(merged, await singleNodeScan(root), "README merge");
  assert.match(await Deno.readTextFile(`${tmp.path}/ckptkit.prom`), /^checkpoint_inventory\{[^}]*status="valid"\} 3$/m);

  // Slurm, through the stand-in sbatch: the wrapper (the build line aside), then the same by hand.
  const submitLines = submit.split("\n").filter((line) => line && !line.startsWith("deno task compile"));
  assert.equal(submitLines.length, 1);
  const submitted = await sh(moved(submitLines[0]));
  assert.equal(submitted.code, 0, show(submitted));
  assert.match(submitted.stdout, /^shards: job array 1000 \(8 tasks\)/);
  const manual = await sh(moved(byHand));
  assert.equal(manual.code, 0, show(manual));
  const calls = (await Deno.readTextFile(`${slurm}/calls`)).trimEnd().split("\n");
  assert.deepEqual(calls.slice(2), [
    "--parsable --array=0-7 examples/slurm/validate_array.sbatch",
    "--dependency=afterany:1002 examples/slurm/validate_merge.sbatch 1002",
  ]);
  for (const job of ["1001", "1003"]) {
    assert.equal((await Deno.readTextFile(`${slurm}/exit-${job}`)).trim(), "0");
    assert.match(await Deno.readTextFile(`${slurm}/out-${job}`), /3 checkpoints: 3 valid, 0 invalid/);
  }
  assert.deepEqual(await names(`${tmp.path}/slurm-reports`), ["1000", "1002"]);
  assert.equal((await names(`${tmp.path}/slurm-reports/1002`)).length, 8);

  // Kubernetes: the files and script the block names exist.
  for (const path of k8s.matchAll(/examples\/k8s\/\S+/g)) await Deno.stat(`${REPO}/${path[0]}`);
});
