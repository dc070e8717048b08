/**
 * Many small files: batched hashing (one worker message per batch, blocking calls in the worker) must find exactly
 * what hashing file by file finds, hash every file once, and fsync every file before the manifest exists.
 */

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { commitCheckpoint } from "../src/core/commit.ts";
import { type FileHasher, HashPool, mainThreadHasher, POOL_MIN_FILES } from "../src/fs/hash_pool.ts";
import { hashFile, hashSmallFiles, type SmallFileJob, type SmallFileResult } from "../src/fs/hashing.ts";
import { readManifestFile } from "../src/core/manifest.ts";
import { validateCheckpoint } from "../src/core/validate.ts";
import { flipByte, tempDir } from "./_helpers.ts";

/** Enough files for the pool (at least `POOL_MIN_FILES`), in folders of 100, sizes 0 to 4 KiB and one of 1.5 MiB. */
const FILES = POOL_MIN_FILES + 404;

function content(i: number): Uint8Array {
  const size = i === 7 ? 1536 * 1024 : (i * 37) % 4097;
  return new Uint8Array(size).map((_, k) => (k * 31 + i) & 0xff);
}

function relative(i: number): string {
  return `d${String(Math.floor(i / 100)).padStart(3, "0")}/f${String(i).padStart(5, "0")}.bin`;
}

async function stage(dir: string): Promise<void> {
  for (let i = 0; i < FILES; i++) {
    const path = `${dir}/${relative(i)}`;
    if (i % 100 === 0) await Deno.mkdir(path.slice(0, path.lastIndexOf("/")), { recursive: true });
    Deno.writeFileSync(path, content(i));
  }
}

/** Counts the files a hasher is asked for, whether one by one or in batches. */
function counting(inner: FileHasher): { hasher: FileHasher; asked: Map<string, number> } {
  const asked = new Map<string, number>();
  const count = (path: string) => asked.set(path, (asked.get(path) ?? 0) + 1);
  return {
    asked,
    hasher: {
      hashFile: (path, options) => {
        count(path);
        return inner.hashFile(path, options);
      },
      hashRegions: (path, regions, algorithm) => inner.hashRegions(path, regions, algorithm),
      hashBatch: (jobs, options) => {
        for (const job of jobs) count(job.path);
        return inner.hashBatch!(jobs, options);
      },
    },
  };
}

Deno.test("a commit of thousands of small files records every file once with its own digest", async () => {
  await using tmp = await tempDir();
  const staging = `${tmp.path}/root/.staging-1`;
  await stage(staging);
  const { path } = await commitCheckpoint(staging, { root: `${tmp.path}/root`, step: 1, concurrency: 2 });
  const read = await readManifestFile(path);
  assert.ok(!("problem" in read));
  const files = JSON.parse(read.text).files as { path: string; size: number; digest: string }[];
  assert.equal(files.length, FILES);
  assert.equal(new Set(files.map((f) => f.path)).size, FILES);
  const byPath = new Map(files.map((f) => [f.path, f]));
  for (let i = 0; i < FILES; i++) {
    const bytes = content(i);
    const entry = byPath.get(relative(i));
    assert.ok(entry, relative(i));
    assert.equal(entry.size, bytes.length);
    assert.equal(entry.digest, createHash("sha256").update(bytes).digest("hex"), relative(i));
  }
});

