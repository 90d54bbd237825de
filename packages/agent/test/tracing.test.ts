import { describe, expect, it } from 'vitest';
import { createContextKey, trace } from '@opentelemetry/api';
import { extractTraceContext, injectTraceHeaders, outgoingTraceContext, traceIdOf } from '../src/tracing.js';

describe('trace context', () => {
  it('continues an incoming trace unchanged to the next hop: Weave records no span to be a parent', () => {
    for (const incoming of [
      '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01',
      // Not sampled by the caller: the next hop is not sampled either.
      '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00',
    ]) {
      const ctx = extractTraceContext({ traceparent: incoming, tracestate: 'vendor=x' });
      expect(traceIdOf(ctx)).toBe('4bf92f3577b34da6a3ce929d0e0e4736');
      expect(injectTraceHeaders(outgoingTraceContext(ctx))).toEqual({
        traceparent: incoming,
        tracestate: 'vendor=x',
      });
    }
  });

  it('marks a trace it starts as sampled, so a callee sampling by its parent keeps the spans', () => {
    for (const ctx of [outgoingTraceContext(), extractTraceContext({})]) {
      const [version, traceId, spanId, flags] = injectTraceHeaders(ctx).traceparent!.split('-');
      expect([version, flags]).toEqual(['00', '01']);
      expect(traceId).toMatch(/^[0-9a-f]{32}$/);
      expect(spanId).toMatch(/^[0-9a-f]{16}$/);
    }
  });

  it('starts a new trace when the header is missing or malformed', () => {
    for (const headers of [
      {},
      { traceparent: 'garbage' },
      { traceparent: '00-' + '0'.repeat(32) + '-' + '0'.repeat(16) + '-01' },
    ]) {
      const ctx = extractTraceContext(headers);
      const sc = trace.getSpanContext(ctx)!;
      expect(sc.traceId).toMatch(/^[0-9a-f]{32}$/);
      expect(sc.traceId).not.toBe('0'.repeat(32));
    }
  });

  it('a call context is an OpenTelemetry context: values set on it go to the copy, not the original', () => {
    const k = createContextKey('test.k');
    const other = createContextKey('test.other');
    const incoming = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
    const base = extractTraceContext({ traceparent: incoming });
    const a = base.setValue(k, 1);
    const b = a.setValue(k, 2).setValue(other, 'x');
    const c = b.deleteValue(k);
    expect([base.getValue(k), a.getValue(k), b.getValue(k), c.getValue(k)]).toEqual([
      undefined,
      1,
      2,
      undefined,
    ]);
    expect(c.getValue(other)).toBe('x');
    expect(c.deleteValue(other).getValue(other)).toBeUndefined();
    // The span context travels through every copy, and can be replaced on one.
    for (const ctx of [a, b, c]) expect(traceIdOf(ctx)).toBe('4bf92f3577b34da6a3ce929d0e0e4736');
    const replaced = trace.setSpanContext(c, { ...trace.getSpanContext(c)!, spanId: 'b7ad6b7169203331' });
    expect(trace.getSpanContext(replaced)!.spanId).toBe('b7ad6b7169203331');
    expect(trace.getSpanContext(c)!.spanId).toBe('00f067aa0ba902b7');
    expect(traceIdOf(outgoingTraceContext(c))).toBe('4bf92f3577b34da6a3ce929d0e0e4736');
  });
});
