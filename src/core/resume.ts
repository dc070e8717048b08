/**
 * `resume`: chooses the checkpoint a restarting training job should load.
 * Planning is pure ({@linkcode resumeOrder}, {@linkcode planResume}: what is
 * on disk and what validated in, a decision out) and tested without files;
 * {@linkcode resumeFromRoot} validates lazily, newest first, stopping at the
 * first valid checkpoint, and with `repair` fixes a broken `latest`.
 *
 * @module
 */

import { readFileLimited } from "../fs/durable.ts";
import { fingerprintCheckpoint } from "./fingerprint.ts";
import { readLatest, writeLatest } from "./latest.ts";
import { MAX_MANIFEST_BYTES } from "./manifest.ts";
import { acquireRootLock } from "./lock.ts";
import type { Problem } from "../problems.ts";
import { QUARANTINE_RECORD_SUFFIX, quarantineLocked } from "./quarantine.ts";
import { isRoot, listRoot, type RootListing } from "./root.ts";
import type { RepairPoint } from "../commit_points.ts";
import { CORRUPT_DIR, MANIFEST_NAME } from "./layout.ts";
import { readState } from "./state.ts";
import { validateCheckpoint, type ValidateOptions, type ValidationDepth } from "./validate.ts";
import { CkptkitError } from "../errors.ts";
import { RESUME_POLICIES, type ResumePolicy } from "../defaults.ts";

export { RESUME_POLICIES, type ResumePolicy };

/** A checkpoint considered for resuming. */
export interface ResumeCandidate {
  /** Folder name. */
  name: string;
  /** Absolute path. */
  path: string;
  /** Step. */
  step: number;
  /** Creation time from its manifest, when known (for `--before-time`). */
  created_at?: string | null;
}

/** A candidate that was not chosen, and why. */
export interface Rejection {
  /** Folder name. */
  name: string;
  /** Absolute path. */
  path: string;
  /** Step. */
  step: number;
  /** Stable reasons of its problems (or `gone` when it vanished meanwhile). */
  reasons: string[];
  /** The first problem, for humans. */
  detail: string;
}

/** Which candidates a policy allows, and in which order to try them. */
export interface ResumeOrderInput {
  /** Every checkpoint on disk. */
  candidates: readonly ResumeCandidate[];
  /** What `latest` names ("" when missing or unreadable). */
  latest: string;
  /** The policy (default `latest-valid`). */
  policy?: ResumePolicy;
  /** For `newest-before`: only steps below this. */
  beforeStep?: number;
  /** For `newest-before`: only checkpoints created before this. */
  beforeTime?: Date;
}

/** Why `resume` chose nothing: see {@linkcode ResumeDecision.reason}. */
export type NothingToResumeReason = "no_checkpoint" | "no_valid_checkpoint";

/** An action `resume --repair` took. */
export interface RepairAction {
  /** `latest_rewritten` or `quarantined`. */
  action: "latest_rewritten" | "quarantined";
  /** The checkpoint concerned. */
  name: string;
  /** For `latest_rewritten`: what latest said before ("" when missing). For `quarantined`: where it went. */
  detail: string;
}

/** The decision; also the `--json` document of `ckptkit resume`. */
export interface ResumeDecision {
  /** True when a checkpoint was chosen. */
  ok: boolean;
  /** The chosen checkpoint's path, or null. */
  path: string | null;
  /**
   * Why nothing was chosen, or null: `no_checkpoint` when the root has never
   * held a checkpoint (no checkpoint folder, nothing quarantined, no `latest`:
   * a first start, exit 3), `no_valid_checkpoint` when it has but none is
   * valid (exit 1: a person decides, the job must not start from scratch).
   */
  reason: NothingToResumeReason | null;
  /** One line saying why nothing was chosen (how many were rejected and why), or null. */
  message: string | null;
  /** The chosen checkpoint, or null when there is nothing to resume from. */
  chosen: ResumeCandidate | null;
  /** The policy used. */
  policy: ResumePolicy;
  /** The depth candidates were validated at (`none` when last-known-good was trusted). */
  depth: ValidationDepth | "none";
  /** What `latest` named ("" when missing or unreadable). */
  latest: string;
  /** What is wrong with `latest` (missing, dangling, invalid, or older than the newest valid), or null. */
  latest_problem: string | null;
  /** True when newer candidates were rejected (or last-known-good had no usable record). */
  fallback: boolean;
  /** Why a fallback happened, or null. */
  fallback_reason: string | null;
  /** Candidates tried and rejected, in the order tried. */
  rejected: Rejection[];
  /** Candidates the policy left out (newest-before), by name. */
  excluded: string[];
  /** What `--repair` did. */
  actions: RepairAction[];
}

