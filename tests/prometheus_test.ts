/**
 * The Grafana dashboard, the Prometheus example config and the alert rules,
 * checked against the real tools: promtool validates the config, the rules
 * and their unit tests and lints ckptkit's exposition text; then a real
 * node_exporter, Pushgateway, `ckptkit serve` and Prometheus are started on
 * 127.0.0.1, fed a root with valid, corrupt and quarantined checkpoints, and
 * every PromQL expression of the dashboard and of the alert rules is run
 * against Prometheus's HTTP API.
 *
 * The tools come from Debian (`.ci/run` installs them). Without them the
 * tests are skipped locally, never on CI (`CI` set).
 */

import assert from "node:assert/strict";
import { parse as parseYaml, stringify as stringifyYaml } from "yaml";
import { METRIC_NAMES } from "../src/metrics/render.ts";
import { textfileName } from "../src/metrics/textfile.ts";
import { cliCommand, flipByte, REPO, runCli, tempDir } from "./_helpers.ts";
import {
  activeAlerts,
  type Alert,
  Fatal,
  freePorts,
  get,
  ON_CI,
  onPath,
  query,
  type Sample,
  type Server,
  serverCommand,
  startServer,
  stopServer,
  tail,
  until,
} from "./_servers.ts";

const DASHBOARD = `${REPO}/dashboards/grafana_checkpoint_health.json`;
const PROMETHEUS_YML = `${REPO}/examples/prometheus.yml`;
const ALERTS_YML = `${REPO}/examples/alerts.yml`;
const ALERTS_TEST_YML = `${REPO}/examples/alerts_test.yml`;

const SERVER_TOOLS = ["prometheus", "promtool", "prometheus-pushgateway", "prometheus-node-exporter"];
const missingTools = SERVER_TOOLS.filter((tool) => !onPath(tool));
/** Skip locally when a tool is missing; on CI run and fail with a clear message instead. */
const skipPromtool = !ON_CI && missingTools.includes("promtool");
const skipServers = !ON_CI && missingTools.length > 0;

function assertTools(tools: string[]): void {
  const missing = tools.filter((tool) => missingTools.includes(tool));
  assert.deepEqual(missing, [], `not on PATH: ${missing.join(", ")} (Debian: apt-get install prometheus ...)`);
}

// ---------------------------------------------------------------------------
// The dashboard and the rules, as data

interface Target {
  panel: string;
  refId: string;
  expr: string;
  format?: string;
  instant?: boolean;
  datasource?: { type?: string; uid?: string };
}

interface Panel {
  id: number;
  type: string;
  title: string;
  datasource?: { type?: string; uid?: string };
  targets?: Omit<Target, "panel">[];
  panels?: Panel[];
}

interface Variable {
  name: string;
  type: string;
  datasource?: { type?: string; uid?: string };
  definition?: string;
  query?: string | { query: string };
  multi?: boolean;
  includeAll?: boolean;
  allValue?: string;
}

interface Dashboard {
  uid: string;
  title: string;
  panels: Panel[];
  templating: { list: Variable[] };
}

interface Rule {
  alert: string;
  expr: string;
  for?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

async function loadDashboard(): Promise<Dashboard> {
  return JSON.parse(await Deno.readTextFile(DASHBOARD));
}

/** Every panel, rows' nested panels included. */
function allPanels(dashboard: Dashboard): Panel[] {
  return dashboard.panels.flatMap((panel) => [panel, ...(panel.panels ?? [])]);
}

function dashboardTargets(dashboard: Dashboard): Target[] {
  return allPanels(dashboard).flatMap((panel) =>
    (panel.targets ?? []).map((target) => ({ ...target, panel: panel.title }))
  );
}

async function loadRules(): Promise<Rule[]> {
  const doc = parseYaml(await Deno.readTextFile(ALERTS_YML)) as { groups: { rules: Rule[] }[] };
  return doc.groups.flatMap((group) => group.rules);
}

/**
 * A dashboard expression as Grafana would send it with "All" selected:
 * `$job_id`/`$run_id`/`$root` become `.*` (the variables' allValue), the interval
 * variables become durations a 1 s scrape fills.
 */
function grafanaExpr(expr: string): string {
  const out = expr
    .replace(/\$\{?__rate_interval\}?/g, "1m")
    .replace(/\$\{?__interval\}?/g, "15s")
    .replace(/\$\{?__range_s\}?/g, "300")
    .replace(/\$\{?__range_ms\}?/g, "300000")
    .replace(/\$\{?__range\}?/g, "5m")
    .replace(/\$\{?(job_id|run_id|root)(:\w+)?\}?/g, ".*");
  assert.ok(!out.includes("$"), `unhandled Grafana variable in ${expr}`);
  return out;
}

/**
 * The vector operands of an alert expression: the expression split at its
 * top-level comparison (`>`, `==`, ...) and set (`and`, `or`, `unless`)
 * operators, without `on (...)`/`ignoring (...)`/`group_*`/`bool`
 * modifiers, and without operands that are plain numbers (`2 * 3600`).
 * `time() - max by (x) (m) > 2 * 3600` gives `time() - max by (x) (m)`.
 */
function vectorOperands(expr: string): string[] {
  const parts: string[] = [];
  let depth = 0;
  let quote: string | null = null;
  let start = 0;
  for (let i = 0; i < expr.length; i++) {
    const c = expr[i];
    if (quote) {
      if (c === "\\") i++;
      else if (c === quote) quote = null;
      continue;
    }
    if (c === '"' || c === "'" || c === "`") {
      quote = c;
      continue;
    }
    if ("({[".includes(c)) depth++;
    else if (")}]".includes(c)) depth--;
    if (depth !== 0) continue;
    const rest = expr.slice(i);
    const comparison = /^(==|!=|>=|<=|>|<)/.exec(rest);
    const set = /^(and|or|unless)(?=[\s(])/.exec(rest);
    const op = comparison ?? (set && (i === 0 || /[\s)]/.test(expr[i - 1])) ? set : null);
    if (!op) continue;
    parts.push(expr.slice(start, i));
    i += op[0].length - 1;
    start = i + 1;
  }
  parts.push(expr.slice(start));
  return parts
    .map((part) =>
      part.trim()
        .replace(/^bool\s+/, "")
        .replace(/^(on|ignoring)\s*\([^)]*\)\s*/, "")
        .replace(/^(group_left|group_right)\s*(\([^)]*\))?\s*/, "")
        .trim()
    )
    .filter((part) => part !== "" && !/^[\d\s.*+\-/^()eE]+$/.test(part));
}

/** Metric names an expression reads (checkpoint_* and ckptkit_*; label values such as "ckptkit_serve" aside). */
function metricNames(expr: string): string[] {
  return [...expr.replace(/"(?:[^"\\]|\\.)*"/g, '""').matchAll(/\b(checkpoint_[a-z_]+|ckptkit_[a-z_]+)\b/g)].map((m) =>
    m[1]
  );
}

// ---------------------------------------------------------------------------
// Subprocesses

