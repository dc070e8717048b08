/**
 * Helpers shared by the tests: temporary roots, byte-level corruption of real
 * files, and running the CLI as a subprocess under exactly the permission
 * flags the compiled binary gets.
 */

import denoJson from "../deno.json" with { type: "json" };

const repo = new URL("..", import.meta.url).pathname.replace(/\/$/, "");

/** Absolute path of the repository. */
export const REPO = repo;
/** Real checkpoint files written by other tools (provenance and sha256 in tests/fixtures/SOURCES.md); never edited. */
export const FIXTURES = new URL("./fixtures", import.meta.url).pathname;

/**
 * The permission flags of the `compile` task: what the release binary is
 * granted, the one list every other task repeats (tests/cli_test.ts checks),
 * and what every CLI test runs `cli.ts` under.
 */
export function ckptkitFlags(): string[] {
  const task = denoJson.tasks.compile;
  const match = /^deno compile (.+?) --include /.exec(task);
  if (!match) throw new Error(`unexpected compile task: ${task}`);
  return match[1].split(/\s+/);
}

/** A temporary folder removed when disposed (`await using tmp = await tempDir()`). */
export interface TempDir extends AsyncDisposable {
  /** Its real path. */
  path: string;
}

/** A fresh temporary folder (real path), removed when disposed. */
export async function tempDir(prefix = "ckptkit-test-"): Promise<TempDir> {
  const path = await Deno.realPath(await Deno.makeTempDir({ prefix }));
  return {
    path,
    [Symbol.asyncDispose]: () => Deno.remove(path, { recursive: true }).catch(() => {}),
  };
}

/** Flips one bit of the byte at `offset` (negative: from the end). */
export async function flipByte(path: string, offset = 0): Promise<void> {
  const bytes = await Deno.readFile(path);
  const at = offset < 0 ? bytes.length + offset : offset;
  bytes[at] ^= 0x01;
  await Deno.writeFile(path, bytes);
}

/** Cuts a file to `size` bytes. */
export async function truncateFile(path: string, size: number): Promise<void> {
  await Deno.truncate(path, size);
}

/** What a CLI run printed and returned. */
export interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
  /** The JSON log lines on stderr, parsed. */
  logs: Record<string, unknown>[];
}

/** Options for {@linkcode runCli}. */
export interface RunCliOptions {
  env?: Record<string, string>;
  cwd?: string;
  /** Remove CKPTKIT_* variables inherited from the test environment (default true). */
  cleanEnv?: boolean;
}

/**
 * Runs `deno run <ckptkit task flags> cli.ts …args` and collects its output.
 */
export async function runCli(
  args: string[],
  options: RunCliOptions = {},
): Promise<CliRun> {
  const output = await cliCommand(args, options).output();
  return decode(output);
}

/** The CLI as a `Deno.Command`, for tests that spawn and signal it. */
export function cliCommand(
  args: string[],
  options: RunCliOptions = {},
): Deno.Command {
  const env: Record<string, string> = { NO_COLOR: "1", ...options.env };
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "--quiet", ...ckptkitFlags(), `${repo}/cli.ts`, ...args],
    cwd: options.cwd ?? repo,
    env,
    clearEnv: true,
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
  });
}

/** Decodes a finished subprocess's output. */
export function decode(output: Deno.CommandOutput): CliRun {
  const stdout = new TextDecoder().decode(output.stdout);
  const stderr = new TextDecoder().decode(output.stderr);
  const logs = stderr.split("\n").filter((line) => line.startsWith("{")).map((
    line,
  ) => JSON.parse(line));
  return { code: output.code, stdout, stderr, logs };
}

/** Lists a folder's entry names, sorted. */
export async function names(dir: string): Promise<string[]> {
  return (await Array.fromAsync(Deno.readDir(dir))).map((e) => e.name).sort();
}

/** Copies a folder tree (files and folders only). */
export async function copyTree(from: string, to: string): Promise<void> {
  await Deno.mkdir(to, { recursive: true });
  for await (const entry of Deno.readDir(from)) {
    if (entry.isDirectory) {
      await copyTree(`${from}/${entry.name}`, `${to}/${entry.name}`);
    } else if (entry.isFile) {
      await Deno.copyFile(`${from}/${entry.name}`, `${to}/${entry.name}`);
    }
  }
}

