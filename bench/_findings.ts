/**
 * The "Performance" issue's targets, checked against one run's medians, and
 * for every missed target (or every target, with `--diagnose all`) a finding
 * written from that run's diagnostics: what bounds it and what in src/ would
 * lift it.
 *
 * @module
 */

import type { BarrelInfo, CommitBreakdown, NpmFiles, ReadThreads, StraceSummary } from "./_diagnose.ts";
import type { HashProbe } from "./_probe_hash.ts";
import type { WorkerProbe } from "./_probe_worker.ts";
import { type Measurement, pairedRatio } from "./_timing.ts";

/** What {@linkcode inProcessSeconds} measured for one command. */
export interface InProcess {
  inProcess: number;
  wall: number;
}

/** Everything measured to explain targets; absent parts were not needed. */
export interface Diagnostics {
  hash?: HashProbe;
  worker?: WorkerProbe;
  validate?: InProcess;
  validateStrace?: StraceSummary;
  readThreads?: ReadThreads;
  commit?: CommitBreakdown;
  commitStrace?: StraceSummary;
  fast?: InProcess;
  sample?: InProcess;
  startup?: Measurement[];
  npmHelp?: NpmFiles;
  npmFast?: NpmFiles;
  npmValidate?: NpmFiles;
  barrel?: BarrelInfo;
  scan?: InProcess;
  scanStrace?: StraceSummary;
  scanProfile?: string;
  helpProfile?: string;
  /** Many-file section: in-process times and syscall summaries of the commands whose targets missed. */
  manyValidate?: InProcess;
  manyValidateStrace?: StraceSummary;
  manyFast?: InProcess;
  manyFastStrace?: StraceSummary;
  manyCommit?: CommitBreakdown;
  manyCommitStrace?: StraceSummary;
  hugeFast?: InProcess;
}

/** What the targets need to know about the data beyond the measurements. */
export interface TargetContext {
  /** Checkpoints of the scan root of the big-file section. */
  scanCheckpoints?: number;
  /** The many-file section's sizes, and what `validate --fast` made of the huge manifest. */
  many?: { files: number; hugeEntries: number; hugeOutcome: { ok: boolean; summary: string } | null };
}

/** A peak-RSS measurement. */
export interface RssRow {
  id: string;
  name: string;
  /** Median peak RSS in KiB, or null when GNU time printed none. */
  kib: number | null;
  command: string;
  /** Runs the median is taken over (default 3). */
  runs?: number;
  /** Files the command handles, for the per-file column (many-file rows). */
  files?: number;
  /** Shell command run before each run (a fresh staging folder for commit). */
  prepare?: string;
}

/** One target of the issue, checked. */
export interface Target {
  /** Key: sha256sum, openssl, commit, sample, fast, scan, rss, help. */
  id: string;
  /** The target as the issue states it. */
  goal: string;
  /** The numbers compared. */
  measured: string;
  /** The ratio or value the goal bounds. */
  value: string;
  pass: boolean;
  /** Markdown paragraphs explaining it, when diagnostics were run. */
  finding: string[];
}

/** Seconds as `1.234 s`, or `123 ms` below one second. */
export function seconds(value: number): string {
  return value >= 1 ? `${value.toFixed(2)} s` : `${(value * 1000).toFixed(0)} ms`;
}

function mbps(bytes: number, secondsTaken: number): string {
  return `${(bytes / secondsTaken / 1e6).toFixed(0)} MB/s`;
}

function pct(ratio: number): string {
  return ratio < 0.1 ? `${(ratio * 100).toFixed(1)}%` : `${(ratio * 100).toFixed(0)}%`;
}

function straceLine(summary: StraceSummary, count = 6): string {
  const rows = summary.rows.slice(0, count).map((row) =>
    `${row.syscall} ${row.calls} calls${row.errors ? ` (${row.errors} failed)` : ""} ${row.seconds.toFixed(3)} s`
  );
  return `\`strace ${summary.options}\`: ${summary.totalCalls} calls; busiest: ${rows.join(", ")}`;
}

function npmLine(files: NpmFiles, count = 8): string {
  return `${files.total} npm module files (${
    files.byPackage.slice(0, count).map(([pkg, n]) => `${pkg} ${n}`).join(", ")
  }${files.byPackage.length > count ? ", …" : ""})`;
}

/**
 * Checks every target the data allows (a target whose rows are missing is
 * left out) and attaches findings from `d`.
 */
