import { randomUUID } from 'node:crypto';
import { request, type Dispatcher } from 'undici';
import type { z } from 'zod';
import { A2AClientError, A2AError, A2AErrorCode, type JsonRpcErrorObject } from './errors.js';
import {
  DiscoveryClient,
  readLimited,
  type DiscoveryClientOptions,
  type DiscoveryStats,
} from './discovery.js';
import { parseSse } from './sse-parse.js';
import {
  AgentCardSchema,
  ListTasksResultSchema,
  MessageSchema,
  SendMessageResultSchema,
  StreamResponseSchema,
  TaskSchema,
  INTERRUPTED_STATES,
  isTerminal,
  type AgentCard,
  type ListTasksParams,
  type ListTasksResult,
  type Message,
  type Part,
  type SendMessageParams,
  type SendMessageResult,
  type StreamResponse,
  type Task,
} from './wire/v1.js';

/** A stream event with its SSE event id (Weave servers number events per task). */
export type StreamEvent = StreamResponse & { readonly eventId?: string };

/** Options of {@link A2AClient}. */
export interface A2AClientOptions {
  /** The transport: a `@weave/transport` SecureChannel or any undici dispatcher. Required. */
  readonly dispatcher: Dispatcher;
  /** Agent card cache TTL in ms. Default 5 minutes. */
  readonly cardTtlMs?: number;
  /** How discovered cards' signatures are checked; see {@link DiscoveryClientOptions.signatures}. */
  readonly cardSignatures?: DiscoveryClientOptions['signatures'];
  /** Timeout for a unary call, in ms. Default 60 s. */
  readonly timeoutMs?: number;
  /** Largest response or SSE event accepted, in bytes. Default 4 MiB (the official SDK's cap). */
  readonly maxResponseBytes?: number;
  /** Extra headers on every call (e.g. `A2A-Extensions`). */
  readonly headers?: Readonly<Record<string, string>>;
}

/** Per-call options of unary methods. */
export interface CallOptions {
  /** Aborts the call. */
  readonly signal?: AbortSignal;
  /** Extra headers of this call only (e.g. `traceparent`, a deadline). */
  readonly headers?: Readonly<Record<string, string>>;
  /** Timeout of this call in ms; default the client's `timeoutMs`. */
  readonly timeoutMs?: number;
}

/** Per-call options of streaming methods. */
export interface StreamOptions {
  readonly signal?: AbortSignal;
  /** Extra headers of this call only (e.g. `traceparent`, a deadline). */
  readonly headers?: Readonly<Record<string, string>>;
  /** Resume after this event id (sent as `Last-Event-ID`). */
  readonly lastEventId?: string;
}

/** A task payload for the conveniences: text, parts, or a JSON value (a data part). */
export type TaskPayload = string | readonly Part[] | Record<string, unknown>;

/**
 * An A2A v1.0 JSON-RPC client over an undici dispatcher. Each method takes the
 * agent's base URL; the JSON-RPC endpoint comes from the (cached) agent card.
 * JSON-RPC errors are thrown as {@link A2AError} carrying the numeric code.
 */
export class A2AClient {
  readonly discovery: DiscoveryClient;
  readonly #dispatcher: Dispatcher;
  readonly #timeout: number;
  readonly #maxBytes: number;
  readonly #headers: Readonly<Record<string, string>>;
  /** JSON-RPC endpoint of each card object: the card cache decides freshness, this only skips the search. */
  readonly #endpoints = new WeakMap<AgentCard, string>();
  #nextId = 1;

  constructor(options: A2AClientOptions) {
    if (!options?.dispatcher) throw new TypeError('A2AClient: dispatcher is required');
    this.#dispatcher = options.dispatcher;
    this.#timeout = options.timeoutMs ?? 60_000;
    this.#maxBytes = options.maxResponseBytes ?? 4 * 1024 * 1024;
    this.#headers = options.headers ?? {};
    this.discovery = new DiscoveryClient({
      dispatcher: options.dispatcher,
      ttlMs: options.cardTtlMs,
      ...(options.cardSignatures ? { signatures: options.cardSignatures } : {}),
    });
  }

  /** The agent card at `url`, cached for the TTL. */
  discoverAgent(url: string, options?: { force?: boolean }): Promise<AgentCard> {
    return this.discovery.discover(url, options);
  }

