import type { Logger } from 'pino';
import { BundleSet, type X509Bundle } from './bundle.js';
import type { DevCertificateAuthority } from './dev-ca.js';
import { ExpiryWatch } from './expiry.js';
import { UpdateListeners } from './listeners.js';
import { defaultLogger } from './log.js';
import {
  IdentityConfigError,
  IdentityNotReadyError,
  type IdentityExpiry,
  type IdentityProvider,
  type IdentityUpdate,
} from './provider.js';
import { SpiffeId, type TrustDomain } from './spiffe-id.js';
import type { X509Svid } from './x509-svid.js';

/**
 * When to rotate an SVID: when about half of its remaining lifetime at issuance
 * is left, ±10 % jitter (SPIRE's rule), so a fleet does not renew in lockstep.
 * Measured from `issuedAt`, not `notBefore`, which is backdated.
 */
export function rotationDelayMs(svid: X509Svid, issuedAt = Date.now(), random = Math.random): number {
  const lifetime = svid.expiresAt.getTime() - issuedAt;
  const jitter = 1 + (random() * 0.2 - 0.1);
  // A floor keeps an SVID that is (nearly) expired at issuance from rotating in a tight loop.
  return Math.max(MIN_ROTATION_MS, (lifetime / 2) * jitter);
}

const MIN_ROTATION_MS = 250;

/**
 * In-memory {@link IdentityProvider} backed by a {@link DevCertificateAuthority}:
 * issues its own SVID, rotates it when about half the TTL is left (±10 %
 * jitter) and notifies `onUpdate`. For tests and local development; production
 * uses the Workload API provider.
 *
 * Its SVID expires only if rotation keeps failing, or once the dev CA itself
 * expired (SVIDs never outlive their CA); then it reports
 * {@link DevCaIdentityProvider.onExpired} like every provider.
 */
export class DevCaIdentityProvider implements IdentityProvider {
  readonly id: SpiffeId;
  readonly #ca: DevCertificateAuthority;
  readonly #ttl: number | undefined;
  readonly #bundles: BundleSet;
  readonly #listeners: UpdateListeners;
  readonly #expiry: ExpiryWatch;
  readonly #log: Logger;
  #svid: X509Svid | undefined;
  #timer: NodeJS.Timeout | undefined;
  #closed = false;

  private constructor(ca: DevCertificateAuthority, id: SpiffeId, ttl: number | undefined, log: Logger) {
    this.#ca = ca;
    this.id = id;
    this.#ttl = ttl;
    this.#log = log;
    this.#listeners = new UpdateListeners(log);
    this.#expiry = new ExpiryWatch(log, (svid) => this.#expiredMessage(svid));
    this.#bundles = BundleSet.of(ca.x509Bundle, ca.jwtBundle);
  }

  /**
   * Issues the first SVID and starts rotation.
   * @throws {IdentityConfigError} when `id` is not in the CA's trust domain or a federated bundle is for it.
   */
  static async create(opts: {
    ca: DevCertificateAuthority;
    id: SpiffeId | string;
    ttlSeconds?: number;
    federatedBundles?: X509Bundle[];
    logger?: Logger;
  }): Promise<DevCaIdentityProvider> {
    const id = typeof opts.id === 'string' ? SpiffeId.parse(opts.id) : opts.id;
    if (!id.isMemberOf(opts.ca.trustDomain))
      throw new IdentityConfigError(
        `${id.toString()} is not in the CA's trust domain ${opts.ca.trustDomain.name}`,
      );
    const p = new DevCaIdentityProvider(
      opts.ca,
      id,
      opts.ttlSeconds,
      opts.logger ?? defaultLogger('dev-ca-provider'),
    );
    for (const b of opts.federatedBundles ?? []) p.addFederatedBundle(b);
    await p.rotate();
    return p;
  }