Deno.test("validation of thousands of small files hashes each once and finds every damage, batched or not", async () => {
  await using tmp = await tempDir();
  const staging = `${tmp.path}/root/.staging-1`;
  await stage(staging);
  const { path } = await commitCheckpoint(staging, { root: `${tmp.path}/root`, step: 1, concurrency: 2 });

  using pool = new HashPool(2);
  const clean = counting(pool);
  const ok = await validateCheckpoint(path, { concurrency: 2, hasher: clean.hasher });
  assert.ok(ok.ok, JSON.stringify(ok.problems.slice(0, 3)));
  assert.equal(ok.files_checked, FILES);
  assert.equal(clean.asked.size, FILES, "every file is hashed");
  assert.deepEqual([...new Set(clean.asked.values())], [1], "and only once");

  await Deno.remove(`${path}/${relative(100)}`);
  await Deno.truncate(`${path}/${relative(2001)}`, 3);
  await flipByte(`${path}/${relative(3002)}`, 5);
  await flipByte(`${path}/${relative(7)}`, 1024 * 1024 + 3);
  await Deno.remove(`${path}/${relative(4003)}`);
  await Deno.symlink(`${path}/${relative(4004)}`, `${path}/${relative(4003)}`);
  await Deno.writeFile(`${path}/${relative(9)}`, new Uint8Array(content(9).length + 1));
  await Deno.writeTextFile(`${path}/d000/extra.bin`, "x");
  const expected = [
    `file_missing:${relative(100)}`,
    `size_mismatch:${relative(2001)}`,
    `hash_mismatch:${relative(3002)}`,
    `hash_mismatch:${relative(7)}`,
    `symlink:${relative(4003)}`,
    `size_mismatch:${relative(9)}`,
    "unexpected_file:d000/extra.bin",
  ].sort();

  const damaged = counting(pool);
  const batched = await validateCheckpoint(path, { concurrency: 2, hasher: damaged.hasher });
  assert.deepEqual(batched.problems.map((p) => `${p.reason}:${p.path}`).sort(), expected);
  assert.deepEqual([...new Set(damaged.asked.values())], [1], "no file hashed twice");
  assert.ok(!damaged.asked.has(`${path}/${relative(4003)}`), "the symlink is never opened");

  // File by file on the main thread (a hasher without batches) finds the same, in the same order.
  const oneByOne = await validateCheckpoint(path, {
    concurrency: 1,
    hasher: { hashFile: mainThreadHasher.hashFile, hashRegions: mainThreadHasher.hashRegions },
  });
  assert.deepEqual(oneByOne.problems, batched.problems);
  assert.equal(oneByOne.bytes_checked, batched.bytes_checked);
  // The default: a pool chosen by the number of files.
  assert.deepEqual((await validateCheckpoint(path)).problems, batched.problems);

  // Sampled depth: a small file's one region is the whole file, so the flipped byte is found there too.
  const sampled = await validateCheckpoint(path, { depth: "sample" });
  assert.deepEqual(
    sampled.problems.map((p) => `${p.reason}:${p.path}`).sort(),
    expected.filter((e) => e !== `hash_mismatch:${relative(7)}`),
  );
  const fast = await validateCheckpoint(path, { depth: "fast" });
  assert.deepEqual(
    fast.problems.map((p) => `${p.reason}:${p.path}`).sort(),
    expected.filter((e) => !e.startsWith("hash_mismatch")),
  );
});

Deno.test("hashSmallFiles gives hashFile's digests and samples, and one typed result per file", async () => {
  await using tmp = await tempDir();
  const sizes = [0, 1, 4095, 4096, 4097, 65536, 1024 * 1024];
  const jobs: SmallFileJob[] = [];
  for (const size of sizes) {
    const path = `${tmp.path}/f-${size}.bin`;
    await Deno.writeFile(path, new Uint8Array(size).map((_, k) => (k * 7 + size) & 0xff));
    jobs.push({ path, size });
  }
  using pool = new HashPool(2);
  for (const algorithm of ["sha256", "xxh128"] as const) {
    for (const sync of [false, true]) {
      const expected = await Promise.all(jobs.map((job) => hashFile(job.path, { algorithm, sampleBytes: 4096 })));
      for (const batch of [mainThreadHasher.hashBatch!, pool.hashBatch.bind(pool)]) {
        const found = await batch(jobs, { algorithm, sampleBytes: 4096, sync });
        assert.deepEqual(
          found.map((r) => "file" in r && { ...r.file, mtimeMs: 0 }),
          expected.map((e) => ({ ...e, mtimeMs: 0 })),
          `${algorithm} sync=${sync}`,
        );
        if (sync) assert.deepEqual(found.map((r) => "file" in r && r.file.mtimeMs), expected.map((e) => e.mtimeMs));
      }
    }
  }
  // Recorded regions are hashed instead of sampled ones.
  const [withRegions] = await hashSmallFiles([{ ...jobs[4], regions: [{ offset: 1, length: 10 }] }]);
  assert.ok("file" in withRegions);
  assert.deepEqual(
    withRegions.file.samples,
    (await hashFile(jobs[4].path, { regions: [{ offset: 1, length: 10 }] })).samples,
  );

  const odd: SmallFileJob[] = [
    { path: `${tmp.path}/missing.bin`, size: 3 },
    { path: tmp.path, size: 4096 },
    { path: jobs[2].path, size: 17 },
    jobs[1],
  ];
  for (const batch of [mainThreadHasher.hashBatch!, pool.hashBatch.bind(pool)]) {
    for (const sync of [false, true]) {
      const [missing, folder, resized, fine]: SmallFileResult[] = await batch(odd, { sync });
      assert.ok("error" in missing && missing.error instanceof Deno.errors.NotFound);
      assert.ok("error" in folder || folder.file.digest === "", "a folder is an error or another size, never a file");
      assert.ok("file" in resized);
      assert.deepEqual([resized.file.size, resized.file.digest], [4095, ""], "another size: nothing hashed");
      assert.ok("file" in fine && fine.file.size === 1 && fine.file.digest.length === 64);
    }
  }
});
