// A gRPC call the server refused before it ran is sent once more. A server
// closing with grace (A2AGrpcServer.close: an HTTP/2 GOAWAY) refuses the
// calls on their way to it (above the GOAWAY's last stream id), which never
// reached a handler (RFC 9113 §8.7); the transport failed them ("Stream
// refused by server", TRANSPORT_FAILED), 5 to 29 of 120 calls racing an
// agent's stop(). grpc-js's transparent retry now sends each once more, on a
// new connection, within the call's deadline, and the call fails as that
// attempt did if it fails too. A call that may have run is never sent again,
// whatever a DNS TXT service config says (A2A SendMessage is not
// idempotent): with one offering a retry policy, a unary call cut while
// running ran again. Real mTLS on loopback: the closing server and a second
// one, behind a TCP relay that sends each new connection where the test says.
import { promises as dns } from 'node:dns';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { authorizeMemberOf } from '@weave/identity';
import { TRUST_DOMAIN } from '@weave/test-support';
import { TcpRelay } from '@weave/test-support/tcp-relay';
import {
  A2AClientError,
  A2AGrpcServer,
  buildMessage,
  grpcTransportFactory,
  type ClientTransport,
} from '../src/index.js';
import { startHarness } from './helpers/agents.js';

/** How soon a failure that waits for nothing must come. */
const PROMPT_MS = 1_000;

const cleanup: Array<() => Promise<void>> = [];
afterEach(async () => {
  vi.restoreAllMocks();
  for (const c of cleanup.splice(0).reverse()) await c();
});

/**
 * A harness with two skills, `count` (answers at once) and `hold` (runs
 * until its task is canceled), both recording each message they run; two
 * gRPC servers on its handler, `a` and `b`; a relay to `a`; and a transport
 * to the relay (at `host`) with one call answered, so its connection is open.
 */
async function setup(host = '127.0.0.1') {
  const ran: string[] = [];
  const h = await startHarness((a2a) => {
    a2a.registerTaskHandler({ id: 'count', name: 'count', description: 'count', tags: [] }, (ctx) => {
      ran.push(ctx.message.messageId);
      return 'counted';
    });
    a2a.registerTaskHandler({ id: 'hold', name: 'hold', description: 'hold', tags: [] }, async (ctx) => {
      ran.push(ctx.message.messageId);
      await new Promise<void>((resolve) =>
        ctx.signal.addEventListener('abort', () => resolve(), { once: true }),
      );
      return 'held';
    });
  });
  cleanup.push(() => h.close());
  const serve = async () => {
    const server = new A2AGrpcServer({
      handler: h.a2a.handler,
      identity: h.server.identity,
      authorize: authorizeMemberOf(TRUST_DOMAIN),
    });
    const port = Number((await server.listen()).url.split(':').pop());
    cleanup.push(() => server.close(0));
    return { server, port };
  };
  const a = await serve();
  const b = await serve();
  const relay = new TcpRelay(a.port);
  await relay.listen();
  cleanup.push(async () => {
    relay.release();
    await relay.close();
  });
  const t: ClientTransport = grpcTransportFactory.create(
    { url: `${host}:${relay.port}`, protocolBinding: 'GRPC', protocolVersion: '1.0' },
    { dispatcher: h.agent, headers: {}, maxResponseBytes: 1 << 20, streamIdleTimeoutMs: 0 },
  );
  cleanup.push(() => t.close());
  await t.call('SendMessage', { message: buildMessage('count', 'warm-up') }, { timeoutMs: 5_000 });
  ran.length = 0;
  return { a, b, relay, t, ran };
}

type Setup = Awaited<ReturnType<typeof setup>>;

interface Outcome {
  readonly messageId: string;
  /** What the call answered (a stream: its events), or its error. */
  readonly result: unknown;
  readonly ok: boolean;
  readonly ms: number;
}

/** Sends `skill` as a unary SendMessage or a SendStreamingMessage, read to its end. */
async function send(
  t: ClientTransport,
  how: 'unary' | 'stream',
  skill: string,
  timeoutMs = 5_000,
): Promise<Outcome> {
  const message = buildMessage(skill, 'x');
  const started = Date.now();
  const done = (result: unknown, ok: boolean): Outcome => ({
    messageId: message.messageId,
    result,
    ok,
    ms: Date.now() - started,
  });
  try {
    if (how === 'unary') return done(await t.call('SendMessage', { message }, { timeoutMs }), true);
    const events: unknown[] = [];
    for await (const e of t.stream('SendStreamingMessage', { message }, { timeoutMs })) events.push(e.value);
    return done(events, true);
  } catch (err) {
    return done(err, false);
  }
}

/**
 * Sends `n` calls and, in the same turn of the event loop, closes `a` with
 * grace: the calls are on their way when its GOAWAY goes out, above its last
 * stream id, and refused. `then` runs right after (where new connections go).
 */
