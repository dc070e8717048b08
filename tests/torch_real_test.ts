/**
 * ckptkit against real PyTorch (Debian's python3-torch, 1.13): files written
 * by torch.save itself, in both formats and in the DeepSpeed and Hugging Face
 * Trainer layouts, are committed or sealed, validated, resumed from and loaded
 * back with torch.load; and a corruption matrix compares what ckptkit reports
 * with what torch.load does on the same damaged bytes. The matrix is the table
 * in docs/training-integration.md ("Frameworks", PyTorch) between the
 * torch-matrix markers; when they differ the test fails and prints the fresh
 * table. To rewrite that block from what was observed:
 *
 *   CKPTKIT_UPDATE_TORCH_TABLE=1 deno test --allow-read --allow-write --allow-env --allow-sys --allow-net \
 *     --allow-run tests/torch_real_test.ts
 *
 * The torch side is tests/torch_real.py. These tests fail, never skip, when
 * `import torch` fails: CI installs python3-torch. `torchPython()` finds the
 * python3 that imports it (Debian's /usr/bin/python3 when a pyenv or venv
 * python3 comes first on the PATH).
 */

import assert from "node:assert/strict";
import { sealCheckpoint } from "../src/core/seal.ts";
import { validateCheckpoint, type ValidationDepth, type ValidationResult } from "../src/core/validate.ts";
import { flipByte, REPO, runCli, tempDir, torchPython } from "./_helpers.ts";

const SCRIPT = `${REPO}/tests/torch_real.py`;
const TABLE_PAGE = `${REPO}/docs/training-integration.md`;
const TABLE_BEGIN = "<!-- torch-matrix:begin -->";
const TABLE_END = "<!-- torch-matrix:end -->";

