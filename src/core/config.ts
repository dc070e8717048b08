/**
 * The YAML configuration file. Unknown keys and wrong types are errors that
 * name the key, so a typo never silently falls back to a default.
 *
 * ```yaml
 * root: /tmp/ckpts
 * hashing:
 *   sample_bytes: 65536
 * retention:
 *   keep_last: 3
 *   keep_every: 1000
 * metrics:
 *   textfile: /var/lib/node_exporter/ckptkit.prom
 *   pushgateway: http://pushgateway:9091/metrics
 *   root_label: llama-7b
 * ```
 *
 * @module
 */

import { isScalar, parseDocument, YAMLParseError } from "../deps/yaml.ts";
import { z } from "../deps/zod.ts";
import { readFileLimited } from "../fs/durable.ts";
import { CkptkitError } from "../errors.ts";
import { HASH_ALGORITHMS } from "../fs/hashing.ts";
import { parseStep } from "./layout.ts";

const positiveInteger = z.number().int().min(1).max(Number.MAX_SAFE_INTEGER);
const nonNegativeInteger = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
const text = z.string().min(1);

/** The parsed configuration file; every key is optional. */
export interface Config {
  /** Default checkpoint root. */
  root?: string;
  /** Default job id for write, commit and seal. */
  job_id?: string;
  /** Default run id for write, commit and seal. */
  run_id?: string;
  /** Lowest severity of the JSON log lines. */
  log_level?: "debug" | "info" | "warn" | "error" | "silent";
  /** How log lines are written. */
  log?: {
    /** `json` or `text` (default: text when stderr is a terminal, json otherwise). */
    format?: "json" | "text";
  };
  /** How long mutating commands wait for the root lock, in seconds. */
  lock_timeout_s?: number;
  /** How files are hashed. */
  hashing?: {
    /** Digest algorithm for new manifests. */
    algorithm?: "sha256" | "xxh128";
    /** Size of each sampled region recorded at commit. */
    sample_bytes?: number;
    /** Files hashed at once. */
    jobs?: number;
  };
  /** Retention for gc. */
  retention?: {
    /** Keep the newest N valid checkpoints. */
    keep_last?: number;
    /** Keep every checkpoint whose step is a multiple of K. */
    keep_every?: number;
  };
  /** Where metrics go. */
  metrics?: {
    /** node_exporter textfile path. */
    textfile?: string;
    /** Pushgateway URL. */
    pushgateway?: string;
    /** Value of the `root` label of every series (default: the root's real path). */
    root_label?: string;
  };
}

const configSchema: z.ZodType<Config> = z.strictObject({
  root: text.optional(),
  job_id: text.optional(),
  run_id: text.optional(),
  log_level: z.enum(["debug", "info", "warn", "error", "silent"]).optional(),
  log: z.strictObject({
    format: z.enum(["json", "text"]).optional(),
  }).optional(),
  lock_timeout_s: z.number().min(0).optional(),
  hashing: z.strictObject({
    algorithm: z.enum(HASH_ALGORITHMS).optional(),
    sample_bytes: nonNegativeInteger.optional(),
    jobs: positiveInteger.optional(),
  }).optional(),
  retention: z.strictObject({
    keep_last: nonNegativeInteger.optional(),
    keep_every: nonNegativeInteger.optional(),
  }).optional(),
  metrics: z.strictObject({
    textfile: text.optional(),
    pushgateway: z.url().optional(),
    root_label: text.optional(),
  }).optional(),
});

/**
 * Parses configuration text. Throws a `config_invalid`
 * {@linkcode CkptkitError} whose message names the file, the key and what was
 * wrong (with line and column for YAML syntax errors).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseConfig } from "./config.ts";
 * const config = parseConfig("root: /tmp/ckpts\nhashing:\n  sample_bytes: 65536\n");
 * assert.ok(config.hashing?.sample_bytes === 65536);
 * try {
 *   parseConfig("hashing:\n  sampel_bytes: 1\n", "ckptkit.yaml");
 * } catch (err) {
 *   assert.ok(String(err).includes("hashing.sampel_bytes"));
 * }
 * ```
 */