async function sendWhileClosing(
  s: Setup,
  how: 'unary' | 'stream',
  then: () => void,
  n = 4,
  timeoutMs?: number,
): Promise<Outcome[]> {
  const calls = Array.from({ length: n }, () => send(s.t, how, 'count', timeoutMs));
  const closing = s.a.server.close(2_000);
  then();
  const outcomes = await Promise.all(calls);
  await closing;
  return outcomes;
}

const textOf = (o: Outcome): string => JSON.stringify(o.result);

describe.each(['unary', 'stream'] as const)('%s: a call refused by a closing server’s GOAWAY', (how) => {
  it('is sent once more on a new connection, answered there, and run once', async () => {
    const s = await setup();
    const outcomes = await sendWhileClosing(s, how, () => {
      s.relay.target = s.b.port;
    });
    for (const o of outcomes) {
      expect(o.ok, String(o.result)).toBe(true);
      expect(textOf(o)).toContain('counted');
    }
    // Each ran once, on the second server: the first never ran them.
    expect([...s.ran].sort()).toEqual(outcomes.map((o) => o.messageId).sort());
    expect(s.relay.accepted).toBe(2);
  });

  it('whose second attempt fails too ends with that failure, at once, run nowhere', async () => {
    const s = await setup();
    const outcomes = await sendWhileClosing(s, how, () => s.relay.refuse());
    for (const o of outcomes) {
      expect(o.result).toBeInstanceOf(A2AClientError);
      expect(o.result).toMatchObject({ code: 'TRANSPORT_FAILED' });
      // The second attempt's failure: its connection reset by the relay.
      expect((o.result as Error).message).toMatch(/ECONNRESET/);
      expect(o.ms).toBeLessThan(PROMPT_MS);
    }
    expect(s.ran).toEqual([]);
    // The second attempt went out, on a new connection, which the relay reset.
    expect(s.relay.refused).toBeGreaterThanOrEqual(1);
  });

  it('whose second attempt cannot connect ends at the call’s own deadline', async () => {
    const s = await setup();
    const outcomes = await sendWhileClosing(s, how, () => s.relay.hold(), 2, 400);
    for (const o of outcomes) {
      expect(o.result).toBeInstanceOf(A2AClientError);
      expect(o.result).toMatchObject({ code: 'DEADLINE_EXCEEDED' });
      expect(o.ms).toBeGreaterThanOrEqual(380);
      expect(o.ms).toBeLessThan(400 + PROMPT_MS);
    }
    expect(s.ran).toEqual([]);
    expect(s.relay.held).toBeGreaterThanOrEqual(1);
  });
});

describe.each(['unary', 'stream'] as const)('%s: a call that may have run is not sent again', (how) => {
  /** A `hold` call running on `a` when `a` cuts it at its grace, new connections going to `b`. */
  async function cutWhileRunning(s: Setup): Promise<Outcome> {
    const call = send(s.t, how, 'hold', 2_000);
    for (let i = 0; i < 500 && s.ran.length === 0; i++) await new Promise((r) => setTimeout(r, 2));
    expect(s.ran).toHaveLength(1);
    s.relay.target = s.b.port;
    await s.a.server.close(100);
    return call;
  }

  it('cut with its connection: TRANSPORT_FAILED at once, run once', async () => {
    const s = await setup();
    const o = await cutWhileRunning(s);
    expect(o.result).toBeInstanceOf(A2AClientError);
    expect(o.result).toMatchObject({
      code: 'TRANSPORT_FAILED',
      message: expect.stringMatching(/Connection dropped/),
    });
    expect(o.ms).toBeLessThan(100 + PROMPT_MS);
    expect(s.ran).toHaveLength(1);
    expect(s.relay.accepted).toBe(1);
  });

  it('not even when DNS offers a retry policy (a TXT service config)', async () => {
    // The service config a DNS TXT record may give grpc-js: retry UNAVAILABLE, 5 attempts.
    const retryAll = {
      methodConfig: [
        {
          name: [{}],
          retryPolicy: {
            maxAttempts: 5,
            initialBackoff: '0.01s',
            maxBackoff: '0.01s',
            backoffMultiplier: 1,
            retryableStatusCodes: ['UNAVAILABLE'],
          },
        },
      ],
    };
    vi.spyOn(dns, 'resolveTxt').mockResolvedValue([
      [`grpc_config=${JSON.stringify([{ serviceConfig: retryAll }])}`],
    ]);
    // A host name, not an IP: grpc-js looks its TXT record up.
    const s = await setup('localhost');
    const o = await cutWhileRunning(s);
    // Sent again, a retry policy would have run it again on `b`.
    expect(s.ran).toHaveLength(1);
    expect(o.result).toMatchObject({
      code: 'TRANSPORT_FAILED',
      message: expect.stringMatching(/Connection dropped/),
    });
    expect(s.relay.accepted).toBe(1);
  });
});
