/**
 * `gc`: applies retention to a root. Refuses a folder that is not a root,
 * validates newest first at the depth asked (stopping once keep-last is
 * satisfied), hashes in full the kept checkpoints a deletion would rest on,
 * plans with {@linkcode planRetention}, then under the root lock re-reads the
 * root, re-plans, and deletes each checkpoint by renaming it into
 * `.ckptkit/trash/` first, so that a crash mid-delete never leaves a
 * half-deleted checkpoint that looks valid.
 *
 * @module
 */

import { ensureRealFolder, fsyncPath } from "../fs/durable.ts";
import { asCkptkitError, CkptkitError } from "../errors.ts";
import { readLatest } from "./latest.ts";
import { LATEST_NAME, STATE_DIR } from "./layout.ts";
import { acquireRootLock } from "./lock.ts";
import { fingerprintCheckpoint } from "./fingerprint.ts";
import { forgetCheckpoints, recordValidation } from "./record.ts";
import {
  keepersToVerify,
  planRetention,
  type RetentionCheckpoint,
  type RetentionInput,
  type RetentionPlan,
} from "./retention.ts";
import { assertRoot, listRoot, type RootCheckpoint, type RootListing } from "./root.ts";
import { DEFAULT_STALE_STAGING_S } from "../defaults.ts";
import { readState, type RootState } from "./state.ts";
import { readIdentity } from "./identity.ts";
import { listTree } from "../fs/tree.ts";
import { removeTreeOnDevice } from "../fs/remove.ts";
import { validateCheckpoint, type ValidateOptions } from "./validate.ts";

/** Options for {@linkcode collectGarbage}. */
export interface GcOptions extends ValidateOptions {
  /** Keep the newest N valid checkpoints. */
  keepLast?: number;
  /** Keep every checkpoint whose step is a multiple of K. */
  keepEvery?: number;
  /** Plan only; delete nothing and take no lock. */
  dryRun?: boolean;
  /**
   * Staging folders in which nothing changed for longer are removed, in seconds (default 3600): judged by the newest
   * mtime or ctime of the folder and of every entry in it, so a copy with old mtimes is still a write in progress.
   */
  staleStagingAfterS?: number;
  /** Root lock wait in ms. */
  lockTimeoutMs?: number;
}

/** What gc did; also the `--json` document of `ckptkit gc`. */
export interface GcResult extends RetentionPlan {
  /** The root's real path. */
  root: string;
  /** True when nothing was deleted on purpose. */
  dry_run: boolean;
  /** Bytes freed (or that would be freed). */
  bytes_freed: number;
  /** Leftovers of interrupted deletes removed from `.ckptkit/trash/`. */
  trash_emptied: string[];
  /** Temporary files of `latest` left by killed processes, removed. */
  temp_files_removed: string[];
  /** Wall time in seconds. */
  duration_s: number;
}

/** Folder where deletions go first. */
export const TRASH_DIR = `${STATE_DIR}/trash`;

/**
 * Applies retention to `root`. Throws `invalid_argument` when neither
 * keep-last nor keep-every is given, and `not_a_root` (before touching
 * anything) when `root` has none of `.ckptkit/`, `latest`, `corrupt/` or a
 * checkpoint folder.
 *
 * The depth in `options` finds invalid checkpoints; a checkpoint kept in
 * place of one that is deleted for its age is always hashed in full first
 * (unless recorded known-good and unchanged since), so a fast or sampled
 * check never licenses a deletion.
 *
 * Requires `--allow-read`, `--allow-write` and `--allow-sys`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { collectGarbage } from "./gc.ts";
 * const root = await Deno.makeTempDir();
 * await Deno.mkdir(`${root}/.ckptkit`); // a root no checkpoint was committed to yet
 * const result = await collectGarbage(root, { keepLast: 3, dryRun: true });
 * assert.ok(result.delete.length === 0);
 * await Deno.remove(root, { recursive: true });
 * ```
 */
