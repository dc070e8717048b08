/**
 * A pool of Deno Workers that hash files in parallel, so validation and
 * commit use every core: SHA-256 of one stream is sequential, but files are
 * independent. Callers submit the largest files first (size-aware
 * scheduling: one huge shard must not start last and finish alone); each
 * idle worker takes the next file. Results and errors are the same as
 * hashing on the main thread.
 *
 * @module
 */

import { mapConcurrent } from "./concurrency.ts";
import { CkptkitError, type ErrorReason } from "../errors.ts";
import {
  type FileDigest,
  type HashAlgorithm,
  hashFile,
  type HashFileOptions,
  hashRegions,
  hashSmallFiles,
  type Region,
  type RegionDigest,
  SMALL_FILE_BYTES,
  type SmallFileJob,
  type SmallFileOptions,
  type SmallFileResult,
} from "./hashing.ts";
import type { BatchReplyItem, WorkerError, WorkerReply, WorkerRequest } from "./hash_messages.ts";

/** What hashes files: the pool, or the main thread. */
export interface FileHasher {
  /** Hashes a whole file (and its sampled regions). */
  hashFile(path: string, options: HashFileOptions): Promise<FileDigest>;
  /** Hashes the given regions of a file. */
  hashRegions(path: string, regions: readonly Region[], algorithm: HashAlgorithm): Promise<RegionDigest[]>;
  /**
   * Hashes a batch of small files with blocking calls (see `hashSmallFiles`); one result per job, in order, each
   * the digests or the typed error. Optional: {@linkcode hashAll} hashes file by file without it.
   */
  hashBatch?(jobs: readonly SmallFileJob[], options: SmallFileOptions): Promise<SmallFileResult[]>;
}

/** Hashing on the calling thread. */
export const mainThreadHasher: FileHasher = {
  hashFile,
  hashRegions,
  hashBatch: (jobs, options) => hashSmallFiles(jobs, options),
};

/** Below this many bytes to hash, starting workers costs more than it saves... */
export const POOL_MIN_BYTES = 64 * 1024 * 1024;
/** ...unless there are at least this many files: then the per-file system calls are worth spreading over cores. */
export const POOL_MIN_FILES = 4096;
/** Most files in one batch: enough to make a worker message's cost vanish, few enough to balance the workers. */
export const BATCH_FILES = 256;
/** Most bytes in one batch. */
export const BATCH_BYTES = 8 * 1024 * 1024;

interface Pending {
  request: WorkerRequest;
  resolve: (reply: WorkerReply) => void;
  reject: (err: Error) => void;
  onProgress?: (bytes: number) => void;
}

