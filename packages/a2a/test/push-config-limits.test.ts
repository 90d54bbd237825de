// Push configs are retained input like a task's content: their strings are
// bounded, the embedded store counts them in the caller's share of task
// memory, a config sent with a follow-up message is applied to the task it
// continues (URL guard included), a refused webhook leaves no task behind, and
// the SSRF guard refuses IPv4-compatible IPv6 addresses. Real mTLS with
// dev-CA SVIDs: the agent on fastify and gRPC, the webhook on its own server.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LocalPolicyEnforcer } from '@weave/authz';
import { authorizeOneOf } from '@weave/identity';
import type { SecureChannel } from '@weave/transport';
import type { MtlsFastifyInstance } from '@weave/transport/server';
import { baseUrl, channel, createPki, mtlsServer, type Pki, type Workload } from '@weave/test-support';
import {
  A2AGrpcServer,
  A2AServer,
  InMemoryTaskStore,
  PushUrlRefusedError,
  TaskStoreOverBudgetError,
  approxJsonBytes,
  checkWebhookUrl,
  createWebhookSender,
  type StreamResponse,
  type Task,
  type TaskPushNotificationConfig,
  type TaskRecord,
  type TaskState,
  type WebhookSender,
} from '../src/index.js';
import { PUSH_CONFIG_LIMITS } from '../src/wire/v1.js';
import { serveEcho, startHarness } from './helpers/agents.js';
import {
  grpcBinding,
  jsonRpcBinding,
  refused,
  restBinding,
  type BindingUnderTest,
  type CallOutcome,
  type RawBinding,
} from './helpers/raw-bindings.js';

const KiB = 1024;
const METADATA_URL = 'https://169.254.169.254/latest/meta-data/';

// ---- the embedded store's accounting ---------------------------------------------------

/** A task attached as the TaskManager does it; `text` characters of history make it that much larger. */
function attach(store: InMemoryTaskStore, id: string, owner: string, text = 0): TaskRecord {
  const now = Date.now();
  const r: TaskRecord = {
    task: {
      id,
      contextId: 'ctx',
      status: { state: 'TASK_STATE_WORKING' },
      ...(text > 0
        ? { history: [{ messageId: 'm', role: 'ROLE_USER', parts: [{ text: 'h'.repeat(text) }] }] }
        : {}),
    },
    owner,
    skill: 's',
    createdAt: now,
    updatedAt: now,
    seq: 1,
  };
  store.attachNow(r, [{ seq: 1, event: { task: r.task } }]);
  return r;
}

function finish(store: InMemoryTaskStore, r: TaskRecord, state: TaskState = 'TASK_STATE_COMPLETED'): void {
  r.task.status = { state };
  store.finishNow(r.task.id);
}

const config = (taskId: string, id: string, tokenBytes: number): TaskPushNotificationConfig => ({
  taskId,
  id,
  url: 'https://hooks.example/x',
  token: 't'.repeat(tokenBytes),
});

