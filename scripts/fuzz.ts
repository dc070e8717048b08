/**
 * Fuzzes the two parsers of untrusted text: `parseManifest` (a checkpoint's
 * manifest) and `parseConfig` (the YAML config). Inputs are random or
 * mutated valid documents (byte flips, truncations, inserted JSON or YAML
 * tokens, duplicated keys, wrong types, prototype-named keys, deep nesting,
 * alias bombs), each derived from (seed, target, trial) alone, so any input is
 * reproducible on its own.
 *
 * Rules: `parseManifest` never throws (it returns problems); `parseConfig`
 * returns a config or throws a `CkptkitError` with reason `config_invalid`,
 * nothing else; no input takes longer than `--timeout-ms`. Inputs run in a
 * worker watched by the main thread, so an input that never returns is
 * counted as a hang and the run goes on with the next one.
 *
 * ```sh
 * deno run -A scripts/fuzz.ts --trials 100000 [--seed 1] [--target all|manifest|config] [--timeout-ms 2000]
 * deno run -A scripts/fuzz.ts --target manifest --seed 1 --start 17 --trials 1 --show   # one input
 * deno run -A scripts/fuzz.ts --trials 10000 --dump /tmp/fuzz-crashes                  # save failing inputs
 * ```
 *
 * Prints `fuzz: N inputs, C crashes, H hangs` (plus a line per target and the
 * first failures) and exits 1 when anything crashed or hung.
 *
 * @module
 */

import { parseArgs } from "node:util";
import process from "node:process";
import { stringify as yamlStringify } from "yaml";
import { parseConfig } from "../src/core/config.ts";
import { CkptkitError } from "../src/errors.ts";
import { createManifest, manifestDigest, parseManifest } from "../src/core/manifest.ts";

/** What is fuzzed. */
export type Target = "manifest" | "config";
/** Both targets. */
export const TARGETS: readonly Target[] = ["manifest", "config"];

/** One generated input. */
export interface FuzzInput {
  target: Target;
  trial: number;
  /** The generator that made it. */
  family: string;
  text: string;
}

/** An input that broke a rule. */
export interface FuzzFailure {
  target: Target;
  trial: number;
  family: string;
  kind: "crash" | "hang";
  /** The error (crash) or the time taken (hang). */
  detail: string;
  /** Milliseconds the input took (for a hang killed by the watchdog: at least the timeout). */
  ms: number;
  /** The start of the input, JSON-escaped. */
  preview: string;
  /** The whole input, when asked for (`keepInputs`). */
  text?: string;
}

/** Totals of a run. */
export interface FuzzSummary {
  seed: number;
  inputs: number;
  crashes: number;
  hangs: number;
  /** Inputs per target and family. */
  families: Record<string, number>;
  failures: FuzzFailure[];
  seconds: number;
  /** The slowest input that finished, in ms. */
  slowestMs: number;
}

// ---------------------------------------------------------------------------
// Reproducible randomness
// ---------------------------------------------------------------------------

function mix(x: number): number {
  x = Math.imul(x ^ (x >>> 16), 0x7feb352d);
  x = Math.imul(x ^ (x >>> 15), 0x846ca68b);
  return (x ^ (x >>> 16)) >>> 0;
}

/** A small seeded PRNG (sfc32). */
export class Rng {
  #a: number;
  #b: number;
  #c: number;
  #d: number;

  constructor(...seeds: number[]) {
    let h = 0x9e3779b9;
    for (const s of seeds) h = mix(h ^ mix(s >>> 0) ^ mix(Math.floor(s / 2 ** 32)));
    this.#a = mix(h ^ 1);
    this.#b = mix(h ^ 2);
    this.#c = mix(h ^ 3);
    this.#d = mix(h ^ 4);
    for (let i = 0; i < 12; i++) this.next();
  }

  /** A float in [0, 1). */
  next(): number {
    const t = (((this.#a + this.#b) >>> 0) + this.#d) >>> 0;
    this.#d = (this.#d + 1) >>> 0;
    this.#a = this.#b ^ (this.#b >>> 9);
    this.#b = (this.#c + (this.#c << 3)) >>> 0;
    this.#c = ((this.#c << 21) | (this.#c >>> 11)) >>> 0;
    this.#c = (this.#c + t) >>> 0;
    return t / 2 ** 32;
  }

  /** An integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }

  /** An integer in [lo, hi], log-uniform (small values as likely as big ranges). */
  logInt(lo: number, hi: number): number {
    return Math.min(hi, Math.floor(Math.exp(Math.log(lo) + this.next() * (Math.log(hi + 1) - Math.log(lo)))));
  }

  chance(p: number): boolean {
    return this.next() < p;
  }

  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)];
  }
}

// ---------------------------------------------------------------------------
// Dictionaries
// ---------------------------------------------------------------------------

