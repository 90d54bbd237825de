import { isDeepStrictEqual } from 'node:util';
import { WeaveError, randomUuid } from '@weave/identity';
import { z } from 'zod';
import { Deadlines } from './deadlines.js';
import type {
  StoredEvent,
  TaskInbox,
  TaskLeases,
  TaskNotice,
  TaskNotifier,
  TaskPage,
  TaskQuery,
  TaskRecord,
  TaskScope,
  TaskStore,
} from './store.js';
import {
  InMemoryTaskStore,
  TaskLeaseLostError,
  TaskStoreConflictError,
  TaskStoreOverBudgetError,
  approxJsonBytes,
  TaskStoreRejectedError,
  TaskStoreUnavailableError,
  TaskStoreClosedError,
  isTaskInbox,
  isTaskLeases,
  inTaskScope,
  isTaskNotifier,
} from './store.js';
import type { Artifact, Message, StreamResponse, Struct, Task, TaskState } from './wire/v1.js';
import { endsTask as eventEndsTask, isSettled, isTerminal, stateOfEvent } from './wire/v1.js';
import { A2AErrors, TaskCanceledError, TaskHandedOverError } from './errors.js';
import { checkBudget, checkOptions, positiveCount, timerMs } from './options.js';

/** Where every task's write queue starts: a settled promise is only chained from, so one serves all tasks. */
const RESOLVED: Promise<void> = Promise.resolve();

/**
 * Resolves after the current turn of the event loop (its microtasks
 * included): what a handler emits without waiting for I/O (WORKING, its
 * result, COMPLETED) has been emitted by then, and goes to a durable store
 * in one write instead of one per await.
 */
const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** A promise's handler either way: what is waited for is that it settled, not how. */
const ignore = (): void => undefined;

/**
 * What {@link TaskManager.close} gives the requests handed to other replicas
 * beyond the longest of their waits: the statements before and after each
 * wait (a read, the post or cancel notice, the withdrawal), a few ms each
 * with the database there.
 */
const SETTLE_MARGIN_MS = 1000;

/** The options of {@link TaskManager.waitForCompletion}, as its helpers take them. */
type WaitOptions = NonNullable<Parameters<TaskManager['waitForCompletion']>[1]>;

/** {@link TaskManager.waitForCompletion} gave up; the task goes on. */
export class WaitTimeoutError extends WeaveError {
  constructor(taskId: string, ms: number) {
    super('WAIT_TIMEOUT', `task ${taskId} did not settle within ${ms} ms`);
  }
}

/**
 * A background operation of the task manager's own, of no one task: the
 * lease's renewal (with the claims of orphans that follow it), the sweep of
 * expired tasks, the lease's retire when it ran out.
 */
export type StoreChore = 'lease' | 'sweep' | 'retire';

/** How long a {@link StoreChore} failed: since when (epoch ms), and how many times in a row. */
export interface ChoreOutage {
  readonly since: number;
  readonly failures: number;
}

/** Called for every event of a task, in order. Must not throw. */
export type TaskListener = (event: StoredEvent, record: TaskRecord) => void;

const ManagerNumbers = z.object({
  maxEventsPerTask: positiveCount.optional(),
  retryMaxMs: timerMs.optional(),
  sweepIntervalMs: timerMs.optional(),
});

/** Options of {@link TaskManager}. */
export interface TaskManagerOptions {
  readonly store?: TaskStore;
  /** Events kept per task for replay to reconnecting subscribers. Default 1000. */
  readonly maxEventsPerTask?: number;
  /**
   * Called when writing to the store fails. The task goes on in memory and
   * the write is retried (with backoff, up to `retryMaxMs` apart) until it
   * succeeds, so nothing is lost while the store is away. A running task's
   * write that fails because the store cannot be reached
   * ({@link TaskStoreUnavailableError}) is told once per run of failures of
   * that task's writes, as it begins, with `failures` (its failed attempts
   * in a row so far, this one included), not at each retry: every running
   * task retries several times a second while a database is away. Any other
   * failure is told each time. Must not throw.
   */
  readonly onStoreError?: (err: unknown, taskId: string, failures?: number) => void;
  /**
   * Called when a running task's write lands after a run of failures told
   * to {@link onStoreError} as the store being away: how many attempts
   * failed, and since when. Must not throw.
   */
  readonly onStoreRecovered?: (taskId: string, outage: ChoreOutage) => void;
  /**
   * Called when a {@link StoreChore} fails after it last worked: once when
   * a run of failures begins, not at each retry while it lasts (the lease
   * is renewed every third of its length: each tick while the database is
   * away would be one more call). Must not throw. Default: `onStoreError`
   * with an empty task id.
   */
  readonly onChoreFailed?: (chore: StoreChore, err: unknown) => void;
  /** Called when a chore that failed ({@link onChoreFailed}) works again. Must not throw. */
  readonly onChoreRecovered?: (chore: StoreChore, outage: ChoreOutage) => void;
  /** Longest pause between retries of a failed write, in ms. Default 5000. */
  readonly retryMaxMs?: number;
  /**
   * With a store that keeps leases ({@link TaskLeases}): called for each
   * task claimed from a replica whose lease expired, now recorded as this
   * replica's. Default: {@link TaskManager.failStored} with a reason.
   */
  readonly onOrphan?: (record: TaskRecord) => Promise<void>;
  /**
   * How often expired finished tasks are removed from the store (its
   * `sweep`), in ms, whether or not anyone calls {@link TaskManager.cleanup}.
   * Default 60 s.
   */
  readonly sweepIntervalMs?: number;
}

/** Input to {@link TaskManager.create}. */
export interface NewTask {
  readonly owner: string;
  /** The request's tenant, when it named one. */
  readonly tenant?: string;
  readonly skill: string;
  readonly message: Message;
  readonly contextId?: string;
  readonly metadata?: Struct;
}

/** What a subscriber gets: the events it missed (or none) and a way to leave. */
export interface Subscription {
  /** Events after the requested sequence number; `undefined` when they are no longer kept. */
  readonly backlog: readonly StoredEvent[] | undefined;
  readonly record: TaskRecord;
  unsubscribe(): void;
}

/** A reader of a task that runs on another replica: it reads the log from the store as notices say it grew. */
interface Follower {
  readonly id: string;
  /** Last event delivered. */
  cursor: number;
  readonly onEvent: (e: StoredEvent) => void;
  readonly onEnd: () => void;
  busy: boolean;
  /** A notice came while reading: read once more. */
  again: boolean;
  stopped: boolean;
  retry?: NodeJS.Timeout;
}

interface Live {
  readonly record: TaskRecord;
  /** Recent events for replay (bounded); for the embedded store, the very array it keeps. */
  readonly events: StoredEvent[];
  /** Events not yet handed to a durable store. */
  pending: StoredEvent[];
  readonly listeners: Set<TaskListener>;
  /** Listeners that go on from the store when this replica loses the task (see {@link TaskManager.subscribe}). */
  onLost?: Map<TaskListener, (seq: number) => void>;
  /** Created on first use: most tasks never look at their signal. */
  abort?: AbortController;
  canceled?: unknown;
  chain: Promise<void>;
  /** A write is queued and has not started: later events ride along with it. */
  writeQueued: boolean;
  /** Consecutive failed writes, for the retry backoff. */
  failures: number;
  /**
   * When the run of failed writes the store being away began (epoch ms),
   * told to `onStoreError` then: its next landed write is told to
   * `onStoreRecovered`, the retries in between to nobody.
   */
  awaySince?: number;
  settleWaiters: Array<(t: TaskRecord) => void>;
  /**
   * A subscriber (a stream, or push delivery) has listened to the task: its
   * events carried their numbers out, so the log is kept for a resume after it ends.
   */
  subscribed?: true;
  /** Position of each artifact in `record.task.artifacts` by id (built on first use). */
  artifactIndex?: Map<string, number>;
  /** Bytes of the task's content, counted as it grows (see {@link TaskStore.maxBytesPerOwner}). */
  bytes: number;
  inputWaiter?: { resolve: (m: Message) => void; reject: (e: unknown) => void };
  /**
   * With a durable store: the task as last written, and its last event
   * number. Readers and subscribers are shown this, never a state the store
   * does not hold yet: what a caller was told survives this process.
   */
  durable?: { task: Task; seq: number };
  /**
   * A write of the task's events sent to a durable store and not answered
   * yet. It may have committed, and another replica (told by the store's
   * notice) may have answered a caller what it holds: a read here waits for
   * its answer rather than show an earlier state ({@link TaskManager.get}).
   */
  writing?: Promise<void>;
  /** Found moved on or ended by another writer ({@link TaskManager.#overtaken}): being given up. */
  overtaken?: true;
}

/**
 * Owns the state of tasks: creates them, applies updates as numbered events,
 * fans events out to subscribers in one order, and writes each change through
 * to the {@link TaskStore} in that same order.
 *
 * Updates are synchronous in memory (so every subscriber sees the same
 * sequence) and persisted asynchronously, serialised per task.
 */
