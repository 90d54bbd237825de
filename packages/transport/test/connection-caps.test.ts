// What one client can hold open on a createMtlsServer server. Measured before
// these bounds (loopback, Node 20): one client opened 15 000 mTLS connections
// in 80 s, each holding 50 KiB (HTTP/1.1) to 100 KiB (HTTP/2 with a stream
// waiting for its body) of the server's memory, bounded only by its handshake
// rate and the file descriptor limit; and an HTTP/2 client that opened and
// reset streams in a flood (rapid reset) had 1200 route handlers run, got
// nghttp2's GOAWAY, and kept its connection open until the session's idle
// timeout. Now: `maxConnections` per server (closed as accepted),
// `maxConnectionsPerPeer` per verified SPIFFE ID (closed as the handshake
// completes), each refusal counted and logged at a bounded rate, and a
// connection whose client resets more than HTTP2_RESET_LIMIT allows closed at
// once. Real mTLS on loopback with dev-CA SVIDs; raw TLS sockets and Node's
// HTTP/2 client as the callers.
import { once } from 'node:events';
import { connect as netConnect, type Socket } from 'node:net';
import { connect as h2Connect, constants as h2, type ClientHttp2Session } from 'node:http2';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { authorizeMemberOf } from '@weave/identity';
import type { DevCaIdentityProvider } from '@weave/identity/dev';
import {
  HTTP2_RESET_LIMIT,
  TransportConfigError,
  parseConnectionLimits,
  type HttpVersion,
} from '../src/index.js';
import { createMtlsServer, type CreateMtlsServerOptions, type MtlsFastifyInstance } from '../src/server.js';
import { makeTd, portOf, provider, removeTempDirs, type TestTd } from '@weave/test-support/tls-fixtures';

let td: TestTd;
let serverId: DevCaIdentityProvider;
let clientId: DevCaIdentityProvider;
let otherId: DevCaIdentityProvider;
const apps: MtlsFastifyInstance[] = [];
const closers: Array<() => void> = [];

beforeAll(async () => {
  td = await makeTd('conncap.test');
  serverId = await provider(td, '/server');
  clientId = await provider(td, '/client');
  otherId = await provider(td, '/other');
});

afterEach(async () => {
  for (const c of closers.splice(0)) c();
  await Promise.all(apps.splice(0).map((a) => a.close()));
});

afterAll(async () => {
  await serverId.close();
  await clientId.close();
  await otherId.close();
  removeTempDirs();
});

interface Started {
  app: MtlsFastifyInstance;
  port: number;
  /** Route runs so far. */
  handled: () => number;
  /** The server's warn lines. */
  lines: Array<Record<string, unknown>>;
}

async function start(
  httpVersion: HttpVersion,
  limits: Pick<
    CreateMtlsServerOptions,
    'maxConnections' | 'maxConnectionsPerPeer' | 'maxHandshakesPerAddress'
  > = {},
): Promise<Started> {
  const lines: Array<Record<string, unknown>> = [];
  let handled = 0;
  const app = createMtlsServer({
    identity: serverId,
    authorize: authorizeMemberOf(td.name),
    // Idle connections stay open for the whole case: only the bounds close them.
    config: { httpVersion, idleTimeoutMs: 60_000 },
    ...limits,
    fastify: {
      logger: {
        level: 'warn',
        stream: { write: (line: string) => lines.push(JSON.parse(line) as Record<string, unknown>) },
      },
    },
  });
  app.get('/', async () => {
    handled++;
    return { ok: true };
  });
  await app.listen({ port: 0, host: '127.0.0.1' });
  apps.push(app);
  return { app, port: portOf(app.server), handled: () => handled, lines };
}

function tlsOptions(who: DevCaIdentityProvider) {
  const svid = who.getX509Svid().toPem();
  return {
    cert: svid.certChain,
    key: svid.privateKey,
    ca: td.ca.x509Bundle.toPem(),
    checkServerIdentity: () => undefined,
  };
}

/** A connection that answered one GET and is held open, or one closed without an answer. */
type Outcome = { answered: true; close: () => Promise<void> } | { answered: false };

