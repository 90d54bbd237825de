// Names a request gives a task, a context, a tenant or a push config are keys
// every task store keeps as they are and looks up by. PostgreSQL's text
// columns hold no NUL and no unpaired surrogate (a NUL is refused, a lone
// surrogate goes in as U+FFFD): the embedded store accepted such names where
// PostgreSQL answered a generic "cannot keep" (or, for a push config id,
// stored one that no longer decrypted, and every later push config call on
// the task failed -32603). Such names are refused up front, -32602 naming the
// field, on every binding and both stores alike; content (text, message ids,
// data keys) keeps them, read back exactly.
import { randomBytes, randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startPostgres, requireComponent, type Postgres } from '../../../interop/infra.js';
import {
  InMemoryTaskStore,
  TaskManager,
  type A2AGrpcServer,
  type Message,
  type Task,
  type TaskStore,
} from '../src/index.js';
import { PostgresPushConfigStore, PostgresTaskStore, migrate } from '../src/postgres.js';
import { rawBinding, serveGrpc, startHarness, type Harness } from './helpers/agents.js';
import { jsonRpcBinding, refused, type BindingUnderTest, type RawBinding } from './helpers/raw-bindings.js';
import { LocalPolicyEnforcer } from '@weave/authz';
import { channel, type Workload } from '@weave/test-support';

const pgAvailable = process.env.WEAVE_TEST_PG_URL !== undefined || requireComponent('postgres') !== undefined;

const STORES = [
  { store: 'embedded', available: true },
  { store: 'PostgreSQL', available: pgAvailable },
];

const NUL = 'c\u0000';
const LONE = 'c\ud800';

