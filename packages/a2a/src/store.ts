import { WeaveError } from '@weave/identity';
import { z } from 'zod';
import type { Message, StreamResponse, Task, TaskPushNotificationConfig, TaskState } from './wire/v1.js';
import { isTerminal } from './wire/v1.js';
import { checkOptions, durationMs, positiveCount, positiveInteger } from './options.js';

/** One event of a task's log, numbered from 1 in publication order. */
export interface StoredEvent {
  readonly seq: number;
  readonly event: StreamResponse;
}

/** What the server keeps about one task, apart from its event log. */
export interface TaskRecord {
  task: Task;
  /** SPIFFE ID of the caller that created the task; only it can see the task. */
  readonly owner: string;
  /**
   * Tenant the task was created in (the request's `tenant`); absent when the
   * request named none. Only a request in the same tenant, by the owner, sees the task.
   */
  readonly tenant?: string;
  /** Skill the task runs. */
  readonly skill: string;
  /** Epoch ms. Immutable. */
  readonly createdAt: number;
  /** Epoch ms of the last change (any event); a finished task's age counts from it. */
  updatedAt: number;
  /** Sequence number of the last event. */
  seq: number;
}

/**
 * Where a task stands in the order of {@link TaskStore.list} (A2A §3.1.4:
 * by status timestamp, most recent first): its `status.timestamp` in epoch
 * ms, or, for a task whose status carries none (or one that does not
 * parse), its last change, `updatedAt`. What a page token records of the
 * last task it listed.
 */
export function statusTime(record: Pick<TaskRecord, 'task' | 'updatedAt'>): number {
  const ts = record.task.status.timestamp;
  const ms = ts === undefined ? Number.NaN : Date.parse(ts);
  return Number.isFinite(ms) ? ms : record.updatedAt;
}

/**
 * Where a page of {@link TaskStore.list} continues: after this task
 * (exclusive), in list order. A position, not a task: a task whose status
 * changes after it was listed moves ahead of the position, so the later
 * pages neither list it again nor skip any task that did not move.
 */
export interface ListCursor {
  /** {@link statusTime} of the task as it was listed. */
  readonly statusAt: number;
  readonly id: string;
}

/**
 * The cursor of page tokens issued while the list was ordered by creation:
 * the creation time and id of the last task listed. The page continues
 * after that task's place now; when it is gone, after its creation time
 * (no task before its last status is skipped, some may be listed again).
 */
export interface CreationCursor {
  readonly createdAt: number;
  readonly id: string;
}

/** Filter for {@link TaskStore.list}. */
export interface TaskQuery {
  readonly owner: string;
  /**
   * Only tasks of this tenant; absent means only tasks created without one
   * (never "any tenant": a request without a tenant must not see a tenant's tasks).
   */
  readonly tenant?: string;
  readonly contextId?: string;
  readonly status?: TaskState;
  /**
   * Only tasks whose {@link statusTime} is at or after this epoch ms
   * (`statusTimestampAfter`: "greater than or equal").
   */
  readonly updatedAfter?: number;
  /** Keyset cursor: continue after this position (exclusive). */
  readonly after?: ListCursor | CreationCursor;
  readonly limit: number;
}

/**
 * Whose tasks a read may see: one owner's, in one tenant (absent or empty:
 * only tasks created without one), as {@link TaskQuery} filters.
 */
export type TaskScope = Pick<TaskQuery, 'owner' | 'tenant'>;

/**
 * Whether `record` is a task of `scope`: its owner's, in its tenant (an
 * empty tenant is none). The one spelling of that match, for stores of
 * one's own as for the server's.
 */
export function inTaskScope(record: Pick<TaskRecord, 'owner' | 'tenant'>, scope: TaskScope): boolean {
  return record.owner === scope.owner && (record.tenant || '') === (scope.tenant || '');
}

/**
 * A page of tasks, most recent {@link statusTime} first (ties: the greater
 * id first, compared by code unit, as PostgreSQL's `COLLATE "C"` compares the
 * UUIDs the server gives tasks), and how many match in total.
 */
export interface TaskPage {
  readonly records: readonly TaskRecord[];
  readonly total: number;
}

/** True when the task at (`at`, `id`) comes after `cursor` in list order. */
export function isPastCursor(at: number, id: string, cursor: ListCursor): boolean {
  return at < cursor.statusAt || (at === cursor.statusAt && id < cursor.id);
}

/**
 * Persistence seam of the A2A server. The server keeps the live state of a
 * running task in process and writes each change through, in order:
 * {@link create} once, then {@link append} with the new events and the
 * task's current state. A store is never handed the event log as a whole;
 * readers page through it with {@link events}.
 *
 * Every implementation must pass the contract suite exported by
 * `@weave/a2a/testing` (`taskStoreContract`).
 */
