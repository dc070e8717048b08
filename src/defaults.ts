/**
 * Defaults and choices the CLI declares its options with, in a module of
 * their own so that declaring options loads none of the code behind them
 * (start-up is module loading; see bench/RESULTS.md).
 *
 * @module
 */

/** Largest world size accepted. */
export const MAX_WORLD_SIZE = 1_000_000;
/** Default time a rank waits for the commit with `wait`, in ms. */
export const DEFAULT_WAIT_TIMEOUT_MS = 600_000;
/** Default age after which a staging folder counts as a crashed write. */
export const DEFAULT_STALE_STAGING_S = 3600;
/** How `resume` chooses. */
export type ResumePolicy = "latest-valid" | "last-known-good" | "newest-before";
/** Every {@linkcode ResumePolicy}. */
export const RESUME_POLICIES: readonly ResumePolicy[] = [
  "latest-valid",
  "last-known-good",
  "newest-before",
];
