/** What the two HTTP bindings (JSON-RPC and HTTP+JSON) share. */
import { isUtf8 } from 'node:buffer';
import { IncomingMessage, type IncomingHttpHeaders } from 'node:http';
import { errorCodes, type FastifyRequest } from 'fastify';
import { SpiffeId } from '@weave/identity';
import { LogRate } from '@weave/transport';
import { A2AError, A2AErrors } from '../errors.js';
import type { A2ARequestHandler, RequestSource } from '../handler.js';
import type { TaskEventStream } from '../event-stream.js';
import type { SseWriter } from '../sse.js';
import type { StreamResponse } from '../wire/v1.js';

/** Body of a request whose Content-Type the bindings do not read (answered -32005 / 400). */
export const WRONG_CONTENT_TYPE = Symbol('wrong-content-type');

/**
 * A JSON request body as the server's content-type parser hands it to the
 * bindings: parsed where it is read, once, so the request's text is not kept
 * for as long as the call runs (for a large body, a copy of the whole input
 * the garbage collector would otherwise move while the task runs).
 */
export class JsonBody {
  private constructor(
    /** The parsed document (undefined when {@link error} is set). */
    readonly value: unknown,
    /** Why the text is not JSON (`JSON.parse`'s message); undefined when it is. */
    readonly error: string | undefined,
    /** Whether the text was empty or only whitespace (then {@link error} is set). */
    readonly blank: boolean,
  ) {}

  /**
   * Parses `body`; a body that is not JSON, or not UTF-8 (RFC 8259 §8.1: a
   * decoder would put U+FFFD in place of the bad bytes, and the call would
   * go on with text the caller never sent), gives a body with {@link error}
   * set, never a throw.
   */
  static parse(body: Buffer | string): JsonBody {
    if (typeof body !== 'string') {
      if (!isUtf8(body)) return new JsonBody(undefined, 'the body is not valid UTF-8', false);
      body = body.toString('utf8');
    }
    const text = body;
    try {
      return new JsonBody(JSON.parse(text) as unknown, undefined, false);
    } catch (err) {
      return new JsonBody(undefined, (err as Error).message, text.trim() === '');
    }
  }
}

/** A request body stream as fastify hands it to a content-type parser. */
type BodyStream = NodeJS.ReadableStream & { receivedEncodedLength?: number };

/**
 * Reads a request body of at most `limit` bytes and hands it to `done`, with
 * fastify's own errors where fastify's reader gives them (a body over the
 * limit: `FST_ERR_CTP_BODY_TOO_LARGE`; a body whose length is not its
 * Content-Length: `FST_ERR_CTP_INVALID_CONTENT_LENGTH`; a stream error, with
 * status 400).
 *
 * When the whole HTTP/1.1 message has already arrived (`complete`, as it has
 * for a request whose body came with its headers, by the time mtlsAuth lets
 * it on from the check phase), the body is taken from the stream's buffer at
 * once and `done` is called before this returns. Read as a flowing stream
 * instead (fastify's own reader), it cost a stream resume and an end, each a
 * deferred callback, for bytes that were already here: about 4 more
 * `process.nextTick` calls per request. Measured with
 * packages/agent/bench/ab.ts (both sides of `callAgent` in one process, 20
 * alternating blocks): 0.944 and 0.826 of the CPU per call before it.
 */
