/**
 * Worker body of `proto_validate.ts`: hashes one file per message with
 * synchronous reads into a small buffer on the worker's own thread, and
 * replies with the hex sha256 (or the error message).
 *
 * @module
 */

/// <reference lib="deno.worker" />

import { hashFileSync } from "./proto_validate.ts";

/** A request: the file to hash and the read size. */
interface Request {
  path: string;
  chunkBytes: number;
}

self.onmessage = (event: MessageEvent<Request>) => {
  const { path, chunkBytes } = event.data;
  try {
    self.postMessage({ path, digest: hashFileSync(path, chunkBytes) });
  } catch (err) {
    self.postMessage({ path, error: err instanceof Error ? err.message : String(err) });
  }
};
