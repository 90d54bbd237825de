// TLS session resumption on the server when no intermediate CA is known (the
// usual deployment: leaves signed by a bundle authority itself). The server
// then does not look for remembered intermediates at all, and a resumed
// connection is still checked in full against the bundle at the time of the
// connection: a verified peer gets through, a peer the authorizer refuses
// and a leaf the server's bundle no longer trusts are refused, and no handler
// runs for them. No certificate in this file comes with an intermediate (the
// clients send their root along, as OpenSSL does, and a root is not kept as
// one), so the server's intermediate pool stays empty throughout.
import { X509Certificate, randomBytes } from 'node:crypto';
import type { TLSSocket } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { authorizeId, type Authorizer } from '@weave/identity';
import type { DevCaIdentityProvider } from '@weave/identity/dev';
import { createMtlsServer, type MtlsFastifyInstance } from '../src/server.js';
import {
  devSvidPem,
  makeTd,
  portOf,
  provider,
  rawTlsGet,
  removeTempDirs,
  type TestTd,
} from '@weave/test-support/tls-fixtures';

let A: TestTd;
/** A new CA for the same trust domain: what a server trusts after the domain's CA was replaced. */
let A2: TestTd;
const providers: DevCaIdentityProvider[] = [];
const apps: MtlsFastifyInstance[] = [];

interface Served {
  port: number;
  handled: string[];
  /** isSessionReused() of each connection the server accepted, in order. */
  resumed: boolean[];
}

/** createMtlsServer on `td`'s identity, sharing `ticketKeys` (replicas behind one name do). */
async function serve(td: TestTd, authorize: Authorizer, ticketKeys: Buffer): Promise<Served> {
  const id = await provider(td, '/server');
  providers.push(id);
  const app = createMtlsServer({ identity: id, authorize });
  apps.push(app);
  const handled: string[] = [];
  const resumed: boolean[] = [];
  app.get('/', async (req) => {
    handled.push(req.peer.toString());
    return { peer: req.peer.toString() };
  });
  await app.listen({ port: 0, host: '127.0.0.1' });
  app.server.setTicketKeys(ticketKeys);
  app.server.on('secureConnection', (s: TLSSocket) => resumed.push(s.isSessionReused()));
  return { port: portOf(app.server), handled, resumed };
}

// Reads of a certificate's issuer name: what looking a leaf's issuers up in
// the intermediate pool costs (OpenSSL formats the name on every read).
let issuerReads = 0;
const issuerGetter = Object.getOwnPropertyDescriptor(X509Certificate.prototype, 'issuer')!;

beforeAll(async () => {
  A = await makeTd('a.test');
  A2 = await makeTd('a.test');
  Object.defineProperty(X509Certificate.prototype, 'issuer', {
    ...issuerGetter,
    get(this: X509Certificate) {
      issuerReads++;
      return issuerGetter.get!.call(this) as string;
    },
  });
}, 60_000);

afterAll(async () => {
  Object.defineProperty(X509Certificate.prototype, 'issuer', issuerGetter);
  for (const app of apps) await app.close();
  for (const p of providers) await p.close();
  removeTempDirs();
});

describe('server-side resumption with no intermediate known', () => {
  it('re-checks every resumed connection: the verified peer passes, a refused peer and an untrusted leaf do not reach the handler', async () => {
    const ticketKeys = randomBytes(48);
    const s1 = await serve(A, authorizeId('spiffe://a.test/alice'), ticketKeys);
    const ca = `${A.ca.x509Bundle.toPem()}\n${A2.ca.x509Bundle.toPem()}`;
    const alice = await devSvidPem(A, '/alice');
    const bob = await devSvidPem(A, '/bob');

    const first = await rawTlsGet({ port: s1.port, client: alice, ca });
    expect(first.status).toBe(200);
    expect(first.reused).toBe(false);
    issuerReads = 0;
    const again = await rawTlsGet({ port: s1.port, client: alice, ca, session: first.session });
    expect(again.reused).toBe(true);
    // Her root came along in the full handshake and was not kept as an intermediate: nothing looked up.
    expect(issuerReads).toBe(0);
    expect(again.status).toBe(200);
    expect(JSON.parse(again.body)).toEqual({ peer: 'spiffe://a.test/alice' });
    expect(s1.handled).toEqual(['spiffe://a.test/alice', 'spiffe://a.test/alice']);

    // A verified peer the authorizer refuses, on a full handshake and on a resumed one.
    const bobFirst = await rawTlsGet({ port: s1.port, client: bob, ca });
    expect(bobFirst.status).toBe(403);
    expect(bobFirst.body).toMatch(/PEER_NOT_AUTHORIZED/);
    const bobAgain = await rawTlsGet({ port: s1.port, client: bob, ca, session: bobFirst.session });
    expect(bobAgain.reused).toBe(true);
    expect(bobAgain.status).toBe(403);
    expect(bobAgain.body).toMatch(/PEER_NOT_AUTHORIZED/);
    expect(s1.handled).toHaveLength(2);

    // A replica with the same ticket keys whose bundle for a.test is the new CA:
    // OpenSSL resumes Alice's session without looking at her certificate; the
    // server's own check finds her leaf untrusted and refuses it.
    const s2 = await serve(A2, authorizeId('spiffe://a.test/alice'), ticketKeys);
    const elsewhere = await rawTlsGet({ port: s2.port, client: alice, ca, session: first.session });
    expect(elsewhere.reused).toBe(true);
    expect(elsewhere.status).toBe(403);
    expect(elsewhere.body).toMatch(/PEER_VERIFICATION_FAILED/);
    expect(elsewhere.body).toMatch(/SVID_UNTRUSTED/);
    expect(s2.handled).toEqual([]);
    expect(s2.resumed).toEqual([true]);
  });
});
