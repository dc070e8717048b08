/**
 * Structure checks of the folders training frameworks write, as pure
 * functions of a file listing (paths relative to the checkpoint, with
 * sizes), the contents of a few small files, and facts from the format
 * checks. They catch what no single file shows: a rank's shard that never
 * got written, `latest` naming a folder that is not there, a Trainer state
 * from another step, an index naming a missing shard, a DCP `.metadata`
 * naming a missing `.distcp` file.
 *
 * - DeepSpeed: a folder holding `latest` (naming the tag folder) and tag
 *   folders (`global_stepN/`) holding `mp_rank_XX_model_states.pt` per
 *   model-parallel rank and `[bf16_]zero_pp_rank_D_mp_rank_XX_optim_states.pt`
 *   per data-parallel rank. Ranks must form a full grid from 0; when the
 *   model states' deep check read `dp_world_size`/`mp_world_size`, the grid
 *   must be exactly that large (the highest rank missing is caught too).
 * - Hugging Face Trainer `checkpoint-N/`: `trainer_state.json` (written
 *   last) parses and its `global_step` is N; model weights are present, whole
 *   or sharded with every shard of the index present; the optimizer state
 *   (`optimizer.pt`, or FSDP's) and `scheduler.pt` are both there or both
 *   absent (`save_only_model=True`), except that with DeepSpeed the optimizer
 *   lives in `global_stepN/` and `scheduler.pt` may stand alone;
 *   `rng_state_K.pth` ranks have no gaps.
 * - PyTorch DCP: `.metadata` (written last) is a readable pickle, and every
 *   `.distcp` file its storage entries name is present, non-empty and long
 *   enough for the byte ranges it places there.
 *
 * Lightning `.ckpt` files are single torch zip files: the format checks
 * cover them.
 *
 * @module
 */

import type { FormatFact } from "./checker.ts";
import { entriesOf, isNode, type PickleValue, PickleWalker, walkValues } from "./pickle.ts";

/**
 * A file of the checkpoint, with its path relative to the checkpoint folder.
 *
 * @example
 * ```ts
 * import type { LayoutFile } from "./layouts.ts";
 * const file: LayoutFile = { path: "global_step5/mp_rank_00_model_states.pt", size: 1165 };
 * ```
 */
export interface LayoutFile {
  /** Relative path with `/` separators. */
  path: string;
  /** Size in bytes. */
  size: number;
}

/**
 * A problem with a checkpoint's folder structure; becomes a `format_invalid` problem for `path`.
 *
 * @example
 * ```ts
 * import type { LayoutFinding } from "./layouts.ts";
 * const finding: LayoutFinding = { path: "checkpoint-5/trainer_state.json", detail: "global_step is 4 but the folder is checkpoint-5" };
 * ```
 */
export interface LayoutFinding {
  /** The file (or the expected, missing file) concerned. */
  path: string;
  /** What is wrong. */
  detail: string;
}

/**
 * A recognized folder layout.
 *
 * @example
 * ```ts
 * import type { LayoutKind } from "./layouts.ts";
 * const kind: LayoutKind = "dcp";
 * ```
 */
export type LayoutKind = "deepspeed" | "hf-trainer" | "dcp";

/**
 * A folder recognized as a layout (`folder` is "" for the checkpoint folder itself).
 *
 * @example
 * ```ts
 * import type { DetectedLayout } from "./layouts.ts";
 * const layout: DetectedLayout = { kind: "deepspeed", folder: "checkpoint-5" };
 * ```
 */
export interface DetectedLayout {
  /** Which layout. */
  kind: LayoutKind;
  /** The folder, relative to the checkpoint. */
  folder: string;
}

/**
 * What {@linkcode detectLayout} found.
 *
 * @example
 * ```ts
 * import type { LayoutResult } from "./layouts.ts";
 * const plain: LayoutResult = { kind: "plain", layouts: [], findings: [], notes: [] };
 * ```
 */
export interface LayoutResult {
  /** The outermost layout recognized, or `plain` when none was. */
  kind: LayoutKind | "plain";
  /** Every layout recognized, outermost first. */
  layouts: DetectedLayout[];
  /** Everything wrong. */
  findings: LayoutFinding[];
  /** What could not be checked (a small file not read, for example). */
  notes: string[];
}

