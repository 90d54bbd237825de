import type { Http2Session, ServerHttp2Stream } from 'node:http2';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { type A2AError, A2AErrors, restErrorBody } from './errors.js';

/**
 * Per HTTP/2 connection: when its PING still unanswered was sent, if one is.
 * Shared by the connection's streams, so that it carries one PING at a time.
 */
const pingSentAt = new WeakMap<Http2Session, number>();

/**
 * Whether the client on `session` still answers: it is pinged (one PING at a
 * time), and a PING unanswered for `ms` means its HTTP/2 stack stopped: a
 * hung process whose kernel still takes the bytes, which the heartbeats
 * alone never reveal (they fit in the socket buffers).
 */
function clientAnswers(session: Http2Session, ms: number): boolean {
  const sent = pingSentAt.get(session);
  const now = Date.now();
  if (sent !== undefined) return now - sent < ms;
  if (session.destroyed || session.closed) return true;
  try {
    const queued = session.ping((err) => {
      if (!err) pingSentAt.delete(session);
    });
    if (queued) pingSentAt.set(session, now);
  } catch {
    // A session going away refuses new pings; its close ends the stream anyway.
  }
  return true;
}

/** Default of {@link SseWriter}'s `maxQueuedBytes`: events held for one slow subscriber. */
const DEFAULT_MAX_QUEUED_BYTES = 8 * 1024 * 1024;

/**
 * One server-sent-event stream. On the JSON-RPC binding every event is a whole
 * JSON-RPC response echoing the request id; on the HTTP+JSON binding
 * (`requestId` undefined) an event is the bare StreamResponse and an error is
 * a `google.rpc.Status` body. Events that belong to a task's log carry
 * `id: <sequence>` so a client can resume with `Last-Event-ID`.
 *
 * A subscriber reads at its own pace: once the socket stops taking data, the
 * events wait here (in order) and go out as it drains. A subscriber that falls
 * behind by more than `maxQueuedBytes` is not dropped silently: it gets what
 * was queued, then an `event: error` (UNAVAILABLE) naming the last event id it
 * got, so it can resume from there, and the stream ends.
 */
export class SseWriter {
  readonly #reply: FastifyReply;
  /** The JSON-RPC id as JSON; undefined on the HTTP+JSON binding (no envelope). */
  readonly #idJson: string | undefined;
  readonly #maxQueued: number;
  readonly #queue: string[] = [];
  /** Sequence numbers of the queued events, in step with the queue. */
  readonly #seqs: Array<number | undefined> = [];
  #queuedBytes = 0;
  /** The socket's last write asked to wait for 'drain'. */
  #blocked = false;
  /** Sequence number of the last event handed to the socket. */
  #lastSentSeq: number | undefined;
  #timer: NodeJS.Timeout | undefined;
  #closed = false;
  /** Closed by the server: the socket ends once the queue is out. */
  #ending = false;
  #onClose: (() => void) | undefined;
  #onDrained: (() => void) | undefined;

