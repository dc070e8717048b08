/**
 * Real servers for the tests (node_exporter, Pushgateway, Prometheus,
 * `ckptkit serve`): started on 127.0.0.1 with their output in log files,
 * stopped by the child they are, polled with a backstop, queried through
 * Prometheus's HTTP API. Shared by tests/prometheus_test.ts and
 * tests/docs_commands_test.ts.
 */

import assert from "node:assert/strict";

/** Whether an executable named `tool` is on PATH. */
export function onPath(tool: string): boolean {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    try {
      const info = Deno.statSync(`${dir || "."}/${tool}`);
      if (info.isFile && ((info.mode ?? 0o111) & 0o111) !== 0) return true;
    } catch {
      // not in this folder
    }
  }
  return false;
}

/** Set on CI: tests whose tools are missing fail there instead of being skipped. */
export const ON_CI = Boolean(Deno.env.get("CI"));

/** A long-running server whose stdout and stderr go to a log file. */
export interface Server {
  name: string;
  child: Deno.ChildProcess;
  log: string;
  drained: Promise<unknown>;
  /** Its exit code once it has exited. */
  exitCode: number | null;
}

export async function startServer(name: string, command: Deno.Command, logDir: string): Promise<Server> {
  const log = `${logDir}/${name}.log`;
  const child = command.spawn();
  const stderr = await Deno.open(log, { write: true, create: true, truncate: true });
  const stdout = await Deno.open(`${log}.stdout`, { write: true, create: true, truncate: true });
  const drained = Promise.allSettled([child.stderr.pipeTo(stderr.writable), child.stdout.pipeTo(stdout.writable)]);
  const server: Server = { name, child, log, drained, exitCode: null };
  child.status.then((status) => server.exitCode = status.code);
  return server;
}

export function serverCommand(program: string, args: string[]): Deno.Command {
  return new Deno.Command(program, { args, stdin: "null", stdout: "piped", stderr: "piped" });
}

/** SIGTERM, then SIGKILL after 5 s; always awaits the exit and the log pipes. */
export async function stopServer(server: Server): Promise<void> {
  try {
    server.child.kill("SIGTERM");
  } catch {
    // already exited
  }
  let timer: ReturnType<typeof setTimeout> | undefined;
  const exited = await Promise.race([
    server.child.status.then(() => true),
    new Promise<boolean>((resolve) => timer = setTimeout(() => resolve(false), 5000)),
  ]);
  clearTimeout(timer);
  if (!exited) {
    try {
      server.child.kill("SIGKILL");
    } catch {
      // exited meanwhile
    }
    await server.child.status;
  }
  await server.drained;
}

/** The last lines of a log file, for failure messages. */
export async function tail(path: string, lines = 30): Promise<string> {
  try {
    return (await Deno.readTextFile(path)).trimEnd().split("\n").slice(-lines).join("\n");
  } catch {
    return "(no log)";
  }
}

/** Free TCP ports on 127.0.0.1 (all held open until every one is chosen, so they differ). */
export function freePorts(count: number): number[] {
  const listeners = Array.from({ length: count }, () => Deno.listen({ hostname: "127.0.0.1", port: 0 }));
  const ports = listeners.map((listener) => (listener.addr as Deno.NetAddr).port);
  for (const listener of listeners) listener.close();
  return ports;
}

/** GET with a timeout; the body is always read. */
export async function get(url: string): Promise<{ status: number; body: string }> {
  const response = await fetch(url, { signal: AbortSignal.timeout(5000) });
  return { status: response.status, body: await response.text() };
}

/** An error that stops {@linkcode until} at once. */
export class Fatal extends Error {}

/**
 * Polls `check` until it returns a value other than undefined, or fails at
 * `deadline` with `what`. Errors are retried, except {@linkcode Fatal}.
 */
export async function until<T>(what: string, deadline: number, check: () => Promise<T | undefined>): Promise<T> {
  let last = "";
  while (true) {
    try {
      const value = await check();
      if (value !== undefined) return value;
    } catch (err) {
      if (err instanceof Fatal) throw err;
      last = (err as Error).message;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? ` (last error: ${last})` : ""}`);
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

export interface Alert {
  labels: Record<string, string>;
  state: "pending" | "firing";
  annotations: Record<string, string>;
}

/** Prometheus's pending and firing alerts. */
export async function activeAlerts(base: string): Promise<Alert[]> {
  const { status, body } = await get(`${base}/api/v1/alerts`);
  const doc = JSON.parse(body);
  assert.equal(doc.status, "success", `alerts failed (HTTP ${status}): ${body}`);
  return doc.data.alerts;
}

export interface Sample {
  metric: Record<string, string>;
  value: [number, string];
}

/** An instant query; fails unless Prometheus parsed and ran it. */
export async function query(base: string, expr: string): Promise<Sample[]> {
  const { status, body } = await get(`${base}/api/v1/query?query=${encodeURIComponent(expr)}`);
  const doc = JSON.parse(body);
  assert.equal(doc.status, "success", `query failed (HTTP ${status}): ${expr}\n${body}`);
  assert.equal(doc.data.resultType, "vector", `${expr} is not a vector expression`);
  return doc.data.result;
}
