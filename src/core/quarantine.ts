/**
 * Quarantine: moves a bad checkpoint out of the way into `<root>/corrupt/`,
 * atomically, with a record of why beside it, so that resume and retention
 * never see it again and nobody loses the evidence.
 *
 * @module
 */

import { basename, dirname } from "node:path";
import { fsyncPath, writeFileAtomic } from "../fs/durable.ts";
import { asCkptkitError, CkptkitError } from "../errors.ts";
import { notAFolder } from "../fs/folder.ts";
import { readLatest, writeLatest } from "./latest.ts";
import { CORRUPT_DIR, LATEST_NAME, parseCheckpointName } from "./layout.ts";
import { acquireRootLock } from "./lock.ts";
import type { Problem } from "../problems.ts";
import { forgetCheckpoints, rootOfCheckpoint } from "./record.ts";
import { listRoot } from "./root.ts";
import { validateCheckpoint } from "./validate.ts";
import { hostName, VERSION } from "../version.ts";

/** How the record beside a quarantined checkpoint is named: `corrupt/step-30` gets `corrupt/step-30.quarantine.json`. */
export const QUARANTINE_RECORD_SUFFIX = ".quarantine.json";

/** Options for {@linkcode quarantineCheckpoint}. */
export interface QuarantineOptions {
  /** Why, in the operator's words (default: the first problem found). */
  reason?: string;
  /** The problems found; when omitted a fast validation supplies them. */
  problems?: Problem[];
  /** How long to wait for the root lock, in ms (default 60 000). */
  lockTimeoutMs?: number;
}

/** What was done; also the `--json` document of `ckptkit quarantine`. */
export interface QuarantineResult {
  /** The checkpoint's folder name before. */
  name: string;
  /** Where it was. */
  from: string;
  /** Where it is now, inside `corrupt/`. */
  to: string;
  /** The record written beside it. */
  record: string;
  /** The reason recorded. */
  reason: string;
  /** What `latest` named before and after, when quarantine moved it. */
  latest_changed: { from: string; to: string | null } | null;
}

/** The record written beside a quarantined checkpoint. */
export interface QuarantineRecord {
  /** The checkpoint's folder name in the root. */
  name: string;
  /** Its path before quarantine. */
  original_path: string;
  /** When (ISO 8601). */
  quarantined_at: string;
  /** On which machine. */
  host: string;
  /** By which ckptkit version. */
  ckptkit_version: string;
  /** Why. */
  reason: string;
  /** The problems found. */
  problems: Problem[];
}

/**
 * Moves the checkpoint at `path` (a `step-<n>` folder of a ckptkit root) to
 * `<root>/corrupt/`, never overwriting an earlier quarantined one of the same
 * name (`step-30`, `step-30.1`, …), with `<name>.quarantine.json` beside it.
 * If `latest` named it, `latest` moves to the newest remaining checkpoint
 * that passes fast validation (or is removed when there is none). Takes the
 * root lock.
 *
 * Requires `--allow-read`, `--allow-write` and `--allow-sys`.
 *
 * @example
 * ```ts ignore
 * import { quarantineCheckpoint } from "./quarantine.ts";
 * const result = await quarantineCheckpoint("/tmp/ckpts/step-30", { reason: "loss spike" });
 * console.log(result.to); // /tmp/ckpts/corrupt/step-30
 * ```
 */
