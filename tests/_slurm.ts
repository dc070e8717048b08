/**
 * A real single-node Slurm cluster for tests (Debian's `slurm-wlm` 22.05 and
 * `munge`): its own munged, slurmctld and slurmd, every file of theirs (key,
 * socket, slurm.conf, state, spool, logs) in a temporary folder, on
 * 127.0.0.1 at ports free when it starts. It never touches /etc/slurm,
 * /etc/munge or a system daemon: clients find it through SLURM_CONF, and
 * slurm.conf names the munge socket. Disposing of it cancels its jobs, stops
 * exactly the three daemons it started (by PID), waits for them and removes
 * the folder.
 *
 * The node is `ckptkit-node` (slurmd -N), at NodeAddr=127.0.0.1 with
 * NodeHostname=localhost, so nothing depends on the machine's hostname
 * resolving. It claims more CPUs, memory and GPUs than the machine has
 * (SlurmdParameters=config_overrides): the example scripts ask for what a
 * real training node has, and the jobs only run small stand-ins.
 * No cgroups (proctrack/linuxproc, task/none), no accounting database:
 * `sacct` does not work here; a job's final state and exit code come from
 * `scontrol show job` (MinJobAge keeps finished jobs for an hour).
 */

import { ckptkitFlags, REPO } from "./_helpers.ts";

/** Name of the one node. */
export const SLURM_NODE = "ckptkit-node";

const DAEMONS = ["munged", "slurmctld", "slurmd"] as const;
const CLIENTS = ["sbatch", "srun", "squeue", "scontrol", "sinfo", "scancel"] as const;

/** A program's path: on PATH, or in the sbin folders a non-login PATH may lack. */
export function findProgram(name: string): string | undefined {
  const dirs = [...(Deno.env.get("PATH") ?? "").split(":").filter(Boolean), "/usr/sbin", "/sbin", "/usr/bin"];
  for (const dir of dirs) {
    try {
      const info = Deno.statSync(`${dir}/${name}`);
      if (info.isFile && ((info.mode ?? 0o111) & 0o111) !== 0) return `${dir}/${name}`;
    } catch {
      // not in this folder
    }
  }
  return undefined;
}

/** Why a real cluster cannot start here (not root, a program missing), or undefined when it can. */
export function slurmUnavailable(): string | undefined {
  if (Deno.build.os !== "linux") return "not Linux";
  const missing = [...DAEMONS, ...CLIENTS].filter((name) => !findProgram(name));
  if (missing.length > 0) return `missing ${missing.join(", ")} (apt-get install slurm-wlm munge)`;
  if (Deno.uid() !== 0) return "not root (slurmd runs jobs as root here)";
  return undefined;
}

/** What a finished program printed and returned. */
export interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Output of a run, for assertion messages. */
export const show = (r: Run) => `exit ${r.code}\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`;

/** This process's environment without CKPTKIT_* and SLURM_* (which would change what the scripts do), plus `extra`. */
export function childEnv(extra: Record<string, string> = {}): Record<string, string> {
  const env = Object.fromEntries(
    Object.entries(Deno.env.toObject()).filter(([name]) => !name.startsWith("CKPTKIT") && !name.startsWith("SLURM_")),
  );
  return { ...env, NO_COLOR: "1", ...extra };
}

/**
 * Runs a program to the end in its own process group (environment:
 * {@linkcode childEnv} plus `env`); the group is killed after `timeoutMs`, a
 * backstop for a hang only.
 */
export async function run(
  program: string,
  args: string[],
  options: { env?: Record<string, string>; cwd?: string; timeoutMs?: number } = {},
): Promise<Run> {
  const child = new Deno.Command(program, {
    args,
    cwd: options.cwd ?? REPO,
    env: childEnv(options.env),
    clearEnv: true,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    detached: true,
  }).spawn();
  const killGroup = () => {
    try {
      Deno.kill(-child.pid, "SIGKILL");
    } catch {
      // already gone
    }
  };
  const timer = setTimeout(killGroup, options.timeoutMs ?? 300_000);
  try {
    const out = await child.output();
    const text = new TextDecoder();
    return { code: out.code, stdout: text.decode(out.stdout), stderr: text.decode(out.stderr) };
  } finally {
    clearTimeout(timer);
    killGroup();
  }
}

