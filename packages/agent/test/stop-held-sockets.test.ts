// stop() is not held by a connection that never finishes what it started:
// a request left half-sent on the plain-HTTP ops listener (stop() was still
// pending at 200 s: Node's server.close() waits for the connection, and Node
// stops checking its header deadline once closing), or a TCP connection that
// never sends a TLS ClientHello to the mTLS port (stop() took 119.8 s, Node's
// handshake timeout) or to the gRPC port (still pending at 200 s). Real
// agents on loopback with dev Workload API identities; the idle callers are
// plain net.connect sockets.
import { once } from 'node:events';
import { connect, type Socket } from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { SecureAgent } from '../src/index.js';
import { startWorld, testLogger, type World } from './helpers.js';

/** Before the fix stop() waited for minutes: each case fails at this. */
const CASE_TIMEOUT_MS = 15_000;

let world: World;
const sockets: Socket[] = [];
const agents: SecureAgent[] = [];
let ran = 0;

beforeAll(async () => {
  world = await startWorld();
});

afterEach(async () => {
  // Sockets first: an agent a case failed to stop then stops.
  for (const s of sockets.splice(0)) s.destroy();
  await Promise.all(agents.splice(0).map((a) => a.stop({ drainTimeoutMs: 0 })));
});

afterAll(() => world.close());

async function startSearch(): Promise<SecureAgent> {
  const agent = new SecureAgent({
    config: {
      name: 'search',
      identity: { workloadApi: { socket: world.dev.address('search') } },
      authz: { policyFile: world.policyFile },
      observability: { ops: { host: '127.0.0.1', port: 0 } },
    },
    logger: testLogger(),
    env: {},
  }).capability('search', { input: z.object({ query: z.string() }) }, async ({ query }) => {
    ran++;
    return { hits: [query] };
  });
  agents.push(agent);
  await agent.start();
  return agent;
}

/** A TCP connection to `host:port` that sends `bytes` (maybe nothing) and no more. */
async function idleConnection(hostPort: string, bytes = ''): Promise<{ closed: Promise<boolean> }> {
  const { hostname, port } = new URL(`tcp://${hostPort}`);
  const socket = connect(Number(port), hostname);
  sockets.push(socket);
  socket.on('error', () => undefined);
  const closed = once(socket, 'close').then(() => true);
  await once(socket, 'connect');
  if (bytes) socket.write(bytes);
  // Let the server accept it (and read what was sent) before stop().
  await new Promise((r) => setTimeout(r, 200));
  return { closed };
}

describe('stop() with a connection left open by its caller', () => {
  it(
    'resolves with a request half-sent on the ops listener, and closes that connection',
    async () => {
      const agent = await startSearch();
      const { closed } = await idleConnection(
        new URL(agent.opsUrl as string).host,
        'GET /ready HTTP/1.1\r\nHost: x\r\n',
      );

      await agent.stop({ drainTimeoutMs: 1_000 });
      expect(agent.state).toBe('stopped');
      expect(await closed).toBe(true);
    },
    CASE_TIMEOUT_MS,
  );

  it(
    'resolves with a connection that sent no ClientHello to the mTLS port, and closes it',
    async () => {
      const agent = await startSearch();
      const { closed } = await idleConnection(new URL(agent.url).host);

      await agent.stop({ drainTimeoutMs: 1_000 });
      expect(agent.state).toBe('stopped');
      expect(await closed).toBe(true);
      expect(ran).toBe(0);
    },
    CASE_TIMEOUT_MS,
  );

  it(
    'resolves with a connection that sent no ClientHello to the gRPC port, and closes it',
    async () => {
      const agent = await startSearch();
      expect(agent.grpcUrl).toBeDefined();
      const { closed } = await idleConnection(agent.grpcUrl as string);

      await agent.stop({ drainTimeoutMs: 1_000 });
      expect(agent.state).toBe('stopped');
      expect(await closed).toBe(true);
      expect(ran).toBe(0);
    },
    CASE_TIMEOUT_MS,
  );
});
