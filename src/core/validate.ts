/**
 * Validation of one checkpoint against its manifest, at a chosen depth.
 * Every problem is reported, not only the first; nothing is printed and
 * nothing on disk changes.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { defaultConcurrency, mapConcurrent } from "../fs/concurrency.ts";
import { CkptkitError } from "../errors.ts";
import { requireFolder } from "../fs/folder.ts";
import { type FileHasher, hashAll, withHasher } from "../fs/hash_pool.ts";
import { hashRegions, type RegionDigest, SMALL_FILE_BYTES, type SmallFileResult } from "../fs/hashing.ts";
import type { FormatFact } from "../formats/checker.ts";
import { checkFileFormat, type FileFormatResult, readLayoutContents } from "../formats/files.ts";
import { formatCheckerFor } from "../formats/dispatch.ts";
import { detectLayout, type LayoutFile } from "../formats/layouts.ts";
import { inferStep, MANIFEST_NAME, parseCheckpointName } from "./layout.ts";
import { fileSamples, type Manifest, type ManifestFile, parseManifest, readManifestFile } from "./manifest.ts";
import { parentOf } from "../fs/paths.ts";
import type { Problem } from "../problems.ts";
import { listTree, type Tree } from "../fs/tree.ts";

/**
 * How much validation reads:
 * - `fast`: the manifest, and every file's presence and size (metadata only).
 * - `sample`: fast, plus the digests of the regions sampled at commit time.
 * - `full`: fast, plus every byte of every file hashed.
 * - `deep`: full, plus format checks in the same read (torch zip and legacy
 *   files, safetensors) and layout checks (DeepSpeed, Hugging Face Trainer,
 *   DCP). A folder without a manifest is then checked on its formats and
 *   layout alone, with `manifest_missing` as a note.
 */
export type ValidationDepth = "fast" | "sample" | "full" | "deep";

/** Options for {@linkcode validateCheckpoint}. */
export interface ValidateOptions {
  /** How much to read (default `full`). */
  depth?: ValidationDepth;
  /**
   * For `sample`: the region size the caller asked for. Regions are those
   * recorded at commit time; a different size is noted in the result.
   */
  sampleBytes?: number;
  /** Files hashed at once (default: the number of cores). */
  concurrency?: number;
  /** Called with the number of bytes read after each chunk. */
  onProgress?: (bytes: number) => void;
  /** Called once before reading file data, with the checkpoint and the bytes it will read. */
  onPlan?: (plan: { path: string; bytes: number }) => void;
  /** Stops validation when aborted. */
  signal?: AbortSignal;
  /**
   * What hashes whole files: a shared `HashPool` (scan passes one), or by
   * default a pool of `concurrency` workers when there is enough to hash.
   */
  hasher?: FileHasher;
  /**
   * Stat every file the manifest lists before any is read, so that the inspection reports every size mismatch
   * (sharded validation: shard 0 reports them, whoever reads the file). Default: only at `fast` and `sample`
   * depth; `full` and `deep` learn each size from the read itself, without a system call more per file.
   */
  sizesBeforeReading?: boolean;
}

/** The result of validating one checkpoint; also its `--json` document. */
export interface ValidationResult {
  /** The checkpoint folder as given. */
  path: string;
  /** The step from the manifest, or from the folder name when the manifest is unusable. */
  step: number | null;
  /** True when no problem was found. */
  ok: boolean;
  /** The depth validated at. */
  depth: ValidationDepth;
  /** Every problem found. */
  problems: Problem[];
  /** Files whose presence was checked. */
  files_checked: number;
  /** Bytes read and hashed (0 for `fast`). */
  bytes_checked: number;
  /** Wall time in seconds. */
  duration_s: number;
  /** The job named by the manifest. */
  job_id: string | null;
  /** The run named by the manifest. */
  run_id: string | null;
  /** The manifest's self-digest, when the manifest is intact. */
  manifest_digest: string | null;
  /** When the checkpoint was committed, from the manifest. */
  created_at: string | null;
  /** Seconds its writer spent writing or hashing it, from the manifest. */
  write_duration_s: number | null;
  /** Hints that are not problems (for example no sampled digests recorded). */
  notes: string[];
  /** True when checked against a manifest; false when only its formats and layout were (deep, no manifest). */
  manifest_backed: boolean;
  /** The tool layout recognized by deep validation (`deepspeed`, `hf-trainer`, `dcp`, `plain`), or null. */
  layout: string | null;
}

