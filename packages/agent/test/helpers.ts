// Shared set-up of the end-to-end tests: the real dev Workload API server
// (gRPC over Unix sockets, dev CA), real SecureAgents on loopback mTLS, and a
// local policy file.
import { writeFile } from 'node:fs/promises';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { pino, type Logger } from 'pino';
import { A2AServer, type A2AServerOptions } from '@weave/a2a';
import { LocalPolicyEnforcer, type LocalPolicyFileOptions } from '@weave/authz';
import { SpiffeId, authorizeAny } from '@weave/identity';
import { startWorkloadApi, type WorkloadApiWorld } from '@weave/test-support';
import { createMtlsServer } from '@weave/transport/server';
import { SecureAgent, type AgentConfigInput } from '../src/index.js';

export const TD = 'demo.weave';
export const ID = {
  orchestrator: `spiffe://${TD}/agent/orchestrator`,
  search: `spiffe://${TD}/agent/search`,
  summarizer: `spiffe://${TD}/agent/summarizer`,
  intruder: `spiffe://${TD}/agent/intruder`,
} as const;

/** Quiet unless WEAVE_TEST_LOG=debug (or another pino level) is set. */
export function testLogger(): Logger {
  return pino({ level: process.env.WEAVE_TEST_LOG ?? 'silent' });
}

export const POLICY = `
version: 1
id: e2e
default: deny
rules:
  - id: orchestrator-calls-search
    effect: allow
    callers: ['${ID.orchestrator}']
    callees: ['${ID.search}']
    actions: ['search', 'slow', 'steps', 'fail', 'nested', 'stuck']
  - id: search-calls-summarizer
    effect: allow
    callers: ['${ID.search}']
    callees: ['${ID.summarizer}']
    actions: ['summarize']
  - id: orchestrator-reads-metrics
    effect: allow
    callers: ['${ID.orchestrator}']
    actions: ['weave:metrics']
`;

export interface World extends WorkloadApiWorld<string> {
  policyFile: string;
}

export async function startWorld(
  options: { ttlSeconds?: number; extra?: Record<string, string | null> } = {},
): Promise<World> {
  const world = await startWorkloadApi({
    trustDomain: TD,
    workloads: {
      orchestrator: ID.orchestrator,
      search: ID.search,
      summarizer: ID.summarizer,
      intruder: ID.intruder,
      ...options.extra,
    },
    ttlSeconds: options.ttlSeconds,
    logger: testLogger(),
  });
  const policyFile = join(world.dir, 'policy.yaml');
  await writeFile(policyFile, POLICY);
  return { ...world, policyFile };
}

/** The value of one sample of a prom-client metric, 0 when absent. */
export async function sample(
  metric: { get(): Promise<{ values: Array<{ value: number; labels: Record<string, string | number> }> }> },
  labels: Record<string, string>,
): Promise<number> {
  const { values } = await metric.get();
  return values
    .filter((v) => Object.entries(labels).every(([k, want]) => String(v.labels[k]) === want))
    .reduce((n, v) => n + v.value, 0);
}

/**
 * A started orchestrator agent of `world` (its Workload API socket, the shared
 * policy file) that knows the search agent at `searchUrl`.
 */
export async function startOrchestrator(
  world: World,
  searchUrl: string,
  transport?: AgentConfigInput['transport'],
): Promise<SecureAgent> {
  const agent = new SecureAgent({
    config: {
      name: 'orchestrator',
      identity: { workloadApi: { socket: world.dev.address('orchestrator') } },
      authz: { policyFile: world.policyFile },
      peers: [{ id: ID.search, url: searchUrl }],
      ...(transport ? { transport } : {}),
    },
    logger: testLogger(),
  });
  await agent.start();
  return agent;
}

/** A loopback server that accepts TCP and never answers the TLS handshake. */
export interface MutePeer {
  /** `https://127.0.0.1:<port>`, no trailing slash. */
  readonly url: string;
  /** Every socket accepted so far. */
  readonly accepted: readonly net.Socket[];
  /** The next socket to be accepted. */
  nextAccepted(): Promise<net.Socket>;
  /** Destroys the accepted sockets and closes the server. */
  close(): Promise<void>;
}

/** Starts a {@link MutePeer} on loopback. */
export async function startMutePeer(): Promise<MutePeer> {
  const accepted: net.Socket[] = [];
  const acceptWaiters: Array<(s: net.Socket) => void> = [];
  // Accepts TCP, reads the ClientHello, never answers.
  const server = net.createServer((socket) => {
    socket.on('error', () => undefined);
    // Read and drop: a socket left paused would never see the client's FIN.
    socket.resume();
    accepted.push(socket);
    acceptWaiters.shift()?.(socket);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `https://127.0.0.1:${(server.address() as AddressInfo).port}`,
    accepted,
    nextAccepted: () => new Promise((resolve) => acceptWaiters.push(resolve)),
    async close() {
      for (const s of accepted) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** The search agent as an A2AServer on loopback mTLS, and an orchestrator that calls it. */
export interface SearchServer {
  readonly a2a: A2AServer;
  readonly caller: SecureAgent;
  /** Stops the caller, then the A2AServer, then its HTTP server. */
  close(): Promise<void>;
}

/**
 * Starts the search agent of `world` as an A2AServer (`setup` registers its
 * handlers) under the shared policy file, and an orchestrator SecureAgent
 * that knows it.
 */
export async function startSearchServer(
  world: World,
  options: {
    description: string;
    enforcer?: LocalPolicyFileOptions;
    server?: Partial<A2AServerOptions>;
  },
  setup: (a2a: A2AServer) => void,
): Promise<SearchServer> {
  const identity = await world.provider('search');
  const a2a = new A2AServer({
    card: { name: 'search', description: options.description, version: '1' },
    selfId: SpiffeId.parse(ID.search),
    enforcer: await LocalPolicyEnforcer.fromFile(world.policyFile, { watch: false, ...options.enforcer }),
    ...options.server,
  });
  setup(a2a);
  const app = createMtlsServer({ identity, authorize: authorizeAny() });
  await app.register(a2a.plugin);
  await app.listen({ port: 0, host: '127.0.0.1' });
  const addr = app.server.address() as AddressInfo;
  const caller = await startOrchestrator(world, `https://127.0.0.1:${addr.port}`).catch(
    async (err: unknown) => {
      await a2a.close();
      await app.close();
      throw err;
    },
  );
  return {
    a2a,
    caller,
    async close() {
      await caller.stop();
      await a2a.close();
      await app.close();
    },
  };
}