/** Runs tests/torch_real.py with a python3 that imports torch; its JSON output. */
async function torchReal<T>(command: "write" | "layouts" | "verify" | "matrix", arg: string): Promise<T> {
  const python = await torchPython();
  const output = await new Deno.Command(python, {
    args: [SCRIPT, command, arg],
    env: { PYTHONDONTWRITEBYTECODE: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!output.success) {
    const stderr = new TextDecoder().decode(output.stderr).trim();
    throw new Error(`${python} tests/torch_real.py ${command} failed (exit ${output.code}):\n${stderr}`);
  }
  return JSON.parse(new TextDecoder().decode(output.stdout)) as T;
}

/** What torch.load did with a file, as tests/torch_real.py reports it. */
interface TorchVerdict {
  outcome: "raises" | "wrong" | "correct";
  exception?: string;
  message?: string;
  differences?: string[];
}

/** One file for `verify`: which saved object it must equal (see `expected` in tests/torch_real.py). */
interface VerifyItem {
  path: string;
  kind: string;
  seed: number;
  step?: number;
  weights_only?: boolean;
}

async function cliJson(args: string[]): Promise<{ code: number; doc: Record<string, unknown>; stderr: string }> {
  const run = await runCli([...args, "--json", "--log-level", "warn"]);
  let doc: Record<string, unknown>;
  try {
    doc = JSON.parse(run.stdout);
  } catch {
    throw new Error(`ckptkit ${args.join(" ")}: exit ${run.code}, stdout not JSON: ${run.stdout}\n${run.stderr}`);
  }
  return { code: run.code, doc, stderr: run.stderr };
}

async function cliOk(args: string[]): Promise<Record<string, unknown>> {
  const run = await cliJson(args);
  assert.equal(run.code, 0, `ckptkit ${args.join(" ")}: ${JSON.stringify(run.doc)}\n${run.stderr}`);
  return run.doc;
}

type Problems = { reason: string; path: string; detail: string }[];

// ---------------------------------------------------------------------------
// 1. Real torch.save files through commit/seal, validate --deep, resume and torch.load

Deno.test("real torch.save (zip, legacy), DeepSpeed and Trainer folders: commit/seal, validate --deep, resume, torch.load", async () => {
  await using tmp = await tempDir();
  const w = `${tmp.path}/written`;
  await torchReal("write", w);

  // torch.save zip (step 10) and legacy (step 20), each written into a staging folder and committed.
  const root = `${tmp.path}/root`;
  await Deno.mkdir(root);
  for (const [kind, step] of [["zip", 10], ["legacy", 20]] as const) {
    await Deno.rename(`${w}/${kind}`, `${root}/.staging-step-${step}`);
    await cliOk(["commit", `${root}/.staging-step-${step}`, "--root", root, "--step", `${step}`, "--job-id", "real"]);
  }
  // engine.save_checkpoint(staging, tag="global_step30"), committed as step-30.
  const dsRoot = `${tmp.path}/ds-root`;
  await Deno.mkdir(dsRoot);
  await Deno.rename(`${w}/deepspeed`, `${dsRoot}/.staging-step-30`);
  await cliOk(["commit", `${dsRoot}/.staging-step-30`, "--root", dsRoot, "--step", "30", "--job-id", "ds"]);
  // Trainer output_dirs: one sealed in place, the other with seal --all (a deep check first).
  await cliOk(["seal", `${w}/trainer/checkpoint-40`, "--job-id", "hf"]);
  const all = await cliOk(["seal", `${w}/trainer-bin`, "--all", "--job-id", "hf"]);
  assert.match(JSON.stringify(all), /checkpoint-40/);

  const expectations: [string, string][] = [
    [`${root}/step-10`, "plain"],
    [`${root}/step-20`, "plain"],
    [`${dsRoot}/step-30`, "deepspeed"],
    [`${w}/trainer/checkpoint-40`, "hf-trainer"],
    [`${w}/trainer-bin/checkpoint-40`, "hf-trainer"],
  ];
  for (const [path, layout] of expectations) {
    const doc = await cliOk(["validate", path, "--deep"]);
    assert.deepEqual(doc.problems, [], path);
    assert.equal(doc.layout, layout, path);
    assert.equal(doc.manifest_backed, true, path);
  }

  const chosen: Record<string, string> = {};
  for (
    const [name, dir, depth] of [
      ["torch", root, "--deep"],
      ["ds", dsRoot, "--deep"],
      ["hf", `${w}/trainer`, "--fast"],
      ["hf-bin", `${w}/trainer-bin`, "--deep"],
    ]
  ) {
    const run = await runCli(["resume", dir, depth, "--log-level", "warn"]);
    assert.equal(run.code, 0, `${name}: ${run.stdout}${run.stderr}`);
    chosen[name] = run.stdout.trim();
  }
  assert.deepEqual(chosen, {
    torch: `${root}/step-20`,
    ds: `${dsRoot}/step-30`,
    hf: `${w}/trainer/checkpoint-40`,
    "hf-bin": `${w}/trainer-bin/checkpoint-40`,
  });

  // torch.load, in python3, of every file of what resume chose (and of step-10, chosen below). PyTorch 1.13's
  // weights_only=True reads no Python float ("Unsupported operand 71"): objects holding an optimizer's or a
  // scheduler's state (a learning rate) are loaded with weights_only=False.
  const ds = `${chosen.ds}/global_step30`;
  const items: VerifyItem[] = [
    { path: `${chosen.torch}/model.pt`, kind: "plain", seed: 2, step: 20, weights_only: false },
    { path: `${root}/step-10/model.pt`, kind: "plain", seed: 1, step: 10, weights_only: false },
    // DeepSpeed loads its states with weights_only=False (they hold sets and torch.Size).
    { path: `${ds}/mp_rank_00_model_states.pt`, kind: "ds-model", seed: 3, step: 30, weights_only: false },
    { path: `${ds}/zero_pp_rank_0_mp_rank_00_optim_states.pt`, kind: "ds-optim-0", seed: 3, weights_only: false },
    { path: `${ds}/zero_pp_rank_1_mp_rank_00_optim_states.pt`, kind: "ds-optim-1", seed: 3, weights_only: false },
  ];
  for (const [name, seed, weights] of [["hf", 4, "model.safetensors"], ["hf-bin", 5, "pytorch_model.bin"]] as const) {
    const dir = chosen[name];
    items.push(
      { path: `${dir}/${weights}`, kind: "model", seed },
      { path: `${dir}/optimizer.pt`, kind: "optimizer", seed, weights_only: false },
      { path: `${dir}/scheduler.pt`, kind: "scheduler", seed, weights_only: false },
      { path: `${dir}/rng_state.pth`, kind: "rng", seed, weights_only: false },
      { path: `${dir}/training_args.bin`, kind: "args", seed, step: 40, weights_only: false },
      { path: `${dir}/trainer_state.json`, kind: "state", seed, step: 40 },
    );
  }
  // And the float that weights_only=True cannot read in 1.13, as docs/training-integration.md says.
  items.push({ path: `${root}/step-10/model.pt`, kind: "plain", seed: 1, step: 10, weights_only: true });
  await Deno.writeTextFile(`${tmp.path}/verify.json`, JSON.stringify(items));
  const loaded = await torchReal<{ torch_version: string; results: TorchVerdict[] }>(
    "verify",
    `${tmp.path}/verify.json`,
  );
  const floats = loaded.results.pop()!;
  items.pop();
  items.forEach((item, i) => {
    assert.equal(loaded.results[i].outcome, "correct", `${item.path}: ${JSON.stringify(loaded.results[i])}`);
  });
  if (loaded.torch_version.startsWith("1.13")) {
    assert.equal(floats.outcome, "raises");
    assert.match(floats.message!, /Unsupported operand 71/);
  }

  // One flipped bit in step-20's tensor bytes: resume falls back to step-10, whose torch.load was checked above.
  const model20 = `${root}/step-20/model.pt`;
  await flipByte(model20, Math.floor((await Deno.stat(model20)).size * 0.9));
  const fallback = await cliJson(["resume", root]);
  assert.equal(fallback.code, 0, JSON.stringify(fallback.doc));
  assert.equal(fallback.doc.path, `${root}/step-10`);
  assert.deepEqual((fallback.doc.rejected as { name: string; reasons: string[] }[]).map((r) => [r.name, r.reasons]), [
    ["step-20", ["hash_mismatch"]],
  ]);
});

// ---------------------------------------------------------------------------
// 2 and 3. The corruption matrix, and the docs table computed from it

interface MatrixCell {
  cell: string;
  format: "zip" | "legacy";
  damage: string;
  applies: boolean;
  what?: string;
  torch?: TorchVerdict;
}

/** What each column of the table validated, for one cell. */
interface Observed {
  cell: MatrixCell;
  fast?: ValidationResult;
  full?: ValidationResult;
  deepBare?: ValidationResult;
}

const DAMAGE_LABELS: Record<string, string> = {
  "flip": "one bit flipped in a tensor's bytes",
  "zero-4k": "a 4 KiB block of a tensor zeroed",
  "rename-key": "a state_dict key renamed in the pickle",
  "truncate": "truncated inside a tensor",
  "append": "4 KiB appended",
  "zero-central-directory": "zip central directory zeroed",
};

const NOT_APPLICABLE: Record<string, string> = {
  "legacy-zero-central-directory": "n/a (no central directory)",
};

function torchCell(verdict: TorchVerdict | undefined): string {
  if (!verdict) return "";
  if (verdict.outcome === "raises") return `raises \`${verdict.exception}\``;
  return verdict.outcome === "wrong" ? "**loads wrong values, no error**" : "loads the saved values";
}

function ckptkitCell(result: ValidationResult | undefined): string {
  if (!result) return "";
  if (result.ok) return "passes";
  return `fails: ${[...new Set(result.problems.map((p) => `\`${p.reason}\``))].sort().join(", ")}`;
}

/** The docs table, from what was observed. */
function matrixTable(observed: Observed[], torchVersion: string): string {
  const rows = [
    `| damage | format | \`torch.load\` (${/^\d+\.\d+/.exec(torchVersion)?.[0]}, \`weights_only=True\`) | ` +
    "`validate --fast` | `validate` (full) | `validate --deep`, no manifest |",
    "| --- | --- | --- | --- | --- | --- |",
  ];
  for (const { cell, fast, full, deepBare } of observed) {
    const label = DAMAGE_LABELS[cell.damage];
    if (!cell.applies) {
      rows.push(`| ${label} | ${cell.format} | ${NOT_APPLICABLE[cell.cell]} | | | |`);
      continue;
    }
    rows.push(
      `| ${label} | ${cell.format} | ${torchCell(cell.torch)} | ${ckptkitCell(fast)} | ${ckptkitCell(full)} | ` +
        `${ckptkitCell(deepBare)} |`,
    );
  }
  return rows.join("\n");
}

