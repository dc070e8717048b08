/**
 * A streaming walker for Python pickles (protocols 0 to 5). It never calls
 * anything: it rebuilds plain values (numbers, strings, tuples, lists,
 * dicts) and records calls (`REDUCE`, `NEWOBJ`, `BUILD`) and persistent ids
 * as inert nodes, which is all the format checks need — the storage keys
 * torch stores in persistent ids, DeepSpeed's world sizes, DCP's file names.
 *
 * It takes its input in chunks of any size and stops at the pickle's `STOP`
 * opcode, telling how many bytes it used, so a caller can walk several
 * pickles written back to back (torch's legacy format) from one stream.
 *
 * Memory stays bounded: byte strings are never kept (only their length),
 * text strings longer than `maxStringBytes` neither, and when the values
 * built pass `maxRetainedBytes` the walker drops them and only walks the
 * opcodes to the `STOP` (`limited` tells so).
 *
 * @module
 */

/**
 * A value rebuilt from a pickle.
 *
 * @example
 * ```ts
 * import type { PickleValue } from "./pickle.ts";
 * const value: PickleValue = { kind: "tuple", items: ["storage", "0", 8n] };
 * ```
 */
export type PickleValue = null | boolean | number | bigint | string | PickleNode;

/**
 * A rebuilt value that is not a Python scalar.
 *
 * @example
 * ```ts
 * import type { PickleNode } from "./pickle.ts";
 * const node: PickleNode = { kind: "global", module: "torch", name: "FloatStorage" };
 * ```
 */
export type PickleNode =
  | PickleBlob
  | { kind: "tuple"; items: PickleValue[] }
  | { kind: "list"; items: PickleValue[] }
  | { kind: "dict"; entries: [PickleValue, PickleValue][] }
  | { kind: "set"; items: PickleValue[] }
  | { kind: "global"; module: string; name: string }
  | PickleObject
  | { kind: "persistent"; id: PickleValue }
  | { kind: "ext"; code: number }
  | { kind: "buffer" };

/**
 * Bytes, or a string too long to keep: only the length is kept.
 *
 * @example
 * ```ts
 * import type { PickleBlob } from "./pickle.ts";
 * const blob: PickleBlob = { kind: "blob", type: "bytes", length: 4096 };
 * ```
 */
export interface PickleBlob {
  kind: "blob";
  /** What the payload was. */
  type: "bytes" | "str" | "long";
  /** Payload length in bytes. */
  length: number;
}

/**
 * The result of a call the pickle asked for (`REDUCE`, `NEWOBJ`, `INST`,
 * `OBJ`), never made: the callable, its arguments, the state `BUILD` set,
 * and the items and entries `APPENDS`/`SETITEMS` added (an `OrderedDict`
 * gets its entries this way).
 *
 * @example
 * ```ts
 * import type { PickleObject } from "./pickle.ts";
 * // collections.OrderedDict() with one entry, as torch pickles a state dict.
 * const ordered: PickleObject = {
 *   kind: "object",
 *   callable: { kind: "global", module: "collections", name: "OrderedDict" },
 *   args: { kind: "tuple", items: [] },
 *   items: [],
 *   entries: [["weight", null]],
 * };
 * ```
 */
export interface PickleObject {
  kind: "object";
  callable: PickleValue;
  args: PickleValue;
  state?: PickleValue;
  items: PickleValue[];
  entries: [PickleValue, PickleValue][];
}

/**
 * Options for {@linkcode PickleWalker}.
 *
 * @example
 * ```ts
 * import { PickleWalker, type PickleWalkerOptions } from "./pickle.ts";
 * const options: PickleWalkerOptions = { maxRetainedBytes: 1 << 20 };
 * const walker = new PickleWalker(options);
 * ```
 */
export interface PickleWalkerOptions {
  /** Rough bytes of values kept before the walker stops building them (default 64 MiB). */
  maxRetainedBytes?: number;
  /** Longest text string kept, and longest text argument (default 1 MiB). */
  maxStringBytes?: number;
}

