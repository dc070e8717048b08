/**
 * RFC 8785 canonical JSON, for the manifest's self-digest (see `commander.ts`
 * for why each dependency has a module of its own).
 *
 * @module
 */

export { default as canonicalize } from "npm:canonicalize@3.0.0";
