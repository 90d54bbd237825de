import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { LogController } from 'fastify';
import { pino, type Logger } from 'pino';
import type { z } from 'zod';
import {
  A2AGrpcServer,
  A2AServer,
  AgentCardSigner,
  TaskStoreUnavailableError,
  type AgentCard,
  type TaskStore,
} from '@weave/a2a';
import type * as PostgresStoreModule from '@weave/a2a/postgres';
import { OpaEnforcer, type PolicyEnforcer } from '@weave/authz';
import {
  BundleError,
  MAX_TIMER_MS,
  type SpiffeId,
  authorizeAny,
  type IdentityProvider,
  type X509Svid,
} from '@weave/identity';
import { MTLS_AUTH_PLUGIN, createMtlsServer, type MtlsFastifyInstance } from '@weave/transport/server';
import type { CapabilityHandler, CapabilityOptions } from './capability.js';
import {
  checkPostgresUrl,
  loadAgentConfig,
  parseAgentConfig,
  type AgentConfig,
  type AgentConfigInput,
} from './config.js';
import { AgentCore } from './core.js';
import { AgentConfigError, AgentError, CallError } from './errors.js';
import { AgentMetrics } from './metrics.js';
import {
  MeteredEnforcer,
  PolicyEngineHealth,
  StoreHealth,
  healthBody,
  readyBody,
  startOpsListener,
  type ProbeState,
} from './observability.js';
import {
  Inbound,
  extendedCard,
  skillSchemaExtension,
  type CapabilityRouting,
  type SkillSchemas,
} from './inbound.js';
import {
  Outbound,
  checkPeer,
  shownTarget,
  type CallAgentOptions,
  type CallResult,
  type ChannelFactory,
} from './outbound.js';
import type { CallScope } from './scope.js';
import { storeProxy } from './store-proxy.js';
import { enforcerFromConfig, identityFromConfig, identityTimeoutMs } from './wiring.js';
import { urlHost } from '@weave/transport';

/** `@weave/a2a/postgres`, loaded only when `store.postgres` is configured. */
type PostgresModule = typeof PostgresStoreModule;

/** Policy action that guards `/metrics` on the mTLS server. */
export const METRICS_ACTION = 'weave:metrics';

/** Options of {@link SecureAgent}. */
export interface SecureAgentOptions {
  /** The agent's configuration (validated again here; see `loadAgentConfig`). */
  readonly config: AgentConfig | AgentConfigInput;
  /**
   * Identity to use instead of `config.identity`. Not owned: `stop()` leaves it
   * open. Tests pass a `WorkloadApiIdentityProvider` or a `DevCaIdentityProvider`.
   */
  readonly identity?: IdentityProvider;
  /**
   * Policy to use instead of `config.authz` (which may then be left out). Not
   * owned: `stop()` leaves it open.
   */
  readonly enforcer?: PolicyEnforcer;
  /** Logger (default: pino on stdout at `config.logging.level`). */
  readonly logger?: Logger;
  /**
   * Task store of the A2A server (default in memory). A failed `start()`
   * leaves it open (a retry serves from it); `stop()` closes it. A store
   * with a PostgreSQL `pool` (a `PostgresTaskStore`) has its schema version
   * checked at `start()`, as `store.postgres` does: one behind this version
   * refuses the start (`AGENT_STORE_SCHEMA_OUTDATED`).
   */
  readonly taskStore?: TaskStore;
  /** Environment read for `SPIFFE_ENDPOINT_SOCKET` and production checks (default `process.env`). */
  readonly env?: NodeJS.ProcessEnv;
  /**
   * Which capability serves a message that names none. Weave's own callers
   * name it (`message.metadata.skill`); a generic A2A client cannot, as A2A
   * has no skill selector: the agent decides. Without routing, such a message
   * reaches the only capability of a one-capability agent and is refused
   * (-32602) by an agent with several.
   */
  readonly routing?: CapabilityRouting;
  /**
   * Builds the outbound channel to each peer instead of the agent's default
   * `SecureChannel` (see {@link ChannelFactory}): it must be a `SecureChannel`
   * verifying exactly that peer, or the call fails before anything is sent.
   */
  readonly channel?: ChannelFactory;
  /**
   * An existing fastify instance to serve on, instead of one of the agent's
   * own: your routes and plugins and the agent's A2A routes (with `/health`,
   * `/ready`, `/metrics`) on one port. Create it with `createMtlsServer` from
   * `@weave/transport/server` with the agent's identity, so that it requires
   * and verifies client certificates and sets `request.peer`; an instance that
   * does not is refused (`AGENT_CONFIG_INSECURE`). The agent's routes and hooks
   * are in a plugin of their own, so its hooks do not run for your routes.
   * `start()` makes it listen on `config.server` and `stop()` closes it.
   *
   * A failed `start()` does not close it. Once the agent's routes are on it
   * (a start that got as far as listening), fastify takes no new ones, so
   * this agent cannot start on it again: another `start()` is refused with
   * `AGENT_SERVER_CONSUMED` (as is an instance that was already made ready
   * or listening before `start()`).
   */
  readonly server?: MtlsFastifyInstance;
}

/** Options of {@link SecureAgent.stop}. */
export interface StopOptions {
  /**
   * How long in-flight tasks may run before they are canceled (default
   * `server.drainTimeoutMs`): a whole number of ms from 0 (cancel them at
   * once) to 2147483647. Anything else is refused with {@link AgentConfigError}.
   */
  readonly drainTimeoutMs?: number;
  /**
   * How long the agent keeps serving normally before it drains (default
   * `server.shutdownDelayMs`): `/ready` answers 503 at once, new calls are
   * served until it is over. A whole number of ms from 0 (drain at once) to
   * 2147483647; anything else is refused with {@link AgentConfigError}.
   */
  readonly shutdownDelayMs?: number;
}

/** Where a started agent is. */
export interface StartedAgent {
  /** Base URL of the A2A endpoint (the agent card is under `/.well-known/agent-card.json`). */
  readonly url: string;
  readonly id: SpiffeId;
  /** URL of the plain-HTTP ops listener, when configured. */
  readonly opsUrl?: string;
  /** `host:port` of the A2A gRPC binding, when served (also on the card). */
  readonly grpcUrl?: string;
}

/** Where a {@link SecureAgent} is in its life: `new` until `start()`, `stopped` for good. */
export type AgentState = 'new' | 'starting' | 'running' | 'draining' | 'stopped';

