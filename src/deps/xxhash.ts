/**
 * hash-wasm, for xxh128: hashing imports it on demand, only when xxh128 is
 * asked for (see `commander.ts` for why each dependency has a module of its
 * own).
 *
 * @module
 */

export { createXXHash128 } from "npm:hash-wasm@4.13.0";
