import { WeaveError } from '@weave/identity';
import type { StreamResponse, Task, TaskPushNotificationConfig, TaskState } from './wire/v1.js';
import { isTerminal } from './wire/v1.js';

/** One event of a task's log, numbered from 1 in publication order. */
export interface StoredEvent {
  readonly seq: number;
  readonly event: StreamResponse;
}

/** Everything the server keeps about one task. */
export interface TaskRecord {
  task: Task;
  /** SPIFFE ID of the caller that created the task; only it can see the task. */
  readonly owner: string;
  /** Skill the task runs. */
  readonly skill: string;
  /** Epoch ms. Immutable; the list order ("newest first") is by creation. */
  readonly createdAt: number;
  updatedAt: number;
  /** Sequence number of the last event. */
  seq: number;
  /** Recent events for replay to reconnecting subscribers (bounded, oldest dropped first). */
  events: StoredEvent[];
  pushConfigs?: TaskPushNotificationConfig[];
}

/** Filter for {@link TaskStore.list}. */
export interface TaskQuery {
  readonly owner: string;
  readonly contextId?: string;
  readonly status?: TaskState;
  /** Only tasks whose status changed after this epoch ms. */
  readonly updatedAfter?: number;
  /** Keyset cursor: continue after this task (exclusive). */
  readonly after?: { readonly createdAt: number; readonly id: string };
  readonly limit: number;
}

/** A page of tasks, newest first, and how many match in total. */
export interface TaskPage {
  readonly records: readonly TaskRecord[];
  readonly total: number;
}

/**
 * Persistence seam of the A2A server. The server keeps the live state of a
 * running task in process and writes it through, in order, after each event;
 * a durable store only has to persist what it is given.
 */
export interface TaskStore {
  get(id: string): Promise<TaskRecord | undefined>;
  /** Inserts or replaces. May throw {@link TaskStoreFullError}. */
  put(record: TaskRecord): Promise<void>;
  delete(id: string): Promise<void>;
  list(query: TaskQuery): Promise<TaskPage>;
  /** Removes expired terminal tasks; returns how many. */
  sweep(now?: number): Promise<number>;
  close?(): Promise<void>;
}

/** The store cannot take another task: every slot holds a task that has not finished. */
export class TaskStoreFullError extends WeaveError {
  constructor(limit: number) {
    super('TASK_STORE_FULL', `task store is full (${limit} unfinished tasks)`);
  }
}

/** Options of {@link InMemoryTaskStore}. */
export interface InMemoryTaskStoreOptions {
  /** How long a finished task stays readable, in ms. Default 1 hour. */
  readonly terminalTtlMs?: number;
  /** Most tasks kept at once. When full, the oldest finished tasks go first. Default 10 000. */
  readonly maxTasks?: number;
}

/**
 * The embedded default: tasks in a Map, insertion (= creation) ordered.
 * Finished tasks expire after `terminalTtlMs`; the number of tasks is capped
 * at `maxTasks`, so memory stays bounded.
 */
export class InMemoryTaskStore implements TaskStore {
  readonly #tasks = new Map<string, TaskRecord>();
  /** Ids of finished tasks in the order they finished: eviction takes from the head. */
  #finished: string[] = [];
  #finishedHead = 0;
  readonly #isFinished = new Set<string>();
  readonly #ttl: number;
  readonly #max: number;
  #lastSweep = 0;

  constructor(options: InMemoryTaskStoreOptions = {}) {
    this.#ttl = options.terminalTtlMs ?? 3_600_000;
    this.#max = options.maxTasks ?? 10_000;
  }

  get size(): number {
    return this.#tasks.size;
  }

  async get(id: string): Promise<TaskRecord | undefined> {
    const r = this.#tasks.get(id);
    if (r && this.#expired(r, Date.now())) {
      this.#tasks.delete(id);
      this.#isFinished.delete(id);
      return undefined;
    }
    return r;
  }

  async put(record: TaskRecord): Promise<void> {
    this.putNow(record);
  }

  /**
   * {@link put} without the promise: the TaskManager writes through to this
   * store synchronously (no write queue per task).
   *
   * @throws {TaskStoreFullError} for a new task when every slot holds an unfinished one.
   */
  putNow(record: TaskRecord): void {
    const id = record.task.id;
    if (!this.#tasks.has(id)) {
      const now = Date.now();
      // A full sweep at most every 10 s keeps put O(1) amortised without a timer;
      // when full, dropping the oldest finished task is O(1) in the usual case.
      if (now - this.#lastSweep > 10_000) this.#sweepSync(now);
      if (this.#tasks.size >= this.#max && !this.#evictOldestFinished()) {
        throw new TaskStoreFullError(this.#max);
      }
    }
    this.#tasks.set(id, record);
    if (isTerminal(record.task.status.state) && !this.#isFinished.has(id)) {
      this.#isFinished.add(id);
      this.#finished.push(id);
    }
  }

  async delete(id: string): Promise<void> {
    this.#tasks.delete(id);
    this.#isFinished.delete(id);
  }

  async list(q: TaskQuery): Promise<TaskPage> {
    const now = Date.now();
    const out: TaskRecord[] = [];
    let total = 0;
    let passedCursor = q.after === undefined;
    const all = [...this.#tasks.values()];
    for (let i = all.length - 1; i >= 0; i--) {
      const r = all[i];
      if (r === undefined || r.owner !== q.owner || this.#expired(r, now)) continue;
      if (q.contextId !== undefined && r.task.contextId !== q.contextId) continue;
      if (q.status !== undefined && r.task.status.state !== q.status) continue;
      if (q.updatedAfter !== undefined && r.updatedAt <= q.updatedAfter) continue;
      total++;
      if (!passedCursor && q.after) {
        if (r.task.id === q.after.id) {
          passedCursor = true;
          continue;
        }
        // The cursor task may have expired meanwhile: anything older is past it.
        if (r.createdAt < q.after.createdAt) passedCursor = true;
        else continue;
      }
      if (out.length < q.limit) out.push(r);
    }
    return { records: out, total };
  }

  async sweep(now = Date.now()): Promise<number> {
    return this.#sweepSync(now);
  }

  #expired(r: TaskRecord, now: number): boolean {
    return isTerminal(r.task.status.state) && now - r.updatedAt > this.#ttl;
  }

  #sweepSync(now: number): number {
    this.#lastSweep = now;
    let n = 0;
    for (const [id, r] of this.#tasks) {
      if (this.#expired(r, now)) {
        this.#tasks.delete(id);
        this.#isFinished.delete(id);
        n++;
      }
    }
    return n;
  }

  #evictOldestFinished(): boolean {
    // Amortised O(1): a queue of finished ids instead of a scan of the Map,
    // whose iteration would walk over the holes left by earlier deletions.
    while (this.#finishedHead < this.#finished.length) {
      const id = this.#finished[this.#finishedHead++] as string;
      if (this.#finishedHead > 1024 && this.#finishedHead * 2 > this.#finished.length) {
        this.#finished = this.#finished.slice(this.#finishedHead);
        this.#finishedHead = 0;
      }
      if (!this.#isFinished.delete(id)) continue; // expired or deleted meanwhile
      this.#tasks.delete(id);
      return true;
    }
    return false;
  }
}
