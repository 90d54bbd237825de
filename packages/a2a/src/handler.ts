/**
 * The binding-agnostic A2A request handler: every A2A v1.0 method as a
 * function of a {@link CallContext} (verified caller, headers, tenant, abort
 * signal) and its params as untrusted JSON, answering wire objects or, for
 * the streaming methods, a {@link TaskEventStream}. It never sees Fastify or
 * grpc-js objects; the bindings (JSON-RPC, HTTP+JSON, gRPC) adapt it.
 *
 * Every method validates its params with zod (-32602) and runs the inbound
 * policy check, which is also the audit record, before it reads or changes
 * anything of a task or runs any task handler. A denial runs nothing.
 */
import { createHash } from 'node:crypto';
import { setMaxListeners } from 'node:events';
import { SpiffeId, WeaveError, cutText, randomUuid } from '@weave/identity';
import type { AuthzDecision, PolicyEnforcer } from '@weave/authz';
import { LogRate } from '@weave/transport';
import { z } from 'zod';
import { Deadlines, type Deadline } from './deadlines.js';
import {
  A2AError,
  A2AErrors,
  FAILURE_TEXT_CHARS,
  TaskHandedOverError,
  loggableError,
  type LoggedError,
} from './errors.js';
import { unsendable } from './depth.js';
import { TaskEventStream } from './event-stream.js';
import { CallerLimits, type CallerLimitsInput } from './limits.js';
import { A2AConfigError, checkOptions, positiveCount, timerMs } from './options.js';
import {
  ORPHAN_REASON,
  ORPHAN_REASON_LIMITED,
  TaskManager,
  WaitTimeoutError,
  snapshot,
  type ChoreOutage,
  type StoreChore,
} from './manager.js';
import type {
  CreationCursor,
  ListCursor,
  PushConfigStore,
  StoredEvent,
  TaskRecord,
  TaskStore,
} from './store.js';
import {
  InMemoryTaskStore,
  TaskStoreFullError,
  TaskStoreOverBudgetError,
  TaskStoreRejectedError,
  TaskStoreUnavailableError,
  TaskStoreClosedError,
  isPushConfigStore,
  statusTime,
} from './store.js';
import * as v1 from './wire/v1.js';
import { withJsonNames } from './wire/proto-names.js';
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
import { closesStream, endsTask, isTerminal } from './wire/v1.js';

/** The standard protocol bindings (`protocolBinding` on the card). */
export type BindingName = 'JSONRPC' | 'HTTP+JSON' | 'GRPC';

/** Request headers (HTTP) or metadata (gRPC), lower-case keys. */
export type CallHeaders = Readonly<Record<string, string | string[] | undefined>>;

/** What the request handler knows of one call, whatever binding carried it. */
export interface CallContext {
  /** The caller's SPIFFE ID, verified by the transport (mTLS) before the call reached a binding. */
  readonly caller: SpiffeId;
  /** Request headers or gRPC metadata (lower-case names). */
  readonly headers: CallHeaders;
  /** The binding that carried the call (logged with decisions). */
  readonly binding: BindingName;
  /**
   * `tenant` of the request as the binding carried it outside the params
   * (HTTP+JSON path prefix, gRPC request field), when given. The handler
   * reconciles it with the params' `tenant` (they must agree) and scopes
   * tasks by it.
   */
  readonly tenant?: string;
  /** Aborted when the caller goes away. */
  readonly signal?: AbortSignal;
}

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
  /** The tenant the task was created in, when the request named one. */
  readonly tenant?: string;
  /**
   * Headers (HTTP) or metadata (gRPC) of the request that started the task
   * (for example `traceparent`): a layer above A2A reads its own context from them.
   */
  readonly headers: CallHeaders;
  /**
   * Aborted when the task is canceled or the server closes, or this replica
   * must stop running it. Its `reason` says why:
   *
   * - `TaskCanceledError` (`TASK_CANCELED`): the task was canceled, by
   *   CancelTask on this replica or another, or by the server closing (which
   *   cancels the tasks it runs).
   * - `TaskHandedOverError` (`TASK_HANDED_OVER`, a store with leases): the
   *   server closed with the task still running, and its skill is
   *   re-runnable: the task is not ended but handed to another replica,
   *   which runs it again from its last user message.
   * - `WeaveError` `TASK_TIME_LIMIT`: it ran past `limits.maxTaskMs`; the
   *   task ended FAILED.
   * - `TaskLeaseLostError` (`TASK_LEASE_LOST`, a shared store): this replica
   *   lost its lease, or another replica moved the task on; the task is, or
   *   may be, another replica's.
   * - `TaskStoreRejectedError` (`TASK_STORE_REJECTED`): the task store
   *   refused for good what the task holds; the task ended FAILED.
   * - A `DOMException` `AbortError` (no reason given): the signal was first
   *   read after the task had ended.
   *
   * A pending {@link requestInput} rejects with the same reason (at
   * `maxTaskMs`, with the task's failure). None of them is an error of the
   * handler's to report: the task has ended (or is no longer this
   * replica's), and what the handler returns or throws from now on is not kept.
   */
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
  /**
   * Flow control for a task that publishes faster than its stream
   * subscribers read: resolves at once while every live subscriber keeps up,
   * else once each one behind has caught up (its unread events are few again
   * and its socket — SSE on JSON-RPC and HTTP+JSON, the gRPC call — has
   * taken what it held). `await ctx.drained()` after each publish (or each
   * few) and a subscriber gets every event however slowly it reads, where
   * without it a reader more than `maxStreamBufferBytes` behind is cut (with
   * a resumable error). Publishing stays synchronous: a handler that never
   * calls this behaves as before.
   *
   * Never rejects, and never waits for a subscriber that has left, or when
   * the task is canceled or finished ({@link signal} aborted). Only the
   * subscribers on this server count; one that follows the task from another
   * replica reads the shared store's log at its own pace.
   */
  drained(): Promise<void>;
}

/** Runs one task of a skill. The return value becomes the final artifact or message. */
export type TaskHandler = (ctx: TaskContext) => Promise<TaskResult> | TaskResult;

/** What a {@link MessageHandler} sees: the message, and who sent it. No task exists. */
export interface MessageContext {
  /** The message to answer. */
  readonly message: Message;
  /** The skill invoked. */
  readonly skill: string;
  /** The conversation: the message's own `contextId`, else a new one (also on the reply). */
  readonly contextId: string;
  /** The authenticated caller (from the transport). */
  readonly caller: SpiffeId;
  /** The request's tenant, when it named one. */
  readonly tenant?: string;
  /** Headers (HTTP) or metadata (gRPC) of the request. */
  readonly headers: CallHeaders;
  /** Aborted when the caller goes away. */
  readonly signal: AbortSignal;
}

/**
 * Answers a message with a message, without a task (A2A lets an agent reply
 * so to a quick, stateless request): SendMessage returns `{message}`, a
 * stream carries that one message. A string becomes an agent text message.
 * A thrown {@link A2AError} is the call's error; anything else is -32603.
 */
export type MessageHandler = (ctx: MessageContext) => Promise<Message | string> | Message | string;

/** What a {@link SkillRouter} knows of the message it routes. */
export interface RouteInfo {
  /** The authenticated caller (not yet authorized: the policy check runs on the skill chosen). */
  readonly caller: SpiffeId;
  /** Request headers or gRPC metadata (lower-case names). */
  readonly headers: CallHeaders;
  /** The request's tenant, when it named one. */
  readonly tenant?: string;
  /** The request's own `metadata` (SendMessageRequest.metadata), if any. */
  readonly metadata?: v1.Struct;
  /** The ids of the skills served, in declaration order. */
  readonly skills: readonly string[];
}

/**
 * Picks the skill for a message that names none: the agent decides, as A2A
 * has no skill selector in a message (e.g. by the data part's shape, or by
 * asking a model). `undefined` leaves it to the default skill. Throwing an
 * {@link A2AError} refuses the message with that error.
 */
export type SkillRouter = (
  message: Message,
  info: RouteInfo,
) => string | undefined | Promise<string | undefined>;

/**
 * How a new task's skill is chosen when the message does not name one in
 * `metadata.skill` (Weave's own clients do; generic A2A clients do not):
 * `route` first, then `defaultSkill`. The inbound policy is checked on the
 * skill chosen, before its handler runs.
 */
export interface SkillRouting {
  /** Skill of a message that names none and that `route` leaves undecided. */
  readonly defaultSkill?: string;
  readonly route?: SkillRouter;
}

/** Key of the task metadata that names the skill the task runs (also the selector a client may send). */
export const SKILL_METADATA_KEY = 'skill';

const DEFAULT_MAX_BODY_BYTES = 1024 * 1024;

/**
 * The method a push config given with a SendMessage is authorized as too: it
 * registers a webhook as that method does, and a policy that tells methods
 * apart (`input.context.method` for OPA) must not be passed by the other way in.
 */
const PUSH_CREATE = 'CreateTaskPushNotificationConfig';

/** How long a refused request's task may take to be written ended on a durable store, before its delete. */
const UNMAKE_WAIT_MS = 5000;

/**
 * Default of {@link A2AServerLimits.maxTaskMs}: an hour bounds a handler that
 * never returns, and leaves room for long work (a batch, a model's long
 * answer) and for multi-turn tasks across several input waits (10 min each
 * by default).
 */
const DEFAULT_MAX_TASK_MS = 3_600_000;

/**
 * How long a handler may go on after its task ended (canceled here, or
 * failed at `maxTaskMs`) before it is logged as still running: time to see
 * its signal and return. Never more than `maxTaskMs` itself.
 */
const LET_GO_MS = 5000;

