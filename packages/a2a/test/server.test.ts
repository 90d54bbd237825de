import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import {
  A2AClient,
  A2AError,
  SPIFFE_ID_EXTENSION,
  agentSpiffeId,
  type Message,
  type StreamEvent,
} from '../src/index.js';
import { startHarness, type Harness } from './helpers/agents.js';

let h: Harness;
let client: A2AClient;
const ran: string[] = [];
let release: (() => void) | undefined;

beforeAll(async () => {
  h = await startHarness((a2a) => {
    a2a.registerTaskHandler(
      { id: 'echo', name: 'Echo', description: 'echoes text', tags: ['text'] },
      async (ctx) => {
        ran.push(`echo:${ctx.caller.toString()}`);
        return `echo: ${ctx.message.parts[0]?.text ?? ''}`;
      },
    );
    a2a.registerTaskHandler(
      { id: 'ask', name: 'Ask', description: 'asks for a name', tags: [] },
      async (ctx) => {
        const reply = await ctx.requestInput('what is your name?');
        return `hello ${reply.parts[0]?.text ?? ''}`;
      },
    );
    a2a.registerTaskHandler({ id: 'slow', name: 'Slow', description: 'waits', tags: [] }, async (ctx) => {
      ctx.publishArtifact({ artifactId: 'a1', parts: [{ text: 'part 1' }] });
      await new Promise<void>((resolve, reject) => {
        release = resolve;
        ctx.signal.addEventListener('abort', () => reject(new Error('aborted')));
      });
      ctx.publishArtifact(
        { artifactId: 'a1', parts: [{ text: 'part 2' }] },
        { append: true, lastChunk: true },
      );
      return undefined;
    });
    a2a.registerTaskHandler({ id: 'boom', name: 'Boom', description: 'fails', tags: [] }, async () => {
      throw new Error('secret internal detail');
    });
  });
  client = new A2AClient({ dispatcher: h.agent });
});

afterAll(async () => {
  await h.close();
});

