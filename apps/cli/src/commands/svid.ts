import type { Command } from 'commander';
import type { WorkloadApiClient } from '@weave/identity';
import type { GlobalOptions } from '../shared.js';
import { printable, type Io } from '../io.js';

interface SvidOptions extends GlobalOptions {
  socket?: string;
  json?: boolean;
  timeout: string;
}

/** `weave svid`: what the Workload API serves this process. */
export function svidCommand(program: Command, io: Io): void {
  program
    .command('svid')
    .summary('show the X.509-SVID and bundles served on a Workload API socket')
    .description(
      'Fetches the X.509 context from a SPIFFE Workload API (SPIRE agent or `weave dev`) and shows ' +
        'each SVID (SPIFFE ID, hint, serial, validity, chain length) and the trust domains of the ' +
        'bundle set. Exit 1 when the socket does not answer or serves no identity.',
    )
    .option('--socket <address>', 'Workload API address (default $SPIFFE_ENDPOINT_SOCKET)')
    .option('--json', 'print JSON instead of text')
    .option('--timeout <duration>', 'how long to wait for the Workload API', '10s')
    .action(async (_o: SvidOptions, cmd: Command) => {
      const opts = cmd.optsWithGlobals<SvidOptions>();
      const { MAX_TIMER_MS, SPIFFE_ENDPOINT_SOCKET, WorkloadApiClient, WorkloadApiAddressError } =
        await import('@weave/identity');
      const { CliError, EXIT, cliLogger, parseDuration, usageError } = await import('../shared.js');
      const timeoutMs = parseDuration(opts.timeout, '--timeout', MAX_TIMER_MS);
      if (opts.socket === undefined && !process.env[SPIFFE_ENDPOINT_SOCKET]) {
        throw usageError(
          `no Workload API socket: pass --socket unix:///path/to/api.sock or set ${SPIFFE_ENDPOINT_SOCKET}`,
          'NO_WORKLOAD_API_SOCKET',
        );
      }
      let client: WorkloadApiClient;
      try {
        client = new WorkloadApiClient({
          ...(opts.socket !== undefined ? { address: opts.socket } : {}),
          logger: cliLogger(opts.debug),
        });
      } catch (err) {
        if (err instanceof WorkloadApiAddressError) throw new CliError(err.code, err.message, EXIT.usage);
        throw err;
      }
      try {
        const ctx = await client.fetchX509Context({ timeoutMs });
        const svids = ctx.svids.map((s) => {
          const leaf = s.certificates[0];
          return {
            spiffeId: s.id.toString(),
            hint: s.hint,
            serialNumber: leaf?.serialNumber ?? '',
            notBefore: s.notBefore.toISOString(),
            notAfter: s.expiresAt.toISOString(),
            chainLength: s.certificates.length,
            default: s === ctx.defaultSvid,
          };
        });
        const trustDomains = ctx.bundles
          .trustDomains()
          .map((td) => td.name)
          .sort();
        if (opts.json) {
          io.out(
            printable(JSON.stringify({ address: client.address.uri, svids, trustDomains }, null, 2), {
              lines: true,
            }),
          );
          return;
        }
        io.out(`Workload API  ${client.address.uri}`);
        for (const s of svids) {
          io.out('');
          io.out(`SPIFFE ID     ${s.spiffeId}${s.default ? '' : '  (not the default)'}`);
          // The hint is whatever the Workload API sent.
          io.out(`hint          ${s.hint === '' ? '(none)' : printable(s.hint)}`);
          io.out(`serial        ${s.serialNumber}`);
          io.out(`not before    ${s.notBefore}`);
          io.out(`not after     ${s.notAfter}  (${remaining(s.notAfter)})`);
          io.out(`chain length  ${s.chainLength}`);
        }
        io.out('');
        io.out(`bundles       ${trustDomains.join(', ')}`);
      } finally {
        client.close();
      }
    });
}

function remaining(iso: string): string {
  const s = Math.round((Date.parse(iso) - Date.now()) / 1000);
  if (s <= 0) return 'expired';
  if (s < 120) return `${s} s left`;
  if (s < 7200) return `${Math.round(s / 60)} min left`;
  return `${Math.round(s / 3600)} h left`;
}
