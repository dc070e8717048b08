/**
 * RFC 8785 canonical JSON written piece by piece, so a manifest's self-digest
 * is computed by feeding a streaming SHA-256 instead of building the whole
 * canonical text (the size of the manifest) and then its bytes.
 *
 * For every JSON value (what `JSON.parse` returns) the text is byte for byte
 * what the `canonicalize` package returns (`tests/manifest_test.ts` checks it
 * on random documents). Values JSON cannot hold are treated as
 * `JSON.stringify` treats them, so the digest of an object equals the digest
 * of what the serialiser writes: `toJSON` is called, boxed primitives are
 * unwrapped, `undefined`, functions and symbols are skipped in objects and
 * `null` in arrays (holes too). A number that is not finite is refused (RFC
 * 8785 has no form for it), as `canonicalize` does, and so is a bigint.
 * Nesting deeper than the given limit throws {@linkcode NestingTooDeep}
 * instead of recursing further, so no input can overflow the stack.
 *
 * @module
 */

import { createHash } from "node:crypto";

/** Thrown when a value is nested deeper than the limit a canonical writer was given (a `RangeError`). */
export class NestingTooDeep extends RangeError {
  /** The limit that was exceeded. */
  readonly limit: number;
  constructor(limit: number) {
    super(`nested more than ${limit} levels deep`);
    this.name = "NestingTooDeep";
    this.limit = limit;
  }
}

/** Where canonical text goes, one piece at a time. */
export interface CanonicalSink {
  /** Appends a piece (never split: a surrogate pair always arrives whole). */
  write(piece: string): void;
}

/** Pieces are gathered into chunks of about this many UTF-16 code units before they are hashed. */
const CHUNK = 1 << 16;

/** A sink that hashes the canonical text with SHA-256 as UTF-8, in chunks. */
export class Sha256Sink implements CanonicalSink {
  #hash = createHash("sha256");
  #pending = "";
  /** Appends a piece. */
  write(piece: string): void {
    this.#pending += piece;
    if (this.#pending.length >= CHUNK) {
      this.#hash.update(this.#pending, "utf8");
      this.#pending = "";
    }
  }
  /** The lower-case hex SHA-256 of everything written. */
  hex(): string {
    this.#hash.update(this.#pending, "utf8");
    this.#pending = "";
    return this.#hash.digest("hex");
  }
}

/** A sink that keeps the whole text (for tests and small values). */
export class StringSink implements CanonicalSink {
  /** Everything written so far. */
  text = "";
  /** Appends a piece. */
  write(piece: string): void {
    this.text += piece;
  }
}

/**
 * Writes the canonical JSON of `value` to `sink`. `depth` is the nesting
 * level of `value` itself (1 for a top-level object or array); no array or
 * object may sit deeper than `maxDepth`. Throws a `TypeError` when `value`
 * has no JSON form (undefined, a function, a symbol) or holds a number that
 * is not finite or a bigint.
 */
export function writeCanonical(value: unknown, sink: CanonicalSink, depth = 1, maxDepth = Infinity): void {
  const plain = toPlain(value, "");
  if (plain === undefined) throw new TypeError("value has no JSON form");
  writePlain(plain, sink, depth, maxDepth);
}

/**
 * The canonical JSON text of `value` (see {@linkcode writeCanonical}).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { canonicalJson } from "./canonical.ts";
 * assert.equal(canonicalJson({ b: [1e21, "é"], a: null }), '{"a":null,"b":[1e+21,"é"]}');
 * ```
 */
export function canonicalJson(value: unknown, maxDepth = Infinity): string {
  const sink = new StringSink();
  writeCanonical(value, sink, 1, maxDepth);
  return sink.text;
}

/**
 * What `JSON.stringify` would write for `value` under `key`: `toJSON`
 * applied and boxed primitives unwrapped; `undefined` when it writes nothing.
 */
export function toPlain(value: unknown, key: string): unknown {
  if (typeof value === "object" && value !== null) {
    const toJSON = (value as { toJSON?: unknown }).toJSON;
    if (typeof toJSON === "function") value = toJSON.call(value, key);
  }
  if (typeof value === "object" && value !== null) {
    if (value instanceof Number || value instanceof String || value instanceof Boolean) return value.valueOf();
    return value;
  }
  if (value === undefined || typeof value === "function" || typeof value === "symbol") return undefined;
  return value;
}

/**
 * Writes a value already passed through {@linkcode toPlain} (never undefined) whose nesting level is `depth`.
 */
export function writePlain(value: unknown, sink: CanonicalSink, depth: number, maxDepth: number): void {
  switch (typeof value) {
    case "string":
      sink.write(JSON.stringify(value));
      return;
    case "number":
      sink.write(canonicalNumber(value));
      return;
    case "boolean":
      sink.write(value ? "true" : "false");
      return;
    case "bigint":
      throw new TypeError("a bigint has no JSON form");
    case "object":
      break;
    default:
      throw new TypeError(`a ${typeof value} has no JSON form`);
  }
  if (value === null) {
    sink.write("null");
    return;
  }
  if (depth > maxDepth) throw new NestingTooDeep(maxDepth);
  if (Array.isArray(value)) {
    sink.write("[");
    for (let i = 0; i < value.length; i++) {
      if (i > 0) sink.write(",");
      const item = toPlain(value[i], String(i));
      if (item === undefined) sink.write("null");
      else writePlain(item, sink, depth + 1, maxDepth);
    }
    sink.write("]");
    return;
  }
  const object = value as Record<string, unknown>;
  // Default sort: by UTF-16 code units, as RFC 8785 requires and `canonicalize` does.
  const keys = Object.keys(object).sort();
  sink.write("{");
  let first = true;
  for (const key of keys) {
    const item = toPlain(object[key], key);
    if (item === undefined) continue;
    sink.write(first ? JSON.stringify(key) + ":" : "," + JSON.stringify(key) + ":");
    first = false;
    writePlain(item, sink, depth + 1, maxDepth);
  }
  sink.write("}");
}

/** ECMAScript's shortest round-trip form (what RFC 8785 prescribes); refuses NaN and the infinities. */
export function canonicalNumber(value: number): string {
  if (!Number.isFinite(value)) {
    throw new TypeError(`${value} is not allowed in canonical JSON`);
  }
  return String(value); // -0 gives "0", as JSON.stringify does
}
