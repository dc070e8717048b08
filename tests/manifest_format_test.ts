/**
 * Manifest format 2 (compact, `samples` left out where implied) against
 * format 1 (what ckptkit wrote before: indented, `samples` everywhere), and
 * the streamed canonical JSON of the self-digest against the `canonicalize`
 * package on random documents.
 */

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { canonicalize } from "../src/deps/canonicalize.ts";
import { canonicalJson, NestingTooDeep } from "../src/core/canonical.ts";
import { hashFile, sampleRegions } from "../src/fs/hashing.ts";
import { MANIFEST_NAME } from "../src/core/layout.ts";
import {
  createManifest,
  FILE_ENTRY_SCHEMAS,
  fileSamples,
  isFileEntry,
  MANIFEST_VERSION,
  manifestDigest,
  type ManifestFile,
  MAX_MANIFEST_NESTING,
  parseManifest,
  serializeManifest,
} from "../src/core/manifest.ts";
import { validateCheckpoint } from "../src/core/validate.ts";

const SAMPLE_BYTES = 4096;
const DEPTHS = ["fast", "sample", "full", "deep"] as const;

function sha256(bytes: Uint8Array | string): string {
  return createHash("sha256").update(bytes).digest("hex");
}

/** A small PRNG (mulberry32): the random documents depend only on the seed. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A checkpoint folder: two small files, an empty one and one larger than a region. */
async function checkpointFolder(): Promise<{ dir: string; files: Map<string, Uint8Array> }> {
  const dir = await Deno.makeTempDir({ prefix: "ckptkit-manifest-format-" });
  const files = new Map<string, Uint8Array>([
    ["a.json", new TextEncoder().encode('{"global_step": 10}\n')],
    ["empty", new Uint8Array(0)],
    ["model.bin", Uint8Array.from({ length: 10_000 }, (_, i) => (i * 7) & 0xff)],
    ["sub/x.bin", Uint8Array.from({ length: 64 }, (_, i) => i)],
  ]);
  await Deno.mkdir(`${dir}/sub`);
  for (const [path, bytes] of files) await Deno.writeFile(`${dir}/${path}`, bytes);
  return { dir, files };
}

/** The manifest text ckptkit wrote before format 2, built without any of today's manifest code. */
function formatOneManifest(files: Map<string, Uint8Array>): string {
  const entries = [...files].sort(([a], [b]) => a < b ? -1 : 1).map(([path, bytes]) => ({
    path,
    size: bytes.length,
    digest: sha256(bytes),
    samples: sampleRegions(bytes.length, SAMPLE_BYTES).map((r) => ({
      ...r,
      digest: sha256(bytes.subarray(r.offset, r.offset + r.length)),
    })),
  }));
  const body = {
    format: "ckptkit.manifest",
    format_version: 1,
    job_id: "job",
    run_id: "run",
    step: 10,
    created_at: "2026-11-29T00:00:00.000Z",
    write_duration_s: 0.25,
    writer: { host: "node1", ckptkit_version: "0.1.0" },
    hash: { algorithm: "sha256", sample_bytes: SAMPLE_BYTES },
    files: entries,
    total_bytes: entries.reduce((sum, e) => sum + e.size, 0),
    metadata: { lr: 0.1, note: 'caf\u00e9 \u2603 "quoted"' },
  };
  const manifest = { ...body, manifest_digest: "sha256:" + sha256(canonicalize(body)!) };
  // The format-1 serialiser: JSON.stringify indented by 2, trailing newline.
  return JSON.stringify(manifest, null, 2) + "\n";
}

async function newManifest(dir: string, files: Map<string, Uint8Array>): Promise<string> {
  const entries: ManifestFile[] = [];
  for (const path of files.keys()) {
    const found = await hashFile(`${dir}/${path}`, { sampleBytes: SAMPLE_BYTES });
    entries.push({ path, size: found.size, digest: found.digest, samples: found.samples });
  }
  return serializeManifest(
    await createManifest({
      job_id: "job",
      run_id: "run",
      step: 10,
      created_at: "2026-11-29T00:00:00.000Z",
      write_duration_s: 0.25,
      writer: { host: "node1", ckptkit_version: "0.1.0" },
      hash: { algorithm: "sha256", sample_bytes: SAMPLE_BYTES },
      files: entries,
      metadata: {},
    }),
  );
}

