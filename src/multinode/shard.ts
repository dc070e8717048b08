/**
 * Planning distributed validation: which shard reads which file. The plan is
 * a pure function of the files (from the manifests) and the shard count, so
 * every node computes the same one on its own, whatever order it listed the
 * files in and whenever it runs.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { CkptkitError } from "../errors.ts";

/** Most shards a validation can be split into. */
export const MAX_SHARDS = 4096;

/** One shard of N: `index` is 0-based, as Slurm array tasks and Kubernetes completion indexes are. */
export interface ShardSpec {
  /** This shard, from 0 to `count - 1`. */
  index: number;
  /** How many shards validate the target together (1 to {@linkcode MAX_SHARDS}). */
  count: number;
}

/**
 * Parses `i/N` (0-based `i` of `N` shards). Throws an `invalid_argument`
 * {@linkcode CkptkitError} naming the value when it is malformed or out of
 * range.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseShardSpec } from "./shard.ts";
 * assert.deepEqual(parseShardSpec("2/8"), { index: 2, count: 8 });
 * assert.throws(() => parseShardSpec("8/8"), /0-based/);
 * ```
 */
export function parseShardSpec(text: string): ShardSpec {
  const match = /^\s*(\d{1,9})\s*\/\s*(\d{1,9})\s*$/.exec(text);
  if (!match) {
    throw new CkptkitError(
      "invalid_argument",
      `Shard "${text}" is not i/N: give this shard's 0-based index and the number of shards, e.g. 0/4`,
    );
  }
  const index = Number(match[1]);
  const count = Number(match[2]);
  if (count < 1 || count > MAX_SHARDS) {
    throw new CkptkitError(
      "invalid_argument",
      `Shard "${text}": the number of shards must be from 1 to ${MAX_SHARDS}, got ${count}`,
    );
  }
  if (index >= count) {
    throw new CkptkitError(
      "invalid_argument",
      `Shard "${text}": the index is 0-based, from 0 to ${count - 1} for ${count} shards ` +
        `(Slurm: --array=0-${count - 1}; Kubernetes: JOB_COMPLETION_INDEX)`,
    );
  }
  return { index, count };
}

/** A file to place on a shard. */
export interface ShardUnit {
  /** The checkpoint's folder name. */
  checkpoint: string;
  /** The file's path in the checkpoint. */
  path: string;
  /** What reading it costs, in bytes. */
  bytes: number;
}

/**
 * Splits files over `count` shards, balanced by bytes: largest first (ties in
 * checkpoint then path order), each to the shard with the fewest bytes so
 * far, then the fewest files (so files that cost nothing spread out too),
 * then the lowest index. The result depends only on the set of units, never
 * on their order. Each shard's list is in the order it was assigned.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { assignShards } from "./shard.ts";
 * const shards = assignShards([
 *   { checkpoint: "step-1", path: "big.bin", bytes: 100 },
 *   { checkpoint: "step-1", path: "a.bin", bytes: 60 },
 *   { checkpoint: "step-1", path: "b.bin", bytes: 40 },
 * ], 2);
 * assert.deepEqual(shards.map((s) => s.map((u) => u.path)), [["big.bin"], ["a.bin", "b.bin"]]);
 * ```
 */
export function assignShards<T extends ShardUnit>(units: readonly T[], count: number): T[][] {
  if (!Number.isInteger(count) || count < 1 || count > MAX_SHARDS) {
    throw new CkptkitError(
      "invalid_argument",
      `Cannot split into ${count} shards: the number of shards must be an integer from 1 to ${MAX_SHARDS}`,
    );
  }
  const sorted = [...units].sort((a, b) =>
    b.bytes - a.bytes || compare(a.checkpoint, b.checkpoint) || compare(a.path, b.path)
  );
  const shards: T[][] = Array.from({ length: count }, () => []);
  // A min-heap of shards by (bytes, files, index): with thousands of shards a linear search per file is too slow.
  const heap = Array.from({ length: count }, (_, index) => ({ index, bytes: 0, files: 0 }));
  const less = (a: typeof heap[number], b: typeof heap[number]) =>
    a.bytes !== b.bytes ? a.bytes < b.bytes : a.files !== b.files ? a.files < b.files : a.index < b.index;
  for (const unit of sorted) {
    const top = heap[0];
    shards[top.index].push(unit);
    top.bytes += unit.bytes;
    top.files++;
    siftDown(heap, less);
  }
  return shards;
}

function siftDown<T>(heap: T[], less: (a: T, b: T) => boolean): void {
  let at = 0;
  while (true) {
    const left = 2 * at + 1;
    const right = left + 1;
    let smallest = at;
    if (left < heap.length && less(heap[left], heap[smallest])) smallest = left;
    if (right < heap.length && less(heap[right], heap[smallest])) smallest = right;
    if (smallest === at) return;
    [heap[at], heap[smallest]] = [heap[smallest], heap[at]];
    at = smallest;
  }
}

/** What one checkpoint contributes to a plan: its name and what its files were read from. */
export interface PlanEntry {
  /** The checkpoint's folder name. */
  name: string;
  /**
   * The manifest's self-digest; `raw:sha256:…` of a manifest whose self-digest does not match;
   * `structure:sha256:…` of the listing of a folder validated without a manifest (deep); null when no
   * file of it is read (manifest missing or unusable).
   */
  digest: string | null;
}

/**
 * The digest of a plan: sha256 of the canonical JSON of its entries sorted
 * by name. Shards whose digests differ saw different checkpoints or
 * manifests, so their reports cannot be merged.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { planDigest } from "./shard.ts";
 * const a = planDigest([{ name: "step-1", digest: "sha256:aa" }, { name: "step-2", digest: null }]);
 * const b = planDigest([{ name: "step-2", digest: null }, { name: "step-1", digest: "sha256:aa" }]);
 * assert.equal(a, b);
 * assert.match(a, /^sha256:[0-9a-f]{64}$/);
 * ```
 */
export function planDigest(entries: readonly PlanEntry[]): string {
  const canonical = JSON.stringify(
    [...entries].sort((a, b) => compare(a.name, b.name)).map((e) => [e.name, e.digest]),
  );
  return `sha256:${createHash("sha256").update(canonical).digest("hex")}`;
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
