/**
 * `deno task bench`: how fast `ckptkit validate` checks a checkpoint compared
 * with the tools an operator would otherwise reach for.
 *
 * It writes `--files` files of `--file-size` random bytes, commits them with
 * the real CLI (`ckptkit commit … --step 1`), writes a `SHA256SUMS` of the
 * same files, and then times, with the page cache warm (every command runs
 * once untimed first), the median of `--runs` runs of:
 *
 * 1. `ckptkit validate <root>/step-1` (every byte hashed with sha256);
 * 2. `sha256sum -c SHA256SUMS` (one thread);
 * 3. `ls … | xargs -P$(nproc) -n1 openssl dgst -sha256` (one process per file);
 * 4. `b3sum` of the files (BLAKE3, multi-threaded; skipped when not installed);
 * 5. `ckptkit validate --fast` and `ckptkit validate --sample-bytes 65536`;
 * 6. start-up alone: `ckptkit --help` against `sha256sum` of a tiny file.
 *
 * It also measures the peak RSS of `ckptkit validate` with `/usr/bin/time -v`,
 * then writes a Markdown report (machine, versions, the command that produced
 * it, the table) to `--out` and prints the table on stdout. Progress goes to
 * stderr.
 *
 * Timing uses hyperfine when it is installed and otherwise spawns the commands
 * itself; missing tools (hyperfine, b3sum, GNU time) are installed with
 * `apt-get` when running as root, unless `--no-install` is given.
 *
 * ```sh
 * deno task bench                          # 8 × 64 MiB, 5 runs → bench/RESULTS.md
 * deno task bench -- --quick               # 4 × 4 MiB, 2 runs: a smoke test
 * deno task bench -- --files 8 --file-size 512MiB --dir /scratch
 * ```
 *
 * Flags: `--dir <path>` (parent of the work folder, default the system temp
 * dir; the work folder is always removed at the end), `--files N` (8),
 * `--file-size BYTES` (67108864; a plain integer or with a KiB/MiB/GiB
 * suffix), `--runs N` (5), `--out <path>` (bench/RESULTS.md), `--quick`,
 * `--no-install`, `--no-hyperfine` (use the built-in timer).
 *
 * @module
 */

import { createHash, randomFillSync } from "node:crypto";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import denoJson from "../deno.json" with { type: "json" };

const MIB = 1024 * 1024;
/** The repository root: the CLI and the default report live relative to it. */
const REPO = fileURLToPath(new URL("..", import.meta.url)).replace(/\/$/, "");
const CLI = join(REPO, "cli.ts");
const DEFAULT_OUT = join(REPO, "bench", "RESULTS.md");
/** Region size recorded by `commit` by default, so `--sample-bytes` matches it. */
const SAMPLE_BYTES = 65536;
/** Random data is produced and written in chunks of this size. */
const CHUNK_BYTES = MIB;

const USAGE = `Usage: deno task bench -- [options]

  --dir <path>        parent of the work folder (default: ${tmpdir()}); the work folder is removed at the end
  --files <n>         number of checkpoint files (default 8)
  --file-size <bytes> size of each file: an integer, or with a KiB/MiB/GiB suffix (default 67108864)
  --runs <n>          timed runs per command; the median is reported (default 5)
  --out <path>        Markdown report (default bench/RESULTS.md)
  --quick             smoke test: 4 files × 4 MiB, 2 runs (explicit flags still win)
  --no-install        do not apt-get install missing tools (hyperfine, b3sum, time)
  --no-hyperfine      time with the built-in timer even when hyperfine is installed
  -h, --help          show this help
`;

/** The benchmark's parameters after defaults and `--quick` are applied. */
interface Options {
  dir: string;
  files: number;
  fileSize: number;
  runs: number;
  out: string;
  quick: boolean;
  install: boolean;
  hyperfine: boolean;
  /** The flags as given, for the report's "produced by" line. */
  argv: string[];
}

/** One timed command. */
interface Case {
  /** Label in the table. */
  name: string;
  /** Shell command line (run with `sh -c`, as hyperfine does). */
  command: string;
  /** Checkpoint bytes the command verifies, for MB/s; null when MB/s means nothing. */
  bytes: number | null;
}

/** Wall times of one case, in seconds. */
interface Timing {
  median: number;
  min: number;
  max: number;
}

type Row = Case & Timing;

