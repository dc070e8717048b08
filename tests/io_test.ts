/**
 * What validation reads, counted with strace: --fast opens no data file,
 * --sample-bytes reads only the recorded regions, full reads every byte
 * exactly once, and commit reads each byte once while hashing.
 */

import assert from "node:assert/strict";
import { ckptkitFlags, REPO, runCli, tempDir } from "./_helpers.ts";

const HAVE_STRACE = await new Deno.Command("strace", { args: ["-V"], stdout: "null", stderr: "null" }).output()
  .then((o) => o.success, () => false);

/** Bytes read from files whose path contains `needle`, and how many times such files were opened. */
async function readsOf(args: string[], needle: string): Promise<{ bytes: number; opens: number }> {
  await using tmp = await tempDir("ckptkit-io-");
  const log = `${tmp.path}/strace.log`;
  const out = await new Deno.Command("strace", {
    args: [
      "-f",
      "-y",
      "-qq",
      "-e",
      "trace=openat,read,pread64,readv,preadv",
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
    stdout: "null",
    stderr: "piped",
  }).output();
  assert.ok([0, 1].includes(out.code), new TextDecoder().decode(out.stderr));
  let bytes = 0;
  let opens = 0;
  // With -f, a call interrupted by another thread is split: "read(5</path>, <unfinished ...>" then
  // "<... read resumed>..., 65536) = 65536" on the same pid (openat too: the hash workers open files side by side).
  const pending = new Map<string, string>();
  const pendingOpens = new Map<string, string>();
  for (const line of (await Deno.readTextFile(log)).split("\n")) {
    const pid = line.split(/\s+/, 1)[0];
    const openedPath = / openat\([^,]*, "([^"]*)"/.exec(line)?.[1];
    if (openedPath !== undefined && line.includes("<unfinished ...>")) {
      pendingOpens.set(pid, openedPath);
      continue;
    }
    if (/<\.\.\. openat resumed>.*= \d+/.test(line) && pendingOpens.get(pid)?.includes(needle)) opens++;
    if (line.includes("<... openat resumed>")) {
      pendingOpens.delete(pid);
      continue;
    }
    if (openedPath?.includes(needle) && /= \d+/.test(line)) opens++;
    const resumed = /<\.\.\. (?:read|pread64|readv|preadv) resumed>.*= (\d+)$/.exec(line);
    if (resumed) {
      if (pending.get(pid)?.includes(needle)) bytes += Number(resumed[1]);
      pending.delete(pid);
      continue;
    }
    // The path is the fd's (-y), not the data strace prints, which may mention file names.
    const started = /(?:read|pread64|readv|preadv)\(\d+<([^>]*)>/.exec(line);
    if (!started) continue;
    if (line.includes("<unfinished ...>")) {
      pending.set(pid, started[1]);
      continue;
    }
    const done = /= (\d+)$/.exec(line);
    if (done && started[1].includes(needle)) bytes += Number(done[1]);
  }
  return { bytes, opens };
}

Deno.test({
  name: "validate --fast opens no data file; --sample-bytes reads only the sampled regions; full reads each byte once",
  ignore: !HAVE_STRACE,
  async fn() {
    await using tmp = await tempDir();
    const write = await runCli(["write", "--root", tmp.path, "--step", "1", "--files", "2", "--file-size", "4MiB"]);
    assert.equal(write.code, 0, write.stderr);
    const checkpoint = `${tmp.path}/step-1`;
    const fast = await readsOf(["validate", checkpoint, "--fast"], "shard-");
    assert.deepEqual(fast, { bytes: 0, opens: 0 }, "metadata only");
    const sampled = await readsOf(["validate", checkpoint, "--sample-bytes", "64KiB"], "shard-");
    assert.equal(sampled.bytes, 2 * 8 * 65536, "8 regions of 64 KiB per shard, nothing else");
    const full = await readsOf(["validate", checkpoint], "shard-");
    assert.equal(full.bytes, 2 * 4 * 1024 * 1024, "every byte once");
    assert.equal(full.opens, 2);
  },
});

Deno.test({
  name: "commit reads each byte of the staged files once",
  ignore: !HAVE_STRACE,
  async fn() {
    await using tmp = await tempDir();
    const staging = `${tmp.path}/root/.staging-in`;
    await Deno.mkdir(staging, { recursive: true });
    for (const name of ["a.bin", "b.bin", "c.bin"]) {
      await Deno.writeFile(`${staging}/${name}`, new Uint8Array(3 * 1024 * 1024 + 5).fill(name.charCodeAt(0)));
    }
    const commit = await readsOf(["commit", staging, "--root", `${tmp.path}/root`, "--step", "1"], ".bin");
    assert.equal(commit.bytes, 3 * (3 * 1024 * 1024 + 5));
  },
});
