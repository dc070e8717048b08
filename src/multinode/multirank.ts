/**
 * Multi-rank commits: many processes (ranks) write one checkpoint into a
 * shared staging folder on a shared POSIX file system; each rank hashes the
 * files it wrote and records a part-manifest; the rank that completes the
 * set, whichever it is, merges the parts into the manifest and runs the
 * commit protocol once.
 *
 * The parts live beside the staging folder (`<staging>.parts/`), not inside
 * it, so a rank that arrives late can never add a file to a folder that is
 * being renamed into place. A part is created exclusively with link(2), the
 * exclusive creation that also holds on NFS, and fsynced; the right to merge
 * is claimed the same way, so exactly one rank commits.
 *
 * @module
 */

import { basename, dirname } from "node:path";
import {
  checkIdentity,
  type CheckpointIdentity,
  finishCommit,
  prepareRoot,
  realStagingFolder,
} from "../core/commit.ts";
import type { CommitResult } from "../core/record.ts";
import { fsyncPath, readFileLimited, writeFileAtomic } from "../fs/durable.ts";
import { asCkptkitError, CkptkitError } from "../errors.ts";
import { checkpointName, isStagingName, MANIFEST_NAME, MANIFEST_TEMP_PREFIX } from "../core/layout.ts";
import { createManifest, type Manifest, parseManifest, readManifestFile } from "../core/manifest.ts";
import {
  createPart,
  equivalentParts,
  MAX_PART_BYTES,
  parsePart,
  type PartFile,
  partFileName,
  type PartManifest,
  PARTS_SUFFIX,
  rankOfPartFile,
  serializePart,
} from "../core/part.ts";
import { unsafePathReason } from "../fs/paths.ts";
import { exists, type FaultHook, publishCheckpoint } from "../core/publish.ts";
import { DEFAULT_SAMPLE_BYTES } from "../fs/hashing.ts";
import {
  checkHashingOptions,
  type HashingOptions,
  hashTreeFiles,
  refuseForeignManifest,
  refuseReservedNames,
  removeManifestLeftovers,
} from "../core/seal_files.ts";
import { listTree, oddityError, type TreeFile } from "../fs/tree.ts";
import { removeTreeOnDevice } from "../fs/remove.ts";
import { mountPointsUnder, rmdirSaysMountPoint } from "../fs/mounts.ts";
import { hostName, VERSION } from "../version.ts";
import { DEFAULT_WAIT_TIMEOUT_MS, MAX_WORLD_SIZE } from "../defaults.ts";

export { DEFAULT_WAIT_TIMEOUT_MS, MAX_WORLD_SIZE };

const CLAIM_NAME = "commit.claim";
const FAILURE_NAME = "commit-failed.json";

/** Options for {@linkcode commitRank}. */
export interface RankCommitOptions extends CheckpointIdentity, HashingOptions {
  /** The checkpoint root; the staging folder must be a `.staging-*` folder directly inside it. */
  root: string;
  /** This rank, 0-based. */
  rank: number;
  /** Number of ranks writing the checkpoint. */
  worldSize: number;
  /**
   * Files (or folders, taken whole) this rank wrote, relative to the staging
   * folder. Empty when the rank wrote nothing.
   */
  rankFiles?: readonly string[];
  /** Block until the checkpoint is committed (or the commit failed, or the timeout passed). */
  wait?: boolean;
  /** How long `wait` blocks, in ms (default 600 000). */
  waitTimeoutMs?: number;
  /** Longest pause between two looks at the shared folder while waiting, in ms (default 1000). */
  pollIntervalMs?: number;
  /** How long the merging rank waits for the root lock, in ms. */
  lockTimeoutMs?: number;
  /** Fault injection for crash tests. */
  faultHook?: FaultHook;
}

/**
 * What happened to this rank:
 * - `committed`: this rank completed the set and committed the checkpoint;
 * - `committed_by_other`: another rank committed it, with this rank's part;
 * - `recorded`: the part is recorded and the set is not complete yet (without `wait`);
 * - `already_committed`: the checkpoint was committed before this rank ran, with its files.
 */
export type RankOutcome = "committed" | "committed_by_other" | "recorded" | "already_committed";

