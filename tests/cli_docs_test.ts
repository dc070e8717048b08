/**
 * The generated documentation: the command reference of docs/commands/
 * (`deno task docs`, rendered from the commander tree by
 * src/cli/reference.ts) is up to date, complete and `deno fmt`-stable, its
 * generator refuses broken pages, and the API reference (`deno task doc`)
 * renders mod.ts.
 */

import assert from "node:assert/strict";
import denoJson from "../deno.json" with { type: "json" };
import { readPages, REFERENCE_DIR, referenceProgram } from "../scripts/gen_cli_docs.ts";
import {
  type AnyCommand,
  applyReference,
  COMMAND_EXITS,
  COMMAND_MARKERS,
  exitCodesOf,
  GLOBAL_MARKERS,
  GLOBAL_PAGE,
  referencedCommands,
  renderCommandReference,
  renderGlobalReference,
} from "../src/cli/reference.ts";
import { EXIT } from "../src/cli/context.ts";
import { Command, Option } from "../src/deps/commander.ts";
import { REPO, tempDir } from "./_helpers.ts";

const decoder = new TextDecoder();

/** Runs `deno <args>` in the repository and returns its exit code and output. */
async function deno(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const output = await new Deno.Command(Deno.execPath(), {
    args,
    cwd: REPO,
    env: { NO_COLOR: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  return { code: output.code, stdout: decoder.decode(output.stdout), stderr: decoder.decode(output.stderr) };
}

/** Runs the generator on `dir` as `deno task docs` runs it, with that folder's permissions. */
function generate(dir: string, ...flags: string[]) {
  return deno([
    "run",
    "--no-prompt",
    `--allow-read=${dir}`,
    `--allow-write=${dir}`,
    "scripts/gen_cli_docs.ts",
    "--dir",
    dir,
    ...flags,
  ]);
}

/** The text of the block between `markers` in a page. */
function blockOf(text: string, markers: { begin: string; end: string }): string {
  const begin = text.indexOf(markers.begin);
  const end = text.indexOf(markers.end);
  assert.ok(begin >= 0 && end > begin, `no ${markers.begin} … ${markers.end} block`);
  return text.slice(begin + markers.begin.length, end).trim();
}

/**
 * A reference folder as the docs/ pages are written by hand: a title, text
 * around the markers, and the markers with nothing (or anything) between.
 */
async function writeSkeleton(dir: string): Promise<void> {
  await Deno.writeTextFile(
    `${dir}/${GLOBAL_PAGE}`,
    `# Command reference\n\nHand-written intro.\n\n${GLOBAL_MARKERS.begin}\n${GLOBAL_MARKERS.end}\n\nMore text.\n`,
  );
  for (const { path, page } of referencedCommands(referenceProgram())) {
    await Deno.writeTextFile(
      `${dir}/${page}`,
      `# ckptkit ${
        path.join(" ")
      }\n\nWhat it is for.\n\n${COMMAND_MARKERS.begin}\nold text\n${COMMAND_MARKERS.end}\n\n` +
        `## Examples\n\nHand-written.\n`,
    );
  }
}

Deno.test("docs/commands/: the generated command reference is what the CLI's definitions give now", async () => {
  const pages = await readPages(REFERENCE_DIR).catch((err) => {
    throw new Error(`${REFERENCE_DIR} cannot be read (${err}): the command reference's pages live there`);
  });
  const applied = applyReference(referenceProgram(), pages);
  assert.deepEqual(applied.changed, [], `stale pages in docs/commands/: run \`deno task docs\``);
});

Deno.test("gen_cli_docs on a fresh folder fills every block, leaves the hand-written text, and deno fmt keeps it", async () => {
  await using tmp = await tempDir();
  await writeSkeleton(tmp.path);
  // A guide beside the command pages, without markers: not a command page, left alone.
  await Deno.writeTextFile(`${tmp.path}/json-output.md`, "# JSON output\n\nHand-written.\n");
  const before = await Deno.readTextFile(`${tmp.path}/validate.md`);

  const stale = await generate(tmp.path, "--check");
  assert.equal(stale.code, 1, stale.stderr);
  assert.match(stale.stderr, /validate\.md is stale/);
  assert.match(stale.stderr, /run `deno task docs`/);
  assert.equal(await Deno.readTextFile(`${tmp.path}/validate.md`), before, "--check writes nothing");

  const write = await generate(tmp.path);
  assert.equal(write.code, 0, write.stderr);
  const program = referenceProgram();
  const commands = referencedCommands(program);
  for (const { path, page, command } of commands) {
    const text = await Deno.readTextFile(`${tmp.path}/${page}`);
    assert.ok(text.startsWith(`# ckptkit ${path.join(" ")}\n\nWhat it is for.\n\n`), page);
    assert.ok(text.endsWith(`${COMMAND_MARKERS.end}\n\n## Examples\n\nHand-written.\n`), page);
    assert.equal(blockOf(text, COMMAND_MARKERS), renderCommandReference(program, command, path));
  }
  const global = await Deno.readTextFile(`${tmp.path}/${GLOBAL_PAGE}`);
  assert.equal(blockOf(global, GLOBAL_MARKERS), renderGlobalReference(program));
  assert.ok(global.endsWith(`${GLOBAL_MARKERS.end}\n\nMore text.\n`));
  assert.equal(await Deno.readTextFile(`${tmp.path}/json-output.md`), "# JSON output\n\nHand-written.\n");

  const fresh = await generate(tmp.path, "--check");
  assert.equal(fresh.code, 0, fresh.stderr);
  assert.match(fresh.stdout, /13 pages up to date/);
  // The generated Markdown is already as deno fmt writes it (tables padded, prose wrapped at 120).
  const fmt = await deno(["fmt", "--check", "--config", `${REPO}/deno.json`, tmp.path]);
  assert.equal(fmt.code, 0, fmt.stdout + fmt.stderr);
});

Deno.test("gen_cli_docs --check fails on one stale block and names the page; without --check it rewrites only that page", async () => {
  await using tmp = await tempDir();
  await writeSkeleton(tmp.path);
  assert.equal((await generate(tmp.path)).code, 0);
  const page = `${tmp.path}/resume.md`;
  const fresh = await Deno.readTextFile(page);
  // An edit by hand inside the block, e.g. a default changed in the docs but not in the code.
  await Deno.writeTextFile(page, fresh.replace("`latest-valid`", "`last-known-good`"));
  const check = await generate(tmp.path, "--check");
  assert.equal(check.code, 1);
  assert.equal(check.stderr.match(/\.md is stale/g)?.length, 1, check.stderr);
  assert.match(check.stderr, /resume\.md is stale/);
  const write = await generate(tmp.path);
  assert.equal(write.code, 0, write.stderr);
  assert.equal(write.stdout.trim(), `gen_cli_docs: wrote ${tmp.path}/resume.md`);
  assert.equal(await Deno.readTextFile(page), fresh);
});

Deno.test("gen_cli_docs refuses a missing page, a missing or repeated marker, and a page for a command that does not exist", async () => {
  const cases: [string, (dir: string) => Promise<void>, RegExp][] = [
    ["missing page", (dir) => Deno.remove(`${dir}/serve.md`), /serve\.md: missing/],
    ["missing global page", (dir) => Deno.remove(`${dir}/${GLOBAL_PAGE}`), /README\.md: missing/],
    [
      "missing end marker",
      async (dir) => {
        const text = await Deno.readTextFile(`${dir}/gc.md`);
        await Deno.writeTextFile(`${dir}/gc.md`, text.replace(COMMAND_MARKERS.end, ""));
      },
      /gc\.md: no `<!-- cli-reference:end -->` line/,
    ],
    [
      "repeated begin marker",
      async (dir) => {
        const text = await Deno.readTextFile(`${dir}/scan.md`);
        await Deno.writeTextFile(`${dir}/scan.md`, `${COMMAND_MARKERS.begin}\n${text}`);
      },
      /scan\.md: `<!-- cli-reference:begin -->` appears 2 times/,
    ],
    [
      "markers in the wrong order",
      (dir) => Deno.writeTextFile(`${dir}/commit.md`, `# x\n\n${COMMAND_MARKERS.end}\n\n${COMMAND_MARKERS.begin}\n`),
      /commit\.md: `<!-- cli-reference:end -->` comes before/,
    ],
    [
      "page of a command that does not exist",
      (dir) =>
        Deno.writeTextFile(
          `${dir}/frobnicate.md`,
          `# ckptkit frobnicate\n\n${COMMAND_MARKERS.begin}\n${COMMAND_MARKERS.end}\n`,
        ),
      /frobnicate\.md: has a command reference block but there is no command `ckptkit frobnicate`/,
    ],
  ];
  for (const [name, breakIt, message] of cases) {
    await using tmp = await tempDir();
    await writeSkeleton(tmp.path);
    await breakIt(tmp.path);
    for (const flags of [[], ["--check"]]) {
      const run = await generate(tmp.path, ...flags);
      assert.equal(run.code, 2, `${name} ${flags}: ${run.stderr}`);
      assert.match(run.stderr, message, name);
    }
  }
  const missing = await generate("/nonexistent-ckptkit-docs", "--check");
  assert.equal(missing.code, 2);
  assert.match(missing.stderr, /nonexistent-ckptkit-docs\/ does not exist/);
});

Deno.test("the reference escapes Markdown in descriptions, wraps prose as deno fmt does, and escapes | only in tables", async () => {
  // 114 + " word" is 119 columns: a break after "word" would start the next line with "-" (a list item) or "12)"
  // (an ordered one), so deno fmt moves "word" down with it.
  const long = `${"w".repeat(114)} word`;
  const tool = new Command("tool").description(`${long} 12) not a list either`);
  // Named after a real command only for its exit codes (COMMAND_EXITS); everything else is made up.
  const sub = new Command("gc")
    .description(`${long} - not a list, move <root>/x and *this* _here_ but keep log_level and \`a|b\` 12) no list`)
    .argument("[dir...]", "folders, `c|d`")
    .addOption(new Option("--mode <m>", "how <m> works").choices(["a", "b"]).default("a").env("TOOL_MODE"))
    .addOption(new Option("--quiet", "say less").conflicts("mode"));
  tool.addCommand(sub);
  const block = renderCommandReference(tool, sub, ["gc"]);
  const [usage, prose, args, options] = block.split("\n\n");
  assert.equal(usage, "```text\ntool gc [options] [dir...]\n```");
  // Outside a table a pipe in a code span stays as it is; < * and edge underscores are escaped, log_level is not.
  assert.match(prose, /^W{1}w{113}\nword - not a list/);
  assert.match(prose, /move \\<root>\/x and \\\*this\\\* \\_here\\_ but keep log_level and `a\|b` /);
  for (const line of prose.split("\n")) {
    assert.ok(line.length <= 120, line);
    assert.doesNotMatch(line, /^(-|\d+\)) /, "no line starts like a list item");
  }
  assert.match(args, /\| `\[dir\.\.\.\]` \| folders, `c\\\|d`\. Optional\. One or more\. \|/);
  assert.match(options, /\| `--mode <m>` +\| how \\<m> works\. +\| `a` +\| `a`, `b` +\| `TOOL_MODE` \|/);
  assert.match(options, /\| `--quiet` +\| say less\. Not with `--mode`\. +\| +\| +\| +\|/);
  const global = renderGlobalReference(tool);
  assert.match(global, /\n\nW{1}w{113}\nword 12\) not a list either\.\n\n/);
  await using tmp = await tempDir();
  const page = `${tmp.path}/frob.md`;
  await Deno.writeTextFile(page, `# frob\n\n${COMMAND_MARKERS.begin}\n\n${block}\n\n${COMMAND_MARKERS.end}\n`);
  const globalPage = `${tmp.path}/${GLOBAL_PAGE}`;
  await Deno.writeTextFile(globalPage, `# tool\n\n${GLOBAL_MARKERS.begin}\n\n${global}\n\n${GLOBAL_MARKERS.end}\n`);
  const fmt = await deno(["fmt", "--check", "--config", `${REPO}/deno.json`, page, globalPage]);
  assert.equal(fmt.code, 0, fmt.stdout + fmt.stderr);
});

Deno.test("the reference has a page for every command and a row for every option commander knows", () => {
  const program = referenceProgram();
  const help = program.createHelp();
  const commands = referencedCommands(program);
  assert.deepEqual(
    commands.map(({ page }) => page),
    [
      "write.md",
      "commit.md",
      "seal.md",
      "validate.md",
      "export-sums.md",
      "scan.md",
      "report-merge.md",
      "resume.md",
      "quarantine.md",
      "gc.md",
      "emit-metrics.md",
      "serve.md",
    ],
  );
  // Count the tree: every command's options plus its help option, and the program's own.
  const all = (command: AnyCommand): AnyCommand[] => [command, ...command.commands.flatMap(all)];
  let expected = 0;
  let rendered = 0;
  const rows = (text: string) => text.split("\n").filter((line) => /^\| `-/.test(line)).length;
  for (const command of all(program)) {
    const options = help.visibleOptions(command);
    const entry = commands.find((c) => c.command === command);
    if (command !== program && !entry) {
      // A group (`report`): only its help option, and nothing to document beyond its subcommands.
      assert.deepEqual(options.map((o) => o.flags), ["-h, --help"], command.name());
      continue;
    }
    expected += options.length;
    const text = entry ? renderCommandReference(program, command, entry.path) : renderGlobalReference(program);
    rendered += rows(text);
    for (const option of options) {
      assert.ok(text.includes(`| \`${option.flags}\``), `${option.flags} of ${command.name()} is in the reference`);
      if (option.envVar) assert.ok(text.includes(`\`${option.envVar}\``), option.envVar);
      for (const choice of option.argChoices ?? []) assert.ok(text.includes(`\`${choice}\``), choice);
    }
    for (const arg of help.visibleArguments(command)) assert.ok(text.includes(arg.name()), arg.name());
    assert.ok(text.includes(help.commandUsage(command)), help.commandUsage(command));
  }
  // 12 commands with 1 to 14 options each, and the program's 6: a tree this size, not an empty walk.
  assert.ok(expected > 100, `${expected} options`);
  assert.equal(rendered, expected);
});

