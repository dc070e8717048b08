/**
 * In-process probe of ckptkit's hash pool start-up: how long the first file
 * hashed through a fresh `HashPool` of one worker takes (the worker loads its
 * modules first) against the second (worker warm), on a tiny file, and how
 * long the prototype's worker (`_proto_worker.ts`, which imports only
 * node:crypto) takes to answer its first file. Prints one JSON object of
 * milliseconds (medians of `repeats` fresh workers).
 *
 * ```sh
 * deno run --allow-read --allow-write bench/_probe_worker.ts [repeats]
 * ```
 *
 * @module
 */

import { HashPool } from "../src/fs/hash_pool.ts";
import { median } from "./_timing.ts";

/** What the probe prints. */
export interface WorkerProbe {
  /** First hash through a new pool: worker start-up plus one tiny hash. */
  firstMs: number;
  /** Second hash through the same pool. */
  warmMs: number;
  /** The difference: what starting one worker costs before it hashes anything. */
  startMs: number;
  /** First file hashed by a fresh prototype worker (node:crypto only): start-up plus one tiny hash. */
  protoFirstMs: number;
}

/** Hashes `path` once in a fresh prototype worker; returns the milliseconds to the answer. */
async function protoWorkerOnce(path: string): Promise<number> {
  const started = performance.now();
  const worker = new Worker(new URL("./_proto_worker.ts", import.meta.url), { type: "module" });
  try {
    await new Promise((resolve, reject) => {
      worker.onmessage = resolve;
      worker.onerror = (event) => {
        event.preventDefault();
        reject(new Error(event.message));
      };
      worker.postMessage({ path, chunkBytes: 65536 });
    });
    return performance.now() - started;
  } finally {
    worker.terminate();
  }
}

/** Measures `repeats` fresh pools of one worker. */
export async function probeWorker(repeats: number): Promise<WorkerProbe> {
  const dir = await Deno.makeTempDir({ prefix: "ckptkit-bench-probe-" });
  try {
    const path = `${dir}/tiny.bin`;
    await Deno.writeFile(path, new Uint8Array(4096).fill(1));
    const first: number[] = [];
    const warm: number[] = [];
    const proto: number[] = [];
    for (let i = 0; i < repeats; i++) {
      proto.push(await protoWorkerOnce(path));
      using pool = new HashPool(1);
      let started = performance.now();
      await pool.hashFile(path, { algorithm: "sha256", sampleBytes: 0 });
      first.push(performance.now() - started);
      started = performance.now();
      await pool.hashFile(path, { algorithm: "sha256", sampleBytes: 0 });
      warm.push(performance.now() - started);
    }
    const firstMs = median(first);
    const warmMs = median(warm);
    return { firstMs, warmMs, startMs: firstMs - warmMs, protoFirstMs: median(proto) };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

if (import.meta.main) {
  console.log(JSON.stringify(await probeWorker(Number(Deno.args[0] ?? 5))));
}
