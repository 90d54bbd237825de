// A replica stopped gracefully (A2AServer.close(), SecureAgent.stop()) on one
// real PostgreSQL, with tasks still running: a task of a re-runnable skill is
// handed to another replica, which runs it again at once (its lease handed
// back, not run out), its log one, whole and ended once; any other task ends
// as before (CANCELED by a bare server, FAILED by an agent). It used to end
// every one of them, re-runnable or not: a rolling restart did worse than a
// crash, whose re-runnable tasks do run again elsewhere.
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request } from 'undici';
import { z } from 'zod';
import { LocalPolicyEnforcer } from '@weave/authz';
import { SecureAgent, WeaveClient, type CapabilityContext } from '@weave/agent';
import {
  A2AServer,
  TaskHandedOverError,
  isTerminal,
  type StoredEvent,
  type TaskContext,
  type TaskState,
} from '@weave/a2a';
import { PostgresTaskStore, migrate } from '@weave/a2a/postgres';
import { ID, POLICY, startWorld, testLogger, type World } from '../packages/agent/test/helpers.js';
import {
  json,
  message,
  pgAvailable,
  replicasInProcess,
  until,
  type InProcessReplica,
} from './postgres/replicas-in-process.js';
import { eventsOf, stateOf } from './postgres/stream.js';
import { freePort, requireComponent, startHaproxy, tcpBalancerConfig, type Haproxy } from './infra.js';

/**
 * Each replica's lease (the default): a replica looks for orphans a third of
 * it apart (10 s), and a crash's tasks are claimed 2/3 to 4/3 of it after.
 * A handed-over task runs again at once: on the hand-back's notice.
 */
const LEASE_MS = 30_000;
/** How soon after the stop a handed-over task must run again elsewhere: far less than a lease tick. */
const AT_ONCE_MS = 2000;

interface Replica extends InProcessReplica {
  /** Task ids whose handler started here, in order. */
  ran: string[];
  /** Each task's handler context here. */
  contexts: Map<string, TaskContext>;
  /** Why each handler's signal aborted here. */
  reasons: Map<string, unknown>;
}

/** The code of a WeaveError (or the name of anything else) a handler's signal aborted with. */
const codeOf = (reason: unknown): unknown =>
  (reason as { code?: unknown } | undefined)?.code ?? (reason as Error | undefined)?.name;

