/**
 * Hashing every file of a folder for a manifest, shared by `commit` and
 * `seal`: lists the tree (refusing symlinks and special files), hashes the
 * files largest first in parallel, and fsyncs each one as it is read so that
 * every byte is read once.
 *
 * @module
 */

import { defaultConcurrency } from "../fs/concurrency.ts";
import { removeLeftoverTemps } from "../fs/durable.ts";
import { asCkptkitError, CkptkitError } from "../errors.ts";
import { hashAll, withHasher } from "../fs/hash_pool.ts";
import { DEFAULT_SAMPLE_BYTES, HASH_ALGORITHMS, type HashAlgorithm, type SmallFileResult } from "../fs/hashing.ts";
import { MANIFEST_NAME, MANIFEST_TEMP_PREFIX } from "./layout.ts";
import { type ManifestFile, parseManifest, readManifestFile } from "./manifest.ts";
import { exists } from "./publish.ts";
import { unsafePathReason } from "../fs/paths.ts";
import { listTree, oddityError, type TreeFile } from "../fs/tree.ts";

/** How files are hashed for a manifest. */
export interface HashingOptions {
  /** Digest algorithm (default `sha256`). */
  algorithm?: HashAlgorithm;
  /** Size of each sampled region recorded (default 65536; 0 records none). */
  sampleBytes?: number;
  /** Files hashed at once (default: the number of cores). */
  concurrency?: number;
  /** Called with the number of bytes read after each chunk. */
  onProgress?: (bytes: number) => void;
  /** Called once before hashing, with the folder and the bytes it will read. */
  onPlan?: (plan: { path: string; bytes: number }) => void;
}

/** The files of a folder, hashed. */
export interface HashedFolder {
  /** Manifest entries of every file. */
  files: ManifestFile[];
  /** Sub-folders, parents before children. */
  dirs: string[];
  /** Seconds spent listing and hashing. */
  durationS: number;
}

/**
 * Checks hashing options before any work, with messages that name the option
 * and its value.
 */
export function checkHashingOptions(options: HashingOptions): void {
  const { algorithm, sampleBytes, concurrency } = options;
  if (algorithm !== undefined && !HASH_ALGORITHMS.includes(algorithm)) {
    throw new CkptkitError(
      "invalid_argument",
      `Cannot hash as 'algorithm' must be one of ${HASH_ALGORITHMS.join(", ")}: current value is ${algorithm}`,
    );
  }
  if (
    sampleBytes !== undefined &&
    (!Number.isSafeInteger(sampleBytes) || sampleBytes < 0)
  ) {
    throw new CkptkitError(
      "invalid_argument",
      `Cannot hash as 'sampleBytes' must be a non-negative integer: current value is ${sampleBytes}`,
    );
  }
  if (
    concurrency !== undefined &&
    (!Number.isSafeInteger(concurrency) || concurrency < 1)
  ) {
    throw new CkptkitError(
      "invalid_argument",
      `Cannot hash as 'concurrency' must be a positive integer: current value is ${concurrency}`,
    );
  }
}

/**
 * Lists and hashes every file of `dir` except the manifest. Throws an
 * `unsupported_entry` {@linkcode CkptkitError} on a symlink or special file,
 * and `staging_invalid` when the folder holds no file.
 *
 * Requires `--allow-read`.
 */
export async function hashFolder(
  dir: string,
  options: HashingOptions = {},
): Promise<HashedFolder> {
  const started = performance.now();
  const tree = await listTree(dir, { skipTopLevel: (name) => name === MANIFEST_NAME, probeMounts: true });
  if (tree.errors.length > 0) {
    const [first] = tree.errors;
    throw new CkptkitError(
      "io_error",
      `Cannot read ${first.path ? `${dir}/${first.path}` : dir}: ${first.message}`,
      { path: dir },
    );
  }
  if (tree.oddities.length > 0) throw oddityError(dir, tree.oddities[0]);
  refuseReservedNames(dir, [...tree.files.keys(), ...tree.dirs]);
  for (const path of tree.files.keys()) {
    const unsafe = unsafePathReason(path);
    if (unsafe) {
      throw new CkptkitError("unsafe_path", `${dir}/${path}: ${unsafe}`, {
        path: `${dir}/${path}`,
      });
    }
  }
  if (tree.files.size === 0) {
    throw new CkptkitError(
      "staging_invalid",
      `${dir} holds no files to commit`,
      { path: dir },
    );
  }
  const hashed = await hashTreeFiles(dir, [...tree.files.values()], options);
  return {
    files: hashed.map(({ mtimeMs: _mtime, ...file }) => file),
    dirs: tree.dirs,
    durationS: (performance.now() - started) / 1000,
  };
}

/**
 * Refuses (`unsafe_path`) a top-level entry named like ckptkit's temporary
 * manifest that {@linkcode removeManifestLeftovers} did not remove as its
 * own: a validator or a later retry would take it for one.
 */
