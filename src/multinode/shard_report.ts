/**
 * The report a shard of a distributed validation writes (format v1): what it
 * validated (kind, target, depth, plan), what it found in its files, and, for
 * shard 0, the checks of every checkpoint as a whole. Reports are read back
 * as untrusted input: size-limited and checked against a strict schema.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import { dirname, resolve } from "node:path";
import { z } from "../deps/zod.ts";
import { readFileLimited, writeFileAtomic } from "../fs/durable.ts";
import { asCkptkitError, CkptkitError } from "../errors.ts";
import type { LayoutFile } from "../formats/layouts.ts";
import type { LatestPointer } from "../core/latest.ts";
import { type Problem, PROBLEM_REASONS } from "../problems.ts";
import type { RootStaging, RootStray } from "../core/root.ts";
import { MAX_SHARDS, planDigest, type PlanEntry, type ShardSpec } from "./shard.ts";
import {
  assembleValidation,
  type FileOutcome,
  type LayoutInputRecord,
  type ValidationDepth,
  type ValidationResult,
} from "../core/validate.ts";

/** Value of a report's `format` field. */
export const SHARD_REPORT_FORMAT = "ckptkit.shard-report";
/** The report format version this ckptkit writes and reads. */
export const SHARD_REPORT_VERSION = 1;
/** Largest report read. */
export const MAX_SHARD_REPORT_BYTES = 512 * 1024 * 1024;

/** What shard 0 checks of a checkpoint as a whole, for every checkpoint. */
export interface ShardWholeChecks {
  /** Files whose presence and size were checked (every file the manifest lists). */
  files_checked: number;
  /** Problems of the checkpoint as a whole: manifest, unsafe paths, listing, presence and sizes. */
  problems: Problem[];
  /** Notes of the checkpoint as a whole. */
  notes: string[];
  /** Deep only: the input of the layout check (files, and small files' bytes in base64), run at merge. */
  layout: { files: LayoutFile[]; contents: Record<string, string> } | null;
}

/** One checkpoint as a shard saw it. */
export interface ShardCheckpoint {
  /** Folder name. */
  name: string;
  /** The checkpoint folder as validated. */
  path: string;
  /** From the manifest, or the folder name. */
  step: number | null;
  /** From the manifest. */
  job_id: string | null;
  /** From the manifest. */
  run_id: string | null;
  /** The manifest's self-digest. */
  manifest_digest: string | null;
  /** From the manifest. */
  created_at: string | null;
  /** From the manifest. */
  write_duration_s: number | null;
  /** Checked against a manifest. */
  manifest_backed: boolean;
  /** This shard's own verdict on its share of the checkpoint. */
  ok: boolean;
  /** Removed while the shard ran (scan only): counted as gone, not corrupt. */
  gone: boolean;
  /** Seconds this shard spent on it. */
  duration_s: number;
  /** The checkpoint's metadata fingerprint after this shard read it (full and deep), or null. */
  fingerprint: string | null;
  /** Shard 0 only (null on the others): the checks of the checkpoint as a whole. */
  whole: ShardWholeChecks | null;
  /** The files this shard read, with what it found. */
  files: FileOutcome[];
}

/** What shard 0 of a scan checks in the root itself. */
export interface ShardRootChecks {
  /** What `latest` says (whether it names a valid checkpoint is decided at merge). */
  latest: LatestPointer;
  /** Staging folders, each marked stale or not. */
  staging: (RootStaging & { stale: boolean })[];
  /** Entries that are not part of the layout. */
  strays: RootStray[];
}

