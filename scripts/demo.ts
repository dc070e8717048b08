/**
 * `deno task demo`: the guided tour a new user runs first. On a throw-away
 * local root (default `./demo-root`, or `--root <dir>`) it writes three
 * checkpoints, validates the newest, flips one bit in it to simulate bit rot,
 * shows that `validate` and `scan` catch it, and that `resume` falls back to
 * the newest checkpoint that is still valid.
 *
 * Every command runs in-process through `main()` of `cli.ts` (the same code
 * as the `ckptkit` binary) and is printed before it runs, so the tour doubles
 * as a list of commands to copy. The script exits 0 when every step behaved
 * as expected (including the failures it provokes on purpose) and 1
 * otherwise; 2 for bad flags or a root it refuses to wipe.
 *
 * The root is only ever wiped when it carries the `.ckptkit-demo` marker this
 * script leaves behind and holds nothing but what the demo creates.
 *
 * @module
 */

import { join } from "node:path";
import { parseArgs } from "node:util";
import { main, processIo } from "../cli.ts";
import type { CliIo } from "../src/cli/context.ts";
import { CORRUPT_DIR, isStagingName, LATEST_NAME, parseCheckpointName, STATE_DIR } from "../src/core/layout.ts";

/** Marker file that tells a previous demo root from anybody else's folder. */
export const DEMO_MARKER = ".ckptkit-demo";

const DEFAULT_ROOT = "demo-root";
const STEPS = [10, 20, 30] as const;
const CORRUPTED_STEP = 30;
const FALLBACK_STEP = 20;
/** Keeps the tour to the results; warnings (the interesting part) still show. */
const QUIET = ["--log-level", "warn"] as const;

const USAGE = `Usage: deno task demo [--root <dir>]

A guided tour of ckptkit on a throw-away local root: write three checkpoints,
corrupt one, and watch validate, scan and resume deal with it.

Options:
  --root <dir>  demo root (default ./${DEFAULT_ROOT}); it is deleted and
                recreated on every run, so it must be new, empty, or a
                previous demo root (one holding the ${DEMO_MARKER} marker)
  -h, --help    show this help
`;

/** Thrown for conditions that stop the tour before it starts (exit 2). */
class DemoSetupError extends Error {}

/** What one step of the tour did, for the closing summary. */
interface StepOutcome {
  label: string;
  ok: boolean;
  detail: string;
}

const say = (text = ""): void => processIo.stdout(text + "\n");

/** Quotes an argument the way a POSIX shell needs it, so printed commands can be pasted. */
function shellQuote(arg: string): string {
  return /^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replaceAll("'", `'\\''`)}'`;
}

/** Entries the demo (through ckptkit) may leave in its root; anything else is someone's data. */
function isDemoEntry(name: string): boolean {
  return name === DEMO_MARKER || name === STATE_DIR || name === LATEST_NAME ||
    name === CORRUPT_DIR || isStagingName(name) ||
    name.startsWith(`.${LATEST_NAME}.tmp-`) ||
    parseCheckpointName(name) !== undefined;
}

/**
 * Makes `root` a fresh, empty demo root holding only the marker. Refuses
 * (with {@linkcode DemoSetupError}) anything that might be someone's data: a
 * non-empty folder without the marker, a marked folder holding foreign
 * entries, a symlink or a file.
 */
