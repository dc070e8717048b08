/**
 * `serve`: a long-running exporter. Validates the root on a schedule and
 * when a checkpoint appears (`Deno.watchFs`), never two passes at once, and
 * serves the last pass on `/metrics` and its health on `/healthz` until its
 * signal is aborted.
 *
 * @module
 */

import { CkptkitError } from "../errors.ts";
import { requireFolder } from "../fs/folder.ts";
import { collectMetrics, type CollectOptions, type MetricsPass } from "./collect.ts";
import { renderMetrics } from "./render.ts";

/** Options for {@linkcode runExporter}. */
export interface ExporterOptions extends CollectOptions {
  /** Address to listen on. */
  hostname: string;
  /** Port to listen on (0: any free port). */
  port: number;
  /** Seconds between validation passes. */
  intervalS: number;
  /** Also run a pass when entries of the root change (default true). */
  watch?: boolean;
  /** Shuts the exporter down when aborted. */
  signal: AbortSignal;
  /** Called when the server listens, with its address. */
  onListen?: (address: { hostname: string; port: number }) => void;
  /** Called after each pass, with its result or its error. */
  onPass?: (outcome: { pass?: MetricsPass; error?: Error; trigger: string }) => void;
}

/**
 * Parses `host:port`, `[v6]:port` or `:port` (all interfaces).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseListen } from "./exporter.ts";
 * assert.deepEqual(parseListen("127.0.0.1:9478"), { hostname: "127.0.0.1", port: 9478 });
 * assert.deepEqual(parseListen("[::1]:9478"), { hostname: "::1", port: 9478 });
 * assert.deepEqual(parseListen(":9478"), { hostname: "0.0.0.0", port: 9478 });
 * ```
 */
export function parseListen(value: string): { hostname: string; port: number } {
  const match = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(value.trim());
  const port = match ? Number(match[3]) : NaN;
  if (!match || port > 65535) {
    throw new CkptkitError(
      "invalid_argument",
      `Cannot listen on ${JSON.stringify(value)}: expected host:port, e.g. 127.0.0.1:9478`,
    );
  }
  return { hostname: match[1] ?? (match[2] || "0.0.0.0"), port };
}

/**
 * Runs the exporter until `options.signal` is aborted, then stops watching,
 * finishes the pass in progress, shuts the server down and resolves.
 *
 * Requires `--allow-read`, `--allow-write` and `--allow-net`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { runExporter } from "./exporter.ts";
 * const root = await Deno.makeTempDir();
 * const stop = new AbortController();
 * let port = 0;
 * const done = runExporter(root, {
 *   hostname: "127.0.0.1", port: 0, intervalS: 60, depth: "fast", signal: stop.signal,
 *   onListen: (address) => port = address.port,
 *   onPass: () => stop.abort(),
 * });
 * await done;
 * assert.ok(port > 0);
 * await Deno.remove(root, { recursive: true });
 * ```
 */
export async function runExporter(root: string, options: ExporterOptions): Promise<void> {
  if (!(options.intervalS > 0)) {
    throw new CkptkitError(
      "invalid_argument",
      `Cannot serve as 'interval' must be positive: current value is ${options.intervalS}`,
    );
  }
  // A root not created yet is fine (its passes fail until it is); a file in its place never becomes one.
  await requireFolder(root, "checkpoint root", { mayBeMissing: true });
  let text: string | null = null;
  let lastError: Error | null = null;
  let lastPassAt = 0;
  let server: Deno.HttpServer;
  try {
    server = Deno.serve({
      hostname: options.hostname,
      port: options.port,
      signal: options.signal,
      onListen: (address) => options.onListen?.(address),
    }, (request) => {
      const { pathname } = new URL(request.url);
      if (pathname === "/metrics") {
        return text === null
          ? new Response("first validation pass in progress\n", { status: 503 })
          : new Response(text, { headers: { "content-type": "text/plain; version=0.0.4; charset=utf-8" } });
      }
      if (pathname === "/healthz") {
        if (lastError) return new Response(`last pass failed: ${lastError.message}\n`, { status: 503 });
        return new Response(text === null ? "starting\n" : `ok, last pass ${new Date(lastPassAt).toISOString()}\n`);
      }
      return new Response("not found: try /metrics or /healthz\n", { status: 404 });
    });
  } catch (err) {
    throw new CkptkitError(
      "io_error",
      `Cannot listen on ${options.hostname}:${options.port}: ${(err as Error).message}`,
      { cause: err },
    );
  }

  let wake: ((trigger: string) => void) | null = null;
  let pendingTrigger: string | null = null;
  const trigger = (why: string) => {
    if (wake) wake(why);
    else pendingTrigger ??= why;
  };
  const watcher = options.watch === false ? null : watchRoot(root, trigger);
  options.signal.addEventListener("abort", () => trigger("shutdown"), { once: true });

  let why = "start";
  while (!options.signal.aborted) {
    try {
      const pass = await collectMetrics(root, options);
      text = await renderMetrics(pass.snapshot);
      lastError = null;
      lastPassAt = Date.now();
      options.onPass?.({ pass, trigger: why });
    } catch (err) {
      lastError = err as Error;
      options.onPass?.({ error: lastError, trigger: why });
    }
    if (options.signal.aborted) break;
    why = await new Promise<string>((resolve) => {
      if (pendingTrigger) {
        resolve(pendingTrigger);
        return;
      }
      const timer = setTimeout(() => resolve("interval"), options.intervalS * 1000);
      wake = (reason) => {
        clearTimeout(timer);
        resolve(reason);
      };
    });
    wake = null;
    pendingTrigger = null;
  }
  watcher?.close();
  await server.finished;
}

/** Watches the root's top level; a new or renamed checkpoint triggers a pass after a short settle delay. */
function watchRoot(root: string, trigger: (why: string) => void): { close(): void } {
  let watcher: Deno.FsWatcher;
  try {
    watcher = Deno.watchFs(root, { recursive: false });
  } catch {
    return { close() {} };
  }
  let settle: ReturnType<typeof setTimeout> | undefined;
  (async () => {
    try {
      for await (const event of watcher) {
        if (!event.paths.some((path) => /\/(step-\d+|latest)$/.test(path))) continue;
        clearTimeout(settle);
        settle = setTimeout(() => trigger("checkpoint_changed"), 1000);
      }
    } catch {
      // the watcher was closed
    }
  })();
  return {
    close() {
      clearTimeout(settle);
      watcher.close();
    },
  };
}
