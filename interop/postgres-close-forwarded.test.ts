// Requests one replica hands to the replica running the task (a reply to
// INPUT_REQUIRED, a cancel), on real PostgreSQL, while the replica asked
// closes: answered with what happened, not a retryable error for something
// that took effect. A read on the running replica right after another one
// answered a state never shows an earlier one. A closed replica says it is
// shutting down.
import { describe, expect, it } from 'vitest';
import { A2AServer, type Message, type StoredEvent, type Task } from '@weave/a2a';
import { PostgresTaskStore } from '@weave/a2a/postgres';
import {
  json,
  message,
  pgAvailable,
  replicasInProcess,
  until,
  type InProcessReplica,
} from './postgres/replicas-in-process.js';

/** A store whose steps the test slows down or watches, once armed. */
class HookedStore extends PostgresTaskStore {
  /** Runs before a reply is taken from the inbox (a slow taker). */
  beforeTake: (() => Promise<void>) | undefined;
  /** Runs before a write is sent (it commits that much later). */
  beforeAppend: (() => Promise<void>) | undefined;
  /** Runs once a write has committed, before its caller hears so (a late answer). */
  afterAppend: (() => Promise<void>) | undefined;
  /** Runs once a reply is posted in the inbox, or a cancel asked for. */
  onHandOver: (() => void) | undefined;

  override async takeInput(taskId: string, deliver: (message: Message) => boolean): Promise<boolean> {
    await this.beforeTake?.();
    return super.takeInput(taskId, deliver);
  }

  override async append(id: string, task: Task, events: readonly StoredEvent[], at: number): Promise<void> {
    await this.beforeAppend?.();
    await super.append(id, task, events, at);
    await this.afterAppend?.();
  }

  override async postInput(taskId: string, m: Message): Promise<string> {
    const post = await super.postInput(taskId, m);
    this.onHandOver?.();
    return post;
  }

  override async requestCancel(taskId: string): Promise<void> {
    await super.requestCancel(taskId);
    this.onHandOver?.();
  }
}

