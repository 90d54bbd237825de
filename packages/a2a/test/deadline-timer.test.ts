// The one timer behind many deadlines (src/deadlines.ts): the task manager's
// blocking waits and the client's unary exchanges use it instead of a
// setTimeout per call, so each entry must still expire at its own deadline,
// whatever order the deadlines come in, and never after it was deleted.
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { describe, expect, it } from 'vitest';
import { Deadlines } from '../src/deadlines.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

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

  it('keeps a key with deadline Infinity until deleted, and lists what waits, oldest first', async () => {
    const d = new Deadlines<string>(() => {
      throw new Error('nothing here expires');
    });
    const a = d.add('a', Infinity);
    const b = d.add('b', Date.now() + 60_000);
    const c = d.add('c', Infinity);
    await sleep(30);
    expect(d.keys()).toEqual(['a', 'b', 'c']);
    d.delete(b);
    expect(d.keys()).toEqual(['a', 'c']);
    d.delete(a);
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
    const { kept, ref } = (() => {
      const first = d.add({ name: 'kept' }, Infinity);
      const second = d.add({ name: 'neighbour' }, Infinity);
      d.delete(first);
      d.delete(second);
      return { kept: first, ref: new WeakRef(second.key) };
    })();
    for (let i = 0; i < 3 && ref.deref() !== undefined; i++) {
      await sleep(0);
      gc();
    }
    expect(ref.deref()).toBeUndefined();
    expect(kept.key).toEqual({ name: 'kept' });
  });
});
