/**
 * Lists what a checkpoint root holds, classifying every entry without
 * opening any checkpoint: committed checkpoints (numeric step order), staging
 * folders, ckptkit's own entries, and everything else, which is reported
 * rather than guessed at.
 *
 * @module
 */

import { CkptkitError } from "../errors.ts";
import { notAFolder } from "../fs/folder.ts";
import { PARTS_SUFFIX, type RankProgress, readRankProgress } from "./part.ts";
import {
  CORRUPT_DIR,
  inferStep,
  isStagingName,
  LATEST_NAME,
  MANIFEST_NAME,
  parseCheckpointName,
  STATE_DIR,
} from "./layout.ts";

/** A committed checkpoint folder found in a root. */
export interface RootCheckpoint {
  /** Folder name, e.g. `step-10`. */
  name: string;
  /** Absolute path. */
  path: string;
  /** Step parsed from the name. */
  step: number;
  /** Folder modification time in ms since the epoch. */
  mtimeMs: number;
  /**
   * Named by another tool (`checkpoint-500`, `global_step500`): validated like the others (structurally with
   * `--deep` when it has no manifest), never deleted by gc.
   */
  foreign: boolean;
}

/** A staging folder (a write in progress or a crashed one). */
export interface RootStaging {
  /** Folder name. */
  name: string;
  /** Absolute path. */
  path: string;
  /**
   * Seconds since anything in it last changed: the newest mtime or ctime of the folder and of every entry in it.
   * A copy (`cp -a`, `rsync -a`) keeps old mtimes but cannot keep ctimes, so a folder filled seconds ago is young.
   */
  age_s: number;
  /** For the parts folder of a multi-rank commit (`<staging>.parts`): which ranks recorded their parts. */
  ranks?: RankProgress;
}

/** A root entry that is not part of the layout. */
export interface RootStray {
  /** Entry name. */
  name: string;
  /** Why it is reported. */
  detail: string;
  /** A step inferred from another tool's naming, when there is one. */
  inferred_step: number | null;
}

/** Everything {@linkcode listRoot} found. */
export interface RootListing {
  /** The root's real path. */
  root: string;
  /** Committed checkpoints, newest (highest step) first. */
  checkpoints: RootCheckpoint[];
  /** Staging folders. */
  staging: RootStaging[];
  /** Entries that are not part of the layout. */
  strays: RootStray[];
}

/**
 * Lists a root's entries with lstat only; symlinks are never followed.
 *
 * Requires `--allow-read`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { listRoot } from "./root.ts";
 * const root = await Deno.makeTempDir();
 * await Deno.mkdir(`${root}/step-9`);
 * await Deno.mkdir(`${root}/step-10`);
 * const listing = await listRoot(root);
 * assert.ok(listing.checkpoints.map((c) => c.step).join() === "10,9");
 * await Deno.remove(root, { recursive: true });
 * ```
 */
export async function listRoot(root: string): Promise<RootListing> {
  let realRoot: string;
  let entries: Deno.DirEntry[];
  try {
    realRoot = await Deno.realPath(root);
    entries = await Array.fromAsync(Deno.readDir(realRoot));
  } catch (err) {
    if (err instanceof Deno.errors.NotADirectory) throw notAFolder(root, "checkpoint root", "a file or a device");
    throw new CkptkitError(
      err instanceof Deno.errors.NotFound ? "not_found" : "io_error",
      `Cannot read checkpoint root ${root}: ${(err as Error).message}`,
      { path: root, cause: err },
    );
  }
  const listing: RootListing = {
    root: realRoot,
    checkpoints: [],
    staging: [],
    strays: [],
  };
  const now = Date.now();
  for (const entry of entries) {
    const { name } = entry;
    const path = `${realRoot}/${name}`;
    if (name === STATE_DIR || name === LATEST_NAME || name === CORRUPT_DIR) {
      continue;
    }
    if (name.startsWith(`.${LATEST_NAME}.tmp-`)) {
      listing.strays.push({
        name,
        detail: "leftover temporary file of latest (a crashed update)",
        inferred_step: null,
      });
      continue;
    }
    if (entry.isSymlink) {
      listing.strays.push({
        name,
        detail: "symbolic link in the root; never followed",
        inferred_step: null,
      });
      continue;
    }
    const info = await Deno.lstat(path).catch(() => undefined);
    if (!info) continue; // removed while listing
    const mtimeMs = info.mtime?.getTime() ?? 0;
    if (isStagingName(name) && entry.isDirectory) {
      const newest = await lastChangeMs(path, info, now);
      const ranks = name.endsWith(PARTS_SUFFIX) ? await readRankProgress(path).catch(() => undefined) : undefined;
      listing.staging.push({
        name,
        path,
        age_s: Math.max(0, (now - newest) / 1000),
        ...(ranks ? { ranks } : {}),
      });
      continue;
    }
    const step = parseCheckpointName(name);
    if (step !== undefined && entry.isDirectory) {
      listing.checkpoints.push({ name, path, step, mtimeMs, foreign: false });
      continue;
    }
    // Another tool's checkpoint folder (checkpoint-500, global_step500, step_500, epoch=1-step=500.ckpt).
    const foreignStep = /^step-/.test(name) ? undefined : inferStep(name);
    if (foreignStep !== undefined && entry.isDirectory) {
      listing.checkpoints.push({ name, path, step: foreignStep, mtimeMs, foreign: true });
      continue;
    }
    listing.strays.push(await describeStray(name, path, entry));
  }
  listing.checkpoints.sort((a, b) => b.step - a.step || Number(a.foreign) - Number(b.foreign));
  listing.staging.sort((a, b) => (a.name < b.name ? -1 : 1));
  listing.strays.sort((a, b) => (a.name < b.name ? -1 : 1));
  return listing;
}

