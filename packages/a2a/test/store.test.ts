import { describe, expect, it } from 'vitest';
import {
  A2AConfigError,
  TaskCanceledError,
  InMemoryTaskStore,
  TaskManager,
  TaskStoreFullError,
  WaitTimeoutError,
  approxJsonBytes,
  type Message,
  type StoredEvent,
  type Task,
  type TaskRecord,
  type TaskState,
} from '../src/index.js';
import { snapshot } from '../src/manager.js';
import { PostgresPushConfigStore, PostgresTaskStore } from '../src/postgres.js';
import { byteBounds } from '../src/store.js';
import { taskStoreContract } from '../src/testing.js';

const msg = (text: string): Message => ({ messageId: `m-${text}`, role: 'ROLE_USER', parts: [{ text }] });

/** A record attached to the store as the TaskManager does it, with a way to finish it. */
function attach(
  store: InMemoryTaskStore,
  id: string,
  state: TaskState,
  opts: { owner?: string; createdAt?: number; updatedAt?: number } = {},
): TaskRecord {
  const now = Date.now();
  const r: TaskRecord = {
    task: { id, contextId: 'ctx', status: { state } },
    owner: opts.owner ?? 'spiffe://t/a',
    skill: 's',
    createdAt: opts.createdAt ?? now,
    updatedAt: opts.updatedAt ?? now,
    seq: 1,
  };
  store.attachNow(r, [{ seq: 1, event: { task: r.task } }]);
  return r;
}

function finish(store: InMemoryTaskStore, r: TaskRecord, state: TaskState = 'TASK_STATE_COMPLETED'): void {
  r.task.status = { state };
  store.finishNow(r.task.id);
}

const shared = new Map<string, InMemoryTaskStore>();
taskStoreContract('InMemoryTaskStore', {
  // One store per set of options: stores "opened" twice share their data, as the contract asks.
  open: (options) => {
    const key = JSON.stringify(options);
    let s = shared.get(key);
    if (!s) shared.set(key, (s = new InMemoryTaskStore(options)));
    return s;
  },
});