export function evaluateTargets(
  m: Map<string, Measurement>,
  rss: RssRow[],
  d: Diagnostics,
  context: TargetContext = {},
): Target[] {
  const scanCheckpoints = context.scanCheckpoints ?? 1000;
  const targets: Target[] = [];
  const full = m.get("v_full");
  const sha = m.get("v_sha256sum");
  const openssl = m.get("v_openssl");
  if (full && sha) {
    const speedup = pairedRatio(sha, full);
    targets.push({
      id: "sha256sum",
      goal: "full validation ≥ 4× faster than `sha256sum -c`",
      measured: `${seconds(full.median)} vs ${seconds(sha.median)}`,
      value: `${speedup.toFixed(2)}× faster`,
      pass: speedup >= 4,
      finding: d.hash ? hashingFinding(m, d, "sha256sum") : [],
    });
  }
  if (full && openssl) {
    const share = pairedRatio(openssl, full);
    targets.push({
      id: "openssl",
      goal: "full validation ≥ 90% of parallel `openssl dgst`'s throughput",
      measured: `${mbps(full.bytes!, full.median)} vs ${mbps(openssl.bytes!, openssl.median)}`,
      value: pct(share),
      pass: share >= 0.9,
      finding: d.hash ? hashingFinding(m, d, "openssl") : [],
    });
  }
  const commit = m.get("c_commit");
  const commitBase = m.get("c_openssl_sync");
  if (commit && commitBase) {
    const ratio = pairedRatio(commit, commitBase);
    targets.push({
      id: "commit",
      goal: "`ckptkit commit` ≤ 1.2× (parallel openssl + `sync`)",
      measured: `${seconds(commit.median)} vs ${seconds(commitBase.median)}`,
      value: `${ratio.toFixed(2)}×`,
      pass: ratio <= 1.2,
      finding: d.commit ? commitFinding(m, d) : [],
    });
  }
  const sample = m.get("v_sample");
  if (full && sample) {
    const ratio = pairedRatio(sample, full);
    targets.push({
      id: "sample",
      goal: "`validate --sample-bytes 65536` < 5% of full validation",
      measured: `${seconds(sample.median)} vs ${seconds(full.median)}`,
      value: pct(ratio),
      pass: ratio < 0.05,
      finding: d.sample ? depthFinding(m, d, "sample", 0.05) : [],
    });
  }
  const fast = m.get("v_fast");
  if (full && fast) {
    const ratio = pairedRatio(fast, full);
    targets.push({
      id: "fast",
      goal: "`validate --fast` < 1% of full validation",
      measured: `${seconds(fast.median)} vs ${seconds(full.median)}`,
      value: pct(ratio),
      pass: ratio < 0.01,
      finding: d.fast ? depthFinding(m, d, "fast", 0.01) : [],
    });
  }
  const scan = m.get("s_scan");
  if (scan) {
    targets.push({
      id: "scan",
      goal: `\`scan --fast\` of 1,000 checkpoints < 2 s${
        scanCheckpoints === 1000 ? "" : ` (this run: ${scanCheckpoints} checkpoints)`
      }`,
      measured: seconds(scan.median),
      value: seconds(scan.median),
      pass: scan.median < 2,
      finding: d.scan ? scanFinding(scan, d) : [],
    });
  }
  const big = rss.find((row) => row.id === "rss_big");
  if (big && big.kib !== null) {
    targets.push({
      id: "rss",
      goal: "peak RSS of `validate` on the big file < 200 MiB",
      measured: `${(big.kib / 1024).toFixed(0)} MiB`,
      value: `${(big.kib / 1024).toFixed(0)} MiB`,
      pass: big.kib < 200 * 1024,
      finding: rssFinding(rss),
    });
  }
  const help = m.get("u_help");
  if (help) {
    targets.push({
      id: "help",
      goal: "`ckptkit --help` < 150 ms",
      measured: seconds(help.median),
      value: seconds(help.median),
      pass: help.median < 0.15,
      finding: d.startup ? startupFinding(m, d) : [],
    });
  }
  if (context.many) targets.push(...manyTargets(m, rss, d, context.many));
  return targets;
}

/** Bound of the many-file RSS target, in MiB. */
const MANY_RSS_MIB = 250;
/** Bound of time(2N)/time(N) for `scan`. */
const SCAN_LINEAR = 2.3;

/** `(this run: 2,000 files)` when the run's size differs from the issue's. */
function thisRun(actual: number, issue: number, unit: string): string {
  return actual === issue ? "" : ` (this run: ${actual.toLocaleString("en-US")} ${unit})`;
}

