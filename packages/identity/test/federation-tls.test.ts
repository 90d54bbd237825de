import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { BundleSet, X509Bundle } from '@weave/identity';
import { makeCert, makeRoot, type Leaf, type TestCa } from './helpers/forge.js';
import {
  callSpiffeTls,
  startSpiffeTlsServer,
  type SpiffeTlsServer,
  type TlsMaterial,
  type TlsTrust,
} from '@weave/test-support/spiffe-tls';

const material = (leaf: Leaf): TlsMaterial => ({ key: leaf.keyPem, cert: leaf.cert.toString('pem') });
const SERVER_ID = 'spiffe://a.test/server';

// Node's `ca` option trusts every listed root for every name. These tests show
// the gap is closed in code: a chain must end in the bundle of the leaf's own
// trust domain.
describe('federated mTLS: each trust domain is verified against its own bundle only', () => {
  let rootA: TestCa;
  let rootB: TestCa;
  let serverLeaf: Leaf;
  // Node is given every root of the set, as it would be for federation.
  let trust: TlsTrust;
  let server: SpiffeTlsServer | undefined;

  beforeAll(async () => {
    rootA = await makeRoot('a.test');
    rootB = await makeRoot('b.test');
    serverLeaf = await makeCert(rootA, { uris: [SERVER_ID] });
    const bundles = BundleSet.of(
      new X509Bundle('a.test', [rootA.cert]),
      new X509Bundle('b.test', [rootB.cert]),
    );
    trust = { ca: bundles.allX509Authorities().map((c) => c.toString('pem')), bundles };
  });
  afterEach(async () => {
    await server?.close();
    server = undefined;
  });

  async function start(leaf = serverLeaf): Promise<SpiffeTlsServer> {
    server = await startSpiffeTlsServer(material(leaf), trust);
    return server;
  }

  const call = (port: number, client: Leaf): Promise<string> =>
    callSpiffeTls(port, material(client), trust, SERVER_ID);

  it('accepts a workload of B whose chain ends in B’s bundle', async () => {
    const { port, handled } = await start();
    const client = await makeCert(rootB, { uris: ['spiffe://b.test/client'] });
    await expect(call(port, client)).resolves.toBe('hello spiffe://b.test/client');
    expect(handled).toEqual(['spiffe://b.test/client']);
  });

  it('refuses a B identity signed by A’s root, which Node’s own check lets through; the handler does not run', async () => {
    const { port, handled, refused } = await start();
    const forged = await makeCert(rootA, { uris: ['spiffe://b.test/client'] });
    const out = await call(port, forged).catch((err: Error) => `refused: ${err.message}`);
    expect(out.startsWith('hello')).toBe(false);
    // The TLS layer accepted the chain (A's root is in `ca`); the SPIFFE check refused it.
    expect(refused).toEqual(['SVID_UNTRUSTED']);
    expect(handled).toEqual([]);
  });

  it('the client refuses a server presenting an A identity signed by B’s root', async () => {
    const evilServer = await makeCert(rootB, { uris: [SERVER_ID] });
    const { port, handled } = await start(evilServer);
    const client = await makeCert(rootB, { uris: ['spiffe://b.test/client'] });
    await expect(call(port, client)).rejects.toThrow(/does not lead to an authority of trust domain a.test/);
    expect(handled).toEqual([]);
  });
});
