/**
 * Distributed validation: the shard plan (pure), and the shard + merge flow
 * run as real processes, whose merged verdict must equal a single-node run's
 * document for document, exit code for exit code, metric for metric.
 */

import assert from "node:assert/strict";
import { textfileName } from "../src/metrics/textfile.ts";
import { sealCheckpoint } from "../src/core/seal.ts";
import { mergeShardReports } from "../src/multinode/report_merge.ts";
import { assignShards, MAX_SHARDS, parseShardSpec, type ShardUnit } from "../src/multinode/shard.ts";
import { validateShard } from "../src/multinode/shard_run.ts";
import type { ShardReport } from "../src/multinode/shard_report.ts";
import { readState } from "../src/core/state.ts";
import { validateCheckpoint } from "../src/core/validate.ts";
import { openCheckpointWriter } from "../src/core/writer.ts";
import { cliCommand, type CliRun, copyTree, decode, FIXTURES, flipByte, runCli, samples, tempDir } from "./_helpers.ts";

const MiB = 1024 * 1024;

// ---------------------------------------------------------------------------------------------------------------
// The plan

Deno.test("assignShards balances bytes, not files: one 100 MiB file and ten 10 MiB files over 2 shards", () => {
  const units: ShardUnit[] = [
    { checkpoint: "step-1", path: "big.bin", bytes: 100 * MiB },
    ...Array.from({ length: 10 }, (_, i) => ({ checkpoint: "step-1", path: `small-${i}.bin`, bytes: 10 * MiB })),
  ];
  const shards = assignShards(units, 2);
  assert.deepEqual(shards.map((s) => s.reduce((sum, u) => sum + u.bytes, 0)), [100 * MiB, 100 * MiB]);
  assert.deepEqual(shards[0].map((u) => u.path), ["big.bin"]);
  assert.equal(shards[1].length, 10);
});