/** The many-file targets of issue #14, each checked when its rows were measured. */
function manyTargets(
  m: Map<string, Measurement>,
  rss: RssRow[],
  d: Diagnostics,
  many: NonNullable<TargetContext["many"]>,
): Target[] {
  const targets: Target[] = [];
  const files = thisRun(many.files, 100000, "files");
  const full = m.get("mv_full");
  const sha = m.get("mv_sha256sum");
  const find = m.get("mv_find");
  if (full && sha) {
    const ratio = pairedRatio(full, sha);
    targets.push({
      id: "many_sha256sum",
      goal: `full validation of 100,000 small files ≤ 2× \`sha256sum -c\`${files}`,
      measured: `${seconds(full.median)} vs ${seconds(sha.median)}`,
      value: `${ratio.toFixed(2)}×`,
      pass: ratio <= 2,
      finding: d.manyValidate ? perFileFinding(full, many.files, d.manyValidate, d.manyValidateStrace, sha) : [],
    });
  }
  const fast = m.get("mv_fast");
  if (fast) {
    targets.push({
      id: "many_fast",
      goal: `\`validate --fast\` of 100,000 files ≤ 1 s${files}`,
      measured: seconds(fast.median),
      value: seconds(fast.median),
      pass: fast.median <= 1,
      finding: d.manyFast ? perFileFinding(fast, many.files, d.manyFast, d.manyFastStrace, find) : [],
    });
  }
  const huge = m.get("mh_fast");
  if (huge) {
    const outcome = many.hugeOutcome;
    targets.push({
      id: "huge_fast",
      goal: `a 1,000,000-entry manifest checked (or refused) by \`validate --fast\` ≤ 10 s${
        thisRun(many.hugeEntries, 1000000, "entries")
      }`,
      measured: `${seconds(huge.median)}${
        outcome ? `, ${outcome.ok ? "checked: valid" : `refused/failed: ${outcome.summary}`}` : ""
      }`,
      value: seconds(huge.median),
      pass: huge.median <= 10,
      finding: d.hugeFast ? perFileFinding(huge, many.hugeEntries, d.hugeFast, undefined, m.get("mh_find")) : [],
    });
  }
  const commit = m.get("mc_commit");
  const base = m.get("mc_baseline");
  if (commit && base) {
    const ratio = pairedRatio(commit, base);
    targets.push({
      id: "many_commit",
      goal: `\`commit\` of 100,000 small files ≤ 3× (parallel \`sha256sum\` + fsync of every file)${files}`,
      measured: `${seconds(commit.median)} vs ${seconds(base.median)}`,
      value: `${ratio.toFixed(2)}×`,
      pass: ratio <= 3,
      finding: d.manyCommit ? manyCommitFinding(commit, base, many.files, d) : [],
    });
  }
  const rssRows = rss.filter((row) => ["rss_many_validate", "rss_many_fast", "rss_many_commit"].includes(row.id));
  const measuredRss = rssRows.filter((row): row is RssRow & { kib: number } => row.kib !== null);
  if (measuredRss.length > 0) {
    const worst = measuredRss.reduce((a, b) => (b.kib > a.kib ? b : a));
    targets.push({
      id: "many_rss",
      goal: `peak RSS ≤ ${MANY_RSS_MIB} MiB at 100,000 files (validate, \`--fast\`, commit)${files}`,
      measured: measuredRss.map((row) => `${row.id.replace("rss_many_", "")} ${(row.kib / 1024).toFixed(0)}`).join(
        ", ",
      ) + " MiB",
      value: `${(worst.kib / 1024).toFixed(0)} MiB`,
      pass: worst.kib <= MANY_RSS_MIB * 1024,
      finding: manyRssFinding(rss),
    });
  }
  const scans = [1, 2, 4].map((n) => m.get(`ms_scan${n}`));
  if (scans.every((row) => row !== undefined)) {
    const [one, two, four] = scans as Measurement[];
    const r12 = pairedRatio(two, one);
    const r24 = pairedRatio(four, two);
    targets.push({
      id: "many_scan",
      goal: `\`scan --fast\` linear in checkpoints: time(2N)/time(N) ≤ ${SCAN_LINEAR} (1, 2, 4 × ${
        many.files.toLocaleString("en-US")
      } files)`,
      measured: `${seconds(one.median)}, ${seconds(two.median)}, ${seconds(four.median)}`,
      value: `${r12.toFixed(2)}×, ${r24.toFixed(2)}×`,
      pass: Math.max(r12, r24) <= SCAN_LINEAR,
      finding: [],
    });
  }
  return targets;
}

