/**
 * Retention planning (pure): which checkpoints `gc` keeps and which it
 * deletes, with the reason for each. No file is touched here, so every
 * safety rule is tested without a disk and shown by `gc --dry-run`.
 *
 * Safety rules: the checkpoint `latest` names, the newest valid one and the
 * last-known-good one are never deleted; invalid checkpoints do not count
 * toward keep-last (a run of corrupt saves cannot push the good ones out);
 * checkpoints that could not be checked and are newer than the oldest one
 * kept by keep-last are kept; nothing is deleted for being older than kept
 * checkpoints unless each of those is `verified` (hashed in full, or recorded
 * known-good and unchanged since), so a shallow check cannot license a
 * deletion; fresh staging folders (a write in progress) are never deleted.
 *
 * @module
 */

/** What validation said about a checkpoint, as retention sees it. */
export type RetentionStatus = "valid" | "invalid" | "unchecked";

/** A checkpoint as retention sees it. */
export interface RetentionCheckpoint {
  /** Folder name. */
  name: string;
  /** Step. */
  step: number;
  /** Validation outcome. */
  status: RetentionStatus;
  /** Problem reasons when invalid. */
  reasons?: string[];
  /**
   * For a valid one: the verdict comes from hashing every byte (full or deep validation), or from a known-good
   * record whose fingerprint is unchanged. A valid checkpoint not verified never justifies deleting another
   * (default false).
   */
  verified?: boolean;
}

/** A staging folder as retention sees it. */
export interface RetentionStaging {
  /** Folder name. */
  name: string;
  /** Seconds since anything in it last changed (see `RootStaging.age_s`). */
  age_s: number;
}

/** Inputs of {@linkcode planRetention}. */
export interface RetentionInput {
  /** Every checkpoint in the root. */
  checkpoints: readonly RetentionCheckpoint[];
  /** What `latest` names, or null. */
  latest: string | null;
  /** The last-known-good checkpoint, or null. */
  lastKnownGood: string | null;
  /** Keep the newest N valid checkpoints. */
  keepLast: number;
  /** Keep every checkpoint whose step is a multiple of K (0: off). */
  keepEvery: number;
  /** Staging folders. */
  staging: readonly RetentionStaging[];
  /** Staging folders older than this many seconds are crashed writes. */
  staleStagingAfterS: number;
}

/** A checkpoint that survives, with every reason it does. */
export interface KeptCheckpoint {
  /** Folder name. */
  name: string;
  /** Step. */
  step: number;
  /** Why it is kept. */
  reasons: string[];
}

/** A checkpoint to delete, and why. */
export interface DeletedCheckpoint {
  /** Folder name. */
  name: string;
  /** Step. */
  step: number;
  /** Why it goes. */
  why: string;
  /** The job its manifest named, read by gc just before deleting it (null when none). */
  job_id?: string | null;
  /** The run its manifest named, read by gc just before deleting it (null when none). */
  run_id?: string | null;
}

/** The plan. */
export interface RetentionPlan {
  /** Survivors, newest first. */
  keep: KeptCheckpoint[];
  /** Checkpoints to delete, newest first. */
  delete: DeletedCheckpoint[];
  /** Stale staging folders to delete. */
  delete_staging: RetentionStaging[];
  /** Staging folders kept (writes in progress). */
  keep_staging: RetentionStaging[];
}

/**
 * Plans retention.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { planRetention } from "./retention.ts";
 * const plan = planRetention({
 *   checkpoints: [
 *     { name: "step-30", step: 30, status: "invalid", reasons: ["hash_mismatch"] },
 *     { name: "step-20", step: 20, status: "valid", verified: true },
 *     { name: "step-10", step: 10, status: "valid", verified: true },
 *   ],
 *   latest: "step-30",
 *   lastKnownGood: null,
 *   keepLast: 1,
 *   keepEvery: 0,
 *   staging: [],
 *   staleStagingAfterS: 3600,
 * });
 * // step-30 is kept because latest names it; step-20 is the one valid kept.
 * assert.ok(plan.delete.map((d) => d.name).join() === "step-10");
 * ```
 */
