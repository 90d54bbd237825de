// The TLS sessions a SecureChannel keeps hold no server certificate (decoding
// it was most of what resuming cost the client), and they still resume,
// count as verified by Node, and go through the channel's SPIFFE check on
// every resumed connection. TLS 1.2 sessions and anything not laid out as
// OpenSSL's SSL_SESSION are kept as they are.
import { X509Certificate } from 'node:crypto';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { authorizeMemberOf, type Authorizer, type SpiffeId } from '@weave/identity';
import type { DevCaIdentityProvider } from '@weave/identity/dev';
import { PeerVerificationError, SecureChannel } from '../src/index.js';
import { createMtlsServer, type MtlsFastifyInstance } from '../src/server.js';
import { sessionWithoutPeerCertificate } from '../src/tls.js';
import {
  devSvidPem,
  makeTd,
  portOf,
  provider,
  removeTempDirs,
  type TestTd,
} from '@weave/test-support/tls-fixtures';

let A: TestTd;
let serverId: DevCaIdentityProvider;
let clientId: DevCaIdentityProvider;
let app: MtlsFastifyInstance;
let url: string;
let port: number;
const handled: string[] = [];
const resumed: boolean[] = [];
/** The server leaf's DER, to look for inside sessions. */
let serverLeaf: Buffer;
let client: { cert: string; key: string; ca: string };

beforeAll(async () => {
  A = await makeTd('a.test');
  serverId = await provider(A, '/server');
  clientId = await provider(A, '/client');
  app = createMtlsServer({ identity: serverId, authorize: authorizeMemberOf('a.test') });
  app.get('/', async (req) => {
    handled.push(req.peer.toString());
    return req.peer.toString();
  });
  await app.listen({ port: 0, host: '127.0.0.1' });
  app.server.on('secureConnection', (s: tls.TLSSocket) => resumed.push(s.isSessionReused()));
  port = portOf(app.server);
  url = `https://127.0.0.1:${port}/`;
  serverLeaf = Buffer.from(serverId.getX509Svid().certificates[0]!.rawData);
  client = { ...(await devSvidPem(A, '/plain-client')), ca: A.ca.x509Bundle.toPem() };
}, 60_000);

afterAll(async () => {
  await app?.close();
  await serverId?.close();
  await clientId?.close();
  removeTempDirs();
});

interface Plain {
  session: Buffer | undefined;
  reused: boolean;
  authorized: boolean;
}

/** A plain tls.connect to the server (optionally resuming `session`): its last session and how it went. */
function plainConnect(
  opts: { session?: Buffer; maxVersion?: tls.SecureVersion; port?: number } = {},
): Promise<Plain> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({
      host: '127.0.0.1',
      port: opts.port ?? port,
      ...client,
      minVersion: 'TLSv1.2',
      ...(opts.maxVersion ? { maxVersion: opts.maxVersion } : {}),
      ...(opts.session ? { session: opts.session } : {}),
      checkServerIdentity: () => undefined,
    });
    let session: Buffer | undefined;
    let reused = false;
    let authorized = false;
    s.on('session', (t: Buffer) => (session = t));
    s.on('secureConnect', () => {
      reused = s.isSessionReused();
      authorized = s.authorized;
      s.end('GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n');
    });
    s.on('data', () => undefined);
    s.on('error', reject);
    s.on('close', () => resolve({ session, reused, authorized }));
  });
}

/**
 * Whether `session` is OpenSSL's DER `SSL_SESSION` (a SEQUENCE), as Node 20
 * (OpenSSL 3.0) hands it out. Node 22 and 24 (OpenSSL 3.5) hand out
 * another encoding, which the channel passes on unchanged.
 */
const derSession = (session: Buffer): boolean => session[0] === 0x30;

