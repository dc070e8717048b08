/**
 * Faults: a full disk (a small tmpfs mounted by the test; needs root), read
 * and permission errors, and files changing while they are validated.
 */

import assert from "node:assert/strict";
import { readLatest } from "../src/core/latest.ts";
import { readState, statePath } from "../src/core/state.ts";
import { validateCheckpoint } from "../src/core/validate.ts";
import { CAN_MOUNT, ckptkitFlags, mountTmpfs, names, REPO, runCli, tempDir, writeStep } from "./_helpers.ts";

/** Fills the file system of `dir` with one file until no space is left; returns its path. */
async function fill(dir: string): Promise<string> {
  const path = `${dir}/filler`;
  const file = await Deno.open(path, { write: true, create: true });
  const chunk = new Uint8Array(64 * 1024).fill(9);
  try {
    for (;;) {
      try {
        await file.write(chunk);
      } catch {
        // Fill the last partial block too.
        for (let size = 32 * 1024; size >= 1; size >>= 1) {
          try {
            await file.write(chunk.subarray(0, size));
          } catch { /* smaller */ }
        }
        return path;
      }
    }
  } finally {
    file.close();
  }
}

Deno.test({
  name:
    "disk full during write: exit 4 no_space, nothing visible, latest and older checkpoints intact, next commit works",
  ignore: !CAN_MOUNT,
  async fn() {
    await using tmp = await tempDir();
    const root = `${tmp.path}/fs/root`;
    await using _fs = await mountTmpfs(`${tmp.path}/fs`, "6m");
    const first = await runCli(["write", "--root", root, "--step", "1", "--files", "1", "--file-size", "1MiB"]);
    assert.equal(first.code, 0, first.stderr);
    const full = await runCli(["write", "--root", root, "--step", "2", "--files", "4", "--file-size", "2MiB"]);
    assert.equal(full.code, 4, full.stderr);
    assert.match(full.stderr, /^ckptkit: error: .*No space left on device.* \[no_space\]$/m);
    assert.equal(full.logs.find((l) => l.event === "error")?.reason, "no_space");
    assert.deepEqual(await names(root), [".ckptkit", "latest", "step-1"], "no step-2, no staging left behind");
    assert.equal((await readLatest(root)).name, "step-1");
    assert.equal((await validateCheckpoint(`${root}/step-1`)).ok, true);
    const next = await runCli(["write", "--root", root, "--step", "2", "--files", "1", "--file-size", "1MiB"]);
    assert.equal(next.code, 0, next.stderr);
    assert.equal((await readLatest(root)).name, "step-2");
  },
});

Deno.test({
  name:
    "disk full when commit writes the manifest: exit 4, nothing visible, and the commit succeeds once space is freed",
  ignore: !CAN_MOUNT,
  async fn() {
    await using tmp = await tempDir();
    const fs = `${tmp.path}/fs`;
    const root = `${fs}/root`;
    await using _fs = await mountTmpfs(fs, "4m");
    await writeStep(root, 1);
    const staging = `${root}/.staging-step-2`;
    await Deno.mkdir(staging);
    await Deno.writeFile(`${staging}/model.pt`, new Uint8Array(512 * 1024).fill(3));
    const filler = await fill(fs);
    const failed = await runCli(["commit", staging, "--root", root, "--step", "2"]);
    assert.equal(failed.code, 4, failed.stderr);
    assert.match(failed.stderr, /\[no_space\]$/m);
    assert.deepEqual((await names(root)).filter((n) => n.startsWith("step-")), ["step-1"]);
    assert.equal((await readLatest(root)).name, "step-1");
    assert.deepEqual(await names(staging), ["model.pt"], "the staged data is untouched and no temp manifest is left");
    await Deno.remove(filler);
    const retried = await runCli(["commit", staging, "--root", root, "--step", "2"]);
    assert.equal(retried.code, 0, retried.stderr);
    assert.equal((await validateCheckpoint(`${root}/step-2`)).ok, true);
  },
});

