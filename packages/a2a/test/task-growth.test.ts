// A running task's growth is bounded while it runs, not only once it ends
// (maxBytesPerTask cuts what a finished task keeps; while it runs, a task
// may hold at most its owner's share):
// a handler that publishes without end, or a caller that replies to
// INPUT_REQUIRED turn after turn, would otherwise grow one task in memory
// without bound (100 000 publishMessage calls grew one to 80 MB of heap).
import { describe, expect, it } from 'vitest';
import {
  A2AError,
  A2AServer,
  InMemoryTaskStore,
  TaskManager,
  TaskStoreOverBudgetError,
  approxJsonBytes,
  type Message,
  type Task,
} from '../src/index.js';
import { serveOnLoopback, trustDomainPolicy, workloadsForAll } from './helpers/agents.js';

const OWNER = 'spiffe://t/a';
const msg = (text: string, role: Message['role'] = 'ROLE_USER'): Message => ({
  messageId: `m-${text.slice(0, 16)}-${Math.random()}`,
  role,
  parts: [{ text }],
});
const KB = 'x'.repeat(1000);

/** What `fn` threw, or undefined. */
function thrown(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  return undefined;
}

describe('a running task grows at most to its owner’s share of the store (maxBytesPerOwner)', () => {
  it('refuses an artifact chunk past the bound with a typed error; the task is unchanged and still ends', async () => {
    const store = new InMemoryTaskStore({ maxBytesPerOwner: 10_000 });
    const m = new TaskManager({ store });
    const { task } = await m.create({ owner: OWNER, skill: 's', message: msg('go') });
    const id = task.id;
    m.addArtifact(id, { artifactId: 'a', parts: [{ text: KB }] });
    let taken = 1;
    let err: unknown;
    for (let i = 0; i < 20 && err === undefined; i++) {
      err = thrown(() => m.addArtifact(id, { artifactId: 'a', parts: [{ text: KB }] }, { append: true }));
      if (err === undefined) taken++;
    }
    expect(err).toBeInstanceOf(TaskStoreOverBudgetError);
    expect(err).toMatchObject({
      code: 'TASK_STORE_OVER_BUDGET',
      scope: 'task',
      limitBytes: 10_000,
      neverFits: true,
    });
    expect((err as Error).message).toMatch(
      /would grow to \d+ bytes while running, over its bound \(10000 bytes\)/,
    );
    // Some chunks were taken, the refused one was not.
    expect(taken).toBeGreaterThan(5);
    expect((await m.get(id))?.task.artifacts?.[0]?.parts).toHaveLength(taken);
    // A message that ends the task is always taken.
    expect(m.setStatus(id, 'TASK_STATE_COMPLETED', msg('done', 'ROLE_AGENT'))).toBe(true);
    expect((await m.get(id))?.task.status.state).toBe('TASK_STATE_COMPLETED');
  });

  it('refuses a status message past the bound (publishMessage), not one that ends the task', async () => {
    const m = new TaskManager({ store: new InMemoryTaskStore({ maxBytesPerOwner: 5_000 }) });
    const { task } = await m.create({ owner: OWNER, skill: 's', message: msg('go') });
    let err: unknown;
    let n = 0;
    while (err === undefined && n < 50) {
      err = thrown(() => m.setStatus(task.id, 'TASK_STATE_WORKING', msg(KB, 'ROLE_AGENT')));
      n++;
    }
    expect(err).toMatchObject({ scope: 'task' });
    const history = (await m.get(task.id))?.task.history ?? [];
    // The first user message and the messages taken before the refusal, not the refused one.
    expect(history).toHaveLength(n);
    expect(m.setStatus(task.id, 'TASK_STATE_FAILED', msg(KB.repeat(10), 'ROLE_AGENT'))).toBe(true);
  });

  it('counts a replaced artifact as what it adds: an artifact sent again and again stays within the bound', async () => {
    const m = new TaskManager({ store: new InMemoryTaskStore({ maxBytesPerOwner: 10_000 }) });
    const { task } = await m.create({ owner: OWNER, skill: 's', message: msg('go') });
    for (let i = 0; i < 200; i++) {
      m.addArtifact(task.id, { artifactId: 'progress', parts: [{ text: `${i}% ${KB}` }] });
    }
    expect((await m.get(task.id))?.task.artifacts).toHaveLength(1);
  });

  it('refuses a reply to INPUT_REQUIRED past the bound: the history is unchanged and the handler still waits', async () => {
    const m = new TaskManager({ store: new InMemoryTaskStore({ maxBytesPerOwner: 4_000 }) });
    const { task } = await m.create({ owner: OWNER, skill: 's', message: msg('go') });
    const waited = m.awaitInput(task.id);
    m.setStatus(task.id, 'TASK_STATE_INPUT_REQUIRED', msg('more?', 'ROLE_AGENT'));
    const before = (await m.get(task.id))?.task.history?.length;
    expect(thrown(() => m.deliverInput(task.id, msg(KB.repeat(5))))).toMatchObject({ scope: 'task' });
    expect((await m.get(task.id))?.task.history).toHaveLength(before as number);
    expect(m.isAwaitingInput(task.id)).toBe(true);
    // A reply that fits is still taken.
    expect(m.deliverInput(task.id, msg('ok'))).toBe(true);
    await expect(waited).resolves.toMatchObject({ parts: [{ text: 'ok' }] });
  });

  it('counts running growth against the owner’s share at once, making room from the owner’s finished tasks', async () => {
    const store = new InMemoryTaskStore({
      maxBytes: 1_000_000,
      maxBytesPerOwner: 20_000,
      maxBytesPerTask: 19_000,
    });
    const m = new TaskManager({ store });
    // A finished task of the owner, holding part of its share.
    const done = await m.create({ owner: OWNER, skill: 's', message: msg(KB.repeat(3)) });
    m.setStatus(done.task.id, 'TASK_STATE_COMPLETED');
    const { task } = await m.create({ owner: OWNER, skill: 's', message: msg('go') });
    const attached = store.bytes(OWNER);
    const chunk = { artifactId: 'a', parts: [{ text: KB }] };
    m.addArtifact(task.id, chunk);
    // Counted while the task runs, not only when it ends.
    expect(store.bytes(OWNER)).toBe(attached + approxJsonBytes(chunk));
    for (let i = 0; i < 16; i++) m.addArtifact(task.id, chunk, { append: true });
    // The finished task made room; the running one holds the share now.
    expect(await store.get(done.task.id)).toBeUndefined();
    // A second running task of the owner: no finished task is left to make room.
    const other = await m.create({ owner: OWNER, skill: 's', message: msg('go') });
    let err: unknown;
    for (let i = 0; i < 20 && err === undefined; i++) {
      err = thrown(() => m.addArtifact(other.task.id, { artifactId: `b${i}`, parts: [{ text: KB }] }));
    }
    expect(err).toMatchObject({ code: 'TASK_STORE_OVER_BUDGET', scope: 'caller', neverFits: false });
    // Ended, the tasks are counted as what they keep.
    m.setStatus(task.id, 'TASK_STATE_COMPLETED');
    m.setStatus(other.task.id, 'TASK_STATE_COMPLETED');
    const kept = [await store.get(task.id), await store.get(other.task.id)].map((r) =>
      approxJsonBytes([r?.task, []]),
    );
    expect(store.bytes(OWNER)).toBe(kept[0]! + kept[1]!);
  });
});

