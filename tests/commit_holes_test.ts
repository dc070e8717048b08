/**
 * Holes of issue #12 in the commands that write a folder which becomes a
 * checkpoint (commit, seal, write, multi-rank commit): a temporary manifest
 * left by a killed run, mount points inside the folder, a user's own file
 * named like the manifest, and names that are not UTF-8. Everything runs on
 * real files, real mounts and a real SIGKILL (strace fault injection).
 */

import assert from "node:assert/strict";
import { commitCheckpoint } from "../src/core/commit.ts";
import { commitRank } from "../src/multinode/multirank.ts";
import { removeTreeOnDevice } from "../src/fs/remove.ts";
import { sealCheckpoint } from "../src/core/seal.ts";
import { validateCheckpoint } from "../src/core/validate.ts";
import { openCheckpointWriter } from "../src/core/writer.ts";
import { CAN_MOUNT, ckptkitFlags, mountTmpfs, names, REPO, runCli, snapshot, tempDir, writeStep } from "./_helpers.ts";

const HAVE_STRACE = await new Deno.Command("strace", { args: ["-V"], stdout: "null", stderr: "null" }).output()
  .then((o) => o.success, () => false);

function errorReason(reason: string, message?: RegExp) {
  return (err: Error & { reason?: string }) => {
    assert.equal(err.reason, reason, err.message);
    if (message) assert.match(err.message, message);
    return true;
  };
}

/** Runs the CLI under strace, killing it with SIGKILL at its first rename(2). */
async function killAtFirstRename(args: string[]): Promise<number | null> {
  const out = await new Deno.Command("strace", {
    args: [
      "-f",
      "-qq",
      "-o",
      "/dev/null",
      "-e",
      "inject=rename,renameat,renameat2:signal=KILL:when=1",
      Deno.execPath(),
      "run",
      "--quiet",
      ...ckptkitFlags(),
      `${REPO}/cli.ts`,
      ...args,
      "--log-level",
      "silent",
    ],
    stdout: "null",
    stderr: "null",
  }).output();
  return out.signal === "SIGKILL" ? null : out.code;
}

/** Runs `args` again after a kill: it must succeed, leave no temporary manifest in `checkpoint`, which validates. */
async function retryCommitsValid(args: string[], checkpoint: string): Promise<void> {
  const retry = await runCli(args);
  assert.equal(retry.code, 0, retry.stderr);
  assert.deepEqual(await tempManifests(checkpoint), []);
  const check = await runCli(["validate", checkpoint]);
  assert.equal(check.code, 0, check.stdout + check.stderr);
}

async function stage(dir: string): Promise<void> {
  await Deno.mkdir(`${dir}/sub`, { recursive: true });
  await Deno.writeTextFile(`${dir}/model.pt`, "weights");
  await Deno.writeTextFile(`${dir}/sub/optim.pt`, "optimizer");
}

async function tempManifests(dir: string): Promise<string[]> {
  return (await names(dir)).filter((name) => name.startsWith(".ckptkit.manifest.json.tmp-"));
}

/** Bind-mounts `from` on `to` (created), unmounted when disposed. Needs root. */
async function mountBind(from: string, to: string): Promise<AsyncDisposable> {
  await Deno.mkdir(to, { recursive: true });
  const mount = await new Deno.Command("mount", { args: ["--bind", from, to] }).output();
  if (!mount.success) throw new Error(`mount --bind failed: ${new TextDecoder().decode(mount.stderr)}`);
  return {
    [Symbol.asyncDispose]: async () => {
      await new Deno.Command("umount", { args: ["-l", to] }).output();
    },
  };
}

/**
 * Unmounts, deepest first, every mount under `dir` when disposed (wherever a
 * command moved it), so the temporary folder's removal never crosses one.
 */
