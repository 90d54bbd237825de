// How servers close. A2AGrpcServer.close(graceMs) lets the calls in flight
// finish (or get the answer A2AServer.close()'s cancel gives them) for up to
// graceMs and only then cuts what is left: it cut them at once (10 calls whose
// handlers returned 200 ms into a 2 s grace all ended "Connection dropped",
// close() resolved at +1 ms), as grpc-js's tryShutdown() counted connections
// told to close as closed. A2AServer.close() refuses, from the moment it is
// called, every message that would start work, on every binding, with the
// answer a draining server gives a new task: it refused nothing, and a task
// started after it resolved (or while it ran) kept its handler running.
// Real mTLS with dev-CA SVIDs, the harness's fastify server and grpc-js on
// loopback, the raw clients of each binding.
import { afterEach, describe, expect, it } from 'vitest';
import type { A2AGrpcServer, A2AServer, SkillRouting } from '../src/index.js';
import { rawBinding, serveGrpc, startHarness, type Harness } from './helpers/agents.js';
import { BINDINGS, refused, type CallOutcome, type RawBinding } from './helpers/raw-bindings.js';

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** What each case started; closed after it, whatever it did. */
const opened: Array<{ h: Harness; grpc: A2AGrpcServer; clients: RawBinding[] }> = [];

afterEach(async () => {
  for (const { h, grpc, clients } of opened.splice(0)) {
    for (const c of clients) c.close();
    await h.a2a.close();
    await grpc.close(0);
    await h.close();
  }
});

/** Handlers of the `hold` skill: started, still running, and the releases of those waiting. */
interface Held {
  started: number;
  running: number;
  readonly release: Array<() => void>;
}

/**
 * The `hold` skill: waits until released (then answers `done`), canceled,
 * or `maxMs` passed, so that a case that fails cannot hang on it.
 */
function serveHold(a2a: A2AServer, held: Held, maxMs = 2_000): void {
  a2a.registerTaskHandler({ id: 'hold', name: 'hold', description: 'hold', tags: [] }, async (ctx) => {
    held.started++;
    held.running++;
    try {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, maxMs);
        const done = () => {
          clearTimeout(timer);
          resolve();
        };
        held.release.push(done);
        ctx.signal.addEventListener('abort', done, { once: true });
      });
      return 'done';
    } finally {
      held.running--;
    }
  });
}

async function start(
  setup: (a2a: A2AServer) => void,
  routing?: SkillRouting,
): Promise<{ h: Harness; grpc: A2AGrpcServer; client: (b: (typeof BINDINGS)[number]) => RawBinding }> {
  const h = await startHarness(setup, routing ? { routing } : {});
  const grpc = await serveGrpc(h);
  const entry = { h, grpc, clients: [] as RawBinding[] };
  opened.push(entry);
  return {
    h,
    grpc,
    client: (b) => {
      const c = rawBinding(h, grpc, b);
      entry.clients.push(c);
      return c;
    },
  };
}

function message(skill: string | undefined, extra: Record<string, unknown> = {}) {
  return {
    messageId: crypto.randomUUID(),
    role: 'ROLE_USER',
    parts: [{ text: 'x' }],
    ...(skill === undefined ? {} : { metadata: { skill } }),
    ...extra,
  };
}

async function until(what: () => boolean): Promise<void> {
  for (let i = 0; i < 500 && !what(); i++) await sleep(2);
  expect(what()).toBe(true);
}

const stateOf = (o: CallOutcome): unknown =>
  o.ok ? (o.result as { task?: { status?: { state?: string } } }).task?.status?.state : o.error.message;

/** The answer a draining or closing server gives work it does not take, on every binding. */
const SHUTTING_DOWN = { code: 'UNAVAILABLE', message: expect.stringContaining('the agent is shutting down') };

