// The PostgreSQL task store against a real PostgreSQL 15 on what it is given
// and how it fails: content as JSON gives it back (members set to undefined,
// -0), content PostgreSQL's JSON processing does not take as it is (NUL,
// lone surrogates), a read-only database or a statement timeout, and a pool
// too small for the store.
import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request } from 'undici';
import {
  A2AServer,
  InMemoryTaskStore,
  TaskManager,
  TaskStoreUnavailableError,
  type Artifact,
  type Message,
  type Task,
  type TaskStore,
} from '@weave/a2a';
import { PostgresTaskStore, TaskStoreRejectedError, migrate } from '@weave/a2a/postgres';
import { baseUrl, channel, createPki, mtlsServer } from '@weave/test-support';
import { TcpRelay } from '@weave/test-support/tcp-relay';
import { requireComponent, startPostgres, type Postgres } from './infra.js';
import { allowOnly } from './postgres/stream.js';

const available = process.env.WEAVE_TEST_PG_URL !== undefined || requireComponent('postgres') !== undefined;

const msg = (text: string): Message => ({ messageId: randomUUID(), role: 'ROLE_USER', parts: [{ text }] });

describe.skipIf(!available)('PostgreSQL task store: content and failures', () => {
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

  /** Resolves once `check` is true, checked every 20 ms (at most 20 s). */
  async function until(check: () => Promise<boolean>): Promise<void> {
    const end = Date.now() + 20_000;
    while (!(await check())) {
      if (Date.now() > end) throw new Error('timed out');
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  const lateAnswers: Array<[string, Artifact]> = [
    [
      'a member set to undefined',
      { artifactId: 'first', name: undefined, parts: [{ text: 'a', metadata: { note: undefined } }] },
    ],
    ['-0', { artifactId: 'first', parts: [{ data: { value: Math.round(-0.4) } }] }],
  ];

  it.each(lateAnswers)(
    'a write committed whose answer came after queryTimeoutMs is recognised on retry, with %s in its events: the task ends COMPLETED with every artifact',
    async (_, first) => {
      const relay = new TcpRelay(Number(new URL(db.url).port));
      await relay.listen();
      const url = new URL(db.url);
      url.port = String(relay.port);
      const store = new PostgresTaskStore({ connectionString: url.toString(), queryTimeoutMs: 500 });
      let timedOut!: () => void;
      const late = new Promise<void>((resolve) => (timedOut = resolve));
      const errors: unknown[] = [];
      const m = new TaskManager({
        store,
        retryMaxMs: 100,
        onStoreError: (err) => {
          errors.push(err);
          if (err instanceof TaskStoreUnavailableError) timedOut();
        },
      });
      try {
        const { task } = await m.create({ owner: 'spiffe://t.test/late', skill: 's', message: msg('x') });
        m.setStatus(task.id, 'TASK_STATE_WORKING');
        await m.flush();
        // The database's answers come late from here: the append commits, its caller hears of it too late.
        relay.delay(1_500);
        m.addArtifact(task.id, first);
        await late;
        await until(async () => {
          const r = await pool.query('SELECT 1 FROM weave_a2a_events WHERE task_id = $1 AND seq = 3', [
            task.id,
          ]);
          return r.rowCount === 1;
        });
        relay.delay(0);
        m.addArtifact(task.id, { artifactId: 'second', parts: [{ text: 'the result' }] });
        m.setStatus(task.id, 'TASK_STATE_COMPLETED');
        await m.flush();
        const stored = await store.get(task.id);
        expect(stored?.task.status.state).toBe('TASK_STATE_COMPLETED');
        expect(stored?.task.artifacts?.map((a) => a.artifactId)).toEqual(['first', 'second']);
        expect((await store.events(task.id, 0, 10))?.map((e) => e.seq)).toEqual([1, 2, 3, 4, 5]);
        expect(errors.filter((e) => !(e instanceof TaskStoreUnavailableError))).toEqual([]);
      } finally {
        relay.delay(0);
        await m.close();
        await relay.close();
      }
    },
  );

  /** Content PostgreSQL's JSON processing cannot de-escape: a NUL, lone surrogates (high, low). */
  const odd = 'a\u0000b \ud800 \udfff c';

  it('keeps a NUL and lone surrogates in a request, a handler output and a reply to INPUT_REQUIRED as the embedded store does', async () => {
    const pki = await createPki();
    const server = await pki.workload('/agent/pg');
    const client = await pki.workload('/agent/client');
    const made: Array<{ close: () => Promise<void> }> = [];
    const errors: unknown[] = [];
    async function agent(taskStore: TaskStore) {
      const a2a = new A2AServer({
        card: { name: 'content', description: 'content', version: '1.0.0' },
        selfId: server.id,
        enforcer: allowOnly(client.id.toString()),
        heartbeatMs: 0,
        taskStore,
        storeRetryMaxMs: 100,
      });
      a2a.registerTaskHandler({ id: 'echo', name: 'echo', description: '', tags: [] }, async (ctx) => {
        ctx.publishArtifact({ artifactId: 'in', parts: ctx.message.parts, metadata: ctx.message.metadata });
        ctx.publishArtifact({
          artifactId: 'out',
          name: `out ${odd}`,
          parts: [{ text: `tool said: ${odd}` }],
        });
        return `done ${odd}`;
      });
      a2a.registerTaskHandler({ id: 'ask', name: 'ask', description: '', tags: [] }, async (ctx) => {
        const reply = await ctx.requestInput('name?');
        return `hello ${reply.parts[0]?.text ?? ''}`;
      });
      const app = mtlsServer(server);
      await app.register(a2a.plugin);
      await app.listen({ port: 0, host: '127.0.0.1' });
      // After the mount, which gives the handler the server's logger: every store error is seen here.
      a2a.handler.setLogger({ error: (o: { err?: unknown }) => void errors.push(o.err), warn() {} });
      const ch = channel(client, server.id);
      made.push({ close: async () => (await a2a.close(), await ch.close(), await app.close()) });
      return async (method: string, params: unknown) => {
        const res = await request(`${baseUrl(app)}/`, {
          method: 'POST',
          dispatcher: ch,
          headers: { 'content-type': 'application/json', 'a2a-version': '1.0' },
          body: JSON.stringify({ jsonrpc: '2.0', id: 1, method, params }),
        });
        return {
          status: res.statusCode,
          ...(JSON.parse(await res.body.text()) as { result: Task & { task: Task } }),
        };
      };
    }
    /** What each store gives back of the same calls: the task, blocking, its reply, and GetTask afterwards. */
    async function run(rpc: Awaited<ReturnType<typeof agent>>) {
      const sent = await rpc('SendMessage', {
        message: {
          messageId: randomUUID(),
          role: 'ROLE_USER',
          parts: [{ text: odd }],
          metadata: { skill: 'echo', note: odd, [`key ${odd}`]: [odd] },
        },
      });
      expect(sent.status).toBe(200);
      const got = await rpc('GetTask', { id: sent.result.task.id });
      const asked = await rpc('SendMessage', {
        message: {
          messageId: randomUUID(),
          role: 'ROLE_USER',
          parts: [{ text: 'hi' }],
          metadata: { skill: 'ask' },
        },
      });
      expect(asked.result.task.status.state).toBe('TASK_STATE_INPUT_REQUIRED');
      await rpc('SendMessage', {
        message: {
          messageId: randomUUID(),
          role: 'ROLE_USER',
          taskId: asked.result.task.id,
          contextId: asked.result.task.contextId,
          parts: [{ text: odd }],
        },
      });
      // The reply is acknowledged before the handler is done with it: read until the task ends.
      let after = await rpc('GetTask', { id: asked.result.task.id });
      for (
        const end = Date.now() + 10_000;
        after.result.status.state === 'TASK_STATE_INPUT_REQUIRED' && Date.now() < end;
      ) {
        await new Promise((r) => setTimeout(r, 20));
        after = await rpc('GetTask', { id: asked.result.task.id });
      }
      return [sent.result.task, got.result, after.result].map(comparable);
    }
    /** A task without what differs between two runs (ids, times). */
    const comparable = (t: Task) => ({
      state: t.status.state,
      answer: t.status.message?.parts,
      // The result's artifact has a fresh id.
      artifacts: t.artifacts?.map((a) =>
        /^[0-9a-f-]{36}$/.test(a.artifactId) ? { ...a, artifactId: 'result' } : a,
      ),
      history: t.history?.map((m) => m.parts),
    });
    try {
      const pg = await run(await agent(new PostgresTaskStore({ connectionString: db.url })));
      const memory = await run(await agent(new InMemoryTaskStore()));
      expect(pg[0]?.state).toBe('TASK_STATE_COMPLETED');
      expect(pg[1]?.artifacts).toEqual([
        {
          artifactId: 'in',
          parts: [{ text: odd }],
          metadata: { skill: 'echo', note: odd, [`key ${odd}`]: [odd] },
        },
        { artifactId: 'out', name: `out ${odd}`, parts: [{ text: `tool said: ${odd}` }] },
        { artifactId: 'result', parts: [{ text: `done ${odd}` }] },
      ]);
      expect(pg[1]?.history).toEqual([[{ text: odd }]]);
      expect(pg[2]?.state).toBe('TASK_STATE_COMPLETED');
      expect(pg[2]?.artifacts).toEqual([{ artifactId: 'result', parts: [{ text: `hello ${odd}` }] }]);
      expect(pg[2]?.history?.at(-1)).toEqual([{ text: odd }]);
      expect(pg).toEqual(memory);
      expect(errors).toEqual([]);
    } finally {
      for (const m of made) await m.close();
      await pki.close();
    }
  });

  it('refuses what a text column cannot hold (a NUL in a context id) typed, not retryable, changing nothing', async () => {
    const store = new PostgresTaskStore({ connectionString: db.url });
    try {
      const m = new TaskManager({ store });
      const input = {
        owner: 'spiffe://t.test/ctx',
        skill: 's',
        message: { ...msg('x'), contextId: 'c\u0000' },
      };
      await expect(m.create(input)).rejects.toBeInstanceOf(TaskStoreRejectedError);
      await m.close();
    } finally {
      await store.close();
    }
  });

  it('a read-only database (a standby) and a statement timeout are retryable unavailability; migrate() of an up-to-date read-only database answers up to date', async () => {
    const name = `ro_${randomUUID().replaceAll('-', '')}`;
    await pool.query(`CREATE DATABASE ${name}`);
    const url = new URL(db.url);
    url.pathname = `/${name}`;
    const version = (await migrate({ connectionString: url.toString() })).version;
    await pool.query(`ALTER DATABASE ${name} SET default_transaction_read_only = on`);
    const store = new PostgresTaskStore({ connectionString: url.toString() });
    const m = new TaskManager({ store });
    try {
      expect(await migrate({ connectionString: url.toString() })).toEqual({ applied: [], version });
      await expect(
        m.create({ owner: 'spiffe://t.test/ro', skill: 's', message: msg('x') }),
      ).rejects.toMatchObject({
        code: 'TASK_STORE_UNAVAILABLE',
        message: expect.stringMatching(/read-only transaction/),
      });
    } finally {
      await m.close();
      await pool.query(`DROP DATABASE ${name} WITH (FORCE)`);
    }
    // A server statement timeout, on a table held locked by another session.
    const timed = new URL(db.url);
    timed.searchParams.set('options', '-c statement_timeout=200');
    const slow = new PostgresTaskStore({ connectionString: timed.toString() });
    const holder = await pool.connect();
    try {
      await holder.query('BEGIN');
      await holder.query('LOCK TABLE weave_a2a_tasks IN ACCESS EXCLUSIVE MODE');
      await expect(slow.get(randomUUID())).rejects.toMatchObject({
        code: 'TASK_STORE_UNAVAILABLE',
        message: expect.stringMatching(/statement timeout/),
      });
    } finally {
      await holder.query('ROLLBACK');
      holder.release();
      await slow.close();
    }
  });

  it('refuses a pool of one connection (the store holds one for LISTEN) typed, at construction', () => {
    const one = new pg.Pool({ connectionString: db.url, max: 1 });
    try {
      expect(() => new PostgresTaskStore({ pool: one })).toThrow(
        expect.objectContaining({
          code: 'A2A_CONFIG_INVALID',
          message: expect.stringMatching(/max 1 .*LISTEN/),
        }),
      );
      expect(new PostgresTaskStore({ pool: new pg.Pool({ max: 2 }) })).toBeInstanceOf(PostgresTaskStore);
    } finally {
      void one.end();
    }
  });
});
