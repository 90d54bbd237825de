// Whose span a callee sees as its parent, and whether it may sample the call:
// real SecureAgents on the dev Workload API, an OpenTelemetry context manager
// registered as an application with an SDK has one. Weave records no span, so
// the parent a callee sees must be the caller application's own span (or the
// context the caller received), never an id nothing records.
import {
  context as otelContext,
  ROOT_CONTEXT,
  trace,
  TraceFlags,
  type SpanContext,
} from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { createMtlsServer, type MtlsFastifyInstance } from '@weave/transport/server';
import { authorizeAny } from '@weave/identity';
import { SecureAgent } from '../src/index.js';
import { ID, startOrchestrator, startWorld, testLogger, type World } from './helpers.js';

/** What a handler saw: the span context active while it ran, and its correlation id. */
interface Seen {
  readonly active: SpanContext | undefined;
  readonly correlationId: string;
}

/** A span of the application's, as its SDK would make one (no SDK needed to carry it). */
function appSpan(traceId: string, spanId: string, traceFlags = TraceFlags.SAMPLED) {
  return trace.wrapSpanContext({ traceId, spanId, traceFlags });
}

describe('trace context across hops, with a context manager registered', () => {
  let world: World;
  let app: MtlsFastifyInstance;
  const agents: SecureAgent[] = [];
  let orchestrator: SecureAgent;
  /** The raw `traceparent` of each call (POST) that reached the search agent; its card is fetched with none. */
  const traceparents: Array<string | undefined> = [];
  const seen: Record<'search' | 'summarizer', Seen[]> = { search: [], summarizer: [] };
  const active = (): SpanContext | undefined => trace.getSpanContext(otelContext.active());

  beforeAll(async () => {
    expect(otelContext.setGlobalContextManager(new AsyncLocalStorageContextManager().enable())).toBe(true);
    world = await startWorld();
    const summarizer = new SecureAgent({
      config: {
        name: 'summarizer',
        identity: { workloadApi: { socket: world.dev.address('summarizer') } },
        authz: { policyFile: world.policyFile },
      },
      logger: testLogger(),
      env: {},
    }).capability('summarize', { input: z.object({ text: z.string() }) }, ({ text }, ctx) => {
      seen.summarizer.push({ active: active(), correlationId: ctx.correlationId });
      return { summary: text };
    });
    agents.push(summarizer);
    await summarizer.start();
    // The search agent on a fastify instance of the test's, to read each request's raw header.
    const identity = await world.provider('search');
    app = createMtlsServer({ identity, authorize: authorizeAny(), fastify: { logger: false } });
    app.addHook('onRequest', async (req) => {
      if (req.method === 'POST') traceparents.push(req.headers.traceparent as string | undefined);
    });
    const search = new SecureAgent({
      config: {
        name: 'search',
        server: { host: '127.0.0.1', port: 0 },
        authz: { policyFile: world.policyFile },
        peers: [{ id: ID.summarizer, url: summarizer.url }],
      },
      identity,
      logger: testLogger(),
      env: {},
      server: app,
    }).capability(
      'nested',
      // `spanId`: the handler calls on inside a span of its own, as one with an SDK would.
      { input: z.object({ text: z.string(), spanId: z.string().optional() }) },
      async ({ text, spanId }, ctx) => {
        const inbound = active();
        seen.search.push({ active: inbound, correlationId: ctx.correlationId });
        const call = () => ctx.callAgent(ID.summarizer, 'summarize', { text });
        if (spanId === undefined || !inbound) return call();
        const own = appSpan(inbound.traceId, spanId);
        return otelContext.with(trace.setSpan(otelContext.active(), own), call);
      },
    );
    agents.push(search);
    await search.start();
    orchestrator = await startOrchestrator(world, search.url);
    agents.push(orchestrator);
  });

  afterAll(async () => {
    for (const a of agents.splice(0).reverse()) await a.stop({ drainTimeoutMs: 100 });
    await world?.close();
    otelContext.disable();
  });

  beforeEach(() => {
    traceparents.length = 0;
    seen.search.length = 0;
    seen.summarizer.length = 0;
  });

  const TRACE = '4bf92f3577b34da6a3ce929d0e0e4736';
  const CLIENT_SPAN = '00f067aa0ba902b7';

  it("makes the caller's active span the callee's parent, and over a nested ctx.callAgent hop", async () => {
    const span = appSpan(TRACE, CLIENT_SPAN);
    await otelContext.with(trace.setSpan(ROOT_CONTEXT, span), () =>
      orchestrator.callAgent(ID.search, 'nested', { text: 'hello' }),
    );
    expect(traceparents).toEqual([`00-${TRACE}-${CLIENT_SPAN}-01`]);
    const remote = { traceId: TRACE, spanId: CLIENT_SPAN, traceFlags: TraceFlags.SAMPLED, isRemote: true };
    expect(seen.search).toEqual([{ active: expect.objectContaining(remote), correlationId: TRACE }]);
    // The search handler made no span: its callee's parent is still the client's span.
    expect(seen.summarizer).toEqual([{ active: expect.objectContaining(remote), correlationId: TRACE }]);
  });

  it("makes a handler's own active span the parent of its nested call", async () => {
    const handlerSpan = 'b7ad6b7169203331';
    await otelContext.with(trace.setSpan(ROOT_CONTEXT, appSpan(TRACE, CLIENT_SPAN)), () =>
      orchestrator.callAgent(ID.search, 'nested', { text: 'hello', spanId: handlerSpan }),
    );
    expect(seen.search[0]?.active).toMatchObject({ traceId: TRACE, spanId: CLIENT_SPAN, isRemote: true });
    expect(seen.summarizer).toEqual([
      {
        active: expect.objectContaining({ traceId: TRACE, spanId: handlerSpan, isRemote: true }),
        correlationId: TRACE,
      },
    ]);
  });

  it("keeps the application's sampling decision: an unsampled span's calls arrive unsampled", async () => {
    await otelContext.with(trace.setSpan(ROOT_CONTEXT, appSpan(TRACE, CLIENT_SPAN, TraceFlags.NONE)), () =>
      orchestrator.callAgent(ID.search, 'nested', { text: 'hello' }),
    );
    expect(traceparents).toEqual([`00-${TRACE}-${CLIENT_SPAN}-00`]);
    expect(seen.summarizer[0]?.active).toMatchObject({ spanId: CLIENT_SPAN, traceFlags: TraceFlags.NONE });
  });

  it('starts a sampled trace for a call with no active span and no inbound traceparent', async () => {
    expect(active()).toBeUndefined();
    await orchestrator.callAgent(ID.search, 'nested', { text: 'hello' });
    expect(traceparents).toHaveLength(1);
    const [version, traceId, spanId, flags] = traceparents[0]!.split('-');
    expect([version, flags]).toEqual(['00', '01']);
    // The one trace, and the one parent, through both hops.
    for (const hop of [seen.search, seen.summarizer]) {
      expect(hop).toEqual([
        {
          active: expect.objectContaining({ traceId, spanId, traceFlags: TraceFlags.SAMPLED }),
          correlationId: traceId,
        },
      ]);
    }
  });
});
