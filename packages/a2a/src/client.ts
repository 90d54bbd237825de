import type { Dispatcher } from 'undici';
import { z } from 'zod';
import { MAX_TIMER_MS, budgetMs, randomUuid } from '@weave/identity';
import { A2AClientError, A2AError, A2AErrorCode } from './errors.js';
import {
  A2AConfigError,
  checkBudget,
  checkOptions,
  countOr0,
  durationMs,
  positiveCount,
  timerMsOr0,
} from './options.js';
import { MAX_JSON_DEPTH, exceedsDepth } from './depth.js';
import { DiscoveryClient, type DiscoveryClientOptions, type DiscoveryStats } from './discovery.js';
import { deadlineExceeded } from './transports/http.js';
import { grpcTransportFactory } from './transports/grpc.js';
import { jsonRpcTransportFactory } from './transports/jsonrpc.js';
import { restTransportFactory } from './transports/rest.js';
import type {
  ClientTransport,
  ClientTransportFactory,
  StreamMethod,
  TransportContext,
  UnaryMethod,
} from './transports/types.js';
import {
  AgentCardSchema,
  ListTasksResultSchema,
  MessageSchema,
  SendMessageResultSchema,
  StreamResponseSchema,
  TaskPushNotificationConfigSchema,
  TaskSchema,
  closesStream,
  isSettled,
  isTerminal,
  type AgentCard,
  type AgentInterface,
  type ListTasksParams,
  type ListTasksResult,
  type Message,
  type Part,
  type SendMessageParams,
  type SendMessageResult,
  type StreamResponse,
  type Task,
  type TaskPushNotificationConfig,
} from './wire/v1.js';
/** A stream event with its SSE event id (Weave servers number events per task). */
export type StreamEvent = StreamResponse & {
  readonly eventId?: string;
  /**
   * Set (`true`) by {@link A2AClient.streamTaskUpdates} on a Task it yields
   * after a resume that could not replay what the stream missed (the server
   * no longer kept those events, or does not replay): the task as it now is —
   * state, artifacts, history — stands for the events in between, which the
   * caller never saw one by one.
   */
  readonly missedEvents?: boolean;
};

const ClientNumbers = z.object({
  cardTtlMs: durationMs.optional(),
  timeoutMs: budgetMs.optional(),
  maxResponseBytes: positiveCount.optional(),
  streamIdleTimeoutMs: timerMsOr0('no limit').optional(),
});

const ResumeNumbers = z.object({
  maxReconnects: countOr0.optional(),
  resumeBackoffMs: timerMsOr0('resume at once').optional(),
});

/** Options of {@link A2AClient}. */
export interface A2AClientOptions {
  /** The transport: a `@weave/transport` SecureChannel or any undici dispatcher. Required. */
  readonly dispatcher: Dispatcher;
  /** Agent card cache TTL in ms. Default 5 minutes. */
  readonly cardTtlMs?: number;
  /** How discovered cards' signatures are checked; see {@link DiscoveryClientOptions.signatures}. */
  readonly cardSignatures?: DiscoveryClientOptions['signatures'];
  /**
   * Time budget of a call in ms, from the method call on: card discovery,
   * connect, send and read of a unary call; for a stream, until it is open.
   * Default 60 s.
   */
  readonly timeoutMs?: number;
  /** Largest response or SSE event accepted, in bytes. Default 4 MiB (the official SDK's cap). */
  readonly maxResponseBytes?: number;
  /**
   * How long an open stream may stay quiet before it is taken as dead, in ms.
   * Default 300 000 (undici's own body timeout); 0: no limit, only the
   * caller's signal ends a quiet stream. Either way the failure is one
   * {@link A2AClient.streamTaskUpdates} resumes like a dropped connection.
   *
   * On the HTTP bindings, quiet means no byte of the stream (no event, no
   * heartbeat) while the client waits for one — a caller that takes its time
   * with each event is not quiet — and the stream fails with `STREAM_IDLE`.
   * Weave servers send a heartbeat every 15 s by default (so do the Python
   * SDK's); a server that sends none and a task that emits nothing for this
   * long look alike, so keep it well above such a task's pauses.
   *
   * A gRPC stream carries nothing while its task is quiet, so there the
   * connection is pinged instead (HTTP/2 PING, every this many ms while a
   * call is open; servers on grpc-go refuse pings closer than 5 minutes by
   * default). A ping unanswered for this long, at most 20 s, drops the
   * connection, which fails its calls as any dropped connection does
   * (`TRANSPORT_FAILED`, gRPC UNAVAILABLE): a dead peer or network ends
   * them, a quiet task does not.
   */
  readonly streamIdleTimeoutMs?: number;
  /** Extra headers (gRPC: metadata) on every call (e.g. `A2A-Extensions`). */
  readonly headers?: Readonly<Record<string, string>>;
  /**
   * The protocol bindings to use, most preferred first (e.g. `['GRPC', 'JSONRPC']`);
   * an agent is called on the first of them its card offers, and bindings not
   * listed are not used. Default: the card's own order (`supportedInterfaces`,
   * first = the agent's preference) among the bindings this client speaks.
   */
  readonly preferredBindings?: readonly string[];
  /** The transports this client can use. Default: JSON-RPC, HTTP+JSON and gRPC. */
  readonly transports?: readonly ClientTransportFactory[];
}