export class TaskManager {
  readonly store: TaskStore;
  /** The embedded store, written synchronously; undefined for any other store. */
  readonly #memory: InMemoryTaskStore | undefined;
  readonly #live = new Map<string, Live>();
  readonly #flushing = new Set<Promise<void>>();
  /**
   * Finished tasks whose last writes have not reached a durable store yet
   * (it may be away): still read from here, so nothing acknowledged is
   * unreadable in the meantime.
   */
  readonly #settling = new Map<string, Live>();
  readonly #maxEvents: number;
  /** The store's {@link TaskStore.maxBytesPerOwner}, read once: what one running task may add. */
  readonly #maxGrowth: number;
  /**
   * With a store other than the embedded one (which counts running tasks in
   * its own bounds): bytes the tasks of each owner running here hold, bounded
   * by the owner's share together, as on the embedded store. The database
   * counts a running task only as created, so without it one caller's
   * running tasks could each grow to the whole share in this process.
   */
  readonly #runningBytes = new Map<string, number>();
  readonly #onStoreError: (err: unknown, taskId: string, failures?: number) => void;
  readonly #onStoreRecovered: (taskId: string, outage: ChoreOutage) => void;
  readonly #onChoreFailed: (chore: StoreChore, err: unknown) => void;
  readonly #onChoreRecovered: (chore: StoreChore, outage: ChoreOutage) => void;
  /** The chores failing now, each with its run of failures so far. */
  readonly #choresFailing = new Map<StoreChore, { since: number; failures: number }>();
  readonly #retryMaxMs: number;
  readonly #notifier: TaskNotifier | undefined;
  #listening: Promise<void> | undefined;
  #unlisten: (() => Promise<void>) | undefined;
  readonly #followers = new Map<string, Set<Follower>>();
  readonly #leases: TaskLeases | undefined;
  readonly #inbox: TaskInbox | undefined;
  readonly #onOrphan: (record: TaskRecord) => Promise<void>;
  #leaseTimer: NodeJS.Timeout | undefined;
  readonly #sweepTimer: NodeJS.Timeout;
  /** The deadlines of {@link #settledHere}'s waits. */
  readonly #waitDeadlines = new Deadlines<() => void>((expire) => expire());
  #ticking = false;
  /** A `retired` notice came while a lease tick ran: that tick is followed by another. */
  #tickAgain = false;
  #closed = false;
  /**
   * Requests handed to the replica running a task ({@link forwardInput},
   * {@link cancelElsewhere}) and waits on tasks running elsewhere, under
   * way, each with how long it waits for the other replica (its `waitMs`; 0
   * for a wait close() ends): close() lets them answer, for a bounded time,
   * before it closes the store. A request handed over may have taken effect
   * there; its caller is told what happened rather than a retryable error.
   */
  readonly #inFlight = new Map<Promise<void>, number>();
  /** Ends close()'s wait for {@link #inFlight} at once; set while it waits. */
  #stopSettling: (() => void) | undefined;
  /** Wakes each wait on a task running elsewhere ({@link #settledElsewhere}): close() ends them. */
  readonly #wakeOnClose = new Set<() => void>();
  /**
   * A statement failed for want of the database since close() began: what is
   * still unwritten is left to another replica (the lease runs out) instead
   * of each write, and the lease hand-back, waiting out its own timeout.
   */
  #storeAwayAtClose = false;
  /** When the last heartbeat that renewed the lease was sent (epoch ms). */
  #leaseOkAt: number | undefined;
  /** Tasks were given up on this replica's own reading and its lease row expired; until the next heartbeat answer. */
  #gaveUp = false;
  /** A {@link #resync} runs; `#resyncAgain`: another was asked for meanwhile. */
  #resyncing = false;
  #resyncAgain = false;

