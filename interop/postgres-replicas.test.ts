// Three replicas of one agent (separate processes, one SPIFFE ID) on one real
// PostgreSQL, behind a real HAProxy in TCP mode: mTLS stays end to end and the
// caller verifies the agent's SPIFFE ID through the balancer. The replica
// running a streamed task is killed with SIGKILL mid-task; the caller resumes
// through the balancer with no lost and no duplicated event.
import { randomUUID } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from 'vitest';
import { request } from 'undici';
import { ORPHAN_REASON, type Task } from '@weave/a2a';
import { migrate } from '@weave/a2a/postgres';
import { channel, createPki, type Pki, type Workload } from '@weave/test-support';
import { eventsOf, readEvents, stateOf, type Sse } from './postgres/stream.js';
import {
  freePort,
  removeDir,
  repoRoot,
  requireComponent,
  tsxArgs,
  startHaproxy,
  tcpBalancerConfig,
  startPostgres,
  startService,
  tempDirFor,
  waitUntil,
  type Haproxy,
  type Postgres,
  type Service,
} from './infra.js';

const available =
  (process.env.WEAVE_TEST_PG_URL !== undefined || requireComponent('postgres') !== undefined) &&
  requireComponent('haproxy') !== undefined;

/** Lease of each replica: its tasks are claimed about 4/3 of this after it dies. */
const LEASE_MS = 3000;

