/**
 * The command reference of docs/commands/, rendered from the commander tree
 * itself (usage, description, arguments, options with their defaults,
 * choices and environment variables) so that it cannot drift from `--help`.
 * `scripts/gen_cli_docs.ts` reads and writes the pages; this module only
 * turns the tree and the pages' text into new text.
 *
 * The Markdown is written the way `deno fmt` would write it (tables padded,
 * prose wrapped at the repository's line width), so the generated pages pass
 * `deno fmt --check` without being formatted again.
 *
 * @module
 */

import type { Command, Option } from "../deps/commander.ts";
import { EXIT } from "./context.ts";

/** deno.json's `fmt.lineWidth`: prose is wrapped here as `deno fmt` wraps it. */
export const LINE_WIDTH = 120;

/** The page of the command reference that holds the global options, the exit codes and the command index. */
export const GLOBAL_PAGE = "README.md";

/** The marker pair a command's page holds its generated reference between. */
export const COMMAND_MARKERS = {
  begin: "<!-- cli-reference:begin -->",
  end: "<!-- cli-reference:end -->",
} as const;

/** The marker pair of {@linkcode GLOBAL_PAGE}. */
export const GLOBAL_MARKERS = {
  begin: "<!-- cli-reference:global:begin -->",
  end: "<!-- cli-reference:global:end -->",
} as const;

/**
 * Any command of the tree, whatever its arguments and options (commander's
 * `CommandUnknownOpts`, which src/deps/commander.ts does not re-export).
 */
export type AnyCommand = Command["commands"][number];

/** The name of an exit code in {@linkcode EXIT}. */
export type ExitName = keyof typeof EXIT;

/** What each exit code means, for every command (the table of the global page). */
export const EXIT_MEANINGS = {
  ok: "success",
  problems: "integrity problems found",
  usage: "usage or config error: an unknown option, a bad value, an unreadable config file",
  nothingToResume: "nothing to resume from: the root has never held a checkpoint",
  runtime: "runtime error: I/O, lock held, no space, checkpoint exists",
} as const satisfies Record<ExitName, string>;

/**
 * The exit codes each command's action returns, by command path. Every
 * command can also end with a usage error (2: commander's parsing, a bad
 * config) or a runtime error (4: any other thrown error), so those are not
 * listed here. commander cannot know what an action returns: this table is
 * checked against the `EXIT.*` each command's module returns by
 * tests/cli_docs_test.ts.
 */
export const COMMAND_EXITS: Readonly<Record<string, readonly ExitName[]>> = {
  "write": ["ok"],
  "commit": ["ok"],
  "seal": ["ok", "problems"],
  "validate": ["ok", "problems"],
  "export-sums": ["ok", "problems"],
  "scan": ["ok", "problems"],
  "report merge": ["ok", "problems"],
  "resume": ["ok", "problems", "nothingToResume"],
  "quarantine": ["ok"],
  "gc": ["ok"],
  "emit-metrics": ["ok", "problems"],
  "serve": ["ok"],
};

/** The codes every command can end with besides what its action returns. */
const ALWAYS: readonly ExitName[] = ["usage", "runtime"];

/** A command that runs something (not a group such as `report`), with the page it is documented on. */
export interface ReferencedCommand {
  /** The command path below the program, e.g. `["report", "merge"]`. */
  path: string[];
  /** Its page in docs/commands/: the path joined by "-", e.g. `report-merge.md`. */
  page: string;
  /** The commander object. */
  command: AnyCommand;
}

/** The commands of the program that run something, in the program's order, each with its page name. */
export function referencedCommands(program: AnyCommand): ReferencedCommand[] {
  const found: ReferencedCommand[] = [];
  const walk = (command: AnyCommand, path: string[]) => {
    for (const sub of command.commands) {
      const subPath = [...path, sub.name()];
      if (sub.commands.length > 0) walk(sub, subPath);
      else found.push({ path: subPath, page: `${subPath.join("-")}.md`, command: sub });
    }
  };
  walk(program, []);
  return found;
}