/** Default {@linkcode PickleWalkerOptions.maxRetainedBytes}. */
const DEFAULT_MAX_RETAINED_BYTES = 64 * 1024 * 1024;
/** Default {@linkcode PickleWalkerOptions.maxStringBytes}. */
const DEFAULT_MAX_STRING_BYTES = 1024 * 1024;

type ArgSpec =
  | "none"
  | "line"
  | "lines2"
  | { fixed: number }
  | { prefix: 1 | 4 | 8; payload: "str" | "bytes" | "latin1" | "long" };

const NONE = "none";
const OPCODES = new Map<number, ArgSpec>([
  [0x28, NONE], // MARK
  [0x2e, NONE], // STOP
  [0x30, NONE], // POP
  [0x31, NONE], // POP_MARK
  [0x32, NONE], // DUP
  [0x46, "line"], // FLOAT
  [0x49, "line"], // INT
  [0x4a, { fixed: 4 }], // BININT
  [0x4b, { fixed: 1 }], // BININT1
  [0x4c, "line"], // LONG
  [0x4d, { fixed: 2 }], // BININT2
  [0x4e, NONE], // NONE
  [0x50, "line"], // PERSID
  [0x51, NONE], // BINPERSID
  [0x52, NONE], // REDUCE
  [0x53, "line"], // STRING
  [0x54, { prefix: 4, payload: "latin1" }], // BINSTRING
  [0x55, { prefix: 1, payload: "latin1" }], // SHORT_BINSTRING
  [0x56, "line"], // UNICODE
  [0x58, { prefix: 4, payload: "str" }], // BINUNICODE
  [0x61, NONE], // APPEND
  [0x62, NONE], // BUILD
  [0x63, "lines2"], // GLOBAL
  [0x64, NONE], // DICT
  [0x7d, NONE], // EMPTY_DICT
  [0x65, NONE], // APPENDS
  [0x67, "line"], // GET
  [0x68, { fixed: 1 }], // BINGET
  [0x69, "lines2"], // INST
  [0x6a, { fixed: 4 }], // LONG_BINGET
  [0x6c, NONE], // LIST
  [0x5d, NONE], // EMPTY_LIST
  [0x6f, NONE], // OBJ
  [0x70, "line"], // PUT
  [0x71, { fixed: 1 }], // BINPUT
  [0x72, { fixed: 4 }], // LONG_BINPUT
  [0x73, NONE], // SETITEM
  [0x74, NONE], // TUPLE
  [0x29, NONE], // EMPTY_TUPLE
  [0x75, NONE], // SETITEMS
  [0x47, { fixed: 8 }], // BINFLOAT
  [0x80, { fixed: 1 }], // PROTO
  [0x81, NONE], // NEWOBJ
  [0x82, { fixed: 1 }], // EXT1
  [0x83, { fixed: 2 }], // EXT2
  [0x84, { fixed: 4 }], // EXT4
  [0x85, NONE], // TUPLE1
  [0x86, NONE], // TUPLE2
  [0x87, NONE], // TUPLE3
  [0x88, NONE], // NEWTRUE
  [0x89, NONE], // NEWFALSE
  [0x8a, { prefix: 1, payload: "long" }], // LONG1
  [0x8b, { prefix: 4, payload: "long" }], // LONG4
  [0x42, { prefix: 4, payload: "bytes" }], // BINBYTES
  [0x43, { prefix: 1, payload: "bytes" }], // SHORT_BINBYTES
  [0x8c, { prefix: 1, payload: "str" }], // SHORT_BINUNICODE
  [0x8d, { prefix: 8, payload: "str" }], // BINUNICODE8
  [0x8e, { prefix: 8, payload: "bytes" }], // BINBYTES8
  [0x8f, NONE], // EMPTY_SET
  [0x90, NONE], // ADDITEMS
  [0x91, NONE], // FROZENSET
  [0x92, NONE], // NEWOBJ_EX
  [0x93, NONE], // STACK_GLOBAL
  [0x94, NONE], // MEMOIZE
  [0x95, { fixed: 8 }], // FRAME
  [0x96, { prefix: 8, payload: "bytes" }], // BYTEARRAY8
  [0x97, NONE], // NEXT_BUFFER
  [0x98, NONE], // READONLY_BUFFER
]);