/** Per-call options of unary methods. */
export interface CallOptions {
  /** Aborts the call, at whatever step it is (discovery, connect, send, read). */
  readonly signal?: AbortSignal;
  /** Extra headers of this call only (e.g. `traceparent`, a deadline). */
  readonly headers?: Readonly<Record<string, string>>;
  /** Time budget of this call in ms, discovery included; default the client's `timeoutMs`. */
  readonly timeoutMs?: number;
}

/** Per-call options of streaming methods. */
export interface StreamOptions {
  /** Aborts the stream at any point. */
  readonly signal?: AbortSignal;
  /** Extra headers of this call only (e.g. `traceparent`, a deadline). */
  readonly headers?: Readonly<Record<string, string>>;
  /** Resume after this event id (sent as `Last-Event-ID`). */
  readonly lastEventId?: string;
  /** Time until the stream is open (discovery included), in ms; default the client's `timeoutMs`. */
  readonly timeoutMs?: number;
}

/** Options of {@link A2AClient.streamTaskUpdates}. */
export interface ResumingStreamOptions {
  /** Aborts the stream, a pending resume included. */
  readonly signal?: AbortSignal;
  /** Extra headers of every request of this stream (the resumes too). */
  readonly headers?: Readonly<Record<string, string>>;
  /** Resumes in a row that bring no new event before giving up with `STREAM_BROKEN` (at the break after the last). Default 3. */
  readonly maxReconnects?: number;
  /** First wait before a resume in ms, doubled per consecutive break. Default 100. */
  readonly resumeBackoffMs?: number;
  /** Called before each resume (e.g. to log it): the task, the last event id seen, the attempt and why. */
  readonly onResume?: (resume: {
    readonly taskId: string;
    readonly lastEventId: string | undefined;
    readonly attempt: number;
    readonly error: unknown;
  }) => void;
}

/** A task payload for the conveniences: text, parts, or a JSON value (a data part). */
export type TaskPayload = string | readonly Part[] | Record<string, unknown>;

/** A page of push notification configs. */
export interface PushConfigPage {
  configs: TaskPushNotificationConfig[];
  nextPageToken: string;
}

const PushConfigPageSchema: z.ZodType<PushConfigPage> = z.object({
  configs: z.array(TaskPushNotificationConfigSchema).default([]),
  nextPageToken: z.string().default(''),
});

const DEFAULT_TRANSPORTS: readonly ClientTransportFactory[] = [
  jsonRpcTransportFactory,
  restTransportFactory,
  grpcTransportFactory,
];

/**
 * An A2A v1.0 client. Each method takes the agent's base URL; the agent's
 * card (fetched once, cached) says which protocol bindings it offers, and the
 * client talks to it on the first one both prefer (see
 * {@link A2AClientOptions.preferredBindings}) — JSON-RPC, HTTP+JSON or gRPC,
 * all over the same SPIFFE-verified channel. Protocol errors are thrown as
 * {@link A2AError} carrying the JSON-RPC code, whichever binding carried them.
 */