describe('InMemoryTaskStore', () => {
  it('expires finished tasks after the TTL, keeps running ones', async () => {
    const store = new InMemoryTaskStore({ terminalTtlMs: 1000 });
    attach(store, 'done', 'TASK_STATE_COMPLETED');
    attach(store, 'running', 'TASK_STATE_WORKING');
    attach(store, 'old', 'TASK_STATE_FAILED', { updatedAt: Date.now() - 5000 });
    expect(await store.get('old')).toBeUndefined();
    expect(await store.sweep(Date.now() + 2000)).toBe(1);
    expect(await store.get('done')).toBeUndefined();
    expect((await store.get('running'))?.task.id).toBe('running');
  });

  it('stays within maxTasks by dropping the oldest finished task, and refuses when all are running', async () => {
    const store = new InMemoryTaskStore({ maxTasks: 3, maxTasksPerOwner: 3 });
    attach(store, 'a', 'TASK_STATE_COMPLETED');
    const b = attach(store, 'b', 'TASK_STATE_WORKING');
    attach(store, 'c', 'TASK_STATE_COMPLETED');
    attach(store, 'd', 'TASK_STATE_WORKING');
    expect(store.size).toBe(3);
    expect(await store.get('a')).toBeUndefined();
    attach(store, 'e', 'TASK_STATE_WORKING');
    expect(await store.get('c')).toBeUndefined();
    expect(() => attach(store, 'f', 'TASK_STATE_WORKING')).toThrow(TaskStoreFullError);
    expect(store.size).toBe(3);
    // A running task that finishes frees its slot for the next one.
    finish(store, b);
    attach(store, 'g', 'TASK_STATE_WORKING');
    expect(await store.get('b')).toBeUndefined();
  });

  it("a task that grew past its owner's share while running frees that owner's older finished tasks when it ends, no one else's", async () => {
    const store = new InMemoryTaskStore({ maxBytes: 100_000, maxBytesPerOwner: 20_000 });
    const big = (n: number): Message => ({
      messageId: 'm',
      role: 'ROLE_USER',
      parts: [{ text: 'x'.repeat(n) }],
    });
    const olds = ['o1', 'o2', 'o3'].map((id) => attach(store, id, 'TASK_STATE_WORKING'));
    for (const r of olds) {
      r.task.history = [big(3000)];
      finish(store, r);
    }
    const other = attach(store, 'other', 'TASK_STATE_WORKING', { owner: 'spiffe://t/b' });
    other.task.history = [big(3000)];
    finish(store, other);
    const grower = attach(store, 'grower', 'TASK_STATE_WORKING');
    const afterOlds = store.bytes('spiffe://t/a');
    expect(afterOlds).toBeLessThan(20_000);
    // Grown in place while running (as the TaskManager does): counted when it ends.
    grower.task.history = [big(12_000)];
    finish(store, grower);
    // Over the share by ~2 KB: the owner's oldest finished task goes, and only it.
    expect(store.bytes('spiffe://t/a')).toBeLessThanOrEqual(20_000);
    expect(await store.get('o1')).toBeUndefined();
    for (const id of ['o2', 'o3', 'grower', 'other']) expect(await store.get(id)).toBeDefined();
    // The owner's total is the sum of what it keeps, exactly as each task is estimated.
    let sum = 0;
    for (const id of ['o2', 'o3', 'grower']) {
      const r = (await store.get(id)) as TaskRecord;
      sum += approxJsonBytes([r.task, [{ seq: 1, event: { task: r.task } }]]);
    }
    expect(store.bytes('spiffe://t/a')).toBe(sum);
  });

  it('counts a task the TaskManager ran, when it ends, as exactly the estimate of what it keeps: shared objects once, dropped events not at all', async () => {
    const store = new InMemoryTaskStore();
    const m = new TaskManager({ store, maxEventsPerTask: 4 });
    const owner = 'spiffe://t/a';
    const { task } = await m.create({ owner, skill: 's', message: msg('hello') });
    // Listened to, as by a stream: its log is kept when it ends (see the test after this one).
    m.subscribe(task.id, () => undefined);
    const attached = store.bytes(owner);
    // Chunks appended in place to the task's own artifact, status messages shared with the history,
    // the same metadata object in two events: what a running count would have to recognise.
    const meta = { note: 'the same object in two events' };
    m.addArtifact(task.id, { artifactId: 'a', parts: [{ text: 'chunk 1' }] });
    for (let i = 2; i <= 5; i++)
      m.addArtifact(task.id, { artifactId: 'a', parts: [{ text: `chunk ${i}` }] }, { append: true });
    m.setStatus(task.id, 'TASK_STATE_WORKING', msg('working'), meta);
    // Counted as it grows, by what each addition holds (so a running task is bounded too), and
    // exactly once it ends: the additions' estimates count a shared object once per addition.
    expect(store.bytes(owner)).toBeGreaterThan(attached);
    m.setStatus(task.id, 'TASK_STATE_COMPLETED', msg('done'), meta);
    const kept = (await store.get(task.id)) as TaskRecord;
    // Events 1-4 (the first one a snapshot of the task) were dropped: 5-8 are kept.
    const events = (await store.events(task.id, kept.seq - 4, 100)) as StoredEvent[];
    expect(events.map((e) => e.seq)).toEqual([5, 6, 7, 8]);
    expect(await store.events(task.id, 0, 100)).toBeUndefined();
    expect(store.bytes(owner)).toBe(approxJsonBytes([kept.task, events]));
    // The kept events and the task share objects (chunks, status messages, metadata): counted apart they are more.
    expect(approxJsonBytes(kept.task) + approxJsonBytes(events)).toBeGreaterThan(store.bytes(owner));
    expect(store.bytes()).toBe(store.bytes(owner));
  });

  it('keeps no event log of a task no stream carried once it ends, and the log of one a stream did (if it left)', async () => {
    const store = new InMemoryTaskStore();
    const m = new TaskManager({ store });
    const owner = 'spiffe://t/a';
    const run = async (listen: boolean) => {
      const { task } = await m.create({ owner, skill: 's', message: msg('hello') });
      const sub = listen ? m.subscribe(task.id, () => undefined) : undefined;
      m.setStatus(task.id, 'TASK_STATE_WORKING');
      m.addArtifact(task.id, { artifactId: 'a', parts: [{ text: 'answer' }] });
      // A stream that left before the end got event ids all the same.
      sub?.unsubscribe();
      // Running, both keep their log.
      expect((await store.events(task.id, 0, 100))?.map((e) => e.seq)).toEqual([1, 2, 3]);
      m.setStatus(task.id, 'TASK_STATE_COMPLETED');
      return task.id;
    };
    const quiet = await run(false);
    const before = store.bytes(owner);
    const heard = await run(true);
    // No stream: the log is gone (read as "no longer kept"), the task itself is whole.
    expect(await store.events(quiet, 0, 100)).toBeUndefined();
    expect(await store.events(quiet, 4, 100)).toEqual([]);
    const q = (await store.get(quiet)) as TaskRecord;
    expect(q.seq).toBe(4);
    expect(q.task.status.state).toBe('TASK_STATE_COMPLETED');
    expect(q.task.history?.[0]?.parts[0]?.text).toBe('hello');
    expect(q.task.artifacts?.[0]?.parts[0]?.text).toBe('answer');
    // Counted as what it keeps: the task alone.
    expect(before).toBe(approxJsonBytes([q.task, []]));
    // A stream: every event stays for a resume after the end.
    const h = (await store.get(heard)) as TaskRecord;
    const log = (await store.events(heard, 0, 100)) as StoredEvent[];
    expect(log.map((e) => e.seq)).toEqual([1, 2, 3, 4]);
    expect(store.bytes(owner) - before).toBe(approxJsonBytes([h.task, log]));
    await m.close();
  });

  it('both stores take their byte bounds one way: a quarter per owner, the owner share per task, positive integers only', async () => {
    expect(byteBounds('S', {}, 1000)).toEqual({
      maxBytes: 1000,
      maxBytesPerOwner: 250,
      maxBytesPerTask: 250,
    });
    expect(byteBounds('S', { maxBytes: 999, maxBytesPerOwner: 100 }, 1000)).toEqual({
      maxBytes: 999,
      maxBytesPerOwner: 100,
      maxBytesPerTask: 100,
    });
    // A total below 4 leaves no per-owner share: refused, not a store that takes nothing.
    expect(() => byteBounds('S', { maxBytes: 3 }, 1000)).toThrow(
      new A2AConfigError('S', ['maxBytesPerOwner must be a positive whole number, got 0']),
    );
    for (const bad of [0, -1, 1.5, Number.NaN, 2 ** 53]) {
      for (const key of ['maxBytes', 'maxBytesPerOwner', 'maxBytesPerTask'] as const) {
        const options = { [key]: bad };
        expect(() => new InMemoryTaskStore(options)).toThrow(
          new A2AConfigError('InMemoryTaskStore', [`${key} must be a positive whole number, got ${bad}`]),
        );
        // Refused before a pool is made (nothing to connect to here, nothing left open).
        expect(
          () => new PostgresTaskStore({ connectionString: 'postgres://127.0.0.1:1/none', ...options }),
        ).toThrow(
          new A2AConfigError('PostgresTaskStore', [`${key} must be a positive whole number, got ${bad}`]),
        );
      }
    }
    for (const bad of [0, -1, 1.5, Number.NaN, 2 ** 53]) {
      const conn = { connectionString: 'postgres://127.0.0.1:1/none', queryTimeoutMs: bad };
      const refused = (owner: string) =>
        new A2AConfigError(owner, [
          `queryTimeoutMs must be a whole number of milliseconds from 1 to 2147483647, got ${bad}`,
        ]);
      expect(() => new PostgresTaskStore(conn)).toThrow(refused('PostgresTaskStore'));
      expect(() => new PostgresPushConfigStore({ ...conn, key: Buffer.alloc(32, 1) })).toThrow(
        refused('PostgresPushConfigStore'),
      );
    }
    const pg = new PostgresTaskStore({ connectionString: 'postgres://127.0.0.1:1/none', maxBytes: 4000 });
    await pg.close();
  });

  it('keeps evicting in finish order over many tasks (queue compaction)', async () => {
    const store = new InMemoryTaskStore({ maxTasks: 100, maxTasksPerOwner: 100 });
    const running = attach(store, 'long-running', 'TASK_STATE_WORKING');
    for (let i = 0; i < 5000; i++) finish(store, attach(store, `t${i}`, 'TASK_STATE_WORKING'));
    expect(store.size).toBe(100);
    expect(await store.get('long-running')).toBe(running);
    expect(await store.get('t4999')).toBeDefined();
    // One slot holds the running task, so the 99 newest finished ones remain.
    expect(await store.get('t4901')).toBeDefined();
    expect(await store.get('t4900')).toBeUndefined();
  });

  it('evicts only what is still stored and finished: a deleted task, or its id attached again and running, is passed over', async () => {
    const store = new InMemoryTaskStore({ maxTasks: 3, maxTasksPerOwner: 3 });
    attach(store, 'a', 'TASK_STATE_COMPLETED');
    attach(store, 'b', 'TASK_STATE_COMPLETED');
    attach(store, 'c', 'TASK_STATE_COMPLETED');
    await store.delete('a');
    // 'b' again, running: its first life's place at the head of the eviction order is not its own any more.
    await store.delete('b');
    const b2 = attach(store, 'b', 'TASK_STATE_WORKING');
    attach(store, 'd', 'TASK_STATE_WORKING');
    // Full: the oldest finished task still stored is 'c'; the running 'b' stays.
    attach(store, 'e', 'TASK_STATE_WORKING');
    expect(await store.get('c')).toBeUndefined();
    expect(await store.get('b')).toBe(b2);
    expect(() => attach(store, 'f', 'TASK_STATE_WORKING')).toThrow(TaskStoreFullError);
    // Once it finishes, 'b' is evictable in its new place.
    finish(store, b2);
    attach(store, 'f', 'TASK_STATE_WORKING');
    expect(await store.get('b')).toBeUndefined();
    expect(store.size).toBe(3);
  });

  it('keeps at most maxEventsPerTask appended events and reports the older ones as gone', async () => {
    const store = new InMemoryTaskStore({ maxEventsPerTask: 3 });
    const task: Task = { id: 'x', contextId: 'ctx', status: { state: 'TASK_STATE_WORKING' } };
    const r: TaskRecord = { task, owner: 'o', skill: 's', createdAt: 1, updatedAt: 1, seq: 1 };
    await store.create(r, { seq: 1, event: { task } });
    const events = [2, 3, 4, 5].map((seq) => ({
      seq,
      event: {
        artifactUpdate: { taskId: 'x', contextId: 'ctx', artifact: { artifactId: `a${seq}`, parts: [] } },
      },
    }));
    await store.append('x', r.task, events, Date.now());
    expect((await store.events('x', 2, 10))?.map((e) => e.seq)).toEqual([3, 4, 5]);
    expect(await store.events('x', 1, 10)).toBeUndefined();
  });
});

