// What the task manager's own background work on the store logs while the
// store is away: the lease renewal (every third of the lease), the sweep of
// expired tasks. Each says what it is, once as the outage begins (a warning
// with what the store said, no stack, no task id), nothing more at each
// retry while it lasts, and one info line when it works again. Before, each
// lease tick of a PostgreSQL outage was an error line "a2a: task store write
// failed" with `taskId: ""` and a full stack, every 100 ms here (every 10 s
// with the default lease, about 1.5 KB each). A store double keeps the lease
// (this is about logging, not PostgreSQL; see interop/ for the database).
import { afterEach, describe, expect, it } from 'vitest';
import { SpiffeId } from '@weave/identity';
import { LocalPolicyEnforcer } from '@weave/authz';
import {
  A2ARequestHandler,
  InMemoryTaskStore,
  TaskManager,
  TaskStoreUnavailableError,
  type HandlerLogger,
  type TaskLeases,
  type TaskRecord,
} from '../src/index.js';

/** An embedded store that keeps a lease, whose heartbeat and sweep fail while the test says. */
class FlakyLeaseStore extends InMemoryTaskStore implements TaskLeases {
  readonly replicaId = 'replica-a';
  /** Ticks every 100 ms (a third of it). */
  readonly leaseTtlMs = 300;
  heartbeats = 0;
  sweeps = 0;
  /** What heartbeat and sweep throw while set. */
  failWith: (() => Error) | undefined;

  async heartbeat(): Promise<boolean> {
    this.heartbeats++;
    if (this.failWith) throw this.failWith();
    return true;
  }

  async claimOrphans(): Promise<TaskRecord[]> {
    return [];
  }

  async retire(): Promise<void> {}

  override async sweep(): Promise<number> {
    this.sweeps++;
    if (this.failWith) throw this.failWith();
    return super.sweep();
  }
}

/** A failure as PostgresTaskStore reports a database it cannot reach. */
const unreachable = (): Error =>
  new TaskStoreUnavailableError('connect ECONNREFUSED 10.0.0.5:5432', {
    cause: Object.assign(new Error('connect ECONNREFUSED 10.0.0.5:5432'), { code: 'ECONNREFUSED' }),
  });

interface Line {
  level: 'debug' | 'info' | 'warn' | 'error';
  obj: Record<string, unknown>;
  msg: string;
}

function capture(): { logger: HandlerLogger; lines: Line[] } {
  const lines: Line[] = [];
  const at =
    (level: Line['level']) =>
    (obj: object, msg: string): void =>
      void lines.push({ level, obj: obj as Record<string, unknown>, msg });
  return { lines, logger: { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') } };
}

const selfId = SpiffeId.parse('spiffe://chores.test/agent/server');
const enforcer = LocalPolicyEnforcer.fromObject({ version: 1, id: 'none', default: 'deny', rules: [] });

const closers: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const close of closers.splice(0)) await close();
});

function handlerOn(store: FlakyLeaseStore): Line[] {
  const { logger, lines } = capture();
  const h = new A2ARequestHandler({ selfId, enforcer, taskStore: store, logger });
  closers.push(() => h.close());
  return lines;
}

