// Hostile push receivers and the callers who register them: whatever a
// webhook does (stall a TLS handshake, never resolve, redirect, never answer)
// and however many tasks aim at it, the sender holds bounded time, sockets
// and memory, says what it dropped (counted, logged at a bounded rate), keeps
// the other receivers going, and stops at once when closed.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import {
  createServer as createTcpServer,
  type AddressInfo,
  type Server as TcpServer,
  type Socket,
} from 'node:net';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { Agent, interceptors } from 'undici';
import { createWebhookSender, type StreamResponse, type WebhookSender } from '../src/index.js';

const allowAddresses = ['127.0.0.0/8', '::1'];
const servers: Array<Server | TcpServer> = [];
/** Connections the raw TCP servers took (they have no closeAllConnections). */
const sockets: Socket[] = [];
const senders: WebhookSender[] = [];
const agents: Agent[] = [];

afterEach(() => {
  for (const s of senders.splice(0)) s.close();
});
afterAll(async () => {
  for (const s of servers) (s as Server).closeAllConnections?.();
  for (const c of sockets) c.destroy();
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  // destroy, not close: a stalled handshake keeps undici connecting until its own timeout.
  await Promise.all(agents.map((a) => a.destroy()));
});

async function listen<S extends Server | TcpServer>(server: S, host = '127.0.0.1'): Promise<number> {
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, host, r));
  return (server.address() as AddressInfo).port;
}

/** A webhook on loopback; `answer` gets each request once its body is in, and answers it or holds it. */
async function receiver(
  answer: (req: IncomingMessage, res: ServerResponse) => void = (_q, res) => void res.end(),
  host = '127.0.0.1',
): Promise<{ url: string; hits: number; open: number; maxOpen: number }> {
  const r = { url: '', hits: 0, open: 0, maxOpen: 0 };
  const server = createServer((req, res) => {
    r.hits++;
    r.open++;
    r.maxOpen = Math.max(r.maxOpen, r.open);
    res.on('close', () => r.open--);
    req.resume();
    req.on('end', () => answer(req, res));
  });
  r.url = `http://${host}:${await listen(server, host)}/hook`;
  return r;
}

function sender(options: Partial<Parameters<typeof createWebhookSender>[0]> = {}): {
  send: WebhookSender;
  lines: Array<{ msg: string; [k: string]: unknown }>;
} {
  const lines: Array<{ msg: string; [k: string]: unknown }> = [];
  const agent = new Agent();
  agents.push(agent);
  const send = createWebhookSender({
    dispatcher: agent,
    allowAddresses,
    initialBackoffMs: 10,
    logger: pino({ level: 'warn' }, { write: (l: string) => void lines.push(JSON.parse(l)) }),
    ...options,
  });
  senders.push(send);
  return { send, lines };
}

const event = (task: string, n: number): StreamResponse => ({
  statusUpdate: { taskId: task, contextId: 'c', status: { state: 'TASK_STATE_WORKING' }, metadata: { n } },
});

/** `p`'s outcome, or 'pending' when it has none after `ms`. */
function within<T>(p: Promise<T>, ms: number): Promise<T | 'pending'> {
  return Promise.race([p, new Promise<'pending'>((r) => setTimeout(() => r('pending'), ms).unref())]);
}

describe('a receiver that stalls an attempt', () => {
  it('a TLS handshake that never ends is cut at timeoutMs, not at the dispatcher connect timeout (10 s)', async () => {
    // Takes the connection and never answers the ClientHello.
    const port = await listen(createTcpServer((c) => void sockets.push(c)));
    const { send, lines } = sender({ timeoutMs: 300, maxAttempts: 2 });
    const started = Date.now();
    await send({ taskId: 't', id: 'c', url: `https://127.0.0.1:${port}/hook` }, event('t', 1));
    expect(await within(send.idle(), 3000)).not.toBe('pending');
    expect(Date.now() - started).toBeLessThan(3000);
    expect(send.stats()).toMatchObject({ attempts: 2, failed: 1, inFlight: 0, queued: 0 });
    expect(lines.map((l) => (l.err as { message: string }).message)).toEqual([
      'webhook did not answer within 300 ms',
    ]);
  });

  it('a host whose lookup never answers fails the attempt at timeoutMs; checkUrl is bounded too', async () => {
    const never = () => new Promise<string[]>(() => undefined);
    const { send, lines } = sender({ timeoutMs: 200, maxAttempts: 2, lookup: never });
    await send({ taskId: 't', id: 'c', url: 'https://hooks.example.test/x' }, event('t', 1));
    expect(await within(send.idle(), 2000)).not.toBe('pending');
    // Not a refusal: the name may resolve next time, so it was retried.
    expect(send.stats()).toMatchObject({ failed: 1, retries: 1, refused: 0, attempts: 0 });
    expect((lines[0]?.err as { message: string }).message).toBe(
      'webhook host hooks.example.test did not resolve within 200 ms',
    );
    const checked = await within(
      send.checkUrl('https://hooks.example.test/x').catch((e: unknown) => e),
      2000,
    );
    expect(checked).toMatchObject({ code: 'PUSH_TIMEOUT' });
  });

  it('a redirect is not followed even through a dispatcher with a redirect interceptor', async () => {
    // 127.0.0.2 is not allowed: following the 307 would reach an address the guard never checked.
    const inside = await receiver(undefined, '127.0.0.2');
    const hook = await receiver((_q, res) => void res.writeHead(307, { location: inside.url }).end());
    const agent = new Agent();
    agents.push(agent);
    const { send } = sender({
      allowAddresses: ['127.0.0.1'],
      dispatcher: agent.compose(interceptors.redirect({ maxRedirections: 5 })),
    });
    await send({ taskId: 't', id: 'c', url: hook.url }, event('t', 1));
    await send.idle();
    expect(hook.hits).toBe(1);
    expect(inside.hits).toBe(0);
    expect(send.stats()).toMatchObject({ failed: 1, delivered: 0, retries: 0 });
  });
});

