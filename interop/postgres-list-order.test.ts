// ListTasks order on a real PostgreSQL (A2A v1.0 §3.1.4: "Implementations
// MUST return tasks sorted by their status timestamp time in descending
// order"): over JSON-RPC on an A2AServer backed by PostgresTaskStore, the
// query's plan, and migration 010 on tasks stored before it.
import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request } from 'undici';
import { A2AServer, type Task } from '@weave/a2a';
import { PostgresTaskStore, loadMigrations, migrate } from '@weave/a2a/postgres';
import type { SecureChannel } from '@weave/transport';
import type { MtlsFastifyInstance } from '@weave/transport/server';
import { baseUrl, channel, createPki, mtlsServer, type Pki, type Workload } from '@weave/test-support';
import { requireComponent, startPostgres, type Postgres } from './infra.js';
import { allowOnly } from './postgres/stream.js';

const available = process.env.WEAVE_TEST_PG_URL !== undefined || requireComponent('postgres') !== undefined;

interface ListResult {
  tasks: Task[];
  nextPageToken: string;
  totalSize: number;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe.skipIf(!available)('ListTasks order on PostgreSQL', () => {
  let db: Postgres;
  let pki: Pki;
  let client: Workload;
  let pool: pg.Pool;
  let a2a: A2AServer;
  let store: PostgresTaskStore;
  let app: MtlsFastifyInstance;
  let dispatcher: SecureChannel;
  /** Release of each `slow` task whose handler waits, by task id. */
  const waiting = new Map<string, () => void>();
  /** The text and values of the last ListTasks page query the store sent. */
  let lastList: { text: string; values: unknown[] } | undefined;

  beforeAll(async () => {
    db = (await startPostgres()) as Postgres;
    await migrate({ connectionString: db.url });
    pki = await createPki();
    const server = await pki.workload('/agent/pg');
    client = await pki.workload('/agent/client');
    pool = new pg.Pool({ connectionString: db.url, max: 10 });
    pool.on('connect', (c) => {
      const query = c.query.bind(c) as (...args: unknown[]) => unknown;
      c.query = ((...args: unknown[]) => {
        const q = args[0] as pg.QueryConfig | string;
        if (typeof q !== 'string' && q.text.includes('WITH page AS')) {
          lastList = { text: q.text, values: q.values ?? [] };
        }
        return query(...args);
      }) as typeof c.query;
    });
    a2a = new A2AServer({
      card: { name: 'pg agent', description: 'list order', version: '1.0.0' },
      selfId: server.id,
      enforcer: allowOnly(client.id.toString()),
      heartbeatMs: 0,
      taskStore: (store = new PostgresTaskStore({ pool })),
    });
    a2a.registerTaskHandler({ id: 'echo', name: 'echo', description: '', tags: [] }, (ctx) => {
      return `echo: ${ctx.message.parts[0]?.text ?? ''}`;
    });
    a2a.registerTaskHandler({ id: 'slow', name: 'slow', description: '', tags: [] }, async (ctx) => {
      await new Promise<void>((resolve) => {
        waiting.set(ctx.taskId, resolve);
        ctx.signal.addEventListener('abort', () => resolve());
      });
      return ctx.signal.aborted ? undefined : 'done';
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

  async function rpc<T>(method: string, params: unknown): Promise<T> {
    const res = await request(`${baseUrl(app)}/`, {
      method: 'POST',
      dispatcher,
      headers: { 'content-type': 'application/json', 'a2a-version': '1.0' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method, params }),
    });
    const body = (await res.body.json()) as { result?: T; error?: { code: number; message: string } };
    if (body.error) throw new Error(`${method}: ${body.error.code} ${body.error.message}`);
    return body.result as T;
  }

  const list = (params: Record<string, unknown>) => rpc<ListResult>('ListTasks', params);

  /** Sends `skill` a message in `contextId`; a `slow` task is returned once its handler waits (WORKING). */
  async function send(skill: 'echo' | 'slow', contextId: string): Promise<Task> {
    const { task } = await rpc<{ task: Task }>('SendMessage', {
      message: {
        messageId: randomUUID(),
        role: 'ROLE_USER',
        parts: [{ text: skill }],
        contextId,
        metadata: { skill },
      },
      configuration: { returnImmediately: skill === 'slow' },
    });
    for (let i = 0; i < 400 && skill === 'slow' && !waiting.has(task.id); i++) await sleep(5);
    // Written through: the list reads the table.
    await a2a.manager.flush();
    // Status timestamps are in ms: the next step's is a later one.
    await sleep(5);
    return task;
  }

  async function settled(id: string, state: string): Promise<void> {
    for (let i = 0; i < 400; i++) {
      await a2a.manager.flush();
      if ((await rpc<Task>('GetTask', { id })).status.state === state) return;
      await sleep(5);
    }
    throw new Error(`task ${id} never reached ${state}`);
  }

  it('lists a task canceled after another completed first (A created, B completed, A canceled)', async () => {
    const ctx = `ctx-${randomUUID()}`;
    const a = await send('slow', ctx);
    const b = await send('echo', ctx);
    await settled(b.id, 'TASK_STATE_COMPLETED');
    expect((await rpc<Task>('CancelTask', { id: a.id })).status.state).toBe('TASK_STATE_CANCELED');
    await settled(a.id, 'TASK_STATE_CANCELED');
    const page = await list({ contextId: ctx });
    expect(page.tasks.map((t) => [t.id, t.status.state])).toEqual([
      [a.id, 'TASK_STATE_CANCELED'],
      [b.id, 'TASK_STATE_COMPLETED'],
    ]);
    // The order is the one of the timestamps the client reads; so is the filter, its bound included.
    const [ta, tb] = page.tasks.map((t) => Date.parse(t.status.timestamp ?? ''));
    expect(ta).toBeGreaterThan(tb as number);
    const since = await list({ contextId: ctx, statusTimestampAfter: page.tasks[1]?.status.timestamp });
    expect(since.tasks.map((t) => t.id)).toEqual([a.id, b.id]);
    const { rows } = await pool.query<{ id: string; status_at: string }>(
      'SELECT id, status_at FROM weave_a2a_tasks WHERE id = ANY($1) ORDER BY status_at DESC',
      [[a.id, b.id]],
    );
    expect(rows.map((r) => [r.id, Number(r.status_at)])).toEqual([
      [a.id, ta],
      [b.id, tb],
    ]);
  });

  it('pages on: a task whose status changes meanwhile moves ahead, into no later page; none is listed twice', async () => {
    const ctx = `ctx-${randomUUID()}`;
    const s: Task[] = [];
    for (let i = 0; i < 5; i++) s.push(await send('slow', ctx));
    const id = (i: number) => (s[i] as Task).id;
    const p1 = await list({ contextId: ctx, pageSize: 2 });
    expect(p1.tasks.map((t) => t.id)).toEqual([id(4), id(3)]);
    expect(p1.totalSize).toBe(5);
    // Task 1, not listed yet, completes while the client pages.
    waiting.get(id(1))?.();
    await settled(id(1), 'TASK_STATE_COMPLETED');
    const p2 = await list({ contextId: ctx, pageSize: 2, pageToken: p1.nextPageToken });
    expect(p2.tasks.map((t) => t.id)).toEqual([id(2), id(0)]);
    expect(p2.nextPageToken).toBe('');
    expect((await list({ contextId: ctx, pageSize: 10 })).tasks.map((t) => t.id)).toEqual([
      id(1),
      id(4),
      id(3),
      id(2),
      id(0),
    ]);
    for (const t of [0, 2, 3, 4]) await rpc<Task>('CancelTask', { id: id(t) });
  });

  it('reads a page along the status index and stops at its end, in a table of thousands of the caller’s tasks', async () => {
    const owner = client.id.toString();
    await pool.query(
      `INSERT INTO weave_a2a_tasks (id, owner, skill, context_id, state, terminal, task, created_at, updated_at, status_at, seq)
       SELECT 'filler-' || g, $1, 'echo', 'filler', 'TASK_STATE_WORKING', false, '{}', g, g, g, 1
       FROM generate_series(1, 5000) g`,
      [owner],
    );
    try {
      await pool.query('ANALYZE weave_a2a_tasks');
      const p1 = await list({ pageSize: 3 });
      const p2 = await list({ pageSize: 3, pageToken: p1.nextPageToken });
      expect(p2.tasks).toHaveLength(3);
      const throughServer = lastList as { text: string; values: unknown[] };
      // The store's own cursor, a position (status timestamp, id).
      const last = p1.tasks[2] as Task;
      const fromPosition = await store.list({
        owner,
        limit: 4,
        after: { statusAt: Date.parse(last.status.timestamp ?? ''), id: last.id },
      });
      expect(fromPosition.records.slice(0, 3).map((r) => r.task.id)).toEqual(p2.tasks.map((t) => t.id));
      for (const q of [throughServer, lastList as { text: string; values: unknown[] }]) {
        const plan = (await pool.query<{ 'QUERY PLAN': string }>(`EXPLAIN ${q.text}`, q.values)).rows
          .map((r) => r['QUERY PLAN'])
          .join('\n');
        // The page starts at the cursor's position in the index and is read in its order: no
        // sort below the top (which orders the page's few rows). Only the total counts them all.
        const lines = plan.split('\n');
        const scan = lines.findIndex((l) => /Index Scan using weave_a2a_tasks_tenant_owner_status/.test(l));
        expect(scan, plan).toBeGreaterThan(0);
        expect(lines[scan + 1], plan).toMatch(/Index Cond: .*ROW\(status_at, .*\) < ROW\(/);
        expect(
          lines.filter((l) => /->\s+(Incremental )?Sort/.test(l)),
          plan,
        ).toEqual([]);
      }
    } finally {
      await pool.query(`DELETE FROM weave_a2a_tasks WHERE id LIKE 'filler-%'`);
    }
  });

  it('migration 010 gives tasks stored before it their status timestamp, and the list their order', async () => {
    const name = `pre010_${randomUUID().replaceAll('-', '')}`;
    await pool.query(`CREATE DATABASE ${name}`);
    const url = new URL(db.url);
    url.pathname = `/${name}`;
    const fresh = new pg.Pool({ connectionString: url.toString() });
    const store = new PostgresTaskStore({ pool: fresh });
    try {
      // The schema as a release before 010 left it.
      await fresh.query(
        `CREATE TABLE weave_a2a_schema_migrations (
           version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`,
      );
      const before = (await loadMigrations()).filter((m) => m.version < 10);
      for (const m of before) {
        await fresh.query(m.sql);
        await fresh.query('INSERT INTO weave_a2a_schema_migrations (version, name) VALUES ($1, $2)', [
          m.version,
          m.name,
        ]);
      }
      const owner = 'spiffe://list-order.test/old';
      const t0 = Date.now() - 60_000;
      // Created first, last status latest; created last, status earlier; no status timestamp (its last change).
      const rows = [
        { id: 'old-a', created: t0, updated: t0 + 900, status: new Date(t0 + 945).toISOString() },
        { id: 'old-b', created: t0 + 10, updated: t0 + 890, status: new Date(t0 + 890).toISOString() },
        { id: 'old-c', created: t0 + 20, updated: t0 + 500, status: undefined },
      ];
      for (const r of rows) {
        const task = {
          id: r.id,
          contextId: 'c',
          status: { state: 'TASK_STATE_WORKING', timestamp: r.status },
        };
        await fresh.query(
          `INSERT INTO weave_a2a_tasks (id, owner, skill, context_id, state, terminal, task, created_at, updated_at, seq)
           VALUES ($1, $2, 'echo', 'c', 'TASK_STATE_WORKING', false, $3, $4, $5, 1)`,
          [r.id, owner, JSON.stringify(task), r.created, r.updated],
        );
      }
      // 010 and what came after it (011: status times of older replicas' later writes).
      expect((await migrate(fresh)).applied).toContain(10);
      const { rows: stored } = await fresh.query<{ id: string; status_at: string }>(
        'SELECT id, status_at FROM weave_a2a_tasks ORDER BY id',
      );
      expect(stored.map((r) => [r.id, Number(r.status_at)])).toEqual([
        ['old-a', t0 + 945],
        ['old-b', t0 + 890],
        ['old-c', t0 + 500],
      ]);
      const page = await store.list({ owner, limit: 10 });
      expect(page.records.map((r) => r.task.id)).toEqual(['old-a', 'old-b', 'old-c']);
      // A cursor of creation (a page token issued before): after its task's place now.
      const next = await store.list({ owner, limit: 10, after: { createdAt: t0, id: 'old-a' } });
      expect(next.records.map((r) => r.task.id)).toEqual(['old-b', 'old-c']);
    } finally {
      await store.close();
      await fresh.end();
      await pool.query(`DROP DATABASE ${name}`);
    }
  });
});