describe('InMemoryTaskStore counts push configs in its byte bounds', () => {
  const alice = 'spiffe://t/alice';
  const bob = 'spiffe://t/bob';

  it('a config is counted for its task’s owner; deleting it, replacing it or removing the task gives the bytes back', async () => {
    const store = new InMemoryTaskStore({ maxBytes: 100_000, maxBytesPerOwner: 50_000 });
    const r = attach(store, 't1', alice);
    finish(store, r);
    const task = store.bytes(alice);
    const big = config('t1', 'c1', 5000);
    await store.setPushConfig(big);
    expect(store.bytes(alice)).toBe(task + approxJsonBytes(big));
    expect(store.bytes()).toBe(task + approxJsonBytes(big));
    const small = config('t1', 'c1', 10);
    await store.setPushConfig(small);
    expect(store.bytes(alice)).toBe(task + approxJsonBytes(small));
    expect(await store.deletePushConfig('t1', 'c1')).toBe(true);
    expect(store.bytes(alice)).toBe(task);
    await store.setPushConfig(big);
    await store.setPushConfig(config('t1', 'c2', 5000));
    await store.delete('t1');
    expect(store.bytes(alice)).toBe(0);
    expect(store.bytes()).toBe(0);
  });

  it('over the owner’s share, the owner’s older finished tasks go, never the config’s own; then the config is refused and not kept', async () => {
    const store = new InMemoryTaskStore({ maxBytes: 100_000, maxBytesPerOwner: 20_000 });
    const older = attach(store, 'older', alice);
    finish(store, older);
    const r = attach(store, 't1', alice);
    finish(store, r);
    const bobs = attach(store, 'bobs', bob);
    finish(store, bobs);
    let kept = 0;
    let refused: unknown;
    for (let i = 0; i < 16 && refused === undefined; i++) {
      try {
        await store.setPushConfig(config('t1', `c${i}`, 5000));
        kept++;
      } catch (err) {
        refused = err;
      }
    }
    expect(refused).toBeInstanceOf(TaskStoreOverBudgetError);
    expect(refused).toMatchObject({ scope: 'caller', limitBytes: 20_000, neverFits: false });
    expect(kept).toBe(3);
    expect((await store.listPushConfigs('t1')).map((c) => c.id)).toEqual(['c0', 'c1', 'c2']);
    expect(await store.get('older')).toBeUndefined();
    expect(await store.get('t1')).toBeDefined();
    expect(await store.get('bobs')).toBeDefined();
    expect(store.bytes(alice)).toBeLessThanOrEqual(20_000);
  });

  it('over the store’s bound, the oldest finished task of anyone goes but not the config’s own, which stays first in line', async () => {
    // The owners' shares are out of the way: the store's bound is the one reached.
    const store = new InMemoryTaskStore({ maxBytes: 20_000, maxBytesPerOwner: 100_000 });
    const r = attach(store, 't1', alice);
    finish(store, r);
    const bobs = attach(store, 'bobs', bob, 5000);
    finish(store, bobs);
    await store.setPushConfig(config('t1', 'c0', 9000));
    expect(await store.get('bobs')).toBeDefined();
    await store.setPushConfig(config('t1', 'c1', 9000));
    // t1 finished first, so it heads the eviction queue: bob's task went instead.
    expect(await store.get('bobs')).toBeUndefined();
    expect(await store.get('t1')).toBeDefined();
    await expect(store.setPushConfig(config('t1', 'c2', 9000))).rejects.toMatchObject({
      code: 'TASK_STORE_OVER_BUDGET',
      scope: 'store',
    });
    expect(await store.listPushConfigs('t1')).toHaveLength(2);
    // Still evictable, and first: a new task of bob's takes its room.
    attach(store, 'bobs2', bob, 5000);
    expect(await store.get('t1')).toBeUndefined();
    expect(store.bytes(alice)).toBe(0);
  });
});

// ---- the agent ---------------------------------------------------------------------------

interface World {
  pki: Pki;
  server: Workload;
  client: Workload;
  heavy: Workload;
  app: MtlsFastifyInstance;
  hook: MtlsFastifyInstance;
  hookUrl: string;
  grpc: A2AGrpcServer;
  a2a: A2AServer;
  url: string;
  toHook: SecureChannel;
  sender: WebhookSender;
  clientCh: SecureChannel;
  heavyCh: SecureChannel;
  ran: string[];
  pushed: Array<{ token: unknown; body: StreamResponse }>;
  waiters: Array<() => void>;
}

let w: World;
const PER_CALLER = 64 * KiB;

