import type { Logger } from 'pino';
import type { IdentityUpdate } from './provider.js';

/** Listener registry shared by the providers; a throwing listener never stops the others. */
export class UpdateListeners {
  readonly #listeners = new Set<(u: IdentityUpdate) => void>();
  constructor(private readonly log: Logger) {}

  add(listener: (u: IdentityUpdate) => void): () => void {
    // Wrapped so the same function can subscribe twice and unsubscribe independently.
    const entry = (u: IdentityUpdate): void => listener(u);
    this.#listeners.add(entry);
    return () => {
      this.#listeners.delete(entry);
    };
  }

  emit(update: IdentityUpdate): void {
    for (const l of [...this.#listeners]) {
      try {
        l(update);
      } catch (err) {
        this.log.error({ err }, 'identity update listener threw');
      }
    }
  }

  clear(): void {
    this.#listeners.clear();
  }
}
