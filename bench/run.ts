/**
 * `deno task bench`: ckptkit's performance against the tools an operator
 * would otherwise reach for, checked against the targets of the
 * "Performance" issue, with measurements of what bounds every missed one.
 *
 * One run builds its data in a temporary work folder, times everything with
 * hyperfine (warm page cache, medians of interleaved rounds), measures peak
 * RSS with GNU time, and writes a Markdown report (machine, versions, exact
 * commands, tables, targets with PASS/MISS, findings) to `--out`:
 *
 * 1. checkpoints of `--files` × `--file-size` (8 × 512 MiB) and of one
 *    `--big-file-size` file (4 GiB), committed by `ckptkit commit`, plus a
 *    tiny one and a root of `--scan-checkpoints` × `--scan-files` small
 *    checkpoints (1,000 × 16) written in this process by the library writer;
 * 2. full validation against `sha256sum -c`, parallel `openssl dgst`, `b3sum`,
 *    `--jobs 1` and `--jobs 2`, and a prototype of a faster hashing loop
 *    (`bench/proto_validate.ts`, not ckptkit);
 * 3. `ckptkit commit` of a staged folder against `sha256sum` + `sync` and
 *    parallel `openssl` + `sync`, each run on a fresh staging folder made by
 *    hyperfine `--prepare` (hard links, so only the commit is timed; and once
 *    more with copied files whose dirty pages the fsyncs must write);
 * 4. `validate --fast` and `--sample-bytes 65536`;
 * 5. `scan --fast` of the many-checkpoint root;
 * 6. peak RSS of `validate` on the big file and on the 8-file checkpoint;
 * 7. start-up: `ckptkit --help`, `validate` of the tiny checkpoint,
 *    `sha256sum` of its file, and Deno alone;
 * 8. many files (issue #14, `bench/_many.ts`): a checkpoint of `--many-files`
 *    × 64 B in `--many-folders` folders (100,000 in 1,000) committed by
 *    `ckptkit commit`: full `validate` against `sha256sum -c`, `validate
 *    --fast`, `commit` of the same files staged by hard links against parallel
 *    `sha256sum` + an fsync of every file (`xargs -0 sync`); `validate --fast`
 *    of a checkpoint of `--huge-manifest-entries` (1,000,000) empty files;
 *    `scan --fast` of a root holding 1, 2 and 4 copies of the 100,000-file
 *    checkpoint; peak RSS of validate, `--fast` and commit at 100,000 files.
 *
 * `--only big-files` runs sections 1–7, `--only many-files` section 8 alone
 * (a few minutes).
 *
 * Before every round the benchmark watches the machine for a second and, when
 * other work is using the CPU, waits for it to stop (at most
 * `--max-idle-wait` seconds over the run); the report says what it saw.
 *
 * Missing tools (hyperfine, b3sum, GNU time, strace) are installed with
 * `apt-get` when running as root, unless `--no-install`. The work folder is
 * removed at the end, on errors and on Ctrl-C (SIGINT, SIGTERM, SIGHUP).
 *
 * ```sh
 * deno task bench                          # the full run → bench/RESULTS.md (about 10 minutes)
 * deno task bench -- --quick               # smoke test → $TMPDIR/ckptkit-bench-quick.md
 * deno task bench -- --only many-files     # the many-file section alone → bench/RESULTS-many-files.md
 * deno task bench -- --files 4 --file-size 1GiB --dir /scratch --out /tmp/r.md
 * ```
 *
 * @module
 */

import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { buildCheckpoint, buildScanRoot, type Checkpoint, formatBytes, type ScanRoot } from "./_fixtures.ts";
import {
  barrelInfo,
  commitBreakdown,
  cpuProfileTop,
  hashProbe,
  inProcessSeconds,
  npmFilesLoaded,
  readThreads,
  startupBreakdown,
  straceSummary,
  workerProbe,
} from "./_diagnose.ts";
import { type Diagnostics, evaluateTargets, type Target, type TargetContext } from "./_findings.ts";
import {
  capture,
  ckptkitArgv,
  ckptkitFlags,
  ckptkitShell,
  ensureTool,
  firstLine,
  interrupted,
  mustShell,
  progress,
  REPO,
  shellQuote,
  stopChildren,
  which,
} from "./_process.ts";
import { LoadWatch } from "./_load.ts";
import {
  buildManyFixtures,
  count,
  hugeCases,
  type HugeOutcome,
  hugeOutcome,
  manyCommitCases,
  type ManyFixtures,
  manyScanCases,
  manyStaging,
  manyValidationCases,
  measureManyRss,
} from "./_many.ts";
import { describeMachine, renderReport, type RssRow, type Section, summaryText } from "./_report.ts";
import { type Case, type Measurement, pairedRatio, peakRssKib, timeGroup, type Timer } from "./_timing.ts";

const MIB = 1024 * 1024;
/** Region size recorded by `commit` by default, so `--sample-bytes` matches it. */
const SAMPLE_BYTES = 65536;
/** Size of each file of the scan root's checkpoints. */
const SCAN_FILE_BYTES = 4096;
/** Size of the tiny checkpoint's one file. */
const TINY_BYTES = 4096;

/** The default report of a full run; `--quick` writes elsewhere so it never replaces it. */
const DEFAULT_OUT = join(REPO, "bench", "RESULTS.md");
/** The default report of `--only many-files`, so it does not replace the full run's. */
const MANY_OUT = join(REPO, "bench", "RESULTS-many-files.md");
/** Size of each file of the many-file checkpoint. */
const MANY_FILE_BYTES = 64;
/** The benchmark's sections, for `--only`. */
const SECTIONS = ["big-files", "many-files"] as const;
type SectionName = typeof SECTIONS[number];
const QUICK_OUT = join(tmpdir(), "ckptkit-bench-quick.md");

