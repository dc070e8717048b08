import assert from "node:assert/strict";
import { commitCheckpoint } from "../src/core/commit.ts";
import { sealCheckpoint } from "../src/core/seal.ts";
import { validateCheckpoint } from "../src/core/validate.ts";
import { FIXTURES, flipByte, runCli, tempDir } from "./_helpers.ts";

async function allFixtures(dir: string): Promise<string[]> {
  const copied: string[] = [];
  for (const kind of ["torch-zip", "torch-legacy", "safetensors"]) {
    for await (const entry of Deno.readDir(`${FIXTURES}/${kind}`)) {
      await Deno.mkdir(`${dir}/${kind}`, { recursive: true });
      await Deno.copyFile(`${FIXTURES}/${kind}/${entry.name}`, `${dir}/${kind}/${entry.name}`);
      copied.push(`${kind}/${entry.name}`);
    }
  }
  return copied.sort();
}

Deno.test("every real fixture validates --deep inside a committed checkpoint", async () => {
  await using tmp = await tempDir();
  const copied = await allFixtures(`${tmp.path}/stage`);
  assert.equal(copied.length, 21, "every fixture of SOURCES.md");
  const { path } = await commitCheckpoint(`${tmp.path}/stage`, { root: `${tmp.path}/root`, step: 1 });
  const result = await validateCheckpoint(path, { depth: "deep" });
  assert.deepEqual(result.problems, []);
  assert.equal(result.manifest_backed, true);
  assert.equal(result.depth, "deep");
});

Deno.test("deep catches a torch file truncated before it was sealed, which full validation cannot", async () => {
  await using tmp = await tempDir();
  const dir = `${tmp.path}/checkpoint-100`;
  await Deno.mkdir(dir);
  await Deno.copyFile(`${FIXTURES}/torch-zip/test_with_key.pt`, `${dir}/model.pt`);
  await Deno.truncate(`${dir}/model.pt`, 900); // disk full mid-save, then sealed as if fine
  await sealCheckpoint(dir);
  assert.equal((await validateCheckpoint(dir)).ok, true, "the hashes match the broken file");
  const deep = await validateCheckpoint(dir, { depth: "deep" });
  assert.equal(deep.ok, false);
  assert.ok(deep.problems.every((p) => p.reason === "format_invalid" && p.path === "model.pt"));
  assert.ok(deep.problems.some((p) => /central directory/.test(p.detail)), JSON.stringify(deep.problems));
});

Deno.test("deep names the zip entry whose CRC does not match (torch.load would load it silently)", async () => {
  await using tmp = await tempDir();
  const dir = `${tmp.path}/step-3`;
  await Deno.mkdir(dir);
  const file = `${dir}/model.pt`;
  await Deno.copyFile(`${FIXTURES}/torch-zip/fortran_tensor_3d.pth`, file);
  const bytes = await Deno.readFile(file);
  // Flip a byte inside the data of the first stored data/ entry.
  const name = new TextEncoder().encode("/data/0");
  let at = -1;
  for (let i = 0; i < bytes.length - name.length && at < 0; i++) {
    if (name.every((b, j) => bytes[i + j] === b) && bytes[i - 30 - 0] !== undefined) at = i;
  }
  assert.ok(at > 0);
  await flipByte(file, at + name.length + 80);
  await sealCheckpoint(dir, { step: 3 });
  const deep = await validateCheckpoint(dir, { depth: "deep" });
  assert.deepEqual(deep.problems.map((p) => p.reason), ["format_invalid"]);
  assert.match(deep.problems[0].detail, /CRC/);
});

Deno.test("a Hugging Face folder without a manifest validates --deep on its layout, manifest_missing as a note", async () => {
  await using tmp = await tempDir();
  const dir = `${tmp.path}/checkpoint-500`;
  await Deno.mkdir(dir);
  await Deno.copyFile(`${FIXTURES}/safetensors/voices.safetensors`, `${dir}/model.safetensors`);
  await Deno.writeTextFile(`${dir}/trainer_state.json`, JSON.stringify({ global_step: 500 }));
  const ok = await runCli(["validate", dir, "--deep", "--json"]);
  assert.equal(ok.code, 0, ok.stdout);
  const doc = JSON.parse(ok.stdout);
  assert.equal(doc.manifest_backed, false);
  assert.equal(doc.layout, "hf-trainer");
  assert.ok(doc.notes.some((n: string) => n.startsWith("manifest_missing")));
  assert.equal((await runCli(["validate", dir])).code, 1, "without --deep a missing manifest is a failure");

  await Deno.writeTextFile(`${dir}/trainer_state.json`, JSON.stringify({ global_step: 400 }));
  const wrong = await runCli(["validate", dir, "--deep", "--json"]);
  assert.equal(wrong.code, 1);
  assert.match(JSON.parse(wrong.stdout).problems[0].detail, /global_step is 400/);

  await Deno.writeTextFile(`${dir}/trainer_state.json`, JSON.stringify({ global_step: 500 }));
  await Deno.truncate(`${dir}/model.safetensors`, 5000);
  const cut = JSON.parse((await runCli(["validate", dir, "--deep", "--json"])).stdout);
  assert.deepEqual(cut.problems.map((p: { reason: string; path: string }) => [p.reason, p.path]), [[
    "format_invalid",
    "model.safetensors",
  ]]);
});

Deno.test("scan --deep checks formats of every checkpoint; --deep conflicts with --sample-bytes", async () => {
  await using tmp = await tempDir();
  await allFixtures(`${tmp.path}/root/.staging-a`);
  await commitCheckpoint(`${tmp.path}/root/.staging-a`, { root: `${tmp.path}/root`, step: 1 });
  const run = await runCli(["scan", `${tmp.path}/root`, "--deep", "--json"]);
  assert.equal(run.code, 0, run.stdout);
  assert.equal(JSON.parse(run.stdout).depth, "deep");
  const conflict = await runCli(["validate", `${tmp.path}/root/step-1`, "--deep", "--sample-bytes", "64KiB"]);
  assert.equal(conflict.code, 2);
});
