/**
 * The Markdown report of a benchmark run: the machine, the protocol, the
 * targets with PASS/MISS, one table per group of commands, peak RSS, the
 * findings, and every command exactly as it ran.
 *
 * @module
 */

import type { Checkpoint, ScanRoot } from "./_fixtures.ts";
import { count, type ManyFixtures } from "./_many.ts";
import { formatBytes } from "./_fixtures.ts";
import { type Diagnostics, type RssRow, seconds, type Target } from "./_findings.ts";
import { describeLoad, type LoadWatch } from "./_load.ts";
import { capture, firstLine, REPO, shellQuote } from "./_process.ts";
import { type Measurement, median, pairedRatio } from "./_timing.ts";

export type { RssRow } from "./_findings.ts";

/** A table of the report: one group of commands timed together. */
export interface Section {
  title: string;
  /** The rows; the first is the one "× row 1" divides by. */
  rows: Measurement[];
  /** A paragraph printed under the table. */
  note?: string;
}

/** What the numbers depend on, for the report header. */
export interface Machine {
  nproc: string;
  uname: string;
  cpu: string;
  shaExtensions: boolean;
  memory: string;
  fileSystem: string;
  versions: string[];
  /** The ckptkit sources measured: commit and uncommitted changes. */
  source: string;
}

