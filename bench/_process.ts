/**
 * Subprocess helpers of the benchmark: running tools with a clean
 * environment, finding or installing them, and keeping track of every child
 * so that an interrupted run can stop them before removing its data.
 *
 * @module
 */

import { join } from "node:path";
import { fileURLToPath } from "node:url";
import denoJson from "../deno.json" with { type: "json" };

/** The repository root: the CLI and the default report live relative to it. */
export const REPO = fileURLToPath(new URL("..", import.meta.url)).replace(/\/$/, "");
/** The CLI entry point. */
export const CLI = join(REPO, "cli.ts");
/** The repository's deno.json, passed to probe scripts outside the repository. */
export const CONFIG = join(REPO, "deno.json");

/** Captured result of a finished subprocess. */
export interface Output {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Aborted on Ctrl-C: loops that write data in this process check it, so that
 * nothing keeps writing into the work folder while it is removed.
 */
export const interrupted = new AbortController();

/** Children still running, stopped by {@linkcode stopChildren} on Ctrl-C. */
const running = new Set<Deno.ChildProcess>();

/** Progress goes to stderr, so that stdout holds only the final table. */
export function progress(message: string): void {
  console.error(`[bench] ${message}`);
}

/**
 * This process's environment minus CKPTKIT_* variables: a CKPTKIT_CONFIG or
 * CKPTKIT_ROOT in the caller's shell would change what the CLI does and so
 * what is measured.
 */
export function childEnv(): Record<string, string> {
  return Object.fromEntries(
    Object.entries(Deno.env.toObject()).filter(([name]) => !name.startsWith("CKPTKIT_")),
  );
}

/** Runs a program to completion and captures its output; `env` adds variables. */
export async function capture(
  program: string,
  args: string[],
  cwd: string = REPO,
  env: Record<string, string> = {},
): Promise<Output> {
  const child = new Deno.Command(program, {
    args,
    cwd,
    clearEnv: true,
    env: { ...childEnv(), ...env },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  running.add(child);
  try {
    const { code, stdout, stderr } = await child.output();
    const decoder = new TextDecoder();
    return { code, stdout: decoder.decode(stdout), stderr: decoder.decode(stderr) };
  } finally {
    running.delete(child);
  }
}

/** Like {@linkcode capture}, but a non-zero exit is an error. */
export async function mustRun(program: string, args: string[], cwd: string = REPO): Promise<Output> {
  const out = await capture(program, args, cwd);
  if (out.code !== 0) {
    throw new Error(`${program} ${args.join(" ")} exited ${out.code}\n${out.stderr}${out.stdout}`);
  }
  return out;
}

/** Runs a shell command line to completion (`sh -c`) and captures its output. */
export function shell(command: string): Promise<Output> {
  return capture("sh", ["-c", command]);
}

/** Like {@linkcode shell}, but a non-zero exit is an error. */
export function mustShell(command: string): Promise<Output> {
  return mustRun("sh", ["-c", command]);
}

/**
 * Stops every child still running (SIGTERM, then SIGKILL after `graceMs`),
 * so that nothing writes into the work folder while it is removed.
 */
export async function stopChildren(graceMs = 2000): Promise<void> {
  const children = [...running];
  for (const child of children) {
    try {
      child.kill("SIGTERM");
    } catch {
      // Already gone.
    }
  }
  const deadline = new Promise((resolve) => setTimeout(resolve, graceMs));
  await Promise.race([Promise.allSettled(children.map((child) => child.status)), deadline]);
  for (const child of children) {
    try {
      child.kill("SIGKILL");
    } catch {
      // Already gone.
    }
  }
}

/** The first line a command prints, or null when it cannot run. */
export async function firstLine(program: string, args: string[]): Promise<string | null> {
  try {
    const out = await capture(program, args);
    return out.code === 0 ? out.stdout.split("\n")[0].trim() : null;
  } catch {
    return null;
  }
}

/** Quotes a word for `sh` when it needs it. */
export function shellQuote(word: string): string {
  return /^[\w@%+=:,./-]+$/.test(word) ? word : `'${word.replaceAll("'", `'\\''`)}'`;
}

/** The absolute path of `name` on PATH, or null. */
export async function which(name: string): Promise<string | null> {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    if (!dir) continue;
    const path = join(dir, name);
    try {
      const info = await Deno.stat(path);
      if (info.isFile && ((info.mode ?? 0) & 0o111) !== 0) return path;
    } catch {
      // Not in this PATH entry.
    }
  }
  return null;
}

/**
 * Finds `bin`, installing Debian package `pkg` when it is missing, we are
 * root, apt-get exists and installing is allowed: the machines this runs on
 * are recreated often, so the benchmark brings its own tools. Returns the
 * path, or null with the reason appended to `notes`.
 */
export async function ensureTool(bin: string, pkg: string, install: boolean, notes: string[]): Promise<string | null> {
  const found = await which(bin);
  if (found) return found;
  const aptGet = await which("apt-get");
  if (!install || !aptGet || Deno.uid() !== 0) {
    notes.push(`\`${bin}\` is not installed (Debian package \`${pkg}\`) and was not installed automatically.`);
    return null;
  }
  progress(`installing ${pkg} with apt-get`);
  // A fresh machine may have no package lists yet: update once, then retry.
  const noninteractive = { DEBIAN_FRONTEND: "noninteractive" };
  const installArgs = ["install", "-y", "--no-install-recommends", pkg];
  if ((await capture(aptGet, installArgs, REPO, noninteractive)).code !== 0) {
    await capture(aptGet, ["update"], REPO, noninteractive);
    await capture(aptGet, installArgs, REPO, noninteractive);
  }
  const installed = await which(bin);
  if (!installed) notes.push(`\`${bin}\` could not be installed with \`apt-get install ${pkg}\`.`);
  return installed;
}

/** The `deno run <flags>` permission flags of the `ckptkit` task in deno.json. */
export function ckptkitFlags(): string[] {
  const match = /^deno run (.*) cli\.ts$/.exec(denoJson.tasks.ckptkit);
  if (!match) throw new Error(`unexpected ckptkit task in deno.json: ${denoJson.tasks.ckptkit}`);
  return match[1].split(/\s+/);
}

/** argv of the CLI as the `ckptkit` task runs it: `deno run <flags> cli.ts`. */
export function ckptkitArgv(): string[] {
  return [Deno.execPath(), "run", ...ckptkitFlags(), CLI];
}

/** The same, as a shell command prefix. */
export function ckptkitShell(): string {
  return ckptkitArgv().map(shellQuote).join(" ");
}
