// JSON-RPC conformance of the Weave A2A server: every error code, and the
// malformed inputs of the issue. All over real mTLS.
import Fastify from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request } from 'undici';
import { A2AClient, A2AError, InMemoryTaskStore, type TaskRecord } from '../src/index.js';
import { startHarness, type Harness } from './helpers/agents.js';
import { channel, mtlsServer } from '@weave/test-support';

/** A store whose reads fail for one id: a real TaskStore implementation used to provoke -32603. */
class FlakyStore extends InMemoryTaskStore {
  override async get(id: string): Promise<TaskRecord | undefined> {
    if (id === 'explode') throw new Error('disk on fire');
    return super.get(id);
  }
}

let h: Harness;
let calls = 0;
let hold: Promise<void> = Promise.resolve();
let releaseHold: () => void = () => undefined;

interface RpcReply {
  status: number;
  body: {
    jsonrpc: string;
    id: unknown;
    result?: unknown;
    error?: { code: number; message: string; data?: unknown };
  };
}

async function raw(body: string | Buffer, headers: Record<string, string> = {}): Promise<RpcReply> {
  const res = await request(`${h.url}/`, {
    method: 'POST',
    dispatcher: h.agent,
    headers: { 'content-type': 'application/json', 'a2a-version': '1.0', ...headers },
    body,
  });
  const text = await res.body.text();
  return { status: res.statusCode, body: JSON.parse(text) as RpcReply['body'] };
}

function rpc(
  method: string,
  params?: unknown,
  id: unknown = 1,
  headers?: Record<string, string>,
): Promise<RpcReply> {
  return raw(
    JSON.stringify({ jsonrpc: '2.0', id, method, ...(params === undefined ? {} : { params }) }),
    headers,
  );
}

function errorInfoReason(r: RpcReply): string | undefined {
  const d = r.body.error?.data;
  return Array.isArray(d) ? (d[0] as { reason?: string; '@type'?: string })?.reason : undefined;
}

const userMsg = (text: string, extra: Record<string, unknown> = {}) => ({
  message: { messageId: `m-${Math.random()}`, role: 'ROLE_USER', parts: [{ text }], ...extra },
});

beforeAll(async () => {
  h = await startHarness(
    (a2a) => {
      a2a.registerTaskHandler({ id: 'echo', name: 'Echo', description: '', tags: [] }, (ctx) => {
        calls++;
        return ctx.message.parts[0]?.text ?? '';
      });
      a2a.registerTaskHandler({ id: 'hold', name: 'Hold', description: '', tags: [] }, async () => {
        calls++;
        await hold;
        return 'held';
      });
    },
    {
      taskStore: new FlakyStore(),
      // One caller may take both slots here: the test is about the server-wide limit.
      limits: {
        maxBodyBytes: 4096,
        maxConcurrentTasks: 2,
        perCaller: { maxConcurrentTasks: 2 },
        blockingTimeoutMs: 100,
      },
      extensions: [{ uri: 'https://example.org/ext/required', required: true }],
    },
  );
});
afterAll(async () => {
  releaseHold();
  await h.close();
});

const EXT = { 'a2a-extensions': 'https://example.org/ext/required' };