interface Output {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a program to completion, optionally feeding `stdin`. */
async function run(program: string, args: string[], options: { stdin?: string; cwd?: string } = {}): Promise<Output> {
  const child = new Deno.Command(program, {
    args,
    cwd: options.cwd ?? REPO,
    stdin: options.stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (options.stdin !== undefined) {
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(options.stdin));
    await writer.close();
  }
  const output = await child.output();
  const decoder = new TextDecoder();
  return { code: output.code, stdout: decoder.decode(output.stdout), stderr: decoder.decode(output.stderr) };
}

function describe(what: string, out: Output): string {
  return `${what} exited ${out.code}\nstdout:\n${out.stdout}\nstderr:\n${out.stderr}`;
}

// ---------------------------------------------------------------------------
// Static checks: no tools needed

Deno.test("the Grafana dashboard is importable and every query is filtered by job_id, run_id and root", async () => {
  const dashboard = await loadDashboard();
  assert.ok(dashboard.uid && dashboard.title);
  // the data source is the `datasource` template variable (tests/dashboard_test.ts checks it and the provisioning)
  const ds = { type: "prometheus", uid: "${datasource}" };
  const panels = allPanels(dashboard);
  assert.equal(new Set(panels.map((p) => p.id)).size, panels.length, "panel ids are unique");
  for (const panel of panels) {
    if (panel.type === "row") continue;
    assert.deepEqual(panel.datasource, ds, `panel ${panel.title}`);
    assert.ok((panel.targets ?? []).length > 0, `panel ${panel.title} has no query`);
  }
  const variables = dashboard.templating.list.filter((v) => v.type !== "datasource");
  assert.deepEqual(variables.map((v) => v.name), ["job_id", "run_id", "root"]);
  for (const variable of variables) {
    assert.equal(variable.type, "query");
    assert.deepEqual(variable.datasource, ds);
    assert.equal(variable.multi, true);
    assert.equal(variable.includeAll, true);
    assert.equal(variable.allValue, ".*", "All must match series whatever their job_id (or without one)");
    const q = typeof variable.query === "string" ? variable.query : variable.query?.query;
    assert.match(q ?? "", new RegExp(`^label_values\\(checkpoint_\\w+(\\{[^}]*\\})?, ${variable.name}\\)$`));
  }
  const targets = dashboardTargets(dashboard);
  const panelsWanted: [string, RegExp][] = [
    ["last success age", /time\(\) - .*checkpoint_last_success_timestamp/],
    ["step progress", /checkpoint_last_success_step/],
    ["write duration", /checkpoint_last_duration_seconds/],
    ["throughput", /rate\(checkpoint_write_bytes_total\{[^}]*\}\[\$__rate_interval\]\)/],
    ["failures by reason", /sum by \(reason\).*increase\(checkpoint_validation_failures_total/],
    ["corrupt table", /checkpoint_corrupt_detected\{[^}]*\}\) == 1$/],
    ["free bytes", /checkpoint_directory_free_bytes/],
    ["resume selections", /checkpoint_resume_selected_step/],
  ];
  for (const [what, pattern] of panelsWanted) {
    assert.ok(targets.some((t) => pattern.test(t.expr)), `no query for ${what}`);
  }
  const table = targets.find((t) => t.expr.includes("checkpoint_corrupt_detected"))!;
  assert.equal(table.format, "table");
  assert.equal(table.instant, true);
  const free = panels.find((p) => p.targets?.some((t) => t.expr.includes("checkpoint_directory_free_bytes")))!;
  // deno-lint-ignore no-explicit-any
  const steps = (free as any).fieldConfig.defaults.thresholds.steps as { value: number | null }[];
  assert.ok(steps.some((step) => (step.value ?? 0) > 0), "free bytes panel has a threshold");
  for (const target of targets) {
    const where = `${target.panel} ${target.refId}: ${target.expr}`;
    assert.deepEqual(target.datasource, ds, where);
    const names = metricNames(target.expr);
    assert.ok(names.length > 0, where);
    for (const name of names) assert.ok((METRIC_NAMES as readonly string[]).includes(name), `unknown metric ${name}`);
    // every selector carries the three filters, and every aggregation keeps roots apart
    const selectors = [...target.expr.matchAll(/\b(?:checkpoint|ckptkit)_[a-z_]+(\{[^}]*\})?/g)];
    for (const selector of selectors) {
      for (const label of ["job_id", "run_id", "root"]) {
        assert.ok(
          selector[1]?.includes(`${label}=~"$${label}"`),
          `${selector[0]} lacks the ${label} filter in ${where}`,
        );
      }
    }
    for (const [, by] of target.expr.matchAll(/\bby \(([^)]*)\)/g)) {
      if (by.includes("job_id")) assert.match(by, /^root, job_id, run_id\b/, `by (${by}) in ${where}`);
    }
    for (const range of target.expr.matchAll(/\[([^\]]+)\]/g)) {
      assert.ok(["$__rate_interval", "$__range"].includes(range[1]), `fixed range [${range[1]}] in ${where}`);
    }
  }
});

Deno.test("the alert rules read only ckptkit's metrics and label their alerts", async () => {
  const rules = await loadRules();
  assert.deepEqual(rules.map((rule) => rule.alert).sort(), Object.keys(EXPECTED_ALERTS).sort());
  const config = parseYaml(await Deno.readTextFile(PROMETHEUS_YML)) as { scrape_configs: { job_name: string }[] };
  const jobNames = config.scrape_configs.map((job) => job.job_name);
  for (const rule of rules) {
    for (const name of metricNames(rule.expr)) {
      assert.ok((METRIC_NAMES as readonly string[]).includes(name), `${rule.alert}: unknown metric ${name}`);
    }
    assert.ok(["warning", "critical"].includes(rule.labels?.severity ?? ""), `${rule.alert}: severity`);
    assert.ok(rule.annotations?.summary && rule.annotations?.description, `${rule.alert}: annotations`);
    assert.ok(vectorOperands(rule.expr).length > 0, rule.alert);
    if (rule.alert in SOURCE_ALERTS) {
      // about a target, a textfile or every source: no job_id to name, but what to look at
      for (const label of SOURCE_ALERTS[rule.alert]) {
        assert.ok(rule.annotations!.summary.includes(`$labels.${label}`), `${rule.alert}: summary names ${label}`);
      }
      for (const [, jobs] of rule.expr.matchAll(/\bjob=~?"([^"]*)"/g)) {
        for (const job of jobs.split("|")) assert.ok(jobNames.includes(job), `${rule.alert}: no scrape job ${job}`);
      }
    } else {
      assert.match(rule.expr, /by \(root, job_id, run_id\b/, `${rule.alert}: one alert per root, job and run`);
      for (const [, by] of rule.expr.matchAll(/\b(?:by|on) \(([^)]*)\)/g)) {
        if (by.includes("job_id")) assert.match(by, /^root, job_id, run_id\b/, `${rule.alert}: (${by})`);
      }
      assert.match(rule.annotations!.description, /\$labels\.root/, `${rule.alert}: description names the root`);
      assert.match(rule.annotations!.summary, /\$labels\.job_id/, `${rule.alert}: summary`);
      assert.match(rule.annotations!.description, /\$labels\.run_id/, `${rule.alert}: description`);
    }
  }
  assert.deepEqual(vectorOperands('time() - max by (job_id) (m{a=~"x|y"}) > 2 * 3600'), [
    'time() - max by (job_id) (m{a=~"x|y"})',
  ]);
  assert.deepEqual(vectorOperands("a == 0 and on (x, y) max by (x, y) (b) > 0"), ["a", "max by (x, y) (b)"]);
});

// ---------------------------------------------------------------------------
// promtool