/** A shard's report; also what `ckptkit validate|scan --shard i/N --json` prints. */
export interface ShardReport {
  /** Always `ckptkit.shard-report`. */
  format: typeof SHARD_REPORT_FORMAT;
  /** Always 1 for this format. */
  format_version: typeof SHARD_REPORT_VERSION;
  /** The ckptkit version that wrote it; a set must come from one version. */
  ckptkit_version: string;
  /** What was sharded. */
  kind: "validate" | "scan";
  /** Real path of the checkpoint (validate) or root (scan). */
  target: string;
  /** The checkpoint as given (validate) or the root (scan), as the merged result shows it. */
  path: string;
  /** Which shard of how many. */
  shard: ShardSpec;
  /** The depth validated at. */
  depth: ValidationDepth;
  /** The region size asked for at `sample` depth, else null. */
  sample_bytes: number | null;
  /** {@linkcode planDigest} of `plan`. */
  plan_digest: string;
  /** Every checkpoint and the manifest its files were planned from. */
  plan: PlanEntry[];
  /** The files the plan gave this shard, and the bytes reading them costs. */
  covered: { files: number; bytes: number };
  /** This shard's own verdict: no problem in its share. */
  ok: boolean;
  /** When the shard started (ISO 8601). */
  started_at: string;
  /** When it finished (ISO 8601). */
  finished_at: string;
  /** Its wall time in seconds. */
  duration_s: number;
  /** The host it ran on. */
  host: string;
  /** Every checkpoint, in the order a single-node run lists them (newest first). */
  checkpoints: ShardCheckpoint[];
  /** Shard 0 of a scan: the root's own checks; otherwise null. */
  root: ShardRootChecks | null;
}

const count = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
const seconds = z.number().min(0);
const text = z.string();
const problemSchema = z.strictObject({ reason: z.enum(PROBLEM_REASONS), path: text, detail: text });
const factSchema = z.union([z.string(), z.number(), z.boolean()]);
const outcomeSchema = z.strictObject({
  order: count,
  path: text,
  bytes: count,
  problems: z.array(problemSchema),
  notes: z.array(text),
  facts: z.record(z.string(), factSchema).optional(),
});
const checkpointSchema = z.strictObject({
  name: z.string().min(1).refine((name) => !name.includes("/") && name !== "." && name !== "..", {
    message: "not a folder name",
  }),
  path: z.string().min(1),
  step: count.nullable(),
  job_id: text.nullable(),
  run_id: text.nullable(),
  manifest_digest: text.nullable(),
  created_at: text.nullable(),
  write_duration_s: seconds.nullable(),
  manifest_backed: z.boolean(),
  ok: z.boolean(),
  gone: z.boolean(),
  duration_s: seconds,
  fingerprint: text.nullable(),
  whole: z.strictObject({
    files_checked: count,
    problems: z.array(problemSchema),
    notes: z.array(text),
    layout: z.strictObject({
      files: z.array(z.strictObject({ path: text, size: count })),
      contents: z.record(z.string(), z.base64()),
    }).nullable(),
  }).nullable(),
  files: z.array(outcomeSchema),
});
const reportSchema = z.strictObject({
  format: z.literal(SHARD_REPORT_FORMAT),
  format_version: z.literal(SHARD_REPORT_VERSION),
  ckptkit_version: z.string().min(1),
  kind: z.enum(["validate", "scan"]),
  target: z.string().min(1),
  path: z.string().min(1),
  shard: z.strictObject({ index: count, count: z.number().int().min(1).max(MAX_SHARDS) }),
  depth: z.enum(["fast", "sample", "full", "deep"]),
  sample_bytes: count.nullable(),
  plan_digest: z.string().regex(/^sha256:[0-9a-f]{64}$/),
  plan: z.array(z.strictObject({ name: z.string().min(1), digest: text.nullable() })),
  covered: z.strictObject({ files: count, bytes: count }),
  ok: z.boolean(),
  started_at: z.iso.datetime({ offset: true }),
  finished_at: z.iso.datetime({ offset: true }),
  duration_s: seconds,
  host: text,
  checkpoints: z.array(checkpointSchema),
  root: z.strictObject({
    latest: z.strictObject({
      state: z.enum(["ok", "missing", "invalid"]),
      name: text.optional(),
      step: count.optional(),
      detail: text.optional(),
    }),
    staging: z.array(z.strictObject({ name: text, path: text, age_s: seconds, stale: z.boolean() })),
    strays: z.array(z.strictObject({ name: text, detail: text, inferred_step: count.nullable() })),
  }).nullable(),
});

/**
 * Checks a parsed JSON value as a shard report: the strict schema, then what
 * the schema cannot say (index within count, the plan digest, who carries
 * what). Throws a `report_invalid` {@linkcode CkptkitError} naming `origin`
 * and the first thing wrong.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseShardReport } from "./shard_report.ts";
 * assert.throws(() => parseShardReport({ format: "something else" }, "r.json"), /not a ckptkit shard report/);
 * ```
 */
