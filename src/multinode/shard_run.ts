/**
 * Running one shard of a distributed validation. Every shard reads every
 * manifest and lists every checkpoint (metadata only), computes the same
 * plan, and reads the data of its own files only. Shard 0 also checks each
 * checkpoint as a whole (manifest, listing, presence and sizes, the small
 * files of deep layout checks) and, for a scan, the root itself (`latest`,
 * staging, strays): one node owns those findings, so a merge needs no
 * deduplication. Shards record nothing in the root's state and move
 * nothing: the merge does, once, as a single-node run would.
 *
 * @module
 */

import { basename } from "node:path";
import { defaultConcurrency, mapConcurrent } from "../fs/concurrency.ts";
import { CkptkitError } from "../errors.ts";
import { fingerprintCheckpoint } from "../core/fingerprint.ts";
import { HashPool } from "../fs/hash_pool.ts";
import { readLatest } from "../core/latest.ts";
import { listRoot } from "../core/root.ts";
import { DEFAULT_STALE_STAGING_S, latestProblem, markStale } from "../core/scan.ts";
import { assignShards, planDigest, type PlanEntry, type ShardSpec, type ShardUnit } from "./shard.ts";
import {
  encodeLayout,
  resultOfParts,
  SHARD_REPORT_FORMAT,
  SHARD_REPORT_VERSION,
  type ShardCheckpoint,
  type ShardReport,
  type ShardRootChecks,
} from "./shard_report.ts";
import {
  type CheckpointInspection,
  inspectCheckpoint,
  readCheckpointFiles,
  readLayoutInput,
  type ReadUnit,
  type ValidateOptions,
} from "../core/validate.ts";
import { hostName, VERSION } from "../version.ts";

/** Options for {@linkcode validateShard} and {@linkcode scanShard}. */
export interface ShardOptions extends ValidateOptions {
  /** Which shard this is, of how many. */
  shard: ShardSpec;
  /** Scan, shard 0: staging folders untouched for longer are stale, in seconds (default 3600). */
  staleStagingAfterS?: number;
}

/**
 * Validates this shard's share of one checkpoint and returns its report.
 * Throws, as `validateCheckpoint` does, only when `path` is not a folder.
 *
 * Requires `--allow-read`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { openCheckpointWriter } from "../core/writer.ts";
 * import { validateShard } from "./shard_run.ts";
 * const root = await Deno.makeTempDir();
 * const writer = await openCheckpointWriter(root, { step: 1 });
 * for (const name of ["a.bin", "b.bin", "c.bin"]) await writer.writeFile(name, new Uint8Array(1024));
 * const { path } = await writer.commit();
 * const report = await validateShard(path, { shard: { index: 1, count: 2 } });
 * assert.ok(report.ok);
 * assert.equal(report.checkpoints[0].files.length, 1);
 * await Deno.remove(root, { recursive: true });
 * ```
 */
export async function validateShard(path: string, options: ShardOptions): Promise<ShardReport> {
  const startedAt = new Date();
  const started = performance.now();
  const inspection = await inspectCheckpoint(path, { ...options, sizesBeforeReading: true });
  const target = await Deno.realPath(path);
  const { plan, covered, parts } = await runParts(
    [{ name: basename(target), path, inspection }],
    options,
    { inFlight: 1, detectGone: false },
  );
  return finishReport("validate", target, path, options, { plan, covered, parts, root: null, startedAt, started });
}

/**
 * Scans this shard's share of a root and returns its report: the same
 * listing, manifests and plan on every shard, the data of this shard's files.
 *
 * Requires `--allow-read`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { scanShard } from "./shard_run.ts";
 * const root = await Deno.makeTempDir();
 * const report = await scanShard(root, { shard: { index: 0, count: 4 } });
 * assert.ok(report.ok && report.checkpoints.length === 0 && report.root !== null);
 * await Deno.remove(root, { recursive: true });
 * ```
 */
export async function scanShard(root: string, options: ShardOptions): Promise<ShardReport> {
  const startedAt = new Date();
  const started = performance.now();
  const listing = await listRoot(root);
  // Metadata-only passes are bound by syscalls, not bandwidth: many checkpoints in flight.
  const inspected = await mapConcurrent(listing.checkpoints, 16, async (checkpoint) => {
    try {
      return {
        name: checkpoint.name,
        path: checkpoint.path,
        inspection: await inspectCheckpoint(checkpoint.path, { ...options, sizesBeforeReading: true }),
      };
    } catch (err) {
      if (err instanceof CkptkitError && err.reason === "not_found") {
        return { name: checkpoint.name, path: checkpoint.path, inspection: undefined };
      }
      throw err;
    }
  });
  const reads = ["full", "deep"].includes(options.depth ?? "full");
  const { plan, covered, parts } = await runParts(inspected, options, { inFlight: reads ? 2 : 16, detectGone: true });
  let rootChecks: ShardRootChecks | null = null;
  if (options.shard.index === 0) {
    rootChecks = {
      latest: await readLatest(listing.root),
      staging: markStale(listing.staging, options.staleStagingAfterS ?? DEFAULT_STALE_STAGING_S),
      strays: listing.strays,
    };
  }
  return finishReport("scan", listing.root, listing.root, options, {
    plan,
    covered,
    parts,
    root: rootChecks,
    startedAt,
    started,
  });
}

