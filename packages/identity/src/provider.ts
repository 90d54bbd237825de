import type { BundleSet, X509Bundle, X509BundleSource } from './bundle.js';
import { WeaveError } from './errors.js';
import type { SpiffeId, TrustDomain } from './spiffe-id.js';
import type { X509Svid } from './x509-svid.js';

/** What changed in an {@link IdentityProvider}: the full current state and why it was sent. */
export interface IdentityUpdate {
  readonly svid: X509Svid;
  readonly bundles: BundleSet;
  readonly reason: 'svid' | 'bundles' | 'both';
}

/**
 * An {@link IdentityProvider}'s SVID passed its notAfter and no replacement
 * arrived: the workload has no usable identity until one does.
 */
export interface IdentityExpiry {
  /** The SVID that expired (no longer usable: peers refuse it). */
  readonly svid: X509Svid;
  /** Its notAfter. */
  readonly expiredAt: Date;
  /** What expired, when, and why nothing replaced it (for logs and readiness probes). */
  readonly message: string;
}

/**
 * The seam every layer gets identity through: the Workload API client in
 * production, static files, or the dev CA in tests and local development.
 */
export interface IdentityProvider extends X509BundleSource {
  /** Own SPIFFE ID (valid once ready). */
  readonly id: SpiffeId;
  /**
   * Current SVID.
   * @throws {IdentityNotReadyError} when none was obtained yet, the provider is closed, or the SVID expired (see {@link IdentityProvider.onExpired}).
   */
  getX509Svid(): X509Svid;
  /** Own or federated X.509 bundle of a trust domain. */
  getX509Bundle(trustDomain: TrustDomain): X509Bundle | undefined;
  /** All trusted bundles. */
  getBundleSet(): BundleSet;
  /**
   * Called on every SVID rotation or bundle change; returns the unsubscribe
   * function. An update whose reason is `'svid'` or `'both'` always carries an
   * SVID that is valid when sent: one that arrives already expired is not announced.
   */
  onUpdate(listener: (update: IdentityUpdate) => void): () => void;
  /**
   * Called once when the SVID passes its notAfter with no replacement; returns
   * the unsubscribe function. From then on {@link IdentityProvider.getX509Svid}
   * throws {@link IdentityNotReadyError}. The expiry ends with the next
   * {@link IdentityProvider.onUpdate} carrying an SVID (reason `'svid'` or
   * `'both'`), the same update a rotation sends.
   *
   * A listener of its own rather than an `'expired'` {@link IdentityUpdate}
   * reason: every `onUpdate` listener rebuilds TLS contexts or caches from the
   * update, and an expiry carries no usable SVID, so each of them would have to
   * filter it out; consumers that do not care about expiry change nothing.
   */
  onExpired(listener: (expiry: IdentityExpiry) => void): () => void;
  close(): Promise<void>;
}

/** The provider has no SVID yet (or was closed). */
export class IdentityNotReadyError extends WeaveError {
  constructor(message = 'no X.509-SVID is available yet') {
    super('IDENTITY_NOT_READY', message);
  }
}

/** A provider was configured wrongly (missing file, bad option). */
export class IdentityConfigError extends WeaveError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('IDENTITY_CONFIG_INVALID', message, options);
  }
}
