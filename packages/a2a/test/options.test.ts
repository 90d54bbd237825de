// Bad numbers in constructor options are refused where the object is made,
// with an A2AConfigError naming the option: not a timer that fires at once
// (NaN, negative, or above 2^31 - 1 ms), nor a size that refuses every
// request. Good values at the bounds are taken.
import { Agent, type Dispatcher } from 'undici';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { SpiffeId } from '@weave/identity';
import { AllowAllEnforcer } from '@weave/authz';
import {
  A2AClient,
  A2AClientError,
  A2AConfigError,
  A2AGrpcServer,
  A2AServer,
  DiscoveryClient,
  buildMessage,
  InMemoryTaskStore,
  TaskManager,
  createWebhookSender,
  jkuKeyResolver,
} from '../src/index.js';
import { PostgresTaskStore } from '../src/postgres.js';

const dispatcher = new Agent();
afterAll(() => dispatcher.close());

const selfId = SpiffeId.parse('spiffe://options.test/agent');
const enforcer = new AllowAllEnforcer({ audit: { record: () => undefined } });
const card = { name: 'options', description: '', version: '1' };

/** The error `make` throws, which must be an A2AConfigError. */
function refusal(make: () => unknown): A2AConfigError {
  try {
    make();
  } catch (err) {
    expect(err).toBeInstanceOf(A2AConfigError);
    return err as A2AConfigError;
  }
  throw new Error('not refused');
}

const OVER_TIMER = 2 ** 31;
const BAD_TIMER = [Number.NaN, -1, 0, 1.5, Number.POSITIVE_INFINITY, OVER_TIMER];
const BAD_COUNT = [Number.NaN, -1, 0, 1.5, Number.POSITIVE_INFINITY];
/** A call's time budget takes fractions (what is left of a deadline). */
const BAD_BUDGET = [Number.NaN, -1, 0, Number.POSITIVE_INFINITY, OVER_TIMER];

type Case = readonly [owner: string, option: string, bad: readonly number[], make: (v: number) => unknown];

