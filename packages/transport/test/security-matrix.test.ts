// The security matrix of issue 4, in both directions. Every case asserts that
// the handler on the other side never ran.
import * as tls from 'node:tls';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Agent, request } from 'undici';
import { authorizeMemberOf, authorizeOneOf, type Authorizer } from '@weave/identity';
import { type DevCaIdentityProvider } from '@weave/identity/dev';
import { PeerVerificationError, SecureChannel } from '../src/index.js';
import { createMtlsServer } from '../src/server.js';
import {
  byteCountingTlsServer,
  craftCert,
  devSvidPem,
  makeTd,
  portOf,
  provider,
  rawHttpsServer,
  removeTempDirs,
  type TestTd,
} from '@weave/test-support/tls-fixtures';

let A: TestTd; // our trust domain
let B: TestTd; // a foreign trust domain nobody trusts
let F: TestTd; // a federated trust domain
let serverId: DevCaIdentityProvider;
let clientId: DevCaIdentityProvider;
const closers: (() => Promise<unknown>)[] = [];
const HOUR = 3600_000;

beforeAll(async () => {
  [A, B, F] = await Promise.all([makeTd('a.test'), makeTd('b.test'), makeTd('f.test')]);
  serverId = await provider(A, '/server', { federatedBundles: [F.ca.x509Bundle] });
  clientId = await provider(A, '/client', { federatedBundles: [F.ca.x509Bundle] });
});
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c().catch(() => undefined);
});
afterAll(async () => {
  await serverId.close();
  await clientId.close();
  removeTempDirs();
});

describe('server direction: a bad client never reaches a route', () => {
  let url: string;
  let hits: number;

  beforeAll(async () => {
    hits = 0;
    const app = createMtlsServer({
      identity: serverId,
      authorize: authorizeOneOf('spiffe://a.test/client', 'spiffe://f.test/client'),
    });
    app.get('/secret', async (req) => {
      hits++;
      return { peer: req.peer.toString() };
    });
    await app.listen({ port: 0, host: '127.0.0.1' });
    url = `https://127.0.0.1:${portOf(app.server)}/secret`;
    return () => app.close();
  });

  /** A plain undici client (not SecureChannel) presenting whatever the attacker has. */
  async function attempt(creds: { cert?: string; key?: string }, extra: tls.ConnectionOptions = {}) {
    const agent = new Agent({
      connect: {
        ...creds,
        ca: A.ca.x509Bundle.toPem(),
        checkServerIdentity: () => undefined,
        maxCachedSessions: 0,
        ...extra,
      },
    });
    closers.push(() => agent.close());
    try {
      const res = await request(url, { dispatcher: agent });
      const body = (await res.body.json()) as { error?: { code: string } };
      return { status: res.statusCode, code: body.error?.code };
    } catch (err) {
      return { error: err as Error };
    }
  }

  it('control: a valid, authorized client gets through (and the route runs once)', async () => {
    const before = hits;
    const r = await attempt(await devSvidPem(A, '/client'));
    expect(r).toEqual({ status: 200, code: undefined });
    expect(hits).toBe(before + 1);
  });

  const cases: [string, () => Promise<{ cert?: string; key?: string }>, tls.ConnectionOptions?][] = [
    ['no client certificate', async () => ({})],
    ['a certificate from another trust domain', () => devSvidPem(B, '/client')],
    ['right CA but wrong SPIFFE ID', () => devSvidPem(A, '/mallory')],
    [
      'an expired SVID',
      () =>
        devSvidPem(A, '/client', {
          notBefore: new Date(Date.now() - 2 * HOUR),
          notAfter: new Date(Date.now() - HOUR),
        }),
    ],
    [
      'a not-yet-valid SVID',
      () =>
        devSvidPem(A, '/client', {
          notBefore: new Date(Date.now() + HOUR),
          notAfter: new Date(Date.now() + 2 * HOUR),
        }),
    ],
    ['a leaf with cA=true', async () => craftCert({ uri: 'spiffe://a.test/client', signer: A, isCa: true })],
    ['a self-signed certificate', async () => craftCert({ uri: 'spiffe://a.test/client', signer: 'self' })],
    [
      "a federated CA signing an ID of our trust domain (chain must end in the leaf's own trust domain)",
      async () => craftCert({ uri: 'spiffe://a.test/client', signer: F }),
    ],
    [
      'TLS 1.2 forced against a TLS 1.3-only server',
      () => devSvidPem(A, '/client'),
      { maxVersion: 'TLSv1.2' },
    ],
  ];

  for (const [name, creds, extra] of cases) {
    it(`refuses ${name}`, async () => {
      const before = hits;
      const r = await attempt(await creds(), extra);
      if ('status' in r) {
        expect(r.status).toBe(403);
        expect(['PEER_NOT_AUTHORIZED', 'PEER_VERIFICATION_FAILED']).toContain(r.code);
      } else {
        expect(r.error).toBeInstanceOf(Error);
      }
      expect(hits).toBe(before);
    });
  }

  it('the wrong-ID and federated-signer cases are refused by mtlsAuth with precise codes', async () => {
    expect(await attempt(await devSvidPem(A, '/mallory'))).toEqual({
      status: 403,
      code: 'PEER_NOT_AUTHORIZED',
    });
    expect(await attempt(craftCert({ uri: 'spiffe://a.test/client', signer: F }))).toEqual({
      status: 403,
      code: 'PEER_VERIFICATION_FAILED',
    });
    expect(await attempt(craftCert({ uri: 'spiffe://a.test/client', signer: A, isCa: true }))).toEqual({
      status: 403,
      code: 'PEER_VERIFICATION_FAILED',
    });
  });

  it('a federated client with a genuine SVID of its own trust domain is accepted', async () => {
    const before = hits;
    expect(await attempt(await devSvidPem(F, '/client'))).toEqual({ status: 200, code: undefined });
    expect(hits).toBe(before + 1);
  });
});