/**
 * Validates the checkpoint in `path` against its manifest: the manifest's
 * integrity, unsafe paths, symlinks, missing, extra and special files, sizes,
 * and at `sample` or `full` depth the digests. Throws only when `path` is not
 * a folder; everything wrong with the checkpoint is a problem in the result.
 *
 * Requires `--allow-read`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { validateCheckpoint } from "./validate.ts";
 * const dir = await Deno.makeTempDir();
 * const result = await validateCheckpoint(dir, { depth: "fast" });
 * assert.ok(!result.ok);
 * assert.ok(result.problems[0].reason === "manifest_missing");
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function validateCheckpoint(
  path: string,
  options: ValidateOptions = {},
): Promise<ValidationResult> {
  const started = performance.now();
  const inspection = await inspectCheckpoint(path, options);
  const outcomes = await readCheckpointFiles(inspection, inspection.units, options);
  const layout = await readLayoutInput(inspection);
  return assembleValidation(inspection.result, outcomes, layout, (performance.now() - started) / 1000);
}

/**
 * A file that validation reads, in the order a single process reads them.
 * Sharded validation assigns these to shards; the order lets a merge put
 * every shard's findings back where one process would have put them.
 */
export interface ReadUnit {
  /** Position in the read order: largest first, then manifest order (tree order without a manifest). */
  order: number;
  /** Path relative to the checkpoint. */
  path: string;
  /** Size in bytes: the manifest's, or the size on disk for a folder without a manifest. */
  size: number;
  /** Bytes reading it costs at this depth: the whole file, its sampled regions, or 0 for `fast`. */
  cost: number;
  /** Present with the expected size when listed here; only those are read (the rest are problems already). */
  readable: boolean;
}

/**
 * Everything validation learns without reading file data: the manifest, the
 * listing, the problems found from them, and the files left to read.
 */
export interface CheckpointInspection {
  /** The checkpoint folder as given. */
  path: string;
  /** The depth validated at. */
  depth: ValidationDepth;
  /** `manifest`: checked against a manifest; `structure`: deep, without one; `none`: nothing to read. */
  mode: "manifest" | "structure" | "none";
  /**
   * The result before any file is read: header fields, the problems and notes of the checkpoint as a whole
   * (manifest, unsafe paths, listing, presence and sizes), and `files_checked`.
   */
  result: ValidationResult;
  /** Every file to read, in read order; empty when `mode` is `none`. */
  units: ReadUnit[];
  /**
   * What the set of files to read depends on: the manifest's digest, `structure:sha256:…` of the listing
   * without a manifest, or null when nothing is read.
   */
  planKey: string | null;
  /** The files deep validation's layout check looks at (null below deep). */
  layoutFiles: LayoutFile[] | null;
  /** The manifest's files by path (internal to reading). */
  manifestFiles: ReadonlyMap<string, ManifestFile>;
  /** The manifest (internal to reading). */
  manifest: Manifest | null;
}

/** What reading one file found. */
export interface FileOutcome {
  /** The file's place in the read order (largest first, then manifest order; tree order without a manifest). */
  order: number;
  /** Path relative to the checkpoint. */
  path: string;
  /** Bytes read (or, without a manifest, format-checked). */
  bytes: number;
  /** Problems found in the file. */
  problems: Problem[];
  /** Notes about the file. */
  notes: string[];
  /** Facts from its format check, for the layout check (only at deep depth). */
  facts?: Readonly<Record<string, FormatFact>>;
}

/** The input of deep validation's layout check besides the format facts: the files and a few small files' bytes. */
export interface LayoutInputRecord {
  /** The files the layout is judged on. */
  files: LayoutFile[];
  /** Contents of the small files the layout check reads (DeepSpeed `latest`, `trainer_state.json`, …). */
  contents: Map<string, Uint8Array>;
}

/**
 * The metadata pass of validation: reads the manifest and lists the folder,
 * and reports everything that needs no file data. Throws only when `path` is
 * not a folder.
 */
