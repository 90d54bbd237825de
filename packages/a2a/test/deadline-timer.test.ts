// The one timer behind many deadlines (src/deadlines.ts): the task manager's
// blocking waits and the client's unary exchanges use it instead of a
// setTimeout per call, so each entry must still expire at its own deadline,
// whatever order the deadlines come in, and never after it was deleted.
import { describe, expect, it } from 'vitest';
import { Deadlines } from '../src/deadlines.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('Deadlines', () => {
  it('expires each entry at its own deadline, an earlier one added after a later one included', async () => {
    const d = new Deadlines<() => void>((expire) => expire());
    const fired: string[] = [];
    const t0 = Date.now();
    const late = () => fired.push('late');
    d.add(late, t0 + 5000);
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
    const expire = () => fired++;
    d.add(expire, Date.now() + 10);
    d.delete(expire);
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
    d.add('a', Infinity);
    d.add('b', Date.now() + 60_000);
    d.add('c', Infinity);
    await sleep(30);
    expect([...d.keys()]).toEqual(['a', 'b', 'c']);
    d.delete('b');
    expect([...d.keys()]).toEqual(['a', 'c']);
  });
});