async function prepareRoot(root: string): Promise<"created" | "reused"> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.lstat(root);
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
    await Deno.mkdir(root, { recursive: true });
    await writeMarker(root);
    return "created";
  }
  if (info.isSymlink) {
    throw new DemoSetupError(
      `${root} is a symbolic link; refusing to wipe what it points to. Pass --root with a real folder.`,
    );
  }
  if (!info.isDirectory) {
    throw new DemoSetupError(
      `${root} exists and is not a folder; pass --root with another path.`,
    );
  }
  const entries = (await Array.fromAsync(Deno.readDir(root))).map((e) => e.name);
  if (entries.length === 0) {
    await writeMarker(root);
    return "created";
  }
  if (!entries.includes(DEMO_MARKER)) {
    throw new DemoSetupError(
      `${root} is not empty and has no ${DEMO_MARKER} marker, so it is not a previous demo root; ` +
        `refusing to delete it. Pass --root with a new or empty folder.`,
    );
  }
  // The marker alone is not enough: someone may have reused the folder since.
  const foreign = entries.filter((name) => !isDemoEntry(name)).sort();
  if (foreign.length > 0) {
    throw new DemoSetupError(
      `${root} has the ${DEMO_MARKER} marker but also holds ${
        foreign.slice(0, 3).map((n) => JSON.stringify(n)).join(", ")
      }${foreign.length > 3 ? ", …" : ""}, which the demo never creates; ` +
        `refusing to delete it. Move those away or pass --root with another folder.`,
    );
  }
  // Emptying the folder instead of removing it keeps the process's working
  // directory valid when --root names it, and keeping the marker until the
  // end means a wipe cut short is still recognised as a demo root next time.
  for (const name of entries) {
    if (name !== DEMO_MARKER) {
      await Deno.remove(join(root, name), { recursive: true });
    }
  }
  return "reused";
}

async function writeMarker(root: string): Promise<void> {
  await Deno.writeTextFile(
    join(root, DEMO_MARKER),
    "Created by `deno task demo` (ckptkit). Running the demo again deletes and recreates this folder.\n",
  );
}

/**
 * Prints `$ ckptkit …args`, runs the CLI in-process with its output going to
 * the real stdout/stderr, and returns the exit code and what it printed on
 * stdout (for the checks).
 */
async function ckptkit(
  args: string[],
): Promise<{ code: number; stdout: string }> {
  say(`$ ckptkit ${args.map(shellQuote).join(" ")}`);
  let stdout = "";
  const tee: CliIo = {
    stdout: (text) => {
      stdout += text;
      processIo.stdout(text);
    },
    stderr: processIo.stderr,
    env: processIo.env,
    // Log lines as text in a terminal, JSON when the tour's stderr goes to a file or a pipe.
    stderrIsTerminal: processIo.stderrIsTerminal,
  };
  let code: number;
  try {
    code = await main(args, tee);
  } catch (err) {
    // main() turns expected failures into exit codes; anything thrown is a bug
    // worth showing, but the tour still reports it as a failed step.
    processIo.stderr(
      `demo: ckptkit crashed: ${(err as Error)?.stack ?? err}\n`,
    );
    code = 4;
  }
  return { code, stdout };
}

/** Flips one bit in the middle of the first shard of `checkpoint`; returns the file and offset. */
async function flipOneBit(
  checkpoint: string,
): Promise<{ file: string; offset: number }> {
  const shards = (await Array.fromAsync(Deno.readDir(checkpoint)))
    .filter((e) => e.isFile && e.name.endsWith(".bin"))
    .map((e) => e.name)
    .sort();
  if (shards.length === 0) throw new Error(`no shard found in ${checkpoint}`);
  const file = join(checkpoint, shards[0]);
  const size = (await Deno.stat(file)).size;
  const offset = Math.floor(size / 2);
  // Change one byte in place rather than rewriting the file: the size stays
  // the same, so only a digest can notice, as with real silent corruption.
  using handle = await Deno.open(file, { read: true, write: true });
  const byte = new Uint8Array(1);
  await handle.seek(offset, Deno.SeekMode.Start);
  if ((await handle.read(byte)) !== 1) throw new Error(`cannot read ${file}`);
  byte[0] ^= 0x01;
  await handle.seek(offset, Deno.SeekMode.Start);
  await handle.write(byte);
  return { file, offset };
}

