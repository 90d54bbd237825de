// What the two HTTP bindings (JSON-RPC and HTTP+JSON) share: one unary
// request straight on the dispatcher, opening an event stream, reading it,
// and turning what went wrong into a typed error. Internal.
import { request, type Dispatcher } from 'undici';
import { Deadlines, type Deadline } from '../deadlines.js';
import { A2AClientError, A2AError } from '../errors.js';
import { parseSse, type ReadWatch, type SseEvent } from '../sse-parse.js';

/** The A2A protocol version this client speaks (sent as `A2A-Version`). */
export const A2A_VERSION = '1.0';

/**
 * The media type of HTTP+JSON bodies, requests and responses (spec §11.1
 * SHOULD, §14.1). Servers of that binding take `application/json` as well;
 * JSON-RPC bodies stay `application/json` (§9.1).
 */
export const A2A_JSON_MEDIA_TYPE = 'application/a2a+json';

/** True for an abort reason that means "out of time" (`AbortSignal.timeout`, Weave's deadlines). */
function isDeadlineReason(reason: unknown): boolean {
  return (
    (reason instanceof DOMException && reason.name === 'TimeoutError') ||
    (reason instanceof A2AClientError && reason.code === 'DEADLINE_EXCEEDED')
  );
}

/** `DEADLINE_EXCEEDED`: the caller's time budget ran out before `what` finished. */
export function deadlineExceeded(what: string, cause?: unknown): A2AClientError {
  return new A2AClientError('DEADLINE_EXCEEDED', `${what}: the call ran past its deadline`, { cause });
}

/**
 * `HEADERS_TOO_LARGE`: the server refused `what` for the size of its request
 * headers, unread (HTTP 431; on HTTP/2 also a stream reset with
 * ENHANCE_YOUR_CALM, which is how Node refuses a header block over the
 * SETTINGS_MAX_HEADER_LIST_SIZE it advertised), as the gRPC transport
 * reports the same refusal of gRPC metadata.
 */
export function headersTooLarge(what: string, cause?: unknown): A2AClientError {
  return new A2AClientError(
    'HEADERS_TOO_LARGE',
    `${what} refused: its headers are larger than the server accepts`,
    { cause },
  );
}

/** HTTP 431 Request Header Fields Too Large: see {@link headersTooLarge}. */
export const HEADERS_TOO_LARGE_STATUS = 431;

/** `STREAM_IDLE`: a read of an open stream waited `ms` and nothing came (no event, no heartbeat). */
function streamIdle(what: string, ms: number): A2AClientError {
  return new A2AClientError(
    'STREAM_IDLE',
    `${what}: the stream brought nothing for ${ms} ms (streamIdleTimeoutMs): the peer or the network is taken as gone`,
  );
}

const TIMEOUT_CODES = new Set(['UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT']);

/**
 * The typed error for a failed exchange: A2A errors and our own typed errors
 * pass through; an abort says whether it was the deadline (`DEADLINE_EXCEEDED`)
 * or the caller (`ABORTED`); an HTTP/2 stream reset with ENHANCE_YOUR_CALM
 * is `HEADERS_TOO_LARGE` (see {@link headersTooLarge}); a plain dispatcher
 * meeting a SPIFFE server (an X.509-SVID where it checks a host name) is
 * `CLIENT_CERTIFICATE_REQUIRED`, which says to use a SecureChannel; anything
 * else is `TRANSPORT_FAILED`, with the original error (e.g. a
 * PeerVerificationError) as the cause.
 */
export function callFailure(what: string, err: unknown, signal?: AbortSignal): Error {
  if (err instanceof A2AError || err instanceof A2AClientError) return err;
  if (signal?.aborted) {
    return isDeadlineReason(signal.reason)
      ? deadlineExceeded(what, signal.reason)
      : new A2AClientError('ABORTED', `${what}: aborted by the caller`, { cause: signal.reason });
  }
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && TIMEOUT_CODES.has(code)) return deadlineExceeded(what, err);
  if (code === 'ERR_HTTP2_STREAM_ERROR' && /\bNGHTTP2_ENHANCE_YOUR_CALM\b/.test((err as Error).message)) {
    return headersTooLarge(what, err);
  }
  if (isDeadlineReason(err)) return deadlineExceeded(what, err);
  const spiffe = spiffeServer(err);
  if (spiffe !== undefined) {
    // A plain dispatcher (an undici Agent) reached a SPIFFE mTLS server: say what is missing.
    return new A2AClientError(
      'CLIENT_CERTIFICATE_REQUIRED',
      `${what}: the server is a SPIFFE workload (${spiffe}), which requires a client certificate ` +
        '(SPIFFE mTLS), and the dispatcher is not a SPIFFE mTLS one: pass a SecureChannel from ' +
        "@weave/transport, new SecureChannel(identity, 'spiffe://…/server'), which presents this workload's " +
        "SVID and verifies the server's SPIFFE ID instead of a host name",
      { cause: err },
    );
  }
  return new A2AClientError('TRANSPORT_FAILED', `${what} failed: ${(err as Error)?.message ?? String(err)}`, {
    cause: err,
  });
}

