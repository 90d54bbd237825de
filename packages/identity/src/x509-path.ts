// RFC 5280 path validation for X.509-SVIDs, synchronous (it runs inside
// tls.checkServerIdentity). It follows Go's crypto/x509 Verify, which is what
// go-spiffe's x509svid.Verify uses, so both judge a chain alike: the leaf is
// checked first, then chains are built depth-first (roots before
// intermediates), each candidate issuer checked for its signature, critical
// extensions, validity, CA flag and path length, and the built chains are
// then filtered by name constraints. Signatures and issuer matching are
// OpenSSL's (node:crypto X509Certificate.checkIssued + verify); extensions are
// decoded by @peculiar/x509 and @peculiar/asn1-x509, except the peer's leaf,
// which is read without @peculiar/x509's object model (x509-leaf.ts) unless a
// CA's name constraints need its SAN names. Not exported from the package.
import type { KeyObject } from 'node:crypto';
import { BlockList, isIP } from 'node:net';
import { AsnConvert } from '@peculiar/asn1-schema';
import { NameConstraints, type GeneralName } from '@peculiar/asn1-x509';
import { X509SvidError } from './x509-svid-error.js';
import { fullCert, nodeCertOf, type LeafExtension, type VerifiedCert } from './x509-leaf.js';
import { isCa, keyUsage, x509 } from './x509-util.js';

const KU = x509.KeyUsageFlags;

const OID_NAME_CONSTRAINTS = '2.5.29.30';
const OID_SAN = '2.5.29.17';

/**
 * Extensions whose constraints are enforced here, or that constrain nothing
 * (key identifiers, where to fetch CRLs or issuers). A certificate with any
 * other extension marked critical is refused (RFC 5280 §4.2: "A certificate-
 * using system MUST reject the certificate if it encounters a critical
 * extension it does not recognize"). Certificate policies are not processed,
 * so a critical policy extension is refused too.
 */
const UNDERSTOOD = new Set([
  '2.5.29.14', // subjectKeyIdentifier
  '2.5.29.15', // keyUsage
  '2.5.29.17', // subjectAltName
  '2.5.29.19', // basicConstraints
  '2.5.29.30', // nameConstraints (when every subtree is of a kind checked here)
  '2.5.29.31', // cRLDistributionPoints
  '2.5.29.35', // authorityKeyIdentifier
  '2.5.29.37', // extKeyUsage
  '1.3.6.1.5.5.7.1.1', // authorityInfoAccess
]);

/** Name kinds that name constraints are checked for (as Go: no directoryName). */
type NameKind = 'dns' | 'uri' | 'ip' | 'email';

interface Subtree {
  kind: NameKind;
  value: string;
}

interface Constraints {
  permitted: Subtree[] | undefined;
  excluded: Subtree[];
  /** A subtree of a kind not checked here (directoryName, otherName, …). */
  unsupported: boolean;
}

const constraintsCache = new WeakMap<VerifiedCert, Constraints | null>();

/** Both kinds of certificate list their extensions alike (type, criticality, DER value). */
const extensionsOf = (cert: VerifiedCert): readonly LeafExtension[] => cert.extensions;

function subtreesOf(list: { base: GeneralName }[] | undefined, out: Subtree[]): boolean {
  let unsupported = false;
  for (const { base } of list ?? []) {
    if (base.dNSName !== undefined) out.push({ kind: 'dns', value: base.dNSName });
    else if (base.uniformResourceIdentifier !== undefined)
      out.push({ kind: 'uri', value: base.uniformResourceIdentifier });
    else if (base.rfc822Name !== undefined) out.push({ kind: 'email', value: base.rfc822Name });
    else if (base.iPAddress !== undefined) out.push({ kind: 'ip', value: base.iPAddress });
    else unsupported = true;
  }
  return unsupported;
}

