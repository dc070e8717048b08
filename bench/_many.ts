/**
 * The many-file section of the benchmark (issue #14): a checkpoint of
 * `--many-files` small files (100,000 × 64 B in 1,000 folders) committed by
 * the real CLI, a checkpoint whose manifest lists `--huge-manifest-entries`
 * (1,000,000) empty files, and a root that holds 1, 2 or 4 copies of the
 * small checkpoint for `scan`; the commands timed on them; their peak RSS.
 *
 * The files are written synchronously in this process (one `writeFileSync`
 * per file, a yield every 2,000 files so Ctrl-C is handled): the kernel's file
 * creation is the cost, 100,000 files take seconds.
 *
 * The 1,000,000-entry checkpoint is real: 1,000,000 empty files on disk, so
 * `validate --fast` does what it does on a real checkpoint of that size (reads
 * and checks the manifest, lists the tree, lstats every file). Its manifest is
 * written by the library's `createManifest` (sha256 of the empty file, no
 * sampled regions), not by `ckptkit commit`, which would take minutes at
 * 1,000,000 files; the 100,000-file commit is timed instead. A manifest whose
 * files are absent would be cheaper to build, but `--fast` would then measure
 * 1,000,000 failed lookups and a million-line problem report, not a check.
 *
 * @module
 */

import { createHash, randomFillSync } from "node:crypto";
import { join } from "node:path";
import { formatBytes } from "./_fixtures.ts";
import {
  capture,
  ckptkitArgv,
  ckptkitShell,
  interrupted,
  mustRun,
  mustShell,
  progress,
  shellQuote,
} from "./_process.ts";
import type { RssRow } from "./_findings.ts";
import { type Case, peakRssKib } from "./_timing.ts";

const q = shellQuote;

/** Checkpoint counts of the scan-scaling rows: a root holding 1, 2 and 4 copies of the small checkpoint. */
export const SCAN_COUNTS = [1, 2, 4] as const;

/** Sizes of the many-file data. */
export interface ManyOptions {
  /** Files of the small-file checkpoint (100,000). */
  files: number;
  /** Size of each (64 B). */
  fileBytes: number;
  /** Folders they are spread over, and the huge checkpoint's files too (1,000). */
  folders: number;
  /** Entries of the huge manifest (1,000,000). */
  hugeEntries: number;
}

/** The many-file data, built in the work folder. */
export interface ManyFixtures {
  options: ManyOptions;
  /** Root of the small-file checkpoint. */
  root: string;
  /** The committed small-file checkpoint, `<root>/step-1`. */
  step: string;
  /** SHA256SUMS of its files, by absolute path, outside the checkpoint. */
  sums: string;
  /** Seconds to write the small files; seconds `ckptkit commit` took to commit them. */
  writeSeconds: number;
  commitSeconds: number;
  /** Hard links to the small files (no manifest): the source of every staged commit. */
  commitSource: string;
  /** Root of the timed commits. */
  commitRoot: string;
  /** The checkpoint of `hugeEntries` empty files and its build time. */
  hugeStep: string;
  hugeSeconds: number;
  /** Size of its manifest. */
  hugeManifestBytes: number;
  /** The root `scan` reads and the folder holding the checkpoints not in it (same file system: moves are renames). */
  scanRoot: string;
  scanPark: string;
  scanSeconds: number;
}

/** `d0042/f0017.bin`-style names: `files` spread evenly over `folders`. */
function* layout(files: number, folders: number): Generator<[folder: string, file: string]> {
  const per = Math.ceil(files / folders);
  const dWidth = String(folders - 1).length;
  const fWidth = String(per - 1).length;
  let i = 0;
  for (let d = 0; d < folders && i < files; d++) {
    const folder = `d${String(d).padStart(dWidth, "0")}`;
    for (let f = 0; f < per && i < files; f++, i++) yield [folder, `${folder}/f${String(f).padStart(fWidth, "0")}.bin`];
  }
}

/** Lets the event loop run (signal handlers), then stops if the run was interrupted. */
async function yieldToSignals(): Promise<void> {
  await new Promise((resolve) => setTimeout(resolve, 0));
  interrupted.signal.throwIfAborted();
}

/**
 * Writes `files` files of `fileBytes` random bytes (0: empty) under `dir`, one
 * synchronous write each, and returns each file's relative path and sha256.
 */
