/**
 * Hashing every file of a folder for a manifest, shared by `commit` and
 * `seal`: lists the tree (refusing symlinks and special files), hashes the
 * files largest first in parallel, and fsyncs each one as it is read so that
 * every byte is read once.
 *
 * @module
 */

import { defaultConcurrency, mapConcurrent } from "./concurrency.ts";
import { asCkptkitError, CkptkitError } from "./errors.ts";
import { withHasher } from "./hash_pool.ts";
import { DEFAULT_SAMPLE_BYTES, HASH_ALGORITHMS, type HashAlgorithm } from "./hashing.ts";
import { MANIFEST_NAME, MANIFEST_TEMP_PREFIX } from "./layout.ts";
import type { ManifestFile } from "./manifest.ts";
import { unsafePathReason } from "./paths.ts";
import { listTree, type TreeFile } from "./tree.ts";

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
  const tree = await listTree(dir, {
    skipTopLevel: (name) => name === MANIFEST_NAME || name.startsWith(MANIFEST_TEMP_PREFIX),
  });
  if (tree.errors.length > 0) {
    const [first] = tree.errors;
    throw new CkptkitError(
      "io_error",
      `Cannot read ${first.path ? `${dir}/${first.path}` : dir}: ${first.message}`,
      { path: dir },
    );
  }
  if (tree.oddities.length > 0) {
    const [first] = tree.oddities;
    throw new CkptkitError(
      "unsupported_entry",
      `${dir}/${first.path} is ${
        first.kind === "symlink" ? `a symbolic link to ${first.target}` : "not a regular file"
      }; checkpoints may hold only regular files and folders`,
      { path: `${dir}/${first.path}` },
    );
  }
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
  return await withHasher({ files: found.length, bytes, concurrency }, (hasher) =>
    mapConcurrent(
      found,
      concurrency,
      async (file): Promise<HashedFile> => {
        const path = `${dir}/${file.path}`;
        try {
          const digest = await hasher.hashFile(path, {
            algorithm,
            sampleBytes,
            sync: true,
            onProgress: options.onProgress,
          });
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
        } catch (err) {
          if (err instanceof Deno.errors.NotFound) {
            throw new CkptkitError(
              "file_changed",
              `${path} disappeared while it was hashed`,
              { path, cause: err },
            );
          }
          throw asCkptkitError(err, `Hashing ${path}`, path);
        }
      },
    ));
}
