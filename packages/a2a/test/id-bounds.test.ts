// Identifiers a request gives (message, task, context and referenced task
// ids) are bounded as a tenant is, at most 256 characters and 512 bytes of
// UTF-8: the agent keeps them with the task and repeats a context id in every
// answer and stream event (a 600 kB one came back whole with each). The
// bound holds on every binding, ids taken from an HTTP+JSON path or a gRPC
// field included, and a refused request makes no task and runs no handler.
// And a message that names no skill, to an agent that cannot tell which one
// it is for, is told the skills of the public card only: an extended-only
// skill is listed on the extended card alone. Real mTLS with dev-CA SVIDs.
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request } from 'undici';
import type { A2AGrpcServer, AgentCard, Message, Task } from '../src/index.js';
import {
  grpcBinding,
  jsonRpcBinding,
  refused,
  restBinding,
  type RawBinding,
} from './helpers/raw-bindings.js';
import { rawBinding, serveEcho, serveGrpc, startHarness, type Harness } from './helpers/agents.js';

const BINDINGS = ['JSONRPC', 'HTTP+JSON', 'GRPC'] as const;
const RULE = 'at most 256 characters and 512 bytes of UTF-8';

const message = (extra: Partial<Message> = {}): Message => ({
  messageId: randomUUID(),
  role: 'ROLE_USER',
  parts: [{ text: 'hi' }],
  metadata: { skill: 'echo' },
  ...extra,
});

describe('identifiers a request gives are bounded', () => {
  let h: Harness;
  let grpc: A2AGrpcServer;
  const ran: string[] = [];
  const bindings = new Map<string, RawBinding>();

  beforeAll(async () => {
    h = await startHarness((a2a) => serveEcho(a2a, ran), {
      push: { enabled: true, send: async () => undefined, checkUrl: async () => undefined },
    });
    grpc = await serveGrpc(h);
    for (const b of BINDINGS) bindings.set(b, rawBinding(h, grpc, b));
  });

  afterAll(async () => {
    for (const b of bindings.values()) b.close();
    await grpc?.close(100);
    await h?.close();
  });

  async function taskCount(b: RawBinding): Promise<number> {
    const out = await b.call('ListTasks', {});
    expect(out.ok).toBe(true);
    return (out.ok ? (out.result as { tasks: Task[] }).tasks : []).length;
  }

  const long = 'x'.repeat(257);
  // 171 three-byte characters: within 256 characters, past 512 bytes.
  const wide = '\u4e2d'.repeat(171);
  const refusals: Array<[string, string, Record<string, unknown>, string]> = [
    [
      'a context id of 257 characters',
      'SendMessage',
      { message: message({ contextId: long }) },
      'message.contextId',
    ],
    [
      'a context id of 513 bytes',
      'SendMessage',
      { message: message({ contextId: wide }) },
      'message.contextId',
    ],
    [
      'a message id of 257 characters',
      'SendMessage',
      { message: message({ messageId: long }) },
      'message.messageId',
    ],
    [
      'a message id of 513 bytes',
      'SendMessage',
      { message: message({ messageId: wide }) },
      'message.messageId',
    ],
    ['a task id of 257 characters', 'SendMessage', { message: message({ taskId: long }) }, 'message.taskId'],
    [
      'a referenced task id of 257 characters',
      'SendMessage',
      { message: message({ referenceTaskIds: ['a', long] }) },
      'message.referenceTaskIds.1',
    ],
    [
      'a streamed context id of 257 characters',
      'SendStreamingMessage',
      { message: message({ contextId: long }) },
      'message.contextId',
    ],
    ['a GetTask id of 257 characters', 'GetTask', { id: long }, 'id'],
    ['a CancelTask id of 513 bytes', 'CancelTask', { id: wide }, 'id'],
    ['a SubscribeToTask id of 257 characters', 'SubscribeToTask', { id: long }, 'id'],
    ['a ListTasks context id of 257 characters', 'ListTasks', { contextId: long }, 'contextId'],
    [
      'a push config task id of 257 characters',
      'CreateTaskPushNotificationConfig',
      { taskId: long, url: 'https://hooks.test/a' },
      'taskId',
    ],
    [
      'a push config list task id of 257 characters',
      'ListTaskPushNotificationConfigs',
      { taskId: long },
      'taskId',
    ],
    [
      'a push config ref task id of 257 characters',
      'GetTaskPushNotificationConfig',
      { taskId: long, id: 'c' },
      'taskId',
    ],
  ];

  it.each(refusals)(
    '%s is INVALID_PARAMS naming the field and the rule on every binding, and creates and runs nothing',
    async (_, method, params, field) => {
      for (const name of BINDINGS) {
        const b = bindings.get(name) as RawBinding;
        const before = await taskCount(b);
        const ranBefore = ran.length;
        const err =
          method === 'SendStreamingMessage' || method === 'SubscribeToTask'
            ? (await b.stream(method, params)).failure?.error
            : refused(await b.call(method, params));
        expect({ name, code: err?.jsonRpcCode, message: err?.message }).toEqual({
          name,
          code: -32602,
          message: `Invalid params: ${field}: ${RULE}`,
        });
        expect(await taskCount(b)).toBe(before);
        expect(ran.length).toBe(ranBefore);
      }
    },
  );

  it('a page token of more than 4096 characters is INVALID_PARAMS naming it on every binding', async () => {
    const token = 'A'.repeat(4097);
    for (const name of BINDINGS) {
      const b = bindings.get(name) as RawBinding;
      for (const [method, params] of [
        ['ListTasks', { pageToken: token }],
        ['ListTaskPushNotificationConfigs', { taskId: 'any', pageToken: token }],
      ] as const) {
        const err = refused(await b.call(method, params));
        expect({ name, method, code: err?.jsonRpcCode, message: err?.message }).toEqual({
          name,
          method,
          code: -32602,
          message: 'Invalid params: pageToken: at most 4096 characters',
        });
      }
    }
  });

  it('a 600 kB context id is refused before a task exists, and no answer repeats it', async () => {
    const b = bindings.get('JSONRPC') as RawBinding;
    const before = await taskCount(b);
    const err = refused(
      await b.call('SendMessage', { message: message({ contextId: 'c'.repeat(600_000) }) }),
    );
    expect([err.jsonRpcCode, err.message]).toEqual([-32602, `Invalid params: message.contextId: ${RULE}`]);
    expect(await taskCount(b)).toBe(before);
  }, 10_000);

  it('ids of 256 characters (512 bytes) are served on every binding, and read back whole', async () => {
    for (const [i, name] of BINDINGS.entries()) {
      const b = bindings.get(name) as RawBinding;
      // Two-byte characters (é, ê, ë: a context of its own per binding): 256 of them are exactly 512 bytes.
      const contextId = String.fromCharCode(0xe9 + i).repeat(256);
      expect(Buffer.byteLength(contextId)).toBe(512);
      const messageId = 'm'.repeat(256);
      const ranBefore = ran.length;
      const sent = await b.call('SendMessage', {
        message: message({ contextId, messageId, referenceTaskIds: ['r'.repeat(256)] }),
      });
      expect(sent.ok ? 'ok' : sent.error.message, name).toBe('ok');
      const task = (sent.ok ? (sent.result as { task: Task }).task : undefined) as Task;
      expect(task.contextId).toBe(contextId);
      expect(ran.length).toBe(ranBefore + 1);
      const got = await b.call('GetTask', { id: task.id });
      expect(got.ok && (got.result as Task).history?.[0]?.messageId, name).toBe(messageId);
      const listed = await b.call('ListTasks', { contextId });
      expect(listed.ok && (listed.result as { tasks: Task[] }).tasks.map((t) => t.id), name).toEqual([
        task.id,
      ]);
    }
  });
});

