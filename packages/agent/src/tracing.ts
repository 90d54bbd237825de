import { randomBytes } from 'node:crypto';
import {
  context as otelContext,
  defaultTextMapGetter,
  defaultTextMapSetter,
  isSpanContextValid,
  trace,
  TraceFlags,
  type Context,
  type SpanContext,
} from '@opentelemetry/api';
import { W3CTraceContextPropagator } from '@opentelemetry/core';

// Not registered globally: an application's own OpenTelemetry set-up stays in charge.
const propagator = new W3CTraceContextPropagator();

/**
 * An OpenTelemetry context as a chain of links, each one key and its value
 * on top of its parent. The API's own (`ROOT_CONTEXT`'s) copies a Map on
 * every `setValue`, and every served call sets two values (the caller's span,
 * the deadline) and every outgoing call one or two: a Map and its table per
 * value, where a link is one small object. Lookups walk a chain that is a
 * few links long. Values set on it by anyone (an application's propagator,
 * OpenTelemetry's `trace.setSpan`) make links too.
 */
class LinkedContext implements Context {
  constructor(
    private readonly parent: LinkedContext | undefined,
    private readonly key: symbol | undefined,
    private readonly value: unknown,
  ) {}

  getValue(key: symbol): unknown {
    if (this.key === key) return this.value === DELETED ? undefined : this.value;
    return this.parent?.getValue(key);
  }

  setValue(key: symbol, value: unknown): Context {
    return new LinkedContext(this, key, value);
  }

  deleteValue(key: symbol): Context {
    return new LinkedContext(this, key, DELETED);
  }
}

/** The value of a link that removes its key. */
const DELETED: unique symbol = Symbol('deleted');

/** The empty context every call's trace context starts from (see {@link LinkedContext}). */
const ROOT = new LinkedContext(undefined, undefined, undefined);

/**
 * Reads `traceparent`/`tracestate` from incoming headers. Returns a context
 * whose span context is the remote parent, or a fresh trace when the caller
 * sent none (so every call has a trace id to correlate logs with).
 */
export function extractTraceContext(headers: Record<string, string | string[] | undefined>): Context {
  const ctx = propagator.extract(ROOT, headers, defaultTextMapGetter);
  const sc = trace.getSpanContext(ctx);
  return sc && isSpanContextValid(sc) ? ctx : newTraceContext();
}

// Trace and span ids need randomness, not secrecy: take them from a pooled
// buffer refilled in bulk (one crypto call per 256 ids instead of one per id).
const POOL_BYTES = 4096;
let pool = Buffer.alloc(0);
let offset = POOL_BYTES;

function randomHex(bytes: number): string {
  if (offset + bytes > pool.length) {
    pool = randomBytes(POOL_BYTES);
    offset = 0;
  }
  const hex = pool.toString('hex', offset, offset + bytes);
  offset += bytes;
  // All-zero ids are invalid in W3C trace context; astronomically rare, but never emit one.
  return /^0+$/.test(hex) ? randomHex(bytes) : hex;
}

/**
 * A context carrying a new random trace, marked sampled: a callee whose SDK
 * samples by its parent (the SDK's default) would otherwise drop every span of
 * a call from a caller without an SDK (the `weave` CLI, a cron job).
 */
function newTraceContext(): Context {
  const sc: SpanContext = {
    traceId: randomHex(16),
    spanId: randomHex(8),
    traceFlags: TraceFlags.SAMPLED,
    isRemote: false,
  };
  return trace.setSpanContext(ROOT, sc);
}

/**
 * The context of an outgoing call, sent unchanged: the active span's context
 * when there is a valid one (an application with an OpenTelemetry SDK), else
 * `fallback` (the served call's own: its caller's `traceparent`, or the trace
 * Weave started for it), else a new trace. Weave records no span, so a span id
 * made up here would be a parent no backend ever sees: the callee's parent is
 * the application's span, or the one the caller's caller sent. Its flags (the
 * sampling decision) are kept as they came.
 */
export function outgoingTraceContext(fallback?: Context): Context {
  const active = otelContext.active();
  const sc = trace.getSpanContext(active);
  return sc && isSpanContextValid(sc) ? active : (fallback ?? newTraceContext());
}

/** Writes `traceparent` (and `tracestate`) for `ctx` into a header object. */
export function injectTraceHeaders(
  ctx: Context,
  headers: Record<string, string> = {},
): Record<string, string> {
  propagator.inject(ctx, headers, defaultTextMapSetter);
  return headers;
}

/** The trace id of a context, used as the log correlation id. */
export function traceIdOf(ctx: Context): string {
  return trace.getSpanContext(ctx)?.traceId ?? '0'.repeat(32);
}
