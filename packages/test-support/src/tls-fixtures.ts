// @weave/transport's test fixtures: real dev CAs on disk, real TLS servers on
// 127.0.0.1, and hand-crafted bad certificates made with the openssl CLI. It
// needs @weave/identity only, so transport's tests load nothing above them.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import * as tls from 'node:tls';
import * as https from 'node:https';
import { pino } from 'pino';
import { IdentityProviderBase, type BundleSet, type X509Bundle, type X509Svid } from '@weave/identity';
import { DevCaIdentityProvider, DevCertificateAuthority } from '@weave/identity/dev';

const dirs: string[] = [];

/** A temp dir removed by {@link removeTempDirs}. */
export function tempDir(prefix = 'weave-transport-'): string {
  const d = mkdtempSync(join(tmpdir(), prefix));
  dirs.push(d);
  return d;
}

export function removeTempDirs(): void {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
}

export interface TestTd {
  readonly ca: DevCertificateAuthority;
  /** Holds ca-key.pem / ca-cert.pem so openssl can sign crafted certificates. */
  readonly dir: string;
  readonly name: string;
}

export async function makeTd(name: string): Promise<TestTd> {
  const dir = tempDir(`weave-ca-${name}-`);
  const ca = await DevCertificateAuthority.create({ trustDomain: name, dir });
  return { ca, dir, name };
}

export function provider(
  td: TestTd,
  path: string,
  opts: { ttlSeconds?: number; federatedBundles?: X509Bundle[] } = {},
): Promise<DevCaIdentityProvider> {
  return DevCaIdentityProvider.create({ ca: td.ca, id: `spiffe://${td.name}${path}`, ...opts });
}

/** PEM cert + key of a fresh SVID from the dev CA (with explicit validity when given). */
export async function devSvidPem(
  td: TestTd,
  path: string,
  opts: { notBefore?: Date; notAfter?: Date } = {},
): Promise<{ cert: string; key: string }> {
  const svid = await td.ca.issueX509Svid(`spiffe://${td.name}${path}`, opts);
  const { certChain, privateKey } = svid.toPem();
  return { cert: certChain, key: privateKey };
}