  /** Card cache counters. */
  cacheStats(): DiscoveryStats {
    return this.discovery.stats();
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
   * Polls GetTask until the task is terminal (or, unless `terminalOnly`,
   * waits for input). Gives up with `POLL_TIMEOUT` after `timeoutMs`.
   */
  async pollUntilComplete(
    url: string,
    id: string,
    options: { intervalMs?: number; timeoutMs?: number; signal?: AbortSignal; terminalOnly?: boolean } = {},
  ): Promise<Task> {
    const interval = options.intervalMs ?? 500;
    const deadline = Date.now() + (options.timeoutMs ?? 300_000);
    for (;;) {
      const task = await this.getTask(url, id, undefined, { signal: options.signal });
      const s = task.status.state;
      if (isTerminal(s) || (!options.terminalOnly && INTERRUPTED_STATES.has(s))) return task;
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
   * Runs `skill` and yields its events. If the stream breaks before the task
   * settles — the connection drops, it ends early, or the server cut a slow
   * reader off (UNAVAILABLE) — it resubscribes with the last event id (up to
   * `maxReconnects` times in a row without a new event), so no event is lost
   * against a Weave server.
   */
  async *streamTaskUpdates(
    url: string,
    skill: string,
    payload: TaskPayload,
    options: {
      signal?: AbortSignal;
      headers?: Readonly<Record<string, string>>;
      maxReconnects?: number;
      contextId?: string;
    } = {},
  ): AsyncGenerator<StreamEvent> {
    let taskId: string | undefined;
    let lastId: string | undefined;
    let reconnects = 0;
    let source: AsyncGenerator<StreamEvent> = this.sendStreamingMessage(
      url,
      { message: buildMessage(skill, payload, options.contextId) },
      { signal: options.signal, headers: options.headers },
    );
    for (;;) {
      let failure: unknown;
      try {
        for await (const e of source) {
          if (e.eventId !== undefined) {
            lastId = e.eventId;
            // A stream that moves on earns a fresh budget.
            reconnects = 0;
          }
          if ('task' in e) taskId = e.task.id;
          else if ('statusUpdate' in e) taskId = e.statusUpdate.taskId;
          else if ('artifactUpdate' in e) taskId = e.artifactUpdate.taskId;
          yield e;
          if (settles(e)) return;
        }
        // The stream ended before the task settled (e.g. the server cut off a
        // slow reader): resume like after a dropped connection.
        failure = new A2AClientError('STREAM_ENDED', 'the event stream ended before the task settled');
      } catch (err) {
        if (!isResumableStreamError(err) || options.signal?.aborted) throw err;
        failure = err;
      }
      if (taskId === undefined || reconnects++ >= (options.maxReconnects ?? 3)) throw failure;
      source = this.subscribeToTask(url, taskId, {
        signal: options.signal,
        headers: options.headers,
        lastEventId: lastId,
      });
    }
  }

  // ---- plumbing ------------------------------------------------------------------

  #endpoint(url: string): Promise<string> | string {
    const card = this.discovery.cached(url);
    if (card === undefined) return this.discovery.discover(url).then((c) => this.#endpointOf(url, c));
    return this.#endpoints.get(card) ?? this.#endpointOf(url, card);
  }

  #endpointOf(url: string, card: AgentCard): string {
    const iface =
      card.supportedInterfaces.find(
        (i) => i.protocolBinding.toUpperCase() === 'JSONRPC' && (i.protocolVersion ?? '1.0').startsWith('1.'),
      ) ?? undefined;
    if (!iface) {
      throw new A2AClientError(
        'NO_COMPATIBLE_INTERFACE',
        `agent at ${url} offers no JSON-RPC A2A 1.0 interface`,
      );
    }
    this.#endpoints.set(card, iface.url);
    return iface.url;
  }

  #headersFor(accept: string, extra?: Readonly<Record<string, string>>): Record<string, string> {
    return {
      ...this.#headers,
      'content-type': 'application/json',
      accept,
      'a2a-version': '1.0',
      ...extra,
    };
  }

  async #call<S extends z.ZodType>(
    url: string,
    method: string,
    params: unknown,
    schema: S,
    options: CallOptions = {},
  ): Promise<z.infer<S>> {
    const ep = this.#endpoint(url);
    const endpoint = typeof ep === 'string' ? ep : await ep;
    const id = this.#nextId++;
    const timeout = options.timeoutMs ?? this.#timeout;
    let res: { status: number; text: string };
    try {
      res = await postJson(
        this.#dispatcher,
        endpoint,
        this.#headersFor('application/json', options.headers),
        JSON.stringify({ jsonrpc: '2.0', id, method, params }),
        { signal: options.signal, timeoutMs: timeout, maxBytes: this.#maxBytes },
      );
    } catch (err) {
      if (err instanceof A2AClientError) throw err;
      throw new A2AClientError(
        'TRANSPORT_FAILED',
        `${method} to ${endpoint} failed: ${(err as Error).message}`,
        {
          cause: err,
        },
      );
    }
    const env = parseEnvelope(res.text, res.status, method);
    if (env.error) throw A2AError.fromJsonRpc(env.error);
    if (env.id !== id) {
      throw new A2AClientError(
        'RESPONSE_ID_MISMATCH',
        `${method}: response id ${JSON.stringify(env.id)} != ${id}`,
      );
    }
    return validate(schema, env.result, method);
  }

  async *#stream(
    url: string,
    method: string,
    params: unknown,
    options: StreamOptions = {},
  ): AsyncGenerator<StreamEvent> {
    const endpoint = await this.#endpoint(url);
    const id = this.#nextId++;
    const extra: Record<string, string> = { ...options.headers };
    if (options.lastEventId !== undefined) extra['last-event-id'] = options.lastEventId;
    let res: Dispatcher.ResponseData;
    try {
      res = await request(endpoint, {
        method: 'POST',
        dispatcher: this.#dispatcher,
        headers: this.#headersFor('text/event-stream', extra),
        body: JSON.stringify({ jsonrpc: '2.0', id, method, params }),
        signal: options.signal,
        headersTimeout: this.#timeout,
        // A quiet task is not a dead one: the server's heartbeats keep the body alive.
        bodyTimeout: 0,
      });
    } catch (err) {
      throw new A2AClientError(
        'TRANSPORT_FAILED',
        `${method} to ${endpoint} failed: ${(err as Error).message}`,
        {
          cause: err,
        },
      );
    }
    const ct = String(res.headers['content-type'] ?? '');
    if (!ct.startsWith('text/event-stream')) {
      const text = await readLimited(res.body, this.#maxBytes, endpoint);
      const env = parseEnvelope(text, res.statusCode, method);
      if (env.error) throw A2AError.fromJsonRpc(env.error);
      throw new A2AClientError(
        'UNEXPECTED_RESPONSE',
        `${method}: expected an event stream, got ${ct || 'no content type'}`,
      );
    }
    let settled = false;
    try {
      for await (const ev of parseSse(res.body, this.#maxBytes)) {
        let json: unknown;
        try {
          json = JSON.parse(ev.data);
        } catch (err) {
          throw new A2AClientError('INVALID_RESPONSE', `${method}: SSE event is not JSON`, { cause: err });
        }
        const env = checkEnvelope(json, method);
        if (env.id !== id) {
          throw new A2AClientError(
            'RESPONSE_ID_MISMATCH',
            `${method}: event id ${JSON.stringify(env.id)} != ${id}`,
          );
        }
        if (env.error) throw A2AError.fromJsonRpc(env.error);
        const event = validate(StreamResponseSchema, env.result, method);
        settled = settles(event);
        yield ev.id === undefined ? event : { ...event, eventId: ev.id };
      }
      // A task stream ends at a terminal or interrupted state (or with a
      // message); one that stops before is cut, not finished.
      if (!settled) {
        throw new A2AClientError(
          'STREAM_ENDED',
          `${method}: the event stream ended before the task reached a terminal or interrupted state`,
        );
      }
    } finally {
      if (!res.body.destroyed) res.body.destroy();
    }
  }
}

interface Envelope {
  id: unknown;
  result?: unknown;
  error?: JsonRpcErrorObject;
}

/** Origin and path of each JSON-RPC endpoint seen (a handful per client): parsed once. */
const endpointParts = new Map<string, { origin: string; path: string }>();

function partsOf(endpoint: string): { origin: string; path: string } {
  let p = endpointParts.get(endpoint);
  if (p === undefined) {
    const u = new URL(endpoint);
    p = { origin: u.origin, path: `${u.pathname}${u.search}` };
    if (endpointParts.size >= 1000) endpointParts.clear();
    endpointParts.set(endpoint, p);
  }
  return p;
}

/**
 * One unary POST straight on the dispatcher, the body gathered in memory up
 * to `maxBytes`: undici's `request()` builds a Readable stream for every
 * response, which costs more than the whole JSON-RPC exchange around it.
 * The handler has undici's classic shape, so a SecureChannel still retries
 * what provably never left.
 */
function postJson(
  dispatcher: Dispatcher,
  endpoint: string,
  headers: Record<string, string>,
  body: string,
  opts: { signal?: AbortSignal | undefined; timeoutMs: number; maxBytes: number },
): Promise<{ status: number; text: string }> {
  const { origin, path } = partsOf(endpoint);
  const signal = opts.signal;
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason ?? new Error('aborted'));
    let abortFn: ((reason?: Error) => void) | undefined;
    let abortReason: Error | undefined;
    let status = 0;
    let size = 0;
    const chunks: Buffer[] = [];
    let settled = false;
    const onAbort = () => {
      abortReason = (signal?.reason as Error | undefined) ?? new Error('aborted');
      abortFn?.(abortReason);
    };
    const settle = (err: unknown, value?: { status: number; text: string }) => {
      if (settled) return;
      settled = true;
      signal?.removeEventListener('abort', onAbort);
      if (err !== undefined) reject(err);
      else resolve(value as { status: number; text: string });
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    const handler = {
      onConnect(abort: (reason?: Error) => void) {
        abortFn = abort;
        if (abortReason) abort(abortReason);
      },
      onHeaders(statusCode: number) {
        status = statusCode;
        return true;
      },
      onData(chunk: Buffer) {
        size += chunk.length;
        if (size > opts.maxBytes) {
          const err = new A2AClientError(
            'RESPONSE_TOO_LARGE',
            `response from ${endpoint} exceeds ${opts.maxBytes} bytes`,
          );
          settle(err);
          abortFn?.(err);
          return false;
        }
        chunks.push(chunk);
        return true;
      },
      onComplete() {
        const text =
          chunks.length === 1
            ? (chunks[0] as Buffer).toString('utf8')
            : Buffer.concat(chunks).toString('utf8');
        settle(undefined, { status, text });
      },
      onError(err: Error) {
        settle(err);
      },
    };
    try {
      dispatcher.dispatch(
        {
          origin,
          path,
          method: 'POST',
          headers,
          body,
          headersTimeout: opts.timeoutMs,
          bodyTimeout: opts.timeoutMs,
        },
        handler as unknown as Dispatcher.DispatchHandler,
      );
    } catch (err) {
      settle(err);
    }
  });
}