/** Where a many-file command's time goes: start-up, per-file cost, syscalls, and the C reference. */
function perFileFinding(
  row: Measurement,
  files: number,
  inside: InProcess,
  strace: StraceSummary | undefined,
  reference: Measurement | undefined,
): string[] {
  const startup = Math.max(0, inside.wall - inside.inProcess);
  const perFile = inside.inProcess / files * 1e6;
  const out = [
    `**Where the time goes.** \`${row.name}\` takes ${seconds(row.median)} in the table; of a \`--json\` run's ${
      seconds(inside.wall)
    } (wall), ${seconds(inside.inProcess)} is inside ckptkit (\`duration_s\`) and ${
      seconds(startup)
    } start-up and exit: ${perFile.toFixed(1)} µs per file in process` +
    (reference
      ? `, against ${(reference.median / files * 1e6).toFixed(1)} µs per file for \`${reference.name}\` (${
        seconds(reference.median)
      } in all, process included).`
      : "."),
  ];
  if (strace) out.push(`${straceLine(strace)}.`);
  return out;
}

function manyCommitFinding(commit: Measurement, base: Measurement, files: number, d: Diagnostics): string[] {
  const c = d.manyCommit!;
  const rest = Math.max(0, c.inProcess - c.hashing);
  const out = [
    `**Where the time goes** (one \`commit --json\` run on a fresh hard-linked staging folder): ${
      seconds(c.wall)
    } wall = ${seconds(Math.max(0, c.wall - c.inProcess))} start-up and exit + ${
      seconds(c.hashing)
    } listing, hashing and fsyncing the files (\`write_duration_s\`, ${
      (c.hashing / files * 1e6).toFixed(0)
    } µs per file) + ${
      seconds(rest)
    } for the manifest, folder fsyncs, lock, rename, \`latest\` and state. The baseline takes ${
      seconds(base.median)
    } (${(base.median / files * 1e6).toFixed(0)} µs per file), ckptkit ${seconds(commit.median)} in the table.`,
  ];
  if (d.manyCommitStrace) {
    const fsync = d.manyCommitStrace.rows.find((row) => row.syscall === "fsync");
    out.push(
      `${straceLine(d.manyCommitStrace, 6)}${
        fsync ? `: ${fsync.calls} fsyncs waiting ${seconds(fsync.seconds)} in all (summed over threads)` : ""
      }.`,
    );
  }
  return out;
}

function manyRssFinding(rss: RssRow[]): string[] {
  const help = rss.find((row) => row.id === "rss_help")?.kib ?? null;
  const rows = rss.filter((row) => row.files !== undefined && row.kib !== null);
  if (rows.length === 0) return [];
  return [
    `Above the runtime with the CLI's modules (\`--help\`${
      help !== null ? `, ${(help / 1024).toFixed(0)} MiB` : ""
    }): ${
      rows.map((row) =>
        `${row.name}: ${help !== null ? `${((row.kib! - help) * 1024 / row.files!).toFixed(0)} bytes per file` : "?"}`
      ).join("; ")
    }.`,
  ];
}

