/**
 * What ckptkit exports to Prometheus, as plain data: built (purely) from a
 * scan of the root, the root's state and the free space, so the numbers can
 * be tested without a metrics library or a server.
 *
 * @module
 */

import { PROBLEM_REASONS } from "../problems.ts";
import { planResume } from "../core/resume.ts";
import type { ScanResult } from "../core/scan.ts";
import type { RootState } from "../core/state.ts";

/**
 * Most `checkpoint_corrupt_detected` series exported: currently invalid
 * checkpoints first, then quarantined ones, newest first. The count of all
 * of them is in `checkpoint_inventory{status=...}`, so the cap never hides how
 * many there are, and a root full of corrupt saves cannot blow up the
 * number of series.
 */
export const MAX_CORRUPT_SERIES = 50;

/** The numbers behind every exported metric. */
export interface MetricsSnapshot {
  /**
   * The labels of every series: `root` (the root's real path, or its configured short name), then `job_id` and
   * `run_id` when known. An unknown label is left out, never exported as `""`.
   */
  labels: MetricsLabels;
  /** The newest valid checkpoint: when it was committed, its step and write duration. */
  last_success: { timestamp_s: number; step: number; duration_s: number } | null;
  /** Bytes committed into the root so far (from its state). */
  write_bytes_total: number;
  /** Distinct corruptions detected so far, by reason (each checkpoint and reason once); every stable reason present. */
  validation_failures_total: Record<string, number>;
  /** Names of corrupt (invalid now) and quarantined checkpoints, capped at {@linkcode MAX_CORRUPT_SERIES}. */
  corrupt: { checkpoint: string; status: "invalid" | "quarantined" }[];
  /** The step `resume` (latest-valid) would choose, or null when nothing is valid. */
  resume_selected_step: number | null;
  /** Free bytes of the root's file system for unprivileged users, or null when unknown. */
  free_bytes: number | null;
  /** `total_bytes` of the newest checkpoint's manifest (about what the next save needs), or null when none. */
  last_size_bytes: number | null;
  /** Checkpoints by status. */
  counts: { valid: number; invalid: number; quarantined: number; stale_staging: number };
  /** Seconds since the newest valid checkpoint was committed. */
  newest_valid_age_s: number | null;
  /** 1 when `latest` names a valid checkpoint, else 0. */
  latest_valid: number;
  /** The validation pass behind this snapshot. */
  last_validation: { timestamp_s: number; duration_s: number; bytes: number; depth: string };
}

/** The labels every series of a root carries; `job_id` and `run_id` only when known. */
export interface MetricsLabels {
  /** The root: its real path, or the short name configured for it (`metrics.root_label`, `--root-label`). */
  root: string;
  /** The training job, when known. */
  job_id?: string;
  /** The training run, when known. */
  run_id?: string;
}

/** Inputs of {@linkcode buildSnapshot} besides the scan. */
export interface SnapshotInput {
  /** The root's state. */
  state: RootState;
  /** Names of the folders in `corrupt/`. */
  quarantined: string[];
  /** Free bytes, or null. */
  freeBytes: number | null;
  /** `total_bytes` of the newest checkpoint with an intact manifest (default null: unknown). */
  lastSizeBytes?: number | null;
  /** The time of the snapshot. */
  now: Date;
  /** Override of the job label ("" or absent: from the newest valid manifest). */
  jobId?: string;
  /** Override of the run label ("" or absent: from the newest valid manifest). */
  runId?: string;
  /** Override of the root label ("" or absent: the scan's root, its real path). */
  rootLabel?: string;
}

/**
 * Builds the snapshot from a scan and the root's state (pure).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { buildSnapshot } from "./snapshot.ts";
 * import { emptyState } from "../core/state.ts";
 * import { scanRoot } from "../core/scan.ts";
 * const root = await Deno.makeTempDir();
 * const scan = await scanRoot(root, { record: false });
 * const snapshot = buildSnapshot(scan, { state: emptyState(), quarantined: [], freeBytes: 1, now: new Date() });
 * assert.equal(snapshot.resume_selected_step, null);
 * assert.equal(snapshot.validation_failures_total.hash_mismatch, 0);
 * assert.deepEqual(snapshot.labels, { root: scan.root }, "no job or run known: no empty labels");
 * await Deno.remove(root, { recursive: true });
 * ```
 */
export function buildSnapshot(scan: ScanResult, input: SnapshotInput): MetricsSnapshot {
  const valid = scan.checkpoints.filter((c) => c.ok);
  const invalid = scan.checkpoints.filter((c) => !c.ok);
  const newest = valid[0];
  const jobId = input.jobId || newest?.job_id || input.state.last_commit?.job_id || "";
  const runId = input.runId || newest?.run_id || input.state.last_commit?.run_id || "";
  const createdS = newest?.created_at ? Date.parse(newest.created_at) / 1000 : null;
  const candidates = scan.checkpoints.map((c) => ({
    name: c.path.slice(c.path.lastIndexOf("/") + 1),
    path: c.path,
    step: c.step ?? -1,
  }));
  const decision = planResume({
    candidates,
    latest: scan.latest.state === "ok" ? scan.latest.name! : "",
    validations: new Map(scan.checkpoints.map((c, i) => [candidates[i].name, c.problems])),
  });
  const failures: Record<string, number> = {};
  for (const reason of PROBLEM_REASONS) failures[reason] = 0;
  Object.assign(failures, input.state.validation_failures_total);
  const corrupt = [
    ...invalid.map((c) => ({ checkpoint: c.path.slice(c.path.lastIndexOf("/") + 1), status: "invalid" as const })),
    ...[...input.quarantined].sort(byStepDescending).map((name) => ({
      checkpoint: `corrupt/${name}`,
      status: "quarantined" as const,
    })),
  ].slice(0, MAX_CORRUPT_SERIES);
  const nowS = input.now.getTime() / 1000;
  return {
    labels: {
      root: input.rootLabel || scan.root,
      ...(jobId === "" ? {} : { job_id: jobId }),
      ...(runId === "" ? {} : { run_id: runId }),
    },
    last_success: newest && newest.step !== null && createdS !== null
      ? { timestamp_s: createdS, step: newest.step, duration_s: newest.write_duration_s ?? 0 }
      : null,
    write_bytes_total: input.state.write_bytes_total,
    validation_failures_total: failures,
    corrupt,
    resume_selected_step: decision.chosen?.step ?? null,
    free_bytes: input.freeBytes,
    last_size_bytes: input.lastSizeBytes ?? null,
    counts: {
      valid: valid.length,
      invalid: invalid.length,
      quarantined: input.quarantined.length,
      stale_staging: scan.summary.stale_staging,
    },
    newest_valid_age_s: createdS === null ? null : Math.max(0, nowS - createdS),
    latest_valid: scan.latest.state === "ok" && scan.latest.problem === null ? 1 : 0,
    last_validation: {
      timestamp_s: nowS,
      duration_s: scan.summary.duration_s,
      bytes: scan.summary.bytes_checked,
      depth: scan.depth,
    },
  };
}

function byStepDescending(a: string, b: string): number {
  const step = (name: string) => Number(/^step-(\d+)/.exec(name)?.[1] ?? -1);
  return step(b) - step(a) || (a < b ? 1 : -1);
}
