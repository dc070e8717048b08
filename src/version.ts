/**
 * The ckptkit version and the identity of this machine, as written into
 * manifests.
 *
 * @module
 */

import denoJson from "../deno.json" with { type: "json" };
import { hostname } from "node:os";

/**
 * The ckptkit version: `deno.json`'s, imported as a JSON module, so that
 * `deno compile` embeds it in the binary and nothing reads it at run time.
 */
export const VERSION: string = denoJson.version;

/** This machine's host name, or `unknown-host` without `--allow-sys=hostname`. */
export function hostName(): string {
  try {
    return hostname();
  } catch {
    return "unknown-host";
  }
}
