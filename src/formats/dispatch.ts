/**
 * Which checker a file gets, by its extension: torch checkpoints, safetensors
 * files, or none.
 *
 * @module
 */

import type { FormatChecker } from "./checker.ts";
import { SafetensorsChecker } from "./safetensors.ts";
import { TorchChecker } from "./torch.ts";
import { DEFAULT_TAIL_BYTES } from "./zip.ts";

/** Extensions only torch writes: a file of another format is a finding. */
const TORCH_STRICT = new Set([".pt", ".pth", ".ckpt"]);
/** Extensions torch shares with other programs: a file of another format is left unchecked. */
const TORCH_LENIENT = new Set([".bin"]);

/**
 * The checker for a file, chosen by its extension: `.pt`, `.pth`, `.ckpt`
 * and `.bin` get a torch checker (zip or legacy, told apart by the first
 * bytes; a `.bin` that is not a torch file is left unchecked), `.safetensors`
 * a safetensors checker, anything else none.
 *
 * `size` is the file's size when hashing starts; it only bounds buffers (a
 * small file gets a small tail buffer), the checkers count what they are fed.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { formatCheckerFor } from "./dispatch.ts";
 * assert.equal(formatCheckerFor("global_step5/mp_rank_00_model_states.pt", 1 << 20)?.format, "torch");
 * assert.equal(formatCheckerFor("model-00001-of-00002.safetensors", 1 << 20)?.format, "safetensors");
 * assert.equal(formatCheckerFor("config.json", 100), undefined);
 * ```
 */
export function formatCheckerFor(relativePath: string, size: number): FormatChecker | undefined {
  const name = relativePath.slice(relativePath.lastIndexOf("/") + 1).toLowerCase();
  const dot = name.lastIndexOf(".");
  if (dot <= 0) return undefined;
  const extension = name.slice(dot);
  if (extension === ".safetensors") return new SafetensorsChecker();
  const strict = TORCH_STRICT.has(extension);
  if (!strict && !TORCH_LENIENT.has(extension)) return undefined;
  // The end records sit in the last 64 KiB + 98 bytes; a small file needs no bigger tail than itself.
  const tailBytes = Math.max(1024, Math.min(Number.isFinite(size) ? size : DEFAULT_TAIL_BYTES, DEFAULT_TAIL_BYTES));
  return new TorchChecker({ strict, zip: { tailBytes } });
}
