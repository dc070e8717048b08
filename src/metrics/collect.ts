/**
 * One metrics pass over a root: scan it (recording results in its state),
 * read the state, the quarantine folder and the free space, and build the
 * snapshot.
 *
 * @module
 */

import { statfs } from "node:fs/promises";
import { CORRUPT_DIR } from "../core/layout.ts";
import { readManifestFile } from "../core/manifest.ts";
import { type ScanOptions, type ScanResult, scanRoot } from "../core/scan.ts";
import { readState } from "../core/state.ts";
import { buildSnapshot, type MetricsSnapshot } from "./snapshot.ts";

/** Options for {@linkcode collectMetrics}. */
export interface CollectOptions extends ScanOptions {
  /** `job_id` label (default: from the newest valid manifest). */
  jobId?: string;
  /** `run_id` label (default: from the newest valid manifest). */
  runId?: string;
  /** `root` label (default: the root's real path). */
  rootLabel?: string;
}

/** A metrics pass: the scan behind it and the snapshot. */
export interface MetricsPass {
  /** The scan. */
  scan: ScanResult;
  /** The numbers to export. */
  snapshot: MetricsSnapshot;
}

/**
 * Scans `root` and builds the metrics snapshot.
 *
 * Requires `--allow-read` and `--allow-write` (the scan records results in the root's state).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { collectMetrics } from "./collect.ts";
 * const root = await Deno.makeTempDir();
 * const { snapshot } = await collectMetrics(root, { depth: "fast" });
 * assert.ok(snapshot.free_bytes! > 0);
 * await Deno.remove(root, { recursive: true });
 * ```
 */
export async function collectMetrics(root: string, options: CollectOptions = {}): Promise<MetricsPass> {
  const scan = await scanRoot(root, options);
  return { scan, snapshot: await snapshotOfScan(scan, options) };
}

/**
 * The metrics snapshot of a finished scan (one process's, or shards' merged):
 * adds what the scan does not carry, read now from the root: its state, its
 * quarantined checkpoints, free space and the newest checkpoint's size.
 *
 * Requires `--allow-read` and `--allow-sys` (free space).
 */
export async function snapshotOfScan(
  scan: ScanResult,
  labels: { jobId?: string; runId?: string; rootLabel?: string } = {},
): Promise<MetricsSnapshot> {
  const { state } = await readState(scan.root);
  return buildSnapshot(scan, {
    state,
    quarantined: await quarantinedNames(scan.root),
    freeBytes: await freeBytes(scan.root),
    lastSizeBytes: await lastCheckpointBytes(scan),
    now: new Date(),
    jobId: labels.jobId,
    runId: labels.runId,
    rootLabel: labels.rootLabel,
  });
}

/**
 * Free bytes available to unprivileged users on the file system of `path`, or null.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { freeBytes } from "./collect.ts";
 * assert.ok((await freeBytes(Deno.cwd()))! > 0);
 * assert.equal(await freeBytes("/nonexistent/path"), null);
 * ```
 */
export async function freeBytes(path: string): Promise<number | null> {
  try {
    const stats = await statfs(path);
    return Number(stats.bavail) * Number(stats.bsize);
  } catch {
    return null;
  }
}

/**
 * `total_bytes` of the newest checkpoint of `scan` whose manifest was intact
 * (valid or not: its size is what the next save needs, about), or null when
 * there is none. The manifest is read again and used only while its digest
 * is still the one the scan checked.
 *
 * Requires `--allow-read`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { lastCheckpointBytes } from "./collect.ts";
 * import { scanRoot } from "../core/scan.ts";
 * const root = await Deno.makeTempDir();
 * assert.equal(await lastCheckpointBytes(await scanRoot(root, { record: false })), null);
 * await Deno.remove(root, { recursive: true });
 * ```
 */
export async function lastCheckpointBytes(scan: ScanResult): Promise<number | null> {
  for (const checkpoint of scan.checkpoints) {
    if (checkpoint.manifest_digest === null) continue;
    const read = await readManifestFile(checkpoint.path);
    if ("problem" in read) continue;
    try {
      const manifest = JSON.parse(read.text);
      const total = manifest?.total_bytes;
      if (manifest?.manifest_digest === checkpoint.manifest_digest && Number.isSafeInteger(total) && total >= 0) {
        return total;
      }
    } catch {
      // replaced since the scan: try the next one
    }
  }
  return null;
}

async function quarantinedNames(root: string): Promise<string[]> {
  try {
    const entries = await Array.fromAsync(Deno.readDir(`${root}/${CORRUPT_DIR}`));
    return entries.filter((e) => e.isDirectory).map((e) => e.name);
  } catch {
    return [];
  }
}
