/**
 * The data the benchmark measures: checkpoints of random files committed by
 * the real CLI, a tiny checkpoint for start-up, and a root of many small
 * checkpoints written in one process by the library writer.
 *
 * @module
 */

import { createHash, randomFillSync } from "node:crypto";
import { join } from "node:path";
import { ckptkitArgv, interrupted, mustRun, progress } from "./_process.ts";

const MIB = 1024 * 1024;
/** Random data is produced and written in chunks of this size. */
const CHUNK_BYTES = MIB;

/** A committed checkpoint of random files and a SHA256SUMS of them. */
export interface Checkpoint {
  /** Folder holding everything of this fixture. */
  dir: string;
  /** The ckptkit root. */
  root: string;
  /** The committed checkpoint, `<root>/step-1`. */
  step: string;
  /** `SHA256SUMS` naming the committed files by absolute path (outside the checkpoint). */
  sums: string;
  /** Absolute paths of the committed files. */
  files: string[];
  /** Size of each file. */
  fileSize: number;
  /** Sum of the files' sizes. */
  totalBytes: number;
  /** Seconds `ckptkit commit` took to commit it (wall, start-up included). */
  commitSeconds: number;
}

/** Writes all of `bytes` (a single write may be partial). */
async function writeAll(file: Deno.FsFile, bytes: Uint8Array): Promise<void> {
  for (let done = 0; done < bytes.length;) done += await file.write(bytes.subarray(done));
}

/**
 * Writes `size` random bytes to a new file and returns their sha256, hashed
 * on the way so that SHA256SUMS costs no second read. Crypto-random data
 * because any compression or deduplication below the file system would make
 * repeated patterns unrealistically cheap.
 */
async function writeRandomFile(path: string, size: number, chunk: Uint8Array): Promise<string> {
  const hash = createHash("sha256");
  using file = await Deno.open(path, { write: true, createNew: true });
  for (let done = 0; done < size;) {
    interrupted.signal.throwIfAborted();
    const part = chunk.subarray(0, Math.min(chunk.length, size - done));
    randomFillSync(part);
    hash.update(part);
    await writeAll(file, part);
    done += part.length;
  }
  return hash.digest("hex");
}

/**
 * Builds a checkpoint under `<work>/<name>`: `files` random files of
 * `fileSize` bytes in a staging folder inside the root, committed by the real
 * CLI (`ckptkit commit … --step 1`), plus a SHA256SUMS outside the checkpoint
 * (a file inside it would be an "extra file" to validate).
 */
export async function buildCheckpoint(
  work: string,
  name: string,
  files: number,
  fileSize: number,
  prefix = "shard",
): Promise<Checkpoint> {
  const dir = join(work, name);
  const root = join(dir, "root");
  const staging = join(root, ".staging-bench-1");
  const step = join(root, "step-1");
  await Deno.mkdir(staging, { recursive: true });
  const chunk = new Uint8Array(Math.min(CHUNK_BYTES, fileSize));
  const width = String(files - 1).length;
  const names: string[] = [];
  const sums: string[] = [];
  for (let i = 0; i < files; i++) {
    const file = `${prefix}-${String(i).padStart(width, "0")}.bin`;
    const digest = await writeRandomFile(join(staging, file), fileSize, chunk);
    names.push(file);
    sums.push(`${digest}  ${join(step, file)}\n`);
  }
  progress(`committing ${name} (${files} × ${formatBytes(fileSize)}) with ckptkit commit`);
  const started = performance.now();
  await mustRun(ckptkitArgv()[0], [...ckptkitArgv().slice(1), "commit", staging, "--root", root, "--step", "1"]);
  const commitSeconds = (performance.now() - started) / 1000;
  const sumsPath = join(dir, "SHA256SUMS");
  await Deno.writeTextFile(sumsPath, sums.join(""));
  return {
    dir,
    root,
    step,
    sums: sumsPath,
    files: names.map((file) => join(step, file)),
    fileSize,
    totalBytes: files * fileSize,
    commitSeconds,
  };
}

/** A root of many small checkpoints. */
export interface ScanRoot {
  root: string;
  checkpoints: number;
  filesPerCheckpoint: number;
  fileBytes: number;
  /** Seconds the writer took to write and commit all of them. */
  seconds: number;
}

/**
 * Writes `checkpoints` checkpoints of `filesPer` files of `fileBytes` random
 * bytes each into a new root with the library writer (`openCheckpointWriter`
 * from mod.ts), in this process, with `sampleBytes: 0`. Files of one
 * checkpoint are written concurrently; checkpoints one after the other (each
 * commit takes the root lock).
 */
export async function buildScanRoot(
  work: string,
  checkpoints: number,
  filesPer: number,
  fileBytes: number,
): Promise<ScanRoot> {
  const { openCheckpointWriter } = await import("../mod.ts");
  const root = join(work, "scan", "root");
  await Deno.mkdir(root, { recursive: true });
  const started = performance.now();
  for (let step = 1; step <= checkpoints; step++) {
    interrupted.signal.throwIfAborted();
    const writer = await openCheckpointWriter(root, { step, jobId: "bench", runId: "scan", sampleBytes: 0 });
    await Promise.all(
      Array.from({ length: filesPer }, (_, i) => {
        const data = new Uint8Array(fileBytes);
        randomFillSync(data);
        return writer.writeFile(`part-${String(i).padStart(2, "0")}.bin`, data);
      }),
    );
    await writer.commit();
    if (step % 250 === 0) progress(`  ${step}/${checkpoints} checkpoints written`);
  }
  return {
    root,
    checkpoints,
    filesPerCheckpoint: filesPer,
    fileBytes,
    seconds: (performance.now() - started) / 1000,
  };
}

/** `65536` → `64 KiB`, `536870912` → `512 MiB`; other sizes in bytes. */
export function formatBytes(bytes: number): string {
  if (bytes >= 1024 * MIB && bytes % (1024 * MIB) === 0) return `${bytes / (1024 * MIB)} GiB`;
  if (bytes >= MIB && bytes % MIB === 0) return `${bytes / MIB} MiB`;
  if (bytes >= 1024 && bytes % 1024 === 0) return `${bytes / 1024} KiB`;
  return `${bytes} B`;
}
