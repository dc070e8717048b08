/**
 * The crash-consistency harness, shared by `tests/crash_test.ts` (a few dozen
 * trials in CI) and `deno task torture` (hundreds): starts ckptkit operations
 * as real processes, SIGKILLs them at random instants, and after every kill
 * checks the invariants that make resuming safe.
 */

import { ckptkitFlags, REPO } from "./_helpers.ts";
import { readLatest } from "../src/core/latest.ts";
import { isRoot, listRoot } from "../src/core/root.ts";
import { resumeFromRoot } from "../src/core/resume.ts";
import { scanRoot } from "../src/core/scan.ts";
import { collectGarbage } from "../src/core/gc.ts";
import { validateCheckpoint } from "../src/core/validate.ts";

/** What the harness measured. */
export interface CrashFigures {
  trials: number;
  killed: number;
  completed: number;
  violations: string[];
  byOperation: Record<string, number>;
  staleStagingCollected: number;
  durationS: number;
}

/** Options of {@linkcode runCrashTrials}. */
export interface CrashOptions {
  trials: number;
  seed: number;
  /** The root to torture (created). */
  root: string;
  /** Longest extra wait before the kill, in ms, after 60 ms (default 250: Deno starts in about 100 ms and most operations take 50 to 300 ms more). */
  maxDelayMs?: number;
}

/** A small deterministic PRNG (mulberry32), so a failing seed can be replayed. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const LIBRARY_WRITER = `
import { openCheckpointWriter } from "${REPO}/mod.ts";
const [root, step, files, size] = Deno.args;
const writer = await openCheckpointWriter(root, { step: Number(step), jobId: "crash", runId: "lib" });
for (let i = 0; i < Number(files); i++) {
  const data = new Uint8Array(Number(size)).fill(i + 1);
  await writer.writeFile("part-" + i + "/data.bin", data);
}
await writer.commit();
`;

/**
 * Runs `trials` kill trials against `root` and returns the figures; every
 * broken invariant is a string in `violations`.
 */
