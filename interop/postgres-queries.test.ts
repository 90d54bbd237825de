// The database round trips of one call on the PostgreSQL store, counted on
// a real PostgreSQL: every statement the server sends for a blocking
// SendMessage of a task that answers at once (what callAgent does), so a
// change that adds a round trip to the call path shows here.
import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request } from 'undici';
import { A2AServer } from '@weave/a2a';
import { PostgresTaskStore, migrate } from '@weave/a2a/postgres';
import type { SecureChannel } from '@weave/transport';
import type { MtlsFastifyInstance } from '@weave/transport/server';
import { baseUrl, channel, createPki, mtlsServer, type Pki } from '@weave/test-support';
import { requireComponent, startPostgres, type Postgres } from './infra.js';
import { allowOnly } from './postgres/stream.js';

const available = process.env.WEAVE_TEST_PG_URL !== undefined || requireComponent('postgres') !== undefined;

describe.skipIf(!available)('database round trips per call on PostgreSQL', () => {
  let db: Postgres;
  let pki: Pki;
  let pool: pg.Pool;
  let a2a: A2AServer;
  let app: MtlsFastifyInstance;
  let dispatcher: SecureChannel;
  /** The statements sent through the store's pool: prepared statement name (if any), first words. */
  const sent: Array<{ name: string | undefined; text: string }> = [];
  /** The whole text of each prepared statement the store sent, by name. */
  const prepared = new Map<string, string>();

  beforeAll(async () => {
    db = (await startPostgres()) as Postgres;
    await migrate({ connectionString: db.url });
    pki = await createPki();
    const server = await pki.workload('/agent/pg');
    const client = await pki.workload('/agent/client');
    pool = new pg.Pool({ connectionString: db.url, max: 10 });
    // Counted where they leave: every connection of the store's pool, so a
    // statement sent on a connection checked out for a transaction counts
    // as well as one sent through pool.query (the listening connection
    // sends only LISTEN once).
    pool.on('connect', (client) => {
      const query = client.query.bind(client) as (...args: unknown[]) => unknown;
      client.query = ((...args: unknown[]) => {
        const q = args[0] as pg.QueryConfig | string;
        const c = typeof q === 'string' ? { text: q, name: undefined } : q;
        sent.push({ name: c.name, text: c.text.replace(/\s+/g, ' ').trim().slice(0, 60) });
        if (c.name !== undefined) prepared.set(c.name, c.text);
        return query(...args);
      }) as typeof client.query;
    });
    a2a = new A2AServer({
      card: { name: 'pg agent', description: 'round trips', version: '1.0.0' },
      selfId: server.id,
      enforcer: allowOnly(client.id.toString()),
      heartbeatMs: 0,
      // Leases renewed hourly: no lease tick falls among the counted calls.
      taskStore: new PostgresTaskStore({ pool, leaseTtlMs: 3_600_000 }),
    });
    a2a.registerTaskHandler({ id: 'echo', name: 'echo', description: '', tags: [] }, async (ctx) => {
      return `echo: ${ctx.message.parts[0]?.text ?? ''}`;
    });
    app = mtlsServer(server);
    await app.register(a2a.plugin);
    await app.listen({ port: 0, host: '127.0.0.1' });
    dispatcher = channel(client, server.id);
  });
  afterAll(async () => {
    await a2a?.close();
    await Promise.all([dispatcher?.close(), app?.close()]);
    await pool?.end();
    await pki?.close();
    await db?.stop();
  });

  async function call(text: string): Promise<{ state: string; text: string }> {
    const res = await request(`${baseUrl(app)}/`, {
      method: 'POST',
      dispatcher,
      headers: { 'content-type': 'application/json', 'a2a-version': '1.0' },
      body: JSON.stringify({
        jsonrpc: '2.0',
        id: 1,
        method: 'SendMessage',
        params: { message: { messageId: randomUUID(), role: 'ROLE_USER', parts: [{ text }] } },
      }),
    });
    const body = (await res.body.json()) as {
      result: { task: { status: { state: string }; artifacts?: Array<{ parts: Array<{ text?: string }> }> } };
    };
    const t = body.result.task;
    return { state: t.status.state, text: t.artifacts?.[0]?.parts[0]?.text ?? '' };
  }

  it('a blocking SendMessage of a task that answers at once costs two statements, both prepared', async () => {
    // The first call also starts listening and takes the lease: not part of the steady state.
    await call('warm');
    await a2a.manager.flush();
    const calls = 20;
    sent.length = 0;
    for (let i = 0; i < calls; i++) {
      const r = await call(`hi ${i}`);
      expect(r).toEqual({ state: 'TASK_STATE_COMPLETED', text: `echo: hi ${i}` });
    }
    await a2a.manager.flush();
    const kinds = new Map<string, number>();
    for (const s of sent) {
      const k = `${s.name ?? '(unnamed)'}: ${s.text}`;
      kinds.set(k, (kinds.get(k) ?? 0) + 1);
    }
    console.log(
      `statements per blocking SendMessage: ${(sent.length / calls).toFixed(2)}\n` +
        [...kinds].map(([k, n]) => `  ${(n / calls).toFixed(2)}  ${k}`).join('\n'),
    );
    // One insert of the task with its first event, one append of what the
    // handler did (WORKING, its artifact, COMPLETED: emitted in one turn,
    // written in one append), and no transaction around either.
    expect(sent.length / calls).toBeLessThanOrEqual(2);
    // Both are prepared once per connection, not parsed and planned per call
    // (planning them was most of the database's CPU per call).
    expect(sent.filter((s) => s.name === undefined)).toEqual([]);
  });

  it('once the task table is analyzed, the write statements find task rows by key or TID, never by scanning it', async () => {
    await call('fills the statement cache');
    await a2a.manager.flush();
    const writes = [...prepared].filter(([name]) => /^weave_a2a_(create|append)_/.test(name));
    expect(writes.map(([name]) => name.replace(/_\d+$/, '')).sort()).toEqual([
      'weave_a2a_append',
      'weave_a2a_create',
    ]);
    // A table in service: thousands of finished tasks, analyzed (as autovacuum keeps it).
    await pool.query(
      `INSERT INTO weave_a2a_tasks (id, owner, skill, context_id, state, terminal, task, created_at, updated_at, seq)
       SELECT 'filler-' || g, 'spiffe://filler.test/a', 'echo', 'c', 'TASK_STATE_COMPLETED', true, '{}', g, g, 1
       FROM generate_series(1, 5000) g`,
    );
    await pool.query('ANALYZE');
    const c = await pool.connect();
    try {
      // The generic plan, which is what a connection caches for a prepared statement it runs often.
      await c.query('SET plan_cache_mode = force_generic_plan');
      for (const [name, text] of writes) {
        await c.query(`PREPARE probe AS ${text}`);
        const args = name.startsWith('weave_a2a_create') ? `'[]', 'r', 0, 0` : `'[]', 'r'`;
        const plan = (await c.query<{ 'QUERY PLAN': string }>(`EXPLAIN EXECUTE probe(${args})`)).rows
          .map((r) => r['QUERY PLAN'])
          .join('\n');
        await c.query('DEALLOCATE probe');
        expect(plan, `${name}\n${plan}`).not.toMatch(/Seq Scan on weave_a2a_tasks/);
      }
    } finally {
      await c.query('RESET plan_cache_mode');
      c.release();
      await pool.query(`DELETE FROM weave_a2a_tasks WHERE id LIKE 'filler-%'`);
    }
  });
});
