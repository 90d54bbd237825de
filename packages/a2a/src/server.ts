import type { FastifyInstance, FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
// For its augmentation of FastifyInstance (answerFrameworkErrors); nothing is loaded at run time.
import type {} from '@weave/transport/server';
import type { SpiffeId } from '@weave/identity';
import type { PolicyEnforcer } from '@weave/authz';
import { A2AErrors } from './errors.js';
import { A2AConfigError, timerMsOr0 } from './options.js';
import type { TaskManager } from './manager.js';
import type { TaskStore } from './store.js';
import {
  A2ARequestHandler,
  HandlerNumbers,
  checkHandlerOptions,
  type A2APushOptions,
  type A2AServerLimits,
  type BindingName,
  type MessageHandler,
  type RequestErrorHook,
  type SkillRouting,
  type TaskHandler,
  type TaskHandlerOptions,
} from './handler.js';
import {
  JsonBody,
  WRONG_CONTENT_TYPE,
  peerOf,
  readBody,
  sourceOf,
  type HttpBindingDeps,
} from './bindings/http.js';
import { agentCardToV03 } from './wire/v03.js';
import { A2A_JSON_MEDIA_TYPE } from './transports/http.js';
import { sendError, serveJsonRpc } from './bindings/jsonrpc.js';
import {
  CARD_MAX_AGE_S,
  cardEtag,
  notModified,
  sendRestError,
  serveRest,
  type CardValidators,
} from './bindings/rest.js';
import { AgentSkillSchema, type AgentCard, type AgentInterface, type AgentSkill } from './wire/v1.js';
import { urlHost } from '@weave/transport';

export type { BindingName, TaskHandler, TaskHandlerOptions } from './handler.js';

/** The agent card fields the server does not derive by itself. */
export interface AgentCardOptions {
  readonly name: string;
  /**
   * What the agent does. The card's `description` is REQUIRED, so set (§5.7):
   * an empty one is published as {@link AgentCardOptions.name}.
   */
  readonly description: string;
  readonly version: string;
  /**
   * Public URL of the JSON-RPC endpoint ({@link A2AServer.advertiseUrl} sets
   * one known only once listening). Default: derived per request with the
   * mount point. A signed card (`cardSigner`) lists the local address the
   * request reached (`https://127.0.0.1:8443`, `https://[::1]:8443`), which
   * the caller cannot choose but may not be reachable by others (a wildcard
   * bind in a container): set a URL. An unsigned card follows the request's
   * Host header, which the caller chooses, as the name it used to reach the
   * server (a DNS name, a proxy): nothing vouches for that card.
   */
  readonly url?: string;
  readonly provider?: { url: string; organization: string };
  readonly documentationUrl?: string;
  readonly iconUrl?: string;
  readonly defaultInputModes?: string[];
  readonly defaultOutputModes?: string[];
  /** Skills declared up front; {@link A2AServer.registerTaskHandler} adds more. */
  readonly skills?: AgentSkill[];
  /**
   * When the card is served in v0.3 shape (see {@link V03CardCompat}).
   * Default `'on-request'`.
   */
  readonly v03Compat?: V03CardCompat;
}

/**
 * When the agent card is served in v0.3 shape (`url`, `preferredTransport`,
 * `protocolVersion: "0.3.0"`, `type`-tagged security schemes, the v1.0
 * `supportedInterfaces` kept) instead of the v1.0 card. One card cannot be
 * both: the spec's JSON schema for the v1.0 AgentCard (and strict ProtoJSON
 * parsers) refuse the v0.3 members.
 * - `'on-request'` (default): the v1.0 card, unless the request asks for
 *   v0.3 with `A2A-Version: 0.3` or the query `?a2a-version=0.3` (a card URL
 *   a v0.3 client can be given).
 * - `'headerless'`: also to a request without `A2A-Version` (the spec reads
 *   a missing header as 0.3), for fleets of v0.3 clients that cannot be given
 *   a card URL. A v1.0 client must then send `A2A-Version: 1.0` (the official
 *   SDKs and Weave do; a generic client that does not gets the v0.3 card).
 * - `'off'`: the v1.0 card to every request.
 * The v0.3 JSON-RPC method names are accepted in every mode.
 */
export type V03CardCompat = 'on-request' | 'headerless' | 'off';

/** The numbers of {@link A2AServerOptions}: the handler's and the heartbeat. */
const ServerNumbers = HandlerNumbers.extend({ heartbeatMs: timerMsOr0('off').optional() });

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
  /**
   * Interval of SSE heartbeat comments in ms; 0 disables. Default 15 000.
   * Over HTTP/2 each heartbeat also pings the client's connection (one PING
   * at a time per connection), and a PING unanswered for one interval ends
   * the stream: a hung client's subscriber is let go.
   */
  readonly heartbeatMs?: number;
  readonly push?: A2APushOptions;
  /**
   * Signs the served card (A2A §8.4), e.g. an `AgentCardSigner` over the
   * agent's identity: JWS with the SVID key and its chain in `x5c`.
   */
  readonly cardSigner?: { sign(card: AgentCard): Promise<AgentCard> };
  /**
   * The card returned by GetExtendedAgentCard (policy action
   * `a2a:GetExtendedAgentCard`, checked before the function runs). Set, the
   * public card declares `capabilities.extendedAgentCard`; a function that
   * returns `undefined` has no card configured (-32007). Unset, the method
   * is UnsupportedOperation (-32004).
   */
  readonly extendedCard?:
    AgentCard | ((caller: SpiffeId) => AgentCard | undefined | Promise<AgentCard | undefined>);
  /** Path of the JSON-RPC endpoint below the mount prefix. Default `/`. */
  readonly rpcPath?: string;
  /**
   * Base path of the HTTP+JSON routes below the mount prefix (`/message:send`,
   * `/tasks/...` hang below it). Default `/`: the same URL as JSON-RPC, which
   * tells the two apart by path.
   */
  readonly restPath?: string;
  /**
   * The bindings served, in the order the card lists them (first =
   * preferred). Default `['JSONRPC', 'HTTP+JSON', 'GRPC']`. `GRPC` is listed
   * once a gRPC listener is advertised ({@link A2AServer.advertiseGrpc});
   * the gRPC server itself is `A2AGrpcServer` on its own port.
   */
  readonly bindings?: readonly BindingName[];
  /**
   * Extensions declared on the card. A call that does not activate every
   * `required` one in its `A2A-Extensions` header fails with -32008.
   */
  readonly extensions?: Array<{ uri: string; description?: string; required?: boolean }>;
  /** How a message that names no skill is routed (see {@link SkillRouting}). */
  readonly routing?: SkillRouting;
  /**
   * Called once for each request answered with an A2A error (a JSON-RPC
   * error, an HTTP+JSON error status, a gRPC error status from an
   * `A2AGrpcServer` serving {@link A2AServer.handler}, a stream ending with
   * an error event), including requests refused before any task exists, with
   * the error and the method and binding; never for a successful call. For
   * counting refusals by `err.code`. It runs as the reply is sent, so it must
   * be quick; one that throws is logged and changes nothing. Unset, nothing
   * is done.
   */
  readonly onRequestError?: RequestErrorHook;
}

