/**
 * The messages between the hash pool and its workers, in a module of their
 * own: the worker imports them, and the pool starts the worker by URL, so
 * neither the pool nor the worker imports the other.
 *
 * @module
 */

import { CkptkitError } from "../errors.ts";
import type {
  FileDigest,
  HashAlgorithm,
  HashFileOptions,
  Region,
  RegionDigest,
  SmallFileJob,
  SmallFileOptions,
} from "./hashing.ts";

/** A message to a worker. */
export type WorkerRequest =
  | { id: number; kind: "file"; path: string; options: Omit<HashFileOptions, "onProgress" | "signal"> }
  | { id: number; kind: "regions"; path: string; regions: Region[]; algorithm: HashAlgorithm }
  | { id: number; kind: "batch"; jobs: SmallFileJob[]; options: SmallFileOptions };

/** An error as it crosses from a worker: rebuilt with its type on the main thread. */
export interface WorkerError {
  kind: "CkptkitError" | "NotFound" | "PermissionDenied" | "Error";
  message: string;
  reason?: string;
  path?: string;
}

/** One file of a batch as a worker replies: its digests, or its error. */
export type BatchReplyItem = { file: FileDigest } | { error: WorkerError };

/** A message from a worker. */
export type WorkerReply =
  | { id: number; progress: number }
  | { id: number; file: FileDigest }
  | { id: number; regions: RegionDigest[] }
  | { id: number; batch: BatchReplyItem[] }
  | { id: number; error: WorkerError };

/** An error as it crosses to the main thread (see {@linkcode WorkerError}). */
export function serializeError(err: unknown): WorkerError {
  return {
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
  };
}
