/**
 * The Grafana dashboard and the provisioning example of examples/grafana/.
 *
 * - The dashboard is type-checked against Grafana's own published types, the
 *   npm package `@grafana/schema` (pinned in deno.json, types plus some JS; it
 *   loads under Deno as it is). It cannot simply be imported with
 *   `with { type: "json" }` and assigned to `Dashboard`: a JSON module's
 *   strings are typed `string`, which is assignable neither to Grafana's
 *   string enums (`FieldColorModeId`, `ThresholdsMode`, ...) nor to its
 *   literal unions (`VariableType`), and an import is not checked for unknown
 *   keys. So the test writes the JSON as an object literal typed
 *   `DashboardJson` (tests/_dashboard_types.ts: `Dashboard` with its enums as
 *   their string values) and runs `deno check` on it: literal types, enum
 *   values, required keys and excess property checks, panel by panel. A
 *   spoiled copy must fail the same check, so the types cannot silently
 *   decay to `any`. Panel `options` and `fieldConfig.defaults.custom` are
 *   `Record<string, unknown>` in `Dashboard` and stay unchecked: the 13.x
 *   per-panel types (`.../panelcfg/x/*PanelCfg_types.gen`) describe the newest
 *   panels and reject options Grafana 10/11 still use (the table's `footer`),
 *   which newer Grafana migrates on load.
 * - Every datasource reference is the `datasource` template variable: file and
 *   sidecar provisioning do not substitute `__inputs` (`${DS_PROMETHEUS}`
 *   would show "Datasource ${DS_PROMETHEUS} was not found").
 * - The provisioning example: the datasource is one the variable can select,
 *   and the dashboards folder installed as the provider file's header says is
 *   the folder its provider reads.
 *
 * No real Grafana: Debian has no `grafana` package (`apt-cache search grafana`
 * lists only ceph-grafana-dashboards and Go libraries) and Grafana's own
 * package repository is not reachable here, so provisioning is checked on the
 * files, not by starting a server. The PromQL of every panel is run against a
 * real Prometheus by tests/prometheus_test.ts.
 */

import assert from "node:assert/strict";
import { pathToFileURL } from "node:url";
import { parse as parseYaml } from "yaml";
import { REPO, tempDir } from "./_helpers.ts";

const DASHBOARDS = `${REPO}/dashboards`;
const DASHBOARD = `${DASHBOARDS}/grafana_checkpoint_health.json`;
const GRAFANA_EXAMPLES = `${REPO}/examples/grafana`;
const DATASOURCE_YML = `${GRAFANA_EXAMPLES}/datasource.yml`;
const DASHBOARDS_YML = `${GRAFANA_EXAMPLES}/dashboards.yml`;

/** The reference every panel, target and query variable uses. */
const DS_REF = { type: "prometheus", uid: "${datasource}" };

// deno-lint-ignore no-explicit-any
type Json = any;

async function readJson(path: string): Promise<Json> {
  return JSON.parse(await Deno.readTextFile(path));
}

/** Every object in `value`, depth first, with its JSON path. */
function* objects(value: Json, path = "$"): Generator<[string, Record<string, Json>]> {
  if (Array.isArray(value)) {
    for (const [i, item] of value.entries()) yield* objects(item, `${path}[${i}]`);
  } else if (value !== null && typeof value === "object") {
    yield [path, value];
    for (const [key, item] of Object.entries(value)) yield* objects(item, `${path}.${key}`);
  }
}

/** Every panel, rows' nested panels included. */
function allPanels(dashboard: Json): Json[] {
  return dashboard.panels.flatMap((panel: Json) => [panel, ...(panel.panels ?? [])]);
}

/** `deno check` of `dashboard` written as a literal typed `DashboardJson`; the check's output when it fails. */
async function typeCheck(dir: string, name: string, dashboard: Json): Promise<{ ok: boolean; output: string }> {
  const file = `${dir}/${name}.ts`;
  const types = pathToFileURL(`${REPO}/tests/_dashboard_types.ts`).href;
  await Deno.writeTextFile(
    file,
    `import type { DashboardJson } from ${JSON.stringify(types)};\n\n` +
      `export const dashboard: DashboardJson = ${JSON.stringify(dashboard, null, 2)};\n`,
  );
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["check", "--quiet", "--frozen", "--config", `${REPO}/deno.json`, file],
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  return { ok: out.success, output: decoder.decode(out.stdout) + decoder.decode(out.stderr) };
}

Deno.test("the dashboard type-checks against Grafana's published schema types (@grafana/schema)", async () => {
  await using tmp = await tempDir();
  const dashboard = await readJson(DASHBOARD);
  // a spoiled copy: a misspelled key, an enum value Grafana does not have, a string where a number belongs
  const spoiled = structuredClone(dashboard);
  spoiled.panels[0].gridPosition = spoiled.panels[0].gridPos;
  spoiled.panels[1].fieldConfig.defaults.thresholds.mode = "absolut";
  spoiled.panels[2].gridPos.w = "12";
  const [good, bad] = await Promise.all([typeCheck(tmp.path, "good", dashboard), typeCheck(tmp.path, "bad", spoiled)]);
  assert.ok(good.ok, good.output);
  assert.ok(!bad.ok, "the spoiled copy type-checks: the schema types are not in force");
  for (
    const error of [
      "'\"gridPosition\"' does not exist",
      `'"absolut"' is not assignable`,
      "not assignable to type 'number'",
    ]
  ) {
    assert.ok(bad.output.includes(error), `${error} not reported:\n${bad.output}`);
  }
});

