/**
 * Fuzzing of the two parsers of untrusted text, the CI-sized variant of
 * `scripts/fuzz.ts` (same generators, same rules): a few thousand random and
 * mutated manifests and configs from a seeded PRNG, each run in a watched
 * worker with a 2 s limit.
 *
 * - `parseManifest` never throws: it returns problems.
 * - `parseConfig` returns a config or throws a `CkptkitError` with reason
 *   `config_invalid`; nothing else escapes.
 * - No input takes longer than 2 s.
 *
 * The seed is fixed (reproducible in CI); `FUZZ_SEED=<n>` picks another, and a
 * failure prints the seed and a command that replays each failing input.
 */

import assert from "node:assert/strict";
import { fuzz, makeInput, report, type Target } from "../scripts/fuzz.ts";

const SEED = Number(Deno.env.get("FUZZ_SEED") ?? 20261129);
const TRIALS = Number(Deno.env.get("FUZZ_TRIALS") ?? 1500);
// A hang is an input still being parsed after 30 s: a busy machine must not turn a slow parse into a "hang".
const TIMEOUT_MS = 30_000;

async function fuzzTarget(target: Target): Promise<void> {
  const summary = await fuzz({ seed: SEED, trials: TRIALS, targets: [target], timeoutMs: TIMEOUT_MS });
  assert.equal(summary.inputs, TRIALS);
  assert.ok(
    summary.crashes === 0 && summary.hangs === 0,
    `seed ${SEED} (set FUZZ_SEED to change it):\n${report(summary, [target])}`,
  );
}

Deno.test(`fuzz: parseManifest never throws and never hangs (${TRIALS} inputs)`, async () => {
  await fuzzTarget("manifest");
});

Deno.test(`fuzz: parseConfig throws only config_invalid and never hangs (${TRIALS} inputs)`, async () => {
  await fuzzTarget("config");
});

Deno.test("fuzz: an input depends only on its seed, target and trial number", async () => {
  for (const target of ["manifest", "config"] as const) {
    for (const trial of [0, 7, 1234]) {
      const [a, b] = [await makeInput(SEED, target, trial), await makeInput(SEED, target, trial)];
      assert.deepEqual(a, b);
    }
    const texts = new Set<string>();
    for (let trial = 0; trial < 20; trial++) texts.add((await makeInput(SEED, target, trial)).text);
    assert.ok(texts.size > 15, `${target}: inputs should differ from trial to trial`);
  }
});
