import assert from "node:assert/strict";
import { commitCheckpoint } from "../src/core/commit.ts";
import { readLatest } from "../src/core/latest.ts";
import { MANIFEST_NAME } from "../src/core/layout.ts";
import { parseManifest } from "../src/core/manifest.ts";
import { sealCheckpoint } from "../src/core/seal.ts";
import { validateCheckpoint } from "../src/core/validate.ts";
import { openCheckpointWriter } from "../src/core/writer.ts";
import {
  CAN_MOUNT,
  cliCommand,
  decode,
  FIXTURES,
  mountTmpfs,
  names,
  runCli,
  tempDir,
  waitForLine,
} from "./_helpers.ts";

async function stageFixtures(dir: string): Promise<void> {
  await Deno.mkdir(`${dir}/shards`, { recursive: true });
  await Deno.copyFile(
    `${FIXTURES}/torch-zip/test_with_key.pt`,
    `${dir}/model.pt`,
  );
  await Deno.copyFile(
    `${FIXTURES}/safetensors/jfk-codes.safetensors`,
    `${dir}/shards/jfk-codes.safetensors`,
  );
}

function errorReason(reason: string) {
  return (err: Error & { reason?: string }) => {
    assert.equal(err.reason, reason, err.message);
    return true;
  };
}

Deno.test("commit seals a staged folder of real files, moves it into place and points latest at it", async () => {
  await using tmp = await tempDir();
  const root = `${tmp.path}/root`;
  const staging = `${tmp.path}/out`;
  await stageFixtures(staging);
  const result = await commitCheckpoint(staging, {
    root,
    step: 500,
    jobId: "job",
    runId: "run",
    metadata: { loss: 1.25 },
  });
  assert.equal(result.path, `${root}/step-500`);
  assert.equal(result.files, 2);
  assert.equal(result.total_bytes, 1338 + 13328);
  assert.equal(result.latest_updated, true);
  assert.deepEqual(
    await names(tmp.path),
    ["root"],
    "the staging folder was renamed, not copied",
  );
  assert.deepEqual(await names(root), [".ckptkit", "latest", "step-500"]);
  assert.equal(await Deno.readTextFile(`${root}/latest`), "step-500\n");
  const parsed = await parseManifest(
    await Deno.readTextFile(`${root}/step-500/${MANIFEST_NAME}`),
  );
  assert.deepEqual(parsed.problems, []);
  assert.deepEqual(parsed.manifest!.metadata, { loss: 1.25 });
  assert.equal(parsed.manifest!.files[0].path, "model.pt");
  assert.equal(
    parsed.manifest!.files[1].digest,
    "858546558211e073f8389ce674c89422fd30b675f406e82eac395e577e8d3480",
    "the sha256 published for the fixture",
  );
  assert.equal((await validateCheckpoint(result.path)).ok, true);
});

Deno.test("commit refuses an existing final name and leaves both folders untouched", async () => {
  await using tmp = await tempDir();
  const root = `${tmp.path}/root`;
  await stageFixtures(`${tmp.path}/a`);
  await commitCheckpoint(`${tmp.path}/a`, { root, step: 10 });
  await stageFixtures(`${tmp.path}/b`);
  await assert.rejects(
    () => commitCheckpoint(`${tmp.path}/b`, { root, step: 10 }),
    errorReason("checkpoint_exists"),
  );
  assert.deepEqual(
    await names(`${tmp.path}/b`),
    ["model.pt", "shards"],
    "the staging folder is kept as it was",
  );
  assert.equal((await validateCheckpoint(`${root}/step-10`)).ok, true);
});

Deno.test("commit refuses an empty folder squatting on the final name (rename would replace it)", async () => {
  await using tmp = await tempDir();
  const root = `${tmp.path}/root`;
  await Deno.mkdir(`${root}/step-10`, { recursive: true });
  await stageFixtures(`${tmp.path}/a`);
  await assert.rejects(
    () => commitCheckpoint(`${tmp.path}/a`, { root, step: 10 }),
    errorReason("checkpoint_exists"),
  );
  assert.deepEqual(await names(`${root}/step-10`), []);
});

Deno.test("commit refuses a staging folder holding a symlink, before writing anything", async () => {
  await using tmp = await tempDir();
  const root = `${tmp.path}/root`;
  await stageFixtures(`${tmp.path}/a`);
  await Deno.symlink("/etc/passwd", `${tmp.path}/a/passwd`);
  await assert.rejects(
    () => commitCheckpoint(`${tmp.path}/a`, { root, step: 10 }),
    errorReason("unsupported_entry"),
  );
  assert.equal((await readLatest(root)).state, "missing");
  assert.deepEqual(await names(`${tmp.path}/a`), [
    "model.pt",
    "passwd",
    "shards",
  ]);
});

