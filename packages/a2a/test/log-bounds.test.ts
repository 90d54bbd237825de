// What a caller's request can make the HTTP bindings log, over real mTLS
// (dev-CA SVIDs, @weave/transport's createMtlsServer with a pino logger):
// a caller-controlled string (a JSON-RPC method, an HTTP+JSON path) is logged
// cut to its first characters and its length, and the lines any caller can
// cause on every request (a JSON-RPC notification, a call without an
// authenticated caller) are limited to 10 a minute per server. A 900 KB
// method name in a notification was one 900 KB log line per request, from a
// caller the policy denies everything and past any per-caller limit.
import { Writable } from 'node:stream';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { LogController } from 'fastify';
import { pino } from 'pino';
import { LocalPolicyEnforcer, type AuditRecord } from '@weave/authz';
import { authorizeMemberOf } from '@weave/identity';
import type { SecureChannel } from '@weave/transport';
import { createMtlsServer, type MtlsFastifyInstance } from '@weave/transport/server';
import { A2AServer, type A2AServerOptions } from '../src/index.js';
import { baseUrl, channel, createPki, TRUST_DOMAIN, type Pki, type Workload } from '@weave/test-support';

const MiB = 1024 * 1024;
const HUGE = 900_000;

/** One pino record as written. */
interface LogLine {
  readonly level: number;
  readonly msg: string;
  readonly [field: string]: unknown;
}

/** A server with its log kept in memory, and a caller the policy denies everything. */
interface Setup {
  url: string;
  stranger: SecureChannel;
  lines: LogLine[];
  /** Bytes the logger was given, all lines together. */
  bytes(): number;
  ran: string[];
  close(): Promise<void>;
}

let pki: Pki;
let serverW: Workload;
let strangerW: Workload;

beforeAll(async () => {
  pki = await createPki();
  serverW = await pki.workload('/agent/server');
  strangerW = await pki.workload('/agent/stranger');
});
afterAll(() => pki.close());
afterEach(() => {
  vi.useRealTimers();
});

async function start(extra: Partial<A2AServerOptions> = {}, skills = ['echo']): Promise<Setup> {
  const lines: LogLine[] = [];
  let bytes = 0;
  const logger = pino(
    { level: 'info' },
    new Writable({
      write(chunk: Buffer, _enc, cb) {
        // pino writes one record per write call.
        bytes += chunk.length;
        lines.push(JSON.parse(chunk.toString('utf8')) as LogLine);
        cb();
      },
    }),
  );
  const a2a = new A2AServer({
    card: { name: 'log bounds', description: 'log bounds', version: '1' },
    selfId: serverW.id,
    enforcer: LocalPolicyEnforcer.fromObject({ version: 1, id: 'deny-all', default: 'deny', rules: [] }),
    heartbeatMs: 0,
    limits: { maxBodyBytes: 2 * MiB, perCaller: { requestsPerSecond: 5, burst: 5 } },
    ...extra,
  });
  const ran: string[] = [];
  for (const skill of skills) {
    a2a.registerTaskHandler(skill, (ctx) => {
      ran.push(ctx.taskId);
      return skill;
    });
  }
  const app: MtlsFastifyInstance = createMtlsServer({
    identity: serverW.identity,
    authorize: authorizeMemberOf(TRUST_DOMAIN),
    // As SecureAgent serves: fastify's own per-request lines (with the URL) off.
    fastify: { loggerInstance: logger, logController: new LogController({ disableRequestLogging: true }) },
  });
  await app.register(a2a.plugin);
  await app.listen({ port: 0, host: '127.0.0.1' });
  const stranger = channel(strangerW, serverW.id);
  return {
    url: baseUrl(app),
    stranger,
    lines,
    bytes: () => bytes,
    ran,
    async close() {
      await a2a.close();
      await stranger.close();
      await app.close();
    },
  };
}