export function parseShardReport(value: unknown, origin = "report"): ShardReport {
  const invalid = (detail: string) =>
    new CkptkitError("report_invalid", `${origin} is not a usable shard report: ${detail}`, { path: origin });
  const head = value as Record<string, unknown> | null;
  if (typeof head !== "object" || head === null || head.format !== SHARD_REPORT_FORMAT) {
    throw new CkptkitError(
      "report_invalid",
      `${origin} is not a ckptkit shard report (no "format": "${SHARD_REPORT_FORMAT}"); ` +
        `pass the files written by --report`,
      { path: origin },
    );
  }
  if (typeof head.format_version === "number" && head.format_version > SHARD_REPORT_VERSION) {
    throw invalid(
      `format_version ${head.format_version} is newer than this ckptkit reads (${SHARD_REPORT_VERSION}); ` +
        `merge with the ckptkit that wrote it`,
    );
  }
  const parsed = reportSchema.safeParse(value);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const where = issue.path.length ? issue.path.map(String).join(".") : "(top level)";
    throw invalid(`field ${where}: ${issue.message}; rerun its shard (reports are never edited by hand)`);
  }
  const report = parsed.data as ShardReport;
  const { index, count: total } = report.shard;
  if (index >= total) throw invalid(`shard index ${index} is out of range for ${total} shards`);
  if (planDigest(report.plan) !== report.plan_digest) throw invalid("plan_digest does not match its plan");
  const names = report.checkpoints.map((c) => c.name);
  const planned = report.plan.map((e) => e.name);
  if (names.length !== planned.length || names.some((name, i) => name !== planned[i])) {
    throw invalid("its checkpoints are not the ones its plan lists");
  }
  if (report.kind === "validate" && names.length !== 1) throw invalid("a validate report holds one checkpoint");
  if ((report.root !== null) !== (report.kind === "scan" && index === 0)) {
    throw invalid("root checks belong to shard 0 of a scan, and only there");
  }
  for (const part of report.checkpoints) {
    // Recording and quarantine act on these paths: a scan's must be the root's own entries.
    const expected = report.kind === "scan" ? `${report.target}/${part.name}` : report.path;
    if (part.path !== expected) throw invalid(`${part.name}: path ${JSON.stringify(part.path)} is not ${expected}`);
    if (part.whole !== null && index !== 0) throw invalid(`${part.name}: only shard 0 checks checkpoints as a whole`);
    if (part.whole === null && index === 0 && !part.gone) throw invalid(`${part.name}: shard 0 lacks its whole checks`);
  }
  return report;
}

/**
 * Reads and checks a shard report file (see {@linkcode parseShardReport}).
 * A missing file is `not_found`; anything else wrong is `report_invalid`.
 *
 * Requires `--allow-read`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { readShardReport } from "./shard_report.ts";
 * const dir = await Deno.makeTempDir();
 * await Deno.writeTextFile(`${dir}/r.json`, "{ not json");
 * await assert.rejects(readShardReport(`${dir}/r.json`), /not valid JSON/);
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function readShardReport(path: string): Promise<ShardReport> {
  let bytes: Uint8Array | undefined;
  try {
    bytes = await readFileLimited(path, MAX_SHARD_REPORT_BYTES);
  } catch (err) {
    const error = asCkptkitError(err, `Reading the shard report ${path}`, path);
    throw error.reason === "not_found"
      ? error
      : new CkptkitError("report_invalid", error.message, { path, cause: err });
  }
  if (!bytes) {
    throw new CkptkitError("report_invalid", `${path} is larger than ${MAX_SHARD_REPORT_BYTES} bytes`, { path });
  }
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch (err) {
    throw new CkptkitError(
      "report_invalid",
      `${path} is not valid JSON (${(err as Error).message}); was it cut short? Rerun its shard`,
      { path, cause: err },
    );
  }
  return parseShardReport(value, path);
}

/**
 * Writes a report atomically (temporary file, fsync, rename). Refuses a path
 * inside the validated checkpoint or root, where it would show up as an
 * unexpected file or a stray; the folder must exist.
 *
 * Requires `--allow-read` and `--allow-write`.
 *
 * @example
 * ```ts ignore
 * import { validateShard } from "./shard_run.ts";
 * import { writeShardReport } from "./shard_report.ts";
 * const report = await validateShard("/tmp/ckpts/step-10", { shard: { index: 0, count: 2 } });
 * await writeShardReport("/tmp/reports/shard-0.json", report);
 * ```
 */