export class A2AClient {
  readonly discovery: DiscoveryClient;
  readonly #timeout: number;
  readonly #ctx: TransportContext;
  readonly #factories: ReadonlyMap<string, ClientTransportFactory>;
  readonly #preferred: readonly string[] | undefined;
  /** The transport chosen for each card object: the card cache decides freshness, this only skips the choice. */
  readonly #byCard = new WeakMap<AgentCard, ClientTransport>();
  /** Transports by binding, URL and tenant, reused across card refreshes (a gRPC one holds a channel). */
  readonly #transports = new Map<string, ClientTransport>();

  /** @throws {A2AConfigError} when a dispatcher is missing or a number is out of range (see the options); nothing is started. */
  constructor(options: A2AClientOptions) {
    if (!options?.dispatcher) throw new A2AConfigError('A2AClient', ['dispatcher is required']);
    checkOptions('A2AClient', ClientNumbers, options);
    this.#timeout = options.timeoutMs ?? 60_000;
    const idle = options.streamIdleTimeoutMs ?? 300_000;
    this.#ctx = {
      dispatcher: options.dispatcher,
      headers: options.headers ?? {},
      maxResponseBytes: options.maxResponseBytes ?? 4 * 1024 * 1024,
      streamIdleTimeoutMs: idle,
    };
    const factories = new Map<string, ClientTransportFactory>();
    for (const f of options.transports ?? DEFAULT_TRANSPORTS)
      factories.set(f.protocolBinding.toUpperCase(), f);
    this.#factories = factories;
    this.#preferred = options.preferredBindings?.map((b) => b.toUpperCase());
    this.discovery = new DiscoveryClient({
      dispatcher: options.dispatcher,
      ttlMs: options.cardTtlMs,
      ...(options.cardSignatures ? { signatures: options.cardSignatures } : {}),
    });
  }

  /** The agent card at `url`, cached for the TTL; bounded by `timeoutMs` (default the client's) and `signal`. */
  async discoverAgent(
    url: string,
    options: { force?: boolean; signal?: AbortSignal; timeoutMs?: number } = {},
  ): Promise<AgentCard> {
    const timeoutMs = callMs('timeoutMs', options.timeoutMs, this.#timeout);
    return this.discovery.discover(url, { ...options, timeoutMs });
  }

  /** Card cache counters. */
  cacheStats(): DiscoveryStats {
    return this.discovery.stats();
  }

  /**
   * The transport this client uses for the agent at `url` (discovering its
   * card if needed): e.g. `(await client.transportFor(url)).protocolBinding`.
   */
  async transportFor(url: string, options: CallOptions = {}): Promise<ClientTransport> {
    return (
      this.#cachedTransport(url) ??
      this.#discoverTransport(url, options.signal, callMs('timeoutMs', options.timeoutMs, this.#timeout))
    );
  }

  /** SendMessage: starts a task (or replies to one waiting for input). */
  async sendMessage(
    url: string,
    params: SendMessageParams | Message,
    options?: CallOptions,
  ): Promise<SendMessageResult> {
    return this.#call(url, 'SendMessage', toParams(params), SendMessageResultSchema, options);
  }

  /** SendStreamingMessage: the task's events as they happen. */
  sendStreamingMessage(
    url: string,
    params: SendMessageParams | Message,
    options?: StreamOptions,
  ): AsyncGenerator<StreamEvent> {
    return this.#stream(url, 'SendStreamingMessage', toParams(params), options);
  }

  async getTask(url: string, id: string, historyLength?: number, options?: CallOptions): Promise<Task> {
    return this.#call(
      url,
      'GetTask',
      historyLength === undefined ? { id } : { id, historyLength },
      TaskSchema,
      options,
    );
  }

  async listTasks(
    url: string,
    params: Partial<ListTasksParams> = {},
    options?: CallOptions,
  ): Promise<ListTasksResult> {
    return this.#call(url, 'ListTasks', params, ListTasksResultSchema, options);
  }

  async cancelTask(url: string, id: string, options?: CallOptions): Promise<Task> {
    return this.#call(url, 'CancelTask', { id }, TaskSchema, options);
  }

  /** SubscribeToTask; with `lastEventId`, a Weave server replays the events after it first. */
  subscribeToTask(url: string, id: string, options?: StreamOptions): AsyncGenerator<StreamEvent> {
    return this.#stream(url, 'SubscribeToTask', { id }, options);
  }

  async getExtendedAgentCard(url: string, options?: CallOptions): Promise<AgentCard> {
    return this.#call(url, 'GetExtendedAgentCard', {}, AgentCardSchema, options);
  }

  /**
   * CreateTaskPushNotificationConfig: asks the agent to POST the task's
   * updates to `config.url`. Resolves with the stored config (its `id` set by
   * the agent when not given; secrets may come back redacted).
   */
  async createTaskPushNotificationConfig(
    url: string,
    config: TaskPushNotificationConfig,
    options?: CallOptions,
  ): Promise<TaskPushNotificationConfig> {
    return this.#call(
      url,
      'CreateTaskPushNotificationConfig',
      config,
      TaskPushNotificationConfigSchema,
      options,
    );
  }

  /** GetTaskPushNotificationConfig: one push config of a task. */
  async getTaskPushNotificationConfig(
    url: string,
    taskId: string,
    configId: string,
    options?: CallOptions,
  ): Promise<TaskPushNotificationConfig> {
    return this.#call(
      url,
      'GetTaskPushNotificationConfig',
      { taskId, id: configId },
      TaskPushNotificationConfigSchema,
      options,
    );
  }

  /** ListTaskPushNotificationConfigs: the push configs of a task, a page at a time. */
  async listTaskPushNotificationConfigs(
    url: string,
    taskId: string,
    page: { pageSize?: number; pageToken?: string } = {},
    options?: CallOptions,
  ): Promise<PushConfigPage> {
    return this.#call(
      url,
      'ListTaskPushNotificationConfigs',
      { ...page, taskId },
      PushConfigPageSchema,
      options,
    );
  }

  /** DeleteTaskPushNotificationConfig: removes a push config (deleting an absent one succeeds). */
  async deleteTaskPushNotificationConfig(
    url: string,
    taskId: string,
    configId: string,
    options?: CallOptions,
  ): Promise<void> {
    await this.#call(url, 'DeleteTaskPushNotificationConfig', { taskId, id: configId }, EmptySchema, options);
  }

  /** Closes the transports this client opened (gRPC channels); the dispatcher is the caller's to close. */
  async close(): Promise<void> {
    const all = [...this.#transports.values()];
    this.#transports.clear();
    await Promise.all(all.map((t) => t.close().catch(() => undefined)));
  }

  /**
   * Polls GetTask until the task is terminal (or, unless `terminalOnly`,
   * waits for input). Gives up with `POLL_TIMEOUT` after `timeoutMs`.
   */
  async pollUntilComplete(
    url: string,
    id: string,
    options: { intervalMs?: number; timeoutMs?: number; signal?: AbortSignal; terminalOnly?: boolean } = {},
  ): Promise<Task> {
    const interval = callMs('intervalMs', options.intervalMs, 500);
    const deadline = Date.now() + callMs('timeoutMs', options.timeoutMs, 300_000);
    for (;;) {
      const task = await this.getTask(url, id, undefined, { signal: options.signal });
      const s = task.status.state;
      if (options.terminalOnly ? isTerminal(s) : isSettled(s)) return task;
      if (Date.now() + interval > deadline) {
        throw new A2AClientError('POLL_TIMEOUT', `task ${id} did not finish in time (state ${s})`);
      }
      await sleep(interval, options.signal);
    }
  }

  /**
   * Runs `skill` on the agent with `payload` and returns the task once it
   * settles (terminal or waiting for input).
   */
  async sendTask(
    url: string,
    skill: string,
    payload: TaskPayload,
    options: CallOptions & { contextId?: string } = {},
  ): Promise<Task> {
    const r = await this.sendMessage(
      url,
      { message: buildMessage(skill, payload, options.contextId) },
      options,
    );
    if (!('task' in r)) {
      throw new A2AClientError('UNEXPECTED_RESPONSE', 'the agent answered with a message, not a task');
    }
    return r.task;
  }

  /**
   * Sends a message and yields its stream's events, resuming a broken stream
   * by itself: if it breaks before the task settles — the connection drops,
   * it goes quiet for longer than `streamIdleTimeoutMs`, it ends early, or
   * the server cut a slow reader off (UNAVAILABLE) — it
   * waits (`resumeBackoffMs`, doubled per consecutive break) and resubscribes
   * with the last event id, skipping any replayed event it already yielded,
   * so no event is lost or repeated against a Weave server while it keeps
   * the events missed (`maxEventsPerTask`). When it no longer does, the
   * resumed stream starts with the task as it now is, and when the task has
   * finished meanwhile (the resubscribe is refused: UnsupportedOperation) the
   * task is fetched (GetTask) and yielded as the last event: either way that
   * Task carries `missedEvents: true` — the caller has the final state and
   * every artifact, and knows it did not see each event in between. After
   * `maxReconnects` resumes in a row that bring no new event, the next break
   * fails it with `STREAM_BROKEN`; an A2A error (the
   * server's answer) or an aborted `signal` ends it at once, and a stream
   * without a task id is never resumed (sending again could run the task twice).
   *
   * Either `params` (a whole SendMessage request) or `skill` and `payload`
   * (a message built with {@link buildMessage}).
   */
  streamTaskUpdates(
    url: string,
    params: SendMessageParams,
    options?: ResumingStreamOptions,
  ): AsyncGenerator<StreamEvent>;
  streamTaskUpdates(
    url: string,
    skill: string,
    payload: TaskPayload,
    options?: ResumingStreamOptions & { readonly contextId?: string },
  ): AsyncGenerator<StreamEvent>;
  async *streamTaskUpdates(
    url: string,
    first: SendMessageParams | string,
    second?: TaskPayload | ResumingStreamOptions,
    third?: ResumingStreamOptions & { readonly contextId?: string },
  ): AsyncGenerator<StreamEvent> {
    const options: ResumingStreamOptions =
      (typeof first === 'string' ? third : (second as ResumingStreamOptions | undefined)) ?? {};
    const params: SendMessageParams =
      typeof first === 'string'
        ? { message: buildMessage(first, second as TaskPayload, third?.contextId) }
        : first;
    const { signal, headers } = options;
    checkOptions('streamTaskUpdates', ResumeNumbers, options);
    const budget = options.maxReconnects ?? 3;
    const backoff = options.resumeBackoffMs ?? 100;
    let taskId: string | undefined;
    let lastId: string | undefined;
    // Consecutive breaks without a new event: a resumed stream that moves on earns a fresh budget.
    let breaks = 0;
    let source: AsyncGenerator<StreamEvent> = this.sendStreamingMessage(url, params, { signal, headers });
    // The current source is a resubscribe that has not delivered a new event yet.
    let resumed = false;
    // The last Task without an event id yielded after a resume, as JSON: the
    // same snapshot again is no news (a server could send it on every resume forever).
    let lastSnapshot: string | undefined;
    for (;;) {
      let failure: unknown;
      try {
        for await (const e of source) {
          // A replay starts after Last-Event-ID; anything at or before it was
          // yielded already, a Task included (one numbered at or before the
          // last event is the state those events built): neither yielded
          // again nor progress, or a server re-sending it on every resume
          // would be resumed forever.
          if (e.eventId !== undefined && lastId !== undefined && !isAfter(e.eventId, lastId)) continue;
          if (resumed && 'task' in e && lastId !== undefined) {
            resumed = false;
            // A resume that starts with the Task after the last event seen
            // (rather than replaying from it): the events between are gone.
            if (e.eventId === undefined) {
              const json = JSON.stringify(e.task);
              if (json === lastSnapshot) continue;
              lastSnapshot = json;
            } else lastId = e.eventId;
            taskId = e.task.id;
            breaks = 0;
            yield { ...e, missedEvents: true };
            if (closesStream(e)) return;
            continue;
          }
          resumed = false;
          if (e.eventId !== undefined) {
            lastId = e.eventId;
            breaks = 0;
          }
          if ('task' in e) taskId = e.task.id;
          else if ('statusUpdate' in e) taskId = e.statusUpdate.taskId;
          else if ('artifactUpdate' in e) taskId = e.artifactUpdate.taskId;
          yield e;
          if (closesStream(e)) return;
        }
        // The stream ended before the task settled (e.g. the server cut off a
        // slow reader): resume like after a dropped connection.
        failure = new A2AClientError('STREAM_ENDED', 'the event stream ended before the task settled');
      } catch (err) {
        if (resumed && taskId !== undefined && isTerminalRefusal(err) && !signal?.aborted) {
          // The task finished while the stream was down and its missed events
          // are no longer kept (a server refuses to subscribe to a finished
          // task, §3.1.6): the final task stands for them, never a silent end.
          const task = await this.getTask(url, taskId, undefined, { signal, headers });
          if (isTerminal(task.status.state)) {
            yield { task, missedEvents: true };
            return;
          }
        }
        if (!isResumableStreamError(err) || signal?.aborted) throw err;
        failure = err;
      }
      // Without a task id there is nothing to resume; after an abort the caller says why it ended.
      if (taskId === undefined || signal?.aborted) throw failure;
      if (breaks >= budget) {
        throw new A2AClientError(
          'STREAM_BROKEN',
          `the event stream of task ${taskId} broke ${breaks + 1} times in a row: ${failure instanceof Error ? failure.message : String(failure)}`,
          { cause: failure },
        );
      }
      // The signal carries the caller's abort (and deadline): the wait ends with it.
      // Doubled per break: capped, as a wait past the longest timer would end at once.
      await sleep(Math.min(backoff * 2 ** breaks++, MAX_TIMER_MS), signal);
      options.onResume?.({ taskId, lastEventId: lastId, attempt: breaks, error: failure });
      resumed = true;
      source = this.subscribeToTask(url, taskId, {
        signal,
        headers,
        ...(lastId !== undefined ? { lastEventId: lastId } : {}),
      });
    }
  }

  // ---- plumbing ------------------------------------------------------------------

  /** The transport for a cached, fresh card of `url`, without waiting; `undefined` when the card must be fetched. */
  #cachedTransport(url: string): ClientTransport | undefined {
    const card = this.discovery.cached(url);
    if (card === undefined) return undefined;
    return this.#byCard.get(card) ?? this.#choose(url, card);
  }

  async #discoverTransport(
    url: string,
    signal: AbortSignal | undefined,
    timeoutMs: number,
  ): Promise<ClientTransport> {
    const card = await this.discovery.discover(url, { signal, timeoutMs });
    return this.#byCard.get(card) ?? this.#choose(url, card);
  }

  /** Picks the interface of `card` to talk to, and its transport. */
  #choose(url: string, card: AgentCard): ClientTransport {
    const usable: Array<{ iface: AgentInterface; factory: ClientTransportFactory }> = [];
    const skipped: string[] = [];
    for (const iface of card.supportedInterfaces) {
      if (!(iface.protocolVersion ?? '1.0').startsWith('1.')) continue;
      const binding = iface.protocolBinding.toUpperCase();
      const factory = this.#factories.get(binding);
      if (factory === undefined) continue;
      const why = factory.unavailable?.(this.#ctx);
      if (why !== undefined) {
        skipped.push(`${binding}: ${why}`);
        continue;
      }
      usable.push({ iface, factory });
    }
    const preferred = this.#preferred;
    const ranked = preferred
      ? usable
          .filter((u) => preferred.includes(u.iface.protocolBinding.toUpperCase()))
          .sort(
            (a, b) =>
              preferred.indexOf(a.iface.protocolBinding.toUpperCase()) -
              preferred.indexOf(b.iface.protocolBinding.toUpperCase()),
          )
      : usable;
    const pick = ranked[0];
    if (pick === undefined) {
      const offered = card.supportedInterfaces
        .map((i) => `${i.protocolBinding} ${i.protocolVersion ?? '?'}`)
        .join(', ');
      throw new A2AClientError(
        'NO_COMPATIBLE_INTERFACE',
        `agent at ${url} offers no A2A 1.0 interface this client uses (${preferred ? `preferred: ${preferred.join(', ')}; ` : ''}offered: ${offered}${skipped.length ? `; unusable: ${skipped.join('; ')}` : ''})`,
      );
    }
    const key = `${pick.iface.protocolBinding.toUpperCase()} ${pick.iface.url} ${pick.iface.tenant ?? ''}`;
    let t = this.#transports.get(key);
    if (t === undefined) {
      t = pick.factory.create(pick.iface, this.#ctx);
      this.#transports.set(key, t);
    }
    this.#byCard.set(card, t);
    return t;
  }

  async #call<S extends z.ZodType>(
    url: string,
    method: UnaryMethod,
    params: object,
    schema: S,
    options: CallOptions = {},
  ): Promise<z.infer<S>> {
    const timeout = callMs('timeoutMs', options.timeoutMs, this.#timeout);
    let transport = this.#cachedTransport(url);
    let left = timeout;
    if (transport === undefined) {
      const started = Date.now();
      transport = await this.#discoverTransport(url, options.signal, timeout);
      left = timeout - (Date.now() - started);
      if (left <= 0) throw deadlineExceeded(`${method} to ${url}`);
    }
    const result = await transport.call(method, params as Record<string, unknown>, {
      signal: options.signal,
      headers: options.headers,
      timeoutMs: left,
    });
    return validate(schema, result, method);
  }

  async *#stream(
    url: string,
    method: StreamMethod,
    params: object,
    options: StreamOptions = {},
  ): AsyncGenerator<StreamEvent> {
    const timeout = callMs('timeoutMs', options.timeoutMs, this.#timeout);
    const started = Date.now();
    const transport =
      this.#cachedTransport(url) ?? (await this.#discoverTransport(url, options.signal, timeout));
    const left = timeout - (Date.now() - started);
    if (left <= 0) throw deadlineExceeded(`${method} to ${url}`);
    let settled = false;
    // The task this stream is about: the one subscribed to, the one a reply
    // continues, else the first event's. An event of another task (its end
    // above all) must not pass for this one's.
    let taskId =
      method === 'SubscribeToTask'
        ? (params as { id: string }).id
        : (params as SendMessageParams).message?.taskId;
    for await (const ev of transport.stream(method, params as Record<string, unknown>, {
      signal: options.signal,
      headers: options.headers,
      lastEventId: options.lastEventId,
      timeoutMs: left,
    })) {
      const event = validate(StreamResponseSchema, ev.value, method);
      const of = taskOf(event);
      if (of !== undefined) {
        if (taskId === undefined) taskId = of;
        else if (of !== taskId) {
          throw new A2AError(
            A2AErrorCode.InvalidAgentResponse,
            `${method}: invalid result: an event of task ${of} in the stream of task ${taskId}`,
          );
        }
      }
      settled = closesStream(event);
      yield ev.eventId === undefined ? event : { ...event, eventId: ev.eventId };
    }
    // A task stream ends at a terminal or interrupted state (or with a
    // message); one that stops before is cut, not finished — on any binding.
    if (!settled) {
      throw new A2AClientError(
        'STREAM_ENDED',
        `${method}: the event stream ended before the task reached a terminal or interrupted state`,
      );
    }
  }
}