/** A markdown table without its column padding, so `deno fmt`'s alignment does not count. */
function normalizeTable(table: string): string {
  return table.trim().split("\n").map((line) =>
    line.trim().split("|").map((cell) => cell.trim()).map((cell) => /^-+$/.test(cell) ? "---" : cell).join("|")
  ).join("\n");
}

async function docsTable(): Promise<{ text: string; table: string | undefined }> {
  const text = await Deno.readTextFile(TABLE_PAGE);
  const begin = text.indexOf(TABLE_BEGIN);
  const end = text.indexOf(TABLE_END);
  if (begin < 0 || end < begin) return { text, table: undefined };
  return { text, table: text.slice(begin + TABLE_BEGIN.length, end).trim() };
}

Deno.test("corruption matrix on real torch.save files: what torch.load misses and ckptkit catches (the docs table)", async () => {
  await using tmp = await tempDir();
  const out = `${tmp.path}/matrix`;
  const { cells, torch_version } = await torchReal<{ cells: MatrixCell[]; torch_version: string }>("matrix", out);
  assert.equal(cells.length, 12, "6 damages × 2 formats");

  // The manifest of each undamaged file, sealed before the damage, goes beside the damaged copy.
  for (const format of ["zip", "legacy"]) {
    await sealCheckpoint(`${out}/orig-${format}`, { step: 70, jobId: "matrix" });
    const clean = await validateCheckpoint(`${out}/orig-${format}`, { depth: "deep" });
    assert.deepEqual(clean.problems, [], `the undamaged ${format} file passes --deep`);
  }
  const observed: Observed[] = [];
  for (const cell of cells) {
    if (!cell.applies) {
      assert.ok(NOT_APPLICABLE[cell.cell], `${cell.cell} does not apply but says not why`);
      observed.push({ cell });
      continue;
    }
    const bare = `${out}/cells/${cell.cell}`;
    const sealed = `${out}/sealed/${cell.cell}`;
    await Deno.mkdir(sealed, { recursive: true });
    await Deno.copyFile(`${bare}/model.pt`, `${sealed}/model.pt`);
    await Deno.copyFile(`${out}/orig-${cell.format}/ckptkit.manifest.json`, `${sealed}/ckptkit.manifest.json`);
    const validate = (path: string, depth: ValidationDepth) => validateCheckpoint(path, { depth, concurrency: 1 });
    observed.push({
      cell,
      fast: await validate(sealed, "fast"),
      full: await validate(sealed, "full"),
      deepBare: await validate(bare, "deep"),
    });
  }

  // Facts the table must show, whatever else changes.
  const get = (name: string) => observed.find((o) => o.cell.cell === name)!;
  for (const o of observed.filter((o) => o.cell.applies)) {
    assert.equal(o.full!.ok, false, `${o.cell.cell}: full validation against the manifest catches every damage`);
    assert.equal(o.deepBare!.manifest_backed, false);
  }
  for (const name of ["zip-flip", "zip-zero-4k", "zip-rename-key", "legacy-flip", "legacy-zero-4k"]) {
    assert.equal(get(name).cell.torch!.outcome, "wrong", `${name}: torch.load returns damaged values silently`);
    assert.equal(get(name).fast!.ok, true, `${name}: same size, so --fast cannot see it`);
  }
  for (const name of ["zip-flip", "zip-zero-4k", "zip-rename-key"]) {
    const deep = get(name).deepBare!;
    assert.deepEqual(deep.problems.map((p) => p.reason), ["format_invalid"], name);
    assert.match(deep.problems[0].detail, /CRC-32 of its data is [0-9a-f]{8} but the archive records/, name);
  }
  for (const name of ["legacy-flip", "legacy-zero-4k", "legacy-rename-key"]) {
    assert.equal(get(name).deepBare!.ok, true, `${name}: the legacy format has no checksum: only a manifest sees it`);
  }
  assert.match(JSON.stringify(get("legacy-truncate").deepBare!.problems), /inside storage .* the file is truncated/);
  assert.match(JSON.stringify(get("zip-append").deepBare!.problems), /4096 bytes follow the end of central directory/);
  assert.match(JSON.stringify(get("legacy-append").deepBare!.problems), /4096 bytes follow the last storage/);
  assert.equal(get("zip-append").cell.torch!.outcome, "correct");
  // What ckptkit says torch.load fails with is what it fails with.
  for (
    const [name, message] of [
      ["zip-truncate", "failed finding central directory"],
      ["zip-zero-central-directory", "invalid header or archive is corrupted"],
    ]
  ) {
    const { torch } = get(name).cell;
    assert.equal(torch!.outcome, "raises", name);
    assert.ok(torch!.message!.includes(message), `${name}: torch.load raised ${torch!.message}`);
    const details = get(name).deepBare!.problems.map((p) => p.detail);
    assert.ok(details.some((d) => d.includes(`"${message}"`)), `${name}: ${details.join("\n")}`);
  }
  // A damaged central directory is that finding alone, not every record it hides reported missing.
  assert.doesNotMatch(JSON.stringify(get("zip-zero-central-directory").deepBare!.problems), /not in the central/);

  // The CLI says the same as the library for a cell of each kind.
  for (const [path, code] of [[`${out}/cells/zip-flip`, 1], [`${out}/cells/legacy-flip`, 0]] as const) {
    const run = await runCli(["validate", path, "--deep", "--log-level", "warn"]);
    assert.equal(run.code, code, `validate --deep ${path}: ${run.stdout}`);
  }

  const fresh = matrixTable(observed, torch_version);
  const { text, table } = await docsTable();
  const same = table !== undefined && normalizeTable(table) === normalizeTable(fresh);
  if (Deno.env.get("CKPTKIT_UPDATE_TORCH_TABLE") === "1" && table !== undefined && !same) {
    const begin = text.indexOf(TABLE_BEGIN) + TABLE_BEGIN.length;
    await Deno.writeTextFile(
      TABLE_PAGE,
      `${text.slice(0, begin)}\n\n${fresh}\n\n${text.slice(text.indexOf(TABLE_END))}`,
    );
    // deno fmt aligns the columns, as `deno task check` wants them.
    const fmt = await new Deno.Command(Deno.execPath(), { args: ["fmt", TABLE_PAGE], stdout: "null", stderr: "piped" })
      .output();
    assert.ok(fmt.success, new TextDecoder().decode(fmt.stderr));
    return;
  }
  assert.ok(
    table !== undefined,
    `docs/training-integration.md has no ${TABLE_BEGIN} … ${TABLE_END} block; the table is:\n${fresh}`,
  );
  assert.ok(
    same,
    `docs/training-integration.md's torch-matrix table differs from what was observed. The observed table:\n\n${fresh}\n\n` +
      `(CKPTKIT_UPDATE_TORCH_TABLE=1 rewrites the docs block with it.)`,
  );
});

