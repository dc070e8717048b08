/**
 * Renders a {@linkcode MetricsSnapshot} in the Prometheus text exposition
 * format with `prom-client` (HELP and TYPE for every metric, label escaping).
 * A fresh registry per render: no global state, no default process metrics.
 *
 * @module
 */

import { Counter, Gauge, Registry } from "../deps/prom_client.ts";
import { VERSION } from "../version.ts";
import type { MetricsSnapshot } from "./snapshot.ts";

/** Every metric name ckptkit exports (operators' dashboards depend on them). */
export const METRIC_NAMES = [
  "checkpoint_last_success_timestamp",
  "checkpoint_last_success_step",
  "checkpoint_last_duration_seconds",
  "checkpoint_write_bytes_total",
  "checkpoint_validation_failures_total",
  "checkpoint_corrupt_detected",
  "checkpoint_resume_selected_step",
  "checkpoint_directory_free_bytes",
  "checkpoint_last_size_bytes",
  "checkpoint_inventory",
  "checkpoint_newest_valid_age_seconds",
  "checkpoint_latest_valid",
  "checkpoint_last_validation_timestamp",
  "checkpoint_last_validation_duration_seconds",
  "checkpoint_last_validation_bytes",
  "ckptkit_build_info",
] as const;

/**
 * Renders the snapshot as exposition text. Every series carries the
 * snapshot's labels (`root`, and `job_id`/`run_id` when known); a label whose
 * value would be empty is left out, never exported as `""`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { renderMetrics } from "./render.ts";
 * import { buildSnapshot } from "./snapshot.ts";
 * import { emptyState } from "../core/state.ts";
 * import { scanRoot } from "../core/scan.ts";
 * const root = await Deno.makeTempDir();
 * const snapshot = buildSnapshot(await scanRoot(root, { record: false }), {
 *   state: emptyState(), quarantined: [], freeBytes: 1024, now: new Date(),
 * });
 * const text = await renderMetrics(snapshot);
 * // no job or run known yet: those labels are left out, never exported empty
 * assert.match(text, /^checkpoint_directory_free_bytes\{root="[^"]+"\} 1024$/m);
 * assert.ok(!text.includes('=""'));
 * await Deno.remove(root, { recursive: true });
 * ```
 */
export async function renderMetrics(snapshot: MetricsSnapshot): Promise<string> {
  const registry = new Registry();
  const labels = nonEmpty(snapshot.labels);
  const base = Object.keys(labels);
  const gauge = (name: string, help: string, labelNames: readonly string[] = base) =>
    new Gauge({ name, help, labelNames: [...labelNames], registers: [registry] });

  if (snapshot.last_success) {
    gauge("checkpoint_last_success_timestamp", "Unix time the newest valid checkpoint was committed.")
      .set(labels, snapshot.last_success.timestamp_s);
    gauge("checkpoint_last_success_step", "Training step of the newest valid checkpoint.")
      .set(labels, snapshot.last_success.step);
    gauge("checkpoint_last_duration_seconds", "Seconds spent writing and hashing the newest valid checkpoint.")
      .set(labels, snapshot.last_success.duration_s);
  }
  new Counter({
    name: "checkpoint_write_bytes_total",
    help: "Bytes committed into the checkpoint root by ckptkit.",
    labelNames: [...base],
    registers: [registry],
  }).inc(labels, snapshot.write_bytes_total);
  const failures = new Counter({
    name: "checkpoint_validation_failures_total",
    help:
      "Distinct corruptions detected, by stable reason: each (checkpoint, reason) counts once, when first detected.",
    labelNames: [...base, "reason"],
    registers: [registry],
  });
  for (const [reason, count] of Object.entries(snapshot.validation_failures_total)) {
    failures.inc({ ...labels, reason }, count);
  }
  const corrupt = gauge(
    "checkpoint_corrupt_detected",
    "1 per checkpoint that is currently corrupt or quarantined (at most 50 series; see checkpoint_inventory).",
    [...base, "checkpoint", "status"],
  );
  for (const entry of snapshot.corrupt) corrupt.set({ ...labels, ...entry }, 1);
  if (snapshot.resume_selected_step !== null) {
    gauge("checkpoint_resume_selected_step", "Step that resume (latest-valid) would choose now.")
      .set(labels, snapshot.resume_selected_step);
  }
  if (snapshot.free_bytes !== null) {
    gauge("checkpoint_directory_free_bytes", "Free bytes of the checkpoint root's file system (statfs, unprivileged).")
      .set(labels, snapshot.free_bytes);
  }
  if (snapshot.last_size_bytes !== null) {
    gauge(
      "checkpoint_last_size_bytes",
      "Bytes of the newest checkpoint (total_bytes of its manifest): about what the next save needs.",
    ).set(labels, snapshot.last_size_bytes);
  }
  const count = gauge("checkpoint_inventory", "Checkpoints in the root by status.", [...base, "status"]);
  for (const [status, value] of Object.entries(snapshot.counts)) count.set({ ...labels, status }, value);
  if (snapshot.newest_valid_age_s !== null) {
    gauge("checkpoint_newest_valid_age_seconds", "Seconds since the newest valid checkpoint was committed.")
      .set(labels, snapshot.newest_valid_age_s);
  }
  gauge("checkpoint_latest_valid", "1 when latest names a valid checkpoint, else 0.").set(
    labels,
    snapshot.latest_valid,
  );
  gauge("checkpoint_last_validation_timestamp", "Unix time of the validation pass behind these metrics.")
    .set(labels, snapshot.last_validation.timestamp_s);
  gauge(
    "checkpoint_last_validation_duration_seconds",
    "Seconds the last validation pass took.",
    [...base, "depth"],
  ).set({ ...labels, depth: snapshot.last_validation.depth }, snapshot.last_validation.duration_s);
  gauge("checkpoint_last_validation_bytes", "Bytes read by the last validation pass.")
    .set(labels, snapshot.last_validation.bytes);
  gauge("ckptkit_build_info", "ckptkit version.", [...base, "version"]).set({ ...labels, version: VERSION }, 1);
  return await registry.metrics();
}

/** The labels without those whose value is empty or absent (Prometheus treats `x=""` as no label anyway). */
function nonEmpty(labels: object): Record<string, string> {
  return Object.fromEntries(
    Object.entries(labels).filter((entry): entry is [string, string] =>
      typeof entry[1] === "string" && entry[1] !== ""
    ),
  );
}
