/**
 * Human formatting of sizes, durations and problems for the CLI's text
 * output.
 *
 * @module
 */

import type { Problem } from "../problems.ts";

/** Formats bytes with binary units: `4.0 MiB`. */
export function formatBytes(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${bytes} B` : `${value.toFixed(1)} ${units[unit]}`;
}

/** Formats seconds: `0.02 s`, `3 min 20 s`, `2 h 5 min`. */
export function formatSeconds(seconds: number): string {
  if (seconds < 60) {
    return `${seconds < 10 ? seconds.toFixed(2) : seconds.toFixed(1)} s`;
  }
  if (seconds < 3600) {
    return `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
  }
  return `${Math.floor(seconds / 3600)} h ${Math.round((seconds % 3600) / 60)} min`;
}

/** One problem as an aligned line: reason, path, detail. */
export function formatProblem(problem: Problem): string {
  const path = problem.path ? `${JSON.stringify(problem.path).slice(1, -1)}: ` : "";
  return `  ${problem.reason.padEnd(20)} ${path}${problem.detail}`;
}

/** `1 problem` / `2 problems`. */
export function plural(count: number, word: string): string {
  return `${count} ${word}${count === 1 ? "" : "s"}`;
}
