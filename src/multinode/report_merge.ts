/**
 * Merging the reports of a distributed validation into one verdict: the set
 * is checked first (one kind, target, version, depth, shard count and plan;
 * every shard exactly once), then every checkpoint's result is put together
 * from shard 0's whole checks and every shard's files, in the order a single
 * process finds them, so the merged result equals a single-node run's.
 * Recording in the root's state and quarantine happen here, once.
 *
 * @module
 */

import { CkptkitError } from "../errors.ts";
import { fingerprintCheckpoint } from "../core/fingerprint.ts";
import { recordValidation, recordValidations, rootOfCheckpoint } from "../core/record.ts";
import { buildScanResult, quarantineInvalid, type ScanResult } from "../core/scan.ts";
import type { ShardCheckpoint, ShardReport } from "./shard_report.ts";
import { resultOfParts } from "./shard_report.ts";
import { inspectCheckpoint, type ValidationResult } from "../core/validate.ts";
import { hostName } from "../version.ts";

/** The merged verdict of a complete set of shard reports. */
export type MergedReports =
  | {
    /** The reports came from `validate --shard`. */
    kind: "validate";
    /** What `ckptkit validate` on one node gives. */
    result: ValidationResult;
    /** Real path of the checkpoint. */
    target: string;
    /** Number of shards merged. */
    shards: number;
    /** Why the root's state was not updated, or null. */
    state_error: string | null;
  }
  | {
    /** The reports came from `scan --shard`. */
    kind: "scan";
    /** What `ckptkit scan` on one node gives. */
    result: ScanResult;
    /** Real path of the root. */
    target: string;
    /** Number of shards merged. */
    shards: number;
    /** Why the root's state was not updated, or null (also in `result.state_error`). */
    state_error: string | null;
  };

/** A checkpoint's merged result and the fingerprint every shard agreed on (null when they did not). */
interface MergedCheckpoint {
  result: ValidationResult;
  fingerprint: string | null;
}

/** Options for {@linkcode mergeShardReports}. */
export interface MergeOptions {
  /** Names of the reports (their files) for messages, in the order given; default `report 1`, `report 2`… */
  names?: readonly string[];
  /** Record the results in the root's state when it is reachable, as a single-node run does (default true). */
  record?: boolean;
  /** Scan reports: move every checkpoint with integrity problems into `corrupt/` (takes the root lock). */
  quarantine?: boolean;
  /** Root lock wait for `quarantine`, in ms. */
  lockTimeoutMs?: number;
}

/**
 * Checks that `reports` form one complete set and merges them (pure: reads
 * and changes nothing on disk). Throws a `report_mismatch`
 * {@linkcode CkptkitError} naming the report that differs and in what, or
 * the shards missing or given twice.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { assembleShardReports } from "./report_merge.ts";
 * import { scanShard } from "./shard_run.ts";
 * const root = await Deno.makeTempDir();
 * const reports = [await scanShard(root, { shard: { index: 1, count: 2 } })];
 * assert.throws(() => assembleShardReports(reports), /incomplete set: missing shard 0 of 2/);
 * reports.push(await scanShard(root, { shard: { index: 0, count: 2 } }));
 * const merged = assembleShardReports(reports);
 * assert.ok(merged.kind === "scan" && merged.result.ok);
 * await Deno.remove(root, { recursive: true });
 * ```
 */
export function assembleShardReports(
  reports: readonly ShardReport[],
  names?: readonly string[],
): MergedReports & { fingerprints: Map<string, string | null> } {
  const ordered = checkSet(reports, names ?? reports.map((_, i) => `report ${i + 1}`));
  const first = ordered[0];
  // By name: checkpoints of equal step (checkpoint-5, global_step5) may be listed in another order elsewhere.
  const byName = ordered.map((report) => new Map(report.checkpoints.map((part) => [part.name, part])));
  const merged = first.checkpoints.map((head) => {
    const parts = byName.map((parts) => parts.get(head.name)!);
    return parts.some((part) => part.gone) ? undefined : mergeCheckpoint(first, parts);
  });
  const fingerprints = new Map<string, string | null>();
  for (const m of merged) if (m) fingerprints.set(m.result.path, m.fingerprint);
  const checkpoints = merged.filter((m): m is MergedCheckpoint => m !== undefined).map((m) => m.result);
  const durationS = Math.max(...ordered.map((r) => r.duration_s));
  const common = { target: first.target, shards: ordered.length, state_error: null, fingerprints };
  if (first.kind === "validate") return { kind: "validate", result: checkpoints[0], ...common };
  const root = first.root!;
  return {
    kind: "scan",
    result: buildScanResult({
      root: first.path,
      depth: first.depth,
      checkpoints,
      gone: merged.length - checkpoints.length,
      latest: root.latest,
      staging: root.staging,
      strays: root.strays,
      durationS,
    }),
    ...common,
  };
}