describe('with a store other than the embedded one (which counts running tasks itself)', () => {
  // The manager takes only the InMemoryTaskStore class itself as the embedded
  // store: a subclass is written through as a database is (PostgreSQL's
  // counterpart of this test is in interop/postgres-store.test.ts).
  class WrittenThrough extends InMemoryTaskStore {}

  it('bounds the running tasks of one owner together by its share, each one under it; a task that ends makes room; other owners are unaffected', async () => {
    const m = new TaskManager({ store: new WrittenThrough({ maxBytesPerOwner: 10_000 }) });
    const tasks = await Promise.all(
      [1, 2, 3].map(() => m.create({ owner: OWNER, skill: 's', message: msg('go') })),
    );
    const chunk = (i: number) => ({ artifactId: `a${i}`, parts: [{ text: KB.repeat(2) }] });
    // Each task takes two 2 KB artifacts (about 12 KB together, each task about 4 KB)...
    let err: unknown;
    let taken = 0;
    for (let i = 0; i < 2 && err === undefined; i++) {
      for (const r of tasks) {
        err = thrown(() => m.addArtifact(r.task.id, chunk(i)));
        if (err !== undefined) break;
        taken++;
      }
    }
    // ...but not all of them: the owner's share holds them together.
    expect(err).toBeInstanceOf(TaskStoreOverBudgetError);
    expect(err).toMatchObject({ scope: 'caller', limitBytes: 10_000, neverFits: false });
    expect((err as Error).message).toBe(`tasks of ${OWNER} hold their share of the task store (10000 bytes)`);
    expect(taken).toBe(4);
    // Read as written: a durable store's readers see what it holds.
    await m.flush();
    const kept = await Promise.all(
      tasks.map(async (r) => (await m.get(r.task.id))?.task.artifacts?.length ?? 0),
    );
    expect(kept.reduce((a, b) => a + b)).toBe(taken);
    // A new task of the owner is refused while they hold it; nothing is created.
    const before = (await m.list({ owner: OWNER, limit: 10 })).total;
    await expect(m.create({ owner: OWNER, skill: 's', message: msg(KB.repeat(2)) })).rejects.toMatchObject({
      scope: 'caller',
    });
    expect((await m.list({ owner: OWNER, limit: 10 })).total).toBe(before);
    // Another owner is not held back.
    const other = await m.create({ owner: 'spiffe://t/b', skill: 's', message: msg('go') });
    expect(m.addArtifact(other.task.id, chunk(0))).toBe(true);
    // A task that ends gives back what it held, whatever it keeps.
    m.setStatus(tasks[0]!.task.id, 'TASK_STATE_COMPLETED');
    expect(m.addArtifact(tasks[2]!.task.id, chunk(5))).toBe(true);
    // The message that ends a task is taken however much is held.
    for (const r of tasks.slice(1))
      expect(m.setStatus(r.task.id, 'TASK_STATE_COMPLETED', msg(KB.repeat(5), 'ROLE_AGENT'))).toBe(true);
    // Nothing held any more: a task as large as the share allows runs.
    const next = await m.create({ owner: OWNER, skill: 's', message: msg('go') });
    for (let i = 0; i < 3; i++) expect(m.addArtifact(next.task.id, chunk(i))).toBe(true);
    await m.close();
  });
});