/** What {@linkcode commitRank} did; also the `--json` document of a multi-rank `ckptkit commit`. */
export interface RankCommitResult {
  /** See {@linkcode RankOutcome}. */
  outcome: RankOutcome;
  /** This rank. */
  rank: number;
  /** Number of ranks. */
  world_size: number;
  /** The checkpoint's step. */
  step: number;
  /** Its folder name, e.g. `step-10`. */
  name: string;
  /** Its final path (not there yet when `recorded`). */
  path: string;
  /** The shared staging folder. */
  staging: string;
  /** Ranks whose parts were recorded when this rank last looked. */
  ranks_recorded: number;
  /** Ranks still missing when this rank last looked. */
  ranks_missing: number[];
  /** Self-digest of this rank's part (null for `already_committed`). */
  part_digest: string | null;
  /** Files this rank wrote. */
  files: number;
  /** Their bytes. */
  bytes: number;
  /** The rank that committed, when known. */
  committed_by: number | null;
  /** The commit's result, when this rank committed. */
  commit: CommitResult | null;
  /** Wall time in seconds. */
  duration_s: number;
}

/**
 * Records this rank's share of a checkpoint written by several ranks, and
 * commits the checkpoint when this rank completes the set.
 *
 * Every rank runs it after writing its files into the shared staging folder
 * (`<root>/.staging-…`): it hashes its files (fsyncing them), records its
 * part exclusively, then looks at the other parts. The rank that finds all
 * `worldSize` parts claims the merge, checks that the parts agree, cover
 * every file of the staging folder without overlap and that no file changed
 * since its rank hashed it, writes the manifest and runs the commit protocol
 * once. With `wait`, the other ranks block until the checkpoint is visible.
 *
 * Throws a {@linkcode CkptkitError}: `part_mismatch` when ranks disagree on
 * the world size, step, job, run, hashing or metadata; `part_conflict` when a
 * rank is recorded twice with different files or two ranks name one file;
 * `checkpoint_exists` when the step was committed by another attempt;
 * `commit_failed` (to waiting ranks) when the merging rank failed;
 * `wait_timeout`; and what {@linkcode commitCheckpoint} throws.
 *
 * Requires `--allow-read`, `--allow-write` and `--allow-sys`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { commitRank } from "./multirank.ts";
 * const root = await Deno.makeTempDir();
 * const staging = `${root}/.staging-step-10-job1`;
 * await Deno.mkdir(staging);
 * await Deno.writeTextFile(`${staging}/rank0.pt`, "shard 0");
 * await Deno.writeTextFile(`${staging}/rank1.pt`, "shard 1");
 * const first = await commitRank(staging, { root, step: 10, rank: 1, worldSize: 2, rankFiles: ["rank1.pt"] });
 * assert.ok(first.outcome === "recorded");
 * const last = await commitRank(staging, { root, step: 10, rank: 0, worldSize: 2, rankFiles: ["rank0.pt"] });
 * assert.ok(last.outcome === "committed" && last.commit?.files === 2);
 * await Deno.remove(root, { recursive: true });
 * ```
 */
export async function commitRank(stagingDir: string, options: RankCommitOptions): Promise<RankCommitResult> {
  const started = performance.now();
  checkIdentity(options);
  checkHashingOptions(options);
  checkRankOptions(options);
  const root = await prepareRoot(options.root);
  const name = checkpointName(options.step);
  const finalPath = `${root}/${name}`;
  const base = {
    rank: options.rank,
    world_size: options.worldSize,
    step: options.step,
    name,
    path: finalPath,
    staging: stagingDir,
    started,
  };
  if (await exists(finalPath)) {
    return await arrivedAfterCommit(base, options, undefined);
  }
  const staging = await checkRankStaging(stagingDir, root);
  const partsDir = `${staging}${PARTS_SUFFIX}`;
  const context: RankContext = { ...base, staging, root, partsDir, options };

  const identity: PartIdentity = {
    rank: options.rank,
    world_size: options.worldSize,
    step: options.step,
    job_id: options.jobId ?? null,
    run_id: options.runId ?? null,
    hash: { algorithm: options.algorithm ?? "sha256", sample_bytes: options.sampleBytes ?? DEFAULT_SAMPLE_BYTES },
    metadata: options.metadata ?? {},
  };
  const seenBefore = await readParts(partsDir, identity);
  const listed = await resolveRankFiles(staging, options.rankFiles ?? []);
  const hashStarted = performance.now();
  const hashed = listed.length === 0 ? [] : await hashTreeFiles(staging, listed, options);
  // The merging rank compares each file's mtime with the one it had while its rank read it.
  const files: PartFile[] = hashed.map(({ mtimeMs, ...file }) => ({ ...file, mtime_ms: mtimeMs }));
  await options.faultHook?.("part_hashed");
  const part = await recordPart(partsDir, {
    ...identity,
    files,
    hash_duration_s: round((performance.now() - hashStarted) / 1000),
    host: hostName(),
    pid: Deno.pid,
    created_at: new Date().toISOString(),
  });
  await options.faultHook?.("part_recorded");
  return await settle(context, part, seenBefore);
}

