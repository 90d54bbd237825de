import pRetry from 'p-retry';
import { setTimeout as sleep } from 'node:timers/promises';
import { RetryOptionsSchema, formatIssues, type RetryOptions, type RetryOptionsInput } from './config.js';
import { CircuitOpenError, TransportConfigError, TransportError } from './errors.js';

/** Methods RFC 9110 defines as idempotent: repeating them has the same effect as sending once. */
const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE']);

/** True for methods that may be repeated after an unknown outcome. */
export function isIdempotentMethod(method: string): boolean {
  return IDEMPOTENT.has(method.toUpperCase());
}

// Failures that happen before a connection exists: the request cannot have reached the server.
const NOT_SENT_CODES = new Set([
  'ECONNREFUSED',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'UND_ERR_CONNECT_TIMEOUT',
  'ERR_HTTP2_GOAWAY_SESSION',
  'NGHTTP2_REFUSED_STREAM',
  'WEAVE_NOT_SENT',
]);

// Failures of an established connection: the request may or may not have been processed.
const TRANSIENT_CODES = new Set([
  'ECONNRESET',
  'EPIPE',
  'ETIMEDOUT',
  'UND_ERR_SOCKET',
  'UND_ERR_HEADERS_TIMEOUT',
  'ERR_HTTP2_STREAM_ERROR',
  'ERR_HTTP2_SESSION_ERROR',
  'ERR_HTTP2_STREAM_CANCEL',
]);

// Errors raised by undici for a request that is wrong in itself (or a closed
// dispatcher): repeating it cannot help.
const REQUEST_ERROR_CODES = new Set([
  'UND_ERR_INVALID_ARG',
  'UND_ERR_NOT_SUPPORTED',
  'UND_ERR_DESTROYED',
  'UND_ERR_CLOSED',
]);

function codesOf(err: unknown): string[] {
  const out: string[] = [];
  let cur: unknown = err;
  for (let depth = 0; depth < 5 && cur && typeof cur === 'object'; depth++) {
    const code = (cur as { code?: unknown }).code;
    if (typeof code === 'string') out.push(code);
    cur = (cur as { cause?: unknown }).cause;
  }
  return out;
}

/** True when the error proves no request byte reached the server (connect-phase failures). */
export function provesNothingSent(err: unknown): boolean {
  if (err instanceof TransportError) return false;
  return codesOf(err).some((c) => NOT_SENT_CODES.has(c));
}

/** True for network failures where retrying is sensible if repeating the request is harmless. */
export function isTransientNetworkError(err: unknown): boolean {
  if (err instanceof TransportError) return false;
  return codesOf(err).some((c) => NOT_SENT_CODES.has(c) || TRANSIENT_CODES.has(c));
}

/** What {@link RetryPolicy.shouldRetry} needs to know about the operation to decide on retries. */
export interface RetryContext {
  /** HTTP method; decides idempotency. */
  readonly method: string;
  /** False when the body is a stream that cannot be sent a second time. */
  readonly replayable?: boolean;
  /**
   * What the caller saw of the failed attempt, when it can tell (the
   * `dispatch()` path watches undici's handler events): false when no
   * connection carried the request (nothing left this process), true once
   * one did. Unknown (undefined): the error's code decides.
   */
  readonly sent?: boolean;
  /** True when a response had started: its status and body may have reached the caller, so nothing is repeated. */
  readonly responded?: boolean;
  /** Aborts waiting and further attempts. */
  readonly signal?: AbortSignal;
}

/**
 * Exponential backoff with full jitter, on p-retry. Retries an attempt only
 * when doing so cannot duplicate an effect: the method is idempotent and the
 * body can be replayed, or the failure proves nothing was sent (connect-phase
 * errors). Security failures (peer verification, open circuits, config) are
 * never retried.
 */
export class RetryPolicy {
  readonly options: RetryOptions;

  constructor(options: RetryOptionsInput = {}) {
    const res = RetryOptionsSchema.safeParse(options);
    if (!res.success) throw new TransportConfigError(formatIssues(res.error).map((m) => `retry.${m}`));
    if (res.data.maxDelayMs < res.data.minDelayMs)
      throw new TransportConfigError(['retry.maxDelayMs: must be >= retry.minDelayMs']);
    this.options = res.data;
  }

  /** The backoff before retry number `retry` (1-based): uniform in [0, min(max, min·factor^(retry-1))]. */
  delayFor(retry: number, random: () => number = Math.random): number {
    const { minDelayMs, maxDelayMs, factor } = this.options;
    const bound = Math.min(maxDelayMs, minDelayMs * factor ** Math.max(0, retry - 1));
    return Math.floor(random() * bound);
  }

  /**
   * Decides whether a failed attempt may be repeated: the one rule of both of
   * `SecureChannel`'s paths (`request()` and `dispatch()`). Never after a
   * response started, a security or config failure, an open circuit, or the
   * caller's abort; always when nothing left this process (unless the request
   * itself is wrong); when the error proves the request was not sent and the
   * body can be sent again; else only an idempotent request with a replayable
   * body after a network failure. The budget (`retries`) is the caller's to count.
   */
  shouldRetry(err: unknown, ctx: RetryContext): boolean {
    if (ctx.responded === true) return false;
    if (err instanceof CircuitOpenError || err instanceof TransportError) return false;
    const code = (err as { code?: unknown } | null)?.code;
    if (code === 'UND_ERR_ABORTED') return false;
    if (ctx.sent === false) return typeof code !== 'string' || !REQUEST_ERROR_CODES.has(code);
    if (provesNothingSent(err)) return ctx.replayable !== false;
    return isIdempotentMethod(ctx.method) && ctx.replayable !== false && isTransientNetworkError(err);
  }

  /**
   * Runs `attempt` until it succeeds, fails with a non-retryable error, or the
   * retry budget is spent; rejects with the last attempt's error.
   */
  async run<T>(attempt: (attemptNumber: number) => Promise<T>, ctx: RetryContext): Promise<T> {
    // Fast path: the first attempt runs bare, so a success costs nothing extra.
    // This is the hot path of every request (measured: p-retry adds ~7 µs per call).
    let first: T;
    try {
      first = await attempt(1);
    } catch (err) {
      return this.retryAfterFirst(err, attempt, ctx);
    }
    return first;
  }

  /**
   * The rest of {@link run} once the first attempt failed with `first`:
   * rethrows it unless it may be retried, otherwise waits and runs further
   * attempts (`attempt(n)` with n from 2) within the budget. Lets a caller
   * run its first attempt without any wrapper.
   */
  async retryAfterFirst<T>(
    first: unknown,
    attempt: (attemptNumber: number) => Promise<T>,
    ctx: RetryContext,
  ): Promise<T> {
    if (this.options.retries === 0 || !this.shouldRetry(first, ctx)) throw first;
    await sleep(this.delayFor(1), undefined, ctx.signal ? { signal: ctx.signal } : {});
    return pRetry((n) => attempt(n + 1), {
      retries: this.options.retries - 1,
      // p-retry's own backoff is not full jitter; we wait in onFailedAttempt instead.
      minTimeout: 0,
      maxTimeout: 0,
      randomize: false,
      ...(ctx.signal ? { signal: ctx.signal } : {}),
      onFailedAttempt: async ({ error, attemptNumber, retriesLeft }) => {
        // Throwing here ends p-retry with this (the original) error.
        if (retriesLeft === 0 || !this.shouldRetry(error, ctx)) throw error;
        await sleep(this.delayFor(attemptNumber + 1), undefined, ctx.signal ? { signal: ctx.signal } : {});
      },
    });
  }
}
