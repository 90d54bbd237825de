import { createPrivateKey, X509Certificate as NodeX509Certificate, type KeyObject } from 'node:crypto';
import type { X509BundleSource } from './bundle.js';
import { checkKnownKeys } from './options.js';
import { SpiffeId } from './spiffe-id.js';
import {
  certIsCa,
  certKeyUsage,
  certUriSans,
  nodeCertOf,
  readLeafCached,
  type VerifiedCert,
} from './x509-leaf.js';
import { validatePath } from './x509-path.js';
import { X509SvidError } from './x509-svid-error.js';
import {
  CertificateParseError,
  certKeyWeakness,
  certsToPem,
  concatDer,
  isCa,
  keyUsage,
  parseCertificateCached,
  parseCertificates,
  parseNodeCertificateCached,
  sameDer,
  toNodeCert,
  x509,
} from './x509-util.js';

export { X509SvidError, type X509SvidErrorCode } from './x509-svid-error.js';

const KU = x509.KeyUsageFlags;

/**
 * Refuses a certificate whose public key is weak or of a refused kind
 * (`SVID_WEAK_KEY`, see {@link certKeyWeakness}); `what` names it in the message.
 */
function checkKey(cert: VerifiedCert, what: () => string): void {
  let weakness: string | undefined;
  try {
    weakness = certKeyWeakness(nodeCertOf(cert));
  } catch (err) {
    throw new X509SvidError('SVID_MALFORMED', `${what()} cannot be read: ${(err as Error).message}`, {
      cause: err,
    });
  }
  if (weakness !== undefined) throw new X509SvidError('SVID_WEAK_KEY', `${what()} has ${weakness}`);
}

/**
 * Checks the SPIFFE leaf rules and returns the leaf's SPIFFE ID.
 * Order follows go-spiffe: ID first, then CA flag, then key usage; then the
 * key itself, which go-spiffe leaves to crypto/x509 and TLS.
 */
function checkLeaf(leaf: VerifiedCert): SpiffeId {
  let uris: readonly string[];
  try {
    uris = certUriSans(leaf);
  } catch (err) {
    throw new X509SvidError(
      'SVID_MALFORMED',
      `leaf SAN extension cannot be read: ${(err as Error).message}`,
      {
        cause: err,
      },
    );
  }
  if (uris.length === 0) throw new X509SvidError('SVID_NO_URI_SAN', 'leaf certificate has no URI SAN');
  if (uris.length > 1)
    throw new X509SvidError(
      'SVID_MULTIPLE_URI_SANS',
      `leaf certificate has ${uris.length} URI SANs, expected 1`,
    );
  const uri = uris[0]!;
  let id: SpiffeId;
  try {
    id = SpiffeId.parse(uri);
  } catch (err) {
    throw new X509SvidError(
      'SVID_INVALID_SPIFFE_ID',
      `leaf URI SAN is not a SPIFFE ID: ${(err as Error).message}`,
      {
        cause: err,
      },
    );
  }
  if (id.path === '')
    throw new X509SvidError(
      'SVID_ROOT_PATH',
      `leaf SPIFFE ID ${uri} has no path (that is a trust domain's ID)`,
    );
  if (certIsCa(leaf))
    throw new X509SvidError('SVID_LEAF_IS_CA', `leaf certificate of ${uri} is a CA (cA=true)`);
  const ku = certKeyUsage(leaf);
  if (ku.flags & KU.keyCertSign)
    throw new X509SvidError('SVID_LEAF_KEY_USAGE', `leaf certificate of ${uri} has keyCertSign key usage`);
  if (ku.flags & KU.cRLSign)
    throw new X509SvidError('SVID_LEAF_KEY_USAGE', `leaf certificate of ${uri} has cRLSign key usage`);
  if (!(ku.flags & KU.digitalSignature))
    throw new X509SvidError(
      'SVID_LEAF_KEY_USAGE',
      `leaf certificate of ${uri} lacks digitalSignature key usage`,
    );
  checkKey(leaf, () => `leaf certificate of ${uri}`);
  return id;
}

