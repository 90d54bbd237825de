import { realpathSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { WeaveError } from '../errors.js';
import { DevWorkloadApiServer } from './dev-server.js';

const USAGE = `usage: weave-identity dev --state-dir DIR --trust-domain TD --workload NAME=SPIFFE_ID [--workload …]
                          [--x509-ttl SECONDS] [--jwt-ttl SECONDS] [--socket-dir DIR]

Runs the dev Workload API server: one Unix socket per workload, backed by a dev CA
persisted in DIR. Prints one line per workload:
  workload NAME SPIFFE_ID unix:///…/NAME.sock
then "ready". Stops on SIGINT or SIGTERM.`;

/** Output sinks, injectable so the command can be driven in-process. */
export interface CliIo {
  out(line: string): void;
  err(line: string): void;
}

const stdio: CliIo = {
  out: (l) => process.stdout.write(`${l}\n`),
  err: (l) => process.stderr.write(`${l}\n`),
};

class UsageError extends Error {}

function positiveInt(name: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  if (!/^[0-9]+$/.test(value) || Number(value) <= 0)
    throw new UsageError(`${name} must be a positive integer`);
  return Number(value);
}

/**
 * Runs `weave-identity <command> …`. Resolves with the exit code once the
 * command finished; for `dev` that is after `stop` (default: SIGINT/SIGTERM).
 */
export async function main(
  argv: readonly string[],
  io: CliIo = stdio,
  stop: Promise<unknown> = signalled(),
): Promise<number> {
  const [command, ...rest] = argv;
  if (command === undefined || command === '--help' || command === '-h' || command === 'help') {
    io.out(USAGE);
    return command === undefined ? 2 : 0;
  }
  if (command !== 'dev') {
    io.err(`weave-identity: unknown command ${JSON.stringify(command)}\n${USAGE}`);
    return 2;
  }
  let options: Parameters<typeof DevWorkloadApiServer.start>[0];
  try {
    const { values } = parseArgs({
      args: [...rest],
      strict: true,
      allowPositionals: false,
      options: {
        'state-dir': { type: 'string' },
        'trust-domain': { type: 'string' },
        workload: { type: 'string', multiple: true },
        'x509-ttl': { type: 'string' },
        'jwt-ttl': { type: 'string' },
        'socket-dir': { type: 'string' },
      },
    });
    const stateDir = values['state-dir'];
    const trustDomain = values['trust-domain'];
    if (!stateDir) throw new UsageError('--state-dir is required');
    if (!trustDomain) throw new UsageError('--trust-domain is required');
    const workloads: Record<string, string> = {};
    for (const w of values.workload ?? []) {
      const eq = w.indexOf('=');
      if (eq <= 0) throw new UsageError(`--workload ${JSON.stringify(w)} must be NAME=SPIFFE_ID`);
      const name = w.slice(0, eq);
      if (name in workloads) throw new UsageError(`workload ${name} is given twice`);
      workloads[name] = w.slice(eq + 1);
    }
    if (Object.keys(workloads).length === 0)
      throw new UsageError('at least one --workload NAME=SPIFFE_ID is required');
    const x509 = positiveInt('--x509-ttl', values['x509-ttl']);
    const jwt = positiveInt('--jwt-ttl', values['jwt-ttl']);
    options = {
      stateDir,
      trustDomain,
      workloads,
      ...(x509 !== undefined ? { x509SvidTtlSeconds: x509 } : {}),
      ...(jwt !== undefined ? { jwtSvidTtlSeconds: jwt } : {}),
      ...(values['socket-dir'] ? { socketDir: values['socket-dir'] } : {}),
    };
  } catch (err) {
    io.err(`weave-identity: ${(err as Error).message}\n${USAGE}`);
    return 2;
  }

  let server: DevWorkloadApiServer;
  try {
    server = await DevWorkloadApiServer.start(options);
  } catch (err) {
    const code = err instanceof WeaveError ? ` [${err.code}]` : '';
    io.err(`weave-identity: cannot start the dev Workload API server${code}: ${(err as Error).message}`);
    return 1;
  }
  for (const name of server.workloadNames()) {
    io.out(`workload ${name} ${options.workloads[name]} ${server.address(name)}`);
  }
  io.out(`ready trust-domain=${server.trustDomain.name} state-dir=${options.stateDir}`);
  await stop;
  await server.close();
  return 0;
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

function invokedDirectly(): boolean {
  const script = process.argv[1];
  if (!script) return false;
  try {
    return import.meta.url === pathToFileURL(realpathSync(script)).href;
  } catch {
    return false;
  }
}

if (invokedDirectly()) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err: unknown) => {
      process.stderr.write(
        `weave-identity: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
      );
      process.exit(1);
    },
  );
}