  /** @throws {A2AConfigError} when a number is out of range; nothing is started. */
  constructor(options: TaskManagerOptions = {}) {
    checkOptions('TaskManager', ManagerNumbers, options);
    this.store = options.store ?? new InMemoryTaskStore();
    // Only the class itself: a subclass may do more in put() (and must be called).
    this.#memory =
      Object.getPrototypeOf(this.store) === InMemoryTaskStore.prototype
        ? (this.store as InMemoryTaskStore)
        : undefined;
    this.#maxEvents = options.maxEventsPerTask ?? 1000;
    this.#maxGrowth = this.store.maxBytesPerOwner ?? Number.POSITIVE_INFINITY;
    this.#onStoreError = options.onStoreError ?? (() => undefined);
    this.#onStoreRecovered = options.onStoreRecovered ?? (() => undefined);
    this.#onChoreFailed = options.onChoreFailed ?? ((_chore, err) => this.#onStoreError(err, ''));
    this.#onChoreRecovered = options.onChoreRecovered ?? (() => undefined);
    this.#retryMaxMs = options.retryMaxMs ?? 5000;
    this.#notifier = isTaskNotifier(this.store) ? this.store : undefined;
    this.#leases = isTaskLeases(this.store) ? this.store : undefined;
    this.#inbox = this.#notifier && isTaskInbox(this.store) ? this.store : undefined;
    this.#onOrphan =
      options.onOrphan ??
      (async (r) => {
        await this.failStored(r.task.id, ORPHAN_REASON);
      });
    // Expired tasks leave memory (or the table) on a clock, not only when a
    // new task happens to be created or someone calls cleanup().
    this.#sweepTimer = setInterval(() => {
      this.store.sweep().then(
        () => this.#choreWorked('sweep'),
        (err: unknown) => this.#choreFailed('sweep', err),
      );
    }, options.sweepIntervalMs ?? 60_000);
    this.#sweepTimer.unref();
    if (this.#leases) {
      // Renew this replica's lease and look for orphans three times per lease
      // period: an orphan is claimed at most a third of the TTL after its lease ran out.
      const every = Math.max(100, Math.floor(this.#leases.leaseTtlMs / 3));
      this.#leaseTimer = setInterval(() => void this.#leaseTick(), every);
      this.#leaseTimer.unref();
      void this.#leaseTick();
    }
  }

  /** Heartbeat, then claim and hand over orphans; never two at once, never throws. */
  async #leaseTick(): Promise<void> {
    const leases = this.#leases;
    if (!leases || this.#closed) return;
    if (this.#ticking) {
      // The last tick has not come back: a database that stops answering
      // sends no error to act on. Past the lease's length since the last
      // renewal, it has run out all the same, and other replicas may claim
      // the tasks: they are given up here too, without waiting for an answer.
      this.#ifLeaseRanOut(leases);
      return;
    }
    this.#ticking = true;
    try {
      await this.listen(); // heartbeats once when it first succeeds
      const sentAt = Date.now();
      const kept = await leases.heartbeat();
      this.#leaseOkAt = sentAt;
      this.#gaveUp = false;
      // Renewed after it had expired: the tasks run here may be another replica's by now.
      if (!kept) this.#leaseLost();
      for (;;) {
        const orphans = await leases.claimOrphans(16);
        for (const r of orphans) {
          await this.#onOrphan(r).catch((err: unknown) => this.#onStoreError(err, r.task.id));
        }
        if (orphans.length < 16 || this.#closed) break;
      }
      this.#choreWorked('lease');
    } catch (err) {
      // Cut off for longer than the lease: it has expired, by the database's clock too
      // (it was renewed no earlier than sent), and other replicas may claim the tasks.
      // First: giving the tasks up must not wait on, or be stopped by, the report below.
      this.#ifLeaseRanOut(leases);
      this.#choreFailed('lease', err);
    } finally {
      this.#ticking = false;
      if (this.#tickAgain) {
        this.#tickAgain = false;
        void this.#leaseTick();
      }
    }
  }

  /**
   * When this replica finds, on its own reading, that its lease has run out (no
   * renewal confirmed for a whole lease): it gives its tasks up and, once per
   * such finding, expires its lease row. The database may have renewed the
   * lease after all (a heartbeat applied in time whose answer is late or
   * lost); expired, the tasks just given up are orphans at once, failed or
   * run again by whichever replica claims them, rather than held by a lease
   * nobody acts on. Not after a heartbeat that reported the lease expired:
   * that one already started a new generation, and expiring it would start
   * another at every renewal.
   */
  #ifLeaseRanOut(leases: TaskLeases): void {
    if (!this.#leaseRanOut(leases)) return;
    this.#leaseLost();
    if (this.#gaveUp) return;
    this.#gaveUp = true;
    leases.retire().then(
      () => this.#choreWorked('retire'),
      (err: unknown) => this.#choreFailed('retire', err),
    );
  }

  /** `chore` failed: told once per run of failures (see {@link TaskManagerOptions.onChoreFailed}). */
  #choreFailed(chore: StoreChore, err: unknown): void {
    const failing = this.#choresFailing.get(chore);
    if (failing) {
      failing.failures++;
      return;
    }
    this.#choresFailing.set(chore, { since: Date.now(), failures: 1 });
    try {
      this.#onChoreFailed(chore, err);
    } catch {
      // A report that throws (the application's hook, its logger) changes nothing here.
    }
  }

  /** `chore` worked: told when it had been failing. */
  #choreWorked(chore: StoreChore): void {
    const failing = this.#choresFailing.get(chore);
    if (!failing) return;
    this.#choresFailing.delete(chore);
    try {
      this.#onChoreRecovered(chore, failing);
    } catch {
      // As in #choreFailed: a report that throws changes nothing.
    }
  }

  /** No renewal of the lease confirmed for a whole lease: it has run out, whatever the database says later. */
  #leaseRanOut(leases: TaskLeases): boolean {
    return this.#leaseOkAt !== undefined && Date.now() - this.#leaseOkAt > leases.leaseTtlMs;
  }

  /**
   * This replica lost its lease: every task it runs is given up. Their
   * handlers' signals abort with {@link TaskLeaseLostError}, nothing more of
   * theirs is written (the store would refuse it), and their streams go on
   * from the store, where whoever takes the task over writes.
   */
  #leaseLost(): void {
    for (const live of [...this.#live.values(), ...this.#settling.values()]) {
      this.#drop(live, new TaskLeaseLostError(live.record.task.id));
    }
  }

  /**
   * Gives up a task this replica no longer owns (see {@link #leaseLost}), one
   * whose write the store refused, or one another writer moved on or ended
   * ({@link #overtaken}), `ended` as stored then, or one handed over
   * ({@link handOver}) once its last write is done. Its handler's signal
   * aborts with `err`. Its listeners carry on from the store (`onLost`)
   * unless `carryOn` is false.
   */
  #drop(live: Live, err: Error, ended?: TaskRecord, carryOn = true): void {
    const id = live.record.task.id;
    if (this.#live.get(id) !== live && this.#settling.get(id) !== live) return;
    if (this.#live.get(id) === live) this.#hold(live.record.owner, -live.bytes);
    this.#live.delete(id);
    if (this.#settling.get(id) === live) this.#settling.delete(id);
    // Not acknowledged to anyone (an event is told once written): nothing is lost by dropping them.
    live.pending = [];
    this.#stopRun(live, err);
    const seq = live.durable?.seq ?? live.record.seq;
    const onLost = live.onLost;
    live.listeners.clear();
    live.onLost = undefined;
    if (carryOn) for (const goOn of onLost?.values() ?? []) goOn(seq);
    // Waiters read the task from the store from now on.
    settle(live, ended ?? durableView(live));
  }

  /**
   * With a store that keeps leases ({@link TaskLeases}): gives task `id`,
   * running here, to the replica that claims it next instead of ending it,
   * for a task that may run again when this replica stops. It is no longer
   * live here from now on: its handler's signal aborts, and a pending input
   * wait rejects, with `reason`, and what it publishes from now on is not
   * kept. What it published before is still written ({@link flush} and
   * {@link close} wait for it); then, as on lease loss, its listeners hear
   * nothing more from here (they do not carry on from the store: this
   * replica is stopping) and its waiters read it from the store. Nothing
   * ends it: once this replica's lease is handed back ({@link close}) or
   * runs out, another replica claims it as an orphan
   * ({@link TaskManagerOptions.onOrphan}). False, and nothing changes,
   * without leases or when the task does not run here.
   */
  handOver(id: string, reason: Error = new TaskHandedOverError(id)): boolean {
    const live = this.#live.get(id);
    if (!this.#leases || !live) return false;
    // Out of #live first: whatever the handler does as its signal aborts
    // (publish, end the task) is ignored, as for a task given up on lease loss.
    this.#live.delete(id);
    this.#hold(live.record.owner, -live.bytes);
    // Readable from here until its last write is done, as a finished task
    // is; flush() waits for that write, and close() hands the lease back after it.
    this.#keepUntilWritten(id, live, () => this.#drop(live, reason, undefined, false));
    this.#stopRun(live, reason);
    return true;
  }

  /** Aborts the handler's signal of `live` and rejects its pending input wait, with `reason`. */
  #stopRun(live: Live, reason: Error): void {
    (live.abort ??= new AbortController()).abort(reason);
    const waiter = live.inputWaiter;
    live.inputWaiter = undefined;
    waiter?.reject(reason);
  }

  /**
   * Keeps `live`, out of {@link #live} now, readable until its queued writes
   * are done, and those writes visible to {@link flush}; `then` runs once they are.
   */
  #keepUntilWritten(id: string, live: Live, then: () => void): void {
    const last = live.chain;
    this.#flushing.add(last);
    this.#settling.set(id, live);
    void last.then(() => {
      this.#flushing.delete(last);
      then();
    });
  }

  /** True when a reply to INPUT_REQUIRED can be handed to the replica running the task ({@link forwardInput}). */
  get canForwardInput(): boolean {
    return this.#inbox !== undefined;
  }

  /**
   * Hands a reply to INPUT_REQUIRED to the replica whose handler waits for
   * it (the task is not live here): posted in the store's inbox, taken
   * there, delivered to the handler. Resolves once the post was taken by
   * the waiting handler (looked at when the task's log moves on, or after
   * `waitMs`). When nobody took it (no handler waits for it any more: the
   * task was canceled, or the wait timed out as the reply came), the post is
   * withdrawn and this rejects as a local reply would be refused.
   *
   * @throws {TaskStoreOverBudgetError} (scope `task`, `neverFits`) at once,
   *   nothing posted, when the reply alone is larger than the owner's share:
   *   the running replica would refuse it whatever the task holds.
   * @throws {TaskStoreUnavailableError} (retryable), nothing posted, once
   *   {@link close} has begun: {@link close} waits for a reply handed over
   *   before it, to tell its caller whether it was taken, for a bounded time
   *   (see there); past it, the caller may get this error after all.
   */
  async forwardInput(record: TaskRecord, message: Message, waitMs = 5000): Promise<void> {
    const inbox = this.#inbox;
    if (!inbox) throw new TypeError('forwardInput() needs a task store that hands input between replicas');
    return this.#handOver(() => this.#forwardInput(inbox, record, message, waitMs), waitMs);
  }

  async #forwardInput(inbox: TaskInbox, record: TaskRecord, message: Message, waitMs: number): Promise<void> {
    const id = record.task.id;
    const bytes = approxJsonBytes(bindMessage(message, id, record.task.contextId));
    if (bytes > this.#maxGrowth) {
      throw new TaskStoreOverBudgetError('task', this.#maxGrowth, record.owner, bytes);
    }
    let post!: string;
    await this.#actWhileFollowing(
      id,
      record.seq,
      (e) => 'statusUpdate' in e.event,
      waitMs,
      async () => void (post = await inbox.postInput(id, message)),
    );
    // The task moving on does not say the reply woke it (it may have been
    // canceled): the post does. Taken only by a handler it was delivered
    // to, in one step the withdrawal waits for; still there, nobody took it.
    if (await inbox.withdrawInput(id, post)) {
      throw A2AErrors.unsupportedOperation(`Task ${id} is not waiting for input`);
    }
  }

  /**
   * Runs `op`, a request handed to the replica running a task that waits up
   * to `waitMs` for it, as one {@link close} waits for; refused, nothing
   * done, once close() has begun.
   */
  #handOver<T>(op: () => Promise<T>, waitMs: number): Promise<T> {
    if (this.#closed) return Promise.reject(new TaskStoreClosedError('the task manager is closing'));
    return this.#whileOpen(op(), waitMs);
  }

  /**
   * `work`, counted among the work {@link close} lets finish before it
   * closes the store; `waitMs`, how long it waits for another replica.
   */
  #whileOpen<T>(work: Promise<T>, waitMs = 0): Promise<T> {
    const done = work.then(ignore, (err: unknown) => this.#failedAtClose(err));
    this.#inFlight.set(done, waitMs);
    void done.then(() => this.#inFlight.delete(done));
    return work;
  }

  /**
   * A statement failed: once close() has begun, for want of the database,
   * what close() still waits for is given up ({@link #storeAwayAtClose}):
   * each of its statements would only wait out a timeout too.
   */
  #failedAtClose(err: unknown): void {
    if (!this.#closed || !(err instanceof TaskStoreUnavailableError)) return;
    this.#storeAwayAtClose = true;
    this.#stopSettling?.();
  }

  /**
   * Follows task `id` (running on another replica) from `afterSeq`, runs
   * `act`, then waits up to `waitMs` for an event `until` accepts, or for the
   * follow to end. How this replica asks the task's owner to do something
   * (take a reply, cancel) and gives it time to show that it did.
   */
  async #actWhileFollowing(
    id: string,
    afterSeq: number,
    until: (e: StoredEvent) => boolean,
    waitMs: number,
    act: () => Promise<void>,
  ): Promise<void> {
    let seen!: () => void;
    const done = new Promise<void>((resolve) => (seen = resolve));
    const stop = await this.follow(
      id,
      afterSeq,
      (e) => {
        if (until(e)) seen();
      },
      seen,
    );
    let timer: NodeJS.Timeout | undefined;
    try {
      await act();
      await Promise.race([done, new Promise((resolve) => (timer = setTimeout(resolve, waitMs)))]);
    } finally {
      clearTimeout(timer);
      stop();
    }
  }

  /** A reply posted for a task whose handler waits here: taken from the inbox and delivered. */
  async #takeInput(id: string): Promise<void> {
    const inbox = this.#inbox;
    if (!inbox || !this.isAwaitingInput(id)) return;
    try {
      // Taken only if the handler still waits as it is handed over: a wait
      // that ended meanwhile (canceled, timed out) leaves the reply for the
      // forwarding replica to withdraw and refuse, as a local reply would be.
      // A reply the task cannot grow by is not taken (its transaction would
      // only roll back, the reply left to fail again at every notice): the
      // forwarding replica withdraws it when its wait ends.
      await inbox.takeInput(id, (message) => {
        try {
          return this.deliverInput(id, message);
        } catch (err) {
          if (err instanceof TaskStoreOverBudgetError) return false;
          throw err;
        }
      });
    } catch (err) {
      this.#onStoreError(err, id);
    }
  }

  /** True when the store carries notices between replicas: tasks running elsewhere can be followed live. */
  get canFollow(): boolean {
    return this.#notifier !== undefined;
  }

  /**
   * Starts listening for notices of other replicas (once; also done by the
   * first {@link create} or {@link follow}). A no-op without a notifier.
   */
  async listen(): Promise<void> {
    const n = this.#notifier;
    if (!n || this.#closed) return;
    this.#listening ??= (async () => {
      // The lease row exists before this replica records itself as the runner of a task.
      await this.#leases?.heartbeat();
      this.#unlisten = await n.listen((notice) => this.#onNotice(notice));
    })().catch((err: unknown) => {
      // Not listening: the next call tries again.
      this.#listening = undefined;
      throw err;
    });
    await this.#listening;
  }

  /** Number of tasks that have not reached a terminal state in this process. */
  get activeCount(): number {
    return this.#live.size;
  }

  /** Creates a task in SUBMITTED state; its first event is the Task itself. */
  async create(input: NewTask): Promise<TaskRecord> {
    const now = this.createNow(input);
    if (now !== undefined) return now;
    // A task created under a lease that ran out would be another replica's
    // orphan at once, run or failed there after its caller was told it
    // started: refused instead, typed and retryable, until a renewal is confirmed.
    if (this.#leases && this.#leaseRanOut(this.#leases)) {
      throw new TaskStoreUnavailableError(
        "this replica's task lease has not been renewed in time (the database answers late or not at all)",
      );
    }
    const made = newTask(input);
    const bytes = approxJsonBytes(made.record.task);
    // Held before the awaits, so that concurrent creates of one owner count each other.
    this.#hold(made.record.owner, bytes);
    try {
      // A task that runs here must hear a cancel asked on another replica.
      if (this.#notifier) await this.listen();
      await this.store.create(made.record, made.first);
    } catch (err) {
      this.#hold(made.record.owner, -bytes);
      throw err;
    }
    return this.#goLive(made, bytes);
  }

  /**
   * @internal {@link create} with no await, for the embedded store (which
   * makes it synchronous); `undefined` with any other store. A blocking
   * SendMessage takes it: each await on that path is a microtask turn per
   * call, which `bench/` measured.
   */
  createNow(input: NewTask): TaskRecord | undefined {
    const memory = this.#memory;
    if (!memory) return undefined;
    const made = newTask(input);
    return this.#goLive(made, memory.attachNow(made.record, made.events));
  }

  /** A task just stored, counted for `bytes`, starts to run here. */
  #goLive(made: NewRecord, bytes: number): TaskRecord {
    const { record, events } = made;
    const live: Live = {
      record,
      events,
      pending: [],
      listeners: new Set(),
      chain: RESOLVED,
      writeQueued: false,
      failures: 0,
      settleWaiters: [],
      bytes,
      // Both set here, as in adopt(): the object keeps its shape as it is written.
      durable: this.#memory ? undefined : { task: snapshot(record.task), seq: 1 },
      writing: undefined,
    };
    this.#live.set(record.task.id, live);
    return record;
  }

  /**
   * The task's record, live or stored. With a durable store, a task running
   * here is shown as last written (see {@link subscribe}), after the write
   * under way, if any, is answered: once any replica has answered a state,
   * no read here shows an earlier one. With `scope`, a
   * task of another owner or tenant is `undefined`, answered after the store
   * read a missing task takes (see {@link TaskStore.get}): a task running
   * here would otherwise be answered from memory, measurably sooner, and
   * tell a caller that someone else's task exists.
   */
  async get(id: string, scope?: TaskScope): Promise<TaskRecord | undefined> {
    const live = this.#live.get(id) ?? this.#settling.get(id);
    // Its answer comes before this read's (see Live.writing): no database round trip of its own.
    if (live?.writing) await live.writing.then(ignore, ignore);
    if (scope === undefined) return live ? durableView(live) : await this.store.get(id);
    if (live && inTaskScope(live.record, scope)) return durableView(live);
    const stored = await this.store.get(id, scope);
    // A store may ignore the scope: what it returns is checked here too.
    return live || !stored || !inTaskScope(stored, scope) ? undefined : stored;
  }

  /** True while the task runs in this process. */
  isLive(id: string): boolean {
    return this.#live.has(id);
  }

  /** Aborted when the task is canceled or the manager closes. */
  signalOf(id: string): AbortSignal | undefined {
    const live = this.#live.get(id);
    if (!live) return undefined;
    live.abort ??= new AbortController();
    return live.abort.signal;
  }

  async list(query: TaskQuery): Promise<TaskPage> {
    return this.store.list(query);
  }

  /**
   * Sets the task's status. Ignored (returns false) once the task is terminal,
   * so a handler that keeps publishing after a cancel changes nothing.
   *
   * @throws {TaskStoreOverBudgetError} as {@link addArtifact} does, for the
   *   message of a state that does not end the task; nothing changes.
   */
  setStatus(id: string, state: TaskState, message?: Message, metadata?: Struct): boolean {
    const live = this.#live.get(id);
    if (!live) return false;
    const task = live.record.task;
    if (message) {
      message = bindMessage(message, task.id, task.contextId);
      // The message that ends a task is always taken: a task must be able to end, and say why.
      if (!isTerminal(state)) this.#grow(live, approxJsonBytes(message));
      (task.history ??= []).push(message);
    }
    task.status = message
      ? { state, message, timestamp: isoTimestamp(Date.now()) }
      : { state, timestamp: isoTimestamp(Date.now()) };
    const statusUpdate: StreamResponse = {
      statusUpdate:
        metadata === undefined
          ? { taskId: task.id, contextId: task.contextId, status: task.status }
          : { taskId: task.id, contextId: task.contextId, status: task.status, metadata },
    };
    this.#emit(live, statusUpdate, isSettled(state));
    return true;
  }

  /**
   * Adds (or, with `append`, extends) an artifact. Ignored once the task is terminal.
   *
   * @throws {TaskStoreOverBudgetError} when the task would grow past the
   *   owner's share of the store (`maxBytesPerOwner`) while running (or, on the embedded store,
   *   running tasks hold their owner's share); nothing changes.
   *
   * Constant work per call, however many artifacts or chunks came before: the
   * artifact is found through an index by id, and an append extends the
   * task's own copy of the artifact in place (the event carries only the new
   * chunk; {@link snapshot} copies the parts it hands out).
   */
  addArtifact(id: string, artifact: Artifact, opts: { append?: boolean; lastChunk?: boolean } = {}): boolean {
    const live = this.#live.get(id);
    if (!live) return false;
    const task = live.record.task;
    const list = (task.artifacts ??= []);
    const index = (live.artifactIndex ??= new Map(list.map((a, i) => [a.artifactId, i])));
    const i = index.get(artifact.artifactId);
    // A replaced artifact gives back what it held: a progress artifact sent again and again stays one.
    this.#grow(
      live,
      approxJsonBytes(artifact) - (i === undefined || opts.append ? 0 : approxJsonBytes(list[i])),
    );
    if (i === undefined) {
      index.set(artifact.artifactId, list.length);
      list.push(ownCopy(artifact));
    } else if (opts.append) {
      const parts = (list[i] as Artifact).parts;
      for (const p of artifact.parts) parts.push(p);
    } else list[i] = ownCopy(artifact);
    const update: StreamResponse = {
      artifactUpdate: {
        taskId: task.id,
        contextId: task.contextId,
        artifact,
        ...(opts.append === undefined ? {} : { append: opts.append }),
        ...(opts.lastChunk === undefined ? {} : { lastChunk: opts.lastChunk }),
      },
    };
    this.#emit(live, update, false);
    return true;
  }

  /**
   * Applies one change to a live task: a status (with optional agent message)
   * and/or an artifact. Returns false when the task is not live (finished or
   * unknown), in which case nothing changes.
   */
  update(
    id: string,
    change: {
      status?: { state: TaskState; message?: Message; metadata?: Struct };
      artifact?: { artifact: Artifact; append?: boolean; lastChunk?: boolean };
    },
  ): boolean {
    if (!this.#live.has(id)) return false;
    if (change.artifact) {
      const { artifact, ...opts } = change.artifact;
      this.addArtifact(id, artifact, opts);
    }
    if (change.status) this.setStatus(id, change.status.state, change.status.message, change.status.metadata);
    return true;
  }

  /**
   * Adds a user message to a live task's history (a reply to INPUT_REQUIRED).
   *
   * @throws {TaskStoreOverBudgetError} as {@link addArtifact} does; nothing changes.
   */
  appendUserMessage(id: string, message: Message): boolean {
    const live = this.#live.get(id);
    if (!live) return false;
    const task = live.record.task;
    const bound = bindMessage(message, task.id, task.contextId);
    this.#grow(live, approxJsonBytes(bound));
    (task.history ??= []).push(bound);
    return true;
  }

  /**
   * Counts the `bytes` a running task is about to add (a message, an
   * artifact or a chunk of one; less than nothing for a smaller replacement). A task that runs long, or talks with its
   * caller turn after turn, would otherwise grow in memory without bound
   * until it finishes: the store's byte bounds are applied to what a task
   * holds as it grows, the per-task cut once it has finished.
   *
   * @throws {TaskStoreOverBudgetError} over the store's `maxBytesPerOwner`
   *   (scope `task`), or, on the embedded store, when running tasks hold the
   *   owner's share or the store's bound; nothing is counted.
   */
  #grow(live: Live, bytes: number): void {
    const grown = live.bytes + bytes;
    const record = live.record;
    if (grown > this.#maxGrowth) {
      throw new TaskStoreOverBudgetError('task', this.#maxGrowth, record.owner, grown);
    }
    if (this.#memory) this.#memory.growNow(record.task.id, bytes);
    else this.#hold(record.owner, bytes);
    live.bytes = grown;
  }

  /**
   * Counts `bytes` more (fewer, when negative) for the tasks of `owner`
   * running here, with a store other than the embedded one; past the share
   * unless `bounded` is false (a task taken over).
   *
   * @throws {TaskStoreOverBudgetError} (scope `caller`, retryable: one of them
   *   finishing makes room; `neverFits` when `bytes` alone are over) when they
   *   would hold more than the owner's share; nothing is counted.
   */
  #hold(owner: string, bytes: number, bounded = true): void {
    if (this.#memory) return;
    const held = (this.#runningBytes.get(owner) ?? 0) + bytes;
    if (bounded && bytes > 0 && held > this.#maxGrowth) {
      // A new task larger than the share alone never fits: not retryable.
      const alone = bytes > this.#maxGrowth ? bytes : undefined;
      throw new TaskStoreOverBudgetError('caller', this.#maxGrowth, owner, alone);
    }
    if (held > 0) this.#runningBytes.set(owner, held);
    else this.#runningBytes.delete(owner);
  }

  /**
   * Subscribes to a live task. `afterSeq` asks for the events after that
   * number (reconnection); the backlog and the live feed join without a gap
   * because both happen in one synchronous step. `onLost` is called, with
   * the last event the listener got, if this replica loses the task (its
   * lease expired): the listener hears nothing more from here, and the
   * caller may {@link follow} the task in the store from that event on.
   */
  subscribe(
    id: string,
    listener: TaskListener,
    afterSeq?: number,
    onLost?: (seq: number) => void,
  ): Subscription | undefined {
    const live = this.#live.get(id);
    if (!live) return undefined;
    let backlog: StoredEvent[] | undefined = [];
    if (afterSeq !== undefined) backlog = keptAfter(live.events, live.record.seq, afterSeq);
    // With a durable store, listeners get an event once it is written: the
    // backlog stops where the written log does, and the listener goes on.
    const upTo = live.durable?.seq;
    if (upTo !== undefined && backlog) backlog = backlog.filter((e) => e.seq <= upTo);
    live.listeners.add(listener);
    live.subscribed = true;
    if (onLost) (live.onLost ??= new Map()).set(listener, onLost);
    return {
      backlog,
      record: durableView(live),
      unsubscribe: () => {
        live.listeners.delete(listener);
        live.onLost?.delete(listener);
      },
    };
  }

  /**
   * Events of a task after `afterSeq`, read from this process when the task
   * runs here, else from the store, page by page. `undefined` when the task
   * is unknown or those events are no longer kept.
   */
  async eventsAfter(id: string, afterSeq: number): Promise<StoredEvent[] | undefined> {
    const live = this.#live.get(id) ?? this.#settling.get(id);
    if (live) return keptAfter(live.events, live.record.seq, afterSeq);
    const out: StoredEvent[] = [];
    for (;;) {
      const page = await this.store.events(id, afterSeq, EVENT_PAGE);
      if (page === undefined) return out.length === 0 ? undefined : out;
      out.push(...page);
      if (page.length < EVENT_PAGE) return out;
      afterSeq = (page[page.length - 1] as StoredEvent).seq;
    }
  }

  /**
   * Resolves when the task is terminal or, unless `terminalOnly`, waits for
   * input. Rejects with TaskNotFound for an unknown task, when `signal`
   * aborts, or with {@link WaitTimeoutError} after `timeoutMs`. Once
   * {@link close} has begun, a task running on another replica resolves as
   * it is then, settled or not: nothing more of it is heard here.
   */
  async waitForCompletion(
    id: string,
    options: {
      signal?: AbortSignal;
      terminalOnly?: boolean;
      timeoutMs?: number;
      /**
       * Only a settle after this event counts: a reply to INPUT_REQUIRED
       * finds the task still as it asked (INPUT_REQUIRED, settled) until the
       * replica running it has taken the reply and, with a durable store,
       * written what followed.
       */
      afterSeq?: number;
      /**
       * @internal What a blocking SendMessage waits with: once the task was
       * seen running here, a store that cannot be read (the task given up
       * while the database is away) resolves with the task as last written
       * from here instead of rejecting. The task exists and its handler may
       * have run: a retryable error would say that nothing did.
       */
      orLastSeen?: boolean;
    } = {},
  ): Promise<Task> {
    // A NaN or out-of-range wait would time out at once.
    if (options.timeoutMs !== undefined) checkBudget('waitForCompletion', 'timeoutMs', options.timeoutMs);
    const deadline = options.timeoutMs === undefined ? undefined : Date.now() + options.timeoutMs;
    const done = (st: TaskState): boolean => (options.terminalOnly ? isTerminal(st) : isSettled(st));
    let seen: Task | undefined;
    for (;;) {
      const live = this.#live.get(id) ?? this.#settling.get(id);
      if (!live) {
        if (!this.#notifier) {
          // Nothing of a task running elsewhere is heard: the task as stored,
          // read here (a blocking SendMessage whose handler finished first
          // takes this path on the embedded store: no frame or count added).
          let r: TaskRecord | undefined;
          try {
            r = await this.store.get(id);
          } catch (err) {
            if (options.orLastSeen && seen && err instanceof TaskStoreUnavailableError) return seen;
            throw err;
          }
          if (!r) throw A2AErrors.taskNotFound(id);
          return r.task;
        }
        const elsewhere = await this.#whileOpen(this.#completionElsewhere(id, options, done, deadline, seen));
        if (elsewhere !== undefined) return elsewhere;
        // Taken over by this replica meanwhile: waited for here (a later settle also passes `afterSeq`).
        continue;
      }
      const view = durableView(live);
      seen = view.task;
      const after = options.afterSeq;
      // With a durable store, the task as written may still be as it was
      // before the reply (its events pending) while in memory it runs on:
      // that settle is not the one waited for.
      if (
        done(view.task.status.state) &&
        (after === undefined || (view.seq > after && done(live.record.task.status.state)))
      ) {
        return view.task;
      }
      const settled =
        options.signal === undefined
          ? await this.#settledHere(live, id, options.timeoutMs ?? 0, deadline)
          : await untilSettled(
              new Promise<TaskRecord>((resolve) => live.settleWaiters.push(resolve)),
              id,
              options,
              deadline,
            );
      seen = settled.task;
      // Waiting after a reply: look again (the settle may be the one before it).
      if (after === undefined && done(settled.task.status.state)) {
        return settled.task;
      }
    }
  }

  /**
   * @internal {@link waitForCompletion} without its async layer, for a task
   * running here on the embedded store and not settled yet: the task once it
   * settles, or {@link WaitTimeoutError} after `timeoutMs`. `undefined` for
   * any other task (ask waitForCompletion). What a blocking SendMessage waits
   * on, as {@link createNow} is what it creates with.
   */
  nextSettle(id: string, timeoutMs: number): Promise<TaskRecord> | undefined {
    const live = this.#memory ? this.#live.get(id) : undefined;
    if (!live || isSettled(live.record.task.status.state)) return undefined;
    return this.#settledHere(live, id, timeoutMs, Date.now() + timeoutMs);
  }

  /**
   * The next time the live task settles, or {@link WaitTimeoutError} at
   * `deadline`: what a blocking SendMessage waits on, once per call, with no
   * timer of its own ({@link Deadlines}).
   */
  #settledHere(live: Live, id: string, ms: number, deadline: number | undefined): Promise<TaskRecord> {
    return new Promise<TaskRecord>((resolve, reject) => {
      if (deadline === undefined) {
        live.settleWaiters.push(resolve);
        return;
      }
      const expire = (): void => {
        const i = live.settleWaiters.indexOf(wake);
        if (i >= 0) live.settleWaiters.splice(i, 1);
        reject(new WaitTimeoutError(id, ms));
      };
      const waiting = this.#waitDeadlines.add(expire, deadline);
      const wake = (record: TaskRecord): void => {
        this.#waitDeadlines.delete(waiting);
        resolve(record);
      };
      live.settleWaiters.push(wake);
    });
  }

  /**
   * {@link waitForCompletion} of a task that does not run here, with a
   * notifier: read from the store, and followed until it settles as asked.
   * Once {@link close} has begun, the task as it is then: nothing more of it
   * is heard here. `undefined` when the task came to run here meanwhile
   * (taken over).
   */
  async #completionElsewhere(
    id: string,
    options: WaitOptions,
    done: (st: TaskState) => boolean,
    deadline: number | undefined,
    seen: Task | undefined,
  ): Promise<Task | undefined> {
    let after = options.afterSeq;
    while (!this.#live.has(id) && !this.#settling.has(id)) {
      let r: TaskRecord | undefined;
      try {
        r = await this.store.get(id);
      } catch (err) {
        if (options.orLastSeen && seen && err instanceof TaskStoreUnavailableError) {
          // Not rejected: close() hears of the failure here.
          this.#failedAtClose(err);
          return seen;
        }
        throw err;
      }
      if (!r) throw A2AErrors.taskNotFound(id);
      if (this.#closed) return r.task;
      if (after !== undefined && r.seq <= after) {
        await this.#settledElsewhere(id, after, options, deadline);
        after = undefined;
        continue;
      }
      if (done(r.task.status.state)) return r.task;
      // Running on another replica: wait for its log to settle, then read it again.
      await this.#settledElsewhere(id, r.seq, options, deadline);
    }
    return undefined;
  }

  /**
   * Follows a task running elsewhere until an event settles it (as
   * {@link waitForCompletion} counts it), or {@link close} begins.
   */
  async #settledElsewhere(
    id: string,
    afterSeq: number,
    options: { signal?: AbortSignal; terminalOnly?: boolean; timeoutMs?: number },
    deadline: number | undefined,
  ): Promise<void> {
    let settled!: () => void;
    const done = new Promise<void>((resolve) => {
      settled = resolve;
    });
    // Before any await: a close() from now on wakes it.
    this.#wakeOnClose.add(settled);
    let stop: (() => void) | undefined;
    try {
      stop = await this.follow(
        id,
        afterSeq,
        (e) => {
          if (endsTask(e) || (!options.terminalOnly && settlesTask(e))) settled();
        },
        settled,
      );
      await untilSettled(done, id, options, deadline);
    } finally {
      this.#wakeOnClose.delete(settled);
      stop?.();
    }
  }

  /**
   * Waits for the client's reply to INPUT_REQUIRED. Rejected when the task
   * is canceled.
   */
  awaitInput(id: string): Promise<Message> {
    const live = this.#live.get(id);
    if (!live) return Promise.reject(A2AErrors.taskNotFound(id));
    return new Promise<Message>((resolve, reject) => {
      live.inputWaiter = { resolve, reject };
    });
  }

  /** True when the task waits for input and someone (a handler) awaits it. */
  isAwaitingInput(id: string): boolean {
    return this.#live.get(id)?.inputWaiter !== undefined;
  }

  /**
   * Hands the client's reply to the waiting handler. `beforeDelivery` runs
   * once the reply is known to fit, before anything changes (a stream that
   * must see what the reply leads to attaches there).
   *
   * @throws {TaskStoreOverBudgetError} as {@link appendUserMessage} does:
   *   the reply is refused, `beforeDelivery` not called, and the task still
   *   waits for one.
   */
  deliverInput(id: string, message: Message, beforeDelivery?: () => void): boolean {
    const live = this.#live.get(id);
    const waiter = live?.inputWaiter;
    if (!live || !waiter) return false;
    const task = live.record.task;
    const bound = bindMessage(message, task.id, task.contextId);
    this.#grow(live, approxJsonBytes(bound));
    beforeDelivery?.();
    (task.history ??= []).push(bound);
    live.inputWaiter = undefined;
    this.setStatus(id, 'TASK_STATE_WORKING');
    waiter.resolve(message);
    return true;
  }

  /** Fails a task whose handler waits for input (e.g. on a timeout). */
  failInput(id: string, reason: string): void {
    const live = this.#live.get(id);
    const waiter = live?.inputWaiter;
    if (!live || !waiter) return;
    live.inputWaiter = undefined;
    this.setStatus(id, 'TASK_STATE_FAILED', {
      messageId: randomUuid(),
      role: 'ROLE_AGENT',
      parts: [{ text: reason }],
    });
    waiter.reject(A2AErrors.unsupportedOperation(reason));
  }

  /**
   * Cancels a live task: sets CANCELED, then aborts its signal and rejects a
   * pending input wait. Returns false when the task is not live.
   */
  cancel(id: string, reason?: unknown): boolean {
    const live = this.#live.get(id);
    if (!live) return false;
    const err = reason ?? canceledReason(id);
    const waiter = live.inputWaiter;
    live.inputWaiter = undefined;
    // CANCELED first: abort listeners run synchronously, and one that
    // publishes a state of its own (FAILED, "stopped: …") would otherwise end
    // the task before the cancel its caller was told succeeded.
    this.setStatus(id, 'TASK_STATE_CANCELED');
    live.abort?.abort(err);
    waiter?.reject(err);
    return true;
  }

  /**
   * Cancels a task that does not run in this process: appends a CANCELED
   * status event to its stored log. Returns the task as it is afterwards
   * (unchanged when it had already finished), or undefined when unknown.
   */
  async cancelStored(id: string): Promise<TaskRecord | undefined> {
    return (await this.#endStored(id, 'TASK_STATE_CANCELED'))?.record;
  }

  /**
   * Fails a task that runs nowhere (its replica died): appends FAILED with
   * `reason` as the agent's message to its stored log. Returns the task
   * afterwards and the event appended (none when it had already finished),
   * or undefined when unknown.
   */
  async failStored(
    id: string,
    reason: string,
  ): Promise<{ record: TaskRecord; event?: StoredEvent } | undefined> {
    return this.#endStored(id, 'TASK_STATE_FAILED', reason);
  }

  async #endStored(
    id: string,
    state: 'TASK_STATE_CANCELED' | 'TASK_STATE_FAILED',
    reason?: string,
  ): Promise<{ record: TaskRecord; event?: StoredEvent } | undefined> {
    for (let attempt = 1; ; attempt++) {
      const record = await this.store.get(id);
      if (!record || isTerminal(record.task.status.state)) return record && { record };
      const now = Date.now();
      const status: Task['status'] = { state, timestamp: isoTimestamp(now) };
      const task: Task = { ...record.task, status };
      if (reason !== undefined) {
        status.message = {
          messageId: randomUuid(),
          role: 'ROLE_AGENT',
          parts: [{ text: reason }],
          taskId: id,
          contextId: task.contextId,
        };
        task.history = [...(task.history ?? []), status.message];
      }
      const event: StoredEvent = {
        seq: record.seq + 1,
        event: { statusUpdate: { taskId: id, contextId: task.contextId, status } },
      };
      try {
        await this.store.append(id, task, [event], now);
      } catch (err) {
        // The replica running the task wrote in between (it did not hear a
        // cancel asked of it, and goes on): ended after what it wrote.
        if (err instanceof TaskStoreConflictError && attempt < END_ATTEMPTS) continue;
        throw err;
      }
      return { record: { ...record, task, seq: event.seq, updatedAt: now }, event };
    }
  }

  /**
   * Runs here, from now on, a task claimed from a replica that died (see
   * {@link TaskLeases}): the task becomes live in this process with its
   * stored log, and later events continue that log.
   */
  async adopt(stored: TaskRecord): Promise<TaskRecord> {
    const id = stored.task.id;
    const kept = (await this.eventsAfter(id, Math.max(0, stored.seq - this.#maxEvents))) ?? [];
    const record: TaskRecord = { ...stored, task: structuredClone(stored.task) };
    const bytes = approxJsonBytes(record.task);
    this.#live.set(id, {
      record,
      events: kept.filter((e) => e.seq <= record.seq),
      pending: [],
      listeners: new Set(),
      chain: RESOLVED,
      writeQueued: false,
      failures: 0,
      settleWaiters: [],
      bytes,
      durable: { task: snapshot(stored.task), seq: stored.seq },
      writing: undefined,
    });
    // Taken over whatever this owner's tasks hold here: an orphan is run, not refused.
    this.#hold(record.owner, bytes, false);
    return record;
  }

  /**
   * Follows a task that runs on another replica: `onEvent` gets its events
   * after `afterSeq`, in log order, read from the store whenever a notice
   * says the log grew; `onEnd` runs after the terminal event (or when the
   * task is gone). The returned function stops following. Needs a store that
   * is a {@link TaskNotifier} ({@link canFollow}).
   */
  async follow(
    id: string,
    afterSeq: number,
    onEvent: (e: StoredEvent) => void,
    onEnd: () => void = () => undefined,
  ): Promise<() => void> {
    if (!this.#notifier) throw new TypeError('follow() needs a task store that carries notices');
    await this.listen();
    const f: Follower = { id, cursor: afterSeq, onEvent, onEnd, busy: false, again: false, stopped: false };
    let set = this.#followers.get(id);
    if (!set) this.#followers.set(id, (set = new Set()));
    set.add(f);
    // Listening comes first, then the first read: an event stored in between
    // is either read now or announced by a notice, never missed.
    void this.#pump(f);
    return () => this.#unfollow(f);
  }

  #unfollow(f: Follower): void {
    f.stopped = true;
    clearTimeout(f.retry);
    const set = this.#followers.get(f.id);
    set?.delete(f);
    if (set?.size === 0) this.#followers.delete(f.id);
  }

  /** Reads the follower's task log after its cursor until there is nothing new. */
  async #pump(f: Follower): Promise<void> {
    if (f.busy) {
      f.again = true;
      return;
    }
    f.busy = true;
    try {
      for (;;) {
        f.again = false;
        const page = await this.store.events(f.id, f.cursor, EVENT_PAGE);
        if (f.stopped) return;
        if (page === undefined) {
          this.#unfollow(f);
          f.onEnd();
          return;
        }
        for (const e of page) {
          if (e.seq !== f.cursor + 1) continue; // never twice, never out of order
          f.cursor = e.seq;
          f.onEvent(e);
          if (endsTask(e)) {
            this.#unfollow(f);
            f.onEnd();
            return;
          }
          if (f.stopped) return;
        }
        if (page.length < EVENT_PAGE && !f.again) return;
      }
    } catch {
      // The store is away: read again shortly (a notice may also come first).
      if (!f.stopped) {
        f.retry = setTimeout(() => void this.#pump(f), 500);
        f.retry.unref();
      }
    } finally {
      f.busy = false;
    }
  }

  #onNotice(n: TaskNotice): void {
    if (n.kind === 'cancel') {
      if (this.#live.has(n.taskId)) this.cancel(n.taskId);
      return;
    }
    if (n.kind === 'input') {
      void this.#takeInput(n.taskId);
      return;
    }
    if (n.kind === 'retired') {
      // Another replica handed its lease back: its unfinished tasks (handed
      // over, or ended by nobody) are claimed now, not at the next tick, a
      // third of the lease away. A tick under way may have looked already.
      if (this.#ticking) this.#tickAgain = true;
      else void this.#leaseTick();
      return;
    }
    if (n.kind === 'resync') {
      for (const set of this.#followers.values()) for (const f of set) void this.#pump(f);
      void this.#resync();
      return;
    }
    for (const f of this.#followers.get(n.taskId) ?? []) {
      if (n.seq > f.cursor) void this.#pump(f);
    }
    // Past every event this replica made of a task it runs: another writer's
    // (a cancel asked while the notice could not reach this replica, written
    // by the replica asked once it waited that out).
    const live = this.#live.get(n.taskId);
    if (live?.durable && n.seq > live.record.seq) void this.#recheck(live, true);
  }

  /**
   * Notices may have been missed (the listening connection was replaced):
   * each task running here is read again as stored, and given up when
   * another writer ended it (a cancel whose notice was lost); a reply posted
   * for one whose handler waits is taken (its `input` notice was lost).
   */
  async #resync(): Promise<void> {
    if (this.#resyncing) {
      this.#resyncAgain = true;
      return;
    }
    this.#resyncing = true;
    try {
      do {
        this.#resyncAgain = false;
        for (const live of [...this.#live.values()]) {
          const id = live.record.task.id;
          if (this.#closed) return;
          if (this.#live.get(id) !== live || !live.durable) continue;
          const overtaken = await this.#recheck(live, true);
          // The store cannot be read: the next resync (the connection drops again) looks.
          if (overtaken === undefined) return;
          if (!overtaken) await this.#takeInput(id);
        }
      } while (this.#resyncAgain);
    } finally {
      this.#resyncing = false;
    }
  }

  /**
   * Reads task `live` as stored and, when another writer ended it or moved
   * its log past this replica's events, gives it up ({@link #overtaken}).
   * This replica's events end at what it wrote when the caller knows the
   * log moved on (a write of its met another writer's), else at what it
   * made (writes may be under way, and their events stored already): past
   * them, or ended while still running here, the log is another writer's.
   * True when given up, false when not, `undefined` when the store cannot be read.
   */
  async #recheck(live: Live, pastMade: boolean): Promise<boolean | undefined> {
    const id = live.record.task.id;
    let stored: TaskRecord | undefined;
    try {
      stored = await this.store.get(id);
    } catch (err) {
      this.#onStoreError(err, id);
      return undefined;
    }
    if (!stored || !this.#holds(live)) return false;
    const mine = pastMade ? live.record.seq : (live.durable?.seq ?? live.record.seq);
    // Ended, while it has not ended here (or a write of this replica's was refused): not by this replica.
    const ended = isTerminal(stored.task.status.state) && (!pastMade || this.#live.get(id) === live);
    if (!ended && stored.seq <= mine) return false;
    await this.#overtaken(live, stored);
    return true;
  }

  /**
   * Another writer moved task `live` on or ended it, as `stored` (CANCELED
   * by the replica a cancel was asked on, when its notice did not reach this
   * one): the task is given up here as on a cancel. Listeners first hear
   * what the store holds after what they were told, its end included; the
   * handler's signal aborts (as a cancel aborts it, else with
   * {@link TaskLeaseLostError}), and its events from now on are dropped.
   */
  async #overtaken(live: Live, stored: TaskRecord): Promise<void> {
    if (live.overtaken) return;
    live.overtaken = true;
    const id = live.record.task.id;
    const tail: StoredEvent[] = [];
    try {
      let after = live.durable?.seq ?? live.record.seq;
      while (after < stored.seq) {
        const page = await this.store.events(id, after, EVENT_PAGE);
        const last = page?.[page.length - 1];
        if (!page || !last) break;
        tail.push(...page);
        after = last.seq;
      }
    } catch (err) {
      // Not read: streams still read it from the store as they carry on (#drop).
      this.#onStoreError(err, id);
    }
    if (!this.#holds(live)) return;
    // A write of this replica's may have been answered meanwhile: its events are told already.
    const told = live.durable?.seq ?? live.record.seq;
    const rest = tail.filter((e) => e.seq > told && e.seq <= stored.seq);
    // Told only when read whole: a stream carries on from the store where its listener stopped.
    if (rest.length > 0 && rest.length === stored.seq - told) this.#written(live, rest, stored.task);
    const reason =
      stored.task.status.state === 'TASK_STATE_CANCELED' ? canceledReason(id) : new TaskLeaseLostError(id);
    this.#drop(live, reason, stored);
  }

  /** True while `live` is this replica's: running, or finished with its last write to come. */
  #holds(live: Live): boolean {
    const id = live.record.task.id;
    return this.#live.get(id) === live || this.#settling.get(id) === live;
  }

  /**
   * Cancels a task that runs on another replica: asks that replica (a
   * notice) and waits up to `waitMs` for the task to end there. When nobody
   * acts on the notice in time (no such replica any more), appends CANCELED
   * itself. Returns the task as it is afterwards.
   *
   * @throws {TaskStoreUnavailableError} (retryable), nothing asked, once
   *   {@link close} has begun: close() waits for a cancel asked before it,
   *   for a bounded time (see there); past it, the caller may get this error
   *   after all.
   */
  async cancelElsewhere(id: string, waitMs = 5000): Promise<TaskRecord | undefined> {
    return this.#handOver(() => this.#cancelElsewhere(id, waitMs), waitMs);
  }

  async #cancelElsewhere(id: string, waitMs: number): Promise<TaskRecord | undefined> {
    const notifier = this.#notifier;
    const record = await this.store.get(id);
    if (!notifier || !record || isTerminal(record.task.status.state)) return this.cancelStored(id);
    await this.#actWhileFollowing(id, record.seq, endsTask, waitMs, () => notifier.requestCancel(id));
    return this.cancelStored(id);
  }

  /** Removes expired finished tasks from the store. */
  async cleanup(): Promise<number> {
    return this.store.sweep();
  }

  /** Waits until every change made so far is written to the store. */
  async flush(): Promise<void> {
    await Promise.all([...[...this.#live.values()].map((l) => l.chain), ...this.#flushing]);
  }

  /**
   * Cancels every live task, waits for pending writes and closes the store.
   * A task handed over before ({@link handOver}) is not canceled: its writes
   * are waited for, and the lease, handed back once they are done, lets
   * another replica claim it at once.
   * A reply or cancel handed to another replica before it began
   * ({@link forwardInput}, {@link cancelElsewhere}) is answered first, as
   * that replica acted on it; a wait on a task running elsewhere
   * ({@link waitForCompletion}) ends with the task as it is then. Such
   * requests from now on are refused.
   *
   * That wait is bounded: at most the longest `waitMs` among the requests
   * under way plus 1 s (for the statements around each wait), and none at
   * all once the database is known away (the lease given up on this
   * replica's own reading, or a statement failing as unavailable since
   * close() began). A request still under way then is not waited for:
   * unless answered before the store is closed, its caller gets the
   * retryable {@link TaskStoreUnavailableError} (its statement failing, or
   * the store closed under it), as before close() waited for any, though
   * the other replica may have acted on it.
   */
  async close(): Promise<void> {
    clearInterval(this.#leaseTimer);
    clearInterval(this.#sweepTimer);
    for (const l of [...this.#live.values()]) this.cancel(l.record.task.id);
    // Writes that keep failing get one more try each, then give up.
    this.#closed = true;
    for (const wake of [...this.#wakeOnClose]) wake();
    // One bound for both waits below: close() is not to outlast a shutdown's grace period.
    let longest = 0;
    for (const ms of this.#inFlight.values()) longest = Math.max(longest, ms);
    const settleBy = Date.now() + longest + SETTLE_MARGIN_MS;
    // Followers and notices carry what the requests handed over wait to see.
    await this.#settleInFlight(settleBy);
    for (const set of [...this.#followers.values()]) for (const f of [...set]) this.#unfollow(f);
    await this.flush();
    await this.#listening?.catch(() => undefined);
    await this.#unlisten?.();
    // Whatever could not be written is another replica's to settle, and a
    // task handed over (its writes done by now) another's to run, at once.
    // Not with the database known away (the lease given up on this
    // replica's own reading, which expired its row already, or a statement
    // of this close failed): the hand-back would only wait out a timeout,
    // and the lease runs out all the same.
    if (!this.#gaveUp && !this.#storeAwayAtClose) {
      await this.#leases?.retire().catch(() => undefined);
    }
    await this.#settleInFlight(settleBy);
    await this.store.close?.();
  }

  /**
   * Until no work {@link close} waits for is under way ({@link #inFlight}),
   * `by` (epoch ms) at the latest, or the database is known away.
   */
  async #settleInFlight(by: number): Promise<void> {
    if (this.#inFlight.size === 0 || Date.now() >= by) return;
    let timer: NodeJS.Timeout | undefined;
    const cut = new Promise<true>((resolve) => {
      const stop = (): void => resolve(true);
      this.#stopSettling = stop;
      timer = setTimeout(stop, Math.max(0, by - Date.now()));
      // Not what keeps the process up: what is waited for holds its own handles.
      timer.unref();
    });
    const allDone = (): Promise<false> => Promise.all(this.#inFlight.keys()).then(() => false);
    try {
      while (this.#inFlight.size > 0 && !this.#storeAwayAtClose && !this.#gaveUp) {
        if (await Promise.race([allDone(), cut])) return;
        // What an answered request goes on to do starts in microtasks (a
        // blocking reply's read of the task it woke): counted by the next look.
        await nextTurn();
      }
    } finally {
      clearTimeout(timer);
      this.#stopSettling = undefined;
    }
  }

  #emit(live: Live, event: StreamResponse, settles: boolean): void {
    const record = live.record;
    const stored: StoredEvent = { seq: ++record.seq, event };
    record.updatedAt = Date.now();
    live.events.push(stored);
    if (live.events.length > this.#maxEvents) live.events.shift();
    const id = record.task.id;
    const terminal = isTerminal(record.task.status.state);
    if (this.#memory) {
      for (const l of live.listeners) l(stored, record);
      if (terminal) {
        this.#live.delete(id);
        live.listeners.clear();
        // The embedded store holds this very record and event array (attached
        // by create()): only the move to a terminal state has something to tell it.
        this.#memory.finishNow(id, { keepEvents: live.subscribed === true });
      }
      if (settles) settle(live, record);
    } else {
      // Listeners and waiters hear of the event once it is written (#write).
      if (terminal) {
        this.#live.delete(id);
        this.#hold(record.owner, -live.bytes);
      }
      live.pending.push(stored);
      // Events published in one burst share one write: queue a write only if
      // none is waiting to start, and start it after this turn.
      if (!live.writeQueued) {
        live.writeQueued = true;
        live.chain = live.chain.then(nextTurn).then(() => this.#write(live));
      }
      if (terminal) {
        // The task leaves #live now; keep its last write visible to flush(),
        // and the task readable from here until that write is done.
        this.#keepUntilWritten(id, live, () => {
          if (this.#settling.get(id) === live) this.#settling.delete(id);
        });
      }
    }
  }

  /** Events now written: the task as written moves on, and listeners and waiters hear of them, in order. */
  #written(live: Live, events: readonly StoredEvent[], task: Task): void {
    const last = events[events.length - 1];
    if (last === undefined) return;
    live.durable = { task, seq: last.seq };
    const view = durableView(live);
    for (const e of events) {
      for (const l of live.listeners) l(e, view);
      if (settlesTask(e)) settle(live, view);
      if (endsTask(e)) live.listeners.clear();
    }
  }

  /**
   * Hands the pending events and the task as it is now to the store. A
   * failed write keeps its events pending and is retried after a backoff,
   * so the log reaches the store whole and in order once it is back.
   */
  async #write(live: Live): Promise<void> {
    const id = live.record.task.id;
    // A write that failed on the way back (connection dropped after the
    // commit) may have landed: its retry then meets its own events.
    let uncertain = false;
    /** Events found stored by a retry, told to listeners with the rest of the batch. */
    let landedBefore: StoredEvent[] = [];
    for (;;) {
      live.writeQueued = false;
      const batch = live.pending;
      if (batch.length === 0 || this.#storeAwayAtClose) return;
      live.pending = [];
      // The task as of the batch's last event (later events are not in it).
      const task = snapshot(live.record.task);
      try {
        const writing = this.store.append(id, live.record.task, batch, live.record.updatedAt);
        live.writing = writing;
        try {
          await writing;
        } finally {
          live.writing = undefined;
        }
        this.#landedAgain(live);
        this.#written(live, landedBefore.concat(batch), task);
        return;
      } catch (err) {
        if (err instanceof TaskStoreConflictError && uncertain) {
          const landed = await this.#landed(id, batch);
          if (landed > 0) {
            // Those events are stored: write what came after them.
            landedBefore = landedBefore.concat(batch.slice(0, landed));
            live.pending = batch.slice(landed).concat(live.pending);
            uncertain = false;
            if (live.pending.length === 0) {
              this.#landedAgain(live);
              this.#written(live, landedBefore, task);
              return;
            }
            continue;
          }
        }
        this.#writeFailed(live, err);
        if (err instanceof TaskStoreRejectedError) {
          // Retried, it would fail forever, the task frozen as last written.
          await this.#rejected(live, err);
          return;
        }
        this.#failedAtClose(err);
        if (err instanceof TaskLeaseLostError) {
          this.#drop(live, err);
          return;
        }
        live.pending = batch.concat(live.pending);
        if (err instanceof TaskStoreConflictError) {
          // Retrying cannot help. Another writer moved the log on or ended
          // it (a cancel asked on another replica while this one could not
          // hear it, written there): the task is given up here, as the
          // store has it. Else (the task is gone) it is left as it is.
          const overtaken = await this.#recheck(live, false);
          if (overtaken !== undefined || this.#closed) return;
          // The store cannot be read either: try the write again later, and look again.
        } else if (this.#closed) return;
        uncertain = true;
        live.failures++;
        const delay = Math.min(this.#retryMaxMs, 50 * 2 ** Math.min(live.failures, 10));
        await new Promise((resolve) => setTimeout(resolve, delay));
      }
    }
  }

  /**
   * A write of `live` failed: told to `onStoreError`, a failure for want of
   * the store only as a run of them begins (see
   * {@link TaskManagerOptions.onStoreError}), as {@link #choreFailed} tells a chore's.
   */
  #writeFailed(live: Live, err: unknown): void {
    const id = live.record.task.id;
    if (!(err instanceof TaskStoreUnavailableError)) {
      this.#onStoreError(err, id);
      return;
    }
    if (live.awaySince !== undefined) return;
    live.awaySince = Date.now();
    try {
      this.#onStoreError(err, id, live.failures + 1);
    } catch {
      // As in #choreFailed: a report that throws changes nothing (the write is retried all the same).
    }
  }

  /** A write of `live` landed: the backoff starts over, and a run of failures for want of the store is told over. */
  #landedAgain(live: Live): void {
    const since = live.awaySince;
    const failures = live.failures;
    live.failures = 0;
    if (since === undefined) return;
    live.awaySince = undefined;
    try {
      this.#onStoreRecovered(live.record.task.id, { since, failures });
    } catch {
      // As in #choreWorked.
    }
  }

  /**
   * Ends FAILED, as stored (without what was refused), a task whose write
   * the store refused for good: its handler is aborted and whoever waits
   * hears of the end.
   */
  async #rejected(live: Live, err: TaskStoreRejectedError): Promise<void> {
    const id = live.record.task.id;
    live.pending = [];
    const ended = await this.failStored(id, `${REJECTED_REASON}: ${err.message}`).catch((e: unknown) => {
      this.#onStoreError(e, id);
      return undefined;
    });
    this.#drop(live, err, ended?.record);
  }

  /**
   * How many leading events of `batch` the store already holds, the very
   * same ones (0 when none, or when another writer's events are there).
   */
  async #landed(id: string, batch: readonly StoredEvent[]): Promise<number> {
    try {
      const first = batch[0] as StoredEvent;
      const stored = await this.store.events(id, first.seq - 1, batch.length);
      let n = 0;
      for (const e of stored ?? []) {
        const mine = batch[n];
        if (mine === undefined || e.seq !== mine.seq || !isDeepStrictEqual(e.event, asStored(mine.event)))
          break;
        n++;
      }
      return n;
    } catch {
      return 0;
    }
  }
}

/**
 * `event` as a store that keeps JSON gives it back: a member set to
 * `undefined` is absent there, `-0` is `0`, and so on. Compared as it is in
 * memory, an event that did land would pass for another writer's.
 */
function asStored(event: StreamResponse): unknown {
  return JSON.parse(JSON.stringify(event)) as unknown;
}

/** Events kept in `events` after `afterSeq`, or undefined when some are gone. */
function keptAfter(
  events: readonly StoredEvent[],
  lastSeq: number,
  afterSeq: number,
): StoredEvent[] | undefined {
  const first = events[0]?.seq ?? lastSeq + 1;
  if (afterSeq + 1 < first) return undefined;
  // Sequence numbers are consecutive: the position is arithmetic.
  return events.slice(Math.max(0, afterSeq + 1 - first));
}

/** Reads and appends {@link TaskManager.cancelStored} or `failStored` tries, while the task's runner writes in between. */
const END_ATTEMPTS = 10;

/**
 * What a canceled task's handler's signal aborts with (and its input wait
 * rejects with): that it was canceled. TaskNotCancelable, as it was, told a
 * handler that logs or rethrows it the opposite of what happened.
 */
function canceledReason(id: string): Error {
  return new TaskCanceledError(id);
}

/** Why a task ends FAILED whose write the task store refused for good; followed by the store's message. */
const REJECTED_REASON = 'Task failed: the task store cannot keep its content';

/** Why a task whose replica died ends FAILED (when its capability is not re-runnable). */
export const ORPHAN_REASON =
  'Task failed: the replica running it stopped (its lease expired); not re-run, execution is at most once';

/**
 * Why a re-runnable task whose replica died ends FAILED all the same: the
 * replica that claimed it is at the caller's (or its own) task limit, which
 * a re-run counts against as a new task would. Followed by the limit's message.
 */
export const ORPHAN_REASON_LIMITED =
  'Task failed: the replica running it stopped (its lease expired), and it was not re-run: the limit on unfinished tasks is reached';

/** The task as a durable store holds it (the live record itself for the embedded store). */
function durableView(live: Live): TaskRecord {
  const d = live.durable;
  return d ? { ...live.record, task: d.task, seq: d.seq } : live.record;
}

/** Wakes whoever waits for the task to settle. */
function settle(live: Live, record: TaskRecord): void {
  if (live.settleWaiters.length === 0) return;
  const waiters = live.settleWaiters;
  live.settleWaiters = [];
  for (const w of waiters) w(record);
}

/** True for an event after which the task waits (finished, or needs input). */
function settlesTask(e: StoredEvent): boolean {
  const state = stateOfEvent(e.event);
  return state !== undefined && isSettled(state);
}

/** True for the event that ends a task (its terminal status). */
/**
 * `done`, unless `options.signal` aborts first (rejects with its reason) or
 * `deadline` passes (rejects with {@link WaitTimeoutError}): the abort and
 * deadline wiring of {@link TaskManager.waitForCompletion} for a wait with a
 * signal, or on a task running on another replica (a wait on a live task
 * without a signal, the blocking call's, shares one timer instead). Listener
 * and timer go when it settles, whichever way.
 */
function untilSettled<T>(
  done: Promise<T>,
  id: string,
  options: { signal?: AbortSignal; timeoutMs?: number },
  deadline: number | undefined,
): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const signal = options.signal;
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const onAbort = () => finish(() => reject(signal?.reason));
    signal?.addEventListener('abort', onAbort, { once: true });
    const timer =
      deadline === undefined
        ? undefined
        : setTimeout(
            () => finish(() => reject(new WaitTimeoutError(id, options.timeoutMs ?? 0))),
            Math.max(0, deadline - Date.now()),
          );
    function finish(settle: () => void): void {
      signal?.removeEventListener('abort', onAbort);
      clearTimeout(timer);
      settle();
    }
    done.then(
      (v) => finish(() => resolve(v)),
      (err: unknown) => finish(() => reject(err)),
    );
  });
}

function endsTask(e: StoredEvent): boolean {
  return eventEndsTask(e.event);
}

/** Events read from the store per query when replaying. */
const EVENT_PAGE = 500;

/** A task as {@link TaskManager.create} first builds it: the record, and its log of one event. */
interface NewRecord {
  record: TaskRecord;
  first: StoredEvent;
  events: StoredEvent[];
}

/** A new task in SUBMITTED state, its first event the Task itself, not yet stored or live. */
function newTask(input: NewTask): NewRecord {
  const id = randomUuid();
  const contextId = input.contextId ?? input.message.contextId ?? randomUuid();
  const message = bindMessage(input.message, id, contextId);
  const now = Date.now();
  const task: Task = {
    id,
    contextId,
    status: { state: 'TASK_STATE_SUBMITTED', timestamp: isoTimestamp(now) },
    history: [message],
    artifacts: [],
  };
  if (input.metadata !== undefined) task.metadata = input.metadata;
  const record: TaskRecord = {
    task,
    owner: input.owner,
    ...(input.tenant === undefined ? {} : { tenant: input.tenant }),
    skill: input.skill,
    createdAt: now,
    updatedAt: now,
    seq: 1,
  };
  const first: StoredEvent = { seq: 1, event: { task: snapshot(task) } };
  return { record, first, events: [first] };
}

/**
 * A copy of `m` that belongs to a task. Built field by field: an object
 * spread of a parsed message takes V8's slow path, and showed up per call.
 */
function bindMessage(m: Message, taskId: string, contextId: string): Message {
  const out: Message = { messageId: m.messageId, role: m.role, parts: m.parts, taskId, contextId };
  if (m.referenceTaskIds !== undefined) out.referenceTaskIds = m.referenceTaskIds;
  if (m.extensions !== undefined) out.extensions = m.extensions;
  if (m.metadata !== undefined) out.metadata = m.metadata;
  return out;
}

let lastMs = 0;
let lastIso = new Date(0).toISOString();

/**
 * `new Date(ms).toISOString()`, remembered for the last millisecond: a task
 * takes three or four timestamps in a row, and formatting one costs more than
 * the rest of a status change.
 */
function isoTimestamp(ms: number): string {
  if (ms !== lastMs) {
    lastMs = ms;
    lastIso = new Date(ms).toISOString();
  }
  return lastIso;
}

/** The task's own copy of an artifact: its parts list grows in place as chunks are appended. */
function ownCopy(artifact: Artifact): Artifact {
  return { ...artifact, parts: artifact.parts.slice() };
}

/**
 * A copy that later in-place updates of the live task do not change, with at
 * most `historyLength` messages of its history (for 0 the field is left out)
 * and, unless `withArtifacts` is false, its artifacts.
 * Left out, not deleted afterwards: a deleted property turns the copy into a
 * dictionary-mode object, which `JSON.stringify` then writes at 1.6 (Node
 * 20) to 2 (Node 24) times the cost: the answer of every blocking SendMessage.
 */
export function snapshot(task: Task, historyLength?: number, withArtifacts = true): Task {
  const out: Task = { id: task.id, contextId: task.contextId, status: task.status };
  if (task.history && historyLength !== 0) {
    out.history = historyLength === undefined ? task.history.slice() : task.history.slice(-historyLength);
  }
  // Appended chunks extend an artifact's parts in place: hand out copies of them.
  if (task.artifacts && withArtifacts) out.artifacts = task.artifacts.map(ownCopy);
  if (task.metadata !== undefined) out.metadata = task.metadata;
  return out;
}
