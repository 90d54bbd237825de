// Blocking and streaming replies to INPUT_REQUIRED on real PostgreSQL: the
// answer is what the task did with the reply, on the replica running the
// task as through another one, as on the embedded store. And a blocking
// SendMessage whose task this replica gives up while the database is away
// names the task instead of a retryable error (a retry would run it twice).
import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { A2AServer, ORPHAN_REASON, TaskLeaseLostError, type StreamResponse, type Task } from '@weave/a2a';
import { PostgresTaskStore } from '@weave/a2a/postgres';
import { TcpRelay } from '@weave/test-support/tcp-relay';
import {
  json,
  message,
  pgAvailable,
  replicasInProcess,
  rpc,
  until,
  type InProcessReplica,
} from './postgres/replicas-in-process.js';
import { eventsOf } from './postgres/stream.js';

interface Replica extends InProcessReplica {
  ran: string[];
  /** Per task given up: whether `ctx.signal` read after the abort is the signal first handed out, and its reason. */
  aborts: Map<string, { same: boolean; reason: unknown }>;
}

describe.skipIf(!pgAvailable)('replies and lost tasks of a blocking SendMessage on PostgreSQL', () => {
  const gates = new Map<string, () => void>();
  const pg = replicasInProcess<Replica>({
    beforeClose: () => {
      for (const g of gates.values()) g();
    },
  });

  /** A replica on `connectionString` (the embedded store without one). */
  async function replica(connectionString?: string, leaseTtlMs?: number): Promise<Replica> {
    const ran: string[] = [];
    const aborts = new Map<string, { same: boolean; reason: unknown }>();
    const a2a = new A2AServer({
      ...pg.options(),
      ...(connectionString
        ? {
            taskStore: new PostgresTaskStore({ connectionString, ...(leaseTtlMs ? { leaseTtlMs } : {}) }),
            storeRetryMaxMs: 200,
          }
        : {}),
    });
    // Two turns: asks for a name, then for an age, and greets.
    a2a.registerTaskHandler({ id: 'ask', name: 'ask', description: '', tags: [] }, async (ctx) => {
      ran.push(ctx.taskId);
      const name = await ctx.requestInput('name?');
      const age = await ctx.requestInput(`age of ${name.parts[0]?.text ?? ''}?`);
      return `hello ${name.parts[0]?.text ?? ''} (${age.parts[0]?.text ?? ''})`;
    });
    // Publishes, then waits for its gate or its signal.
    a2a.registerTaskHandler({ id: 'gate', name: 'gate', description: '', tags: [] }, async (ctx) => {
      ran.push(ctx.taskId);
      const first = ctx.signal;
      ctx.publishArtifact({ artifactId: 'a', parts: [{ text: 'before' }] });
      await new Promise<void>((resolve) => {
        gates.set(ctx.message.parts[0]?.text ?? '', resolve);
        first.addEventListener('abort', () => resolve(), { once: true });
      });
      if (first.aborted) aborts.set(ctx.taskId, { same: ctx.signal === first, reason: ctx.signal.reason });
      return 'done';
    });
    return pg.serve(a2a, { ran, aborts });
  }

  /** An `ask` task started on `r`, once `reader` reads it waiting for its first reply. */
  async function asked(r: Replica, reader: Replica): Promise<string> {
    const id = (await json(r, 'SendMessage', message('ask', 'hi'))).result.task.id;
    await until(
      async () => (await json(reader, 'GetTask', { id })).result.status.state === 'TASK_STATE_INPUT_REQUIRED',
    );
    return id;
  }

  const prompt = (t: Task) => t.status.message?.parts[0]?.text;

  it('a blocking reply to INPUT_REQUIRED answers with what the task did with it: on the replica running the task, through another one, and on the embedded store', async () => {
    const a = await replica(pg.db.url);
    const b = await replica(pg.db.url);
    const memory = await replica();
    for (const [runs, answers] of [
      [a, a],
      [a, b],
      [memory, memory],
    ] as const) {
      const id = await asked(runs, answers);
      // The first reply brings the second question, not the first one again.
      const second = await json(answers, 'SendMessage', message('ask', 'bob', id));
      expect(second.error).toBeUndefined();
      expect(second.result.task.status.state).toBe('TASK_STATE_INPUT_REQUIRED');
      expect(prompt(second.result.task)).toBe('age of bob?');
      // The second one, the end of the task.
      const done = await json(answers, 'SendMessage', message('ask', '42', id));
      expect(done.result.task.status.state).toBe('TASK_STATE_COMPLETED');
      expect(done.result.task.artifacts?.map((x) => x.parts[0]?.text)).toEqual(['hello bob (42)']);
      // As the store has it.
      expect((await json(answers, 'GetTask', { id })).result).toEqual(done.result.task);
    }
    expect(b.ran).toEqual([]);
  });

  it('a streaming reply to INPUT_REQUIRED carries what the task did with it, to the next question, on the replica running the task and through another one', async () => {
    const a = await replica(pg.db.url);
    const b = await replica(pg.db.url);
    for (const answers of [a, b]) {
      const id = await asked(a, answers);
      const res = await rpc(answers, 'SendStreamingMessage', message('ask', 'eve', id));
      const results = (await eventsOf(res.body)).map((e) => e.data.result as StreamResponse);
      expect(results[0]).toMatchObject({ task: { status: { state: 'TASK_STATE_INPUT_REQUIRED' } } });
      expect(results.at(-1)).toMatchObject({
        statusUpdate: {
          status: { state: 'TASK_STATE_INPUT_REQUIRED', message: { parts: [{ text: 'age of eve?' }] } },
        },
      });
    }
  });

  /** A `gate` task started by a blocking SendMessage on a replica cut from the database once its handler ran. */
  async function lostOnA() {
    const ttl = 1500;
    const cut = new TcpRelay(Number(new URL(pg.db.url).port));
    await cut.listen();
    const url = new URL(pg.db.url);
    url.port = String(cut.port);
    const a = await replica(url.toString(), ttl);
    const b = await replica(pg.db.url, ttl);
    const gate = `g-${randomUUID()}`;
    const answer = json(a, 'SendMessage', message('gate', gate));
    await until(() => gates.has(gate));
    const id = a.ran[0] as string;
    await until(async () => (await a.a2a.manager.get(id))?.seq === 3); // the task, WORKING, 'before': written
    await cut.close(); // A can no longer renew its lease, nor read the task
    return { a, b, cut, id, answer };
  }

  it('a blocking SendMessage whose task is given up while the database is away answers with the task as last written, not a retryable UNAVAILABLE; the task is failed elsewhere, once', async () => {
    const { a, b, cut, id, answer } = await lostOnA();
    const got = await answer;
    expect(got.error).toBeUndefined();
    expect(got.status).toBe(200);
    expect(got.result.task.id).toBe(id);
    expect(got.result.task.status.state).toBe('TASK_STATE_WORKING');
    expect(got.result.task.artifacts?.map((x) => x.parts[0]?.text)).toEqual(['before']);
    expect(a.a2a.manager.isLive(id)).toBe(false);
    await cut.listen();
    // The client reads it later: failed by the replica that claimed it, not run again.
    await until(async () => (await json(b, 'GetTask', { id })).result.status.state === 'TASK_STATE_FAILED');
    expect(JSON.stringify((await json(b, 'GetTask', { id })).result.status)).toContain(ORPHAN_REASON);
    expect(pg.replicas.filter((r) => r !== a && r.ran.includes(id))).toEqual([]);
    await cut.close();
  });

  it('a handler reading ctx.signal after its task was given up gets the signal it first had, aborted with TaskLeaseLostError', async () => {
    const { a, cut, id, answer } = await lostOnA();
    await answer;
    await until(() => a.aborts.has(id));
    const seen = a.aborts.get(id);
    expect(seen?.same).toBe(true);
    expect(seen?.reason).toBeInstanceOf(TaskLeaseLostError);
    await cut.close();
  });
});
