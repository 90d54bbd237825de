// ListTasks order (A2A v1.0 §3.1.4): "Implementations MUST return tasks
// sorted by their status timestamp time in descending order (most recently
// updated tasks first)", over JSON-RPC on real mTLS, with the embedded store.
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request } from 'undici';
import type { Task } from '../src/index.js';
import { serveEcho, serveSlow, startHarness, type Harness } from './helpers/agents.js';

let h: Harness;
/** Release of each `slow` task whose handler waits, by task id. */
const waiting = new Map<string, () => void>();

beforeAll(async () => {
  h = await startHarness((a2a) => {
    serveEcho(a2a);
    serveSlow(a2a, (id, release) => waiting.set(id, release));
  });
});
afterAll(async () => {
  await h.close();
});

async function rpc<T>(method: string, params: unknown): Promise<T> {
  const res = await request(`${h.url}/`, {
    method: 'POST',
    dispatcher: h.agent,
    headers: { 'content-type': 'application/json', 'a2a-version': '1.0' },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method, params }),
  });
  const body = (await res.body.json()) as { result?: T; error?: { code: number; message: string } };
  if (body.error) throw new Error(`${method}: ${body.error.code} ${body.error.message}`);
  return body.result as T;
}

interface ListResult {
  tasks: Task[];
  nextPageToken: string;
  totalSize: number;
}

const list = (params: Record<string, unknown>) => rpc<ListResult>('ListTasks', params);

/** Sends `skill` a message in `contextId`; a `slow` task is returned once its handler waits (WORKING). */
async function send(skill: 'echo' | 'slow', contextId: string): Promise<Task> {
  const { task } = await rpc<{ task: Task }>('SendMessage', {
    message: {
      messageId: randomUUID(),
      role: 'ROLE_USER',
      parts: [{ text: skill }],
      contextId,
      metadata: { skill },
    },
    configuration: { returnImmediately: skill === 'slow' },
  });
  if (skill === 'slow') await until(() => waiting.has(task.id));
  // Status timestamps are in ms: the next step's is a later one.
  await new Promise((resolve) => setTimeout(resolve, 5));
  return task;
}

async function until(ready: () => boolean): Promise<void> {
  for (let i = 0; i < 400 && !ready(); i++) await new Promise((resolve) => setTimeout(resolve, 5));
  expect(ready()).toBe(true);
}

async function stateOf(id: string): Promise<Task> {
  return rpc<Task>('GetTask', { id });
}

describe('ListTasks order: by status timestamp, most recent first', () => {
  it('lists a task canceled after another completed first (A created, B completed, A canceled)', async () => {
    const ctx = `ctx-${randomUUID()}`;
    const a = await send('slow', ctx);
    const b = await send('echo', ctx);
    expect((await stateOf(b.id)).status.state).toBe('TASK_STATE_COMPLETED');
    const canceled = await rpc<Task>('CancelTask', { id: a.id });
    expect(canceled.status.state).toBe('TASK_STATE_CANCELED');
    const page = await list({ contextId: ctx });
    expect(page.tasks.map((t) => [t.id, t.status.state])).toEqual([
      [a.id, 'TASK_STATE_CANCELED'],
      [b.id, 'TASK_STATE_COMPLETED'],
    ]);
    const stamps = page.tasks.map((t) => Date.parse(t.status.timestamp ?? ''));
    expect(stamps[0]).toBeGreaterThan(stamps[1] as number);
  });

  it('filters statusTimestampAfter on the status timestamp, the bound itself included', async () => {
    const ctx = `ctx-${randomUUID()}`;
    const a = await send('slow', ctx);
    const b = await send('echo', ctx);
    await rpc<Task>('CancelTask', { id: a.id });
    const completed = (await stateOf(b.id)).status.timestamp as string;
    const page = await list({ contextId: ctx, statusTimestampAfter: completed });
    expect(page.tasks.map((t) => t.id)).toEqual([a.id, b.id]);
    expect(page.totalSize).toBe(2);
    const after = new Date(Date.parse(completed) + 1).toISOString();
    expect((await list({ contextId: ctx, statusTimestampAfter: after })).tasks.map((t) => t.id)).toEqual([
      a.id,
    ]);
  });

  it('pages on: a task whose status changes meanwhile moves ahead, into no later page; none is listed twice', async () => {
    const ctx = `ctx-${randomUUID()}`;
    const s: Task[] = [];
    for (let i = 0; i < 5; i++) s.push(await send('slow', ctx));
    const id = (i: number) => (s[i] as Task).id;
    const p1 = await list({ contextId: ctx, pageSize: 2 });
    expect(p1.tasks.map((t) => t.id)).toEqual([id(4), id(3)]);
    expect(p1.totalSize).toBe(5);
    // Task 1, not listed yet, completes while the client pages.
    waiting.get(id(1))?.();
    for (let i = 0; i < 400; i++) {
      if ((await stateOf(id(1))).status.state === 'TASK_STATE_COMPLETED') break;
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    expect((await stateOf(id(1))).status.state).toBe('TASK_STATE_COMPLETED');
    const p2 = await list({ contextId: ctx, pageSize: 2, pageToken: p1.nextPageToken });
    expect(p2.tasks.map((t) => t.id)).toEqual([id(2), id(0)]);
    expect(p2.nextPageToken).toBe('');
    // From the start again, it is first.
    const again = await list({ contextId: ctx, pageSize: 10 });
    expect(again.tasks.map((t) => t.id)).toEqual([id(1), id(4), id(3), id(2), id(0)]);
    for (const t of [0, 2, 3, 4]) await rpc<Task>('CancelTask', { id: id(t) });
  });
});

describe('page tokens are positions in that order', () => {
  it('the task a page token names moves meanwhile: the next page continues from where it was, nothing twice', async () => {
    const ctx = `ctx-${randomUUID()}`;
    const s: Task[] = [];
    for (let i = 0; i < 5; i++) s.push(await send('slow', ctx));
    const id = (i: number) => (s[i] as Task).id;
    const p1 = await list({ contextId: ctx, pageSize: 2 });
    expect(p1.tasks.map((t) => t.id)).toEqual([id(4), id(3)]);
    waiting.get(id(3))?.();
    for (let i = 0; i < 400; i++) {
      if ((await stateOf(id(3))).status.state === 'TASK_STATE_COMPLETED') break;
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    const p2 = await list({ contextId: ctx, pageSize: 2, pageToken: p1.nextPageToken });
    expect(p2.tasks.map((t) => t.id)).toEqual([id(2), id(1)]);
    // An old token ([createdAt, id]) is still read.
    const old = Buffer.from(JSON.stringify([0, id(2)])).toString('base64url');
    expect((await list({ contextId: ctx, pageToken: old })).tasks.map((t) => t.id)).toEqual([id(1), id(0)]);
  });
});