/**
 * What {@linkcode detectLayout} reads.
 *
 * @example
 * ```ts
 * import type { LayoutInput } from "./layouts.ts";
 * const input: LayoutInput = {
 *   files: [{ path: "latest", size: 12 }],
 *   contents: new Map([["latest", new TextEncoder().encode("global_step5")]]),
 *   rootName: "step-5",
 * };
 * ```
 */
export interface LayoutInput {
  /** Every file of the checkpoint. */
  files: readonly LayoutFile[];
  /** Contents of the files {@linkcode layoutFilesToRead} asked for; a file left out was not readable. */
  contents?: ReadonlyMap<string, Uint8Array>;
  /** Facts from the deep format checks ({@linkcode FormatChecker.facts}), by path. */
  facts?: ReadonlyMap<string, Readonly<Record<string, FormatFact>>>;
  /** The checkpoint folder's own name, for a Trainer folder checked in place (`checkpoint-500`). */
  rootName?: string;
}

/**
 * A small file the layout checks want to read, and the most bytes worth reading.
 *
 * @example
 * ```ts
 * import type { LayoutRead } from "./layouts.ts";
 * const read: LayoutRead = { path: "latest", maxBytes: 4096 };
 * ```
 */
export interface LayoutRead {
  /** Relative path. */
  path: string;
  /** Read it only if it is at most this large. */
  maxBytes: number;
}

/** Largest JSON or pickle file read for layout checks. */
const MAX_LAYOUT_FILE_BYTES = 64 * 1024 * 1024;
const MAX_LATEST_BYTES = 4096;

const MODEL_STATES = /^(?:(bf16_)?zero_pp_rank_(\d+)_)?mp_rank_(\d+)_model_states\.pt$/;
const OPTIM_STATES = /^(bf16_)?zero_pp_rank_(\d+)_mp_rank_(\d+)_optim_states\.pt$/;
const STEP_FOLDER = /^global_step\d+$/;
const TRAINER_FOLDER = /^checkpoint-(\d+)$/;
const SHARD = /^(.+)-(\d{5})-of-(\d{5})\.(safetensors|bin)$/;
const RNG_STATE = /^rng_state_(\d+)\.pth$/;
/** The Trainer's optimizer state: plain, FSDP full state dict, XLA FSDP per rank, SageMaker MP partial. */
const OPTIMIZER_FILE = /^(?:optimizer\.pt|optimizer(?:_\d+)?\.bin|rank\d+-of-\d+-optimizer\.pt|optimizer\.pt_.+)$/;
/** FSDP's sharded optimizer state folder. */
const OPTIMIZER_FOLDER = /^optimizer_\d+$/;
const WEIGHT_FILES = [
  "model.safetensors",
  "pytorch_model.bin",
  "adapter_model.safetensors",
  "adapter_model.bin",
  "tf_model.h5",
  "flax_model.msgpack",
  "model.safetensors.index.json",
  "pytorch_model.bin.index.json",
];
const INDEX_FILES = ["model.safetensors.index.json", "pytorch_model.bin.index.json"];

/**
 * The small files the layout checks read: DeepSpeed's `latest`, Trainer's
 * `trainer_state.json` and weight indexes, DCP's `.metadata`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { layoutFilesToRead } from "./layouts.ts";
 * const reads = layoutFilesToRead([
 *   { path: "latest", size: 14 },
 *   { path: "global_step5/mp_rank_00_model_states.pt", size: 1000 },
 * ]);
 * assert.deepEqual(reads, [{ path: "latest", maxBytes: 4096 }]);
 * ```
 */
export function layoutFilesToRead(files: readonly LayoutFile[]): LayoutRead[] {
  const reads: LayoutRead[] = [];
  for (const file of files) {
    const name = baseName(file.path);
    if (name === "latest") reads.push({ path: file.path, maxBytes: MAX_LATEST_BYTES });
    else if (name === "trainer_state.json" || INDEX_FILES.includes(name) || name === ".metadata") {
      reads.push({ path: file.path, maxBytes: MAX_LAYOUT_FILE_BYTES });
    }
  }
  return reads;
}

interface Folder {
  files: Map<string, number>;
  folders: Set<string>;
}

