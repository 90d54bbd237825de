// A SecureAgent whose config names a PostgreSQL task store (`store.postgres`):
// it refuses to start without the URL or on a schema behind the code, and
// otherwise keeps its tasks in the real database, leased to it.
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { LocalPolicyEnforcer } from '@weave/authz';
import { SecureAgent, WeaveClient } from '@weave/agent';
import { migrate } from '@weave/a2a/postgres';
import { ID, POLICY, startWorld, testLogger, type World } from '../packages/agent/test/helpers.js';
import { freePort, requireComponent, startPostgres, type Postgres } from './infra.js';

const available = process.env.WEAVE_TEST_PG_URL !== undefined || requireComponent('postgres') !== undefined;

describe.skipIf(!available)('SecureAgent with store.postgres', () => {
  let db: Postgres;
  let world: World;
  let admin: pg.Pool;
  const stop: Array<() => Promise<unknown>> = [];

  function agent(env: Record<string, string>): SecureAgent {
    const a = new SecureAgent({
      config: {
        name: 'search',
        spiffeId: ID.search,
        identity: { workloadApi: { socket: world.dev.address('search') } },
        authz: { policyFile: world.policyFile },
        store: { postgres: { urlEnv: 'SEARCH_DB_URL', leaseTtlMs: 5_000 } },
      },
      logger: testLogger(),
      env,
    }).capability('search', { input: z.object({ q: z.string() }) }, ({ q }) => ({ found: q }));
    stop.push(() => a.stop({ drainTimeoutMs: 100 }));
    return a;
  }

  beforeAll(async () => {
    db = (await startPostgres()) as Postgres;
    await migrate({ connectionString: db.url });
    admin = new pg.Pool({ connectionString: db.url });
    admin.on('error', () => undefined); // a connection still closing when the cluster stops (57P01)
    world = await startWorld();
  });
  afterAll(async () => {
    for (const s of stop.reverse()) await s();
    await admin?.end();
    await world?.close();
    await db?.stop();
  });

  it('refuses to start without the database URL in its environment, or on a database not migrated', async () => {
    await expect(agent({}).start()).rejects.toMatchObject({
      code: 'AGENT_CONFIG_INVALID',
      message: expect.stringContaining('SEARCH_DB_URL'),
    });
    await admin.query('CREATE DATABASE unmigrated');
    const url = new URL(db.url);
    url.pathname = '/unmigrated';
    const outdated = agent({ SEARCH_DB_URL: url.toString() });
    await expect(outdated.start()).rejects.toMatchObject({
      code: 'AGENT_STORE_SCHEMA_OUTDATED',
      message: expect.stringContaining('weave db migrate'),
    });
    expect(outdated.state).toBe('new');
    // A database that cannot be reached is no config error: the same config starts once it is back.
    const away = new URL(db.url);
    away.port = String(await freePort());
    const unreachable = agent({ SEARCH_DB_URL: away.toString() });
    await expect(unreachable.start()).rejects.toMatchObject({
      code: 'AGENT_STORE_UNAVAILABLE',
      message: expect.stringContaining('the task database cannot be reached: '),
    });
    expect(unreachable.state).toBe('new');
  });

  it('keeps its tasks in PostgreSQL, recorded as run by this replica', async () => {
    const search = agent({ SEARCH_DB_URL: db.url });
    const { url } = await search.start();
    const client = new WeaveClient({
      identity: await world.provider('orchestrator'),
      enforcer: LocalPolicyEnforcer.fromString(POLICY, { logger: testLogger() }),
      peers: [{ id: ID.search, url }],
      logger: testLogger(),
    });
    stop.push(() => client.close());
    await expect(client.callAgent(ID.search, 'search', { q: 'weave' })).resolves.toEqual({ found: 'weave' });
    const rows = await admin.query<{ state: string; runner: string; alive: boolean }>(
      `SELECT t.state, t.runner, r.expires_at > (extract(epoch from clock_timestamp()) * 1000) AS alive
         FROM weave_a2a_tasks t JOIN weave_a2a_replicas r ON r.id = t.runner WHERE t.skill = 'search'`,
    );
    expect(rows.rows).toHaveLength(1);
    expect(rows.rows[0]).toMatchObject({ state: 'TASK_STATE_COMPLETED', alive: true });
  });
});
