/**
 * Whose a checkpoint is, as its manifest says: for log lines and reports
 * about a checkpoint that was not (or not yet) validated.
 *
 * @module
 */

import { readManifestFile } from "./manifest.ts";

/** The job, run and step a manifest names (null when it names none or cannot be read). */
export interface ManifestIdentity {
  /** The training job. */
  job_id: string | null;
  /** The run of the job. */
  run_id: string | null;
  /** The training step. */
  step: number | null;
}

/**
 * Reads the job, run and step named by the manifest in `dir`, leniently: an
 * unreadable, corrupt or missing manifest gives nulls, never an error (its
 * integrity is validation's business, not this). A `dir` that is a symbolic
 * link gives nulls too: it may lead outside the root, which is never read.
 *
 * Requires `--allow-read`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { readIdentity } from "./identity.ts";
 * const dir = await Deno.makeTempDir();
 * assert.deepEqual(await readIdentity(dir), { job_id: null, run_id: null, step: null });
 * await Deno.symlink(dir, `${dir}-link`);
 * assert.deepEqual(await readIdentity(`${dir}-link`), { job_id: null, run_id: null, step: null });
 * await Deno.remove(`${dir}-link`);
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function readIdentity(dir: string): Promise<ManifestIdentity> {
  const none = { job_id: null, run_id: null, step: null };
  try {
    if (!(await Deno.lstat(dir)).isDirectory) return none;
    const read = await readManifestFile(dir);
    if ("problem" in read) return none;
    const manifest = JSON.parse(read.text) as Record<string, unknown>;
    if (manifest === null || typeof manifest !== "object") return none;
    return {
      job_id: typeof manifest.job_id === "string" ? manifest.job_id : null,
      run_id: typeof manifest.run_id === "string" ? manifest.run_id : null,
      step: Number.isSafeInteger(manifest.step) ? manifest.step as number : null,
    };
  } catch {
    return none;
  }
}
