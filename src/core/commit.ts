/**
 * `commit`: seals a folder written by another program (a PyTorch
 * `torch.save`, a DeepSpeed save) and moves it into the root as `step-N`,
 * with the crash-safe protocol of docs/how-it-works.md.
 *
 * @module
 */

import { basename, dirname, resolve } from "node:path";
import { CkptkitError } from "../errors.ts";
import { requireFolder } from "../fs/folder.ts";
import { checkpointName, CORRUPT_DIR, isValidStep, parseCheckpointName, STATE_DIR } from "./layout.ts";
import { createManifest, type Manifest } from "./manifest.ts";
import { exists, type FaultHook, publishCheckpoint, type PublishOutcome } from "./publish.ts";
import { type CommitResult, recordCommit } from "./record.ts";
import {
  checkHashingOptions,
  hashFolder,
  type HashingOptions,
  refuseForeignManifest,
  removeManifestLeftovers,
} from "./seal_files.ts";
import { hostName, VERSION } from "../version.ts";

/** Who a checkpoint belongs to, recorded in its manifest. */
export interface CheckpointIdentity {
  /** The training step (a non-negative integer). */
  step: number;
  /** The training job. */
  jobId?: string;
  /** The run of the job. */
  runId?: string;
  /** Free-form metadata (JSON values). */
  metadata?: Record<string, unknown>;
}

/** Options for {@linkcode commitCheckpoint}. */
export interface CommitOptions extends CheckpointIdentity, HashingOptions {
  /** The checkpoint root; created when missing. */
  root: string;
  /** How long to wait for the root lock, in ms (default 60 000). */
  lockTimeoutMs?: number;
  /** Fault injection for crash tests. */
  faultHook?: FaultHook;
}

/**
 * Hashes every file of `stagingDir` (in parallel, each byte read once and
 * fsynced), writes the manifest, and renames the folder to `<root>/step-N`,
 * then points `latest` at it unless `latest` or another checkpoint folder names a newer step. A failure at
 * any point leaves no visible checkpoint and `latest` unchanged.
 *
 * Throws a {@linkcode CkptkitError}: `checkpoint_exists` when `step-N` is
 * already there, `cross_device` when the staging folder is on another file
 * system than the root, `mount_point` when a folder inside it is a mount,
 * `manifest_exists` when it holds a `ckptkit.manifest.json` of its own (one
 * left by an interrupted commit of the same step is rewritten),
 * `unsupported_entry` for symlinks, special files and names that are not
 * UTF-8, `lock_timeout`, `no_space`, `io_error`. Temporary manifests left by
 * a killed commit are removed first.
 *
 * Requires `--allow-read`, `--allow-write` and `--allow-sys`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { commitCheckpoint } from "./commit.ts";
 * const root = await Deno.makeTempDir();
 * const staging = `${root}/incoming`;
 * await Deno.mkdir(staging);
 * await Deno.writeTextFile(`${staging}/model.pt`, "weights");
 * const result = await commitCheckpoint(staging, { root, step: 10, jobId: "demo" });
 * assert.ok(result.path === `${root}/step-10`);
 * await Deno.remove(root, { recursive: true });
 * ```
 */
export async function commitCheckpoint(
  stagingDir: string,
  options: CommitOptions,
): Promise<CommitResult> {
  const started = performance.now();
  checkIdentity(options);
  checkHashingOptions(options);
  const root = await prepareRoot(options.root);
  const staging = await checkStaging(stagingDir, root);
  const name = checkpointName(options.step);
  if (await exists(`${root}/${name}`)) {
    throw new CkptkitError(
      "checkpoint_exists",
      `${root}/${name} already exists; a committed checkpoint is never replaced`,
      { path: `${root}/${name}` },
    );
  }
  await refuseForeignManifest(staging, options.step);
  await removeManifestLeftovers(staging);
  const hashed = await hashFolder(staging, options);
  const manifest = await createManifest({
    job_id: options.jobId ?? null,
    run_id: options.runId ?? null,
    step: options.step,
    created_at: new Date().toISOString(),
    write_duration_s: round(hashed.durationS),
    writer: { host: hostName(), ckptkit_version: VERSION },
    hash: {
      algorithm: options.algorithm ?? "sha256",
      sample_bytes: options.sampleBytes ?? 65536,
    },
    files: hashed.files,
    metadata: options.metadata ?? {},
  });
  const outcome = await publishCheckpoint({
    root,
    stagingDir: staging,
    stagingDirs: hashed.dirs,
    name,
    manifest,
    lockTimeoutMs: options.lockTimeoutMs,
    faultHook: options.faultHook,
  });
  return await finishCommit(root, manifest, outcome, started);
}