describe('JSON-RPC envelope', () => {
  it('-32700 for malformed JSON, with id null', async () => {
    const r = await raw('{"jsonrpc":"2.0","id":1,"method":', EXT);
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ jsonrpc: '2.0', id: null, error: { code: -32700 } });
  });

  it('-32600 for a bad jsonrpc value, echoing the id', async () => {
    const r = await raw(
      JSON.stringify({ jsonrpc: '1.0', id: 'x', method: 'GetTask', params: { id: 'a' } }),
      EXT,
    );
    expect(r.body).toMatchObject({ id: 'x', error: { code: -32600 } });
  });

  it('-32600 for a missing method', async () => {
    const r = await raw(JSON.stringify({ jsonrpc: '2.0', id: 3 }), EXT);
    expect(r.body).toMatchObject({ id: 3, error: { code: -32600 } });
  });

  it('-32600 for an id that is neither string, number nor null', async () => {
    const r = await raw(JSON.stringify({ jsonrpc: '2.0', id: { a: 1 }, method: 'GetTask' }), EXT);
    expect(r.body).toMatchObject({ id: null, error: { code: -32600 } });
  });

  it('-32600 for a non-object body and for batches (A2A has no batches)', async () => {
    expect((await raw('42', EXT)).body.error?.code).toBe(-32600);
    const batch = await raw(
      JSON.stringify([
        { jsonrpc: '2.0', id: 1, method: 'GetTask' },
        { jsonrpc: '2.0', id: 1, method: 'GetTask' },
      ]),
      EXT,
    );
    expect(batch.body).toMatchObject({ id: null, error: { code: -32600 } });
  });

  it('a notification (no id) runs nothing and gets no JSON-RPC response (HTTP 204, empty body)', async () => {
    const before = calls;
    const contextId = `ctx-notify-${Math.random()}`;
    for (const [method, params] of [
      ['SendMessage', userMsg('quiet', { contextId, metadata: { skill: 'echo' } })],
      ['SendStreamingMessage', userMsg('quiet', { contextId, metadata: { skill: 'echo' } })],
      ['GetTask', { id: 'nope' }],
      ['NoSuchMethod', {}],
    ] as const) {
      const res = await request(`${h.url}/`, {
        method: 'POST',
        dispatcher: h.agent,
        headers: { 'content-type': 'application/json', 'a2a-version': '1.0', ...EXT },
        body: JSON.stringify({ jsonrpc: '2.0', method, params }),
      });
      expect(res.statusCode, method).toBe(204);
      expect(await res.body.text(), method).toBe('');
    }
    expect(calls).toBe(before);
    const listed = await rpc('ListTasks', { contextId }, 1, EXT);
    expect((listed.body.result as { tasks: unknown[] }).tasks).toEqual([]);
    // An explicit null id is a request (discouraged, but valid): it runs and is answered.
    const withNull = await rpc('SendMessage', userMsg('loud', { metadata: { skill: 'echo' } }), null, EXT);
    expect(withNull.body.id).toBeNull();
    expect((withNull.body.result as { task?: unknown }).task).toBeDefined();
    expect(calls).toBe(before + 1);
  });

  it('-32601 for an unknown method, echoing the id', async () => {
    const r = await rpc('NoSuchMethod', {}, 'id-7', EXT);
    expect(r.body).toMatchObject({ id: 'id-7', error: { code: -32601 } });
    expect(errorInfoReason(r)).toBe('METHOD_NOT_FOUND');
  });

  it('-32601 for a v0.3 method name under A2A-Version 1.0', async () => {
    const r = await rpc('tasks/get', { id: 'a' }, 1, EXT);
    expect(r.body.error?.code).toBe(-32601);
  });

  it('-32602 for invalid params, and nothing runs', async () => {
    const before = calls;
    const cases: unknown[] = [
      [1, 2],
      { message: { messageId: 'm', role: 'ROLE_USER', parts: [{ text: 'a', data: 1 }] } },
      { message: { messageId: '', role: 'ROLE_USER', parts: [] } },
      { message: { messageId: 'm', role: 'ROLE_NOPE', parts: [] } },
      {
        message: { messageId: 'm', role: 'ROLE_AGENT', parts: [{ text: 'x' }], metadata: { skill: 'echo' } },
      },
      userMsg('x', { metadata: { skill: 'nope' } }),
      userMsg('x'), // two skills and none named
    ];
    for (const params of cases) {
      const r = await rpc('SendMessage', params, 9, EXT);
      expect(r.body, JSON.stringify(params)).toMatchObject({ id: 9, error: { code: -32602 } });
    }
    expect((await rpc('GetTask', { id: 5 }, 1, EXT)).body.error?.code).toBe(-32602);
    expect((await rpc('ListTasks', { pageSize: 0 }, 1, EXT)).body.error?.code).toBe(-32602);
    expect((await rpc('ListTasks', { pageToken: 'garbage' }, 1, EXT)).body.error?.code).toBe(-32602);
    expect(calls).toBe(before);
  });

  it('duplicate ids: concurrent requests with the same id are answered independently', async () => {
    const [a, b] = await Promise.all([
      rpc('SendMessage', userMsg('first', { metadata: { skill: 'echo' } }), 'dup', EXT),
      rpc('SendMessage', userMsg('second', { metadata: { skill: 'echo' } }), 'dup', EXT),
    ]);
    const texts = [a, b].map((r) => {
      expect(r.body.id).toBe('dup');
      return (r.body.result as { task: { artifacts: Array<{ parts: Array<{ text: string }> }> } }).task
        .artifacts[0]?.parts[0]?.text;
    });
    expect(texts.sort()).toEqual(['first', 'second']);
  });

  it('oversized bodies get HTTP 413 with a JSON-RPC error, and nothing runs', async () => {
    const before = calls;
    const r = await rpc('SendMessage', userMsg('x'.repeat(8000), { metadata: { skill: 'echo' } }), 1, EXT);
    expect(r.status).toBe(413);
    expect(r.body).toMatchObject({ jsonrpc: '2.0', id: null, error: { code: -32600 } });
    expect(errorInfoReason(r)).toBe('PAYLOAD_TOO_LARGE');
    expect(calls).toBe(before);
  });

  it('-32005 for a wrong or missing content type', async () => {
    const body = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'GetTask', params: { id: 'a' } });
    for (const ct of ['text/plain', 'application/x-www-form-urlencoded', 'application/jsonx']) {
      const r = await raw(body, { ...EXT, 'content-type': ct });
      expect(r.status, ct).toBe(400);
      expect(r.body.error?.code, ct).toBe(-32005);
      expect(errorInfoReason(r)).toBe('CONTENT_TYPE_NOT_SUPPORTED');
    }
    const res = await request(`${h.url}/`, { method: 'POST', dispatcher: h.agent, headers: EXT, body });
    expect(res.statusCode).toBe(400);
    expect(((await res.body.json()) as RpcReply['body']).error?.code).toBe(-32005);
  });

  it('accepts application/json with a charset', async () => {
    const r = await rpc('GetTask', { id: 'zzz' }, 1, {
      ...EXT,
      'content-type': 'application/json; charset=utf-8',
    });
    expect(r.body.error?.code).toBe(-32001);
  });
});