/**
 * When anything in a staging folder last changed, as far as the file system
 * can tell: the newest of the mtime and ctime of the folder and of every
 * entry under it. A writer appending to one big file for hours touches only
 * that file's times; a copy that preserves mtimes still sets every ctime
 * (no tool can set it). Anything that cannot be read, or vanishes while
 * walking, counts as changing now: a staging folder is only ever judged
 * stale on evidence.
 */
async function lastChangeMs(path: string, info: Deno.FileInfo, now: number): Promise<number> {
  let newest = changeMs(info);
  const walk = async (dir: string): Promise<void> => {
    for await (const entry of Deno.readDir(dir)) {
      const child = `${dir}/${entry.name}`;
      newest = Math.max(newest, changeMs(await Deno.lstat(child)));
      if (entry.isDirectory) await walk(child);
    }
  };
  try {
    await walk(path);
  } catch {
    return now;
  }
  return newest;
}

function changeMs(info: Deno.FileInfo): number {
  // Deno reports ctime in whole seconds: up to a second too old, which only a --stale-after under a second notices.
  return Math.max(info.mtime?.getTime() ?? 0, info.ctime?.getTime() ?? 0, info.birthtime?.getTime() ?? 0);
}

/**
 * The marks of a ckptkit root that {@linkcode assertRoot} looks for, in the
 * listing and beside it.
 */
const ROOT_MARKS = [STATE_DIR, LATEST_NAME, CORRUPT_DIR] as const;

/**
 * Refuses (`not_a_root`, exit 2) a folder that has none of the marks of a
 * ckptkit root: `.ckptkit/`, `latest`, `corrupt/` or a checkpoint folder
 * (ours or another tool's). Commands that delete or move things call it
 * before touching anything, so that pointing one at the wrong folder (a home
 * directory, a dataset) changes nothing there; commands that create a root
 * (commit, write) do not.
 *
 * Requires `--allow-read`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { assertRoot, listRoot } from "./root.ts";
 * const dir = await Deno.makeTempDir();
 * await assert.rejects(async () => assertRoot(await listRoot(dir)), /not a ckptkit root/);
 * await Deno.mkdir(`${dir}/step-10`);
 * await assertRoot(await listRoot(dir));
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function assertRoot(listing: RootListing): Promise<void> {
  if (await isRoot(listing)) return;
  throw new CkptkitError(
    "not_a_root",
    `${listing.root} is not a ckptkit root (it has no .ckptkit/, latest, corrupt/ or checkpoint folder), so ` +
      `nothing there was changed; if it is a root no checkpoint was committed to yet, mkdir ${listing.root}/.ckptkit`,
    { path: listing.root },
  );
}

/**
 * Whether a listed folder has any mark of a ckptkit root (see
 * {@linkcode assertRoot}).
 *
 * Requires `--allow-read`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { isRoot, listRoot } from "./root.ts";
 * const dir = await Deno.makeTempDir();
 * assert.ok(!(await isRoot(await listRoot(dir))));
 * await Deno.writeTextFile(`${dir}/latest`, "step-10\n");
 * assert.ok(await isRoot(await listRoot(dir)));
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function isRoot(listing: RootListing): Promise<boolean> {
  if (listing.checkpoints.length > 0) return true;
  for (const mark of ROOT_MARKS) {
    if (await Deno.lstat(`${listing.root}/${mark}`).then(() => true, () => false)) return true;
  }
  return false;
}

async function describeStray(
  name: string,
  path: string,
  entry: Deno.DirEntry,
): Promise<RootStray> {
  const inferred = inferStep(name) ?? null;
  if (!entry.isDirectory) {
    return {
      name,
      detail: "file that is not part of the root layout",
      inferred_step: null,
    };
  }
  const hasManifest = await Deno.lstat(`${path}/${MANIFEST_NAME}`).then(
    () => true,
    () => false,
  );
  if (/^step-/.test(name)) {
    return {
      name,
      detail: `name does not parse as step-<n> (no leading zeros or suffixes); not treated as a checkpoint`,
      inferred_step: null,
    };
  }
  if (inferred !== null) {
    return {
      name,
      detail: hasManifest
        ? `checkpoint named by another tool; rename to step-${inferred} to manage it`
        : `looks like a checkpoint of another tool but has no manifest; adopt it with ckptkit seal`,
      inferred_step: inferred,
    };
  }
  return {
    name,
    detail: "folder that is not part of the root layout",
    inferred_step: null,
  };
}