/** Full validation against the hashing tools: where a hashing stream's time goes. */
function hashingFinding(m: Map<string, Measurement>, d: Diagnostics, against: "sha256sum" | "openssl"): string[] {
  const full = m.get("v_full")!;
  const jobs1 = m.get("v_jobs1");
  const openssl = m.get("v_openssl");
  const proto = m.get("v_proto");
  const bigFull = m.get("b_full");
  const bigOpenssl = m.get("b_openssl");
  const bigProto = m.get("b_proto");
  const h = d.hash!;
  const startup = d.validate ? Math.max(0, d.validate.wall - d.validate.inProcess) : undefined;
  const out: string[] = [];
  if (against === "sha256sum") {
    const sha = m.get("v_sha256sum")!;
    out.push(
      `\`sha256sum -c\` hashes on one core at ${mbps(sha.bytes!, sha.median)}; ckptkit reaches ${
        mbps(full.bytes!, full.median)
      } with the pool${jobs1 ? ` (${mbps(jobs1.bytes!, jobs1.median)} with \`--jobs 1\`)` : ""}${
        startup !== undefined ? `, ${seconds(startup)} of its ${seconds(d.validate!.wall)} being start-up and exit` : ""
      }. What bounds ckptkit's throughput is under the openssl target.`,
    );
    return out;
  }
  const readShare = (1 / h.readAsync) / (1 / h.readAsync + 1 / h.sha256);
  // A worker slower to start than one that imports only node:crypto loads more than hashing needs.
  const workerSlow = d.barrel?.hashingUsesIt === true ||
    (d.worker !== undefined && d.worker.startMs > 1.5 * d.worker.protoFirstMs);
  const protoGain = h.proto / h.hashFile - 1;
  out.push(
    `**Where the time goes.** ckptkit validates at ${mbps(full.bytes!, full.median)}, parallel openssl at ${
      mbps(openssl!.bytes!, openssl!.median)
    }.` +
      (d.validate
        ? ` Of ckptkit's ${seconds(d.validate.wall)} (wall, median of 3 \`--json\` runs), ${
          seconds(d.validate.inProcess)
        } is inside \`validateCheckpoint\` (its \`duration_s\`) and ${seconds(startup!)} is start-up and exit.`
        : "") +
      (d.worker
        ? ` A hash worker takes ${d.worker.startMs.toFixed(0)} ms to start before it hashes anything (first hash ` +
          `through a fresh \`HashPool\` ${d.worker.firstMs.toFixed(0)} ms, the next ${
            d.worker.warmMs.toFixed(1)
          } ms), against ${d.worker.protoFirstMs.toFixed(0)} ms for the prototype's worker, which imports only ` +
          "node:crypto."
        : "") +
      (d.npmValidate && d.npmValidate.opens > 1.5 * d.npmValidate.total
        ? ` \`validate\` with the pool opens ${d.npmValidate.opens} npm module files, ${d.npmValidate.total} distinct: ` +
          "every isolate (the main thread and each worker) loads them again."
        : "") +
      (d.barrel?.hashingUsesIt
        ? ` \`src/fs/hash_worker.ts\` imports \`src/fs/hashing.ts\`, which takes \`createXXHash128\` from \`src/deps.ts\`; ` +
          `that module re-exports all ${d.barrel.packages} npm packages, so each worker evaluates commander, zod, ` +
          "yaml, prom-client and the rest before it hashes a byte."
        : ""),
  );
  out.push(
    `**One hashing stream, in process** (\`bench/_probe_hash.ts\`: a cached ${
      formatMiB(h.bytes)
    } file, no start-up, no workers): \`hashFile\` ${h.hashFile} MB/s; its awaited ${
      formatMiB(h.chunkBytes)
    } reads alone ${h.readAsync} MB/s; node:crypto's sha256 alone ${h.sha256} MB/s. Reading and hashing run one ` +
      `after the other, which predicts 1/(1/${h.readAsync} + 1/${h.sha256}) = ${
        (1 / (1 / h.readAsync + 1 / h.sha256)).toFixed(0)
      } MB/s for the stream: the reads take ${pct(readShare)} of its time. \`readSync\` into ${
        formatMiB(h.protoChunkBytes)
      } alone goes at ${h.readSync} MB/s, and the prototype's loop (\`readSync\` into ${
        formatMiB(h.protoChunkBytes)
      } + the same sha256) at ${h.proto} MB/s, ${pct(Math.abs(protoGain))} ${
        protoGain >= 0 ? "faster" : "slower"
      } than \`hashFile\`.` +
      (bigOpenssl && bigFull
        ? ` On the single big file (one stream, start-up included): openssl ${
          mbps(bigOpenssl.bytes!, bigOpenssl.median)
        }, ckptkit ${mbps(bigFull.bytes!, bigFull.median)}${
          bigProto ? `, the prototype ${mbps(bigProto.bytes!, bigProto.median)}` : ""
        }.`
        : ""),
  );
  if (d.readThreads) {
    const t = d.readThreads;
    out.push(
      `**Why the reads cost that much.** \`strace -f -e trace=read\` of \`validate\` on the big file (hashed on ` +
        `the main thread): the ${t.reads} reads of ${formatMiB(t.chunkBytes)} were made by ${t.threads} thread${
          t.threads === 1 ? "" : "s"
        }, ${t.onMain === 0 ? "none of them" : `${t.onMain} of them on`} the JavaScript thread that hashes: Deno ` +
        "runs an awaited file read on its blocking thread pool and hands the buffer back, so each chunk is copied " +
        `into the buffer by one thread and hashed by another, and at ${
          formatMiB(t.chunkBytes)
        } it does not stay in the hashing core's L2 cache in between. The prototype reads ${
          formatMiB(h.protoChunkBytes)
        } at a time with \`readSync\` on the hashing thread itself.` +
        (d.validateStrace
          ? ` On the multi-file checkpoint, ${straceLine(d.validateStrace)} (the futex and epoll_wait calls are ` +
            "those hand-offs)."
          : ""),
    );
  } else if (d.validateStrace) {
    out.push(`${straceLine(d.validateStrace)}.`);
  }
  if (proto && openssl) {
    out.push(
      `**What lifts it.** The prototype (\`bench/proto_validate.ts --load-cli\`: the CLI's start-up, one worker ` +
        `per core, \`readSync\` into ${formatMiB(h.protoChunkBytes)} on each worker's own thread, node:crypto) ` +
        `validated the same checkpoint in ${seconds(proto.median)}: ${mbps(proto.bytes!, proto.median)}, ${
          pct(pairedRatio(openssl, proto))
        } of openssl's throughput (ckptkit: ${pct(pairedRatio(openssl, full))}). The start-up proposal under the ` +
        "`--help` target adds to this.",
    );
  }
  out.push(
    "**Proposal (src/).** (1) The hashing workers already read with `readSync` into 256 KiB on their own thread " +
      "(`hashFile`'s `blockingReads`, used by `src/fs/hash_worker.ts`), which the multi-file rows measure. The main " +
      "thread still awaits 2 MiB reads when it hashes a single file (the big-file rows): let the CLI pass " +
      "`blockingReads` there too, since nothing else runs meanwhile, and lower `READ_CHUNK_BYTES` to 256 KiB for the " +
      "async path that remains (the library writer, callers that need the event loop)." +
      (workerSlow
        ? " (2) `src/fs/hash_worker.ts`: load only what hashing needs (node:crypto, `src/errors.ts`); load hash-wasm " +
          "when `createHasher` is asked for `xxh128` (`await import(...)`)" +
          (d.barrel?.hashingUsesIt ? ", not through the `src/deps.ts` barrel" : "") +
          (d.worker ? `: a worker would then start in about ${d.worker.protoFirstMs.toFixed(0)} ms.` : ".")
        : ""),
  );
  return out;
}

