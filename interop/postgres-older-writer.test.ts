// A replica older than migration 010 writing during a rolling upgrade (the
// database migrated first, the old version still serving until replaced),
// on a real PostgreSQL: its writes do not set status_at, which migration
// 011 computes for them, so ListTasks' statusTimestampAfter lists their
// tasks on every replica. The older replica is its statements: the INSERT
// and UPDATE of the task row as 04f5ff6 (schema 9) issued them, every
// column but status_at. And a store on a database behind the code fails
// with an error that says to migrate, not a bare internal error.
import { randomUUID } from 'node:crypto';
import { Writable } from 'node:stream';
import pg from 'pg';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request } from 'undici';
import { A2AServer, TaskManager, statusTime, type Task, type TaskRecord, type TaskState } from '@weave/a2a';
import { PostgresStoreError, PostgresTaskStore, loadMigrations, migrate } from '@weave/a2a/postgres';
import { TRUST_DOMAIN, baseUrl, channel, createPki, type Pki, type Workload } from '@weave/test-support';
import { authorizeMemberOf } from '@weave/identity';
import { createMtlsServer } from '@weave/transport/server';
import { requireComponent, startPostgres, type Postgres } from './infra.js';
import { allowOnly } from './postgres/stream.js';

const available = process.env.WEAVE_TEST_PG_URL !== undefined || requireComponent('postgres') !== undefined;

/** The task row as a replica of schema 9 created it (its CREATE_SQL's INSERT): no status_at. */
const OLD_INSERT = `INSERT INTO weave_a2a_tasks (id, owner, skill, context_id, state, terminal, task, created_at, updated_at, seq, runner, tenant, counted, runner_gen)
  VALUES ($1, $2, 'echo', 'ctx', $3, $4, $5::json, $6, $6, 1, NULL, '', 0, NULL)
  ON CONFLICT (id) DO NOTHING`;

/**
 * The task row as a replica of schema 9 appended to it (its APPEND_SQL's
 * UPDATE, the same SET list): no status_at. (Its recount of a finishing
 * task's bytes is left out: `counted` is not what is tested here.)
 */
const OLD_UPDATE = `UPDATE weave_a2a_tasks t SET task = $2::json, state = $3, terminal = $4, updated_at = $5,
    seq = t.seq + 1, counted = t.counted
  WHERE t.id = $1`;

const TERMINAL = new Set([
  'TASK_STATE_COMPLETED',
  'TASK_STATE_FAILED',
  'TASK_STATE_CANCELED',
  'TASK_STATE_REJECTED',
]);

/** A task as stored in its row (no history, no artifacts): `timestamp` null for a status without one. */
function task(id: string, state: TaskState, timestamp: string | null): Task {
  return {
    id,
    contextId: 'ctx',
    status: timestamp === null ? { state } : { state, timestamp },
  };
}

