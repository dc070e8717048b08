/**
 * Recording results into the root's state: a full validation or a commit
 * makes a checkpoint known-good; a failed validation forgets it and counts
 * its problems by reason, once per (checkpoint, reason) when first detected.
 *
 * @module
 */

import { basename, dirname } from "node:path";
import { fingerprintCheckpoint } from "./fingerprint.ts";
import { LATEST_NAME, parseCheckpointName, STATE_DIR } from "./layout.ts";
import { type RootState, updateState } from "./state.ts";
import type { ValidationResult } from "./validate.ts";

// Defined here, not in commit.ts, which imports this module to record the commit: no import cycle.
/** What a commit did; also the `--json` document of `ckptkit commit`. */
export interface CommitResult {
  /** The committed checkpoint's path. */
  path: string;
  /** Its folder name, e.g. `step-10`. */
  name: string;
  /** Its step. */
  step: number;
  /** The job, when given. */
  job_id: string | null;
  /** The run, when given. */
  run_id: string | null;
  /** Number of files. */
  files: number;
  /** Sum of the files' sizes. */
  total_bytes: number;
  /** Wall time in seconds, hashing included. */
  duration_s: number;
  /** The manifest's self-digest. */
  manifest_digest: string;
  /** Whether `latest` now names this checkpoint. */
  latest_updated: boolean;
  /** Why the root's state (known-good, counters) was not updated, or null. */
  state_error: string | null;
}

/** Why recording did not happen, or null when it did. */
export type RecordOutcome = string | null;

/**
 * Records a validation result of a checkpoint `<root>/step-N`: a full, clean
 * validation makes it known-good; any problem removes it from known-good and
 * adds to the failure counters. Never throws: a state that cannot be written
 * (read-only mount) is reported in the return value.
 *
 * Requires `--allow-read` and `--allow-write`.
 *
 * @example
 * ```ts ignore
 * import { recordValidation } from "./record.ts";
 * import { validateCheckpoint } from "./validate.ts";
 * const result = await validateCheckpoint("/tmp/ckpts/step-10");
 * await recordValidation("/tmp/ckpts", result, "validate");
 * ```
 */
export async function recordValidation(
  root: string,
  result: ValidationResult,
  by: string,
): Promise<RecordOutcome> {
  return await recordValidations(root, [result], by);
}

/**
 * Records many validation results in one state update (scan records a
 * whole root at once). Results that change nothing (a clean validation
 * below full depth) cost no write. Never throws.
 *
 * Requires `--allow-read` and `--allow-write`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { recordValidations } from "./record.ts";
 * import { readState } from "./state.ts";
 * import { validateCheckpoint } from "./validate.ts";
 * const root = await Deno.makeTempDir();
 * await Deno.mkdir(`${root}/step-1`);
 * await recordValidations(root, [await validateCheckpoint(`${root}/step-1`)], "example");
 * assert.equal((await readState(root)).state.validation_failures_total.manifest_missing, 1);
 * await Deno.remove(root, { recursive: true });
 * ```
 */
export async function recordValidations(
  root: string,
  results: readonly ValidationResult[],
  by: string,
): Promise<RecordOutcome> {
  const changes: { name: string; result: ValidationResult; fingerprint?: string }[] = [];
  for (const result of results) {
    const name = basename(result.path.replace(/\/+$/, ""));
    if (parseCheckpointName(name) === undefined) continue;
    if (result.ok && result.depth !== "full" && result.depth !== "deep") continue;
    if (!result.manifest_backed && result.ok) continue;
    // A corrupt checkpoint's identity (which corruption this is) comes from the same stat-only fingerprint.
    const fingerprint = await fingerprintCheckpoint(result.path);
    changes.push({ name, result, fingerprint });
  }
  if (changes.length === 0) return null;
  return await safely(root, (state) => {
    for (const { name, result, fingerprint } of changes) {
      // A checkpoint quarantined or removed while it was being validated is not a new corruption.
      if (exists(`${root}/${name}`)) {
        countNewFailures(state, name, fingerprint ?? result.manifest_digest ?? "-", result.problems);
      }
      if (!result.ok) {
        delete state.known_good[name];
      } else if (fingerprint && result.manifest_digest && result.step !== null) {
        state.known_good[name] = {
          step: result.step,
          manifest_digest: result.manifest_digest,
          fingerprint,
          validated_at: new Date().toISOString(),
          by,
        };
      }
    }
    pruneCounted(state, root);
  });
}

/**
 * Adds the problems of a checkpoint to `validation_failures_total`, each
 * reason once per (checkpoint, identity): a reason already counted for the
 * same corruption adds nothing, so repeated passes (textfile, push, serve,
 * report merge) never count it again. Runs under the state lock, so two
 * processes recording the same detection count it once.
 */