/** The git commit of the repository and the measured files changed since, if any. */
async function describeSource(): Promise<string> {
  const head = await firstLine("git", ["-C", REPO, "rev-parse", "--short", "HEAD"]);
  if (!head) return "not a git checkout";
  const status = await capture("git", [
    "-C",
    REPO,
    "status",
    "--porcelain",
    "--",
    "src",
    "cli.ts",
    "mod.ts",
    "deno.json",
    "deno.lock",
  ]);
  const changed = status.stdout.split("\n").filter((line) => line.trim()).map((line) => line.slice(3));
  return changed.length === 0
    ? `git ${head}, no uncommitted changes in src/, cli.ts, mod.ts, deno.json, deno.lock`
    : `git ${head} plus uncommitted changes in ${changed.map((path) => `\`${path}\``).join(", ")}`;
}

/** Describes the machine and the tools' versions. */
export async function describeMachine(work: string, tools: Record<string, string | null>): Promise<Machine> {
  // Deno reads /proc only under --allow-all, which the bench task does not grant; cat may.
  const cpuinfo = (await capture("cat", ["/proc/cpuinfo"]).catch(() => null))?.stdout ?? "";
  const cpu = /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1].trim() ?? "unknown";
  const versions = [`deno ${Deno.version.deno} (V8 ${Deno.version.v8})`];
  const probes: [string | null, string[]][] = [
    [tools.hyperfine, ["--version"]],
    [tools.sha256sum, ["--version"]],
    [tools.openssl, ["version"]],
    [tools.b3sum, ["--version"]],
    [tools.strace, ["-V"]],
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
    source: await describeSource(),
    fileSystem: (await capture("df", ["--output=fstype,target", work]).catch(() => null))?.stdout.trim().split("\n")
      .at(-1)?.replace(/\s+/, " on ") ?? "unknown",
    versions,
  };
}

/**
 * A Markdown table padded so it reads well on a terminal; the first column is
 * left-aligned, the others (numbers) right-aligned, as `deno fmt` lays it out.
 */
function alignTable(header: string[], cells: string[][], leftColumns = 1): string {
  const widths = header.map((title, col) => Math.max(title.length, ...cells.map((row) => row[col].length)));
  const pad = (text: string, col: number) => col < leftColumns ? text.padEnd(widths[col]) : text.padStart(widths[col]);
  const line = (row: string[]) => `| ${row.map(pad).join(" | ")} |`;
  const rule = widths.map((width, col) => col < leftColumns ? "-".repeat(width) : `${"-".repeat(width - 1)}:`);
  return [line(header), `| ${rule.join(" | ")} |`, ...cells.map(line)].join("\n");
}

/** A section's table: medians, spread, CPU, throughput and the ratio to the first row. */
export function renderSection(section: Section): string {
  const reference = section.rows[0];
  const header = ["Command", "Runs", "Median (s)", "Min–max (s)", "CPU (s)", "MB/s", "× row 1"];
  const cells = section.rows.map((row) => [
    row.name,
    String(row.times.length),
    row.median.toFixed(3),
    `${row.min.toFixed(3)}–${row.max.toFixed(3)}`,
    Number.isNaN(row.cpu) ? "—" : row.cpu.toFixed(2),
    row.bytes === null ? "—" : (row.bytes / row.median / 1e6).toFixed(0),
    (row.median / reference.median).toFixed(3),
  ]);
  return alignTable(header, cells);
}

/** A section's per-round medians, one column per round. */
function renderRounds(section: Section): string {
  const rounds = Math.max(...section.rows.map((row) => row.perRound.length));
  const header = ["Command", ...Array.from({ length: rounds }, (_, i) => `Round ${i + 1}`)];
  const cells = section.rows.map((row) => [
    row.name,
    ...Array.from({ length: rounds }, (_, i) => {
      const times = row.perRound[i] ?? [];
      return times.length === 0 ? "—" : median(times).toFixed(3);
    }),
  ]);
  return alignTable(header, cells);
}

/** The targets table. */
export function renderTargets(targets: Target[]): string {
  const cells = targets.map((t) => [t.goal, t.measured, t.value, t.pass ? "PASS" : "**MISS**"]);
  return alignTable(["Target", "Measured (ckptkit vs baseline)", "Ratio / value", "Result"], cells, 2);
}

function renderRss(rss: RssRow[]): string {
  const help = rss.find((row) => row.id === "rss_help")?.kib ?? null;
  const perFile = rss.some((row) => row.files !== undefined);
  const cells = rss.map((row) => [
    row.name,
    String(row.runs ?? 3),
    row.kib === null ? "unknown" : (row.kib / 1024).toFixed(1),
    ...(perFile
      ? [
        row.files === undefined || row.kib === null || help === null
          ? "—"
          : ((row.kib - help) * 1024 / row.files).toFixed(0),
      ]
      : []),
  ]);
  return alignTable(
    ["Command", "Runs", "Peak RSS (MiB)", ...(perFile ? ["Bytes per file above `--help`"] : [])],
    cells,
  );
}

/** Replaces machine-specific paths so the listed commands read as they would be typed. */
function displayCommand(command: string, work: string): string {
  return command
    .replaceAll(work, "$WORK")
    .replaceAll(shellQuote(Deno.execPath()), "deno")
    .replaceAll(`${REPO}/`, "");
}

/** The command line that reproduces this run. */
function producedBy(argv: string[]): string {
  return argv.length === 0 ? "deno task bench" : `deno task bench -- ${argv.map(shellQuote).join(" ")}`;
}

/** Everything the report is made of. */
export interface Report {
  options: { argv: string[]; runs: number };
  /** Rounds of the slow baselines and of the copied-staging commits. */
  slowRounds: number;
  machine: Machine;
  /** The data of the sections that ran (`--only` leaves some out). */
  fixtures: { shards?: Checkpoint; big?: Checkpoint; tiny?: Checkpoint; scan?: ScanRoot; many?: ManyFixtures };
  sections: Section[];
  rss: RssRow[];
  targets: Target[];
  diagnostics: Diagnostics;
  timer: string;
  notes: string[];
  /** The machine's load, watched before every round. */
  load: LoadWatch;
  work: string;
  date: Date;
  seconds: number;
}

function poolSentence(section: Section, nproc: string): string | null {
  const get = (id: string) => section.rows.find((row) => row.id === id);
  const full = get("v_full");
  const jobs1 = get("v_jobs1");
  const jobs2 = get("v_jobs2");
  if (!full || !jobs1) return null;
  return `The hash pool's effect: default \`--jobs\` (${nproc} = cores) ${seconds(full.median)}, \`--jobs 1\` ${
    seconds(jobs1.median)
  } (the pool is ${pairedRatio(jobs1, full).toFixed(2)}× faster)` +
    (jobs2 ? `, \`--jobs 2\` explicitly ${seconds(jobs2.median)}.` : ".");
}

/**
 * A warning when the machine's speed moved during the run: the parallel
 * openssl baseline's slowest round against its fastest.
 */