/** URI of the agent-card extension that carries the agent's SPIFFE ID in `params.spiffeId`. */
export const SPIFFE_ID_EXTENSION = 'https://weave.dev/a2a/extensions/spiffe-id/v1';

/** The SPIFFE ID an agent card declares (Weave's {@link SPIFFE_ID_EXTENSION}), if any. */
export function agentSpiffeId(card: AgentCard): string | undefined {
  const ext = card.capabilities.extensions?.find((e) => e.uri === SPIFFE_ID_EXTENSION);
  const id = ext?.params?.spiffeId;
  return typeof id === 'string' ? id : undefined;
}

const DEFAULT_BINDINGS: readonly BindingName[] = ['JSONRPC', 'HTTP+JSON', 'GRPC'];

/** A URL {@link A2AServer.advertiseUrl} takes: where callers reach the JSON-RPC endpoint. */
const AdvertisedUrlSchema = z.url({ protocol: /^https?$/, error: 'must be an http:// or https:// URL' });

/**
 * An A2A v1.0 server as a Fastify plugin: the JSON-RPC binding at `rpcPath`,
 * the HTTP+JSON binding below `restPath`, the agent card at
 * `/.well-known/agent-card.json` (and the old `agent.json`), SSE streams with
 * replay, and v0.3 compatibility. Both bindings, and a gRPC binding
 * (`A2AGrpcServer`) given {@link handler}, serve one {@link A2ARequestHandler}.
 *
 * ```ts
 * const a2a = new A2AServer({ card, selfId, enforcer });
 * a2a.registerTaskHandler('echo', async (ctx) => ctx.message.parts[0]?.text ?? '');
 * await app.register(a2a.plugin);
 * ```
 */