async function send(
  s: Setup,
  method: 'GET' | 'POST',
  path: string,
  body?: unknown,
): Promise<{ status: number; text: string }> {
  const res = await s.stranger.request({
    origin: s.url,
    method,
    path,
    headers: { 'content-type': 'application/json', 'a2a-version': '1.0' },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  return { status: res.statusCode, text: await res.body.text() };
}

function linesOf(s: Setup, msg: string): LogLine[] {
  return s.lines.filter((l) => l.msg === msg);
}

const NOTIFICATION = 'a2a: JSON-RPC notification (no id) ignored';
const UNAUTHENTICATED = 'a2a: call without an authenticated caller denied';

describe('log lines a caller causes are bounded', () => {
  it('50 notifications with a 900 KB method from a denied caller log at most 10 short lines', async () => {
    const s = await start();
    try {
      vi.useFakeTimers({ toFake: ['Date'], now: Date.now() });
      const method = 'X'.repeat(HUGE);
      for (let i = 0; i < 50; i++) {
        const r = await send(s, 'POST', '/', { jsonrpc: '2.0', method });
        expect(r.status).toBe(204);
      }
      // Past the per-caller limit (5 a second): nothing runs for a notification.
      expect(s.ran).toEqual([]);
      const logged = linesOf(s, NOTIFICATION);
      expect(logged).toHaveLength(10);
      for (const l of logged) {
        expect(l.methodLength).toBe(HUGE);
        expect((l.method as string).length).toBeLessThanOrEqual(65);
        expect((l.method as string).startsWith('XXXX')).toBe(true);
      }
      expect(s.bytes()).toBeLessThan(64 * 1024);

      // A minute on, the next line says how many were dropped.
      vi.setSystemTime(Date.now() + 60_001);
      expect((await send(s, 'POST', '/', { jsonrpc: '2.0', method: 'Short' })).status).toBe(204);
      const next = linesOf(s, NOTIFICATION).slice(10);
      expect(next).toMatchObject([{ method: 'Short', suppressed: 40 }]);
      expect(next[0]).not.toHaveProperty('methodLength');
    } finally {
      await s.close();
    }
  });

  it('a call without an authenticated caller logs its method and path cut, at most 10 lines', async () => {
    const s = await start({ getCaller: () => undefined });
    try {
      const method = 'M'.repeat(HUGE);
      const rpc = await send(s, 'POST', '/', { jsonrpc: '2.0', id: 1, method });
      expect(rpc.status).toBe(403);
      const path = `tasks/${'p'.repeat(12_000)}`;
      const rest = await send(s, 'GET', `/${path}`);
      expect(rest.status).toBe(403);
      expect(linesOf(s, UNAUTHENTICATED)).toMatchObject([
        { method: `${'M'.repeat(64)}…`, methodLength: HUGE },
        { path: `${path.slice(0, 64)}…`, pathLength: path.length },
      ]);
      expect(s.bytes()).toBeLessThan(4 * 1024);

      for (let i = 0; i < 20; i++) {
        expect((await send(s, 'POST', '/', { jsonrpc: '2.0', id: i, method })).status).toBe(403);
        expect((await send(s, 'GET', `/${path}`)).status).toBe(403);
      }
      expect(s.ran).toEqual([]);
      expect(linesOf(s, UNAUTHENTICATED)).toHaveLength(10);
      expect(s.bytes()).toBeLessThan(16 * 1024);
    } finally {
      await s.close();
    }
  });

  it('a denied ListTasks on an agent serving many skills logs one line, not one per skill', async () => {
    const skills = Array.from({ length: 40 }, (_, i) => `skill-${i}`);
    const audited: AuditRecord[] = [];
    const enforcer = LocalPolicyEnforcer.fromObject(
      { version: 1, id: 'deny-all', default: 'deny', rules: [] },
      { audit: { record: (r: AuditRecord) => audited.push(r) } },
    );
    const s = await start({ enforcer }, skills);
    try {
      const r = await send(s, 'POST', '/', { jsonrpc: '2.0', id: 1, method: 'ListTasks', params: {} });
      expect(r.status).toBe(403);
      expect(JSON.parse(r.text)).toMatchObject({
        error: { message: expect.stringMatching(/may not invoke skill-0$/) },
      });
      // Each skill was still asked, and each decision audited; the log says so once.
      expect(audited.map((a) => [a.action, a.decision])).toEqual(skills.map((k) => [k, 'deny']));
      expect(linesOf(s, 'a2a: call denied by policy')).toMatchObject([
        { action: 'skill-0', method: 'ListTasks', skillsDenied: 40 },
      ]);
      expect(s.ran).toEqual([]);
    } finally {
      await s.close();
    }
  });
});