/** Integers longer than this many bytes (LONG4) are not rebuilt, only measured. */
const MAX_LONG_BYTES = 4096;

type Measure =
  | { status: "need"; missing?: number }
  | { status: "op"; length: number }
  | { status: "skip"; header: number; payload: number; type: PickleBlob["type"] }
  | { status: "bad"; message: string };

class PickleError extends Error {}

const utf8 = new TextDecoder("utf-8");
const latin1 = new TextDecoder("latin1");

/**
 * Walks one pickle from a stream of chunks.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { PickleWalker } from "./pickle.ts";
 * // pickle.dumps({"a": 1}, protocol=2)
 * const bytes = new Uint8Array([0x80, 2, 0x7d, 0x71, 0, 0x58, 1, 0, 0, 0, 0x61, 0x71, 1, 0x4b, 1, 0x73, 0x2e, 0xff]);
 * const walker = new PickleWalker();
 * assert.equal(walker.update(bytes.subarray(0, 7)), 7);
 * assert.equal(walker.update(bytes.subarray(7)), 10); // stops after STOP
 * assert.ok(walker.done);
 * assert.deepEqual(walker.value, { kind: "dict", entries: [["a", 1]] });
 * ```
 */
export class PickleWalker {
  readonly #maxRetained: number;
  readonly #maxString: number;
  #stack: PickleValue[] = [];
  #marks: number[] = [];
  #memo = new Map<number, PickleValue>();
  #pending: Uint8Array = new Uint8Array(0);
  #pendingLength = 0;
  #skip = 0;
  #offset = 0;
  #retained = 0;
  #limited = false;
  #done = false;
  #error: string | undefined;
  #errorOffset: number | undefined;
  #value: PickleValue | undefined;
  #protocol = 0;
  readonly #persistentIds: PickleValue[] = [];

  /** A walker for one pickle. */
  constructor(options: PickleWalkerOptions = {}) {
    this.#maxRetained = options.maxRetainedBytes ?? DEFAULT_MAX_RETAINED_BYTES;
    this.#maxString = options.maxStringBytes ?? DEFAULT_MAX_STRING_BYTES;
  }

  /** True once the `STOP` opcode was read. */
  get done(): boolean {
    return this.#done;
  }

  /** Why the pickle is malformed, or undefined. */
  get error(): string | undefined {
    return this.#error;
  }

  /** Offset in the pickle of the opcode the error is about. */
  get errorOffset(): number | undefined {
    return this.#errorOffset;
  }

  /** Bytes of the pickle used so far (after `done`: its whole length). */
  get consumed(): number {
    return this.#offset + this.#pendingLength;
  }

  /** The pickled value, once `done` (undefined when `limited`). */
  get value(): PickleValue | undefined {
    return this.#value;
  }

  /** The protocol named by the `PROTO` opcode (0 when there is none). */
  get protocol(): number {
    return this.#protocol;
  }

  /** True when the values passed `maxRetainedBytes` and were dropped: only the opcodes were walked. */
  get limited(): boolean {
    return this.#limited;
  }

  /** Every persistent id, in pickle order (only while not `limited`). */
  get persistentIds(): readonly PickleValue[] {
    return this.#persistentIds;
  }

