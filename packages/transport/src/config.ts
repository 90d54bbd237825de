import { z } from 'zod';
import { TransportConfigError } from './errors.js';

/** TLS versions Weave accepts as a floor. Anything older is refused at construction. */
export const TLS_VERSIONS = ['TLSv1.2', 'TLSv1.3'] as const;
/** A TLS version Weave accepts as a floor (`minTlsVersion`): `TLSv1.2` or `TLSv1.3`. */
export type TlsVersion = (typeof TLS_VERSIONS)[number];

/**
 * HTTP version policy of a client channel and server.
 * - `http1.1`: HTTP/1.1 over keep-alive connections (the measured default, see the README).
 * - `http2`: the client negotiates HTTP/2 by ALPN; the server speaks HTTP/2 and still accepts HTTP/1.1.
 */
export const HTTP_VERSIONS = ['http1.1', 'http2'] as const;
/** An HTTP version policy (`httpVersion`): `http1.1` or `http2`, see {@link HTTP_VERSIONS}. */
export type HttpVersion = (typeof HTTP_VERSIONS)[number];

const ms = (what: string, max: number) =>
  z
    .number({ error: `${what} must be a number of milliseconds` })
    .int(`${what} must be an integer number of milliseconds`)
    .positive(`${what} must be > 0`)
    .max(max, `${what} must be <= ${max}`);

/** Retry knobs shared by {@link TransportConfigSchema} and `RetryPolicy`. */
export const RetryOptionsSchema = z.strictObject({
  /** Retries after the first attempt (0 disables retrying). */
  retries: z.number().int().min(0).max(10).default(2),
  /** Upper bound of the first backoff; full jitter picks a delay in [0, bound]. */
  minDelayMs: z.number().int().min(0).max(60_000).default(50),
  /** Cap of any single backoff. */
  maxDelayMs: z.number().int().min(0).max(300_000).default(2_000),
  /** Exponential growth factor of the bound. */
  factor: z.number().min(1).max(10).default(2),
});
/** Retry options as callers pass them: every field optional. */
export type RetryOptionsInput = z.input<typeof RetryOptionsSchema>;
/** Validated retry options, every default filled in. */
export type RetryOptions = z.output<typeof RetryOptionsSchema>;

/** Circuit breaker knobs shared by {@link TransportConfigSchema} and `CircuitBreaker`. */
export const CircuitBreakerOptionsSchema = z.strictObject({
  /** Percentage of failed calls in the rolling window that opens the circuit. */
  errorThresholdPercentage: z.number().min(1).max(100).default(50),
  /** Minimum calls in the rolling window before the circuit may open. */
  volumeThreshold: z.number().int().min(1).max(100_000).default(10),
  /** Time an open circuit waits before letting one trial call through (half-open). */
  resetTimeoutMs: ms('resetTimeoutMs', 3_600_000).default(10_000),
  /** Length of the statistics window. */
  rollingWindowMs: ms('rollingWindowMs', 3_600_000).default(10_000),
});
/** Circuit breaker options as callers pass them: every field optional. */
export type CircuitBreakerOptionsInput = z.input<typeof CircuitBreakerOptionsSchema>;
/** Validated circuit breaker options, every default filled in. */
export type CircuitBreakerOptions = z.output<typeof CircuitBreakerOptionsSchema>;

const tlsVersion = z.string().superRefine((v, ctx) => {
  if (!(TLS_VERSIONS as readonly string[]).includes(v)) {
    ctx.addIssue({
      code: 'custom',
      message: /^(SSLv|TLSv1(\.[01])?$)/.test(v)
        ? `minTlsVersion ${v} is below TLSv1.2 and is refused`
        : `minTlsVersion must be one of ${TLS_VERSIONS.join(', ')}, got ${JSON.stringify(v)}`,
    });
  }
}) as unknown as z.ZodType<TlsVersion, TlsVersion>;

/**
 * The longest timeouts a transport config takes, in ms: a connect budget
 * longer than 10 minutes or a request budget longer than an hour is taken
 * for a mistake. Layers above bound their own settings by these, so that a
 * value too long is refused where it is written.
 */
