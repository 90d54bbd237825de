import type { Logger } from 'pino';

/**
 * The one listener registry of the package (identity updates, expiries,
 * Workload API errors). A throwing listener is logged and never stops the others.
 */
export class Listeners<T> {
  readonly #listeners = new Set<(value: T) => void>();
  readonly #log: Logger;
  readonly #what: string;

  /** `what` names the listeners in the log line of one that throws. */
  constructor(log: Logger, what: string) {
    this.#log = log;
    this.#what = what;
  }

  /** Adds `listener`; returns the function that removes it. */
  add(listener: (value: T) => void): () => void {
    // Wrapped so the same function can subscribe twice and unsubscribe independently.
    const entry = (value: T): void => listener(value);
    this.#listeners.add(entry);
    return () => {
      this.#listeners.delete(entry);
    };
  }

  emit(value: T): void {
    // A copy: a listener may unsubscribe (itself or another) while it runs.
    for (const l of [...this.#listeners]) {
      try {
        l(value);
      } catch (err) {
        this.#log.error({ err }, `${this.#what} listener threw`);
      }
    }
  }

  clear(): void {
    this.#listeners.clear();
  }
}
