// A2A v1.0 conformance points found by comparing Weave's server with the
// specification and the official Python SDK, on each binding (JSON-RPC,
// HTTP+JSON, gRPC) where the point applies: a reply whose contextId is not
// its task's (§3.4.3), the A2A-Version Major.Minor match (§3.6.2) and the
// version as a request parameter (§3.6.1), historyLength 0 (§3.2.4), a
// message's required parts (§5.7), a proto3 default as no filter, int32
// query numbers and percent-encoded ids on HTTP+JSON. Real mTLS with dev-CA
// SVIDs, real fastify and grpc-js servers on loopback.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request } from 'undici';
import {
  a2aErrorFromRest,
  type A2AError,
  type A2AGrpcServer,
  type StreamResponse,
  type Task,
} from '../src/index.js';
import { rawBinding, serveEcho, serveGrpc, startHarness, type Harness } from './helpers/agents.js';
import {
  jsonRpcBinding,
  restBinding,
  type BindingUnderTest,
  type CallOutcome,
  type RawBinding,
} from './helpers/raw-bindings.js';

const BINDINGS = ['JSONRPC', 'HTTP+JSON', 'GRPC'] as const;
const HOOK = 'https://127.0.0.1:9/hook';

/** The status each binding answers an error with (JSON-RPC: HTTP; HTTP+JSON: HTTP; gRPC: status code). */
const STATUS: Record<string, Record<BindingUnderTest, number>> = {
  INVALID_PARAMS: { JSONRPC: 200, 'HTTP+JSON': 400, GRPC: 3 },
  VERSION_NOT_SUPPORTED: { JSONRPC: 200, 'HTTP+JSON': 400, GRPC: 9 },
  TASK_NOT_FOUND: { JSONRPC: 200, 'HTTP+JSON': 404, GRPC: 5 },
};

let h: Harness;
let grpc: A2AGrpcServer;
/** Callers of each echo run. */
const ran: string[] = [];
/** Each reply an `ask` handler was given, as `<taskId>:<text>`. */
const replies: string[] = [];

beforeAll(async () => {
  h = await startHarness(
    (a2a) => {
      serveEcho(a2a, ran);
      a2a.registerTaskHandler({ id: 'ask', name: 'ask', description: 'asks', tags: [] }, async (ctx) => {
        const reply = await ctx.requestInput('which city?');
        replies.push(`${ctx.taskId}:${reply.parts[0]?.text ?? ''}`);
        return `city: ${reply.parts[0]?.text ?? ''}`;
      });
      // Bare: registered by id alone, no tags and no description.
      a2a.registerTaskHandler('bare', () => 'bare');
      a2a.registerTaskHandler(
        { id: 'ops', name: 'Ops', description: 'for operators', tags: ['ops', 'admin'] },
        () => 'ops',
        { extended: true },
      );
    },
    {
      push: { enabled: true, send: async () => undefined },
      extendedCard: () => h.a2a.extendedAgentCard(h.url),
    },
  );
  grpc = await serveGrpc(h);
});
afterAll(async () => {
  await grpc.close(100);
  await h.close();
});

const bindingFor = (name: BindingUnderTest): RawBinding => rawBinding(h, grpc, name);

// Results are read loosely here; each test asserts the shape it depends on.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
function ok(o: CallOutcome): any {
  if (!o.ok) throw new Error(`call failed: ${o.error.code} ${o.error.message}`);
  return o.result;
}

function expectFailure(o: CallOutcome, reason: string, binding: BindingUnderTest): A2AError {
  if (o.ok) throw new Error(`expected ${reason}, got ${JSON.stringify(o.result).slice(0, 200)}`);
  expect(o.error.code).toBe(reason);
  expect(o.status).toBe(STATUS[reason]?.[binding]);
  return o.error;
}

const message = (text: string, extra: Record<string, unknown> = {}) => ({
  messageId: `m-${Math.random().toString(36).slice(2)}`,
  role: 'ROLE_USER',
  parts: [{ text }],
  ...extra,
});

