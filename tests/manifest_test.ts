import assert from "node:assert/strict";
import {
  createManifest,
  type Manifest,
  MANIFEST_VERSION,
  manifestDigest,
  parseManifest,
  serializeManifest,
} from "../src/core/manifest.ts";
import { unsafePathReason } from "../src/fs/paths.ts";

async function sampleManifest(): Promise<Manifest> {
  return await createManifest({
    job_id: "job",
    run_id: "run",
    step: 10,
    created_at: "2026-11-29T00:00:00.000Z",
    write_duration_s: 1.5,
    writer: { host: "node1", ckptkit_version: "0.1.0" },
    hash: { algorithm: "sha256", sample_bytes: 4 },
    files: [
      {
        path: "b/model.pt",
        size: 8,
        digest: "a".repeat(64),
        samples: [{ offset: 0, length: 4, digest: "b".repeat(64) }],
      },
      { path: "a.json", size: 2, digest: "c".repeat(64), samples: [] },
    ],
    metadata: { lr: 0.1 },
  });
}

/** Re-signs a tampered manifest, as an attacker could. */
async function resign(raw: Record<string, unknown>): Promise<string> {
  raw.manifest_digest = await manifestDigest(raw);
  return JSON.stringify(raw);
}

Deno.test("createManifest sorts files, sums sizes and round-trips through parseManifest", async () => {
  const manifest = await sampleManifest();
  assert.deepEqual(manifest.files.map((f) => f.path), ["a.json", "b/model.pt"]);
  assert.equal(manifest.total_bytes, 10);
  const parsed = await parseManifest(serializeManifest(manifest));
  assert.deepEqual(parsed.problems, []);
  assert.deepEqual(parsed.manifest, manifest);
});

Deno.test("parseManifest reports a changed field as manifest_corrupt (self-digest mismatch)", async () => {
  const text = serializeManifest(await sampleManifest()).replace('"size":8', '"size":9')
    .replace('"total_bytes": 10', '"total_bytes": 11');
  assert.ok(text.includes('"size":9') && text.includes('"total_bytes": 11'));
  const parsed = await parseManifest(text);
  assert.equal(parsed.manifest, undefined);
  assert.equal(parsed.problems[0].reason, "manifest_corrupt");
  assert.match(parsed.problems[0].detail, /self-digest mismatch/);
});

Deno.test("parseManifest reports broken JSON, a missing field and a wrong type as manifest_corrupt", async () => {
  const good = JSON.parse(serializeManifest(await sampleManifest()));
  const cases: [string, RegExp][] = [
    ['{"format": "ckptkit.manifest", ', /not valid JSON/],
    ["[]", /not a JSON object/],
    [JSON.stringify({ ...good, step: undefined }), /field step/],
    [JSON.stringify({ ...good, step: -1 }), /field step/],
    [
      JSON.stringify({ ...good, files: [{ ...good.files[0], size: "8" }] }),
      /field files\[0\]\.size/,
    ],
    [
      JSON.stringify({ ...good, hash: { algorithm: "md5", sample_bytes: 1 } }),
      /field hash\.algorithm/,
    ],
  ];
  for (const [text, detail] of cases) {
    const parsed = await parseManifest(text);
    assert.equal(parsed.manifest, undefined, text);
    assert.equal(parsed.problems[0].reason, "manifest_corrupt", text);
    assert.match(parsed.problems[0].detail, detail);
  }
});

Deno.test("parseManifest reports a newer format version as manifest_unsupported", async () => {
  const raw = JSON.parse(serializeManifest(await sampleManifest()));
  raw.format_version = MANIFEST_VERSION + 1;
  const parsed = await parseManifest(await resign(raw));
  assert.equal(parsed.problems[0].reason, "manifest_unsupported");
});

Deno.test("parseManifest reports ../, absolute, NUL and duplicate paths as unsafe_path even when re-signed", async () => {
  for (
    const [bad, detail] of [
      ["../../etc/passwd", /escapes/],
      ["/etc/passwd", /absolute/],
      ["a\0b", /NUL/],
      ["a/./b", /normalised/],
      ["a//b", /normalised/],
      ["C:/x", /drive/],
      ["a\\..\\b", /backslash/],
      ["ckptkit.manifest.json", /manifest itself/],
      ["a.json", /more than once/],
    ] as const
  ) {
    const raw = JSON.parse(serializeManifest(await sampleManifest()));
    raw.files.push({ path: bad, size: 0, digest: "d".repeat(64), samples: [] });
    const parsed = await parseManifest(await resign(raw));
    const unsafe = parsed.problems.filter((p) => p.reason === "unsafe_path");
    assert.equal(unsafe.length, 1, bad);
    assert.equal(unsafe[0].path, bad);
    assert.match(unsafe[0].detail, detail);
    assert.ok(
      parsed.manifest,
      "a re-signed manifest stays usable for its safe entries",
    );
    assert.ok(
      parsed.unsafePaths.has(2),
      "the unsafe entry is marked so it is never opened",
    );
  }
});

Deno.test("parseManifest reports a sampled region past the file's end as manifest_corrupt", async () => {
  const raw = JSON.parse(serializeManifest(await sampleManifest()));
  raw.files[1].samples[0].offset = 6;
  const parsed = await parseManifest(await resign(raw));
  assert.equal(parsed.manifest, undefined);
  assert.match(parsed.problems[0].detail, /past its size/);
});

Deno.test("unsafePathReason accepts normalised relative paths", () => {
  for (
    const ok of [
      "model.pt",
      "global_step10/mp_rank_00_model_states.pt",
      "a/b/c.d",
      "..hidden",
      "x..",
    ]
  ) {
    assert.equal(unsafePathReason(ok), undefined, ok);
  }
  for (const bad of ["", ".", "..", "a/", "/a", "a/../b", 5, null]) {
    assert.notEqual(unsafePathReason(bad), undefined, String(bad));
  }
});

// Regressions found by the fuzzer (tests/fuzz_test.ts).
Deno.test("parseManifest reports deep nesting as manifest_corrupt instead of overflowing the stack", async () => {
  const raw = JSON.parse(serializeManifest(await sampleManifest()));
  const deep = JSON.stringify(raw).replace(
    '"metadata":{',
    `"metadata":{"x":${"[".repeat(200_000)}${"]".repeat(200_000)},`,
  );
  const parsed = await parseManifest(deep);
  assert.equal(parsed.problems[0].reason, "manifest_corrupt");
  assert.match(parsed.problems[0].detail, /nested 200002 levels deep/);
});

Deno.test("parseManifest survives a path that cannot be converted to a string", async () => {
  const raw = JSON.parse(serializeManifest(await sampleManifest()));
  raw.files[0].path = { toString: 1, valueOf: 2 };
  const parsed = await parseManifest(await resign(raw));
  assert.equal(parsed.problems.find((p) => p.reason === "unsafe_path")?.path, '{"toString":1,"valueOf":2}');
});