/** Limits that keep one client from exhausting the server. */
export interface A2AServerLimits {
  /**
   * Largest request in bytes, on every binding: the HTTP body, the gRPC
   * request message. Default 1 MiB.
   */
  readonly maxBodyBytes?: number;
  /**
   * Most tasks at once; more get RESOURCE_EXHAUSTED. Default 1000. A task
   * counts until its handler has returned: one whose handler goes on after
   * the task ended (canceled, or failed at `maxTaskMs`, by a handler that
   * ignores its signal) still uses the server, and the refusal says how many
   * slots such handlers hold.
   */
  readonly maxConcurrentTasks?: number;
  /**
   * Limits per verified caller (SPIFFE ID): unfinished tasks (default a
   * quarter of `maxConcurrentTasks`; counted, as there, until each handler
   * has returned) and, when set, requests per second, with overrides per
   * caller pattern. Over one, the call is refused with a retryable
   * RESOURCE_EXHAUSTED error before anything runs.
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
  /**
   * Memory bound of the embedded task store (ignored with another
   * `taskStore`): bytes of task content kept store-wide (default 256 MiB),
   * per caller (default a quarter of it) and per finished task (default
   * the per-caller share; above it the task's event log, then history, then
   * artifacts are dropped). The oldest finished tasks make room; when unfinished tasks hold
   * it, a new task gets a retryable RESOURCE_EXHAUSTED; a task larger than the whole share
   * gets PAYLOAD_TOO_LARGE (not retryable). See `InMemoryTaskStoreOptions`.
   */
  readonly retainedBytes?: {
    readonly total?: number;
    readonly perCaller?: number;
    readonly perTask?: number;
  };
  /** How long a handler waits for input before the task fails, in ms. Default 10 minutes. */
  readonly inputTimeoutMs?: number;
  /**
   * Longest a task's handler may run, in ms of wall time from its start,
   * whatever deadline the caller sent or did not send (a generic A2A client
   * sends none). Past it the task ends FAILED, its status message saying it
   * ran longer than this agent allows, and the handler's signal aborts with a
   * `TASK_TIME_LIMIT` error (a pending `requestInput` rejects). Time spent
   * waiting for input counts: it bounds the whole task, every turn of a
   * multi-turn one included, while `inputTimeoutMs` bounds each wait (a wait
   * ends at whichever comes first). A handler that ignores its signal keeps
   * its task slot until it returns, and is logged (a warning, at most 10 a
   * minute). Default 1 hour; at most 2^31 - 1 ms (about 24.8 days).
   */
  readonly maxTaskMs?: number;
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
   * Checks a webhook URL when a config is created, so a URL the sender would
   * refuse (e.g. an internal address) is refused to the caller with -32602
   * instead of failing later. Default: `send.checkUrl` when the sender has
   * one (`createWebhookSender`'s SSRF guard does).
   */
  readonly checkUrl?: (url: string) => Promise<unknown>;
  /**
   * Where configs are kept. Default: the task store when it is also a
   * {@link PushConfigStore} (the in-memory and PostgreSQL stores are).
   */
  readonly store?: PushConfigStore;
}

/** The logging the handler does (a pino or Fastify logger fits). */
export interface HandlerLogger {
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
  /**
   * Where each refused request's line goes (see
   * {@link A2ARequestHandler.requestFailed}); a logger without it gets none.
   */
  debug?(obj: object, msg: string): void;
  /**
   * Where a background store operation that works again after failing is
   * told; a logger without it gets that line as a warning.
   */
  info?(obj: object, msg: string): void;
}

/**
 * Where a request came from, as the binding that answers it knows it: what
 * the line of a refused request names (see {@link A2ARequestHandler.requestFailed}).
 */
export interface RequestSource {
  /** The caller's SPIFFE ID, when its connection was verified. */
  readonly caller?: SpiffeId;
  /** The connection's remote address (the TCP peer, never a forwarded-for header). */
  readonly remoteAddress?: string;
  readonly remotePort?: number;
}

/** The numbers of {@link A2AServerLimits}, checked when a handler or server is made. */
const LimitNumbers = z.object({
  maxBodyBytes: positiveCount.optional(),
  maxConcurrentTasks: positiveCount.optional(),
  maxSubscribersPerTask: positiveCount.optional(),
  maxStreamBufferBytes: positiveCount.optional(),
  retainedBytes: z
    .object({
      total: positiveCount.optional(),
      perCaller: positiveCount.optional(),
      perTask: positiveCount.optional(),
    })
    .optional(),
  inputTimeoutMs: timerMs.optional(),
  maxTaskMs: timerMs.optional(),
  blockingTimeoutMs: timerMs.optional(),
});

/** The numbers of {@link RequestHandlerOptions}; `A2AServer` adds its own. */
export const HandlerNumbers = z.object({
  storeRetryMaxMs: timerMs.optional(),
  maxEventsPerTask: positiveCount.optional(),
  limits: LimitNumbers.optional(),
});

/**
 * Refuses what a request handler cannot run with: no enforcer, no selfId,
 * push without a sender, a bad number (`numbers`, which `A2AServer` extends
 * with its own). Done by `A2AServer` too, under its own name, before it
 * makes its handler.
 *
 * @throws {A2AConfigError}
 */
export function checkHandlerOptions(
  owner: string,
  options: RequestHandlerOptions,
  numbers: z.ZodType = HandlerNumbers,
): void {
  if (!options?.enforcer) throw new A2AConfigError(owner, ['enforcer is required']);
  if (!(options.selfId instanceof SpiffeId)) throw new A2AConfigError(owner, ['selfId must be a SpiffeId']);
  if (options.push?.enabled && typeof options.push.send !== 'function') {
    throw new A2AConfigError(owner, [
      'push.enabled needs push.send (e.g. createWebhookSender({ dispatcher }))',
    ]);
  }
  checkOptions(owner, numbers, options);
}

/** Options of {@link A2ARequestHandler}. */
export interface RequestHandlerOptions {
  /** This agent's own SPIFFE ID, passed to the enforcer as `callee`. */
  readonly selfId: SpiffeId;
  /** Decides every inbound call. Required: there is no default that allows. */
  readonly enforcer: PolicyEnforcer;
  readonly taskStore?: TaskStore;
  /**
   * Longest pause between retries of a task-store write that failed (the
   * database is away), in ms. Default 5000. The task goes on meanwhile.
   */
  readonly storeRetryMaxMs?: number;
  /** Events kept per task for `Last-Event-ID` replay. Default 1000. */
  readonly maxEventsPerTask?: number;
  readonly limits?: A2AServerLimits;
  readonly push?: A2APushOptions;
  /**
   * The card returned by GetExtendedAgentCard (policy action
   * `a2a:GetExtendedAgentCard`, checked before the function runs). Set, the
   * public card declares `capabilities.extendedAgentCard`; a function that
   * returns `undefined` has no card configured (-32007). Unset, the method
   * is UnsupportedOperation (-32004).
   */
  readonly extendedCard?:
    AgentCard | ((caller: SpiffeId) => AgentCard | undefined | Promise<AgentCard | undefined>);
  /**
   * Extensions declared on the card. A call that does not activate every
   * `required` one in its `A2A-Extensions` header fails with -32008.
   */
  readonly extensions?: Array<{ uri: string; description?: string; required?: boolean }>;
  /** Where warnings and errors go. Default: nowhere. */
  readonly logger?: HandlerLogger;
  /**
   * How a message that names no skill is routed. Without it such a message
   * reaches the only skill of a one-skill agent and is refused (-32602) by
   * an agent with several.
   */
  readonly routing?: SkillRouting;
  /**
   * Called once for each request answered with an A2A error, on every
   * binding serving this handler (see {@link RequestErrorHook}). Default: none.
   */
  readonly onRequestError?: RequestErrorHook;
}

/** What {@link RequestErrorHook} is told besides the error. */
export interface RequestErrorInfo {
  /**
   * The A2A method called, by its v1.0 name whatever the binding or protocol
   * version named it; undefined when the request named none this server
   * serves (or was refused before its method was read).
   */
  readonly method: v1.V1Method | undefined;
  /** The binding that carried the request. */
  readonly binding: BindingName;
}

/**
 * Told of each request answered with an A2A error: a JSON-RPC error reply,
 * an HTTP+JSON error status, a gRPC error status, or a stream that ends with
 * an error event (once per request, never for a successful one). Runs before
 * the reply is sent and must not block; a hook that throws (or returns a
 * rejected promise) is logged and the reply goes out unchanged.
 */
export type RequestErrorHook = (err: A2AError, info: RequestErrorInfo) => void;

/** How a skill's tasks may be run. */
export interface TaskHandlerOptions {
  /**
   * The task may run again from its first message if the replica running it
   * dies (shared store with leases): another replica re-runs it instead of
   * failing it. Only for work that is safe to repeat. Default false:
   * execution is at most once.
   */
  readonly rerunnable?: boolean;
  /**
   * Listed only on the extended card (GetExtendedAgentCard), which must then
   * be configured, never on the public card. Hiding a skill is not access
   * control: the policy decides who may call it, as for any skill.
   */
  readonly extended?: boolean;
}

/** Policy action of GetExtendedAgentCard. */
export const EXTENDED_CARD_ACTION = 'a2a:GetExtendedAgentCard';

/**
 * Policy action of a ListTasks that finds no task on an agent serving no
 * skill (otherwise such a call is checked on the agent's skills; see
 * `listTasks`): every call is decided and audited, even with nothing to show.
 */
export const LIST_TASKS_ACTION = 'a2a:ListTasks';

const SILENT: HandlerLogger = { warn: () => undefined, error: () => undefined };

/**
 * Every A2A method, binding-agnostic. See the module comment for the
 * guarantees; {@link A2AServer} owns one and mounts the bindings on it.
 */
export class A2ARequestHandler {
  /** Task state; exposed for inspection and `waitForCompletion`. */
  readonly manager: TaskManager;

  readonly #opts: RequestHandlerOptions;
  readonly #handlers = new Map<string, TaskHandler>();
  /** Skills answered by a message, without a task (also in #handlers, as a handler never run). */
  readonly #direct = new Map<string, MessageHandler>();
  /** Skills listed on the extended card only (GetExtendedAgentCard), not on the public one. */
  readonly #extendedOnly = new Set<string>();
  readonly #rerunnable = new Set<string>();
  readonly #skills = new Map<string, AgentSkill>();
  readonly #maxTasks: number;
  readonly #callerLimits: CallerLimits;
  readonly #maxSubs: number;
  readonly #inputTimeout: number;
  readonly #blockingTimeout: number;
  readonly #maxTaskMs: number;
  /** See {@link LET_GO_MS}. */
  readonly #letGoMs: number;
  /** Task slots taken server-wide: a task's from before it is made until its handler has returned. */
  #slots = 0;
  /**
   * Every task handler running here, each on its deadline (see {@link Run}):
   * one timer bounds them all, and a refusal counts those whose task ended.
   */
  readonly #runs = new Deadlines<Run>((run) => this.#runExpired(run));
  /** Lines of tasks failed at `maxTaskMs`: at most 10 a minute. */
  readonly #overranLines = new LogRate();
  /** Lines of handlers still running after their task ended: at most 10 a minute. */
  readonly #lingeringLines = new LogRate();
  /** Lines of refused requests (see {@link #logRefusal}): at most 10 a minute, all bindings together. */
  readonly #refusalLines = new LogRate();
  /** Policy denials, logged by {@link #denied} already: their refusal is not logged twice. */
  readonly #deniedLogged = new WeakSet<A2AError>();
  /** Live streams per task: counted against `maxSubscribersPerTask`, waited for by `ctx.drained()`. */
  readonly #subscribers = new Map<string, Set<TaskEventStream>>();
  readonly #requiredExt: string[];
  readonly #pushWatched = new Set<string>();
  readonly #pushStore: PushConfigStore | undefined;
  #log: HandlerLogger;
  readonly #onRequestError: RequestErrorHook | undefined;
  #draining = false;
  /** Set as {@link close} begins: no work starts after it (see {@link #admitWork}). */
  #closing = false;
  #onSkillsChanged: (() => void) | undefined;

  /** @throws {A2AConfigError} when no enforcer or selfId, push without a sender or store, or a number out of range; nothing is started. */
  constructor(options: RequestHandlerOptions) {
    checkHandlerOptions('A2ARequestHandler', options);
    this.#opts = options;
    this.#log = options.logger ?? SILENT;
    this.#onRequestError = options.onRequestError;
    this.#maxTasks = options.limits?.maxConcurrentTasks ?? 1000;
    this.#maxSubs = options.limits?.maxSubscribersPerTask ?? 32;
    // Checked before the task manager starts its timers, so that a refused
    // option leaves nothing running.
    this.#callerLimits = new CallerLimits(
      options.limits?.perCaller,
      Math.max(1, Math.floor(this.#maxTasks / 4)),
    );
    // Unset, the push configs go to the task store; the embedded one keeps them.
    const givenPushStore = options.push?.store ?? options.taskStore;
    if (options.push?.enabled && givenPushStore !== undefined && !isPushConfigStore(givenPushStore)) {
      throw new A2AConfigError('A2ARequestHandler', [
        'push.enabled needs push.store when the task store keeps no push configs',
      ]);
    }
    const retained = options.limits?.retainedBytes;
    this.manager = new TaskManager({
      store:
        options.taskStore ??
        new InMemoryTaskStore({
          ...(retained?.total === undefined ? {} : { maxBytes: retained.total }),
          ...(retained?.perCaller === undefined ? {} : { maxBytesPerOwner: retained.perCaller }),
          ...(retained?.perTask === undefined ? {} : { maxBytesPerTask: retained.perTask }),
        }),
      maxEventsPerTask: options.maxEventsPerTask,
      retryMaxMs: options.storeRetryMaxMs,
      onStoreError: (err, taskId, failures) => this.#storeWriteFailed(err, taskId, failures),
      onStoreRecovered: (taskId, outage) => this.#storeWorksAgain(STORE_WRITE_AGAIN, outage, { taskId }),
      onChoreFailed: (chore, err) => this.#choreFailed(chore, err),
      onChoreRecovered: (chore, outage) =>
        this.#storeWorksAgain(`a2a: ${CHORE_NAMES[chore]} works again`, outage, {}),
      onOrphan: (record) => this.#orphan(record),
    });
    const pushStore = options.push?.store ?? this.manager.store;
    this.#pushStore = isPushConfigStore(pushStore) ? pushStore : undefined;
    this.#inputTimeout = options.limits?.inputTimeoutMs ?? 600_000;
    this.#blockingTimeout = options.limits?.blockingTimeoutMs ?? 60_000;
    this.#maxTaskMs = options.limits?.maxTaskMs ?? DEFAULT_MAX_TASK_MS;
    this.#letGoMs = Math.min(LET_GO_MS, this.#maxTaskMs);
    this.#requiredExt = (options.extensions ?? []).filter((e) => e.required === true).map((e) => e.uri);
  }

  /**
   * Largest request in bytes (`limits.maxBodyBytes`, default 1 MiB): the
   * bound every binding serving this handler puts on one request, so that
   * no binding takes what another refuses.
   */
  get maxBodyBytes(): number {
    return this.#opts.limits?.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
  }

  /** Sets where warnings and errors go (a binding may supply its server's logger). */
  setLogger(logger: HandlerLogger): void {
    this.#log = logger;
  }

  /**
   * Tells the `onRequestError` hook that a request is answered with `err`,
   * and logs it (one `debug` line, see below). For the bindings: each calls
   * it once per request it answers with an error, as it answers, with
   * `from` (the verified caller and the connection's address) when it
   * knows them. Never throws.
   *
   * The line (`a2a: request refused`) names the binding, the method when
   * known, the error's `code` and `jsonRpcCode`, the caller and remote
   * address from `from`, and the error's message as `reason`, cut to 256
   * characters: never the request itself (what the error's message repeats
   * of it is already cut, see `A2AErrors`). At most 10 lines a minute for
   * all bindings together (the first after a window that dropped some says
   * how many: `suppressed`), as any caller can cause them at will. A policy
   * denial gets no second line: `a2a: call denied by policy` (a warning
   * naming the caller, binding, method and reason) is its line.
   */
  requestFailed(
    err: A2AError,
    method: v1.V1Method | undefined,
    binding: BindingName,
    from?: RequestSource,
  ): void {
    this.#logRefusal(err, method, binding, from);
    const hook = this.#onRequestError;
    if (hook === undefined) return;
    try {
      // A hook declared async is a `void` function to TypeScript: its
      // rejection would otherwise be unhandled, and end the process.
      const r = hook(err, { method, binding }) as unknown;
      if (r instanceof Promise) r.catch((e: unknown) => this.#hookFailed(e));
    } catch (e) {
      this.#hookFailed(e);
    }
  }

  #hookFailed(err: unknown): void {
    this.#log.error({ err }, 'a2a: onRequestError hook failed; the reply is sent as it was');
  }

  /** The line of {@link requestFailed}. */
  #logRefusal(
    err: A2AError,
    method: v1.V1Method | undefined,
    binding: BindingName,
    from: RequestSource | undefined,
  ): void {
    const log = this.#log;
    // Checked before the rate is counted: lines never written would show as `suppressed`.
    if (log.debug === undefined || !levelEnabled(log, 'debug') || this.#deniedLogged.has(err)) return;
    const extra = this.#refusalLines.take();
    if (!extra) return;
    const fields: Record<string, unknown> = { binding };
    if (method !== undefined) fields.method = method;
    fields.code = err.code;
    fields.jsonRpcCode = err.jsonRpcCode;
    if (from?.caller !== undefined) fields.caller = from.caller.toString();
    if (from?.remoteAddress !== undefined) fields.remoteAddress = from.remoteAddress;
    if (from?.remotePort !== undefined) fields.remotePort = from.remotePort;
    fields.reason = cutText(err.message, REFUSAL_REASON_CHARS);
    log.debug({ ...fields, ...extra }, 'a2a: request refused');
  }

  /**
   * A background operation of the task manager's own began to fail (see
   * `TaskManagerOptions.onChoreFailed`): one line for the whole outage. A
   * store that cannot be reached is a warning with what it said, without
   * the stack, which only says where the failure was noticed; anything else
   * is an error, stack included.
   */
  #choreFailed(chore: StoreChore, err: unknown): void {
    const msg = `a2a: ${CHORE_NAMES[chore]} failed`;
    if (!this.#storeAway(msg, err, {})) this.#log.error({ err: loggableError(err) }, msg);
  }

  /**
   * A task's write (or read of it) failed. For want of the store, a running
   * task's write is told once as its run of failures begins (see
   * `TaskManagerOptions.onStoreError`), with the attempts failed so far: a
   * warning as a chore's ({@link #choreFailed}), one per task for the whole
   * outage, where it was an error with a full stack at every retry of every
   * running task. Anything else is the error line it always was.
   */
  #storeWriteFailed(err: unknown, taskId: string, failures: number | undefined): void {
    const fields = failures === undefined ? { taskId } : { taskId, failures };
    if (!this.#storeAway(STORE_WRITE_FAILED, err, fields)) {
      this.#log.error({ err, taskId }, STORE_WRITE_FAILED);
    }
  }

