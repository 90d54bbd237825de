// The agent's own ports close a connection that never finishes its TLS
// handshake after `transport.connectTimeoutMs`, not after the transport's
// default (10 s): before the fix a TCP connection that sent no ClientHello
// to the mTLS or gRPC port stayed open 10 s whatever the config said. Real
// agents on loopback with dev Workload API identities; the idle callers are
// plain net.connect sockets.
import { once } from 'node:events';
import { connect, type Socket } from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { agentsStoppedAfterEach, closedWithin, startWorld, type World } from './helpers.js';

const agent = agentsStoppedAfterEach().search;

let world: World;
const sockets: Socket[] = [];

beforeAll(async () => {
  world = await startWorld();
});
afterEach(() => {
  for (const s of sockets.splice(0)) s.destroy();
});
afterAll(() => world?.close());

/** A TCP connection to `hostPort` that sends nothing. */
async function silentConnection(hostPort: string): Promise<Socket> {
  const { hostname, port } = new URL(`tcp://${hostPort}`);
  const socket = connect(Number(port), hostname);
  sockets.push(socket);
  socket.on('error', () => undefined);
  await once(socket, 'connect');
  return socket;
}

describe('transport.connectTimeoutMs bounds the handshake on the agent’s own ports', () => {
  const started = async () => {
    const a = agent({
      config: {
        name: 'search',
        identity: { workloadApi: { socket: world.dev.address('search') } },
        authz: { policyFile: world.policyFile },
        server: { host: '127.0.0.1', port: 0, grpc: { host: '127.0.0.1', port: 0 } },
        transport: { connectTimeoutMs: 300 },
      },
    });
    await a.start();
    return a;
  };

  it('closes a connection that sends no ClientHello to the mTLS port', async () => {
    const a = await started();
    const socket = await silentConnection(new URL(a.url).host);
    // The transport's default would keep it 10 s.
    expect(await closedWithin(socket, 3_000)).toBe('closed');
    expect(a.state).toBe('running');
  });

  it('closes a connection that sends no ClientHello to the gRPC port', async () => {
    const a = await started();
    expect(a.grpcUrl).toBeDefined();
    const socket = await silentConnection(a.grpcUrl as string);
    expect(await closedWithin(socket, 3_000)).toBe('closed');
    expect(a.state).toBe('running');
  });
});

describe('server.maxConnections and maxHandshakesPerAddress bound each of the agent’s ports', () => {
  it.each([{ maxConnections: 1 }, { maxHandshakesPerAddress: 1 }])(
    '%o: closes a connection over the bound as it is accepted, on the mTLS and the gRPC port; the first stays',
    async (bound) => {
      const a = agent({
        config: {
          name: 'search',
          identity: { workloadApi: { socket: world.dev.address('search') } },
          authz: { policyFile: world.policyFile },
          server: { host: '127.0.0.1', port: 0, grpc: { host: '127.0.0.1', port: 0 }, ...bound },
        },
      });
      await a.start();
      for (const hostPort of [new URL(a.url).host, a.grpcUrl as string]) {
        // The first holds the one slot while its handshake is pending (5 s by default).
        const first = await silentConnection(hostPort);
        const second = await silentConnection(hostPort);
        expect(await closedWithin(second, 2_000), hostPort).toBe('closed');
        expect(first.closed, hostPort).toBe(false);
        first.destroy();
      }
      expect(a.state).toBe('running');
    },
  );
});
