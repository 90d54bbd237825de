// Lifecycle end to end: start refusals, SVID rotation during calls, graceful
// drain on stop(). Identities come from the dev Workload API server.
import { writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { z } from 'zod';
import type { AgentError } from '../src/index.js';
import { AgentConfigError, CallError, SecureAgent, type CapabilityContext } from '../src/index.js';
import { ID, sample, startWorld, testLogger, type World } from './helpers.js';

const started: SecureAgent[] = [];
afterEach(async () => {
  await Promise.all(started.splice(0).map((a) => a.stop({ drainTimeoutMs: 100 })));
});

function agent(opts: ConstructorParameters<typeof SecureAgent>[0]): SecureAgent {
  const a = new SecureAgent({ logger: testLogger(), env: {}, ...opts });
  started.push(a);
  return a;
}

/** The orchestrator of `world` (local policy, Workload API identity), started, with `search` as its one peer. */
async function startOrchestrator(world: World, searchUrl: string): Promise<SecureAgent> {
  const orch = agent({
    config: {
      name: 'orchestrator',
      authz: { policyFile: world.policyFile },
      identity: { workloadApi: { socket: world.dev.address('orchestrator') } },
      peers: [{ id: ID.search, url: searchUrl }],
    },
  });
  await orch.start();
  return orch;
}

describe('start() refusals', () => {
  let world: World;
  beforeAll(async () => {
    world = await startWorld({ extra: { nobody: null } });
  });
  afterAll(() => world.close());

  const base = () => ({ name: 'x', authz: { policyFile: world.policyFile } });

  it('refuses insecure settings at construction', () => {
    for (const patch of [{ transport: { verifyPeer: false } }, { transport: { tlsMinVersion: 'TLSv1.1' } }]) {
      expect(() => new SecureAgent({ config: { ...base(), ...patch } as never, env: {} })).toThrow(
        expect.objectContaining({ code: 'AGENT_CONFIG_INSECURE' }),
      );
    }
    expect(
      () =>
        new SecureAgent({
          config: { name: 'x', authz: { allowAll: true } },
          env: { NODE_ENV: 'production' },
        }),
    ).toThrow(expect.objectContaining({ code: 'AGENT_CONFIG_INSECURE' }));
  });

  it('refuses to start without an identity source, or when no SVID is issued', async () => {
    const none = agent({ config: base() });
    await expect(none.start()).rejects.toMatchObject({ code: 'AGENT_NO_IDENTITY' });
    expect(none.state).toBe('new');
    expect(() => none.url).toThrow(expect.objectContaining({ code: 'AGENT_NOT_STARTED' }));

    const unregistered = agent({
      config: {
        ...base(),
        identity: { workloadApi: { socket: world.dev.address('nobody'), timeoutMs: 500 } },
      },
    });
    const err = (await unregistered.start().catch((e: unknown) => e)) as AgentError;
    expect(err.code).toBe('AGENT_NO_IDENTITY');
    expect(err.message).toMatch(/no X\.509-SVID/);
  });

  it('refuses an SVID that is not the configured SPIFFE ID', async () => {
    // It waits up to timeoutMs for an SVID with its ID (a new SPIRE entry
    // reaches the agent late), then fails naming what it was sent.
    const a = agent({
      config: {
        ...base(),
        spiffeId: ID.search,
        identity: { workloadApi: { socket: world.dev.address('intruder'), timeoutMs: 5_000 } },
      },
    });
    const err = (await a.start().catch((e: unknown) => e)) as AgentError;
    expect(err.code).toBe('AGENT_NO_IDENTITY');
    expect(err.message).toContain(ID.intruder);
    expect(a.state).toBe('new');
  });

  it('refuses an unreadable or invalid policy', async () => {
    const badPolicy = join(world.dir, 'bad-policy.yaml');
    await writeFile(badPolicy, 'version: 1\nid: bad\ndefault: allow\nrules: []\n');
    for (const policyFile of [badPolicy, join(world.dir, 'missing.yaml')]) {
      const a = agent({
        config: {
          name: 'x',
          authz: { policyFile },
          identity: { workloadApi: { socket: world.dev.address('search') } },
        },
      });
      await expect(a.start()).rejects.toMatchObject({ code: 'AGENT_CONFIG_INVALID' });
    }
  });

  it('a port another process holds is AGENT_LISTEN_FAILED, not a config error, and nothing is left running', async () => {
    const holder = createServer();
    await new Promise<void>((resolve) => holder.listen(0, '127.0.0.1', resolve));
    try {
      const { port } = holder.address() as AddressInfo;
      const a = agent({
        config: {
          ...base(),
          server: { host: '127.0.0.1', port },
          identity: { workloadApi: { socket: world.dev.address('search') } },
        },
      });
      const err = (await a.start().catch((e: unknown) => e)) as AgentError;
      expect(err.code).toBe('AGENT_LISTEN_FAILED');
      expect(err.message).toMatch(/could not listen on its mTLS port \(server\.port\): listen EADDRINUSE/);
      expect(a.state).toBe('new');
    } finally {
      await new Promise((resolve) => holder.close(resolve));
    }
  });

  it('starts once, stops idempotently, never restarts; callAgent needs a started agent', async () => {
    const a = agent({
      config: { ...base(), identity: { workloadApi: { socket: world.dev.address('search') } } },
    });
    await expect(a.callAgent(ID.summarizer, 'summarize', {})).rejects.toMatchObject({
      code: 'AGENT_NOT_STARTED',
    });
    const { url, id } = await a.start();
    expect(url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
    expect(id.toString()).toBe(ID.search);
    await expect(a.start()).rejects.toMatchObject({ code: 'AGENT_ALREADY_STARTED' });
    await Promise.all([a.stop(), a.stop()]);
    expect(a.state).toBe('stopped');
    await expect(a.start()).rejects.toMatchObject({ code: 'AGENT_ALREADY_STARTED' });
    await expect(a.callAgent(ID.summarizer, 'summarize', {})).rejects.toMatchObject({
      code: 'AGENT_NOT_STARTED',
    });
  });
});

describe('stop() options', () => {
  let world: World;
  beforeAll(async () => {
    world = await startWorld();
  });
  afterAll(() => world.close());

  it('refuses a drainTimeoutMs that is not a whole number of ms from 0 to 2147483647, leaving the agent running', async () => {
    const a = agent({
      config: {
        name: 'search',
        authz: { policyFile: world.policyFile },
        identity: { workloadApi: { socket: world.dev.address('search') } },
      },
    });
    await a.start();
    // NaN and Infinity never cancelled the tasks still running: stop() waited forever.
    for (const drainTimeoutMs of [Number.NaN, Infinity, -1, 1.5, 2_147_483_648]) {
      const err = await a.stop({ drainTimeoutMs }).catch((e: unknown) => e);
      expect(err, `drainTimeoutMs ${drainTimeoutMs}`).toBeInstanceOf(AgentConfigError);
      expect(err).toMatchObject({
        code: 'AGENT_CONFIG_INVALID',
        issues: [{ path: 'drainTimeoutMs', message: expect.stringContaining(`got ${drainTimeoutMs}`) }],
      });
      expect((err as Error).message).toContain(
        'drainTimeoutMs: must be a whole number of milliseconds from 0 (cancel at once) to 2147483647',
      );
      expect(a.state).toBe('running');
    }
    // 0: cancel whatever still runs at once.
    await a.stop({ drainTimeoutMs: 0 });
    expect(a.state).toBe('stopped');
  });
});

describe('SVID rotation during calls', () => {
  let world: World;
  beforeAll(async () => {
    // SVIDs live 60 s and the test rotates them through the dev Workload API
    // (rotateX509Svid, what its timer calls), each time waiting for the
    // provider's update: with 3-second SVIDs rotating on their own timers, a
    // loaded machine (load average above ~10) let one expire before its late
    // replacement arrived (CERT_HAS_EXPIRED), which measured the machine, not rotation.
    world = await startWorld({ ttlSeconds: 60 });
  });
  afterAll(() => world.close());

  it('keeps every call succeeding across at least two rotations on both sides', async () => {
    const searchId = await world.provider('search');
    const orchId = await world.provider('orchestrator');
    let searchRotations = 0;
    let orchRotations = 0;
    const serials = new Set<string>();
    searchId.onUpdate((u) => {
      searchRotations++;
      serials.add(u.svid.certificates[0]!.serialNumber);
    });
    orchId.onUpdate(() => orchRotations++);
    const search = agent({
      config: { name: 'search', authz: { policyFile: world.policyFile } },
      identity: searchId,
    }).capability('search', { input: z.object({ query: z.string() }) }, ({ query }) => ({ hits: [query] }));
    await search.start();
    const orch = agent({
      config: {
        name: 'orchestrator',
        authz: { policyFile: world.policyFile },
        peers: [{ id: ID.search, url: search.url }],
      },
      identity: orchId,
    });
    await orch.start();

    let ok = 0;
    const failures: unknown[] = [];
    let stop = false;
    const worker = async (w: number) => {
      for (let i = 0; !stop; i++) {
        try {
          const out = await orch.callAgent(ID.search, 'search', { query: `${w}-${i}` });
          if ((out as { hits: string[] }).hits[0] === `${w}-${i}`) ok++;
          else failures.push(new Error(`wrong result ${JSON.stringify(out)}`));
        } catch (err) {
          failures.push(err);
        }
      }
    };
    const workers = [0, 1, 2, 3].map(worker);
    /**
     * Rotates `name`'s SVID on the server, waits for its provider to announce
     * it, then for 5 more calls to succeed (progress, not a wall-clock margin).
     */
    const rotate = async (name: 'search' | 'orchestrator', p: typeof searchId): Promise<void> => {
      const announced = new Promise<void>((resolve) => {
        const off = p.onUpdate((u) => {
          if (u.reason !== 'bundles') resolve(off());
        });
      });
      await world.dev.rotateX509Svid(name);
      await announced;
      const after = ok + 5;
      await vi.waitFor(() => failures.length > 0 || expect(ok).toBeGreaterThanOrEqual(after), {
        timeout: 30_000,
        interval: 20,
      });
    };
    for (let round = 0; round < 2 && failures.length === 0; round++) {
      await rotate('search', searchId);
      await rotate('orchestrator', orchId);
    }
    stop = true;
    await Promise.all(workers);
    expect(failures).toEqual([]);
    expect(searchRotations).toBeGreaterThanOrEqual(2);
    expect(orchRotations).toBeGreaterThanOrEqual(2);
    expect(serials.size).toBeGreaterThanOrEqual(2);
    expect(ok).toBeGreaterThan(10);
    expect(search.notReadyReason()).toBeUndefined();
    // New connections were made with the rotated certificates.
    expect(
      await sample(search.metrics.tlsHandshakes, { side: 'server', result: 'ok' }),
    ).toBeGreaterThanOrEqual(2);
  });
});

describe('stop() drains in-flight tasks', () => {
  let world: World;
  beforeAll(async () => {
    world = await startWorld();
  });
  afterAll(() => world.close());

  async function pair() {
    const running = { count: 0 };
    const handler = vi.fn(async (input: { ms: number }, ctx: CapabilityContext) => {
      running.count++;
      await new Promise<void>((resolve, reject) => {
        const t = input.ms >= 0 ? setTimeout(resolve, input.ms) : undefined;
        ctx.signal.addEventListener('abort', () => {
          clearTimeout(t);
          reject(ctx.signal.reason as Error);
        });
      });
      return { slept: input.ms };
    });
    const search = agent({
      config: {
        name: 'search',
        authz: { policyFile: world.policyFile },
        identity: { workloadApi: { socket: world.dev.address('search') } },
        observability: { ops: { port: 0 } },
      },
    })
      .capability('slow', { input: z.object({ ms: z.number().int() }) }, handler)
      // A task that only ends when the agent cancels it.
      .capability('stuck', { input: z.object({ ms: z.number().int() }) }, handler);
    await search.start();
    const orch = await startOrchestrator(world, search.url);
    return { search, orch, handler, running };
  }

  it('lets the in-flight call finish, refuses new ones, reports not ready', async () => {
    const { search, orch, handler, running } = await pair();
    const inflight = orch.callAgent(ID.search, 'slow', { ms: 600 });
    await vi.waitFor(() => expect(running.count).toBe(1), { timeout: 10_000 });
    const stopping = search.stop({ drainTimeoutMs: 10_000 });
    expect(search.state).toBe('draining');
    const ready = await fetch(`${search.opsUrl}/ready`);
    expect(ready.status).toBe(503);
    expect(await ready.json()).toEqual({ ready: false, reason: 'agent is draining' });

    const refused = (await orch
      .callAgent(ID.search, 'slow', { ms: 1 })
      .catch((e: unknown) => e)) as CallError;
    expect(refused).toBeInstanceOf(CallError);
    expect(refused.code).toBe('CALL_FAILED');
    expect(refused.remoteCode).toBe('UNAVAILABLE');
    expect(handler).toHaveBeenCalledTimes(1);

    await expect(inflight).resolves.toEqual({ slept: 600 });
    await stopping;
    expect(search.state).toBe('stopped');
    await expect(orch.callAgent(ID.search, 'slow', { ms: 1 })).rejects.toMatchObject({ code: 'CALL_FAILED' });
    expect(handler).toHaveBeenCalledTimes(1);
  });

  it('cancels what is still running at the drain timeout and tells the caller', async () => {
    const { search, orch, running } = await pair();
    const inflight = orch.callAgent(ID.search, 'stuck', { ms: -1 }).catch((e: unknown) => e);
    await vi.waitFor(() => expect(running.count).toBe(1), { timeout: 10_000 });
    await search.stop({ drainTimeoutMs: 200 });
    const err = (await inflight) as CallError;
    expect(err).toBeInstanceOf(CallError);
    expect(err.code).toBe('CALL_FAILED');
    expect(err.remoteCode).toBe('AGENT_STOPPING');
    expect(err.taskState).toBe('TASK_STATE_FAILED');
  });
});

describe('a handler that ignores its signal', () => {
  let world: World;
  beforeAll(async () => {
    world = await startWorld();
  });
  afterAll(() => world.close());

  it('is given up at its own deadline, also when an earlier deadline arrives after a later one', async () => {
    // Never settles and never looks at ctx.signal: only the server's deadline guard can end its task.
    const handler = vi.fn((_input: unknown, _ctx: CapabilityContext) => new Promise<never>(() => {}));
    const search = agent({
      config: {
        name: 'search',
        authz: { policyFile: world.policyFile },
        identity: { workloadApi: { socket: world.dev.address('search') } },
      },
    }).capability('stuck', { input: z.object({}) }, handler);
    await search.start();
    const orch = await startOrchestrator(world, search.url);
    const failed = () => sample(search.metrics.calls, { direction: 'inbound', outcome: 'error' });

    const late = orch.callAgent(ID.search, 'stuck', {}, { timeoutMs: 60_000 }).catch((e: unknown) => e);
    await vi.waitFor(() => expect(handler).toHaveBeenCalledTimes(1), { timeout: 10_000 });
    const early = (await orch
      .callAgent(ID.search, 'stuck', {}, { timeoutMs: 300 })
      .catch((e: unknown) => e)) as CallError;
    expect(early).toBeInstanceOf(CallError);
    expect(early.code).toBe('DEADLINE_EXCEEDED');
    // The callee ends the early call's task at its deadline, long before the late one's.
    await vi.waitFor(async () => expect(await failed()).toBe(1), { timeout: 10_000 });
    expect(handler).toHaveBeenCalledTimes(2);
    await search.stop({ drainTimeoutMs: 100 });
    expect(((await late) as CallError).code).toBe('CALL_FAILED');
    expect(await failed()).toBe(2);
  });
});

describe('identity from static files and policy from an OPA URL', () => {
  let world: World;
  beforeAll(async () => {
    world = await startWorld();
  });
  afterAll(() => world.close());

  it('serves with a file-based SVID and asks OPA (Data API) on both sides', async () => {
    // This HTTP server implements the Data API contract @weave/authz's
    // OpaEnforcer speaks (POST /v1/data/<path> with {input} → {result: {allow,
    // reason}}) and records every input; real OPA runs in interop/opa/.
    const inputs: Array<Record<string, unknown>> = [];
    const opa = createServer((req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => (body += c.toString()));
      req.on('end', () => {
        // The agent asks OPA's health once at start (readiness follows OPA).
        if (req.method === 'GET' && req.url === '/health') return void res.writeHead(200).end('{}');
        const { input } = JSON.parse(body) as { input: Record<string, unknown> };
        inputs.push({ path: req.url, ...input });
        const caller = (input.caller as { spiffe_id: string }).spiffe_id;
        const allow = caller === ID.orchestrator && input.action === 'search';
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ result: { allow, reason: allow ? 'test rule' : 'not allowed' } }));
      });
    });
    await new Promise<void>((r) => opa.listen(0, '127.0.0.1', r));
    const opaUrl = `http://127.0.0.1:${(opa.address() as AddressInfo).port}`;
    try {
      const svid = (await world.dev.ca.issueX509Svid(ID.search)).toPem();
      const files = {
        certFile: join(world.dir, 'search.pem'),
        keyFile: join(world.dir, 'search.key'),
        bundleFile: join(world.dir, 'bundle.pem'),
      };
      await writeFile(files.certFile, svid.certChain);
      await writeFile(files.keyFile, svid.privateKey);
      await writeFile(files.bundleFile, world.dev.ca.x509Bundle.toPem());
      const handler = vi.fn(({ query }: { query: string }) => ({ hits: [query] }));
      const search = agent({
        config: {
          name: 'search',
          spiffeId: ID.search,
          identity: { static: files },
          authz: { opa: { url: opaUrl } },
        },
      })
        .capability('search', { input: z.object({ query: z.string() }) }, handler)
        .capability('admin', { input: z.object({ query: z.string().default('') }) }, handler);
      await search.start();
      const orch = agent({
        config: {
          name: 'orchestrator',
          identity: { workloadApi: { socket: world.dev.address('orchestrator') } },
          authz: { opa: { url: opaUrl } },
          peers: [{ id: ID.search, url: search.url }],
        },
      });
      await orch.start();

      await expect(orch.callAgent(ID.search, 'search', { query: 'q' })).resolves.toEqual({ hits: ['q'] });
      expect(inputs.map((i) => [i.path, i.direction, i.action])).toEqual([
        ['/v1/data/weave/authz/decision', 'outbound', 'search'],
        ['/v1/data/weave/authz/decision', 'inbound', 'search'],
      ]);
      expect(inputs[1]).toMatchObject({
        caller: { spiffe_id: ID.orchestrator },
        callee: { spiffe_id: ID.search },
      });
      const denied = (await orch.callAgent(ID.search, 'admin', {}).catch((e: unknown) => e)) as CallError;
      expect(denied.code).toBe('CALL_DENIED');
      expect(denied.decision?.reason).toContain('not allowed');
      expect(handler).toHaveBeenCalledTimes(1);
    } finally {
      await new Promise<void>((r) => opa.close(() => r()));
    }
  });
});