interface RankBase {
  rank: number;
  world_size: number;
  step: number;
  name: string;
  path: string;
  staging: string;
  started: number;
}

interface RankContext extends RankBase {
  root: string;
  partsDir: string;
  options: RankCommitOptions;
}

function checkRankOptions(options: RankCommitOptions): void {
  const { rank, worldSize, waitTimeoutMs, pollIntervalMs } = options;
  if (!Number.isSafeInteger(worldSize) || worldSize < 1 || worldSize > MAX_WORLD_SIZE) {
    throw new CkptkitError(
      "invalid_argument",
      `Cannot commit as 'worldSize' must be an integer from 1 to ${MAX_WORLD_SIZE}: current value is ${worldSize}`,
    );
  }
  if (!Number.isSafeInteger(rank) || rank < 0 || rank >= worldSize) {
    throw new CkptkitError(
      "invalid_argument",
      `Cannot commit as 'rank' must be an integer from 0 to ${worldSize - 1} (world size ${worldSize}): ` +
        `current value is ${rank}`,
    );
  }
  for (const [key, value] of [["waitTimeoutMs", waitTimeoutMs], ["pollIntervalMs", pollIntervalMs]] as const) {
    if (value !== undefined && (!Number.isFinite(value) || value < 0)) {
      throw new CkptkitError(
        "invalid_argument",
        `Cannot commit as '${key}' must be a non-negative number: current value is ${value}`,
      );
    }
  }
}

/**
 * The staging folder must sit directly in the root under a `.staging-` name,
 * so that a set that never completes is reported by `scan` and collected by
 * `gc` like any crashed write.
 */
async function checkRankStaging(stagingDir: string, root: string): Promise<string> {
  const staging = await realStagingFolder(stagingDir);
  const name = basename(staging);
  if (dirname(staging) !== root || !isStagingName(name) || name.endsWith(PARTS_SUFFIX)) {
    throw new CkptkitError(
      "staging_invalid",
      `${stagingDir} cannot take a multi-rank commit: its staging folder must be a .staging-* folder directly ` +
        `inside the root (e.g. ${root}/.staging-step-N-$SLURM_JOB_ID), so an unfinished one is found by scan and gc`,
      { path: stagingDir },
    );
  }
  return staging;
}