function countNewFailures(
  state: RootState,
  name: string,
  identity: string,
  problems: readonly { reason: string }[],
): void {
  if (problems.length === 0) return;
  let entry = state.counted_failures[name];
  if (!entry || entry.identity !== identity) {
    entry = { identity, reasons: [] };
    state.counted_failures[name] = entry;
  }
  for (const reason of new Set(problems.map((problem) => problem.reason))) {
    if (entry.reasons.includes(reason)) continue;
    entry.reasons.push(reason);
    state.validation_failures_total[reason] = (state.validation_failures_total[reason] ?? 0) + 1;
  }
}

/** Forgets counted corruptions of checkpoints no longer in the root (the totals stay). */
function pruneCounted(state: RootState, root: string): void {
  for (const name of Object.keys(state.counted_failures)) {
    if (!exists(`${root}/${name}`)) delete state.counted_failures[name];
  }
}

/** False only when `path` is certainly gone (an unreadable one still counts as there). */
function exists(path: string): boolean {
  try {
    Deno.lstatSync(path);
    return true;
  } catch (err) {
    return !(err instanceof Deno.errors.NotFound);
  }
}

/**
 * Records a commit: bytes written, the last commit, and the new checkpoint
 * as known-good (commit hashed every byte itself). Never throws.
 *
 * Requires `--allow-read` and `--allow-write`.
 *
 * @example
 * ```ts ignore
 * import { commitCheckpoint } from "./commit.ts";
 * import { recordCommit } from "./record.ts";
 * // commitCheckpoint already records itself; call this after publishing by other means.
 * const result = await commitCheckpoint("/tmp/out", { root: "/tmp/ckpts", step: 1 });
 * await recordCommit("/tmp/ckpts", result);
 * ```
 */
export async function recordCommit(
  root: string,
  result: CommitResult,
): Promise<RecordOutcome> {
  const fingerprint = await fingerprintCheckpoint(result.path);
  return await safely(root, (state) => {
    state.write_bytes_total += result.total_bytes;
    state.last_commit = {
      name: result.name,
      step: result.step,
      at: new Date().toISOString(),
      duration_s: result.duration_s,
      job_id: result.job_id,
      run_id: result.run_id,
    };
    if (fingerprint) {
      state.known_good[result.name] = {
        step: result.step,
        manifest_digest: result.manifest_digest,
        fingerprint,
        validated_at: new Date().toISOString(),
        by: "commit",
      };
    }
  });
}

/**
 * Forgets known-good records of checkpoints that were removed or quarantined,
 * and the counted corruptions of checkpoints no longer in the root (the
 * failure totals never go down). Never throws.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { forgetCheckpoints } from "./record.ts";
 * const root = await Deno.makeTempDir();
 * assert.ok((await forgetCheckpoints(root, ["step-10"])) === null);
 * await Deno.remove(root, { recursive: true });
 * ```
 */
export async function forgetCheckpoints(
  root: string,
  names: readonly string[],
): Promise<RecordOutcome> {
  if (names.length === 0) return null;
  return await safely(root, (state) => {
    for (const name of names) delete state.known_good[name];
    pruneCounted(state, root);
  });
}

/**
 * The root a checkpoint path belongs to, when its parent looks like a
 * ckptkit root (it has `.ckptkit/` or `latest`) and its name is `step-<n>`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { rootOfCheckpoint } from "./record.ts";
 * const root = await Deno.makeTempDir();
 * await Deno.mkdir(`${root}/.ckptkit`);
 * assert.ok((await rootOfCheckpoint(`${root}/step-10`)) === root);
 * assert.ok((await rootOfCheckpoint(`${root}/other`)) === undefined);
 * await Deno.remove(root, { recursive: true });
 * ```
 */
export async function rootOfCheckpoint(
  path: string,
): Promise<string | undefined> {
  const trimmed = path.replace(/\/+$/, "");
  if (parseCheckpointName(basename(trimmed)) === undefined) return undefined;
  const parent = dirname(trimmed);
  for (const marker of [STATE_DIR, LATEST_NAME]) {
    try {
      await Deno.lstat(`${parent}/${marker}`);
      return parent;
    } catch {
      // not this marker
    }
  }
  return undefined;
}

async function safely(
  root: string,
  change: (state: RootState) => void,
): Promise<RecordOutcome> {
  try {
    await updateState(root, change);
    return null;
  } catch (err) {
    return `cannot write ${root}/${STATE_DIR}/state.json: ${(err as Error).message}`;
  }
}
