/**
 * The Slurm examples (examples/slurm/) under a real Slurm: Debian's
 * slurm-wlm 22.05, one node on 127.0.0.1 started for each test by
 * tests/_slurm.ts (its own munged, slurmctld and slurmd in a temporary
 * folder). Jobs are submitted with the real `sbatch` (the commands of docs/multi-node.md
 * and submit_validation.sh as written), run by slurmd, their ranks started by
 * the real `srun`; their final states and exit codes come from `scontrol show
 * job` (no accounting database: no `sacct`).
 *
 * Every `ckptkit` the jobs run is a wrapper around this checkout's cli.ts
 * under the binary's permission flags. Needs root and the packages slurm-wlm
 * and munge (as .ci/run installs them): without them the tests fail, saying
 * what is missing; they never skip.
 * The stand-ins of tests/examples_multinode_test.ts cover what a one-node
 * cluster cannot stage (see there).
 */

import assert from "node:assert/strict";
import { sectionBlocks } from "./_docs.ts";
import { flipByte, names, REPO, runCli, tempDir } from "./_helpers.ts";
import {
  ended,
  installCkptkit,
  poll,
  show,
  type SlurmCluster,
  type SlurmJob,
  startSlurmCluster,
  writeExecutable,
} from "./_slurm.ts";

const SLURM = `${REPO}/examples/slurm`;
const TRAIN_SBATCH = `${SLURM}/train_multirank.sbatch`;

// --- helpers ---------------------------------------------------------------------------------------

/** A root of three checkpoints of four 16 KiB shard files each, written by `ckptkit write`. */
async function makeRoot(root: string): Promise<void> {
  for (const step of [10, 20, 30]) {
    const write = await runCli([
      ..."write --files 4 --file-size 16KiB --job-id train --run-id run1 --log-level warn".split(" "),
      ...["--root", root, "--step", String(step)],
    ]);
    assert.equal(write.code, 0, show(write));
  }
}

/** The single-node verdict to compare a merge with: `ckptkit scan ROOT`. */
function singleNodeScan(root: string) {
  return runCli(["scan", root, "--log-level", "warn"]);
}

/**
 * A merge job's output file as the scan output it holds: Slurm writes the
 * job's stderr into the same file, so the script's own line and JSON logs are
 * left out; timings are blanked.
 */
function verdictOf(output: string): string {
  return output.split("\n")
    .filter((line) => !line.startsWith("{") && !line.startsWith("validate_merge.sbatch: "))
    .join("\n")
    .replace(/\b\d+(\.\d+)? s\b/g, "<t> s");
}

/** The sh code blocks of docs/multi-node.md's "## Slurm" section: [the wrapper, the same by hand]. */
async function docsSlurmBlocks(): Promise<string[]> {
  const blocks = await sectionBlocks("docs/multi-node.md", "## Slurm", "sh");
  assert.equal(blocks.length, 2, "the Slurm section's two sh blocks");
  return blocks;
}

