/**
 * The toy training loop of `examples/toy_train_with_ckptkit.py`, in Deno,
 * checkpointing through the library writer instead of the CLI:
 *
 * ```sh
 * deno run --allow-read --allow-write --allow-env --allow-sys examples/toy_train.ts --root /tmp/ckpts --steps 5
 * ```
 *
 * Flags: `--root DIR` (required), `--steps N` (required), `--save-every N`
 * (default 1, and always at the last step), `--job-id ID`, `--run-id ID`,
 * `--sleep SECONDS`.
 *
 * At start-up `resumeFromRoot` chooses the checkpoint to load; every save goes
 * through `openCheckpointWriter`: the files are streamed into a staging folder
 * inside the root and hashed while written, and `commit()` seals and publishes
 * `step-N` atomically. The model and its update rule are the Python example's,
 * bit for bit, so both print the same final weights digest.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { createHash } from "node:crypto";
import {
  checkpointName,
  openCheckpointWriter,
  quarantineCheckpoint,
  resumeFromRoot,
  validateCheckpoint,
} from "../mod.ts";

const HEAD_SIZE = 8; // weights kept in state.json
const EMBEDDING_SIZE = 2048; // float64 values kept in weights.bin (16 KiB)

interface Model {
  head: number[];
  embedding: Float64Array;
}

/** Weights at step 0. */
function initialModel(): Model {
  return {
    head: Array.from({ length: HEAD_SIZE }, (_, i) => 0.1 * (i + 1)),
    embedding: Float64Array.from({ length: EMBEDDING_SIZE }, (_, j) => ((j * 37) % 101) / 101),
  };
}

/** One toy update (step counts from 1), identical to the Python example's; returns a toy loss. */
function trainStep(model: Model, step: number): number {
  for (let i = 0; i < HEAD_SIZE; i++) model.head[i] = model.head[i] * 0.9 + step * 0.001 * (i + 1);
  for (let j = 0; j < EMBEDDING_SIZE; j++) model.embedding[j] = model.embedding[j] * 0.99 + ((step + j) % 13) * 1e-4;
  return model.head.reduce((sum, w) => sum + Math.abs(w), 0) / HEAD_SIZE;
}

/** Little-endian float64 bytes, whatever the machine's byte order. */
function float64le(values: ArrayLike<number>): Uint8Array {
  const bytes = new Uint8Array(values.length * 8);
  const view = new DataView(bytes.buffer);
  for (let i = 0; i < values.length; i++) view.setFloat64(i * 8, values[i], true);
  return bytes;
}

/** sha256 of every weight as little-endian float64 (the Python example computes the same). */
function weightsDigest(model: Model): string {
  return createHash("sha256").update(float64le(model.head)).update(float64le(model.embedding)).digest("hex");
}

/** Reads the weights of a checkpoint, checking it holds `step`. */
async function load(path: string, step: number): Promise<Model> {
  const state = JSON.parse(await Deno.readTextFile(`${path}/state.json`));
  const bytes = await Deno.readFile(`${path}/weights.bin`);
  if (state.step !== step || state.weights?.length !== HEAD_SIZE || bytes.length !== EMBEDDING_SIZE * 8) {
    throw new Error(`${path} does not hold the toy model at step ${step}`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const embedding = Float64Array.from({ length: EMBEDDING_SIZE }, (_, j) => view.getFloat64(j * 8, true));
  return { head: state.weights.map(Number), embedding };
}

/** Commits the model as `step-N` of `root` through the library writer; returns what happened. */
async function save(root: string, step: number, model: Model, jobId: string, runId?: string): Promise<string> {
  const existing = `${root}/${checkpointName(step)}`;
  let quarantined = false;
  if (await Deno.stat(existing).then(() => true, () => false)) {
    // An earlier attempt committed this step but was killed before `latest`
    // moved to it, so resume chose the step before. A committed checkpoint is
    // never replaced: keep it when it validates (this toy training is
    // deterministic, so it holds these very weights; in real training it is a
    // sound checkpoint of the earlier attempt), else quarantine it.
    const check = await validateCheckpoint(existing);
    if (check.ok) return "kept, committed by an earlier attempt";
    await quarantineCheckpoint(existing, { problems: check.problems });
    quarantined = true;
  }
  // Without commit(), leaving the block aborts: the staging folder is removed.
  await using writer = await openCheckpointWriter(root, {
    step,
    jobId,
    runId,
    metadata: { loss: model.head.reduce((sum, w) => sum + Math.abs(w), 0) / HEAD_SIZE },
  });
  const state = {
    step,
    weights: model.head,
    embedding: { file: "weights.bin", dtype: "float64-le", count: EMBEDDING_SIZE },
  };
  await writer.writeFile("state.json", JSON.stringify(state, null, 1) + "\n");
  await writer.writeFile("weights.bin", float64le(model.embedding));
  const committed = await writer.commit();
  return `committed ${committed.name}${quarantined ? ", the earlier one quarantined" : ""}`;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      root: { type: "string" },
      steps: { type: "string" },
      "save-every": { type: "string", default: "1" },
      "job-id": { type: "string", default: "toy-train" },
      "run-id": { type: "string" },
      sleep: { type: "string", default: "0" },
    },
  });
  const steps = Number(values.steps);
  const saveEvery = Number(values["save-every"]);
  const sleepMs = Number(values.sleep) * 1000;
  if (
    !values.root || !Number.isSafeInteger(steps) || steps < 0 || !Number.isSafeInteger(saveEvery) || saveEvery < 1 ||
    !(sleepMs >= 0)
  ) {
    console.error("usage: toy_train.ts --root DIR --steps N [--save-every N] [--job-id ID] [--run-id ID] [--sleep S]");
    Deno.exit(2);
  }
  const root = values.root;
  await Deno.mkdir(root, { recursive: true });

  const decision = await resumeFromRoot(root);
  if (decision.reason === "no_valid_checkpoint") {
    // The root held checkpoints and none is valid: starting over would silently throw the history away.
    console.error(`toy_train: ${decision.message} in ${root}; not starting from scratch`);
    Deno.exit(1);
  }
  const start = decision.chosen?.step ?? 0;
  let model: Model;
  if (decision.chosen) {
    if (decision.fallback) console.log(`note: resuming from an older checkpoint: ${decision.fallback_reason}`);
    model = await load(decision.chosen.path, start);
    console.log(`resuming from ${decision.chosen.path} (step ${start})`);
  } else {
    model = initialModel();
    console.log("no checkpoint to resume from: starting at step 0");
  }

  for (let step = start + 1; step <= steps; step++) {
    if (sleepMs > 0) await new Promise((resolve) => setTimeout(resolve, sleepMs));
    const loss = trainStep(model, step);
    const saved = step % saveEvery === 0 || step === steps
      ? ` (${await save(root, step, model, values["job-id"], values["run-id"])})`
      : "";
    console.log(`step ${step}: loss ${loss.toFixed(6)}${saved}`);
  }
  const origin = decision.chosen ? `resumed from step ${start}` : "from scratch";
  console.log(`trained to step ${Math.max(start, steps)} (${origin}); weights sha256 ${weightsDigest(model)}`);
}

if (import.meta.main) await main();
