/**
 * The checkpoint manifest (format v1): what a checkpoint holds, with a digest
 * of every file and of the manifest itself, so that a damaged manifest is
 * reported as `manifest_corrupt` instead of being trusted.
 *
 * @module
 */

import { canonicalize } from "./deps/canonicalize.ts";
import { z } from "./deps/zod.ts";
import { HASH_ALGORITHMS, type HashAlgorithm, MAX_SAMPLE_REGIONS, type RegionDigest } from "./hashing.ts";
import { MANIFEST_NAME } from "./layout.ts";
import { readFileLimited } from "./durable.ts";
import { unsafePathReason } from "./paths.ts";
import type { Problem } from "./problems.ts";

/** Value of the manifest's `format` field. */
export const MANIFEST_FORMAT = "ckptkit.manifest";
/** The manifest format version this ckptkit writes and reads. */
export const MANIFEST_VERSION = 1;
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
  /** Digests of the sampled regions (see `sampleRegions`). */
  samples: RegionDigest[];
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

/** A parsed format-v1 manifest, as stored in `ckptkit.manifest.json`. */
export interface Manifest {
  /** Always `ckptkit.manifest`. */
  format: typeof MANIFEST_FORMAT;
  /** Always 1 for this format. */
  format_version: typeof MANIFEST_VERSION;
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
 * Builds a manifest from its fields: sorts the files by path, sums their
 * sizes and computes the self-digest.
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
  const files = [...fields.files].sort((a, b) => comparePaths(a.path, b.path));
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
    total_bytes: files.reduce((sum, file) => sum + file.size, 0),
    metadata: fields.metadata,
    ...(fields.ranks ? { ranks: fields.ranks } : {}),
  } as const;
  return { ...body, manifest_digest: await manifestDigest(body) };
}