const PROTO_KEYS = ["__proto__", "constructor", "prototype", "toString", "valueOf", "toJSON", "hasOwnProperty"];

const JSON_TOKENS = [
  "{",
  "}",
  "[",
  "]",
  ",",
  ":",
  '"',
  "\\",
  "null",
  "true",
  "false",
  "-0",
  "-1",
  "1e309",
  "-1e309",
  "9007199254740993",
  "1.5",
  "NaN",
  "Infinity",
  "0x10",
  '"\\u0000"',
  '"\\ud800"',
  '"../../etc/passwd"',
  '"/etc/passwd"',
  '{"toString":1}',
  '{"valueOf":{}}',
  '{"__proto__":{"path":"x"}}',
  '{"toJSON":null}',
  "[[[[[[[[",
  "]]]]]]]]",
  '"format_version":2,',
  '"step":"NaN",',
  '"files":[],',
  '"a":',
  "\u0000",
  "\uFEFF",
  "\u2028",
  "//",
  "/*",
  "'",
];

const YAML_TOKENS = [
  ": ",
  "- ",
  "? ",
  "{",
  "}",
  "[",
  "]",
  ",",
  "&a ",
  "*a",
  "<<: *a",
  "!!binary ",
  "!!set ",
  "!!omap ",
  "!!timestamp ",
  "!!int ",
  "!!float ",
  "!!str ",
  "!!map ",
  "!!seq ",
  "!!js/function ",
  "!custom ",
  "!<tag:yaml.org,2002:str> ",
  "---\n",
  "...\n",
  "%YAML 1.2\n",
  "%TAG ! tag:x,2000:\n",
  "|\n",
  ">-\n",
  '"',
  "'",
  "#",
  "\t",
  "\n",
  "\n  ",
  "~",
  ".inf",
  "-.inf",
  ".nan",
  "0x1F",
  "0o17",
  "1e999",
  "123456789012345678901234567890",
  "toString: 1\n",
  "__proto__: {}\n",
  "constructor: x\n",
  "root: ",
  "hashing:\n  jobs: ",
  "\u0000",
  "\uFEFF",
  "\u0085",
];

const HOSTILE_PATHS = [
  "../x",
  "../../etc/passwd",
  "/etc/passwd",
  "a/../../b",
  "./a",
  "a//b",
  "a/",
  "",
  ".",
  "..",
  "a\\b",
  "C:/x",
  "c:\\x",
  "a\u0000b",
  "caf\u00e9.bin",
  "cafe\u0301.bin",
  "\ud800.bin",
  "line\nbreak",
  "ckptkit.manifest.json",
  "x".repeat(5000),
  "a/".repeat(3000) + "b",
  "model.pt",
];

const NUMBERS = [
  0,
  -0,
  1,
  -1,
  0.5,
  1e308,
  -1e308,
  2 ** 53,
  2 ** 53 + 2,
  2 ** 60,
  Number.MAX_SAFE_INTEGER,
  Number.MIN_SAFE_INTEGER,
  Number.MAX_VALUE,
  Number.MIN_VALUE,
  4294967296,
];

const STRINGS = [
  "",
  "NaN",
  "Infinity",
  "-1",
  "1",
  "2",
  "sha256",
  "xxh128",
  "ckptkit.manifest",
  "2026-01-01T00:00:00Z",
  "not-a-date",
  "0".repeat(64),
  "G".repeat(64),
  "sha256:" + "0".repeat(64),
  "\u0000",
  "\ud800",
  "x".repeat(10000),
  ...HOSTILE_PATHS.slice(0, 6),
];

const MANIFEST_KEYS = [
  "format",
  "format_version",
  "job_id",
  "run_id",
  "step",
  "created_at",
  "write_duration_s",
  "writer",
  "hash",
  "files",
  "total_bytes",
  "metadata",
  "manifest_digest",
  "path",
  "size",
  "digest",
  "samples",
  "offset",
  "length",
  "algorithm",
  "sample_bytes",
];

const CONFIG_KEYS = [
  "root",
  "job_id",
  "run_id",
  "log_level",
  "lock_timeout_s",
  "hashing",
  "algorithm",
  "sample_bytes",
  "jobs",
  "retention",
  "keep_last",
  "keep_every",
  "metrics",
  "textfile",
  "pushgateway",
];

// ---------------------------------------------------------------------------
// Values and documents
// ---------------------------------------------------------------------------

/** Sets an own property, even for `__proto__`. */
function setOwn(target: Record<string, unknown>, key: string, value: unknown): void {
  Object.defineProperty(target, key, { value, enumerable: true, writable: true, configurable: true });
}