/** Runs the tour on `root`; returns the outcome of every step. */
async function tour(root: string): Promise<StepOutcome[]> {
  const outcomes: StepOutcome[] = [];
  const expect = (
    label: string,
    ok: boolean,
    detail: string,
  ): boolean => {
    outcomes.push({ label, ok, detail });
    say(ok ? `  -> ${detail}` : `  !! UNEXPECTED: ${detail}`);
    return ok;
  };
  const exitCheck = (label: string, code: number, expected: number) =>
    expect(
      label,
      code === expected,
      code === expected ? `exit ${code}, as expected` : `exit ${code}, expected ${expected}`,
    );
  const identity = ["--root", root, "--job-id", "demo", "--run-id", "run1"];
  const shards = ["--files", "3", "--file-size", "1MiB"];
  const newest = join(root, `step-${CORRUPTED_STEP}`);

  say("== 1. Write three checkpoints ==");
  say(
    "A training job saves a checkpoint every few steps. `ckptkit write` stands in for it: it writes\n" +
      "3 shards of random data and a trainer_state.json into a staging folder inside the root,\n" +
      "hashes them while writing, then commits: manifest, fsync, atomic rename, move `latest`.\n" +
      "This first command runs at the default log level, so besides its result it prints one log\n" +
      "line on stderr: text in a terminal (time, severity, event, path), one JSON object per line\n" +
      "when stderr is a pipe or a file, ready for a log pipeline (--log-format json|text chooses).\n" +
      "The rest of the tour passes --log-level warn to stay readable.",
  );
  say();
  for (const [i, step] of STEPS.entries()) {
    const run = await ckptkit([
      "write",
      ...identity,
      "--step",
      String(step),
      ...shards,
      ...(i === 0 ? [] : QUIET),
    ]);
    const ok = exitCheck(`write step-${step}`, run.code, 0);
    say();
    if (!ok) return outcomes;
  }

  say("== 2. Validate the newest checkpoint ==");
  say(
    "`validate` re-reads every byte and compares it with the digests in the manifest.",
  );
  say();
  const first = await ckptkit(["validate", newest, ...QUIET]);
  exitCheck(`validate step-${CORRUPTED_STEP}`, first.code, 0);
  say();

  say("== 3. Simulate bit rot ==");
  const { file, offset } = await flipOneBit(newest);
  say(
    `Flipped one bit of byte ${offset} of ${file}.\n` +
      "Disks, controllers, network filesystems and bad copies corrupt data like this without any\n" +
      "error: the file keeps its size and still opens, so only a digest can tell. A job resuming\n" +
      "from it would load silently wrong weights, or crash hours later.",
  );
  say();

  say("== 4. Validate it again (exit 1 is expected) ==");
  say(
    "Same command as in step 2; the bytes changed, the manifest did not.",
  );
  say();
  const second = await ckptkit(["validate", newest, ...QUIET]);
  if (
    exitCheck(`validate step-${CORRUPTED_STEP} after the flip`, second.code, 1)
  ) {
    expect(
      "problem reported as hash_mismatch",
      second.stdout.includes("hash_mismatch"),
      second.stdout.includes("hash_mismatch")
        ? "the problem is reported as hash_mismatch, naming the file"
        : "the output does not mention hash_mismatch",
    );
  }
  say();

  say("== 5. Scan the whole root (exit 1 is expected) ==");
  say(
    "`scan` validates every checkpoint, newest first, and checks `latest`. It fails because\n" +
      `step-${CORRUPTED_STEP} is corrupt and \`latest\` still names it. (The hint about ${DEMO_MARKER}\n` +
      "is this demo's marker file; scan points out anything that is not part of the layout.)",
  );
  say();
  const scan = await ckptkit(["scan", root, ...QUIET]);
  exitCheck("scan the root", scan.code, 1);
  say();

  say("== 6. Resume ==");
  say(
    "At start-up a training script asks `ckptkit resume <root>` which checkpoint to load. It starts\n" +
      "from `latest`, validates it, and falls back to older ones until one is valid. It prints only\n" +
      "the path (so `path=$(ckptkit resume …)` works); it exits 3 only when the root never held a\n" +
      "checkpoint, and 1 when checkpoints exist but none is valid (the job stops, never restarts from 0).",
  );
  say();
  const resume = await ckptkit(["resume", root, ...QUIET]);
  if (exitCheck("resume", resume.code, 0)) {
    const chosen = resume.stdout.trim().split("\n").at(-1) ?? "";
    const fellBack = chosen.endsWith(`/step-${FALLBACK_STEP}`);
    expect(
      `resume falls back to step-${FALLBACK_STEP}`,
      fellBack,
      fellBack
        ? `resume chose ${chosen}: step-${CORRUPTED_STEP} failed validation, so it fell back to step-${FALLBACK_STEP}`
        : `resume chose ${JSON.stringify(chosen)}, expected a path ending in step-${FALLBACK_STEP}`,
    );
  }
  say();
  return outcomes;
}