const cases: Case[] = [
  ['A2AServer', 'heartbeatMs', [Number.NaN, -1, 1.5, OVER_TIMER], (v) => server({ heartbeatMs: v })],
  ['A2AServer', 'maxEventsPerTask', BAD_COUNT, (v) => server({ maxEventsPerTask: v })],
  ['A2AServer', 'storeRetryMaxMs', BAD_TIMER, (v) => server({ storeRetryMaxMs: v })],
  ...(['maxBodyBytes', 'maxConcurrentTasks', 'maxSubscribersPerTask', 'maxStreamBufferBytes'] as const).map(
    (k): Case => ['A2AServer', `limits.${k}`, BAD_COUNT, (v) => server({ limits: { [k]: v } })],
  ),
  ...(['total', 'perCaller', 'perTask'] as const).map((k): Case => [
    'A2AServer',
    `limits.retainedBytes.${k}`,
    BAD_COUNT,
    (v) => server({ limits: { retainedBytes: { [k]: v } } }),
  ]),
  ...(['inputTimeoutMs', 'blockingTimeoutMs'] as const).map((k): Case => [
    'A2AServer',
    `limits.${k}`,
    BAD_TIMER,
    (v) => server({ limits: { [k]: v } }),
  ]),
  ['TaskManager', 'maxEventsPerTask', BAD_COUNT, (v) => new TaskManager({ maxEventsPerTask: v })],
  ['TaskManager', 'retryMaxMs', BAD_TIMER, (v) => new TaskManager({ retryMaxMs: v })],
  ['TaskManager', 'sweepIntervalMs', BAD_TIMER, (v) => new TaskManager({ sweepIntervalMs: v })],
  [
    'InMemoryTaskStore',
    'terminalTtlMs',
    [Number.NaN, -1, 1.5],
    (v) => new InMemoryTaskStore({ terminalTtlMs: v }),
  ],
  ['InMemoryTaskStore', 'maxTasks', BAD_COUNT, (v) => new InMemoryTaskStore({ maxTasks: v })],
  ['A2AClient', 'timeoutMs', BAD_BUDGET, (v) => new A2AClient({ dispatcher, timeoutMs: v })],
  ['A2AClient', 'cardTtlMs', [Number.NaN, -1, 1.5], (v) => new A2AClient({ dispatcher, cardTtlMs: v })],
  ['A2AClient', 'maxResponseBytes', BAD_COUNT, (v) => new A2AClient({ dispatcher, maxResponseBytes: v })],
  [
    'A2AClient',
    'streamIdleTimeoutMs',
    [Number.NaN, -1, 1.5, OVER_TIMER],
    (v) => new A2AClient({ dispatcher, streamIdleTimeoutMs: v }),
  ],
  ['DiscoveryClient', 'maxEntries', BAD_COUNT, (v) => new DiscoveryClient({ dispatcher, maxEntries: v })],
  ['DiscoveryClient', 'timeoutMs', BAD_BUDGET, (v) => new DiscoveryClient({ dispatcher, timeoutMs: v })],
  [
    'createWebhookSender',
    'maxAttempts',
    BAD_COUNT,
    (v) => createWebhookSender({ dispatcher, maxAttempts: v }),
  ],
  ['createWebhookSender', 'timeoutMs', BAD_TIMER, (v) => createWebhookSender({ dispatcher, timeoutMs: v })],
  [
    'createWebhookSender',
    'maxBackoffMs',
    [Number.NaN, -1, OVER_TIMER],
    (v) => createWebhookSender({ dispatcher, maxBackoffMs: v }),
  ],
  [
    'createWebhookSender',
    'maxQueuePerTask',
    BAD_COUNT,
    (v) => createWebhookSender({ dispatcher, maxQueuePerTask: v }),
  ],
  ['jkuKeyResolver', 'timeoutMs', BAD_TIMER, (v) => jkuKeyResolver({ dispatcher, allow: [], timeoutMs: v })],
  ['jkuKeyResolver', 'maxBytes', BAD_COUNT, (v) => jkuKeyResolver({ dispatcher, allow: [], maxBytes: v })],
  ['PostgresTaskStore', 'leaseTtlMs', BAD_TIMER, (v) => pgStore({ leaseTtlMs: v })],
  ['PostgresTaskStore', 'deadReplicaTtlMs', [Number.NaN, -1, 1.5], (v) => pgStore({ deadReplicaTtlMs: v })],
  ['A2AGrpcServer', 'keepaliveMs', [Number.NaN, -1, 1.5, OVER_TIMER], (v) => grpcServer(v)],
];

function server(extra: object): A2AServer {
  return new A2AServer({ card, selfId, enforcer, ...extra });
}

function pgStore(extra: object): PostgresTaskStore {
  // Refused before a pool is made: nothing to connect to, nothing left open.
  return new PostgresTaskStore({ connectionString: 'postgres://127.0.0.1:1/none', ...extra });
}

function grpcServer(keepaliveMs: number): A2AGrpcServer {
  // The numbers are checked before the identity is touched.
  return new A2AGrpcServer({
    handler: server({}).handler,
    identity: undefined as never,
    authorize: () => ({ authorized: true }) as never,
    keepaliveMs,
  });
}