function randomString(rng: Rng, maxLength = 40): string {
  const length = rng.logInt(1, maxLength + 1) - 1;
  let out = "";
  for (let i = 0; i < length; i++) {
    const kind = rng.int(10);
    out += kind < 5
      ? String.fromCharCode(32 + rng.int(95))
      : kind < 7
      ? String.fromCharCode(rng.int(32))
      : kind < 9
      ? String.fromCharCode(rng.int(0x3000))
      : String.fromCharCode(0xd800 + rng.int(0x800));
  }
  return out;
}

function randomValue(rng: Rng, keys: readonly string[], depth = 0): unknown {
  const kind = rng.int(depth > 4 ? 6 : 9);
  switch (kind) {
    case 0:
      return null;
    case 1:
      return rng.chance(0.5);
    case 2:
      return rng.pick(NUMBERS);
    case 3:
      return rng.int(1000) - 10;
    case 4:
      return rng.pick(STRINGS);
    case 5:
      return randomString(rng);
    case 6:
    case 7: {
      const out: Record<string, unknown> = {};
      for (let i = rng.int(5); i > 0; i--) {
        const key = rng.chance(0.2) ? rng.pick(PROTO_KEYS) : rng.chance(0.7) ? rng.pick(keys) : randomString(rng, 8);
        setOwn(out, key, randomValue(rng, keys, depth + 1));
      }
      return out;
    }
    default:
      return Array.from({ length: rng.int(5) }, () => randomValue(rng, keys, depth + 1));
  }
}

/** A random path to a value inside `root` (objects and arrays), with its parent. */
function randomSlot(rng: Rng, root: unknown): { parent: Record<string, unknown> | unknown[]; key: string | number } {
  let parent = root as Record<string, unknown> | unknown[];
  let key: string | number = Array.isArray(parent) ? rng.int(parent.length + 1) : rng.pick(Object.keys(parent));
  for (let depth = 0; depth < 8; depth++) {
    const child = (parent as Record<string | number, unknown>)[key];
    if (!child || typeof child !== "object" || rng.chance(0.35)) break;
    const childKeys = Array.isArray(child) ? child.map((_, i) => i) : Object.keys(child);
    if (childKeys.length === 0) break;
    parent = child as Record<string, unknown> | unknown[];
    key = rng.pick(childKeys as (string | number)[]);
  }
  return { parent, key };
}

function put(slot: { parent: Record<string, unknown> | unknown[]; key: string | number }, value: unknown): void {
  if (Array.isArray(slot.parent)) slot.parent[slot.key as number] = value;
  else setOwn(slot.parent, String(slot.key), value);
}

function nested(rng: Rng, depth: number): string {
  switch (rng.int(4)) {
    case 0:
      return "[".repeat(depth) + "]".repeat(depth);
    case 1:
      return '{"a":'.repeat(depth) + "1" + "}".repeat(depth);
    case 2:
      return '[{"a":'.repeat(depth) + "0" + "}]".repeat(depth);
    default:
      return "[".repeat(depth); // unbalanced
  }
}

function insertAt(text: string, at: number, piece: string): string {
  return text.slice(0, at) + piece + text.slice(at);
}

function flipBytes(rng: Rng, text: string): string {
  const bytes = new TextEncoder().encode(text);
  for (let i = rng.logInt(1, 16); i > 0 && bytes.length; i--) {
    const at = rng.int(bytes.length);
    bytes[at] = rng.chance(0.5) ? bytes[at] ^ (1 << rng.int(8)) : rng.int(256);
  }
  return new TextDecoder().decode(bytes);
}

function tokenSoup(rng: Rng, tokens: readonly string[]): string {
  let out = "";
  for (let i = rng.logInt(1, 300); i > 0; i--) out += rng.pick(tokens) + (rng.chance(0.2) ? " " : "");
  return out;
}

/** Serialises an object as JSON text, repeating some keys with other values (the last one wins in JSON.parse). */
function withDuplicateKeys(rng: Rng, value: unknown, keys: readonly string[]): string {
  if (Array.isArray(value)) return "[" + value.map((v) => withDuplicateKeys(rng, v, keys)).join(",") + "]";
  if (!value || typeof value !== "object") return JSON.stringify(value) ?? "null";
  const parts: string[] = [];
  for (const [key, child] of Object.entries(value)) {
    const own = `${JSON.stringify(key)}:${withDuplicateKeys(rng, child, keys)}`;
    const dup = `${JSON.stringify(key)}:${JSON.stringify(randomValue(rng, keys, 3)) ?? "null"}`;
    if (rng.chance(0.15)) parts.push(...(rng.chance(0.5) ? [dup, own] : [own, dup]));
    else parts.push(own);
  }
  return "{" + parts.join(",") + "}";
}

// ---------------------------------------------------------------------------
// Manifest inputs
// ---------------------------------------------------------------------------

