/**
 * Reading the documentation from tests: README.md and the pages of docs/,
 * a section by its heading, the fenced code blocks of a section, and the
 * links and heading anchors of a page (with GitHub's rules for anchors).
 * Tests that run what the docs show find it here by file and heading, so a
 * moved or renamed section fails loudly instead of testing nothing.
 */

import assert from "node:assert/strict";
import { REPO } from "./_helpers.ts";

/** A page of the documentation, by its path from the repository root (`docs/configuration.md`). */
export function readDoc(path: string): Promise<string> {
  return Deno.readTextFile(`${REPO}/${path}`);
}

/** A markdown heading outside code blocks. */
export interface Heading {
  /** 1 for `#`, 2 for `##`… */
  level: number;
  /** The heading's text, without the `#`s. */
  text: string;
  /** Offset of the heading's line in the page. */
  offset: number;
}

/** Lines of a page with their offsets, and whether each is inside a fenced code block (fences included). */
function lines(text: string): { line: string; offset: number; fenced: boolean }[] {
  const out: { line: string; offset: number; fenced: boolean }[] = [];
  let offset = 0;
  let fence: string | undefined;
  for (const line of text.split("\n")) {
    const marker = /^\s{0,3}(`{3,}|~{3,})/.exec(line)?.[1];
    let fenced = fence !== undefined;
    if (fence === undefined && marker) {
      fence = marker;
      fenced = true;
    } else if (fence !== undefined && marker && marker[0] === fence[0] && marker.length >= fence.length) {
      fence = undefined;
    }
    out.push({ line, offset, fenced });
    offset += line.length + 1;
  }
  return out;
}

/** The ATX headings of a page, in order, skipping `#` lines inside code blocks (comments in sh blocks). */
export function headings(text: string): Heading[] {
  return lines(text).flatMap(({ line, offset, fenced }) => {
    const match = fenced ? null : /^(#{1,6})\s+(.*?)\s*#*\s*$/.exec(line);
    return match ? [{ level: match[1].length, text: match[2], offset }] : [];
  });
}

/**
 * The section under a heading, given as written (`## Slurm`): from the heading
 * line up to the next heading of the same or a higher level, or the page's end.
 * Fails when the page has no such heading, or more than one.
 */
export function section(text: string, heading: string, page = "the page"): string {
  const level = /^#+/.exec(heading)?.[0].length ?? 0;
  const wanted = heading.slice(level).trim();
  const all = headings(text);
  const found = all.filter((h) => h.level === level && h.text === wanted);
  assert.equal(found.length, 1, `${page} has ${found.length} headings "${heading}", expected one`);
  const next = all.find((h) => h.offset > found[0].offset && h.level <= level);
  return text.slice(found[0].offset, next?.offset ?? text.length);
}

/** The contents of the fenced code blocks of a text in one language (`sh`), in order, each ending in a newline. */
export function fencedBlocks(text: string, language: string): string[] {
  return [...text.matchAll(/^```([^\n`]*)\n([\s\S]*?)^```[ \t]*$/gm)]
    .filter((m) => m[1].trim() === language)
    .map((m) => m[2]);
}

/** A section's fenced blocks in one language, read from a page: `sectionBlocks("docs/multi-node.md", "## Slurm", "sh")`. */
export async function sectionBlocks(path: string, heading: string, language: string): Promise<string[]> {
  return fencedBlocks(section(await readDoc(path), heading, path), language);
}

/**
 * GitHub's anchor for a heading: inline links keep their text, lowercase,
 * every character that is not a letter, mark, digit, `_`, `-` or space dropped
 * (backticks, dots, commas, colons, slashes…), each space a `-`. Hyphens are
 * not collapsed: "`--shard`, `x`" is `--shard-x`.
 */
export function slug(heading: string): string {
  return heading
    .replace(/!?\[([^\]]*)\]\([^)]*\)/g, "$1")
    .toLowerCase()
    .replace(/[^\p{L}\p{M}\p{N}\p{Pc} -]/gu, "")
    .replace(/ /g, "-");
}

/** Every anchor of a page: its headings' slugs, a repeated one suffixed `-1`, `-2`… as GitHub does. */
export function anchors(text: string): Set<string> {
  const seen = new Map<string, number>();
  const out = new Set<string>();
  for (const { text: heading } of headings(text)) {
    const base = slug(heading);
    const count = seen.get(base) ?? 0;
    seen.set(base, count + 1);
    out.add(count === 0 ? base : `${base}-${count}`);
  }
  return out;
}

/** A link of a page: its target as written and the line it is on (1-based). */
export interface Link {
  target: string;
  line: number;
}

/**
 * The inline links and images of a page (`[text](target)`), outside code
 * blocks and code spans, whose target is not a URL with a scheme (`https:`,
 * `mailto:`): the links that point into the repository.
 */
export function localLinks(text: string): Link[] {
  const out: Link[] = [];
  lines(text).forEach(({ line, fenced }, i) => {
    if (fenced) return;
    const prose = line.replace(/(`+)[\s\S]*?\1/g, (span) => " ".repeat(span.length));
    for (const m of prose.matchAll(/\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)/g)) {
      if (!/^[a-z][a-z0-9+.-]*:/i.test(m[1])) out.push({ target: m[1], line: i + 1 });
    }
  });
  return out;
}

/** Resolves `target` (relative, maybe with `#anchor`) from the page at `page`; both from the repository root. */
export function resolveLink(page: string, target: string): { path: string; anchor: string | undefined } {
  const hash = target.indexOf("#");
  const file = hash < 0 ? target : target.slice(0, hash);
  const anchor = hash < 0 ? undefined : decodeURIComponent(target.slice(hash + 1));
  if (file === "") return { path: page, anchor };
  const base = new URL(`file:///${page}`);
  const path = decodeURIComponent(new URL(file, base).pathname.slice(1)).replace(/\/$/, "");
  return { path, anchor };
}

/**
 * The broken links of one page: a target that is neither a file nor a folder,
 * or an anchor that no heading of the target page makes. `read` gives a page's
 * text, or undefined when no such file exists; `isFolder` says whether a path
 * is a folder.
 */
export function brokenLinks(
  page: string,
  text: string,
  read: (path: string) => string | undefined,
  isFolder: (path: string) => boolean,
): string[] {
  const broken: string[] = [];
  for (const { target, line } of localLinks(text)) {
    const { path, anchor } = resolveLink(page, target);
    const content = path === page ? text : read(path);
    if (content === undefined && !isFolder(path)) {
      broken.push(`${page}:${line}: ${target}: no file ${path}`);
    } else if (
      anchor !== undefined && !(content !== undefined && path.endsWith(".md") && anchors(content).has(anchor))
    ) {
      broken.push(`${page}:${line}: ${target}: no heading #${anchor} in ${path}`);
    }
  }
  return broken;
}
