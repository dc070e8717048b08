/**
 * What torch puts in its pickles, read from a walked pickle: the storages
 * its persistent ids reference (`('storage', <type>, '<key>', '<location>',
 * numel[, view])`), the element size of each storage type, and the scalar
 * top-level entries of the pickled dict (facts for layout checks).
 *
 * @module
 */

import type { FormatFact } from "./checker.ts";
import { entriesOf, isNode, type PickleValue } from "./pickle.ts";

/**
 * Bytes per element of each torch storage type, by class name (`torch.FloatStorage`
 * is pickled as the global `torch FloatStorage`; CUDA types of old files as
 * `torch.cuda FloatStorage`). `UntypedStorage` counts bytes.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { STORAGE_ELEMENT_SIZES } from "./torch_pickle.ts";
 * assert.equal(STORAGE_ELEMENT_SIZES.FloatStorage, 4);
 * ```
 */
export const STORAGE_ELEMENT_SIZES: Readonly<Record<string, number>> = {
  DoubleStorage: 8,
  FloatStorage: 4,
  HalfStorage: 2,
  BFloat16Storage: 2,
  LongStorage: 8,
  IntStorage: 4,
  ShortStorage: 2,
  CharStorage: 1,
  ByteStorage: 1,
  BoolStorage: 1,
  ComplexDoubleStorage: 16,
  ComplexFloatStorage: 8,
  QInt8Storage: 1,
  QUInt8Storage: 1,
  QInt32Storage: 4,
  QUInt4x2Storage: 1,
  QUInt2x4Storage: 1,
  UntypedStorage: 1,
};

/**
 * A storage a torch pickle references through a persistent id.
 *
 * @example
 * ```ts
 * import type { StorageRef } from "./torch_pickle.ts";
 * const ref: StorageRef = { key: "0", type: "FloatStorage", location: "cuda:0", numel: 6, elementSize: 4 };
 * ```
 */
export interface StorageRef {
  /** The storage key: `data/<key>` in a zip archive, the order key in the legacy format. */
  key: string;
  /** The storage class name, e.g. `FloatStorage`. */
  type: string;
  /** Where it lived when saved, e.g. `cpu` or `cuda:0`. */
  location: string;
  /** Number of elements. */
  numel: number;
  /** Bytes per element, when the type is known. */
  elementSize?: number;
}

/**
 * What {@linkcode storageRefs} read.
 *
 * @example
 * ```ts
 * import type { StorageRefs } from "./torch_pickle.ts";
 * const none: StorageRefs = { refs: [], problems: [] };
 * ```
 */
export interface StorageRefs {
  /** One per distinct key, in first-reference order. */
  refs: StorageRef[];
  /** Persistent ids that claim to be storages but are malformed. */
  problems: string[];
}

/**
 * Reads the storage references from a pickle's persistent ids. Ids that are
 * not storages (torch also pickles `('module', …)` ids) are ignored.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { storageRefs } from "./torch_pickle.ts";
 * const id = {
 *   kind: "tuple" as const,
 *   items: ["storage", { kind: "global" as const, module: "torch", name: "LongStorage" }, "0", "cpu", 8],
 * };
 * const { refs } = storageRefs([id]);
 * assert.deepEqual(refs, [{ key: "0", type: "LongStorage", location: "cpu", numel: 8, elementSize: 8 }]);
 * ```
 */
export function storageRefs(ids: readonly PickleValue[]): StorageRefs {
  const refs = new Map<string, StorageRef>();
  const problems: string[] = [];
  ids.forEach((id, index) => {
    if (!isNode(id) || id.kind !== "tuple" || id.items[0] !== "storage") return;
    const [, type, key, location, numel] = id.items;
    const typeName = isNode(type) && type.kind === "global" ? type.name : typeof type === "string" ? type : undefined;
    if (
      typeName === undefined || typeof key !== "string" || typeof location !== "string" ||
      typeof numel !== "number" || !Number.isSafeInteger(numel) || numel < 0
    ) {
      problems.push(
        `persistent id ${index + 1} is not ('storage', <type>, '<key>', '<location>', <numel>): ` +
          describe(id),
      );
      return;
    }
    if (!refs.has(key)) {
      refs.set(key, { key, type: typeName, location, numel, elementSize: STORAGE_ELEMENT_SIZES[typeName] });
    }
  });
  return { refs: [...refs.values()], problems };
}

/** Most facts kept from one pickle. */
const MAX_FACTS = 256;
/** Longest string fact kept. */
const MAX_FACT_STRING = 256;

/**
 * The scalar entries (string, number, boolean) of a pickled top-level dict,
 * keyed by their string keys: for example DeepSpeed's `dp_world_size`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { topLevelFacts } from "./torch_pickle.ts";
 * const value = { kind: "dict" as const, entries: [["dp_world_size", 8], ["module", null]] as [string, number | null][] };
 * assert.deepEqual(topLevelFacts(value), { dp_world_size: 8 });
 * ```
 */
export function topLevelFacts(value: PickleValue | undefined): Record<string, FormatFact> {
  const facts: Record<string, FormatFact> = {};
  let count = 0;
  for (const [key, entry] of entriesOf(value)) {
    if (typeof key !== "string" || count >= MAX_FACTS) continue;
    if (typeof entry === "number" || typeof entry === "boolean") facts[key] = entry;
    else if (typeof entry === "bigint") facts[key] = entry.toString();
    else if (typeof entry === "string" && entry.length <= MAX_FACT_STRING) facts[key] = entry;
    else continue;
    count++;
  }
  return facts;
}

/**
 * A short rendering of a pickled value for findings.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { describe } from "./torch_pickle.ts";
 * assert.equal(describe({ kind: "tuple", items: ["storage", 3] }), "('storage', 3)");
 * ```
 */
export function describe(value: PickleValue | undefined, depth = 0): string {
  if (value === undefined) return "nothing";
  if (value === null) return "None";
  if (typeof value === "string") return `'${value.length > 40 ? value.slice(0, 40) + "…" : value}'`;
  if (typeof value === "boolean") return value ? "True" : "False";
  if (typeof value !== "object") return String(value);
  if (depth > 2) return "…";
  switch (value.kind) {
    case "tuple":
      return `(${value.items.slice(0, 6).map((v) => describe(v, depth + 1)).join(", ")})`;
    case "list":
      return `[${value.items.slice(0, 6).map((v) => describe(v, depth + 1)).join(", ")}]`;
    case "global":
      return `${value.module}.${value.name}`;
    case "blob":
      return `<${value.length} bytes>`;
    default:
      return `<${value.kind}>`;
  }
}