/** A docs block with its paths moved into the test's folders; `examples/` is the checkout's. */
function moved(block: string, paths: { ckptkit: string; root: string }): string {
  return block
    .replaceAll("/shared/bin/ckptkit", paths.ckptkit)
    .replaceAll("/shared/ckpts/run", paths.root)
    .replaceAll(" examples/slurm/", ` ${SLURM}/`)
    .replace(/^examples\/slurm\//gm, `${SLURM}/`);
}

/** Who last vouched for each checkpoint in the root's state: the commit, until a scan or a merge. */
async function knownGoodBy(root: string): Promise<string[]> {
  const state = JSON.parse(await Deno.readTextFile(`${root}/.ckptkit/state.json`));
  return Object.entries(state.known_good).map(([name, record]) => `${name} ${(record as { by: string }).by}`).sort();
}

/** The array's tasks by index, each one ended. */
function tasksByIndex(jobs: SlurmJob[], count: number): SlurmJob[] {
  const tasks = jobs.filter((j) => j.arrayTaskId !== undefined).sort((a, b) =>
    Number(a.arrayTaskId) - Number(b.arrayTaskId)
  );
  assert.deepEqual(
    tasks.map((t) => t.arrayTaskId),
    [...Array(count).keys()].map(String),
    jobs.map((j) => j.raw).join("\n"),
  );
  return tasks;
}

/** The array job id a merge job was given (its script's argument). */
function mergedArray(merge: SlurmJob): string {
  const match = /Command=\S*validate_merge\.sbatch (\d+)/.exec(merge.raw);
  assert.ok(match, merge.raw);
  return match[1];
}

async function withCluster(fn: (cluster: SlurmCluster) => Promise<void>): Promise<void> {
  await using cluster = await startSlurmCluster();
  try {
    await fn(cluster);
  } catch (error) {
    // The daemons' side of a failure, before the cluster (and its logs) is removed.
    console.error(await cluster.diagnostics());
    throw error;
  }
}

// --- validation: the job array and its merge -------------------------------------------------------

Deno.test({
  name:
    "slurm (real 22.05): the docs' by-hand commands on a healthy root: 8 shards and the afterany merge COMPLETED, exit 0, the single-node verdict",
  fn: () =>
    withCluster(async (cluster) => {
      await using tmp = await tempDir();
      const root = `${tmp.path}/nfs/ckpts/run`;
      await makeRoot(root);
      const ckptkit = await installCkptkit(tmp.path);
      const home = `${tmp.path}/home`;
      await Deno.mkdir(home);
      const textfile = `${tmp.path}/ckptkit.prom`;
      const [, byHand] = await docsSlurmBlocks();

      // As written (paths moved), from the submit folder: no CKPTKIT_SHARDS, so each task takes
      // N from SLURM_ARRAY_TASK_COUNT and the merge merges every report of the array.
      const submitted = await cluster.run("bash", ["-euo", "pipefail", "-c", moved(byHand, { ckptkit, root })], {
        cwd: home,
        env: { CKPTKIT_LOG_LEVEL: "warn", CKPTKIT_TEXTFILE: textfile },
      });
      assert.equal(submitted.code, 0, show(submitted));
      const mergeId = /^Submitted batch job (\d+)$/m.exec(submitted.stdout)?.[1];
      assert.ok(mergeId, show(submitted));
      const [merge] = await cluster.waitForEnd(mergeId);
      const arrayId = mergedArray(merge);
      const tasks = tasksByIndex(await cluster.waitForEnd(arrayId), 8);

      for (const [i, task] of tasks.entries()) {
        assert.equal(`${task.state} ${task.exitCode}`, "COMPLETED 0", task.raw);
        assert.equal(task.stdout, `${home}/ckptkit-validate-${arrayId}_${i}.out`);
        const out = await Deno.readTextFile(task.stdout);
        assert.match(out, new RegExp(`shard ${i}/8 exit=0 no problems in this shard's files`), out);
      }
      assert.deepEqual(
        await names(`${home}/ckptkit-reports/${arrayId}`),
        [...Array(8).keys()].map((i) => `shard-${i}.json`),
      );
      assert.equal(`${merge.state} ${merge.exitCode}`, "COMPLETED 0", merge.raw);
      assert.equal(merge.stdout, `${home}/ckptkit-validate-merge-${mergeId}.out`);
      const output = await Deno.readTextFile(merge.stdout);
      assert.match(
        output,
        new RegExp(`^validate_merge\\.sbatch: merging 8 report\\(s\\) of array job ${arrayId}$`, "m"),
      );
      assert.match(output, /^3 checkpoints: 3 valid, 0 invalid;.*No problems found\.$/m, output);
      const single = await singleNodeScan(root);
      assert.equal(single.code, 0, show(single));
      assert.equal(verdictOf(output), verdictOf(single.stdout));
      assert.match(await Deno.readTextFile(textfile), /^checkpoint_inventory\{[^}]*status="valid"\} 3$/m);
      // The merge recorded the results in the root's state, as a single-node scan does.
      assert.deepEqual(await knownGoodBy(root), ["step-10 scan", "step-20 scan", "step-30 scan"]);
      const knownGood = await runCli(["resume", root, "--policy", "last-known-good", "--log-level", "warn"]);
      assert.equal(knownGood.stdout, `${root}/step-30\n`, show(knownGood));
    }),
});

