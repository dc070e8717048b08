/**
 * `ckptkit write`: the demo writer of the quickstart. Writes a checkpoint of
 * synthetic data through the library writer (hashing while writing) and
 * commits it.
 *
 * @module
 */

import { Command, Option } from "../deps/commander.ts";
import { randomFillSync } from "node:crypto";
import { type CliHandle, EXIT } from "./context.ts";
import { reportCommit } from "./commit_output.ts";
import {
  hashingOptions,
  identityOptions,
  lockTimeoutOption,
  resolveHashing,
  resolveLockTimeoutMs,
  resolveRoot,
  rootOption,
  stepOption,
} from "./options.ts";
import { parseBytes, parsePositiveInteger } from "./parse.ts";

const CHUNK = 1024 * 1024;

/** Builds the `write` command. */
export function writeCommand(cli: CliHandle) {
  const [jobId, runId, metadata] = identityOptions();
  const [algorithm, sampleBytes, jobs] = hashingOptions();
  return new Command("write")
    .description(
      "write a checkpoint of synthetic data and commit it (the quickstart's demo writer)",
    )
    .addOption(rootOption())
    .addOption(jobId)
    .addOption(runId)
    .addOption(stepOption().makeOptionMandatory())
    .addOption(
      new Option("--files <n>", "number of shard files").argParser(
        parsePositiveInteger,
      ).default(4),
    )
    .addOption(
      new Option(
        "--file-size <bytes>",
        "size of each shard, e.g. 1048576 or 64MiB",
      ).argParser(parseBytes).default(
        1024 * 1024,
        "1MiB",
      ),
    )
    .addOption(metadata)
    .addOption(algorithm)
    .addOption(sampleBytes)
    .addOption(jobs)
    .addOption(lockTimeoutOption())
    .action(async (opts) => {
      await cli.run(async (ctx) => {
        const { openCheckpointWriter } = await import("../core/writer.ts");
        const root = resolveRoot(opts.root, ctx.config);
        const hashing = resolveHashing(opts, ctx.config);
        const writer = await openCheckpointWriter(root, {
          step: opts.step,
          jobId: opts.jobId ?? ctx.config.job_id,
          runId: opts.runId ?? ctx.config.run_id,
          metadata: { ...opts.metadata, synthetic: true },
          algorithm: hashing.algorithm,
          sampleBytes: hashing.sampleBytes,
          lockTimeoutMs: resolveLockTimeoutMs(opts.lockTimeout, ctx.config),
          faultHook: ctx.faultHook,
        });
        try {
          const width = String(opts.files).length;
          for (let i = 0; i < opts.files; i++) {
            const name = `shard-${String(i).padStart(Math.max(5, width), "0")}-of-${
              String(opts.files).padStart(Math.max(5, width), "0")
            }.bin`;
            await writer.writeFile(name, syntheticData(opts.fileSize));
          }
          await writer.writeFile(
            "trainer_state.json",
            JSON.stringify({
              step: opts.step,
              job_id: opts.jobId ?? null,
              run_id: opts.runId ?? null,
            }) + "\n",
          );
          reportCommit(ctx, await writer.commit());
        } catch (err) {
          await writer.abort().catch(() => {});
          throw err;
        }
        return EXIT.ok;
      });
    });
}

function* syntheticData(size: number): Generator<Uint8Array> {
  const buffer = new Uint8Array(Math.min(CHUNK, Math.max(size, 1)));
  for (let left = size; left > 0; left -= buffer.length) {
    const chunk = buffer.subarray(0, Math.min(left, buffer.length));
    randomFillSync(chunk);
    yield chunk;
  }
}
