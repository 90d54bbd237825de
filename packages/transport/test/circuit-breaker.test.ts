import { once } from 'node:events';
import { afterEach, describe, expect, it } from 'vitest';
import { CircuitBreaker, CircuitOpenError, CircuitState, TransportConfigError } from '../src/index.js';
import { EventEmitter } from 'node:events';

const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const c of cleanups.splice(0)) c();
});

function watched(init: ConstructorParameters<typeof CircuitBreaker>[0]) {
  const events = new EventEmitter();
  const b = new CircuitBreaker({ ...init, onStateChange: (s) => events.emit(s) });
  cleanups.push(() => b.shutdown());
  return { b, events };
}

const fail = async (): Promise<never> => {
  throw new Error('boom');
};

describe('CircuitBreaker', () => {
  it('opens after the threshold, refuses without running, half-opens after its timeout, closes on success', async () => {
    const { b, events } = watched({
      name: 'p',
      volumeThreshold: 3,
      errorThresholdPercentage: 50,
      resetTimeoutMs: 200,
    });
    expect(b.state).toBe(CircuitState.Closed);
    for (let i = 0; i < 2; i++) await expect(b.execute(fail)).rejects.toThrow('boom');
    expect(b.state).toBe(CircuitState.Closed); // below the volume threshold
    const opened = once(events, CircuitState.Open);
    await expect(b.execute(fail)).rejects.toThrow('boom');
    await opened;
    expect(b.state).toBe(CircuitState.Open);

    let ran = false;
    const err = await b
      .execute(async () => {
        ran = true;
        return 1;
      })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CircuitOpenError);
    expect((err as CircuitOpenError).code).toBe('CIRCUIT_OPEN');
    expect(ran).toBe(false);

    await once(events, CircuitState.HalfOpen);
    expect(b.state).toBe(CircuitState.HalfOpen);
    const closed = once(events, CircuitState.Closed);
    await expect(b.execute(async () => 42)).resolves.toBe(42);
    await closed;
    expect(b.state).toBe(CircuitState.Closed);
    const m = b.metrics();
    expect(m.failures).toBe(3);
    expect(m.rejects).toBe(1);
    expect(m.successes).toBe(1);
  });

  it('a failed half-open trial re-opens the circuit', async () => {
    const { b, events } = watched({ volumeThreshold: 1, resetTimeoutMs: 100 });
    await expect(b.execute(fail)).rejects.toThrow();
    expect(b.state).toBe(CircuitState.Open);
    await once(events, CircuitState.HalfOpen);
    const reopened = once(events, CircuitState.Open);
    await expect(b.execute(fail)).rejects.toThrow('boom');
    await reopened;
    expect(b.state).toBe(CircuitState.Open);
  });

  it('errors that isFailure rejects do not count', async () => {
    const { b } = watched({ volumeThreshold: 1, isFailure: (e) => (e as Error).message !== 'mine' });
    for (let i = 0; i < 5; i++)
      await expect(
        b.execute(async () => {
          throw new Error('mine');
        }),
      ).rejects.toThrow('mine');
    expect(b.state).toBe(CircuitState.Closed);
  });

  it('rejects invalid options', () => {
    expect(() => new CircuitBreaker({ errorThresholdPercentage: 0 })).toThrow(TransportConfigError);
  });
});
