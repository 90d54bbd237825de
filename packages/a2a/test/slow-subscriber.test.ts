// A stream subscriber that reads slower than its task publishes: it gets
// every event (the server holds them for it and writes as the socket drains),
// or, past the server's buffer, an explicit UNAVAILABLE error naming the last
// event it got, from which the client resumes. A stream never ends "normally"
// before a terminal or interrupted state. Real mTLS on loopback.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createMtlsServer, type MtlsFastifyInstance } from '@weave/transport/server';
import { authorizeMemberOf } from '@weave/identity';
import { A2AClient, A2AClientError, A2AError, buildMessage, type StreamEvent } from '../src/index.js';
import { startHarness, type Harness } from './helpers/agents.js';
import { baseUrl, channel, createPki, type Pki, TRUST_DOMAIN } from '@weave/test-support';

/** The stream: 10 000 status events from one task. */
const STEPS = 10_000;
/** Task snapshot + WORKING + the steps + the result artifact + COMPLETED. */
const EVENTS = STEPS + 4;

const floodMessage = () => buildMessage('flood', 'go');

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A task that publishes STEPS status messages at once, faster than anyone reads them. */
function flood(a2a: Harness['a2a']): void {
  a2a.registerTaskHandler({ id: 'flood', name: 'Flood', description: '10 000 steps', tags: [] }, (ctx) => {
    for (let i = 1; i <= STEPS; i++) ctx.publishMessage(`step ${i} of ${STEPS}`);
    return 'done';
  });
}

/**
 * Reads a stream deliberately slowly: nothing for `pauseMs` after the first
 * event (the task publishes everything meanwhile), then a short wait every
 * 500 events.
 */
async function readSlowly(stream: AsyncIterable<StreamEvent>, pauseMs = 1000): Promise<StreamEvent[]> {
  const events: StreamEvent[] = [];
  for await (const e of stream) {
    events.push(e);
    if (events.length === 1) await sleep(pauseMs);
    else if (events.length % 500 === 0) await sleep(5);
  }
  return events;
}

function stateOf(e: StreamEvent | undefined): string | undefined {
  if (!e) return undefined;
  if ('task' in e) return e.task.status.state;
  if ('statusUpdate' in e) return e.statusUpdate.status.state;
  return undefined;
}

function checkWhole(events: StreamEvent[]): void {
  expect(events).toHaveLength(EVENTS);
  // Every event once, in the task's order: ids 1..EVENTS.
  expect(events.map((e) => Number(e.eventId))).toEqual(Array.from({ length: EVENTS }, (_, i) => i + 1));
  const steps = events.flatMap((e) =>
    'statusUpdate' in e && e.statusUpdate.status.message
      ? [e.statusUpdate.status.message.parts[0]?.text]
      : [],
  );
  expect(steps).toHaveLength(STEPS);
  expect(steps[STEPS - 1]).toBe(`step ${STEPS} of ${STEPS}`);
  expect(stateOf(events.at(-1))).toBe('TASK_STATE_COMPLETED');
}

describe('a slow stream subscriber, default limits', () => {
  let h: Harness;
  let client: A2AClient;
  beforeAll(async () => {
    h = await startHarness(flood);
    client = new A2AClient({ dispatcher: h.agent });
  });
  afterAll(() => h.close());

  it(`gets all ${EVENTS} events of a ${STEPS}-event stream in one stream, and the final state`, async () => {
    // The plain stream, which does not resume: everything comes on it.
    const events = await readSlowly(client.sendStreamingMessage(h.url, { message: floodMessage() }));
    checkWhole(events);
  });
});

describe('a subscriber slower than the server holds for it', () => {
  let h: Harness;
  let client: A2AClient;
  beforeAll(async () => {
    h = await startHarness(flood, {
      // Far less than the stream, so it is cut; the log keeps every event for the resume.
      limits: { maxStreamBufferBytes: 256 * 1024 },
      maxEventsPerTask: 2 * EVENTS,
    });
    client = new A2AClient({ dispatcher: h.agent });
  });
  afterAll(() => h.close());

  it('is told with an UNAVAILABLE error that names the last event it got', async () => {
    const got: StreamEvent[] = [];
    const err = await (async () => {
      for await (const e of client.sendStreamingMessage(h.url, { message: floodMessage() })) {
        got.push(e);
        if (got.length === 1) await sleep(500);
      }
    })().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(A2AError);
    expect((err as A2AError).code).toBe('UNAVAILABLE');
    expect(got.length).toBeGreaterThan(0);
    expect(got.length).toBeLessThan(EVENTS);
    const last = got.at(-1)?.eventId;
    expect((err as Error).message).toContain(`resume after event ${last} `);
  });

  it(`resumes after the error (streamTaskUpdates): all ${EVENTS} events once, in order, COMPLETED`, async () => {
    checkWhole(await readSlowly(client.streamTaskUpdates(h.url, 'flood', 'go'), 500));
  });
});

