import assert from "node:assert/strict";
import { commitCheckpoint } from "../src/core/commit.ts";
import { CkptkitError } from "../src/errors.ts";
import { HashPool } from "../src/fs/hash_pool.ts";
import type { RegionDigest } from "../src/fs/hashing.ts";
import { MANIFEST_NAME } from "../src/core/layout.ts";
import { manifestDigest } from "../src/core/manifest.ts";
import type { ProblemReason } from "../src/problems.ts";
import { sealCheckpoint } from "../src/core/seal.ts";
import { validateCheckpoint } from "../src/core/validate.ts";
import { copyTree, FIXTURES, flipByte, tempDir, truncateFile } from "./_helpers.ts";

/** Commits real checkpoint files written by PyTorch and safetensors into `root` as step-10. */
async function committedFixture(
  root: string,
  algorithm: "sha256" | "xxh128" = "sha256",
): Promise<string> {
  const staging = `${root}/.staging-fixture`;
  await Deno.mkdir(`${staging}/legacy`, { recursive: true });
  await Deno.copyFile(`${FIXTURES}/torch-zip/test.pt`, `${staging}/model.pt`);
  await Deno.copyFile(
    `${FIXTURES}/safetensors/voices.safetensors`,
    `${staging}/voices.safetensors`,
  );
  await Deno.copyFile(
    `${FIXTURES}/torch-legacy/linear_state.bin`,
    `${staging}/legacy/linear_state.bin`,
  );
  const result = await commitCheckpoint(staging, {
    root,
    step: 10,
    jobId: "job",
    runId: "run",
    algorithm,
  });
  return result.path;
}

function reasons(
  result: { problems: { reason: ProblemReason; path: string }[] },
): string[] {
  return result.problems.map((p) => `${p.reason}:${p.path}`);
}

async function rewriteManifest(
  dir: string,
  edit: (raw: Record<string, unknown>) => void,
): Promise<void> {
  const raw = JSON.parse(await Deno.readTextFile(`${dir}/${MANIFEST_NAME}`));
  edit(raw);
  raw.manifest_digest = await manifestDigest(raw);
  await Deno.writeTextFile(`${dir}/${MANIFEST_NAME}`, JSON.stringify(raw));
}

Deno.test("a freshly committed checkpoint of real files validates at every depth", async () => {
  await using tmp = await tempDir();
  const root = tmp.path;
  const path = await committedFixture(root);
  for (const depth of ["fast", "sample", "full"] as const) {
    const result = await validateCheckpoint(path, { depth });
    assert.deepEqual(result.problems, [], depth);
    assert.equal(result.ok, true);
    assert.equal(result.step, 10);
    assert.equal(result.files_checked, 3);
    assert.equal(result.job_id, "job");
  }
  const full = await validateCheckpoint(path);
  assert.equal(full.bytes_checked, 1165 + 291806 + 569);
  assert.equal(
    (await validateCheckpoint(path, { depth: "fast" })).bytes_checked,
    0,
  );
});

Deno.test("a flipped byte is caught by full validation as hash_mismatch, not by fast", async () => {
  await using tmp = await tempDir();
  const root = tmp.path;
  const path = await committedFixture(root);
  await flipByte(`${path}/model.pt`, 600);
  assert.equal((await validateCheckpoint(path, { depth: "fast" })).ok, true);
  const full = await validateCheckpoint(path);
  assert.deepEqual(reasons(full), ["hash_mismatch:model.pt"]);
  assert.match(
    full.problems[0].detail,
    /^sha256 is [0-9a-f]{64}, manifest says [0-9a-f]{64}$/,
  );
});

Deno.test("xxh128 manifests catch a flipped byte too", async () => {
  await using tmp = await tempDir();
  const root = tmp.path;
  const path = await committedFixture(root, "xxh128");
  const manifest = JSON.parse(
    await Deno.readTextFile(`${path}/${MANIFEST_NAME}`),
  );
  assert.equal(manifest.hash.algorithm, "xxh128");
  await flipByte(`${path}/legacy/linear_state.bin`, -1);
  assert.deepEqual(reasons(await validateCheckpoint(path)), [
    "hash_mismatch:legacy/linear_state.bin",
  ]);
});