// A leaf's SPIFFE ID under the leaf rules depends on the certificate alone,
// and a peer's leaf comes back as the same object on each of its connections
// (kept per DER): the ID found is kept with it instead of parsing the URI SAN
// again. Refusals are not kept (the rules run again and refuse again).
const leafIds = new WeakMap<VerifiedCert, SpiffeId>();

function checkLeafKept(leaf: VerifiedCert): SpiffeId {
  let id = leafIds.get(leaf);
  if (!id) {
    id = checkLeaf(leaf);
    leafIds.set(leaf, id);
  }
  return id;
}

/** A certificate given to {@link verifyX509Svid} or {@link verifyX509SvidPath}. */
/** One certificate of a chain given to {@link verifyX509Svid}: DER bytes, or a parsed certificate (@peculiar/x509's or node:crypto's). */
export type X509ChainEntry = Uint8Array | x509.X509Certificate | NodeX509Certificate;

function toCert(c: X509ChainEntry, i: 0): VerifiedCert;
function toCert(c: X509ChainEntry, i: number): x509.X509Certificate;
function toCert(c: X509ChainEntry, i: number): VerifiedCert {
  if (
    !(c instanceof x509.X509Certificate) &&
    !(c instanceof Uint8Array) &&
    !(c instanceof NodeX509Certificate)
  )
    throw new X509SvidError(
      'SVID_MALFORMED',
      `certificate ${i} of the chain is neither DER bytes nor a certificate`,
    );
  try {
    // The leaf is the certificate a new peer brings: read without @peculiar/x509's object
    // model when plain. Intermediates repeat across peers and stay cached whole.
    const cert =
      c instanceof x509.X509Certificate
        ? c
        : i === 0
          ? readLeafCached(c)
          : c instanceof Uint8Array
            ? parseCertificateCached(c)
            : parseNodeCertificateCached(c);
    // Issuers and signatures are checked by OpenSSL: a certificate @peculiar/x509 reads but
    // OpenSSL refuses is malformed here, not an untyped OpenSSL error from the path checks.
    // Node's handle is cached per certificate, so the path checks reuse this one.
    nodeCertOf(cert);
    return cert;
  } catch (err) {
    throw new X509SvidError('SVID_MALFORMED', `certificate ${i} of the chain cannot be parsed`, {
      cause: err,
    });
  }
}

// Whether a presented certificate is one of a bundle's authorities (byte for
// byte) depends on the two certificates alone. A peer presents the same
// certificate objects on every connection (parsed certificates are kept) and
// a bundle keeps its authorities until an update brings new objects, so the
// answer is kept per pair instead of comparing both DERs on every connection.
const authorityMatches = new WeakMap<x509.X509Certificate, WeakMap<x509.X509Certificate, boolean>>();

/** True when `cert` is byte-equal to one of `roots`. */
function isOneOf(cert: x509.X509Certificate, roots: readonly x509.X509Certificate[]): boolean {
  let byRoot = authorityMatches.get(cert);
  if (!byRoot) authorityMatches.set(cert, (byRoot = new WeakMap()));
  for (const r of roots) {
    let same = byRoot.get(r);
    if (same === undefined) byRoot.set(r, (same = r === cert || sameDer(r, cert)));
    if (same) return true;
  }
  return false;
}

// Longer chains than this are refused: SPIRE's deepest (upstream + intermediate) is far below.
const MAX_CHAIN = 16;

/** Every option of {@link verifyX509Svid} and {@link verifyX509SvidPath}. */
const VERIFY_OPTION_KEYS = { now: true } satisfies Record<keyof VerifyOptions, true>;

/** Options of {@link verifyX509Svid} and {@link verifyX509SvidPath}. */
interface VerifyOptions {
  now?: Date;
}

/** Every option of {@link X509Svid.parse}. */
const PARSE_OPTION_KEYS = { hint: true } satisfies Record<
  keyof NonNullable<Parameters<typeof X509Svid.parse>[2]>,
  true