describe.each(STORES)('names a task store cannot keep, $store store', ({ store: kind, available }) => {
  let pg: Postgres | undefined;
  let h: Harness;
  let grpc: A2AGrpcServer;
  let taskStore: TaskStore;
  const ran: string[] = [];
  const bindings = new Map<BindingUnderTest, RawBinding>();
  /** A caller whose SPIFFE ID is as long as SPIFFE IDs go (2048 bytes). */
  let longest: Workload;

  beforeAll(async () => {
    if (!available) return;
    let pushStore: PostgresPushConfigStore | undefined;
    if (kind === 'PostgreSQL') {
      pg = (await startPostgres()) as Postgres;
      await migrate({ connectionString: pg.url });
      taskStore = new PostgresTaskStore({ connectionString: pg.url });
      pushStore = new PostgresPushConfigStore({ connectionString: pg.url, key: Buffer.alloc(32, 9) });
    } else {
      taskStore = new InMemoryTaskStore();
    }
    h = await startHarness(
      (a2a) =>
        a2a.registerTaskHandler({ id: 'echo', name: 'echo', description: '', tags: [] }, (ctx) => {
          ran.push(ctx.taskId);
          return `echo: ${ctx.message.parts[0]?.text ?? ''}`;
        }),
      {
        taskStore,
        // Every caller of the trust domain: the one with the longest SPIFFE ID too.
        enforcer: LocalPolicyEnforcer.fromObject(
          {
            version: 1,
            id: 'names',
            default: 'deny',
            rules: [{ id: 'all', effect: 'allow', callers: ['*'], actions: ['*'] }],
          },
          { audit: { record: () => undefined } },
        ),
        push: {
          enabled: true,
          send: async () => undefined,
          checkUrl: async () => undefined,
          ...(pushStore ? { store: pushStore } : {}),
        },
      },
    );
    grpc = await serveGrpc(h);
    const prefix = `spiffe://${h.serverId.trustDomain}/`;
    longest = await h.pki.workload(
      `/${randomBytes(1536)
        .toString('base64url')
        .slice(0, 2048 - prefix.length)}`,
    );
    for (const b of ['JSONRPC', 'HTTP+JSON', 'GRPC'] as const) bindings.set(b, rawBinding(h, grpc, b));
  }, 60_000);

  afterAll(async () => {
    for (const b of bindings.values()) b.close();
    await grpc?.close(100);
    await h?.close();
    await pg?.stop();
  });

  const message = (extra: Partial<Message> = {}): Message => ({
    messageId: randomUUID(),
    role: 'ROLE_USER',
    parts: [{ text: 'hi' }],
    metadata: { skill: 'echo' },
    ...extra,
  });

  async function taskCount(b: RawBinding): Promise<number> {
    const out = await b.call('ListTasks', {});
    expect(out.ok).toBe(true);
    return (out.ok ? (out.result as { tasks: Task[] }).tasks : []).length;
  }

  // gRPC strings are UTF-8: a lone surrogate cannot be sent there, a NUL can.
  const refusals: Array<[string, BindingUnderTest[], string, Record<string, unknown>, RegExp]> = [
    [
      'a NUL in a new context id',
      ['JSONRPC', 'HTTP+JSON', 'GRPC'],
      'SendMessage',
      { message: message({ contextId: NUL }) },
      /^Invalid params: message\.contextId: must not contain NUL or an unpaired surrogate$/,
    ],
    [
      'a lone surrogate in a new context id',
      ['JSONRPC', 'HTTP+JSON'],
      'SendMessage',
      { message: message({ contextId: LONE }) },
      /^Invalid params: message\.contextId: must not contain NUL/,
    ],
    [
      'a NUL in a streamed message context id',
      ['JSONRPC', 'HTTP+JSON', 'GRPC'],
      'SendStreamingMessage',
      { message: message({ contextId: NUL }) },
      /^Invalid params: message\.contextId: must not contain NUL/,
    ],
    [
      'a NUL in the task id of a reply',
      ['JSONRPC', 'HTTP+JSON', 'GRPC'],
      'SendMessage',
      { message: message({ taskId: NUL }) },
      /^Invalid params: message\.taskId: must not contain NUL/,
    ],
    [
      'a NUL in a GetTask id',
      ['JSONRPC', 'HTTP+JSON', 'GRPC'],
      'GetTask',
      { id: NUL },
      /^Invalid params: id: must not contain NUL/,
    ],
    [
      'a NUL in a CancelTask id',
      ['JSONRPC', 'HTTP+JSON', 'GRPC'],
      'CancelTask',
      { id: NUL },
      /^Invalid params: id: must not contain NUL/,
    ],
    [
      'a NUL in a ListTasks context id',
      ['JSONRPC', 'HTTP+JSON', 'GRPC'],
      'ListTasks',
      { contextId: NUL },
      /^Invalid params: contextId: must not contain NUL/,
    ],
    // (HTTP+JSON carries it in the query string, which a client's URL encoding makes U+FFFD.)
    [
      'a lone surrogate in a ListTasks context id',
      ['JSONRPC'],
      'ListTasks',
      { contextId: LONE },
      /^Invalid params: contextId: must not contain NUL/,
    ],
    [
      'a NUL in a push config task id',
      ['JSONRPC', 'HTTP+JSON', 'GRPC'],
      'ListTaskPushNotificationConfigs',
      { taskId: NUL },
      /^Invalid params: taskId: must not contain NUL/,
    ],
    [
      'a lone surrogate in a tenant',
      ['JSONRPC'],
      'SendMessage',
      { tenant: LONE, message: message() },
      /^Invalid params: tenant: at most 256 characters and 512 bytes of UTF-8, no control characters or unpaired surrogates$/,
    ],
    // 768 bytes: with the longest owner (2048 bytes), PostgreSQL's list index could not hold the entry.
    [
      '256 characters of CJK in a tenant',
      ['JSONRPC', 'HTTP+JSON', 'GRPC'],
      'SendMessage',
      { tenant: '\u4e2d'.repeat(256), message: message() },
      /^Invalid params: tenant: at most 256 characters and 512 bytes of UTF-8/,
    ],
  ];

  it.skipIf(!available).each(refusals)(
    '%s is INVALID_PARAMS naming the field, on %s, and creates and runs nothing',
    async (_, on, method, params, expected) => {
      for (const name of on) {
        const b = bindings.get(name) as RawBinding;
        const before = await taskCount(b);
        const ranBefore = ran.length;
        const err =
          method === 'SendStreamingMessage'
            ? (await b.stream(method, params)).failure?.error
            : refused(await b.call(method, params));
        expect({ name, code: err?.jsonRpcCode, message: err?.message }).toEqual({
          name,
          code: -32602,
          message: expect.stringMatching(expected),
        });
        expect(await taskCount(b)).toBe(before);
        expect(ran.length).toBe(ranBefore);
      }
    },
  );

  it.skipIf(!available)(
    'a push config id with a lone surrogate is refused, and the task keeps serving its push configs',
    async () => {
      const b = bindings.get('JSONRPC') as RawBinding;
      const sent = await b.call('SendMessage', { message: message() });
      expect(sent.ok).toBe(true);
      const taskId = (sent.ok ? (sent.result as { task: Task }).task : undefined)?.id as string;
      const err = refused(
        await b.call('CreateTaskPushNotificationConfig', { taskId, id: LONE, url: 'https://hooks.test/a' }),
      );
      expect([err.jsonRpcCode, err.message]).toEqual([
        -32602,
        'Invalid params: id: must not contain NUL or an unpaired surrogate',
      ]);
      const made = await b.call('CreateTaskPushNotificationConfig', {
        taskId,
        id: 'ok',
        url: 'https://hooks.test/b',
        token: `t${NUL}${LONE}`,
      });
      expect(made.ok).toBe(true);
      const listed = await b.call('ListTaskPushNotificationConfigs', { taskId });
      // The token is not read back (a secret); the config is, and the task's configs still list.
      expect(listed.ok && (listed.result as { configs: unknown[] }).configs).toEqual([
        { taskId, id: 'ok', url: 'https://hooks.test/b' },
      ]);
    },
  );

  it.skipIf(!available)(
    'a caller of the longest SPIFFE ID: a tenant of 256 CJK characters is INVALID_PARAMS on both stores (PostgreSQL answered -32603), one of 512 bytes is served',
    async () => {
      const ch = channel(longest, h.serverId);
      try {
        const b = jsonRpcBinding(h.url, ch);
        expect(Buffer.byteLength(longest.id.toString())).toBe(2048);
        // Random characters: PostgreSQL compresses a long index entry before it measures it.
        const cjk = String.fromCharCode(...Array.from(randomBytes(256), (x) => 0x4e00 + x * 41));
        const err = refused(await b.call('SendMessage', { tenant: cjk, message: message() }));
        expect([err.jsonRpcCode, err.message]).toEqual([
          -32602,
          expect.stringMatching(/^Invalid params: tenant: at most 256 characters and 512 bytes of UTF-8/),
        ]);
        const tenant = String.fromCharCode(...Array.from(randomBytes(256), (x) => 0x100 + x * 7));
        const out = await b.call('SendMessage', { tenant, message: message() });
        expect(out.ok ? (out.result as { task: Task }).task.status.state : out.error.message).toBe(
          'TASK_STATE_COMPLETED',
        );
        const listed = await b.call('ListTasks', { tenant });
        expect(listed.ok && (listed.result as { tasks: Task[] }).tasks).toHaveLength(1);
      } finally {
        await ch.close();
      }
    },
  );

  it.skipIf(!available)(
    'a tenant of 512 bytes (256 two-byte characters) is served, for an owner of the longest SPIFFE ID too',
    async () => {
      // Random (incompressible: PostgreSQL compresses a long index entry before it measures it).
      const tenant = String.fromCharCode(...Array.from(randomBytes(256), (x) => 0x100 + x * 7));
      const b = bindings.get('JSONRPC') as RawBinding;
      const out = await b.call('SendMessage', { tenant, message: message() });
      expect(out.ok && (out.result as { task: Task }).task.status.state).toBe('TASK_STATE_COMPLETED');
      // The owner is the caller's SPIFFE ID, at most 2048 bytes: the store keeps that owner with this tenant.
      const owner = `spiffe://t.test/${randomBytes(1536)
        .toString('base64url')
        .slice(0, 2048 - 16)}`;
      // A store of its own: the manager closes it.
      const own =
        kind === 'PostgreSQL'
          ? new PostgresTaskStore({ connectionString: (pg as Postgres).url })
          : new InMemoryTaskStore();
      const m = new TaskManager({ store: own });
      try {
        const { task } = await m.create({ owner, tenant, skill: 'echo', message: message() });
        m.setStatus(task.id, 'TASK_STATE_COMPLETED');
        await m.flush();
        expect((await own.get(task.id))?.task.status.state).toBe('TASK_STATE_COMPLETED');
        const listed = await own.list({ owner, tenant, limit: 10 });
        expect(listed.records.map((r) => r.task.id)).toEqual([task.id]);
      } finally {
        await m.close();
      }
    },
  );

  // PostgreSQL's own limit: defined on that pass only (nothing to skip on the embedded one).
  if (kind === 'PostgreSQL') {
    it.skipIf(!available)(
      'a task whose list index entry PostgreSQL cannot hold (a store used without the handler) is refused typed, not retryable, and kept nowhere',
      async () => {
        const own = new PostgresTaskStore({ connectionString: (pg as Postgres).url });
        const m = new TaskManager({ store: own });
        try {
          const owner = `spiffe://t.test/${randomBytes(1536)
            .toString('base64url')
            .slice(0, 2048 - 16)}`;
          const tenant = String.fromCharCode(...Array.from(randomBytes(256), (x) => 0x4e00 + x * 41));
          await expect(m.create({ owner, tenant, skill: 'echo', message: message() })).rejects.toMatchObject({
            code: 'TASK_STORE_REJECTED',
            message: expect.stringMatching(/^task store refused the write: 54000 index row size/),
          });
          expect((await own.list({ owner, tenant, limit: 10 })).records).toEqual([]);
        } finally {
          await m.close();
        }
      },
    );
  }

  it.skipIf(!available)(
    'a NUL and lone surrogates in content (message id, text, data keys and values) are kept and read back exactly',
    async () => {
      const b = bindings.get('JSONRPC') as RawBinding;
      const sent = message({
        messageId: `m${NUL}${LONE}\udfff`,
        parts: [{ text: `a${NUL}${LONE}` }, { data: { [`k${NUL}`]: { [LONE]: [NUL, '\udfff'] } } }],
      });
      const out = await b.call('SendMessage', { message: sent });
      expect(out.ok ? 'ok' : out.error.message).toBe('ok');
      const id = (out.ok ? (out.result as { task: Task }).task : undefined)?.id as string;
      const got = await b.call('GetTask', { id });
      const task = (got.ok ? got.result : undefined) as Task;
      expect(task.status.state).toBe('TASK_STATE_COMPLETED');
      expect(task.history?.[0]).toMatchObject({ messageId: sent.messageId, parts: sent.parts });
      expect(task.artifacts?.[0]?.parts).toEqual([{ text: `echo: a${NUL}${LONE}` }]);
    },
  );
});
