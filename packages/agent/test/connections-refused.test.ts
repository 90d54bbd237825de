// weave_connections_refused_total{port, bound} counts the connections the
// agent's servers close at a connection bound (`server.maxConnections`,
// `maxConnectionsPerPeer`, `maxHandshakesPerAddress`), on its mTLS port and
// its gRPC one. The servers counted and logged each refusal, but no metric
// showed them: an operator saw a peer at its bound only in the log. Real
// mTLS with dev Workload API SVIDs; raw TLS sockets as the caller.
import { connect as tlsConnect } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { H2_FRAME, H2_PREFACE, frame } from '@weave/test-support/h2-flood';
import { SecureAgent } from '../src/index.js';
import { startWorld, testLogger, type World } from './helpers.js';

let world: World;
let agent: SecureAgent;
const closers: Array<() => void> = [];

beforeAll(async () => {
  world = await startWorld();
  agent = new SecureAgent({
    config: {
      name: 'search',
      identity: { workloadApi: { socket: world.dev.address('search') } },
      authz: { policyFile: world.policyFile },
      server: {
        host: '127.0.0.1',
        maxConnectionsPerPeer: 1,
        bindings: ['JSONRPC', 'GRPC'],
        grpc: { host: '127.0.0.1' },
      },
      observability: { ops: { host: '127.0.0.1', port: 0 } },
    },
    logger: testLogger(),
    env: {},
  });
  await agent.start();
});

afterAll(async () => {
  for (const c of closers.splice(0)) c();
  await agent?.stop({ drainTimeoutMs: 0 });
  await world?.close();
});

/** The samples of weave_connections_refused_total as the ops listener serves them. */
async function refusedSeries(): Promise<string[]> {
  const text = await (await fetch(`${agent.opsUrl}/metrics`)).text();
  return text.split('\n').filter((l) => l.startsWith('weave_connections_refused_total{'));
}

/**
 * A connection to `port` as the orchestrator, held open: admitted once the
 * server answers `hello`, refused when it closes first.
 */
async function hold(port: number, alpn: 'http/1.1' | 'h2', hello: Buffer | string): Promise<boolean> {
  const svid = (await world.provider('orchestrator')).getX509Svid().toPem();
  const sock = tlsConnect({
    host: '127.0.0.1',
    port,
    cert: svid.certChain,
    key: svid.privateKey,
    ca: world.dev.ca.x509Bundle.toPem(),
    checkServerIdentity: () => undefined,
    ALPNProtocols: [alpn],
  });
  sock.on('error', () => undefined);
  closers.push(() => sock.destroy());
  sock.once('secureConnect', () => sock.write(hello));
  return new Promise<boolean>((resolve) => {
    sock.once('data', () => resolve(true));
    sock.once('close', () => resolve(false));
  });
}

const http1Hello = 'GET /health HTTP/1.1\r\nhost: a\r\n\r\n';
const h2Hello = Buffer.concat([H2_PREFACE, frame(H2_FRAME.SETTINGS, 0, 0)]);

describe('weave_connections_refused_total', () => {
  it('counts a connection over maxConnectionsPerPeer on the mTLS port and on the gRPC port, each under its own port and bound', async () => {
    const httpPort = Number(new URL(agent.url).port);
    const grpcPort = Number((agent.grpcUrl as string).split(':').pop());

    expect(await hold(httpPort, 'http/1.1', http1Hello)).toBe(true);
    expect(await hold(httpPort, 'http/1.1', http1Hello)).toBe(false);
    expect(await hold(grpcPort, 'h2', h2Hello)).toBe(true);
    expect(await hold(grpcPort, 'h2', h2Hello)).toBe(false);
    expect(await hold(grpcPort, 'h2', h2Hello)).toBe(false);

    expect(await refusedSeries()).toEqual([
      'weave_connections_refused_total{port="http",bound="max_connections",agent="search"} 0',
      'weave_connections_refused_total{port="http",bound="max_connections_per_peer",agent="search"} 1',
      'weave_connections_refused_total{port="http",bound="max_handshakes_per_address",agent="search"} 0',
      'weave_connections_refused_total{port="grpc",bound="max_connections",agent="search"} 0',
      'weave_connections_refused_total{port="grpc",bound="max_connections_per_peer",agent="search"} 2',
      'weave_connections_refused_total{port="grpc",bound="max_handshakes_per_address",agent="search"} 0',
    ]);
    // A scrape adds only what was refused since the last one.
    expect(await hold(httpPort, 'http/1.1', http1Hello)).toBe(false);
    expect(await refusedSeries()).toContain(
      'weave_connections_refused_total{port="http",bound="max_connections_per_peer",agent="search"} 2',
    );
    expect(await refusedSeries()).toContain(
      'weave_connections_refused_total{port="grpc",bound="max_connections_per_peer",agent="search"} 2',
    );
  });

  it('still counts a refusal made after the last scrape once the agent has stopped', async () => {
    const httpPort = Number(new URL(agent.url).port);
    expect(await hold(httpPort, 'http/1.1', http1Hello)).toBe(false);
    for (const c of closers.splice(0)) c();
    await agent.stop({ drainTimeoutMs: 0 });
    expect((await agent.metrics.render()).body).toContain(
      'weave_connections_refused_total{port="http",bound="max_connections_per_peer",agent="search"} 3',
    );
  });
});