export async function inspectCheckpoint(
  path: string,
  options: ValidateOptions = {},
): Promise<CheckpointInspection> {
  const depth = options.depth ?? "full";
  const result: ValidationResult = {
    path,
    step: parseCheckpointName(basename(path)) ?? inferStep(basename(path)) ?? null,
    ok: false,
    depth,
    problems: [],
    files_checked: 0,
    bytes_checked: 0,
    duration_s: 0,
    job_id: null,
    run_id: null,
    manifest_digest: null,
    created_at: null,
    write_duration_s: null,
    notes: [],
    manifest_backed: false,
    layout: null,
  };
  const inspection: CheckpointInspection = {
    path,
    depth,
    mode: "none",
    result,
    units: [],
    planKey: null,
    layoutFiles: null,
    manifestFiles: new Map(),
    manifest: null,
  };
  await requireFolder(path, "checkpoint folder");

  const manifest = await readManifest(path, result.problems);
  if (!manifest) {
    if (depth === "deep" && result.problems.length === 1 && result.problems[0].reason === "manifest_missing") {
      result.problems = [];
      result.notes.push("manifest_missing: no manifest, so only the formats and the layout were checked");
      await inspectStructure(inspection);
    }
    return inspection;
  }
  inspection.mode = "manifest";
  inspection.manifest = manifest.manifest;
  const stepProblem = await stepMismatch(path, manifest.manifest.step);
  if (stepProblem) result.problems.push(stepProblem);
  // A manifest whose self-digest does not match is still used; then only its bytes say which one was read.
  inspection.planKey = manifest.intact ? manifest.manifest.manifest_digest : `raw:sha256:${manifest.rawDigest}`;
  result.manifest_backed = true;
  result.step = manifest.manifest.step;
  result.job_id = manifest.manifest.job_id;
  result.run_id = manifest.manifest.run_id;
  result.manifest_digest = manifest.manifest.manifest_digest;
  result.created_at = manifest.manifest.created_at;
  result.write_duration_s = manifest.manifest.write_duration_s;

  // Types from the folder entries, no lstat per file listed: the manifest's files are stat'ed once each below
  // (full and deep read their sizes instead), the others are unexpected whatever their size.
  const tree = await listTree(path, {
    skipTopLevel: (name) => name === MANIFEST_NAME,
    fileStats: false,
  });
  result.problems.push(...treeProblems(tree));
  const blocked = new Set(tree.oddities.map((o) => o.path));
  const unreadable = new Set(tree.errors.map((e) => e.path));
  const listed = new Set<string>();
  const safe: { file: ManifestFile; readable: boolean }[] = [];
  const manifestFiles = new Map<string, ManifestFile>();
  const statSizes = options.sizesBeforeReading ?? (depth === "fast" || depth === "sample");
  manifest.manifest.files.forEach((file, index) => {
    if (manifest.unsafePaths.has(index)) return;
    listed.add(file.path);
    manifestFiles.set(file.path, file);
    result.files_checked++;
    const found = tree.files.get(file.path);
    if (!found) {
      safe.push({ file, readable: false });
      if (!isUnder(file.path, blocked) && !isUnder(file.path, unreadable)) {
        result.problems.push({
          reason: "file_missing",
          path: file.path,
          detail: `listed in the manifest (${file.size} bytes) but not on disk`,
        });
      }
      return;
    }
    let size = found.size;
    if (size < 0 && statSizes) {
      // A blocking lstat: the call costs a microsecond, an awaited one a round trip to another thread.
      try {
        size = Deno.lstatSync(`${path}/${file.path}`).size;
      } catch (err) {
        safe.push({ file, readable: false });
        result.problems.push(
          err instanceof Deno.errors.NotFound
            ? { reason: "file_missing", path: file.path, detail: "disappeared while it was being validated" }
            : { reason: "io_error", path: file.path, detail: `cannot stat: ${(err as Error).message}` },
        );
        return;
      }
    }
    // Not stat'ed (full, deep): the read finds the size, and hashes nothing when it differs.
    if (size >= 0 && size !== file.size) {
      safe.push({ file, readable: false });
      result.problems.push({
        reason: "size_mismatch",
        path: file.path,
        detail: `size is ${size} bytes, manifest says ${file.size}`,
      });
      return;
    }
    safe.push({ file, readable: true });
  });
  inspection.manifestFiles = manifestFiles;
  for (const found of tree.files.keys()) {
    if (!listed.has(found)) {
      result.problems.push({
        reason: "unexpected_file",
        path: found,
        detail: "on disk but not listed in the manifest",
      });
    }
  }
  if (
    depth === "sample" && options.sampleBytes !== undefined &&
    options.sampleBytes !== manifest.manifest.hash.sample_bytes
  ) {
    result.notes.push(
      `sampled regions of ${manifest.manifest.hash.sample_bytes} bytes were ` +
        `recorded at commit; checked those instead of ${options.sampleBytes}`,
    );
  }
  // Largest first (a stable sort keeps manifest order among equals), so one huge file does not finish last alone.
  safe.sort((a, b) => b.file.size - a.file.size);
  inspection.units = safe.map(({ file, readable }, order) => ({
    order,
    path: file.path,
    size: file.size,
    cost: readCost(file, depth),
    readable,
  }));
  if (depth === "deep") {
    inspection.layoutFiles = manifest.manifest.files
      .filter((file) => tree.files.has(file.path))
      .map((f) => ({ path: f.path, size: f.size }));
  }
  return inspection;
}