const USAGE = `Usage: deno task bench -- [options]

  --dir <path>              parent of the work folder (default: ${tmpdir()}); the work folder is removed at the end
  --files <n>               files of the multi-file checkpoint (default 8)
  --file-size <bytes>       size of each of them: an integer or with a KiB/MiB/GiB suffix (default 512MiB)
  --big-file-size <bytes>   size of the single-file checkpoint (default 4GiB)
  --scan-checkpoints <n>    checkpoints in the root that scan --fast reads (default 1000)
  --scan-files <n>          files per such checkpoint, ${SCAN_FILE_BYTES} bytes each (default 16)
  --many-files <n>          files of ${MANY_FILE_BYTES} B in the many-file checkpoint (default 100000)
  --many-folders <n>        folders they (and the huge manifest's files) are spread over (default 1000)
  --huge-manifest-entries <n>
                            empty files listed by the huge manifest (default 1000000)
  --only <sections>         run only these, comma-separated: big-files (8 × 512 MiB, 4 GiB, scan of 1,000
                            checkpoints, start-up), many-files (the many-file section alone, a few minutes)
  --runs <n>                interleaved rounds per group; medians over every run (default 5; the many-file
                            groups take part in at most 3)
  --out <path>              Markdown report (default bench/RESULTS.md; with --only many-files
                            bench/RESULTS-many-files.md; with --quick ${QUICK_OUT})
  --diagnose <when>         auto: explain missed targets (default); all: every target; none
  --max-idle-wait <s>       before every round, wait for other work on the machine to stop, at most this many
                            seconds over the whole run (default 1200; with --quick 60)
  --quick                   smoke test: 4 × 4 MiB, one 16 MiB file, 50 checkpoints, 1,000 small files in 10
                            folders, 10,000 entries, 2 rounds (explicit flags win)
  --no-install              do not apt-get install missing tools (hyperfine, b3sum, time, strace)
  --no-hyperfine            time with the built-in timer even when hyperfine is installed
  -h, --help                show this help
`;

/** The benchmark's parameters after defaults and `--quick` are applied. */
export interface Options {
  dir: string;
  files: number;
  fileSize: number;
  bigFileSize: number;
  scanCheckpoints: number;
  scanFiles: number;
  /** Many-file section: files of the small-file checkpoint, their folders, entries of the huge manifest. */
  manyFiles: number;
  manyFolders: number;
  hugeEntries: number;
  /** The sections to run. */
  only: Set<SectionName>;
  runs: number;
  out: string;
  diagnose: "auto" | "all" | "none";
  /** Seconds the whole run may spend waiting for other work on the machine to stop. */
  maxIdleWait: number;
  quick: boolean;
  install: boolean;
  hyperfine: boolean;
  /** The flags as given, for the report's "produced by" line. */
  argv: string[];
}

// ---------------------------------------------------------------- options --

/** Parses a byte count: a plain integer, or one with a KiB/MiB/GiB suffix. */
export function parseSize(flag: string, text: string): number {
  const match = /^(\d+)\s*(b|kib|mib|gib)?$/i.exec(text.trim());
  if (!match) throw new Error(`--${flag}: not a byte count: ${text}`);
  const scale: Record<string, number> = { b: 1, kib: 1024, mib: MIB, gib: 1024 * MIB };
  const bytes = Number(match[1]) * scale[(match[2] ?? "b").toLowerCase()];
  if (!Number.isSafeInteger(bytes) || bytes <= 0) throw new Error(`--${flag} must be positive: ${text}`);
  return bytes;
}

function parsePositive(flag: string, text: string): number {
  const value = Number(text);
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(value) || value <= 0) {
    throw new Error(`--${flag} must be a positive integer: ${text}`);
  }
  return value;
}

function parseNonNegative(flag: string, text: string): number {
  const value = Number(text);
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(value)) {
    throw new Error(`--${flag} must be a non-negative integer: ${text}`);
  }
  return value;
}