interface Running {
  readonly identity: IdentityProvider;
  readonly ownsIdentity: boolean;
  readonly enforcer: MeteredEnforcer;
  readonly ownsEnforcer: boolean;
  readonly app: MtlsFastifyInstance;
  readonly a2a: A2AServer;
  /** The gRPC binding's listener, when `server.bindings` includes GRPC. */
  readonly grpc?: A2AGrpcServer;
  readonly grpcUrl?: string;
  readonly outbound: Outbound;
  readonly ops?: Server;
  readonly url: string;
  readonly skillSchemas: SkillSchemas;
  readonly unsubscribe: Array<() => void>;
  /** Run once the servers are closed: each takes a server's last refusal counts into the metrics. */
  readonly unwatch: Array<() => void>;
}

/**
 * A networked agent with zero-trust defaults: an X.509-SVID from the Workload
 * API (or static files), mTLS on every connection, a policy check on every
 * call in both directions, and A2A v1.0 on the wire.
 *
 * ```ts
 * class Search extends SecureAgent {
 *   @capability('search', { input: z.object({ query: z.string() }) })
 *   async search({ query }: { query: string }, ctx: CapabilityContext) { ... }
 * }
 * const agent = await Search.fromConfigFile('search.yaml');
 * await agent.start();
 * ```
 *
 * or without decorators: `new SecureAgent({ config }).capability('search', { input }, handler)`.
 */
export class SecureAgent extends AgentCore {
  /** The validated configuration. */
  readonly config: AgentConfig;
  readonly metrics: AgentMetrics;
  readonly logger: Logger;
  readonly #opts: SecureAgentOptions;
  readonly #env: NodeJS.ProcessEnv;
  #state: AgentState = 'new';
  #run: Running | undefined;
  #starting: Promise<StartedAgent> | undefined;
  #stopping: Promise<void> | undefined;
  /** The ops listener, bound first in a start (see {@link opsUrl}). */
  #ops: { server: Server; url: string } | undefined;
  /** Fired by `stop()` while a start is under way: the start gives up and undoes what it did. */
  #abortStart: AbortController | undefined;
  /** The agent's routes are on the fastify instance given as `server` (see {@link SecureAgentOptions.server}). */
  #serverMounted = false;
  #inflightRequests = 0;
  readonly #inbound: Inbound;
  /** Whether the OPA of `authz.opa` answers: /ready is 503 while it cannot be reached. */
  readonly #policyHealth: PolicyEngineHealth;

