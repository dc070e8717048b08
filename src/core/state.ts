/**
 * ckptkit's own state in `<root>/.ckptkit/state.json`: which checkpoints were
 * last validated in full (for `resume --policy last-known-good`), failure
 * counters by reason and bytes written (for metrics). Updates are atomic and
 * serialised by a short-lived lock of their own, so readers such as
 * `validate` and `scan` can record results without the root lock. A damaged
 * state file is rebuilt, never fatal.
 *
 * @module
 */

import { ensureRealFolder, readFileLimited, refuseNonRegular, writeFileAtomic } from "../fs/durable.ts";
import { STATE_DIR } from "./layout.ts";

/** Largest state file read (it holds a record per checkpoint and a counter per reason). */
const MAX_STATE_BYTES = 64 * 1024 * 1024;

/** The state file's format version. */
export const STATE_VERSION = 1 as const;

/** A checkpoint recorded as validated in full (or committed). */
export interface KnownGood {
  /** Its step. */
  step: number;
  /** Its manifest's self-digest when validated. */
  manifest_digest: string;
  /** Its metadata fingerprint when validated (see `fingerprintCheckpoint`). */
  fingerprint: string;
  /** When it was validated (ISO 8601). */
  validated_at: string;
  /** What validated it: `commit`, `validate`, `scan` or `resume`. */
  by: string;
}

/** The corruption of one checkpoint already counted in `validation_failures_total`. */
export interface CountedFailure {
  /** The checkpoint's identity when counted: fingerprint, else manifest digest, else `-`. */
  identity: string;
  /** The reasons counted for it (each once). */
  reasons: string[];
}

/** The content of `.ckptkit/state.json`. */
export interface RootState {
  /** Format version (1). */
  version: 1;
  /** Checkpoints validated in full, by folder name. */
  known_good: Record<string, KnownGood>;
  /**
   * Distinct corruptions found so far, by stable reason: each (checkpoint,
   * reason) adds 1 once, when first detected (see `counted_failures`), never
   * once per validation pass. Only ever grows.
   */
  validation_failures_total: Record<string, number>;
  /**
   * The corruptions already counted in `validation_failures_total`, by
   * checkpoint folder name: the checkpoint's identity when counted (its
   * fingerprint, else manifest digest, else `-`) and the reasons counted for
   * it. A new identity (a re-committed or re-damaged step-N) counts again.
   * Entries of checkpoints no longer in the root are pruned; the totals stay.
   */
  counted_failures: Record<string, CountedFailure>;
  /** Bytes committed into this root so far. */
  write_bytes_total: number;
  /** The last successful commit. */
  last_commit: {
    name: string;
    step: number;
    at: string;
    duration_s: number;
    job_id: string | null;
    run_id: string | null;
  } | null;
}

/**
 * An empty state.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { emptyState } from "./state.ts";
 * assert.ok(emptyState().write_bytes_total === 0);
 * ```
 */
export function emptyState(): RootState {
  return {
    version: STATE_VERSION,
    known_good: {},
    validation_failures_total: {},
    counted_failures: {},
    write_bytes_total: 0,
    last_commit: null,
  };
}

/**
 * Path of the state file of `root`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { statePath } from "./state.ts";
 * assert.ok(statePath("/tmp/ckpts") === "/tmp/ckpts/.ckptkit/state.json");
 * ```
 */
export function statePath(root: string): string {
  return `${root}/${STATE_DIR}/state.json`;
}

/**
 * Reads the state of `root`; a missing or damaged file gives an empty state
 * (with `rebuilt: true` when it was damaged).
 *
 * Requires `--allow-read`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { readState } from "./state.ts";
 * const root = await Deno.makeTempDir();
 * const { state } = await readState(root);
 * assert.ok(state.write_bytes_total === 0);
 * await Deno.remove(root, { recursive: true });
 * ```
 */
export async function readState(
  root: string,
): Promise<{ state: RootState; rebuilt: boolean }> {
  let text: string;
  try {
    // Never through a link, never a FIFO or a huge file: anything but a small regular file is rebuilt.
    if (!(await Deno.lstat(`${root}/${STATE_DIR}`)).isDirectory) return { state: emptyState(), rebuilt: true };
    if (!(await Deno.lstat(statePath(root))).isFile) return { state: emptyState(), rebuilt: true };
    const bytes = await readFileLimited(statePath(root), MAX_STATE_BYTES);
    if (!bytes) return { state: emptyState(), rebuilt: true };
    text = new TextDecoder().decode(bytes);
  } catch {
    return { state: emptyState(), rebuilt: false };
  }
  try {
    const raw = JSON.parse(text);
    if (raw?.version !== STATE_VERSION || typeof raw !== "object") {
      throw new Error("bad version");
    }
    const state = emptyState();
    if (isRecord(raw.known_good)) {
      for (const [name, entry] of Object.entries(raw.known_good)) {
        if (isKnownGood(entry)) state.known_good[name] = entry;
      }
    }
    if (isRecord(raw.validation_failures_total)) {
      for (
        const [reason, count] of Object.entries(raw.validation_failures_total)
      ) {
        if (Number.isSafeInteger(count) && (count as number) >= 0) {
          state.validation_failures_total[reason] = count as number;
        }
      }
    }
    if (isRecord(raw.counted_failures)) {
      for (const [name, entry] of Object.entries(raw.counted_failures)) {
        if (
          isRecord(entry) && typeof entry.identity === "string" && Array.isArray(entry.reasons) &&
          entry.reasons.every((reason) => typeof reason === "string")
        ) {
          state.counted_failures[name] = { identity: entry.identity, reasons: [...entry.reasons as string[]] };
        }
      }
    }
    if (
      Number.isSafeInteger(raw.write_bytes_total) && raw.write_bytes_total >= 0
    ) {
      state.write_bytes_total = raw.write_bytes_total;
    }
    if (isRecord(raw.last_commit) && typeof raw.last_commit.name === "string") {
      state.last_commit = raw.last_commit as RootState["last_commit"];
    }
    return { state, rebuilt: false };
  } catch {
    return { state: emptyState(), rebuilt: true };
  }
}

/**
 * Applies `change` to the state of `root` under the state lock and writes it
 * atomically. Returns the new state. The root must exist.
 *
 * Requires `--allow-read` and `--allow-write`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { readState, updateState } from "./state.ts";
 * const root = await Deno.makeTempDir();
 * await updateState(root, (state) => { state.write_bytes_total += 10; });
 * assert.ok((await readState(root)).state.write_bytes_total === 10);
 * await Deno.remove(root, { recursive: true });
 * ```
 */
export async function updateState(
  root: string,
  change: (state: RootState) => void,
): Promise<RootState> {
  await ensureRealFolder(`${root}/${STATE_DIR}`);
  await refuseNonRegular(`${root}/${STATE_DIR}/state.lock`);
  const lock = await Deno.open(`${root}/${STATE_DIR}/state.lock`, {
    read: true,
    write: true,
    create: true,
  });
  try {
    // Held for a read and a small write only, so waiting without a timeout is fine.
    await lock.lock(true);
    const { state } = await readState(root);
    change(state);
    await writeFileAtomic(
      statePath(root),
      JSON.stringify(state, null, 2) + "\n",
    );
    return state;
  } finally {
    lock.close();
  }
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function isKnownGood(value: unknown): value is KnownGood {
  return isRecord(value) && Number.isSafeInteger(value.step) &&
    typeof value.manifest_digest === "string" &&
    typeof value.fingerprint === "string" &&
    typeof value.validated_at === "string";
}
