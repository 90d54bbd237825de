// The identity part of start(): one connection to the Workload API, and
// every connection closed when the start gives up (stop(), or no SVID in
// time), also one a hung SPIRE agent accepted and never answered. Real
// agents on the dev Workload API (through a counting Unix-socket relay) and
// a raw Unix-socket server that never answers.
import net from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AgentError } from '../src/index.js';
import { ID, agentsStoppedAfterEach, closedWithin, startWorld, unixServer, type World } from './helpers.js';

const agent = agentsStoppedAfterEach().search;

let world: World;
beforeAll(async () => {
  world = await startWorld();
});
afterAll(() => world?.close());

describe('start() and the Workload API', () => {
  it('opens one connection to the Workload API, and stop() closes it', async () => {
    // A relay in front of the dev server's socket for search, counting connections.
    const target = new URL(world.dev.address('search')).pathname;
    const relay = await unixServer(join(world.dir, 'counted.sock'), (s) => {
      const upstream = net.connect(target);
      upstream.on('error', () => s.destroy());
      s.pipe(upstream).pipe(s);
      s.on('close', () => upstream.destroy());
      upstream.on('close', () => s.destroy());
    });
    try {
      const a = agent({
        config: {
          name: 'search',
          spiffeId: ID.search,
          identity: { workloadApi: { socket: `unix://${join(world.dir, 'counted.sock')}` } },
          authz: { policyFile: world.policyFile },
          server: { host: '127.0.0.1', port: 0 },
        },
      });
      await a.start();
      expect(relay.accepted).toHaveLength(1);
      await a.stop({ drainTimeoutMs: 0 });
      expect(await closedWithin(relay.accepted[0]!)).toBe('closed');
    } finally {
      await relay.close();
    }
  });

  it('no SVID in time from a Workload API that never answers: AGENT_NO_IDENTITY naming it, and its connection closed', async () => {
    const path = join(world.dir, 'spire-mute-timeout.sock');
    const mute = await unixServer(path, (s) => s.resume());
    try {
      const a = agent({
        config: {
          name: 'search',
          identity: { workloadApi: { socket: `unix://${path}`, timeoutMs: 300 } },
          authz: { policyFile: world.policyFile },
        },
      });
      const err = (await a.start().catch((e: unknown) => e)) as AgentError;
      expect(err).toBeInstanceOf(AgentError);
      expect(err.code).toBe('AGENT_NO_IDENTITY');
      expect(err.message).toMatch(
        /^no X\.509-SVID: no X\.509-SVID from the Workload API at unix:\/\/.*spire-mute-timeout\.sock within 300 ms/,
      );
      expect(err.cause).toMatchObject({ code: 'IDENTITY_NOT_READY' });
      expect(a.state).toBe('new');
      expect(mute.accepted.length).toBeGreaterThan(0);
      for (const s of mute.accepted) expect(await closedWithin(s)).toBe('closed');
    } finally {
      await mute.close();
    }
  });
});