export async function collectGarbage(
  root: string,
  options: GcOptions,
): Promise<GcResult> {
  const started = performance.now();
  const keepLast = options.keepLast ?? 0;
  const keepEvery = options.keepEvery ?? 0;
  if (options.keepLast === undefined && options.keepEvery === undefined) {
    throw new CkptkitError(
      "invalid_argument",
      "No retention policy: pass --keep-last and/or --keep-every, or set retention in the config",
    );
  }
  for (
    const [key, value] of [["keepLast", keepLast], [
      "keepEvery",
      keepEvery,
    ]] as const
  ) {
    if (!Number.isSafeInteger(value) || value < 0) {
      throw new CkptkitError(
        "invalid_argument",
        `Cannot collect garbage as '${key}' must be a non-negative integer: current value is ${value}`,
      );
    }
  }
  const staleAfter = options.staleStagingAfterS ?? DEFAULT_STALE_STAGING_S;
  const first = await listRoot(root);
  await assertRoot(first);
  const realRoot = first.root;
  const { state: recorded } = await readState(realRoot);
  const statuses = new Map<string, RetentionCheckpoint>();
  const judge = async (checkpoint: RootCheckpoint, depthOptions: ValidateOptions) => {
    const result = await validateCheckpoint(checkpoint.path, depthOptions).catch(() => undefined);
    if (!result) {
      // Gone or unreadable: not a verdict either way.
      if (statuses.has(checkpoint.name)) {
        statuses.set(checkpoint.name, { name: checkpoint.name, step: checkpoint.step, status: "unchecked" });
      }
      return;
    }
    const transient = result.problems.every((p) => p.reason === "io_error" || p.reason === "file_changed");
    const status = result.ok ? "valid" : transient ? "unchecked" : "invalid";
    if (!options.dryRun) await recordValidation(realRoot, result, "gc");
    statuses.set(checkpoint.name, {
      name: checkpoint.name,
      step: checkpoint.step,
      status,
      reasons: [...new Set(result.problems.map((p) => p.reason))],
      verified: result.ok &&
        (result.depth === "full" || result.depth === "deep" ||
          await unchangedSinceRecorded(recorded, checkpoint, result.manifest_digest)),
    });
  };
  const ours = first.checkpoints.filter((c) => !c.foreign);
  const validCount = () => [...statuses.values()].filter((s) => s.status === "valid").length;
  let next = 0;
  for (;;) {
    while (validCount() < Math.max(keepLast, 1) && next < ours.length) {
      await judge(ours[next++], options);
    }
    // The depth asked for finds invalid checkpoints fast; a deletion rests only on keepers hashed in full.
    const toVerify = keepersToVerify(retentionInput(first, await readLatest(realRoot), recorded));
    if (toVerify.length === 0) break;
    for (const name of toVerify) {
      await judge(ours.find((c) => c.name === name)!, {
        ...options,
        depth: options.depth === "deep" ? "deep" : "full",
      });
    }
  }

  function retentionInput(
    listing: RootListing,
    latest: Awaited<ReturnType<typeof readLatest>>,
    state: RootState,
  ): RetentionInput {
    const present = new Set(listing.checkpoints.map((c) => c.name));
    // A record is only as good as today's validation: one found invalid now is not last-known-good.
    const knownGood = Object.entries(state.known_good)
      .filter(([name]) => present.has(name) && statuses.get(name)?.status !== "invalid")
      .sort((a, b) => b[1].step - a[1].step)[0]?.[0] ?? null;
    return {
      checkpoints: listing.checkpoints.filter((c) => !c.foreign).map((c) =>
        statuses.get(c.name) ??
          { name: c.name, step: c.step, status: "unchecked" }
      ),
      latest: latest.state === "ok" ? latest.name! : null,
      lastKnownGood: knownGood,
      keepLast,
      keepEvery,
      staging: listing.staging,
      staleStagingAfterS: staleAfter,
    };
  }

  const plan = async () => {
    const listing = await listRoot(realRoot);
    const { state } = await readState(realRoot);
    const planned = planRetention(retentionInput(listing, await readLatest(realRoot), state));
    // Other tools rotate their own checkpoints; gc only ever deletes the step-N ones ckptkit named.
    for (const c of listing.checkpoints.filter((c) => c.foreign)) {
      planned.keep.push({ name: c.name, step: c.step, reasons: ["named by another tool: gc leaves it alone"] });
    }
    planned.keep.sort((a, b) => b.step - a.step);
    return { listing, plan: planned };
  };

  if (options.dryRun) {
    const { plan: dry } = await plan();
    const bytes = await sizeOf([
      ...dry.delete.map((d) => `${realRoot}/${d.name}`),
      ...dry.delete_staging.map((s) => `${realRoot}/${s.name}`),
    ]);
    return {
      root: realRoot,
      dry_run: true,
      ...dry,
      bytes_freed: bytes,
      trash_emptied: [],
      temp_files_removed: [],
      duration_s: since(started),
    };
  }

  const lock = await acquireRootLock(realRoot, {
    timeoutMs: options.lockTimeoutMs,
  });
  try {
    const { plan: final } = await plan();
    const trash = `${realRoot}/${TRASH_DIR}`;
    // Everything in the trash is deleted: a symlinked trash would delete outside the root.
    await ensureRealFolder(trash);
    const leftovers = (await Array.fromAsync(Deno.readDir(trash))).map((e) => e.name);
    let bytes = 0;
    // Whose each deleted checkpoint was, for the log: its manifest is gone afterwards.
    for (const deleted of final.delete) {
      const { job_id, run_id } = await readIdentity(`${realRoot}/${deleted.name}`);
      Object.assign(deleted, { job_id, run_id });
    }
    for (
      const name of [
        ...final.delete.map((d) => d.name),
        ...final.delete_staging.map((s) => s.name),
      ]
    ) {
      bytes += await sizeOf([`${realRoot}/${name}`]);
      await moveToTrash(realRoot, trash, name);
    }
    await emptyTrash(trash);
    await forgetCheckpoints(realRoot, final.delete.map((d) => d.name));
    // latest is only ever rewritten under this lock, so a temp file of it seen now was left by a killed process.
    const temps: string[] = [];
    for await (const entry of Deno.readDir(realRoot)) {
      if (entry.isFile && entry.name.startsWith(`.${LATEST_NAME}.tmp-`)) {
        await Deno.remove(`${realRoot}/${entry.name}`);
        temps.push(entry.name);
      }
    }
    return {
      root: realRoot,
      dry_run: false,
      ...final,
      bytes_freed: bytes,
      trash_emptied: leftovers,
      temp_files_removed: temps,
      duration_s: since(started),
    };
  } finally {
    await lock.release();
  }
}