/** The task a stream event belongs to (a message may name none). */
function taskOf(e: StreamResponse): string | undefined {
  if ('task' in e) return e.task.id;
  if ('statusUpdate' in e) return e.statusUpdate.taskId;
  if ('artifactUpdate' in e) return e.artifactUpdate.taskId;
  return e.message.taskId;
}

/** An empty result (DeleteTaskPushNotificationConfig): nothing, `null` or `{}`. */
const EmptySchema = z.union([z.undefined(), z.null(), z.object({}).loose()]);

/**
 * Deepest result accepted. A Weave server keeps no artifact or message deeper
 * than {@link MAX_JSON_DEPTH}, and a result carries those at most 4 levels
 * down (ListTasks: `tasks[].artifacts[]`). Anything deeper is refused like
 * any other malformed answer: handed on, it costs recursion wherever it goes
 * (a 500 000-level result overflowed the stack in the application's
 * `JSON.stringify`).
 */
const MAX_RESULT_DEPTH = MAX_JSON_DEPTH + 4;

function validate<S extends z.ZodType>(schema: S, value: unknown, method: string): z.infer<S> {
  if (exceedsDepth(value, MAX_RESULT_DEPTH)) {
    throw new A2AError(
      A2AErrorCode.InvalidAgentResponse,
      `${method}: invalid result: nested deeper than ${MAX_RESULT_DEPTH} levels`,
    );
  }
  const r = schema.safeParse(value);
  if (r.success) return r.data;
  const issue = r.error.issues[0];
  // The SDKs report a result that breaks the schema as InvalidAgentResponse (-32006).
  throw new A2AError(
    A2AErrorCode.InvalidAgentResponse,
    `${method}: invalid result${issue ? ` at ${issue.path.join('.') || '(root)'}: ${issue.message}` : ''}`,
  );
}

