/**
 * `scan`: validates every checkpoint of a root (newest first) and reports,
 * besides each checkpoint's problems, crashed writes, a broken `latest` and
 * folders that look like checkpoints but have no manifest. Invalid
 * checkpoints, stale staging and a broken `latest` make the scan fail;
 * strays (foreign or misnamed folders) are reported as hints.
 *
 * @module
 */

import { defaultConcurrency, mapConcurrent } from "../fs/concurrency.ts";
import { HashPool } from "../fs/hash_pool.ts";
import type { RepairPoint } from "../commit_points.ts";
import { fingerprintCheckpoint } from "./fingerprint.ts";
import { CkptkitError } from "../errors.ts";
import { DEFAULT_STALE_STAGING_S } from "../defaults.ts";
import { type LatestPointer, readLatest } from "./latest.ts";
import { acquireRootLock } from "./lock.ts";
import { orphanQuarantineRecords, quarantineLocked, type QuarantineResult } from "./quarantine.ts";
import { CORRUPT_DIR } from "./layout.ts";
import { recordValidations } from "./record.ts";
import { listRoot, type RootStaging, type RootStray } from "./root.ts";
import { validateCheckpoint, type ValidateOptions, type ValidationDepth, type ValidationResult } from "./validate.ts";

/** Options for {@linkcode scanRoot}. */
export interface ScanOptions extends ValidateOptions {
  /** Move every checkpoint with integrity problems into `corrupt/` (takes the root lock). */
  quarantine?: boolean;
  /** Root lock wait for `quarantine`, in ms. */
  lockTimeoutMs?: number;
  /** With `quarantine`: called at `quarantine_validated`, before the lock is taken (tests pause there). */
  faultHook?: (point: RepairPoint) => Promise<void> | void;
  /** Record results in the root's state (known-good, failure counters); default true. */
  record?: boolean;
  /** Staging folders untouched for longer than this are stale (crashed writes), in seconds (default 3600). */
  staleStagingAfterS?: number;
}

export { DEFAULT_STALE_STAGING_S };

/** What `latest` names and whether that is usable. */
export interface ScanLatest extends LatestPointer {
  /** Why `latest` is a problem, or null when it names a valid checkpoint (or is absent with nothing committed). */
  problem: string | null;
}

/** The result of a scan; also the `--json` document of `ckptkit scan`. */
export interface ScanResult {
  /** The root's real path. */
  root: string;
  /** True when every checkpoint is valid and nothing else is wrong. */
  ok: boolean;
  /** The depth validated at. */
  depth: ValidationDepth;
  /** One result per checkpoint, newest first. */
  checkpoints: ValidationResult[];
  /** The `latest` pointer. */
  latest: ScanLatest;
  /** Staging folders: writes in progress or crashed, each marked stale or not. */
  staging: (RootStaging & { stale: boolean })[];
  /** Entries that are not part of the layout. */
  strays: RootStray[];
  /** Checkpoints moved to `corrupt/` by `quarantine`. */
  quarantined: QuarantineResult[];
  /** Why the root's state could not be updated, or null. */
  state_error: string | null;
  /** Totals. */
  summary: {
    checkpoints: number;
    valid: number;
    invalid: number;
    gone: number;
    staging: number;
    stale_staging: number;
    strays: number;
    bytes_checked: number;
    duration_s: number;
  };
}

/**
 * Scans a root: lists it, validates every checkpoint newest first (two at a
 * time, files in parallel within each), and checks `latest`. A checkpoint
 * removed while the scan runs is counted as gone, not as corrupt.
 *
 * Requires `--allow-read`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { scanRoot } from "./scan.ts";
 * const root = await Deno.makeTempDir();
 * const result = await scanRoot(root, { depth: "fast" });
 * assert.ok(result.ok && result.summary.checkpoints === 0);
 * await Deno.remove(root, { recursive: true });
 * ```
 */