describe('A2AServer over mTLS', () => {
  it('serves an agent card with the mTLS scheme and the SPIFFE ID', async () => {
    const card = await client.discoverAgent(h.url);
    expect(agentSpiffeId(card)).toBe(h.serverId.toString());
    expect(card.capabilities.extensions?.[0]).toMatchObject({ uri: SPIFFE_ID_EXTENSION, required: false });
    expect(card.securitySchemes?.mtls?.mtlsSecurityScheme).toBeDefined();
    expect(card.supportedInterfaces[0]).toMatchObject({ protocolBinding: 'JSONRPC', protocolVersion: '1.0' });
    expect(card.skills.map((s) => s.id).sort()).toEqual(['ask', 'boom', 'echo', 'slow']);
  });

  it('sendTask runs the skill and returns the completed task', async () => {
    const task = await client.sendTask(h.url, 'echo', 'hi');
    expect(task.status.state).toBe('TASK_STATE_COMPLETED');
    expect(task.artifacts?.[0]?.parts[0]?.text).toBe('echo: hi');
    expect(ran).toContain(`echo:${h.clientId.toString()}`);
    const got = await client.getTask(h.url, task.id);
    expect(got.id).toBe(task.id);
    expect(got.status.state).toBe('TASK_STATE_COMPLETED');
  });

  it('parses the body of a request once, and a large one arrives whole', async () => {
    const marker = `parsed-once-é€😀${'x'.repeat(40_000)}`;
    const parse = JSON.parse;
    let parsed = 0;
    const spy = vi.spyOn(JSON, 'parse').mockImplementation((text, reviver) => {
      // The request (its method is in it); the answer carries the text but not the method.
      if (typeof text === 'string' && text.includes('"SendMessage"') && text.includes(marker)) parsed++;
      return parse(text, reviver) as unknown;
    });
    let task;
    try {
      task = await client.sendTask(h.url, 'echo', marker);
    } finally {
      spy.mockRestore();
    }
    expect(task.artifacts?.[0]?.parts[0]?.text).toBe(`echo: ${marker}`);
    expect(parsed).toBe(1);
  });

  it('asks for input and resumes on the same task', async () => {
    const t1 = await client.sendTask(h.url, 'ask', 'start');
    expect(t1.status.state).toBe('TASK_STATE_INPUT_REQUIRED');
    expect(t1.status.message?.parts[0]?.text).toBe('what is your name?');
    const reply: Message = {
      messageId: 'm-reply',
      role: 'ROLE_USER',
      parts: [{ text: 'Ada' }],
      taskId: t1.id,
      contextId: t1.contextId,
    };
    const r = await client.sendMessage(h.url, reply);
    expect('task' in r && r.task.status.state).toBe('TASK_STATE_COMPLETED');
    expect('task' in r && r.task.artifacts?.[0]?.parts[0]?.text).toBe('hello Ada');
  });

  it('streams a task to INPUT_REQUIRED, then streams the resumed task after the reply', async () => {
    const first: string[] = [];
    let taskId = '';
    let contextId = '';
    for await (const e of client.streamTaskUpdates(h.url, 'ask', 'start')) {
      if ('task' in e) ({ id: taskId, contextId } = e.task);
      first.push('statusUpdate' in e ? e.statusUpdate.status.state : (Object.keys(e)[0] ?? ''));
    }
    expect(first).toEqual(['task', 'TASK_STATE_WORKING', 'TASK_STATE_INPUT_REQUIRED']);
    const second: string[] = [];
    const reply: Message = {
      messageId: 'm-s',
      role: 'ROLE_USER',
      parts: [{ text: 'Grace' }],
      taskId,
      contextId,
    };
    for await (const e of client.sendStreamingMessage(h.url, reply)) {
      if ('task' in e) second.push(`task:${e.task.status.state}`);
      else if ('statusUpdate' in e) second.push(e.statusUpdate.status.state);
      else if ('artifactUpdate' in e) second.push(`artifact:${e.artifactUpdate.artifact.parts[0]?.text}`);
    }
    expect(second).toEqual([
      'task:TASK_STATE_INPUT_REQUIRED',
      'TASK_STATE_WORKING',
      'artifact:hello Grace',
      'TASK_STATE_COMPLETED',
    ]);
  });

  it('SubscribeToTask on a task waiting for input stays open through the answer to the completion', async () => {
    const t = await client.sendTask(h.url, 'ask', 'start');
    expect(t.status.state).toBe('TASK_STATE_INPUT_REQUIRED');
    const events: StreamEvent[] = [];
    let answered: Promise<unknown> | undefined;
    for await (const e of client.subscribeToTask(h.url, t.id)) {
      events.push(e);
      // The first event is the task as it waits: answer it now; the stream goes on.
      answered ??= client.sendMessage(h.url, {
        messageId: 'm-end',
        role: 'ROLE_USER',
        parts: [{ text: 'Linus' }],
        taskId: t.id,
        contextId: t.contextId,
      });
    }
    expect(events[0] && 'task' in events[0] && events[0].task.status.state).toBe('TASK_STATE_INPUT_REQUIRED');
    const last = events[events.length - 1];
    expect(last && 'statusUpdate' in last && last.statusUpdate.status.state).toBe('TASK_STATE_COMPLETED');
    const done = (await answered) as { task?: { status: { state: string } } };
    expect(done.task?.status.state).toBe('TASK_STATE_COMPLETED');
  });

  it('a failing handler fails the task without leaking the error text', async () => {
    const t = await client.sendTask(h.url, 'boom', 'x');
    expect(t.status.state).toBe('TASK_STATE_FAILED');
    expect(JSON.stringify(t)).not.toContain('secret internal detail');
  });

  it('streams events in order and cancels', async () => {
    const events: StreamEvent[] = [];
    const stream = client.streamTaskUpdates(h.url, 'slow', 'go');
    let taskId = '';
    for await (const e of stream) {
      events.push(e);
      if ('task' in e) taskId = e.task.id;
      if ('artifactUpdate' in e) {
        const canceled = await client.cancelTask(h.url, taskId);
        expect(canceled.status.state).toBe('TASK_STATE_CANCELED');
      }
    }
    expect(events.map((e) => Object.keys(e).find((k) => k !== 'eventId'))).toEqual([
      'task',
      'statusUpdate',
      'artifactUpdate',
      'statusUpdate',
    ]);
    expect(events.map((e) => e.eventId)).toEqual(['1', '2', '3', '4']);
    const last = events[3];
    expect(last && 'statusUpdate' in last && last.statusUpdate.status.state).toBe('TASK_STATE_CANCELED');
    await expect(client.cancelTask(h.url, taskId)).rejects.toMatchObject({ jsonRpcCode: -32002 });
  });

  it('a caller the policy does not allow gets an error and runs nothing', async () => {
    const stranger = new A2AClient({ dispatcher: h.strangerAgent });
    const before = ran.length;
    const auditBefore = h.audit.length;
    const err = await stranger.sendTask(h.url, 'echo', 'x').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(A2AError);
    expect((err as A2AError).code).toBe('PERMISSION_DENIED');
    expect(ran.length).toBe(before);
    const denied = h.audit.slice(auditBefore).find((r) => r.decision === 'deny');
    expect(denied).toMatchObject({ caller: h.strangerId.toString(), action: 'echo' });
    // Even a list with nothing in it is decided, audited and refused.
    const listAudit = h.audit.length;
    const list = await stranger.listTasks(h.url).catch((e: unknown) => e);
    expect(list).toBeInstanceOf(A2AError);
    expect((list as A2AError).code).toBe('PERMISSION_DENIED');
    expect(h.audit.slice(listAudit).find((r) => r.decision === 'deny')).toMatchObject({
      caller: h.strangerId.toString(),
    });
  });

  it('another caller cannot see the task', async () => {
    const t = await client.sendTask(h.url, 'echo', 'mine');
    const stranger = new A2AClient({ dispatcher: h.strangerAgent });
    await expect(stranger.getTask(h.url, t.id)).rejects.toMatchObject({ jsonRpcCode: -32001 });
  });

  it('lists tasks by status timestamp, most recent first, with pagination', async () => {
    const sent: Array<{ id: string; at: number }> = [];
    for (let i = 0; i < 5; i++) {
      const t = await client.sendTask(h.url, 'echo', `n${i}`, { contextId: 'ctx-list' });
      sent.push({ id: t.id, at: Date.parse(t.status.timestamp ?? '') });
    }
    // Spec §3.1.4: by status timestamp, most recent first; tasks finished in the
    // same millisecond by id, the greater first.
    const ids = sent.sort((a, b) => a.at - b.at || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)).map((t) => t.id);
    const p1 = await client.listTasks(h.url, { contextId: 'ctx-list', pageSize: 2 });
    expect(p1.tasks.map((t) => t.id)).toEqual([ids[4], ids[3]]);
    expect(p1.totalSize).toBe(5);
    expect(p1.nextPageToken).not.toBe('');
    const p2 = await client.listTasks(h.url, {
      contextId: 'ctx-list',
      pageSize: 2,
      pageToken: p1.nextPageToken,
    });
    expect(p2.tasks.map((t) => t.id)).toEqual([ids[2], ids[1]]);
    const p3 = await client.listTasks(h.url, {
      contextId: 'ctx-list',
      pageSize: 2,
      pageToken: p2.nextPageToken,
    });
    expect(p3.tasks.map((t) => t.id)).toEqual([ids[0]]);
    expect(p3.nextPageToken).toBe('');
    expect(p1.tasks[0]?.artifacts).toBeUndefined();
  });
  void release;
});

describe('ListTasks on an agent serving no skill', () => {
  let bare: Harness;
  beforeAll(async () => {
    bare = await startHarness(() => undefined);
  });
  afterAll(async () => bare.close());

  it('is still decided and audited, on the action a2a:ListTasks', async () => {
    const audited = bare.audit.length;
    const page = await new A2AClient({ dispatcher: bare.agent }).listTasks(bare.url);
    expect(page.tasks).toEqual([]);
    expect(bare.audit.slice(audited)).toMatchObject([
      { caller: bare.clientId.toString(), action: 'a2a:ListTasks', decision: 'allow' },
    ]);
    const err = await new A2AClient({ dispatcher: bare.strangerAgent }).listTasks(bare.url).catch((e) => e);
    expect(err).toBeInstanceOf(A2AError);
    expect((err as A2AError).code).toBe('PERMISSION_DENIED');
    expect(bare.audit.slice(audited + 1)).toMatchObject([
      { caller: bare.strangerId.toString(), action: 'a2a:ListTasks', decision: 'deny' },
    ]);
  });
});