function driftNote(sections: Section[]): string | null {
  const openssl = sections.flatMap((section) => section.rows).find((row) => row.id === "v_openssl");
  if (!openssl) return null;
  const rounds = openssl.perRound.filter((times) => times.length > 0).map(median);
  const fastest = Math.min(...rounds);
  const slowest = Math.max(...rounds);
  if (slowest < 1.3 * fastest) return null;
  return `The VM's speed drifted during this run: the same parallel openssl command took ${fastest.toFixed(2)}–${
    slowest.toFixed(2)
  } s from round to round (see [Per-round medians](#per-round-medians)). Parallel commands suffer more than ` +
    "single-threaded ones when it slows, so the ratios of the targets are taken round by round.";
}

/** The data line of the header, for the sections that ran. */
function describeData(f: Report["fixtures"]): string {
  const parts: string[] = [];
  if (f.shards && f.big && f.tiny) {
    parts.push(
      `random bytes committed with \`ckptkit commit\`: ${f.shards.files.length} × ${formatBytes(f.shards.fileSize)} = ${
        formatBytes(f.shards.totalBytes)
      }; 1 × ${formatBytes(f.big.fileSize)}; a tiny checkpoint of 1 × ${formatBytes(f.tiny.fileSize)}`,
    );
  }
  if (f.scan) {
    parts.push(
      `a root of ${f.scan.checkpoints} checkpoints × ${f.scan.filesPerCheckpoint} files of ${
        formatBytes(f.scan.fileBytes)
      } written by \`openCheckpointWriter\` (sampleBytes 0) in one process in ${f.scan.seconds.toFixed(1)} s`,
    );
  }
  const m = f.many;
  if (m) {
    const o = m.options;
    parts.push(
      `many files: ${count(o.files)} random files of ${formatBytes(o.fileBytes)} in ${
        count(o.folders)
      } folders (written in ${m.writeSeconds.toFixed(1)} s, committed by \`ckptkit commit\` in ${
        m.commitSeconds.toFixed(1)
      } s); a checkpoint of ${count(o.hugeEntries)} empty files in ${count(o.folders)} folders whose manifest (${
        (m.hugeManifestBytes / 1e6).toFixed(0)
      } MB, sample_bytes 0) was written by the library's ` +
        `\`createManifest\` (built in ${m.hugeSeconds.toFixed(1)} s); 4 hard-linked copies of the ${
          count(o.files)
        }-file checkpoint for \`scan\` (${m.scanSeconds.toFixed(1)} s)`,
    );
  }
  return parts.join("; ");
}

