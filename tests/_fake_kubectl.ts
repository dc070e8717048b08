/**
 * A stand-in for `kubectl` against a pretend cluster on this machine, for
 * tests/examples_multinode_test.ts: enough of one to run the Jobs of
 * examples/k8s/ and examples/k8s/run-sharded-validation.sh for real.
 *
 * - State lives in `$FAKE_K8S_DIR/state.json`; each PersistentVolumeClaim is
 *   the folder `$FAKE_K8S_DIR/pv/<claim>`.
 * - A pod runs its container's `command` + `args` here, with each volume's
 *   `mountPath` in them rewritten to the volume's folder (claims) or a fresh
 *   temporary folder (emptyDir), its `env` (values, and the Job-name label
 *   through the downward API), `JOB_COMPLETION_INDEX` in an Indexed Job, and
 *   this process's PATH (where the test puts a `ckptkit` wrapper).
 * - A Job runs when it is created unsuspended or resumed, to the end, before
 *   the command returns: every index of an Indexed Job at once (the manifests
 *   set parallelism = completions); a failed pod is retried up to
 *   `backoffLimit` times unless a podFailurePolicy `FailJob` rule matches its
 *   exit code. The Job ends Complete or Failed.
 *
 * Commands: `apply -f FILE`, `delete job NAME... [--ignore-not-found]`,
 * `create job NAME --from=cronjob/NAME`, `patch job NAME --type=merge -p JSON`,
 * `get job NAME -o jsonpath=<the conditions query>`, `get pods -l
 * batch.kubernetes.io/job-name=NAME -o jsonpath=<the exit code query>`,
 * `logs job/NAME`; `--namespace X` / `-n X` are accepted and ignored. Every
 * call is appended to `$FAKE_K8S_DIR/calls`.
 *
 * Run as `deno run --config <repo>/deno.json --allow-all tests/_fake_kubectl.ts …`.
 *
 * @module
 */

import { parseAllDocuments } from "yaml";

const CONDITIONS_QUERY = `{.status.conditions[?(@.status=="True")].type}`;
const EXIT_CODE_QUERY = "{.items[0].status.containerStatuses[0].state.terminated.exitCode}";
const JOB_NAME_LABEL = "batch.kubernetes.io/job-name";

// deno-lint-ignore no-explicit-any
type Manifest = any;

interface PodRun {
  index: number;
  code: number;
  stdout: string;
  stderr: string;
}

interface JobState {
  manifest: Manifest;
  suspended: boolean;
  conditions: string[];
  pods: PodRun[];
}

interface State {
  jobs: Record<string, JobState>;
  cronjobs: Record<string, Manifest>;
  claims: string[];
}

const dir = Deno.env.get("FAKE_K8S_DIR");
if (!dir) throw new Error("FAKE_K8S_DIR is not set");
const statePath = `${dir}/state.json`;

async function loadState(): Promise<State> {
  try {
    return JSON.parse(await Deno.readTextFile(statePath));
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return { jobs: {}, cronjobs: {}, claims: [] };
    throw err;
  }
}

function fail(message: string): never {
  console.error(`error: ${message}`);
  Deno.exit(1);
}

const escapeRegExp = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

