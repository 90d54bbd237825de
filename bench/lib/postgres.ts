// PostgreSQL for the `pg` scenario: a private cluster (interop/infra.ts, or
// WEAVE_TEST_PG_URL) with one database migrated for Weave's PostgresTaskStore
// and one migrated by the official SDK's own `a2a-db upgrade` for its Kysely
// DatabaseTaskStore — each on its own schema, as each ships it.
import { spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { CompiledQuery, Kysely, PostgresDialect } from 'kysely';
import { DatabaseTaskStore } from '@a2a-js/sdk/server/database';
import {
  InMemoryTaskStore,
  isTerminal,
  type StoredEvent,
  type Task,
  type TaskRecord,
  type TaskStore,
} from '@weave/a2a';
import { migrate } from '@weave/a2a/postgres';
import { startPostgres } from '../../interop/infra.js';

// The SDK's own migration program, installed with @a2a-js/sdk (a dependency of the bench package).
const a2aDb = fileURLToPath(new URL('../node_modules/.bin/a2a-db', import.meta.url));

/** The CPU time (µs) a database's server processes have used so far, and the tasks stored in it. */
export interface DbUsage {
  readonly cpuUs: number;
  readonly tasks: number;
}

/**
 * The database's CPU per call between two {@link BenchPostgres.usage}
 * readings (each call stores one task), as a row note; undefined when either
 * reading is missing or no task was stored between them.
 */
export function dbCpuNote(before: DbUsage | undefined, after: DbUsage | undefined): string | undefined {
  if (!before || !after || after.tasks <= before.tasks) return undefined;
  return `db CPU/call ${((after.cpuUs - before.cpuUs) / (after.tasks - before.tasks)).toFixed(0)} us`;
}

export interface BenchPostgres {
  /** A pool on the Weave database (one per name, made on first use). */
  pool(name: string): pg.Pool;
  /** The SDK's DatabaseTaskStore on its own database. */
  readonly sdkStore: DatabaseTaskStore;
  /**
   * The CPU time (µs) the server processes of one database's connections
   * have used so far, and the tasks stored in it: read before and after a
   * case, the differences are the database's CPU per task (one per call).
   * Undefined where /proc cannot be read (not Linux).
   */
  usage(database: 'weave' | 'sdk' | 'least'): Promise<DbUsage | undefined>;
  /**
   * The least a durable task store can write per call, as a {@link TaskStore}
   * (see {@link LeastDurableStore}), on the Weave database (`usage('least')`
   * counts its tasks).
   */
  leastStore(): Promise<TaskStore>;
  /** ANALYZE on both databases (their tables' statistics, as autovacuum would keep them). */
  analyze(): Promise<void>;
  /**
   * The least a durable task store makes the database do per call: one
   * INSERT of the task before it runs and one UPDATE of it before the answer
   * (`bytes` of JSON each), one statement each, nothing else (no events
   * table, no index but the key, no lease, no notice, no batching), `calls`
   * of them, `concurrency` in flight, on the Weave database. What the
   * database's CPU per call costs here, beside what a call costs Weave.
   */
  floor(
    calls: number,
    concurrency: number,
    bytes: number,
  ): Promise<{ rate: number; dbCpuUs: number } | undefined>;
  stop(): Promise<void>;
}

/** Clock ticks per second of /proc/<pid>/stat's utime and stime (USER_HZ, 100 on Linux). */
const USER_HZ = 100;

/** utime + stime of process `pid` in µs (0 when it is gone). */
async function processCpuUs(pid: number): Promise<number> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name, which may hold spaces: state is field 3, utime 14, stime 15.
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return ((Number(f[11]) + Number(f[12])) * 1_000_000) / USER_HZ;
  } catch {
    return 0;
  }
}

