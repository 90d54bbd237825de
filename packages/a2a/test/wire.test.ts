import { describe, expect, it } from 'vitest';
import {
  AgentCardSchema,
  MessageSchema,
  PartSchema,
  StreamResponseSchema,
  TaskSchema,
  TASK_STATES,
  V03MessageSchema,
  V03StreamEventSchema,
  closesStream,
  endsTask,
  isInterrupted,
  isSettled,
  isTerminal,
  stateOfEvent,
  withJsonNames,
  type TaskState,
} from '../src/index.js';
import { messageToV03, messageToV1, streamResponseToV03, taskToV03 } from '../src/wire/v03.js';

describe('v1.0 schemas (ProtoJSON)', () => {
  it('accept each Part kind and refuse zero or two contents', () => {
    for (const p of [
      { text: 'a' },
      { raw: 'aGk=', mediaType: 'text/plain', filename: 'a.txt' },
      { url: 'https://x/y' },
      { data: [1, 2] },
      { data: null },
    ]) {
      expect(PartSchema.safeParse(p).success, JSON.stringify(p)).toBe(true);
    }
    expect(PartSchema.safeParse({}).success).toBe(false);
    expect(PartSchema.safeParse({ text: 'a', url: 'https://x' }).success).toBe(false);
    expect(PartSchema.safeParse({ raw: 'not base64!' }).success).toBe(false);
  });

  it('accept enum numbers, write names, drop unknown members', () => {
    const m = MessageSchema.parse({ messageId: 'm', role: 1, parts: [{ text: 'x' }], kind: 'message' });
    expect(m.role).toBe('ROLE_USER');
    expect('kind' in m).toBe(false);
    const t = TaskSchema.parse({ id: 't', contextId: 'c', status: { state: 3 } });
    expect(t.status.state).toBe('TASK_STATE_COMPLETED');
    expect(TaskSchema.safeParse({ id: 't', contextId: 'c', status: { state: 'completed' } }).success).toBe(
      false,
    );
  });

  it('StreamResponse is exactly one of its members', () => {
    const r = StreamResponseSchema.parse({
      statusUpdate: { taskId: 't', contextId: 'c', status: { state: 'TASK_STATE_WORKING' } },
    });
    expect('statusUpdate' in r).toBe(true);
    expect(StreamResponseSchema.safeParse({ nothing: 1 }).success).toBe(false);
  });

  it('metadata (a Struct) is any JSON object, copied one level, and nothing else', () => {
    const meta = JSON.parse('{"skill":"echo","n":{"deep":[1]},"__proto__":{"polluted":true}}') as Record<
      string,
      unknown
    >;
    const m = MessageSchema.parse({
      messageId: 'm',
      role: 'ROLE_USER',
      parts: [{ text: 'x' }],
      metadata: meta,
    });
    expect(m.metadata).toEqual({ skill: 'echo', n: { deep: [1] } });
    expect(m.metadata).not.toBe(meta);
    expect(Object.getPrototypeOf(m.metadata)).toBe(Object.prototype);
    expect(Object.keys(m.metadata!)).toEqual(['skill', 'n']);
    const bare = Object.assign(Object.create(null) as object, { a: 1 });
    expect(
      TaskSchema.parse({ id: 't', contextId: 'c', status: { state: 1 }, metadata: bare }).metadata,
    ).toEqual({
      a: 1,
    });
    for (const bad of ['x', 1, null, [], [{ a: 1 }], new Date(0), new Map()]) {
      const r = MessageSchema.safeParse({ messageId: 'm', role: 1, parts: [{ text: 'x' }], metadata: bad });
      expect(r.success, String(bad)).toBe(false);
      expect(r.error?.issues[0]?.path).toEqual(['metadata']);
    }
  });

  it('an agent card needs at least one interface', () => {
    const card = {
      name: 'a',
      description: '',
      version: '1',
      supportedInterfaces: [{ url: 'https://a/', protocolBinding: 'JSONRPC', protocolVersion: '1.0' }],
      capabilities: { streaming: true },
      securitySchemes: {
        mtls: { mtlsSecurityScheme: { description: 'x' } },
        other: { apiKeySecurityScheme: { name: 'k' } },
      },
      defaultInputModes: [],
      defaultOutputModes: [],
      skills: [{ id: 's', name: 'S', description: '', tags: [] }],
    };
    expect(AgentCardSchema.safeParse(card).success).toBe(true);
    expect(AgentCardSchema.safeParse({ ...card, supportedInterfaces: [] }).success).toBe(false);
  });
});

