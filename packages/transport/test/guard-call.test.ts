// SecureChannel.guardCall: a call another client stack makes on the
// channel's credentials (grpc-js, for the A2A gRPC binding) counts in the
// channel's own circuit breaker, read as the channel reads its requests: a
// failure before any answer counts, an answer of the peer is a success, the
// caller's own doing neither (and a half-open trial so ended opens the
// circuit again). An open circuit, or a closed channel, refuses the call
// without running it. No network: the calls are stand-ins.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { IdentityProvider } from '@weave/identity';
import { CircuitOpenError, SecureChannel, TransportError, type CallFailureKind } from '../src/index.js';
import { makeTd, provider, removeTempDirs } from '@weave/test-support/tls-fixtures';

let identity: IdentityProvider & { close(): Promise<void> };
const channels: SecureChannel[] = [];

beforeAll(async () => {
  const td = await makeTd('guard.test');
  identity = await provider(td, '/client');
});

afterEach(async () => {
  await Promise.all(channels.splice(0).map((c) => c.destroy()));
});

afterAll(async () => {
  await identity?.close();
  removeTempDirs();
});

function channel(resetTimeoutMs = 10_000): SecureChannel {
  const c = new SecureChannel(identity, 'spiffe://guard.test/server', {
    circuitBreaker: { volumeThreshold: 2, errorThresholdPercentage: 50, resetTimeoutMs },
  });
  channels.push(c);
  return c;
}

/** A failure of the stand-in call, of the kind its message names. */
const failing = (kind: CallFailureKind) => () => Promise.reject(new Error(kind));
const kindOf = (err: unknown): CallFailureKind => (err as Error).message as CallFailureKind;
const outcome = (p: Promise<unknown>) =>
  p.then(
    (v) => ({ value: v }),
    (e: unknown) => ({ error: e }),
  );

describe('SecureChannel.guardCall', () => {
  it('unreachable failures open the circuit; then a call is refused with CircuitOpenError, not run', async () => {
    const c = channel();
    for (let i = 0; i < 2; i++) {
      expect(await outcome(c.guardCall(failing('unreachable'), kindOf))).toEqual({
        error: new Error('unreachable'),
      });
    }
    expect(c.circuitBreaker?.state).toBe('open');
    let ran = false;
    const refused = await outcome(
      c.guardCall(() => {
        ran = true;
        return Promise.resolve('sent');
      }, kindOf),
    );
    expect((refused as { error: unknown }).error).toBeInstanceOf(CircuitOpenError);
    expect(ran).toBe(false);
  });

  it("the peer's answers reach the caller as they are and count as successes", async () => {
    const c = channel();
    for (let i = 0; i < 4; i++) {
      expect(await outcome(c.guardCall(failing('answered'), kindOf))).toEqual({
        error: new Error('answered'),
      });
    }
    expect(await outcome(c.guardCall(() => Promise.resolve(42), kindOf))).toEqual({ value: 42 });
    expect(c.circuitBreaker?.state).toBe('closed');
    expect(c.circuitBreaker?.metrics()).toMatchObject({ failures: 0, successes: 5 });
  });

  it("the caller's own failures do not count, and a half-open trial so ended opens the circuit again", async () => {
    const c = channel(50);
    for (let i = 0; i < 4; i++) await c.guardCall(failing('caller'), kindOf).catch(() => undefined);
    expect(c.circuitBreaker?.metrics().failures).toBe(0);
    expect(c.circuitBreaker?.state).toBe('closed');
    // opossum counts them as successes in its window: more than as many failures open it.
    for (let i = 0; i < 5; i++) await c.guardCall(failing('unreachable'), kindOf).catch(() => undefined);
    expect(c.circuitBreaker?.state).toBe('open');
    await new Promise((resolve) => setTimeout(resolve, 80));
    expect(c.circuitBreaker?.state).toBe('half-open');
    expect(await outcome(c.guardCall(failing('caller'), kindOf))).toEqual({ error: new Error('caller') });
    expect(c.circuitBreaker?.state).toBe('open');
  });

  it('a call that throws before returning a promise fails as it threw, read by its kind', async () => {
    const c = channel();
    const thrown = new Error('answered');
    for (let i = 0; i < 3; i++) {
      const r = await outcome(
        c.guardCall(() => {
          throw thrown;
        }, kindOf),
      );
      expect((r as { error: unknown }).error).toBe(thrown);
    }
    expect(c.circuitBreaker?.state).toBe('closed');
  });

  it('a closed channel refuses the call with CHANNEL_CLOSED without running it, breaker or not', async () => {
    for (const c of [
      channel(),
      new SecureChannel(identity, 'spiffe://guard.test/server', { circuitBreaker: false }),
    ]) {
      await c.close();
      let ran = false;
      const r = await outcome(
        c.guardCall(() => {
          ran = true;
          return Promise.resolve('sent');
        }, kindOf),
      );
      const err = (r as { error: unknown }).error;
      expect(err).toBeInstanceOf(TransportError);
      expect((err as TransportError).code).toBe('CHANNEL_CLOSED');
      expect(ran).toBe(false);
    }
  });
});
