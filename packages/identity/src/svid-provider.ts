import type { Logger } from 'pino';
import { BundleSet, X509Bundle } from './bundle.js';
import { defaultLogger } from './log.js';
import { checkKnownKeys } from './options.js';
import { IdentityConfigError } from './provider.js';
import { IdentityProviderBase } from './provider-base.js';
import type { TrustDomain } from './spiffe-id.js';
import { verifyX509Svid, X509Svid } from './x509-svid.js';

/** An SVID with the bundles it verified against. */
export interface VerifiedIdentity {
  readonly svid: X509Svid;
  readonly bundles: BundleSet;
}

/** An X.509-SVID the user holds: parsed, or its PEM chain (leaf first) and PEM private key. */
export type HeldSvid = X509Svid | { readonly certChain: string; readonly key: string };

/**
 * Trust bundles: a {@link BundleSet} (own and federated trust domains), one or
 * more {@link X509Bundle}s, or the PEM CA certificates of the SVID's own trust domain.
 */
export type HeldBundles = BundleSet | X509Bundle | readonly X509Bundle[] | string;

/** Options of {@link SvidIdentityProvider.create}. */
export interface SvidIdentityOptions {
  readonly svid: HeldSvid;
  readonly bundles: HeldBundles;
  readonly logger?: Logger;
}

const OPTION_KEYS = { svid: true, bundles: true, logger: true } satisfies Record<
  keyof SvidIdentityOptions,
  true
>;

/** What {@link SvidIdentityProvider.update} replaces: the SVID, the bundles, or both. */
export interface SvidIdentityChange {
  readonly svid?: HeldSvid;
  readonly bundles?: HeldBundles;
}

/**
 * An {@link IdentityProvider} over an SVID the user already holds (issued by
 * the dev CA, read from PEM files, handed over by another system), with no
 * re-issuing. It rotates when the user calls {@link SvidIdentityProvider.update}
 * with the new SVID or bundles: listeners (servers, channels) pick them up as
 * from any other provider. Every SVID must verify against the bundle of its own
 * trust domain and carry the provider's SPIFFE ID; a change that does not is
 * refused with an {@link IdentityConfigError} and changes nothing. When the SVID
 * passes notAfter before an update, {@link SvidIdentityProvider.onExpired} fires
 * and {@link SvidIdentityProvider.getX509Svid} throws until one arrives.
 */
export class SvidIdentityProvider extends IdentityProviderBase {
  private constructor(state: VerifiedIdentity, logger: Logger) {
    super({ logger });
    this.publish(state);
  }

  /**
   * A provider over `svid` and `bundles`, which must be valid now.
   * @throws {IdentityConfigError} when an option is unknown, the SVID does not parse, its key does not match, or it does not verify against the bundles.
   */
  static create(options: SvidIdentityOptions): SvidIdentityProvider {
    // First: a misspelt `bundles` is named as such, not reported as missing.
    checkKnownKeys('SvidIdentityProvider', options, OPTION_KEYS);
    if (!options || options.svid === undefined || options.bundles === undefined) {
      throw new IdentityConfigError('SvidIdentityProvider: both svid and bundles are required');
    }
    const state = verifiedIdentity(options.svid, options.bundles);
    return new SvidIdentityProvider(state, options.logger ?? defaultLogger('svid-identity-provider'));
  }

  /**
   * Takes a new SVID and/or new bundles (a rotation): validated first, then
   * announced to {@link SvidIdentityProvider.onUpdate} listeners when anything changed.
   * @throws {IdentityConfigError} when the change is invalid (it is then not applied), or the provider is closed.
   */
  update(change: SvidIdentityChange): void {
    if (this.closed) throw new IdentityConfigError('SvidIdentityProvider: update after close');
    if (!change || (change.svid === undefined && change.bundles === undefined)) {
      throw new IdentityConfigError('SvidIdentityProvider.update: give svid, bundles or both');
    }
    // Always set: the constructor published the first identity.
    const next = verifiedIdentity(change.svid ?? this.currentSvid!, change.bundles ?? this.bundles);
    if (!next.svid.id.equals(this.id)) {
      throw new IdentityConfigError(
        `SvidIdentityProvider.update: the SVID is for ${next.svid.id.toString()}, ` +
          `not this provider's ${this.id.toString()}`,
      );
    }
    this.publish(next);
  }

  protected override expiredMessage(svid: X509Svid): string {
    return (
      `the X.509-SVID of ${svid.id.toString()} expired at ${svid.expiresAt.toISOString()} and ` +
      'no replacement was given (SvidIdentityProvider.update)'
    );
  }
}

/**
 * Parses what the user holds and checks that it fits together: the SVID
 * verifies (now) against the bundle of its own trust domain.
 * @throws {IdentityConfigError} naming what is wrong.
 */
function verifiedIdentity(held: HeldSvid, heldBundles: HeldBundles): VerifiedIdentity {
  try {
    const svid = held instanceof X509Svid ? held : X509Svid.parse(held.certChain, held.key);
    const bundles = bundleSetOf(heldBundles, svid.id.trustDomain);
    // An SVID from another CA, or an expired one, is refused here, not at the first handshake.
    verifyX509Svid(svid.certificates, bundles);
    return { svid, bundles };
  } catch (err) {
    if (err instanceof IdentityConfigError) throw err;
    throw new IdentityConfigError(`the SVID and bundles given do not fit: ${(err as Error).message}`, {
      cause: err,
    });
  }
}

function bundleSetOf(held: HeldBundles, own: TrustDomain): BundleSet {
  if (held instanceof BundleSet) return held.clone();
  if (held instanceof X509Bundle) return BundleSet.of(held);
  if (typeof held === 'string') return BundleSet.of(X509Bundle.fromPem(own, held));
  if (Array.isArray(held) && held.every((b) => b instanceof X509Bundle)) return BundleSet.of(...held);
  throw new IdentityConfigError(
    'bundles must be a BundleSet, an X509Bundle (or a list of them) or the PEM of the own trust domain CA',
  );
}
