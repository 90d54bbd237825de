// End to end: three SecureAgents with identities from the dev Workload API
// server (gRPC over Unix sockets), mTLS on loopback, one local policy file.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { context as otelContext } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { z } from 'zod';
import { A2AClient, A2AError, A2AServer, agentSpiffeId, buildMessage } from '@weave/a2a';
import { LocalPolicyEnforcer } from '@weave/authz';
import { SpiffeId, authorizeMemberOf } from '@weave/identity';
import { SecureChannel } from '@weave/transport';
import { createMtlsServer } from '@weave/transport/server';
import {
  CallError,
  SKILL_SCHEMAS_EXTENSION,
  SecureAgent,
  capability,
  type CapabilityContext,
} from '../src/index.js';
import { ID, sample, startWorld, testLogger, type World } from './helpers.js';

class SearchAgent extends SecureAgent {
  readonly seen: Array<{ caller: string; correlationId: string; query: string }> = [];

  @capability('search', {
    input: z.object({ query: z.string().min(1), limit: z.number().int().positive().default(3) }),
    output: z.object({ hits: z.array(z.string()) }),
    description: 'finds documents',
    tags: ['search'],
  })
  search(input: { query: string; limit: number }, ctx: CapabilityContext) {
    this.seen.push({ caller: ctx.caller.toString(), correlationId: ctx.correlationId, query: input.query });
    return { hits: Array.from({ length: input.limit }, (_, i) => `${input.query}-${i}`) };
  }

  @capability('steps', { input: z.object({ n: z.number().int().min(1).max(10) }) })
  // Destructures its context: the methods stay bound.
  async steps(input: { n: number }, { progress }: CapabilityContext) {
    for (let i = 1; i <= input.n; i++) {
      progress(`step ${i}`);
      await new Promise((r) => setTimeout(r, 5));
    }
    return { done: input.n };
  }

  @capability('fail', { input: z.object({}) })
  fail(): never {
    throw new Error('secret internal detail');
  }

  @capability('nested', {
    input: z.object({
      text: z.string(),
      waitMs: z.number().int().optional(),
      // ctx.callAgent (the call's own scope) or this.callAgent (a fresh call, unless a context manager carries it).
      via: z.enum(['ctx', 'agent']).default('ctx'),
    }),
  })
  async nested(input: { text: string; waitMs?: number; via: 'ctx' | 'agent' }, ctx: CapabilityContext) {
    const { via, ...args } = input;
    try {
      // Asks for far more time than its own caller gave it.
      const summary =
        via === 'ctx'
          ? await ctx.callAgent(ID.summarizer, 'summarize', args, { timeoutMs: 60_000 })
          : await this.callAgent(ID.summarizer, 'summarize', args, { timeoutMs: 60_000 });
      return { summary, correlationId: ctx.correlationId };
    } catch (err) {
      this.nestedErrors.push((err as CallError).code);
      throw err;
    }
  }

  readonly nestedErrors: string[] = [];

  @capability('slow', { input: z.object({ ms: z.number().int().nonnegative() }) })
  async slow(input: { ms: number }, ctx: CapabilityContext) {
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(resolve, input.ms);
      ctx.signal.addEventListener('abort', () => {
        clearTimeout(t);
        this.aborted.push(String((ctx.signal.reason as Error)?.name));
        reject(ctx.signal.reason as Error);
      });
    });
    return { slept: input.ms };
  }

  readonly aborted: string[] = [];
}

let world: World;
let orchestrator: SecureAgent;
let search: SearchAgent;
let summarizer: SecureAgent;
const summarizerAborts: string[] = [];
const summarize = vi.fn(async (input: { text: string; waitMs?: number }, ctx: CapabilityContext) => {
  if (input.waitMs !== undefined) {
    // Waits for its signal (or waitMs): shows which deadline the callee was given.
    await new Promise<void>((resolve) => {
      const t = setTimeout(resolve, input.waitMs);
      ctx.signal.addEventListener('abort', () => {
        clearTimeout(t);
        summarizerAborts.push(String((ctx.signal.reason as Error)?.name));
        resolve();
      });
    });
  }
  return { summary: input.text.slice(0, 5), correlationId: ctx.correlationId };
});

