/**
 * The root's exclusive lock, taken by every command that changes the root
 * (commit, quarantine, gc, resume --repair) so that two of them never race.
 * Readers take no lock.
 *
 * @module
 */

import { hostname } from "node:os";
import { ensureRealFolder, refuseNonRegular } from "../fs/durable.ts";
import { CkptkitError } from "../errors.ts";
import { STATE_DIR } from "./layout.ts";

/** Options for {@linkcode acquireRootLock}. */
export interface LockOptions {
  /** How long to wait for another holder, in ms (default 60 000). */
  timeoutMs?: number;
  /** Stops waiting when aborted. */
  signal?: AbortSignal;
}

/** A held root lock. */
export interface RootLock extends AsyncDisposable {
  /** Releases the lock; safe to call twice. */
  release(): Promise<void>;
}

/** Default time a mutating command waits for the root lock. */
export const DEFAULT_LOCK_TIMEOUT_MS = 60_000;

/**
 * Takes the exclusive lock `<root>/.ckptkit/lock` (an OS file lock, released
 * by the kernel if the process dies), waiting up to `timeoutMs`. Throws a
 * `lock_timeout` {@linkcode CkptkitError} naming the holder when it is busy.
 *
 * Requires `--allow-read`, `--allow-write` and `--allow-sys` (host name).
 *
 * @example
 * ```ts
 * import { acquireRootLock } from "./lock.ts";
 * const root = await Deno.makeTempDir();
 * const lock = await acquireRootLock(root, { timeoutMs: 1000 });
 * await lock.release();
 * await Deno.remove(root, { recursive: true });
 * ```
 */
export async function acquireRootLock(
  root: string,
  options: LockOptions = {},
): Promise<RootLock> {
  const timeoutMs = options.timeoutMs ?? DEFAULT_LOCK_TIMEOUT_MS;
  if (!Number.isFinite(timeoutMs) || timeoutMs < 0) {
    throw new CkptkitError(
      "invalid_argument",
      `Cannot lock as 'timeoutMs' must be a non-negative number: current value is ${timeoutMs}`,
    );
  }
  await ensureRealFolder(`${root}/${STATE_DIR}`);
  const path = `${root}/${STATE_DIR}/lock`;
  await refuseNonRegular(path);
  const file = await Deno.open(path, { read: true, write: true, create: true });
  const deadline = Date.now() + timeoutMs;
  let wait = 10;
  try {
    while (!(await file.tryLock(true))) {
      options.signal?.throwIfAborted();
      if (Date.now() >= deadline) {
        const holder = await Deno.readTextFile(path).catch(() => "");
        throw new CkptkitError(
          "lock_timeout",
          `Root ${root} is locked by another ckptkit process` +
            (holder.trim() ? ` (${holder.trim()})` : "") +
            ` and it was not released within ${timeoutMs / 1000} s`,
          { path },
        );
      }
      await new Promise((resolve) => setTimeout(resolve, wait));
      wait = Math.min(wait * 2, 200);
    }
  } catch (err) {
    file.close();
    throw err;
  }
  await writeHolder(file, holderText());
  let released = false;
  const release = async () => {
    if (released) return;
    released = true;
    try {
      await writeHolder(file, "");
      await file.unlock();
    } finally {
      file.close();
    }
  };
  return { release, [Symbol.asyncDispose]: release };
}

/** Size the holder text is padded to, so that every holder overwrites the same bytes. */
const HOLDER_BYTES = 256;

/**
 * Writes who holds the lock, best-effort: it only serves the `lock_timeout`
 * message. The text is padded to a fixed size and written in place, never
 * truncated away, so once the file holds its block taking the lock needs no
 * free space: gc, which frees space, must work on a full disk.
 */
async function writeHolder(file: Deno.FsFile, text: string): Promise<void> {
  const bytes = new Uint8Array(HOLDER_BYTES).fill(0x20);
  bytes.set(new TextEncoder().encode(text).subarray(0, HOLDER_BYTES - 1));
  bytes[HOLDER_BYTES - 1] = 0x0a;
  try {
    await file.seek(0, Deno.SeekMode.Start);
    let written = 0;
    while (written < bytes.length) written += await file.write(bytes.subarray(written));
    // A longer file (an older ckptkit's holder text) shrinks: truncating never needs space.
    if ((await file.stat()).size > HOLDER_BYTES) await file.truncate(HOLDER_BYTES);
  } catch {
    // No space (or a read-only lock file): the lock itself is held all the same.
  }
}

function holderText(): string {
  let host = "unknown-host";
  try {
    host = hostname();
  } catch {
    // Host name needs --allow-sys; the lock works without it.
  }
  return `pid ${Deno.pid} on ${host} since ${new Date().toISOString()}\n`;
}
