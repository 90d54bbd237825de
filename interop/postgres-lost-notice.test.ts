// Notices lost while a replica cannot reach PostgreSQL (its LISTEN
// connection down): a cancel asked on another replica still aborts the
// handler and ends the task the same on every replica, a canceled task takes
// no reply, and a reply forwarded meanwhile is still taken. A lost notice
// costs latency, never an event.
import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { request } from 'undici';
import {
  A2AErrorCode,
  A2AServer,
  TaskCanceledError,
  TaskManager,
  type StoredEvent,
  type Task,
} from '@weave/a2a';
import { PostgresTaskStore } from '@weave/a2a/postgres';
import { TcpRelay } from '@weave/test-support/tcp-relay';
import { waitUntil } from './infra.js';
import {
  json,
  message,
  pgAvailable,
  replicasInProcess,
  type InProcessReplica,
} from './postgres/replicas-in-process.js';
import { readEvents, stateOf, type Sse } from './postgres/stream.js';

interface Replica extends InProcessReplica {
  /** Task ids, once per handler run. */
  ran: string[];
  /** Per task whose handler's signal aborted: its reason. */
  aborts: Map<string, unknown>;
  /** Replies a handler got, per task. */
  replies: Map<string, string[]>;
}

/** A replica's store that runs `beforeAppend` (once) just before its next append. */
class RacedStore extends PostgresTaskStore {
  beforeAppend: (() => Promise<void>) | undefined;

