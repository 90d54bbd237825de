// A2AServer replicas run in the test's own process on one real PostgreSQL,
// each on an mTLS server of its own, and the JSON-RPC calls the tests make to
// them: the set-up of the in-process replica tests (postgres-server,
// postgres-reply, postgres-lost-notice). The replicas as processes of their
// own, behind HAProxy, are replica.ts.
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll } from 'vitest';
import { request } from 'undici';
import type { A2AServer, A2AServerOptions, Task } from '@weave/a2a';
import { migrate } from '@weave/a2a/postgres';
import type { SecureChannel } from '@weave/transport';
import type { MtlsFastifyInstance } from '@weave/transport/server';
import { baseUrl, channel, createPki, mtlsServer, type Pki, type Workload } from '@weave/test-support';
import { requireComponent, startPostgres, waitUntil, type Postgres } from '../infra.js';
import { allowOnly } from './stream.js';

/** Whether these tests can run: a PostgreSQL URL is given, or a server can be started. */
export const pgAvailable =
  process.env.WEAVE_TEST_PG_URL !== undefined || requireComponent('postgres') !== undefined;

/** The parts of JSON-RPC answers the tests read (GetTask, SendMessage, ListTasks, errors). */
export interface Answer {
  result: Task & { task: Task; tasks: Task[] };
  error: { code: number; message: string; data: unknown[] };
}

/** A replica: its A2AServer on an mTLS server of its own, and the client's channel to it. */
export interface InProcessReplica {
  app: MtlsFastifyInstance;
  a2a: A2AServer;
  url: string;
  channel: SecureChannel;
}

/** The database, the workloads and the replicas of one describe block. */
export interface Replicas<R extends InProcessReplica> {
  /** The migrated database (set before the tests run). */
  readonly db: Postgres;
  /** The client that the replicas allow, and whose channels they are served on. */
  readonly client: Workload;
  /** Every replica served, in order. */
  readonly replicas: readonly R[];
  /** The A2AServer options every replica has: its card, the server's SVID, only the client allowed, no heartbeat. */
  options(): Pick<A2AServerOptions, 'card' | 'selfId' | 'enforcer' | 'heartbeatMs'>;
  /** Serves `a2a` on a new mTLS server on loopback, with `extra` (what the test records) in the replica. */
  serve(a2a: A2AServer, extra: Omit<R, keyof InProcessReplica>): Promise<R>;
}

/**
 * Registers the hooks of the calling describe block: PostgreSQL started and
 * migrated and a PKI with a server (`/agent/pg`) and its client before all
 * tests; after all, `beforeClose`, each replica closed, `afterReplicasClosed`,
 * then the PKI and the database.
 */
export function replicasInProcess<R extends InProcessReplica>(
  hooks: { beforeClose?: () => unknown; afterReplicasClosed?: () => unknown } = {},
): Replicas<R> {
  let db: Postgres | undefined;
  let pki: Pki | undefined;
  let server: Workload;
  let client: Workload;
  const replicas: R[] = [];
  beforeAll(async () => {
    db = (await startPostgres()) as Postgres;
    await migrate({ connectionString: db.url });
    pki = await createPki();
    server = await pki.workload('/agent/pg');
    client = await pki.workload('/agent/client');
  });
  afterAll(async () => {
    await hooks.beforeClose?.();
    for (const r of replicas) {
      await r.a2a.close();
      await r.channel.close();
      await r.app.close();
    }
    await hooks.afterReplicasClosed?.();
    await pki?.close();
    await db?.stop();
  });
  return {
    get db() {
      if (!db) throw new Error('the database is started before the tests run');
      return db;
    },
    get client() {
      return client;
    },
    replicas,
    options: () => ({
      card: { name: 'pg agent', description: 'replica', version: '1.0.0' },
      selfId: server.id,
      enforcer: allowOnly(client.id.toString()),
      heartbeatMs: 0,
    }),
    async serve(a2a, extra) {
      const app = mtlsServer(server);
      await app.register(a2a.plugin);
      await app.listen({ port: 0, host: '127.0.0.1' });
      const r = { app, a2a, url: baseUrl(app), channel: channel(client, server.id), ...extra } as R;
      replicas.push(r);
      return r;
    },
  };
}

/** A JSON-RPC call to `r` as its client: the status and the body's text. */
export async function rpc(
  r: InProcessReplica,
  method: string,
  params: unknown,
  headers: Record<string, string> = {},
): Promise<{ status: number; body: string }> {
  const res = await request(`${r.url}/`, {
    method: 'POST',
    dispatcher: r.channel,
    headers: { 'content-type': 'application/json', 'a2a-version': '1.0', ...headers },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method, params }),
  });
  return { status: res.statusCode, body: await res.body.text() };
}

/** A JSON-RPC call to `r` as its client: the status and the parsed answer. */
export async function json(r: InProcessReplica, method: string, params: unknown) {
  const res = await rpc(r, method, params);
  return { status: res.status, ...(JSON.parse(res.body) as Answer) };
}

/** SendMessage params: a new task of `skill`, or a reply to the task `taskId`. */
export const message = (skill: string, text: string, taskId?: string) => ({
  message: {
    messageId: randomUUID(),
    role: 'ROLE_USER',
    parts: [{ text }],
    ...(taskId ? { taskId } : { metadata: { skill } }),
  },
});

/** Resolves once `what` holds, checked every 20 ms; throws after `ms`. */
export const until = (what: () => boolean | Promise<boolean>, ms = 20_000): Promise<void> =>
  waitUntil('the condition', what, { timeoutMs: ms, intervalMs: 20 });