  /**
   * Feeds the next bytes; returns how many were part of this pickle (fewer
   * than given once `STOP` is read, and 0 after that or after an error).
   */
  update(chunk: Uint8Array): number {
    let pos = 0;
    try {
      while (pos < chunk.length && !this.#done && this.#error === undefined) {
        if (this.#skip > 0) {
          const n = Math.min(this.#skip, chunk.length - pos);
          this.#skip -= n;
          this.#offset += n;
          pos += n;
          continue;
        }
        if (this.#pendingLength === 0) {
          const m = measure(chunk, pos, this.#maxString);
          if (m.status === "need") {
            this.#hold(chunk.subarray(pos));
            pos = chunk.length;
          } else {
            pos += this.#run(m, chunk, pos);
          }
          continue;
        }
        const m = measure(this.#pendingView(), 0, this.#maxString);
        if (m.status !== "need") {
          this.#runPending(m);
          continue;
        }
        let n = m.missing;
        if (n === undefined) {
          const newline = chunk.indexOf(0x0a, pos);
          n = newline < 0 ? chunk.length - pos : newline - pos + 1;
        }
        n = Math.min(n, chunk.length - pos);
        this.#hold(chunk.subarray(pos, pos + n));
        pos += n;
        const after = measure(this.#pendingView(), 0, this.#maxString);
        if (after.status !== "need") this.#runPending(after);
      }
    } catch (err) {
      if (!(err instanceof PickleError)) throw err;
      this.#fail(err.message);
      return pos;
    }
    return pos;
  }

  /** Marks the end of input: a pickle without its `STOP` becomes an error. */
  end(): void {
    if (this.#done || this.#error !== undefined) return;
    const where = this.#skip > 0
      ? ` inside an argument (${this.#skip} of its bytes missing)`
      : this.#pendingLength > 0
      ? " inside an opcode"
      : "";
    this.#fail(`ends after ${this.consumed} bytes${where}, before its STOP opcode`);
  }

  #fail(message: string): void {
    this.#error = message;
    this.#errorOffset = this.#offset;
    this.#stack = [];
    this.#memo.clear();
  }

  #pendingView(): Uint8Array {
    return this.#pending.subarray(0, this.#pendingLength);
  }

  #hold(bytes: Uint8Array): void {
    const needed = this.#pendingLength + bytes.length;
    if (needed > this.#maxString + 16) {
      throw new PickleError(
        `opcode 0x${this.#pendingView()[0]?.toString(16) ?? "??"} at offset ${this.#offset} ` +
          `has an argument longer than ${this.#maxString} bytes`,
      );
    }
    if (needed > this.#pending.length) {
      const grown = new Uint8Array(Math.max(needed, this.#pending.length * 2, 64));
      grown.set(this.#pendingView());
      this.#pending = grown;
    }
    this.#pending.set(bytes, this.#pendingLength);
    this.#pendingLength = needed;
  }

  #runPending(m: Exclude<Measure, { status: "need" }>): void {
    const held = this.#pendingView().slice();
    this.#pendingLength = 0;
    if (this.#pending.length > 65536) this.#pending = new Uint8Array(0);
    this.#run(m, held, 0);
  }

  /** Runs a measured opcode found at `at`; returns the bytes used from `data`. */
  #run(m: Exclude<Measure, { status: "need" }>, data: Uint8Array, at: number): number {
    if (m.status === "bad") throw new PickleError(`${m.message} at offset ${this.#offset}`);
    if (m.status === "skip") {
      this.#execBlob(m.type, m.payload);
      this.#offset += m.header;
      this.#skip = m.payload;
      return m.header;
    }
    this.#exec(data.subarray(at, at + m.length));
    this.#offset += m.length;
    return m.length;
  }

  #push(value: PickleValue): void {
    this.#stack.push(value);
    this.#retained += 24 + (typeof value === "string" ? value.length : 0);
    if (this.#retained > this.#maxRetained) {
      // Too big to keep: walk on to the STOP without building values.
      this.#limited = true;
      this.#stack = [];
      this.#marks = [];
      this.#memo.clear();
      this.#persistentIds.length = 0;
    }
  }

  #pop(): PickleValue {
    const floor = this.#marks.length ? this.#marks[this.#marks.length - 1] : 0;
    if (this.#stack.length <= floor) throw new PickleError(`stack underflow at offset ${this.#offset}`);
    return this.#stack.pop() as PickleValue;
  }

  #top(): PickleValue {
    const floor = this.#marks.length ? this.#marks[this.#marks.length - 1] : 0;
    if (this.#stack.length <= floor) throw new PickleError(`stack underflow at offset ${this.#offset}`);
    return this.#stack[this.#stack.length - 1];
  }

  #popMark(): PickleValue[] {
    const mark = this.#marks.pop();
    if (mark === undefined) throw new PickleError(`MARK expected at offset ${this.#offset}`);
    return this.#stack.splice(mark);
  }

  #execBlob(type: PickleBlob["type"], length: number): void {
    if (this.#limited) return;
    this.#push({ kind: "blob", type, length });
  }

  #exec(op: Uint8Array): void {
    const code = op[0];
    if (code === 0x2e) { // STOP
      this.#done = true;
      if (!this.#limited) this.#value = this.#pop();
      this.#stack = [];
      this.#memo.clear();
      return;
    }
    if (code === 0x80) {
      this.#protocol = op[1];
      return;
    }
    if (this.#limited) return;
    switch (code) {
      case 0x28: // MARK
        this.#marks.push(this.#stack.length);
        return;
      case 0x30: // POP
        if (this.#marks.length && this.#stack.length === this.#marks[this.#marks.length - 1]) this.#marks.pop();
        else this.#pop();
        return;
      case 0x31: // POP_MARK
        this.#popMark();
        return;
      case 0x32: // DUP
        this.#stack.push(this.#top());
        return;
      case 0x46: // FLOAT
        return this.#push(Number.parseFloat(lineText(op)));
      case 0x49: { // INT
        const text = lineText(op);
        if (text === "00") return this.#push(false);
        if (text === "01") return this.#push(true);
        return this.#push(parseInteger(text, this.#offset));
      }
      case 0x4a: // BININT
        return this.#push(new DataView(op.buffer, op.byteOffset + 1, 4).getInt32(0, true));
      case 0x4b: // BININT1
        return this.#push(op[1]);
      case 0x4c: // LONG
        return this.#push(parseInteger(lineText(op).replace(/L$/, ""), this.#offset));
      case 0x4d: // BININT2
        return this.#push(op[1] | (op[2] << 8));
      case 0x4e: // NONE
        return this.#push(null);
      case 0x50: // PERSID
        return this.#persistent(lineText(op));
      case 0x51: // BINPERSID
        return this.#persistent(this.#pop());
      case 0x52: { // REDUCE
        const args = this.#pop();
        const callable = this.#pop();
        return this.#push(object(callable, args));
      }
      case 0x53: // STRING
        return this.#push(lineText(op).replace(/^(['"])(.*)\1$/s, "$2"));
      case 0x54:
      case 0x55: // BINSTRING, SHORT_BINSTRING: Python 2 str, bytes taken as Latin-1
        return this.#push(latin1.decode(op.subarray(code === 0x54 ? 5 : 2)));
      case 0x56: // UNICODE (raw-unicode-escape)
        return this.#push(
          lineText(op).replace(
            /\\u([0-9a-fA-F]{4})|\\U([0-9a-fA-F]{8})/g,
            (_, u4: string | undefined, u8: string | undefined) =>
              String.fromCodePoint(Number.parseInt(u4 ?? u8 ?? "0", 16)),
          ),
        );
      case 0x58: // BINUNICODE
        return this.#push(utf8.decode(op.subarray(5)));
      case 0x8c: // SHORT_BINUNICODE
        return this.#push(utf8.decode(op.subarray(2)));
      case 0x8d: // BINUNICODE8
        return this.#push(utf8.decode(op.subarray(9)));
      case 0x42:
      case 0x43:
      case 0x8e:
      case 0x96: // bytes are always skipped by measure(); kept here for completeness
        return this.#push({ kind: "blob", type: "bytes", length: op.length });
      case 0x61: { // APPEND
        const value = this.#pop();
        this.#appendTo(this.#top(), [value]);
        return;
      }
      case 0x65: { // APPENDS
        const items = this.#popMark();
        this.#appendTo(this.#top(), items);
        return;
      }
      case 0x62: { // BUILD
        const state = this.#pop();
        const target = this.#top();
        if (isNode(target) && target.kind === "object") target.state = state;
        return;
      }
      case 0x63: { // GLOBAL
        const [module, name] = lineText(op).split("\n");
        return this.#push({ kind: "global", module, name });
      }
      case 0x64: { // DICT
        const items = this.#popMark();
        return this.#push({ kind: "dict", entries: pairs(items, this.#offset) });
      }
      case 0x7d: // EMPTY_DICT
        return this.#push({ kind: "dict", entries: [] });
      case 0x67: // GET
        return this.#get(Number.parseInt(lineText(op), 10));
      case 0x68: // BINGET
        return this.#get(op[1]);
      case 0x6a: // LONG_BINGET
        return this.#get(leU32(op, 1));
      case 0x69: { // INST
        const [module, name] = lineText(op).split("\n");
        const args = this.#popMark();
        return this.#push(object({ kind: "global", module, name }, { kind: "tuple", items: args }));
      }
      case 0x6f: { // OBJ
        const [callable, ...args] = this.#popMark();
        return this.#push(object(callable ?? null, { kind: "tuple", items: args }));
      }
      case 0x6c: // LIST
        return this.#push({ kind: "list", items: this.#popMark() });
      case 0x5d: // EMPTY_LIST
        return this.#push({ kind: "list", items: [] });
      case 0x70: // PUT
        return this.#put(Number.parseInt(lineText(op), 10));
      case 0x71: // BINPUT
        return this.#put(op[1]);
      case 0x72: // LONG_BINPUT
        return this.#put(leU32(op, 1));
      case 0x94: // MEMOIZE
        return this.#put(this.#memo.size);
      case 0x73: { // SETITEM
        const value = this.#pop();
        const key = this.#pop();
        this.#setItems(this.#top(), [[key, value]]);
        return;
      }
      case 0x75: { // SETITEMS
        const items = this.#popMark();
        this.#setItems(this.#top(), pairs(items, this.#offset));
        return;
      }
      case 0x74: // TUPLE
        return this.#push({ kind: "tuple", items: this.#popMark() });
      case 0x29: // EMPTY_TUPLE
        return this.#push({ kind: "tuple", items: [] });
      case 0x85:
      case 0x86:
      case 0x87: { // TUPLE1..3
        const n = code - 0x84;
        const items: PickleValue[] = [];
        for (let i = 0; i < n; i++) items.unshift(this.#pop());
        return this.#push({ kind: "tuple", items });
      }
      case 0x47: // BINFLOAT (big-endian)
        return this.#push(new DataView(op.buffer, op.byteOffset + 1, 8).getFloat64(0, false));
      case 0x81: { // NEWOBJ
        const args = this.#pop();
        const cls = this.#pop();
        return this.#push(object(cls, args));
      }
      case 0x92: { // NEWOBJ_EX
        this.#pop(); // kwargs
        const args = this.#pop();
        const cls = this.#pop();
        return this.#push(object(cls, args));
      }
      case 0x82:
        return this.#push({ kind: "ext", code: op[1] });
      case 0x83:
        return this.#push({ kind: "ext", code: op[1] | (op[2] << 8) });
      case 0x84:
        return this.#push({ kind: "ext", code: leU32(op, 1) });
      case 0x88:
        return this.#push(true);
      case 0x89:
        return this.#push(false);
      case 0x8a:
        return this.#push(decodeLong(op.subarray(2)));
      case 0x8b:
        return this.#push(decodeLong(op.subarray(5)));
      case 0x8f: // EMPTY_SET
        return this.#push({ kind: "set", items: [] });
      case 0x90: { // ADDITEMS
        const items = this.#popMark();
        const target = this.#top();
        if (isNode(target) && target.kind === "set") target.items.push(...items);
        return;
      }
      case 0x91: // FROZENSET
        return this.#push({ kind: "set", items: this.#popMark() });
      case 0x93: { // STACK_GLOBAL
        const name = this.#pop();
        const module = this.#pop();
        if (typeof module !== "string" || typeof name !== "string") {
          throw new PickleError(`STACK_GLOBAL needs two strings at offset ${this.#offset}`);
        }
        return this.#push({ kind: "global", module, name });
      }
      case 0x95: // FRAME: a read-ahead hint only
      case 0x98: // READONLY_BUFFER
        return;
      case 0x97: // NEXT_BUFFER
        return this.#push({ kind: "buffer" });
    }
  }

  #persistent(id: PickleValue): void {
    this.#persistentIds.push(id);
    this.#push({ kind: "persistent", id });
  }

  #get(key: number): void {
    if (!this.#memo.has(key)) {
      throw new PickleError(`memo key ${key} read before it was written, at offset ${this.#offset}`);
    }
    this.#stack.push(this.#memo.get(key) as PickleValue);
  }

  #put(key: number): void {
    this.#memo.set(key, this.#top());
  }

  #appendTo(target: PickleValue, items: PickleValue[]): void {
    if (!isNode(target)) return;
    if (target.kind === "list" || target.kind === "object") target.items.push(...items);
  }

