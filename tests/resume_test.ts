import assert from "node:assert/strict";
import { readLatest } from "../src/core/latest.ts";
import type { Problem } from "../src/problems.ts";
import { planResume, resumeFromRoot, resumeOrder } from "../src/core/resume.ts";
import { cliCommand, flipByte, names, runCli, snapshot, tempDir, writeStep } from "./_helpers.ts";

const candidates = [30, 20, 10].map((step) => ({
  name: `step-${step}`,
  path: `/r/step-${step}`,
  step,
  created_at: `2026-11-0${step / 10}T00:00:00Z`,
}));
const bad: Problem[] = [{
  reason: "hash_mismatch",
  path: "a.bin",
  detail: "sha256 is 1, manifest says 2",
}];

Deno.test("planResume takes the checkpoint latest names when it is valid", () => {
  const d = planResume({
    candidates,
    latest: "step-30",
    validations: new Map<string, Problem[] | "gone">([["step-30", []]]),
  });
  assert.equal(d.chosen?.name, "step-30");
  assert.equal(d.fallback, false);
  assert.equal(d.fallback_reason, null);
});

Deno.test("planResume falls back past invalid and vanished checkpoints and says why", () => {
  const d = planResume({
    candidates,
    latest: "step-30",
    validations: new Map<string, Problem[] | "gone">([["step-30", bad], [
      "step-20",
      "gone",
    ], ["step-10", []]]),
  });
  assert.equal(d.chosen?.name, "step-10");
  assert.equal(d.fallback, true);
  assert.equal(d.fallback_reason, "newer checkpoints are invalid: step-30 (hash_mismatch), step-20 (gone)");
  assert.equal(d.latest_problem, "latest names step-30, which is invalid (hash_mismatch)");
  assert.deepEqual(d.rejected.map((r) => [r.name, r.reasons]), [["step-30", [
    "hash_mismatch",
  ]], ["step-20", ["gone"]]]);
});

Deno.test("planResume with latest naming a missing folder takes the newest valid and reports latest", () => {
  const d = planResume({ candidates, latest: "step-40", validations: new Map([["step-30", []]]) });
  assert.equal(d.chosen?.name, "step-30");
  assert.equal(d.fallback, false, "nothing newer was rejected");
  assert.equal(d.latest_problem, "latest names step-40, which does not exist");
  const missing = planResume({ candidates, latest: "", validations: new Map([["step-30", []]]) });
  assert.equal(missing.latest_problem, "latest is missing or unreadable");
});

Deno.test("planResume prefers a newer complete checkpoint that latest does not name yet (commit killed before latest)", () => {
  const d = planResume({ candidates, latest: "step-20", validations: new Map([["step-30", []]]) });
  assert.equal(d.chosen?.name, "step-30");
  assert.match(d.latest_problem!, /latest names step-20, older than the newest valid step-30/);
  const ok = planResume({ candidates, latest: "step-30", validations: new Map([["step-30", []]]) });
  assert.equal(ok.latest_problem, null);
});

Deno.test("planResume with only invalid checkpoints chooses nothing", () => {
  const d = planResume({
    candidates,
    latest: "step-30",
    validations: new Map<string, Problem[] | "gone">([["step-30", bad], [
      "step-20",
      bad,
    ], ["step-10", bad]]),
  });
  assert.equal(d.chosen, null);
  assert.equal(d.ok, false);
  assert.equal(d.rejected.length, 3);
});

Deno.test("resumeOrder for newest-before filters by step or creation time", () => {
  assert.deepEqual(
    resumeOrder({
      candidates,
      latest: "step-30",
      policy: "newest-before",
      beforeStep: 25,
    }).order.map((c) => c.step),
    [20, 10],
  );
  const byTime = resumeOrder({
    candidates,
    latest: "step-30",
    policy: "newest-before",
    beforeTime: new Date("2026-11-02T00:00:00Z"),
  });
  assert.deepEqual(byTime.order.map((c) => c.step), [10]);
  assert.deepEqual(byTime.excluded, ["step-30", "step-20"]);
});

