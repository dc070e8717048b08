/**
 * The checkpoint manifest (format v2; v1 is still read): what a checkpoint
 * holds, with a digest of every file and of the manifest itself, so that a
 * damaged manifest is reported as `manifest_corrupt` instead of being trusted.
 *
 * Written compact, one file entry a line; read with a hand-written check of
 * the files (zod only for the small header) and a self-digest streamed into
 * SHA-256 (`canonical.ts`), so a manifest of a million files costs its parsed
 * entries and little else.
 *
 * @module
 */

import { type CanonicalSink, NestingTooDeep, Sha256Sink, toPlain, writePlain } from "./canonical.ts";
import { z } from "../deps/zod.ts";
import { HASH_ALGORITHMS, type HashAlgorithm, MAX_SAMPLE_REGIONS, type RegionDigest } from "../fs/hashing.ts";
import { MANIFEST_NAME } from "./layout.ts";
import { MAX_PATH_LENGTH, unsafePathReason } from "../fs/paths.ts";
import type { Problem } from "../problems.ts";

/** Value of the manifest's `format` field. */
export const MANIFEST_FORMAT = "ckptkit.manifest";
/**
 * The manifest format version this ckptkit writes. It reads this one and
 * version 1 (where every file lists its `samples`).
 */
export const MANIFEST_VERSION = 2;
/** Largest manifest read, so hostile input cannot exhaust memory. */
export const MAX_MANIFEST_BYTES = 512 * 1024 * 1024;

/** One file of a checkpoint as the manifest records it. */
export interface ManifestFile {
  /** Path relative to the checkpoint, `/`-separated and normalised. */
  path: string;
  /** Size in bytes. */
  size: number;
  /** Digest of the whole file with the manifest's algorithm. */
  digest: string;
  /**
   * Digests of the sampled regions (see `sampleRegions`). Absent (format 2)
   * for a file no larger than `hash.sample_bytes`: its one region is the
   * whole file and that region's digest is `digest` (see
   * {@linkcode fileSamples}).
   */
  samples?: RegionDigest[];
}

/** Who wrote a manifest. */
export interface ManifestWriter {
  /** Host name of the machine that committed the checkpoint. */
  host: string;
  /** ckptkit version that wrote the manifest. */
  ckptkit_version: string;
}

/** How the manifest's digests were computed. */
export interface ManifestHash {
  /** Digest algorithm of every file and region digest. */
  algorithm: HashAlgorithm;
  /** Size of each sampled region in bytes (0: none recorded). */
  sample_bytes: number;
}

/** One rank's share of a checkpoint committed by several ranks. */
export interface ManifestRankPart {
  /** The rank (0-based). */
  rank: number;
  /** Host name of the machine the rank ran on. */
  host: string;
  /** Number of files the rank wrote. */
  files: number;
  /** Sum of their sizes. */
  bytes: number;
  /** Self-digest of the rank's part-manifest, so a rank can recognise its own part. */
  part_digest: string;
}

/** How a checkpoint written by several ranks was assembled (multi-rank commits only). */
export interface ManifestRanks {
  /** Number of ranks that wrote the checkpoint. */
  world_size: number;
  /** The rank that completed the set, merged the parts and committed. */
  committed_by: number;
  /** Every rank's part, ordered by rank. */
  parts: ManifestRankPart[];
}

/** A parsed manifest (format 1 or 2), as stored in `ckptkit.manifest.json`. */
export interface Manifest {
  /** Always `ckptkit.manifest`. */
  format: typeof MANIFEST_FORMAT;
  /** 2 when written by this ckptkit; 1 for a manifest written before (every file lists its `samples`). */
  format_version: 1 | 2;
  /** The training job, when known. */
  job_id: string | null;
  /** The run of the job, when known. */
  run_id: string | null;
  /** The training step of the checkpoint. */
  step: number;
  /** When the checkpoint was committed (ISO 8601, UTC). */
  created_at: string;
  /** Seconds spent writing or hashing the checkpoint's files. */
  write_duration_s: number;
  /** Who wrote the manifest. */
  writer: ManifestWriter;
  /** How the digests were computed. */
  hash: ManifestHash;
  /** Every file of the checkpoint except the manifest, sorted by path. */
  files: ManifestFile[];
  /** Sum of the files' sizes. */
  total_bytes: number;
  /** Free-form user metadata. */
  metadata: Record<string, unknown>;
  /** Present when several ranks committed the checkpoint together. */
  ranks?: ManifestRanks;
  /** `sha256:<hex>` of the RFC 8785 canonical JSON of every other field. */
  manifest_digest: string;
}