interface Inspected {
  name: string;
  path: string;
  /** Undefined when the checkpoint was gone before it could be inspected. */
  inspection: CheckpointInspection | undefined;
}

interface PlannedUnit extends ShardUnit {
  unit: ReadUnit;
}

async function runParts(
  inspected: readonly Inspected[],
  options: ShardOptions,
  how: { inFlight: number; detectGone: boolean },
): Promise<{ plan: PlanEntry[]; covered: ShardReport["covered"]; parts: ShardCheckpoint[] }> {
  const { index, count } = options.shard;
  const plan = inspected.map(({ name, inspection }) => ({ name, digest: inspection?.planKey ?? null }));
  const units: PlannedUnit[] = inspected.flatMap(({ name, inspection }) =>
    (inspection?.units ?? []).map((unit) => ({ checkpoint: name, path: unit.path, bytes: unit.cost, unit }))
  );
  const mine = assignShards(units, count)[index];
  const byCheckpoint = new Map<string, ReadUnit[]>();
  for (const planned of mine) {
    const list = byCheckpoint.get(planned.checkpoint);
    if (list) list.push(planned.unit);
    else byCheckpoint.set(planned.checkpoint, [planned.unit]);
  }
  const depth = options.depth ?? "full";
  const reads = depth === "full" || depth === "deep";
  const concurrency = options.concurrency ?? defaultConcurrency();
  // One pool for the whole shard (workers start only if something is hashed).
  using pool = options.hasher || !reads || concurrency < 2 ? undefined : new HashPool(concurrency);
  const readOptions = { ...options, hasher: options.hasher ?? pool };
  const parts = await mapConcurrent(inspected, how.inFlight, async ({ name, path, inspection }) => {
    if (!inspection) return gonePart(name, path);
    const started = performance.now();
    const files = await readCheckpointFiles(inspection, byCheckpoint.get(name) ?? [], readOptions);
    const whole = index === 0
      ? {
        files_checked: inspection.result.files_checked,
        problems: inspection.result.problems,
        notes: inspection.result.notes,
        layout: encodeLayout(await readLayoutInput(inspection)),
      }
      : null;
    const head = inspection.result;
    const part: ShardCheckpoint = {
      name,
      path: inspection.path,
      step: head.step,
      job_id: head.job_id,
      run_id: head.run_id,
      manifest_digest: head.manifest_digest,
      created_at: head.created_at,
      write_duration_s: head.write_duration_s,
      manifest_backed: head.manifest_backed,
      ok: true,
      gone: false,
      duration_s: 0,
      // Taken after the reads, as a single-node run records it: the merge trusts nothing that changed since.
      fingerprint: head.manifest_backed && reads ? (await fingerprintCheckpoint(inspection.path)) ?? null : null,
      whole,
      files,
    };
    part.duration_s = round((performance.now() - started) / 1000);
    part.ok = resultOfParts(depth, part, whole, files, { layout: false, durationS: 0 }).ok;
    // A checkpoint deleted by gc mid-scan is gone, not corrupt.
    if (how.detectGone && !part.ok && !(await Deno.lstat(path).then(() => true, () => false))) {
      return gonePart(name, path);
    }
    return part;
  });
  return {
    plan,
    covered: { files: mine.length, bytes: mine.reduce((sum, u) => sum + u.bytes, 0) },
    parts,
  };
}

function gonePart(name: string, path: string): ShardCheckpoint {
  return {
    name,
    path,
    step: null,
    job_id: null,
    run_id: null,
    manifest_digest: null,
    created_at: null,
    write_duration_s: null,
    manifest_backed: false,
    ok: true,
    gone: true,
    duration_s: 0,
    fingerprint: null,
    whole: null,
    files: [],
  };
}

function finishReport(
  kind: ShardReport["kind"],
  target: string,
  path: string,
  options: ShardOptions,
  run: {
    plan: PlanEntry[];
    covered: ShardReport["covered"];
    parts: ShardCheckpoint[];
    root: ShardRootChecks | null;
    startedAt: Date;
    started: number;
  },
): ShardReport {
  const depth = options.depth ?? "full";
  let ok = run.parts.every((part) => part.ok);
  if (run.root) {
    // What shard 0 can tell of latest alone; whether it names a valid checkpoint is known after the merge.
    const partial = run.parts.filter((p) => !p.gone).map((p) =>
      resultOfParts(depth, p, p.whole, p.files, { layout: false, durationS: 0 })
    );
    ok &&= latestProblem(run.root.latest, partial) === null && run.root.staging.every((s) => !s.stale);
  }
  return {
    format: SHARD_REPORT_FORMAT,
    format_version: SHARD_REPORT_VERSION,
    ckptkit_version: VERSION,
    kind,
    target,
    path,
    shard: { index: options.shard.index, count: options.shard.count },
    depth,
    sample_bytes: depth === "sample" ? options.sampleBytes ?? null : null,
    plan_digest: planDigest(run.plan),
    plan: run.plan,
    covered: run.covered,
    ok,
    started_at: run.startedAt.toISOString(),
    finished_at: new Date().toISOString(),
    duration_s: round((performance.now() - run.started) / 1000),
    host: hostName(),
    checkpoints: run.parts,
    root: run.root,
  };
}

function round(seconds: number): number {
  return Math.round(seconds * 1e6) / 1e6;
}
