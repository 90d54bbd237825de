import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { authorizeMemberOf } from '@weave/identity';
import { type DevCaIdentityProvider } from '@weave/identity/dev';
import {
  ConnectionPool,
  PeerVerificationError,
  PoolExhaustedError,
  TransportConfigError,
} from '../src/index.js';
import { createMtlsServer } from '../src/server.js';
import { makeTd, portOf, provider, removeTempDirs, type TestTd } from './fixtures.js';

let A: TestTd;
let alice: DevCaIdentityProvider;
let bob: DevCaIdentityProvider;
let clientId: DevCaIdentityProvider;
const closers: (() => Promise<unknown>)[] = [];
const urls: Record<string, string> = {};

beforeAll(async () => {
  A = await makeTd('a.test');
  [alice, bob, clientId] = await Promise.all([
    provider(A, '/alice'),
    provider(A, '/bob'),
    provider(A, '/client'),
  ]);
  for (const [name, id] of [
    ['alice', alice],
    ['bob', bob],
  ] as const) {
    const app = createMtlsServer({ identity: id, authorize: authorizeMemberOf('a.test') });
    app.get('/', async () => ({ me: name }));
    await app.listen({ port: 0, host: '127.0.0.1' });
    urls[name] = `https://127.0.0.1:${portOf(app.server)}/`;
    closers.push(() => app.close());
  }
});
const perTest: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const c of perTest.splice(0).reverse()) await c();
});
afterAll(async () => {
  for (const c of closers.splice(0).reverse()) await c();
  await Promise.all([alice.close(), bob.close(), clientId.close()]);
  removeTempDirs();
});

function pool(config: ConstructorParameters<typeof ConnectionPool>[1] = {}) {
  const p = new ConnectionPool(clientId, config);
  perTest.push(() => p.close());
  return p;
}

describe('ConnectionPool', () => {
  it('keys channels by target SPIFFE ID; each channel only talks to its target', async () => {
    const p = pool();
    const a = await p.use('spiffe://a.test/alice', async (ch) => (await ch.get(urls.alice!)).body.json());
    expect(a).toEqual({ me: 'alice' });
    const b = await p.use('spiffe://a.test/bob', async (ch) => (await ch.get(urls.bob!)).body.json());
    expect(b).toEqual({ me: 'bob' });
    // bob's channel pointed at alice's address is refused: the pool key is a verified identity
    await expect(p.use('spiffe://a.test/bob', (ch) => ch.get(urls.alice!))).rejects.toBeInstanceOf(
      PeerVerificationError,
    );
    const s = p.getStats();
    expect(s.targets).toBe(2);
    expect(s.created).toBe(2);
    expect(s.active).toBe(0);
  });

  it('acquire() returns a scoped lease: released on dispose, idempotent', async () => {
    const p = pool({ maxPerTarget: 1 });
    {
      await using lease = await p.acquire('spiffe://a.test/alice');
      expect(p.getStats().active).toBe(1);
      expect(p.getStats().perTarget['spiffe://a.test/alice']).toEqual({ active: 1, pending: 0 });
      const res = await lease.channel.get(urls.alice!);
      await res.body.dump();
    }
    expect(p.getStats().active).toBe(0);
    const l2 = await p.acquire('spiffe://a.test/alice');
    l2.release();
    l2.release();
    expect(p.getStats().active).toBe(0);
  });

  it('enforces the per-target limit: waiters get the next free slot, others time out with PoolExhaustedError', async () => {
    const p = pool({ maxPerTarget: 2, maxTotal: 10, acquireTimeoutMs: 200 });
    const l1 = await p.acquire('spiffe://a.test/alice');
    const l2 = await p.acquire('spiffe://a.test/alice');
    // another target is unaffected
    const other = await p.acquire('spiffe://a.test/bob');
    other.release();
    const waiting = p.acquire('spiffe://a.test/alice');
    expect(p.getStats().pending).toBe(1);
    l1.release();
    const l3 = await waiting;
    expect(p.getStats().active).toBe(2);
    const err = await p.acquire('spiffe://a.test/alice').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PoolExhaustedError);
    expect((err as PoolExhaustedError).code).toBe('POOL_EXHAUSTED');
    expect((err as PoolExhaustedError).limit).toBe('perTarget');
    expect(p.getStats().exhausted).toBe(1);
    l2.release();
    l3.release();
  });

  it('enforces the total limit across targets', async () => {
    const p = pool({ maxPerTarget: 2, maxTotal: 2, acquireTimeoutMs: 0 });
    const a = await p.acquire('spiffe://a.test/alice');
    const b = await p.acquire('spiffe://a.test/bob');
    const err = await p.acquire('spiffe://a.test/carol').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PoolExhaustedError);
    expect((err as PoolExhaustedError).limit).toBe('total');
    a.release();
    const c = await p.acquire('spiffe://a.test/carol');
    b.release();
    c.release();
  });

  it('closes channels idle longer than idleTimeoutMs', async () => {
    const p = pool({ idleTimeoutMs: 100 });
    await p.use('spiffe://a.test/alice', async (ch) => (await ch.get(urls.alice!)).body.dump());
    expect(p.getStats().targets).toBe(1);
    await vi.waitFor(() => expect(p.getStats().targets).toBe(0), { timeout: 5_000 });
    expect(p.getStats().closedIdle).toBe(1);
    // and a new use simply creates a fresh channel
    const again = await p.use('spiffe://a.test/alice', async (ch) => (await ch.get(urls.alice!)).body.json());
    expect(again).toEqual({ me: 'alice' });
  });

  it('close() rejects waiters; invalid config and targets are refused', async () => {
    const p = new ConnectionPool(clientId, { maxPerTarget: 1, acquireTimeoutMs: 10_000 });
    const l = await p.acquire('spiffe://a.test/alice');
    const waiting = p.acquire('spiffe://a.test/alice');
    await p.close();
    await expect(waiting).rejects.toMatchObject({ code: 'POOL_CLOSED' });
    l.release();
    await expect(p.acquire('spiffe://a.test/alice')).rejects.toMatchObject({ code: 'POOL_CLOSED' });
    expect(() => new ConnectionPool(clientId, { maxPerTarget: 5, maxTotal: 2 })).toThrow(
      TransportConfigError,
    );
    expect(() => new ConnectionPool(clientId, { transport: { verifyPeer: false as never } })).toThrow(
      TransportConfigError,
    );
    await expect(pool().acquire('https://not-a-spiffe-id')).rejects.toMatchObject({
      code: 'INVALID_SPIFFE_ID',
    });
  });
});