function unmountAllUnder(dir: string): AsyncDisposable {
  return {
    [Symbol.asyncDispose]: async () => {
      // Deno grants /proc/self/mountinfo to --allow-all only; the suite runs with narrower flags, so ask cat.
      const table = await new Deno.Command("cat", { args: ["/proc/self/mountinfo"], stdout: "piped" }).output();
      const mounts = new TextDecoder().decode(table.stdout).split("\n")
        .map((line) => line.split(" ")[4])
        .filter((point) => point?.startsWith(`${dir}/`))
        .sort((a, b) => b.length - a.length);
      for (const point of mounts) await new Deno.Command("umount", { args: ["-l", point] }).output();
    },
  };
}

/** A folder outside every root, with files that must survive. */
async function outsideFolder(path: string): Promise<string[]> {
  await Deno.mkdir(path, { recursive: true });
  await Deno.writeTextFile(`${path}/precious.txt`, "not ckptkit's");
  await Deno.mkdir(`${path}/deeper`);
  await Deno.writeTextFile(`${path}/deeper/also.txt`, "also not");
  return await snapshot(path);
}

// --- 2: a temporary manifest left by a killed run never ends up in a checkpoint ---

Deno.test({
  name: "commit killed (SIGKILL via strace) at the manifest's rename, then retried, commits a valid checkpoint",
  ignore: !HAVE_STRACE,
  async fn() {
    await using tmp = await tempDir();
    await using _unmount = unmountAllUnder(tmp.path);
    const root = `${tmp.path}/root`;
    const staging = `${root}/.staging-step-20`;
    await stage(staging);
    const args = ["commit", staging, "--root", root, "--step", "20"];
    assert.equal(await killAtFirstRename(args), null, "killed at the rename");
    assert.equal((await tempManifests(staging)).length, 1, "the kill left the manifest's temporary file");
    assert.deepEqual((await names(root)).filter((n) => n.startsWith("step-")), []);

    await retryCommitsValid(args, `${root}/step-20`);
  },
});

Deno.test({
  name: "seal killed (SIGKILL via strace) at the manifest's rename, then retried, seals a valid checkpoint",
  ignore: !HAVE_STRACE,
  async fn() {
    await using tmp = await tempDir();
    await using _unmount = unmountAllUnder(tmp.path);
    const dir = `${tmp.path}/checkpoint-500`;
    await stage(dir);
    assert.equal(await killAtFirstRename(["seal", dir]), null, "killed at the rename");
    assert.equal((await tempManifests(dir)).length, 1);

    await retryCommitsValid(["seal", dir], dir);
  },
});

Deno.test({
  name: "a multi-rank commit killed at the manifest's rename never commits the temporary file on a retry",
  ignore: !HAVE_STRACE,
  async fn() {
    await using tmp = await tempDir();
    await using _unmount = unmountAllUnder(tmp.path);
    const root = `${tmp.path}/root`;
    const staging = `${root}/.staging-step-7-job`;
    await stage(staging);
    const args = [
      "commit",
      staging,
      "--root",
      root,
      "--step",
      "7",
      "--rank",
      "0",
      "--world-size",
      "1",
      "--rank-files",
      "model.pt",
      "sub",
    ];
    assert.equal(await killAtFirstRename(args), null, "killed at the rename");
    assert.equal((await tempManifests(staging)).length, 1);
    // The claim to merge survives the kill; once an operator removes it, the retry merges again.
    await Deno.remove(`${staging}.parts/commit.claim`);
    await retryCommitsValid(args, `${root}/step-7`);
  },
});

Deno.test({
  name: "write killed (SIGKILL via strace) at the manifest's rename: a retry commits, gc collects the old staging",
  ignore: !HAVE_STRACE,
  async fn() {
    await using tmp = await tempDir();
    const root = `${tmp.path}/root`;
    const args = ["write", "--root", root, "--step", "30", "--files", "2", "--file-size", "4KiB"];
    assert.equal(await killAtFirstRename(args), null, "killed at the rename");
    const [staging] = (await names(root)).filter((n) => n.startsWith(".staging-"));
    assert.equal((await tempManifests(`${root}/${staging}`)).length, 1);
    const retry = await runCli(args);
    assert.equal(retry.code, 0, retry.stderr);
    assert.deepEqual(await tempManifests(`${root}/step-30`), []);
    assert.equal((await runCli(["validate", `${root}/step-30`])).code, 0);
    const gc = await runCli(["gc", root, "--keep-last", "1", "--stale-after", "0s"]);
    assert.equal(gc.code, 0, gc.stderr);
    assert.deepEqual((await names(root)).filter((n) => n.startsWith(".staging-")), []);
  },
});

