// Shared set-up of the end-to-end tests: the real dev Workload API server
// (gRPC over Unix sockets, dev CA), real SecureAgents on loopback mTLS, and a
// local policy file.
import { writeFile } from 'node:fs/promises';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pino, type Logger } from 'pino';
import { afterAll, afterEach, beforeAll } from 'vitest';
import { z } from 'zod';
import {
  A2AServer,
  InMemoryTaskStore,
  TaskStoreUnavailableError,
  type A2AServerOptions,
  type StoredEvent,
  type Task,
  type TaskPage,
  type TaskQuery,
  type TaskRecord,
  type TaskStore,
} from '@weave/a2a';
import { LocalPolicyEnforcer, type LocalPolicyFileOptions } from '@weave/authz';
import { SpiffeId, authorizeAny } from '@weave/identity';
import { startWorkloadApi, type WorkloadApiWorld } from '@weave/test-support';
import { tempDir, type TestTd } from '@weave/test-support/tls-fixtures';
import { createMtlsServer } from '@weave/transport/server';
import { SecureAgent, type AgentConfigInput, type SecureAgentOptions } from '../src/index.js';

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

/** A pino logger at `info` that keeps what it writes, for tests that assert on an agent's log. */
export interface MemoryLogger {
  readonly logger: Logger;
  /** Each line as written (to measure it). */
  readonly raw: string[];
  /** Each line, parsed. */
  readonly lines: Array<Record<string, unknown>>;
}

/** Makes a {@link MemoryLogger}: its lines are kept as pino writes them (synchronously). */
export function memoryLogger(): MemoryLogger {
  const raw: string[] = [];
  const lines: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString().split('\n')) {
        if (!line) continue;
        raw.push(line);
        lines.push(JSON.parse(line) as Record<string, unknown>);
      }
      done();
    },
  });
  return { logger: pino({ level: 'info' }, sink), raw, lines };
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

/** The search agent as a callee and the orchestrator as its caller, both started. */
export interface CalleeAndCaller<A extends SecureAgent> {
  readonly callee: A;
  readonly caller: SecureAgent;
}

/**
 * Starts the search agent of `world` (`serve` registers its capabilities),
 * then an orchestrator that knows it, both under a policy file of their own
 * (id `policyId`, in the world's directory) that lets the orchestrator call
 * `capabilities` of search and nothing else. The callee logs to `logger`
 * (quiet by default). On a failure to start, what was made is stopped.
 */
export async function startCalleeAndCaller<A extends SecureAgent>(
  world: World,
  options: { policyId: string; capabilities: readonly string[]; logger?: Logger },
  serve: (agent: SecureAgent) => A,
): Promise<CalleeAndCaller<A>> {
  const policyFile = join(world.dir, `${options.policyId}-policy.yaml`);
  await writeFile(
    policyFile,
    `version: 1\nid: ${options.policyId}\ndefault: deny\nrules:\n  - id: all\n    effect: allow\n    callers: ['${ID.orchestrator}']\n    callees: ['${ID.search}']\n    actions: ${JSON.stringify(options.capabilities)}\n`,
  );
  const callee = serve(
    new SecureAgent({
      config: {
        name: 'search',
        identity: { workloadApi: { socket: world.dev.address('search') } },
        authz: { policyFile },
      },
      logger: options.logger ?? testLogger(),
    }),
  );
  let caller: SecureAgent | undefined;
  try {
    await callee.start();
    caller = new SecureAgent({
      config: {
        name: 'orchestrator',
        identity: { workloadApi: { socket: world.dev.address('orchestrator') } },
        authz: { policyFile },
        peers: [{ id: ID.search, url: callee.url }],
      },
      logger: testLogger(),
    });
    await caller.start();
    return { callee, caller };
  } catch (err) {
    await caller?.stop();
    await callee.stop({ drainTimeoutMs: 0 });
    throw err;
  }
}

/**
 * The world of the calling file's (or describe block's) tests, started before
 * them and closed after them, once the agents started through it have stopped
 * (last started, first stopped).
 */
