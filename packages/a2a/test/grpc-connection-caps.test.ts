// What one client can hold open on the A2A gRPC binding. Measured before
// these bounds (loopback, Node 20): an idle gRPC connection was never closed
// (5000 held for minutes, some 80 KiB of the server's memory each), one
// client could open as many as its handshake rate and the file descriptor
// limit allowed, and a client that opened SendMessage calls and reset each
// at once (rapid reset) had 734 tasks run on one connection, then got
// nghttp2's GOAWAY and kept the connection open until the keepalive gave up
// on it (30 s). Now, as on the HTTP servers: `maxConnections` per listener
// (closed as accepted), `maxConnectionsPerPeer` per admitted SPIFFE ID
// (closed as admitted, before grpc-js reads a byte), each refusal counted
// and logged at a bounded rate, and a connection whose client resets more
// calls than HTTP2_RESET_LIMIT allows closed at once. Real mTLS with dev-CA
// SVIDs, the agent on fastify and grpc-js; raw HTTP/2 frames as the callers.
import { once } from 'node:events';
import { constants as h2 } from 'node:http2';
import { connect as tlsConnect, type ConnectionOptions } from 'node:tls';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { authorizeMemberOf } from '@weave/identity';
import { HTTP2_RESET_LIMIT } from '@weave/transport';
import { TRUST_DOMAIN } from '@weave/test-support';
import { H2_FRAME, H2_PREFACE, floodStreams, frame, headerBlock } from '@weave/test-support/h2-flood';
import { A2AConfigError, A2AGrpcServer, type A2AGrpcServerOptions } from '../src/index.js';
import { startEchoEverywhere, type EchoEverywhere, type Harness } from './helpers/agents.js';
import { SEND_MESSAGE_HEADERS, sendMessageBody } from './helpers/grpc-raw.js';

let h: Harness;
let close: EchoEverywhere['close'] | undefined;
const ran: string[] = [];
const servers: A2AGrpcServer[] = [];
const closers: Array<() => void> = [];

beforeAll(async () => {
  ({ h, close } = await startEchoEverywhere(ran));
});

afterEach(async () => {
  for (const c of closers.splice(0)) c();
  await Promise.all(servers.splice(0).map((s) => s.close(100)));
});

afterAll(() => close?.());

/** The harness's request handler on a gRPC listener of its own with these bounds; its warn lines in `lines`. */
async function serve(
  limits: Pick<A2AGrpcServerOptions, 'maxConnections' | 'maxConnectionsPerPeer'>,
): Promise<{ grpc: A2AGrpcServer; lines: Array<Record<string, unknown>> }> {
  const lines: Array<Record<string, unknown>> = [];
  const grpc = new A2AGrpcServer({
    handler: h.a2a.handler,
    identity: h.server.identity,
    authorize: authorizeMemberOf(TRUST_DOMAIN),
    ...limits,
    logger: {
      warn: (obj, msg) => lines.push({ ...obj, msg }),
      error: (obj, msg) => lines.push({ ...obj, msg }),
    },
  });
  servers.push(grpc);
  await grpc.listen();
  return { grpc, lines };
}

/** Where `grpc` listens, with the TLS credentials of the allowed client or of the stranger. */
function connectTo(grpc: A2AGrpcServer, who: 'client' | 'stranger'): ConnectionOptions {
  const [host, port] = (grpc.url as string).split(':') as [string, string];
  const agent = who === 'client' ? h.agent : h.strangerAgent;
  return { ...agent.tlsClientOptions(), host, port: Number(port), servername: 'localhost' };
}

/** One SendMessage on a new connection: whether it was answered, or the connection closed first. */
async function callOnNewConnection(grpc: A2AGrpcServer, who: 'client' | 'stranger'): Promise<boolean> {
  try {
    const r = await floodStreams({
      connect: connectTo(grpc, who),
      streams: 0,
      open: SEND_MESSAGE_HEADERS,
      last: { headers: SEND_MESSAGE_HEADERS, body: sendMessageBody('caps') },
    });
    return r.lastAnswered;
  } catch {
    // Closed before the TLS handshake completed.
    return false;
  }
}