describe('sessionWithoutPeerCertificate', () => {
  it('drops the server certificate from a TLS 1.3 session, which still resumes as verified; another encoding comes back unchanged', async () => {
    const first = await plainConnect();
    expect(first.session).toBeDefined();
    expect(first.session!.includes(serverLeaf)).toBe(true);
    const light = sessionWithoutPeerCertificate(first.session!);
    if (derSession(first.session!)) {
      expect(light.includes(serverLeaf)).toBe(false);
      expect(light.length).toBeLessThan(first.session!.length);
    } else {
      expect(light).toBe(first.session);
    }
    const again = await plainConnect({ session: light });
    expect(again).toMatchObject({ reused: true, authorized: true });
  });

  it('keeps a TLS 1.2 session whole (Node counts one without certificate as unverified)', async () => {
    const tls12 = createMtlsServer({
      identity: serverId,
      authorize: authorizeMemberOf('a.test'),
      config: { minTlsVersion: 'TLSv1.2' },
    });
    tls12.get('/', async () => 'ok');
    await tls12.listen({ port: 0, host: '127.0.0.1' });
    try {
      const first = await plainConnect({ maxVersion: 'TLSv1.2', port: portOf(tls12.server) });
      expect(first.session).toBeDefined();
      expect(first.session!.includes(serverLeaf)).toBe(true);
      expect(sessionWithoutPeerCertificate(first.session!)).toBe(first.session);
    } finally {
      await tls12.close();
    }
  });

  it('returns anything not laid out as an SSL_SESSION unchanged', async () => {
    const { session } = await plainConnect();
    const samples = [
      Buffer.alloc(0),
      Buffer.from([0x30]),
      Buffer.from('not DER at all'),
      session!.subarray(0, session!.length - 1), // truncated
      Buffer.concat([session!, Buffer.from([0])]), // trailing byte
    ];
    for (const s of samples) expect(sessionWithoutPeerCertificate(s)).toBe(s);
  });
});

describe('SecureChannel resumption with certificate-less tickets', () => {
  it('hands OpenSSL tickets without the server certificate (where they are DER sessions) and resumes', async () => {
    const tickets: Buffer[] = [];
    const proto = Object.getPrototypeOf(
      (new tls.TLSSocket(null as never) as unknown as { _handle: object })._handle,
    ) as { setSession(this: unknown, t: Buffer): void };
    const original = proto.setSession;
    proto.setSession = function (this: unknown, t: Buffer) {
      tickets.push(Buffer.from(t));
      return original.call(this, t);
    };
    const ch = new SecureChannel(clientId, 'spiffe://a.test/server');
    try {
      resumed.length = 0;
      for (let i = 0; i < 4; i++) {
        expect(await (await ch.get(url, { reset: true })).body.text()).toBe('spiffe://a.test/client');
      }
      expect(resumed).toEqual([false, true, true, true]);
      expect(tickets).toHaveLength(3);
      // Where Node hands out DER sessions (Node 20) they go without the certificate; another
      // encoding (Node 22+) goes as Node gave it.
      const der = derSession((await plainConnect()).session!);
      for (const t of tickets) expect(t.includes(serverLeaf)).toBe(!der);
    } finally {
      proto.setSession = original;
      await ch.close();
    }
  });

  it('still checks the kept chain on each resumed connection: a peer no longer accepted is refused', async () => {
    let accept = true;
    const seen: string[] = [];
    const authorize: Authorizer = (id: SpiffeId) => {
      seen.push(id.toString());
      return accept ? { ok: true } : { ok: false, reason: 'no longer accepted' };
    };
    const ch = new SecureChannel(clientId, authorize);
    try {
      resumed.length = 0;
      for (let i = 0; i < 2; i++) await (await ch.get(url, { reset: true })).body.dump();
      expect(resumed).toEqual([false, true]);
      // The server's ID on the resumed connection came from the kept chain, not the ticket.
      expect(seen).toEqual(['spiffe://a.test/server', 'spiffe://a.test/server']);
      accept = false;
      handled.length = 0;
      const err = await ch.get(url, { reset: true }).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(PeerVerificationError);
      expect(resumed.at(-1)).toBe(true); // refused on a resumed connection, by the channel's check
      expect(handled).toEqual([]);
    } finally {
      await ch.close();
    }
  });

  it('keeps the certificate the server presented available to the check (not the ticket)', async () => {
    const serials: string[] = [];
    const ch = new SecureChannel(clientId, 'spiffe://a.test/server');
    ch.onPeerVerified((e) => serials.push(e.serialNumber));
    try {
      for (let i = 0; i < 3; i++) await (await ch.get(url, { reset: true })).body.dump();
      const serial = new X509Certificate(serverLeaf).serialNumber;
      expect(serials).toEqual([serial, serial, serial]);
    } finally {
      await ch.close();
    }
  });
});