Deno.test("a multi-rank commit refuses the user's own ckptkit.manifest.json in the shared staging folder", async () => {
  await using tmp = await tempDir();
  const root = `${tmp.path}/root`;
  const staging = `${root}/.staging-step-13-job`;
  await stage(staging);
  await Deno.writeTextFile(`${staging}/ckptkit.manifest.json`, "mine\n");
  await assert.rejects(
    () => commitRank(staging, { root, step: 13, rank: 0, worldSize: 1, rankFiles: ["model.pt", "sub"] }),
    errorReason("manifest_exists"),
  );
  assert.equal(await Deno.readTextFile(`${staging}/ckptkit.manifest.json`), "mine\n");
  assert.deepEqual((await names(root)).filter((n) => n.startsWith("step-")), []);
});

Deno.test("a commit that crashed after writing its manifest (before the rename) commits on a retry", async () => {
  await using tmp = await tempDir();
  const root = `${tmp.path}/root`;
  const staging = `${root}/.staging-step-3`;
  await stage(staging);
  const crashed = await runCli(["commit", staging, "--root", root, "--step", "3"], {
    env: { CKPTKIT_TEST_FAIL_AT: "before_rename" },
  });
  assert.equal(crashed.code, 4, crashed.stderr);
  assert.ok((await names(staging)).includes("ckptkit.manifest.json"));
  const retry = await runCli(["commit", staging, "--root", root, "--step", "3"]);
  assert.equal(retry.code, 0, retry.stderr);
  assert.equal((await runCli(["validate", `${root}/step-3`])).code, 0);
});

Deno.test("a temporary manifest another process leaves while this commit runs is not renamed into the checkpoint", async () => {
  await using tmp = await tempDir();
  const root = `${tmp.path}/root`;
  const staging = `${root}/.staging-step-12`;
  await stage(staging);
  const result = await commitCheckpoint(staging, {
    root,
    step: 12,
    faultHook: async (point) => {
      // As a second commit of the same folder, killed while writing its manifest, would leave it.
      if (point === "folders_synced") await Deno.writeTextFile(`${staging}/.ckptkit.manifest.json.tmp-5eed5eed`, "{");
    },
  });
  assert.deepEqual(await tempManifests(result.path), []);
  assert.equal((await validateCheckpoint(result.path, { depth: "full" })).ok, true);
});

Deno.test("a file of the staging folder that only looks like ckptkit's temporary manifest is refused, not deleted", async () => {
  await using tmp = await tempDir();
  const root = `${tmp.path}/root`;
  const staging = `${root}/.staging-step-4`;
  await stage(staging);
  await Deno.mkdir(`${staging}/.ckptkit.manifest.json.tmp-mine`);
  await Deno.writeTextFile(`${staging}/.ckptkit.manifest.json.tmp-mine/data`, "user data");
  const before = await snapshot(staging);
  await assert.rejects(() => commitCheckpoint(staging, { root, step: 4 }), errorReason("unsafe_path"));
  assert.deepEqual(await snapshot(staging), before);
});

Deno.test("the writer refuses the manifest's temporary name like the manifest's own", async () => {
  await using tmp = await tempDir();
  await using writer = await openCheckpointWriter(`${tmp.path}/root`, { step: 1 });
  await assert.rejects(
    () => writer.writeFile(".ckptkit.manifest.json.tmp-1234abcd", "x"),
    errorReason("unsafe_path"),
  );
});

// --- 12: a user's own ckptkit.manifest.json is never overwritten ---