  #setItems(target: PickleValue, entries: [PickleValue, PickleValue][]): void {
    if (!isNode(target)) return;
    if (target.kind === "dict" || target.kind === "object") target.entries.push(...entries);
  }
}

function measure(data: Uint8Array, at: number, maxString: number): Measure {
  const code = data[at];
  const spec = OPCODES.get(code);
  if (spec === undefined) return { status: "bad", message: `unknown opcode 0x${code.toString(16).padStart(2, "0")}` };
  const available = data.length - at;
  if (spec === "none") return { status: "op", length: 1 };
  if (spec === "line" || spec === "lines2") {
    const first = data.indexOf(0x0a, at + 1);
    if (first < 0) return { status: "need" };
    if (spec === "line") return { status: "op", length: first - at + 1 };
    const second = data.indexOf(0x0a, first + 1);
    return second < 0 ? { status: "need" } : { status: "op", length: second - at + 1 };
  }
  if ("fixed" in spec) {
    return available < 1 + spec.fixed
      ? { status: "need", missing: 1 + spec.fixed - available }
      : { status: "op", length: 1 + spec.fixed };
  }
  const header = 1 + spec.prefix;
  if (available < header) return { status: "need", missing: header - available };
  const length = spec.prefix === 1
    ? data[at + 1]
    : spec.prefix === 4
    ? leU32(data, at + 1)
    : leU32(data, at + 1) + leU32(data, at + 5) * 2 ** 32;
  if (!Number.isSafeInteger(length)) return { status: "bad", message: `argument length ${length} is not plausible` };
  const type = spec.payload === "long" ? "long" : spec.payload === "bytes" ? "bytes" : "str";
  // Bytes are never needed; long strings and huge integers are measured, not kept.
  if (
    spec.payload === "bytes" || (type === "str" && length > maxString) ||
    (type === "long" && length > MAX_LONG_BYTES)
  ) {
    return { status: "skip", header, payload: length, type };
  }
  return available < header + length
    ? { status: "need", missing: header + length - available }
    : { status: "op", length: header + length };
}