Deno.test({
  name: "promtool accepts the example config, the rules and the rules' unit tests",
  ignore: skipPromtool,
  async fn() {
    assertTools(["promtool"]);
    await using tmp = await tempDir();
    // the config names alerts.yml relative to itself: check it where it is and from a copy elsewhere
    await Deno.copyFile(PROMETHEUS_YML, `${tmp.path}/prometheus.yml`);
    await Deno.copyFile(ALERTS_YML, `${tmp.path}/alerts.yml`);
    for (const config of [PROMETHEUS_YML, `${tmp.path}/prometheus.yml`]) {
      const checked = await run("promtool", ["check", "config", config]);
      assert.equal(checked.code, 0, describe("promtool check config", checked));
      assert.match(checked.stdout, new RegExp(`SUCCESS: ${Object.keys(EXPECTED_ALERTS).length} rules found`));
    }
    const rules = await run("promtool", ["check", "rules", ALERTS_YML]);
    assert.equal(rules.code, 0, describe("promtool check rules", rules));
    const tested = await run("promtool", ["test", "rules", ALERTS_TEST_YML]);
    assert.equal(tested.code, 0, describe("promtool test rules", tested));
    assert.match(tested.stdout, /SUCCESS/);
    // every alert has a unit test that expects it firing and one that expects it quiet
    const doc = parseYaml(await Deno.readTextFile(ALERTS_TEST_YML)) as {
      tests: { alert_rule_test: { alertname: string; exp_alerts: unknown[] }[] }[];
    };
    const cases = doc.tests.flatMap((t) => t.alert_rule_test);
    for (const rule of await loadRules()) {
      const mine = cases.filter((c) => c.alertname === rule.alert);
      assert.ok(mine.some((c) => c.exp_alerts.length > 0), `${rule.alert} is never tested firing`);
      assert.ok(mine.some((c) => c.exp_alerts.length === 0), `${rule.alert} is never tested quiet`);
    }
  },
});

/** A root with valid step-10 and step-30, step-20 quarantined and step-40 (named by latest) corrupt. */
async function buildRoot(root: string, jobId: string, runId: string): Promise<void> {
  for (const step of [10, 20, 30, 40]) {
    const written = await runCli([
      "write",
      "--root",
      root,
      "--job-id",
      jobId,
      "--run-id",
      runId,
      "--step",
      String(step),
      "--files",
      "2",
      "--file-size",
      "4KiB",
      "--log-level",
      "warn",
    ]);
    assert.equal(written.code, 0, written.stderr);
  }
  const quarantined = await runCli(["quarantine", `${root}/step-20`, "--reason", "test", "--log-level", "error"]);
  assert.equal(quarantined.code, 0, quarantined.stderr);
  const shard = (await Array.fromAsync(Deno.readDir(`${root}/step-40`))).find((e) => e.name.endsWith(".bin"))!;
  await flipByte(`${root}/step-40/${shard.name}`, 100);
}

Deno.test({
  name: "promtool check metrics accepts the textfile emit-metrics writes, label escaping included",
  ignore: skipPromtool,
  async fn() {
    assertTools(["promtool"]);
    await using tmp = await tempDir();
    const root = `${tmp.path}/root`;
    await buildRoot(root, "nlp/llama-7b", "run-1");
    for (const [name, extra] of [["plain", []], ["escaped", ["--job-id", 'we"ird\\job é', "--run-id", "r\\1"]]]) {
      const textfile = `${tmp.path}/${name}.prom`;
      const emitted = await runCli(["emit-metrics", root, "--textfile", textfile, "--log-level", "error", ...extra]);
      assert.equal(emitted.code, 1, `the scan finds the corrupt step-40: ${emitted.stderr}`);
      const text = await Deno.readTextFile(textfile);
      for (const metric of METRIC_NAMES) assert.match(text, new RegExp(`^${metric}\\{`, "m"), metric);
      const linted = await run("promtool", ["check", "metrics"], { stdin: text });
      assert.equal(linted.code, 0, describe(`promtool check metrics (${name})`, linted));
      assert.equal((linted.stdout + linted.stderr).trim(), "", "no lint findings");
    }
  },
});

// ---------------------------------------------------------------------------
// The real servers

/**
 * What each alert's expression must give on the test root (step-40 corrupt
 * and named by latest, step-20 quarantined, step-10 and step-30 valid and
 * minutes old, validated seconds ago): true when it must return samples,
 * false when it must return none, null when it depends on the machine (the
 * free space of the temporary folder).
 */
const EXPECTED_ALERTS: Record<string, boolean | null> = {
  CheckpointStale: false,
  CheckpointCorruptDetected: true,
  CheckpointNewCorruptionDetected: true,
  CheckpointLatestInvalid: true,
  CheckpointDiskSpaceLow: null,
  CheckpointValidationStale: false,
  CheckpointDiskFullPredicted: null,
  CheckpointExporterDown: false,
  CheckpointTextfileStale: false,
  CheckpointMetricsAbsent: false,
};

/**
 * The alerts about the metrics' sources rather than one job's checkpoints,
 * each with the labels its summary names.
 */
const SOURCE_ALERTS: Record<string, string[]> = {
  CheckpointExporterDown: ["job", "instance"],
  CheckpointTextfileStale: ["file", "instance"],
  CheckpointMetricsAbsent: [],
};