Deno.test("commit refuses the root itself, a committed checkpoint and bad arguments", async () => {
  await using tmp = await tempDir();
  const root = `${tmp.path}/root`;
  await stageFixtures(`${tmp.path}/a`);
  await commitCheckpoint(`${tmp.path}/a`, { root, step: 1 });
  await assert.rejects(
    () => commitCheckpoint(root, { root, step: 2 }),
    errorReason("staging_invalid"),
  );
  await assert.rejects(
    () => commitCheckpoint(`${root}/step-1`, { root, step: 2 }),
    errorReason("staging_invalid"),
  );
  await assert.rejects(
    () => commitCheckpoint(`${tmp.path}/none`, { root, step: 2 }),
    errorReason("not_found"),
  );
  await assert.rejects(
    () => commitCheckpoint(`${tmp.path}/a`, { root, step: -1 }),
    errorReason("invalid_argument"),
  );
  await assert.rejects(
    () => commitCheckpoint(`${tmp.path}/a`, { root, step: 1.5 }),
    errorReason("invalid_argument"),
  );
  await Deno.mkdir(`${tmp.path}/empty`);
  await assert.rejects(
    () => commitCheckpoint(`${tmp.path}/empty`, { root, step: 3 }),
    errorReason("staging_invalid"),
  );
});

Deno.test({
  name: "commit refuses a staging folder on another file system with cross_device",
  ignore: !CAN_MOUNT,
  async fn() {
    await using tmp = await tempDir();
    const other = `${tmp.path}/other-fs`;
    await using _mounted = await mountTmpfs(other, "4m");
    await stageFixtures(`${other}/staging`);
    await assert.rejects(
      () => commitCheckpoint(`${other}/staging`, { root: `${tmp.path}/root`, step: 1 }),
      errorReason("cross_device"),
    );
    assert.deepEqual(await names(`${other}/staging`), ["model.pt", "shards"], "the staging folder is untouched");
    assert.deepEqual(await names(`${tmp.path}/root`), [], "nothing was created in the root");
  },
});

Deno.test("an older step commits without moving latest back", async () => {
  await using tmp = await tempDir();
  const root = `${tmp.path}/root`;
  await stageFixtures(`${tmp.path}/a`);
  await commitCheckpoint(`${tmp.path}/a`, { root, step: 20 });
  await stageFixtures(`${tmp.path}/b`);
  const older = await commitCheckpoint(`${tmp.path}/b`, { root, step: 10 });
  assert.equal(older.latest_updated, false);
  assert.equal((await readLatest(root)).name, "step-20");
});

Deno.test("a commit failing just before the rename leaves no checkpoint visible and latest unchanged", async () => {
  await using tmp = await tempDir();
  const root = `${tmp.path}/root`;
  await stageFixtures(`${tmp.path}/a`);
  await commitCheckpoint(`${tmp.path}/a`, { root, step: 10 });
  await stageFixtures(`${tmp.path}/b`);
  await assert.rejects(() =>
    commitCheckpoint(`${tmp.path}/b`, {
      root,
      step: 20,
      faultHook: (point) => {
        if (point === "before_rename") throw new Error("injected");
      },
    })
  );
  assert.deepEqual(await names(root), [".ckptkit", "latest", "step-10"]);
  assert.equal((await readLatest(root)).name, "step-10");
  // The lock was released: the next commit goes through.
  const retried = await commitCheckpoint(`${tmp.path}/b`, {
    root,
    step: 20,
    lockTimeoutMs: 0,
  });
  assert.equal(retried.latest_updated, true);
});

