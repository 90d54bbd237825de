// destroy() fails the requests in flight and ends their connections even when
// the inner Agent holding them is already closing: after close() (an agent's
// stop gives close() a grace period, then destroys), or retired by a rotation.
// undici 7's Agent forgets its pools as soon as it is closed, so its own
// destroy() then reached none of them: the request ran on over the live mTLS
// connection until the server answered (up to requestTimeoutMs).
//
// A request made on a closed or destroyed channel is refused with the
// transport's CHANNEL_CLOSED: it used to fail with opossum's untyped "The
// circuit has been shutdown." (breaker on) or undici's ClientClosedError /
// ClientDestroyedError (breaker off), depending on the settings.
import { once } from 'node:events';
import type { TLSSocket } from 'node:tls';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { errors, request } from 'undici';
import { authorizeId } from '@weave/identity';
import type { DevCaIdentityProvider } from '@weave/identity/dev';
import { SecureChannel, TransportError } from '../src/index.js';
import { createMtlsServer } from '../src/server.js';
import { settledWithin as within } from '@weave/test-support/tcp-relay';
import { makeTd, portOf, provider, removeTempDirs } from '@weave/test-support/tls-fixtures';

/** How long destroy() may take to fail the request: before the fix it waited for the server's answer. */
const PROMPT_MS = 2_000;

let serverId: DevCaIdentityProvider;
let clientId: DevCaIdentityProvider;
const closers: (() => Promise<unknown>)[] = [];

beforeAll(async () => {
  const td = await makeTd('a.test');
  serverId = await provider(td, '/server');
  clientId = await provider(td, '/client');
});

afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c();
});

afterAll(async () => {
  await serverId.close();
  await clientId.close();
  removeTempDirs();
});

/** A server whose `/held` handler answers only once the test releases it. */
async function startHoldingServer(httpVersion: 'http1.1' | 'http2') {
  let release!: () => void;
  const released = new Promise<void>((resolve) => (release = resolve));
  let entered!: () => void;
  const inHandler = new Promise<void>((resolve) => (entered = resolve));
  let answered!: (deliverable: boolean) => void;
  /** Whether the handler's late answer had a live response stream to go to. */
  const lateAnswer = new Promise<boolean>((resolve) => (answered = resolve));
  const connections: TLSSocket[] = [];
  /** How many requests reached a handler. */
  let hits = 0;
  const app = createMtlsServer({
    identity: serverId,
    authorize: authorizeId(clientId.id),
    config: { httpVersion },
  });
  app.server.on('secureConnection', (s: TLSSocket) => connections.push(s));
  app.addHook('onRequest', async () => {
    hits++;
  });
  app.get('/ok', async () => ({ ok: true }));
  app.get('/held', async (_req, reply) => {
    entered();
    await released;
    // HTTP/2's compatibility response has no `destroyed` of its own: its stream has.
    const raw = reply.raw as typeof reply.raw & { stream?: { destroyed: boolean } };
    answered(!(raw.stream ?? raw).destroyed);
    return { late: true };
  });
  await app.listen({ port: 0, host: '127.0.0.1' });
  closers.push(() => app.close());
  const base = `https://127.0.0.1:${portOf(app.server)}`;
  return {
    url: `${base}/held`,
    okUrl: `${base}/ok`,
    hits: () => hits,
    inHandler,
    release,
    lateAnswer,
    connections,
  };
}

function channel(httpVersion: 'http1.1' | 'http2', breaker = false): SecureChannel {
  const ch = new SecureChannel(clientId, serverId.id, {
    httpVersion,
    requestTimeoutMs: 120_000,
    retry: { retries: 0 },
    circuitBreaker: breaker ? {} : false,
  });
  closers.push(() => ch.destroy());
  return ch;
}

describe('destroy() of a channel whose Agent is already closing', () => {
  const cases = [
    { httpVersion: 'http1.1', how: 'close()' },
    { httpVersion: 'http2', how: 'close()' },
    { httpVersion: 'http1.1', how: 'a rotation' },
  ] as const;
  for (const { httpVersion, how } of cases) {
    it(`${httpVersion}: after ${how}, fails the held request at once and closes its connection`, async () => {
      const srv = await startHoldingServer(httpVersion);
      const ch = channel(httpVersion);
      // Cleanup runs last to first: a failed case must not leave the handler (and the server's close) waiting.
      closers.push(async () => srv.release());
      const res = ch.get(srv.url).then(
        () => 'answered',
        (e: unknown) => e,
      );
      await srv.inHandler;
      expect(srv.connections).toHaveLength(1);
      const serverSaw = once(srv.connections[0]!, 'close');
      let closing: Promise<void> | undefined;
      if (how === 'close()') {
        closing = ch.close();
      } else {
        const rotated = new Promise((resolve) => ch.onRotated(resolve));
        await clientId.rotate();
        await rotated;
      }
      // The graceful close is waiting for the held request.
      expect(await within(res, 100)).toBe('still pending');

      expect(await within(ch.destroy(), PROMPT_MS)).toBeUndefined();
      const err = await within(res, PROMPT_MS);
      expect(err).toBeInstanceOf(errors.ClientDestroyedError);
      await serverSaw;
      // The close() still pending settles with the destroy.
      if (closing) expect(await within(closing, PROMPT_MS)).toBeUndefined();

      srv.release();
      // The handler's answer is written to no connection.
      expect(await srv.lateAnswer).toBe(false);
    }, 10_000);
  }
});

describe('a request on a closed channel', () => {
  for (const breaker of [true, false]) {
    for (const how of ['close()', 'destroy()'] as const) {
      it(`circuit breaker ${breaker ? 'on' : 'off'}: after ${how}, is refused with CHANNEL_CLOSED and reaches no server`, async () => {
        const srv = await startHoldingServer('http1.1');
        const ch = channel('http1.1', breaker);
        // A connection to the server exists: the channel is closed, not unused.
        const first = await ch.get(srv.okUrl);
        await first.body.dump();
        expect(srv.hits()).toBe(1);
        if (how === 'close()') await ch.close();
        else await ch.destroy();

        // Both ways in: request() (get, post…) and dispatch() (undici.request, fetch, the A2A client).
        for (const send of [() => ch.get(srv.okUrl), () => request(srv.okUrl, { dispatcher: ch })]) {
          const err = await within(send(), PROMPT_MS);
          expect(err).toBeInstanceOf(TransportError);
          expect(err).toMatchObject({ code: 'CHANNEL_CLOSED' });
          expect((err as Error).message).toMatch(/is closed/);
        }
        expect(srv.hits()).toBe(1);
      }, 10_000);
    }
  }
});