export class A2AServer {
  /** The binding-agnostic request handler every binding serves. */
  readonly handler: A2ARequestHandler;
  /** Register this on any Fastify instance (with a prefix if wanted). */
  readonly plugin: FastifyPluginAsync;

  readonly #opts: A2AServerOptions;
  readonly #bindings: readonly BindingName[];
  readonly #maxBody: number;
  readonly #deps: HttpBindingDeps;
  readonly #cardCache = new Map<string, string>();
  /** ETag and Last-Modified of each card variant (A2A version × URL), kept across cache clears. */
  readonly #cardValidatorsByKey = new Map<string, Required<CardValidators>>();
  #grpcUrl: string | undefined;
  /** Set by {@link advertiseUrl}; before `card.url`. */
  #url: string | undefined;

  /** @throws {A2AConfigError} when no enforcer or selfId, push without a sender, bad bindings, or a number out of range; nothing is started. */
  constructor(options: A2AServerOptions) {
    // Under this class's name: the handler made below would check the same.
    checkHandlerOptions('A2AServer', options, ServerNumbers);
    const bindings = options.bindings ?? DEFAULT_BINDINGS;
    if (bindings.length === 0 || new Set(bindings).size !== bindings.length) {
      throw new A2AConfigError('A2AServer', [
        'bindings must name each binding at most once, and at least one',
      ]);
    }
    // Checked before the handler (and its task manager's timers) exists.
    const skills = (options.card.skills ?? []).map((s, i) => {
      const parsed = AgentSkillSchema.safeParse(s);
      if (parsed.success) return parsed.data;
      throw new A2AConfigError(
        'A2AServer',
        parsed.error.issues.map((iss) => `card.skills.${[i, ...iss.path].join('.')}: ${iss.message}`),
      );
    });
    this.#opts = options;
    this.#bindings = bindings;
    this.handler = new A2ARequestHandler(options);
    this.handler.onSkillsChanged(() => this.#cardCache.clear());
    for (const s of skills) this.handler.declareSkill(s);
    this.#maxBody = this.handler.maxBodyBytes;
    this.#deps = {
      handler: this.handler,
      getCaller: options.getCaller ?? peerOf,
      heartbeatMs: options.heartbeatMs ?? 15_000,
      maxStreamBufferBytes: options.limits?.maxStreamBufferBytes,
    };
    this.plugin = async (app) => this.#mount(app);
  }

  /** Task state of this server; exposed for inspection and `waitForCompletion`. */
  get manager(): TaskManager {
    return this.handler.manager;
  }

  /**
   * Runs `handler` for tasks of `skill`. A skill given by id must be declared
   * in the card options; a full {@link AgentSkill} is added to the card, or,
   * with `extended: true`, only to {@link extendedAgentCard} (the policy, not
   * the card, decides who may call it).
   */
  registerTaskHandler(skill: AgentSkill | string, handler: TaskHandler, options?: TaskHandlerOptions): this {
    this.handler.registerTaskHandler(skill, handler, options);
    return this;
  }

  /** Answers messages for `skill` with a message and no task (see {@link MessageHandler}). */
  registerMessageHandler(skill: AgentSkill | string, handler: MessageHandler): this {
    this.handler.registerMessageHandler(skill, handler);
    return this;
  }