Deno.test("commit refuses a staging folder holding the user's own ckptkit.manifest.json and touches nothing", async () => {
  await using tmp = await tempDir();
  const root = `${tmp.path}/root`;
  const staging = `${tmp.path}/staging`;
  await stage(staging);
  await Deno.writeTextFile(`${staging}/ckptkit.manifest.json`, '{"mine": true}\n');
  const before = await snapshot(staging);
  const run = await runCli(["commit", staging, "--root", root, "--step", "5"]);
  assert.equal(run.code, 4, run.stderr);
  assert.match(run.stderr, /ckptkit\.manifest\.json.*\[manifest_exists\]/);
  assert.deepEqual(await snapshot(staging), before);
  assert.equal(await Deno.readTextFile(`${staging}/ckptkit.manifest.json`), '{"mine": true}\n');
  assert.deepEqual((await names(root).catch(() => [])).filter((n) => n.startsWith("step-")), []);
});

Deno.test("commit refuses a ckptkit manifest of another step left in the staging folder", async () => {
  await using tmp = await tempDir();
  const root = `${tmp.path}/root`;
  const staging = `${tmp.path}/checkpoint-8`;
  await stage(staging);
  await sealCheckpoint(staging);
  const before = await snapshot(staging);
  await assert.rejects(() => commitCheckpoint(staging, { root, step: 9 }), errorReason("manifest_exists"));
  assert.deepEqual(await snapshot(staging), before);
});

Deno.test("seal refuses a folder holding the user's own ckptkit.manifest.json and touches nothing", async () => {
  await using tmp = await tempDir();
  const dir = `${tmp.path}/checkpoint-5`;
  await stage(dir);
  await Deno.writeTextFile(`${dir}/ckptkit.manifest.json`, "user notes\n");
  await Deno.writeTextFile(`${dir}/.ckptkit.manifest.json.tmp-0badc0de`, "left by a killed seal");
  const before = await snapshot(dir);
  const run = await runCli(["seal", dir]);
  assert.equal(run.code, 4, run.stderr);
  assert.match(run.stderr, /\[manifest_exists\]/);
  assert.deepEqual(await snapshot(dir), before);
});

// --- 13: a name that is not UTF-8 is refused for what it is ---

Deno.test("commit and seal refuse a file whose name is not UTF-8, saying so", async () => {
  await using tmp = await tempDir();
  const staging = `${tmp.path}/step-6`;
  await stage(staging);
  const made = await new Deno.Command("bash", {
    args: ["-c", `touch "$1"/$'\\xff.bin' && mkdir "$1"/sub/$'\\xfe'`, "bash", staging],
  }).output();
  assert.ok(made.success);
  for (const args of [["commit", staging, "--root", `${tmp.path}/root`, "--step", "6"], ["seal", staging]]) {
    const run = await runCli(args);
    assert.equal(run.code, 4, run.stderr);
    assert.match(run.stderr, /name that is not valid UTF-8/);
    assert.doesNotMatch(run.stderr, /not a regular file/);
    assert.match(run.stderr, /\[unsupported_entry\]/);
  }
  const tree = await new Deno.Command("find", { args: [staging, "-type", "f"] }).output();
  assert.equal(new TextDecoder().decode(tree.stdout).trim().split("\n").length, 3, "nothing was added or removed");
});

// --- 7: mount points inside a checkpoint ---

for (const kind of ["bind", "tmpfs"] as const) {
  Deno.test({
    name: `commit, seal, write's staging and multi-rank refuse a ${kind} mount inside the folder (mount_point)`,
    ignore: !CAN_MOUNT,
    async fn() {
      await using tmp = await tempDir();
      await using _unmount = unmountAllUnder(tmp.path);
      const root = `${tmp.path}/root`;
      const outside = `${tmp.path}/outside`;
      const saved = await outsideFolder(outside);
      const staging = `${root}/.staging-step-11-x`;
      await stage(staging);
      await using _mounted = kind === "bind"
        ? await mountBind(outside, `${staging}/sub/mnt`)
        : await mountTmpfs(`${staging}/sub/mnt`, "1m");
      if (kind === "tmpfs") await Deno.writeTextFile(`${staging}/sub/mnt/on-tmpfs.bin`, "x");

      const commit = await runCli(["commit", staging, "--root", root, "--step", "11"]);
      assert.equal(commit.code, 4, commit.stderr);
      assert.match(commit.stderr, /sub\/mnt.*mount point.*\[mount_point\]/);
      await assert.rejects(() => sealCheckpoint(staging, { step: 11 }), errorReason("mount_point"));
      await assert.rejects(
        () => commitRank(staging, { root, step: 11, rank: 0, worldSize: 1, rankFiles: ["model.pt", "sub"] }),
        errorReason("mount_point"),
      );
      await assert.rejects(
        () => commitRank(staging, { root, step: 11, rank: 0, worldSize: 1, rankFiles: ["sub/mnt"] }),
        errorReason("mount_point"),
      );
      assert.deepEqual((await names(root)).filter((n) => n.startsWith("step-")), []);
      assert.deepEqual(await names(staging), ["model.pt", "sub"], "no manifest was written");
      assert.deepEqual(await snapshot(outside), saved);
    },
  });
}

