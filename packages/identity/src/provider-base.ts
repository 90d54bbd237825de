import type { Logger } from 'pino';
import { BundleSet, type JwtBundle, type X509Bundle } from './bundle.js';
import { Listeners } from './listeners.js';
import { defaultLogger } from './log.js';
import { checkKnownKeys, MAX_TIMER_MS } from './options.js';
import {
  IdentityNotReadyError,
  type IdentityExpiry,
  type IdentityProvider,
  type IdentityUpdate,
} from './provider.js';
import type { SpiffeId, TrustDomain } from './spiffe-id.js';
import type { X509Svid } from './x509-svid.js';
import { sameDer } from './x509-util.js';

/**
 * Options of {@link IdentityProviderBase}'s constructor. A key not named here is
 * refused: a subclass passes these (`super({ logger })`), not its own whole options object.
 */
export interface IdentityProviderBaseOptions {
  /** Where listener failures and expiries are logged (default: the package logger, level `WEAVE_LOG_LEVEL` or warn). */
  readonly logger?: Logger;
}

/** Every option of {@link IdentityProviderBase}'s constructor. */
const BASE_OPTION_KEYS = { logger: true } satisfies Record<keyof IdentityProviderBaseOptions, true>;

/** A new current SVID and/or new bundles, for {@link IdentityProviderBase.publish}. */
export interface IdentityChange {
  readonly svid?: X509Svid;
  readonly bundles?: BundleSet;
}

/**
 * The skeleton every {@link IdentityProvider} of this package is built on, so
 * a new provider is one small class: it obtains an SVID and bundles however it
 * likes and hands them to {@link IdentityProviderBase.publish}; the base keeps
 * them, guards {@link IdentityProviderBase.getX509Svid} (closed, not ready yet,
 * expired), runs the {@link IdentityProviderBase.onUpdate} and
 * {@link IdentityProviderBase.onExpired} listeners and tracks expiry.
 *
 * The subclass verifies what it publishes (e.g. `verifyX509Svid(svid.certificates, bundles)`):
 * the base takes what it is given.
 *
 * @example
 * ```ts
 * class VaultProvider extends IdentityProviderBase {
 *   static async create(vault: Vault): Promise<VaultProvider> {
 *     const p = new VaultProvider(vault);
 *     await p.refresh();
 *     return p;
 *   }
 *   private constructor(private readonly vault: Vault) {
 *     super();
 *   }
 *   async refresh(): Promise<void> {
 *     const { chainPem, keyPem, caPem } = await this.vault.read('svid');
 *     const svid = X509Svid.parse(chainPem, keyPem);
 *     const bundles = BundleSet.of(X509Bundle.fromPem(svid.id.trustDomain, caPem));
 *     verifyX509Svid(svid.certificates, bundles);
 *     this.publish({ svid, bundles });
 *   }
 * }
 * ```
 */
export abstract class IdentityProviderBase implements IdentityProvider {
  /** The provider's logger. */
  protected readonly log: Logger;
  readonly #updates: Listeners<IdentityUpdate>;
  readonly #expiries: Listeners<IdentityExpiry>;
  #svid: X509Svid | undefined;
  #bundles = new BundleSet();
  #expiryTimer: { clear(): void } | undefined;
  #expiryReported = false;
  #closed = false;

  /**
   * @throws {IdentityConfigError} when `options` has a key other than `logger`: a misspelt
   *   `logger` would log elsewhere without a word.
   */
  protected constructor(options: IdentityProviderBaseOptions = {}) {
    checkKnownKeys('IdentityProviderBase', options, BASE_OPTION_KEYS);
    this.log = options.logger ?? defaultLogger(new.target.name);
    this.#updates = new Listeners(this.log, 'identity update');
    this.#expiries = new Listeners(this.log, 'identity expiry');
  }