export interface TaskStore {
  /**
   * Saves a new task (`record.seq` is 1) with its first event.
   *
   * @throws {TaskStoreFullError} when the store cannot take another task.
   * @throws {TaskStoreUnavailableError} when the backing service cannot be reached (retryable).
   */
  create(record: TaskRecord, first: StoredEvent): Promise<void>;
  /**
   * Appends `events` (consecutive, the first one numbered right after the
   * stored last event) and saves `task` as the task's current state, in one
   * atomic step. Between two appends a task's history and artifacts only
   * grow: messages and artifacts are added, an artifact's `parts` array is
   * extended in place, or an artifact is replaced by a new object; a message
   * or part already written is never edited in place. A durable store may
   * rely on this to write only what was added.
   *
   * @throws {TaskStoreConflictError} when the task is unknown or `events`
   *   does not continue its log (another writer got there first); nothing changes.
   * @throws {TaskLeaseLostError} (a store with {@link TaskLeases}) when this
   *   replica runs the task and its lease expired; nothing changes.
   * @throws {TaskStoreUnavailableError} when the backing service cannot be reached (retryable).
   * @throws {TaskStoreRejectedError} when the store can never keep what the write carries; nothing changes.
   */
  append(id: string, task: Task, events: readonly StoredEvent[], updatedAt: number): Promise<void>;
  /**
   * The task, or `undefined` when there is none. With `scope` (the request
   * handler passes the caller's), a task of another owner or another tenant
   * (as {@link TaskQuery} matches them) is `undefined` too, found by a read
   * that costs what a missing task's costs: its content is neither read nor
   * returned, so the time an answer takes does not tell a caller that
   * another caller's task exists ({@link inTaskScope} is the match). A store
   * that ignores `scope` stays correct (the server checks what it returns
   * again) but loses that.
   */
  get(id: string, scope?: TaskScope): Promise<TaskRecord | undefined>;
  /**
   * Up to `limit` events numbered after `afterSeq`, in order (empty when
   * there are none). `undefined` when the task is unknown or some of those
   * events are no longer kept.
   */
  events(id: string, afterSeq: number, limit: number): Promise<readonly StoredEvent[] | undefined>;
  delete(id: string): Promise<void>;
  list(query: TaskQuery): Promise<TaskPage>;
  /** Removes expired terminal tasks; returns how many. */
  sweep(now?: number): Promise<number>;
  close?(): Promise<void>;
  /**
   * The owner's share of the store in bytes (estimated as
   * {@link approxJsonBytes} does), and so the most content one task may add
   * while it runs: messages, artifacts and artifact chunks published by its
   * handler, and replies to INPUT_REQUIRED. Beyond it the task manager
   * refuses the addition with {@link TaskStoreOverBudgetError} (scope
   * `task`) and the task is unchanged. (A finished task is then cut to
   * `maxBytesPerTask`, which may be smaller: a result larger than that is
   * still delivered whole.) The owner's tasks running in one process hold
   * at most this much together, as created and grown (scope `caller`,
   * retryable). Undefined: no bound (a store of one's own may leave it out).
   */
  readonly maxBytesPerOwner?: number;
}

/**
 * Where push-notification configs live. Configs belong to a task and go when
 * it goes. Implementations that persist them keep secrets (`token`,
 * `authentication.credentials`) encrypted at rest.
 */
export interface PushConfigStore {
  /**
   * Inserts or replaces (by `taskId` and `id`).
   *
   * @throws {TaskStoreRejectedError} when the config has no `id` (the server
   *   gives one to every config it keeps); nothing is kept.
   */
  setPushConfig(config: TaskPushNotificationConfig): Promise<void>;
  /** The task's configs, in insertion order. */
  listPushConfigs(taskId: string): Promise<TaskPushNotificationConfig[]>;
  /** False when there was no such config. */
  deletePushConfig(taskId: string, id: string): Promise<boolean>;
}

/**
 * True when `value` has a function under every name: how the optional store
 * seams below are detected (a store opts in by implementing the methods).
 */
function hasMethods(value: unknown, names: readonly string[]): boolean {
  const v = value as Record<string, unknown> | null | undefined;
  return names.every((name) => typeof v?.[name] === 'function');
}

/** True when `store` also keeps push-notification configs. */
export function isPushConfigStore(store: unknown): store is PushConfigStore {
  return hasMethods(store, ['setPushConfig', 'listPushConfigs', 'deletePushConfig']);
}

/**
 * What a shared store tells every replica: a task's log grew (up to `seq`),
 * someone asked to cancel a task, or (`resync`) notices may have been missed
 * (the listening connection was re-established) and every reader should
 * look again. A notice carries ids only: the events themselves are read from
 * the store, so a lost notice costs latency, never an event.
 */
export type TaskNotice =
  | { readonly kind: 'events'; readonly taskId: string; readonly seq: number }
  | { readonly kind: 'cancel'; readonly taskId: string }
  /** A reply to the task's INPUT_REQUIRED waits in the store ({@link TaskInbox}). */
  | { readonly kind: 'input'; readonly taskId: string }
  /**
   * A replica handed its lease back ({@link TaskLeases.retire}): what it
   * still ran is an orphan now, to be claimed at once rather than at the
   * next lease renewal. A store that keeps leases and notices sends it from
   * `retire()`.
   */
  | { readonly kind: 'retired' }
  | { readonly kind: 'resync' };

/**
 * A store shared by several replicas that also carries notices between them
 * (for PostgreSQL: LISTEN/NOTIFY). With one, a task running on one replica
 * can be followed live and canceled from any other.
 */
export interface TaskNotifier {
  /**
   * Delivers every notice from now on to `onNotice` (also those this
   * replica sent). Resolves once listening; the returned function stops.
   *
   * @throws {TaskStoreUnavailableError} when the backing service cannot be reached.
   */
  listen(onNotice: (notice: TaskNotice) => void): Promise<() => Promise<void>>;
  /** Tells every replica (the one running the task acts on it) to cancel `taskId`. */
  requestCancel(taskId: string): Promise<void>;
}

/**
 * Replies to INPUT_REQUIRED handed between replicas: a reply that reaches a
 * replica not running the task is posted here, and the replica whose
 * handler waits for it (told by an `input` notice) takes it.
 */
export interface TaskInbox {
  /** Keeps `message` for the task and sends an `input` notice; returns the post's id. */
  postInput(taskId: string, message: Message): Promise<string>;
  /**
   * Hands the oldest reply kept for the task to `deliver`, and removes it
   * only if `deliver` took it (true): one step, so a reply is taken once,
   * and a reply whose handler stopped waiting meanwhile stays for its poster
   * to withdraw. True when a reply was delivered.
   */
  takeInput(taskId: string, deliver: (message: Message) => boolean): Promise<boolean>;
  /**
   * Removes the post unless it was taken (waiting for a {@link takeInput}
   * in progress to decide); true when it was still there: nobody took it.
   */
  withdrawInput(taskId: string, postId: string): Promise<boolean>;
}