/**
 * The SPIFFE ID of the server when `err` is a host-name check failing on an
 * X.509-SVID (a URI SAN and no DNS name): a plain dispatcher met a SPIFFE server.
 */
function spiffeServer(err: unknown): string | undefined {
  const e = err as { code?: unknown; cert?: { subjectaltname?: unknown } } | null;
  if (e?.code !== 'ERR_TLS_CERT_ALTNAME_INVALID' || typeof e.cert?.subjectaltname !== 'string')
    return undefined;
  return /(?:^|, )URI:(spiffe:\/\/[^,\s]+)/.exec(e.cert.subjectaltname)?.[1];
}

/** Origin and path of each endpoint seen (a handful per client): parsed once. */
const endpointParts = new Map<string, { origin: string; path: string }>();

/**
 * @throws {A2AClientError} `INVALID_AGENT_URL` for what is not an absolute URL
 * (a card naming its interface `/rpc`), as the gRPC transport says it.
 */
function partsOf(endpoint: string): { origin: string; path: string } {
  let p = endpointParts.get(endpoint);
  if (p === undefined) {
    let u: URL;
    try {
      u = new URL(endpoint);
    } catch (err) {
      throw new A2AClientError('INVALID_AGENT_URL', `not an interface URL: ${JSON.stringify(endpoint)}`, {
        cause: err,
      });
    }
    p = { origin: u.origin, path: `${u.pathname}${u.search}` };
    if (endpointParts.size >= 1000) endpointParts.clear();
    endpointParts.set(endpoint, p);
  }
  return p;
}

/** Request bodies at least this long (UTF-16 code units) are sent as bytes: see {@link requestBody}. */
const BYTES_BODY_CHARS = 16 * 1024;

/**
 * A new header object: `base`, then `extra` on top (a later key wins).
 * `Object.assign` rather than `{ ...base, ...extra }`: on Node 20, V8 adds
 * the second object's keys to a spread copy on its slow path, which was 3 %
 * of a caller's samples in the call bench's profile.
 */
export function mergeHeaders(
  base: Readonly<Record<string, string>>,
  ...extra: Array<Readonly<Record<string, string>> | undefined>
): Record<string, string> {
  return Object.assign({}, base, ...extra);
}

/**
 * A JSON request body as a binding hands it to the channel: a large one as
 * its UTF-8 bytes, encoded once here. Given the string, undici makes a flat
 * copy of it to encode it, and the text, that copy and the bytes all stay
 * referenced until the answer comes (the channel keeps the body to retry a
 * request nothing was sent of): for a large input, heap the garbage
 * collector moves while the call waits. As bytes only the Buffer, off the
 * JavaScript heap, is kept. The bytes sent are the same.
 */
export function requestBody(json: string): string | Buffer {
  return json.length >= BYTES_BODY_CHARS ? Buffer.from(json, 'utf8') : json;
}

/** One HTTP exchange of a binding. */
export interface HttpRequest {
  readonly dispatcher: Dispatcher;
  readonly url: string;
  readonly method: 'GET' | 'POST' | 'DELETE';
  readonly headers: Record<string, string>;
  readonly body?: string | Uint8Array | undefined;
  readonly signal?: AbortSignal | undefined;
  /** A unary exchange (connect, send, read) must end, and a stream must be open, within this many ms. */
  readonly timeoutMs: number;
  /** Largest response body (unary) or event (stream) accepted. */
  readonly maxBytes: number;
  /** A stream read that waits this many ms for a byte (event or heartbeat) fails with `STREAM_IDLE`; 0 or absent: never. */
  readonly idleTimeoutMs?: number | undefined;
  /** Names the exchange in errors, e.g. `GetTask to https://…`. */
  readonly what: string;
}

