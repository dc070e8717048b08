/**
 * Validation of one checkpoint against its manifest, at a chosen depth.
 * Every problem is reported, not only the first; nothing is printed and
 * nothing on disk changes.
 *
 * @module
 */

import { defaultConcurrency, mapConcurrent } from "./concurrency.ts";
import { readFileLimited } from "./durable.ts";
import { CkptkitError } from "./errors.ts";
import { type FileHasher, withHasher } from "./hash_pool.ts";
import { hashRegions } from "./hashing.ts";
import type { FormatFact } from "./formats/checker.ts";
import { checkFileFormat, type FileFormatResult, readLayoutContents } from "./formats/files.ts";
import { detectLayout, type LayoutFile } from "./formats/layouts.ts";
import { inferStep, MANIFEST_NAME, parseCheckpointName } from "./layout.ts";
import { type Manifest, type ManifestFile, MAX_MANIFEST_BYTES, parseManifest } from "./manifest.ts";
import { parentOf } from "./paths.ts";
import type { Problem } from "./problems.ts";
import { listTree, type Tree } from "./tree.ts";

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
  const finish = () => {
    result.ok = result.problems.length === 0;
    result.duration_s = round((performance.now() - started) / 1000);
    return result;
  };
  await requireFolder(path);

  const manifest = await readManifest(path, result.problems);
  if (!manifest) {
    if (depth === "deep" && result.problems.length === 1 && result.problems[0].reason === "manifest_missing") {
      result.problems = [];
      result.notes.push("manifest_missing: no manifest, so only the formats and the layout were checked");
      await validateStructure(path, result, options);
    }
    return finish();
  }
  result.manifest_backed = true;
  result.step = manifest.manifest.step;
  result.job_id = manifest.manifest.job_id;
  result.run_id = manifest.manifest.run_id;
  result.manifest_digest = manifest.manifest.manifest_digest;
  result.created_at = manifest.manifest.created_at;
  result.write_duration_s = manifest.manifest.write_duration_s;

  const tree = await listTree(path, {
    skipTopLevel: (name) => name === MANIFEST_NAME,
  });
  result.problems.push(...treeProblems(tree));
  const blocked = new Set(tree.oddities.map((o) => o.path));
  const unreadable = new Set(tree.errors.map((e) => e.path));
  const listed = new Set<string>();
  const toRead: ManifestFile[] = [];
  manifest.manifest.files.forEach((file, index) => {
    if (manifest.unsafePaths.has(index)) return;
    listed.add(file.path);
    result.files_checked++;
    const found = tree.files.get(file.path);
    if (!found) {
      if (!isUnder(file.path, blocked) && !isUnder(file.path, unreadable)) {
        result.problems.push({
          reason: "file_missing",
          path: file.path,
          detail: `listed in the manifest (${file.size} bytes) but not on disk`,
        });
      }
      return;
    }
    if (found.size !== file.size) {
      result.problems.push({
        reason: "size_mismatch",
        path: file.path,
        detail: `size is ${found.size} bytes, manifest says ${file.size}`,
      });
      return;
    }
    toRead.push(file);
  });
  for (const found of tree.files.keys()) {
    if (!listed.has(found)) {
      result.problems.push({
        reason: "unexpected_file",
        path: found,
        detail: "on disk but not listed in the manifest",
      });
    }
  }

  if (depth !== "fast") {
    if (
      depth === "sample" && options.sampleBytes !== undefined &&
      options.sampleBytes !== manifest.manifest.hash.sample_bytes
    ) {
      result.notes.push(
        `sampled regions of ${manifest.manifest.hash.sample_bytes} bytes were ` +
          `recorded at commit; checked those instead of ${options.sampleBytes}`,
      );
    }
    toRead.sort((a, b) => b.size - a.size);
    const concurrency = options.concurrency ?? defaultConcurrency();
    const reads = depth === "full" || depth === "deep";
    const bytes = reads ? toRead.reduce((sum, file) => sum + file.size, 0) : 0;
    options.onPlan?.({ path, bytes });
    const checks = await withHasher(
      { files: toRead.length, bytes, concurrency, hasher: reads ? options.hasher : undefined },
      (hasher) =>
        mapConcurrent(
          toRead,
          concurrency,
          (file) =>
            reads
              ? checkWholeFile(path, file, manifest.manifest, options, hasher, depth === "deep")
              : checkSamples(path, file, manifest.manifest),
        ),
    );
    const facts = new Map<string, Readonly<Record<string, FormatFact>>>();
    for (const [i, check] of checks.entries()) {
      result.bytes_checked += check.bytes;
      result.problems.push(...check.problems);
      if (check.note) result.notes.push(check.note);
      if (check.facts) facts.set(toRead[i].path, check.facts);
    }
    if (depth === "deep") {
      const present = manifest.manifest.files.filter((file) => tree.files.has(file.path));
      await checkLayout(path, present.map((f) => ({ path: f.path, size: f.size })), facts, result);
    }
  }
  result.problems.sort(byPath);
  return finish();
}

