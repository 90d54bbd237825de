// TaskManager.close() lets a reply or cancel handed to the replica running a
// task answer first, for a bounded time: the longest `waitMs` under way plus
// 1 s, and not at all once a statement has failed for want of the database.
// A store whose statements never answer (a database gone without a word:
// the pool's connect and query timeouts are 5 s and 10 s) would otherwise
// keep close() past a shutdown's grace period. The store here is the
// embedded one with the notices and inbox of a shared store; the notices go
// nowhere, so a request handed over waits its whole `waitMs` for an answer.
import { afterEach, describe, expect, it, vi } from 'vitest';
import {
  InMemoryTaskStore,
  TaskManager,
  TaskStoreUnavailableError,
  type Message,
  type TaskInbox,
  type TaskNotifier,
  type TaskRecord,
  type TaskScope,
} from '../src/index.js';
import { TaskStoreClosedError } from '../src/store.js';

/** A statement held by {@link HangingStore}: answered, or failed, only when the test says. */
interface Held {
  readonly name: string;
  readonly answer: () => void;
  readonly fail: (err: unknown) => void;
}

/**
 * A shared store whose statements ({@link get}, {@link postInput},
 * {@link requestCancel}, {@link withdrawInput}) never answer while `hang`
 * is set, and are refused as shutting down once it is closed, as the
 * PostgreSQL store's are.
 */
class HangingStore extends InMemoryTaskStore implements TaskNotifier, TaskInbox {
  hang = false;
  closed = false;
  readonly held: Held[] = [];

  #statement<T>(name: string, answer: () => Promise<T>): Promise<T> {
    if (this.closed) return Promise.reject(new TaskStoreClosedError('the task store is closed'));
    if (!this.hang) return answer();
    return new Promise<T>((resolve, reject) =>
      this.held.push({ name, answer: () => void answer().then(resolve, reject), fail: reject }),
    );
  }

  override get(id: string, scope?: TaskScope): Promise<TaskRecord | undefined> {
    return this.#statement('get', () => super.get(id, scope));
  }

  async listen(): Promise<() => Promise<void>> {
    return async () => undefined;
  }

  requestCancel(): Promise<void> {
    return this.#statement('requestCancel', async () => undefined);
  }

  postInput(): Promise<string> {
    return this.#statement('postInput', async () => 'post-1');
  }

  async takeInput(): Promise<boolean> {
    return false;
  }

  withdrawInput(): Promise<boolean> {
    return this.#statement('withdrawInput', async () => true);
  }

  async close(): Promise<void> {
    this.closed = true;
  }
}

const OWNER = 'spiffe://close.test/caller';
const reply: Message = { messageId: 'm-reply', role: 'ROLE_USER', parts: [{ text: 'yes' }] };

const managers: TaskManager[] = [];
afterEach(async () => {
  vi.useRealTimers();
  for (const m of managers.splice(0)) await m.close();
});

/**
 * Two replicas on one store: `runner` runs a task waiting for input, and
 * `asked` is the replica a reply or cancel for it reached.
 */
async function replicas(): Promise<{ store: HangingStore; asked: TaskManager; record: TaskRecord }> {
  const store = new HangingStore();
  const runner = new TaskManager({ store });
  const asked = new TaskManager({ store });
  managers.push(runner, asked);
  const { task } = await runner.create({
    owner: OWNER,
    skill: 's',
    message: { messageId: 'm-1', role: 'ROLE_USER', parts: [{ text: 'go' }] },
  });
  runner.setStatus(task.id, 'TASK_STATE_INPUT_REQUIRED');
  await runner.flush();
  const record = await store.get(task.id);
  if (!record) throw new Error('the task was not stored');
  // Only timeouts are faked: a turn of the event loop (setImmediate) stays real.
  vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'] });
  return { store, asked, record };
}

/** `p`, and whether it has settled yet. */
function tracked<T>(p: Promise<T>): { p: Promise<T>; settled: () => boolean } {
  let settled = false;
  const done = (): void => {
    settled = true;
  };
  p.then(done, done);
  return { p, settled: () => settled };
}

/** What `p` rejects with (fails the test if it resolves). */
async function rejection(p: Promise<unknown>): Promise<unknown> {
  return p.then(
    () => expect.fail('resolved'),
    (err: unknown) => err,
  );
}

describe('TaskManager.close() with requests handed to another replica', () => {
  it('resolves once the longest waitMs in flight plus 1 s has passed, the statements of a request still hanging', async () => {
    const { store, asked, record } = await replicas();
    store.hang = true;
    const forwarding = asked.forwardInput(record, reply, 2000);
    void forwarding.catch(() => undefined);
    const cancelling = asked.cancelElsewhere(record.task.id, 500);
    void cancelling.catch(() => undefined);
    await vi.advanceTimersByTimeAsync(0);
    expect(store.held.map((h) => h.name).sort()).toEqual(['get', 'postInput']);

    const closing = tracked(asked.close());
    await vi.advanceTimersByTimeAsync(2999);
    expect(closing.settled()).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    expect(closing.settled()).toBe(true);
    await closing.p;

    // The post answers after close() gave up on it: the reply waits out its
    // 2 s, and its withdrawal finds the store closed. The caller is told the
    // retryable "shutting down", as before close() waited for anything.
    const taken = rejection(forwarding);
    store.held.find((h) => h.name === 'postInput')?.answer();
    await vi.advanceTimersByTimeAsync(2000);
    expect(await taken).toBeInstanceOf(TaskStoreClosedError);
  });

  it('resolves at once when a statement fails for want of the database once close() has begun', async () => {
    const { store, asked, record } = await replicas();
    store.hang = true;
    const forwarding = asked.forwardInput(record, reply);
    void forwarding.catch(() => undefined);
    const cancelling = rejection(asked.cancelElsewhere(record.task.id));
    await vi.advanceTimersByTimeAsync(0);

    const closing = tracked(asked.close());
    await vi.advanceTimersByTimeAsync(0);
    expect(closing.settled()).toBe(false);
    store.held.find((h) => h.name === 'get')?.fail(new TaskStoreUnavailableError('connection refused'));
    expect(await cancelling).toBeInstanceOf(TaskStoreUnavailableError);
    // No fake time passes (a few real turns of the event loop): nothing
    // waits out the reply's 5 s, nor the hanging post.
    for (let turn = 0; turn < 20 && !closing.settled(); turn++) {
      await new Promise((resolve) => setImmediate(resolve));
    }
    expect(closing.settled()).toBe(true);
    await closing.p;
  });

  it('still waits for a request handed over that answers within its waitMs, and its caller gets the answer', async () => {
    const { asked, record } = await replicas();
    const cancelling = tracked(asked.cancelElsewhere(record.task.id, 3000));
    await vi.advanceTimersByTimeAsync(0);

    const closing = tracked(asked.close());
    await vi.advanceTimersByTimeAsync(2999);
    expect(cancelling.settled()).toBe(false);
    expect(closing.settled()).toBe(false);
    // Nobody acted on the notice within its wait: canceled in the store by the replica asked.
    await vi.advanceTimersByTimeAsync(1);
    expect((await cancelling.p)?.task.status.state).toBe('TASK_STATE_CANCELED');
    await closing.p;
  });
});