/** The certificate's name constraints, or null when it has none. @throws {X509SvidError} when undecodable. */
function nameConstraints(cert: VerifiedCert): Constraints | null {
  const cached = constraintsCache.get(cert);
  if (cached !== undefined) return cached;
  const ext = extensionsOf(cert).find((e) => e.type === OID_NAME_CONSTRAINTS);
  let result: Constraints | null = null;
  if (ext) {
    let nc: NameConstraints;
    try {
      nc = AsnConvert.parse(ext.value, NameConstraints);
    } catch (err) {
      throw new X509SvidError('SVID_MALFORMED', `name constraints of ${cert.subject} cannot be decoded`, {
        cause: err,
      });
    }
    const permitted: Subtree[] = [];
    const excluded: Subtree[] = [];
    const u1 = subtreesOf(nc.permittedSubtrees, permitted);
    const u2 = subtreesOf(nc.excludedSubtrees, excluded);
    result = {
      permitted: nc.permittedSubtrees ? permitted : undefined,
      excluded,
      unsupported: u1 || u2,
    };
  }
  constraintsCache.set(cert, result);
  return result;
}

// What is checked of a certificate on its own, apart from the time, depends
// on the certificate alone, and the same certificate objects come back on
// every connection of a peer (parsed certificates are kept per DER): those
// answers are kept per certificate object, so a peer's next connection — a
// resumed one above all — repeats only what depends on the moment (validity
// at `now`) and on the chain (names, signatures, path length). Only answers
// are kept; a certificate whose reading throws is read again next time and
// throws again, as before.
interface OwnFacts {
  /** The first critical extension not understood here, if any. */
  readonly unknownCritical: string | undefined;
  readonly notBefore: number;
  readonly notAfter: number;
}
const ownFacts = new WeakMap<VerifiedCert, OwnFacts>();

/** The OID of the first critical extension not understood here, if any. */
function unknownCritical(cert: VerifiedCert): string | undefined {
  for (const ext of extensionsOf(cert)) {
    if (!ext.critical) continue;
    if (!UNDERSTOOD.has(ext.type)) return ext.type;
    if (ext.type === OID_NAME_CONSTRAINTS && nameConstraints(cert)?.unsupported) return ext.type;
  }
  return undefined;
}

function factsOf(cert: VerifiedCert): OwnFacts {
  let f = ownFacts.get(cert);
  if (!f) {
    f = {
      unknownCritical: unknownCritical(cert),
      notBefore: cert.notBefore.getTime(),
      notAfter: cert.notAfter.getTime(),
    };
    ownFacts.set(cert, f);
  }
  return f;
}

/**
 * What every certificate of a path must satisfy on its own: no critical
 * extension left unprocessed, then the validity period (crypto/x509 order).
 * `what` names the certificate in an error (built only then).
 */
function checkCertificate(cert: VerifiedCert, now: Date, what: () => string): void {
  const f = factsOf(cert);
  if (f.unknownCritical)
    throw new X509SvidError(
      'SVID_UNKNOWN_CRITICAL_EXTENSION',
      `${what()} has a critical extension ${f.unknownCritical} that is not understood`,
    );
  const t = now.getTime();
  if (t < f.notBefore)
    throw new X509SvidError(
      'SVID_NOT_YET_VALID',
      `${what()} is not valid before ${cert.notBefore.toISOString()}`,
    );
  if (t > f.notAfter)
    throw new X509SvidError('SVID_EXPIRED', `${what()} expired at ${cert.notAfter.toISOString()}`);
}

// Whether one certificate issued another depends on the two certificates
// alone (names, key identifiers, signature), never on time or trust: peers
// present the same chain on every new connection, and the parse cache hands
// back the same objects for the same DER, so the answer is kept per pair.
// The signature check was about a tenth of a server's CPU per new connection.
const issuedCache = new WeakMap<VerifiedCert, WeakMap<x509.X509Certificate, boolean>>();
// Node builds a new KeyObject on every `publicKey` read; an issuer's is read once.
const issuerKeys = new WeakMap<x509.X509Certificate, KeyObject>();

/** True when `issuer` issued `cert`: names and key identifiers match (OpenSSL's check) and the signature verifies. */
function issued(issuer: x509.X509Certificate, cert: VerifiedCert): boolean {
  let byIssuer = issuedCache.get(cert);
  const known = byIssuer?.get(issuer);
  if (known !== undefined) return known;
  const ni = nodeCertOf(issuer);
  const nc = nodeCertOf(cert);
  let ok: boolean;
  try {
    if (nc.checkIssued(ni)) {
      let key = issuerKeys.get(issuer);
      if (!key) issuerKeys.set(issuer, (key = ni.publicKey));
      ok = nc.verify(key);
    } else ok = false;
  } catch {
    ok = false;
  }
  if (!byIssuer) issuedCache.set(cert, (byIssuer = new WeakMap()));
  byIssuer.set(issuer, ok);
  return ok;
}

