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
 * The seam every layer gets identity through: the Workload API client in
 * production, static files, or the dev CA in tests and local development.
 */
export interface IdentityProvider extends X509BundleSource {
  /** Own SPIFFE ID (valid once ready). */
  readonly id: SpiffeId;
  /** Current SVID. @throws {IdentityNotReadyError} when none was obtained yet. */
  getX509Svid(): X509Svid;
  /** Own or federated X.509 bundle of a trust domain. */
  getX509Bundle(trustDomain: TrustDomain): X509Bundle | undefined;
  /** All trusted bundles. */
  getBundleSet(): BundleSet;
  /** Called on every SVID rotation or bundle change; returns the unsubscribe function. */
  onUpdate(listener: (update: IdentityUpdate) => void): () => void;
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
