import { createPrivateKey, type KeyObject } from 'node:crypto';
import type { X509BundleSource } from './bundle.js';
import { WeaveError } from './errors.js';
import { SpiffeId } from './spiffe-id.js';
import {
  CertificateParseError,
  certsToPem,
  concatDer,
  isCa,
  keyUsage,
  parseCertificateCached,
  parseCertificates,
  sameDer,
  toNodeCert,
  uriSans,
  x509,
} from './x509-util.js';

/** Why an X.509-SVID was rejected. */
export type X509SvidErrorCode =
  | 'SVID_EMPTY_CHAIN'
  | 'SVID_NO_URI_SAN'
  | 'SVID_MULTIPLE_URI_SANS'
  | 'SVID_INVALID_SPIFFE_ID'
  | 'SVID_ROOT_PATH'
  | 'SVID_LEAF_IS_CA'
  | 'SVID_LEAF_KEY_USAGE'
  | 'SVID_UNKNOWN_TRUST_DOMAIN'
  | 'SVID_EXPIRED'
  | 'SVID_NOT_YET_VALID'
  | 'SVID_UNTRUSTED'
  | 'SVID_KEY_MISMATCH'
  | 'SVID_MALFORMED';

/** An X.509-SVID (own or a peer's) broke a SPIFFE rule or did not verify. */
export class X509SvidError extends WeaveError {
  declare readonly code: X509SvidErrorCode;
  constructor(code: X509SvidErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}

const KU = x509.KeyUsageFlags;

/**
 * Checks the SPIFFE leaf rules and returns the leaf's SPIFFE ID.
 * Order follows go-spiffe: ID first, then CA flag, then key usage.
 */
function checkLeaf(leaf: x509.X509Certificate): SpiffeId {
  let uris: string[];
  try {
    uris = uriSans(leaf);
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
  if (isCa(leaf)) throw new X509SvidError('SVID_LEAF_IS_CA', `leaf certificate of ${uri} is a CA (cA=true)`);
  const ku = keyUsage(leaf);
  if (ku.flags & KU.keyCertSign)
    throw new X509SvidError('SVID_LEAF_KEY_USAGE', `leaf certificate of ${uri} has keyCertSign key usage`);
  if (ku.flags & KU.cRLSign)
    throw new X509SvidError('SVID_LEAF_KEY_USAGE', `leaf certificate of ${uri} has cRLSign key usage`);
  if (!(ku.flags & KU.digitalSignature))
    throw new X509SvidError(
      'SVID_LEAF_KEY_USAGE',
      `leaf certificate of ${uri} lacks digitalSignature key usage`,
    );
  return id;
}

function checkTime(cert: x509.X509Certificate, now: Date, what: string): void {
  if (now.getTime() < cert.notBefore.getTime())
    throw new X509SvidError(
      'SVID_NOT_YET_VALID',
      `${what} is not valid before ${cert.notBefore.toISOString()}`,
    );
  if (now.getTime() > cert.notAfter.getTime())
    throw new X509SvidError('SVID_EXPIRED', `${what} expired at ${cert.notAfter.toISOString()}`);
}

/** True when `issuer` issued `cert`: names and key identifiers match (OpenSSL's check) and the signature verifies. */
function issued(issuer: x509.X509Certificate, cert: x509.X509Certificate): boolean {
  const ni = toNodeCert(issuer);
  const nc = toNodeCert(cert);
  try {
    return nc.checkIssued(ni) && nc.verify(ni.publicKey);
  } catch {
    return false;
  }
}

function toCert(c: Uint8Array | x509.X509Certificate, i: number): x509.X509Certificate {
  if (c instanceof x509.X509Certificate) return c;
  if (!(c instanceof Uint8Array))
    throw new X509SvidError(
      'SVID_MALFORMED',
      `certificate ${i} of the chain is neither DER bytes nor a certificate`,
    );
  try {
    return parseCertificateCached(c);
  } catch (err) {
    throw new X509SvidError('SVID_MALFORMED', `certificate ${i} of the chain cannot be parsed`, {
      cause: err,
    });
  }
}

// Longer chains than this are refused: SPIRE's deepest (upstream + intermediate) is far below.
const MAX_CHAIN = 16;

/**
 * Verifies a peer's X.509-SVID chain (leaf first; intermediates may follow and
 * the root may be included) and returns the peer's SPIFFE ID.
 *
 * Order, as go-spiffe: non-empty chain; the leaf has exactly one URI SAN that is
 * a SPIFFE ID with a path; the leaf is no CA and has digitalSignature but not
 * keyCertSign/cRLSign; the bundle of **the leaf's own trust domain** is found;
 * the chain path-validates against that bundle only (signatures, names, CA
 * flags of signers, validity period of every certificate at `now`).
 *
 * It is synchronous on purpose, so it can run inside `tls.checkServerIdentity`;
 * `await` on its result works as well.
 *
 * @throws {X509SvidError} with the code of the first rule broken.
 */
export function verifyX509Svid(
  chain: readonly (Uint8Array | x509.X509Certificate)[],
  bundles: X509BundleSource,
  options: { now?: Date } = {},
): SpiffeId {
  if (!chain || chain.length === 0) throw new X509SvidError('SVID_EMPTY_CHAIN', 'certificate chain is empty');
  if (chain.length > MAX_CHAIN)
    throw new X509SvidError(
      'SVID_MALFORMED',
      `certificate chain has ${chain.length} certificates (max ${MAX_CHAIN})`,
    );
  const certs = chain.map(toCert);
  const leaf = certs[0]!;
  const id = checkLeaf(leaf);
  const bundle = bundles.getX509Bundle(id.trustDomain);
  if (!bundle || bundle.authorities.length === 0)
    throw new X509SvidError(
      'SVID_UNKNOWN_TRUST_DOMAIN',
      `no X.509 bundle for trust domain ${id.trustDomain.name} of ${id.toString()}`,
    );
  const now = options.now ?? new Date();
  const roots = bundle.authorities;
  const intermediates = certs.slice(1).filter((c) => !roots.some((r) => sameDer(r, c)));

  let current = leaf;
  const used = new Set<x509.X509Certificate>();
  checkTime(leaf, now, `leaf certificate of ${id.toString()}`);
  for (let depth = 0; depth <= intermediates.length; depth++) {
    const root = roots.find((r) => issued(r, current));
    if (root) {
      if (!isCa(root))
        throw new X509SvidError(
          'SVID_UNTRUSTED',
          `authority ${root.subject} of ${id.trustDomain.name} is not a CA`,
        );
      checkTime(root, now, `authority ${root.subject} of ${id.trustDomain.name}`);
      return id;
    }
    const next = intermediates.find((c) => !used.has(c) && issued(c, current));
    if (!next) break;
    if (!isCa(next) || (!(keyUsage(next).flags & KU.keyCertSign) && keyUsage(next).present))
      throw new X509SvidError('SVID_UNTRUSTED', `intermediate ${next.subject} may not sign certificates`);
    checkTime(next, now, `intermediate ${next.subject}`);
    used.add(next);
    current = next;
  }
  throw new X509SvidError(
    'SVID_UNTRUSTED',
    `chain of ${id.toString()} does not lead to an authority of trust domain ${id.trustDomain.name} (unknown issuer, bad signature or broken chain)`,
  );
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
   *   a signing certificate is no CA (`SVID_MALFORMED`), or the key does not match the leaf (`SVID_KEY_MISMATCH`).
   */
  static parse(
    chain: string | Uint8Array | readonly Uint8Array[],
    key: string | Uint8Array,
    options: { hint?: string } = {},
  ): X509Svid {
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