export async function scanRoot(
  root: string,
  options: ScanOptions = {},
): Promise<ScanResult> {
  const started = performance.now();
  const staleAfter = options.staleStagingAfterS ?? DEFAULT_STALE_STAGING_S;
  const listing = await listRoot(root);
  const concurrency = options.concurrency ?? defaultConcurrency();
  // One pool for the whole scan (workers start only if something is hashed).
  const reads = ["full", "deep"].includes(options.depth ?? "full");
  using pool = options.hasher || !reads || concurrency < 2 ? undefined : new HashPool(concurrency);
  const validateOptions = { ...options, hasher: options.hasher ?? pool };
  // Metadata first, newest first, two checkpoints at a time; files in parallel within each.
  // Metadata-only passes wait on a few round trips per checkpoint (the manifest's open and read): a few more in
  // flight hide them. Not many more: the per-file stats are blocking calls that share this thread anyway, and each
  // checkpoint in flight holds its parsed manifest (hundreds of MB at 100,000 files).
  const inFlight = reads ? 2 : 4;
  // With quarantine: each checkpoint's fingerprint before it is validated, to tell under the lock whether it changed.
  const fingerprints = new Map<string, string | undefined>();
  const validated = await mapConcurrent(listing.checkpoints, inFlight, async (checkpoint) => {
    try {
      if (options.quarantine) fingerprints.set(checkpoint.path, await fingerprintCheckpoint(checkpoint.path));
      const result = await validateCheckpoint(checkpoint.path, validateOptions);
      // A checkpoint deleted by gc mid-scan is gone, not corrupt.
      if (!result.ok && !(await Deno.lstat(checkpoint.path).then(() => true, () => false))) return undefined;
      return result;
    } catch (err) {
      if (err instanceof CkptkitError && err.reason === "not_found") return undefined;
      throw err;
    }
  });
  const checkpoints = validated.filter((r): r is ValidationResult => r !== undefined);
  const result = buildScanResult({
    root: listing.root,
    depth: options.depth ?? "full",
    checkpoints,
    gone: validated.length - checkpoints.length,
    latest: await readLatest(listing.root),
    staging: markStale(listing.staging, staleAfter),
    strays: [
      ...listing.strays,
      ...(await orphanQuarantineRecords(listing.root)).map((name) => ({
        name: `${CORRUPT_DIR}/${name}`,
        detail: "quarantine record without its checkpoint: a quarantine was killed before its move " +
          "(the checkpoint is still in the root); remove the record once checked",
        inferred_step: null,
      })),
    ],
    durationS: (performance.now() - started) / 1000,
  });
  if (options.record ?? true) {
    result.state_error = await recordValidations(listing.root, checkpoints, "scan");
  }
  if (options.quarantine) {
    result.quarantined = await quarantineInvalid(listing.root, checkpoints, {
      lockTimeoutMs: options.lockTimeoutMs,
      fingerprints,
      revalidate: { ...options, onProgress: undefined },
      faultHook: options.faultHook,
    });
  }
  return result;
}

/** What {@linkcode buildScanResult} puts together. */
export interface ScanParts {
  /** The root's real path. */
  root: string;
  /** The depth validated at. */
  depth: ValidationDepth;
  /** Checkpoints validated, newest first (gone ones left out). */
  checkpoints: ValidationResult[];
  /** Checkpoints removed while they were validated. */
  gone: number;
  /** What `latest` says. */
  latest: LatestPointer;
  /** Staging folders, marked stale or not. */
  staging: (RootStaging & { stale: boolean })[];
  /** Entries that are not part of the layout. */
  strays: RootStray[];
  /** Wall time in seconds. */
  durationS: number;
}

/**
 * A scan's result from its parts: the verdict on `latest`, the totals and
 * `ok`. Shared by {@linkcode scanRoot} and the merge of shard reports, so both
 * give the same document.
 */
export function buildScanResult(parts: ScanParts): ScanResult {
  const { checkpoints } = parts;
  const latest: ScanLatest = { ...parts.latest, problem: latestProblem(parts.latest, checkpoints) };
  const valid = checkpoints.filter((c) => c.ok).length;
  const staleStaging = parts.staging.filter((s) => s.stale).length;
  const result: ScanResult = {
    root: parts.root,
    ok: false,
    depth: parts.depth,
    checkpoints,
    latest,
    staging: parts.staging,
    strays: parts.strays,
    quarantined: [],
    state_error: null,
    summary: {
      checkpoints: checkpoints.length,
      valid,
      invalid: checkpoints.length - valid,
      gone: parts.gone,
      staging: parts.staging.length,
      stale_staging: staleStaging,
      strays: parts.strays.length,
      bytes_checked: checkpoints.reduce((sum, c) => sum + c.bytes_checked, 0),
      duration_s: Math.round(parts.durationS * 1e6) / 1e6,
    },
  };
  result.ok = result.summary.invalid === 0 && latest.problem === null && staleStaging === 0;
  return result;
}