/**
 * The candidates a policy allows, in the order to try them: the highest step
 * first. Under `latest-valid` that is the one `latest` names, except after a
 * commit killed between its rename and its update of `latest`, when the newer
 * (complete) checkpoint comes first. Under `newest-before` only those before
 * the cut-off.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { resumeOrder } from "./resume.ts";
 * const candidates = [
 *   { name: "step-30", path: "/r/step-30", step: 30 },
 *   { name: "step-20", path: "/r/step-20", step: 20 },
 * ];
 * assert.ok(resumeOrder({ candidates, latest: "step-30" }).order[0].name === "step-30");
 * const before = resumeOrder({ candidates, latest: "step-30", policy: "newest-before", beforeStep: 30 });
 * assert.ok(before.order[0].name === "step-20" && before.excluded[0] === "step-30");
 * ```
 */
export function resumeOrder(
  input: ResumeOrderInput,
): { order: ResumeCandidate[]; excluded: string[] } {
  const sorted = [...input.candidates].sort((a, b) => b.step - a.step);
  if ((input.policy ?? "latest-valid") === "newest-before") {
    const allowed = (c: ResumeCandidate) =>
      (input.beforeStep === undefined || c.step < input.beforeStep) &&
      (input.beforeTime === undefined ||
        (c.created_at != null &&
          Date.parse(c.created_at) < input.beforeTime.getTime()));
    return {
      order: sorted.filter(allowed),
      excluded: sorted.filter((c) => !allowed(c)).map((c) => c.name),
    };
  }
  // Newest first, whatever latest names: a checkpoint newer than latest is complete (it was renamed into
  // place) and only missed its latest update; latest is checked, and repaired with --repair, apart.
  return { order: sorted, excluded: [] };
}

/** What the acting side learned about the last-known-good record. */
export interface KnownGoodCheck {
  /** The recorded checkpoint, or null when there is no record. */
  name: string | null;
  /** Whether it still matches the record (exists, same fingerprint and manifest digest). */
  usable: boolean;
  /** Why it is not usable. */
  detail: string;
}

/** Inputs of {@linkcode planResume}. */
export interface PlanResumeInput extends ResumeOrderInput {
  /** Validation problems by candidate name (`[]` = valid, `gone` = vanished); candidates without an entry were not validated. */
  validations: ReadonlyMap<string, readonly Problem[] | "gone">;
  /** For `last-known-good`: the record check. */
  knownGood?: KnownGoodCheck;
  /** The depth validations were made at. */
  depth?: ValidationDepth;
  /** Checkpoints already quarantined in `corrupt/`, by name: proof the root held checkpoints. */
  quarantined?: readonly string[];
  /** Whether a `latest` file exists, readable or not (default: whether `latest` is non-empty). */
  latestFile?: boolean;
}

/**
 * Plans a resume from what is on disk and what validated (pure). Under
 * `last-known-good` a usable record is chosen without validation; otherwise
 * the first candidate in {@linkcode resumeOrder} whose validation is clean.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { planResume } from "./resume.ts";
 * const candidates = [
 *   { name: "step-20", path: "/r/step-20", step: 20 },
 *   { name: "step-10", path: "/r/step-10", step: 10 },
 * ];
 * const decision = planResume({
 *   candidates,
 *   latest: "step-20",
 *   validations: new Map([
 *     ["step-20", [{ reason: "hash_mismatch", path: "a.bin", detail: "…" }]],
 *     ["step-10", []],
 *   ]),
 * });
 * assert.ok(decision.chosen?.name === "step-10" && decision.fallback);
 * ```
 */