/** Bytes a depth reads from a file: all of it, its recorded regions, or none. */
function readCost(file: ManifestFile, depth: ValidationDepth): number {
  if (depth === "full" || depth === "deep") return file.size;
  if (depth === "sample") return fileSamples(file).reduce((sum, region) => sum + region.length, 0);
  return 0;
}

/**
 * Reads the given files of an inspected checkpoint (a subset of its units,
 * for a shard), hashing and format-checking each at the inspection's depth.
 * Outcomes come back in read order; units not readable are skipped.
 */
export async function readCheckpointFiles(
  inspection: CheckpointInspection,
  units: readonly ReadUnit[],
  options: ValidateOptions = {},
): Promise<FileOutcome[]> {
  const { path, depth } = inspection;
  const toRead = units.filter((unit) => unit.readable).sort((a, b) => a.order - b.order);
  const concurrency = options.concurrency ?? defaultConcurrency();
  if (inspection.mode === "structure") return await readStructure(path, toRead, concurrency);
  if (inspection.mode === "none" || depth === "fast") return [];
  const manifest = inspection.manifest!;
  const reads = depth === "full" || depth === "deep";
  const bytes = reads ? toRead.reduce((sum, unit) => sum + unit.size, 0) : 0;
  options.onPlan?.({ path, bytes });
  const checks: FileCheck[] = new Array(toRead.length);
  // Whole files (full, deep), or at sample depth the small files: their sampled regions cover most of them, so they
  // are read whole in batches like full validation's; the regions of big files are read alone.
  const batched: number[] = [];
  const regionsAlone: number[] = [];
  toRead.forEach((unit, i) => (reads || unit.size <= SMALL_FILE_BYTES ? batched : regionsAlone).push(i));
  await withHasher(
    { files: batched.length, bytes, concurrency, hasher: reads || depth === "sample" ? options.hasher : undefined },
    async (hasher) => {
      await hashAll(
        hasher,
        batched.map((i) => {
          const file = inspection.manifestFiles.get(toRead[i].path)!;
          return {
            path: `${path}/${file.path}`,
            size: file.size,
            // The recorded regions, hashed in the same pass: full validation must not pass what sample fails.
            regions: fileSamples(file),
            ...(depth === "deep" && { formatPath: file.path }),
          };
        }),
        {
          algorithm: manifest.hash.algorithm,
          sampleBytes: 0,
          concurrency,
          onProgress: reads ? options.onProgress : undefined,
          signal: options.signal,
        },
        (k, result) => {
          const file = inspection.manifestFiles.get(toRead[batched[k]].path)!;
          checks[batched[k]] = reads
            ? checkWholeFile(file, manifest, result)
            : checkSmallSamples(file, manifest, result);
        },
      );
    },
  );
  await mapConcurrent(regionsAlone, concurrency, async (i) => {
    checks[i] = await checkSamples(path, inspection.manifestFiles.get(toRead[i].path)!, manifest);
  });
  return checks.map((check, i) => ({
    order: toRead[i].order,
    path: toRead[i].path,
    bytes: check.bytes,
    problems: check.problems,
    notes: check.note ? [check.note] : [],
    ...(check.facts && { facts: check.facts }),
  }));
}