/** Parses the flags; `--quick` only changes defaults, so explicit flags win. */
export function parseOptions(args: string[]): Options | null {
  // `deno task bench -- …` passes the `--` through; drop it.
  const argv = args[0] === "--" ? args.slice(1) : args;
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      dir: { type: "string" },
      files: { type: "string" },
      "file-size": { type: "string" },
      "big-file-size": { type: "string" },
      "scan-checkpoints": { type: "string" },
      "scan-files": { type: "string" },
      "many-files": { type: "string" },
      "many-folders": { type: "string" },
      "huge-manifest-entries": { type: "string" },
      only: { type: "string" },
      runs: { type: "string" },
      out: { type: "string" },
      diagnose: { type: "string" },
      "max-idle-wait": { type: "string" },
      quick: { type: "boolean", default: false },
      "no-install": { type: "boolean", default: false },
      "no-hyperfine": { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) return null;
  const quick = values.quick;
  const diagnose = values.diagnose ?? "auto";
  if (diagnose !== "auto" && diagnose !== "all" && diagnose !== "none") {
    throw new Error(`--diagnose must be auto, all or none: ${diagnose}`);
  }
  const size = (flag: string, fallback: number) => {
    const text = (values as Record<string, unknown>)[flag];
    return typeof text === "string" ? parseSize(flag, text) : fallback;
  };
  const count = (flag: string, fallback: number) => {
    const text = (values as Record<string, unknown>)[flag];
    return typeof text === "string" ? parsePositive(flag, text) : fallback;
  };
  const only = new Set<SectionName>();
  for (const name of (values.only ?? SECTIONS.join(",")).split(",").map((part) => part.trim())) {
    if (!(SECTIONS as readonly string[]).includes(name)) {
      throw new Error(`--only takes ${SECTIONS.join(", ")} (comma-separated): ${values.only}`);
    }
    only.add(name as SectionName);
  }
  const manyOnly = !only.has("big-files");
  return {
    dir: resolve(values.dir ?? tmpdir()),
    files: count("files", quick ? 4 : 8),
    fileSize: size("file-size", (quick ? 4 : 512) * MIB),
    bigFileSize: size("big-file-size", (quick ? 16 : 4096) * MIB),
    scanCheckpoints: count("scan-checkpoints", quick ? 50 : 1000),
    scanFiles: count("scan-files", 16),
    manyFiles: count("many-files", quick ? 1000 : 100000),
    manyFolders: count("many-folders", quick ? 10 : 1000),
    hugeEntries: count("huge-manifest-entries", quick ? 10000 : 1000000),
    only,
    runs: count("runs", quick ? 2 : 5),
    out: values.out ? resolve(values.out) : quick ? QUICK_OUT : manyOnly ? MANY_OUT : DEFAULT_OUT,
    diagnose,
    maxIdleWait: values["max-idle-wait"] === undefined
      ? quick ? 60 : 1200
      : parseNonNegative("max-idle-wait", values["max-idle-wait"]),
    quick,
    install: !values["no-install"],
    hyperfine: !values["no-hyperfine"],
    argv,
  };
}

// ------------------------------------------------------------------ setup --

/** The tools the benchmark runs. */
interface Tools {
  hyperfine: string | null;
  b3sum: string | null;
  time: string | null;
  strace: string | null;
  sha256sum: string;
  openssl: string;
}

async function findTools(options: Options, notes: string[]): Promise<Tools> {
  const tools = {
    hyperfine: options.hyperfine ? await ensureTool("hyperfine", "hyperfine", options.install, notes) : null,
    b3sum: await ensureTool("b3sum", "b3sum", options.install, notes),
    time: await ensureTool("time", "time", options.install, notes),
    strace: options.diagnose === "none" ? null : await ensureTool("strace", "strace", options.install, notes),
    sha256sum: await which("sha256sum"),
    openssl: await which("openssl"),
  };
  if (!tools.sha256sum || !tools.openssl) throw new Error("sha256sum and openssl are required");
  return { ...tools, sha256sum: tools.sha256sum, openssl: tools.openssl };
}

/** Refuses to start when the work folder's file system cannot hold the data. */
async function checkSpace(options: Options): Promise<void> {
  let needed = 256 * MIB;
  let inodes = 0;
  if (options.only.has("big-files")) {
    // The multi-file checkpoint, its copy for the dirty commit, the big file.
    needed += 2 * options.files * options.fileSize + options.bigFileSize;
    inodes += options.scanCheckpoints * (options.scanFiles + 2);
  }
  if (options.only.has("many-files")) {
    // A block per small file, 2 manifests of ~330 B per file (one per commit), ~130 B per huge entry.
    needed += options.manyFiles * (4096 + 700) + options.hugeEntries * 200;
    inodes += 2 * options.manyFiles + options.hugeEntries + 4 * options.manyFolders + 16;
  }
  const out = await capture("df", ["-B1", "--output=avail,iavail", options.dir]);
  const [available, iavail] = (out.stdout.trim().split("\n").at(-1) ?? "").trim().split(/\s+/).map(Number);
  if (out.code === 0 && Number.isFinite(available) && available < needed) {
    throw new Error(
      `${options.dir} has ${formatBytes(available)} free; the benchmark needs about ${formatBytes(needed)}`,
    );
  }
  if (out.code === 0 && Number.isFinite(iavail) && iavail > 0 && iavail < inodes) {
    throw new Error(`${options.dir} has ${iavail} free inodes; the benchmark needs about ${inodes}`);
  }
}

/** Reads files once so that every timed run finds them in the page cache. */
async function warmCache(files: string[]): Promise<void> {
  await mustShell(`cat ${files.map(shellQuote).join(" ")} > /dev/null`);
}

// ------------------------------------------------------------------ cases --

/** Everything the cases are built from. */
interface Fixtures {
  shards: Checkpoint;
  big: Checkpoint;
  tiny: Checkpoint;
  scan: ScanRoot;
  /** Hard links to the shards, the source of every staged commit. */
  commitSource: string;
  /** Root and staging folder of the hard-linked commits. */
  commitRoot: string;
  /** Root of the commits whose files are fresh copies (dirty pages). */
  dirtyRoot: string;
  /** An empty script, for Deno's bare start-up. */
  empty: string;
}

const q = shellQuote;

/** Name of the prototype's rows. */
const PROTO_NAME = "prototype: proto_validate.ts (readSync 256 KiB; not ckptkit)";

/**
 * The prototype with the CLI's flags, loading the CLI's modules first
 * (`--load-cli`) so that its start-up is the CLI's and only the hashing loop differs.
 */
function protoShell(): string {
  return [Deno.execPath(), "run", ...ckptkitFlags(), join(REPO, "bench", "proto_validate.ts"), "--load-cli"]
    .map(q).join(" ");
}