beforeAll(async () => {
  world = await startWorld();
  const logger = testLogger();
  summarizer = new SecureAgent({
    config: {
      name: 'summarizer',
      spiffeId: ID.summarizer,
      identity: { workloadApi: { socket: world.dev.address('summarizer') } },
      authz: { policyFile: world.policyFile },
    },
    logger,
  }).capability(
    'summarize',
    { input: z.object({ text: z.string(), waitMs: z.number().int().optional() }) },
    summarize,
  );
  await summarizer.start();

  // The search agent comes from a YAML file with a relative policy path and env overrides.
  const yamlFile = join(world.dir, 'search.yaml');
  await writeFile(
    yamlFile,
    [
      'name: search',
      `spiffeId: ${ID.search}`,
      'authz:',
      '  policyFile: ./policy.yaml',
      'peers:',
      `  - id: ${ID.summarizer}`,
      `    url: ${summarizer.url}`,
      'observability:',
      '  ops:',
      '    port: 0',
      '',
    ].join('\n'),
  );
  search = await SearchAgent.fromConfigFile(yamlFile, {
    env: { SPIFFE_ENDPOINT_SOCKET: world.dev.address('search'), WEAVE_SERVER__DRAIN_TIMEOUT_MS: '2000' },
    logger,
  });
  expect(search).toBeInstanceOf(SearchAgent);
  expect(search.config.server.drainTimeoutMs).toBe(2000);
  await search.start();

  orchestrator = new SecureAgent({
    config: {
      name: 'orchestrator',
      identity: { workloadApi: { socket: world.dev.address('orchestrator') } },
      authz: { policyFile: world.policyFile },
      peers: [{ id: ID.search, url: search.url }],
    },
    logger,
  });
  await orchestrator.start();
  orchestrator.addPeer(ID.summarizer, summarizer.url);
});

afterAll(async () => {
  await orchestrator?.stop();
  await search?.stop();
  await summarizer?.stop();
  await world?.close();
});