function shellQuote(arg: string): string {
  return /^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replaceAll("'", `'"'"'`)}'`;
}

/** Writes an executable file (and its folder). */
export async function writeExecutable(path: string, text: string): Promise<string> {
  await Deno.mkdir(path.replace(/\/[^/]+$/, ""), { recursive: true });
  await Deno.writeTextFile(path, text);
  await Deno.chmod(path, 0o755);
  return path;
}

/**
 * Puts `ckptkit` into `<dir>/bin`: this checkout's cli.ts under the binary's
 * permission flags, as the compiled binary would be on a node. Returns its path.
 */
export function installCkptkit(dir: string): Promise<string> {
  const argv = [Deno.execPath(), "run", "--quiet", ...ckptkitFlags(), `${REPO}/cli.ts`];
  return writeExecutable(`${dir}/bin/ckptkit`, `#!/bin/sh\nexec ${argv.map(shellQuote).join(" ")} "$@"\n`);
}

/**
 * Polls `check` every `intervalMs` until it returns a value other than
 * undefined; throws after `backstopMs` (minutes: a hang, never a slow machine).
 */
export async function poll<T>(
  what: string,
  check: () => Promise<T | undefined>,
  options: { intervalMs?: number; backstopMs?: number; detail?: () => Promise<string> } = {},
): Promise<T> {
  const deadline = Date.now() + (options.backstopMs ?? 300_000);
  while (true) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) {
      throw new Error(`gave up waiting for ${what}${options.detail ? `\n${await options.detail()}` : ""}`);
    }
    await new Promise((resolve) => setTimeout(resolve, options.intervalMs ?? 250));
  }
}

/** One record of `scontrol show job -o`: a job, or one task of a job array. */
export interface SlurmJob {
  jobId: string;
  /** The array's job id, for a task of a job array. */
  arrayJobId?: string;
  /** The task's index ("0"), or a range of tasks not started yet ("1-3"). */
  arrayTaskId?: string;
  /** PENDING, RUNNING, COMPLETED, FAILED, CANCELLED, ... */
  state: string;
  /** The batch script's exit code. */
  exitCode: number;
  /** The signal that ended it (0: none). */
  signal: number;
  /** How many times it was requeued. */
  restarts: number;
  /** Its stdout file. */
  stdout: string;
  /** The whole record. */
  raw: string;
}

/** Job states after which Slurm does nothing more with a job (unless it is requeued). */
const FINAL_STATES = new Set([
  "COMPLETED",
  "FAILED",
  "CANCELLED",
  "TIMEOUT",
  "NODE_FAIL",
  "PREEMPTED",
  "OUT_OF_MEMORY",
  "BOOT_FAIL",
  "DEADLINE",
]);

/** Whether a job record is in a final state. */
export const ended = (job: SlurmJob) => FINAL_STATES.has(job.state);

function parseJob(line: string): SlurmJob {
  const field = (name: string) => new RegExp(`(?:^| )${name}=(\\S*)`).exec(line)?.[1];
  const [exitCode, signal] = (field("ExitCode") ?? "0:0").split(":").map(Number);
  return {
    jobId: field("JobId") ?? "",
    arrayJobId: field("ArrayJobId"),
    arrayTaskId: field("ArrayTaskId"),
    state: field("JobState") ?? "",
    exitCode,
    signal,
    restarts: Number(field("Restarts") ?? 0),
    stdout: field("StdOut") ?? "",
    raw: line,
  };
}

