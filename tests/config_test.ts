import assert from "node:assert/strict";
import { loadConfig, parseConfig } from "../src/core/config.ts";
import { CkptkitError } from "../src/errors.ts";
import { cliCommand, decode, runCli, tempDir } from "./_helpers.ts";

const EXAMPLE = `root: /tmp/ckpts
hashing:
  sample_bytes: 65536
retention:
  keep_last: 3
  keep_every: 1000
metrics:
  textfile: /var/lib/node_exporter/ckptkit.prom
  pushgateway: http://pushgateway:9091/metrics
`;

Deno.test("the documented config example parses", () => {
  const config = parseConfig(EXAMPLE);
  assert.equal(config.root, "/tmp/ckpts");
  assert.equal(config.hashing?.sample_bytes, 65536);
  assert.equal(config.retention?.keep_every, 1000);
  assert.equal(config.metrics?.pushgateway, "http://pushgateway:9091/metrics");
});

Deno.test("unknown keys and wrong types are errors that name the key", () => {
  const cases: [string, RegExp][] = [
    ["hashing:\n  sampel_bytes: 1\n", /unknown key "hashing\.sampel_bytes"/],
    ["roots: /x\n", /unknown key "roots"/],
    [
      "hashing:\n  sample_bytes: lots\n",
      /key "hashing\.sample_bytes" is invalid: .*expected number.*\(got "lots"\)/,
    ],
    [
      "hashing:\n  sample_bytes: -1\n",
      /key "hashing\.sample_bytes" is invalid/,
    ],
    ["retention: 3\n", /key "retention" is invalid/],
    ["hashing:\n  algorithm: md5\n", /key "hashing\.algorithm" is invalid/],
    [
      "metrics:\n  pushgateway: not a url\n",
      /key "metrics\.pushgateway" is invalid/,
    ],
    ["root: [unclosed\n", /invalid YAML at line \d+, column \d+/],
    ["- a\n- b\n", /key "\(top level\)" is invalid/],
  ];
  for (const [text, message] of cases) {
    assert.throws(
      () => parseConfig(text, "ckptkit.yaml"),
      (err: Error & { reason?: string }) => {
        assert.equal(err.reason, "config_invalid");
        assert.match(err.message, /^ckptkit\.yaml: /);
        assert.match(err.message, message);
        return true;
      },
      text,
    );
  }
  assert.deepEqual(parseConfig(""), {});
});

Deno.test("a bad config file fails the CLI with exit 2 and a one-line error naming the key", async () => {
  await using tmp = await tempDir();
  const path = `${tmp.path}/ckptkit.yaml`;
  await Deno.writeTextFile(
    path,
    "root: /tmp/ckpts\nhashing:\n  sampel_bytes: 65536\n",
  );
  const run = await runCli(["--config", path, "scan"]);
  assert.equal(run.code, 2);
  assert.equal(
    run.stderr.split("\n").filter((l) => l.startsWith("ckptkit:")).join("\n"),
    `ckptkit: error: ${path}: unknown key "hashing.sampel_bytes" [config_invalid]`,
  );
  const missing = await runCli(["--config", `${tmp.path}/nope.yaml`, "scan"]);
  assert.equal(missing.code, 2);
  assert.match(missing.stderr, /Cannot read config file .*nope\.yaml/);
});

