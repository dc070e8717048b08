import assert from "node:assert/strict";
import { readLatest } from "../src/core/latest.ts";
import { FIXTURES, names, runCli, tempDir } from "./_helpers.ts";

/** A Hugging Face Trainer output folder: checkpoint-N with safetensors weights and trainer_state.json. */
async function trainerRoot(root: string, steps: number[]): Promise<void> {
  for (const step of steps) {
    const dir = `${root}/checkpoint-${step}`;
    await Deno.mkdir(dir, { recursive: true });
    await Deno.copyFile(`${FIXTURES}/safetensors/voices.safetensors`, `${dir}/model.safetensors`);
    await Deno.copyFile(`${FIXTURES}/torch-zip/test.pt`, `${dir}/optimizer.pt`);
    await Deno.copyFile(`${FIXTURES}/torch-zip/test_with_key.pt`, `${dir}/scheduler.pt`);
    await Deno.writeTextFile(`${dir}/trainer_state.json`, JSON.stringify({ global_step: step }));
  }
}

Deno.test("scan and resume adopt a Hugging Face root: structural checks with --deep, marked as such", async () => {
  await using tmp = await tempDir();
  const root = tmp.path;
  await trainerRoot(root, [100, 200, 300]);
  const plain = await runCli(["scan", root, "--json"]);
  assert.equal(plain.code, 1, "without --deep, checkpoints without a manifest cannot be trusted");
  assert.ok(
    JSON.parse(plain.stdout).checkpoints.every((c: { problems: { reason: string }[] }) =>
      c.problems[0].reason === "manifest_missing"
    ),
  );
  const deep = await runCli(["scan", root, "--deep", "--json"]);
  assert.equal(deep.code, 0, deep.stdout);
  const doc = JSON.parse(deep.stdout);
  assert.deepEqual(doc.checkpoints.map((c: { step: number }) => c.step), [300, 200, 100]);
  assert.ok(
    doc.checkpoints.every((c: { manifest_backed: boolean; layout: string }) =>
      !c.manifest_backed && c.layout === "hf-trainer"
    ),
  );
  const text = await runCli(["scan", root, "--deep"]);
  assert.match(text.stdout, /OK .*checkpoint-300 .*\[no manifest: formats and layout only\]/);

  assert.equal((await runCli(["resume", root, "--deep"])).stdout, `${root}/checkpoint-300\n`);
  await Deno.truncate(`${root}/checkpoint-300/model.safetensors`, 4000); // a save that died mid-write
  const fallback = JSON.parse((await runCli(["resume", root, "--deep", "--json"])).stdout);
  assert.equal(fallback.path, `${root}/checkpoint-200`);
  assert.deepEqual(fallback.rejected[0].reasons, ["format_invalid"]);
});

Deno.test("seal --all seals every sound checkpoint of a foreign root and refuses the damaged one", async () => {
  await using tmp = await tempDir();
  const root = tmp.path;
  await trainerRoot(root, [100, 200, 300]);
  await Deno.truncate(`${root}/checkpoint-300/optimizer.pt`, 600);
  const run = await runCli(["seal", root, "--all", "--json"]);
  assert.equal(run.code, 1, "one was refused");
  const doc = JSON.parse(run.stdout);
  assert.deepEqual(doc.sealed.map((s: { step: number }) => s.step), [100, 200]);
  assert.deepEqual(doc.refused.map((r: { name: string }) => r.name), ["checkpoint-300"]);
  assert.ok((await names(`${root}/checkpoint-200`)).includes("ckptkit.manifest.json"));
  assert.ok(!(await names(`${root}/checkpoint-300`)).includes("ckptkit.manifest.json"), "damage is never sealed");
  const again = await runCli(["seal", root, "--all", "--json"]);
  assert.deepEqual(JSON.parse(again.stdout).already_sealed, ["checkpoint-100", "checkpoint-200"]);
  const validate = await runCli(["validate", `${root}/checkpoint-200`]);
  assert.equal(validate.code, 0, "sealed checkpoints are now manifest-backed");
});

Deno.test("gc never deletes another tool's checkpoints; DeepSpeed's latest tag is understood", async () => {
  await using tmp = await tempDir();
  const root = tmp.path;
  await trainerRoot(root, [100, 200]);
  const run = await runCli(["gc", root, "--keep-last", "1", "--json"]);
  assert.equal(run.code, 0, run.stderr);
  assert.deepEqual(JSON.parse(run.stdout).delete, []);
  assert.deepEqual((await names(root)).filter((n) => n.startsWith("checkpoint-")), [
    "checkpoint-100",
    "checkpoint-200",
  ]);

  await Deno.mkdir(`${root}/global_step20`);
  await Deno.writeTextFile(`${root}/latest`, "global_step20");
  const latest = await readLatest(root);
  assert.equal(latest.state, "ok");
  assert.equal(latest.step, 20);
  await Deno.writeTextFile(`${root}/latest`, "../../etc");
  assert.equal((await readLatest(root)).state, "invalid", "a path is never a tag");
});
