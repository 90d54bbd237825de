import type { FastifyReply, FastifyRequest } from 'fastify';

/** Above this many unsent bytes a subscriber is too slow: it is cut off and may reconnect with Last-Event-ID. */
const MAX_BUFFERED_BYTES = 4 * 1024 * 1024;

/**
 * One server-sent-event stream carrying JSON-RPC responses. Every event is a
 * whole JSON-RPC response echoing the request id; events that belong to a
 * task's log carry `id: <sequence>` so a client can resume with
 * `Last-Event-ID`.
 */
export class SseWriter {
  readonly #reply: FastifyReply;
  readonly #idJson: string;
  #timer: NodeJS.Timeout | undefined;
  #closed = false;
  #onClose: (() => void) | undefined;

  constructor(
    request: FastifyRequest,
    reply: FastifyReply,
    requestId: string | number | null,
    heartbeatMs: number,
  ) {
    this.#reply = reply;
    this.#idJson = JSON.stringify(requestId);
    reply.hijack();
    const headers: Record<string, string> = {
      'content-type': 'text/event-stream',
      'cache-control': 'no-cache',
      'x-accel-buffering': 'no',
    };
    // HTTP/2 forbids connection-specific headers.
    if (request.raw.httpVersionMajor < 2) headers.connection = 'keep-alive';
    reply.raw.writeHead(200, headers);
    reply.raw.on('close', () => this.close());
    if (heartbeatMs > 0) {
      this.#timer = setInterval(() => this.#write(': keep-alive\n\n'), heartbeatMs);
      this.#timer.unref();
    }
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Runs once when the stream ends, whoever ends it. */
  onClose(fn: () => void): void {
    if (this.#closed) fn();
    else this.#onClose = fn;
  }

  /** Sends a JSON-RPC result event; `seq` becomes the SSE event id. */
  send(result: unknown, seq?: number): void {
    const idLine = seq === undefined ? '' : `id: ${seq}\n`;
    this.#write(
      `${idLine}data: {"jsonrpc":"2.0","id":${this.#idJson},"result":${JSON.stringify(result)}}\n\n`,
    );
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#timer) clearInterval(this.#timer);
    const raw = this.#reply.raw;
    if (!raw.writableEnded) raw.end();
    const fn = this.#onClose;
    this.#onClose = undefined;
    fn?.();
  }

  #write(chunk: string): void {
    if (this.#closed) return;
    const raw = this.#reply.raw;
    if (raw.writableLength > MAX_BUFFERED_BYTES) {
      this.close();
      return;
    }
    raw.write(chunk);
  }
}
