import { connect, createServer, type PeerCertificate, type Server } from 'node:tls';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { BundleSet, X509Bundle, verifyX509Svid } from '@weave/identity';
import { makeCert, makeRoot, type Leaf, type TestCa } from './helpers/forge.js';

type Chained = PeerCertificate & { issuerCertificate?: Chained };

function chainOf(cert: Chained): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let c: Chained | undefined = cert; c?.raw && out.length < 10; c = c.issuerCertificate) {
    out.push(new Uint8Array(c.raw));
    if (c.issuerCertificate === c) break;
  }
  return out;
}

// Node's `ca` option trusts every listed root for every name. These tests show
// the gap is closed in code: a chain must end in the bundle of the leaf's own
// trust domain.
describe('federated mTLS: each trust domain is verified against its own bundle only', () => {
  let rootA: TestCa;
  let rootB: TestCa;
  let serverLeaf: Leaf;
  let bundles: BundleSet;
  let server: Server | undefined;
  let handled: string[];
  let refused: string[];

  beforeAll(async () => {
    rootA = await makeRoot('a.test');
    rootB = await makeRoot('b.test');
    serverLeaf = await makeCert(rootA, { uris: ['spiffe://a.test/server'] });
    bundles = BundleSet.of(new X509Bundle('a.test', [rootA.cert]), new X509Bundle('b.test', [rootB.cert]));
  });
  afterEach(async () => {
    await new Promise<void>((r) => (server ? server.close(() => r()) : r()));
    server = undefined;
  });

  async function start(): Promise<number> {
    handled = [];
    refused = [];
    server = createServer(
      {
        key: serverLeaf.keyPem,
        cert: serverLeaf.cert.toString('pem'),
        ca: bundles.allX509Authorities().map((c) => c.toString('pem')),
        requestCert: true,
        rejectUnauthorized: true,
        minVersion: 'TLSv1.3',
      },
      (socket) => {
        try {
          const peer = verifyX509Svid(chainOf(socket.getPeerCertificate(true) as Chained), bundles);
          handled.push(peer.toString());
          socket.end(`hello ${peer.toString()}`);
        } catch (err) {
          refused.push((err as { code: string }).code);
          socket.destroy();
        }
      },
    );
    server.on('tlsClientError', () => {});
    await new Promise<void>((r) => server!.listen(0, '127.0.0.1', () => r()));
    return (server.address() as { port: number }).port;
  }

  function call(port: number, client: Leaf): Promise<string> {
    return new Promise((resolve, reject) => {
      const s = connect({
        host: '127.0.0.1',
        port,
        key: client.keyPem,
        cert: client.cert.toString('pem'),
        ca: bundles.allX509Authorities().map((c) => c.toString('pem')),
        minVersion: 'TLSv1.3',
        checkServerIdentity: (_h, cert) => {
          try {
            const id = verifyX509Svid(chainOf(cert as Chained), bundles);
            return id.equals('spiffe://a.test/server')
              ? undefined
              : new Error(`unexpected server ${id.toString()}`);
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

  it('accepts a workload of B whose chain ends in B’s bundle', async () => {
    const port = await start();
    const client = await makeCert(rootB, { uris: ['spiffe://b.test/client'] });
    await expect(call(port, client)).resolves.toBe('hello spiffe://b.test/client');
    expect(handled).toEqual(['spiffe://b.test/client']);
  });

  it('refuses a B identity signed by A’s root, which Node’s own check lets through; the handler does not run', async () => {
    const port = await start();
    const forged = await makeCert(rootA, { uris: ['spiffe://b.test/client'] });
    const out = await call(port, forged).catch((err: Error) => `refused: ${err.message}`);
    expect(out.startsWith('hello')).toBe(false);
    // The TLS layer accepted the chain (A's root is in `ca`); the SPIFFE check refused it.
    expect(refused).toEqual(['SVID_UNTRUSTED']);
    expect(handled).toEqual([]);
  });

  it('the client refuses a server presenting an A identity signed by B’s root', async () => {
    const evilServer = await makeCert(rootB, { uris: ['spiffe://a.test/server'] });
    const original = serverLeaf;
    serverLeaf = evilServer;
    try {
      const port = await start();
      const client = await makeCert(rootB, { uris: ['spiffe://b.test/client'] });
      await expect(call(port, client)).rejects.toThrow(
        /does not lead to an authority of trust domain a.test/,
      );
      expect(handled).toEqual([]);
    } finally {
      serverLeaf = original;
    }
  });
});
