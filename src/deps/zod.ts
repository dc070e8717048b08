/**
 * zod, for checking manifests, parts, reports and configs read from disk
 * (see `commander.ts` for why each dependency has a module of its own).
 *
 * @module
 */

export { z } from "npm:zod@4.6.7";
