/**
 * Every third-party dependency, by full `npm:` specifier and exact version, in
 * one place. Full specifiers (not bare names mapped in deno.json) keep
 * `mod.ts` and `cli.ts` importable from outside this repository, by path or
 * URL, where our import map does not apply; `deno.lock` pins the resolved
 * packages and their integrity. hash-wasm has a module of its own
 * (`deps_xxhash.ts`) so that hashing workers load it only when xxh128 is asked for.
 *
 * @module
 */

export { Command, CommanderError, InvalidArgumentError, Option } from "npm:@commander-js/extra-typings@14.0.0";
export { default as canonicalize } from "npm:canonicalize@3.0.0";
export { Counter, Gauge, Registry } from "npm:prom-client@15.1.3";
export { parse as parseYaml, YAMLParseError } from "npm:yaml@2.9.1";
export { z } from "npm:zod@4.6.7";