/**
 * A per-call option in ms (`given`), or `fallback` when unset: more than 0
 * and at most `MAX_TIMER_MS` (fractions are fine: callers pass what is left
 * of a deadline). Checked inline, as it runs on every call; a NaN would
 * otherwise reach the transport (a misleading TRANSPORT_FAILED) or, as a
 * poll interval, make a busy loop.
 *
 * @throws {A2AConfigError}
 */
function callMs(name: string, given: number | undefined, fallback: number): number {
  return given === undefined ? fallback : checkBudget('A2AClient call', name, given);
}

function toParams(p: SendMessageParams | Message): SendMessageParams {
  // From plain JavaScript a string or null gets here; `in` would throw a bare TypeError.
  if (typeof p !== 'object' || p === null) {
    throw new A2AClientError(
      'INVALID_PARAMS',
      `a message or SendMessage params object is needed, got ${p === null ? 'null' : typeof p}`,
    );
  }
  return 'messageId' in p ? { message: p } : p;
}

/** A user message for `skill` carrying `payload`. */
export function buildMessage(skill: string, payload: TaskPayload, contextId?: string): Message {
  const parts: Part[] =
    typeof payload === 'string'
      ? [{ text: payload }]
      : Array.isArray(payload)
        ? [...(payload as Part[])]
        : [{ data: payload }];
  const m: Message = { messageId: randomUuid(), role: 'ROLE_USER', parts, metadata: { skill } };
  if (contextId !== undefined) m.contextId = contextId;
  return MessageSchema.parse(m);
}