/** The fields of a manifest that its writer chooses. */
export type ManifestFields = Omit<
  Manifest,
  "format" | "format_version" | "total_bytes" | "manifest_digest"
>;

/**
 * Builds a manifest from its fields: sorts the files by path, leaves out the
 * `samples` that only repeat a small file's whole digest (see
 * {@linkcode fileSamples}), sums their sizes and computes the self-digest.
 * Rejects with a `TypeError` when a field has no canonical JSON form (a
 * number that is not finite, a bigint), and with a `RangeError` when one is
 * nested deeper than {@linkcode MAX_MANIFEST_NESTING} levels (such a manifest
 * would be refused when read).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { createManifest } from "./manifest.ts";
 * const manifest = await createManifest({
 *   job_id: "demo", run_id: "run1", step: 10,
 *   created_at: new Date(0).toISOString(), write_duration_s: 0,
 *   writer: { host: "node1", ckptkit_version: "0.1.0" },
 *   hash: { algorithm: "sha256", sample_bytes: 65536 },
 *   files: [], metadata: {},
 * });
 * assert.ok(manifest.manifest_digest.startsWith("sha256:"));
 * ```
 */
export async function createManifest(
  fields: ManifestFields,
): Promise<Manifest> {
  const sampleBytes = fields.hash.sample_bytes;
  const files = fields.files.map((file) => withoutImpliedSamples(file, sampleBytes))
    .sort((a, b) => comparePaths(a.path, b.path));
  let total = 0;
  for (const file of files) total += file.size;
  const body = {
    format: MANIFEST_FORMAT,
    format_version: MANIFEST_VERSION,
    job_id: fields.job_id,
    run_id: fields.run_id,
    step: fields.step,
    created_at: fields.created_at,
    write_duration_s: fields.write_duration_s,
    writer: fields.writer,
    hash: fields.hash,
    files,
    total_bytes: total,
    metadata: fields.metadata,
    ...(fields.ranks ? { ranks: fields.ranks } : {}),
  } as const;
  return { ...body, manifest_digest: await manifestDigest(body) };
}

/** The entry without `samples` when they are exactly what a missing `samples` means; else the entry itself. */
function withoutImpliedSamples(file: ManifestFile, sampleBytes: number): ManifestFile {
  const samples = file.samples;
  if (samples === undefined || file.size > sampleBytes) return file;
  const implied = file.size === 0 ? samples.length === 0 : samples.length === 1 && samples[0].offset === 0 &&
    samples[0].length === file.size && samples[0].digest === file.digest;
  if (!implied) return file;
  const { samples: _implied, ...entry } = file;
  return entry;
}

/**
 * The sampled regions of a file as sample validation checks them: its
 * `samples`, or when the manifest leaves them out (format 2, a file no larger
 * than `hash.sample_bytes`) the whole file as one region whose digest is the
 * file's digest (none for an empty file).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { fileSamples } from "./manifest.ts";
 * const digest = "ab".repeat(32);
 * assert.deepEqual(fileSamples({ path: "a.json", size: 64, digest }), [{ offset: 0, length: 64, digest }]);
 * assert.deepEqual(fileSamples({ path: "empty", size: 0, digest }), []);
 * ```
 */
export function fileSamples(file: ManifestFile): RegionDigest[] {
  if (file.samples !== undefined) return file.samples;
  return file.size === 0 ? [] : [{ offset: 0, length: file.size, digest: file.digest }];
}