  /**
   * Logs `msg` as a warning with `fields` and what the store said, without
   * the stack, when `err` says the store cannot be reached; true when it did.
   */
  #storeAway(msg: string, err: unknown, fields: Record<string, unknown>): boolean {
    if (!(err instanceof TaskStoreUnavailableError)) return false;
    this.#log.warn({ ...fields, err: withoutStack(err) }, msg);
    return true;
  }

  /** A chore, or a task's writes, that failed work again: how often it failed, and for how long. */
  #storeWorksAgain(msg: string, outage: ChoreOutage, fields: Record<string, unknown>): void {
    const line = { ...fields, failures: outage.failures, failingMs: Math.max(0, Date.now() - outage.since) };
    const log = this.#log;
    if (log.info !== undefined) log.info(line, msg);
    else log.warn(line, msg);
  }

  /** Called whenever the set of served skills changes (the card caches on it). */
  onSkillsChanged(fn: () => void): void {
    this.#onSkillsChanged = fn;
  }

  /** Declares a skill for the card without serving it yet. */
  declareSkill(skill: AgentSkill): void {
    this.#skills.set(skill.id, v1.AgentSkillSchema.parse(skill));
  }

  /**
   * Runs `handler` for tasks of `skill`. A skill given by id must be declared
   * (or gets a bare entry); a full {@link AgentSkill} is added to the card.
   */
  registerTaskHandler(
    skill: AgentSkill | string,
    handler: TaskHandler,
    options: TaskHandlerOptions = {},
  ): void {
    if (options.extended === true && this.#opts.extendedCard === undefined) {
      throw new A2AConfigError('registerTaskHandler', [
        'an extended skill is listed only on the extended agent card: configure extendedCard',
      ]);
    }
    const def =
      typeof skill === 'string'
        ? (this.#skills.get(skill) ?? { id: skill, name: skill, description: '', tags: [] })
        : v1.AgentSkillSchema.parse(skill);
    this.#skills.set(def.id, def);
    this.#handlers.set(def.id, handler);
    this.#direct.delete(def.id);
    if (options.rerunnable === true) this.#rerunnable.add(def.id);
    else this.#rerunnable.delete(def.id);
    if (options.extended === true) this.#extendedOnly.add(def.id);
    else this.#extendedOnly.delete(def.id);
    this.#onSkillsChanged?.();
  }

  /**
   * Answers messages for `skill` with a message and no task (see
   * {@link MessageHandler}). The policy is checked on `skill` first, as for a task.
   */
  registerMessageHandler(skill: AgentSkill | string, handler: MessageHandler): void {
    this.registerTaskHandler(skill, NO_TASK);
    const id = typeof skill === 'string' ? skill : skill.id;
    this.#direct.set(id, handler);
  }

  /**
   * The skills served (declared and with a handler), in declaration order:
   * those of the public card, or with `'extended'` those of the extended card
   * (all of them, the extended-only ones included).
   */
  servedSkills(card: 'public' | 'extended' = 'public'): AgentSkill[] {
    return [...this.#skills.values()].filter(
      (s) => this.#handlers.has(s.id) && (card === 'extended' || !this.#extendedOnly.has(s.id)),
    );
  }

  /** Extensions the card declares. */
  get extensions(): ReadonlyArray<{ uri: string; description?: string; required?: boolean }> {
    return this.#opts.extensions ?? [];
  }

  /** Whether push notifications are on. */
  get pushEnabled(): boolean {
    return this.#opts.push?.enabled === true;
  }

  /** Whether GetExtendedAgentCard has a card to give. */
  get hasExtendedCard(): boolean {
    return this.#opts.extendedCard !== undefined;
  }

  /**
   * From now on, messages that would start a new task are refused with a
   * retryable UNAVAILABLE (HTTP 503, gRPC UNAVAILABLE) on every binding;
   * replies to running tasks, reads and cancels go on. Nothing is parsed
   * beyond what the method needs anyway.
   */
  drain(): void {
    this.#draining = true;
  }

  /** Whether {@link drain} was called. */
  get draining(): boolean {
    return this.#draining;
  }

  /**
   * With a task store that keeps leases (PostgreSQL): hands every task of a
   * re-runnable skill ({@link TaskHandlerOptions.rerunnable}) whose handler
   * runs here to another replica, instead of ending it, as a stopping
   * replica's last act before it ends the rest. Each such handler's signal
   * aborts with {@link TaskHandedOverError}; nothing terminal is written for
   * its task, what it published so far is written (see
   * {@link TaskManager.handOver}), and once {@link close} has handed this
   * replica's lease back, another replica claims the task and runs it again
   * from its last user message, as it would had this one died, without
   * waiting for the lease to run out. Its streams here end as {@link close}
   * ends them. A no-op on a store without leases (the embedded one). Called
   * by {@link close}; a caller that ends the other tasks its own way before
   * close() (a `SecureAgent` fails them) calls it first. Returns how many
   * tasks were handed over.
   */
  handOverTasks(): number {
    let n = 0;
    for (const run of [...this.#runs.keys()]) {
      if (!this.#rerunnable.has(run.skill)) continue;
      const reason = new TaskHandedOverError(run.id);
      if (!this.manager.handOver(run.id, reason)) continue;
      n++;
      // A handler that reads its signal only now is told why, not given a bare AbortError.
      run.stopped = reason;
      // Given LET_GO_MS to return, as a canceled task's handler is.
      if (run.phase === RUN_BOUND) this.#rearm(run, RUN_ENDED, Date.now() + this.#letGoMs);
      this.#log.warn({ taskId: run.id, skill: run.skill }, 'a2a: handing a running task to another replica');
    }
    return n;
  }

  /**
   * Cancels running tasks and flushes the store; with a task store that
   * keeps leases (PostgreSQL), the tasks of re-runnable skills are handed to
   * another replica instead ({@link handOverTasks}), and the lease handed
   * back lets one claim them at once. From the moment it is called,
   * anything that would start work is refused on every binding with the
   * retryable UNAVAILABLE {@link drain} answers a new task with: new tasks,
   * streaming ones included, replies to tasks waiting for input, and
   * messages a message handler would answer. Reads and cancels go on.
   */
  async close(): Promise<void> {
    // Before the manager cancels what runs: a task is either running by
    // then (and canceled, or handed over) or refused, never started in between.
    this.#closing = true;
    this.handOverTasks();
    await this.manager.close();
    // The streams still open follow tasks that run on other replicas, or
    // were handed to one (those that ran here otherwise ended CANCELED):
    // this server hears nothing more of them, so each ends with an error
    // saying so, not silently open for ever.
    const gone = A2AErrors.unavailable('the agent is shutting down; subscribe again to another instance');
    for (const streams of [...this.#subscribers.values()]) for (const s of [...streams]) s.end(gone);
  }

  /**
   * Refuses a message that would start work once {@link close} has begun
   * (any: a reply resumes a handler) and, with `newTask` (one that starts a
   * task, as it arrives), while draining: a request already past that
   * check when {@link drain} came is in flight, and runs on. One answer,
   * on every binding.
   */
  #admitWork(newTask: boolean): void {
    if (this.#closing || (newTask && this.#draining)) {
      throw A2AErrors.unavailable(SHUTTING_DOWN);
    }
  }

  // ---- the A2A methods ------------------------------------------------------------

  /** SendMessage: starts or resumes a task and waits (unless `returnImmediately`) until it settles. */
  async sendMessage(ctx: CallContext, params: unknown): Promise<v1.SendMessageResult> {
    const [c, p] = this.#checkSend(ctx, params);
    const record = await this.#startOrResume(c, 'SendMessage', p);
    if ('message' in record) return record;
    let task = record.task;
    if (p.configuration?.returnImmediately === true) {
      // The task as kept: with a durable store, as written (what the handler
      // did in memory since may not be yet, and a read right after must not
      // show an earlier state than this answer); a reply handed to another
      // replica: the task as it is now, not as it was when it asked.
      task = await this.#lastKnown(task);
    } else {
      try {
        // With the embedded store, the task's next settle itself: one await
        // fewer per call than through waitForCompletion (bench/README.md).
        const settling = this.manager.nextSettle(task.id, this.#blockingTimeout);
        task = settling
          ? (await settling).task
          : await this.manager.waitForCompletion(task.id, {
              timeoutMs: this.#blockingTimeout,
              // A reply: the answer is the settle that follows it, not the
              // INPUT_REQUIRED the task still shows (on another replica until
              // it takes the reply; with a durable store, until what followed
              // it here is written).
              ...(p.message.taskId !== undefined ? { afterSeq: record.seq } : {}),
              orLastSeen: true,
            });
      } catch (err) {
        // A blocking call does not wait forever: the task, still running, is
        // returned as it is, and the client can poll or subscribe. So is it
        // when the store cannot be read (see #lastKnown).
        if (err instanceof WaitTimeoutError) task = await this.#lastKnown(record.task);
        else if (!(err instanceof TaskStoreUnavailableError)) throw err;
      }
    }
    return { task: answered(task, p.configuration?.historyLength) };
  }

  /**
   * The task as it is now, or `known` when the store cannot be read. Asked
   * once the task exists and its handler may have run (or a reply was
   * taken): the answer names the task, which the client can read later,
   * rather than a retryable UNAVAILABLE, which says nothing ran and would
   * have a retry run it again.
   */
  async #lastKnown(known: Task): Promise<Task> {
    try {
      return (await this.manager.get(known.id))?.task ?? known;
    } catch (err) {
      if (err instanceof TaskStoreUnavailableError) return known;
      throw err;
    }
  }

  /**
   * SendStreamingMessage: the stream attaches before the handler runs (or the
   * reply is delivered), so it misses nothing. A new task's stream replays
   * from its first event; a resumed one starts with the task as it is.
   * Errors before the first event reject the promise.
   */
  async sendStreamingMessage(ctx: CallContext, params: unknown): Promise<TaskEventStream> {
    const [c, p] = this.#checkSend(ctx, params);
    const resumed = p.message.taskId !== undefined;
    // Applied to every Task event of the stream, as SendMessage applies it to its answer.
    const historyLength = p.configuration?.historyLength;
    let stream: TaskEventStream | undefined;
    const started = await this.#startOrResume(c, 'SendStreamingMessage', p, (rec) => {
      stream = this.#openStream(c, rec, resumed ? rec.seq : 0, resumed, closesStream, historyLength);
    });
    if ('message' in started) {
      // No task: the stream is the one reply (no sequence to resume from).
      const one = new TaskEventStream();
      one.push({ event: started, seq: 0 });
      one.end();
      return one;
    }
    // A reply handed to the replica running the task: its events are followed from the store.
    return stream ?? (await this.#followStream(c, started, undefined, closesStream, historyLength));
  }

  /** GetTask. */
  async getTask(ctx: CallContext, params: unknown): Promise<Task> {
    this.#enter(ctx);
    const p = parseRequest(v1.GetTaskParamsSchema, params);
    const c = scoped(ctx, p.tenant);
    const record = await this.#ownedTask(c, p.id);
    await this.#authorize(c, 'GetTask', record.skill, p.id);
    return answered(record.task, p.historyLength);
  }

  /**
   * ListTasks: the caller's own tasks, most recent status first. Each task is checked as
   * GetTask checks it: the policy on its skill (action = the skill, method
   * `ListTasks`), decided and audited once per skill in the page; a task of a
   * skill the caller may no longer reach is left out. Every call is decided:
   * a page with no task asks the policy about the skills the agent serves (in
   * declaration order, the extended-only ones too, until one allows), since a
   * caller may list only where it may call; an agent serving none asks about
   * the action `a2a:ListTasks`. A caller allowed none of the skills asked about
   * gets PERMISSION_DENIED, as from GetTask, so a revoked caller reads
   * nothing, not even an empty page.
   */
  async listTasks(ctx: CallContext, params: unknown): Promise<v1.ListTasksResult> {
    this.#enter(ctx);
    const p = parseRequest(v1.ListTasksParamsSchema, params);
    const c = scoped(ctx, p.tenant);
    const pageSize = p.pageSize ?? 50;
    const filter: ListFilter = {
      tenant: c.tenant,
      contextId: p.contextId,
      // ProtoJSON's zero value means "no filter".
      status: p.status === 'TASK_STATE_UNSPECIFIED' ? undefined : p.status,
      updatedAfter: p.statusTimestampAfter === undefined ? undefined : Date.parse(p.statusTimestampAfter),
    };
    const query = queryHash(filter);
    let after: ListCursor | CreationCursor | undefined;
    if (p.pageToken) after = decodePageToken(p.pageToken, query);
    const page = await this.manager.list({
      owner: c.caller.toString(),
      ...(filter.tenant === undefined ? {} : { tenant: filter.tenant }),
      contextId: filter.contextId,
      status: filter.status,
      updatedAfter: filter.updatedAfter,
      after,
      limit: pageSize + 1,
    });
    const more = page.records.length > pageSize;
    const records = more ? page.records.slice(0, pageSize) : page.records;
    const allowed = new Map<string, A2AError | undefined>();
    for (const r of records) {
      if (allowed.has(r.skill)) continue;
      try {
        await this.#authorize(c, 'ListTasks', r.skill);
        allowed.set(r.skill, undefined);
      } catch (err) {
        if (!(err instanceof A2AError)) throw err;
        allowed.set(r.skill, err);
      }
    }
    if (records.length === 0) await this.#authorizeAny(c, 'ListTasks');
    const visible = records.filter((r) => allowed.get(r.skill) === undefined);
    const denial = [...allowed.values()].find((e) => e !== undefined);
    if (records.length > 0 && visible.length === 0 && denial) throw denial;
    const tasks = visible.map((r) => answered(r.task, p.historyLength, p.includeArtifacts === true));
    const last = records[records.length - 1];
    return {
      tasks,
      nextPageToken: more && last ? encodePageToken(last, query) : '',
      pageSize,
      totalSize: page.total - (records.length - visible.length),
    };
  }

  /** CancelTask. */
  async cancelTask(ctx: CallContext, params: unknown): Promise<Task> {
    this.#enter(ctx);
    const { id, tenant } = parseRequest(v1.CancelTaskParamsSchema, params);
    const c = scoped(ctx, tenant);
    const record = await this.#ownedTask(c, id);
    await this.#authorize(c, 'CancelTask', record.skill, id);
    const state = record.task.status.state;
    if (isTerminal(state)) throw A2AErrors.taskNotCancelable(id, state);
    if (this.manager.cancel(id)) {
      this.#taskEnded(id);
      // Answered once CANCELED is kept (at once for the embedded store).
      return snapshot(await this.manager.waitForCompletion(id, { terminalOnly: true }));
    }
    // Not running here: the replica running it is asked (its handler's
    // signal aborts); with nobody running it, CANCELED is logged here.
    const after = await this.manager.cancelElsewhere(id);
    if (!after) throw A2AErrors.taskNotFound(id);
    if (after.task.status.state !== 'TASK_STATE_CANCELED') {
      throw A2AErrors.taskNotCancelable(id, after.task.status.state);
    }
    return snapshot(after.task);
  }

  /**
   * SubscribeToTask. With `lastEventId` (the binding's `Last-Event-ID`), the
   * kept events after it come first, also for a task that has finished since.
   */
  async subscribeToTask(
    ctx: CallContext,
    params: unknown,
    options: { lastEventId?: number } = {},
  ): Promise<TaskEventStream> {
    this.#enter(ctx);
    const { id, tenant } = parseRequest(v1.SubscribeToTaskParamsSchema, params);
    const c = scoped(ctx, tenant);
    const record = await this.#ownedTask(c, id);
    await this.#authorize(c, 'SubscribeToTask', record.skill, id);
    const lastEventId = options.lastEventId;
    // An event id the task has not reached was never sent (a client is sent
    // only events already kept): resuming after it would wait for ever, or
    // replay ids at or below it that a client would take for seen ones.
    if (lastEventId !== undefined && lastEventId > record.seq) {
      throw A2AErrors.invalidParams(
        `Last-Event-ID ${lastEventId} is after the last event of task ${id} (${record.seq})`,
      );
    }
    if (!this.manager.isLive(id)) {
      if (!isTerminal(record.task.status.state) && this.manager.canFollow) {
        // Running on another replica: followed through the shared store.
        return this.#followStream(c, record, lastEventId);
      }
      // Finished: a reconnecting client still gets the events it missed, if kept.
      const missed = lastEventId === undefined ? undefined : await this.manager.eventsAfter(id, lastEventId);
      if (missed === undefined || missed.length === 0) {
        throw A2AErrors.unsupportedOperation(`Task ${id} is in terminal state ${record.task.status.state}`);
      }
      const stream = new TaskEventStream();
      for (const e of missed) stream.push({ event: e.event, seq: e.seq });
      stream.end();
      return stream;
    }
    return this.#openStream(c, record, lastEventId, lastEventId === undefined, endsSubscription);
  }

  /** CreateTaskPushNotificationConfig (the token and credentials are never echoed back). */
  async createTaskPushNotificationConfig(
    ctx: CallContext,
    params: unknown,
  ): Promise<TaskPushNotificationConfig> {
    this.#enter(ctx);
    this.#pushOn();
    const p = parseRequest(v1.TaskPushNotificationConfigParamsSchema, params);
    const c = scoped(ctx, p.tenant);
    const record = await this.#ownedTask(c, p.taskId);
    await this.#authorize(c, 'CreateTaskPushNotificationConfig', record.skill, p.taskId);
    await this.#checkPushConfig(p);
    return redact(await this.#storePushConfig(record, p));
  }

  /** GetTaskPushNotificationConfig: a config the task does not have is TASK_NOT_FOUND, as an unknown task is. */
  async getTaskPushNotificationConfig(
    ctx: CallContext,
    params: unknown,
  ): Promise<TaskPushNotificationConfig> {
    this.#enter(ctx);
    this.#pushOn();
    const p = parseRequest(v1.TaskPushConfigRefSchema, params);
    const c = scoped(ctx, p.tenant);
    const record = await this.#ownedTask(c, p.taskId);
    await this.#authorize(c, 'GetTaskPushNotificationConfig', record.skill, p.taskId);
    const list = await (this.#pushStore as PushConfigStore).listPushConfigs(p.taskId);
    const found = list.find((c) => c.id === p.id);
    if (!found) throw A2AErrors.pushConfigNotFound(p.taskId, p.id);
    return redact(found);
  }

  /** ListTaskPushNotificationConfigs. */
  async listTaskPushNotificationConfigs(
    ctx: CallContext,
    params: unknown,
  ): Promise<{ configs: TaskPushNotificationConfig[]; nextPageToken: string }> {
    this.#enter(ctx);
    this.#pushOn();
    const p = parseRequest(v1.ListTaskPushConfigsParamsSchema, params);
    const c = scoped(ctx, p.tenant);
    const record = await this.#ownedTask(c, p.taskId);
    await this.#authorize(c, 'ListTaskPushNotificationConfigs', record.skill, p.taskId);
    const list = await (this.#pushStore as PushConfigStore).listPushConfigs(p.taskId);
    // Pages in insertion order: `pageSize` at most (0 or unset: all of them; a task has at most 16).
    const from = p.pageToken ? decodePushPageToken(p.pageToken, p.taskId, list.length) : 0;
    const to = p.pageSize ? Math.min(list.length, from + p.pageSize) : list.length;
    return {
      configs: list.slice(from, to).map(redact),
      nextPageToken: to < list.length ? encodePushPageToken(p.taskId, to) : '',
    };
  }

  /** DeleteTaskPushNotificationConfig: succeeds for an absent config too; an unknown task is TASK_NOT_FOUND. */
  async deleteTaskPushNotificationConfig(ctx: CallContext, params: unknown): Promise<void> {
    this.#enter(ctx);
    this.#pushOn();
    const p = parseRequest(v1.TaskPushConfigRefSchema, params);
    const c = scoped(ctx, p.tenant);
    const record = await this.#ownedTask(c, p.taskId);
    await this.#authorize(c, 'DeleteTaskPushNotificationConfig', record.skill, p.taskId);
    // Idempotent, as a delete is: a config that is not there (any more) is
    // deleted all the same, so a retried delete succeeds. The task itself
    // must still be the caller's (above).
    await (this.#pushStore as PushConfigStore).deletePushConfig(p.taskId, p.id);
  }

  /** GetExtendedAgentCard (policy action {@link EXTENDED_CARD_ACTION}). */
  async getExtendedAgentCard(ctx: CallContext, params?: unknown): Promise<AgentCard> {
    this.#enter(ctx);
    const p = parseRequest(v1.GetExtendedAgentCardParamsSchema, params ?? undefined);
    const c = scoped(ctx, p?.tenant);
    const ext = this.#opts.extendedCard;
    if (ext === undefined) {
      throw A2AErrors.unsupportedOperation('This agent declares no extended agent card');
    }
    await this.#authorize(c, 'GetExtendedAgentCard', EXTENDED_CARD_ACTION);
    const card = typeof ext === 'function' ? await ext(ctx.caller) : ext;
    // Declared on the public card, but nothing to give (yet).
    if (card === undefined) throw A2AErrors.extendedCardNotConfigured();
    // What the application builds is checked like anything else that leaves the server.
    const parsed = v1.AgentCardSchema.safeParse(card);
    if (!parsed.success) {
      this.#log.error({ issues: parsed.error.issues }, 'a2a: extendedCard is not a valid agent card');
      throw A2AErrors.internal();
    }
    return parsed.data;
  }

  // ---- tasks ---------------------------------------------------------------------------

  #checkSend(ctx: CallContext, params: unknown): [CallContext, v1.SendMessageParams] {
    this.#enter(ctx);
    const p = parseRequest(v1.SendMessageParamsSchema, params);
    return [scoped(ctx, p.tenant), p];
  }

  /**
   * What every method checks first: the caller's request rate, and that the
   * extensions the agent requires are activated.
   */
  #enter(ctx: CallContext): void {
    this.#callerLimits.admitRequest(ctx.caller);
    if (this.#requiredExt.length === 0) return;
    const missing = missingExtension(
      this.#requiredExt,
      ctx.headers['a2a-extensions'] ?? ctx.headers['x-a2a-extensions'],
    );
    if (missing !== undefined) throw A2AErrors.extensionRequired(missing);
  }

  /**
   * Creates a task (or delivers a reply to one waiting for input) after the
   * policy check. `beforeRun` is called once the task exists and before any
   * handler code runs. A skill answered by a message runs its
   * {@link MessageHandler} instead, and the reply comes back with no task.
   */
  async #startOrResume(
    ctx: CallContext,
    method: string,
    p: v1.SendMessageParams,
    beforeRun?: (record: TaskRecord) => void,
  ): Promise<TaskRecord | { message: Message }> {
    const taskId = p.message.taskId;
    this.#admitWork(taskId === undefined);
    const named = skillFromMetadata(p);
    if (p.message.role !== 'ROLE_USER') throw A2AErrors.invalidParams('message.role must be ROLE_USER');
    const push = p.configuration?.taskPushNotificationConfig;
    if (taskId !== undefined) {
      const record = await this.#ownedTask(ctx, taskId);
      if (named !== undefined && named !== record.skill) {
        throw A2AErrors.invalidParams(`task ${taskId} runs skill ${record.skill}, not ${named}`);
      }
      await this.#authorize(ctx, method, record.skill, taskId);
      if (push) await this.#authorize(ctx, PUSH_CREATE, record.skill, taskId);
      // §3.4.3: a reply naming another conversation than its task's is
      // refused, not moved into the task's. Asked before the task's state,
      // as the official SDK does, so the answer does not depend on whether
      // the task still runs; after the policy, so a denied caller learns no
      // context id. An empty one is none (ProtoJSON's zero value).
      const contextId = p.message.contextId;
      if (contextId !== undefined && contextId !== '' && contextId !== record.task.contextId) {
        throw A2AErrors.invalidParams(
          `message.contextId ${contextId.slice(0, 64)} does not match context ${record.task.contextId} of task ${taskId}`,
        );
      }
      if (isTerminal(record.task.status.state)) {
        throw A2AErrors.unsupportedOperation(
          `Task ${taskId} is in terminal state ${record.task.status.state}`,
        );
      }
      // A webhook given with a reply is added to the task it continues, as
      // CreateTaskPushNotificationConfig would add it: dropping it silently
      // would leave the caller waiting for pushes that never come. Checked
      // before the reply is taken, so a refused one changes nothing.
      if (push) await this.#checkPushConfig(push);
      const forward =
        !this.manager.isAwaitingInput(taskId) &&
        !this.manager.isLive(taskId) &&
        this.manager.canForwardInput &&
        record.task.status.state === 'TASK_STATE_INPUT_REQUIRED';
      if (!forward && !this.manager.isAwaitingInput(taskId)) {
        throw A2AErrors.unsupportedOperation(`Task ${taskId} is not waiting for input`);
      }
      const stored = push ? await this.#storePushConfig(record, { ...push, taskId }) : undefined;
      try {
        // close() may have begun during the awaits above: the reply resumes nothing then.
        this.#admitWork(false);
        if (forward) {
          // The handler waiting for this reply runs on another replica: handed over through the store.
          await this.manager.forwardInput(record, p.message);
          return record;
        }
        // Storing the config awaited: another reply may have been taken meanwhile.
        if (!this.manager.isAwaitingInput(taskId)) {
          throw A2AErrors.unsupportedOperation(`Task ${taskId} is not waiting for input`);
        }
        this.manager.deliverInput(taskId, p.message, beforeRun && (() => beforeRun(record)));
      } catch (err) {
        // A refused reply changes nothing, here or forwarded: its webhook goes
        // again. Over the task's memory bound it is refused before a stream
        // attached, and the task still waits for one.
        if (stored) await this.#pushStore?.deletePushConfig(taskId, stored.id as string);
        if (!(err instanceof TaskStoreOverBudgetError)) throw err;
        if (err.neverFits) throw A2AErrors.taskTooLarge(err.scope, err.limitBytes, err.taskBytes as number);
        throw A2AErrors.retainedBytesExhausted(err.scope, err.limitBytes, ctx.caller.toString());
      }
      return record;
    }
    // A skill the message names is checked synchronously: an await only where a router may run.
    const skill = named !== undefined ? this.#namedSkill(named) : await this.#routedSkill(ctx, p);
    const handler = this.#handlers.get(skill) as TaskHandler;
    await this.#authorize(ctx, method, skill);
    // Again after each await that may let close() begin: nothing starts once it has.
    this.#admitWork(false);
    const direct = this.#direct.get(skill);
    if (direct) return { message: await this.#answer(ctx, skill, p.message, direct) };
    // Before the task exists: a refused webhook leaves nothing behind.
    if (push) {
      await this.#authorize(ctx, PUSH_CREATE, skill);
      await this.#checkPushConfig(push);
      this.#admitWork(false);
    }
    const release = this.#takeSlot(ctx.caller);
    let record: TaskRecord;
    let embedded = false;
    try {
      // The caller sees which skill ran, whoever chose it. Built without a
      // spread when there is nothing to copy, and field by field: a spread
      // followed by more keys leaves V8's fast path on Node 20, per call.
      const metadata: v1.Struct =
        p.metadata === undefined
          ? { [SKILL_METADATA_KEY]: skill }
          : { ...p.metadata, [SKILL_METADATA_KEY]: skill };
      const input: { owner: string; tenant?: string; skill: string; message: Message; metadata: v1.Struct } =
        {
          owner: ctx.caller.toString(),
          skill,
          message: p.message,
          metadata,
        };
      if (ctx.tenant !== undefined) input.tenant = ctx.tenant;
      // Synchronous on the embedded store: no await on the hot path.
      const now = this.manager.createNow(input);
      embedded = now !== undefined;
      record = now ?? (await this.manager.create(input));
      if (this.#closing) {
        // Made by a store write close() did not wait for: canceled as the
        // tasks running then were, its handler never run.
        this.manager.cancel(record.task.id);
        this.#admitWork(false);
      }
    } catch (err) {
      this.#freeSlot(release);
      if (err instanceof TaskStoreFullError) {
        // The caller's share of the store's task count: its own tasks hold it, others are unaffected.
        if (err.scope === 'caller') throw A2AErrors.callerTooManyTasks(ctx.caller.toString(), err.limit);
        throw A2AErrors.tooManyTasks(this.#maxTasks);
      }
      if (err instanceof TaskStoreOverBudgetError) {
        if (err.neverFits) throw A2AErrors.taskTooLarge(err.scope, err.limitBytes, err.taskBytes as number);
        throw A2AErrors.retainedBytesExhausted(err.scope, err.limitBytes, ctx.caller.toString());
      }
      throw err;
    }
    if (push) {
      try {
        // Given with the message, the webhook gets the task's events from the first one.
        await this.#storePushConfig(record, { ...push, taskId: record.task.id }, 0);
      } catch (err) {
        // The store refused the webhook (its URL was checked before the task
        // was made), e.g. over the caller's share of task memory, which only
        // the store can tell once the task is in it: the request is refused
        // as a whole, so the task made for it goes again, its handler not run.
        this.#freeSlot(release);
        await this.#unmake(record, embedded);
        throw err;
      }
    }
    try {
      beforeRun?.(record);
    } finally {
      // The task exists now: its handler runs even if opening a stream failed.
      void this.#run(record, handler, p.message, ctx.caller, ctx.headers, release);
    }
    return record;
  }

  /**
   * Takes back a task made for a request then refused, before its handler
   * ran. Ended first, so this replica lets go of it (and it is not left
   * running should the delete fail), then deleted, so neither GetTask nor
   * ListTasks finds it. On the embedded store all of it happens at once; a
   * durable store has the ending written first, as a delete ahead of that
   * write would meet it.
   */
  async #unmake(record: TaskRecord, embedded: boolean): Promise<void> {
    const id = record.task.id;
    this.manager.setStatus(id, 'TASK_STATE_FAILED', agentMessage('Task failed: push config not stored'));
    try {
      if (!embedded) {
        await this.manager.waitForCompletion(id, { terminalOnly: true, timeoutMs: UNMAKE_WAIT_MS });
      }
      await this.manager.store.delete(id);
    } catch (err) {
      this.#log.warn({ err, taskId: id }, 'a2a: task of a refused request not deleted; left FAILED');
    }
  }

  /** Runs a {@link MessageHandler} (authorized already) within the caller's share of running work. */
  async #answer(
    ctx: CallContext,
    skill: string,
    message: Message,
    handler: MessageHandler,
  ): Promise<Message> {
    const release = this.#callerLimits.startTask(ctx.caller);
    const contextId = message.contextId ?? randomUuid();
    try {
      const r = await handler(new MessageContextImpl(ctx, skill, message, contextId));
      const reply = toAgentMessage(r) as Message;
      return { ...reply, contextId, role: 'ROLE_AGENT' };
    } catch (err) {
      if (err instanceof A2AError) throw err;
      this.#logThrown('warn', { skill }, err, 'a2a: message handler failed');
      throw A2AErrors.internal();
    } finally {
      release();
    }
  }

  /**
   * The skill of a new task: the one the message names ({@link #namedSkill}),
   * else ({@link #routedSkill}) the router's choice, else the default skill,
   * else the only one. Both run before the policy check, which is made on the
   * skill returned.
   */
  #namedSkill(named: string): string {
    if (!this.#handlers.has(named)) throw A2AErrors.invalidParams(`unknown skill ${JSON.stringify(named)}`);
    return named;
  }

  /** The skill of a new task whose message names none (see {@link #namedSkill}). */
  async #routedSkill(ctx: CallContext, p: v1.SendMessageParams): Promise<string> {
    const routing = this.#opts.routing;
    if (routing?.route) {
      let chosen: string | undefined;
      try {
        chosen = await routing.route(p.message, {
          caller: ctx.caller,
          headers: ctx.headers,
          ...(ctx.tenant === undefined ? {} : { tenant: ctx.tenant }),
          skills: [...this.#handlers.keys()],
          ...(p.metadata === undefined ? {} : { metadata: p.metadata }),
        });
      } catch (err) {
        if (err instanceof A2AError) throw err;
        this.#logThrown('error', {}, err, 'a2a: skill router failed');
        throw A2AErrors.internal();
      }
      if (chosen !== undefined) {
        if (this.#handlers.has(chosen)) return chosen;
        // The router's mistake, not the caller's: logged, and an internal error.
        this.#log.error({ skill: chosen }, 'a2a: skill router chose a skill that is not served');
        throw A2AErrors.internal();
      }
    }
    const fallback = routing?.defaultSkill;
    if (fallback !== undefined && this.#handlers.has(fallback)) return fallback;
    if (this.#handlers.size === 1) return this.#handlers.keys().next().value as string;
    // Told as the public card tells them: any caller reads this, and an
    // extended-only skill is listed on the extended card alone (its name and
    // its number).
    const listed = this.servedSkills('public').map((s) => s.id);
    const oneOf = listed.length === 0 ? '' : ` (its card lists ${listed.join(', ')})`;
    throw A2AErrors.invalidParams(
      `this agent cannot tell which skill this message is for; name one in message.metadata.skill${oneOf}`,
    );
  }

  /**
   * Runs a task's handler and ends the task with what it returned, or FAILED
   * with what it threw. Never rejects, whatever the handler throws or returns
   * (a value whose getters throw, output no binding can send): a rejection
   * here would be unhandled, the task left WORKING and its caller waiting.
   * The task's slots ({@link #takeSlot}'s `release`) are freed once the
   * handler settled, not when the task ended: until then it runs here all
   * the same. Its bound, `maxTaskMs`, is kept by {@link #runs}.
   */
  async #run(
    record: TaskRecord,
    handler: TaskHandler,
    message: Message,
    caller: SpiffeId,
    headers: CallHeaders,
    release: () => void,
  ): Promise<void> {
    const id = record.task.id;
    const run = new Run(id, record.skill, record.owner, Date.now());
    run.entry = this.#runs.add(run, run.startedAt + this.#maxTaskMs);
    const ctx = new TaskContextImpl(
      this.manager,
      record,
      message,
      caller,
      headers,
      this.#inputTimeout,
      (s) => this.#drained(id, s),
      run,
    );
    try {
      this.manager.setStatus(id, 'TASK_STATE_WORKING');
      const result = await handler(ctx);
      if (!this.manager.isLive(id)) return;
      if (typeof result === 'string') {
        this.manager.addArtifact(id, { artifactId: randomUuid(), parts: [{ text: result }] });
      } else if (result && typeof result === 'object') {
        if ('role' in result && 'messageId' in result) {
          this.manager.setStatus(id, 'TASK_STATE_COMPLETED', handlerOutput(v1.MessageSchema, result));
          return;
        }
        this.manager.addArtifact(
          id,
          handlerOutput(v1.ArtifactSchema, { artifactId: randomUuid(), ...result }),
        );
      }
      if (this.manager.isLive(id)) this.manager.setStatus(id, 'TASK_STATE_COMPLETED');
    } catch (err) {
      this.#handlerFailed(id, record.skill, err);
    } finally {
      this.#runs.delete(run.entry);
      this.#freeSlot(release);
    }
  }

  /**
   * Takes a task slot of `caller`: its own share first (`perCaller`), then
   * the server's (`maxConcurrentTasks`) as the backstop. Call the returned
   * function through {@link #freeSlot} once the task's handler has settled
   * (or the task is not run after all).
   *
   * @throws {A2AError} RESOURCE_EXHAUSTED (retryable), saying how many of the
   *   slots are held by handlers whose task has ended.
   */
  #takeSlot(caller: SpiffeId): () => void {
    let release: () => void;
    try {
      release = this.#callerLimits.startTask(caller);
    } catch (err) {
      throw this.#heldAfterEnd(err, caller.toString());
    }
    if (this.#slots >= this.#maxTasks) {
      release();
      throw this.#heldAfterEnd(A2AErrors.tooManyTasks(this.#maxTasks));
    }
    this.#slots++;
    return release;
  }

  /** Frees the slots {@link #takeSlot} took. */
  #freeSlot(release: () => void): void {
    release();
    this.#slots--;
  }

  /**
   * `err`, a refused task slot, with what an operator needs to read it: how
   * many of the slots counted (of `owner`, else server-wide) are held by
   * handlers still running after their task ended, so that tasks all shown
   * CANCELED or FAILED do not leave the refusal unexplained. A walk over the
   * running handlers, on a refusal only.
   */
  #heldAfterEnd(err: unknown, owner?: string): unknown {
    if (!(err instanceof A2AError)) return err;
    let n = 0;
    for (const run of this.#runs.keys()) {
      if ((owner === undefined || run.owner === owner) && !this.manager.isLive(run.id)) n++;
    }
    if (n === 0) return err;
    const held =
      n === 1
        ? '1 of these slots is held by a task handler still running after its task ended'
        : `${n} of these slots are held by task handlers still running after their tasks ended`;
    return new A2AError(err.jsonRpcCode, `${err.message}; ${held}`, { reason: err.code, data: err.data });
  }

  /**
   * Task `id` was canceled here: its handler, if it goes on, has
   * {@link LET_GO_MS} to return before it is logged as still running.
   * Found by a walk over the running handlers, on a cancel only (a map by
   * task id would cost every task an entry).
   */
  #taskEnded(id: string): void {
    for (const run of this.#runs.keys()) {
      if (run.id !== id) continue;
      if (run.phase === RUN_BOUND) this.#rearm(run, RUN_ENDED, Date.now() + this.#letGoMs);
      return;
    }
  }

  /** Puts `run` back on the deadlines in `phase`, due at `at` (`Infinity`: kept, never due). */
  #rearm(run: Run, phase: RunPhase, at: number): void {
    this.#runs.delete(run.entry);
    run.phase = phase;
    run.entry = this.#runs.add(run, at);
  }

  /**
   * A running handler's deadline passed: at its bound (`maxTaskMs`), its
   * task, if still live, ends FAILED and its signal aborts, and it is given
   * {@link LET_GO_MS} to return; once its task has ended and that time has
   * passed, it is logged as still running (once), and stays counted until
   * it returns. Never throws (called by {@link Deadlines}).
   */
  #runExpired(run: Run): void {
    const id = run.id;
    if (run.phase === RUN_BOUND && this.manager.isLive(id)) {
      const ms = this.#maxTaskMs;
      const reason = new WeaveError(
        'TASK_TIME_LIMIT',
        `task ${id} ran longer than limits.maxTaskMs (${ms} ms)`,
      );
      run.stopped = reason;
      // Ended first, so that the status is this one whatever the handler
      // does when its signal aborts; the text names no internals.
      const text = `Task failed: it ran longer than this agent allows a task (${ms} ms)`;
      try {
        // A pending requestInput rejects (else the handler would wait on it for ever).
        if (this.manager.isAwaitingInput(id)) this.manager.failInput(id, text);
        else this.manager.setStatus(id, 'TASK_STATE_FAILED', agentMessage(text));
      } catch (err) {
        this.#logThrown('error', { taskId: id }, err, 'a2a: task not ended FAILED');
      }
      run.abort(reason);
      const extra = this.#overranLines.take();
      if (extra) {
        this.#log.warn(
          { taskId: id, skill: run.skill, maxTaskMs: ms, ...extra },
          'a2a: task ran longer than limits.maxTaskMs; failed',
        );
      }
      this.#rearm(run, RUN_ENDED, Date.now() + this.#letGoMs);
      return;
    }
    // Its task ended a while ago (or, at the bound, some time before) and the handler goes on.
    const extra = this.#lingeringLines.take();
    if (extra) {
      this.#log.warn(
        { taskId: id, skill: run.skill, runningMs: Date.now() - run.startedAt, ...extra },
        'a2a: task handler still running after its task ended',
      );
    }
    this.#rearm(run, RUN_LOGGED, Infinity);
  }

  /** Ends live task `id` FAILED after its handler threw `err` (or its output was refused). Never throws. */
  #handlerFailed(id: string, skill: string, err: unknown): void {
    if (!this.manager.isLive(id)) return;
    this.#logThrown('warn', { taskId: id, skill }, err, 'a2a: task handler failed');
    try {
      this.manager.setStatus(id, 'TASK_STATE_FAILED', agentMessage(failureText(err)));
    } catch (e) {
      this.#logThrown('error', { taskId: id }, e, 'a2a: task not ended FAILED');
    }
  }

  /**
   * Logs a value application code threw, as {@link loggableError} reads it:
   * bounded (a 10 MB message was logged whole, twice) and never throwing on a
   * value whose getters throw (its `message`, `stack`, `code`). Never throws.
   */
  #logThrown(level: 'warn' | 'error', fields: object, err: unknown, msg: string): void {
    try {
      this.#log[level]({ ...fields, err: loggableError(err) }, msg);
    } catch {
      // A logger that throws on a plain object: nothing left to tell it.
    }
  }

  /**
   * A task claimed from a replica that died. A re-runnable skill's task runs
   * again here from its last user message (its log goes on: subscribers on
   * any replica see WORKING again, then the new events); any other ends
   * FAILED with the reason, and its push receivers are told.
   */
  async #orphan(stored: TaskRecord): Promise<void> {
    const id = stored.task.id;
    const handler = this.#handlers.get(stored.skill);
    const caller = SpiffeId.tryParse(stored.owner);
    const message = [...(stored.task.history ?? [])].reverse().find((m) => m.role === 'ROLE_USER');
    let reason = ORPHAN_REASON;
    if (handler && caller && message && this.#rerunnable.has(stored.skill)) {
      // A re-run is a task started here: it counts against the caller's share
      // and the server's limit as a new one would, and is not run above them.
      let release: (() => void) | undefined;
      try {
        release = this.#takeSlot(caller);
      } catch (err) {
        reason = `${ORPHAN_REASON_LIMITED}: ${(err as Error).message}`;
      }
      if (release) {
        this.#log.warn({ taskId: id, skill: stored.skill }, 'a2a: re-running a task whose replica died');
        const record = await this.manager.adopt(stored);
        this.#watchPush(record, record.seq);
        void this.#run(record, handler, message, caller, {}, release);
        return;
      }
    }
    this.#log.warn({ taskId: id, skill: stored.skill, reason }, 'a2a: failing a task whose replica died');
    const ended = await this.manager.failStored(id, reason);
    const send = this.#opts.push?.send;
    const event = ended?.event;
    if (!event || !send || !this.#pushStore) return;
    for (const c of await this.#pushStore.listPushConfigs(id)) {
      await send(c, event.event).catch((err: unknown) =>
        this.#log.warn({ err, taskId: id, configId: c.id }, 'a2a: push notification failed'),
      );
    }
  }

  /**
   * Opens a stream on a live task. With `afterSeq`, replays the kept events
   * after it first; `sendSnapshot` starts with the current Task. The stream
   * ends after the first event `endsAt` accepts. Each Task event carries at
   * most `historyLength` messages (see {@link answeredEvent}).
   */
  #openStream(
    ctx: CallContext,
    record: TaskRecord,
    afterSeq: number | undefined,
    sendSnapshot: boolean,
    endsAt: (e: StreamResponse) => boolean,
    historyLength?: number,
  ): TaskEventStream {
    const id = record.task.id;
    // The stream's close hook needs the subscription, which needs the stream's listener.
    const held: { sub?: ReturnType<TaskManager['subscribe']>; stop?: () => void; leave?: () => void } = {};
    const stream = new TaskEventStream(() => {
      held.sub?.unsubscribe();
      held.stop?.();
      held.leave?.();
    });
    held.leave = this.#addSubscriber(id, stream);
    const listener = (e: StoredEvent) => {
      stream.push({ event: answeredEvent(e.event, historyLength), seq: e.seq });
      if (endsAt(e.event)) stream.end();
    };
    // This replica lost the task (its lease expired): the stream goes on from
    // the store, where the replica that takes the task over writes its events.
    const carryOn = (seq: number) => {
      if (stream.closed) return;
      this.manager
        .follow(id, seq, listener, () => stream.end())
        .then(
          (stop) => {
            held.stop = stop;
            if (stream.closed) stop();
          },
          () => stream.close(),
        );
    };
    const sub = this.manager.subscribe(id, listener, afterSeq, carryOn);
    held.sub = sub;
    ctx.signal?.addEventListener('abort', () => stream.close(), { once: true });
    if (!sub) {
      stream.end();
      return stream;
    }
    if (sendSnapshot || sub.backlog === undefined) {
      // The task as the subscription sees it: with a durable store, as written.
      const t = answered(sub.record.task, historyLength);
      stream.push({ event: { task: t }, seq: sub.record.seq });
      // A finished task's stream ends here. One waiting for input goes on: a
      // subscriber sees the answer to the input request and what follows, and
      // a resumed task's stream gets the reply that wakes it right after.
      if (isTerminal(t.status.state)) stream.end();
    } else {
      for (const e of sub.backlog) {
        stream.push({ event: answeredEvent(e.event, historyLength), seq: e.seq });
        if (endsAt(e.event)) {
          stream.end();
          break;
        }
      }
    }
    return stream;
  }

  /** Adds a stream of task `id` (refused beyond the limit); the result takes it out. */
  #addSubscriber(id: string, stream: TaskEventStream): () => void {
    const streams = this.#subscribers.get(id) ?? new Set<TaskEventStream>();
    if (streams.size >= this.#maxSubs) {
      throw A2AErrors.unsupportedOperation(`Task ${id} already has ${streams.size} subscribers`);
    }
    streams.add(stream);
    this.#subscribers.set(id, streams);
    return () => {
      streams.delete(stream);
      if (streams.size === 0 && this.#subscribers.get(id) === streams) this.#subscribers.delete(id);
    };
  }

  /** `ctx.drained()` of task `id`: see {@link TaskContext.drained}. */
  #drained(id: string, signal: AbortSignal): Promise<void> {
    let behind: Array<Promise<void>> | undefined;
    for (const s of this.#subscribers.get(id) ?? NO_STREAMS) {
      const w = s.caughtUp();
      if (w) (behind ??= []).push(w);
    }
    if (behind === undefined || signal.aborted) return CAUGHT_UP;
    const all = Promise.all(behind);
    return new Promise<void>((resolve) => {
      const done = () => {
        signal.removeEventListener('abort', done);
        resolve();
      };
      signal.addEventListener('abort', done, { once: true });
      void all.then(done);
    });
  }

  /**
   * A stream on a task that runs on another replica: the task as stored (or,
   * with `afterSeq`, the events after it), then every event as the store's
   * notices announce it, in log order, until the task ends. Each Task event
   * carries at most `historyLength` messages, as on the running replica.
   */
  async #followStream(
    ctx: CallContext,
    record: TaskRecord,
    afterSeq: number | undefined,
    endsAt: (e: StreamResponse) => boolean = endsSubscription,
    historyLength?: number,
  ): Promise<TaskEventStream> {
    const id = record.task.id;
    const held: { stop?: () => void; leave?: () => void } = {};
    const stream = new TaskEventStream(() => {
      held.stop?.();
      held.leave?.();
    });
    held.leave = this.#addSubscriber(id, stream);
    // Not terminal (the caller checked): the stream goes on to the end, as on the running replica.
    if (afterSeq === undefined) {
      stream.push({ event: { task: answered(record.task, historyLength) }, seq: record.seq });
    }
    try {
      held.stop = await this.manager.follow(
        id,
        afterSeq ?? record.seq,
        (e) => {
          stream.push({ event: answeredEvent(e.event, historyLength), seq: e.seq });
          if (endsAt(e.event)) stream.end();
        },
        () => stream.end(),
      );
    } catch (err) {
      stream.close();
      throw err;
    }
    if (stream.closed) held.stop();
    ctx.signal?.addEventListener('abort', () => stream.close(), { once: true });
    return stream;
  }

  // ---- push notification configs -----------------------------------------------------

  #pushOn(): void {
    if (this.#opts.push?.enabled !== true) throw A2AErrors.pushNotSupported();
  }

  /**
   * What a push config must pass before anything is changed for it: somewhere
   * to keep it, and the URL guard (`push.checkUrl` or the sender's). Its
   * strings were bounded by the request schema already.
   */
  async #checkPushConfig(c: Pick<TaskPushNotificationConfig, 'url'>): Promise<void> {
    // Given with a SendMessage as with CreateTaskPushNotificationConfig: an
    // agent that sends no push notifications keeps no config (-32003).
    this.#pushOn();
    if (this.#pushStore === undefined) throw A2AErrors.pushNotSupported();
    const push = this.#opts.push;
    const checkUrl =
      push?.checkUrl ??
      (push?.send as { checkUrl?: (url: string) => Promise<unknown> } | undefined)?.checkUrl;
    if (checkUrl) {
      try {
        await checkUrl(c.url);
      } catch (err) {
        throw A2AErrors.invalidParams(`push notification URL refused: ${(err as Error).message}`);
      }
    }
  }

  /** Keeps a config that passed {@link #checkPushConfig} and starts pushing the task's events. */
  async #storePushConfig(
    record: TaskRecord,
    c: TaskPushNotificationConfig,
    fromSeq?: number,
  ): Promise<TaskPushNotificationConfig> {
    const store = this.#pushStore as PushConfigStore;
    const stored: TaskPushNotificationConfig = { ...c, taskId: record.task.id, id: c.id || randomUuid() };
    const list = await store.listPushConfigs(record.task.id);
    if (!list.some((x) => x.id === stored.id) && list.length >= 16) {
      throw A2AErrors.invalidParams('at most 16 push configs per task');
    }
    try {
      await store.setPushConfig(stored);
    } catch (err) {
      // The embedded store counts configs in the owner's share, as task content.
      if (err instanceof TaskStoreOverBudgetError) {
        if (err.neverFits) throw A2AErrors.taskTooLarge(err.scope, err.limitBytes, err.taskBytes as number);
        throw A2AErrors.retainedBytesExhausted(err.scope, err.limitBytes, record.owner);
      }
      throw err;
    }
    this.#watchPush(record, fromSeq);
    return stored;
  }

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
                this.#log.warn({ err, taskId: id, configId: c.id }, 'a2a: push notification failed'),
              ),
            ),
          ),
        )
        .then(
          () => undefined,
          (err: unknown) => this.#log.warn({ err, taskId: id }, 'a2a: push configs could not be read'),
        );
      if (isTerminal(rec.task.status.state)) this.#pushWatched.delete(id);
    };
    const sub = this.manager.subscribe(id, deliver, afterSeq);
    if (!sub) return;
    this.#pushWatched.add(id);
    for (const e of sub.backlog ?? []) deliver(e, sub.record);
  }

  // ---- authorization ------------------------------------------------------------------

  /**
   * The caller's own task in the request's tenant, or TaskNotFound (another
   * caller's task, or a task of another tenant, is indistinguishable from none).
   * `ctx` has been through {@link scoped}.
   */
  async #ownedTask(ctx: CallContext, id: string): Promise<TaskRecord> {
    const owner = ctx.caller.toString();
    // Scoped in the read itself, so that another caller's task costs what a
    // missing one does (not read from memory sooner, not assembled by the store).
    const record = await this.manager.get(
      id,
      ctx.tenant === undefined ? { owner } : { owner, tenant: ctx.tenant },
    );
    // manager.get checks the scope of what any store returns (inTaskScope).
    if (!record) throw A2AErrors.taskNotFound(id);
    return record;
  }

  /**
   * Passes when the caller may call `method` on at least one served skill
   * (each asked in declaration order until one allows, each decision audited);
   * else logs one line for the call (not one per skill: a caller's one
   * request would write as many lines as the agent serves skills) and throws
   * the first denial. With no skill served, asks about
   * {@link LIST_TASKS_ACTION}, so the call is still decided and audited.
   */
  async #authorizeAny(ctx: CallContext, method: string): Promise<void> {
    const skills = this.servedSkills('extended').map((s) => s.id);
    if (skills.length === 0) skills.push(LIST_TASKS_ACTION);
    let first: AuthzDecision | undefined;
    for (const skill of skills) {
      const decision = await this.#decide(ctx, method, skill);
      if (decision.allowed === true) return;
      first ??= decision;
    }
    throw this.#denied(ctx, method, skills[0] as string, first as AuthzDecision, skills.length);
  }

  async #authorize(ctx: CallContext, method: string, action: string, taskId?: string): Promise<void> {
    const decision = await this.#decide(ctx, method, action, taskId);
    if (decision.allowed !== true) throw this.#denied(ctx, method, action, decision);
  }

  /** The enforcer's decision on `action`; one that throws is a deny (enforcers must fail closed). */
  async #decide(ctx: CallContext, method: string, action: string, taskId?: string): Promise<AuthzDecision> {
    let decision: AuthzDecision;
    const context: Record<string, string> = { method, binding: ctx.binding };
    if (taskId !== undefined) context.taskId = taskId;
    // The policy may decide per tenant (`input.context.tenant` for OPA); the audit record names it.
    if (ctx.tenant !== undefined) context.tenant = ctx.tenant;
    try {
      decision = await this.#opts.enforcer.checkInbound({
        caller: ctx.caller,
        callee: this.#opts.selfId,
        action,
        context,
      });
    } catch (err) {
      // Enforcers must fail closed; one that throws is treated as a deny.
      decision = { allowed: false, reason: `enforcer error: ${(err as Error)?.message}`, auditId: '' };
    }
    return decision;
  }

  /** Logs a denial (`skillsDenied`: how many skills were asked, when more than one) and returns its error. */
  #denied(
    ctx: CallContext,
    method: string,
    action: string,
    decision: AuthzDecision,
    skillsDenied?: number,
  ): A2AError {
    this.#log.warn(
      {
        auditId: decision.auditId,
        caller: ctx.caller.toString(),
        tenant: ctx.tenant,
        action,
        method,
        binding: ctx.binding,
        reason: decision.reason,
        ...(skillsDenied !== undefined && skillsDenied > 1 ? { skillsDenied } : {}),
      },
      'a2a: call denied by policy',
    );
    const err = A2AErrors.permissionDenied(
      `${ctx.caller.toString()} may not invoke ${action}`,
      decision.auditId || undefined,
    );
    this.#deniedLogged.add(err);
    return err;
  }
}