/**
 * Whether a streaming call that failed with `err` can be resumed with
 * SubscribeToTask after the last event id: a transport failure, a stream that
 * ended early, or a server that cut a slow reader off (UNAVAILABLE), but not
 * a dispatcher closed for good. Any other A2A error is the server's answer.
 */
export function isResumableStreamError(err: unknown): boolean {
  if (err instanceof A2AError) return err.code === 'UNAVAILABLE';
  return !dispatcherClosed(err);
}

/**
 * Codes of a dispatcher closed for good (a `@weave/transport` SecureChannel's,
 * undici's): nothing sent on it again can succeed, so a resume would only fail
 * again, `maxReconnects` times.
 */
const CLOSED_DISPATCHER: ReadonlySet<unknown> = new Set([
  'CHANNEL_CLOSED',
  'UND_ERR_DESTROYED',
  'UND_ERR_CLOSED',
]);

/** Whether `err`, or an error it was caused by, says the dispatcher is closed. */
function dispatcherClosed(err: unknown): boolean {
  let e: unknown = err;
  for (let depth = 0; e instanceof Error && depth < 8; depth++, e = e.cause) {
    if (CLOSED_DISPATCHER.has((e as { code?: unknown }).code)) return true;
  }
  return false;
}

/** A subscribe refused because the task is finished (UnsupportedOperation, as the spec answers it). */
function isTerminalRefusal(err: unknown): boolean {
  return err instanceof A2AError && err.code === 'UNSUPPORTED_OPERATION';
}

/**
 * Whether SSE event id `id` comes after `last`. Weave numbers a task's events;
 * other ids (another server) cannot be ordered: any but `last` itself is taken.
 */
function isAfter(id: string, last: string): boolean {
  // The same id is the same event, whatever the ids look like.
  if (id === last) return false;
  const a = Number(id);
  const b = Number(last);
  if (!Number.isSafeInteger(a) || !Number.isSafeInteger(b) || id === '' || last === '') return true;
  return a > b;
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      reject(signal?.reason);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
