/**
 * The README's set-up commands and quickstart, the configuration example of
 * docs/configuration.md, the command reference of docs/commands/ and the cron
 * line of docs/running-continuously.md must work exactly as written: these
 * tests read them out of the pages (by heading) and run them.
 */

import assert from "node:assert/strict";
import denoJson from "../deno.json" with { type: "json" };
import { parseConfig } from "../src/core/config.ts";
import { fencedBlocks, headings, localLinks, readDoc, section, sectionBlocks } from "./_docs.ts";
import { flipByte, runCli, tempDir } from "./_helpers.ts";

const readme = await readDoc("README.md");

/** Fenced block `index` in `language` of a page's section (the whole README for `# ckptkit`). */
function codeBlockIn(page: string, text: string, heading: string, language: string, index = 0): string {
  const blocks = fencedBlocks(section(text, heading, page), language);
  assert.ok(blocks[index], `no ${language} block #${index} in ${page} under ${heading}`);
  return blocks[index];
}

Deno.test("the README's set-up commands are deno tasks that exist", () => {
  const setup = codeBlockIn("README.md", readme, "# ckptkit", "sh");
  const tasks = [...setup.matchAll(/^deno task (\S+)/gm)].map((m) => m[1]);
  assert.deepEqual(tasks, ["demo", "test"]);
  for (const task of tasks) assert.ok(task in denoJson.tasks, task);
});

Deno.test("the README's alias runs cli.ts with the ckptkit task's flags", () => {
  const alias = codeBlockIn("README.md", readme, "## Quickstart", "sh", 0);
  const flags = /deno run (.*) \$PWD\/cli\.ts/.exec(alias)?.[1];
  assert.equal(`deno run ${flags} cli.ts`, denoJson.tasks.ckptkit);
});

Deno.test("the README quickstart works as written (root moved into a temp folder)", async () => {
  await using tmp = await tempDir();
  const commands = codeBlockIn("README.md", readme, "## Quickstart", "sh", 1).split("\n").filter((line) =>
    line.startsWith("ckptkit ")
  );
  assert.equal(commands.length, 4);
  const outputs: string[] = [];
  for (const command of commands) {
    const args = command.replace(/\s+#.*$/, "").split(/\s+/).slice(1).map((arg) =>
      arg.replace("/tmp/ckpts", `${tmp.path}/ckpts`)
    );
    const run = await runCli(args);
    assert.equal(run.code, 0, `${command}\n${run.stdout}\n${run.stderr}`);
    outputs.push(run.stdout);
  }
  assert.match(outputs[0], /^committed .*\/ckpts\/step-10 \(5 files, 4\.0 MiB/);
  assert.match(outputs[1], /^OK .*\/ckpts\/step-10 \(full, 5 files, 4\.0 MiB read/);
  assert.match(outputs[2], /1 checkpoint: 1 valid, 0 invalid/);
  assert.equal(outputs[3], `${tmp.path}/ckpts/step-10\n`);
});

Deno.test("the config example of docs/configuration.md is the one the code accepts, and works with the CLI", async () => {
  await using tmp = await tempDir();
  const example = codeBlockIn(
    "docs/configuration.md",
    await readDoc("docs/configuration.md"),
    "# Configuration",
    "yaml",
  );
  const config = parseConfig(example, "docs/configuration.md");
  assert.equal(config.root, "/tmp/ckpts");
  assert.equal(config.retention?.keep_last, 3);
  await Deno.writeTextFile(`${tmp.path}/ckptkit.yaml`, example.replace("/tmp/ckpts", `${tmp.path}/ckpts`));
  const write = await runCli(["--config", `${tmp.path}/ckptkit.yaml`, "write", "--step", "10", "--files", "1"]);
  assert.equal(write.code, 0, write.stderr);
  const gc = await runCli(["gc", "--config", `${tmp.path}/ckptkit.yaml`, "--dry-run"]);
  assert.equal(gc.code, 0, gc.stderr);
  assert.match(gc.stdout, /keep {4}step-10: keep-last \(1 of 3\)/);
});

Deno.test("every command docs/commands/ documents exists, with every flag its page documents", async () => {
  const help = await runCli(["--help"]);
  // The index links each command's page, in order; each page's title names the command and its subcommand, if any:
  // `report merge`.
  const index = await readDoc("docs/commands/README.md");
  // The hand-written table and the generated index both link every page: each page once, in order.
  const pages = [
    ...new Set(localLinks(index).map((link) => link.target).filter((target) => /^[\w-]+\.md$/.test(target))),
  ];
  const documented: string[] = [];
  const texts = new Map<string, string>();
  for (const page of pages) {
    const text = await readDoc(`docs/commands/${page}`);
    const title = headings(text)[0];
    assert.equal(title?.level, 1, `docs/commands/${page} starts with its title`);
    const command = /^`ckptkit ([\w-]+(?: [a-z][\w-]*)*)/.exec(title.text)?.[1];
    assert.ok(command, `docs/commands/${page}: title ${title.text}`);
    documented.push(command);
    texts.set(command, text);
  }
  assert.deepEqual(documented, [
    "write",
    "commit",
    "seal",
    "validate",
    "export-sums",
    "scan",
    "report merge",
    "resume",
    "quarantine",
    "gc",
    "emit-metrics",
    "serve",
  ]);
  for (const command of documented) {
    assert.match(help.stdout, new RegExp(`^  ${command.split(" ")[0]} `, "m"));
    const commandHelp = (await runCli([...command.split(" "), "--help"])).stdout;
    const page = texts.get(command)!;
    for (const flag of new Set([...page.matchAll(/`(--[a-z-]+)/g)].map((m) => m[1]))) {
      if (["--json", "--log-level", "--log-format", "--config", "--help", "--version"].includes(flag)) continue;
      assert.ok(commandHelp.includes(flag), `${command} --help lacks ${flag}`);
    }
  }
});