/** Runs one pod of `job` and returns its exit code and output. */
async function runPod(name: string, job: Manifest, index: number | undefined): Promise<PodRun> {
  const pod = job.spec.template.spec;
  if (pod.containers.length !== 1) fail("the fake runs pods of one container");
  const [container] = pod.containers;
  const argv: string[] = [...(container.command ?? []), ...(container.args ?? [])];
  const scratch = await Deno.makeTempDir({ dir, prefix: "emptydir-" });
  const hosts = new Map<string, string>();
  for (const mount of container.volumeMounts ?? []) {
    const volume = pod.volumes.find((v: Manifest) => v.name === mount.name);
    if (!volume) fail(`volume ${mount.name} of ${name} is not defined`);
    let host: string;
    if (volume.persistentVolumeClaim) {
      host = `${dir}/pv/${volume.persistentVolumeClaim.claimName}`;
    } else if (volume.emptyDir) {
      host = `${scratch}/${mount.name}`;
    } else {
      fail(`volume ${mount.name}: only persistentVolumeClaim and emptyDir`);
    }
    await Deno.mkdir(host, { recursive: true });
    hosts.set(mount.mountPath, host);
  }
  // Every mount path, as a whole path element, to its host folder, in one pass.
  const mountPaths = [...hosts.keys()].sort((a, b) => b.length - a.length).map(escapeRegExp);
  const pattern = new RegExp(`(?<![\\w.-])(${mountPaths.join("|")})(?=[/"'\\s]|$)`, "g");
  const command = mountPaths.length ? argv.map((arg) => arg.replace(pattern, (path) => hosts.get(path)!)) : argv;
  // The container's environment, plus what the `ckptkit` wrapper on PATH needs here (Deno's cache).
  const env: Record<string, string> = { NO_COLOR: "1" };
  for (const key of ["PATH", "HOME", "DENO_DIR"]) {
    const value = Deno.env.get(key);
    if (value !== undefined) env[key] = value;
  }
  if (index !== undefined) env.JOB_COMPLETION_INDEX = String(index);
  for (const variable of container.env ?? []) {
    if ("value" in variable) {
      env[variable.name] = String(variable.value);
    } else if (variable.valueFrom?.fieldRef?.fieldPath === `metadata.labels['${JOB_NAME_LABEL}']`) {
      env[variable.name] = name;
    } else {
      fail(`env ${variable.name}: unsupported source ${JSON.stringify(variable.valueFrom)}`);
    }
  }
  const out = await new Deno.Command(command[0], {
    args: command.slice(1),
    env,
    clearEnv: true,
    cwd: scratch,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder();
  return { index: index ?? 0, code: out.code, stdout: text.decode(out.stdout), stderr: text.decode(out.stderr) };
}

/** Whether a podFailurePolicy FailJob rule matches `code`. */
function failsJob(job: Manifest, code: number): boolean {
  const container = job.spec.template.spec.containers[0].name;
  return (job.spec.podFailurePolicy?.rules ?? []).some((rule: Manifest) =>
    rule.action === "FailJob" &&
    (rule.onExitCodes.containerName ?? container) === container &&
    (rule.onExitCodes.operator === "In"
      ? rule.onExitCodes.values.includes(code)
      : !rule.onExitCodes.values.includes(code))
  );
}

/** Runs a Job to the end and records its pods and final condition. */
async function runJob(name: string, state: JobState): Promise<void> {
  const spec = state.manifest.spec;
  const indexed = spec.completionMode === "Indexed";
  const completions = spec.completions ?? 1;
  let retriesLeft = spec.backoffLimit ?? 6;
  let failJob = false;
  const runIndex = async (index: number): Promise<boolean> => {
    while (true) {
      const pod = await runPod(name, state.manifest, indexed ? index : undefined);
      state.pods.push(pod);
      if (pod.code === 0) return true;
      if (failsJob(state.manifest, pod.code)) {
        failJob = true;
        return false;
      }
      if (failJob || retriesLeft <= 0) return false;
      retriesLeft--;
    }
  };
  const results = await Promise.all(Array.from({ length: completions }, (_, index) => runIndex(index)));
  state.pods.sort((a, b) => a.index - b.index);
  state.conditions = !failJob && results.every(Boolean) ? ["Complete"] : ["Failed"];
}

async function createJob(state: State, name: string, manifest: Manifest): Promise<void> {
  if (state.jobs[name]) fail(`jobs.batch "${name}" already exists (Job templates are immutable)`);
  const job: JobState = { manifest, suspended: manifest.spec.suspend === true, conditions: [], pods: [] };
  state.jobs[name] = job;
  if (job.suspended) {
    job.conditions = ["Suspended"];
  } else {
    await runJob(name, job);
  }
}

async function main(args: string[]): Promise<void> {
  await Deno.writeTextFile(`${dir}/calls`, `${args.join(" ")}\n`, { append: true });
  const words: string[] = [];
  const flags: Record<string, string> = {};
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    const eq = /^(--?[\w-]+)=(.*)$/s.exec(arg);
    if (eq) {
      flags[eq[1]] = eq[2];
    } else if (["-f", "-o", "-l", "-p", "-n", "--namespace", "--type"].includes(arg)) {
      flags[arg] = args[++i];
    } else if (arg.startsWith("-")) {
      flags[arg] = "true";
    } else {
      words.push(arg);
    }
  }
  const state = await loadState();
  const [verb, kind, ...names] = words;
  if (verb === "apply") {
    const docs = parseAllDocuments(await Deno.readTextFile(flags["-f"]));
    for (const doc of docs) {
      if (doc.errors.length) fail(`${flags["-f"]}: ${doc.errors[0].message}`);
      const manifest = doc.toJS();
      const name = manifest.metadata.name;
      if (manifest.kind === "PersistentVolumeClaim") {
        await Deno.mkdir(`${dir}/pv/${name}`, { recursive: true });
        if (!state.claims.includes(name)) state.claims.push(name);
        console.log(`persistentvolumeclaim/${name} configured`);
      } else if (manifest.kind === "Job") {
        await createJob(state, name, manifest);
        console.log(`job.batch/${name} created`);
      } else if (manifest.kind === "CronJob") {
        state.cronjobs[name] = manifest;
        console.log(`cronjob.batch/${name} configured`);
      } else {
        fail(`the fake does not apply ${manifest.kind}`);
      }
    }
  } else if (verb === "delete" && kind === "job") {
    for (const name of names) {
      if (!state.jobs[name]) {
        if (flags["--ignore-not-found"] === "true") continue;
        fail(`jobs.batch "${name}" not found`);
      }
      delete state.jobs[name];
      console.log(`job.batch "${name}" deleted`);
    }
  } else if (verb === "create" && kind === "job") {
    const cron = /^cronjob\/(.+)$/.exec(flags["--from"] ?? "")?.[1];
    if (!cron || !state.cronjobs[cron]) fail(`create job needs --from=cronjob/<an applied CronJob>`);
    const template = state.cronjobs[cron].spec.jobTemplate;
    await createJob(state, names[0], {
      apiVersion: "batch/v1",
      kind: "Job",
      metadata: { name: names[0] },
      ...template,
    });
    console.log(`job.batch/${names[0]} created`);
  } else if (verb === "patch" && kind === "job") {
    const job = state.jobs[names[0]] ?? fail(`jobs.batch "${names[0]}" not found`);
    if (flags["--type"] !== "merge") fail("the fake patches with --type=merge only");
    const patch = JSON.parse(flags["-p"]);
    if (patch.spec?.suspend === false && job.suspended) {
      job.suspended = false;
      await runJob(names[0], job);
    }
    console.log(`job.batch/${names[0]} patched`);
  } else if (verb === "get" && kind === "job") {
    const job = state.jobs[names[0]] ?? fail(`jobs.batch "${names[0]}" not found`);
    if (flags["-o"] !== `jsonpath=${CONDITIONS_QUERY}`) fail(`unsupported output ${flags["-o"]}`);
    // The conditions that are True, as kubectl prints them: space-separated.
    Deno.stdout.writeSync(new TextEncoder().encode(job.conditions.join(" ")));
  } else if (verb === "get" && kind === "pods") {
    const name = new RegExp(`^${escapeRegExp(JOB_NAME_LABEL)}=(.+)$`).exec(flags["-l"] ?? "")?.[1];
    if (!name) fail(`get pods needs -l ${JOB_NAME_LABEL}=<job>`);
    if (flags["-o"] !== `jsonpath=${EXIT_CODE_QUERY}`) fail(`unsupported output ${flags["-o"]}`);
    const pod = state.jobs[name]?.pods[0];
    if (pod) Deno.stdout.writeSync(new TextEncoder().encode(String(pod.code)));
  } else if (verb === "logs") {
    const name = /^job\/(.+)$/.exec(kind ?? "")?.[1];
    const pod = name ? state.jobs[name]?.pods[0] : undefined;
    if (!pod) fail(`no pod of ${kind}`);
    // A container's log holds both of its streams.
    Deno.stdout.writeSync(new TextEncoder().encode(pod.stdout + pod.stderr));
  } else {
    fail(`the fake does not do: kubectl ${args.join(" ")}`);
  }
  await Deno.writeTextFile(statePath, JSON.stringify(state));
}

if (import.meta.main) await main(Deno.args);