Deno.test("the exit codes of each command are those its module returns, plus usage and runtime errors", async () => {
  const commands = referencedCommands(referenceProgram());
  assert.deepEqual(Object.keys(COMMAND_EXITS).sort(), commands.map(({ path }) => path.join(" ")).sort());
  for (const { path } of commands) {
    // The builder of `report merge` is src/cli/report.ts, of `export-sums` src/cli/export_sums.ts.
    const file = `${REPO}/src/cli/${path[0].replaceAll("-", "_")}.ts`;
    const source = await Deno.readTextFile(file);
    const returned = new Set([...source.matchAll(/\bEXIT\.(\w+)/g)].map((m) => m[1]));
    assert.deepEqual([...returned].sort(), [...COMMAND_EXITS[path.join(" ")]].sort(), file);
    assert.deepEqual(
      exitCodesOf(path).map((name) => EXIT[name]),
      [...new Set([...returned].map((name) => EXIT[name as keyof typeof EXIT]).concat([2, 4]))].sort(),
      path.join(" "),
    );
  }
  const resume = renderCommandReference(
    referenceProgram(),
    commands.find(({ page }) => page === "resume.md")!.command,
    ["resume"],
  );
  assert.match(resume, /\n\| 3 {9}\| Nothing to resume from/);
  assert.doesNotMatch(
    renderCommandReference(referenceProgram(), commands.find(({ page }) => page === "gc.md")!.command, ["gc"]),
    /\n\| [13] /,
  );
});

