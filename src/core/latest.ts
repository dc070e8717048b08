/**
 * The `latest` pointer: a small text file in the root naming the newest
 * committed checkpoint ("step-20"). It is untrusted input: anything but a
 * plain checkpoint name is reported as invalid and never followed.
 *
 * @module
 */

import { writeFileAtomic, type WriteFileAtomicOptions } from "../fs/durable.ts";
import { inferStep, LATEST_NAME, parseCheckpointName } from "./layout.ts";

/** What the `latest` file says. */
export interface LatestPointer {
  /** `ok`: names a checkpoint; `missing`: no file; `invalid`: unreadable or not a checkpoint name. */
  state: "ok" | "missing" | "invalid";
  /** The checkpoint folder name, when `ok`. */
  name?: string;
  /** The step of `name`, when `ok`. */
  step?: number;
  /** Why it is `invalid`. */
  detail?: string;
}

const MAX_LATEST_BYTES = 4096;

/**
 * Reads `<root>/latest` without following it anywhere.
 *
 * Requires `--allow-read`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { readLatest } from "./latest.ts";
 * const root = await Deno.makeTempDir();
 * assert.ok((await readLatest(root)).state === "missing");
 * await Deno.writeTextFile(`${root}/latest`, "step-20\n");
 * assert.ok((await readLatest(root)).step === 20);
 * await Deno.remove(root, { recursive: true });
 * ```
 */
export async function readLatest(root: string): Promise<LatestPointer> {
  const path = `${root}/${LATEST_NAME}`;
  let info: Deno.FileInfo;
  try {
    info = await Deno.lstat(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return { state: "missing" };
    return { state: "invalid", detail: (err as Error).message };
  }
  if (info.isSymlink) {
    return {
      state: "invalid",
      detail: "latest is a symbolic link; not followed",
    };
  }
  if (!info.isFile) {
    return { state: "invalid", detail: "latest is not a regular file" };
  }
  if (info.size > MAX_LATEST_BYTES) {
    return {
      state: "invalid",
      detail: `latest is ${info.size} bytes; expected a checkpoint name`,
    };
  }
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (err) {
    return { state: "invalid", detail: (err as Error).message };
  }
  const name = text.trim();
  // DeepSpeed's own `latest` names a tag folder such as global_step500.
  const step = parseCheckpointName(name) ?? (/^[\w.=-]+$/.test(name) ? inferStep(name) : undefined);
  if (step === undefined) {
    return {
      state: "invalid",
      detail: `latest says ${JSON.stringify(name.slice(0, 200))}, not a checkpoint name like "step-20"`,
    };
  }
  return { state: "ok", name, step };
}

/**
 * Points `<root>/latest` at the checkpoint folder `name`, atomically (temp
 * file, fsync, rename, fsync of the root).
 *
 * Requires `--allow-read` and `--allow-write`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { readLatest, writeLatest } from "./latest.ts";
 * const root = await Deno.makeTempDir();
 * await writeLatest(root, "step-10");
 * assert.ok((await readLatest(root)).name === "step-10");
 * await Deno.remove(root, { recursive: true });
 * ```
 */
export async function writeLatest(
  root: string,
  name: string,
  options: WriteFileAtomicOptions = {},
): Promise<void> {
  if (parseCheckpointName(name) === undefined) {
    throw new TypeError(
      `Cannot point latest at "${name}": not a checkpoint name`,
    );
  }
  await writeFileAtomic(`${root}/${LATEST_NAME}`, name + "\n", options);
}