/** Renders the whole report. */
export function renderReport(report: Report): string {
  const { machine, fixtures: f, work } = report;
  const load = describeLoad(report.load.samples, report.load.waitedS);
  const missed = report.targets.filter((t) => !t.pass);
  const explained = report.targets.filter((t) => t.finding.length > 0);
  const lines: string[] = [
    "# ckptkit performance benchmark",
    "",
    `- Date: ${report.date.toISOString()} (the run took ${(report.seconds / 60).toFixed(1)} minutes)`,
    `- Produced by: \`${producedBy(report.options.argv)}\``,
    `- Machine: ${machine.nproc} cores (nproc), ${machine.uname}, ${machine.cpu}` +
    `${machine.shaExtensions ? " (SHA extensions)" : " (no SHA extensions)"}, ${machine.memory} RAM`,
    `- Work folder file system: ${machine.fileSystem}`,
    `- Machine load: ${load.line}`,
    `- ckptkit measured: ${machine.source}`,
    `- Versions: ${machine.versions.join("; ")}`,
    `- Data: ${describeData(f)}`,
    `- Timing: ${report.timer}. Warm page cache: the files are read once before each group, and every command ` +
    "runs once untimed before its first timed run (except the slow `sha256sum` rows). " +
    (f.shards
      ? `Each group runs in ${report.options.runs} interleaved rounds, every command once per round (commands of a ` +
        "few ms 2–10 times), so that a shared VM slowing down or speeding up affects all of them alike; the " +
        `commit's \`sha256sum\` row, the copied-staging commits${f.many ? " and the many-file groups" : ""} take ` +
        `part in ${report.slowRounds} rounds. `
      : `Each group runs in ${report.slowRounds} interleaved rounds, every command once per round (\`--fast\` and ` +
        "`find` 3 times), so that a shared VM slowing down or speeding up affects all of them alike. ") +
    "Within a round, the commands a target " +
    "compares run back to back. Medians are over every timed run. The targets' ratios are medians of per-round " +
    "ratios (this round's time of one command over this round's time of the other), which a machine whose speed " +
    "drifts between rounds disturbs less than a ratio of overall medians; the tables' “× row 1” column is the " +
    "plain ratio of medians. ckptkit runs as " +
    "`deno run` of `cli.ts` with the `ckptkit` task's flags, default log level (JSON logs to stderr, discarded).",
    "",
    "## Targets",
    "",
    renderTargets(report.targets),
    "",
    missed.length === 0
      ? "Every target is met."
      : `${missed.length} of ${report.targets.length} targets missed; see [Findings](#findings-and-proposals).`,
    "",
  ];
  if (load.warning) lines.push(load.warning, "");
  const drift = driftNote(report.sections);
  if (drift) lines.push(drift, "");
  for (const section of report.sections) {
    lines.push(`## ${section.title}`, "", renderSection(section), "");
    if (section.note) lines.push(section.note, "");
    const pool = poolSentence(section, machine.nproc);
    if (pool) lines.push(pool, "");
  }
  lines.push(
    "MB/s is bytes hashed ÷ median wall time ÷ 10⁶, given only for commands that read every byte (not for 64-byte " +
      "files, whose cost is per file). CPU is user + system seconds per run (hyperfine). “× row 1” divides each " +
      "median by the first row's of its table. Every ckptkit row includes Deno's start-up." +
      (f.shards
        ? " The prototype rows run `bench/proto_validate.ts --load-cli`, which loads the CLI's modules (the same " +
          "start-up) and then only compares file digests with the manifest, hashing with the loop proposed below: " +
          "they show what that change alone would do."
        : ""),
    "",
  );
  if (report.rss.length > 0) {
    lines.push(
      "## Peak RSS",
      "",
      renderRss(report.rss),
      "",
      "Median of the runs of `/usr/bin/time -v` (each commit on a fresh hard-linked staging folder). Bytes per " +
        "file: (peak − peak of `ckptkit --help`) ÷ files the command handles.",
      "",
    );
  }
  lines.push("## Findings and proposals", "");
  if (explained.length === 0) {
    lines.push(missed.length === 0 ? "No target was missed, so none was diagnosed." : "Diagnostics were not run.", "");
  }
  for (const target of explained) {
    lines.push(`### ${target.pass ? "PASS" : "MISS"}: ${target.goal} (${target.value})`, "");
    for (const paragraph of target.finding) lines.push(paragraph, "");
  }
  lines.push(
    "## Per-round medians",
    "",
    "Seconds, each command's median in each round (— where it sat the round out): how much the machine drifted.",
    "",
  );
  for (const section of report.sections) lines.push(`${section.title}:`, "", renderRounds(section), "");
  lines.push("## Commands", "", "`$WORK` is the temporary work folder; `deno` runs with the path of this Deno.", "");
  for (const section of report.sections) {
    lines.push(`${section.title}:`, "");
    for (const row of section.rows) {
      lines.push(
        `- ${row.name}: \`${displayCommand(row.command, work)}\`` +
          (row.prepare ? ` (hyperfine \`--prepare\`: \`${displayCommand(row.prepare, work)}\`)` : ""),
      );
    }
    lines.push("");
  }
  if (report.rss.length > 0) {
    lines.push("Peak RSS:", "");
    for (const row of report.rss) {
      lines.push(
        `- ${row.name}: \`/usr/bin/time -v ${displayCommand(row.command, work)}\`` +
          (row.prepare ? ` (before each run: \`${displayCommand(row.prepare, work)}\`)` : ""),
      );
    }
    lines.push("");
  }
  if (report.notes.length > 0) lines.push("## Notes", "", ...report.notes.map((note) => `- ${note}`), "");
  return lines.join("\n");
}

/** The plain-text summary printed on stdout at the end. */
export function summaryText(targets: Target[], sections: Section[]): string {
  return [renderTargets(targets), ...sections.map((s) => `${s.title}\n\n${renderSection(s)}`)].join("\n\n") + "\n";
}