export function planResume(input: PlanResumeInput): ResumeDecision {
  const policy = input.policy ?? "latest-valid";
  const { order, excluded } = resumeOrder(input);
  const decide = (
    chosen: ResumeCandidate | null,
    rejected: Rejection[],
    fallbackReason: string | null,
    depth: ValidationDepth | "none" = input.depth ?? "full",
  ): ResumeDecision => ({
    ok: chosen !== null,
    path: chosen?.path ?? null,
    ...nothingReason(input, chosen, rejected, excluded),
    chosen,
    policy,
    depth,
    latest: input.latest,
    latest_problem: latestProblem(input, chosen, rejected),
    fallback: fallbackReason !== null,
    fallback_reason: fallbackReason,
    rejected,
    excluded,
    actions: [],
  });
  if (policy === "last-known-good" && input.knownGood?.usable && input.knownGood.name) {
    const chosen = input.candidates.find((c) => c.name === input.knownGood!.name);
    if (chosen) return decide(chosen, [], null, "none");
  }
  const knownGoodMiss = policy === "last-known-good"
    ? `no usable last-known-good record (${input.knownGood?.detail ?? "none recorded"}); fell back to latest-valid`
    : null;
  const rejected: Rejection[] = [];
  for (const candidate of order) {
    const found = input.validations.get(candidate.name);
    if (found === undefined) break;
    if (found === "gone") {
      rejected.push({
        name: candidate.name,
        path: candidate.path,
        step: candidate.step,
        reasons: ["gone"],
        detail: "removed while resuming",
      });
      continue;
    }
    if (found.length === 0) {
      const skipped = rejected.length > 0
        ? `newer checkpoints are invalid: ${rejected.map((r) => `${r.name} (${r.reasons.join(", ")})`).join(", ")}`
        : null;
      return decide(candidate, rejected, knownGoodMiss ?? skipped);
    }
    rejected.push({
      name: candidate.name,
      path: candidate.path,
      step: candidate.step,
      reasons: [...new Set(found.map((p) => p.reason))],
      detail: `${found[0].reason}: ${found[0].path ? `${found[0].path}: ` : ""}${found[0].detail}`,
    });
  }
  return decide(null, rejected, knownGoodMiss ?? (rejected.length > 0 ? "every candidate is invalid" : null));
}

/**
 * Tells a first start (nothing ever committed: start from scratch) from a
 * root whose every checkpoint is unusable (stop: starting over would silently
 * throw the training history away).
 */
function nothingReason(
  input: PlanResumeInput,
  chosen: ResumeCandidate | null,
  rejected: Rejection[],
  excluded: string[],
): { reason: NothingToResumeReason | null; message: string | null } {
  if (chosen) return { reason: null, message: null };
  const quarantined = input.quarantined ?? [];
  const latestFile = input.latestFile ?? input.latest !== "";
  if (input.candidates.length === 0 && quarantined.length === 0 && !latestFile) {
    return { reason: "no_checkpoint", message: "the root holds no checkpoint yet" };
  }
  const parts: string[] = [];
  if (rejected.length > 0) {
    parts.push(
      `${plural(rejected.length, "checkpoint")} rejected (` +
        rejected.map((r) => `${r.name}: ${r.reasons.join(", ")}`).join("; ") + ")",
    );
  }
  if (excluded.length > 0) parts.push(`${plural(excluded.length, "checkpoint")} excluded by the policy`);
  if (quarantined.length > 0) parts.push(`${plural(quarantined.length, "checkpoint")} already quarantined in corrupt/`);
  if (input.candidates.length === 0 && quarantined.length === 0) {
    parts.push(input.latest ? `latest names ${input.latest}, which does not exist` : "only a latest file is left");
  }
  return {
    reason: "no_valid_checkpoint",
    message: `no valid checkpoint: ${parts.join(", ")}; not starting from scratch, a person must decide`,
  };
}