/** Whether a SendMessage of the client is answered within a second (the listener learns of a close a moment later). */
async function answeredSoon(grpc: A2AGrpcServer): Promise<boolean> {
  for (let i = 0; i < 50; i++) {
    if (await callOnNewConnection(grpc, 'client')) return true;
    await new Promise((r) => setTimeout(r, 20));
  }
  return false;
}

/**
 * An HTTP/2 connection to `grpc` as `who`, held open: admitted when the
 * server answers its preface with its SETTINGS, refused when it closes first.
 */
async function hold(
  grpc: A2AGrpcServer,
  who: 'client' | 'stranger',
): Promise<{ admitted: boolean; close: () => Promise<void> }> {
  const sock = tlsConnect({ ...connectTo(grpc, who), ALPNProtocols: ['h2'] });
  sock.on('error', () => undefined);
  closers.push(() => sock.destroy());
  const closed = new Promise((r) => sock.once('close', r));
  sock.once('secureConnect', () => sock.write(Buffer.concat([H2_PREFACE, frame(SETTINGS, 0, 0)])));
  const admitted = await Promise.race([
    new Promise<boolean>((r) => sock.once('data', () => r(true))),
    closed.then(() => false),
  ]);
  return {
    admitted,
    close: async () => {
      sock.destroy();
      await closed;
    },
  };
}

describe('gRPC connection bounds: options', () => {
  it.each([
    ['maxConnections', 0],
    ['maxConnections', 1.5],
    ['maxConnections', Number.NaN],
    ['maxConnectionsPerPeer', -1],
    ['maxConnectionsPerPeer', '10'],
  ] as const)('%s: %s is an A2AConfigError naming it; nothing is started', (name, value) => {
    let thrown: unknown;
    try {
      new A2AGrpcServer({
        handler: h.a2a.handler,
        identity: h.server.identity,
        authorize: authorizeMemberOf(TRUST_DOMAIN),
        [name]: value as never,
      });
    } catch (err) {
      thrown = err;
    }
    expect(thrown).toBeInstanceOf(A2AConfigError);
    expect((thrown as A2AConfigError).issues).toEqual([
      expect.stringMatching(new RegExp(`^${name} must be a whole number of connections, at least 1`)),
    ]);
  });
});

describe('gRPC connection bounds', () => {
  it('a connection over maxConnections is closed as it is accepted, counted and logged, and runs nothing; a freed slot is served', async () => {
    const { grpc, lines } = await serve({ maxConnections: 2 });
    const a = await hold(grpc, 'stranger');
    const b = await hold(grpc, 'client');
    expect(a.admitted && b.admitted).toBe(true);

    const before = ran.length;
    expect(await callOnNewConnection(grpc, 'client')).toBe(false);
    expect(ran.length).toBe(before);
    expect(lines.filter((l) => l.code === 'CONNECTION_LIMIT')).toEqual([
      expect.objectContaining({
        maxConnections: 2,
        refused: 1,
        msg: 'a2a grpc: connection refused: the server holds maxConnections',
      }),
    ]);
    // Counted for metrics too, under their own bound only.
    expect(grpc.connectionRefusals).toEqual({ server: 1, peer: 0, address: 0 });

    await a.close();
    expect(await answeredSoon(grpc)).toBe(true);
    expect(ran.length).toBe(before + 1);
  });

  it('a peer at maxConnectionsPerPeer has its next connection closed as it is admitted, and runs nothing; other peers are served', async () => {
    const { grpc, lines } = await serve({ maxConnectionsPerPeer: 2 });
    const held = [await hold(grpc, 'client'), await hold(grpc, 'client')];
    expect(held.map((c) => c.admitted)).toEqual([true, true]);

    const before = ran.length;
    expect(await callOnNewConnection(grpc, 'client')).toBe(false);
    expect(ran.length).toBe(before);
    expect(lines.filter((l) => l.code === 'CONNECTION_LIMIT')).toEqual([
      expect.objectContaining({
        peer: h.clientId.toString(),
        maxConnectionsPerPeer: 2,
        refused: 1,
        msg: 'a2a grpc: connection refused: the peer holds maxConnectionsPerPeer',
      }),
    ]);
    expect(grpc.connectionRefusals).toEqual({ server: 0, peer: 1, address: 0 });

    // Another SPIFFE ID has its own count (its calls are then the policy's to refuse).
    expect((await hold(grpc, 'stranger')).admitted).toBe(true);

    // The peer's count goes down as its connections close.
    await held[0]?.close();
    expect(await answeredSoon(grpc)).toBe(true);
    expect(ran.length).toBe(before + 1);
  });
});