/** Builds the result of a published commit and records it in the root's state. */
export async function finishCommit(
  root: string,
  manifest: Manifest,
  outcome: PublishOutcome,
  startedMs: number,
): Promise<CommitResult> {
  const result: CommitResult = {
    path: outcome.path,
    name: checkpointName(manifest.step),
    step: manifest.step,
    job_id: manifest.job_id,
    run_id: manifest.run_id,
    files: manifest.files.length,
    total_bytes: manifest.total_bytes,
    duration_s: round((performance.now() - startedMs) / 1000),
    manifest_digest: manifest.manifest_digest,
    latest_updated: outcome.latestUpdated,
    state_error: null,
  };
  result.state_error = await recordCommit(root, result);
  return result;
}

/** Checks step, job and run before any work. */
export function checkIdentity(identity: CheckpointIdentity): void {
  if (!isValidStep(identity.step)) {
    throw new CkptkitError(
      "invalid_argument",
      `Cannot commit as 'step' must be a non-negative integer: current value is ${identity.step}`,
    );
  }
  for (
    const [key, value] of [["jobId", identity.jobId], [
      "runId",
      identity.runId,
    ]] as const
  ) {
    if (
      value !== undefined &&
      (typeof value !== "string" || value.length === 0 || value.length > 256)
    ) {
      throw new CkptkitError(
        "invalid_argument",
        `Cannot commit as '${key}' must be a non-empty string of at most 256 characters: current value is ${
          JSON.stringify(value)
        }`,
      );
    }
  }
}

/** Creates the root when missing and returns its real path. */
export async function prepareRoot(root: string): Promise<string> {
  if (typeof root !== "string" || root.length === 0) {
    throw new CkptkitError(
      "invalid_argument",
      "Cannot commit as 'root' is empty",
    );
  }
  try {
    await Deno.mkdir(root, { recursive: true });
    return await Deno.realPath(root);
  } catch (err) {
    if (err instanceof Deno.errors.AlreadyExists || err instanceof Deno.errors.NotADirectory) {
      await requireFolder(root, "checkpoint root");
    }
    throw new CkptkitError(
      "io_error",
      `Cannot use ${root} as a checkpoint root: ${(err as Error).message}`,
      { path: root, cause: err },
    );
  }
}

/**
 * The real path of a staging folder given on the command line, refusing one
 * that is missing (`not_found`), a file or a device (`not_a_folder`) or a
 * symbolic link (`staging_invalid`).
 */
export async function realStagingFolder(stagingDir: string): Promise<string> {
  if ((await Deno.lstat(stagingDir).catch(() => undefined))?.isSymlink) {
    throw new CkptkitError(
      "staging_invalid",
      `${stagingDir} is a symbolic link; commit takes the folder itself`,
      { path: stagingDir },
    );
  }
  await requireFolder(stagingDir, "staging folder");
  return await Deno.realPath(stagingDir);
}

async function checkStaging(stagingDir: string, root: string): Promise<string> {
  const staging = await realStagingFolder(stagingDir);
  const relation = relativeInside(root, staging);
  if (
    staging === root || relativeInside(staging, root) !== undefined ||
    (relation !== undefined &&
      (parseCheckpointName(relation.split("/")[0]) !== undefined ||
        [CORRUPT_DIR, STATE_DIR].includes(relation.split("/")[0])))
  ) {
    throw new CkptkitError(
      "staging_invalid",
      `${stagingDir} cannot be committed: it is the root, contains it, or lies inside a ` +
        `committed checkpoint, corrupt/ or .ckptkit/`,
      { path: stagingDir },
    );
  }
  const rootInfo = await Deno.stat(root);
  const parentInfo = await Deno.stat(dirname(staging));
  if (rootInfo.dev === parentInfo.dev && (await Deno.lstat(staging)).dev !== rootInfo.dev) {
    throw new CkptkitError(
      "mount_point",
      `${stagingDir} is itself a mount point (another file system); it cannot be renamed into ${root}: ` +
        `write the checkpoint into a plain folder inside the root`,
      { path: stagingDir },
    );
  }
  if (rootInfo.dev !== parentInfo.dev) {
    throw new CkptkitError(
      "cross_device",
      `${stagingDir} is on another file system than ${root}, so it cannot be renamed into ` +
        `place atomically; write it inside the root (e.g. ${root}/.staging-${basename(staging)})`,
      { path: stagingDir },
    );
  }
  return staging;
}

/** The `/`-path of `path` inside `folder`, or undefined when it is not inside. */
function relativeInside(folder: string, path: string): string | undefined {
  const base = resolve(folder);
  const target = resolve(path);
  return target.startsWith(base + "/") ? target.slice(base.length + 1) : undefined;
}

function round(seconds: number): number {
  return Math.round(seconds * 1e6) / 1e6;
}
