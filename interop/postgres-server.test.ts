// A2AServer replicas on one real PostgreSQL: what one replica did, another
// reads (task, list, event replay after Last-Event-ID); a database that goes
// away refuses new tasks with a retryable error while a running task goes on
// and is written through once it is back.
import { randomUUID } from 'node:crypto';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request } from 'undici';
import { LocalPolicyEnforcer } from '@weave/authz';
import { A2AServer, type StreamResponse, type Task } from '@weave/a2a';
import { PostgresTaskStore, migrate } from '@weave/a2a/postgres';
import type { SecureChannel } from '@weave/transport';
import type { MtlsFastifyInstance } from '@weave/transport/server';
import {
  baseUrl,
  channel,
  createPki,
  mtlsServer,
  type Pki,
  type Workload,
} from '../packages/a2a/test/helpers/pki.js';
import { requireComponent, startPostgres, type Postgres } from './infra.js';

const available = process.env.WEAVE_TEST_PG_URL !== undefined || requireComponent('postgres') !== undefined;

/** A TCP relay to PostgreSQL that the test can cut (refuse and drop everything) and heal: a partition. */
class Partition {
  readonly #sockets = new Set<Socket>();
  #server: Server | undefined;
  port = 0;

  constructor(private readonly target: number) {}

  async open(): Promise<void> {
    const server = createServer((c) => {
      const up = createConnection(this.target, '127.0.0.1');
      for (const s of [c, up]) {
        this.#sockets.add(s);
        s.on('close', () => this.#sockets.delete(s));
        s.on('error', () => undefined);
      }
      c.pipe(up).pipe(c);
    });
    await new Promise<void>((resolve) => server.listen(this.port, '127.0.0.1', () => resolve()));
    this.port = (server.address() as { port: number }).port;
    this.#server = server;
  }

  async cut(): Promise<void> {
    const s = this.#server;
    this.#server = undefined;
    for (const sock of this.#sockets) sock.destroy();
    if (s) await new Promise<void>((resolve) => s.close(() => resolve()));
  }
}

/** The parts of JSON-RPC answers these tests read (GetTask, SendMessage, ListTasks, errors). */
interface Answer {
  result: Task & { task: Task; tasks: Task[] };
  error: { code: number; data: unknown[] };
}

interface Replica {
  app: MtlsFastifyInstance;
  a2a: A2AServer;
  url: string;
  channel: SecureChannel;
  ran: string[];
}

describe.skipIf(!available)('A2AServer replicas on PostgreSQL', () => {
  let db: Postgres;
  let pki: Pki;
  let server: Workload;
  let client: Workload;
  const replicas: Replica[] = [];
  const gates = new Map<string, () => void>();

  async function replica(connectionString: string): Promise<Replica> {
    const ran: string[] = [];
    const a2a = new A2AServer({
      card: { name: 'pg agent', description: 'replica', version: '1.0.0' },
      selfId: server.id,
      enforcer: LocalPolicyEnforcer.fromObject({
        version: 1,
        id: 'pg',
        default: 'deny',
        rules: [{ id: 'client', effect: 'allow', callers: [client.id.toString()], actions: ['*'] }],
      }),
      heartbeatMs: 0,
      taskStore: new PostgresTaskStore({ connectionString }),
      // Writes that failed are retried at least every 200 ms.
      storeRetryMaxMs: 200,
    });
    a2a.registerTaskHandler({ id: 'gate', name: 'gate', description: '', tags: [] }, async (ctx) => {
      ran.push(ctx.taskId);
      ctx.publishArtifact({ artifactId: 'a', parts: [{ text: 'before' }] });
      await new Promise<void>((resolve) => gates.set(ctx.message.parts[0]?.text ?? '', resolve));
      ctx.publishArtifact({ artifactId: 'b', parts: [{ text: 'after' }] });
      return 'done';
    });
    const app = mtlsServer(server);
    await app.register(a2a.plugin);
    await app.listen({ port: 0, host: '127.0.0.1' });
    const r = { app, a2a, url: baseUrl(app), channel: channel(client, server.id), ran };
    replicas.push(r);
    return r;
  }

  async function rpc(r: Replica, method: string, params: unknown, headers: Record<string, string> = {}) {
    const res = await request(`${r.url}/`, {
      method: 'POST',
      dispatcher: r.channel,
      headers: { 'content-type': 'application/json', 'a2a-version': '1.0', ...headers },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method, params }),
    });
    return { status: res.statusCode, body: await res.body.text() };
  }

  async function json(r: Replica, method: string, params: unknown) {
    const res = await rpc(r, method, params);
    return { status: res.status, ...(JSON.parse(res.body) as Answer) };
  }

  const send = (r: Replica, gate: string, returnImmediately = true) =>
    json(r, 'SendMessage', {
      message: { messageId: randomUUID(), role: 'ROLE_USER', parts: [{ text: gate }] },
      configuration: { returnImmediately },
    });

  async function until(what: () => boolean, ms = 20_000): Promise<void> {
    const end = Date.now() + ms;
    while (!what()) {
      if (Date.now() > end) throw new Error('timed out');
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  beforeAll(async () => {
    db = (await startPostgres()) as Postgres;
    await migrate({ connectionString: db.url });
    pki = await createPki();
    server = await pki.workload('/agent/pg');
    client = await pki.workload('/agent/client');
  });
  afterAll(async () => {
    for (const g of gates.values()) g();
    for (const r of replicas) {
      await r.a2a.close();
      await r.channel.close();
      await r.app.close();
    }
    await pki?.close();
    await db?.stop();
  });

  it('a task run on one replica is read, listed and replayed on another', async () => {
    const a = await replica(db.url);
    const b = await replica(db.url);
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
    const events = sse(replay.body);
    expect(events.map((e) => e.id)).toEqual(['3', '4', '5', '6']);
    expect(events.at(-1)?.data.result).toMatchObject({
      statusUpdate: { status: { state: 'TASK_STATE_COMPLETED' } },
    });
    expect(b.ran).toEqual([]);
  });

  it('database away: new tasks get a retryable 503 without running; a running task goes on and is written through later', async () => {
    const cut = new Partition(Number(new URL(db.url).port));
    await cut.open();
    const url = new URL(db.url);
    url.port = String(cut.port);
    const a = await replica(url.toString());
    const b = await replica(db.url);
    const gate = `g-${randomUUID()}`;
    const started = await send(a, gate);
    expect(started.status).toBe(200);
    const id = started.result.task.id;
    await until(() => gates.has(gate));

    await cut.cut();
    const refused = await send(a, `never-${randomUUID()}`);
    expect(refused.status).toBe(503);
    expect(refused.error.code).toBe(-32603);
    expect(refused.error.data[0]).toMatchObject({ reason: 'UNAVAILABLE', metadata: { retryable: 'true' } });
    expect(a.ran).toEqual([id]); // the refused task's handler never ran

    // The running task finishes while the database is away: readable from the replica that ran it.
    gates.get(gate)?.();
    await a.a2a.manager.waitForCompletion(id);
    const meanwhile = await json(a, 'GetTask', { id });
    expect(meanwhile.result.status.state).toBe('TASK_STATE_COMPLETED');

    await cut.open(); // same port: the pool reconnects
    await a.a2a.manager.flush();
    const after = await json(b, 'GetTask', { id });
    expect(after.result.status.state).toBe('TASK_STATE_COMPLETED');
    const replay = await rpc(b, 'SubscribeToTask', { id }, { 'last-event-id': '0' });
    expect(sse(replay.body).map((e) => e.id)).toEqual(['1', '2', '3', '4', '5', '6']);
    const again = await send(a, `g-${randomUUID()}`);
    expect(again.status).toBe(200);
    await cut.cut();
  });
});

function sse(
  body: string,
): Array<{ id?: string; data: { result?: StreamResponse & Record<string, unknown> } }> {
  return body
    .split('\n\n')
    .filter((b) => b.includes('data:'))
    .map((block) => {
      const id = /^id: ?(.*)$/m.exec(block)?.[1];
      const data = JSON.parse(
        block
          .split('\n')
          .filter((l) => l.startsWith('data:'))
          .map((l) => l.slice(5).trim())
          .join('\n'),
      );
      return id === undefined ? { data } : { id, data };
    });
}
