// A streaming callAgent whose SSE stream breaks: the caller resumes with
// SubscribeToTask after the last event id. Real agents (dev Workload API,
// mTLS on loopback, local policy); the break is a real one: a TCP proxy
// between the two agents resets both sides of every connection it carries
// (the TLS session inside dies with it), then refuses (resets) or holds
// (accepts, never answers) the resumes' new connections. A stream that goes
// silent instead (a black hole) is resumed after the caller's
// transport.streamIdleTimeoutMs.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Logger } from 'pino';
import { z } from 'zod';
import { freePort, TcpRelay } from '@weave/test-support/tcp-relay';
import { CallError, SecureAgent, type CapabilityContext } from '../src/index.js';
import { ID, startWorld, testLogger, type World } from './helpers.js';

/** A promise with its resolver, for steps the test and a handler take in turn. */
function gate(): { promise: Promise<void>; open(): void } {
  let open!: () => void;
  const promise = new Promise<void>((r) => (open = r));
  return { promise, open };
}

/** Waits for `p`, or rejects when the handler's signal aborts (deadline, agent stop). */
function orAbort(p: Promise<void>, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason as Error);
    signal.addEventListener('abort', () => reject(signal.reason as Error), { once: true });
    p.then(resolve, reject);
  });
}

function addressInUse(err: unknown): boolean {
  for (let e = err, i = 0; i < 4 && e instanceof Error; e = e.cause, i++) {
    if ((e as { code?: unknown }).code === 'EADDRINUSE' || e.message.includes('EADDRINUSE')) return true;
  }
  return false;
}

/** The callee, listening on `port` and advertising the proxy's URL (so callers' requests go through it). */
function searchAgent(port: number, proxyUrl: string, logger: Logger): SecureAgent {
  return new SecureAgent({
    config: {
      name: 'search',
      spiffeId: ID.search,
      identity: { workloadApi: { socket: world.dev.address('search') } },
      authz: { policyFile: world.policyFile },
      server: { port, publicUrl: proxyUrl },
    },
    logger,
  })
    .capability(
      'steps',
      { input: z.object({ finishUnseen: z.boolean() }) },
      async (input: { finishUnseen: boolean }, ctx: CapabilityContext) => {
        runs++;
        ctx.progress('step 1');
        ctx.progress('step 2');
        await orAbort(dropped.promise, ctx.signal);
        // Published while the caller has no stream open: only a replay can bring these.
        ctx.progress('step 3');
        ctx.progress('step 4');
        // Either the task ends before the caller is back (the replay comes from a
        // finished task), or it goes on once the caller has reconnected.
        if (!input.finishUnseen) await orAbort(proxy.whenAccepted(proxy.accepted + 1), ctx.signal);
        ctx.progress('step 5');
        return { done: 5 };
      },
    )
    .capability('stuck', { input: z.object({}) }, async (_input: unknown, ctx: CapabilityContext) => {
      runs++;
      ctx.progress('waiting');
      await orAbort(release.promise, ctx.signal);
      return { released: true };
    });
}

let world: World;
let proxy: TcpRelay;
let search: SecureAgent;
let orchestrator: SecureAgent;
/** Test hooks of the current test, read by the capabilities. */
let runs = 0;
let dropped = gate();
let release = gate();

beforeAll(async () => {
  world = await startWorld();
  proxy = new TcpRelay();
  const proxyUrl = `https://127.0.0.1:${await proxy.listen()}`;
  const logger = testLogger();
  // The agent's URL is the proxy's, so its own port is chosen here; a port
  // taken in between by another process only costs another try.
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    const agent = searchAgent(port, proxyUrl, logger);
    try {
      await agent.start();
    } catch (err) {
      await agent.stop().catch(() => undefined);
      if (attempt < 5 && addressInUse(err)) continue;
      throw err;
    }
    search = agent;
    proxy.target = port;
    break;
  }
  orchestrator = new SecureAgent({
    config: {
      name: 'orchestrator',
      identity: { workloadApi: { socket: world.dev.address('orchestrator') } },
      authz: { policyFile: world.policyFile },
      peers: [{ id: ID.search, url: proxyUrl }],
      // One connection attempt per request: each resume is exactly one connection.
      // A connect that hangs is ended by the call's deadline, never by this timeout.
      transport: { retries: 0, connectTimeoutMs: 60_000 },
    },
    logger,
  });
  await orchestrator.start();
});

afterEach(() => {
  release.open();
  dropped.open();
  proxy.heal();
  proxy.refused = 0;
  proxy.release();
  runs = 0;
  dropped = gate();
  release = gate();
});

afterAll(async () => {
  await orchestrator?.stop();
  await search?.stop();
  await proxy?.close();
  await world?.close();
});