export async function quarantineCheckpoint(
  path: string,
  options: QuarantineOptions = {},
): Promise<QuarantineResult> {
  const trimmed = path.replace(/\/+$/, "");
  const name = basename(trimmed);
  let info: Deno.FileInfo;
  try {
    info = await Deno.lstat(trimmed);
  } catch (err) {
    throw asCkptkitError(err, `Reading ${trimmed}`, trimmed);
  }
  if (!info.isDirectory && !info.isSymlink) throw notAFolder(trimmed, "checkpoint folder", "a file or a device");
  const root = await rootOfCheckpoint(trimmed);
  if (
    !root || !info.isDirectory || basename(dirname(trimmed)) === CORRUPT_DIR
  ) {
    throw new CkptkitError(
      "invalid_argument",
      `${path} is not a checkpoint folder (step-<n>) directly inside a ckptkit root; quarantine moves only those`,
      { path },
    );
  }
  const realRoot = await Deno.realPath(root);
  const lock = await acquireRootLock(realRoot, {
    timeoutMs: options.lockTimeoutMs,
  });
  try {
    return await quarantineLocked(realRoot, name, options);
  } finally {
    await lock.release();
  }
}

/**
 * Quarantines `<root>/<name>` when the caller already holds the root lock
 * (scan --quarantine, resume --repair).
 */
export async function quarantineLocked(
  root: string,
  name: string,
  options: Omit<QuarantineOptions, "lockTimeoutMs"> = {},
): Promise<QuarantineResult> {
  if (parseCheckpointName(name) === undefined) {
    throw new CkptkitError(
      "invalid_argument",
      `${name} is not a checkpoint name`,
      { path: `${root}/${name}` },
    );
  }
  const from = `${root}/${name}`;
  const info = await Deno.lstat(from).catch((err) => {
    throw asCkptkitError(err, `Reading ${from}`, from);
  });
  if (!info.isDirectory) {
    throw new CkptkitError("invalid_argument", `${from} is not a folder`, {
      path: from,
    });
  }
  const problems = options.problems ??
    (await validateCheckpoint(from, { depth: "fast" })).problems;
  const reason = options.reason ??
    (problems[0] ? `${problems[0].reason}: ${problems[0].detail}` : "quarantined by an operator");
  const corrupt = `${root}/${CORRUPT_DIR}`;
  let createdCorrupt = false;
  try {
    await Deno.mkdir(corrupt);
    createdCorrupt = true;
    await fsyncPath(root);
  } catch (err) {
    if (!(err instanceof Deno.errors.AlreadyExists)) {
      throw asCkptkitError(err, `Creating ${corrupt}`, corrupt);
    }
  }
  const corruptInfo = await Deno.lstat(corrupt);
  if (!corruptInfo.isDirectory) {
    throw new CkptkitError(
      "unsafe_path",
      `${corrupt} is ${corruptInfo.isSymlink ? "a symbolic link" : "not a folder"}; ` +
        "ckptkit never moves a checkpoint through it",
      { path: corrupt },
    );
  }
  const dest = await freeName(corrupt, name);
  const record: QuarantineRecord = {
    name,
    original_path: from,
    quarantined_at: new Date().toISOString(),
    host: hostName(),
    ckptkit_version: VERSION,
    reason,
    problems,
  };
  const recordPath = `${corrupt}/${dest}${QUARANTINE_RECORD_SUFFIX}`;
  // Each step is undone if a later one fails (a full disk, an immutable folder), so that a failed
  // quarantine leaves the root as it was. Only a crash can leave a step done: a record without its
  // checkpoint, or latest already moved to an older valid checkpoint; both are harmless to resume.
  const undo: (() => Promise<void>)[] = [];
  if (createdCorrupt) undo.push(async () => await Deno.remove(corrupt));
  let latestChanged: QuarantineResult["latest_changed"] = null;
  try {
    // The record goes first: a crash before the rename leaves a record without a checkpoint, never a
    // quarantined checkpoint without a reason.
    await writeFileAtomic(recordPath, JSON.stringify(record, null, 2) + "\n");
    undo.push(async () => {
      await Deno.remove(recordPath);
      await fsyncPath(corrupt);
    });
    // latest moves away before the rename, so that it never names a missing checkpoint, even after a crash.
    latestChanged = await repointLatestAway(root, name);
    if (latestChanged) undo.push(async () => await writeLatest(root, name));
    await Deno.rename(from, `${corrupt}/${dest}`);
  } catch (err) {
    const failed = asCkptkitError(err, `Quarantining ${from}`, from);
    const left: string[] = [];
    for (const step of undo.reverse()) {
      await step().catch((undoErr) => left.push((undoErr as Error).message));
    }
    if (left.length === 0) throw failed;
    throw new CkptkitError(
      failed.reason,
      `${failed.message}; undoing it failed too (${left.join("; ")}): ` +
        `check ${recordPath} and latest, or run ckptkit scan`,
      { path: from, cause: err },
    );
  }
  try {
    await fsyncPath(corrupt);
    await fsyncPath(root);
  } catch (err) {
    throw asCkptkitError(err, `Quarantining ${from}`, from);
  }
  await forgetCheckpoints(root, [name]);
  return {
    name,
    from,
    to: `${corrupt}/${dest}`,
    record: recordPath,
    reason,
    latest_changed: latestChanged,
  };
}