const baseManifest = await createManifest({
  job_id: "job",
  run_id: "run",
  step: 10,
  created_at: "2026-01-01T00:00:00.000Z",
  write_duration_s: 1.5,
  writer: { host: "node1", ckptkit_version: "0.1.0" },
  hash: { algorithm: "sha256", sample_bytes: 4 },
  files: [
    {
      path: "b/model.pt",
      size: 8,
      digest: "a".repeat(64),
      samples: [{ offset: 0, length: 4, digest: "b".repeat(64) }, { offset: 4, length: 4, digest: "c".repeat(64) }],
    },
    { path: "a.json", size: 2, digest: "d".repeat(64), samples: [{ offset: 0, length: 2, digest: "e".repeat(64) }] },
  ],
  metadata: { lr: 0.1, tags: ["a", "b"] },
});
const MANIFEST_PRETTY = JSON.stringify(baseManifest, null, 2) + "\n";
const MANIFEST_COMPACT = JSON.stringify(baseManifest);

function manifestRaw(): Record<string, unknown> {
  return JSON.parse(MANIFEST_COMPACT);
}

/** Re-signs like an attacker (sometimes), so mutations get past the self-digest; too deep to sign is fine. */
async function maybeSign(rng: Rng, raw: Record<string, unknown>): Promise<void> {
  if (!rng.chance(0.7)) return;
  try {
    raw.manifest_digest = await manifestDigest(raw);
  } catch {
    // unsignable (too deep, not JSON): left with a stale digest
  }
}

type Generator = (rng: Rng) => string | Promise<string>;

const MANIFEST_FAMILIES: Record<string, Generator> = {
  "byte-flip": (rng) => flipBytes(rng, rng.pick([MANIFEST_PRETTY, MANIFEST_COMPACT])),
  "truncate": (rng) => {
    const text = rng.pick([MANIFEST_PRETTY, MANIFEST_COMPACT]);
    return text.slice(0, rng.int(text.length));
  },
  "insert-token": (rng) => {
    let text = rng.pick([MANIFEST_PRETTY, MANIFEST_COMPACT]);
    for (let i = rng.logInt(1, 6); i > 0; i--) text = insertAt(text, rng.int(text.length + 1), rng.pick(JSON_TOKENS));
    return text;
  },
  "delete-range": (rng) => {
    const text = MANIFEST_COMPACT;
    const at = rng.int(text.length);
    return text.slice(0, at) + text.slice(at + rng.logInt(1, 200));
  },
  "duplicate-key": async (rng) => {
    const raw = manifestRaw();
    await maybeSign(rng, raw);
    return withDuplicateKeys(rng, raw, MANIFEST_KEYS);
  },
  "mutate-value": async (rng) => {
    const raw = manifestRaw();
    for (let i = rng.logInt(1, 4); i > 0; i--) put(randomSlot(rng, raw), randomValue(rng, MANIFEST_KEYS));
    await maybeSign(rng, raw);
    return JSON.stringify(raw);
  },
  "mutate-files": async (rng) => {
    const raw = manifestRaw();
    const files = raw.files as Record<string, unknown>[];
    for (let i = rng.logInt(1, 4); i > 0; i--) {
      const file = rng.chance(0.3) ? (files[files.length] = { ...files[0] }) : rng.pick(files);
      switch (rng.int(6)) {
        case 0:
          file.path = rng.pick(HOSTILE_PATHS);
          break;
        case 1:
          // Non-strings, often objects whose own keys shadow Object.prototype (toString, valueOf…).
          file.path = rng.chance(0.5)
            ? Object.fromEntries([[rng.pick(PROTO_KEYS), randomValue(rng, MANIFEST_KEYS, 4)]])
            : randomValue(rng, MANIFEST_KEYS);
          break;
        case 2:
          file.size = rng.chance(0.5) ? rng.pick(NUMBERS) : rng.pick(STRINGS);
          break;
        case 3:
          file.samples = Array.from({ length: rng.logInt(1, 3000) - 1 }, () => ({
            offset: rng.chance(0.8) ? rng.int(10) : rng.pick(NUMBERS),
            length: rng.chance(0.8) ? rng.int(10) : rng.pick(NUMBERS),
            digest: rng.pick(["0".repeat(64), "0".repeat(16), "nothex"]),
          }));
          break;
        case 4:
          setOwn(file, rng.pick(PROTO_KEYS), randomValue(rng, MANIFEST_KEYS));
          break;
        default:
          files.push(
            ...Array.from({ length: rng.logInt(1, 5000) }, (_, j) => ({ ...files[0], path: `f${j}`, samples: [] })),
          );
      }
    }
    await maybeSign(rng, raw);
    return JSON.stringify(raw);
  },
  "prototype-keys": async (rng) => {
    const raw = manifestRaw();
    for (let i = rng.logInt(1, 4); i > 0; i--) {
      const slot = randomSlot(rng, raw);
      const target = (slot.parent as Record<string | number, unknown>)[slot.key];
      const host = target && typeof target === "object" && !Array.isArray(target)
        ? target as Record<string, unknown>
        : raw;
      setOwn(host, rng.pick(PROTO_KEYS), rng.chance(0.5) ? { toString: 1, valueOf: {} } : randomValue(rng, []));
    }
    await maybeSign(rng, raw);
    return JSON.stringify(raw);
  },
  "deep-nesting": async (rng) => {
    const depth = rng.chance(0.02) ? 200_000 : rng.logInt(2, 50_000);
    if (rng.chance(0.2)) return nested(rng, depth);
    const raw = manifestRaw();
    // Where the schema lets any value through (metadata, unknown keys) the nesting reaches the digest.
    const where = rng.int(5);
    if (where === 0) (raw.metadata as Record<string, unknown>).deep = "@NESTED@";
    else if (where === 1) raw[`x_${rng.int(100)}`] = "@NESTED@";
    else put(randomSlot(rng, raw), "@NESTED@");
    await maybeSign(rng, raw);
    return JSON.stringify(raw).replace('"@NESTED@"', nested(rng, depth));
  },
  "random-text": (rng) => randomString(rng, 3000),
  "token-soup": (rng) => tokenSoup(rng, JSON_TOKENS),
};

