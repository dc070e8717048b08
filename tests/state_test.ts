import assert from "node:assert/strict";
import { readState, statePath, updateState } from "../src/core/state.ts";
import { flipByte, runCli, tempDir, writeStep } from "./_helpers.ts";

Deno.test("commit records bytes written and the checkpoint as known-good", async () => {
  await using tmp = await tempDir();
  const root = tmp.path;
  await writeStep(root, 10);
  await writeStep(root, 20);
  const { state } = await readState(root);
  assert.ok(state.write_bytes_total >= 4 * 4096);
  assert.deepEqual(Object.keys(state.known_good).sort(), ["step-10", "step-20"]);
  assert.equal(state.known_good["step-20"].by, "commit");
  assert.equal(state.last_commit?.name, "step-20");
});

Deno.test("validate and scan count failures by reason and forget known-good checkpoints that fail", async () => {
  await using tmp = await tempDir();
  const root = tmp.path;
  const path = await writeStep(root, 10);
  await flipByte(`${path}/shard-0.bin`, 9);
  assert.equal((await runCli(["validate", path])).code, 1);
  assert.equal((await runCli(["scan", root])).code, 1);
  const { state } = await readState(root);
  assert.equal(
    state.validation_failures_total.hash_mismatch,
    1,
    "the same corruption counts once, however often it is found",
  );
  assert.equal(state.known_good["step-10"], undefined);
});

Deno.test("a damaged state file is rebuilt, never fatal", async () => {
  await using tmp = await tempDir();
  const root = tmp.path;
  await writeStep(root, 10);
  for (const junk of ["{not json", '{"version": 99}', "[]", ""]) {
    await Deno.writeTextFile(statePath(root), junk);
    const { state, rebuilt } = await readState(root);
    assert.equal(rebuilt, true, junk);
    assert.deepEqual(state.known_good, {});
    const run = await runCli(["resume", root, "--policy", "last-known-good"]);
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.stdout, `${root}/step-10\n`);
  }
  await writeStep(root, 20);
  assert.equal((await readState(root)).state.known_good["step-20"].step, 20);
});

Deno.test("concurrent state updates are serialised and none is lost", async () => {
  await using tmp = await tempDir();
  const root = tmp.path;
  await Promise.all(
    Array.from({ length: 20 }, () => updateState(root, (state) => void (state.write_bytes_total += 1))),
  );
  assert.equal((await readState(root)).state.write_bytes_total, 20);
});