/**
 * Recognizes the layouts in a checkpoint's file listing and checks each.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { detectLayout } from "./layouts.ts";
 * const files = [
 *   { path: "latest", size: 13 },
 *   { path: "global_step5/mp_rank_00_model_states.pt", size: 1000 },
 *   { path: "global_step5/zero_pp_rank_0_mp_rank_00_optim_states.pt", size: 1000 },
 *   { path: "global_step5/zero_pp_rank_2_mp_rank_00_optim_states.pt", size: 1000 },
 * ];
 * const contents = new Map([["latest", new TextEncoder().encode("global_step5")]]);
 * const result = detectLayout({ files, contents });
 * assert.equal(result.kind, "deepspeed");
 * assert.deepEqual(result.findings.map((f) => f.path), ["global_step5/zero_pp_rank_1_mp_rank_00_optim_states.pt"]);
 * ```
 */
export function detectLayout(input: LayoutInput): LayoutResult {
  const folders = indexFolders(input.files);
  const result: LayoutResult = { kind: "plain", layouts: [], findings: [], notes: [] };
  const ordered = [...folders.keys()].sort((a, b) => depth(a) - depth(b) || a.localeCompare(b));
  for (const path of ordered) {
    const folder = folders.get(path) as Folder;
    const name = path === "" ? input.rootName ?? "" : baseName(path);
    if (isTrainerFolder(name, folder)) {
      result.layouts.push({ kind: "hf-trainer", folder: path });
      checkTrainer(path, name, folder, folders, input, result);
    }
    const isStep = hasDeepSpeedStates(folder);
    const isRoot = isDeepSpeedRoot(path, folder, folders, input);
    if (isRoot || isStep) {
      result.layouts.push({ kind: "deepspeed", folder: path });
      if (isRoot) checkLatest(path, folder, folders, input, result);
      if (isStep) checkDeepSpeedStep(path, folder, input, result);
    }
    const dcp: DetectedLayout = { kind: "dcp", folder: path };
    if (checkDcp(path, folder, folders, input, result)) result.layouts.push(dcp);
  }
  result.kind = result.layouts[0]?.kind ?? "plain";
  return result;
}

/**
 * A Trainer checkpoint: `trainer_state.json`, or a `checkpoint-N` folder with
 * what the Trainer writes before it (`training_args.bin`, RNG states), so a
 * save cut short is recognized while other tools' `checkpoint-N` folders are not.
 */
function isTrainerFolder(name: string, folder: Folder): boolean {
  if (folder.files.has("trainer_state.json")) return true;
  if (!TRAINER_FOLDER.test(name)) return false;
  return [...folder.files.keys()].some((file) =>
    file === "training_args.bin" || file === "rng_state.pth" || RNG_STATE.test(file)
  );
}

function hasDeepSpeedStates(folder: Folder | undefined): boolean {
  return folder !== undefined &&
    [...folder.files.keys()].some((file) => MODEL_STATES.test(file) || OPTIM_STATES.test(file));
}

/**
 * DeepSpeed's `latest` (other tools write files of that name too): beside a
 * tag folder of DeepSpeed states, or naming a `global_stepN` tag.
 */
function isDeepSpeedRoot(path: string, folder: Folder, folders: Map<string, Folder>, input: LayoutInput): boolean {
  if (!folder.files.has("latest")) return false;
  if ([...folder.folders].some((sub) => hasDeepSpeedStates(folders.get(join(path, sub))))) return true;
  return STEP_FOLDER.test(text(input, join(path, "latest"))?.trim() ?? "");
}

function indexFolders(files: readonly LayoutFile[]): Map<string, Folder> {
  const folders = new Map<string, Folder>();
  const folderOf = (path: string): Folder => {
    let folder = folders.get(path);
    if (!folder) {
      folder = { files: new Map(), folders: new Set() };
      folders.set(path, folder);
      if (path !== "") folderOf(parentOf(path)).folders.add(baseName(path));
    }
    return folder;
  };
  folderOf("");
  for (const file of files) folderOf(parentOf(file.path)).files.set(baseName(file.path), file.size);
  return folders;
}

function join(folder: string, name: string): string {
  return folder === "" ? name : `${folder}/${name}`;
}

function parentOf(path: string): string {
  const slash = path.lastIndexOf("/");
  return slash < 0 ? "" : path.slice(0, slash);
}

function baseName(path: string): string {
  return path.slice(path.lastIndexOf("/") + 1);
}

function depth(path: string): number {
  return path === "" ? 0 : path.split("/").length;
}