function printSummary(root: string, outcomes: StepOutcome[]): boolean {
  const failed = outcomes.filter((o) => !o.ok);
  say("== Summary ==");
  if (failed.length === 0) {
    say(
      `Wrote step-10, step-20 and step-30 under ${root}, flipped one bit in step-${CORRUPTED_STEP}, and:\n` +
        `  - validate caught it (hash_mismatch, exit 1) where it had passed a moment before;\n` +
        `  - scan reported the root as unhealthy (exit 1) because of it and the \`latest\` naming it;\n` +
        `  - resume skipped it and chose step-${FALLBACK_STEP}, the newest checkpoint that is still valid.\n` +
        "Every step behaved as expected.",
    );
  } else {
    say(`${failed.length} step(s) did not behave as expected:`);
    for (const o of failed) say(`  - ${o.label}: ${o.detail}`);
  }
  const r = shellQuote(root);
  const next: [string, string][] = [
    [`deno task ckptkit scan ${r} --json`, "the machine-readable report"],
    [`deno task ckptkit resume ${r} --json`, "why resume chose what it chose"],
    [`deno task ckptkit validate ${r}/step-20 --fast`, "metadata-only check"],
    [`deno task validate-loop --root ${r} --once`, "the periodic validator"],
    ["deno task ckptkit --help", "every command and flag"],
  ];
  const width = Math.max(...next.map(([command]) => command.length));
  say();
  say("What to try next:");
  for (const [command, why] of next) {
    say(`  ${command.padEnd(width)}  # ${why}`);
  }
  say(
    `Run the demo again to start over; ${r} is only scratch space (delete it when done).`,
  );
  return failed.length === 0;
}

async function run(args: string[]): Promise<number> {
  let root: string;
  try {
    const { values } = parseArgs({
      args,
      options: {
        root: { type: "string" },
        help: { type: "boolean", short: "h" },
      },
      strict: true,
      allowPositionals: false,
    });
    if (values.help) {
      processIo.stdout(USAGE);
      return 0;
    }
    root = values.root ?? DEFAULT_ROOT;
    if (root.trim() === "") throw new Error("--root must not be empty");
  } catch (err) {
    processIo.stderr(`demo: ${(err as Error).message} (see --help)\n`);
    return 2;
  }

  // Variables such as CKPTKIT_CONFIG or CKPTKIT_LOG_LEVEL from the user's
  // shell would change what the tour shows; the tour passes everything it
  // needs as flags, so it drops them (in this process only).
  const dropped = Object.keys(Deno.env.toObject()).filter((name) => name.startsWith("CKPTKIT_"));
  for (const name of dropped) Deno.env.delete(name);

  say("ckptkit demo: a guided tour on a throw-away local checkpoint root");
  if (dropped.length > 0) {
    say(`(ignoring ${dropped.join(", ")} from your environment for the tour)`);
  }
  let prepared: "created" | "reused";
  try {
    prepared = await prepareRoot(root);
  } catch (err) {
    if (err instanceof DemoSetupError) {
      processIo.stderr(`demo: ${err.message}\n`);
      return 2;
    }
    throw err;
  }
  say(
    prepared === "reused" ? `Root: ${root} (a previous demo root; emptied to start fresh)` : `Root: ${root} (new)`,
  );
  say();
  const outcomes = await tour(root);
  return printSummary(root, outcomes) ? 0 : 1;
}

if (import.meta.main) {
  Deno.exit(await run(Deno.args));
}
