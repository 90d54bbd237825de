// Per-caller limits keyed by the verified SPIFFE ID, over real mTLS: one
// caller cannot take every task slot or every request; an over-limit call is
// refused with a retryable RESOURCE_EXHAUSTED error and its handler never
// runs; other callers go on; the global limit stays as a backstop.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { LocalPolicyEnforcer } from '@weave/authz';
import type { SecureChannel } from '@weave/transport';
import { A2AClient, A2AError, A2AServer, CallerLimits, type A2AServerLimits } from '../src/index.js';
import { baseUrl, channel, createPki, mtlsServer, type Pki, type Workload } from './helpers/pki.js';

let pki: Pki;
let server: Workload;
let alice: Workload;
let bob: Workload;
let batch: Workload;

beforeAll(async () => {
  pki = await createPki();
  server = await pki.workload('/agent/server');
  alice = await pki.workload('/agent/alice');
  bob = await pki.workload('/agent/bob');
  batch = await pki.workload('/batch/nightly');
});
afterAll(() => pki.close());

/** A running server whose `hold` tasks wait until released, and clients of each caller. */
interface Setup {
  url: string;
  runs: string[];
  release(): void;
  client(w: Workload): A2AClient;
  close(): Promise<void>;
}

async function start(limits: A2AServerLimits): Promise<Setup> {
  const enforcer = LocalPolicyEnforcer.fromObject({
    version: 1,
    id: 'limits',
    default: 'deny',
    rules: [{ id: 'all', effect: 'allow', callers: ['spiffe://test.weave'], actions: ['*'] }],
  });
  const a2a = new A2AServer({
    card: { name: 'limits', description: 'per-caller limits', version: '1' },
    selfId: server.id,
    enforcer,
    heartbeatMs: 0,
    limits,
  });
  const runs: string[] = [];
  let gate!: () => void;
  let held = new Promise<void>((r) => (gate = r));
  a2a.registerTaskHandler('hold', async (ctx) => {
    runs.push(ctx.caller.toString());
    await held;
    return 'released';
  });
  const app = mtlsServer(server);
  await app.register(a2a.plugin);
  await app.listen({ port: 0, host: '127.0.0.1' });
  const channels: SecureChannel[] = [];
  return {
    url: baseUrl(app),
    runs,
    release() {
      gate();
      held = new Promise<void>((r) => (gate = r));
    },
    client(w) {
      const ch = channel(w, server.id, { retry: { retries: 0 } });
      channels.push(ch);
      return new A2AClient({ dispatcher: ch });
    },
    async close() {
      gate();
      await a2a.close();
      await Promise.all(channels.map((c) => c.close()));
      await app.close();
    },
  };
}

/** Starts a `hold` task without waiting for it to finish. */
function startTask(c: A2AClient, url: string) {
  return c.sendMessage(url, {
    message: { messageId: crypto.randomUUID(), role: 'ROLE_USER', parts: [{ text: 'x' }] },
    configuration: { returnImmediately: true },
  });
}

async function refusal(p: Promise<unknown>): Promise<A2AError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(A2AError);
  return err as A2AError;
}

function info(err: A2AError): Record<string, string> {
  return ((err.data as Array<{ metadata?: Record<string, string> }>)[0]?.metadata ?? {}) as Record<
    string,
    string
  >;
}

let s: Setup | undefined;
afterEach(async () => {
  await s?.close();
  s = undefined;
});

