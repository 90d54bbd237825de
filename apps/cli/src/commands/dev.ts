import { resolve } from 'node:path';
import type { Command } from 'commander';
import type { GlobalOptions } from '../shared.js';
import type { Io } from '../io.js';

interface DevOptions extends GlobalOptions {
  stateDir: string;
  trustDomain?: string;
  workload: string[];
  svidTtl?: string;
  jwtTtl?: string;
  socketDir?: string;
}

/** `weave dev`: the dev Workload API server (one socket per workload) until SIGINT/SIGTERM. */
export function devCommand(program: Command, io: Io, stop: () => Promise<unknown>): void {
  program
    .command('dev')
    .summary('run the dev Workload API server (local SPIFFE identities)')
    .description(
      'Runs the development SPIFFE Workload API server: a dev CA persisted in --state-dir and one ' +
        'Unix socket per workload, speaking the same gRPC protocol as a SPIRE agent. Prints one ' +
        '"workload NAME SPIFFE_ID ADDRESS" line per workload, then "ready", and serves until ' +
        'SIGINT or SIGTERM. Never use it in production: use SPIRE there.',
    )
    .requiredOption(
      '-w, --workload <name=spiffe-id>',
      'a workload and its SPIFFE ID (repeatable)',
      (v: string, prev: string[] = []) => [...prev, v],
    )
    .option('--state-dir <dir>', 'where the dev CA and the sockets live', '.weave/dev')
    .option('--trust-domain <td>', 'trust domain of the dev CA (default: that of the workloads)')
    .option('--svid-ttl <duration>', 'X.509-SVID lifetime, e.g. 1h or 90s (default 1h)')
    .option('--jwt-ttl <duration>', 'JWT-SVID lifetime, at most 720h (default 5m)')
    .option('--socket-dir <dir>', 'where the sockets go (default <state-dir>/sockets)')
    .addHelpText(
      'after',
      `
Example:
  $ weave dev --trust-domain demo.weave \\
      --workload search=spiffe://demo.weave/agent/search \\
      --workload orchestrator=spiffe://demo.weave/agent/orchestrator
  $ export SPIFFE_ENDPOINT_SOCKET=unix://$PWD/.weave/dev/sockets/orchestrator.sock
  $ weave svid`,
    )
    .action(async (_opts: DevOptions, cmd: Command) => {
      const opts = cmd.optsWithGlobals<DevOptions>();
      const { SPIFFE_ENDPOINT_SOCKET, SpiffeId } = await import('@weave/identity');
      const { DevWorkloadApiServer, JWT_SVID_MAX_TTL_SECONDS } = await import('@weave/identity/dev');
      const { asUsage, cliLogger, parseDuration, usageError } = await import('../shared.js');
      const workloads: Record<string, string> = {};
      const domains = new Set<string>();
      for (const w of opts.workload) {
        const eq = w.indexOf('=');
        if (eq <= 0) throw usageError(`--workload ${JSON.stringify(w)} must be NAME=SPIFFE_ID`);
        const name = w.slice(0, eq);
        if (name in workloads) throw usageError(`workload ${name} is given twice`);
        const id = asUsage(() => SpiffeId.parse(w.slice(eq + 1)));
        workloads[name] = id.toString();
        domains.add(id.trustDomain.name);
      }
      const trustDomain = opts.trustDomain ?? (domains.size === 1 ? [...domains][0] : undefined);
      if (trustDomain === undefined) {
        throw usageError('the workloads are in several trust domains: pass --trust-domain');
      }
      const x509 = opts.svidTtl !== undefined ? parseDuration(opts.svidTtl, '--svid-ttl') : undefined;
      // The dev server's bound (30 days): a longer lifetime gave tokens whose
      // exp no JS Date holds, which every validator refuses.
      const jwt =
        opts.jwtTtl !== undefined
          ? parseDuration(opts.jwtTtl, '--jwt-ttl', JWT_SVID_MAX_TTL_SECONDS * 1000)
          : undefined;
      const stateDir = resolve(opts.stateDir);
      const server = await asUsage(
        () =>
          DevWorkloadApiServer.start({
            stateDir,
            trustDomain,
            workloads,
            ...(x509 !== undefined ? { x509SvidTtlSeconds: Math.ceil(x509 / 1000) } : {}),
            ...(jwt !== undefined ? { jwtSvidTtlSeconds: Math.ceil(jwt / 1000) } : {}),
            ...(opts.socketDir !== undefined ? { socketDir: resolve(opts.socketDir) } : {}),
            logger: cliLogger(opts.debug),
          }),
        ['DEV_WORKLOAD_API_INVALID_OPTIONS', 'INVALID_SPIFFE_ID'],
      );
      try {
        // Listening for the signal before saying "ready": a signal right after
        // that line must find the handler, not the default action (the
        // process killed with its sockets left behind).
        const stopped = stop();
        for (const name of server.workloadNames()) {
          io.out(`workload ${name} ${workloads[name]} ${server.address(name)}`);
        }
        io.out(`ready trust-domain=${server.trustDomain.name} state-dir=${stateDir}`);
        io.err(
          `weave dev: serving ${server.workloadNames().length} workload(s); give a process its identity with ` +
            `${SPIFFE_ENDPOINT_SOCKET}=<address>. Stop with Ctrl-C.`,
        );
        await stopped;
      } finally {
        await server.close();
      }
    });
}
