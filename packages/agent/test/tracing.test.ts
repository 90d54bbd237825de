import { describe, expect, it } from 'vitest';
import { trace } from '@opentelemetry/api';
import { extractTraceContext, injectTraceHeaders, outgoingTraceContext, traceIdOf } from '../src/tracing.js';

describe('trace context', () => {
  it('continues an incoming trace and mints a child span id for the next hop', () => {
    const incoming = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
    const ctx = extractTraceContext({ traceparent: incoming });
    expect(traceIdOf(ctx)).toBe('4bf92f3577b34da6a3ce929d0e0e4736');
    const out = injectTraceHeaders(outgoingTraceContext(ctx));
    const [, traceId, spanId, flags] = out.traceparent!.split('-');
    expect(traceId).toBe('4bf92f3577b34da6a3ce929d0e0e4736');
    expect(spanId).not.toBe('00f067aa0ba902b7');
    expect(spanId).toMatch(/^[0-9a-f]{16}$/);
    expect(flags).toBe('01');
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
});