  /**
   * Lists a gRPC listener (`host:port`, e.g. `A2AGrpcServer.url`) on the card,
   * at the place `bindings` gives GRPC. Ignored when `bindings` leaves GRPC out.
   */
  advertiseGrpc(url: string): void {
    this.#grpcUrl = url;
    this.#cardCache.clear();
  }

  /**
   * Sets the public URL of the JSON-RPC endpoint the served card lists (in
   * place of `card.url`), for a URL known only once listening (a port 0).
   * Without it and without `card.url`, the URL is derived per request (see
   * {@link AgentCardOptions.url}): a signed card lists the local address the
   * request reached, which peers elsewhere may not reach; an unsigned one the
   * request's Host header. An `extendedCard` should be built for the same URL
   * ({@link extendedAgentCard}).
   *
   * @throws {A2AConfigError} when `url` is not an http:// or https:// URL.
   */
  advertiseUrl(url: string): void {
    const parsed = AdvertisedUrlSchema.safeParse(url);
    if (!parsed.success) {
      throw new A2AConfigError('A2AServer', [
        `advertiseUrl ${JSON.stringify(url)}: ${parsed.error.issues[0]?.message ?? 'invalid'}`,
      ]);
    }
    this.#url = url;
    this.#cardCache.clear();
  }

  /** The bindings enabled, in card order. */
  get bindings(): readonly BindingName[] {
    return this.#bindings;
  }

  /**
   * The agent card as served, for a given public base URL (the JSON-RPC
   * endpoint; HTTP+JSON hangs below `restPath` of the same origin).
   */
  agentCard(url: string): AgentCard {
    return this.#card(url, 'public');
  }

  /**
   * The public card with every served skill, the extended-only ones
   * included: what an `extendedCard` function may return (or build on).
   */
  extendedAgentCard(url: string): AgentCard {
    return this.#card(url, 'extended');
  }