export function readBody(
  payload: BodyStream,
  headers: IncomingHttpHeaders,
  limit: number,
  done: (err: Error | null, body?: Buffer) => void,
): void {
  const declared = Number(headers['content-length']);
  if (declared > limit) return done(new errorCodes.FST_ERR_CTP_BODY_TOO_LARGE());
  const finish = (body: Buffer, encoded: number | undefined): void => {
    if (body.length > limit || (encoded ?? 0) > limit) done(new errorCodes.FST_ERR_CTP_BODY_TOO_LARGE());
    else if (!Number.isNaN(declared) && (encoded || body.length) !== declared) {
      done(new errorCodes.FST_ERR_CTP_INVALID_CONTENT_LENGTH());
    } else done(null, body);
  };
  if (payload instanceof IncomingMessage && payload.complete && payload.readableFlowing === null) {
    // Nothing has read from it yet, so its buffer holds the whole body.
    const body = payload.read() as Buffer | null;
    return finish(body ?? EMPTY, undefined);
  }
  const chunks: Buffer[] = [];
  let received = 0;
  const stop = (): void => {
    payload.removeListener('data', onData);
    payload.removeListener('end', onEnd);
    payload.removeListener('error', onEnd);
  };
  const onData = (chunk: Buffer | string): void => {
    const b = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
    received += b.length;
    if (received > limit || (payload.receivedEncodedLength ?? 0) > limit) {
      stop();
      done(new errorCodes.FST_ERR_CTP_BODY_TOO_LARGE());
      return;
    }
    chunks.push(b);
  };
  const onEnd = (err?: Error & { statusCode?: number }): void => {
    stop();
    if (err != null) {
      if (!(typeof err.statusCode === 'number' && err.statusCode >= 400)) err.statusCode = 400;
      return done(err);
    }
    finish(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, received), payload.receivedEncodedLength);
  };
  payload.on('data', onData);
  payload.on('end', onEnd);
  payload.on('error', onEnd);
  payload.resume();
}

const EMPTY = Buffer.alloc(0);

/** What an HTTP binding needs from its server. */
export interface HttpBindingDeps {
  readonly handler: A2ARequestHandler;
  /** The verified caller of a request (set by the mTLS layer); none means denied. */
  readonly getCaller: (request: FastifyRequest) => SpiffeId | undefined;
  /** Interval of SSE heartbeat comments in ms; 0 disables. */
  readonly heartbeatMs: number;
  /** Bytes of events held for one slow SSE subscriber (see `A2AServerLimits.maxStreamBufferBytes`). */
  readonly maxStreamBufferBytes?: number;
}

/** The default `getCaller`: `request.peer`, set by `@weave/transport`'s `mtlsAuth`. */
export function peerOf(request: FastifyRequest): SpiffeId | undefined {
  const peer = (request as { peer?: unknown }).peer;
  return peer instanceof SpiffeId ? peer : undefined;
}

/** The caller of a request, only if it is a real SpiffeId. */
export function callerOf(deps: HttpBindingDeps, request: FastifyRequest): SpiffeId | undefined {
  const c = deps.getCaller(request);
  return c instanceof SpiffeId ? c : undefined;
}

/**
 * Where a request came from, for the line its refusal is logged with
 * (`A2ARequestHandler.requestFailed`): its verified caller, when it has one,
 * and its connection's remote address (the socket's: a forwarded-for header
 * is the caller's to write).
 */
export function sourceOf(deps: HttpBindingDeps, request: FastifyRequest): RequestSource {
  const caller = callerOf(deps, request);
  // HTTP/2: a proxy of the session's socket, which reads as undefined once the session is gone.
  const socket = request.socket as { remoteAddress?: string; remotePort?: number } | undefined;
  const source: { caller?: SpiffeId; remoteAddress?: string; remotePort?: number } = {};
  if (caller !== undefined) source.caller = caller;
  if (typeof socket?.remoteAddress === 'string') source.remoteAddress = socket.remoteAddress;
  if (typeof socket?.remotePort === 'number') source.remotePort = socket.remotePort;
  return source;
}

/** The version service parameter's name, as HTTP headers are read (lower case). */
export const VERSION_PARAM = 'a2a-version';

/**
 * The `A2A-Version` a request asks for: its header, else its `A2A-Version`
 * query parameter (§3.6.1: "Clients MAY provide the `A2A-Version` as a
 * request parameter instead of a header"; service parameter names are
 * case-insensitive, §3.2.6). The header wins when both are given: it is
 * what clients MUST send, the parameter only stands in for it. The header
 * as it is (absent or empty) when neither gives one.
 */
export function requestedVersion(request: FastifyRequest): string | undefined {
  const header = request.headers['a2a-version'];
  const h = Array.isArray(header) ? header[0] : header;
  if (h !== undefined && h.trim() !== '') return h;
  const query = request.query;
  if (!query || typeof query !== 'object') return h;
  for (const [k, v0] of Object.entries(query as Record<string, unknown>)) {
    if (k.toLowerCase() !== VERSION_PARAM) continue;
    const v = Array.isArray(v0) ? (v0[0] as unknown) : v0;
    if (typeof v === 'string') return v;
  }
  return h;
}