/** `2097152` → `2 MiB`, `262144` → `256 KiB`. */
function formatMiB(bytes: number): string {
  return bytes >= 2 ** 20 ? `${(bytes / 2 ** 20).toFixed(0)} MiB` : `${(bytes / 1024).toFixed(0)} KiB`;
}

function commitFinding(m: Map<string, Measurement>, d: Diagnostics): string[] {
  const commit = m.get("c_commit")!;
  const base = m.get("c_openssl_sync")!;
  const c = d.commit!;
  const out: string[] = [];
  const rest = Math.max(0, c.inProcess - c.hashing);
  out.push(
    `\`ckptkit commit\` takes ${seconds(commit.median)} in the table, parallel openssl + \`sync\` ${
      seconds(base.median)
    }. **Where the time goes** (median of 3 \`commit --json\` runs on a fresh hard-linked staging folder): ${
      seconds(c.wall)
    } wall = ${seconds(Math.max(0, c.wall - c.inProcess))} start-up and exit + ${
      seconds(c.hashing)
    } listing and hashing with the per-file fsync (the manifest's \`write_duration_s\`) + ${
      seconds(rest)
    } for the manifest, folder fsyncs, lock, rename, \`latest\` and the state file: hashing alone is ${
      (c.hashing / base.median).toFixed(2)
    }× the whole baseline.`,
  );
  if (d.commitStrace) {
    const fsync = d.commitStrace.rows.find((row) => row.syscall === "fsync");
    out.push(
      `${straceLine(d.commitStrace, 5)}${
        fsync ? `: the ${fsync.calls} fsyncs wait ${seconds(fsync.seconds)} in all (wall, summed over threads)` : ""
      }. With hard-linked staging the files have no dirty pages, so the fsyncs are cheap; the copied-staging ` +
        `rows show the case where they write the data back.`,
    );
  }
  const dirty = m.get("c_commit_dirty");
  const dirtyBase = m.get("c_openssl_sync_dirty");
  if (dirty && dirtyBase) {
    out.push(
      `With copied staging (dirty pages) commit takes ${seconds(dirty.median)} against ${
        seconds(dirtyBase.median)
      } for openssl + \`sync\` (${pairedRatio(dirty, dirtyBase).toFixed(2)}×).`,
    );
  }
  if (d.hash) {
    out.push(
      `**What lifts it.** Commit hashes with the same \`hashFile\` loop as validation (plus 8 sampled 64 KiB ` +
        `regions per file and an fsync per file), so the proposal under the openssl target applies unchanged: ` +
        `in process, its loop hashes one stream at ${d.hash.proto} MB/s against ${d.hash.hashFile} MB/s.`,
    );
  }
  return out;
}