/** One HTTP/1.1 keep-alive GET / on a new connection as `who`; answered, the connection stays open. */
function http1Get(port: number, who: DevCaIdentityProvider): Promise<Outcome> {
  const sock: TLSSocket = tlsConnect({
    host: '127.0.0.1',
    port,
    ...tlsOptions(who),
    ALPNProtocols: ['http/1.1'],
  });
  sock.on('error', () => undefined);
  closers.push(() => sock.destroy());
  const closed = new Promise((r) => sock.once('close', r));
  return new Promise((resolve) => {
    let data = '';
    sock.setEncoding('utf8');
    sock.once('secureConnect', () => sock.write('GET / HTTP/1.1\r\nhost: a\r\n\r\n'));
    sock.on('data', (d: string) => {
      data += d;
      if (data.startsWith('HTTP/1.1 200') && data.endsWith('}')) {
        resolve({
          answered: true,
          close: async () => {
            sock.destroy();
            await closed;
          },
        });
      }
    });
    sock.once('close', () => resolve({ answered: false }));
  });
}

/** One HTTP/2 GET / on a new session as `who`; answered, the session stays open. */
function http2Get(port: number, who: DevCaIdentityProvider): Promise<Outcome> {
  const s = h2Connect(`https://127.0.0.1:${port}`, tlsOptions(who));
  s.on('error', () => undefined);
  closers.push(() => s.destroy());
  const closed = new Promise((r) => s.once('close', r));
  return new Promise((resolve) => {
    const req = s.request({ ':path': '/' });
    req.on('error', () => undefined);
    req.once('response', (headers) => {
      req.resume();
      resolve(
        headers[':status'] === 200
          ? {
              answered: true,
              close: async () => {
                s.destroy();
                await closed;
              },
            }
          : { answered: false },
      );
    });
    s.once('close', () => resolve({ answered: false }));
  });
}

const getOn = { 'http1.1': http1Get, http2: http2Get } as const;

/**
 * Resolves once the server holds `n` connections (it learns of a client's
 * close a moment later); throws when it still holds another count after 5 s.
 */