Deno.test({
  name:
    "slurm (real 22.05): submit_validation.sh 8 on a root with one flipped byte: the owning shard FAILED exit 1, the afterany merge ran and FAILED exit 1 with the verdict",
  fn: () =>
    withCluster(async (cluster) => {
      await using tmp = await tempDir();
      const root = `${tmp.path}/nfs/ckpts/run`;
      await makeRoot(root);
      const damaged = "shard-00001-of-00004.bin";
      await flipByte(`${root}/step-20/${damaged}`, 100);
      const ckptkit = await installCkptkit(tmp.path);
      const home = `${tmp.path}/home`;
      await Deno.mkdir(home);
      const [wrapper] = await docsSlurmBlocks();
      const lines = wrapper.split("\n").filter((line) => line && !line.startsWith("deno task compile"));
      assert.equal(lines.length, 1, wrapper);

      const submitted = await cluster.run("bash", ["-euo", "pipefail", "-c", moved(lines[0], { ckptkit, root })], {
        cwd: home,
        env: { CKPTKIT_LOG_LEVEL: "warn" },
      });
      assert.equal(submitted.code, 0, show(submitted));
      const ids =
        /^shards: job array (\d+) \(8 tasks\), reports in (.*)\n^merge: {2}job (\d+) \(after every shard has ended\); verdict in ckptkit-validate-merge-(\d+)\.out$/m
          .exec(submitted.stdout);
      assert.ok(ids, show(submitted));
      const [, arrayId, reportDir, mergeId, verdictJob] = ids;
      assert.equal(reportDir, `${home}/ckptkit-reports/${arrayId}`);
      assert.equal(verdictJob, mergeId);

      const [merge] = await cluster.waitForEnd(mergeId);
      assert.equal(mergedArray(merge), arrayId);
      const tasks = tasksByIndex(await cluster.waitForEnd(arrayId), 8);
      // The task whose shard holds the damaged file: the one whose report has a problem there.
      const owners: number[] = [];
      for (const i of tasks.keys()) {
        const report = JSON.parse(await Deno.readTextFile(`${reportDir}/shard-${i}.json`));
        const step20 = report.checkpoints.find((c: { name: string }) => c.name === "step-20");
        const file = step20?.files.find((f: { path: string }) => f.path === damaged);
        if (file?.problems.length) owners.push(i);
      }
      assert.equal(owners.length, 1, `one shard owns ${damaged}: ${owners}`);
      for (const [i, task] of tasks.entries()) {
        const out = await Deno.readTextFile(task.stdout);
        if (i === owners[0]) {
          assert.equal(`${task.state} ${task.exitCode}`, "FAILED 1", task.raw);
          assert.match(out, /exit=1 problems found in this shard's files \(the merge reports them\)/, out);
        } else {
          assert.equal(`${task.state} ${task.exitCode}`, "COMPLETED 0", `${task.raw}\n${out}`);
        }
      }
      // ... and the merge still ran (afterany), and its exit code is the verdict.
      assert.equal(`${merge.state} ${merge.exitCode}`, "FAILED 1", merge.raw);
      const output = await Deno.readTextFile(`${home}/ckptkit-validate-merge-${mergeId}.out`);
      assert.match(output, /^3 checkpoints: 2 valid, 1 invalid;.*PROBLEMS FOUND\.$/m, output);
      assert.match(output, new RegExp(`^FAILED ${root}/step-20 .*\\n +hash_mismatch +${damaged}: `, "m"), output);
      const single = await singleNodeScan(root);
      assert.equal(single.code, 1, show(single));
      assert.equal(verdictOf(output), verdictOf(single.stdout));
    }),
});

Deno.test({
  name:
    "slurm (real 22.05): a shard cancelled before it ran leaves the set incomplete: the afterany merge FAILED exit 2 and names it",
  fn: () =>
    withCluster(async (cluster) => {
      await using tmp = await tempDir();
      const root = `${tmp.path}/root`;
      await makeRoot(root);
      const ckptkit = await installCkptkit(tmp.path);
      // Submitted held (SBATCH_HOLD reaches sbatch through the wrapper), task 2 cancelled, then released.
      const submitted = await cluster.run(`${SLURM}/submit_validation.sh`, ["3"], {
        cwd: tmp.path,
        env: { CKPTKIT: ckptkit, CKPTKIT_ROOT: root, CKPTKIT_LOG_LEVEL: "warn", SBATCH_HOLD: "1" },
      });
      assert.equal(submitted.code, 0, show(submitted));
      const [, arrayId, mergeId] = /job array (\d+) [\s\S]*merge: {2}job (\d+) /.exec(submitted.stdout) ?? [];
      assert.ok(arrayId && mergeId, show(submitted));
      const cancel = await cluster.run("scancel", [`${arrayId}_2`]);
      assert.equal(cancel.code, 0, show(cancel));
      const release = await cluster.run("scontrol", ["release", arrayId, mergeId]);
      assert.equal(release.code, 0, show(release));

      const [merge] = await cluster.waitForEnd(mergeId);
      // A pending task cancelled leaves no record of its own: the array is tasks 0 and 1.
      const tasks = tasksByIndex(await cluster.waitForEnd(arrayId), 2);
      assert.deepEqual(tasks.map((t) => `${t.state} ${t.exitCode}`), ["COMPLETED 0", "COMPLETED 0"]);
      assert.deepEqual(await names(`${tmp.path}/ckptkit-reports/${arrayId}`), ["shard-0.json", "shard-1.json"]);
      assert.equal(`${merge.state} ${merge.exitCode}`, "FAILED 2", merge.raw);
      const output = await Deno.readTextFile(merge.stdout);
      assert.match(output, new RegExp(`incomplete: no report from shard\\(s\\) 2 of 3 in .*/${arrayId}`), output);
      // Shards only read, and the merge gave no verdict: the state still has the commits' records.
      assert.deepEqual(await knownGoodBy(root), ["step-10 commit", "step-20 commit", "step-30 commit"]);
    }),
});

// --- training: train_multirank.sbatch --------------------------------------------------------------

/**
 * A stand-in for `python train.py`, one per rank: records what it resumed
 * from, then at every 10th step up to TRAIN_UNTIL writes this rank's file
 * into the staging folder and commits its share with the script's
 * ckptkit_commit_rank. In the job's first attempt (SLURM_RESTART_COUNT
 * unset) rank TRAIN_HANG_RANK hangs at step TRAIN_HANG_AT before writing
 * anything: the others wait for it in their commit, until the requeue.
 */
const STAND_IN_TRAINER = `#!/usr/bin/env bash
set -euo pipefail
attempt=\${SLURM_RESTART_COUNT:-0}
log=$TRAIN_LOG/attempt-$attempt
mkdir -p "$log"
printf '%s %s %s\\n' "$SLURM_NTASKS" "$SLURM_JOB_ID" "\${CKPTKIT_RESUME_FROM:-}" >"$log/rank-$SLURM_PROCID"
start=0
if [[ -n \${CKPTKIT_RESUME_FROM:-} ]]; then start=\${CKPTKIT_RESUME_FROM##*/step-}; fi
for ((step = start + 10; step <= TRAIN_UNTIL; step += 10)); do
  staging=$CKPTKIT_ROOT/.staging-step-$step-$SLURM_JOB_ID
  mkdir -p "$staging"
  if [[ $attempt == 0 && $step == "\${TRAIN_HANG_AT:-}" && $SLURM_PROCID == "\${TRAIN_HANG_RANK:-}" ]]; then
    touch "$log/hanging"
    exec sleep 3600
  fi
  printf 'rank %s of %s, step %s\\n' "$SLURM_PROCID" "$SLURM_NTASKS" "$step" >"$staging/model-rank-$SLURM_PROCID.pt"
  ckptkit_commit_rank "$step" "model-rank-$SLURM_PROCID.pt"
done
`;

/** Asserts step-N holds the four ranks' files of that step and validates. */
async function assertCheckpoint(root: string, step: number): Promise<void> {
  const files = (await names(`${root}/step-${step}`)).filter((n) => n !== "ckptkit.manifest.json");
  assert.deepEqual(files, [0, 1, 2, 3].map((r) => `model-rank-${r}.pt`), `step-${step}`);
  for (const rank of [0, 1, 2, 3]) {
    assert.equal(
      await Deno.readTextFile(`${root}/step-${step}/model-rank-${rank}.pt`),
      `rank ${rank} of 4, step ${step}\n`,
    );
  }
  const valid = await runCli(["validate", `${root}/step-${step}`, "--log-level", "warn"]);
  assert.equal(valid.code, 0, show(valid));
}

Deno.test({
  name:
    "slurm (real 22.05): train_multirank.sbatch: 4 ranks under srun commit each step; requeued mid-checkpoint, the job resumes from the last committed step",
  fn: () =>
    withCluster(async (cluster) => {
      await using tmp = await tempDir();
      const root = `${tmp.path}/nfs/ckpts`;
      const ckptkit = await installCkptkit(tmp.path);
      const trainer = await writeExecutable(`${tmp.path}/train.sh`, STAND_IN_TRAINER);
      const log = `${tmp.path}/log`;
      await Deno.mkdir(log);
      const home = `${tmp.path}/home`;
      await Deno.mkdir(home);
      // As written but for --nodes (one node here): 4 tasks of 8 CPUs and a GPU each, --requeue.
      const job = await cluster.sbatch(["--nodes=1", TRAIN_SBATCH], {
        cwd: home,
        env: {
          CKPTKIT: ckptkit,
          CKPTKIT_ROOT: root,
          CKPTKIT_LOG_LEVEL: "warn",
          TRAIN_CMD: trainer,
          TRAIN_LOG: log,
          TRAIN_UNTIL: "40",
          TRAIN_HANG_AT: "30",
          TRAIN_HANG_RANK: "3",
        },
      });
      const parts = `${root}/.staging-step-30-${job}.parts`;

      // Steps 10 and 20 committed; at step 30 ranks 0-2 have recorded their parts and wait for rank 3.
      await poll("ranks 0-2 waiting at step 30", async () => {
        const jobs = await cluster.jobs(job);
        if (jobs.some(ended)) throw new Error(`job not running: ${jobs.map((j) => j.raw)}`);
        const recorded: string[] = await names(parts).catch(() => []);
        const hanging = await Deno.stat(`${log}/attempt-0/hanging`).then(() => true, () => false);
        const ranks = recorded.flatMap((name) => /^rank-(\d+)\.json$/.exec(name)?.[1] ?? []).map(Number).sort();
        return hanging && ranks.join() === "0,1,2" ? true : undefined;
      }, { detail: cluster.diagnostics });
      assert.deepEqual((await names(root)).filter((n) => n.startsWith("step-")), ["step-10", "step-20"]);
      const first = await Promise.all([0, 1, 2, 3].map((r) => Deno.readTextFile(`${log}/attempt-0/rank-${r}`)));
      assert.deepEqual(first, Array(4).fill(`4 ${job} \n`), "4 ranks, started from scratch");

      const requeue = await cluster.run("scontrol", ["requeue", job]);
      assert.equal(requeue.code, 0, show(requeue));
      const [done] = await cluster.waitForEnd(job, ([j]) => j.restarts >= 1);
      assert.equal(`${done.state} ${done.exitCode} restarts=${done.restarts}`, "COMPLETED 0 restarts=1", done.raw);

      // The second attempt (same job id) removed the first's staging folder and parts, resumed
      // from step-20 on every rank and committed steps 30 and 40 with its own ranks' files.
      const second = await Promise.all([0, 1, 2, 3].map((r) => Deno.readTextFile(`${log}/attempt-1/rank-${r}`)));
      assert.deepEqual(second, Array(4).fill(`4 ${job} ${root}/step-20\n`));
      assert.deepEqual((await names(root)).filter((n) => !n.startsWith("step-")), [".ckptkit", "latest"]);
      assert.deepEqual((await names(root)).filter((n) => n.startsWith("step-")), [
        "step-10",
        "step-20",
        "step-30",
        "step-40",
      ]);
      for (const step of [10, 20, 30, 40]) await assertCheckpoint(root, step);
      const scan = await runCli(["scan", root, "--log-level", "warn"]);
      assert.equal(scan.code, 0, show(scan));
      assert.match(scan.stdout, /^4 checkpoints: 4 valid, 0 invalid/m);
      const resume = await runCli(["resume", root, "--log-level", "warn"]);
      assert.equal(resume.stdout, `${root}/step-40\n`, show(resume));

      // One output file for both attempts (--open-mode=append): the requeue did not erase the first.
      assert.equal(done.stdout, `${home}/train-${job}.out`);
      const output = await Deno.readTextFile(done.stdout);
      assert.match(
        output,
        new RegExp(
          [
            "train_multirank\\.sbatch: no checkpoint to resume from: starting from scratch",
            `train_multirank\\.sbatch: removing 2 staging folder\\(s\\) of an earlier attempt of job ${job}`,
            `train_multirank\\.sbatch: resuming from ${root}/step-20`,
          ].join("[\\s\\S]*"),
        ),
        output,
      );
    }),
});

Deno.test({
  name:
    "slurm (real 22.05): train_multirank.sbatch on a root whose only checkpoint is invalid: FAILED exit 2, no rank started",
  fn: () =>
    withCluster(async (cluster) => {
      await using tmp = await tempDir();
      const root = `${tmp.path}/nfs/ckpts`;
      await Deno.mkdir(`${root}/step-10`, { recursive: true }); // a checkpoint without its manifest: invalid
      const ckptkit = await installCkptkit(tmp.path);
      const trainer = await writeExecutable(`${tmp.path}/train.sh`, STAND_IN_TRAINER);
      const log = `${tmp.path}/log`;
      await Deno.mkdir(log);
      const job = await cluster.sbatch(["--nodes=1", TRAIN_SBATCH], {
        cwd: tmp.path,
        env: { CKPTKIT: ckptkit, CKPTKIT_ROOT: root, CKPTKIT_LOG_LEVEL: "warn", TRAIN_CMD: trainer, TRAIN_LOG: log },
      });
      const [done] = await cluster.waitForEnd(job);
      assert.equal(`${done.state} ${done.exitCode}`, "FAILED 2", done.raw);
      const output = await Deno.readTextFile(done.stdout);
      assert.match(output, /\[no_valid_checkpoint\]/, output);
      assert.match(output, /no valid checkpoint in .*: not starting from scratch/);
      assert.doesNotMatch(output, /no checkpoint to resume from/);
      assert.deepEqual(await names(log), [], "no rank was started");
      assert.deepEqual(await names(root), ["step-10"]);
    }),
});
