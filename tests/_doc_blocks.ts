/**
 * The shell blocks of README.md and docs/, and a sandbox that runs them as a
 * reader would: bash, `ckptkit` on PATH, the paths of the examples moved into
 * a temporary folder. Used by tests/docs_commands_test.ts.
 */

import assert from "node:assert/strict";
import { ckptkitFlags, REPO } from "./_helpers.ts";
import { freePorts } from "./_servers.ts";
import { childEnv, writeExecutable } from "./_slurm.ts";

/** Fence info strings whose blocks are shell commands a reader types. */
export const SHELL_LANGUAGES = ["sh", "bash", "shell"];

/** One fenced shell block of a page. */
export interface DocBlock {
  /** The page, relative to the repository: `README.md`, `docs/monitoring.md`. */
  page: string;
  /** 1-based line of the opening fence. */
  line: number;
  /** Its text, every line ending in "\n", indentation of the fence removed. */
  text: string;
}

/** README.md and every Markdown page under docs/ (those that exist), sorted. */
export async function docPages(repo = REPO): Promise<string[]> {
  const pages = ["README.md"];
  const walk = async (dir: string): Promise<void> => {
    let entries: Deno.DirEntry[];
    try {
      entries = await Array.fromAsync(Deno.readDir(`${repo}/${dir}`));
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) return;
      throw error;
    }
    for (const entry of entries.sort((a, b) => a.name.localeCompare(b.name))) {
      if (entry.isDirectory) await walk(`${dir}/${entry.name}`);
      else if (entry.isFile && entry.name.endsWith(".md")) pages.push(`${dir}/${entry.name}`);
    }
  };
  await walk("docs");
  return pages;
}

/**
 * The fenced shell blocks of a Markdown text (CommonMark fences: three or
 * more backticks or tildes, indented or not, closed by a fence of the same
 * character at least as long).
 */