Deno.test("every datasource reference is the datasource template variable; no import placeholders remain", async () => {
  const text = await Deno.readTextFile(DASHBOARD);
  assert.ok(!text.includes("${DS_"), "an __inputs placeholder remains: provisioning would not find that data source");
  const dashboard = JSON.parse(text);
  for (const key of ["__inputs", "__requires", "__elements"]) assert.ok(!(key in dashboard), key);

  const variables: Json[] = dashboard.templating.list;
  const dsVariables = variables.filter((v) => v.type === "datasource");
  assert.equal(dsVariables.length, 1);
  const [dsVariable] = dsVariables;
  assert.equal(dsVariable.name, "datasource");
  assert.equal(dsVariable.query, "prometheus", "it lists Prometheus data sources");
  assert.equal(dsVariable.multi, false);
  assert.equal(dsVariable.includeAll, false);
  assert.equal(dsVariable.current, undefined, "no data source of this machine's Grafana is baked in");
  assert.equal(variables[0], dsVariable, "it comes before the variables that query through it");

  const refs = [...objects(dashboard)].filter(([, object]) => "datasource" in object);
  for (const [path, object] of refs) assert.deepEqual(object.datasource, DS_REF, path);
  const panels = allPanels(dashboard).filter((panel) => panel.type !== "row");
  assert.equal(
    refs.length,
    panels.length + panels.flatMap((panel) => panel.targets).length + variables.length - 1,
    "every panel, every target and every query variable names the data source",
  );
});

Deno.test('every panel query filters root=~"$root" and keeps roots apart; the root variable lists them', async () => {
  const dashboard = await readJson(DASHBOARD);
  const variables: Json[] = dashboard.templating.list;
  const root = variables.find((v) => v.name === "root");
  assert.ok(root, "a root template variable");
  assert.equal(root.type, "query");
  assert.deepEqual(root.datasource, DS_REF);
  assert.match(
    root.query.query,
    /^label_values\(checkpoint_last_validation_timestamp(\{[^}]*\})?, root\)$/,
    "every source exports checkpoint_last_validation_timestamp, whatever the root holds",
  );
  assert.equal(root.multi, true);
  assert.equal(root.includeAll, true);
  assert.equal(root.allValue, ".*");
  assert.ok(
    variables.findIndex((v) => v.name === "root") > variables.findIndex((v) => v.name === "run_id"),
    "after job_id and run_id, which narrow it",
  );
  const panels = allPanels(dashboard).filter((panel) => panel.type !== "row");
  let selectors = 0;
  for (const panel of panels) {
    for (const target of panel.targets) {
      const where = `${panel.title} ${target.refId}: ${target.expr}`;
      for (const [selector, matchers] of target.expr.matchAll(/\b(?:checkpoint|ckptkit)_[a-z_]+(\{[^}]*\})?/g)) {
        assert.ok(matchers?.includes('root=~"$root"'), `${selector} lacks root=~"$root" in ${where}`);
        selectors++;
      }
      for (const [, by] of target.expr.matchAll(/\bby \(([^)]*)\)/g)) {
        // an aggregation over job and run keeps the root too, so two roots of one job never merge
        if (by.includes("job_id")) assert.match(by, /^root, job_id, run_id\b/, where);
      }
      if (/\{\{job_id\}\}/.test(target.legendFormat ?? "")) {
        assert.match(target.legendFormat, /\{\{root\}\}/, `the legend tells roots apart: ${where}`);
      }
    }
  }
  assert.ok(selectors >= panels.length, String(selectors));
  const table = panels.find((panel) => panel.type === "table");
  const organize = table.transformations.find((t: Json) => t.id === "organize");
  assert.equal(organize.options.indexByName.root, 0, "the corrupt-checkpoints table shows the root first");
});

Deno.test("the dashboard's panels have unique ids and non-overlapping places on the 24-column grid", async () => {
  const dashboard = await readJson(DASHBOARD);
  const panels = allPanels(dashboard);
  assert.equal(new Set(panels.map((p) => p.id)).size, panels.length, "panel ids are unique");
  const cells = new Map<string, string>();
  for (const panel of panels) {
    const { x, y, w, h } = panel.gridPos;
    for (const n of [x, y, w, h]) {
      assert.ok(Number.isInteger(n) && n >= 0, `${panel.title}: ${JSON.stringify(panel.gridPos)}`);
    }
    assert.ok(w > 0 && h > 0 && x + w <= 24, `${panel.title} fits in 24 columns`);
    for (let row = y; row < y + h; row++) {
      for (let col = x; col < x + w; col++) {
        const other = cells.get(`${row},${col}`);
        assert.equal(other, undefined, `${panel.title} overlaps ${other}`);
        cells.set(`${row},${col}`, panel.title);
      }
    }
  }
});