/**
 * Quarantine records in `<root>/corrupt/` without their checkpoint beside
 * them, by record name: what a quarantine killed after writing its record
 * and before its move leaves (the checkpoint is then still in the root).
 * Scan reports them; a failed quarantine that was not killed removes its own.
 *
 * Requires `--allow-read`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { orphanQuarantineRecords } from "./quarantine.ts";
 * const root = await Deno.makeTempDir();
 * await Deno.mkdir(`${root}/corrupt`);
 * await Deno.writeTextFile(`${root}/corrupt/step-20.quarantine.json`, "{}");
 * assert.deepEqual(await orphanQuarantineRecords(root), ["step-20.quarantine.json"]);
 * await Deno.remove(root, { recursive: true });
 * ```
 */
export async function orphanQuarantineRecords(root: string): Promise<string[]> {
  const corrupt = `${root}/${CORRUPT_DIR}`;
  let entries: Deno.DirEntry[];
  try {
    // Never read through a planted link: it could lead anywhere outside the root.
    if (!(await Deno.lstat(corrupt)).isDirectory) return [];
    entries = await Array.fromAsync(Deno.readDir(corrupt));
  } catch {
    return [];
  }
  const present = new Set(entries.map((e) => e.name));
  return entries
    .map((e) => e.name)
    .filter((name) =>
      !name.startsWith(".") && name.endsWith(QUARANTINE_RECORD_SUFFIX) &&
      !present.has(name.slice(0, -QUARANTINE_RECORD_SUFFIX.length))
    )
    .sort();
}

async function freeName(corrupt: string, name: string): Promise<string> {
  for (let n = 0;; n++) {
    const candidate = n === 0 ? name : `${name}.${n}`;
    const taken = await Promise.all([
      Deno.lstat(`${corrupt}/${candidate}`).then(() => true, () => false),
      Deno.lstat(`${corrupt}/${candidate}${QUARANTINE_RECORD_SUFFIX}`).then(
        () => true,
        () => false,
      ),
    ]);
    if (!taken.includes(true)) return candidate;
  }
}

/**
 * When `latest` names `removed`, points it at the newest remaining checkpoint
 * that passes fast validation, or removes it when none does.
 */
export async function repointLatestAway(
  root: string,
  removed: string,
): Promise<{ from: string; to: string | null } | null> {
  const latest = await readLatest(root);
  if (latest.state !== "ok" || latest.name !== removed) return null;
  const listing = await listRoot(root);
  for (const checkpoint of listing.checkpoints) {
    if (checkpoint.name === removed) continue;
    const result = await validateCheckpoint(checkpoint.path, { depth: "fast" })
      .catch(() => undefined);
    if (result?.ok) {
      await writeLatest(root, checkpoint.name);
      return { from: removed, to: checkpoint.name };
    }
  }
  await Deno.remove(`${root}/${LATEST_NAME}`);
  await fsyncPath(root);
  return { from: removed, to: null };
}