export function parseConfig(source: string, origin = "config"): Config {
  let raw: unknown;
  let document: ReturnType<typeof parseDocument>;
  try {
    document = parseDocument(source, { logLevel: "error" });
    if (document.errors.length > 0) throw document.errors[0];
    raw = document.toJS();
  } catch (err) {
    const where = err instanceof YAMLParseError && err.linePos
      ? ` at line ${err.linePos[0].line}, column ${err.linePos[0].col}`
      : "";
    const message = (err as Error).message.split("\n")[0]
      .replace(/ at line \d+, column \d+:?$/, "");
    throw new CkptkitError(
      "config_invalid",
      `${origin}: invalid YAML${where}: ${message}`,
      {
        path: origin,
        cause: err,
      },
    );
  }
  if (raw === null || raw === undefined) return {};
  const parsed = configSchema.safeParse(raw);
  if (parsed.success) {
    checkIntegerSyntax(document, origin);
    return parsed.data;
  }
  const issue = parsed.error.issues[0];
  const key = issue.path.map(String).join(".");
  if (issue.code === "unrecognized_keys") {
    const keys = issue.keys.map((k) => (key ? `${key}.${k}` : k));
    throw new CkptkitError(
      "config_invalid",
      `${origin}: unknown key${keys.length > 1 ? "s" : ""} ${keys.map((k) => `"${k}"`).join(", ")}`,
      { path: origin },
    );
  }
  const value = issue.path.reduce<unknown>(
    (node, k) => (node as Record<PropertyKey, unknown>)?.[k as PropertyKey],
    raw,
  );
  throw new CkptkitError(
    "config_invalid",
    `${origin}: key "${key || "(top level)"}" is invalid: ${issue.message} (got ${JSON.stringify(value)})`,
    { path: origin },
  );
}

const INTEGER_KEYS = [
  ["hashing", "sample_bytes"],
  ["hashing", "jobs"],
  ["retention", "keep_last"],
  ["retention", "keep_every"],
] as const;

/**
 * YAML reads `010`, `+7`, `0x10` and `1e3` as numbers; counts are written one way everywhere (flags, folder names),
 * so the config refuses those forms too instead of guessing what they meant.
 */
function checkIntegerSyntax(document: ReturnType<typeof parseDocument>, origin: string): void {
  for (const path of INTEGER_KEYS) {
    const node = document.getIn(path, true);
    if (!isScalar(node) || typeof node.value !== "number" || node.source === undefined) continue;
    if (parseStep(String(node.source)) !== undefined) continue;
    throw new CkptkitError(
      "config_invalid",
      `${origin}: key "${path.join(".")}" is invalid: expected a non-negative integer in decimal digits, ` +
        `without sign, spaces or leading zeros (got ${JSON.stringify(node.source)})`,
      { path: origin },
    );
  }
}

/** Largest config file read. */
export const MAX_CONFIG_BYTES = 1024 * 1024;

/**
 * Reads and parses a configuration file: a regular file (a link to one is
 * followed) of at most {@linkcode MAX_CONFIG_BYTES}, in UTF-8. Anything else
 * is a `config_invalid` {@linkcode CkptkitError}, refused before it is opened.
 *
 * Requires `--allow-read`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { loadConfig } from "./config.ts";
 * const dir = await Deno.makeTempDir();
 * await Deno.writeTextFile(`${dir}/ckptkit.yaml`, "root: /tmp/ckpts\n");
 * assert.ok((await loadConfig(`${dir}/ckptkit.yaml`)).root === "/tmp/ckpts");
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function loadConfig(path: string): Promise<Config> {
  const invalid = (detail: string, cause?: unknown) =>
    new CkptkitError("config_invalid", `Cannot read config file ${path}: ${detail}`, { path, cause });
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(path);
  } catch (err) {
    throw invalid((err as Error).message, err);
  }
  // Checked before opening: opening a FIFO without a writer blocks forever, and /dev/zero never ends.
  if (!info.isFile) {
    throw invalid(`not a regular file (${info.isDirectory ? "a folder" : "a FIFO, socket or device"})`);
  }
  let bytes: Uint8Array | undefined;
  try {
    bytes = await readFileLimited(path, MAX_CONFIG_BYTES);
  } catch (err) {
    throw invalid((err as Error).message, err);
  }
  if (!bytes) throw invalid(`larger than ${MAX_CONFIG_BYTES} bytes; a config is a few lines`);
  let source: string;
  try {
    source = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch (err) {
    throw invalid("not valid UTF-8", err);
  }
  return parseConfig(source, path);
}
