/**
 * The README's quickstart and config example must work exactly as written:
 * these tests read them out of README.md and run them.
 */

import assert from "node:assert/strict";
import denoJson from "../deno.json" with { type: "json" };
import { parseConfig } from "../src/core/config.ts";
import { REPO, runCli, tempDir } from "./_helpers.ts";

const readme = await Deno.readTextFile(`${REPO}/README.md`);

function codeBlockAfter(heading: string, language: string, index = 0): string {
  const section = readme.slice(readme.indexOf(heading));
  const blocks = [...section.matchAll(new RegExp("```" + language + "\\n([\\s\\S]*?)```", "g"))];
  assert.ok(blocks[index], `no ${language} block #${index} after ${heading}`);
  return blocks[index][1];
}

Deno.test("the README's set-up commands are deno tasks that exist", () => {
  const setup = codeBlockAfter("# ckptkit", "sh");
  const tasks = [...setup.matchAll(/^deno task (\S+)/gm)].map((m) => m[1]);
  assert.deepEqual(tasks, ["demo", "test"]);
  for (const task of tasks) assert.ok(task in denoJson.tasks, task);
});

Deno.test("the README's alias runs cli.ts with the ckptkit task's flags", () => {
  const alias = codeBlockAfter("## Quickstart", "sh", 0);
  const flags = /deno run (.*) \$PWD\/cli\.ts/.exec(alias)?.[1];
  assert.equal(`deno run ${flags} cli.ts`, denoJson.tasks.ckptkit);
});

Deno.test("the README quickstart works as written (root moved into a temp folder)", async () => {
  await using tmp = await tempDir();
  const commands = codeBlockAfter("## Quickstart", "sh", 1).split("\n").filter((line) => line.startsWith("ckptkit "));
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

Deno.test("the README config example is the one the code accepts, and works with the CLI", async () => {
  await using tmp = await tempDir();
  const example = codeBlockAfter("## Configuration", "yaml");
  const config = parseConfig(example, "README.md");
  assert.equal(config.root, "/tmp/ckpts");
  assert.equal(config.retention?.keep_last, 3);
  await Deno.writeTextFile(`${tmp.path}/ckptkit.yaml`, example.replace("/tmp/ckpts", `${tmp.path}/ckpts`));
  const write = await runCli(["--config", `${tmp.path}/ckptkit.yaml`, "write", "--step", "10", "--files", "1"]);
  assert.equal(write.code, 0, write.stderr);
  const gc = await runCli(["gc", "--config", `${tmp.path}/ckptkit.yaml`, "--dry-run"]);
  assert.equal(gc.code, 0, gc.stderr);
  assert.match(gc.stdout, /keep {4}step-10: keep-last \(1 of 3\)/);
});

Deno.test("every command the README documents exists, with every flag it documents", async () => {
  const help = await runCli(["--help"]);
  // A command and its subcommand, if any: `report merge`.
  const documented = [...readme.matchAll(/^### `ckptkit ([\w-]+(?: [a-z][\w-]*)*)/gm)].map((m) => m[1]);
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
    const section = readme.slice(readme.indexOf(`### \`ckptkit ${command}`)).split(/^##+ /m)[1];
    for (const flag of new Set([...section.matchAll(/`(--[a-z-]+)/g)].map((m) => m[1]))) {
      if (["--json", "--log-level", "--config", "--help"].includes(flag)) continue;
      assert.ok(commandHelp.includes(flag), `${command} --help lacks ${flag}`);
    }
  }
});
