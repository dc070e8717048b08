/**
 * Generates the hostile-input corpus in `tests/corpus/`: one folder per case,
 * each with a `case.json` (what to run, what to expect, a `setup` recipe for
 * what git cannot or should not hold) and the checkpoint root's files.
 *
 * ```sh
 * deno run -A scripts/gen_corpus.ts
 * ```
 *
 * Deterministic and idempotent: the output depends on nothing but this file
 * (fixed contents, fixed timestamps), and a rerun rewrites `tests/corpus/`
 * byte for byte. The corpus format and the recipe interpreter live here too;
 * `tests/hostile_test.ts` imports {@linkcode loadCases} and
 * {@linkcode materialize}.
 *
 * Every file of a case is stored with a `.raw` suffix (stripped when the case
 * is materialised), so that `deno fmt` never reformats or chokes on a hostile
 * `ckptkit.manifest.json`, and nothing in git is a symlink, FIFO, device or a
 * name with a newline: those are made at test time from the recipe.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { sampleRegions } from "../src/fs/hashing.ts";
import { MANIFEST_NAME } from "../src/core/layout.ts";
import { createManifest, manifestDigest, type ManifestFile } from "../src/core/manifest.ts";

/** The corpus folder. */
export const CORPUS_DIR: string = new URL("../tests/corpus", import.meta.url).pathname;
/** Suffix of every stored file of a case. */
export const RAW_SUFFIX = ".raw";
/** The exact command that regenerates the corpus. */
export const GENERATE_COMMAND = "deno run -A scripts/gen_corpus.ts";

/** Text of the sentinel files placed outside the root of every case. */
export const SENTINEL_TEXT = "SENTINEL: ckptkit must never open this file.\n";
/** Content of `outside/dir/data.bin`, made for every case. */
export const OUTSIDE_DATA: Uint8Array = pattern(99, 2048);

// ---------------------------------------------------------------------------
// The corpus format
// ---------------------------------------------------------------------------

/** A command of the ckptkit CLI that a case runs. */
export type CaseCommand = "validate" | "scan" | "resume" | "gc";

/**
 * One step of a case's setup recipe. Paths are relative to the case's
 * temporary folder (`root/…` is the checkpoint root, `outside/…` is outside
 * it); `{tmp}`, `{root}` and `{outside}` in strings become absolute paths.
 */
export type SetupOp =
  /** A symbolic link at `path` to `target` (stored as given). */
  | { op: "symlink"; path: string; target: string }
  /** A hard link at `path` to the existing file `target`. */
  | { op: "hardlink"; path: string; target: string }
  /** A FIFO (mkfifo). */
  | { op: "fifo"; path: string }
  /** A character device (mknod; needs root). */
  | { op: "device"; path: string; major: number; minor: number }
  /** A Unix socket left on disk (needs python3). */
  | { op: "socket"; path: string }
  /** A file with UTF-8 text (names with newlines or unicode tricks live here, not in git). */
  | { op: "write"; path: string; text: string }
  /** A file whose name holds bytes that are not UTF-8: `name` uses printf octal escapes (`bad\\377.bin`). */
  | { op: "write_octal_name"; dir: string; name: string; text: string }
  /** Removes a file or folder. */
  | { op: "remove"; path: string }
  /** Creates a folder (and its parents). */
  | { op: "mkdir"; path: string }
  /** Sets a file's size, extending it sparsely with zeros (created when missing). */
  | { op: "truncate"; path: string; size: number }
  /** Appends entries to a checkpoint's manifest, then re-signs it (total_bytes and self-digest). */
  | { op: "manifest_add"; dir: string; entries: Record<string, unknown>[] }
  /** Writes a generated manifest too big to commit (see {@linkcode ManifestKind}). */
  | { op: "manifest_generate"; dir: string; kind: ManifestKind; size: number }
  /**
   * Makes a sparse file of `size` bytes at `<dir>/<path>` and lists it in the
   * manifest with `samples` sampled regions, each covering the whole file
   * (correct digests), then re-signs the manifest.
   */
  | { op: "sample_amplifier"; dir: string; path: string; size: number; samples: number };

/**
 * Manifests generated at test time:
 * - `deep_document`: the whole document is `size` nested arrays.
 * - `deep_metadata`: `metadata.deep` is `size` nested arrays.
 * - `deep_unknown_key`: an unknown top-level key holds `size` nested objects.
 * - `huge_files`: `files` has `size` tiny entries; the self-digest is left stale.
 * - `huge_metadata_array`: `metadata.big` is an array of `size` zeros; re-signed.
 */
export type ManifestKind =
  | "deep_document"
  | "deep_metadata"
  | "deep_unknown_key"
  | "huge_files"
  | "huge_metadata_array";

/** What a case expects from the CLI (all present fields are checked). */
export interface CaseExpect {
  /** Exit code. */
  exit: number;
  /**
   * The stable problem reasons, sorted (a multiset): validate's `problems`,
   * every checkpoint's problems for scan, every rejected candidate's reasons
   * for resume.
   */
  reasons: string[];
  /** validate: the problems as sorted `reason:path`. */
  problems?: string[];
  /** A regular expression that some problem's detail must match. */
  detail?: string;
  /** The error reason when the command fails (`{"ok": false, "error": …}`). */
  error_reason?: string;
  /** scan: every checkpoint's problem reasons, by name. */
  checkpoints?: Record<string, string[]>;
  /** scan: `latest.state`. */
  latest?: "ok" | "missing" | "invalid";
  /** scan: the stray names, sorted. */
  strays?: string[];
  /** resume: the chosen checkpoint's name, or null. */
  chosen?: string | null;
  /** resume: rejected candidates' reasons, by name. */
  rejected?: Record<string, string[]>;
  /** resume: the candidates the policy left out, sorted. */
  excluded?: string[];
  /** resume: the repair actions as `action:name`. */
  actions?: string[];
  /** Nothing in the root but `.ckptkit/` may change (default true). */
  root_unchanged?: boolean;
}

/** One case of the corpus, as stored in `case.json` (plus its folder name). */
export interface CorpusCase {
  /** Folder name, `NN-name`. */
  name: string;
  /** What the case is about and why the expectation is what it is. */
  description: string;
  /** What to run: `ckptkit <command> <tmp>/<target> --json <args…>`. */
  run: { command: CaseCommand; target: string; args: string[] };
  /** What must come out. */
  expect: CaseExpect;
  /** Test-time recipe, applied in order after the stored files are copied. */
  setup: SetupOp[];
  /** What the machine must offer, or the case is skipped with a note. */
  requires?: ("root" | "python3")[];
  /** Files outside the root that the case legitimately shares an inode with (hard links). */
  atime_exempt?: string[];
  /** The ckptkit bug this case exposes while it is open (see tests/corpus/README.md). */
  bug?: string;
}

/** A case and the folder it lives in. */
export interface LoadedCase extends CorpusCase {
  /** Absolute path of the case folder. */
  dir: string;
}

/** Reads every case of the corpus, in folder order. */
export async function loadCases(corpus = CORPUS_DIR): Promise<LoadedCase[]> {
  const names: string[] = [];
  for await (const entry of Deno.readDir(corpus)) {
    if (entry.isDirectory && /^\d{2}-/.test(entry.name)) names.push(entry.name);
  }
  names.sort();
  const cases: LoadedCase[] = [];
  for (const name of names) {
    const stored = JSON.parse(await Deno.readTextFile(`${corpus}/${name}/case.json`));
    cases.push({ name, dir: `${corpus}/${name}`, ...stored });
  }
  return cases;
}

/** Where a materialised case lives. */
export interface Materialized {
  /** The case's temporary folder. */
  tmp: string;
  /** `<tmp>/root`, the checkpoint root. */
  root: string;
  /** `<tmp>/outside`, where the sentinels are. */
  outside: string;
}

/**
 * Builds a case in `tmp`: copies its stored files (without the `.raw`
 * suffix), creates the standard sentinels outside the root
 * (`outside/sentinel.txt`, `outside/dir/data.bin`, `outside/dir/sentinel.txt`)
 * and applies the setup recipe. Needs `--allow-run` for FIFOs, devices and
 * sockets.
 */
