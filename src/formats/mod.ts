/**
 * Format-aware checks for deep validation: streaming checkers for torch
 * checkpoints (zip and legacy) and safetensors files, picked by file
 * extension, and structure checks for DeepSpeed, Hugging Face Trainer and
 * PyTorch DCP folders. Internal to ckptkit: validation and scan use them.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { formatCheckerFor } from "./mod.ts";
 * const file = await Deno.readFile(new URL("../../tests/fixtures/torch-zip/test.pt", import.meta.url));
 * const checker = formatCheckerFor("test.pt", file.length)!;
 * for (let at = 0; at < file.length; at += 100) checker.update(file.subarray(at, at + 100));
 * assert.deepEqual(checker.finish(), []);
 * assert.equal(checker.format, "torch-zip");
 * ```
 *
 * @module
 */

export type { FormatChecker, FormatFact, FormatFinding } from "./checker.ts";
export { SafetensorsChecker } from "./safetensors.ts";
export { TorchChecker } from "./torch.ts";
export { TorchLegacyChecker } from "./torch_legacy.ts";
export { TorchZipChecker } from "./torch_zip.ts";
export {
  type DetectedLayout,
  detectLayout,
  type LayoutFile,
  layoutFilesToRead,
  type LayoutFinding,
  type LayoutInput,
  type LayoutKind,
  type LayoutRead,
  type LayoutResult,
} from "./layouts.ts";
export { checkFileFormat, type FileFormatResult, readLayoutContents } from "./files.ts";
export { formatCheckerFor } from "./dispatch.ts";