/** A signer's own CA facts (kept per certificate object, as {@link OwnFacts}); key usage and path length only for a CA. */
interface SignerFacts {
  readonly ca: boolean;
  readonly ku?: { readonly present: boolean; readonly flags: number };
  readonly pathLen?: number | undefined;
}
const signerFacts = new WeakMap<x509.X509Certificate, SignerFacts>();

/** Read in the order checkIssuer reads them: nothing after the cA flag when it is false. */
function signerFactsOf(cand: x509.X509Certificate): SignerFacts {
  let f = signerFacts.get(cand);
  if (!f) {
    f = isCa(cand)
      ? {
          ca: true,
          ku: keyUsage(cand),
          pathLen: cand.getExtension(x509.BasicConstraintsExtension)?.pathLength,
        }
      : { ca: false };
    signerFacts.set(cand, f);
  }
  return f;
}

/**
 * A candidate issuer at the top of `path` (leaf first): RFC 5280 §6.1.4 for an
 * intermediate (cA, keyCertSign when key usage is present, path length), and
 * for a bundle authority its extensions, validity and path length.
 */
function checkIssuer(
  cand: x509.X509Certificate,
  root: boolean,
  path: readonly VerifiedCert[],
  now: Date,
  td: string,
): void {
  const what = () => (root ? `authority ${cand.subject} of ${td}` : `intermediate ${cand.subject}`);
  checkCertificate(cand, now, what);
  const f = signerFactsOf(cand);
  if (!f.ca) throw new X509SvidError('SVID_UNTRUSTED', `${what()} is not a CA (cA=false)`);
  if (f.ku!.present && !(f.ku!.flags & KU.keyCertSign))
    throw new X509SvidError('SVID_UNTRUSTED', `${what()} may not sign certificates (no keyCertSign)`);
  const pathLen = f.pathLen;
  const below = path.length - 1; // intermediates between the candidate and the leaf
  if (pathLen !== undefined && below > pathLen)
    throw new X509SvidError(
      'SVID_PATH_LENGTH_EXCEEDED',
      `${what()} allows ${pathLen} intermediate(s) below it, the chain has ${below}`,
    );
}

// Bounds the work an adversarial chain can cause (crypto/x509 allows 100).
const MAX_SIGNATURE_CHECKS = 100;

interface Search {
  roots: readonly x509.X509Certificate[];
  intermediates: readonly x509.X509Certificate[];
  now: Date;
  td: string;
  checks: number;
}

/**
 * Every chain from the top of `path` to a bundle authority. When none exists,
 * the error is that of the last candidate issuer that failed its checks, else
 * SVID_UNTRUSTED (no issuer found or no signature verified), as crypto/x509.
 */
function buildChains(
  path: VerifiedCert[],
  s: Search,
): { ok: true; chains: VerifiedCert[][] } | { ok: false; error: X509SvidError } {
  const current = path[path.length - 1]!;
  const chains: VerifiedCert[][] = [];
  let error: X509SvidError | undefined;
  // Named only in the error (naming the peer's leaf parses it with @peculiar/x509).
  let notIssuer: x509.X509Certificate | undefined;
  const pools: [boolean, readonly x509.X509Certificate[]][] = [
    [true, s.roots],
    [false, s.intermediates],
  ];
  search: for (const [root, pool] of pools) {
    for (const cand of pool) {
      if (path.includes(cand)) continue;
      if (++s.checks > MAX_SIGNATURE_CHECKS) {
        error = new X509SvidError('SVID_UNTRUSTED', 'too many signature checks while building the chain');
        break search;
      }
      if (!issued(cand, current)) {
        notIssuer ??= cand;
        continue;
      }
      try {
        checkIssuer(cand, root, path, s.now, s.td);
      } catch (err) {
        error = err as X509SvidError;
        continue;
      }
      if (root) chains.push([...path, cand]);
      else {
        const deeper = buildChains([...path, cand], s);
        if (deeper.ok) chains.push(...deeper.chains);
        else error = deeper.error;
      }
    }
  }
  if (chains.length > 0) return { ok: true, chains };
  const hint =
    notIssuer &&
    `${notIssuer.subject} did not issue ${current.subject} (names, key identifiers or signature)`;
  return {
    ok: false,
    error:
      error ??
      new X509SvidError(
        'SVID_UNTRUSTED',
        `${current.subject} does not lead to an authority of trust domain ${s.td}${hint ? ` (${hint})` : ''}`,
      ),
  };
}