// ---------------------------------------------------------------------------
// Config inputs
// ---------------------------------------------------------------------------

const CONFIG_BASE = `root: /tmp/ckpts
job_id: llama
log_level: info
lock_timeout_s: 60
hashing:
  algorithm: sha256
  sample_bytes: 65536
  jobs: 4
retention:
  keep_last: 3
  keep_every: 1000
metrics:
  textfile: /var/lib/node_exporter/ckptkit.prom
  pushgateway: http://pushgateway:9091/metrics
`;
const CONFIG_LINES = CONFIG_BASE.trimEnd().split("\n");

function aliasBomb(rng: Rng): string {
  const levels = rng.logInt(2, 12);
  const width = rng.logInt(2, 12);
  const lines = [`a0: &a0 [${Array(width).fill('"lol"').join(", ")}]`];
  for (let i = 1; i < levels; i++) lines.push(`a${i}: &a${i} [${Array(width).fill(`*a${i - 1}`).join(", ")}]`);
  lines.push(`${rng.pick(["root", "hashing", "retention", "zz"])}: *a${levels - 1}`);
  return lines.join("\n") + "\n";
}

function deepYaml(rng: Rng, depth: number): string {
  switch (rng.int(4)) {
    case 0:
      return "root: " + "[".repeat(depth) + "]".repeat(depth);
    case 1:
      return "hashing: " + "{a: ".repeat(depth) + "1" + "}".repeat(depth);
    case 2: {
      const levels = Math.min(depth, 1000); // block nesting costs depth² characters
      return "retention:\n" + Array.from({ length: levels }, (_, i) => " ".repeat(i + 1) + "- ").join("\n") + "x\n";
    }
    default:
      return "[".repeat(depth);
  }
}

const CONFIG_FAMILIES: Record<string, Generator> = {
  "byte-flip": (rng) => flipBytes(rng, CONFIG_BASE),
  "truncate": (rng) => CONFIG_BASE.slice(0, rng.int(CONFIG_BASE.length)),
  "insert-token": (rng) => {
    let text = CONFIG_BASE;
    for (let i = rng.logInt(1, 6); i > 0; i--) text = insertAt(text, rng.int(text.length + 1), rng.pick(YAML_TOKENS));
    return text;
  },
  "duplicate-key": (rng) => {
    const lines = [...CONFIG_LINES];
    for (let i = rng.logInt(1, 4); i > 0; i--) {
      const at = rng.int(lines.length);
      const line = rng.chance(0.6)
        ? lines[at]
        : `${" ".repeat(rng.pick([0, 2, 4]))}${rng.pick(CONFIG_KEYS)}: ${
          JSON.stringify(randomValue(rng, CONFIG_KEYS, 3))
        }`;
      lines.splice(rng.int(lines.length + 1), 0, line);
    }
    return lines.join("\n") + "\n";
  },
  "mutate-structure": (rng) => {
    const doc: Record<string, unknown> = {};
    for (let i = rng.logInt(1, 8); i > 0; i--) {
      const key = rng.chance(0.1) ? rng.pick(PROTO_KEYS) : rng.pick(CONFIG_KEYS);
      setOwn(doc, key, rng.chance(0.3) ? randomValue(rng, CONFIG_KEYS) : randomValue(rng, CONFIG_KEYS, 4));
    }
    if (rng.chance(0.3)) return JSON.stringify(doc) ?? "null";
    try {
      return yamlStringify(doc);
    } catch {
      return JSON.stringify(doc) ?? "null";
    }
  },
  "deep-nesting": (rng) => deepYaml(rng, rng.chance(0.02) ? 50_000 : rng.logInt(2, 20_000)),
  "alias-bomb": aliasBomb,
  "tags": (rng) => {
    const lines = [...CONFIG_LINES];
    for (let i = rng.logInt(1, 4); i > 0; i--) {
      const at = rng.int(lines.length);
      const colon = lines[at].indexOf(": ");
      if (colon > 0) {
        lines[at] = lines[at].slice(0, colon + 2) + rng.pick(YAML_TOKENS.filter((t) => t.startsWith("!"))) +
          lines[at].slice(colon + 2);
      }
    }
    return lines.join("\n") + "\n";
  },
  "random-text": (rng) => randomString(rng, 3000),
  "token-soup": (rng) => tokenSoup(rng, YAML_TOKENS),
};