describe('many tasks aimed at slow receivers', () => {
  it('holds at most maxConcurrentPerReceiver requests at one receiver; another receiver is not held up', async () => {
    const held: ServerResponse[] = [];
    const slow = await receiver((_q, res) => void held.push(res));
    const fast = await receiver();
    const { send } = sender({ timeoutMs: 10_000, maxConcurrentPerReceiver: 4 });
    // 20 tasks × 16 configs: 320 queues, one event in flight each without a bound.
    for (let t = 0; t < 20; t++) {
      for (let c = 0; c < 16; c++)
        await send({ taskId: `t${t}`, id: `c${c}`, url: slow.url }, event(`t${t}`, 0));
    }
    await expect.poll(() => slow.open).toBe(4);
    await send({ taskId: 'other', id: 'c', url: fast.url }, event('other', 0));
    await expect.poll(() => fast.hits, { timeout: 1000 }).toBe(1);
    await new Promise((r) => setTimeout(r, 100));
    expect(slow.maxOpen).toBe(4);
    expect(send.stats()).toMatchObject({ inFlight: 4, queued: 320 });
    const release = setInterval(() => held.splice(0).forEach((res) => res.end()), 5);
    try {
      await send.idle();
    } finally {
      clearInterval(release);
    }
    expect(slow.maxOpen).toBe(4);
    expect(send.stats()).toMatchObject({ delivered: 321, dropped: 0 });
  });

  it('when slow receivers hold every place, a new receiver gets the next place freed, not their backlog', async () => {
    const held: ServerResponse[] = [];
    const slow = await Promise.all([0, 1, 2, 3].map(() => receiver((_q, res) => void held.push(res))));
    const fast = await receiver();
    const { send } = sender({ timeoutMs: 10_000, maxConcurrentDeliveries: 4, maxConcurrentPerReceiver: 2 });
    // 4 receivers × 8 tasks: each holds or waits for 2 places; 4 places in all.
    for (let t = 0; t < 8; t++) {
      for (const [i, s] of slow.entries())
        await send({ taskId: `t${t}`, id: `c${i}`, url: s.url }, event('t', t));
    }
    await expect.poll(() => held.length).toBe(4);
    await send({ taskId: 'other', id: 'c', url: fast.url }, event('other', 0));
    await new Promise((r) => setTimeout(r, 50));
    expect(fast.hits).toBe(0); // no place yet
    held.shift()!.end(); // one place freed: the receiver holding none gets it
    await expect.poll(() => fast.hits, { timeout: 1000 }).toBe(1);
    expect(send.stats().inFlight).toBeLessThanOrEqual(4);
  });

  it('bounds the events queued in all (maxQueuedEvents): the fullest receiver loses its oldest, others none; drops are logged at a bounded rate', async () => {
    const stalled = await receiver(() => undefined);
    const fast = await receiver();
    const { send, lines } = sender({ timeoutMs: 10_000, maxQueuedEvents: 100 });
    for (let t = 0; t < 50; t++) {
      for (let c = 0; c < 16; c++) {
        for (let e = 0; e < 5; e++)
          await send({ taskId: `t${t}`, id: `c${c}`, url: stalled.url }, event('t', e));
      }
    }
    expect(send.stats()).toMatchObject({ queued: 100, dropped: 50 * 16 * 5 - 100 });
    for (let e = 0; e < 20; e++) await send({ taskId: 'other', id: 'c', url: fast.url }, event('other', e));
    await expect.poll(() => fast.hits, { timeout: 1000 }).toBe(20);
    // Each made room by dropping one of the stalled receiver's, and is delivered.
    expect(send.stats()).toMatchObject({ queued: 80, dropped: 50 * 16 * 5 - 100 + 20, delivered: 20 });
    // 3 900 drops, 10 lines; the counters have every one.
    const drops = lines.filter((l) => l.msg.includes('dropped'));
    expect(drops).toHaveLength(10);
    expect(drops[0]).toMatchObject({ config: { url: stalled.url } });
  });
});

describe('close()', () => {
  it('with deliveries pending: counts them dropped in one line, cuts the attempts short, and idle() resolves at once', async () => {
    const stalled = await receiver(() => undefined);
    const { send, lines } = sender({ timeoutMs: 60_000, maxAttempts: 5 });
    for (let t = 0; t < 10; t++) {
      for (let e = 0; e < 5; e++) await send({ taskId: `t${t}`, id: 'c', url: stalled.url }, event('t', e));
    }
    await expect.poll(() => stalled.open).toBe(8); // maxConcurrentPerReceiver
    send.close();
    expect(await within(send.idle(), 1000)).not.toBe('pending');
    await send({ taskId: 'late', id: 'c', url: stalled.url }, event('late', 0));
    expect(send.stats()).toMatchObject({ dropped: 51, failed: 0, queued: 0, inFlight: 0 });
    expect(lines.filter((l) => l.msg === 'a2a: push sender closed; queued events dropped')).toEqual([
      expect.objectContaining({ dropped: 42, aborted: 8 }),
    ]);
    await expect.poll(() => stalled.open).toBe(0);
  });
});