async function writeTree(dir: string, files: number, folders: number, fileBytes: number): Promise<[string, string][]> {
  const data = new Uint8Array(Math.max(1, fileBytes) * Math.min(files, 65536));
  randomFillSync(data);
  const empty = createHash("sha256").digest("hex");
  const out: [string, string][] = [];
  let current = "";
  let i = 0;
  for (const [folder, path] of layout(files, folders)) {
    // Yield often enough that Ctrl-C is handled within a fraction of a second.
    if (i % 2000 === 0) await yieldToSignals();
    if (folder !== current) {
      Deno.mkdirSync(join(dir, folder), { recursive: true });
      current = folder;
    }
    const offset = (i++ % 65536) * fileBytes;
    const bytes = data.subarray(offset, offset + fileBytes);
    // Distinct contents: the file's index in its first bytes.
    if (fileBytes >= 8) new DataView(bytes.buffer, bytes.byteOffset).setFloat64(0, i);
    Deno.writeFileSync(join(dir, path), bytes, { createNew: true });
    out.push([path, fileBytes === 0 ? empty : createHash("sha256").update(bytes).digest("hex")]);
  }
  return out;
}

/** Parses a manifest with the library and writes it again for another step (digest recomputed). */
async function restepManifest(source: string, target: string, step: number): Promise<void> {
  const { createManifest, parseManifest, serializeManifest } = await import("../mod.ts");
  const parsed = await parseManifest(await Deno.readTextFile(source));
  if (!parsed.manifest) throw new Error(`${source}: ${parsed.problems.map((p) => p.detail).join("; ")}`);
  const { format: _f, format_version: _v, total_bytes: _t, manifest_digest: _d, ...fields } = parsed.manifest;
  await Deno.remove(target).catch(() => {});
  await Deno.writeTextFile(target, serializeManifest(await createManifest({ ...fields, step })));
}

/** Builds the many-file data under `<work>/many`. */
export async function buildManyFixtures(work: string, o: ManyOptions): Promise<ManyFixtures> {
  const base = join(work, "many");
  const root = join(base, "root");
  const staging = join(root, ".staging-bench-1");
  const step = join(root, "step-1");
  await Deno.mkdir(staging, { recursive: true });

  progress(`writing ${o.files} files of ${formatBytes(o.fileBytes)} in ${o.folders} folders`);
  let started = performance.now();
  const sums = await writeTree(staging, o.files, o.folders, o.fileBytes);
  const writeSeconds = (performance.now() - started) / 1000;
  progress(`  ${writeSeconds.toFixed(1)} s; committing them with ckptkit commit`);
  started = performance.now();
  const ck = ckptkitArgv();
  await mustRun(ck[0], [...ck.slice(1), "commit", staging, "--root", root, "--step", "1", "--log-level", "warn"]);
  const commitSeconds = (performance.now() - started) / 1000;
  progress(`  ${commitSeconds.toFixed(1)} s`);
  const sumsPath = join(base, "SHA256SUMS");
  await Deno.writeTextFile(sumsPath, sums.map(([path, digest]) => `${digest}  ${join(step, path)}\n`).join(""));

  // The staged commits start from hard links to the same files, without the manifest.
  const commitSource = join(base, "commit-source");
  await mustShell(`cp -al ${q(step)} ${q(commitSource)} && rm ${q(join(commitSource, "ckptkit.manifest.json"))}`);
  const commitRoot = join(base, "commit", "root");
  await Deno.mkdir(commitRoot, { recursive: true });

  progress(`writing ${o.hugeEntries} empty files and a manifest listing them (library createManifest)`);
  started = performance.now();
  const hugeRoot = join(base, "huge");
  const hugeStep = join(hugeRoot, "step-1");
  await Deno.mkdir(hugeStep, { recursive: true });
  const entries = await writeTree(hugeStep, o.hugeEntries, o.folders, 0);
  progress(`  files: ${((performance.now() - started) / 1000).toFixed(1)} s`);
  const { createManifest, serializeManifest, VERSION } = await import("../mod.ts");
  const manifest = await createManifest({
    job_id: "bench",
    run_id: "huge-manifest",
    step: 1,
    created_at: new Date().toISOString(),
    write_duration_s: 0,
    writer: { host: "bench", ckptkit_version: VERSION },
    hash: { algorithm: "sha256", sample_bytes: 0 },
    files: entries.map(([path, digest]) => ({ path, size: 0, digest, samples: [] })),
    metadata: {},
  });
  entries.length = 0;
  const text = serializeManifest(manifest);
  await Deno.writeTextFile(join(hugeStep, "ckptkit.manifest.json"), text);
  await Deno.writeTextFile(join(hugeRoot, "latest"), "step-1\n");
  const hugeSeconds = (performance.now() - started) / 1000;
  progress(`  ${hugeSeconds.toFixed(1)} s`);

  // scan: up to 4 copies of the small checkpoint (hard links, each manifest re-stepped),
  // parked beside the root; each run's --prepare moves the ones it needs in (renames).
  const max = Math.max(...SCAN_COUNTS);
  progress(`hard-linking ${max} copies of the ${o.files}-file checkpoint for scan`);
  started = performance.now();
  const scanRoot = join(base, "scan", "root");
  const scanPark = join(base, "scan", "park");
  await Deno.mkdir(scanRoot, { recursive: true });
  await Deno.mkdir(scanPark, { recursive: true });
  for (let s = 1; s <= max; s++) {
    await yieldToSignals();
    const copy = join(scanPark, `step-${s}`);
    await mustShell(`cp -al ${q(step)} ${q(copy)}`);
    if (s > 1) await restepManifest(join(step, "ckptkit.manifest.json"), join(copy, "ckptkit.manifest.json"), s);
  }
  await Deno.writeTextFile(join(scanRoot, "latest"), "step-1\n");
  const scanSeconds = (performance.now() - started) / 1000;
  progress(`  ${scanSeconds.toFixed(1)} s`);

  return {
    options: o,
    root,
    step,
    sums: sumsPath,
    writeSeconds,
    commitSeconds,
    commitSource,
    commitRoot,
    hugeStep,
    hugeSeconds,
    hugeManifestBytes: new TextEncoder().encode(text).length,
    scanRoot,
    scanPark,
    scanSeconds,
  };
}

