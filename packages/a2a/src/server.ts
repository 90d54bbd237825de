import { randomUUID } from 'node:crypto';
import type { FastifyInstance, FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import { SpiffeId } from '@weave/identity';
import type { AuthzDecision, PolicyEnforcer } from '@weave/authz';
import type { z } from 'zod';
import { A2AError, A2AErrorCode, A2AErrors } from './errors.js';
import { TaskManager, WaitTimeoutError, snapshot } from './manager.js';
import { CallerLimits, type CallerLimitsInput } from './limits.js';
import { SseWriter } from './sse.js';
import type { PushConfigStore, StoredEvent, TaskRecord, TaskStore } from './store.js';
import { TaskStoreFullError, TaskStoreUnavailableError, isPushConfigStore } from './store.js';
import * as v1 from './wire/v1.js';
import type {
  AgentCard,
  AgentSkill,
  Artifact,
  Message,
  StreamResponse,
  Task,
  TaskPushNotificationConfig,
  TaskState,
} from './wire/v1.js';
import { INTERRUPTED_STATES, isTerminal } from './wire/v1.js';
import * as v03 from './wire/v03.js';

/** An artifact as a handler hands it over; the id is made up when missing. */
export type ArtifactInput = Omit<Artifact, 'artifactId'> & { artifactId?: string };

/** What a task handler may return: text, an artifact, or a final agent message. */
export type TaskResult = string | ArtifactInput | Message | undefined | void;

/** The view a task handler has of its task. */
export interface TaskContext {
  readonly taskId: string;
  readonly contextId: string;
  /** The task as it is now (a copy). */
  readonly task: Task;
  /** The message that started the task. */
  readonly message: Message;
  /** The skill invoked. */
  readonly skill: string;
  /** The authenticated caller (from the transport). */
  readonly caller: SpiffeId;
  /**
   * HTTP headers of the request that started the task (for example
   * `traceparent`): a layer above A2A reads its own context from them.
   */
  readonly headers: Readonly<Record<string, string | string[] | undefined>>;
  /** Aborted when the task is canceled or the server closes. */
  readonly signal: AbortSignal;
  /** Publishes a status; a string message becomes an agent text message. */
  publishStatus(state: TaskState, message?: Message | string): void;
  publishArtifact(artifact: ArtifactInput, options?: { append?: boolean; lastChunk?: boolean }): void;
  /** Publishes an agent message (as a WORKING status update carrying it). */
  publishMessage(message: Message | string): void;
  /**
   * Sets INPUT_REQUIRED with `prompt` and resolves with the client's reply,
   * sent as a new message with this task's id. Rejects when the task is
   * canceled or the wait times out.
   */
  requestInput(prompt: Message | string): Promise<Message>;
}

/** Runs one task of a skill. The return value becomes the final artifact or message. */
export type TaskHandler = (ctx: TaskContext) => Promise<TaskResult> | TaskResult;

/** The agent card fields the server does not derive by itself. */
export interface AgentCardOptions {
  readonly name: string;
  readonly description: string;
  readonly version: string;
  /**
   * Public URL of the JSON-RPC endpoint. Default: derived per request from the
   * Host header and the mount point.
   */
  readonly url?: string;
  readonly provider?: { url: string; organization: string };
  readonly documentationUrl?: string;
  readonly iconUrl?: string;
  readonly defaultInputModes?: string[];
  readonly defaultOutputModes?: string[];
  /** Skills declared up front; {@link A2AServer.registerTaskHandler} adds more. */
  readonly skills?: AgentSkill[];
}

/** Limits that keep one client from exhausting the server. */
export interface A2AServerLimits {
  /** Largest request body in bytes. Default 1 MiB. */
  readonly maxBodyBytes?: number;
  /** Most unfinished tasks at once; more get RESOURCE_EXHAUSTED. Default 1000. */
  readonly maxConcurrentTasks?: number;
  /**
   * Limits per verified caller (SPIFFE ID): unfinished tasks (default a
   * quarter of `maxConcurrentTasks`) and, when set, requests per second, with
   * overrides per caller pattern. Over one, the call is refused with a
   * retryable RESOURCE_EXHAUSTED error before anything runs.
   */
  readonly perCaller?: CallerLimitsInput;
  /** Most simultaneous stream subscribers of one task. Default 32. */
  readonly maxSubscribersPerTask?: number;
  /**
   * Bytes of events held for one stream subscriber that reads slower than the
   * task publishes. Beyond it the stream ends with a resumable UNAVAILABLE
   * error naming the last event sent (never silently). Default 8 MiB.
   */
  readonly maxStreamBufferBytes?: number;
  /** How long a handler waits for input before the task fails, in ms. Default 10 minutes. */
  readonly inputTimeoutMs?: number;
  /**
   * How long a blocking SendMessage waits for the task to settle before it
   * answers with the task as it is (still running), in ms. Default 60 s.
   */
  readonly blockingTimeoutMs?: number;
}

/** Push notifications: off unless enabled; then configs are stored and `send` is called per event. */
export interface A2APushOptions {
  readonly enabled: boolean;
  /**
   * Delivers one event to one webhook (see `createWebhookSender`); required
   * when enabled. Calls for one task are made in event order, one event at a
   * time. Errors are logged and otherwise ignored.
   */
  readonly send?: (config: TaskPushNotificationConfig, event: StreamResponse) => Promise<void>;
  /**
   * Where configs are kept. Default: the task store when it is also a
   * {@link PushConfigStore} (the in-memory and PostgreSQL stores are).
   */
  readonly store?: PushConfigStore;
}

/** Options of {@link A2AServer}. */
export interface A2AServerOptions {
  readonly card: AgentCardOptions;
  /** This agent's own SPIFFE ID: on the card and passed to the enforcer as `callee`. */
  readonly selfId: SpiffeId;
  /** Decides every inbound call. Required: there is no default that allows. */
  readonly enforcer: PolicyEnforcer;
  /**
   * The authenticated caller of a request. Default: `request.peer`, set by
   * `@weave/transport`'s mTLS server. No caller means the call is denied.
   */
  readonly getCaller?: (request: FastifyRequest) => SpiffeId | undefined;
  readonly taskStore?: TaskStore;
  /**
   * Longest pause between retries of a task-store write that failed (the
   * database is away), in ms. Default 5000. The task goes on meanwhile.
   */
  readonly storeRetryMaxMs?: number;
  /** Events kept per task for `Last-Event-ID` replay. Default 1000. */
  readonly maxEventsPerTask?: number;
  readonly limits?: A2AServerLimits;
  /** Interval of SSE heartbeat comments in ms; 0 disables. Default 15 000. */
  readonly heartbeatMs?: number;
  readonly push?: A2APushOptions;
  /**
   * Signs the served card (A2A §8.4), e.g. an `AgentCardSigner` over the
   * agent's identity: JWS with the SVID key and its chain in `x5c`.
   */
  readonly cardSigner?: { sign(card: AgentCard): Promise<AgentCard> };
  /** The card returned by GetExtendedAgentCard (policy action `a2a:GetExtendedAgentCard`). */
  readonly extendedCard?: AgentCard | ((caller: SpiffeId) => AgentCard | Promise<AgentCard>);
  /** Path of the JSON-RPC endpoint below the mount prefix. Default `/`. */
  readonly rpcPath?: string;
  /**
   * Extensions declared on the card. A call that does not activate every
   * `required` one in its `A2A-Extensions` header fails with -32008.
   */
  readonly extensions?: Array<{ uri: string; description?: string; required?: boolean }>;
}

type Version = 'v1' | 'v03';
type RpcId = string | number | null;

interface Call {
  readonly request: FastifyRequest;
  readonly reply: FastifyReply;
  readonly id: RpcId;
  readonly version: Version;
  readonly caller: SpiffeId;
  readonly method: string;
}

/** A result the dispatcher writes as-is, or `STREAMED` when the call took over the reply. */
const STREAMED = Symbol('streamed');

const EXTENDED_CARD_ACTION = 'a2a:GetExtendedAgentCard';

/** URI of the agent-card extension that carries the agent's SPIFFE ID in `params.spiffeId`. */
export const SPIFFE_ID_EXTENSION = 'https://weave.dev/a2a/extensions/spiffe-id/v1';

/** The SPIFFE ID an agent card declares (Weave's {@link SPIFFE_ID_EXTENSION}), if any. */
export function agentSpiffeId(card: AgentCard): string | undefined {
  const ext = card.capabilities.extensions?.find((e) => e.uri === SPIFFE_ID_EXTENSION);
  const id = ext?.params?.spiffeId;
  return typeof id === 'string' ? id : undefined;
}

const NO_PARAMS: Record<string, unknown> = Object.freeze({}) as Record<string, unknown>;

/**
 * An A2A v1.0 server as a Fastify plugin: JSON-RPC at `rpcPath`, the agent
 * card at `/.well-known/agent-card.json` (and the old `agent.json`), SSE
 * streams with replay, and v0.3 compatibility.
 *
 * ```ts
 * const a2a = new A2AServer({ card, selfId, enforcer });
 * a2a.registerTaskHandler('echo', async (ctx) => ctx.message.parts[0]?.text ?? '');
 * await app.register(a2a.plugin);
 * ```
 */
export class A2AServer {
  /** Task state of this server; exposed for inspection and `waitForCompletion`. */
  readonly manager: TaskManager;
  /** Register this on any Fastify instance (with a prefix if wanted). */
  readonly plugin: FastifyPluginAsync;

  readonly #opts: A2AServerOptions;
  readonly #handlers = new Map<string, TaskHandler>();
  readonly #skills = new Map<string, AgentSkill>();
  readonly #getCaller: (request: FastifyRequest) => SpiffeId | undefined;
  readonly #maxBody: number;
  readonly #maxTasks: number;
  readonly #callerLimits: CallerLimits;
  readonly #maxSubs: number;
  readonly #inputTimeout: number;
  readonly #blockingTimeout: number;
  readonly #heartbeat: number;
  readonly #subscribers = new Map<string, number>();
  readonly #cardCache = new Map<string, string>();
  readonly #requiredExt: string[];
  readonly #pushStore: PushConfigStore | undefined;
  #log: FastifyInstance['log'] | undefined;

  constructor(options: A2AServerOptions) {
    if (!options.enforcer) throw new TypeError('A2AServer: enforcer is required');
    if (!(options.selfId instanceof SpiffeId)) throw new TypeError('A2AServer: selfId must be a SpiffeId');
    if (options.push?.enabled && typeof options.push.send !== 'function') {
      throw new TypeError(
        'A2AServer: push.enabled needs push.send (e.g. createWebhookSender({ dispatcher }))',
      );
    }
    this.#opts = options;
    this.manager = new TaskManager({
      store: options.taskStore,
      maxEventsPerTask: options.maxEventsPerTask,
      retryMaxMs: options.storeRetryMaxMs,
      onStoreError: (err, taskId) => this.#log?.error({ err, taskId }, 'a2a: task store write failed'),
    });
    const pushStore = options.push?.store ?? this.manager.store;
    if (options.push?.enabled && !isPushConfigStore(pushStore)) {
      throw new TypeError(
        'A2AServer: push.enabled needs push.store when the task store keeps no push configs',
      );
    }
    this.#pushStore = isPushConfigStore(pushStore) ? pushStore : undefined;
    this.#getCaller = options.getCaller ?? defaultGetCaller;
    this.#maxBody = options.limits?.maxBodyBytes ?? 1024 * 1024;
    this.#maxTasks = options.limits?.maxConcurrentTasks ?? 1000;
    this.#maxSubs = options.limits?.maxSubscribersPerTask ?? 32;
    this.#callerLimits = new CallerLimits(
      options.limits?.perCaller,
      Math.max(1, Math.floor(this.#maxTasks / 4)),
    );
    this.#inputTimeout = options.limits?.inputTimeoutMs ?? 600_000;
    this.#blockingTimeout = options.limits?.blockingTimeoutMs ?? 60_000;
    this.#heartbeat = options.heartbeatMs ?? 15_000;
    this.#requiredExt = (options.extensions ?? []).filter((e) => e.required === true).map((e) => e.uri);
    for (const s of options.card.skills ?? []) this.#skills.set(s.id, v1.AgentSkillSchema.parse(s));
    this.plugin = async (app) => this.#mount(app);
  }

  /**
   * Runs `handler` for tasks of `skill`. A skill given by id must be declared
   * in the card options; a full {@link AgentSkill} is added to the card.
   */
  registerTaskHandler(skill: AgentSkill | string, handler: TaskHandler): this {
    const def =
      typeof skill === 'string'
        ? (this.#skills.get(skill) ?? { id: skill, name: skill, description: '', tags: [] })
        : v1.AgentSkillSchema.parse(skill);
    this.#skills.set(def.id, def);
    this.#handlers.set(def.id, handler);
    this.#cardCache.clear();
    return this;
  }

  /** The agent card as served, for a given public JSON-RPC URL. */
  agentCard(url: string): AgentCard {
    const c = this.#opts.card;
    const card: AgentCard = {
      name: c.name,
      description: c.description,
      supportedInterfaces: [
        { url, protocolBinding: 'JSONRPC', protocolVersion: '1.0' },
        { url, protocolBinding: 'JSONRPC', protocolVersion: '0.3' },
      ],
      version: c.version,
      capabilities: {
        streaming: true,
        pushNotifications: this.#opts.push?.enabled === true,
        extendedAgentCard: this.#opts.extendedCard !== undefined,
        // The SPIFFE ID travels as a (non-required) extension: ProtoJSON
        // parsers of other SDKs may reject unknown top-level members.
        extensions: [
          {
            uri: SPIFFE_ID_EXTENSION,
            description: 'The SPIFFE ID in the X.509-SVID this agent presents over mTLS',
            required: false,
            params: { spiffeId: this.#opts.selfId.toString() },
          },
          ...(this.#opts.extensions ?? []),
        ],
      },
      securitySchemes: {
        mtls: {
          mtlsSecurityScheme: {
            description: `Mutual TLS with X.509-SVIDs; this agent is ${this.#opts.selfId.toString()}`,
          },
        },
      },
      securityRequirements: [{ schemes: { mtls: { list: [] } } }],
      defaultInputModes: c.defaultInputModes ?? ['text/plain', 'application/json'],
      defaultOutputModes: c.defaultOutputModes ?? ['text/plain', 'application/json'],
      skills: [...this.#skills.values()].filter((s) => this.#handlers.has(s.id)),
    };
    if (c.provider) card.provider = c.provider;
    if (c.documentationUrl) card.documentationUrl = c.documentationUrl;
    if (c.iconUrl) card.iconUrl = c.iconUrl;
    return card;
  }

  /** Cancels running tasks and flushes the store. */
  async close(): Promise<void> {
    await this.manager.close();
  }

  // ---- mounting --------------------------------------------------------------

  #mount(app: FastifyInstance): void {
    this.#log = app.log;
    const rpcPath = this.#opts.rpcPath ?? '/';
    app.removeAllContentTypeParsers();
    app.addContentTypeParser(
      'application/json',
      { parseAs: 'string', bodyLimit: this.#maxBody },
      (_req, body, done) => done(null, body),
    );
    // Anything else is read (within the limit) and answered with -32005.
    app.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit: this.#maxBody }, (_req, _body, done) =>
      done(null, WRONG_CONTENT_TYPE),
    );
    app.setErrorHandler((err: { code?: string; statusCode?: number }, request, reply) => {
      if (err.code === 'FST_ERR_CTP_BODY_TOO_LARGE') {
        return this.#sendError(reply, 413, null, A2AErrors.payloadTooLarge(this.#maxBody), 'v1');
      }
      if (err.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') {
        return this.#sendError(
          reply,
          400,
          null,
          A2AErrors.contentType(request.headers['content-type']),
          'v1',
        );
      }
      if (err.code === 'FST_ERR_CTP_EMPTY_JSON_BODY' || err.code === 'FST_ERR_CTP_INVALID_CONTENT_LENGTH') {
        return this.#sendError(reply, 200, null, A2AErrors.parse('empty body'), 'v1');
      }
      request.log.error({ err }, 'a2a: request failed');
      return this.#sendError(
        reply,
        err.statusCode && err.statusCode < 500 ? err.statusCode : 500,
        null,
        A2AErrors.internal(),
        'v1',
      );
    });

    const serveCard = async (request: FastifyRequest, reply: FastifyReply) => {
      const url =
        this.#opts.card.url ?? `${request.protocol}://${request.host}${joinPath(app.prefix, rpcPath)}`;
      let body = this.#cardCache.get(url);
      const signer = this.#opts.cardSigner;
      // The signer keeps its own cache, keyed by the SVID: a rotation re-signs.
      if (signer) body = JSON.stringify(await signer.sign(this.agentCard(url)));
      else if (body === undefined) {
        body = JSON.stringify(this.agentCard(url));
        if (this.#cardCache.size > 64) this.#cardCache.clear();
        this.#cardCache.set(url, body);
      }
      reply.header('content-type', 'application/json').header('cache-control', 'public, max-age=300');
      return reply.send(body);
    };
    app.get('/.well-known/agent-card.json', serveCard);
    app.get('/.well-known/agent.json', serveCard);
    app.post(rpcPath, (request, reply) => {
      // The reply is not handed back to fastify: a handler's promise that
      // settles with the (thenable) reply makes fastify wait for the response
      // to finish, with end-of-stream listeners on every request. #handleRpc
      // answers every call itself; anything it did not expect goes to the
      // error handler.
      this.#handleRpc(request, reply).catch((err: unknown) => {
        if (!reply.sent) reply.send(err as Error);
      });
    });
  }

  // ---- JSON-RPC ------------------------------------------------------------

  async #handleRpc(request: FastifyRequest, reply: FastifyReply): Promise<void> {
    const body = request.body;
    if (body === WRONG_CONTENT_TYPE || typeof body !== 'string') {
      return void this.#sendError(
        reply,
        400,
        null,
        A2AErrors.contentType(request.headers['content-type']),
        'v1',
      );
    }
    let msg: unknown;
    try {
      msg = JSON.parse(body);
    } catch (err) {
      return void this.#sendError(reply, 200, null, A2AErrors.parse((err as Error).message), 'v1');
    }
    if (typeof msg !== 'object' || msg === null) {
      return void this.#sendError(
        reply,
        200,
        null,
        A2AErrors.invalidRequest('the body must be a JSON-RPC request object'),
        'v1',
      );
    }
    if (Array.isArray(msg)) {
      return void this.#sendError(
        reply,
        200,
        null,
        A2AErrors.invalidRequest('batch requests are not supported'),
        'v1',
      );
    }
    const env = msg as { jsonrpc?: unknown; id?: unknown; method?: unknown; params?: unknown };
    const rawId = env.id;
    const idOk =
      rawId === undefined ||
      rawId === null ||
      typeof rawId === 'string' ||
      (typeof rawId === 'number' && Number.isFinite(rawId));
    const id: RpcId = idOk ? ((rawId as RpcId | undefined) ?? null) : null;
    if (!idOk) {
      return void this.#sendError(
        reply,
        200,
        null,
        A2AErrors.invalidRequest('id must be a string, a number or null'),
        'v1',
      );
    }
    if (env.jsonrpc !== '2.0') {
      return void this.#sendError(reply, 200, id, A2AErrors.invalidRequest('jsonrpc must be "2.0"'), 'v1');
    }
    if (typeof env.method !== 'string' || env.method.length === 0) {
      return void this.#sendError(
        reply,
        200,
        id,
        A2AErrors.invalidRequest('method must be a non-empty string'),
        'v1',
      );
    }
    const method = env.method;
    let version: Version;
    try {
      version = negotiate(request.headers['a2a-version'], method);
    } catch (err) {
      return void this.#sendError(reply, 200, id, err as A2AError, 'v1');
    }
    const params = env.params;
    if (params !== undefined && (typeof params !== 'object' || params === null || Array.isArray(params))) {
      return void this.#sendError(
        reply,
        200,
        id,
        A2AErrors.invalidParams('params must be an object'),
        version,
      );
    }
    if (this.#requiredExt.length > 0) {
      const missing = missingExtension(
        this.#requiredExt,
        request.headers['a2a-extensions'] ?? request.headers['x-a2a-extensions'],
      );
      if (missing !== undefined) {
        return void this.#sendError(reply, 200, id, A2AErrors.extensionRequired(missing), version);
      }
    }
    const caller = this.#getCaller(request);
    if (!(caller instanceof SpiffeId)) {
      request.log.warn({ method }, 'a2a: call without an authenticated caller denied');
      return void this.#sendError(
        reply,
        403,
        id,
        A2AErrors.permissionDenied('no authenticated caller'),
        version,
      );
    }
    const call: Call = { request, reply, id, version, caller, method };
    try {
      this.#callerLimits.admitRequest(caller);
      const result = await this.#dispatch(call, (params as Record<string, unknown> | undefined) ?? NO_PARAMS);
      if (result === STREAMED) return;
      reply.header('content-type', 'application/json');
      // Sent from the event loop's check phase, not from inside the read that
      // delivered the request. Measured with bench/ over TLS (Node 20): the
      // same one write per response then costs about half the CPU per call,
      // on the server and on the client alike.
      setImmediate(
        sendLater,
        reply,
        `{"jsonrpc":"2.0","id":${JSON.stringify(id)},"result":${JSON.stringify(result ?? null)}}`,
      );
    } catch (err) {
      const e = toA2AError(err, request);
      return void this.#sendError(reply, statusFor(e), id, e, version);
    }
  }

  #sendError(reply: FastifyReply, status: number, id: RpcId, err: A2AError, version: Version): FastifyReply {
    const e = err.toJsonRpc();
    const wire = version === 'v03' ? { code: e.code, message: e.message } : e;
    return reply
      .code(status)
      .header('content-type', 'application/json')
      .send(`{"jsonrpc":"2.0","id":${JSON.stringify(id)},"error":${JSON.stringify(wire)}}`);
  }

  #dispatch(call: Call, params: Record<string, unknown>): Promise<unknown> {
    if (call.version === 'v03') return this.#dispatchV03(call, params);
    switch (call.method) {
      case 'SendMessage':
        return this.#sendMessage(call, parse(v1.SendMessageParamsSchema, params)).then(
          (t) => ({ task: t }) as v1.SendMessageResult,
        );
      case 'SendStreamingMessage':
        return this.#sendStreamingMessage(call, parse(v1.SendMessageParamsSchema, params));
      case 'GetTask':
        return this.#getTask(call, parse(v1.GetTaskParamsSchema, params));
      case 'ListTasks':
        return this.#listTasks(call, parse(v1.ListTasksParamsSchema, params));
      case 'CancelTask':
        return this.#cancelTask(call, parse(v1.CancelTaskParamsSchema, params).id);
      case 'SubscribeToTask':
        return this.#subscribe(call, parse(v1.SubscribeToTaskParamsSchema, params).id);
      case 'CreateTaskPushNotificationConfig':
        return this.#pushCreate(call, () => parse(v1.TaskPushNotificationConfigSchema, params));
      case 'GetTaskPushNotificationConfig':
        return this.#pushGet(call, () => parse(v1.TaskPushConfigRefSchema, params));
      case 'ListTaskPushNotificationConfigs':
        return this.#pushList(call, () => parse(v1.ListTaskPushConfigsParamsSchema, params));
      case 'DeleteTaskPushNotificationConfig':
        return this.#pushDelete(call, () => parse(v1.TaskPushConfigRefSchema, params)).then(() => ({}));
      case 'GetExtendedAgentCard':
        return this.#extendedCard(call);
      default:
        return Promise.reject(A2AErrors.methodNotFound(call.method));
    }
  }

  async #dispatchV03(call: Call, params: Record<string, unknown>): Promise<unknown> {
    switch (call.method) {
      case 'message/send': {
        const p = v03.sendParamsToV1(parse(v03.V03SendParamsSchema, params));
        return v03.taskToV03(await this.#sendMessage(call, p));
      }
      case 'message/stream':
        return this.#sendStreamingMessage(call, v03.sendParamsToV1(parse(v03.V03SendParamsSchema, params)));
      case 'tasks/get': {
        const p = parse(v03.V03TaskQuerySchema, params);
        return v03.taskToV03(await this.#getTask(call, { id: p.id, historyLength: p.historyLength }));
      }
      case 'tasks/cancel':
        return v03.taskToV03(await this.#cancelTask(call, parse(v03.V03TaskIdSchema, params).id));
      case 'tasks/resubscribe':
        return this.#subscribe(call, parse(v03.V03TaskIdSchema, params).id);
      case 'tasks/pushNotificationConfig/set': {
        const c = await this.#pushCreate(call, () => {
          const p = parse(v03.V03SetPushConfigSchema, params);
          return { ...v03.pushConfigToV1(p.pushNotificationConfig, p.taskId), taskId: p.taskId };
        });
        return v03.pushConfigToV03(c);
      }
      case 'tasks/pushNotificationConfig/get': {
        const c = await this.#pushGet(call, () => {
          const p = parse(v03.V03GetPushConfigSchema, params);
          return { taskId: p.id, id: p.pushNotificationConfigId ?? '' };
        });
        return v03.pushConfigToV03(c);
      }
      case 'tasks/pushNotificationConfig/list': {
        const r = await this.#pushList(call, () => ({ taskId: parse(v03.V03TaskIdSchema, params).id }));
        return r.configs.map(v03.pushConfigToV03);
      }
      case 'tasks/pushNotificationConfig/delete':
        await this.#pushDelete(call, () => {
          const p = parse(v03.V03DeletePushConfigSchema, params);
          return { taskId: p.id, id: p.pushNotificationConfigId };
        });
        return null;
      case 'agent/getAuthenticatedExtendedCard':
        return this.#extendedCard(call);
      default:
        throw A2AErrors.methodNotFound(call.method);
    }
  }

  // ---- methods -----------------------------------------------------------------

  /** Starts or resumes a task and waits (unless `returnImmediately`) until it settles. */
  async #sendMessage(call: Call, p: v1.SendMessageParams): Promise<Task> {
    const record = await this.#startOrResume(call, p);
    if (p.configuration?.returnImmediately !== true) {
      try {
        await this.manager.waitForCompletion(record.task.id, { timeoutMs: this.#blockingTimeout });
      } catch (err) {
        // A blocking call does not wait forever: the task, still running, is
        // returned as it is, and the client can poll or subscribe.
        if (!(err instanceof WaitTimeoutError)) throw err;
      }
    }
    return snapshot(record.task, p.configuration?.historyLength);
  }

  async #sendStreamingMessage(call: Call, p: v1.SendMessageParams): Promise<typeof STREAMED> {
    // The stream attaches before the handler runs (or the reply is delivered),
    // so it misses nothing. A new task's stream replays from its first event;
    // a resumed one starts with the task as it is.
    const resumed = p.message.taskId !== undefined;
    await this.#startOrResume(call, p, (rec) => this.#openStream(call, rec, resumed ? rec.seq : 0, resumed));
    return STREAMED;
  }

  /**
   * Creates a task (or delivers a reply to one waiting for input) after the
   * policy check. `beforeRun` is called once the task exists and before any
   * handler code runs.
   */
  async #startOrResume(
    call: Call,
    p: v1.SendMessageParams,
    beforeRun?: (record: TaskRecord) => void,
  ): Promise<TaskRecord> {
    const taskId = p.message.taskId;
    const named = skillFromMetadata(p);
    if (p.message.role !== 'ROLE_USER') throw A2AErrors.invalidParams('message.role must be ROLE_USER');
    if (taskId !== undefined) {
      const record = await this.#ownedTask(call, taskId);
      if (named !== undefined && named !== record.skill) {
        throw A2AErrors.invalidParams(`task ${taskId} runs skill ${record.skill}, not ${named}`);
      }
      await this.#authorize(call, record.skill, taskId);
      if (isTerminal(record.task.status.state)) {
        throw A2AErrors.unsupportedOperation(
          `Task ${taskId} is in terminal state ${record.task.status.state}`,
        );
      }
      if (!this.manager.isAwaitingInput(taskId)) {
        throw A2AErrors.unsupportedOperation(`Task ${taskId} is not waiting for input`);
      }
      beforeRun?.(record);
      this.manager.deliverInput(taskId, p.message);
      return record;
    }
    const skill = this.#resolveSkill(named);
    const handler = this.#handlers.get(skill) as TaskHandler;
    await this.#authorize(call, skill);
    // The caller's own share first; the server-wide limit is the backstop.
    const release = this.#callerLimits.startTask(call.caller);
    let record: TaskRecord;
    try {
      if (this.manager.activeCount >= this.#maxTasks) throw A2AErrors.tooManyTasks(this.#maxTasks);
      record = await this.manager.create({
        owner: call.caller.toString(),
        skill,
        message: p.message,
        metadata: p.metadata,
      });
    } catch (err) {
      release();
      if (err instanceof TaskStoreFullError) throw A2AErrors.tooManyTasks(this.#maxTasks);
      throw err;
    }
    const push = p.configuration?.taskPushNotificationConfig;
    if (push) {
      try {
        // Given with the message, the webhook gets the task's events from the first one.
        await this.#addPushConfig(record, { ...push, taskId: record.task.id }, 0);
      } catch (err) {
        // The handler never runs for a task whose webhook could not be kept.
        release();
        this.manager.setStatus(
          record.task.id,
          'TASK_STATE_FAILED',
          agentMessage('Task failed: push config not stored'),
        );
        throw err;
      }
    }
    try {
      beforeRun?.(record);
    } finally {
      // The task exists now: its handler runs even if opening a stream failed.
      void this.#run(record, handler, p.message, call.caller, call.request.headers).finally(release);
    }
    return record;
  }

  #resolveSkill(named: string | undefined): string {
    if (named !== undefined) {
      if (!this.#handlers.has(named)) throw A2AErrors.invalidParams(`unknown skill ${JSON.stringify(named)}`);
      return named;
    }
    if (this.#handlers.size === 1) return this.#handlers.keys().next().value as string;
    throw A2AErrors.invalidParams(
      `this agent has ${this.#handlers.size} skills; name one in message.metadata.skill (one of ${[...this.#handlers.keys()].join(', ')})`,
    );
  }

  async #run(
    record: TaskRecord,
    handler: TaskHandler,
    message: Message,
    caller: SpiffeId,
    headers: TaskContext['headers'],
  ): Promise<void> {
    const id = record.task.id;
    const ctx = new TaskContextImpl(this.manager, record, message, caller, headers, this.#inputTimeout);
    try {
      this.manager.setStatus(id, 'TASK_STATE_WORKING');
      const result = await handler(ctx);
      if (!this.manager.isLive(id)) return;
      if (typeof result === 'string') {
        this.manager.addArtifact(id, { artifactId: randomUUID(), parts: [{ text: result }] });
      } else if (result && typeof result === 'object') {
        if ('role' in result && 'messageId' in result) {
          this.manager.setStatus(id, 'TASK_STATE_COMPLETED', v1.MessageSchema.parse(result));
          return;
        }
        const art = v1.ArtifactSchema.parse({ artifactId: randomUUID(), ...result });
        this.manager.addArtifact(id, art);
      }
      if (this.manager.isLive(id)) this.manager.setStatus(id, 'TASK_STATE_COMPLETED');
    } catch (err) {
      if (!this.manager.isLive(id)) return;
      this.#log?.warn({ err, taskId: id, skill: record.skill }, 'a2a: task handler failed');
      const text =
        err instanceof A2AError || (err as { code?: unknown })?.code !== undefined
          ? `Task failed: ${(err as Error).message}`
          : 'Task failed';
      this.manager.setStatus(id, 'TASK_STATE_FAILED', agentMessage(text));
    }
  }

  async #getTask(call: Call, p: { id: string; historyLength?: number }): Promise<Task> {
    const record = await this.#ownedTask(call, p.id);
    await this.#authorize(call, record.skill, p.id);
    return snapshot(record.task, p.historyLength);
  }

  async #listTasks(call: Call, p: v1.ListTasksParams): Promise<v1.ListTasksResult> {
    const pageSize = p.pageSize ?? 50;
    let after: { createdAt: number; id: string } | undefined;
    if (p.pageToken) after = decodePageToken(p.pageToken);
    const page = await this.manager.list({
      owner: call.caller.toString(),
      contextId: p.contextId,
      // ProtoJSON's zero value means "no filter".
      status: p.status === 'TASK_STATE_UNSPECIFIED' ? undefined : p.status,
      updatedAfter: p.statusTimestampAfter === undefined ? undefined : Date.parse(p.statusTimestampAfter),
      after,
      limit: pageSize + 1,
    });
    const more = page.records.length > pageSize;
    const records = more ? page.records.slice(0, pageSize) : page.records;
    const tasks = records.map((r) => {
      const t = snapshot(r.task, p.historyLength);
      if (p.includeArtifacts !== true) delete t.artifacts;
      return t;
    });
    const last = records[records.length - 1];
    return {
      tasks,
      nextPageToken: more && last ? encodePageToken(last) : '',
      pageSize,
      totalSize: page.total,
    };
  }

  async #cancelTask(call: Call, id: string): Promise<Task> {
    const record = await this.#ownedTask(call, id);
    await this.#authorize(call, record.skill, id);
    const state = record.task.status.state;
    if (isTerminal(state)) throw A2AErrors.taskNotCancelable(id, state);
    if (this.manager.cancel(id)) return snapshot(record.task);
    // Not running here (e.g. loaded from a durable store after a restart): log it.
    const after = await this.manager.cancelStored(id);
    if (!after) throw A2AErrors.taskNotFound(id);
    if (after.task.status.state !== 'TASK_STATE_CANCELED') {
      throw A2AErrors.taskNotCancelable(id, after.task.status.state);
    }
    return snapshot(after.task);
  }

  async #subscribe(call: Call, id: string): Promise<typeof STREAMED> {
    const record = await this.#ownedTask(call, id);
    await this.#authorize(call, record.skill, id);
    const lastEventId = parseLastEventId(call.request.headers['last-event-id']);
    if (!this.manager.isLive(id)) {
      // Finished: a reconnecting client still gets the events it missed, if kept.
      const missed = lastEventId === undefined ? undefined : await this.manager.eventsAfter(id, lastEventId);
      if (missed === undefined || missed.length === 0) {
        throw A2AErrors.unsupportedOperation(`Task ${id} is in terminal state ${record.task.status.state}`);
      }
      const sse = new SseWriter(
        call.request,
        call.reply,
        call.id,
        0,
        this.#opts.limits?.maxStreamBufferBytes,
      );
      for (const e of missed) sse.send(this.#wireEvent(call, e.event), e.seq);
      sse.close();
      return STREAMED;
    }
    this.#openStream(call, record, lastEventId, lastEventId === undefined, true);
    return STREAMED;
  }

  /**
   * Opens an SSE stream on a live task. With `afterSeq`, replays the kept
   * events after it first; `sendSnapshot` starts with the current Task.
   */
  #openStream(
    call: Call,
    record: TaskRecord,
    afterSeq: number | undefined,
    sendSnapshot: boolean,
    endIfSettled = false,
  ): void {
    const id = record.task.id;
    const n = this.#subscribers.get(id) ?? 0;
    if (n >= this.#maxSubs) {
      throw A2AErrors.unsupportedOperation(`Task ${id} already has ${n} subscribers`);
    }
    const sse = new SseWriter(
      call.request,
      call.reply,
      call.id,
      this.#heartbeat,
      this.#opts.limits?.maxStreamBufferBytes,
    );
    this.#subscribers.set(id, n + 1);
    const listener = (e: StoredEvent) => {
      sse.send(this.#wireEvent(call, e.event), e.seq);
      if (closesStream(e.event)) sse.close();
    };
    const sub = this.manager.subscribe(id, listener, afterSeq);
    sse.onClose(() => {
      sub?.unsubscribe();
      const left = (this.#subscribers.get(id) ?? 1) - 1;
      if (left <= 0) this.#subscribers.delete(id);
      else this.#subscribers.set(id, left);
    });
    if (!sub) {
      sse.close();
      return;
    }
    if (sendSnapshot || sub.backlog === undefined) {
      const t = snapshot(record.task);
      sse.send(this.#wireEvent(call, { task: t }), record.seq);
      // A subscription to a settled task (finished, or waiting for input) ends
      // here, as any stream does at such a state. A resumed task's stream
      // goes on: the reply that wakes it is delivered right after.
      if (isTerminal(t.status.state) || (endIfSettled && closesStream({ task: t }))) sse.close();
    } else {
      for (const e of sub.backlog) {
        sse.send(this.#wireEvent(call, e.event), e.seq);
        if (closesStream(e.event)) {
          sse.close();
          return;
        }
      }
    }
  }

  #wireEvent(call: Call, e: StreamResponse): unknown {
    return call.version === 'v03' ? v03.streamResponseToV03(e) : e;
  }

  // ---- push notification configs -------------------------------------------------

  #pushEnabled(): void {
    if (this.#opts.push?.enabled !== true) throw A2AErrors.pushNotSupported();
  }

  async #pushCreate(call: Call, read: () => TaskPushNotificationConfig): Promise<TaskPushNotificationConfig> {
    this.#pushEnabled();
    const p = read();
    const record = await this.#ownedTask(call, p.taskId);
    await this.#authorize(call, record.skill, p.taskId);
    return redact(await this.#addPushConfig(record, p));
  }

  async #addPushConfig(
    record: TaskRecord,
    c: TaskPushNotificationConfig,
    fromSeq?: number,
  ): Promise<TaskPushNotificationConfig> {
    const store = this.#pushStore as PushConfigStore;
    const stored: TaskPushNotificationConfig = { ...c, taskId: record.task.id, id: c.id || randomUUID() };
    const list = await store.listPushConfigs(record.task.id);
    if (!list.some((x) => x.id === stored.id) && list.length >= 16) {
      throw A2AErrors.invalidParams('at most 16 push configs per task');
    }
    await store.setPushConfig(stored);
    this.#watchPush(record, fromSeq);
    return stored;
  }

  async #pushGet(
    call: Call,
    read: () => { taskId: string; id: string },
  ): Promise<TaskPushNotificationConfig> {
    this.#pushEnabled();
    const p = read();
    const record = await this.#ownedTask(call, p.taskId);
    await this.#authorize(call, record.skill, p.taskId);
    const list = await (this.#pushStore as PushConfigStore).listPushConfigs(p.taskId);
    const found = p.id === '' ? list[0] : list.find((c) => c.id === p.id);
    if (!found) throw A2AErrors.invalidParams(`no push config ${JSON.stringify(p.id)} on task ${p.taskId}`);
    return redact(found);
  }

  async #pushList(
    call: Call,
    read: () => { taskId: string },
  ): Promise<{ configs: TaskPushNotificationConfig[]; nextPageToken: string }> {
    this.#pushEnabled();
    const p = read();
    const record = await this.#ownedTask(call, p.taskId);
    await this.#authorize(call, record.skill, p.taskId);
    const list = await (this.#pushStore as PushConfigStore).listPushConfigs(p.taskId);
    return { configs: list.map(redact), nextPageToken: '' };
  }

  async #pushDelete(call: Call, read: () => { taskId: string; id: string }): Promise<void> {
    this.#pushEnabled();
    const p = read();
    const record = await this.#ownedTask(call, p.taskId);
    await this.#authorize(call, record.skill, p.taskId);
    if (!(await (this.#pushStore as PushConfigStore).deletePushConfig(p.taskId, p.id))) {
      throw A2AErrors.invalidParams(`no push config ${JSON.stringify(p.id)} on task ${p.taskId}`);
    }
  }

  readonly #pushWatched = new Set<string>();

  #watchPush(record: TaskRecord, afterSeq?: number): void {
    const send = this.#opts.push?.send;
    const store = this.#pushStore;
    const id = record.task.id;
    if (!send || !store || this.#pushWatched.has(id)) return;
    // One delivery at a time per task, so each webhook sees the events in
    // order; the configs are read per event, so one added or removed (on any
    // replica sharing the store) takes effect from the next event.
    let chain = Promise.resolve();
    const deliver = (e: StoredEvent, rec: TaskRecord) => {
      chain = chain
        .then(() => store.listPushConfigs(id))
        .then((configs) =>
          Promise.all(
            configs.map((c) =>
              send(c, e.event).catch((err: unknown) =>
                this.#log?.warn({ err, taskId: id, configId: c.id }, 'a2a: push notification failed'),
              ),
            ),
          ),
        )
        .then(
          () => undefined,
          (err: unknown) => this.#log?.warn({ err, taskId: id }, 'a2a: push configs could not be read'),
        );
      if (isTerminal(rec.task.status.state)) this.#pushWatched.delete(id);
    };
    const sub = this.manager.subscribe(id, deliver, afterSeq);
    if (!sub) return;
    this.#pushWatched.add(id);
    for (const e of sub.backlog ?? []) deliver(e, sub.record);
  }

  // ---- extended card ---------------------------------------------------------------

  async #extendedCard(call: Call): Promise<unknown> {
    const ext = this.#opts.extendedCard;
    if (ext === undefined) throw A2AErrors.extendedCardNotConfigured();
    await this.#authorize(call, EXTENDED_CARD_ACTION);
    const card = typeof ext === 'function' ? await ext(call.caller) : ext;
    // What the application builds is checked like anything else that leaves the server.
    const parsed = v1.AgentCardSchema.safeParse(card);
    if (!parsed.success) {
      call.request.log.error({ issues: parsed.error.issues }, 'a2a: extendedCard is not a valid agent card');
      throw A2AErrors.internal();
    }
    return parsed.data;
  }

  // ---- authorization ---------------------------------------------------------------

  /** The caller's own task, or TaskNotFound (another caller's task is indistinguishable from none). */
  async #ownedTask(call: Call, id: string): Promise<TaskRecord> {
    const record = await this.manager.get(id);
    if (!record || record.owner !== call.caller.toString()) throw A2AErrors.taskNotFound(id);
    return record;
  }

  async #authorize(call: Call, action: string, taskId?: string): Promise<void> {
    let decision: AuthzDecision;
    try {
      decision = await this.#opts.enforcer.checkInbound({
        caller: call.caller,
        callee: this.#opts.selfId,
        action,
        context: taskId === undefined ? { method: call.method } : { method: call.method, taskId },
      });
    } catch (err) {
      // Enforcers must fail closed; one that throws is treated as a deny.
      decision = { allowed: false, reason: `enforcer error: ${(err as Error)?.message}`, auditId: '' };
    }
    if (decision.allowed !== true) {
      call.request.log.warn(
        { auditId: decision.auditId, caller: call.caller.toString(), action, reason: decision.reason },
        'a2a: call denied by policy',
      );
      throw A2AErrors.permissionDenied(
        `${call.caller.toString()} may not invoke ${action}`,
        decision.auditId || undefined,
      );
    }
  }
}

