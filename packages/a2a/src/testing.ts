/**
 * `@weave/a2a/testing` — the contract every {@link TaskStore} must meet, as a
 * vitest suite. A store passes when `taskStoreContract` registers no failing
 * test against it:
 *
 * ```ts
 * import { taskStoreContract } from '@weave/a2a/testing';
 * taskStoreContract('MyStore', { open: (o) => new MyStore(o) });
 * ```
 *
 * Tests use fresh random ids and owners, so several stores may share one
 * database and run the suite one after another.
 *
 * @packageDocumentation
 */
import { afterAll, describe, expect, it } from 'vitest';
import { randomUuid } from '@weave/identity';
import { TaskManager } from './manager.js';
import type { PushConfigStore, StoredEvent, TaskRecord, TaskStore } from './store.js';
import {
  TRUNCATED_METADATA_KEY,
  TaskStoreConflictError,
  TaskStoreRejectedError,
  isPushConfigStore,
  statusTime,
} from './store.js';
import type { Message, StreamResponse, Task, TaskState } from './wire/v1.js';
import { isTerminal } from './wire/v1.js';

/** How the suite gets a store. */
export interface TaskStoreContractOptions {
  /**
   * Opens a store; `terminalTtlMs` is how long finished tasks stay readable,
   * `maxBytesPerTask` (when set) the bytes one finished task keeps (see
   * the embedded store's `maxBytesPerTask`). Stores opened with
   * the same options must share their data (the suite reopens one to check
   * what a second replica or a restart would see).
   */
  readonly open: (options: StoreOpenOptions) => TaskStore | Promise<TaskStore>;
  /**
   * The push-config store that goes with `store`, when it is a separate
   * object. Default: the task store itself when it is a
   * {@link PushConfigStore}; otherwise the push-config tests are skipped.
   */
  readonly pushStore?: (store: TaskStore) => PushConfigStore | Promise<PushConfigStore>;
  /** Runs once after the suite, e.g. to stop a database. */
  readonly teardown?: () => Promise<void>;
  /**
   * Whether the store cuts a finished task to `maxBytesPerTask` as the
   * built-in stores do (events but the last, then history, then artifacts,
   * saying so in `metadata['weave.truncated']`). Default true; `false` skips
   * that test and never opens the store with `maxBytesPerTask`, for a store
   * whose backend bounds what it keeps its own way.
   */
  readonly boundsTaskBytes?: boolean;
}

/** What {@link TaskStoreContractOptions.open} is asked for. */
export interface StoreOpenOptions {
  readonly terminalTtlMs: number;
  readonly maxBytesPerTask?: number;
}

const HOUR = 3_600_000;

const userMessage = (text: string): Message => ({
  messageId: randomUuid(),
  role: 'ROLE_USER',
  parts: [{ text }],
});

function newTask(
  opts: { owner?: string; tenant?: string; state?: TaskState; createdAt?: number; contextId?: string } = {},
): {
  record: TaskRecord;
  first: StoredEvent;
} {
  const id = randomUuid();
  const createdAt = opts.createdAt ?? Date.now();
  const task: Task = {
    id,
    contextId: opts.contextId ?? randomUuid(),
    status: { state: opts.state ?? 'TASK_STATE_SUBMITTED', timestamp: new Date(createdAt).toISOString() },
    history: [{ ...userMessage('hello'), taskId: id }],
    artifacts: [],
    metadata: { n: 1, nested: { ok: true } },
  };
  const record: TaskRecord = {
    task,
    owner: opts.owner ?? `spiffe://contract.test/${randomUuid()}`,
    ...(opts.tenant === undefined ? {} : { tenant: opts.tenant }),
    skill: 'echo',
    createdAt,
    updatedAt: createdAt,
    seq: 1,
  };
  return { record, first: { seq: 1, event: { task: structuredClone(task) } } };
}

/** A status event of `state`, stamped `at` (epoch ms; default now), set on `task`. */
function statusEvent(task: Task, seq: number, state: TaskState, at = Date.now()): StoredEvent {
  const status = { state, timestamp: new Date(at).toISOString() };
  task.status = status;
  return { seq, event: { statusUpdate: { taskId: task.id, contextId: task.contextId, status } } };
}