/** The deadlines of every {@link httpUnary} exchange in the process: one timer, not one per call. */
const unaryDeadlines = new Deadlines<UnaryExchange>((x) => x.stop(deadlineExceeded(x.req.what)));

/**
 * One unary request straight on the dispatcher, the body gathered in memory
 * up to `maxBytes`: undici's `request()` builds a Readable stream for every
 * response, which costs more than the whole JSON-RPC exchange around it.
 * The handler has undici's classic shape, so a SecureChannel still retries
 * what provably never left.
 *
 * A deadline bounds the whole exchange; an abort ends the call at once, even
 * while the connection is still being made (undici itself only takes an
 * abort once a connect ends, at its own timeout). Rejects with the typed
 * error of {@link callFailure}.
 */
export function httpUnary(req: HttpRequest): Promise<{ status: number; text: string }> {
  const { origin, path } = partsOf(req.url);
  return new Promise((resolve, reject) => {
    const signal = req.signal;
    if (signal?.aborted) return reject(callFailure(req.what, signal.reason, signal));
    const x = new UnaryExchange(req, resolve, reject);
    try {
      req.dispatcher.dispatch(
        {
          origin,
          path,
          method: req.method,
          headers: req.headers,
          body: req.body,
          headersTimeout: req.timeoutMs,
          bodyTimeout: req.timeoutMs,
        },
        x as unknown as Dispatcher.DispatchHandler,
      );
    } catch (err) {
      x.settle(err);
    }
  });
}

/**
 * The state of one {@link httpUnary} exchange, and its undici handler (of the
 * classic shape). One object with its methods on the prototype, rather than
 * a handler literal and a closure per step: a caller made about a dozen
 * functions and their context per call, garbage as soon as the answer came.
 */
class UnaryExchange {
  #abortFn: ((reason?: Error) => void) | undefined;
  #abortReason: Error | undefined;
  #status = 0;
  #size = 0;
  // The body: its first chunk, then all of them once a second one comes (a small answer is one chunk).
  #first: Buffer | undefined;
  #chunks: Buffer[] | undefined;
  #settled = false;
  readonly #deadline: Deadline<UnaryExchange>;
  // Only when the caller gave a signal: most calls have none.
  readonly #onAbort: (() => void) | undefined;

