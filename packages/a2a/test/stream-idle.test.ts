// Silent peers, both ways. A client's stream whose peer or network goes
// silent fails within its streamIdleTimeoutMs on every binding (HTTP:
// STREAM_IDLE; gRPC: the unanswered ping drops the connection), and
// streamTaskUpdates resumes it once the peer is back; a quiet task on a live
// peer (heartbeats on the HTTP bindings, ping answers on gRPC) keeps its
// stream; an error answer whose body stalls fails the same way. A gRPC
// server lets go of a subscriber whose client vanished (its keepalive),
// which otherwise holds the task's subscriber slot. Real mTLS on loopback,
// through a TCP relay the test can silence: a black hole, where nothing is
// relayed and neither side hears of the other's end. The relay still reads
// and throws away what each side sends (silence('discard'), not 'pause'), so
// it sees the server give its side up (serverSide), which a relay that
// stopped reading would not.
import { createServer as createHttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Agent } from 'undici';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { authorizeMemberOf } from '@weave/identity';
import { TRUST_DOMAIN } from '@weave/test-support';
import { TcpRelay } from '@weave/test-support/tcp-relay';
import {
  A2AClient,
  A2AClientError,
  A2AGrpcServer,
  grpcTransportFactory,
  jsonRpcTransportFactory,
  type ClientTransport,
  type RawStreamEvent,
  type StreamEvent,
} from '../src/index.js';
import { serveGrpc, serveSlow, startHarness, type Harness } from './helpers/agents.js';

const IDLE_MS = 600;

let h: Harness;
let grpc: A2AGrpcServer;
let http: TcpRelay;
let grpcRelay: TcpRelay;
/** Release of each waiting `slow` task, by task id. */
const waiting = new Map<string, () => void>();

beforeAll(async () => {
  // Heartbeats 4 times per idle limit: a quiet task is never quiet on the wire.
  h = await startHarness((a2a) => serveSlow(a2a, (id, release) => waiting.set(id, release)), {
    heartbeatMs: IDLE_MS / 4,
  });
  grpc = await serveGrpc(h);
  http = new TcpRelay(Number(new URL(h.url).port));
  await http.listen();
  grpcRelay = new TcpRelay(Number((grpc.url ?? '').split(':').pop()));
  await grpcRelay.listen();
  // The card, fetched through the relay, names the relay for every binding.
  h.a2a.advertiseGrpc(`127.0.0.1:${grpcRelay.port}`);
});

afterEach(() => {
  for (const r of [http, grpcRelay]) {
    r.heal();
    r.drop({ silencedOnly: true });
  }
  for (const release of waiting.values()) release();
  waiting.clear();
});