/** `100000` → `100,000`. */
export function count(n: number): string {
  return n.toLocaleString("en-US");
}

/** What the small-file rows are about, for names and titles. */
function smallLabel(f: ManyFixtures): string {
  return `${count(f.options.files)} × ${formatBytes(f.options.fileBytes)}`;
}

/** Full and `--fast` validation of the small-file checkpoint against `sha256sum -c`. */
export function manyValidationCases(f: ManyFixtures): Case[] {
  const ck = ckptkitShell();
  const step = q(f.step);
  // MB/s means nothing for 64-byte files: the cost is per file.
  const bytes = null;
  return [
    { id: "mv_full", name: "ckptkit validate (full sha256)", command: `${ck} validate ${step}`, bytes },
    { id: "mv_sha256sum", name: "sha256sum -c SHA256SUMS", command: `sha256sum -c --quiet ${q(f.sums)}`, bytes },
    {
      id: "mv_fast",
      name: "ckptkit validate --fast",
      command: `${ck} validate --fast ${step}`,
      bytes: null,
      runsPerRound: 3,
    },
    {
      id: "mv_find",
      name: "find -type f -printf '%s' (lstat of every file, for reference)",
      command: `find ${step} -type f -printf '%s\\n' > /dev/null`,
      bytes: null,
      runsPerRound: 3,
    },
  ];
}

/** The staging folder every commit run starts from, and the `--prepare` that recreates it (hard links). */
export function manyStaging(f: ManyFixtures): { staging: string; prepare: string } {
  const staging = join(f.commitRoot, ".staging-bench");
  return {
    staging,
    prepare: `rm -rf ${q(join(f.commitRoot, "step-2"))} ${q(staging)} && cp -al ${q(f.commitSource)} ${q(staging)}`,
  };
}

/**
 * `ckptkit commit` of the small files against parallel `sha256sum` plus an
 * fsync of every file (coreutils `sync FILE…` fsyncs each file it names),
 * each on a fresh hard-linked staging folder.
 */
export function manyCommitCases(f: ManyFixtures): Case[] {
  const { staging, prepare } = manyStaging(f);
  const s = q(staging);
  const bytes = null;
  return [
    {
      id: "mc_commit",
      name: "ckptkit commit (hash, fsync every file, manifest, rename)",
      command: `${ckptkitShell()} commit ${s} --root ${q(f.commitRoot)} --step 2`,
      prepare,
      bytes,
    },
    {
      id: "mc_baseline",
      name: "xargs -0 -P$(nproc) sha256sum, then xargs -0 sync (fsync of every file), both fed by find",
      command: `find ${s} -type f -print0 | xargs -0 -P$(nproc) sha256sum > /dev/null && ` +
        `find ${s} -type f -print0 | xargs -0 sync`,
      prepare,
      bytes,
    },
  ];
}

/**
 * `validate --fast` of the huge checkpoint. It passes (exit 0) or refuses the
 * manifest (exit 1): both count, the outcome is recorded by {@linkcode hugeOutcome}.
 */
