import { MAX_TIMER_MS } from '@weave/identity';

/** One deadline in a {@link Deadlines}: what {@link Deadlines.add} returns and {@link Deadlines.delete} takes. */
export interface Deadline<K> {
  /** What the deadline belongs to: handed to `onExpire` once it has passed. */
  readonly key: K;
  /** Epoch ms (`Infinity`: never). */
  readonly at: number;
}

// Where an entry is, in its `i`: its index in the heap while it waits there
// (≥ 0), in the list of deadlines that came in order, taken from either as
// due (its expiry about to run), or gone.
const LISTED = -1;
const DUE = -2;
const GONE = -3;

/** A deadline and its place among the waiting ones. */
class Entry<K> implements Deadline<K> {
  prev: Entry<K> | undefined;
  next: Entry<K> | undefined;
  i = LISTED;
  constructor(
    readonly key: K,
    readonly at: number,
    /** When it was added, among this Deadlines' entries: due ones of one turn expire in deadline, then this, order. */
    readonly seq: number,
  ) {}
}

/** Due entries in the order they expire: earliest deadline first, the first added first among equal ones. */
const byDeadline = (a: Entry<unknown>, b: Entry<unknown>): number => a.at - b.at || a.seq - b.seq;

/**
 * One timer for many wall-clock deadlines. A timer armed for the earliest
 * deadline serves them all, so what waits costs no timer of its own: no
 * `setTimeout` and `clearTimeout` per call, which showed in the call bench's
 * profiles, and no Node timer list per distinct duration, which Node keeps
 * until that duration has passed even once its timer is cleared (a timer per
 * TLS connection for its peer's certificate end left one empty list per
 * connection). The timer is armed again only when an earlier deadline
 * arrives; deleting an entry leaves it armed (it may then fire with nothing
 * due, and is armed for the earliest deadline left). When it fires, every
 * entry whose deadline the wall clock (`Date.now()`) has passed is handed to
 * `onExpire` (and forgotten); a timer that fired early (timers run on the
 * monotonic clock, and wait at most `MAX_TIMER_MS`, some 24.8 days) is
 * armed again.
 *
 * Deadlines that arrive in order (calls with one timeout) wait in a linked
 * list, O(1) in and out; the others (connections' certificate ends, calls
 * with a timeout of their own, `Infinity`) in a binary min-heap, O(log n),
 * each entry knowing its index. A firing takes the due entries off the head
 * of both, instead of walking every entry: with 10 000 entries of random
 * deadlines, the walk took about 40 µs per firing, the heap under 1 µs; an
 * add and delete in order costs what it did with the list alone (a heap
 * alone took twice as long).
 *
 * A deleted entry leaves at once (its links cut, its heap slot cleared),
 * rather than staying until its deadline: a long-lived structure still
 * reaching a call's closures after the call kept them, and all they reach,
 * alive through young-generation collections until a full one, which cost a
 * `callAgent` caller about 1.6 MB promoted per scavenge when this was a Map
 * keyed by what waits (bench/README.md).
 *
 * The timer does not keep the process up (`unref`): what waits on a deadline
 * keeps it up by other means (a socket, a running task), or nothing does.
 *
 * @typeParam K - what a deadline belongs to (a waiter, a call, a connection).
 */
export class Deadlines<K> {
  /** Finite deadlines that came in order, earliest first. */
  #first: Entry<K> | undefined;
  #last: Entry<K> | undefined;
  #listed = 0;
  /** The others, a min-heap by deadline. */
  readonly #heap: Entry<K>[] = [];
  #seq = 0;
  readonly #onExpire: (key: K) => void;
  #timer: NodeJS.Timeout | undefined;
  #timerAt = Infinity;

  /**
   * @param onExpire - called with each key once its deadline has passed. It
   *   should not throw: what it throws is thrown again from a microtask (an
   *   uncaught exception) once the other keys due in the same turn have been
   *   handed over.
   */
  constructor(onExpire: (key: K) => void) {
    this.#onExpire = onExpire;
  }

