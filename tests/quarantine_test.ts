import assert from "node:assert/strict";
import { readLatest } from "../src/core/latest.ts";
import { quarantineCheckpoint } from "../src/core/quarantine.ts";
import { readState } from "../src/core/state.ts";
import { CAN_MOUNT, cliCommand, flipByte, names, runCli, tempDir, writeStep } from "./_helpers.ts";

Deno.test("quarantine moves a checkpoint into corrupt/ with a record and moves latest back", async () => {
  await using tmp = await tempDir();
  const root = tmp.path;
  await writeStep(root, 10);
  const bad = await writeStep(root, 20);
  await Deno.truncate(`${bad}/shard-1.bin`, 1);
  const run = await runCli(["quarantine", bad, "--json"]);
  assert.equal(run.code, 0, run.stderr);
  const doc = JSON.parse(run.stdout);
  assert.equal(doc.to, `${root}/corrupt/step-20`);
  assert.deepEqual(doc.latest_changed, { from: "step-20", to: "step-10" });
  assert.deepEqual(await names(root), [
    ".ckptkit",
    "corrupt",
    "latest",
    "step-10",
  ]);
  const record = JSON.parse(
    await Deno.readTextFile(`${root}/corrupt/step-20.quarantine.json`),
  );
  assert.equal(record.name, "step-20");
  assert.equal(record.original_path, bad);
  assert.match(record.reason, /^size_mismatch: /);
  assert.equal(record.problems[0].path, "shard-1.bin");
  assert.ok(record.host && record.quarantined_at && record.ckptkit_version);
  assert.equal((await readLatest(root)).name, "step-10");
  assert.equal(
    (await readState(root)).state.known_good["step-20"],
    undefined,
    "no longer known-good",
  );
  assert.ok(run.logs.some((l) => l.event === "checkpoint_quarantined"));
});

Deno.test("quarantine never overwrites an earlier quarantined checkpoint of the same name", async () => {
  await using tmp = await tempDir();
  const root = tmp.path;
  await writeStep(root, 5);
  for (let i = 0; i < 3; i++) {
    const path = await writeStep(root, 30);
    await Deno.writeTextFile(`${path}/marker`, String(i));
    await quarantineCheckpoint(path, { reason: `attempt ${i}` });
  }
  assert.deepEqual(await names(`${root}/corrupt`), [
    "step-30",
    "step-30.1",
    "step-30.1.quarantine.json",
    "step-30.2",
    "step-30.2.quarantine.json",
    "step-30.quarantine.json",
  ]);
  for (
    const [dir, i] of [["step-30", 0], ["step-30.1", 1], [
      "step-30.2",
      2,
    ]] as const
  ) {
    assert.equal(
      await Deno.readTextFile(`${root}/corrupt/${dir}/marker`),
      String(i),
    );
    const record = JSON.parse(
      await Deno.readTextFile(`${root}/corrupt/${dir}.quarantine.json`),
    );
    assert.equal(record.reason, `attempt ${i}`);
  }
});

Deno.test("quarantine refuses paths that are not checkpoints of a root", async () => {
  await using tmp = await tempDir();
  const root = tmp.path;
  await writeStep(root, 10);
  await Deno.mkdir(`${tmp.path}/elsewhere/step-3`, { recursive: true });
  for (
    const path of [
      `${tmp.path}/elsewhere/step-3`,
      root,
      `${root}/.ckptkit`,
      "/etc",
    ]
  ) {
    const run = await runCli(["quarantine", path]);
    assert.equal(run.code, 2, path);
    assert.match(
      run.stderr,
      /not a checkpoint folder \(step-<n>\) directly inside a ckptkit root/,
    );
  }
  // A file is refused like a file anywhere a folder belongs.
  const file = await runCli(["quarantine", `${root}/latest`]);
  assert.equal(file.code, 2, file.stderr);
  assert.match(file.stderr, /\[not_a_folder\]/);
  await quarantineCheckpoint(`${root}/step-10`);
  const inside = await runCli(["quarantine", `${root}/corrupt/step-10`]);
  assert.equal(
    inside.code,
    2,
    "an already quarantined checkpoint is not moved again",
  );
  const gone = await runCli(["quarantine", `${root}/step-99`]);
  assert.notEqual(gone.code, 0);
  assert.match(gone.stderr, /step-99/);
});