function lineText(op: Uint8Array): string {
  // The argument runs from after the opcode to before the last newline.
  return utf8.decode(op.subarray(1, op.length - 1));
}

function leU32(data: Uint8Array, at: number): number {
  return (data[at] | (data[at + 1] << 8) | (data[at + 2] << 16) | (data[at + 3] << 24)) >>> 0;
}

function parseInteger(text: string, offset: number): number | bigint {
  if (!/^[+-]?\d+$/.test(text.trim())) throw new PickleError(`bad integer ${JSON.stringify(text)} at offset ${offset}`);
  const value = BigInt(text.trim());
  return safeNumber(value);
}

function safeNumber(value: bigint): number | bigint {
  return value >= BigInt(Number.MIN_SAFE_INTEGER) && value <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(value) : value;
}

function decodeLong(data: Uint8Array): number | bigint {
  if (data.length === 0) return 0;
  let value = 0n;
  for (let i = data.length - 1; i >= 0; i--) value = (value << 8n) | BigInt(data[i]);
  if (data[data.length - 1] & 0x80) value -= 1n << BigInt(8 * data.length);
  return safeNumber(value);
}

function pairs(items: PickleValue[], offset: number): [PickleValue, PickleValue][] {
  if (items.length % 2 !== 0) throw new PickleError(`odd number of items for a dict at offset ${offset}`);
  const out: [PickleValue, PickleValue][] = [];
  for (let i = 0; i < items.length; i += 2) out.push([items[i], items[i + 1]]);
  return out;
}

