import assert from "node:assert/strict";
import { commitCheckpoint } from "../src/core/commit.ts";
import { HashPool, mainThreadHasher, POOL_MIN_BYTES } from "../src/fs/hash_pool.ts";
import { hashFile, READ_CHUNK_BYTES } from "../src/fs/hashing.ts";
import { validateCheckpoint } from "../src/core/validate.ts";
import { FIXTURES, flipByte, tempDir } from "./_helpers.ts";

const SIZES = [0, 1, 4095, READ_CHUNK_BYTES - 1, READ_CHUNK_BYTES, READ_CHUNK_BYTES + 1, 3 * READ_CHUNK_BYTES + 17];

async function writeFiles(dir: string): Promise<string[]> {
  const paths: string[] = [];
  for (const size of SIZES) {
    const path = `${dir}/f-${size}.bin`;
    await Deno.writeFile(path, new Uint8Array(size).map((_, i) => (i * 131 + size) & 0xff));
    paths.push(path);
  }
  return paths;
}

Deno.test("the worker pool gives the same digests and samples as hashing on the main thread", async () => {
  await using tmp = await tempDir();
  const paths = [...await writeFiles(tmp.path), `${FIXTURES}/safetensors/voices.safetensors`];
  using pool = new HashPool(3);
  for (const algorithm of ["sha256", "xxh128"] as const) {
    const serial = [];
    for (const path of paths) serial.push(await mainThreadHasher.hashFile(path, { algorithm, sampleBytes: 4096 }));
    const parallel = await Promise.all(paths.map((path) => pool.hashFile(path, { algorithm, sampleBytes: 4096 })));
    assert.deepEqual(parallel, serial, algorithm);
    const regions = serial.at(-1)!.samples;
    assert.deepEqual(await pool.hashRegions(paths.at(-1)!, regions, algorithm), regions);
  }
});

Deno.test("the worker pool reports the same typed errors: missing file, a folder, a file shrinking mid-read", async () => {
  await using tmp = await tempDir();
  using pool = new HashPool(2);
  for (const hasher of [mainThreadHasher, pool]) {
    await assert.rejects(() => hasher.hashFile(`${tmp.path}/missing.bin`, {}), Deno.errors.NotFound);
    await assert.rejects(() => hasher.hashFile(tmp.path, {}));
    const big = `${tmp.path}/big.bin`;
    await Deno.writeFile(big, new Uint8Array(32 * 1024 * 1024).fill(1));
    let cut = false;
    await assert.rejects(
      () =>
        hasher.hashFile(big, {
          onProgress: () => {
            if (!cut) {
              cut = true;
              Deno.truncateSync(big, 1024 * 1024);
            }
          },
        }),
      (err: Error & { reason?: string }) => {
        assert.equal(err.reason, "file_changed", err.message);
        assert.match(err.message, /changed while it was read/);
        return true;
      },
    );
    assert.ok(cut, "the file was cut while it was being read");
  }
  // The pool keeps working after errors.
  await Deno.writeTextFile(`${tmp.path}/ok.txt`, "abc");
  assert.equal((await pool.hashFile(`${tmp.path}/ok.txt`, {})).digest, (await hashFile(`${tmp.path}/ok.txt`)).digest);
});

Deno.test("validation through the pool finds exactly what serial validation finds", async () => {
  await using tmp = await tempDir();
  const staging = `${tmp.path}/staging`;
  await Deno.mkdir(staging);
  const shard = POOL_MIN_BYTES / 2 + 1;
  for (let i = 0; i < 3; i++) await Deno.writeFile(`${staging}/shard-${i}.bin`, new Uint8Array(shard).fill(i + 1));
  await Deno.writeTextFile(`${staging}/small.json`, "{}");
  const { path } = await commitCheckpoint(staging, { root: `${tmp.path}/root`, step: 1, concurrency: 2 });
  await flipByte(`${path}/shard-1.bin`, shard - 5);
  await Deno.truncate(`${path}/small.json`, 1);
  const serial = await validateCheckpoint(path, { concurrency: 1 });
  const parallel = await validateCheckpoint(path, { concurrency: 2 });
  assert.deepEqual(parallel.problems, serial.problems);
  assert.deepEqual(parallel.problems.map((p) => `${p.reason}:${p.path}`), [
    "hash_mismatch:shard-1.bin",
    "size_mismatch:small.json",
  ]);
  assert.equal(parallel.bytes_checked, serial.bytes_checked);
});

Deno.test("a closed pool refuses work and bad sizes are refused up front", async () => {
  const pool = new HashPool(1);
  pool.close();
  await assert.rejects(() => pool.hashFile("/etc/hostname", {}), /closed/);
  assert.throws(() => new HashPool(0), /'size' must be a positive integer: current value is 0/);
});