/** Orders paths by their UTF-16 code units, stable across platforms. */
export function comparePaths(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * Serialises a manifest as JSON with a trailing newline: the header indented,
 * each file entry compact on a line of its own.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { createManifest, parseManifest, serializeManifest } from "./manifest.ts";
 * const manifest = await createManifest({
 *   job_id: null, run_id: null, step: 1, created_at: new Date(0).toISOString(), write_duration_s: 0,
 *   writer: { host: "h", ckptkit_version: "0.1.0" }, hash: { algorithm: "sha256", sample_bytes: 0 },
 *   files: [{ path: "a.bin", size: 0, digest: "e3b0c44298fc1c149afbf4c8996fb924", samples: [] }], metadata: {},
 * });
 * const text = serializeManifest(manifest);
 * assert.ok(text.includes('\n{"path":"a.bin","size":0,"digest":"e3b0c44298fc1c149afbf4c8996fb924"}\n'));
 * assert.ok((await parseManifest(text)).problems.length === 0);
 * ```
 */
export function serializeManifest(manifest: Manifest): string {
  return serializeWithFileLines(manifest as unknown as Record<string, unknown>);
}

/**
 * JSON of an object with a trailing newline: indented, except the entries of
 * its `files` array, each compact on a line of its own (manifests and parts).
 */
export function serializeWithFileLines(document: Record<string, unknown>): string {
  const fields: string[] = [];
  for (const [key, value] of Object.entries(document)) {
    if (value === undefined) continue;
    const text = key === "files" && Array.isArray(value)
      ? (value.length === 0 ? "[]" : `[\n${value.map((file) => JSON.stringify(file)).join(",\n")}\n  ]`)
      : JSON.stringify(value, null, 2)?.replaceAll("\n", "\n  ");
    if (text !== undefined) fields.push(`  ${JSON.stringify(key)}: ${text}`);
  }
  return `{\n${fields.join(",\n")}\n}\n`;
}

/**
 * Computes the self-digest of a manifest body: SHA-256 of its RFC 8785
 * canonical JSON without the `manifest_digest` field, streamed (never built
 * as one string). Rejects with a `TypeError` for a body without a canonical
 * form and a `RangeError` for one nested deeper than
 * {@linkcode MAX_MANIFEST_NESTING}.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { manifestDigest } from "./manifest.ts";
 * // sha256 of '{"a":1}'
 * assert.equal(
 *   await manifestDigest({ a: 1, manifest_digest: "ignored" }),
 *   "sha256:015abd7f5cc57a2dd94b7590f04ad8084273905ee33ec5cebeae62276a97f862",
 * );
 * ```
 */
export function manifestDigest(body: Record<string, unknown>): Promise<string> {
  try {
    return Promise.resolve("sha256:" + canonicalDigest(body));
  } catch (err) {
    return Promise.reject(err);
  }
}

/** Hex SHA-256 of the canonical JSON of `body` without `manifest_digest`; throws as {@linkcode manifestDigest}. */
function canonicalDigest(body: Record<string, unknown>, checkedDigests = false): string {
  const sink = new Sha256Sink();
  const keys = Object.keys(body).sort();
  sink.write("{");
  let first = true;
  for (const key of keys) {
    if (key === "manifest_digest") continue;
    const value = toPlain(body[key], key);
    if (value === undefined) continue;
    sink.write(`${first ? "" : ","}${JSON.stringify(key)}:`);
    first = false;
    if (key === "files" && Array.isArray(value)) writeFiles(value, sink, checkedDigests);
    else writePlain(value, sink, 2, MAX_MANIFEST_NESTING);
  }
  sink.write("}");
  return sink.hex();
}

/** The canonical JSON of a `files` array (nesting level 2), with a fast path for entries of the usual shape. */
function writeFiles(files: unknown[], sink: CanonicalSink, checkedDigests: boolean): void {
  if (2 > MAX_MANIFEST_NESTING) throw new NestingTooDeep(MAX_MANIFEST_NESTING);
  sink.write("[");
  for (let i = 0; i < files.length; i++) {
    if (i > 0) sink.write(",");
    const text = canonicalEntry(files[i], checkedDigests);
    if (text !== undefined) {
      sink.write(text);
      continue;
    }
    const entry = toPlain(files[i], String(i));
    if (entry === undefined) sink.write("null");
    else writePlain(entry, sink, 3, MAX_MANIFEST_NESTING);
  }
  sink.write("]");
}

/**
 * The canonical JSON of a file entry holding exactly `path`, `size`,
 * `digest` and optionally `samples` (each holding exactly `offset`, `length`
 * and `digest`) with string and finite number values; undefined for any other
 * shape, which takes the general path. `checkedDigests`: every digest is
 * known to be lower-case hex (parsed and checked), so needs no escaping.
 */
function canonicalEntry(entry: unknown, checkedDigests: boolean): string | undefined {
  if (typeof entry !== "object" || entry === null || Array.isArray(entry)) return undefined;
  const file = entry as Record<string, unknown>;
  const { path, size, digest, samples } = file;
  if (
    typeof path !== "string" || typeof size !== "number" || !Number.isFinite(size) || typeof digest !== "string" ||
    typeof file.toJSON === "function" || !hasExactly(file, samples === undefined ? 3 : 4)
  ) return undefined;
  const head = `{"digest":${checkedDigests ? `"${digest}"` : JSON.stringify(digest)},"path":${JSON.stringify(path)},`;
  if (samples === undefined) return `${head}"size":${String(size)}}`;
  if (!Array.isArray(samples)) return undefined;
  let regions = "";
  for (let i = 0; i < samples.length; i++) {
    const sample = samples[i];
    if (typeof sample !== "object" || sample === null || Array.isArray(sample)) return undefined;
    const { offset, length, digest: regionDigest } = sample as Record<string, unknown>;
    if (
      typeof offset !== "number" || !Number.isFinite(offset) || typeof length !== "number" ||
      !Number.isFinite(length) || typeof regionDigest !== "string" ||
      typeof (sample as { toJSON?: unknown }).toJSON === "function" || !hasExactlyRegionKeys(sample as object)
    ) return undefined;
    regions += `${i > 0 ? "," : ""}{"digest":${
      checkedDigests ? `"${regionDigest}"` : JSON.stringify(regionDigest)
    },"length":${String(length)},"offset":${String(offset)}}`;
  }
  return `${head}"samples":[${regions}],"size":${String(size)}}`;
}

/** Whether the own enumerable keys of a file entry are `path`, `size`, `digest` (and `samples` when `count` is 4). */
function hasExactly(file: object, count: 3 | 4): boolean {
  const keys = Object.keys(file);
  if (keys.length !== count) return false;
  for (const key of keys) {
    if (key !== "path" && key !== "size" && key !== "digest" && (count === 3 || key !== "samples")) return false;
  }
  return true;
}

function hasExactlyRegionKeys(region: object): boolean {
  const keys = Object.keys(region);
  if (keys.length !== 3) return false;
  for (const key of keys) if (key !== "offset" && key !== "length" && key !== "digest") return false;
  return true;
}

const nonNegativeInteger = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
const hexDigest = z.string().regex(
  /^[0-9a-f]{16,128}$/,
  "expected a lower-case hex digest",
);
const regionSchema = z.looseObject({
  offset: nonNegativeInteger,
  length: nonNegativeInteger,
  digest: hexDigest,
});
/** A file entry of format 1 (`samples` required) and of format 2: only used to word a problem `isFileEntry` found. */
export const FILE_ENTRY_SCHEMAS = {
  1: z.looseObject({
    // Paths are checked apart so that a bad one is reported as unsafe_path.
    path: z.unknown(),
    size: nonNegativeInteger,
    digest: hexDigest,
    samples: z.array(regionSchema),
  }),
  2: z.looseObject({
    path: z.unknown(),
    size: nonNegativeInteger,
    digest: hexDigest,
    samples: z.array(regionSchema).optional(),
  }),
} as const;
const rankPartSchema = z.looseObject({
  rank: nonNegativeInteger,
  host: z.string(),
  files: nonNegativeInteger,
  bytes: nonNegativeInteger,
  part_digest: z.string(),
});
const anyArray = z.array(z.unknown());

/** The header; `files` and `ranks.parts`, which grow with the checkpoint, are checked by hand (see `checkFiles`). */
const headerSchema = z.looseObject({
  format: z.literal(MANIFEST_FORMAT),
  format_version: z.literal([1, 2]),
  job_id: z.string().nullable(),
  run_id: z.string().nullable(),
  step: nonNegativeInteger,
  created_at: z.iso.datetime({ offset: true }),
  write_duration_s: z.number().min(0),
  writer: z.looseObject({ host: z.string(), ckptkit_version: z.string() }),
  hash: z.looseObject({
    algorithm: z.enum(HASH_ALGORITHMS),
    sample_bytes: nonNegativeInteger,
  }),
  files: z.unknown(),
  total_bytes: nonNegativeInteger,
  metadata: z.record(z.string(), z.unknown()),
  ranks: z.looseObject({
    world_size: z.number().int().min(1),
    committed_by: nonNegativeInteger,
    parts: z.unknown(),
  }).optional(),
  manifest_digest: z.string().regex(/^sha256:[0-9a-f]{64}$/),
});
/** The order zod reports fields in (the schema's), so the first problem is the one a single schema would report. */
const FIELD_ORDER = Object.keys(headerSchema.shape);
const RANKS_ORDER = ["world_size", "committed_by", "parts"];

/** What {@linkcode parseManifest} found. */
export interface ParsedManifest {
  /**
   * The manifest when its structure is valid, even if it has unsafe paths
   * (those entries are listed in `unsafePaths` and must not be opened).
   * `undefined` when it cannot be trusted at all.
   */
  manifest?: Manifest;
  /** Indexes of `manifest.files` whose path is unsafe. */
  unsafePaths: Set<number>;
  /** Every problem found, each `manifest_*` or `unsafe_path`. */
  problems: Problem[];
}

/**
 * Parses and checks a manifest: JSON syntax, the structure (format 1 or 2),
 * the nesting, the self-digest, the totals and every path. Paths are checked
 * even when the digest matches, since anyone can recompute it.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseManifest } from "./manifest.ts";
 * const { manifest, problems } = await parseManifest("{not json");
 * assert.ok(manifest === undefined);
 * assert.ok(problems[0].reason === "manifest_corrupt");
 * ```
 */
export function parseManifest(text: string): Promise<ParsedManifest> {
  try {
    return Promise.resolve(checkManifestText(text));
  } catch (err) {
    return Promise.reject(err);
  }
}

/** {@linkcode parseManifest}, synchronously (every step is CPU work). */
function checkManifestText(text: string): ParsedManifest {
  const corrupt = (detail: string): ParsedManifest => ({
    unsafePaths: new Set(),
    problems: [{ reason: "manifest_corrupt", path: MANIFEST_NAME, detail }],
  });
  let raw: unknown;
  try {
    // V8's JSON.parse is not recursive: any nesting parses; what walks the result afterwards is bounded.
    raw = JSON.parse(text);
  } catch (err) {
    return corrupt(`not valid JSON: ${(err as Error).message}`);
  }
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
    return corrupt("not a JSON object");
  }
  const version = (raw as Record<string, unknown>).format_version;
  if (typeof version === "number" && version > MANIFEST_VERSION) {
    return {
      unsafePaths: new Set(),
      problems: [{
        reason: "manifest_unsupported",
        path: MANIFEST_NAME,
        detail: `format_version ${version} is newer than this ckptkit reads ` +
          `(${MANIFEST_VERSION}); upgrade ckptkit`,
      }],
    };
  }
  const issue = structureIssue(raw as Record<string, unknown>);
  if (issue) {
    const where = issue.path.length ? formatIssuePath(issue.path) : "(top level)";
    return corrupt(`field ${where}: ${issue.message}`);
  }
  const manifest = raw as Manifest;
  let expected: string;
  try {
    // The only walk of the free-form parts (metadata, unknown keys), bounded in depth.
    expected = "sha256:" + canonicalDigest(raw as Record<string, unknown>, true);
  } catch (err) {
    if (err instanceof NestingTooDeep) {
      // Rare: the text is walked once more only to say how deep.
      return corrupt(`nested ${nestingDepth(text)} levels deep; a manifest needs at most ${MAX_MANIFEST_NESTING}`);
    }
    return corrupt(`no canonical JSON form: ${(err as Error).message}`);
  }
  // The text is no longer needed; from here on only the parsed manifest is.
  const problems: Problem[] = [];
  if (expected !== manifest.manifest_digest) {
    problems.push({
      reason: "manifest_corrupt",
      path: MANIFEST_NAME,
      detail: `self-digest mismatch: manifest says ${manifest.manifest_digest}, ` +
        `its content hashes to ${expected}`,
    });
  }
  const files = manifest.files;
  let total = 0;
  for (let i = 0; i < files.length; i++) total += files[i].size;
  if (total !== manifest.total_bytes) {
    problems.push({
      reason: "manifest_corrupt",
      path: MANIFEST_NAME,
      detail: `total_bytes is ${manifest.total_bytes}, files add up to ${total}`,
    });
  }
  const sampleBytes = manifest.hash.sample_bytes;
  const unsafePaths = new Set<number>();
  // ckptkit writes the files sorted by path: while they are, a duplicate is the previous path again and no set of
  // every path is needed. The first path out of order switches to a set.
  let previous: string | undefined;
  let seen: Set<string> | undefined;
  for (let index = 0; index < files.length; index++) {
    const file = files[index];
    const path = file.path;
    let unsafe = pathProblem(path);
    if (unsafe === undefined) {
      if (seen === undefined && previous !== undefined && path <= previous) {
        if (path !== previous) seen = safePathsBefore(files, index);
        else unsafe = "path is listed more than once";
      }
      if (seen !== undefined) {
        if (seen.has(path)) unsafe = "path is listed more than once";
        else seen.add(path);
      } else if (unsafe === undefined) {
        previous = path;
      }
    }
    // JSON.stringify, not String(): {"toString": 1} cannot be converted to a string.
    const shown = typeof path === "string" ? path : JSON.stringify(path) ?? "undefined";
    if (unsafe) {
      unsafePaths.add(index);
      problems.push({ reason: "unsafe_path", path: shown, detail: unsafe });
    }
    const samples = file.samples;
    if (samples === undefined) {
      if (file.size > sampleBytes) {
        // A missing `samples` stands for the whole file as one region: only for files within one region's size.
        problems.push({
          reason: "manifest_corrupt",
          path: MANIFEST_NAME,
          detail: `${shown} lists no sampled regions but is larger than hash.sample_bytes (${sampleBytes})`,
        });
        unsafePaths.add(index);
      }
      continue;
    }
    const oversized = samples.find((sample) => sample.length > sampleBytes);
    if (samples.length > MAX_SAMPLE_REGIONS || oversized) {
      // ckptkit records at most MAX_SAMPLE_REGIONS regions of sample_bytes; more would make sampled reads unbounded.
      problems.push({
        reason: "manifest_corrupt",
        path: MANIFEST_NAME,
        detail: oversized
          ? `sampled region ${oversized.offset}+${oversized.length} of ${shown} is longer than hash.sample_bytes (${sampleBytes})`
          : `${shown} lists ${samples.length} sampled regions; ckptkit records at most ${MAX_SAMPLE_REGIONS}`,
      });
      unsafePaths.add(index);
      continue;
    }
    for (const sample of samples) {
      if (sample.offset + sample.length > file.size) {
        problems.push({
          reason: "manifest_corrupt",
          path: MANIFEST_NAME,
          detail: `sampled region ${sample.offset}+${sample.length} of ${shown} ` +
            `lies past its size ${file.size}`,
        });
        unsafePaths.add(index);
      }
    }
  }
  const trusted = !problems.some((p) => p.reason === "manifest_corrupt");
  return { manifest: trusted ? manifest : undefined, unsafePaths, problems };
}

