// The same server plugin on @weave/transport's HTTP/2 mTLS server (HTTP/1.1 fallback on).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AllowAllEnforcer } from '@weave/authz';
import { authorizeMemberOf } from '@weave/identity';
import { SecureChannel } from '@weave/transport';
import { createMtlsServer, type MtlsFastifyInstance } from '@weave/transport/server';
import { A2AClient, A2AError, A2AServer, type StreamEvent } from '../src/index.js';
import { baseUrl, createPki, type Pki } from '@weave/test-support';
import { TcpRelay } from '@weave/test-support/tcp-relay';

let pki: Pki;
let app: MtlsFastifyInstance;
let a2a: A2AServer;
let channel: SecureChannel;
let url: string;
const versions = new Set<string>();
const BULK = 3_000;

beforeAll(async () => {
  pki = await createPki();
  const server = await pki.workload('/agent/h2');
  const client = await pki.workload('/agent/client');
  a2a = new A2AServer({
    card: { name: 'h2', description: '', version: '1' },
    selfId: server.id,
    enforcer: new AllowAllEnforcer({ audit: { record: () => undefined } }),
    // Each heartbeat pings the connection too: a reader slowed by flow control must still answer.
    heartbeatMs: 100,
  });
  a2a.registerTaskHandler('steps', async (ctx) => {
    for (let i = 0; i < 3; i++)
      ctx.publishArtifact({ artifactId: 'o', parts: [{ text: `${i}` }] }, { append: i > 0 });
    return undefined;
  });
  // Far more than HTTP/2 flow control lets through unread (the stream's window and the client's buffer).
  a2a.registerTaskHandler('bulk', async (ctx) => {
    for (let i = 0; i < BULK; i++) ctx.publishMessage(`${i} ${'x'.repeat(200)}`);
    return undefined;
  });
  app = createMtlsServer({
    identity: server.identity,
    authorize: authorizeMemberOf('test.weave'),
    config: { httpVersion: 'http2' },
  });
  app.addHook('onRequest', (req, _reply, done) => {
    versions.add(req.raw.httpVersion);
    done();
  });
  await app.register(a2a.plugin);
  await app.listen({ port: 0, host: '127.0.0.1' });
  url = baseUrl(app);
  channel = new SecureChannel(client.identity, server.id, { httpVersion: 'http2', circuitBreaker: false });
});
afterAll(async () => {
  await channel.close();
  await a2a.close();
  await app.close();
  await pki.close();
});

describe('over HTTP/2', () => {
  it('sends and streams', async () => {
    const client = new A2AClient({ dispatcher: channel });
    const task = await client.sendTask(url, 'steps', 'x');
    expect(task.artifacts?.[0]?.parts.map((p) => p.text)).toEqual(['0', '1', '2']);
    const events: StreamEvent[] = [];
    for await (const e of client.streamTaskUpdates(url, 'steps', 'y')) events.push(e);
    expect(events.map((e) => e.eventId)).toEqual(['1', '2', '3', '4', '5', '6']);
    expect([...versions]).toEqual(['2.0']);
  });

  it('a reader slower than streamIdleTimeoutMs is not taken as quiet: only its waits for data count', async () => {
    const client = new A2AClient({ dispatcher: channel, streamIdleTimeoutMs: 300 });
    let n = 0;
    for await (const e of client.sendStreamingMessage(url, {
      message: {
        messageId: crypto.randomUUID(),
        role: 'ROLE_USER',
        parts: [{ text: 'go' }],
        metadata: { skill: 'bulk' },
      },
    })) {
      // Holds the first event for three idle limits (nine heartbeats, each with a PING):
      // flow control stops the server meanwhile, and the stream is not taken for a hung client's.
      if (n++ === 0) await new Promise((r) => setTimeout(r, 900));
      void e;
    }
    // The task, WORKING, every message, COMPLETED.
    expect(n).toBe(BULK + 3);
  });
});