Deno.test("scan --quarantine moves every corrupt checkpoint and leaves the good ones", async () => {
  await using tmp = await tempDir();
  const root = tmp.path;
  await writeStep(root, 10);
  await flipByte(`${await writeStep(root, 20)}/shard-0.bin`, 5);
  await writeStep(root, 30);
  const run = await runCli(["scan", root, "--quarantine", "--json"]);
  assert.equal(run.code, 1, "the scan found a problem");
  const doc = JSON.parse(run.stdout);
  assert.deepEqual(doc.quarantined.map((q: { name: string }) => q.name), [
    "step-20",
  ]);
  assert.deepEqual(await names(`${root}/corrupt`), [
    "step-20",
    "step-20.quarantine.json",
  ]);
  const record = JSON.parse(
    await Deno.readTextFile(`${root}/corrupt/step-20.quarantine.json`),
  );
  assert.equal(record.problems[0].reason, "hash_mismatch");
  const rescan = await runCli(["scan", root]);
  assert.equal(rescan.code, 0, rescan.stdout);
});

async function sh(command: string, ...args: string[]): Promise<boolean> {
  return (await new Deno.Command(command, { args, stdout: "null", stderr: "null" }).output()).success;
}

/**
 * A root on a loop-mounted ext4 image (tmpfs has no immutable flag), with a `folder` that cannot be
 * moved: `chattr +i`, or where loop devices are missing, the folder bind-mounted on itself (EBUSY).
 */
async function rootWithImmovable(
  dir: string,
  fill: (root: string) => Promise<string>,
): Promise<{ root: string; how: string } & AsyncDisposable> {
  const image = `${dir}/fs.img`;
  const mnt = `${dir}/mnt`;
  await Deno.mkdir(mnt);
  await Deno.writeFile(image, new Uint8Array(0));
  await Deno.truncate(image, 16 * 1024 * 1024);
  const ext4 = await sh("mkfs.ext4", "-q", "-F", image) && await sh("mount", "-o", "loop", image, mnt);
  const root = `${ext4 ? mnt : dir}/root`;
  const folder = await fill(root);
  if (ext4 && await sh("chattr", "+i", folder)) {
    return {
      root,
      how: "chattr +i",
      [Symbol.asyncDispose]: async () => {
        await sh("chattr", "-i", folder);
        await sh("umount", mnt);
      },
    };
  }
  assert.ok(await sh("mount", "--bind", folder, folder), "neither chattr nor a bind mount is available");
  return {
    root,
    how: "bind mount",
    [Symbol.asyncDispose]: async () => {
      await sh("umount", folder);
      if (ext4) await sh("umount", mnt);
    },
  };
}

Deno.test({
  name: "a quarantine whose move fails (immutable folder) leaves latest, corrupt/ and scan as they were",
  ignore: !CAN_MOUNT,
  async fn() {
    await using tmp = await tempDir();
    await using fs = await rootWithImmovable(tmp.path, async (root) => {
      await writeStep(root, 10);
      return await writeStep(root, 20);
    });
    const { root } = fs;
    const before = await names(root);
    const run = await runCli(["quarantine", `${root}/step-20`, "--reason", "loss spike"]);
    assert.equal(run.code, 4, `${fs.how}: ${run.stderr}`);
    assert.match(run.stderr, /Quarantining .*step-20 failed: .* \[(permission_denied|io_error)\]$/m);
    assert.doesNotMatch(run.stderr, /undoing it failed/);
    assert.equal((await readLatest(root)).name, "step-20", `${fs.how}: latest still names the valid step-20`);
    assert.deepEqual(await names(root), before, `${fs.how}: no corrupt/ folder, no orphan record`);
    const scan = await runCli(["scan", root, "--json"]);
    assert.equal(scan.code, 0, scan.stderr);
    assert.equal(JSON.parse(scan.stdout).ok ?? true, true);
  },
});

