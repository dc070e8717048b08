/**
 * hash-wasm, by full `npm:` specifier, apart from `deps.ts`: hashing workers
 * import it on demand for xxh128 only, and would otherwise start by
 * evaluating every other dependency.
 *
 * @module
 */

export { createXXHash128 } from "npm:hash-wasm@4.13.0";