/** The files under test and where they are. */
interface Fixture {
  work: string;
  root: string;
  step: string;
  sums: string;
  tiny: string;
  files: string[];
  totalBytes: number;
}

/** Captured result of a finished subprocess. */
interface Output {
  code: number;
  stdout: string;
  stderr: string;
}

// ---------------------------------------------------------------- options --

/** Parses a byte count: a plain integer, or one with a KiB/MiB/GiB suffix. */
export function parseSize(text: string): number {
  const match = /^(\d+)\s*(b|kib|mib|gib)?$/i.exec(text.trim());
  if (!match) throw new Error(`--file-size: not a byte count: ${text}`);
  const scale: Record<string, number> = { b: 1, kib: 1024, mib: MIB, gib: 1024 * MIB };
  const bytes = Number(match[1]) * scale[(match[2] ?? "b").toLowerCase()];
  if (!Number.isSafeInteger(bytes) || bytes <= 0) throw new Error(`--file-size must be positive: ${text}`);
  return bytes;
}

function parsePositive(flag: string, text: string): number {
  const value = Number(text);
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(value) || value <= 0) {
    throw new Error(`--${flag} must be a positive integer: ${text}`);
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
      runs: { type: "string" },
      out: { type: "string" },
      quick: { type: "boolean", default: false },
      "no-install": { type: "boolean", default: false },
      "no-hyperfine": { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) return null;
  const quick = values.quick;
  return {
    dir: resolve(values.dir ?? tmpdir()),
    files: values.files ? parsePositive("files", values.files) : quick ? 4 : 8,
    fileSize: values["file-size"] ? parseSize(values["file-size"]) : (quick ? 4 : 64) * MIB,
    runs: values.runs ? parsePositive("runs", values.runs) : quick ? 2 : 5,
    out: values.out ? resolve(values.out) : DEFAULT_OUT,
    quick,
    install: !values["no-install"],
    hyperfine: !values["no-hyperfine"],
    argv,
  };
}

// -------------------------------------------------------------- processes --

/**
 * This process's environment minus CKPTKIT_* variables: a CKPTKIT_CONFIG or
 * CKPTKIT_ROOT in the caller's shell would change what the CLI does and so
 * what is measured.
 */
function childEnv(): Record<string, string> {
  return Object.fromEntries(
    Object.entries(Deno.env.toObject()).filter(([name]) => !name.startsWith("CKPTKIT_")),
  );
}

/** Runs a program to completion and captures its output. */
async function capture(program: string, args: string[]): Promise<Output> {
  const { code, stdout, stderr } = await new Deno.Command(program, {
    args,
    cwd: REPO,
    clearEnv: true,
    env: childEnv(),
    stdin: "null",
  }).output();
  const decoder = new TextDecoder();
  return { code, stdout: decoder.decode(stdout), stderr: decoder.decode(stderr) };
}

/** Like {@linkcode capture}, but a non-zero exit is an error. */
async function mustRun(program: string, args: string[]): Promise<Output> {
  const out = await capture(program, args);
  if (out.code !== 0) {
    throw new Error(`${program} ${args.join(" ")} exited ${out.code}\n${out.stderr}${out.stdout}`);
  }
  return out;
}

/** The first line a command prints, or null when it cannot run. */
async function firstLine(program: string, args: string[]): Promise<string | null> {
  try {
    const out = await capture(program, args);
    return out.code === 0 ? out.stdout.split("\n")[0].trim() : null;
  } catch {
    return null;
  }
}