/**
 * Merges a complete set of shard reports ({@linkcode assembleShardReports}),
 * then, as a single-node `validate` or `scan` would, records the results in
 * the root's state (when the root is reachable from here) and, for a scan
 * with `quarantine`, moves the invalid checkpoints into `corrupt/`. A
 * checkpoint that changed on disk since the shards read it is not recorded
 * as known-good, and is not quarantined when its manifest changed.
 *
 * Requires `--allow-read` and `--allow-write`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { openCheckpointWriter } from "../core/writer.ts";
 * import { mergeShardReports } from "./report_merge.ts";
 * import { validateShard } from "./shard_run.ts";
 * const root = await Deno.makeTempDir();
 * const writer = await openCheckpointWriter(root, { step: 1 });
 * await writer.writeFile("model.pt", new Uint8Array(4096));
 * const { path } = await writer.commit();
 * const reports = await Promise.all([0, 1].map((index) => validateShard(path, { shard: { index, count: 2 } })));
 * const merged = await mergeShardReports(reports);
 * assert.ok(merged.kind === "validate" && merged.result.ok && merged.result.files_checked === 1);
 * await Deno.remove(root, { recursive: true });
 * ```
 */
export async function mergeShardReports(
  reports: readonly ShardReport[],
  options: MergeOptions = {},
): Promise<MergedReports> {
  const { fingerprints, ...merged } = assembleShardReports(reports, options.names);
  const reachable = await Deno.stat(merged.target).then((info) => info.isDirectory, () => false);
  const unreachable = `${merged.target} cannot be reached from ${hostName()}: results not recorded in its state`;
  if (options.quarantine && (merged.kind !== "scan" || !reachable)) {
    throw new CkptkitError(
      "invalid_argument",
      merged.kind === "scan"
        ? `Cannot quarantine: ${merged.target} cannot be reached from ${hostName()}`
        : "Quarantine applies to scan reports; for one checkpoint run `ckptkit quarantine <path>`",
    );
  }
  if (options.record ?? true) {
    if (!reachable) {
      merged.state_error = unreachable;
    } else if (merged.kind === "validate") {
      const result = await unchangedSince(merged.result, merged.target, fingerprints.get(merged.result.path));
      const root = await rootOfCheckpoint(merged.target);
      // Recorded under the real path: the path the shards were given may be relative to their folder.
      merged.state_error = root && result
        ? await recordValidation(root, { ...result, path: merged.target }, "validate")
        : null;
    } else {
      const recordable: ValidationResult[] = [];
      for (const result of merged.result.checkpoints) {
        const kept = await unchangedSince(result, result.path, fingerprints.get(result.path));
        if (kept) recordable.push(kept);
      }
      merged.state_error = await recordValidations(merged.target, recordable, "scan");
    }
  }
  if (merged.kind === "scan") {
    merged.result.state_error = merged.state_error;
    if (options.quarantine) {
      const unchanged: ValidationResult[] = [];
      for (const checkpoint of merged.result.checkpoints.filter((c) => !c.ok)) {
        // The shards may have run long ago: never move a checkpoint committed again under the same name since.
        const now = await inspectCheckpoint(checkpoint.path, { depth: "fast" }).catch(() => undefined);
        if (now && now.result.manifest_digest === checkpoint.manifest_digest) unchanged.push(checkpoint);
      }
      merged.result.quarantined = await quarantineInvalid(merged.target, unchanged, options);
    }
  }
  return merged;
}

/**
 * The result to record, or undefined when a clean full validation no longer
 * describes the files (their fingerprint moved since the shards read them):
 * recording it would make changed files known-good. Such a result gets a note.
 */
async function unchangedSince(
  result: ValidationResult,
  path: string,
  validated: string | null | undefined,
): Promise<ValidationResult | undefined> {
  const full = result.depth === "full" || result.depth === "deep";
  if (!result.ok || !full || !result.manifest_backed) return result;
  const now = await fingerprintCheckpoint(path);
  if (validated && now === validated) return result;
  result.notes.push(
    "changed on disk since the shards read it (files, sizes or mtimes differ): not recorded as known-good",
  );
  return undefined;
}

