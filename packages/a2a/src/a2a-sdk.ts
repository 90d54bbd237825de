// @weave/a2a/a2a-sdk: Weave's guarantees for an agent built on the official
// @a2a-js/sdk, without rewriting it. The SDK keeps its express handlers, its
// request handler and its executor; Weave adds what sits around them:
//   - the server: SPIFFE mTLS with the workload's SVID, rotated in place, and
//     every caller's chain verified against the bundle of its own trust domain
//     before the express app sees the request;
//   - the SDK's user: the verified SPIFFE ID (its UserBuilder seam), which also
//     scopes the SDK's tasks per caller;
//   - the policy: checked per skill for every A2A method, before the executor
//     runs; every decision audited once by the PolicyEnforcer;
//   - the client: `secureFetch` (from @weave/transport) as the SDK's fetchImpl.
//
// A separate entry point with @a2a-js/sdk as an optional peer dependency, so
// nothing else in Weave loads or installs the SDK; express is never imported
// here (the middleware and the server speak node:http types, which express's
// handlers are).
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import type { IncomingMessage, RequestListener, ServerResponse } from 'node:http';
import type { TLSSocket } from 'node:tls';
import {
  ClientFactory,
  DefaultAgentCardResolver,
  type ClientFactoryOptions,
  JsonRpcTransportFactory,
  RestTransportFactory,
} from '@a2a-js/sdk/client';
import { A2AError as SdkA2AError, RequestMalformedError } from '@a2a-js/sdk/errors';
import type {
  AgentCard as SdkAgentCard,
  CancelTaskRequest,
  DeleteTaskPushNotificationConfigRequest,
  GetExtendedAgentCardRequest,
  GetTaskPushNotificationConfigRequest,
  GetTaskRequest,
  ListTaskPushNotificationConfigsRequest,
  ListTaskPushNotificationConfigsResponse,
  ListTasksRequest,
  ListTasksResponse,
  Message as SdkMessage,
  SendMessageRequest,
  StreamResponse,
  SubscribeToTaskRequest,
  Task as SdkTask,
  TaskPushNotificationConfig,
} from '@a2a-js/sdk';
import type { A2ARequestHandler as SdkRequestHandler, ServerCallContext, User } from '@a2a-js/sdk/server';
import { z } from 'zod';
import type { AuthzDecision, PolicyEnforcer } from '@weave/authz';
import { authorizeAny, SpiffeId, WeaveError, type Authorizer, type IdentityProvider } from '@weave/identity';
import {
  createMtlsServerOptions,
  logTlsRefusals,
  parseHttp1FromStream,
  PeerVerificationError,
  secureFetch,
  verifyPeerSocket,
  type SecureChannel,
  watchServerIdentity,
  type TransportConfigInput,
} from '@weave/transport';
import {
  EXTENDED_CARD_ACTION,
  LIST_TASKS_ACTION,
  SKILL_METADATA_KEY,
  type HandlerLogger,
} from './handler.js';

export { secureFetch } from '@weave/transport';

/**
 * The SDK's `ClientFactory` with every request over `channel`: the card
 * resolver and the JSON-RPC and HTTP+JSON transports use
 * {@link secureFetch}`(channel)` as their `fetchImpl`, so each connection
 * presents this workload's SVID and talks only to a server proving the
 * channel's SPIFFE ID (anything else fails with `PEER_VERIFICATION_FAILED`
 * before a byte is sent). `createFromUrl(url)` gives the SDK client.
 *
 * @throws {ClientCertificateRequiredError} when `channel` is not a `SecureChannel`.
 */
export function secureClientFactory(channel: SecureChannel): ClientFactory {
  const fetchImpl = secureFetch(channel);
  // Built whole, not merged onto the SDK's defaults: a default transport
  // would use the global fetch, without the channel.
  const options: ClientFactoryOptions = {
    transports: [new JsonRpcTransportFactory({ fetchImpl }), new RestTransportFactory({ fetchImpl })],
    cardResolver: new DefaultAgentCardResolver({ fetchImpl }),
  };
  return new ClientFactory(options);
}