const FAMILIES: Record<Target, Record<string, Generator>> = { manifest: MANIFEST_FAMILIES, config: CONFIG_FAMILIES };

/** Which family makes input `trial` of `target` (cheap: the first draw of its PRNG). */
export function familyOf(seed: number, target: Target, trial: number): string {
  return new Rng(seed, TARGETS.indexOf(target), trial).pick(Object.keys(FAMILIES[target]));
}

/** Makes input `trial` of `target`: the same for the same seed, every time. */
export async function makeInput(seed: number, target: Target, trial: number): Promise<FuzzInput> {
  const rng = new Rng(seed, TARGETS.indexOf(target), trial);
  const family = rng.pick(Object.keys(FAMILIES[target]));
  return { target, trial, family, text: await FAMILIES[target][family](rng) };
}

/** Runs one input; returns the error message when it broke the rules, otherwise undefined. */
export async function check(input: FuzzInput): Promise<string | undefined> {
  if (input.target === "manifest") {
    try {
      const parsed = await parseManifest(input.text);
      if (!Array.isArray(parsed.problems)) return "parseManifest returned no problems array";
      return undefined;
    } catch (err) {
      return `parseManifest threw ${describe(err)}`;
    }
  }
  try {
    parseConfig(input.text, "fuzz.yaml");
    return undefined;
  } catch (err) {
    if (err instanceof CkptkitError && err.reason === "config_invalid") return undefined;
    return `parseConfig threw ${describe(err)}`;
  }
}

function describe(err: unknown): string {
  if (err instanceof CkptkitError) return `CkptkitError(${err.reason}): ${err.message.slice(0, 200)}`;
  if (err instanceof Error) return `${err.name}: ${err.message.slice(0, 200)}`;
  return String(err).slice(0, 200);
}

function preview(text: string): string {
  return JSON.stringify(text.length > 160 ? text.slice(0, 160) + "…" : text) + ` (${text.length} chars)`;
}

// ---------------------------------------------------------------------------
// Running in a watched worker
// ---------------------------------------------------------------------------

/** Options for {@linkcode fuzz}. */
export interface FuzzOptions {
  seed: number;
  /** Inputs in all. */
  trials: number;
  /** Targets (default both; trials alternate between them). */
  targets?: readonly Target[];
  /** First trial number (default 0), to replay one input. */
  start?: number;
  /** An input slower than this is a hang (default 2000 ms). */
  timeoutMs?: number;
  /** Keep the whole text of failing inputs in the summary. */
  keepInputs?: boolean;
  /** Called every few seconds with the number of inputs done. */
  onProgress?: (done: number) => void;
}

interface WorkerStart {
  seed: number;
  targets: Target[];
  from: number;
  to: number;
  keepInputs: boolean;
  timeoutMs: number;
  progress: SharedArrayBuffer;
}

type WorkerMessage =
  | { type: "ready" }
  | { type: "failure"; failure: FuzzFailure }
  | { type: "slowest"; ms: number }
  | { type: "finished" };

/** Which target and trial number the i-th input of a run is. */
function inputAt(targets: readonly Target[], index: number): { target: Target; trial: number } {
  return { target: targets[index % targets.length], trial: Math.floor(index / targets.length) };
}

/**
 * Runs `trials` inputs in a worker, watched by this thread: an input that
 * runs past `timeoutMs` is a hang; the worker is then replaced and the run
 * goes on with the next input.
 */