function validationCases(f: Fixtures, tools: Tools): Case[] {
  const ck = ckptkitShell();
  const step = q(f.shards.step);
  const total = f.shards.totalBytes;
  const proto = protoShell();
  const cases: Case[] = [
    {
      id: "v_full",
      name: "ckptkit validate (full sha256, default --jobs)",
      command: `${ck} validate ${step}`,
      bytes: total,
    },
    { id: "v_jobs1", name: "ckptkit validate --jobs 1", command: `${ck} validate --jobs 1 ${step}`, bytes: total },
    { id: "v_jobs2", name: "ckptkit validate --jobs 2", command: `${ck} validate --jobs 2 ${step}`, bytes: total },
    {
      id: "v_sha256sum",
      name: "sha256sum -c SHA256SUMS",
      command: `sha256sum -c ${q(f.shards.sums)}`,
      bytes: total,
      // Every round, although slow: its target's ratio is taken round by round.
      warmup: 0,
    },
    {
      id: "v_openssl",
      name: "xargs -P$(nproc) openssl dgst -sha256",
      // The glob leaves out ckptkit.manifest.json, so the same bytes are hashed.
      command: `ls ${step}/shard-*.bin | xargs -P$(nproc) -n1 openssl dgst -sha256`,
      bytes: total,
    },
  ];
  if (tools.b3sum) {
    cases.push({
      id: "v_b3sum",
      name: "b3sum (BLAKE3, multi-threaded)",
      command: `b3sum ${step}/shard-*.bin`,
      bytes: total,
    });
  }
  cases.push(
    {
      id: "v_proto",
      name: PROTO_NAME,
      command: `${proto} ${step}`,
      bytes: total,
    },
    {
      id: "v_fast",
      name: "ckptkit validate --fast",
      command: `${ck} validate --fast ${step}`,
      bytes: null,
      runsPerRound: 5,
    },
    {
      id: "v_sample",
      name: `ckptkit validate --sample-bytes ${SAMPLE_BYTES}`,
      command: `${ck} validate --sample-bytes ${SAMPLE_BYTES} ${step}`,
      bytes: null,
      runsPerRound: 5,
    },
  );
  return cases;
}

function bigFileCases(f: Fixtures): Case[] {
  const ck = ckptkitShell();
  const proto = protoShell();
  const bytes = f.big.totalBytes;
  return [
    { id: "b_full", name: "ckptkit validate (full sha256)", command: `${ck} validate ${q(f.big.step)}`, bytes },
    { id: "b_openssl", name: "openssl dgst -sha256", command: `openssl dgst -sha256 ${q(f.big.files[0])}`, bytes },
    {
      id: "b_proto",
      name: PROTO_NAME,
      command: `${proto} ${q(f.big.step)}`,
      bytes,
    },
  ];
}

/** The staging folder every commit run starts from, and the command that recreates it. */
function stagingOf(root: string, source: string, link: boolean): { staging: string; prepare: string } {
  const staging = join(root, ".staging-bench");
  // Step 2 is committed by every run, so the previous run's step-2 goes first.
  const copy = link ? "cp -al" : "cp -r";
  return { staging, prepare: `rm -rf ${q(join(root, "step-2"))} ${q(staging)} && ${copy} ${q(source)} ${q(staging)}` };
}

function commitCases(root: string, source: string, link: boolean, bytes: number, slowRounds: number): Case[] {
  const { staging, prepare } = stagingOf(root, source, link);
  const suffix = link ? "" : "_dirty";
  const cases: Case[] = [
    {
      id: `c_commit${suffix}`,
      name: "ckptkit commit (hash, fsync, manifest, rename)",
      command: `${ckptkitShell()} commit ${q(staging)} --root ${q(root)} --step 2`,
      prepare,
      bytes,
      rounds: link ? undefined : slowRounds,
    },
    {
      id: `c_openssl_sync${suffix}`,
      name: "xargs -P$(nproc) openssl dgst -sha256 + sync",
      command: `ls ${q(staging)}/*.bin | xargs -P$(nproc) -n1 openssl dgst -sha256 && sync`,
      prepare,
      bytes,
      rounds: link ? undefined : slowRounds,
    },
  ];
  if (link) {
    cases.push({
      id: "c_sha256sum_sync",
      name: "sha256sum + sync",
      command: `sha256sum ${q(staging)}/*.bin && sync`,
      prepare,
      bytes,
      rounds: slowRounds,
      warmup: 0,
    });
  }
  return cases;
}

function scanCases(f: Fixtures): Case[] {
  return [{
    id: "s_scan",
    name: `ckptkit scan --fast (${f.scan.checkpoints} checkpoints × ${f.scan.filesPerCheckpoint} files)`,
    command: `${ckptkitShell()} scan --fast ${q(f.scan.root)}`,
    bytes: null,
    runsPerRound: 2,
  }];
}

function startupCases(f: Fixtures): Case[] {
  const ck = ckptkitShell();
  return [
    { id: "u_help", name: "ckptkit --help", command: `${ck} --help`, bytes: null, runsPerRound: 10 },
    {
      id: "u_validate_tiny",
      name: `ckptkit validate (tiny checkpoint: 1 × ${formatBytes(TINY_BYTES)})`,
      command: `${ck} validate ${q(f.tiny.step)}`,
      bytes: null,
      runsPerRound: 10,
    },
    {
      id: "u_sha256sum_tiny",
      name: "sha256sum of the same file",
      command: `sha256sum ${q(f.tiny.files[0])}`,
      bytes: null,
      runsPerRound: 10,
    },
    {
      id: "u_deno",
      name: "deno run -A empty.ts (Deno alone)",
      command: `${q(Deno.execPath())} run -A ${q(f.empty)}`,
      bytes: null,
      runsPerRound: 10,
    },
  ];
}

// ------------------------------------------------------------------- run --

