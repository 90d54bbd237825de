// TLS session resumption on the server with SPIRE-style chains (bundle root →
// intermediate CA → client leaf). A resumed session carries the client's leaf
// only, not the intermediate it presented in the full handshake, so the server
// must rebuild the chain to re-check it: it works however many other clients
// came since, and a session whose chain cannot be rebuilt is refused (the
// handler does not run) and the client's next connection is a full handshake.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { webcrypto } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { authorizeMemberOf } from '@weave/identity';
import type { DevCaIdentityProvider } from '@weave/identity/dev';
import { createMtlsServer, type MtlsFastifyInstance } from '../src/server.js';
import { INTERMEDIATES_MAX } from '../src/tls.js';
import {
  makeTd,
  portOf,
  provider,
  rawTlsGet,
  removeTempDirs,
  type RawTlsAnswer,
  type TestTd,
} from '@weave/test-support/tls-fixtures';
// Certificate forging (intermediate CAs the dev CA does not make) is identity's test helper: one home.
import { makeCert, makeIntermediate, type TestCa } from '../../identity/test/helpers/forge.js';

let A: TestTd;
let serverId: DevCaIdentityProvider;
let app: MtlsFastifyInstance;
let port: number;
const handled: string[] = [];

/** The dev CA of `td` as a signer for forged certificates (its key is in the CA's directory). */
async function devCaSigner(td: TestTd): Promise<TestCa> {
  const pem = readFileSync(join(td.dir, 'ca-key.pem'), 'utf8');
  const der = Buffer.from(pem.replace(/-----[^-]+-----|\s/g, ''), 'base64');
  const EC = { name: 'ECDSA', namedCurve: 'P-256' } as const;
  const privateKey = await webcrypto.subtle.importKey('pkcs8', der, EC, true, ['sign']);
  const publicKey = await td.ca.certificate.publicKey.export(EC, ['verify']);
  return { cert: td.ca.certificate, keys: { privateKey, publicKey } };
}

interface Client {
  cert: string;
  key: string;
}

/** A client SVID issued by `issuer` (an intermediate), presented with that intermediate. */
async function clientOf(issuer: TestCa, path: string): Promise<Client> {
  const leaf = await makeCert(issuer, { uris: [`spiffe://a.test${path}`] });
  return { cert: leaf.cert.toString('pem') + '\n' + issuer.cert.toString('pem'), key: leaf.keyPem };
}

/** One HTTP/1.1 request on a new TLS connection (resuming `session` when given). */
const get = (client: Client, session?: Buffer): Promise<RawTlsAnswer> =>
  rawTlsGet({ port, client, ca: A.ca.x509Bundle.toPem(), session });

beforeAll(async () => {
  A = await makeTd('a.test');
  serverId = await provider(A, '/server');
  app = createMtlsServer({ identity: serverId, authorize: authorizeMemberOf('a.test') });
  app.get('/', async (req) => {
    handled.push(req.peer.toString());
    return { peer: req.peer.toString() };
  });
  await app.listen({ port: 0, host: '127.0.0.1' });
  port = portOf(app.server);
}, 60_000);

afterAll(async () => {
  await app?.close();
  await serverId?.close();
  removeTempDirs();
});

describe('server-side resumption with an intermediate CA', () => {
  it('re-checks a resumed client beyond 512 other leaves; refuses one whose chain it cannot rebuild, then does a full handshake', async () => {
    const root = await devCaSigner(A);
    const mid = await makeIntermediate(root, 'a.test', { subject: 'CN=spire intermediate' });
    const alice = await clientOf(mid, '/alice');

    const first = await get(alice);
    expect(first.status).toBe(200);
    expect(first.reused).toBe(false);
    expect(first.session).toBeDefined();

    // 520 other workloads of the same intermediate, each a full handshake.
    for (let i = 0; i < 520; i++) {
      const other = await get(await clientOf(mid, `/w${i}`));
      expect(other.status).toBe(200);
    }

    // Alice resumes: only her leaf arrives; the intermediate is still known, the chain is re-checked.
    const resumed = await get(alice, first.session);
    expect(resumed.reused).toBe(true);
    expect(resumed.status).toBe(200);
    expect(JSON.parse(resumed.body)).toEqual({ peer: 'spiffe://a.test/alice' });
    expect(handled.at(-1)).toBe('spiffe://a.test/alice');

    // Enough other intermediates pass by that Alice's is forgotten.
    for (let i = 0; i < INTERMEDIATES_MAX; i++) {
      const otherMid = await makeIntermediate(root, 'a.test', { subject: `CN=other intermediate ${i}` });
      expect((await get(await clientOf(otherMid, `/m${i}`))).status).toBe(200);
    }

    // Her resumed session cannot be re-checked: refused, and the handler does not run.
    const before = handled.length;
    const refused = await get(alice, resumed.session ?? first.session);
    expect(refused.reused).toBe(true);
    expect(refused.status).toBe(403);
    expect(JSON.parse(refused.body).error.code).toBe('PEER_VERIFICATION_FAILED');
    expect(handled.length).toBe(before);

    // The server renewed its tickets: her next connection is a full handshake with her chain, and passes.
    const again = await get(alice, refused.session ?? first.session);
    expect(again.reused).toBe(false);
    expect(again.status).toBe(200);
    expect(handled.at(-1)).toBe('spiffe://a.test/alice');
  }, 240_000);
});