describe('HTTP/2 heartbeats', () => {
  it('let go of a subscriber whose client stopped answering PINGs (a hung process whose kernel still takes the bytes)', async () => {
    const server = await pki.workload('/agent/h2-quiet');
    const client = await pki.workload('/agent/h2-client');
    const released: Array<() => void> = [];
    const quiet = new A2AServer({
      card: { name: 'h2-quiet', description: '', version: '1' },
      selfId: server.id,
      enforcer: new AllowAllEnforcer({ audit: { record: () => undefined } }),
      heartbeatMs: 200,
      // One subscriber per task: a subscriber kept for a gone client blocks the next.
      limits: { maxSubscribersPerTask: 1 },
    });
    quiet.registerTaskHandler('quiet', async (ctx) => {
      await new Promise<void>((resolve) => {
        released.push(resolve);
        ctx.signal.addEventListener('abort', () => resolve());
      });
      return undefined;
    });
    const h2 = createMtlsServer({
      identity: server.identity,
      authorize: authorizeMemberOf('test.weave'),
      config: { httpVersion: 'http2' },
    });
    await h2.register(quiet.plugin);
    await h2.listen({ port: 0, host: '127.0.0.1' });
    const direct = baseUrl(h2);
    // The hung client's connection goes through a relay that stops reading: its kernel
    // still takes what the server writes (heartbeats fit), nothing answers a PING.
    const relay = new TcpRelay(Number(new URL(direct).port));
    await relay.listen();
    const relayed = new SecureChannel(client.identity, server.id, {
      httpVersion: 'http2',
      circuitBreaker: false,
    });
    const straight = new SecureChannel(client.identity, server.id, {
      httpVersion: 'http2',
      circuitBreaker: false,
    });
    const ac = new AbortController();
    try {
      const hung = new A2AClient({ dispatcher: relayed, streamIdleTimeoutMs: 0 });
      const events = hung.sendStreamingMessage(
        `https://127.0.0.1:${relay.port}/`,
        {
          message: {
            messageId: crypto.randomUUID(),
            role: 'ROLE_USER',
            parts: [{ text: 'x' }],
            metadata: { skill: 'quiet' },
          },
        },
        { signal: ac.signal },
      );
      const first = (await events.next()).value as StreamEvent;
      const taskId = (first as { task: { id: string } }).task.id;
      relay.silence('pause');
      // The next subscriber, on a live connection, is taken once the server has let the hung one go.
      const other = new A2AClient({ dispatcher: straight });
      const end = Date.now() + 5_000;
      let got: StreamEvent | undefined;
      for (;;) {
        const sub = other.subscribeToTask(direct, taskId);
        try {
          got = (await sub.next()).value as StreamEvent;
          break;
        } catch (err) {
          // Still held: UNSUPPORTED_OPERATION (the task's one subscriber).
          expect(err).toBeInstanceOf(A2AError);
          expect(err).toMatchObject({ code: 'UNSUPPORTED_OPERATION' });
          if (Date.now() > end) throw new Error('the hung subscriber was never let go', { cause: err });
          await new Promise((r) => setTimeout(r, 100));
        } finally {
          await sub.return(undefined);
        }
      }
      expect(got).toMatchObject({ task: { id: taskId } });
      // A live client answers the PINGs: its stream stays through ten heartbeats and sees the task end.
      const live = other.sendStreamingMessage(direct, {
        message: {
          messageId: crypto.randomUUID(),
          role: 'ROLE_USER',
          parts: [{ text: 'y' }],
          metadata: { skill: 'quiet' },
        },
      });
      expect(await live.next()).toMatchObject({ done: false });
      await new Promise((r) => setTimeout(r, 2_000));
      for (const r of released.splice(0)) r();
      const rest: StreamEvent[] = [];
      for await (const e of live) rest.push(e);
      expect(rest.at(-1)).toMatchObject({ statusUpdate: { status: { state: 'TASK_STATE_COMPLETED' } } });
    } finally {
      ac.abort();
      for (const r of released) r();
      await relay.close();
      await relayed.close();
      await straight.close();
      await quiet.close();
      await h2.close();
    }
  });
});