async function buildFixtures(options: Options, work: string): Promise<Fixtures> {
  progress(`writing ${options.files} × ${formatBytes(options.fileSize)} of random data in ${work}`);
  const shards = await buildCheckpoint(work, "shards", options.files, options.fileSize);
  progress(`writing 1 × ${formatBytes(options.bigFileSize)}`);
  const big = await buildCheckpoint(work, "big", 1, options.bigFileSize, "model");
  const tiny = await buildCheckpoint(work, "tiny", 1, TINY_BYTES, "weights");
  progress(
    `writing ${options.scanCheckpoints} checkpoints × ${options.scanFiles} files with the library writer`,
  );
  const scan = await buildScanRoot(work, options.scanCheckpoints, options.scanFiles, SCAN_FILE_BYTES);
  progress(`  ${scan.seconds.toFixed(1)} s`);
  const commitSource = join(work, "commit-source");
  await Deno.mkdir(commitSource);
  await mustShell(`cp -al ${shards.files.map(q).join(" ")} ${q(commitSource)}/`);
  const commitRoot = join(work, "commit", "root");
  const dirtyRoot = join(work, "commit-dirty", "root");
  await Deno.mkdir(commitRoot, { recursive: true });
  await Deno.mkdir(dirtyRoot, { recursive: true });
  const empty = join(work, "empty.ts");
  await Deno.writeTextFile(empty, "");
  return { shards, big, tiny, scan, commitSource, commitRoot, dirtyRoot, empty };
}

async function measureRss(time: string | null, f: Fixtures | null, tools: Tools): Promise<RssRow[]> {
  if (!time) return [];
  progress("measuring peak RSS");
  const ck = ckptkitArgv();
  const help: [string, string, string[]] = ["rss_help", "ckptkit --help (the runtime and modules alone)", [
    ...ck,
    "--help",
  ]];
  const rows: [string, string, string[]][] = !f ? [help] : [
    ["rss_big", `ckptkit validate, 1 × ${formatBytes(f.big.fileSize)} (main thread)`, [...ck, "validate", f.big.step]],
    [
      "rss_shards",
      `ckptkit validate, ${f.shards.files.length} × ${formatBytes(f.shards.fileSize)} (default --jobs)`,
      [...ck, "validate", f.shards.step],
    ],
    ["rss_shards_jobs1", "ckptkit validate --jobs 1, same checkpoint", [
      ...ck,
      "validate",
      "--jobs",
      "1",
      f.shards.step,
    ]],
    help,
    ["rss_openssl", `openssl dgst -sha256, 1 × ${formatBytes(f.big.fileSize)}`, [
      tools.openssl,
      "dgst",
      "-sha256",
      f.big.files[0],
    ]],
  ];
  const result: RssRow[] = [];
  for (const [id, name, argv] of rows) {
    result.push({ id, name, kib: await peakRssKib(time, argv), command: argv.map(q).join(" ") });
  }
  return result;
}

/** Runs one diagnostic; one that fails (the CLI changed, a tool is missing) costs its paragraph, not the report. */
type Attempt = <T>(what: string, measure: () => Promise<T | null>) => Promise<T | undefined>;

/** Runs the measurements that explain the targets `wanted` says to explain; each is best-effort. */
async function diagnose(
  wanted: (id: string) => boolean,
  f: Fixtures | null,
  many: ManyFixtures | null,
  tools: Tools,
  timer: Timer,
  options: Options,
  notes: string[],
): Promise<Diagnostics> {
  const d: Diagnostics = {};
  if (!tools.strace && options.diagnose !== "none") notes.push("strace is missing: no syscall summaries.");
  const attempt: Attempt = async (what, measure) => {
    try {
      return (await measure()) ?? undefined;
    } catch (err) {
      notes.push(`Diagnostic "${what}" failed: ${(err as Error).message.split("\n")[0]}`);
      return undefined;
    }
  };
  if (f) await diagnoseBig(d, wanted, f, tools, timer, options, attempt);
  if (many) await diagnoseMany(d, wanted, many, tools, timer, attempt);
  return d;
}

/** The many-file targets' diagnostics: in-process time of each missed command and its syscalls. */
async function diagnoseMany(
  d: Diagnostics,
  wanted: (id: string) => boolean,
  many: ManyFixtures,
  tools: Tools,
  timer: Timer,
  attempt: Attempt,
): Promise<void> {
  const ck = ckptkitArgv();
  const strace = tools.strace;
  const scratch = timer.scratch;
  if (wanted("many_sha256sum")) {
    progress("diagnosing: full validation of many files");
    d.manyValidate = await attempt(
      "validate --json (many files)",
      () => inProcessSeconds(["validate", many.step], (doc) => doc.duration_s, 1),
    );
    if (strace) {
      d.manyValidateStrace = await attempt(
        "strace of validate (many files)",
        () => straceSummary(strace, [...ck, "validate", many.step], scratch),
      );
    }
  }
  if (wanted("many_fast")) {
    progress("diagnosing: validate --fast of many files");
    d.manyFast = await attempt(
      "validate --fast --json (many files)",
      () => inProcessSeconds(["validate", "--fast", many.step], (doc) => doc.duration_s, 3),
    );
    if (strace) {
      d.manyFastStrace = await attempt(
        "strace of validate --fast (many files)",
        () => straceSummary(strace, [...ck, "validate", "--fast", many.step], scratch),
      );
    }
  }
  if (wanted("huge_fast")) {
    progress("diagnosing: validate --fast of the huge manifest");
    d.hugeFast = await attempt(
      "validate --fast --json (huge manifest)",
      () => inProcessSeconds(["validate", "--fast", many.hugeStep], (doc) => doc.duration_s, 1),
    );
  }
  if (wanted("many_commit")) {
    progress("diagnosing: where a many-file commit's time goes");
    const { staging, prepare } = manyStaging(many);
    const args = ["commit", staging, "--root", many.commitRoot, "--step", "2"];
    d.manyCommit = await attempt(
      "commit --json (many files)",
      () => commitBreakdown(args, prepare, join(many.commitRoot, "step-2", "ckptkit.manifest.json"), 1),
    );
    if (strace) {
      d.manyCommitStrace = await attempt("strace of commit (many files)", async () => {
        await mustShell(prepare);
        return await straceSummary(strace, [...ck, ...args], scratch, ["-w"]);
      });
    }
  }
}