/** Why a listed path must not be opened (unsafe, or the manifest itself), or undefined. */
function pathProblem(path: unknown): string | undefined {
  if (typeof path === "string" && isPlainPath(path)) {
    return path === MANIFEST_NAME ? "path names the manifest itself" : undefined;
  }
  return unsafePathReason(path) ?? (path === MANIFEST_NAME ? "path names the manifest itself" : undefined);
}

/**
 * True for a path `unsafePathReason` certainly accepts, in one pass without
 * allocating: not empty, within `MAX_PATH_LENGTH`, relative, no drive letter,
 * NUL or backslash, no empty, `.` or `..` segment. False only means "ask
 * `unsafePathReason`", which words the problem.
 */
function isPlainPath(path: string): boolean {
  const length = path.length;
  if (length === 0 || length > MAX_PATH_LENGTH) return false;
  if (length >= 2 && path.charCodeAt(1) === 0x3a) return false; // "C:": let unsafePathReason judge
  let segmentStart = 0;
  for (let i = 0; i <= length; i++) {
    const c = i < length ? path.charCodeAt(i) : 0x2f;
    if (c === 0 || c === 0x5c) return false;
    if (c !== 0x2f) continue;
    const segment = i - segmentStart;
    if (
      segment === 0 || (segment === 1 && path.charCodeAt(i - 1) === 0x2e) ||
      (segment === 2 && path.charCodeAt(i - 1) === 0x2e && path.charCodeAt(i - 2) === 0x2e)
    ) return false;
    segmentStart = i + 1;
  }
  return true;
}