afterAll(async () => {
  await http?.close();
  await grpcRelay?.close();
  await grpc?.close(100);
  await h?.close();
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function taskIdOf(e: StreamEvent): string {
  if ('task' in e) return e.task.id;
  throw new Error(`the stream did not start with the task: ${JSON.stringify(e)}`);
}

function stateOf(e: StreamEvent | undefined): string | undefined {
  if (e === undefined) return undefined;
  return 'task' in e ? e.task.status.state : 'statusUpdate' in e ? e.statusUpdate.status.state : undefined;
}

describe('A2AClient streamIdleTimeoutMs', () => {
  it('takes 0 (no limit) and refuses anything but a whole number ≥ 0', () => {
    expect(() => new A2AClient({ dispatcher: h.agent, streamIdleTimeoutMs: 0 })).not.toThrow();
    for (const bad of [-1, 1.5, Number.NaN, Number.POSITIVE_INFINITY]) {
      expect(() => new A2AClient({ dispatcher: h.agent, streamIdleTimeoutMs: bad })).toThrow(
        /^A2AClient: streamIdleTimeoutMs must be 0 \(no limit\) or a whole number of milliseconds up to 2147483647, got /,
      );
    }
  });
});

describe.each(['JSONRPC', 'HTTP+JSON', 'GRPC'])('a stream on %s', (binding) => {
  let client: A2AClient;
  const url = () => `https://127.0.0.1:${http.port}${new URL(h.url).pathname}`;
  beforeAll(async () => {
    client = new A2AClient({
      dispatcher: h.agent,
      preferredBindings: [binding],
      streamIdleTimeoutMs: IDLE_MS,
    });
    expect((await client.transportFor(url())).protocolBinding).toBe(binding);
  });
  afterAll(() => client.close());

  it('of a quiet task on a live peer stays open past the idle limit and ends with the task', async () => {
    const events: StreamEvent[] = [];
    for await (const e of client.sendStreamingMessage(url(), { message: slowMessage() })) {
      events.push(e);
      if (events.length === 1) {
        const release = waiting.get(taskIdOf(e));
        expect(release).toBeDefined();
        // Four idle limits without an event while the client waits for one (only
        // waits count): heartbeats (HTTP) or ping answers (gRPC) keep the stream.
        setTimeout(() => release?.(), 4 * IDLE_MS);
      }
    }
    expect(stateOf(events.at(-1))).toBe('TASK_STATE_COMPLETED');
  });

  it('whose peer goes silent fails within the idle limit (HTTP: STREAM_IDLE); the task is still there', async () => {
    let taskId = '';
    let failure: unknown;
    try {
      for await (const e of client.sendStreamingMessage(url(), { message: slowMessage() })) {
        if (taskId === '') {
          taskId = taskIdOf(e);
          http.silence('discard');
          grpcRelay.silence('discard');
        }
      }
    } catch (err) {
      failure = err;
    }
    expect(taskId).not.toBe('');
    expectIdle(binding, failure);
    // The server did not end the task: only the stream was given up.
    expect(waiting.has(taskId)).toBe(true);
  });

  it('with no idle limit (0) waits on a silent peer until the caller aborts', async () => {
    const patient = new A2AClient({
      dispatcher: h.agent,
      preferredBindings: [binding],
      streamIdleTimeoutMs: 0,
    });
    const ac = new AbortController();
    let failure: unknown;
    let failedAt = 0;
    const silencedAt = { t: 0 };
    try {
      for await (const e of patient.sendStreamingMessage(
        url(),
        { message: slowMessage() },
        { signal: ac.signal },
      )) {
        if (silencedAt.t !== 0) continue;
        taskIdOf(e);
        http.silence('discard');
        grpcRelay.silence('discard');
        silencedAt.t = Date.now();
        setTimeout(() => ac.abort(), 4 * IDLE_MS);
      }
    } catch (err) {
      failure = err;
      failedAt = Date.now();
    } finally {
      await patient.close();
    }
    expect((failure as A2AClientError).code).toBe('ABORTED');
    // Ended by the abort, not before it.
    expect(failedAt - silencedAt.t).toBeGreaterThanOrEqual(4 * IDLE_MS - 50);
  });

  it('followed by streamTaskUpdates is resumed once the peer is back, and ends with the task', async () => {
    const resumes: unknown[] = [];
    const events: StreamEvent[] = [];
    for await (const e of client.streamTaskUpdates(
      url(),
      { message: slowMessage() },
      {
        resumeBackoffMs: 10,
        onResume: (r) => {
          resumes.push(r.error);
          // The network is back for the resume; the task can finish.
          http.heal();
          grpcRelay.heal();
          for (const release of waiting.values()) setTimeout(release, 200);
        },
      },
    )) {
      events.push(e);
      if (events.length === 1) {
        http.silence('discard');
        grpcRelay.silence('discard');
      }
    }
    expect(resumes).toHaveLength(1);
    expectIdle(binding, resumes[0]);
    expect(stateOf(events.at(-1))).toBe('TASK_STATE_COMPLETED');
  });
});

/**
 * The failure of a stream given up for its silence: STREAM_IDLE on the HTTP
 * bindings; on gRPC the unanswered ping drops the connection, which fails its
 * calls like any dropped connection (UNAVAILABLE: TRANSPORT_FAILED).
 */
function expectIdle(binding: string, failure: unknown): void {
  expect(failure).toBeInstanceOf(A2AClientError);
  if (binding === 'GRPC') {
    expect((failure as A2AClientError).code).toBe('TRANSPORT_FAILED');
    expect((failure as Error).message).toContain('Connection dropped');
  } else {
    expect((failure as A2AClientError).code).toBe('STREAM_IDLE');
    expect((failure as Error).message).toContain(`${IDLE_MS} ms`);
  }
}

describe('an error answer to a stream request', () => {
  it('whose body stalls fails with STREAM_IDLE within the idle limit', async () => {
    // A plain HTTP server (no TLS: the transport alone) that answers JSON, not
    // an event stream, and sends half of its body.
    const server = createHttpServer((_req, res) => {
      res.writeHead(500, { 'content-type': 'application/json' });
      res.write('{"jsonrpc":"2.0",');
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const dispatcher = new Agent();
    try {
      const transport = jsonRpcTransportFactory.create(
        {
          url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/`,
          protocolBinding: 'JSONRPC',
          protocolVersion: '1.0',
        },
        { dispatcher, headers: {}, maxResponseBytes: 1 << 20, streamIdleTimeoutMs: IDLE_MS },
      );
      const events = transport.stream(
        'SendStreamingMessage',
        { message: slowMessage() },
        { timeoutMs: 5_000 },
      );
      await expect(events.next()).rejects.toMatchObject({ code: 'STREAM_IDLE' });
    } finally {
      await dispatcher.close();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });
});

describe('A2AGrpcServer keepaliveMs', () => {
  /** A harness of its own: one subscriber per task, so a subscriber not let go refuses the next. */
  let one: Harness;
  const released = new Map<string, () => void>();
  beforeAll(async () => {
    one = await startHarness((a2a) => serveSlow(a2a, (id, release) => released.set(id, release)), {
      limits: { maxSubscribersPerTask: 1 },
    });
  });
  afterAll(async () => {
    for (const release of released.values()) release();
    await one?.close();
  });

  /** A gRPC server on `one`'s handler with `keepaliveMs`, behind a relay, and transports to it that never ping. */
  async function serve(keepaliveMs: number) {
    const server = new A2AGrpcServer({
      handler: one.a2a.handler,
      identity: one.server.identity,
      authorize: authorizeMemberOf(TRUST_DOMAIN),
      keepaliveMs,
    });
    const relay = new TcpRelay(Number((await server.listen()).url.split(':').pop()));
    await relay.listen();
    // A new transport is a new connection: the subscriber's own stays in the black hole.
    const transports: ClientTransport[] = [];
    const connect = () => {
      const t = grpcTransportFactory.create(
        { url: `127.0.0.1:${relay.port}`, protocolBinding: 'GRPC', protocolVersion: '1.0' },
        { dispatcher: one.agent, headers: {}, maxResponseBytes: 1 << 20, streamIdleTimeoutMs: 0 },
      );
      transports.push(t);
      return t;
    };
    return {
      relay,
      connect,
      async close() {
        for (const t of transports) await t.close();
        await relay.close();
        await server.close(100);
      },
    };
  }

  /** Starts a `slow` task on a stream, silences the relay, and gives the stream up on the client's side. */
  async function silencedSubscriber(s: Awaited<ReturnType<typeof serve>>): Promise<string> {
    const ac = new AbortController();
    const events = s
      .connect()
      .stream('SendStreamingMessage', { message: slowMessage() }, { timeoutMs: 5_000, signal: ac.signal });
    const first = (await events.next()).value as RawStreamEvent;
    const taskId = (first.value as { task: { id: string } }).task.id;
    s.relay.silence('discard');
    ac.abort();
    await events.return(undefined);
    s.relay.heal();
    return taskId;
  }

  /** Subscribes to `taskId` on a new connection through the healed relay and reads its first event. */
  async function subscribe(s: Awaited<ReturnType<typeof serve>>, taskId: string): Promise<unknown> {
    const events = s.connect().stream('SubscribeToTask', { id: taskId }, { timeoutMs: 5_000 });
    try {
      return (await events.next()).value;
    } finally {
      await events.return(undefined);
    }
  }

  it('closes a connection whose peer vanished and lets its subscriber go', async () => {
    const s = await serve(200);
    try {
      const taskId = await silencedSubscriber(s);
      // The server's unanswered ping closes its side of the black hole.
      await until(() => s.relay.serverSide === 0, 5_000, 'the server to close the silent connection');
      // Its subscriber went with it: the task takes a new one (one per task here).
      expect(await subscribe(s, taskId)).toMatchObject({ value: { task: { id: taskId } } });
    } finally {
      await s.close();
    }
  });

  it('with 0 keeps a silent connection, whose subscriber then refuses the next', async () => {
    expect(
      () =>
        new A2AGrpcServer({
          handler: one.a2a.handler,
          identity: one.server.identity,
          authorize: authorizeMemberOf(TRUST_DOMAIN),
          keepaliveMs: -1,
        }),
    ).toThrow(
      /^A2AGrpcServer: keepaliveMs must be 0 \(off\) or a whole number of milliseconds up to 2147483647, got -1$/,
    );
    const s = await serve(0);
    try {
      const taskId = await silencedSubscriber(s);
      await sleep(1_500);
      expect(s.relay.serverSide).toBe(1);
      await expect(subscribe(s, taskId)).rejects.toMatchObject({ code: 'UNSUPPORTED_OPERATION' });
    } finally {
      await s.close();
    }
  });
});

/** Waits until `check` holds (polling), or fails after `ms`. */
async function until(check: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

function slowMessage() {
  return {
    messageId: crypto.randomUUID(),
    role: 'ROLE_USER' as const,
    parts: [{ text: 'go' }],
    metadata: { skill: 'slow' },
  };
}