// ---- name constraints (RFC 5280 §4.2.1.10, with crypto/x509's matching) ----

/**
 * `constraint` matches `name` (both DNS-like, case-insensitive): equal, or
 * `name` is a subdomain; a leading dot admits subdomains only; an empty
 * constraint matches everything.
 */
function domainMatches(constraint: string, name: string): boolean {
  const c = constraint.toLowerCase();
  const n = name.toLowerCase();
  if (c === '') return true;
  if (c.startsWith('.')) return n.endsWith(c);
  return n === c || n.endsWith(`.${c}`);
}

function ipMatches(cidr: string, ip: string): boolean {
  const [net, bits] = cidr.split('/');
  const family = isIP(net ?? '');
  if (!family || family !== isIP(ip)) return false;
  const list = new BlockList();
  list.addSubnet(net!, Number(bits), family === 4 ? 'ipv4' : 'ipv6');
  return list.check(ip, family === 4 ? 'ipv4' : 'ipv6');
}

type CertNames = Record<NameKind, string[]>;

/** SAN names by kind (URI SANs as their host), or undefined without a SAN extension. */
function namesOf(cert: VerifiedCert): CertNames | undefined {
  let full: x509.X509Certificate;
  try {
    full = fullCert(cert);
  } catch (err) {
    throw new X509SvidError('SVID_MALFORMED', 'certificate 0 of the chain cannot be parsed', { cause: err });
  }
  const ext = full.getExtension(x509.SubjectAlternativeNameExtension);
  if (!ext) return undefined;
  const names: CertNames = { dns: [], uri: [], ip: [], email: [] };
  for (const n of ext.names.items) {
    if (n.type === 'dns') names.dns.push(n.value);
    else if (n.type === 'ip') names.ip.push(n.value);
    else if (n.type === 'email') names.email.push(n.value);
    else if (n.type === 'url') {
      let host: string;
      try {
        host = new URL(n.value).hostname.toLowerCase();
      } catch {
        host = '';
      }
      // crypto/x509 cannot match a URI without a host name, or whose host is an IP.
      if (host === '' || isIP(host.replace(/^\[|\]$/g, '')))
        throw new X509SvidError(
          'SVID_NAME_CONSTRAINT_VIOLATION',
          `URI SAN ${n.value} of ${cert.subject} cannot be matched against name constraints`,
        );
      names.uri.push(host);
    }
  }
  return names;
}

/** One name of the subtree's kind lies in the subtree. */
function inSubtree(t: Subtree, name: string): boolean {
  switch (t.kind) {
    case 'dns':
    case 'uri':
      return domainMatches(t.value, name);
    case 'ip':
      return ipMatches(t.value, name);
    case 'email':
      // A constraint with an @ names one mailbox; otherwise it is a domain.
      return t.value.includes('@')
        ? t.value.toLowerCase() === name.toLowerCase()
        : domainMatches(t.value, name.slice(name.lastIndexOf('@') + 1));
  }
}