  #card(url: string, which: 'public' | 'extended'): AgentCard {
    const c = this.#opts.card;
    const card: AgentCard = {
      name: c.name,
      // §5.7: a REQUIRED field is set, and an empty string is a proto3 string's unset value.
      description: c.description === '' ? c.name : c.description,
      supportedInterfaces: this.#interfaces(url),
      version: c.version,
      capabilities: {
        streaming: true,
        pushNotifications: this.handler.pushEnabled,
        extendedAgentCard: this.handler.hasExtendedCard,
        // The SPIFFE ID travels as a (non-required) extension: ProtoJSON
        // parsers of other SDKs may reject unknown top-level members.
        extensions: [
          {
            uri: SPIFFE_ID_EXTENSION,
            description: 'The SPIFFE ID in the X.509-SVID this agent presents over mTLS',
            required: false,
            params: { spiffeId: this.#opts.selfId.toString() },
          },
          ...this.handler.extensions,
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
      skills: this.handler.servedSkills(which).map(publishedSkill),
    };
    if (c.provider) card.provider = c.provider;
    if (c.documentationUrl) card.documentationUrl = c.documentationUrl;
    if (c.iconUrl) card.iconUrl = c.iconUrl;
    return card;
  }

  #interfaces(rpcUrl: string): AgentInterface[] {
    const out: AgentInterface[] = [];
    for (const b of this.#bindings) {
      if (b === 'JSONRPC') {
        out.push({ url: rpcUrl, protocolBinding: 'JSONRPC', protocolVersion: '1.0' });
        out.push({ url: rpcUrl, protocolBinding: 'JSONRPC', protocolVersion: '0.3' });
      } else if (b === 'HTTP+JSON') {
        out.push({
          url: siblingUrl(rpcUrl, this.#opts.rpcPath, this.#opts.restPath),
          protocolBinding: 'HTTP+JSON',
          protocolVersion: '1.0',
        });
      } else if (this.#grpcUrl !== undefined) {
        out.push({ url: this.#grpcUrl, protocolBinding: 'GRPC', protocolVersion: '1.0' });
      }
    }
    return out;
  }

  /**
   * From now on, messages that would start a new task are refused (503 /
   * UNAVAILABLE, retryable) on every binding; everything else goes on.
   */
  drain(): void {
    this.handler.drain();
  }

  /**
   * Cancels running tasks and flushes the store. With a task store that
   * keeps leases (PostgreSQL), a running task of a re-runnable skill is not
   * canceled but handed to another replica: its handler's signal aborts
   * with `TaskHandedOverError`, what it published is written, nothing ends
   * it, and the lease handed back lets another replica claim it at once and
   * run it again (see {@link A2ARequestHandler.handOverTasks}). From the
   * moment it is called, messages that would start work (new tasks, streaming or not,
   * and replies to tasks waiting for input) are refused on every binding as
   * {@link drain} refuses new tasks (503 / UNAVAILABLE, retryable): nothing
   * starts after it, to run on once it resolved. Reads and cancels go on.
   */
  async close(): Promise<void> {
    await this.handler.close();
  }

  /**
   * The validators of a card body: a strong ETag of its bytes, and when that
   * variant last changed (the first time this body was served), to the second.
   */
  #cardValidators(key: string, body: string): Required<CardValidators> {
    const etag = cardEtag(body);
    const known = this.#cardValidatorsByKey.get(key);
    if (known?.etag === etag) return known;
    const v = { etag, lastModified: new Date(Math.floor(Date.now() / 1000) * 1000).toUTCString() };
    if (this.#cardValidatorsByKey.size > 64) this.#cardValidatorsByKey.clear();
    this.#cardValidatorsByKey.set(key, v);
    return v;
  }

  // ---- mounting --------------------------------------------------------------

  #mount(app: FastifyInstance): void {
    this.handler.setLogger(app.log);
    const rpcPath = this.#opts.rpcPath ?? '/';
    const restPath = normalizeBase(this.#opts.restPath ?? '/');
    const jsonrpc = this.#bindings.includes('JSONRPC');
    const rest = this.#bindings.includes('HTTP+JSON');
    const rpcRoute = joinPath(app.prefix, rpcPath);
    const restBase = `${app.prefix}${restPath}`;
    /**
     * Whether an error is answered as HTTP+JSON (a §11.6 body) or as JSON-RPC.
     * A routed request by its route; one no route took (none matches, or
     * fastify could not decode its URL) by its path: HTTP+JSON where its
     * routes are (as a GET there would be answered), JSON-RPC elsewhere.
     */
    const isRest = (request: FastifyRequest): boolean => {
      if (!rest) return false;
      if (request.routeOptions.url !== undefined) {
        return request.routeOptions.url === `${app.prefix}${restPath}/*`;
      }
      const path = pathOf(request.url);
      return !jsonrpc || restBase === '' || path === restBase || path.startsWith(`${restBase}/`);
    };
    app.removeAllContentTypeParsers();
    app.addContentTypeParser(['application/json', A2A_JSON_MEDIA_TYPE], (request, payload, done) =>
      readBody(payload, request.headers, this.#maxBody, (err, body) =>
        err ? done(err, undefined) : done(null, JsonBody.parse(body!)),
      ),
    );
    // Anything else is read (within the limit) and answered with -32005.
    app.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit: this.#maxBody }, (_req, _body, done) =>
      done(null, WRONG_CONTENT_TYPE),
    );
    // Fastify's own errors (body, content type, URL) in the binding's error
    // format, like every other error of these routes; below 500 unless the
    // server itself failed.
    const answerError = (
      err: { code?: string; statusCode?: number; message?: string },
      request: FastifyRequest,
      reply: FastifyReply,
    ) => {
      let e;
      let status: number;
      if (err.code === 'FST_ERR_CTP_BODY_TOO_LARGE') {
        e = A2AErrors.payloadTooLarge(this.#maxBody);
        status = 413;
      } else if (err.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') {
        e = A2AErrors.contentType(request.headers['content-type']);
        status = 400;
      } else if (
        err.code === 'FST_ERR_CTP_EMPTY_JSON_BODY' ||
        err.code === 'FST_ERR_CTP_INVALID_CONTENT_LENGTH'
      ) {
        e = A2AErrors.parse('empty body');
        status = 200;
      } else if (err.code === 'FST_ERR_BAD_URL') {
        e = A2AErrors.invalidRequest('malformed URL');
        status = 400;
      } else if (err.statusCode !== undefined && err.statusCode >= 400 && err.statusCode < 500) {
        // Another refusal of the request by fastify (e.g. FST_ERR_MAX_PARAM_LENGTH): its message is about the request.
        e = A2AErrors.invalidRequest(err.message ?? 'refused');
        status = err.statusCode;
      } else {
        request.log.error({ err }, 'a2a: request failed');
        e = A2AErrors.internal();
        status = 500;
      }
      const restful = isRest(request);
      this.handler.requestFailed(
        e,
        undefined,
        restful ? 'HTTP+JSON' : 'JSONRPC',
        sourceOf(this.#deps, request),
      );
      if (restful) return sendRestError(reply, e);
      return sendError(reply, status, null, e, 'v1');
    };
    app.setErrorHandler(answerError);
    app.answerFrameworkErrors?.(answerError);
    // A method or path no route takes: as the binding answers an unknown
    // route of its own (HTTP+JSON: 404 METHOD_NOT_FOUND), or on the JSON-RPC
    // endpoint 405 (JSON-RPC is POST). The body was read as for any route.
    const answerUnrouted = (request: FastifyRequest, reply: FastifyReply) => {
      const path = pathOf(request.url);
      if (isRest(request)) {
        const e = A2AErrors.methodNotFound(`${request.method} ${path}`);
        this.handler.requestFailed(e, undefined, 'HTTP+JSON', sourceOf(this.#deps, request));
        return sendRestError(reply, e);
      }
      if (path !== rpcRoute) {
        const e = A2AErrors.invalidRequest(`no A2A endpoint at ${path}`);
        this.handler.requestFailed(e, undefined, 'JSONRPC', sourceOf(this.#deps, request));
        return sendError(reply, 404, null, e, 'v1');
      }
      const e = A2AErrors.invalidRequest(`JSON-RPC is POST, not ${request.method}`);
      this.handler.requestFailed(e, undefined, 'JSONRPC', sourceOf(this.#deps, request));
      void reply.header('allow', 'POST');
      return sendError(reply, 405, null, e, 'v1');
    };
    try {
      app.setNotFoundHandler(answerUnrouted);
    } catch (err) {
      // The server's owner set one for this prefix first: its answers stay.
      app.log.debug({ err }, 'a2a: a not-found handler is set already; unrouted requests keep its answers');
    }

    const serveCard = async (request: FastifyRequest, reply: FastifyReply) => {
      const signer = this.#opts.cardSigner;
      let url = this.#url ?? this.#opts.card.url;
      if (url === undefined) {
        // A signed card is vouched for by this agent, so its URL comes from
        // what the caller cannot choose: the address its connection reached
        // (also few values, so few signatures). An unsigned card vouches for
        // nothing: the Host header is the name the caller used (a DNS name,
        // a proxy), which the local address would not give.
        const origin = signer ? localOrigin(request) : `${request.protocol}://${request.host}`;
        if (origin === undefined) {
          // An injected request (no socket), or a connection gone already.
          const e = A2AErrors.internal('the agent card has no URL: set card.url or advertiseUrl');
          return sendError(reply, 500, null, e, 'v1');
        }
        url = `${origin}${joinPath(app.prefix, rpcPath)}`;
      }
      // One card cannot be valid v1.0 and carry the v0.3 members (see V03CardCompat):
      // v1.0 unless v0.3 is asked for.
      const legacy = wantsV03Card(request, this.#opts.card.v03Compat ?? 'on-request');
      const key = `${legacy ? '0.3' : '1.0'} ${url}`;
      let body = this.#cardCache.get(key);
      if (body === undefined || (signer && !legacy)) {
        const card = this.agentCard(url);
        const v03 = legacy ? agentCardToV03(card) : undefined;
        // The signer keeps its own cache, keyed by the SVID: a rotation re-signs.
        if (v03) body = JSON.stringify(v03);
        else if (signer) body = JSON.stringify(await signer.sign(card));
        else body = JSON.stringify(card);
        if (!signer || v03) {
          if (this.#cardCache.size > 64) this.#cardCache.clear();
          this.#cardCache.set(key, body);
        }
      }
      const validators = this.#cardValidators(key, body);
      reply
        .header('cache-control', `public, max-age=${CARD_MAX_AGE_S}`)
        .header('vary', 'A2A-Version')
        .header('etag', validators.etag)
        .header('last-modified', validators.lastModified);
      if (notModified(request, validators)) return reply.code(304).send();
      return reply.header('content-type', 'application/json').send(body);
    };
    app.get('/.well-known/agent-card.json', serveCard);
    app.get('/.well-known/agent.json', serveCard);
    if (jsonrpc) app.post(rpcPath, (request, reply) => serveJsonRpc(this.#deps, request, reply));
    if (rest) {
      app.route({
        method: ['GET', 'POST', 'DELETE'],
        url: `${restPath}/*`,
        handler: (request, reply) =>
          serveRest(this.#deps, request, reply, (request.params as { '*'?: string })['*'] ?? ''),
      });
    }
  }
}

/** Whether a card request gets the v0.3 card under `mode`. */
function wantsV03Card(request: FastifyRequest, mode: V03CardCompat): boolean {
  if (mode === 'off') return false;
  const query = (request.query as Record<string, unknown> | undefined)?.['a2a-version'];
  if (typeof query === 'string') return isV03(query);
  const header = request.headers['a2a-version'];
  const h = (Array.isArray(header) ? header[0] : header)?.trim() ?? '';
  return h === '' ? mode === 'headerless' : isV03(h);
}

/** `0.3` or `0.3.x`. */
function isV03(version: string): boolean {
  return /^0\.3(\.\d+)?$/.test(version.trim());
}

/** The path of a request URL, without its query. */
function pathOf(url: string): string {
  const q = url.indexOf('?');
  return q === -1 ? url : url.slice(0, q);
}

/**
 * `scheme://host:port` of the local end of the request's connection, or
 * undefined without a socket address (an injected request, a closed
 * connection). The scheme is the socket's (TLS or not), not X-Forwarded-Proto.
 * An IPv4-mapped IPv6 address (a dual-stack `::` bind) is written as IPv4; an
 * IPv6 zone (`%eth0`) is dropped: it names an interface of this host only.
 */
function localOrigin(request: FastifyRequest): string | undefined {
  const socket = request.socket as { localAddress?: string; localPort?: number; encrypted?: boolean };
  const { localAddress, localPort } = socket;
  if (!localAddress || localPort === undefined) return undefined;
  return `${socket.encrypted === true ? 'https' : 'http'}://${urlHost(localAddress)}:${localPort}`;
}

function joinPath(prefix: string, path: string): string {
  return `${prefix}${path === '/' ? '' : path}` || '/';
}

/** `/`, `/a2a/` and `/a2a` all become `` or `/a2a` (no trailing slash), for `${base}/*`. */
function normalizeBase(path: string): string {
  const p = path.startsWith('/') ? path : `/${path}`;
  return p.replace(/\/+$/, '');
}

/**
 * A skill as a card publishes it. The registration API takes a skill with no
 * tags or description (and `registerTaskHandler('id')` makes one), but a card
 * must be valid whatever was registered: §5.7, a required array has at least
 * one element and a required field is set. No tags: its id is its one tag;
 * an empty description: its name.
 */
function publishedSkill(s: AgentSkill): AgentSkill {
  if (s.tags.length > 0 && s.description !== '') return s;
  return {
    ...s,
    description: s.description === '' ? s.name : s.description,
    tags: s.tags.length > 0 ? s.tags : [s.id],
  };
}

/** The HTTP+JSON base URL next to the JSON-RPC URL: same origin and prefix, `restPath` for `rpcPath`. */
function siblingUrl(rpcUrl: string, rpcPath = '/', restPath = '/'): string {
  const rpc = normalizeBase(rpcPath);
  const base = rpc !== '' && rpcUrl.endsWith(rpc) ? rpcUrl.slice(0, -rpc.length) : rpcUrl.replace(/\/+$/, '');
  const rest = normalizeBase(restPath);
  return rest === '' ? (base === '' ? rpcUrl : base) : `${base}${rest}`;
}
