/**
 * Durable file-system primitives: fsync of files and folders, and atomic
 * replacement of small files (temporary file in the same folder, fsync,
 * rename, fsync of the folder). Every step of the commit protocol is built
 * from these.
 *
 * @module
 */

import { basename, dirname } from "node:path";
import { CkptkitError } from "../errors.ts";

/**
 * Flushes a file or folder to stable storage. Folders must be fsynced after
 * entries are created, renamed or removed in them, or a crash can forget the
 * change even though the entries' contents were flushed.
 *
 * Requires `--allow-read`.
 *
 * @example
 * ```ts
 * import { fsyncPath } from "./durable.ts";
 * const dir = await Deno.makeTempDir();
 * await Deno.writeTextFile(`${dir}/a`, "x");
 * await fsyncPath(`${dir}/a`); // the file's data
 * await fsyncPath(dir); // the folder entry naming it
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function fsyncPath(path: string): Promise<void> {
  const file = await Deno.open(path, { read: true });
  try {
    await file.sync();
  } finally {
    file.close();
  }
}

/** Options for {@linkcode writeFileAtomic}. */
export interface WriteFileAtomicOptions {
  /** Permission bits of the new file (default 0o644, less the umask). */
  mode?: number;
  /** Called after the temporary file is fsynced, before the rename (tests inject faults here). */
  beforeRename?: () => Promise<void>;
}

/**
 * Replaces `path` with `data` so that a reader or a crash sees either the old
 * content or the new, never a mix or an empty file: writes a temporary file
 * beside it, fsyncs it, renames it over `path`, then fsyncs the folder.
 *
 * Requires `--allow-read` and `--allow-write`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { writeFileAtomic } from "./durable.ts";
 * const dir = await Deno.makeTempDir();
 * await writeFileAtomic(`${dir}/latest`, "step-20\n");
 * assert.ok(await Deno.readTextFile(`${dir}/latest`) === "step-20\n");
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function writeFileAtomic(
  path: string,
  data: string | Uint8Array,
  options: WriteFileAtomicOptions = {},
): Promise<void> {
  const folder = dirname(path);
  const temp = `${folder}/${tempName(basename(path))}`;
  const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
  const file = await Deno.open(temp, {
    write: true,
    createNew: true,
    mode: options.mode ?? 0o644,
  });
  try {
    try {
      let written = 0;
      while (written < bytes.length) {
        written += await file.write(bytes.subarray(written));
      }
      await file.sync();
    } finally {
      file.close();
    }
    await options.beforeRename?.();
    await Deno.rename(temp, path);
  } catch (err) {
    await Deno.remove(temp).catch(() => {});
    throw err;
  }
  await fsyncPath(folder);
}

function tempName(name: string): string {
  return `.${name}.tmp-${crypto.randomUUID().slice(0, 8)}`;
}

/**
 * Removes the temporary files that {@linkcode writeFileAtomic} of
 * `<folder>/<name>` left when its process was killed (regular files named
 * exactly as it names them), then fsyncs the folder. Returns their names.
 * Only safe where no other process is writing `<folder>/<name>` right now.
 *
 * Requires `--allow-read` and `--allow-write`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { removeLeftoverTemps } from "./durable.ts";
 * const dir = await Deno.makeTempDir();
 * await Deno.writeTextFile(`${dir}/.latest.tmp-0a1b2c3d`, "step-");
 * assert.deepEqual(await removeLeftoverTemps(dir, "latest"), [".latest.tmp-0a1b2c3d"]);
 * await Deno.remove(dir);
 * ```
 */
export async function removeLeftoverTemps(folder: string, name: string): Promise<string[]> {
  const prefix = `.${name}.tmp-`;
  const removed: string[] = [];
  for await (const entry of Deno.readDir(folder)) {
    const suffix = entry.name.startsWith(prefix) ? entry.name.slice(prefix.length) : "";
    if (entry.isFile && /^[0-9a-f]{8}$/.test(suffix)) {
      await Deno.remove(`${folder}/${entry.name}`).catch((err) => {
        if (!(err instanceof Deno.errors.NotFound)) throw err;
      });
      removed.push(entry.name);
    }
  }
  if (removed.length > 0) await fsyncPath(folder);
  return removed;
}

/**
 * Reads a whole file, refusing one larger than `limit` bytes so that hostile
 * input cannot exhaust memory. Returns `undefined` when it is too large.
 *
 * Requires `--allow-read`.
 */
export async function readFileLimited(
  path: string,
  limit: number,
): Promise<Uint8Array | undefined> {
  const file = await Deno.open(path, { read: true });
  try {
    const info = await file.stat();
    if (info.size > limit) return undefined;
    // One buffer of the size at open (plus one byte to see growth): a manifest of 100,000 files is tens of MB, and
    // 64 KiB reads would each be a round trip. A file that grows is read on in chunks, still within the limit.
    let out = new Uint8Array(Math.min(info.size, limit) + 1);
    let total = 0;
    while (true) {
      if (total === out.length) {
        if (total > limit) return undefined;
        const bigger = new Uint8Array(Math.min(out.length * 2, limit + 1));
        bigger.set(out);
        out = bigger;
      }
      const n = await file.read(out.subarray(total));
      if (n === null) break;
      total += n;
      if (total > limit) return undefined;
    }
    return out.subarray(0, total);
  } finally {
    file.close();
  }
}

/**
 * Creates the folder `path` when it is missing, and refuses it (`unsafe_path`)
 * when it is a symbolic link or not a folder, so that nothing is ever written
 * through a link planted in a root.
 *
 * Requires `--allow-read` and `--allow-write`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ensureRealFolder } from "./durable.ts";
 * const dir = await Deno.makeTempDir();
 * await ensureRealFolder(`${dir}/state`);
 * await Deno.symlink(dir, `${dir}/link`);
 * await assert.rejects(ensureRealFolder(`${dir}/link`));
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function ensureRealFolder(path: string): Promise<void> {
  try {
    await Deno.mkdir(path);
  } catch (err) {
    if (!(err instanceof Deno.errors.AlreadyExists)) throw err;
  }
  const info = await Deno.lstat(path);
  if (!info.isDirectory) {
    throw new CkptkitError(
      "unsafe_path",
      `${path} is ${info.isSymlink ? "a symbolic link" : "not a folder"}; ckptkit never writes through it`,
      { path },
    );
  }
}

/**
 * Refuses (`unsafe_path`) an existing `path` that is not a regular file, before
 * it is opened: `Deno.open` follows symbolic links and blocks on FIFOs.
 *
 * Requires `--allow-read`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { refuseNonRegular } from "./durable.ts";
 * const dir = await Deno.makeTempDir();
 * await refuseNonRegular(`${dir}/missing`);
 * await Deno.symlink("/etc/passwd", `${dir}/link`);
 * await assert.rejects(refuseNonRegular(`${dir}/link`));
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function refuseNonRegular(path: string): Promise<void> {
  const info = await Deno.lstat(path).catch(() => undefined);
  if (info && !info.isFile) {
    throw new CkptkitError(
      "unsafe_path",
      `${path} is ${info.isSymlink ? "a symbolic link" : "not a regular file"}; ckptkit never opens it`,
      { path },
    );
  }
}
