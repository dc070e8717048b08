/**
 * prom-client, for the Prometheus exposition text; loaded only by the
 * commands that emit metrics (see `commander.ts` for why each dependency has
 * a module of its own).
 *
 * @module
 */

export { Counter, Gauge, Registry } from "npm:prom-client@15.1.3";