>;

/**
 * A certificate of the path a chain verified through, for messages: which
 * one it is, and its subject.
 */
export interface X509SvidPathCertificate {
  /**
   * `'leaf'`: the SVID itself; `'intermediate'`: a CA between the leaf and
   * the bundle; `'authority'`: the bundle's authority the path ends in.
   */
  readonly role: 'leaf' | 'intermediate' | 'authority';
  /** Its subject distinguished name, as @peculiar/x509 prints it (read when asked). */
  readonly subject: string;
}

/** What {@link verifyX509SvidPath} found: whose chain it is, and until when it verifies. */
export interface X509SvidVerification {
  /** The SPIFFE ID of the chain's leaf. */
  readonly id: SpiffeId;
  /**
   * When the verification stops holding: the earliest notAfter on the path
   * that verified (the leaf, the intermediates it went through, the bundle
   * authority it ends in), not the leaf's alone. A connection held on this
   * verification must end then: past it, the same chain no longer verifies
   * against the same bundle. Of several paths that verify, the one that
   * verifies longest is taken; an issuer candidate the path did not go
   * through (presented or remembered) plays no part.
   */
  readonly expiresAt: Date;
  /** The certificate of that path that expires at {@link expiresAt} (the nearest the leaf when several do). */
  readonly expiringCertificate: X509SvidPathCertificate;
}

/**
 * Verifies a peer's X.509-SVID chain exactly as {@link verifyX509Svid} does
 * (same rules, same order, same errors) and returns, beside the peer's
 * SPIFFE ID, until when the verification holds: the earliest notAfter of
 * the certification path that verified, so that a connection held on it
 * (keep-alive, an HTTP/2 or gRPC session) ends when an intermediate CA or
 * the bundle authority expires before the leaf.
 *
 * It is synchronous, as {@link verifyX509Svid}. The path's dates are read
 * once per certificate object and kept with it.
 *
 * @param chain Leaf first, as for {@link verifyX509Svid}.
 * @param options `now`: the time validity is checked at (default: the clock);
 *   the end returned does not depend on it.
 * @throws {X509SvidError} with the code of the first rule broken.
 * @throws {IdentityConfigError} when `options` has a key other than `now`.
 */
export function verifyX509SvidPath(
  chain: readonly X509ChainEntry[],
  bundles: X509BundleSource,
  options: VerifyOptions = {},
): X509SvidVerification {
  return verify('verifyX509SvidPath', chain, bundles, options);
}

/**
 * Verifies a peer's X.509-SVID chain (leaf first; intermediates may follow and
 * the root may be included) and returns the peer's SPIFFE ID. To hold a
 * connection on the result, use {@link verifyX509SvidPath}, which also says
 * until when it verifies.
 *
 * Order, as go-spiffe's `x509svid.Verify`: non-empty chain; the leaf has
 * exactly one URI SAN that is a SPIFFE ID with a path; the leaf is no CA and
 * has digitalSignature but not keyCertSign/cRLSign; the bundle of **the leaf's
 * own trust domain** is found; then RFC 5280 path validation against that
 * bundle only, in crypto/x509's order: the leaf's critical extensions and
 * validity, then chains built leaf to authority (issuer names and key
 * identifiers, signatures, every certificate's critical extensions and validity
 * at `now`, signers' cA flag and keyCertSign, path length constraints), then
 * the name constraints of every CA on the chain over the SAN names below it.
 * Beyond go-spiffe, the leaf's key (after its key usage) and every
 * intermediate's (before path validation) must be RSA of 2048 to 16384 bits
 * (exponent below 2^31) or EC on P-256, P-384 or P-521 (`SVID_WEAK_KEY`); the bundle's authorities were
 * held to the same rule when the bundle was made.
 *
 * It is synchronous on purpose, so it can run inside `tls.checkServerIdentity`;
 * `await` on its result works as well.
 *
 * @param chain Leaf first; each certificate as DER, a @peculiar/x509
 *   certificate, or Node's `X509Certificate` (e.g. a TLS socket's
 *   `getPeerX509Certificate()`, which is then not parsed again).
 * @param options `now`: the time validity is checked at (default: the clock).
 * @throws {X509SvidError} with the code of the first rule broken.
 * @throws {IdentityConfigError} when `options` has a key other than `now`.
 */