/** Every safe path listed before `index`: the set duplicates are checked against once the order breaks. */
function safePathsBefore(files: readonly ManifestFile[], index: number): Set<string> {
  const seen = new Set<string>();
  for (let i = 0; i < index; i++) {
    if (pathProblem(files[i].path) === undefined) seen.add(files[i].path);
  }
  return seen;
}

/** A structural problem: where (zod's path) and zod's message. */
interface Issue {
  path: readonly PropertyKey[];
  message: string;
}

/**
 * The first structural problem of a manifest object, as one zod schema of the
 * whole manifest would report it (same path, same message, same order), or
 * undefined. The header goes through zod; `files` and `ranks.parts` through
 * a hand-written loop, and zod only words the first entry that loop rejects.
 */
function structureIssue(raw: Record<string, unknown>): Issue | undefined {
  const header = headerSchema.safeParse(raw);
  const headerIssue: Issue | undefined = header.success ? undefined : header.error.issues[0];
  const filesAt = [FIELD_ORDER.indexOf("files"), 0];
  if (headerIssue === undefined || before(filesAt, orderOf(headerIssue.path))) {
    const filesIssue = checkFiles(raw.files, raw.format_version === 1);
    if (filesIssue) return filesIssue;
  }
  const partsAt = [FIELD_ORDER.indexOf("ranks"), RANKS_ORDER.indexOf("parts")];
  if ((headerIssue === undefined || before(partsAt, orderOf(headerIssue.path))) && raw.ranks !== undefined) {
    const partsIssue = checkParts((raw.ranks as Record<string, unknown>).parts);
    if (partsIssue) return partsIssue;
  }
  return headerIssue;
}