/** Lists the files a rank names, expanding folders, refusing anything outside the staging folder. */
async function resolveRankFiles(staging: string, paths: readonly string[]): Promise<TreeFile[]> {
  const found = new Map<string, TreeFile>();
  const stagingDevice = (await Deno.stat(staging)).dev;
  const mountPoints = paths.length > 0 ? await mountPointsUnder(staging) : new Set<string>();
  for (const raw of paths) {
    const path = normaliseRankPath(raw);
    const unsafe = unsafePathReason(path) ??
      (path === MANIFEST_NAME || path.startsWith(MANIFEST_TEMP_PREFIX) ? "names ckptkit's manifest" : undefined);
    if (unsafe) {
      throw new CkptkitError("unsafe_path", `Rank file ${JSON.stringify(raw)}: ${unsafe}`, { path: raw });
    }
    const absolute = `${staging}/${path}`;
    let info: Deno.FileInfo;
    try {
      info = await Deno.lstat(absolute);
    } catch (err) {
      throw new CkptkitError(
        err instanceof Deno.errors.NotFound ? "not_found" : "io_error",
        `Rank file ${path} is not in ${staging}: ${(err as Error).message}; name files relative to the staging folder`,
        { path: absolute, cause: err },
      );
    }
    await refuseSymlinkedParents(staging, path);
    if (
      info.dev !== stagingDevice || mountPoints.has(path) ||
      (info.isDirectory && await rmdirSaysMountPoint(absolute))
    ) {
      throw oddityError(staging, { path, kind: "mount_point" });
    }
    if (info.isFile) {
      found.set(path, { path, size: info.size, mtimeMs: info.mtime?.getTime() ?? 0 });
    } else if (info.isDirectory) {
      const tree = await listTree(absolute, { probeMounts: true });
      const [odd] = tree.oddities;
      if (odd) throw oddityError(absolute, odd);
      if (tree.errors.length > 0) {
        throw new CkptkitError(
          "io_error",
          `Cannot read ${absolute}/${tree.errors[0].path}: ${tree.errors[0].message}`,
          {
            path: absolute,
          },
        );
      }
      for (const file of tree.files.values()) {
        const inside = `${path}/${file.path}`;
        found.set(inside, { ...file, path: inside });
      }
    } else {
      throw new CkptkitError(
        "unsupported_entry",
        `${absolute} is ${info.isSymlink ? "a symbolic link" : "not a regular file"}; ` +
          `checkpoints may hold only regular files and folders`,
        { path: absolute },
      );
    }
  }
  return [...found.values()];
}

/** `./a/b/` → `a/b`: the form in which manifests record paths. */
function normaliseRankPath(path: string): string {
  return path.replace(/\/+$/, "").replace(/^(\.\/)+/, "");
}

/** A symlinked folder on the way to a rank file would let a rank hash files outside the staging folder. */
async function refuseSymlinkedParents(staging: string, path: string): Promise<void> {
  const segments = path.split("/");
  for (let i = 1; i < segments.length; i++) {
    const parent = `${staging}/${segments.slice(0, i).join("/")}`;
    const info = await Deno.lstat(parent);
    if (info.isSymlink) {
      throw new CkptkitError(
        "unsupported_entry",
        `${parent} is a symbolic link; checkpoints may hold only regular files and folders`,
        { path: parent },
      );
    }
  }
}

/**
 * Records a part exclusively: the content is written and fsynced under a
 * temporary name, then hard-linked to its final name, which fails if the
 * rank already has a part. A reader thus never sees a torn part, and two
 * processes claiming one rank cannot both succeed.
 */
async function recordPart(partsDir: string, fields: Parameters<typeof createPart>[0]): Promise<PartManifest> {
  const part = await createPart(fields);
  try {
    await Deno.mkdir(partsDir);
    await fsyncPath(dirname(partsDir));
  } catch (err) {
    if (!(err instanceof Deno.errors.AlreadyExists)) {
      throw asCkptkitError(err, `Creating ${partsDir}`, partsDir);
    }
    const info = await Deno.lstat(partsDir);
    if (info.isSymlink || !info.isDirectory) {
      throw new CkptkitError("unsafe_path", `${partsDir} is not a real folder; remove it`, { path: partsDir });
    }
  }
  const finalPath = `${partsDir}/${partFileName(part.rank)}`;
  const temp = `${partsDir}/.${partFileName(part.rank)}.tmp-${crypto.randomUUID().slice(0, 8)}`;
  try {
    await writeNewFile(temp, serializePart(part));
    try {
      await Deno.link(temp, finalPath);
    } catch (err) {
      if (!(err instanceof Deno.errors.AlreadyExists)) throw err;
      const existing = await readPart(finalPath, part.rank);
      if (!equivalentParts(existing, part)) {
        throw new CkptkitError(
          "part_conflict",
          `Rank ${part.rank} of step ${part.step} is already recorded in ${partsDir} with different files ` +
            `(by pid ${existing.pid} on ${existing.host} at ${existing.created_at}): two processes were given ` +
            `rank ${part.rank}, or the staging folder holds an earlier attempt; use one staging folder per attempt`,
          { path: finalPath },
        );
      }
      return existing;
    }
    await fsyncPath(partsDir);
    return part;
  } catch (err) {
    throw asCkptkitError(err, `Recording the part of rank ${part.rank}`, finalPath);
  } finally {
    await Deno.remove(temp).catch(() => {});
  }
}