describe.skipIf(!pgAvailable)('a replica stopped gracefully with tasks running, on PostgreSQL', () => {
  const pg = replicasInProcess<Replica>();
  let world: World;
  let admin: PostgresTaskStore;
  const cleanups: Array<() => Promise<unknown>> = [];

  beforeAll(async () => {
    world = await startWorld();
  });
  afterAll(async () => {
    for (const c of cleanups.reverse()) await c().catch(() => undefined);
    await admin?.close();
    await world?.close();
  });

  /** A migrated database of its own (its URL): no replica of the other test claims its orphans. */
  async function ownDatabase(prefix: string): Promise<string> {
    const name = `${prefix}_${randomUUID().replaceAll('-', '')}`;
    admin ??= new PostgresTaskStore({ connectionString: pg.db.url });
    await admin.pool.query(`CREATE DATABASE ${name}`);
    const url = new URL(pg.db.url);
    url.pathname = `/${name}`;
    await migrate({ connectionString: url.toString() });
    return url.toString();
  }

  /** The whole stored log of task `id`, read with a store of the test's own. */
  async function logOf(url: string, id: string): Promise<readonly StoredEvent[]> {
    const reader = new PostgresTaskStore({ connectionString: url });
    try {
      return (await reader.events(id, 0, 1000)) ?? [];
    } finally {
      await reader.close();
    }
  }

  /** One log: numbered 1..n with no gap, ended once, by its last event, COMPLETED. */
  function expectOneCompletedLog(log: readonly StoredEvent[]): void {
    expect(log.map((e) => e.seq)).toEqual(log.map((_, i) => i + 1));
    const ends = log.filter(
      (e) => 'statusUpdate' in e.event && isTerminal(e.event.statusUpdate.status.state),
    );
    expect(ends).toHaveLength(1);
    expect(ends[0]).toBe(log.at(-1));
    expect(log.at(-1)?.event).toMatchObject({ statusUpdate: { status: { state: 'TASK_STATE_COMPLETED' } } });
  }

  /** Position of the first event of `log` that `is` accepts (-1 when none). */
  const at = (log: readonly StoredEvent[], is: (e: StoredEvent['event']) => boolean): number =>
    log.findIndex((e) => is(e.event));
  const artifact = (text: string) => (e: StoredEvent['event']) =>
    'artifactUpdate' in e && e.artifactUpdate.artifact.parts[0]?.text === text;
  const working = (e: StoredEvent['event']) =>
    'statusUpdate' in e && e.statusUpdate.status.state === 'TASK_STATE_WORKING';

  /**
   * Replicas of the search agent on database `url`: `slow` (rerunnable) and
   * `stuck` report progress, then hold until aborted (`hold`) or answer
   * `{ by: name }`. `ran` lists each replica's task ids, `reasons` why each
   * task's signal aborted; `server` is each replica's listener config.
   */
  function searchReplicas(url: string) {
    const ran = new Map<string, string[]>();
    const reasons = new Map<string, unknown>();
    function agent(name: string, hold: boolean, server?: { port: number; publicUrl: string }): SecureAgent {
      ran.set(name, []);
      const body = async (_input: unknown, ctx: CapabilityContext) => {
        // Every call of a capability runs as a task here.
        const id = ctx.taskId ?? '';
        ran.get(name)?.push(id);
        const signal = ctx.signal;
        ctx.progress(`working on ${name}`);
        if (!hold) return { by: name };
        return new Promise<never>((_, reject) =>
          signal.addEventListener(
            'abort',
            () => {
              reasons.set(id, signal.reason);
              reject(signal.reason as Error);
            },
            { once: true },
          ),
        );
      };
      const a = new SecureAgent({
        config: {
          name: 'search',
          spiffeId: ID.search,
          identity: { workloadApi: { socket: world.dev.address('search') } },
          authz: { policyFile: world.policyFile },
          store: { postgres: { urlEnv: 'SEARCH_DB_URL', leaseTtlMs: LEASE_MS } },
          ...(server ? { server } : {}),
        },
        logger: testLogger(),
        env: { SEARCH_DB_URL: url },
      })
        .capability('slow', { input: z.object({}), rerunnable: true }, body)
        .capability('stuck', { input: z.object({}) }, body);
      cleanups.push(() => a.stop({ drainTimeoutMs: 0 }));
      return a;
    }
    return { ran, reasons, agent };
  }

  it('A2AServer.close(): a re-runnable task is handed over and runs again on another replica at once, COMPLETED in one log; any other task is CANCELED', async () => {
    const url = await ownDatabase('handover_a2a');
    /** A replica whose handlers (of `again`, re-runnable, and `once`) publish, then hold until aborted (`hold`) or return. */
    async function replica(name: string, hold: boolean): Promise<Replica> {
      const ran: string[] = [];
      const contexts = new Map<string, TaskContext>();
      const reasons = new Map<string, unknown>();
      const a2a = new A2AServer({
        ...pg.options(),
        taskStore: new PostgresTaskStore({ connectionString: url, leaseTtlMs: LEASE_MS }),
      });
      const handler = async (ctx: TaskContext) => {
        ran.push(ctx.taskId);
        contexts.set(ctx.taskId, ctx);
        const signal = ctx.signal;
        ctx.publishArtifact({ artifactId: `on-${name}`, parts: [{ text: `on ${name}` }] });
        if (!hold) return `done on ${name}`;
        return new Promise<string>((_, reject) =>
          signal.addEventListener(
            'abort',
            () => {
              reasons.set(ctx.taskId, signal.reason);
              reject(signal.reason as Error);
            },
            { once: true },
          ),
        );
      };
      a2a.registerTaskHandler('again', handler, { rerunnable: true });
      a2a.registerTaskHandler('once', handler);
      return pg.serve(a2a, { ran, contexts, reasons });
    }
    const a = await replica('A', true);
    const b = await replica('B', false);
    const start = async (skill: string) => {
      const sent = await json(a, 'SendMessage', {
        ...message(skill, `${skill} please`),
        configuration: { returnImmediately: true },
      });
      return sent.result.task.id;
    };
    const again = await start('again');
    const once = await start('once');
    await until(() => a.ran.includes(again) && a.ran.includes(once));
    // A stream of the task on A, open (its headers in) before A closes.
    const streamed = await request(`${a.url}/`, {
      method: 'POST',
      dispatcher: a.channel,
      headers: { 'content-type': 'application/json', 'a2a-version': '1.0' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'SubscribeToTask', params: { id: again } }),
    });
    const streamBody = streamed.body.text();
    // Published just before close(), not written yet: the hand-over writes it first.
    a.contexts.get(again)?.publishArtifact({ artifactId: 'late', parts: [{ text: 'late on A' }] });
    await a.a2a.close();
    const closedAt = Date.now();

    expect(codeOf(a.reasons.get(again))).toBe('TASK_HANDED_OVER');
    expect(a.reasons.get(again)).toBeInstanceOf(TaskHandedOverError);
    expect(codeOf(a.reasons.get(once))).toBe('TASK_CANCELED');
    // A's stream got what A wrote, then a retryable error saying to subscribe elsewhere; no end of the task.
    const seen = await eventsOf(await streamBody);
    expect(seen.some((e) => artifact('late on A')(e.data.result as StoredEvent['event']))).toBe(true);
    expect(seen.map(stateOf).filter((st) => st !== undefined && isTerminal(st as TaskState))).toEqual([]);
    expect(seen.at(-1)?.data.error).toMatchObject({
      message: expect.stringContaining('subscribe again to another instance'),
      data: [expect.objectContaining({ metadata: { retryable: 'true' } })],
    });
    await until(() => b.ran.includes(again), 15_000);
    // Claimed when A handed its lease back (its notice), not at B's next lease tick.
    expect(Date.now() - closedAt).toBeLessThan(AT_ONCE_MS);
    await until(
      async () => (await json(b, 'GetTask', { id: again })).result.status.state !== 'TASK_STATE_WORKING',
    );

    const done = await json(b, 'GetTask', { id: again });
    expect(done.result.status.state).toBe('TASK_STATE_COMPLETED');
    expect(done.result.artifacts?.map((x) => x.parts[0]?.text)).toEqual([
      'on A',
      'late on A',
      'on B',
      'done on B',
    ]);
    const log = await logOf(url, again);
    expectOneCompletedLog(log);
    // A's events (its late artifact included), then B's re-run: WORKING again, its output.
    expect(at(log, artifact('late on A'))).toBeGreaterThan(at(log, artifact('on A')));
    const rerun = log.findIndex((e, i) => i > at(log, artifact('late on A')) && working(e.event));
    expect(rerun).toBeGreaterThan(0);
    expect(at(log, artifact('on B'))).toBeGreaterThan(rerun);

    expect((await json(b, 'GetTask', { id: once })).result.status.state).toBe('TASK_STATE_CANCELED');
    expect(b.ran).not.toContain(once);
  });

  it('SecureAgent.stop(): a rerunnable capability’s task is handed over and COMPLETED by another replica well before the lease runs out; any other task ends FAILED as before', async () => {
    const url = await ownDatabase('handover_agent');
    const { ran, reasons, agent } = searchReplicas(url);
    const a = agent('A', true);
    const b = agent('B', false);
    const { url: aUrl } = await a.start();
    await b.start();
    const client = new WeaveClient({
      identity: await world.provider('orchestrator'),
      enforcer: LocalPolicyEnforcer.fromString(POLICY, { logger: testLogger() }),
      peers: [{ id: ID.search, url: aUrl }],
      logger: testLogger(),
    });
    cleanups.push(() => client.close());
    // Blocking calls to A: what they answer once A stops is the next test's
    // subject (here A is the only address: the re-runnable one's follows its
    // task until its deadline, which B's run is well within).
    const calls = ['slow', 'stuck'].map((c) =>
      client.callAgent(ID.search, c, {}, { timeoutMs: 5000 }).catch((err: unknown) => err),
    );
    await until(() => (ran.get('A')?.length ?? 0) === 2);
    const [first, second] = ran.get('A') as [string, string];
    const reader = new PostgresTaskStore({ connectionString: url });
    cleanups.push(() => reader.close());
    // Which of the two is which (they may have started in either order): the store knows each task's skill.
    const [rerunnable, other] = (
      (await reader.get(first))?.skill === 'slow' ? [first, second] : [second, first]
    ) as [string, string];

    await a.stop({ drainTimeoutMs: 100 });
    const stoppedAt = Date.now();

    expect(codeOf(reasons.get(rerunnable))).toBe('TASK_HANDED_OVER');
    expect(codeOf(reasons.get(other))).toBe('AGENT_STOPPING');
    await until(() => ran.get('B')?.includes(rerunnable) === true, 15_000);
    expect(Date.now() - stoppedAt).toBeLessThan(AT_ONCE_MS);
    await until(async () =>
      isTerminal((await reader.get(rerunnable))?.task.status.state ?? 'TASK_STATE_WORKING'),
    );

    const done = await reader.get(rerunnable);
    expect(done?.task.status.state).toBe('TASK_STATE_COMPLETED');
    expect(done?.task.artifacts?.map((x) => x.parts[0]?.data)).toEqual([{ by: 'B' }]);
    const log = await logOf(url, rerunnable);
    expectOneCompletedLog(log);
    // A's progress, then B's re-run's, in that one log.
    const said = log.flatMap((e) =>
      'statusUpdate' in e.event ? (e.event.statusUpdate.status.message?.parts.map((p) => p.text) ?? []) : [],
    );
    expect(said.filter((t) => t?.startsWith('working on'))).toEqual(['working on A', 'working on B']);
    const failed = await reader.get(other);
    expect(failed?.task.status.state).toBe('TASK_STATE_FAILED');
    expect(failed?.task.status.message?.parts[0]?.text).toBe('the agent stopped before the task finished');
    expect(ran.get('B')).not.toContain(other);
    await Promise.all(calls);
  });

  it.skipIf(requireComponent('haproxy') === undefined)(
    'behind a load balancer: a blocking callAgent served by the replica that stops gets the result of the run on another replica',
    async () => {
      const url = await ownDatabase('handover_lb');
      const { ran, reasons, agent } = searchReplicas(url);
      const [aPort, bPort, front] = [await freePort(), await freePort(), await freePort()];
      // Both replicas advertise the balancer, as replicas behind one must.
      const publicUrl = `https://127.0.0.1:${front}`;
      const a = agent('A', true, { port: aPort, publicUrl });
      const b = agent('B', false, { port: bPort, publicUrl });
      await a.start();
      await b.start();
      const haproxy = (await startHaproxy(
        tcpBalancerConfig({
          front,
          servers: [
            ['a', aPort],
            ['b', bPort],
          ],
          // Every connection to A while it is up: the call is served by the replica that stops.
          balance: 'first',
          check: 'inter 300 fall 1 rise 1',
        }),
        { waitForPorts: [front] },
      )) as Haproxy;
      cleanups.push(() => haproxy.stop());
      const client = new WeaveClient({
        identity: await world.provider('orchestrator'),
        enforcer: LocalPolicyEnforcer.fromString(POLICY, { logger: testLogger() }),
        peers: [{ id: ID.search, url: publicUrl }],
        logger: testLogger(),
      });
      cleanups.push(() => client.close());
      const call = client.callAgent(ID.search, 'slow', {}, { timeoutMs: 20_000 });
      await until(() => (ran.get('A')?.length ?? 0) === 1);
      const id = ran.get('A')?.[0] as string;

      await a.stop({ drainTimeoutMs: 100 });

      // The call answered by A before the task settled follows it through the
      // balancer to B, which runs it again: its result, not CALL_FAILED (TASK_STATE_WORKING).
      expect(await call).toEqual({ by: 'B' });
      expect(codeOf(reasons.get(id))).toBe('TASK_HANDED_OVER');
      expect(ran.get('B')).toEqual([id]);
    },
  );
});
