// Shared SVID verification vectors: SPIFFE ID strings and X.509-SVID chains,
// each with the verdict Weave must give. The identity unit tests check Weave's
// verdicts; the go-spiffe interop test (interop/) has the same vectors judged
// by go-spiffe's spiffeid.FromString and x509svid.Verify and requires the same
// verdict. Everything is generated fresh (real keys, real signatures).
import {
  BundleSet,
  X509Bundle,
  X509SvidError,
  verifyX509Svid,
  type X509SvidErrorCode,
} from '@weave/identity';
import {
  KU,
  makeCert,
  makeIntermediate,
  makeRoot,
  nameConstraints,
  newKeys,
  unknownExtension,
  type x509,
} from './forge.js';

/** SPIFFE ID inputs; the verdict of `SpiffeId.parse` must equal go-spiffe's `spiffeid.FromString`. */
export const ID_VECTORS: readonly string[] = [
  'spiffe://example.org',
  'spiffe://example.org/',
  'spiffe://example.org/workload',
  'spiffe://example.org/a/b/c',
  'spiffe://example.org/A-Z_a.z-0.9',
  'spiffe://td-with_under.score.0/x',
  'spiffe://127.0.0.1/x',
  '',
  'example.org/workload',
  'spiffe:/example.org/workload',
  'spiffe:example.org',
  'spiffe://',
  'spiffe:///workload',
  'Spiffe://example.org/workload',
  'SPIFFE://example.org/workload',
  'http://example.org/workload',
  'spiffe://Example.org/workload',
  'spiffe://example.org:8080/workload',
  'spiffe://user@example.org/workload',
  'spiffe://user:pass@example.org/workload',
  'spiffe://example.org/workload?x=1',
  'spiffe://example.org/workload#frag',
  'spiffe://example.org/workload/',
  'spiffe://example.org//workload',
  'spiffe://example.org/./workload',
  'spiffe://example.org/../workload',
  'spiffe://example.org/a/..',
  'spiffe://example.org/.',
  'spiffe://example.org/%41',
  'spiffe://exa%6dple.org/x',
  'spiffe://example.org/white space',
  'spiffe://example.org/ü',
  'spiffe://exämple.org/x',
  'spiffe://example.org/a+b',
  'spiffe://example.org/a~b',
  'spiffe://example.org/a:b',
  'spiffe://example.org/a@b',
  'spiffe://[::1]/x',
  ' spiffe://example.org/x',
  'spiffe://example.org/x ',
  'spiffe://example.org\\x',
  `spiffe://example.org/${'a'.repeat(2000)}`,
  `spiffe://example.org/${'a'.repeat(2100)}`,
];

/**
 * ID inputs go-spiffe accepts and Weave refuses on purpose, with the reason.
 * `spiffeid.FromString` has no length limit; Weave bounds untrusted input at
 * the 2048 bytes the SPIFFE ID standard (§2.3) says implementations must support.
 */
export const ID_GO_ACCEPTS: Readonly<Record<string, string>> = {
  [`spiffe://example.org/${'a'.repeat(2100)}`]:
    'longer than 2048 bytes: Weave refuses, go-spiffe has no limit',
};

type WeaveVerdict = { ok: true; id: string } | { ok: false; code: X509SvidErrorCode };

export interface ChainVector {
  name: string;
  /** The peer's chain, leaf first (DER). */
  chain: Uint8Array[];
  /** Trust domain name → its X.509 authorities (DER). */
  bundles: Record<string, Uint8Array[]>;
  now: Date;
  weave: WeaveVerdict;
  /**
   * Set where go-spiffe accepts on purpose-known grounds: Weave also applies a
   * MUST of the SPIFFE X509-SVID standard or of RFC 5280 that x509svid.Verify
   * does not check. The interop test requires go-spiffe to accept exactly these.
   */
  goAccepts?: string;
}

/**
 * The classes go-spiffe's refusals fall into (stage/reason, as the harness's
 * `verify` prints them) that agree with each Weave code.
 */