function orderOf(path: readonly PropertyKey[]): number[] {
  const top = FIELD_ORDER.indexOf(String(path[0]));
  return [
    top < 0 ? FIELD_ORDER.length : top,
    path[0] === "ranks" ? Math.max(0, RANKS_ORDER.indexOf(String(path[1]))) : 0,
  ];
}

function before(a: number[], b: number[]): boolean {
  return a[0] < b[0] || (a[0] === b[0] && a[1] < b[1]);
}

/** The first problem of `files`, or undefined: a plain loop over the entries (zod words a rejected one). */
function checkFiles(files: unknown, samplesRequired: boolean): Issue | undefined {
  if (!Array.isArray(files)) return prefixed(["files"], anyArray.safeParse(files));
  const schema = FILE_ENTRY_SCHEMAS[samplesRequired ? 1 : 2];
  for (let i = 0; i < files.length; i++) {
    if (isFileEntry(files[i], samplesRequired)) continue;
    const issue = prefixed(["files", i], schema.safeParse(files[i]));
    if (issue) return issue;
  }
  return undefined;
}

function checkParts(parts: unknown): Issue | undefined {
  if (!Array.isArray(parts)) return prefixed(["ranks", "parts"], anyArray.safeParse(parts));
  for (let i = 0; i < parts.length; i++) {
    if (isRankPart(parts[i])) continue;
    const issue = prefixed(["ranks", "parts", i], rankPartSchema.safeParse(parts[i]));
    if (issue) return issue;
  }
  return undefined;
}

