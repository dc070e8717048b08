import assert from "node:assert/strict";
import type { CkptkitError } from "../src/errors.ts";
import { collectGarbage } from "../src/core/gc.ts";
import { readLatest } from "../src/core/latest.ts";
import { acquireRootLock } from "../src/core/lock.ts";
import { validateCheckpoint } from "../src/core/validate.ts";
import { openCheckpointWriter } from "../src/core/writer.ts";
import { cliCommand, flipByte, names, runCli, snapshot, tempDir, writeStep } from "./_helpers.ts";

async function steps(root: string): Promise<string> {
  return (await names(root)).filter((n) => n.startsWith("step-")).map((n) => n.slice(5)).sort((a, b) =>
    Number(b) - Number(a)
  ).join(" ");
}

Deno.test("gc keeps the newest valid and every K-th, skips corrupt ones, and never deletes latest's", async () => {
  await using tmp = await tempDir();
  const root = tmp.path;
  for (const step of [500, 1000, 1500, 2000, 2500, 3100, 3500]) {
    await writeStep(root, step);
  }
  // The two newest are corrupt; latest names an old one (as after a manual rollback).
  await flipByte(`${root}/step-3500/shard-0.bin`, 1);
  await Deno.truncate(`${root}/step-3100/shard-1.bin`, 3);
  await Deno.writeTextFile(`${root}/latest`, "step-500\n");
  const result = await collectGarbage(root, { keepLast: 2, keepEvery: 1000 });
  assert.equal(await steps(root), "2500 2000 1000 500");
  const why = Object.fromEntries(result.keep.map((k) => [k.name, k.reasons]));
  assert.ok(why["step-2500"].includes("keep-last (1 of 2)"));
  assert.ok(why["step-2000"].includes("keep-every 1000"));
  assert.deepEqual(why["step-500"], ["named by latest"]);
  assert.deepEqual(result.delete.map((d) => d.name), [
    "step-3500",
    "step-3100",
    "step-1500",
  ]);
  assert.ok(
    result.bytes_freed > 3 * 2 * 4096 - 4093,
    String(result.bytes_freed),
  );
  assert.deepEqual(
    await names(`${root}/.ckptkit/trash`),
    [],
    "the trash is emptied",
  );
  for (const kept of ["step-2500", "step-2000", "step-1000", "step-500"]) {
    assert.equal((await validateCheckpoint(`${root}/${kept}`)).ok, true, kept);
  }
});

Deno.test("gc --dry-run prints what it would delete and why each survivor stays, changing nothing", async () => {
  await using tmp = await tempDir();
  const root = tmp.path;
  for (const step of [1, 2, 3, 4]) await writeStep(root, step);
  const before = await snapshot(root);
  const run = await runCli(["gc", root, "--keep-last", "2", "--dry-run"]);
  assert.equal(run.code, 0, run.stderr);
  assert.match(
    run.stdout,
    /^keep {4}step-4: keep-last \(1 of 2\); newest valid; named by latest; last known good$/m,
  );
  assert.match(run.stdout, /^keep {4}step-3: keep-last \(2 of 2\)$/m);
  assert.match(
    run.stdout,
    /^would delete step-2: older than the 2 newest valid checkpoints$/m,
  );
  assert.match(
    run.stdout,
    /^dry run: 2 checkpoints kept, 2 would delete, \d+\.\d KiB would be freed$/m,
  );
  assert.deepEqual(await snapshot(root), before);
  assert.equal(run.logs.filter((l) => l.event === "gc_delete").length, 0);
  const real = await runCli(["gc", root, "--keep-last", "2"]);
  assert.equal(real.logs.filter((l) => l.event === "gc_delete").length, 2);
  assert.equal(await steps(root), "4 3");
});

Deno.test("gc takes retention from the config and refuses to run without any", async () => {
  await using tmp = await tempDir();
  const root = tmp.path;
  for (const step of [1, 2, 3]) await writeStep(root, step);
  const none = await runCli(["gc", root]);
  assert.equal(none.code, 2);
  assert.match(none.stderr, /No retention policy/);
  await Deno.writeTextFile(
    `${tmp.path}/c.yaml`,
    `root: ${root}\nretention:\n  keep_last: 1\n`,
  );
  const run = await runCli(["--config", `${tmp.path}/c.yaml`, "gc"]);
  assert.equal(run.code, 0, run.stderr);
  assert.equal(await steps(root), "3");
});

