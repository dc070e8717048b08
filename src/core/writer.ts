/**
 * The library writer: opens a staging folder inside the root, takes files as
 * bytes or streams (hashing while writing, so no second read of the data),
 * and commits with the crash-safe protocol, or aborts.
 *
 * @module
 */

import { CkptkitError } from "../errors.ts";
import { createHasher, DEFAULT_SAMPLE_BYTES, hashRegions, sampleRegions } from "../fs/hashing.ts";
import { checkpointName, MANIFEST_NAME, MANIFEST_TEMP_PREFIX, stagingName } from "./layout.ts";
import { createManifest, type ManifestFile } from "./manifest.ts";
import { parentOf, unsafePathReason } from "../fs/paths.ts";
import { exists, type FaultHook, publishCheckpoint } from "./publish.ts";
import { checkHashingOptions, type HashingOptions, removeManifestLeftovers } from "./seal_files.ts";
import { removeTreeOnDevice } from "../fs/remove.ts";
import { listTree, oddityError } from "../fs/tree.ts";
import { checkIdentity, type CheckpointIdentity, finishCommit, prepareRoot } from "./commit.ts";
import type { CommitResult } from "./record.ts";
import { hostName, VERSION } from "../version.ts";

/** Options for {@linkcode openCheckpointWriter}. */
export interface WriterOptions
  extends CheckpointIdentity, Omit<HashingOptions, "concurrency" | "onProgress" | "onPlan"> {
  /** How long `commit()` waits for the root lock, in ms (default 60 000). */
  lockTimeoutMs?: number;
  /** Fault injection for crash tests. */
  faultHook?: FaultHook;
}

/** What {@linkcode CheckpointWriter.writeFile} accepts. */
export type FileData =
  | Uint8Array
  | string
  | ReadableStream<Uint8Array>
  | AsyncIterable<Uint8Array>
  | Iterable<Uint8Array>;

/**
 * Writes one checkpoint. Files go into a staging folder inside the root that
 * is never read as a checkpoint; `commit()` makes them visible atomically as
 * `step-N`, `abort()` removes them.
 *
 * @example
 * ```ts
 * import { openCheckpointWriter } from "./writer.ts";
 * const root = await Deno.makeTempDir();
 * await using writer = await openCheckpointWriter(root, { step: 1 });
 * await writer.writeFile("model.pt", new Uint8Array(16));
 * await writer.commit(); // without it, leaving the block aborts and removes the staging folder
 * ```
 */
export class CheckpointWriter {
  readonly #root: string;
  readonly #staging: string;
  readonly #options: WriterOptions;
  readonly #files = new Map<string, ManifestFile>();
  readonly #dirs = new Set<string>();
  readonly #pending = new Set<string>();
  readonly #started = performance.now();
  #writeSeconds = 0;
  #state: "open" | "committing" | "committed" | "aborted" = "open";

  /** Use {@linkcode openCheckpointWriter}. */
  constructor(root: string, staging: string, options: WriterOptions) {
    this.#root = root;
    this.#staging = staging;
    this.#options = options;
  }

  /** The staging folder being written. */
  get stagingPath(): string {
    return `${this.#root}/${this.#staging}`;
  }

  /** The path the checkpoint will have once committed. */
  get finalPath(): string {
    return `${this.#root}/${checkpointName(this.#options.step)}`;
  }

