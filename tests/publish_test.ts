/**
 * The library is ready for JSR: `deno publish --dry-run` (which runs offline:
 * type check, slow-types check, license, excluded imports) passes, ships only
 * the library's files, and `deno doc --lint mod.ts` is clean.
 */

import assert from "node:assert/strict";
import denoJson from "../deno.json" with { type: "json" };
import { REPO } from "./_helpers.ts";

async function deno(args: string[]): Promise<{ success: boolean; output: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args,
    cwd: REPO,
    env: { NO_COLOR: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  return { success: out.success, output: decoder.decode(out.stdout) + decoder.decode(out.stderr) };
}

Deno.test("deno publish --dry-run passes and ships mod.ts, src/ (without the CLI), README.md and deno.json", async () => {
  const run = await deno(["publish", "--dry-run", "--allow-dirty"]);
  assert.ok(run.success, run.output);
  assert.match(run.output, new RegExp(`Simulating publish of ${denoJson.name}@${denoJson.version} with files:`));
  const files = [...run.output.matchAll(/^\s+file:\/\/(\S+) \(/gm)].map((m) => m[1].slice(REPO.length + 1)).sort();
  for (const required of ["README.md", "deno.json", "mod.ts", "src/fs/hash_worker.ts", "src/deps/xxhash.ts"]) {
    assert.ok(files.includes(required), `${required} is published (workers and lazy imports load it)`);
  }
  const outside = files.filter((f) => !["README.md", "deno.json", "mod.ts"].includes(f) && !f.startsWith("src/"));
  assert.deepEqual(outside, [], "nothing but the library is published");
  assert.deepEqual(files.filter((f) => f.startsWith("src/cli/")), [], "the CLI is not part of the library");
  assert.match(run.output, /Success Dry run complete/);
});

Deno.test("deno doc --lint mod.ts is clean", async () => {
  const run = await deno(["doc", "--lint", "mod.ts"]);
  assert.ok(run.success, run.output);
});