describe('TaskManager', () => {
  it('numbers events, fans them out in order and persists the final state', async () => {
    const puts: Array<[string, number, TaskState]> = [];
    // A subclass takes the store's public (copying) path, as a durable store would.
    class RecordingStore extends InMemoryTaskStore {
      override async append(
        id: string,
        task: Task,
        events: readonly StoredEvent[],
        at: number,
      ): Promise<void> {
        for (const e of events) puts.push([id, e.seq, task.status.state]);
        await super.append(id, task, events, at);
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
    // A durable store's subscribers hear of an event once it is written, never before.
    expect(a).toEqual([]);
    await m.flush();
    expect(a.map((e) => e.seq)).toEqual([2, 3, 4, 5]);
    expect(b).toEqual(a);
    expect(rec.task.artifacts?.[0]?.parts.map((p) => p.text)).toEqual(['1', '2']);
    // Finished: later updates change nothing.
    expect(m.setStatus(rec.task.id, 'TASK_STATE_WORKING')).toBe(false);
    expect(m.isLive(rec.task.id)).toBe(false);
    await m.close();
    const seqs = puts.filter(([id]) => id === rec.task.id).map(([, seq]) => seq);
    expect(seqs).toEqual([2, 3, 4, 5]);
    expect(puts.at(-1)?.[2]).toBe('TASK_STATE_COMPLETED');
  });

  it("appends chunks to the task's own copy: events, earlier snapshots and the caller's objects keep what they had", async () => {
    const m = new TaskManager();
    const rec = await m.create({ owner: 'o', skill: 's', message: msg('go') });
    const id = rec.task.id;
    const events: StoredEvent[] = [];
    m.subscribe(id, (e) => events.push(e));
    const first = { artifactId: 'log', parts: [{ text: 'a' }] };
    m.addArtifact(id, first);
    const before = snapshot(rec.task);
    for (const t of ['b', 'c'])
      m.addArtifact(id, { artifactId: 'log', parts: [{ text: t }] }, { append: true });
    m.addArtifact(id, { artifactId: 'other', parts: [{ text: 'x' }] });
    // Not an append: the artifact of that id is replaced, in its place.
    m.addArtifact(id, { artifactId: 'other', parts: [{ text: 'y' }] });
    m.addArtifact(id, { artifactId: 'log', parts: [{ text: 'd' }] }, { append: true, lastChunk: true });

    const texts = (t: Task): string[][] => (t.artifacts ?? []).map((a) => a.parts.map((p) => p.text ?? ''));
    expect(texts(rec.task)).toEqual([['a', 'b', 'c', 'd'], ['y']]);
    expect(texts(before)).toEqual([['a']]);
    expect(first.parts).toEqual([{ text: 'a' }]);
    const chunks = events.map((e) =>
      'artifactUpdate' in e.event ? e.event.artifactUpdate.artifact.parts : [],
    );
    expect(chunks.map((parts) => parts.map((p) => p.text))).toEqual([
      ['a'],
      ['b'],
      ['c'],
      ['x'],
      ['y'],
      ['d'],
    ]);
    const after = snapshot(rec.task);
    m.setStatus(id, 'TASK_STATE_COMPLETED');
    expect(texts(after)).toEqual([['a', 'b', 'c', 'd'], ['y']]);
    await m.close();
  });

  it('waitForCompletion: waits with a timeout share one timer, and each ends at its own deadline', async () => {
    const m = new TaskManager();
    const [a, b, c] = await Promise.all(
      ['a', 'b', 'c'].map((t) => m.create({ owner: 'o', skill: 's', message: msg(t) })),
    );
    const t0 = Date.now();
    const long = m.waitForCompletion(a!.task.id, { timeoutMs: 5000 });
    // An earlier deadline asked after a later one: the timer moves up to it.
    const short = m.waitForCompletion(b!.task.id, { timeoutMs: 20 });
    const settles = m.waitForCompletion(c!.task.id, { timeoutMs: 30 });
    m.setStatus(c!.task.id, 'TASK_STATE_COMPLETED');
    expect((await settles).status.state).toBe('TASK_STATE_COMPLETED');
    await expect(short).rejects.toThrow(`task ${b!.task.id} did not settle within 20 ms`);
    expect(Date.now() - t0).toBeLessThan(2500);
    // The long wait goes on after the short one ended, and its task settling ends it.
    m.setStatus(a!.task.id, 'TASK_STATE_COMPLETED');
    expect((await long).status.state).toBe('TASK_STATE_COMPLETED');
    // A wait that timed out left its task: the next wait on it is woken, once.
    const again = m.waitForCompletion(b!.task.id, { timeoutMs: 5000 });
    m.setStatus(b!.task.id, 'TASK_STATE_INPUT_REQUIRED');
    expect((await again).status.state).toBe('TASK_STATE_INPUT_REQUIRED');
    await m.close();
  });

  it("createNow and nextSettle: the blocking call's path without awaits on the embedded store, none with another", async () => {
    const m = new TaskManager();
    // Created and live before anything awaits, stored as create() stores it.
    const rec = m.createNow({ owner: 'o', skill: 's', message: msg('now') });
    expect(rec).toBeDefined();
    const id = rec!.task.id;
    expect(m.isLive(id)).toBe(true);
    expect(rec!.task.status.state).toBe('TASK_STATE_SUBMITTED');
    expect(rec!.task.history?.[0]?.taskId).toBe(id);
    expect((await m.get(id))?.task.id).toBe(id);
    expect(await m.eventsAfter(id, 0)).toMatchObject([{ seq: 1, event: { task: { id } } }]);
    // The next settle: not WORKING, but INPUT_REQUIRED (or a terminal state).
    const settles = m.nextSettle(id, 5000);
    let woke = false;
    void settles?.then(() => (woke = true));
    m.setStatus(id, 'TASK_STATE_WORKING');
    await new Promise((r) => setImmediate(r));
    expect(woke).toBe(false);
    m.setStatus(id, 'TASK_STATE_INPUT_REQUIRED');
    expect((await settles)?.task.status.state).toBe('TASK_STATE_INPUT_REQUIRED');
    // A task settled already, or not live here: ask waitForCompletion instead.
    expect(m.nextSettle(id, 5000)).toBeUndefined();
    expect(m.nextSettle('nope', 5000)).toBeUndefined();
    // No settle within the time: WaitTimeoutError, and the task goes on.
    const slow = m.createNow({ owner: 'o', skill: 's', message: msg('slow') })!;
    await expect(m.nextSettle(slow.task.id, 5)).rejects.toBeInstanceOf(WaitTimeoutError);
    expect(m.isLive(slow.task.id)).toBe(true);
    await m.close();

    // Any other store (here a subclass, which takes the public path a durable store takes): create() only.
    const other = new TaskManager({ store: new (class extends InMemoryTaskStore {})() });
    expect(other.createNow({ owner: 'o', skill: 's', message: msg('x') })).toBeUndefined();
    const made = await other.create({ owner: 'o', skill: 's', message: msg('x') });
    expect(other.nextSettle(made.task.id, 5000)).toBeUndefined();
    await other.close();
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
    await expect(input).rejects.toBeInstanceOf(TaskCanceledError);
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
    expect((await m.eventsAfter(r.task.id, 5))?.map((e) => e.seq)).toEqual([6]);
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
  it('get with a scope answers nothing for another owner or tenant, over a store that ignores the scope too', async () => {
    // A store of one's own may read by id alone: the manager checks what it returns.
    class UnscopedStore extends InMemoryTaskStore {
      override async get(id: string): Promise<TaskRecord | undefined> {
        return super.get(id);
      }
    }
    const m = new TaskManager({ store: new UnscopedStore() });
    const live = await m.create({ owner: 'spiffe://t/a', tenant: 't1', skill: 's', message: msg('1') });
    const done = await m.create({ owner: 'spiffe://t/a', skill: 's', message: msg('2') });
    m.setStatus(done.task.id, 'TASK_STATE_COMPLETED');
    await m.flush();
    expect(m.isLive(live.task.id)).toBe(true);
    expect(m.isLive(done.task.id)).toBe(false);
    const found = async (id: string, scope: { owner: string; tenant?: string }) =>
      (await m.get(id, scope))?.task.id;
    expect(await found(live.task.id, { owner: 'spiffe://t/a', tenant: 't1' })).toBe(live.task.id);
    expect(await found(live.task.id, { owner: 'spiffe://t/b', tenant: 't1' })).toBeUndefined();
    expect(await found(live.task.id, { owner: 'spiffe://t/a' })).toBeUndefined();
    expect(await found(live.task.id, { owner: 'spiffe://t/a', tenant: 't2' })).toBeUndefined();
    expect(await found(done.task.id, { owner: 'spiffe://t/a', tenant: '' })).toBe(done.task.id);
    expect(await found(done.task.id, { owner: 'spiffe://t/b' })).toBeUndefined();
    expect(await found(done.task.id, { owner: 'spiffe://t/a', tenant: 't1' })).toBeUndefined();
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