/** Quotes a word for `sh` when it needs it. */
function shellQuote(word: string): string {
  return /^[\w@%+=:,./-]+$/.test(word) ? word : `'${word.replaceAll("'", `'\\''`)}'`;
}

/** The absolute path of `name` on PATH, or null. */
async function which(name: string): Promise<string | null> {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    if (!dir) continue;
    const path = join(dir, name);
    try {
      const info = await Deno.stat(path);
      if (info.isFile && ((info.mode ?? 0) & 0o111) !== 0) return path;
    } catch {
      // Not in this PATH entry.
    }
  }
  return null;
}

/**
 * Finds `bin`, installing Debian package `pkg` when it is missing, we are
 * root, apt-get exists and installing is allowed: the machines this runs on
 * are recreated often, so the benchmark brings its own tools. Returns the
 * path, or null with the reason appended to `notes`.
 */
async function ensureTool(bin: string, pkg: string, install: boolean, notes: string[]): Promise<string | null> {
  const found = await which(bin);
  if (found) return found;
  const aptGet = await which("apt-get");
  if (!install || !aptGet || Deno.uid() !== 0) {
    notes.push(`\`${bin}\` is not installed (Debian package \`${pkg}\`) and was not installed automatically.`);
    return null;
  }
  progress(`installing ${pkg} with apt-get`);
  // A fresh machine may have no package lists yet: update once, then retry.
  if ((await capture(aptGet, ["install", "-y", pkg])).code !== 0) {
    await capture(aptGet, ["update"]);
    await capture(aptGet, ["install", "-y", pkg]);
  }
  const installed = await which(bin);
  if (!installed) notes.push(`\`${bin}\` could not be installed with \`apt-get install ${pkg}\`.`);
  return installed;
}

function progress(message: string): void {
  console.error(`[bench] ${message}`);
}

// ---------------------------------------------------------------- fixture --

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
    const part = chunk.subarray(0, Math.min(chunk.length, size - done));
    randomFillSync(part);
    hash.update(part);
    await writeAll(file, part);
    done += part.length;
  }
  return hash.digest("hex");
}

/** The `deno run <flags> cli.ts` prefix, with the flags of the `ckptkit` task in deno.json. */
function ckptkitArgs(): string[] {
  const match = /^deno run (.*) cli\.ts$/.exec(denoJson.tasks.ckptkit);
  if (!match) throw new Error(`unexpected ckptkit task in deno.json: ${denoJson.tasks.ckptkit}`);
  return ["run", ...match[1].split(/\s+/), CLI];
}

/**
 * Builds the checkpoint under test: random files in a staging folder,
 * committed by the real CLI into `<work>/root/step-1`, plus a SHA256SUMS
 * outside the checkpoint (a file inside it would be an "extra file" to
 * validate) naming the committed files by absolute path.
 */
async function buildFixture(work: string, options: Options): Promise<Fixture> {
  const staging = join(work, "staging");
  const root = join(work, "root");
  const step = join(root, "step-1");
  await Deno.mkdir(staging);
  const chunk = new Uint8Array(Math.min(CHUNK_BYTES, options.fileSize));
  const width = String(options.files - 1).length;
  const names: string[] = [];
  const sums: string[] = [];
  for (let i = 0; i < options.files; i++) {
    const name = `shard-${String(i).padStart(width, "0")}.bin`;
    const digest = await writeRandomFile(join(staging, name), options.fileSize, chunk);
    names.push(name);
    sums.push(`${digest}  ${join(step, name)}\n`);
  }
  progress(`committing ${options.files} files with ckptkit commit`);
  await mustRun(Deno.execPath(), [...ckptkitArgs(), "commit", staging, "--root", root, "--step", "1"]);
  const sumsPath = join(work, "sums", "SHA256SUMS");
  await Deno.mkdir(join(work, "sums"));
  await Deno.writeTextFile(sumsPath, sums.join(""));
  const tiny = join(work, "tiny.txt");
  await Deno.writeTextFile(tiny, "hello\n");
  return {
    work,
    root,
    step,
    sums: sumsPath,
    tiny,
    files: names.map((name) => join(step, name)),
    totalBytes: options.files * options.fileSize,
  };
}

// ------------------------------------------------------------------ cases --

/** The commands to time, in table order; the first is the baseline. */
function buildCases(fixture: Fixture, b3sum: string | null): Case[] {
  const ckptkit = [Deno.execPath(), ...ckptkitArgs()].map(shellQuote).join(" ");
  const step = shellQuote(fixture.step);
  const total = fixture.totalBytes;
  const cases: Case[] = [
    { name: "ckptkit validate (full sha256)", command: `${ckptkit} validate ${step}`, bytes: total },
    { name: "sha256sum -c SHA256SUMS", command: `sha256sum -c ${shellQuote(fixture.sums)}`, bytes: total },
    {
      name: "xargs -P$(nproc) openssl dgst -sha256",
      // The glob leaves out ckptkit.manifest.json, so the same bytes are hashed.
      command: `ls ${step}/shard-*.bin | xargs -P$(nproc) -n1 openssl dgst -sha256`,
      bytes: total,
    },
  ];
  if (b3sum) cases.push({ name: "b3sum (BLAKE3)", command: `b3sum ${step}/shard-*.bin`, bytes: total });
  cases.push(
    { name: "ckptkit validate --fast", command: `${ckptkit} validate --fast ${step}`, bytes: null },
    {
      name: `ckptkit validate --sample-bytes ${SAMPLE_BYTES}`,
      command: `${ckptkit} validate --sample-bytes ${SAMPLE_BYTES} ${step}`,
      bytes: null,
    },
    { name: "start-up: ckptkit --help", command: `${ckptkit} --help`, bytes: null },
    { name: "start-up: sha256sum (tiny file)", command: `sha256sum ${shellQuote(fixture.tiny)}`, bytes: null },
  );
  return cases;
}