/** The SDK's {@link User}: a caller whose SPIFFE ID was verified by mTLS. `userName` is the ID. */
export class SpiffeUser implements User {
  readonly spiffeId: SpiffeId;
  constructor(spiffeId: SpiffeId) {
    this.spiffeId = spiffeId;
  }
  get isAuthenticated(): boolean {
    return true;
  }
  get userName(): string {
    return this.spiffeId.toString();
  }
}

/** The options of {@link secureSdkAgent} were rejected; `issues` lists every problem found. */
export class SdkAdapterConfigError extends WeaveError {
  readonly issues: readonly string[];
  constructor(issues: readonly string[]) {
    super('SDK_ADAPTER_CONFIG_INVALID', `invalid @a2a-js/sdk adapter options: ${issues.join('; ')}`);
    this.issues = issues;
  }
}

/**
 * The policy refused the call. An SDK error, so the SDK's own handlers send
 * it: ErrorInfo reason `PERMISSION_DENIED` (with the decision's `auditId`) on
 * every binding, HTTP 403 on HTTP+JSON. On JSON-RPC the SDK has no code for it
 * and sends -32603 with that ErrorInfo; Weave's client reads the reason
 * (`CALL_DENIED` from `callAgent`).
 */
export class SdkPermissionDeniedError extends SdkA2AError {
  override readonly reason = 'PERMISSION_DENIED';
  // What the SDK's HTTP+JSON handler reads for the status (its `isRestError`).
  readonly transport = 'rest';
  readonly statusCode = 403;
}

/** Options of {@link secureSdkAgent}. */
export interface SecureSdkAgentOptions {
  /** Where the SVID and trust bundles come from (the Workload API in production); rotation is followed. */
  readonly identity: IdentityProvider;
  /** Decides every call, per skill (there is no default that allows). */
  readonly enforcer: PolicyEnforcer;
  /** This agent's SPIFFE ID: its SVID must carry it, and it is the callee of every policy check. */
  readonly spiffeId: SpiffeId | string;
  /**
   * Which verified callers may send a request at all. Default: any caller
   * whose chain verifies against the bundle of its own trust domain; the
   * policy then decides per skill.
   */
  readonly authorize?: Authorizer;
  /**
   * The skill of a message that names none in `metadata.skill` (Weave's
   * clients always name it). Without it such a message goes to the card's only
   * skill, or is refused (INVALID_PARAMS) when the card has several.
   */
  readonly selectSkill?: (message: SdkMessage) => string | undefined;
  /** TLS floor and timeouts of the server (the Weave transport config). */
  readonly transport?: TransportConfigInput;
  /** Where refusals are logged (a pino logger fits); decisions themselves are audited by the enforcer. */
  readonly logger?: HandlerLogger;
}

const OptionsSchema = z.object({
  identity: z.custom<IdentityProvider>(
    (v) => typeof (v as IdentityProvider)?.getX509Svid === 'function',
    'an IdentityProvider',
  ),
  enforcer: z.custom<PolicyEnforcer>(
    (v) => typeof (v as PolicyEnforcer)?.checkInbound === 'function',
    'a PolicyEnforcer',
  ),
  spiffeId: z.union([z.string(), z.custom<SpiffeId>((v) => v instanceof SpiffeId, 'a SpiffeId')]),
  authorize: z.custom<Authorizer>((v) => typeof v === 'function', 'a function').optional(),
  selectSkill: z.custom<SecureSdkAgentOptions['selectSkill']>((v) => typeof v === 'function').optional(),
  transport: z.unknown().optional(),
  logger: z
    .custom<HandlerLogger>(
      (v) =>
        typeof (v as HandlerLogger)?.warn === 'function' && typeof (v as HandlerLogger)?.error === 'function',
      'a logger with warn and error',
    )
    .optional(),
});

const SILENT: HandlerLogger = { warn: () => undefined, error: () => undefined };

/** JSON body of a request refused before the express app saw it. */
interface Refusal {
  error: { code: 'PEER_VERIFICATION_FAILED' | 'PEER_NOT_AUTHORIZED'; message: string };
}