export function shellBlocks(page: string, markdown: string): DocBlock[] {
  const blocks: DocBlock[] = [];
  const lines = markdown.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const open = /^(\s*)(`{3,}|~{3,})\s*([^\s`]*)/.exec(lines[i]);
    if (!open) continue;
    const [, indent, fence, info] = open;
    const body: string[] = [];
    let j = i + 1;
    for (; j < lines.length; j++) {
      const close = /^\s*(`{3,}|~{3,})\s*$/.exec(lines[j]);
      if (close && close[1][0] === fence[0] && close[1].length >= fence.length) break;
      body.push(lines[j].startsWith(indent) ? lines[j].slice(indent.length) : lines[j].trimStart());
    }
    if (SHELL_LANGUAGES.includes(info.toLowerCase())) {
      blocks.push({ page, line: i + 1, text: body.map((line) => `${line}\n`).join("") });
    }
    i = j;
  }
  return blocks;
}

/** Every shell block of README.md and docs/. */
export async function allShellBlocks(repo = REPO): Promise<DocBlock[]> {
  const blocks: DocBlock[] = [];
  for (const page of await docPages(repo)) {
    blocks.push(...shellBlocks(page, await Deno.readTextFile(`${repo}/${page}`)));
  }
  return blocks;
}

/** A line without its shell comment (a `#` starting a word, outside quotes). */
export function stripComment(line: string): string {
  let quote = "";
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (quote) {
      if (c === "\\" && quote === '"') i++;
      else if (c === quote) quote = "";
    } else if (c === "\\") {
      i++;
    } else if (c === "'" || c === '"') {
      quote = c;
    } else if (c === "#" && (i === 0 || /\s/.test(line[i - 1]))) {
      return line.slice(0, i).trimEnd();
    }
  }
  return line.trimEnd();
}

/**
 * The commands of a block, one per entry: `\` continuations joined (kept as
 * written, newlines included), blank and comment-only lines dropped. Comments
 * after a command stay: bash reads them as the reader's shell would.
 */
export function commandsOf(text: string): string[] {
  const commands: string[] = [];
  let current = "";
  for (const line of text.split("\n")) {
    if (!current && stripComment(line).trim() === "") continue;
    current += current ? `\n${line}` : line;
    if (!stripComment(line).endsWith("\\")) {
      commands.push(current);
      current = "";
    }
  }
  if (current) commands.push(current);
  return commands;
}

/** The first command line of a block, for messages. */
export function firstLine(text: string): string {
  return commandsOf(text)[0]?.split("\n")[0] ?? text.split("\n")[0];
}

/** Folders of the examples that the sandbox moves under its own folder (never touched for real). */
export const MOVED_PREFIXES = ["/tmp", "/mnt", "/srv", "/shared", "/var/lib/node_exporter"];

/** What one command of a block did. */
export interface CommandResult {
  /** The command as written in the block. */
  command: string;
  /** As run: paths and ports rewritten. */
  ran: string;
  code: number;
  stdout: string;
  stderr: string;
}

/** A command's outcome for assertion messages. */
export function showResult(r: CommandResult): string {
  return `$ ${r.ran}\nexit ${r.code}\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`;
}

/** Options of {@linkcode Sandbox.run}. */
export interface RunOptions {
  /** Extra environment (e.g. SLURM_PROCID). */
  env?: Record<string, string>;
  /** Working folder (default: the sandbox's checkout). */
  cwd?: string;
  /** bash lines run first (e.g. `shopt -s expand_aliases`). */
  preamble?: string;
  /** Leave `ckptkit` off PATH (to prove an alias works). */
  withoutCkptkit?: boolean;
}

/**
 * A temporary folder standing in for the reader's machine:
 * - `bin/ckptkit`: `deno run <the ckptkit task's flags> <repo>/cli.ts "$@"`;
 * - `checkout/`: symbolic links to the repository's top-level entries (not
 *   `dist/` or `demo-root/`), the working folder of every block, so
 *   `examples/...`, `scripts/...` and `deno task` resolve as in a checkout
 *   while what the blocks write there (demo-root/, dist/) stays in the sandbox;
 * - every absolute path under {@linkcode MOVED_PREFIXES} in a block becomes the
 *   same path under the sandbox (`/tmp/ckpts` -> `<sandbox>/tmp/ckpts`);
 * - ports given to {@linkcode sandbox} (`127.0.0.1:9090`) become free ones, and
 *   `http://pushgateway:9091` the local Pushgateway's free port.
 */
export interface Sandbox extends AsyncDisposable {
  dir: string;
  checkout: string;
  /** The sandbox path of a path written in a block. */
  path(written: string): string;
  /** The free port standing in for a port written in a block. */
  port(written: number): number;
  /** A block's text with the paths and ports moved. */
  rewrite(text: string): string;
  /** Runs commands in one bash, each one's exit code and output recorded apart. */
  run(commands: string[], options?: RunOptions): Promise<CommandResult[]>;
  /** The environment a block runs under. */
  env(options?: RunOptions): Record<string, string>;
  /** PIDs of the background (`&`) processes started so far. */
  backgroundPids(): Promise<number[]>;
  /** SIGTERM to each background process by PID, SIGKILL if still there after a backstop. */
  stopBackground(): Promise<void>;
}

/** Whether a process exists and is not a zombie. */
export function alive(pid: number): boolean {
  // `ps`, as Deno reads /proc/<pid>/stat only with --allow-all.
  const ps = new Deno.Command("ps", { args: ["-o", "stat=", "-p", String(pid)], stdout: "piped", stderr: "null" })
    .outputSync();
  const stat = new TextDecoder().decode(ps.stdout).trim();
  return ps.code === 0 && stat !== "" && !stat.startsWith("Z");
}

async function stopPid(pid: number): Promise<void> {
  try {
    Deno.kill(pid, "SIGTERM");
  } catch {
    return; // already gone
  }
  // A backstop against a process ignoring SIGTERM, not a timing requirement.
  const deadline = Date.now() + 30_000;
  while (alive(pid) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 100));
  if (alive(pid)) {
    try {
      Deno.kill(pid, "SIGKILL");
    } catch {
      // exited meanwhile
    }
  }
}

const MARKER = "@@ckptkit-doc-command";

