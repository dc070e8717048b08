/**
 * The YAML parser, loaded only when a config file is read (see `commander.ts`
 * for why each dependency has a module of its own).
 *
 * @module
 */

export { isScalar, parseDocument, YAMLParseError } from "npm:yaml@2.9.1";