export async function materialize(
  kase: LoadedCase,
  tmp: string,
): Promise<Materialized> {
  const root = `${tmp}/root`;
  const outside = `${tmp}/outside`;
  await Deno.mkdir(root, { recursive: true });
  await Deno.mkdir(`${outside}/dir`, { recursive: true });
  for (const part of ["root", "outside"]) {
    const from = `${kase.dir}/${part}`;
    if (await exists(from)) await copyRaw(from, `${tmp}/${part}`);
  }
  await Deno.writeTextFile(`${outside}/sentinel.txt`, SENTINEL_TEXT);
  await Deno.writeTextFile(`${outside}/dir/sentinel.txt`, SENTINEL_TEXT);
  await Deno.writeFile(`${outside}/dir/data.bin`, OUTSIDE_DATA);
  const fill = (text: string) =>
    text.replaceAll("{tmp}", tmp).replaceAll("{root}", root).replaceAll("{outside}", outside);
  const at = (path: string) => `${tmp}/${fill(path)}`;
  for (const step of kase.setup) {
    switch (step.op) {
      case "symlink":
        await Deno.symlink(fill(step.target), at(step.path));
        break;
      case "hardlink":
        await Deno.link(at(step.target), at(step.path));
        break;
      case "fifo":
        await run("mkfifo", [at(step.path)]);
        break;
      case "device":
        await run("mknod", [at(step.path), "c", String(step.major), String(step.minor)]);
        break;
      case "socket":
        await run("python3", [
          "-c",
          "import socket, sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])",
          at(step.path),
        ]);
        break;
      case "write":
        await Deno.mkdir(parent(at(step.path)), { recursive: true });
        await Deno.writeTextFile(at(step.path), fill(step.text));
        break;
      case "write_octal_name":
        await run("sh", [
          "-c",
          'cd "$1" && printf "%s" "$3" > "$(printf "$2")"',
          "sh",
          at(step.dir),
          step.name,
          step.text,
        ]);
        break;
      case "remove":
        await Deno.remove(at(step.path), { recursive: true });
        break;
      case "mkdir":
        await Deno.mkdir(at(step.path), { recursive: true });
        break;
      case "truncate": {
        const file = await Deno.open(at(step.path), { write: true, create: true });
        try {
          await file.truncate(step.size);
        } finally {
          file.close();
        }
        break;
      }
      case "manifest_add": {
        const raw = await readManifestRaw(at(step.dir));
        const entries = JSON.parse(fill(JSON.stringify(step.entries)));
        (raw.files as unknown[]).push(...entries);
        await writeManifestRaw(at(step.dir), await resign(raw));
        break;
      }
      case "manifest_generate":
        await generateManifest(at(step.dir), step.kind, step.size);
        break;
      case "sample_amplifier": {
        const file = await Deno.open(`${at(step.dir)}/${step.path}`, { write: true, createNew: true });
        try {
          await file.truncate(step.size);
        } finally {
          file.close();
        }
        const digest = sha256(new Uint8Array(step.size));
        const raw = await readManifestRaw(at(step.dir));
        (raw.files as unknown[]).push({
          path: step.path,
          size: step.size,
          digest,
          samples: Array.from({ length: step.samples }, () => ({ offset: 0, length: step.size, digest })),
        });
        await writeManifestRaw(at(step.dir), await resign(raw));
        break;
      }
      default:
        throw new Error(`unknown setup op ${JSON.stringify(step)}`);
    }
  }
  return { tmp, root, outside };
}

async function generateManifest(dir: string, kind: ManifestKind, size: number): Promise<void> {
  const path = `${dir}/${MANIFEST_NAME}`;
  const nestedArrays = "[".repeat(size) + "]".repeat(size);
  if (kind === "deep_document") {
    await Deno.writeTextFile(path, nestedArrays);
    return;
  }
  const raw = await readManifestRaw(dir);
  if (kind === "deep_metadata" || kind === "deep_unknown_key") {
    // Too deep to canonicalise, so it cannot be re-signed: the stale digest stays.
    const nested = kind === "deep_metadata" ? nestedArrays : '{"a":'.repeat(size) + "1" + "}".repeat(size);
    if (kind === "deep_metadata") raw.metadata = { deep: "@NESTED@" };
    else raw.x_extension = "@NESTED@";
    await Deno.writeTextFile(path, JSON.stringify(raw).replace('"@NESTED@"', nested));
    return;
  }
  if (kind === "huge_files") {
    raw.files = Array.from({ length: size }, (_, i) => ({
      path: `f/${i}`,
      size: 0,
      digest: "0000000000000000",
      samples: [],
    }));
    raw.total_bytes = 0;
    await Deno.writeTextFile(path, JSON.stringify(raw));
    return;
  }
  (raw.metadata as Record<string, unknown>).big = new Array(size).fill(0);
  await Deno.writeTextFile(path, JSON.stringify(await resign(raw)));
}

async function readManifestRaw(dir: string): Promise<Record<string, unknown>> {
  return JSON.parse(await Deno.readTextFile(`${dir}/${MANIFEST_NAME}`));
}

async function writeManifestRaw(dir: string, raw: Record<string, unknown>): Promise<void> {
  await Deno.writeTextFile(`${dir}/${MANIFEST_NAME}`, JSON.stringify(raw, null, 2) + "\n");
}

/** Recomputes `total_bytes` (when every size is a number) and the self-digest, as an attacker could. */
export async function resign(raw: Record<string, unknown>): Promise<Record<string, unknown>> {
  const files = raw.files as { size?: unknown }[];
  if (Array.isArray(files) && files.every((f) => typeof f?.size === "number")) {
    raw.total_bytes = files.reduce((sum, f) => sum + (f.size as number), 0);
  }
  raw.manifest_digest = await manifestDigest(raw);
  return raw;
}

async function copyRaw(from: string, to: string): Promise<void> {
  await Deno.mkdir(to, { recursive: true });
  for await (const entry of Deno.readDir(from)) {
    if (entry.isDirectory) {
      await copyRaw(`${from}/${entry.name}`, `${to}/${entry.name}`);
    } else if (entry.isFile && entry.name.endsWith(RAW_SUFFIX)) {
      await Deno.copyFile(`${from}/${entry.name}`, `${to}/${entry.name.slice(0, -RAW_SUFFIX.length)}`);
    } else {
      throw new Error(`${from}/${entry.name}: corpus files must end in ${RAW_SUFFIX}`);
    }
  }
}

async function run(command: string, args: string[]): Promise<void> {
  const output = await new Deno.Command(command, { args, stdout: "null", stderr: "piped" }).output();
  if (!output.success) {
    throw new Error(`${command} ${args.join(" ")} failed: ${new TextDecoder().decode(output.stderr)}`);
  }
}

async function exists(path: string): Promise<boolean> {
  return await Deno.lstat(path).then(() => true, () => false);
}

function parent(path: string): string {
  return path.slice(0, path.lastIndexOf("/"));
}

// ---------------------------------------------------------------------------
// Deterministic checkpoint content
// ---------------------------------------------------------------------------

const SAMPLE_BYTES = 1024;
const CREATED_AT = "2026-01-01T00:00:00.000Z";
const encoder = new TextEncoder();

/** Deterministic bytes: a small linear congruential generator seeded by `seed`. */
export function pattern(seed: number, size: number): Uint8Array {
  const out = new Uint8Array(size);
  let x = (seed * 2654435761) >>> 0;
  for (let i = 0; i < size; i++) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    out[i] = x >>> 24;
  }
  return out;
}

