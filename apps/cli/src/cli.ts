import { readFileSync } from 'node:fs';
import { Command, CommanderError } from 'commander';
import { authzCommand } from './commands/authz.js';
import { callCommand } from './commands/call.js';
import { cardCommand } from './commands/card.js';
import { dbCommand } from './commands/db.js';
import { devCommand } from './commands/dev.js';
import { svidCommand } from './commands/svid.js';
import { validateCommand } from './commands/validate.js';
import { printable, stdio, type Io } from './io.js';
import { EXIT } from './exit.js';

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
    .version(cliVersion(), '-V, --version', 'print the version of weave')
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
Exit codes: 0 ok (allow), 1 operation failed or denied, 2 usage error, 128 + N stopped by signal N (130 SIGINT, 143 SIGTERM).
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
  dbCommand(program, io);
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
    const e = err as {
      code?: unknown;
      message?: unknown;
      stack?: unknown;
      exitCode?: unknown;
      cause?: unknown;
    };
    // WeaveErrors (and CliErrors) carry a string code; checked by shape so --help loads no library.
    const own = typeof e?.code === 'string' ? e.code : undefined;
    // A peer refused for not being who it must be is reported as that, as SecureAgent.callAgent
    // reports it: the code of what it stopped (AGENT_CARD_UNREACHABLE …) would say "unreachable".
    const code = causeCodes(e?.cause, own).includes(PEER_VERIFICATION_FAILED)
      ? PEER_VERIFICATION_FAILED
      : (own ?? 'ERROR');
    const message = typeof e?.message === 'string' ? e.message : String(err);
    // Node's system errors start their message with their code already ("ENOTDIR: not a directory").
    // Messages quote peers, servers and files; their lines are kept (every problem of a config), their controls shown.
    const line = message.startsWith(`${code}: `) ? message : `${code}: ${message}`;
    io.err(printable(line, { lines: true }));
    for (const c of causeCodes(e?.cause, code)) io.err(`  caused by ${c}`);
    if (debug && typeof e?.stack === 'string') io.err(printable(e.stack, { lines: true }));
    return typeof e?.exitCode === 'number' ? e.exitCode : EXIT.failed;
  }
}

/** The package's version; package.json is one folder up from src/ and from dist/ alike. */
function cliVersion(): string {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as {
    version: string;
  };
  return pkg.version;
}

/** The code of `PeerVerificationError` (@weave/transport), spelled out so printing an error loads no library. */
const PEER_VERIFICATION_FAILED = 'PEER_VERIFICATION_FAILED';

/** The codes of the WeaveErrors under `cause` (e.g. PERMISSION_DENIED under CALL_DENIED), `top` left out. */
function causeCodes(cause: unknown, top: string | undefined): string[] {
  const out: string[] = [];
  const seen = new Set<unknown>();
  let c = cause as { code?: unknown; cause?: unknown } | undefined;
  while (c && typeof c === 'object' && !seen.has(c) && out.length < 5) {
    seen.add(c);
    if (
      typeof c.code === 'string' &&
      /^[A-Z][A-Z0-9_]+$/.test(c.code) &&
      c.code !== top &&
      !out.includes(c.code)
    ) {
      out.push(c.code);
    }
    c = c.cause as typeof c;
  }
  return out;
}

function allCommands(cmd: Command): Command[] {
  return cmd.commands.flatMap((c) => [c, ...allCommands(c)]);
}

function signalled(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    // Stays installed: under tsx, Ctrl-C arrives twice (terminal and relay), and
    // the second must not kill the process while it closes its sockets.
    const on = (s: NodeJS.Signals): void => resolve(s);
    process.on('SIGINT', on);
    process.on('SIGTERM', on);
  });
}
