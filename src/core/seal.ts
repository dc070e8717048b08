/**
 * `seal`: writes a manifest in place for a checkpoint that already exists
 * (adopting checkpoints written before ckptkit), atomically, without moving
 * the checkpoint.
 *
 * @module
 */

import { basename } from "node:path";
import { checkIdentity } from "./commit.ts";
import { writeFileAtomic } from "../fs/durable.ts";
import { CkptkitError } from "../errors.ts";
import { requireFolder } from "../fs/folder.ts";
import { inferStep, MANIFEST_NAME } from "./layout.ts";
import { createManifest, serializeManifest } from "./manifest.ts";
import type { Problem } from "../problems.ts";
import { exists } from "./publish.ts";
import { listRoot } from "./root.ts";
import { validateCheckpoint } from "./validate.ts";
import { checkHashingOptions, hashFolder, type HashingOptions, removeManifestLeftovers } from "./seal_files.ts";
import { hostName, VERSION } from "../version.ts";

/** Options for {@linkcode sealCheckpoint}. */
export interface SealOptions extends HashingOptions {
  /** The step; inferred from names like `step-10`, `checkpoint-500`, `global_step500` when omitted. */
  step?: number;
  /** The training job. */
  jobId?: string;
  /** The run of the job. */
  runId?: string;
  /** Free-form metadata (JSON values). */
  metadata?: Record<string, unknown>;
}

/** What {@linkcode sealCheckpoint} did; also the `--json` document of `ckptkit seal`. */
export interface SealResult {
  /** The sealed folder. */
  path: string;
  /** The step recorded. */
  step: number;
  /** Number of files. */
  files: number;
  /** Sum of the files' sizes. */
  total_bytes: number;
  /** Wall time in seconds. */
  duration_s: number;
  /** The manifest's self-digest. */
  manifest_digest: string;
}

/**
 * Hashes every file of `dir` and writes its manifest atomically (temp file,
 * fsync, rename, fsync). Refuses with `manifest_exists` when the folder is
 * already sealed (or holds a file of that name), `mount_point` when a folder
 * inside it is a mount, and `unsupported_entry` when it holds a symlink, a
 * special file or a name that is not UTF-8. Temporary manifests left by a
 * killed seal are removed first.
 *
 * Requires `--allow-read`, `--allow-write` and `--allow-sys`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { sealCheckpoint } from "./seal.ts";
 * const root = await Deno.makeTempDir();
 * await Deno.mkdir(`${root}/checkpoint-500`);
 * await Deno.writeTextFile(`${root}/checkpoint-500/model.safetensors`, "x");
 * const result = await sealCheckpoint(`${root}/checkpoint-500`);
 * assert.ok(result.step === 500);
 * await Deno.remove(root, { recursive: true });
 * ```
 */
export async function sealCheckpoint(
  dir: string,
  options: SealOptions = {},
): Promise<SealResult> {
  const started = performance.now();
  checkHashingOptions(options);
  await requireFolder(dir, "checkpoint folder", { noFollow: true });
  const named = inferStep(basename(dir));
  if (options.step !== undefined && named !== undefined && options.step !== named) {
    // Validation would report the sealed folder as step_mismatch: resume and gc go by the name.
    throw new CkptkitError(
      "invalid_argument",
      `The folder name "${basename(dir)}" says step ${named}, not ${options.step}; rename it or drop --step`,
      { path: dir },
    );
  }
  const step = options.step ?? named;
  if (step === undefined) {
    throw new CkptkitError(
      "invalid_argument",
      `Cannot infer the step from the folder name "${basename(dir)}"; pass --step`,
      { path: dir },
    );
  }
  checkIdentity({ ...options, step });
  if (await exists(`${dir}/${MANIFEST_NAME}`)) {
    throw new CkptkitError(
      "manifest_exists",
      `${dir} is already sealed (${MANIFEST_NAME} exists); validate it instead`,
      { path: dir },
    );
  }
  await removeManifestLeftovers(dir);
  const hashed = await hashFolder(dir, options);
  const manifest = await createManifest({
    job_id: options.jobId ?? null,
    run_id: options.runId ?? null,
    step,
    created_at: new Date().toISOString(),
    write_duration_s: Math.round(hashed.durationS * 1e6) / 1e6,
    writer: { host: hostName(), ckptkit_version: VERSION },
    hash: {
      algorithm: options.algorithm ?? "sha256",
      sample_bytes: options.sampleBytes ?? 65536,
    },
    files: hashed.files,
    metadata: options.metadata ?? {},
  });
  await writeFileAtomic(`${dir}/${MANIFEST_NAME}`, serializeManifest(manifest));
  return {
    path: dir,
    step,
    files: manifest.files.length,
    total_bytes: manifest.total_bytes,
    duration_s: Math.round((performance.now() - started) / 1000 * 1e6) / 1e6,
    manifest_digest: manifest.manifest_digest,
  };
}

/** What {@linkcode sealRoot} did; also the `--json` document of `ckptkit seal --all`. */
export interface SealRootResult {
  /** The root. */
  root: string;
  /** Checkpoints sealed now. */
  sealed: SealResult[];
  /** Checkpoints that already had a manifest. */
  already_sealed: string[];
  /** Checkpoints left unsealed because deep validation found problems (sealing would bless the damage). */
  refused: { name: string; path: string; problems: Problem[] }[];
}

/**
 * Seals every checkpoint of a root that has no manifest (`step-N` and other tools' `checkpoint-N`,
 * `global_stepN`, … folders), after a deep validation of its formats and layout: a checkpoint with format
 * problems is refused, since its manifest would record the damage as the truth.
 *
 * Requires `--allow-read`, `--allow-write` and `--allow-sys`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { sealRoot } from "./seal.ts";
 * const root = await Deno.makeTempDir();
 * await Deno.mkdir(`${root}/checkpoint-100`);
 * await Deno.writeTextFile(`${root}/checkpoint-100/notes.txt`, "x");
 * const result = await sealRoot(root);
 * assert.deepEqual(result.sealed.map((s) => s.step), [100]);
 * await Deno.remove(root, { recursive: true });
 * ```
 */
export async function sealRoot(root: string, options: Omit<SealOptions, "step"> = {}): Promise<SealRootResult> {
  const listing = await listRoot(root);
  const result: SealRootResult = { root: listing.root, sealed: [], already_sealed: [], refused: [] };
  for (const checkpoint of [...listing.checkpoints].reverse()) {
    if (await exists(`${checkpoint.path}/${MANIFEST_NAME}`)) {
      result.already_sealed.push(checkpoint.name);
      continue;
    }
    const check = await validateCheckpoint(checkpoint.path, { depth: "deep", concurrency: options.concurrency });
    if (!check.ok) {
      result.refused.push({ name: checkpoint.name, path: checkpoint.path, problems: check.problems });
      continue;
    }
    result.sealed.push(await sealCheckpoint(checkpoint.path, { ...options, step: checkpoint.step }));
  }
  return result;
}