describe('A2AConfigError for a bad number', () => {
  it.each(cases.flatMap(([owner, option, bad, make]) => bad.map((v) => [owner, option, v, make] as const)))(
    '%s refuses %s = %s',
    (owner, option, value, make) => {
      const err = refusal(() => make(value));
      expect(err.code).toBe('A2A_CONFIG_INVALID');
      expect(err.issues).toHaveLength(1);
      expect(err.message).toBe(`${owner}: ${err.issues[0]}`);
      expect(err.issues[0]).toMatch(
        new RegExp(`^${option.replaceAll('.', '\\.')} must be .*, got ${String(value)}$`),
      );
    },
  );

  it('lists every bad option at once', () => {
    const err = refusal(() =>
      server({ heartbeatMs: -1, limits: { maxBodyBytes: 0, inputTimeoutMs: OVER_TIMER } }),
    );
    expect(err.issues.map((i) => i.split(' ')[0]).sort()).toEqual([
      'heartbeatMs',
      'limits.inputTimeoutMs',
      'limits.maxBodyBytes',
    ]);
  });

  it('names a value that is not a number by its type', () => {
    expect(refusal(() => new TaskManager({ retryMaxMs: '5000' as never })).issues).toEqual([
      'retryMaxMs must be a whole number of milliseconds from 1 to 2147483647, got string',
    ]);
  });

  it('takes the bounds: 1 and 2^31 - 1 ms, 0 where it means off or not kept', async () => {
    const ok = [
      server({
        heartbeatMs: 0,
        storeRetryMaxMs: 2 ** 31 - 1,
        limits: { inputTimeoutMs: 1, maxBodyBytes: 1 },
      }),
      server({ heartbeatMs: 2 ** 31 - 1 }),
    ];
    for (const s of ok) await s.close();
    const store = new InMemoryTaskStore({ terminalTtlMs: 0, maxTasks: 1 });
    const m = new TaskManager({ store, sweepIntervalMs: 2 ** 31 - 1 });
    await m.close();
    await new A2AClient({ dispatcher, cardTtlMs: 0, streamIdleTimeoutMs: 0, timeoutMs: 0.5 }).close();
    createWebhookSender({ dispatcher, initialBackoffMs: 0, maxBackoffMs: 0 });
    await pgStore({ terminalTtlMs: 0, deadReplicaTtlMs: 0, leaseTtlMs: 1 }).close();
  });

  it('leaves nothing running: every option is checked before the task manager starts its timers', () => {
    const intervals = vi.spyOn(globalThis, 'setInterval');
    const timeouts = vi.spyOn(globalThis, 'setTimeout');
    try {
      const notPushStore = { ...new InMemoryTaskStore() } as never;
      for (const extra of [
        { limits: { perCaller: { maxConcurrentTasks: 0 } } },
        { push: { enabled: true, send: async () => undefined }, taskStore: notPushStore },
        { heartbeatMs: -1 },
        { card: { ...card, skills: [{ id: 'no name, no description' }] } },
      ]) {
        refusal(() => server(extra));
      }
      expect(intervals).not.toHaveBeenCalled();
      expect(timeouts).not.toHaveBeenCalled();
      // What would have been started: the task manager's sweep.
      void server({}).close();
      expect(intervals).toHaveBeenCalled();
    } finally {
      intervals.mockRestore();
      timeouts.mockRestore();
    }
  });

  it('refuses a missing dispatcher or authorizer the same way', () => {
    for (const [owner, make] of [
      ['A2AClient', () => new A2AClient({} as never)],
      ['DiscoveryClient', () => new DiscoveryClient({} as never)],
      ['createWebhookSender', () => createWebhookSender({} as never)],
      ['jkuKeyResolver', () => jkuKeyResolver({ allow: [] } as never)],
    ] as const) {
      expect(refusal(make).message).toBe(`${owner}: dispatcher is required`);
    }
    expect(
      refusal(() => new A2AGrpcServer({ handler: server({}).handler, identity: undefined as never } as never))
        .message,
    ).toBe('A2AGrpcServer: authorize (an Authorizer) is required');
  });
});

