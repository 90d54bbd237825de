import { Command, CommanderError } from 'commander';
import { WeaveError } from '@weave/identity';
import { authzCommand } from './commands/authz.js';
import { callCommand } from './commands/call.js';
import { cardCommand } from './commands/card.js';
import { devCommand } from './commands/dev.js';
import { svidCommand } from './commands/svid.js';
import { validateCommand } from './commands/validate.js';
import { stdio, type Io } from './io.js';
import { CliError, EXIT } from './shared.js';

/** Options of {@link run}, for driving the CLI in-process. */
export interface RunOptions {
  readonly io?: Io;
  /** Resolves when a long-running command (`weave dev`) should stop. Default: SIGINT or SIGTERM. */
  readonly stop?: () => Promise<unknown>;
}

/**
 * Runs `weave <argv>` and resolves with the exit code: 0 ok, 1 the operation
 * failed or was denied, 2 usage error. Errors are printed as `code: message`
 * on stderr (with the stack under `--debug`).
 */
export async function run(argv: readonly string[], options: RunOptions = {}): Promise<number> {
  const io = options.io ?? stdio;
  let exitCode: number = EXIT.ok;
  const program = new Command('weave')
    .description(
      'Weave: secure agent-to-agent calls — SPIFFE identity, mutual TLS, policy on every call, A2A on the wire.',
    )
    .option('--debug', 'print stack traces and library logs (on stderr)')
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride()
    .configureOutput({
      writeOut: (s) => io.out(s.replace(/\n$/, '')),
      writeErr: (s) => io.err(s.replace(/\n$/, '')),
    })
    .addHelpText(
      'after',
      `
Exit codes: 0 ok (allow), 1 operation failed or denied, 2 usage error.
Commands that need an identity read it from the SPIFFE Workload API: --socket or $SPIFFE_ENDPOINT_SOCKET.`,
    );
  program.configureHelp({ sortSubcommands: false });

  devCommand(program, io, options.stop ?? signalled);
  svidCommand(program, io);
  cardCommand(program, io);
  callCommand(program, io);
  authzCommand(program, io, (c) => {
    exitCode = c;
  });
  validateCommand(program, io);
  // Every subcommand shares the output, error handling and exit codes of the root.
  for (const cmd of allCommands(program)) {
    cmd
      .exitOverride()
      .configureOutput(program.configureOutput())
      .showHelpAfterError('(run with --help for usage)');
  }

  try {
    await program.parseAsync([...argv], { from: 'user' });
    return exitCode;
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version') return EXIT.ok;
      // commander already printed what was wrong.
      return EXIT.usage;
    }
    const debug = argv.includes('--debug');
    if (err instanceof WeaveError) {
      io.err(`${err.code}: ${err.message}`);
      if (debug && err.stack) io.err(err.stack);
      return err instanceof CliError ? err.exitCode : EXIT.failed;
    }
    io.err(`ERROR: ${err instanceof Error ? err.message : String(err)}`);
    if (debug && err instanceof Error && err.stack) io.err(err.stack);
    return EXIT.failed;
  }
}

function allCommands(cmd: Command): Command[] {
  return cmd.commands.flatMap((c) => [c, ...allCommands(c)]);
}

function signalled(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const on = (s: NodeJS.Signals): void => {
      process.off('SIGINT', on);
      process.off('SIGTERM', on);
      resolve(s);
    };
    process.on('SIGINT', on);
    process.on('SIGTERM', on);
  });
}
