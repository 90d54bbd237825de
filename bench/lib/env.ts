// What every scenario shares: one dev Workload API server (dev CA, ECDSA
// P-256 X.509-SVIDs) with a workload per role, one policy file, the client
// SVID as PEM for the bare and SDK clients, and the baseline servers every
// scenario compares against (bare node https with mTLS, bare gRPC on grpc-js
// and on node:http2, the official SDK).
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { randomUUID } from 'node:crypto';
import http2 from 'node:http2';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
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