function startupMedian(d: Diagnostics, id: string): number | undefined {
  return d.startup?.find((row) => row.id === id)?.median;
}

function depthFinding(m: Map<string, Measurement>, d: Diagnostics, depth: "fast" | "sample", bound: number): string[] {
  const full = m.get("v_full")!;
  const row = m.get(depth === "fast" ? "v_fast" : "v_sample")!;
  const inside = depth === "fast" ? d.fast! : d.sample!;
  const deno = m.get("u_deno");
  const help = m.get("u_help");
  const lazy = startupMedian(d, "p_lazy_validate");
  const budget = full.median * bound;
  const out: string[] = [];
  out.push(
    `**Where the time goes.** ${bound * 100}% of full validation is ${seconds(budget)}; \`validate ${
      depth === "fast" ? "--fast" : "--sample-bytes 65536"
    }\` takes ${seconds(row.median)}, of which ckptkit reports ${
      seconds(inside.inProcess)
    } inside \`validateCheckpoint\` (\`duration_s\`, median of 5 \`--json\` runs): ${
      pct(inside.inProcess / full.median)
    } of full validation. The rest is start-up and exit: ${
      help ? `\`--help\` alone takes ${seconds(help.median)}, ` : ""
    }${deno ? `Deno alone ${seconds(deno.median)}. ` : ""}` +
      (d.npmFast ? `This command loads ${npmLine(d.npmFast)}.` : ""),
  );
  if (depth === "fast" && deno) {
    const throughput = full.bytes! / full.median;
    const breakEven = row.median / bound * throughput;
    out.push(
      `At ${seconds(row.median)} per run and ${(throughput / 1e6).toFixed(0)} MB/s for full validation, ` +
        `\`--fast\` stays under 1% of full validation only for checkpoints above ${
          (breakEven / 1e9).toFixed(0)
        } GB. For this checkpoint the budget (${seconds(budget)}) is ${
          budget < deno.median ? "below" : `only ${(budget / deno.median).toFixed(1)}×`
        } Deno's own start-up (${seconds(deno.median)}), so a \`deno run\` process cannot meet it whatever it ` +
        `loads. The check itself takes ${seconds(inside.inProcess)} in process, ${
          inside.inProcess < budget
            ? "within the budget: only an in-process call or a resident process (`serve` already validates on a " +
              "timer) meets the target at this checkpoint size."
            : "over the budget as well."
        }`,
    );
  }
  const needed = new Set(["zod", "commander", "@commander-js/extra-typings", "canonicalize"]);
  const loadsOnlyNeeded = d.npmFast !== undefined && d.npmFast.byPackage.every(([pkg]) => needed.has(pkg));
  if (lazy !== undefined && loadsOnlyNeeded) {
    out.push(
      `**What lifts it.** The command already loads only the npm packages it needs; a script importing just those ` +
        `(and node:crypto) takes ${seconds(lazy)}, and ckptkit's own modules and the check take the rest. What is ` +
        "left: zod (95 of the files) for checking the manifest, which a hand-written check would remove at the cost " +
        "of maintaining one, or no new process at all: `serve` validates on a timer in a resident process, and the " +
        "library's `validateCheckpoint` runs in the caller's.",
    );
  } else if (lazy !== undefined) {
    const predicted = lazy + inside.inProcess;
    out.push(
      `**What lifts it.** Loading only the modules \`validate\` needs (commander, zod, canonicalize, node:crypto: ` +
        `${
          seconds(lazy)
        } for \`deno run\` of a script importing just those, plus ckptkit's own modules) would bring this command to about ${
          seconds(predicted)
        }: ${pct(predicted / full.median)} of full validation${
          predicted < budget ? " (meets the target)" : " (still above the target)"
        }. The proposal is under the \`--help\` target.`,
    );
  }
  return out;
}

function scanFinding(scan: Measurement, d: Diagnostics): string[] {
  const s = d.scan!;
  const out = [
    `ckptkit reports ${seconds(s.inProcess)} inside \`scanRoot\` (\`summary.duration_s\`) of ${
      seconds(scan.median)
    } wall; the rest is start-up and exit.`,
  ];
  if (d.scanStrace) out.push(`${straceLine(d.scanStrace)}.`);
  if (d.scanProfile) out.push(`V8 CPU profile (\`deno run --cpu-prof --cpu-prof-md\`), self time: ${d.scanProfile}.`);
  out.push(
    "Per checkpoint, `scan --fast` lstats every file (`listTree`), reads the manifest, checks it against its zod " +
      "schema and recomputes its canonical-JSON digest. If this misses, the levers are more checkpoints in flight " +
      "for metadata-only scans (`inFlight` is 16 in `src/core/scan.ts`) and the start-up work under the `--help` target.",
  );
  return out;
}

