import { randomBytes } from 'node:crypto';
import {
  ROOT_CONTEXT,
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
 * Reads `traceparent`/`tracestate` from incoming headers. Returns a context
 * whose span context is the remote parent, or a fresh trace when the caller
 * sent none (so every call has a trace id to correlate logs with).
 */
export function extractTraceContext(headers: Record<string, string | string[] | undefined>): Context {
  const ctx = propagator.extract(ROOT_CONTEXT, headers, defaultTextMapGetter);
  const sc = trace.getSpanContext(ctx);
  return sc && isSpanContextValid(sc) ? ctx : newTraceContext();
}

/** A context carrying a new random trace (sampled flag off). */
export function newTraceContext(): Context {
  const sc: SpanContext = {
    traceId: randomBytes(16).toString('hex'),
    spanId: randomBytes(8).toString('hex'),
    traceFlags: TraceFlags.NONE,
    isRemote: false,
  };
  return trace.setSpanContext(ROOT_CONTEXT, sc);
}

/**
 * The context of an outgoing call: the active span's context when there is one
 * (an application with an OpenTelemetry SDK), else `fallback`, else a new trace.
 * A child span id is minted so the callee sees this hop as its parent.
 */
export function outgoingTraceContext(fallback?: Context): Context {
  const active = trace.getSpanContext(otelContext.active());
  const base = active && isSpanContextValid(active) ? otelContext.active() : (fallback ?? newTraceContext());
  const parent = trace.getSpanContext(base)!;
  return trace.setSpanContext(base, { ...parent, spanId: randomBytes(8).toString('hex'), isRemote: false });
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
