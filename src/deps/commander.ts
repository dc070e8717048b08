/**
 * commander with typed options (extra-typings), by full `npm:` specifier and
 * exact version. Each dependency has a module of its own so that a command
 * loads only the packages it uses (start-up is module loading, see
 * bench/RESULTS.md); full specifiers keep `mod.ts` and `cli.ts` importable from
 * outside this repository, where deno.json's import map does not apply, and
 * `deno.lock` pins them.
 *
 * @module
 */

export { Command, CommanderError, InvalidArgumentError, Option } from "npm:@commander-js/extra-typings@14.0.0";
