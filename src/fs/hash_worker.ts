/**
 * The body of a hashing worker: hashes the files the pool sends it, one at a
 * time, with the same streaming code as the main thread, and reports
 * progress and typed errors back.
 *
 * @module
 */

/// <reference lib="deno.worker" />

import { hashFile, hashRegions, hashSmallFiles } from "./hashing.ts";
import { serializeError, type WorkerReply, type WorkerRequest } from "./hash_messages.ts";

const PROGRESS_EVERY = 8 * 1024 * 1024;

self.onmessage = async (event: MessageEvent<WorkerRequest>) => {
  const request = event.data;
  const reply = (message: WorkerReply) => self.postMessage(message);
  try {
    if (request.kind === "file") {
      let unreported = 0;
      const result = await hashFile(request.path, {
        ...request.options,
        blockingReads: true,
        onProgress: (bytes) => {
          unreported += bytes;
          if (unreported >= PROGRESS_EVERY) {
            reply({ id: request.id, progress: unreported });
            unreported = 0;
          }
        },
      });
      if (unreported > 0) reply({ id: request.id, progress: unreported });
      reply({ id: request.id, file: result });
    } else if (request.kind === "batch") {
      // Blocking calls on this thread, one message back for the whole batch: no round trip per file.
      const results = await hashSmallFiles(request.jobs, request.options);
      reply({
        id: request.id,
        batch: results.map((result) => "error" in result ? { error: serializeError(result.error) } : result),
      });
    } else {
      reply({ id: request.id, regions: await hashRegions(request.path, request.regions, request.algorithm) });
    }
  } catch (err) {
    reply({ id: request.id, error: serializeError(err) });
  }
};