Deno.test({
  name: "commit refuses a staging folder that is itself a mount point (mount_point), before writing anything",
  ignore: !CAN_MOUNT,
  async fn() {
    await using tmp = await tempDir();
    await using _unmount = unmountAllUnder(tmp.path);
    const root = `${tmp.path}/root`;
    const staging = `${root}/.staging-step-14`;
    await using _mounted = await mountTmpfs(staging, "1m");
    await stage(staging);
    const run = await runCli(["commit", staging, "--root", root, "--step", "14"]);
    assert.equal(run.code, 4, run.stderr);
    assert.match(run.stderr, /itself a mount point.*\[mount_point\]/);
    assert.deepEqual(await names(staging), ["model.pt", "sub"]);
  },
});

Deno.test({
  name: "the writer refuses to commit a staging folder holding a mount, and its abort never removes across it",
  ignore: !CAN_MOUNT,
  async fn() {
    await using tmp = await tempDir();
    await using _unmount = unmountAllUnder(tmp.path);
    const outside = `${tmp.path}/outside`;
    const saved = await outsideFolder(outside);
    const writer = await openCheckpointWriter(`${tmp.path}/root`, { step: 2 });
    await writer.writeFile("model.pt", "weights");
    await using _mounted = await mountBind(outside, `${writer.stagingPath}/mnt`);
    await assert.rejects(() => writer.commit(), errorReason("mount_point"));
    await assert.rejects(() => writer.abort(), errorReason("mount_point"));
    assert.deepEqual(await snapshot(outside), saved);
    assert.deepEqual(await names(writer.stagingPath), ["mnt"], "everything else was removed");
  },
});

Deno.test({
  name: "validate reports a mount point inside a committed checkpoint (mount_point)",
  ignore: !CAN_MOUNT,
  async fn() {
    await using tmp = await tempDir();
    await using _unmount = unmountAllUnder(tmp.path);
    const root = `${tmp.path}/root`;
    const bound = await writeStep(root, 1);
    const onTmpfs = await writeStep(root, 2);
    const outside = `${tmp.path}/outside`;
    const saved = await outsideFolder(outside);
    await using _bind = await mountBind(outside, `${bound}/mnt`);
    await using _tmpfs = await mountTmpfs(`${onTmpfs}/mnt`, "1m");
    await Deno.writeTextFile(`${onTmpfs}/mnt/on-tmpfs.bin`, "x");
    // With the mount table readable (Deno grants it to -A only), a bind mount of the same file system is named
    // too; without it, only the device tells, and the bind mount fails validation through the files it shows.
    const tableReadable = await Deno.readTextFile("/proc/self/mountinfo").then(() => true, () => false);
    for (const step of tableReadable ? [bound, onTmpfs] : [onTmpfs]) {
      const result = await validateCheckpoint(step, { depth: "full" });
      assert.equal(result.ok, false);
      assert.deepEqual(result.problems.map((p) => [p.reason, p.path]), [["mount_point", "mnt"]]);
    }
    if (!tableReadable) {
      const result = await validateCheckpoint(bound, { depth: "full" });
      assert.deepEqual([...new Set(result.problems.map((p) => p.reason))], ["unexpected_file"]);
    }
    // Under the CLI's permissions only the device tells: another file system is named, a bind mount of this one
    // still fails validation through the files it shows.
    const tmpfsRun = await runCli(["validate", onTmpfs, "--json"]);
    assert.equal(tmpfsRun.code, 1);
    assert.deepEqual(JSON.parse(tmpfsRun.stdout).problems.map((p: { reason: string }) => p.reason), ["mount_point"]);
    const bindRun = await runCli(["validate", bound]);
    assert.equal(bindRun.code, 1, bindRun.stdout);
    assert.deepEqual(await snapshot(outside), saved);
  },
});