  /**
   * The current SVID.
   * @throws {IdentityNotReadyError} when the provider is closed, or the SVID expired before a valid new one was issued.
   */
  getX509Svid(): X509Svid {
    if (this.#closed) throw new IdentityNotReadyError('identity provider is closed');
    if (!this.#svid) throw new IdentityNotReadyError();
    if (this.#expiry.expired) throw new IdentityNotReadyError(this.#expiredMessage(this.#svid));
    return this.#svid;
  }

  getX509Bundle(trustDomain: TrustDomain): X509Bundle | undefined {
    return this.#bundles.getX509Bundle(trustDomain);
  }

  getBundleSet(): BundleSet {
    return this.#bundles;
  }

  onUpdate(listener: (update: IdentityUpdate) => void): () => void {
    return this.#listeners.add(listener);
  }

  /** Called once when the SVID expires before a valid new one was issued; the next `'svid'` update ends it. */
  onExpired(listener: (expiry: IdentityExpiry) => void): () => void {
    return this.#expiry.add(listener);
  }

  /** Issues a new SVID now, notifies listeners and re-arms the rotation timer. */
  async rotate(): Promise<void> {
    if (this.#closed) throw new IdentityNotReadyError('identity provider is closed');
    const issuedAt = Date.now();
    const svid = await this.#ca.issueX509Svid(
      this.id,
      this.#ttl !== undefined ? { ttlSeconds: this.#ttl } : {},
    );
    if (this.#closed) return;
    const first = !this.#svid;
    this.#svid = svid;
    this.#schedule(rotationDelayMs(svid, issuedAt));
    // An SVID issued already expired (the CA expired) is no rotation.
    if (this.#expiry.follow(svid) && !first) this.#emit('svid');
  }

  /**
   * Trusts another trust domain's X.509 authorities (federation).
   * @throws {IdentityConfigError} for our own trust domain: its bundle comes from the CA only.
   */
  addFederatedBundle(bundle: X509Bundle): void {
    if (bundle.trustDomain.equals(this.id.trustDomain))
      throw new IdentityConfigError(`cannot federate with our own trust domain ${bundle.trustDomain.name}`);
    this.#bundles.setX509Bundle(bundle);
    if (this.#svid) this.#emit('bundles');
  }

  /** Stops trusting a federated trust domain. Our own cannot be removed. */
  removeFederatedBundle(trustDomain: TrustDomain): void {
    if (trustDomain.equals(this.id.trustDomain))
      throw new IdentityConfigError(`cannot remove the bundle of our own trust domain ${trustDomain.name}`);
    if (this.#bundles.delete(trustDomain) && this.#svid) this.#emit('bundles');
  }

  async close(): Promise<void> {
    this.#closed = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#listeners.clear();
    this.#expiry.close();
  }

  #emit(reason: IdentityUpdate['reason']): void {
    if (!this.#svid || this.#closed) return;
    this.#listeners.emit({ svid: this.#svid, bundles: this.#bundles, reason });
  }

  #expiredMessage(svid: X509Svid): string {
    const caEnd = this.#ca.certificate.notAfter;
    return (
      `the X.509-SVID of ${svid.id.toString()} expired at ${svid.expiresAt.toISOString()} and the dev CA of ` +
      `${this.#ca.trustDomain.name} has not issued a valid new one` +
      (caEnd.getTime() <= Date.now() ? ` (the dev CA itself expired at ${caEnd.toISOString()})` : '')
    );
  }

  #schedule(delayMs: number): void {
    if (this.#timer) clearTimeout(this.#timer);
    // Node timers overflow above 2^31-1 ms.
    this.#timer = setTimeout(
      () => {
        this.rotate().catch((err: unknown) => {
          this.#log.error({ err }, 'SVID rotation failed; retrying in 1 s');
          if (!this.#closed) this.#schedule(1000);
        });
      },
      Math.min(delayMs, 2 ** 31 - 1),
    );
    this.#timer.unref();
  }
}