function plural(n: number, noun: string): string {
  return `${n} ${noun}${n === 1 ? "" : "s"}`;
}

/**
 * What is wrong with `latest` given the decision, or null: missing or
 * unreadable, naming a folder that does not exist or an invalid checkpoint,
 * or lagging behind a newer valid checkpoint (a commit killed after its
 * rename and before it moved `latest`). `resume --repair` fixes exactly these.
 */
function latestProblem(
  input: PlanResumeInput,
  chosen: ResumeCandidate | null,
  rejected: Rejection[],
): string | null {
  if (!input.latest) return "latest is missing or unreadable";
  if (!input.candidates.some((c) => c.name === input.latest)) {
    return `latest names ${input.latest}, which does not exist`;
  }
  const named = rejected.find((r) => r.name === input.latest);
  if (named) return `latest names ${input.latest}, which is invalid (${named.reasons.join(", ")})`;
  const latestStep = input.candidates.find((c) => c.name === input.latest)!.step;
  if ((input.policy ?? "latest-valid") !== "newest-before" && chosen && chosen.step > latestStep) {
    return `latest names ${input.latest}, older than the newest valid ${chosen.name} ` +
      `(a commit was interrupted before it moved latest)`;
  }
  return null;
}

/** Options for {@linkcode resumeFromRoot}. */
export interface ResumeOptions extends ValidateOptions {
  /** The policy (default `latest-valid`). */
  policy?: ResumePolicy;
  /** For `newest-before`: only steps below this. */
  beforeStep?: number;
  /** For `newest-before`: only checkpoints created before this. */
  beforeTime?: Date;
  /**
   * When `latest` is missing, unreadable or names an invalid checkpoint:
   * rewrite it to the chosen one and quarantine the invalid checkpoints
   * skipped, under the root lock. Without it nothing on disk changes.
   */
  repair?: boolean;
  /** Root lock wait for `repair`, in ms. */
  lockTimeoutMs?: number;
  /** Called at `repair_validated`, before `repair` takes the root lock (tests pause or fail there). */
  faultHook?: (point: RepairPoint) => Promise<void> | void;
}

/** Problems that may be transient, so repair never quarantines for them alone. */
const TRANSIENT: ReadonlySet<string> = new Set([
  "io_error",
  "file_changed",
  "gone",
]);

/**
 * Chooses the checkpoint of `root` to resume from under a policy, validating
 * candidates one at a time and stopping at the first valid one. A root that
 * does not exist yet (a job's first start) has nothing to resume from.
 *
 * Requires `--allow-read`; with `repair` also `--allow-write` and `--allow-sys`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { resumeFromRoot } from "./resume.ts";
 * const root = await Deno.makeTempDir();
 * const decision = await resumeFromRoot(root, { policy: "latest-valid" });
 * assert.ok(decision.chosen === null);
 * await Deno.remove(root, { recursive: true });
 * ```
 */
export async function resumeFromRoot(
  root: string,
  options: ResumeOptions = {},
): Promise<ResumeDecision> {
  const policy = options.policy ?? "latest-valid";
  if (!RESUME_POLICIES.includes(policy)) {
    throw new CkptkitError(
      "invalid_argument",
      `Unknown resume policy "${policy}": expected one of ${RESUME_POLICIES.join(", ")}`,
    );
  }
  if (
    policy === "newest-before" && options.beforeStep === undefined &&
    options.beforeTime === undefined
  ) {
    throw new CkptkitError(
      "invalid_argument",
      "The newest-before policy needs --before-step or --before-time",
    );
  }
  if (
    policy !== "newest-before" &&
    (options.beforeStep !== undefined || options.beforeTime !== undefined)
  ) {
    throw new CkptkitError(
      "invalid_argument",
      "--before-step and --before-time need --policy newest-before",
    );
  }
  let listing;
  try {
    listing = await listRoot(root);
  } catch (err) {
    if (!(err instanceof CkptkitError && err.reason === "not_found")) throw err;
    const empty = planResume({ candidates: [], latest: "", policy, validations: new Map(), depth: options.depth });
    const missing = `the root ${root} does not exist yet`;
    return ordered({ ...empty, latest_problem: missing, message: missing });
  }
  const judged = new Map<string, Judgement>();
  const decision = await decideOnDisk(listing, { ...options, policy }, judged);
  // A folder with no mark of a root has no checkpoint to choose nor latest to fix: repair would only litter it.
  if (!options.repair || !needsRepair(decision) || !(await isRoot(listing))) return decision;
  await options.faultHook?.("repair_validated");
  const lock = await acquireRootLock(listing.root, {
    timeoutMs: options.lockTimeoutMs,
  });
  try {
    // Everything seen so far was seen without the lock: a commit may have landed, an operator may have
    // quarantined or replaced a checkpoint. Decide again on what is there now, re-validating whatever
    // changed, and repair only from that.
    const locked = await decideOnDisk(await listRoot(listing.root), { ...options, policy }, judged);
    if (needsRepair(locked)) locked.actions = await repairLocked(listing.root, locked);
    return locked;
  } finally {
    await lock.release();
  }
}

