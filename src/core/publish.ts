/**
 * The last steps of the commit protocol, shared by the writer and by
 * `commit` of a folder written elsewhere: write the manifest, fsync every
 * folder, rename the staging folder into place under the root lock, fsync the
 * root, and move `latest`.
 *
 * A kill at any instant leaves either the old state or the new one: before
 * the rename nothing is visible; after it the checkpoint is complete and
 * durable; `latest` only ever names a checkpoint that was fully renamed.
 *
 * @module
 */

import { dirname } from "node:path";
import { fsyncPath, removeLeftoverTemps, writeFileAtomic } from "../fs/durable.ts";
import { asCkptkitError, CkptkitError } from "../errors.ts";
import { readLatest, writeLatest } from "./latest.ts";
import { MANIFEST_NAME, parseCheckpointName } from "./layout.ts";
import { acquireRootLock } from "./lock.ts";
import { type Manifest, serializeManifest } from "./manifest.ts";
import { COMMIT_POINTS, type CommitPoint } from "../commit_points.ts";

export { COMMIT_POINTS, type CommitPoint };

/** Called at each {@linkcode CommitPoint}; may wait or throw. */
export type FaultHook = (point: CommitPoint) => Promise<void> | void;

/** Inputs of {@linkcode publishCheckpoint}. */
export interface PublishInput {
  /** The root (its real path). */
  root: string;
  /** The staging folder holding every file, already fsynced. */
  stagingDir: string;
  /** Sub-folders of the staging folder, parents before children. */
  stagingDirs: string[];
  /** The final folder name in the root, e.g. `step-10`. */
  name: string;
  /** The manifest to write. */
  manifest: Manifest;
  /** Lock wait in ms. */
  lockTimeoutMs?: number;
  /** Fault injection for tests. */
  faultHook?: FaultHook;
}

/** What {@linkcode publishCheckpoint} did. */
export interface PublishOutcome {
  /** The committed checkpoint's path. */
  path: string;
  /** Whether `latest` now names it (it is not moved back to an older step). */
  latestUpdated: boolean;
  /** What `latest` named before, if anything. */
  previousLatest: string | null;
}

/**
 * Runs the commit protocol's steps 2 to 5 (docs/how-it-works.md, "The commit protocol") on a staging folder
 * whose files are written and fsynced.
 *
 * Requires `--allow-read`, `--allow-write` and `--allow-sys`.
 */
export async function publishCheckpoint(
  input: PublishInput,
): Promise<PublishOutcome> {
  const { root, stagingDir, name, faultHook } = input;
  const finalPath = `${root}/${name}`;
  try {
    await writeFileAtomic(
      `${stagingDir}/${MANIFEST_NAME}`,
      serializeManifest(input.manifest),
    );
    await faultHook?.("manifest_written");
    for (const dir of [...input.stagingDirs].reverse()) {
      await fsyncPath(`${stagingDir}/${dir}`);
    }
    await fsyncPath(stagingDir);
    await faultHook?.("folders_synced");
  } catch (err) {
    throw asCkptkitError(
      err,
      `Writing the manifest of ${stagingDir}`,
      stagingDir,
    );
  }

  const lock = await acquireRootLock(root, { timeoutMs: input.lockTimeoutMs });
  try {
    await refuseExisting(finalPath);
    // Another process's temporary manifest (a killed or concurrent commit of this very folder) would be renamed
    // into the checkpoint with it; this process's own is already renamed.
    await removeLeftoverTemps(stagingDir, MANIFEST_NAME);
    await faultHook?.("before_rename");
    try {
      await Deno.rename(stagingDir, finalPath);
    } catch (err) {
      throw asCkptkitError(
        err,
        `Renaming ${stagingDir} to ${finalPath}`,
        finalPath,
      );
    }
    await fsyncPath(root);
    const stagingParent = dirname(stagingDir);
    if (stagingParent !== root) await fsyncPath(stagingParent);
    await faultHook?.("after_rename");

    const previous = await readLatest(root);
    // latest never moves back: not below the step it names (unless that folder is gone), and not below a newer
    // checkpoint folder it should have named (latest was deleted or garbled, or an older step is committed late).
    // Whether that newer one is valid is not judged here: resume takes the newest valid checkpoint whatever latest
    // says, and `resume --repair` rewrites latest after validating.
    const latestUpdated = (previous.state !== "ok" ||
      (previous.step ?? -1) <= input.manifest.step ||
      !(await exists(`${root}/${previous.name}`))) &&
      (await newestCheckpointStep(root)) <= input.manifest.step;
    if (latestUpdated) {
      await writeLatest(root, name, {
        beforeRename: async () => await faultHook?.("before_latest_rename"),
      });
    }
    await faultHook?.("committed");
    return {
      path: finalPath,
      latestUpdated,
      previousLatest: previous.name ?? null,
    };
  } catch (err) {
    throw asCkptkitError(err, `Committing ${finalPath}`, finalPath);
  } finally {
    await lock.release();
  }
}

async function refuseExisting(finalPath: string): Promise<void> {
  // rename(2) would silently replace an empty folder, so look first; the root
  // lock keeps other ckptkit processes from creating it in between.
  if (await exists(finalPath)) {
    throw new CkptkitError(
      "checkpoint_exists",
      `${finalPath} already exists; a committed checkpoint is never replaced`,
      { path: finalPath },
    );
  }
}

/** Whether anything (file, folder, dangling symlink) exists at `path`. */
export async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return false;
    throw err;
  }
}

/** The highest step of the `step-N` folders in `root` (-1 when there is none), by name alone. */
async function newestCheckpointStep(root: string): Promise<number> {
  let newest = -1;
  for await (const entry of Deno.readDir(root)) {
    if (!entry.isDirectory) continue;
    const step = parseCheckpointName(entry.name);
    if (step !== undefined && step > newest) newest = step;
  }
  return newest;
}
