// RFC 5280 path validation for X.509-SVIDs, synchronous (it runs inside
// tls.checkServerIdentity). It follows Go's crypto/x509 Verify, which is what
// go-spiffe's x509svid.Verify uses, so both judge a chain alike: the leaf is
// checked first, then chains are built depth-first (roots before
// intermediates), each candidate issuer checked for its signature, critical
// extensions, validity, CA flag and path length, and the built chains are
// then filtered by name constraints. Signatures and issuer matching are
// OpenSSL's (node:crypto X509Certificate.checkIssued + verify); extensions are
// decoded by @peculiar/x509 and @peculiar/asn1-x509. Not exported from the package.
import { BlockList, isIP } from 'node:net';
import { AsnConvert } from '@peculiar/asn1-schema';
import { NameConstraints, type GeneralName } from '@peculiar/asn1-x509';
import { X509SvidError } from './x509-svid-error.js';
import { isCa, keyUsage, toNodeCert, x509 } from './x509-util.js';

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

const constraintsCache = new WeakMap<x509.X509Certificate, Constraints | null>();

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
function nameConstraints(cert: x509.X509Certificate): Constraints | null {
  const cached = constraintsCache.get(cert);
  if (cached !== undefined) return cached;
  const ext = cert.extensions.find((e) => e.type === OID_NAME_CONSTRAINTS);
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

/** The OID of the first critical extension not understood here, if any. */
function unknownCritical(cert: x509.X509Certificate): string | undefined {
  for (const ext of cert.extensions) {
    if (!ext.critical) continue;
    if (!UNDERSTOOD.has(ext.type)) return ext.type;
    if (ext.type === OID_NAME_CONSTRAINTS && nameConstraints(cert)?.unsupported) return ext.type;
  }
  return undefined;
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

/**
 * What every certificate of a path must satisfy on its own: no critical
 * extension left unprocessed, then the validity period (crypto/x509 order).
 */
function checkCertificate(cert: x509.X509Certificate, now: Date, what: string): void {
  const oid = unknownCritical(cert);
  if (oid)
    throw new X509SvidError(
      'SVID_UNKNOWN_CRITICAL_EXTENSION',
      `${what} has a critical extension ${oid} that is not understood`,
    );
  checkTime(cert, now, what);
}

// Whether one certificate issued another depends on the two certificates
// alone (names, key identifiers, signature), never on time or trust: peers
// present the same chain on every new connection, and the parse cache hands
// back the same objects for the same DER, so the answer is kept per pair.
// The signature check was about a tenth of a server's CPU per new connection.
const issuedCache = new WeakMap<x509.X509Certificate, WeakMap<x509.X509Certificate, boolean>>();

/** True when `issuer` issued `cert`: names and key identifiers match (OpenSSL's check) and the signature verifies. */
function issued(issuer: x509.X509Certificate, cert: x509.X509Certificate): boolean {
  let byIssuer = issuedCache.get(cert);
  const known = byIssuer?.get(issuer);
  if (known !== undefined) return known;
  const ni = toNodeCert(issuer);
  const nc = toNodeCert(cert);
  let ok: boolean;
  try {
    ok = nc.checkIssued(ni) && nc.verify(ni.publicKey);
  } catch {
    ok = false;
  }
  if (!byIssuer) issuedCache.set(cert, (byIssuer = new WeakMap()));
  byIssuer.set(issuer, ok);
  return ok;
}

/**
 * A candidate issuer at the top of `path` (leaf first): RFC 5280 §6.1.4 for an
 * intermediate (cA, keyCertSign when key usage is present, path length), and
 * for a bundle authority its extensions, validity and path length.
 */
function checkIssuer(
  cand: x509.X509Certificate,
  root: boolean,
  path: readonly x509.X509Certificate[],
  now: Date,
  td: string,
): void {
  const what = root ? `authority ${cand.subject} of ${td}` : `intermediate ${cand.subject}`;
  checkCertificate(cand, now, what);
  if (!isCa(cand)) throw new X509SvidError('SVID_UNTRUSTED', `${what} is not a CA (cA=false)`);
  const ku = keyUsage(cand);
  if (ku.present && !(ku.flags & KU.keyCertSign))
    throw new X509SvidError('SVID_UNTRUSTED', `${what} may not sign certificates (no keyCertSign)`);
  const pathLen = cand.getExtension(x509.BasicConstraintsExtension)?.pathLength;
  const below = path.length - 1; // intermediates between the candidate and the leaf
  if (pathLen !== undefined && below > pathLen)
    throw new X509SvidError(
      'SVID_PATH_LENGTH_EXCEEDED',
      `${what} allows ${pathLen} intermediate(s) below it, the chain has ${below}`,
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
  path: x509.X509Certificate[],
  s: Search,
): { ok: true; chains: x509.X509Certificate[][] } | { ok: false; error: X509SvidError } {
  const current = path[path.length - 1]!;
  const chains: x509.X509Certificate[][] = [];
  let error: X509SvidError | undefined;
  let hint: string | undefined;
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
        hint ??= `${cand.subject} did not issue ${current.subject} (names, key identifiers or signature)`;
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
function namesOf(cert: x509.X509Certificate): CertNames | undefined {
  const ext = cert.getExtension(x509.SubjectAlternativeNameExtension);
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
function checkNames(cert: x509.X509Certificate, ca: x509.X509Certificate, c: Constraints): void {
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
function checkChainConstraints(chain: readonly x509.X509Certificate[]): void {
  for (let k = 1; k < chain.length; k++) {
    const c = nameConstraints(chain[k]!);
    if (!c) continue;
    for (let i = 0; i < k; i++)
      if (chain[i]!.extensions.some((e) => e.type === OID_SAN)) checkNames(chain[i]!, chain[k]!, c);
  }
}

/**
 * Path-validates `leaf` (already checked against the SPIFFE leaf rules)
 * against `roots`, using `intermediates` as needed.
 *
 * @throws {X509SvidError} SVID_UNKNOWN_CRITICAL_EXTENSION, SVID_EXPIRED,
 *   SVID_NOT_YET_VALID, SVID_PATH_LENGTH_EXCEEDED, SVID_NAME_CONSTRAINT_VIOLATION,
 *   SVID_UNTRUSTED or SVID_MALFORMED.
 */
export function validatePath(
  leaf: x509.X509Certificate,
  leafName: string,
  roots: readonly x509.X509Certificate[],
  intermediates: readonly x509.X509Certificate[],
  now: Date,
  td: string,
): x509.X509Certificate[] {
  checkCertificate(leaf, now, `leaf certificate of ${leafName}`);
  const built = buildChains([leaf], { roots, intermediates, now, td, checks: 0 });
  if (!built.ok) throw built.error;
  // The first chain within every name constraint wins; else the first chain's violation is reported.
  const violations: X509SvidError[] = [];
  for (const chain of built.chains) {
    try {
      checkChainConstraints(chain);
      return chain;
    } catch (err) {
      violations.push(err as X509SvidError);
    }
  }
  throw violations[0] ?? new X509SvidError('SVID_UNTRUSTED', `no chain for ${leafName}`);
}
