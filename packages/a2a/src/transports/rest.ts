import type { A2AError } from '../errors.js';
import { A2AClientError, a2aErrorFromRest } from '../errors.js';
import type { AgentInterface } from '../wire/v1.js';
import {
  A2A_JSON_MEDIA_TYPE as A2A_JSON,
  A2A_VERSION,
  eventJson,
  HEADERS_TOO_LARGE_STATUS,
  headersTooLarge,
  httpUnary,
  mergeHeaders,
  openStream,
  parseJson,
  readBody,
  requestBody,
  sseEvents,
  type HttpRequest,
} from './http.js';
import type {
  ClientTransport,
  ClientTransportFactory,
  RawStreamEvent,
  StreamMethod,
  TransportCallOptions,
  TransportContext,
  TransportStreamOptions,
  UnaryMethod,
} from './types.js';

type Verb = 'GET' | 'POST' | 'DELETE';

interface Route {
  readonly verb: Verb;
  /** Path below the interface URL (and the tenant), ids already encoded. */
  readonly path: string;
  /** Query parameters (GET, DELETE). */
  readonly query?: Record<string, unknown>;
  /** JSON body (POST). */
  readonly body?: Record<string, unknown>;
}

/** A path segment from a caller-given id: encoded, so an id can never leave its segment. */
function seg(value: unknown, name: string): string {
  if (typeof value !== 'string' || value === '') {
    throw new A2AClientError('INVALID_PARAMS', `${name} must be a non-empty string`);
  }
  return encodeURIComponent(value);
}

/** Everything of `params` but the named members. */
function without(params: Record<string, unknown>, ...names: string[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(params)) if (!names.includes(k)) out[k] = v;
  return out;
}

/**
 * The route of each method: the `google.api.http` annotations of the spec's
 * `a2a.proto` (which the spec's §11 tables mirror). Subscribe is a GET as in
 * the proto; the spec's prose says POST, and servers accept both.
 */
function routeOf(method: UnaryMethod | StreamMethod, p: Record<string, unknown>): Route {
  switch (method) {
    case 'SendMessage':
      return { verb: 'POST', path: '/message:send', body: p };
    case 'SendStreamingMessage':
      return { verb: 'POST', path: '/message:stream', body: p };
    case 'GetTask':
      return { verb: 'GET', path: `/tasks/${seg(p.id, 'id')}`, query: without(p, 'id') };
    case 'ListTasks':
      return { verb: 'GET', path: '/tasks', query: p };
    case 'CancelTask':
      return { verb: 'POST', path: `/tasks/${seg(p.id, 'id')}:cancel`, body: p };
    case 'SubscribeToTask':
      return { verb: 'GET', path: `/tasks/${seg(p.id, 'id')}:subscribe` };
    case 'CreateTaskPushNotificationConfig':
      return { verb: 'POST', path: `/tasks/${seg(p.taskId, 'taskId')}/pushNotificationConfigs`, body: p };
    case 'GetTaskPushNotificationConfig':
      return {
        verb: 'GET',
        path: `/tasks/${seg(p.taskId, 'taskId')}/pushNotificationConfigs/${seg(p.id, 'id')}`,
      };
    case 'ListTaskPushNotificationConfigs':
      return {
        verb: 'GET',
        path: `/tasks/${seg(p.taskId, 'taskId')}/pushNotificationConfigs`,
        query: without(p, 'taskId'),
      };
    case 'DeleteTaskPushNotificationConfig':
      return {
        verb: 'DELETE',
        path: `/tasks/${seg(p.taskId, 'taskId')}/pushNotificationConfigs/${seg(p.id, 'id')}`,
      };
    case 'GetExtendedAgentCard':
      return { verb: 'GET', path: '/extendedAgentCard' };
  }
}

/**
 * Query string of a GET (spec §11.5): camelCase names, strings as they are,
 * numbers in decimal, booleans as `true`/`false`, repeated values repeated;
 * nested objects cannot travel in a query and are refused.
 */