Deno.test({
  name: "disk full: the metrics textfile and the state file keep their previous content",
  ignore: !CAN_MOUNT,
  async fn() {
    await using tmp = await tempDir();
    const fs = `${tmp.path}/fs`;
    const root = `${fs}/root`;
    await using _fs = await mountTmpfs(fs, "2m");
    const corrupt = await writeStep(root, 1);
    const textfile = `${fs}/ckptkit.prom`;
    assert.equal((await runCli(["emit-metrics", root, "--textfile", textfile])).code, 0);
    const before = await Deno.readTextFile(textfile);
    const stateBefore = await Deno.readTextFile(statePath(root));
    await Deno.truncate(`${corrupt}/shard-0.bin`, 1);
    const filler = await fill(fs);

    const emitted = await runCli(["emit-metrics", root, "--textfile", textfile]);
    assert.equal(emitted.code, 4);
    assert.match(emitted.stderr, /Writing the metrics textfile .* failed: .*No space left.* \[no_space\]/);
    assert.equal(await Deno.readTextFile(textfile), before, "node_exporter still reads the last complete file");

    const validated = await runCli(["validate", corrupt]);
    assert.equal(validated.code, 1, "validation itself is unaffected");
    assert.ok(validated.logs.some((l) => l.event === "state_write_failed"));
    assert.equal(await Deno.readTextFile(statePath(root)), stateBefore, "the state file is never half-written");
    assert.deepEqual((await names(fs)).filter((n) => n.includes(".tmp-")), [], "no temp files left behind");
    assert.deepEqual((await names(`${root}/.ckptkit`)).filter((n) => n.includes(".tmp-")), []);

    await Deno.remove(filler);
    assert.equal((await runCli(["validate", corrupt])).code, 1);
    assert.equal((await readState(root)).state.validation_failures_total.size_mismatch, 1);
  },
});

