import { describe, expect, it } from 'vitest';
import {
  A2AError,
  InMemoryTaskStore,
  TaskManager,
  TaskStoreFullError,
  WaitTimeoutError,
  type Message,
  type StoredEvent,
  type TaskRecord,
  type TaskState,
} from '../src/index.js';

const msg = (text: string): Message => ({ messageId: `m-${text}`, role: 'ROLE_USER', parts: [{ text }] });

function record(
  id: string,
  state: TaskState,
  opts: { owner?: string; createdAt?: number; updatedAt?: number; contextId?: string } = {},
): TaskRecord {
  const now = Date.now();
  return {
    task: { id, contextId: opts.contextId ?? 'ctx', status: { state } },
    owner: opts.owner ?? 'spiffe://t/a',
    skill: 's',
    createdAt: opts.createdAt ?? now,
    updatedAt: opts.updatedAt ?? now,
    seq: 0,
    events: [],
  };
}

describe('InMemoryTaskStore', () => {
  it('expires finished tasks after the TTL, keeps running ones', async () => {
    const store = new InMemoryTaskStore({ terminalTtlMs: 1000 });
    await store.put(record('done', 'TASK_STATE_COMPLETED'));
    await store.put(record('running', 'TASK_STATE_WORKING'));
    await store.put(record('old', 'TASK_STATE_FAILED', { updatedAt: Date.now() - 5000 }));
    expect(await store.get('old')).toBeUndefined();
    expect(await store.sweep(Date.now() + 2000)).toBe(1);
    expect(await store.get('done')).toBeUndefined();
    expect((await store.get('running'))?.task.id).toBe('running');
  });

  it('stays within maxTasks by dropping the oldest finished task, and refuses when all are running', async () => {
    const store = new InMemoryTaskStore({ maxTasks: 3 });
    await store.put(record('a', 'TASK_STATE_COMPLETED'));
    await store.put(record('b', 'TASK_STATE_WORKING'));
    await store.put(record('c', 'TASK_STATE_COMPLETED'));
    await store.put(record('d', 'TASK_STATE_WORKING'));
    expect(store.size).toBe(3);
    expect(await store.get('a')).toBeUndefined();
    await store.put(record('e', 'TASK_STATE_WORKING'));
    expect(await store.get('c')).toBeUndefined();
    await expect(store.put(record('f', 'TASK_STATE_WORKING'))).rejects.toBeInstanceOf(TaskStoreFullError);
    expect(store.size).toBe(3);
    // Replacing an existing task is always possible.
    await store.put(record('b', 'TASK_STATE_COMPLETED'));
  });

  it('keeps evicting in finish order over many tasks (queue compaction)', async () => {
    const store = new InMemoryTaskStore({ maxTasks: 100 });
    const running = record('long-running', 'TASK_STATE_WORKING');
    await store.put(running);
    for (let i = 0; i < 5000; i++) {
      const r = record(`t${i}`, 'TASK_STATE_WORKING');
      await store.put(r);
      r.task.status = { state: 'TASK_STATE_COMPLETED' };
      await store.put(r);
    }
    expect(store.size).toBe(100);
    expect(await store.get('long-running')).toBe(running);
    expect(await store.get('t4999')).toBeDefined();
    // One slot holds the running task, so the 99 newest finished ones remain.
    expect(await store.get('t4901')).toBeDefined();
    expect(await store.get('t4900')).toBeUndefined();
  });

  it('lists only the owner’s tasks, newest first, with filters and a keyset cursor', async () => {
    const store = new InMemoryTaskStore();
    const t0 = Date.now();
    for (let i = 0; i < 6; i++) {
      await store.put(
        record(`t${i}`, i % 2 ? 'TASK_STATE_COMPLETED' : 'TASK_STATE_WORKING', {
          createdAt: t0 + i,
          contextId: i < 4 ? 'x' : 'y',
        }),
      );
    }
    await store.put(record('other', 'TASK_STATE_WORKING', { owner: 'spiffe://t/b', createdAt: t0 + 10 }));
    const all = await store.list({ owner: 'spiffe://t/a', limit: 10 });
    expect(all.records.map((r) => r.task.id)).toEqual(['t5', 't4', 't3', 't2', 't1', 't0']);
    expect(all.total).toBe(6);
    const ctx = await store.list({
      owner: 'spiffe://t/a',
      contextId: 'x',
      status: 'TASK_STATE_COMPLETED',
      limit: 10,
    });
    expect(ctx.records.map((r) => r.task.id)).toEqual(['t3', 't1']);
    const page = await store.list({
      owner: 'spiffe://t/a',
      limit: 2,
      after: { createdAt: t0 + 4, id: 't4' },
    });
    expect(page.records.map((r) => r.task.id)).toEqual(['t3', 't2']);
  });
});

