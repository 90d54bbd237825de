// What a database outage logs of the tasks running on a replica, and of the
// requests it refuses meanwhile. Each running task's write is retried with
// backoff while the store is away (several times a second): that is told
// once per task as the outage begins (a warning with the task id, what the
// store said and no stack) and once when its writes land again (info, with
// how many attempts failed and for how long), as the lease renewal's is
// (store-chore-logs.test.ts). Before, a 12 s PostgreSQL outage with 30
// running tasks logged 240 error lines with a full stack (437 kB) on one
// replica. A request refused because the store is away is a warning without
// a stack, at most 10 a minute. Either line said the store's message twice
// ("ECONNREFUSED …: ECONNREFUSED …"): pino's serializer appended the cause's
// message to the error's, which carries it already. The embedded store is
// made unreachable (this is about logging, not PostgreSQL; see interop/ for
// the database), and lines are written by pino, as an agent's are.
import { Writable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { pino, type Logger } from 'pino';
import { SpiffeId } from '@weave/identity';
import { LocalPolicyEnforcer } from '@weave/authz';
import {
  A2ARequestHandler,
  InMemoryTaskStore,
  TaskStoreUnavailableError,
  type StoredEvent,
  type Task,
} from '../src/index.js';
import { asA2AError } from '../src/handler.js';

/** What the store says while away, as PostgresTaskStore reports a refused connection. */
const REFUSED = 'connect ECONNREFUSED 127.0.0.1:50131';
const unreachable = (): Error =>
  new TaskStoreUnavailableError(REFUSED, {
    cause: Object.assign(new Error(REFUSED), { code: 'ECONNREFUSED' }),
  });

/** The embedded store, its appends failing with what `failWith` makes while set. */
class AwayStore extends InMemoryTaskStore {
  failWith: (() => Error) | undefined;
  failedAppends = 0;

  override async append(id: string, task: Task, events: readonly StoredEvent[], updatedAt: number) {
    if (this.failWith) {
      this.failedAppends++;
      throw this.failWith();
    }
    return super.append(id, task, events, updatedAt);
  }
}

/** One pino record as written. */
interface LogLine {
  readonly level: number;
  readonly msg: string;
  readonly [field: string]: unknown;
}

const WARN = 40;
const INFO = 30;
const ERROR = 50;
const WRITE_FAILED = 'a2a: task store write failed';
const WRITE_AGAIN = 'a2a: task store write works again';

function pinoLines(): { logger: Logger; lines: LogLine[] } {
  const lines: LogLine[] = [];
  const logger = pino(
    { level: 'debug' },
    new Writable({
      write(chunk: Buffer, _enc, cb) {
        // pino writes one record per write call.
        lines.push(JSON.parse(chunk.toString('utf8')) as LogLine);
        cb();
      },
    }),
  );
  return { logger, lines };
}

const selfId = SpiffeId.parse('spiffe://outage.test/agent/server');
const enforcer = LocalPolicyEnforcer.fromObject({ version: 1, id: 'none', default: 'deny', rules: [] });
const OWNER = 'spiffe://outage.test/agent/client';

const closers: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const close of closers.splice(0)) await close();
});

/** A handler on `store` logging to pino, with `n` tasks running (WORKING, written). */
async function running(store: AwayStore, n: number) {
  const { logger, lines } = pinoLines();
  // Retries at most 40 ms apart: an outage of a few hundred ms sees several of each task's.
  const h = new A2ARequestHandler({ selfId, enforcer, taskStore: store, logger, storeRetryMaxMs: 40 });
  closers.push(() => h.close());
  const ids: string[] = [];
  for (let i = 0; i < n; i++) {
    const rec = await h.manager.create({
      owner: OWNER,
      skill: 's',
      message: { messageId: `m-${i}`, role: 'ROLE_USER', parts: [{ text: 'go' }] },
    });
    ids.push(rec.task.id);
    h.manager.setStatus(rec.task.id, 'TASK_STATE_WORKING');
  }
  await h.manager.flush();
  return { h, ids, lines };
}

