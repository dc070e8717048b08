/**
 * Lists the entries of a checkpoint folder without following symbolic links
 * or crossing into mounted file systems, so that nothing outside the
 * checkpoint is ever opened through one.
 *
 * @module
 */

import { CkptkitError } from "../errors.ts";
import { mountPointsUnder, rmdirSaysMountPoint } from "./mounts.ts";

/** A regular file found in a checkpoint folder. */
export interface TreeFile {
  /** Path relative to the folder, `/`-separated. */
  path: string;
  /** Size in bytes (lstat); -1 when listed with `fileStats: false`. */
  size: number;
  /** Modification time in ms since the epoch (0 when unknown or not stat'ed). */
  mtimeMs: number;
}

/** Something in a checkpoint folder that is not a regular file or folder. */
export interface TreeOddity {
  /** Path relative to the folder. */
  path: string;
  /**
   * What it is: a `symlink`, `other` (FIFO, socket, device), `undecodable`: a name that is not
   * UTF-8, which reaches Deno lossily (U+FFFD) and no longer names the entry, or `mount_point`: a
   * folder or file on another device than the listed folder (a tmpfs, a bind mount from another
   * file system), or a bind mount of the same one where the mount table is readable or
   * `probeMounts` asks; never entered.
   */
  kind: "symlink" | "other" | "undecodable" | "mount_point";
  /** For a symlink, its target as stored (never followed). */
  target?: string;
}

/** A failure to read part of the tree. */
export interface TreeError {
  /** Path relative to the folder ("" for the folder itself). */
  path: string;
  /** The runtime's message. */
  message: string;
}

/** Everything {@linkcode listTree} found. */
export interface Tree {
  /** Regular files by relative path. */
  files: Map<string, TreeFile>;
  /** Relative paths of sub-folders, parents before children ("" excluded). */
  dirs: string[];
  /** Symlinks and special files, never followed or opened. */
  oddities: TreeOddity[];
  /** Folders or files that could not be read. */
  errors: TreeError[];
}

/** Options for {@linkcode listTree}. */
export interface ListTreeOptions {
  /** Top-level names to leave out (for example the manifest). */
  skipTopLevel?: (name: string) => boolean;
  /**
   * Also find bind mounts of the same file system (same `st_dev`) when the
   * mount table cannot be read, by asking rmdir(2) about every folder that
   * holds entries (see `rmdirSaysMountPoint`). Only for a folder about to be
   * committed by ckptkit, never for validation.
   */
  probeMounts?: boolean;
  /**
   * lstat every regular file for its size and mtime (default true). False lists files from their folder entries'
   * types alone (size -1), for callers that learn sizes otherwise (validation: from the manifest and the reads).
   */
  fileStats?: boolean;
}

