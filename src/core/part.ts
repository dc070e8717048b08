/**
 * Part-manifests of a multi-rank commit: what one rank wrote into a shared
 * staging folder, hashed by that rank, recorded so that whichever rank
 * completes the set can merge every part into the checkpoint's manifest.
 *
 * @module
 */

import { readFileLimited } from "../fs/durable.ts";
import { z } from "../deps/zod.ts";
import { HASH_ALGORITHMS } from "../fs/hashing.ts";
import { manifestDigest, type ManifestFile, type ManifestHash, serializeWithFileLines } from "./manifest.ts";

/** Suffix of the folder beside a staging folder that holds its ranks' parts. */
export const PARTS_SUFFIX = ".parts";
/** Value of a part's `format` field. */
export const PART_FORMAT = "ckptkit.part";
/** The part format version this ckptkit writes and reads. */
export const PART_VERSION = 1;
/** Largest part file read, so a hostile one cannot exhaust memory. */
export const MAX_PART_BYTES = 256 * 1024 * 1024;

/** A file as a rank recorded it: its manifest entry plus the mtime seen after hashing. */
export interface PartFile extends ManifestFile {
  /** Modification time in ms after hashing; the merging rank refuses a file changed since. */
  mtime_ms: number;
}

/** One rank's part-manifest, as stored in `<staging>.parts/rank-<r>.json`. */
export interface PartManifest {
  /** Always `ckptkit.part`. */
  format: typeof PART_FORMAT;
  /** Always 1 for this format. */
  format_version: typeof PART_VERSION;
  /** The checkpoint's step. */
  step: number;
  /** This rank (0-based). */
  rank: number;
  /** Number of ranks writing the checkpoint. */
  world_size: number;
  /** The training job, when given. */
  job_id: string | null;
  /** The run of the job, when given. */
  run_id: string | null;
  /** How the digests were computed. */
  hash: ManifestHash;
  /** Free-form metadata; every rank must give the same. */
  metadata: Record<string, unknown>;
  /** The files this rank wrote, sorted by path. */
  files: PartFile[];
  /** Sum of the files' sizes. */
  total_bytes: number;
  /** Seconds the rank spent hashing. */
  hash_duration_s: number;
  /** Host name of the rank's machine. */
  host: string;
  /** Process id of the rank. */
  pid: number;
  /** When the part was recorded (ISO 8601, UTC). */
  created_at: string;
  /** `sha256:<hex>` of the RFC 8785 canonical JSON of every other field. */
  part_digest: string;
}

/** The fields of a part that its rank chooses. */
export type PartFields = Omit<PartManifest, "format" | "format_version" | "total_bytes" | "part_digest">;

/** Builds a part from its fields: sorts the files, sums their sizes and computes the self-digest. */
export async function createPart(fields: PartFields): Promise<PartManifest> {
  const files = [...fields.files].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  const body = {
    format: PART_FORMAT,
    format_version: PART_VERSION,
    ...fields,
    files,
    total_bytes: files.reduce((sum, file) => sum + file.size, 0),
  } as const;
  return { ...body, part_digest: await manifestDigest(body) };
}

/** Serialises a part as JSON with a trailing newline: indented, one compact file entry a line (as manifests). */
export function serializePart(part: PartManifest): string {
  return serializeWithFileLines(part as unknown as Record<string, unknown>);
}

/** The file name of a rank's part inside the parts folder. */
export function partFileName(rank: number): string {
  return `rank-${String(rank).padStart(5, "0")}.json`;
}

/** The rank a part file name stands for, or undefined for any other name. */
export function rankOfPartFile(name: string): number | undefined {
  const match = /^rank-(\d{5,})\.json$/.exec(name);
  return match ? Number(match[1]) : undefined;
}

const nonNegativeInteger = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
const hexDigest = z.string().regex(/^[0-9a-f]{16,128}$/);

