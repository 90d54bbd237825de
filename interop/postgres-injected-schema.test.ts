// A PostgresTaskStore given to SecureAgent as `taskStore` (docs/production.md
// §4) has its schema checked at start() as `store.postgres` has: on a database
// behind the code the start is refused, naming `weave db migrate`, instead of
// an agent that says it is ready and answers every call with a bare 500.
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { SecureAgent } from '@weave/agent';
import { PostgresTaskStore, loadMigrations, migrate, schemaVersion } from '@weave/a2a/postgres';
import { ID, startWorld, testLogger, type World } from '../packages/agent/test/helpers.js';
import { requireComponent, startPostgres, type Postgres } from './infra.js';

const available = process.env.WEAVE_TEST_PG_URL !== undefined || requireComponent('postgres') !== undefined;

describe.skipIf(!available)('SecureAgent with an injected PostgresTaskStore', () => {
  let db: Postgres;
  let world: World;
  let admin: pg.Pool;
  let latest: number;
  const stop: Array<() => Promise<unknown>> = [];

  /** The URL of a new database on the server (`name`). */
  async function database(name: string): Promise<string> {
    await admin.query(`CREATE DATABASE ${name}`);
    const url = new URL(db.url);
    url.pathname = `/${name}`;
    return url.toString();
  }

  function agent(taskStore: PostgresTaskStore): SecureAgent {
    const a = new SecureAgent({
      config: {
        name: 'search',
        spiffeId: ID.search,
        identity: { workloadApi: { socket: world.dev.address('search') } },
        authz: { policyFile: world.policyFile },
      },
      taskStore,
      logger: testLogger(),
    }).capability('search', { input: z.object({ q: z.string() }) }, ({ q }) => ({ found: q }));
    stop.push(() => a.stop({ drainTimeoutMs: 100 }));
    return a;
  }

  function store(url: string): PostgresTaskStore {
    const s = new PostgresTaskStore({ connectionString: url });
    stop.push(() => s.close());
    return s;
  }

  beforeAll(async () => {
    db = (await startPostgres()) as Postgres;
    admin = new pg.Pool({ connectionString: db.url });
    admin.on('error', () => undefined); // a connection still closing when the cluster stops (57P01)
    latest = (await loadMigrations()).at(-1)?.version ?? 0;
    world = await startWorld();
  });
  afterAll(async () => {
    for (const s of stop.reverse()) await s();
    await admin?.end();
    await world?.close();
    await db?.stop();
  });

  it('refuses to start on a database one migration behind, leaves the store open, and starts once migrated', async () => {
    // A database as an older Weave's `weave db migrate` left it: every migration but the last applied.
    const url = await database('older');
    const older = new pg.Client({ connectionString: url });
    await older.connect();
    try {
      await older.query(
        `CREATE TABLE weave_a2a_schema_migrations (
           version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`,
      );
      for (const m of (await loadMigrations()).slice(0, -1)) {
        await older.query(m.sql);
        await older.query('INSERT INTO weave_a2a_schema_migrations (version, name) VALUES ($1, $2)', [
          m.version,
          m.name,
        ]);
      }
    } finally {
      await older.end();
    }
    const taskStore = store(url);
    expect(await schemaVersion(taskStore.pool)).toBe(latest - 1);

    const a = agent(taskStore);
    await expect(a.start()).rejects.toMatchObject({
      code: 'AGENT_STORE_SCHEMA_OUTDATED',
      message: `the task database is at schema version ${latest - 1}, this Weave needs ${latest}: run \`weave db migrate\``,
    });
    expect(a.state).toBe('new');
    // Lent, not the agent's to close: still usable, and a retry after the migration starts.
    await migrate(taskStore.pool);
    const { url: served } = await a.start();
    expect(served).toMatch(/^https:\/\//);
    expect(a.notReadyReason()).toBeUndefined();
  });

  it('refuses a database never migrated', async () => {
    const taskStore = store(await database('never'));
    await expect(agent(taskStore).start()).rejects.toMatchObject({
      code: 'AGENT_STORE_SCHEMA_OUTDATED',
      message: `the task database is at schema version 0, this Weave needs ${latest}: run \`weave db migrate\``,
    });
  });

  it('starts on a database at this version', async () => {
    const url = await database('current');
    await migrate({ connectionString: url });
    const a = agent(store(url));
    await a.start();
    expect(a.notReadyReason()).toBeUndefined();
  });
});