/** The exit codes a command can end with, lowest first. */
export function exitCodesOf(path: string[]): ExitName[] {
  const returned = COMMAND_EXITS[path.join(" ")];
  if (!returned) {
    throw new Error(
      `No exit codes declared for \`${path.join(" ")}\`: add it to COMMAND_EXITS in src/cli/reference.ts`,
    );
  }
  return [...new Set([...returned, ...ALWAYS])].sort((a, b) => EXIT[a] - EXIT[b]);
}

/**
 * The reference of one command, the text between its page's markers:
 * usage, description, arguments, options, where the global options are,
 * and its exit codes.
 */
export function renderCommandReference(program: AnyCommand, command: AnyCommand, path: string[]): string {
  const help = program.createHelp();
  const parts = [
    fence(help.commandUsage(command)),
    wrap(inline(paragraph(command.description()))),
  ];
  const args = help.visibleArguments(command);
  if (args.length > 0) {
    parts.push(table(
      ["Argument", "Description"],
      args.map((arg) => {
        const name = `${arg.name()}${arg.variadic ? "..." : ""}`;
        const term = arg.required ? `<${name}>` : `[${name}]`;
        const notes = [
          arg.required ? "Required." : "Optional.",
          arg.variadic ? "One or more." : "",
          arg.defaultValue !== undefined ? `Default: ${code(valueText(arg.defaultValue))}.` : "",
        ].filter(Boolean).join(" ");
        return [code(term), `${inline(sentence(arg.description))} ${notes}`];
      }),
    ));
  }
  parts.push(optionTable(help.visibleOptions(command), command));
  const globals = program.options.map((option) => code(option.flags));
  parts.push(wrap(
    `Global options, accepted before or after the command name: ${globals.join(", ")} (see [the command ` +
      `reference](${GLOBAL_PAGE})).`,
  ));
  parts.push(table(
    ["Exit code", "Meaning"],
    exitCodesOf(path).map((name) => [String(EXIT[name]), upperFirst(EXIT_MEANINGS[name])]),
  ));
  return parts.join("\n\n");
}

/**
 * The global page's block: the commands with their pages, the global
 * options, and every exit code with the commands that return it.
 */
export function renderGlobalReference(program: AnyCommand): string {
  const help = program.createHelp();
  const commands = referencedCommands(program);
  const index = table(
    ["Command", "Description"],
    commands.map(({ path, page, command }) => [
      `[${code(`${program.name()} ${path.join(" ")}`)}](${page})`,
      inline(paragraph(command.description())),
    ]),
  );
  const options = optionTable(help.visibleOptions(program), program);
  const exits = table(
    ["Exit code", "Meaning", "Returned by"],
    (Object.keys(EXIT) as ExitName[]).sort((a, b) => EXIT[a] - EXIT[b]).map((name) => {
      const by = commands.filter(({ path }) => exitCodesOf(path).includes(name));
      return [
        String(EXIT[name]),
        upperFirst(EXIT_MEANINGS[name]),
        by.length === commands.length ? "every command" : by.map(({ path }) => code(path.join(" "))).join(", "),
      ];
    }),
  );
  return [
    fence(help.commandUsage(program)),
    wrap(inline(paragraph(program.description()))),
    index,
    "Global options, accepted before or after the command name:",
    options,
    "Exit codes; each means the same for every command:",
    exits,
  ].join("\n\n");
}

/** A page whose markers are missing or broken, or a page for no command. */
export class ReferencePageError extends Error {
  /** The page, relative to the reference folder. */
  readonly page: string;
  constructor(page: string, message: string) {
    super(`${page}: ${message}`);
    this.name = "ReferencePageError";
    this.page = page;
  }
}

/**
 * `text` with the block between `markers` replaced by `block` (a blank line
 * on either side, as `deno fmt` leaves it). Throws a
 * {@linkcode ReferencePageError} unless the page holds each marker exactly
 * once, on a line of its own, begin before end.
 */
export function replaceBlock(
  page: string,
  text: string,
  markers: { begin: string; end: string },
  block: string,
): string {
  const lines = text.split("\n");
  const find = (marker: string) => {
    const at = lines.flatMap((line, i) => line.includes(marker) ? [i] : []);
    if (at.length === 0) throw new ReferencePageError(page, `no \`${marker}\` line`);
    if (at.length > 1) throw new ReferencePageError(page, `\`${marker}\` appears ${at.length} times`);
    if (lines[at[0]].trim() !== marker) {
      throw new ReferencePageError(page, `\`${marker}\` must be alone on its line (line ${at[0] + 1})`);
    }
    return at[0];
  };
  const begin = find(markers.begin);
  const end = find(markers.end);
  if (end < begin) throw new ReferencePageError(page, `\`${markers.end}\` comes before \`${markers.begin}\``);
  return [...lines.slice(0, begin + 1), "", block, "", ...lines.slice(end)].join("\n");
}

