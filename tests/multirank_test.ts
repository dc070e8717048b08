/**
 * Multi-rank commits: eight concurrent processes commit one checkpoint
 * together, a rank or the merging rank is SIGKILLed, and every way ranks can
 * disagree (duplicates, world sizes, overlapping or unnamed files, files
 * changed after hashing, stale staging folders) ends with a clear outcome.
 */

import assert from "node:assert/strict";
import { CkptkitError } from "../src/errors.ts";
import { readLatest } from "../src/core/latest.ts";
import { MANIFEST_NAME } from "../src/core/layout.ts";
import { parseManifest } from "../src/core/manifest.ts";
import { commitRank, type RankCommitOptions } from "../src/multinode/multirank.ts";
import { PARTS_SUFFIX } from "../src/core/part.ts";
import { validateCheckpoint } from "../src/core/validate.ts";
import { cliCommand, decode, names, runCli, tempDir, waitForLine } from "./_helpers.ts";

const WORLD = 8;

/** Writes each rank's shard (sizes differ per rank) and rank 0's shared folder into a staging folder. */
async function stageRanks(staging: string, world: number): Promise<Map<number, string[]>> {
  await Deno.mkdir(`${staging}/meta`, { recursive: true });
  const files = new Map<number, string[]>();
  for (let rank = 0; rank < world; rank++) {
    const name = `model-rank-${String(rank).padStart(5, "0")}.pt`;
    const bytes = new Uint8Array(32 * 1024 * (rank + 1));
    crypto.getRandomValues(bytes.subarray(0, Math.min(bytes.length, 65536)));
    bytes[bytes.length - 1] = rank;
    await Deno.writeFile(`${staging}/${name}`, bytes);
    files.set(rank, [name]);
  }
  await Deno.writeTextFile(`${staging}/meta/config.json`, JSON.stringify({ world }));
  files.get(0)!.push("meta");
  return files;
}

function rankArgs(staging: string, root: string, step: number, rank: number, world: number, files: string[]) {
  return [
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
    ...files,
  ];
}

async function manifestOf(checkpoint: string) {
  const parsed = await parseManifest(await Deno.readTextFile(`${checkpoint}/${MANIFEST_NAME}`));
  assert.deepEqual(parsed.problems, []);
  return parsed.manifest!;
}

Deno.test("eight concurrent ranks commit one checkpoint exactly once, with a merged manifest", async () => {
  await using tmp = await tempDir();
  const root = tmp.path;
  const staging = `${root}/.staging-step-100-job7`;
  const files = await stageRanks(staging, WORLD);
  const runs = await Promise.all(
    [...files].map(([rank, paths]) =>
      cliCommand([...rankArgs(staging, root, 100, rank, WORLD, paths), "--wait", "--wait-timeout", "60", "--json"])
        .output().then(decode)
    ),
  );
  for (const run of runs) assert.equal(run.code, 0, run.stderr);
  const results = runs.map((run) => JSON.parse(run.stdout));
  const committers = results.filter((r) => r.outcome === "committed");
  assert.equal(committers.length, 1, "exactly one rank commits");
  const committer = committers[0].rank;
  for (const r of results) {
    if (r.rank !== committer) assert.equal(r.outcome, "committed_by_other");
    assert.equal(r.path, `${root}/step-100`);
  }

  const manifest = await manifestOf(`${root}/step-100`);
  assert.equal(manifest.ranks?.world_size, WORLD);
  assert.equal(manifest.ranks?.committed_by, committer);
  assert.deepEqual(manifest.ranks?.parts.map((p) => p.rank), [...Array(WORLD).keys()]);
  for (const r of results) {
    assert.equal(manifest.ranks?.parts[r.rank].part_digest, r.part_digest, `rank ${r.rank} recognises its part`);
  }
  const expected = [...files.values()].flat().map((p) => p === "meta" ? "meta/config.json" : p).sort();
  assert.deepEqual(manifest.files.map((f) => f.path), expected);
  assert.equal(manifest.total_bytes, manifest.ranks?.parts.reduce((sum, p) => sum + p.bytes, 0));

  assert.equal((await validateCheckpoint(`${root}/step-100`)).ok, true);
  assert.equal((await readLatest(root)).name, "step-100");
  assert.deepEqual(await names(root), [".ckptkit", "latest", "step-100"], "staging and parts are gone");
});

