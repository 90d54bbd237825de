// What a replica hears and how it dates its tasks, on one real PostgreSQL:
// a LISTEN connection that goes silent (its packets dropped, no error ever
// comes) is found out and replaced, and replicas whose clocks disagree
// still expire and list tasks alike.
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TaskManager, type Message, type StoredEvent } from '@weave/a2a';
import { PostgresTaskStore, migrate } from '@weave/a2a/postgres';
import { TcpRelay } from '@weave/test-support/tcp-relay';
import { repoRoot, requireComponent, startPostgres, waitUntil, type Postgres } from './infra.js';
import { runHarness } from './peer-process.js';

const available = process.env.WEAVE_TEST_PG_URL !== undefined || requireComponent('postgres') !== undefined;

function msg(text: string): Message {
  return { messageId: randomUUID(), role: 'ROLE_USER', parts: [{ text }] };
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** The state a stored event says its task reached, if it is a status update. */
const stateOf = (e: StoredEvent) =>
  'statusUpdate' in e.event ? e.event.statusUpdate.status.state : undefined;

describe.skipIf(!available)('PostgreSQL replicas: a silent LISTEN connection, and clock skew', () => {
  let db: Postgres;

  beforeAll(async () => {
    db = (await startPostgres()) as Postgres;
    await migrate({ connectionString: db.url });
  });
  afterAll(async () => {
    await db?.stop();
  });

  it('a replica whose LISTEN connection goes silent replaces it within a lease third plus the query timeout: it follows, is canceled through and gets replies through another replica again', async () => {
    const leaseTtlMs = 3000;
    const queryTimeoutMs = 1000;
    // Replica A reaches the database through a relay that can black-hole
    // every connection open at a moment; its pool (the application's, not
    // the store's own) drops idle connections at once, so that afterwards
    // only the LISTEN connection, and statements then in flight, are dead.
    const relay = new TcpRelay(Number(new URL(db.url).port));
    await relay.listen();
    const viaRelay = new URL(db.url);
    viaRelay.port = String(relay.port);
    const pool = new pg.Pool({ connectionString: viaRelay.toString(), max: 6, idleTimeoutMillis: 100 });
    pool.on('error', () => undefined);
    const a = new TaskManager({
      store: new PostgresTaskStore({ pool, leaseTtlMs, queryTimeoutMs }),
      retryMaxMs: 200,
    });
    const b = new TaskManager({
      store: new PostgresTaskStore({ connectionString: db.url, leaseTtlMs, queryTimeoutMs }),
    });
    const owner = `spiffe://t/${randomUUID()}`;
    try {
      await a.listen();
      await b.listen();
      // The packets of every open connection of A are dropped from now on, and
      // neither end is told (as when a NAT or firewall loses its state); new
      // connections get through again a moment later.
      const silentAt = Date.now();
      relay.silence('pause');
      await sleep(300);
      relay.heal();
      await sleep(300);

      // A follows a task that runs on B: the first event is read at once, the
      // rest come only as B's notices (or a resync) tell A the log grew.
      const onB = await b.create({ owner, skill: 's', message: msg('followed') });
      const seen: StoredEvent[] = [];
      let ended = false;
      await a.follow(
        onB.task.id,
        0,
        (e) => seen.push(e),
        () => (ended = true),
      );
      await waitUntil('A to read the first event', () => seen.length > 0, { timeoutMs: 5000 });
      b.setStatus(onB.task.id, 'TASK_STATE_WORKING');
      b.setStatus(onB.task.id, 'TASK_STATE_COMPLETED');
      await b.flush();
      const bound = leaseTtlMs / 3 + queryTimeoutMs;
      await waitUntil('the follower on A to see the task end', () => ended, { timeoutMs: bound + 4000 });
      expect(Date.now() - silentAt).toBeLessThan(bound + 4000);
      expect(seen.map((e) => e.seq)).toEqual([1, 2, 3]);
      expect(stateOf(seen[2] as StoredEvent)).toBe('TASK_STATE_COMPLETED');

      // A cancel asked on B reaches the task running on A: A aborts its
      // signal and records CANCELED (not B, after waiting out its 5 s).
      const running = await a.create({ owner, skill: 's', message: msg('canceled') });
      const signal = a.signalOf(running.task.id) as AbortSignal;
      await a.flush();
      const askedAt = Date.now();
      const canceled = await b.cancelElsewhere(running.task.id, 5000);
      expect(signal.aborted).toBe(true);
      expect(Date.now() - askedAt).toBeLessThan(4000);
      expect(canceled?.task.status.state).toBe('TASK_STATE_CANCELED');

      // A reply sent to B reaches the handler waiting on A.
      const asking = await a.create({ owner, skill: 's', message: msg('asks') });
      a.setStatus(asking.task.id, 'TASK_STATE_INPUT_REQUIRED');
      const reply = a.awaitInput(asking.task.id);
      await a.flush();
      const stored = await b.store.get(asking.task.id);
      expect(stored?.task.status.state).toBe('TASK_STATE_INPUT_REQUIRED');
      await b.forwardInput(stored!, msg('bob'), 5000);
      expect((await reply).parts[0]?.text).toBe('bob');
    } finally {
      await a.close();
      await b.close();
      await relay.close();
      await pool.end();
    }
  });

  /**
   * Runs a replica in a process of its own whose clock (`Date.now`) is
   * `skewMs` off: it creates a task and finishes it, then reads task `read`.
   * Returns the id of the task it made and the state it read (null: not found).
   */
  async function skewedReplica(
    skewMs: number,
    owner: string,
    read: string,
  ): Promise<{ made: string; read: string | null }> {
    // The sources, through tsx, as the suite itself runs them: a fresh checkout has no dist.
    const a2a = pathToFileURL(join(repoRoot, 'packages/a2a/src/index.ts')).href;
    const postgres = pathToFileURL(join(repoRoot, 'packages/a2a/src/postgres.ts')).href;
    const script = `
      const { TaskManager } = await import(${JSON.stringify(a2a)});
      const { PostgresTaskStore } = await import(${JSON.stringify(postgres)});
      const store = new PostgresTaskStore({ connectionString: ${JSON.stringify(db.url)}, terminalTtlMs: 300000 });
      const m = new TaskManager({ store });
      const made = await m.create({ owner: ${JSON.stringify(owner)}, skill: 's',
        message: { messageId: crypto.randomUUID(), role: 'ROLE_USER', parts: [{ text: 'skewed' }] } });
      m.setStatus(made.task.id, 'TASK_STATE_COMPLETED');
      await m.flush();
      const got = await store.get(${JSON.stringify(read)});
      console.log(JSON.stringify({ type: 'done', made: made.task.id, read: got?.task.status.state ?? null }));
      await m.close();`;
    const run = await runHarness(
      process.execPath,
      [
        '--import',
        'tsx',
        '--conditions=weave-source',
        '--import',
        `data:text/javascript,const now = Date.now; Date.now = () => now() + (${skewMs});`,
        '--input-type=module',
        '-e',
        script,
      ],
      { timeoutMs: 30_000 },
    );
    expect(run.code, run.stderr).toBe(0);
    const done = run.lines.find((l) => l.type === 'done') as unknown as { made: string; read: string | null };
    return done;
  }

  it('replicas whose clocks are 6 minutes apart expire finished tasks alike (by the database’s clock) and list them by the status timestamps they show', async () => {
    const terminalTtlMs = 5 * 60_000;
    const store = new PostgresTaskStore({ connectionString: db.url, terminalTtlMs });
    const m = new TaskManager({ store });
    const owner = `spiffe://t/${randomUUID()}`;
    try {
      const here = await m.create({ owner, skill: 's', message: msg('here') });
      m.setStatus(here.task.id, 'TASK_STATE_COMPLETED');
      await m.flush();

      // A replica 6 minutes slow finishes a task: 6 minutes is not its age, here or there.
      const slow = await skewedReplica(-6 * 60_000, owner, here.task.id);
      expect(slow.read).toBe('TASK_STATE_COMPLETED');
      expect((await store.get(slow.made))?.task.status.state).toBe('TASK_STATE_COMPLETED');
      expect((await store.events(slow.made, 0, 10))?.map((e) => e.seq)).toEqual([1, 2]);

      // A replica 6 minutes fast reads a task finished just now as finished, not expired.
      const fast = await skewedReplica(6 * 60_000, owner, here.task.id);
      expect(fast.read).toBe('TASK_STATE_COMPLETED');

      // Most recent status first, as the timestamps read (spec §3.1.4): each replica stamps a
      // status with its own clock, so the fast one's comes first and the slow one's last.
      const listed = await store.list({ owner, limit: 10 });
      expect(listed.records.map((r) => r.task.id)).toEqual([fast.made, here.task.id, slow.made]);
      expect(listed.total).toBe(3);

      // The sweep, on the database's clock, takes none of them.
      await store.sweep();
      expect((await store.list({ owner, limit: 10 })).total).toBe(3);
    } finally {
      await m.close();
    }
  });
});