describe('over a binding (JSON-RPC, real mTLS)', () => {
  const { server, alice } = workloadsForAll({ server: '/agent/server', alice: '/agent/alice' });

  const SHARE = 64 * 1024;
  /** An agent with a 64 KiB share per caller: `chat` asks again after every reply, `flood` publishes without end. */
  async function start() {
    const a2a = new A2AServer({
      card: { name: 'growth', description: 'running task bounds', version: '1' },
      selfId: server.id,
      enforcer: trustDomainPolicy('growth'),
      heartbeatMs: 0,
      bindings: ['JSONRPC'],
      limits: { retainedBytes: { total: 16 * SHARE, perCaller: SHARE }, maxSubscribersPerTask: 1 },
    });
    const replies: string[] = [];
    a2a.registerTaskHandler('chat', async (ctx) => {
      for (;;) {
        const reply = await ctx.requestInput('and then?');
        const p = reply.parts[0];
        replies.push(p !== undefined && 'text' in p ? (p.text ?? '') : '');
      }
    });
    let published = 0;
    a2a.registerTaskHandler('flood', async (ctx) => {
      for (;;) {
        ctx.publishMessage('x'.repeat(1000));
        published++;
      }
    });
    const served = await serveOnLoopback(a2a, server);
    return {
      url: served.url,
      client: served.client(alice),
      replies,
      published: () => published,
      close: served.close,
    };
  }
  const userMessage = (text: string, skill?: string, taskId?: string) => ({
    messageId: crypto.randomUUID(),
    role: 'ROLE_USER' as const,
    parts: [{ text }],
    ...(skill === undefined ? {} : { metadata: { skill } }),
    ...(taskId === undefined ? {} : { taskId }),
  });
  const taskOf = (r: unknown): Task => {
    if (!(typeof r === 'object' && r !== null && 'task' in r)) throw new Error('expected a task');
    return (r as { task: Task }).task;
  };

  it('refuses a reply to INPUT_REQUIRED that would take the task past the share (PAYLOAD_TOO_LARGE); the task still waits, nothing of it kept', async () => {
    const s = await start();
    try {
      const t = taskOf(await s.client.sendMessage(s.url, { message: userMessage('hi', 'chat') }));
      expect(t.status.state).toBe('TASK_STATE_INPUT_REQUIRED');
      let refused: unknown;
      let sent = 0;
      while (refused === undefined && sent < 20) {
        try {
          await s.client.sendMessage(s.url, { message: userMessage('r'.repeat(8000), undefined, t.id) });
          sent++;
        } catch (err) {
          refused = err;
        }
      }
      expect(refused).toBeInstanceOf(A2AError);
      expect(refused).toMatchObject({ code: 'PAYLOAD_TOO_LARGE' });
      expect((refused as Error).message).toMatch(
        new RegExp(`would grow to \\d+ bytes while running, over its bound \\(${SHARE} bytes\\)`),
      );
      // Some replies were taken, each handed to the handler; the refused one was not.
      expect(sent).toBeGreaterThan(3);
      expect(s.replies).toHaveLength(sent);
      const now = await s.client.getTask(s.url, t.id);
      expect(now.status.state).toBe('TASK_STATE_INPUT_REQUIRED');
      expect(now.history?.filter((m) => m.role === 'ROLE_USER')).toHaveLength(sent + 1);
      // Refused as a stream too, before the stream attached: the task's one subscriber slot is still free.
      const stream = s.client.sendStreamingMessage(s.url, {
        message: userMessage('r'.repeat(8000), undefined, t.id),
      });
      await expect(stream.next()).rejects.toMatchObject({ code: 'PAYLOAD_TOO_LARGE' });
      const sub = s.client.subscribeToTask(s.url, t.id);
      const first = await sub.next();
      expect(first.done).toBe(false);
      await sub.return(undefined);
      // A reply that fits is still taken.
      const small = taskOf(
        await s.client.sendMessage(s.url, { message: userMessage('ok', undefined, t.id) }),
      );
      expect(small.status.state).toBe('TASK_STATE_INPUT_REQUIRED');
      expect(s.replies.at(-1)).toBe('ok');
    } finally {
      await s.close();
    }
  });

  it('throws into a handler that publishes past the share: its task ends FAILED saying so', async () => {
    const s = await start();
    try {
      const t = taskOf(await s.client.sendMessage(s.url, { message: userMessage('go', 'flood') }));
      expect(t.status.state).toBe('TASK_STATE_FAILED');
      const text = t.status.message?.parts.map((p) => ('text' in p ? p.text : '')).join('');
      expect(text).toMatch(
        /^Task failed: the task would grow to \d+ bytes while running, over its bound \(65536 bytes\)$/,
      );
      // About 64 messages of 1 KB fit; without the bound the handler never stopped.
      expect(s.published()).toBeGreaterThan(40);
      expect(s.published()).toBeLessThan(70);
    } finally {
      await s.close();
    }
  });
});