describe.skipIf(!available)('three replicas behind HAProxy on PostgreSQL', () => {
  let db: Postgres;
  let pki: Pki;
  let agent: Workload;
  let caller: Workload;
  let dir: string;
  let haproxy: Haproxy | undefined;
  let front: number;
  const replicas = new Map<string, Service>();

  /** One call through the balancer on a new connection (so round robin spreads calls over the replicas). */
  async function call(method: string, params: unknown, headers: Record<string, string> = {}) {
    const ch = channel(caller, agent.id);
    try {
      const res = await request(`https://127.0.0.1:${front}/`, {
        method: 'POST',
        dispatcher: ch,
        headers: { 'content-type': 'application/json', 'a2a-version': '1.0', ...headers },
        body: JSON.stringify({ jsonrpc: '2.0', id: 1, method, params }),
      });
      const text = await res.body.text();
      return { replica: String(res.headers['x-replica'] ?? ''), text };
    } catch (err) {
      throw new Error(`${method} through the balancer failed: ${(err as Error).message}`, { cause: err });
    } finally {
      await ch.close();
    }
  }

  async function json(method: string, params: unknown) {
    const r = await call(method, params);
    return {
      replica: r.replica,
      ...(JSON.parse(r.text) as { result: Task & { task: Task; tasks: Task[] }; error?: unknown }),
    };
  }

  const message = (skill: string, steps: number, stepMs: number) => ({
    messageId: randomUUID(),
    role: 'ROLE_USER',
    parts: [{ text: JSON.stringify({ steps, stepMs }) }],
    metadata: { skill },
  });

  /**
   * A streaming call through the balancer, read as it comes. `stopWhen`
   * leaves early (the events seen so far are kept); the stream also ends
   * when the replica serving it dies.
   */
  async function stream(
    method: string,
    params: unknown,
    opts: { lastEventId?: string; stopWhen?: (events: readonly Sse[]) => boolean } = {},
  ): Promise<{ events: Sse[]; broken: boolean }> {
    const ch = channel(caller, agent.id);
    try {
      const res = await request(`https://127.0.0.1:${front}/`, {
        method: 'POST',
        dispatcher: ch,
        headers: {
          'content-type': 'application/json',
          'a2a-version': '1.0',
          ...(opts.lastEventId === undefined ? {} : { 'last-event-id': opts.lastEventId }),
        },
        body: JSON.stringify({ jsonrpc: '2.0', id: 1, method, params }),
      });
      expect(res.statusCode).toBe(200);
      return await readEvents(res.body, opts.stopWhen);
    } catch (err) {
      throw new Error(`${method} stream through the balancer failed: ${(err as Error).message}`, {
        cause: err,
      });
    } finally {
      await ch.close().catch(() => undefined);
    }
  }

  async function startReplica(name: string, port: number): Promise<Service> {
    const cfgFile = join(dir, `${name}.json`);
    await writeFile(
      cfgFile,
      JSON.stringify({
        name,
        port,
        dbUrl: db.url,
        leaseTtlMs: LEASE_MS,
        certFile: join(dir, 'svid.pem'),
        keyFile: join(dir, 'svid.key'),
        bundleFile: join(dir, 'bundle.pem'),
        trustDomain: agent.id.trustDomain.toString(),
        caller: caller.id.toString(),
      }),
    );
    return startService({
      name,
      command: process.execPath,
      args: tsxArgs('interop/postgres/replica.ts', cfgFile),
      cwd: repoRoot,
      ready: (out) => out.includes('WEAVE_REPLICA_READY'),
      readyTimeoutMs: 120_000,
    });
  }

  beforeAll(async () => {
    db = (await startPostgres()) as Postgres;
    await migrate({ connectionString: db.url });
    pki = await createPki();
    agent = await pki.workload('/agent/replicated');
    caller = await pki.workload('/agent/caller');
    dir = await tempDirFor('weave-replicas-');
    // The replicas read one SVID (one SPIFFE ID) from PEM files, as pods given the same Secret would.
    const svid = (await pki.ca.issueX509Svid(agent.id, { ttlSeconds: 3600 })).toPem();
    await writeFile(join(dir, 'svid.pem'), svid.certChain);
    await writeFile(join(dir, 'svid.key'), svid.privateKey, { mode: 0o600 });
    await writeFile(join(dir, 'bundle.pem'), pki.ca.x509Bundle.toPem());
    const ports = [await freePort(), await freePort(), await freePort()];
    front = await freePort();
    const started = await Promise.all(ports.map((p, i) => startReplica(`r${i + 1}`, p)));
    started.forEach((s, i) => replicas.set(`r${i + 1}`, s));
    haproxy = await startHaproxy(
      tcpBalancerConfig({
        front,
        servers: ports.map((p, i) => [`r${i + 1}`, p] as const),
        balance: 'roundrobin',
        check: 'inter 500 fall 2 rise 1',
        checkTimeout: '2s',
        log: true,
      }),
      { waitForPorts: [front] },
    );
  }, 300_000);

  afterAll(async () => {
    await haproxy?.stop();
    for (const s of replicas.values()) await s.stop().catch(() => undefined);
    await pki?.close();
    await db?.stop();
    if (dir) await removeDir(dir);
  });

  it('kill -9 of the replica serving a stream: the caller resumes through the balancer, nothing lost or repeated; reads, lists and cancels work from any replica; everything survives a restart of all replicas', async () => {
    // What the balancer and the replicas saw, when something went wrong.
    onTestFailed(() => {
      const log = haproxy?.service.log().split('\n') ?? [];
      // Server state changes, then the last connections.
      console.log([...log.filter((l) => !l.includes(' a2a replicas/')), ...log.slice(-20)].join('\n'));
      for (const [name, r] of replicas) console.log(name, r.log().slice(-3000));
    });
    // Tasks that run at most once, spread over the replicas by round robin.
    const once = await Promise.all(
      [0, 1, 2].map(() =>
        json('SendMessage', {
          message: message('count-once', 40, 100),
          configuration: { returnImmediately: true },
        }),
      ),
    );
    expect(new Set(once.map((o) => o.replica)).size).toBe(3);

    // A re-runnable task, streamed: the stream is served by the replica running it.
    let owner = '';
    let killed = false;
    const first = await stream(
      'SendStreamingMessage',
      { message: message('count', 25, 150) },
      {
        stopWhen: (events) => {
          const text = JSON.stringify(events.at(-1)?.data.result ?? {});
          owner = /by (r\d)/.exec(text)?.[1] ?? owner;
          if (owner && events.length >= 6 && !killed) {
            // Mid-task, the replica serving this stream (and running the task) dies.
            killed = true;
            void replicas.get(owner)?.kill();
          }
          return false;
        },
      },
    );
    expect(owner).toMatch(/^r\d$/);
    expect(first.broken || first.events.length < 28).toBe(true);
    const taskId = (first.events[0]?.data.result as { task: Task }).task.id;
    const lastSeen = first.events.at(-1)?.id as string;
    expect(Number(lastSeen)).toBeGreaterThanOrEqual(6);

    // Resumed through the balancer (another replica): after its lease expires the task runs again elsewhere.
    const rest = await stream('SubscribeToTask', { id: taskId }, { lastEventId: lastSeen });
    expect(rest.broken).toBe(false);
    const ids = [...first.events, ...rest.events].map((e) => Number(e.id));
    expect(ids).toEqual(Array.from({ length: ids.length }, (_, i) => i + 1));
    expect(stateOf(rest.events.at(-1))).toBe('TASK_STATE_COMPLETED');
    const rerun = JSON.stringify(rest.events.map((e) => e.data.result));
    expect(rerun).not.toContain(`by ${owner}`); // the re-run's artifacts came from a survivor
    expect(rest.events.some((e) => stateOf(e) === 'TASK_STATE_WORKING')).toBe(true);

    // Polled through the balancer: the at-most-once task of the dead replica failed with the reason; the others completed.
    const onDead = once.find((o) => o.replica === owner);
    expect(onDead).toBeDefined();
    const settled = new Map<string, Task>();
    await waitUntil(
      'every at-most-once task to settle',
      async () => {
        for (const o of once) {
          const t = (await json('GetTask', { id: o.result.task.id })).result;
          if (t.status.state !== 'TASK_STATE_WORKING') settled.set(t.id, t);
        }
        return settled.size === once.length;
      },
      { timeoutMs: 60_000, intervalMs: 500 },
    );
    for (const o of once) {
      const t = settled.get(o.result.task.id) as Task;
      if (o === onDead) {
        expect(t.status.state).toBe('TASK_STATE_FAILED');
        expect(JSON.stringify(t.status)).toContain(ORPHAN_REASON);
      } else {
        expect(t.status.state).toBe('TASK_STATE_COMPLETED');
      }
    }

    // Cancel, get and list from any replica.
    const long = await json('SendMessage', {
      message: message('count-once', 200, 100),
      configuration: { returnImmediately: true },
    });
    const longId = long.result.task.id;
    const canceled = await json('CancelTask', { id: longId });
    expect(canceled.result.status.state).toBe('TASK_STATE_CANCELED');
    const seenBy = new Set<string>();
    for (let i = 0; i < 4; i++) {
      const got = await json('GetTask', { id: longId });
      expect(got.result.status.state).toBe('TASK_STATE_CANCELED');
      seenBy.add(got.replica);
    }
    expect(seenBy.size).toBeGreaterThanOrEqual(2);
    const listed = await json('ListTasks', {});
    const all = [taskId, longId, ...once.map((o) => o.result.task.id)];
    expect(listed.result.tasks.map((t) => t.id)).toEqual(expect.arrayContaining(all));

    // Every replica stopped and started again: finished tasks are still there, logs whole.
    for (const s of replicas.values()) await s.restart();
    // Until its health checks see a replica up again, the balancer has none to offer.
    const upAgain = new Set<string>();
    await waitUntil(
      'every replica back behind the balancer',
      async () => {
        const r = await call('GetTask', { id: taskId }).catch(() => undefined);
        if (r?.replica) upAgain.add(r.replica);
        return upAgain.size === 3;
      },
      { timeoutMs: 60_000, intervalMs: 200 },
    );
    const after = await json('GetTask', { id: taskId });
    expect(after.result.status.state).toBe('TASK_STATE_COMPLETED');
    expect((await json('GetTask', { id: longId })).result.status.state).toBe('TASK_STATE_CANCELED');
    expect((await json('GetTask', { id: onDead?.result.task.id })).result.status.state).toBe(
      'TASK_STATE_FAILED',
    );
    const replay = await eventsOf(
      (await call('SubscribeToTask', { id: taskId }, { 'last-event-id': '0' })).text,
    );
    expect(replay.map((e) => Number(e.id))).toEqual(ids);
    expect(replay.map((e) => e.data.result)).toEqual(
      [...first.events, ...rest.events].map((e) => e.data.result),
    );
  }, 300_000);

  it('a reply to INPUT_REQUIRED that the balancer sends to another replica reaches the handler waiting on the first', async () => {
    const seen: Array<{ runner: string; replied: string }> = [];
    // Round robin sends consecutive calls to different replicas: a few tasks suffice for replies
    // that land away from their task (the case under test); those that land on it must work too.
    for (let i = 0; i < 4; i++) {
      const started = await json('SendMessage', {
        message: {
          messageId: randomUUID(),
          role: 'ROLE_USER',
          parts: [{ text: 'hi' }],
          metadata: { skill: 'ask' },
        },
        configuration: { returnImmediately: true },
      });
      const id = started.result.task.id;
      // The ask is written (any replica reads it) once the handler waits.
      await waitUntil('the task waits for input', async () => {
        const r = await json('GetTask', { id });
        return r.result.status.state === 'TASK_STATE_INPUT_REQUIRED';
      });
      const name = `n${i}`;
      const answered = await json('SendMessage', {
        message: { messageId: randomUUID(), role: 'ROLE_USER', taskId: id, parts: [{ text: name }] },
      });
      expect(answered.error).toBeUndefined();
      expect(answered.result.task.status.state).toBe('TASK_STATE_COMPLETED');
      // Answered by the handler that asked, on the replica that created the task.
      expect(answered.result.task.artifacts?.[0]?.parts[0]?.text).toBe(
        `hello ${name}, from the handler on ${started.replica}`,
      );
      expect(answered.result.task.history?.map((m) => m.parts[0]?.text)).toEqual(['hi', 'name?', name]);
      seen.push({ runner: started.replica, replied: answered.replica });
    }
    expect(seen.filter((x) => x.runner !== x.replied).length).toBeGreaterThan(0);
  }, 120_000);
});
