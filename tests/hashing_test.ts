import assert from "node:assert/strict";
import { createHasher, hashFile, hashRegions, MAX_SAMPLE_REGIONS, sampleRegions } from "../src/fs/hashing.ts";
import { FIXTURES, tempDir } from "./_helpers.ts";

Deno.test("hashFile matches the sha256 published for a real fixture", async () => {
  // sha256 from tests/fixtures/SOURCES.md
  const found = await hashFile(`${FIXTURES}/safetensors/voices.safetensors`);
  assert.equal(found.size, 291806);
  assert.equal(
    found.digest,
    "a00ce33c297681eaa7b382cade3813e150807473c9b4a3710a3ce4343b823463",
  );
});

Deno.test("hashFile matches sha256sum on a multi-chunk file", async () => {
  await using tmp = await tempDir();
  const dir = tmp.path;
  const data = new Uint8Array(5 * 1024 * 1024 + 123).map((_, i) => (i * 31) & 0xff);
  await Deno.writeFile(`${dir}/big.bin`, data);
  const out = await new Deno.Command("sha256sum", { args: [`${dir}/big.bin`] })
    .output();
  const expected = new TextDecoder().decode(out.stdout).split(" ")[0];
  assert.equal((await hashFile(`${dir}/big.bin`)).digest, expected);
});

Deno.test("xxh128 gives the reference digest of the empty input", async () => {
  const hasher = await createHasher("xxh128");
  assert.equal(hasher.digest(), "99aa06d3014798d86001c324468d497f");
});

Deno.test("sampleRegions covers head and tail, stays inside the file, and is bounded", () => {
  assert.deepEqual(sampleRegions(0, 64), []);
  assert.deepEqual(sampleRegions(10, 64), [{ offset: 0, length: 10 }]);
  assert.deepEqual(sampleRegions(100, 0), []);
  for (const size of [65, 128, 1000, 1 << 20, 4_294_967_296 + 7]) {
    const regions = sampleRegions(size, 64);
    assert.ok(regions.length <= MAX_SAMPLE_REGIONS);
    assert.equal(regions[0].offset, 0);
    assert.equal(regions.at(-1)!.offset + 64, size);
    for (const r of regions) {
      assert.ok(r.offset >= 0 && r.offset + r.length <= size);
    }
  }
});

Deno.test("the one-pass sampled digests equal digests of the regions read alone", async () => {
  await using tmp = await tempDir();
  const dir = tmp.path;
  const data = new Uint8Array(3 * 1024 * 1024 + 17).map((_, i) => (i * 7 + 3) & 0xff);
  await Deno.writeFile(`${dir}/f.bin`, data);
  for (const algorithm of ["sha256", "xxh128"] as const) {
    const whole = await hashFile(`${dir}/f.bin`, {
      algorithm,
      sampleBytes: 65536,
    });
    assert.equal(whole.samples.length, MAX_SAMPLE_REGIONS);
    const alone = await hashRegions(`${dir}/f.bin`, whole.samples, algorithm);
    assert.deepEqual(alone, whole.samples);
  }
});

Deno.test("hashRegions reports a region past the end as file_changed", async () => {
  await using tmp = await tempDir();
  const dir = tmp.path;
  await Deno.writeTextFile(`${dir}/f.bin`, "short");
  await assert.rejects(
    () => hashRegions(`${dir}/f.bin`, [{ offset: 2, length: 100 }]),
    (err: Error & { reason?: string }) => err.reason === "file_changed",
  );
});