/**
 * Reads the small files deep validation's layout check needs, or null when
 * there is no layout check (below deep, or nothing usable to check).
 */
export async function readLayoutInput(inspection: CheckpointInspection): Promise<LayoutInputRecord | null> {
  if (!inspection.layoutFiles) return null;
  return {
    files: inspection.layoutFiles,
    contents: await readLayoutContents(inspection.path, inspection.layoutFiles),
  };
}

/**
 * Puts a validation result together from its inspection, the outcomes of
 * the files read (from one process or from every shard, in any order) and
 * the layout input: the same result, in the same order, whoever read what.
 */
export function assembleValidation(
  inspected: ValidationResult,
  outcomes: readonly FileOutcome[],
  layout: LayoutInputRecord | null,
  durationS: number,
): ValidationResult {
  const result: ValidationResult = {
    ...inspected,
    problems: [...inspected.problems],
    notes: [...inspected.notes],
  };
  const facts = new Map<string, Readonly<Record<string, FormatFact>>>();
  for (const outcome of [...outcomes].sort((a, b) => a.order - b.order)) {
    result.bytes_checked += outcome.bytes;
    result.problems.push(...outcome.problems);
    result.notes.push(...outcome.notes);
    if (outcome.facts) facts.set(outcome.path, outcome.facts);
  }
  if (layout) {
    const found = detectLayout({
      files: layout.files,
      contents: layout.contents,
      facts,
      rootName: basename(result.path),
    });
    result.layout = found.kind;
    for (const finding of found.findings) {
      result.problems.push({
        reason: "format_invalid",
        path: finding.path,
        detail: `${found.kind}: ${finding.detail}`,
      });
    }
    result.notes.push(...found.notes);
  }
  result.problems.sort(byPath);
  result.ok = result.problems.length === 0;
  result.duration_s = round(durationS);
  return result;
}

/**
 * Resume, scan and gc order checkpoints by the step in their folder name; a manifest recording another step (a
 * copied or renamed folder, a re-signed manifest) would make them choose or keep the wrong one. A folder whose
 * name says no step (a backup copy, a staging folder) is not checked.
 */
async function stepMismatch(path: string, manifestStep: number): Promise<Problem | undefined> {
  // The real name: "." or a trailing slash still names the folder it is.
  const name = basename(await Deno.realPath(path).catch(() => path));
  const named = parseCheckpointName(name) ?? inferStep(name);
  if (named === undefined || named === manifestStep) return undefined;
  return {
    reason: "step_mismatch",
    path: MANIFEST_NAME,
    detail: `folder ${name} is named for step ${named} but its manifest says step ${manifestStep} ` +
      `(a copied or renamed checkpoint?); it is never resumed from under that name`,
  };
}

interface ReadManifest {
  manifest: Manifest;
  unsafePaths: Set<number>;
  /** No manifest_corrupt problem: its self-digest names its content. */
  intact: boolean;
  /** sha256 (hex) of the manifest file's bytes. */
  rawDigest: string;
}

async function readManifest(
  dir: string,
  problems: Problem[],
): Promise<ReadManifest | undefined> {
  const read = await readManifestText(dir);
  if ("problem" in read) {
    problems.push(read.problem);
    return undefined;
  }
  const parsed = await parseManifest(read.text);
  problems.push(...parsed.problems);
  if (!parsed.manifest) return undefined;
  return {
    manifest: parsed.manifest,
    unsafePaths: parsed.unsafePaths,
    intact: !parsed.problems.some((p) => p.reason === "manifest_corrupt"),
    rawDigest: read.rawDigest,
  };
}

/** The manifest's text and the digest of its bytes; the bytes themselves are not kept while the text is parsed. */
async function readManifestText(dir: string): Promise<{ text: string; rawDigest: string } | { problem: Problem }> {
  const read = await readManifestFile(dir);
  if ("problem" in read) return read;
  return { text: read.text, rawDigest: createHash("sha256").update(read.bytes).digest("hex") };
}