async function requireFolder(path: string): Promise<void> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) {
      throw new CkptkitError(
        "not_found",
        `Checkpoint folder ${path} does not exist`,
        { path },
      );
    }
    throw new CkptkitError(
      "io_error",
      `Cannot read ${path}: ${(err as Error).message}`,
      {
        path,
        cause: err,
      },
    );
  }
  if (!info.isDirectory) {
    throw new CkptkitError("not_a_checkpoint", `${path} is not a folder`, {
      path,
    });
  }
}

interface ReadManifest {
  manifest: Manifest;
  unsafePaths: Set<number>;
}

async function readManifest(
  dir: string,
  problems: Problem[],
): Promise<ReadManifest | undefined> {
  const manifestPath = `${dir}/${MANIFEST_NAME}`;
  let info: Deno.FileInfo;
  try {
    info = await Deno.lstat(manifestPath);
  } catch (err) {
    problems.push(
      err instanceof Deno.errors.NotFound
        ? {
          reason: "manifest_missing",
          path: MANIFEST_NAME,
          detail: "no manifest; seal or commit the checkpoint first",
        }
        : {
          reason: "io_error",
          path: MANIFEST_NAME,
          detail: (err as Error).message,
        },
    );
    return undefined;
  }
  if (!info.isFile) {
    problems.push({
      reason: info.isSymlink ? "symlink" : "manifest_corrupt",
      path: MANIFEST_NAME,
      detail: info.isSymlink ? "the manifest is a symbolic link; not followed" : "the manifest is not a regular file",
    });
    return undefined;
  }
  let bytes: Uint8Array | undefined;
  try {
    bytes = await readFileLimited(manifestPath, MAX_MANIFEST_BYTES);
  } catch (err) {
    problems.push({
      reason: "io_error",
      path: MANIFEST_NAME,
      detail: (err as Error).message,
    });
    return undefined;
  }
  if (!bytes) {
    problems.push({
      reason: "manifest_corrupt",
      path: MANIFEST_NAME,
      detail: `larger than ${MAX_MANIFEST_BYTES} bytes`,
    });
    return undefined;
  }
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    problems.push({
      reason: "manifest_corrupt",
      path: MANIFEST_NAME,
      detail: "not valid UTF-8",
    });
    return undefined;
  }
  const parsed = await parseManifest(text);
  problems.push(...parsed.problems);
  return parsed.manifest ? { manifest: parsed.manifest, unsafePaths: parsed.unsafePaths } : undefined;
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

/** Deep validation of the layout (DeepSpeed, Trainer, DCP) from the file list, small files and format facts. */
async function checkLayout(
  dir: string,
  files: LayoutFile[],
  facts: ReadonlyMap<string, Readonly<Record<string, FormatFact>>>,
  result: ValidationResult,
): Promise<void> {
  const contents = await readLayoutContents(dir, files);
  const layout = detectLayout({ files, contents, facts, rootName: basename(dir) });
  result.layout = layout.kind;
  for (const finding of layout.findings) {
    result.problems.push({ reason: "format_invalid", path: finding.path, detail: `${layout.kind}: ${finding.detail}` });
  }
  result.notes.push(...layout.notes);
}