export function refuseReservedNames(dir: string, paths: Iterable<string>): void {
  for (const path of paths) {
    if (path.startsWith(MANIFEST_TEMP_PREFIX)) {
      throw new CkptkitError(
        "unsafe_path",
        `${dir}/${path}: the name is reserved for ckptkit's temporary manifest; rename it`,
        { path: `${dir}/${path}` },
      );
    }
  }
}

/**
 * Removes the temporary manifests a killed commit or seal left at the top of
 * `dir`, so that a retry never records one in the checkpoint. Returns their
 * names. Anything else carrying the prefix is left for
 * {@linkcode refuseReservedNames}.
 *
 * Requires `--allow-read` and `--allow-write`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { removeManifestLeftovers } from "./seal_files.ts";
 * const dir = await Deno.makeTempDir();
 * await Deno.writeTextFile(`${dir}/.ckptkit.manifest.json.tmp-0a1b2c3d`, "{");
 * assert.deepEqual(await removeManifestLeftovers(dir), [".ckptkit.manifest.json.tmp-0a1b2c3d"]);
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function removeManifestLeftovers(dir: string): Promise<string[]> {
  try {
    return await removeLeftoverTemps(dir, MANIFEST_NAME);
  } catch (err) {
    throw asCkptkitError(err, `Removing the temporary manifests a killed run left in ${dir}`, dir);
  }
}

/**
 * Refuses (`manifest_exists`) a folder about to be committed that already
 * holds a `ckptkit.manifest.json`, unless it is the intact manifest of the
 * same step that an earlier, interrupted commit of this folder wrote (it is
 * then rewritten from the files as they are now). A user's own file of that
 * name is never overwritten.
 *
 * Requires `--allow-read`.
 */
export async function refuseForeignManifest(dir: string, step: number): Promise<void> {
  if (!(await exists(`${dir}/${MANIFEST_NAME}`))) return;
  const read = await readManifestFile(dir);
  const parsed = "problem" in read ? undefined : await parseManifest(read.text);
  const ours = parsed?.manifest !== undefined && parsed.problems.length === 0 && parsed.manifest.step === step;
  if (!ours) {
    throw new CkptkitError(
      "manifest_exists",
      `${dir}/${MANIFEST_NAME} already exists and is not the manifest of an interrupted commit of step ${step}` +
        `; ckptkit never overwrites it: move it away (the name is reserved for the manifest)`,
      { path: `${dir}/${MANIFEST_NAME}` },
    );
  }
}

/** A manifest entry with the mtime its file had while it was read (unchanged from open to end). */
export interface HashedFile extends ManifestFile {
  /** Modification time in ms since the epoch. */
  mtimeMs: number;
}

/**
 * Hashes the listed files of `dir` (largest first, in parallel, each fsynced
 * as it is read) into manifest entries. Throws `file_changed` when a file's
 * size differs from its listing or it disappears.
 *
 * Requires `--allow-read`.
 */
export async function hashTreeFiles(
  dir: string,
  listed: readonly TreeFile[],
  options: HashingOptions = {},
): Promise<HashedFile[]> {
  const found = [...listed].sort((a, b) => b.size - a.size);
  const algorithm = options.algorithm ?? "sha256";
  const sampleBytes = options.sampleBytes ?? DEFAULT_SAMPLE_BYTES;
  const concurrency = options.concurrency ?? defaultConcurrency();
  const bytes = found.reduce((sum, file) => sum + file.size, 0);
  options.onPlan?.({ path: dir, bytes });
  const hashed: HashedFile[] = new Array(found.length);
  let failure: { index: number; error: CkptkitError } | undefined;
  await withHasher(
    { files: found.length, bytes, concurrency },
    (hasher) =>
      hashAll(hasher, found.map((file) => ({ path: `${dir}/${file.path}`, size: file.size })), {
        algorithm,
        sampleBytes,
        // fsync through the descriptor that read the file (in the worker, for batches): no second open, no round trip.
        sync: true,
        concurrency,
        onProgress: options.onProgress,
      }, (index, result) => {
        try {
          hashed[index] = hashedFile(dir, found[index], result);
        } catch (err) {
          // The first failure in the order files are hashed in (largest first), as when they were hashed one by one.
          if (!failure || index < failure.index) failure = { index, error: err as CkptkitError };
        }
      }),
  );
  if (failure) throw failure.error;
  return hashed;
}

function hashedFile(dir: string, file: TreeFile, result: SmallFileResult): HashedFile {
  const path = `${dir}/${file.path}`;
  if ("error" in result) {
    const err = result.error;
    if (err instanceof Deno.errors.NotFound) {
      throw new CkptkitError("file_changed", `${path} disappeared while it was hashed`, { path, cause: err });
    }
    throw asCkptkitError(err, `Hashing ${path}`, path);
  }
  const digest = result.file;
  if (digest.size !== file.size) {
    throw new CkptkitError(
      "file_changed",
      `${path} changed while it was committed: ${file.size} bytes listed, ${digest.size} read`,
      { path },
    );
  }
  return {
    path: file.path,
    size: digest.size,
    digest: digest.digest,
    samples: digest.samples,
    mtimeMs: digest.mtimeMs,
  };
}