Deno.test("the cron line of docs/running-continuously.md writes the metrics, says nothing while the root is healthy, and a problem on stderr", async () => {
  await using tmp = await tempDir();
  const [crontab] = await sectionBlocks("docs/running-continuously.md", "## cron", "crontab");
  const fields = crontab.trim().split(/\s+/);
  assert.deepEqual(fields.slice(0, 6), ["*/10", "*", "*", "*", "*", "ckptkit"]);
  assert.equal(fields.at(-1), ">/dev/null", "stdout is discarded, so cron mails only stderr");
  const textfile = `${tmp.path}/textfile_collector/ckptkit.prom`;
  await Deno.mkdir(`${tmp.path}/textfile_collector`);
  const args = fields.slice(6, -1).map((arg) =>
    arg.replace("/srv/ckpts", `${tmp.path}/ckpts`).replace(
      "/var/lib/node_exporter/textfile_collector/ckptkit.prom",
      textfile,
    )
  );
  assert.equal((await runCli(["write", "--root", `${tmp.path}/ckpts`, "--step", "10", "--files", "1"])).code, 0);

  const healthy = await runCli(args);
  assert.equal(healthy.code, 0, healthy.stderr);
  assert.equal(healthy.stderr, "", "nothing for cron to mail");
  assert.match(await Deno.readTextFile(textfile), /^checkpoint_inventory\{[^}]*status="valid"\} 1$/m);

  await flipByte(`${tmp.path}/ckpts/step-10/shard-00000-of-00001.bin`, 100);
  const damaged = await runCli(args);
  assert.equal(damaged.code, 1, "exit 1: problems found (cron ignores it)");
  assert.ok(damaged.logs.some((line) => line.event === "validation_failed"), damaged.stderr);
  assert.match(await Deno.readTextFile(textfile), /^checkpoint_inventory\{[^}]*status="invalid"\} 1$/m);
});
