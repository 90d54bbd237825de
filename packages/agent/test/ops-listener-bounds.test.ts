// The plain-HTTP ops listener holds no connection for a client that never
// finishes its request (it held one for Node's defaults, 60 s for headers and
// 300 s for a request, checked every 30 s), and no more connections than
// probes and a scraper need. Its `/ready` can answer for the task store.
import { get } from 'node:http';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { InMemoryTaskStore, TaskStoreUnavailableError } from '@weave/a2a';
import type { SecureAgent } from '../src/index.js';
import { AgentMetrics } from '../src/metrics.js';
import { StoreHealth, startOpsListener } from '../src/observability.js';
import { storeProxy } from '../src/store-proxy.js';
import { AwayStore, opsReady, searchWithOps, startWorld, type World } from './helpers.js';

let world: World;
let agent: SecureAgent;
let port: number;

beforeAll(async () => {
  world = await startWorld();
  agent = searchWithOps(world).capability(
    'search',
    { input: z.object({ query: z.string() }) },
    ({ query }) => ({ hits: [query] }),
  );
  await agent.start();
  port = Number(new URL(agent.opsUrl!).port);
});

afterAll(async () => {
  await agent?.stop();
  await world?.close();
});

/** A connection to the ops listener, with what it received and when the server closed it. */
async function connect(): Promise<{ socket: net.Socket; received: () => string; closed: Promise<number> }> {
  const socket = net.connect(port, '127.0.0.1');
  let received = '';
  socket.setEncoding('utf8').on('data', (d: string) => (received += d));
  socket.on('error', () => undefined);
  const opened = Date.now();
  const closed = new Promise<number>((resolve) => socket.once('close', () => resolve(Date.now() - opened)));
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  return { socket, received: () => received, closed };
}

/** The status of a GET on the ops listener, on a connection of its own that is closed after. */
function status(path: string): Promise<number> {
  return new Promise((resolve, reject) => {
    get(`${agent.opsUrl}${path}`, { agent: false }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    }).on('error', reject);
  });
}

/** How long `p` took to settle, or Infinity when it took longer than `ms`. */
function within(p: Promise<number>, ms: number): Promise<number> {
  return Promise.race([p, new Promise<number>((r) => setTimeout(() => r(Infinity), ms).unref())]);
}

// The README's bounds: 5 s for a request's headers (Node checks every second), 64 connections.
const bound = 5_000 + 1_000;
const MAX_CONNECTIONS = 64;

describe('ops listener bounds', () => {
  it('closes a connection whose request headers never end, within the headers timeout', async () => {
    const half = await connect();
    const idle = await connect();
    half.socket.write('GET /ready HTTP/1.1\r\nHost: probe\r\n');
    // One that sends nothing at all is held no longer.
    const [halfMs, idleMs] = await Promise.all([
      within(half.closed, bound + 2_000),
      within(idle.closed, bound + 2_000),
    ]);
    expect(halfMs).toBeLessThanOrEqual(bound + 1_000);
    expect(idleMs).toBeLessThanOrEqual(bound + 1_000);
    // Answered 408, not served: the route never ran.
    expect(half.received()).toMatch(/^HTTP\/1\.1 408 /);
    // The listener still serves probes.
    expect(await status('/health')).toBe(200);
  }, 20_000);

  it(`holds at most ${MAX_CONNECTIONS} connections: one more is closed unanswered`, async () => {
    const held = await Promise.all(Array.from({ length: MAX_CONNECTIONS }, () => connect()));
    try {
      const extra = await connect();
      extra.socket.write('GET /health HTTP/1.1\r\nHost: probe\r\n\r\n');
      expect(await within(extra.closed, 2_000)).toBeLessThan(2_000);
      expect(extra.received()).toBe('');
    } finally {
      for (const c of held) c.socket.destroy();
    }
    await Promise.all(held.map((c) => c.closed));
    expect(await status('/health')).toBe(200);
  }, 20_000);
});

describe('ops listener /ready with the task store watched', () => {
  it('is 503 from a store operation refused as unavailable until the store answers again', async () => {
    const health = new StoreHealth();
    const backing = new AwayStore();
    const store = storeProxy(backing, { observe: health.follow(backing) });
    const ops = await startOpsListener(
      '127.0.0.1',
      0,
      { notReadyReason: () => health.notReadyReason() },
      new AgentMetrics({ agent: 'search' }),
    );
    const ready = () => opsReady(ops.url);
    try {
      expect(await store.get('t-1')).toBeUndefined();
      expect(await ready()).toEqual({ status: 200, body: { ready: true } });

      backing.away = true;
      await expect(store.list({ owner: 'x', limit: 1 })).rejects.toBeInstanceOf(TaskStoreUnavailableError);
      const down = await ready();
      expect(down.status).toBe(503);
      expect(down.body.reason).toMatch(/^the task store cannot be reached/);
      // The reason names no address of the database: the listener is plain HTTP.
      expect(down.body.reason).not.toContain('10.0.0.5');
      // Asked again while away: each poll reads the store, and it still fails.
      const reads = backing.reads;
      expect((await ready()).status).toBe(503);
      await new Promise((r) => setTimeout(r, 20));
      expect(backing.reads).toBeGreaterThan(reads);
      expect((await ready()).status).toBe(503);

      // Back: a poll's read succeeds, and the next poll is ready without any traffic.
      backing.away = false;
      await ready();
      await new Promise((r) => setTimeout(r, 20));
      expect(await ready()).toEqual({ status: 200, body: { ready: true } });
    } finally {
      await new Promise<void>((r) => ops.server.close(() => r()));
    }
  });

  it('leaves the embedded store as it is: it cannot be away', () => {
    const memory = new InMemoryTaskStore();
    expect(storeProxy(memory, { observe: new StoreHealth().follow(memory) })).toBe(memory);
  });
});
