// The ops listener and the ports around start() and stop(), as an operator
// probe found them: the ops listener bound only once start() was over, so a
// liveness probe got connection refused for the whole wait for an SVID; on
// stop() the ports closed within ~40 ms of /ready turning 503, so calls a
// load balancer still routed here were refused (now `server.shutdownDelayMs`);
// and a port held elsewhere failed the start naming no listener. Real agents
// on the dev Workload API, mTLS on loopback, a Unix socket that never answers.
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import type { AgentError } from '../src/index.js';
import {
  ID,
  agentsStoppedAfterEach,
  opsReady,
  startOrchestrator,
  startWorld,
  unixServer,
  type World,
} from './helpers.js';

const agents = agentsStoppedAfterEach();

let world: World;
beforeAll(async () => {
  world = await startWorld();
});
afterAll(() => world?.close());

/** A loopback port held by a plain TCP server until `release()`. */
async function holdPort(): Promise<{ port: number; release(): Promise<void> }> {
  const holder = net.createServer();
  await new Promise<void>((resolve) => holder.listen(0, '127.0.0.1', resolve));
  return {
    port: (holder.address() as AddressInfo).port,
    release: () => new Promise<void>((resolve) => holder.close(() => resolve())),
  };
}

/** GET `path` on the loopback `port`: the status, or the connection error's code. */
async function get(port: number, path: string): Promise<number | string> {
  return fetch(`http://127.0.0.1:${port}${path}`).then(
    (r) => r.status,
    (e: { cause?: { code?: string } }) => e.cause?.code ?? 'failed',
  );
}

describe('the ops listener during start()', () => {
  it('answers /health 200 and /ready 503 "agent is starting" while start() waits for an SVID, and closes when the start fails', async () => {
    const socket = join(world.dir, 'spire-mute-ops.sock');
    const mute = await unixServer(socket, (s) => s.resume());
    const free = await holdPort();
    await free.release();
    try {
      const a = agents.track(
        agents.search({
          config: {
            name: 'search',
            identity: { workloadApi: { socket: `unix://${socket}`, timeoutMs: 1_000 } },
            authz: { policyFile: world.policyFile },
            observability: { ops: { host: '127.0.0.1', port: free.port } },
          },
        }),
      );
      const starting = a.start().catch((e: unknown) => e);
      // Bound before the wait for the SVID (which takes the whole second here).
      await new Promise((r) => setTimeout(r, 300));
      expect(await get(free.port, '/health')).toBe(200);
      expect(await opsReady(`http://127.0.0.1:${free.port}`)).toEqual({
        status: 503,
        body: { ready: false, reason: 'agent is starting' },
      });
      expect(a.opsUrl).toBe(`http://127.0.0.1:${free.port}`);
      expect(await starting).toMatchObject({ code: 'AGENT_NO_IDENTITY' });
      expect(await get(free.port, '/health')).toBe('ECONNREFUSED');
      expect(a.opsUrl).toBeUndefined();
    } finally {
      await mute.close();
    }
  });

  it('names the listener whose port is held: ops, gRPC, and the ops listener is closed after', async () => {
    const held = await holdPort();
    const free = await holdPort();
    await free.release();
    try {
      const config = (extra: object) => ({
        name: 'search',
        identity: { workloadApi: { socket: world.dev.address('search') } },
        authz: { policyFile: world.policyFile },
        ...extra,
      });
      const opsHeld = agents.search({ config: config({ observability: { ops: { port: held.port } } }) });
      const e1 = (await opsHeld.start().catch((e: unknown) => e)) as AgentError;
      expect(e1.code).toBe('AGENT_LISTEN_FAILED');
      expect(e1.message).toMatch(
        /^the agent could not listen on its ops listener \(observability\.ops\.port\): listen EADDRINUSE/,
      );
      const grpcHeld = agents.search({
        config: config({
          server: { grpc: { port: held.port } },
          observability: { ops: { port: free.port } },
        }),
      });
      const e2 = (await grpcHeld.start().catch((e: unknown) => e)) as AgentError;
      expect(e2.message).toMatch(
        /^the agent could not listen on its gRPC port \(server\.grpc\.port\): listen EADDRINUSE/,
      );
      expect(await get(free.port, '/health')).toBe('ECONNREFUSED');
    } finally {
      await held.release();
    }
  });
});

describe('stop() with server.shutdownDelayMs', () => {
  it('/ready answers 503 at once, calls are served during the delay (on a new connection too), then the ports close', async () => {
    const search = agents.search({
      config: {
        name: 'search',
        identity: { workloadApi: { socket: world.dev.address('search') } },
        authz: { policyFile: world.policyFile },
        server: { shutdownDelayMs: 800 },
        observability: { ops: { host: '127.0.0.1', port: 0 } },
      },
    });
    const { url, opsUrl } = await search.start();
    const orchestrator = agents.track(await startOrchestrator(world, url));
    await expect(search.stop({ shutdownDelayMs: Number.NaN })).rejects.toMatchObject({
      code: 'AGENT_CONFIG_INVALID',
      issues: [{ path: 'shutdownDelayMs', message: expect.stringContaining('got NaN') }],
    });
    expect(search.state).toBe('running');

    const t0 = Date.now();
    const stopped = search.stop().then(() => Date.now() - t0);
    expect(await opsReady(opsUrl!)).toEqual({
      status: 503,
      body: { ready: false, reason: 'agent is draining' },
    });
    // The orchestrator's first call to search: a new connection, during the delay.
    await new Promise((r) => setTimeout(r, 200));
    await expect(orchestrator.callAgent(ID.search, 'search', { q: 'late' })).resolves.toEqual({
      hits: ['late'],
    });
    expect(await get(Number(new URL(opsUrl!).port), '/health')).toBe(200);
    expect(await stopped).toBeGreaterThanOrEqual(800);
    await expect(orchestrator.callAgent(ID.search, 'search', { q: 'gone' })).rejects.toMatchObject({
      code: 'CALL_FAILED',
    });
  });

  it('server.drainTimeoutMs 0 cancels the tasks still running at once', async () => {
    const search = agents
      .search({
        config: {
          name: 'search',
          identity: { workloadApi: { socket: world.dev.address('search') } },
          authz: { policyFile: world.policyFile },
          server: { drainTimeoutMs: 0 },
        },
      })
      .capability('slow', { input: z.object({}) }, async (_i, ctx) => {
        await new Promise((r) => setTimeout(r, 5_000));
        ctx.signal.throwIfAborted();
        return 'late';
      });
    const orchestrator = agents.track(await startOrchestrator(world, (await search.start()).url));
    const call = orchestrator.callAgent(ID.search, 'slow', {}).catch((e: unknown) => e);
    await new Promise((r) => setTimeout(r, 300));
    const t0 = Date.now();
    await search.stop();
    expect(Date.now() - t0).toBeLessThan(2_000);
    expect(await call).toMatchObject({ code: 'CALL_FAILED', remoteCode: 'AGENT_STOPPING' });
  });
});