function text(input: LayoutInput, path: string): string | undefined {
  const bytes = input.contents?.get(path);
  return bytes === undefined ? undefined : new TextDecoder("utf-8").decode(bytes);
}

function json(input: LayoutInput, path: string, result: LayoutResult): { value: unknown } | undefined {
  const raw = text(input, path);
  if (raw === undefined) {
    result.notes.push(`${path} was not read (unreadable, or larger than ${MAX_LAYOUT_FILE_BYTES} bytes): not checked`);
    return undefined;
  }
  try {
    return { value: JSON.parse(raw) };
  } catch (err) {
    result.findings.push({ path, detail: `not valid JSON: ${(err as Error).message}` });
    return undefined;
  }
}

function checkEmpty(
  folder: string,
  files: Map<string, number>,
  result: LayoutResult,
  names: (name: string) => boolean,
) {
  for (const [name, size] of files) {
    if (size === 0 && names(name)) {
      result.findings.push({
        path: join(folder, name),
        detail: "the file is empty (0 bytes): its write did not finish",
      });
    }
  }
}

function checkLatest(
  path: string,
  folder: Folder,
  folders: Map<string, Folder>,
  input: LayoutInput,
  result: LayoutResult,
): void {
  const latestPath = join(path, "latest");
  if (folder.files.get("latest") === 0) {
    result.findings.push({ path: latestPath, detail: "latest is empty: it names no tag folder" });
    return;
  }
  const raw = text(input, latestPath);
  if (raw === undefined) {
    result.notes.push(`${latestPath} was not read: the tag it names was not checked`);
    return;
  }
  const tag = raw.trim();
  if (tag === "" || tag.includes("/") || tag.includes("\\") || tag === "." || tag === "..") {
    result.findings.push({ path: latestPath, detail: `latest holds ${JSON.stringify(raw)}, not a tag folder name` });
    return;
  }
  const tagFolder = folders.get(join(path, tag));
  if (!folder.folders.has(tag) || !tagFolder) {
    result.findings.push({
      path: join(path, tag),
      detail: `latest names tag '${tag}' but there is no folder '${join(path, tag)}': DeepSpeed cannot resume from it`,
    });
    return;
  }
  if (![...tagFolder.files.keys()].some((file) => MODEL_STATES.test(file))) {
    result.findings.push({
      path: join(path, tag),
      detail: `the tag folder '${tag}' that latest names has no *_model_states.pt: its save did not finish`,
    });
  }
}

interface RankFile {
  name: string;
  dp?: number;
  mp: number;
  prefix: string;
}

function checkDeepSpeedStep(path: string, folder: Folder, input: LayoutInput, result: LayoutResult): void {
  const model: RankFile[] = [];
  const optim: RankFile[] = [];
  for (const name of folder.files.keys()) {
    const m = MODEL_STATES.exec(name);
    if (m) {
      model.push({ name, prefix: m[1] ?? "", dp: m[2] === undefined ? undefined : Number(m[2]), mp: Number(m[3]) });
    }
    const o = OPTIM_STATES.exec(name);
    if (o) optim.push({ name, prefix: o[1] ?? "", dp: Number(o[2]), mp: Number(o[3]) });
  }
  checkEmpty(path, folder.files, result, (name) => name.endsWith(".pt"));
  // World sizes the model states recorded, when a deep check read them.
  const facts = [...model].sort((a, b) => a.mp - b.mp || (a.dp ?? 0) - (b.dp ?? 0))
    .map((file) => input.facts?.get(join(path, file.name)))
    .find((f) => f?.dp_world_size !== undefined || f?.mp_world_size !== undefined);
  const mpWorld = positive(facts?.mp_world_size);
  const dpWorld = positive(facts?.dp_world_size);
  const mpCount = mpWorld ?? Math.max(-1, ...model.map((f) => f.mp), ...optim.map((f) => f.mp)) + 1;
  const missing = new Set<string>();
  const plain = model.filter((f) => f.dp === undefined);
  const zeroModel = model.filter((f) => f.dp !== undefined);
  for (let mp = 0; mp < mpCount; mp++) {
    if (!model.some((f) => f.mp === mp)) {
      const name = zeroModel.length > 0 && plain.length === 0
        ? `${zeroModel[0].prefix}zero_pp_rank_0_mp_rank_${pad2(mp)}_model_states.pt`
        : `mp_rank_${pad2(mp)}_model_states.pt`;
      missing.add(name);
      result.findings.push({
        path: join(path, name),
        detail: `no model states for model-parallel rank ${mp} ` +
          `(expected ${mpCount} rank${mpCount === 1 ? "" : "s"}${mpWorld ? `, mp_world_size ${mpWorld}` : ""})`,
      });
    }
  }
  for (const [files, kind] of [[zeroModel, "model_states"], [optim, "optim_states"]] as const) {
    if (files.length === 0) continue;
    const dpCount = dpWorld ?? Math.max(...files.map((f) => f.dp ?? 0)) + 1;
    const prefix = files[0].prefix;
    for (let mp = 0; mp < mpCount; mp++) {
      for (let dp = 0; dp < dpCount; dp++) {
        if (files.some((f) => f.dp === dp && f.mp === mp)) continue;
        const name = `${prefix}zero_pp_rank_${dp}_mp_rank_${pad2(mp)}_${kind}.pt`;
        if (missing.has(name)) continue;
        result.findings.push({
          path: join(path, name),
          detail: `no ${kind === "optim_states" ? "optimizer" : "model"} shard of data-parallel rank ${dp}, ` +
            `model-parallel rank ${mp} (expected ${dpCount} data-parallel rank${dpCount === 1 ? "" : "s"}` +
            `${dpWorld ? `, dp_world_size ${dpWorld}` : ""})`,
        });
      }
    }
  }
}