function object(callable: PickleValue, args: PickleValue): PickleObject {
  return { kind: "object", callable, args, items: [], entries: [] };
}

/**
 * Tells whether a value is a node (tuple, dict, object …) rather than a scalar.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { isNode } from "./pickle.ts";
 * assert.ok(isNode({ kind: "list", items: [] }));
 * assert.ok(!isNode("list"));
 * ```
 */
export function isNode(value: PickleValue | undefined): value is PickleNode {
  return typeof value === "object" && value !== null;
}

/**
 * The key/value entries of a dict, or of an object that holds entries
 * (an `OrderedDict` rebuilt by `REDUCE` then `SETITEMS`), or of the dict state
 * `BUILD` gave an object (a dataclass); `[]` for anything else.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { entriesOf } from "./pickle.ts";
 * assert.deepEqual(entriesOf({ kind: "dict", entries: [["a", 1]] }), [["a", 1]]);
 * assert.deepEqual(entriesOf(7), []);
 * ```
 */
export function entriesOf(value: PickleValue | undefined): [PickleValue, PickleValue][] {
  if (!isNode(value)) return [];
  if (value.kind === "dict") return value.entries;
  if (value.kind !== "object") return [];
  if (value.entries.length > 0) return value.entries;
  const state = value.state;
  if (isNode(state) && state.kind === "dict") return state.entries;
  // A class with __slots__ pickles its state as (dict or None, slots dict).
  if (isNode(state) && state.kind === "tuple" && state.items.length === 2) {
    return [...entriesOf(state.items[0]), ...entriesOf(state.items[1])];
  }
  return [];
}