/** What {@linkcode applyReference} made of the pages. */
export interface AppliedReference {
  /** Every page of the reference with its generated blocks as rendered now, by file name. */
  pages: Map<string, string>;
  /** The pages whose text changed (stale, or never generated). */
  changed: string[];
}

/**
 * Fills the generated blocks of the reference's pages, given as file name →
 * text (the Markdown files of docs/commands/). Throws a
 * {@linkcode ReferencePageError} when the global page or a command's page is
 * missing, when a page's markers are missing or broken, or when a page has a
 * command block but no command of that name exists any more.
 */
export function applyReference(program: AnyCommand, pages: ReadonlyMap<string, string>): AppliedReference {
  const out = new Map<string, string>();
  const changed: string[] = [];
  const update = (page: string, markers: { begin: string; end: string }, block: string) => {
    const text = pages.get(page);
    if (text === undefined) throw new ReferencePageError(page, "missing: create it with the markers of its block");
    const next = replaceBlock(page, text, markers, block);
    out.set(page, next);
    if (next !== text) changed.push(page);
  };
  update(GLOBAL_PAGE, GLOBAL_MARKERS, renderGlobalReference(program));
  const commands = referencedCommands(program);
  for (const { path, page, command } of commands) {
    update(page, COMMAND_MARKERS, renderCommandReference(program, command, path));
  }
  // A page of a removed or renamed command still has its markers; other pages (guides) have none.
  const known = new Set(commands.map(({ page }) => page));
  for (const [page, text] of pages) {
    if (!known.has(page) && page !== GLOBAL_PAGE && text.includes(COMMAND_MARKERS.begin)) {
      throw new ReferencePageError(
        page,
        `has a command reference block but there is no command \`ckptkit ${
          page.replace(/\.md$/, "").replaceAll("-", " ")
        }\` (commands: ${commands.map(({ path }) => path.join(" ")).join(", ")}); remove or rename the page`,
      );
    }
  }
  return { pages: out, changed };
}

/** The options table: flag, description, and the default, choices and environment variable columns in use. */
function optionTable(options: Option[], command: AnyCommand): string {
  const rows = options.map((option) => {
    const notes: string[] = [];
    // Set by .conflicts() and read by commander's parser, but missing from the extra-typings declarations.
    const conflicts = (option as unknown as { conflictsWith?: string[] }).conflictsWith ?? [];
    if (conflicts.length > 0) {
      const flags = conflicts.map((name) => command.options.find((o) => o.attributeName() === name)?.long ?? name);
      notes.push(`Not with ${flags.map(code).join(" or ")}.`);
    }
    if (option.variadic) notes.push("Takes one or more values.");
    return {
      option: code(option.flags) + (option.mandatory ? " (required)" : ""),
      description: [inline(sentence(option.description)), ...notes].join(" "),
      default: option.defaultValueDescription !== undefined
        ? code(option.defaultValueDescription)
        : option.defaultValue !== undefined
        ? code(valueText(option.defaultValue))
        : "",
      choices: option.argChoices ? option.argChoices.map(code).join(", ") : "",
      env: option.envVar ? code(option.envVar) : "",
    };
  });
  const columns = [
    ["Option", "option"],
    ["Description", "description"],
    ["Default", "default"],
    ["Choices", "choices"],
    ["Environment", "env"],
  ] as const;
  // A column no option fills says nothing: left out, so the tables stay narrow.
  const used = columns.filter(([, key], i) => i < 2 || rows.some((row) => row[key] !== ""));
  return table(used.map(([title]) => title), rows.map((row) => used.map(([, key]) => row[key])));
}