/** Every name of `cert` of a constrained kind lies in a permitted subtree and in no excluded one. */
function checkNames(cert: VerifiedCert, ca: VerifiedCert, c: Constraints): void {
  const names = namesOf(cert);
  if (!names) return; // crypto/x509 constrains SAN names only
  for (const t of c.excluded) {
    const hit = names[t.kind].find((n) => inSubtree(t, n));
    if (hit !== undefined)
      throw new X509SvidError(
        'SVID_NAME_CONSTRAINT_VIOLATION',
        `${t.kind} name ${hit} of ${cert.subject} is excluded by ${ca.subject} (${t.value})`,
      );
  }
  if (!c.permitted) return;
  for (const kind of ['dns', 'uri', 'ip', 'email'] as const) {
    const subtrees = c.permitted.filter((t) => t.kind === kind);
    if (subtrees.length === 0) continue; // no constraint on that kind
    const outside = names[kind].find((n) => !subtrees.some((t) => inSubtree(t, n)));
    if (outside !== undefined)
      throw new X509SvidError(
        'SVID_NAME_CONSTRAINT_VIOLATION',
        `${kind} name ${outside} of ${cert.subject} is not permitted by ${ca.subject}`,
      );
  }
}

/** Name constraints of each CA apply to the SAN names of every certificate below it. */
function checkChainConstraints(chain: readonly VerifiedCert[]): void {
  for (let k = 1; k < chain.length; k++) {
    const c = nameConstraints(chain[k]!);
    if (!c) continue;
    for (let i = 0; i < k; i++)
      if (extensionsOf(chain[i]!).some((e) => e.type === OID_SAN)) checkNames(chain[i]!, chain[k]!, c);
  }
}

/** A certification path that verified, and until when it does. */
export interface VerifiedPath {
  /** Leaf first, ending in the bundle authority it reached. */
  readonly chain: readonly VerifiedCert[];
  /** The earliest notAfter on `chain` (epoch ms): past it, the path no longer verifies. */
  readonly notAfter: number;
  /** Where on `chain` the certificate of that notAfter is (the nearest the leaf when several share it). */
  readonly expiring: number;
}

/** `chain` with its end: the earliest notAfter on it, read from the facts kept per certificate (no date parsing). */
function pathOf(chain: readonly VerifiedCert[]): VerifiedPath {
  let expiring = 0;
  let notAfter = factsOf(chain[0]!).notAfter;
  for (let i = 1; i < chain.length; i++) {
    const n = factsOf(chain[i]!).notAfter;
    if (n < notAfter) {
      notAfter = n;
      expiring = i;
    }
  }
  return { chain, notAfter, expiring };
}

/**
 * Path-validates `leaf` (already checked against the SPIFFE leaf rules)
 * against `roots`, using `intermediates` as needed. Of several paths that
 * verify, the one that verifies longest is returned: an issuer candidate
 * that expires sooner (an intermediate about to be rotated out, presented
 * or remembered beside its successor) must not end, at its expiry, a
 * connection whose chain still verifies through the other.
 *
 * @throws {X509SvidError} SVID_UNKNOWN_CRITICAL_EXTENSION, SVID_EXPIRED,
 *   SVID_NOT_YET_VALID, SVID_PATH_LENGTH_EXCEEDED, SVID_NAME_CONSTRAINT_VIOLATION,
 *   SVID_UNTRUSTED or SVID_MALFORMED.
 */
export function validatePath(
  leaf: VerifiedCert,
  leafName: string,
  roots: readonly x509.X509Certificate[],
  intermediates: readonly x509.X509Certificate[],
  now: Date,
  td: string,
): VerifiedPath {
  checkCertificate(leaf, now, () => `leaf certificate of ${leafName}`);
  const built = buildChains([leaf], { roots, intermediates, now, td, checks: 0 });
  if (!built.ok) throw built.error;
  const chains = built.chains;
  // One chain (nearly always): nothing to rank.
  if (chains.length === 1) {
    checkChainConstraints(chains[0]!);
    return pathOf(chains[0]!);
  }
  // Latest end first; the chain within every name constraint found first wins. When
  // none is, the first built chain's violation is reported, as crypto/x509 does.
  const paths = chains.map(pathOf);
  const order = paths.map((_, i) => i).sort((a, b) => paths[b]!.notAfter - paths[a]!.notAfter || a - b);
  const violations: X509SvidError[] = [];
  for (const i of order) {
    try {
      checkChainConstraints(paths[i]!.chain);
      return paths[i]!;
    } catch (err) {
      violations[i] = err as X509SvidError;
    }
  }
  throw violations[0] ?? new X509SvidError('SVID_UNTRUSTED', `no chain for ${leafName}`);
}