async function writeNewFile(path: string, text: string): Promise<void> {
  const file = await Deno.open(path, { write: true, createNew: true, mode: 0o644 });
  try {
    const bytes = new TextEncoder().encode(text);
    let written = 0;
    while (written < bytes.length) written += await file.write(bytes.subarray(written));
    await file.sync();
  } finally {
    file.close();
  }
}

async function readPart(path: string, rank: number): Promise<PartManifest> {
  const bytes = await readFileLimited(path, MAX_PART_BYTES);
  const parsed = bytes === undefined
    ? { error: `larger than ${MAX_PART_BYTES} bytes` }
    : await parsePart(new TextDecoder().decode(bytes));
  if ("error" in parsed) {
    throw new CkptkitError("part_mismatch", `The part of rank ${rank} (${path}) is damaged: ${parsed.error}`, {
      path,
    });
  }
  if (parsed.part.rank !== rank) {
    throw new CkptkitError(
      "part_mismatch",
      `${path} records rank ${parsed.part.rank}, not rank ${rank}; the parts folder was tampered with`,
      { path },
    );
  }
  return parsed.part;
}

/**
 * Reads every recorded part; a part that disagrees with this rank's is
 * refused. Also called before hashing, so that a rank started with another
 * world size is refused before it records anything. A part never changes
 * once it has its name (it is linked into place whole), so the parts in
 * `known` are not read again: a waiting rank lists the folder on each look
 * and reads only the parts that are new since the last one.
 */
async function readParts(
  partsDir: string,
  own: PartIdentity,
  known: ReadonlyMap<number, PartManifest> = new Map(),
): Promise<Map<number, PartManifest>> {
  const parts = new Map<number, PartManifest>();
  let entries: Deno.DirEntry[];
  try {
    entries = await Array.fromAsync(Deno.readDir(partsDir));
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return parts;
    throw asCkptkitError(err, `Reading ${partsDir}`, partsDir);
  }
  for (const entry of entries) {
    const rank = rankOfPartFile(entry.name);
    if (rank === undefined || !entry.isFile) continue;
    const seen = known.get(rank);
    if (seen) {
      parts.set(rank, seen);
      continue;
    }
    // The merging rank removes the folder once it has committed; a vanished part sends the caller back to look.
    const part = await readPart(`${partsDir}/${entry.name}`, rank).catch((err) => {
      if (err instanceof Deno.errors.NotFound) return undefined;
      throw err;
    });
    if (!part) continue;
    const disagreement = disagreementOf(part, own);
    if (disagreement) {
      throw new CkptkitError(
        "part_mismatch",
        `Rank ${part.rank} (pid ${part.pid} on ${part.host}) recorded ${disagreement} in ${partsDir}; ` +
          `every rank of one checkpoint must be started with the same values`,
        { path: partsDir },
      );
    }
    parts.set(rank, part);
  }
  return parts;
}

/** What every rank of one checkpoint must agree on. */
type PartIdentity = Pick<PartManifest, "rank" | "world_size" | "step" | "job_id" | "run_id" | "hash" | "metadata">;

function disagreementOf(part: PartManifest, own: PartIdentity): string | undefined {
  const fields: [string, unknown, unknown][] = [
    ["world size", part.world_size, own.world_size],
    ["step", part.step, own.step],
    ["job id", part.job_id, own.job_id],
    ["run id", part.run_id, own.run_id],
    ["hash algorithm", part.hash.algorithm, own.hash.algorithm],
    ["sample bytes", part.hash.sample_bytes, own.hash.sample_bytes],
    ["metadata", JSON.stringify(part.metadata), JSON.stringify(own.metadata)],
  ];
  for (const [label, theirs, ours] of fields) {
    if (theirs !== ours) {
      return `${label} ${JSON.stringify(theirs)} where rank ${own.rank} has ${JSON.stringify(ours)}`;
    }
  }
  if (part.rank >= own.world_size) return `rank ${part.rank}, outside world size ${own.world_size}`;
  return undefined;
}

/**
 * Looks at the shared folders until there is an outcome: the checkpoint is
 * visible, this rank completes the set and commits, the merging rank failed,
 * or (without `wait`) the part is recorded. Waiting ranks also try to
 * complete the set, because a network file system may show the last part to
 * some ranks only after a delay.
 */