/** Undefined when PostgreSQL is not installed (interop/infra.ts says so loudly, and throws under CI=true). */
export async function startBenchPostgres(): Promise<BenchPostgres | undefined> {
  const db = await startPostgres();
  if (!db) return undefined;
  const url = (name: string) => {
    const u = new URL(db.url);
    u.pathname = `/${name}`;
    return u.toString();
  };
  // An idle client whose connection the server ends (a shutdown, an administrator) makes its pool
  // emit 'error'; without a listener that error ends the whole bench process (every pool here
  // has one, the admin's too). A pool's end() resolves before its clients' connections have
  // closed, so the server's own shutdown in stop() still meets some of them: expected then.
  let stopping = false;
  const onIdleError = (err: Error) => {
    if (!stopping) console.error(`bench PostgreSQL pool: idle client lost (${err.message})`);
  };
  const admin = new pg.Pool({ connectionString: db.url, max: 1 }).on('error', onIdleError);
  const linux = await readFile('/proc/self/stat', 'utf8').then(
    () => true,
    () => false,
  );
  await admin.query('DROP DATABASE IF EXISTS bench_weave WITH (FORCE)');
  await admin.query('DROP DATABASE IF EXISTS bench_sdk WITH (FORCE)');
  await admin.query('CREATE DATABASE bench_weave');
  await admin.query('CREATE DATABASE bench_sdk');
  await migrate({ connectionString: url('bench_weave') });
  const up = spawnSync(a2aDb, ['upgrade', '--url', url('bench_sdk')], { encoding: 'utf8' });
  if (up.status !== 0) throw new Error(`a2a-db upgrade failed: ${up.stderr}${up.stdout}`);
  const pools = new Map<string, pg.Pool>();
  // idleTimeoutMillis 0: connections (and the server processes whose CPU `usage` reads) live
  // through the run; one that ended would take its CPU time with it.
  const sdkPool = new pg.Pool({ connectionString: url('bench_sdk'), max: 10, idleTimeoutMillis: 0 }).on(
    'error',
    onIdleError,
  );
  const kysely = new Kysely({ dialect: new PostgresDialect({ pool: sdkPool }) });
  const pool = (name: string): pg.Pool => {
    let p = pools.get(name);
    if (!p) {
      p = new pg.Pool({ connectionString: url('bench_weave'), max: 10, idleTimeoutMillis: 0 }).on(
        'error',
        onIdleError,
      );
      pools.set(name, p);
    }
    return p;
  };
  const backendCpuUs = async (name: string): Promise<number> => {
    const pids = await admin.query<{ pid: number }>('SELECT pid FROM pg_stat_activity WHERE datname = $1', [
      name,
    ]);
    let cpuUs = 0;
    for (const { pid } of pids.rows) cpuUs += await processCpuUs(pid);
    return cpuUs;
  };
  return {
    pool,
    sdkStore: new DatabaseTaskStore(kysely),
    async analyze() {
      await pool('weave').query('ANALYZE');
      await kysely.executeQuery(CompiledQuery.raw('ANALYZE'));
    },
    async leastStore() {
      const p = pool('least');
      await p.query(
        'CREATE TABLE IF NOT EXISTS bench_least (id text PRIMARY KEY, state text NOT NULL, task json NOT NULL)',
      );
      return new LeastDurableStore(p);
    },
    async floor(calls, concurrency, bytes) {
      if (!linux) return undefined;
      const p = pool('floor');
      await p.query(
        'CREATE TABLE IF NOT EXISTS bench_floor (id text PRIMARY KEY, state text NOT NULL, body json NOT NULL)',
      );
      const body = JSON.stringify({ text: 'x'.repeat(bytes) });
      const one = async () => {
        const id = randomUUID();
        await p.query({
          name: 'floor_insert',
          text: 'INSERT INTO bench_floor VALUES ($1, $2, $3)',
          values: [id, 'WORKING', body],
        });
        await p.query({
          name: 'floor_update',
          text: 'UPDATE bench_floor SET state = $2, body = $3 WHERE id = $1',
          values: [id, 'COMPLETED', body],
        });
      };
      // Connections (and their server processes) open and warm before the clock starts.
      await Promise.all(Array.from({ length: concurrency }, one));
      const cpu0 = await backendCpuUs('bench_weave');
      const t0 = performance.now();
      let left = calls;
      await Promise.all(
        Array.from({ length: concurrency }, async () => {
          while (left-- > 0) await one();
        }),
      );
      const ms = performance.now() - t0;
      const dbCpuUs = ((await backendCpuUs('bench_weave')) - cpu0) / calls;
      return { rate: (calls * 1000) / ms, dbCpuUs };
    },
    async usage(database) {
      if (!linux) return undefined;
      const cpuUs = await backendCpuUs(database === 'sdk' ? 'bench_sdk' : 'bench_weave');
      const on = database === 'sdk' ? sdkPool : pool('weave');
      // The SDK's DatabaseTaskStore keeps its tasks in `tasks` (its migration's default name).
      const table = { weave: 'weave_a2a_tasks', sdk: 'tasks', least: 'bench_least' }[database];
      const n = await on.query<{ n: string }>(`SELECT count(*)::text AS n FROM ${table}`);
      return { cpuUs, tasks: Number(n.rows[0]?.n ?? 0) };
    },
    async stop() {
      stopping = true;
      await admin.end();
      for (const p of pools.values()) await p.end();
      await kysely.destroy();
      await db.stop();
    },
  };
}

