// Internal helpers around @peculiar/x509 and node:crypto. Not exported from the package.
import 'reflect-metadata';
import { X509Certificate as NodeX509Certificate, webcrypto, type KeyObject } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import { WeaveError } from './errors.js';

// @peculiar/x509 needs an explicit WebCrypto provider; Node's is complete.
x509.cryptoProvider.set(webcrypto as never);

export { x509 };

/** A bundle or certificate input that cannot be decoded. */
export class CertificateParseError extends WeaveError {
  constructor(message: string, cause?: unknown) {
    super('CERTIFICATE_MALFORMED', message, { cause });
  }
}

/** One DER element: its tag, its contents, and where the element after it begins. */
interface DerElement {
  readonly tag: number;
  readonly body: Uint8Array;
  readonly end: number;
}

/**
 * Reads the DER element that starts at byte `at` of `der` (definite lengths
 * of up to four bytes, as certificates and keys use).
 *
 * @throws {CertificateParseError} when it is truncated or its length encoding is not supported.
 */
function derElement(der: Uint8Array, at: number): DerElement {
  const tag = der[at];
  const first = der[at + 1];
  if (tag === undefined || first === undefined) throw new CertificateParseError('truncated DER');
  let len = first;
  let header = 2;
  if (first >= 0x80) {
    const n = first & 0x7f;
    if (n === 0 || n > 4) throw new CertificateParseError('unsupported DER length encoding');
    len = 0;
    for (let k = 0; k < n; k++) {
      const b = der[at + 2 + k];
      if (b === undefined) throw new CertificateParseError('truncated DER');
      len = len * 256 + b;
    }
    header = 2 + n;
  }
  const end = at + header + len;
  if (end > der.length) throw new CertificateParseError('truncated DER');
  return { tag, body: der.subarray(at + header, end), end };
}

/**
 * Splits concatenated DER certificates (the Workload API's encoding) by
 * reading each outer SEQUENCE header.
 */
function splitDer(der: Uint8Array): Uint8Array[] {
  const out: Uint8Array[] = [];
  let i = 0;
  while (i < der.length) {
    if (der[i] !== 0x30) throw new CertificateParseError(`expected a DER SEQUENCE at byte ${i}`);
    const { end } = derElement(der, i);
    out.push(der.subarray(i, end));
    i = end;
  }
  return out;
}

/**
 * How many certificates concatenated DER holds, read from their outer
 * headers only, so that a bundle can be counted before any of it is parsed;
 * stops past `max`. What is malformed counts as one more certificate and is
 * left for the parser to refuse.
 */
export function derCertificateCount(der: Uint8Array, max: number): number {
  let count = 0;
  for (let i = 0; i < der.length && count <= max; count++) {
    try {
      i = derElement(der, i).end;
    } catch {
      return count + 1;
    }
  }
  return count;
}

const PEM_CERT = /-----BEGIN CERTIFICATE-----([\s\S]*?)-----END CERTIFICATE-----/g;

/** Every CERTIFICATE block of a PEM text, as DER. Other block types are ignored. */
function pemToDerList(pem: string): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (const m of pem.matchAll(PEM_CERT)) {
    const body = (m[1] ?? '').replace(/\s+/g, '');
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(body)) throw new CertificateParseError('invalid base64 in PEM block');
    out.push(new Uint8Array(Buffer.from(body, 'base64')));
  }
  return out;
}

/** Parses one DER certificate, mapping library errors to a typed one. */
export function parseCertificate(der: Uint8Array): x509.X509Certificate {
  try {
    return new x509.X509Certificate(der);
  } catch (err) {
    throw new CertificateParseError(`cannot parse certificate: ${(err as Error).message}`, err);
  }
}

// Peers present the same certificates on every connection, and parsing is the
// dominant cost of verification: parsed certificates are kept, keyed by their
// exact DER bytes, in a small LRU.
const PARSE_CACHE_MAX = 512;
const PARSE_CACHE_MAX_BYTES = 8192;

/**
 * What `make` returns for `der`, kept in `cache` (an LRU of
 * {@link PARSE_CACHE_MAX} entries) keyed by the exact DER bytes.
 */
export function cachedByDer<T>(cache: Map<string, T>, der: Uint8Array, make: () => T): T {
  // Unusually large certificates are parsed every time rather than held.
  if (der.byteLength > PARSE_CACHE_MAX_BYTES) return make();
  const key = Buffer.from(der.buffer, der.byteOffset, der.byteLength).toString('latin1');
  const hit = cache.get(key);
  if (hit) {
    cache.delete(key);
    cache.set(key, hit);
    return hit;
  }
  const made = make();
  cache.set(key, made);
  if (cache.size > PARSE_CACHE_MAX) cache.delete(cache.keys().next().value!);
  return made;
}