async function settle(
  context: RankContext,
  own: PartManifest,
  seenBefore: ReadonlyMap<number, PartManifest>,
): Promise<RankCommitResult> {
  const { options } = context;
  let known = new Map([...seenBefore, [own.rank, own]]);
  const deadline = performance.now() + (options.waitTimeoutMs ?? DEFAULT_WAIT_TIMEOUT_MS);
  let pause = 50;
  while (true) {
    if (await exists(context.path)) return await arrivedAfterCommit(context, context.options, own);
    const failure = await readFailure(context.partsDir);
    if (failure) {
      throw new CkptkitError(
        "commit_failed",
        `Rank ${failure.rank} merged the parts of ${context.name} but could not commit it ` +
          `(${failure.reason}: ${failure.message}); nothing was committed`,
        { path: context.staging },
      );
    }
    const parts = await readParts(context.partsDir, own, known);
    known = parts;
    const missing = missingRanks(parts, own.world_size);
    if (missing.length === 0 && await claimMerge(context.partsDir, own)) {
      return await mergeAndCommit(context, own, parts);
    }
    const recorded = { ranks_recorded: parts.size, ranks_missing: missing };
    if (!options.wait) return result(context, shareOf(own), "recorded", recorded, null, null);
    if (performance.now() >= deadline) {
      const claim = await readClaim(context.partsDir);
      throw new CkptkitError(
        "wait_timeout",
        `${context.name} was not committed within ${formatMs(options.waitTimeoutMs ?? DEFAULT_WAIT_TIMEOUT_MS)}: ` +
          (missing.length > 0
            ? `${parts.size} of ${own.world_size} ranks recorded their parts (missing ${formatRanks(missing)})`
            : `every rank recorded its part and ${claim ?? "another rank"} claimed the commit but did not finish`) +
          `; nothing is visible, and gc collects ${basename(context.staging)} once it is stale`,
        { path: context.staging },
      );
    }
    await new Promise((resolve) => setTimeout(resolve, Math.min(pause, deadline - performance.now())));
    pause = Math.min(pause * 2, options.pollIntervalMs ?? 1000);
  }
}

function missingRanks(parts: Map<number, PartManifest>, worldSize: number): number[] {
  const missing: number[] = [];
  for (let rank = 0; rank < worldSize; rank++) if (!parts.has(rank)) missing.push(rank);
  return missing;
}

/** Claims the right to merge; exactly one rank succeeds, even on NFS (exclusive link). */
async function claimMerge(partsDir: string, own: PartManifest): Promise<boolean> {
  const temp = `${partsDir}/.${CLAIM_NAME}.tmp-${crypto.randomUUID().slice(0, 8)}`;
  try {
    await writeNewFile(temp, `rank ${own.rank} (pid ${Deno.pid} on ${hostName()}) at ${new Date().toISOString()}\n`);
    await Deno.link(temp, `${partsDir}/${CLAIM_NAME}`);
    return true;
  } catch (err) {
    // On NFS a retransmitted LINK can report EEXIST although the first one
    // succeeded; the temporary file's link count tells (open(2), O_EXCL).
    if (err instanceof Deno.errors.AlreadyExists) {
      if ((await Deno.lstat(temp)).nlink === 2) return true;
      // A claim of this very rank is an earlier attempt of it that died before committing (recordPart took this
      // run as its retry, and nothing is visible yet): left alone, the checkpoint would never be committed.
      return (await readClaim(partsDir))?.startsWith(`rank ${own.rank} (`) ?? false;
    }
    // The folder is gone: the merging rank committed and cleaned up.
    if (err instanceof Deno.errors.NotFound) return false;
    throw asCkptkitError(err, `Claiming the commit in ${partsDir}`, partsDir);
  } finally {
    await Deno.remove(temp).catch(() => {});
  }
}

async function readClaim(partsDir: string): Promise<string | undefined> {
  return await Deno.readTextFile(`${partsDir}/${CLAIM_NAME}`).then((text) => text.trim(), () => undefined);
}

interface FailureRecord {
  rank: number;
  reason: string;
  message: string;
}