function prefixed(
  at: PropertyKey[],
  result: { success: true } | { success: false; error: { issues: Issue[] } },
): Issue | undefined {
  if (result.success) return undefined;
  const issue = result.error.issues[0];
  return { path: [...at, ...issue.path], message: issue.message };
}

/** A plain JSON object (what zod's object schemas accept). */
function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** A non-negative safe integer (`nonNegativeInteger`). */
function isCount(value: unknown): boolean {
  return typeof value === "number" && Number.isSafeInteger(value) && value >= 0;
}

/** A lower-case hex string of 16 to 128 digits (`hexDigest`), without a RegExp. */
function isHexDigest(value: unknown): boolean {
  if (typeof value !== "string" || value.length < 16 || value.length > 128) return false;
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    if ((c < 0x30 || c > 0x39) && (c < 0x61 || c > 0x66)) return false;
  }
  return true;
}

/**
 * Whether a file entry has the structure of format 1 (`samplesRequired`) or
 * 2, checked by hand: what `FILE_ENTRY_SCHEMAS` accepts, never more
 * leniently (an entry rejected here goes to zod for the wording).
 */
export function isFileEntry(entry: unknown, samplesRequired: boolean): boolean {
  // `path` may hold anything (checked apart, as unsafe_path) but must be there, as zod requires of a key.
  if (!isRecord(entry) || !("path" in entry) || !isCount(entry.size) || !isHexDigest(entry.digest)) return false;
  const samples = entry.samples;
  if (samples === undefined) return !samplesRequired;
  if (!Array.isArray(samples)) return false;
  for (let i = 0; i < samples.length; i++) {
    const sample = samples[i];
    if (!isRecord(sample) || !isCount(sample.offset) || !isCount(sample.length) || !isHexDigest(sample.digest)) {
      return false;
    }
  }
  return true;
}

