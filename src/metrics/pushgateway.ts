/**
 * Pushes exposition text to a Prometheus Pushgateway with `fetch`: a PUT to
 * `/metrics/job/ckptkit/job_id/<id>/root/<root>/instance/<host>` that
 * replaces the group, with a timeout per attempt and retries with
 * exponential backoff. The group is one root on one host: two roots pushing
 * to one gateway never replace each other's metrics.
 *
 * prom-client renders the text; its own Pushgateway client is not used
 * because `fetch` gives the timeouts, retries and error messages we need
 * with less code.
 *
 * @module
 */

import { CkptkitError } from "../errors.ts";

/**
 * The grouping key of a root's metrics: its `job_id` (when known), its
 * `root` label and the pushing host's `instance`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { groupingKey } from "./pushgateway.ts";
 * assert.deepEqual(groupingKey({ root: "/mnt/a", job_id: "j" }, "n1"), {
 *   job_id: "j",
 *   root: "/mnt/a",
 *   instance: "n1",
 * });
 * assert.deepEqual(groupingKey({ root: "/mnt/a" }, "n1"), { root: "/mnt/a", instance: "n1" });
 * ```
 */
export function groupingKey(labels: { root: string; job_id?: string }, instance: string): Record<string, string> {
  return { ...(labels.job_id ? { job_id: labels.job_id } : {}), root: labels.root, instance };
}

/** Options for {@linkcode pushMetrics}. */
export interface PushOptions {
  /** Grouping key labels besides `job` (e.g. job_id, instance). Empty values are left out. */
  grouping: Record<string, string>;
  /** Timeout of one attempt in ms (default 5000). */
  timeoutMs?: number;
  /** Attempts in all (default 3). */
  attempts?: number;
  /** Delay before the first retry in ms, doubled each time (default 500). */
  backoffMs?: number;
  /** Stops retrying when aborted. */
  signal?: AbortSignal;
}

/**
 * The push URL for a Pushgateway base URL given with or without the
 * `/metrics` suffix. Label values are base64url-encoded as the Pushgateway
 * allows, so a `/` in a job id cannot break the path.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { pushUrl } from "./pushgateway.ts";
 * assert.equal(
 *   pushUrl("http://pushgateway:9091/metrics", { job_id: "demo" }),
 *   "http://pushgateway:9091/metrics/job/ckptkit/job_id@base64/ZGVtbw",
 * );
 * assert.equal(pushUrl("http://pg:9091/", {}), "http://pg:9091/metrics/job/ckptkit");
 * ```
 */
export function pushUrl(base: string, grouping: Record<string, string>): string {
  let url: URL;
  try {
    url = new URL(base);
  } catch {
    throw new CkptkitError("invalid_argument", `Pushgateway URL ${JSON.stringify(base)} is not a URL`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new CkptkitError("invalid_argument", `Pushgateway URL ${base} must be http or https`);
  }
  const path = url.pathname.replace(/\/+$/, "").replace(/\/metrics$/, "");
  const labels = Object.entries(grouping)
    .filter(([, value]) => value !== "")
    .map(([name, value]) => `/${name}@base64/${base64url(value)}`)
    .join("");
  return `${url.origin}${path}/metrics/job/ckptkit${labels}`;
}

/**
 * Pushes `text`, replacing the group. Throws a `push_failed`
 * {@linkcode CkptkitError} naming the URL and the last error
 * after the last attempt.
 *
 * Requires `--allow-net`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { pushMetrics } from "./pushgateway.ts";
 * await using gateway = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, () => new Response(""));
 * const result = await pushMetrics(`http://127.0.0.1:${gateway.addr.port}/metrics`, "x 1\n", {
 *   grouping: { job_id: "demo" },
 * });
 * assert.equal(result.attempts, 1);
 * ```
 */
export async function pushMetrics(
  base: string,
  text: string,
  options: PushOptions,
): Promise<{ url: string; attempts: number }> {
  return await send("PUT", base, text, options);
}

/**
 * Deletes the group from the Pushgateway (at the end of a run, so its last
 * values stop being scraped forever), with the same retries as a push.
 *
 * Requires `--allow-net`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { deleteMetrics } from "./pushgateway.ts";
 * const methods: string[] = [];
 * await using gateway = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (request) => {
 *   methods.push(request.method);
 *   return new Response("", { status: 202 });
 * });
 * await deleteMetrics(`http://127.0.0.1:${gateway.addr.port}`, { grouping: { job_id: "demo" } });
 * assert.deepEqual(methods, ["DELETE"]);
 * ```
 */
export async function deleteMetrics(base: string, options: PushOptions): Promise<{ url: string; attempts: number }> {
  return await send("DELETE", base, undefined, options);
}

async function send(
  method: "PUT" | "DELETE",
  base: string,
  text: string | undefined,
  options: PushOptions,
): Promise<{ url: string; attempts: number }> {
  const url = pushUrl(base, options.grouping);
  const attempts = options.attempts ?? 3;
  let delay = options.backoffMs ?? 500;
  let lastError = "";
  for (let attempt = 1; attempt <= attempts; attempt++) {
    try {
      const response = await fetch(url, {
        method,
        headers: text === undefined ? undefined : { "content-type": "text/plain; version=0.0.4; charset=utf-8" },
        body: text,
        signal: AbortSignal.any([
          AbortSignal.timeout(options.timeoutMs ?? 5000),
          ...(options.signal ? [options.signal] : []),
        ]),
      });
      const body = await response.text();
      if (response.ok) return { url, attempts: attempt };
      lastError = `HTTP ${response.status}: ${body.trim().slice(0, 300)}`;
      if (response.status >= 400 && response.status < 500) break; // a rejected request will not succeed on retry
    } catch (err) {
      lastError = (err as Error).message;
    }
    if (attempt < attempts) {
      options.signal?.throwIfAborted();
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay *= 2;
    }
  }
  const doing = method === "PUT" ? "Pushing metrics to" : "Deleting the metrics group at";
  throw new CkptkitError("push_failed", `${doing} ${url} failed: ${lastError}`, { path: url });
}

function base64url(value: string): string {
  const bytes = new TextEncoder().encode(value);
  let binary = "";
  for (const byte of bytes) binary += String.fromCharCode(byte);
  return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "") || "=";
}
