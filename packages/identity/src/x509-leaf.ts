// The peer's leaf certificate, read for verification without @peculiar/x509.
//
// Every new peer certificate is verified once, and @peculiar/x509's pure-JS
// ASN.1 object model costs about 1 ms of CPU per certificate (measured on
// Node 20: the whole-certificate schema parse, then one schema parse per
// extension), five times what OpenSSL takes to parse it. The leaf is the one
// certificate that is new on every new peer (intermediates and authorities
// repeat and are cached), so it is read here from Node's `X509Certificate`
// (OpenSSL: structure, signature checks) plus a strict DER walk over the few
// fields SPIFFE rules read: validity, the extension list, and the values of
// subjectAltName, basicConstraints and keyUsage.
//
// Verdicts must be exactly those of the @peculiar/x509 reading. So the walk
// only answers for certificates it reads completely and in the one DER form
// (definite lengths, BOOLEAN 0x00/0xFF, printable-ASCII names, plain
// UTCTime/GeneralizedTime, extensions it can vouch @peculiar/x509 would
// decode too); for anything else it answers `undefined` and the caller parses
// with @peculiar/x509 as before. @peculiar/x509 is still used, lazily, for
// what only it gives: the subject in error messages and the SAN names checked
// against a CA's name constraints. Not exported from the package.
import { X509Certificate as NodeX509Certificate } from 'node:crypto';
import {
  cachedByDer,
  isCa,
  keyUsage,
  parseCertificate,
  toNodeCert,
  uriSans,
  type x509,
} from './x509-util.js';

/** One DER element: tag, content `[start, end)`, whole element `[at, end)`. */
interface Tlv {
  readonly tag: number;
  readonly at: number;
  readonly start: number;
  readonly end: number;
}

/** Signals a certificate the walk does not read completely: the caller falls back to @peculiar/x509. */
class NotPlain extends Error {}

function need(cond: boolean): asserts cond {
  if (!cond) throw new NotPlain();
}

/** Reads one element at `at` that must end by `limit`: single-byte tag, definite length. */
function readTlv(der: Uint8Array, at: number, limit: number): Tlv {
  need(at + 2 <= limit);
  const tag = der[at]!;
  need((tag & 0x1f) !== 0x1f); // high tag numbers appear in no field read here
  const first = der[at + 1]!;
  let len: number;
  let start: number;
  if (first < 0x80) {
    len = first;
    start = at + 2;
  } else {
    const n = first & 0x7f;
    need(n >= 1 && n <= 4 && at + 2 + n <= limit);
    len = 0;
    for (let k = 0; k < n; k++) len = len * 256 + der[at + 2 + k]!;
    start = at + 2 + n;
  }
  const end = start + len;
  need(end <= limit);
  return { tag, at, start, end };
}

/** The elements inside `parent`, which they must fill exactly. */
function children(der: Uint8Array, parent: Tlv): Tlv[] {
  const out: Tlv[] = [];
  let i = parent.start;
  while (i < parent.end) {
    const t = readTlv(der, i, parent.end);
    out.push(t);
    i = t.end;
  }
  return out;
}

function one(t: Tlv | undefined, tag: number): Tlv {
  need(t !== undefined && t.tag === tag);
  return t;
}

/** Dotted OID text, as asn1js prints it; only minimally encoded arcs below 2^53. */
function oidText(der: Uint8Array, t: Tlv): string {
  need(t.tag === 0x06 && t.end > t.start);
  const arcs: number[] = [];
  let v = 0;
  let fresh = true;
  for (let i = t.start; i < t.end; i++) {
    const b = der[i]!;
    need(!(fresh && b === 0x80)); // no leading 0x80 (non-minimal)
    v = v * 128 + (b & 0x7f);
    need(Number.isSafeInteger(v));
    fresh = (b & 0x80) === 0;
    if (fresh) {
      arcs.push(v);
      v = 0;
    }
  }
  need(fresh);
  const head = arcs[0]!;
  const [a, b] = head < 40 ? [0, head] : head < 80 ? [1, head - 40] : [2, head - 80];
  return [a, b, ...arcs.slice(1)].join('.');
}