/** True when `store` also hands INPUT_REQUIRED replies between replicas. */
export function isTaskInbox(store: unknown): store is TaskInbox {
  return hasMethods(store, ['postInput', 'takeInput', 'withdrawInput']);
}

/** True when `store` also carries notices between replicas. */
export function isTaskNotifier(store: unknown): store is TaskNotifier {
  return hasMethods(store, ['listen', 'requestCancel']);
}

/**
 * Ownership of running tasks in a store shared by replicas. The store
 * records this replica as the runner of every task it creates; the replica
 * renews one lease for all of them ({@link heartbeat}). A task whose runner
 * let its lease expire (the process died, or lost the database for longer
 * than the lease) is an orphan, handed to exactly one live replica by
 * {@link claimOrphans}.
 */
export interface TaskLeases {
  /** This replica's id, recorded as the runner of the tasks it creates. */
  readonly replicaId: string;
  /** A replica that has not renewed its lease for this long (ms) is taken for dead. */
  readonly leaseTtlMs: number;
  /**
   * Renews this replica's lease for {@link leaseTtlMs}. False when it had
   * already expired (its tasks may have been claimed by others meanwhile):
   * the tasks it ran are no longer its own, and their writes are refused
   * with {@link TaskLeaseLostError}.
   *
   * @throws {TaskStoreUnavailableError} when the backing service cannot be reached.
   */
  heartbeat(): Promise<boolean>;
  /**
   * Up to `limit` unfinished tasks whose runner's lease expired, now
   * recorded as run by this replica: each orphan goes to one caller only.
   */
  claimOrphans(limit: number): Promise<TaskRecord[]>;
  /**
   * Ends this replica's lease now (clean shutdown): what it still runs
   * becomes an orphan at once. With a {@link TaskNotifier}, also tells the
   * other replicas (a `retired` notice), which claim those orphans then.
   */
  retire(): Promise<void>;
}

/** True when `store` also keeps leases of running tasks. */
export function isTaskLeases(store: unknown): store is TaskLeases {
  const s = store as Partial<TaskLeases> | undefined;
  return typeof s?.replicaId === 'string' && hasMethods(store, ['heartbeat', 'claimOrphans', 'retire']);
}

/**
 * The store cannot take another task: every slot of the whole store
 * (`scope: 'store'`), or of the caller's share of it (`scope: 'caller'`),
 * holds a task that has not finished. Retryable once one of them finishes.
 */
export class TaskStoreFullError extends WeaveError {
  /**
   * @param limit the most tasks the scope holds.
   * @param owner the caller whose share is full (scope `caller`).
   */
  constructor(
    readonly limit: number,
    readonly scope: 'caller' | 'store' = 'store',
    owner?: string,
  ) {
    super(
      'TASK_STORE_FULL',
      scope === 'caller'
        ? `tasks of ${owner} hold their share of the task store (${limit} unfinished tasks)`
        : `task store is full (${limit} unfinished tasks)`,
    );
  }
}

/**
 * The store cannot keep another task's content within its memory bound: the
 * caller's share (`scope: 'caller'`) or the whole store (`scope: 'store'`) is
 * held by unfinished tasks (retryable once some of them finish), or the task
 * alone is larger than it ({@link TaskStoreOverBudgetError.neverFits}: never).
 */
export class TaskStoreOverBudgetError extends WeaveError {
  /**
   * The new task alone is larger than the bound (`taskBytes` above
   * `limitBytes`): no retry can succeed, whatever finishes meanwhile.
   */
  readonly neverFits: boolean;

  /**
   * @param scope `task`: a running task would grow past its owner's share
   *   ({@link TaskStore.maxBytesPerOwner}); `taskBytes` is what it would add up to.
   * @param taskBytes what the refused task takes as stored, when it alone is over the bound.
   */
  constructor(
    readonly scope: 'caller' | 'store' | 'task',
    readonly limitBytes: number,
    owner: string,
    readonly taskBytes?: number,
  ) {
    const neverFits = taskBytes !== undefined && taskBytes > limitBytes;
    super(
      'TASK_STORE_OVER_BUDGET',
      scope === 'task'
        ? `the task would grow to ${taskBytes} bytes while running, over its bound (${limitBytes} bytes)`
        : neverFits
          ? `a new task of ${taskBytes} bytes is larger than ${scope === 'caller' ? `the share of ${owner}` : 'the task store'} (${limitBytes} bytes)`
          : scope === 'caller'
            ? `tasks of ${owner} hold their share of the task store (${limitBytes} bytes)`
            : `task store is at its memory bound (${limitBytes} bytes) with unfinished tasks`,
    );
    this.neverFits = neverFits;
  }
}

/** A write does not fit the stored task: unknown task, or its log moved on (another writer). */
export class TaskStoreConflictError extends WeaveError {
  constructor(taskId: string, detail: string) {
    super('TASK_STORE_CONFLICT', `task ${taskId}: ${detail}`);
  }
}

/**
 * This replica no longer holds the lease under which it ran the task: it was
 * cut off (or paused) for longer than the lease, and the task is, or may be,
 * another replica's now. The write was refused and changed nothing; the
 * handler must stop.
 */
export class TaskLeaseLostError extends WeaveError {
  constructor(taskId: string) {
    super(
      'TASK_LEASE_LOST',
      `task ${taskId}: this replica's lease expired (cut off or paused for longer than the lease); another replica takes the task over`,
    );
  }
}

/**
 * The store refuses what a write carries (data its backing service cannot
 * keep, a constraint it breaks): the same write can never succeed, so it is
 * not retried. A task whose write is refused ends FAILED.
 */
export class TaskStoreRejectedError extends WeaveError {
  constructor(detail: string, options?: { cause?: unknown }) {
    super('TASK_STORE_REJECTED', `task store refused the write: ${detail}`, options);
  }
}

