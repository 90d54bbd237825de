import { afterAll, beforeAll, expect } from 'vitest';
import { LocalPolicyEnforcer, type AuditRecord } from '@weave/authz';
import { authorizeMemberOf, type SpiffeId } from '@weave/identity';
import type { SecureChannel } from '@weave/transport';
import type { MtlsFastifyInstance } from '@weave/transport/server';
import {
  A2AClient,
  A2AError,
  A2AGrpcServer,
  A2AServer,
  type A2AServerOptions,
  type AgentSkill,
  type Task,
  type TaskContext,
  type TaskResult,
} from '../../src/index.js';
import {
  grpcBinding,
  jsonRpcBinding,
  restBinding,
  type BindingUnderTest,
  type CallOutcome,
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

/** A harness served on every binding (gRPC too) for the calling file's tests. */
export interface HarnessForAll {
  /** A raw client of `binding` to the harness, as its allowed client; the caller closes it. */
  raw(binding: BindingUnderTest): RawBinding;
  /** Runs `use` with a {@link HarnessForAll.raw} client of `binding`, closed once `use` settles. */
  withBinding(binding: BindingUnderTest, use: (b: RawBinding) => Promise<void>): Promise<void>;
}

/**
 * Registers the beforeAll hook that starts a harness (`setup` registers its
 * skills, `extra` adds server options) and serves it on gRPC too, and the
 * afterAll hook that closes both.
 */
export function harnessForAll(
  setup: (a2a: A2AServer) => void,
  extra: Partial<A2AServerOptions> = {},
): HarnessForAll {
  let served: { h: Harness; grpc: A2AGrpcServer } | undefined;
  beforeAll(async () => {
    const h = await startHarness(setup, extra);
    served = { h, grpc: await serveGrpc(h) };
  });
  afterAll(async () => {
    await served?.grpc.close(100);
    await served?.h.close();
  });
  const raw = (binding: BindingUnderTest): RawBinding => {
    if (!served) throw new Error('the harness is started by beforeAll: use it in a test');
    return rawBinding(served.h, served.grpc, binding);
  };
  return {
    raw,
    async withBinding(binding, use) {
      const b = raw(binding);
      try {
        await use(b);
      } finally {
        b.close();
      }
    },
  };
}

/** A skill card whose id, name and description are all `id`. */
export function skillCard(id: string): AgentSkill {
  return { id, name: id, description: id, tags: [] };
}

/**
 * The `id` skill: runs `act`, keeps what it threw in `thrown` under the task's
 * id, and ends with the text `went on` either way.
 */
export function serveGoesOn(
  a2a: A2AServer,
  id: string,
  thrown: Map<string, unknown>,
  act: (ctx: TaskContext) => void,
): void {
  a2a.registerTaskHandler(skillCard(id), (ctx) => {
    try {
      act(ctx);
    } catch (err) {
      thrown.set(ctx.taskId, err);
    }
    return 'went on';
  });
}

/** A user message of `text` to `skill`, with a fresh id. */
export function userMessage(skill: string, text = 'x') {
  return {
    messageId: crypto.randomUUID(),
    role: 'ROLE_USER' as const,
    parts: [{ text }],
    metadata: { skill },
  };
}

/** SendMessage params: the user message `go` to `skill`. */
export const send = (skill: string) => ({ message: userMessage(skill, 'go') });

/** The Task of a SendMessage or GetTask outcome; throws when the call failed. */
export function taskOf(o: CallOutcome): Task {
  if (!o.ok) throw new Error(`call failed: ${o.error.code} ${o.error.message}`);
  const r = o.result as { task?: Task } & Task;
  return r.task ?? r;
}

/** The A2AError `p` is refused with; fails the test when it is not one. */
export async function refusal(p: Promise<unknown>): Promise<A2AError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(A2AError);
  return err as A2AError;
}

/**
 * Workloads of one PKI for the calling file's tests, each at
 * `spiffe://test.weave<path>`: registers the beforeAll hook that makes them
 * (in the order given) and the afterAll hook that closes the PKI. Read a
 * workload's `id` and `identity` in a test or hook.
 */
export function workloadsForAll<K extends string>(paths: Record<K, string>): Record<K, Workload> {
  const names = Object.keys(paths) as K[];
  let pki: Pki | undefined;
  const made = new Map<K, Workload>();
  beforeAll(async () => {
    pki = await createPki();
    for (const name of names) made.set(name, await pki.workload(paths[name]));
  });
  afterAll(() => pki?.close());
  const get = (name: K): Workload => {
    const w = made.get(name);
    if (!w) throw new Error(`workload ${name} is made by beforeAll: use it in a test or hook`);
    return w;
  };
  const out = {} as Record<K, Workload>;
  for (const name of names) {
    out[name] = {
      get id() {
        return get(name).id;
      },
      get identity() {
        return get(name).identity;
      },
    };
  }
  return out;
}

/** A policy that lets every workload of the test trust domain call every skill. */
export function trustDomainPolicy(id: string): LocalPolicyEnforcer {
  return LocalPolicyEnforcer.fromObject({
    version: 1,
    id,
    default: 'deny',
    rules: [{ id: 'all', effect: 'allow', callers: [`spiffe://${TRUST_DOMAIN}`], actions: ['*'] }],
  });
}

/** An A2AServer served over mTLS on loopback, and A2AClients of other workloads to it. */
export interface ServedOnLoopback {
  /** `https://127.0.0.1:<port>`. */
  readonly url: string;
  /** An A2AClient of `w` over a channel of its own (no retries). */
  client(w: Workload): A2AClient;
  /** Closes the A2AServer, the clients' channels, then the HTTP server. */
  close(): Promise<void>;
}

/** Serves `a2a` (its skills registered) as `server` on a loopback port. */
export async function serveOnLoopback(a2a: A2AServer, server: Workload): Promise<ServedOnLoopback> {
  const app = mtlsServer(server);
  await app.register(a2a.plugin);
  await app.listen({ port: 0, host: '127.0.0.1' });
  const channels: SecureChannel[] = [];
  return {
    url: baseUrl(app),
    client: (w) => {
      const ch = channel(w, server.id, { retry: { retries: 0 } });
      channels.push(ch);
      return new A2AClient({ dispatcher: ch });
    },
    close: async () => {
      await a2a.close();
      await Promise.all(channels.map((c) => c.close()));
      await app.close();
    },
  };
}
