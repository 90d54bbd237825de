import { MAX_TIMER_MS } from '@weave/identity';

/** One deadline in a {@link Deadlines}: what {@link Deadlines.add} returns and {@link Deadlines.delete} takes. */
export interface Deadline<K> {
  /** What the deadline belongs to: handed to `onExpire` once it has passed. */
  readonly key: K;
  /** Epoch ms (`Infinity`: never). */
  readonly at: number;
}

/** Where an entry is: in the list, taken from it as due (its expiry about to run), or gone. */
const WAITING = 0;
const DUE = 1;
const GONE = 2;
type State = typeof WAITING | typeof DUE | typeof GONE;

/** A deadline and its place in the list of waiting ones (insertion order). */
class Entry<K> implements Deadline<K> {
  prev: Entry<K> | undefined;
  next: Entry<K> | undefined;
  state: State = WAITING;
  constructor(
    readonly key: K,
    readonly at: number,
  ) {}
}

/**
 * One timer for many deadlines. Calls made with the same timeout arrive in
 * deadline order, so a timer armed for the earliest deadline serves them all
 * and a call costs no timer of its own: no `setTimeout` and `clearTimeout`
 * per call, which showed in the call bench's profiles. When the timer fires,
 * every entry past its deadline is handed to `onExpire` (and forgotten), and
 * the timer is armed again for the earliest deadline left.
 *
 * The waiting entries are a linked list whose links are cut when an entry
 * leaves, not a Map keyed by what waits: a long-lived Map whose keys come and
 * go with every call kept each call's closures (and all they reach) alive
 * through young-generation collections until a full one, which cost a
 * `callAgent` caller about 1.6 MB promoted per scavenge (bench/README.md).
 *
 * The timer does not keep the process up (`unref`): what waits on a deadline
 * keeps it up by other means (a socket, a running task), or nothing does.
 *
 * @typeParam K - what a deadline belongs to (a waiter, a call).
 */
export class Deadlines<K> {
  #first: Entry<K> | undefined;
  #last: Entry<K> | undefined;
  #size = 0;
  readonly #onExpire: (key: K) => void;
  #timer: NodeJS.Timeout | undefined;
  #timerAt = Infinity;

  /** @param onExpire - called with each key once its deadline has passed; must not throw. */
  constructor(onExpire: (key: K) => void) {
    this.#onExpire = onExpire;
  }

  /**
   * Hands `key` to `onExpire` once `deadline` (epoch ms) has passed, unless
   * the returned entry is {@link delete}d before. `Infinity`: never, but the
   * key is kept (see {@link keys}).
   */
  add(key: K, deadline: number): Deadline<K> {
    const e = new Entry(key, deadline);
    const last = this.#last;
    if (last === undefined) this.#first = e;
    else {
      last.next = e;
      e.prev = last;
    }
    this.#last = e;
    this.#size++;
    if (deadline < this.#timerAt) this.#arm(deadline);
    return e;
  }

  /**
   * Forgets `entry`: its key is not handed to `onExpire` (also when it is due
   * and another expiry of the same turn deletes it). Deleting it again does
   * nothing.
   */
  delete(entry: Deadline<K>): void {
    const e = entry as Entry<K>;
    const was = e.state;
    e.state = GONE;
    if (was === WAITING) this.#unlink(e);
  }

  #unlink(e: Entry<K>): void {
    const { prev, next } = e;
    if (prev === undefined) this.#first = next;
    else prev.next = next;
    if (next === undefined) this.#last = prev;
    else next.prev = prev;
    e.prev = e.next = undefined;
    this.#size--;
  }

  /** Entries waiting for their deadline. */
  get size(): number {
    return this.#size;
  }

  /** The keys waiting, oldest first (a key added with deadline `Infinity` waits until deleted). */
  keys(): K[] {
    const out: K[] = [];
    for (let e = this.#first; e !== undefined; e = e.next) out.push(e.key);
    return out;
  }

  #arm(deadline: number): void {
    clearTimeout(this.#timer);
    this.#timerAt = deadline;
    this.#timer = setTimeout(() => this.#fire(), Math.min(Math.max(0, deadline - Date.now()), MAX_TIMER_MS));
    this.#timer.unref();
  }

  #fire(): void {
    this.#timer = undefined;
    this.#timerAt = Infinity;
    const now = Date.now();
    const due: Entry<K>[] = [];
    let next = Infinity;
    for (let e = this.#first; e !== undefined;) {
      const after = e.next;
      if (e.at <= now) {
        e.state = DUE;
        this.#unlink(e);
        due.push(e);
      } else if (e.at < next) next = e.at;
      e = after;
    }
    if (next < Infinity) this.#arm(next);
    // After the list is settled: an expiry may add entries (armed by add) or delete others.
    for (const e of due) {
      if (e.state !== DUE) continue;
      e.state = GONE;
      this.#onExpire(e.key);
    }
  }
}