for (
  const point of [
    "folders_synced",
    "before_rename",
    "before_latest_rename",
  ] as const
) {
  Deno.test(`a commit killed with SIGKILL at ${point} never leaves latest naming a partial checkpoint`, async () => {
    await using tmp = await tempDir();
    const root = `${tmp.path}/root`;
    const first = await runCli([
      "write",
      "--root",
      root,
      "--step",
      "10",
      "--files",
      "2",
      "--file-size",
      "64KiB",
    ]);
    assert.equal(first.code, 0, first.stderr);
    await stageFixtures(`${tmp.path}/b`);
    const child = cliCommand([
      "commit",
      `${tmp.path}/b`,
      "--root",
      root,
      "--step",
      "20",
    ], {
      env: { CKPTKIT_TEST_PAUSE_AT: point },
    }).spawn();
    await waitForLine(child.stderr, "test_paused");
    child.kill("SIGKILL");
    await child.stdout.cancel();
    const status = await child.status;
    assert.equal(status.signal, "SIGKILL");

    const latest = await readLatest(root);
    assert.equal(latest.state, "ok");
    assert.equal(
      (await validateCheckpoint(`${root}/${latest.name}`)).ok,
      true,
      "latest names a valid checkpoint",
    );
    assert.equal(
      (await validateCheckpoint(`${root}/step-10`)).ok,
      true,
      "the older checkpoint is intact",
    );
    const visible = (await names(root)).filter((n) => n.startsWith("step-"));
    if (point === "before_latest_rename") {
      assert.deepEqual(visible, ["step-10", "step-20"]);
      assert.equal(
        latest.name,
        "step-10",
        "latest moves only after its own rename",
      );
      assert.equal(
        (await validateCheckpoint(`${root}/step-20`)).ok,
        true,
        "the renamed checkpoint is complete",
      );
    } else {
      assert.deepEqual(
        visible,
        ["step-10"],
        "nothing visible before the rename",
      );
    }
    // The lock died with the process: the next commit does not wait.
    await stageFixtures(`${tmp.path}/c`);
    const next = await runCli([
      "commit",
      `${tmp.path}/c`,
      "--root",
      root,
      "--step",
      "30",
      "--lock-timeout",
      "0",
    ]);
    assert.equal(next.code, 0, next.stderr);
  });
}

Deno.test("the writer hashes while writing (bytes, strings, streams) and commits atomically", async () => {
  await using tmp = await tempDir();
  const root = tmp.path;
  const writer = await openCheckpointWriter(root, {
    step: 7,
    jobId: "job",
    runId: "run",
    sampleBytes: 1024,
  });
  const fixture = await Deno.open(`${FIXTURES}/safetensors/voices.safetensors`);
  await writer.writeFile("weights/voices.safetensors", fixture.readable);
  await writer.writeFile(
    "model.pt",
    await Deno.readFile(`${FIXTURES}/torch-zip/fortran_tensor_3d.pth`),
  );
  await writer.writeFile("trainer_state.json", '{"step": 7}');
  assert.deepEqual(
    (await names(root)).filter((n) => n.startsWith("step-")),
    [],
    "nothing visible before commit",
  );
  await assert.rejects(
    () => writer.writeFile("../escape", "x"),
    errorReason("unsafe_path"),
  );
  await assert.rejects(
    () => writer.writeFile("model.pt", "again"),
    errorReason("unsafe_path"),
  );
  const result = await writer.commit();
  assert.equal(result.files, 3);
  assert.deepEqual(
    await names(root),
    [".ckptkit", "latest", "step-7"],
    "no staging left behind",
  );
  const manifest = (await parseManifest(
    await Deno.readTextFile(`${root}/step-7/${MANIFEST_NAME}`),
  )).manifest!;
  const voices = manifest.files.find((f) => f.path === "weights/voices.safetensors")!;
  assert.equal(
    voices.digest,
    "a00ce33c297681eaa7b382cade3813e150807473c9b4a3710a3ce4343b823463",
  );
  assert.equal(voices.samples?.length, 8);
  const sampled = await validateCheckpoint(result.path, { depth: "sample" });
  assert.equal(sampled.ok, true);
  await assert.rejects(
    () => writer.writeFile("late.bin", "x"),
    errorReason("invalid_argument"),
  );
});

Deno.test("abort removes the staging folder and a writer for a committed step is refused up front", async () => {
  await using tmp = await tempDir();
  const root = tmp.path;
  const writer = await openCheckpointWriter(root, { step: 1 });
  await writer.writeFile("a.bin", new Uint8Array(10));
  await writer.abort();
  assert.deepEqual(await names(root), []);
  {
    await using scoped = await openCheckpointWriter(root, { step: 2 });
    await scoped.writeFile("a.bin", "x");
  }
  assert.deepEqual(
    await names(root),
    [],
    "await using aborts an uncommitted writer",
  );
  const done = await openCheckpointWriter(root, { step: 3 });
  await done.writeFile("a.bin", "x");
  await done.commit();
  await assert.rejects(
    () => openCheckpointWriter(root, { step: 3 }),
    errorReason("checkpoint_exists"),
  );
});