Deno.test("sampled validation catches a flipped byte inside a sampled region and reads only the regions", async () => {
  await using tmp = await tempDir();
  const root = tmp.path;
  const path = await committedFixture(root);
  await flipByte(`${path}/voices.safetensors`, -10);
  const sampled = await validateCheckpoint(path, {
    depth: "sample",
    sampleBytes: 65536,
  });
  assert.deepEqual(reasons(sampled), ["hash_mismatch:voices.safetensors"]);
  assert.match(
    sampled.problems[0].detail,
    /sampled region at offset 226270 \(65536 bytes\)/,
  );
  // voices: 5 regions of 64 KiB; the small files are sampled whole.
  assert.equal(sampled.bytes_checked, 5 * 65536 + 1165 + 569);
});

Deno.test("a truncated file is caught by fast validation as size_mismatch", async () => {
  await using tmp = await tempDir();
  const root = tmp.path;
  const path = await committedFixture(root);
  await truncateFile(`${path}/voices.safetensors`, 1000);
  const fast = await validateCheckpoint(path, { depth: "fast" });
  assert.deepEqual(reasons(fast), ["size_mismatch:voices.safetensors"]);
  assert.equal(
    fast.problems[0].detail,
    "size is 1000 bytes, manifest says 291806",
  );
});

Deno.test("a missing file and an extra file are both reported in one run", async () => {
  await using tmp = await tempDir();
  const root = tmp.path;
  const path = await committedFixture(root);
  await Deno.remove(`${path}/model.pt`);
  await Deno.writeTextFile(`${path}/legacy/notes.txt`, "not in the manifest");
  const result = await validateCheckpoint(path, { depth: "fast" });
  assert.deepEqual(reasons(result), [
    "unexpected_file:legacy/notes.txt",
    "file_missing:model.pt",
  ]);
});

Deno.test("a damaged manifest is manifest_corrupt and nothing in it is trusted", async () => {
  await using tmp = await tempDir();
  const root = tmp.path;
  const path = await committedFixture(root);
  const text = await Deno.readTextFile(`${path}/${MANIFEST_NAME}`);
  await Deno.writeTextFile(
    `${path}/${MANIFEST_NAME}`,
    text.replace('"size":1165', '"size":1166'),
  );
  const result = await validateCheckpoint(path);
  assert.ok(result.problems.length > 0);
  assert.ok(
    result.problems.every((p) => p.reason === "manifest_corrupt" && p.path === MANIFEST_NAME),
  );
  assert.ok(result.problems.some((p) => /self-digest mismatch/.test(p.detail)));
  assert.equal(result.bytes_checked, 0);

  await Deno.writeTextFile(`${path}/${MANIFEST_NAME}`, text.slice(0, 100));
  assert.match(
    (await validateCheckpoint(path)).problems[0].detail,
    /not valid JSON/,
  );
});

Deno.test("a missing manifest is manifest_missing", async () => {
  await using tmp = await tempDir();
  const root = tmp.path;
  const path = await committedFixture(root);
  await Deno.remove(`${path}/${MANIFEST_NAME}`);
  assert.deepEqual(reasons(await validateCheckpoint(path)), [
    `manifest_missing:${MANIFEST_NAME}`,
  ]);
});

Deno.test("a re-signed manifest with ../ and absolute paths is unsafe_path and opens nothing outside", async () => {
  await using tmp = await tempDir();
  const root = tmp.path;
  const path = await committedFixture(root);
  await Deno.writeTextFile(`${root}/secret.txt`, "outside the checkpoint");
  await rewriteManifest(path, (raw) => {
    const files = raw.files as Record<string, unknown>[];
    files.push({
      path: "../secret.txt",
      size: 22,
      digest: "0".repeat(64),
      samples: [],
    });
    files.push({
      path: `${root}/secret.txt`,
      size: 22,
      digest: "0".repeat(64),
      samples: [],
    });
    raw.total_bytes = (raw.total_bytes as number) + 44;
  });
  const result = await validateCheckpoint(path);
  assert.deepEqual(
    reasons(result).sort(),
    [`unsafe_path:${root}/secret.txt`, "unsafe_path:../secret.txt"].sort(),
  );
  assert.equal(
    result.bytes_checked,
    1165 + 291806 + 569,
    "only the checkpoint's own files were read",
  );
});

