import { LocalPolicyEnforcer, type AuditRecord } from '@weave/authz';
import { authorizeMemberOf, type SpiffeId } from '@weave/identity';
import type { SecureChannel } from '@weave/transport';
import type { MtlsFastifyInstance } from '@weave/transport/server';
import {
  A2AClient,
  A2AGrpcServer,
  A2AServer,
  type A2AServerOptions,
  type TaskResult,
} from '../../src/index.js';
import {
  grpcBinding,
  jsonRpcBinding,
  restBinding,
  type BindingUnderTest,
  type RawBinding,
} from './raw-bindings.js';
import {
  baseUrl,
  channel,
  createPki,
  mtlsServer,
  type Pki,
  TRUST_DOMAIN,
  type Workload,
} from '@weave/test-support';

export interface Harness {
  pki: Pki;
  server: Workload;
  serverId: SpiffeId;
  clientId: SpiffeId;
  strangerId: SpiffeId;
  client: Workload;
  app: MtlsFastifyInstance;
  a2a: A2AServer;
  url: string;
  /** SecureChannel of the allowed client. */
  agent: SecureChannel;
  /** Channel of a caller with a valid SVID that the policy does not allow. */
  strangerAgent: SecureChannel;
  audit: AuditRecord[];
  close(): Promise<void>;
}

/** How the harness mounts its A2A server on the mTLS server. */
export interface HarnessMount {
  /** Runs on the fastify instance before the plugin is registered (hooks, extra routes). */
  beforeListen?: (app: MtlsFastifyInstance) => void;
  /** Registers the A2A plugin under this prefix instead of at `/`. */
  prefix?: string;
}

/**
 * A Weave A2A server on @weave/transport's mTLS server with a
 * LocalPolicyEnforcer that lets /agent/client call every skill and
 * /agent/stranger nothing.
 */
export async function startHarness(
  setup: (a2a: A2AServer) => void,
  extra: Partial<A2AServerOptions> = {},
  mount: HarnessMount = {},
): Promise<Harness> {
  const pki = await createPki();
  const server = await pki.workload('/agent/server');
  const client = await pki.workload('/agent/client');
  const stranger = await pki.workload('/agent/stranger');
  const audit: AuditRecord[] = [];
  const enforcer = LocalPolicyEnforcer.fromObject(
    {
      version: 1,
      id: 'a2a-test',
      default: 'deny',
      rules: [{ id: 'client-all', effect: 'allow', callers: [client.id.toString()], actions: ['*'] }],
    },
    { audit: { record: (r: AuditRecord) => audit.push(r) } },
  );
  const a2a = new A2AServer({
    card: { name: 'test agent', description: 'a2a tests', version: '1.0.0' },
    selfId: server.id,
    enforcer,
    heartbeatMs: 0,
    ...extra,
  });
  setup(a2a);
  const app = mtlsServer(server);
  mount.beforeListen?.(app);
  await app.register(a2a.plugin, mount.prefix === undefined ? {} : { prefix: mount.prefix });
  await app.listen({ port: 0, host: '127.0.0.1' });
  const agent = channel(client, server.id);
  const strangerAgent = channel(stranger, server.id);
  return {
    pki,
    server,
    serverId: server.id,
    clientId: client.id,
    strangerId: stranger.id,
    client,
    app,
    a2a,
    url: baseUrl(app),
    agent,
    strangerAgent,
    audit,
    async close() {
      await a2a.close();
      await agent.close();
      await strangerAgent.close();
      await app.close();
      await pki.close();
    },
  };
}

/**
 * Serves the harness's request handler on gRPC too (the server's SVID,
 * members of the trust domain admitted, the policy then decides) and lists it
 * on the card. The caller closes it before the harness.
 */
export async function serveGrpc(h: Harness): Promise<A2AGrpcServer> {
  const grpc = new A2AGrpcServer({
    handler: h.a2a.handler,
    identity: h.server.identity,
    authorize: authorizeMemberOf(TRUST_DOMAIN),
  });
  h.a2a.advertiseGrpc((await grpc.listen()).url);
  return grpc;
}

/** The raw client of `binding` to the harness `h`, as its allowed client; gRPC through `grpc`. */
export function rawBinding(h: Harness, grpc: A2AGrpcServer, binding: BindingUnderTest): RawBinding {
  if (binding === 'JSONRPC') return jsonRpcBinding(h.url, h.agent);
  if (binding === 'HTTP+JSON') return restBinding(h.url, h.agent);
  return grpcBinding(grpc.url as string, h.client, h.serverId);
}

/** The `echo` skill of a harness served on every binding, and clients of it. */
export interface EchoEverywhere {
  h: Harness;
  grpc: A2AGrpcServer;
  /** An A2AClient that prefers `binding`, over `dispatcher` (the allowed client's channel by default). */
  client(binding: string, dispatcher?: SecureChannel): A2AClient;
  /** Closes the clients made, the gRPC server, then the harness. */
  close(): Promise<void>;
}

/** A harness serving {@link serveEcho} (callers into `ran`) on the HTTP bindings and gRPC. */
export async function startEchoEverywhere(ran: string[]): Promise<EchoEverywhere> {
  const h = await startHarness((a2a) => serveEcho(a2a, ran));
  const grpc = await serveGrpc(h);
  const clients: A2AClient[] = [];
  return {
    h,
    grpc,
    client(binding, dispatcher = h.agent) {
      const c = new A2AClient({ dispatcher, preferredBindings: [binding] });
      clients.push(c);
      return c;
    },
    async close() {
      await Promise.all(clients.map((c) => c.close()));
      await grpc.close(100);
      await h.close();
    },
  };
}

/** The `echo` skill: answers `echo: <text>`; `ran`, when given, gets each caller. */
export function serveEcho(a2a: A2AServer, ran?: string[]): void {
  a2a.registerTaskHandler({ id: 'echo', name: 'Echo', description: 'echo', tags: [] }, (ctx) => {
    ran?.push(ctx.caller.toString());
    return `echo: ${ctx.message.parts[0]?.text ?? ''}`;
  });
}

/**
 * The `slow` skill: publishes chunk `one`, then waits until the test calls the
 * release `onWait` is given, or the task is canceled. Released, it ends with
 * `result` or, without one, a last chunk `two` appended to the first.
 */
export function serveSlow(
  a2a: A2AServer,
  onWait: (taskId: string, release: () => void) => void,
  result?: TaskResult,
): void {
  a2a.registerTaskHandler({ id: 'slow', name: 'Slow', description: 'slow', tags: [] }, async (ctx) => {
    ctx.publishArtifact({ artifactId: 'chunks', parts: [{ text: 'one' }] });
    await new Promise<void>((resolve) => {
      onWait(ctx.taskId, resolve);
      ctx.signal.addEventListener('abort', () => resolve());
    });
    if (ctx.signal.aborted) return undefined;
    if (result !== undefined) return result;
    ctx.publishArtifact(
      { artifactId: 'chunks', parts: [{ text: 'two' }] },
      { append: true, lastChunk: true },
    );
    return undefined;
  });
}

/** The `code` of an error and of each of its causes, outermost first. */
export function causeCodes(err: unknown): unknown[] {
  const codes: unknown[] = [];
  for (let e = err as { code?: unknown; cause?: unknown } | undefined; e; e = e.cause as typeof e) {
    codes.push(e.code);
  }
  return codes;
}
