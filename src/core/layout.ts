/**
 * Names of things inside a checkpoint root. The layout:
 *
 * ```
 * <root>/
 *   step-10/              a committed checkpoint (its files + the manifest)
 *   latest                text file naming the newest committed checkpoint
 *   corrupt/step-30/      a quarantined checkpoint
 *   .ckptkit/             ckptkit's own state: lock, last-known-good, counters
 *   .staging-step-40-…/   a checkpoint being written; never read as one
 * ```
 *
 * @module
 */

/** File name of the manifest at the top of every checkpoint. */
export const MANIFEST_NAME = "ckptkit.manifest.json";
/** Prefix of the manifest's temporary file while it is written. */
export const MANIFEST_TEMP_PREFIX = ".ckptkit.manifest.json.tmp-";
/** Name of the pointer file naming the newest committed checkpoint. */
export const LATEST_NAME = "latest";
/** Folder of ckptkit's own state inside the root. */
export const STATE_DIR = ".ckptkit";
/** Folder of quarantined checkpoints inside the root. */
export const CORRUPT_DIR = "corrupt";
/** Prefix of staging folders inside the root. */
export const STAGING_PREFIX = ".staging-";

const CHECKPOINT_NAME = /^step-([0-9]+)$/;
const STEP_TEXT = /^(0|[1-9][0-9]*)$/;

/**
 * Parses a step (or a count) written the one way ckptkit accepts anywhere:
 * decimal digits, no sign, no spaces, no leading zeros except "0" itself,
 * at most `Number.MAX_SAFE_INTEGER`. Returns `undefined` for anything else,
 * so that `step-010`, `--step 010` and `--step " 7"` are refused alike.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseStep } from "./layout.ts";
 * assert.ok(parseStep("10") === 10 && parseStep("0") === 0);
 * for (const bad of ["010", " 7", "7 ", "+7", "-1", "7.0", "1e3", ""]) assert.ok(parseStep(bad) === undefined);
 * ```
 */
export function parseStep(text: string): number | undefined {
  if (!STEP_TEXT.test(text)) return undefined;
  const step = Number(text);
  return isValidStep(step) ? step : undefined;
}

/**
 * The folder name of the checkpoint of `step`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { checkpointName } from "./layout.ts";
 * assert.ok(checkpointName(10) === "step-10");
 * ```
 */
export function checkpointName(step: number): string {
  return `step-${step}`;
}

/**
 * The step of a checkpoint folder name, or `undefined` when the name is not
 * exactly `step-<n>` (leading zeros, signs and suffixes are not guessed).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseCheckpointName } from "./layout.ts";
 * assert.ok(parseCheckpointName("step-10") === 10);
 * assert.ok(parseCheckpointName("step-010") === undefined);
 * ```
 */
export function parseCheckpointName(name: string): number | undefined {
  const match = CHECKPOINT_NAME.exec(name);
  return match ? parseStep(match[1]) : undefined;
}

/**
 * Tells whether `step` is a valid step number: a non-negative safe integer
 * (the numbers {@linkcode parseStep} returns).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { isValidStep } from "./layout.ts";
 * assert.ok(isValidStep(0) && isValidStep(10));
 * assert.ok(!isValidStep(-1) && !isValidStep(1.5) && !isValidStep("10") && !isValidStep(2 ** 53));
 * ```
 */
export function isValidStep(step: unknown): step is number {
  return typeof step === "number" && Number.isSafeInteger(step) && step >= 0;
}

/** A fresh staging folder name for `step`, unique per call. */
export function stagingName(step: number): string {
  const nonce = crypto.randomUUID().slice(0, 8);
  return `${STAGING_PREFIX}step-${step}-${Date.now()}-${nonce}`;
}

/** Tells whether a root entry is a staging folder. */
export function isStagingName(name: string): boolean {
  return name.startsWith(STAGING_PREFIX);
}

/** Step numbers inferred from other tools' folder names when adopting them. */
const FOREIGN_STEP_NAMES = [
  /^step[-_]?([0-9]+)$/,
  /^checkpoint-([0-9]+)$/,
  /^global_step([0-9]+)$/,
  /^epoch=\d+-step=([0-9]+)(\.ckpt)?$/,
];

/**
 * The step of a folder written by ckptkit or another tool (`step-10`,
 * `checkpoint-500` from Hugging Face, `global_step500` from DeepSpeed), or
 * `undefined` when the name says nothing certain.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { inferStep } from "./layout.ts";
 * assert.ok(inferStep("checkpoint-500") === 500);
 * assert.ok(inferStep("global_step42") === 42);
 * assert.ok(inferStep("final") === undefined);
 * ```
 */
export function inferStep(name: string): number | undefined {
  for (const pattern of FOREIGN_STEP_NAMES) {
    const match = pattern.exec(name);
    if (match) return parseStep(match[1]);
  }
  return undefined;
}