const partSchema = z.object({
  format: z.literal(PART_FORMAT),
  format_version: z.literal(PART_VERSION),
  step: nonNegativeInteger,
  rank: nonNegativeInteger,
  world_size: z.number().int().min(1),
  job_id: z.string().nullable(),
  run_id: z.string().nullable(),
  hash: z.object({ algorithm: z.enum(HASH_ALGORITHMS), sample_bytes: nonNegativeInteger }),
  metadata: z.record(z.string(), z.unknown()),
  files: z.array(z.object({
    path: z.string(),
    size: nonNegativeInteger,
    digest: hexDigest,
    samples: z.array(z.object({ offset: nonNegativeInteger, length: nonNegativeInteger, digest: hexDigest })),
    mtime_ms: z.number(),
  })),
  total_bytes: nonNegativeInteger,
  hash_duration_s: z.number().min(0),
  host: z.string(),
  pid: nonNegativeInteger,
  created_at: z.string(),
  part_digest: z.string().regex(/^sha256:[0-9a-f]{64}$/),
});

/**
 * Parses a part and checks its structure and self-digest. Returns the part,
 * or a one-line description of what is wrong with it.
 */
export async function parsePart(text: string): Promise<{ part: PartManifest } | { error: string }> {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    return { error: `not valid JSON: ${(err as Error).message}` };
  }
  const parsed = partSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    return { error: `field ${issue.path.join(".") || "(top level)"}: ${issue.message}` };
  }
  const part = parsed.data as PartManifest;
  const { part_digest: recorded, ...body } = part;
  const expected = await manifestDigest(body);
  if (expected !== recorded) {
    return { error: `self-digest mismatch: part says ${recorded}, its content hashes to ${expected}` };
  }
  return { part };
}

/**
 * Whether two parts record the same work: the same rank of the same
 * checkpoint with the same files and digests. A rank re-run after a crash
 * records an equivalent part; anything else claiming the rank is a conflict.
 */
export function equivalentParts(a: PartManifest, b: PartManifest): boolean {
  const key = (part: PartManifest) =>
    JSON.stringify([
      part.step,
      part.rank,
      part.world_size,
      part.job_id,
      part.run_id,
      part.hash,
      part.files.map((file) => [file.path, file.size, file.digest]),
    ]);
  return key(a) === key(b);
}

/** How far a multi-rank commit got, as `scan` reports it for a parts folder. */
export interface RankProgress {
  /** Ranks whose parts are recorded, ascending. */
  recorded: number[];
  /** The world size the parts record (null when no part is readable). */
  world_size: number | null;
  /** Ranks not recorded yet (empty when the world size is unknown). */
  missing: number[];
  /** Whether a rank claimed the merge. */
  claimed: boolean;
}

/**
 * Reads a parts folder for reporting: which ranks are recorded, out of how
 * many, and whether the merge was claimed. Informational only (parts are not
 * verified here; the merging rank verifies them).
 *
 * Requires `--allow-read`.
 */
export async function readRankProgress(partsDir: string): Promise<RankProgress> {
  const recorded: number[] = [];
  let claimed = false;
  for await (const entry of Deno.readDir(partsDir)) {
    const rank = rankOfPartFile(entry.name);
    if (rank !== undefined && entry.isFile) recorded.push(rank);
    if (entry.name === "commit.claim") claimed = true;
  }
  recorded.sort((a, b) => a - b);
  let worldSize: number | null = null;
  if (recorded.length > 0) {
    const bytes = await readFileLimited(`${partsDir}/${partFileName(recorded[0])}`, MAX_PART_BYTES)
      .catch(() => undefined);
    try {
      const value = bytes && JSON.parse(new TextDecoder().decode(bytes)).world_size;
      if (Number.isSafeInteger(value) && value > 0) worldSize = value;
    } catch {
      // An unreadable part leaves the world size unknown; the merging rank reports it.
    }
  }
  const missing: number[] = [];
  if (worldSize !== null && worldSize - recorded.length <= 1000) {
    const present = new Set(recorded);
    for (let rank = 0; rank < worldSize; rank++) if (!present.has(rank)) missing.push(rank);
  }
  return { recorded, world_size: worldSize, missing, claimed };
}
