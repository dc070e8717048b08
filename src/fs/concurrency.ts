/**
 * A small bounded-concurrency map used to hash many files at once.
 *
 * @module
 */

/** Default number of files processed at once: the machine's core count. */
export function defaultConcurrency(): number {
  return Math.max(1, navigator.hardwareConcurrency || 1);
}

/**
 * Runs `fn` over `items` with at most `limit` calls in flight, and returns
 * the results in input order. Items are started in input order, so callers
 * sort them first (largest file first, so one big file does not finish
 * last alone).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { mapConcurrent } from "./concurrency.ts";
 * const doubled = await mapConcurrent([1, 2, 3], 2, async (n) => n * 2);
 * assert.ok(doubled.join() === "2,4,6");
 * ```
 */
export async function mapConcurrent<T, R>(
  items: readonly T[],
  limit: number,
  fn: (item: T, index: number) => Promise<R>,
): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  const workers = Array.from(
    { length: Math.max(1, Math.min(limit, items.length)) },
    async () => {
      while (next < items.length) {
        const index = next++;
        results[index] = await fn(items[index], index);
      }
    },
  );
  await Promise.all(workers);
  return results;
}
