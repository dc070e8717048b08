/**
 * The identity fields of log lines (`job_id`, `run_id`, `step`) for events
 * about a whole root or about a checkpoint that was not validated.
 *
 * @module
 */

import type { ManifestIdentity } from "../core/identity.ts";
import type { ValidationResult } from "../core/validate.ts";

/** No manifest names anything. */
export const NO_IDENTITY: ManifestIdentity = { job_id: null, run_id: null, step: null };

/** The job, run and step of one validated checkpoint. */
export function identityOf(result: Pick<ValidationResult, "job_id" | "run_id" | "step">): ManifestIdentity {
  return { job_id: result.job_id, run_id: result.run_id, step: result.step };
}

/**
 * Whose a root is: the job, run and step of its newest valid checkpoint whose
 * manifest names a job or run, else of its newest checkpoint that names one
 * (results newest first), else nulls.
 */
export function rootIdentity(results: readonly ValidationResult[]): ManifestIdentity {
  const named = (r: ValidationResult) => r.job_id !== null || r.run_id !== null;
  const found = results.find((r) => r.ok && named(r)) ?? results.find(named);
  return found ? identityOf(found) : NO_IDENTITY;
}

/** The identity read from the manifest in `dir` (nulls when there is none). */
export async function readIdentityOf(dir: string): Promise<ManifestIdentity> {
  const { readIdentity } = await import("../core/identity.ts");
  return await readIdentity(dir);
}