/** A status event whose status carries an agent message of `text`. */
function saidEvent(task: Task, seq: number, state: TaskState, text: string): StoredEvent {
  const status = {
    state,
    message: { messageId: randomUuid(), role: 'ROLE_AGENT' as const, parts: [{ text }] },
    timestamp: new Date().toISOString(),
  };
  task.status = status;
  return { seq, event: { statusUpdate: { taskId: task.id, contextId: task.contextId, status } } };
}

function artifactEvent(task: Task, seq: number, text: string): StoredEvent {
  const artifact = { artifactId: `a${seq}`, parts: [{ text }] };
  (task.artifacts ??= []).push(artifact);
  const event: StreamResponse = { artifactUpdate: { taskId: task.id, contextId: task.contextId, artifact } };
  return { seq, event };
}

/**
 * Registers the TaskStore contract as a vitest `describe` block named after
 * `name`: creation, ordered appends with conflict detection, paged event
 * reads, listing with filters and keyset cursor, reads scoped to an owner
 * and tenant, expiry, deletion, push
 * configs (when the store keeps them), and a TaskManager writing through it.
 */
export function taskStoreContract(name: string, options: TaskStoreContractOptions): void {
  describe(`TaskStore contract: ${name}`, () => {
    const opened: TaskStore[] = [];
    const open = async (terminalTtlMs = HOUR, maxBytesPerTask?: number): Promise<TaskStore> => {
      const s = await options.open({
        terminalTtlMs,
        ...(maxBytesPerTask === undefined ? {} : { maxBytesPerTask }),
      });
      opened.push(s);
      return s;
    };
    /**
     * A store with one new task, and the push-config store that goes with it;
     * undefined when there is none (the push-config tests skip then).
     */
    const withPushStore = async (): Promise<
      { tasks: TaskStore; store: PushConfigStore; id: string } | undefined
    > => {
      const tasks = await open();
      const store = options.pushStore
        ? await options.pushStore(tasks)
        : isPushConfigStore(tasks)
          ? tasks
          : undefined;
      if (!store) return undefined;
      const { record, first } = newTask();
      await tasks.create(record, first);
      return { tasks, store, id: record.task.id };
    };
    afterAll(async () => {
      for (const s of opened) await s.close?.();
      await options.teardown?.();
    });

    it('creates a task and reads back the same record and first event', async () => {
      const store = await open();
      const { record, first } = newTask();
      await store.create(record, first);
      const got = await store.get(record.task.id);
      expect(got).toEqual(record);
      expect(await store.events(record.task.id, 0, 10)).toEqual([first]);
      expect(await store.get(randomUuid())).toBeUndefined();
      expect(await store.events(randomUuid(), 0, 10)).toBeUndefined();
    });

    it('refuses to create a task twice and keeps the first', async () => {
      const store = await open();
      const { record, first } = newTask();
      await store.create(record, first);
      const again = { ...record, skill: 'other' };
      await expect(store.create(again, first)).rejects.toBeInstanceOf(TaskStoreConflictError);
      expect((await store.get(record.task.id))?.skill).toBe('echo');
    });

    it('appends events in order, saves the task as given, and pages through the log', async () => {
      const store = await open();
      const { record, first } = newTask();
      await store.create(record, first);
      const task = structuredClone(record.task);
      const events: StoredEvent[] = [first, statusEvent(task, 2, 'TASK_STATE_WORKING')];
      const at = Date.now();
      await store.append(task.id, task, events.slice(1), at);
      const batch = [
        artifactEvent(task, 3, 'x'),
        artifactEvent(task, 4, 'y'),
        statusEvent(task, 5, 'TASK_STATE_COMPLETED'),
      ];
      await store.append(task.id, task, batch, at + 1);
      events.push(...batch);
      // The store keeps what it was given, not a reference the caller goes on changing.
      task.status = { state: 'TASK_STATE_FAILED' };
      const got = await store.get(task.id);
      expect(got?.seq).toBe(5);
      expect(got?.updatedAt).toBe(at + 1);
      expect(got?.createdAt).toBe(record.createdAt);
      expect(got?.task.status.state).toBe('TASK_STATE_COMPLETED');
      expect(got?.task.artifacts?.map((a) => a.parts[0]?.text)).toEqual(['x', 'y']);
      expect(got?.task.history).toEqual(record.task.history);
      expect(await store.events(task.id, 0, 100)).toEqual(events);
      expect(await store.events(task.id, 1, 2)).toEqual(events.slice(1, 3));
      expect(await store.events(task.id, 3, 2)).toEqual(events.slice(3, 5));
      expect(await store.events(task.id, 5, 2)).toEqual([]);
    });

    it('rejects an append that does not continue the log, and an unknown task; nothing changes', async () => {
      const store = await open();
      const { record, first } = newTask();
      await store.create(record, first);
      const task = structuredClone(record.task);
      const gap = statusEvent(task, 3, 'TASK_STATE_WORKING');
      await expect(store.append(task.id, task, [gap], 5)).rejects.toBeInstanceOf(TaskStoreConflictError);
      const replay = statusEvent(task, 1, 'TASK_STATE_WORKING');
      await expect(store.append(task.id, task, [replay], 5)).rejects.toBeInstanceOf(TaskStoreConflictError);
      await expect(
        store.append(randomUuid(), task, [statusEvent(task, 2, 'TASK_STATE_WORKING')], 5),
      ).rejects.toBeInstanceOf(TaskStoreConflictError);
      expect(await store.get(task.id)).toEqual(record);
      expect(await store.events(task.id, 0, 10)).toEqual([first]);
    });

    it('lets exactly one of two writers continue the same log', async () => {
      const a = await open();
      const b = await open();
      const { record, first } = newTask();
      await a.create(record, first);
      const ta = structuredClone(record.task);
      const tb = structuredClone(record.task);
      // Now, not a time long past: when the CANCELED writer wins, its finished task must not
      // already be expired (an expired task reads as gone), whichever writer the store lets through.
      const now = Date.now();
      const results = await Promise.allSettled([
        a.append(ta.id, ta, [statusEvent(ta, 2, 'TASK_STATE_WORKING')], now),
        b.append(tb.id, tb, [statusEvent(tb, 2, 'TASK_STATE_CANCELED')], now),
      ]);
      const ok = results.filter((r) => r.status === 'fulfilled');
      const failed = results.filter((r) => r.status === 'rejected');
      expect(ok).toHaveLength(1);
      expect(failed).toHaveLength(1);
      expect((failed[0] as PromiseRejectedResult).reason).toBeInstanceOf(TaskStoreConflictError);
      const log = await b.events(record.task.id, 0, 10);
      expect(log?.map((e) => e.seq)).toEqual([1, 2]);
      const state = (await a.get(record.task.id))?.task.status.state;
      expect(log?.[1]?.event).toMatchObject({ statusUpdate: { status: { state } } });
    });

    it('lists only the owner’s tasks by status timestamp, most recent first, with filters, a keyset cursor and a total', async () => {
      const store = await open();
      const owner = `spiffe://contract.test/${randomUuid()}`;
      const t0 = Date.now() - 60_000;
      const ids: string[] = [];
      for (let i = 0; i < 6; i++) {
        const { record, first } = newTask({ owner, createdAt: t0 + i, contextId: i < 4 ? 'x' : 'y' });
        await store.create(record, first);
        ids.push(record.task.id);
        if (i % 2) {
          const t = structuredClone(record.task);
          await store.append(
            t.id,
            t,
            [statusEvent(t, 2, 'TASK_STATE_COMPLETED', t0 + 100 + i)],
            t0 + 100 + i,
          );
        }
      }
      const other = newTask({ createdAt: t0 + 50 });
      await store.create(other.record, other.first);
      // Completed at t0+101, +103, +105; the others' status is their creation.
      const order = [ids[5], ids[3], ids[1], ids[4], ids[2], ids[0]];
      const all = await store.list({ owner, limit: 10 });
      expect(all.records.map((r) => r.task.id)).toEqual(order);
      expect(all.total).toBe(6);
      const done = await store.list({ owner, contextId: 'x', status: 'TASK_STATE_COMPLETED', limit: 10 });
      expect(done.records.map((r) => r.task.id)).toEqual([ids[3], ids[1]]);
      expect(done.total).toBe(2);
      // At or after: a status stamped at the bound itself is in.
      const recent = await store.list({ owner, updatedAfter: t0 + 103, limit: 10 });
      expect(recent.records.map((r) => r.task.id)).toEqual([ids[5], ids[3]]);
      expect(recent.total).toBe(2);
      const page1 = await store.list({ owner, limit: 2 });
      expect(page1.records.map((r) => r.task.id)).toEqual(order.slice(0, 2));
      const last = page1.records[1] as TaskRecord;
      const page2 = await store.list({
        owner,
        limit: 2,
        after: { statusAt: statusTime(last), id: last.task.id },
      });
      expect(page2.records.map((r) => r.task.id)).toEqual(order.slice(2, 4));
      expect(page2.total).toBe(6);
    });

    it('orders by the status timestamp, not by creation or the last write; equal timestamps by id, greater first', async () => {
      const store = await open();
      const owner = `spiffe://contract.test/${randomUuid()}`;
      const t0 = Date.now() - 60_000;
      // A is created, then B, which completes; then A is canceled: A's status is the most recent.
      const a = newTask({ owner, createdAt: t0 });
      await store.create(a.record, a.first);
      const b = newTask({ owner, createdAt: t0 + 10 });
      await store.create(b.record, b.first);
      const tb = structuredClone(b.record.task);
      await store.append(tb.id, tb, [statusEvent(tb, 2, 'TASK_STATE_WORKING', t0 + 20)], t0 + 20);
      await store.append(tb.id, tb, [statusEvent(tb, 3, 'TASK_STATE_COMPLETED', t0 + 890)], t0 + 890);
      const ta = structuredClone(a.record.task);
      await store.append(ta.id, ta, [statusEvent(ta, 2, 'TASK_STATE_CANCELED', t0 + 945)], t0 + 945);
      expect((await store.list({ owner, limit: 10 })).records.map((r) => r.task.id)).toEqual([ta.id, tb.id]);
      // C works (status at t0+500), then writes an artifact last: a write that leaves the status as it was.
      const c = newTask({ owner, createdAt: t0 + 30 });
      await store.create(c.record, c.first);
      const tc = structuredClone(c.record.task);
      await store.append(tc.id, tc, [statusEvent(tc, 2, 'TASK_STATE_WORKING', t0 + 500)], t0 + 500);
      await store.append(tc.id, tc, [artifactEvent(tc, 3, 'late')], t0 + 2_000);
      const listed = await store.list({ owner, limit: 10 });
      expect(listed.records.map((r) => r.task.id)).toEqual([ta.id, tb.id, tc.id]);
      expect(listed.records.map((r) => statusTime(r))).toEqual([t0 + 945, t0 + 890, t0 + 500]);
      // Two tasks whose status timestamps are equal: the greater id first, on every page.
      const twins = [newTask({ owner, createdAt: t0 + 3_000 }), newTask({ owner, createdAt: t0 + 3_000 })];
      for (const t of twins) await store.create(t.record, t.first);
      const byId = twins.map((t) => t.record.task.id).sort((x, y) => (x < y ? 1 : -1));
      expect((await store.list({ owner, limit: 2 })).records.map((r) => r.task.id)).toEqual(byId);
      const first = await store.list({ owner, limit: 1 });
      const second = await store.list({
        owner,
        limit: 1,
        after: { statusAt: t0 + 3_000, id: first.records[0]?.task.id as string },
      });
      expect([...first.records, ...second.records].map((r) => r.task.id)).toEqual(byId);
    });

    it('pages from a position: a task that moves meanwhile is in no later page, and no task is listed twice', async () => {
      const store = await open();
      const owner = `spiffe://contract.test/${randomUuid()}`;
      const t0 = Date.now() - 60_000;
      const tasks: Task[] = [];
      for (let i = 0; i < 6; i++) {
        const { record, first } = newTask({ owner, createdAt: t0 + i });
        await store.create(record, first);
        tasks.push(structuredClone(record.task));
      }
      const id = (i: number) => (tasks[i] as Task).id;
      const page1 = await store.list({ owner, limit: 2 });
      expect(page1.records.map((r) => r.task.id)).toEqual([id(5), id(4)]);
      const cursor = { statusAt: statusTime(page1.records[1] as TaskRecord), id: id(4) };
      // Meanwhile the task the cursor names changes, and so does one not listed yet.
      for (const [i, at] of [
        [4, t0 + 100],
        [2, t0 + 101],
      ] as const) {
        const t = tasks[i] as Task;
        await store.append(t.id, t, [statusEvent(t, 2, 'TASK_STATE_WORKING', at)], at);
      }
      const page2 = await store.list({ owner, limit: 2, after: cursor });
      expect(page2.records.map((r) => r.task.id)).toEqual([id(3), id(1)]);
      const page3 = await store.list({
        owner,
        limit: 2,
        after: { statusAt: statusTime(page2.records[1] as TaskRecord), id: id(1) },
      });
      expect(page3.records.map((r) => r.task.id)).toEqual([id(0)]);
      // Listed from the start again, the moved tasks come first.
      expect((await store.list({ owner, limit: 10 })).records.map((r) => r.task.id)).toEqual([
        id(2),
        id(4),
        id(5),
        id(3),
        id(1),
        id(0),
      ]);
      // A cursor of creation (an older page token) continues after its task's place now,
      // or, once that task is gone, after its creation time.
      const fromCreation = await store.list({ owner, limit: 10, after: { createdAt: t0 + 3, id: id(3) } });
      expect(fromCreation.records.map((r) => r.task.id)).toEqual([id(1), id(0)]);
      await store.delete(id(3));
      const fromGone = await store.list({ owner, limit: 10, after: { createdAt: t0 + 3, id: id(3) } });
      expect(fromGone.records.map((r) => r.task.id)).toEqual([id(1), id(0)]);
    });

    it('scopes tasks by tenant as well as owner: a list names one tenant, or none, never any', async () => {
      const store = await open();
      const owner = `spiffe://contract.test/${randomUuid()}`;
      const t0 = Date.now() - 60_000;
      const a = newTask({ owner, tenant: 'tenant-a', createdAt: t0 });
      const b = newTask({ owner, tenant: 'tenant-b', createdAt: t0 + 1 });
      const none = newTask({ owner, createdAt: t0 + 2 });
      for (const t of [a, b, none]) await store.create(t.record, t.first);
      // The tenant is kept with the task and read back as it was written.
      expect(await store.get(a.record.task.id)).toEqual(a.record);
      expect((await store.get(a.record.task.id))?.tenant).toBe('tenant-a');
      expect((await store.get(none.record.task.id))?.tenant).toBeUndefined();
      const inA = await store.list({ owner, tenant: 'tenant-a', limit: 10 });
      expect(inA.records.map((r) => r.task.id)).toEqual([a.record.task.id]);
      expect(inA.total).toBe(1);
      const inB = await store.list({ owner, tenant: 'tenant-b', limit: 10 });
      expect(inB.records.map((r) => r.task.id)).toEqual([b.record.task.id]);
      const untenanted = await store.list({ owner, limit: 10 });
      expect(untenanted.records.map((r) => r.task.id)).toEqual([none.record.task.id]);
      expect(untenanted.total).toBe(1);
      expect((await store.list({ owner, tenant: 'tenant-c', limit: 10 })).total).toBe(0);
      // Another owner in the same tenant sees nothing of these.
      const stranger = `spiffe://contract.test/${randomUuid()}`;
      expect((await store.list({ owner: stranger, tenant: 'tenant-a', limit: 10 })).total).toBe(0);
    });

    it('reads a task scoped to its owner and tenant: any other scope finds nothing, as for a missing id', async () => {
      const store = await open();
      const owner = `spiffe://contract.test/${randomUuid()}`;
      const stranger = `spiffe://contract.test/${randomUuid()}`;
      const a = newTask({ owner, tenant: 'tenant-a' });
      const none = newTask({ owner });
      for (const t of [a, none]) await store.create(t.record, t.first);
      expect(await store.get(a.record.task.id, { owner, tenant: 'tenant-a' })).toEqual(a.record);
      expect(await store.get(none.record.task.id, { owner })).toEqual(none.record);
      for (const scope of [
        { owner: stranger, tenant: 'tenant-a' },
        { owner },
        { owner, tenant: 'tenant-b' },
      ]) {
        expect(await store.get(a.record.task.id, scope)).toBeUndefined();
      }
      expect(await store.get(none.record.task.id, { owner, tenant: 'tenant-a' })).toBeUndefined();
      expect(await store.get(none.record.task.id, { owner: stranger })).toBeUndefined();
    });

    it('expires finished tasks after the TTL and keeps running ones', async () => {
      const store = await open(1_000);
      const running = newTask();
      await store.create(running.record, running.first);
      const done = newTask();
      await store.create(done.record, done.first);
      const t = structuredClone(done.record.task);
      await store.append(t.id, t, [statusEvent(t, 2, 'TASK_STATE_COMPLETED')], Date.now());
      expect((await store.get(t.id))?.task.status.state).toBe('TASK_STATE_COMPLETED');
      expect(await store.sweep(Date.now() + 5_000)).toBeGreaterThanOrEqual(1);
      expect(await store.get(t.id)).toBeUndefined();
      expect(await store.events(t.id, 0, 10)).toBeUndefined();
      expect((await store.get(running.record.task.id))?.task.id).toBe(running.record.task.id);
    });

    it.skipIf(options.boundsTaskBytes === false)(
      'cuts a finished task above maxBytesPerTask: events but the last, then history, then artifacts, and says so',
      async () => {
        // 20 000 bytes a task; each big text is 3 000, so ten of them are over
        // the bound whatever the store's byte estimate, and one is well within.
        const bound = 20_000;
        const store = await open(HOUR, bound);
        const big = (i: number) => `${i}:${'x'.repeat(3_000)}`;
        /** Creates a task, lets `grow` write events 2.., finishes it with one more event; returns its id, log and last seq. */
        const run = async (grow: (task: Task, seq: number) => StoredEvent[]) => {
          const { record, first } = newTask();
          await store.create(record, first);
          const task = structuredClone(record.task);
          const log = [first, ...grow(task, 2)];
          await store.append(task.id, task, log.slice(1), Date.now());
          const done = statusEvent(task, log.length + 1, 'TASK_STATE_COMPLETED');
          await store.append(task.id, task, [done], Date.now());
          log.push(done);
          return { id: task.id, log, record };
        };

        // Within the bound: kept whole, nothing said.
        const small = await run((t, seq) => [artifactEvent(t, seq, 'small')]);
        const kept = await store.get(small.id);
        expect(kept?.task.metadata).toEqual({ n: 1, nested: { ok: true } });
        expect(kept?.task.artifacts?.map((a) => a.parts[0]?.text)).toEqual(['small']);
        expect(await store.events(small.id, 0, 10)).toEqual(small.log);

        // Large events only: the log goes but its last event; history and artifacts stay.
        const chatty = await run((t, seq) =>
          Array.from({ length: 10 }, (_, i) => saidEvent(t, seq + i, 'TASK_STATE_WORKING', big(i))),
        );
        const c = await store.get(chatty.id);
        expect(c?.task.metadata).toEqual({ n: 1, nested: { ok: true }, [TRUNCATED_METADATA_KEY]: 'events' });
        expect(c?.task.status.state).toBe('TASK_STATE_COMPLETED');
        expect(c?.task.history).toEqual(chatty.record.task.history);
        expect(c?.seq).toBe(12);
        // Events that were cut cannot be read (a resuming subscriber is told, not given a gap).
        expect(await store.events(chatty.id, 0, 100)).toBeUndefined();
        expect(await store.events(chatty.id, 10, 100)).toBeUndefined();
        expect(await store.events(chatty.id, 11, 100)).toEqual(chatty.log.slice(11));
        expect(await store.events(chatty.id, 12, 100)).toEqual([]);

        // A long history: then the history goes too, the small artifact stays.
        const talky = await run((t, seq) => {
          for (let i = 0; i < 8; i++) (t.history ??= []).push({ ...userMessage(big(i)), taskId: t.id });
          return [statusEvent(t, seq, 'TASK_STATE_WORKING'), artifactEvent(t, seq + 1, 'small')];
        });
        const h = await store.get(talky.id);
        expect(h?.task.metadata?.[TRUNCATED_METADATA_KEY]).toBe('events,history');
        expect(h?.task.history).toEqual([]);
        expect(h?.task.artifacts?.map((a) => a.parts[0]?.text)).toEqual(['small']);
        expect(await store.events(talky.id, 3, 10)).toEqual(talky.log.slice(3));

        // Large artifacts: events, history and artifacts all go; the final status stays.
        const bulky = await run((t, seq) =>
          Array.from({ length: 10 }, (_, i) => artifactEvent(t, seq + i, big(i))),
        );
        const b = await store.get(bulky.id);
        expect(b?.task.metadata?.[TRUNCATED_METADATA_KEY]).toBe('events,history,artifacts');
        expect(b?.task.history).toEqual([]);
        expect(b?.task.artifacts).toEqual([]);
        expect(b?.task.status.state).toBe('TASK_STATE_COMPLETED');
        expect(await store.events(bulky.id, 11, 10)).toEqual(bulky.log.slice(11));

        // What another replica (or a restart) reads is the cut task too.
        const again = await open(HOUR, bound);
        expect(await again.get(bulky.id)).toEqual(b);
      },
    );

    it('deletes a task with its events', async () => {
      const store = await open();
      const { record, first } = newTask();
      await store.create(record, first);
      await store.delete(record.task.id);
      expect(await store.get(record.task.id)).toBeUndefined();
      expect(await store.events(record.task.id, 0, 10)).toBeUndefined();
    });

    it('keeps push configs per task, secrets included, and drops them with the task', async (ctx) => {
      const opened = await withPushStore();
      if (!opened) {
        ctx.skip();
        return;
      }
      const { tasks, store, id } = opened;
      const a = { taskId: id, id: 'a', url: 'https://hooks.test/a', token: 'tok-a' };
      const b = {
        taskId: id,
        id: 'b',
        url: 'https://hooks.test/b',
        authentication: { scheme: 'Bearer', credentials: 'secret-b' },
      };
      await store.setPushConfig(a);
      await store.setPushConfig(b);
      expect(await store.listPushConfigs(id)).toEqual([a, b]);
      const a2 = { ...a, url: 'https://hooks.test/a2' };
      await store.setPushConfig(a2);
      expect(await store.listPushConfigs(id)).toEqual([a2, b]);
      expect(await store.deletePushConfig(id, 'a')).toBe(true);
      expect(await store.deletePushConfig(id, 'a')).toBe(false);
      expect(await store.listPushConfigs(id)).toEqual([b]);
      expect(await store.listPushConfigs(randomUuid())).toEqual([]);
      await tasks.delete(id);
      expect(await store.listPushConfigs(id)).toEqual([]);
    });

    it('refuses a push config without an id, keeping nothing (configs are kept and replaced by id)', async (ctx) => {
      const opened = await withPushStore();
      if (!opened) {
        ctx.skip();
        return;
      }
      const { store, id } = opened;
      for (const noId of [{}, { id: '' }]) {
        await expect(
          store.setPushConfig({ taskId: id, url: 'https://hooks.test/x', ...noId }),
        ).rejects.toBeInstanceOf(TaskStoreRejectedError);
      }
      expect(await store.listPushConfigs(id)).toEqual([]);
    });

    it('takes a TaskManager’s writes: a second manager on the same data sees the whole log in order', async () => {
      const writer = new TaskManager({ store: await open() });
      const rec = await writer.create({
        owner: 'spiffe://contract.test/m',
        skill: 's',
        message: userMessage('go'),
      });
      const id = rec.task.id;
      // A subscriber, as a stream is: the embedded store keeps no log of a task no stream carried.
      writer.subscribe(id, () => undefined);
      writer.setStatus(id, 'TASK_STATE_WORKING');
      for (let i = 0; i < 20; i++) writer.addArtifact(id, { artifactId: `a${i}`, parts: [{ text: `${i}` }] });
      await writer.flush();
      writer.setStatus(id, 'TASK_STATE_COMPLETED');
      await writer.flush();
      const reader = new TaskManager({ store: await open() });
      const stored = await reader.get(id);
      expect(stored?.task.status.state).toBe('TASK_STATE_COMPLETED');
      expect(stored?.task.artifacts).toHaveLength(20);
      expect(isTerminal(stored?.task.status.state ?? 'TASK_STATE_UNSPECIFIED')).toBe(true);
      const log = await reader.eventsAfter(id, 0);
      expect(log?.map((e) => e.seq)).toEqual(Array.from({ length: 23 }, (_, i) => i + 1));
      expect(await reader.eventsAfter(id, 21)).toEqual(log?.slice(21));
      await writer.close();
      await reader.close();
    });
  });
}