Deno.test("an unreadable file is an io_error problem and the other files are still validated", async () => {
  await using tmp = await tempDir();
  const path = await writeStep(tmp.path, 1, 3);
  await Deno.chmod(`${path}/shard-1.bin`, 0o000);
  // Root reads any file; drop the capabilities that let it, as an unprivileged validator would run.
  const prefix = Deno.uid() === 0 ? ["setpriv", "--bounding-set=-dac_override,-dac_read_search"] : [];
  const out = await new Deno.Command(prefix[0] ?? Deno.execPath(), {
    args: [
      ...prefix.slice(1),
      ...(prefix.length ? [Deno.execPath()] : []),
      "run",
      "--quiet",
      ...ckptkitFlags(),
      `${REPO}/cli.ts`,
      "validate",
      path,
      "--json",
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const doc = JSON.parse(new TextDecoder().decode(out.stdout));
  assert.equal(out.code, 1);
  assert.deepEqual(doc.problems.map((p: { reason: string; path: string }) => [p.reason, p.path]), [[
    "io_error",
    "shard-1.bin",
  ]]);
  assert.match(doc.problems[0].detail, /cannot read: .*[Pp]ermission denied/);
  assert.equal(doc.bytes_checked, 2 * 4096, "the readable shards were hashed");
});

Deno.test("a read error mid-validation is io_error for that file, not a crash", async () => {
  await using tmp = await tempDir();
  const path = await writeStep(tmp.path, 1, 2);
  // An I/O error (EIO) from the disk, injected through the hasher: validation goes on with the other files.
  const result = await validateCheckpoint(path, {
    hasher: {
      hashFile: (file, options) =>
        file.endsWith("shard-1.bin")
          ? Promise.reject(new Error("Input/output error (os error 5)"))
          : import("../src/fs/hashing.ts").then((m) => m.hashFile(file, options)),
      hashRegions: (file, regions, algorithm) =>
        import("../src/fs/hashing.ts").then((m) => m.hashRegions(file, regions, algorithm)),
    },
  });
  assert.deepEqual(result.problems.map((p) => [p.reason, p.path]), [["io_error", "shard-1.bin"]]);
  assert.match(result.problems[0].detail, /Input\/output error/);
  assert.equal(result.bytes_checked, 4096, "the other shard was hashed");
});

Deno.test("a file appended to while it is validated is reported as file_changed, not misjudged", async () => {
  await using tmp = await tempDir();
  const staging = `${tmp.path}/s`;
  await Deno.mkdir(staging);
  await Deno.writeFile(`${staging}/grow.bin`, new Uint8Array(48 * 1024 * 1024));
  const { commitCheckpoint } = await import("../src/core/commit.ts");
  const { path } = await commitCheckpoint(staging, { root: `${tmp.path}/root`, step: 1 });
  let appended = false;
  const result = await validateCheckpoint(path, {
    concurrency: 1,
    onProgress: () => {
      if (!appended) {
        appended = true;
        Deno.writeFileSync(`${path}/grow.bin`, new Uint8Array(10), { append: true });
      }
    },
  });
  assert.ok(appended);
  assert.deepEqual(result.problems.map((p) => p.reason), ["file_changed"]);
  assert.match(result.problems[0].detail, /changed while it was read/);
});

Deno.test({
  name: "disk full to the last byte: gc still takes the lock and frees space; quarantine fails cleanly with no_space",
  ignore: !CAN_MOUNT,
  async fn() {
    await using tmp = await tempDir();
    const fs = `${tmp.path}/fs`;
    const root = `${fs}/root`;
    await using _fs = await mountTmpfs(fs, "4m");
    for (const step of [1, 2, 3]) {
      const run = await runCli([
        "write",
        "--root",
        root,
        "--step",
        String(step),
        "--files",
        "1",
        "--file-size",
        "512KiB",
      ]);
      assert.equal(run.code, 0, run.stderr);
    }
    // A lock file that was never written (a fresh root) must not need space either.
    await Deno.remove(`${root}/.ckptkit/lock`).catch(() => {});
    await fill(fs);
    const before = await names(root);

    const quarantined = await runCli(["quarantine", `${root}/step-3`, "--reason", "operator"]);
    assert.equal(quarantined.code, 4, quarantined.stderr);
    assert.match(quarantined.stderr, /No space left on device.* \[no_space\]$/m);
    assert.doesNotMatch(quarantined.stderr, /Unexpected error|\[io_error\]/);
    assert.deepEqual(await names(root), before, "the failed quarantine changed nothing");
    assert.equal((await readLatest(root)).name, "step-3");
    assert.deepEqual(await names(`${root}/corrupt`).catch(() => []), [], "no orphan record");

    const gc = await runCli(["gc", root, "--keep-last", "1"]);
    assert.equal(gc.code, 0, gc.stderr);
    assert.deepEqual((await names(root)).filter((n) => n.startsWith("step-")), ["step-3"]);
    assert.deepEqual(await names(`${root}/.ckptkit/trash`), [], "the trash is emptied");
    assert.equal((await validateCheckpoint(`${root}/step-3`)).ok, true);
    assert.equal((await readLatest(root)).name, "step-3");

    // With the space gc freed, the same quarantine now succeeds.
    assert.equal((await runCli(["quarantine", `${root}/step-3`, "--reason", "operator"])).code, 0);
  },
});

Deno.test("an ENOSPC no code path expected is reported as no_space (exit 4), not as an unexpected io_error", async () => {
  const { runCommand } = await import("../src/cli/context.ts");
  for (
    const [thrown, reason] of [
      [new Error("No space left on device (os error 28)"), "no_space"],
      [Object.assign(new Error("quota"), { code: "EDQUOT" }), "no_space"],
      [new Error("something else"), "io_error"],
    ] as const
  ) {
    let stderr = "";
    const io = { stdout: () => {}, stderr: (text: string) => void (stderr += text), env: () => undefined };
    const code = await runCommand(io, { logLevel: "silent" }, () => Promise.reject(thrown));
    assert.equal(code, 4);
    assert.match(stderr, new RegExp(`^ckptkit: error: .* \\[${reason}\\]$`, "m"));
    if (reason === "no_space") assert.doesNotMatch(stderr, /Unexpected error/);
  }
});
