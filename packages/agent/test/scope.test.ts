import { describe, expect, it } from 'vitest';
import { earliest, isDeadlineReason, parseDeadline, scopedSignal } from '../src/scope.js';

describe('deadlines', () => {
  it('parses only plain positive epoch milliseconds', () => {
    expect(parseDeadline('1795241846316')).toBe(1795241846316);
    expect(parseDeadline(['1000', '2000'])).toBe(1000);
    for (const bad of [undefined, '', '-5', '0', '1e12', '12.5', ' 100', 'soon', '9'.repeat(17)]) {
      expect(parseDeadline(bad)).toBeUndefined();
    }
  });

  it('picks the earlier of two optional deadlines', () => {
    expect(earliest(undefined, undefined)).toBeUndefined();
    expect(earliest(5, undefined)).toBe(5);
    expect(earliest(undefined, 7)).toBe(7);
    expect(earliest(9, 3)).toBe(3);
  });

  it('aborts at the deadline with a recognisable reason', async () => {
    const { signal, dispose } = scopedSignal([], Date.now() + 20);
    await new Promise<void>((resolve) => signal.addEventListener('abort', () => resolve()));
    expect(isDeadlineReason(signal.reason)).toBe(true);
    dispose();
  });

  it('follows its parents, and dispose() leaves nothing armed', async () => {
    const parent = new AbortController();
    const a = scopedSignal([parent.signal], undefined);
    parent.abort(new Error('canceled'));
    expect(a.signal.aborted).toBe(true);
    expect((a.signal.reason as Error).message).toBe('canceled');
    expect(isDeadlineReason(a.signal.reason)).toBe(false);

    const b = scopedSignal([new AbortController().signal], Date.now() + 10);
    b.dispose();
    await new Promise((r) => setTimeout(r, 30));
    expect(b.signal.aborted).toBe(false);

    expect(scopedSignal([], Date.now() - 1).signal.aborted).toBe(true);
    // Beyond a Node timer's range (which would fire after 1 ms): no timer, no early abort.
    const far = scopedSignal([], Date.now() + 40 * 24 * 3600 * 1000);
    await new Promise((r) => setTimeout(r, 30));
    expect(far.signal.aborted).toBe(false);
    far.dispose();
    expect(scopedSignal([AbortSignal.abort('x')], undefined).signal.reason).toBe('x');
  });
});