function mergeCheckpoint(first: ShardReport, parts: readonly ShardCheckpoint[]): MergedCheckpoint {
  const head = parts[0];
  const seen = new Map<number, number>();
  for (const [shard, part] of parts.entries()) {
    for (const file of part.files) {
      const other = seen.get(file.order);
      if (other !== undefined) {
        throw new CkptkitError(
          "report_mismatch",
          `Shards ${other} and ${shard} both read ${file.path} of ${head.name}: the reports do not come from one plan`,
        );
      }
      seen.set(file.order, shard);
    }
  }
  const result = resultOfParts(first.depth, head, head.whole, parts.flatMap((p) => p.files), {
    layout: true,
    durationS: Math.max(...parts.map((p) => p.duration_s)),
  });
  const prints = new Set(parts.map((p) => p.fingerprint));
  return { result, fingerprint: prints.size === 1 ? [...prints][0] : null };
}

/** Checks the set and returns the reports ordered by shard index; throws `report_mismatch`. */
function checkSet(reports: readonly ShardReport[], names: readonly string[]): ShardReport[] {
  if (reports.length === 0) throw new CkptkitError("invalid_argument", "No shard reports to merge");
  const first = reports[0];
  const a = names[0];
  const mismatch = (what: string) => new CkptkitError("report_mismatch", `mismatched set: ${what}`);
  const depthOf = (
    r: ShardReport,
  ) => (r.depth === "sample" && r.sample_bytes !== null ? `sample (${r.sample_bytes} bytes)` : r.depth);
  for (const [i, report] of reports.entries()) {
    const b = names[i];
    if (report.kind !== first.kind) {
      throw mismatch(`${b} is a ${report.kind} report, ${a} a ${first.kind} report`);
    }
    if (report.ckptkit_version !== first.ckptkit_version) {
      throw mismatch(
        `${b} was written by ckptkit ${report.ckptkit_version}, ${a} by ${first.ckptkit_version}; ` +
          `run every shard with one version`,
      );
    }
    if (report.shard.count !== first.shard.count) {
      throw mismatch(
        `${b} is shard ${report.shard.index} of ${report.shard.count}, ${a} shard ${first.shard.index} of ` +
          `${first.shard.count}; give every shard the same N`,
      );
    }
    if (report.target !== first.target) {
      throw mismatch(
        `${b} validated ${report.target}, ${a} ${first.target}; reports of different targets cannot be merged ` +
          `(mount the root at the same path on every node)`,
      );
    }
    if (depthOf(report) !== depthOf(first)) {
      throw mismatch(`${b} validated at ${depthOf(report)} depth, ${a} at ${depthOf(first)}; rerun with one depth`);
    }
    if (report.plan_digest !== first.plan_digest) throw planMismatch(first, report, a, b);
  }
  const byIndex = new Map<number, number>();
  for (const [i, report] of reports.entries()) {
    const other = byIndex.get(report.shard.index);
    if (other !== undefined) {
      throw new CkptkitError(
        "report_mismatch",
        `duplicate shard ${report.shard.index} of ${report.shard.count}: ${names[other]} and ${names[i]}; ` +
          `pass each shard's report once`,
      );
    }
    byIndex.set(report.shard.index, i);
  }
  const missing = Array.from({ length: first.shard.count }, (_, i) => i).filter((i) => !byIndex.has(i));
  if (missing.length > 0) {
    const shown = missing.length > 20
      ? `${missing.slice(0, 20).join(", ")}… (${missing.length} in all)`
      : missing.join(", ");
    throw new CkptkitError(
      "report_mismatch",
      `incomplete set: missing shard${missing.length === 1 ? "" : "s"} ${shown} of ${first.shard.count}; ` +
        `wait for ${missing.length === 1 ? "it" : "them"} or rerun ${missing.length === 1 ? "it" : "them"} ` +
        `(a shard that failed wrote no report)`,
    );
  }
  return [...reports].sort((x, y) => x.shard.index - y.shard.index);
}

function planMismatch(first: ShardReport, report: ShardReport, a: string, b: string): CkptkitError {
  if (first.kind === "validate") {
    return new CkptkitError(
      "report_mismatch",
      `plan mismatch: ${b} and ${a} read different manifests of ${first.target} (it changed between them); ` +
        `rerun the shards`,
    );
  }
  const mine = new Map(first.plan.map((e) => [e.name, e.digest]));
  const theirs = new Map(report.plan.map((e) => [e.name, e.digest]));
  const extra = [...theirs.keys()].find((name) => !mine.has(name));
  const lacking = [...mine.keys()].find((name) => !theirs.has(name));
  const changed = [...theirs.keys()].find((name) => mine.has(name) && mine.get(name) !== theirs.get(name));
  const detail = extra
    ? `${b} lists ${extra}, ${a} does not`
    : lacking
    ? `${a} lists ${lacking}, ${b} does not`
    : `${b} and ${a} read different manifests of ${changed}`;
  return new CkptkitError(
    "report_mismatch",
    `plan mismatch: shards listed different checkpoints (a commit or gc ran between them): ${detail}; rerun the shards`,
  );
}