export function verifyX509Svid(
  chain: readonly X509ChainEntry[],
  bundles: X509BundleSource,
  options: VerifyOptions = {},
): SpiffeId {
  return verify('verifyX509Svid', chain, bundles, options).id;
}

/** The one verification both public functions run; `owner` names the caller in an options error. */
function verify(
  owner: string,
  chain: readonly X509ChainEntry[],
  bundles: X509BundleSource,
  options: VerifyOptions,
): X509SvidVerification {
  // First: a misspelt `now` would otherwise verify against the clock, not the time asked for.
  checkKnownKeys(owner, options, VERIFY_OPTION_KEYS);
  if (!chain || chain.length === 0) throw new X509SvidError('SVID_EMPTY_CHAIN', 'certificate chain is empty');
  if (chain.length > MAX_CHAIN)
    throw new X509SvidError(
      'SVID_MALFORMED',
      `certificate chain has ${chain.length} certificates (max ${MAX_CHAIN})`,
    );
  const leaf = toCert(chain[0]!, 0);
  const rest = chain.slice(1).map((c, i) => toCert(c, i + 1));
  const id = checkLeafKept(leaf);
  const bundle = bundles.getX509Bundle(id.trustDomain);
  if (!bundle || bundle.authorities.length === 0)
    throw new X509SvidError(
      'SVID_UNKNOWN_TRUST_DOMAIN',
      `no X.509 bundle for trust domain ${id.trustDomain.name} of ${id.toString()}`,
    );
  const now = options.now ?? new Date();
  const roots = bundle.authorities;
  // A root the peer sent along is found in the bundle; only other certificates can be intermediates.
  const intermediates = rest.length === 0 ? rest : rest.filter((c) => !isOneOf(c, roots));
  // The bundle's own authorities were checked when it was made; a weak intermediate weakens every path through it.
  for (const c of intermediates) checkKey(c, () => `intermediate certificate ${c.subject}`);
  const path = validatePath(leaf, id.toString(), roots, intermediates, now, id.trustDomain.name);
  const ending = path.chain[path.expiring]!;
  const role: X509SvidPathCertificate['role'] =
    path.expiring === 0 ? 'leaf' : path.expiring === path.chain.length - 1 ? 'authority' : 'intermediate';
  return {
    id,
    expiresAt: new Date(path.notAfter),
    expiringCertificate: {
      role,
      // Read only for a message: a leaf's subject is formatted by OpenSSL on each read.
      get subject() {
        return ending.subject;
      },
    },
  };
}

/**
 * One of our own X.509-SVIDs: the certificate chain (leaf first) and its private key.
 * Immutable; {@link X509Svid.parse} enforces the SPIFFE leaf rules and that the key matches.
 */
export class X509Svid {
  readonly id: SpiffeId;
  readonly certificates: readonly x509.X509Certificate[];
  readonly privateKey: KeyObject;
  /** Operator hint from the Workload API (`''` when none). */
  readonly hint: string;
  readonly expiresAt: Date;
  readonly notBefore: Date;

  private constructor(id: SpiffeId, certs: x509.X509Certificate[], key: KeyObject, hint: string) {
    this.id = id;
    this.certificates = Object.freeze(certs);
    this.privateKey = key;
    this.hint = hint;
    const leaf = certs[0]!;
    this.expiresAt = leaf.notAfter;
    this.notBefore = leaf.notBefore;
    Object.freeze(this);
  }