Deno.test("a symlink pointing out of the checkpoint is reported, never followed", async () => {
  await using tmp = await tempDir();
  const root = tmp.path;
  const path = await committedFixture(root);
  await Deno.copyFile(`${path}/model.pt`, `${root}/model-copy.pt`);
  await Deno.remove(`${path}/model.pt`);
  // The link's target has the right content: following it would hide the damage.
  await Deno.symlink(`${root}/model-copy.pt`, `${path}/model.pt`);
  const result = await validateCheckpoint(path);
  assert.deepEqual(reasons(result), ["symlink:model.pt"]);
  assert.match(
    result.problems[0].detail,
    /symbolic link to .*model-copy\.pt.*never followed/,
  );
});

Deno.test("a folder replaced by a symlink to a folder outside is reported once, and its files are not read", async () => {
  await using tmp = await tempDir();
  const root = tmp.path;
  const path = await committedFixture(root);
  await Deno.rename(`${path}/legacy`, `${root}/legacy-outside`);
  await Deno.symlink(`${root}/legacy-outside`, `${path}/legacy`);
  const result = await validateCheckpoint(path);
  assert.deepEqual(reasons(result), ["symlink:legacy"]);
});

Deno.test("a FIFO where a file should be is not_regular_file and validation does not hang", async () => {
  await using tmp = await tempDir();
  const root = tmp.path;
  const path = await committedFixture(root);
  await Deno.remove(`${path}/model.pt`);
  const mkfifo = await new Deno.Command("mkfifo", {
    args: [`${path}/model.pt`],
  }).output();
  assert.equal(mkfifo.code, 0);
  const result = await validateCheckpoint(path);
  assert.deepEqual(reasons(result), ["not_regular_file:model.pt"]);
});

Deno.test("a file replaced by a folder is reported, not crashed on", async () => {
  await using tmp = await tempDir();
  const root = tmp.path;
  const path = await committedFixture(root);
  await Deno.remove(`${path}/model.pt`);
  await Deno.mkdir(`${path}/model.pt`);
  await Deno.writeTextFile(`${path}/model.pt/x`, "x");
  const result = await validateCheckpoint(path);
  assert.deepEqual(reasons(result), [
    "file_missing:model.pt",
    "unexpected_file:model.pt/x",
  ]);
});

Deno.test("validating a path that is not a folder throws a typed error", async () => {
  await using tmp = await tempDir();
  const root = tmp.path;
  await assert.rejects(
    () => validateCheckpoint(`${root}/nope`),
    /does not exist/,
  );
  await Deno.writeTextFile(`${root}/file`, "x");
  await assert.rejects(
    () => validateCheckpoint(`${root}/file`),
    /is not a folder/,
  );
});

Deno.test("a copy of a checkpoint under another step's name is step_mismatch at every depth; the original and a plainly named copy are not", async () => {
  await using tmp = await tempDir();
  const original = await committedFixture(tmp.path);
  const copy = `${tmp.path}/step-30`;
  await copyTree(original, copy);
  for (const depth of ["fast", "sample", "full", "deep"] as const) {
    const result = await validateCheckpoint(copy, { depth });
    assert.deepEqual(reasons(result), [`step_mismatch:${MANIFEST_NAME}`], depth);
    assert.match(result.problems[0].detail, /folder step-30 .* manifest says step 10/, depth);
    assert.equal(result.ok, false);
    assert.equal((await validateCheckpoint(copy + "/", { depth })).ok, false, `${depth}, trailing slash`);
    assert.equal((await validateCheckpoint(original, { depth })).ok, true, depth);
  }
  // Folders not named like a checkpoint (a backup, a staging folder) say nothing about the step.
  for (const name of ["backup", ".staging-step-30-1-abcd", "step-030"]) {
    await copyTree(original, `${tmp.path}/${name}`);
    assert.deepEqual(reasons(await validateCheckpoint(`${tmp.path}/${name}`, { depth: "fast" })), [], name);
  }
  // Inside the folder, "." is still step-30.
  const here = Deno.cwd();
  try {
    Deno.chdir(copy);
    assert.deepEqual(reasons(await validateCheckpoint(".", { depth: "fast" })), [`step_mismatch:${MANIFEST_NAME}`]);
  } finally {
    Deno.chdir(here);
  }
});