Deno.test("a rank SIGKILLed before recording its part: the others time out and nothing becomes visible", async () => {
  await using tmp = await tempDir();
  const root = tmp.path;
  const staging = `${root}/.staging-step-200-job8`;
  const files = await stageRanks(staging, WORLD);
  const victim = 5;
  const killed = cliCommand(rankArgs(staging, root, 200, victim, WORLD, files.get(victim)!), {
    env: { CKPTKIT_TEST_PAUSE_AT: "part_hashed" },
  }).spawn();
  await waitForLine(killed.stderr, "test_paused");
  killed.kill("SIGKILL");
  await killed.stdout.cancel();
  assert.equal((await killed.status).signal, "SIGKILL");

  const others = await Promise.all(
    [...files].filter(([rank]) => rank !== victim).map(([rank, paths]) =>
      runCli([...rankArgs(staging, root, 200, rank, WORLD, paths), "--wait", "--wait-timeout", "2"])
    ),
  );
  for (const run of others) {
    assert.equal(run.code, 4, run.stderr);
    assert.match(run.stderr, /\[wait_timeout\]/);
    assert.match(run.stderr, /7 of 8 ranks recorded their parts \(missing 5\)/);
  }
  assert.deepEqual((await names(root)).filter((n) => !n.startsWith(".")), [], "no checkpoint, no latest");

  const scan = await runCli(["scan", root, "--stale-after", "0s", "--json", "--fast"]);
  const report = JSON.parse(scan.stdout);
  assert.deepEqual(
    report.staging.filter((s: { stale: boolean }) => s.stale).map((s: { name: string }) => s.name),
    [".staging-step-200-job8", `.staging-step-200-job8${PARTS_SUFFIX}`],
  );
  const parts = report.staging.find((s: { name: string }) => s.name.endsWith(PARTS_SUFFIX));
  assert.deepEqual(parts.ranks, { recorded: [0, 1, 2, 3, 4, 6, 7], world_size: 8, missing: [5], claimed: false });
  // Nothing was ever committed here, so nothing marks the folder as a root yet: gc refuses until it is marked.
  const refused = await runCli(["gc", root, "--keep-last", "3", "--stale-after", "0s"]);
  assert.equal(refused.code, 2, refused.stderr);
  assert.match(refused.stderr, /\[not_a_root\]/);
  await Deno.mkdir(`${root}/.ckptkit`);
  const gc = await runCli(["gc", root, "--keep-last", "3", "--stale-after", "0s"]);
  assert.equal(gc.code, 0, gc.stderr);
  assert.deepEqual((await names(root)).filter((n) => n.startsWith(".staging")), [], "gc collected both");
});

Deno.test("the merging rank SIGKILLed before its rename: no visible checkpoint, waiting ranks say who claimed it", async () => {
  await using tmp = await tempDir();
  const root = tmp.path;
  const staging = `${root}/.staging-step-300-job9`;
  const files = await stageRanks(staging, WORLD);
  const children = [...files].map(([rank, paths]) =>
    cliCommand([...rankArgs(staging, root, 300, rank, WORLD, paths), "--wait", "--wait-timeout", "3"], {
      env: { CKPTKIT_TEST_PAUSE_AT: "before_rename" },
    }).spawn()
  );
  const outputs = children.map((child) => child.output().then(decode));
  const settled: number[] = [];
  outputs.forEach((output, i) => output.then(() => settled.push(i)));
  while (settled.length < WORLD - 1) await new Promise((resolve) => setTimeout(resolve, 50));
  const paused = children.findIndex((_, i) => !settled.includes(i));
  children[paused].kill("SIGKILL");
  const runs = await Promise.all(outputs);
  assert.match(runs[paused].stderr, /test_paused/);
  for (const [i, run] of runs.entries()) {
    if (i === paused) continue;
    assert.equal(run.code, 4, run.stderr);
    assert.match(run.stderr, new RegExp(`claimed the commit but did not finish.*\\[wait_timeout\\]`));
    assert.match(run.stderr, new RegExp(`rank ${paused} \\(pid`));
  }
  assert.deepEqual((await names(root)).filter((n) => !n.startsWith(".")), [], "no checkpoint, no latest");
  assert.ok((await names(root)).includes(".staging-step-300-job9"), "the staging folder stays for gc");
});

function options(root: string, rank: number, world: number, rankFiles: string[]): RankCommitOptions {
  return { root, step: 10, rank, worldSize: world, rankFiles, concurrency: 1 };
}

async function twoRankStaging(root: string, name = ".staging-step-10-a"): Promise<string> {
  const staging = `${root}/${name}`;
  await Deno.mkdir(staging);
  await Deno.writeTextFile(`${staging}/a.pt`, "rank zero");
  await Deno.writeTextFile(`${staging}/b.pt`, "rank one");
  return staging;
}