Deno.test("planResume under last-known-good trusts a usable record without validating", () => {
  const d = planResume({
    candidates,
    latest: "step-30",
    policy: "last-known-good",
    validations: new Map(),
    knownGood: { name: "step-20", usable: true, detail: "validated by commit" },
  });
  assert.equal(d.chosen?.name, "step-20");
  assert.equal(d.depth, "none");
  const changed = planResume({
    candidates,
    latest: "step-30",
    policy: "last-known-good",
    validations: new Map<string, Problem[] | "gone">([["step-30", []]]),
    knownGood: {
      name: "step-20",
      usable: false,
      detail: "step-20 changed since it was validated",
    },
  });
  assert.equal(changed.chosen?.name, "step-30");
  assert.equal(changed.fallback, true);
  assert.match(
    changed.fallback_reason!,
    /step-20 changed.*fell back to latest-valid/,
  );
});

Deno.test("resume falls back when the newest checkpoint is corrupted, and changes nothing on disk", async () => {
  await using tmp = await tempDir();
  const root = tmp.path;
  await writeStep(root, 10);
  const newest = await writeStep(root, 20);
  await flipByte(`${newest}/shard-1.bin`, 100);
  const before = await snapshot(root);
  const decision = await resumeFromRoot(root);
  assert.equal(decision.chosen?.name, "step-10");
  assert.equal(decision.fallback, true);
  assert.deepEqual(
    await snapshot(root),
    before,
    "resume without --repair touches nothing",
  );
});

Deno.test("latest pointing to a missing folder: resume falls back, --repair rewrites latest and quarantines", async () => {
  await using tmp = await tempDir();
  const root = tmp.path;
  await writeStep(root, 10);
  await writeStep(root, 20);
  const corrupt = await writeStep(root, 30);
  await Deno.truncate(`${corrupt}/shard-0.bin`, 7);
  await Deno.writeTextFile(`${root}/latest`, "step-40\n");

  const plain = await runCli(["resume", root, "--json"]);
  assert.equal(plain.code, 0, plain.stderr);
  const doc = JSON.parse(plain.stdout);
  assert.equal(doc.path, `${root}/step-20`);
  assert.equal(doc.fallback, true);
  assert.equal(await Deno.readTextFile(`${root}/latest`), "step-40\n");

  const repaired = await runCli(["resume", root, "--repair", "--json"]);
  assert.equal(repaired.code, 0, repaired.stderr);
  const actions = JSON.parse(repaired.stdout).actions;
  assert.deepEqual(
    actions.map((a: { action: string; name: string }) => [a.action, a.name]),
    [
      ["quarantined", "step-30"],
      ["latest_rewritten", "step-20"],
    ],
  );
  assert.equal((await readLatest(root)).name, "step-20");
  assert.deepEqual(await names(`${root}/corrupt`), [
    "step-30",
    "step-30.quarantine.json",
  ]);
  assert.deepEqual(
    repaired.logs.filter((l) => l.event === "checkpoint_quarantined" || l.event === "latest_rewritten").map((l) =>
      l.event
    ),
    ["checkpoint_quarantined", "latest_rewritten"],
  );
  const again = await runCli(["resume", root, "--repair", "--json"]);
  assert.deepEqual(
    JSON.parse(again.stdout).actions,
    [],
    "a healthy root needs no repair",
  );
});

Deno.test("resume on a root that does not exist yet (a first start) exits 3", async () => {
  await using tmp = await tempDir();
  const run = await runCli(["resume", `${tmp.path}/not-yet`, "--json"]);
  assert.equal(run.code, 3, run.stderr);
  assert.match(JSON.parse(run.stdout).latest_problem, /does not exist yet/);
});

Deno.test("resume --repair moves a lagging latest to the newest valid checkpoint", async () => {
  await using tmp = await tempDir();
  const root = tmp.path;
  await writeStep(root, 10);
  await writeStep(root, 20);
  await Deno.writeTextFile(`${root}/latest`, "step-10\n");
  const plain = await runCli(["resume", root]);
  assert.equal(plain.stdout, `${root}/step-20\n`);
  assert.equal(await Deno.readTextFile(`${root}/latest`), "step-10\n", "nothing changes without --repair");
  const repaired = JSON.parse((await runCli(["resume", root, "--repair", "--json"])).stdout);
  assert.deepEqual(repaired.actions.map((a: { action: string }) => a.action), ["latest_rewritten"]);
  assert.equal(await Deno.readTextFile(`${root}/latest`), "step-20\n");
});

