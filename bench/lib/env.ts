// What every scenario shares: one dev Workload API server (dev CA, ECDSA
// P-256 X.509-SVIDs) with a workload per role, one policy file, the client
// SVID as PEM for the bare and SDK clients, and the baseline servers every
// scenario compares against (bare node https with mTLS, bare gRPC on grpc-js
// and on node:http2, the official SDK).
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { randomUUID } from 'node:crypto';
import http2 from 'node:http2';
import type http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { a2aGrpcService } from '@weave/a2a';
import { WorkloadApiIdentityProvider, type IdentityProvider } from '@weave/identity';
import { listenGrpcMtls } from '@weave/test-support/a2a-sdk';
import { DevWorkloadApiServer } from '@weave/identity/dev';
import { createMtlsServerOptions } from '@weave/transport';
import { grpcMessageFrame, type PemSvid } from './load.js';

export const silent = pino({ level: 'silent' });
export const TD = 'bench.weave';
/** How many distinct agents the fan-out scenario calls. */
export const FANOUT_PEERS = 50;

export const ID = {
  /** Every load generator's identity. */
  client: `spiffe://${TD}/agent/client`,
  /** The called SecureAgent. */
  server: `spiffe://${TD}/agent/server`,
  /** The Weave A2A server without the agent layer (fastify + A2AServer). */
  a2a: `spiffe://${TD}/agent/a2a`,
  /** createMtlsServer alone. */
  transport: `spiffe://${TD}/agent/transport`,
  bare: `spiffe://${TD}/agent/bare`,
  sdk: `spiffe://${TD}/agent/sdk`,
  peer: (i: number) => `spiffe://${TD}/peer/p${i}`,
};

export interface Env {
  dev: DevWorkloadApiServer;
  policyFile: string;
  /** The client SVID and bundle as PEM (bare and SDK clients). */
  clientPem: PemSvid;
  /** An identity provider for `workload`, closed with the environment. */
  identity(workload: keyof typeof ID | `peer${number}`): Promise<IdentityProvider>;
  close(): Promise<void>;
}