function positive(value: FormatFact | undefined): number | undefined {
  return typeof value === "number" && Number.isSafeInteger(value) && value > 0 ? value : undefined;
}

function pad2(n: number): string {
  return String(n).padStart(2, "0");
}

function checkTrainer(
  path: string,
  name: string,
  folder: Folder,
  folders: Map<string, Folder>,
  input: LayoutInput,
  result: LayoutResult,
): void {
  const statePath = join(path, "trainer_state.json");
  const step = TRAINER_FOLDER.exec(name);
  if (!folder.files.has("trainer_state.json")) {
    result.findings.push({
      path: statePath,
      detail: "no trainer_state.json: the Trainer writes it last, so this save did not finish",
    });
  } else {
    const parsed = json(input, statePath, result);
    if (parsed) {
      const state = parsed.value as Record<string, unknown> | null;
      const globalStep = typeof state === "object" && state !== null ? state.global_step : undefined;
      if (typeof globalStep !== "number" || !Number.isSafeInteger(globalStep)) {
        result.findings.push({
          path: statePath,
          detail: `global_step is ${JSON.stringify(globalStep)}, not an integer`,
        });
      } else if (step && globalStep !== Number(step[1])) {
        result.findings.push({
          path: statePath,
          detail: `global_step is ${globalStep} but the folder is ${name}: the state belongs to another step`,
        });
      }
    }
  }
  const files = folder.files;
  const hasWeights = WEIGHT_FILES.some((file) => files.has(file)) ||
    [...files.keys()].some((file) => SHARD.test(file) || /^pytorch_model_fsdp.*\.bin$/.test(file)) ||
    [...folder.folders].some((sub) => STEP_FOLDER.test(sub) || /^pytorch_model_fsdp_\d+$/.test(sub));
  if (!hasWeights) {
    result.findings.push({
      path: join(path, "model.safetensors"),
      detail: "no model weights (model.safetensors, pytorch_model.bin, a sharded index, adapter_model.*, " +
        "an FSDP or DeepSpeed folder): the Trainer cannot resume from this checkpoint",
    });
  }
  checkShards(path, folder, folders, input, result);
  checkOptimizerAndScheduler(path, folder, result);
  const ranks = [...files.keys()].map((file) => RNG_STATE.exec(file)).filter((m) => m !== null)
    .map((m) => Number(m[1]));
  for (let rank = 0; rank <= Math.max(-1, ...ranks); rank++) {
    if (!ranks.includes(rank)) {
      result.findings.push({
        path: join(path, `rng_state_${rank}.pth`),
        detail: `no RNG state of process ${rank} (ranks up to ${Math.max(...ranks)} are present)`,
      });
    }
  }
  checkEmpty(path, files, result, (file) => /\.(safetensors|bin|pt|pth|json)$/.test(file));
}

