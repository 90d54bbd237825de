import type { Logger } from 'pino';
import { BundleSet, type X509Bundle } from './bundle.js';
import type { DevCertificateAuthority } from './dev-ca.js';
import { defaultLogger } from './log.js';
import { checkKnownKeys, MAX_TIMER_MS } from './options.js';
import { IdentityConfigError, IdentityNotReadyError } from './provider.js';
import { IdentityProviderBase } from './provider-base.js';
import { SpiffeId, type TrustDomain } from './spiffe-id.js';
import type { X509Svid } from './x509-svid.js';

/**
 * When to rotate an SVID: when about half of its remaining lifetime at issuance
 * is left, ±10 % jitter (SPIRE's rule), so a fleet does not renew in lockstep.
 * Measured from `issuedAt`, not from `notBefore` (backdated) nor from the TTL
 * asked for: certificate times have whole seconds, so notAfter can be up to
 * 1 s earlier than asked, and with a TTL of 2 s a fixed offset could fall in
 * the past. The one formula of the dev CA provider and the dev Workload API server.
 */
export function rotationDelayMs(svid: X509Svid, issuedAt = Date.now(), random = Math.random): number {
  const lifetime = svid.expiresAt.getTime() - issuedAt;
  const jitter = 1 + (random() * 0.2 - 0.1);
  // A floor keeps an SVID that is (nearly) expired at issuance (a CA near its
  // own expiry) from rotating in a tight loop.
  return Math.max(MIN_ROTATION_MS, (lifetime / 2) * jitter);
}

const MIN_ROTATION_MS = 250;

const OPTION_KEYS = {
  ca: true,
  id: true,
  ttlSeconds: true,
  federatedBundles: true,
  logger: true,
} satisfies Record<keyof Parameters<typeof DevCaIdentityProvider.create>[0], true>;

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
export class DevCaIdentityProvider extends IdentityProviderBase {
  readonly #ca: DevCertificateAuthority;
  readonly #id: SpiffeId;
  readonly #ttl: number | undefined;
  #timer: NodeJS.Timeout | undefined;

  private constructor(ca: DevCertificateAuthority, id: SpiffeId, ttl: number | undefined, logger: Logger) {
    super({ logger });
    this.#ca = ca;
    this.#id = id;
    this.#ttl = ttl;
    this.publish({ bundles: BundleSet.of(ca.x509Bundle, ca.jwtBundle) });
  }

  /**
   * Issues the first SVID and starts rotation.
   * @throws {IdentityConfigError} when an option is unknown, or `id` is not in the CA's trust domain or a federated bundle is for it.
   */
  static async create(opts: {
    ca: DevCertificateAuthority;
    id: SpiffeId | string;
    ttlSeconds?: number;
    federatedBundles?: X509Bundle[];
    logger?: Logger;
  }): Promise<DevCaIdentityProvider> {
    checkKnownKeys('DevCaIdentityProvider', opts, OPTION_KEYS);
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

  /** The SPIFFE ID it issues its SVIDs for (known before the first is issued). */
  override get id(): SpiffeId {
    return this.#id;
  }

  /** Issues a new SVID now, notifies listeners and re-arms the rotation timer. */
  async rotate(): Promise<void> {
    if (this.closed) throw new IdentityNotReadyError('identity provider is closed');
    const issuedAt = Date.now();
    const svid = await this.#ca.issueX509Svid(
      this.#id,
      this.#ttl !== undefined ? { ttlSeconds: this.#ttl } : {},
    );
    if (this.closed) return;
    this.#schedule(rotationDelayMs(svid, issuedAt));
    // An SVID issued already expired (the CA expired) is taken but not announced.
    this.publish({ svid });
  }

  /**
   * Trusts another trust domain's X.509 authorities (federation).
   * @throws {IdentityConfigError} for our own trust domain: its bundle comes from the CA only.
   */
  addFederatedBundle(bundle: X509Bundle): void {
    if (bundle.trustDomain.equals(this.#id.trustDomain))
      throw new IdentityConfigError(`cannot federate with our own trust domain ${bundle.trustDomain.name}`);
    const next = this.bundles.clone();
    next.setX509Bundle(bundle);
    this.publish({ bundles: next });
  }

  /** Stops trusting a federated trust domain. Our own cannot be removed. */
  removeFederatedBundle(trustDomain: TrustDomain): void {
    if (trustDomain.equals(this.#id.trustDomain))
      throw new IdentityConfigError(`cannot remove the bundle of our own trust domain ${trustDomain.name}`);
    const next = this.bundles.clone();
    if (next.delete(trustDomain)) this.publish({ bundles: next });
  }

  override async close(): Promise<void> {
    await super.close();
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  protected override expiredMessage(svid: X509Svid): string {
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
          this.log.error({ err }, 'SVID rotation failed; retrying in 1 s');
          if (!this.closed) this.#schedule(1000);
        });
      },
      Math.min(delayMs, MAX_TIMER_MS),
    );
    this.#timer.unref();
  }
}
