/**
 * The ckptkit version and the identity of this machine, as written into
 * manifests.
 *
 * @module
 */

import denoJson from "../deno.json" with { type: "json" };
import { hostname } from "node:os";

/** The ckptkit version (from `deno.json`). */
export const VERSION: string = denoJson.version;

/** This machine's host name, or `unknown-host` without `--allow-sys`. */
export function hostName(): string {
  try {
    return hostname();
  } catch {
    return "unknown-host";
  }
}
