// How a TaskManager holds its lease on a store that keeps leases (as the
// PostgreSQL store does; its behaviour against a real database is in
// interop/postgres-server.test.ts). Here the leases are kept in memory by a
// store whose heartbeat answers when the test says: what a database does
// that applies a statement and answers it late, or not at all, is otherwise
// a matter of timing.
import { afterEach, describe, expect, it } from 'vitest';
import {
  InMemoryTaskStore,
  TaskLeaseLostError,
  TaskManager,
  TaskStoreUnavailableError,
  type StoredEvent,
  type Task,
  type TaskLeases,
  type TaskRecord,
} from '../src/index.js';

/** An embedded store that also keeps this replica's lease, with heartbeat answers held by the test. */
class HeldLeaseStore extends InMemoryTaskStore implements TaskLeases {
  readonly replicaId = 'replica-a';
  readonly leaseTtlMs = 300;
  /** Times {@link retire} was called. */
  retired = 0;
  /** What heartbeats answer from now on; `'held'`: they wait for {@link answer}. */
  next: boolean | 'held' = true;
  readonly #held: Array<(kept: boolean) => void> = [];

  heartbeat(): Promise<boolean> {
    const next = this.next;
    if (next === 'held') return new Promise((resolve) => this.#held.push(resolve));
    return Promise.resolve(next);
  }

  /** The held heartbeats answer `kept`. */
  answer(kept: boolean): void {
    for (const resolve of this.#held.splice(0)) resolve(kept);
  }

  async claimOrphans(): Promise<TaskRecord[]> {
    return [];
  }

  async retire(): Promise<void> {
    this.retired++;
  }

  /** Appends tried; with {@link away} set, each fails for want of the database. */
  appends = 0;
  away = false;

  override async append(
    id: string,
    task: Task,
    events: readonly StoredEvent[],
    updatedAt: number,
  ): Promise<void> {
    this.appends++;
    if (this.away) throw new TaskStoreUnavailableError('the database does not answer');
    return super.append(id, task, events, updatedAt);
  }
}

const managers: TaskManager[] = [];
afterEach(async () => {
  for (const m of managers.splice(0)) await m.close();
});

async function running(
  store: HeldLeaseStore,
  options: Omit<ConstructorParameters<typeof TaskManager>[0], 'store'> = {},
): Promise<{ m: TaskManager; id: string; signal: AbortSignal }> {
  const m = new TaskManager({ store, ...options });
  managers.push(m);
  const rec = await m.create({
    owner: 'spiffe://leases.test/caller',
    skill: 's',
    message: { messageId: 'm1', role: 'ROLE_USER', parts: [{ text: 'go' }] },
  });
  const id = rec.task.id;
  m.setStatus(id, 'TASK_STATE_WORKING');
  return { m, id, signal: m.signalOf(id) as AbortSignal };
}

async function until(what: () => boolean, ms = 3_000): Promise<void> {
  const end = Date.now() + ms;
  while (!what()) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 10));
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('TaskManager leases', () => {
  it('a heartbeat that does not come back: after a whole lease the tasks are given up and the lease row is expired, once per finding', async () => {
    const store = new HeldLeaseStore();
    const { m, id, signal } = await running(store);
    const heldFrom = Date.now();
    store.next = 'held';
    await until(() => signal.aborted);
    // Not before a whole lease has passed since the last confirmed renewal.
    expect(Date.now() - heldFrom).toBeGreaterThanOrEqual(store.leaseTtlMs - 110);
    expect(signal.reason).toBeInstanceOf(TaskLeaseLostError);
    expect(m.isLive(id)).toBe(false);
    // The lease may have been renewed in the database all the same (applied, answered late):
    // the replica expires it, so the task it gave up is an orphan for any replica to claim.
    expect(store.retired).toBe(1);
    await sleep(4 * (store.leaseTtlMs / 3)); // more ticks find the same: told once
    expect(store.retired).toBe(1);
    // The held heartbeat answers at last; the next one is held again: a new finding, told again.
    store.answer(true);
    await until(() => store.retired === 2);
  });

  it('a heartbeat that fails has the same outcome once a whole lease has passed', async () => {
    const store = new HeldLeaseStore();
    const { signal } = await running(store);
    const original = store.heartbeat.bind(store);
    store.heartbeat = () => Promise.reject(new Error('database unreachable'));
    await until(() => signal.aborted);
    expect(signal.reason).toBeInstanceOf(TaskLeaseLostError);
    await sleep(4 * (store.leaseTtlMs / 3));
    expect(store.retired).toBe(1);
    store.heartbeat = original;
  });

  it('a failure report that throws (the application’s hook) does not keep the tasks from being given up', async () => {
    const store = new HeldLeaseStore();
    let told = 0;
    const { signal } = await running(store, {
      onChoreFailed: () => {
        told++;
        throw new Error('the hook broke');
      },
    });
    const original = store.heartbeat.bind(store);
    store.heartbeat = () => Promise.reject(new Error('database unreachable'));
    await until(() => signal.aborted);
    expect(signal.reason).toBeInstanceOf(TaskLeaseLostError);
    expect(told).toBeGreaterThanOrEqual(1);
    store.heartbeat = original;
  });

  it('a new task is refused, typed, while no renewal has been confirmed for a whole lease, and taken again once one is', async () => {
    const store = new HeldLeaseStore();
    const { m, signal } = await running(store);
    const ask = (n: string) =>
      m.create({
        owner: 'spiffe://leases.test/caller',
        skill: 's',
        message: { messageId: n, role: 'ROLE_USER', parts: [{ text: 'go' }] },
      });
    store.next = 'held';
    await until(() => signal.aborted);
    const stored = async () => (await store.list({ owner: 'spiffe://leases.test/caller', limit: 100 })).total;
    const before = await stored();
    await expect(ask('refused')).rejects.toBeInstanceOf(TaskStoreUnavailableError);
    // Nothing was stored for it.
    expect(await stored()).toBe(before);
    store.next = true;
    store.answer(true);
    // The held heartbeat answers (sent too long ago to count) and the next ones renew:
    // once one is confirmed (a tick every third of a lease), new tasks are taken again.
    await sleep(store.leaseTtlMs);
    await expect(ask('taken')).resolves.toMatchObject({
      task: { status: { state: 'TASK_STATE_SUBMITTED' } },
    });
    expect(await stored()).toBe(before + 1);
  });

  it('close() hands the lease back once its writes are done', async () => {
    const store = new HeldLeaseStore();
    const { m } = await running(store);
    managers.splice(0);
    await m.close();
    expect(store.retired).toBe(1);
  });

  it('close() with the database away leaves the rest to the lease: after the first write that fails for want of it, nothing more is tried and nothing handed back', async () => {
    const store = new HeldLeaseStore();
    const { m, id } = await running(store);
    const second = await m.create({
      owner: 'spiffe://leases.test/caller',
      skill: 's',
      message: { messageId: 'm2', role: 'ROLE_USER', parts: [{ text: 'go' }] },
    });
    await m.flush();
    store.appends = 0;
    store.away = true;
    managers.splice(0);
    // Closing cancels both tasks: one write each, were the database there.
    await m.close();
    expect(store.appends).toBe(1);
    expect(store.retired).toBe(0);
    // Nothing was written: the tasks are as last stored, for the replica that claims them.
    for (const t of [id, second.task.id]) {
      expect((await store.get(t))?.task.status.state).not.toBe('TASK_STATE_CANCELED');
    }
  });

  it('close() after the tasks were given up on its own reading does not hand the lease back again', async () => {
    const store = new HeldLeaseStore();
    const { m, signal } = await running(store);
    store.next = 'held';
    await until(() => signal.aborted);
    expect(store.retired).toBe(1);
    managers.splice(0);
    await m.close();
    expect(store.retired).toBe(1);
  });

  it('a heartbeat that reports the lease expired: the tasks are given up, and the lease (already in a new generation) is not expired again', async () => {
    const store = new HeldLeaseStore();
    const { m, id, signal } = await running(store);
    store.next = false;
    await until(() => signal.aborted);
    expect(signal.reason).toBeInstanceOf(TaskLeaseLostError);
    expect(m.isLive(id)).toBe(false);
    await sleep(4 * (store.leaseTtlMs / 3));
    expect(store.retired).toBe(0);
  });
});