describe("running tasks' writes while the store is away", () => {
  it('log one warning per task as the outage begins, none at each retry, and one info line per task when they land again', async () => {
    const store = new AwayStore();
    const { h, ids, lines } = await running(store, 5);
    expect(lines).toEqual([]);

    store.failWith = unreachable;
    for (const id of ids) h.manager.setStatus(id, 'TASK_STATE_WORKING');
    // Every task's write retried a few times over.
    await expect.poll(() => store.failedAppends, { timeout: 3000 }).toBeGreaterThanOrEqual(ids.length * 4);

    const failed = lines.filter((l) => l.msg === WRITE_FAILED);
    expect(failed.map((l) => l.taskId).sort()).toEqual([...ids].sort());
    for (const line of failed) {
      expect(line.level).toBe(WARN);
      expect(line.failures).toBe(1);
      const err = line.err as Record<string, unknown>;
      expect(err.code).toBe('TASK_STORE_UNAVAILABLE');
      expect(err.message).toBe(`task store unavailable: ${REFUSED}`);
      // pino's serializer writes an error without one as ''.
      expect(err.stack ?? '').toBe('');
      expect(JSON.stringify(line).length).toBeLessThan(500);
    }
    expect(lines.filter((l) => l.level >= ERROR)).toEqual([]);

    const attempts = store.failedAppends;
    store.failWith = undefined;
    await expect
      .poll(() => lines.filter((l) => l.msg === WRITE_AGAIN).length, { timeout: 3000 })
      .toBe(ids.length);
    const again = lines.filter((l) => l.msg === WRITE_AGAIN);
    expect(again.map((l) => l.taskId).sort()).toEqual([...ids].sort());
    for (const line of again) {
      expect(line.level).toBe(INFO);
      expect(line.failures).toBeGreaterThanOrEqual(2);
      expect(line.failingMs).toEqual(expect.any(Number));
    }
    // Each task's count is its own, and together they are every attempt that failed.
    expect(again.reduce((sum, l) => sum + (l.failures as number), 0)).toBe(attempts);

    // Written again: nothing more. A second outage is told again, once per task.
    const seen = lines.length;
    for (const id of ids) h.manager.setStatus(id, 'TASK_STATE_WORKING');
    await h.manager.flush();
    expect(lines.slice(seen)).toEqual([]);
    store.failWith = unreachable;
    for (const id of ids) h.manager.setStatus(id, 'TASK_STATE_WORKING');
    await expect
      .poll(() => store.failedAppends, { timeout: 3000 })
      .toBeGreaterThanOrEqual(attempts + ids.length * 3);
    expect(lines.filter((l) => l.msg === WRITE_FAILED)).toHaveLength(ids.length * 2);
    store.failWith = undefined;
    await h.manager.flush();
  });

  it('a write failure that is not the store being away is still an error line with its stack, at each attempt', async () => {
    const store = new AwayStore();
    const { h, ids, lines } = await running(store, 1);
    store.failWith = () => new TypeError('a bug in the store');
    h.manager.setStatus(ids[0] as string, 'TASK_STATE_WORKING');
    await expect.poll(() => store.failedAppends, { timeout: 3000 }).toBeGreaterThanOrEqual(3);
    const failed = lines.filter((l) => l.msg === WRITE_FAILED);
    expect(failed.length).toBeGreaterThanOrEqual(2);
    for (const line of failed) {
      expect(line.level).toBe(ERROR);
      expect(line.taskId).toBe(ids[0]);
      expect((line.err as { stack?: string }).stack).toMatch(/TypeError: a bug in the store/);
    }
    store.failWith = undefined;
    await h.manager.flush();
    expect(lines.filter((l) => l.msg === WRITE_AGAIN)).toEqual([]);
  });
});

describe('requests refused because the store is away', () => {
  let clock = Date.now();
  beforeEach(() => {
    // Each test's lines in a window of their own: the clock jumps past the last one's minute.
    clock += 61_000;
    vi.useFakeTimers({ toFake: ['Date'], now: clock });
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('are a warning without a stack, saying what the store said once, at most 10 a minute', async () => {
    const { logger, lines } = pinoLines();
    for (let i = 0; i < 14; i++) {
      expect(asA2AError(unreachable(), logger)).toMatchObject({ code: 'UNAVAILABLE' });
    }
    expect(lines).toHaveLength(10);
    for (const line of lines) {
      expect(line).toMatchObject({ level: WARN, msg: 'a2a: task store unavailable' });
      const err = line.err as Record<string, unknown>;
      expect(err.message).toBe(`task store unavailable: ${REFUSED}`);
      // pino's serializer writes an error without one as ''.
      expect(err.stack ?? '').toBe('');
      expect(line.suppressed).toBeUndefined();
    }
    // The next minute: the first line says how many were left out.
    vi.setSystemTime(clock + 61_000);
    asA2AError(unreachable(), logger);
    expect(lines).toHaveLength(11);
    expect(lines[10]).toMatchObject({ level: WARN, suppressed: 4 });
  });
});
