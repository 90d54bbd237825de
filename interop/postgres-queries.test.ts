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
});