interface FileCheck {
  bytes: number;
  problems: Problem[];
  note?: string;
  facts?: Readonly<Record<string, FormatFact>>;
}

/** Problems of a listed tree itself: unreadable parts, links, special files and undecodable names. */
function treeProblems(tree: Tree): Problem[] {
  return [
    ...tree.errors.map((error): Problem => ({ reason: "io_error", path: error.path, detail: error.message })),
    ...tree.oddities.map((oddity): Problem =>
      oddity.kind === "symlink"
        ? {
          reason: "symlink",
          path: oddity.path,
          detail: `symbolic link to ${JSON.stringify(oddity.target)}; links are never followed`,
        }
        : oddity.kind === "undecodable"
        ? {
          reason: "unexpected_file",
          path: oddity.path,
          detail: "name is not valid UTF-8 (shown with U+FFFD): no manifest can list it",
        }
        : oddity.kind === "mount_point"
        ? {
          reason: "mount_point",
          path: oddity.path,
          detail: "a mount point (another file system inside the checkpoint); never entered",
        }
        : { reason: "not_regular_file", path: oddity.path, detail: "not a regular file (FIFO, socket or device)" }
    ),
  ];
}

function formatProblems(path: string, format: FileFormatResult | undefined): Problem[] {
  return (format?.findings ?? []).map((finding) => ({
    reason: "format_invalid" as const,
    path,
    detail: `${format!.format}: ${finding.detail}`,
  }));
}

/**
 * Deep validation of a folder without a manifest (adopting another tool's checkpoint): every file with a known
 * format is read and checked, then the layout; nothing is hashed against digests, because there are none.
 */
async function inspectStructure(inspection: CheckpointInspection): Promise<void> {
  const { path, result } = inspection;
  const tree = await listTree(path);
  result.problems.push(...treeProblems(tree));
  const files = [...tree.files.values()];
  result.files_checked = files.length;
  inspection.mode = "structure";
  inspection.units = files.map((file, order) => ({
    order,
    path: file.path,
    size: file.size,
    cost: formatCheckerFor(file.path, file.size) ? file.size : 0,
    readable: true,
  }));
  inspection.layoutFiles = files.map((f) => ({ path: f.path, size: f.size }));
  // Without a manifest the listing is what the shards must agree on.
  const listing = createHash("sha256");
  for (const file of files) listing.update(`${JSON.stringify(file.path)}\t${file.size}\n`);
  inspection.planKey = `structure:sha256:${listing.digest("hex")}`;
}

async function readStructure(dir: string, units: readonly ReadUnit[], concurrency: number): Promise<FileOutcome[]> {
  const checked = await mapConcurrent(units, concurrency, async (unit) => {
    try {
      return { unit, format: await checkFileFormat(`${dir}/${unit.path}`, unit.path) };
    } catch (err) {
      return { unit, error: err };
    }
  });
  const outcomes: FileOutcome[] = [];
  for (const { unit, format, error } of checked) {
    const outcome: FileOutcome = { order: unit.order, path: unit.path, bytes: 0, problems: [], notes: [] };
    if (error) {
      outcome.problems.push({
        reason: "io_error",
        path: unit.path,
        detail: `cannot read: ${(error as Error).message}`,
      });
    } else if (format) {
      outcome.bytes = unit.size;
      outcome.problems.push(...formatProblems(unit.path, format));
      outcome.notes.push(...format.notes.map((n) => `${unit.path}: ${n}`));
      outcome.facts = format.facts;
    }
    outcomes.push(outcome);
  }
  return outcomes;
}