async function serverHolds(app: MtlsFastifyInstance, n: number): Promise<void> {
  const deadline = performance.now() + 5_000;
  for (;;) {
    const held = await new Promise<number>((resolve, reject) =>
      app.server.getConnections((err, count) => (err ? reject(err) : resolve(count))),
    );
    if (held === n) return;
    if (performance.now() > deadline)
      throw new Error(`the server holds ${held} connections, not ${n}, after 5 s`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('connection bounds: options', () => {
  it('default to 10 000 per server and 1000 per peer, applied to the server', async () => {
    expect(parseConnectionLimits()).toEqual({
      maxConnections: 10_000,
      maxConnectionsPerPeer: 1_000,
      maxHandshakesPerAddress: 64,
    });
    const { app } = await start('http1.1');
    expect(app.server.maxConnections).toBe(10_000);
  });

  it.each([
    ['maxConnections', 0],
    ['maxConnections', -1],
    ['maxConnections', 1.5],
    ['maxConnections', Number.NaN],
    ['maxConnections', Number.POSITIVE_INFINITY],
    ['maxConnections', '100'],
    ['maxConnectionsPerPeer', 0],
    ['maxConnectionsPerPeer', 2.5],
    ['maxConnectionsPerPeer', null],
    ['maxHandshakesPerAddress', 0],
    ['maxHandshakesPerAddress', 1.5],
  ] as const)('%s: %s is a TransportConfigError naming it, thrown before anything listens', (name, value) => {
    let thrown: unknown;
    try {
      createMtlsServer({ identity: serverId, authorize: authorizeMemberOf(td.name), [name]: value as never });
    } catch (err) {
      thrown = err;
    }
    expect(thrown).toBeInstanceOf(TransportConfigError);
    expect((thrown as TransportConfigError).issues.join('\n')).toMatch(
      new RegExp(`^${name}: must be a whole number of connections, at least 1`),
    );
  });
});

describe.each(['http1.1', 'http2'] as const)('connection bounds (%s)', (v) => {
  it('a connection over maxConnections is closed as it is accepted, counted and logged, and no route runs for it; a freed slot is served', async () => {
    const { app, port, handled, lines } = await start(v, { maxConnections: 2 });
    const a = await getOn[v](port, clientId);
    const b = await getOn[v](port, otherId);
    expect(a.answered && b.answered).toBe(true);
    expect(handled()).toBe(2);

    expect((await getOn[v](port, otherId)).answered).toBe(false);
    expect((await getOn[v](port, clientId)).answered).toBe(false);
    expect(handled()).toBe(2);
    const refusals = lines.filter((l) => l.code === 'CONNECTION_LIMIT');
    expect(refusals.map((l) => [l.maxConnections, l.refused])).toEqual([
      [2, 1],
      [2, 2],
    ]);
    expect(refusals[0]?.msg).toBe('connection refused: the server holds maxConnections');
    // Counted for metrics too, under their own bound only.
    expect(app.connectionRefusals?.()).toEqual({ server: 2, peer: 0, address: 0 });

    if (a.answered) await a.close();
    await serverHolds(app, 1);
    expect((await getOn[v](port, clientId)).answered).toBe(true);
    expect(handled()).toBe(3);
  });

  it('a peer at maxConnectionsPerPeer has its next connection closed after the handshake, before any request is read; other peers are served', async () => {
    const { app, port, handled, lines } = await start(v, { maxConnectionsPerPeer: 2 });
    const held = [await getOn[v](port, clientId), await getOn[v](port, clientId)];
    expect(held.every((o) => o.answered)).toBe(true);
    expect(handled()).toBe(2);

    expect((await getOn[v](port, clientId)).answered).toBe(false);
    expect(handled()).toBe(2);
    const refusal = lines.find((l) => l.code === 'CONNECTION_LIMIT');
    expect(refusal).toMatchObject({
      peer: clientId.id.toString(),
      maxConnectionsPerPeer: 2,
      refused: 1,
      msg: 'connection refused: the peer holds maxConnectionsPerPeer',
    });
    expect(app.connectionRefusals?.()).toEqual({ server: 0, peer: 1, address: 0 });

    // Another SPIFFE ID has its own count.
    expect((await getOn[v](port, otherId)).answered).toBe(true);
    expect(handled()).toBe(3);

    // The peer's count goes down as its connections close.
    const first = held[0];
    if (first?.answered) await first.close();
    await serverHolds(app, 2);
    expect((await getOn[v](port, clientId)).answered).toBe(true);
    expect(handled()).toBe(4);
  });
});

/** A verified HTTP/2 session as `who`, ready for requests. */
async function session(port: number, who: DevCaIdentityProvider): Promise<ClientHttp2Session> {
  const s = h2Connect(`https://127.0.0.1:${port}`, tlsOptions(who));
  s.on('error', () => undefined);
  closers.push(() => s.destroy());
  // The server's SETTINGS first: until then the client holds itself to 100 streams.
  await once(s, 'remoteSettings');
  return s;
}

/**
 * Opens `n` GET streams on `s` and resets each at once (HEADERS, then
 * RST_STREAM CANCEL), as rapid reset does: 100 at a time, each batch sent
 * before the next is made, so that the client never holds 1000 at once
 * (the server's bound, over which it would keep the rest to itself).
 */
async function openAndReset(s: ClientHttp2Session, n: number): Promise<void> {
  for (let i = 0; i < n && !s.destroyed; i++) {
    const req = s.request({ ':path': '/' });
    req.on('error', () => undefined);
    req.close(h2.NGHTTP2_CANCEL);
    if (i % 100 === 99) await new Promise((r) => setImmediate(r));
  }
}

describe('handshakes in progress per remote address', () => {
  /** A TCP connection from `localAddress` that never starts TLS. */
  async function silent(port: number, localAddress: string): Promise<Socket> {
    const socket = netConnect({ host: '127.0.0.1', port, localAddress });
    socket.on('error', () => undefined);
    closers.push(() => socket.destroy());
    await once(socket, 'connect');
    return socket;
  }
  const closedSoon = (socket: Socket): Promise<boolean> =>
    socket.closed
      ? Promise.resolve(true)
      : new Promise((resolve) => {
          const timer = setTimeout(() => resolve(false), 2_000);
          socket.once('close', () => {
            clearTimeout(timer);
            resolve(true);
          });
        });

  it('one address that never finishes its handshakes cannot fill maxConnections: over maxHandshakesPerAddress it is closed at once; another address is served', async () => {
    const { app, port, handled, lines } = await start('http1.1', {
      maxConnections: 4,
      maxHandshakesPerAddress: 2,
    });
    // 127.0.0.2 is another address of the loopback interface: another caller.
    const held = [await silent(port, '127.0.0.2'), await silent(port, '127.0.0.2')];
    const over = await silent(port, '127.0.0.2');
    expect(await closedSoon(over)).toBe(true);
    expect(held.some((s) => s.closed)).toBe(false);
    const refusals = lines.filter((l) => l.maxHandshakesPerAddress === 2);
    expect(refusals.map((l) => [l.code, l.remoteAddress, l.refused])).toEqual([
      ['CONNECTION_LIMIT', '127.0.0.2', 1],
    ]);
    expect(app.connectionRefusals?.()).toEqual({ server: 0, peer: 0, address: 1 });
    // Another address, with two slots of maxConnections left, completes its handshake and is served.
    const served = await http1Get(port, clientId);
    expect(served.answered).toBe(true);
    expect(handled()).toBe(1);
    // A finished handshake no longer counts: 127.0.0.1 holds two served connections beside the two silent ones.
    if (served.answered) await served.close();
    const again = [await http1Get(port, clientId), await http1Get(port, clientId)];
    expect(again.every((o) => o.answered)).toBe(true);
    // Once the silent ones close, 127.0.0.2 may start handshakes again.
    for (const s of held) s.destroy();
    await serverHolds(app, 2);
    const later = await silent(port, '127.0.0.2');
    expect(await closedSoon(later)).toBe(false);
  });
});

describe('HTTP/2 streams reset in a flood (rapid reset)', () => {
  it(`close the connection at once, after ${HTTP2_RESET_LIMIT.burst} of them; other clients are served`, async () => {
    const { app, port, handled, lines } = await start('http2');
    const s = await session(port, clientId);
    await serverHolds(app, 1);
    const t0 = performance.now();
    // Past nghttp2's own limit (1000 resets), whose GOAWAY (INTERNAL_ERROR)
    // left the connection open until the session's idle timeout (60 s here).
    await openAndReset(s, 1500);
    // Watched from the server's side: Node's HTTP/2 client, busy resetting, does not see the close at once.
    await serverHolds(app, 0);
    expect(performance.now() - t0).toBeLessThan(2_000);
    // The route ran for the streams read before the bound was reached and
    // for those read with it or in the same turn (batches of 100 here: the
    // close comes after the turn, see closeHttp2ResetFloods), then for no more.
    expect(handled()).toBeLessThanOrEqual(HTTP2_RESET_LIMIT.burst + 200);
    expect(lines.filter((l) => l.code === 'HTTP2_RESET_FLOOD')).toEqual([
      expect.objectContaining({ closed: 1, msg: 'HTTP/2 connection closed: too many streams reset' }),
    ]);

    expect((await http2Get(port, otherId)).answered).toBe(true);
  });

  it('a client that resets fewer streams keeps its connection', async () => {
    const { port, handled } = await start('http2');
    const s = await session(port, clientId);
    await openAndReset(s, HTTP2_RESET_LIMIT.burst / 2);
    const req = s.request({ ':path': '/' });
    const [headers] = (await once(req, 'response')) as [Record<string, unknown>];
    req.resume();
    expect(headers[':status']).toBe(200);
    expect(s.closed || s.destroyed).toBe(false);
    expect(handled()).toBeGreaterThanOrEqual(1);
  });
});
