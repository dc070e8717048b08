/**
 * The layering of `src/` that docs/architecture.md states, checked on every
 * import of every file under `src/`, of `mod.ts` and of `cli.ts`: each file
 * is in a folder the page lists, each import goes to a folder its row allows,
 * and the file graph has no cycle, type-only imports included. The rules are
 * read from the page's table, so the page and this test cannot drift apart.
 *
 * Imports are read by Deno's own parser (`deno info --json`: static,
 * `import type`, `export … from` and literal dynamic `import()`), plus
 * `new URL("./x.ts", import.meta.url)` references, which is how the hash pool
 * starts its worker and which no module graph shows.
 */

import assert from "node:assert/strict";
import { dirname, join, relative, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { REPO, tempDir } from "./_helpers.ts";

type Kind = "static" | "type" | "dynamic" | "url";

/** One import, between paths relative to the root it was read from. */
interface Edge {
  from: string;
  to: string;
  kind: Kind;
}

/** The table of docs/architecture.md: each folder (or entry file) and the folders it may import. */
type Rules = Map<string, Set<string>>;

const DOC = "docs/architecture.md";
const TOP_LEVEL = "src/*.ts";

/** Reads the rows of the page's table whose first cell is a backticked folder. */
function parseRules(markdown: string): Rules {
  const rules: Rules = new Map();
  for (const line of markdown.split("\n")) {
    if (!line.startsWith("| `")) continue;
    const cells = line.split("|").slice(1, -1).map((cell) => cell.trim());
    assert.equal(cells.length, 3, `${DOC}: a row has 3 cells: ${line}`);
    const key = cells[0].match(/^`([^`]+)`$/)?.[1];
    assert.ok(key, `${DOC}: the first cell is one backticked folder: ${line}`);
    const may = cells[2];
    // Anything but backticked names and commas (a typo, a forgotten backtick) would be silently dropped: refuse it.
    assert.ok(
      may === "nothing" || may.replace(/`[^`]+`/g, "").replace(/[,\s]/g, "") === "",
      `${DOC}: "may import" is "nothing" or a list of backticked folders: ${line}`,
    );
    assert.ok(!rules.has(key), `${DOC}: ${key} has one row`);
    rules.set(key, new Set(may === "nothing" ? [] : [...may.matchAll(/`([^`]+)`/g)].map((m) => m[1])));
  }
  return rules;
}

/** The row a file belongs to: `src/*.ts` for the top-level files, `src/<folder>/`, or the entry file itself. */
function groupOf(path: string): string | null {
  if (path === "mod.ts" || path === "cli.ts") return path;
  const parts = path.split("/");
  if (parts[0] !== "src") return null;
  return parts.length === 2 ? TOP_LEVEL : `src/${parts[1]}/`;
}

/** Every layer-rule violation of `edges`, one line each. */
function checkRules(files: string[], edges: Edge[], rules: Rules): string[] {
  const violations: string[] = [];
  for (const file of files) {
    const group = groupOf(file);
    if (!group || !rules.has(group)) violations.push(`${file}: its folder ${group} is not in ${DOC}`);
  }
  for (const { from, to, kind } of edges) {
    const source = groupOf(from);
    const target = groupOf(to);
    if (!source || !rules.has(source)) continue; // reported above
    // deno.json is data (version.ts reads the version from it), not code with imports of its own.
    if (to === "deno.json") continue;
    if (target === null) {
      violations.push(`${from} -> ${to} (${kind}): imports a file outside src/`);
    } else if (target !== source && !rules.get(source)!.has(target)) {
      violations.push(`${from} -> ${to} (${kind}): \`${source}\` may not import \`${target}\``);
    }
  }
  return violations;
}

/** Every cycle of the graph (one per strongly connected component, Tarjan), as `a -> b -> a`. */
function findCycles(edges: { from: string; to: string }[]): string[] {
  const next = new Map<string, string[]>();
  for (const { from, to } of edges) {
    if (!next.has(from)) next.set(from, []);
    if (!next.has(to)) next.set(to, []);
    next.get(from)!.push(to);
  }
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const components: string[][] = [];
  const visit = (node: string) => {
    index.set(node, index.size);
    low.set(node, index.get(node)!);
    stack.push(node);
    onStack.add(node);
    for (const to of next.get(node)!) {
      if (!index.has(to)) {
        visit(to);
        low.set(node, Math.min(low.get(node)!, low.get(to)!));
      } else if (onStack.has(to)) {
        low.set(node, Math.min(low.get(node)!, index.get(to)!));
      }
    }
    if (low.get(node) === index.get(node)) {
      const component: string[] = [];
      let top: string;
      do {
        top = stack.pop()!;
        onStack.delete(top);
        component.push(top);
      } while (top !== node);
      if (component.length > 1 || next.get(node)!.includes(node)) components.push(component);
    }
  };
  for (const node of [...next.keys()].sort()) if (!index.has(node)) visit(node);
  // One concrete cycle per component: the shortest way back from its first node (breadth-first inside it).
  return components.map((component) => {
    const members = new Set(component);
    const start = [...component].sort()[0];
    const previous = new Map<string, string>();
    const queue = [start];
    while (queue.length) {
      const node = queue.shift()!;
      for (const to of next.get(node)!) {
        if (!members.has(to)) continue;
        if (to === start) {
          const path = [start];
          for (let at = node; at !== start; at = previous.get(at)!) path.splice(1, 0, at);
          return [...path, start].join(" -> ");
        }
        if (!previous.has(to)) {
          previous.set(to, node);
          queue.push(to);
        }
      }
    }
    throw new Error(`no way back to ${start} in its own component`);
  }).sort();
}

/** Every `.ts` file under `dir` (relative to `root`), sorted. */
async function tsFiles(root: string, dir: string): Promise<string[]> {
  const found: string[] = [];
  for await (const entry of Deno.readDir(join(root, dir))) {
    const path = `${dir}/${entry.name}`;
    if (entry.isDirectory) found.push(...await tsFiles(root, path));
    else if (entry.name.endsWith(".ts")) found.push(path);
  }
  return found.sort();
}

// `new URL("./x.ts", import.meta.url)` outside comments: the lines of doc comments start with `*` or `//`.
const URL_REFERENCE = /new URL\(\s*(["'])(\.{1,2}\/[^"']+\.(?:ts|js|mjs))\1\s*,\s*import\.meta\.url\s*\)/g;

/** The imports between `files` (relative to `root`), as Deno's parser reads them, plus worker URL references. */
async function importGraph(root: string, files: string[], config: string | null): Promise<Edge[]> {
  await using tmp = await tempDir("ckptkit-architecture-");
  const entry = join(tmp.path, "entry.ts");
  const abs = (file: string) => resolve(root, file);
  await Deno.writeTextFile(
    entry,
    files.map((file) => `import ${JSON.stringify(pathToFileURL(abs(file)).href)};\n`).join(""),
  );
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json", "--no-npm", "--no-lock", ...(config ? ["--config", config] : ["--no-config"]), entry],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.ok(output.success, new TextDecoder().decode(output.stderr));
  const info = JSON.parse(new TextDecoder().decode(output.stdout)) as {
    modules: {
      specifier: string;
      error?: string;
      dependencies?: {
        specifier: string;
        isDynamic?: boolean;
        code?: { specifier?: string; error?: string };
        type?: { specifier?: string; error?: string };
      }[];
    }[];
  };
  const known = new Set(files);
  const toPath = (url: string) => relative(root, decodeURIComponent(new URL(url).pathname));
  const edges: Edge[] = [];
  const seen = new Set<string>();
  for (const module of info.modules) {
    if (!module.specifier.startsWith("file:")) continue;
    const from = toPath(module.specifier);
    if (!known.has(from)) continue;
    assert.ok(!module.error, `${from}: ${module.error}`);
    seen.add(from);
    for (const dependency of module.dependencies ?? []) {
      for (
        const [resolved, kind] of [
          [dependency.code, dependency.isDynamic ? "dynamic" : "static"],
          [dependency.type, "type"],
        ] as const
      ) {
        if (!resolved) continue;
        assert.ok(!resolved.error, `${from}: import "${dependency.specifier}": ${resolved.error}`);
        if (!resolved.specifier?.startsWith("file:")) continue;
        const to = toPath(resolved.specifier);
        // `import { type A, b }` resolves the same file as code and as type: one edge.
        if (!edges.some((edge) => edge.from === from && edge.to === to)) edges.push({ from, to, kind });
      }
    }
  }
  assert.deepEqual(files.filter((file) => !seen.has(file)), [], "deno info read every file");
  for (const from of files) {
    const lines = (await Deno.readTextFile(abs(from))).split("\n");
    for (const line of lines.filter((line) => !/^\s*(\*|\/\/|\/\*)/.test(line))) {
      for (const match of line.matchAll(URL_REFERENCE)) {
        edges.push({ from, to: relative(root, resolve(dirname(abs(from)), match[2])), kind: "url" });
      }
    }
  }
  return edges;
}

/** The files the rules cover: every `.ts` under `src/`, `mod.ts` and `cli.ts`. */
async function repoFiles(): Promise<string[]> {
  return [...await tsFiles(REPO, "src"), "mod.ts", "cli.ts"];
}

async function repoGraph(): Promise<{ files: string[]; edges: Edge[] }> {
  const files = await repoFiles();
  return { files, edges: await importGraph(REPO, files, join(REPO, "deno.json")) };
}

const readRules = async () => parseRules(await Deno.readTextFile(join(REPO, DOC)));

Deno.test(`${DOC} lists exactly the folders of src/, and its rules keep the CLI on top`, async () => {
  const rules = await readRules();
  const folders = new Set((await repoFiles()).map(groupOf));
  assert.deepEqual([...rules.keys()].sort(), [...folders].sort() as string[]);
  for (const [key, may] of rules) {
    for (const target of may) assert.ok(rules.has(target), `${key} may import ${target}, which has no row`);
    // Nothing but the CLI's entry point imports the CLI (mod.ts included: the published library leaves src/cli/ out).
    if (key !== "cli.ts") assert.ok(!may.has("src/cli/"), `${key} may not import src/cli/`);
  }
  assert.deepEqual([...rules.get("src/formats/")!], [], "formats import nothing above them");
  assert.deepEqual([...rules.get(TOP_LEVEL)!], [], "the top-level files are leaves");
  for (const lower of ["src/fs/", "src/core/"]) {
    for (const upper of ["src/core/", "src/multinode/", "src/metrics/"]) {
      if (lower !== upper) assert.ok(!rules.get(lower)!.has(upper), `${lower} may not import ${upper}`);
    }
  }
  // Folders are layers: the rules between them have no cycle either.
  const layerEdges = [...rules].flatMap(([from, may]) => [...may].map((to) => ({ from, to })));
  assert.deepEqual(findCycles(layerEdges), []);
});

Deno.test(`every import of src/, mod.ts and cli.ts follows ${DOC}`, async () => {
  const { files, edges } = await repoGraph();
  assert.deepEqual(checkRules(files, edges, await readRules()), []);
  // A command loads only the files it needs: a folder barrel would load the whole folder.
  assert.deepEqual(edges.filter((edge) => edge.from.startsWith("src/cli/") && edge.to.endsWith("/mod.ts")), []);
});

Deno.test("no import cycle among src/, mod.ts and cli.ts, type-only imports and worker URLs included", async () => {
  const { edges } = await repoGraph();
  assert.deepEqual(findCycles(edges), []);
});

// The checks above pass on an empty graph too: these make sure the parser and the checkers can fail.

Deno.test("architecture check: the import parser reads every kind of import and skips comments", async () => {
  await using tmp = await tempDir("ckptkit-architecture-");
  const sources: Record<string, string> = {
    "a.ts": [
      `import { b } from "./b.ts";`,
      `import type { C } from "./c.ts";`,
      `export { d } from "./d.ts";`,
      `export async function load() {`,
      `  return [await import("./e.ts"), new Worker(new URL("./f.ts", import.meta.url), { type: "module" })];`,
      `}`,
      `/**`,
      ` * import { g } from "./g.ts";`,
      ` * new URL("./g.ts", import.meta.url);`,
      ` */`,
      `// import "./g.ts";`,
      `export const used: [typeof b, C | null] = [b, null];`,
    ].join("\n"),
    "b.ts": `export const b = 1;\n`,
    "c.ts": `export interface C {\n  c: number;\n}\n`,
    "d.ts": `export const d = 1;\n`,
    "e.ts": `export const e = 1;\n`,
    "f.ts": `export const f = 1;\n`,
    "g.ts": `export const g = 1;\n`,
  };
  for (const [name, text] of Object.entries(sources)) await Deno.writeTextFile(join(tmp.path, name), text);
  const edges = await importGraph(tmp.path, Object.keys(sources), null);
  assert.deepEqual(
    edges.map((edge) => `${edge.from} -> ${edge.to} ${edge.kind}`).sort(),
    ["a.ts -> b.ts static", "a.ts -> c.ts type", "a.ts -> d.ts static", "a.ts -> e.ts dynamic", "a.ts -> f.ts url"],
  );
});

Deno.test("architecture check: the repository's graph has the imports it must have", async () => {
  const { files, edges } = await repoGraph();
  assert.ok(files.length > 90, `${files.length} files`);
  assert.ok(edges.length > 400, `${edges.length} imports`);
  const has = (from: string, to: string, kind: Kind) =>
    assert.ok(
      edges.some((edge) => edge.from === from && edge.to === to && edge.kind === kind),
      `${from} -> ${to} (${kind})`,
    );
  has("src/cli/validate.ts", "src/core/validate.ts", "dynamic"); // the CLI loads a command's code when it runs
  has("src/core/record.ts", "src/core/validate.ts", "type");
  has("src/fs/hash_pool.ts", "src/fs/hash_worker.ts", "url");
  has("mod.ts", "src/core/commit.ts", "static"); // export … from
  has("src/version.ts", "deno.json", "static");
});

Deno.test("architecture check: a cycle and a layer violation are reported", () => {
  assert.deepEqual(
    findCycles([
      { from: "a", to: "b" },
      { from: "b", to: "c" },
      { from: "c", to: "a" },
      { from: "c", to: "d" },
      { from: "d", to: "d" },
      { from: "e", to: "a" },
    ]),
    ["a -> b -> c -> a", "d -> d"],
  );
  const rules = parseRules(
    [
      "| folder | holds | may import |",
      "| --- | --- | --- |",
      "| `src/*.ts` | leaves | nothing |",
      "| `src/core/` | core | `src/*.ts` |",
      "| `src/cli/` | cli | `src/*.ts`, `src/core/` |",
    ].join("\n"),
  );
  const files = ["src/errors.ts", "src/core/a.ts", "src/core/b.ts", "src/cli/c.ts", "src/odd/d.ts"];
  assert.deepEqual(
    checkRules(files, [
      { from: "src/cli/c.ts", to: "src/core/a.ts", kind: "dynamic" },
      { from: "src/core/a.ts", to: "src/core/b.ts", kind: "static" },
      { from: "src/core/a.ts", to: "src/errors.ts", kind: "static" },
      { from: "src/core/b.ts", to: "src/cli/c.ts", kind: "type" },
      { from: "src/errors.ts", to: "src/core/a.ts", kind: "static" },
      { from: "src/core/a.ts", to: "tests/x.ts", kind: "static" },
    ], rules),
    [
      "src/odd/d.ts: its folder src/odd/ is not in docs/architecture.md",
      "src/core/b.ts -> src/cli/c.ts (type): `src/core/` may not import `src/cli/`",
      "src/errors.ts -> src/core/a.ts (static): `src/*.ts` may not import `src/core/`",
      "src/core/a.ts -> tests/x.ts (static): imports a file outside src/",
    ],
  );
  assert.throws(() => parseRules("| `src/x/` | x | src/core/ |"), /backticked folders/);
});