/** Starts `scan --quarantine --json`, paused after it validated and before it takes the lock. */
async function pausedScanQuarantine(root: string) {
  const child = cliCommand(["scan", root, "--quarantine", "--json"], {
    env: { CKPTKIT_TEST_PAUSE_AT: "quarantine_validated" },
  }).spawn();
  const stdout = new Response(child.stdout).text();
  const stderr = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
  let seen = "";
  while (!seen.includes("test_paused")) {
    const { done, value } = await stderr.read();
    if (done) break;
    seen += value;
  }
  assert.match(seen, /"point":"quarantine_validated"/);
  return {
    async proceed() {
      child.kill("SIGUSR1");
      while (!(await stderr.read()).done) { /* keep reading: a closed stderr would kill it */ }
      return { code: (await child.status).code, doc: JSON.parse(await stdout) };
    },
  };
}

Deno.test("scan --quarantine checks again under the lock: a step committed again meanwhile is not moved", async () => {
  await using tmp = await tempDir();
  const root = `${tmp.path}/root`;
  await writeStep(root, 10);
  await flipByte(`${await writeStep(root, 30)}/shard-0.bin`, 9);
  const scan = await pausedScanQuarantine(root);
  // Found invalid without the lock. Meanwhile an operator quarantines it and the job commits step 30 again.
  assert.equal((await runCli(["quarantine", `${root}/step-30`, "--reason", "bit rot"])).code, 0);
  const again = await runCli(["write", "--root", root, "--step", "30", "--files", "1", "--file-size", "4KiB"]);
  assert.equal(again.code, 0, again.stderr);
  const { code, doc } = await scan.proceed();
  assert.equal(code, 1, "it still reports what it found");
  assert.deepEqual(doc.quarantined, [], "nothing moved: the step-30 it judged is gone");
  assert.deepEqual(await names(`${root}/corrupt`), ["step-30", "step-30.quarantine.json"], "only the operator's");
  assert.equal((await runCli(["validate", `${root}/step-30`])).code, 0, "the new step-30 is in place and valid");
  assert.equal((await readLatest(root)).name, "step-30");
});

Deno.test("scan --quarantine leaves a checkpoint repaired in place meanwhile, and moves an unchanged one", async () => {
  await using tmp = await tempDir();
  const root = `${tmp.path}/root`;
  await flipByte(`${await writeStep(root, 10)}/shard-1.bin`, 4);
  await flipByte(`${await writeStep(root, 20)}/shard-0.bin`, 9);
  const scan = await pausedScanQuarantine(root);
  await flipByte(`${root}/step-20/shard-0.bin`, 9); // the operator restores the committed bytes
  const { doc } = await scan.proceed();
  assert.deepEqual(doc.quarantined.map((q: { name: string }) => q.name), ["step-10"]);
  assert.equal((await runCli(["validate", `${root}/step-20`])).code, 0, "step-20 stays, valid");
  assert.equal((await readLatest(root)).name, "step-20");
});

Deno.test("scan reports a quarantine record left without its checkpoint (a quarantine killed before its move)", async () => {
  await using tmp = await tempDir();
  const root = tmp.path;
  await writeStep(root, 10);
  await writeStep(root, 20);
  assert.equal((await runCli(["quarantine", `${root}/step-10`, "--reason", "x"])).code, 0);
  // What a kill between the record and the rename leaves: step-20 still in place, its record in corrupt/.
  await Deno.writeTextFile(`${root}/corrupt/step-20.quarantine.json`, '{"name": "step-20"}\n');
  const scan = await runCli(["scan", root, "--json"]);
  const strays = JSON.parse(scan.stdout).strays;
  assert.deepEqual(strays.map((s: { name: string }) => s.name), ["corrupt/step-20.quarantine.json"]);
  assert.match(strays[0].detail, /quarantine record without its checkpoint/);
});