describe('A2AGrpcServer.close(graceMs)', () => {
  it('lets the calls in flight finish and answer, takes no new one, and resolves once they ended', async () => {
    const held: Held = { started: 0, running: 0, release: [] };
    const { grpc, client } = await start((a2a) => serveHold(a2a, held));
    const b = client('GRPC');
    const calls = Array.from({ length: 4 }, () => b.call('SendMessage', { message: message('hold') }));
    await until(() => held.started === 4);
    const inFlight = grpc.callsInFlight;

    const t0 = Date.now();
    const closing = grpc.close(1_500).then(() => Date.now() - t0);
    // Sent once the server is closing: refused, never run.
    const late = await b.call('SendMessage', { message: message('hold') });
    expect(late.ok).toBe(false);
    expect(held.started).toBe(4);
    setTimeout(() => held.release.forEach((r) => r()), 150);

    expect((await Promise.all(calls)).map(stateOf)).toEqual(Array(4).fill('TASK_STATE_COMPLETED'));
    const closedAfter = await closing;
    expect(closedAfter).toBeGreaterThanOrEqual(140);
    expect(closedAfter).toBeLessThan(1_200);
    expect([inFlight, grpc.callsInFlight]).toEqual([4, 0]);
  });

  it('cuts the calls still running at graceMs', async () => {
    const held: Held = { started: 0, running: 0, release: [] };
    const { grpc, client } = await start((a2a) => serveHold(a2a, held, 5_000));
    const call = client('GRPC').call('SendMessage', { message: message('hold') });
    await until(() => held.started === 1);

    const t0 = Date.now();
    await grpc.close(300);
    const closedAfter = Date.now() - t0;
    expect(closedAfter).toBeGreaterThanOrEqual(280);
    expect(closedAfter).toBeLessThan(1_500);
    const out = await call;
    // UNAVAILABLE: the connection went with the call on it.
    expect(out.ok ? out : out.status).toBe(14);
  });

  it('after A2AServer.close(), gives each call in flight the CANCELED answer of its task', async () => {
    const held: Held = { started: 0, running: 0, release: [] };
    const { h, grpc, client } = await start((a2a) => serveHold(a2a, held, 5_000));
    const b = client('GRPC');
    const calls = Array.from({ length: 5 }, () => b.call('SendMessage', { message: message('hold') }));
    await until(() => held.started === 5);

    await h.a2a.close();
    await grpc.close(1_000);
    expect((await Promise.all(calls)).map(stateOf)).toEqual(Array(5).fill('TASK_STATE_CANCELED'));
  });
});

describe('A2AServer.close()', () => {
  for (const binding of BINDINGS) {
    it(`${binding}: refuses every message that would start work from the moment it is called, and leaves nothing running`, async () => {
      const held: Held = { started: 0, running: 0, release: [] };
      let routed: (() => void) | undefined;
      const { h, client } = await start(
        (a2a) => {
          serveHold(a2a, held, 300);
          a2a.registerTaskHandler({ id: 'ask', name: 'ask', description: 'ask', tags: [] }, async (ctx) => {
            await ctx.requestInput('more?');
            return 'answered';
          });
        },
        {
          // A message naming no skill: held in the router until the case lets it go.
          route: async () => {
            await new Promise<void>((resolve) => (routed = resolve));
            return 'hold';
          },
        },
      );
      const b = client(binding);
      const asking = await b.call('SendMessage', { message: message('ask') });
      expect(stateOf(asking)).toBe('TASK_STATE_INPUT_REQUIRED');
      const askId = (asking as { result: { task: { id: string } } }).result.task.id;

      // In flight when close() begins: past the first check, its task not made yet.
      const inFlight = b.call('SendMessage', {
        message: message(undefined),
        configuration: { returnImmediately: true },
      });
      await until(() => routed !== undefined);
      const closing = h.a2a.close();
      routed?.();
      expect(refused(await inFlight)).toMatchObject(SHUTTING_DOWN);
      await closing;

      const send = await b.call('SendMessage', {
        message: message('hold'),
        configuration: { returnImmediately: true },
      });
      expect(refused(send)).toMatchObject(SHUTTING_DOWN);
      const streamed = await b.stream('SendStreamingMessage', { message: message('hold') });
      expect(streamed.events).toEqual([]);
      expect(streamed.failure?.error).toMatchObject(SHUTTING_DOWN);
      const reply = await b.call('SendMessage', { message: message(undefined, { taskId: askId }) });
      expect(refused(reply)).toMatchObject(SHUTTING_DOWN);
      // Reads go on: the task waiting for input was canceled by close().
      const read = await b.call('GetTask', { id: askId });
      expect(read.ok && (read.result as { status: { state: string } }).status.state).toBe(
        'TASK_STATE_CANCELED',
      );

      await sleep(50);
      expect(held).toMatchObject({ started: 0, running: 0 });
    });
  }
});