const parseCache = new Map<string, x509.X509Certificate>();

/** {@link parseCertificate} with a cache keyed by the exact DER bytes. */
export function parseCertificateCached(der: Uint8Array): x509.X509Certificate {
  return cachedByDer(parseCache, der, () => parseCertificate(der));
}

// A Node X509Certificate cannot change once made: its parse is also kept per
// handle, so a caller holding the same handles on every connection skips the
// DER copy and the cache key (as readLeafCached does for leaves).
const parsedByHandle = new WeakMap<NodeX509Certificate, x509.X509Certificate>();

/** {@link parseCertificateCached} for Node's certificate handle. */
export function parseNodeCertificateCached(cert: NodeX509Certificate): x509.X509Certificate {
  let parsed = parsedByHandle.get(cert);
  if (!parsed) {
    parsed = parseCertificateCached(new Uint8Array(cert.raw));
    parsedByHandle.set(cert, parsed);
  }
  return parsed;
}

/**
 * Reads certificates from PEM text, one DER blob of concatenated certificates,
 * or a list of DER certificates.
 */
export function parseCertificates(
  input: string | Uint8Array | readonly Uint8Array[],
): x509.X509Certificate[] {
  let ders: Uint8Array[];
  if (typeof input === 'string') ders = pemToDerList(input);
  else if (input instanceof Uint8Array) ders = splitDer(input);
  else ders = [...input];
  return ders.map(parseCertificate);
}

export function certDer(cert: x509.X509Certificate): Uint8Array {
  return new Uint8Array(cert.rawData);
}

export function certsToPem(certs: readonly x509.X509Certificate[]): string {
  return certs.map((c) => c.toString('pem')).join('\n') + (certs.length ? '\n' : '');
}

export function concatDer(certs: readonly x509.X509Certificate[]): Uint8Array {
  return new Uint8Array(Buffer.concat(certs.map((c) => Buffer.from(c.rawData))));
}

// Node's OpenSSL-backed certificate is what verifies signatures (sync and fast);
// it is derived once per parsed certificate.
const nodeCache = new WeakMap<x509.X509Certificate, NodeX509Certificate>();

export function toNodeCert(cert: x509.X509Certificate): NodeX509Certificate {
  let n = nodeCache.get(cert);
  if (!n) {
    n = new NodeX509Certificate(Buffer.from(cert.rawData));
    nodeCache.set(cert, n);
  }
  return n;
}

/** URI SANs of a certificate, or undefined when it has no SAN extension. */
export function uriSans(cert: x509.X509Certificate): string[] {
  const ext = cert.getExtension(x509.SubjectAlternativeNameExtension);
  if (!ext) return [];
  return ext.names.items.filter((n) => n.type === 'url').map((n) => n.value);
}

export function isCa(cert: x509.X509Certificate): boolean {
  const bc = cert.getExtension(x509.BasicConstraintsExtension);
  return bc?.ca === true;
}

export function keyUsage(cert: x509.X509Certificate): { present: boolean; flags: number; critical: boolean } {
  const ku = cert.getExtension(x509.KeyUsagesExtension);
  return ku
    ? { present: true, flags: ku.usages, critical: ku.critical }
    : { present: false, flags: 0, critical: false };
}

/** EC curves accepted for SVID and authority keys: Node's `namedCurve` (OpenSSL's name) → NIST name. */
const ACCEPTED_CURVES: ReadonlyMap<string, string> = new Map([
  ['prime256v1', 'P-256'],
  ['secp384r1', 'P-384'],
  ['secp521r1', 'P-521'],
]);

const MIN_RSA_BITS = 2048;
/**
 * Longest RSA modulus taken: OpenSSL's own bound (OPENSSL_RSA_MAX_MODULUS_BITS).
 * A larger key verifies nothing OpenSSL signs, and each use costs more.
 */
const MAX_RSA_BITS = 16384;
/**
 * Longest RSA public exponent taken, in bits: Go's crypto/rsa (SPIRE,
 * go-spiffe) takes none above 2^31 - 1, and every issuer uses 65537. Node
 * reads a key's exponent (`asymmetricKeyDetails`) in time that grows with
 * its square: a JWK with an `e` of 100 KB held the event loop for 1.5 s,
 * one of 300 KB for 98 s, so the size is read from the key's DER first.
 */
