/**
 * The one recursive removal ckptkit does (trash, aborted staging folders,
 * multi-rank parts): it stays on the device of the folder it removes, never
 * enters a mount and never follows a symbolic link, so that a bind mount or
 * a tmpfs found inside a checkpoint never costs the files of the file system
 * mounted there.
 *
 * @module
 */

import { basename, dirname } from "node:path";
import { CkptkitError } from "../errors.ts";
import { isBusy, mountPointsUnder } from "./mounts.ts";

/**
 * Removes `path` and everything under it that lies on the same device as
 * its parent folder. Symbolic links are removed as links. A mount point (a
 * folder or file on another device) is neither entered nor removed, nor are
 * the folders holding it; once everything else is gone, a `mount_point`
 * {@linkcode CkptkitError} names it. A missing `path` is not an error.
 *
 * Mounts are found by device, by `/proc/self/mountinfo` when it can be
 * read, and by rmdir(2) itself, which refuses a mount point (EBUSY) before
 * it looks at its entries: so a bind mount of this very file system is
 * never entered either. Names that are not UTF-8 cannot be spelled through
 * Deno; once everything else in a folder is gone, a folder holding one is
 * removed whole by the runtime, unless the mount table (where it can be
 * read) shows a mount under it, in which case it is kept and reported.
 *
 * Requires `--allow-read` and `--allow-write`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { removeTreeOnDevice } from "./remove.ts";
 * const dir = await Deno.makeTempDir();
 * await Deno.mkdir(`${dir}/doomed/sub`, { recursive: true });
 * await Deno.writeTextFile(`${dir}/doomed/sub/a.bin`, "x");
 * await Deno.symlink("/etc", `${dir}/doomed/etc`);
 * await removeTreeOnDevice(`${dir}/doomed`);
 * assert.deepEqual(await Array.fromAsync(Deno.readDir(dir)), []);
 * await Deno.remove(dir);
 * ```
 */
export async function removeTreeOnDevice(path: string): Promise<void> {
  const parent = dirname(path);
  let device: number | null;
  try {
    device = (await Deno.stat(parent)).dev;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return;
    throw err;
  }
  const walk: Walk = { device, mountPoints: await mountPointsUnder(parent), kept: [] };
  await removeEntry(path, basename(path), walk);
  if (walk.kept.length > 0) {
    const [first] = walk.kept;
    throw new CkptkitError(
      "mount_point",
      `${first} is a mount point (another file system)${
        walk.kept.length > 1 ? ` and ${walk.kept.length - 1} more` : ""
      }; ckptkit never removes across a mount, so it and the folders holding it were kept: unmount it, then ` +
        `remove ${path}`,
      { path: first },
    );
  }
}

interface Walk {
  /** The device of the removed entry's parent folder. */
  device: number | null;
  /** Mount points under that folder, relative to it. */
  mountPoints: Set<string>;
  /** Mount points left in place. */
  kept: string[];
}

/** Removes one entry (`relative` to the parent of the removal); returns false when something had to be kept. */
async function removeEntry(path: string, relative: string, walk: Walk): Promise<boolean> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.lstat(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return true;
    throw err;
  }
  if (walk.mountPoints.has(relative) || (walk.device !== null && info.dev !== null && info.dev !== walk.device)) {
    walk.kept.push(path);
    return false;
  }
  // rmdir(2) and unlink(2) refuse a mount point (EBUSY) before anything else,
  // which catches a bind mount of this very file system; an empty folder goes at once.
  try {
    await Deno.remove(path);
    return true;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return true;
    if (isBusy(err)) {
      walk.kept.push(path);
      return false;
    }
    if (!info.isDirectory) throw err;
  }
  let complete = true;
  let undecodable = false;
  for await (const entry of Deno.readDir(path)) {
    if (entry.name.includes("\uFFFD") && !(await present(`${path}/${entry.name}`))) {
      undecodable = true;
      continue;
    }
    if (!(await removeEntry(`${path}/${entry.name}`, `${relative}/${entry.name}`, walk))) complete = false;
  }
  if (!complete) return false;
  if (undecodable) {
    // The runtime removes what Deno cannot name, but would enter a mount below.
    if ([...walk.mountPoints].some((point) => point.startsWith(`${relative}/`))) {
      walk.kept.push(path);
      return false;
    }
    await Deno.remove(path, { recursive: true }).catch(ignoreNotFound);
    return true;
  }
  await Deno.remove(path).catch(ignoreNotFound);
  return true;
}

async function present(path: string): Promise<boolean> {
  return await Deno.lstat(path).then(() => true, () => false);
}

function ignoreNotFound(err: unknown): void {
  if (!(err instanceof Deno.errors.NotFound)) throw err;
}
