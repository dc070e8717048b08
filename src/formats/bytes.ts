/**
 * Bounded byte buffers and little-endian reads shared by the format
 * checkers. Every buffer here has a hard limit, which is what keeps a
 * checker's memory bounded whatever the size of the file it reads.
 *
 * @module
 */

/**
 * A byte buffer that grows up to `limit` bytes and refuses to grow past it.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { GrowableBytes } from "./bytes.ts";
 * const buffer = new GrowableBytes(4);
 * assert.ok(buffer.append(new Uint8Array([1, 2, 3])));
 * assert.ok(!buffer.append(new Uint8Array([4, 5])));
 * assert.deepEqual([...buffer.view()], [1, 2, 3]);
 * ```
 */
export class GrowableBytes {
  #data: Uint8Array;
  #length = 0;
  /** The most bytes this buffer will hold. */
  readonly limit: number;

  /** An empty buffer that holds at most `limit` bytes. */
  constructor(limit: number) {
    this.limit = limit;
    this.#data = new Uint8Array(Math.min(limit, 256));
  }

  /** Bytes held. */
  get length(): number {
    return this.#length;
  }

  /** Appends a copy of `bytes`; returns false, appending nothing, when that would pass the limit. */
  append(bytes: Uint8Array): boolean {
    const needed = this.#length + bytes.length;
    if (needed > this.limit) return false;
    if (needed > this.#data.length) {
      const grown = new Uint8Array(Math.min(this.limit, Math.max(needed, this.#data.length * 2)));
      grown.set(this.#data.subarray(0, this.#length));
      this.#data = grown;
    }
    this.#data.set(bytes, this.#length);
    this.#length = needed;
    return true;
  }

  /** The bytes held, without copying; valid until the next change. */
  view(): Uint8Array {
    return this.#data.subarray(0, this.#length);
  }

  /** Forgets every byte (keeps the allocation when it is small). */
  clear(): void {
    this.#length = 0;
    if (this.#data.length > 65536) this.#data = new Uint8Array(256);
  }
}

/**
 * The last `capacity` bytes of a stream, addressed by their offset in the
 * stream: what a zip reader needs to find the end records without keeping
 * the whole file.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { TailBuffer } from "./bytes.ts";
 * const tail = new TailBuffer(4);
 * tail.push(new Uint8Array([1, 2, 3]));
 * tail.push(new Uint8Array([4, 5, 6]));
 * assert.equal(tail.start, 2);
 * assert.deepEqual([...tail.slice(3, 2)!], [4, 5]);
 * assert.equal(tail.slice(1, 2), undefined);
 * ```
 */
export class TailBuffer {
  readonly #ring: Uint8Array;
  #seen = 0;

  /** Keeps the last `capacity` bytes pushed. */
  constructor(capacity: number) {
    this.#ring = new Uint8Array(Math.max(1, capacity));
  }

  /** Bytes pushed in all. */
  get seen(): number {
    return this.#seen;
  }

  /** Stream offset of the first byte still held. */
  get start(): number {
    return Math.max(0, this.#seen - this.#ring.length);
  }

  /** Appends the next bytes of the stream. */
  push(chunk: Uint8Array): void {
    const size = this.#ring.length;
    // Only the last `size` bytes of a chunk can survive: copy just those.
    const keep = chunk.length > size ? chunk.subarray(chunk.length - size) : chunk;
    const skipped = chunk.length - keep.length;
    let at = (this.#seen + skipped) % size;
    let from = 0;
    while (from < keep.length) {
      const n = Math.min(keep.length - from, size - at);
      this.#ring.set(keep.subarray(from, from + n), at);
      from += n;
      at = (at + n) % size;
    }
    this.#seen += chunk.length;
  }

  /** A copy of `length` bytes at stream `offset`, or undefined when they are not all held. */
  slice(offset: number, length: number): Uint8Array | undefined {
    if (offset < this.start || length < 0 || offset + length > this.#seen) return undefined;
    const out = new Uint8Array(length);
    const size = this.#ring.length;
    for (let i = 0; i < length;) {
      const at = (offset + i) % size;
      const n = Math.min(length - i, size - at);
      out.set(this.#ring.subarray(at, at + n), i);
      i += n;
    }
    return out;
  }
}

/**
 * Reads a little-endian unsigned 16-bit integer.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { u16 } from "./bytes.ts";
 * assert.equal(u16(new Uint8Array([0x34, 0x12]), 0), 0x1234);
 * ```
 */
export function u16(data: Uint8Array, at: number): number {
  return data[at] | (data[at + 1] << 8);
}

/**
 * Reads a little-endian unsigned 32-bit integer.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { u32 } from "./bytes.ts";
 * assert.equal(u32(new Uint8Array([0xff, 0xff, 0xff, 0xff]), 0), 0xffffffff);
 * ```
 */
export function u32(data: Uint8Array, at: number): number {
  return (data[at] | (data[at + 1] << 8) | (data[at + 2] << 16) | (data[at + 3] << 24)) >>> 0;
}

/**
 * Reads a little-endian unsigned 64-bit integer as a number; values past
 * `Number.MAX_SAFE_INTEGER` (no real file offset is that large) come back as
 * `Infinity` so every size check against them fails loudly.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { u64 } from "./bytes.ts";
 * assert.equal(u64(new Uint8Array([1, 0, 0, 0, 1, 0, 0, 0]), 0), 2 ** 32 + 1);
 * assert.equal(u64(new Uint8Array(8).fill(0xff), 0), Infinity);
 * ```
 */
export function u64(data: Uint8Array, at: number): number {
  const value = u32(data, at) + u32(data, at + 4) * 2 ** 32;
  return value > Number.MAX_SAFE_INTEGER ? Infinity : value;
}

/**
 * Tells whether `data` holds `signature` at `at`, comparing only the bytes
 * that are there (so a partial match at the end of a chunk counts).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { startsWithAt } from "./bytes.ts";
 * const data = new Uint8Array([0, 0x50, 0x4b]);
 * assert.ok(startsWithAt(data, 1, [0x50, 0x4b, 3, 4]));
 * assert.ok(!startsWithAt(data, 0, [0x50]));
 * ```
 */
export function startsWithAt(data: Uint8Array, at: number, signature: readonly number[]): boolean {
  for (let i = 0; i < signature.length && at + i < data.length; i++) {
    if (data[at + i] !== signature[i]) return false;
  }
  return true;
}

/**
 * Joins two byte arrays into a new one.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { concat } from "./bytes.ts";
 * assert.deepEqual([...concat(new Uint8Array([1]), new Uint8Array([2, 3]))], [1, 2, 3]);
 * ```
 */
export function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}