async function moveToTrash(
  root: string,
  trash: string,
  name: string,
): Promise<void> {
  const target = `${trash}/${name}-${Date.now()}-${crypto.randomUUID().slice(0, 8)}`;
  try {
    await Deno.rename(`${root}/${name}`, target);
    await fsyncPath(root);
    await fsyncPath(trash);
  } catch (err) {
    throw asCkptkitError(
      err,
      `Moving ${root}/${name} to the trash`,
      `${root}/${name}`,
    );
  }
}

async function emptyTrash(trash: string): Promise<void> {
  for await (const entry of Deno.readDir(trash)) {
    try {
      await removeTreeOnDevice(`${trash}/${entry.name}`);
    } catch (err) {
      throw asCkptkitError(
        err,
        `Removing ${trash}/${entry.name}`,
        `${trash}/${entry.name}`,
      );
    }
  }
  await fsyncPath(trash);
}

async function sizeOf(paths: string[]): Promise<number> {
  let total = 0;
  for (const path of paths) {
    const tree = await listTree(path).catch(() => undefined);
    for (const file of tree?.files.values() ?? []) total += file.size;
  }
  return total;
}

/** Whether a checkpoint found valid by a shallow check is the one a full validation or a commit recorded. */
async function unchangedSinceRecorded(
  state: RootState,
  checkpoint: RootCheckpoint,
  manifestDigest: string | null,
): Promise<boolean> {
  const record = state.known_good[checkpoint.name];
  if (!record || manifestDigest === null || record.manifest_digest !== manifestDigest) return false;
  return (await fingerprintCheckpoint(checkpoint.path)) === record.fingerprint;
}

function since(started: number): number {
  return Math.round(performance.now() - started) / 1000;
}