  /**
   * Builds an SVID from its chain and key.
   *
   * @param chain PEM text, one DER blob of concatenated certificates, or a list of DER certificates; leaf first.
   * @param key PEM (PKCS#8, SEC1 or PKCS#1) or PKCS#8 DER.
   * @throws {X509SvidError} when a leaf rule is broken (same codes as {@link verifyX509Svid}),
   *   a signing certificate is no CA (`SVID_MALFORMED`), a certificate's key is weak or of a refused kind
   *   (`SVID_WEAK_KEY`: RSA under 2048 bits, EC off P-256/P-384/P-521, Ed25519, DSA), or the key does not
   *   match the leaf (`SVID_KEY_MISMATCH`).
   * @throws {IdentityConfigError} when `options` has a key other than `hint`.
   */
  static parse(
    chain: string | Uint8Array | readonly Uint8Array[],
    key: string | Uint8Array,
    options: { hint?: string } = {},
  ): X509Svid {
    checkKnownKeys('X509Svid.parse', options, PARSE_OPTION_KEYS);
    let certs: x509.X509Certificate[];
    try {
      certs = parseCertificates(chain);
    } catch (err) {
      throw new X509SvidError(
        'SVID_MALFORMED',
        `SVID chain cannot be parsed: ${err instanceof CertificateParseError ? err.message : String(err)}`,
        { cause: err },
      );
    }
    if (certs.length === 0) throw new X509SvidError('SVID_EMPTY_CHAIN', 'SVID chain holds no certificate');
    const leaf = certs[0]!;
    const id = checkLeaf(leaf);
    // RFC 5280 §4.2.1.6: with an empty subject the SAN extension must be critical.
    if (
      leaf.subjectName.toJSON().length === 0 &&
      !leaf.getExtension(x509.SubjectAlternativeNameExtension)?.critical
    )
      throw new X509SvidError(
        'SVID_MALFORMED',
        'leaf has an empty subject but its SAN extension is not critical',
      );
    const eku = leaf.getExtension(x509.ExtendedKeyUsageExtension);
    if (eku) {
      const u = eku.usages.map(String);
      if (!u.includes(x509.ExtendedKeyUsage.serverAuth) || !u.includes(x509.ExtendedKeyUsage.clientAuth))
        throw new X509SvidError(
          'SVID_LEAF_KEY_USAGE',
          'leaf extended key usage must include serverAuth and clientAuth',
        );
    }
    for (const signer of certs.slice(1)) {
      if (!isCa(signer) || !(keyUsage(signer).flags & KU.keyCertSign))
        throw new X509SvidError(
          'SVID_MALFORMED',
          `signing certificate ${signer.subject} is not a CA with keyCertSign`,
        );
      checkKey(signer, () => `signing certificate ${signer.subject}`);
    }
    let privateKey: KeyObject;
    try {
      privateKey =
        typeof key === 'string'
          ? createPrivateKey({ key, format: 'pem' })
          : createPrivateKey({ key: Buffer.from(key), format: 'der', type: 'pkcs8' });
    } catch (err) {
      throw new X509SvidError(
        'SVID_MALFORMED',
        `SVID private key cannot be parsed: ${(err as Error).message}`,
        {
          cause: err,
        },
      );
    }
    if (!toNodeCert(leaf).checkPrivateKey(privateKey))
      throw new X509SvidError(
        'SVID_KEY_MISMATCH',
        `private key does not match the leaf certificate of ${id.toString()}`,
      );
    return new X509Svid(id, certs, privateKey, options.hint ?? '');
  }

  /** PEM of the chain (leaf first) and of the PKCS#8 key, e.g. for `tls.createSecureContext({ cert, key })`. */
  toPem(): { certChain: string; privateKey: string } {
    return {
      certChain: certsToPem(this.certificates),
      privateKey: this.privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(),
    };
  }

  /** DER of the chain (concatenated) and of the PKCS#8 key, the Workload API encoding. */
  toDer(): { certChain: Uint8Array; privateKey: Uint8Array } {
    return {
      certChain: concatDer(this.certificates),
      privateKey: new Uint8Array(this.privateKey.export({ format: 'der', type: 'pkcs8' })),
    };
  }
}