/**
 * `Trainer._save_checkpoint` writes the optimizer state and then `scheduler.pt`, or, with
 * `save_only_model=True`, neither; on resume it loads them only when both are there, and otherwise
 * silently starts a fresh optimizer and schedule. One without the other is a save cut short or a
 * file lost. The optimizer state is `optimizer.pt`, or what FSDP (`optimizer.bin`, `optimizer_0/`),
 * XLA FSDP (`rank0-of-8-optimizer.pt`) or SageMaker MP (`optimizer.pt_0_0_0`) write instead; with
 * DeepSpeed it lives in the engine's `global_stepN/` folder, and `scheduler.pt` alone (a scheduler
 * DeepSpeed does not wrap) is what the Trainer writes.
 */
function checkOptimizerAndScheduler(path: string, folder: Folder, result: LayoutResult): void {
  const optimizer = [...folder.files.keys()].some((file) => OPTIMIZER_FILE.test(file)) ||
    [...folder.folders].some((sub) => OPTIMIZER_FOLDER.test(sub));
  const scheduler = folder.files.has("scheduler.pt");
  if (optimizer && !scheduler) {
    result.findings.push({
      path: join(path, "scheduler.pt"),
      detail: "optimizer.pt is present but scheduler.pt is not: the Trainer writes scheduler.pt right after the " +
        "optimizer state and resumes neither without both (it would silently restart the optimizer)",
    });
  } else if (scheduler && !optimizer && ![...folder.folders].some((sub) => STEP_FOLDER.test(sub))) {
    result.findings.push({
      path: join(path, "optimizer.pt"),
      detail: "scheduler.pt is present but no optimizer state (optimizer.pt): the Trainer writes the optimizer " +
        "state just before scheduler.pt and resumes neither without both (it would silently restart the optimizer)",
    });
  }
}

function checkShards(
  path: string,
  folder: Folder,
  folders: Map<string, Folder>,
  input: LayoutInput,
  result: LayoutResult,
): void {
  const missing = new Set<string>();
  const report = (file: string, detail: string) => {
    if (missing.has(file)) return;
    missing.add(file);
    result.findings.push({ path: file, detail });
  };
  for (const index of INDEX_FILES) {
    if (!folder.files.has(index)) continue;
    const indexPath = join(path, index);
    const parsed = json(input, indexPath, result);
    if (!parsed) continue;
    const map = (parsed.value as { weight_map?: unknown } | null)?.weight_map;
    if (typeof map !== "object" || map === null || Array.isArray(map)) {
      result.findings.push({ path: indexPath, detail: "has no weight_map object" });
      continue;
    }
    for (const shard of new Set(Object.values(map as Record<string, unknown>))) {
      if (typeof shard !== "string" || shard === "" || shard.startsWith("/") || shard.split("/").includes("..")) {
        result.findings.push({ path: indexPath, detail: `weight_map names ${JSON.stringify(shard)}, not a file name` });
        continue;
      }
      const shardPath = join(path, shard);
      const size = folders.get(parentOf(shardPath))?.files.get(baseName(shardPath));
      if (size === undefined) report(shardPath, `${index} maps weights to '${shard}', which is missing`);
      else if (size === 0) report(shardPath, `${index} maps weights to '${shard}', which is empty (0 bytes)`);
    }
  }
  // Numbered shards name their total: every number must be there, and their index too.
  const groups = new Map<string, { prefix: string; total: number; ext: string; have: Set<number> }>();
  for (const file of folder.files.keys()) {
    const m = SHARD.exec(file);
    if (!m) continue;
    const key = `${m[1]}|${m[3]}|${m[4]}`;
    const group = groups.get(key) ?? { prefix: m[1], total: Number(m[3]), ext: m[4], have: new Set<number>() };
    group.have.add(Number(m[2]));
    groups.set(key, group);
  }
  for (const group of groups.values()) {
    const width = 5;
    for (let i = 1; i <= group.total; i++) {
      if (group.have.has(i)) continue;
      const name = `${group.prefix}-${String(i).padStart(width, "0")}-of-${String(group.total).padStart(width, "0")}` +
        `.${group.ext}`;
      report(join(path, name), `shard ${i} of ${group.total} is missing`);
    }
    const index = `${group.prefix}.${group.ext}.index.json`;
    if (!folder.files.has(index)) {
      report(join(path, index), `the weights are sharded (${group.total} shards) but their index ${index} is missing`);
    }
  }
}