/** The store's backing service cannot be reached; the same call may succeed later. */
export class TaskStoreUnavailableError extends WeaveError {
  constructor(detail: string, options?: { cause?: unknown }) {
    super('TASK_STORE_UNAVAILABLE', `task store unavailable: ${detail}`, options);
  }
}

/**
 * @internal The store, or the task manager using it, is closed or closing:
 * this replica is shutting down, and the call did nothing. Retryable as any
 * {@link TaskStoreUnavailableError}, on another replica; the request handler
 * answers it as the draining server answers new work, not as a database
 * that cannot be reached.
 */
export class TaskStoreClosedError extends TaskStoreUnavailableError {
  constructor(detail: string, options?: { cause?: unknown }) {
    super(`${detail} (this replica is shutting down)`, options);
  }
}

const MemoryStoreNumbers = z.object({
  terminalTtlMs: durationMs.optional(),
  maxTasks: positiveCount.optional(),
  maxTasksPerOwner: positiveCount.optional(),
  maxEventsPerTask: positiveCount.optional(),
});

/** Options of {@link InMemoryTaskStore}. */
export interface InMemoryTaskStoreOptions {
  /** How long a finished task stays readable, in ms. Default 1 hour. */
  readonly terminalTtlMs?: number;
  /** Most tasks kept at once. When full, the oldest finished tasks go first. Default 10 000. */
  readonly maxTasks?: number;
  /**
   * The same bound per owner (caller), so that one caller's tasks cannot
   * push another's out: a new task of an owner holding this many makes room
   * by dropping that owner's oldest finished task, or, when all of them are
   * unfinished, is refused with {@link TaskStoreFullError} (scope `caller`).
   * Only a full store drops anyone's. Default a quarter of `maxTasks` (at least 1).
   */
  readonly maxTasksPerOwner?: number;
  /** Events kept per task written through {@link InMemoryTaskStore.append} (oldest dropped first). Default 1000. */
  readonly maxEventsPerTask?: number;
  /**
   * Bytes of task content (messages, artifacts, events; estimated as their
   * JSON size) the store keeps at once. To make room the oldest finished
   * tasks go first; when unfinished tasks hold it all, or the new task alone
   * is larger, it is refused with {@link TaskStoreOverBudgetError}. Default 256 MiB.
   */
  readonly maxBytes?: number;
  /** The same bound per owner (caller), so one caller cannot take the store. Default a quarter of `maxBytes`. */
  readonly maxBytesPerOwner?: number;
  /**
   * Bytes one finished task keeps. Above it, its event log goes (but the
   * last event), then its history, then its artifacts, and
   * `metadata['weave.truncated']` lists what went (a reply read after that is
   * cut too). Default the owner's share, `maxBytesPerOwner`.
   */
  readonly maxBytesPerTask?: number;
}

/** The byte bounds every task store takes, as {@link InMemoryTaskStoreOptions} describes them. */
export interface TaskStoreByteBounds {
  readonly maxBytes: number;
  readonly maxBytesPerOwner: number;
  readonly maxBytesPerTask: number;
}

/**
 * Refuses a new task of `bytes` (as stored) that alone is larger than its
 * owner's share or the store's bound: before anything is freed, as no
 * eviction could make room for it. Every store calls it before making room.
 *
 * @throws {TaskStoreOverBudgetError} with `neverFits`.
 */
export function refuseNeverFitting(
  owner: string,
  bytes: number,
  maxOwnerBytes: number,
  maxBytes: number,
): void {
  if (bytes > maxOwnerBytes) throw new TaskStoreOverBudgetError('caller', maxOwnerBytes, owner, bytes);
  if (bytes > maxBytes) throw new TaskStoreOverBudgetError('store', maxBytes, owner, bytes);
}

/**
 * A store's byte bounds with the defaults every store applies: per owner a
 * quarter of the whole, per task the owner's share (one task may use it all;
 * a smaller bound cuts a finished task's event log, which a subscriber
 * resuming after the task finished would then miss).
 *
 * @throws {A2AConfigError} naming `store` and the bound that is not a positive integer.
 */
export function byteBounds(
  store: string,
  options: Partial<TaskStoreByteBounds>,
  defaultMaxBytes: number,
): TaskStoreByteBounds {
  const maxBytes = options.maxBytes ?? defaultMaxBytes;
  const maxBytesPerOwner = options.maxBytesPerOwner ?? Math.floor(maxBytes / 4);
  const bounds = { maxBytes, maxBytesPerOwner, maxBytesPerTask: options.maxBytesPerTask ?? maxBytesPerOwner };
  for (const [k, v] of Object.entries(bounds)) positiveInteger(store, k, v);
  return bounds;
}

/** Metadata key of a finished task whose retained content was cut to fit `maxBytesPerTask`. */
export const TRUNCATED_METADATA_KEY = 'weave.truncated';

interface Entry {
  /** Its key in the store (the task's id when attached). */
  readonly id: string;
  readonly record: TaskRecord;
  /** Recent events, oldest first (none once a task no stream carried has finished). */
  events: StoredEvent[];
  /** The task's push configs, each with the bytes it is counted for (in {@link Entry.pushBytes}). */
  pushConfigs?: { config: TaskPushNotificationConfig; bytes: number }[];
  /** Estimated bytes of the task's content counted in the store's totals. */
  bytes: number;
  /** Estimated bytes of its push configs counted in the store's totals, besides `bytes`. */
  pushBytes?: number;
  /** The task reached a terminal state: its id is in the eviction queue and it may be evicted. */
  finished: boolean;
  /** Its neighbours in its owner's list of finished tasks ({@link Owner.oldest}), once finished. */
  older: Entry | undefined;
  newer: Entry | undefined;
}