export async function fuzz(options: FuzzOptions): Promise<FuzzSummary> {
  const targets = [...(options.targets ?? TARGETS)];
  const timeoutMs = options.timeoutMs ?? 2000;
  const first = (options.start ?? 0) * targets.length;
  const last = first + options.trials;
  const started = performance.now();
  const summary: FuzzSummary = {
    seed: options.seed,
    inputs: options.trials,
    crashes: 0,
    hangs: 0,
    families: {},
    failures: [],
    seconds: 0,
    slowestMs: 0,
  };
  for (let i = first; i < last; i++) {
    const { target, trial } = inputAt(targets, i);
    const key = `${target}/${familyOf(options.seed, target, trial)}`;
    summary.families[key] = (summary.families[key] ?? 0) + 1;
  }
  let from = first;
  while (from < last) {
    // [0]: index of the input running, [1]: Date.now() when it started, [2]: inputs finished.
    const progress = new SharedArrayBuffer(3 * Float64Array.BYTES_PER_ELEMENT);
    const shared = new Float64Array(progress);
    shared[0] = from;
    shared[1] = Date.now();
    const worker = new Worker(import.meta.url, { type: "module" });
    const outcome = await new Promise<"finished" | "hang">((resolve, reject) => {
      let lastReport = Date.now();
      const timer = setInterval(() => {
        if (options.onProgress && Date.now() - lastReport > 5000) {
          lastReport = Date.now();
          options.onProgress(shared[0] - first);
        }
        // Generous while the worker loads its modules, strict afterwards.
        const limit = shared[2] === 0 && shared[0] === from ? timeoutMs + 15_000 : timeoutMs;
        if (Date.now() - shared[1] > limit) {
          clearInterval(timer);
          resolve("hang");
        }
      }, 100);
      worker.onmessage = (event: MessageEvent<WorkerMessage>) => {
        const message = event.data;
        if (message.type === "ready") {
          // Sent once the module (and its top-level await) has loaded: a message posted earlier is lost.
          const start: WorkerStart = {
            seed: options.seed,
            targets,
            from,
            to: last,
            keepInputs: !!options.keepInputs,
            timeoutMs,
            progress,
          };
          worker.postMessage(start);
        } else if (message.type === "failure") {
          summary.failures.push(message.failure);
          if (message.failure.kind === "crash") summary.crashes++;
          else summary.hangs++;
        } else if (message.type === "slowest") {
          summary.slowestMs = Math.max(summary.slowestMs, message.ms);
        } else {
          clearInterval(timer);
          resolve("finished");
        }
      };
      worker.onerror = (event) => {
        clearInterval(timer);
        event.preventDefault();
        reject(new Error(`fuzz worker failed: ${event.message}`));
      };
    }).finally(() => worker.terminate());
    if (outcome === "finished") break;
    const stuck = shared[0];
    const { target, trial } = inputAt(targets, stuck);
    const input = await makeInput(options.seed, target, trial);
    summary.hangs++;
    summary.failures.push({
      target,
      trial,
      family: input.family,
      kind: "hang",
      detail: `still running after ${timeoutMs} ms; the worker was terminated`,
      ms: Date.now() - shared[1],
      preview: preview(input.text),
      ...(options.keepInputs ? { text: input.text } : {}),
    });
    from = stuck + 1;
  }
  summary.seconds = (performance.now() - started) / 1000;
  return summary;
}

/** The worker's global scope (this module is typed for the main thread). */
const workerScope = globalThis as unknown as {
  postMessage(message: WorkerMessage): void;
  onmessage: ((event: MessageEvent<WorkerStart>) => void) | null;
};

async function workerMain(start: WorkerStart): Promise<void> {
  // yaml reports unresolved tags through process.emitWarning: thousands of stderr lines in a fuzz run.
  process.emitWarning = () => {};
  const shared = new Float64Array(start.progress);
  let slowest = 0;
  for (let i = start.from; i < start.to; i++) {
    const { target, trial } = inputAt(start.targets, i);
    shared[0] = i;
    // Making the input is not what is measured: a minute of grace, then the clock starts for the parser.
    shared[1] = Date.now() + 60_000;
    const t0 = performance.now();
    const input = await makeInput(start.seed, target, trial);
    const genMs = performance.now() - t0;
    shared[1] = Date.now();
    const t1 = performance.now();
    const error = await check(input);
    const ms = performance.now() - t1;
    slowest = Math.max(slowest, ms);
    shared[2]++;
    const failure = (kind: "crash" | "hang", detail: string): FuzzFailure => ({
      target,
      trial,
      family: input.family,
      kind,
      detail,
      ms,
      preview: preview(input.text),
      ...(start.keepInputs ? { text: input.text } : {}),
    });
    if (error) workerScope.postMessage({ type: "failure", failure: failure("crash", error) } satisfies WorkerMessage);
    else if (ms > start.timeoutMs) {
      workerScope.postMessage(
        {
          type: "failure",
          failure: failure("hang", `took ${Math.round(ms)} ms (generating it: ${Math.round(genMs)} ms)`),
        } satisfies WorkerMessage,
      );
    }
  }
  workerScope.postMessage({ type: "slowest", ms: slowest } satisfies WorkerMessage);
  workerScope.postMessage({ type: "finished" } satisfies WorkerMessage);
}