/** A validation result and the checkpoint's fingerprint taken before it, to tell whether it still holds. */
interface Judgement {
  fingerprint: string | undefined;
  problems: Problem[] | "gone";
}

async function decideOnDisk(
  listing: RootListing,
  options: ResumeOptions & { policy: ResumePolicy },
  judged: Map<string, Judgement>,
): Promise<ResumeDecision> {
  const { policy } = options;
  const pointer = await readLatest(listing.root);
  const latest = pointer.state === "ok" ? pointer.name! : "";
  const candidates: ResumeCandidate[] = await Promise.all(
    listing.checkpoints.map(async (c) => ({
      name: c.name,
      path: c.path,
      step: c.step,
      created_at: options.beforeTime ? await createdAt(c.path) : undefined,
    })),
  );
  const knownGood = policy === "last-known-good" ? await checkKnownGood(listing.root, candidates) : undefined;
  const depth = options.depth ?? "full";
  const validations = new Map<string, Problem[] | "gone">();
  if (!(knownGood?.usable)) {
    for (
      const candidate of resumeOrder({ ...options, candidates, latest, policy })
        .order
    ) {
      // Fingerprints are only needed to reuse a judgement under the repair lock.
      const fingerprint = options.repair ? await fingerprintCheckpoint(candidate.path) : undefined;
      const earlier = judged.get(candidate.name);
      const problems = earlier && earlier.fingerprint !== undefined && earlier.fingerprint === fingerprint
        ? earlier.problems
        : await validateOrGone(candidate.path, options);
      judged.set(candidate.name, { fingerprint, problems });
      validations.set(candidate.name, problems);
      if (problems !== "gone" && problems.length === 0) break;
    }
  }
  const decision = ordered(planResume({
    ...options,
    candidates,
    latest,
    policy,
    validations,
    knownGood,
    depth,
    quarantined: await quarantinedNames(listing.root),
    latestFile: pointer.state !== "missing",
  }));
  return decision;
}

async function validateOrGone(path: string, options: ValidateOptions): Promise<Problem[] | "gone"> {
  try {
    const result = await validateCheckpoint(path, options);
    return !result.ok && !(await stillThere(path)) ? "gone" : result.problems;
  } catch (err) {
    // Only a checkpoint that vanished is "gone"; anything else is a real failure, not to be hidden.
    if (!(err instanceof CkptkitError && err.reason === "not_found")) throw err;
    return "gone";
  }
}

/** Names of the checkpoints in `corrupt/` (their records left aside). */
async function quarantinedNames(root: string): Promise<string[]> {
  const corrupt = `${root}/${CORRUPT_DIR}`;
  try {
    // Never read through a planted link: it could lead anywhere outside the root.
    if (!(await Deno.lstat(corrupt)).isDirectory) return [];
    const names: string[] = [];
    for await (const entry of Deno.readDir(corrupt)) {
      if (!entry.name.startsWith(".") && !entry.name.endsWith(QUARANTINE_RECORD_SUFFIX)) names.push(entry.name);
    }
    return names.sort();
  } catch {
    return [];
  }
}