export interface AllTestsWorld {
  /**
   * The search agent of the world (its Workload API socket, the shared policy
   * file, no environment read), with `server` settings when given; not
   * started, no capability.
   */
  search(options?: {
    logger?: Logger;
    server?: AgentConfigInput['server'];
    peers?: AgentConfigInput['peers'];
  }): SecureAgent;
  /** The summarizer agent of the world, as {@link search} is made; started, and stopped after all. */
  startSummarizer(setup: (agent: SecureAgent) => SecureAgent): Promise<SecureAgent>;
  /** Starts `search`, then an orchestrator that knows it (returned); both are stopped after all. */
  startWithOrchestrator(search: SecureAgent): Promise<SecureAgent>;
}

/** Registers the beforeAll and afterAll hooks of an {@link AllTestsWorld}. */
export function worldForAllTests(): AllTestsWorld {
  let world: World | undefined;
  const agents: SecureAgent[] = [];
  beforeAll(async () => {
    world = await startWorld();
  });
  afterAll(async () => {
    for (const a of agents.splice(0).reverse()) await a.stop({ drainTimeoutMs: 100 });
    await world?.close();
  });
  const started = (): World => {
    if (!world) throw new Error('the world is started by beforeAll: use it in a test or hook');
    return world;
  };
  const agentOf = (
    name: 'search' | 'summarizer',
    logger?: Logger,
    server?: AgentConfigInput['server'],
    peers?: AgentConfigInput['peers'],
  ): SecureAgent => {
    const w = started();
    return new SecureAgent({
      logger: logger ?? testLogger(),
      env: {},
      config: {
        name,
        authz: { policyFile: w.policyFile },
        identity: { workloadApi: { socket: w.dev.address(name) } },
        ...(server ? { server } : {}),
        ...(peers ? { peers } : {}),
      },
    });
  };
  return {
    search({ logger, server, peers } = {}) {
      return agentOf('search', logger, server, peers);
    },
    async startSummarizer(setup) {
      const agent = setup(agentOf('summarizer'));
      agents.push(agent);
      await agent.start();
      return agent;
    },
    async startWithOrchestrator(search) {
      agents.push(search);
      await search.start();
      const orch = await startOrchestrator(started(), search.url);
      agents.push(orch);
      return orch;
    },
  };
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

/**
 * An application's task store over the embedded one that can be made
 * unreachable, as a database is when its host goes away: while `away`, and
 * once closed, every call fails with TaskStoreUnavailableError.
 */
export class AwayStore implements TaskStore {
  readonly #inner = new InMemoryTaskStore();
  away = false;
  closed = false;
  /** Tasks created through this store. */
  created = 0;
  /** Calls of get(), answered or not. */
  reads = 0;

  #open(): InMemoryTaskStore {
    // The address is in the message so that a test can check it goes no further.
    if (this.away) throw new TaskStoreUnavailableError('connect ECONNREFUSED 10.0.0.5:5432');
    if (this.closed) throw new TaskStoreUnavailableError('the application closed its store');
    return this.#inner;
  }
  async create(record: TaskRecord, first: StoredEvent): Promise<void> {
    const inner = this.#open();
    this.created++;
    return inner.create(record, first);
  }
  async append(id: string, task: Task, events: readonly StoredEvent[], updatedAt: number): Promise<void> {
    return this.#open().append(id, task, events, updatedAt);
  }
  async get(id: string): Promise<TaskRecord | undefined> {
    this.reads++;
    return this.#open().get(id);
  }
  async events(id: string, afterSeq: number, limit: number): Promise<readonly StoredEvent[] | undefined> {
    return this.#open().events(id, afterSeq, limit);
  }
  async delete(id: string): Promise<void> {
    return this.#open().delete(id);
  }
  async list(query: TaskQuery): Promise<TaskPage> {
    return this.#open().list(query);
  }
  async sweep(now?: number): Promise<number> {
    return this.#open().sweep(now);
  }
  async close(): Promise<void> {
    this.closed = true;
  }
}

/**
 * The search agent of `world` (its Workload API socket, the shared policy
 * file) with its ops listener on a loopback port; not started, no capability.
 */
export function searchWithOps(world: World, options: Omit<SecureAgentOptions, 'config'> = {}): SecureAgent {
  return new SecureAgent({
    config: {
      name: 'search',
      identity: { workloadApi: { socket: world.dev.address('search') } },
      authz: { policyFile: world.policyFile },
      observability: { ops: { host: '127.0.0.1', port: 0 } },
    },
    logger: testLogger(),
    ...options,
  });
}

