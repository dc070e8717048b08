import assert from "node:assert/strict";
import { formatCrashFigures, runCrashTrials } from "./_crash.ts";
import { cliCommand, names, runCli, tempDir } from "./_helpers.ts";
import { readLatest } from "../src/core/latest.ts";
import { validateCheckpoint } from "../src/core/validate.ts";

Deno.test("crash harness: SIGKILL at random instants never breaks latest, resume or a committed checkpoint", async () => {
  await using tmp = await tempDir();
  const seed = Number(Deno.env.get("CKPTKIT_CRASH_SEED") ?? 20261129);
  const figures = await runCrashTrials({ trials: 40, seed, root: `${tmp.path}/root` });
  console.log(formatCrashFigures(figures));
  assert.deepEqual(figures.violations, []);
  assert.ok(figures.killed >= 5, `enough trials were killed mid-way: ${figures.killed}`);
  assert.ok(figures.completed >= 8, `every fifth trial runs to its end: ${figures.completed}`);
});

const POINTS = [
  "manifest_written",
  "folders_synced",
  "before_rename",
  "after_rename",
  "before_latest_rename",
  "committed",
];

for (const command of ["write", "commit"] as const) {
  Deno.test(`${command} killed at every commit point leaves an old or new state, never a broken one`, async () => {
    await using tmp = await tempDir();
    const root = `${tmp.path}/root`;
    assert.equal(
      (await runCli(["write", "--root", root, "--step", "1", "--files", "1", "--file-size", "4KiB"])).code,
      0,
    );
    let step = 1;
    for (const point of POINTS) {
      step++;
      const args = command === "write"
        ? ["write", "--root", root, "--step", String(step), "--files", "2", "--file-size", "8KiB"]
        : ["commit", `${root}/.staging-ext-${step}`, "--root", root, "--step", String(step)];
      if (command === "commit") {
        await Deno.mkdir(`${root}/.staging-ext-${step}`, { recursive: true });
        await Deno.writeTextFile(`${root}/.staging-ext-${step}/model.pt`, `weights ${step}`);
      }
      const child = cliCommand(args, { env: { CKPTKIT_TEST_PAUSE_AT: point } }).spawn();
      const reader = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
      let seen = "";
      while (!seen.includes("test_paused")) {
        const { done, value } = await reader.read();
        if (done) break;
        seen += value;
      }
      assert.ok(seen.includes("test_paused"), `paused at ${point}: ${seen}`);
      child.kill("SIGKILL");
      await reader.cancel();
      await child.stdout.cancel();
      await child.status;

      const visible = (await names(root)).filter((n) => n.startsWith("step-"));
      for (const name of visible) {
        assert.equal((await validateCheckpoint(`${root}/${name}`)).ok, true, `${name} after a kill at ${point}`);
      }
      const renamed = ["after_rename", "before_latest_rename", "committed"].includes(point);
      assert.equal(visible.includes(`step-${step}`), renamed, `step-${step} visible after a kill at ${point}`);
      const latest = await readLatest(root);
      assert.equal(latest.state, "ok");
      assert.ok(visible.includes(latest.name!), `latest names a visible checkpoint after ${point}`);
      if (!renamed) step--; // the step was not committed; reuse it
    }
  });
}