/** BOOLEAN in its DER form only. */
function bool(der: Uint8Array, t: Tlv): boolean {
  need(t.tag === 0x01 && t.end - t.start === 1);
  const b = der[t.start]!;
  need(b === 0x00 || b === 0xff);
  return b === 0xff;
}

/** Bytes of a string that is printable ASCII (so every decoder reads the same text). */
function ascii(der: Uint8Array, t: Tlv): string {
  let s = '';
  for (let i = t.start; i < t.end; i++) {
    const b = der[i]!;
    need(b >= 0x20 && b <= 0x7e);
    s += String.fromCharCode(b);
  }
  return s;
}

/** UTCTime `YYMMDDHHMMSSZ` or GeneralizedTime `YYYYMMDDHHMMSSZ`, as asn1js reads them (RFC 5280 §4.1.2.5). */
function time(der: Uint8Array, t: Tlv): Date {
  const s = ascii(der, t);
  let year: number;
  let rest: string;
  if (t.tag === 0x17) {
    need(/^\d{12}Z$/.test(s));
    const yy = Number(s.slice(0, 2));
    year = yy >= 50 ? 1900 + yy : 2000 + yy;
    rest = s.slice(2);
  } else {
    need(t.tag === 0x18 && /^\d{14}Z$/.test(s));
    year = Number(s.slice(0, 4));
    need(year >= 100); // Date.UTC reads years 0–99 as 1900–1999
    rest = s.slice(4);
  }
  const n = (i: number): number => Number(rest.slice(i, i + 2));
  return new Date(Date.UTC(year, n(0) - 1, n(2), n(4), n(6), n(8)));
}

/** AlgorithmIdentifier: an OID and no parameters, NULL or an OID (an EC curve). */
function algorithm(der: Uint8Array, t: Tlv): void {
  const kids = children(der, t);
  oidText(der, kids[0]!);
  need(
    kids.length === 1 ||
      (kids.length === 2 &&
        (kids[1]!.tag === 0x06 || (kids[1]!.tag === 0x05 && kids[1]!.end === kids[1]!.start))),
  );
}

/** A Name whose every attribute value is a UTF8, Printable or IA5 string of printable ASCII. */
function name(der: Uint8Array, t: Tlv): void {
  for (const rdn of children(der, t)) {
    for (const atv of children(der, one(rdn, 0x31))) {
      const kids = children(der, one(atv, 0x30));
      need(kids.length === 2);
      oidText(der, kids[0]!);
      need([0x0c, 0x13, 0x16].includes(kids[1]!.tag));
      ascii(der, kids[1]!);
    }
  }
}

/** A leaf extension as the path checks read it (type, criticality, DER value). */
export interface LeafExtension {
  readonly type: string;
  readonly critical: boolean;
  readonly value: ArrayBuffer;
}

const OID_SAN = '2.5.29.17';
const OID_BASIC_CONSTRAINTS = '2.5.29.19';
const OID_KEY_USAGE = '2.5.29.15';
const OID_EXT_KEY_USAGE = '2.5.29.37';
const OID_SUBJECT_KEY_ID = '2.5.29.14';
const OID_AUTHORITY_KEY_ID = '2.5.29.35';

/**
 * Extensions @peculiar/x509 decodes when a certificate's extensions are read
 * (its ExtensionFactory), so a malformed one makes that reading fail. Each is
 * either checked below or sends the certificate to @peculiar/x509.
 */
const DECODED_BY_PECULIAR = new Set([
  OID_SAN,
  OID_BASIC_CONSTRAINTS,
  OID_KEY_USAGE,
  OID_EXT_KEY_USAGE,
  OID_SUBJECT_KEY_ID,
  OID_AUTHORITY_KEY_ID,
  '2.5.29.31', // cRLDistributionPoints
  '1.3.6.1.5.5.7.1.1', // authorityInfoAccess
  '2.5.29.32', // certificatePolicies
  '2.5.29.18', // issuerAltName
]);