async function rejects(promise: Promise<unknown>, reason: string, message: RegExp): Promise<void> {
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(err instanceof CkptkitError, String(err));
    assert.equal(err.reason, reason, err.message);
    assert.match(err.message, message);
    return true;
  });
}

Deno.test("a rank run twice with the same files is recorded once; a rank arriving after the commit is told so", async () => {
  await using tmp = await tempDir();
  const staging = await twoRankStaging(tmp.path);
  const first = await commitRank(staging, options(tmp.path, 1, 2, ["b.pt"]));
  const again = await commitRank(staging, options(tmp.path, 1, 2, ["b.pt"]));
  assert.equal(first.outcome, "recorded");
  assert.equal(again.outcome, "recorded");
  assert.equal(again.part_digest, first.part_digest, "the recorded part is kept");
  const last = await commitRank(staging, options(tmp.path, 0, 2, ["a.pt"]));
  assert.equal(last.outcome, "committed");
  assert.equal(last.commit?.files, 2);
  const late = await commitRank(staging, options(tmp.path, 1, 2, ["b.pt"]));
  assert.equal(late.outcome, "already_committed");
  assert.equal(late.committed_by, 0);
  await rejects(
    commitRank(staging, options(tmp.path, 1, 3, ["b.pt"])),
    "checkpoint_exists",
    /not committed with this rank.s part \(world size 2, run null\)/,
  );
});

Deno.test("ranks that disagree are refused: duplicate rank with other files, world size, run id, overlapping files", async () => {
  await using tmp = await tempDir();
  const staging = await twoRankStaging(tmp.path);
  await commitRank(staging, options(tmp.path, 1, 2, ["b.pt"]));
  await rejects(
    commitRank(staging, options(tmp.path, 1, 2, ["a.pt"])),
    "part_conflict",
    /Rank 1 of step 10 is already recorded .* with different files/,
  );
  await rejects(
    commitRank(staging, options(tmp.path, 0, 4, ["a.pt"])),
    "part_mismatch",
    /Rank 1 .* recorded world size 2 where rank 0 has 4/,
  );
  await rejects(
    commitRank(staging, { ...options(tmp.path, 0, 2, ["a.pt"]), runId: "attempt-2" }),
    "part_mismatch",
    /run id null where rank 0 has "attempt-2"/,
  );
  assert.deepEqual((await names(tmp.path)).filter((n) => !n.startsWith(".")), []);

  await using other = await tempDir();
  const shared = await twoRankStaging(other.path);
  await commitRank(shared, options(other.path, 1, 2, ["b.pt", "a.pt"]));
  await rejects(
    commitRank(shared, options(other.path, 0, 2, ["a.pt"])),
    "part_conflict",
    /a.pt is named by rank 0 and/,
  );
  assert.deepEqual((await names(other.path)).filter((n) => !n.startsWith(".")), [], "nothing committed");
});