export async function writeShardReport(path: string, report: ShardReport): Promise<void> {
  await refuseReportInside(path, report.target, report.kind);
  try {
    await writeFileAtomic(path, JSON.stringify(report) + "\n");
  } catch (err) {
    throw asCkptkitError(err, `Writing the shard report ${path}`, path);
  }
}

/**
 * Refuses (`invalid_argument`) a report path inside `target` (the real path
 * of the checkpoint or root validated), where the report would show up as an
 * unexpected file or a stray, and a path whose folder does not exist
 * (`not_found`). The CLI calls it before validating, so a bad path costs no
 * reads.
 *
 * Requires `--allow-read`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { refuseReportInside } from "./shard_report.ts";
 * const root = await Deno.realPath(await Deno.makeTempDir());
 * await assert.rejects(refuseReportInside(`${root}/r.json`, root, "scan"), /inside/);
 * await refuseReportInside("/tmp/r.json", `${root}/step-1`, "validate");
 * await Deno.remove(root, { recursive: true });
 * ```
 */
export async function refuseReportInside(path: string, target: string, kind: ShardReport["kind"]): Promise<void> {
  let folder: string;
  try {
    folder = await Deno.realPath(dirname(resolve(path)));
  } catch (err) {
    throw asCkptkitError(err, `Resolving the folder of the report ${path}`, path);
  }
  const inside = target.endsWith("/") ? target : `${target}/`;
  if (folder === target || folder.startsWith(inside)) {
    throw new CkptkitError(
      "invalid_argument",
      `--report ${path} is inside ${target}, where it would be ${
        kind === "scan" ? "a stray of the root (or an unexpected file of a checkpoint)" : "an unexpected file"
      }; write reports outside it`,
      { path },
    );
  }
}

/** Encodes layout contents for a report. */
export function encodeLayout(layout: LayoutInputRecord | null): ShardWholeChecks["layout"] {
  if (!layout) return null;
  const contents: Record<string, string> = {};
  for (const [path, bytes] of layout.contents) contents[path] = Buffer.from(bytes).toString("base64");
  return { files: layout.files, contents };
}

/** Decodes layout contents from a report. */
export function decodeLayout(layout: ShardWholeChecks["layout"]): LayoutInputRecord | null {
  if (!layout) return null;
  const contents = new Map<string, Uint8Array>();
  for (const [path, base64] of Object.entries(layout.contents)) {
    contents.set(path, new Uint8Array(Buffer.from(base64, "base64")));
  }
  return { files: layout.files, contents };
}

/**
 * A checkpoint's validation result from shard parts: with shard 0's whole
 * checks and every shard's files, the same result a single process gives;
 * with one shard's part alone, that shard's share (its files; the whole
 * checks too for shard 0; no layout check, which needs every shard's facts).
 */
export function resultOfParts(
  depth: ValidationDepth,
  head: ShardCheckpoint,
  whole: ShardWholeChecks | null,
  files: readonly FileOutcome[],
  options: { layout: boolean; durationS: number },
): ValidationResult {
  const inspected: ValidationResult = {
    path: head.path,
    step: head.step,
    ok: false,
    depth,
    problems: whole?.problems ?? [],
    files_checked: whole?.files_checked ?? files.length,
    bytes_checked: 0,
    duration_s: 0,
    job_id: head.job_id,
    run_id: head.run_id,
    manifest_digest: head.manifest_digest,
    created_at: head.created_at,
    write_duration_s: head.write_duration_s,
    notes: whole?.notes ?? [],
    manifest_backed: head.manifest_backed,
    layout: null,
  };
  return assembleValidation(
    inspected,
    files,
    options.layout ? decodeLayout(whole?.layout ?? null) : null,
    options.durationS,
  );
}