/** URI SANs; other names only of kinds whose text every decoder agrees on (DNS, email, IPv4/IPv6). */
function sanUris(der: Uint8Array, value: Tlv): string[] {
  const uris: string[] = [];
  for (const n of children(der, one(value, 0x30))) {
    if (n.tag === 0x86) uris.push(ascii(der, n));
    else if (n.tag === 0x81 || n.tag === 0x82) ascii(der, n);
    else need(n.tag === 0x87 && (n.end - n.start === 4 || n.end - n.start === 16));
  }
  return uris;
}

/** basicConstraints: cA (DEFAULT FALSE), then an optional small pathLenConstraint. */
function basicConstraintsCa(der: Uint8Array, value: Tlv): boolean {
  const kids = children(der, one(value, 0x30));
  let ca = false;
  let i = 0;
  if (kids[i]?.tag === 0x01) ca = bool(der, kids[i++]!);
  if (kids[i]) {
    const p = kids[i++]!;
    need(p.tag === 0x02 && p.end - p.start >= 1 && p.end - p.start <= 4 && der[p.start]! < 0x80);
  }
  need(i === kids.length);
  return ca;
}

/** keyUsage flags as @peculiar/x509's `KeyUsagesExtension.usages`: bit i of the BIT STRING is flag 1 << i. */
function keyUsageFlags(der: Uint8Array, value: Tlv): number {
  need(value.tag === 0x03 && value.end - value.start >= 2 && value.end - value.start <= 4);
  const unused = der[value.start]!;
  need(unused <= 7);
  const bits = (value.end - value.start - 1) * 8 - unused;
  let flags = 0;
  for (let i = 0; i < bits; i++) {
    if (der[value.start + 1 + (i >> 3)]! & (0x80 >> (i & 7))) flags += 2 ** i;
  }
  return flags;
}

/** extKeyUsage, subjectKeyIdentifier, authorityKeyIdentifier (key id form only): well-formed or not plain. */
function checkDecodable(der: Uint8Array, type: string, value: Tlv): void {
  switch (type) {
    case OID_EXT_KEY_USAGE:
      for (const k of children(der, one(value, 0x30))) oidText(der, k);
      return;
    case OID_SUBJECT_KEY_ID:
      one(value, 0x04);
      return;
    case OID_AUTHORITY_KEY_ID: {
      const kids = children(der, one(value, 0x30));
      need(kids.every((k) => k.tag === 0x80));
      need(kids.length <= 1);
      return;
    }
    default:
      need(false);
  }
}

/**
 * A peer's leaf certificate read through Node's `X509Certificate` and a DER
 * walk: what the SPIFFE leaf rules and path validation read, without
 * @peculiar/x509's object model. `subject` and {@link LeafCertificate.full}
 * parse with @peculiar/x509 on first use (error messages, name constraints).
 */
export class LeafCertificate {
  readonly rawData: ArrayBuffer;
  readonly node: NodeX509Certificate;
  readonly notBefore: Date;
  readonly notAfter: Date;
  readonly extensions: readonly LeafExtension[];
  /** URI SANs (empty without a SAN extension). */
  readonly uris: readonly string[];
  readonly ca: boolean;
  readonly keyUsage: { present: boolean; flags: number; critical: boolean };
  #full: x509.X509Certificate | undefined;

  private constructor(
    der: Uint8Array,
    node: NodeX509Certificate,
    fields: Omit<LeafCertificate, 'rawData' | 'node' | 'full' | 'subject'>,
  ) {
    this.rawData = der.buffer.slice(der.byteOffset, der.byteOffset + der.byteLength) as ArrayBuffer;
    this.node = node;
    this.notBefore = fields.notBefore;
    this.notAfter = fields.notAfter;
    this.extensions = fields.extensions;
    this.uris = fields.uris;
    this.ca = fields.ca;
    this.keyUsage = fields.keyUsage;
  }