/**
 * A fixed-size pool of hashing workers, started lazily and stopped by
 * `close()` (or `using`).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { HashPool } from "./hash_pool.ts";
 * import { hashFile } from "./hashing.ts";
 * const dir = await Deno.makeTempDir();
 * await Deno.writeFile(`${dir}/a.bin`, new Uint8Array(1 << 20).fill(7));
 * using pool = new HashPool(2);
 * const inWorker = await pool.hashFile(`${dir}/a.bin`, { algorithm: "sha256" });
 * assert.deepEqual(inWorker, await hashFile(`${dir}/a.bin`));
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export class HashPool implements FileHasher, Disposable {
  readonly #size: number;
  /** Every live worker with the number of requests it holds. */
  readonly #load = new Map<Worker, number>();
  /** Requests sent, by id, with the worker holding each. */
  readonly #sent = new Map<number, Pending & { worker: Worker }>();
  readonly #queue: Pending[] = [];
  #nextId = 1;
  #closed = false;

  /** A pool of at most `size` workers. */
  constructor(size: number) {
    if (!Number.isSafeInteger(size) || size < 1) {
      throw new CkptkitError(
        "invalid_argument",
        `Cannot start a hash pool as 'size' must be a positive integer: current value is ${size}`,
      );
    }
    this.#size = size;
  }

  /** Hashes a whole file in a worker. */
  async hashFile(path: string, options: HashFileOptions): Promise<FileDigest> {
    const { onProgress, signal: _signal, ...rest } = options;
    const reply = await this.#submit({ id: this.#nextId++, kind: "file", path, options: rest }, onProgress);
    return (reply as { file: FileDigest }).file;
  }

  /** Hashes regions of a file in a worker. */
  async hashRegions(path: string, regions: readonly Region[], algorithm: HashAlgorithm): Promise<RegionDigest[]> {
    const reply = await this.#submit({ id: this.#nextId++, kind: "regions", path, regions: [...regions], algorithm });
    return (reply as { regions: RegionDigest[] }).regions;
  }

  /** Hashes a batch of small files in one worker, with one message each way. */
  async hashBatch(jobs: readonly SmallFileJob[], options: SmallFileOptions): Promise<SmallFileResult[]> {
    const reply = await this.#submit({ id: this.#nextId++, kind: "batch", jobs: [...jobs], options });
    return (reply as { batch: BatchReplyItem[] }).batch.map((item) =>
      "error" in item ? { error: rehydrate(item.error) } : item
    );
  }

  /** Stops every worker; pending tasks fail. */
  close(): void {
    this.#closed = true;
    for (const worker of this.#load.keys()) worker.terminate();
    for (const pending of [...this.#sent.values(), ...this.#queue]) {
      pending.reject(new CkptkitError("io_error", "The hash pool was closed"));
    }
    this.#load.clear();
    this.#sent.clear();
    this.#queue.length = 0;
  }

  /** Same as {@linkcode HashPool.close}. */
  [Symbol.dispose](): void {
    this.close();
  }

  #submit(request: WorkerRequest, onProgress?: (bytes: number) => void): Promise<WorkerReply> {
    if (this.#closed) return Promise.reject(new CkptkitError("io_error", "The hash pool is closed"));
    return new Promise((resolve, reject) => {
      this.#queue.push({ request, resolve, reject, onProgress });
      this.#dispatch();
    });
  }

  /**
   * Sends queued requests: a file to an idle worker, a batch also to a worker holding one request, so that the
   * next batch is already there when it replies (a batch takes about as long as the round trip to the main thread,
   * which would otherwise leave the worker idle between batches).
   */
  #dispatch(): void {
    while (this.#queue.length > 0) {
      const depth = this.#queue[0].request.kind === "batch" ? 2 : 1;
      let worker: Worker | undefined;
      let least = depth;
      for (const [candidate, load] of this.#load) {
        if (load < least) [worker, least] = [candidate, load];
      }
      if (least > 0 && this.#load.size < this.#size) worker = this.#spawn();
      if (!worker) return;
      const pending = this.#queue.shift()!;
      this.#load.set(worker, this.#load.get(worker)! + 1);
      this.#sent.set(pending.request.id, { ...pending, worker });
      worker.postMessage(pending.request);
    }
  }

  #spawn(): Worker {
    const worker = new Worker(new URL("./hash_worker.ts", import.meta.url), { type: "module" });
    this.#load.set(worker, 0);
    worker.onmessage = (event: MessageEvent<WorkerReply>) => {
      const reply = event.data;
      const pending = this.#sent.get(reply.id);
      if (!pending) return;
      if ("progress" in reply) {
        pending.onProgress?.(reply.progress);
        return;
      }
      this.#sent.delete(reply.id);
      this.#load.set(worker, this.#load.get(worker)! - 1);
      if ("error" in reply) pending.reject(rehydrate(reply.error));
      else pending.resolve(reply);
      this.#dispatch();
    };
    worker.onerror = (event) => {
      event.preventDefault();
      this.#load.delete(worker);
      worker.terminate();
      for (const [id, pending] of this.#sent) {
        if (pending.worker !== worker) continue;
        this.#sent.delete(id);
        pending.reject(new CkptkitError("io_error", `A hashing worker failed: ${event.message}`));
      }
      this.#dispatch();
    };
    return worker;
  }
}

function rehydrate(error: WorkerError): Error {
  switch (error.kind) {
    case "CkptkitError":
      return new CkptkitError(error.reason as ErrorReason, error.message, { path: error.path });
    case "NotFound":
      return new Deno.errors.NotFound(error.message);
    case "PermissionDenied":
      return new Deno.errors.PermissionDenied(error.message);
    default:
      return new Error(error.message);
  }
}