describe('a resume after the server no longer keeps the missed events', () => {
  let h: Harness;
  let client: A2AClient;
  let release: () => void = () => undefined;
  beforeAll(async () => {
    h = await startHarness(
      (a2a) => {
        flood(a2a);
        // The same steps, then it waits until the test lets it finish.
        a2a.registerTaskHandler({ id: 'gated', name: 'Gated', description: '', tags: [] }, async (ctx) => {
          for (let i = 1; i <= STEPS; i++) ctx.publishMessage(`step ${i} of ${STEPS}`);
          await new Promise<void>((r) => {
            release = r;
          });
          return 'done';
        });
      },
      // Cut early, and keep far fewer events than the reader misses.
      { limits: { maxStreamBufferBytes: 256 * 1024 }, maxEventsPerTask: 100 },
    );
    client = new A2AClient({ dispatcher: h.agent });
  });
  afterAll(() => h.close());

  const ids = (events: StreamEvent[]) =>
    events.flatMap((e) => (e.eventId === undefined ? [] : [Number(e.eventId)]));
  const increasing = (xs: number[]) => xs.every((x, i) => i === 0 || x > (xs[i - 1] as number));

  it('of a task that finished meanwhile: the final Task (GetTask), marked missedEvents, not an error', async () => {
    const resumes: unknown[] = [];
    const events = await readSlowly(
      client.streamTaskUpdates(h.url, 'flood', 'go', { onResume: (r) => resumes.push(r.error) }),
      500,
    );
    expect(resumes.length).toBeGreaterThan(0);
    expect((resumes[0] as A2AError).code).toBe('UNAVAILABLE');
    expect(events.length).toBeLessThan(EVENTS);
    const last = events.at(-1);
    expect(last && 'task' in last ? last.missedEvents : undefined).toBe(true);
    expect(stateOf(last)).toBe('TASK_STATE_COMPLETED');
    // The final state and every artifact: the handler's result is there.
    expect(last && 'task' in last ? last.task.artifacts?.[0]?.parts[0]?.text : undefined).toBe('done');
    // Only that one is marked; what came before came in order, once.
    expect(events.slice(0, -1).some((e) => e.missedEvents)).toBe(false);
    expect(increasing(ids(events))).toBe(true);
  });

  it('of a task still running: the resumed stream starts with the Task, marked, then goes on to the end', async () => {
    const events: StreamEvent[] = [];
    for await (const e of client.streamTaskUpdates(h.url, 'gated', 'go')) {
      events.push(e);
      if (events.length === 1) await sleep(500);
      // Let the task finish once the resumed stream has started (with the Task).
      if ('task' in e && events.length > 1) release();
    }
    const marked = events.filter((e) => e.missedEvents);
    expect(marked).toHaveLength(1);
    expect(stateOf(marked[0])).toBe('TASK_STATE_WORKING');
    expect(events.indexOf(marked[0] as StreamEvent)).toBeLessThan(events.length - 1);
    expect(stateOf(events.at(-1))).toBe('TASK_STATE_COMPLETED');
    expect(increasing(ids(events))).toBe(true);
  });
});

describe('a stream that ends before the task settles', () => {
  let pki: Pki;
  let app: MtlsFastifyInstance;
  let url: string;
  let client: A2AClient;
  beforeAll(async () => {
    pki = await createPki();
    const server = await pki.workload('/agent/server');
    const caller = await pki.workload('/agent/client');
    // Not a Weave server: its stream stops after a WORKING task, without an error.
    app = createMtlsServer({ identity: server.identity, authorize: authorizeMemberOf(TRUST_DOMAIN) });
    app.get('/.well-known/agent-card.json', (_req, reply) => {
      const u = baseUrl(app);
      void reply.send({
        name: 'cut',
        description: 'ends streams early',
        version: '1',
        supportedInterfaces: [{ url: u, protocolBinding: 'JSONRPC', protocolVersion: '1.0' }],
        capabilities: { streaming: true },
        defaultInputModes: ['text/plain'],
        defaultOutputModes: ['text/plain'],
        skills: [],
      });
    });
    app.post('/', (request, reply) => {
      const id = (request.body as { id: number }).id;
      const task = { id: 't1', contextId: 'c1', status: { state: 'TASK_STATE_WORKING' } };
      void reply
        .header('content-type', 'text/event-stream')
        .send(`id: 1\ndata: ${JSON.stringify({ jsonrpc: '2.0', id, result: { task } })}\n\n`);
    });
    await app.listen({ port: 0, host: '127.0.0.1' });
    url = baseUrl(app);
    client = new A2AClient({ dispatcher: channel(caller, server.id) });
  });
  afterAll(async () => {
    await app.close();
    await pki.close();
  });

  it('is an error (STREAM_ENDED) after the events it did carry, not a normal end', async () => {
    const got: StreamEvent[] = [];
    const err = await (async () => {
      for await (const e of client.sendStreamingMessage(url, {
        message: { messageId: 'm1', role: 'ROLE_USER', parts: [{ text: 'go' }] },
      }))
        got.push(e);
    })().catch((e: unknown) => e);
    expect(got.map(stateOf)).toEqual(['TASK_STATE_WORKING']);
    expect(err).toBeInstanceOf(A2AClientError);
    expect((err as A2AClientError).code).toBe('STREAM_ENDED');
  });
});