Deno.test("gc judges staging by what changed it last, mtime or ctime, and empties trash left by a crash", async () => {
  await using tmp = await tempDir();
  const root = tmp.path;
  await writeStep(root, 1);
  // Old mtimes (set the way cp -a and rsync -a set them) do not make a folder filled just now stale: its ctimes are new.
  await Deno.mkdir(`${root}/.staging-step-2-old`);
  await Deno.writeTextFile(`${root}/.staging-step-2-old/a.bin`, "copied");
  const old = new Date(Date.now() - 3 * 3600_000);
  await Deno.utime(`${root}/.staging-step-2-old/a.bin`, old, old);
  await Deno.utime(`${root}/.staging-step-2-old`, old, old);
  // A long write: the folder is old but the file inside is being appended to now.
  await Deno.mkdir(`${root}/.staging-step-3-busy`);
  await Deno.writeTextFile(`${root}/.staging-step-3-busy/big.bin`, "still writing");
  await Deno.utime(`${root}/.staging-step-3-busy`, old, old);
  await Deno.mkdir(`${root}/.ckptkit/trash/step-0-123-abc`, { recursive: true });
  await Deno.writeTextFile(`${root}/.ckptkit/trash/step-0-123-abc/half`, "x");
  await Deno.writeTextFile(`${root}/.latest.tmp-deadbeef`, "step-1\n"); // left by a process killed mid-update
  const result = await collectGarbage(root, { keepLast: 5 });
  assert.deepEqual(result.delete_staging, []);
  assert.deepEqual(result.keep_staging.map((s) => s.name), [".staging-step-2-old", ".staging-step-3-busy"]);
  assert.ok(result.keep_staging.every((s) => s.age_s < 3600), JSON.stringify(result.keep_staging));
  assert.deepEqual(result.trash_emptied, ["step-0-123-abc"]);
  assert.deepEqual(result.temp_files_removed, [".latest.tmp-deadbeef"]);
  assert.deepEqual(await names(root), [
    ".ckptkit",
    ".staging-step-2-old",
    ".staging-step-3-busy",
    "latest",
    "step-1",
  ]);
  assert.deepEqual(await names(`${root}/.ckptkit/trash`), []);
  // Older than --stale-after (0 here: ctime cannot be faked without the clock), both are crashed writes.
  const stale = await collectGarbage(root, { keepLast: 5, staleStagingAfterS: 0 });
  assert.deepEqual(stale.delete_staging.map((s) => s.name), [".staging-step-2-old", ".staging-step-3-busy"]);
  assert.deepEqual(await names(root), [".ckptkit", "latest", "step-1"]);
});

Deno.test("gc never follows a symlink out of the root", async () => {
  await using tmp = await tempDir();
  const root = `${tmp.path}/root`;
  for (const step of [1, 2, 3]) await writeStep(root, step);
  const outside = await writeStep(`${tmp.path}/other`, 0);
  await Deno.symlink(outside, `${root}/step-0`);
  await collectGarbage(root, { keepLast: 1 });
  assert.equal(
    (await validateCheckpoint(outside)).ok,
    true,
    "the checkpoint outside is untouched",
  );
  assert.deepEqual(await names(root), [
    ".ckptkit",
    "latest",
    "step-0",
    "step-3",
  ]);
});

Deno.test("a second mutating command waits for the lock, then exits 4 with a clear message", async () => {
  await using tmp = await tempDir();
  const root = tmp.path;
  await writeStep(root, 1);
  const lock = await acquireRootLock(root);
  try {
    const started = performance.now();
    const run = await runCli([
      "gc",
      root,
      "--keep-last",
      "1",
      "--lock-timeout",
      "0.5",
    ]);
    assert.equal(run.code, 4);
    assert.match(
      run.stderr,
      /is locked by another ckptkit process \(pid \d+ on .*\) .*0\.5 s \[lock_timeout\]/,
    );
    assert.ok(performance.now() - started >= 500);
  } finally {
    await lock.release();
  }
  assert.equal(
    (await runCli(["gc", root, "--keep-last", "1", "--lock-timeout", "0"]))
      .code,
    0,
  );
});

Deno.test("concurrent gc and commit processes never lose a kept checkpoint nor leave latest dangling", async () => {
  await using tmp = await tempDir();
  const root = tmp.path;
  await writeStep(root, 1);
  const commits = (async () => {
    for (let step = 2; step <= 13; step++) {
      const run = await runCli([
        "write",
        "--root",
        root,
        "--step",
        String(step),
        "--files",
        "1",
        "--file-size",
        "4KiB",
      ]);
      assert.equal(run.code, 0, run.stderr);
    }
  })();
  const gcs = (async () => {
    for (let i = 0; i < 8; i++) {
      const child = cliCommand([
        "gc",
        root,
        "--keep-last",
        "2",
        "--keep-every",
        "5",
      ]);
      const out = await child.output();
      assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
    }
  })();
  await Promise.all([commits, gcs]);
  const final = await collectGarbage(root, { keepLast: 2, keepEvery: 5 });
  assert.equal(await steps(root), "13 12 10 5");
  assert.equal(
    final.delete.length + 4,
    (await steps(root)).split(" ").length + final.delete.length,
  );
  const latest = await readLatest(root);
  assert.equal(latest.name, "step-13");
  for (const name of ["step-13", "step-12", "step-10", "step-5"]) {
    assert.equal((await validateCheckpoint(`${root}/${name}`)).ok, true, name);
  }
});