// ---- the handler context -------------------------------------------------------------

/**
 * What a {@link MessageHandler} is given. Its signal is looked up when the
 * handler first reads it, not before: the call's own (the gRPC binding makes
 * that one when first read, too), else one of its own (a JSON-RPC or
 * HTTP+JSON unary call carries none). Most handlers never read it, and on
 * Node 20 every AbortController survives the young-generation collections (it
 * is promoted, and freed only by a full collection) whether anyone keeps it
 * or not.
 */
class MessageContextImpl implements MessageContext {
  readonly caller: SpiffeId;
  readonly headers: CallHeaders;
  declare readonly tenant?: string;
  readonly #call: CallContext;
  #signal: AbortSignal | undefined;

  constructor(
    call: CallContext,
    readonly skill: string,
    readonly message: Message,
    readonly contextId: string,
  ) {
    this.#call = call;
    this.caller = call.caller;
    this.headers = call.headers;
    if (call.tenant !== undefined) (this as { tenant?: string }).tenant = call.tenant;
  }

  get signal(): AbortSignal {
    return (this.#signal ??= this.#call.signal ?? unboundedSignal());
  }
}

/**
 * A signal of the handler's own. Setting no listener bound: a handler passes
 * it to each call it makes, one listener each while the call runs, and more
 * than Node's default of 10 at once is no leak (Node would warn of one).
 */
function unboundedSignal(): AbortSignal {
  const signal = new AbortController().signal;
  setMaxListeners(0, signal);
  return signal;
}

/** Where a {@link Run} is on its deadline: before its bound, given time to return after its task ended, logged. */
const RUN_BOUND = 0;
const RUN_ENDED = 1;
const RUN_LOGGED = 2;
type RunPhase = typeof RUN_BOUND | typeof RUN_ENDED | typeof RUN_LOGGED;

/**
 * A task handler running here, from its start until it settles: what its
 * bound (`maxTaskMs`) and its slot need, and the signal it is given. One
 * small object per task and no closure: the deadline is an entry of the
 * handler's {@link Deadlines}, and the signal is made only for a handler
 * that reads it.
 */
class Run {
  /** Its current entry in the handler's deadlines (it stays there, `Infinity` once logged, until it settles). */
  entry!: Deadline<Run>;
  phase: RunPhase = RUN_BOUND;
  /** Why this server stopped the task (its bound passed, or it was handed over), once it did. */
  stopped: WeaveError | undefined;
  #abort: AbortController | undefined;

