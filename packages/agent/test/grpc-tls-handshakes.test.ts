// weave_tls_handshakes_total{side="server"} counts the TLS handshakes of the
// agent's gRPC port (`server.grpc`) as it counts those of its mTLS port. The
// agent listened only on its HTTP server: a client refused at the gRPC port's
// handshake, or one calling over gRPC, moved no count. Real mTLS with dev
// Workload API SVIDs; a raw TLS socket without a certificate as the refused
// caller, an A2A client over gRPC as the good one.
import { connect as tlsConnect } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { A2AClient, A2AError } from '@weave/a2a';
import { freePort } from '@weave/test-support/tcp-relay';
import { SecureChannel } from '@weave/transport';
import { SecureAgent } from '../src/index.js';
import { ID, startWorld, testLogger, type World } from './helpers.js';

let world: World;
let agent: SecureAgent;
let channel: SecureChannel | undefined;

beforeAll(async () => {
  world = await startWorld();
  agent = new SecureAgent({
    config: {
      name: 'search',
      identity: { workloadApi: { socket: world.dev.address('search') } },
      authz: { policyFile: world.policyFile },
      server: {
        host: '127.0.0.1',
        bindings: ['GRPC'],
        grpc: { host: '127.0.0.1', port: await freePort() },
      },
      observability: { ops: { host: '127.0.0.1', port: 0 } },
    },
    logger: testLogger(),
    env: {},
  });
  await agent.start();
});

afterAll(async () => {
  await channel?.destroy();
  await agent?.stop({ drainTimeoutMs: 0 });
  await world?.close();
});

/** The server-side handshake counts as the ops listener serves them. */
async function serverHandshakes(): Promise<{ ok: number; error: number }> {
  const text = await (await fetch(`${agent.opsUrl}/metrics`)).text();
  const count = (result: string): number => {
    const prefix = `weave_tls_handshakes_total{side="server",result="${result}",agent="search"} `;
    const line = text.split('\n').find((l) => l.startsWith(prefix));
    return line === undefined ? 0 : Number(line.slice(prefix.length));
  };
  return { ok: count('ok'), error: count('error') };
}

describe('weave_tls_handshakes_total on the gRPC port', () => {
  it('counts a handshake refused (no client certificate) as error and one of a gRPC call as ok', async () => {
    const grpcPort = Number((agent.grpcUrl as string).split(':').pop());
    const channelOwner = await world.provider('orchestrator');
    channel = new SecureChannel(channelOwner, ID.search, { circuitBreaker: false });
    const client = new A2AClient({ dispatcher: channel, timeoutMs: 3_000 });
    // The card is fetched (over the mTLS port) before the counts are read:
    // only the gRPC port's handshakes happen between the two scrapes.
    expect((await client.transportFor(agent.url)).protocolBinding).toBe('GRPC');
    const before = await serverHandshakes();

    // No client certificate: the server refuses the handshake.
    const sock = tlsConnect({
      host: '127.0.0.1',
      port: grpcPort,
      ca: world.dev.ca.x509Bundle.toPem(),
      checkServerIdentity: () => undefined,
      ALPNProtocols: ['h2'],
    });
    sock.on('error', () => undefined);
    await new Promise((resolve) => sock.once('close', resolve));

    // A call answered over gRPC (the task is unknown): one completed handshake.
    const err = await client.getTask(agent.url, 'no-such-task').then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(A2AError);
    expect((err as A2AError).code).toBe('TASK_NOT_FOUND');

    const after = await serverHandshakes();
    expect.soft(after.error - before.error).toBeGreaterThanOrEqual(1);
    expect.soft(after.ok - before.ok).toBeGreaterThanOrEqual(1);
  });
});