describe('withJsonNames (ProtoJSON field names)', () => {
  it('returns the request itself when it has no proto name, and a renamed copy when it has', () => {
    const plain = { message: { messageId: 'm', parts: [{ text: 'a' }], metadata: { a_b: 1 } } };
    expect(withJsonNames(plain)).toBe(plain);
    const snake = {
      message: { message_id: 'm', parts: [{ text: 'a', media_type: 't' }] },
      history_length: 2,
    };
    expect(withJsonNames(snake)).toEqual({
      message: { messageId: 'm', parts: [{ text: 'a', mediaType: 't' }] },
      historyLength: 2,
    });
    // The caller's object is left as it was.
    expect(snake.message.parts[0]).toEqual({ text: 'a', media_type: 't' });
  });

  it('names the place of a field given under both names, however deep', () => {
    const twice = { message: { parts: [{ text: 'a' }, { text: 'b', mediaType: 'x', media_type: 'y' }] } };
    expect(() => withJsonNames(twice)).toThrow(
      'message.parts[1].mediaType is given twice, as "mediaType" and "media_type"',
    );
    expect(() => withJsonNames({ history_length: 1, historyLength: 2 })).toThrow(
      /: historyLength is given twice/,
    );
    expect(() => withJsonNames([{ task_id: 'a', taskId: 'b' }], 'params')).toThrow(
      /: params\[0\]\.taskId is given twice/,
    );
  });
});

describe('v0.3 ↔ v1.0', () => {
  it('converts every part kind both ways', () => {
    const v03 = V03MessageSchema.parse({
      kind: 'message',
      messageId: 'm',
      role: 'agent',
      parts: [
        { kind: 'text', text: 'hi' },
        { kind: 'file', file: { bytes: 'aGk=', mimeType: 'text/plain', name: 'a.txt' } },
        { kind: 'file', file: { uri: 'https://x/y' } },
        { kind: 'data', data: { a: 1 } },
      ],
      taskId: 't',
    });
    const v1 = messageToV1(v03);
    expect(v1).toEqual({
      messageId: 'm',
      role: 'ROLE_AGENT',
      taskId: 't',
      parts: [
        { text: 'hi' },
        { raw: 'aGk=', mediaType: 'text/plain', filename: 'a.txt' },
        { url: 'https://x/y' },
        { data: { a: 1 } },
      ],
    });
    expect(messageToV03(v1)).toEqual(v03);
    // v1 data may be any JSON value; v0.3 data must be an object.
    expect(messageToV03({ messageId: 'x', role: 'ROLE_USER', parts: [{ data: [1] }] }).parts[0]).toEqual({
      kind: 'data',
      data: { value: [1] },
    });
  });

  it('maps states and marks final events', () => {
    const t = taskToV03({ id: 't', contextId: 'c', status: { state: 'TASK_STATE_INPUT_REQUIRED' } });
    expect(t).toMatchObject({ kind: 'task', status: { state: 'input-required' } });
    const working = streamResponseToV03({
      statusUpdate: { taskId: 't', contextId: 'c', status: { state: 'TASK_STATE_WORKING' } },
    });
    const done = streamResponseToV03({
      statusUpdate: { taskId: 't', contextId: 'c', status: { state: 'TASK_STATE_CANCELED' } },
    });
    expect(working).toMatchObject({ kind: 'status-update', final: false, status: { state: 'working' } });
    expect(done).toMatchObject({ final: true, status: { state: 'canceled' } });
    for (const e of [t, working, done]) expect(V03StreamEventSchema.safeParse(e).success).toBe(true);
  });
});

describe('task states', () => {
  it('settled is terminal or interrupted, and nothing else', () => {
    const settled = TASK_STATES.filter((s) => isSettled(s));
    expect(settled.sort()).toEqual(
      [
        'TASK_STATE_AUTH_REQUIRED',
        'TASK_STATE_CANCELED',
        'TASK_STATE_COMPLETED',
        'TASK_STATE_FAILED',
        'TASK_STATE_INPUT_REQUIRED',
        'TASK_STATE_REJECTED',
      ].sort(),
    );
    for (const s of TASK_STATES) expect(isSettled(s)).toBe(isTerminal(s) || isInterrupted(s));
    expect(TASK_STATES.filter((s) => isInterrupted(s) && isTerminal(s))).toEqual([]);
  });

  it('a send stream closes at a settled state or a message; a task ends only at a terminal state', () => {
    const status = (state: TaskState) => ({
      statusUpdate: { taskId: 't', contextId: 'c', status: { state } },
    });
    expect(stateOfEvent(status('TASK_STATE_WORKING'))).toBe('TASK_STATE_WORKING');
    expect(closesStream(status('TASK_STATE_WORKING'))).toBe(false);
    expect(closesStream(status('TASK_STATE_INPUT_REQUIRED'))).toBe(true);
    expect(endsTask(status('TASK_STATE_INPUT_REQUIRED'))).toBe(false);
    expect(endsTask({ task: { id: 't', contextId: 'c', status: { state: 'TASK_STATE_FAILED' } } })).toBe(
      true,
    );
    const message = { message: { messageId: 'm', role: 'ROLE_AGENT' as const, parts: [{ text: 'x' }] } };
    expect(stateOfEvent(message)).toBeUndefined();
    expect(closesStream(message)).toBe(true);
    expect(endsTask(message)).toBe(false);
  });
});