Deno.test("deno task doc renders mod.ts's API reference: an index and a page for every value mod.ts exports", async () => {
  await using tmp = await tempDir();
  const task = denoJson.tasks.doc;
  const command = task.split(" && ").find((part) => part.startsWith("deno doc "));
  assert.ok(command, task);
  const [, ...args] = command.split(" ");
  assert.ok(args.includes("--output=dist/doc"), "written into dist/, which git ignores");
  const output = `${tmp.path}/doc`;
  const run = await deno(args.map((arg) => arg === "--output=dist/doc" ? `--output=${output}` : arg));
  assert.equal(run.code, 0, run.stderr);
  const index = await Deno.readTextFile(`${output}/index.html`);
  assert.match(index, /<title>ckptkit documentation/);
  const allSymbols = await Deno.readTextFile(`${output}/all_symbols.html`);
  const mod = await import("../mod.ts");
  const exported = Object.keys(mod);
  for (const name of ["commitCheckpoint", "validateCheckpoint", "resumeFromRoot", "scanRoot", "CkptkitError"]) {
    assert.ok(exported.includes(name), name);
  }
  for (const name of exported) {
    assert.ok(allSymbols.includes(`>${name}<`), `${name} is listed in all_symbols.html`);
    const page = await Deno.readTextFile(`${output}/~/${name}.html`);
    assert.ok(page.includes(name), name);
  }
  const gitignore = await Deno.readTextFile(`${REPO}/.gitignore`);
  assert.ok(gitignore.split("\n").includes("dist/"), ".gitignore has dist/");
});

Deno.test("deno doc --lint mod.ts is clean", async () => {
  const run = await deno(["doc", "--lint", "mod.ts"]);
  assert.equal(run.code, 0, run.stdout + run.stderr);
});