// ----------------------------------------------------------------- timing --

/** The middle value of `values` (the mean of the two middle ones for an even count). */
export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/** Reads the one result of a hyperfine `--export-json` file. */
function parseHyperfineJson(text: string): Timing {
  const doc: unknown = JSON.parse(text);
  const results = typeof doc === "object" && doc !== null && "results" in doc ? doc.results : null;
  const first: unknown = Array.isArray(results) ? results[0] : null;
  if (typeof first !== "object" || first === null) throw new Error("hyperfine JSON has no results");
  const field = (name: string): number => {
    const value: unknown = (first as Record<string, unknown>)[name];
    if (typeof value !== "number") throw new Error(`hyperfine JSON has no numeric ${name}`);
    return value;
  };
  return { median: field("median"), min: field("min"), max: field("max") };
}

/**
 * Times one case with hyperfine: one warm-up run (which also loads the files
 * into the page cache) and `runs` timed runs. hyperfine fails on a non-zero
 * exit, so a command that reports a problem cannot pass for a fast one.
 */
async function timeWithHyperfine(hyperfine: string, item: Case, runs: number, jsonPath: string): Promise<Timing> {
  await mustRun(hyperfine, [
    "--warmup",
    "1",
    "--runs",
    String(runs),
    "--style",
    "none",
    "--export-json",
    jsonPath,
    "--command-name",
    item.name,
    item.command,
  ]);
  return parseHyperfineJson(await Deno.readTextFile(jsonPath));
}

/** Runs a command line once under `sh -c`, output discarded, and returns its wall time in seconds. */
async function timeOnce(command: string): Promise<number> {
  const started = performance.now();
  const { code } = await new Deno.Command("sh", {
    args: ["-c", command],
    cwd: REPO,
    clearEnv: true,
    env: childEnv(),
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).output();
  const seconds = (performance.now() - started) / 1000;
  if (code !== 0) throw new Error(`exited ${code}: ${command}`);
  return seconds;
}

/** The fallback when hyperfine is missing: the same protocol, timed here. */
async function timeBuiltin(item: Case, runs: number): Promise<Timing> {
  await timeOnce(item.command);
  const times: number[] = [];
  for (let i = 0; i < runs; i++) times.push(await timeOnce(item.command));
  return { median: median(times), min: Math.min(...times), max: Math.max(...times) };
}

/**
 * Peak resident set size in KiB of one run of `argv` under GNU time, or null
 * when the output has no such line.
 */
async function peakRssKib(time: string, argv: string[]): Promise<number | null> {
  const out = await capture(time, ["-v", ...argv]);
  if (out.code !== 0) throw new Error(`${argv.join(" ")} exited ${out.code}\n${out.stderr}`);
  const match = /Maximum resident set size \(kbytes\): (\d+)/.exec(out.stderr);
  return match ? Number(match[1]) : null;
}

// ----------------------------------------------------------------- report --

/** What the numbers depend on, for the report header. */
interface Machine {
  nproc: string;
  uname: string;
  cpu: string;
  shaExtensions: boolean;
  memory: string;
  fileSystem: string;
  versions: string[];
}

async function describeMachine(work: string, tools: Record<string, string | null>): Promise<Machine> {
  // Deno reads /proc only under --allow-all, which the bench task does not grant; cat may.
  const cpuinfo = (await capture("cat", ["/proc/cpuinfo"]).catch(() => null))?.stdout ?? "";
  const cpu = /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1].trim() ?? "unknown";
  const versions = [`deno ${Deno.version.deno} (V8 ${Deno.version.v8})`];
  const probes: [string | null, string[]][] = [
    [tools.hyperfine, ["--version"]],
    [tools.sha256sum, ["--version"]],
    [tools.openssl, ["version"]],
    [tools.b3sum, ["--version"]],
  ];
  for (const [path, args] of probes) {
    const line = path ? await firstLine(path, args) : null;
    if (line) versions.push(line);
  }
  return {
    nproc: (await firstLine("nproc", [])) ?? String(navigator.hardwareConcurrency),
    uname: (await firstLine("uname", ["-srm"])) ?? `${Deno.build.os} ${Deno.build.arch}`,
    cpu,
    // SHA-NI makes sha256 several times faster; without it every sha256 row moves.
    shaExtensions: /^flags\s*:.*\bsha_ni\b/m.test(cpuinfo),
    memory: `${(Deno.systemMemoryInfo().total / 1024 ** 3).toFixed(1)} GiB`,
    fileSystem: (await firstLine("stat", ["-f", "-c", "%T", work])) ?? "unknown",
    versions,
  };
}