describe('client direction: SecureChannel never talks to a bad server', () => {
  async function attacker(creds: { cert: string; key: string }, extra: tls.TlsOptions = {}) {
    const srv = await rawHttpsServer({ ...creds, ...extra });
    closers.push(srv.close);
    return srv;
  }

  function channel(peer: ConstructorParameters<typeof SecureChannel>[1] = 'spiffe://a.test/server') {
    const ch = new SecureChannel(clientId, peer, { retry: { retries: 2, minDelayMs: 1, maxDelayMs: 2 } });
    closers.push(() => ch.close());
    return ch;
  }

  it('control: the genuine server is accepted', async () => {
    const srv = await attacker(await devSvidPem(A, '/server'));
    const res = await channel().get(`${srv.url}/`);
    expect(await res.body.text()).toBe('reached');
    expect(srv.hits()).toBe(1);
  });

  const cases: [
    string,
    () => Promise<{ cert: string; key: string }>,
    ((e: PeerVerificationError) => void)?,
  ][] = [
    ['a certificate from another trust domain', () => devSvidPem(B, '/server')],
    [
      'our SPIFFE ID signed by a foreign CA',
      async () => craftCert({ uri: 'spiffe://a.test/server', signer: B }),
    ],
    [
      'right CA but wrong SPIFFE ID',
      () => devSvidPem(A, '/mallory'),
      (e) => expect(e.actual?.toString()).toBe('spiffe://a.test/mallory'),
    ],
    [
      'an expired SVID',
      () =>
        devSvidPem(A, '/server', {
          notBefore: new Date(Date.now() - 2 * HOUR),
          notAfter: new Date(Date.now() - HOUR),
        }),
    ],
    [
      'a not-yet-valid SVID',
      () =>
        devSvidPem(A, '/server', {
          notBefore: new Date(Date.now() + HOUR),
          notAfter: new Date(Date.now() + 2 * HOUR),
        }),
    ],
    [
      'a leaf with cA=true',
      async () => craftCert({ uri: 'spiffe://a.test/server', signer: A, isCa: true }),
      (e) => expect(e.message).toMatch(/SVID_LEAF_IS_CA/),
    ],
    ['a self-signed certificate', async () => craftCert({ uri: 'spiffe://a.test/server', signer: 'self' })],
  ];

  for (const [name, creds, more] of cases) {
    it(`refuses ${name} with PeerVerificationError, sending nothing`, async () => {
      const srv = await attacker(await creds());
      const ch = channel();
      const err = await ch.get(`${srv.url}/`).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(PeerVerificationError);
      expect((err as PeerVerificationError).expected).toBe('spiffe://a.test/server');
      more?.(err as PeerVerificationError);
      expect(srv.hits()).toBe(0);
    });
  }

  it('an authorizer over several trust domains still requires the chain to end in the peer’s own trust domain', async () => {
    // Node's `ca` holds A's and F's roots; only code can tell that F may not sign for A.
    const srv = await attacker(craftCert({ uri: 'spiffe://a.test/server', signer: F }));
    const ch = channel(authorizeMemberOf('a.test'));
    const err = await ch.get(`${srv.url}/`).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PeerVerificationError);
    expect((err as Error).message).toMatch(/SVID_UNTRUSTED/);
    expect(srv.hits()).toBe(0);
  });

  it('TLS 1.2 forced by the server against the default TLS 1.3 channel fails without reaching the handler', async () => {
    const srv = await attacker(await devSvidPem(A, '/server'), { maxVersion: 'TLSv1.2' });
    const err = await channel()
      .get(`${srv.url}/`)
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Error);
    expect(srv.hits()).toBe(0);
  });

  it('a mismatch is detected before any request byte reaches the server', async () => {
    const raw = await byteCountingTlsServer({ ...(await devSvidPem(A, '/mallory')) });
    closers.push(raw.close);
    const ch = channel();
    const err = await ch
      .post(`${raw.url}/`, { body: 'x'.repeat(1000), headers: { 'content-type': 'text/plain' } })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PeerVerificationError);
    expect(raw.connections()).toBeGreaterThan(0); // the connection was made...
    expect(raw.bytes()).toBe(0); // ...but not one application byte was sent
  });

  it('a resumed TLS session is never used to skip the peer check', async () => {
    const creds = await devSvidPem(A, '/server');
    const ticketKeys = Buffer.alloc(48, 7);
    const srv = await attacker(creds, { ticketKeys });
    const reused: boolean[] = [];
    srv.server.on('secureConnection', (s: tls.TLSSocket) => reused.push(s.isSessionReused()));

    // Why the channel must care: plain Node resumption skips checkServerIdentity.
    const first = await tlsSession(srv.url, () => undefined);
    let checks = 0;
    const resumed = await tlsSession(
      srv.url,
      () => {
        checks++;
        return new Error('this peer is not who we expect');
      },
      first.session,
    );
    expect(resumed.reused).toBe(true);
    expect(checks).toBe(0); // the "wrong peer" check never ran on the resumed session

    // The channel resumes the sessions of servers it verified, and checks
    // the peer on each resumed connection: an authorizer that stops
    // accepting the server refuses the next (resumed) connection, and not
    // one request reaches the server.
    let accept = true;
    const seen: string[] = [];
    const flipping: Authorizer = (id) => {
      seen.push(id.toString());
      return accept ? { ok: true } : { ok: false, reason: 'no longer accepted' };
    };
    const good = channel(flipping);
    for (let i = 0; i < 3; i++) {
      const r = await good.get(`${srv.url}/`, { reset: true });
      await r.body.dump();
    }
    expect(reused.slice(-3)).toEqual([false, true, true]); // the channel's 2nd and 3rd connections resumed
    expect(seen).toEqual(['spiffe://a.test/server', 'spiffe://a.test/server', 'spiffe://a.test/server']);
    const hitsBefore = srv.hits();
    accept = false;
    const refused = await good.get(`${srv.url}/`, { reset: true }).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(PeerVerificationError);
    expect(reused.at(-1)).toBe(true); // refused on a resumed session, by the channel's own check
    expect(srv.hits()).toBe(hitsBefore);

    // Tickets are the channel's own: a channel expecting a different peer has
    // none, makes a full handshake, and its check refuses.
    const other = channel('spiffe://a.test/someone-else');
    const err = await other.get(`${srv.url}/`).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PeerVerificationError);
    expect((err as PeerVerificationError).message).toMatch(/SPIFFE ID mismatch/);
    expect(srv.hits()).toBe(hitsBefore);
  });
});

function tlsSession(
  url: string,
  checkServerIdentity: () => Error | undefined,
  session?: Buffer,
): Promise<{ session: Buffer; reused: boolean }> {
  const { port } = new URL(url);
  return new Promise((resolve, reject) => {
    const sock = tls.connect({
      host: '127.0.0.1',
      port: Number(port),
      ca: A.ca.x509Bundle.toPem(),
      checkServerIdentity,
      ...(session ? { session } : {}),
    });
    let got: Buffer | undefined;
    sock.on('session', (s: Buffer) => {
      got = s;
      sock.end();
    });
    sock.on('secureConnect', () => {
      if (session) {
        resolve({ session, reused: sock.isSessionReused() });
        sock.end();
      }
    });
    sock.on('close', () => (got ? resolve({ session: got, reused: sock.isSessionReused() }) : undefined));
    sock.on('error', reject);
  });
}