/** What the store counts of one owner (caller), kept while the owner has a task in it. */
interface Owner {
  /** Estimated bytes of its tasks' content and push configs. */
  bytes: number;
  /** Its tasks, finished or not: held to `maxTasksPerOwner`. */
  tasks: number;
  /**
   * Its finished tasks in the order they finished, linked through
   * {@link Entry.older}/{@link Entry.newer}: the oldest is what its count
   * share drops, found without a scan of the store, and a task whatever
   * removes it (eviction, expiry, delete) leaves the list in O(1), so that
   * the list holds no stale ids to skip or compact.
   */
  oldest: Entry | undefined;
  newest: Entry | undefined;
}

/**
 * The embedded default: tasks in a Map, insertion (= creation) ordered.
 * Finished tasks expire after `terminalTtlMs`; the number of tasks is capped
 * at `maxTasks`, and per owner at `maxTasksPerOwner`, so memory stays
 * bounded and one caller cannot push another's finished tasks out. Also the default
 * {@link PushConfigStore}: a task's configs go with it, and count against
 * its owner's share of the byte bounds as its content does.
 */
export class InMemoryTaskStore implements TaskStore, PushConfigStore {
  readonly #tasks = new Map<string, Entry>();
  /** Ids of finished tasks in the order they finished: eviction takes from the head. */
  #finished: string[] = [];
  #finishedHead = 0;
  readonly #ttl: number;
  readonly #max: number;
  readonly #maxOwnerTasks: number;
  readonly #maxEvents: number;
  readonly #maxBytes: number;
  readonly #maxOwnerBytes: number;
  readonly #maxTaskBytes: number;
  #bytes = 0;
  readonly #owners = new Map<string, Owner>();
  #lastSweep = 0;

  constructor(options: InMemoryTaskStoreOptions = {}) {
    checkOptions('InMemoryTaskStore', MemoryStoreNumbers, options);
    this.#ttl = options.terminalTtlMs ?? 3_600_000;
    this.#max = options.maxTasks ?? 10_000;
    this.#maxOwnerTasks = options.maxTasksPerOwner ?? Math.max(1, Math.floor(this.#max / 4));
    this.#maxEvents = options.maxEventsPerTask ?? 1000;
    const bounds = byteBounds('InMemoryTaskStore', options, 256 * 1024 * 1024);
    this.#maxBytes = bounds.maxBytes;
    this.#maxOwnerBytes = bounds.maxBytesPerOwner;
    this.#maxTaskBytes = bounds.maxBytesPerTask;
  }

  get size(): number {
    return this.#tasks.size;
  }

  /** Estimated bytes of task content and push configs kept now: store-wide, or of one owner. */
  bytes(owner?: string): number {
    return owner === undefined ? this.#bytes : (this.#owners.get(owner)?.bytes ?? 0);
  }

  get maxBytesPerOwner(): number {
    return this.#maxOwnerBytes;
  }

  /**
   * @internal Task `id` (attached with {@link attachNow}, still running) grew
   * by `bytes` in place: counted against its owner's share and the store's
   * bound now, not only when it finishes, so that running tasks cannot hold
   * more than the bounds say. Older finished tasks make room as for a new task.
   *
   * @throws {TaskStoreOverBudgetError} when unfinished tasks hold the room; nothing is counted.
   */
  growNow(id: string, bytes: number): void {
    const e = this.#tasks.get(id);
    if (!e || e.finished) return;
    this.#makeRoom(e.record.owner, bytes, id);
    e.bytes += bytes;
    this.#count(e.record.owner, bytes);
  }

  async create(record: TaskRecord, first: StoredEvent): Promise<void> {
    this.attachNow({ ...record, task: structuredClone(record.task) }, [first]);
  }