export const TRANSPORT_TIMEOUT_LIMITS_MS = {
  connectTimeoutMs: 600_000,
  requestTimeoutMs: 3_600_000,
  idleTimeoutMs: 3_600_000,
} as const;

/**
 * Configuration of a {@link SecureChannel} and of the mTLS server helpers.
 * Security is not configurable: `verifyPeer` may only be `true`, and the TLS
 * floor is TLS 1.2 at the lowest (1.3 by default).
 */
export const TransportConfigSchema = z.strictObject({
  /** TLS floor. Default TLS 1.3; `TLSv1.2` allowed; anything lower throws. */
  minTlsVersion: tlsVersion.default('TLSv1.3'),
  /** Always `true`. Present so a config that tries `false` fails loudly instead of being ignored. */
  verifyPeer: z.literal(true, { error: 'verifyPeer cannot be disabled' }).default(true),
  /** TCP + TLS handshake budget of a new connection. */
  connectTimeoutMs: ms('connectTimeoutMs', TRANSPORT_TIMEOUT_LIMITS_MS.connectTimeoutMs).default(10_000),
  /** Budget for response headers, and for each gap between body chunks. */
  requestTimeoutMs: ms('requestTimeoutMs', TRANSPORT_TIMEOUT_LIMITS_MS.requestTimeoutMs).default(30_000),
  /** How long an unused keep-alive connection (or HTTP/2 session) stays open. */
  idleTimeoutMs: ms('idleTimeoutMs', TRANSPORT_TIMEOUT_LIMITS_MS.idleTimeoutMs).default(4_000),
  /** HTTP version policy; HTTP/1.1 by default (chosen by measurement, see README). */
  httpVersion: z.enum(HTTP_VERSIONS).default('http1.1'),
  /** Maximum connections per origin the client keeps. */
  connectionsPerOrigin: z.number().int().min(1).max(1_024).default(64),
  /** HTTP/2 only: concurrent streams per session (undici 7 caps streams at `pipelining`). */
  maxConcurrentStreams: z.number().int().min(1).max(1_000).default(100),
  /** Retry policy of `SecureChannel` requests (idempotent or provably-unsent only). */
  retry: RetryOptionsSchema.default(RetryOptionsSchema.parse({})),
  /**
   * Circuit breaker of every request through the channel, each attempt
   * counted: its own `request()` and `dispatch()`, so `fetch`,
   * `undici.request` and the A2A client too (a handler of undici's newer
   * `onRequestStart` shape, from interceptors, passes around it). The caller's
   * own aborts are not failures. `false` turns breaking (not security) off.
   */
  circuitBreaker: z
    .union([z.literal(false), CircuitBreakerOptionsSchema])
    .default(CircuitBreakerOptionsSchema.parse({})),
});

/** What callers may pass: every field optional. */
export type TransportConfigInput = z.input<typeof TransportConfigSchema>;
/** A validated configuration with every default filled in. */
export type TransportConfig = z.output<typeof TransportConfigSchema>;

/** Formats zod issues as `path: message` strings for {@link TransportConfigError}. */
export function formatIssues(error: z.ZodError): string[] {
  return error.issues.map((i) => (i.path.length ? `${i.path.join('.')}: ${i.message}` : i.message));
}

/**
 * Validates a transport configuration and fills in defaults.
 *
 * @throws {TransportConfigError} when any field is invalid, `verifyPeer` is not
 *   `true`, or the TLS floor is below 1.2.
 */
export function parseTransportConfig(input: unknown = {}): TransportConfig {
  const res = TransportConfigSchema.safeParse(input ?? {});
  if (!res.success) throw new TransportConfigError(formatIssues(res.error));
  if (res.data.retry.maxDelayMs < res.data.retry.minDelayMs) {
    throw new TransportConfigError(['retry.maxDelayMs: must be >= retry.minDelayMs']);
  }
  return res.data;
}