/** The big-file targets' diagnostics. */
async function diagnoseBig(
  d: Diagnostics,
  wanted: (id: string) => boolean,
  f: Fixtures,
  tools: Tools,
  timer: Timer,
  options: Options,
  attempt: Attempt,
): Promise<void> {
  const scratch = timer.scratch;
  const ck = ckptkitArgv();
  const strace = tools.strace;
  if (wanted("sha256sum") || wanted("openssl") || wanted("commit")) {
    progress("diagnosing: one hashing stream, in process");
    await warmCache([f.shards.files[0]]);
    d.hash = await attempt("hash probe", () => hashProbe(f.shards.files[0], 3));
    d.worker = await attempt("worker probe", () => workerProbe(5));
    d.validate = await attempt(
      "validate --json",
      () => inProcessSeconds(["validate", f.shards.step], (doc) => doc.duration_s),
    );
    d.barrel = await attempt("src/deps.ts", barrelInfo);
    if (strace) {
      d.npmValidate = await attempt(
        "npm files of validate",
        () => npmFilesLoaded(strace, [...ck, "validate", f.shards.step], scratch),
      );
      d.validateStrace = await attempt(
        "strace of validate",
        () => straceSummary(strace, [...ck, "validate", f.shards.step], scratch),
      );
      const chunk = d.hash?.chunkBytes;
      if (chunk) {
        d.readThreads = await attempt(
          "read threads",
          () => readThreads(strace, [...ck, "validate", f.big.step], chunk, scratch),
        );
      }
    }
  }
  if (wanted("commit")) {
    progress("diagnosing: where a commit's time goes");
    const { staging, prepare } = stagingOf(f.commitRoot, f.commitSource, true);
    const args = ["commit", staging, "--root", f.commitRoot, "--step", "2"];
    d.commit = await attempt(
      "commit --json",
      () => commitBreakdown(args, prepare, join(f.commitRoot, "step-2", "ckptkit.manifest.json")),
    );
    if (strace) {
      d.commitStrace = await attempt("strace of commit", async () => {
        await mustShell(prepare);
        return await straceSummary(strace, [...ck, ...args], scratch, [
          "-w",
          "-e",
          "trace=fsync,fdatasync,read,openat,rename,renameat2,flock",
        ]);
      });
    }
  }
  if (wanted("sample") || wanted("fast") || wanted("help")) {
    progress("diagnosing: start-up");
    d.barrel = await attempt("src/deps.ts", barrelInfo);
    d.fast = await attempt(
      "validate --fast --json",
      () => inProcessSeconds(["validate", "--fast", f.shards.step], (doc) => doc.duration_s, 5),
    );
    d.sample = await attempt("validate --sample-bytes --json", () =>
      inProcessSeconds(
        ["validate", "--sample-bytes", String(SAMPLE_BYTES), f.shards.step],
        (doc) => doc.duration_s,
        5,
      ));
    d.startup = await attempt("start-up breakdown", () => startupBreakdown(scratch, options.runs, timer));
    if (strace) {
      d.npmHelp = await attempt("npm files of --help", () => npmFilesLoaded(strace, [...ck, "--help"], scratch));
      d.npmFast = await attempt(
        "npm files of validate --fast",
        () => npmFilesLoaded(strace, [...ck, "validate", "--fast", f.shards.step], scratch),
      );
    }
    d.helpProfile = await attempt("CPU profile of --help", () => cpuProfileTop(["--help"], scratch));
  }
  if (wanted("scan")) {
    progress("diagnosing: scan --fast");
    d.scan = await attempt("scan --json", () =>
      inProcessSeconds(
        ["scan", "--fast", f.scan.root],
        (doc) => (doc.summary as Record<string, unknown> | undefined)?.duration_s,
      ));
    if (strace) {
      d.scanStrace = await attempt(
        "strace of scan",
        () => straceSummary(strace, [...ck, "scan", "--fast", f.scan.root], scratch),
      );
    }
    d.scanProfile = await attempt(
      "CPU profile of scan",
      () => cpuProfileTop(["scan", "--fast", f.scan.root, "--log-level", "warn"], scratch),
    );
  }
}