describe.skipIf(!available)('a replica older than migration 010 writing on a migrated database', () => {
  let db: Postgres;
  let pool: pg.Pool;
  let store: PostgresTaskStore;
  let pki: Pki;
  let server: Workload;
  let client: Workload;
  /** Closed after all, last first. */
  const opened: { close(): Promise<unknown> }[] = [];

  beforeAll(async () => {
    db = (await startPostgres()) as Postgres;
    pool = new pg.Pool({ connectionString: db.url, max: 4 });
    await migrate(pool);
    store = new PostgresTaskStore({ pool });
    pki = await createPki();
    server = await pki.workload('/agent/pg');
    client = await pki.workload('/agent/client');
  });
  afterAll(async () => {
    for (const o of opened.reverse()) await o.close();
    await store?.close();
    await pool?.end();
    await pki?.close();
    await db?.stop();
  });

  const owner = () => `spiffe://older-writer.test/${randomUUID()}`;

  /** What an older replica's create writes. */
  async function oldCreate(p: pg.Pool, id: string, who: string, t: Task, at: number): Promise<void> {
    await p.query(OLD_INSERT, [id, who, t.status.state, TERMINAL.has(t.status.state), JSON.stringify(t), at]);
  }

  /** What an older replica's append writes. */
  async function oldAppend(p: pg.Pool, t: Task, at: number): Promise<void> {
    const r = await p.query(OLD_UPDATE, [
      t.id,
      JSON.stringify(t),
      t.status.state,
      TERMINAL.has(t.status.state),
      at,
    ]);
    expect(r.rowCount).toBe(1);
  }

  async function statusAt(p: pg.Pool, id: string): Promise<number> {
    const r = await p.query<{ status_at: string }>('SELECT status_at FROM weave_a2a_tasks WHERE id = $1', [
      id,
    ]);
    return Number(r.rows[0]?.status_at);
  }

  /** Ids of `who`'s tasks ListTasks gives for statusTimestampAfter `after`, as a current replica's store reads them. */
  async function listedSince(who: string, after: number): Promise<string[]> {
    const page = await store.list({ owner: who, updatedAfter: after, limit: 100 });
    return page.records.map((r) => r.task.id);
  }

  /**
   * An A2AServer (an `echo` skill) on `taskStore`, served on mTLS to the
   * client: its JSON-RPC calls, and the error lines it logs.
   */
  async function serve(taskStore: PostgresTaskStore) {
    const a2a = new A2AServer({
      card: { name: 'pg agent', description: 'older writer', version: '1.0.0' },
      selfId: server.id,
      enforcer: allowOnly(client.id.toString()),
      heartbeatMs: 0,
      taskStore,
    });
    a2a.registerTaskHandler({ id: 'echo', name: 'echo', description: '', tags: [] }, () => 'echo');
    // The errors the server logs (what a binding answers -32603 for is logged with the request's logger).
    const logged: { msg?: string; err?: unknown }[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, cb) {
        const line = JSON.parse(chunk.toString('utf8')) as { level: number; msg?: string; err?: unknown };
        if (line.level >= 50) logged.push(line);
        cb();
      },
    });
    const app = createMtlsServer({
      identity: server.identity,
      authorize: authorizeMemberOf(TRUST_DOMAIN),
      fastify: { loggerInstance: pino({ level: 'error' }, sink) },
    });
    await app.register(a2a.plugin);
    await app.listen({ port: 0, host: '127.0.0.1' });
    const ch = channel(client, server.id);
    let closing: Promise<unknown> | undefined;
    const close = () =>
      (closing ??= (async () => {
        await a2a.close();
        await ch.close();
        await app.close();
        await taskStore.close();
      })());
    opened.push({ close });
    const rpc = async (method: string, params: unknown) => {
      const res = await request(`${baseUrl(app)}/`, {
        method: 'POST',
        dispatcher: ch,
        headers: { 'content-type': 'application/json', 'a2a-version': '1.0' },
        body: JSON.stringify({ jsonrpc: '2.0', id: 1, method, params }),
      });
      return {
        status: res.statusCode,
        ...(JSON.parse(await res.body.text()) as {
          result?: { tasks: Task[]; task: Task };
          error?: { code: number; message: string };
        }),
      };
    };
    return { rpc, logged, close };
  }

  /** Runs `body` on a database of its own (dropped afterwards) with the migrations up to `version` applied. */
  async function withDatabaseAt(version: number, body: (p: pg.Pool) => Promise<void>): Promise<void> {
    const name = `older_${randomUUID().replaceAll('-', '')}`;
    await pool.query(`CREATE DATABASE ${name}`);
    const url = new URL(db.url);
    url.pathname = `/${name}`;
    const p = new pg.Pool({ connectionString: url.toString() });
    try {
      if (version > 0) {
        await p.query(
          `CREATE TABLE weave_a2a_schema_migrations (
             version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`,
        );
      }
      for (const m of (await loadMigrations()).filter((x) => x.version <= version)) {
        await p.query(m.sql);
        await p.query('INSERT INTO weave_a2a_schema_migrations (version, name) VALUES ($1, $2)', [
          m.version,
          m.name,
        ]);
      }
      await body(p);
    } finally {
      await p.end();
      await pool.query(`DROP DATABASE ${name}`);
    }
  }

  it("lists an older replica's new and finished tasks by their status timestamps (created, updated, created by a current replica)", async () => {
    const who = owner();
    const t0 = Date.now() - 60_000;
    const iso = (ms: number) => new Date(ms).toISOString();
    // B: created by the older replica, finished by it.
    const b = randomUUID();
    await oldCreate(pool, b, who, task(b, 'TASK_STATE_SUBMITTED', iso(t0 + 100)), t0 + 100);
    expect(await statusAt(pool, b)).toBe(t0 + 100);
    await oldAppend(pool, task(b, 'TASK_STATE_WORKING', iso(t0 + 200)), t0 + 200);
    await oldAppend(pool, task(b, 'TASK_STATE_COMPLETED', iso(t0 + 300)), t0 + 300);
    expect(await statusAt(pool, b)).toBe(t0 + 300);
    // C: created by a current replica, asked for input, its reply taken and finished by the older one.
    const c = randomUUID();
    const record: TaskRecord = {
      task: task(c, 'TASK_STATE_SUBMITTED', iso(t0 + 110)),
      owner: who,
      skill: 'echo',
      createdAt: t0 + 110,
      updatedAt: t0 + 110,
      seq: 1,
    };
    await store.create(record, { seq: 1, event: { task: record.task } });
    await store.append(
      c,
      task(c, 'TASK_STATE_INPUT_REQUIRED', iso(t0 + 210)),
      [
        {
          seq: 2,
          event: {
            statusUpdate: { taskId: c, contextId: 'ctx', status: { state: 'TASK_STATE_INPUT_REQUIRED' } },
          },
        },
      ],
      t0 + 210,
    );
    expect(await statusAt(pool, c)).toBe(t0 + 210);
    await oldAppend(pool, task(c, 'TASK_STATE_WORKING', iso(t0 + 400)), t0 + 400);
    await oldAppend(pool, task(c, 'TASK_STATE_COMPLETED', iso(t0 + 500)), t0 + 500);
    expect(await statusAt(pool, c)).toBe(t0 + 500);
    // D: created by the older replica, its status without a timestamp: its last change.
    const d = randomUUID();
    await oldCreate(pool, d, who, task(d, 'TASK_STATE_SUBMITTED', null), t0 + 150);
    expect(await statusAt(pool, d)).toBe(t0 + 150);
    await oldAppend(pool, task(d, 'TASK_STATE_FAILED', null), t0 + 450);
    expect(await statusAt(pool, d)).toBe(t0 + 450);
    // E: a timestamp of the ISO form that names no time: its last change, and the write goes in.
    const e = randomUUID();
    await oldCreate(pool, e, who, task(e, 'TASK_STATE_SUBMITTED', '2026-13-40T25:61:00Z'), t0 + 160);
    expect(await statusAt(pool, e)).toBe(t0 + 160);

    expect((await listedSince(who, t0)).sort()).toEqual([b, c, d, e].sort());
    expect(await listedSince(who, t0 + 300)).toEqual([c, d, b]);
    expect(await listedSince(who, t0 + 301)).toEqual([c, d]);
    expect(await listedSince(who, t0 + 451)).toEqual([c]);
  });

  it('over JSON-RPC: ListTasks with statusTimestampAfter on a current replica lists the tasks the older one wrote', async () => {
    const { rpc } = await serve(new PostgresTaskStore({ pool }));
    const since = Date.now();
    const id = randomUUID();
    await oldCreate(
      pool,
      id,
      client.id.toString(),
      task(id, 'TASK_STATE_SUBMITTED', new Date(since + 5).toISOString()),
      since + 5,
    );
    await oldAppend(pool, task(id, 'TASK_STATE_COMPLETED', new Date(since + 9).toISOString()), since + 9);
    const listed = await rpc('ListTasks', { statusTimestampAfter: new Date(since + 9).toISOString() });
    expect(listed.error).toBeUndefined();
    expect(listed.result?.tasks.map((t) => [t.id, t.status.state])).toEqual([[id, 'TASK_STATE_COMPLETED']]);
  });

  it("the limit: an older replica's status change within the same state keeps the status time it had", async () => {
    const who = owner();
    const t0 = Date.now() - 30_000;
    const id = randomUUID();
    await oldCreate(pool, id, who, task(id, 'TASK_STATE_WORKING', new Date(t0).toISOString()), t0);
    await oldAppend(pool, task(id, 'TASK_STATE_WORKING', new Date(t0 + 700).toISOString()), t0 + 700);
    expect(await statusAt(pool, id)).toBe(t0);
    // Its next state change, by any replica, puts it right.
    await oldAppend(pool, task(id, 'TASK_STATE_COMPLETED', new Date(t0 + 900).toISOString()), t0 + 900);
    expect(await statusAt(pool, id)).toBe(t0 + 900);
  });

  it('a current replica stores the status_at it computes: the triggers leave it, where they would have computed another', async () => {
    const who = owner();
    const t0 = Date.now() - 20_000;
    // A timestamp Date.parse reads and the migration's ISO pattern does not:
    // had a trigger fired, status_at would be updated_at instead.
    const http = (ms: number) => new Date(ms).toUTCString();
    const id = randomUUID();
    const created = t0 + 3_000;
    const record: TaskRecord = {
      task: task(id, 'TASK_STATE_SUBMITTED', http(t0)),
      owner: who,
      skill: 'echo',
      createdAt: created,
      updatedAt: created,
      seq: 1,
    };
    await store.create(record, { seq: 1, event: { task: record.task } });
    expect(await statusAt(pool, id)).toBe(statusTime(record));
    expect(await statusAt(pool, id)).not.toBe(created);
    const working = task(id, 'TASK_STATE_WORKING', http(t0 + 1_000));
    const event = (seq: number, t: Task) => ({
      seq,
      event: { statusUpdate: { taskId: id, contextId: 'ctx', status: t.status } },
    });
    await store.append(id, working, [event(2, working)], t0 + 4_000);
    expect(await statusAt(pool, id)).toBe(statusTime({ task: working, updatedAt: t0 + 4_000 }));
    // A state change in the same millisecond as the status before (the same status
    // time): the update trigger fires and computes what the store wrote.
    const sameMs = new Date(t0 + 2_000).toISOString();
    await store.append(
      id,
      task(id, 'TASK_STATE_INPUT_REQUIRED', sameMs),
      [event(3, task(id, 'TASK_STATE_INPUT_REQUIRED', sameMs))],
      t0 + 5_000,
    );
    const done = task(id, 'TASK_STATE_COMPLETED', sameMs);
    await store.append(id, done, [event(4, done)], t0 + 5_000);
    expect(await statusAt(pool, id)).toBe(t0 + 2_000);
    // And the whole path: a TaskManager's task, as its statuses are stored.
    const m = new TaskManager({ store: new PostgresTaskStore({ pool }) });
    try {
      const { task: t } = await m.create({
        owner: who,
        skill: 'echo',
        message: { messageId: randomUUID(), role: 'ROLE_USER', parts: [{ text: 'hi' }] },
      });
      m.setStatus(t.id, 'TASK_STATE_WORKING');
      m.setStatus(t.id, 'TASK_STATE_COMPLETED');
      await m.flush();
      const stored = await store.get(t.id);
      expect(stored?.task.status.state).toBe('TASK_STATE_COMPLETED');
      expect(await statusAt(pool, t.id)).toBe(statusTime(stored as TaskRecord));
    } finally {
      await m.close();
    }
  });

  it('the migration gives the rows an older replica inserted before it their status time', async () => {
    await withDatabaseAt(10, async (p) => {
      const who = owner();
      const t0 = Date.now() - 10_000;
      const [a, b] = [randomUUID(), randomUUID()];
      await oldCreate(p, a, who, task(a, 'TASK_STATE_COMPLETED', new Date(t0 + 5).toISOString()), t0 + 9);
      await oldCreate(p, b, who, task(b, 'TASK_STATE_SUBMITTED', null), t0 + 7);
      expect([await statusAt(p, a), await statusAt(p, b)]).toEqual([0, 0]);
      expect((await migrate(p)).applied).toContain(11);
      expect([await statusAt(p, a), await statusAt(p, b)]).toEqual([t0 + 5, t0 + 7]);
    });
  });

  /** What `call` failed with. */
  const failure = (call: Promise<unknown>) =>
    call.then(
      () => undefined,
      (e: unknown) => e,
    );

  it('a store on a database behind the code fails saying to run `weave db migrate` (schema 9: no status_at)', async () => {
    await withDatabaseAt(9, async (p) => {
      const behind = new PostgresTaskStore({ pool: p });
      try {
        const who = owner();
        const listed = await failure(behind.list({ owner: who, limit: 10 }));
        expect(listed).toBeInstanceOf(PostgresStoreError);
        expect(listed).toMatchObject({
          code: 'POSTGRES_SCHEMA_OUTDATED',
          message: expect.stringMatching(/schema is behind .*42703 .*status_at.*: run `weave db migrate`$/),
          cause: { code: '42703' },
        });
        const id = randomUUID();
        const record: TaskRecord = {
          task: task(id, 'TASK_STATE_SUBMITTED', new Date().toISOString()),
          owner: who,
          skill: 'echo',
          createdAt: Date.now(),
          updatedAt: Date.now(),
          seq: 1,
        };
        expect(await failure(behind.create(record, { seq: 1, event: { task: record.task } }))).toMatchObject({
          code: 'POSTGRES_SCHEMA_OUTDATED',
          cause: { code: '42703' },
        });
      } finally {
        await behind.close();
      }
    });
  });

  it('an A2AServer on a database never migrated answers an internal error and logs that the schema is behind', async () => {
    await withDatabaseAt(0, async (p) => {
      const { rpc, logged, close } = await serve(new PostgresTaskStore({ pool: p }));
      try {
        for (const [method, params] of [
          ['ListTasks', {}],
          ['GetTask', { id: randomUUID() }],
          [
            'SendMessage',
            { message: { messageId: randomUUID(), role: 'ROLE_USER', parts: [{ text: 'hi' }] } },
          ],
        ] as const) {
          logged.length = 0;
          const answer = await rpc(method, params);
          expect([method, answer.status, answer.error?.code, answer.error?.message]).toEqual([
            method,
            500,
            -32603,
            'Internal error',
          ]);
          // The request's own line (a lease renewal may fail and log meanwhile).
          expect(logged.filter((l) => l.msg === 'a2a: internal error').map((l) => l.err)).toEqual([
            expect.objectContaining({
              code: 'POSTGRES_SCHEMA_OUTDATED',
              message: expect.stringMatching(/schema is behind .*: run `weave db migrate`/),
            }),
          ]);
        }
      } finally {
        await close();
      }
    });
  });
});