describe('SecureAgent end to end', () => {
  it('serves a permitted call and returns the typed result', async () => {
    const out = await orchestrator.callAgent(
      ID.search,
      'search',
      { query: 'weave', limit: 2 },
      { output: z.object({ hits: z.array(z.string()) }) },
    );
    expect(out.hits).toEqual(['weave-0', 'weave-1']);
    expect(search.seen.at(-1)).toMatchObject({ caller: ID.orchestrator, query: 'weave' });
    expect(orchestrator.id.toString()).toBe(ID.orchestrator);
  });

  it('refuses a forbidden call on the caller side: nothing reaches the callee', async () => {
    const handshakes = () => sample(summarizer.metrics.tlsHandshakes, { side: 'server' });
    const before = await handshakes();
    summarize.mockClear();
    const err = (await orchestrator
      .callAgent(ID.summarizer, 'summarize', { text: 'hello' })
      .catch((e: unknown) => e)) as CallError;
    expect(err).toBeInstanceOf(CallError);
    expect(err.code).toBe('CALL_DENIED');
    expect(err.deniedBy).toBe('caller');
    expect(err.decision).toMatchObject({ allowed: false, reason: 'no rule matched: default deny' });
    expect(err.decision?.auditId).toBeTruthy();
    expect(summarize).not.toHaveBeenCalled();
    // No TLS connection was even opened to the summarizer.
    expect(await handshakes()).toBe(before);
    expect(await sample(orchestrator.metrics.calls, { direction: 'outbound', outcome: 'denied' })).toBe(1);
    expect(
      await sample(orchestrator.metrics.authzDecisions, { direction: 'outbound', decision: 'deny' }),
    ).toBe(1);
  });

  it('refuses, on the callee side, a caller that skips its own check (handler not run)', async () => {
    for (const who of ['intruder', 'orchestrator'] as const) {
      const identity = await world.provider(who);
      const channel = new SecureChannel(identity, SpiffeId.parse(ID.summarizer));
      const client = new A2AClient({ dispatcher: channel });
      summarize.mockClear();
      const err = await client
        .sendMessage(summarizer.url, { message: buildMessage('summarize', { text: 'psst' }) })
        .catch((e: unknown) => e);
      await channel.close();
      expect(err).toBeInstanceOf(A2AError);
      expect((err as A2AError).code).toBe('PERMISSION_DENIED');
      expect(summarize).not.toHaveBeenCalled();
    }
    expect(
      await sample(summarizer.metrics.calls, {
        direction: 'inbound',
        capability: 'summarize',
        outcome: 'denied',
      }),
    ).toBe(2);
  });

  it('rejects a peer with the wrong identity before sending anything', async () => {
    summarize.mockClear();
    // Point the search ID at the summarizer's address: the TLS handshake proves the wrong ID.
    const other = new SecureAgent({
      config: {
        name: 'confused',
        authz: { policyFile: world.policyFile },
        peers: [{ id: ID.search, url: summarizer.url }],
      },
      identity: await world.provider('orchestrator'),
      logger: testLogger(),
    });
    await other.start();
    try {
      const err = (await other
        .callAgent(ID.search, 'search', { query: 'x' })
        .catch((e: unknown) => e)) as CallError;
      expect(err).toBeInstanceOf(CallError);
      expect(err.code).toBe('PEER_VERIFICATION_FAILED');
      expect(err.message).toContain(ID.summarizer);
      expect(summarize).not.toHaveBeenCalled();
      expect(await sample(summarizer.metrics.calls, { direction: 'inbound', outcome: 'success' })).toBe(0);
    } finally {
      await other.stop();
    }
  });

  // The card comes from the expected ID, but names another agent's interface
  // (the summarizer's, a valid SVID of the trust domain): each binding's own
  // connection must be refused, and reported alike on every call.
  it.each(['JSONRPC', 'HTTP+JSON', 'GRPC'])(
    'rejects a wrong peer met on %s before sending anything, as PEER_VERIFICATION_FAILED on every call',
    async (binding) => {
      const toSummarizer = new SecureChannel(
        await world.provider('orchestrator'),
        SpiffeId.parse(ID.summarizer),
      );
      const card = await new A2AClient({ dispatcher: toSummarizer })
        .discoverAgent(summarizer.url)
        .finally(() => toSummarizer.close());
      const { signatures: _, ...unsigned } = card;
      const cards = createMtlsServer({
        identity: await world.provider('search'),
        authorize: authorizeMemberOf('demo.weave'),
      });
      cards.get('/.well-known/agent-card.json', async () => ({
        ...unsigned,
        supportedInterfaces: card.supportedInterfaces.filter((i) => i.protocolBinding === binding),
      }));
      await cards.listen({ port: 0, host: '127.0.0.1' });
      const { port } = cards.server.address() as { port: number };
      const other = new SecureAgent({
        config: {
          name: 'confused',
          authz: { policyFile: world.policyFile },
          peers: [{ id: ID.search, url: `https://127.0.0.1:${port}` }],
        },
        identity: await world.provider('orchestrator'),
        logger: testLogger(),
      });
      await other.start();
      summarize.mockClear();
      const inbound = () => sample(summarizer.metrics.calls, { direction: 'inbound' });
      const before = await inbound();
      try {
        // The second call too: after a refused handshake gRPC backs off and fails calls without a new one.
        for (let i = 0; i < 2; i++) {
          if (i > 0) await new Promise((r) => setTimeout(r, 20));
          const err = (await other
            .callAgent(ID.search, 'search', { query: 'x' })
            .catch((e: unknown) => e)) as CallError;
          expect(err).toBeInstanceOf(CallError);
          expect(err.code).toBe('PEER_VERIFICATION_FAILED');
          expect(err.message).toContain(ID.summarizer);
          expect(err.cause).toMatchObject({ code: 'TRANSPORT_FAILED' });
        }
        expect(summarize).not.toHaveBeenCalled();
        expect(await inbound()).toBe(before);
      } finally {
        await other.stop();
        await cards.close();
      }
    },
  );

  it('calls by URL: the card names the SPIFFE ID the TLS handshake proved', async () => {
    const out = await orchestrator.callAgent(search.url, 'search', { query: 'by-url', limit: 1 });
    expect(out).toEqual({ hits: ['by-url-0'] });
    // Outbound policy still applies to URL targets once the ID is known.
    const err = (await orchestrator
      .callAgent(summarizer.url, 'summarize', { text: 'x' })
      .catch((e: unknown) => e)) as CallError;
    expect(err.code).toBe('CALL_DENIED');
    expect(err.callee).toBe(ID.summarizer);
    expect(() => orchestrator.addPeer('spiffe://Bad/x', 'https://127.0.0.1:1')).toThrow(
      expect.objectContaining({ code: 'PEER_UNKNOWN' }),
    );
    expect(() => orchestrator.addPeer(ID.intruder, 'http://127.0.0.1:1')).toThrow(/must be https/);
    expect(() => orchestrator.addPeer(ID.intruder, 'not a url')).toThrow(/invalid peer URL/);
    await expect(orchestrator.callAgent('http://127.0.0.1:1/', 'search', {})).rejects.toMatchObject({
      code: 'PEER_UNKNOWN',
    });
    await expect(orchestrator.callAgent(`spiffe://${'demo.weave'}/nobody`, 'x', {})).rejects.toMatchObject({
      code: 'PEER_UNKNOWN',
    });
  });

  it('calls by URL only when the card is signed by the SVID of the ID it declares', async () => {
    // An A2A server of a valid workload that does not sign its card.
    const identity = await world.provider('intruder');
    const a2a = new A2AServer({
      card: { name: 'unsigned', description: '', version: '1' },
      selfId: identity.id,
      enforcer: LocalPolicyEnforcer.fromObject({ version: 1, id: 'x', default: 'deny', rules: [] }),
    });
    const app = createMtlsServer({ identity, authorize: authorizeMemberOf('demo.weave') });
    await app.register(a2a.plugin);
    await app.listen({ port: 0, host: '127.0.0.1' });
    try {
      const { port } = app.server.address() as { port: number };
      const err = (await orchestrator
        .callAgent(`https://127.0.0.1:${port}`, 'search', {})
        .catch((e: unknown) => e)) as CallError;
      expect(err).toBeInstanceOf(CallError);
      expect(err.code).toBe('PEER_VERIFICATION_FAILED');
      expect(err.message).toContain('CARD_UNSIGNED');
      // A SecureAgent's card, by contrast, is signed and verifies against the bundle.
      const toSearch = new SecureChannel(identity, SpiffeId.parse(ID.search));
      try {
        const card = await new A2AClient({
          dispatcher: toSearch,
          cardSignatures: { policy: 'required', bundles: identity },
        }).discoverAgent(search.url);
        expect(card.signatures?.length).toBe(1);
      } finally {
        await toSearch.close();
      }
    } finally {
      await a2a.close();
      await app.close();
    }
  });

  it('reports callee errors as typed errors without leaking handler internals', async () => {
    const bad = (await orchestrator
      .callAgent(ID.search, 'search', { query: '' })
      .catch((e: unknown) => e)) as CallError;
    expect(bad.code).toBe('CALL_FAILED');
    expect(bad.remoteCode).toBe('CAPABILITY_INPUT_INVALID');
    expect(bad.taskState).toBe('TASK_STATE_FAILED');

    const failed = (await orchestrator
      .callAgent(ID.search, 'fail', {})
      .catch((e: unknown) => e)) as CallError;
    expect(failed.code).toBe('CALL_FAILED');
    expect(failed.remoteCode).toBe('CAPABILITY_FAILED');
    expect(failed.message).not.toContain('secret internal detail');

    // The callee-side policy allows "slow" but this output schema does not match its result.
    await expect(
      orchestrator.callAgent(ID.search, 'slow', { ms: 0 }, { output: z.object({ nope: z.string() }) }),
    ).rejects.toMatchObject({ code: 'CALL_FAILED', message: expect.stringMatching(/output schema/) });
  });

  it('streams progress messages to onProgress', async () => {
    const progress: string[] = [];
    const out = await orchestrator.callAgent(
      ID.search,
      'steps',
      { n: 3 },
      { stream: true, onProgress: (t) => progress.push(t) },
    );
    expect(out).toEqual({ done: 3 });
    expect(progress).toEqual(['step 1', 'step 2', 'step 3']);
    // A failure reaches a streaming caller typed the same way.
    await expect(orchestrator.callAgent(ID.search, 'fail', {}, { stream: true })).rejects.toMatchObject({
      code: 'CALL_FAILED',
      remoteCode: 'CAPABILITY_FAILED',
      taskState: 'TASK_STATE_FAILED',
    });
  });

  it('carries the trace id and the deadline to the next hop', async () => {
    summarize.mockClear();
    const out = (await orchestrator.callAgent(ID.search, 'nested', { text: 'abcdefgh' })) as {
      summary: { summary: string; correlationId: string };
      correlationId: string;
    };
    expect(out.summary.summary).toBe('abcde');
    expect(out.correlationId).toMatch(/^[0-9a-f]{32}$/);
    // One trace across orchestrator → search → summarizer.
    expect(out.summary.correlationId).toBe(out.correlationId);
  });

  it('caps a nested call at the deadline of the call it serves', async () => {
    summarizerAborts.length = 0;
    search.nestedErrors.length = 0;
    const err = (await orchestrator
      .callAgent(ID.search, 'nested', { text: 'abc', waitMs: 10_000 }, { timeoutMs: 400 })
      .catch((e: unknown) => e)) as CallError;
    expect(err.code).toBe('DEADLINE_EXCEEDED');
    // The summarizer got the orchestrator's deadline, not the 60 s the search agent asked for.
    // Generous waits: only the outcome matters, and the build machine is shared.
    await vi.waitFor(() => expect(summarizerAborts).toEqual(['TimeoutError']), { timeout: 10_000 });
    await vi.waitFor(() => expect(search.nestedErrors).toEqual(['DEADLINE_EXCEEDED']), { timeout: 10_000 });
  });

  it('abandons a nested ctx.callAgent when the call it serves is canceled', async () => {
    summarizerAborts.length = 0;
    search.nestedErrors.length = 0;
    const channel = new SecureChannel(await world.provider('orchestrator'), SpiffeId.parse(ID.search));
    const client = new A2AClient({ dispatcher: channel });
    try {
      const r = await client.sendMessage(search.url, {
        message: buildMessage('nested', { text: 'abc', waitMs: 20_000 }),
        configuration: { returnImmediately: true },
      });
      if (!('task' in r)) throw new Error('expected a task');
      // Once the nested call is in flight (the summarizer runs), cancel the outer task.
      await vi.waitFor(() => expect(summarize).toHaveBeenCalled(), { timeout: 10_000 });
      summarize.mockClear();
      const canceled = await client.cancelTask(search.url, r.task.id);
      expect(canceled.status.state).toBe('TASK_STATE_CANCELED');
      // Well before the summarizer's 20 s wait or any deadline, the nested call gives up.
      await vi.waitFor(() => expect(search.nestedErrors).toEqual(['CALL_FAILED']), { timeout: 10_000 });
    } finally {
      await channel.close();
    }
  });

  it('starts a fresh trace for a plain agent.callAgent in a handler when no context manager is registered', async () => {
    const out = (await orchestrator.callAgent(ID.search, 'nested', { text: 'abcdefgh', via: 'agent' })) as {
      summary: { summary: string; correlationId: string };
      correlationId: string;
    };
    expect(out.summary.summary).toBe('abcde');
    expect(out.summary.correlationId).toMatch(/^[0-9a-f]{32}$/);
    expect(out.summary.correlationId).not.toBe(out.correlationId);
  });

  describe('with an OpenTelemetry context manager registered', () => {
    beforeAll(() => {
      expect(otelContext.setGlobalContextManager(new AsyncLocalStorageContextManager().enable())).toBe(true);
    });
    afterAll(() => otelContext.disable());

    it('a plain agent.callAgent in a handler continues the trace', async () => {
      const out = (await orchestrator.callAgent(ID.search, 'nested', { text: 'abcdefgh', via: 'agent' })) as {
        summary: { summary: string; correlationId: string };
        correlationId: string;
      };
      expect(out.summary.correlationId).toBe(out.correlationId);
    });

    it('a plain agent.callAgent in a handler is capped at the deadline of the call it serves', async () => {
      summarizerAborts.length = 0;
      search.nestedErrors.length = 0;
      const err = (await orchestrator
        .callAgent(ID.search, 'nested', { text: 'abc', waitMs: 10_000, via: 'agent' }, { timeoutMs: 400 })
        .catch((e: unknown) => e)) as CallError;
      expect(err.code).toBe('DEADLINE_EXCEEDED');
      await vi.waitFor(() => expect(summarizerAborts).toEqual(['TimeoutError']), { timeout: 10_000 });
      await vi.waitFor(() => expect(search.nestedErrors).toEqual(['DEADLINE_EXCEEDED']), {
        timeout: 10_000,
      });
    });
  });

  it('accepts a deadline beyond a timer range', async () => {
    const thirtyDays = 30 * 24 * 3600 * 1000;
    await expect(
      orchestrator.callAgent(ID.search, 'slow', { ms: 5 }, { timeoutMs: thirtyDays }),
    ).resolves.toEqual({ slept: 5 });
  });

  it.each([
    ['0', 0],
    ['negative', -1],
    ['NaN', Number.NaN],
    ['Infinity', Number.POSITIVE_INFINITY],
    ['-Infinity', Number.NEGATIVE_INFINITY],
    ['a string (from plain JavaScript)', '1000' as unknown as number],
  ])(
    "refuses timeoutMs %s as the caller's own mistake (AGENT_CONFIG_INVALID), sending nothing",
    async (_name, timeoutMs) => {
      const seen = search.seen.length;
      // Not even the caller's policy is asked, so no request can have reached the callee's.
      const decisions = async () => [
        await sample(orchestrator.metrics.authzDecisions, { direction: 'outbound' }),
        await sample(search.metrics.authzDecisions, { direction: 'inbound' }),
      ];
      const before = await decisions();
      const err = (await orchestrator
        .callAgent(ID.search, 'search', { query: 'never' }, { timeoutMs })
        .catch((e: unknown) => e)) as CallError;
      expect(err).toBeInstanceOf(CallError);
      expect({ code: err.code, message: err.message, target: err.target }).toEqual({
        code: 'AGENT_CONFIG_INVALID',
        message: `options.timeoutMs must be a number of milliseconds above 0, got ${
          typeof timeoutMs === 'number' ? String(timeoutMs) : 'string'
        }`,
        target: ID.search,
      });
      expect(await decisions()).toEqual(before);
      expect(search.seen.length).toBe(seen);
    },
  );

  it('ends streaming calls at the deadline, and unary ones on the caller abort', async () => {
    const streamed = (await orchestrator
      .callAgent(ID.search, 'slow', { ms: 5_000 }, { stream: true, timeoutMs: 300 })
      .catch((e: unknown) => e)) as CallError;
    expect({ code: streamed.code, message: streamed.message }).toMatchObject({ code: 'DEADLINE_EXCEEDED' });
    const ac = new AbortController();
    const call = orchestrator.callAgent(ID.search, 'slow', { ms: 5_000 }, { signal: ac.signal });
    setTimeout(() => ac.abort(), 100);
    const aborted = (await call.catch((e: unknown) => e)) as CallError;
    expect({ code: aborted.code, message: aborted.message }).toMatchObject({
      code: 'CALL_FAILED',
      message: expect.stringMatching(/aborted by the caller/),
    });
  });

  // A fractional budget, too: the deadline header carries whole ms (the callee ignores any other).
  it.each([300, 300.5])(
    'aborts the callee at the propagated deadline (timeoutMs %s) and reports DEADLINE_EXCEEDED',
    async (timeoutMs) => {
      search.aborted.length = 0;
      const err = (await orchestrator
        .callAgent(ID.search, 'slow', { ms: 5_000 }, { timeoutMs })
        .catch((e: unknown) => e)) as CallError;
      expect(err).toBeInstanceOf(CallError);
      expect({ code: err.code, message: err.message, remote: err.remoteCode }).toMatchObject({
        code: 'DEADLINE_EXCEEDED',
      });
      await vi.waitFor(() => expect(search.aborted).toEqual(['TimeoutError']), { timeout: 10_000 });
    },
  );

  it('publishes each skill input schema on the card', async () => {
    const card = search.agentCard();
    const skill = card.skills.find((s) => s.id === 'search');
    expect(skill).toMatchObject({
      description: 'finds documents',
      tags: ['search'],
      inputModes: ['application/json'],
    });
    const ext = card.capabilities.extensions?.find((e) => e.uri === SKILL_SCHEMAS_EXTENSION);
    expect(ext?.params).toMatchObject({
      search: {
        input: { type: 'object', properties: { query: { type: 'string', minLength: 1 } } },
        output: { type: 'object' },
      },
      steps: { input: { properties: { n: { type: 'integer' } } } },
    });
    expect(agentSpiffeId(card)).toBe(ID.search);
    // A capability registered after start() is served and published at once.
    summarizer.capability('late', { input: z.object({ n: z.number() }) }, ({ n }) => n);
    const late = summarizer.agentCard();
    expect(late.skills.map((s) => s.id)).toEqual(['summarize', 'late']);
    expect(
      late.capabilities.extensions?.find((e) => e.uri === SKILL_SCHEMAS_EXTENSION)?.params,
    ).toMatchObject({
      late: { input: { properties: { n: { type: 'number' } } } },
    });
    // And over the wire, as another agent discovers it.
    const channel = new SecureChannel(await world.provider('orchestrator'), SpiffeId.parse(ID.search));
    const remote = await new A2AClient({ dispatcher: channel }).discoverAgent(search.url);
    await channel.close();
    expect(remote.capabilities.extensions).toEqual(card.capabilities.extensions);
  });

  it('serves /health, /ready and policy-guarded /metrics over mTLS, and an ops listener', async () => {
    const get = async (who: 'orchestrator' | 'intruder', path: string) => {
      const channel = new SecureChannel(await world.provider(who), SpiffeId.parse(ID.search));
      try {
        const res = await channel.get(`${search.url}${path}`);
        return { status: res.statusCode, text: await res.body.text() };
      } finally {
        await channel.close();
      }
    };
    expect(await get('intruder', '/health')).toMatchObject({ status: 200 });
    expect(await get('intruder', '/ready')).toMatchObject({ status: 200 });
    expect((await get('intruder', '/metrics')).status).toBe(403);
    const metrics = await get('orchestrator', '/metrics');
    expect(metrics.status).toBe(200);
    expect(metrics.text).toMatch(
      /weave_calls_total\{direction="inbound",capability="search",peer="spiffe:\/\/demo.weave\/agent\/orchestrator",outcome="success",agent="search"\} \d+/,
    );
    expect(metrics.text).toContain('weave_call_duration_seconds_bucket');
    expect(metrics.text).toMatch(
      /weave_authz_decisions_total\{direction="inbound",decision="allow",agent="search"\}/,
    );
    expect(metrics.text).toMatch(/weave_tls_handshakes_total\{side="server",result="ok",agent="search"\}/);
    expect(metrics.text).toMatch(
      /weave_task_state_transitions_total\{state="TASK_STATE_COMPLETED",agent="search"\}/,
    );
    expect(metrics.text).toMatch(
      /weave_task_state_transitions_total\{state="TASK_STATE_FAILED",agent="search"\}/,
    );

    expect(search.opsUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    const ops = await fetch(`${search.opsUrl}/ready`);
    expect(ops.status).toBe(200);
    expect(await ops.json()).toEqual({ ready: true });
    expect(await (await fetch(`${search.opsUrl}/metrics`)).text()).toContain('weave_calls_total');
    expect((await fetch(`${search.opsUrl}/`, { method: 'POST' })).status).toBe(405);
  });

  it('opens the circuit for a peer that keeps failing at the transport level', async () => {
    const deadPeer = 'spiffe://demo.weave/agent/gone';
    const agent = new SecureAgent({
      config: {
        name: 'breaker',
        authz: { allowAll: true },
        transport: { retries: 0, connectTimeoutMs: 500 },
        peers: [{ id: deadPeer, url: 'https://127.0.0.1:9/' }],
      },
      identity: await world.provider('orchestrator'),
      logger: testLogger(),
      env: {},
    });
    await agent.start();
    try {
      const codes: string[] = [];
      for (let i = 0; i < 12; i++) {
        const e = (await agent.callAgent(deadPeer, 'x', {}).catch((err: unknown) => err)) as CallError;
        codes.push(e.message.includes('circuit open') ? 'open' : e.code);
      }
      expect(codes.slice(0, 10).every((c) => c === 'CALL_FAILED')).toBe(true);
      expect(codes.at(-1)).toBe('open');
    } finally {
      await agent.stop();
    }
  });
});