function checkWholeFile(file: ManifestFile, manifest: Manifest, result: SmallFileResult): FileCheck {
  if ("error" in result) return { bytes: 0, problems: [readProblem(file, result.error)] };
  const found = result.file;
  // Another size: nothing was read.
  if (found.size !== file.size) return { bytes: 0, problems: [sizeMismatch(file, found.size)] };
  const problems: Problem[] = [];
  if (found.digest !== file.digest) {
    problems.push({
      reason: "hash_mismatch",
      path: file.path,
      detail: `${manifest.hash.algorithm} is ${found.digest}, manifest says ${file.digest}`,
    });
  } else {
    // Whole file as recorded, yet a recorded region differs: the manifest contradicts itself.
    problems.push(...sampleMismatches(file, found.samples, manifest));
  }
  // Format findings are reported next to a hash mismatch too: they say what the damage is.
  problems.push(...formatProblems(file.path, found.format));
  return {
    bytes: found.size,
    problems,
    note: found.format?.notes.length ? found.format.notes.map((n) => `${file.path}: ${n}`).join("; ") : undefined,
    facts: found.format?.facts,
  };
}

/** Sample depth for a small file read whole: only its sampled regions are judged, as when they are read alone. */
function checkSmallSamples(file: ManifestFile, manifest: Manifest, result: SmallFileResult): FileCheck {
  const regions = fileSamples(file);
  if (file.size > 0 && regions.length === 0) {
    return { bytes: 0, problems: [], note: `${file.path}: no sampled digests recorded; only its size was checked` };
  }
  if ("error" in result) return { bytes: 0, problems: [readProblem(file, result.error)] };
  const found = result.file;
  // Another size: nothing was read; a region past the new end is what reading it alone finds.
  if (found.size !== file.size) {
    return {
      bytes: 0,
      problems: [{
        reason: "file_changed",
        path: file.path,
        detail: `size is now ${found.size} bytes, manifest says ${file.size}`,
      }],
    };
  }
  return {
    bytes: regions.reduce((sum, r) => sum + r.length, 0),
    problems: sampleMismatches(file, found.samples, manifest),
  };
}

async function checkSamples(
  dir: string,
  file: ManifestFile,
  manifest: Manifest,
): Promise<FileCheck> {
  const regions = fileSamples(file);
  if (file.size > 0 && regions.length === 0) {
    return {
      bytes: 0,
      problems: [],
      note: `${file.path}: no sampled digests recorded; only its size was checked`,
    };
  }
  try {
    const found = await hashRegions(
      `${dir}/${file.path}`,
      regions,
      manifest.hash.algorithm,
    );
    return {
      bytes: found.reduce((sum, r) => sum + r.length, 0),
      problems: sampleMismatches(file, found, manifest),
    };
  } catch (err) {
    return { bytes: 0, problems: [readProblem(file, err)] };
  }
}

function sampleMismatches(file: ManifestFile, found: readonly RegionDigest[], manifest: Manifest): Problem[] {
  const recorded = fileSamples(file);
  return found.flatMap((region, i): Problem[] =>
    region.digest === recorded[i].digest ? [] : [{
      reason: "hash_mismatch",
      path: file.path,
      detail: `sampled region at offset ${region.offset} (${region.length} bytes): ` +
        `${manifest.hash.algorithm} is ${region.digest}, manifest says ${recorded[i].digest}`,
    }]
  );
}

function sizeMismatch(file: ManifestFile, size: number): Problem {
  return {
    reason: "size_mismatch",
    path: file.path,
    detail: `size is ${size} bytes, manifest says ${file.size}`,
  };
}

function readProblem(file: ManifestFile, err: unknown): Problem {
  if (err instanceof CkptkitError && err.reason === "file_changed") {
    return { reason: "file_changed", path: file.path, detail: err.message };
  }
  if (err instanceof Deno.errors.NotFound) {
    return {
      reason: "file_missing",
      path: file.path,
      detail: "disappeared while it was being validated",
    };
  }
  return {
    reason: "io_error",
    path: file.path,
    detail: `cannot read: ${(err as Error).message}`,
  };
}

function isUnder(path: string, roots: Set<string>): boolean {
  for (let p = path; p; p = parentOf(p)) if (roots.has(p)) return true;
  return roots.has("");
}

function byPath(a: Problem, b: Problem): number {
  return a.path < b.path ? -1 : a.path > b.path ? 1 : a.reason < b.reason ? -1 : a.reason > b.reason ? 1 : 0;
}

function basename(path: string): string {
  const trimmed = path.replace(/\/+$/, "");
  return trimmed.slice(trimmed.lastIndexOf("/") + 1);
}

function round(seconds: number): number {
  return Math.round(seconds * 1e6) / 1e6;
}