/**
 * Runs `fn` with a pool when the work is worth it (more than one file,
 * `concurrency` above 1 and at least {@linkcode POOL_MIN_BYTES} to hash),
 * otherwise with the main thread; the pool is closed afterwards.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { mainThreadHasher, withHasher } from "./hash_pool.ts";
 * const used = await withHasher({ files: 3, bytes: 1024, concurrency: 4 }, async (hasher) => hasher);
 * assert.equal(used, mainThreadHasher);
 * ```
 */
export async function withHasher<T>(
  work: { files: number; bytes: number; concurrency: number; hasher?: FileHasher },
  fn: (hasher: FileHasher) => Promise<T>,
): Promise<T> {
  if (work.hasher) return await fn(work.hasher);
  if (work.files < 2 || work.concurrency < 2 || (work.bytes < POOL_MIN_BYTES && work.files < POOL_MIN_FILES)) {
    return await fn(mainThreadHasher);
  }
  using pool = new HashPool(Math.min(work.concurrency, work.files));
  return await fn(pool);
}

/** One file for {@linkcode hashAll}. */
export interface HashJob {
  /** Absolute path. */
  path: string;
  /** The size expected (listing or manifest): it chooses batch or stream, and another size is not read in a batch. */
  size: number;
  /** The regions to digest instead of those `sampleBytes` picks. */
  regions?: readonly Region[];
  /** Relative path choosing a format checker (deep validation). */
  formatPath?: string;
}

/** Options for {@linkcode hashAll}. */
export interface HashAllOptions extends SmallFileOptions {
  /** Files (or batches) in flight at once. */
  concurrency: number;
  /** Called with the number of bytes read: per chunk for big files, per batch for small ones. */
  onProgress?: (bytes: number) => void;
  /** Stops starting files (and big files mid-read) when aborted. */
  signal?: AbortSignal;
}

/**
 * Hashes many files with `hasher`: files above `SMALL_FILE_BYTES` one by one in streaming reads, in the order
 * given (callers pass the largest first), then the small ones in batches of up to {@linkcode BATCH_FILES}, each
 * batch one worker message whose files are opened, read and closed with blocking calls. Returns one result per
 * job to `onResult` with the job's index, as each file or batch is done (so that 100,000 digests are not held
 * until the last): the digests or the error hashing threw (never thrown). A `FileDigest` whose size is not the
 * job's and whose digest is empty was not read.
 */
export async function hashAll(
  hasher: FileHasher,
  jobs: readonly HashJob[],
  options: HashAllOptions,
  onResult: (index: number, result: SmallFileResult) => void,
): Promise<void> {
  const { concurrency, onProgress, signal, ...batchOptions } = options;
  // A task is one big file's index, or the [start, end) of a run of small files' indexes.
  const tasks: (number | [number, number])[] = [];
  const small: number[] = [];
  for (let i = 0; i < jobs.length; i++) {
    if (jobs[i].size > SMALL_FILE_BYTES || !hasher.hashBatch) tasks.push(i);
    else small.push(i);
  }
  for (let start = 0; start < small.length;) {
    let end = start;
    let bytes = 0;
    while (end < small.length && end - start < BATCH_FILES && (end === start || bytes < BATCH_BYTES)) {
      bytes += jobs[small[end]].size;
      end++;
    }
    tasks.push([start, end]);
    start = end;
  }
  // Twice the files in flight: the pool keeps a second batch waiting at each worker.
  await mapConcurrent(tasks, small.length > 0 ? 2 * concurrency : concurrency, async (task) => {
    signal?.throwIfAborted();
    if (typeof task === "number") {
      const job = jobs[task];
      let result: SmallFileResult;
      try {
        result = {
          file: await hasher.hashFile(job.path, {
            ...batchOptions,
            expectedSize: job.size,
            ...(job.regions && { regions: job.regions }),
            ...(job.formatPath !== undefined && { formatPath: job.formatPath }),
            onProgress,
            signal,
          }),
        };
      } catch (err) {
        result = { error: err };
      }
      onResult(task, result);
      return;
    }
    const indexes = small.slice(task[0], task[1]);
    const batch = await hasher.hashBatch!(indexes.map((i) => jobs[i]), batchOptions);
    let bytes = 0;
    batch.forEach((result, k) => {
      if ("file" in result && result.file.digest) bytes += result.file.size;
      onResult(indexes[k], result);
    });
    if (bytes > 0) onProgress?.(bytes);
  });
}
