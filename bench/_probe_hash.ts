/**
 * In-process probe of one hashing stream, without start-up or workers: how
 * fast ckptkit's `hashFile` hashes one cached file, how fast the same read
 * loop goes without hashing, how fast node:crypto's sha256 goes without
 * reading, and the prototype's synchronous read loop. Prints one JSON object
 * of MB/s (10⁶ bytes per second, median of `repeats` interleaved passes).
 *
 * ```sh
 * deno run --allow-read --allow-env bench/_probe_hash.ts <file> [repeats]
 * ```
 *
 * @module
 */

import { createHash } from "node:crypto";
import { hashFile, READ_CHUNK_BYTES } from "../src/fs/hashing.ts";
import { hashFileSync, PROTO_CHUNK_BYTES } from "./proto_validate.ts";
import { median } from "./_timing.ts";

/** What the probe prints. */
export interface HashProbe {
  /** Bytes of the file hashed. */
  bytes: number;
  /** ckptkit's read size (`READ_CHUNK_BYTES`). */
  chunkBytes: number;
  /** The prototype's read size. */
  protoChunkBytes: number;
  /** `hashFile(path, { sampleBytes: 0 })` from src/fs/hashing.ts: awaited reads + sha256. */
  hashFile: number;
  /** The same awaited `FsFile.read` loop, no hashing. */
  readAsync: number;
  /** sha256 (node:crypto) of the same number of bytes from one in-memory buffer, no reading. */
  sha256: number;
  /** `readSync` loop with the prototype's buffer, no hashing. */
  readSync: number;
  /** The prototype: `readSync` into the small buffer + sha256 (`hashFileSync`). */
  proto: number;
}

async function readAsync(path: string, chunkBytes: number): Promise<void> {
  using file = await Deno.open(path, { read: true });
  const buffer = new Uint8Array(chunkBytes);
  while ((await file.read(buffer)) !== null) {
    // Only the reads are measured.
  }
}

function readSync(path: string, chunkBytes: number): void {
  using file = Deno.openSync(path, { read: true });
  const buffer = new Uint8Array(chunkBytes);
  while (file.readSync(buffer) !== null) {
    // Only the reads are measured.
  }
}

function sha256Only(bytes: number, chunkBytes: number): void {
  const buffer = new Uint8Array(chunkBytes).fill(7);
  const hash = createHash("sha256");
  for (let done = 0; done < bytes; done += chunkBytes) {
    hash.update(buffer.subarray(0, Math.min(chunkBytes, bytes - done)));
  }
  hash.digest("hex");
}

/** Times every variant `repeats` times, interleaved, and returns MB/s. */
export async function probeHash(path: string, repeats: number): Promise<HashProbe> {
  const bytes = (await Deno.stat(path)).size;
  const variants: Record<string, () => Promise<unknown> | unknown> = {
    hashFile: () => hashFile(path, { sampleBytes: 0 }),
    readAsync: () => readAsync(path, READ_CHUNK_BYTES),
    sha256: () => sha256Only(bytes, READ_CHUNK_BYTES),
    readSync: () => readSync(path, PROTO_CHUNK_BYTES),
    proto: () => hashFileSync(path, PROTO_CHUNK_BYTES),
  };
  const seconds: Record<string, number[]> = Object.fromEntries(Object.keys(variants).map((name) => [name, []]));
  for (let i = 0; i < repeats; i++) {
    for (const [name, run] of Object.entries(variants)) {
      const started = performance.now();
      await run();
      seconds[name].push((performance.now() - started) / 1000);
    }
  }
  const mbps = (name: string) => Math.round(bytes / median(seconds[name]) / 1e6);
  return {
    bytes,
    chunkBytes: READ_CHUNK_BYTES,
    protoChunkBytes: PROTO_CHUNK_BYTES,
    hashFile: mbps("hashFile"),
    readAsync: mbps("readAsync"),
    sha256: mbps("sha256"),
    readSync: mbps("readSync"),
    proto: mbps("proto"),
  };
}

if (import.meta.main) {
  const [path, repeats] = Deno.args;
  console.log(JSON.stringify(await probeHash(path, Number(repeats ?? 3))));
}