/** Orders paths by their UTF-16 code units, stable across platforms. */
export function comparePaths(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * Serialises a manifest as indented JSON with a trailing newline.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { createManifest, parseManifest, serializeManifest } from "./manifest.ts";
 * const manifest = await createManifest({
 *   job_id: null, run_id: null, step: 1, created_at: new Date(0).toISOString(), write_duration_s: 0,
 *   writer: { host: "h", ckptkit_version: "0.1.0" }, hash: { algorithm: "sha256", sample_bytes: 0 },
 *   files: [], metadata: {},
 * });
 * assert.ok((await parseManifest(serializeManifest(manifest))).problems.length === 0);
 * ```
 */
export function serializeManifest(manifest: Manifest): string {
  return JSON.stringify(manifest, null, 2) + "\n";
}

/**
 * Computes the self-digest of a manifest body: SHA-256 (Web Crypto) of its
 * RFC 8785 canonical JSON without the `manifest_digest` field.
 */
export async function manifestDigest(
  body: Record<string, unknown>,
): Promise<string> {
  const { manifest_digest: _ignored, ...rest } = body;
  const canonical = canonicalize(rest);
  if (canonical === undefined) throw new TypeError("manifest is not JSON");
  const hash = await crypto.subtle.digest(
    "SHA-256",
    new TextEncoder().encode(canonical),
  );
  return "sha256:" + [...new Uint8Array(hash)]
    .map((byte) => byte.toString(16).padStart(2, "0")).join("");
}

const nonNegativeInteger = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
const hexDigest = z.string().regex(
  /^[0-9a-f]{16,128}$/,
  "expected a lower-case hex digest",
);

const manifestSchema = z.looseObject({
  format: z.literal(MANIFEST_FORMAT),
  format_version: z.literal(MANIFEST_VERSION),
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
  files: z.array(z.looseObject({
    // Paths are checked apart so that a bad one is reported as unsafe_path.
    path: z.unknown(),
    size: nonNegativeInteger,
    digest: hexDigest,
    samples: z.array(z.looseObject({
      offset: nonNegativeInteger,
      length: nonNegativeInteger,
      digest: hexDigest,
    })),
  })),
  total_bytes: nonNegativeInteger,
  metadata: z.record(z.string(), z.unknown()),
  ranks: z.looseObject({
    world_size: z.number().int().min(1),
    committed_by: nonNegativeInteger,
    parts: z.array(z.looseObject({
      rank: nonNegativeInteger,
      host: z.string(),
      files: nonNegativeInteger,
      bytes: nonNegativeInteger,
      part_digest: z.string(),
    })),
  }).optional(),
  manifest_digest: z.string().regex(/^sha256:[0-9a-f]{64}$/),
});

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
 * Parses and checks a manifest: JSON syntax, the v1 structure, the
 * self-digest, the totals and every path. Paths are checked even when the
 * digest matches, since anyone can recompute it.
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
export async function parseManifest(text: string): Promise<ParsedManifest> {
  const corrupt = (detail: string): ParsedManifest => ({
    unsafePaths: new Set(),
    problems: [{ reason: "manifest_corrupt", path: MANIFEST_NAME, detail }],
  });
  const depth = nestingDepth(text);
  if (depth > MAX_MANIFEST_NESTING) {
    // Checked before parsing: recursive steps (the canonical JSON of the digest) would overflow the stack.
    return corrupt(`nested ${depth} levels deep; a manifest needs at most ${MAX_MANIFEST_NESTING}`);
  }
  let raw: unknown;
  try {
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
  const parsed = manifestSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const where = issue.path.length ? formatIssuePath(issue.path) : "(top level)";
    return corrupt(`field ${where}: ${issue.message}`);
  }
  const manifest = raw as Manifest;
  const problems: Problem[] = [];
  const expected = await manifestDigest(raw as Record<string, unknown>);
  if (expected !== manifest.manifest_digest) {
    problems.push({
      reason: "manifest_corrupt",
      path: MANIFEST_NAME,
      detail: `self-digest mismatch: manifest says ${manifest.manifest_digest}, ` +
        `its content hashes to ${expected}`,
    });
  }
  const total = manifest.files.reduce((sum, file) => sum + file.size, 0);
  if (total !== manifest.total_bytes) {
    problems.push({
      reason: "manifest_corrupt",
      path: MANIFEST_NAME,
      detail: `total_bytes is ${manifest.total_bytes}, files add up to ${total}`,
    });
  }
  const unsafePaths = new Set<number>();
  const seen = new Set<string>();
  manifest.files.forEach((file, index) => {
    // JSON.stringify, not String(): {"toString": 1} cannot be converted to a string.
    const shown = typeof file.path === "string" ? file.path : JSON.stringify(file.path) ?? "undefined";
    const unsafe = unsafePathReason(file.path) ??
      (file.path === MANIFEST_NAME ? "path names the manifest itself" : undefined) ??
      (seen.has(file.path) ? "path is listed more than once" : undefined);
    if (unsafe) {
      unsafePaths.add(index);
      problems.push({ reason: "unsafe_path", path: shown, detail: unsafe });
    } else {
      seen.add(file.path);
    }
    const oversized = file.samples.find((sample) => sample.length > manifest.hash.sample_bytes);
    if (file.samples.length > MAX_SAMPLE_REGIONS || oversized) {
      // ckptkit records at most MAX_SAMPLE_REGIONS regions of sample_bytes; more would make sampled reads unbounded.
      problems.push({
        reason: "manifest_corrupt",
        path: MANIFEST_NAME,
        detail: oversized
          ? `sampled region ${oversized.offset}+${oversized.length} of ${shown} is longer than hash.sample_bytes (${manifest.hash.sample_bytes})`
          : `${shown} lists ${file.samples.length} sampled regions; ckptkit records at most ${MAX_SAMPLE_REGIONS}`,
      });
      unsafePaths.add(index);
      return;
    }
    for (const sample of file.samples) {
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
  });
  const trusted = !problems.some((p) => p.reason === "manifest_corrupt");
  return { manifest: trusted ? manifest : undefined, unsafePaths, problems };
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
    bytes = await readFileLimited(path, MAX_MANIFEST_BYTES);
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