function parseEnvelope(text: string, status: number, method: string): Envelope {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new A2AClientError(
      'INVALID_RESPONSE',
      `${method}: HTTP ${status} with a body that is not JSON-RPC`,
      {
        cause: err,
      },
    );
  }
  return checkEnvelope(json, method);
}

function checkEnvelope(json: unknown, method: string): Envelope {
  const env = json as { jsonrpc?: unknown; id?: unknown; result?: unknown; error?: unknown } | null;
  if (!env || typeof env !== 'object' || env.jsonrpc !== '2.0') {
    throw new A2AClientError('INVALID_RESPONSE', `${method}: not a JSON-RPC 2.0 response`);
  }
  if (env.error !== undefined) {
    const e = env.error as { code?: unknown; message?: unknown; data?: unknown } | null;
    if (!e || typeof e.code !== 'number' || typeof e.message !== 'string') {
      throw new A2AClientError('INVALID_RESPONSE', `${method}: malformed JSON-RPC error`);
    }
    return { id: env.id, error: { code: e.code, message: e.message, data: e.data } };
  }
  if (!('result' in env))
    throw new A2AClientError('INVALID_RESPONSE', `${method}: response has neither result nor error`);
  return { id: env.id, result: env.result };
}

function validate<S extends z.ZodType>(schema: S, value: unknown, method: string): z.infer<S> {
  const r = schema.safeParse(value);
  if (r.success) return r.data;
  const issue = r.error.issues[0];
  // The SDKs report a result that breaks the schema as InvalidAgentResponse (-32006).
  throw new A2AError(
    A2AErrorCode.InvalidAgentResponse,
    `${method}: invalid result${issue ? ` at ${issue.path.join('.') || '(root)'}: ${issue.message}` : ''}`,
  );
}

function toParams(p: SendMessageParams | Message): SendMessageParams {
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
  const m: Message = { messageId: randomUUID(), role: 'ROLE_USER', parts, metadata: { skill } };
  if (contextId !== undefined) m.contextId = contextId;
  return MessageSchema.parse(m);
}

/**
 * Whether a streaming call that failed with `err` can be resumed with
 * SubscribeToTask after the last event id: a transport failure, a stream that
 * ended early, or a server that cut a slow reader off (UNAVAILABLE). Any other
 * A2A error is the server's answer.
 */
export function isResumableStreamError(err: unknown): boolean {
  return !(err instanceof A2AError) || err.code === 'UNAVAILABLE';
}

function settles(e: StreamResponse): boolean {
  if ('message' in e) return true;
  const s = 'task' in e ? e.task.status.state : 'statusUpdate' in e ? e.statusUpdate.status.state : undefined;
  return s !== undefined && (isTerminal(s) || INTERRUPTED_STATES.has(s));
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
