/** The longest delay `setTimeout` takes (a longer one fires at once). */
const MAX_TIMER_MS = 2_147_483_647;

/**
 * One timer for many deadlines. Calls made with the same timeout arrive in
 * deadline order, so a timer armed for the earliest deadline serves them all
 * and a call costs no timer of its own: no `setTimeout` and `clearTimeout`
 * per call, which showed in the call bench's profiles. When the timer fires,
 * every key past its deadline is handed to `onExpire` (and forgotten), and
 * the timer is armed again for the earliest deadline left.
 *
 * The timer does not keep the process up (`unref`): what waits on a deadline
 * keeps it up by other means (a socket, a running task), or nothing does.
 *
 * @typeParam K - what a deadline belongs to (a waiter, a call); a key is in at most once.
 */
export class Deadlines<K> {
  /** Each key and its deadline (epoch ms). */
  readonly #due = new Map<K, number>();
  readonly #onExpire: (key: K) => void;
  #timer: NodeJS.Timeout | undefined;
  #timerAt = Infinity;

  /** @param onExpire - called with each key once its deadline has passed; must not throw. */
  constructor(onExpire: (key: K) => void) {
    this.#onExpire = onExpire;
  }

  /**
   * Hands `key` to `onExpire` once `deadline` (epoch ms) has passed, unless
   * {@link delete}d before. `Infinity`: never, but the key is kept (see {@link keys}).
   */
  add(key: K, deadline: number): void {
    this.#due.set(key, deadline);
    if (deadline < this.#timerAt) this.#arm(deadline);
  }

  /** Forgets `key`: it does not expire. */
  delete(key: K): void {
    this.#due.delete(key);
  }

  /** Keys waiting for their deadline. */
  get size(): number {
    return this.#due.size;
  }

  /** The keys waiting, oldest first (a key added with deadline `Infinity` waits until deleted). */
  keys(): IterableIterator<K> {
    return this.#due.keys();
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
    let next = Infinity;
    for (const [key, deadline] of this.#due) {
      if (deadline <= now) {
        this.#due.delete(key);
        this.#onExpire(key);
      } else if (deadline < next) next = deadline;
    }
    // A key added by onExpire armed the timer already, if it is the earliest.
    if (next < this.#timerAt) this.#arm(next);
  }
}