beforeAll(async () => {
  const pki = await createPki();
  const server = await pki.workload('/agent/server');
  const client = await pki.workload('/agent/client');
  const heavy = await pki.workload('/agent/heavy');
  const webhook = await pki.workload('/webhook');
  const pushed: World['pushed'] = [];
  const waiters: Array<() => void> = [];
  const hook = mtlsServer(webhook);
  hook.addContentTypeParser('application/a2a+json', { parseAs: 'string' }, (_r, body, done) =>
    done(null, JSON.parse(body as string)),
  );
  hook.post('/hook', async (req) => {
    pushed.push({ token: req.headers['x-a2a-notification-token'], body: req.body as StreamResponse });
    for (const wake of waiters.splice(0)) wake();
    return { ok: true };
  });
  await hook.listen({ port: 0, host: '127.0.0.1' });
  // The agent pushes with its own SVID to the webhook's SPIFFE ID only.
  const toHook = channel(server, webhook.id);
  const sender = createWebhookSender({ dispatcher: toHook, allowAddresses: ['127.0.0.0/8'] });
  const ran: string[] = [];
  const a2a = new A2AServer({
    card: { name: 'push limits', description: 'push config limits', version: '1.0.0' },
    selfId: server.id,
    heartbeatMs: 0,
    enforcer: LocalPolicyEnforcer.fromObject(
      {
        version: 1,
        id: 'push-limits',
        default: 'deny',
        rules: [
          {
            id: 'all',
            effect: 'allow',
            callers: [client.id.toString(), heavy.id.toString()],
            actions: ['*'],
          },
        ],
      },
      { audit: { record() {} } },
    ),
    push: { enabled: true, send: sender },
    limits: { retainedBytes: { total: 1024 * KiB, perCaller: PER_CALLER } },
  });
  a2a.registerTaskHandler({ id: 'echo', name: 'echo', description: 'echo', tags: [] }, (ctx) => {
    ran.push(ctx.taskId);
    return `echo: ${ctx.message.parts[0]?.text ?? ''}`;
  });
  a2a.registerTaskHandler({ id: 'ask', name: 'ask', description: 'asks', tags: [] }, async (ctx) => {
    const reply = await ctx.requestInput('which city?');
    return `city: ${reply.parts[0]?.text ?? ''}`;
  });
  const app = mtlsServer(server);
  await app.register(a2a.plugin);
  await app.listen({ port: 0, host: '127.0.0.1' });
  const grpc = new A2AGrpcServer({
    handler: a2a.handler,
    identity: server.identity,
    authorize: authorizeOneOf(client.id, heavy.id),
  });
  await grpc.listen();
  w = {
    pki,
    server,
    client,
    heavy,
    app,
    hook,
    hookUrl: `${baseUrl(hook)}/hook`,
    grpc,
    a2a,
    url: baseUrl(app),
    toHook,
    sender,
    clientCh: channel(client, server.id),
    heavyCh: channel(heavy, server.id),
    ran,
    pushed,
    waiters,
  };
});

afterAll(async () => {
  w.sender.close();
  await w.a2a.close();
  await w.grpc.close(100);
  await w.clientCh.close();
  await w.heavyCh.close();
  await w.toHook.close();
  await w.app.close();
  await w.hook.close();
  await w.pki.close();
});

function bindingFor(name: BindingUnderTest, who: 'client' | 'heavy' = 'client'): RawBinding {
  const ch = who === 'client' ? w.clientCh : w.heavyCh;
  if (name === 'JSONRPC') return jsonRpcBinding(w.url, ch);
  if (name === 'HTTP+JSON') return restBinding(w.url, ch);
  return grpcBinding(w.grpc.url as string, who === 'client' ? w.client : w.heavy, w.server.id);
}

// Results are read loosely here; each test asserts the shape it depends on.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
function ok(o: CallOutcome): any {
  if (!o.ok) throw new Error(`call failed: ${o.error.code} ${o.error.message}`);
  return o.result;
}

const message = (text: string, extra: Record<string, unknown> = {}) => ({
  messageId: `m-${Math.random().toString(36).slice(2)}`,
  role: 'ROLE_USER',
  parts: [{ text }],
  ...extra,
});

/** Resolves once the webhook got an event for which `found` holds. */
async function pushedWhere(found: (e: StreamResponse) => boolean): Promise<StreamResponse> {
  for (;;) {
    const hit = w.pushed.find((p) => found(p.body));
    if (hit) return hit.body;
    await new Promise<void>((r) => w.waiters.push(r));
  }
}

