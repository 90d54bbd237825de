// The PostgreSQL task and push-config stores against a real PostgreSQL 15
// (a private cluster started here, or WEAVE_TEST_PG_URL): the TaskStore
// contract, migrations, encryption at rest, and a database that goes away.
import { randomBytes, randomUUID } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  TaskLeaseLostError,
  TaskManager,
  TaskStoreOverBudgetError,
  TaskStoreUnavailableError,
  type Task,
  type TaskRecord,
} from '@weave/a2a';
import {
  PostgresPushConfigStore,
  PostgresTaskStore,
  loadMigrations,
  migrate,
  schemaVersion,
} from '@weave/a2a/postgres';
import { taskStoreContract } from '@weave/a2a/testing';
import { TcpRelay } from '@weave/test-support/tcp-relay';
import { weave } from '../apps/cli/test/helpers.js';
import { requireComponent, startPostgres, type Postgres } from './infra.js';

const available = process.env.WEAVE_TEST_PG_URL !== undefined || requireComponent('postgres') !== undefined;
const key = randomBytes(32);

describe.skipIf(!available)('PostgreSQL stores', () => {
  let db: Postgres;
  let pool: pg.Pool;

  beforeAll(async () => {
    db = (await startPostgres()) as Postgres;
    pool = new pg.Pool({ connectionString: db.url, max: 4 });
    await migrate(pool);
  });
  afterAll(async () => {
    await pool?.end();
    await db?.stop();
  });

  taskStoreContract('PostgresTaskStore', {
    // Each "open" is a store with its own pool on the same database: what a
    // second replica, or the same agent after a restart, would have.
    open: (options) => new PostgresTaskStore({ connectionString: db.url, ...options }),
    pushStore: () => new PostgresPushConfigStore({ pool, key }),
  });

  it('migrates once: a second run, and runs from three replicas at once, change nothing', async () => {
    const shipped = await loadMigrations();
    expect(shipped.length).toBeGreaterThan(0);
    expect(shipped.map((m) => m.version)).toEqual([...shipped.map((m) => m.version)].sort((a, b) => a - b));
    const latest = shipped[shipped.length - 1]?.version;
    expect(await schemaVersion(pool)).toBe(latest);
    const again = await Promise.all([1, 2, 3].map(() => migrate({ connectionString: db.url })));
    for (const r of again) expect(r).toEqual({ applied: [], version: latest });
  });

  /** Runs `body` on a pool of a fresh, empty database of the cluster, dropped afterwards. */
  async function withFreshDatabase(body: (fresh: pg.Pool, url: string) => Promise<void>): Promise<void> {
    const name = `fresh_${randomUUID().replaceAll('-', '')}`;
    await pool.query(`CREATE DATABASE ${name}`);
    const url = new URL(db.url);
    url.pathname = `/${name}`;
    const fresh = new pg.Pool({ connectionString: url.toString() });
    try {
      await body(fresh, url.toString());
    } finally {
      await fresh.end();
      await pool.query(`DROP DATABASE ${name}`);
    }
  }

  it('migrates an empty database from scratch, recording each version', async () => {
    await withFreshDatabase(async (fresh) => {
      expect(await schemaVersion(fresh)).toBe(0);
      const r = await migrate(fresh);
      const shipped = (await loadMigrations()).map((m) => m.version);
      expect(r.applied).toEqual(shipped);
      const rows = await fresh.query<{ version: number }>(
        'SELECT version FROM weave_a2a_schema_migrations ORDER BY version',
      );
      expect(rows.rows.map((x) => x.version)).toEqual(shipped);
    });
  });

  it('keeps push configs encrypted at rest, bound to their row, readable only with the key', async () => {
    const tasks = new PostgresTaskStore({ pool });
    const push = new PostgresPushConfigStore({ pool, key: key.toString('base64') });
    const m = new TaskManager({ store: tasks });
    const a = await m.create({ owner: 'spiffe://t/a', skill: 's', message: msg('a') });
    const b = await m.create({ owner: 'spiffe://t/a', skill: 's', message: msg('b') });
    const secret = `s3cret-${randomUUID()}`;
    const config = {
      taskId: a.task.id,
      id: 'hook',
      url: 'https://hooks.example.test/weave',
      token: secret,
      authentication: { scheme: 'Bearer', credentials: `cred-${secret}` },
    };
    await push.setPushConfig(config);
    const raw = await pool.query<{ config: Buffer }>(
      'SELECT config FROM weave_a2a_push_configs WHERE task_id = $1',
      [a.task.id],
    );
    const bytes = raw.rows[0]?.config as Buffer;
    expect(bytes.length).toBeGreaterThan(28);
    for (const plain of [secret, 'hooks.example.test', 'Bearer']) {
      expect(bytes.includes(Buffer.from(plain))).toBe(false);
    }
    expect(await push.listPushConfigs(a.task.id)).toEqual([config]);
    // Another key reads nothing.
    const wrong = new PostgresPushConfigStore({ pool, key: randomBytes(32) });
    await expect(wrong.listPushConfigs(a.task.id)).rejects.toMatchObject({ code: 'PUSH_CONFIG_UNREADABLE' });
    // A row copied onto another task does not decrypt there (the ids are bound in).
    await pool.query('INSERT INTO weave_a2a_push_configs (task_id, id, config) VALUES ($1, $2, $3)', [
      b.task.id,
      'hook',
      bytes,
    ]);
    await expect(push.listPushConfigs(b.task.id)).rejects.toMatchObject({ code: 'PUSH_CONFIG_UNREADABLE' });
    await m.close();
  });

  it('refuses to exist without a 32-byte key', () => {
    const saved = process.env.WEAVE_PUSH_CONFIG_KEY;
    delete process.env.WEAVE_PUSH_CONFIG_KEY;
    try {
      expect(() => new PostgresPushConfigStore({ pool })).toThrow(
        expect.objectContaining({ code: 'PUSH_CONFIG_KEY_MISSING' }),
      );
      expect(() => new PostgresPushConfigStore({ pool, key: 'c2hvcnQ=' })).toThrow(
        expect.objectContaining({ code: 'PUSH_CONFIG_KEY_INVALID' }),
      );
      process.env.WEAVE_PUSH_CONFIG_KEY = key.toString('hex');
      expect(() => new PostgresPushConfigStore({ pool })).not.toThrow();
    } finally {
      if (saved === undefined) delete process.env.WEAVE_PUSH_CONFIG_KEY;
      else process.env.WEAVE_PUSH_CONFIG_KEY = saved;
    }
  });

  it('writes a long artifact stream incrementally: the bytes of the Nth chunk do not grow with N; reloads whole', async () => {
    const store = new PostgresTaskStore({ pool });
    const m = new TaskManager({ store });
    const rec = await m.create({ owner: 'spiffe://t/stream', skill: 's', message: msg('go') });
    const id = rec.task.id;
    m.setStatus(id, 'TASK_STATE_WORKING');
    await m.flush();
    // The WAL insert position: every byte a write adds to the database goes through it.
    const wal = async () =>
      Number(
        (
          await pool.query<{ b: string }>(
            "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')::text AS b",
          )
        ).rows[0]?.b,
      );
    const chunk = 2048;
    const sent: string[] = [];
    /** WAL bytes written by each append of one chunk, in order. */
    const perAppend: number[] = [];
    for (let i = 0; i < 400; i++) {
      // Random text: PostgreSQL cannot compress a rewritten task down to a chunk's size.
      const text = randomBytes(chunk * 0.75).toString('base64');
      sent.push(text);
      const before = await wal();
      m.addArtifact(id, { artifactId: 'stream', parts: [{ text }] }, { append: i > 0 });
      await m.flush();
      perAppend.push((await wal()) - before);
    }
    const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;
    const early = median(perAppend.slice(5, 25));
    const late = median(perAppend.slice(-20));
    console.log(
      `WAL bytes per 2 KiB chunk append: median ${early} at chunks 6-25, ${late} at chunks 381-400`,
    );
    // The 400th chunk costs what the 5th did (a whole-task write would be ~400 x 2 KiB = 800 KiB).
    expect(late).toBeLessThan(early * 1.5 + 4096);
    expect(late).toBeLessThan(chunk * 8);
    const chunks = await pool.query<{ n: string }>(
      'SELECT count(*) AS n FROM weave_a2a_artifact_chunks WHERE task_id = $1',
      [id],
    );
    expect(Number(chunks.rows[0]?.n)).toBe(400);
    // Another artifact beside it, then the stream's artifact replaced, a status with a message.
    m.addArtifact(id, { artifactId: 'other', name: 'o', parts: [{ text: 'o1' }] });
    m.addArtifact(id, { artifactId: 'other', parts: [{ text: 'o2' }] }, { append: true, lastChunk: true });
    await m.flush();
    m.setStatus(id, 'TASK_STATE_INPUT_REQUIRED', {
      messageId: randomUUID(),
      role: 'ROLE_AGENT',
      parts: [{ text: 'more?' }],
    });
    m.appendUserMessage(id, msg('yes'));
    m.setStatus(id, 'TASK_STATE_WORKING');
    m.addArtifact(id, { artifactId: 'stream', name: 'final', parts: [{ text: 'replaced' }] });
    m.setStatus(id, 'TASK_STATE_COMPLETED');
    await m.flush();
    // A fresh store (another replica, or after a restart) reads the task whole.
    const reader = new PostgresTaskStore({ connectionString: db.url });
    try {
      const got = await reader.get(id);
      expect(got?.task.status.state).toBe('TASK_STATE_COMPLETED');
      expect(got?.task.artifacts).toEqual([
        { artifactId: 'stream', name: 'final', parts: [{ text: 'replaced' }] },
        { artifactId: 'other', name: 'o', parts: [{ text: 'o1' }, { text: 'o2' }] },
      ]);
      expect(got?.task.history?.map((h) => h.parts[0]?.text)).toEqual(['go', 'more?', 'yes']);
      // The log still holds every chunk as it was sent.
      const log = await m.eventsAfter(id, 0);
      const streamed = (log ?? []).flatMap((e) =>
        'artifactUpdate' in e.event && e.event.artifactUpdate.artifact.artifactId === 'stream'
          ? e.event.artifactUpdate.artifact.parts.map((p) => p.text)
          : [],
      );
      expect(streamed).toEqual([...sent, 'replaced']);
      // The replaced artifact's 400 chunks are gone: one chunk each for it and for `other`.
      const left = await pool.query<{ n: string }>(
        'SELECT count(*) AS n FROM weave_a2a_artifact_chunks WHERE task_id = $1',
        [id],
      );
      expect(Number(left.rows[0]?.n)).toBe(2);
    } finally {
      await reader.close();
      await m.close();
    }
  }, 120_000);

  it('rewrites a task it did not write (another replica ends it) whole and right, once', async () => {
    const errors: unknown[] = [];
    const a = new TaskManager({
      store: new PostgresTaskStore({ pool }),
      onStoreError: (e) => errors.push(e),
    });
    const rec = await a.create({ owner: 'spiffe://t/other', skill: 's', message: msg('go') });
    const id = rec.task.id;
    a.addArtifact(id, { artifactId: 'x', parts: [{ text: '1' }] });
    a.addArtifact(id, { artifactId: 'x', parts: [{ text: '2' }] }, { append: true });
    await a.flush();
    const b = new TaskManager({ store: new PostgresTaskStore({ pool }) });
    const failed = await b.failStored(id, 'gone');
    expect(failed?.event?.seq).toBe(4);
    const got = await b.get(id);
    expect(got?.task.status.state).toBe('TASK_STATE_FAILED');
    expect(got?.task.artifacts).toEqual([{ artifactId: 'x', parts: [{ text: '1' }, { text: '2' }] }]);
    expect(got?.task.history?.map((h) => h.parts[0]?.text)).toEqual(['go', 'gone']);
    // The first replica's next write meets a log that moved on: refused, nothing changes.
    a.addArtifact(id, { artifactId: 'x', parts: [{ text: '3' }] }, { append: true });
    await a.flush();
    expect(errors).toEqual([expect.objectContaining({ code: 'TASK_STORE_CONFLICT' })]);
    expect((await b.get(id))?.task.artifacts?.[0]?.parts).toHaveLength(2);
    await a.close();
    await b.close();
  });

  it('migration 004 moves history and artifacts of tasks stored before it into their rows; nothing lost', async () => {
    await withFreshDatabase(async (legacy) => {
      await legacy.query(
        'CREATE TABLE weave_a2a_schema_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())',
      );
      for (const mig of (await loadMigrations()).filter((x) => x.version <= 3)) {
        await legacy.query(mig.sql);
        await legacy.query('INSERT INTO weave_a2a_schema_migrations (version, name) VALUES ($1, $2)', [
          mig.version,
          mig.name,
        ]);
      }
      const task = {
        id: randomUUID(),
        contextId: 'c',
        status: { state: 'TASK_STATE_COMPLETED', timestamp: new Date().toISOString() },
        history: [
          { ...msg('h1'), taskId: 't' },
          { ...msg('h2'), taskId: 't' },
        ],
        artifacts: [
          { artifactId: 'a', name: 'n', parts: [{ text: 'p1' }, { text: 'p2' }] },
          { artifactId: 'b', parts: [{ data: { k: 1 } }] },
        ],
        metadata: { m: true },
      };
      const bare = { id: randomUUID(), contextId: 'c', status: { state: 'TASK_STATE_WORKING' } };
      for (const t of [task, bare]) {
        await legacy.query(
          `INSERT INTO weave_a2a_tasks (id, owner, skill, context_id, state, terminal, task, created_at, updated_at, seq)
           VALUES ($1, 'o', 's', 'c', $2, $3, $4, $5, $5, 1)`,
          [t.id, t.status.state, t.status.state === 'TASK_STATE_COMPLETED', JSON.stringify(t), Date.now()],
        );
      }
      const r = await migrate(legacy);
      expect(r.applied).toContain(4);
      const store = new PostgresTaskStore({ pool: legacy });
      expect((await store.get(task.id))?.task).toEqual(task);
      expect((await store.get(bare.id))?.task).toEqual(bare);
    });
  });

  it('fences a runner whose lease expired: its writes are refused (TaskLeaseLostError) before and after another replica takes the task over', async () => {
    const ttl = 300;
    const a = new PostgresTaskStore({ pool, leaseTtlMs: ttl });
    const b = new PostgresTaskStore({ pool, leaseTtlMs: ttl });
    expect(await a.heartbeat()).toBe(true);
    const rec = (text: string) => ({
      task: {
        id: randomUUID(),
        contextId: 'c',
        status: { state: 'TASK_STATE_WORKING' as const },
        history: [{ ...msg(text) }],
        artifacts: [],
      },
      owner: 'spiffe://t/fence',
      skill: 's',
      createdAt: Date.now(),
      updatedAt: Date.now(),
      seq: 1,
    });
    /** An artifact event for `task`, added to the task as the TaskManager would. */
    const ev = (task: Task, seq: number, text: string) => {
      const artifact = { artifactId: `a${seq}`, parts: [{ text }] };
      (task.artifacts ??= []).push(artifact);
      return { seq, event: { artifactUpdate: { taskId: task.id, contextId: 'c', artifact } } };
    };
    const one = rec('one');
    const two = rec('two');
    for (const r of [one, two]) await a.create(r, { seq: 1, event: { task: structuredClone(r.task) } });
    await a.append(one.task.id, one.task, [ev(one.task, 2, 'while held')], Date.now());
    // A stalls past its lease (no heartbeat): its writes are refused even before anyone claims.
    await new Promise((r) => setTimeout(r, ttl + 100));
    await expect(
      a.append(two.task.id, two.task, [ev(two.task, 2, 'stale')], Date.now()),
    ).rejects.toBeInstanceOf(TaskLeaseLostError);
    // B takes the orphans over and writes; A's late write is refused, B's log stands.
    expect(await b.heartbeat()).toBe(true);
    const claimed = await b.claimOrphans(16);
    expect(claimed.map((r) => r.task.id).sort()).toEqual([one.task.id, two.task.id].sort());
    const byB = (await b.get(one.task.id)) as TaskRecord;
    await b.append(one.task.id, byB.task, [ev(byB.task, 3, 'by b')], Date.now());
    await expect(
      a.append(one.task.id, one.task, [ev(one.task, 3, 'stale')], Date.now()),
    ).rejects.toMatchObject({
      code: 'TASK_LEASE_LOST',
    });
    // A comes back: its lease is renewed under a new generation and it says so; the old tasks stay B's.
    expect(await a.heartbeat()).toBe(false);
    await expect(
      a.append(one.task.id, one.task, [ev(one.task, 4, 'stale')], Date.now()),
    ).rejects.toBeInstanceOf(TaskLeaseLostError);
    const stored = await b.get(one.task.id);
    expect(stored?.seq).toBe(3);
    expect(stored?.task.artifacts?.map((x) => x.parts[0]?.text)).toEqual(['while held', 'by b']);
    expect((await b.events(two.task.id, 0, 10))?.map((e) => e.seq)).toEqual([1]);
    // A task A creates under its new lease is A's to write.
    expect(await a.heartbeat()).toBe(true);
    const three = rec('three');
    await a.create(three, { seq: 1, event: { task: structuredClone(three.task) } });
    await a.append(three.task.id, three.task, [ev(three.task, 2, 'fresh')], Date.now());
    expect((await b.get(three.task.id))?.seq).toBe(2);
    await a.close();
    await b.close();
  });

  it('sweeps the lease rows of dead replicas that run nothing, keeps those of live ones and of replicas whose tasks are unfinished', async () => {
    const rows = async () =>
      new Set((await pool.query<{ id: string }>('SELECT id FROM weave_a2a_replicas')).rows.map((r) => r.id));
    const gone = new PostgresTaskStore({ pool, leaseTtlMs: 100 });
    const busy = new PostgresTaskStore({ pool, leaseTtlMs: 100 });
    const alive = new PostgresTaskStore({ pool, leaseTtlMs: 60_000, deadReplicaTtlMs: 200 });
    for (const s of [gone, busy, alive]) await s.heartbeat();
    // A task of `busy`, written by the store alone (a TaskManager would keep renewing the lease).
    const task: Task = { id: randomUUID(), contextId: 'c', status: { state: 'TASK_STATE_WORKING' } };
    const now = Date.now();
    await busy.create(
      { task, owner: 'spiffe://t/sweep', skill: 's', createdAt: now, updatedAt: now, seq: 1 },
      { seq: 1, event: { task } },
    );
    await new Promise((r) => setTimeout(r, 400)); // gone and busy expired 300 ms ago
    await alive.heartbeat();
    await alive.sweep();
    let left = await rows();
    expect(left.has(gone.replicaId)).toBe(false);
    expect(left.has(busy.replicaId)).toBe(true); // its task is unfinished: an orphan to claim
    expect(left.has(alive.replicaId)).toBe(true);
    // Claimed and failed by the live replica: the dead one's row goes on the next sweep.
    const claimed = await alive.claimOrphans(100);
    expect(claimed.map((r) => r.task.id)).toContain(task.id);
    const other = new TaskManager({ store: alive });
    for (const r of claimed) await other.failStored(r.task.id, 'gone');
    await alive.sweep();
    left = await rows();
    expect(left.has(busy.replicaId)).toBe(false);
    expect(left.has(alive.replicaId)).toBe(true);
    // A swept replica that comes back renews under a new row (it ran nothing a stale write could touch).
    expect(await gone.heartbeat()).toBe(true);
    expect((await rows()).has(gone.replicaId)).toBe(true);
    await other.close();
    await gone.close();
    await busy.close();
  });

  /** Bytes by owner ('' = the whole store) as `sql` answers them. */
  async function bytesByOwner(p: pg.Pool, sql: string): Promise<Record<string, number>> {
    const r = await p.query<{ owner: string; bytes: string }>(sql);
    return Object.fromEntries(r.rows.map((x) => [x.owner, Number(x.bytes)]));
  }
  /** The byte counts of the store and of each owner, as the database holds them. */
  const usage = (p: pg.Pool) => bytesByOwner(p, 'SELECT owner, bytes FROM weave_a2a_usage');
  /** The same counts summed from the tasks themselves: what `usage` must always equal. */
  const counted = (p: pg.Pool) =>
    bytesByOwner(
      p,
      `SELECT coalesce(owner, '') AS owner, sum(counted)::text AS bytes FROM weave_a2a_tasks GROUP BY ROLLUP (owner)`,
    );

  /** Runs `body` with a TaskManager on a bounded store of a fresh, migrated database; closes it however `body` ends. */
  async function withBoundedStore(
    bounds: { maxBytes: number; maxBytesPerOwner: number; maxBytesPerTask?: number },
    body: (m: TaskManager, store: PostgresTaskStore, fresh: pg.Pool) => Promise<void>,
  ): Promise<void> {
    await withFreshDatabase(async (fresh) => {
      await migrate(fresh);
      const store = new PostgresTaskStore({ pool: fresh, ...bounds });
      const m = new TaskManager({ store });
      try {
        await body(m, store, fresh);
      } finally {
        // Its listening connection would otherwise hold the pool open when an assertion fails.
        await m.close();
      }
    });
  }

  it('bounds retained bytes per caller: a caller whose unfinished tasks hold its share is refused (typed, retryable), changing nothing; its oldest finished tasks make room; others are unaffected', async () => {
    await withBoundedStore({ maxBytes: 1_000_000, maxBytesPerOwner: 8_000 }, async (m, store, fresh) => {
      const big = 'x'.repeat(1_500);
      const held: TaskRecord[] = [];
      let refused: unknown;
      for (let i = 0; i < 20 && refused === undefined; i++) {
        try {
          held.push(await m.create({ owner: 'spiffe://t/greedy', skill: 's', message: msg(big) }));
        } catch (err) {
          refused = err;
        }
      }
      expect(refused).toBeInstanceOf(TaskStoreOverBudgetError);
      expect(refused).toMatchObject({ code: 'TASK_STORE_OVER_BUDGET', scope: 'caller', limitBytes: 8_000 });
      // Each task of ~1.5 KB text is stored twice (history and first event): two fit, a third does not.
      expect(held.length).toBe(2);
      const before = await usage(fresh);
      expect(before['spiffe://t/greedy']).toBeGreaterThan(6_000);
      expect(before['spiffe://t/greedy']).toBeLessThanOrEqual(8_000);
      // The refusal wrote nothing and counted nothing.
      const tasks = await fresh.query('SELECT id FROM weave_a2a_tasks');
      expect(tasks.rowCount).toBe(2);
      expect(await usage(fresh)).toEqual(before);
      // Another caller is not held back by it.
      const other = await m.create({ owner: 'spiffe://t/other', skill: 's', message: msg(big) });
      // One of the caller's tasks finishes: it is counted whole and then makes room, the oldest first.
      const [first, second] = held as [TaskRecord, TaskRecord];
      m.setStatus(first.task.id, 'TASK_STATE_COMPLETED');
      await m.flush();
      expect(await usage(fresh)).toEqual(await counted(fresh));
      const third = await m.create({ owner: 'spiffe://t/greedy', skill: 's', message: msg(big) });
      expect(await store.get(first.task.id)).toBeUndefined();
      expect(await store.get(second.task.id)).toBeDefined();
      expect(await store.get(third.task.id)).toBeDefined();
      expect(await store.get(other.task.id)).toBeDefined();
      expect(await usage(fresh)).toEqual(await counted(fresh));
      // Deleting takes tasks off the counts.
      for (const r of [second, third, other]) m.setStatus(r.task.id, 'TASK_STATE_CANCELED');
      await m.flush();
      expect(await usage(fresh)).toEqual(await counted(fresh));
      for (const r of [second, third, other]) await store.delete(r.task.id);
      // Nothing kept, nothing counted: owners with no task leave no row.
      expect(await usage(fresh)).toEqual({ '': 0 });
    });
  });

  it('bounds what the running tasks of one caller add here together by its share (the database counts them as created until they finish); one that ends makes room', async () => {
    await withBoundedStore({ maxBytes: 1_000_000, maxBytesPerOwner: 10_000 }, async (m, store) => {
      const owner = 'spiffe://t/grower';
      const tasks = await Promise.all(
        [1, 2, 3].map(() => m.create({ owner, skill: 's', message: msg('go') })),
      );
      const chunk = (i: number) => ({ artifactId: `a${i}`, parts: [{ text: 'y'.repeat(2_000) }] });
      let refused: unknown;
      let taken = 0;
      for (let i = 0; i < 2 && refused === undefined; i++) {
        for (const r of tasks) {
          try {
            m.addArtifact(r.task.id, chunk(i));
            taken++;
          } catch (err) {
            refused = err;
            break;
          }
        }
      }
      // Each task alone (about 4 KB) is far under the share; together they are not.
      expect(refused).toBeInstanceOf(TaskStoreOverBudgetError);
      expect(refused).toMatchObject({ code: 'TASK_STORE_OVER_BUDGET', scope: 'caller', limitBytes: 10_000 });
      expect(taken).toBe(4);
      await m.flush();
      const stored = await Promise.all(
        tasks.map(async (r) => (await store.get(r.task.id))?.task.artifacts?.length ?? 0),
      );
      expect(stored.reduce((a, b) => a + b)).toBe(taken);
      // Another caller is not held back.
      const other = await m.create({ owner: 'spiffe://t/other', skill: 's', message: msg('go') });
      expect(m.addArtifact(other.task.id, chunk(0))).toBe(true);
      // One task ends: what it held running is given back.
      m.setStatus(tasks[0]!.task.id, 'TASK_STATE_COMPLETED');
      expect(m.addArtifact(tasks[2]!.task.id, chunk(1))).toBe(true);
      for (const r of [...tasks.slice(1), other]) m.setStatus(r.task.id, 'TASK_STATE_COMPLETED');
      await m.flush();
      expect((await store.get(tasks[2]!.task.id))?.task.artifacts).toHaveLength(2);
    });
  });

  it('cuts a task that finishes over maxBytesPerTask in the finishing transaction, and counts what it keeps exactly', async () => {
    await withBoundedStore(
      { maxBytes: 1_000_000, maxBytesPerOwner: 200_000, maxBytesPerTask: 20_000 },
      async (m, store, fresh) => {
        const owner = 'spiffe://t/streamer';
        const small = await m.create({ owner, skill: 's', message: msg('hi') });
        const long = await m.create({ owner, skill: 's', message: msg('go') });
        m.setStatus(long.task.id, 'TASK_STATE_WORKING');
        for (let i = 0; i < 12; i++) {
          m.addArtifact(long.task.id, { artifactId: `a${i}`, parts: [{ text: `${i}${'w'.repeat(2_000)}` }] });
          // Separate appends: the store's running estimate of the task's bytes is what decides.
          await m.flush();
        }
        for (const r of [small, long]) m.setStatus(r.task.id, 'TASK_STATE_COMPLETED');
        await m.flush();
        const cut = await store.get(long.task.id);
        expect(cut?.task.metadata?.['weave.truncated']).toBe('events,history,artifacts');
        expect(cut?.task.artifacts).toEqual([]);
        expect(cut?.task.status.state).toBe('TASK_STATE_COMPLETED');
        expect((await store.get(small.task.id))?.task.metadata?.['weave.truncated']).toBeUndefined();
        // One event left of the cut task; the counts are its exact stored size, and stay in step.
        const exact = await fresh.query<{ id: string; counted: string; bytes: string; events: string }>(
          `SELECT id, counted::text, weave_a2a_task_bytes(id)::text AS bytes,
             (SELECT count(*) FROM weave_a2a_events e WHERE e.task_id = t.id)::text AS events
           FROM weave_a2a_tasks t WHERE id = $1`,
          [long.task.id],
        );
        expect(exact.rows[0]?.events).toBe('1');
        expect(Number(exact.rows[0]?.counted)).toBe(Number(exact.rows[0]?.bytes));
        expect(Number(exact.rows[0]?.counted)).toBeLessThanOrEqual(20_000);
        expect(await usage(fresh)).toEqual(await counted(fresh));
        await store.delete(long.task.id);
        await store.delete(small.task.id);
        expect(await usage(fresh)).toEqual({ '': 0 });
      },
    );
  });

  it('bounds retained bytes store-wide: the oldest finished task of any caller makes room; when unfinished tasks hold it all, a new task is refused (scope store)', async () => {
    await withBoundedStore({ maxBytes: 8_000, maxBytesPerOwner: 8_000 }, async (m, store, fresh) => {
      const big = 'y'.repeat(1_500);
      const a = await m.create({ owner: 'spiffe://t/a', skill: 's', message: msg(big) });
      m.setStatus(a.task.id, 'TASK_STATE_COMPLETED');
      await m.flush();
      const b = await m.create({ owner: 'spiffe://t/b', skill: 's', message: msg(big) });
      // a's finished task goes to make room for c.
      const c = await m.create({ owner: 'spiffe://t/c', skill: 's', message: msg(big) });
      expect(await store.get(a.task.id)).toBeUndefined();
      await expect(m.create({ owner: 'spiffe://t/d', skill: 's', message: msg(big) })).rejects.toMatchObject({
        code: 'TASK_STORE_OVER_BUDGET',
        scope: 'store',
        limitBytes: 8_000,
      });
      expect((await fresh.query('SELECT id FROM weave_a2a_tasks')).rows.map((r) => r.id).sort()).toEqual(
        [b.task.id, c.task.id].sort(),
      );
      expect(await usage(fresh)).toEqual(await counted(fresh));
    });
  });

  it('counts retained bytes atomically across replicas: creates racing from two stores never overshoot the share', async () => {
    await withFreshDatabase(async (fresh, url) => {
      await migrate(fresh);
      const share = 40_000;
      const opts = { maxBytes: 1_000_000, maxBytesPerOwner: share };
      const stores = [
        new PostgresTaskStore({ connectionString: url, ...opts }),
        new PostgresTaskStore({ connectionString: url, ...opts }),
      ];
      const managers = stores.map((store) => new TaskManager({ store }));
      try {
        const text = 'z'.repeat(1_000);
        // 2 x 20 creates at once for one caller: far more than its share holds.
        const results = await Promise.allSettled(
          managers.flatMap((m) =>
            Array.from({ length: 20 }, () =>
              m.create({ owner: 'spiffe://t/racer', skill: 's', message: msg(text) }),
            ),
          ),
        );
        const made = results.filter((r) => r.status === 'fulfilled').length;
        const errors = results.flatMap((r) => (r.status === 'rejected' ? [r.reason] : []));
        for (const err of errors) expect(err).toBeInstanceOf(TaskStoreOverBudgetError);
        expect(errors.length).toBeGreaterThan(0);
        const u = await usage(fresh);
        expect(u['spiffe://t/racer']).toBeLessThanOrEqual(share);
        expect(u).toEqual(await counted(fresh));
        const rows = await fresh.query<{ bytes: string }>(
          'SELECT counted::text AS bytes FROM weave_a2a_tasks',
        );
        expect(rows.rowCount).toBe(made);
        // As many as fit: one more task would not have.
        const each = Number(rows.rows[0]?.bytes);
        expect(made).toBe(Math.floor(share / each));
      } finally {
        // Its listening connection would otherwise hold the pool open when an assertion fails.
        await Promise.all(managers.map((m) => m.close()));
      }
    });
  });

  it('writes concurrent calls in shared statements; a write that fails, fails alone', async () => {
    await withFreshDatabase(async (fresh, url) => {
      await migrate(fresh);
      // Statements counted where they leave: every connection of the store's pool.
      let statements = 0;
      const pool = new pg.Pool({ connectionString: url, max: 10 });
      pool.on('connect', (client) => {
        const query = client.query.bind(client) as (...args: unknown[]) => unknown;
        client.query = ((...args: unknown[]) => {
          statements++;
          return query(...args);
        }) as typeof client.query;
      });
      const store = new PostgresTaskStore({ pool });
      try {
        const owner = 'spiffe://t/batched';
        const tasks = Array.from({ length: 40 }, () => newTaskOf(owner));
        // One id twice: the second create is refused, the others are not.
        const twin = tasks[7] as ReturnType<typeof newTaskOf>;
        statements = 0;
        const created = await Promise.allSettled([
          ...tasks.map((t) => store.create(t.record, t.first)),
          store.create(structuredClone(twin.record), structuredClone(twin.first)),
        ]);
        // 41 creates in a few statements.
        expect(statements).toBeLessThan(10);
        expect(created.slice(0, 40).every((r) => r.status === 'fulfilled')).toBe(true);
        expect((created[40] as PromiseRejectedResult).reason).toMatchObject({ code: 'TASK_STORE_CONFLICT' });
        for (const t of tasks) expect(await store.get(t.record.task.id)).toEqual(t.record);

        // A task PostgreSQL cannot store (text holds no NUL) fails its statement: it fails alone.
        const bad = newTaskOf(owner, 'bad\u0000id');
        const others = Array.from({ length: 5 }, () => newTaskOf(owner));
        const mixed = await Promise.allSettled([
          store.create(others[0]!.record, others[0]!.first),
          ...[bad, ...others.slice(1)].map((t) => store.create(t.record, t.first)),
        ]);
        expect(mixed.map((r) => r.status)).toEqual([
          'fulfilled',
          'rejected',
          ...others.slice(1).map(() => 'fulfilled'),
        ]);
        for (const t of others) expect(await store.get(t.record.task.id)).toEqual(t.record);

        // Appends of all at once: every second one finishes its task, and one comes out of order.
        const late = tasks[3] as ReturnType<typeof newTaskOf>;
        statements = 0;
        const appended = await Promise.allSettled(
          tasks.map((t, i) => {
            const task = structuredClone(t.record.task);
            const seq = t === late ? 3 : 2;
            const ev = statusEvent(task, seq, i % 2 ? 'TASK_STATE_COMPLETED' : 'TASK_STATE_WORKING');
            return store.append(task.id, task, [ev], Date.now());
          }),
        );
        expect(statements).toBeLessThan(10);
        appended.forEach((r, i) => {
          if (tasks[i] === late)
            expect((r as PromiseRejectedResult).reason).toMatchObject({ code: 'TASK_STORE_CONFLICT' });
          else expect(r.status).toBe('fulfilled');
        });
        for (const [i, t] of tasks.entries()) {
          const got = await store.get(t.record.task.id);
          expect(got?.task.status.state).toBe(
            t === late ? 'TASK_STATE_SUBMITTED' : i % 2 ? 'TASK_STATE_COMPLETED' : 'TASK_STATE_WORKING',
          );
          expect((await store.events(t.record.task.id, 0, 10))?.length).toBe(t === late ? 1 : 2);
        }
        // The byte counts moved for exactly what was stored: the twin and the bad one left nothing counted.
        expect(await usage(fresh)).toEqual(await counted(fresh));
      } finally {
        await store.close();
        await pool.end();
      }
    });
  });

  /** Rows of tasks that are gone (and chunks of artifacts that are gone), by table: all must be 0. */
  async function orphans(p: pg.Pool): Promise<Record<string, number>> {
    const r = await p.query<{ events: string; history: string; artifacts: string; chunks: string }>(
      `SELECT
         (SELECT count(*) FROM weave_a2a_events x WHERE NOT EXISTS (SELECT 1 FROM weave_a2a_tasks t WHERE t.id = x.task_id))::text AS events,
         (SELECT count(*) FROM weave_a2a_task_history x WHERE NOT EXISTS (SELECT 1 FROM weave_a2a_tasks t WHERE t.id = x.task_id))::text AS history,
         (SELECT count(*) FROM weave_a2a_task_artifacts x WHERE NOT EXISTS (SELECT 1 FROM weave_a2a_tasks t WHERE t.id = x.task_id))::text AS artifacts,
         (SELECT count(*) FROM weave_a2a_artifact_chunks x WHERE NOT EXISTS (
            SELECT 1 FROM weave_a2a_task_artifacts a WHERE a.task_id = x.task_id AND a.pos = x.artifact_pos))::text AS chunks`,
    );
    return Object.fromEntries(Object.entries(r.rows[0] ?? {}).map(([k, v]) => [k, Number(v)]));
  }
  const none = { events: 0, history: 0, artifacts: 0, chunks: 0 };
  /** Rows of every kind the store holds, all tasks together. */
  async function rowsHeld(p: pg.Pool): Promise<number> {
    const r = await p.query<{ n: string }>(
      `SELECT ((SELECT count(*) FROM weave_a2a_events) + (SELECT count(*) FROM weave_a2a_task_history)
         + (SELECT count(*) FROM weave_a2a_task_artifacts) + (SELECT count(*) FROM weave_a2a_artifact_chunks))::text AS n`,
    );
    return Number(r.rows[0]?.n);
  }

  it('leaves no row of a task behind when the task goes: deleted, swept, making room, cut, or deleted by another replica while its writes race', async () => {
    await withBoundedStore(
      { maxBytes: 1_000_000, maxBytesPerOwner: 40_000, maxBytesPerTask: 15_000 },
      async (m, store, fresh) => {
        const owner = 'spiffe://t/orphans';
        /** A task with history, events, two artifacts, one of them in two chunks. */
        const full = async (state?: 'TASK_STATE_COMPLETED', size = 200) => {
          const r = await m.create({ owner, skill: 's', message: msg('go') });
          m.setStatus(r.task.id, 'TASK_STATE_WORKING');
          m.addArtifact(r.task.id, { artifactId: 'a', parts: [{ text: 'x'.repeat(size) }] });
          await m.flush();
          m.addArtifact(r.task.id, { artifactId: 'a', parts: [{ text: 'more' }] }, { append: true });
          m.addArtifact(r.task.id, { artifactId: 'b', parts: [{ text: 'b' }] });
          if (state) m.setStatus(r.task.id, state);
          await m.flush();
          return r.task.id;
        };
        // Deleted.
        const deleted = await full('TASK_STATE_COMPLETED');
        const kept = await full();
        const held = await rowsHeld(fresh);
        await store.delete(deleted);
        expect(await orphans(fresh)).toEqual(none);
        expect(await rowsHeld(fresh)).toBeLessThan(held);
        // Cut (maxBytesPerTask): its artifacts go, and their chunks with them.
        const cut = await full('TASK_STATE_COMPLETED', 16_000);
        expect((await store.get(cut))?.task.metadata?.['weave.truncated']).toBe('events,history,artifacts');
        expect(await orphans(fresh)).toEqual(none);
        // Making room: finished tasks of the caller go for new ones once its share is full.
        for (let i = 0; i < 12; i++) await full('TASK_STATE_COMPLETED', 3_000);
        expect(await store.get(cut)).toBeUndefined();
        expect(await orphans(fresh)).toEqual(none);
        // Swept once expired (every finished one).
        expect(await store.sweep(Date.now() + 2 * 3_600_000)).toBeGreaterThan(0);
        expect(await orphans(fresh)).toEqual(none);
        expect(await store.get(kept)).toBeDefined();
        // Deleted by another replica while this one's appends are in flight.
        const other = new PostgresTaskStore({ pool: fresh });
        const racing = await Promise.all(
          Array.from({ length: 12 }, () => m.create({ owner, skill: 's', message: msg('race') })),
        );
        await Promise.all(
          racing.map(async (r, i) => {
            m.setStatus(r.task.id, 'TASK_STATE_WORKING');
            m.addArtifact(r.task.id, { artifactId: 'r', parts: [{ text: `chunk ${i}` }] });
            await new Promise((resolve) => setTimeout(resolve, i % 4));
            await other.delete(r.task.id);
            m.addArtifact(r.task.id, { artifactId: 'r', parts: [{ text: 'late' }] }, { append: true });
            m.setStatus(r.task.id, 'TASK_STATE_COMPLETED');
          }),
        );
        await m.flush();
        for (const r of racing) expect(await store.get(r.task.id)).toBeUndefined();
        expect(await orphans(fresh)).toEqual(none);
        // Only the task still kept holds rows, and the counts still match the tasks.
        await store.delete(kept);
        expect(await rowsHeld(fresh)).toBe(0);
        expect(await usage(fresh)).toEqual({ '': 0 });
      },
    );
  });

  it('closes while a listen is still connecting: the listen fails typed, its connection goes back, close() returns; a closed store refuses typed', async () => {
    // What a TaskManager that is never closed leaves behind: its first lease tick starts
    // listening, and the store is closed before that connection is made.
    for (let i = 0; i < 5; i++) {
      const store = new PostgresTaskStore({ connectionString: db.url });
      let heard = 0;
      const listening = store.listen(() => heard++);
      const outcome = listening.then(
        () => 'listening',
        (err: unknown) => err,
      );
      await within(5_000, store.close(), 'close() while a listen connects');
      const got = await outcome;
      expect(got).toBeInstanceOf(TaskStoreUnavailableError);
      expect(store.pool.totalCount).toBe(0);
      await expect(store.listen(() => heard++)).rejects.toBeInstanceOf(TaskStoreUnavailableError);
      // Its pool is ended: every other use says so, typed, as for a database that went away.
      await expect(store.get(randomUUID())).rejects.toBeInstanceOf(TaskStoreUnavailableError);
      const late = newTaskOf('spiffe://t.test/late');
      await expect(store.create(late.record, late.first)).rejects.toBeInstanceOf(TaskStoreUnavailableError);
      expect(heard).toBe(0);
    }
  });

  it('closes while a never-closed TaskManager is starting its lease and listener', async () => {
    for (let i = 0; i < 5; i++) {
      const store = new PostgresTaskStore({ connectionString: db.url });
      const m = new TaskManager({ store });
      // Let the heartbeat land and the listener's connect begin, a little later each round.
      await new Promise((r) => setTimeout(r, 2 * i));
      await within(5_000, store.close(), 'close() under a starting TaskManager');
      expect(store.pool.totalCount).toBe(0);
      await m.close().catch(() => undefined);
    }
  });

  it('sweeps a backlog larger than one statement takes: 2 500 expired tasks all go, one running and one fresh stay', async () => {
    await withFreshDatabase(async (fresh) => {
      await migrate(fresh);
      const store = new PostgresTaskStore({ pool: fresh });
      const owner = 'spiffe://t.test/backlog';
      const made = Array.from({ length: 2502 }, () => newTaskOf(owner));
      const [running, late, ...expired] = made as [(typeof made)[0], (typeof made)[0], ...typeof made];
      await Promise.all(made.map(({ record, first }) => store.create(record, first)));
      const old = Date.now() - 3 * 3_600_000;
      for (const { record } of [...expired, late]) {
        await store.append(
          record.task.id,
          record.task,
          [statusEvent(record.task, 2, 'TASK_STATE_COMPLETED')],
          record === late.record ? Date.now() : old,
        );
      }
      expect(await store.sweep()).toBe(2500);
      expect(await store.sweep()).toBe(0);
      const left = await fresh.query<{ id: string }>('SELECT id FROM weave_a2a_tasks ORDER BY id');
      expect(left.rows.map((r) => r.id).sort()).toEqual([running.record.task.id, late.record.task.id].sort());
      await store.close();
    });
  });

  it('bounds every statement: a database that goes silent fails reads, writes and transactions with TaskStoreUnavailableError within queryTimeoutMs, and close() returns', async () => {
    const relay = new TcpRelay(Number(new URL(db.url).port));
    await relay.listen();
    const url = new URL(db.url);
    url.port = String(relay.port);
    const queryTimeoutMs = 1000;
    const store = new PostgresTaskStore({ connectionString: url.toString(), queryTimeoutMs });
    const pushes = new PostgresPushConfigStore({ connectionString: url.toString(), key, queryTimeoutMs });
    try {
      const { record, first } = newTaskOf('spiffe://t.test/silent');
      await store.create(record, first);
      expect(await pushes.listPushConfigs(record.task.id)).toEqual([]);
      // Connections open and idle in both pools, so each statement below goes out on one
      // (a connection made after the silence would wait out the connect timeout instead).
      await Promise.all(Array.from({ length: 8 }, () => store.get(record.task.id)));
      await Promise.all(Array.from({ length: 4 }, () => pushes.listPushConfigs(record.task.id)));
      relay.silence('pause'); // the pools' connections stay open; nothing comes back on them
      const bounded = async (what: string, op: () => Promise<unknown>) => {
        const t0 = Date.now();
        await expect(op(), what).rejects.toBeInstanceOf(TaskStoreUnavailableError);
        const took = Date.now() - t0;
        expect(took, what).toBeGreaterThanOrEqual(queryTimeoutMs - 50);
        expect(took, what).toBeLessThan(queryTimeoutMs + 2_000);
      };
      await bounded('get', () => store.get(record.task.id));
      await bounded('append', () =>
        store.append(
          record.task.id,
          record.task,
          [statusEvent(record.task, 2, 'TASK_STATE_WORKING')],
          Date.now(),
        ),
      );
      await bounded('a transaction (takeInput)', () => store.takeInput(record.task.id, () => true));
      await bounded('push configs', () => pushes.listPushConfigs(record.task.id));
      await bounded('listen', () => store.listen(() => undefined));
      await within(
        10_000,
        Promise.all([store.close(), pushes.close()]),
        'close() of stores on a silent database',
      );
    } finally {
      await relay.close();
      await store.close();
      await pushes.close();
    }
  });

  it('reports an unreachable database as TaskStoreUnavailableError, quickly', async () => {
    // A port nothing listens on: connection refused.
    const srv = (await import('node:net')).createServer();
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
    const port = (srv.address() as { port: number }).port;
    await new Promise<void>((r) => srv.close(() => r()));
    const store = new PostgresTaskStore({
      connectionString: `postgres://weave:x@127.0.0.1:${port}/postgres`,
    });
    const m = new TaskManager({ store });
    const started = Date.now();
    await expect(m.create({ owner: 'o', skill: 's', message: msg('x') })).rejects.toBeInstanceOf(
      TaskStoreUnavailableError,
    );
    expect(Date.now() - started).toBeLessThan(6_000);
    await store.close();
  });
});

