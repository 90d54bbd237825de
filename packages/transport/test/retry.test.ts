import { describe, expect, it } from 'vitest';
import { CircuitOpenError, PeerVerificationError, RetryPolicy, TransportConfigError } from '../src/index.js';

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

  it('stops at its limit and rejects with the last error', async () => {
    const p = new RetryPolicy({ retries: 3, minDelayMs: 1, maxDelayMs: 2 });
    let attempts = 0;
    const err = await p
      .run(
        async () => {
          attempts++;
          throw netErr('ECONNRESET');
        },
        { method: 'GET' },
      )
      .catch((e: unknown) => e);
    expect(attempts).toBe(4);
    expect((err as { code: string }).code).toBe('ECONNRESET');
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

  it('never retries a POST whose connection failed after it was sent', async () => {
    const p = new RetryPolicy({ retries: 3, minDelayMs: 1, maxDelayMs: 2 });
    let attempts = 0;
    await expect(
      p.run(
        async () => {
          attempts++;
          throw netErr('UND_ERR_SOCKET');
        },
        { method: 'POST' },
      ),
    ).rejects.toMatchObject({ code: 'UND_ERR_SOCKET' });
    expect(attempts).toBe(1);
  });

  it('retries a POST when the error proves nothing was sent', async () => {
    const p = new RetryPolicy({ retries: 2, minDelayMs: 1, maxDelayMs: 2 });
    let attempts = 0;
    await expect(
      p.run(
        async () => {
          attempts++;
          throw netErr('ECONNREFUSED');
        },
        { method: 'POST' },
      ),
    ).rejects.toMatchObject({ code: 'ECONNREFUSED' });
    expect(attempts).toBe(3);
  });

  it('does not retry a non-replayable body even for PUT', async () => {
    const p = new RetryPolicy({ retries: 2, minDelayMs: 1, maxDelayMs: 2 });
    let attempts = 0;
    await expect(
      p.run(
        async () => {
          attempts++;
          throw netErr('ECONNRESET');
        },
        { method: 'PUT', replayable: false },
      ),
    ).rejects.toBeDefined();
    expect(attempts).toBe(1);
  });

  it('never retries security or breaker failures', async () => {
    const p = new RetryPolicy({ retries: 3, minDelayMs: 1, maxDelayMs: 2 });
    for (const e of [
      new PeerVerificationError('spiffe://a.test/x', undefined, 'mismatch'),
      new CircuitOpenError('spiffe://a.test/x'),
    ]) {
      let attempts = 0;
      await expect(
        p.run(
          async () => {
            attempts++;
            throw e;
          },
          { method: 'GET' },
        ),
      ).rejects.toBe(e);
      expect(attempts).toBe(1);
    }
  });

  it('rejects invalid options', () => {
    expect(() => new RetryPolicy({ retries: -1 })).toThrow(TransportConfigError);
  });
});