/** A running cluster; dispose of it (`await using`) to stop it. */
export interface SlurmCluster extends AsyncDisposable {
  /** Its temporary folder. */
  dir: string;
  /** What a client needs: SLURM_CONF (and, through sbatch, every job of it). */
  env: Record<string, string>;
  /** Runs a Slurm client (sbatch, scontrol, ...) or any program against this cluster. */
  run(program: string, args: string[], options?: { env?: Record<string, string>; cwd?: string }): Promise<Run>;
  /** `sbatch --parsable ARGS`: the job id (an error, with sbatch's output, when it fails). */
  sbatch(args: string[], options?: { env?: Record<string, string>; cwd?: string }): Promise<string>;
  /** The records of job `id` (every task of an array), [] when Slurm does not know it. */
  jobs(id: string): Promise<SlurmJob[]>;
  /** Polls until every record of job `id` is final and `until` (if given) holds; returns them. */
  waitForEnd(id: string, until?: (jobs: SlurmJob[]) => boolean): Promise<SlurmJob[]>;
  /** The daemons' logs and the job queue, for assertion messages. */
  diagnostics(): Promise<string>;
}

/** A TCP port nothing listens on now. */
function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}

/** Options for {@linkcode startSlurmCluster}: what the node claims to have. */
export interface SlurmClusterOptions {
  cpus?: number;
  gpus?: number;
  memoryMiB?: number;
}

/**
 * Starts munged, slurmctld and slurmd in a new temporary folder and waits
 * until the node is idle. Throws, with the daemons' logs, when it cannot.
 */
