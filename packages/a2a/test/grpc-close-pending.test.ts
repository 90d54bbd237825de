// A TCP connection to the gRPC port that never completes its TLS handshake
// (here: it never sends a ClientHello, which needs no certificate) no longer
// holds A2AGrpcServer.close(): close() destroyed only admitted connections,
// then waited on the TLS server's close, which waited for this one (an
// agent's stop() was still pending at 200 s). The listener also closes such
// a connection itself after the transport config's connectTimeoutMs. Real
// mTLS with dev-CA SVIDs, the harness's request handler on grpc-js; the idle
// caller is a plain net.connect socket.
import { once } from 'node:events';
import { connect, type Socket } from 'node:net';
import { authorizeMemberOf } from '@weave/identity';
import { TRUST_DOMAIN } from '@weave/test-support';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { A2AClient, A2AGrpcServer } from '../src/index.js';
import { serveEcho, startHarness, type Harness } from './helpers/agents.js';

/** Before the fix close() waited for Node's 120 s handshake timeout: each case fails at this one. */
const CASE_TIMEOUT_MS = 15_000;

let h: Harness;
const ran: string[] = [];
const sockets: Socket[] = [];
const servers: A2AGrpcServer[] = [];
const clients: A2AClient[] = [];

beforeAll(async () => {
  h = await startHarness((a2a) => serveEcho(a2a, ran));
});

afterEach(async () => {
  await Promise.all(clients.splice(0).map((c) => c.close()));
  // Sockets first: a server a case failed to close then closes.
  for (const s of sockets.splice(0)) s.destroy();
  await Promise.all(servers.splice(0).map((g) => g.close(100)));
});

afterAll(async () => {
  await h.close();
});

/** The harness's handler on a gRPC listener of its own, listed on the card. */
async function startGrpc(connectTimeoutMs: number): Promise<{ grpc: A2AGrpcServer; port: number }> {
  const grpc = new A2AGrpcServer({
    handler: h.a2a.handler,
    identity: h.server.identity,
    authorize: authorizeMemberOf(TRUST_DOMAIN),
    config: { connectTimeoutMs },
  });
  servers.push(grpc);
  const { port, url } = await grpc.listen();
  h.a2a.advertiseGrpc(url);
  return { grpc, port };
}

/** A TCP connection to the gRPC port that sends nothing; `closed` settles when the server ends it. */
async function silentConnection(port: number): Promise<{ closed: Promise<boolean> }> {
  const socket = connect(port, '127.0.0.1');
  sockets.push(socket);
  socket.on('error', () => undefined);
  const closed = once(socket, 'close').then(() => true);
  await once(socket, 'connect');
  // Let the server accept it before anything else happens.
  await new Promise((r) => setTimeout(r, 100));
  return { closed };
}

async function grpcEcho(text: string): Promise<string> {
  const client = new A2AClient({ dispatcher: h.agent, preferredBindings: ['GRPC'] });
  clients.push(client);
  const task = await client.sendTask(h.url, 'echo', text);
  return JSON.stringify(task);
}

describe('A2AGrpcServer: a connection without a TLS handshake', () => {
  it(
    'is closed by close(), which resolves without waiting for it',
    async () => {
      // A handshake budget far past the case timeout: only close() can end the connection in time.
      const { grpc, port } = await startGrpc(600_000);
      const { closed } = await silentConnection(port);
      // Verified callers are served meanwhile.
      expect(await grpcEcho('meanwhile')).toContain('echo: meanwhile');
      const before = ran.length;

      await grpc.close(100);
      expect(await closed).toBe(true);
      expect(ran.length).toBe(before);
    },
    CASE_TIMEOUT_MS,
  );

  it(
    'is closed by the listener after connectTimeoutMs, and nothing runs',
    async () => {
      const { port } = await startGrpc(300);
      const before = ran.length;
      const { closed } = await silentConnection(port);
      expect(await closed).toBe(true);
      expect(ran.length).toBe(before);
      // The budget bounds the handshake only: a caller that completes it is served.
      expect(await grpcEcho('after')).toContain('echo: after');
    },
    CASE_TIMEOUT_MS,
  );
});