describe('push config strings are bounded', () => {
  let b: RawBinding;
  let taskId: string;
  beforeAll(async () => {
    b = bindingFor('JSONRPC');
    const r = ok(await b.call('SendMessage', { message: message('x', { metadata: { skill: 'echo' } }) }));
    taskId = (r.task as Task).id;
  });
  afterAll(() => b.close());

  const over = (n: number) => 'a'.repeat(n + 1);
  it.each([
    ['url', () => ({ url: `${w.hookUrl}?${over(PUSH_CONFIG_LIMITS.url)}` })],
    ['id', () => ({ url: w.hookUrl, id: over(PUSH_CONFIG_LIMITS.id) })],
    ['token', () => ({ url: w.hookUrl, token: over(PUSH_CONFIG_LIMITS.token) })],
    [
      'authentication.scheme',
      () => ({ url: w.hookUrl, authentication: { scheme: over(PUSH_CONFIG_LIMITS.scheme) } }),
    ],
    [
      'authentication.credentials',
      () => ({
        url: w.hookUrl,
        authentication: { scheme: 'Bearer', credentials: over(PUSH_CONFIG_LIMITS.credentials) },
      }),
    ],
  ])('a %s over its bound is INVALID_PARAMS naming it', async (field, make) => {
    const err = refused(await b.call('CreateTaskPushNotificationConfig', { taskId, ...make() }));
    expect(err.jsonRpcCode).toBe(-32602);
    expect(err.message).toContain(`${field}:`);
    expect(ok(await b.call('ListTaskPushNotificationConfigs', { taskId })).configs ?? []).toEqual([]);
  });

  it('each string at its bound is taken', async () => {
    const url = `${w.hookUrl}?`;
    const c = ok(
      await b.call('CreateTaskPushNotificationConfig', {
        taskId,
        id: 'i'.repeat(PUSH_CONFIG_LIMITS.id),
        url: url + 'q'.repeat(PUSH_CONFIG_LIMITS.url - url.length),
        token: 't'.repeat(PUSH_CONFIG_LIMITS.token),
        authentication: {
          scheme: 'S'.repeat(PUSH_CONFIG_LIMITS.scheme),
          credentials: 'c'.repeat(PUSH_CONFIG_LIMITS.credentials),
        },
      }),
    );
    expect(c.url).toHaveLength(PUSH_CONFIG_LIMITS.url);
    ok(await b.call('DeleteTaskPushNotificationConfig', { taskId, id: c.id }));
  });

  it('the same bounds hold for a config sent with SendMessage, and nothing is created', async () => {
    const before = w.ran.length;
    const err = refused(
      await b.call('SendMessage', {
        message: message('x', { metadata: { skill: 'echo' } }),
        configuration: {
          taskPushNotificationConfig: { url: w.hookUrl, token: over(PUSH_CONFIG_LIMITS.token) },
        },
      }),
    );
    expect(err.jsonRpcCode).toBe(-32602);
    expect(err.message).toContain('configuration.taskPushNotificationConfig.token:');
    expect(w.ran.length).toBe(before);
  });
});

describe('push configs count in the caller’s share of task memory', () => {
  it('a caller cannot park more config bytes than its share on a finished task; a deleted config gives its room back', async () => {
    const b = bindingFor('JSONRPC', 'heavy');
    try {
      const r = ok(await b.call('SendMessage', { message: message('x', { metadata: { skill: 'echo' } }) }));
      const task = r.task as Task;
      expect(task.status.state).toBe('TASK_STATE_COMPLETED');
      // As large as the bounds let a config be: ~8 KiB each, 16 of them twice the share.
      const big = (id: string) => ({
        taskId: task.id,
        id,
        url: w.hookUrl,
        token: 't'.repeat(PUSH_CONFIG_LIMITS.token),
        authentication: { scheme: 'Bearer', credentials: 'c'.repeat(PUSH_CONFIG_LIMITS.credentials) },
      });
      let accepted = 0;
      let refusal: ReturnType<typeof refused> | undefined;
      for (let i = 0; i < 16 && refusal === undefined; i++) {
        const o = await b.call('CreateTaskPushNotificationConfig', big(`c${i}`));
        if (o.ok) accepted++;
        else refusal = refused(o);
      }
      expect(refusal?.code).toBe('RESOURCE_EXHAUSTED');
      expect(refusal?.message).toContain(w.heavy.id.toString());
      expect((refusal?.data as Array<{ metadata?: Record<string, string> }>)[0]?.metadata).toMatchObject({
        scope: 'caller',
        limitBytes: String(PER_CALLER),
      });
      expect(accepted).toBeGreaterThan(0);
      expect(accepted).toBeLessThan(16);
      const store = w.a2a.manager.store as InMemoryTaskStore;
      expect(store.bytes(w.heavy.id.toString())).toBeLessThanOrEqual(PER_CALLER);
      // The refused config was not kept; deleting one makes room for it.
      const ids = (
        ok(await b.call('ListTaskPushNotificationConfigs', { taskId: task.id })).configs as Array<{
          id: string;
        }>
      ).map((c) => c.id);
      expect(ids).toHaveLength(accepted);
      ok(await b.call('DeleteTaskPushNotificationConfig', { taskId: task.id, id: 'c0' }));
      ok(await b.call('CreateTaskPushNotificationConfig', big(`c${accepted}`)));
    } finally {
      b.close();
    }
  });
});