const IN_WORKER = typeof (globalThis as { WorkerGlobalScope?: unknown }).WorkerGlobalScope !== "undefined";
if (IN_WORKER) {
  workerScope.onmessage = (event: MessageEvent<WorkerStart>) => void workerMain(event.data);
  workerScope.postMessage({ type: "ready" });
}

// ---------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------

/** The figures line: `fuzz: N inputs, C crashes, H hangs`. */
export function figures(summary: FuzzSummary): string {
  return `fuzz: ${summary.inputs} inputs, ${summary.crashes} crashes, ${summary.hangs} hangs`;
}

/** A human report of a run: figures, per target and family, the first failures and how to replay them. */
export function report(summary: FuzzSummary, targets: readonly Target[], limit = 10): string {
  const lines = [figures(summary)];
  lines.push(
    `seed ${summary.seed}, ${summary.seconds.toFixed(1)} s, ` +
      `${Math.round(summary.inputs / Math.max(summary.seconds, 0.001))} inputs/s, slowest finished input ` +
      `${Math.round(summary.slowestMs)} ms`,
  );
  for (const target of targets) {
    const entries = Object.entries(summary.families).filter(([k]) => k.startsWith(`${target}/`));
    const total = entries.reduce((sum, [, n]) => sum + n, 0);
    const failed = summary.failures.filter((f) => f.target === target);
    lines.push(
      `${target}: ${total} inputs, ${failed.filter((f) => f.kind === "crash").length} crashes, ` +
        `${failed.filter((f) => f.kind === "hang").length} hangs (` +
        entries.map(([k, n]) => `${k.slice(target.length + 1)} ${n}`).join(", ") + ")",
    );
  }
  const signatures = new Map<string, FuzzFailure[]>();
  for (const failure of summary.failures) {
    const signature = `${failure.target} ${failure.kind}: ${failure.detail.replace(/\d+/g, "N").slice(0, 120)}`;
    signatures.set(signature, [...(signatures.get(signature) ?? []), failure]);
  }
  for (const [signature, failures] of [...signatures].slice(0, limit)) {
    const f = failures[0];
    lines.push(
      `${failures.length} × ${signature}`,
      `    first: trial ${f.trial} (${f.family}): ${f.detail}`,
      `    input: ${f.preview}`,
      `    replay: deno run -A scripts/fuzz.ts --target ${f.target} --seed ${summary.seed} --start ${f.trial} ` +
        `--trials 1 --show`,
    );
  }
  return lines.join("\n");
}

async function cli(): Promise<number> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      trials: { type: "string", default: "10000" },
      seed: { type: "string" },
      target: { type: "string", default: "all" },
      start: { type: "string", default: "0" },
      "timeout-ms": { type: "string", default: "2000" },
      show: { type: "boolean", default: false },
      dump: { type: "string" },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) {
    console.log(
      "Usage: deno run -A scripts/fuzz.ts [--trials N] [--seed S] [--target all|manifest|config] " +
        "[--start T] [--timeout-ms MS] [--show] [--dump DIR]",
    );
    return 0;
  }
  const targets = values.target === "all" ? TARGETS : [values.target as Target];
  if (!targets.every((t) => TARGETS.includes(t))) throw new Error(`--target: expected all, manifest or config`);
  const seed = values.seed === undefined ? Math.floor(Math.random() * 2 ** 31) : Number(values.seed);
  const trials = Number(values.trials);
  const start = Number(values.start);
  if (![seed, trials, start].every(Number.isSafeInteger)) throw new Error("--seed, --trials and --start are integers");
  if (values.show) {
    for (let i = 0; i < trials; i++) {
      const { target, trial } = inputAt(targets, start * targets.length + i);
      const input = await makeInput(seed, target, trial);
      console.log(`${target} trial ${trial} (${input.family}), ${input.text.length} chars:`);
      console.log(
        input.text.length > 4000 ? JSON.stringify(input.text.slice(0, 4000)) + " …" : JSON.stringify(input.text),
      );
      const t0 = performance.now();
      const error = await check(input);
      console.log(`=> ${error ?? "ok"} (${Math.round(performance.now() - t0)} ms)`);
    }
    return 0;
  }
  const summary = await fuzz({
    seed,
    trials,
    targets,
    start,
    timeoutMs: Number(values["timeout-ms"]),
    keepInputs: values.dump !== undefined,
    onProgress: (done) => console.error(`fuzz: ${done}/${trials} inputs…`),
  });
  if (values.dump) {
    await Deno.mkdir(values.dump, { recursive: true });
    for (const f of summary.failures) {
      await Deno.writeTextFile(`${values.dump}/${f.target}-${summary.seed}-${f.trial}-${f.kind}.txt`, f.text ?? "");
    }
  }
  console.log(report(summary, targets));
  return summary.crashes + summary.hangs > 0 ? 1 : 0;
}

if (import.meta.main && !IN_WORKER) Deno.exit(await cli());
