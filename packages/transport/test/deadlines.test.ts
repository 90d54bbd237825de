// The one timer behind many deadlines (src/deadlines.ts): the A2A task
// manager's blocking waits, the client's unary exchanges, the agent's handler
// guards and every held connection's peer certificate end use it instead of
// a setTimeout each, so each entry must still expire at its own deadline, by
// the wall clock, whatever order the deadlines come in, and never after it
// was deleted. (Moved here from @weave/a2a with the class.)
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { MAX_TIMER_MS } from '@weave/identity';
import { Deadlines, type Deadline } from '../src/deadlines.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

afterEach(() => {
  vi.useRealTimers();
  vi.unstubAllGlobals();
});

describe('Deadlines', () => {
  it('expires each entry at its own deadline, an earlier one added after a later one included', async () => {
    const d = new Deadlines<() => void>((expire) => expire());
    const fired: string[] = [];
    const t0 = Date.now();
    const late = d.add(() => fired.push('late'), t0 + 5000);
    d.add(() => fired.push('early'), t0 + 20);
    d.add(() => fired.push('middle'), t0 + 60);
    await sleep(300);
    expect(fired).toEqual(['early', 'middle']);
    // The late one still waits; deleted, it never fires.
    expect(d.size).toBe(1);
    d.delete(late);
    expect(d.size).toBe(0);
  });

  it('never calls an entry deleted before its deadline', async () => {
    const d = new Deadlines<() => void>((expire) => expire());
    let fired = 0;
    const entry = d.add(() => fired++, Date.now() + 10);
    d.delete(entry);
    d.delete(entry); // a second delete does nothing
    await sleep(60);
    expect(fired).toBe(0);
    expect(d.size).toBe(0);
  });

  it('an entry added by an expiry function, past due or later, expires too', async () => {
    const d = new Deadlines<() => void>((expire) => expire());
    const fired: string[] = [];
    d.add(() => {
      fired.push('first');
      d.add(() => fired.push('due at once'), Date.now() - 1);
      d.add(() => fired.push('later'), Date.now() + 30);
    }, Date.now() + 10);
    await sleep(300);
    expect(fired).toEqual(['first', 'due at once', 'later']);
    expect(d.size).toBe(0);
  });

  it('keeps a key with deadline Infinity (or NaN) until deleted, and lists what waits', async () => {
    const d = new Deadlines<string>(() => {
      throw new Error('nothing here expires');
    });
    const a = d.add('a', Infinity);
    const b = d.add('b', Date.now() + 60_000);
    const c = d.add('c', Infinity);
    const n = d.add('n', NaN);
    await sleep(30);
    expect(d.keys().sort()).toEqual(['a', 'b', 'c', 'n']);
    d.delete(b);
    expect(d.keys().sort()).toEqual(['a', 'c', 'n']);
    d.delete(a);
    d.delete(n);
    expect(d.keys()).toEqual(['c']);
    const e = d.add('e', Infinity);
    d.delete(c);
    expect(d.keys()).toEqual(['e']);
    d.delete(e);
    expect(d.keys()).toEqual([]);
    expect(d.size).toBe(0);
    expect(d.add('f', Infinity).key).toBe('f');
    expect(d.keys()).toEqual(['f']);
  });

  it('an expiry that deletes another entry, due in the same turn or still waiting, stops it', async () => {
    const d = new Deadlines<() => void>((expire) => expire());
    const fired: string[] = [];
    const t0 = Date.now();
    const later: Array<ReturnType<typeof d.add>> = [];
    d.add(() => {
      fired.push('first');
      for (const e of later) d.delete(e);
    }, t0 + 10);
    later.push(d.add(() => fired.push('due with the first'), t0 + 10));
    later.push(d.add(() => fired.push('waiting'), t0 + 40));
    d.add(() => fired.push('last'), t0 + 60);
    await sleep(200);
    expect(fired).toEqual(['first', 'last']);
    expect(d.size).toBe(0);
  });

  it('a deleted entry holds on to nothing: its old neighbours and their keys can be collected', async () => {
    // A deleted entry can outlive its call (promoted, or kept by the caller); if it still linked
    // to its neighbours it would keep their keys, and all they reach, out of every collection.
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const d = new Deadlines<object>(() => undefined);
    const now = Date.now();
    const { kept, refs } = (() => {
      // In order (the list) and out of order (the heap).
      const first = d.add({ name: 'kept' }, now + 60_000);
      const second = d.add({ name: 'neighbour' }, now + 60_000);
      const third = d.add({ name: 'out of order' }, now + 30_000);
      const fourth = d.add({ name: 'out of order too' }, now + 20_000);
      for (const e of [first, second, third, fourth]) d.delete(e);
      return { kept: first, refs: [second, third, fourth].map((e) => new WeakRef(e.key)) };
    })();
    for (let i = 0; i < 3 && refs.some((r) => r.deref() !== undefined); i++) {
      await sleep(0);
      gc();
    }
    expect(refs.map((r) => r.deref())).toEqual([undefined, undefined, undefined]);
    expect(kept.key).toEqual({ name: 'kept' });
  });

  it('its timer, left armed once its entries are gone, keeps neither it nor what its onExpire reaches', async () => {
    // A stopped server's run deadlines: the timer stays armed for the first
    // task's bound (an hour by default) and used to keep the whole server alive until then.
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const refs = (() => {
      const owner = { name: 'a stopped server', big: new Array(1000).fill('x') };
      const d = new Deadlines<object>(() => void owner.name);
      d.delete(d.add({}, Date.now() + 3_600_000));
      return [new WeakRef(d), new WeakRef(owner)];
    })();
    for (let i = 0; i < 5 && refs.some((r) => r.deref() !== undefined); i++) {
      await sleep(0);
      gc();
    }
    expect(refs.map((r) => r.deref())).toEqual([undefined, undefined]);
  });

  it('a Deadlines its owner keeps still expires its entries', async () => {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const fired: string[] = [];
    const d = new Deadlines<string>((k) => fired.push(k));
    d.add('due', Date.now() + 50);
    gc();
    await sleep(120);
    expect(fired).toEqual(['due']);
    expect(d.size).toBe(0);
  });

  it('expires deadlines that come in any order each at its own time, earliest first, and none deleted', async () => {
    // Connections' certificate ends: every order, some gone before their end.
    const d = new Deadlines<number>((at) => fired.push({ at, now: Date.now() }));
    const fired: Array<{ at: number; now: number }> = [];
    const t0 = Date.now();
    let x = 7;
    const random = () => (x = (x * 1103515245 + 12345) % 2147483648) / 2147483648;
    const entries: Array<Deadline<number>> = [];
    for (let i = 0; i < 400; i++) {
      // Half of them in order, half anywhere in the next 150 ms; a few never.
      const at =
        i % 40 === 0 ? Infinity : i % 2 === 0 ? t0 + 20 + i / 4 : Math.round(t0 + 20 + random() * 150);
      entries.push(d.add(at, at));
    }
    const deleted = new Set<Deadline<number>>();
    for (let i = 0; i < 100; i++) {
      const e = entries[Math.floor(random() * entries.length)]!;
      d.delete(e);
      deleted.add(e);
    }
    const expected = entries
      .filter((e) => !deleted.has(e) && e.at < Infinity)
      .map((e) => e.at)
      .sort((a, b) => a - b);
    await sleep(400);
    expect(fired.map((f) => f.at)).toEqual(expected);
    for (const f of fired) expect(f.now).toBeGreaterThanOrEqual(f.at);
    expect(d.size).toBe(entries.filter((e) => !deleted.has(e) && e.at === Infinity).length);
  });

  it('goes by the wall clock: a timer that fires before the deadline (clock set back, or the timer limit) is armed again', () => {
    vi.useFakeTimers({ now: 1_000_000_000_000 });
    const fired: string[] = [];
    const d = new Deadlines<string>((k) => fired.push(k));
    const t0 = Date.now();
    d.add('in a second', t0 + 1000);
    d.add('past the timer limit', t0 + MAX_TIMER_MS + 5000);
    // The wall clock steps back 5 s: the timer still fires a second on, and the entry waits on.
    vi.setSystemTime(t0 - 5000);
    vi.advanceTimersByTime(1000);
    expect(fired).toEqual([]);
    vi.advanceTimersByTime(5000);
    expect(fired).toEqual(['in a second']);
    // Node's limit: the timer fires at MAX_TIMER_MS, then waits for what is left.
    vi.setSystemTime(t0);
    vi.advanceTimersByTime(MAX_TIMER_MS);
    expect(fired).toEqual(['in a second']);
    vi.advanceTimersByTime(5000);
    expect(fired).toEqual(['in a second', 'past the timer limit']);
    expect(d.size).toBe(0);
  });

  it('one timer: armed again only for an earlier deadline, and not cleared when entries go', () => {
    vi.useFakeTimers({ now: 1_000_000_000_000 });
    const d = new Deadlines<number>(() => undefined);
    const t0 = Date.now();
    const entries = [d.add(1, t0 + 3000), d.add(2, t0 + 4000), d.add(3, t0 + 2000), d.add(4, t0 + 5000)];
    expect(vi.getTimerCount()).toBe(1);
    for (const e of entries) d.delete(e);
    // Left armed (for t0 + 2000): it fires with nothing due and arms nothing more.
    expect(vi.getTimerCount()).toBe(1);
    vi.advanceTimersByTime(2000);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('an expiry that throws does not keep the others due with it from expiring; the error is thrown again', async () => {
    const thrown: unknown[] = [];
    // What Deadlines throws again from a microtask would be an uncaught exception: kept here instead.
    vi.stubGlobal('queueMicrotask', (f: () => void) => {
      try {
        f();
      } catch (err) {
        thrown.push(err);
      }
    });
    const fired: string[] = [];
    const d = new Deadlines<string>((k) => {
      fired.push(k);
      if (k === 'throws') throw new Error('expiry failed');
    });
    const t0 = Date.now();
    d.add('throws', t0 + 10);
    d.add('after it', t0 + 10);
    d.add('out of order', t0 + 5);
    await sleep(100);
    expect(fired).toEqual(['out of order', 'throws', 'after it']);
    expect(thrown).toEqual([new Error('expiry failed')]);
  });
});
