/**
 * The repository carries every file its tests read: the real checkpoints in
 * tests/fixtures/ match the sha256 their SOURCES.md gives, and no test,
 * doc example, benchmark, script or CI step reads a path outside the clone.
 */

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { FIXTURES, REPO } from "./_helpers.ts";

Deno.test("every fixture matches the sha256 and size SOURCES.md gives for it", async () => {
  const sources = await Deno.readTextFile(`${FIXTURES}/SOURCES.md`);
  const rows = [
    ...sources.matchAll(/^\| ([\w.\/-]+\.(?:safetensors|pth|pt|bin)) \|.*\| (\d+) \| ([0-9a-f]{64}) \|$/gm),
  ];
  assert.ok(rows.length >= 20, `SOURCES.md lists ${rows.length} fixtures`);
  for (const [, path, bytes, sha256] of rows) {
    const data = await Deno.readFile(`${FIXTURES}/${path}`);
    assert.equal(data.length, Number(bytes), `${path}: size`);
    assert.equal(createHash("sha256").update(data).digest("hex"), sha256, `${path}: sha256`);
  }
  const listed = new Set(rows.map((r) => r[1]));
  for (const kind of ["safetensors", "torch-zip", "torch-legacy"]) {
    for await (const entry of Deno.readDir(`${FIXTURES}/${kind}`)) {
      assert.ok(listed.has(`${kind}/${entry.name}`), `${kind}/${entry.name} has no row in SOURCES.md`);
    }
  }
});

Deno.test("nothing in src (doc examples), tests, bench, scripts or .ci reads a path beside the clone", async () => {
  const offenders: string[] = [];
  for (const folder of ["src", "tests", "bench", "scripts", ".ci"]) {
    for (const path of await filesUnder(`${REPO}/${folder}`)) {
      if (path.includes("/tests/corpus/") || path.includes("/tests/fixtures/")) continue;
      const text = await Deno.readTextFile(path);
      if (/\.\.\/(\.\.\/)?shared\b/.test(text)) offenders.push(path.slice(REPO.length + 1));
    }
  }
  assert.deepEqual(offenders, []);
});

async function filesUnder(folder: string): Promise<string[]> {
  const out: string[] = [];
  for await (const entry of Deno.readDir(folder)) {
    const path = `${folder}/${entry.name}`;
    if (entry.isDirectory) out.push(...await filesUnder(path));
    else if (entry.isFile) out.push(path);
  }
  return out;
}