describe('TaskManager', () => {
  it('numbers events, fans them out in order and persists the final state', async () => {
    const puts: Array<[string, number, TaskState]> = [];
    class RecordingStore extends InMemoryTaskStore {
      override async put(r: TaskRecord): Promise<void> {
        puts.push([r.task.id, r.seq, r.task.status.state]);
        await super.put(r);
      }
    }
    const m = new TaskManager({ store: new RecordingStore() });
    const rec = await m.create({ owner: 'spiffe://t/a', skill: 's', message: msg('hi') });
    expect(rec.task.status.state).toBe('TASK_STATE_SUBMITTED');
    expect(rec.task.history?.[0]?.taskId).toBe(rec.task.id);
    const a: StoredEvent[] = [];
    const b: StoredEvent[] = [];
    m.subscribe(rec.task.id, (e) => a.push(e));
    m.subscribe(rec.task.id, (e) => b.push(e));
    m.setStatus(rec.task.id, 'TASK_STATE_WORKING');
    m.addArtifact(rec.task.id, { artifactId: 'x', parts: [{ text: '1' }] });
    m.addArtifact(
      rec.task.id,
      { artifactId: 'x', parts: [{ text: '2' }] },
      { append: true, lastChunk: true },
    );
    m.setStatus(rec.task.id, 'TASK_STATE_COMPLETED');
    expect(a.map((e) => e.seq)).toEqual([2, 3, 4, 5]);
    expect(b).toEqual(a);
    expect(rec.task.artifacts?.[0]?.parts.map((p) => p.text)).toEqual(['1', '2']);
    // Finished: later updates change nothing.
    expect(m.setStatus(rec.task.id, 'TASK_STATE_WORKING')).toBe(false);
    expect(m.isLive(rec.task.id)).toBe(false);
    await m.close();
    const seqs = puts.filter(([id]) => id === rec.task.id).map(([, seq]) => seq);
    expect(seqs).toEqual([...seqs].sort((x, y) => x - y));
    expect(puts.at(-1)?.[2]).toBe('TASK_STATE_COMPLETED');
  });

  it('waitForCompletion: terminal, interrupted, unknown, aborted', async () => {
    const m = new TaskManager();
    const r1 = await m.create({ owner: 'o', skill: 's', message: msg('1') });
    const done = m.waitForCompletion(r1.task.id);
    m.setStatus(r1.task.id, 'TASK_STATE_WORKING');
    m.setStatus(r1.task.id, 'TASK_STATE_FAILED');
    expect((await done).status.state).toBe('TASK_STATE_FAILED');

    const r2 = await m.create({ owner: 'o', skill: 's', message: msg('2') });
    const interrupted = m.waitForCompletion(r2.task.id);
    const terminalOnly = m.waitForCompletion(r2.task.id, { terminalOnly: true });
    m.setStatus(r2.task.id, 'TASK_STATE_INPUT_REQUIRED');
    expect((await interrupted).status.state).toBe('TASK_STATE_INPUT_REQUIRED');
    m.setStatus(r2.task.id, 'TASK_STATE_COMPLETED');
    expect((await terminalOnly).status.state).toBe('TASK_STATE_COMPLETED');

    await expect(m.waitForCompletion('nope')).rejects.toMatchObject({ jsonRpcCode: -32001 });

    const r4 = await m.create({ owner: 'o', skill: 's', message: msg('4') });
    await expect(m.waitForCompletion(r4.task.id, { timeoutMs: 1 })).rejects.toBeInstanceOf(WaitTimeoutError);
    expect(m.isLive(r4.task.id)).toBe(true); // giving up on waiting changes nothing

    const r3 = await m.create({ owner: 'o', skill: 's', message: msg('3') });
    const ac = new AbortController();
    const waiting = m.waitForCompletion(r3.task.id, { signal: ac.signal });
    ac.abort(new Error('gave up'));
    await expect(waiting).rejects.toThrow('gave up');
    await m.close();
  });

  it('cancel aborts the signal and rejects a pending input wait', async () => {
    const m = new TaskManager();
    const r = await m.create({ owner: 'o', skill: 's', message: msg('1') });
    const signal = m.signalOf(r.task.id);
    const input = m.awaitInput(r.task.id);
    m.setStatus(r.task.id, 'TASK_STATE_INPUT_REQUIRED');
    expect(m.isAwaitingInput(r.task.id)).toBe(true);
    expect(m.cancel(r.task.id)).toBe(true);
    expect(signal?.aborted).toBe(true);
    await expect(input).rejects.toBeInstanceOf(A2AError);
    expect(r.task.status.state).toBe('TASK_STATE_CANCELED');
    expect(m.cancel(r.task.id)).toBe(false);
    await m.close();
  });

  it('deliverInput resumes the waiting handler and records the reply', async () => {
    const m = new TaskManager();
    const r = await m.create({ owner: 'o', skill: 's', message: msg('1') });
    const input = m.awaitInput(r.task.id);
    m.setStatus(r.task.id, 'TASK_STATE_INPUT_REQUIRED');
    expect(m.deliverInput(r.task.id, msg('answer'))).toBe(true);
    expect((await input).parts[0]?.text).toBe('answer');
    expect(r.task.status.state).toBe('TASK_STATE_WORKING');
    expect(r.task.history?.map((h) => h.parts[0]?.text)).toEqual(['1', 'answer']);
    expect(m.deliverInput(r.task.id, msg('again'))).toBe(false);
    await m.close();
  });

  it('replays kept events after a sequence number, or reports the gap', async () => {
    const m = new TaskManager({ maxEventsPerTask: 3 });
    const r = await m.create({ owner: 'o', skill: 's', message: msg('1') });
    for (let i = 0; i < 5; i++) m.addArtifact(r.task.id, { artifactId: `a${i}`, parts: [{ text: `${i}` }] });
    // seq 1..6; only 4, 5, 6 are kept
    const sub = m.subscribe(r.task.id, () => undefined, 3);
    expect(sub?.backlog?.map((e) => e.seq)).toEqual([4, 5, 6]);
    sub?.unsubscribe();
    expect(m.subscribe(r.task.id, () => undefined, 1)?.backlog).toBeUndefined();
    expect(TaskManager.eventsAfter(r, 5)?.map((e) => e.seq)).toEqual([6]);
    await m.close();
  });

  it('cleanup removes expired finished tasks from the store', async () => {
    const store = new InMemoryTaskStore({ terminalTtlMs: 0 });
    const m = new TaskManager({ store });
    const r = await m.create({ owner: 'o', skill: 's', message: msg('1') });
    m.setStatus(r.task.id, 'TASK_STATE_COMPLETED');
    r.updatedAt = Date.now() - 10;
    expect(await m.cleanup()).toBe(1);
    expect(await m.get(r.task.id)).toBeUndefined();
    await m.close();
  });
});

describe('TaskManager.update', () => {
  it('applies an artifact and a status in one call, and nothing once finished', async () => {
    const m = new TaskManager();
    const r = await m.create({ owner: 'o', skill: 's', message: msg('1') });
    const seen: string[] = [];
    m.subscribe(r.task.id, (e) => seen.push(Object.keys(e.event)[0] ?? ''));
    expect(
      m.update(r.task.id, {
        artifact: { artifact: { artifactId: 'a', parts: [{ text: 'x' }] }, lastChunk: true },
        status: { state: 'TASK_STATE_COMPLETED' },
      }),
    ).toBe(true);
    expect(seen).toEqual(['artifactUpdate', 'statusUpdate']);
    expect(m.update(r.task.id, { status: { state: 'TASK_STATE_WORKING' } })).toBe(false);
    expect(r.task.status.state).toBe('TASK_STATE_COMPLETED');
    await m.close();
  });
});