/** A GFM table padded as `deno fmt` pads it; cells are inline Markdown already. */
function table(header: string[], rows: string[][]): string {
  // GFM ends a cell at any `|`, even in a code span: escaped in every cell, and only in cells.
  const cells = [header, ...rows].map((row) => row.map((cell) => cell.replaceAll("\n", " ").replaceAll("|", "\\|")));
  const widths = header.map((_, i) => Math.max(3, ...cells.map((row) => width(row[i]))));
  const line = (row: string[]) => `| ${row.map((cell, i) => cell + " ".repeat(widths[i] - width(cell))).join(" | ")} |`;
  return [line(cells[0]), line(widths.map((w) => "-".repeat(w))), ...cells.slice(1).map(line)].join("\n");
}

/** Text as a code span, with a fence longer than the backticks it holds. */
function code(text: string): string {
  const longest = Math.max(0, ...(text.match(/`+/g) ?? []).map((run) => run.length));
  const ticks = "`".repeat(longest + 1);
  const pad = text.startsWith("`") || text.endsWith("`") ? " " : "";
  return `${ticks}${pad}${text}${pad}${ticks}`;
}

/**
 * A description as inline Markdown: its `code spans` kept, and outside them
 * the characters Markdown would take for markup escaped (`<root>` is not an
 * HTML tag, `*` not emphasis).
 */
function inline(text: string): string {
  const parts = text.split("`");
  // Unbalanced backticks: no code spans, every backtick literal.
  if (parts.length % 2 === 0) return escapeText(text);
  return parts.map((part, i) => i % 2 === 0 ? escapeText(part) : `\`${part}\``).join("");
}

function escapeText(text: string): string {
  return text
    .replace(/[\\`*[\]<]/g, (c) => `\\${c}`)
    // An underscore inside a word (log_level) is no emphasis in GFM; only one at a word's edge needs escaping.
    .replace(/(^|[^\p{L}\p{N}])_|_(?=[^\p{L}\p{N}]|$)/gu, (m) => m.replace("_", "\\_"));
}

/**
 * A description ending with a full stop, so that notes can follow it. Not
 * capitalised: an option's description may start with a value
 * (`latest-valid: ...`); see {@linkcode paragraph}.
 */
function sentence(text: string): string {
  const trimmed = text.trim();
  if (trimmed === "") return "";
  return /[.!?]$/.test(trimmed) ? trimmed : `${trimmed}.`;
}

/** A command's description as a paragraph: its first word is a verb, capitalised. */
function paragraph(text: string): string {
  return upperFirst(sentence(text));
}

function upperFirst(text: string): string {
  return text.charAt(0).toUpperCase() + text.slice(1);
}

function valueText(value: unknown): string {
  return typeof value === "string" ? value : JSON.stringify(value);
}

function fence(text: string): string {
  // `text`, not `sh`: a usage line is not a command the docs' tests should run.
  return "```text\n" + text + "\n```";
}

/** Width of a cell as `deno fmt` counts it: one column per character. */
function width(text: string): number {
  return [...text].length;
}

/** A token that would start a list, heading, quote or thematic break at the start of a line. */
const BLOCK_START = /^(?:[-+*>]|#{1,6}|\d{1,9}[.)]|=+|-{3,}|\|)$/;

/**
 * Prose wrapped at {@linkcode LINE_WIDTH} as `deno fmt` (proseWrap: always)
 * wraps it: greedily at spaces, a code span never split, and no line
 * starting with a token Markdown would read as a block marker (such a token
 * stays with the word before it).
 */
function wrap(text: string): string {
  const tokens: string[] = [];
  // Spaces inside code spans do not split: the span is one token with its neighbours.
  let current = "";
  let inCode = false;
  for (const char of text) {
    if (char === "`") inCode = !inCode;
    if (char === " " && !inCode) {
      if (current !== "") tokens.push(current);
      current = "";
    } else current += char;
  }
  if (current !== "") tokens.push(current);
  const units: string[] = [];
  for (const token of tokens) {
    if (BLOCK_START.test(token) && units.length > 0) units[units.length - 1] += ` ${token}`;
    else units.push(token);
  }
  const lines: string[] = [];
  let line = "";
  for (const unit of units) {
    if (line === "") line = unit;
    else if (width(line) + 1 + width(unit) <= LINE_WIDTH) line += ` ${unit}`;
    else {
      lines.push(line);
      line = unit;
    }
  }
  if (line !== "") lines.push(line);
  return lines.join("\n");
}