/** Weave around an `@a2a-js/sdk` agent: see {@link secureSdkAgent}. */
export interface SecureSdkAgent {
  /** This agent's SPIFFE ID. */
  readonly spiffeId: SpiffeId;
  /**
   * The SDK's `userBuilder` (for `jsonRpcHandler` and `restHandler`): the
   * caller's verified SPIFFE ID as a {@link SpiffeUser}. It refuses a request
   * that did not arrive over a connection whose client certificate verifies,
   * so the SDK answers an error and runs nothing, even on a server not made by
   * {@link SecureSdkAgent.createServer}.
   */
  readonly userBuilder: (req: IncomingMessage) => Promise<SpiffeUser>;
  /**
   * The SDK request handler with the policy in front: every method is checked
   * for the caller's SPIFFE ID and the skill (the task's skill for task
   * methods), and a denial throws {@link SdkPermissionDeniedError} before the
   * inner handler, so the executor never runs for a denied call. Errors of the
   * inner handler (TaskNotFound, ...) pass unchanged.
   */
  guard(handler: SdkRequestHandler): SdkRequestHandler;
  /**
   * An https server for `app` (an express app): mTLS with the current SVID,
   * a client certificate required, each caller's chain verified against the
   * bundle of its own trust domain and `authorize`d before `app` runs
   * (otherwise 403 and the connection closes), certificates rotated on every
   * identity update without a restart. Call `listen` on it.
   */
  createServer(app: RequestListener): HttpsServer;
  /** Stops following the identity provider (servers made here stop on their own `close`). */
  close(): void;
}

/**
 * Secures an agent built on the official `@a2a-js/sdk` with its express
 * handlers: serve the app with {@link SecureSdkAgent.createServer}, give the
 * handlers {@link SecureSdkAgent.userBuilder} and
 * {@link SecureSdkAgent.guard}`(requestHandler)`.
 *
 * @throws {SdkAdapterConfigError} for invalid options.
 */
export function secureSdkAgent(options: SecureSdkAgentOptions): SecureSdkAgent {
  const parsed = OptionsSchema.safeParse(options);
  if (!parsed.success) {
    throw new SdkAdapterConfigError(
      parsed.error.issues.map((i) => `${i.path.join('.') || 'options'}: ${i.message}`),
    );
  }
  let selfId: SpiffeId;
  try {
    selfId = typeof options.spiffeId === 'string' ? SpiffeId.parse(options.spiffeId) : options.spiffeId;
  } catch (err) {
    throw new SdkAdapterConfigError([`spiffeId: ${(err as Error).message}`]);
  }
  const { identity, enforcer } = options;
  const authorize = options.authorize ?? authorizeAny();
  const log = options.logger ?? SILENT;
  // Verification is cached per TLS connection and redone after any identity
  // update (a bundle change may revoke a trust domain).
  let epoch = 0;
  const unsubscribe = identity.onUpdate(() => {
    epoch++;
  });
  const verified = new WeakMap<TLSSocket, { epoch: number; peer?: SpiffeId; refusal?: Refusal }>();

  const check = (socket: TLSSocket | undefined): { peer?: SpiffeId; refusal?: Refusal } => {
    if (!socket || !(socket as { encrypted?: boolean }).encrypted || !socket.authorized) {
      return refusal('PEER_VERIFICATION_FAILED', 'no verified client certificate');
    }
    const cached = verified.get(socket);
    if (cached?.epoch === epoch) return cached;
    let out: { peer?: SpiffeId; refusal?: Refusal };
    try {
      const peer = verifyPeerSocket(socket, identity);
      const result = authorize(peer);
      out = result.ok
        ? { peer }
        : refusal('PEER_NOT_AUTHORIZED', `${peer.toString()} is not authorized: ${result.reason}`);
    } catch (err) {
      out = refusal('PEER_VERIFICATION_FAILED', `client certificate rejected: ${(err as Error).message}`);
    }
    verified.set(socket, { epoch, ...out });
    return out;
  };

  return {
    spiffeId: selfId,
    async userBuilder(req) {
      const { peer, refusal: r } = check(req.socket as TLSSocket);
      if (!peer)
        throw new PeerVerificationError('a verified client certificate', undefined, r!.error.message);
      return new SpiffeUser(peer);
    },
    guard(handler) {
      return new GuardedRequestHandler(handler, { enforcer, selfId, log, select: options.selectSkill });
    },
    createServer(app) {
      const svidId = identity.getX509Svid().id;
      if (!svidId.equals(selfId)) {
        throw new SdkAdapterConfigError([
          `spiffeId: the SVID carries ${svidId.toString()}, not ${selfId.toString()}`,
        ]);
      }
      const tls = createMtlsServerOptions(identity, options.transport as TransportConfigInput);
      const server = createHttpsServer(tls, (req: IncomingMessage, res: ServerResponse) => {
        const { peer, refusal: r } = check(req.socket as TLSSocket);
        if (!peer) {
          log.warn({ code: r!.error.code, reason: r!.error.message }, 'a2a-sdk: mTLS caller refused');
          res.writeHead(403, { 'content-type': 'application/json', connection: 'close' });
          res.end(JSON.stringify(r));
          return;
        }
        app(req, res);
      });
      const stopRotation = watchServerIdentity(
        server,
        identity,
        options.transport as TransportConfigInput,
        (err) =>
          log.error({ err }, 'a2a-sdk: server identity rotation failed; keeping the previous certificate'),
      );
      server.once('close', stopRotation);
      parseHttp1FromStream(server);
      logTlsRefusals(server, log);
      return server;
    },
    close: unsubscribe,
  };
}

