/**
 * The body of a hashing worker: hashes the files the pool sends it, one at a
 * time, with the same streaming code as the main thread, and reports
 * progress and typed errors back.
 *
 * @module
 */

/// <reference lib="deno.worker" />

import { CkptkitError } from "./errors.ts";
import { hashFile, hashRegions } from "./hashing.ts";
import type { WorkerReply, WorkerRequest } from "./hash_pool.ts";

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
    } else {
      reply({ id: request.id, regions: await hashRegions(request.path, request.regions, request.algorithm) });
    }
  } catch (err) {
    reply({
      id: request.id,
      error: {
        kind: err instanceof CkptkitError
          ? "CkptkitError"
          : err instanceof Deno.errors.NotFound
          ? "NotFound"
          : err instanceof Deno.errors.PermissionDenied
          ? "PermissionDenied"
          : "Error",
        message: err instanceof Error ? err.message : String(err),
        reason: err instanceof CkptkitError ? err.reason : undefined,
        path: err instanceof CkptkitError ? err.path : undefined,
      },
    });
  }
};
