/**
 * Finding mount points inside a folder. A mount of another file system shows
 * as a different `st_dev`, but a bind mount of a folder of the same file
 * system does not; the kernel's mount table names both, but Deno lets only
 * `--allow-all` read `/proc`, so a failing rmdir(2) tells as well.
 *
 * @module
 */

/**
 * The mount points strictly under `dir`, as paths relative to it, from
 * `/proc/self/mountinfo`. Empty where there is no such table (not Linux) or
 * it may not be read (Deno grants `/proc` to `--allow-all` alone, which the
 * CLI does not have): callers also compare `st_dev` and ask rmdir(2).
 *
 * Requires `--allow-read`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { mountPointsUnder } from "./mounts.ts";
 * const dir = await Deno.makeTempDir();
 * assert.ok((await mountPointsUnder(dir)).size === 0);
 * await Deno.remove(dir);
 * ```
 */
export async function mountPointsUnder(dir: string): Promise<Set<string>> {
  if (!mayReadProc()) return new Set();
  let table: string;
  let real: string;
  try {
    table = await Deno.readTextFile("/proc/self/mountinfo");
    real = await Deno.realPath(dir);
  } catch {
    return new Set();
  }
  const prefix = real === "/" ? "/" : `${real}/`;
  const found = new Set<string>();
  for (const line of table.split("\n")) {
    const field = line.split(" ")[4];
    if (field === undefined) continue;
    // The kernel escapes space, tab, newline and backslash as octal.
    const point = field.replace(/\\([0-7]{3})/g, (_, octal) => String.fromCharCode(parseInt(octal, 8)));
    if (point.startsWith(prefix)) found.add(point.slice(prefix.length));
  }
  return found;
}

let procReadable: boolean | undefined;

/**
 * Deno grants `/proc` to `--allow-all` only; asking without it would fail,
 * or prompt on a terminal.
 */
function mayReadProc(): boolean {
  procReadable ??= Deno.build.os === "linux" &&
    (["read", "write", "net", "env", "run", "sys", "ffi"] as const).every((name) =>
      Deno.permissions.querySync({ name }).state === "granted"
    );
  return procReadable;
}

/**
 * Whether the folder `path` is a mount point, asked of rmdir(2): the kernel
 * refuses a mount point with EBUSY before it looks at the folder's entries,
 * and a plain folder that holds entries with ENOTEMPTY, so nothing is
 * removed. An empty folder is not asked (false). Only for folders ckptkit is
 * about to commit or remove, never while validating: should the folder be
 * emptied between the look and the ask, it is removed and made again.
 *
 * Requires `--allow-read` and `--allow-write`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { rmdirSaysMountPoint } from "./mounts.ts";
 * const dir = await Deno.makeTempDir();
 * await Deno.writeTextFile(`${dir}/a`, "x");
 * assert.ok(!(await rmdirSaysMountPoint(dir)));
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function rmdirSaysMountPoint(path: string): Promise<boolean> {
  // An empty folder would be removed: there is nothing to ask (and nothing to lose across it).
  const { done: empty } = await Deno.readDir(path)[Symbol.asyncIterator]().next();
  if (empty) return false;
  try {
    await Deno.remove(path);
  } catch (err) {
    return isBusy(err);
  }
  await Deno.mkdir(path).catch(() => {});
  return false;
}

/** Whether `err` is EBUSY, what the kernel answers for removing a mount point. */
export function isBusy(err: unknown): boolean {
  return err instanceof Deno.errors.Busy || /os error 16\b/.test(String(err));
}