export const GO_CLASSES: Record<X509SvidErrorCode, readonly string[]> = {
  SVID_EMPTY_CHAIN: [],
  SVID_NO_URI_SAN: ['id/no-uri-san'],
  SVID_MULTIPLE_URI_SANS: ['id/multiple-uri-sans'],
  SVID_INVALID_SPIFFE_ID: ['id/invalid-spiffe-id'],
  SVID_ROOT_PATH: [],
  SVID_LEAF_IS_CA: ['leaf/ca'],
  SVID_LEAF_KEY_USAGE: ['leaf/key-usage'],
  SVID_UNKNOWN_TRUST_DOMAIN: ['bundle/unknown-trust-domain'],
  SVID_UNKNOWN_CRITICAL_EXTENSION: ['chain/unknown-critical-extension'],
  SVID_EXPIRED: ['chain/expired'],
  SVID_NOT_YET_VALID: ['chain/not-yet-valid'],
  SVID_PATH_LENGTH_EXCEEDED: ['chain/path-length'],
  SVID_NAME_CONSTRAINT_VIOLATION: ['chain/name-constraints'],
  SVID_UNTRUSTED: ['chain/unknown-authority', 'chain/not-a-ca'],
  SVID_KEY_MISMATCH: [],
  SVID_WEAK_KEY: [],
  SVID_MALFORMED: ['parse'],
};

/** The bundles of a vector as Weave's bundle source. */
export function bundleSetOf(bundles: ChainVector['bundles']): BundleSet {
  return BundleSet.of(
    ...Object.entries(bundles).map(([td, ders]) => X509Bundle.fromDer(td, Buffer.concat(ders))),
  );
}

/** What verifyX509Svid says of a vector: `ok <SPIFFE ID>` or the error code. */
export function judgeByWeave(v: ChainVector): string {
  try {
    return `ok ${verifyX509Svid(v.chain, bundleSetOf(v.bundles), { now: v.now }).toString()}`;
  } catch (err) {
    if (!(err instanceof X509SvidError)) throw err;
    return err.code;
  }
}

const der = (c: { cert: x509.X509Certificate }): Uint8Array => new Uint8Array(c.cert.rawData);
const ok = (id: string): WeaveVerdict => ({ ok: true, id });
const no = (code: X509SvidErrorCode): WeaveVerdict => ({ ok: false, code });

