// What a new verified connection costs in reads of the peer's certificates
// and in TLS contexts, counted on real sockets: the peer chain is read once
// per handshake on each side (Node's detailed getPeerCertificate(true)
// decodes every certificate into JS objects and is never used), and no
// secure context is built per connection — only per SVID/bundle update.
import { syncBuiltinESMExports } from 'node:module';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { authorizeMemberOf } from '@weave/identity';
import type { DevCaIdentityProvider } from '@weave/identity/dev';
import { SecureChannel } from '../src/index.js';
import { createMtlsServer, type MtlsFastifyInstance } from '../src/server.js';
import { makeTd, portOf, provider, removeTempDirs, type TestTd } from '@weave/test-support/tls-fixtures';

let A: TestTd;
let serverId: DevCaIdentityProvider;
let clientId: DevCaIdentityProvider;
let app: MtlsFastifyInstance;
let url: string;

interface Reads {
  x509: number;
  detailed: number;
  plain: number;
  server: boolean;
}
const reads = new Map<tls.TLSSocket, Reads>();
let contexts = 0;
/** Tickets handed to OpenSSL to decode (each decode parses the certificate kept in the session). */
let ticketDecodes = 0;
const resumed: boolean[] = [];
const proto = tls.TLSSocket.prototype;
// The native TLS handle's prototype: Node's own calls reach OpenSSL through it, not through TLSSocket.
const wrapProto = (() => {
  const s = new tls.TLSSocket(null as never);
  const p = Object.getPrototypeOf((s as unknown as { _handle: object })._handle) as {
    setSession(this: unknown, ticket: Buffer): void;
  };
  s.destroy();
  return p;
})();
const original = {
  x509: proto.getPeerX509Certificate,
  cert: proto.getPeerCertificate,
  context: tls.createSecureContext,
  setSession: wrapProto.setSession,
};

function count(sock: tls.TLSSocket): Reads {
  let r = reads.get(sock);
  const server = (sock as tls.TLSSocket & { server?: unknown }).server !== undefined;
  if (!r) reads.set(sock, (r = { x509: 0, detailed: 0, plain: 0, server }));
  return r;
}

beforeAll(async () => {
  A = await makeTd('a.test');
  serverId = await provider(A, '/server');
  clientId = await provider(A, '/client');
  app = createMtlsServer({ identity: serverId, authorize: authorizeMemberOf('a.test') });
  app.get('/', async (req) => req.peer.toString());
  await app.listen({ port: 0, host: '127.0.0.1' });
  app.server.on('secureConnection', (s: tls.TLSSocket) => resumed.push(s.isSessionReused()));
  url = `https://127.0.0.1:${portOf(app.server)}/`;
  wrapProto.setSession = function (this: unknown, ticket: Buffer) {
    ticketDecodes++;
    return original.setSession.call(this, ticket);
  };
  proto.getPeerX509Certificate = function (this: tls.TLSSocket) {
    count(this).x509++;
    return original.x509.call(this);
  };
  proto.getPeerCertificate = function (this: tls.TLSSocket, detailed?: boolean) {
    if (detailed) count(this).detailed++;
    else count(this).plain++;
    return original.cert.call(this, detailed as true);
  } as typeof proto.getPeerCertificate;
  tls.createSecureContext = (...args: Parameters<typeof tls.createSecureContext>) => {
    contexts++;
    return original.context(...args);
  };
  // The transport imports createSecureContext by name: let that binding see the counter.
  syncBuiltinESMExports();
}, 60_000);

afterAll(async () => {
  proto.getPeerX509Certificate = original.x509;
  proto.getPeerCertificate = original.cert;
  tls.createSecureContext = original.context;
  wrapProto.setSession = original.setSession;
  syncBuiltinESMExports();
  await app?.close();
  await serverId?.close();
  await clientId?.close();
  removeTempDirs();
});

describe('per new verified connection', () => {
  it('reads the peer chain once per handshake on each side and builds no secure context', async () => {
    const ch = new SecureChannel(clientId, 'spiffe://a.test/server');
    try {
      // The first request builds the channel's context (once for this SVID and bundle).
      expect(await (await ch.get(url, { reset: true })).body.text()).toBe('spiffe://a.test/client');
      const built = contexts;
      reads.clear();
      resumed.length = 0;
      ticketDecodes = 0;
      for (let i = 0; i < 5; i++) {
        const r = await ch.get(url, { reset: true });
        expect(await r.body.text()).toBe('spiffe://a.test/client');
      }
      expect(contexts).toBe(built);
      // Every connection resumed, and each decoded its ticket once (Node's
      // tls.connect given a `session` option decodes it twice).
      expect(resumed).toEqual([true, true, true, true, true]);
      expect(ticketDecodes).toBe(5);
      const servers = [...reads.values()].filter((r) => r.server);
      const clients = [...reads.values()].filter((r) => !r.server);
      // Five new connections on each side (the channel resumes: a resumed client
      // socket has no peer certificate to read, its kept chain is re-checked).
      expect(servers).toHaveLength(5);
      for (const r of [...servers, ...clients]) {
        expect(r.x509).toBeLessThanOrEqual(1);
        expect(r.detailed).toBe(0);
        expect(r.plain).toBe(0);
      }
      expect(servers.every((r) => r.x509 === 1)).toBe(true);
    } finally {
      await ch.close();
    }
  });

  it('builds a new client context when the SVID rotates, then none per connection again', async () => {
    const ch = new SecureChannel(clientId, 'spiffe://a.test/server');
    try {
      await (await ch.get(url, { reset: true })).body.dump();
      const before = contexts;
      const rotated = new Promise<void>((resolve) => ch.onRotated(() => resolve()));
      await clientId.rotate();
      await rotated;
      for (let i = 0; i < 3; i++) await (await ch.get(url, { reset: true })).body.dump();
      expect(contexts).toBe(before + 1);
    } finally {
      await ch.close();
    }
  });
});
