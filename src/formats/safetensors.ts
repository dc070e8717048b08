/**
 * The check of a safetensors file, with the rules of the reference reader
 * (huggingface/safetensors): an 8-byte little-endian header length N of at
 * most 100,000,000 that fits in the file; N bytes of UTF-8 JSON (an object,
 * starting with `{`, possibly padded with spaces); an optional
 * `__metadata__` map of strings to strings; for every tensor a known dtype,
 * a shape of non-negative integers and `data_offsets` [begin, end] whose
 * span is exactly the tensor's byte size; and tensors that, sorted by
 * offset, tile the data section from 0 to the end of the file without gaps
 * or overlaps.
 *
 * Memory: the header only (at most 100,000,000 bytes by the format's own
 * limit); the data section is counted, not kept.
 *
 * @module
 */

import { capFindings, type FormatChecker, type FormatFact, type FormatFinding } from "./checker.ts";
import { GrowableBytes } from "./bytes.ts";

/** The reference reader's limit on the header length. */
const MAX_HEADER_BYTES = 100_000_000;

/**
 * Bits per element of every dtype the reference reader knows (sub-byte
 * types pack several elements per byte).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { DTYPE_BITS } from "./safetensors.ts";
 * assert.equal(DTYPE_BITS.BF16, 16);
 * ```
 */
export const DTYPE_BITS: Readonly<Record<string, number>> = {
  BOOL: 8,
  F4: 4,
  F6_E2M3: 6,
  F6_E3M2: 6,
  U8: 8,
  I8: 8,
  F8_E5M2: 8,
  F8_E4M3: 8,
  F8_E8M0: 8,
  I16: 16,
  U16: 16,
  F16: 16,
  BF16: 16,
  I32: 32,
  U32: 32,
  F32: 32,
  C64: 64,
  F64: 64,
  I64: 64,
  U64: 64,
};

interface Tensor {
  name: string;
  begin: number;
  end: number;
}

/**
 * Checks a safetensors file fed front to back.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { SafetensorsChecker } from "./safetensors.ts";
 * const header = new TextEncoder().encode('{"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}');
 * const file = new Uint8Array(8 + header.length + 8);
 * new DataView(file.buffer).setBigUint64(0, BigInt(header.length), true);
 * file.set(header, 8);
 * const checker = new SafetensorsChecker();
 * checker.update(file);
 * assert.deepEqual(checker.finish(), []);
 * const short = new SafetensorsChecker();
 * short.update(file.subarray(0, file.length - 1));
 * assert.match(short.finish()[0].detail, /truncated/);
 * ```
 */
export class SafetensorsChecker implements FormatChecker {
  /** Always `safetensors`. */
  readonly format = "safetensors";
  /** Nothing is left unchecked in a safetensors file. */
  readonly notes: readonly string[] = [];
  /** The `__metadata__` string entries. */
  readonly facts: Record<string, FormatFact> = {};
  readonly #lengthBytes = new Uint8Array(8);
  #seen = 0;
  #headerLength: number | undefined;
  #header: GrowableBytes | undefined;

