/**
 * The command tree of the `ckptkit` CLI, declared with commander: global
 * options, one file per command, help and suggestions from the framework.
 *
 * @module
 */

import { Command, CommanderError, Option } from "../deps/commander.ts";
import { LOG_FORMATS, LOG_LEVELS } from "../log.ts";
import { VERSION } from "../version.ts";
import { commitCommand } from "./commit.ts";
import { type CliHandle, type CliIo, EXIT, type GlobalOptions, runCommand } from "./context.ts";
import { emitMetricsCommand } from "./emit_metrics.ts";
import { exportSumsCommand } from "./export_sums.ts";
import { gcCommand } from "./gc.ts";
import { serveCommand } from "./serve.ts";
import { quarantineCommand } from "./quarantine.ts";
import { reportCommand } from "./report.ts";
import { resumeCommand } from "./resume.ts";
import { scanCommand } from "./scan.ts";
import { sealCommand } from "./seal.ts";
import { validateCommand } from "./validate.ts";
import { writeCommand } from "./write.ts";

/**
 * Runs the CLI with `args` (without the program name) and returns the exit
 * code: 0 success, 1 integrity problems, 2 usage or config error, 3 nothing
 * to resume, 4 runtime error.
 */
export async function runCli(args: string[], io: CliIo): Promise<number> {
  const { program, exitCode } = buildProgram(io);
  try {
    await program.parseAsync(args, { from: "user" });
  } catch (err) {
    if (err instanceof CommanderError) {
      return err.exitCode === 0 ? EXIT.ok : EXIT.usage;
    }
    throw err;
  }
  return exitCode();
}

/** The command tree and the exit code of the command it ran. */
export interface CliProgram {
  /** The `ckptkit` command with every command and option; parsing it runs the command. */
  program: Command;
  /** The exit code of the last command run by parsing `program` (0 before any). */
  exitCode: () => number;
}

/**
 * Builds the `ckptkit` command tree without parsing anything: {@linkcode runCli}
 * parses it, and the command reference (`deno task docs`) is rendered from it.
 */
export function buildProgram(io: CliIo): CliProgram {
  let exitCode: number = EXIT.ok;
  const program = new Command("ckptkit")
    .description(
      "Crash-safe checkpoints for long-running training jobs: atomic commits with sha256 manifests, " +
        "validation, and resume planning.",
    )
    .version(VERSION, "-V, --version")
    .addOption(
      new Option(
        "--config <path>",
        "YAML config file; flags override its values",
      ).env("CKPTKIT_CONFIG"),
    )
    .addOption(
      new Option("--json", "print one JSON document on stdout instead of text"),
    )
    .addOption(
      new Option(
        "--log-level <level>",
        "lowest severity of the log lines on stderr (config: log_level; default info)",
      )
        .choices(LOG_LEVELS)
        .env("CKPTKIT_LOG_LEVEL"),
    )
    .addOption(
      new Option(
        "--log-format <format>",
        "log lines on stderr as json (one object per line) or text (one readable line per event) " +
          "(config: log.format; default text when stderr is a terminal, json otherwise)",
      )
        .choices(LOG_FORMATS)
        .env("CKPTKIT_LOG_FORMAT"),
    )
    .exitOverride()
    .configureOutput({
      writeOut: io.stdout,
      writeErr: io.stderr,
      // Usage errors end with their reason like every other error: one line, greppable.
      outputError: (text, write) =>
        write(
          text.startsWith("error: ") ? `ckptkit: ${text.trim().replace(/\s*\n\s*/g, " ")} [invalid_argument]\n` : text,
        ),
    })
    .showHelpAfterError("(add --help for usage)")
    .showSuggestionAfterError(true);

  const globals = (): GlobalOptions => program.opts();
  const cli: CliHandle = {
    io,
    globals,
    run: async (body) => {
      exitCode = await runCommand(io, globals(), body);
    },
  };
  for (
    const command of [
      writeCommand(cli),
      commitCommand(cli),
      sealCommand(cli),
      validateCommand(cli),
      exportSumsCommand(cli),
      scanCommand(cli),
      reportCommand(cli),
      resumeCommand(cli),
      quarantineCommand(cli),
      gcCommand(cli),
      emitMetricsCommand(cli),
      serveCommand(cli),
    ]
  ) {
    command.copyInheritedSettings(program);
    // Subcommands (`report merge`) need the program's settings too: exit override, output, suggestions.
    for (const sub of command.commands) sub.copyInheritedSettings(command);
    program.addCommand(command);
  }
  return { program, exitCode: () => exitCode };
}