/** Whether `--repair` has anything to fix: a problem with latest that is not (possibly) transient. */
function needsRepair(decision: ResumeDecision): boolean {
  const namedTransient = decision.rejected.some((r) =>
    r.name === decision.latest && r.reasons.every((x) => TRANSIENT.has(x))
  );
  return decision.latest_problem !== null && !namedTransient;
}

/** The decision with its keys in documentation order (ok and path first). */
function ordered(d: ResumeDecision): ResumeDecision {
  return {
    ok: d.ok,
    path: d.path,
    reason: d.reason,
    message: d.message,
    chosen: d.chosen,
    policy: d.policy,
    depth: d.depth,
    latest: d.latest,
    latest_problem: d.latest_problem,
    fallback: d.fallback,
    fallback_reason: d.fallback_reason,
    rejected: d.rejected,
    excluded: d.excluded,
    actions: d.actions,
  };
}

/** Repairs from a decision taken under the root lock, which the caller holds. */
async function repairLocked(
  root: string,
  decision: ResumeDecision,
): Promise<RepairAction[]> {
  const actions: RepairAction[] = [];
  for (const rejection of decision.rejected) {
    if (rejection.reasons.every((r) => TRANSIENT.has(r))) continue;
    if (!(await stillThere(`${root}/${rejection.name}`))) continue;
    const moved = await quarantineLocked(root, rejection.name, {
      reason: `resume --repair: ${rejection.detail}`,
    });
    actions.push({
      action: "quarantined",
      name: rejection.name,
      detail: moved.to,
    });
  }
  const chosen = decision.chosen;
  if (!chosen || !(await stillThere(chosen.path))) return actions;
  // latest never moves below a checkpoint not proven invalid (one that failed only transiently, or that the
  // policy left out): it may well be valid, and a commit would never have moved latest backwards either.
  const remaining = (await listRoot(root)).checkpoints;
  if (remaining.some((c) => c.step > chosen.step)) return actions;
  const current = await readLatest(root);
  if (current.name !== chosen.name) {
    await writeLatest(root, chosen.name);
    actions.push({
      action: "latest_rewritten",
      name: chosen.name,
      detail: current.state === "ok" ? current.name! : "",
    });
  }
  return actions;
}

async function checkKnownGood(
  root: string,
  candidates: ResumeCandidate[],
): Promise<KnownGoodCheck> {
  const { state } = await readState(root);
  const records = Object.entries(state.known_good).sort((a, b) => b[1].step - a[1].step);
  if (records.length === 0) {
    return { name: null, usable: false, detail: "none recorded" };
  }
  const [name, record] = records[0];
  if (!candidates.some((c) => c.name === name)) {
    return { name, usable: false, detail: `${name} is gone` };
  }
  const path = `${root}/${name}`;
  const fast = await validateCheckpoint(path, { depth: "fast" }).catch(() => undefined);
  if (!fast?.ok || fast.manifest_digest !== record.manifest_digest) {
    return {
      name,
      usable: false,
      detail: `${name} changed since it was validated (manifest or files)`,
    };
  }
  if ((await fingerprintCheckpoint(path)) !== record.fingerprint) {
    return {
      name,
      usable: false,
      detail: `${name} changed since it was validated (size or mtime of a file)`,
    };
  }
  return {
    name,
    usable: true,
    detail: `validated by ${record.by} at ${record.validated_at}`,
  };
}

async function createdAt(path: string): Promise<string | null> {
  const manifest = `${path}/${MANIFEST_NAME}`;
  try {
    // Untrusted like any manifest: never through a link, never a FIFO, never past the size limit.
    if (!(await Deno.lstat(manifest)).isFile) return null;
    const bytes = await readFileLimited(manifest, MAX_MANIFEST_BYTES);
    if (!bytes) return null;
    const raw = JSON.parse(new TextDecoder().decode(bytes));
    return typeof raw?.created_at === "string" ? raw.created_at : null;
  } catch {
    return null;
  }
}

async function stillThere(path: string): Promise<boolean> {
  return await Deno.lstat(path).then(() => true, () => false);
}