const MAX_RSA_EXPONENT_BITS = 31;

const ACCEPTED = `RSA of ${MIN_RSA_BITS} to ${MAX_RSA_BITS} bits with a public exponent below 2^${MAX_RSA_EXPONENT_BITS} or EC on P-256, P-384 or P-521 is required`;

/** Bits of a DER INTEGER's contents read as unsigned (leading zero bytes ignored). */
function unsignedBits(body: Uint8Array): number {
  let i = 0;
  while (i < body.length && body[i] === 0) i++;
  return i === body.length ? 0 : (body.length - i - 1) * 8 + (32 - Math.clz32(body[i] as number));
}

/**
 * The sizes of an RSA public key (PKCS#1 or PSS), read from its
 * SubjectPublicKeyInfo: SEQUENCE { algorithm, BIT STRING { 0, SEQUENCE { n, e } } }.
 */
function rsaSizes(key: KeyObject): { modulusBits: number; exponentBits: number } {
  const spki = key.export({ format: 'der', type: 'spki' });
  const info = derElement(spki, 0).body;
  const algorithm = derElement(info, 0);
  const bitString = derElement(info, algorithm.end).body;
  // The BIT STRING's first byte counts its unused bits (0); the RSAPublicKey follows.
  const rsa = derElement(bitString, 1).body;
  const n = derElement(rsa, 0);
  const e = derElement(rsa, n.end);
  return { modulusBits: unsignedBits(n.body), exponentBits: unsignedBits(e.body) };
}

/**
 * Why `key` is refused as the key of an X.509-SVID, of an X.509 authority or
 * of a JWT authority, or undefined when it is accepted. The one rule for all
 * of them, whichever provider brought the key (Workload API, files, dev CA):
 * RSA (PKCS#1 or PSS) of 2048 to 16384 bits with an exponent below 2^31, or
 * EC on P-256, P-384 or P-521.
 * That covers what SPIRE issues (ec-p256, ec-p384, rsa-2048, rsa-4096) and
 * what Node's TLS and the JWT-SVID algorithms (ES512 included) use. Shorter
 * RSA, other curves (secp256k1, Brainpool, explicit parameters), and other key
 * types (Ed25519, DSA) are refused: nothing here signs or verifies SVIDs with them.
 */
export function keyWeakness(key: KeyObject): string | undefined {
  const type = key.asymmetricKeyType;
  if (type === 'rsa' || type === 'rsa-pss') {
    // Not asymmetricKeyDetails: it reads the exponent, whatever its size (see MAX_RSA_EXPONENT_BITS).
    const { modulusBits, exponentBits } = rsaSizes(key);
    if (modulusBits < MIN_RSA_BITS || modulusBits > MAX_RSA_BITS) {
      return `an RSA key of ${modulusBits} bits (${ACCEPTED})`;
    }
    if (exponentBits > MAX_RSA_EXPONENT_BITS) {
      return `an RSA key whose public exponent has ${exponentBits} bits (${ACCEPTED})`;
    }
    return undefined;
  }
  if (type === 'ec') {
    const curve = key.asymmetricKeyDetails?.namedCurve;
    if (curve !== undefined && ACCEPTED_CURVES.has(curve)) return undefined;
    return `an EC key on ${curve === undefined ? 'an unnamed curve' : `curve ${curve}`} (${ACCEPTED})`;
  }
  return `a key of type ${type ?? 'unknown'} (${ACCEPTED})`;
}

// A certificate's key cannot change: its verdict is kept per Node handle, which
// callers keep per certificate (peers and bundles present the same ones again).
const weaknessByCert = new WeakMap<NodeX509Certificate, string>();

/** {@link keyWeakness} of a certificate's public key; a key Node cannot read is refused too. */
export function certKeyWeakness(cert: NodeX509Certificate): string | undefined {
  let weakness = weaknessByCert.get(cert);
  if (weakness === undefined) {
    try {
      weakness = keyWeakness(cert.publicKey) ?? '';
    } catch (err) {
      weakness = `a public key that cannot be read: ${(err as Error).message}`;
    }
    weaknessByCert.set(cert, weakness);
  }
  return weakness === '' ? undefined : weakness;
}

export function sameDer(a: x509.X509Certificate, b: x509.X509Certificate): boolean {
  return Buffer.from(a.rawData).equals(Buffer.from(b.rawData));
}