describe('A2AConfigError for a bad per-call number, before anything is sent', () => {
  /** An Agent that counts what it is asked to send. */
  class Counting extends Agent {
    sent = 0;
    override dispatch(options: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean {
      this.sent++;
      return super.dispatch(options, handler);
    }
  }
  const counting = new Counting();
  afterAll(() => counting.close());
  // Nothing listens there: a request that went out would fail as TRANSPORT_FAILED, not as this.
  const url = 'https://127.0.0.1:1/';
  const client = new A2AClient({ dispatcher: counting });
  afterAll(() => client.close());
  const message = () => buildMessage('echo', 'x');

  it.each([Number.NaN, -1, 0, Number.POSITIVE_INFINITY, 2 ** 31])('timeoutMs %s', async (timeoutMs) => {
    const calls: Array<[string, () => Promise<unknown>]> = [
      ['timeoutMs', () => client.sendMessage(url, message(), { timeoutMs })],
      ['timeoutMs', () => client.getTask(url, 'task-1', undefined, { timeoutMs })],
      ['timeoutMs', () => client.discoverAgent(url, { timeoutMs })],
      ['timeoutMs', () => client.transportFor(url, { timeoutMs })],
      ['timeoutMs', () => client.pollUntilComplete(url, 'task-1', { timeoutMs })],
      ['intervalMs', () => client.pollUntilComplete(url, 'task-1', { intervalMs: timeoutMs })],
      [
        'timeoutMs',
        async () => {
          for await (const _ of client.sendStreamingMessage(url, message(), { timeoutMs })) break;
        },
      ],
    ];
    for (const [name, call] of calls) {
      const err = await call().then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err, name).toBeInstanceOf(A2AConfigError);
      expect((err as A2AConfigError).message).toBe(
        `A2AClient call: ${name} must be a number of milliseconds above 0 and at most 2147483647, got ${String(timeoutMs)}`,
      );
    }
    expect(counting.sent).toBe(0);
  });

  it('DiscoveryClient.discover refuses a bad timeoutMs the same way', async () => {
    const d = new DiscoveryClient({ dispatcher: counting });
    for (const timeoutMs of [Number.NaN, -1, 0, 2 ** 31]) {
      await expect(d.discover(url, { timeoutMs })).rejects.toThrow(
        new A2AConfigError('DiscoveryClient.discover', [
          `timeoutMs must be a number of milliseconds above 0 and at most 2147483647, got ${timeoutMs}`,
        ]),
      );
    }
    expect(counting.sent).toBe(0);
  });

  it('streamTaskUpdates takes resumeBackoffMs 0 (resume at once) and refuses -1', async () => {
    const resume = async (resumeBackoffMs: number) => {
      try {
        for await (const _ of client.streamTaskUpdates(
          url,
          { message: message() },
          { resumeBackoffMs, maxReconnects: 0 },
        ))
          break;
      } catch (err) {
        return err;
      }
      return undefined;
    };
    const before = counting.sent;
    expect(await resume(-1)).toBeInstanceOf(A2AConfigError);
    expect(counting.sent).toBe(before);
    // Taken: it goes on to the (unreachable) agent.
    expect(await resume(0)).not.toBeInstanceOf(A2AConfigError);
  });

  it('a message that is not an object is INVALID_PARAMS, not a bare TypeError', async () => {
    const before = counting.sent;
    for (const bad of ['text', null, 42]) {
      for (const call of [
        () => client.sendMessage(url, bad as never),
        async () => {
          for await (const _ of client.sendStreamingMessage(url, bad as never)) break;
        },
      ]) {
        const err = await call().then(
          () => undefined,
          (e: unknown) => e,
        );
        expect(err).toBeInstanceOf(A2AClientError);
        expect(err).toMatchObject({ code: 'INVALID_PARAMS' });
      }
    }
    expect(counting.sent).toBe(before);
  });

  it('TaskManager.waitForCompletion refuses a bad timeoutMs instead of timing out at once', async () => {
    const m = new TaskManager();
    try {
      const r = await m.create({ owner: 'o', skill: 's', message: message() });
      for (const timeoutMs of [Number.NaN, -1, 0, 2 ** 31]) {
        await expect(m.waitForCompletion(r.task.id, { timeoutMs })).rejects.toThrow(
          new A2AConfigError('waitForCompletion', [
            `timeoutMs must be a number of milliseconds above 0 and at most 2147483647, got ${timeoutMs}`,
          ]),
        );
      }
      m.setStatus(r.task.id, 'TASK_STATE_COMPLETED');
      expect((await m.waitForCompletion(r.task.id, { timeoutMs: 100.5 })).status.state).toBe(
        'TASK_STATE_COMPLETED',
      );
    } finally {
      await m.close();
    }
  });

  it('takes a fraction: what is left of a deadline', async () => {
    const err = (await client
      .sendMessage(url, message(), { timeoutMs: 2500.5 })
      .catch((e: unknown) => e)) as Error;
    expect(err).not.toBeInstanceOf(A2AConfigError);
    expect(counting.sent).toBeGreaterThan(0);
  });
});