describe('streaming callAgent over a stream that breaks', () => {
  it.each([
    ['a live task', false],
    ['a task that finished while the caller was away', true],
  ])(
    'resumes %s after the last event: every progress message once, in order, and the result',
    async (_name, finishUnseen) => {
      const progress: string[] = [];
      const before = proxy.accepted;
      const out = await orchestrator.callAgent(
        ID.search,
        'steps',
        { finishUnseen },
        {
          stream: true,
          timeoutMs: 20_000,
          output: z.object({ done: z.number() }),
          onProgress: (text) => {
            progress.push(text);
            if (text === 'step 2') {
              proxy.drop({ reset: true });
              dropped.open();
            }
          },
        },
      );
      expect(out).toEqual({ done: 5 });
      expect(progress).toEqual(['step 1', 'step 2', 'step 3', 'step 4', 'step 5']);
      expect(runs).toBe(1);
      // The stream really was resumed, on a new connection.
      expect(proxy.accepted).toBeGreaterThan(before);
    },
  );

  it('fails with CALL_FAILED once the resume budget is spent, one connection per resume', async () => {
    const progress: string[] = [];
    const err = (await orchestrator
      .callAgent(
        ID.search,
        'stuck',
        {},
        {
          stream: true,
          timeoutMs: 20_000,
          onProgress: (text) => {
            progress.push(text);
            proxy.refuse();
            proxy.drop({ reset: true });
          },
        },
      )
      .catch((e: unknown) => e)) as CallError;
    expect(err).toBeInstanceOf(CallError);
    expect(err.code).toBe('CALL_FAILED');
    expect(err.message).toMatch(/broke 4 times in a row/);
    expect(progress).toEqual(['waiting']);
    // Three resumes, each refused: then the call gave up, long before its deadline.
    expect(proxy.refused).toBe(3);
    expect(runs).toBe(1);
  });

  it('never waits for a resume past the call deadline', async () => {
    const err = (await orchestrator
      .callAgent(
        ID.search,
        'stuck',
        {},
        {
          stream: true,
          timeoutMs: 3_000,
          onProgress: () => {
            proxy.hold();
            proxy.drop({ reset: true });
          },
        },
      )
      .catch((e: unknown) => e)) as CallError;
    expect(err).toBeInstanceOf(CallError);
    // The resume hung on a connection that never answers: the deadline ended it, not the connect timeout.
    expect(err.code).toBe('DEADLINE_EXCEEDED');
    expect(proxy.held).toBe(1);
  });

  it('resumes a stream whose peer went silent after transport.streamIdleTimeoutMs, on a new connection', async () => {
    // A caller whose streams give up after 500 ms without a byte (no event, no heartbeat).
    const caller = new SecureAgent({
      config: {
        name: 'orchestrator',
        identity: { workloadApi: { socket: world.dev.address('orchestrator') } },
        authz: { policyFile: world.policyFile },
        peers: [{ id: ID.search, url: `https://127.0.0.1:${proxy.port}` }],
        transport: { retries: 0, connectTimeoutMs: 60_000, streamIdleTimeoutMs: 500 },
      },
      logger: testLogger(),
    });
    await caller.start();
    try {
      const before = proxy.accepted;
      let silenced = false;
      const progress: string[] = [];
      const out = await caller.callAgent(
        ID.search,
        'stuck',
        {},
        {
          stream: true,
          // Without the key the stream would wait 300 s: the deadline would end the call first.
          timeoutMs: 10_000,
          output: z.object({ released: z.boolean() }),
          onProgress: (text) => {
            progress.push(text);
            if (silenced) return;
            silenced = true;
            // The open connection becomes a black hole (neither side hears a thing);
            // new ones are relayed. The task goes on once the caller is back.
            proxy.silence('discard');
            proxy.heal();
            void proxy.whenAccepted(proxy.accepted + 1).then(() => release.open());
          },
        },
      );
      expect(out).toEqual({ released: true });
      expect(progress).toEqual(['waiting']);
      expect(runs).toBe(1);
      expect(proxy.accepted).toBeGreaterThan(before);
    } finally {
      proxy.drop({ silencedOnly: true });
      await caller.stop();
    }
  });

  it('does not resume once the caller has aborted', async () => {
    const ac = new AbortController();
    const err = (await orchestrator
      .callAgent(
        ID.search,
        'stuck',
        {},
        {
          stream: true,
          signal: ac.signal,
          onProgress: () => {
            proxy.refuse();
            proxy.drop({ reset: true });
            ac.abort();
          },
        },
      )
      .catch((e: unknown) => e)) as CallError;
    expect(err).toBeInstanceOf(CallError);
    expect(err.code).toBe('CALL_FAILED');
    expect(err.message).toContain('aborted by the caller');
    expect(proxy.refused).toBe(0);
  });
});