function isRankPart(part: unknown): boolean {
  return isRecord(part) && isCount(part.rank) && typeof part.host === "string" && isCount(part.files) &&
    isCount(part.bytes) && typeof part.part_digest === "string";
}

/** Deepest nesting a manifest may have; a real one has 5 levels, metadata may add some. */
export const MAX_MANIFEST_NESTING = 64;

/** The deepest nesting of arrays and objects in JSON text, counted without parsing (iteratively). */
function nestingDepth(text: string): number {
  let depth = 0;
  let deepest = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c) i++; // backslash: skip the escaped character
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) {
      inString = true;
    } else if (c === 0x7b || c === 0x5b) {
      depth++;
      if (depth > deepest) deepest = depth;
    } else if (c === 0x7d || c === 0x5d) {
      depth--;
    }
  }
  return deepest;
}

function formatIssuePath(path: readonly PropertyKey[]): string {
  return path.map((key, i) => typeof key === "number" ? `[${key}]` : `${i ? "." : ""}${String(key)}`).join("");
}

/**
 * Reads `<dir>/ckptkit.manifest.json` as untrusted input: never through a
 * symbolic link, never a FIFO or other special file, never past
 * {@linkcode MAX_MANIFEST_BYTES}, strict UTF-8. Returns its bytes and text,
 * or the one problem that stopped the read (`manifest_missing`, `symlink`,
 * `manifest_corrupt`, `io_error`).
 *
 * Requires `--allow-read`.
 */
export async function readManifestFile(
  dir: string,
): Promise<{ bytes: Uint8Array; text: string } | { problem: Problem }> {
  const path = `${dir}/${MANIFEST_NAME}`;
  const problem = (reason: Problem["reason"], detail: string) => ({ problem: { reason, path: MANIFEST_NAME, detail } });
  let info: Deno.FileInfo;
  try {
    info = await Deno.lstat(path);
  } catch (err) {
    return err instanceof Deno.errors.NotFound
      ? problem("manifest_missing", "no manifest; seal or commit the checkpoint first")
      : problem("io_error", (err as Error).message);
  }
  if (info.isSymlink) return problem("symlink", "the manifest is a symbolic link; not followed");
  if (!info.isFile) return problem("manifest_corrupt", "the manifest is not a regular file");
  let bytes: Uint8Array | undefined;
  try {
    bytes = await readWhole(path, MAX_MANIFEST_BYTES);
  } catch (err) {
    return problem("io_error", (err as Error).message);
  }
  if (!bytes) return problem("manifest_corrupt", `larger than ${MAX_MANIFEST_BYTES} bytes`);
  try {
    return { bytes, text: new TextDecoder("utf-8", { fatal: true }).decode(bytes) };
  } catch {
    return problem("manifest_corrupt", "not valid UTF-8");
  }
}

/**
 * Reads a whole file of at most `limit` bytes (undefined when larger) into
 * one buffer sized from its status, in large reads: no chunk list and no
 * second copy, so a manifest costs its size once while it is read.
 */
async function readWhole(path: string, limit: number): Promise<Uint8Array | undefined> {
  const file = await Deno.open(path, { read: true });
  try {
    const size = (await file.stat()).size;
    if (size > limit) return undefined;
    // One byte more than the status says, to see the end (or a file still growing) without another buffer.
    let buffer = new Uint8Array(size + 1);
    let total = 0;
    while (true) {
      if (total === buffer.length) {
        if (buffer.length > limit) return undefined;
        const grown = new Uint8Array(Math.min(buffer.length * 2, limit + 1));
        grown.set(buffer);
        buffer = grown;
      }
      const n = await file.read(buffer.subarray(total, Math.min(buffer.length, total + READ_BYTES)));
      if (n === null) break;
      total += n;
    }
    if (total > limit) return undefined;
    return total === buffer.length ? buffer : buffer.subarray(0, total);
  } finally {
    file.close();
  }
}

/** Bytes asked of one read of a manifest. */
const READ_BYTES = 8 * 1024 * 1024;