  /**
   * The SPIFFE ID of the current SVID.
   * @throws {IdentityNotReadyError} before the first SVID was published.
   */
  get id(): SpiffeId {
    if (!this.#svid) throw new IdentityNotReadyError();
    return this.#svid.id;
  }

  /**
   * The current SVID.
   * @throws {IdentityNotReadyError} when none was published yet, the provider is closed, or the SVID expired before a replacement arrived (with {@link IdentityProviderBase.expiredMessage}).
   */
  getX509Svid(): X509Svid {
    if (this.#closed) throw new IdentityNotReadyError('identity provider is closed');
    const svid = this.#svid;
    if (!svid) throw new IdentityNotReadyError();
    // By the clock, not the timer: a late timer must not hand out an expired SVID.
    if (isExpired(svid)) throw new IdentityNotReadyError(this.expiredMessage(svid));
    return svid;
  }

  getX509Bundle(trustDomain: TrustDomain): X509Bundle | undefined {
    return this.#bundles.getX509Bundle(trustDomain);
  }

  /** A snapshot of every trusted bundle (own and federated, X.509 and JWT). */
  getBundleSet(): BundleSet {
    return this.#bundles.clone();
  }

  onUpdate(listener: (update: IdentityUpdate) => void): () => void {
    return this.#updates.add(listener);
  }

  /** Called once when the SVID expires with no replacement; the next `'svid'`/`'both'` update ends it. */
  onExpired(listener: (expiry: IdentityExpiry) => void): () => void {
    return this.#expiries.add(listener);
  }

  /**
   * Stops expiry tracking and drops every listener; from then on
   * {@link IdentityProviderBase.getX509Svid} throws. Idempotent. A subclass
   * that holds timers, watchers or connections overrides it and calls `super.close()`.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#expiryTimer?.clear();
    this.#expiryTimer = undefined;
    this.#updates.clear();
    this.#expiries.clear();
  }

  /** Whether {@link IdentityProviderBase.close} was called. */
  protected get closed(): boolean {
    return this.#closed;
  }

  /** The current SVID whatever its expiry (undefined before the first). */
  protected get currentSvid(): X509Svid | undefined {
    return this.#svid;
  }

  /** The current bundles, live: replace them through {@link IdentityProviderBase.publish}, never mutate them. */
  protected get bundles(): BundleSet {
    return this.#bundles;
  }

  /**
   * What {@link IdentityProviderBase.getX509Svid} throws and
   * {@link IdentityProviderBase.onExpired} reports once `svid` expired with no
   * replacement: say what expired, when, and why nothing replaced it.
   */
  protected expiredMessage(svid: X509Svid): string {
    return (
      `the X.509-SVID of ${svid.id.toString()} expired at ${svid.expiresAt.toISOString()} ` +
      'and no replacement arrived'
    );
  }

  /**
   * Makes `change.svid` and/or `change.bundles` current and tells the
   * {@link IdentityProviderBase.onUpdate} listeners what changed. An SVID equal
   * to the current one (same chain and key) or bundles equal to the current
   * ones change nothing. An SVID that arrives already expired is taken (the
   * getter then throws) but not announced: it reports the expiry instead, and
   * an `'svid'` update always carries an SVID valid when sent. Nothing
   * happens after close.
   *
   * @returns the reason announced, or undefined when nothing was.
   */
  protected publish(change: IdentityChange): IdentityUpdate['reason'] | undefined {
    if (this.#closed) return undefined;
    const { svid, bundles } = change;
    let bundlesChanged = false;
    if (bundles && !sameBundles(this.#bundles, bundles)) {
      this.#bundles = bundles;
      bundlesChanged = true;
    }
    let svidChanged = false;
    if (svid && !(this.#svid && sameSvid(this.#svid, svid))) {
      this.#svid = svid;
      // An SVID that arrives already expired is no rotation: announcing it would end the expiry.
      svidChanged = this.#followExpiry(svid);
    }
    const current = this.#svid;
    // Before the first SVID there is nothing to announce: bundles ride along with it.
    if (!current || (!svidChanged && !bundlesChanged)) return undefined;
    const reason = svidChanged && bundlesChanged ? 'both' : svidChanged ? 'svid' : 'bundles';
    this.#updates.emit({ svid: current, bundles: this.#bundles.clone(), reason });
    return reason;
  }

  /** Arms the expiry report of a new current SVID; false when it is already expired. */
  #followExpiry(svid: X509Svid): boolean {
    this.#expiryTimer?.clear();
    this.#expiryTimer = undefined;
    if (isExpired(svid)) {
      this.#reportExpiry(svid);
      return false;
    }
    // A valid SVID ends an expiry; the next one is reported again.
    this.#expiryReported = false;
    this.#expiryTimer = longTimeout(svid.expiresAt.getTime(), () => {
      if (this.#svid === svid) this.#reportExpiry(svid);
    });
    return true;
  }

  #reportExpiry(svid: X509Svid): void {
    if (this.#expiryReported || this.#closed) return;
    this.#expiryReported = true;
    const expiry: IdentityExpiry = { svid, expiredAt: svid.expiresAt, message: this.expiredMessage(svid) };
    this.log.error({ id: svid.id.toString(), expiredAt: svid.expiresAt.toISOString() }, expiry.message);
    this.#expiries.emit(expiry);
  }
}

/** Whether `svid` has passed its notAfter. */
const isExpired = (svid: X509Svid, now = Date.now()): boolean => svid.expiresAt.getTime() <= now;

/** Sets a timer that can fire after more than the ~24.8 days `setTimeout` allows. */
function longTimeout(at: number, fn: () => void): { clear(): void } {
  let t: NodeJS.Timeout;
  const arm = (): void => {
    const left = at - Date.now();
    // Re-armed rather than trusted when early: timers run on the monotonic
    // clock, expiry is judged by the wall clock.
    t = setTimeout(() => (at - Date.now() > 0 ? arm() : fn()), Math.max(0, Math.min(left, MAX_TIMER_MS)));
    // Only a report: it must not keep a process alive.
    t.unref();
  };
  arm();
  return { clear: () => clearTimeout(t) };
}

/** Same chain and same key. */
function sameSvid(a: X509Svid, b: X509Svid): boolean {
  return (
    a === b ||
    (a.certificates.length === b.certificates.length &&
      a.certificates.every((c, i) => sameDer(c, b.certificates[i]!)) &&
      a.privateKey.equals(b.privateKey))
  );
}

/** Same trust domains with equal X.509 and JWT bundles. */
function sameBundles(a: BundleSet, b: BundleSet): boolean {
  if (a === b) return true;
  const ta = a.trustDomains();
  const tb = b.trustDomains();
  return (
    ta.length === tb.length &&
    ta.every(
      (td, i) =>
        td.equals(tb[i]!) &&
        sameX509(a.getX509Bundle(td), b.getX509Bundle(td)) &&
        sameJwt(a.getJwtBundle(td), b.getJwtBundle(td)),
    )
  );
}

const sameX509 = (a: X509Bundle | undefined, b: X509Bundle | undefined): boolean =>
  a === b || (a !== undefined && a.equals(b));

const sameJwt = (a: JwtBundle | undefined, b: JwtBundle | undefined): boolean =>
  a === b || (a !== undefined && b !== undefined && jwks(a) === jwks(b));

/** Key order as the bundle holds it: an equal set sent in another order counts as a change, harmlessly. */
const jwks = (b: JwtBundle): string => JSON.stringify(b.toJwks().keys);