  /**
   * Writes one file of the checkpoint at `path` (relative, `/`-separated),
   * hashing it as it is written, then fsyncs it. Throws `unsafe_path` for an
   * absolute, `..` or duplicate path.
   */
  async writeFile(path: string, data: FileData): Promise<ManifestFile> {
    this.#requireOpen();
    const unsafe = unsafePathReason(path) ??
      (path === MANIFEST_NAME || path.startsWith(MANIFEST_TEMP_PREFIX)
        ? "the manifest's name is reserved"
        : undefined) ??
      (this.#files.has(path) || this.#pending.has(path) ? "already written" : undefined);
    if (unsafe) {
      throw new CkptkitError(
        "unsafe_path",
        `Cannot write ${JSON.stringify(path)}: ${unsafe}`,
        { path },
      );
    }
    this.#pending.add(path);
    const began = performance.now();
    try {
      await this.#makeParents(path);
      const target = `${this.stagingPath}/${path}`;
      const algorithm = this.#options.algorithm ?? "sha256";
      const hasher = await createHasher(algorithm);
      let size = 0;
      const file = await Deno.open(target, { write: true, createNew: true });
      try {
        for await (const chunk of chunksOf(data)) {
          let written = 0;
          while (written < chunk.length) {
            written += await file.write(chunk.subarray(written));
          }
          hasher.update(chunk);
          size += chunk.length;
        }
        await file.sync();
      } finally {
        file.close();
      }
      // Region offsets depend on the final size, unknown while streaming; the
      // regions are a few small reads from the page cache.
      const regions = sampleRegions(
        size,
        this.#options.sampleBytes ?? DEFAULT_SAMPLE_BYTES,
      );
      const samples = await hashRegions(target, regions, algorithm);
      const entry: ManifestFile = {
        path,
        size,
        digest: hasher.digest(),
        samples,
      };
      this.#files.set(path, entry);
      return entry;
    } catch (err) {
      if (err instanceof CkptkitError) throw err;
      throw new CkptkitError(
        /os error (28|122)\b/.test(String(err)) ? "no_space" : "io_error",
        `Writing ${path} into ${this.stagingPath} failed: ${(err as Error).message}`,
        { path, cause: err },
      );
    } finally {
      this.#pending.delete(path);
      this.#writeSeconds += (performance.now() - began) / 1000;
    }
  }

  /**
   * Seals and publishes the checkpoint: manifest, fsync of every folder,
   * atomic rename to `step-N`, fsync of the root, `latest`. On failure nothing
   * is visible and the staging folder is kept for `abort()` or gc.
   */
  async commit(): Promise<CommitResult> {
    this.#requireOpen();
    if (this.#pending.size > 0) {
      throw new CkptkitError(
        "invalid_argument",
        "Cannot commit while files are still being written",
      );
    }
    if (this.#files.size === 0) {
      throw new CkptkitError(
        "staging_invalid",
        "Cannot commit a checkpoint without files",
      );
    }
    this.#state = "committing";
    try {
      await this.#checkStaging();
      const { step } = this.#options;
      const manifest = await createManifest({
        job_id: this.#options.jobId ?? null,
        run_id: this.#options.runId ?? null,
        step,
        created_at: new Date().toISOString(),
        write_duration_s: Math.round(this.#writeSeconds * 1e6) / 1e6,
        writer: { host: hostName(), ckptkit_version: VERSION },
        hash: {
          algorithm: this.#options.algorithm ?? "sha256",
          sample_bytes: this.#options.sampleBytes ?? DEFAULT_SAMPLE_BYTES,
        },
        files: [...this.#files.values()],
        metadata: this.#options.metadata ?? {},
      });
      const outcome = await publishCheckpoint({
        root: this.#root,
        stagingDir: this.stagingPath,
        stagingDirs: [...this.#dirs].sort((a, b) => a.split("/").length - b.split("/").length),
        name: checkpointName(step),
        manifest,
        lockTimeoutMs: this.#options.lockTimeoutMs,
        faultHook: this.#options.faultHook,
      });
      this.#state = "committed";
      return await finishCommit(this.#root, manifest, outcome, this.#started);
    } catch (err) {
      this.#state = "open";
      throw err;
    }
  }

  /**
   * Removes the staging folder; nothing becomes visible. Safe to call twice.
   * Never removes across a mount inside it (throws `mount_point`, having
   * removed everything else).
   */
  async abort(): Promise<void> {
    if (this.#state === "committed" || this.#state === "aborted") return;
    this.#state = "aborted";
    await removeTreeOnDevice(this.stagingPath);
  }

  /** Aborts unless committed, so `await using` never leaves staging behind. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.abort();
  }

  /**
   * The staging folder must hold exactly what this writer wrote: a mount or a
   * file put there by someone else would be renamed into the checkpoint.
   */
  async #checkStaging(): Promise<void> {
    // A commit() that failed after writing the manifest may be retried; a killed one leaves nothing to retry.
    await removeManifestLeftovers(this.stagingPath);
    const tree = await listTree(this.stagingPath, {
      skipTopLevel: (name) => name === MANIFEST_NAME,
      probeMounts: true,
    });
    if (tree.oddities.length > 0) throw oddityError(this.stagingPath, tree.oddities[0]);
    const foreign = [...tree.files.keys()].find((path) => !this.#files.has(path)) ?? tree.errors[0]?.path;
    if (foreign !== undefined) {
      throw new CkptkitError(
        "staging_invalid",
        `${this.stagingPath}/${foreign} was not written by this writer (or cannot be read); ` +
          `nothing but the writer's files may be committed`,
        { path: `${this.stagingPath}/${foreign}` },
      );
    }
  }

  #requireOpen(): void {
    if (this.#state !== "open") {
      throw new CkptkitError(
        "invalid_argument",
        `The writer of ${this.finalPath} is ${this.#state}`,
      );
    }
  }

  async #makeParents(path: string): Promise<void> {
    const parents: string[] = [];
    for (let dir = parentOf(path); dir; dir = parentOf(dir)) {
      parents.unshift(dir);
    }
    for (const dir of parents) {
      if (this.#dirs.has(dir)) continue;
      await Deno.mkdir(`${this.stagingPath}/${dir}`).catch((err) => {
        if (!(err instanceof Deno.errors.AlreadyExists)) throw err;
      });
      this.#dirs.add(dir);
    }
  }
}

/**
 * Opens a writer for the checkpoint of `options.step` in `root` (created when
 * missing). Throws `checkpoint_exists` at once when that step is committed, so
 * no data is written for nothing.
 *
 * Requires `--allow-read`, `--allow-write` and `--allow-sys`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { openCheckpointWriter } from "./writer.ts";
 * const root = await Deno.makeTempDir();
 * const writer = await openCheckpointWriter(root, { step: 10, jobId: "demo" });
 * await writer.writeFile("model.pt", new Uint8Array(1024));
 * await writer.writeFile("meta/trainer_state.json", '{"step":10}');
 * const result = await writer.commit();
 * assert.ok(result.path.endsWith("/step-10"));
 * await Deno.remove(root, { recursive: true });
 * ```
 */
export async function openCheckpointWriter(
  root: string,
  options: WriterOptions,
): Promise<CheckpointWriter> {
  checkIdentity(options);
  checkHashingOptions(options);
  const realRoot = await prepareRoot(root);
  const finalPath = `${realRoot}/${checkpointName(options.step)}`;
  if (await exists(finalPath)) {
    throw new CkptkitError(
      "checkpoint_exists",
      `${finalPath} already exists; a committed checkpoint is never replaced`,
      { path: finalPath },
    );
  }
  const staging = stagingName(options.step);
  await Deno.mkdir(`${realRoot}/${staging}`);
  return new CheckpointWriter(realRoot, staging, options);
}

async function* chunksOf(data: FileData): AsyncGenerator<Uint8Array> {
  if (typeof data === "string") {
    yield new TextEncoder().encode(data);
  } else if (data instanceof Uint8Array) {
    yield data;
  } else if (data instanceof ReadableStream) {
    const reader = data.getReader();
    try {
      while (true) {
        const { done, value } = await reader.read();
        if (done) return;
        yield value;
      }
    } finally {
      reader.releaseLock();
    }
  } else {
    yield* data as AsyncIterable<Uint8Array>;
  }
}