describe.each(['JSONRPC', 'HTTP+JSON', 'GRPC'] as const)('binding %s', (name) => {
  let b: RawBinding;
  beforeAll(() => {
    b = bindingFor(name);
  });
  afterAll(() => b.close());

  async function asking(): Promise<Task> {
    const r = ok(await b.call('SendMessage', { message: message('go', { metadata: { skill: 'ask' } }) }));
    expect((r.task as Task).status.state).toBe('TASK_STATE_INPUT_REQUIRED');
    return r.task as Task;
  }

  it('a push config sent with a follow-up message is added to the task it continues', async () => {
    const task = await asking();
    const token = `follow-up-${name}`;
    ok(
      await b.call('SendMessage', {
        message: message('Paris', { taskId: task.id, contextId: task.contextId }),
        configuration: { returnImmediately: true, taskPushNotificationConfig: { url: w.hookUrl, token } },
      }),
    );
    const configs = ok(await b.call('ListTaskPushNotificationConfigs', { taskId: task.id }))
      .configs as Array<{
      url: string;
      token?: string;
    }>;
    expect(configs.map((c) => c.url)).toEqual([w.hookUrl]);
    expect(configs[0]?.token).toBeUndefined();
    const done = await pushedWhere(
      (e) =>
        'statusUpdate' in e &&
        e.statusUpdate.taskId === task.id &&
        e.statusUpdate.status.state === 'TASK_STATE_COMPLETED',
    );
    expect(done).toBeDefined();
    expect(w.pushed.filter((p) => JSON.stringify(p.body).includes(task.id)).map((p) => p.token)).toContain(
      token,
    );
  });

  it('of two replies racing to one waiting task, each with a webhook, only the one taken keeps its config', async () => {
    if (name !== 'JSONRPC') return; // the race is in the request handler, the same for every binding
    const task = await asking();
    const ctx = { caller: w.client.id, headers: { 'a2a-version': '1.0' }, binding: 'JSONRPC' as const };
    const reply = (city: string) =>
      w.a2a.handler.sendMessage(ctx, {
        message: message(city, { taskId: task.id, contextId: task.contextId }),
        configuration: { returnImmediately: true, taskPushNotificationConfig: { url: w.hookUrl, id: city } },
      });
    // Both start before either has stored its config (each store awaits).
    const results = await Promise.allSettled([reply('Paris'), reply('Rome')]);
    const taken = results.filter((r) => r.status === 'fulfilled');
    expect(taken).toHaveLength(1);
    const lost = results.find((r) => r.status === 'rejected') as PromiseRejectedResult;
    expect(lost.reason).toMatchObject({ code: 'UNSUPPORTED_OPERATION' });
    const ids = (await (w.a2a.manager.store as InMemoryTaskStore).listPushConfigs(task.id)).map((c) => c.id);
    expect(ids).toHaveLength(1);
    expect(['Paris', 'Rome']).toContain(ids[0]);
  });

  it('a follow-up whose webhook the URL guard refuses is INVALID_PARAMS and leaves the task waiting', async () => {
    const task = await asking();
    const err = refused(
      await b.call('SendMessage', {
        message: message('Paris', { taskId: task.id }),
        configuration: { taskPushNotificationConfig: { url: METADATA_URL } },
      }),
    );
    expect(err.code).toBe('INVALID_PARAMS');
    expect(err.jsonRpcCode).toBe(-32602);
    expect(err.message).toMatch(/URL refused.*linkLocal/);
    expect(ok(await b.call('ListTaskPushNotificationConfigs', { taskId: task.id })).configs ?? []).toEqual(
      [],
    );
    expect((ok(await b.call('GetTask', { id: task.id })) as Task).status.state).toBe(
      'TASK_STATE_INPUT_REQUIRED',
    );
    // The reply was not taken: it can still be given.
    const r = ok(await b.call('SendMessage', { message: message('Rome', { taskId: task.id }) }));
    expect((r.task as Task).status.state).toBe('TASK_STATE_COMPLETED');
  });

  it('a new task whose webhook the URL guard refuses is not created', async () => {
    const before = (ok(await b.call('ListTasks', {})).tasks as Task[]).map((t) => t.id);
    const ran = w.ran.length;
    const err = refused(
      await b.call('SendMessage', {
        message: message('x', { metadata: { skill: 'echo' } }),
        configuration: { taskPushNotificationConfig: { url: METADATA_URL } },
      }),
    );
    expect(err.jsonRpcCode).toBe(-32602);
    expect(err.message).toMatch(/URL refused/);
    const after = (ok(await b.call('ListTasks', {})).tasks as Task[]).map((t) => t.id);
    expect(after).toEqual(before);
    expect(w.ran.length).toBe(ran);
  });
});