export async function runCrashTrials(options: CrashOptions): Promise<CrashFigures> {
  const started = performance.now();
  const random = prng(options.seed);
  const maxDelay = options.maxDelayMs ?? 250;
  const figures: CrashFigures = {
    trials: 0,
    killed: 0,
    completed: 0,
    violations: [],
    byOperation: {},
    staleStagingCollected: 0,
    durationS: 0,
  };
  await Deno.mkdir(options.root, { recursive: true });
  const libraryWriter = `${options.root}/../crash-writer.ts`;
  await Deno.writeTextFile(libraryWriter, LIBRARY_WRITER);
  const cli = (args: string[]) => [Deno.execPath(), "run", "--quiet", ...ckptkitFlags(), `${REPO}/cli.ts`, ...args];
  let step = 0;
  // Committed checkpoints and whether a trial may legitimately remove them.
  let committed = new Set<string>();
  let latestMayBeMissing = false;
  // The harness itself points latest at a missing step-999999 before some repairs; until one completes, that is
  // the harness's doing, not ckptkit's.
  let latestPlanted = false;

  for (let trial = 0; trial < options.trials; trial++) {
    figures.trials++;
    const pick = random();
    step += 1 + Math.floor(random() * 3);
    const root = options.root;
    let operation: string;
    let argv: string[];
    // Processes started with the killed one that must succeed (the other ranks of a multi-rank commit).
    let companions: string[][] = [];
    if (pick < 0.35) {
      operation = "write";
      argv = cli([
        "write",
        "--root",
        root,
        "--step",
        String(step),
        "--files",
        String(1 + Math.floor(random() * 4)),
        "--file-size",
        `${64 + Math.floor(random() * 1024)}KiB`,
        "--log-level",
        "silent",
      ]);
    } else if (pick < 0.6) {
      operation = "commit";
      const staging = `${root}/.staging-external-${step}`;
      await Deno.mkdir(`${staging}/sub`, { recursive: true });
      await Deno.writeFile(
        `${staging}/model.pt`,
        new Uint8Array(256 * 1024 + Math.floor(random() * 1024 * 1024)).fill(7),
      );
      await Deno.writeFile(`${staging}/sub/optim.pt`, new Uint8Array(1024).fill(3));
      argv = cli(["commit", staging, "--root", root, "--step", String(step), "--log-level", "silent"]);
    } else if (pick < 0.7) {
      operation = "multi-rank";
      const world = 2 + Math.floor(random() * 3);
      const staging = `${root}/.staging-step-${step}-ranks`;
      await Deno.mkdir(staging, { recursive: true });
      const rankArgv = (rank: number) =>
        cli([
          "commit",
          staging,
          "--root",
          root,
          "--step",
          String(step),
          "--rank",
          String(rank),
          "--world-size",
          String(world),
          "--rank-files",
          `rank-${rank}.pt`,
          "--log-level",
          "silent",
        ]);
      for (let rank = 0; rank < world; rank++) {
        await Deno.writeFile(`${staging}/rank-${rank}.pt`, new Uint8Array(64 * 1024 + rank * 4096).fill(rank + 1));
      }
      const victim = Math.floor(random() * world);
      argv = rankArgv(victim);
      companions = [...Array(world).keys()].filter((rank) => rank !== victim).map(rankArgv);
    } else if (pick < 0.8) {
      operation = "library-writer";
      argv = [
        Deno.execPath(),
        "run",
        "--quiet",
        ...ckptkitFlags(),
        libraryWriter,
        root,
        String(step),
        String(1 + Math.floor(random() * 3)),
        String(128 * 1024),
      ];
    } else if (pick < 0.9) {
      operation = "gc";
      argv = cli([
        "gc",
        root,
        "--keep-last",
        "3",
        "--keep-every",
        "10",
        "--stale-after",
        "1h",
        "--log-level",
        "silent",
      ]);
    } else {
      operation = "resume-repair";
      // Half the time, break latest first, as a lost update would.
      if (random() < 0.5) {
        await Deno.writeTextFile(`${root}/latest`, "step-999999\n");
        latestPlanted = true;
      }
      argv = cli(["resume", root, "--repair", "--log-level", "silent"]);
    }
    figures.byOperation[operation] = (figures.byOperation[operation] ?? 0) + 1;
    const before = new Set(committed);
    const latestWasMissing = (await readLatest(root)).state === "missing";
    // Until something marks the folder as a root (a commit that took the lock), gc rightly refuses it.
    const wasRoot = await isRoot(await listRoot(root));
    const child = new Deno.Command(argv[0], { args: argv.slice(1), stdout: "null", stderr: "piped" }).spawn();
    const stderr = new Response(child.stderr).text();
    const others = companions.map((companion) =>
      new Deno.Command(companion[0], { args: companion.slice(1), stdout: "null", stderr: "piped" }).output()
    );
    const delay = 60 + Math.floor(random() * maxDelay);
    // Every fifth trial runs to its end, so that a machine too busy to finish anything within the random delays
    // still checks completed operations (counts, not timing, decide what a run covered).
    const runsToEnd = trial % 5 === 4;
    const timer = runsToEnd ? undefined : setTimeout(() => {
      try {
        child.kill("SIGKILL");
      } catch { /* already exited */ }
    }, delay);
    const status = await child.status;
    clearTimeout(timer);
    if (status.signal === "SIGKILL") figures.killed++;
    else figures.completed++;
    const errors = await stderr;
    for (const other of await Promise.all(others)) {
      if (other.code !== 0) {
        const text = new TextDecoder().decode(other.stderr).trim().split("\n").slice(-2).join(" | ");
        figures.violations.push(`trial ${trial} (seed ${options.seed}, ${operation}): a rank failed: ${text}`);
      }
    }

    const where = `trial ${trial} (seed ${options.seed}, ${operation}, ${
      runsToEnd ? "run to its end" : `killed after ${delay} ms`
    }: ${status.signal ?? `exit ${status.code}`})`;
    // A run that was not killed must succeed (resume may find nothing: 3).
    const refusedNonRoot = operation === "gc" && !wasRoot && status.code === 2 && /\[not_a_root\]/.test(errors);
    if (
      status.signal === null &&
      !(status.code === 0 || (operation === "resume-repair" && status.code === 3) || refusedNonRoot)
    ) {
      figures.violations.push(
        `${where}: failed without being killed: ${errors.trim().split("\n").slice(-3).join(" | ")}`,
      );
    }
    const listing = await listRoot(root);
    const present = new Set(listing.checkpoints.map((c) => c.name));
    for (const checkpoint of listing.checkpoints) {
      const result = await validateCheckpoint(checkpoint.path);
      if (!result.ok) {
        figures.violations.push(`${where}: visible ${checkpoint.name} is not valid: ${result.problems[0]?.reason}`);
      }
    }
    const latest = await readLatest(root);
    const killedCommit = status.signal === "SIGKILL" &&
      ["write", "commit", "multi-rank", "library-writer"].includes(operation);
    if (latest.state === "ok" && !present.has(latest.name!)) {
      if (!(latestPlanted && latest.name === "step-999999")) {
        figures.violations.push(`${where}: latest names ${latest.name}, which is not there`);
      }
    } else if (latest.state === "invalid") {
      figures.violations.push(`${where}: latest is unreadable: ${latest.detail}`);
    } else if (latest.state === "missing" && present.size > 0) {
      // Only the first commit, killed between its rename and its latest update, leaves checkpoints without
      // latest (resume then takes the newest valid one; the next commit or resume --repair writes latest).
      if (!(killedCommit && latestWasMissing) && !latestMayBeMissing) {
        figures.violations.push(`${where}: latest is missing with checkpoints present`);
      }
      latestMayBeMissing = true;
    }
    if (latest.state === "ok") latestMayBeMissing = false;
    if (latest.state === "ok" && present.has(latest.name!)) latestPlanted = false;
    if (present.size === 0 && latest.state === "ok" && !latestPlanted) {
      figures.violations.push(`${where}: latest names ${latest.name} but no checkpoint exists`);
    }
    for (const name of before) {
      if (!present.has(name) && operation !== "gc") figures.violations.push(`${where}: ${name} was lost`);
    }
    if (operation === "gc") {
      const newest = [...before].sort((a, b) => Number(b.slice(5)) - Number(a.slice(5))).slice(0, 3);
      for (const name of newest) {
        if (!present.has(name)) figures.violations.push(`${where}: gc deleted ${name}, one of the 3 newest valid`);
      }
    }
    const decision = await resumeFromRoot(root, { depth: "fast" });
    if (present.size > 0 && !decision.chosen) figures.violations.push(`${where}: resume chose nothing`);
    if (decision.chosen && !(await validateCheckpoint(decision.chosen.path)).ok) {
      figures.violations.push(`${where}: resume chose an invalid ${decision.chosen.name}`);
    }
    committed = present;
    // The external stagings of commit trials that were not renamed are crashed writes now.
  }

  const scan = await scanRoot(options.root, { depth: "fast", staleStagingAfterS: 0, record: false });
  if (scan.summary.invalid > 0) figures.violations.push(`final scan: ${scan.summary.invalid} invalid checkpoints`);
  const leftovers = scan.staging.length;
  if (scan.summary.stale_staging !== leftovers) figures.violations.push("final scan: staging not all reported stale");
  const gc = await collectGarbage(options.root, { keepLast: 1000, staleStagingAfterS: 0, depth: "fast" });
  figures.staleStagingCollected = gc.delete_staging.length;
  if (gc.delete_staging.length !== leftovers) {
    figures.violations.push(`final gc removed ${gc.delete_staging.length} of ${leftovers} stale staging folders`);
  }
  const after = await listRoot(options.root);
  if (after.staging.length > 0) figures.violations.push(`${after.staging.length} staging folders left after gc`);
  const trash = await Array.fromAsync(Deno.readDir(`${options.root}/.ckptkit/trash`)).catch(() => []);
  if (trash.length > 0) figures.violations.push(`${trash.length} entries left in the trash after gc`);
  await Deno.remove(libraryWriter).catch(() => {});
  figures.durationS = Math.round((performance.now() - started) / 100) / 10;
  return figures;
}

/** One line of figures for logs and the README. */
export function formatCrashFigures(f: CrashFigures): string {
  return `crash: ${f.trials} trials (${f.killed} killed mid-way, ${f.completed} completed; ` +
    Object.entries(f.byOperation).map(([op, n]) => `${op} ${n}`).join(", ") +
    `), ${f.violations.length} invariant violations, ${f.staleStagingCollected} crashed stagings collected, ${f.durationS} s`;
}