describe('A2A error codes', () => {
  it('-32001 TaskNotFound with ErrorInfo data', async () => {
    const r = await rpc('GetTask', { id: 'missing' }, 1, EXT);
    expect(r.body.error?.code).toBe(-32001);
    expect(r.body.error?.data).toEqual([
      {
        '@type': 'type.googleapis.com/google.rpc.ErrorInfo',
        reason: 'TASK_NOT_FOUND',
        domain: 'a2a-protocol.org',
        metadata: { taskId: 'missing' },
      },
    ]);
  });

  it('-32002 TaskNotCancelable for a finished task', async () => {
    const sent = await rpc('SendMessage', userMsg('done', { metadata: { skill: 'echo' } }), 1, EXT);
    const id = (sent.body.result as { task: { id: string } }).task.id;
    const r = await rpc('CancelTask', { id }, 2, EXT);
    expect(r.body.error?.code).toBe(-32002);
    expect(errorInfoReason(r)).toBe('TASK_NOT_CANCELABLE');
  });

  it('-32003 for every push-config method when push is off', async () => {
    const ref = { taskId: 't', id: 'c' };
    for (const [m, p] of [
      ['CreateTaskPushNotificationConfig', { taskId: 't', url: 'https://example.org/hook' }],
      ['GetTaskPushNotificationConfig', ref],
      ['ListTaskPushNotificationConfigs', { taskId: 't' }],
      ['DeleteTaskPushNotificationConfig', ref],
    ] as const) {
      const r = await rpc(m, p, 1, EXT);
      expect(r.body.error?.code, m).toBe(-32003);
      expect(errorInfoReason(r)).toBe('PUSH_NOTIFICATION_NOT_SUPPORTED');
    }
  });

  it('-32004 for subscribing to, or messaging, a finished task', async () => {
    const sent = await rpc('SendMessage', userMsg('done', { metadata: { skill: 'echo' } }), 1, EXT);
    const task = (sent.body.result as { task: { id: string; contextId: string } }).task;
    const sub = await rpc('SubscribeToTask', { id: task.id }, 2, EXT);
    expect(sub.body.error?.code).toBe(-32004);
    const again = await rpc(
      'SendMessage',
      userMsg('more', { taskId: task.id, contextId: task.contextId }),
      3,
      EXT,
    );
    expect(again.body.error?.code).toBe(-32004);
  });

  it('-32006 when an agent answers with a result that breaks the schema (client side)', async () => {
    const badSvid = await h.pki.workload('/agent/bad');
    const bad = mtlsServer(badSvid);
    bad.get('/.well-known/agent-card.json', async (req) => ({
      name: 'bad',
      description: '',
      version: '1',
      supportedInterfaces: [
        { url: `https://${req.host}/`, protocolBinding: 'JSONRPC', protocolVersion: '1.0' },
      ],
      capabilities: {},
      defaultInputModes: [],
      defaultOutputModes: [],
      skills: [],
    }));
    // A well-formed JSON-RPC envelope whose Task is not a Task.
    bad.post('/', async (req) => ({
      jsonrpc: '2.0',
      id: (req.body as { id: number }).id,
      result: { id: 7, status: 'nope' },
    }));
    await bad.listen({ port: 0, host: '127.0.0.1' });
    const url = `https://127.0.0.1:${(bad.server.address() as { port: number }).port}`;
    const agent = channel(h.client, badSvid.id);
    const client = new A2AClient({ dispatcher: agent });
    const err = await client.getTask(url, 'x').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(A2AError);
    expect((err as A2AError).jsonRpcCode).toBe(-32006);
    await agent.close();
    await bad.close();
  });

  it('-32004 GetExtendedAgentCard when the agent declares none', async () => {
    const r = await rpc('GetExtendedAgentCard', undefined, 1, EXT);
    expect(r.body.error?.code).toBe(-32004);
  });

  it('-32008 when a required extension is not activated', async () => {
    const r = await rpc('GetTask', { id: 'a' });
    expect(r.body.error?.code).toBe(-32008);
    expect(errorInfoReason(r)).toBe('EXTENSION_SUPPORT_REQUIRED');
  });

  it('-32009 for an unsupported A2A-Version', async () => {
    for (const v of ['2.0', '0.2', 'banana']) {
      const r = await rpc('GetTask', { id: 'a' }, 1, { ...EXT, 'a2a-version': v });
      expect(r.body.error?.code, v).toBe(-32009);
    }
  });

  it('-32603 when the task store fails, without leaking the cause', async () => {
    const r = await rpc('GetTask', { id: 'explode' }, 1, EXT);
    expect(r.status).toBe(500);
    expect(r.body.error?.code).toBe(-32603);
    expect(JSON.stringify(r.body)).not.toContain('disk on fire');
  });

  it('a blocking SendMessage on a task that does not settle answers with the running task', async () => {
    hold = new Promise((resolve) => (releaseHold = resolve));
    const r = await rpc('SendMessage', userMsg('h', { metadata: { skill: 'hold' } }), 1, EXT);
    const task = (r.body.result as { task: { id: string; status: { state: string } } }).task;
    expect(task.status.state).toBe('TASK_STATE_WORKING');
    releaseHold();
    expect((await h.a2a.manager.waitForCompletion(task.id)).status.state).toBe('TASK_STATE_COMPLETED');
  });

  it('RESOURCE_EXHAUSTED beyond maxConcurrentTasks, and nothing more runs', async () => {
    hold = new Promise((resolve) => (releaseHold = resolve));
    const params = {
      ...userMsg('h', { metadata: { skill: 'hold' } }),
      configuration: { returnImmediately: true },
    };
    const a = await rpc('SendMessage', params, 1, EXT);
    const b = await rpc('SendMessage', params, 2, EXT);
    expect(a.body.result).toBeDefined();
    expect(b.body.result).toBeDefined();
    const before = calls;
    const c = await rpc('SendMessage', params, 3, EXT);
    expect(c.status).toBe(503);
    expect(errorInfoReason(c)).toBe('RESOURCE_EXHAUSTED');
    expect(calls).toBe(before);
    releaseHold();
    const id = (a.body.result as { task: { id: string } }).task.id;
    await h.a2a.manager.waitForCompletion(id);
  });
});