interface Replica extends InProcessReplica {
  store: HookedStore;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** `p`, or a failure naming `what` after `ms`. */
async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

describe.skipIf(!pgAvailable)(
  'requests handed to another replica while the replica asked closes, on PostgreSQL',
  () => {
    const gates = new Set<() => void>();
    const pg = replicasInProcess<Replica>({
      beforeClose: () => {
        for (const g of gates) g();
      },
    });

    async function replica(): Promise<Replica> {
      const store = new HookedStore({ connectionString: pg.db.url });
      const a2a = new A2AServer({ ...pg.options(), taskStore: store, storeRetryMaxMs: 200 });
      // Asks once, and greets.
      a2a.registerTaskHandler({ id: 'ask', name: 'ask', description: '', tags: [] }, async (ctx) => {
        const name = await ctx.requestInput('name?');
        return `hello ${name.parts[0]?.text ?? ''}`;
      });
      // Asks once, then works on until its signal aborts (or the suite ends).
      a2a.registerTaskHandler({ id: 'slow', name: 'slow', description: '', tags: [] }, async (ctx) => {
        await ctx.requestInput('name?');
        await new Promise<void>((resolve) => {
          gates.add(resolve);
          ctx.signal.addEventListener('abort', () => resolve(), { once: true });
        });
        return 'done';
      });
      return pg.serve(a2a, { store });
    }

    /** A task of `skill` started on `a`, once `a` reads it waiting for its reply. */
    async function asking(a: Replica, skill: string): Promise<string> {
      const id = (
        await json(a, 'SendMessage', { ...message(skill, 'hi'), configuration: { returnImmediately: true } })
      ).result.task.id;
      await until(
        async () => (await json(a, 'GetTask', { id })).result.status.state === 'TASK_STATE_INPUT_REQUIRED',
      );
      return id;
    }

    /** Resolves when `store` next hands a request over (posts a reply, asks for a cancel). */
    const handedOver = (store: HookedStore) =>
      new Promise<void>((resolve) => {
        store.onHandOver = resolve;
      });

    const texts = (t: Task) => t.history?.map((m) => m.parts[0]?.text);

    it('a blocking reply forwarded through a replica that closes meanwhile is answered with what the task did with it, at once', async () => {
      const a = await replica();
      const b = await replica();
      const id = await asking(a, 'ask');
      // The replica running the task takes the reply late: B closes while it waits for that.
      a.store.beforeTake = () => sleep(500);
      const posted = handedOver(b.store);
      const startedAt = Date.now();
      const answer = json(b, 'SendMessage', message('ask', 'bob', id));
      await posted;
      const closing = b.a2a.close();
      const got = await answer;
      expect(got.error).toBeUndefined();
      expect(got.result.task.status.state).toBe('TASK_STATE_COMPLETED');
      expect(got.result.task.artifacts?.map((x) => x.parts[0]?.text)).toEqual(['hello bob']);
      expect(Date.now() - startedAt).toBeLessThan(3_000);
      await closing;
      expect((await json(a, 'GetTask', { id })).result.status.state).toBe('TASK_STATE_COMPLETED');
    });

    it('a blocking reply whose task works on, forwarded through a replica that closes while it waits, is answered with the task as it is then (the reply in it)', async () => {
      const a = await replica();
      const b = await replica();
      const id = await asking(a, 'slow');
      const answer = json(b, 'SendMessage', message('slow', 'eve', id));
      // The reply was taken; B waits for the task to settle, which it does not.
      await until(
        async () => (await json(a, 'GetTask', { id })).result.status.state === 'TASK_STATE_WORKING',
      );
      await sleep(100);
      const closing = b.a2a.close();
      const got = await within(answer, 3_000, 'the blocking reply on the closing replica');
      expect(got.error).toBeUndefined();
      expect(got.result.task.status.state).toBe('TASK_STATE_WORKING');
      expect(texts(got.result.task)).toContain('eve');
      await closing;
    });

    it('CancelTask asked on a replica that closes before the running replica wrote CANCELED is answered CANCELED, at once', async () => {
      const a = await replica();
      const b = await replica();
      const id = await asking(a, 'slow');
      // The running replica writes CANCELED late: B closes while it waits for that.
      a.store.beforeAppend = () => sleep(500);
      const asked = handedOver(b.store);
      const startedAt = Date.now();
      const answer = json(b, 'CancelTask', { id });
      await asked;
      const closing = b.a2a.close();
      const got = await answer;
      expect(got.error).toBeUndefined();
      expect(got.result.status.state).toBe('TASK_STATE_CANCELED');
      expect(Date.now() - startedAt).toBeLessThan(3_000);
      await closing;
      a.store.beforeAppend = undefined;
      await a.a2a.manager.flush();
      expect((await json(a, 'GetTask', { id })).result.status.state).toBe('TASK_STATE_CANCELED');
    });

    it('a closed replica whose HTTP server still answers says it is shutting down (retryable), not that the store cannot be reached', async () => {
      const a = await replica();
      const b = await replica();
      const id = await asking(a, 'ask');
      await b.a2a.close();
      for (const [method, params] of [
        ['GetTask', { id }],
        ['CancelTask', { id }],
        ['ListTasks', {}],
      ] as const) {
        const got = await json(b, method, params);
        expect(got.error?.message, method).toBe('the agent is shutting down; try another instance');
      }
      // Nothing was done: the task still waits for its reply on A.
      expect((await json(a, 'GetTask', { id })).result.status.state).toBe('TASK_STATE_INPUT_REQUIRED');
    });

    it('GetTask on the running replica right after another replica answered a forwarded reply never shows an earlier state', async () => {
      const a = await replica();
      const b = await replica();
      const id = await asking(a, 'ask');
      // The running replica hears late that its write committed; B (told by the notice) answers first.
      a.store.afterAppend = () => sleep(400);
      const answered = await json(b, 'SendMessage', message('ask', 'ann', id));
      expect(answered.result.task.status.state).toBe('TASK_STATE_COMPLETED');
      const read = await json(a, 'GetTask', { id });
      expect(read.result.status.state).toBe('TASK_STATE_COMPLETED');
      expect(read.result).toEqual(answered.result.task);
      a.store.afterAppend = undefined;
    });
  },
);
