import assert from "node:assert/strict";
import { collectMetrics } from "../src/metrics/collect.ts";
import { groupingKey, pushMetrics, pushUrl } from "../src/metrics/pushgateway.ts";
import { METRIC_NAMES, renderMetrics } from "../src/metrics/render.ts";
import { MAX_CORRUPT_SERIES } from "../src/metrics/snapshot.ts";
import { textfileName, writeTextfile } from "../src/metrics/textfile.ts";
import { PROBLEM_REASONS } from "../src/problems.ts";
import { quarantineCheckpoint } from "../src/core/quarantine.ts";
import { cliCommand, flipByte, names, runCli, samples, tempDir, writeStep } from "./_helpers.ts";

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

function value(text: string, pattern: RegExp): number[] {
  return [...samples(text)].filter(([key]) => pattern.test(key)).map(([, v]) => v);
}

Deno.test("metrics describe a root with valid, corrupt and quarantined checkpoints", async () => {
  await using tmp = await tempDir();
  const root = tmp.path;
  await writeStep(root, 10);
  await writeStep(root, 20);
  await flipByte(`${await writeStep(root, 30)}/shard-0.bin`, 3);
  const quarantined = await writeStep(root, 5);
  await quarantineCheckpoint(quarantined, { reason: "test" });
  const { snapshot, scan } = await collectMetrics(root);
  assert.equal(scan.ok, false);
  const text = await renderMetrics(snapshot);
  const labels = `root="${escapeRegExp(root)}",job_id="job",run_id="run"`;
  assert.deepEqual(value(text, /^checkpoint_last_success_step\{/), [20]);
  assert.deepEqual(value(text, /^checkpoint_resume_selected_step\{/), [20], "latest names step-30, which is corrupt");
  assert.deepEqual(value(text, new RegExp(`^checkpoint_inventory\\{${labels},status="valid"\\}`)), [2]);
  assert.deepEqual(value(text, /^checkpoint_inventory\{.*status="invalid"\}$/), [1]);
  assert.deepEqual(value(text, /^checkpoint_inventory\{.*status="quarantined"\}/), [1]);
  assert.deepEqual(value(text, /^checkpoint_corrupt_detected\{.*checkpoint="step-30",status="invalid"\}/), [1]);
  assert.deepEqual(value(text, /^checkpoint_corrupt_detected\{.*checkpoint="corrupt\/step-5",status="quarantined"\}/), [
    1,
  ]);
  assert.deepEqual(value(text, /^checkpoint_validation_failures_total\{.*reason="hash_mismatch"\}/), [1]);
  assert.equal(value(text, /^checkpoint_validation_failures_total\{/).length, PROBLEM_REASONS.length);
  assert.deepEqual(value(text, /^checkpoint_latest_valid\{/), [0]);
  assert.ok(value(text, /^checkpoint_write_bytes_total\{/)[0] >= 4 * 2 * 4096);
  assert.ok(value(text, /^checkpoint_directory_free_bytes\{/)[0] > 0);
  assert.deepEqual(value(text, new RegExp(`^checkpoint_last_size_bytes\\{${labels}\\}`)), [2 * 4096]);
  const age = value(text, /^checkpoint_newest_valid_age_seconds\{/)[0];
  assert.ok(age >= 0 && age < 60, String(age));
  assert.match(text, /^# TYPE checkpoint_write_bytes_total counter$/m);
  assert.match(text, /^# TYPE checkpoint_validation_failures_total counter$/m);
  assert.match(text, /^# HELP checkpoint_corrupt_detected /m);
});

Deno.test("checkpoint_last_size_bytes is the total_bytes of the newest checkpoint whose manifest is intact", async () => {
  await using tmp = await tempDir();
  const root = tmp.path;
  const size = async () =>
    value(await renderMetrics((await collectMetrics(root)).snapshot), /^checkpoint_last_size_bytes\{/);
  assert.deepEqual(await size(), [], "no checkpoint yet: no series");
  await writeStep(root, 10, 2);
  const step20 = await writeStep(root, 20, 3);
  assert.deepEqual(await size(), [3 * 4096]);
  await flipByte(`${step20}/shard-1.bin`, 5);
  assert.deepEqual(await size(), [3 * 4096], "a corrupt file does not change what the next save needs");
  await flipByte(`${await writeStep(root, 30, 1)}/ckptkit.manifest.json`, 40);
  assert.deepEqual(await size(), [3 * 4096], "a damaged manifest is not trusted: the next newest one counts");
});

Deno.test("checkpoint_corrupt_detected is capped, and the inventory still counts everything", async () => {
  await using tmp = await tempDir();
  const root = tmp.path;
  await writeStep(root, 1000, 1);
  await Deno.mkdir(`${root}/corrupt`);
  for (let i = 0; i < MAX_CORRUPT_SERIES + 10; i++) await Deno.mkdir(`${root}/corrupt/step-${i}`);
  const text = await renderMetrics((await collectMetrics(root, { depth: "fast" })).snapshot);
  assert.equal(value(text, /^checkpoint_corrupt_detected\{/).length, MAX_CORRUPT_SERIES);
  assert.ok(text.includes('checkpoint="corrupt/step-59"'), "the newest are kept");
  assert.deepEqual(value(text, /^checkpoint_inventory\{.*status="quarantined"\}/), [MAX_CORRUPT_SERIES + 10]);
});

Deno.test("metrics, logs and exit codes agree on the reason of each problem", async () => {
  await using tmp = await tempDir();
  const root = tmp.path;
  const corruptions: [string, (dir: string) => Promise<void>][] = [
    ["hash_mismatch", (dir) => flipByte(`${dir}/shard-0.bin`, 7)],
    ["size_mismatch", (dir) => Deno.truncate(`${dir}/shard-1.bin`, 5)],
    ["file_missing", (dir) => Deno.remove(`${dir}/shard-0.bin`)],
    ["unexpected_file", (dir) => Deno.writeTextFile(`${dir}/extra.txt`, "x")],
    ["manifest_corrupt", (dir) => flipByte(`${dir}/ckptkit.manifest.json`, 40)],
    ["symlink", async (dir) => {
      await Deno.remove(`${dir}/shard-1.bin`);
      await Deno.symlink("/etc/hostname", `${dir}/shard-1.bin`);
    }],
  ];
  for (const [reason, corrupt] of corruptions) {
    const dir = await writeStep(root, corruptions.findIndex(([r]) => r === reason) + 1);
    await corrupt(dir);
    const validate = await runCli(["validate", dir, "--json"]);
    assert.equal(validate.code, 1, reason);
    assert.deepEqual(JSON.parse(validate.stdout).problems.map((p: { reason: string }) => p.reason), [reason]);
    assert.deepEqual(validate.logs.filter((l) => l.event === "validation_failed").map((l) => l.reason), [reason]);
  }
  const emitted = await runCli(["emit-metrics", root, "--log-level", "silent"]);
  assert.equal(emitted.code, 1, "problems found: same exit code as scan");
  for (const [reason] of corruptions) {
    // Found by validate and again by the scan behind emit-metrics: the same corruption counts once.
    assert.deepEqual(
      value(emitted.stdout, new RegExp(`^checkpoint_validation_failures_total\\{.*reason="${reason}"\\}`)),
      [1],
      reason,
    );
  }
});

Deno.test("the textfile is written atomically and must end in .prom", async () => {
  await using tmp = await tempDir();
  await writeTextfile(`${tmp.path}/ckptkit.prom`, "a 1\n");
  await writeTextfile(`${tmp.path}/ckptkit.prom`, "a 2\n");
  assert.deepEqual(await names(tmp.path), ["ckptkit.prom"], "no temp file left behind");
  assert.equal(await Deno.readTextFile(`${tmp.path}/ckptkit.prom`), "a 2\n");
  await assert.rejects(() => writeTextfile(`${tmp.path}/ckptkit.txt`, "a 1\n"), /must end in \.prom/);
});

Deno.test("pushUrl accepts the URL with or without /metrics and encodes label values", () => {
  for (const base of ["http://pg:9091/metrics", "http://pg:9091/metrics/", "http://pg:9091", "http://pg:9091/"]) {
    assert.equal(
      pushUrl(base, { job_id: "a/b", instance: "node-1" }),
      "http://pg:9091/metrics/job/ckptkit/job_id@base64/YS9i/instance@base64/bm9kZS0x",
    );
  }
  assert.equal(
    pushUrl("https://gw.example/prefix/metrics", { job_id: "" }),
    "https://gw.example/prefix/metrics/job/ckptkit",
  );
  assert.throws(() => pushUrl("pushgateway:9091", {}), /must be http or https/);
});

Deno.test("pushMetrics retries with backoff until the gateway answers, and fails clearly when it never does", async () => {
  const requests: { method: string; path: string; body: string }[] = [];
  let failures = 2;
  await using server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (request) => {
    requests.push({ method: request.method, path: new URL(request.url).pathname, body: await request.text() });
    return failures-- > 0 ? new Response("busy", { status: 503 }) : new Response("", { status: 200 });
  });
  const base = `http://127.0.0.1:${server.addr.port}/metrics`;
  const pushed = await pushMetrics(base, "a 1\n", { grouping: { job_id: "j" }, backoffMs: 10 });
  assert.equal(pushed.attempts, 3);
  assert.deepEqual(requests.map((r) => r.method), ["PUT", "PUT", "PUT"]);
  assert.equal(requests[0].path, "/metrics/job/ckptkit/job_id@base64/ag");
  assert.equal(requests[2].body, "a 1\n");

  const closed = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = closed.addr.port;
  closed.close();
  await assert.rejects(
    () => pushMetrics(`http://127.0.0.1:${port}`, "a 1\n", { grouping: {}, backoffMs: 10, attempts: 2 }),
    (err: Error & { reason?: string }) => err.reason === "push_failed" && /127\.0\.0\.1/.test(err.message),
  );
});

Deno.test("emit-metrics exits 4 when the Pushgateway is down, after writing the textfile", async () => {
  await using tmp = await tempDir();
  const root = `${tmp.path}/root`;
  await writeStep(root, 1);
  const closed = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = closed.addr.port;
  closed.close();
  const run = await runCli([
    "emit-metrics",
    root,
    "--textfile",
    `${tmp.path}/ckptkit.prom`,
    "--pushgateway",
    `http://127.0.0.1:${port}/metrics`,
    "--push-attempts",
    "2",
    "--push-timeout",
    "1s",
  ]);
  assert.equal(run.code, 4);
  assert.match(
    run.stderr,
    /Pushing metrics to http:\/\/127\.0\.0\.1:\d+\/metrics\/job\/ckptkit.* failed: .* \[push_failed\]/,
  );
  assert.match(await Deno.readTextFile(`${tmp.path}/ckptkit.prom`), /^checkpoint_last_success_step\{.*\} 1$/m);
});

Deno.test("emit-metrics takes the textfile from the config", async () => {
  await using tmp = await tempDir();
  const root = `${tmp.path}/root`;
  await writeStep(root, 3);
  await Deno.writeTextFile(`${tmp.path}/c.yaml`, `root: ${root}\nmetrics:\n  textfile: ${tmp.path}/out.prom\n`);
  const run = await runCli(["--config", `${tmp.path}/c.yaml`, "emit-metrics", "--json", "--log-level", "silent"]);
  assert.equal(run.code, 0, run.stderr);
  assert.equal(JSON.parse(run.stdout).textfile, `${tmp.path}/out.prom`);
  assert.match(await Deno.readTextFile(`${tmp.path}/out.prom`), /checkpoint_last_success_step\{.*\} 3/);
});

function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  listener.close();
  return port;
}

async function poll<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 300_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const result = await fn().catch(() => undefined);
    if (result !== undefined) return result;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${what}`);
}

Deno.test("serve exports /metrics and /healthz, revalidates when a checkpoint appears, and stops on SIGTERM", async () => {
  await using tmp = await tempDir();
  const root = tmp.path;
  await writeStep(root, 10);
  const port = freePort();
  const child = cliCommand([
    "serve",
    root,
    "--listen",
    `127.0.0.1:${port}`,
    "--interval",
    "1h",
    "--root-label",
    "served",
  ])
    .spawn();
  try {
    const url = `http://127.0.0.1:${port}`;
    const first = await poll("first metrics", async () => {
      const response = await fetch(`${url}/metrics`);
      const text = await response.text();
      return response.ok ? text : undefined;
    });
    assert.match(first, /^checkpoint_last_success_step\{root="served",job_id="job",run_id="run"\} 10$/m);
    const health = await fetch(`${url}/healthz`);
    assert.equal(health.status, 200);
    assert.match(await health.text(), /^ok, last pass /);
    const missing = await fetch(`${url}/nope`);
    assert.equal(missing.status, 404);
    await missing.body?.cancel();

    await writeStep(root, 20);
    await poll("the new checkpoint in the metrics (watchFs, not the 1h interval)", async () => {
      const text = await (await fetch(`${url}/metrics`)).text();
      return /^checkpoint_last_success_step\{.*\} 20$/m.test(text) ? true : undefined;
    });
  } finally {
    child.kill("SIGTERM");
  }
  const started = performance.now();
  const output = await child.output();
  assert.equal(output.code, 0, new TextDecoder().decode(output.stderr));
  assert.ok(performance.now() - started < 10_000, "shuts down promptly");
  const stderr = new TextDecoder().decode(output.stderr);
  assert.match(stderr, /"event":"exporter_started"/);
  assert.match(stderr, /"event":"exporter_stopped"/);
});

Deno.test("serve on a port in use exits 4 with a clear message", async () => {
  await using tmp = await tempDir();
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    const run = await runCli(["serve", tmp.path, "--listen", `127.0.0.1:${listener.addr.port}`]);
    assert.equal(run.code, 4);
    assert.match(run.stderr, /Cannot listen on 127\.0\.0\.1:\d+: .*\[io_error\]/);
  } finally {
    listener.close();
  }
  const bad = await runCli(["serve", tmp.path, "--listen", "nowhere"]);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /expected host:port/);
});

Deno.test("emit-metrics --delete removes this root's group from the Pushgateway", async () => {
  await using tmp = await tempDir();
  await writeStep(tmp.path, 1);
  const seen: string[] = [];
  await using server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (request) => {
    seen.push(`${request.method} ${new URL(request.url).pathname}`);
    return new Response("", { status: 202 });
  });
  const base = `http://127.0.0.1:${server.addr.port}/metrics`;
  const run = await runCli(["emit-metrics", tmp.path, "--pushgateway", base, "--delete", "--instance", "n1"]);
  assert.equal(run.code, 0, run.stderr);
  const root = `root@base64/${btoa(tmp.path).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "")}`;
  assert.deepEqual(seen, [`DELETE /metrics/job/ckptkit/job_id@base64/am9i/${root}/instance@base64/bjE`]);
  seen.length = 0;
  const named = await runCli(["emit-metrics", "--pushgateway", base, "--delete", "--job-id", "j", "--root-label", "r"]);
  assert.equal(named.code, 0, named.stderr);
  assert.deepEqual(seen, [
    `DELETE /metrics/job/ckptkit/job_id@base64/ag/root@base64/cg/instance@base64/${
      btoa(Deno.hostname()).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "")
    }`,
  ], "with both labels given, no root is needed");
  const missing = await runCli(["emit-metrics", tmp.path, "--delete"]);
  assert.equal(missing.code, 2);
  assert.match(missing.stderr, /--delete needs --pushgateway/);
});

Deno.test("every series carries the root label and no label is ever empty", async () => {
  await using tmp = await tempDir();
  const root = `${tmp.path}/root`;
  await Deno.mkdir(root);
  const check = (text: string, expectJob: boolean) => {
    const series = [...samples(text).keys()];
    assert.ok(series.length >= METRIC_NAMES.length - 5, String(series.length));
    for (const key of series) {
      assert.ok(!key.includes('=""'), `empty label: ${key}`);
      assert.ok(key.includes(`{root="${root}"`), `root label first: ${key}`);
      assert.equal(/[{,]job_id="/.test(key), expectJob, key);
      assert.equal(/[{,]run_id="/.test(key), expectJob, key);
    }
  };
  // an empty root: no job or run known, so those labels are left out
  const empty = await runCli(["emit-metrics", root, "--log-level", "silent"]);
  assert.equal(empty.code, 0, empty.stderr);
  check(empty.stdout, false);
  const blank = await runCli(["emit-metrics", root, "--job-id", "", "--run-id", "", "--log-level", "silent"]);
  check(blank.stdout, false);
  await writeStep(root, 1);
  const written = await runCli(["emit-metrics", root, "--log-level", "silent"]);
  assert.equal(written.code, 0, written.stderr);
  check(written.stdout, true);
  await flipByte(`${await writeStep(root, 2)}/shard-0.bin`, 1);
  const corrupt = await runCli(["emit-metrics", root, "--log-level", "silent"]);
  assert.equal(corrupt.code, 1, corrupt.stderr);
  check(corrupt.stdout, true);
  assert.match(
    corrupt.stdout,
    /^checkpoint_corrupt_detected\{root="[^"]+",job_id="job",run_id="run",checkpoint="step-2"/m,
  );
});

Deno.test("--root-label and metrics.root_label name the root; the root's real path otherwise", async () => {
  await using tmp = await tempDir();
  const root = `${tmp.path}/root`;
  await writeStep(root, 1);
  await Deno.symlink(root, `${tmp.path}/link`);
  const rootOf = (text: string) =>
    new Set([...samples(text).keys()].map((key) => /^\w+\{root="([^"]*)"/.exec(key)?.[1]));
  const viaLink = await runCli(["emit-metrics", `${tmp.path}/link`, "--log-level", "silent"]);
  assert.deepEqual(rootOf(viaLink.stdout), new Set([root]), "the real path, however the root was named");
  const flag = await runCli(["emit-metrics", root, "--root-label", "llama-7b", "--log-level", "silent"]);
  assert.deepEqual(rootOf(flag.stdout), new Set(["llama-7b"]));
  await Deno.writeTextFile(`${tmp.path}/c.yaml`, `metrics:\n  root_label: from-config\n`);
  const config = await runCli(["--config", `${tmp.path}/c.yaml`, "emit-metrics", root, "--log-level", "silent"]);
  assert.deepEqual(rootOf(config.stdout), new Set(["from-config"]));
  const both = await runCli(["--config", `${tmp.path}/c.yaml`, "emit-metrics", root, "--root-label", "flag"]);
  assert.deepEqual(rootOf(both.stdout), new Set(["flag"]), "the flag wins over the config");
  await Deno.writeTextFile(`${tmp.path}/bad.yaml`, `metrics:\n  root_label: ""\n`);
  const bad = await runCli(["--config", `${tmp.path}/bad.yaml`, "emit-metrics", root]);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /metrics\.root_label/);
});

Deno.test("--textfile naming a folder writes one file per root, named after it; a file path works as before", async () => {
  await using tmp = await tempDir();
  const folder = `${tmp.path}/collector`;
  await Deno.mkdir(folder);
  const roots = [`${tmp.path}/one/ckpts`, `${tmp.path}/two/ckpts`];
  for (const root of roots) await writeStep(root, 1); // the same job_id and run_id in both
  const emit = async (args: string[]) => {
    const run = await runCli(["emit-metrics", ...args, "--json", "--log-level", "silent"]);
    assert.equal(run.code, 0, run.stderr);
    return JSON.parse(run.stdout).textfile as string;
  };
  const files = [await emit([roots[0], "--textfile", folder]), await emit([roots[1], "--textfile", `${folder}/`])];
  assert.deepEqual(files, roots.map((root) => `${folder}/${textfileName(root)}`));
  assert.notEqual(files[0], files[1], "two roots never share a file");
  assert.match(files[0], /\/ckptkit-[\w.-]*one-ckpts-[0-9a-f]{10}\.prom$/);
  assert.equal(await emit([roots[0], "--textfile", folder]), files[0], "rewritten in place on the next pass");
  const named = await emit([roots[0], "--textfile", folder, "--root-label", "llama 7b/main"]);
  assert.match(named, /\/ckptkit-llama-7b-main-[0-9a-f]{10}\.prom$/);
  assert.deepEqual((await names(folder)).sort(), [...files, named].map((f) => f.slice(folder.length + 1)).sort());
  for (const [i, file] of files.entries()) {
    assert.match(
      await Deno.readTextFile(file),
      new RegExp(`^checkpoint_latest_valid\\{root="${escapeRegExp(roots[i])}",`, "m"),
    );
  }
  // an explicit file path, as before
  assert.equal(await emit([roots[0], "--textfile", `${tmp.path}/explicit.prom`]), `${tmp.path}/explicit.prom`);
  const missing = await runCli(["emit-metrics", roots[0], "--textfile", `${tmp.path}/nowhere/`]);
  assert.equal(missing.code, 2, missing.stderr);
  assert.match(missing.stderr, /Writing the metrics textfile .*\/nowhere\/ckptkit-.*\.prom failed: No such file/);
  assert.equal(textfileName("/x", ""), textfileName("/x", "///"), "a label without letters still gives a name");
  assert.match(textfileName("/x", "///"), /^ckptkit-root-[0-9a-f]{10}\.prom$/);
});

Deno.test("the Pushgateway group is the root on the host: two roots of one job push to two groups", async () => {
  await using tmp = await tempDir();
  const roots = [`${tmp.path}/a`, `${tmp.path}/b`];
  for (const root of roots) await writeStep(root, 1);
  const seen: string[] = [];
  await using server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (request) => {
    seen.push(`${request.method} ${new URL(request.url).pathname}`);
    await request.body?.cancel();
    return new Response("", { status: 200 });
  });
  const base = `http://127.0.0.1:${server.addr.port}`;
  for (const root of roots) {
    const run = await runCli([
      "emit-metrics",
      root,
      "--pushgateway",
      base,
      "--instance",
      "n1",
      "--log-level",
      "silent",
    ]);
    assert.equal(run.code, 0, run.stderr);
  }
  assert.equal(new Set(seen).size, 2, seen.join("\n"));
  for (const [i, root] of roots.entries()) {
    assert.equal(
      seen[i],
      `PUT ${pushUrl("http://x", groupingKey({ root, job_id: "job" }, "n1")).slice("http://x".length)}`,
    );
  }
  assert.deepEqual(groupingKey({ root: "/r" }, "n1"), { root: "/r", instance: "n1" }, "no job_id: left out");
});