/** Builds every chain vector (about 40 certificates; a second or two). */
export async function makeChainVectors(): Promise<ChainVector[]> {
  const now = new Date();
  const t = (s: number): Date => new Date(now.getTime() + s * 1000);
  const ID = 'spiffe://a.test/workload';
  const root = await makeRoot('a.test');
  const rootB = await makeRoot('b.test');
  const A = { 'a.test': [der(root)] };
  const AB = { 'a.test': [der(root)], 'b.test': [der(rootB)] };
  const mid = await makeIntermediate(root, 'a.test');
  const v: ChainVector[] = [];
  const add = (
    name: string,
    chain: { cert: x509.X509Certificate }[],
    weave: WeaveVerdict,
    extra: Partial<ChainVector> = {},
  ): void => {
    v.push({ name, chain: chain.map(der), bundles: A, now, weave, ...extra });
  };

  // Accepted shapes.
  add('leaf signed by the root', [await makeCert(root, { uris: [ID] })], ok(ID));
  add('leaf + intermediate', [await makeCert(mid, { uris: [ID] }), mid], ok(ID));
  add('leaf + intermediate + root', [await makeCert(mid, { uris: [ID] }), mid, root], ok(ID));
  add('leaf with DNS and URI SANs', [await makeCert(root, { uris: [ID], dns: ['w.a.test'] })], ok(ID));
  add(
    'non-critical unknown extension',
    [await makeCert(root, { uris: [ID], extensions: [unknownExtension(false)] })],
    ok(ID),
  );
  add(
    'federated leaf of b.test',
    [await makeCert(rootB, { uris: ['spiffe://b.test/api'] })],
    ok('spiffe://b.test/api'),
    {
      bundles: AB,
    },
  );

  // Leaf rules.
  add('no URI SAN', [await makeCert(root, { dns: ['w.a.test'] })], no('SVID_NO_URI_SAN'));
  add('no SAN at all', [await makeCert(root, {})], no('SVID_NO_URI_SAN'));
  add(
    'two URI SANs',
    [await makeCert(root, { uris: [ID, 'spiffe://a.test/other'] })],
    no('SVID_MULTIPLE_URI_SANS'),
  );
  add(
    'URI SAN not spiffe',
    [await makeCert(root, { uris: ['https://a.test/workload'] })],
    no('SVID_INVALID_SPIFFE_ID'),
  );
  add(
    'URI SAN with upper-case trust domain',
    [await makeCert(root, { uris: ['spiffe://A.test/w'] })],
    no('SVID_INVALID_SPIFFE_ID'),
  );
  add(
    'URI SAN with dot segment',
    [await makeCert(root, { uris: ['spiffe://a.test/../w'] })],
    no('SVID_INVALID_SPIFFE_ID'),
  );
  add(
    'CA as leaf',
    [await makeCert(root, { uris: [ID], ca: true, keyUsage: KU.digitalSignature })],
    no('SVID_LEAF_IS_CA'),
  );
  add(
    'leaf with keyCertSign',
    [await makeCert(root, { uris: [ID], keyUsage: KU.digitalSignature | KU.keyCertSign })],
    no('SVID_LEAF_KEY_USAGE'),
  );
  add(
    'leaf with cRLSign',
    [await makeCert(root, { uris: [ID], keyUsage: KU.digitalSignature | KU.cRLSign })],
    no('SVID_LEAF_KEY_USAGE'),
  );
  add(
    'leaf without digitalSignature',
    [await makeCert(root, { uris: [ID], keyUsage: KU.keyEncipherment })],
    no('SVID_LEAF_KEY_USAGE'),
    {
      goAccepts:
        'X509-SVID standard §4.3: leaf SVIDs MUST set digitalSignature; x509svid.Verify does not check it',
    },
  );
  add(
    'leaf with the trust domain ID (no path)',
    [await makeCert(root, { uris: ['spiffe://a.test'] })],
    no('SVID_ROOT_PATH'),
    {
      goAccepts:
        'X509-SVID standard §3: a leaf SVID’s SPIFFE ID has a path; x509svid.Verify takes any SPIFFE ID',
    },
  );

  // Trust domains.
  add(
    'trust domain without bundle',
    [await makeCert(root, { uris: ['spiffe://c.test/w'] })],
    no('SVID_UNKNOWN_TRUST_DOMAIN'),
  );
  add(
    "b.test ID signed by a.test's root",
    [await makeCert(root, { uris: ['spiffe://b.test/api'] })],
    no('SVID_UNTRUSTED'),
    {
      bundles: AB,
    },
  );
  add("a.test ID signed by b.test's root", [await makeCert(rootB, { uris: [ID] })], no('SVID_UNTRUSTED'), {
    bundles: AB,
  });

  // Validity periods.
  add(
    'expired leaf',
    [await makeCert(root, { uris: [ID], notBefore: t(-7200), notAfter: t(-60) })],
    no('SVID_EXPIRED'),
  );
  add(
    'not yet valid leaf',
    [await makeCert(root, { uris: [ID], notBefore: t(600), notAfter: t(1200) })],
    no('SVID_NOT_YET_VALID'),
  );
  {
    const old = await makeIntermediate(root, 'a.test', { notBefore: t(-7200), notAfter: t(-60) });
    add(
      'expired intermediate',
      [await makeCert(old, { uris: [ID], notBefore: t(-3600) }), old],
      no('SVID_EXPIRED'),
    );
  }
  {
    const oldRoot = await makeRoot('a.test', { notBefore: t(-7200), notAfter: t(-60), name: 'CN=old root' });
    add('expired root', [await makeCert(oldRoot, { uris: [ID], notBefore: t(-3600) })], no('SVID_EXPIRED'), {
      bundles: { 'a.test': [der(oldRoot)] },
    });
  }

  // Signatures and issuers.
  {
    const stranger = await newKeys();
    add(
      'bad signature',
      [await makeCert(root, { uris: [ID], signWith: stranger.privateKey })],
      no('SVID_UNTRUSTED'),
    );
    const impostor = await makeRoot('a.test', { name: 'CN=test root a.test' });
    add(
      'unknown issuer with the same name',
      [await makeCert(impostor, { uris: [ID] }), impostor],
      no('SVID_UNTRUSTED'),
    );
    add('leaf without its intermediate', [await makeCert(mid, { uris: [ID] })], no('SVID_UNTRUSTED'));
  }
  {
    const fake = await makeCert(root, { uris: ['spiffe://a.test/not-a-ca'], subject: 'CN=fake mid' });
    const leaf = await makeCert({ cert: fake.cert, keys: fake.keys }, { uris: [ID] });
    add('intermediate that is not a CA', [leaf, fake], no('SVID_UNTRUSTED'));
    const noBc = await makeIntermediate(root, 'a.test', { subject: 'CN=mid without cA', ca: false });
    add(
      'intermediate with cA=false and keyCertSign',
      [await makeCert(noBc, { uris: [ID] }), noBc],
      no('SVID_UNTRUSTED'),
    );
    const noSign = await makeIntermediate(root, 'a.test', {
      subject: 'CN=mid no certsign',
      keyUsage: KU.cRLSign,
    });
    add(
      'intermediate CA without keyCertSign',
      [await makeCert(noSign, { uris: [ID] }), noSign],
      no('SVID_UNTRUSTED'),
    );
  }

  // Path length.
  {
    const root0 = await makeRoot('a.test', { pathLength: 0, name: 'CN=root pathlen 0' });
    const mid0 = await makeIntermediate(root0, 'a.test');
    const P0 = { 'a.test': [der(root0)] };
    add('root pathLen 0, leaf directly', [await makeCert(root0, { uris: [ID] })], ok(ID), { bundles: P0 });
    add(
      'root pathLen 0, one intermediate',
      [await makeCert(mid0, { uris: [ID] }), mid0],
      no('SVID_PATH_LENGTH_EXCEEDED'),
      {
        bundles: P0,
      },
    );
    const root1 = await makeRoot('a.test', { pathLength: 1, name: 'CN=root pathlen 1' });
    const mid1 = await makeIntermediate(root1, 'a.test', { subject: 'CN=mid1' });
    const P1 = { 'a.test': [der(root1)] };
    add('root pathLen 1, one intermediate', [await makeCert(mid1, { uris: [ID] }), mid1], ok(ID), {
      bundles: P1,
    });
    const mid2 = await makeIntermediate(mid1, 'a.test', { subject: 'CN=mid2' });
    add(
      'root pathLen 1, two intermediates',
      [await makeCert(mid2, { uris: [ID] }), mid2, mid1],
      no('SVID_PATH_LENGTH_EXCEEDED'),
      {
        bundles: P1,
      },
    );
    const upper = await makeIntermediate(root, 'a.test', { subject: 'CN=upper pathlen 0', pathLength: 0 });
    const lower = await makeIntermediate(upper, 'a.test', { subject: 'CN=lower' });
    add(
      'intermediate pathLen 0 above another intermediate',
      [await makeCert(lower, { uris: [ID] }), lower, upper],
      no('SVID_PATH_LENGTH_EXCEEDED'),
    );
    add('intermediate pathLen 0 issuing the leaf', [await makeCert(upper, { uris: [ID] }), upper], ok(ID));
  }

  // Name constraints.
  {
    const ncMid = async (
      subject: string,
      permitted: x509.JsonGeneralName[],
      excluded: x509.JsonGeneralName[] = [],
    ) => makeIntermediate(root, 'a.test', { subject, extensions: [nameConstraints(permitted, excluded)] });
    const permitsTd = await ncMid('CN=permits a.test', [{ type: 'url', value: 'a.test' }]);
    add(
      'URI constraint permits the trust domain',
      [await makeCert(permitsTd, { uris: [ID] }), permitsTd],
      ok(ID),
    );
    const permitsOther = await ncMid('CN=permits b.test', [{ type: 'url', value: 'b.test' }]);
    add(
      'URI name constraint violated',
      [await makeCert(permitsOther, { uris: [ID] }), permitsOther],
      no('SVID_NAME_CONSTRAINT_VIOLATION'),
    );
    const permitsSub = await ncMid('CN=permits .a.test', [{ type: 'url', value: '.a.test' }]);
    add(
      'URI constraint with leading dot excludes the domain itself',
      [await makeCert(permitsSub, { uris: [ID] }), permitsSub],
      no('SVID_NAME_CONSTRAINT_VIOLATION'),
    );
    const excludesTd = await ncMid('CN=excludes a.test', [], [{ type: 'url', value: 'a.test' }]);
    add(
      'URI excluded by constraint',
      [await makeCert(excludesTd, { uris: [ID] }), excludesTd],
      no('SVID_NAME_CONSTRAINT_VIOLATION'),
    );
    const dnsOnly = await ncMid('CN=permits dns a.test', [{ type: 'dns', value: 'a.test' }]);
    add(
      'DNS constraint, URI unconstrained',
      [await makeCert(dnsOnly, { uris: [ID], dns: ['w.a.test'] }), dnsOnly],
      ok(ID),
    );
    add(
      'DNS name constraint violated',
      [await makeCert(dnsOnly, { uris: [ID], dns: ['evil.example'] }), dnsOnly],
      no('SVID_NAME_CONSTRAINT_VIOLATION'),
    );
    const rootNc = await makeRoot('a.test', {
      name: 'CN=root permits b.test',
      extensions: [nameConstraints([{ type: 'url', value: 'b.test' }])],
    });
    add(
      'root name constraint violated',
      [await makeCert(rootNc, { uris: [ID] })],
      no('SVID_NAME_CONSTRAINT_VIOLATION'),
      {
        bundles: { 'a.test': [der(rootNc)] },
      },
    );
    const dnConstraint = await ncMid('CN=dn constraint', [{ type: 'dn', value: 'O=test' }]);
    add(
      'critical name constraints of an unsupported kind',
      [await makeCert(dnConstraint, { uris: [ID] }), dnConstraint],
      no('SVID_UNKNOWN_CRITICAL_EXTENSION'),
    );
  }

  // Critical extensions.
  add(
    'unknown critical extension on the leaf',
    [await makeCert(root, { uris: [ID], extensions: [unknownExtension()] })],
    no('SVID_UNKNOWN_CRITICAL_EXTENSION'),
  );
  {
    const critMid = await makeIntermediate(root, 'a.test', {
      subject: 'CN=critical mid',
      extensions: [unknownExtension()],
    });
    add(
      'unknown critical extension on an intermediate',
      [await makeCert(critMid, { uris: [ID] }), critMid],
      no('SVID_UNKNOWN_CRITICAL_EXTENSION'),
    );
    const critRoot = await makeRoot('a.test', { name: 'CN=critical root', extensions: [unknownExtension()] });
    add(
      'unknown critical extension on the root',
      [await makeCert(critRoot, { uris: [ID] })],
      no('SVID_UNKNOWN_CRITICAL_EXTENSION'),
      {
        bundles: { 'a.test': [der(critRoot)] },
      },
    );
  }

  // Bytes that are no certificate.
  v.push({
    name: 'garbage bytes',
    chain: [new Uint8Array([0x30, 0x03, 1, 2, 3])],
    bundles: A,
    now,
    weave: no('SVID_MALFORMED'),
  });
  return v;
}
