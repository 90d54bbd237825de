// A replica closed (its task manager, and so its PostgreSQL store) answers
// what still reaches it as a draining server answers new work: UNAVAILABLE
// "the agent is shutting down", not "the task store cannot be reached". No
// server runs here: a closed store sends nothing, and the URLs lead nowhere.
import pg from 'pg';
import { describe, expect, it, vi } from 'vitest';
import { freePort } from '@weave/test-support/tcp-relay';
import { TaskManager, TaskStoreUnavailableError } from '../src/index.js';
import { asA2AError } from '../src/handler.js';
import { PostgresTaskStore } from '../src/postgres.js';
import type { TaskRecord } from '../src/store.js';

const SHUTTING_DOWN = {
  code: 'UNAVAILABLE',
  message: 'the agent is shutting down; try another instance',
  data: [{ metadata: { retryable: 'true' } }],
};

const silent = { warn: () => undefined, error: () => undefined };

/** What `call` fails with, as the bindings answer it. */
async function answered(call: () => Promise<unknown>) {
  const err = await call().then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(TaskStoreUnavailableError);
  return asA2AError(err, silent);
}

const url = async () => `postgres://weave:pw@127.0.0.1:${await freePort()}/weave`;

describe('a closed PostgreSQL store and task manager', () => {
  it('a store closed on a pool of the application refuses every call as shutting down, and leaves that pool open', async () => {
    const pool = new pg.Pool({ connectionString: await url() });
    const store = new PostgresTaskStore({ pool });
    await store.close();
    try {
      for (const call of [
        () => store.get('t-1'),
        () => store.events('t-1', 0, 10),
        () => store.list({ owner: 'spiffe://t/c', limit: 10 }),
        () => store.requestCancel('t-1'),
        () => store.takeInput('t-1', () => true),
      ]) {
        expect(await answered(call)).toMatchObject(SHUTTING_DOWN);
      }
      expect(pool.ending).toBe(false);
    } finally {
      await pool.end();
    }
  });

  it('a store closed on its own pool refuses every call as shutting down', async () => {
    const store = new PostgresTaskStore({ connectionString: await url() });
    await store.close();
    expect(await answered(() => store.get('t-1'))).toMatchObject(SHUTTING_DOWN);
  });

  it('a closed task manager refuses a reply or a cancel to hand to another replica at once, as shutting down', async () => {
    const store = new PostgresTaskStore({ connectionString: await url() });
    const manager = new TaskManager({ store });
    await manager.close();
    // Refused by the manager itself, before any statement: the closed store
    // would refuse those with the very same error.
    const statements = (
      ['get', 'events', 'postInput', 'withdrawInput', 'requestCancel', 'listen'] as const
    ).map((name) => vi.spyOn(store, name));
    const record = { task: { id: 't-1', contextId: 'c-1', status: { state: 'TASK_STATE_INPUT_REQUIRED' } } };
    const reply = { messageId: 'm-1', role: 'ROLE_USER' as const, parts: [{ text: 'hi' }] };
    expect(await answered(() => manager.cancelElsewhere('t-1'))).toMatchObject(SHUTTING_DOWN);
    expect(await answered(() => manager.forwardInput(record as TaskRecord, reply))).toMatchObject(
      SHUTTING_DOWN,
    );
    for (const statement of statements) expect(statement).not.toHaveBeenCalled();
  });
});