  constructor(
    request: FastifyRequest,
    reply: FastifyReply,
    requestId: string | number | null | undefined,
    heartbeatMs: number,
    maxQueuedBytes = DEFAULT_MAX_QUEUED_BYTES,
  ) {
    this.#reply = reply;
    this.#idJson = requestId === undefined ? undefined : JSON.stringify(requestId);
    this.#maxQueued = maxQueuedBytes;
    reply.hijack();
    const headers: Record<string, string> = {
      'content-type': 'text/event-stream',
      'cache-control': 'no-cache',
      'x-accel-buffering': 'no',
    };
    // HTTP/2 forbids connection-specific headers.
    if (request.raw.httpVersionMajor < 2) headers.connection = 'keep-alive';
    reply.raw.writeHead(200, headers);
    // The client left: nothing queued can reach it any more.
    reply.raw.on('close', () => {
      this.#drop();
      this.close();
    });
    reply.raw.on('drain', () => {
      this.#blocked = false;
      this.#flush();
    });
    if (heartbeatMs > 0) {
      // HTTP/2: a PING per heartbeat too. HTTP/1.1 has nothing like it.
      const session = (reply.raw as { stream?: ServerHttp2Stream }).stream?.session;
      this.#timer = setInterval(() => {
        if (session && !clientAnswers(session, heartbeatMs)) {
          // Let go of the subscriber (and its slot in maxSubscribersPerTask).
          reply.raw.destroy();
          return;
        }
        // A backed-up stream is not idle: no heartbeat needed (nor queued).
        if (this.#queue.length === 0 && !this.#blocked) this.#write(': keep-alive\n\n');
      }, heartbeatMs);
      this.#timer.unref();
    }
  }

  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Whether the socket holds events it has not taken (a write asked to wait
   * for 'drain'): the producer's flow control (`ctx.drained()`) waits then.
   */
  get backedUp(): boolean {
    return this.#blocked || this.#queue.length > 0;
  }

  /** Runs each time the socket has taken everything queued after being {@link backedUp}. */
  onDrained(fn: () => void): void {
    this.#onDrained = fn;
  }

  /** Runs once when the stream ends, whoever ends it. */
  onClose(fn: () => void): void {
    if (this.#closed) fn();
    else this.#onClose = fn;
  }

  /** Sends a result event; `seq` becomes the SSE event id. */
  send(result: unknown, seq?: number): void {
    if (this.#closed) return;
    const idLine = seq === undefined ? '' : `id: ${seq}\n`;
    const json = JSON.stringify(result);
    const chunk =
      this.#idJson === undefined
        ? `${idLine}data: ${json}\n\n`
        : `${idLine}data: {"jsonrpc":"2.0","id":${this.#idJson},"result":${json}}\n\n`;
    if (this.#queue.length === 0 && !this.#blocked) {
      this.#write(chunk);
      if (seq !== undefined) this.#lastSentSeq = seq;
      return;
    }
    if (this.#queuedBytes + chunk.length > this.#maxQueued) {
      this.#tooSlow();
      return;
    }
    this.#queue.push(chunk);
    this.#queuedBytes += chunk.length;
    this.#seqs.push(seq);
  }

  /**
   * Ends the stream: at once for the subscription (`onClose` runs), on the
   * socket once the queued events are out.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#timer) clearInterval(this.#timer);
    if (this.#queue.length === 0) this.#end();
    else this.#ending = true;
    const fn = this.#onClose;
    this.#onClose = undefined;
    fn?.();
  }

  #write(chunk: string): void {
    if (!this.#reply.raw.write(chunk)) this.#blocked = true;
  }

  #flush(): void {
    let i = 0;
    while (i < this.#queue.length && !this.#blocked) {
      const chunk = this.#queue[i] as string;
      this.#write(chunk);
      this.#queuedBytes -= chunk.length;
      const seq = this.#seqs[i];
      if (seq !== undefined) this.#lastSentSeq = seq;
      i++;
    }
    this.#queue.splice(0, i);
    this.#seqs.splice(0, i);
    if (this.#ending && this.#queue.length === 0) this.#end();
    else if (!this.#blocked && this.#queue.length === 0) this.#onDrained?.();
  }

  #drop(): void {
    this.#queue.length = 0;
    this.#seqs.length = 0;
    this.#queuedBytes = 0;
  }

  /**
   * The subscriber fell too far behind: what is queued still goes out, then
   * an error that names the last of it as the event to resume after, then the
   * end. Nothing later is queued (the task's log keeps it for the resume).
   */
  #tooSlow(): void {
    const last = this.#seqs.findLast((s) => s !== undefined) ?? this.#lastSentSeq;
    const err = A2AErrors.unavailable(
      `subscriber too slow: more than ${this.#maxQueued} bytes of events unread; resume after event ${last ?? 'none'} (Last-Event-ID)`,
    );
    this.#queue.push(this.#errorChunk(err));
    this.#seqs.push(undefined);
    this.close();
  }

  /**
   * Sends an error mid-stream as `event: error` (after what is queued), as the
   * official SDK's servers do: a JSON-RPC error response on the JSON-RPC
   * binding, a `google.rpc.Status` body on HTTP+JSON. The caller closes.
   */
  sendError(err: A2AError): void {
    if (this.#closed) return;
    const chunk = this.#errorChunk(err);
    if (this.#queue.length === 0 && !this.#blocked) this.#write(chunk);
    else {
      this.#queue.push(chunk);
      this.#seqs.push(undefined);
    }
  }

  #errorChunk(err: A2AError): string {
    return this.#idJson === undefined
      ? `event: error\ndata: ${JSON.stringify(restErrorBody(err))}\n\n`
      : `event: error\ndata: {"jsonrpc":"2.0","id":${this.#idJson},"error":${JSON.stringify(err.toJsonRpc())}}\n\n`;
  }

  #end(): void {
    const raw = this.#reply.raw;
    if (!raw.writableEnded) raw.end();
  }
}
