/**
 * `resume`: chooses the checkpoint a restarting training job should load.
 * Planning is pure (what is on disk and what validated in, a decision out)
 * and tested without files; {@linkcode resumeFromRoot} does the validating.
 *
 * @module
 */

import { readLatest } from "./latest.ts";
import { listRoot } from "./root.ts";
import {
  validateCheckpoint,
  type ValidateOptions,
  type ValidationResult,
} from "./validate.ts";
import type { Problem } from "./problems.ts";

/** A checkpoint considered for resuming. */
export interface ResumeCandidate {
  /** Folder name. */
  name: string;
  /** Absolute path. */
  path: string;
  /** Step. */
  step: number;
}

/** A candidate that was not chosen, and why. */
export interface Rejection {
  /** Folder name. */
  name: string;
  /** Step. */
  step: number;
  /** Stable reasons of its problems (or `gone`). */
  reasons: string[];
  /** The first problem, for humans. */
  detail: string;
}

/** The decision; also the `--json` document of `ckptkit resume`. */
export interface ResumeDecision {
  /** The chosen checkpoint, or null when there is nothing to resume from. */
  chosen: ResumeCandidate | null;
  /** Candidates tried and rejected, in the order tried. */
  rejected: Rejection[];
  /** True when the chosen checkpoint is not the one `latest` names. */
  fallback: boolean;
  /** What `latest` named ("" when missing or unreadable). */
  latest: string;
  /** The policy used. */
  policy: "latest-valid";
}

/**
 * The order in which candidates are tried under `latest-valid`: the one
 * `latest` names first, then every other from the highest step down.
 *
 * @example
 * ```ts
 * import { resumeOrder } from "./resume.ts";
 * const order = resumeOrder(
 *   [{ name: "step-30", path: "/r/step-30", step: 30 }, { name: "step-20", path: "/r/step-20", step: 20 }],
 *   "step-20",
 * );
 * console.assert(order[0].name === "step-20");
 * ```
 */
export function resumeOrder(
  candidates: readonly ResumeCandidate[],
  latest: string,
): ResumeCandidate[] {
  const sorted = [...candidates].sort((a, b) => b.step - a.step);
  const named = sorted.find((c) => c.name === latest);
  return named ? [named, ...sorted.filter((c) => c !== named)] : sorted;
}

/**
 * Plans a resume from candidates and their validation results (pure): the
 * first candidate in {@linkcode resumeOrder} whose result is ok.
 *
 * @example
 * ```ts
 * import { planResume } from "./resume.ts";
 * const candidates = [
 *   { name: "step-20", path: "/r/step-20", step: 20 },
 *   { name: "step-10", path: "/r/step-10", step: 10 },
 * ];
 * const decision = planResume(candidates, "step-20", new Map([
 *   ["step-20", [{ reason: "hash_mismatch", path: "a.bin", detail: "…" }]],
 *   ["step-10", []],
 * ]));
 * console.assert(decision.chosen?.name === "step-10" && decision.fallback);
 * ```
 */
export function planResume(
  candidates: readonly ResumeCandidate[],
  latest: string,
  problems: ReadonlyMap<string, readonly Problem[] | "gone">,
): ResumeDecision {
  const rejected: Rejection[] = [];
  for (const candidate of resumeOrder(candidates, latest)) {
    const found = problems.get(candidate.name);
    if (found === undefined) break;
    if (found === "gone") {
      rejected.push({
        name: candidate.name,
        step: candidate.step,
        reasons: ["gone"],
        detail: "removed while resuming",
      });
      continue;
    }
    if (found.length === 0) {
      return {
        chosen: candidate,
        rejected,
        fallback: candidate.name !== latest,
        latest,
        policy: "latest-valid",
      };
    }
    rejected.push({
      name: candidate.name,
      step: candidate.step,
      reasons: [...new Set(found.map((p) => p.reason))],
      detail: `${found[0].reason}: ${
        found[0].path ? `${found[0].path}: ` : ""
      }${found[0].detail}`,
    });
  }
  return {
    chosen: null,
    rejected,
    fallback: rejected.length > 0,
    latest,
    policy: "latest-valid",
  };
}

/**
 * Chooses the newest checkpoint of `root` that validates at the given depth,
 * starting from the one `latest` names, validating one at a time and stopping
 * at the first valid one. Changes nothing on disk.
 *
 * Requires `--allow-read`.
 *
 * @example
 * ```ts
 * import { resumeFromRoot } from "./resume.ts";
 * const root = await Deno.makeTempDir();
 * const decision = await resumeFromRoot(root);
 * console.assert(decision.chosen === null);
 * await Deno.remove(root, { recursive: true });
 * ```
 */
export async function resumeFromRoot(
  root: string,
  options: ValidateOptions = {},
): Promise<ResumeDecision> {
  const listing = await listRoot(root);
  const pointer = await readLatest(listing.root);
  const latest = pointer.state === "ok" ? pointer.name! : "";
  const results = new Map<string, Problem[] | "gone">();
  for (const candidate of resumeOrder(listing.checkpoints, latest)) {
    let result: ValidationResult;
    try {
      result = await validateCheckpoint(candidate.path, options);
    } catch {
      results.set(candidate.name, "gone");
      continue;
    }
    results.set(candidate.name, result.problems);
    if (result.ok) break;
  }
  return planResume(listing.checkpoints, latest, results);
}