/** Lower-case hex SHA-256 of `bytes`. */
export function sha256(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

function entry(path: string, bytes: Uint8Array): ManifestFile {
  return {
    path,
    size: bytes.length,
    digest: sha256(bytes),
    samples: sampleRegions(bytes.length, SAMPLE_BYTES).map((r) => ({
      ...r,
      digest: sha256(bytes.subarray(r.offset, r.offset + r.length)),
    })),
  };
}

type Files = Map<string, Uint8Array>;

/** A checkpoint: its files on disk and its (signed, editable) manifest. */
interface Checkpoint {
  files: Files;
  raw: Record<string, unknown>;
}

function standardFiles(step: number): Files {
  return new Map([
    ["model.bin", pattern(step, 3000)],
    ["shards/part-0.bin", pattern(step + 1, 1500)],
    ["trainer_state.json", encoder.encode(JSON.stringify({ global_step: step, loss: 1.25 }) + "\n")],
  ]);
}

async function checkpoint(step: number, files: Files = standardFiles(step)): Promise<Checkpoint> {
  const manifest = await createManifest({
    job_id: "corpus",
    run_id: "run-1",
    step,
    created_at: CREATED_AT,
    write_duration_s: 0.5,
    writer: { host: "corpus-host", ckptkit_version: "corpus" },
    hash: { algorithm: "sha256", sample_bytes: SAMPLE_BYTES },
    files: [...files].map(([path, bytes]) => entry(path, bytes)),
    metadata: { source: "scripts/gen_corpus.ts" },
  });
  return { files, raw: JSON.parse(JSON.stringify(manifest)) };
}

function pretty(raw: unknown): string {
  return JSON.stringify(raw, null, 2) + "\n";
}

// ---------------------------------------------------------------------------
// The cases
// ---------------------------------------------------------------------------

/** A case before it is written: its stored files (relative to the case folder) and its case.json. */
interface CaseSource {
  files: Map<string, Uint8Array>;
  spec: Omit<CorpusCase, "name">;
}

type Spec = Omit<CorpusCase, "name" | "setup" | "run"> & {
  setup?: SetupOp[];
  run?: Partial<CorpusCase["run"]>;
};

/** Puts checkpoints (and other files) into a case. */
class Layout {
  files = new Map<string, Uint8Array>();

  /** Adds checkpoint `ck` at `root/<name>` with its manifest as `text` (default: pretty JSON of ck.raw). */
  checkpoint(name: string, ck: Checkpoint, text?: string | Uint8Array): this {
    for (const [path, bytes] of ck.files) this.files.set(`root/${name}/${path}`, bytes);
    const manifest = text ?? pretty(ck.raw);
    this.files.set(`root/${name}/${MANIFEST_NAME}`, typeof manifest === "string" ? encoder.encode(manifest) : manifest);
    return this;
  }

  /** Adds a file at `path` (relative to the case folder). */
  file(path: string, content: string | Uint8Array): this {
    this.files.set(path, typeof content === "string" ? encoder.encode(content) : content);
    return this;
  }

  /** Removes a stored file. */
  drop(path: string): this {
    this.files.delete(path);
    return this;
  }
}

function validateCase(layout: Layout, spec: Spec): CaseSource {
  return {
    files: layout.files,
    spec: {
      ...spec,
      run: { command: "validate", target: "root/step-10", args: [], ...spec.run },
      setup: spec.setup ?? [],
    },
  };
}

function rootCase(layout: Layout, command: CaseCommand, spec: Spec): CaseSource {
  return {
    files: layout.files,
    spec: {
      ...spec,
      run: { command, target: "root", args: [], ...spec.run },
      setup: spec.setup ?? [],
    },
  };
}

/** A manifest edited and re-signed (total_bytes and digest recomputed), as an attacker could. */
async function edited(
  step: number,
  edit: (raw: Record<string, unknown>, files: Files) => void,
  options: { sign?: boolean; files?: Files } = {},
): Promise<Checkpoint> {
  const ck = await checkpoint(step, options.files);
  edit(ck.raw, ck.files);
  if (options.sign ?? true) await resign(ck.raw);
  return ck;
}

function filesOf(raw: Record<string, unknown>): Record<string, unknown>[] {
  return raw.files as Record<string, unknown>[];
}

/** A standard root: step-10 and step-20, both valid, latest naming step-20. */
async function standardRoot(latest: string | Uint8Array | null = "step-20\n"): Promise<Layout> {
  const layout = new Layout()
    .checkpoint("step-10", await checkpoint(10))
    .checkpoint("step-20", await checkpoint(20));
  if (latest !== null) layout.file("root/latest", latest);
  return layout;
}

const SENTINEL_BYTES = encoder.encode(SENTINEL_TEXT);
const SENTINEL_ENTRY = { size: SENTINEL_BYTES.length, digest: sha256(SENTINEL_BYTES), samples: [] };
const EMPTY_DIGEST = sha256(new Uint8Array(0));
const NFC = "caf\u00e9.bin";
const NFD = "cafe\u0301.bin";
const BEFORE_TIME = ["--policy", "newest-before", "--before-time", "2100-01-01T00:00:00Z"];

/** Every case, in order; the folder name is `NN-<key>`. */
async function cases(): Promise<[string, CaseSource][]> {
  const list: [string, CaseSource][] = [];
  const add = (key: string, source: CaseSource) => list.push([key, source]);
  const std = async () => await checkpoint(10);

  // --- manifests -----------------------------------------------------------
  add(
    "control-valid-checkpoint",
    validateCase(new Layout().checkpoint("step-10", await std()), {
      description: "Control: an intact checkpoint written like the rest of the corpus validates in full.",
      expect: { exit: 0, reasons: [] },
    }),
  );
  {
    const ck = await std();
    const text = pretty(ck.raw);
    add(
      "manifest-truncated",
      validateCase(new Layout().checkpoint("step-10", ck, text.slice(0, Math.floor(text.length / 2))), {
        description: "The manifest is cut in half, as by a crash or a full disk.",
        expect: { exit: 1, reasons: ["manifest_corrupt"], detail: "not valid JSON" },
      }),
    );
  }
  add(
    "manifest-not-json",
    validateCase(new Layout().checkpoint("step-10", await std(), "checkpoint written by hand, trust me\n"), {
      description: "The manifest is prose, not JSON.",
      expect: { exit: 1, reasons: ["manifest_corrupt"], detail: "not valid JSON" },
    }),
  );
  add(
    "manifest-empty",
    validateCase(new Layout().checkpoint("step-10", await std(), ""), {
      description: "The manifest is an empty file (created, never written).",
      expect: { exit: 1, reasons: ["manifest_corrupt"] },
    }),
  );
  add(
    "manifest-json-null",
    validateCase(new Layout().checkpoint("step-10", await std(), "null\n"), {
      description: "The manifest is valid JSON but not an object.",
      expect: { exit: 1, reasons: ["manifest_corrupt"], detail: "not a JSON object" },
    }),
  );
  add(
    "manifest-deep-nesting-document",
    validateCase(new Layout().checkpoint("step-10", await std()), {
      description: "The whole manifest is 100000 nested arrays (generated at test time). The parser must not " +
        "overflow its stack: manifest_corrupt, not a crash.",
      expect: { exit: 1, reasons: ["manifest_corrupt"] },
      setup: [{ op: "manifest_generate", dir: "root/step-10", kind: "deep_document", size: 100000 }],
    }),
  );
  add(
    "manifest-deep-nesting-metadata",
    validateCase(new Layout().checkpoint("step-10", await std()), {
      description: "metadata.deep holds 100000 nested arrays (generated at test time). JSON.parse copes, but the " +
        "recursive canonicalisation behind the self-digest overflows the stack: must be manifest_corrupt.",
      expect: { exit: 1, reasons: ["manifest_corrupt"] },
      setup: [{ op: "manifest_generate", dir: "root/step-10", kind: "deep_metadata", size: 100000 }],
      bug: "BUG-1",
    }),
  );
  add(
    "manifest-deep-nesting-unknown-key",
    validateCase(new Layout().checkpoint("step-10", await std()), {
      description: "An unknown top-level key (allowed by the loose schema) holds 100000 nested objects " +
        "(generated at test time): must be manifest_corrupt, not a crash.",
      expect: { exit: 1, reasons: ["manifest_corrupt"] },
      setup: [{ op: "manifest_generate", dir: "root/step-10", kind: "deep_unknown_key", size: 100000 }],
      bug: "BUG-1",
    }),
  );
  add(
    "manifest-huge-files-array",
    validateCase(new Layout().checkpoint("step-10", await std()), {
      description: "files lists 1000000 tiny entries (a 60 MB manifest generated at test time) with a stale " +
        "self-digest: parsed, schema-checked and hashed in bounded time, then manifest_corrupt.",
      run: { args: ["--fast"] },
      expect: { exit: 1, reasons: ["manifest_corrupt"], detail: "self-digest mismatch" },
      setup: [{ op: "manifest_generate", dir: "root/step-10", kind: "huge_files", size: 1000000 }],
    }),
  );
  add(
    "manifest-huge-metadata-array",
    validateCase(new Layout().checkpoint("step-10", await std()), {
      description: "metadata.big is an array of 1000000 zeros, correctly re-signed (generated at test time): a " +
        "big but valid manifest validates.",
      expect: { exit: 0, reasons: [] },
      setup: [{ op: "manifest_generate", dir: "root/step-10", kind: "huge_metadata_array", size: 1000000 }],
    }),
  );
  const sizeCase = async (key: string, description: string, size: unknown) => {
    const ck = await edited(10, (m) => {
      filesOf(m)[0].size = size;
    });
    add(
      key,
      validateCase(new Layout().checkpoint("step-10", ck), {
        description,
        expect: { exit: 1, reasons: ["manifest_corrupt"] },
      }),
    );
  };
  await sizeCase("size-negative", "A file's size is -1 (re-signed).", -1);
  await sizeCase("size-2pow60", "A file's size is 2^60, beyond the safe integers (re-signed).", 2 ** 60);
  await sizeCase("size-nan-string", 'A file\'s size is the string "NaN" (re-signed).', "NaN");
  {
    const ck = await edited(10, (m) => {
      filesOf(m)[0].size = "@SIZE@";
    });
    add(
      "size-1e309",
      validateCase(new Layout().checkpoint("step-10", ck, pretty(ck.raw).replace('"@SIZE@"', "1e309")), {
        description: "A file's size is the literal 1e309, which JSON.parse turns into Infinity.",
        expect: { exit: 1, reasons: ["manifest_corrupt"] },
      }),
    );
  }
  const stepCase = async (key: string, description: string, step: unknown, literal?: string) => {
    const ck = await edited(10, (m) => {
      m.step = literal ? "@STEP@" : step;
    }, { sign: !literal });
    const text = literal ? pretty(ck.raw).replace('"@STEP@"', literal) : undefined;
    add(
      key,
      validateCase(new Layout().checkpoint("step-10", ck, text), {
        description,
        expect: { exit: 1, reasons: ["manifest_corrupt"] },
      }),
    );
  };
  await stepCase("step-nan-string", 'step is the string "NaN" (re-signed).', "NaN");
  await stepCase("step-fraction", "step is 10.5 (re-signed).", 10.5);
  await stepCase("step-beyond-safe-integer", "step is the literal 9007199254740993 (2^53 + 1).", 0, "9007199254740993");
  {
    const ck = await std();
    ck.raw.total_bytes = 1;
    ck.raw.manifest_digest = await manifestDigest(ck.raw);
    add(
      "total-bytes-mismatch",
      validateCase(new Layout().checkpoint("step-10", ck), {
        description: "total_bytes disagrees with the sum of the sizes (self-digest consistent).",
        expect: { exit: 1, reasons: ["manifest_corrupt"], detail: "total_bytes" },
      }),
    );
  }
  const pathCase = async (
    key: string,
    description: string,
    entries: Record<string, unknown>[],
    reasons: string[],
    bug?: string,
  ) => {
    const ck = await edited(10, (m) => {
      filesOf(m).push(...entries);
    });
    add(
      key,
      validateCase(new Layout().checkpoint("step-10", ck), {
        description,
        expect: { exit: 1, reasons },
        ...(bug ? { bug } : {}),
      }),
    );
  };
  await pathCase(
    "path-dotdot-to-sentinel",
    "A re-signed manifest lists ../../outside/sentinel.txt with the sentinel's true size and digest: " +
      "unsafe_path, and the sentinel is never opened.",
    [{ path: "../../outside/sentinel.txt", ...SENTINEL_ENTRY }],
    ["unsafe_path"],
  );
  add(
    "path-absolute-to-sentinel",
    validateCase(new Layout().checkpoint("step-10", await std()), {
      description: "A re-signed manifest lists the sentinel's absolute path (added at test time, when it is " +
        "known) with its true size and digest: unsafe_path, and the sentinel is never opened.",
      expect: { exit: 1, reasons: ["unsafe_path"] },
      setup: [{
        op: "manifest_add",
        dir: "root/step-10",
        entries: [{ path: "{outside}/sentinel.txt", ...SENTINEL_ENTRY }],
      }],
    }),
  );
  await pathCase(
    "path-nul-byte",
    "A listed path holds a NUL byte followed by ../ (re-signed).",
    [{ path: "model.bin\u0000/../../outside/sentinel.txt", ...SENTINEL_ENTRY }],
    ["unsafe_path"],
  );
  await pathCase(
    "path-backslash",
    "A listed path uses backslashes to climb out (re-signed).",
    [{ path: "..\\..\\outside\\sentinel.txt", ...SENTINEL_ENTRY }],
    ["unsafe_path"],
  );
  {
    const ck = await edited(10, (m) => {
      for (const file of filesOf(m)) {
        if (file.path === "model.bin") file.path = "./model.bin";
        if (file.path === "shards/part-0.bin") file.path = "shards//part-0.bin";
      }
    });
    add(
      "path-not-normalised",
      validateCase(new Layout().checkpoint("step-10", ck), {
        description: "Two files are listed as ./model.bin and shards//part-0.bin (re-signed): both unsafe_path, " +
          "and the real files, now unlisted, are unexpected_file.",
        expect: {
          exit: 1,
          reasons: ["unexpected_file", "unexpected_file", "unsafe_path", "unsafe_path"],
          problems: [
            "unexpected_file:model.bin",
            "unexpected_file:shards/part-0.bin",
            "unsafe_path:./model.bin",
            "unsafe_path:shards//part-0.bin",
          ],
        },
      }),
    );
  }
  {
    const ck = await edited(10, (m) => {
      filesOf(m).push({ ...filesOf(m).find((f) => f.path === "model.bin")! });
    });
    add(
      "path-duplicate",
      validateCase(new Layout().checkpoint("step-10", ck), {
        description: "model.bin is listed twice (re-signed, total_bytes counting both).",
        expect: { exit: 1, reasons: ["unsafe_path"], problems: ["unsafe_path:model.bin"], detail: "more than once" },
      }),
    );
  }
  await pathCase(
    "path-names-manifest",
    "The manifest lists itself (re-signed).",
    [{ path: MANIFEST_NAME, size: 0, digest: EMPTY_DIGEST, samples: [] }],
    ["unsafe_path"],
  );
  await pathCase(
    "path-object-with-tostring",
    'A listed path is the object {"toString": 1} (re-signed). Showing it with String() throws a TypeError; it ' +
      "must be reported as unsafe_path (path is not a string), not crash validation.",
    [{ path: { toString: 1 }, size: 0, digest: EMPTY_DIGEST, samples: [] }],
    ["unsafe_path"],
    "BUG-2",
  );
  {
    const files = standardFiles(10);
    const cafe = encoder.encode("cafe\n");
    const ck = await edited(10, (m) => {
      filesOf(m).push({ ...entry(NFC, cafe) }, { ...entry(NFD, cafe) });
    }, { files });
    add(
      "unicode-nfc-and-nfd-listed",
      validateCase(new Layout().checkpoint("step-10", ck), {
        description: "The manifest lists the same name in NFC and in NFD; only the NFC file is on disk (made at " +
          "test time). ckptkit compares exact code points: the NFD entry is file_missing, never matched to the " +
          "NFC file.",
        expect: { exit: 1, reasons: ["file_missing"], problems: [`file_missing:${NFD}`] },
        setup: [{ op: "write", path: `root/step-10/${NFC}`, text: "cafe\n" }],
      }),
    );
  }
  {
    const ck = await edited(10, (m) => {
      filesOf(m).push({ ...entry(NFD, encoder.encode("cafe\n")) });
    });
    add(
      "unicode-nfd-manifest-nfc-disk",
      validateCase(new Layout().checkpoint("step-10", ck), {
        description: "The manifest lists a name in NFD; the disk holds it in NFC (made at test time). Exact code " +
          "points: the NFC file is unexpected_file and the NFD entry is file_missing.",
        expect: {
          exit: 1,
          reasons: ["file_missing", "unexpected_file"],
          problems: [`file_missing:${NFD}`, `unexpected_file:${NFC}`],
        },
        setup: [{ op: "write", path: `root/step-10/${NFC}`, text: "cafe\n" }],
      }),
    );
  }
  const versionCase = async (key: string, version: unknown, reason: string) => {
    const ck = await edited(10, (m) => {
      m.format_version = version;
    });
    add(
      key,
      validateCase(new Layout().checkpoint("step-10", ck), {
        description: `format_version is ${JSON.stringify(version)} (re-signed).`,
        expect: { exit: 1, reasons: [reason] },
      }),
    );
  };
  await versionCase("format-version-3", 3, "manifest_unsupported");
  await versionCase("format-version-minus-1", -1, "manifest_corrupt");
  await versionCase("format-version-string", "1", "manifest_corrupt");
  {
    const ck = await edited(10, (m) => {
      Object.assign(m, {
        format: 1,
        job_id: 5,
        run_id: [],
        step: "ten",
        created_at: 0,
        write_duration_s: "x",
        writer: "me",
        hash: [],
        files: {},
        total_bytes: "0",
        metadata: [],
      });
    });
    add(
      "wrong-types-everywhere",
      validateCase(new Layout().checkpoint("step-10", ck), {
        description: "Every field has the wrong type (re-signed).",
        expect: { exit: 1, reasons: ["manifest_corrupt"] },
      }),
    );
  }
  add(
    "manifest-symlink-to-outside",
    validateCase(new Layout().checkpoint("step-10", await std()).drop(`root/step-10/${MANIFEST_NAME}`), {
      description: "The manifest is a symbolic link to the sentinel outside the root: reported as symlink, " +
        "never followed.",
      expect: { exit: 1, reasons: ["symlink"], problems: [`symlink:${MANIFEST_NAME}`] },
      setup: [{ op: "symlink", path: `root/step-10/${MANIFEST_NAME}`, target: "{outside}/sentinel.txt" }],
    }),
  );
  add(
    "manifest-600mb-sparse",
    validateCase(new Layout().checkpoint("step-10", await std()), {
      description: "The manifest is extended to 600 MiB with a sparse hole (at test time): refused unread as " +
        "larger than the 512 MiB limit.",
      run: { args: ["--fast"] },
      expect: { exit: 1, reasons: ["manifest_corrupt"], detail: "larger than" },
      setup: [{ op: "truncate", path: `root/step-10/${MANIFEST_NAME}`, size: 600 * 1024 * 1024 }],
    }),
  );
  {
    const ck = await std();
    add(
      "manifest-utf8-bom",
      validateCase(new Layout().checkpoint("step-10", ck, "\uFEFF" + pretty(ck.raw)), {
        description: "The manifest starts with a UTF-8 byte order mark. Decision: accepted. The manifest is " +
          "decoded with the WHATWG UTF-8 decoder, which strips a BOM, and the self-digest covers the canonical " +
          "JSON, not the bytes (RFC 8259 lets parsers ignore a BOM).",
        expect: { exit: 0, reasons: [] },
      }),
    );
  }
  {
    const ck = await std();
    const text = encoder.encode(pretty(ck.raw).replace('"job_id": "corpus"', '"job_id": "corpus@"'));
    const at = text.indexOf("@".charCodeAt(0));
    const bytes = new Uint8Array([...text.subarray(0, at), 0xff, 0xfe, ...text.subarray(at + 1)]);
    add(
      "manifest-invalid-utf8",
      validateCase(new Layout().checkpoint("step-10", ck, bytes), {
        description: "job_id holds the bytes FF FE, which are not UTF-8.",
        expect: { exit: 1, reasons: ["manifest_corrupt"], detail: "UTF-8" },
      }),
    );
  }
  {
    const ck = await std();
    const text = encoder.encode(pretty(ck.raw));
    add(
      "manifest-nul-padding",
      validateCase(new Layout().checkpoint("step-10", ck, new Uint8Array([...text, ...new Uint8Array(4096)])), {
        description: "A valid manifest followed by 4096 NUL bytes, as a crash can leave an extended file.",
        expect: { exit: 1, reasons: ["manifest_corrupt"] },
      }),
    );
  }
  add(
    "manifest-is-fifo",
    validateCase(new Layout().checkpoint("step-10", await std()).drop(`root/step-10/${MANIFEST_NAME}`), {
      description: "The manifest is a FIFO (made at test time): reported without opening it (an open would " +
        "block forever).",
      expect: { exit: 1, reasons: ["manifest_corrupt"], detail: "not a regular file" },
      setup: [{ op: "fifo", path: `root/step-10/${MANIFEST_NAME}` }],
    }),
  );
  add(
    "manifest-is-directory",
    validateCase(
      new Layout().checkpoint("step-10", await std()).drop(`root/step-10/${MANIFEST_NAME}`).file(
        `root/step-10/${MANIFEST_NAME}/inner.txt`,
        "a folder where the manifest should be\n",
      ),
      {
        description: "The manifest is a folder.",
        expect: { exit: 1, reasons: ["manifest_corrupt"], detail: "not a regular file" },
      },
    ),
  );
  add(
    "sample-regions-amplification",
    validateCase(new Layout().checkpoint("step-10", await std()), {
      description: "A re-signed manifest lists a 1 MiB sparse file with 2000 sampled regions, each the whole " +
        "file, while hash.sample_bytes is 1024 and ckptkit never records more than 8 regions per file. A sample " +
        "validation would read 2 GiB to check 1 MiB: the regions must be refused as manifest_corrupt.",
      run: { args: ["--sample-bytes", "1024"] },
      expect: { exit: 1, reasons: ["manifest_corrupt"] },
      setup: [{ op: "sample_amplifier", dir: "root/step-10", path: "big.bin", size: 1024 * 1024, samples: 2000 }],
      bug: "BUG-3",
    }),
  );

  // --- the checkpoint tree ---------------------------------------------------
  add(
    "symlink-file-to-outside",
    validateCase(new Layout().checkpoint("step-10", await std()).drop("root/step-10/model.bin"), {
      description: "The listed model.bin is a symbolic link to the sentinel (absolute target): symlink, never " +
        "followed, and no file_missing on top.",
      expect: { exit: 1, reasons: ["symlink"], problems: ["symlink:model.bin"] },
      setup: [{ op: "symlink", path: "root/step-10/model.bin", target: "{outside}/sentinel.txt" }],
    }),
  );
  add(
    "symlink-relative-escape-unlisted",
    validateCase(new Layout().checkpoint("step-10", await std()), {
      description: "An unlisted notes.txt is a relative symbolic link ../../outside/sentinel.txt.",
      expect: { exit: 1, reasons: ["symlink"], problems: ["symlink:notes.txt"] },
      setup: [{ op: "symlink", path: "root/step-10/notes.txt", target: "../../outside/sentinel.txt" }],
    }),
  );
  {
    const ck = await edited(10, (m) => {
      filesOf(m).push({ ...entry("sub/data.bin", OUTSIDE_DATA) });
    });
    add(
      "symlink-dir-to-outside",
      validateCase(new Layout().checkpoint("step-10", ck), {
        description: "The manifest lists sub/data.bin, with the digest of outside/dir/data.bin; sub is a " +
          "symbolic link to outside/dir. Following it would make the checkpoint valid: symlink, never followed.",
        expect: { exit: 1, reasons: ["symlink"], problems: ["symlink:sub"] },
        setup: [{ op: "symlink", path: "root/step-10/sub", target: "{outside}/dir" }],
      }),
    );
  }
  {
    const linked = pattern(77, 1200);
    const ck = await edited(10, (m) => {
      filesOf(m).push({ ...entry("linked.bin", linked) });
    });
    add(
      "hardlink-to-outside-file",
      validateCase(new Layout().checkpoint("step-10", ck).file("outside/hardlinked.bin", linked), {
        description: "linked.bin is a hard link to outside/hardlinked.bin (made at test time). A hard link is a " +
          "regular file inside the checkpoint that shares its inode: ckptkit opens it by its inside name and " +
          "validates its content; it cannot tell, and the case is valid. The sentinel is never opened.",
        expect: { exit: 0, reasons: [] },
        setup: [{ op: "hardlink", path: "root/step-10/linked.bin", target: "outside/hardlinked.bin" }],
        atime_exempt: ["outside/hardlinked.bin"],
      }),
    );
  }
  add(
    "fifo-listed",
    validateCase(new Layout().checkpoint("step-10", await std()).drop("root/step-10/model.bin"), {
      description: "The listed model.bin is a FIFO (made at test time); a full validation must not open it.",
      expect: { exit: 1, reasons: ["not_regular_file"], problems: ["not_regular_file:model.bin"] },
      setup: [{ op: "fifo", path: "root/step-10/model.bin" }],
    }),
  );
  add(
    "fifo-unlisted",
    validateCase(new Layout().checkpoint("step-10", await std()), {
      description: "An unlisted FIFO in a sub-folder (made at test time).",
      expect: { exit: 1, reasons: ["not_regular_file"], problems: ["not_regular_file:shards/pipe"] },
      setup: [{ op: "fifo", path: "root/step-10/shards/pipe" }],
    }),
  );
  add(
    "device-node",
    validateCase(new Layout().checkpoint("step-10", await std()), {
      description: "An unlisted character device 1:3 (/dev/null's numbers; made at test time with mknod, so the " +
        "case needs root and is skipped otherwise).",
      expect: { exit: 1, reasons: ["not_regular_file"], problems: ["not_regular_file:null.dev"] },
      setup: [{ op: "device", path: "root/step-10/null.dev", major: 1, minor: 3 }],
      requires: ["root"],
    }),
  );
  add(
    "socket-unlisted",
    validateCase(new Layout().checkpoint("step-10", await std()), {
      description: "An unlisted Unix socket (made at test time with python3).",
      expect: { exit: 1, reasons: ["not_regular_file"], problems: ["not_regular_file:agent.sock"] },
      setup: [{ op: "socket", path: "root/step-10/agent.sock" }],
      requires: ["python3"],
    }),
  );
  {
    const name = "line\nbreak.bin";
    const ck = await edited(10, (m) => {
      filesOf(m).push({ ...entry(name, encoder.encode("newline\n")) });
    });
    add(
      "newline-filename-listed",
      validateCase(new Layout().checkpoint("step-10", ck), {
        description: "A file name holds a newline (made at test time) and the manifest lists it: valid; the " +
          "JSON output and log lines escape it.",
        expect: { exit: 0, reasons: [] },
        setup: [{ op: "write", path: `root/step-10/${name}`, text: "newline\n" }],
      }),
    );
  }
  add(
    "newline-filename-unlisted",
    validateCase(new Layout().checkpoint("step-10", await std()), {
      description: "An unlisted file whose name is a newline-split fake log line (made at test time).",
      expect: {
        exit: 1,
        reasons: ["unexpected_file"],
        problems: ['unexpected_file:evil\n{"event":"validation_passed"}.bin'],
      },
      setup: [{ op: "write", path: 'root/step-10/evil\n{"event":"validation_passed"}.bin', text: "x" }],
    }),
  );
  add(
    "invalid-utf8-filename",
    validateCase(new Layout().checkpoint("step-10", await std()), {
      description: "An unlisted file named with the byte FF (not UTF-8; made at test time). It is an extra file " +
        "that no manifest can list, so unexpected_file; today the lossy name (U+FFFD) cannot be lstat'ed and " +
        "it is reported as io_error, a reason treated as transient and never quarantined.",
      expect: { exit: 1, reasons: ["unexpected_file"] },
      setup: [{ op: "write_octal_name", dir: "root/step-10", name: "bad\\377.bin", text: "x" }],
      bug: "BUG-6",
    }),
  );
  {
    const ck = await edited(10, (m) => {
      filesOf(m).push({ path: "shards", size: 0, digest: EMPTY_DIGEST, samples: [] });
    });
    add(
      "listed-path-is-folder",
      validateCase(new Layout().checkpoint("step-10", ck), {
        description: "The manifest lists shards, which is a folder on disk: no regular file by that name, so " +
          "file_missing (the folder is never opened as a file).",
        expect: { exit: 1, reasons: ["file_missing"], problems: ["file_missing:shards"] },
      }),
    );
  }

  // --- roots: latest, symlinked checkpoints, state and corrupt folders --------
  const twoValid = { "step-10": [], "step-20": [] };
  add(
    "latest-dotdot-scan",
    rootCase(await standardRoot("../outside/dir\n"), "scan", {
      description: "latest says ../outside/dir: reported invalid, never followed.",
      expect: { exit: 1, reasons: [], latest: "invalid", checkpoints: twoValid },
    }),
  );
  add(
    "latest-dotdot-resume",
    rootCase(await standardRoot("../outside/dir\n"), "resume", {
      description: "latest says ../outside/dir: resume falls back to the newest valid checkpoint.",
      expect: { exit: 0, reasons: [], chosen: "step-20", rejected: {} },
    }),
  );
  add(
    "latest-absolute-scan",
    rootCase(await standardRoot(null), "scan", {
      description: "latest holds the absolute path of a folder outside the root (written at test time).",
      expect: { exit: 1, reasons: [], latest: "invalid", checkpoints: twoValid },
      setup: [{ op: "write", path: "root/latest", text: "{outside}/dir\n" }],
    }),
  );
  add(
    "latest-garbage-scan",
    rootCase(
      await standardRoot(new Uint8Array([0x73, 0x74, 0x65, 0x70, 0x2d, 0x32, 0x30, 0x00, 0xff, 0xfe, 0x0a, 0x1b])),
      "scan",
      {
        description: "latest is binary garbage: step-20 then NUL, FF FE, a newline and an escape.",
        expect: { exit: 1, reasons: [], latest: "invalid", checkpoints: twoValid },
      },
    ),
  );
  add(
    "latest-leading-zero-resume",
    rootCase(await standardRoot("step-020\n"), "resume", {
      description: "latest says step-020, which is not a checkpoint name (no guessing): resume falls back.",
      expect: { exit: 0, reasons: [], chosen: "step-20", rejected: {} },
    }),
  );
  add(
    "latest-huge-sparse-resume",
    rootCase(await standardRoot(), "resume", {
      description: "latest is extended to 600 MiB (sparse, at test time): refused by size, never read; resume " +
        "falls back to the newest valid checkpoint.",
      expect: { exit: 0, reasons: [], chosen: "step-20", rejected: {} },
      setup: [{ op: "truncate", path: "root/latest", size: 600 * 1024 * 1024 }],
    }),
  );
  const latestLink = async (command: CaseCommand) =>
    rootCase((await standardRoot(null)).file("outside/latest-target.txt", "step-10\n"), command, {
      description: "latest is a symbolic link to outside/latest-target.txt (which says step-10): invalid, " +
        "never followed.",
      expect: command === "scan"
        ? { exit: 1, reasons: [], latest: "invalid", checkpoints: twoValid }
        : { exit: 0, reasons: [], chosen: "step-20", rejected: {} },
      setup: [{ op: "symlink", path: "root/latest", target: "{outside}/latest-target.txt" }],
    });
  add("latest-symlink-scan", await latestLink("scan"));
  add("latest-symlink-resume", await latestLink("resume"));
  add(
    "latest-fifo-resume",
    rootCase(await standardRoot(null), "resume", {
      description: "latest is a FIFO (made at test time): reported without opening it; resume falls back.",
      expect: { exit: 0, reasons: [], chosen: "step-20", rejected: {} },
      setup: [{ op: "fifo", path: "root/latest" }],
    }),
  );
  const outsideCheckpoint = async () => {
    const layout = await standardRoot("step-30\n");
    const ck = await checkpoint(30);
    for (const [path, bytes] of ck.files) layout.file(`outside/ckpt/${path}`, bytes);
    return layout.file(`outside/ckpt/${MANIFEST_NAME}`, pretty(ck.raw));
  };
  const symlinkedCheckpoint: SetupOp[] = [{ op: "symlink", path: "root/step-30", target: "{outside}/ckpt" }];
  add(
    "checkpoint-folder-symlink-scan",
    rootCase(await outsideCheckpoint(), "scan", {
      description: "step-30 is a symbolic link to a valid checkpoint outside the root, and latest names it: a " +
        "stray, never followed; latest names a checkpoint that does not exist.",
      expect: { exit: 1, reasons: [], latest: "ok", strays: ["step-30"], checkpoints: twoValid },
      setup: symlinkedCheckpoint,
    }),
  );
  add(
    "checkpoint-folder-symlink-resume",
    rootCase(await outsideCheckpoint(), "resume", {
      description: "As above, resume: the symlink is no candidate; the newest real checkpoint is chosen.",
      expect: { exit: 0, reasons: [], chosen: "step-20", rejected: {} },
      setup: symlinkedCheckpoint,
    }),
  );
  add(
    "checkpoint-folder-symlink-repair",
    rootCase(await outsideCheckpoint(), "resume", {
      description: "As above with --repair: latest names no checkpoint, so it is rewritten to step-20 (the " +
        "README: rewrite when latest is missing, unreadable or names an invalid checkpoint), and the link is " +
        "left alone.",
      run: { args: ["--repair"] },
      expect: {
        exit: 0,
        reasons: [],
        chosen: "step-20",
        rejected: {},
        actions: ["latest_rewritten:step-20"],
        root_unchanged: false,
      },
      setup: symlinkedCheckpoint,
    }),
  );
  {
    const layout = await standardRoot(null);
    layout.file("root/step-60", "a file named like a checkpoint\n");
    add(
      "root-special-entries-scan",
      rootCase(layout.file("root/latest", "step-20\n"), "scan", {
        description: "The root holds a FIFO named step-40, a staging-named symbolic link to a folder outside, " +
          "and a regular file named step-60 (made at test time where git cannot hold them): strays, none opened; " +
          "the scan passes.",
        expect: {
          exit: 0,
          reasons: [],
          latest: "ok",
          strays: [".staging-step-50-x", "step-40", "step-60"],
          checkpoints: twoValid,
        },
        setup: [
          { op: "fifo", path: "root/step-40" },
          { op: "symlink", path: "root/.staging-step-50-x", target: "{outside}/dir" },
        ],
      }),
    );
  }
  {
    const ck = await edited(20, (m) => {
      filesOf(m).push({ path: { toString: 1 }, size: 0, digest: EMPTY_DIGEST, samples: [] });
    });
    const layout = new Layout().checkpoint("step-10", await checkpoint(10)).checkpoint("step-20", ck)
      .file("root/latest", "step-20\n");
    add(
      "scan-one-hostile-manifest",
      rootCase(layout, "scan", {
        description: 'step-20\'s re-signed manifest lists a path {"toString": 1}. One hostile manifest must ' +
          "make one invalid checkpoint, not take the whole scan down (today: exit 4, no report at all).",
        expect: {
          exit: 1,
          reasons: ["unsafe_path"],
          latest: "ok",
          checkpoints: { "step-10": [], "step-20": ["unsafe_path"] },
        },
        bug: "BUG-2",
      }),
    );
  }
  add(
    "resume-skips-deep-nesting",
    rootCase(await standardRoot(), "resume", {
      description: "latest names step-20, whose manifest nests 100000 arrays in metadata (generated at test " +
        "time): resume falls back to step-10 and reports step-20 as manifest_corrupt (today: 'gone').",
      expect: {
        exit: 0,
        reasons: ["manifest_corrupt"],
        chosen: "step-10",
        rejected: { "step-20": ["manifest_corrupt"] },
      },
      setup: [{ op: "manifest_generate", dir: "root/step-20", kind: "deep_metadata", size: 100000 }],
      bug: "BUG-1",
    }),
  );
  add(
    "state-dir-symlink-scan",
    rootCase(await standardRoot(), "scan", {
      description: ".ckptkit is a symbolic link to outside/dir: scan records its results in the root's state, " +
        "which must never write through the link (state_error instead). Today state.json and state.lock land " +
        "in outside/dir.",
      expect: { exit: 0, reasons: [], latest: "ok", checkpoints: twoValid },
      setup: [{ op: "symlink", path: "root/.ckptkit", target: "{outside}/dir" }],
      bug: "BUG-4",
    }),
  );
  add(
    "state-file-symlink-resume",
    rootCase(await standardRoot(), "resume", {
      description: ".ckptkit/state.json is a symbolic link to the sentinel: resume --policy last-known-good " +
        "must not read it (no usable record, fall back to latest-valid). Today the sentinel is opened.",
      run: { args: ["--policy", "last-known-good"] },
      expect: { exit: 0, reasons: [], chosen: "step-20", rejected: {} },
      setup: [
        { op: "mkdir", path: "root/.ckptkit" },
        { op: "symlink", path: "root/.ckptkit/state.json", target: "{outside}/sentinel.txt" },
      ],
      bug: "BUG-4",
    }),
  );
  const damaged = async () => {
    const layout = await standardRoot();
    return layout.file("root/step-20/model.bin", pattern(20, 2999));
  };
  add(
    "corrupt-dir-symlink-repair",
    rootCase(await damaged(), "resume", {
      description: "corrupt is a symbolic link to outside/dir and latest names step-20, which is damaged: " +
        "resume --repair must not move step-20 out of the root through the link. Proposed: refuse with " +
        "unsafe_path (exit 4) and change nothing. Today step-20 is renamed into outside/dir.",
      run: { args: ["--repair"] },
      expect: { exit: 4, reasons: [], error_reason: "unsafe_path" },
      setup: [{ op: "symlink", path: "root/corrupt", target: "{outside}/dir" }],
      bug: "BUG-4",
    }),
  );
  add(
    "corrupt-dir-symlink-scan-quarantine",
    rootCase(await damaged(), "scan", {
      description: "As above with scan --quarantine.",
      run: { args: ["--quarantine"] },
      expect: { exit: 4, reasons: [], error_reason: "unsafe_path" },
      setup: [{ op: "symlink", path: "root/corrupt", target: "{outside}/dir" }],
      bug: "BUG-4",
    }),
  );
  add(
    "gc-trash-symlink",
    rootCase(await standardRoot(), "gc", {
      description: ".ckptkit/trash is a symbolic link to outside/dir. gc moves each deleted checkpoint into the " +
        "trash and then empties it: through the link it would delete step-10 and every file of outside/dir. " +
        "Proposed: refuse with unsafe_path (exit 4) before anything moves. Today outside/dir is emptied.",
      run: { args: ["--keep-last", "1"] },
      expect: { exit: 4, reasons: [], error_reason: "unsafe_path" },
      setup: [
        { op: "mkdir", path: "root/.ckptkit" },
        { op: "symlink", path: "root/.ckptkit/trash", target: "{outside}/dir" },
      ],
      bug: "BUG-7",
    }),
  );
  const newestBefore = (key: string, layout: Layout, description: string, setup: SetupOp[], bug?: string) =>
    add(
      key,
      rootCase(layout, "resume", {
        description: description +
          " A candidate whose created_at cannot be read is left out by newest-before (excluded), so step-10 " +
          "is chosen.",
        run: { args: BEFORE_TIME },
        expect: { exit: 0, reasons: [], chosen: "step-10", rejected: {}, excluded: ["step-20"] },
        setup,
        ...(bug ? { bug } : {}),
      }),
    );
  newestBefore(
    "newest-before-manifest-symlink",
    (await standardRoot()).drop(`root/step-20/${MANIFEST_NAME}`),
    "step-20's manifest is a symbolic link to the sentinel; resume --policy newest-before --before-time reads " +
      "every candidate's created_at before validating, and must not follow the link (today it opens the " +
      "sentinel).",
    [{ op: "symlink", path: `root/step-20/${MANIFEST_NAME}`, target: "{outside}/sentinel.txt" }],
    "BUG-5",
  );
  newestBefore(
    "newest-before-manifest-fifo",
    (await standardRoot()).drop(`root/step-20/${MANIFEST_NAME}`),
    "step-20's manifest is a FIFO; resume --policy newest-before --before-time must not open it (today it " +
      "blocks forever reading created_at).",
    [{ op: "fifo", path: `root/step-20/${MANIFEST_NAME}` }],
    "BUG-5",
  );
  newestBefore(
    "newest-before-manifest-600mb",
    await standardRoot(),
    "step-20's manifest is extended to 600 MiB (sparse, at test time); resume --policy newest-before " +
      "--before-time reads created_at first and must stay bounded (today it reads all 600 MiB into memory: " +
      "about 0.7 GB of RSS and 2 s, within the timeout).",
    [{ op: "truncate", path: `root/step-20/${MANIFEST_NAME}`, size: 600 * 1024 * 1024 }],
  );
  {
    // What ckptkit wrote before format 2: format_version 1, every file with its samples (a small file's one region
    // repeating its whole digest), indented throughout.
    const files = standardFiles(10);
    const raw: Record<string, unknown> = {
      format: "ckptkit.manifest",
      format_version: 1,
      job_id: "corpus",
      run_id: "run-1",
      step: 10,
      created_at: CREATED_AT,
      write_duration_s: 0.5,
      writer: { host: "corpus-host", ckptkit_version: "corpus" },
      hash: { algorithm: "sha256", sample_bytes: SAMPLE_BYTES },
      files: [...files].map(([path, bytes]) => entry(path, bytes)).sort((a, b) => a.path < b.path ? -1 : 1),
      total_bytes: [...files.values()].reduce((sum, bytes) => sum + bytes.length, 0),
      metadata: { source: "scripts/gen_corpus.ts" },
    };
    raw.manifest_digest = await manifestDigest(raw);
    add(
      "control-format-1-manifest",
      validateCase(new Layout().checkpoint("step-10", { files, raw }), {
        description: "Control: a format-1 manifest, as ckptkit wrote before format 2 (samples listed for every " +
          "file, small ones included; indented throughout), still validates in full.",
        expect: { exit: 0, reasons: [] },
      }),
    );
  }
  return list;
}

// ---------------------------------------------------------------------------
// Writing the corpus
// ---------------------------------------------------------------------------

const BUGS: Record<string, string> = {
  "BUG-1": "a manifest nested too deeply for the recursive canonicaliser crashes validation (RangeError)",
  "BUG-2": "a non-string path whose String() throws crashes validation (TypeError); one such manifest fails a " +
    "whole scan",
  "BUG-3": "sampled regions are not bounded: a manifest can make a sample validation read any multiple of a file",
  "BUG-4": ".ckptkit, .ckptkit/state.json and corrupt are followed when they are symbolic links: state and " +
    "quarantined checkpoints are written outside the root, and state is read from outside",
  "BUG-5": "resume --policy newest-before reads created_at with Deno.readTextFile: follows a symlinked manifest " +
    "outside the root, blocks forever on a FIFO, reads any size",
  "BUG-6": "a file name that is not UTF-8 is reported as io_error (transient) instead of unexpected_file",
  "BUG-7": "gc follows a symbolic link at .ckptkit/trash: it moves deleted checkpoints there and then deletes " +
    "everything in the link's target, outside the root",
};

function readme(written: CorpusCase[]): string {
  const rows = written.map((c) => {
    const e = c.expect;
    const what = [
      `exit ${e.exit}`,
      e.error_reason ? `error ${e.error_reason}` : "",
      e.reasons.length ? e.reasons.join(", ") : "no problems",
      e.latest ? `latest ${e.latest}` : "",
      e.chosen !== undefined ? `chosen ${e.chosen}` : "",
      e.excluded?.length ? `excluded ${e.excluded.join(" ")}` : "",
      e.actions?.length ? `actions ${e.actions.join(", ")}` : "",
      e.strays?.length ? `strays ${e.strays.join(" ")}` : "",
    ].filter(Boolean).join("; ");
    const command = [c.run.command, c.run.target, ...c.run.args].join(" ");
    return `| \`${c.name}\` | \`${command}\` | ${what} | ${c.bug ?? ""} |`;
  });
  return [
    "# Hostile-input corpus",
    "",
    "Generated by `scripts/gen_corpus.ts`; do not edit by hand. Regenerate (deterministic, idempotent) with:",
    "",
    "```sh",
    GENERATE_COMMAND,
    "```",
    "",
    "Each `NN-name/` folder is one case: `case.json` says what to run (`ckptkit <command> <tmp>/<target> --json " +
    "<args>`), what must come out (exit code, stable problem reasons, and for scan and resume the per-checkpoint " +
    "results), and a `setup` recipe for what git cannot or should not hold (symlinks, hard links, FIFOs, devices, " +
    "sockets, names with newlines, unicode or non-UTF-8 bytes, sparse 600 MiB files, generated huge or deeply " +
    "nested manifests). `root/` holds the checkpoint root and `outside/` files placed beside it. Every stored file " +
    "ends in `.raw`, stripped when the case is materialised, so that `deno fmt` leaves hostile manifests alone.",
    "",
    "`tests/hostile_test.ts` materialises each case in a temporary folder, with sentinels outside the root " +
    "(`outside/sentinel.txt`, `outside/dir/`), runs the CLI under the permission flags of the `ckptkit` task with a " +
    "20 s timeout, under `strace` when available, and checks the exit code, the reasons, that stdout is JSON, that " +
    "stderr holds no stack trace, that nothing outside the root was opened (strace, and the sentinels' access " +
    "times) or changed, and that read-only commands changed nothing in the root but `.ckptkit/`.",
    "",
    "Cases with a bug number expose a ckptkit bug and fail until it is fixed:",
    "",
    ...Object.entries(BUGS).map(([id, text]) => `- ${id}: ${text}.`),
    "",
    "| case | run | expected | bug |",
    "| ---- | --- | -------- | --- |",
    ...rows,
    "",
  ].join("\n");
}

async function generate(): Promise<void> {
  const sources = await cases();
  await Deno.remove(CORPUS_DIR, { recursive: true }).catch((err) => {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  });
  await Deno.mkdir(CORPUS_DIR, { recursive: true });
  const written: CorpusCase[] = [];
  for (const [i, [key, source]] of sources.entries()) {
    const name = `${String(i + 1).padStart(2, "0")}-${key}`;
    const dir = `${CORPUS_DIR}/${name}`;
    for (const [path, bytes] of [...source.files].sort(([a], [b]) => (a < b ? -1 : 1))) {
      await Deno.mkdir(parent(`${dir}/${path}`), { recursive: true });
      await Deno.writeFile(`${dir}/${path}${RAW_SUFFIX}`, bytes);
    }
    const spec = source.spec;
    const stored = {
      description: spec.description,
      run: spec.run,
      expect: spec.expect,
      setup: spec.setup,
      ...(spec.requires ? { requires: spec.requires } : {}),
      ...(spec.atime_exempt ? { atime_exempt: spec.atime_exempt } : {}),
      ...(spec.bug ? { bug: spec.bug } : {}),
    };
    await Deno.writeTextFile(`${dir}/case.json`, JSON.stringify(stored, null, 2) + "\n");
    written.push({ name, ...stored });
  }
  await Deno.writeTextFile(`${CORPUS_DIR}/README.md`, readme(written));
  // case.json and README.md in the repository's own formatting, so `deno fmt --check` passes.
  const repo = new URL("..", import.meta.url).pathname;
  const fmt = await new Deno.Command(Deno.execPath(), { args: ["fmt", "--quiet", CORPUS_DIR], cwd: repo }).output();
  if (!fmt.success) throw new Error(`deno fmt failed: ${new TextDecoder().decode(fmt.stderr)}`);
  console.log(`gen_corpus: ${written.length} cases in ${CORPUS_DIR}`);
}

if (import.meta.main) await generate();