// ---- the handler context ---------------------------------------------------------

class TaskContextImpl implements TaskContext {
  readonly taskId: string;
  readonly contextId: string;
  readonly skill: string;
  readonly #m: TaskManager;
  readonly #record: TaskRecord;
  readonly #timeout: number;

  constructor(
    manager: TaskManager,
    record: TaskRecord,
    readonly message: Message,
    readonly caller: SpiffeId,
    readonly headers: TaskContext['headers'],
    inputTimeoutMs: number,
  ) {
    this.#m = manager;
    this.#record = record;
    this.taskId = record.task.id;
    this.contextId = record.task.contextId;
    this.skill = record.skill;
    this.#timeout = inputTimeoutMs;
  }

  get task(): Task {
    return snapshot(this.#record.task);
  }

  get signal(): AbortSignal {
    // A finished task's handler sees an aborted signal.
    return this.#m.signalOf(this.taskId) ?? AbortSignal.abort();
  }

  publishStatus(state: TaskState, message?: Message | string): void {
    this.#m.setStatus(this.taskId, state, toAgentMessage(message));
  }

  publishArtifact(artifact: ArtifactInput, options?: { append?: boolean; lastChunk?: boolean }): void {
    const a = v1.ArtifactSchema.parse({ artifactId: randomUUID(), ...artifact });
    this.#m.addArtifact(this.taskId, a, options);
  }

  publishMessage(message: Message | string): void {
    this.#m.setStatus(this.taskId, 'TASK_STATE_WORKING', toAgentMessage(message));
  }

  requestInput(prompt: Message | string): Promise<Message> {
    if (!this.#m.isLive(this.taskId)) {
      return Promise.reject(A2AErrors.unsupportedOperation(`Task ${this.taskId} is no longer running`));
    }
    const reply = this.#m.awaitInput(this.taskId);
    this.#m.setStatus(this.taskId, 'TASK_STATE_INPUT_REQUIRED', toAgentMessage(prompt));
    const timer = setTimeout(() => {
      this.#m.failInput(this.taskId, 'Timed out waiting for input');
    }, this.#timeout);
    timer.unref();
    return reply.finally(() => clearTimeout(timer));
  }
}

// ---- helpers --------------------------------------------------------------------

const WRONG_CONTENT_TYPE = Symbol('wrong-content-type');

function sendLater(reply: FastifyReply, body: string): void {
  if (!reply.sent) reply.send(body);
}

function defaultGetCaller(request: FastifyRequest): SpiffeId | undefined {
  const peer = (request as { peer?: unknown }).peer;
  if (peer instanceof SpiffeId) return peer;
  return undefined;
}

function parse<S extends z.ZodType>(schema: S, params: unknown): z.infer<S> {
  const r = schema.safeParse(params);
  if (r.success) return r.data;
  const issue = r.error.issues[0];
  const where = issue && issue.path.length > 0 ? `${issue.path.join('.')}: ` : '';
  throw A2AErrors.invalidParams(`${where}${issue?.message ?? 'invalid'}`);
}

function negotiate(header: string | string[] | undefined, method: string): Version {
  const h = Array.isArray(header) ? header[0] : header;
  if (h === undefined || h.trim() === '') {
    // The spec reads a missing header as 0.3; a v1.0 method name without the
    // header is still understood as v1.0 rather than rejected.
    return method in v03.V03_TO_V1_METHOD ? 'v03' : 'v1';
  }
  const m = /^\s*(\d+)(?:\.(\d+))?(?:\.\d+)?\s*$/.exec(h);
  if (m) {
    const major = Number(m[1]);
    const minor = Number(m[2] ?? '0');
    if (major === 1 && minor === 0) return 'v1';
    if (major === 0 && minor === 3) return 'v03';
  }
  throw A2AErrors.versionNotSupported(h.slice(0, 32));
}

function skillFromMetadata(p: v1.SendMessageParams): string | undefined {
  const s = p.message.metadata?.skill ?? p.metadata?.skill;
  if (s === undefined) return undefined;
  if (typeof s !== 'string' || s.length === 0)
    throw A2AErrors.invalidParams('metadata.skill must be a non-empty string');
  return s;
}

function missingExtension(
  required: readonly string[],
  header: string | string[] | undefined,
): string | undefined {
  const given = new Set(
    (Array.isArray(header) ? header.join(',') : (header ?? ''))
      .split(',')
      .map((x) => x.trim())
      .filter((x) => x.length > 0),
  );
  return required.find((uri) => !given.has(uri));
}

function closesStream(e: StreamResponse): boolean {
  if ('statusUpdate' in e) {
    const s = e.statusUpdate.status.state;
    return isTerminal(s) || INTERRUPTED_STATES.has(s);
  }
  if ('task' in e) {
    const s = e.task.status.state;
    return isTerminal(s) || INTERRUPTED_STATES.has(s);
  }
  return 'message' in e;
}

function agentMessage(text: string): Message {
  return { messageId: randomUUID(), role: 'ROLE_AGENT', parts: [{ text }] };
}

function toAgentMessage(m: Message | string | undefined): Message | undefined {
  if (m === undefined) return undefined;
  if (typeof m === 'string') return agentMessage(m);
  return v1.MessageSchema.parse(m);
}

function redact(c: TaskPushNotificationConfig): TaskPushNotificationConfig {
  // Webhook secrets are write-only: never echoed back.
  const { token: _token, authentication, ...rest } = c;
  return authentication ? { ...rest, authentication: { scheme: authentication.scheme } } : rest;
}

function encodePageToken(r: TaskRecord): string {
  return Buffer.from(JSON.stringify([r.createdAt, r.task.id])).toString('base64url');
}

function decodePageToken(token: string): { createdAt: number; id: string } {
  try {
    const v: unknown = JSON.parse(Buffer.from(token, 'base64url').toString('utf8'));
    if (Array.isArray(v) && typeof v[0] === 'number' && typeof v[1] === 'string') {
      return { createdAt: v[0], id: v[1] };
    }
  } catch {
    // fall through
  }
  throw A2AErrors.invalidParams('pageToken is not a token this server issued');
}

function parseLastEventId(h: string | string[] | undefined): number | undefined {
  const v = Array.isArray(h) ? h[0] : h;
  if (v === undefined || !/^\d{1,15}$/.test(v.trim())) return undefined;
  return Number(v.trim());
}

function joinPath(prefix: string, path: string): string {
  return `${prefix}${path === '/' ? '' : path}` || '/';
}

function statusFor(err: unknown): number {
  if (err instanceof A2AError) {
    if (err.code === 'PERMISSION_DENIED') return 403;
    if (err.code === 'RESOURCE_EXHAUSTED' || err.code === 'UNAVAILABLE') return 503;
    if (err.jsonRpcCode === A2AErrorCode.InternalError) return 500;
    return 200;
  }
  return 500;
}

function toA2AError(err: unknown, request: FastifyRequest): A2AError {
  if (err instanceof A2AError) return err;
  if (err instanceof TaskStoreUnavailableError) {
    // Retryable, and nothing was acknowledged: the caller may send again.
    request.log.warn({ err }, 'a2a: task store unavailable');
    return A2AErrors.unavailable('the task store cannot be reached');
  }
  request.log.error({ err }, 'a2a: internal error');
  return A2AErrors.internal();
}