Deno.test("a manifest re-signed with another step inside step-10 is step_mismatch, even with --fast", async () => {
  await using tmp = await tempDir();
  const path = await committedFixture(tmp.path);
  await rewriteManifest(path, (raw) => raw.step = 11);
  const result = await validateCheckpoint(path, { depth: "fast" });
  assert.deepEqual(reasons(result), [`step_mismatch:${MANIFEST_NAME}`]);
  assert.equal(result.step, 11);
});

Deno.test("a sealed folder of another tool must agree with the step its name says; seal refuses a --step that contradicts it", async () => {
  await using tmp = await tempDir();
  for (const name of ["checkpoint-500", "global_step500"]) {
    const dir = `${tmp.path}/${name}`;
    await Deno.mkdir(dir);
    await Deno.writeTextFile(`${dir}/weights.bin`, "weights");
    await assert.rejects(
      () => sealCheckpoint(dir, { step: 7 }),
      (err) => err instanceof CkptkitError && err.reason === "invalid_argument" && /500/.test(err.message),
      name,
    );
    assert.equal((await sealCheckpoint(dir, { step: 500 })).step, 500);
    assert.equal((await validateCheckpoint(dir, { depth: "fast" })).ok, true, name);
    await rewriteManifest(dir, (raw) => raw.step = 7);
    assert.deepEqual(reasons(await validateCheckpoint(dir, { depth: "fast" })), [`step_mismatch:${MANIFEST_NAME}`]);
  }
  // A name that says no step leaves the step to --step.
  const final = `${tmp.path}/final`;
  await Deno.mkdir(final);
  await Deno.writeTextFile(`${final}/weights.bin`, "weights");
  await sealCheckpoint(final, { step: 7 });
  assert.equal((await validateCheckpoint(final)).ok, true);
});

Deno.test("full validation checks the sampled digests it reads anyway: one verdict with --sample-bytes and full", async () => {
  await using tmp = await tempDir();
  const path = await committedFixture(tmp.path);
  await rewriteManifest(path, (raw) => {
    const files = raw.files as { path: string; size: number; samples?: RegionDigest[] }[];
    const model = files.find((f) => f.path === "model.pt")!;
    // A file within one region has no samples (format 2): its region is recorded here explicitly, and wrongly.
    model.samples ??= [{ offset: 0, length: model.size, digest: "" }];
    model.samples[0].digest = "0".repeat(64);
  });
  const sampled = await validateCheckpoint(path, { depth: "sample" });
  assert.deepEqual(reasons(sampled), ["hash_mismatch:model.pt"]);
  for (const depth of ["full", "deep"] as const) {
    const full = await validateCheckpoint(path, { depth });
    assert.deepEqual(reasons(full), ["hash_mismatch:model.pt"], depth);
    assert.match(full.problems[0].detail, /sampled region at offset 0/);
    const size = (await Deno.stat(`${path}/model.pt`)).size;
    assert.ok(full.bytes_checked >= size, "every byte is still read");
  }
  // The hashing workers check the recorded regions too.
  using pool = new HashPool(2);
  const pooled = await validateCheckpoint(path, { hasher: pool });
  assert.deepEqual(reasons(pooled), ["hash_mismatch:model.pt"]);
});