/** Commits a small checkpoint of `step` into `root` with the library writer. */
export async function writeStep(
  root: string,
  step: number,
  files = 2,
): Promise<string> {
  const { openCheckpointWriter } = await import("../src/core/writer.ts");
  const writer = await openCheckpointWriter(root, {
    step,
    jobId: "job",
    runId: "run",
    sampleBytes: 1024,
  });
  for (let i = 0; i < files; i++) {
    await writer.writeFile(
      `shard-${i}.bin`,
      new Uint8Array(4096).map((_, j) => (j * (step + i + 1)) & 0xff),
    );
  }
  return (await writer.commit()).path;
}

/** Every path under `dir` with its size and mtime, to prove nothing changed. */
export async function snapshot(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (rel: string) => {
    for await (const entry of Deno.readDir(rel ? `${dir}/${rel}` : dir)) {
      const path = rel ? `${rel}/${entry.name}` : entry.name;
      const info = await Deno.lstat(`${dir}/${path}`);
      out.push(`${path} ${info.size} ${info.mtime?.getTime()}`);
      if (entry.isDirectory) await walk(path);
    }
  };
  await walk("");
  return out.sort();
}

/** True when tests may mount file systems (CI and the sandbox run as root). */
export const CAN_MOUNT = Deno.uid() === 0;

/** Mounts a fresh tmpfs of `size` (e.g. "4m") at `path`, unmounted when disposed. Needs root. */
export async function mountTmpfs(path: string, size: string): Promise<AsyncDisposable> {
  await Deno.mkdir(path, { recursive: true });
  const mount = await new Deno.Command("mount", { args: ["-t", "tmpfs", "-o", `size=${size}`, "tmpfs", path] })
    .output();
  if (!mount.success) throw new Error(`mount tmpfs failed: ${new TextDecoder().decode(mount.stderr)}`);
  return {
    [Symbol.asyncDispose]: async () => {
      await new Deno.Command("umount", { args: ["-l", path] }).output();
    },
  };
}

/** Reads `stream` until it contains `needle` (a backstop of 5 minutes catches a real hang only), then stops reading it. */
export async function waitForLine(
  stream: ReadableStream<Uint8Array>,
  needle: string,
): Promise<void> {
  const reader = stream.pipeThrough(new TextDecoderStream()).getReader();
  let seen = "";
  const deadline = setTimeout(() => reader.cancel(), 300_000);
  try {
    while (!seen.includes(needle)) {
      const { done, value } = await reader.read();
      if (done) throw new Error(`stream ended before "${needle}": ${seen}`);
      seen += value;
    }
  } finally {
    clearTimeout(deadline);
    await reader.cancel();
  }
}

/** Parses exposition text into "name{labels}" -> value. */
export function samples(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const cut = line.lastIndexOf(" ");
    out.set(line.slice(0, cut), Number(line.slice(cut + 1)));
  }
  return out;
}

let torchInterpreter: Promise<string> | undefined;

/**
 * The first of `$CKPTKIT_TEST_PYTHON`, `python3` on the PATH and Debian's
 * /usr/bin/python3 that imports torch (a pyenv `python3` hides Debian's
 * python3-torch). Throws, saying what to install, when none does: the real
 * PyTorch tests fail rather than skip.
 */
export function torchPython(): Promise<string> {
  torchInterpreter ??= (async () => {
    const tried: string[] = [];
    const preferred = Deno.env.get("CKPTKIT_TEST_PYTHON");
    for (const candidate of [...(preferred ? [preferred] : []), "python3", "/usr/bin/python3"]) {
      try {
        const out = await new Deno.Command(candidate, {
          args: ["-c", "import sys, torch; print(sys.executable)"],
          env: { PYTHONDONTWRITEBYTECODE: "1" },
          stdin: "null",
          stdout: "piped",
          stderr: "piped",
        }).output();
        if (out.success) return new TextDecoder().decode(out.stdout).trim();
        tried.push(`${candidate}: ${new TextDecoder().decode(out.stderr).trim().split("\n").at(-1)}`);
      } catch (err) {
        tried.push(`${candidate}: ${err instanceof Error ? err.message : err}`);
      }
    }
    throw new Error(
      `these tests need real PyTorch: install python3-torch (apt-get install -y python3-torch, as .ci/run does); ` +
        `import torch failed with ${tried.join("; ")}`,
    );
  })();
  return torchInterpreter;
}