  constructor(
    readonly req: HttpRequest,
    private readonly resolve: (value: { status: number; text: string }) => void,
    private readonly reject: (err: Error) => void,
  ) {
    this.#deadline = unaryDeadlines.add(this, Date.now() + Math.max(1, req.timeoutMs));
    const signal = req.signal;
    if (signal) {
      this.#onAbort = () => this.stop((signal.reason as Error | undefined) ?? new Error('aborted'));
      signal.addEventListener('abort', this.#onAbort, { once: true });
    }
  }

  settle(err: unknown, value?: { status: number; text: string }): void {
    if (this.#settled) return;
    this.#settled = true;
    unaryDeadlines.delete(this.#deadline);
    const signal = this.req.signal;
    if (this.#onAbort) signal?.removeEventListener('abort', this.#onAbort);
    if (err !== undefined) this.reject(callFailure(this.req.what, err, signal));
    else this.resolve(value as { status: number; text: string });
  }

  /** Ends the exchange now; undici gets the reason as soon as it hands over the connection. */
  stop(reason: Error): void {
    this.#abortReason = reason;
    this.settle(reason);
    this.#abortFn?.(reason);
  }

  onConnect(abort: (reason?: Error) => void): void {
    this.#abortFn = abort;
    if (this.#abortReason) abort(this.#abortReason);
  }

  onHeaders(statusCode: number): boolean {
    this.#status = statusCode;
    return true;
  }

  onData(chunk: Buffer): boolean {
    this.#size += chunk.length;
    if (this.#size > this.req.maxBytes) {
      this.stop(
        new A2AClientError(
          'RESPONSE_TOO_LARGE',
          `response from ${this.req.url} exceeds ${this.req.maxBytes} bytes`,
        ),
      );
      return false;
    }
    if (this.#first === undefined) this.#first = chunk;
    else (this.#chunks ??= [this.#first]).push(chunk);
    return true;
  }

  onComplete(): void {
    const text =
      this.#chunks !== undefined
        ? Buffer.concat(this.#chunks).toString('utf8')
        : (this.#first?.toString('utf8') ?? '');
    this.settle(undefined, { status: this.#status, text });
  }

  onError(err: Error): void {
    this.settle(err);
  }
}

/** An open response whose body is an event stream (or an error to read). */
export interface OpenStream {
  readonly status: number;
  readonly contentType: string;
  readonly body: Dispatcher.ResponseData['body'];
  /** How long a read of the events may wait for a byte before the stream fails (0: no limit). */
  readonly idleTimeoutMs: number;
  /** Stops following the caller's signal; call once the stream is over. */
  release(): void;
}

/**
 * Sends a request whose answer is an event stream and waits for the response
 * headers, within `timeoutMs` (connect and send included). After that the
 * caller's signal bounds the stream, and `idleTimeoutMs` its quiet spells
 * (see {@link sseEvents}).
 */
export async function openStream(req: HttpRequest): Promise<OpenStream> {
  const { what } = req;
  // The same refusal of a URL that is not one as on a unary call.
  partsOf(req.url);
  const outer = req.signal;
  if (outer?.aborted) throw callFailure(what, outer.reason, outer);
  // The time limit ends once the stream is open; the caller's signal still
  // reaches the body (undici has the signal) until the stream is released.
  const bounded = boundedSignal(outer, Math.max(1, req.timeoutMs), deadlineExceeded, what);
  const release = () => bounded.dispose();
  try {
    const res = await untilAborted(
      request(req.url, {
        method: req.method,
        dispatcher: req.dispatcher,
        headers: req.headers,
        body: req.body,
        signal: bounded.signal,
        headersTimeout: req.timeoutMs,
        // Quiet spells are timed by sseEvents, which knows when the reader waits.
        bodyTimeout: 0,
      }),
      bounded.signal,
    );
    return {
      status: res.statusCode,
      contentType: String(res.headers['content-type'] ?? ''),
      body: res.body,
      idleTimeoutMs: req.idleTimeoutMs ?? 0,
      release,
    };
  } catch (err) {
    release();
    throw callFailure(what, err, bounded.signal);
  } finally {
    bounded.stopClock();
  }
}

/**
 * Reads a non-stream answer to a stream request (an error body), up to
 * `maxBytes`; within `open.idleTimeoutMs` (a short body: the whole read), or
 * it fails with `STREAM_IDLE` like a quiet stream.
 */
export function readBody(open: OpenStream, maxBytes: number, what: string): Promise<string> {
  const ms = open.idleTimeoutMs;
  const timer = ms > 0 ? setTimeout(() => open.body.destroy(streamIdle(what, ms)), ms) : undefined;
  return readLimited(open.body, maxBytes, what).finally(() => {
    clearTimeout(timer);
    open.release();
  });
}

/**
 * The events of an open stream; ending the iteration closes the response.
 * With `open.idleTimeoutMs`, a read that waits that long for a byte (no
 * event, no heartbeat) fails the stream with `STREAM_IDLE`: a quiet task is
 * not a dead one (the server's heartbeats keep the body alive), a peer or a
 * network that sends nothing for that long is. Only the reader's waits count,
 * so a consumer slow with its events is not quiet, on HTTP/1.1 and HTTP/2
 * alike (undici's body timeout also fires when HTTP/2 flow control has
 * stopped the data for a slow reader).
 */
export async function* sseEvents(
  open: OpenStream,
  maxBytes: number,
  what: string,
  signal: AbortSignal | undefined,
): AsyncGenerator<SseEvent> {
  const ms = open.idleTimeoutMs;
  const watch: ReadWatch = { waitingSince: 0 };
  let idle: A2AClientError | undefined;
  // One timer for the whole stream, not one per read: when it fires early
  // (the reader was busy, or began to wait later), it waits out the rest.
  const check = (): void => {
    const since = watch.waitingSince;
    const waited = since === 0 ? 0 : performance.now() - since;
    if (waited < ms) {
      timer = setTimeout(check, ms - waited);
      timer.unref();
      return;
    }
    idle = streamIdle(what, ms);
    open.body.destroy(idle);
  };
  let timer = ms > 0 ? setTimeout(check, ms) : undefined;
  timer?.unref();
  try {
    yield* parseSse(open.body, maxBytes, ms > 0 ? watch : undefined);
  } catch (err) {
    if (idle !== undefined && !signal?.aborted) throw idle;
    throw callFailure(what, err, signal);
  } finally {
    clearTimeout(timer);
    open.release();
    if (!open.body.destroyed) open.body.destroy();
  }
}

/** `p`, or a rejection with the signal's reason as soon as it aborts. */
export function untilAborted<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) {
    p.catch(() => undefined);
    return Promise.reject(signal.reason as Error);
  }
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      p.then(
        (v) => destroyLate(v),
        () => undefined,
      );
      reject(signal.reason as Error);
    };
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (err: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(err as Error);
      },
    );
  });
}

/**
 * A signal for one piece of work: it aborts with `parent`'s reason when
 * `parent` aborts, or with `timedOut(what)` once `ms` have passed (`what`
 * goes through so that a caller naming its work needs no closure of its own).
 * Call `dispose()` when the work is over: it takes the listener off `parent`
 * and clears the timer, so a long-lived `parent` (a client's, a sender's)
 * keeps nothing of it. `stopClock()` only clears the timer, for work whose
 * time limit ends before it does (a stream is timed until it is open).
 * `AbortSignal.any([parent, AbortSignal.timeout(ms)])` is not that: on Node
 * 20 and 22 every such signal leaves an entry on `parent` (on 22 the whole
 * signal) for as long as `parent` lives.
 *
 * @internal
 */
export function boundedSignal(
  parent: AbortSignal | undefined,
  ms: number,
  timedOut: (what: string) => unknown,
  what = '',
): { readonly signal: AbortSignal; stopClock(): void; dispose(): void } {
  return new BoundedSignal(parent, ms, timedOut, what);
}

/**
 * {@link boundedSignal}'s controller. It is its own listener on `parent`
 * ({@link handleEvent}) rather than holding a controller and an `onAbort`
 * closure: one object where there were two, on every stream a client opens.
 */
class BoundedSignal extends AbortController {
  readonly #parent: AbortSignal | undefined;
  #timer: ReturnType<typeof setTimeout> | undefined;

  constructor(
    parent: AbortSignal | undefined,
    ms: number,
    timedOut: (what: string) => unknown,
    what: string,
  ) {
    super();
    this.#parent = parent;
    if (parent?.aborted) {
      this.abort(parent.reason);
      return;
    }
    parent?.addEventListener('abort', this, { once: true });
    this.#timer = setTimeout(() => this.abort(timedOut(what)), ms);
  }

  /** `parent` aborted. */
  handleEvent(): void {
    this.abort(this.#parent?.reason);
  }

  stopClock(): void {
    clearTimeout(this.#timer);
  }

  dispose(): void {
    clearTimeout(this.#timer);
    this.#parent?.removeEventListener('abort', this);
  }
}

/** A response that arrived after its caller gave up: its body is released. */
function destroyLate(v: unknown): void {
  const body = (v as { body?: { destroy?: () => void } } | null)?.body;
  body?.destroy?.();
}

/** The JSON of one SSE event, or `INVALID_RESPONSE`. */
export function eventJson(data: string, what: string): unknown {
  try {
    return JSON.parse(data);
  } catch (err) {
    throw new A2AClientError('INVALID_RESPONSE', `${what}: SSE event is not JSON`, { cause: err });
  }
}

/** Parses a JSON text, or fails with `INVALID_RESPONSE`. */
export function parseJson(text: string, what: string, status: number): unknown {
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new A2AClientError('INVALID_RESPONSE', `${what}: HTTP ${status} with a body that is not JSON`, {
      cause: err,
    });
  }
}

/** Reads a body as UTF-8 text, refusing more than `max` bytes. */
export async function readLimited(
  body: Dispatcher.ResponseData['body'],
  max: number,
  what: string,
): Promise<string> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of body) {
    const b = c as Buffer;
    n += b.length;
    if (n > max) {
      body.destroy();
      throw new A2AClientError('RESPONSE_TOO_LARGE', `response from ${what} exceeds ${max} bytes`);
    }
    chunks.push(b);
  }
  return chunks.length === 1
    ? (chunks[0] as Buffer).toString('utf8')
    : Buffer.concat(chunks).toString('utf8');
}