// Raw frames: no HTTP/2 client library resets its own streams in a flood.
const { DATA, HEADERS, RST_STREAM, SETTINGS, GOAWAY, END_STREAM, END_HEADERS } = H2_FRAME;

/**
 * Opens up to `n` whole SendMessage calls on one connection, each reset
 * (RST_STREAM CANCEL) right after its message, 100 at a time, until the
 * server closes the connection. Resolves how long that took, and the
 * GOAWAY code it sent, or `closedAfterMs` undefined when it was still open
 * 5 s after the last call was sent.
 */
async function resetFlood(
  grpc: A2AGrpcServer,
  n: number,
): Promise<{ closedAfterMs?: number; goaway?: number }> {
  const sock = tlsConnect({ ...connectTo(grpc, 'client'), ALPNProtocols: ['h2'] });
  sock.on('error', () => undefined);
  closers.push(() => sock.destroy());
  await once(sock, 'secureConnect');
  let closedAt: number | undefined;
  let goaway: number | undefined;
  const closed = new Promise<void>((resolve) =>
    sock.once('close', () => {
      closedAt = performance.now();
      resolve();
    }),
  );
  let buf = Buffer.alloc(0);
  sock.on('data', (d: Buffer) => {
    buf = Buffer.concat([buf, d]);
    while (buf.length >= 9 && buf.length >= 9 + buf.readUIntBE(0, 3)) {
      const len = buf.readUIntBE(0, 3);
      if (buf[3] === GOAWAY && goaway === undefined) goaway = buf.readUInt32BE(9 + 4);
      buf = buf.subarray(9 + len);
    }
  });
  const headers = headerBlock(SEND_MESSAGE_HEADERS);
  const body = sendMessageBody('caps');
  const cancel = Buffer.alloc(4);
  cancel.writeUInt32BE(h2.NGHTTP2_CANCEL);
  const t0 = performance.now();
  sock.write(Buffer.concat([H2_PREFACE, frame(SETTINGS, 0, 0)]));
  for (let i = 0; i < n && closedAt === undefined; i += 100) {
    const frames: Buffer[] = [];
    for (let j = i; j < Math.min(n, i + 100); j++) {
      const id = 2 * j + 1;
      frames.push(
        frame(HEADERS, END_HEADERS, id, headers),
        frame(DATA, END_STREAM, id, body),
        frame(RST_STREAM, 0, id, cancel),
      );
    }
    sock.write(Buffer.concat(frames));
    await new Promise((r) => setImmediate(r));
  }
  await Promise.race([closed, new Promise((r) => setTimeout(r, 5_000))]);
  return {
    ...(closedAt === undefined ? {} : { closedAfterMs: closedAt - t0 }),
    ...(goaway === undefined ? {} : { goaway }),
  };
}

describe('gRPC calls reset in a flood (rapid reset)', () => {
  it(`close the connection at once, after ${HTTP2_RESET_LIMIT.burst} of them; other clients are served`, async () => {
    const { grpc, lines } = await serve({});
    const before = ran.length;
    // Past nghttp2's own limit (1000 resets), whose GOAWAY (INTERNAL_ERROR)
    // left the connection open until the keepalive gave up on it.
    const r = await resetFlood(grpc, 1500);
    expect({ closed: r.closedAfterMs !== undefined, goaway: r.goaway }).toEqual({
      closed: true,
      goaway: h2.NGHTTP2_ENHANCE_YOUR_CALM,
    });
    expect(r.closedAfterMs).toBeLessThan(2_000);
    // Tasks ran for the calls read before the bound was reached and for
    // those read with it (a batch of 100 here), then for no more.
    expect(ran.length - before).toBeLessThanOrEqual(HTTP2_RESET_LIMIT.burst + 100);
    expect(lines.filter((l) => l.code === 'HTTP2_RESET_FLOOD')).toEqual([
      expect.objectContaining({ closed: 1, msg: 'a2a grpc: connection closed: too many calls reset' }),
    ]);

    const served = ran.length;
    expect(await callOnNewConnection(grpc, 'client')).toBe(true);
    expect(ran.length).toBe(served + 1);
  });
});