for (const kind of ["bind", "tmpfs"] as const) {
  Deno.test({
    name: `gc never deletes across a ${kind} mount inside a checkpoint it deletes`,
    ignore: !CAN_MOUNT,
    async fn() {
      await using tmp = await tempDir();
      await using _unmount = unmountAllUnder(tmp.path);
      const root = `${tmp.path}/root`;
      const outside = `${tmp.path}/outside`;
      const saved = await outsideFolder(outside);
      const old = await writeStep(root, 1);
      await writeStep(root, 2);
      await writeStep(root, 3);
      await using _mounted = kind === "bind"
        ? await mountBind(outside, `${old}/mnt`)
        : await mountTmpfs(`${old}/mnt`, "1m");
      if (kind === "tmpfs") await Deno.writeTextFile(`${old}/mnt/on-tmpfs.bin`, "x");
      const tmpfsFile = kind === "tmpfs" ? `${old}/mnt/on-tmpfs.bin` : undefined;
      const run = await runCli(["gc", root, "--keep-last", "1"]);
      assert.deepEqual(await snapshot(outside), saved, "the mounted folder's files survive");
      assert.equal(run.code, 4, run.stderr);
      assert.match(run.stderr, /trash\/step-1-[^ ]*\/mnt is a mount point.*\[mount_point\]/);
      if (tmpfsFile) {
        // Wherever gc left the mount, the file on the tmpfs is still there.
        const found = await new Deno.Command("find", { args: [root, "-name", "on-tmpfs.bin"] }).output();
        assert.match(new TextDecoder().decode(found.stdout), /on-tmpfs\.bin/);
      }
      // Once unmounted, the next gc empties the trash.
      await unmountAllUnder(root)[Symbol.asyncDispose]();
      const again = await runCli(["gc", root, "--keep-last", "1"]);
      assert.equal(again.code, 0, again.stderr);
      assert.deepEqual(await names(`${root}/.ckptkit/trash`), []);
      assert.deepEqual(await snapshot(outside), saved);
    },
  });
}

Deno.test({
  name: "removeTreeOnDevice removes a tree but skips and reports mounts and never follows symlinks",
  ignore: !CAN_MOUNT,
  async fn() {
    await using tmp = await tempDir();
    await using _unmount = unmountAllUnder(tmp.path);
    const outside = `${tmp.path}/outside`;
    const saved = await outsideFolder(outside);
    const doomed = `${tmp.path}/doomed`;
    await stage(doomed);
    await Deno.symlink(outside, `${doomed}/link`);
    await using _mounted = await mountBind(outside, `${doomed}/sub/mnt`);
    await assert.rejects(() => removeTreeOnDevice(doomed), errorReason("mount_point", /sub\/mnt/));
    assert.deepEqual(await snapshot(outside), saved);
    assert.deepEqual(await names(doomed), ["sub"]);
    assert.deepEqual(await names(`${doomed}/sub`), ["mnt"]);
  },
});

Deno.test("removeTreeOnDevice removes names that are not UTF-8", async () => {
  await using tmp = await tempDir();
  const doomed = `${tmp.path}/doomed`;
  await stage(doomed);
  const made = await new Deno.Command("bash", {
    args: ["-c", `touch "$1"/$'\\xff.bin' && mkdir "$1"/$'\\xfe' && touch "$1"/$'\\xfe'/x`, "bash", doomed],
  }).output();
  assert.ok(made.success);
  await removeTreeOnDevice(doomed);
  assert.deepEqual(await names(tmp.path), []);
});