Deno.test("the merging rank refuses unnamed files and files changed after hashing, and waiting ranks learn why", async () => {
  await using tmp = await tempDir();
  const staging = await twoRankStaging(tmp.path);
  await Deno.writeTextFile(`${staging}/stray.log`, "nobody named me");
  assert.equal((await commitRank(staging, options(tmp.path, 1, 2, ["b.pt"]))).outcome, "recorded");
  await rejects(
    commitRank(staging, options(tmp.path, 0, 2, ["a.pt"])),
    "staging_invalid",
    /named by no rank \(stray.log\)/,
  );
  await rejects(
    commitRank(staging, { ...options(tmp.path, 1, 2, ["b.pt"]), wait: true, waitTimeoutMs: 20_000 }),
    "commit_failed",
    /Rank 0 merged the parts of step-10 but could not commit it \(staging_invalid/,
  );
  assert.deepEqual((await names(tmp.path)).filter((n) => !n.startsWith(".")), []);

  await using changed = await tempDir();
  const staging2 = await twoRankStaging(changed.path);
  await commitRank(staging2, options(changed.path, 1, 2, ["b.pt"]));
  await new Promise((resolve) => setTimeout(resolve, 20));
  await Deno.writeTextFile(`${staging2}/b.pt`, "rank one, rewritten");
  await rejects(
    commitRank(staging2, options(changed.path, 0, 2, ["a.pt"])),
    "file_changed",
    /b.pt changed after rank 1 hashed it/,
  );
  assert.deepEqual((await names(changed.path)).filter((n) => !n.startsWith(".")), []);
});

Deno.test("a re-run of a failed step in a fresh staging folder commits; the abandoned one is left for gc", async () => {
  await using tmp = await tempDir();
  const abandoned = await twoRankStaging(tmp.path, ".staging-step-10-attempt1");
  await commitRank(abandoned, { ...options(tmp.path, 1, 2, ["b.pt"]), runId: "attempt1" });
  const fresh = await twoRankStaging(tmp.path, ".staging-step-10-attempt2");
  await commitRank(fresh, { ...options(tmp.path, 1, 2, ["b.pt"]), runId: "attempt2" });
  const done = await commitRank(fresh, { ...options(tmp.path, 0, 2, ["a.pt"]), runId: "attempt2" });
  assert.equal(done.outcome, "committed");
  const manifest = await manifestOf(`${tmp.path}/step-10`);
  assert.equal(manifest.run_id, "attempt2");
  await rejects(
    commitRank(abandoned, { ...options(tmp.path, 0, 2, ["a.pt"]), runId: "attempt1" }),
    "checkpoint_exists",
    /already exists and was not committed with this rank's part/,
  );
});

Deno.test("bad rank arguments and staging folders are refused before anything is written", async () => {
  await using tmp = await tempDir();
  const staging = await twoRankStaging(tmp.path);
  await rejects(commitRank(staging, options(tmp.path, 2, 2, ["a.pt"])), "invalid_argument", /from 0 to 1/);
  await rejects(commitRank(staging, options(tmp.path, 0, 0, ["a.pt"])), "invalid_argument", /worldSize/);
  await rejects(commitRank(staging, options(tmp.path, 0, 2, ["../x"])), "unsafe_path", /\.\.\/x/);
  await rejects(commitRank(staging, options(tmp.path, 0, 2, ["missing.pt"])), "not_found", /missing.pt is not in/);
  await Deno.symlink("/etc", `${staging}/etc`);
  await rejects(commitRank(staging, options(tmp.path, 0, 2, ["etc/hostname"])), "unsupported_entry", /symbolic link/);
  await Deno.remove(`${staging}/etc`);
  const outside = `${tmp.path}/incoming`;
  await Deno.mkdir(outside);
  await rejects(
    commitRank(outside, options(tmp.path, 0, 2, [])),
    "staging_invalid",
    /must be a \.staging-\* folder directly inside the root/,
  );
  assert.deepEqual(await names(tmp.path), [".staging-step-10-a", "incoming"], "no parts were recorded");
});

Deno.test("ckptkit commit: --rank needs --world-size and --wait needs --rank (exit 2)", async () => {
  await using tmp = await tempDir();
  const staging = await twoRankStaging(tmp.path);
  const lonely = await runCli(["commit", staging, "--root", tmp.path, "--step", "1", "--rank", "0"]);
  assert.equal(lonely.code, 2);
  assert.match(lonely.stderr, /--rank and --world-size go together/);
  const waiting = await runCli(["commit", staging, "--root", tmp.path, "--step", "1", "--wait"]);
  assert.equal(waiting.code, 2);
  assert.match(waiting.stderr, /belong to a multi-rank commit/);
  const mismatch = await runCli([...rankArgs(staging, tmp.path, 1, 0, 2, ["a.pt"])]);
  assert.equal(mismatch.code, 0, mismatch.stderr);
  assert.match(mismatch.stdout, /rank 0\/2 \(1 file, 9 B\) recorded; 1 of 2 ranks so far/);
  const wrongWorld = await runCli([...rankArgs(staging, tmp.path, 1, 1, 3, ["b.pt"])]);
  assert.equal(wrongWorld.code, 2, wrongWorld.stderr);
  assert.match(wrongWorld.stderr, /\[part_mismatch\]/);
});

Deno.test("twenty rounds of six ranks racing in one process: one commit each, every rank told the outcome", async () => {
  await using tmp = await tempDir();
  for (let round = 0; round < 20; round++) {
    const staging = `${tmp.path}/.staging-step-${round}-race`;
    await Deno.mkdir(staging);
    await Promise.all([...Array(6).keys()].map((rank) => Deno.writeTextFile(`${staging}/r${rank}.bin`, `${round}`)));
    const results = await Promise.all([...Array(6).keys()].map((rank) =>
      commitRank(staging, {
        root: tmp.path,
        step: round,
        rank,
        worldSize: 6,
        rankFiles: [`r${rank}.bin`],
        wait: true,
        waitTimeoutMs: 30_000,
        concurrency: 1,
      })
    ));
    assert.equal(results.filter((r) => r.outcome === "committed").length, 1, `round ${round}`);
    assert.ok(results.every((r) => r.outcome === "committed" || r.outcome === "committed_by_other"));
  }
  const left = (await names(tmp.path)).filter((n) => n.startsWith(".staging"));
  assert.deepEqual(left, [], "no staging or parts folder left behind");
});