// ---- the SSRF guard ----------------------------------------------------------------------

describe('SSRF guard: IPv4-compatible IPv6 (::/96)', () => {
  it.each([
    'https://[::a9fe:a9fe]/latest/meta-data/', // 169.254.169.254
    'https://[::169.254.169.254]/',
    'http://[::7f00:1]:9/', // 127.0.0.1
    'http://[::a00:1]/', // 10.0.0.1
    'http://[::808:808]/', // 8.8.8.8: the form itself is refused, whatever it hides
  ])('refuses %s', async (url) => {
    const err = await checkWebhookUrl(url).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PushUrlRefusedError);
    expect((err as Error).message).toContain('IPv4-compatible');
  });

  it('refuses a name that resolves to one, in either spelling', async () => {
    for (const address of ['::a9fe:a9fe', '::169.254.169.254', '::1.2.3.4']) {
      await expect(
        checkWebhookUrl('https://hooks.example.com/', { lookup: () => Promise.resolve([address]) }),
      ).rejects.toThrow(/IPv4-compatible/);
    }
  });

  it('takes one when allowed explicitly, and still takes public IPv6', async () => {
    await expect(
      checkWebhookUrl('https://[::a9fe:a9fe]/', { allowAddresses: ['::/96'] }),
    ).resolves.toMatchObject({ address: '::a9fe:a9fe' });
    await expect(checkWebhookUrl('https://[2606:4700::1111]/')).resolves.toMatchObject({
      address: '2606:4700::1111',
    });
  });
});

describe('an agent that sends no push notifications', () => {
  it('refuses a push config given with SendMessage (-32003), as CreateTaskPushNotificationConfig does, and runs nothing', async () => {
    const ran: string[] = [];
    const h = await startHarness((a2a) => serveEcho(a2a, ran));
    try {
      const err = refused(
        await jsonRpcBinding(h.url, h.agent).call('SendMessage', {
          message: { messageId: 'no-push', role: 'ROLE_USER', parts: [{ text: 'x' }] },
          metadata: { skill: 'echo' },
          configuration: { taskPushNotificationConfig: { url: 'https://127.0.0.1:9/hook' } },
        }),
      );
      expect(err.jsonRpcCode).toBe(-32003);
      expect(ran).toEqual([]);
      expect(h.a2a.manager.store instanceof InMemoryTaskStore && h.a2a.manager.store.size).toBe(0);
    } finally {
      await h.close();
    }
  });
});