export function planRetention(input: RetentionInput): RetentionPlan {
  checkNumbers(input);
  const sorted = [...input.checkpoints].sort((a, b) => b.step - a.step);
  const unverifiedKeepers = licensingKeepers(sorted, input.keepLast).some((c) => !c.verified);
  const reasons = new Map<string, string[]>(sorted.map((c) => [c.name, []]));
  const valid = sorted.filter((c) => c.status === "valid");
  valid.slice(0, input.keepLast).forEach((c, i) =>
    reasons.get(c.name)!.push(`keep-last (${i + 1} of ${input.keepLast})`)
  );
  if (valid[0]) reasons.get(valid[0].name)!.push("newest valid");
  // Below this step, keep-last is satisfied; an unchecked checkpoint above it might be one of the newest valid.
  const keepLastFloor = input.keepLast === 0
    ? (valid[0]?.step ?? -1)
    : valid.length >= input.keepLast
    ? valid[input.keepLast - 1].step
    : -1;
  for (const c of sorted) {
    const r = reasons.get(c.name)!;
    if (input.keepEvery > 0 && c.step % input.keepEvery === 0) {
      r.push(`keep-every ${input.keepEvery}`);
    }
    if (c.name === input.latest) r.push("named by latest");
    if (c.name === input.lastKnownGood) r.push("last known good");
    if (c.status === "unchecked" && c.step > keepLastFloor) {
      r.push("not checked (newer than the kept ones)");
    }
    if (unverifiedKeepers && c.status !== "invalid" && r.length === 0) {
      r.push("a checkpoint kept in its place is not validated in full");
    }
  }
  const plan: RetentionPlan = {
    keep: [],
    delete: [],
    delete_staging: [],
    keep_staging: [],
  };
  for (const c of sorted) {
    const r = reasons.get(c.name)!;
    if (r.length > 0) {
      plan.keep.push({ name: c.name, step: c.step, reasons: r });
    } else {
      plan.delete.push({
        name: c.name,
        step: c.step,
        why: c.status === "invalid"
          ? `invalid (${
            (c.reasons ?? []).join(", ") || "problems found"
          }); invalid checkpoints do not count toward keep-last`
          : input.keepLast > 0
          ? `older than the ${input.keepLast} newest valid checkpoint${input.keepLast === 1 ? "" : "s"}`
          : "older than the newest valid checkpoint",
      });
    }
  }
  for (const s of input.staging) {
    (s.age_s > input.staleStagingAfterS ? plan.delete_staging : plan.keep_staging)
      .push(s);
  }
  return plan;
}

/**
 * The valid checkpoints keep-last keeps (at least the newest valid one) that
 * are not `verified` yet, when the plan would delete a checkpoint that is not
 * invalid on their word. `gc` validates these in full, whatever depth it
 * was asked for, before it plans the deletion; an empty list means nothing
 * more needs reading.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { keepersToVerify } from "./retention.ts";
 * const input = {
 *   checkpoints: [
 *     { name: "step-20", step: 20, status: "valid" as const }, // a fast check only
 *     { name: "step-10", step: 10, status: "valid" as const, verified: true },
 *   ],
 *   latest: "step-20",
 *   lastKnownGood: null,
 *   keepLast: 1,
 *   keepEvery: 0,
 *   staging: [],
 *   staleStagingAfterS: 3600,
 * };
 * assert.deepEqual(keepersToVerify(input), ["step-20"]);
 * assert.deepEqual(keepersToVerify({ ...input, keepEvery: 10 }), []); // keep-every keeps step-10: nothing to license
 * ```
 */
export function keepersToVerify(input: RetentionInput): string[] {
  checkNumbers(input);
  const sorted = [...input.checkpoints].sort((a, b) => b.step - a.step);
  const unverified = licensingKeepers(sorted, input.keepLast).filter((c) => !c.verified);
  if (unverified.length === 0) return [];
  const trusting = planRetention({
    ...input,
    checkpoints: input.checkpoints.map((c) => c.status === "valid" ? { ...c, verified: true } : c),
  });
  const invalid = new Set(input.checkpoints.filter((c) => c.status === "invalid").map((c) => c.name));
  return trusting.delete.some((d) => !invalid.has(d.name)) ? unverified.map((c) => c.name) : [];
}

/** The valid checkpoints whose verdict every deletion of an older, not invalid one rests on. */
function licensingKeepers(
  sortedNewestFirst: readonly RetentionCheckpoint[],
  keepLast: number,
): RetentionCheckpoint[] {
  return sortedNewestFirst.filter((c) => c.status === "valid").slice(0, Math.max(keepLast, 1));
}

function checkNumbers(input: RetentionInput): void {
  if (!Number.isSafeInteger(input.keepLast) || input.keepLast < 0) {
    throw new RangeError(
      `Cannot plan retention as 'keepLast' must be a non-negative integer: current value is ${input.keepLast}`,
    );
  }
  if (!Number.isSafeInteger(input.keepEvery) || input.keepEvery < 0) {
    throw new RangeError(
      `Cannot plan retention as 'keepEvery' must be a non-negative integer: current value is ${input.keepEvery}`,
    );
  }
}