Deno.test("the config supplies the root and sample size, and flags override it", async () => {
  await using tmp = await tempDir();
  const path = `${tmp.path}/ckptkit.yaml`;
  await Deno.writeTextFile(
    path,
    EXAMPLE.replace("/tmp/ckpts", `${tmp.path}/from-config`).replace(
      "65536",
      "1024",
    ),
  );
  const fromConfig = await runCli([
    "--config",
    path,
    "write",
    "--step",
    "1",
    "--files",
    "1",
    "--file-size",
    "4KiB",
  ]);
  assert.equal(fromConfig.code, 0, fromConfig.stderr);
  const manifest = JSON.parse(
    await Deno.readTextFile(
      `${tmp.path}/from-config/step-1/ckptkit.manifest.json`,
    ),
  );
  assert.equal(manifest.hash.sample_bytes, 1024);

  const overridden = await runCli([
    "write",
    "--config",
    path,
    "--root",
    `${tmp.path}/from-flag`,
    "--sample-bytes",
    "2KiB",
    "--step",
    "1",
    "--files",
    "1",
    "--file-size",
    "4KiB",
  ]);
  assert.equal(overridden.code, 0, overridden.stderr);
  const flagged = JSON.parse(
    await Deno.readTextFile(
      `${tmp.path}/from-flag/step-1/ckptkit.manifest.json`,
    ),
  );
  assert.equal(flagged.hash.sample_bytes, 2048);
  const scan = await runCli(["--config", path, "scan", "--json"]);
  assert.equal(JSON.parse(scan.stdout).root, `${tmp.path}/from-config`);
});

Deno.test("a config that is a FIFO, a folder, a link to /dev/zero or a huge file is config_invalid without reading it", async () => {
  await using tmp = await tempDir();
  const fifo = `${tmp.path}/fifo.yaml`;
  const made = await new Deno.Command("mkfifo", { args: [fifo] }).output();
  assert.ok(made.success, "mkfifo");
  await Deno.mkdir(`${tmp.path}/folder.yaml`);
  await Deno.symlink("/dev/zero", `${tmp.path}/zero.yaml`);
  const huge = await Deno.open(`${tmp.path}/huge.yaml`, { write: true, create: true });
  await huge.truncate(64 * 1024 * 1024); // sparse: a config this large is a mistake, not a config
  huge.close();
  for (
    const [name, detail] of [
      ["fifo.yaml", /not a regular file/],
      ["folder.yaml", /not a regular file/],
      ["zero.yaml", /not a regular file/],
      ["huge.yaml", /larger than/],
    ] as const
  ) {
    // Backstop against a hang (a FIFO without a writer blocks open()): minutes, only to end a stuck run.
    const child = cliCommand(["--config", `${tmp.path}/${name}`, "scan", tmp.path]).spawn();
    const backstop = setTimeout(() => child.kill("SIGKILL"), 180_000);
    const run = decode(await child.output());
    clearTimeout(backstop);
    assert.equal(run.code, 2, `${name}: ${run.stderr}`);
    const lines = run.stderr.split("\n").filter((line) => line.startsWith("ckptkit: error:"));
    assert.equal(lines.length, 1, run.stderr);
    assert.match(lines[0], detail, name);
    assert.match(lines[0], /\[config_invalid\]$/, name);
    await assert.rejects(
      () => loadConfig(`${tmp.path}/${name}`),
      (err) => err instanceof CkptkitError && err.reason === "config_invalid",
      name,
    );
  }
  // A link to a regular config file is still read.
  await Deno.writeTextFile(`${tmp.path}/real.yaml`, `root: ${tmp.path}\n`);
  await Deno.symlink(`${tmp.path}/real.yaml`, `${tmp.path}/link.yaml`);
  assert.equal((await loadConfig(`${tmp.path}/link.yaml`)).root, tmp.path);
});

Deno.test("counts in the config are written like steps everywhere: 010, +7, 0x10, 1e3 and 7.0 are config_invalid", () => {
  for (const form of ["010", "+7", "0x10", "0o7", "1e3", "7.0", "-1"]) {
    for (
      const key of [
        "retention:\n  keep_every",
        "retention:\n  keep_last",
        "hashing:\n  jobs",
        "hashing:\n  sample_bytes",
      ]
    ) {
      assert.throws(
        () => parseConfig(`${key}: ${form}\n`, "ckptkit.yaml"),
        (err) => err instanceof CkptkitError && err.reason === "config_invalid" && err.message.includes("ckptkit.yaml"),
        `${key}: ${form}`,
      );
    }
  }
  assert.equal(parseConfig("retention:\n  keep_every: 1000\n  keep_last: 0\n").retention?.keep_every, 1000);
  assert.equal(parseConfig("lock_timeout_s: 1.5\n").lock_timeout_s, 1.5);
});