describe('a message no skill can be told for names the public skills only', () => {
  let h: Harness;
  let grpc: A2AGrpcServer;
  const ran: string[] = [];
  let hiddenOnly: Harness;

  beforeAll(async () => {
    h = await startHarness(
      (a2a) => {
        for (const id of ['search', 'slow']) a2a.registerTaskHandler(id, () => void ran.push(id));
        a2a.registerTaskHandler('admin', () => void ran.push('admin'), { extended: true });
        a2a.registerTaskHandler('stream', () => void ran.push('stream'));
      },
      { extendedCard: () => undefined },
    );
    grpc = await serveGrpc(h);
    // Only extended-only skills: the public card lists none.
    hiddenOnly = await startHarness(
      (a2a) => {
        for (const id of ['admin', 'audit'])
          a2a.registerTaskHandler(id, () => void ran.push(id), { extended: true });
      },
      { extendedCard: () => undefined },
    );
  });

  afterAll(async () => {
    await grpc?.close(100);
    await h?.close();
    await hiddenOnly?.close();
  });

  const unnamed = { message: message({ metadata: {} }) };
  const expected =
    'Invalid params: this agent cannot tell which skill this message is for; name one in message.metadata.skill (its card lists search, slow, stream)';

  it('to a caller the policy admits for nothing, on every binding, and nothing runs', async () => {
    const stranger: RawBinding[] = [
      jsonRpcBinding(h.url, h.strangerAgent),
      restBinding(h.url, h.strangerAgent),
    ];
    for (const b of stranger) {
      const err = refused(await b.call('SendMessage', unnamed));
      expect([b.name, err.jsonRpcCode, err.message]).toEqual([b.name, -32602, expected]);
    }
    const nobody = await h.pki.workload('/agent/nobody');
    const g = grpcBinding(grpc.url as string, nobody, h.serverId);
    try {
      const err = refused(await g.call('SendMessage', unnamed));
      expect([err.jsonRpcCode, err.message]).toEqual([-32602, expected]);
    } finally {
      g.close();
    }
    expect(ran).toEqual([]);
  });

  it('the public card lists the same skills the message names', async () => {
    const res = await request(`${h.url}/.well-known/agent-card.json`, { dispatcher: h.strangerAgent });
    const card = (await res.body.json()) as AgentCard;
    expect(card.skills.map((s) => s.id)).toEqual(['search', 'slow', 'stream']);
  });

  it('with only extended-only skills, names none and counts none', async () => {
    const err = refused(
      await jsonRpcBinding(hiddenOnly.url, hiddenOnly.strangerAgent).call('SendMessage', unnamed),
    );
    expect([err.jsonRpcCode, err.message]).toEqual([
      -32602,
      'Invalid params: this agent cannot tell which skill this message is for; name one in message.metadata.skill',
    ]);
    expect(ran).toEqual([]);
  });
});