Deno.test({
  name: "node_exporter, Pushgateway, ckptkit serve and Prometheus: every dashboard and alert query returns data",
  ignore: skipServers,
  sanitizeResources: true,
  sanitizeOps: true,
  async fn() {
    assertTools(SERVER_TOOLS);
    const started = Date.now();
    const deadline = started + 60_000;
    await using tmp = await tempDir();
    const root = `${tmp.path}/root`;
    const textDir = `${tmp.path}/textfile`;
    const logs = `${tmp.path}/logs`;
    await Deno.mkdir(textDir);
    await Deno.mkdir(logs);
    const JOB = "nlp/llama-7b";
    const RUN = "run-1";
    await buildRoot(root, JOB, RUN);

    const [nodePort, pushPort, servePort, promPort] = freePorts(4);
    const prom = `http://127.0.0.1:${promPort}`;
    const pushgateway = `http://127.0.0.1:${pushPort}`;

    // Prometheus runs the example config with its targets moved to the chosen ports and 1 s intervals
    const config = parseYaml(await Deno.readTextFile(PROMETHEUS_YML)) as {
      global: Record<string, string>;
      rule_files: string[];
      scrape_configs: { job_name: string; static_configs: { targets: string[] }[]; [key: string]: unknown }[];
    };
    const ports: Record<string, number> = { "127.0.0.1:9100": nodePort, "127.0.0.1:9091": pushPort };
    ports["127.0.0.1:9478"] = servePort;
    config.global = { scrape_interval: "1s", scrape_timeout: "1s", evaluation_interval: "1s" };
    assert.deepEqual(config.rule_files, ["alerts.yml"]);
    for (const job of config.scrape_configs) {
      delete job.scrape_interval;
      delete job.scrape_timeout;
      for (const group of job.static_configs) {
        group.targets = group.targets.map((target) => {
          assert.ok(target in ports, `unexpected target ${target} in examples/prometheus.yml`);
          return `127.0.0.1:${ports[target]}`;
        });
      }
    }
    const jobOf = (port: number) =>
      config.scrape_configs.find((job) => job.static_configs.some((g) => g.targets.includes(`127.0.0.1:${port}`)))!;
    assert.equal(jobOf(pushPort).honor_labels, true, "the Pushgateway job honors labels");
    const nodeJob = jobOf(nodePort).job_name;
    const serveJob = jobOf(servePort).job_name;
    await Deno.writeTextFile(`${tmp.path}/prometheus.yml`, stringifyYaml(config));
    await Deno.copyFile(ALERTS_YML, `${tmp.path}/alerts.yml`);

    const servers: Server[] = [];
    try {
      servers.push(
        await startServer(
          "node_exporter",
          serverCommand("prometheus-node-exporter", [
            `--web.listen-address=127.0.0.1:${nodePort}`,
            "--collector.disable-defaults",
            "--collector.textfile",
            `--collector.textfile.directory=${textDir}`,
          ]),
          logs,
        ),
        await startServer(
          "pushgateway",
          // Debian's build persists to /var/lib/prometheus/pushgateway.data by default: keep it in memory
          serverCommand("prometheus-pushgateway", [
            `--web.listen-address=127.0.0.1:${pushPort}`,
            "--persistence.file=",
          ]),
          logs,
        ),
        await startServer(
          "ckptkit_serve",
          cliCommand(["serve", root, "--listen", `127.0.0.1:${servePort}`, "--interval", "2s", "--log-level", "warn"]),
          logs,
        ),
        await startServer(
          "prometheus",
          serverCommand("prometheus", [
            `--config.file=${tmp.path}/prometheus.yml`,
            `--storage.tsdb.path=${tmp.path}/tsdb`,
            `--web.listen-address=127.0.0.1:${promPort}`,
          ]),
          logs,
        ),
      );
      const ready = async (what: string, url: string, ok: (body: string) => boolean = () => true) =>
        await until(what, deadline, async () => {
          const exited = servers.find((s) => s.exitCode !== null);
          if (exited) throw new Fatal(`${exited.name} exited with ${exited.exitCode}`);
          const { status, body } = await get(url);
          return status === 200 && ok(body) ? true : undefined;
        });
      await Promise.all([
        ready("node_exporter", `http://127.0.0.1:${nodePort}/metrics`),
        ready("the Pushgateway", `${pushgateway}/-/ready`),
        ready("ckptkit serve's first pass", `http://127.0.0.1:${servePort}/healthz`, (body) => body.startsWith("ok")),
        ready("Prometheus", `${prom}/-/ready`),
      ]);
      const readyAt = Date.now();

      // feed node_exporter and the Pushgateway; the scan finds step-40 corrupt (exit 1)
      const emit = async () => {
        const emitted = await runCli([
          "emit-metrics",
          root,
          "--textfile",
          `${textDir}/ckptkit.prom`,
          "--pushgateway",
          pushgateway,
          "--instance",
          "test-node",
          "--log-level",
          "error",
        ]);
        assert.equal(emitted.code, 1, describe("emit-metrics", emitted));
        assert.match(
          emitted.stdout,
          /pushed to .*\/metrics\/job\/ckptkit\/job_id@base64\/[^/]+\/root@base64\/[^/]+\/instance@base64\//,
        );
      };
      await emit();

      const PUSHED_JOB = "ckptkit"; // the job label of the push, kept by honor_labels
      const sources = [nodeJob, PUSHED_JOB, serveJob].sort();
      await until("Prometheus to scrape ckptkit's metrics from all three ways", deadline, async () => {
        const jobs = (await query(prom, "count by (job) (count_over_time(checkpoint_latest_valid[1m]) >= 2)"))
          .map((s) => s.metric.job).sort();
        return JSON.stringify(jobs) === JSON.stringify(sources) ? true : undefined;
      });
      // step-40 was counted before Prometheus watched; it is damaged again (a new corruption), so every way's counter rises
      const bins = (await Array.fromAsync(Deno.readDir(`${root}/step-40`))).filter((e) => e.name.endsWith(".bin"));
      await flipByte(`${root}/step-40/${bins[bins.length - 1].name}`, 200);
      await emit();
      await until("checkpoint_validation_failures_total to rise in all three ways", deadline, async () => {
        const jobs = (await query(
          prom,
          'count by (job) (increase(checkpoint_validation_failures_total{reason="hash_mismatch"}[1m]) > 0)',
        )).map((s) => s.metric.job).sort();
        return JSON.stringify(jobs) === JSON.stringify(sources) ? true : undefined;
      });
      const dataAt = Date.now();

      // every target is up; node_exporter parsed the textfile
      const up = await query(prom, "up");
      assert.deepEqual(
        up.map((s) => [s.metric.job, s.value[1]]).sort(),
        [
          [nodeJob, "1"],
          ["pushgateway", "1"],
          [serveJob, "1"],
        ].sort(),
      );
      const textfileErrors = await query(prom, `node_textfile_scrape_error{job="${nodeJob}"}`);
      assert.deepEqual(textfileErrors.map((s) => s.value[1]), ["0"], "node_exporter read the textfile without error");

      // honor_labels: the pushed job and instance labels survive, nothing is renamed to exported_*
      const pushed = await query(prom, 'checkpoint_latest_valid{instance="test-node"}');
      assert.equal(pushed.length, 1, JSON.stringify(pushed));
      assert.deepEqual(pushed[0].metric, {
        __name__: "checkpoint_latest_valid",
        instance: "test-node",
        job: PUSHED_JOB,
        root,
        job_id: JOB,
        run_id: RUN,
      });
      for (const sample of await query(prom, '{instance="test-node"}')) {
        assert.equal(sample.metric.job_id, JOB, `${sample.metric.__name__} from the Pushgateway carries job_id`);
        assert.ok(!Object.keys(sample.metric).some((k) => k.startsWith("exported_")), JSON.stringify(sample.metric));
      }

      // every dashboard query parses and returns data
      const dashboard = await loadDashboard();
      const results = new Map<string, Sample[]>();
      for (const target of dashboardTargets(dashboard)) {
        const expr = grafanaExpr(target.expr);
        const samples = await query(prom, expr);
        assert.ok(samples.length > 0, `dashboard "${target.panel}" ${target.refId} returned nothing: ${expr}`);
        results.set(target.expr, samples);
      }
      const valueOf = (pattern: RegExp) => {
        const hit = [...results].find(([expr]) => pattern.test(expr));
        assert.ok(hit, String(pattern));
        return hit[1];
      };
      assert.deepEqual(
        valueOf(/\(checkpoint_resume_selected_step\{/).map((s) => [s.metric.job_id, s.metric.run_id, s.value[1]]),
        [[JOB, RUN, "30"]],
        "resume falls back to step-30",
      );
      assert.deepEqual(
        valueOf(/checkpoint_corrupt_detected/).map((s) => [s.metric.checkpoint, s.metric.status]).sort(),
        [["corrupt/step-20", "quarantined"], ["step-40", "invalid"]],
      );
      assert.deepEqual(
        Object.fromEntries(valueOf(/checkpoint_inventory/).map((s) => [s.metric.status, s.value[1]])),
        { valid: "2", invalid: "1", quarantined: "1", stale_staging: "0" },
      );
      assert.ok(
        valueOf(/increase\(checkpoint_validation_failures_total\{[^}]*\}\[\$__rate_interval\]/)
          .some((s) => s.metric.reason === "hash_mismatch" && Number(s.value[1]) > 0),
      );

      // the variables' label_values queries find the job and the run
      for (const variable of dashboard.templating.list.filter((v) => v.type === "query")) {
        const q = typeof variable.query === "string" ? variable.query : variable.query!.query;
        const [, selector, label] = /^label_values\((.+), (\w+)\)$/.exec(q)!;
        const { body } = await get(
          `${prom}/api/v1/label/${label}/values?match[]=${encodeURIComponent(grafanaExpr(selector))}`,
        );
        const values = JSON.parse(body).data as string[];
        assert.ok(values.includes({ job_id: JOB, run_id: RUN, root }[label]!), `${variable.name}: ${body}`);
      }

      // every alert expression parses; the data it reads exists; it is true exactly when the root says so
      for (const rule of await loadRules()) {
        const firing = await query(prom, rule.expr);
        for (const operand of vectorOperands(rule.expr)) {
          // absent_over_time(x[w]) is empty exactly when x has data: ask for that data instead
          const samples = await query(prom, operand.replace(/^absent_over_time\(/, "present_over_time("));
          assert.ok(samples.length > 0, `${rule.alert}: no data for ${operand}`);
        }
        const expected = EXPECTED_ALERTS[rule.alert];
        if (expected === true) {
          assert.ok(firing.length > 0, `${rule.alert} should be true: ${rule.expr}`);
          for (const sample of firing) {
            assert.equal(sample.metric.job_id, JOB, `${rule.alert} keeps job_id`);
            assert.equal(sample.metric.run_id, RUN, `${rule.alert} keeps run_id`);
            assert.equal(sample.metric.root, root, `${rule.alert} keeps root`);
          }
          assert.equal(firing.length, new Set(firing.map((s) => JSON.stringify(s.metric))).size);
        } else if (expected === false) {
          assert.deepEqual(firing, [], `${rule.alert} should be false: ${rule.expr}`);
        }
      }
      const corrupt = await query(prom, alertExpr(await loadRules(), "CheckpointCorruptDetected"));
      assert.deepEqual(corrupt.map((s) => s.metric.checkpoint), ["step-40"], "one alert, deduplicated across sources");

      // Prometheus evaluates the loaded rules without error and raises CheckpointCorruptDetected
      const rulesDoc = JSON.parse((await get(`${prom}/api/v1/rules`)).body);
      const loaded = rulesDoc.data.groups.flatMap((
        g: { rules: { name: string; health: string; lastError?: string }[] },
      ) => g.rules);
      assert.deepEqual(loaded.map((r: { name: string }) => r.name).sort(), Object.keys(EXPECTED_ALERTS).sort());
      for (const rule of loaded) assert.notEqual(rule.health, "err", `${rule.name}: ${rule.lastError}`);
      const alert = await until("CheckpointCorruptDetected in /api/v1/alerts", deadline, async () => {
        return (await activeAlerts(prom)).find((a) => a.labels.alertname === "CheckpointCorruptDetected");
      });
      assert.ok(["pending", "firing"].includes(alert.state), alert.state);
      assert.equal(alert.labels.job_id, JOB);
      assert.equal(alert.labels.checkpoint, "step-40");
      assert.equal(alert.labels.severity, "critical");
      assert.match(alert.annotations.summary, new RegExp(`step-40 in job ${JOB} run ${RUN}`));

      // the live exporter's text passes promtool's lint too
      const served = await get(`http://127.0.0.1:${servePort}/metrics`);
      const linted = await run("promtool", ["check", "metrics"], { stdin: served.body });
      assert.equal(linted.code, 0, describe("promtool check metrics on ckptkit serve", linted));

      console.log(
        `servers ready in ${((readyAt - started) / 1000).toFixed(1)} s, data in Prometheus after ` +
          `${((dataAt - readyAt) / 1000).toFixed(1)} s, all checks in ${((Date.now() - started) / 1000).toFixed(1)} s`,
      );
    } catch (err) {
      for (const server of servers) console.error(`--- ${server.name} log:\n${await tail(server.log)}`);
      throw err;
    } finally {
      for (const server of servers.reverse()) await stopServer(server);
    }
  },
});

/**
 * examples/alerts.yml for a test on 1 s intervals: every `for` cut to 1 s and
 * the window of absent_over_time to 5 s; the expressions are otherwise
 * unchanged.
 */
async function quickRules(): Promise<string> {
  const doc = parseYaml(await Deno.readTextFile(ALERTS_YML)) as { groups: { rules: Rule[] }[] };
  for (const rule of doc.groups.flatMap((group) => group.rules)) {
    if (rule.for) rule.for = "1s";
    rule.expr = rule.expr.replace(/\babsent_over_time\((\w+)\[\w+\]\)/g, "absent_over_time($1[5s])");
  }
  assert.match(stringifyYaml(doc), /absent_over_time\(\w+\[5s\]\)/);
  return stringifyYaml(doc);
}

Deno.test({
  name: "a dead exporter alerts: ckptkit serve killed, the textfile no longer rewritten, then no series at all",
  ignore: skipServers,
  sanitizeResources: true,
  sanitizeOps: true,
  async fn() {
    assertTools(["prometheus", "prometheus-node-exporter"]);
    const started = Date.now();
    const deadline = started + 5 * 60_000; // a backstop against hanging, not a timing requirement
    await using tmp = await tempDir();
    const root = `${tmp.path}/root`;
    const textDir = `${tmp.path}/textfile`;
    const textfile = `${textDir}/ckptkit.prom`;
    const logs = `${tmp.path}/logs`;
    await Deno.mkdir(textDir);
    await Deno.mkdir(logs);
    for (const [step, files] of [[10, 2], [20, 3]]) {
      const written = await runCli([
        "write",
        "--root",
        root,
        "--job-id",
        "demo",
        "--run-id",
        "run-1",
        "--step",
        String(step),
        "--files",
        String(files),
        "--file-size",
        "4KiB",
        "--log-level",
        "warn",
      ]);
      assert.equal(written.code, 0, written.stderr);
    }
    const newestBytes = JSON.parse(await Deno.readTextFile(`${root}/step-20/ckptkit.manifest.json`)).total_bytes;
    assert.ok(newestBytes > 3 * 4096, String(newestBytes)); // three 4 KiB shards and the write command's extras

    // the example config without the Pushgateway: serve and node_exporter are the only sources
    const [nodePort, servePort, promPort] = freePorts(3);
    const prom = `http://127.0.0.1:${promPort}`;
    const config = parseYaml(await Deno.readTextFile(PROMETHEUS_YML)) as {
      global: Record<string, string>;
      scrape_configs: { job_name: string; static_configs: { targets: string[] }[] }[];
    };
    const ports: Record<string, number> = { "127.0.0.1:9100": nodePort, "127.0.0.1:9478": servePort };
    config.global = { scrape_interval: "1s", scrape_timeout: "1s", evaluation_interval: "1s" };
    config.scrape_configs = config.scrape_configs.filter((job) =>
      job.static_configs.every((group) => group.targets.every((target) => target in ports))
    );
    for (const job of config.scrape_configs) {
      for (const group of job.static_configs) group.targets = group.targets.map((t) => `127.0.0.1:${ports[t]}`);
    }
    const jobOf = (port: number) =>
      config.scrape_configs.find((job) => job.static_configs.some((g) => g.targets.includes(`127.0.0.1:${port}`)))!
        .job_name;
    const [nodeJob, serveJob] = [jobOf(nodePort), jobOf(servePort)];
    await Deno.writeTextFile(`${tmp.path}/prometheus.yml`, stringifyYaml(config));
    await Deno.writeTextFile(`${tmp.path}/alerts.yml`, await quickRules());

    const servers: Server[] = [];
    try {
      const nodeExporter = await startServer(
        "node_exporter",
        serverCommand("prometheus-node-exporter", [
          `--web.listen-address=127.0.0.1:${nodePort}`,
          "--collector.disable-defaults",
          "--collector.textfile",
          `--collector.textfile.directory=${textDir}`,
        ]),
        logs,
      );
      servers.push(nodeExporter);
      const serve = await startServer(
        "ckptkit_serve",
        cliCommand(["serve", root, "--listen", `127.0.0.1:${servePort}`, "--interval", "2s", "--log-level", "warn"]),
        logs,
      );
      servers.push(serve);
      servers.push(
        await startServer(
          "prometheus",
          serverCommand("prometheus", [
            `--config.file=${tmp.path}/prometheus.yml`,
            `--storage.tsdb.path=${tmp.path}/tsdb`,
            `--web.listen-address=127.0.0.1:${promPort}`,
          ]),
          logs,
        ),
      );
      const emitted = await runCli(["emit-metrics", root, "--textfile", textfile, "--log-level", "error"]);
      assert.equal(emitted.code, 0, describe("emit-metrics", emitted));

      // healthy: both sources scraped, the new gauge arrives through both, no source alert
      await until("checkpoint_last_size_bytes from serve and node_exporter", deadline, async () => {
        const exited = servers.find((s) => s.exitCode !== null);
        if (exited) throw new Fatal(`${exited.name} exited with ${exited.exitCode}`);
        const sizes = await query(prom, "checkpoint_last_size_bytes");
        const jobs = sizes.map((sample) => sample.metric.job).sort();
        if (JSON.stringify(jobs) !== JSON.stringify([nodeJob, serveJob].sort())) return undefined;
        for (const sample of sizes) {
          assert.equal(Number(sample.value[1]), newestBytes, JSON.stringify(sample));
          assert.deepEqual([sample.metric.job_id, sample.metric.run_id], ["demo", "run-1"]);
        }
        return true;
      });
      const sourceAlerts = async () =>
        (await activeAlerts(prom)).filter((alert) => alert.labels.alertname in SOURCE_ALERTS);
      // (before the first scrape CheckpointMetricsAbsent may have fired: wait for it to resolve)
      await until("no source alert while both sources are healthy", deadline, async () => {
        const active = await sourceAlerts();
        if (active.some((a) => a.labels.alertname !== "CheckpointMetricsAbsent")) {
          throw new Fatal(`source alert while healthy: ${JSON.stringify(active)}`);
        }
        return active.length === 0 ? true : undefined;
      });
      const healthyAt = Date.now();

      // kill serve (the process this test started): only `up` is left of it
      serve.child.kill("SIGKILL");
      await serve.child.status;
      const firing = (name: string, match: (alert: Alert) => boolean = () => true) => async () =>
        (await activeAlerts(prom)).find((a) => a.labels.alertname === name && a.state === "firing" && match(a));
      const down = await until("CheckpointExporterDown for ckptkit serve", deadline, firing("CheckpointExporterDown"));
      assert.deepEqual(down.labels, {
        alertname: "CheckpointExporterDown",
        severity: "warning",
        job: serveJob,
        instance: `127.0.0.1:${servePort}`,
      });
      assert.match(down.annotations.summary, new RegExp(`^Prometheus cannot scrape ${serveJob} target `));
      const downAt = Date.now();
      const stillActive = (await sourceAlerts()).map((a) => `${a.labels.alertname} ${a.labels.job ?? ""}`);
      assert.deepEqual(stillActive, [`CheckpointExporterDown ${serveJob}`], "node_exporter still serves the textfile");

      // the textfile stops being rewritten: backdate it two hours
      const twoHoursAgo = new Date(Date.now() - 2 * 3600_000);
      await Deno.utime(textfile, twoHoursAgo, twoHoursAgo);
      const stale = await until("CheckpointTextfileStale", deadline, firing("CheckpointTextfileStale"));
      assert.match(stale.labels.file, /(^|\/)ckptkit\.prom$/);
      assert.equal(stale.labels.instance, `127.0.0.1:${nodePort}`);
      const staleAt = Date.now();

      // the textfile goes too: no ckptkit series at all
      await Deno.remove(textfile);
      const absent = await until("CheckpointMetricsAbsent", deadline, firing("CheckpointMetricsAbsent"));
      assert.deepEqual(absent.labels, { alertname: "CheckpointMetricsAbsent", severity: "warning" });
      assert.ok(
        !(await activeAlerts(prom)).some((a) =>
          a.labels.alertname === "CheckpointExporterDown" && a.labels.job === nodeJob
        ),
        "node_exporter itself is up",
      );
      const s = (from: number, to: number) => `${((to - from) / 1000).toFixed(1)} s`;
      console.log(
        `healthy after ${s(started, healthyAt)}; after the kill CheckpointExporterDown fired in ${
          s(healthyAt, downAt)
        }, ` +
          `CheckpointTextfileStale ${s(downAt, staleAt)} after the backdating, CheckpointMetricsAbsent ` +
          `${s(staleAt, Date.now())} after the removal (1 s scrapes, for: 1s, absent window 5 s)`,
      );
    } catch (err) {
      for (const server of servers) console.error(`--- ${server.name} log:\n${await tail(server.log)}`);
      throw err;
    } finally {
      for (const server of servers.reverse()) await stopServer(server);
    }
  },
});

function alertExpr(rules: Rule[], name: string): string {
  return rules.find((rule) => rule.alert === name)!.expr;
}

Deno.test({
  name: "two roots of one job and run on one node: one textfile each in the collector folder, two series sets",
  ignore: skipServers,
  sanitizeResources: true,
  sanitizeOps: true,
  async fn() {
    assertTools(["prometheus", "prometheus-node-exporter"]);
    const started = Date.now();
    const deadline = started + 2 * 60_000; // a backstop against hanging, not a timing requirement
    await using tmp = await tempDir();
    const [rootA, rootB, rootC] = ["a", "b", "c"].map((name) => `${tmp.path}/${name}`);
    const textDir = `${tmp.path}/textfile`;
    const logs = `${tmp.path}/logs`;
    await Deno.mkdir(textDir);
    await Deno.mkdir(logs);
    await Deno.mkdir(rootC); // no checkpoint yet: no job_id or run_id to export
    // a and b: the same job and run (e.g. a root on local disk and its copy on shared storage)
    for (const [root, step] of [[rootA, 10], [rootB, 10], [rootB, 20]] as const) {
      const written = await runCli([
        "write",
        "--root",
        root,
        "--job-id",
        "demo",
        "--run-id",
        "run-1",
        "--step",
        String(step),
        "--files",
        "1",
        "--file-size",
        "4KiB",
        "--log-level",
        "warn",
      ]);
      assert.equal(written.code, 0, written.stderr);
    }
    const SCRATCH = "scratch"; // c's configured short name
    const emit = async (root: string, ...extra: string[]) => {
      const emitted = await runCli([
        "emit-metrics",
        root,
        "--textfile",
        textDir,
        "--json",
        "--log-level",
        "error",
        ...extra,
      ]);
      assert.equal(emitted.code, 0, describe("emit-metrics", emitted));
      return JSON.parse(emitted.stdout).textfile as string;
    };
    const files = [await emit(rootA), await emit(rootB), await emit(rootC, "--root-label", SCRATCH)];
    assert.deepEqual(files, [
      `${textDir}/${textfileName(rootA)}`,
      `${textDir}/${textfileName(rootB)}`,
      `${textDir}/${textfileName(rootC, SCRATCH)}`,
    ]);
    assert.equal(await emit(rootA), files[0], "the same root, the same file");
    assert.deepEqual(
      (await Array.fromAsync(Deno.readDir(textDir))).map((e) => e.name).sort(),
      files.map((f) => f.slice(textDir.length + 1)).sort(),
    );

    // the example config with node_exporter and two `ckptkit serve` targets, one per root
    const [nodePort, servePortA, servePortB, promPort] = freePorts(4);
    const prom = `http://127.0.0.1:${promPort}`;
    const config = parseYaml(await Deno.readTextFile(PROMETHEUS_YML)) as {
      global: Record<string, string>;
      scrape_configs: { job_name: string; static_configs: { targets: string[] }[] }[];
    };
    config.global = { scrape_interval: "1s", scrape_timeout: "1s", evaluation_interval: "1s" };
    config.scrape_configs = config.scrape_configs.filter((job) => ["node", "ckptkit_serve"].includes(job.job_name));
    assert.equal(config.scrape_configs.length, 2);
    for (const job of config.scrape_configs) {
      job.static_configs = [{
        targets: job.job_name === "node"
          ? [`127.0.0.1:${nodePort}`]
          : [`127.0.0.1:${servePortA}`, `127.0.0.1:${servePortB}`],
      }];
    }
    await Deno.writeTextFile(`${tmp.path}/prometheus.yml`, stringifyYaml(config));
    await Deno.copyFile(ALERTS_YML, `${tmp.path}/alerts.yml`);

    const servers: Server[] = [];
    try {
      const nodeExporter = await startServer(
        "node_exporter",
        serverCommand("prometheus-node-exporter", [
          `--web.listen-address=127.0.0.1:${nodePort}`,
          "--collector.disable-defaults",
          "--collector.textfile",
          `--collector.textfile.directory=${textDir}`,
        ]),
        logs,
      );
      servers.push(nodeExporter);
      for (const [name, root, port] of [["serve_a", rootA, servePortA], ["serve_b", rootB, servePortB]] as const) {
        servers.push(
          await startServer(
            name,
            cliCommand(["serve", root, "--listen", `127.0.0.1:${port}`, "--interval", "1h", "--log-level", "warn"]),
            logs,
          ),
        );
      }
      servers.push(
        await startServer(
          "prometheus",
          serverCommand("prometheus", [
            `--config.file=${tmp.path}/prometheus.yml`,
            `--storage.tsdb.path=${tmp.path}/tsdb`,
            `--web.listen-address=127.0.0.1:${promPort}`,
          ]),
          logs,
        ),
      );

      // every root arrives: a and b through node_exporter and their serve, c through node_exporter only
      const expected = { [rootA]: "2", [rootB]: "2", [SCRATCH]: "1" };
      const counts = await until("three roots in Prometheus", deadline, async () => {
        const exited = servers.find((s) => s.exitCode !== null);
        if (exited) throw new Fatal(`${exited.name} exited with ${exited.exitCode}`);
        const samples = await query(prom, "count by (root) (checkpoint_last_validation_timestamp)");
        const byRoot = Object.fromEntries(samples.map((s) => [s.metric.root, s.value[1]]));
        return JSON.stringify(byRoot, Object.keys(expected).sort()) ===
            JSON.stringify(expected, Object.keys(expected).sort())
          ? byRoot
          : undefined;
      });
      assert.deepEqual(counts, expected);

      // a and b share job_id and run_id, yet stay two series sets: one per root, deduplicated across the sources
      const steps = await query(
        prom,
        'max by (root, job_id, run_id) (checkpoint_last_success_step{job_id="demo", run_id="run-1"})',
      );
      assert.deepEqual(
        steps.map((s) => [s.metric.root, s.value[1]]).sort(),
        [[rootA, "10"], [rootB, "20"]].sort(),
      );
      const dashboard = await loadDashboard();
      const progress = dashboardTargets(dashboard).find((t) => t.panel === "Step progress")!;
      assert.equal((await query(prom, grafanaExpr(progress.expr))).length, 2, "the dashboard plots both roots");
      const rootVariable = dashboard.templating.list.find((v) => v.name === "root")!;
      const [, selector] = /^label_values\((.+), root\)$/.exec(
        typeof rootVariable.query === "string" ? rootVariable.query : rootVariable.query!.query,
      )!;
      const roots = JSON.parse(
        (await get(`${prom}/api/v1/label/root/values?match[]=${encodeURIComponent(grafanaExpr(selector))}`)).body,
      ).data;
      assert.deepEqual(roots.sort(), [rootA, rootB, SCRATCH].sort(), "the root variable lists every root");

      // node_exporter read all three files without error and dropped nothing as a duplicate
      const errors = await query(prom, "node_textfile_scrape_error");
      assert.deepEqual(errors.map((s) => s.value[1]), ["0"]);
      assert.equal((await query(prom, "node_textfile_mtime_seconds")).length, 3);
      assert.doesNotMatch(await Deno.readTextFile(nodeExporter.log), /collected before/);

      // c has no job_id or run_id yet: left out, not exported empty
      const scratch = await query(prom, `checkpoint_latest_valid{root="${SCRATCH}"}`);
      assert.deepEqual(scratch.map((s) => Object.keys(s.metric).sort()), [["__name__", "instance", "job", "root"]]);

      // no series carries an empty label, in Prometheus or on the wire
      const series = JSON.parse(
        (await get(`${prom}/api/v1/series?match[]=${encodeURIComponent('{__name__=~"checkpoint_.*|ckptkit_.*"}')}`))
          .body,
      ).data as Record<string, string>[];
      assert.ok(series.length > 3 * METRIC_NAMES.length / 2, String(series.length));
      for (const labels of series) {
        assert.ok(labels.root, `no root label: ${JSON.stringify(labels)}`);
        for (const [name, value] of Object.entries(labels)) {
          assert.notEqual(value, "", `${name}: ${JSON.stringify(labels)}`);
        }
      }
      for (const port of [nodePort, servePortA, servePortB]) {
        const exposed = (await get(`http://127.0.0.1:${port}/metrics`)).body.split("\n")
          .filter((line) => /^(checkpoint|ckptkit)_/.test(line));
        assert.ok(exposed.length > 0, `port ${port}`);
        for (const line of exposed) {
          assert.doesNotMatch(line, /=""/, `empty label on port ${port}`);
          assert.match(line, /[{,]root="/, `no root label on port ${port}`);
        }
      }
      console.log(
        `three roots (two of one job and run) in Prometheus after ${((Date.now() - started) / 1000).toFixed(1)} s`,
      );
    } catch (err) {
      for (const server of servers) console.error(`--- ${server.name} log:\n${await tail(server.log)}`);
      throw err;
    } finally {
      for (const server of servers.reverse()) await stopServer(server);
    }
  },
});

Deno.test({
  name: "a corrupt checkpoint scanned every second by textfile, push and serve counts once per reason in Prometheus",
  ignore: skipServers,
  sanitizeResources: true,
  sanitizeOps: true,
  async fn() {
    assertTools(SERVER_TOOLS);
    const deadline = Date.now() + 5 * 60_000; // a backstop against hanging, not a timing requirement
    await using tmp = await tempDir();
    const root = `${tmp.path}/root`;
    const textDir = `${tmp.path}/textfile`;
    const logs = `${tmp.path}/logs`;
    await Deno.mkdir(textDir);
    await Deno.mkdir(logs);
    for (const step of [10, 20]) {
      const written = await runCli([
        "write",
        "--root",
        root,
        "--job-id",
        "demo",
        "--run-id",
        "run-1",
        "--step",
        String(step),
        "--files",
        "2",
        "--file-size",
        "4KiB",
        "--log-level",
        "warn",
      ]);
      assert.equal(written.code, 0, written.stderr);
    }

    const [nodePort, pushPort, servePort, promPort] = freePorts(4);
    const prom = `http://127.0.0.1:${promPort}`;
    const pushgateway = `http://127.0.0.1:${pushPort}`;
    const config = parseYaml(await Deno.readTextFile(PROMETHEUS_YML)) as {
      global: Record<string, string>;
      scrape_configs: { job_name: string; static_configs: { targets: string[] }[]; [key: string]: unknown }[];
    };
    const ports: Record<string, number> = {
      "127.0.0.1:9100": nodePort,
      "127.0.0.1:9091": pushPort,
      "127.0.0.1:9478": servePort,
    };
    config.global = { scrape_interval: "1s", scrape_timeout: "1s", evaluation_interval: "1s" };
    for (const job of config.scrape_configs) {
      delete job.scrape_interval;
      delete job.scrape_timeout;
      for (const group of job.static_configs) group.targets = group.targets.map((t) => `127.0.0.1:${ports[t]}`);
    }
    const jobOf = (port: number) =>
      config.scrape_configs.find((job) => job.static_configs.some((g) => g.targets.includes(`127.0.0.1:${port}`)))!
        .job_name;
    const sources = [jobOf(nodePort), "ckptkit", jobOf(servePort)].sort();
    await Deno.writeTextFile(`${tmp.path}/prometheus.yml`, stringifyYaml(config));
    // the example rules with a 10 s window for new corruptions instead of 15 minutes
    const rules = (await quickRules()).replace(
      /increase\(checkpoint_validation_failures_total\[15m\]\)/,
      "increase(checkpoint_validation_failures_total[10s])",
    );
    assert.match(rules, /\[10s\]/);
    await Deno.writeTextFile(`${tmp.path}/alerts.yml`, rules);

    const servers: Server[] = [];
    let scanning = true;
    const loops: Promise<void>[] = [];
    const loopErrors: string[] = [];
    try {
      servers.push(
        await startServer(
          "node_exporter",
          serverCommand("prometheus-node-exporter", [
            `--web.listen-address=127.0.0.1:${nodePort}`,
            "--collector.disable-defaults",
            "--collector.textfile",
            `--collector.textfile.directory=${textDir}`,
          ]),
          logs,
        ),
        await startServer(
          "pushgateway",
          serverCommand("prometheus-pushgateway", [
            `--web.listen-address=127.0.0.1:${pushPort}`,
            "--persistence.file=",
          ]),
          logs,
        ),
        await startServer(
          "ckptkit_serve",
          cliCommand(["serve", root, "--listen", `127.0.0.1:${servePort}`, "--interval", "1s", "--log-level", "warn"]),
          logs,
        ),
        await startServer(
          "prometheus",
          serverCommand("prometheus", [
            `--config.file=${tmp.path}/prometheus.yml`,
            `--storage.tsdb.path=${tmp.path}/tsdb`,
            `--web.listen-address=127.0.0.1:${promPort}`,
          ]),
          logs,
        ),
      );
      // the textfile loop and the push loop: a full scan about every second each, alongside serve's own
      const loop = async (args: string[]) => {
        while (scanning) {
          const run = await runCli(["emit-metrics", root, ...args, "--log-level", "error"]);
          if (run.code !== 0 && run.code !== 1) loopErrors.push(describe("emit-metrics", run));
          await new Promise((resolve) => setTimeout(resolve, 1000));
        }
      };
      loops.push(loop(["--textfile", `${textDir}/ckptkit.prom`]));
      loops.push(loop(["--pushgateway", pushgateway, "--instance", "test-node"]));

      const FAILURES = "checkpoint_validation_failures_total";
      await until("a clean counter from all three ways", deadline, async () => {
        const exited = servers.find((s) => s.exitCode !== null);
        if (exited) throw new Fatal(`${exited.name} exited with ${exited.exitCode}`);
        const jobs =
          (await query(prom, `count by (job) (count_over_time(${FAILURES}{reason="hash_mismatch"}[1m]) >= 3)`))
            .map((s) => s.metric.job).sort();
        return JSON.stringify(jobs) === JSON.stringify(sources) ? true : undefined;
      });
      const before = Date.now();

      // two corruptions of step-20: two (checkpoint, reason) pairs
      const bins = (await Array.fromAsync(Deno.readDir(`${root}/step-20`))).filter((e) => e.name.endsWith(".bin"))
        .map((e) => e.name).sort();
      assert.ok(bins.length >= 2, bins.join());
      await flipByte(`${root}/step-20/${bins[0]}`, 100);
      await Deno.truncate(`${root}/step-20/${bins[1]}`, 5);
      const NEW = "CheckpointNewCorruptionDetected";
      const firing = await until(`${NEW} for both reasons`, deadline, async () => {
        const alerts = (await activeAlerts(prom)).filter((a) => a.labels.alertname === NEW && a.state === "firing");
        return alerts.length === 2 ? alerts : undefined;
      });
      assert.deepEqual(firing.map((a) => a.labels.reason).sort(), ["hash_mismatch", "size_mismatch"]);
      // ~20 s of scans by all three ways
      const scannedUntil = Date.now() + 20_000;
      await until("20 s of scans", deadline, () => Promise.resolve(Date.now() > scannedUntil ? true : undefined));
      const window = `${Math.ceil((Date.now() - before) / 1000) + 3}s`;
      const byReason = (expr: string) => async () =>
        Object.fromEntries(
          (await query(prom, expr)).map((s) => [s.metric.reason, Math.round(Number(s.value[1]))]).filter(([, v]) =>
            v !== 0
          ),
        );
      // each way exports the same state-derived counter: deduplicate the ways (max), then add up the reasons
      const increases = await byReason(
        `sum by (reason) (max by (root, job_id, run_id, reason) (increase(${FAILURES}[${window}])))`,
      )();
      assert.deepEqual(increases, { hash_mismatch: 1, size_mismatch: 1 }, "one per (checkpoint, reason)");
      const perWay = await query(prom, `sum by (job) (increase(${FAILURES}[${window}]))`);
      assert.deepEqual(perWay.map((s) => s.metric.job).sort(), sources);
      for (const sample of perWay) assert.equal(Math.round(Number(sample.value[1])), 2, JSON.stringify(sample));
      assert.deepEqual(await byReason(`max by (reason) (${FAILURES})`)(), { hash_mismatch: 1, size_mismatch: 1 });

      // quarantined: the scans go on, nothing new is counted, the alert resolves
      const quarantined = await runCli(["quarantine", `${root}/step-20`, "--reason", "test", "--log-level", "error"]);
      assert.equal(quarantined.code, 0, quarantined.stderr);
      await until(`${NEW} to resolve`, deadline, async () => {
        const alerts = (await activeAlerts(prom)).filter((a) => a.labels.alertname === NEW);
        return alerts.length === 0 ? true : undefined;
      });
      assert.deepEqual(await byReason(`max by (reason) (${FAILURES})`)(), { hash_mismatch: 1, size_mismatch: 1 });
      assert.deepEqual(await byReason(`min by (reason) (${FAILURES})`)(), { hash_mismatch: 1, size_mismatch: 1 });
      const state = JSON.parse(await Deno.readTextFile(`${root}/.ckptkit/state.json`));
      assert.deepEqual(state.counted_failures, {}, "the quarantined checkpoint's keys are pruned");
      assert.deepEqual(loopErrors, []);
    } catch (err) {
      for (const server of servers) console.error(`--- ${server.name} log:\n${await tail(server.log)}`);
      throw err;
    } finally {
      scanning = false;
      await Promise.allSettled(loops);
      for (const server of servers.reverse()) await stopServer(server);
    }
  },
});