/** Marks staging folders untouched for longer than `staleAfterS` as stale (crashed writes). */
export function markStale(staging: readonly RootStaging[], staleAfterS: number): (RootStaging & { stale: boolean })[] {
  return staging.map((s) => ({ ...s, stale: s.age_s > staleAfterS }));
}

/** Problems that may be transient: never a reason to quarantine on their own. */
const TRANSIENT: ReadonlySet<string> = new Set(["io_error", "file_changed"]);

/** Options of {@linkcode quarantineInvalid}. */
export interface QuarantineInvalidOptions {
  /** Root lock wait, in ms. */
  lockTimeoutMs?: number;
  /** Each checkpoint's fingerprint taken before it was validated, by path. */
  fingerprints?: ReadonlyMap<string, string | undefined>;
  /**
   * A checkpoint whose fingerprint changed since is validated again under the
   * lock with these options (the scan's own) and quarantined only if still
   * invalid. Without them (shard reports, too costly to redo on one node) a
   * checkpoint whose manifest is unchanged is quarantined.
   */
  revalidate?: ValidateOptions;
  /** Called at `quarantine_validated`, before the lock is taken (tests pause there). */
  faultHook?: (point: RepairPoint) => Promise<void> | void;
}

/**
 * Quarantines the checkpoints with integrity problems (transient ones
 * alone never count) under the root lock; those already gone are skipped.
 * They were judged without the lock, so each is checked again under it: one
 * committed again under the same name (another manifest) or repaired since
 * is left alone.
 */
export async function quarantineInvalid(
  root: string,
  checkpoints: readonly ValidationResult[],
  options: QuarantineInvalidOptions,
): Promise<QuarantineResult[]> {
  const quarantinable = (c: ValidationResult) => !c.ok && !c.problems.every((p) => TRANSIENT.has(p.reason));
  const bad = checkpoints.filter(quarantinable);
  if (bad.length === 0) return [];
  await options.faultHook?.("quarantine_validated");
  const moved: QuarantineResult[] = [];
  const lock = await acquireRootLock(root, {
    timeoutMs: options.lockTimeoutMs,
  });
  try {
    for (const checkpoint of bad) {
      const name = checkpoint.path.slice(checkpoint.path.lastIndexOf("/") + 1);
      if (!(await Deno.lstat(checkpoint.path).then(() => true, () => false))) {
        continue;
      }
      const before = options.fingerprints?.get(checkpoint.path);
      if (before !== undefined && before === await fingerprintCheckpoint(checkpoint.path)) {
        // Unchanged since it was validated: the judgement still holds, no need to hash it again.
        moved.push(await quarantineLocked(root, name, { problems: checkpoint.problems }));
        continue;
      }
      const now = await validateCheckpoint(checkpoint.path, options.revalidate ?? { depth: "fast" })
        .catch(() => undefined);
      if (!now || now.manifest_digest !== checkpoint.manifest_digest) continue;
      if (options.revalidate && !quarantinable(now)) continue;
      moved.push(
        await quarantineLocked(root, name, { problems: options.revalidate ? now.problems : checkpoint.problems }),
      );
    }
  } finally {
    await lock.release();
  }
  return moved;
}

/** Why `latest` is a problem given the validated checkpoints, or null. */
export function latestProblem(
  pointer: LatestPointer,
  checkpoints: readonly ValidationResult[],
): string | null {
  if (pointer.state === "missing") {
    // Roots laid out by other tools (only checkpoint-N, global_stepN… folders) have no latest of ckptkit's.
    const ours = checkpoints.filter((c) => /\/step-\d+$/.test(c.path));
    return ours.length === 0 ? null : "latest is missing although checkpoints exist";
  }
  if (pointer.state === "invalid") {
    return pointer.detail ?? "latest is unreadable";
  }
  const named = checkpoints.find((c) => c.path.endsWith(`/${pointer.name}`));
  if (!named) return `latest names ${pointer.name}, which does not exist`;
  if (!named.ok) return `latest names ${pointer.name}, which is invalid`;
  return null;
}
