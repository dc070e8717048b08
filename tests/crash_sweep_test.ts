/**
 * The crash-at-every-call sweep in CI: every mutating command, killed by
 * strace right before a strided subset of the file-system calls it makes on
 * its root (two per command, at a seeded offset), then retried; the
 * invariants hold after the kill and after the retry. `deno task torture
 * --sweep` tries every call of every command.
 */

import assert from "node:assert/strict";
import { formatSweepFigures, hasStrace, runSweep, SCENARIOS } from "./_sweep.ts";
import { cliCommand, runCli, tempDir, waitForLine, writeStep } from "./_helpers.ts";
import { readLatest } from "../src/core/latest.ts";
import { validateCheckpoint } from "../src/core/validate.ts";

Deno.test({
  name: "crash sweep: every mutating command killed before a seeded subset of its file-system calls, then retried",
  ignore: !(await hasStrace()),
  async fn() {
    await using tmp = await tempDir("ckptkit-sweep-");
    const seed = Number(Deno.env.get("CKPTKIT_SWEEP_SEED") ?? 20261202);
    const all = await runSweep({ work: tmp.path, perCommand: 2, offset: seed, checkOrder: false });
    for (const figures of all) console.log(formatSweepFigures(figures));
    assert.deepEqual(all.map((f) => f.command), SCENARIOS.map((s) => s.name), "every mutating command is swept");
    for (const figures of all) {
      assert.ok(figures.calls > 0, `${figures.command}: its calls were enumerated`);
      assert.deepEqual(figures.outside, [], `${figures.command}: nothing written outside the root`);
      assert.ok(figures.covered >= 1, `${figures.command}: at least one crash point covered: ${figures.missed}`);
      // A kill that lands elsewhere (the machine too busy to kill within the second strace holds a call) is logged.
      for (const miss of figures.missed) console.log(`  missed: ${miss}`);
      assert.deepEqual(figures.newViolations, [], `${figures.command} (seed ${seed})`);
    }
  },
});

// Found by the sweep: `commit --rank 0` (the rank completing the set) killed after it claimed the merge left
// commit.claim behind; its retry then reported "recorded; another rank is committing" (exit 0) and the checkpoint
// was never committed.
Deno.test("multi-rank: the merging rank, killed after claiming the commit, commits when retried", async () => {
  await using tmp = await tempDir();
  const root = `${tmp.path}/root`;
  await writeStep(root, 1);
  const staging = `${root}/.staging-step-3-ranks`;
  await Deno.mkdir(staging, { recursive: true });
  for (const rank of [0, 1]) await Deno.writeFile(`${staging}/rank-${rank}.pt`, new Uint8Array(4096).fill(rank));
  const rankArgs = (rank: number) => [
    "commit",
    staging,
    "--root",
    root,
    "--step",
    "3",
    "--rank",
    String(rank),
    "--world-size",
    "2",
    "--rank-files",
    `rank-${rank}.pt`,
  ];
  assert.equal((await runCli(rankArgs(1))).code, 0);
  const child = cliCommand(rankArgs(0), { env: { CKPTKIT_TEST_PAUSE_AT: "manifest_written" } }).spawn();
  await waitForLine(child.stderr, "test_paused");
  child.kill("SIGKILL");
  await child.stdout.cancel();
  await child.status;
  assert.ok(await Deno.lstat(`${staging}.parts/commit.claim`).then(() => true, () => false), "the claim was left");

  const retry = await runCli(rankArgs(0));
  assert.equal(retry.code, 0, retry.stderr);
  assert.equal((await validateCheckpoint(`${root}/step-3`)).ok, true, `step-3 committed: ${retry.stdout}`);
  assert.equal((await readLatest(root)).name, "step-3");
  assert.equal(await Deno.lstat(`${staging}.parts`).then(() => true, () => false), false, "the parts are removed");
});
