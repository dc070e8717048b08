/**
 * The documentation's links hold: every relative link of README.md, docs/,
 * examples/README.md and bench/RESULTS.md names a file or folder that exists,
 * and every `#anchor` names a heading of its page by GitHub's rules. The
 * README stays a front page (under 200 lines), and every page of docs/ can be
 * reached from docs/README.md.
 */

import assert from "node:assert/strict";
import { anchors, brokenLinks, localLinks, resolveLink, slug } from "./_docs.ts";
import { REPO } from "./_helpers.ts";

/** The markdown files of a folder, recursively, as paths from the repository root. */
async function markdownUnder(folder: string): Promise<string[]> {
  const out: string[] = [];
  for await (const entry of Deno.readDir(`${REPO}/${folder}`)) {
    const path = `${folder}/${entry.name}`;
    if (entry.isDirectory) out.push(...await markdownUnder(path));
    else if (entry.isFile && entry.name.endsWith(".md")) out.push(path);
  }
  return out.sort();
}

/** The pages checked: the README, the manual, and the pages of examples/ and bench/ that the manual links to. */
async function pages(): Promise<Map<string, string>> {
  const paths = ["README.md", ...await markdownUnder("docs"), "examples/README.md", "bench/RESULTS.md"];
  return new Map(await Promise.all(paths.map(async (p) => [p, await Deno.readTextFile(`${REPO}/${p}`)] as const)));
}

function readFile(path: string): string | undefined {
  try {
    return Deno.readTextFileSync(`${REPO}/${path}`);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound || error instanceof Deno.errors.IsADirectory) return undefined;
    throw error;
  }
}

function isFolder(path: string): boolean {
  try {
    return Deno.statSync(`${REPO}/${path}`).isDirectory;
  } catch {
    return false;
  }
}

Deno.test("slugs follow GitHub's rules: lowercase, punctuation and backticks dropped, spaces to -, repeats numbered", () => {
  assert.equal(slug("Using it from a training script"), "using-it-from-a-training-script");
  assert.equal(slug("`ckptkit report merge <reports...>`"), "ckptkit-report-merge-reports");
  assert.equal(
    slug("`validate --shard`, `scan --shard` and `report merge`"),
    "validate---shard-scan---shard-and-report-merge",
  );
  assert.equal(slug("Monitoring: from a write to a firing alert"), "monitoring-from-a-write-to-a-firing-alert");
  assert.equal(slug("What is guaranteed, and where"), "what-is-guaranteed-and-where");
  assert.equal(slug("hash_mismatch and the [manifest](x.md)"), "hash_mismatch-and-the-manifest");
  assert.deepEqual([...anchors("# Title\n\n## Same\n\n```sh\n# not a heading\n```\n\n## Same\n\n## Same\n")], [
    "title",
    "same",
    "same-1",
    "same-2",
  ]);
});

Deno.test("the link checker finds a broken file, a broken anchor and nothing in code (a synthetic page)", () => {
  const page = [
    "# Guide",
    "",
    "## `ckptkit report merge <reports...>`",
    "",
    "## Twice",
    "",
    "## Twice",
    "",
    "[ok](#ckptkit-report-merge-reports), [ok too](#twice-1), [other page](other.md#its-heading),",
    '[folder](sub/) and [titled](other.md "a title") resolve; [bad anchor](#twice-2),',
    "[bad file](missing.md), [bad anchor elsewhere](other.md#nope) and ![bad image](img/none.png) do not.",
    "`[in code](#nope)` and [external](https://example.com/#nope) are not checked.",
    "",
    "```md",
    "[in a block](#nope)",
    "```",
  ].join("\n");
  const files = new Map([["docs/other.md", "# Other\n\n## Its heading\n"]]);
  const broken = brokenLinks("docs/guide.md", page, (p) => files.get(p), (p) => p === "docs/sub");
  assert.deepEqual(broken, [
    "docs/guide.md:10: #twice-2: no heading #twice-2 in docs/guide.md",
    "docs/guide.md:11: missing.md: no file docs/missing.md",
    "docs/guide.md:11: other.md#nope: no heading #nope in docs/other.md",
    "docs/guide.md:11: img/none.png: no file docs/img/none.png",
  ]);
  assert.deepEqual(localLinks(page).length, 9);
  assert.deepEqual(resolveLink("docs/commands/gc.md", "../../README.md#quickstart"), {
    path: "README.md",
    anchor: "quickstart",
  });
});

Deno.test("every relative link of README.md, docs/, examples/README.md and bench/RESULTS.md resolves", async () => {
  const all = await pages();
  const broken = [...all].flatMap(([path, text]) => brokenLinks(path, text, readFile, isFolder));
  assert.deepEqual(broken, []);
});

Deno.test("README.md is a front page: under 200 lines", async () => {
  const lines = (await Deno.readTextFile(`${REPO}/README.md`)).split("\n").length - 1;
  assert.ok(lines < 200, `README.md has ${lines} lines`);
});

Deno.test("every page of docs/ is reachable from docs/README.md", async () => {
  const all = await pages();
  const reached = new Set(["docs/README.md"]);
  const queue = ["docs/README.md"];
  while (queue.length > 0) {
    const page = queue.shift()!;
    for (const { target } of localLinks(all.get(page) ?? "")) {
      const { path } = resolveLink(page, target);
      if (path.startsWith("docs/") && path.endsWith(".md") && !reached.has(path)) {
        reached.add(path);
        queue.push(path);
      }
    }
  }
  const orphans = [...all.keys()].filter((path) => path.startsWith("docs/") && !reached.has(path));
  assert.deepEqual(orphans, [], "pages of docs/ that no chain of links from docs/README.md reaches");
});
