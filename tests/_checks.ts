/** Checks on a root shared by the training-loop tests (Python toy loop, PyTorch example). */

import assert from "node:assert/strict";
import { validateCheckpoint } from "../src/core/validate.ts";
import { names } from "./_helpers.ts";

/** The root's `step-N` folders, by step. */
export async function stepDirs(root: string): Promise<string[]> {
  return (await names(root)).filter((n) => /^step-\d+$/.test(n)).sort((a, b) =>
    Number(a.slice(5)) - Number(b.slice(5))
  );
}

/** Every `step-N` of the root validates in full. */
export async function assertAllValid(root: string, context: string): Promise<void> {
  for (const name of await stepDirs(root)) {
    const result = await validateCheckpoint(`${root}/${name}`);
    assert.ok(result.ok, `${name} ${context}: ${JSON.stringify(result.problems)}`);
  }
}
