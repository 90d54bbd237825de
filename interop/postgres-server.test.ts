// A2AServer replicas on one real PostgreSQL: what one replica did, another
// reads (task, list, event replay after Last-Event-ID); a database that goes
// away refuses new tasks with a retryable error while a running task goes on
// and is written through once it is back.
import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { request } from 'undici';
import {
  A2AServer,
  ORPHAN_REASON,
  ORPHAN_REASON_LIMITED,
  TaskLeaseLostError,
  type CallerLimitsInput,
  TaskManager,
  type StreamResponse,
} from '@weave/a2a';
import { PostgresPushConfigStore, PostgresTaskStore, migrate } from '@weave/a2a/postgres';
import { TcpRelay } from '@weave/test-support/tcp-relay';
import {
  json,
  pgAvailable,
  replicasInProcess,
  rpc,
  until,
  type InProcessReplica,
} from './postgres/replicas-in-process.js';
import { eventsOf, readEvents, type Sse } from './postgres/stream.js';

interface Replica extends InProcessReplica {
  ran: string[];
  aborted: string[];
  pushed: Array<{ taskId: string; event: StreamResponse }>;
}

describe.skipIf(!pgAvailable)('A2AServer replicas on PostgreSQL', () => {
  const gates = new Map<string, () => void>();
  const pg = replicasInProcess<Replica>({
    beforeClose: () => {
      for (const g of gates.values()) g();
    },
  });

  const pushKey = randomUUID().replaceAll('-', '').repeat(2);

  async function replica(
    connectionString: string,
    leaseTtlMs?: number,
    limits?: { perCaller?: CallerLimitsInput; maxSubscribersPerTask?: number },
    store?: { maxBytes?: number; maxBytesPerOwner?: number; queryTimeoutMs?: number },
  ): Promise<Replica> {
    const ran: string[] = [];
    const aborted: string[] = [];
    const pushed: Array<{ taskId: string; event: StreamResponse }> = [];
    const a2a = new A2AServer({
      ...pg.options(),
      taskStore: new PostgresTaskStore({ connectionString, ...(leaseTtlMs ? { leaseTtlMs } : {}), ...store }),
      // Push receivers of this replica: recorded, not sent.
      push: {
        enabled: true,
        store: new PostgresPushConfigStore({ connectionString, key: pushKey }),
        send: async (config, event) => {
          pushed.push({ taskId: config.taskId, event });
        },
      },
      // Writes that failed are retried at least every 200 ms.
      storeRetryMaxMs: 200,
      ...(limits ? { limits } : {}),
    });
    a2a.registerTaskHandler({ id: 'gate', name: 'gate', description: '', tags: [] }, async (ctx) => {
      ran.push(ctx.taskId);
      ctx.publishArtifact({ artifactId: 'a', parts: [{ text: 'before' }] });
      await new Promise<void>((resolve) => gates.set(ctx.message.parts[0]?.text ?? '', resolve));
      ctx.publishArtifact({ artifactId: 'b', parts: [{ text: 'after' }] });
      return 'done';
    });
    // Waits for its gate, then publishes 30 artifacts a few ms apart (many
    // writes, many notices) and completes; records whether its signal aborted.
    a2a.registerTaskHandler({ id: 'burst', name: 'burst', description: '', tags: [] }, async (ctx) => {
      ran.push(ctx.taskId);
      ctx.signal.addEventListener('abort', () => aborted.push(ctx.taskId), { once: true });
      await new Promise<void>((resolve) => gates.set(ctx.message.parts[0]?.text ?? '', resolve));
      for (let i = 0; i < 30 && !ctx.signal.aborted; i++) {
        ctx.publishArtifact({ artifactId: `p${i}`, parts: [{ text: String(i) }] });
        await new Promise((r) => setTimeout(r, 3));
      }
      return 'done';
    });
    // Asks for a name and greets it.
    a2a.registerTaskHandler({ id: 'ask', name: 'ask', description: '', tags: [] }, async (ctx) => {
      ran.push(ctx.taskId);
      const reply = await ctx.requestInput('name?');
      return `hello ${reply.parts[0]?.text ?? ''}`;
    });
    // Re-runnable: runs again on another replica when this one dies.
    a2a.registerTaskHandler(
      { id: 'again', name: 'again', description: '', tags: [] },
      async (ctx) => {
        ran.push(ctx.taskId);
        await new Promise<void>((resolve) => gates.set(ctx.message.parts[0]?.text ?? '', resolve));
        ctx.publishArtifact({ artifactId: 'x', parts: [{ text: 'after' }] });
        return 'done';
      },
      { rerunnable: true },
    );
    return pg.serve(a2a, { ran, aborted, pushed });
  }

  const send = (r: Replica, gate: string, returnImmediately = true, skill = 'gate', pushUrl?: string) =>
    json(r, 'SendMessage', {
      message: { messageId: randomUUID(), role: 'ROLE_USER', parts: [{ text: gate }], metadata: { skill } },
      configuration: {
        returnImmediately,
        ...(pushUrl ? { taskPushNotificationConfig: { url: pushUrl, token: 'secret' } } : {}),
      },
    });

  /** A replica whose every database connection goes through a relay the test can cut. */
  async function partitioned(
    leaseTtlMs: number,
    dbUrl = pg.db.url,
    limits?: Parameters<typeof replica>[2],
    store?: Parameters<typeof replica>[3],
  ): Promise<{ r: Replica; cut: TcpRelay }> {
    const cut = new TcpRelay(Number(new URL(pg.db.url).port));
    await cut.listen();
    const url = new URL(dbUrl);
    url.port = String(cut.port);
    return { r: await replica(url.toString(), leaseTtlMs, limits, store), cut };
  }

  /**
   * Opens SubscribeToTask on `r` and reads its SSE events as they come.
   * `stopAfter` leaves (drops the connection) once an event with that id or
   * higher arrived, keeping only the events up to it: a client that went away.
   */
  function subscribe(r: Replica, id: string, lastEventId?: number, stopAfter?: number): Stream {
    const events: Sse[] = [];
    const gone = new AbortController();
    const done = (async () => {
      const res = await request(`${r.url}/`, {
        method: 'POST',
        dispatcher: r.channel,
        signal: gone.signal,
        headers: {
          'content-type': 'application/json',
          'a2a-version': '1.0',
          ...(lastEventId === undefined ? {} : { 'last-event-id': String(lastEventId) }),
        },
        body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'SubscribeToTask', params: { id } }),
      });
      expect(res.statusCode).toBe(200);
      await readEvents(
        res.body,
        (seen) => stopAfter !== undefined && Number(seen.at(-1)?.id) >= stopAfter,
        events,
      );
    })();
    return { events, done, leave: () => gone.abort() };
  }

  /** A `burst` task running on replica A, partitioned and held at its gate, and a replica B on the database. */
  async function burstOnA(ttl: number, store?: Parameters<typeof replica>[3]) {
    const { r: a, cut } = await partitioned(ttl, pg.db.url, undefined, store);
    const b = await replica(pg.db.url, ttl);
    const gate = `b-${randomUUID()}`;
    const started = await send(a, gate, true, 'burst');
    const id = started.result.task.id;
    await until(() => gates.has(gate));
    return { a, b, cut, gate, id };
  }

  /** GetTask on `r` until the task is in `state` (or 20 s passed): the last answer. */
  async function reaches(r: Replica, id: string, state: string) {
    let got = await json(r, 'GetTask', { id });
    for (const end = Date.now() + 20_000; got.result.status.state !== state && Date.now() < end;) {
      await new Promise((done) => setTimeout(done, 100));
      got = await json(r, 'GetTask', { id });
    }
    return got;
  }

  /** A migrated database of its own (its URL): no replica of another test claims its orphans or holds its bytes. */
  async function ownDatabase(prefix: string): Promise<string> {
    const name = `${prefix}_${randomUUID().replaceAll('-', '')}`;
    const admin = new PostgresTaskStore({ connectionString: pg.db.url });
    await admin.pool.query(`CREATE DATABASE ${name}`);
    await admin.close();
    const url = new URL(pg.db.url);
    url.pathname = `/${name}`;
    await migrate({ connectionString: url.toString() });
    return url.toString();
  }

  it('a task run on one replica is read, listed and replayed on another', async () => {
    const a = await replica(pg.db.url);
    const b = await replica(pg.db.url);
    const gate = `g-${randomUUID()}`;
    const started = await send(a, gate);
    const id = started.result.task.id;
    await until(() => gates.has(gate));
    gates.get(gate)?.();
    await a.a2a.manager.waitForCompletion(id);
    await a.a2a.manager.flush();
    const got = await json(b, 'GetTask', { id });
    expect(got.result.status.state).toBe('TASK_STATE_COMPLETED');
    expect(got.result.artifacts?.map((x) => x.parts[0]?.text)).toEqual(['before', 'after', 'done']);
    const listed = await json(b, 'ListTasks', {});
    expect(listed.result.tasks.map((t) => t.id)).toContain(id);
    // Replay from the store after event 2 (the first artifact): the rest, numbered, in order.
    const replay = await rpc(b, 'SubscribeToTask', { id }, { 'last-event-id': '2' });
    const events = await eventsOf(replay.body);
    expect(events.map((e) => e.id)).toEqual(['3', '4', '5', '6']);
    expect(events.at(-1)?.data.result).toMatchObject({
      statusUpdate: { status: { state: 'TASK_STATE_COMPLETED' } },
    });
    expect(b.ran).toEqual([]);
  });

  it('subscribers on every replica see the same events in the same order, live, and resume on any replica after Last-Event-ID', async () => {
    const a = await replica(pg.db.url);
    const b = await replica(pg.db.url);
    const c = await replica(pg.db.url);
    const gate = `b-${randomUUID()}`;
    const started = await send(a, gate, true, 'burst');
    const id = started.result.task.id;
    await until(() => gates.has(gate));
    // The handler runs once WORKING is emitted, but a subscriber sees the task as last written, and
    // that write may still be queued behind another statement: wait for it, so "the task as it is
    // now" is event 2 on every replica.
    await until(async () => (await a.a2a.manager.get(id))?.seq === 2);
    // Subscribed while the task waits on A: on A itself (in process), on B and C (through PostgreSQL).
    const onA = subscribe(a, id);
    const onB = subscribe(b, id);
    const fromStartOnC = subscribe(c, id, 0);
    // Clients that go away mid-task and come back on another replica.
    const leavesB = subscribe(b, id, 1, 12);
    const leavesA = subscribe(a, id, 1, 20);
    await until(() => onA.events.length > 0 && onB.events.length > 0 && fromStartOnC.events.length >= 2);
    gates.get(gate)?.();
    await Promise.all([onA.done, onB.done, fromStartOnC.done, leavesB.done, leavesA.done]);
    const backOnC = subscribe(c, id, Number(leavesB.events.at(-1)?.id));
    const backOnB = subscribe(b, id, Number(leavesA.events.at(-1)?.id));
    await Promise.all([backOnC.done, backOnB.done]);

    // 1 task, 2 WORKING, 3..32 the artifacts, 33 the 'done' artifact, 34 COMPLETED.
    const all = Array.from({ length: 34 }, (_, i) => String(i + 1));
    const ids = (s: Stream) => s.events.map((e) => e.id);
    expect(ids(fromStartOnC)).toEqual(all); // after Last-Event-ID 0: everything
    const live = ids(onA);
    // Without Last-Event-ID: the task as it is now (event 2), then every later event.
    expect(live).toEqual(all.slice(1));
    expect(ids(onB)).toEqual(live);
    expect(onB.events.slice(1).map((e) => e.data)).toEqual(onA.events.slice(1).map((e) => e.data));
    expect(fromStartOnC.events.slice(2).map((e) => e.data)).toEqual(onA.events.slice(1).map((e) => e.data));
    // Left and resumed elsewhere: no gap, no duplicate.
    expect([...ids(leavesB), ...ids(backOnC)]).toEqual(all.slice(1));
    expect([...ids(leavesA), ...ids(backOnB)]).toEqual(all.slice(1));
    expect(ids(leavesB).length).toBeLessThan(33);
    expect(backOnC.events.at(-1)?.data.result).toMatchObject({
      statusUpdate: { status: { state: 'TASK_STATE_COMPLETED' } },
    });
    expect(b.ran).toEqual([]);
    expect(c.ran).toEqual([]);
  });

  it('CancelTask on another replica aborts the running handler; its subscribers there get CANCELED', async () => {
    const a = await replica(pg.db.url);
    const b = await replica(pg.db.url);
    const gate = `c-${randomUUID()}`;
    const started = await send(a, gate, true, 'burst');
    const id = started.result.task.id;
    await until(() => gates.has(gate));
    const onB = subscribe(b, id);
    await until(() => onB.events.length > 0);
    const canceled = await json(b, 'CancelTask', { id });
    expect(canceled.result.status.state).toBe('TASK_STATE_CANCELED');
    expect(a.aborted).toEqual([id]); // the handler's signal, on A, aborted
    await onB.done;
    expect(onB.events.at(-1)?.data.result).toMatchObject({
      statusUpdate: { status: { state: 'TASK_STATE_CANCELED' } },
    });
    gates.get(gate)?.();
    await a.a2a.manager.flush();
    // Nothing the handler did after the cancel got in: the log ends with CANCELED.
    const replay = await eventsOf((await rpc(b, 'SubscribeToTask', { id }, { 'last-event-id': '0' })).body);
    expect(replay.map((e) => e.id)).toEqual(['1', '2', '3']);
    expect(replay.at(-1)?.data.result).toMatchObject({
      statusUpdate: { status: { state: 'TASK_STATE_CANCELED' } },
    });
  });

  it('SendMessage with returnImmediately answers the task as written: a read right after, on any replica, never shows an earlier state', async () => {
    const a = await replica(pg.db.url);
    const b = await replica(pg.db.url);
    const order = ['TASK_STATE_SUBMITTED', 'TASK_STATE_WORKING', 'TASK_STATE_COMPLETED'];
    const gatesOpened: string[] = [];
    for (let i = 0; i < 10; i++) {
      const gate = `ri-${i}-${randomUUID()}`;
      gatesOpened.push(gate);
      const answered = (await send(a, gate)).result.task;
      const [onA, onB] = await Promise.all([
        json(a, 'GetTask', { id: answered.id }),
        json(b, 'GetTask', { id: answered.id }),
      ]);
      for (const read of [onA, onB]) {
        expect(order.indexOf(read.result.status.state)).toBeGreaterThanOrEqual(
          order.indexOf(answered.status.state),
        );
      }
    }
    await until(() => gatesOpened.every((g) => gates.has(g)));
    for (const g of gatesOpened) gates.get(g)?.();
  });

  it('a replica closed while it carries a stream of a task running elsewhere ends that stream with a retryable error, not left open', async () => {
    const a = await replica(pg.db.url);
    const b = await replica(pg.db.url);
    const gate = `c-${randomUUID()}`;
    const id = (await send(a, gate)).result.task.id;
    await until(() => gates.has(gate));
    const onB = subscribe(b, id);
    await until(() => onB.events.length > 0);
    await b.a2a.close();
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      onB.done,
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error('the stream is still open 5 s after close()')), 5_000);
      }),
    ]).finally(() => clearTimeout(timer));
    expect(onB.events.at(-1)?.data).toMatchObject({
      error: { code: -32603, message: 'the agent is shutting down; subscribe again to another instance' },
    });
    gates.get(gate)?.();
  });

  it('a replica cut off from the database loses its lease: its task ends FAILED on another replica, whose subscribers and push receivers get it', async () => {
    const ttl = 1500;
    const { r: a, cut } = await partitioned(ttl);
    const b = await replica(pg.db.url, ttl);
    const gate = `l-${randomUUID()}`;
    const started = await send(a, gate, true, 'burst', 'https://receiver.example/hook');
    const id = started.result.task.id;
    await until(() => gates.has(gate));
    const onB = subscribe(b, id);
    await until(() => onB.events.length > 0);
    const cutAt = Date.now();
    await cut.close(); // A can no longer renew its lease (nor write)
    await onB.done;
    const took = Date.now() - cutAt;
    const last = onB.events.at(-1)?.data.result;
    expect(last).toMatchObject({ statusUpdate: { status: { state: 'TASK_STATE_FAILED' } } });
    expect(JSON.stringify(last)).toContain(ORPHAN_REASON);
    // Not before the lease could have run out (renewed every ttl/3), within ttl + a tick + slack for a loaded machine.
    expect(took).toBeGreaterThanOrEqual((2 * ttl) / 3 - 50);
    expect(took).toBeLessThan(ttl + ttl / 3 + 8000);
    const got = await json(b, 'GetTask', { id });
    expect(got.result.status.state).toBe('TASK_STATE_FAILED');
    // The replica that claimed the orphan (B, or one left by an earlier test:
    // all share the database) told the task's push receiver; the config was
    // created on A and kept encrypted in the table.
    const others = pg.replicas.filter((r) => r !== a);
    await until(() => others.some((r) => r.pushed.some((p) => p.taskId === id)));
    const told = others.flatMap((r) => r.pushed).filter((p) => p.taskId === id);
    expect(told.map((p) => p.event)).toMatchObject([
      { statusUpdate: { taskId: id, status: { state: 'TASK_STATE_FAILED' } } },
    ]);
    expect(others.filter((r) => r.ran.includes(id))).toEqual([]); // at most once: not re-run
  });

  it('a replica whose database goes silent (connections stay open, nothing answers) loses its lease all the same: its handler aborts, another replica fails the task, and a new task is refused typed within the query timeout', async () => {
    const ttl = 1500;
    // Longer than the lease: the replica must give its tasks up before any statement fails.
    const queryTimeoutMs = 6000;
    const { a, b, cut, gate, id } = await burstOnA(ttl, { queryTimeoutMs });
    await a.a2a.manager.flush();
    const signal = a.a2a.manager.signalOf(id) as AbortSignal;
    const silentAt = Date.now();
    cut.silence('pause'); // A's heartbeat is sent and never answered: no error ever comes back
    await until(() => a.aborted.includes(id));
    const took = Date.now() - silentAt;
    expect(signal.reason).toBeInstanceOf(TaskLeaseLostError);
    expect(a.a2a.manager.isLive(id)).toBe(false);
    // Not before the lease could have run out (renewed every ttl/3), and with no error
    // to go on: before the hung heartbeat's statement times out.
    expect(took).toBeGreaterThanOrEqual((2 * ttl) / 3 - 50);
    expect(took).toBeLessThan(queryTimeoutMs);
    // Another replica claims the orphan and fails it, at most once.
    const got = await reaches(b, id, 'TASK_STATE_FAILED');
    expect(got.result.status.state).toBe('TASK_STATE_FAILED');
    expect(JSON.stringify(got.result.status)).toContain(ORPHAN_REASON);
    // A new task on A is refused, typed and retryable, once the store gives up on the database.
    const asked = Date.now();
    const refused = await send(a, `never-${randomUUID()}`);
    expect(Date.now() - asked).toBeLessThan(queryTimeoutMs + 5_000 + 3_000);
    expect(refused.status).toBe(503);
    expect(refused.error.data[0]).toMatchObject({ reason: 'UNAVAILABLE', metadata: { retryable: 'true' } });
    expect(a.ran).toEqual([id]);
    gates.get(gate)?.();
    // And A shuts down within one statement timeout: it gave its tasks up and tried to
    // expire its lease row already, so it owes no write and hands nothing back; its pool
    // ends once the statements still out (that expiry among them) time out.
    const closing = Date.now();
    await a.a2a.close();
    expect(Date.now() - closing).toBeLessThan(queryTimeoutMs + 1_000);
    await cut.close();
  });

  it('a replica closed while its database is silent waits out one statement timeout, not one per write and hand-back, and leaves its task to the lease: another replica fails it, once', async () => {
    const ttl = 4000;
    const queryTimeoutMs = 2500;
    const { a, b, cut, gate, id } = await burstOnA(ttl, { queryTimeoutMs });
    await a.a2a.manager.flush();
    cut.silence('pause');
    // Closing cancels the task: its cancel is written (the statement hangs until the
    // timeout), then the lease would be handed back; with the database away, only the first waits.
    const closing = Date.now();
    await a.a2a.close();
    const took = Date.now() - closing;
    expect(took).toBeGreaterThanOrEqual(queryTimeoutMs - 50);
    expect(took).toBeLessThan(2 * queryTimeoutMs - 500);
    gates.get(gate)?.();
    await cut.close();
    // Nothing lost: once the lease runs out, another replica claims the task and fails it.
    const got = await reaches(b, id, 'TASK_STATE_FAILED');
    expect(got.result.status.state).toBe('TASK_STATE_FAILED');
    expect(JSON.stringify(got.result.status)).toContain(ORPHAN_REASON);
    expect(a.ran).toEqual([id]);
    expect(b.ran).not.toContain(id);
  });

  it('a replica whose database answers every statement 0.6 lease late gives its tasks up, and another replica takes them over: failed once, not left running', async () => {
    const ttl = 1500;
    const { a, b, cut, gate, id } = await burstOnA(ttl);
    await a.a2a.manager.flush();
    const signal = a.a2a.manager.signalOf(id) as AbortSignal;
    // Every statement still reaches the database at once; each answer comes back 0.6 lease
    // later, so a lease tick (a heartbeat, then a look for orphans) outlasts the lease.
    cut.delay((3 * ttl) / 5);
    await until(() => a.aborted.includes(id));
    expect(signal.reason).toBeInstanceOf(TaskLeaseLostError);
    // The database agrees that the task is an orphan: it is failed, once, not left running.
    const got = await reaches(b, id, 'TASK_STATE_FAILED');
    expect(got.result.status.state).toBe('TASK_STATE_FAILED');
    expect(JSON.stringify(got.result.status)).toContain(ORPHAN_REASON);
    expect(pg.replicas.filter((r) => r !== a && r.ran.includes(id))).toEqual([]);
    cut.delay(0);
    gates.get(gate)?.();
  });

  it('a replica that loses its lease aborts the handler (TaskLeaseLostError) and writes nothing more; its stream goes on from the store', async () => {
    const ttl = 1500;
    const { a, b, cut, gate, id } = await burstOnA(ttl);
    const onA = subscribe(a, id, 0);
    await until(() => onA.events.length >= 2); // the task, WORKING
    const signal = a.a2a.manager.signalOf(id) as AbortSignal;
    await cut.close();
    // Still cut off: A gives the task up once its lease must have run out.
    await until(() => a.aborted.includes(id));
    expect(signal.reason).toBeInstanceOf(TaskLeaseLostError);
    expect(a.a2a.manager.isLive(id)).toBe(false);
    // Another replica claims it and, at most once, fails it.
    let got = await reaches(b, id, 'TASK_STATE_FAILED');
    expect(got.result.status.state).toBe('TASK_STATE_FAILED');
    // A reaches the database again and its handler is let go: it publishes nothing (its signal
    // aborted), and a write it still attempted would be refused by the fence.
    await cut.listen();
    gates.get(gate)?.();
    // The stream opened on A goes on from the table: the FAILED written by the claimer ends it.
    await onA.done;
    expect(onA.events.at(-1)?.data.result).toMatchObject({
      statusUpdate: { status: { state: 'TASK_STATE_FAILED' } },
    });
    expect(onA.events.map((e) => e.id)).toEqual(['1', '2', '3']);
    await new Promise((r) => setTimeout(r, 300));
    const log = await b.a2a.manager.eventsAfter(id, 0);
    expect(log?.map((e) => e.seq)).toEqual([1, 2, 3]);
    got = await json(b, 'GetTask', { id });
    expect(got.result.artifacts ?? []).toEqual([]);
  });

  it('a stream carried over from the store after lease loss is let go when its client leaves: its subscriber slot is free again', async () => {
    const ttl = 1500;
    // One stream per task on A: a stream still held after its client left would refuse the next.
    const { r: a, cut } = await partitioned(ttl, pg.db.url, { maxSubscribersPerTask: 1 });
    await replica(pg.db.url, ttl);
    const gate = `l-${randomUUID()}`;
    // Re-runnable: after A loses it, it runs again elsewhere and stays unfinished until its gate opens.
    const id = (await send(a, gate, true, 'again')).result.task.id;
    await until(() => a.ran.includes(id));
    const first = subscribe(a, id, 0);
    await until(() => first.events.length >= 2); // the task, WORKING
    // A second stream now is refused: the slot is held.
    expect((await rpc(a, 'SubscribeToTask', { id })).body).toContain('already has 1 subscribers');
    await cut.close();
    // A gives the task up; its stream goes on from the store (A follows the task there).
    await until(() => !a.a2a.manager.isLive(id));
    await cut.listen();
    const others = pg.replicas.filter((r) => r !== a);
    await until(() => others.some((r) => r.ran.includes(id)));
    // The client leaves while the task runs elsewhere.
    first.leave();
    await first.done;
    // Its slot is free: a new stream on A is accepted and follows the re-run to its end.
    const second = subscribe(a, id);
    await until(() => second.events.length >= 1);
    gates.get(gate)?.();
    await second.done;
    expect(second.events.at(-1)?.data.result).toMatchObject({
      statusUpdate: { status: { state: 'TASK_STATE_COMPLETED' } },
    });
  });

  it('a re-runnable task whose replica loses its lease runs again on another replica; followers see it through to COMPLETED', async () => {
    const ttl = 1500;
    const { r: a, cut } = await partitioned(ttl);
    const b = await replica(pg.db.url, ttl);
    const c = await replica(pg.db.url, ttl);
    const gate = `r-${randomUUID()}`;
    const started = await send(a, gate, true, 'again');
    const id = started.result.task.id;
    await until(() => a.ran.includes(id));
    const onC = subscribe(c, id, 0);
    await until(() => onC.events.length >= 2);
    await cut.close();
    // Claimed by B, C or a replica left by an earlier test (all share the database).
    const others = pg.replicas.filter((r) => r !== a);
    await until(() => others.some((r) => r.ran.includes(id)), 20_000);
    const runner = others.find((r) => r.ran.includes(id)) as Replica;
    await until(() => runner.a2a.manager.isLive(id));
    gates.get(gate)?.(); // the re-run's gate
    await onC.done;
    // One log: 1 task, 2 WORKING (on A), 3 WORKING again (the re-run), 4-5 artifacts, 6 COMPLETED.
    expect(onC.events.map((e) => e.id)).toEqual(['1', '2', '3', '4', '5', '6']);
    expect(onC.events.at(-1)?.data.result).toMatchObject({
      statusUpdate: { status: { state: 'TASK_STATE_COMPLETED' } },
    });
    const got = await json(b, 'GetTask', { id });
    expect(got.result.status.state).toBe('TASK_STATE_COMPLETED');
    expect(got.result.artifacts?.map((x) => x.parts[0]?.text)).toEqual(['after', 'done']);
    expect(others.flatMap((r) => r.ran).filter((x) => x === id)).toHaveLength(1);
  });

  it('a reply to INPUT_REQUIRED sent to another replica reaches the waiting handler (blocking and streaming); one nobody waits for is refused and withdrawn', async () => {
    const a = await replica(pg.db.url);
    const b = await replica(pg.db.url);
    const asked = async () => {
      const started = await send(a, 'hi', true, 'ask');
      const id = started.result.task.id;
      for (let st = ''; st !== 'TASK_STATE_INPUT_REQUIRED';) {
        await new Promise((r) => setTimeout(r, 20));
        st = (await json(b, 'GetTask', { id })).result.status.state;
      }
      return id;
    };
    const reply = (id: string, text: string, pushUrl?: string) => ({
      message: { messageId: randomUUID(), role: 'ROLE_USER', taskId: id, parts: [{ text }] },
      ...(pushUrl
        ? { configuration: { taskPushNotificationConfig: { url: pushUrl, token: 'secret' } } }
        : {}),
    });
    // Blocking SendMessage on B: answered once A's handler finished.
    const one = await asked();
    const answered = await json(b, 'SendMessage', reply(one, 'bob'));
    expect(answered.error).toBeUndefined();
    expect(answered.result.task.status.state).toBe('TASK_STATE_COMPLETED');
    expect(answered.result.task.artifacts?.[0]?.parts[0]?.text).toBe('hello bob');
    expect(a.ran).toContain(one);
    expect(b.ran).not.toContain(one);
    // SendStreamingMessage on B: the task as it asked, then what A's handler did with the reply.
    const two = await asked();
    const res = await rpc(b, 'SendStreamingMessage', reply(two, 'eve'));
    const events = await eventsOf(res.body);
    const results = events.map((e) => e.data.result as StreamResponse);
    expect(results[0]).toMatchObject({ task: { status: { state: 'TASK_STATE_INPUT_REQUIRED' } } });
    expect(results.at(-1)).toMatchObject({ statusUpdate: { status: { state: 'TASK_STATE_COMPLETED' } } });
    expect(JSON.stringify(results)).toContain('hello eve');
    // A task that says INPUT_REQUIRED but whose handler no longer waits (here: none ever did):
    // the reply is refused as on the running replica, and nothing of it is kept, its webhook neither.
    const bare = new PostgresTaskStore({ connectionString: pg.db.url });
    const m = new TaskManager({ store: bare });
    const rec = await m.create({
      owner: pg.client.id.toString(),
      skill: 'ask',
      message: { messageId: randomUUID(), role: 'ROLE_USER', parts: [{ text: 'hi' }] },
    });
    m.setStatus(rec.task.id, 'TASK_STATE_INPUT_REQUIRED');
    await m.flush();
    const refused = await json(b, 'SendMessage', reply(rec.task.id, 'nobody', 'https://127.0.0.1:9/hook'));
    expect(refused.error?.code).toBe(-32004);
    const kept = await bare.pool.query('SELECT 1 FROM weave_a2a_inbox WHERE task_id = $1', [rec.task.id]);
    expect(kept.rowCount).toBe(0);
    const configs = await bare.pool.query('SELECT 1 FROM weave_a2a_push_configs WHERE task_id = $1', [
      rec.task.id,
    ]);
    expect(configs.rowCount).toBe(0);
    expect((await bare.get(rec.task.id))?.seq).toBe(2);
    await m.close();
  });

  it('a reply forwarded to another replica larger than the caller’s share alone is refused as too large at once: nothing posted, its push config not kept, and the task still waits', async () => {
    const a = await replica(pg.db.url, undefined, undefined, { maxBytesPerOwner: 40_000 });
    const b = await replica(pg.db.url, undefined, undefined, { maxBytesPerOwner: 40_000 });
    const direct = new PostgresTaskStore({ connectionString: pg.db.url });
    const rows = async (table: string, id: string) =>
      (await direct.pool.query(`SELECT 1 FROM ${table} WHERE task_id = $1`, [id])).rowCount;
    const reply = (id: string, text: string) => ({
      message: { messageId: randomUUID(), role: 'ROLE_USER', taskId: id, parts: [{ text }] },
      configuration: { taskPushNotificationConfig: { url: 'https://127.0.0.1:9/hook', token: 'secret' } },
    });
    const id = (await send(a, 'hi', true, 'ask')).result.task.id;
    await until(
      async () => (await json(b, 'GetTask', { id })).result.status.state === 'TASK_STATE_INPUT_REQUIRED',
    );
    const started = Date.now();
    const big = await json(b, 'SendMessage', reply(id, 'x'.repeat(50_000)));
    expect(big.status).toBe(413);
    expect(big.error?.code).toBe(-32600);
    expect(big.error?.data[0]).toMatchObject({
      reason: 'PAYLOAD_TOO_LARGE',
      metadata: { scope: 'task', limitBytes: '40000' },
    });
    // At once, not after the wait for the running replica (5 s).
    expect(Date.now() - started).toBeLessThan(4_000);
    expect(await rows('weave_a2a_inbox', id)).toBe(0);
    expect(await rows('weave_a2a_push_configs', id)).toBe(0);
    // The task still waits: a reply that fits, through B, ends it.
    const done = await json(b, 'SendMessage', reply(id, 'bob'));
    expect(done.result?.task.status.state).toBe('TASK_STATE_COMPLETED');
    expect(done.result?.task.artifacts?.[0]?.parts[0]?.text).toBe('hello bob');
    await direct.close();
  });

  it('a task re-run after takeover counts against the caller’s limit like a new one: above it, it ends FAILED with the reason and does not run', async () => {
    const url = await ownDatabase('limits');
    const ttl = 1500;
    const b = await replica(url, ttl, { perCaller: { maxConcurrentTasks: 1 } });
    const held = `h-${randomUUID()}`;
    const busy = await send(b, held); // the caller's one task on B
    await until(() => gates.has(held));
    const state = async (id: string) => (await json(b, 'GetTask', { id })).result;
    const orphanOf = async () => {
      const { r: a, cut } = await partitioned(ttl, url);
      const gate = `o-${randomUUID()}`;
      const id = (await send(a, gate, true, 'again')).result.task.id;
      await until(() => a.ran.includes(id));
      await cut.close();
      return { id, gate };
    };
    const first = await orphanOf();
    let t = await state(first.id);
    for (const end = Date.now() + 20_000; t.status.state !== 'TASK_STATE_FAILED' && Date.now() < end;) {
      await new Promise((r) => setTimeout(r, 100));
      t = await state(first.id);
    }
    expect(t.status.state).toBe('TASK_STATE_FAILED');
    expect(t.status.message?.parts[0]?.text).toContain(ORPHAN_REASON_LIMITED);
    expect(b.ran).not.toContain(first.id); // not re-run above the limit
    // The caller's task on B finishes: its slot is free, and the next orphan runs again on B.
    gates.get(held)?.();
    await until(() => b.a2a.manager.isLive(busy.result.task.id) === false);
    const second = await orphanOf();
    await until(() => b.ran.includes(second.id));
    // While it runs it holds the caller's slot, as a new task would.
    const refused = await send(b, `x-${randomUUID()}`);
    expect(refused.error?.code).toBe(-32603);
    expect(refused.error?.data[0]).toMatchObject({
      reason: 'RESOURCE_EXHAUSTED',
      metadata: { scope: 'caller' },
    });
    gates.get(second.gate)?.();
    await until(() => b.a2a.manager.isLive(second.id) === false);
    await b.a2a.manager.flush();
    expect((await state(second.id)).status.state).toBe('TASK_STATE_COMPLETED');
  });

  it('a caller whose unfinished tasks hold its share of the stored bytes, on any replica, is refused with a retryable RESOURCE_EXHAUSTED and nothing runs; a finished task makes room', async () => {
    const url = await ownDatabase('bytes');
    const bytes = { maxBytes: 1_000_000, maxBytesPerOwner: 9_000 };
    const a = await replica(url, undefined, undefined, bytes);
    const b = await replica(url, undefined, undefined, bytes);
    // Each message of ~1.5 KB is stored twice (history and first event): two tasks fit the share.
    const gate = () => `b-${randomUUID()}-${'x'.repeat(1_500)}`;
    const [g1, g2, g3, g4] = [gate(), gate(), gate(), gate()];
    const t1 = (await send(a, g1)).result.task.id;
    const t2 = (await send(b, g2)).result.task.id;
    await until(() => gates.has(g1) && gates.has(g2));
    const ran = a.ran.length + b.ran.length;
    const refused = await send(a, g3);
    expect(refused.error?.code).toBe(-32603);
    expect(refused.error?.data[0]).toMatchObject({
      reason: 'RESOURCE_EXHAUSTED',
      metadata: { scope: 'caller', limitBytes: '9000' },
    });
    // Nothing ran, nothing was stored.
    expect(a.ran.length + b.ran.length).toBe(ran);
    expect(gates.has(g3)).toBe(false);
    const listed = await json(b, 'ListTasks', {});
    expect(listed.result.tasks.map((t) => t.id).sort()).toEqual([t1, t2].sort());
    // The first task finishes on A; B takes the next task, the finished one made room.
    gates.get(g1)?.();
    await until(() => a.a2a.manager.isLive(t1) === false);
    await a.a2a.manager.flush();
    const t4 = (await send(b, g4)).result.task.id;
    await until(() => gates.has(g4));
    expect(b.ran).toContain(t4);
    expect((await json(b, 'GetTask', { id: t1 })).error?.code).toBe(-32001);
    gates.get(g2)?.();
    gates.get(g4)?.();
  });

  it('a task larger than the caller’s whole share of the stored bytes is refused as too large, not retryable; nothing runs and nothing is evicted', async () => {
    const url = await ownDatabase('too_large');
    const a = await replica(url, undefined, undefined, { maxBytes: 1_000_000, maxBytesPerOwner: 9_000 });
    const g1 = `s-${randomUUID()}`;
    const t1 = (await send(a, g1)).result.task.id;
    await until(() => gates.has(g1));
    gates.get(g1)?.();
    await until(() => a.a2a.manager.isLive(t1) === false);
    await a.a2a.manager.flush();
    const ran = a.ran.length;
    const big = `b-${randomUUID()}-${'x'.repeat(10_000)}`;
    const refused = await send(a, big);
    expect(refused.status).toBe(413);
    expect(refused.error?.code).toBe(-32600);
    expect(refused.error?.data[0]).toMatchObject({
      reason: 'PAYLOAD_TOO_LARGE',
      metadata: { scope: 'caller', limitBytes: '9000' },
    });
    expect(a.ran.length).toBe(ran);
    expect(gates.has(big)).toBe(false);
    // The finished task was not evicted for room that could never be enough.
    expect((await json(a, 'GetTask', { id: t1 })).result?.status.state).toBe('TASK_STATE_COMPLETED');
  });

  it('database away: new tasks get a retryable 503 without running; a running task goes on and is written through later', async () => {
    const cut = new TcpRelay(Number(new URL(pg.db.url).port));
    await cut.listen();
    const url = new URL(pg.db.url);
    url.port = String(cut.port);
    const a = await replica(url.toString());
    const b = await replica(pg.db.url);
    const gate = `g-${randomUUID()}`;
    const started = await send(a, gate);
    expect(started.status).toBe(200);
    const id = started.result.task.id;
    await until(() => gates.has(gate));
    await a.a2a.manager.flush(); // WORKING and the first artifact are written

    await cut.close();
    const refused = await send(a, `never-${randomUUID()}`);
    expect(refused.status).toBe(503);
    expect(refused.error.code).toBe(-32603);
    expect(refused.error.data[0]).toMatchObject({ reason: 'UNAVAILABLE', metadata: { retryable: 'true' } });
    expect(a.ran).toEqual([id]); // the refused task's handler never ran

    // The running task finishes while the database is away. The replica that
    // ran it still answers for it, as last written: COMPLETED is told to
    // nobody until it is kept (this replica could die before the database returns).
    gates.get(gate)?.();
    await until(() => !a.a2a.manager.isLive(id));
    const meanwhile = await json(a, 'GetTask', { id });
    expect(meanwhile.result.status.state).toBe('TASK_STATE_WORKING');
    const waiting = a.a2a.manager.waitForCompletion(id);

    await cut.listen(); // same port: the pool reconnects
    expect((await waiting).status.state).toBe('TASK_STATE_COMPLETED');
    await a.a2a.manager.flush();
    const after = await json(b, 'GetTask', { id });
    expect(after.result.status.state).toBe('TASK_STATE_COMPLETED');
    const replay = await rpc(b, 'SubscribeToTask', { id }, { 'last-event-id': '0' });
    expect((await eventsOf(replay.body)).map((e) => e.id)).toEqual(['1', '2', '3', '4', '5', '6']);
    const again = await send(a, `g-${randomUUID()}`);
    expect(again.status).toBe(200);
    await cut.close();
  });
});

interface Stream {
  readonly events: Sse[];
  readonly done: Promise<void>;
  /** Drops the connection now: the client goes away. */
  leave(): void;
}
