/**
 * The crash-at-every-call sweep in CI: every mutating command, killed by
 * strace right before a strided subset of the file-system calls it makes on
 * its root (two per command, at a seeded offset), then retried; the
 * invariants hold after the kill and after the retry. `deno task torture
 * --sweep` tries every call of every command.
 */

import assert from "node:assert/strict";
import { formatSweepFigures, hasStrace, runSweep, SCENARIOS } from "./_sweep.ts";
import { tempDir } from "./_helpers.ts";

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
      assert.deepEqual(figures.missed, [], `${figures.command}: every kill landed where intended`);
      assert.deepEqual(figures.newViolations, [], `${figures.command} (seed ${seed})`);
    }
  },
});
