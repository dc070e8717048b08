/**
 * Lists the entries of a checkpoint folder without following symbolic links,
 * so that nothing outside the checkpoint is ever opened through one.
 *
 * @module
 */

/** A regular file found in a checkpoint folder. */
export interface TreeFile {
  /** Path relative to the folder, `/`-separated. */
  path: string;
  /** Size in bytes (lstat). */
  size: number;
  /** Modification time in ms since the epoch (0 when unknown). */
  mtimeMs: number;
}

/** Something in a checkpoint folder that is not a regular file or folder. */
export interface TreeOddity {
  /** Path relative to the folder. */
  path: string;
  /**
   * What it is: a `symlink`, `other` (FIFO, socket, device), or `undecodable`: a name that is not
   * UTF-8, which reaches Deno lossily (U+FFFD) and no longer names the entry.
   */
  kind: "symlink" | "other" | "undecodable";
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
}

/**
 * Lists every regular file under `dir` with lstat, never following a symlink.
 * Errors are collected, not thrown, so one unreadable folder does not hide
 * the rest.
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
  const pending: string[] = [""];
  while (pending.length > 0) {
    const relative = pending.shift()!;
    const absolute = relative ? `${dir}/${relative}` : dir;
    let entries: Deno.DirEntry[];
    try {
      entries = await Array.fromAsync(Deno.readDir(absolute));
    } catch (err) {
      if (err instanceof Deno.errors.NotFound && relative.includes("\uFFFD")) {
        tree.oddities.push({ path: relative, kind: "undecodable" });
      } else {
        tree.errors.push({ path: relative, message: (err as Error).message });
      }
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
        tree.dirs.push(path);
        pending.push(path);
      } else if (entry.isFile) {
        try {
          const info = await Deno.lstat(`${dir}/${path}`);
          tree.files.set(path, {
            path,
            size: info.size,
            mtimeMs: info.mtime?.getTime() ?? 0,
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