function queryString(query: Record<string, unknown> | undefined): string {
  if (query === undefined) return '';
  const q = new URLSearchParams();
  const add = (name: string, v: unknown) => {
    if (v === undefined || v === null) return;
    if (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') q.append(name, String(v));
    else throw new A2AClientError('INVALID_PARAMS', `${name} cannot be sent as a query parameter`);
  };
  for (const [name, v] of Object.entries(query)) {
    if (Array.isArray(v)) for (const x of v) add(name, x);
    else add(name, v);
  }
  const s = q.toString();
  return s === '' ? '' : `?${s}`;
}

/**
 * The A2A error an HTTP+JSON error body stands for ({@link a2aErrorFromRest}),
 * or `undefined` when the body holds no `error` object (not an A2A error body).
 */
export function restErrorToA2AError(body: unknown, httpStatus: number): A2AError | undefined {
  const e = (body as { error?: unknown } | null)?.error;
  if (!e || typeof e !== 'object') return undefined;
  return a2aErrorFromRest(body, httpStatus);
}

/**
 * The HTTP+JSON binding (spec §11): each method is a resource route below the
 * interface URL (the proto's HTTP annotations), with the optional `/{tenant}`
 * prefix; errors are HTTP statuses with a `google.rpc.Status` body; streams
 * are SSE of bare `StreamResponse`s.
 */
export class RestTransport implements ClientTransport {
  readonly protocolBinding = 'HTTP+JSON';
  readonly url: string;
  readonly #ctx: TransportContext;
  readonly #base: string;
  readonly #tenant: string | undefined;
  readonly #headers: Record<string, string>;

  constructor(iface: AgentInterface, ctx: TransportContext) {
    this.url = iface.url;
    this.#ctx = ctx;
    this.#base = iface.url.replace(/\/+$/, '');
    this.#tenant = iface.tenant || undefined;
    this.#headers = { ...ctx.headers, 'a2a-version': A2A_VERSION };
  }

  #request(
    method: UnaryMethod | StreamMethod,
    params: Record<string, unknown>,
    accept: string,
    options: TransportCallOptions,
  ): HttpRequest {
    const tenant = typeof params.tenant === 'string' && params.tenant !== '' ? params.tenant : this.#tenant;
    const route = routeOf(method, without(params, 'tenant'));
    const prefix = tenant === undefined ? '' : `/${seg(tenant, 'tenant')}`;
    const headers = mergeHeaders(this.#headers, { accept }, options.headers);
    if (route.body !== undefined) headers['content-type'] = A2A_JSON;
    return {
      dispatcher: this.#ctx.dispatcher,
      url: `${this.#base}${prefix}${route.path}${queryString(route.query)}`,
      method: route.verb,
      headers,
      body: route.body === undefined ? undefined : requestBody(JSON.stringify(route.body)),
      signal: options.signal,
      timeoutMs: options.timeoutMs,
      maxBytes: this.#ctx.maxResponseBytes,
      what: `${method} to ${this.url}`,
    };
  }

  async call(
    method: UnaryMethod,
    params: Record<string, unknown>,
    options: TransportCallOptions,
  ): Promise<unknown> {
    const req = this.#request(method, params, `${A2A_JSON}, application/json`, options);
    const res = await httpUnary(req);
    if (res.status >= 200 && res.status < 300) {
      // Read whatever its content type: `application/a2a+json` (§11.1) or, from
      // servers that predate it, `application/json`; the body is validated anyway.
      // DeleteTaskPushNotificationConfig answers google.protobuf.Empty: no body, or `{}`.
      return res.text === '' ? undefined : parseJson(res.text, method, res.status);
    }
    throw errorOf(res.text, res.status, method, req.what);
  }

  async *stream(
    method: StreamMethod,
    params: Record<string, unknown>,
    options: TransportStreamOptions,
  ): AsyncGenerator<RawStreamEvent> {
    const req = this.#request(method, params, 'text/event-stream', options);
    if (options.lastEventId !== undefined) req.headers['last-event-id'] = options.lastEventId;
    const open = await openStream({ ...req, idleTimeoutMs: this.#ctx.streamIdleTimeoutMs });
    if (open.status < 200 || open.status >= 300 || !open.contentType.startsWith('text/event-stream')) {
      const text = await readBody(open, req.maxBytes, this.url);
      if (open.status >= 200 && open.status < 300) {
        throw new A2AClientError(
          'UNEXPECTED_RESPONSE',
          `${method}: expected an event stream, got ${open.contentType || 'no content type'}`,
        );
      }
      throw errorOf(text, open.status, method, req.what);
    }
    for await (const ev of sseEvents(open, req.maxBytes, req.what, options.signal)) {
      const json = eventJson(ev.data, method);
      // Mid-stream errors come as `event: error` with the google.rpc.Status JSON.
      if (ev.event === 'error' || (json !== null && typeof json === 'object' && 'error' in json)) {
        throw (
          restErrorToA2AError(json, 500) ??
          new A2AClientError('INVALID_RESPONSE', `${method}: malformed error event`)
        );
      }
      yield ev.id === undefined ? { value: json } : { value: json, eventId: ev.id };
    }
  }

  async close(): Promise<void> {
    // Stateless: the dispatcher is the caller's to close.
  }
}

/** The typed error of a non-2xx answer. */
function errorOf(text: string, status: number, method: string, what: string): Error {
  // Refused before the request was read, whatever the body (Node's is no A2A error).
  if (status === HEADERS_TOO_LARGE_STATUS) return headersTooLarge(what);
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    body = undefined;
  }
  return (
    restErrorToA2AError(body, status) ??
    new A2AClientError('INVALID_RESPONSE', `${method}: HTTP ${status} without an A2A error body`)
  );
}

/** Builds {@link RestTransport}s. */
export const restTransportFactory: ClientTransportFactory = {
  protocolBinding: 'HTTP+JSON',
  create: (iface, ctx) => new RestTransport(iface, ctx),
};
