/**
 * ckptkit: crash-safe checkpoints for long-running ML training jobs.
 *
 * Write a checkpoint with a manifest of sha256 digests, commit it atomically,
 * validate it at the depth you can afford, and choose a checkpoint to resume
 * from that is known to be complete.
 *
 * ```ts
 * import assert from "node:assert/strict";
 * import { openCheckpointWriter, resumeFromRoot, validateCheckpoint } from "./mod.ts";
 *
 * const root = await Deno.makeTempDir();
 * const writer = await openCheckpointWriter(root, { step: 10, jobId: "demo", runId: "run1" });
 * await writer.writeFile("model.pt", new Uint8Array(1024));
 * const committed = await writer.commit();
 *
 * const result = await validateCheckpoint(committed.path);
 * assert.ok(result.ok);
 * const decision = await resumeFromRoot(root);
 * assert.ok(decision.chosen?.path === committed.path);
 * await Deno.remove(root, { recursive: true });
 * ```
 *
 * The library never prints and never exits: every function returns a result
 * or throws a {@linkcode CkptkitError} with a stable `reason`.
 *
 * @module
 */

export { CkptkitError, ERROR_REASONS, type ErrorReason } from "./src/errors.ts";
export { isProblemReason, type Problem, PROBLEM_REASONS, type ProblemReason } from "./src/problems.ts";
export {
  createHasher,
  DEFAULT_SAMPLE_BYTES,
  type FileDigest,
  HASH_ALGORITHMS,
  type HashAlgorithm,
  type Hasher,
  hashFile,
  type HashFileOptions,
  hashRegions,
  hashSmallFiles,
  MAX_SAMPLE_REGIONS,
  type Region,
  type RegionDigest,
  sampleRegions,
  SMALL_FILE_BYTES,
  type SmallFileJob,
  type SmallFileOptions,
  type SmallFileResult,
} from "./src/fs/hashing.ts";
export {
  createManifest,
  fileSamples,
  type Manifest,
  MANIFEST_FORMAT,
  MANIFEST_VERSION,
  type ManifestFields,
  type ManifestFile,
  type ManifestHash,
  type ManifestRankPart,
  type ManifestRanks,
  type ManifestWriter,
  type ParsedManifest,
  parseManifest,
  serializeManifest,
} from "./src/core/manifest.ts";
export {
  checkpointName,
  CORRUPT_DIR,
  inferStep,
  isValidStep,
  LATEST_NAME,
  MANIFEST_NAME,
  parseCheckpointName,
  parseStep,
  STATE_DIR,
} from "./src/core/layout.ts";
export { unsafePathReason } from "./src/fs/paths.ts";
export { type LatestPointer, readLatest, writeLatest } from "./src/core/latest.ts";
export { fsyncPath, writeFileAtomic, type WriteFileAtomicOptions } from "./src/fs/durable.ts";
export { acquireRootLock, DEFAULT_LOCK_TIMEOUT_MS, type LockOptions, type RootLock } from "./src/core/lock.ts";
export { type CheckpointIdentity, commitCheckpoint, type CommitOptions } from "./src/core/commit.ts";
export {
  commitRank,
  DEFAULT_WAIT_TIMEOUT_MS,
  MAX_WORLD_SIZE,
  type RankCommitOptions,
  type RankCommitResult,
  type RankOutcome,
} from "./src/multinode/multirank.ts";
export {
  PART_FORMAT,
  PART_VERSION,
  type PartFile,
  type PartManifest,
  PARTS_SUFFIX,
  type RankProgress,
  readRankProgress,
} from "./src/core/part.ts";
export { COMMIT_POINTS, type CommitPoint, type FaultHook } from "./src/core/publish.ts";
export { type HashingOptions } from "./src/core/seal_files.ts";
export { CheckpointWriter, type FileData, openCheckpointWriter, type WriterOptions } from "./src/core/writer.ts";
export { sealCheckpoint, type SealOptions, type SealResult } from "./src/core/seal.ts";
export {
  type FileOutcome,
  validateCheckpoint,
  type ValidateOptions,
  type ValidationDepth,
  type ValidationResult,
} from "./src/core/validate.ts";
export { listRoot, type RootCheckpoint, type RootListing, type RootStaging, type RootStray } from "./src/core/root.ts";
export {
  DEFAULT_STALE_STAGING_S,
  type ScanLatest,
  type ScanOptions,
  type ScanResult,
  scanRoot,
} from "./src/core/scan.ts";
export {
  assignShards,
  MAX_SHARDS,
  parseShardSpec,
  planDigest,
  type PlanEntry,
  type ShardSpec,
  type ShardUnit,
} from "./src/multinode/shard.ts";
export { scanShard, type ShardOptions, validateShard } from "./src/multinode/shard_run.ts";
export {
  MAX_SHARD_REPORT_BYTES,
  parseShardReport,
  readShardReport,
  refuseReportInside,
  SHARD_REPORT_FORMAT,
  SHARD_REPORT_VERSION,
  type ShardCheckpoint,
  type ShardReport,
  type ShardRootChecks,
  type ShardWholeChecks,
  writeShardReport,
} from "./src/multinode/shard_report.ts";
export {
  assembleShardReports,
  type MergedReports,
  type MergeOptions,
  mergeShardReports,
} from "./src/multinode/report_merge.ts";
export {
  type KnownGoodCheck,
  type NothingToResumeReason,
  planResume,
  type PlanResumeInput,
  type Rejection,
  type RepairAction,
  RESUME_POLICIES,
  type ResumeCandidate,
  type ResumeDecision,
  resumeFromRoot,
  type ResumeOptions,
  resumeOrder,
  type ResumeOrderInput,
  type ResumePolicy,
} from "./src/core/resume.ts";
export { REPAIR_POINTS, type RepairPoint } from "./src/commit_points.ts";
export {
  quarantineCheckpoint,
  type QuarantineOptions,
  type QuarantineRecord,
  type QuarantineResult,
} from "./src/core/quarantine.ts";
export {
  type DeletedCheckpoint,
  keepersToVerify,
  type KeptCheckpoint,
  planRetention,
  type RetentionCheckpoint,
  type RetentionInput,
  type RetentionPlan,
  type RetentionStaging,
  type RetentionStatus,
} from "./src/core/retention.ts";
export { collectGarbage, type GcOptions, type GcResult, TRASH_DIR } from "./src/core/gc.ts";
export {
  type CountedFailure,
  emptyState,
  type KnownGood,
  readState,
  type RootState,
  statePath,
  updateState,
} from "./src/core/state.ts";
export {
  type CommitResult,
  forgetCheckpoints,
  recordCommit,
  type RecordOutcome,
  recordValidation,
  rootOfCheckpoint,
} from "./src/core/record.ts";
export { fingerprintCheckpoint } from "./src/core/fingerprint.ts";
export { type Config, loadConfig, parseConfig } from "./src/core/config.ts";
export {
  createJsonLogger,
  createLogger,
  type JsonLoggerOptions,
  LOG_FORMATS,
  LOG_LEVELS,
  LOG_REASONS,
  type LogFields,
  type LogFormat,
  type Logger,
  type LoggerOptions,
  type LogLevel,
  type Severity,
  silentLogger,
} from "./src/log.ts";
export { VERSION } from "./src/version.ts";
export {
  checkFileFormat,
  type DetectedLayout,
  detectLayout,
  type FileFormatResult,
  type FormatChecker,
  formatCheckerFor,
  type FormatFact,
  type FormatFinding,
  type LayoutFile,
  type LayoutFinding,
  type LayoutInput,
  type LayoutKind,
  type LayoutResult,
  readLayoutContents,
} from "./src/formats/mod.ts";
export { exportSums, formatSumsLine, ManifestProblemError } from "./src/core/export_sums.ts";
export {
  BATCH_BYTES,
  BATCH_FILES,
  type FileHasher,
  hashAll,
  type HashAllOptions,
  type HashJob,
  HashPool,
  mainThreadHasher,
  POOL_MIN_BYTES,
  POOL_MIN_FILES,
  withHasher,
} from "./src/fs/hash_pool.ts";
export {
  buildSnapshot,
  MAX_CORRUPT_SERIES,
  type MetricsLabels,
  type MetricsSnapshot,
  type SnapshotInput,
} from "./src/metrics/snapshot.ts";
export { METRIC_NAMES, renderMetrics } from "./src/metrics/render.ts";
export {
  collectMetrics,
  type CollectOptions,
  freeBytes,
  lastCheckpointBytes,
  type MetricsPass,
} from "./src/metrics/collect.ts";
export { resolveTextfile, textfileName, writeTextfile } from "./src/metrics/textfile.ts";
export { deleteMetrics, groupingKey, pushMetrics, type PushOptions, pushUrl } from "./src/metrics/pushgateway.ts";
export { type ExporterOptions, parseListen, runExporter } from "./src/metrics/exporter.ts";
