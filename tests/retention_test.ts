import assert from "node:assert/strict";
import {
  keepersToVerify,
  planRetention,
  type RetentionCheckpoint,
  type RetentionInput,
} from "../src/core/retention.ts";

function checkpoints(spec: string): RetentionCheckpoint[] {
  // "30x 20 10~ 5?" : x = invalid, ? = unchecked, ~ = valid by a shallow check only, bare = valid (hashed in full)
  return spec.split(" ").map((token) => {
    const step = Number(token.replace(/[x?~]$/, ""));
    const status = token.endsWith("x") ? "invalid" : token.endsWith("?") ? "unchecked" : "valid";
    return {
      name: `step-${step}`,
      step,
      status,
      reasons: status === "invalid" ? ["hash_mismatch"] : [],
      verified: status === "valid" && !token.endsWith("~"),
    };
  });
}

function input(spec: string, options: Partial<RetentionInput> = {}): RetentionInput {
  return {
    checkpoints: checkpoints(spec),
    latest: null,
    lastKnownGood: null,
    keepLast: 2,
    keepEvery: 0,
    staging: [],
    staleStagingAfterS: 3600,
    ...options,
  };
}

function plan(spec: string, options: Partial<RetentionInput> = {}) {
  const result = planRetention(input(spec, options));
  return {
    ...result,
    kept: result.keep.map((k) => k.name.slice(5)).join(" "),
    deleted: result.delete.map((d) => d.name.slice(5)).join(" "),
  };
}

Deno.test("keep-last keeps the newest N valid checkpoints and deletes the older ones", () => {
  const p = plan("50 40 30 20 10", { latest: "step-50" });
  assert.equal(p.kept, "50 40");
  assert.equal(p.deleted, "30 20 10");
  assert.match(p.delete[0].why, /older than the 2 newest valid checkpoints/);
});

Deno.test("a run of corrupt saves does not push the good checkpoints out", () => {
  const p = plan("60x 50x 40x 30 20 10", { latest: "step-60" });
  assert.equal(
    p.kept,
    "60 30 20",
    "60 because latest names it; 30 and 20 are the two newest valid",
  );
  assert.equal(p.deleted, "50 40 10");
  assert.match(p.delete[0].why, /invalid \(hash_mismatch\)/);
});

Deno.test("keep-every keeps milestones whatever their age", () => {
  const p = plan("3000 2500 2000 1500 1000 500", {
    keepLast: 1,
    keepEvery: 1000,
  });
  assert.equal(p.kept, "3000 2000 1000");
  assert.ok(p.keep[0].reasons.includes("keep-every 1000"));
  assert.ok(p.keep[0].reasons.includes("newest valid"));
});

Deno.test("the checkpoint latest names is never deleted, even when old", () => {
  const p = plan("40 30 20 10", { latest: "step-10", keepLast: 1 });
  assert.equal(p.kept, "40 10");
  assert.deepEqual(p.keep[1].reasons, ["named by latest"]);
});

Deno.test("the newest valid and the last-known-good are kept even with keep-last 0", () => {
  const p = plan("40x 30 20 10", {
    keepLast: 0,
    keepEvery: 0,
    lastKnownGood: "step-10",
  });
  assert.equal(p.kept, "30 10");
  assert.deepEqual(p.keep[0].reasons, ["newest valid"]);
  assert.deepEqual(p.keep[1].reasons, ["last known good"]);
});

Deno.test("unchecked checkpoints newer than the kept ones survive; older ones go", () => {
  // 50 appeared after validation (a commit raced gc); 5 was never validated because keep-last was satisfied.
  const p = plan("50? 40 30 20? 5?", { keepLast: 2 });
  assert.equal(p.kept, "50 40 30");
  assert.equal(p.deleted, "20 5");
  const fewer = plan("50? 40x 30?", { keepLast: 2 });
  assert.equal(
    fewer.kept,
    "50 30",
    "with fewer valid than keep-last, nothing unchecked is deleted",
  );
});

Deno.test("nothing is deleted for its age on the word of a keeper checked only shallowly", () => {
  // 30 passed a fast check only: it may be rotten, so 10 (older than the 2 newest valid) must stay.
  const p = plan("40 30~ 20x 10", { latest: "step-40" });
  assert.equal(p.kept, "40 30 10");
  assert.equal(p.deleted, "20", "an invalid one still goes: its own damage is the reason");
  assert.deepEqual(p.keep[2].reasons, ["a checkpoint kept in its place is not validated in full"]);
  assert.deepEqual(keepersToVerify(input("40 30~ 20x 10", { latest: "step-40" })), ["step-30"]);
  // Unverified keepers that license nothing (keep-every keeps the rest) need no full check.
  assert.deepEqual(keepersToVerify(input("40~ 30~ 20 10", { keepEvery: 10 })), []);
  assert.equal(plan("40~ 30~ 20 10", { keepEvery: 10 }).deleted, "");
  // Once verified, the same plan deletes.
  assert.equal(plan("40 30 20x 10", { latest: "step-40" }).deleted, "20 10");
  // keep-last 0: the newest valid alone licenses deleting the older ones.
  assert.deepEqual(keepersToVerify(input("30~ 20 10?", { keepLast: 0 })), ["step-30"]);
  assert.equal(plan("30~ 20 10?", { keepLast: 0 }).deleted, "");
});

Deno.test("stale staging goes, a write in progress stays", () => {
  const p = plan("10", {
    staging: [{ name: ".staging-step-20-a", age_s: 7200 }, {
      name: ".staging-step-30-b",
      age_s: 5,
    }],
  });
  assert.deepEqual(p.delete_staging.map((s) => s.name), [".staging-step-20-a"]);
  assert.deepEqual(p.keep_staging.map((s) => s.name), [".staging-step-30-b"]);
});

Deno.test("bad retention numbers are refused before planning", () => {
  assert.throws(
    () => plan("10", { keepLast: -1 }),
    /'keepLast' must be a non-negative integer: current value is -1/,
  );
  assert.throws(() => plan("10", { keepEvery: 1.5 }), /'keepEvery'/);
});