/** `Last-Event-ID` as a sequence number, or undefined when absent or malformed. */
export function parseLastEventId(h: string | string[] | undefined): number | undefined {
  const v = Array.isArray(h) ? h[0] : h;
  if (v === undefined || !/^\d{1,15}$/.test(v.trim())) return undefined;
  return Number(v.trim());
}

/**
 * Bodies at least this long (UTF-16 code units) are handed to fastify as
 * UTF-8 bytes rather than as a string; shorter ones stay strings.
 */
const BUFFERED_BODY_CHARS = 16 * 1024;

/**
 * A JSON response body as it is handed to fastify: a large one as its UTF-8
 * bytes. Given a string, fastify measures it (`Buffer.byteLength`) for
 * Content-Length and node then encodes it again to write it, each pass over
 * the whole text, and a text made of concatenated pieces (a `JSON.stringify`
 * result is one) is copied into one piece on the way: for a 1 MB answer that
 * was two extra passes and a megabyte of short-lived heap per response.
 * Encoded once here, fastify reads the length and node writes the bytes
 * as they are. The bytes sent are the same.
 */
export function responseBody(json: string): string | Buffer {
  return json.length >= BUFFERED_BODY_CHARS ? Buffer.from(json, 'utf8') : json;
}

/**
 * Writes a task stream as SSE until it ends, the client leaves, or it fails
 * (then an `event: error` carries the A2A error, and the stream closes).
 * `toWire` maps an event to what is sent (v0.3 shape); default as is.
 * `onError` is told of the error event, when one is sent.
 */
export async function pumpSse(
  stream: TaskEventStream,
  sse: SseWriter,
  toWire?: (e: StreamResponse) => unknown,
  onError?: (err: A2AError) => void,
): Promise<void> {
  sse.onClose(() => stream.close());
  // Flow control: a producer waiting in `ctx.drained()` waits for this socket too.
  stream.attachSink(() => sse.backedUp);
  sse.onDrained(() => stream.sinkDrained());
  try {
    for (;;) {
      const e = await stream.next();
      if (e === undefined || sse.closed) break;
      sse.send(toWire ? toWire(e.event) : e.event, e.seq);
    }
  } catch (err) {
    // A client gone (or a writer closed) gets no error event: nothing is answered.
    if (!sse.closed) {
      const e = err instanceof A2AError ? err : A2AErrors.internal();
      onError?.(e);
      sse.sendError(e);
    }
  } finally {
    sse.close();
  }
}

/** Characters of a caller's string a binding's log line keeps. */
const LOG_STRING_CHARS = 64;

/**
 * A caller's string as a log field `name`: whole when short, else its first
 * {@link LOG_STRING_CHARS} characters and `<name>Length`. The string is as
 * long as the body or URL allows (a 900 KB method name was one 900 KB line
 * per request), so a field that copies it would let any caller fill the log.
 */
export function logField(name: string, value: string): Record<string, string | number> {
  if (value.length <= LOG_STRING_CHARS) return { [name]: value };
  return { [name]: `${value.slice(0, LOG_STRING_CHARS)}…`, [`${name}Length`]: value.length };
}

/** Log lines a caller can cause on every request, each kind limited per server. */
type RatedLine = 'notification' | 'unauthenticated';

const logRates = new WeakMap<HttpBindingDeps, Record<RatedLine, LogRate>>();

/**
 * Writes `msg` as a `warn` line unless this server wrote its share of
 * `kind` lines in the window: 10 a minute, as `logTlsRefusals` limits its
 * own (see `LogRate` of `@weave/transport`), the first line after a window
 * that dropped some saying how many (`suppressed`). For lines any caller can
 * cause at will, at no cost past its request, which no per-caller limit
 * counts (nothing is run for it). Shared by the HTTP bindings, so a caller
 * switching binding gets no more lines.
 */
export function warnRated(
  deps: HttpBindingDeps,
  request: FastifyRequest,
  kind: RatedLine,
  fields: Record<string, unknown>,
  msg: string,
): void {
  let rates = logRates.get(deps);
  if (!rates) {
    rates = { notification: new LogRate(), unauthenticated: new LogRate() };
    logRates.set(deps, rates);
  }
  const extra = rates[kind].take();
  if (extra) request.log.warn({ ...fields, ...extra }, msg);
}
