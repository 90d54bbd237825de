// Expiry tracking shared by the providers. Internal: the public face is
// IdentityProvider.onExpired and IdentityExpiry.
import type { Logger } from 'pino';
import type { IdentityExpiry } from './provider.js';
import type { X509Svid } from './x509-svid.js';

/** Sets a timer that can fire after more than the ~24.8 days `setTimeout` allows. */
export function longTimeout(at: number, fn: () => void): { clear(): void } {
  const MAX = 2 ** 31 - 1;
  let t: NodeJS.Timeout;
  const arm = (): void => {
    const left = at - Date.now();
    // Re-armed rather than trusted when early: timers run on the monotonic
    // clock, expiry is judged by the wall clock.
    t = setTimeout(() => (at - Date.now() > 0 ? arm() : fn()), Math.max(0, Math.min(left, MAX)));
    // Only a report: it must not keep a process alive.
    t.unref();
  };
  arm();
  return { clear: () => clearTimeout(t) };
}

/** Whether `svid` has passed its notAfter. */
export const isExpired = (svid: X509Svid, now = Date.now()): boolean => svid.expiresAt.getTime() <= now;

/**
 * Follows a provider's current SVID and reports, once, when it passes notAfter
 * without a replacement. An expiry lasts until a valid SVID is followed: SVIDs
 * that arrive already expired neither end it nor report it again.
 */
export class ExpiryWatch {
  readonly #listeners = new Set<(e: IdentityExpiry) => void>();
  readonly #log: Logger;
  readonly #describe: (svid: X509Svid) => string;
  #svid: X509Svid | undefined;
  #timer: { clear(): void } | undefined;
  #reported = false;

  /** `describe` says what expired and why nothing replaced it (provider-specific). */
  constructor(log: Logger, describe: (svid: X509Svid) => string) {
    this.#log = log;
    this.#describe = describe;
  }

  add(listener: (e: IdentityExpiry) => void): () => void {
    // Wrapped so the same function can subscribe twice and unsubscribe independently.
    const entry = (e: IdentityExpiry): void => listener(e);
    this.#listeners.add(entry);
    return () => {
      this.#listeners.delete(entry);
    };
  }

  /**
   * Follows a new current SVID. Returns false when it is already expired: the
   * provider must not announce it as a rotation.
   */
  follow(svid: X509Svid): boolean {
    this.#svid = svid;
    this.#timer?.clear();
    this.#timer = undefined;
    if (isExpired(svid)) {
      this.#report(svid);
      return false;
    }
    this.#reported = false;
    this.#timer = longTimeout(svid.expiresAt.getTime(), () => {
      if (this.#svid === svid) this.#report(svid);
    });
    return true;
  }

  /** Whether the followed SVID has expired, by the clock (a late timer does not matter). */
  get expired(): boolean {
    return this.#svid !== undefined && isExpired(this.#svid);
  }

  close(): void {
    this.#timer?.clear();
    this.#timer = undefined;
    this.#listeners.clear();
  }

  #report(svid: X509Svid): void {
    if (this.#reported) return;
    this.#reported = true;
    const expiry: IdentityExpiry = { svid, expiredAt: svid.expiresAt, message: this.#describe(svid) };
    this.#log.error({ id: svid.id.toString(), expiredAt: svid.expiresAt.toISOString() }, expiry.message);
    for (const l of [...this.#listeners]) {
      try {
        l(expiry);
      } catch (err) {
        this.#log.error({ err }, 'identity expiry listener threw');
      }
    }
  }
}