  /**
   * Hands `key` to `onExpire` once `deadline` (epoch ms) has passed, unless
   * the returned entry is {@link delete}d before. `Infinity` (or `NaN`):
   * never, but the key is kept (see {@link keys}).
   */
  add(key: K, deadline: number): Deadline<K> {
    // NaN would break the heap's order (it compares false both ways): it is never due, as Infinity.
    const at = deadline === deadline ? deadline : Infinity;
    const e = new Entry(key, at, this.#seq++);
    const last = this.#last;
    if (at < Infinity && (last === undefined || last.at <= at)) {
      // In order (calls with one timeout): at the end of the list, no comparison further.
      if (last === undefined) this.#first = e;
      else {
        last.next = e;
        e.prev = last;
      }
      this.#last = e;
      this.#listed++;
    } else {
      e.i = this.#heap.push(e) - 1;
      this.#up(e);
    }
    if (at < this.#timerAt) this.#arm(at);
    return e;
  }

  /**
   * Forgets `entry`: its key is not handed to `onExpire` (also when it is due
   * and another expiry of the same turn deletes it). Deleting it again does
   * nothing. The timer is left armed.
   */
  delete(entry: Deadline<K>): void {
    const e = entry as Entry<K>;
    const i = e.i;
    e.i = GONE;
    if (i >= 0) this.#removeAt(i);
    else if (i === LISTED) this.#unlink(e);
  }

  /** Entries waiting for their deadline. */
  get size(): number {
    return this.#listed + this.#heap.length;
  }

  /** The keys waiting, in no set order (a key added with deadline `Infinity` waits until deleted). */
  keys(): K[] {
    const out: K[] = [];
    for (let e = this.#first; e !== undefined; e = e.next) out.push(e.key);
    for (const e of this.#heap) out.push(e.key);
    return out;
  }

  #unlink(e: Entry<K>): void {
    const { prev, next } = e;
    if (prev === undefined) this.#first = next;
    else prev.next = next;
    if (next === undefined) this.#last = prev;
    else next.prev = prev;
    // Cut, so that an entry kept after it left reaches none of its old neighbours' keys.
    e.prev = e.next = undefined;
    this.#listed--;
  }

  /** Takes the entry at `i` out of the heap; the last entry fills its place. */
  #removeAt(i: number): void {
    const heap = this.#heap;
    const last = heap.pop()!;
    if (i === heap.length) return;
    heap[i] = last;
    last.i = i;
    if (i > 0 && last.at < heap[(i - 1) >> 1]!.at) this.#up(last);
    else this.#down(last);
  }

  /** Moves `e` up to its place: past every parent whose deadline is later. */
  #up(e: Entry<K>): void {
    const heap = this.#heap;
    let i = e.i;
    while (i > 0) {
      const p = (i - 1) >> 1;
      const parent = heap[p]!;
      if (parent.at <= e.at) break;
      heap[i] = parent;
      parent.i = i;
      i = p;
    }
    heap[i] = e;
    e.i = i;
  }

  /** Moves `e` down to its place: below every child whose deadline is earlier. */
  #down(e: Entry<K>): void {
    const heap = this.#heap;
    const n = heap.length;
    let i = e.i;
    for (;;) {
      let c = 2 * i + 1;
      if (c >= n) break;
      let child = heap[c]!;
      const right = heap[c + 1];
      if (right !== undefined && right.at < child.at) {
        c++;
        child = right;
      }
      if (e.at <= child.at) break;
      heap[i] = child;
      child.i = i;
      i = c;
    }
    heap[i] = e;
    e.i = i;
  }

  #arm(deadline: number): void {
    clearTimeout(this.#timer);
    this.#timerAt = deadline;
    // Held weakly by its timer: one left armed after its entries went (a
    // stopped server's, whose first task's bound was an hour away) kept this,
    // its onExpire and all that reaches (the server, its agent, its tasks)
    // alive until it fired. Its owner keeps it while it is in use.
    const self = new WeakRef(this);
    this.#timer = setTimeout(
      () => {
        const d = self.deref();
        if (d !== undefined) d.#fire();
      },
      Math.min(Math.max(0, deadline - Date.now()), MAX_TIMER_MS),
    );
    this.#timer.unref();
  }

  #fire(): void {
    this.#timer = undefined;
    this.#timerAt = Infinity;
    const now = Date.now();
    const due: Entry<K>[] = [];
    for (let e = this.#first; e !== undefined && e.at <= now; e = this.#first) {
      this.#unlink(e);
      e.i = DUE;
      due.push(e);
    }
    const heap = this.#heap;
    for (let top = heap[0]; top !== undefined && top.at <= now; top = heap[0]) {
      this.#removeAt(0);
      top.i = DUE;
      due.push(top);
    }
    const next = Math.min(this.#first?.at ?? Infinity, heap[0]?.at ?? Infinity);
    if (next < Infinity) this.#arm(next);
    if (due.length > 1) due.sort(byDeadline);
    // After both are settled: an expiry may add entries (armed by add) or delete others.
    for (const e of due) {
      if (e.i !== DUE) continue;
      e.i = GONE;
      try {
        this.#onExpire(e.key);
      } catch (err) {
        // Not at the cost of the other keys due: they are taken out already and would never expire.
        queueMicrotask(() => {
          throw err;
        });
      }
    }
  }
}