/** A fresh sandbox; `ports` are the ports of the blocks' examples to move. */
export async function sandbox(options: { ports?: number[] } = {}): Promise<Sandbox> {
  const dir = await Deno.realPath(await Deno.makeTempDir({ prefix: "ckptkit-docs-" }));
  const checkout = `${dir}/checkout`;
  const state = `${dir}/.doc-commands`;
  await Deno.mkdir(checkout);
  await Deno.mkdir(state);
  // Every machine has a /tmp.
  await Deno.mkdir(`${dir}/tmp`);
  for await (const entry of Deno.readDir(REPO)) {
    if (["dist", "demo-root", ".git"].includes(entry.name)) continue;
    await Deno.symlink(`${REPO}/${entry.name}`, `${checkout}/${entry.name}`);
  }
  const argv = [Deno.execPath(), "run", ...ckptkitFlags(), `${REPO}/cli.ts`];
  await writeExecutable(`${dir}/bin/ckptkit`, `#!/bin/sh\nexec ${argv.map(shellQuote).join(" ")} "$@"\n`);
  const ports = new Map<number, number>();
  const free = freePorts(options.ports?.length ?? 0);
  (options.ports ?? []).forEach((port, i) => ports.set(port, free[i]));
  const moved = new RegExp(
    `(?<![\\w.:/-])(${MOVED_PREFIXES.map((p) => p.replaceAll("/", "\\/")).join("|")})(?=/|\\b)`,
    "g",
  );
  let runs = 0;

  const box: Sandbox = {
    dir,
    checkout,
    path: (written) => written.replace(moved, (prefix) => `${dir}${prefix}`),
    port(written) {
      const port = ports.get(written);
      assert.ok(port, `no free port for ${written}`);
      return port;
    },
    rewrite(text) {
      let out = text.replace(moved, (prefix) => `${dir}${prefix}`);
      for (const [from, to] of ports) {
        out = out.replaceAll(`127.0.0.1:${from}`, `127.0.0.1:${to}`);
        if (from === 9091) out = out.replaceAll("http://pushgateway:9091", `http://127.0.0.1:${to}`);
      }
      return out;
    },
    env(runOptions = {}) {
      const path = runOptions.withoutCkptkit ? Deno.env.get("PATH")! : `${dir}/bin:${Deno.env.get("PATH")}`;
      return childEnv({ PATH: path, ...runOptions.env });
    },
    async run(commands, runOptions = {}) {
      const id = ++runs;
      const script: string[] = [runOptions.preamble ?? ""];
      const ran = commands.map((command) => box.rewrite(command));
      ran.forEach((command, i) => {
        if (/&$/.test(stripComment(command))) {
          // A background server: its output to a log, its PID recorded so it is stopped by PID.
          script.push(
            `${stripComment(command).replace(/&$/, "")} >${state}/bg-${id}-${i}.log 2>&1 &`,
            `echo $! >>${state}/pids`,
          );
        } else {
          script.push(command);
        }
        script.push(
          `__rc=$?; printf '\\n${MARKER} ${i} %d\\n' "$__rc"; printf '\\n${MARKER} ${i} %d\\n' "$__rc" >&2`,
        );
      });
      await Deno.writeTextFile(`${state}/script-${id}.sh`, script.join("\n") + "\n");
      const child = new Deno.Command("bash", {
        args: ["--noprofile", "--norc", `${state}/script-${id}.sh`],
        cwd: runOptions.cwd ?? checkout,
        env: box.env(runOptions),
        clearEnv: true,
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      // A backstop against a hang (minutes), not a timing requirement.
      const timer = setTimeout(() => {
        try {
          child.kill("SIGKILL");
        } catch {
          // exited
        }
      }, 600_000);
      const output = await child.output().finally(() => clearTimeout(timer));
      const text = new TextDecoder();
      const split = (stream: string) => {
        const parts = new Map<number, { out: string; code: number }>();
        let rest = stream;
        for (let i = 0; i < commands.length; i++) {
          const match = new RegExp(`\\n${MARKER} ${i} (\\d+)\\n`).exec(rest);
          if (!match) break;
          parts.set(i, { out: rest.slice(0, match.index), code: Number(match[1]) });
          rest = rest.slice(match.index + match[0].length);
        }
        return parts;
      };
      const stdout = split(text.decode(output.stdout));
      const stderr = split(text.decode(output.stderr));
      return commands.map((command, i) => {
        assert.ok(
          stdout.has(i) && stderr.has(i),
          `bash stopped before the end of \`${command}\` (exit ${output.code}):\n${text.decode(output.stdout)}\n${
            text.decode(output.stderr)
          }`,
        );
        return {
          command,
          ran: ran[i],
          code: stdout.get(i)!.code,
          stdout: stdout.get(i)!.out,
          stderr: stderr.get(i)!.out,
        };
      });
    },
    async backgroundPids() {
      try {
        return (await Deno.readTextFile(`${state}/pids`)).trim().split("\n").filter(Boolean).map(Number);
      } catch {
        return [];
      }
    },
    async stopBackground() {
      for (const pid of (await box.backgroundPids()).reverse()) await stopPid(pid);
    },
    async [Symbol.asyncDispose]() {
      await box.stopBackground();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
  return box;
}

function shellQuote(arg: string): string {
  return /^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replaceAll("'", `'\\''`)}'`;
}
