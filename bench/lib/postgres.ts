// PostgreSQL for the `pg` scenario: a private cluster (interop/infra.ts, or
// WEAVE_TEST_PG_URL) with one database migrated for Weave's PostgresTaskStore
// and one migrated by the official SDK's own `a2a-db upgrade` for its Kysely
// DatabaseTaskStore — each on its own schema, as each ships it.
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { Kysely, PostgresDialect } from 'kysely';
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
  stop(): Promise<void>;
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
  await admin.query('DROP DATABASE IF EXISTS bench_weave WITH (FORCE)');
  await admin.query('DROP DATABASE IF EXISTS bench_sdk WITH (FORCE)');
  await admin.query('CREATE DATABASE bench_weave');
  await admin.query('CREATE DATABASE bench_sdk');
  await admin.end();
  await migrate({ connectionString: url('bench_weave') });
  const up = spawnSync(a2aDb, ['upgrade', '--url', url('bench_sdk')], { encoding: 'utf8' });
  if (up.status !== 0) throw new Error(`a2a-db upgrade failed: ${up.stderr}${up.stdout}`);
  const pools = new Map<string, pg.Pool>();
  // An idle client whose connection the server ends (a shutdown, an administrator) makes its pool
  // emit 'error'; without a listener that error ends the whole bench process.
  const onIdleError = (err: Error) =>
    console.error(`bench PostgreSQL pool: idle client lost (${err.message})`);
  const sdkPool = new pg.Pool({ connectionString: url('bench_sdk'), max: 10 }).on('error', onIdleError);
  const kysely = new Kysely({ dialect: new PostgresDialect({ pool: sdkPool }) });
  return {
    pool(name) {
      let p = pools.get(name);
      if (!p) {
        p = new pg.Pool({ connectionString: url('bench_weave'), max: 10 }).on('error', onIdleError);
        pools.set(name, p);
      }
      return p;
    },
    sdkStore: new DatabaseTaskStore(kysely),
    async stop() {
      for (const p of pools.values()) await p.end();
      await kysely.destroy();
      await db.stop();
    },
  };
}
