/**
 * The instants of the commit protocol, in a module of their own so that the
 * CLI can check the test-only fault variables without loading the commit code.
 *
 * @module
 */

/**
 * Instants of the commit protocol at which a fault hook is called, in order.
 * Tests pause or fail there to prove a crash at that instant is harmless.
 * `part_hashed` and `part_recorded` happen only in multi-rank commits, in
 * every rank, before the merging rank reaches the others.
 */
export const COMMIT_POINTS = [
  "part_hashed",
  "part_recorded",
  "manifest_written",
  "folders_synced",
  "before_rename",
  "after_rename",
  "before_latest_rename",
  "committed",
] as const;

/** One of the {@linkcode COMMIT_POINTS}. */
export type CommitPoint = typeof COMMIT_POINTS[number];

/**
 * Instants outside the commit protocol at which a fault hook is called:
 * `repair_validated` comes after `resume --repair` validated without the root
 * lock and before it takes the lock, `quarantine_validated` the same for
 * `scan --quarantine`: there a concurrent commit or operator may change the
 * root under them.
 */
export const REPAIR_POINTS = ["repair_validated", "quarantine_validated"] as const;

/** One of the {@linkcode REPAIR_POINTS}. */
export type RepairPoint = typeof REPAIR_POINTS[number];