/** The big-file sections' timings (1–7 of the header). */
async function runBig(
  f: Fixtures,
  tools: Tools,
  timer: Timer,
  rounds: number,
  slowRounds: number,
): Promise<Section[]> {
  await warmCache(f.shards.files);
  // Back to back within a round: the prototype, openssl, ckptkit and sha256sum (the targets' pairs).
  const validation = await timeGroup("validation", validationCases(f, tools), rounds, timer, [
    "v_fast",
    "v_sample",
    "v_proto",
    "v_openssl",
    "v_full",
    "v_sha256sum",
  ]);
  await warmCache(f.big.files);
  const bigFile = await timeGroup("single big file", bigFileCases(f), rounds, timer);
  await warmCache(f.shards.files);
  const commit = await timeGroup(
    "commit (hard-linked staging)",
    commitCases(f.commitRoot, f.commitSource, true, f.shards.totalBytes, slowRounds),
    rounds,
    timer,
  );
  const dirty = await timeGroup(
    "commit (copied staging)",
    commitCases(f.dirtyRoot, f.commitSource, false, f.shards.totalBytes, slowRounds),
    slowRounds,
    timer,
  );
  // Free the copies' page cache and disk before the next groups.
  await Deno.remove(f.dirtyRoot, { recursive: true });
  const scan = await timeGroup("scan --fast", scanCases(f), rounds, timer);
  await warmCache(f.tiny.files);
  const startup = await timeGroup("start-up", startupCases(f), rounds, timer);
  return [
    {
      title: `Full validation: ${f.shards.files.length} × ${formatBytes(f.shards.fileSize)} = ${
        formatBytes(f.shards.totalBytes)
      }`,
      rows: validation,
    },
    {
      title: `One big file: 1 × ${formatBytes(f.big.fileSize)} (one hashing stream)`,
      rows: bigFile,
    },
    {
      title: `Commit of a staged folder: ${f.shards.files.length} × ${
        formatBytes(f.shards.fileSize)
      }, hard-linked staging`,
      rows: commit,
    },
    {
      title: "Commit of a staged folder: the same files copied into staging (dirty pages the fsyncs must write)",
      rows: dirty,
    },
    { title: "scan --fast", rows: scan },
    { title: "Start-up", rows: startup },
  ];
}

/**
 * The many-file section's timings (8 of the header). Every group takes part
 * in `rounds` interleaved rounds (at most 3: a commit of 100,000 files and its
 * prepare take many seconds); the huge manifest's outcome run is its warm-up.
 */
async function runMany(
  many: ManyFixtures,
  timer: Timer,
  rounds: number,
): Promise<{ sections: Section[]; outcome: HugeOutcome }> {
  const o = many.options;
  const label = `${count(o.files)} × ${formatBytes(o.fileBytes)} in ${count(o.folders)} folders`;
  // The files were just written and committed: their pages, inodes and dentries are cached.
  const validation = await timeGroup("many files: validation", manyValidationCases(many), rounds, timer, [
    "mv_fast",
    "mv_find",
    "mv_full",
    "mv_sha256sum",
  ]);
  const commit = await timeGroup("many files: commit (hard-linked staging)", manyCommitCases(many), rounds, timer);
  const outcome = await hugeOutcome(many);
  const huge = await timeGroup("many files: huge manifest", hugeCases(many), rounds, timer);
  const scan = await timeGroup("many files: scan scaling", manyScanCases(many), rounds, timer);
  const rows = (id: string) => scan.find((row) => row.id === id)!;
  const r12 = pairedRatio(rows("ms_scan2"), rows("ms_scan1"));
  const r24 = pairedRatio(rows("ms_scan4"), rows("ms_scan2"));
  return {
    outcome,
    sections: [
      {
        title: `Many small files: validation of ${label}`,
        rows: validation,
        note:
          `Each group of the many-file section takes part in ${rounds} interleaved rounds. \`sha256sum -c\` reads ` +
          "a SHA256SUMS naming each file by absolute path (written with the data, outside the checkpoint); `find " +
          "-printf '%s'` lstats every file in C: the floor for a metadata-only check.",
      },
      {
        title: `Many small files: commit of ${label}, hard-linked staging`,
        rows: commit,
        note: "Each run (warm-up included) starts on a fresh staging folder of hard links to the committed files, " +
          "made by hyperfine `--prepare` (which also removes the previous run's `step-2`): the prepare takes a few " +
          "seconds instead of the tens of seconds a copy of 100,000 files takes, and only the commit is timed. " +
          "The files then have no dirty data pages, but every link dirtied its inode, so each fsync still commits " +
          "metadata to the journal; with copies, both commands would in addition write every file's data back, " +
          "the same for both, which would dilute ckptkit's own per-file cost that the target is about. The " +
          "baseline hashes with one `sha256sum` process per core over batches of files, then fsyncs every file " +
          "(coreutils `sync FILE…` calls fsync on each file it names).",
      },
      {
        title: `A manifest of ${count(o.hugeEntries)} entries: validate --fast`,
        rows: huge,
        note:
          `The checkpoint is real: ${count(o.hugeEntries)} empty files in ${count(o.folders)} folders, its manifest (${
            (many.hugeManifestBytes / 1e6).toFixed(0)
          } MB) written by the library's \`createManifest\` (a \`ckptkit commit\` of a million files would take ` +
          `minutes; the commit rows time 100,000). Outcome of \`validate --fast --json\` (run once untimed, as ` +
          `the warm-up): ${
            outcome.ok ? "valid" : `not ok: ${outcome.summary}${outcome.detail ? ` (${outcome.detail})` : ""}`
          }. ` +
          "The timed command accepts exit 0 (checked) and 1 (refused or problems found).",
      },
      {
        title: `scan --fast of a root holding 1, 2 and 4 checkpoints of ${count(o.files)} files`,
        rows: scan,
        note:
          `time(2)/time(1) = ${r12.toFixed(2)}, time(4)/time(2) = ${
            r24.toFixed(2)
          } (medians of per-round ratios; 2 would be exactly linear, start-up pulls it below). The checkpoints are ` +
          "hard-linked copies of the committed one, each manifest rewritten for its step; each run's `--prepare` " +
          "moves (renames) the ones it needs into the root and the others out.",
      },
    ],
  };
}