/**
 * Sends the rows of concurrent calls as one statement (`sql` takes three
 * parallel arrays), one statement in flight at a time: group commit, as
 * PostgresTaskStore sends its writes.
 */
function groupWriter(
  pool: pg.Pool,
  name: string,
  sql: string,
): (row: [string, string, string]) => Promise<void> {
  let queue: Array<{ row: [string, string, string]; done: (err?: unknown) => void }> = [];
  let busy = false;
  const next = (): void => {
    if (busy || queue.length === 0) return;
    const batch = queue;
    queue = [];
    busy = true;
    const values = [0, 1, 2].map((k) => batch.map((q) => q.row[k]));
    pool
      .query({ name, text: sql, values })
      .then(
        () => batch.forEach((q) => q.done()),
        (err: unknown) => batch.forEach((q) => q.done(err ?? new Error('query failed'))),
      )
      .finally(() => {
        busy = false;
        next();
      });
  };
  return (row) =>
    new Promise<void>((resolve, reject) => {
      queue.push({ row, done: (err) => (err === undefined ? resolve() : reject(err)) });
      next();
    });
}

/**
 * The least database work of a durable task store, under Weave's in-memory
 * store: the task inserted before it runs (so a database that is down
 * refuses the call before the handler runs) and updated when it finishes
 * (so what the caller is answered is stored first), each as one row of JSON,
 * sent with those of concurrent calls as one statement. Nothing else: no
 * event rows (no stream resumable on another replica), no history or
 * artifact rows, no lease, no byte bounds, no notice; every read is
 * answered from memory. What a call costs through it is the ceiling of any
 * store that keeps the promises, on this machine.
 */
class LeastDurableStore extends InMemoryTaskStore {
  readonly #insert: (row: [string, string, string]) => Promise<void>;
  readonly #update: (row: [string, string, string]) => Promise<void>;

  constructor(pool: pg.Pool) {
    super();
    this.#insert = groupWriter(
      pool,
      'least_insert',
      'INSERT INTO bench_least SELECT * FROM unnest($1::text[], $2::text[], $3::json[])',
    );
    this.#update = groupWriter(
      pool,
      'least_update',
      'UPDATE bench_least b SET state = u.state, task = u.task FROM unnest($1::text[], $2::text[], $3::json[]) AS u(id, state, task) WHERE b.id = u.id',
    );
  }

  override async create(record: TaskRecord, first: StoredEvent): Promise<void> {
    const t = record.task;
    await this.#insert([t.id, t.status.state, JSON.stringify(t)]);
    return super.create(record, first);
  }

  override async append(
    id: string,
    task: Task,
    events: readonly StoredEvent[],
    updatedAt: number,
  ): Promise<void> {
    if (isTerminal(task.status.state)) await this.#update([id, task.status.state, JSON.stringify(task)]);
    return super.append(id, task, events, updatedAt);
  }
}