  constructor(
    readonly id: string,
    readonly skill: string,
    /** Whose task it is: `TaskRecord.owner`, as the per-caller limit counts it. */
    readonly owner: string,
    /** Epoch ms. */
    readonly startedAt: number,
  ) {}

  /**
   * The handler's signal: aborted as the task's own (a cancel, the server
   * closing, the task given up) with its reason, and when its bound passes.
   * Its own controller, since the task manager's cannot be aborted from
   * here; the task's signal reaches it through {@link handleEvent}.
   */
  signal(m: TaskManager): AbortSignal {
    if (this.stopped !== undefined) return AbortSignal.abort(this.stopped);
    const task = m.signalOf(this.id);
    // A finished task's handler sees an aborted signal.
    if (task === undefined) return AbortSignal.abort();
    if (task.aborted) return task;
    this.#abort = new AbortController();
    // The handler's own calls listen on it, one each while they run: a
    // handler fanning out to more than Node's default of 10 at once is no
    // leak, and Node's MaxListenersExceededWarning would read as one.
    setMaxListeners(0, this.#abort.signal);
    task.addEventListener('abort', this, { once: true });
    return this.#abort.signal;
  }

  /** The task's signal aborted: so does the handler's, with its reason. */
  handleEvent(event: Event): void {
    this.#abort?.abort((event.target as AbortSignal).reason);
  }

  /** Aborts the handler's signal, if it has one, with `reason`. */
  abort(reason: unknown): void {
    this.#abort?.abort(reason);
  }
}

class TaskContextImpl implements TaskContext {
  readonly taskId: string;
  readonly contextId: string;
  readonly skill: string;
  readonly tenant?: string;
  readonly #m: TaskManager;
  readonly #record: TaskRecord;
  readonly #timeout: number;
  readonly #drain: (signal: AbortSignal) => Promise<void>;
  readonly #run: Run;
  #signal: AbortSignal | undefined;