// ---------------------------------------------------------------------------
// 4. Trainer layout rules on folders written the way the Trainer writes them

Deno.test("Trainer folders written with real torch: optimizer.pt and scheduler.pt both or neither; a lost DeepSpeed rank (--deep, no manifest)", async () => {
  await using tmp = await tempDir();
  await torchReal("layouts", tmp.path);
  const check = async (variant: string) => {
    const run = await cliJson(["validate", `${tmp.path}/${variant}/checkpoint-50`, "--deep"]);
    return { code: run.code, layout: run.doc.layout, problems: run.doc.problems as Problems };
  };
  // save_only_model=True: model, config, training_args.bin and trainer_state.json only.
  assert.deepEqual(await check("model-only"), { code: 0, layout: "hf-trainer", problems: [] });
  // With DeepSpeed the optimizer lives in global_step50/; scheduler.pt alone is what the Trainer writes.
  assert.deepEqual(await check("deepspeed-scheduler"), { code: 0, layout: "hf-trainer", problems: [] });

  const noScheduler = await check("no-scheduler");
  assert.equal(noScheduler.code, 1);
  assert.deepEqual(noScheduler.problems.map((p) => [p.reason, p.path]), [["format_invalid", "scheduler.pt"]]);
  assert.match(noScheduler.problems[0].detail, /optimizer.pt is present but scheduler.pt is not/);

  // The highest data-parallel rank's shard lost: only the dp_world_size the real model states record shows it.
  await Deno.remove(
    `${tmp.path}/deepspeed-scheduler/checkpoint-50/global_step50/zero_pp_rank_1_mp_rank_00_optim_states.pt`,
  );
  const lostRank = await check("deepspeed-scheduler");
  assert.equal(lostRank.code, 1);
  assert.deepEqual(lostRank.problems.map((p) => p.path), ["global_step50/zero_pp_rank_1_mp_rank_00_optim_states.pt"]);
  assert.match(lostRank.problems[0].detail, /expected 2 data-parallel ranks, dp_world_size 2/);

  const noOptimizer = await check("no-optimizer");
  assert.equal(noOptimizer.code, 1);
  assert.deepEqual(noOptimizer.problems.map((p) => [p.reason, p.path]), [["format_invalid", "optimizer.pt"]]);
  assert.match(noOptimizer.problems[0].detail, /scheduler.pt is present but no optimizer state/);
});