export async function startEnv(): Promise<Env> {
  const dir = await mkdtemp(join(tmpdir(), 'weave-bench-'));
  const workloads: Record<string, string> = {
    client: ID.client,
    server: ID.server,
    serverPg: ID.server,
    a2a: ID.a2a,
    transport: ID.transport,
    bare: ID.bare,
    sdk: ID.sdk,
  };
  for (let i = 0; i < FANOUT_PEERS; i++) workloads[`peer${i}`] = ID.peer(i);
  const dev = await DevWorkloadApiServer.start({ stateDir: dir, trustDomain: TD, workloads, logger: silent });
  const policyFile = join(dir, 'policy.yaml');
  // Default deny; the client may call what the scenarios call, nothing else.
  await writeFile(
    policyFile,
    [
      'version: 1',
      'id: bench',
      'default: deny',
      'rules:',
      '  - id: client-calls',
      '    effect: allow',
      `    callers: ['${ID.client}']`,
      `    callees: ['${ID.server}', '${ID.a2a}', 'spiffe://${TD}/peer/*']`,
      "    actions: ['echo', 'stream']",
      '',
    ].join('\n'),
  );
  const svid = (await dev.ca.issueX509Svid(ID.client)).toPem();
  const clientPem = { ca: dev.ca.x509Bundle.toPem(), cert: svid.certChain, key: svid.privateKey };
  const providers: IdentityProvider[] = [];
  return {
    dev,
    policyFile,
    clientPem,
    async identity(workload) {
      const p = await WorkloadApiIdentityProvider.create({ address: dev.address(workload), logger: silent });
      providers.push(p);
      return p;
    },
    async close() {
      for (const p of providers) await p.close();
      await dev.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/**
 * The bare baseline server: node `https` with the given mTLS options (client
 * certificate required and chain-verified by OpenSSL), no framework, no SPIFFE
 * check, answering a JSON-RPC request with its params: it reads and parses the
 * body and writes JSON back, the least any JSON-RPC server does. With `close`,
 * every answer closes its connection (each request a new handshake).
 */
export async function startBareEcho(
  tls: https.ServerOptions,
  opts: { close?: boolean } = {},
): Promise<{ url: string; server: https.Server; close(): Promise<void> }> {
  const server = https.createServer(tls, (req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const rpc = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { id?: unknown; params?: unknown };
      res.writeHead(200, {
        'content-type': 'application/json',
        ...(opts.close ? { connection: 'close' } : {}),
      });
      res.end(JSON.stringify({ jsonrpc: '2.0', id: rpc.id ?? null, result: { echo: rpc.params ?? null } }));
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `https://127.0.0.1:${(server.address() as AddressInfo).port}/`,
    server,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

/** The A2A roles a message may carry. */
const ROLES = new Set(['ROLE_USER', 'ROLE_AGENT']);

/** True for an A2A Part: an object with exactly one of text, raw, url, data. */
function isPart(p: unknown): boolean {
  if (typeof p !== 'object' || p === null) return false;
  const q = p as Record<string, unknown>;
  return (
    (typeof q.text === 'string' ? 1 : 0) +
      (typeof q.raw === 'string' ? 1 : 0) +
      (typeof q.url === 'string' ? 1 : 0) +
      (q.data !== undefined ? 1 : 0) ===
    1
  );
}

/** Answers with a JSON body (module-level: the bench runs through tsx, which names each closure it creates). */
function reply(res: http.ServerResponse, status: number, body: string): void {
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

/** A JSON-RPC error response. */
function rpcError(id: string | number | null, code: number, message: string): string {
  return JSON.stringify({ jsonrpc: '2.0', id, error: { code, message } });
}

/**
 * The least a secure A2A server does per `SendMessage` (JSON-RPC), with
 * nothing of Weave: the bare echo's node `https` and mTLS options, and per
 * request only what the protocol and the security model ask of any
 * implementation, each done the cheapest way:
 * - the body read under a size limit and parsed; the JSON-RPC envelope and
 *   the message checked by hand (method, id, messageId, role, parts, the
 *   skill's `{ text }` input);
 * - the caller's SPIFFE ID taken from its chain-verified certificate, once per
 *   connection;
 * - one policy decision (a Set of allowed callers) with its audit record;
 * - a task created and kept (the oldest dropped past `maxTasks`, or past
 *   `maxKeptBytes` of request and answer text, like Weave's in-memory store
 *   for one caller), the echo run, the task answered COMPLETED with one
 *   artifact and `historyLength` applied.
 * No framework, schema library, metrics, tracing, deadlines, limits on
 * nesting or concurrency, or task lifecycle events: the floor of a secure
 * A2A server in Node, not a usable one. `decisions()` counts its audits.
 */
export async function startLeastA2A(
  tls: https.ServerOptions,
  opts: { allowedCallers: string[]; maxTasks?: number; maxBodyBytes?: number; maxKeptBytes?: number },
): Promise<{ url: string; decisions(): number; close(): Promise<void> }> {
  const allowed = new Set(opts.allowedCallers);
  // What Weave's in-memory store keeps for one caller by default: a quarter
  // of its 10 000 tasks (`maxTasksPerOwner`) and a quarter of its 256 MiB.
  const maxTasks = opts.maxTasks ?? 2_500;
  const maxKept = opts.maxKeptBytes ?? 64 * 1024 * 1024;
  const sizes: number[] = [];
  let kept = 0;
  const maxBody = opts.maxBodyBytes ?? 4 * 1024 * 1024;
  const callers = new WeakMap<object, string | null>();
  const tasks = new Map<string, Record<string, unknown>>();
  const order: string[] = [];
  let head = 0;
  const audit: unknown[] = [];
  let decisions = 0;
  const server = https.createServer(tls, (req, res) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size <= maxBody) chunks.push(c);
    });
    req.on('end', () => {
      if (size > maxBody) return reply(res, 413, '{"error":"body too large"}');
      let rpc: { jsonrpc?: unknown; id?: unknown; method?: unknown; params?: unknown };
      try {
        rpc = JSON.parse(
          (chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks)).toString('utf8'),
        ) as typeof rpc;
      } catch {
        return reply(res, 200, rpcError(null, -32700, 'parse error'));
      }
      const id = typeof rpc.id === 'string' || typeof rpc.id === 'number' ? rpc.id : null;
      if (rpc.jsonrpc !== '2.0' || rpc.method !== 'SendMessage') {
        return reply(res, 200, rpcError(id, -32600, 'invalid request'));
      }
      const params = rpc.params as
        { message?: Record<string, unknown>; configuration?: { historyLength?: unknown } } | undefined;
      const message = params?.message;
      const parts = message?.parts;
      const skill = (message?.metadata as { skill?: unknown } | undefined)?.skill;
      const input = (Array.isArray(parts) ? (parts[0] as { data?: { text?: unknown } }) : undefined)?.data;
      const historyLength = params?.configuration?.historyLength;
      if (
        typeof message !== 'object' ||
        message === null ||
        typeof message.messageId !== 'string' ||
        message.messageId === '' ||
        !ROLES.has(message.role as string) ||
        !Array.isArray(parts) ||
        !parts.every(isPart) ||
        skill !== 'echo' ||
        typeof input?.text !== 'string' ||
        (historyLength !== undefined && !(Number.isInteger(historyLength) && (historyLength as number) >= 0))
      ) {
        return reply(res, 200, rpcError(id, -32602, 'invalid params'));
      }
      // The caller: the one URI SAN of its chain-verified certificate, read once per connection.
      let caller = callers.get(req.socket);
      if (caller === undefined) {
        const san = (req.socket as TLSSocket).getPeerX509Certificate()?.subjectAltName;
        caller = san?.startsWith('URI:spiffe://') && !san.includes(',') ? san.slice(4) : null;
        callers.set(req.socket, caller);
      }
      const allow = caller !== null && allowed.has(caller);
      decisions++;
      audit[0] = {
        auditId: randomUUID(),
        decidedAt: new Date().toISOString(),
        direction: 'inbound',
        caller,
        action: skill,
        decision: allow ? 'allow' : 'deny',
      };
      if (!allow) return reply(res, 200, rpcError(id, -32007, 'permission denied'));
      const taskId = randomUUID();
      const contextId = typeof message.contextId === 'string' ? message.contextId : randomUUID();
      const task = {
        id: taskId,
        contextId,
        status: { state: 'TASK_STATE_COMPLETED', timestamp: new Date().toISOString() },
        history: [{ ...message, taskId, contextId }],
        artifacts: [
          { artifactId: randomUUID(), name: 'result', parts: [{ data: { text: `echo: ${input.text}` } }] },
        ],
        metadata: { skill },
      };
      tasks.set(taskId, task);
      order.push(taskId);
      // The task's text, counted as the request's twice (its message and the echo's answer).
      sizes.push(2 * size);
      kept += 2 * size;
      // Oldest first from a queue: a Map's first key would be found past every hole its deletions left.
      while (tasks.size > maxTasks || (kept > maxKept && tasks.size > 1)) {
        tasks.delete(order[head]!);
        kept -= sizes[head++]!;
      }
      if (head > 1024 && head * 2 > order.length) {
        order.splice(0, head);
        sizes.splice(0, head);
        head = 0;
      }
      const n = historyLength as number | undefined;
      const view = n === undefined ? task : { ...task, history: n === 0 ? [] : task.history.slice(-n) };
      reply(
        res,
        200,
        `{"jsonrpc":"2.0","id":${JSON.stringify(id)},"result":${JSON.stringify({ task: view })}}`,
      );
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `https://127.0.0.1:${(server.address() as AddressInfo).port}/`,
    decisions: () => decisions,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

/**
 * What both bare gRPC baselines answer: a COMPLETED task built from the
 * request (its message in the history, one echo artifact), with no task
 * store, no policy, no limits.
 */
function bareEchoTask(request: Record<string, unknown>): Record<string, unknown> {
  const message = request.message as { contextId?: string; parts?: Array<{ text?: string }> };
  const contextId = message.contextId ?? randomUUID();
  const id = randomUUID();
  return {
    task: {
      id,
      contextId,
      status: { state: 'TASK_STATE_COMPLETED', timestamp: new Date().toISOString() },
      history: [{ ...message, taskId: id, contextId }],
      artifacts: [{ artifactId: randomUUID(), parts: [{ text: `echo: ${message.parts?.[0]?.text ?? ''}` }] }],
    },
  };
}

/**
 * The bare gRPC baseline: grpc-js with its own mTLS (client certificate
 * required and chain-verified, no SPIFFE check) serving `SendMessage` of the
 * A2A service with the same codec, and nothing of A2A behind it
 * ({@link bareEchoTask}). The least any A2A server on grpc-js does per call:
 * what Weave's gRPC binding and the SDK's both pay before their own work.
 */
export async function startBareGrpcEcho(tls: {
  ca: string;
  cert: string;
  key: string;
}): Promise<{ target: string; close(): Promise<void> }> {
  const grpc = await import('@grpc/grpc-js');
  const server = new grpc.Server();
  type Wire = Record<string, unknown>;
  server.addService(a2aGrpcService(), {
    SendMessage: (call: { request: Wire }, done: (err: null, res: Wire) => void) =>
      done(null, bareEchoTask(call.request)),
  });
  return listenGrpcMtls(server, tls);
}

/**
 * The floor of any gRPC server in Node: `SendMessage` answered straight from
 * node:http2 (mTLS, client certificate required and chain-verified, no SPIFFE
 * check), no gRPC library. One length-prefixed message in, the same codec
 * and {@link bareEchoTask} as the grpc-js baseline, one message out, then the
 * `grpc-status: 0` trailer. It skips everything a real gRPC server must do
 * (deadlines, compression, message limits, cancellation, errors), so no
 * server can serve gRPC for less in Node.
 */
export async function startBareH2GrpcEcho(tls: {
  ca: string;
  cert: string;
  key: string;
}): Promise<{ target: string; close(): Promise<void> }> {
  const method = a2aGrpcService().SendMessage;
  const server = http2.createSecureServer({ ...tls, requestCert: true, rejectUnauthorized: true });
  const sessions = new Set<http2.ServerHttp2Session>();
  server.on('session', (s) => {
    sessions.add(s);
    s.once('close', () => sessions.delete(s));
  });
  server.on('stream', (stream) => {
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('end', () => {
      const body = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
      const frame = grpcMessageFrame(
        method.responseSerialize(bareEchoTask(method.requestDeserialize(body.subarray(5)))),
      );
      stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
      stream.once('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
      stream.end(frame);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    target: `127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () =>
      new Promise<void>((r) => {
        server.close(() => r());
        for (const s of sessions) s.destroy();
      }),
  };
}

/** The bare server's TLS options for `identity`: Weave's own mTLS options, nothing added. */
export const bareTls = (identity: IdentityProvider): https.ServerOptions => createMtlsServerOptions(identity);

/** A JSON-RPC SendMessage (v1.0) to `skill` with one text part. */
export function sendMessageBody(text: string, skill = 'echo'): string {
  return JSON.stringify({
    jsonrpc: '2.0',
    id: 1,
    method: 'SendMessage',
    params: { message: { messageId: 'bench-1', role: 'ROLE_USER', parts: [{ text }], metadata: { skill } } },
  });
}
