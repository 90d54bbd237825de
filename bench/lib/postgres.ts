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
import { migrate } from '@weave/a2a/postgres';
import { startPostgres } from '../../interop/infra.js';

// The SDK's own migration program, installed with @a2a-js/sdk (a dependency of the bench package).
const a2aDb = fileURLToPath(new URL('../node_modules/.bin/a2a-db', import.meta.url));

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
  usage(database: 'weave' | 'sdk'): Promise<{ cpuUs: number; tasks: number } | undefined>;
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
  const admin = new pg.Pool({ connectionString: db.url, max: 1 });
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
  // An idle client whose connection the server ends (a shutdown, an administrator) makes its pool
  // emit 'error'; without a listener that error ends the whole bench process.
  const onIdleError = (err: Error) =>
    console.error(`bench PostgreSQL pool: idle client lost (${err.message})`);
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
      const cpuUs = await backendCpuUs(database === 'weave' ? 'bench_weave' : 'bench_sdk');
      const on = database === 'weave' ? pool('weave') : sdkPool;
      // The SDK's DatabaseTaskStore keeps its tasks in `tasks` (its migration's default name).
      const table = database === 'weave' ? 'weave_a2a_tasks' : 'tasks';
      const n = await on.query<{ n: string }>(`SELECT count(*)::text AS n FROM ${table}`);
      return { cpuUs, tasks: Number(n.rows[0]?.n ?? 0) };
    },
    async stop() {
      await admin.end();
      for (const p of pools.values()) await p.end();
      await kysely.destroy();
      await db.stop();
    },
  };
}