async function readFailure(partsDir: string): Promise<FailureRecord | undefined> {
  const bytes = await readFileLimited(`${partsDir}/${FAILURE_NAME}`, 64 * 1024).catch(() => undefined);
  if (!bytes) return undefined;
  try {
    const record = JSON.parse(new TextDecoder().decode(bytes));
    return { rank: Number(record.rank), reason: String(record.reason), message: String(record.message) };
  } catch {
    return { rank: -1, reason: "io_error", message: "the failure record is unreadable" };
  }
}

/** Merges every part into the manifest and commits; on failure, tells the waiting ranks why. */
async function mergeAndCommit(
  context: RankContext,
  own: PartManifest,
  parts: Map<number, PartManifest>,
): Promise<RankCommitResult> {
  try {
    const { manifest, dirs } = await mergeParts(context, own, parts);
    const outcome = await publishCheckpoint({
      root: context.root,
      stagingDir: context.staging,
      stagingDirs: dirs,
      name: context.name,
      manifest,
      lockTimeoutMs: context.options.lockTimeoutMs,
      faultHook: context.options.faultHook,
    });
    const commit = await finishCommit(context.root, manifest, outcome, context.started);
    await removeTreeOnDevice(context.partsDir).catch(() => {});
    return result(
      context,
      shareOf(own),
      "committed",
      { ranks_recorded: parts.size, ranks_missing: [] },
      own.rank,
      commit,
    );
  } catch (err) {
    const error = asCkptkitError(err, `Committing ${context.path}`, context.path);
    if (!(await exists(context.path).catch(() => false))) {
      await writeFileAtomic(
        `${context.partsDir}/${FAILURE_NAME}`,
        JSON.stringify({ rank: own.rank, reason: error.reason, message: error.message }) + "\n",
      ).catch(() => {});
    }
    throw error;
  }
}

/** Checks the parts against the staging folder and builds the checkpoint's manifest. */
async function mergeParts(
  context: RankContext,
  own: PartManifest,
  parts: Map<number, PartManifest>,
): Promise<{ manifest: Manifest; dirs: string[] }> {
  const owner = new Map<string, { part: PartManifest; file: PartFile }>();
  for (const part of [...parts.values()].sort((a, b) => a.rank - b.rank)) {
    for (const file of part.files) {
      const other = owner.get(file.path);
      if (other) {
        throw new CkptkitError(
          "part_conflict",
          `${file.path} is named by rank ${other.part.rank} and by rank ${part.rank}; each file belongs to one rank`,
          { path: `${context.staging}/${file.path}` },
        );
      }
      owner.set(file.path, { part, file });
    }
  }
  await refuseForeignManifest(context.staging, own.step);
  // A merging rank killed while writing the manifest leaves its temporary file; it must not be committed.
  await removeManifestLeftovers(context.staging);
  const tree = await listTree(context.staging, { skipTopLevel: (name) => name === MANIFEST_NAME, probeMounts: true });
  const odd = tree.oddities[0];
  if (odd) throw oddityError(context.staging, odd);
  refuseReservedNames(context.staging, [...tree.files.keys(), ...tree.dirs]);
  if (tree.errors.length > 0) {
    throw new CkptkitError("io_error", `Cannot read ${context.staging}: ${tree.errors[0].message}`, {
      path: context.staging,
    });
  }
  const unclaimed = [...tree.files.keys()].filter((path) => !owner.has(path));
  if (unclaimed.length > 0) {
    throw new CkptkitError(
      "staging_invalid",
      `${unclaimed.length} file(s) in ${context.staging} are named by no rank (${unclaimed.slice(0, 5).join(", ")}` +
        `${unclaimed.length > 5 ? ", …" : ""}); the rank that wrote each must list it in --rank-files`,
      { path: context.staging },
    );
  }
  for (const [path, { part, file }] of owner) {
    const now = tree.files.get(path);
    if (!now || now.size !== file.size || now.mtimeMs !== file.mtime_ms) {
      throw new CkptkitError(
        "file_changed",
        `${context.staging}/${path} ${now ? "changed" : "disappeared"} after rank ${part.rank} hashed it ` +
          `(${now ? `size ${now.size} mtime ${now.mtimeMs}, hashed ${file.size} mtime ${file.mtime_ms}` : "gone"})`,
        { path: `${context.staging}/${path}` },
      );
    }
  }
  if (owner.size === 0) {
    throw new CkptkitError("staging_invalid", `${context.staging} holds no files to commit`, {
      path: context.staging,
    });
  }
  const ordered = [...parts.values()].sort((a, b) => a.rank - b.rank);
  const manifest = await createManifest({
    job_id: own.job_id,
    run_id: own.run_id,
    step: own.step,
    created_at: new Date().toISOString(),
    write_duration_s: Math.max(...ordered.map((part) => part.hash_duration_s)),
    writer: { host: hostName(), ckptkit_version: VERSION },
    hash: own.hash,
    files: ordered.flatMap((part) => part.files.map(({ mtime_ms: _mtime, ...file }) => file)),
    metadata: own.metadata,
    ranks: {
      world_size: own.world_size,
      committed_by: own.rank,
      parts: ordered.map((part) => ({
        rank: part.rank,
        host: part.host,
        files: part.files.length,
        bytes: part.total_bytes,
        part_digest: part.part_digest,
      })),
    },
  });
  return { manifest, dirs: tree.dirs };
}

