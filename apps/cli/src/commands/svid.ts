import type { Command } from 'commander';
import type { WorkloadApiClient, X509Context } from '@weave/identity';
import type { GlobalOptions } from '../shared.js';
import { printable, type Io } from '../io.js';

interface SvidOptions extends GlobalOptions {
  socket?: string;
  json?: boolean;
  timeout: string;
  write?: string;
  watch?: boolean;
}

/** The files `--write` makes, named as spiffe-helper names them, so a setup made for it reads them. */
const FILES = { chain: 'svid.pem', key: 'svid_key.pem', bundle: 'svid_bundle.pem' } as const;

/** `weave svid`: what the Workload API serves this process. */
export function svidCommand(program: Command, io: Io): void {
  program
    .command('svid')
    .summary('show the X.509-SVID and bundles served on a Workload API socket')
    .description(
      'Fetches the X.509 context from a SPIFFE Workload API (SPIRE agent or `weave dev`) and shows ' +
        'each SVID (SPIFFE ID, hint, serial, validity, chain length) and the trust domains of the ' +
        'bundle set. Exit 1 when the socket does not answer or serves no identity. With --write DIR, ' +
        'also writes the default SVID as PEM files for a program that cannot speak the Workload API ' +
        '(a Python or Go peer in development): svid.pem (the certificate chain), svid_key.pem (the ' +
        'private key, mode 0600) and svid_bundle.pem (the authorities of its own trust domain only: ' +
        'one file of several domains would let any of their CAs vouch for IDs of the others), each ' +
        'replaced atomically; with --watch, again on every rotation until SIGINT or SIGTERM.',
    )
    .option('--socket <address>', 'Workload API address (default $SPIFFE_ENDPOINT_SOCKET)')
    .option('--json', 'print JSON instead of text')
    .option('--timeout <duration>', 'how long to wait for the Workload API', '10s')
    .option('--write <dir>', 'write the default SVID, its key and the trust bundle as PEM files into DIR')
    .option('--watch', 'with --write: keep running and write the files again on every rotation')
    .action(async (_o: SvidOptions, cmd: Command) => {
      const opts = cmd.optsWithGlobals<SvidOptions>();
      const { MAX_TIMER_MS, SPIFFE_ENDPOINT_SOCKET, WorkloadApiClient, WorkloadApiAddressError } =
        await import('@weave/identity');
      const { CliError, EXIT, cliLogger, parseDuration, usageError } = await import('../shared.js');
      const timeoutMs = parseDuration(opts.timeout, '--timeout', MAX_TIMER_MS);
      if (opts.watch && opts.write === undefined) throw usageError('--watch goes with --write DIR', 'USAGE');
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
      if (opts.write !== undefined && opts.watch) {
        try {
          await watchAndWrite(client, opts.write, io);
        } finally {
          client.close();
        }
        return;
      }
      try {
        const ctx = await client.fetchX509Context({ timeoutMs });
        if (opts.write !== undefined) {
          await writeSvidFiles(ctx, opts.write);
          io.err(
            `wrote ${Object.values(FILES).join(', ')} for ${ctx.defaultSvid.id.toString()} into ${opts.write}`,
          );
        }
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

/**
 * Writes the default SVID of `ctx` into `dir`: each file to a temporary name
 * first (the key created 0600 before a byte of it is written), then renamed,
 * so a reader never sees half a file or a key readable by others.
 */
async function writeSvidFiles(ctx: X509Context, dir: string): Promise<void> {
  const { mkdir, rename, writeFile, rm } = await import('node:fs/promises');
  const { join } = await import('node:path');
  const svid = ctx.defaultSvid;
  const pem = svid.toPem();
  // Its own trust domain's only: a TLS stack given one file of several
  // domains' authorities takes any of them for any ID (the partner's CA
  // could vouch for IDs of this domain), as a Weave static identity would.
  const bundle = ctx.bundles.getX509Bundle(svid.id.trustDomain)?.toPem() ?? '';
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const files: Array<[string, string, number]> = [
    [FILES.key, pem.privateKey, 0o600],
    [FILES.chain, pem.certChain, 0o644],
    [FILES.bundle, bundle, 0o644],
  ];
  for (const [name, text, mode] of files) {
    const tmp = join(dir, `.${name}.${process.pid}.tmp`);
    try {
      await writeFile(tmp, text, { mode, flag: 'wx' });
      await rename(tmp, join(dir, name));
    } catch (err) {
      await rm(tmp, { force: true });
      throw err;
    }
  }
}

/** `--write --watch`: the files written at each X.509 context the Workload API sends, until SIGINT or SIGTERM. */
async function watchAndWrite(client: WorkloadApiClient, dir: string, io: Io): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    let writing = Promise.resolve();
    const handle = client.watchX509Context({
      onUpdate: (ctx) => {
        writing = writing
          .then(() => writeSvidFiles(ctx, dir))
          .then(
            () =>
              io.err(
                `wrote ${Object.values(FILES).join(', ')} for ${ctx.defaultSvid.id.toString()} (not after ${ctx.defaultSvid.expiresAt.toISOString()}) into ${dir}`,
              ),
            (err: unknown) => {
              stop();
              reject(err instanceof Error ? err : new Error(String(err)));
            },
          );
      },
      onError: (err) => io.err(`Workload API: ${err.message}; retrying`),
    });
    const stop = (): void => {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      handle.stop();
      void writing.then(resolve, resolve);
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
    // A watch the Workload API refused for good (INVALID_ARGUMENT) is not retried: the command fails.
    void handle.done.then((err) => {
      if (err === undefined) return;
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      reject(err);
    });
  });
}

function remaining(iso: string): string {
  const s = Math.round((Date.parse(iso) - Date.now()) / 1000);
  if (s <= 0) return 'expired';
  if (s < 120) return `${s} s left`;
  if (s < 7200) return `${Math.round(s / 60)} min left`;
  return `${Math.round(s / 3600)} h left`;
}