/**
 * Deep validation of a folder without a manifest (adopting another tool's checkpoint): every file with a known
 * format is checked, then the layout; nothing is hashed against digests, because there are none.
 */
async function validateStructure(dir: string, result: ValidationResult, options: ValidateOptions): Promise<void> {
  const tree = await listTree(dir);
  result.problems.push(...treeProblems(tree));
  const files = [...tree.files.values()];
  result.files_checked = files.length;
  const facts = new Map<string, Readonly<Record<string, FormatFact>>>();
  const checked = await mapConcurrent(files, options.concurrency ?? defaultConcurrency(), async (file) => {
    try {
      return { file, format: await checkFileFormat(`${dir}/${file.path}`, file.path) };
    } catch (err) {
      return { file, error: err };
    }
  });
  for (const { file, format, error } of checked) {
    if (error) {
      result.problems.push({ reason: "io_error", path: file.path, detail: `cannot read: ${(error as Error).message}` });
      continue;
    }
    if (!format) continue;
    result.bytes_checked += file.size;
    result.problems.push(...formatProblems(file.path, format));
    result.notes.push(...format.notes.map((n) => `${file.path}: ${n}`));
    facts.set(file.path, format.facts);
  }
  await checkLayout(dir, files.map((f) => ({ path: f.path, size: f.size })), facts, result);
  result.problems.sort(byPath);
}

async function checkWholeFile(
  dir: string,
  file: ManifestFile,
  manifest: Manifest,
  options: ValidateOptions,
  hasher: FileHasher,
  deep: boolean,
): Promise<FileCheck> {
  try {
    const found = await hasher.hashFile(`${dir}/${file.path}`, {
      algorithm: manifest.hash.algorithm,
      sampleBytes: 0,
      onProgress: options.onProgress,
      signal: options.signal,
      ...(deep && { formatPath: file.path }),
    });
    if (found.size !== file.size) {
      return { bytes: found.size, problems: [sizeMismatch(file, found.size)] };
    }
    const problems: Problem[] = [];
    if (found.digest !== file.digest) {
      problems.push({
        reason: "hash_mismatch",
        path: file.path,
        detail: `${manifest.hash.algorithm} is ${found.digest}, manifest says ${file.digest}`,
      });
    }
    // Format findings are reported next to a hash mismatch too: they say what the damage is.
    problems.push(...formatProblems(file.path, found.format));
    return {
      bytes: found.size,
      problems,
      note: found.format?.notes.length ? found.format.notes.map((n) => `${file.path}: ${n}`).join("; ") : undefined,
      facts: found.format?.facts,
    };
  } catch (err) {
    return { bytes: 0, problems: [readProblem(file, err)] };
  }
}

async function checkSamples(
  dir: string,
  file: ManifestFile,
  manifest: Manifest,
): Promise<FileCheck> {
  if (file.size > 0 && file.samples.length === 0) {
    return {
      bytes: 0,
      problems: [],
      note: `${file.path}: no sampled digests recorded; only its size was checked`,
    };
  }
  try {
    const found = await hashRegions(
      `${dir}/${file.path}`,
      file.samples,
      manifest.hash.algorithm,
    );
    const problems: Problem[] = [];
    found.forEach((region, i) => {
      if (region.digest !== file.samples[i].digest) {
        problems.push({
          reason: "hash_mismatch",
          path: file.path,
          detail: `sampled region at offset ${region.offset} (${region.length} bytes): ` +
            `${manifest.hash.algorithm} is ${region.digest}, manifest says ${file.samples[i].digest}`,
        });
      }
    });
    return { bytes: found.reduce((sum, r) => sum + r.length, 0), problems };
  } catch (err) {
    return { bytes: 0, problems: [readProblem(file, err)] };
  }
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
