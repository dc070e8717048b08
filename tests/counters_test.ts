import assert from "node:assert/strict";
import { collectMetrics } from "../src/metrics/collect.ts";
import { renderMetrics } from "../src/metrics/render.ts";
import { quarantineCheckpoint } from "../src/core/quarantine.ts";
import { recordValidations } from "../src/core/record.ts";
import { readState } from "../src/core/state.ts";
import { validateCheckpoint } from "../src/core/validate.ts";
import { cliCommand, decode, flipByte, runCli, samples, tempDir, writeStep } from "./_helpers.ts";

/** The exported checkpoint_validation_failures_total by reason (non-zero only). */
function failures(text: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [key, value] of samples(text)) {
    const reason = /^checkpoint_validation_failures_total\{.*reason="([^"]+)"\}$/.exec(key)?.[1];
    if (reason && value > 0) out[reason] = value;
  }
  return out;
}

Deno.test("a corrupt checkpoint counts once per reason, however often and however it is scanned", async () => {
  await using tmp = await tempDir();
  const root = `${tmp.path}/root`;
  await Deno.mkdir(root);
  await writeStep(root, 10);
  const step20 = await writeStep(root, 20);
  await flipByte(`${step20}/shard-0.bin`, 3);
  await flipByte(`${step20}/shard-1.bin`, 3); // two files, one reason: still one corruption
  for (let i = 0; i < 5; i++) {
    const run = await runCli(["emit-metrics", root, "--log-level", "silent"]);
    assert.equal(run.code, 1, run.stderr);
    assert.deepEqual(failures(run.stdout), { hash_mismatch: 1 }, `emit-metrics pass ${i + 1}`);
  }
  // serve renders one collectMetrics pass per scrape
  for (let i = 0; i < 5; i++) {
    assert.deepEqual(failures(await renderMetrics((await collectMetrics(root)).snapshot)), { hash_mismatch: 1 });
  }
  // a sharded scan merged into the same root
  const reports = [0, 1].map((i) => `${tmp.path}/shard-${i}.json`);
  await Promise.all(reports.map(async (report, i) => {
    const run = decode(
      await cliCommand(["scan", root, "--shard", `${i}/2`, "--report", report, "--log-level", "warn"]).output(),
    );
    assert.ok(run.code === 0 || run.code === 1, run.stderr);
  }));
  const prom = `${tmp.path}/merged.prom`;
  const merged = await runCli(["report", "merge", ...reports, "--textfile", prom, "--log-level", "warn"]);
  assert.equal(merged.code, 1, merged.stderr);
  assert.deepEqual(failures(await Deno.readTextFile(prom)), { hash_mismatch: 1 }, "report merge");
  const validated = await runCli(["validate", step20]);
  assert.equal(validated.code, 1);
  assert.deepEqual((await readState(root)).state.validation_failures_total, { hash_mismatch: 1 });

  // a second, distinct corruption counts again
  const step30 = await writeStep(root, 30);
  await Deno.truncate(`${step30}/shard-1.bin`, 5);
  for (let i = 0; i < 3; i++) await runCli(["emit-metrics", root, "--log-level", "silent"]);
  let state = (await readState(root)).state;
  assert.deepEqual(state.validation_failures_total, { hash_mismatch: 1, size_mismatch: 1 });
  assert.deepEqual(Object.keys(state.counted_failures).sort(), ["step-20", "step-30"]);

  // quarantined: re-scans add nothing, the counted key is pruned, the totals stay
  await quarantineCheckpoint(step20, { reason: "test" });
  for (let i = 0; i < 3; i++) {
    const run = await runCli(["emit-metrics", root, "--log-level", "silent"]);
    assert.deepEqual(failures(run.stdout), { hash_mismatch: 1, size_mismatch: 1 });
  }
  state = (await readState(root)).state;
  assert.deepEqual(Object.keys(state.counted_failures), ["step-30"]);
  assert.deepEqual(state.validation_failures_total, { hash_mismatch: 1, size_mismatch: 1 }, "monotonic");

  // step-20 re-committed and damaged again: a new corruption of the same name counts again
  const again = await writeStep(root, 20);
  await flipByte(`${again}/shard-0.bin`, 11);
  for (let i = 0; i < 3; i++) await runCli(["emit-metrics", root, "--log-level", "silent"]);
  assert.deepEqual((await readState(root)).state.validation_failures_total, { hash_mismatch: 2, size_mismatch: 1 });
});

Deno.test("concurrent recordings of the same detection count it once", async () => {
  await using tmp = await tempDir();
  const root = tmp.path;
  const step = await writeStep(root, 10);
  await flipByte(`${step}/shard-0.bin`, 1);
  await Deno.mkdir(`${root}/.ckptkit`, { recursive: true });
  const result = await validateCheckpoint(step, { depth: "full" });
  assert.equal(result.ok, false);
  // in this process ...
  const outcomes = await Promise.all(Array.from({ length: 8 }, () => recordValidations(root, [result], "test")));
  assert.deepEqual(outcomes, Array(8).fill(null));
  // ... and in several processes at once
  const runs = await Promise.all(
    Array.from({ length: 4 }, () => cliCommand(["validate", step, "--log-level", "silent"]).output()),
  );
  assert.ok(runs.every((run) => run.code === 1));
  assert.deepEqual((await readState(root)).state.validation_failures_total, { hash_mismatch: 1 });
});