function refusal(code: Refusal['error']['code'], message: string): { refusal: Refusal } {
  return { refusal: { error: { code, message } } };
}

/** The skill a task runs: the one the guard stamped on the message that created it. */
function skillOfTask(task: SdkTask): string | undefined {
  for (const m of task.history ?? []) {
    const s = (m.metadata as Record<string, unknown> | undefined)?.[SKILL_METADATA_KEY];
    if (typeof s === 'string' && s !== '') return s;
  }
  return undefined;
}

interface GuardOptions {
  readonly enforcer: PolicyEnforcer;
  readonly selfId: SpiffeId;
  readonly log: HandlerLogger;
  readonly select?: (message: SdkMessage) => string | undefined;
}

class GuardedRequestHandler implements SdkRequestHandler {
  readonly #inner: SdkRequestHandler;
  readonly #o: GuardOptions;

  constructor(inner: SdkRequestHandler, o: GuardOptions) {
    this.#inner = inner;
    this.#o = o;
  }

  getAgentCard(): Promise<SdkAgentCard> {
    return this.#inner.getAgentCard();
  }

  async getAuthenticatedExtendedAgentCard(
    p: GetExtendedAgentCardRequest,
    ctx: ServerCallContext,
  ): Promise<SdkAgentCard> {
    await this.#authorize(ctx, 'GetExtendedAgentCard', EXTENDED_CARD_ACTION);
    return this.#inner.getAuthenticatedExtendedAgentCard(p, ctx);
  }

  async sendMessage(p: SendMessageRequest, ctx: ServerCallContext): Promise<SdkMessage | SdkTask> {
    return this.#inner.sendMessage(await this.#routed(p, ctx, 'SendMessage'), ctx);
  }

  async *sendMessageStream(
    p: SendMessageRequest,
    ctx: ServerCallContext,
  ): AsyncGenerator<StreamResponse, void, undefined> {
    yield* this.#inner.sendMessageStream(await this.#routed(p, ctx, 'SendStreamingMessage'), ctx);
  }

  async getTask(p: GetTaskRequest, ctx: ServerCallContext): Promise<SdkTask> {
    await this.#authorizeTask(ctx, 'GetTask', p.id);
    return this.#inner.getTask(p, ctx);
  }

  async cancelTask(p: CancelTaskRequest, ctx: ServerCallContext): Promise<SdkTask> {
    await this.#authorizeTask(ctx, 'CancelTask', p.id);
    return this.#inner.cancelTask(p, ctx);
  }