Deno.test("resume on a root whose every checkpoint is invalid exits 1 no_valid_checkpoint, not 3", async () => {
  await using tmp = await tempDir();
  const root = tmp.path;
  for (const step of [10, 20]) {
    await flipByte(`${await writeStep(root, step)}/shard-0.bin`, 0);
  }
  const run = await runCli(["resume", root]);
  assert.equal(run.code, 1, "a damaged history stops the job; 3 would make it start from scratch");
  assert.equal(run.stdout, "");
  assert.match(
    run.stderr,
    /^ckptkit: error: nothing valid to resume from in .*: no valid checkpoint: 2 checkpoints rejected \(step-20: hash_mismatch; step-10: hash_mismatch\).* \[no_valid_checkpoint\]$/m,
  );
  assert.equal(run.logs.find((l) => l.event === "resume_nothing")?.reason, "no_valid_checkpoint");
  const json = await runCli(["resume", root, "--json"]);
  assert.equal(json.code, 1);
  const doc = JSON.parse(json.stdout);
  assert.equal(doc.ok, false);
  assert.equal(doc.reason, "no_valid_checkpoint");
  assert.match(doc.message, /2 checkpoints rejected/);
});

Deno.test("resume on a root whose checkpoints were all quarantined exits 1; an empty root exits 3", async () => {
  await using tmp = await tempDir();
  const root = tmp.path;
  const empty = await runCli(["resume", root, "--json"]);
  assert.equal(empty.code, 3, empty.stderr);
  assert.equal(JSON.parse(empty.stdout).reason, "no_checkpoint");
  await writeStep(root, 10);
  assert.equal((await runCli(["quarantine", `${root}/step-10`, "--reason", "loss spike"])).code, 0);
  const run = await runCli(["resume", root, "--json"]);
  assert.equal(run.code, 1, run.stderr);
  const doc = JSON.parse(run.stdout);
  assert.equal(doc.reason, "no_valid_checkpoint");
  assert.match(doc.message, /1 checkpoint already quarantined in corrupt\//);
  // Repairing a root of only invalid checkpoints quarantines them; the next resume still refuses to start over.
  for (const step of [20, 30]) await flipByte(`${await writeStep(root, step)}/shard-1.bin`, 3);
  await Deno.remove(`${root}/latest`);
  assert.equal((await runCli(["resume", root, "--repair"])).code, 1);
  assert.deepEqual((await names(root)).filter((n) => n.startsWith("step-")), []);
  const after = await runCli(["resume", root]);
  assert.equal(after.code, 1, after.stderr);
  assert.match(after.stderr, /3 checkpoints already quarantined/);
});

/** Starts `resume --repair --json` on `root`, paused after it validated and before it takes the lock. */
async function pausedRepair(root: string) {
  const child = cliCommand(["resume", root, "--repair", "--json"], {
    env: { CKPTKIT_TEST_PAUSE_AT: "repair_validated" },
  }).spawn();
  const stdout = new Response(child.stdout).text();
  const reader = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
  let seen = "";
  while (!seen.includes("test_paused")) {
    const { done, value } = await reader.read();
    if (done) break;
    seen += value;
  }
  assert.match(seen, /"point":"repair_validated"/);
  return {
    async proceed() {
      child.kill("SIGUSR1");
      const rest = reader.read().then(async function drain(r): Promise<string> {
        return r.done ? "" : r.value + await reader.read().then(drain);
      });
      const status = await child.status;
      return { code: status.code, stdout: await stdout, stderr: seen + await rest };
    },
  };
}

Deno.test("resume --repair decides again under the lock: a commit landing meanwhile keeps latest moving forward", async () => {
  await using tmp = await tempDir();
  const root = `${tmp.path}/root`;
  await writeStep(root, 10);
  await writeStep(root, 20);
  await Deno.remove(`${root}/latest`);
  const repair = await pausedRepair(root);
  // Validated without the lock: step-20, latest missing. Now a commit of step 30 lands.
  const commit = await runCli(["write", "--root", root, "--step", "30", "--files", "1", "--file-size", "4KiB"]);
  assert.equal(commit.code, 0, commit.stderr);
  assert.equal((await readLatest(root)).name, "step-30");
  const run = await repair.proceed();
  assert.equal(run.code, 0, run.stderr);
  assert.equal((await readLatest(root)).name, "step-30", "latest never moves back to step-20");
  const doc = JSON.parse(run.stdout);
  assert.equal(doc.path, `${root}/step-30`, "the decision is the one taken under the lock");
  assert.deepEqual(doc.actions, []);
  assert.deepEqual((await names(root)).filter((n) => n.startsWith("step-")), ["step-10", "step-20", "step-30"]);
});

Deno.test("resume --repair never quarantines a checkpoint that changed between validation and the lock", async () => {
  await using tmp = await tempDir();
  const root = `${tmp.path}/root`;
  await writeStep(root, 10);
  const newest = await writeStep(root, 20);
  await flipByte(`${newest}/shard-0.bin`, 5);
  const repair = await pausedRepair(root);
  // Found invalid without the lock; an operator restores the file (same bytes as committed) meanwhile.
  await flipByte(`${newest}/shard-0.bin`, 5);
  const run = await repair.proceed();
  assert.equal(run.code, 0, run.stderr);
  const doc = JSON.parse(run.stdout);
  assert.equal(doc.path, newest);
  assert.deepEqual(doc.actions, [], "re-validated under the lock: nothing to repair");
  assert.equal(await Deno.lstat(`${root}/corrupt`).then(() => true, () => false), false);
  assert.equal((await readLatest(root)).name, "step-20");
});

Deno.test("newest-before rolls back past a loss spike by step or by time", async () => {
  await using tmp = await tempDir();
  const root = tmp.path;
  await writeStep(root, 100);
  await writeStep(root, 200);
  const cut = new Date().toISOString();
  await new Promise((r) => setTimeout(r, 20));
  await writeStep(root, 300);
  const byStep = await runCli([
    "resume",
    root,
    "--policy",
    "newest-before",
    "--before-step",
    "300",
  ]);
  assert.equal(byStep.stdout, `${root}/step-200\n`);
  const byTime = await runCli([
    "resume",
    root,
    "--policy",
    "newest-before",
    "--before-time",
    cut,
    "--json",
  ]);
  const doc = JSON.parse(byTime.stdout);
  assert.equal(doc.path, `${root}/step-200`);
  assert.deepEqual(doc.excluded, ["step-300"]);
  const missing = await runCli(["resume", root, "--policy", "newest-before"]);
  assert.equal(missing.code, 2);
  assert.match(missing.stderr, /needs --before-step or --before-time/);
  const badTime = await runCli([
    "resume",
    root,
    "--policy",
    "newest-before",
    "--before-time",
    "yesterday",
  ]);
  assert.equal(badTime.code, 2);
});

Deno.test("last-known-good trusts the commit's record, and falls back when a file changed under it", async () => {
  await using tmp = await tempDir();
  const root = tmp.path;
  await writeStep(root, 10);
  const newest = await writeStep(root, 20);
  const trusted = await runCli([
    "resume",
    root,
    "--policy",
    "last-known-good",
    "--json",
  ]);
  const doc = JSON.parse(trusted.stdout);
  assert.equal(doc.path, newest);
  assert.equal(doc.depth, "none", "no re-hashing");
  assert.equal(doc.fallback, false);

  await Deno.writeFile(`${newest}/shard-0.bin`, new Uint8Array(4096), {
    append: false,
  });
  const changed = JSON.parse(
    (await runCli(["resume", root, "--policy", "last-known-good", "--json"]))
      .stdout,
  );
  assert.equal(
    changed.path,
    `${root}/step-10`,
    "the rewritten checkpoint fails full validation",
  );
  assert.equal(changed.fallback, true);
  assert.match(
    changed.fallback_reason,
    /step-20 changed since it was validated/,
  );
});

Deno.test("last-known-good with no record falls back to latest-valid", async () => {
  await using tmp = await tempDir();
  const root = tmp.path;
  await writeStep(root, 10);
  await Deno.remove(`${root}/.ckptkit/state.json`);
  const doc = JSON.parse(
    (await runCli(["resume", root, "--policy", "last-known-good", "--json"]))
      .stdout,
  );
  assert.equal(doc.path, `${root}/step-10`);
  assert.match(doc.fallback_reason, /none recorded/);
});
