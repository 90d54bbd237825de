import { A2AClientError, A2AError, type JsonRpcErrorObject } from '../errors.js';
import type { AgentInterface } from '../wire/v1.js';
import {
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

/**
 * The JSON-RPC 2.0 binding (spec §9): every method is a POST of
 * `{jsonrpc, id, method, params}` to the interface URL; streams are SSE whose
 * every event is a whole JSON-RPC response echoing the request's id.
 */
export class JsonRpcTransport implements ClientTransport {
  readonly protocolBinding = 'JSONRPC';
  readonly url: string;
  readonly #ctx: TransportContext;
  readonly #tenant: string | undefined;
  readonly #unaryHeaders: Record<string, string>;
  readonly #streamHeaders: Record<string, string>;
  #nextId = 1;

  constructor(iface: AgentInterface, ctx: TransportContext) {
    this.url = iface.url;
    this.#ctx = ctx;
    this.#tenant = iface.tenant || undefined;
    const base = { ...ctx.headers, 'content-type': 'application/json', 'a2a-version': A2A_VERSION };
    this.#unaryHeaders = { ...base, accept: 'application/json' };
    this.#streamHeaders = { ...base, accept: 'text/event-stream' };
  }

  #params(params: Record<string, unknown>): Record<string, unknown> {
    return this.#tenant !== undefined && params.tenant === undefined
      ? { ...params, tenant: this.#tenant }
      : params;
  }

  #request(
    method: string,
    id: number,
    params: Record<string, unknown>,
    headers: Record<string, string>,
    options: TransportCallOptions,
  ): HttpRequest {
    return {
      dispatcher: this.#ctx.dispatcher,
      url: this.url,
      method: 'POST',
      headers,
      body: requestBody(JSON.stringify({ jsonrpc: '2.0', id, method, params: this.#params(params) })),
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
    const id = this.#nextId++;
    const headers = options.headers ? mergeHeaders(this.#unaryHeaders, options.headers) : this.#unaryHeaders;
    const req = this.#request(method, id, params, headers, options);
    const res = await httpUnary(req);
    // Refused before the request was read: no JSON-RPC answer (the server never saw its id).
    if (res.status === HEADERS_TOO_LARGE_STATUS) throw headersTooLarge(req.what);
    const env = checkEnvelope(parseJson(res.text, method, res.status), method);
    if (env.error) throw jsonRpcError(env.error, res.status);
    if (env.id !== id) {
      throw new A2AClientError(
        'RESPONSE_ID_MISMATCH',
        `${method}: response id ${JSON.stringify(env.id)} != ${id}`,
      );
    }
    return env.result;
  }

  async *stream(
    method: StreamMethod,
    params: Record<string, unknown>,
    options: TransportStreamOptions,
  ): AsyncGenerator<RawStreamEvent> {
    const id = this.#nextId++;
    const headers = mergeHeaders(this.#streamHeaders, options.headers);
    if (options.lastEventId !== undefined) headers['last-event-id'] = options.lastEventId;
    const req = this.#request(method, id, params, headers, options);
    const open = await openStream({ ...req, idleTimeoutMs: this.#ctx.streamIdleTimeoutMs });
    if (!open.contentType.startsWith('text/event-stream')) {
      const text = await readBody(open, req.maxBytes, this.url);
      if (open.status === HEADERS_TOO_LARGE_STATUS) throw headersTooLarge(req.what);
      const env = checkEnvelope(parseJson(text, method, open.status), method);
      if (env.error) throw jsonRpcError(env.error, open.status);
      throw new A2AClientError(
        'UNEXPECTED_RESPONSE',
        `${method}: expected an event stream, got ${open.contentType || 'no content type'}`,
      );
    }
    for await (const ev of sseEvents(open, req.maxBytes, req.what, options.signal)) {
      const env = checkEnvelope(eventJson(ev.data, method), method);
      if (env.id !== id) {
        throw new A2AClientError(
          'RESPONSE_ID_MISMATCH',
          `${method}: event id ${JSON.stringify(env.id)} != ${id}`,
        );
      }
      if (env.error) throw A2AError.fromJsonRpc(env.error);
      yield ev.id === undefined ? { value: env.result } : { value: env.result, eventId: ev.id };
    }
  }

  async close(): Promise<void> {
    // Stateless: the dispatcher is the caller's to close.
  }
}

/**
 * The A2A error of a JSON-RPC error response. A2A v1.0 has no JSON-RPC code
 * for authorization: Weave's servers answer a refusal with HTTP 403 and an
 * ErrorInfo reason PERMISSION_DENIED; another server's 403 whose error names
 * no reason is read as that refusal too, as a bare 403 on HTTP+JSON and a bare
 * PERMISSION_DENIED on gRPC are. The JSON-RPC code is kept as sent.
 */
function jsonRpcError(error: JsonRpcErrorObject, httpStatus: number): A2AError {
  return A2AError.fromJsonRpc(error, httpStatus === 403 ? 'PERMISSION_DENIED' : undefined);
}

interface Envelope {
  id: unknown;
  result?: unknown;
  error?: JsonRpcErrorObject;
}

/** A JSON-RPC 2.0 response: its id and either its result or a well-formed error. */
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

/** Builds {@link JsonRpcTransport}s. */
export const jsonRpcTransportFactory: ClientTransportFactory = {
  protocolBinding: 'JSONRPC',
  create: (iface, ctx) => new JsonRpcTransport(iface, ctx),
};