/**
 * Visits every value reachable from `root` once (pickles can share values
 * through the memo), depth first.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { walkValues } from "./pickle.ts";
 * const seen: unknown[] = [];
 * walkValues({ kind: "list", items: ["a", { kind: "tuple", items: [1] }] }, (v) => void seen.push(v));
 * assert.equal(seen.length, 4);
 * ```
 */
export function walkValues(root: PickleValue | undefined, visit: (value: PickleValue) => void): void {
  if (root === undefined) return;
  const seen = new Set<PickleNode>();
  const todo: PickleValue[] = [root];
  while (todo.length > 0) {
    const value = todo.pop() as PickleValue;
    if (isNode(value)) {
      if (seen.has(value)) continue;
      seen.add(value);
    }
    visit(value);
    if (!isNode(value)) continue;
    switch (value.kind) {
      case "tuple":
      case "list":
      case "set":
        todo.push(...value.items);
        break;
      case "dict":
        for (const [k, v] of value.entries) todo.push(k, v);
        break;
      case "object":
        todo.push(value.callable, value.args, ...value.items);
        if (value.state !== undefined) todo.push(value.state);
        for (const [k, v] of value.entries) todo.push(k, v);
        break;
      case "persistent":
        todo.push(value.id);
        break;
    }
  }
}
