// Races between replicas on one real PostgreSQL, made to happen at the
// worst moment on purpose (a store that acts just before the step under test).
import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TaskManager, type Message } from '@weave/a2a';
import { PostgresTaskStore, migrate } from '@weave/a2a/postgres';
import { requireComponent, startPostgres, type Postgres } from './infra.js';

const available = process.env.WEAVE_TEST_PG_URL !== undefined || requireComponent('postgres') !== undefined;

/** A replica's store that runs `beforeTake` as it starts taking a reply from the inbox. */
class TakingStore extends PostgresTaskStore {
  beforeTake: (() => void) | undefined;

  override takeInput(taskId: string, deliver: (message: Message) => boolean): Promise<boolean> {
    this.beforeTake?.();
    return super.takeInput(taskId, deliver);
  }
}

function msg(text: string): Message {
  return { messageId: randomUUID(), role: 'ROLE_USER', parts: [{ text }] };
}

describe.skipIf(!available)('races between replicas on PostgreSQL', () => {
  let db: Postgres;
  let pool: pg.Pool;

  beforeAll(async () => {
    db = (await startPostgres()) as Postgres;
    await migrate({ connectionString: db.url });
    pool = new pg.Pool({ connectionString: db.url, max: 2 });
    // Stopping the cluster terminates (57P01) a connection the pool is still
    // closing; without a listener that 'error' would fail the whole run.
    pool.on('error', () => undefined);
  });
  afterAll(async () => {
    await pool?.end();
    await db?.stop();
  });

  it('a reply handed over just as the handler stops waiting (canceled) is refused to its sender and not lost silently', async () => {
    const runner = new TakingStore({ connectionString: db.url });
    const a = new TaskManager({ store: runner });
    const b = new TaskManager({ store: new PostgresTaskStore({ connectionString: db.url }) });
    try {
      const rec = await a.create({ owner: 'spiffe://t/c', skill: 's', message: msg('go') });
      const id = rec.task.id;
      a.setStatus(id, 'TASK_STATE_INPUT_REQUIRED');
      const waited = a.awaitInput(id).then(
        () => 'delivered',
        () => 'ended',
      );
      await a.flush();
      // The wait ends at the worst moment: the reply is being taken from the inbox.
      runner.beforeTake = () => a.cancel(id);
      const stored = await b.store.get(id);
      expect(stored?.task.status.state).toBe('TASK_STATE_INPUT_REQUIRED');
      await expect(b.forwardInput(stored!, msg('late'), 5000)).rejects.toMatchObject({ jsonRpcCode: -32004 });
      expect(await waited).toBe('ended');
      await a.flush();
      const after = await b.store.get(id);
      expect(after?.task.status.state).toBe('TASK_STATE_CANCELED');
      // The refused reply is neither in the task nor left in the inbox.
      expect(after?.task.history?.map((m) => m.parts[0]?.text)).toEqual(['go']);
      const kept = await pool.query('SELECT 1 FROM weave_a2a_inbox WHERE task_id = $1', [id]);
      expect(kept.rowCount).toBe(0);
    } finally {
      await a.close();
      await b.close();
    }
  });
});
