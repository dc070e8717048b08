import assert from "node:assert/strict";
import { collectGarbage } from "../src/gc.ts";
import { readLatest } from "../src/latest.ts";
import { acquireRootLock } from "../src/lock.ts";
import { validateCheckpoint } from "../src/validate.ts";
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

Deno.test("gc removes stale staging, never a write in progress, and empties trash left by a crash", async () => {
  await using tmp = await tempDir();
  const root = tmp.path;
  await writeStep(root, 1);
  await Deno.mkdir(`${root}/.staging-step-2-old`);
  await Deno.writeTextFile(
    `${root}/.staging-step-2-old/a.bin`,
    "crashed write",
  );
  const old = new Date(Date.now() - 3 * 3600_000);
  await Deno.utime(`${root}/.staging-step-2-old/a.bin`, old, old);
  await Deno.utime(`${root}/.staging-step-2-old`, old, old);
  // A long write: the folder is old but the file inside is being appended to now.
  await Deno.mkdir(`${root}/.staging-step-3-busy`);
  await Deno.writeTextFile(
    `${root}/.staging-step-3-busy/big.bin`,
    "still writing",
  );
  await Deno.utime(`${root}/.staging-step-3-busy`, old, old);
  await Deno.mkdir(`${root}/.ckptkit/trash/step-0-123-abc`, {
    recursive: true,
  });
  await Deno.writeTextFile(`${root}/.ckptkit/trash/step-0-123-abc/half`, "x");
  await Deno.writeTextFile(`${root}/.latest.tmp-deadbeef`, "step-1\n"); // left by a process killed mid-update
  const result = await collectGarbage(root, { keepLast: 5 });
  assert.deepEqual(result.delete_staging.map((s) => s.name), [
    ".staging-step-2-old",
  ]);
  assert.deepEqual(result.trash_emptied, ["step-0-123-abc"]);
  assert.deepEqual(result.temp_files_removed, [".latest.tmp-deadbeef"]);
  assert.deepEqual(await names(root), [
    ".ckptkit",
    ".staging-step-3-busy",
    "latest",
    "step-1",
  ]);
  assert.deepEqual(await names(`${root}/.ckptkit/trash`), []);
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