function formatBytes(bytes: number): string {
  if (bytes >= 1024 * MIB && bytes % (1024 * MIB) === 0) return `${bytes / (1024 * MIB)} GiB`;
  if (bytes >= MIB && bytes % MIB === 0) return `${bytes / MIB} MiB`;
  return `${bytes} B`;
}

/** The command line that reproduces this run. */
function producedBy(argv: string[]): string {
  return argv.length === 0 ? "deno task bench" : `deno task bench -- ${argv.map(shellQuote).join(" ")}`;
}

/** The results table; ratios are each median divided by the first row's. */
function renderTable(rows: Row[]): string {
  const baseline = rows[0].median;
  const header = ["Tool", "Median (s)", "Min–max (s)", "MB/s", "× ckptkit full validate"];
  const cells = rows.map((row) => [
    row.name,
    row.median.toFixed(3),
    `${row.min.toFixed(3)}–${row.max.toFixed(3)}`,
    row.bytes === null ? "—" : (row.bytes / row.median / 1e6).toFixed(0),
    (row.median / baseline).toFixed(2),
  ]);
  return alignTable(header, cells);
}

/**
 * A Markdown table padded so it reads well on a terminal; the first column is
 * left-aligned, the others (numbers) right-aligned, as `deno fmt` lays it out.
 */
function alignTable(header: string[], cells: string[][]): string {
  const widths = header.map((title, col) => Math.max(title.length, ...cells.map((row) => row[col].length)));
  const pad = (text: string, col: number) => col === 0 ? text.padEnd(widths[col]) : text.padStart(widths[col]);
  const line = (row: string[]) => `| ${row.map(pad).join(" | ")} |`;
  const rule = widths.map((width, col) => col === 0 ? "-".repeat(width) : `${"-".repeat(width - 1)}:`);
  return [line(header), `| ${rule.join(" | ")} |`, ...cells.map(line)].join("\n");
}

/** Replaces machine-specific paths so the listed commands read as they would be typed. */
function displayCommand(command: string, work: string): string {
  return command
    .replaceAll(work, "$WORK")
    .replaceAll(shellQuote(Deno.execPath()), "deno")
    .replaceAll(`${REPO}/`, "");
}

interface Report {
  options: Options;
  machine: Machine;
  fixture: Fixture;
  rows: Row[];
  timer: string;
  rss: string;
  notes: string[];
  date: Date;
}

function renderReport(report: Report): string {
  const { options, machine, fixture, rows } = report;
  const commands = rows.map((row) => `- ${row.name}: \`${displayCommand(row.command, fixture.work)}\``);
  return [
    "# ckptkit validate benchmark",
    "",
    `- Date: ${report.date.toISOString()}`,
    `- Produced by: \`${producedBy(options.argv)}\``,
    `- Checkpoint: ${options.files} files × ${formatBytes(options.fileSize)} = ${
      formatBytes(fixture.totalBytes)
    } of random data, committed with \`ckptkit commit\``,
    `- Machine: ${machine.nproc} cores (nproc), ${machine.uname}, ${machine.cpu}` +
    `${machine.shaExtensions ? " (SHA extensions)" : " (no SHA extensions)"}, ${machine.memory} RAM`,
    `- Work folder file system: ${machine.fileSystem}`,
    `- Versions: ${machine.versions.join("; ")}`,
    `- Timing: ${report.timer}; warm page cache (one untimed warm-up run per command), median of ${options.runs} runs`,
    "",
    renderTable(rows),
    "",
    report.rss,
    "",
    "MB/s is checkpoint bytes ÷ median wall time ÷ 10⁶, given only for rows that read every byte " +
    "(`--fast` reads no file data; `--sample-bytes` reads a few 64 KiB regions per file). " +
    "The last column is each median divided by the `ckptkit validate` median (below 1 is faster). " +
    "Every ckptkit row includes Deno start-up, which the `ckptkit --help` row shows alone.",
    "",
    ...(report.notes.length > 0 ? ["Notes:", "", ...report.notes.map((note) => `- ${note}`), ""] : []),
    "Commands (`$WORK` is the temporary work folder):",
    "",
    ...commands,
    "",
  ].join("\n");
}