export function hugeCases(f: ManyFixtures): Case[] {
  const step = q(f.hugeStep);
  return [
    {
      id: "mh_fast",
      name: `ckptkit validate --fast (${count(f.options.hugeEntries)} entries)`,
      command: `${ckptkitShell()} validate --fast ${step}; test $? -le 1`,
      bytes: null,
      // The outcome run just before is the warm-up.
      warmup: 0,
    },
    {
      id: "mh_find",
      name: "find -type f -printf '%s' (lstat of every file, for reference)",
      command: `find ${step} -type f -printf '%s\\n' > /dev/null`,
      bytes: null,
    },
  ];
}

/** What `validate --fast` made of the huge manifest: checked valid, or refused/failed and why. */
export interface HugeOutcome {
  ok: boolean;
  /** `valid`, or the problems' reasons with counts, e.g. `manifest_corrupt ×1`. */
  summary: string;
  /** First problem's detail, if any. */
  detail: string | null;
}

/** Runs `validate --fast --json` once on the huge checkpoint (also the timing's warm-up). */
export async function hugeOutcome(f: ManyFixtures): Promise<HugeOutcome> {
  progress(`validate --fast of the ${count(f.options.hugeEntries)}-entry checkpoint, once untimed (outcome)`);
  const ck = ckptkitArgv();
  const out = await capture(ck[0], [
    ...ck.slice(1),
    "validate",
    "--fast",
    f.hugeStep,
    "--json",
    "--log-level",
    "silent",
  ]);
  if (out.code > 1) throw new Error(`validate --fast of the huge checkpoint exited ${out.code}\n${out.stderr}`);
  const doc = JSON.parse(out.stdout) as { ok?: boolean; problems?: { reason: string; detail?: string }[] };
  const problems = doc.problems ?? [];
  const reasons = new Map<string, number>();
  for (const p of problems) reasons.set(p.reason, (reasons.get(p.reason) ?? 0) + 1);
  return {
    ok: doc.ok === true,
    summary: doc.ok === true ? "valid" : [...reasons].map(([r, n]) => `${r} ×${count(n)}`).join(", ") || "not ok",
    detail: problems[0]?.detail ?? null,
  };
}

/** The `--prepare` that leaves exactly step-1…step-`n` in the scan root (renames only). */
function scanPrepare(f: ManyFixtures, n: number): string {
  const wanted = Array.from({ length: n }, (_, i) => q(join(f.scanPark, `step-${i + 1}`))).join(" ");
  return `find ${q(f.scanRoot)} -mindepth 1 -maxdepth 1 -name 'step-*' -exec mv -t ${q(f.scanPark)} {} + && ` +
    `mv ${wanted} ${q(f.scanRoot)}/`;
}

/** `scan --fast` of a root holding 1, 2 and 4 copies of the small checkpoint. */
export function manyScanCases(f: ManyFixtures): Case[] {
  return SCAN_COUNTS.map((n) => ({
    id: `ms_scan${n}`,
    name: `ckptkit scan --fast, ${n} checkpoint${n === 1 ? "" : "s"} × ${count(f.options.files)} files`,
    command: `${ckptkitShell()} scan --fast ${q(f.scanRoot)}`,
    prepare: scanPrepare(f, n),
    bytes: null,
  }));
}

/** Peak RSS of validate, `--fast` and commit at `--many-files`, and of `--fast` on the huge manifest. */
export async function measureManyRss(time: string, f: ManyFixtures): Promise<RssRow[]> {
  progress("measuring peak RSS of the many-file commands");
  const ck = ckptkitArgv();
  const files = f.options.files;
  const { staging, prepare } = manyStaging(f);
  const rows: [string, string, string[], number, number, string?][] = [
    ["rss_many_validate", `ckptkit validate, ${smallLabel(f)}`, [...ck, "validate", f.step], files, 1],
    ["rss_many_fast", `ckptkit validate --fast, ${smallLabel(f)}`, [...ck, "validate", "--fast", f.step], files, 3],
    [
      "rss_many_commit",
      `ckptkit commit, ${smallLabel(f)} (hard-linked staging)`,
      [...ck, "commit", staging, "--root", f.commitRoot, "--step", "2"],
      files,
      1,
      prepare,
    ],
    [
      "rss_huge_fast",
      `ckptkit validate --fast, ${count(f.options.hugeEntries)} entries`,
      [...ck, "validate", "--fast", f.hugeStep],
      f.options.hugeEntries,
      1,
    ],
  ];
  const result: RssRow[] = [];
  for (const [id, name, argv, perFiles, runs, before] of rows) {
    const kib = await peakRssKib(time, argv, runs, before, id === "rss_huge_fast" ? [0, 1] : [0]);
    result.push({ id, name, kib, command: argv.map(q).join(" "), runs, files: perFiles, prepare: before });
  }
  return result;
}