function rssFinding(rss: RssRow[]): string[] {
  const get = (id: string) => rss.find((row) => row.id === id)?.kib ?? null;
  const help = get("rss_help");
  const shards = get("rss_shards");
  const jobs1 = get("rss_shards_jobs1");
  const big = get("rss_big");
  if (help === null || big === null) return [];
  const mib = (kib: number) => `${(kib / 1024).toFixed(0)} MiB`;
  return [
    `The runtime with the CLI's modules loaded (\`--help\`) peaks at ${mib(help)}; validating the big file on ` +
    `the main thread peaks ${mib(big - help)} higher.` +
    (shards !== null && jobs1 !== null
      ? ` On the multi-file checkpoint the default \`--jobs\` peaks at ${mib(shards)} against ${
        mib(jobs1)
      } with \`--jobs 1\`: the difference is the hash pool's workers (V8 isolates), which start only for ` +
        "2 files or more and 64 MiB or more."
      : ""),
  ];
}

function startupFinding(m: Map<string, Measurement>, d: Diagnostics): string[] {
  const help = m.get("u_help")!;
  const get = (id: string) => startupMedian(d, id);
  const empty = get("p_empty");
  const program = get("p_program");
  const out: string[] = [];
  const probes = (d.startup ?? []).filter((row) =>
    row.id !== "p_empty" && row.id !== "p_program" &&
    row.id !== "p_lazy_validate"
  );
  out.push(
    `**Where the time goes.** \`--help\` takes ${seconds(help.median)}. \`deno run\` of an empty script with the ` +
      `same flags takes ${empty !== undefined ? seconds(empty) : "?"}; of a script that only imports ` +
      `\`src/cli/program.ts\` (what every command loads before parsing its arguments) ${
        program !== undefined ? seconds(program) : "?"
      }: module loading is the start-up. Scripts importing one dependency each: ${
        probes.map((row) => `${row.name.replace(/^import /, "")} ${seconds(row.median)}`).join(", ")
      } (each includes Deno's own start-up and, for npm packages, the npm resolver's).` +
      (d.npmHelp ? ` strace: \`--help\` opens ${npmLine(d.npmHelp, 10)}; it needs only commander's.` : "") +
      (d.helpProfile ? ` V8 CPU profile of \`--help\`, self time: ${d.helpProfile}.` : ""),
  );
  const commander = get("p_commander");
  const lazy = get("p_lazy_validate");
  out.push(
    "**Proposal (src/).** Load modules when a command runs, not when the program is declared: " +
      (d.barrel && d.barrel.packages > 1
        ? `(0) \`src/deps.ts\` re-exports all ${d.barrel.packages} npm packages from one module and ${d.barrel.importers} ` +
          "modules of src/ import from it, so importing any one dependency evaluates all of them; give each " +
          "dependency its own module (`src/deps/zod.ts`, …, each with its full `npm:` specifier, which keeps " +
          "`mod.ts` importable from outside the repository) or write the specifier where it is used; "
        : "") +
      "(1) `src/cli/*.ts` import only commander and their option declarations, and each `.action` imports its " +
      'implementation (`const { validateCheckpoint } = await import("../validate.ts")`); ' +
      "(2) `src/cli/context.ts` imports `src/core/config.ts` (yaml + zod) only when `--config` or `CKPTKIT_CONFIG` is " +
      "set; (3) `prom-client` (and its `@opentelemetry/api`) only in `emit-metrics` and `serve`; (4) constants " +
      "that the option declarations need (`DEFAULT_SAMPLE_BYTES`, `HASH_ALGORITHMS`, `DEFAULT_LOCK_TIMEOUT_MS`) " +
      "move to a leaf module so that declaring options does not load `src/fs/hashing.ts` and what it imports; " +
      `(5) \`src/core/manifest.ts\` checks the manifest with zod, which alone opens ${
        d.npmHelp?.byPackage.find(([pkg]) => pkg === "zod")?.[1] ?? "many"
      } files: a hand-written check (or \`zod/mini\`) would take it off every reading command's path.` +
      (commander !== undefined
        ? ` Expected: \`--help\` ≈ ${seconds(commander)} (the commander-only script)${
          lazy !== undefined ? `, \`validate\` start-up ≈ ${seconds(lazy)} (the script importing what it needs)` : ""
        }.`
        : ""),
  );
  return out;
}
