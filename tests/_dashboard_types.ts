import type { Dashboard } from "@grafana/schema";

/**
 * `T` as it is written in JSON: Grafana's string enums (`FieldColorModeId`,
 * `ThresholdsMode`, ...) become the union of their values, since a JSON
 * string literal is never assignable to a TypeScript string enum.
 */
export type JsonOf<T> = T extends string ? `${T}`
  : T extends number | boolean | null | undefined ? T
  : T extends readonly (infer U)[] ? JsonOf<U>[]
  : T extends object ? { [K in keyof T]: JsonOf<T[K]> }
  : T;

/** A dashboard JSON model as Grafana's published schema types (`@grafana/schema`) describe it. */
export type DashboardJson = JsonOf<Dashboard>;
