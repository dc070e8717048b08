/**
 * Proves the order of the durable steps with strace: what is fsynced before
 * each rename, and that the folder holding a renamed entry is fsynced after
 * it. Runs the real CLI under the compile task's permissions.
 */

import assert from "node:assert/strict";
import { POOL_MIN_FILES } from "../src/fs/hash_pool.ts";
import { ckptkitFlags, flipByte, REPO, tempDir, writeStep } from "./_helpers.ts";

const HAVE_STRACE = await new Deno.Command("strace", { args: ["-V"], stdout: "null", stderr: "null" }).output()
  .then((o) => o.success, () => false);

interface Event {
  index: number;
  call: string;
  /** fsync: the path; rename: the source; unlink/rmdir: the path. */
  path: string;
  /** rename: the target. */
  to?: string;
}

/** Runs the CLI under strace and returns the completed fsync/rename/unlink events in order. */
async function trace(args: string[], calls = "fsync,fdatasync,rename,renameat,renameat2,openat"): Promise<Event[]> {
  await using tmp = await tempDir("ckptkit-strace-");
  const log = `${tmp.path}/strace.log`;
  const out = await new Deno.Command("strace", {
    args: [
      "-f",
      "-y",
      "-qq",
      "-e",
      `trace=${calls}`,
      "-o",
      log,
      Deno.execPath(),
      "run",
      "--quiet",
      ...ckptkitFlags(),
      `${REPO}/cli.ts`,
      ...args,
      "--log-level",
      "silent",
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  const events: Event[] = [];
  const pending = new Map<string, Event>();
  for (const line of (await Deno.readTextFile(log)).split("\n")) {
    const pid = line.split(/\s+/, 1)[0];
    const resumed = /<\.\.\. (\w+) resumed>.*= (-?\d+)/.exec(line);
    if (resumed) {
      const started = pending.get(pid);
      pending.delete(pid);
      if (started && resumed[2] === "0") events.push({ ...started, index: events.length });
      continue;
    }
    const fsync = /(fsync|fdatasync)\(\d+<([^>]*)>/.exec(line);
    const rename = /(rename|renameat2?)\((?:AT_FDCWD[^,]*, )?"([^"]+)", (?:AT_FDCWD[^,]*, )?"([^"]+)"/.exec(line);
    const unlink = /(unlinkat|rmdir|unlink)\((?:AT_FDCWD[^,]*, |\d+<([^>]*)>, )?"([^"]+)"/.exec(line);
    let event: Event | undefined;
    if (fsync) event = { index: 0, call: "fsync", path: fsync[2] };
    else if (rename) event = { index: 0, call: "rename", path: rename[2], to: rename[3] };
    else if (unlink) event = { index: 0, call: "unlink", path: unlink[2] ? `${unlink[2]}/${unlink[3]}` : unlink[3] };
    if (!event) continue;
    if (line.includes("<unfinished ...>")) pending.set(pid, event);
    else if (/= 0$/.test(line.trim())) events.push({ ...event, index: events.length });
  }
  return events;
}

function find(events: Event[], predicate: (e: Event) => boolean, what: string): Event {
  const found = events.find(predicate);
  assert.ok(found, `no ${what} in the trace`);
  return found;
}

function lastFsyncBefore(events: Event[], path: string, index: number): Event | undefined {
  return events.filter((e) => e.call === "fsync" && e.path === path && e.index < index).at(-1);
}

Deno.test({
  name: "strace: commit fsyncs every file, the manifest and every folder before the rename, and the root after",
  ignore: !HAVE_STRACE,
  async fn() {
    await using tmp = await tempDir();
    const staging = `${tmp.path}/root/.staging-step-7`;
    await Deno.mkdir(`${staging}/deep/er`, { recursive: true });
    for (const file of ["model.pt", "deep/optim.pt", "deep/er/rng.pt"]) {
      await Deno.writeTextFile(`${staging}/${file}`, file);
    }
    const events = await trace(["commit", staging, "--root", `${tmp.path}/root`, "--step", "7"]);
    const root = `${tmp.path}/root`;
    const publish = find(
      events,
      (e) => e.call === "rename" && e.path === staging && e.to === `${root}/step-7`,
      "rename into place",
    );
    for (const file of ["model.pt", "deep/optim.pt", "deep/er/rng.pt"]) {
      assert.ok(lastFsyncBefore(events, `${staging}/${file}`, publish.index), `${file} fsynced before the rename`);
    }
    const manifest = find(
      events,
      (e) => e.call === "rename" && e.to === `${staging}/ckptkit.manifest.json`,
      "manifest rename",
    );
    assert.ok(manifest.index < publish.index);
    assert.ok(
      lastFsyncBefore(events, manifest.path, manifest.index),
      "the manifest's temp file is fsynced before its rename",
    );
    for (const dir of [staging, `${staging}/deep`, `${staging}/deep/er`]) {
      const synced = lastFsyncBefore(events, dir, publish.index);
      assert.ok(synced && synced.index > manifest.index, `${dir} fsynced after the manifest and before the rename`);
    }
    const rootSync = events.find((e) => e.call === "fsync" && e.path === root && e.index > publish.index);
    assert.ok(rootSync, "the root is fsynced after the rename");
    const latest = find(events, (e) => e.call === "rename" && e.to === `${root}/latest`, "latest rename");
    assert.ok(rootSync.index < latest.index, "the checkpoint is durable before latest names it");
    assert.ok(lastFsyncBefore(events, latest.path, latest.index), "latest's temp file is fsynced before its rename");
    assert.ok(
      events.some((e) => e.call === "fsync" && e.path === root && e.index > latest.index),
      "root fsynced after latest",
    );
  },
});

Deno.test({
  name: "strace: a commit of thousands of small files (batched in workers) fsyncs every one before the manifest",
  ignore: !HAVE_STRACE,
  async fn() {
    await using tmp = await tempDir();
    const root = `${tmp.path}/root`;
    const staging = `${root}/.staging-step-8`;
    const files: string[] = [];
    for (let i = 0; i < POOL_MIN_FILES + 100; i++) {
      const dir = `${staging}/d${Math.floor(i / 500)}`;
      if (i % 500 === 0) await Deno.mkdir(dir, { recursive: true });
      files.push(`${dir}/f${i}.bin`);
      Deno.writeTextFileSync(files.at(-1)!, `file ${i}`);
    }
    const events = await trace(["commit", staging, "--root", root, "--step", "8"]);
    const manifest = find(
      events,
      (e) => e.call === "rename" && e.to === `${staging}/ckptkit.manifest.json`,
      "manifest rename",
    );
    const publish = find(
      events,
      (e) => e.call === "rename" && e.path === staging && e.to === `${root}/step-8`,
      "rename into place",
    );
    const synced = new Set(events.filter((e) => e.call === "fsync" && e.index < manifest.index).map((e) => e.path));
    const unsynced = files.filter((file) => !synced.has(file));
    assert.deepEqual(unsynced.slice(0, 5), [], `${unsynced.length} files not fsynced before the manifest rename`);
    for (const dir of [staging, `${staging}/d0`, `${staging}/d8`]) {
      const folder = lastFsyncBefore(events, dir, publish.index);
      assert.ok(folder && folder.index > manifest.index, `${dir} fsynced after the manifest and before the rename`);
    }
    // Folders are fsynced once each, not once per file.
    const folderSyncs = events.filter((e) => e.call === "fsync" && e.path === `${staging}/d0`).length;
    assert.ok(folderSyncs <= 2, `${staging}/d0 fsynced ${folderSyncs} times`);
    assert.ok(events.some((e) => e.call === "fsync" && e.path === root && e.index > publish.index));
  },
});

Deno.test({
  name: "strace: write (the library writer) follows the same order",
  ignore: !HAVE_STRACE,
  async fn() {
    await using tmp = await tempDir();
    const root = `${tmp.path}/root`;
    const events = await trace(["write", "--root", root, "--step", "3", "--files", "2", "--file-size", "4KiB"]);
    const publish = find(events, (e) => e.call === "rename" && e.to === `${root}/step-3`, "rename into place");
    const staging = publish.path;
    for (const file of ["shard-00000-of-00002.bin", "shard-00001-of-00002.bin", "trainer_state.json"]) {
      assert.ok(lastFsyncBefore(events, `${staging}/${file}`, publish.index), `${file} fsynced before the rename`);
    }
    assert.ok(lastFsyncBefore(events, staging, publish.index), "the staging folder is fsynced before the rename");
    assert.ok(events.some((e) => e.call === "fsync" && e.path === root && e.index > publish.index));
  },
});

Deno.test({
  name: "strace: quarantine writes its record durably, then moves the checkpoint and fsyncs both folders",
  ignore: !HAVE_STRACE,
  async fn() {
    await using tmp = await tempDir();
    const root = tmp.path;
    await writeStep(root, 1);
    const bad = await writeStep(root, 2);
    await flipByte(`${bad}/shard-0.bin`, 0);
    const events = await trace(["quarantine", bad]);
    const record = find(
      events,
      (e) => e.call === "rename" && e.to === `${root}/corrupt/step-2.quarantine.json`,
      "record",
    );
    assert.ok(lastFsyncBefore(events, record.path, record.index), "the record is fsynced before its rename");
    const move = find(
      events,
      (e) => e.call === "rename" && e.path === bad && e.to === `${root}/corrupt/step-2`,
      "move",
    );
    assert.ok(record.index < move.index, "the record exists before the checkpoint moves");
    assert.ok(events.some((e) => e.call === "fsync" && e.path === `${root}/corrupt` && e.index > move.index));
    assert.ok(events.some((e) => e.call === "fsync" && e.path === root && e.index > move.index));
    const latest = find(events, (e) => e.call === "rename" && e.to === `${root}/latest`, "latest moved back");
    assert.ok(latest.index < move.index, "latest moves away before the checkpoint does");
    assert.ok(lastFsyncBefore(events, latest.path, latest.index));
    assert.ok(
      events.some((e) => e.call === "fsync" && e.path === root && e.index > latest.index && e.index < move.index),
    );
  },
});

Deno.test({
  name: "strace: gc renames into the trash and fsyncs before deleting anything",
  ignore: !HAVE_STRACE,
  async fn() {
    await using tmp = await tempDir();
    const root = tmp.path;
    for (const step of [1, 2, 3]) await writeStep(root, step);
    const events = await trace(
      ["gc", root, "--keep-last", "1"],
      "fsync,fdatasync,rename,renameat,renameat2,openat,unlink,unlinkat,rmdir",
    );
    for (const step of [1, 2]) {
      const move = find(
        events,
        (e) =>
          e.call === "rename" && e.path === `${root}/step-${step}` && !!e.to?.startsWith(`${root}/.ckptkit/trash/`),
        `step-${step} to the trash`,
      );
      const rootSync = events.find((e) => e.call === "fsync" && e.path === root && e.index > move.index);
      assert.ok(rootSync, "root fsynced after the move");
      const firstDelete = events.find((e) => e.call === "unlink" && e.path.startsWith(move.to!));
      assert.ok(firstDelete, "the trash entry is deleted");
      assert.ok(firstDelete.index > rootSync.index, "nothing is deleted before the move is durable");
    }
    assert.ok(
      !events.some((e) => e.call === "unlink" && /\/step-3\//.test(e.path)),
      "the kept checkpoint is never touched",
    );
  },
});

Deno.test({
  name: "strace: resume --repair rewrites latest with fsync before rename and of the root after",
  ignore: !HAVE_STRACE,
  async fn() {
    await using tmp = await tempDir();
    const root = tmp.path;
    await writeStep(root, 1);
    await Deno.writeTextFile(`${root}/latest`, "step-9\n");
    const events = await trace(["resume", root, "--repair"]);
    const latest = find(events, (e) => e.call === "rename" && e.to === `${root}/latest`, "latest rewrite");
    assert.ok(lastFsyncBefore(events, latest.path, latest.index));
    assert.ok(events.some((e) => e.call === "fsync" && e.path === root && e.index > latest.index));
    assert.equal(await Deno.readTextFile(`${root}/latest`), "step-1\n");
  },
});
