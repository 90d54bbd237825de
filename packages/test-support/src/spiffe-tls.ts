// A real node:tls mTLS handshake on 127.0.0.1 where each side checks the
// other's SPIFFE ID in code with verifyX509Svid, after Node's own chain check:
// the harness @weave/identity's dev CA and federation tests share. It needs
// @weave/identity only (no transport), so identity's tests stay in their layer.
import { connect, createServer, type PeerCertificate, type TLSSocket } from 'node:tls';
import { verifyX509Svid, type X509BundleSource } from '@weave/identity';

/** One side's TLS material, PEM. */
export interface TlsMaterial {
  readonly key: string;
  readonly cert: string;
}

/** What both sides are given: Node's `ca` (PEM roots) and the bundles the SPIFFE check uses. */
export interface TlsTrust {
  readonly ca: string | string[];
  readonly bundles: X509BundleSource;
}

type Chained = PeerCertificate & { issuerCertificate?: Chained };

/** The peer's chain as Node presents it (leaf first, up to the trusted root). */
function peerChain(cert: PeerCertificate): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let c: Chained | undefined = cert; c?.raw && out.length < 10; c = c.issuerCertificate) {
    out.push(new Uint8Array(c.raw));
    if (c.issuerCertificate === c) break;
  }
  return out;
}

/** A running SPIFFE mTLS server: it answers `hello <client ID>` to every client whose SVID verifies. */
export interface SpiffeTlsServer {
  readonly port: number;
  /** The client IDs the handler ran for. */
  readonly handled: string[];
  /** The error codes of the clients the SPIFFE check refused after Node accepted their chain. */
  readonly refused: string[];
  close(): Promise<void>;
}

/** Starts a TLS 1.3 server that requires a client certificate, on 127.0.0.1 port 0. */
export async function startSpiffeTlsServer(own: TlsMaterial, trust: TlsTrust): Promise<SpiffeTlsServer> {
  const handled: string[] = [];
  const refused: string[] = [];
  const server = createServer(
    {
      key: own.key,
      cert: own.cert,
      ca: trust.ca,
      requestCert: true,
      rejectUnauthorized: true,
      minVersion: 'TLSv1.3',
    },
    (socket: TLSSocket) => {
      let peer: string;
      try {
        peer = verifyX509Svid(peerChain(socket.getPeerCertificate(true)), trust.bundles).toString();
      } catch (err) {
        refused.push((err as { code: string }).code);
        socket.destroy();
        return;
      }
      handled.push(peer);
      socket.end(`hello ${peer}`);
    },
  );
  // Refused handshakes are what several tests are about; they show in `handled`.
  server.on('tlsClientError', () => {});
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return {
    port: (server.address() as { port: number }).port,
    handled,
    refused,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

/**
 * Connects with `own`, requires the server's SVID to verify and to be `expectServer`
 * (the default check ignores URI SANs), and resolves with all the server sent.
 */
export function callSpiffeTls(
  port: number,
  own: TlsMaterial,
  trust: TlsTrust,
  expectServer: string,
): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect({
      host: '127.0.0.1',
      port,
      key: own.key,
      cert: own.cert,
      ca: trust.ca,
      minVersion: 'TLSv1.3',
      checkServerIdentity: (_host, cert) => {
        try {
          const id = verifyX509Svid(peerChain(cert), trust.bundles);
          return id.equals(expectServer)
            ? undefined
            : new Error(`server is ${id.toString()}, expected ${expectServer}`);
        } catch (err) {
          return err as Error;
        }
      },
    });
    let data = '';
    s.setEncoding('utf8');
    s.on('data', (d: string) => (data += d));
    s.on('end', () => resolve(data));
    s.on('error', reject);
  });
}
