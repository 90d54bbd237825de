// Two callers the policy both allows, A and B, on every binding and on both
// stores: B (or A in another tenant) reaching for A's task gets what a missing
// task gets, and costs what a missing task costs. The cost is the store read:
// a task running here used to be answered from memory (about 20 µs against a
// PostgreSQL round trip of 400 µs or more for a missing one), and a stored
// one was read whole (its history and artifacts) before its owner was
// compared, so the time GetTask took told B that A's task existed. Each call
// is compared with the same call naming an id that does not exist.
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LocalPolicyEnforcer } from '@weave/authz';
import { authorizeOneOf } from '@weave/identity';
import { createMtlsServer, type MtlsFastifyInstance } from '@weave/transport/server';
import { baseUrl, channel, createPki, type Pki, type Workload } from '@weave/test-support';
import type { SecureChannel } from '@weave/transport';
import { requireComponent, startPostgres, type Postgres } from '../../../interop/infra.js';
import {
  A2AGrpcServer,
  A2AServer,
  InMemoryTaskStore,
  type A2AError,
  type Task,
  type TaskStore,
} from '../src/index.js';
import { PostgresPushConfigStore, PostgresTaskStore, migrate } from '../src/postgres.js';
import {
  grpcBinding,
  jsonRpcBinding,
  restBinding,
  type BindingUnderTest,
  type CallOutcome,
  type RawBinding,
} from './helpers/raw-bindings.js';

type StreamOutcome = Awaited<ReturnType<RawBinding['stream']>>;

type Scope = { owner: string; tenant?: string } | undefined;
interface Read {
  readonly id: string;
  readonly scope: Scope;
  readonly found: boolean;
}

/** Records every `get` of `store` (the handler's reads of a task), and what it found. */
function watchReads(store: TaskStore): Read[] {
  const reads: Read[] = [];
  const get = store.get.bind(store);
  store.get = async (id: string, scope?: Scope) => {
    const r = await get(id, scope);
    reads.push({ id, scope, found: r !== undefined });
    return r;
  };
  return reads;
}

const pgAvailable = process.env.WEAVE_TEST_PG_URL !== undefined || requireComponent('postgres') !== undefined;

const STORES: Array<{ name: string; available: boolean }> = [
  { name: 'embedded', available: true },
  { name: 'PostgreSQL', available: pgAvailable },
];