function openssl(args: string[]): void {
  execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

/**
 * A certificate the dev CA would never issue, made with openssl:
 * - `signer: td` signs it with that CA's key (the URI SAN may name another trust domain);
 * - `signer: 'self'` makes it self-signed;
 * - `isCa` sets basicConstraints cA=true on the leaf.
 */
export function craftCert(opts: { uri: string; signer: TestTd | 'self'; isCa?: boolean }): {
  cert: string;
  key: string;
} {
  const d = tempDir('weave-crafted-');
  const key = join(d, 'key.pem');
  const ext = join(d, 'ext.cnf');
  openssl(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', key]);
  writeFileSync(
    ext,
    [
      '[v3]',
      `basicConstraints = critical, CA:${opts.isCa ? 'TRUE' : 'FALSE'}`,
      `keyUsage = critical, digitalSignature${opts.isCa ? ', keyCertSign' : ''}`,
      'extendedKeyUsage = serverAuth, clientAuth',
      `subjectAltName = URI:${opts.uri}`,
      '',
    ].join('\n'),
  );
  const cert = join(d, 'cert.pem');
  if (opts.signer === 'self') {
    openssl([
      'req',
      '-new',
      '-x509',
      '-key',
      key,
      '-subj',
      '/O=Mallory',
      '-days',
      '1',
      '-config',
      ext,
      '-extensions',
      'v3',
      '-out',
      cert,
    ]);
  } else {
    const csr = join(d, 'req.csr');
    openssl(['req', '-new', '-key', key, '-subj', '/O=SPIRE', '-config', ext, '-out', csr]);
    openssl([
      'x509',
      '-req',
      '-in',
      csr,
      '-CA',
      join(opts.signer.dir, 'ca-cert.pem'),
      '-CAkey',
      join(opts.signer.dir, 'ca-key.pem'),
      '-CAcreateserial',
      '-days',
      '1',
      '-extfile',
      ext,
      '-extensions',
      'v3',
      '-out',
      cert,
    ]);
  }
  return { cert: readFileSync(cert, 'utf8'), key: readFileSync(key, 'utf8') };
}

export function portOf(server: { address(): string | AddressInfo | null }): number {
  const a = server.address();
  if (!a || typeof a === 'string') throw new Error('server not listening on TCP');
  return a.port;
}

/**
 * A bare node https server (an "attacker" or foreign endpoint) that counts
 * every request that reached its handler.
 */
export async function rawHttpsServer(options: https.ServerOptions): Promise<{
  server: https.Server;
  url: string;
  hits: () => number;
  close: () => Promise<void>;
}> {
  let hits = 0;
  const server = https.createServer(options, (req, res) => {
    hits++;
    req.resume();
    res.end('reached');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    server,
    url: `https://127.0.0.1:${portOf(server)}`,
    hits: () => hits,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

/** A bare TLS server counting application bytes received on all connections. */
export async function byteCountingTlsServer(options: tls.TlsOptions): Promise<{
  url: string;
  bytes: () => number;
  connections: () => number;
  close: () => Promise<void>;
}> {
  let bytes = 0;
  let connections = 0;
  const sockets = new Set<tls.TLSSocket>();
  const server = tls.createServer(options, (sock) => {
    sockets.add(sock);
    sock.on('data', (d: Buffer) => {
      bytes += d.length;
    });
    sock.on('error', () => undefined);
    sock.on('close', () => sockets.delete(sock));
  });
  server.on('tlsClientError', () => undefined);
  // TCP connections: a client that drops right after its side of the handshake never completes the server's.
  server.on('connection', () => {
    connections++;
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `https://127.0.0.1:${portOf(server)}`,
    bytes: () => bytes,
    connections: () => connections,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

/** What {@link rawTlsGet} saw: the HTTP status and body, whether the session resumed, the newest ticket. */
export interface RawTlsAnswer {
  status: number;
  body: string;
  reused: boolean;
  session: Buffer | undefined;
}

/**
 * One HTTP/1.1 `GET /` on a new TLS connection made with plain `tls.connect`
 * (no SPIFFE check of the server: the tests using it look at the server's
 * side), presenting `client`'s certificate and resuming `session` when given.
 * Status 0: the connection closed without an HTTP answer.
 */
export function rawTlsGet(opts: {
  port: number;
  client: { cert: string; key: string };
  /** Roots the client trusts for the server's certificate, PEM. */
  ca: string;
  session?: Buffer | undefined;
}): Promise<RawTlsAnswer> {
  return new Promise((resolve, reject) => {
    const sock = tls.connect({
      host: '127.0.0.1',
      port: opts.port,
      cert: opts.client.cert,
      key: opts.client.key,
      ca: opts.ca,
      checkServerIdentity: () => undefined,
      ...(opts.session ? { session: opts.session } : {}),
    });
    let ticket: Buffer | undefined;
    let reused = false;
    let data = '';
    sock.on('session', (t: Buffer) => (ticket = t));
    sock.on('secureConnect', () => {
      reused = sock.isSessionReused();
      sock.write('GET / HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n');
    });
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => (data += d));
    sock.on('error', reject);
    sock.on('close', () => {
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(data)?.[1] ?? 0);
      resolve({ status, body: data.slice(data.indexOf('\r\n\r\n') + 4), reused, session: ticket });
    });
  });
}

/**
 * An identity provider whose SVID and bundles the test sets, at any time
 * (an expiring SVID, a bundle without a CA). Its expiry reports, expected in
 * such tests, are not logged.
 */
export class SetProvider extends IdentityProviderBase {
  constructor() {
    super({ logger: pino({ level: 'silent' }) });
  }

  set(svid: X509Svid, bundles: BundleSet): void {
    this.publish({ svid, bundles });
  }
}

/**
 * An SVID of `td` at `path` that expires at least `ms` from now, on a whole
 * second (certificate times have no finer grain): for tests of what happens
 * when a peer's certificate runs out on an open connection.
 */
export function expiringSvid(td: TestTd, path: string, ms: number): Promise<X509Svid> {
  return td.ca.issueX509Svid(`spiffe://${td.name}${path}`, {
    notBefore: new Date(Date.now() - 60_000),
    notAfter: new Date(Math.ceil((Date.now() + ms) / 1000) * 1000),
  });
}
