/**
 * Parsers for command-line values, each throwing commander's
 * `InvalidArgumentError` so that a bad value is a usage error (exit 2) with
 * a message naming the option.
 *
 * @module
 */

import { InvalidArgumentError } from "../deps/commander.ts";
import { parseStep } from "../core/layout.ts";

const UNITS: Record<string, number> = {
  "": 1,
  b: 1,
  k: 1024,
  kb: 1000,
  kib: 1024,
  m: 1024 ** 2,
  mb: 1000 ** 2,
  mib: 1024 ** 2,
  g: 1024 ** 3,
  gb: 1000 ** 3,
  gib: 1024 ** 3,
  t: 1024 ** 4,
  tb: 1000 ** 4,
  tib: 1024 ** 4,
};

/** Parses a byte count: `65536`, `64KiB`, `4MiB`, `1G` (binary), `1GB` (decimal). */
export function parseBytes(value: string): number {
  const match = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(value);
  const unit = match ? UNITS[match[2].toLowerCase()] : undefined;
  if (!match || unit === undefined) {
    throw new InvalidArgumentError(
      "expected a byte count such as 65536, 64KiB, 4MiB or 1GiB.",
    );
  }
  const bytes = Math.round(Number(match[1]) * unit);
  if (!Number.isSafeInteger(bytes)) {
    throw new InvalidArgumentError("the size is too large.");
  }
  return bytes;
}

/** Parses a non-negative integer (a step, a count) in the one syntax of steps everywhere (see `parseStep`). */
export function parseNonNegativeInteger(value: string): number {
  const n = parseStep(value);
  if (n !== undefined) return n;
  throw new InvalidArgumentError(
    /^[0-9]+$/.test(value) && !value.startsWith("0")
      ? "the number is too large."
      : "expected a non-negative integer in decimal digits, without sign, spaces or leading zeros.",
  );
}

/** Parses a positive integer (a number of jobs or files). */
export function parsePositiveInteger(value: string): number {
  const n = parseNonNegativeInteger(value);
  if (n === 0) throw new InvalidArgumentError("expected a positive integer.");
  return n;
}

/** Parses seconds: `30`, `1.5`, `90s`, `5m`, `2h`. */
export function parseSeconds(value: string): number {
  const match = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$/.exec(value);
  if (!match) {
    throw new InvalidArgumentError(
      "expected a duration such as 30, 30s, 5m or 2h.",
    );
  }
  const scale = { ms: 0.001, s: 1, m: 60, h: 3600 }[match[2] ?? "s"]!;
  return Number(match[1]) * scale;
}

/** Collects repeated `--metadata key=value` options into an object. */
export function collectMetadata(
  value: string,
  previous: Record<string, string> | undefined,
): Record<string, string> {
  const cut = value.indexOf("=");
  if (cut <= 0) throw new InvalidArgumentError("expected key=value.");
  return { ...previous, [value.slice(0, cut)]: value.slice(cut + 1) };
}
