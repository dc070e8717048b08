import assert from "node:assert/strict";
import { formatRaceFigures, runRace } from "./_race.ts";
import { cliCommand, decode, names, tempDir } from "./_helpers.ts";
import { validateCheckpoint } from "../src/core/validate.ts";

Deno.test("concurrent commits of the same step: exactly one wins, the other exits 4 with checkpoint_exists", async () => {
  await using tmp = await tempDir();
  const root = tmp.path;
  for (let step = 1; step <= 4; step++) {
    const outputs = await Promise.all(
      [0, 1, 2].map(() =>
        cliCommand(["write", "--root", root, "--step", String(step), "--files", "2", "--file-size", "256KiB"]).output()
      ),
    );
    const runs = outputs.map(decode);
    assert.equal(runs.filter((r) => r.code === 0).length, 1, `one winner for step ${step}`);
    for (const loser of runs.filter((r) => r.code !== 0)) {
      assert.equal(loser.code, 4);
      assert.match(loser.stderr, /already exists; a committed checkpoint is never replaced \[checkpoint_exists\]/);
    }
    assert.equal((await validateCheckpoint(`${root}/step-${step}`)).ok, true);
  }
  assert.deepEqual(
    (await names(root)).filter((n) => n.startsWith(".staging")),
    [],
    "the losers removed their staging folders",
  );
});

Deno.test("commit, gc, scan and resume --repair racing: no lost checkpoint, no dangling latest, no crash", async () => {
  await using tmp = await tempDir();
  // Rounds, not seconds: on a busy machine the race takes longer instead of racing less.
  const figures = await runRace({
    root: `${tmp.path}/root`,
    durationS: Number(Deno.env.get("CKPTKIT_RACE_S") ?? 0),
    minRounds: 4,
  });
  console.log(formatRaceFigures(figures));
  assert.deepEqual(figures.violations, []);
  assert.ok((figures.byOperation.write ?? 0) >= 8, "every writer committed 4 times");
  assert.ok((figures.byOperation.gc ?? 0) >= 4, "gc ran 4 times");
});
