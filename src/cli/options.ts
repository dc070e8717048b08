/**
 * Option declarations shared by several commands, and the merge of their
 * values with the config file: a flag or its environment variable wins over
 * the config, which wins over the default.
 *
 * @module
 */

import { Option } from "../deps/commander.ts";
import type { Config } from "../core/config.ts";
import { CkptkitError } from "../errors.ts";
import { DEFAULT_SAMPLE_BYTES, HASH_ALGORITHMS, type HashAlgorithm } from "../fs/hashing.ts";
import { DEFAULT_LOCK_TIMEOUT_MS } from "../core/lock.ts";
import type { ValidationDepth } from "../core/validate.ts";
import { collectMetadata, parseBytes, parseNonNegativeInteger, parsePositiveInteger, parseSeconds } from "./parse.ts";

/** `--root`, falling back to CKPTKIT_ROOT and the config's `root`. */
export function rootOption(): Option<
  "--root <dir>",
  undefined,
  undefined,
  string
> {
  return new Option("--root <dir>", "checkpoint root (config: root)").env(
    "CKPTKIT_ROOT",
  );
}

/** Options naming whose checkpoint it is. */
export function identityOptions() {
  return [
    new Option("--job-id <id>", "training job id (config: job_id)").env(
      "CKPTKIT_JOB_ID",
    ),
    new Option("--run-id <id>", "run id of the job (config: run_id)").env(
      "CKPTKIT_RUN_ID",
    ),
    new Option(
      "--metadata <key=value>",
      "free-form metadata recorded in the manifest (repeatable)",
    )
      .argParser(collectMetadata),
  ] as const;
}

/** The required step option. */
export function stepOption() {
  return new Option("--step <n>", "training step (non-negative integer)")
    .argParser(parseNonNegativeInteger);
}

/** Hashing options for commands that write manifests. */
export function hashingOptions() {
  return [
    new Option(
      "--algorithm <name>",
      "digest algorithm (config: hashing.algorithm; default sha256)",
    )
      .choices(HASH_ALGORITHMS),
    new Option(
      "--sample-bytes <bytes>",
      `size of each sampled region recorded for --sample-bytes validation (config: hashing.sample_bytes; default ${DEFAULT_SAMPLE_BYTES})`,
    ).argParser(parseBytes),
    jobsOption(),
  ] as const;
}

/** `--jobs`: files hashed at once. */
export function jobsOption() {
  return new Option(
    "--jobs <n>",
    "files hashed at once (config: hashing.jobs; default: number of cores)",
  )
    .argParser(parsePositiveInteger);
}

/** `--lock-timeout`: how long to wait for the root lock. */
export function lockTimeoutOption() {
  return new Option(
    "--lock-timeout <duration>",
    `how long to wait for another ckptkit process's lock on the root (config: lock_timeout_s; default ${
      DEFAULT_LOCK_TIMEOUT_MS / 1000
    }s)`,
  ).argParser(parseSeconds);
}

/** Depth options for commands that validate. */
export function depthOptions() {
  return [
    new Option(
      "--fast",
      "check the manifest, presence and sizes only (reads no file data)",
    ).conflicts(["sampleBytes", "deep"]),
    new Option(
      "--sample-bytes <bytes>",
      "check the sampled regions recorded at commit instead of every byte",
    )
      .argParser(parseBytes),
    jobsOption(),
    new Option(
      "--deep",
      "full, plus format checks (torch zip and legacy, safetensors) and layout checks (DeepSpeed, Hugging Face " +
        "Trainer, DCP) in the same read; folders without a manifest are checked on those alone",
    ).conflicts("sampleBytes"),
  ] as const;
}

/** `--root` for commands that also take the root as their argument. */
export function rootFallbackOption() {
  return new Option("--root <dir>", "checkpoint root, when not given as the argument").env("CKPTKIT_ROOT");
}

/** The root from the flag, the environment or the config; a usage error when none. */
export function resolveRoot(flag: string | undefined, config: Config): string {
  const root = flag ?? config.root;
  if (!root) {
    throw new CkptkitError(
      "invalid_argument",
      "No checkpoint root: pass --root, set CKPTKIT_ROOT, or set root in the config",
    );
  }
  return root;
}

/** Hashing settings merged from flags and config. */
export function resolveHashing(
  flags: { algorithm?: string; sampleBytes?: number; jobs?: number },
  config: Config,
): { algorithm: HashAlgorithm; sampleBytes: number; concurrency?: number } {
  return {
    algorithm: (flags.algorithm ?? config.hashing?.algorithm ??
      "sha256") as HashAlgorithm,
    sampleBytes: flags.sampleBytes ?? config.hashing?.sample_bytes ??
      DEFAULT_SAMPLE_BYTES,
    concurrency: flags.jobs ?? config.hashing?.jobs,
  };
}

/** The validation depth and settings from `--fast` / `--sample-bytes`. */
export function resolveDepth(
  flags: { fast?: boolean; sampleBytes?: number; jobs?: number; deep?: boolean },
  config: Config,
): { depth: ValidationDepth; sampleBytes?: number; concurrency?: number } {
  const depth: ValidationDepth = flags.fast
    ? "fast"
    : flags.sampleBytes !== undefined
    ? "sample"
    : flags.deep
    ? "deep"
    : "full";
  return {
    depth,
    sampleBytes: flags.sampleBytes,
    concurrency: flags.jobs ?? config.hashing?.jobs,
  };
}

/** Lock timeout in ms from the flag (seconds) or the config. */
export function resolveLockTimeoutMs(
  flag: number | undefined,
  config: Config,
): number {
  const seconds = flag ?? config.lock_timeout_s;
  return seconds === undefined ? DEFAULT_LOCK_TIMEOUT_MS : seconds * 1000;
}

/** `--shard` and `--report`, for commands that can validate one shard of a distributed run. */
export function shardOptions() {
  return [
    new Option(
      "--shard <i/N>",
      "validate only shard i of N (0-based: Slurm --array=0-(N-1), Kubernetes JOB_COMPLETION_INDEX): a share of the " +
        "files balanced by bytes, the same plan on every node; needs --report. The exit code (0/1) covers this " +
        "shard's files only, so make the merge job depend on the shards with afterany, not afterok",
    ),
    new Option(
      "--report <path>",
      "with --shard: write this shard's JSON report here (atomically; outside the validated folder), then merge " +
        "all N with `ckptkit report merge`",
    ),
  ] as const;
}