Deno.test("a format-1 manifest (old serialiser: indented, samples everywhere) validates unchanged at every depth", async () => {
  const { dir, files } = await checkpointFolder();
  try {
    const text = formatOneManifest(files);
    const parsed = await parseManifest(text);
    assert.deepEqual(parsed.problems, []);
    assert.equal(parsed.manifest?.format_version, 1);
    assert.ok(parsed.manifest.files.every((file) => Array.isArray(file.samples)));
    await Deno.writeTextFile(`${dir}/${MANIFEST_NAME}`, text);
    for (const depth of DEPTHS) {
      const result = await validateCheckpoint(dir, { depth });
      assert.deepEqual(result.problems, [], depth);
      assert.equal(result.bytes_checked, depth === "fast" ? 0 : depth === "sample" ? 20 + 3 * 4096 + 64 : 10_084);
    }
    // A changed byte of a small file is caught by its recorded region, as before.
    await Deno.writeFile(`${dir}/sub/x.bin`, Uint8Array.from({ length: 64 }, (_, i) => i === 5 ? 0 : i));
    const sampled = await validateCheckpoint(dir, { depth: "sample" });
    assert.deepEqual(sampled.problems.map((p) => `${p.reason}:${p.path}`), ["hash_mismatch:sub/x.bin"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("format 1 still requires samples on every file", async () => {
  const { dir, files } = await checkpointFolder();
  try {
    const raw = JSON.parse(formatOneManifest(files));
    delete raw.files[0].samples;
    raw.manifest_digest = await manifestDigest(raw);
    const parsed = await parseManifest(JSON.stringify(raw));
    assert.equal(parsed.manifest, undefined);
    assert.match(parsed.problems[0].detail, /^field files\[0\]\.samples: /);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("format 2: one compact entry a line, samples only where a file spans more than one region", async () => {
  const { dir, files } = await checkpointFolder();
  try {
    const text = await newManifest(dir, files);
    const parsed = await parseManifest(text);
    assert.deepEqual(parsed.problems, []);
    const manifest = parsed.manifest!;
    assert.equal(manifest.format_version, MANIFEST_VERSION);
    assert.equal(MANIFEST_VERSION, 2);
    assert.deepEqual(manifest.files.filter((f) => f.samples).map((f) => f.path), ["model.bin"]);
    // Implied samples: the whole file as its one region (none for an empty file).
    const small = manifest.files.find((f) => f.path === "sub/x.bin")!;
    assert.deepEqual(fileSamples(small), [{ offset: 0, length: 64, digest: small.digest }]);
    assert.deepEqual(fileSamples(manifest.files.find((f) => f.path === "empty")!), []);

    const lines = text.split("\n");
    const entries = lines.filter((line) => line.startsWith('{"path":'));
    assert.equal(entries.length, files.size, "one line per file, not indented");
    assert.ok(lines[0] === "{" && lines[1] === '  "format": "ckptkit.manifest",', "the header stays readable");
    // A 64-byte file's entry: 31 bytes of JSON around its path, size and digest, plus ",\n".
    const entry = entries.find((line) => line.includes('"sub/x.bin"'))!.replace(/,$/, "");
    assert.equal(entry, `{"path":"sub/x.bin","size":64,"digest":"${small.digest}"}`);
    assert.equal(entry.length + 2, 31 + "sub/x.bin".length + "64".length + 64 + 2);

    await Deno.writeTextFile(`${dir}/${MANIFEST_NAME}`, text);
    for (const depth of DEPTHS) {
      const result = await validateCheckpoint(dir, { depth });
      assert.deepEqual(result.problems, [], depth);
      // Sampling reads each small file whole (its one region) and three regions of model.bin.
      assert.equal(result.bytes_checked, depth === "fast" ? 0 : depth === "sample" ? 20 + 3 * 4096 + 64 : 10_084);
    }
    await Deno.writeFile(`${dir}/sub/x.bin`, Uint8Array.from({ length: 64 }, (_, i) => i === 5 ? 0 : i));
    const sampled = await validateCheckpoint(dir, { depth: "sample" });
    assert.deepEqual(sampled.problems.map((p) => `${p.reason}:${p.path}`), ["hash_mismatch:sub/x.bin"]);
    assert.match(sampled.problems[0].detail, new RegExp(`manifest says ${small.digest}`));
    const full = await validateCheckpoint(dir, { depth: "full" });
    assert.deepEqual(full.problems.map((p) => `${p.reason}:${p.path}`), ["hash_mismatch:sub/x.bin"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("format 2: a file larger than hash.sample_bytes without samples is manifest_corrupt", async () => {
  const { dir, files } = await checkpointFolder();
  try {
    const raw = JSON.parse(await newManifest(dir, files));
    const model = raw.files.find((f: ManifestFile) => f.path === "model.bin");
    delete model.samples;
    raw.manifest_digest = await manifestDigest(raw);
    const parsed = await parseManifest(JSON.stringify(raw));
    assert.equal(parsed.manifest, undefined);
    assert.match(
      parsed.problems[0].detail,
      /model\.bin lists no sampled regions but is larger than hash\.sample_bytes/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("createManifest keeps samples that are not implied (none recorded, or a region not the whole file)", async () => {
  const digest = "ab".repeat(32);
  const manifest = await createManifest({
    job_id: null,
    run_id: null,
    step: 1,
    created_at: "2026-11-29T00:00:00.000Z",
    write_duration_s: 0,
    writer: { host: "h", ckptkit_version: "0.1.0" },
    hash: { algorithm: "sha256", sample_bytes: 8 },
    files: [
      { path: "none", size: 4, digest, samples: [] },
      { path: "part", size: 4, digest, samples: [{ offset: 0, length: 2, digest }] },
      { path: "other-digest", size: 4, digest, samples: [{ offset: 0, length: 4, digest: "cd".repeat(32) }] },
      { path: "implied", size: 4, digest, samples: [{ offset: 0, length: 4, digest }] },
    ],
    metadata: {},
  });
  assert.deepEqual(manifest.files.map((f) => [f.path, f.samples?.length]), [
    ["implied", undefined],
    ["none", 0],
    ["other-digest", 1],
    ["part", 1],
  ]);
});

Deno.test("duplicate paths are found in sorted and unsorted manifests", async () => {
  const { dir, files } = await checkpointFolder();
  const base = JSON.parse(await newManifest(dir, files));
  await Deno.remove(dir, { recursive: true });
  for (
    const [paths, duplicates] of [
      [["a", "a", "b"], ["a"]],
      [["a", "b", "b", "b"], ["b", "b"]],
      [["b", "a", "b"], ["b"]],
      [["c", "a", "c", "a", "../x", "../x"], ["c", "a"]],
      [["a", "../x", "a"], ["a"]],
    ] as const
  ) {
    const raw = structuredClone(base);
    raw.files = paths.map((path) => ({ path, size: 0, digest: "0".repeat(64) }));
    raw.total_bytes = 0;
    raw.manifest_digest = await manifestDigest(raw);
    const parsed = await parseManifest(JSON.stringify(raw));
    const found = parsed.problems.filter((p) => p.detail === "path is listed more than once").map((p) => p.path);
    assert.deepEqual(found, duplicates, paths.join(" "));
  }
});

// ---------------------------------------------------------------------------
// Canonical JSON against the canonicalize package
// ---------------------------------------------------------------------------

const CHARS = [
  "a",
  "Z",
  "0",
  " ",
  '"',
  "\\",
  "/",
  "\n",
  "\t",
  "\u0000",
  "\u001f",
  "\u007f",
  "\u00e9",
  "e\u0301",
  "\u2028",
  "\u2603",
  "\ud83d\ude00",
  "\ud800",
  "\udfff",
  "\uffff",
  "\u20ac",
];
const NUMBERS = [
  0,
  -0,
  1,
  -1,
  0.1,
  1e21,
  1e-7,
  123456789012345680000,
  5e-324,
  Number.MAX_VALUE,
  -Number.MAX_VALUE,
  Number.MAX_SAFE_INTEGER,
  2 ** 60,
  1.5e300,
  4.35,
  0.000001,
  333333333.3333333,
];

function randomString(next: () => number, max = 12): string {
  let s = "";
  for (let i = Math.floor(next() * max); i > 0; i--) s += CHARS[Math.floor(next() * CHARS.length)];
  return s;
}

function randomNumber(next: () => number): number {
  const roll = next();
  if (roll < 0.4) return NUMBERS[Math.floor(next() * NUMBERS.length)];
  if (roll < 0.7) return Math.floor(next() * 2 ** 53) * (next() < 0.5 ? -1 : 1);
  return (next() - 0.5) * 10 ** Math.floor(next() * 40 - 20);
}

function randomJson(next: () => number, depth: number): unknown {
  const roll = next();
  if (depth <= 0 || roll < 0.3) {
    const kind = Math.floor(next() * 4);
    return kind === 0 ? randomString(next) : kind === 1 ? randomNumber(next) : kind === 2 ? next() < 0.5 : null;
  }
  if (roll < 0.6) return Array.from({ length: Math.floor(next() * 5) }, () => randomJson(next, depth - 1));
  const object: Record<string, unknown> = {};
  for (let i = Math.floor(next() * 6); i > 0; i--) {
    const key = next() < 0.3 ? String(Math.floor(next() * 20)) : randomString(next, 6);
    object[key] = randomJson(next, depth - 1);
  }
  return object;
}

Deno.test("canonicalJson equals canonicalize on random JSON (unicode, escapes, big and small numbers, nesting)", () => {
  const next = rng(20261202);
  for (let trial = 0; trial < 3000; trial++) {
    // Through JSON text, as a manifest arrives: own "__proto__" keys, escaped lone surrogates.
    const value = JSON.parse(JSON.stringify(randomJson(next, 5)));
    assert.equal(canonicalJson(value), canonicalize(value), JSON.stringify(value));
  }
  const tricky = JSON.parse(
    '{"__proto__":{"b":1,"a":[1e300,-0.0]},"10":1,"9":2,"\\ud800":"\\udc00x","é":1,"e\\u0301":2}',
  );
  assert.equal(canonicalJson(tricky), canonicalize(tricky));
});

Deno.test("canonicalJson treats values JSON cannot hold as JSON.stringify does, refuses non-finite numbers and deep nesting", () => {
  const exotic = {
    when: new Date(0),
    skipped: undefined,
    fn: () => 1,
    list: [undefined, () => 1, Symbol("s"), new Number(3), new String("s"), new Boolean(false)],
    // deno-lint-ignore no-sparse-arrays
    sparse: [1, , 3],
  };
  assert.equal(canonicalJson(exotic), canonicalize(JSON.parse(JSON.stringify(exotic))));
  for (const bad of [Infinity, -Infinity, NaN]) {
    assert.throws(() => canonicalJson({ x: [bad] }), TypeError);
    assert.throws(() => canonicalize({ x: [bad] }));
  }
  assert.throws(() => canonicalJson(1n), TypeError);
  const deep = JSON.parse("[".repeat(70) + "]".repeat(70));
  assert.throws(() => canonicalJson(deep, 64), NestingTooDeep);
  assert.equal(canonicalJson(deep, 70), "[".repeat(70) + "]".repeat(70));
});

/** A random manifest body of the usual shape, with unusual paths, metadata and now and then extra keys. */
function randomManifestBody(next: () => number): Record<string, unknown> {
  const hex = (n: number) => Array.from({ length: n }, () => "0123456789abcdef"[Math.floor(next() * 16)]).join("");
  const files: Record<string, unknown>[] = [];
  const paths = new Set<string>();
  for (let i = Math.floor(next() * 40); i > 0; i--) {
    const path = `d${Math.floor(next() * 5)}/${
      randomString(next, 8).replaceAll("\\", "_").replaceAll("/", "_").replaceAll("\0", "_")
    }x`;
    if (paths.has(path)) continue;
    paths.add(path);
    const size = next() < 0.2 ? 0 : Math.floor(next() * 10_000);
    const entry: Record<string, unknown> = { path, size, digest: hex(next() < 0.8 ? 64 : 16) };
    if (size > 64 || next() < 0.3) {
      entry.samples = Array.from({ length: Math.floor(next() * 3) }, () => {
        const length = Math.min(size, 64);
        return { offset: Math.floor(next() * (size - length + 1)), length, digest: hex(64) };
      });
    }
    if (next() < 0.05) entry.x_extra = randomJson(next, 3);
    if (next() < 0.03) entry.samples = [{ length: 0, digest: hex(64), offset: 0, note: randomString(next) }];
    files.push(entry);
  }
  files.sort((a, b) => (a.path as string) < (b.path as string) ? -1 : 1);
  const body: Record<string, unknown> = {
    format: "ckptkit.manifest",
    format_version: 2,
    job_id: next() < 0.5 ? null : randomString(next),
    run_id: randomString(next),
    step: Math.floor(next() * 1e6),
    created_at: "2026-11-29T00:00:00.000Z",
    write_duration_s: next() * 100,
    writer: { host: randomString(next), ckptkit_version: "0.1.0" },
    hash: { algorithm: "sha256", sample_bytes: 64 },
    files,
    total_bytes: files.reduce((sum, f) => sum + (f.size as number), 0),
    metadata: Object.fromEntries(
      Array.from({ length: Math.floor(next() * 5) }, () => [randomString(next, 6), randomJson(next, 4)]),
    ),
  };
  if (next() < 0.2) {
    body.ranks = {
      world_size: 2,
      committed_by: 1,
      parts: [0, 1].map((rank) => ({ rank, host: randomString(next), files: 1, bytes: 2, part_digest: "sha256:0" })),
    };
  }
  if (next() < 0.1) body[randomString(next, 5) + "_ext"] = randomJson(next, 3);
  return body;
}

Deno.test("the streamed self-digest equals SHA-256 of canonicalize's text on random manifests, written and parsed", async () => {
  const next = rng(14);
  for (let trial = 0; trial < 300; trial++) {
    const body = randomManifestBody(next);
    const expected = "sha256:" + sha256(canonicalize(JSON.parse(JSON.stringify(body)))!);
    assert.equal(await manifestDigest(body), expected, `trial ${trial}`);
    // Through the serialiser and the parser (whose digests skip escaping, being checked hex).
    const text = serializeManifest({ ...body, manifest_digest: expected } as never);
    assert.deepEqual(JSON.parse(text), { ...JSON.parse(JSON.stringify(body)), manifest_digest: expected });
    const parsed = await parseManifest(text);
    assert.deepEqual(
      parsed.problems.filter((p) => p.reason === "manifest_corrupt"),
      [],
      `trial ${trial}: ${JSON.stringify(parsed.problems)}`,
    );
  }
});

Deno.test("the hand-written file entry check accepts exactly what the zod entry schemas accept", () => {
  const next = rng(7);
  const values = [0, 1, -1, 1.5, 2 ** 53, 2 ** 53 - 1, "8", null, true, [], {}, undefined, 1e300, -0];
  const digests = ["0".repeat(64), "0".repeat(16), "0".repeat(15), "0".repeat(129), "A".repeat(64), "g".repeat(16), 5];
  const pick = <T>(list: readonly T[]): T => list[Math.floor(next() * list.length)];
  const region = () =>
    next() < 0.1 ? pick(values) : Object.fromEntries(
      [
        ["offset", pick(values)],
        ["length", pick(values)],
        ["digest", pick(digests)],
      ].filter(() => next() < 0.9),
    );
  for (let trial = 0; trial < 5000; trial++) {
    const entry = next() < 0.05 ? pick(values) : Object.fromEntries(
      [
        ["path", pick([...values, "a.bin"])],
        ["size", next() < 0.5 ? Math.floor(next() * 100) : pick(values)],
        ["digest", pick(digests)],
        ["samples", next() < 0.2 ? pick(values) : Array.from({ length: Math.floor(next() * 3) }, region)],
        ["extra", pick(values)],
      ].filter(() => next() < 0.85),
    );
    for (const version of [1, 2] as const) {
      assert.equal(
        isFileEntry(entry, version === 1),
        FILE_ENTRY_SCHEMAS[version].safeParse(entry).success,
        `format ${version}: ${JSON.stringify(entry)}`,
      );
    }
  }
});

Deno.test("a manifest whose metadata nests deeper than the limit cannot be created", async () => {
  let deep: unknown = 1;
  for (let i = 0; i < MAX_MANIFEST_NESTING; i++) deep = [deep];
  await assert.rejects(
    () =>
      createManifest({
        job_id: null,
        run_id: null,
        step: 1,
        created_at: "2026-11-29T00:00:00.000Z",
        write_duration_s: 0,
        writer: { host: "h", ckptkit_version: "0.1.0" },
        hash: { algorithm: "sha256", sample_bytes: 8 },
        files: [],
        metadata: { deep },
      }),
    NestingTooDeep,
  );
});