Deno.test("examples/grafana: the provisioned data source is one the dashboard's variable selects", async () => {
  const text = await Deno.readTextFile(DATASOURCE_YML);
  assert.match(text, /\/etc\/grafana\/provisioning\/datasources\//, "the header says where the file goes");
  const doc = parseYaml(text);
  assert.equal(doc.apiVersion, 1);
  assert.equal(doc.datasources.length, 1);
  const [ds] = doc.datasources;
  const known = ["name", "type", "uid", "access", "url", "isDefault", "editable", "jsonData", "orgId", "version"];
  assert.deepEqual(Object.keys(ds).filter((key) => !known.includes(key)), [], "keys Grafana's provisioning knows");
  assert.match(ds.uid, /^[a-zA-Z0-9_-]{1,40}$/, "a valid, fixed Grafana uid");
  assert.equal(ds.url, "http://127.0.0.1:9090");
  assert.equal(ds.access, "proxy");

  const dashboard = await readJson(DASHBOARD);
  const variable = dashboard.templating.list.find((v: Json) => v.type === "datasource");
  assert.equal(ds.type, variable.query, "the variable lists data sources of this type");
  assert.equal(ds.type, DS_REF.type);
  // with the variable set to this data source, every reference resolves to it
  const resolved = JSON.parse(JSON.stringify(dashboard).replaceAll("${datasource}", ds.uid));
  for (const [path, object] of objects(resolved)) {
    if ("datasource" in object) assert.deepEqual(object.datasource, { type: ds.type, uid: ds.uid }, path);
  }

  const prometheus = parseYaml(await Deno.readTextFile(`${REPO}/examples/prometheus.yml`));
  assert.equal(ds.jsonData.timeInterval, prometheus.global.scrape_interval, "timeInterval is the scrape interval");
});

Deno.test("examples/grafana: the dashboard provider reads the folder the dashboards are installed to", async () => {
  const text = await Deno.readTextFile(DASHBOARDS_YML);
  assert.match(text, /\/etc\/grafana\/provisioning\/dashboards\//, "the header says where the file goes");
  assert.match(text, /ConfigMap labell?ed grafana_dashboard/, "the header names the Kubernetes sidecar alternative");
  const doc = parseYaml(text);
  assert.equal(doc.apiVersion, 1);
  assert.equal(doc.providers.length, 1);
  const [provider] = doc.providers;
  const known = [
    "name",
    "orgId",
    "type",
    "folder",
    "folderUid",
    "allowUiUpdates",
    "disableDeletion",
    "updateIntervalSeconds",
    "options",
  ];
  assert.deepEqual(
    Object.keys(provider).filter((key) => !known.includes(key)),
    [],
    "keys Grafana's provisioning knows",
  );
  assert.deepEqual(
    Object.keys(provider.options).filter((key) => !["path", "foldersFromFilesStructure"].includes(key)),
    [],
  );
  assert.ok(provider.name);
  assert.equal(provider.type, "file");
  const path: string = provider.options.path;
  assert.ok(path.startsWith("/"), "an absolute path on the Grafana host");

  // the header's install command, run into a fake Grafana host, puts the repository's dashboards at `path`
  const install = /^#\s+install -D -m 0644 -t (\S+) dashboards\/\*\.json$/m.exec(text);
  assert.ok(install, "the header says how to install the dashboards");
  assert.equal(install[1], path, "the install command's target is the provider's path");
  await using host = await tempDir();
  const target = `${host.path}${path}`;
  await Deno.mkdir(target, { recursive: true });
  const sources = [...Deno.readDirSync(DASHBOARDS)].filter((e) => e.isFile && e.name.endsWith(".json"));
  assert.ok(sources.length > 0);
  for (const entry of sources) await Deno.copyFile(`${DASHBOARDS}/${entry.name}`, `${target}/${entry.name}`);

  // what Grafana's file reader then loads: every *.json under path, each with a uid unique in the folder
  const found: Json[] = [];
  const walk = async (dir: string) => {
    for await (const entry of Deno.readDir(dir)) {
      if (entry.isDirectory) await walk(`${dir}/${entry.name}`);
      else if (entry.name.endsWith(".json")) found.push(await readJson(`${dir}/${entry.name}`));
    }
  };
  await walk(target);
  assert.ok(found.some((d) => d.uid === "ckptkit-checkpoint-health"));
  assert.equal(new Set(found.map((d) => d.uid)).size, found.length, "dashboard uids are unique");
  for (const dashboard of found) {
    assert.match(dashboard.uid, /^[a-zA-Z0-9_-]{1,40}$/);
    assert.ok(dashboard.title);
    assert.ok(!JSON.stringify(dashboard).includes("${DS_"), `${dashboard.uid} needs __inputs: it would not provision`);
  }
});