/**
 * Lists every regular file under `dir`, never following a symlink. Types come
 * from the folder entries; files are lstat'ed (blocking calls: one round trip
 * each would cost more than the call) unless `fileStats` is false, folders
 * once each for their device (a mount point is a folder). Errors are
 * collected, not thrown, so one unreadable folder does not hide the rest.
 *
 * Requires `--allow-read`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { listTree } from "./tree.ts";
 * const dir = await Deno.makeTempDir();
 * await Deno.mkdir(`${dir}/a`);
 * await Deno.writeTextFile(`${dir}/a/b.bin`, "x");
 * const tree = await listTree(dir);
 * assert.ok(tree.files.get("a/b.bin")?.size === 1);
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function listTree(
  dir: string,
  options: ListTreeOptions = {},
): Promise<Tree> {
  const tree: Tree = { files: new Map(), dirs: [], oddities: [], errors: [] };
  let device: number | null;
  try {
    device = (await Deno.stat(dir)).dev;
  } catch (err) {
    tree.errors.push({ path: "", message: (err as Error).message });
    return tree;
  }
  // A mount inside a checkpoint holds another file system's files: a rename
  // does not carry them atomically and a recursive removal would delete them.
  const mountPoints = await mountPointsUnder(dir);
  const mounted = (path: string, info: Deno.FileInfo | undefined) =>
    mountPoints.has(path) || (device !== null && info?.dev != null && info.dev !== device);
  const statFiles = options.fileStats ?? true;
  const pending: string[] = [""];
  // An index, not shift(): shifting a queue of thousands of folders is quadratic.
  for (let next = 0; next < pending.length; next++) {
    const relative = pending[next];
    const absolute = relative ? `${dir}/${relative}` : dir;
    let entries: Deno.DirEntry[];
    try {
      // Blocking: one call per folder, where the async iterator is a round trip per batch of entries.
      entries = [...Deno.readDirSync(absolute)];
    } catch (err) {
      if (err instanceof Deno.errors.NotFound && relative.includes("\uFFFD")) {
        tree.oddities.push({ path: relative, kind: "undecodable" });
      } else {
        tree.errors.push({ path: relative, message: (err as Error).message });
      }
      continue;
    }
    if (options.probeMounts && relative && entries.length > 0 && await rmdirSaysMountPoint(absolute)) {
      tree.dirs.splice(tree.dirs.indexOf(relative), 1);
      tree.oddities.push({ path: relative, kind: "mount_point" });
      continue;
    }
    entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const entry of entries) {
      if (!relative && options.skipTopLevel?.(entry.name)) continue;
      const path = relative ? `${relative}/${entry.name}` : entry.name;
      if (entry.isSymlink) {
        const target = await Deno.readLink(`${dir}/${path}`).catch(() => "?");
        tree.oddities.push({ path, kind: "symlink", target });
      } else if (entry.isDirectory) {
        let info: Deno.FileInfo | undefined;
        try {
          info = Deno.lstatSync(`${dir}/${path}`);
        } catch {
          info = undefined;
        }
        if (mounted(path, info)) {
          tree.oddities.push({ path, kind: "mount_point" });
          continue;
        }
        tree.dirs.push(path);
        pending.push(path);
      } else if (entry.isFile) {
        // A name that is not UTF-8 reaches Deno with U+FFFD and no longer names the file: only a stat tells.
        if (!statFiles && !entry.name.includes("\uFFFD")) {
          if (mountPoints.has(path)) tree.oddities.push({ path, kind: "mount_point" });
          else tree.files.set(path, { path, size: -1, mtimeMs: 0 });
          continue;
        }
        try {
          const info = Deno.lstatSync(`${dir}/${path}`);
          if (mounted(path, info)) {
            tree.oddities.push({ path, kind: "mount_point" });
            continue;
          }
          tree.files.set(path, {
            path,
            size: statFiles ? info.size : -1,
            mtimeMs: statFiles ? info.mtime?.getTime() ?? 0 : 0,
          });
        } catch (err) {
          if (err instanceof Deno.errors.NotFound && entry.name.includes("\uFFFD")) {
            tree.oddities.push({ path, kind: "undecodable" });
          } else {
            tree.errors.push({ path, message: (err as Error).message });
          }
        }
      } else {
        tree.oddities.push({ path, kind: "other" });
      }
    }
  }
  return tree;
}

/**
 * The error refusing a folder that holds `oddity`, saying what is wrong with
 * it: `mount_point` for a mount, `unsupported_entry` for the rest.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { oddityError } from "./tree.ts";
 * const err = oddityError("/ckpts/.staging-1", { path: "data", kind: "mount_point" });
 * assert.ok(err.reason === "mount_point");
 * ```
 */
export function oddityError(dir: string, oddity: TreeOddity): CkptkitError {
  const path = `${dir}/${oddity.path}`;
  switch (oddity.kind) {
    case "mount_point":
      return new CkptkitError(
        "mount_point",
        `${path} is a mount point (another file system inside the folder); a checkpoint must lie on one file ` +
          `system, so that it is renamed whole and never deleted across a mount; unmount it or move its files in`,
        { path },
      );
    case "undecodable":
      return new CkptkitError(
        "unsupported_entry",
        `${path} (shown with U+FFFD) has a name that is not valid UTF-8, so the JSON manifest cannot record it; ` +
          `rename it`,
        { path },
      );
    case "symlink":
      return new CkptkitError(
        "unsupported_entry",
        `${path} is a symbolic link to ${oddity.target}; checkpoints may hold only regular files and folders`,
        { path },
      );
    default:
      return new CkptkitError(
        "unsupported_entry",
        `${path} is not a regular file (FIFO, socket or device); checkpoints may hold only regular files and folders`,
        { path },
      );
  }
}