  override async append(
    id: string,
    task: Task,
    events: readonly StoredEvent[],
    updatedAt: number,
  ): Promise<void> {
    const before = this.beforeAppend;
    this.beforeAppend = undefined;
    await before?.();
    return super.append(id, task, events, updatedAt);
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Long enough that no replica gives its tasks up during a cut (each cut here is shorter). */
const LEASE_MS = 15_000;

describe.skipIf(!pgAvailable)('notices lost while a replica is cut from PostgreSQL', () => {
  const relays: TcpRelay[] = [];
  const pg = replicasInProcess<Replica>({
    beforeClose: async () => {
      for (const c of relays) await c.listen().catch(() => undefined);
    },
    afterReplicasClosed: async () => {
      for (const c of relays) await c.close();
    },
  });

  async function replica(connectionString: string): Promise<Replica> {
    const ran: string[] = [];
    const aborts = new Map<string, unknown>();
    const replies = new Map<string, string[]>();
    const a2a = new A2AServer({
      ...pg.options(),
      taskStore: new PostgresTaskStore({ connectionString, leaseTtlMs: LEASE_MS }),
      storeRetryMaxMs: 200,
    });
    // Publishes an artifact every 50 ms until its signal aborts.
    a2a.registerTaskHandler({ id: 'count', name: 'count', description: '', tags: [] }, async (ctx) => {
      ran.push(ctx.taskId);
      const signal = ctx.signal;
      signal.addEventListener('abort', () => aborts.set(ctx.taskId, signal.reason), { once: true });
      for (let i = 0; i < 1200 && !signal.aborted; i++) {
        ctx.publishArtifact({ artifactId: `step-${i}`, parts: [{ text: String(i) }] });
        await sleep(50);
      }
      return 'counted';
    });
    // Asks for a name, and greets.
    a2a.registerTaskHandler({ id: 'ask', name: 'ask', description: '', tags: [] }, async (ctx) => {
      ran.push(ctx.taskId);
      const signal = ctx.signal;
      signal.addEventListener('abort', () => aborts.set(ctx.taskId, signal.reason), { once: true });
      const name = (await ctx.requestInput('name?')).parts[0]?.text ?? '';
      replies.set(ctx.taskId, [...(replies.get(ctx.taskId) ?? []), name]);
      return `hello ${name}`;
    });
    return pg.serve(a2a, { ran, aborts, replies });
  }

  /** Replica A reaches the database through a relay the test cuts; B directly. */
  async function pair(): Promise<{ a: Replica; b: Replica; cut: TcpRelay }> {
    const cut = new TcpRelay(Number(new URL(pg.db.url).port));
    relays.push(cut);
    await cut.listen();
    const url = new URL(pg.db.url);
    url.port = String(cut.port);
    return { a: await replica(url.toString()), b: await replica(pg.db.url), cut };
  }

  const stateOn = async (r: Replica, id: string) => (await json(r, 'GetTask', { id })).result.status.state;

  /** True when `reason` is what a cancel aborts a handler's signal with. */
  const isCancel = (reason: unknown) => reason instanceof TaskCanceledError;

  it('a cancel asked on B while A is cut from the database aborts the handler running on A, once the cut heals: A and B both read CANCELED, and a stream on A ends with it', async () => {
    const { a, b, cut } = await pair();
    const id = (
      await json(a, 'SendMessage', { ...message('count', 'go'), configuration: { returnImmediately: true } })
    ).result.task.id;
    await waitUntil(
      'B to read 2 artifacts',
      async () => ((await json(b, 'GetTask', { id })).result.artifacts?.length ?? 0) >= 2,
    );
    const res = await request(`${a.url}/`, {
      method: 'POST',
      dispatcher: a.channel,
      headers: { 'content-type': 'application/json', 'a2a-version': '1.0' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'SubscribeToTask', params: { id } }),
    });
    const streamed: Sse[] = [];
    const onA = readEvents(res.body, (es) => stateOf(es.at(-1)) === 'TASK_STATE_CANCELED', streamed);

    await cut.close();
    // B asks A, which does not hear it; after waiting that out, B writes CANCELED itself.
    const canceled = json(b, 'CancelTask', { id });
    await sleep(2000);
    await cut.listen();
    const answer = await canceled;
    expect(answer.error).toBeUndefined();
    expect(answer.result.status.state).toBe('TASK_STATE_CANCELED');

    // A finds out within a bound: its handler's signal aborts as on a cancel, and it reads CANCELED.
    const decidedAt = Date.now();
    await waitUntil("the handler's signal on A to abort", () => a.aborts.has(id), { timeoutMs: 5000 });
    await waitUntil('A to read CANCELED', async () => (await stateOn(a, id)) === 'TASK_STATE_CANCELED', {
      timeoutMs: 5000,
    });
    expect(Date.now() - decidedAt).toBeLessThan(5000);
    expect(isCancel(a.aborts.get(id))).toBe(true);
    expect(await stateOn(b, id)).toBe('TASK_STATE_CANCELED');
    expect((await onA).broken).toBe(false);
    expect(stateOf(streamed.at(-1))).toBe('TASK_STATE_CANCELED');
    // Run once, on A; nothing it publishes afterwards reaches the store.
    expect([...a.ran, ...b.ran]).toEqual([id]);
    const kept = (await json(b, 'GetTask', { id })).result.artifacts?.length;
    await sleep(300);
    expect((await json(a, 'GetTask', { id })).result.artifacts?.length).toBe(kept);
    expect(await stateOn(b, id)).toBe('TASK_STATE_CANCELED');
  });

  it('a task waiting for input on A, canceled through B while A is cut (CANCELED written during the cut), is ended on A once it hears again, and takes no later reply', async () => {
    const { a, b, cut } = await pair();
    const id = (await json(a, 'SendMessage', message('ask', 'hi'))).result.task.id;
    expect(await stateOn(b, id)).toBe('TASK_STATE_INPUT_REQUIRED');

    await cut.close();
    // B waits 5 s for A to act on its notice, then writes CANCELED: A is still cut then.
    const answer = await json(b, 'CancelTask', { id });
    expect(answer.result.status.state).toBe('TASK_STATE_CANCELED');
    await sleep(500);
    expect(await stateOn(b, id)).toBe('TASK_STATE_CANCELED');
    await cut.listen();
    const healedAt = Date.now();

    await waitUntil('A to read CANCELED', async () => (await stateOn(a, id)) === 'TASK_STATE_CANCELED', {
      timeoutMs: 8000,
    });
    expect(Date.now() - healedAt).toBeLessThan(8000);
    expect(isCancel(a.aborts.get(id))).toBe(true);
    // A reply sent to A now is refused, and the canceled task's handler does not resume.
    const late = await json(a, 'SendMessage', message('ask', 'late', id));
    expect(late.error?.code).toBe(A2AErrorCode.UnsupportedOperation);
    await sleep(300);
    expect(a.replies.get(id)).toBeUndefined();
    expect(await stateOn(b, id)).toBe('TASK_STATE_CANCELED');
    expect([...a.ran, ...b.ran]).toEqual([id]);
  });

  it('a reply to INPUT_REQUIRED sent to B while A (running the task) is cut from the database is taken once the cut heals, not refused as if nobody waited', async () => {
    const { a, b, cut } = await pair();
    const id = (await json(a, 'SendMessage', message('ask', 'hi'))).result.task.id;
    expect(await stateOn(b, id)).toBe('TASK_STATE_INPUT_REQUIRED');

    await cut.close();
    const replied = json(b, 'SendMessage', message('ask', 'bob', id));
    await sleep(2000);
    await cut.listen();
    const answer = await replied;
    expect(answer.error).toBeUndefined();
    expect(answer.result.task.status.state).toBe('TASK_STATE_COMPLETED');
    expect(answer.result.task.artifacts?.map((x) => x.parts[0]?.text)).toEqual(['hello bob']);
    expect(a.replies.get(id)).toEqual(['bob']);
    expect(await stateOn(a, id)).toBe('TASK_STATE_COMPLETED');
    expect([...a.ran, ...b.ran]).toEqual([id]);
  });

  it("CANCELED written by a replica not running the task while its runner writes in between still lands, after the runner's events; the runner then stops: its signal aborts as on a cancel and it reads CANCELED", async () => {
    const a = new TaskManager({
      store: new PostgresTaskStore({ connectionString: pg.db.url, leaseTtlMs: LEASE_MS }),
    });
    const raced = new RacedStore({ connectionString: pg.db.url, leaseTtlMs: LEASE_MS });
    const b = new TaskManager({ store: raced });
    try {
      const { task } = await a.create({
        owner: 'spiffe://t/c',
        skill: 's',
        message: { messageId: randomUUID(), role: 'ROLE_USER', parts: [{ text: 'go' }] },
      });
      const id = task.id;
      const signal = a.signalOf(id) as AbortSignal;
      a.setStatus(id, 'TASK_STATE_WORKING');
      await a.flush();
      // A, not hearing the cancel, writes between B's read of the task and B's append.
      raced.beforeAppend = async () => {
        a.addArtifact(id, { artifactId: 'between', parts: [{ text: 'x' }] });
        await a.flush();
      };
      const ended = await b.cancelStored(id);
      expect(ended?.task.status.state).toBe('TASK_STATE_CANCELED');
      expect(ended?.seq).toBe(4);
      // A's next write meets CANCELED (if no notice told it first): it gives the task up.
      a.addArtifact(id, { artifactId: 'after', parts: [{ text: 'y' }] });
      await a.flush();
      await waitUntil("A's signal to abort", () => signal.aborted, { timeoutMs: 5000 });
      expect(isCancel(signal.reason)).toBe(true);
      expect(a.isLive(id)).toBe(false);
      expect((await a.get(id))?.task.status.state).toBe('TASK_STATE_CANCELED');
      const stored = await b.store.get(id);
      expect(stored?.seq).toBe(4);
      expect(stored?.task.artifacts?.map((x) => x.artifactId)).toEqual(['between']);
    } finally {
      await a.close();
      await b.close();
    }
  });
});