  constructor(
    manager: TaskManager,
    record: TaskRecord,
    readonly message: Message,
    readonly caller: SpiffeId,
    readonly headers: CallHeaders,
    inputTimeoutMs: number,
    drain: (signal: AbortSignal) => Promise<void>,
    run: Run,
  ) {
    this.#run = run;
    this.#drain = drain;
    this.#m = manager;
    this.#record = record;
    this.taskId = record.task.id;
    this.contextId = record.task.contextId;
    this.skill = record.skill;
    if (record.tenant !== undefined) this.tenant = record.tenant;
    this.#timeout = inputTimeoutMs;
  }

  get task(): Task {
    return snapshot(this.#record.task);
  }

  get signal(): AbortSignal {
    // Kept once handed out: the task given up later, a new one would lose
    // the reason it aborted with (TaskLeaseLostError, TASK_TIME_LIMIT).
    return (this.#signal ??= this.#run.signal(this.#m));
  }

  publishStatus(state: TaskState, message?: Message | string): void {
    // A state no binding can send (a JavaScript caller's typo) would reach every subscriber as it is.
    if (!PUBLISHABLE_STATES.has(state)) {
      throw A2AErrors.invalidAgentResponse(
        `${JSON.stringify(String(state)).slice(0, 64)} is not a task state`,
      );
    }
    this.#m.setStatus(this.taskId, state, toAgentMessage(message));
  }

  publishArtifact(artifact: ArtifactInput, options?: { append?: boolean; lastChunk?: boolean }): void {
    const a = handlerOutput(v1.ArtifactSchema, { artifactId: randomUuid(), ...artifact });
    this.#m.addArtifact(this.taskId, a, options);
  }

  publishMessage(message: Message | string): void {
    this.#m.setStatus(this.taskId, 'TASK_STATE_WORKING', toAgentMessage(message));
  }

  drained(): Promise<void> {
    return this.#drain(this.signal);
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

// ---- helpers ---------------------------------------------------------------------------

/** Characters of a refused request's error message its log line keeps ({@link cutText}). */
const REFUSAL_REASON_CHARS = 256;

/** The line of a task's write that failed ({@link A2ARequestHandler.#storeWriteFailed}). */
const STORE_WRITE_FAILED = 'a2a: task store write failed';
/** The line of a task's writes that land again after the store was away. */
const STORE_WRITE_AGAIN = 'a2a: task store write works again';

/**
 * Lines of requests refused because the task store cannot be reached: at
 * most 10 a minute, as other refusal lines. One count for the process, not
 * per handler: {@link asA2AError} is called by the bindings with each
 * request's own logger, and every request may be refused so while a
 * database is away.
 */
const storeAwayLines = new LogRate();

/** What each chore of the task manager is called in its log lines. */
const CHORE_NAMES: Readonly<Record<StoreChore, string>> = {
  lease: 'lease renewal',
  sweep: 'task store sweep',
  retire: 'lease retire',
};

/**
 * Whether `log` writes lines of `level`: pino's (and Fastify's) logger says
 * so; any other is taken to write them all.
 */
function levelEnabled(log: HandlerLogger, level: string): boolean {
  const enabled = (log as { isLevelEnabled?: unknown }).isLevelEnabled;
  return typeof enabled !== 'function' || (enabled as (l: string) => boolean).call(log, level) !== false;
}

/** {@link loggableError} without the stack and the cause's: what an unreachable store said is the news. */
function withoutStack(err: unknown): LoggedError {
  const out = loggableError(err) as Record<string, unknown>;
  delete out.stack;
  delete out.cause;
  return out as LoggedError;
}

/** Why work is refused from the moment the server closes (and what a closed replica answers). */
const SHUTTING_DOWN = 'the agent is shutting down; try another instance';

/**
 * What a binding sends for a failure: an {@link A2AError} as it is; an
 * unreachable task store as a retryable UNAVAILABLE (nothing was
 * acknowledged, the caller may send again), one closed with this replica as
 * the draining server refuses new work; anything else as -32603 with the
 * details only in the log.
 */
export function asA2AError(err: unknown, log: HandlerLogger): A2AError {
  if (err instanceof A2AError) return err;
  if (err instanceof TaskStoreClosedError) return A2AErrors.unavailable(SHUTTING_DOWN);
  if (err instanceof TaskStoreUnavailableError) {
    // What the store said, without the stack (it only says where the failure
    // was noticed) and without its cause, whose message the store's already
    // carries: pino's serializer appended it again ("ECONNREFUSED …: ECONNREFUSED …").
    const extra = storeAwayLines.take();
    if (extra) log.warn({ err: withoutStack(err), ...extra }, 'a2a: task store unavailable');
    return A2AErrors.unavailable('the task store cannot be reached');
  }
  if (err instanceof TaskStoreRejectedError) {
    // What the request carries can never be kept (a NUL in a context id, for
    // PostgreSQL): the caller's to change, and sending it again cannot help.
    // The database's own words (SQLSTATE, constraint names) stay in the log.
    log.warn({ err }, 'a2a: task store refused the request');
    return A2AErrors.invalidParams('the task store cannot keep what this request carries');
  }
  log.error({ err }, 'a2a: internal error');
  return A2AErrors.internal();
}

/**
 * Refuses a request whose `A2A-Version` the binding does not speak (-32009,
 * VersionNotSupported): the HTTP+JSON and gRPC bindings serve 1.0 only, so
 * `1`, `1.0` and `1.0.x` pass (§3.6: a patch number is not considered) and
 * `1.1` does not. No header (or an empty one) is accepted, as the official
 * SDKs do; the JSON-RPC binding negotiates 1.0 or 0.3 itself.
 */
export function assertV1Version(headers: CallHeaders): void {
  const h = headers['a2a-version'];
  const v = (Array.isArray(h) ? h[0] : h)?.trim() ?? '';
  if (v !== '' && !/^1(\.0(\.\d+)?)?$/.test(v)) throw A2AErrors.versionNotSupported(v.slice(0, 32), '1.0');
}

/**
 * A task as a method answers it, with at most `historyLength` messages of
 * its history. For 0 the field is left out (§3.2.4: "the `history` field
 * SHOULD be omitted"), not sent empty.
 */
function answered(task: Task, historyLength: number | undefined, withArtifacts = true): Task {
  return snapshot(task, historyLength, withArtifacts);
}

/**
 * A stream event as a streaming method answers it: a Task event cut as
 * {@link answered} cuts it (the proto: "MUST NOT return more messages than
 * the provided value", on a stream as in a unary answer); status and
 * artifact updates, which carry no history, as they are. Unset, the event
 * itself: the log's object, which nobody changes.
 */
function answeredEvent(event: StreamResponse, historyLength: number | undefined): StreamResponse {
  return historyLength === undefined || !('task' in event)
    ? event
    : { task: answered(event.task, historyLength) };
}

/** Validates params; the first issue becomes a -32602 message. */
export function parse<S extends z.ZodType>(schema: S, params: unknown): z.infer<S> {
  const r = schema.safeParse(params);
  if (r.success) return r.data;
  throw A2AErrors.invalidParams(firstIssue(r.error));
}

/** The first issue of a failed parse, with where it is: what an error names. */
function firstIssue(error: z.ZodError): string {
  const issue = error.issues[0];
  const where = issue && issue.path.length > 0 ? `${issue.path.map(String).join('.')}: ` : '';
  return `${where}${issue?.message ?? 'invalid'}`;
}

/**
 * The call context with the request's tenant settled: the params' `tenant`
 * and the binding's (path prefix, gRPC field) must agree when both are given;
 * an empty one is none. Every method goes through it before it touches a task
 * or asks the policy, so every binding scopes the same way.
 */
function scoped(ctx: CallContext, fromParams: string | undefined): CallContext {
  const given = fromParams === '' ? undefined : fromParams;
  const carried = ctx.tenant === '' ? undefined : ctx.tenant;
  if (given !== undefined && carried !== undefined && given !== carried) {
    throw A2AErrors.invalidParams('tenant: the request names two different tenants');
  }
  const tenant = given ?? carried;
  // An unpaired surrogate too: a task store keeps the tenant as a key (PostgreSQL refused it,
  // or matched U+FFFD in its place), and UTF-8 (gRPC, logs) cannot carry it.
  if (tenant !== undefined && !v1.isTenant(tenant))
    throw A2AErrors.invalidParams(`tenant: ${v1.TENANT_RULE}`);
  if (tenant === ctx.tenant) return ctx;
  const { tenant: _drop, ...rest } = ctx;
  return tenant === undefined ? rest : { ...rest, tenant };
}

/**
 * Validates the params of an A2A v1.0 request: proto field names
 * (`history_length`) read as their JSON names (`historyLength`), as ProtoJSON
 * requires (one object giving both is -32602), then {@link parse}.
 */
export function parseRequest<S extends z.ZodType>(schema: S, params: unknown): z.infer<S> {
  return parse(schema, withJsonNames(params));
}

/**
 * An artifact or message a handler produced, as `schema` has it, refused
 * (-32006, naming the first problem) when it is not one, or when it cannot
 * be stored (see {@link storable}).
 */
function handlerOutput<S extends z.ZodType>(schema: S, value: unknown): z.output<S> {
  const r = schema.safeParse(value);
  if (!r.success) throw A2AErrors.invalidAgentResponse(firstIssue(r.error));
  return storable(r.data);
}

/**
 * What a handler produced, refused (-32006) when no binding can send it as it
 * is: kept with the task, it would break every later reply that carries it
 * (a BigInt made each GetTask of its task fail with -32603), or reach a
 * caller in another form on each binding (a Date was a string on JSON-RPC,
 * `{}` on gRPC; a Map, `{}` on all of them). So: nested no deeper than a
 * request may be (a cycle never ends), and made only of plain objects,
 * arrays, strings, finite numbers, booleans and null. One walk, as the depth check
 * it replaces was.
 */
function storable<T>(value: T): T {
  const bad = unsendable(value);
  if (bad !== undefined) throw A2AErrors.invalidAgentResponse(bad);
  return value;
}

/**
 * The status text of a task whose handler threw `err`: `Task failed`, plus
 * the message of a `WeaveError` (an A2AError or another error of the family,
 * made to be read by a caller), cut to {@link FAILURE_TEXT_CHARS}. Not of any
 * error with a `code`: Node's own errors have one, and their messages name
 * what the caller must not learn (`connect ECONNREFUSED 10.0.0.5:5432`). A
 * value whose getters throw is read as none.
 */
function failureText(err: unknown): string {
  try {
    if (err instanceof WeaveError) {
      const m: unknown = (err as Error).message;
      if (typeof m === 'string') return `Task failed: ${cutText(m, FAILURE_TEXT_CHARS)}`;
    }
  } catch {
    // Its code or message cannot be read: nothing of it goes to the caller.
  }
  return 'Task failed';
}

/** What a handler may publish as a task's status: every state but UNSPECIFIED (no binding has a use for it). */
const PUBLISHABLE_STATES: ReadonlySet<string> = new Set<string>(
  v1.TASK_STATES.filter((s) => s !== 'TASK_STATE_UNSPECIFIED'),
);

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

/**
 * Whether a SubscribeToTask stream ends after this event: a terminal state
 * only (§3.1.6). A multi-turn task's subscriber stays through INPUT_REQUIRED
 * and AUTH_REQUIRED to see the answer and the end.
 */
const endsSubscription: (e: StreamResponse) => boolean = endsTask;

const NO_STREAMS: ReadonlySet<TaskEventStream> = new Set();
/** What `ctx.drained()` answers when nobody is behind: no promise made per call. */
const CAUGHT_UP: Promise<void> = Promise.resolve();

/** Stands in #handlers for a skill answered by a message: never run. */
const NO_TASK: TaskHandler = () => {
  throw A2AErrors.internal();
};

function agentMessage(text: string): Message {
  return { messageId: randomUuid(), role: 'ROLE_AGENT', parts: [{ text }] };
}

function toAgentMessage(m: Message | string | undefined): Message | undefined {
  if (m === undefined) return undefined;
  if (typeof m === 'string') return agentMessage(m);
  return handlerOutput(v1.MessageSchema, m);
}

function redact(c: TaskPushNotificationConfig): TaskPushNotificationConfig {
  // Webhook secrets are write-only: never echoed back.
  const { token: _token, authentication, ...rest } = c;
  return authentication ? { ...rest, authentication: { scheme: authentication.scheme } } : rest;
}

/** What selects the tasks a ListTasks call pages through (its owner aside: the caller). */
interface ListFilter {
  readonly tenant: string | undefined;
  readonly contextId: string | undefined;
  readonly status: TaskState | undefined;
  /** `statusTimestampAfter` in epoch ms: the same instant however its offset was written. */
  readonly updatedAfter: number | undefined;
}

/**
 * A short hash of a ListTasks filter, bound into the page tokens issued
 * under it: a token names a position in one query's order, and used with
 * another filter it silently skipped that query's tasks up to it.
 */
function queryHash(f: ListFilter): string {
  const key = JSON.stringify([
    f.tenant ?? null,
    f.contextId ?? null,
    f.status ?? null,
    f.updatedAfter ?? null,
  ]);
  return createHash('sha256').update(key).digest('base64url').slice(0, 12);
}

/** A position in the list order: the status timestamp and id of the last task listed, and the query's hash. */
function encodePageToken(r: TaskRecord, query: string): string {
  return writeToken({ s: statusTime(r), i: r.task.id, q: query });
}

/**
 * The position a token names, for the query hashed as `query`. A token with
 * no hash (issued by an earlier release, during a rolling upgrade) is taken
 * as it was; one issued for another query is INVALID_PARAMS.
 */
function decodePageToken(token: string, query: string): ListCursor | CreationCursor {
  const v = readToken(token);
  if (typeof v === 'object' && v !== null && !Array.isArray(v)) {
    const { s, i, q } = v as { s?: unknown; i?: unknown; q?: unknown };
    if (typeof s === 'number' && Number.isFinite(s) && typeof i === 'string') {
      if (q !== undefined && q !== query) {
        throw A2AErrors.invalidParams('pageToken was issued for another query');
      }
      return { statusAt: s, id: i };
    }
  }
  // A token of a release that listed by creation: [createdAt, id].
  if (Array.isArray(v) && typeof v[0] === 'number' && typeof v[1] === 'string') {
    return { createdAt: v[0], id: v[1] };
  }
  throw A2AErrors.invalidParams('pageToken is not a token this server issued');
}

/** A page token: `v` as base64url JSON, opaque to the client. */
function writeToken(v: unknown): string {
  return Buffer.from(JSON.stringify(v)).toString('base64url');
}

/** What a page token holds, or undefined when it is not base64url JSON (the callers refuse it). */
function readToken(token: string): unknown {
  try {
    return JSON.parse(Buffer.from(token, 'base64url').toString('utf8')) as unknown;
  } catch {
    return undefined;
  }
}

/** A page token of ListTaskPushNotificationConfigs: the position of the next config in the task's list. */
function encodePushPageToken(taskId: string, offset: number): string {
  return writeToken({ t: taskId, o: offset });
}

/**
 * The position a push-config page token names. One issued for another task,
 * or not by this server, is INVALID_PARAMS; one past the list's end (configs
 * deleted meanwhile) is the end.
 */
function decodePushPageToken(token: string, taskId: string, length: number): number {
  const v = readToken(token);
  const { t, o } = (typeof v === 'object' && v !== null ? v : {}) as { t?: unknown; o?: unknown };
  if (typeof t !== 'string' || typeof o !== 'number' || !Number.isSafeInteger(o) || o < 1) {
    throw A2AErrors.invalidParams('pageToken is not a token this server issued');
  }
  if (t !== taskId) throw A2AErrors.invalidParams('pageToken was issued for another task');
  return Math.min(o, length);
}