describe.each(STORES)('tasks of another caller or tenant, $name store', ({ name, available }) => {
  let pki: Pki;
  let server: Workload;
  let alice: Workload;
  let bob: Workload;
  let app: MtlsFastifyInstance;
  let a2a: A2AServer;
  let grpc: A2AGrpcServer;
  let pg: Postgres | undefined;
  let store: TaskStore;
  let reads: Read[];
  const channels: SecureChannel[] = [];
  const release: Array<() => void> = [];
  const pushedTo: string[] = [];
  /** A's tasks: running and finished (no tenant), running in tenant t1. */
  let running: Task;
  let finished: Task;
  let tenanted: Task;

  function bindingOf(binding: BindingUnderTest, who: Workload): RawBinding {
    if (binding === 'GRPC') return grpcBinding(grpc.url as string, who, server.id);
    const ch = channel(who, server.id);
    channels.push(ch);
    const url = baseUrl(app);
    return binding === 'JSONRPC' ? jsonRpcBinding(url, ch) : restBinding(url, ch);
  }

  beforeAll(async () => {
    if (!available) return;
    pki = await createPki();
    server = await pki.workload('/agent/server');
    alice = await pki.workload('/agent/alice');
    bob = await pki.workload('/agent/bob');
    const enforcer = LocalPolicyEnforcer.fromObject(
      {
        version: 1,
        id: 'isolation',
        default: 'deny',
        rules: [
          { id: 'a', effect: 'allow', callers: [alice.id.toString()], actions: ['*'] },
          { id: 'b', effect: 'allow', callers: [bob.id.toString()], actions: ['*'] },
        ],
      },
      { audit: { record: () => undefined } },
    );
    let pushStore: PostgresPushConfigStore | undefined;
    if (name === 'PostgreSQL') {
      pg = await startPostgres();
      const url = (pg as Postgres).url;
      await migrate({ connectionString: url });
      store = new PostgresTaskStore({ connectionString: url });
      pushStore = new PostgresPushConfigStore({ connectionString: url, key: Buffer.alloc(32, 7) });
    } else {
      store = new InMemoryTaskStore();
    }
    reads = watchReads(store);
    a2a = new A2AServer({
      card: { name: 'isolation', description: 'two callers', version: '1.0.0' },
      selfId: server.id,
      enforcer,
      heartbeatMs: 0,
      taskStore: store,
      push: {
        enabled: true,
        send: async (config) => {
          pushedTo.push(config.url);
        },
        ...(pushStore ? { store: pushStore } : {}),
      },
    });
    a2a.registerTaskHandler('echo', (ctx) => `echo: ${ctx.message.parts[0]?.text ?? ''}`);
    a2a.registerTaskHandler('slow', async (ctx) => {
      ctx.publishArtifact({ artifactId: 'a', parts: [{ text: 'for A only' }] });
      await new Promise<void>((resolve) => {
        release.push(resolve);
        ctx.signal.addEventListener('abort', () => resolve());
      });
    });
    const authorize = authorizeOneOf(alice.id, bob.id);
    app = createMtlsServer({ identity: server.identity, authorize });
    await app.register(a2a.plugin);
    await app.listen({ port: 0, host: '127.0.0.1' });
    grpc = new A2AGrpcServer({ handler: a2a.handler, identity: server.identity, authorize });
    await grpc.listen();
    const a = bindingOf('JSONRPC', alice);
    const send = async (skill: string, extra: Record<string, unknown> = {}): Promise<Task> => {
      const r = await a.call('SendMessage', {
        message: {
          messageId: randomUUID(),
          role: 'ROLE_USER',
          parts: [{ text: 'A-private' }],
          contextId: 'ctx-of-a',
          metadata: { skill },
        },
        configuration: { returnImmediately: skill === 'slow' },
        ...extra,
      });
      if (!r.ok) throw new Error(r.error.message);
      return (r.result as { task: Task }).task;
    };
    running = await send('slow');
    finished = await send('echo');
    tenanted = await send('slow', { tenant: 't1' });
    const hook = await a.call('CreateTaskPushNotificationConfig', {
      taskId: running.id,
      id: 'a-hook',
      url: 'https://hooks.example/a',
    });
    expect(hook.ok).toBe(true);
  }, 60_000);

  afterAll(async () => {
    if (!available) return;
    for (const r of release) r();
    await a2a.close();
    await grpc.close(100);
    for (const ch of channels) await ch.close();
    await app.close();
    await (store as { close?: () => Promise<void> }).close?.();
    await pg?.stop();
    await pki.close();
  });

  /** What a call answered, with `id` written as <id>: the same for A's task and a missing one. */
  function outcome(o: CallOutcome | StreamOutcome, id: string): string {
    const failed = (f: { status: number; error: A2AError }) =>
      `${f.status} ${f.error.code} ${f.error.jsonRpcCode} ${f.error.message}`;
    let text: string;
    if ('ok' in o) text = o.ok ? `ok ${JSON.stringify(o.result)}` : failed(o);
    else text = `events ${JSON.stringify(o.events)}${o.failure ? ` then ${failed(o.failure)}` : ''}`;
    return text.split(id).join('<id>');
  }

  type Probe = [method: string, stream: boolean, params: (id: string) => Record<string, unknown>];
  const PROBES: Probe[] = [
    ['GetTask', false, (id) => ({ id, historyLength: 10 })],
    ['CancelTask', false, (id) => ({ id })],
    ['SubscribeToTask', true, (id) => ({ id })],
    [
      'SendMessage',
      false,
      (id) => ({
        message: { messageId: randomUUID(), role: 'ROLE_USER', parts: [{ text: 'B' }], taskId: id },
      }),
    ],
    ['CreateTaskPushNotificationConfig', false, (id) => ({ taskId: id, url: 'https://evil.example/b' })],
    ['ListTaskPushNotificationConfigs', false, (id) => ({ taskId: id })],
    ['DeleteTaskPushNotificationConfig', false, (id) => ({ taskId: id, id: 'a-hook' })],
  ];

  describe.each(['JSONRPC', 'HTTP+JSON', 'GRPC'] as const)('%s', (binding) => {
    it.skipIf(!available)(
      'another caller, or the owner in another tenant, gets TASK_NOT_FOUND as for a missing task, after the same store read',
      async () => {
        const b = bindingOf(binding, bob);
        const aElsewhere = bindingOf(binding, alice);
        const cases: Array<[string, RawBinding, () => Task, string | undefined]> = [
          ['B: A’s running task', b, () => running, undefined],
          ['B: A’s finished task', b, () => finished, undefined],
          ['B in t1: A’s task of t1', b, () => tenanted, 't1'],
          ['A in t2: its task of t1', aElsewhere, () => tenanted, 't2'],
          ['A, no tenant: its task of t1', aElsewhere, () => tenanted, undefined],
        ];
        for (const [label, caller, target, tenant] of cases) {
          const owner = (caller === b ? bob : alice).id.toString();
          const scope = tenant === undefined ? { owner } : { owner, tenant };
          for (const [method, stream, params] of PROBES) {
            const call = async (id: string) => {
              const from = reads.length;
              const p = { ...params(id), ...(tenant === undefined ? {} : { tenant }) };
              const o = stream ? await caller.stream(method, p) : await caller.call(method, p);
              return { o, reads: reads.slice(from).filter((r) => r.id === id) };
            };
            const missing = randomUUID();
            const theirs = await call(target().id);
            const none = await call(missing);
            const where = `${label}, ${method}`;
            expect(outcome(none.o, missing), where).toMatch(/TASK_NOT_FOUND/);
            expect(outcome(theirs.o, target().id), where).toBe(outcome(none.o, missing));
            // One scoped read that finds nothing, for A's task as for a missing one.
            expect(
              theirs.reads.map((r) => ({ scope: r.scope, found: r.found })),
              where,
            ).toEqual([{ scope, found: false }]);
            expect(
              none.reads.map((r) => ({ scope: r.scope, found: r.found })),
              where,
            ).toEqual([{ scope, found: false }]);
          }
        }
        // B lists none of A's tasks, whatever it filters on.
        const listed = await b.call('ListTasks', { contextId: 'ctx-of-a', includeArtifacts: true });
        expect(listed.ok && (listed.result as { tasks: Task[] }).tasks).toEqual([]);
        b.close();
        aElsewhere.close();
        // A's tasks are as they were: running, its own webhook only, no reply taken.
        const a = bindingOf('JSONRPC', alice);
        const got = await a.call('GetTask', { id: running.id, historyLength: 10 });
        expect(got.ok && (got.result as Task).status.state).toBe('TASK_STATE_WORKING');
        expect(JSON.stringify(got)).not.toContain('"B"');
        const t1 = await a.call('GetTask', { id: tenanted.id, tenant: 't1' });
        expect(t1.ok && (t1.result as Task).status.state).toBe('TASK_STATE_WORKING');
        const hooks = await a.call('ListTaskPushNotificationConfigs', { taskId: running.id });
        expect(
          hooks.ok && (hooks.result as { configs: Array<{ id: string }> }).configs.map((c) => c.id),
        ).toEqual(['a-hook']);
        expect(pushedTo.filter((u) => u.includes('evil'))).toEqual([]);
        a.close();
      },
      60_000,
    );
  });
});