// ------------------------------------------------------------------- main --

/** Times every case, printing each median to stderr as it comes. */
async function timeCases(cases: Case[], options: Options, hyperfine: string | null, work: string): Promise<Row[]> {
  const rows: Row[] = [];
  for (const [i, item] of cases.entries()) {
    progress(`timing ${item.name}`);
    const timing = hyperfine
      ? await timeWithHyperfine(hyperfine, item, options.runs, join(work, `hyperfine-${i}.json`))
      : await timeBuiltin(item, options.runs);
    progress(`  median ${timing.median.toFixed(3)} s`);
    rows.push({ ...item, ...timing });
  }
  return rows;
}

/** The RSS line of the report: ckptkit's peak, with sha256sum's for scale. */
async function measureRss(time: string | null, fixture: Fixture): Promise<string> {
  if (!time) return "Peak RSS: not measured (GNU time is not installed).";
  progress("measuring peak RSS");
  const ckptkit = await peakRssKib(time, [Deno.execPath(), ...ckptkitArgs(), "validate", fixture.step]);
  const sha256sum = await peakRssKib(time, ["sha256sum", "-c", fixture.sums]);
  const mib = (kib: number | null) => kib === null ? "unknown" : `${(kib / 1024).toFixed(1)} MiB`;
  return `Peak RSS of \`ckptkit validate\` (full) on ${fixture.files.length} × ${
    formatBytes(fixture.totalBytes / fixture.files.length)
  }: **${mib(ckptkit)}** (\`sha256sum -c\`: ${mib(sha256sum)}), from \`/usr/bin/time -v\`.`;
}

async function run(options: Options, work: string): Promise<string> {
  const notes: string[] = [];
  const tools = {
    hyperfine: options.hyperfine ? await ensureTool("hyperfine", "hyperfine", options.install, notes) : null,
    b3sum: await ensureTool("b3sum", "b3sum", options.install, notes),
    time: await ensureTool("time", "time", options.install, notes),
    sha256sum: await which("sha256sum"),
    openssl: await which("openssl"),
  };
  if (!tools.sha256sum || !tools.openssl) throw new Error("sha256sum and openssl are required");
  if (!tools.b3sum) notes.push("b3sum row skipped.");
  progress(`writing ${options.files} × ${formatBytes(options.fileSize)} in ${work}`);
  const fixture = await buildFixture(work, options);
  const rows = await timeCases(buildCases(fixture, tools.b3sum), options, tools.hyperfine, work);
  const rss = await measureRss(tools.time, fixture);
  const timer = tools.hyperfine ? "hyperfine" : "built-in timer (performance.now() around `sh -c`)";
  const machine = await describeMachine(work, tools);
  const report = renderReport({ options, machine, fixture, rows, timer, rss, notes, date: new Date() });
  await Deno.writeTextFile(options.out, report);
  await formatReport(options.out);
  return `${renderTable(rows)}\n\n${rss}\n`;
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
  // Ctrl-C must not leave gigabytes of test data behind.
  const onInterrupt = () => {
    Deno.removeSync(work, { recursive: true });
    Deno.exit(130);
  };
  Deno.addSignalListener("SIGINT", onInterrupt);
  try {
    console.log(await run(options, work));
    progress(`wrote ${options.out}`);
    return 0;
  } finally {
    Deno.removeSignalListener("SIGINT", onInterrupt);
    await Deno.remove(work, { recursive: true });
  }
}

if (import.meta.main) {
  Deno.exit(await mainCli(Deno.args));
}
