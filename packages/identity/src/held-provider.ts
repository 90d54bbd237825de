// What the providers over an identity handed to them (files, the user's own
// SVID) share: the current state, update listeners, expiry, and the guarded
// getter. Internal: the public face is IdentityProvider.
import type { Logger } from 'pino';
import type { BundleSet, X509Bundle } from './bundle.js';
import { ExpiryWatch } from './expiry.js';
import { UpdateListeners } from './listeners.js';
import {
  IdentityNotReadyError,
  type IdentityExpiry,
  type IdentityProvider,
  type IdentityUpdate,
} from './provider.js';
import type { SpiffeId, TrustDomain } from './spiffe-id.js';
import type { X509Svid } from './x509-svid.js';
import { sameDer } from './x509-util.js';

/** An SVID with the bundles it verified against. */
export interface VerifiedIdentity {
  readonly svid: X509Svid;
  readonly bundles: BundleSet;
}

/** The {@link IdentityProvider} skeleton of providers that are handed a verified identity. */
export abstract class HeldIdentityProvider implements IdentityProvider {
  readonly id: SpiffeId;
  readonly #listeners: UpdateListeners;
  readonly #expiry: ExpiryWatch;
  #state: VerifiedIdentity;
  #closed = false;

  protected constructor(state: VerifiedIdentity, log: Logger) {
    this.#state = state;
    this.id = state.svid.id;
    this.#listeners = new UpdateListeners(log);
    this.#expiry = new ExpiryWatch(log, (svid) => this.expiredMessage(svid));
    this.#expiry.follow(state.svid);
  }

  /** What expired, when, and why nothing replaced it. */
  protected abstract expiredMessage(svid: X509Svid): string;

  protected get closed(): boolean {
    return this.#closed;
  }

  /**
   * Makes `next` (verified, same SPIFFE ID) the current identity and announces
   * what changed; an SVID that expired meanwhile is taken but not announced.
   * Returns the reason announced, or undefined when nothing was.
   */
  protected apply(next: VerifiedIdentity): IdentityUpdate['reason'] | undefined {
    const prev = this.#state;
    let svidChanged = !sameSvid(prev.svid, next.svid);
    const bundlesChanged = !sameBundles(prev.bundles, next.bundles);
    if (!svidChanged && !bundlesChanged) return undefined;
    this.#state = next;
    if (svidChanged) svidChanged = this.#expiry.follow(next.svid);
    if (!svidChanged && !bundlesChanged) return undefined;
    const reason = svidChanged && bundlesChanged ? 'both' : svidChanged ? 'svid' : 'bundles';
    this.#listeners.emit({ svid: next.svid, bundles: next.bundles, reason });
    return reason;
  }

  /** The current identity, whatever its expiry. */
  protected get current(): VerifiedIdentity {
    return this.#state;
  }

  /**
   * The current SVID.
   * @throws {IdentityNotReadyError} when the provider is closed, or the SVID expired before a replacement arrived.
   */
  getX509Svid(): X509Svid {
    if (this.#closed) throw new IdentityNotReadyError('identity provider is closed');
    if (this.#expiry.expired) throw new IdentityNotReadyError(this.expiredMessage(this.#state.svid));
    return this.#state.svid;
  }

  getX509Bundle(trustDomain: TrustDomain): X509Bundle | undefined {
    return this.#state.bundles.getX509Bundle(trustDomain);
  }

  getBundleSet(): BundleSet {
    return this.#state.bundles;
  }

  onUpdate(listener: (update: IdentityUpdate) => void): () => void {
    return this.#listeners.add(listener);
  }

  /** Called once when the SVID expires with no replacement; the next `'svid'`/`'both'` update ends it. */
  onExpired(listener: (expiry: IdentityExpiry) => void): () => void {
    return this.#expiry.add(listener);
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#listeners.clear();
    this.#expiry.close();
  }
}

/** Same chain and same key. */
function sameSvid(a: X509Svid, b: X509Svid): boolean {
  return (
    a.certificates.length === b.certificates.length &&
    a.certificates.every((c, i) => sameDer(c, b.certificates[i]!)) &&
    a.privateKey.equals(b.privateKey)
  );
}

/** Same trust domains with equal X.509 bundles. */
function sameBundles(a: BundleSet, b: BundleSet): boolean {
  const ta = a.trustDomains();
  const tb = b.trustDomains();
  return (
    ta.length === tb.length &&
    ta.every((td, i) => td.equals(tb[i]!) && (a.getX509Bundle(td)?.equals(b.getX509Bundle(td)) ?? false))
  );
}