describe('lease renewal while the store is away', () => {
  it('logs one warning as the outage begins, none while it lasts, one info line when it works again', async () => {
    const store = new FlakyLeaseStore();
    store.failWith = unreachable;
    const lines = handlerOn(store);
    await expect.poll(() => store.heartbeats, { timeout: 3000 }).toBeGreaterThanOrEqual(6);
    const failed = lines.filter((l) => l.msg === 'a2a: lease renewal failed');
    expect(failed).toHaveLength(1);
    const line = failed[0] as Line;
    expect(line.level).toBe('warn');
    expect('taskId' in line.obj).toBe(false);
    const err = line.obj.err as Record<string, unknown>;
    expect(err.message).toBe('task store unavailable: connect ECONNREFUSED 10.0.0.5:5432');
    expect(err.code).toBe('TASK_STORE_UNAVAILABLE');
    expect(err.stack).toBeUndefined();
    expect(err.cause).toBeUndefined();
    expect(JSON.stringify(line.obj).length).toBeLessThan(300);
    expect(lines.filter((l) => l.msg === 'a2a: task store write failed')).toEqual([]);

    const failures = store.heartbeats;
    store.failWith = undefined;
    await expect
      .poll(() => lines.find((l) => l.msg === 'a2a: lease renewal works again'), { timeout: 3000 })
      .toMatchObject({ level: 'info', obj: { failures: expect.any(Number) } });
    const again = lines.find((l) => l.msg === 'a2a: lease renewal works again') as Line;
    expect(again.obj.failures).toBeGreaterThanOrEqual(failures - 1);
    expect(again.obj.failingMs).toEqual(expect.any(Number));

    // Working: nothing more, whatever the number of ticks.
    const seen = lines.length;
    const ticks = store.heartbeats;
    await expect.poll(() => store.heartbeats, { timeout: 3000 }).toBeGreaterThanOrEqual(ticks + 3);
    expect(lines.slice(seen)).toEqual([]);

    // A second outage is told again, once.
    store.failWith = unreachable;
    const ticks2 = store.heartbeats;
    await expect.poll(() => store.heartbeats, { timeout: 3000 }).toBeGreaterThanOrEqual(ticks2 + 4);
    expect(lines.filter((l) => l.msg === 'a2a: lease renewal failed')).toHaveLength(2);
  });

  it('a failure that is not the store being away is an error, once, with its stack', async () => {
    const store = new FlakyLeaseStore();
    store.failWith = () => new TypeError('a bug in the store');
    const lines = handlerOn(store);
    await expect.poll(() => store.heartbeats, { timeout: 3000 }).toBeGreaterThanOrEqual(4);
    const failed = lines.filter((l) => l.msg === 'a2a: lease renewal failed');
    expect(failed).toHaveLength(1);
    expect(failed[0]?.level).toBe('error');
    expect((failed[0]?.obj.err as { stack?: string }).stack).toMatch(/TypeError: a bug in the store/);
  });
});

describe('the sweep of expired tasks while the store is away', () => {
  it('tells onChoreFailed once per outage and onChoreRecovered when it works again', async () => {
    const store = new FlakyLeaseStore();
    store.failWith = unreachable;
    const failed: Array<[string, unknown]> = [];
    const recovered: Array<[string, number]> = [];
    const m = new TaskManager({
      store,
      sweepIntervalMs: 20,
      onChoreFailed: (chore, err) => failed.push([chore, err]),
      onChoreRecovered: (chore, outage) => recovered.push([chore, outage.failures]),
    });
    closers.push(() => m.close());
    await expect.poll(() => store.sweeps, { timeout: 3000 }).toBeGreaterThanOrEqual(4);
    expect(failed.filter(([chore]) => chore === 'sweep')).toHaveLength(1);
    expect(failed.find(([chore]) => chore === 'sweep')?.[1]).toBeInstanceOf(TaskStoreUnavailableError);
    store.failWith = undefined;
    await expect.poll(() => recovered.find(([chore]) => chore === 'sweep'), { timeout: 3000 }).toBeDefined();
    expect(recovered.filter(([chore]) => chore === 'sweep')).toHaveLength(1);
    expect(recovered.find(([chore]) => chore === 'sweep')?.[1]).toBeGreaterThanOrEqual(4);
  });

  it('without onChoreFailed, onStoreError is told once per outage (task id empty), not at each retry', async () => {
    const store = new FlakyLeaseStore();
    store.failWith = unreachable;
    const told: string[] = [];
    const m = new TaskManager({
      store,
      sweepIntervalMs: 20,
      onStoreError: (_err, taskId) => told.push(taskId),
    });
    closers.push(() => m.close());
    await expect.poll(() => store.sweeps, { timeout: 3000 }).toBeGreaterThanOrEqual(4);
    await expect.poll(() => store.heartbeats, { timeout: 3000 }).toBeGreaterThanOrEqual(4);
    // One for the sweep, one for the lease renewal.
    expect(told).toEqual(['', '']);
  });
});