  /** Feeds the next bytes. */
  update(chunk: Uint8Array): void {
    let pos = 0;
    if (this.#seen < 8) {
      const n = Math.min(8 - this.#seen, chunk.length);
      this.#lengthBytes.set(chunk.subarray(0, n), this.#seen);
      pos = n;
      if (this.#seen + n === 8) {
        const length = new DataView(this.#lengthBytes.buffer).getBigUint64(0, true);
        this.#headerLength = length > BigInt(Number.MAX_SAFE_INTEGER) ? Infinity : Number(length);
        // Only a header the reference reader would accept is worth keeping.
        if (this.#headerLength <= MAX_HEADER_BYTES) this.#header = new GrowableBytes(this.#headerLength);
      }
    }
    const header = this.#header;
    if (header && this.#headerLength !== undefined && header.length < this.#headerLength && pos < chunk.length) {
      header.append(chunk.subarray(pos, pos + this.#headerLength - header.length));
    }
    this.#seen += chunk.length;
  }

  /** Ends the input and returns the findings. */
  finish(): FormatFinding[] {
    const size = this.#seen;
    const n = this.#headerLength;
    if (n === undefined) {
      return [{ offset: 0, detail: `the file is ${size} bytes, too short for the 8-byte header length` }];
    }
    if (n > MAX_HEADER_BYTES) {
      return [{
        offset: 0,
        detail: `the header length is ${n} bytes, over the format's limit of ${MAX_HEADER_BYTES} ` +
          `(the first 8 bytes are damaged or this is not a safetensors file)`,
      }];
    }
    if (n + 8 > size) {
      return [{
        offset: 0,
        detail: `the header length is ${n} bytes but the file has only ${size - 8} bytes after it: ` +
          `the file is truncated or its first 8 bytes are damaged`,
      }];
    }
    const parsed = this.#parseHeader();
    if ("finding" in parsed) return [parsed.finding];
    return capFindings(this.#checkTensors(parsed.header, size - 8 - n, n + 8));
  }

  #parseHeader(): { header: Record<string, unknown> } | { finding: FormatFinding } {
    const raw = this.#header?.view() ?? new Uint8Array(0);
    let text: string;
    try {
      text = new TextDecoder("utf-8", { fatal: true }).decode(raw);
    } catch {
      return { finding: { offset: 8, detail: "the header is not valid UTF-8" } };
    }
    if (!text.startsWith("{")) {
      return {
        finding: {
          offset: 8,
          detail: `the header does not start with '{' (it starts ${JSON.stringify(text.slice(0, 16))})`,
        },
      };
    }
    let header: unknown;
    try {
      header = JSON.parse(text);
    } catch (err) {
      return { finding: { offset: 8, detail: `the header is not valid JSON: ${(err as Error).message}` } };
    }
    if (typeof header !== "object" || header === null || Array.isArray(header)) {
      return { finding: { offset: 8, detail: "the header is not a JSON object" } };
    }
    return { header: header as Record<string, unknown> };
  }

  #checkTensors(header: Record<string, unknown>, dataLength: number, dataStart: number): FormatFinding[] {
    const findings: FormatFinding[] = [];
    const tensors: Tensor[] = [];
    for (const [name, info] of Object.entries(header)) {
      if (name === "__metadata__") {
        findings.push(...this.#checkMetadata(info));
        continue;
      }
      const { range, problem } = readTensor(info);
      if (problem !== undefined) findings.push({ offset: 8, detail: `tensor '${name}': ${problem}` });
      // A tensor with a wrong size still claims its range: count it, so one error is not reported twice.
      if (range) tensors.push({ name, ...range });
    }
    tensors.sort((a, b) => a.begin - b.begin || a.end - b.end);
    let covered = 0;
    let previous: Tensor | undefined;
    for (const tensor of tensors) {
      if (tensor.begin > covered) {
        findings.push({
          offset: dataStart + covered,
          detail: `data bytes [${covered}, ${tensor.begin}) belong to no tensor` +
            (previous ? ` (gap between '${previous.name}' and '${tensor.name}')` : ` (before '${tensor.name}')`),
        });
      } else if (tensor.begin < covered && previous) {
        findings.push({
          offset: dataStart + tensor.begin,
          detail: `tensor '${tensor.name}' [${tensor.begin}, ${tensor.end}) overlaps tensor '${previous.name}' ` +
            `[${previous.begin}, ${previous.end})`,
        });
      }
      if (tensor.end >= covered) {
        covered = tensor.end;
        previous = tensor;
      }
    }
    if (covered > dataLength) {
      const last = previous?.name ?? "";
      findings.push({
        offset: dataStart + dataLength,
        detail: `tensor '${last}' ends at data offset ${covered} but the data section has only ${dataLength} bytes: ` +
          `the file is truncated`,
      });
    } else if (covered < dataLength) {
      findings.push({
        offset: dataStart + covered,
        detail: `${dataLength - covered} bytes after the last tensor (the data section is ${dataLength} bytes, ` +
          `the tensors cover ${covered}): trailing bytes the format does not allow`,
      });
    }
    return findings;
  }

  #checkMetadata(info: unknown): FormatFinding[] {
    if (info === null) return [];
    if (typeof info !== "object" || Array.isArray(info)) {
      return [{ offset: 8, detail: "__metadata__ is not a map of strings to strings" }];
    }
    const findings: FormatFinding[] = [];
    for (const [key, value] of Object.entries(info as Record<string, unknown>)) {
      if (typeof value !== "string") {
        findings.push({ offset: 8, detail: `__metadata__ entry '${key}' is ${JSON.stringify(value)}, not a string` });
      } else if (value.length <= 256) {
        this.facts[key] = value;
      }
    }
    return findings;
  }
}

/** A tensor entry's data range (when its offsets are usable) and what is wrong with it. */
function readTensor(info: unknown): { range?: { begin: number; end: number }; problem?: string } {
  if (typeof info !== "object" || info === null || Array.isArray(info)) {
    return { problem: "its entry is not an object" };
  }
  const { dtype, shape, data_offsets: offsets } = info as Record<string, unknown>;
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isCount)) {
    return { problem: `data_offsets ${JSON.stringify(offsets)} is not a pair of non-negative integers` };
  }
  const [begin, end] = offsets as number[];
  if (end < begin) return { problem: `data_offsets [${begin}, ${end}] end before they begin` };
  const range = { begin, end };
  if (typeof dtype !== "string") return { range, problem: "has no dtype" };
  const bits = DTYPE_BITS[dtype];
  if (bits === undefined) return { range, problem: `unknown dtype ${JSON.stringify(dtype)}` };
  if (!Array.isArray(shape) || !shape.every(isCount)) {
    return { range, problem: `shape ${JSON.stringify(shape)} is not a list of non-negative integers` };
  }
  const elements = (shape as number[]).reduce((a, b) => a * b, 1);
  const totalBits = elements * bits;
  if (!Number.isSafeInteger(totalBits)) return { range, problem: `shape ${JSON.stringify(shape)} is too large` };
  if (totalBits % 8 !== 0) {
    return { range, problem: `${dtype} ${JSON.stringify(shape)} is ${totalBits} bits, not a whole number of bytes` };
  }
  const expected = totalBits / 8;
  if (end - begin !== expected) {
    return {
      range,
      problem: `data_offsets [${begin}, ${end}] span ${end - begin} bytes but ${dtype} ${JSON.stringify(shape)} ` +
        `needs ${expected}`,
    };
  }
  return { range };
}

function isCount(value: unknown): value is number {
  return typeof value === "number" && Number.isSafeInteger(value) && value >= 0;
}