/** A chunk location DCP's `.metadata` records: `_StorageInfo(relative_path, offset, length)`. */
interface DcpChunk {
  file: string;
  end?: number;
}

/**
 * Checks a DCP folder; returns false when the folder is not one. `.distcp`
 * files make it one; without them only a `.metadata` pickle naming `.distcp`
 * files does (other tools write files called `.metadata` too).
 */
function checkDcp(
  path: string,
  folder: Folder,
  folders: Map<string, Folder>,
  input: LayoutInput,
  result: LayoutResult,
): boolean {
  const hasData = [...folder.files.keys()].some((file) => file.endsWith(".distcp"));
  const metadataPath = join(path, ".metadata");
  const size = folder.files.get(".metadata");
  if (size === undefined) {
    if (!hasData) return false;
    result.findings.push({
      path: metadataPath,
      detail: "no .metadata beside the .distcp files: DCP writes it last, so this save did not finish",
    });
    return true;
  }
  if (size === 0) {
    if (!hasData) return false;
    result.findings.push({ path: metadataPath, detail: "the file is empty (0 bytes): its write did not finish" });
    return true;
  }
  const bytes = input.contents?.get(metadataPath);
  if (bytes === undefined) {
    if (!hasData) return false;
    result.notes.push(
      `${metadataPath} was not read (unreadable, or larger than ${MAX_LAYOUT_FILE_BYTES} bytes): not checked`,
    );
    return true;
  }
  const walker = new PickleWalker();
  walker.update(bytes);
  walker.end();
  if (walker.error !== undefined) {
    if (!hasData) return false;
    result.findings.push({ path: metadataPath, detail: `not a readable pickle (${walker.error})` });
    return true;
  }
  if (walker.limited) {
    if (hasData) result.notes.push(`${metadataPath} is too large to walk: the files it names were not checked`);
    return hasData;
  }
  const chunks = dcpChunks(walker.value);
  if (chunks.length === 0) {
    if (!hasData) return false;
    result.findings.push({
      path: metadataPath,
      detail: "names no .distcp file: it does not describe the .distcp files beside it",
    });
    return true;
  }
  const needed = new Map<string, number>();
  for (const chunk of chunks) needed.set(chunk.file, Math.max(needed.get(chunk.file) ?? 0, chunk.end ?? 0));
  for (const [file, end] of needed) {
    if (file === "" || file.startsWith("/") || file.split("/").some((part) => part === ".." || part === ".")) {
      result.findings.push({ path: metadataPath, detail: `names ${JSON.stringify(file)}, not a file of this folder` });
      continue;
    }
    const filePath = join(path, file);
    const fileSize = folders.get(parentOf(filePath))?.files.get(baseName(filePath));
    if (fileSize === undefined) {
      result.findings.push({ path: filePath, detail: `.metadata places data in '${file}', which is missing` });
    } else if (fileSize === 0) {
      result.findings.push({ path: filePath, detail: `.metadata places data in '${file}', which is empty (0 bytes)` });
    } else if (fileSize < end) {
      result.findings.push({
        path: filePath,
        detail: `'${file}' is ${fileSize} bytes but .metadata places data up to offset ${end}: the file is truncated`,
      });
    }
  }
  return true;
}

/** Every `.distcp` chunk location in a walked `.metadata` pickle. */
function dcpChunks(root: PickleValue | undefined): DcpChunk[] {
  const chunks: DcpChunk[] = [];
  const seenFiles = new Set<string>();
  walkValues(root, (value) => {
    if (!isNode(value) || value.kind !== "object") return;
    const fields = new Map(entriesOf(value).filter(([k]) => typeof k === "string") as [string, PickleValue][]);
    const file = fields.get("relative_path");
    if (typeof file !== "string") return;
    const offset = fields.get("offset");
    const length = fields.get("length");
    const end = typeof offset === "number" && typeof length === "number" ? offset + length : undefined;
    chunks.push({ file, end });
    seenFiles.add(file);
  });
  // Older or unusual metadata: fall back on any string naming a .distcp file.
  walkValues(root, (value) => {
    if (typeof value === "string" && value.endsWith(".distcp") && !seenFiles.has(value)) {
      seenFiles.add(value);
      chunks.push({ file: value });
    }
  });
  return chunks;
}
