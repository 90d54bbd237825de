// A stream whose peer or network goes silent ends with STREAM_IDLE within the
// client's streamIdleTimeoutMs on every binding, and streamTaskUpdates
// resumes it once the peer is back; a quiet task on a live peer (heartbeats
// on the HTTP bindings, ping answers on gRPC) keeps its stream. Real mTLS on
// loopback, through a TCP relay the test can silence: connections kept open,
// nothing relayed either way, as with a hung peer or a black-holed network.
import { createServer, connect, type AddressInfo, type Server, type Socket } from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { A2AClient, A2AClientError, type A2AGrpcServer, type StreamEvent } from '../src/index.js';
import { serveGrpc, serveSlow, startHarness, type Harness } from './helpers/agents.js';

/** A loopback TCP relay to `target` that can go silent (and come back for new connections). */
class Relay {
  readonly #server: Server = createServer((c) => this.#accept(c));
  readonly #pairs = new Set<{ client: Socket; upstream: Socket }>();
  #silent = false;
  port = 0;

  constructor(private readonly target: number) {}

  async listen(): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      this.#server.once('error', reject);
      this.#server.listen(0, '127.0.0.1', () => resolve());
    });
    this.port = (this.#server.address() as AddressInfo).port;
  }

  /** Relays nothing more on any open connection, either way; new connections are accepted and left unanswered. */
  silence(): void {
    this.#silent = true;
    for (const p of this.#pairs) mute(p);
  }

  /** Drops the silenced connections and relays new ones again. */
  heal(): void {
    if (!this.#silent) return;
    this.#silent = false;
    for (const p of this.#pairs) destroy(p);
  }

  async close(): Promise<void> {
    this.#silent = true;
    for (const p of this.#pairs) destroy(p);
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  #accept(client: Socket): void {
    const upstream = connect(this.target, '127.0.0.1');
    const pair = { client, upstream };
    this.#pairs.add(pair);
    for (const s of [client, upstream]) {
      s.on('error', () => undefined);
      s.on('close', () => {
        client.destroy();
        upstream.destroy();
        this.#pairs.delete(pair);
      });
    }
    if (this.#silent) {
      mute(pair);
      return;
    }
    client.pipe(upstream);
    upstream.pipe(client);
  }
}

function destroy(p: { client: Socket; upstream: Socket }): void {
  p.client.destroy();
  p.upstream.destroy();
}

function mute(p: { client: Socket; upstream: Socket }): void {
  p.client.unpipe();
  p.upstream.unpipe();
  p.client.pause();
  p.upstream.pause();
}

const IDLE_MS = 600;

let h: Harness;
let grpc: A2AGrpcServer;
let http: Relay;
let grpcRelay: Relay;
/** Release of each waiting `slow` task, by task id. */
const waiting = new Map<string, () => void>();

beforeAll(async () => {
  // Heartbeats 4 times per idle limit: a quiet task is never quiet on the wire.
  h = await startHarness((a2a) => serveSlow(a2a, (id, release) => waiting.set(id, release)), {
    heartbeatMs: IDLE_MS / 4,
  });
  grpc = await serveGrpc(h);
  http = new Relay(Number(new URL(h.url).port));
  await http.listen();
  grpcRelay = new Relay(Number((grpc.url ?? '').split(':').pop()));
  await grpcRelay.listen();
  // The card, fetched through the relay, names the relay for every binding.
  h.a2a.advertiseGrpc(`127.0.0.1:${grpcRelay.port}`);
});

afterEach(() => {
  http.heal();
  grpcRelay.heal();
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
        /streamIdleTimeoutMs must be 0 \(no limit\) or a positive whole number/,
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
        // Four idle limits without an event: heartbeats (HTTP) or ping answers (gRPC) keep it.
        await sleep(4 * IDLE_MS);
        release?.();
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
          http.silence();
          grpcRelay.silence();
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
        http.silence();
        grpcRelay.silence();
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
        http.silence();
        grpcRelay.silence();
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

function slowMessage() {
  return {
    messageId: crypto.randomUUID(),
    role: 'ROLE_USER' as const,
    parts: [{ text: 'go' }],
    metadata: { skill: 'slow' },
  };
}