  async *resubscribe(
    p: SubscribeToTaskRequest,
    ctx: ServerCallContext,
  ): AsyncGenerator<StreamResponse, void, undefined> {
    await this.#authorizeTask(ctx, 'SubscribeToTask', p.id);
    yield* this.#inner.resubscribe(p, ctx);
  }

  async createTaskPushNotificationConfig(
    p: TaskPushNotificationConfig,
    ctx: ServerCallContext,
  ): Promise<TaskPushNotificationConfig> {
    await this.#authorizeTask(ctx, 'CreateTaskPushNotificationConfig', p.taskId);
    return this.#inner.createTaskPushNotificationConfig(p, ctx);
  }

  async getTaskPushNotificationConfig(
    p: GetTaskPushNotificationConfigRequest,
    ctx: ServerCallContext,
  ): Promise<TaskPushNotificationConfig> {
    await this.#authorizeTask(ctx, 'GetTaskPushNotificationConfig', p.taskId);
    return this.#inner.getTaskPushNotificationConfig(p, ctx);
  }

  async listTaskPushNotificationConfigs(
    p: ListTaskPushNotificationConfigsRequest,
    ctx: ServerCallContext,
  ): Promise<ListTaskPushNotificationConfigsResponse> {
    await this.#authorizeTask(ctx, 'ListTaskPushNotificationConfigs', p.taskId);
    return this.#inner.listTaskPushNotificationConfigs(p, ctx);
  }

  async deleteTaskPushNotificationConfig(
    p: DeleteTaskPushNotificationConfigRequest,
    ctx: ServerCallContext,
  ): Promise<void> {
    await this.#authorizeTask(ctx, 'DeleteTaskPushNotificationConfig', p.taskId);
    return this.#inner.deleteTaskPushNotificationConfig(p, ctx);
  }

  /**
   * The caller's tasks (the SDK scopes them by user) whose skill the policy
   * still lets it reach, decided as Weave's own server decides ListTasks:
   * once per skill in the page; a page with no task of a skill on the card's
   * skills, until one allows (`a2a:ListTasks` for a card without skills); a
   * caller allowed none of the skills asked about is denied, so every call is
   * decided and audited and a revoked caller never gets even an empty list.
   */
  async listTasks(p: ListTasksRequest, ctx: ServerCallContext): Promise<ListTasksResponse> {
    const caller = this.#caller(ctx, 'ListTasks');
    const page = await this.#inner.listTasks(p, ctx);
    const decided = new Map<string, AuthzDecision>();
    const tasks: SdkTask[] = [];
    for (const task of page.tasks) {
      const skill = skillOfTask(task);
      if (skill === undefined) continue;
      let d = decided.get(skill);
      if (d === undefined) {
        d = await this.#decide(caller, ctx, 'ListTasks', skill);
        decided.set(skill, d);
      }
      if (d.allowed === true) tasks.push(task);
    }
    if (decided.size === 0) {
      const skills = (await this.#inner.getAgentCard()).skills.map((s) => s.id);
      for (const skill of skills.length > 0 ? skills : [LIST_TASKS_ACTION]) {
        const d = await this.#decide(caller, ctx, 'ListTasks', skill);
        decided.set(skill, d);
        if (d.allowed === true) break;
      }
    }
    if (![...decided.values()].some((d) => d.allowed === true)) {
      const [action, d] = [...decided.entries()][0] as [string, AuthzDecision];
      this.#deny(ctx, 'ListTasks', action, d.reason, d.auditId);
    }
    return { ...page, tasks, totalSize: page.totalSize - (page.tasks.length - tasks.length) };
  }

  /** The message with its skill resolved, checked and stamped in `metadata.skill` (the executor may dispatch on it). */
  async #routed(p: SendMessageRequest, ctx: ServerCallContext, method: string): Promise<SendMessageRequest> {
    const message = p.message;
    if (!message) throw new RequestMalformedError({ message: 'SendMessage without a message' });
    const named = (message.metadata as Record<string, unknown> | undefined)?.[SKILL_METADATA_KEY];
    if (named !== undefined && typeof named !== 'string') {
      throw new RequestMalformedError({ message: `metadata.${SKILL_METADATA_KEY} must be a string` });
    }
    let skill: string | undefined;
    if (message.taskId) {
      // A message continuing a task runs under the task's skill, whatever it names.
      const task = await this.#inner.getTask({ tenant: p.tenant, id: message.taskId }, ctx);
      skill = skillOfTask(task);
      if (named !== undefined && named !== skill) {
        throw new RequestMalformedError({
          message: `task ${message.taskId} runs skill ${String(skill)}, not ${named}`,
        });
      }
    } else {
      skill = named || this.#o.select?.(message);
      const card = await this.#inner.getAgentCard();
      const skills = card.skills.map((s) => s.id);
      if (skill === undefined && skills.length === 1) skill = skills[0];
      if (skill === undefined) {
        throw new RequestMalformedError({
          message: `name the skill in message.metadata.${SKILL_METADATA_KEY} (one of ${skills.join(', ')})`,
        });
      }
      if (!skills.includes(skill)) {
        throw new RequestMalformedError({ message: `unknown skill ${JSON.stringify(skill)}` });
      }
    }
    if (skill === undefined) {
      throw new RequestMalformedError({ message: `task ${message.taskId} names no skill` });
    }
    await this.#authorize(ctx, method, skill, message.taskId || undefined);
    return {
      ...p,
      message: { ...message, metadata: { ...(message.metadata ?? {}), [SKILL_METADATA_KEY]: skill } },
    };
  }