/**
 * The step's checkpoint is already visible: it is this rank's commit when its
 * manifest records this rank's part (or, for a rank that never recorded one,
 * every file it names), and another attempt's otherwise.
 */
async function arrivedAfterCommit(
  base: RankBase,
  options: RankCommitOptions,
  own: PartManifest | undefined,
): Promise<RankCommitResult> {
  const manifest = await readCommittedManifest(base.path);
  const recorded = manifest?.ranks?.parts.find((part) => part.rank === base.rank);
  const listed = new Set(manifest?.files.map((file) => file.path));
  const ours = manifest?.ranks?.world_size === base.world_size && recorded !== undefined &&
    manifest.job_id === (options.jobId ?? null) && manifest.run_id === (options.runId ?? null) &&
    (own ? recorded.part_digest === own.part_digest : (options.rankFiles ?? []).every((path) => {
      const clean = normaliseRankPath(path);
      return listed.has(clean) || [...listed].some((file) => file.startsWith(`${clean}/`));
    }));
  if (!ours) {
    throw new CkptkitError(
      "checkpoint_exists",
      `${base.path} already exists and was not committed with this rank's part ` +
        `(${
          manifest?.ranks
            ? `world size ${manifest.ranks.world_size}, run ${JSON.stringify(manifest.run_id)}`
            : "not a multi-rank commit"
        }); ` +
        `a committed checkpoint is never replaced`,
      { path: base.path },
    );
  }
  return result(
    base,
    own ? shareOf(own) : { part_digest: null, files: recorded!.files, bytes: recorded!.bytes },
    own ? "committed_by_other" : "already_committed",
    { ranks_recorded: manifest!.ranks!.parts.length, ranks_missing: [] },
    manifest!.ranks!.committed_by,
    null,
  );
}

/** The committed checkpoint's manifest, read as untrusted input (never through a symlink); undefined when unusable. */
async function readCommittedManifest(path: string): Promise<Manifest | undefined> {
  const read = await readManifestFile(path);
  return "problem" in read ? undefined : (await parseManifest(read.text)).manifest;
}

/** This rank's share, as its result reports it. */
interface RankShare {
  part_digest: string | null;
  files: number;
  bytes: number;
}

function shareOf(part: PartManifest): RankShare {
  return { part_digest: part.part_digest, files: part.files.length, bytes: part.total_bytes };
}

function result(
  context: RankBase,
  share: RankShare,
  outcome: RankOutcome,
  ranks: { ranks_recorded: number; ranks_missing: number[] },
  committedBy: number | null,
  commit: CommitResult | null,
): RankCommitResult {
  return {
    outcome,
    rank: context.rank,
    world_size: context.world_size,
    step: context.step,
    name: context.name,
    path: context.path,
    staging: context.staging,
    ...ranks,
    ...share,
    committed_by: committedBy,
    commit,
    duration_s: round((performance.now() - context.started) / 1000),
  };
}

/** "2, 5, 7" or "2, 5, 7 and 12 more" for long lists. */
function formatRanks(ranks: number[]): string {
  return ranks.length <= 10 ? ranks.join(", ") : `${ranks.slice(0, 10).join(", ")} and ${ranks.length - 10} more`;
}

function formatMs(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000} s` : `${ms} ms`;
}

function round(seconds: number): number {
  return Math.round(seconds * 1e6) / 1e6;
}