  /** @throws {AgentConfigError} when the config is invalid or insecure. */
  constructor(options: SecureAgentOptions) {
    super();
    if (!options || typeof options !== 'object' || !options.config) {
      throw new AgentError('AGENT_CONFIG_INVALID', 'new SecureAgent({ config }) needs a config');
    }
    this.#opts = options;
    this.#env = options.env ?? process.env;
    this.config = parseAgentConfig(options.config, {
      env: this.#env,
      enforcer: options.enforcer !== undefined,
    });
    this.logger = (options.logger ?? pino({ name: 'weave-agent', level: this.config.logging.level })).child({
      agent: this.config.name,
    });
    this.metrics = new AgentMetrics({
      agent: this.config.name,
      defaultMetrics: this.config.observability.processMetrics,
    });
    this.#policyHealth = new PolicyEngineHealth(this.metrics);
    this.#inbound = new Inbound({
      capabilities: this.capabilities,
      metrics: this.metrics,
      logger: this.logger,
      ...(options.routing ? { routing: options.routing } : {}),
      nested: this.#call,
    });
  }

  /**
   * Loads a YAML config file (with env overrides) and builds the agent; on a
   * subclass it builds that subclass.
   */
  static async fromConfigFile<T extends SecureAgent>(
    this: new (options: SecureAgentOptions) => T,
    path: string,
    extra: Omit<SecureAgentOptions, 'config'> = {},
  ): Promise<T> {
    const config = await loadAgentConfig(path, extra.env ?? process.env, {
      enforcer: extra.enforcer !== undefined,
    });
    return new this({ ...extra, config });
  }

  /**
   * Reads and checks the identity files `config.identity.static` names as
   * `start()` does, with the same code and errors (the SVID and its key, the
   * bundle, the federated bundles, the SVID against `spiffeId`), and closes
   * them again: what `weave validate` runs. An identity from the Workload API
   * has nothing to read before `start()`: undefined.
   *
   * @returns the SPIFFE ID of the SVID in `identity.static.certFile`.
   * @throws {AgentError} `AGENT_NO_IDENTITY` as `start()` would.
   */
  static async checkStaticIdentity(
    config: AgentConfig,
    options: { readonly logger?: Logger } = {},
  ): Promise<SpiffeId | undefined> {
    if (!config.identity || !('static' in config.identity)) return undefined;
    const identity = await configuredIdentity(config, {
      logger: options.logger ?? pino({ level: 'silent' }),
      env: {},
    });
    try {
      const svid = identity.getX509Svid();
      checkSvid(config, svid, true);
      return svid.id;
    } finally {
      await identity.close();
    }
  }

  /** The agent's SPIFFE ID (from its SVID). @throws {AgentError} AGENT_NOT_STARTED before start. */
  get id(): SpiffeId {
    if (!this.#run) throw new AgentError('AGENT_NOT_STARTED', 'the agent has no identity before start()');
    return this.#run.identity.id;
  }

  /** Base URL of the A2A endpoint. @throws {AgentError} AGENT_NOT_STARTED before start. */
  get url(): string {
    if (!this.#run) throw new AgentError('AGENT_NOT_STARTED', 'the agent is not listening');
    return this.#run.url;
  }

  /** `host:port` of the A2A gRPC binding, when it is served and the agent is running. */
  get grpcUrl(): string | undefined {
    return this.#run?.grpcUrl;
  }

  /**
   * URL of the plain-HTTP ops listener, when one is configured: from early in
   * `start()` on (it answers probes while the agent starts); undefined again
   * once a start failed.
   */
  get opsUrl(): string | undefined {
    return this.#ops?.url;
  }

  /** `new`, `starting`, `running`, `draining` or `stopped`. */
  get state(): AgentState {
    return this.#state;
  }

  /** Registers a capability; after `start()` it is served and added to the card at once. */
  override capability<I extends z.ZodType>(
    name: string,
    options: CapabilityOptions<I>,
    handler: CapabilityHandler<z.output<I>>,
  ): this {
    if (options.extended === true && this.#run && !this.#run.a2a.handler.hasExtendedCard) {
      throw new AgentError(
        'CAPABILITY_INVALID',
        `capability "${name}": an extended capability must be registered before start() (this agent serves no extended card)`,
      );
    }
    super.capability(name, options, handler);
    const def = this.capabilities.get(name);
    if (this.#run && def) this.#inbound.serve(this.#run, def);
    return this;
  }

  /**
   * Tells the agent where the agent with `id` is served (in addition to `config.peers`).
   *
   * @throws {CallError} `PEER_UNKNOWN` for an invalid SPIFFE ID or a URL that is not https.
   */
  addPeer(id: SpiffeId | string, url: string): this {
    const peer = checkPeer(id, url);
    this.#peerQueue.push(peer);
    this.#run?.outbound.addPeer(peer.id, peer.url);
    return this;
  }

  readonly #peerQueue: Array<{ id: SpiffeId | string; url: string }> = [];

  /** The agent card as served at `url`. @throws {AgentError} AGENT_NOT_STARTED before start. */
  agentCard(): AgentCard {
    if (!this.#run) throw new AgentError('AGENT_NOT_STARTED', 'the agent card exists once started');
    return this.#run.a2a.agentCard(this.#run.url);
  }

  /** Why the agent is not ready, or undefined when it is (what `/ready` reports). */
  notReadyReason(): string | undefined {
    if (this.#state !== 'running') return `agent is ${this.#state}`;
    const run = this.#run!;
    let svid: X509Svid;
    try {
      svid = run.identity.getX509Svid();
    } catch (err) {
      // The provider says why: none yet, or which SVID expired when and why nothing replaced it.
      return `no usable X.509-SVID: ${(err as Error).message}`;
    }
    // For a provider that hands out an expired SVID instead of throwing.
    if (svid.expiresAt.getTime() <= Date.now()) {
      return `no usable X.509-SVID: it expired at ${svid.expiresAt.toISOString()}`;
    }
    if (this.config.spiffeId !== undefined && svid.id.toString() !== this.config.spiffeId) {
      return `the SVID is ${svid.id.toString()}, not the configured ${this.config.spiffeId}`;
    }
    // Both asked: each kicks its own probe while failing.
    const store = this.#storeHealth.notReadyReason();
    const policy = this.#policyHealth.notReadyReason();
    return store ?? policy;
  }

  /**
   * The task store `config.store` names (undefined: the embedded default).
   * A missing URL, a missing `pg` package, a database that cannot be
   * reached or a schema behind this version refuse the start, before
   * anything serves.
   */
  async #configuredStore(): Promise<TaskStore | undefined> {
    const cfg = this.config.store.postgres;
    if (!cfg) return undefined;
    const url = this.#env[cfg.urlEnv];
    if (!url) {
      throw new AgentError(
        'AGENT_CONFIG_INVALID',
        `store.postgres: set ${cfg.urlEnv} to the database URL (it is read from the environment only)`,
      );
    }
    // Another scheme or an unreadable URL is a mistake in the config, not a database away.
    checkPostgresUrl(cfg.urlEnv, url);
    let pgStore: PostgresModule;
    try {
      // Loaded only when configured: agents without PostgreSQL never need `pg`.
      pgStore = await import('@weave/a2a/postgres');
    } catch (err) {
      throw new AgentError('AGENT_CONFIG_INVALID', 'store.postgres needs the pg package (npm i pg)', {
        cause: err,
      });
    }
    const retained = this.config.server.retainedBytes;
    const store = new pgStore.PostgresTaskStore({
      connectionString: url,
      leaseTtlMs: cfg.leaseTtlMs,
      terminalTtlMs: cfg.terminalTtlMs,
      queryTimeoutMs: cfg.queryTimeoutMs,
      // The same bounds as in memory, counted in the database across replicas.
      ...(retained?.total === undefined ? {} : { maxBytes: retained.total }),
      ...(retained?.perCaller === undefined ? {} : { maxBytesPerOwner: retained.perCaller }),
      ...(retained?.perTask === undefined ? {} : { maxBytesPerTask: retained.perTask }),
    });
    try {
      await checkSchema(pgStore, store.pool);
    } catch (err) {
      await store.close();
      // Not a config error: the same config starts once the database is back.
      if (err instanceof TaskStoreUnavailableError) {
        throw new AgentError(
          'AGENT_STORE_UNAVAILABLE',
          `the task database cannot be reached: ${err.message}`,
          { cause: err },
        );
      }
      throw err;
    }
    return store;
  }

  /**
   * The schema check of {@link #configuredStore}, for the store given as
   * `taskStore` when it is a `PostgresTaskStore`; another store is not
   * checked (its own schema is its own). A database that cannot be reached
   * now does not refuse the start, as it did not before the check: `/ready`
   * is 503 until it answers.
   */
  async #checkLentStore(store: TaskStore): Promise<void> {
    const pool = (store as { pool?: unknown }).pool;
    if (typeof (pool as { query?: unknown } | null | undefined)?.query !== 'function') return;
    let pgStore: PostgresModule;
    try {
      pgStore = await import('@weave/a2a/postgres');
    } catch {
      // Without `pg` the pool is not one of PostgreSQL's: nothing to check.
      return;
    }
    // Weave's own store (or a subclass), not any store that happens to hold a pool.
    if (!(store instanceof pgStore.PostgresTaskStore)) return;
    // Bounded: the application's pool may have no connect or query timeout,
    // and a database that does not answer must not hold the start.
    let timer: NodeJS.Timeout | undefined;
    const silent = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new TaskStoreUnavailableError(`no answer in ${LENT_STORE_CHECK_MS} ms`)),
        LENT_STORE_CHECK_MS,
      );
    });
    try {
      await Promise.race([checkSchema(pgStore, store.pool), silent]);
    } catch (err) {
      if (!(err instanceof TaskStoreUnavailableError)) throw err;
      this.logger.warn(
        { err },
        'the task database cannot be reached: its schema version is not checked, and the agent is not ready until it answers',
      );
    } finally {
      clearTimeout(timer);
    }
  }

  // ---- lifecycle ------------------------------------------------------------------

  /**
   * Opens the ops listener (`observability.ops`; `/ready` answers 503 until
   * the start is over), gets the identity, waits for a valid SVID, builds
   * the policy enforcer, and serves A2A over mTLS.
   *
   * @throws {AgentError} `AGENT_NO_IDENTITY` without a valid SVID (or with the
   *   wrong SPIFFE ID), `AGENT_ALREADY_STARTED`, `AGENT_CONFIG_INVALID` when
   *   the policy cannot be loaded or `store.postgres` has no URL,
   *   `AGENT_STORE_UNAVAILABLE` when the task database cannot be reached (a
   *   later start may succeed), `AGENT_STORE_SCHEMA_OUTDATED` when it needs
   *   `weave db migrate`, `AGENT_LISTEN_FAILED` when a port is held by
   *   another process (naming the listener and its key: `server.port`,
   *   `server.grpc.port` or `observability.ops.port`),
   *   `AGENT_SERVER_CONSUMED` when the fastify instance given as `server`
   *   has already booted (see {@link SecureAgentOptions.server}),
   *   `AGENT_STOPPING` when `stop()` was called before it finished. Nothing
   *   it made is left running after a failure, and nothing it was given
   *   (identity, enforcer, task store, server) is closed.
   */
  start(): Promise<StartedAgent> {
    if (this.#state !== 'new') {
      return Promise.reject(
        new AgentError(
          'AGENT_ALREADY_STARTED',
          this.#state === 'stopped'
            ? 'a stopped agent cannot be started again'
            : `the agent is ${this.#state}`,
        ),
      );
    }
    this.#state = 'starting';
    const abort = new AbortController();
    this.#abortStart = abort;
    this.#starting = this.#start(abort.signal).then(
      (r) => {
        this.#abortStart = undefined;
        this.#state = 'running';
        return r;
      },
      (err: unknown) => {
        this.#abortStart = undefined;
        this.#state = 'new';
        throw err;
      },
    );
    return this.#starting;
  }

  /**
   * `signal` is fired by `stop()`: each wait gives up at once (the identity)
   * or the start gives up after it (the short ones), with the abort reason.
   */
  async #start(signal: AbortSignal): Promise<StartedAgent> {
    const cleanup: Array<() => Promise<unknown>> = [];
    /** The listener being bound, named in an AGENT_LISTEN_FAILED. */
    let listening: Listener | undefined;
    try {
      if (this.#opts.server && this.#serverMounted) throw serverConsumed();
      // First: probes are answered for the whole start (the wait for an SVID,
      // a database), /health 200 as the process is alive and /ready 503 with
      // "agent is starting", not refused connections that fail a liveness probe.
      let ops: { server: Server; url: string } | undefined;
      const opsCfg = this.config.observability.ops;
      if (opsCfg) {
        listening = 'ops';
        const opsListener = await startOpsListener(opsCfg.host, opsCfg.port, this.#probeState, this.metrics);
        ops = this.#ops = opsListener;
        cleanup.push(async () => {
          this.#ops = undefined;
          await closeOpsListener(opsListener.server);
        });
        signal.throwIfAborted();
        if (!isLoopback(opsCfg.host)) {
          this.logger.warn(
            { host: opsCfg.host },
            'the plain-HTTP ops listener is reachable beyond this host (health and metrics only)',
          );
        }
      }
      const { identity, owned: ownsIdentity } = await this.#identity(signal);
      if (ownsIdentity) cleanup.push(() => identity.close());
      signal.throwIfAborted();
      const svid = await waitForSvid(identity, this.#identityTimeout(), signal);
      checkSvid(this.config, svid, ownsIdentity);
      const selfId = svid.id;
      const { enforcer: inner, owned: ownsEnforcer } = await this.#enforcer();
      if (ownsEnforcer) cleanup.push(async () => inner.close?.());
      signal.throwIfAborted();
      await this.#followPolicyEngine(inner, ownsEnforcer);
      signal.throwIfAborted();
      const enforcer = new MeteredEnforcer(inner, this.metrics);

      const app =
        this.#opts.server ??
        createMtlsServer({
          identity,
          // Any peer with a verified SVID reaches the routes; policy decides per call.
          authorize: authorizeAny(),
          config: {
            minTlsVersion: this.config.transport.tlsMinVersion,
            requestTimeoutMs: this.config.transport.requestTimeoutMs,
            // How long a connection may stay unhandshaked (unauthenticated) on this port.
            connectTimeoutMs: this.config.transport.connectTimeoutMs,
          },
          maxConnections: this.config.server.maxConnections,
          maxConnectionsPerPeer: this.config.server.maxConnectionsPerPeer,
          maxHandshakesPerAddress: this.config.server.maxHandshakesPerAddress,
          fastify: {
            loggerInstance: sharedChildLogger(this.logger.child({ component: 'http' })),
            // Calls are logged once each by the agent, with their correlation id.
            logController: new LogController({ disableRequestLogging: true }),
            bodyLimit: this.config.server.bodyLimit,
          },
        });
      // A fastify instance of the user's is theirs to close, even after a failed start.
      if (!this.#opts.server) cleanup.push(() => app.close());

      const skillSchemas: SkillSchemas = { public: {}, extended: {} };
      const routing = this.#inbound.routing();
      const signer = new AgentCardSigner(identity);
      // Set once listening: no call can ask for the extended card before.
      let servedUrl = '';
      cleanup.push(async () => signer.close());
      // The agent closes only a store it built: the user's is lent, and stays open for them (and a retry).
      const userStore = this.#opts.taskStore;
      // Checked as a configured store is: on a schema behind the code every call would fail.
      if (userStore) await this.#checkLentStore(userStore);
      const given = userStore ?? (await this.#configuredStore());
      // Watched: /ready answers 503 while the store cannot be reached.
      const taskStore =
        given && storeProxy(given, { lent: given === userStore, observe: this.#storeHealth.follow(given) });
      if (given && !userStore) cleanup.push(async () => given.close?.());
      signal.throwIfAborted();
      const a2a: A2AServer = new A2AServer({
        card: {
          name: this.config.name,
          description: this.config.description || `${this.config.name} (a Weave agent)`,
          version: this.config.version,
          ...(this.config.server.publicUrl ? { url: this.config.server.publicUrl } : {}),
          defaultInputModes: ['application/json', 'text/plain'],
          defaultOutputModes: ['application/json'],
          v03Compat: this.config.server.v03Compat,
        },
        selfId,
        enforcer,
        // The card is signed by the SVID (x5c) and re-signed when it rotates.
        cardSigner: signer,
        ...(taskStore ? { taskStore } : {}),
        limits: {
          maxBodyBytes: this.config.server.bodyLimit,
          maxConcurrentTasks: this.config.server.maxConcurrentTasks,
          ...(this.config.server.maxTaskMs === undefined ? {} : { maxTaskMs: this.config.server.maxTaskMs }),
          ...(this.config.server.perCaller ? { perCaller: this.config.server.perCaller } : {}),
          ...(this.config.server.retainedBytes ? { retainedBytes: this.config.server.retainedBytes } : {}),
        },
        bindings: this.config.server.bindings,
        heartbeatMs: this.config.server.keepaliveMs,
        extensions: [skillSchemaExtension(skillSchemas.public)],
        // Only when some capability is `extended`: the public card then declares it.
        ...(this.capabilities.list().some((d) => d.options.extended === true)
          ? { extendedCard: () => signer.sign(extendedCard(a2a.extendedAgentCard(servedUrl), skillSchemas)) }
          : {}),
        ...(routing ? { routing } : {}),
        // Every refusal, those before any task exists included; the gRPC
        // server below serves this server's handler, so its refusals too.
        onRequestError: (e) => this.metrics.requestRefused(e.code),
      });
      cleanup.push(() => a2a.close());
      // gRPC on its own port (see the README for why not multiplexed): the
      // same SVID, bundle, peer check and request handler as the HTTP port.
      // Built now, from the same SVID as the HTTP server's options.
      const grpcServer = this.config.server.bindings.includes('GRPC')
        ? new A2AGrpcServer({
            handler: a2a.handler,
            identity,
            authorize: authorizeAny(),
            config: {
              minTlsVersion: this.config.transport.tlsMinVersion,
              connectTimeoutMs: this.config.transport.connectTimeoutMs,
            },
            keepaliveMs: this.config.server.keepaliveMs,
            maxConnections: this.config.server.maxConnections,
            maxConnectionsPerPeer: this.config.server.maxConnectionsPerPeer,
            maxHandshakesPerAddress: this.config.server.maxHandshakesPerAddress,
            logger: this.logger.child({ component: 'grpc' }),
          })
        : undefined;
      if (grpcServer) cleanup.push(() => grpcServer.close(0));
      // Read at each scrape (weave_connections_refused_total); a server's
      // last counts are taken once it is closed. A given instance made
      // elsewhere than createMtlsServer counts none.
      const readHttp = app.connectionRefusals;
      const unwatch = [
        ...(readHttp ? [this.metrics.watchConnectionRefusals('http', readHttp)] : []),
        ...(grpcServer
          ? [
              this.metrics.watchConnectionRefusals('grpc', () => grpcServer.connectionRefusals),
              // The gRPC port's TLS server is the binding's own: it counts its handshakes itself.
              this.metrics.watchTlsHandshakes(() => grpcServer.tlsHandshakes),
            ]
          : []),
      ];
      cleanup.push(async () => {
        for (const u of unwatch) u();
      });

      // Every capability is served before the first connection is accepted.
      const served = { a2a, skillSchemas, identity };
      for (const def of this.capabilities.list()) this.#inbound.serve(served, def);
      if (this.#opts.server) {
        // The owner's plugins load first, so that whether mtlsAuth is among them is known.
        await app.after();
        // Refused before anything of the agent's is on it: the instance stays as it was given.
        checkMountable(app);
      }
      try {
        // In a plugin of their own, so on a given instance the agent's hooks stay off its owner's routes.
        await app.register(async (child) => {
          // fastify types a plugin's instance with the default server; it is a child of `app`.
          const scope = child as unknown as MtlsFastifyInstance;
          this.#installHooks(scope);
          this.#installProbes(scope, enforcer, selfId);
          await scope.register(a2a.plugin);
        });
      } catch (err) {
        if ((err as { code?: unknown }).code === 'AVV_ERR_ROOT_PLG_BOOTED') throw serverConsumed(err);
        throw err;
      } finally {
        // fastify has no way to take routes off again: this instance is done with, whatever comes next.
        if (this.#opts.server) this.#serverMounted = true;
      }
      signal.throwIfAborted();

      const onHandshake = (): void => this.metrics.tlsHandshakes.inc({ side: 'server', result: 'ok' });
      const onTlsError = (): void => this.metrics.tlsHandshakes.inc({ side: 'server', result: 'error' });
      app.server.on('secureConnection', onHandshake).on('tlsClientError', onTlsError);
      cleanup.push(async () => {
        app.server.off('secureConnection', onHandshake).off('tlsClientError', onTlsError);
      });
      listening = 'server';
      await app.listen({ host: this.config.server.host, port: this.config.server.port });
      // Undone without app.close(), which would run the owner's onClose hooks: the instance is theirs.
      if (this.#opts.server) cleanup.push(() => stopListening(app));
      const addr = app.server.address() as AddressInfo;
      const url = this.config.server.publicUrl ?? `https://${urlHost(addr.address)}:${addr.port}`;
      servedUrl = url;
      if (this.config.server.publicUrl === undefined) {
        // Before anything is awaited, so before a card is served: the bound
        // address is the URL to list. A wildcard address is no URL a peer can
        // reach: A2AServer's signed card then lists the local address each
        // request reached (not the Host header, which the caller chooses),
        // one the caller used but others may not reach (a container's own
        // address, 127.0.0.1): only the operator knows the one to list.
        if (!isWildcard(addr.address)) a2a.advertiseUrl(url);
        else {
          this.logger.warn(
            { host: addr.address, port: addr.port },
            'server.publicUrl is unset and the agent listens on every interface: the signed agent card ' +
              'lists the local address each caller reached, which others may not reach; set server.publicUrl',
          );
        }
      }
      signal.throwIfAborted();
      let grpc: { server: A2AGrpcServer; url: string } | undefined;
      if (grpcServer) {
        const g = this.config.server.grpc;
        listening = 'grpc';
        const bound = await grpcServer.listen({ host: g.host ?? this.config.server.host, port: g.port });
        grpc = { server: grpcServer, url: g.publicAddress ?? bound.url };
        a2a.advertiseGrpc(grpc.url);
        signal.throwIfAborted();
      }
      const outbound = new Outbound({
        identity,
        enforcer,
        metrics: this.metrics,
        logger: this.logger,
        config: this.config,
        channel: this.#opts.channel,
      });
      for (const p of this.#peerQueue) outbound.addPeer(p.id, p.url);

      const unsubscribe = [
        () => signer.close(),
        identity.onUpdate((u) => {
          if (this.config.spiffeId !== undefined && u.svid.id.toString() !== this.config.spiffeId) {
            this.logger.error(
              { got: u.svid.id.toString(), want: this.config.spiffeId },
              'the rotated SVID carries another SPIFFE ID; the agent reports not ready',
            );
          }
        }),
      ];
      const run: Running = {
        identity,
        ownsIdentity,
        enforcer,
        ownsEnforcer,
        app,
        a2a,
        ...(grpc ? { grpc: grpc.server, grpcUrl: grpc.url } : {}),
        outbound,
        url,
        skillSchemas,
        unsubscribe,
        unwatch,
        ...(ops ? { ops: ops.server } : {}),
      };
      this.#run = run;
      this.logger.info(
        { id: selfId.toString(), url, capabilities: this.capabilities.list().map((c) => c.name) },
        'agent started',
      );
      return {
        url,
        id: selfId,
        ...(ops ? { opsUrl: ops.url } : {}),
        ...(grpc ? { grpcUrl: grpc.url } : {}),
      };
    } catch (err) {
      for (const c of cleanup.reverse()) await c().catch(() => undefined);
      if (err instanceof AgentError) throw err;
      const code = (err as NodeJS.ErrnoException).code;
      if (
        code !== undefined &&
        LISTEN_ERRORS.has(code) &&
        (err as { syscall?: string }).syscall === 'listen'
      ) {
        // The machine's state, not the config's: a port another process holds.
        const on = listening === undefined ? '' : ` on ${LISTENERS[listening]}`;
        throw new AgentError(
          'AGENT_LISTEN_FAILED',
          `the agent could not listen${on}: ${(err as Error).message}`,
          { cause: err },
        );
      }
      throw new AgentError('AGENT_CONFIG_INVALID', `the agent could not start: ${(err as Error).message}`, {
        cause: err,
      });
    }
  }

  /**
   * Stops gracefully: `/ready` answers 503 at once; calls are served as
   * before for `shutdownDelayMs` (default 0), then new tasks are refused;
   * in-flight tasks may finish for up to `drainTimeoutMs`. Then those still
   * running end FAILED (`AGENT_STOPPING`), except, with a task store that
   * keeps leases (`store.postgres`), those of `rerunnable` capabilities:
   * they are handed to another replica, which runs them again at once (their
   * handlers' signals abort with `TaskHandedOverError`), as it would had
   * this one died. Then the server, the outbound channels and the owned
   * identity and policy are closed. Idempotent: a second call waits for the first, whose options
   * apply.
   *
   * @throws {AgentConfigError} (`AGENT_CONFIG_INVALID`, as a rejection) when
   *   `drainTimeoutMs` or `shutdownDelayMs` is not a whole number of ms from 0
   *   to 2147483647; the agent is then left as it was.
   */
  stop(options: StopOptions = {}): Promise<void> {
    // Checked before anything changes: a NaN or infinite drain would never
    // cancel the tasks still running, and stop() would wait forever.
    const issues = STOP_TIMERS.flatMap(([key, zero]) => {
      const ms = options[key];
      if (ms === undefined || (Number.isSafeInteger(ms) && ms >= 0 && ms <= MAX_TIMER_MS)) return [];
      return [
        {
          path: key,
          message: `must be a whole number of milliseconds from 0 (${zero}) to ${MAX_TIMER_MS}, got ${String(ms)}`,
        },
      ];
    });
    if (issues.length > 0) return Promise.reject(new AgentConfigError('stop() options', issues));
    // The first stop() decides; another one waits for it.
    if (this.#stopping === undefined) {
      // Not ready from this moment, not from the next tick; without a
      // shutdown delay, refusing new tasks from this moment too.
      if (this.#state === 'running') this.#state = 'draining';
      if (this.#shutdownDelay(options) === 0) this.#run?.a2a.drain();
      this.#stopping = this.#stop(options);
    }
    return this.#stopping;
  }

  #shutdownDelay(options: StopOptions): number {
    return options.shutdownDelayMs ?? this.config.server.shutdownDelayMs;
  }

  async #stop(options: StopOptions): Promise<void> {
    // A start still waiting (for SPIRE, say) gives up now rather than hold a shutdown up to its timeout.
    this.#abortStart?.abort(new AgentError('AGENT_STOPPING', 'stop() was called before start() finished'));
    if (this.#starting) await this.#starting.catch(() => undefined);
    const run = this.#run;
    if (!run) {
      this.#state = 'stopped';
      return;
    }
    this.#state = 'draining';
    const delayMs = this.#shutdownDelay(options);
    if (delayMs > 0) {
      // /ready has answered 503 since stop(); the ports serve on as before, so
      // that a call a load balancer still sends here (until its next readiness
      // poll) is served, not refused.
      this.logger.info({ delayMs }, 'not ready; serving on until the shutdown delay is over');
      await new Promise((r) => setTimeout(r, delayMs));
    }
    // On every binding: the request handler refuses new tasks (503 / UNAVAILABLE).
    run.a2a.drain();
    const drainMs = options.drainTimeoutMs ?? this.config.server.drainTimeoutMs;
    this.logger.info({ drainMs, inflight: this.#inflight(), tasks: this.#inbound.runningTasks }, 'draining');
    const drained = await this.#waitIdle(drainMs);
    if (!drained) {
      this.logger.warn({ tasks: this.#inbound.runningTasks }, 'drain timeout: canceling the remaining tasks');
    }
    const stopping = new AgentError('AGENT_STOPPING', 'the agent stopped before the task finished');
    // Before the rest fail: with a store that keeps leases, a task that may
    // run again goes to another replica, as on a crash, not FAILED. Its
    // handler's signal aborts, and the inbound wrapper writes nothing for it.
    const handedOver = run.a2a.handler.handOverTasks();
    if (handedOver > 0) this.logger.info({ tasks: handedOver }, 'rerunnable tasks handed to another replica');
    this.#inbound.stop(stopping);
    // Handlers fail their tasks with AGENT_STOPPING first; the A2A server then
    // cancels any leftovers, and hands its lease back once what the handed-over
    // tasks published is written: another replica claims them at once.
    await this.#waitIdle(500, true);
    await run.a2a.close().catch(() => undefined);
    // The user's store was lent to it without close(): stop() closes it, as it always did.
    await this.#opts.taskStore
      ?.close?.()
      .catch((err: unknown) => this.logger.warn({ err }, 'task store close failed'));
    // Let the answers of canceled tasks reach their callers before connections close.
    await this.#waitIdle(1_000);
    for (const u of run.unsubscribe) u();
    await run.app.close().catch((err: unknown) => this.logger.warn({ err }, 'server close failed'));
    await run.grpc
      ?.close(1_000)
      .catch((err: unknown) => this.logger.warn({ err }, 'gRPC server close failed'));
    for (const u of run.unwatch) u();
    if (run.ops) await closeOpsListener(run.ops);
    await run.outbound.close();
    if (run.ownsEnforcer) await run.enforcer.close().catch(() => undefined);
    if (run.ownsIdentity) await run.identity.close().catch(() => undefined);
    this.#state = 'stopped';
    this.logger.info('agent stopped');
  }

  async #waitIdle(ms: number, tasksOnly = false): Promise<boolean> {
    const until = Date.now() + ms;
    while ((!tasksOnly && this.#inflight() > 0) || this.#inbound.runningTasks > 0) {
      if (Date.now() >= until) return false;
      await new Promise((r) => setTimeout(r, Math.min(20, Math.max(1, until - Date.now()))));
    }
    return true;
  }

  // ---- outbound ----------------------------------------------------------------

  /**
   * Calls `capability` on another agent and returns its result.
   *
   * 1. resolves `target` (a SPIFFE ID via `config.peers`/`addPeer`, or an
   *    https URL whose agent card must name the SPIFFE ID its TLS certificate proves);
   * 2. asks the policy (outbound) — a denial throws `CALL_DENIED` and sends nothing;
   * 3. sends A2A `SendMessage` (or `SendStreamingMessage` with `stream`) over a
   *    pooled mTLS channel that accepts only the target's SPIFFE ID, through
   *    a per-peer circuit breaker, with `traceparent` and the deadline;
   * 4. returns the task's data artifact (validated by `options.output` if given).
   *
   * @throws {CallError} `CALL_DENIED` (by either side), `CALL_FAILED`,
   *   `DEADLINE_EXCEEDED`, `PEER_UNKNOWN`, `PEER_VERIFICATION_FAILED`,
   *   `AGENT_NOT_STARTED`, `AGENT_CONFIG_INVALID` (a bad `options.timeoutMs`).
   */
  callAgent<O extends z.ZodType | undefined = undefined>(
    target: SpiffeId | string,
    capability: string,
    input: unknown,
    options: CallAgentOptions<O> = {},
  ): Promise<CallResult<O>> {
    return this.#call(target, capability, input, options) as Promise<CallResult<O>>;
  }

  // ---- serving -----------------------------------------------------------------

  /**
   * Every outbound call of this agent: `callAgent`, and a handler's
   * ctx.callAgent, which passes the call being served as `scope`.
   */
  readonly #call = (
    target: SpiffeId | string,
    capability: string,
    input: unknown,
    options: CallAgentOptions<z.ZodType | undefined>,
    scope?: CallScope,
  ): Promise<unknown> => {
    const run = this.#run;
    if (!run || this.#state === 'stopped') {
      return Promise.reject(
        new CallError('AGENT_NOT_STARTED', 'callAgent needs a started agent', {
          target: shownTarget(target),
          capability,
        }),
      );
    }
    return run.outbound.call(run.identity.id, target, capability, input, options, scope);
  };

  readonly #requestClosed = (): void => {
    this.#inflightRequests--;
  };

  /** Requests in flight on every binding: the HTTP ones and the gRPC server's calls. */
  #inflight(): number {
    return this.#inflightRequests + (this.#run?.grpc?.callsInFlight ?? 0);
  }

  readonly #probeState: ProbeState = { notReadyReason: () => this.notReadyReason() };
  readonly #storeHealth = new StoreHealth();

  #installHooks(app: MtlsFastifyInstance): void {
    app.addHook('onRequest', (request, reply, done) => {
      this.#inflightRequests++;
      // A response closes once: one shared listener, no per-request closure.
      reply.raw.on('close', this.#requestClosed);
      done();
    });
  }

  #installProbes(app: MtlsFastifyInstance, enforcer: MeteredEnforcer, selfId: SpiffeId): void {
    app.get('/health', async () => healthBody());
    app.get('/ready', async (_request, reply) => {
      const r = readyBody(this.#probeState);
      return reply.code(r.code).send(r.body);
    });
    app.get('/metrics', async (request, reply) => {
      const d = await enforcer.checkInbound({ caller: request.peer, callee: selfId, action: METRICS_ACTION });
      if (!d.allowed) {
        return reply.code(403).send({ error: { code: 'PERMISSION_DENIED', auditId: d.auditId } });
      }
      const m = await this.metrics.render();
      return reply.header('content-type', m.contentType).send(m.body);
    });
  }

  // ---- set-up helpers ---------------------------------------------------------------

  #identityTimeout(): number {
    return identityTimeoutMs(this.config.identity);
  }

  async #identity(signal: AbortSignal): Promise<{ identity: IdentityProvider; owned: boolean }> {
    if (this.#opts.identity) return { identity: this.#opts.identity, owned: false };
    const identity = await configuredIdentity(this.config, {
      logger: this.logger.child({ component: 'identity' }),
      env: this.#env,
      // stop() cuts the wait for SPIRE short rather than hold a shutdown up to the timeout.
      signal,
    });
    return { identity, owned: true };
  }

  /**
   * Has /ready follow the OPA the agent built from `authz.opa` (whose
   * `onAvailability` is {@link PolicyEngineHealth.seen}), and asks it once:
   * one that cannot be reached is a warning, not a refused start (OPA may
   * come up after the agent), and the agent is not ready until it answers.
   */
  async #followPolicyEngine(enforcer: PolicyEnforcer, owned: boolean): Promise<void> {
    if (!owned || !(enforcer instanceof OpaEnforcer)) {
      this.#policyHealth.follow(undefined);
      return;
    }
    this.#policyHealth.follow(() => enforcer.health());
    const health = await enforcer.health();
    if (!health.ok) {
      this.logger.warn(
        { reason: health.reason },
        'the policy engine (OPA) failed its health check: every call it cannot decide is denied, and /ready is 503 while it cannot be reached',
      );
    }
  }

  async #enforcer(): Promise<{ enforcer: PolicyEnforcer; owned: boolean }> {
    if (this.#opts.enforcer) return { enforcer: this.#opts.enforcer, owned: false };
    const authz = this.config.authz;
    // Unreachable through the constructor, which refuses a config with neither.
    if (!authz)
      throw new AgentError('AGENT_CONFIG_INVALID', 'the authz section is missing and no enforcer was given');
    try {
      return {
        enforcer: await enforcerFromConfig(authz, {
          logger: this.logger.child({ component: 'authz' }),
          onAvailability: this.#policyHealth.seen,
        }),
        owned: true,
      };
    } catch (err) {
      throw new AgentError('AGENT_CONFIG_INVALID', `policy: ${(err as Error).message}`, { cause: err });
    }
  }
}

// ---- helpers ------------------------------------------------------------------------

/**
 * The identity provider `config.identity` names, ready with an SVID; what
 * it fails with as an {@link AgentError} `AGENT_NO_IDENTITY`. A bundle file of
 * `identity.static` that cannot be taken is named by its key and path, not
 * reported as a missing SVID: the SVID may be fine, the file is what to fix.
 */
async function configuredIdentity(
  config: AgentConfig,
  options: { logger: Logger; env: NodeJS.ProcessEnv; signal?: AbortSignal },
): Promise<IdentityProvider> {
  try {
    return await identityFromConfig(config.identity, {
      logger: options.logger,
      spiffeId: config.spiffeId,
      env: options.env,
      ...(options.signal === undefined ? {} : { signal: options.signal }),
    });
  } catch (err) {
    if (err instanceof AgentError) throw err;
    const bundle = config.identity && 'static' in config.identity ? bundleErrorIn(err) : undefined;
    if (bundle) {
      // The provider's message names the option and file (`bundleFile (…): …`): here it is a config key.
      const hint =
        bundle.code === 'BUNDLE_FOREIGN_AUTHORITY'
          ? ": identity.static.bundleFile takes the CAs of the SVID's own trust domain only; move another domain's CA to a file of its own under identity.static.federated"
          : '';
      throw new AgentError('AGENT_NO_IDENTITY', `identity.static.${bundle.message}${hint}`, { cause: err });
    }
    throw new AgentError('AGENT_NO_IDENTITY', `no X.509-SVID: ${(err as Error).message}`, { cause: err });
  }
}

/** The first {@link BundleError} in `err`'s chain of causes. */
function bundleErrorIn(err: unknown): BundleError | undefined {
  for (let e = err, depth = 0; e instanceof Error && depth < 8; e = e.cause, depth++)
    if (e instanceof BundleError) return e;
  return undefined;
}

/**
 * Refuses an SVID that has expired, or is not the configured `spiffeId`.
 * `configured`: the identity is the one `config.identity` names (else one
 * given to the agent), so the error can say where the SVID came from.
 */
function checkSvid(config: AgentConfig, svid: X509Svid, configured: boolean): void {
  if (svid.expiresAt.getTime() <= Date.now()) {
    throw new AgentError('AGENT_NO_IDENTITY', `the X.509-SVID of ${svid.id.toString()} has expired`);
  }
  if (config.spiffeId !== undefined && svid.id.toString() !== config.spiffeId) {
    const from =
      configured && config.identity && 'static' in config.identity
        ? `identity.static.certFile (${config.identity.static.certFile}) holds`
        : 'the Workload API issued';
    throw new AgentError(
      'AGENT_NO_IDENTITY',
      `${from} ${svid.id.toString()}, but config.spiffeId requires ${config.spiffeId}`,
    );
  }
}

/**
 * Refuses a task database whose schema is behind the migrations this version
 * ships (`AGENT_STORE_SCHEMA_OUTDATED`): its statements would fail on every
 * call instead. Errors reading the version are thrown as they come.
 */
/** How long `start()` waits for an injected PostgreSQL store's schema version before it goes on unchecked. */
const LENT_STORE_CHECK_MS = 5_000;

async function checkSchema(
  pgStore: PostgresModule,
  pool: Parameters<PostgresModule['schemaVersion']>[0],
): Promise<void> {
  const [have, shipped] = await Promise.all([pgStore.schemaVersion(pool), pgStore.loadMigrations()]);
  const latest = shipped.at(-1)?.version ?? 0;
  if (have < latest) {
    throw new AgentError(
      'AGENT_STORE_SCHEMA_OUTDATED',
      `the task database is at schema version ${have}, this Weave needs ${latest}: run \`weave db migrate\``,
    );
  }
}

/** The agent's listeners, as an AGENT_LISTEN_FAILED names them (with their config key). */
type Listener = 'server' | 'grpc' | 'ops';
const LISTENERS: Readonly<Record<Listener, string>> = {
  server: 'its mTLS port (server.port)',
  grpc: 'its gRPC port (server.grpc.port)',
  ops: 'its ops listener (observability.ops.port)',
};

/** The timers of {@link StopOptions}, and what 0 means for each. */
const STOP_TIMERS = [
  ['drainTimeoutMs', 'cancel at once'],
  ['shutdownDelayMs', 'no delay'],
] as const satisfies ReadonlyArray<readonly [keyof StopOptions, string]>;

/** Errors of a listen() that the machine refused (a port in use, one below 1024 without the right, an address not here). */
const LISTEN_ERRORS = new Set(['EADDRINUSE', 'EACCES', 'EADDRNOTAVAIL']);

/** The SVID `identity` has, or its first one within `timeoutMs`; rejects with `signal`'s reason when it aborts first. */
async function waitForSvid(
  identity: IdentityProvider,
  timeoutMs: number,
  signal: AbortSignal,
): Promise<X509Svid> {
  try {
    return identity.getX509Svid();
  } catch {
    // not yet: wait for the first update
  }
  signal.throwIfAborted();
  return new Promise<X509Svid>((resolve, reject) => {
    const settle = (): void => {
      clearTimeout(timer);
      unsubscribe();
      signal.removeEventListener('abort', onAbort);
    };
    const onAbort = (): void => {
      settle();
      reject(signal.reason);
    };
    const timer = setTimeout(() => {
      settle();
      reject(new AgentError('AGENT_NO_IDENTITY', `no X.509-SVID within ${timeoutMs} ms`));
    }, timeoutMs);
    const unsubscribe = identity.onUpdate((u) => {
      settle();
      resolve(u.svid);
    });
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

/** Why the fastify instance given as `server` cannot take the agent's routes. */
function serverConsumed(cause?: unknown): AgentError {
  return new AgentError(
    'AGENT_SERVER_CONSUMED',
    'the fastify instance given as server has already booted (an earlier start() of this agent ' +
      'failed after putting its routes on it, or it was made ready or listening before start()), ' +
      'and fastify takes no new routes then: give a new SecureAgent a new createMtlsServer() instance',
    cause === undefined ? undefined : { cause },
  );
}

/**
 * Closes the ops listener, cutting its probes and scrapes: close() alone
 * waits for every connection, and Node stops checking their header and
 * request deadlines once closing, so a request left half-sent would hold
 * stop() (or a failed start's clean-up) forever.
 */
function closeOpsListener(server: Server): Promise<void> {
  const closed = new Promise<void>((r) => server.close(() => r()));
  server.closeAllConnections();
  return closed;
}

/** Stops a fastify instance of the user's from listening, without closing it (its onClose hooks are the user's). */
async function stopListening(app: MtlsFastifyInstance): Promise<void> {
  const server = app.server as MtlsFastifyInstance['server'] & { closeAllConnections?: () => void };
  const closed = new Promise<void>((r) => server.close(() => r()));
  server.closeAllConnections?.();
  await closed;
}

/**
 * A logger whose `child()` returns itself: fastify derives a child logger per
 * request (with a request id the agent does not use — calls carry their
 * correlation id), which costs on every call for nothing.
 */
function sharedChildLogger(base: Logger): Logger {
  const shared = Object.create(base) as Logger;
  shared.child = (() => shared) as unknown as Logger['child'];
  return shared;
}

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\./.test(host);
}

/** Whether `address`, as `server.address()` reports it, is the unspecified (every-interface) one. */
function isWildcard(address: string): boolean {
  return address === '0.0.0.0' || address === '::';
}

/**
 * A fastify instance given to serve on must be an mTLS one: client certificates
 * required and verified at the handshake, and `mtlsAuth` setting `request.peer`.
 */
function checkMountable(app: MtlsFastifyInstance): void {
  const tls = app.server as { requestCert?: unknown; rejectUnauthorized?: unknown };
  const missing = [
    ...(tls.requestCert === true && tls.rejectUnauthorized === true
      ? []
      : ['it does not require and verify client certificates']),
    ...(app.hasPlugin(MTLS_AUTH_PLUGIN) ? [] : ['mtlsAuth is not registered, so callers are not identified']),
  ];
  if (missing.length > 0) {
    throw new AgentError(
      'AGENT_CONFIG_INSECURE',
      `the fastify instance given as server cannot serve the agent: ${missing.join('; ')}. ` +
        'Create it with createMtlsServer({ identity, authorize }) from @weave/transport/server',
    );
  }
}