describe('per-caller concurrent tasks', () => {
  it('one caller at its share is refused (retryable, handler not run); another caller still starts tasks', async () => {
    s = await start({ maxConcurrentTasks: 8, perCaller: { maxConcurrentTasks: 3 } });
    const a = s.client(alice);
    const b = s.client(bob);
    for (let i = 0; i < 3; i++) await startTask(a, s.url);
    expect(s.runs).toHaveLength(3);
    const err = await refusal(startTask(a, s.url));
    expect(err.code).toBe('RESOURCE_EXHAUSTED');
    expect(err.message).toContain(alice.id.toString());
    expect(err.message).toMatch(/\(limit 3 per caller\); retry once/);
    expect(info(err)).toMatchObject({ scope: 'caller', limit: '3' });
    // The refused call ran nothing.
    expect(s.runs).toHaveLength(3);
    // Bob is unaffected by Alice's tasks.
    await startTask(b, s.url);
    expect(s.runs.filter((r) => r === bob.id.toString())).toHaveLength(1);
  });

  it('frees the slot when a task finishes', async () => {
    s = await start({ perCaller: { maxConcurrentTasks: 1 } });
    const a = s.client(alice);
    const first = await startTask(a, s.url);
    await refusal(startTask(a, s.url));
    s.release();
    const id = 'task' in first ? first.task.id : '';
    await a.pollUntilComplete(s.url, id, { intervalMs: 20, timeoutMs: 10_000 });
    await startTask(a, s.url);
    expect(s.runs).toHaveLength(2);
  });

  it('keeps the global limit as the backstop', async () => {
    s = await start({ maxConcurrentTasks: 2, perCaller: { maxConcurrentTasks: 5 } });
    await startTask(s.client(alice), s.url);
    await startTask(s.client(bob), s.url);
    const err = await refusal(startTask(s.client(batch), s.url));
    expect(err.code).toBe('RESOURCE_EXHAUSTED');
    expect(err.message).toBe('Too many concurrent tasks (limit 2)');
    expect(s.runs).toHaveLength(2);
  });

  it('applies the first rule whose SPIFFE ID pattern matches the caller', async () => {
    s = await start({
      maxConcurrentTasks: 50,
      perCaller: {
        maxConcurrentTasks: 1,
        rules: [{ match: 'spiffe://test.weave/batch/*', maxConcurrentTasks: 4 }],
      },
    });
    const n = s.client(batch);
    for (let i = 0; i < 4; i++) await startTask(n, s.url);
    expect(info(await refusal(startTask(n, s.url)))).toMatchObject({ limit: '4' });
    const a = s.client(alice);
    await startTask(a, s.url);
    expect(info(await refusal(startTask(a, s.url)))).toMatchObject({ limit: '1' });
    expect(s.runs).toHaveLength(5);
  });
});

describe('per-caller request rate', () => {
  it('refuses requests past the burst with a retry delay; other callers are not slowed', async () => {
    s = await start({ perCaller: { requestsPerSecond: 2, burst: 3 } });
    const a = s.client(alice);
    const b = s.client(bob);
    for (let i = 0; i < 3; i++) await a.listTasks(s.url);
    const err = await refusal(a.listTasks(s.url));
    expect(err.code).toBe('RESOURCE_EXHAUSTED');
    expect(err.message).toMatch(/over its limit \(2\/s\); retry after \d+ ms/);
    const retryAfter = Number(info(err).retryAfterMs);
    expect(retryAfter).toBeGreaterThan(0);
    expect(retryAfter).toBeLessThanOrEqual(500);
    // A task start over the rate runs nothing.
    await refusal(startTask(a, s.url));
    expect(s.runs).toHaveLength(0);
    for (let i = 0; i < 3; i++) await b.listTasks(s.url);
    // After the advertised wait, the caller is admitted again.
    await new Promise((r) => setTimeout(r, retryAfter + 50));
    await a.listTasks(s.url);
  });
});

describe('CallerLimits configuration', () => {
  it.each([
    [{ maxConcurrentTasks: 0 }, /maxConcurrentTasks/],
    [{ requestsPerSecond: -1 }, /requestsPerSecond/],
    [{ rules: [{ match: 'not-a-spiffe-id' }] }, /rules\.0\.match/],
    [{ rules: [{ match: 'spiffe://td', bogus: 1 }] }, /rules/],
  ])('refuses %j with a TypeError naming the field', (input, msg) => {
    expect(() => new CallerLimits(input as never, 10)).toThrow(TypeError);
    expect(() => new CallerLimits(input as never, 10)).toThrow(msg);
  });
});