  /**
   * {@link create} without the promise and without copies: the store keeps
   * `record` and `events` themselves, and the caller (the TaskManager, for
   * the embedded store) goes on updating them in place, so a running task
   * costs no write at all. {@link finishNow} tells the store it ended.
   *
   * @throws {TaskStoreFullError} when every slot of the store, or of the
   *   owner's share (`maxTasksPerOwner`, scope `caller`), holds an unfinished task.
   * @throws {TaskStoreOverBudgetError} when unfinished tasks hold the owner's
   *   share of the memory bound, or all of it (retryable), or the task alone
   *   is larger than either (`neverFits`).
   * @returns the bytes the task is counted for.
   */
  attachNow(record: TaskRecord, events: StoredEvent[]): number {
    const id = record.task.id;
    if (this.#tasks.has(id)) throw new TaskStoreConflictError(id, 'already exists');
    const now = Date.now();
    // A full sweep at most every 10 s keeps create O(1) amortised without a
    // timer; when full, dropping the oldest finished task is O(1) in the usual case.
    if (now - this.#lastSweep > 10_000) this.#sweepSync(now);
    const owner = record.owner;
    // The owner's share of the count first, as of the bytes: its own oldest
    // finished task makes room, never another caller's; refused before
    // anything is freed when none of its tasks has finished. Looked up once:
    // what frees tasks below updates `o` in place (an owner whose last task
    // goes is left with none, and out of the map).
    let o = this.#owners.get(owner);
    if (o !== undefined && o.tasks >= this.#maxOwnerTasks && o.oldest === undefined) {
      throw new TaskStoreFullError(this.#maxOwnerTasks, 'caller', owner);
    }
    // The first event is a snapshot of the task: counted once (shared objects are).
    const bytes = approxJsonBytes([record.task, events]);
    this.#makeRoom(owner, bytes);
    while (o !== undefined && o.tasks >= this.#maxOwnerTasks) {
      const oldest = o.oldest;
      if (oldest === undefined) throw new TaskStoreFullError(this.#maxOwnerTasks, 'caller', owner);
      this.#remove(oldest.id, oldest);
    }
    // Only a full store drops anyone's oldest finished task.
    if (this.#tasks.size >= this.#max && !this.#evictOldestFinished()) {
      throw new TaskStoreFullError(this.#max);
    }
    const entry: Entry = { id, record, events, bytes, finished: false, older: undefined, newer: undefined };
    this.#tasks.set(id, entry);
    if (o === undefined || o.tasks === 0) {
      this.#owners.set(owner, (o = { bytes: 0, tasks: 0, oldest: undefined, newest: undefined }));
    }
    o.tasks++;
    o.bytes += bytes;
    this.#bytes += bytes;
    this.#noteFinished(id, entry);
    return bytes;
  }

  /**
   * A task attached with {@link attachNow} reached a terminal state. With
   * `keepEvents: false` its event log is not kept past this point: the
   * TaskManager says so of a task no stream ever carried, as no client holds
   * an event id of it to resume from, and the log (a snapshot and an object
   * per event) would only be more for the garbage collector to move for as
   * long as the task is kept. Reading its events after that finds them no
   * longer kept, as for a log cut to fit the task's byte bound.
   */
  finishNow(id: string, options: { keepEvents?: boolean } = {}): void {
    const e = this.#tasks.get(id);
    if (e) this.#noteFinished(id, e, options.keepEvents !== false);
  }

  async append(id: string, task: Task, events: readonly StoredEvent[], updatedAt: number): Promise<void> {
    const e = this.#tasks.get(id);
    if (!e) throw new TaskStoreConflictError(id, 'unknown task');
    const first = events[0];
    if (first === undefined) return;
    if (first.seq !== e.record.seq + 1) {
      throw new TaskStoreConflictError(id, `event ${first.seq} does not follow ${e.record.seq}`);
    }
    e.record.task = structuredClone(task);
    e.record.updatedAt = updatedAt;
    e.record.seq = (events[events.length - 1] as StoredEvent).seq;
    e.events.push(...events);
    if (e.events.length > this.#maxEvents) e.events.splice(0, e.events.length - this.#maxEvents);
    this.#noteFinished(id, e);
  }

  /**
   * Frees finished tasks until `bytes` more fit the owner's share and the
   * store: the owner's own oldest first, then anyone's oldest. Task `keep`
   * (the one a push config is added to) is not freed for it.
   *
   * @throws {TaskStoreOverBudgetError} when unfinished tasks hold the room.
   */
  #makeRoom(owner: string, bytes: number, keep?: string): void {
    refuseNeverFitting(owner, bytes, this.#maxOwnerBytes, this.#maxBytes);
    if (this.bytes(owner) + bytes > this.#maxOwnerBytes) {
      for (const [id, e] of this.#tasks) {
        if (this.bytes(owner) + bytes <= this.#maxOwnerBytes) break;
        if (e.record.owner === owner && e.finished && id !== keep) this.#remove(id, e);
      }
      if (this.bytes(owner) + bytes > this.#maxOwnerBytes) {
        throw new TaskStoreOverBudgetError('caller', this.#maxOwnerBytes, owner);
      }
    }
    while (this.#bytes + bytes > this.#maxBytes) {
      if (!this.#evictOldestFinished(keep)) {
        throw new TaskStoreOverBudgetError('store', this.#maxBytes, owner);
      }
    }
  }

  /** Counts `delta` bytes more of a task `owner` holds in the store. */
  #count(owner: string, delta: number): void {
    this.#bytes += delta;
    const o = this.#owners.get(owner);
    if (o !== undefined) o.bytes += delta;
  }

  /** Drops task `id`; `e` when the caller already looked its entry up. */
  #remove(id: string, e: Entry | undefined = this.#tasks.get(id)): void {
    if (!e) return;
    this.#tasks.delete(id);
    const bytes = e.bytes + (e.pushBytes ?? 0);
    this.#bytes -= bytes;
    const owner = e.record.owner;
    const o = this.#owners.get(owner);
    if (o === undefined) return;
    o.bytes -= bytes;
    // Out of its owner's finished list, if in it (a task settling is not yet).
    if (e.older !== undefined) e.older.newer = e.newer;
    else if (o.oldest === e) o.oldest = e.newer;
    if (e.newer !== undefined) e.newer.older = e.older;
    else if (o.newest === e) o.newest = e.older;
    e.older = e.newer = undefined;
    if (--o.tasks === 0) this.#owners.delete(owner);
  }

  /**
   * A task just finished: what it grew to while running is counted, cut to
   * `maxBytesPerTask` (events but the last, then history, then artifacts),
   * and older finished tasks make room for it when it no longer fits. A cut
   * task is a new record: whoever holds the finished one (the reply of a
   * blocking SendMessage being written) still has it whole.
   */
  #settle(id: string, e: Entry, keepEvents: boolean): void {
    let task = e.record.task;
    let events = keepEvents || e.events.length === 0 ? e.events : [];
    // A walk of the whole task, not a count kept as it grew: the running task is changed in place
    // (by the TaskManager, or whoever attached it) without telling the store, and the estimate
    // counts an object the task shares with its events once and a dropped event not at all. A
    // running count would have to follow every object's references to stay equal to it; one that
    // only adds up what was published overcounts, and would move where the bounds take effect.
    let bytes = approxJsonBytes([task, events]);
    const cut: string[] = [];
    if (bytes > this.#maxTaskBytes && events.length > 1) {
      events = events.slice(-1);
      cut.push('events');
      bytes = approxJsonBytes([task, events]);
    }
    for (const key of ['history', 'artifacts'] as const) {
      if (bytes <= this.#maxTaskBytes || (task[key]?.length ?? 0) === 0) continue;
      task = { ...task, [key]: [] };
      cut.push(key);
      bytes = approxJsonBytes([task, events]);
    }
    let kept = e;
    if (cut.length > 0) {
      task = { ...task, metadata: { ...task.metadata, [TRUNCATED_METADATA_KEY]: cut.join(',') } };
      bytes = approxJsonBytes([task, events]);
      kept = {
        id,
        record: { ...e.record, task },
        events,
        bytes: e.bytes,
        finished: true,
        older: undefined,
        newer: undefined,
      };
      if (e.pushConfigs) kept.pushConfigs = e.pushConfigs;
      if (e.pushBytes !== undefined) kept.pushBytes = e.pushBytes;
      this.#tasks.set(id, kept);
    } else if (events !== e.events) {
      // Only the log goes: the record is the TaskManager's, unchanged.
      e.events = events;
    }
    const owner = e.record.owner;
    // The task is in the store, so its owner is counted.
    const o = this.#owners.get(owner) as Owner;
    this.#bytes += bytes - kept.bytes;
    o.bytes += bytes - kept.bytes;
    kept.bytes = bytes;
    // Last in its owner's finished list: the entry kept (a cut task is a new one), before
    // the evictions below, which may drop it too.
    kept.older = o.newest;
    if (o.newest !== undefined) o.newest.newer = kept;
    else o.oldest = kept;
    o.newest = kept;
    // Over a bound now (the task grew while running): older finished tasks go, the owner's first.
    // Checked before the scan starts: an iterator over the Map walks every hole
    // the evictions left at its head before the first entry, and that walk,
    // once per finished task, was the largest cost of a SendMessage in a busy
    // store (a full store of 10 000 tasks, bench `bindings`).
    if (o.bytes > this.#maxOwnerBytes) {
      for (const [other, entry] of this.#tasks) {
        if (this.bytes(owner) <= this.#maxOwnerBytes) break;
        if (other !== id && entry.record.owner === owner && entry.finished) this.#remove(other, entry);
      }
    }
    while (this.#bytes > this.#maxBytes && this.#evictOldestFinished()) {
      // each pass drops one
    }
  }

  async get(id: string, scope?: TaskScope): Promise<TaskRecord | undefined> {
    const r = this.#entry(id)?.record;
    return r === undefined || scope === undefined || inTaskScope(r, scope) ? r : undefined;
  }

  async events(id: string, afterSeq: number, limit: number): Promise<readonly StoredEvent[] | undefined> {
    const e = this.#entry(id);
    if (!e) return undefined;
    const first = e.events[0]?.seq ?? e.record.seq + 1;
    if (afterSeq + 1 < first) return undefined;
    // Sequence numbers are consecutive: the position is arithmetic.
    const from = Math.max(0, afterSeq + 1 - first);
    return e.events.slice(from, from + Math.max(0, limit));
  }

  async delete(id: string): Promise<void> {
    this.#remove(id);
  }

  async list(q: TaskQuery): Promise<TaskPage> {
    const now = Date.now();
    const after = q.after === undefined ? undefined : this.#cursor(q.after, q);
    // Status timestamps change in place (the TaskManager updates the records
    // this store holds), so the order is taken at each call: the matches
    // are sorted, a few thousand at most per caller.
    const page: Array<{ r: TaskRecord; at: number }> = [];
    let total = 0;
    for (const e of this.#tasks.values()) {
      const r = e.record;
      if (!inTaskScope(r, q) || this.#expired(r, now)) continue;
      if (q.contextId !== undefined && r.task.contextId !== q.contextId) continue;
      if (q.status !== undefined && r.task.status.state !== q.status) continue;
      const at = statusTime(r);
      if (q.updatedAfter !== undefined && at < q.updatedAfter) continue;
      total++;
      if (after === undefined || isPastCursor(at, r.task.id, after)) page.push({ r, at });
    }
    page.sort((a, b) => b.at - a.at || (a.r.task.id < b.r.task.id ? 1 : a.r.task.id > b.r.task.id ? -1 : 0));
    return { records: page.slice(0, Math.max(0, q.limit)).map((p) => p.r), total };
  }

  /** `after` as a position in list order (see {@link CreationCursor}). */
  #cursor(after: ListCursor | CreationCursor, q: TaskQuery): ListCursor {
    if ('statusAt' in after) return after;
    const r = this.#tasks.get(after.id)?.record;
    return r && inTaskScope(r, q)
      ? { statusAt: statusTime(r), id: after.id }
      : { statusAt: after.createdAt, id: after.id };
  }

  async sweep(now = Date.now()): Promise<number> {
    return this.#sweepSync(now);
  }

  /**
   * Counted against the task owner's share and the store's bound like task
   * content (a config can be as large as a task, and a finished task keeps
   * its configs): older finished tasks make room, never the config's own.
   *
   * @throws {TaskStoreOverBudgetError} when unfinished tasks hold the room,
   *   or the config alone is larger than the bound (`neverFits`); the
   *   config is not kept then.
   */
  async setPushConfig(config: TaskPushNotificationConfig): Promise<void> {
    if (!config.id) throw new TaskStoreRejectedError('a push config needs an id');
    const e = this.#entry(config.taskId);
    if (!e) throw new TaskStoreConflictError(config.taskId, 'unknown task');
    const list = (e.pushConfigs ??= []);
    const i = list.findIndex((c) => c.config.id === config.id);
    const bytes = approxJsonBytes(config);
    const grows = bytes - (list[i]?.bytes ?? 0);
    if (grows > 0) this.#makeRoom(e.record.owner, grows, config.taskId);
    if (i >= 0) list[i] = { config, bytes };
    else list.push({ config, bytes });
    e.pushBytes = (e.pushBytes ?? 0) + grows;
    this.#count(e.record.owner, grows);
  }

  async listPushConfigs(taskId: string): Promise<TaskPushNotificationConfig[]> {
    return (this.#entry(taskId)?.pushConfigs ?? []).map((c) => c.config);
  }

  async deletePushConfig(taskId: string, id: string): Promise<boolean> {
    const e = this.#entry(taskId);
    const list = e?.pushConfigs;
    const i = list?.findIndex((c) => c.config.id === id) ?? -1;
    if (!e || !list || i < 0) return false;
    const [gone] = list.splice(i, 1);
    const bytes = gone?.bytes ?? 0;
    e.pushBytes = (e.pushBytes ?? 0) - bytes;
    this.#count(e.record.owner, -bytes);
    return true;
  }

  #entry(id: string): Entry | undefined {
    const e = this.#tasks.get(id);
    if (e && this.#expired(e.record, Date.now())) {
      this.#remove(id, e);
      return undefined;
    }
    return e;
  }

  #noteFinished(id: string, e: Entry, keepEvents = true): void {
    // A flag on the entry rather than a Set of finished ids: one hash table
    // fewer to look up, add to and delete from on every task.
    if (!e.finished && isTerminal(e.record.task.status.state)) {
      e.finished = true;
      this.#finished.push(id);
      this.#compactFinished();
      this.#settle(id, e, keepEvents);
    }
  }

  /**
   * Drops from the eviction queue the ids of tasks no longer kept (expired
   * by the sweep, deleted) once they are most of it. Only eviction took ids
   * out, and it runs when the store is full: an agent that stays below
   * `maxTasks` kept the id of every task it ever finished (200 000 tasks
   * grew the heap by 94 MB). Amortised O(1): a pass
   * leaves at most `size` ids, and the next waits for 1 024 more than that.
   */
  #compactFinished(): void {
    const queued = this.#finished.length - this.#finishedHead;
    if (queued <= 2 * this.#tasks.size + 1024) return;
    const kept: string[] = [];
    for (let i = this.#finishedHead; i < this.#finished.length; i++) {
      const id = this.#finished[i] as string;
      if (this.#tasks.get(id)?.finished === true) kept.push(id);
    }
    this.#finished = kept;
    this.#finishedHead = 0;
  }

  #expired(r: TaskRecord, now: number): boolean {
    return isTerminal(r.task.status.state) && now - r.updatedAt > this.#ttl;
  }

  #sweepSync(now: number): number {
    this.#lastSweep = now;
    let n = 0;
    for (const [id, e] of this.#tasks) {
      if (this.#expired(e.record, now)) {
        this.#remove(id, e);
        n++;
      }
    }
    return n;
  }

  /** Drops the oldest finished task but `keep`, which stays first in line; false when there is none. */
  #evictOldestFinished(keep?: string): boolean {
    // Amortised O(1): a queue of finished ids instead of a scan of the Map,
    // whose iteration would walk over the holes left by earlier deletions.
    let kept = false;
    let evicted = false;
    while (this.#finishedHead < this.#finished.length) {
      const id = this.#finished[this.#finishedHead++] as string;
      if (this.#finishedHead > 1024 && this.#finishedHead * 2 > this.#finished.length) {
        this.#finished = this.#finished.slice(this.#finishedHead);
        this.#finishedHead = 0;
      }
      if (id === keep) {
        kept = true;
        continue;
      }
      const e = this.#tasks.get(id);
      if (e?.finished !== true) continue; // expired or deleted meanwhile
      this.#remove(id, e);
      evicted = true;
      break;
    }
    if (kept) {
      // Back at the head: it is still the oldest finished task left.
      if (this.#finishedHead > 0) this.#finished[--this.#finishedHead] = keep as string;
      else this.#finished.unshift(keep as string);
    }
    return evicted;
  }
}

/**
 * Estimated JSON size of `value` in bytes (string lengths, numbers as 8,
 * punctuation), each object counted once however often it is referenced: a
 * task's history and the snapshot in its first event share their messages.
 * Walks the value without serialising it (a large string costs nothing more
 * than a small one); nesting is bounded where requests are parsed.
 */
export function approxJsonBytes(value: unknown): number {
  // Twice per task (created, finished), on every SendMessage: written to
  // allocate nothing. Objects already counted are found in a short list
  // scanned by identity rather than a Set: a task and its events hold a few
  // dozen objects, and growing a Set (and hashing each object into it) was
  // most of the walk's cost and a visible share of the server's garbage.
  // Keys come from `for...in` rather than `Object.keys` (one array less per
  // object): these are JSON documents, whose prototypes have no enumerable
  // keys; an inherited one would only add to the estimate.
  if (walking) return approxJsonBytesWith(value, [], []);
  walking = true;
  try {
    return approxJsonBytesWith(value, walkStack, walkSeen);
  } finally {
    walkStack.length = 0;
    walkSeen.length = 0;
    walking = false;
  }
}

/** Objects looked up in the seen list before it is handed to a Set. */
const SEEN_SCAN_MAX = 64;
// Reused by every walk (emptied after it), so a walk allocates nothing;
// `walking` keeps a walk re-entered from a getter on its own arrays.
const walkStack: unknown[] = [];
const walkSeen: object[] = [];
let walking = false;

function approxJsonBytesWith(value: unknown, stack: unknown[], seenList: object[]): number {
  let seen: Set<object> | undefined;
  let n = 0;
  stack.push(value);
  while (stack.length > 0) {
    const v = stack.pop();
    switch (typeof v) {
      case 'string':
        n += v.length + 2;
        break;
      case 'number':
      case 'bigint':
        n += 8;
        break;
      case 'boolean':
        n += 5;
        break;
      case 'object': {
        if (v === null) {
          n += 4;
          break;
        }
        if (seen !== undefined) {
          if (seen.has(v)) break;
          seen.add(v);
        } else {
          if (seenList.includes(v)) break;
          if (seenList.length < SEEN_SCAN_MAX) seenList.push(v);
          else (seen = new Set(seenList)).add(v);
        }
        if (ArrayBuffer.isView(v)) {
          // Bytes travel base64-encoded: 4 characters per 3 bytes.
          n += Math.ceil((v.byteLength * 4) / 3) + 2;
          break;
        }
        if (Array.isArray(v)) {
          n += 2 + v.length;
          for (let i = 0; i < v.length; i++) stack.push(v[i]);
        } else {
          const o = v as Record<string, unknown>;
          for (const k in o) {
            n += k.length + 4;
            stack.push(o[k]);
          }
          n += 2;
        }
        break;
      }
      default:
        break;
    }
  }
  return n;
}
