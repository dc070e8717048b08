/**
 * A prototype of the proposed hashing path, for the benchmark only (it is not
 * ckptkit and checks only digests): hashes every file listed in a
 * checkpoint's `ckptkit.manifest.json` with `--jobs` workers, each reading
 * with `readSync` into a `--chunk`-byte buffer on its own thread (ckptkit
 * today awaits `FsFile.read` into a 2 MiB buffer), and compares the sha256
 * digests with the manifest. A single file is hashed on the main thread, as
 * ckptkit does. Exit 0 when every digest matches, 1 otherwise.
 *
 * `--load-cli` first imports `src/cli/program.ts`, so that the prototype pays
 * the same start-up as the CLI and only the hashing loop differs.
 *
 * ```sh
 * deno run --allow-read bench/proto_validate.ts --jobs 2 --chunk 262144 /tmp/ckpts/step-1
 * ```
 *
 * @module
 */

import { createHash } from "node:crypto";
import { parseArgs } from "node:util";

/** Default read size: fits the L2 cache, so bytes are hashed while still cached. */
export const PROTO_CHUNK_BYTES = 256 * 1024;

/** Hex sha256 of a file, read synchronously `chunkBytes` at a time. */
export function hashFileSync(path: string, chunkBytes: number = PROTO_CHUNK_BYTES): string {
  using file = Deno.openSync(path, { read: true });
  const buffer = new Uint8Array(chunkBytes);
  const hash = createHash("sha256");
  for (let n = file.readSync(buffer); n !== null; n = file.readSync(buffer)) hash.update(buffer.subarray(0, n));
  return hash.digest("hex");
}

/** The manifest fields the prototype needs. */
interface ManifestEntry {
  path: string;
  size: number;
  digest: string;
}

/** Hashes `paths` with at most `jobs` workers, largest first; returns the digests by path. */
async function hashInWorkers(paths: string[], jobs: number, chunkBytes: number): Promise<Map<string, string>> {
  const digests = new Map<string, string>();
  const queue = [...paths];
  const run = (worker: Worker) =>
    new Promise<void>((resolve, reject) => {
      const next = () => {
        const path = queue.shift();
        if (path === undefined) return resolve();
        worker.postMessage({ path, chunkBytes });
      };
      worker.onmessage = (event: MessageEvent<{ path: string; digest?: string; error?: string }>) => {
        if (event.data.error !== undefined) return reject(new Error(`${event.data.path}: ${event.data.error}`));
        digests.set(event.data.path, event.data.digest!);
        next();
      };
      worker.onerror = (event) => {
        event.preventDefault();
        reject(new Error(event.message));
      };
      next();
    });
  const workers = Array.from(
    { length: Math.min(jobs, paths.length) },
    () => new Worker(new URL("./_proto_worker.ts", import.meta.url), { type: "module" }),
  );
  try {
    await Promise.all(workers.map(run));
  } finally {
    for (const worker of workers) worker.terminate();
  }
  return digests;
}

async function main(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: { jobs: { type: "string" }, chunk: { type: "string" }, "load-cli": { type: "boolean", default: false } },
  });
  if (values["load-cli"]) await import("../src/cli/program.ts");
  const [dir] = positionals;
  if (!dir) {
    console.error("usage: proto_validate.ts [--jobs N] [--chunk BYTES] [--load-cli] <checkpoint-dir>");
    return 2;
  }
  const jobs = Number(values.jobs ?? navigator.hardwareConcurrency);
  const chunkBytes = Number(values.chunk ?? PROTO_CHUNK_BYTES);
  const manifest = JSON.parse(await Deno.readTextFile(`${dir}/ckptkit.manifest.json`)) as { files: ManifestEntry[] };
  const files = [...manifest.files].sort((a, b) => b.size - a.size);
  const paths = files.map((file) => `${dir}/${file.path}`);
  const digests = files.length > 1 && jobs > 1
    ? await hashInWorkers(paths, jobs, chunkBytes)
    : new Map(paths.map((path) => [path, hashFileSync(path, chunkBytes)]));
  const bad = files.filter((file) => digests.get(`${dir}/${file.path}`) !== file.digest);
  for (const file of bad) console.log(`MISMATCH ${file.path}`);
  console.log(`${files.length - bad.length}/${files.length} files match`);
  return bad.length === 0 ? 0 : 1;
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
