import { describe, expect, it } from 'vitest';
import {
  CircuitOpenError,
  PeerVerificationError,
  RetryPolicy,
  TransportConfigError,
  type RetryContext,
} from '../src/index.js';

const netErr = (code: string) => Object.assign(new Error(code), { code });

describe('RetryPolicy', () => {
  it('full jitter: delays lie in [0, min(max, min*factor^(n-1))]', () => {
    const p = new RetryPolicy({ minDelayMs: 100, maxDelayMs: 500, factor: 2 });
    expect(p.delayFor(1, () => 0)).toBe(0);
    expect(p.delayFor(1, () => 0.999999)).toBe(99);
    expect(p.delayFor(2, () => 0.5)).toBe(100);
    expect(p.delayFor(3, () => 0.999999)).toBe(399);
    expect(p.delayFor(10, () => 0.999999)).toBe(499); // capped
    const seen = new Set(Array.from({ length: 50 }, () => p.delayFor(3)));
    expect(seen.size).toBeGreaterThan(5); // actually random
  });

  // An attempt that always fails: how often the policy tries, and that it
  // rejects with the very error the last attempt threw.
  it.each<[string, number, RetryContext, () => Error, number]>([
    ['stops at its limit (retries + 1 attempts)', 3, { method: 'GET' }, () => netErr('ECONNRESET'), 4],
    [
      'never retries a POST whose connection failed after it was sent',
      3,
      { method: 'POST' },
      () => netErr('UND_ERR_SOCKET'),
      1,
    ],
    [
      'retries a POST when the error proves nothing was sent',
      2,
      { method: 'POST' },
      () => netErr('ECONNREFUSED'),
      3,
    ],
    [
      'does not retry a non-replayable body even for PUT',
      2,
      { method: 'PUT', replayable: false },
      () => netErr('ECONNRESET'),
      1,
    ],
    [
      'never retries a peer verification failure',
      3,
      { method: 'GET' },
      () => new PeerVerificationError('spiffe://a.test/x', undefined, 'mismatch'),
      1,
    ],
    [
      'never retries an open circuit breaker',
      3,
      { method: 'GET' },
      () => new CircuitOpenError('spiffe://a.test/x'),
      1,
    ],
  ])('%s', async (_what, retries, ctx, fail, expected) => {
    const p = new RetryPolicy({ retries, minDelayMs: 1, maxDelayMs: 2 });
    let attempts = 0;
    let last: Error | undefined;
    const err = await p
      .run(async () => {
        attempts++;
        last = fail();
        throw last;
      }, ctx)
      .catch((e: unknown) => e);
    expect(attempts).toBe(expected);
    expect(err).toBeDefined();
    expect(err).toBe(last);
  });

  // The one decision of both channel paths; the dispatch path adds what it saw (sent, responded).
  const socket = netErr('UND_ERR_SOCKET');
  it.each<[string, unknown, RetryContext, boolean]>([
    ['POST on no connection', new Error('socket hang up'), { method: 'POST', sent: false }, true],
    ['malformed, unsent', netErr('UND_ERR_INVALID_ARG'), { method: 'GET', sent: false }, false],
    ['POST carried, then reset', socket, { method: 'POST', sent: true }, false],
    ['GET carried, then reset', socket, { method: 'GET', sent: true }, true],
    ['GET after a response started', socket, { method: 'GET', sent: true, responded: true }, false],
    ["the caller's abort", netErr('UND_ERR_ABORTED'), { method: 'GET', sent: false }, false],
    ['an open circuit', new CircuitOpenError('x'), { method: 'GET', sent: false }, false],
    ['PUT of a sent stream', netErr('ECONNRESET'), { method: 'PUT', sent: true, replayable: false }, false],
  ])('shouldRetry: %s', (_name, err, ctx, expected) => {
    expect(new RetryPolicy().shouldRetry(err, ctx)).toBe(expected);
  });

  it('returns the first success', async () => {
    const p = new RetryPolicy({ retries: 3, minDelayMs: 1, maxDelayMs: 2 });
    let attempts = 0;
    const v = await p.run(
      async () => {
        if (++attempts < 3) throw netErr('UND_ERR_SOCKET');
        return 'ok';
      },
      { method: 'PUT' },
    );
    expect(v).toBe('ok');
    expect(attempts).toBe(3);
  });

  it('rejects invalid options', () => {
    expect(() => new RetryPolicy({ retries: -1 })).toThrow(TransportConfigError);
  });
});