/** A raw HTTP request over the client's mTLS channel, no A2A-Version unless given. */
async function raw(
  method: 'GET' | 'POST',
  path: string,
  headers: Record<string, string> = {},
  body?: unknown,
): Promise<{ status: number; json: unknown }> {
  const res = await request(`${h.url}${path}`, {
    method,
    dispatcher: h.agent,
    headers: body === undefined ? headers : { 'content-type': 'application/json', ...headers },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await res.body.text();
  return { status: res.statusCode, json: text === '' ? undefined : (JSON.parse(text) as unknown) };
}

/** An `ask` task waiting for its reply. */
async function askTask(b: RawBinding): Promise<Task> {
  const t = ok(await b.call('SendMessage', { message: message('start', { metadata: { skill: 'ask' } }) }))
    .task as Task;
  expect(t.status.state).toBe('TASK_STATE_INPUT_REQUIRED');
  return t;
}

describe.each(BINDINGS)('§3.4.3 a reply whose contextId is not its task’s, over %s', (name) => {
  let b: RawBinding;
  beforeAll(() => {
    b = bindingFor(name);
  });
  afterAll(() => b.close());

  it('is INVALID_PARAMS and changes nothing: the reply is not taken, the handler not resumed', async () => {
    const t = await askTask(b);
    const before = ok(await b.call('GetTask', { id: t.id })) as Task;
    const r = await b.call('SendMessage', {
      message: message('Paris', { taskId: t.id, contextId: 'another-context' }),
    });
    const e = expectFailure(r, 'INVALID_PARAMS', name);
    expect(e.jsonRpcCode).toBe(-32602);
    expect(e.message).toContain('another-context');
    const after = ok(await b.call('GetTask', { id: t.id })) as Task;
    expect(after.status.state).toBe('TASK_STATE_INPUT_REQUIRED');
    expect(after.contextId).toBe(t.contextId);
    expect(after.history).toEqual(before.history);
    expect(replies.filter((x) => x.startsWith(`${t.id}:`))).toEqual([]);

    // Streamed, the same: refused before the first event.
    const s = await b.stream('SendStreamingMessage', {
      message: message('Rome', { taskId: t.id, contextId: 'another-context' }),
    });
    expect(s.events).toEqual([]);
    expect(s.failure?.error.code).toBe('INVALID_PARAMS');
    expect(((ok(await b.call('GetTask', { id: t.id })) as Task).history ?? []).length).toBe(
      before.history?.length ?? 0,
    );
    expect(replies.filter((x) => x.startsWith(`${t.id}:`))).toEqual([]);

    // The task's own contextId, or none, is taken.
    const done = ok(
      await b.call('SendMessage', { message: message('Oslo', { taskId: t.id, contextId: t.contextId }) }),
    ).task as Task;
    expect(done.status.state).toBe('TASK_STATE_COMPLETED');
    expect(replies.filter((x) => x.startsWith(`${t.id}:`))).toEqual([`${t.id}:Oslo`]);
  });

  it('a reply with a taskId and no contextId is taken, in the task’s context', async () => {
    const t = await askTask(b);
    const done = ok(await b.call('SendMessage', { message: message('Lima', { taskId: t.id }) })).task as Task;
    expect(done.status.state).toBe('TASK_STATE_COMPLETED');
    expect(done.contextId).toBe(t.contextId);
    expect(replies).toContain(`${t.id}:Lima`);
  });

  it('is answered before the task’s state: a finished task with another contextId is INVALID_PARAMS too', async () => {
    const t = ok(await b.call('SendMessage', { message: message('e', { metadata: { skill: 'echo' } }) }))
      .task as Task;
    expect(t.status.state).toBe('TASK_STATE_COMPLETED');
    expectFailure(
      await b.call('SendMessage', { message: message('again', { taskId: t.id, contextId: 'other' }) }),
      'INVALID_PARAMS',
      name,
    );
    // With its own context it is the terminal-state refusal, as before.
    const same = await b.call('SendMessage', {
      message: message('again', { taskId: t.id, contextId: t.contextId }),
    });
    expect(same.ok ? undefined : same.error.code).toBe('UNSUPPORTED_OPERATION');
  });
});

describe.each(BINDINGS)('§3.6.2 A2A-Version matched on Major.Minor, over %s', (name) => {
  let b: RawBinding;
  beforeAll(() => {
    b = bindingFor(name);
  });
  afterAll(() => b.close());

  it.each(['1.1', '1.9', '1.10', '2.0'])('%s is VERSION_NOT_SUPPORTED and runs nothing', async (v) => {
    const before = ran.length;
    const r = await b.call(
      'SendMessage',
      { message: message('v', { metadata: { skill: 'echo' } }) },
      { 'a2a-version': v },
    );
    expect(expectFailure(r, 'VERSION_NOT_SUPPORTED', name).jsonRpcCode).toBe(-32009);
    expect(ran.length).toBe(before);
  });

  it.each(['1.0', '1.0.0', '1.0.7'])('%s is served (a patch number is not considered)', async (v) => {
    const r = await b.call(
      'SendMessage',
      { message: message('v', { metadata: { skill: 'echo' } }) },
      { 'a2a-version': v },
    );
    expect((ok(r).task as Task).status.state).toBe('TASK_STATE_COMPLETED');
  });
});

describe('§3.6.1 A2A-Version as a request parameter', () => {
  let t: Task;
  beforeAll(async () => {
    t = ok(
      await jsonRpcBinding(h.url, h.agent).call('SendMessage', {
        message: message('q', { metadata: { skill: 'echo' } }),
      }),
    ).task as Task;
  });
  const rpcBody = (method: string, params: unknown) => ({ jsonrpc: '2.0', id: 1, method, params });
  const echo = () => ({ message: message('q', { metadata: { skill: 'echo' } }) });

  it('HTTP+JSON: an unsupported version given as the parameter is refused, nothing run', async () => {
    const get = await raw('GET', `/tasks/${t.id}?A2A-Version=2.0`);
    expect(get.status).toBe(400);
    expect(a2aErrorFromRest(get.json as never, get.status).code).toBe('VERSION_NOT_SUPPORTED');
    const before = ran.length;
    const send = await raw('POST', '/message:send?a2a-version=1.1', {}, echo());
    expect(a2aErrorFromRest(send.json as never, send.status).code).toBe('VERSION_NOT_SUPPORTED');
    expect(ran.length).toBe(before);
    expect((await raw('GET', `/tasks/${t.id}?A2A-Version=1.0`)).status).toBe(200);
  });

  it('JSON-RPC: an unsupported version given as the parameter is refused, nothing run', async () => {
    const get = await raw('POST', '/?A2A-Version=2.0', {}, rpcBody('GetTask', { id: t.id }));
    expect((get.json as { error?: { code: number } }).error?.code).toBe(-32009);
    const before = ran.length;
    const send = await raw('POST', '/?a2a-version=1.1', {}, rpcBody('SendMessage', echo()));
    expect((send.json as { error?: { code: number } }).error?.code).toBe(-32009);
    expect(ran.length).toBe(before);
    // The parameter picks the v0.3 dialect as the header does.
    const v03 = await raw('POST', '/?A2A-Version=0.3', {}, rpcBody('tasks/get', { id: t.id }));
    expect((v03.json as { result?: { kind?: string } }).result?.kind).toBe('task');
  });

  it('the header wins over the parameter on both HTTP bindings', async () => {
    const rest = await raw('GET', `/tasks/${t.id}?A2A-Version=2.0`, { 'a2a-version': '1.0' });
    expect(rest.status).toBe(200);
    const refusedRest = await raw('GET', `/tasks/${t.id}?A2A-Version=1.0`, { 'a2a-version': '2.0' });
    expect(refusedRest.status).toBe(400);
    const rpc = await raw(
      'POST',
      '/?A2A-Version=2.0',
      { 'a2a-version': '1.0' },
      rpcBody('GetTask', { id: t.id }),
    );
    expect((rpc.json as { result?: Task }).result?.id).toBe(t.id);
  });
});

describe.each(BINDINGS)('historyLength, over %s', (name) => {
  let b: RawBinding;
  beforeAll(() => {
    b = bindingFor(name);
  });
  afterAll(() => b.close());

  it('the largest int32 is read as every binding reads it: all the history', async () => {
    const t = ok(await b.call('SendMessage', { message: message('n', { metadata: { skill: 'echo' } }) }))
      .task as Task;
    const full = ok(await b.call('GetTask', { id: t.id })) as Task;
    expect(full.history?.length).toBeGreaterThan(0);
    for (const n of [2147483647, 1234567890]) {
      const got = ok(await b.call('GetTask', { id: t.id, historyLength: n })) as Task;
      expect(got.history).toEqual(full.history);
      const listed = ok(await b.call('ListTasks', { contextId: t.contextId, historyLength: n }));
      expect((listed.tasks as Task[])[0]?.history).toEqual(full.history);
    }
  });

  // On gRPC an empty repeated field and an absent one are the same bytes.
  (name === 'GRPC' ? it.skip : it)('0 leaves the history field out (§3.2.4)', async () => {
    const sent = ok(
      await b.call('SendMessage', {
        message: message('z', { metadata: { skill: 'echo' } }),
        configuration: { historyLength: 0 },
      }),
    ).task as Task;
    expect(sent.status.state).toBe('TASK_STATE_COMPLETED');
    expect('history' in sent).toBe(false);
    const got = ok(await b.call('GetTask', { id: sent.id, historyLength: 0 })) as Task;
    expect('history' in got).toBe(false);
    const listed = ok(await b.call('ListTasks', { contextId: sent.contextId, historyLength: 0 }));
    expect((listed.tasks as Task[]).map((x) => 'history' in x)).toEqual([false]);
    // Unset, the history is there.
    expect((ok(await b.call('GetTask', { id: sent.id })) as Task).history?.length).toBeGreaterThan(0);
  });

  it('SendStreamingMessage applies it to every Task event of the stream, not to the task kept', async () => {
    const historyOf = (events: StreamResponse[]) =>
      events.flatMap((e) => ('task' in e ? [e.task.history?.map((m) => m.parts[0]?.text) ?? []] : []));
    // A new task: its stream replays the task's log from the first event.
    const first = await b.stream('SendStreamingMessage', {
      message: message('start', { metadata: { skill: 'ask' } }),
      configuration: { historyLength: 0 },
    });
    expect(first.failure).toBeUndefined();
    expect(historyOf(first.events)).toEqual([[]]);
    const t = (first.events.find((e) => 'task' in e) as { task: Task }).task;
    expect((ok(await b.call('GetTask', { id: t.id })) as Task).history?.length).toBe(2);

    // A reply: the stream starts with the task as it was when the reply came
    // (its last message, the input request), then the updates, uncut.
    const reply = await b.stream('SendStreamingMessage', {
      message: message('Oslo', { taskId: t.id }),
      configuration: { historyLength: 1 },
    });
    expect(historyOf(reply.events)).toEqual([['which city?']]);
    expect(reply.events.map((e) => Object.keys(e)[0])).toEqual([
      'task',
      'statusUpdate',
      'artifactUpdate',
      'statusUpdate',
    ]);
    const kept = ok(await b.call('GetTask', { id: t.id })) as Task;
    expect(kept.status.state).toBe('TASK_STATE_COMPLETED');
    expect(kept.history?.map((m) => m.parts[0]?.text)).toEqual(['start', 'which city?', 'Oslo']);
  });
});

describe.each(BINDINGS)('§3.1.8 a push notification config that does not exist, over %s', (name) => {
  let b: RawBinding;
  beforeAll(() => {
    b = bindingFor(name);
  });
  afterAll(() => b.close());

  it('GetTaskPushNotificationConfig is TaskNotFoundError (§3.3.2) naming the config; Delete stays idempotent', async () => {
    const t = await askTask(b);
    ok(await b.call('CreateTaskPushNotificationConfig', { taskId: t.id, id: 'there', url: HOOK }));
    const e = expectFailure(
      await b.call('GetTaskPushNotificationConfig', { taskId: t.id, id: 'absent' }),
      'TASK_NOT_FOUND',
      name,
    );
    expect(e.jsonRpcCode).toBe(-32001);
    expect(e.message).toBe(`Push notification config "absent" does not exist on task ${t.id}`);
    // The config that is there is found; deleted, it is not, and deleting it again succeeds.
    expect(ok(await b.call('GetTaskPushNotificationConfig', { taskId: t.id, id: 'there' })).id).toBe('there');
    ok(await b.call('DeleteTaskPushNotificationConfig', { taskId: t.id, id: 'there' }));
    ok(await b.call('DeleteTaskPushNotificationConfig', { taskId: t.id, id: 'there' }));
    expectFailure(
      await b.call('GetTaskPushNotificationConfig', { taskId: t.id, id: 'there' }),
      'TASK_NOT_FOUND',
      name,
    );
    ok(await b.call('CancelTask', { id: t.id }));
  });
});

describe.each(BINDINGS)('ListTaskPushNotificationConfigs pages (§3.1.9), over %s', (name) => {
  let b: RawBinding;
  beforeAll(() => {
    b = bindingFor(name);
  });
  afterAll(() => b.close());

  it('returns at most pageSize configs and a token to the rest; a foreign or made-up token is INVALID_PARAMS', async () => {
    const t = await askTask(b);
    const other = await askTask(b);
    for (const id of ['p1', 'p2', 'p3']) {
      ok(await b.call('CreateTaskPushNotificationConfig', { taskId: t.id, id, url: HOOK }));
    }
    const all = ok(await b.call('ListTaskPushNotificationConfigs', { taskId: t.id }));
    expect(all.configs.map((c: { id: string }) => c.id)).toEqual(['p1', 'p2', 'p3']);
    expect(all.nextPageToken ?? '').toBe('');
    const first = ok(await b.call('ListTaskPushNotificationConfigs', { taskId: t.id, pageSize: 2 }));
    expect(first.configs.map((c: { id: string }) => c.id)).toEqual(['p1', 'p2']);
    expect(first.nextPageToken).not.toBe('');
    const rest = ok(
      await b.call('ListTaskPushNotificationConfigs', {
        taskId: t.id,
        pageSize: 2,
        pageToken: first.nextPageToken,
      }),
    );
    expect(rest.configs.map((c: { id: string }) => c.id)).toEqual(['p3']);
    expect(rest.nextPageToken ?? '').toBe('');
    expectFailure(
      await b.call('ListTaskPushNotificationConfigs', { taskId: other.id, pageToken: first.nextPageToken }),
      'INVALID_PARAMS',
      name,
    );
    expectFailure(
      await b.call('ListTaskPushNotificationConfigs', { taskId: t.id, pageToken: 'garbage' }),
      'INVALID_PARAMS',
      name,
    );
  });
});

describe.each(BINDINGS)('§5.7 required arrays and proto3 defaults, over %s', (name) => {
  let b: RawBinding;
  beforeAll(() => {
    b = bindingFor(name);
  });
  afterAll(() => b.close());

  it('every skill on the cards has a tag and a description, however it was registered', async () => {
    const expected = [
      { id: 'echo', name: 'Echo', description: 'echo', tags: ['echo'] },
      { id: 'ask', name: 'ask', description: 'asks', tags: ['ask'] },
      { id: 'bare', name: 'bare', description: 'bare', tags: ['bare'] },
    ];
    const ops = { id: 'ops', name: 'Ops', description: 'for operators', tags: ['ops', 'admin'] };
    const ext = ok(await b.call('GetExtendedAgentCard', {}));
    expect(ext.skills).toEqual([...expected, ops]);
    // The public card, over HTTP whatever the binding, publishes the same skills.
    const pub = await raw('GET', '/.well-known/agent-card.json');
    expect((pub.json as { skills: unknown[] }).skills).toEqual(expected);
  });

  it('a message with no parts is INVALID_PARAMS and runs nothing', async () => {
    const before = ran.length;
    const e = expectFailure(
      await b.call('SendMessage', { message: message('x', { parts: [], metadata: { skill: 'echo' } }) }),
      'INVALID_PARAMS',
      name,
    );
    expect(e.message).toContain('message.parts: at least one part is required');
    const streamed = await b.stream('SendStreamingMessage', {
      message: message('x', { parts: [], metadata: { skill: 'echo' } }),
    });
    expect(streamed.events).toEqual([]);
    expect(streamed.failure?.error.code).toBe('INVALID_PARAMS');
    expect(ran.length).toBe(before);
  });

  it('a ListTasks pageToken is refused under another filter than the one it was issued for', async () => {
    const ctxA = `pages-a-${name}`;
    const ctxB = `pages-b-${name}`;
    for (const contextId of [ctxA, ctxB, ctxA, ctxB, ctxA, ctxB]) {
      ok(await b.call('SendMessage', { message: message('p', { contextId, metadata: { skill: 'echo' } }) }));
    }
    const since = '2000-01-01T00:00:00Z';
    const first = ok(await b.call('ListTasks', { contextId: ctxA, pageSize: 2 }));
    const token = first.nextPageToken as string;
    expect(token).not.toBe('');
    // The same query: the next page.
    const next = ok(await b.call('ListTasks', { contextId: ctxA, pageSize: 2, pageToken: token }));
    expect((next.tasks as Task[]).map((t) => t.contextId)).toEqual([ctxA]);
    expect(next.nextPageToken).toBe('');
    // Another query (each filter in turn): refused, not one page of it.
    for (const other of [
      { contextId: ctxB },
      {},
      { contextId: ctxA, status: 'TASK_STATE_COMPLETED' },
      { contextId: ctxA, statusTimestampAfter: since },
      { contextId: ctxA, tenant: 'elsewhere' },
    ]) {
      const e = expectFailure(
        await b.call('ListTasks', { ...other, pageSize: 2, pageToken: token }),
        'INVALID_PARAMS',
        name,
      );
      expect(e.message).toBe('Invalid params: pageToken was issued for another query');
    }
    // Each filter is bound: a token issued with a status and a time goes on with them.
    const filtered = { contextId: ctxA, status: 'TASK_STATE_COMPLETED', statusTimestampAfter: since };
    const f1 = ok(await b.call('ListTasks', { ...filtered, pageSize: 2 }));
    const f2 = ok(await b.call('ListTasks', { ...filtered, pageSize: 2, pageToken: f1.nextPageToken }));
    expect((f2.tasks as Task[]).length).toBe(1);
    expectFailure(
      await b.call('ListTasks', { contextId: ctxA, pageSize: 2, pageToken: f1.nextPageToken }),
      'INVALID_PARAMS',
      name,
    );
    // A token without the query's hash (an earlier release's, mid-upgrade) is taken as it was.
    const { q: _q, ...position } = JSON.parse(Buffer.from(token, 'base64url').toString('utf8')) as {
      q?: string;
    };
    const legacy = Buffer.from(JSON.stringify(position)).toString('base64url');
    const old = ok(await b.call('ListTasks', { contextId: ctxA, pageSize: 2, pageToken: legacy }));
    expect((old.tasks as Task[]).map((t) => t.id)).toEqual((next.tasks as Task[]).map((t) => t.id));
  });

  it('ListTasks with contextId "" (a string field at its proto3 default) lists as with none', async () => {
    ok(await b.call('SendMessage', { message: message('l', { metadata: { skill: 'echo' } }) }));
    const all = ok(await b.call('ListTasks', {}));
    const empty = ok(await b.call('ListTasks', { contextId: '' }));
    expect(all.totalSize).toBeGreaterThan(0);
    expect(empty.totalSize).toBe(all.totalSize);
  });
});

describe('§13.3 caching headers of the extended agent card', () => {
  const get = async (headers: Record<string, string> = {}, dispatcher = h.agent) => {
    const res = await request(`${h.url}/extendedAgentCard`, {
      dispatcher,
      headers: { 'a2a-version': '1.0', ...headers },
    });
    return { status: res.statusCode, headers: res.headers, text: await res.body.text() };
  };

  it('HTTP+JSON: private (built per caller) for as long as the public card, with an ETag; If-None-Match is 304', async () => {
    const pub = await request(`${h.url}/.well-known/agent-card.json`, { dispatcher: h.agent });
    await pub.body.dump();
    const first = await get();
    expect(first.status).toBe(200);
    expect((JSON.parse(first.text) as { skills: Array<{ id: string }> }).skills.map((s) => s.id)).toContain(
      'ops',
    );
    expect(first.headers['cache-control']).toBe(
      String(pub.headers['cache-control']).replace(/^public,/, 'private,'),
    );
    const etag = String(first.headers.etag);
    expect(etag).toMatch(/^"[\w-]+"$/);
    expect(etag).not.toBe(pub.headers.etag);

    const again = await get({ 'if-none-match': etag });
    expect(again.status).toBe(304);
    expect(again.text).toBe('');
    expect(again.headers.etag).toBe(etag);
    expect(again.headers['cache-control']).toBe(first.headers['cache-control']);
    expect((await get({ 'if-none-match': `W/${etag}, "other"` })).status).toBe(304);
    // Another ETag: the card again, the same bytes.
    const other = await get({ 'if-none-match': '"not-this-card"' });
    expect(other.status).toBe(200);
    expect(other.text).toBe(first.text);
    // A caller the policy refuses gets the refusal, not a 304 for a card it may not have.
    const stranger = await get({ 'if-none-match': etag }, h.strangerAgent);
    expect(stranger.status).toBe(403);
    expect(stranger.headers.etag).toBeUndefined();
  });
});

describe('HTTP+JSON query numbers and path ids', () => {
  it('a number outside int32 is INVALID_PARAMS (400)', async () => {
    const t = ok(
      await jsonRpcBinding(h.url, h.agent).call('SendMessage', {
        message: message('o', { metadata: { skill: 'echo' } }),
      }),
    ).task as Task;
    for (const n of ['2147483648', '-2147483649', '99999999999999999999']) {
      const r = await raw('GET', `/tasks/${t.id}?historyLength=${n}`, { 'a2a-version': '1.0' });
      expect(r.status).toBe(400);
      expect(a2aErrorFromRest(r.json as never, r.status).code).toBe('INVALID_PARAMS');
    }
  });

  it('an id segment is decoded once: %2F is part of the id, %252F is its %2F', async () => {
    const slash = await raw('GET', '/tasks/a%2Fb', { 'a2a-version': '1.0' });
    expect(slash.status).toBe(404);
    const e1 = a2aErrorFromRest(slash.json as never, slash.status);
    expect(e1.code).toBe('TASK_NOT_FOUND');
    expect(e1.message).toBe('Task not found: a/b');
    const twice = await raw('GET', '/tasks/a%252Fb', { 'a2a-version': '1.0' });
    expect(a2aErrorFromRest(twice.json as never, twice.status).message).toBe('Task not found: a%2Fb');

    // Ids the client chooses (push configs): each found under its own encoding.
    const rest = restBinding(h.url, h.agent);
    const t = await askTask(rest);
    for (const id of ['hook/1', 'hook%2F1']) {
      ok(await rest.call('CreateTaskPushNotificationConfig', { taskId: t.id, id, url: HOOK }));
    }
    const one = await raw('GET', `/tasks/${t.id}/pushNotificationConfigs/hook%2F1`, { 'a2a-version': '1.0' });
    expect((one.json as { id?: string }).id).toBe('hook/1');
    const other = await raw('GET', `/tasks/${t.id}/pushNotificationConfigs/hook%252F1`, {
      'a2a-version': '1.0',
    });
    expect((other.json as { id?: string }).id).toBe('hook%2F1');
    ok(await rest.call('CancelTask', { id: t.id }));
  });
});