/** A committed checkpoint with one 256 KiB file sampled in 1 KiB regions: damage between the samples is invisible. */
async function writeSampled(root: string, step: number): Promise<string> {
  const writer = await openCheckpointWriter(root, { step, sampleBytes: 1024 });
  await writer.writeFile("model.bin", new Uint8Array(256 * 1024).map((_, i) => (i * (step + 3)) & 0xff));
  return (await writer.commit()).path;
}

/** Flips a byte of `model.bin` that no sampled region covers, as bit rot does: size and mtime unchanged. */
async function rotBetweenSamples(checkpoint: string): Promise<void> {
  const manifest = JSON.parse(await Deno.readTextFile(`${checkpoint}/ckptkit.manifest.json`));
  const regions: { offset: number; length: number }[] = manifest.files[0].samples;
  const offset = regions[0].offset + regions[0].length + 7;
  assert.ok(regions.every((r) => offset < r.offset || offset >= r.offset + r.length), "the byte is not sampled");
  const file = `${checkpoint}/model.bin`;
  const before = await Deno.lstat(file);
  await flipByte(file, offset);
  await Deno.utime(file, before.atime!, before.mtime!);
}

Deno.test("gc --fast or --sample-bytes never deletes a checkpoint on the word of a check weaker than full hashing", async () => {
  const scenarios = [
    { depth: ["--fast"], rot: rotBetweenSamples, dropState: true },
    { depth: ["--sample-bytes", "1KiB"], rot: rotBetweenSamples, dropState: true },
    // With the state kept, the rewrite changed the newest's mtime, so its known-good record is no longer trusted.
    { depth: ["--fast"], rot: (dir: string) => flipByte(`${dir}/model.bin`, 1000), dropState: false },
  ];
  for (const { depth, rot, dropState } of scenarios) {
    await using tmp = await tempDir();
    const root = tmp.path;
    for (const step of [1, 2, 3]) await writeSampled(root, step);
    await rot(`${root}/step-3`);
    if (dropState) await Deno.remove(`${root}/.ckptkit/state.json`);
    const shallow = await runCli(["validate", `${root}/step-3`, ...depth]);
    assert.equal(shallow.code, 0, `${depth}: the damage is invisible at this depth`);
    const run = await runCli(["gc", root, "--keep-last", "1", ...depth, "--json"]);
    assert.equal(run.code, 0, run.stderr);
    const doc = JSON.parse(run.stdout);
    assert.equal(await steps(root), "3 2", `${depth}: only step-1 goes`);
    assert.deepEqual(doc.delete.map((d: { name: string }) => d.name), ["step-1"]);
    const why = Object.fromEntries(doc.keep.map((k: { name: string; reasons: string[] }) => [k.name, k.reasons]));
    assert.deepEqual(why["step-3"], ["named by latest"], `${depth}: the rotten newest counts for nothing`);
    assert.ok(why["step-2"].includes("keep-last (1 of 1)"), JSON.stringify(why));
    const resume = await runCli(["resume", root]);
    assert.equal(resume.code, 0, resume.stderr);
    assert.equal(resume.stdout, `${root}/step-2\n`);
  }
});

Deno.test("retention's full checks are only for keepers that license a deletion", async () => {
  await using tmp = await tempDir();
  const root = tmp.path;
  for (const step of [1, 2]) await writeSampled(root, step);
  await rotBetweenSamples(`${root}/step-2`);
  await Deno.remove(`${root}/.ckptkit/state.json`);
  // keep-every 1 keeps everything: nothing is deleted, so nothing needs hashing and the fast verdict stands.
  const keepAll = await collectGarbage(root, { keepLast: 1, keepEvery: 1, depth: "fast", dryRun: true });
  assert.deepEqual(keepAll.delete, []);
  assert.ok(keepAll.keep[0].reasons.includes("keep-last (1 of 1)"));
  // When step-1 would go on step-2's word, step-2 is hashed in full first, and found rotten.
  const plan = await collectGarbage(root, { keepLast: 1, depth: "fast", dryRun: true });
  assert.deepEqual(plan.delete, []);
  assert.deepEqual(plan.keep.map((k) => [k.name, k.reasons]), [
    ["step-2", ["named by latest"]],
    ["step-1", ["keep-last (1 of 1)", "newest valid"]],
  ]);
});