export async function startSlurmCluster(options: SlurmClusterOptions = {}): Promise<SlurmCluster> {
  const unavailable = slurmUnavailable();
  if (unavailable) throw new Error(`cannot start a Slurm cluster: ${unavailable}`);
  const cpus = options.cpus ?? 32;
  const gpus = options.gpus ?? 8;
  const memory = options.memoryMiB ?? 65536;
  const dir = await Deno.realPath(await Deno.makeTempDir({ prefix: "ckptkit-slurm-" }));
  await Deno.chmod(dir, 0o755);
  const conf = `${dir}/slurm.conf`;
  const socket = `${dir}/munge/munge.socket`;
  const env = { SLURM_CONF: conf };
  const daemons: { name: string; log: string; child: Deno.ChildProcess }[] = [];

  const diagnostics = async () => {
    const parts: string[] = [];
    for (const name of ["munged.log", "slurmctld.out", "slurmd.out", "munged.out", "slurmctld.log", "slurmd.log"]) {
      const text = await Deno.readTextFile(`${dir}/${name}`).catch(() => "");
      if (!text) continue;
      // Leave out what every start logs: no PMIx library, gres "files" that are no devices, no state yet.
      const lines = text.split("\n").filter((line) =>
        !/pmix|is not a valid character or block device|state file|Trying backup state save file/i.test(line)
      );
      parts.push(`--- ${name} (last lines)\n${lines.slice(-40).join("\n")}`);
    }
    const queue = await run(findProgram("squeue")!, ["-a"], { env, timeoutMs: 30_000 }).catch((e) => ({
      code: -1,
      stdout: "",
      stderr: String(e),
    }));
    parts.push(`--- squeue\n${queue.stdout}${queue.stderr}`);
    return parts.join("\n");
  };

  /** Starts a daemon in the foreground, its own stdout and stderr into <dir>/<name>.out. */
  const startDaemon = (name: string, args: string[]) => {
    const child = new Deno.Command("/bin/sh", {
      // exec: the PID is the daemon's own.
      args: ["-c", 'exec "$@" >"$0" 2>&1', `${dir}/${name}.out`, findProgram(name)!, ...args],
      env: childEnv(env),
      clearEnv: true,
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
    daemons.push({ name, log: `${dir}/${name}.out`, child });
    return child;
  };

  const stop = async () => {
    // Cancel what is left (a failed test's jobs), so no job outlives its slurmd.
    if (daemons.length === 3) {
      const scancel = findProgram("scancel")!;
      await run(scancel, ["--user=root"], { env, timeoutMs: 60_000 }).catch(() => {});
      await poll("the jobs to end", async () => {
        const queue = await run(findProgram("squeue")!, ["-h", "-t", "all", "-o", "%T"], { env, timeoutMs: 60_000 });
        if (queue.code !== 0) return true;
        return queue.stdout.split("\n").every((s) => !s || FINAL_STATES.has(s.trim())) ? true : undefined;
      }, { backstopMs: 120_000 }).catch(() => {});
    }
    for (const { child } of daemons.reverse()) {
      try {
        child.kill("SIGTERM");
      } catch {
        // already ended
      }
      const timer = setTimeout(() => {
        try {
          child.kill("SIGKILL");
        } catch {
          // already ended
        }
      }, 120_000);
      await child.status;
      clearTimeout(timer);
    }
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  };

  try {
    // munge: its own key, socket, pid, log and seed files.
    await Deno.mkdir(`${dir}/munge`, { mode: 0o700 });
    await Deno.writeFile(`${dir}/munge/munge.key`, crypto.getRandomValues(new Uint8Array(1024)), { mode: 0o600 });
    const munged = startDaemon("munged", [
      "--foreground",
      "--force",
      `--socket=${socket}`,
      `--key-file=${dir}/munge/munge.key`,
      `--pid-file=${dir}/munge/munged.pid`,
      `--log-file=${dir}/munged.log`,
      `--seed-file=${dir}/munge/munged.seed`,
      "--origin=127.0.0.1",
    ]);
    let mungedEnded = false;
    munged.status.then(() => mungedEnded = true);
    await poll("munged's socket", async () => {
      if (mungedEnded) throw new Error(`munged ended\n${await diagnostics()}`);
      return await Deno.stat(socket).then(() => true, () => undefined);
    }, { backstopMs: 120_000 });

    for (const sub of ["state", "spool"]) await Deno.mkdir(`${dir}/${sub}`);
    const [ctldPort, slurmdPort] = [freePort(), freePort()];
    const gpuFiles = [...Array(gpus).keys()].map((i) => `${dir}/gpu${i}`);
    for (const file of gpuFiles) await Deno.writeTextFile(file, "");
    await Deno.writeTextFile(conf, slurmConf({ dir, socket, ctldPort, slurmdPort, cpus, gpus, memory }));
    // GPUs for --gpus-per-task: plain files stand for the devices (slurmd logs that they are no
    // devices, and counts them). No cgroup constrains them (task/none).
    await Deno.writeTextFile(
      `${dir}/gres.conf`,
      gpus > 0 ? `NodeName=${SLURM_NODE} Name=gpu File=${dir}/gpu[0-${gpus - 1}]\n` : "",
    );
    // slurmd 22.05 loads a cgroup plugin even when no other plugin uses cgroups. Left to
    // autodetect on a host with cgroup v2 alone, it picks cgroup/v2, which asks systemd for a
    // scope over D-Bus: fatal without systemd. cgroup/v1 (what autodetect picks on a v1 or hybrid
    // host) only loads: with proctrack/linuxproc and task/none nothing calls it afterwards.
    await Deno.writeTextFile(`${dir}/cgroup.conf`, "CgroupPlugin=cgroup/v1\n");

    const ctld = startDaemon("slurmctld", ["-D", "-f", conf]);
    const slurmd = startDaemon("slurmd", ["-D", "-N", SLURM_NODE, "-f", conf]);
    let daemonEnded = "";
    ctld.status.then(() => daemonEnded ||= "slurmctld");
    slurmd.status.then(() => daemonEnded ||= "slurmd");
    const sinfo = findProgram("sinfo")!;
    await poll(`node ${SLURM_NODE} to be idle`, async () => {
      if (daemonEnded || mungedEnded) throw new Error(`${daemonEnded || "munged"} ended\n${await diagnostics()}`);
      const state = await run(sinfo, ["-h", "-N", "-o", "%T"], { env, timeoutMs: 60_000 });
      const text = state.stdout.trim();
      // A node that registered with the wrong resources stays so: no use waiting.
      if (/inval|drain/i.test(text)) throw new Error(`node ${SLURM_NODE} is ${text}\n${await diagnostics()}`);
      return state.code === 0 && text === "idle" ? true : undefined;
    }, { backstopMs: 180_000, detail: diagnostics });
  } catch (error) {
    await stop();
    throw error;
  }

  const cluster: SlurmCluster = {
    dir,
    env,
    run: (program, args, opts = {}) =>
      run(findProgram(program) ?? program, args, { cwd: opts.cwd, env: { ...env, ...opts.env } }),
    async sbatch(args, opts = {}) {
      const out = await cluster.run("sbatch", ["--parsable", ...args], opts);
      if (out.code !== 0) throw new Error(`sbatch ${args.join(" ")} failed: ${show(out)}`);
      return out.stdout.trim().split(";")[0];
    },
    async jobs(id) {
      const out = await cluster.run("scontrol", ["show", "job", "-o", id]);
      if (out.code !== 0) {
        if (/Invalid job id/i.test(out.stderr)) return [];
        throw new Error(`scontrol show job ${id}: ${show(out)}`);
      }
      return out.stdout.split("\n").filter((line) => line.startsWith("JobId=")).map(parseJob);
    },
    waitForEnd(id, until) {
      return poll(`job ${id} to end`, async () => {
        const jobs = await cluster.jobs(id);
        return jobs.length > 0 && jobs.every(ended) && (!until || until(jobs)) ? jobs : undefined;
      }, {
        intervalMs: 500,
        backstopMs: 300_000,
        detail: async () => `${(await cluster.jobs(id)).map((j) => j.raw).join("\n")}\n${await diagnostics()}`,
      });
    },
    diagnostics,
    [Symbol.asyncDispose]: stop,
  };
  return cluster;
}

/** The cluster's slurm.conf. */
function slurmConf(
  c: {
    dir: string;
    socket: string;
    ctldPort: number;
    slurmdPort: number;
    cpus: number;
    gpus: number;
    memory: number;
  },
): string {
  return [
    "ClusterName=ckptkit-test",
    // "localhost": slurmctld takes itself for this host whatever the machine's name.
    "SlurmctldHost=localhost(127.0.0.1)",
    `SlurmctldPort=${c.ctldPort}`,
    `SlurmdPort=${c.slurmdPort}`,
    "AuthType=auth/munge",
    // cred_expire: how long a requeued job waits before it may start again (default 120 s).
    `AuthInfo=socket=${c.socket},cred_expire=10`,
    "CredType=cred/munge",
    "SlurmUser=root",
    "SlurmdUser=root",
    `StateSaveLocation=${c.dir}/state`,
    `SlurmdSpoolDir=${c.dir}/spool`,
    `SlurmctldPidFile=${c.dir}/slurmctld.pid`,
    `SlurmdPidFile=${c.dir}/slurmd.pid`,
    `SlurmctldLogFile=${c.dir}/slurmctld.log`,
    `SlurmdLogFile=${c.dir}/slurmd.log`,
    "SlurmctldDebug=info",
    "SlurmdDebug=info",
    "MailProg=/bin/true",
    "ProctrackType=proctrack/linuxproc",
    "TaskPlugin=task/none",
    "JobAcctGatherType=jobacct_gather/none",
    "AccountingStorageType=accounting_storage/none",
    "JobCompType=jobcomp/filetxt",
    `JobCompLoc=${c.dir}/jobcomp.txt`,
    "MpiDefault=none",
    "SwitchType=switch/none",
    "SelectType=select/cons_tres",
    "SelectTypeParameters=CR_Core",
    "SchedulerType=sched/backfill",
    // Start pending jobs within a second (a requeued job's begin time, a dependency met).
    "SchedulerParameters=sched_interval=1,bf_interval=1",
    // The node claims the resources configured here, not the machine's.
    "SlurmdParameters=config_overrides",
    "ReturnToService=2",
    // A busy machine must not get the node marked down, nor a finished job forgotten mid-test.
    "SlurmdTimeout=300",
    "MessageTimeout=30",
    "MinJobAge=3600",
    "KillWait=5",
    "InactiveLimit=0",
    "GresTypes=gpu",
    `NodeName=${SLURM_NODE} NodeAddr=127.0.0.1 NodeHostname=localhost CPUs=${c.cpus} RealMemory=${c.memory}` +
    (c.gpus > 0 ? ` Gres=gpu:${c.gpus}` : "") + " State=UNKNOWN",
    `PartitionName=debug Nodes=${SLURM_NODE} Default=YES MaxTime=INFINITE State=UP`,
    "",
  ].join("\n");
}