Deno.test("seal adopts a Hugging Face style folder in place, infers the step, and refuses to seal twice", async () => {
  await using tmp = await tempDir();
  const dir = `${tmp.path}/checkpoint-500`;
  await stageFixtures(dir);
  const result = await sealCheckpoint(dir, { jobId: "hf" });
  assert.equal(result.step, 500);
  assert.equal(result.files, 2);
  assert.deepEqual(await names(dir), [MANIFEST_NAME, "model.pt", "shards"]);
  assert.equal((await validateCheckpoint(dir)).ok, true);
  await assert.rejects(
    () => sealCheckpoint(dir),
    errorReason("manifest_exists"),
  );
  await Deno.mkdir(`${tmp.path}/final`);
  await Deno.writeTextFile(`${tmp.path}/final/x`, "x");
  await assert.rejects(
    () => sealCheckpoint(`${tmp.path}/final`),
    /pass --step/,
  );
  assert.equal(
    (await sealCheckpoint(`${tmp.path}/final`, { step: 9 })).step,
    9,
  );
});

Deno.test("the CLI commit under the compile task's permissions reports JSON and exit 4 for an existing step", async () => {
  await using tmp = await tempDir();
  const root = `${tmp.path}/root`;
  await stageFixtures(`${tmp.path}/a`);
  const ok = await runCli([
    "commit",
    `${tmp.path}/a`,
    "--root",
    root,
    "--step",
    "5",
    "--json",
    "--metadata",
    "k=v",
  ]);
  assert.equal(ok.code, 0, ok.stderr);
  const doc = JSON.parse(ok.stdout);
  assert.equal(doc.ok, true);
  assert.equal(doc.path, `${root}/step-5`);
  assert.equal(doc.files, 2);
  const log = ok.logs.find((l) => l.event === "checkpoint_committed")!;
  assert.deepEqual(Object.keys(log).slice(0, 8), [
    "ts",
    "severity",
    "event",
    "run_id",
    "job_id",
    "step",
    "checkpoint_path",
    "reason",
  ]);
  assert.equal(log.step, 5);

  await stageFixtures(`${tmp.path}/b`);
  const again = await runCli([
    "commit",
    `${tmp.path}/b`,
    "--root",
    root,
    "--step",
    "5",
  ]);
  assert.equal(again.code, 4);
  assert.match(
    again.stderr,
    /^ckptkit: error: .*step-5 already exists; a committed checkpoint is never replaced \[checkpoint_exists\]$/m,
  );
  assert.equal(
    again.logs.find((l) => l.event === "error")?.reason,
    "checkpoint_exists",
  );
});

Deno.test("decode parses JSON log lines", () => {
  const run = decode({
    code: 0,
    success: true,
    signal: null,
    stdout: new Uint8Array(),
    stderr: new TextEncoder().encode('{"event":"x"}\nplain\n'),
  });
  assert.deepEqual(run.logs, [{ event: "x" }]);
});

// Found by the state-machine test (seeds 1202002, 1202003): with latest deleted or naming a checkpoint that is gone,
// a commit of an older step than one already in the root moved latest back below it.
Deno.test("a commit of an older step never moves latest below a newer checkpoint in the root", async () => {
  await using tmp = await tempDir();
  const root = `${tmp.path}/root`;
  const commitStep = async (step: number) => {
    const staging = `${root}/.staging-${step}`;
    await Deno.mkdir(staging, { recursive: true });
    await Deno.writeTextFile(`${staging}/model.pt`, `weights ${step}`);
    return await commitCheckpoint(staging, { root, step });
  };
  await commitStep(10);
  await commitStep(30);
  for (const damage of ["deleted", "names a removed checkpoint"] as const) {
    if (damage === "deleted") await Deno.remove(`${root}/latest`);
    else await Deno.writeTextFile(`${root}/latest`, "step-5\n");
    const late = await commitStep(damage === "deleted" ? 20 : 25);
    assert.equal(late.latest_updated, false, damage);
    const latest = await readLatest(root);
    assert.notEqual(latest.name, late.name, `latest ${damage}: not moved back below step-30`);
    assert.ok((await validateCheckpoint(late.path)).ok);
  }
  // A newer step moves it as always.
  assert.equal((await commitStep(40)).latest_updated, true);
  assert.equal((await readLatest(root)).name, "step-40");
});
