// Push delivery (§4.3.3, §13.2): the SSRF guard refuses internal addresses
// before any connection; at-least-once delivery retries with exponential
// backoff, keeps a task's events in order, bounds each queue, never follows a
// redirect, and a dead receiver holds up neither the task nor other receivers.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, afterEach, describe, expect, it, vi } from 'vitest';
import { pino } from 'pino';
import { Agent, type Dispatcher } from 'undici';
import {
  A2AClient,
  A2AConfigError,
  PushUrlRefusedError,
  checkWebhookUrl,
  createWebhookSender,
  redactPushConfig,
  redactUrl,
  type StreamResponse,
  type TaskPushNotificationConfig,
  type WebhookSender,
} from '../src/index.js';
import { startHarness } from './helpers/agents.js';

/** An undici Agent that counts what is dispatched through it: 0 means no connection was even attempted. */
class CountingAgent extends Agent {
  dispatched = 0;
  override dispatch(opts: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean {
    this.dispatched++;
    return super.dispatch(opts, handler);
  }
}

interface Hit {
  at: number;
  headers: IncomingMessage['headers'];
  body: StreamResponse;
}

const servers: Server[] = [];
const senders: WebhookSender[] = [];
const agents: Agent[] = [];

/** A plain HTTP webhook on loopback; `answer` picks the status of each request (in arrival order). */
async function receiver(
  answer: (n: number, res: ServerResponse) => number | undefined = () => 200,
): Promise<{ url: string; hits: Hit[] }> {
  const hits: Hit[] = [];
  const server = createServer((req, res) => {
    let data = '';
    req.on('data', (c: Buffer) => (data += c.toString('utf8')));
    req.on('end', () => {
      hits.push({ at: Date.now(), headers: req.headers, body: JSON.parse(data) as StreamResponse });
      const status = answer(hits.length, res);
      if (status !== undefined) res.writeHead(status).end();
    });
  });
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`, hits };
}

function sender(options: Partial<Parameters<typeof createWebhookSender>[0]> = {}): {
  send: WebhookSender;
  agent: CountingAgent;
} {
  const agent = new CountingAgent();
  agents.push(agent);
  const send = createWebhookSender({ dispatcher: agent, initialBackoffMs: 50, ...options });
  senders.push(send);
  return { send, agent };
}

const status = (n: number): StreamResponse => ({
  statusUpdate: {
    taskId: 't1',
    contextId: 'c1',
    status: { state: n < 3 ? 'TASK_STATE_WORKING' : 'TASK_STATE_COMPLETED' },
    metadata: { n },
  },
});

/** The `n` a test event carries. */
const seqOf = (e: StreamResponse): unknown => ('statusUpdate' in e ? e.statusUpdate.metadata?.n : undefined);

afterEach(() => {
  for (const s of senders.splice(0)) s.close();
});
afterAll(async () => {
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  await Promise.all(agents.map((a) => a.close()));
});

describe('SSRF guard', () => {
  it.each([
    ['http://169.254.169.254/latest/meta-data/', 'linkLocal'],
    ['https://10.0.0.1/', 'private'],
    ['https://192.168.1.10:8443/hook', 'private'],
    ['http://127.0.0.1:9/', 'loopback'],
    ['http://[::1]:9/', 'loopback'],
    ['http://[::ffff:10.0.0.1]/', 'private'],
    ['http://[fd00:ec2::254]/', 'uniqueLocal'],
    ['http://100.100.100.200/', 'carrierGradeNat'],
    ['http://168.63.129.16/', 'metadata'],
    ['http://0.0.0.0:80/', 'unspecified'],
  ])('refuses %s (%s) without a connection attempt', async (url, why) => {
    const err = await checkWebhookUrl(url).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PushUrlRefusedError);
    expect((err as PushUrlRefusedError).code).toBe('PUSH_URL_REFUSED');
    expect((err as Error).message).toContain(why);

    const { send, agent } = sender();
    await send({ taskId: 't1', id: 'c', url }, status(1));
    await send.idle();
    expect(send.stats()).toMatchObject({ refused: 1, failed: 1, delivered: 0, attempts: 0 });
    expect(agent.dispatched).toBe(0);
  });

  it('checks every address a name resolves to, and refuses user info and other schemes', async () => {
    const asked: string[] = [];
    const lookup = (h: string) => {
      asked.push(h);
      return Promise.resolve(['93.184.216.34', '10.1.2.3']);
    };
    await expect(checkWebhookUrl('https://hooks.example.com/x', { lookup })).rejects.toThrow(
      /10\.1\.2\.3 is a private/,
    );
    expect(asked).toEqual(['hooks.example.com']);
    await expect(
      checkWebhookUrl('https://hooks.example.com/x', { lookup: () => Promise.resolve(['93.184.216.34']) }),
    ).resolves.toMatchObject({ address: '93.184.216.34' });
    await expect(checkWebhookUrl('https://u:p@93.184.216.34/')).rejects.toThrow(/user info/);
    await expect(checkWebhookUrl('file:///etc/passwd')).rejects.toThrow(/not http/);
    // `localhost` goes through the system resolver: loopback, refused unless allowed.
    await expect(checkWebhookUrl('http://localhost:9/')).rejects.toThrow(/loopback/);
    await expect(
      checkWebhookUrl('http://localhost:9/', { allowAddresses: ['127.0.0.0/8', '::1'] }),
    ).resolves.toBeDefined();
  });

  it('an allow-list entry opens exactly its range', async () => {
    await expect(
      checkWebhookUrl('https://10.0.0.1/', { allowAddresses: ['10.0.0.0/30'] }),
    ).resolves.toBeDefined();
    await expect(checkWebhookUrl('https://10.0.0.9/', { allowAddresses: ['10.0.0.0/30'] })).rejects.toThrow(
      PushUrlRefusedError,
    );
    expect(() => createWebhookSender({ dispatcher: new Agent(), allowAddresses: ['not-an-ip'] })).toThrow(
      A2AConfigError,
    );
  });
});

describe('a push config with a refused URL', () => {
  it('is refused when created (-32602), the task does not run, and nothing is connected to', async () => {
    const { send, agent } = sender();
    let ran = 0;
    const h = await startHarness(
      (a2a) => {
        a2a.registerTaskHandler('steps', () => {
          ran++;
          return 'done';
        });
      },
      { push: { enabled: true, send } },
    );
    try {
      const client = new A2AClient({ dispatcher: h.agent });
      for (const url of ['http://169.254.169.254/latest/meta-data/', 'https://10.0.0.1/']) {
        const err = await client
          .sendMessage(h.url, {
            message: { messageId: `m-${url}`, role: 'ROLE_USER', parts: [{ text: 'go' }] },
            configuration: { taskPushNotificationConfig: { url } },
          })
          .catch((e: unknown) => e);
        expect(err).toMatchObject({ jsonRpcCode: -32602 });
        expect((err as Error).message).toMatch(/push notification URL refused/);
      }
      expect(ran).toBe(0);
      expect(agent.dispatched).toBe(0);
      expect(send.stats()).toMatchObject({ attempts: 0, queued: 0 });
    } finally {
      await h.close();
    }
  });
});

describe('delivery', () => {
  it('sends Authorization and the token, and never logs the secrets', async () => {
    const r = await receiver(() => 500);
    const lines: string[] = [];
    const logger = pino({ level: 'debug' }, { write: (l: string) => void lines.push(l) });
    const { send } = sender({ allowAddresses: ['127.0.0.0/8'], maxAttempts: 2, logger });
    const config: TaskPushNotificationConfig = {
      taskId: 't1',
      id: 'c',
      url: `${r.url}?sig=query-secret`,
      token: 'tok-secret',
      authentication: { scheme: 'Bearer', credentials: 'cred-secret' },
    };
    await send(config, status(1));
    await send.idle();
    expect(r.hits).toHaveLength(2);
    expect(r.hits[0]!.headers.authorization).toBe('Bearer cred-secret');
    expect(r.hits[0]!.headers['x-a2a-notification-token']).toBe('tok-secret');
    expect(r.hits[0]!.headers['content-type']).toBe('application/a2a+json');
    const logged = lines.join('\n');
    expect(lines.length).toBeGreaterThanOrEqual(2); // one retry notice, one failure
    expect(logged).not.toMatch(/cred-secret|tok-secret|query-secret/);
    expect(logged).toContain('[redacted]');
    expect(JSON.stringify(redactPushConfig(config))).not.toMatch(/secret/);
  });

  // A push config's URL is logged through redactUrl. One that does not parse
  // (a typo'd port) was shown as "(invalid URL)", which hides which receiver it
  // was; one that parses without a host (scheme `user:`) showed its password.
  it.each([
    ['https://user:s3cr3t@hooks.example:99999/cb?sig=s3cr3t', 'https://hooks.example:99999/cb?…'],
    ['https://user:s3/cr3t@hooks.example:99999/', 'https://hooks.example:99999/'],
    ['https://hooks.example:99999/cb?sig=x@y#s3cr3t', 'https://…'],
    ['user:s3cr3t@hooks.example', 'user:hooks.example'],
    ['https://user:s3cr3t@hooks.example/cb?sig=s3cr3t#f', 'https://hooks.example/cb?…'],
  ])('redactUrl(%s) is %s', (url, shown) => {
    expect(redactUrl(url)).toBe(shown);
    expect(JSON.stringify(redactPushConfig({ taskId: 't1', id: 'c', url }))).not.toContain('s3cr3t');
  });

  it('retries with exponential backoff and keeps the task order', async () => {
    const r = await receiver((n) => (n <= 2 ? 503 : 200));
    const { send } = sender({ allowAddresses: ['127.0.0.0/8'], initialBackoffMs: 200 });
    const config = { taskId: 't1', id: 'c', url: r.url };
    for (let n = 1; n <= 3; n++) await send(config, status(n));
    await send.idle();
    // 503, 503, then each event once, in order.
    expect(r.hits.map((h) => seqOf(h.body))).toEqual([1, 1, 1, 2, 3]);
    const gap1 = r.hits[1]!.at - r.hits[0]!.at;
    const gap2 = r.hits[2]!.at - r.hits[1]!.at;
    // Only lower bounds (a loaded machine adds delay, never removes it): the
    // first wait is 200 ms ± 20 %, the second doubled, so at least 320 ms —
    // more than the first can be at most (240 ms).
    expect(gap1).toBeGreaterThanOrEqual(155);
    expect(gap2).toBeGreaterThanOrEqual(315);
    expect(send.stats()).toMatchObject({ delivered: 3, retries: 2, failed: 0, queued: 0 });
  });

  it('a backoff at the longest timer stays within it, jitter included (a longer wait would end at once)', async () => {
    const r = await receiver(() => 503);
    const longest = 2 ** 31 - 1;
    const { send } = sender({
      allowAddresses: ['127.0.0.0/8'],
      initialBackoffMs: longest,
      maxBackoffMs: longest,
      maxAttempts: 2,
    });
    const timeouts = vi.spyOn(globalThis, 'setTimeout');
    // The top of the ±20 % jitter.
    const random = vi.spyOn(Math, 'random').mockReturnValue(0.999);
    try {
      await send({ taskId: 't1', id: 'c', url: r.url }, status(1));
      await vi.waitFor(() => expect(r.hits).toHaveLength(1));
      await vi.waitFor(() =>
        expect(timeouts.mock.calls.some(([, ms]) => (ms ?? 0) >= longest * 0.8)).toBe(true),
      );
      const waits = timeouts.mock.calls.map(([, ms]) => ms ?? 0).filter((ms) => ms >= longest * 0.8);
      expect(waits.every((ms) => ms <= longest)).toBe(true);
      // Still waiting: no second attempt within a moment.
      await new Promise((resolve) => setTimeout(resolve, 100));
      expect(r.hits).toHaveLength(1);
    } finally {
      random.mockRestore();
      timeouts.mockRestore();
    }
  });

  it('does not follow a redirect, and does not retry it', async () => {
    const target = await receiver();
    const r = await receiver((_n, res) => {
      res.writeHead(307, { location: target.url }).end();
      return undefined;
    });
    const { send } = sender({ allowAddresses: ['127.0.0.0/8'] });
    await send({ taskId: 't1', id: 'c', url: r.url }, status(1));
    await send.idle();
    expect(r.hits).toHaveLength(1);
    expect(target.hits).toHaveLength(0);
    expect(send.stats()).toMatchObject({ failed: 1, retries: 0 });
  });

  it('bounds each queue: a stuck receiver loses the oldest waiting events, not the newest', async () => {
    const held: ServerResponse[] = [];
    const r = await receiver((_n, res) => {
      held.push(res);
      return undefined;
    });
    const { send } = sender({ allowAddresses: ['127.0.0.0/8'], maxQueuePerTask: 3, timeoutMs: 10_000 });
    const config = { taskId: 't1', id: 'c', url: r.url };
    await send(config, status(1)); // in flight, held by the receiver
    await expect.poll(() => held.length).toBe(1);
    for (let n = 2; n <= 9; n++) await send(config, status(n));
    expect(send.stats()).toMatchObject({ dropped: 5, queued: 4 });
    const release = setInterval(() => held.splice(0).forEach((res) => res.writeHead(200).end()), 10);
    try {
      await send.idle();
    } finally {
      clearInterval(release);
    }
    expect(r.hits.map((h) => seqOf(h.body))).toEqual([1, 7, 8, 9]);
  });
});

describe('a dead receiver', () => {
  it('gets retries while the task completes on time and the other receiver gets every event', async () => {
    const dead = await receiver();
    await new Promise((r) => servers.pop()!.close(r)); // nothing listens there any more
    const live = await receiver();
    const { send } = sender({ allowAddresses: ['127.0.0.0/8'], initialBackoffMs: 100, maxAttempts: 4 });
    const h = await startHarness(
      (a2a) => {
        a2a.registerTaskHandler('steps', (ctx) => {
          ctx.publishArtifact({ artifactId: 'o', parts: [{ text: 'x' }] });
          return 'done';
        });
      },
      { push: { enabled: true, send } },
    );
    try {
      const client = new A2AClient({ dispatcher: h.agent });
      const started = Date.now();
      const first = await client.sendMessage(h.url, {
        message: { messageId: 'm1', role: 'ROLE_USER', parts: [{ text: 'go' }] },
        configuration: { taskPushNotificationConfig: { id: 'dead', url: dead.url } },
      });
      const task = 'task' in first ? first.task : undefined;
      expect(task?.status.state).toBe('TASK_STATE_COMPLETED');
      expect(Date.now() - started).toBeLessThan(2000); // not held up by ~0.7 s of retries per event
      const second = await client.sendMessage(h.url, {
        message: { messageId: 'm2', role: 'ROLE_USER', parts: [{ text: 'go' }] },
        configuration: { taskPushNotificationConfig: { id: 'live', url: live.url } },
      });
      const t2 = 'task' in second ? second.task : undefined;
      expect(t2?.status.state).toBe('TASK_STATE_COMPLETED');
      // The live receiver has all of its task's events while the dead one is still being retried.
      await expect.poll(() => live.hits.length, { timeout: 2000 }).toBe(5);
      expect(send.stats().queued).toBeGreaterThan(0);
      expect(live.hits.map((x) => Object.keys(x.body)[0])).toEqual([
        'task',
        'statusUpdate',
        'artifactUpdate',
        'artifactUpdate',
        'statusUpdate',
      ]);
      await send.idle();
      // Each of the first task's 5 events was tried maxAttempts (4) times, then given up.
      expect(send.stats()).toMatchObject({ failed: 5, retries: 15, delivered: 5, queued: 0 });
    } finally {
      await h.close();
    }
  });
});

describe('a receiver that keeps failing', () => {
  const event = (task: string, n: number): [TaskPushNotificationConfig, StreamResponse] => [
    { taskId: task, id: 'hook', url: '' },
    {
      statusUpdate: {
        taskId: task,
        contextId: 'c',
        status: { state: 'TASK_STATE_WORKING' },
        metadata: { n },
      },
    },
  ];

  it('opens its circuit: later attempts, of every task, make no connection; other receivers are untouched', async () => {
    const dead = await receiver();
    await new Promise((r) => servers.pop()!.close(r)); // nothing listens there any more
    const live = await receiver();
    const { send, agent } = sender({
      allowAddresses: ['127.0.0.0/8'],
      initialBackoffMs: 10,
      maxAttempts: 3,
      circuitBreaker: { volumeThreshold: 4, errorThresholdPercentage: 50, resetTimeoutMs: 60_000 },
    });
    // 10 tasks × 3 events to the dead receiver: 90 attempts without a breaker.
    for (let t = 0; t < 10; t++) {
      for (let i = 0; i < 3; i++) {
        const [c, e] = event(`t${t}`, i);
        await send({ ...c, url: dead.url }, e);
      }
    }
    for (let i = 0; i < 3; i++) {
      const [c, e] = event('live', i);
      await send({ ...c, url: live.url }, e);
    }
    await send.idle();
    const s = send.stats();
    expect(s.failed).toBe(30);
    expect(s.delivered).toBe(3);
    expect(live.hits.map((h) => seqOf(h.body))).toEqual([0, 1, 2]);
    // Every attempt was made or short-circuited; few were made.
    expect(s.attempts + s.shortCircuited).toBe(90 + 3);
    expect(s.shortCircuited).toBeGreaterThanOrEqual(60);
    expect(agent.dispatched).toBe(s.attempts);
    expect(agent.dispatched).toBeLessThanOrEqual(33);
  });

  it('lets a trial through after resetTimeoutMs and delivers again once the receiver is back', async () => {
    let up = false;
    const flaky = await receiver(() => (up ? 200 : 503));
    const { send } = sender({
      allowAddresses: ['127.0.0.0/8'],
      initialBackoffMs: 20,
      maxBackoffMs: 100,
      maxAttempts: 40,
      circuitBreaker: { volumeThreshold: 2, errorThresholdPercentage: 50, resetTimeoutMs: 200 },
    });
    for (let i = 0; i < 3; i++) {
      const [c, e] = event('back', i);
      await send({ ...c, url: flaky.url }, e);
    }
    await expect.poll(() => send.stats().shortCircuited, { timeout: 5000 }).toBeGreaterThan(0);
    const refusedWhileDown = flaky.hits.length;
    up = true;
    await send.idle();
    expect(send.stats()).toMatchObject({ delivered: 3, failed: 0 });
    // In order, each once, after the receiver came back.
    expect(flaky.hits.slice(refusedWhileDown).map((h) => seqOf(h.body))).toEqual([0, 1, 2]);
  });
});