describe('robustness', () => {
  it('survives a barrage of hostile inputs and still answers', async () => {
    const inputs: string[] = [
      '',
      'null',
      '[]',
      '"str"',
      '{"__proto__":{"polluted":true},"jsonrpc":"2.0","id":1,"method":"GetTask","params":{"id":"a"}}',
      '{"jsonrpc":"2.0","id":1,"method":"SendMessage","params":{"message":null}}',
      '{"jsonrpc":"2.0","id":1,"method":"SendMessage","params":{"message":{"messageId":"m","role":"ROLE_USER","parts":[{"raw":"!!!"}]}}}',
      '{"jsonrpc":"2.0","id":1e400,"method":"GetTask"}',
      '{"jsonrpc":"2.0","id":1,"method":"ListTasks","params":{"statusTimestampAfter":"yesterday"}}',
      `{"jsonrpc":"2.0","id":1,"method":"GetTask","params":{"id":"a","historyLength":-1}}`,
      '\u0000\u0001\u0002',
      '{'.repeat(2000),
    ];
    for (const body of inputs) {
      const res = await request(`${h.url}/`, {
        method: 'POST',
        dispatcher: h.agent,
        headers: { 'content-type': 'application/json', 'a2a-version': '1.0', ...EXT },
        body,
      });
      expect(res.statusCode, body.slice(0, 40)).toBeLessThan(500);
      const json = (await res.body.json()) as RpcReply['body'];
      expect(json.jsonrpc).toBe('2.0');
      expect(json.error, body.slice(0, 40)).toBeDefined();
    }
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    const ok = await rpc('GetTask', { id: 'still-alive' }, 1, EXT);
    expect(ok.body.error?.code).toBe(-32001);
  });

  it('a call without an authenticated caller is denied and runs nothing', async () => {
    // A server without the mTLS hook: no request.peer.
    const { A2AServer } = await import('../src/index.js');
    const { AllowAllEnforcer } = await import('@weave/authz');
    let ran = false;
    const s = new A2AServer({
      card: { name: 'x', description: '', version: '1' },
      selfId: h.serverId,
      enforcer: new AllowAllEnforcer({ audit: { record: () => undefined } }),
    });
    s.registerTaskHandler('echo', () => {
      ran = true;
      return 'x';
    });
    const app = Fastify();
    await app.register(s.plugin);
    const res = await app.inject({
      method: 'POST',
      url: '/',
      headers: { 'content-type': 'application/json', 'a2a-version': '1.0' },
      payload: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'SendMessage', params: userMsg('x') }),
    });
    expect(res.statusCode).toBe(403);
    expect(res.json()).toMatchObject({ error: { code: -32600, data: [{ reason: 'PERMISSION_DENIED' }] } });
    expect(ran).toBe(false);
    await s.close();
    await app.close();
  });
});