/** `p`, or a failure naming `what` once `ms` have passed. */
async function within<T>(ms: number, p: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: still pending after ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([p, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** A new task of `owner` (SUBMITTED, one history message) and its first event, as a TaskManager would store it. */
function newTaskOf(
  owner: string,
  id: string = randomUUID(),
): { record: TaskRecord; first: { seq: number; event: { task: Task } } } {
  const now = Date.now();
  const task: Task = {
    id,
    contextId: randomUUID(),
    status: { state: 'TASK_STATE_SUBMITTED', timestamp: new Date(now).toISOString() },
    history: [{ ...msg('hello'), taskId: id }],
    artifacts: [],
  };
  return {
    record: { task, owner, skill: 's', createdAt: now, updatedAt: now, seq: 1 },
    first: { seq: 1, event: { task: structuredClone(task) } },
  };
}

/** `task`'s status set to `state`, as the event of number `seq`. */
function statusEvent(task: Task, seq: number, state: Task['status']['state']) {
  task.status = { state, timestamp: new Date().toISOString() };
  return {
    seq,
    event: { statusUpdate: { taskId: task.id, contextId: task.contextId, status: task.status } },
  };
}

function msg(text: string) {
  return { messageId: randomUUID(), role: 'ROLE_USER' as const, parts: [{ text }] };
}

describe.skipIf(!available)('weave db (the real bin)', () => {
  let db: Postgres;
  beforeAll(async () => {
    db = (await startPostgres()) as Postgres;
  });
  afterAll(async () => {
    await db?.stop();
  });

  it('migrates a fresh database, then reports it up to date; status agrees; an unreachable one fails with exit 1', async () => {
    const admin = new pg.Pool({ connectionString: db.url, max: 1 });
    const name = `cli_${randomUUID().replaceAll('-', '')}`;
    await admin.query(`CREATE DATABASE ${name}`);
    const url = new URL(db.url);
    url.pathname = `/${name}`;
    try {
      const before = await weave(['db', 'status'], { WEAVE_DATABASE_URL: url.toString() });
      expect(before.code).toBe(1);
      expect(before.stdout).toContain('schema version 0');
      expect(before.stderr).toMatch(/^SCHEMA_OUTDATED: /);
      const first = await weave(['db', 'migrate', '--url', url.toString()]);
      expect(first.stderr).toBe('');
      expect(first.code).toBe(0);
      const latest = (await loadMigrations()).at(-1)?.version;
      expect(first.stdout).toContain('applied 001_tasks');
      expect(first.stdout).toContain(`migrated: schema version ${latest}`);
      const again = await weave(['db', 'migrate', '--url', url.toString(), '--json']);
      expect(again.code).toBe(0);
      expect(JSON.parse(again.stdout)).toEqual({ applied: [], version: latest });
      const after = await weave(['db', 'status'], { WEAVE_DATABASE_URL: url.toString() });
      expect(after.code).toBe(0);
      expect(after.stdout).toContain(`schema version ${latest}, this Weave ships ${latest}`);
      const tables = await admin.query(`SELECT count(*)::int AS n FROM pg_database WHERE datname = $1`, [
        name,
      ]);
      expect(tables.rows[0]?.n).toBe(1);
    } finally {
      await admin.query(`DROP DATABASE ${name} WITH (FORCE)`);
      await admin.end();
    }
    const srv = (await import('node:net')).createServer();
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
    const port = (srv.address() as { port: number }).port;
    await new Promise<void>((r) => srv.close(() => r()));
    const down = await weave(['db', 'migrate', '--url', `postgres://weave:x@127.0.0.1:${port}/postgres`]);
    expect(down.code).toBe(1);
    expect(down.stderr).toMatch(/^TASK_STORE_UNAVAILABLE: /);
  }, 300_000); // five starts of the bin through tsx, on a shared 2-core machine
});