Deno.test("a staging folder filled by cp -a with old mtimes is a write in progress; only a short --stale-after collects it", async () => {
  await using tmp = await tempDir();
  const tree = `${tmp.path}/old-tree`;
  await Deno.mkdir(`${tree}/sub`, { recursive: true });
  await Deno.writeTextFile(`${tree}/model.pt`, "weights");
  await Deno.writeTextFile(`${tree}/sub/optim.pt`, "optimizer");
  const touch = await new Deno.Command("touch", {
    args: ["-d", "3 hours ago", `${tree}/model.pt`, `${tree}/sub/optim.pt`, `${tree}/sub`, tree],
  }).output();
  assert.equal(touch.code, 0);
  const root = `${tmp.path}/root`;
  await writeStep(root, 1);
  const staging = `${root}/.staging-step-2-copy`;
  const copy = await new Deno.Command("cp", { args: ["-a", tree, staging] }).output();
  assert.equal(copy.code, 0, new TextDecoder().decode(copy.stderr));
  for (const path of [staging, `${staging}/model.pt`, `${staging}/sub`, `${staging}/sub/optim.pt`]) {
    const age = Date.now() - (await Deno.lstat(path)).mtime!.getTime();
    assert.ok(age > 2 * 3600_000, `cp -a kept the old mtime of ${path}`);
  }
  const gc = await runCli(["gc", root, "--keep-last", "5", "--json"]);
  assert.equal(gc.code, 0, gc.stderr);
  const doc = JSON.parse(gc.stdout);
  assert.deepEqual(doc.delete_staging, []);
  assert.deepEqual(doc.keep_staging.map((s: { name: string }) => s.name), [".staging-step-2-copy"]);
  assert.ok((await names(root)).includes(".staging-step-2-copy"));
  const scan = JSON.parse((await runCli(["scan", root, "--json"])).stdout);
  assert.deepEqual(scan.staging.map((s: { stale: boolean }) => s.stale), [false]);
  // Once it is older than --stale-after (here at once), it is a crashed write and goes.
  const stale = await runCli(["gc", root, "--keep-last", "5", "--stale-after", "0s", "--json"]);
  assert.equal(stale.code, 0, stale.stderr);
  assert.deepEqual(JSON.parse(stale.stdout).delete_staging.map((s: { name: string }) => s.name), [
    ".staging-step-2-copy",
  ]);
  assert.deepEqual(await names(root), [".ckptkit", "latest", "step-1"]);
});

Deno.test("gc refuses a folder that is not a ckptkit root; resume --repair leaves it untouched", async () => {
  await using tmp = await tempDir();
  const dir = `${tmp.path}/data`;
  await Deno.mkdir(`${dir}/.staging-step-1-x`, { recursive: true });
  await Deno.writeTextFile(`${dir}/.staging-step-1-x/a.bin`, "someone else's");
  await Deno.writeTextFile(`${dir}/notes.txt`, "not a checkpoint");
  const before = await snapshot(dir);
  for (const extra of [[], ["--dry-run"]]) {
    const run = await runCli(["gc", dir, "--keep-last", "1", "--stale-after", "0s", ...extra]);
    assert.equal(run.code, 2, run.stderr);
    assert.match(run.stderr, /is not a ckptkit root .*\[not_a_root\]$/m);
  }
  await assert.rejects(
    () => collectGarbage(dir, { keepLast: 1, staleStagingAfterS: 0 }),
    (err: CkptkitError) => err.reason === "not_a_root",
  );
  const resume = await runCli(["resume", dir, "--repair"]);
  assert.equal(resume.code, 3, resume.stderr);
  assert.deepEqual(await snapshot(dir), before, "nothing created, nothing removed");
  // Any one mark of a root is enough.
  for (const mark of [".ckptkit", "corrupt", "latest", "step-1", "checkpoint-100"]) {
    const root = `${tmp.path}/root-${mark}`;
    await Deno.mkdir(`${root}/.staging-step-2-x`, { recursive: true });
    if (mark === "latest") await Deno.writeTextFile(`${root}/latest`, "step-1\n");
    else await Deno.mkdir(`${root}/${mark}`);
    const run = await runCli(["gc", root, "--keep-last", "1", "--stale-after", "0s"]);
    assert.equal(run.code, 0, `${mark}: ${run.stderr}`);
    assert.ok(!(await names(root)).includes(".staging-step-2-x"), mark);
  }
});