  /** The same certificate parsed by @peculiar/x509 (once). @throws {CertificateParseError} */
  full(): x509.X509Certificate {
    return (this.#full ??= parseCertificate(new Uint8Array(this.rawData)));
  }

  /** The subject as @peculiar/x509 prints it (messages only). */
  get subject(): string {
    try {
      return this.full().subject;
    } catch {
      return this.node.subject.replaceAll('\n', ', ');
    }
  }

  /**
   * Reads `der` (or Node's parsed certificate), or returns undefined when the
   * certificate is not in the plain form this reading vouches for.
   */
  static read(input: Uint8Array | NodeX509Certificate): LeafCertificate | undefined {
    let node: NodeX509Certificate;
    let der: Uint8Array;
    try {
      node = input instanceof NodeX509Certificate ? input : new NodeX509Certificate(input);
      der = input instanceof Uint8Array ? input : new Uint8Array(node.raw);
    } catch {
      return undefined; // OpenSSL refuses it: the caller's parse says why
    }
    try {
      return LeafCertificate.#walk(der, node);
    } catch {
      return undefined; // not plain (NotPlain), or anything unexpected: @peculiar/x509 decides
    }
  }

  static #walk(der: Uint8Array, node: NodeX509Certificate): LeafCertificate {
    const cert = one(readTlv(der, 0, der.length), 0x30);
    need(cert.end === der.length);
    const top = children(der, cert);
    need(top.length === 3);
    const tbs = one(top[0], 0x30);
    algorithm(der, one(top[1], 0x30));
    one(top[2], 0x03);
    const f = children(der, tbs);
    // version [0] is present in every v3 certificate (extensions need it).
    need(f[0]?.tag === 0xa0);
    // Fields read by neither the walk nor the path checks still decide whether @peculiar/x509
    // parses the certificate at all (OpenSSL accepts more, e.g. any value in a name): their form
    // is checked too.
    one(f[1], 0x02);
    algorithm(der, one(f[2], 0x30));
    name(der, one(f[3], 0x30));
    name(der, one(f[5], 0x30));
    const spki = children(der, one(f[6], 0x30));
    need(spki.length === 2);
    algorithm(der, one(spki[0], 0x30));
    one(spki[1], 0x03);
    const optional = f.slice(7).map((t) => t.tag);
    need(optional.every((tag, i) => [0x81, 0x82, 0xa3].includes(tag) && (i === 0 || tag > optional[i - 1]!)));
    const validity = children(der, one(f[4]!, 0x30));
    need(validity.length === 2);
    const notBefore = time(der, validity[0]!);
    const notAfter = time(der, validity[1]!);
    const extensions: LeafExtension[] = [];
    let uris: string[] = [];
    let ca = false;
    let ku = { present: false, flags: 0, critical: false };
    const seen = new Set<string>();
    const extsField = f.slice(7).find((t) => t.tag === 0xa3);
    let exts: Tlv[] = [];
    if (extsField) {
      const inner = children(der, extsField);
      need(inner.length === 1);
      exts = children(der, one(inner[0], 0x30));
    }
    for (const e of exts) {
      const parts = children(der, one(e, 0x30));
      need(parts.length === 2 || parts.length === 3);
      const type = oidText(der, parts[0]!);
      const critical = parts.length === 3 ? bool(der, parts[1]!) : false;
      need(!(parts.length === 3 && !critical)); // DER never encodes the default FALSE
      const octets = one(parts[parts.length - 1]!, 0x04);
      // The first of a repeated extension is the one @peculiar/x509's getExtension finds.
      const first = !seen.has(type);
      seen.add(type);
      if (DECODED_BY_PECULIAR.has(type)) {
        const value = readTlv(der, octets.start, octets.end);
        need(value.end === octets.end);
        if (type === OID_SAN) {
          const u = sanUris(der, value);
          if (first) uris = u;
        } else if (type === OID_BASIC_CONSTRAINTS) {
          const c = basicConstraintsCa(der, value);
          if (first) ca = c;
        } else if (type === OID_KEY_USAGE) {
          const flags = keyUsageFlags(der, value);
          if (first) ku = { present: true, flags, critical };
        } else checkDecodable(der, type, value);
      } else need(type !== '2.5.29.30'); // name constraints on a leaf: read by @peculiar/x509
      extensions.push({
        type,
        critical,
        value: der.buffer.slice(der.byteOffset + octets.start, der.byteOffset + octets.end) as ArrayBuffer,
      });
    }
    return new LeafCertificate(der, node, { notBefore, notAfter, extensions, uris, ca, keyUsage: ku });
  }
}