/** A deterministic pseudo-random sequence (mulberry32). */
function random(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function shuffled<T>(items: readonly T[], next: () => number): T[] {
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(next() * (i + 1));
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}

Deno.test("assignShards gives every file to exactly one shard, the same plan whatever the input order", () => {
  const next = random(42);
  const units: ShardUnit[] = [];
  for (let c = 0; c < 12; c++) {
    for (let f = 0; f < 9; f++) {
      // Many equal sizes, so ties are decided by (checkpoint, path), never by input order.
      units.push({ checkpoint: `step-${c}`, path: `f${f}.bin`, bytes: Math.floor(next() * 4) * MiB });
    }
  }
  const key = (u: ShardUnit) => `${u.checkpoint}/${u.path}`;
  for (const count of [1, 2, 3, 7, 16]) {
    const plan = assignShards(units, count).map((shard) => shard.map(key));
    for (let round = 0; round < 5; round++) {
      assert.deepEqual(assignShards(shuffled(units, next), count).map((shard) => shard.map(key)), plan);
    }
    const all = plan.flat();
    assert.equal(all.length, units.length);
    assert.equal(new Set(all).size, units.length);
    // Largest-first greedy: no shard exceeds the mean by more than the largest file.
    const loads = assignShards(units, count).map((s) => s.reduce((sum, u) => sum + u.bytes, 0));
    const mean = units.reduce((sum, u) => sum + u.bytes, 0) / count;
    assert.ok(Math.max(...loads) <= mean + 3 * MiB, `${count}: ${loads}`);
  }
});

Deno.test("files that cost nothing to read (fast depth) spread by count over the shards", () => {
  const units = Array.from({ length: 10 }, (_, i) => ({ checkpoint: "step-1", path: `f${i}`, bytes: 0 }));
  assert.deepEqual(assignShards(units, 3).map((s) => s.length), [4, 3, 3]);
});

Deno.test("parseShardSpec takes 0-based i/N and names the value it refuses", () => {
  assert.deepEqual(parseShardSpec("0/1"), { index: 0, count: 1 });
  assert.deepEqual(parseShardSpec(" 7 / 8 "), { index: 7, count: 8 });
  assert.deepEqual(parseShardSpec(`${MAX_SHARDS - 1}/${MAX_SHARDS}`), { index: MAX_SHARDS - 1, count: MAX_SHARDS });
  for (
    const [value, message] of [
      ["3/3", /"3\/3".*0-based, from 0 to 2.*--array=0-2/],
      ["1/0", /"1\/0".*from 1 to 4096/],
      [`0/${MAX_SHARDS + 1}`, /from 1 to 4096, got 4097/],
      ["-1/3", /"-1\/3" is not i\/N/],
      ["1", /"1" is not i\/N/],
      ["1/2/3", /is not i\/N/],
      ["a/b", /"a\/b" is not i\/N/],
    ] as const
  ) {
    assert.throws(() => parseShardSpec(value), (err: Error & { reason?: string }) => {
      assert.equal(err.reason, "invalid_argument");
      assert.match(err.message, message);
      return true;
    });
  }
});

Deno.test("more shards than files: the empty shards write valid reports and the merge equals one run", async () => {
  await using tmp = await tempDir();
  const path = await writeCheckpoint(tmp.path, 1, [3000, 2000]);
  const reports = await Promise.all(
    Array.from({ length: 5 }, (_, index) => validateShard(path, { shard: { index, count: 5 } })),
  );
  assert.deepEqual(reports.map((r) => r.covered.files), [1, 1, 0, 0, 0]);
  assert.ok(reports.every((r) => r.ok));
  // Round trip through the file format, as the CLI does.
  const parsed = await Promise.all(reports.map(async (report, i) => {
    await Deno.writeTextFile(`${tmp.path}/r${i}.json`, JSON.stringify(report));
    return (await import("../src/multinode/shard_report.ts")).readShardReport(`${tmp.path}/r${i}.json`);
  }));
  const merged = await mergeShardReports(parsed, { record: false });
  assert.equal(merged.kind, "validate");
  assert.equal(withoutDurations(merged.result), withoutDurations(await validateCheckpoint(path)));
});

// ---------------------------------------------------------------------------------------------------------------
// Shard processes and merge, against single-node runs

/** Commits a checkpoint of files of the given sizes, each with its own content. */
async function writeCheckpoint(root: string, step: number, sizes: number[]): Promise<string> {
  const writer = await openCheckpointWriter(root, { step, jobId: "job", runId: "run", sampleBytes: 1024 });
  for (const [i, size] of sizes.entries()) {
    await writer.writeFile(`part-${i}.bin`, new Uint8Array(size).map((_, j) => (j * (step + 3 * i + 1)) & 0xff));
  }
  return (await writer.commit()).path;
}

/** A root of three checkpoints of five files of different sizes (15 files to spread over the shards). */
async function makeRoot(root: string): Promise<void> {
  for (const step of [10, 20, 30]) await writeCheckpoint(root, step, [40_000, 30_000, 20_000, 10_000, 5_000]);
}

/** Durations and ages legitimately differ between runs; everything else must not. */
function withoutDurations(value: unknown): string {
  const text = typeof value === "string" ? value : JSON.stringify(value, null, 2);
  return text.replace(/"(duration_s|age_s)": [0-9.e+-]+/g, '"$1": 0');
}

interface ShardRuns {
  runs: CliRun[];
  paths: string[];
  reports: ShardReport[];
}

/** Runs `ckptkit <kind> <target> --shard i/N --report …` for every i at once, as N nodes would. */
async function runShards(
  kind: "validate" | "scan",
  target: string,
  count: number,
  reportDir: string,
  extra: string[] = [],
): Promise<ShardRuns> {
  await Deno.mkdir(reportDir, { recursive: true });
  const paths = Array.from({ length: count }, (_, i) => `${reportDir}/shard-${i}.json`);
  const runs = await Promise.all(paths.map(async (report, i) =>
    decode(
      await cliCommand([kind, target, "--shard", `${i}/${count}`, "--report", report, "--log-level", "warn", ...extra])
        .output(),
    )
  ));
  for (const run of runs) assert.ok(run.code === 0 || run.code === 1, run.stderr);
  const reports = await Promise.all(paths.map(async (p) => JSON.parse(await Deno.readTextFile(p)) as ShardReport));
  return { runs, paths, reports };
}

function merge(paths: string[], extra: string[] = []): Promise<CliRun> {
  return runCli(["report", "merge", ...paths, "--json", "--log-level", "warn", ...extra]);
}

/** The shard whose report covers `file` of `checkpoint`. */
function shardOf(reports: ShardReport[], checkpoint: string, file: string): number {
  const found = reports.filter((r) =>
    r.checkpoints.some((c) => c.name === checkpoint && c.files.some((f) => f.path === file))
  );
  assert.equal(found.length, 1, `${checkpoint}/${file} is read by exactly one shard`);
  return found[0].shard.index;
}

Deno.test("scan --shard on 3 (and 1) processes, merged: the same document, text and exit code as one scan", async () => {
  await using tmp = await tempDir();
  const root = `${tmp.path}/root`;
  await makeRoot(root);
  const single = await runCli(["scan", root, "--json", "--log-level", "warn"]);
  assert.equal(single.code, 0, single.stderr);
  for (const count of [3, 1]) {
    const shards = await runShards("scan", root, count, `${tmp.path}/reports-${count}`);
    assert.deepEqual(shards.runs.map((r) => r.code), Array(count).fill(0));
    assert.equal(shards.reports.reduce((sum, r) => sum + r.covered.files, 0), 15);
    if (count === 3) {
      // Balanced by bytes: 315,000 bytes over 3 shards.
      assert.deepEqual(shards.reports.map((r) => r.covered.bytes), [105_000, 105_000, 105_000]);
    }
    const merged = await merge(shards.paths);
    assert.equal(merged.code, 0, merged.stderr);
    assert.equal(withoutDurations(merged.stdout), withoutDurations(single.stdout));
  }
  const text = (run: CliRun) => run.stdout.replace(/\d+(\.\d+)? s\b/g, "T s");
  const shards = await runShards("scan", root, 3, `${tmp.path}/reports-text`);
  const mergedText = await runCli(["report", "merge", ...shards.paths.reverse(), "--log-level", "warn"]);
  assert.equal(text(mergedText), text(await runCli(["scan", root, "--log-level", "warn"])));
});

/** Damage done to a root before the shards run, and the problem it must produce. */
const DAMAGE: [string, string, (root: string) => Promise<void>, string][] = [
  ["a flipped byte", "hash_mismatch", (root) => flipByte(`${root}/step-20/part-1.bin`, 777), "part-1.bin"],
  ["a truncated file", "size_mismatch", (root) => Deno.truncate(`${root}/step-20/part-0.bin`, 100), "part-0.bin"],
  ["a deleted file", "file_missing", (root) => Deno.remove(`${root}/step-20/part-3.bin`), "part-3.bin"],
  ["an extra file", "unexpected_file", (root) => Deno.writeTextFile(`${root}/step-20/notes.txt`, "x"), "notes.txt"],
];

for (const [what, reason, damage, file] of DAMAGE) {
  Deno.test(`scan --shard with ${what}: merge finds ${reason} exactly as one scan does`, async () => {
    await using tmp = await tempDir();
    const root = `${tmp.path}/root`;
    await makeRoot(root);
    await damage(root);
    const shards = await runShards("scan", root, 3, `${tmp.path}/reports`);
    const single = await runCli(["scan", root, "--json", "--log-level", "warn"]);
    const merged = await merge(shards.paths);
    assert.equal(single.code, 1);
    assert.equal(merged.code, 1, merged.stderr);
    assert.equal(withoutDurations(merged.stdout), withoutDurations(single.stdout));
    const problems = JSON.parse(merged.stdout).checkpoints.flatMap((c: { problems: { reason: string }[] }) =>
      c.problems
    );
    assert.deepEqual(problems.map((p: { reason: string; path: string }) => `${p.reason}:${p.path}`), [
      `${reason}:${file}`,
    ]);
    // A hash mismatch is found by the shard that reads the file; presence, sizes and extra files by shard 0.
    const finder = reason === "hash_mismatch" ? shardOf(shards.reports, "step-20", file) : 0;
    assert.deepEqual(shards.runs.map((r) => r.code), [0, 1, 2].map((i) => (i === finder ? 1 : 0)));
  });
}

Deno.test("a flipped byte in a file read by shard 2 fails shard 2 alone; the merge fails like one scan", async () => {
  await using tmp = await tempDir();
  const root = `${tmp.path}/root`;
  await makeRoot(root);
  // Learn the plan on the clean root, then damage a file of shard 2 (sizes unchanged, so the plan is too).
  const clean = await runShards("scan", root, 3, `${tmp.path}/clean`);
  const part = clean.reports[2].checkpoints.find((c) => c.files.length > 0)!;
  await flipByte(`${root}/${part.name}/${part.files[0].path}`, 5);
  const shards = await runShards("scan", root, 3, `${tmp.path}/reports`);
  assert.deepEqual(shards.runs.map((r) => r.code), [0, 0, 1]);
  assert.match(shards.runs[2].stdout, /PROBLEMS FOUND in this shard's share/);
  const single = await runCli(["scan", root, "--json", "--log-level", "warn"]);
  const merged = await merge(shards.paths);
  assert.equal(merged.code, 1);
  assert.equal(withoutDurations(merged.stdout), withoutDurations(single.stdout));
  const failed = JSON.parse(merged.stdout).checkpoints.find((c: { ok: boolean }) => !c.ok);
  assert.equal(failed.problems[0].reason, "hash_mismatch");
  assert.equal(failed.problems[0].path, part.files[0].path);
});

Deno.test("root checks (latest naming a corrupt checkpoint, stale staging, strays) merge like one scan", async () => {
  await using tmp = await tempDir();
  const root = `${tmp.path}/root`;
  await makeRoot(root);
  await flipByte(`${root}/step-30/part-4.bin`, 1); // latest names step-30
  await Deno.mkdir(`${root}/.staging-step-40-crashed`);
  await Deno.writeTextFile(`${root}/.staging-step-40-crashed/model.pt`, "half");
  const old = new Date(Date.now() - 3 * 3600_000);
  await Deno.utime(`${root}/.staging-step-40-crashed/model.pt`, old, old);
  await Deno.utime(`${root}/.staging-step-40-crashed`, old, old);
  await Deno.mkdir(`${root}/step-007`);
  // Faked mtimes do not age a staging folder (its ctime is new): --stale-after 0s does.
  for (const depth of [["--sample-bytes", "1024"], ["--fast"]].map((d) => [...d, "--stale-after", "0s"])) {
    const shards = await runShards("scan", root, 2, `${tmp.path}/reports${depth[0]}`, depth);
    const single = await runCli(["scan", root, "--json", "--log-level", "warn", ...depth]);
    const merged = await merge(shards.paths);
    assert.equal(merged.code, 1);
    assert.equal(withoutDurations(merged.stdout), withoutDurations(single.stdout));
    const result = JSON.parse(merged.stdout);
    assert.equal(result.summary.stale_staging, 1);
    assert.equal(result.strays.length, 1);
    if (depth[0] !== "--fast") assert.match(result.latest.problem, /step-30, which is invalid/);
  }
});

/** Real torch files in a DeepSpeed layout, sealed; one of them truncated before sealing (deep finds it). */
async function torchCheckpoint(dir: string): Promise<void> {
  await Deno.mkdir(`${dir}/global_step5`, { recursive: true });
  await Deno.writeTextFile(`${dir}/latest`, "global_step5");
  await Deno.copyFile(`${FIXTURES}/torch-zip/test.pt`, `${dir}/global_step5/mp_rank_00_model_states.pt`);
  await Deno.copyFile(
    `${FIXTURES}/torch-zip/fortran_tensor_3d.pth`,
    `${dir}/global_step5/zero_pp_rank_0_mp_rank_00_optim_states.pt`,
  );
  await Deno.copyFile(
    `${FIXTURES}/torch-zip/test_with_key.pt`,
    `${dir}/global_step5/zero_pp_rank_2_mp_rank_00_optim_states.pt`,
  );
  await Deno.copyFile(`${FIXTURES}/safetensors/voices.safetensors`, `${dir}/voices.safetensors`);
  await Deno.copyFile(`${FIXTURES}/torch-legacy/linear_state.bin`, `${dir}/legacy.bin`);
  await Deno.copyFile(`${FIXTURES}/torch-zip/test_with_key.pt`, `${dir}/model.pt`);
  await Deno.truncate(`${dir}/model.pt`, 900); // disk full mid-save, then sealed as if fine
}

Deno.test("validate --shard on real torch files at full and deep depth: merged equals one validate", async () => {
  await using tmp = await tempDir();
  const dir = `${tmp.path}/root/step-5`;
  await torchCheckpoint(dir);
  await sealCheckpoint(dir, { step: 5 });
  await flipByte(`${dir}/voices.safetensors`, -10);
  for (const depth of [[], ["--deep"]]) {
    const shards = await runShards("validate", dir, 3, `${tmp.path}/reports${depth.join("")}`, depth);
    const single = await runCli(["validate", dir, "--json", "--log-level", "warn", ...depth]);
    const merged = await merge(shards.paths);
    assert.equal(single.code, 1);
    assert.equal(merged.code, 1, merged.stderr);
    assert.equal(withoutDurations(merged.stdout), withoutDurations(single.stdout));
    const reasons = new Set(JSON.parse(merged.stdout).problems.map((p: { reason: string }) => p.reason));
    // Deep adds the truncated zip and the missing rank 1 of the DeepSpeed layout, which needs every shard's files.
    assert.deepEqual(
      [...reasons].sort(),
      depth.length ? ["format_invalid", "hash_mismatch"] : ["hash_mismatch"],
    );
    if (depth.length) {
      assert.ok(
        JSON.parse(merged.stdout).problems.some((p: { path: string }) => /zero_pp_rank_1_/.test(p.path)),
        merged.stdout,
      );
    }
  }
});

Deno.test("the merge puts every shard's findings back in one process's read order (notes per file)", async () => {
  await using tmp = await tempDir();
  const dir = `${tmp.path}/root/step-3`;
  await Deno.mkdir(dir, { recursive: true });
  for (const [i, size] of [700, 9000, 300, 5000, 5000, 1200, 80].entries()) {
    await Deno.writeFile(`${dir}/f${i}.bin`, new Uint8Array(size).fill(i));
  }
  // No sampled digests recorded: sampled validation notes each file, largest first.
  await sealCheckpoint(dir, { sampleBytes: 0 });
  const shards = await runShards("validate", dir, 3, `${tmp.path}/reports`, ["--sample-bytes", "1024"]);
  const single = await runCli(["validate", dir, "--json", "--log-level", "warn", "--sample-bytes", "1024"]);
  const merged = await merge(shards.paths.reverse());
  assert.equal(merged.code, 0, merged.stderr);
  assert.equal(withoutDurations(merged.stdout), withoutDurations(single.stdout));
  assert.deepEqual(
    JSON.parse(merged.stdout).notes.slice(1).map((n: string) => n.split(":")[0]),
    ["f1.bin", "f3.bin", "f4.bin", "f5.bin", "f0.bin", "f2.bin", "f6.bin"],
  );
});

Deno.test("validate --deep --shard of a folder without a manifest (formats and layout only) merges like one run", async () => {
  await using tmp = await tempDir();
  const dir = `${tmp.path}/checkpoint-5`;
  await torchCheckpoint(dir);
  await Deno.writeTextFile(`${dir}/trainer_state.json`, JSON.stringify({ global_step: 4 }));
  const shards = await runShards("validate", dir, 3, `${tmp.path}/reports`, ["--deep"]);
  assert.ok(shards.reports.every((r) => r.plan[0].digest?.startsWith("structure:sha256:")));
  const single = await runCli(["validate", dir, "--json", "--deep", "--log-level", "warn"]);
  const merged = await merge(shards.paths);
  assert.equal(merged.code, single.code);
  assert.equal(withoutDurations(merged.stdout), withoutDurations(single.stdout));
  assert.equal(JSON.parse(merged.stdout).manifest_backed, false);
});

// ---------------------------------------------------------------------------------------------------------------
// Sets that must be refused

Deno.test("merge refuses incomplete, duplicated and mismatched sets, saying what to do (exit 2)", async () => {
  await using tmp = await tempDir();
  const root = `${tmp.path}/root`;
  await makeRoot(root);
  const { paths } = await runShards("scan", root, 3, `${tmp.path}/reports`);
  const refuse = async (args: string[], reason: string, message: RegExp) => {
    const run = await runCli(["report", "merge", ...args]);
    assert.equal(run.code, 2, run.stderr);
    assert.match(run.stderr, message);
    assert.match(run.stderr, new RegExp(`\\[${reason}\\]\\n`));
    assert.equal(run.stdout, "");
  };
  await refuse(
    [paths[0], paths[2]],
    "report_mismatch",
    /incomplete set: missing shard 1 of 3; wait for it or rerun it/,
  );
  await Deno.copyFile(paths[1], `${tmp.path}/copy.json`);
  await refuse(
    [...paths, `${tmp.path}/copy.json`],
    "report_mismatch",
    /duplicate shard 1 of 3: .*shard-1\.json and .*copy\.json; pass each shard's report once/,
  );

  const four = await runShards("scan", root, 4, `${tmp.path}/four`);
  await refuse(
    [paths[0], paths[1], four.paths[2]],
    "report_mismatch",
    /mismatched set: .*four\/shard-2\.json is shard 2 of 4, .*shard-0\.json shard 0 of 3; give every shard the same N/,
  );

  const fast = await runShards("scan", root, 3, `${tmp.path}/fast`, ["--fast"]);
  await refuse(
    [paths[0], fast.paths[1], paths[2]],
    "report_mismatch",
    /mismatched set: .*fast\/shard-1\.json validated at fast depth, .* at full; rerun with one depth/,
  );

  await copyTree(root, `${tmp.path}/other`);
  const other = await runShards("scan", `${tmp.path}/other`, 3, `${tmp.path}/other-reports`);
  await refuse(
    [paths[0], other.paths[1], paths[2]],
    "report_mismatch",
    /mismatched set: .*validated .*\/other, .* .*\/root; reports of different targets cannot be merged/,
  );

  await Deno.writeTextFile(`${tmp.path}/cut.json`, (await Deno.readTextFile(paths[1])).slice(0, 300));
  await refuse(
    [paths[0], `${tmp.path}/cut.json`, paths[2]],
    "report_invalid",
    /cut\.json is not valid JSON .*; was it cut short\? Rerun its shard/,
  );
  const edited = JSON.parse(await Deno.readTextFile(paths[1]));
  const at = edited.checkpoints.findIndex((c: { files: unknown[] }) => c.files.length > 0);
  edited.checkpoints[at].files[0].problems = [{ reason: "bit_rot", path: "x", detail: "y" }];
  await Deno.writeTextFile(`${tmp.path}/edited.json`, JSON.stringify(edited));
  await refuse(
    [paths[0], `${tmp.path}/edited.json`, paths[2]],
    "report_invalid",
    new RegExp(
      `edited\\.json is not a usable shard report: field checkpoints\\.${at}\\.files\\.0\\.problems\\.0\\.reason: .*rerun its shard`,
    ),
  );
  await Deno.writeTextFile(`${tmp.path}/other.json`, JSON.stringify({ ok: true }));
  await refuse([`${tmp.path}/other.json`], "report_invalid", /not a ckptkit shard report/);
});

Deno.test("merge refuses shards that listed different checkpoints (a commit between them)", async () => {
  await using tmp = await tempDir();
  const root = `${tmp.path}/root`;
  await makeRoot(root);
  const before = await runShards("scan", root, 3, `${tmp.path}/before`);
  await writeCheckpoint(root, 40, [1000]);
  const after = await runShards("scan", root, 3, `${tmp.path}/after`);
  const run = await runCli(["report", "merge", before.paths[0], before.paths[1], after.paths[2]]);
  assert.equal(run.code, 2);
  assert.match(
    run.stderr,
    /plan mismatch: shards listed different checkpoints \(a commit or gc ran between them\): .*after\/shard-2\.json lists step-40, .*before\/shard-0\.json does not; rerun the shards \[report_mismatch\]/,
  );
});

Deno.test("shard flags are refused before any work when they cannot lead to a merge (exit 2)", async () => {
  await using tmp = await tempDir();
  const root = `${tmp.path}/root`;
  await writeCheckpoint(root, 1, [100]);
  for (
    const [args, message] of [
      [["scan", root, "--shard", "1/3"], /--shard 1\/3 needs --report <path>/],
      [["scan", root, "--report", `${tmp.path}/r.json`], /--report is written by shard runs: add --shard i\/N/],
      [["scan", root, "--shard", "3/3", "--report", `${tmp.path}/r.json`], /"3\/3".*0-based, from 0 to 2/],
      [["validate", `${root}/step-1`, "--shard", "x", "--report", `${tmp.path}/r.json`], /"x" is not i\/N/],
      [
        ["scan", root, "--shard", "0/2", "--report", `${tmp.path}/r.json`, "--quarantine"],
        /pass it to `ckptkit report merge`/,
      ],
      [["scan", root, "--shard", "0/2", "--report", `${root}/r.json`], /inside .*; write reports outside it/],
      [["validate", `${root}/step-1`, "--shard", "0/2", "--report", `${root}/step-1/r.json`], /an unexpected file/],
    ] as const
  ) {
    const run = await runCli([...args]);
    assert.equal(run.code, 2, `${args.join(" ")}\n${run.stderr}`);
    assert.match(run.stderr, message);
  }
  assert.deepEqual((await Array.fromAsync(Deno.readDir(`${root}/step-1`))).map((e) => e.name).sort(), [
    "ckptkit.manifest.json",
    "part-0.bin",
  ]);
  assert.ok(!(await Deno.stat(`${tmp.path}/r.json`).then(() => true, () => false)), "no report written");
});

// ---------------------------------------------------------------------------------------------------------------
// State, quarantine and metrics after a merge

Deno.test("merge --textfile writes the series emit-metrics writes after one scan, and records state alike", async () => {
  await using tmp = await tempDir();
  await makeRoot(`${tmp.path}/a`);
  await flipByte(`${tmp.path}/a/step-20/part-2.bin`, 9);
  await copyTree(`${tmp.path}/a`, `${tmp.path}/b`);
  // the same root label on both, so the two roots' series compare equal
  const label = ["--root-label", "llama"];
  const single = await runCli(["emit-metrics", `${tmp.path}/a`, "--textfile", `${tmp.path}/a.prom`, ...label]);
  assert.equal(single.code, 1, single.stderr);
  const shards = await runShards("scan", `${tmp.path}/b`, 3, `${tmp.path}/reports`);
  const merged = await merge(shards.paths, ["--textfile", `${tmp.path}/b.prom`, ...label]);
  assert.equal(merged.code, 1, merged.stderr);
  assert.match(await Deno.readTextFile(`${tmp.path}/b.prom`), /^checkpoint_latest_valid\{root="llama",/m);
  // Times, ages and free space differ between two runs on two roots; every other series must not.
  const moving =
    /^(checkpoint_last_validation_timestamp|checkpoint_last_validation_duration_seconds|checkpoint_newest_valid_age_seconds|checkpoint_directory_free_bytes)\{/;
  const stable = (text: string) => [...samples(text)].filter(([key]) => !moving.test(key));
  const a = stable(await Deno.readTextFile(`${tmp.path}/a.prom`));
  const b = stable(await Deno.readTextFile(`${tmp.path}/b.prom`));
  assert.deepEqual(b, a);
  assert.ok(
    a.some(([key, value]) =>
      /^checkpoint_validation_failures_total\{.*reason="hash_mismatch"/.test(key) && value === 1
    ),
  );
  assert.ok(a.some(([key, value]) => /^checkpoint_corrupt_detected\{.*checkpoint="step-20"/.test(key) && value === 1));
  const stateA = (await readState(`${tmp.path}/a`)).state;
  const stateB = (await readState(`${tmp.path}/b`)).state;
  assert.deepEqual(Object.keys(stateB.known_good).sort(), ["step-10", "step-30"]);
  assert.deepEqual(Object.keys(stateB.known_good).sort(), Object.keys(stateA.known_good).sort());
  assert.ok(Object.values(stateB.known_good).every((k) => k.by === "scan"));
  assert.deepEqual(stateB.validation_failures_total, stateA.validation_failures_total);
  // a collector folder: the file is named after the reports' root, labelled with its real path
  await Deno.mkdir(`${tmp.path}/collector`);
  const intoFolder = await merge(shards.paths, ["--textfile", `${tmp.path}/collector`]);
  assert.equal(intoFolder.code, 1, intoFolder.stderr);
  const written = `${tmp.path}/collector/${textfileName(`${tmp.path}/b`)}`;
  assert.ok((await Deno.readTextFile(written)).includes(`\ncheckpoint_latest_valid{root="${tmp.path}/b",`), written);
});

Deno.test("merge does not record as known-good a checkpoint changed since the shards read it", async () => {
  await using tmp = await tempDir();
  const root = `${tmp.path}/root`;
  const path = await writeCheckpoint(root, 1, [5000, 3000]);
  const reports = await Promise.all([0, 1].map((index) => validateShard(path, { shard: { index, count: 2 } })));
  const later = new Date(Date.now() + 60_000);
  await Deno.utime(`${path}/part-1.bin`, later, later); // rewritten in place after the shards read it
  const before = (await readState(root)).state.known_good["step-1"];
  const merged = await mergeShardReports(reports);
  assert.ok(merged.kind === "validate" && merged.result.ok);
  assert.match(merged.result.notes.join("\n"), /changed on disk since the shards read it/);
  assert.deepEqual((await readState(root)).state.known_good["step-1"], before, "the commit's record is untouched");
});

Deno.test("merge --quarantine moves the corrupt checkpoints, as scan --quarantine does", async () => {
  await using tmp = await tempDir();
  const root = `${tmp.path}/root`;
  await makeRoot(root);
  await flipByte(`${root}/step-10/part-0.bin`, 3);
  const shards = await runShards("scan", root, 2, `${tmp.path}/reports`);
  const merged = await merge(shards.paths, ["--quarantine"]);
  assert.equal(merged.code, 1);
  assert.deepEqual(JSON.parse(merged.stdout).quarantined.map((q: { name: string }) => q.name), ["step-10"]);
  assert.ok(await Deno.stat(`${root}/corrupt/step-10`));
  assert.ok(!(await Deno.stat(`${root}/step-10`).then(() => true, () => false)));
});