/** GET `/ready` on the ops listener at `opsUrl`: its status and JSON body. */
export async function opsReady(
  opsUrl: string,
): Promise<{ status: number; body: { ready: boolean; reason?: string } }> {
  const r = await fetch(`${opsUrl}/ready`);
  return { status: r.status, body: (await r.json()) as { ready: boolean; reason?: string } };
}

/**
 * Agents that the calling test file's tests make and that are stopped after
 * each test (an afterEach hook of that file).
 */
export interface EachTestAgents {
  /**
   * A SecureAgent (not started, no environment read) whose `search`
   * capability answers `{ hits: [q] }`.
   */
  search(options: SecureAgentOptions): SecureAgent;
  /** Has `agent` stopped after the test too. */
  track<A extends SecureAgent>(agent: A): A;
}

/** Registers the afterEach hook that stops the agents of {@link EachTestAgents}. */
export function agentsStoppedAfterEach(): EachTestAgents {
  const agents: SecureAgent[] = [];
  afterEach(async () => {
    await Promise.all(agents.splice(0).map((a) => a.stop({ drainTimeoutMs: 0 })));
  });
  const track = <A extends SecureAgent>(agent: A): A => {
    agents.push(agent);
    return agent;
  };
  return {
    track,
    search: (options) =>
      track(
        new SecureAgent({ logger: testLogger(), env: {}, ...options }).capability(
          'search',
          { input: z.object({ q: z.string() }) },
          ({ q }) => ({ hits: [q] }),
        ),
      ),
  };
}

/** A Unix-socket server at `path` (a Workload API stand-in): `onSocket` gets every connection. */
export async function unixServer(
  path: string,
  onSocket: (s: net.Socket) => void,
): Promise<{ accepted: net.Socket[]; close(): Promise<void> }> {
  const accepted: net.Socket[] = [];
  const server = net.createServer((s) => {
    s.on('error', () => undefined);
    accepted.push(s);
    onSocket(s);
  });
  await new Promise<void>((resolve) => server.listen(path, resolve));
  return {
    accepted,
    async close() {
      for (const s of accepted) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** 'closed' once the server side of `socket` has closed, 'open' if it still is after `ms`. */
export function closedWithin(socket: net.Socket, ms = 2_000): Promise<'closed' | 'open'> {
  if (socket.closed) return Promise.resolve('closed');
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve('open'), ms);
    socket.once('close', () => {
      clearTimeout(timer);
      resolve('closed');
    });
  });
}

/** The files of a static identity (`identity.static`) written by {@link writeStaticIdentityFiles}. */
export interface StaticIdentityFiles {
  readonly dir: string;
  readonly certFile: string;
  readonly keyFile: string;
  readonly bundleFile: string;
  /** The partner trust domain's bundle alone (for `identity.static.federated`). */
  readonly partnerFile: string;
  /** Both domains' CAs in one file, as configs of older versions federated: the agent refuses it as `bundleFile`. */
  readonly mixedFile: string;
}

/**
 * Writes, in a new temp directory (removed by `removeTempDirs()`), the SVID
 * of `id` issued by `own` with its key, `own`'s bundle, `partner`'s bundle,
 * and both bundles in one file.
 */
export async function writeStaticIdentityFiles(
  own: TestTd,
  partner: TestTd,
  id: string,
  prefix: string,
): Promise<StaticIdentityFiles> {
  const dir = tempDir(prefix);
  const svid = (await own.ca.issueX509Svid(id, { ttlSeconds: 300 })).toPem();
  const files = {
    dir,
    certFile: join(dir, 'svid.pem'),
    keyFile: join(dir, 'svid_key.pem'),
    bundleFile: join(dir, 'svid_bundle.pem'),
    partnerFile: join(dir, 'b.pem'),
    mixedFile: join(dir, 'both.pem'),
  };
  await Promise.all([
    writeFile(files.certFile, svid.certChain),
    writeFile(files.keyFile, svid.privateKey),
    writeFile(files.bundleFile, own.ca.x509Bundle.toPem()),
    writeFile(files.partnerFile, partner.ca.x509Bundle.toPem()),
    writeFile(files.mixedFile, own.ca.x509Bundle.toPem() + partner.ca.x509Bundle.toPem()),
  ]);
  return files;
}