/** A certificate in verification: the peer's leaf read by {@link LeafCertificate}, or a @peculiar/x509 one. */
export type VerifiedCert = x509.X509Certificate | LeafCertificate;

/** URI SANs of either kind of certificate. @throws when @peculiar/x509 cannot read the extensions. */
export function certUriSans(cert: VerifiedCert): readonly string[] {
  return cert instanceof LeafCertificate ? cert.uris : uriSans(cert);
}

export function certIsCa(cert: VerifiedCert): boolean {
  return cert instanceof LeafCertificate ? cert.ca : isCa(cert);
}

export function certKeyUsage(cert: VerifiedCert): { present: boolean; flags: number; critical: boolean } {
  return cert instanceof LeafCertificate ? cert.keyUsage : keyUsage(cert);
}

/** Node's (OpenSSL's) certificate, for issuer and signature checks. */
export function nodeCertOf(cert: VerifiedCert): NodeX509Certificate {
  return cert instanceof LeafCertificate ? cert.node : toNodeCert(cert);
}

/** The @peculiar/x509 certificate (parsed now for a leaf read here). */
export function fullCert(cert: VerifiedCert): x509.X509Certificate {
  return cert instanceof LeafCertificate ? cert.full() : cert;
}

const leafCache = new Map<string, VerifiedCert>();

// Node's X509Certificate cannot change after it is made, so the reading of
// one handle is also kept per handle: a caller that holds the same handle
// for every connection of a peer (a client resuming a session keeps the
// chain it verified) skips copying the DER out of OpenSSL and turning it into
// the cache key on each of them. A DER array may be changed by its owner
// between calls, so it is always read by content.
const leafByHandle = new WeakMap<NodeX509Certificate, VerifiedCert>();

/**
 * The peer's leaf for verification: read by {@link LeafCertificate} when it
 * is plain, else parsed by @peculiar/x509; kept per exact DER (peers present
 * the same leaf on every connection) and per Node handle.
 *
 * @throws {CertificateParseError} when neither can read it.
 */
export function readLeafCached(input: Uint8Array | NodeX509Certificate): VerifiedCert {
  if (!(input instanceof Uint8Array)) {
    const known = leafByHandle.get(input);
    if (known) return known;
  }
  const der = input instanceof Uint8Array ? input : new Uint8Array(input.raw);
  let undecodable = false;
  try {
    const cert = cachedByDer(leafCache, der, () => {
      const light = LeafCertificate.read(input);
      if (light) return light;
      const full = parseCertificate(der);
      try {
        void full.extensions;
      } catch (err) {
        undecodable = true;
        throw err;
      }
      return full;
    });
    if (!(input instanceof Uint8Array)) leafByHandle.set(input, cert);
    return cert;
  } catch (err) {
    if (!undecodable) throw err;
  }
  // @peculiar/x509 keeps an empty extension list once decoding them failed, so
  // a kept certificate would show a later connection no extensions at all (no
  // SAN, no keyUsage, no critical ones). Such a leaf is never kept: each
  // verification gets a fresh parse, whose first read fails as it should.
  return parseCertificate(der);
}
