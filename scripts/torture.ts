/**
 * `deno task torture`: the long variants of the reliability harnesses, with
 * their figures. Kills writers at random instants (hundreds of trials),
 * races commit, gc, scan and resume --repair for minutes, runs the root as a
 * state machine (thousands of random library, CLI, concurrent and killed
 * operations and environment damage, invariants after every step), fuzzes the manifest
 * parser and the config loader, and runs the strace, disk-full and
 * hostile-input suites; then prints one line of figures per harness and
 * refreshes the figures block of docs/reliability.md with them (`--no-readme`
 * leaves it alone; the flag keeps its old name).
 *
 * ```sh
 * deno task torture                                   # 300 crash trials, 120 s race, 10,000 model steps, 100,000 fuzz inputs
 * deno task torture --crash-trials 50 --race-seconds 20 --model-steps 500 --fuzz 5000 --no-readme
 * deno task torture --crash-trials 0 --race-seconds 0 --fuzz 0 --model-steps 2000 --seed 7 --no-readme
 * deno task torture --crash-trials 0 --race-seconds 0 --fuzz 0 --model-replay failing.json --no-readme
 * deno task torture --sweep                           # only the crash-at-every-call sweep (tests/_sweep.ts)
 * ```
 *
 * `--sweep` kills every mutating command right before each file-system call
 * it makes on its root, retries it, and checks the invariants; it prints one
 * line per command and replaces only the sweep's lines of the docs block
 * (a run without `--sweep` keeps them).
 *
 * Exits 1 when any harness reports a violation.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { formatCrashFigures, runCrashTrials } from "../tests/_crash.ts";
import { formatRaceFigures, runRace } from "../tests/_race.ts";
import { formatModelFailure, formatModelFigures, runModel } from "../tests/_model.ts";
import { formatSweepFigures, runSweep } from "../tests/_sweep.ts";

const REPO = new URL("..", import.meta.url).pathname.replace(/\/$/, "");

const { values } = parseArgs({
  options: {
    "crash-trials": { type: "string", default: "300" },
    "race-seconds": { type: "string", default: "120" },
    "model-steps": { type: "string", default: "10000" },
    "model-replay": { type: "string" },
    fuzz: { type: "string", default: "100000" },
    seed: { type: "string", default: String(Date.now() % 1_000_000) },
    "no-readme": { type: "boolean", default: false },
    sweep: { type: "boolean", default: false },
    help: { type: "boolean", short: "h", default: false },
  },
});
if (values.help) {
  console.log(
    "usage: deno task torture [--crash-trials N] [--race-seconds S] [--model-steps N] [--model-replay FILE] [--fuzz N] [--seed S] [--no-readme]\n" +
      "       deno task torture --sweep [--no-readme]",
  );
  Deno.exit(0);
}
const numbers = ["crash-trials", "race-seconds", "fuzz", "seed", "model-steps"].map((key) => {
  const value = Number(values[key as keyof typeof values]);
  if (!Number.isSafeInteger(value) || value < 0) {
    console.error(`torture: --${key} must be a non-negative integer`);
    Deno.exit(2);
  }
  return value;
});
const [crashTrials, raceSeconds, fuzzInputs, seed, modelSteps] = numbers;

const lines: string[] = [];
let failed = false;
const work = await Deno.makeTempDir({ prefix: "ckptkit-torture-" });
try {
  if (values.sweep) {
    const started = performance.now();
    const sweep = await runSweep({ work: `${work}/sweep`, progress: (line) => console.error(`  ${line}`) });
    const seconds = Math.round((performance.now() - started) / 1000);
    const total = (key: "calls" | "covered" | "tried") => sweep.reduce((n, f) => n + f[key], 0);
    const violations = sweep.reduce((n, f) => n + f.newViolations.length, 0);
    const holes = new Map<string, number>();
    for (const f of sweep) {
      for (const [hole, n] of Object.entries(f.knownHoles)) holes.set(hole, (holes.get(hole) ?? 0) + n);
    }
    lines.push(
      `crash sweep (\`deno task torture --sweep\`, ${new Date().toISOString().slice(0, 10)}, ${seconds} s): ` +
        `${total("calls")} file-system calls of ${sweep.length} mutating commands, ${total("covered")} crash points ` +
        `covered, ${violations} invariant violations` +
        [...holes].map(([hole, n]) => `; ${n} crash points on the known hole "${hole}" (fixed on another branch)`)
          .join("") +
        ":",
      ...sweep.map((f) => `  - ${formatSweepFigures(f)}`),
    );
    for (const f of sweep) {
      console.log(formatSweepFigures(f));
      for (const miss of f.missed) console.error(`  missed: ${miss}`);
      for (const violation of f.violations) console.error(`  ${violation}`);
    }
    failed ||= violations > 0 || sweep.some((f) => f.missed.length > 0);
  }
  if (!values.sweep && crashTrials > 0) {
    const crash = await runCrashTrials({ trials: crashTrials, seed, root: `${work}/crash/root` });
    lines.push(formatCrashFigures(crash) + ` (seed ${seed})`);
    for (const violation of crash.violations) console.error(`  ${violation}`);
    failed ||= crash.violations.length > 0;
    console.log(lines.at(-1));
  }
  if (!values.sweep && raceSeconds > 0) {
    const race = await runRace({ root: `${work}/race/root`, durationS: raceSeconds });
    lines.push(formatRaceFigures(race));
    for (const violation of race.violations) console.error(`  ${violation}`);
    failed ||= race.violations.length > 0;
    console.log(lines.at(-1));
  }
  if (!values.sweep && modelSteps > 0) {
    // A sequence printed by a failed run (a JSON list of operations) is replayed exactly.
    const replay = values["model-replay"] ? JSON.parse(await Deno.readTextFile(values["model-replay"])) : undefined;
    const model = await runModel({ steps: modelSteps, seed, work: `${work}/model`, replay });
    lines.push(formatModelFigures(model));
    if (model.violations.length > 0) console.error(formatModelFailure(model));
    failed ||= model.violations.length > 0;
    console.log(lines.at(-1));
  }
  if (!values.sweep && fuzzInputs > 0) {
    const fuzz = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--allow-read",
        "--allow-env",
        `${REPO}/scripts/fuzz.ts`,
        "--trials",
        String(fuzzInputs),
        "--seed",
        String(seed),
      ],
      stdout: "piped",
      stderr: "inherit",
    }).output();
    const figures = new TextDecoder().decode(fuzz.stdout).trim().split("\n").filter((l) => l.startsWith("fuzz:"));
    lines.push(...(figures.length ? figures : [`fuzz: did not report figures (exit ${fuzz.code})`]));
    failed ||= !fuzz.success;
    console.log(lines.at(-1));
  }
  for (
    const [name, file] of values.sweep ? [] : [["strace ordering", "strace_test.ts"], ["faults", "faults_test.ts"], [
      "hostile input",
      "hostile_test.ts",
    ]]
  ) {
    const junit = `${work}/${file}.xml`;
    const run = await new Deno.Command(Deno.execPath(), {
      args: [
        "test",
        "--allow-read",
        "--allow-write",
        "--allow-env",
        "--allow-sys",
        "--allow-net",
        "--allow-run",
        `--junit-path=${junit}`,
        `${REPO}/tests/${file}`,
      ],
      stdout: "null",
      stderr: "null",
    }).output();
    const xml = await Deno.readTextFile(junit).catch(() => "");
    const cases = (xml.match(/<testcase /g) ?? []).length;
    const failures = (xml.match(/<failure/g) ?? []).length;
    lines.push(`${name}: ${cases} checks, ${failures} failed`);
    failed ||= !run.success;
    console.log(lines.at(-1));
  }
} finally {
  await Deno.remove(work, { recursive: true }).catch(() => {});
}

if (!values["no-readme"]) {
  const page = `${REPO}/docs/reliability.md`;
  const text = await Deno.readTextFile(page);
  const start = "<!-- reliability:start -->";
  const end = "<!-- reliability:end -->";
  const a = text.indexOf(start);
  const b = text.indexOf(end);
  if (a >= 0 && b > a) {
    const command =
      `deno task torture --crash-trials ${crashTrials} --race-seconds ${raceSeconds} --model-steps ${modelSteps} ` +
      `--fuzz ${fuzzInputs}`;
    const inner = text.slice(a + start.length, b);
    // The sweep's item and its wrapped or indented lines, kept by the runs that do not sweep.
    const sweepItem = /^- crash sweep.*\n(?:[ \t]+\S.*\n)*/m;
    const keptSweep = sweepItem.exec(inner)?.[0].trimEnd();
    const items = lines.map((line) => line.startsWith("  ") ? line : `- ${line}`).join("\n");
    const block = values.sweep
      ? `${start}${inner.replace(sweepItem, "").trimEnd()}\n${items}\n\n${end}`
      : `${start}\nFigures of \`${command}\` on ${
        new Date().toISOString().slice(0, 10)
      } (${navigator.hardwareConcurrency} cores):\n\n${items}${keptSweep ? `\n${keptSweep}` : ""}\n\n${end}`;
    await Deno.writeTextFile(page, text.slice(0, a) + block + text.slice(b + end.length));
    await new Deno.Command(Deno.execPath(), { args: ["fmt", page], stdout: "null", stderr: "null" })
      .output();
  }
}
Deno.exit(failed ? 1 : 0);