  /** Checks the policy on the skill of a task the caller owns (another caller's task is TaskNotFound: the SDK scopes by user). */
  async #authorizeTask(ctx: ServerCallContext, method: string, taskId: string): Promise<void> {
    this.#caller(ctx, method);
    const task = await this.#inner.getTask({ tenant: ctx.tenant ?? '', id: taskId }, ctx);
    const skill = skillOfTask(task);
    if (skill === undefined) this.#deny(ctx, method, '(none)', `task ${taskId} names no skill`);
    await this.#authorize(ctx, method, skill, taskId);
  }

  async #authorize(ctx: ServerCallContext, method: string, action: string, taskId?: string): Promise<void> {
    const caller = this.#caller(ctx, method);
    const d = await this.#decide(caller, ctx, method, action, taskId);
    if (d.allowed !== true) this.#deny(ctx, method, action, d.reason, d.auditId);
  }

  async #decide(
    caller: SpiffeId,
    ctx: ServerCallContext,
    method: string,
    action: string,
    taskId?: string,
  ): Promise<AuthzDecision> {
    const context: Record<string, string> = { method, binding: 'a2a-sdk' };
    if (taskId !== undefined) context.taskId = taskId;
    if (ctx.tenant) context.tenant = ctx.tenant;
    try {
      return await this.#o.enforcer.checkInbound({ caller, callee: this.#o.selfId, action, context });
    } catch (err) {
      // Enforcers must fail closed; one that throws is a deny.
      return { allowed: false, reason: `enforcer error: ${(err as Error)?.message}`, auditId: '' };
    }
  }

  /** The verified caller; a context without one (another userBuilder) is refused. */
  #caller(ctx: ServerCallContext, method: string): SpiffeId {
    const user = ctx.user;
    if (user instanceof SpiffeUser) return user.spiffeId;
    return this.#deny(ctx, method, '(any)', 'no caller verified by mTLS (use the adapter’s userBuilder)');
  }

  #deny(ctx: ServerCallContext, method: string, action: string, reason: string, auditId?: string): never {
    const caller = ctx.user instanceof SpiffeUser ? ctx.user.userName : '(unverified)';
    this.#o.log.warn({ auditId, caller, action, method, reason }, 'a2a-sdk: call denied by policy');
    throw new SdkPermissionDeniedError({
      message: `Permission denied: ${caller} may not invoke ${action}`,
      ...(auditId ? { metadata: { auditId } } : {}),
    });
  }
}