async function run(options: Options, work: string): Promise<string> {
  const started = performance.now();
  const notes: string[] = [];
  await checkSpace(options);
  const tools = await findTools(options, notes);
  if (!tools.b3sum && options.only.has("big-files")) notes.push("b3sum row skipped.");
  const scratch = join(work, "scratch");
  await Deno.mkdir(scratch);
  const watch = new LoadWatch(options.maxIdleWait);
  const timer: Timer = { hyperfine: tools.hyperfine, scratch, beforeRound: (label) => watch.beforeRound(label) };
  const rounds = options.runs;
  const slowRounds = Math.min(rounds, 3);

  const sections: Section[] = [];
  let f: Fixtures | null = null;
  if (options.only.has("big-files")) {
    f = await buildFixtures(options, work);
    sections.push(...await runBig(f, tools, timer, rounds, slowRounds));
  }
  let many: ManyFixtures | null = null;
  let outcome: HugeOutcome | null = null;
  if (options.only.has("many-files")) {
    many = await buildManyFixtures(work, {
      files: options.manyFiles,
      fileBytes: MANY_FILE_BYTES,
      folders: options.manyFolders,
      hugeEntries: options.hugeEntries,
    });
    const result = await runMany(many, timer, slowRounds);
    outcome = result.outcome;
    sections.push(...result.sections);
  }
  await watch.beforeRound("peak RSS");
  const rss = await measureRss(tools.time, f, tools);
  if (tools.time && many) rss.push(...await measureManyRss(tools.time, many));
  if (!tools.time) notes.push("GNU time is missing: peak RSS not measured.");

  const measured = new Map<string, Measurement>(sections.flatMap((section) => section.rows).map((m) => [m.id, m]));
  const context: TargetContext = {
    scanCheckpoints: f?.scan.checkpoints,
    many: many ? { files: many.options.files, hugeEntries: many.options.hugeEntries, hugeOutcome: outcome } : undefined,
  };
  const firstTargets = evaluateTargets(measured, rss, {}, context);
  const missed = new Set(firstTargets.filter((t) => !t.pass).map((t) => t.id));
  const wanted = (id: string) => options.diagnose === "all" || (options.diagnose === "auto" && missed.has(id));
  await watch.beforeRound("diagnostics");
  const diagnostics = await diagnose(wanted, f, many, tools, timer, options, notes);
  const targets: Target[] = evaluateTargets(measured, rss, diagnostics, context);

  const machine = await describeMachine(work, {
    hyperfine: tools.hyperfine,
    sha256sum: tools.sha256sum,
    openssl: tools.openssl,
    b3sum: tools.b3sum,
    strace: tools.strace,
  });
  const report = renderReport({
    options,
    machine,
    fixtures: { shards: f?.shards, big: f?.big, tiny: f?.tiny, scan: f?.scan, many: many ?? undefined },
    sections,
    rss,
    targets,
    diagnostics,
    timer: tools.hyperfine ? `${await firstLine(tools.hyperfine, ["--version"])}` : "built-in timer",
    slowRounds,
    notes,
    load: watch,
    work,
    date: new Date(),
    seconds: (performance.now() - started) / 1000,
  });
  await Deno.mkdir(join(options.out, ".."), { recursive: true });
  await Deno.writeTextFile(options.out, report);
  await formatReport(options.out);
  return summaryText(targets, sections);
}

/**
 * Formats the report with the repository's `deno fmt` settings, so that
 * `deno task check` (which runs `deno fmt --check`) accepts the committed
 * file; wrapping prose to the configured width by hand is not worth it.
 */
async function formatReport(path: string): Promise<void> {
  const out = await capture(Deno.execPath(), ["fmt", "--quiet", "--config", join(REPO, "deno.json"), path]);
  if (out.code !== 0) progress(`deno fmt ${path} failed, the report is left as written:\n${out.stderr}`);
}

/** Removes the work folder; a child that is still dying may add a file, so retry a little. */
async function removeWork(work: string): Promise<void> {
  for (let attempt = 0;; attempt++) {
    try {
      await Deno.remove(work, { recursive: true });
      return;
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) return;
      if (attempt >= 50) throw err;
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }
}

async function mainCli(args: string[]): Promise<number> {
  let options: Options | null;
  try {
    options = parseOptions(args);
  } catch (err) {
    console.error(`${(err as Error).message}\n\n${USAGE}`);
    return 2;
  }
  if (!options) {
    console.log(USAGE);
    return 0;
  }
  await Deno.mkdir(options.dir, { recursive: true });
  const work = await Deno.makeTempDir({ dir: options.dir, prefix: "ckptkit-bench-" });
  // Ctrl-C (or a kill) must not leave gigabytes of test data behind: stop the
  // children first so that nothing writes into the folder while it goes. The
  // handler owns the exit; the main flow waits for it once interrupted.
  let cleanup: Promise<never> | null = null;
  const signals: Deno.Signal[] = ["SIGINT", "SIGTERM", "SIGHUP"];
  const onSignal = () => {
    cleanup ??= (async (): Promise<never> => {
      progress(`interrupted: stopping children and removing ${work}`);
      interrupted.abort();
      await stopChildren();
      await removeWork(work).catch((err) => progress(`could not remove ${work}: ${err.message}`));
      Deno.exit(130);
    })();
  };
  for (const signal of signals) Deno.addSignalListener(signal, onSignal);
  try {
    console.log(await run(options, work));
    progress(`wrote ${options.out}`);
    return 0;
  } finally {
    if (cleanup) await cleanup;
    for (const signal of signals) Deno.removeSignalListener(signal, onSignal);
    await removeWork(work);
  }
}

if (import.meta.main) {
  Deno.exit(await mainCli(Deno.args));
}
