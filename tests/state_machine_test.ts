/**
 * The root as a state machine (tests/_model.ts): a few hundred random steps
 * of library, CLI, concurrent and killed operations and environment damage,
 * with every invariant checked after every step. Two fixed seeds, so that CI
 * is reproducible; `deno task torture --model-steps N --seed S` draws new
 * sequences for long runs (a failure prints its seed and sequence).
 */

import { formatModelFailure, formatModelFigures, runModel } from "./_model.ts";
import { tempDir } from "./_helpers.ts";

const STEPS = 150;

for (const seed of [20261202, 1202]) {
  Deno.test(`state machine: ${STEPS} steps, every invariant after every step (seed ${seed})`, async () => {
    await using work = await tempDir("ckptkit-model-");
    const figures = await runModel({ steps: STEPS, seed, work: `${work.path}/w` });
    console.log(formatModelFigures(figures));
    if (figures.violations.length > 0) throw new Error(formatModelFailure(figures));
  });
}
