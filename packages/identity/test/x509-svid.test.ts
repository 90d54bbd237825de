import { X509Certificate as NodeX509Certificate } from 'node:crypto';
import { describe, expect, it, beforeAll } from 'vitest';
import {
  BundleSet,
  X509Bundle,
  X509Svid,
  X509SvidError,
  verifyX509Svid,
  type X509SvidErrorCode,
} from '@weave/identity';
import { DevCertificateAuthority } from '@weave/identity/dev';
import {
  KU,
  makeCert,
  makeIntermediate,
  makeRoot,
  nameConstraints,
  newKeys,
  unknownExtension,
  x509,
  type TestCa,
} from './helpers/forge.js';
import { LeafCertificate } from '../src/x509-leaf.js';

/** An ASN.1 NULL: what no extension's value may be. */
const NULL = new Uint8Array([0x05, 0x00]);

function expectCode(fn: () => unknown, code: X509SvidErrorCode): X509SvidError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(X509SvidError);
    expect((err as X509SvidError).code).toBe(code);
    return err as X509SvidError;
  }
  throw new Error(`expected ${code}, nothing was thrown`);
}

describe('verifyX509Svid', () => {
  let root: TestCa;
  let bundles: BundleSet;
  const ID = 'spiffe://a.test/workload';

  beforeAll(async () => {
    root = await makeRoot('a.test');
    bundles = BundleSet.of(new X509Bundle('a.test', [root.cert]));
  });

  it('accepts a SPIRE-shaped leaf and returns its ID', async () => {
    const leaf = await makeCert(root, { uris: [ID] });
    expect(verifyX509Svid([leaf.der], bundles).toString()).toBe(ID);
    expect(verifyX509Svid([leaf.cert], bundles).toString()).toBe(ID);
  });

  it('accepts a chain that includes the root', async () => {
    const leaf = await makeCert(root, { uris: [ID] });
    expect(verifyX509Svid([leaf.cert, root.cert], bundles).toString()).toBe(ID);
  });

  it('accepts leaf + intermediate, and refuses the leaf without its intermediate', async () => {
    const mid = await makeIntermediate(root, 'a.test');
    const leaf = await makeCert(mid, { uris: [ID] });
    expect(verifyX509Svid([leaf.cert, mid.cert], bundles).toString()).toBe(ID);
    expect(verifyX509Svid([leaf.cert, mid.cert, root.cert], bundles).toString()).toBe(ID);
    expectCode(() => verifyX509Svid([leaf.cert], bundles), 'SVID_UNTRUSTED');
  });

  it('refuses an intermediate that is not a CA', async () => {
    const fakeMid = await makeCert(root, { uris: ['spiffe://a.test/not-a-ca'], subject: 'CN=fake mid' });
    const leaf = await makeCert({ cert: fakeMid.cert, keys: fakeMid.keys }, { uris: [ID] });
    expectCode(() => verifyX509Svid([leaf.cert, fakeMid.cert], bundles), 'SVID_UNTRUSTED');
  });

  it('refuses an empty chain', () => {
    expectCode(() => verifyX509Svid([], bundles), 'SVID_EMPTY_CHAIN');
  });

  it('refuses bytes that are not a certificate', () => {
    expectCode(() => verifyX509Svid([new Uint8Array([0x30, 0x03, 1, 2, 3])], bundles), 'SVID_MALFORMED');
    expectCode(() => verifyX509Svid(['MIIB' as unknown as Uint8Array], bundles), 'SVID_MALFORMED');
  });

  it('refuses a leaf without URI SAN', async () => {
    const leaf = await makeCert(root, { dns: ['workload.a.test'] });
    expectCode(() => verifyX509Svid([leaf.der], bundles), 'SVID_NO_URI_SAN');
    const noSan = await makeCert(root, {});
    expectCode(() => verifyX509Svid([noSan.der], bundles), 'SVID_NO_URI_SAN');
  });

  it('refuses a leaf with several URI SANs', async () => {
    const leaf = await makeCert(root, { uris: [ID, 'spiffe://a.test/other'] });
    expectCode(() => verifyX509Svid([leaf.der], bundles), 'SVID_MULTIPLE_URI_SANS');
  });

  it('refuses a URI SAN that is not a SPIFFE ID', async () => {
    const leaf = await makeCert(root, { uris: ['https://a.test/workload'] });
    expectCode(() => verifyX509Svid([leaf.der], bundles), 'SVID_INVALID_SPIFFE_ID');
    const dots = await makeCert(root, { uris: ['spiffe://a.test/../x'] });
    expectCode(() => verifyX509Svid([dots.der], bundles), 'SVID_INVALID_SPIFFE_ID');
  });

  it('refuses a leaf whose SPIFFE ID has the root path', async () => {
    const leaf = await makeCert(root, { uris: ['spiffe://a.test'] });
    expectCode(() => verifyX509Svid([leaf.der], bundles), 'SVID_ROOT_PATH');
  });

  it('refuses a leaf with cA=true', async () => {
    const leaf = await makeCert(root, { uris: [ID], ca: true, keyUsage: KU.digitalSignature });
    expectCode(() => verifyX509Svid([leaf.der], bundles), 'SVID_LEAF_IS_CA');
  });

  it('refuses keyCertSign, cRLSign, or a missing digitalSignature on the leaf', async () => {
    const certSign = await makeCert(root, { uris: [ID], keyUsage: KU.digitalSignature | KU.keyCertSign });
    expect(expectCode(() => verifyX509Svid([certSign.der], bundles), 'SVID_LEAF_KEY_USAGE').message).toMatch(
      /keyCertSign/,
    );
    const crlSign = await makeCert(root, { uris: [ID], keyUsage: KU.digitalSignature | KU.cRLSign });
    expect(expectCode(() => verifyX509Svid([crlSign.der], bundles), 'SVID_LEAF_KEY_USAGE').message).toMatch(
      /cRLSign/,
    );
    const noDs = await makeCert(root, { uris: [ID], keyUsage: KU.keyEncipherment });
    expect(expectCode(() => verifyX509Svid([noDs.der], bundles), 'SVID_LEAF_KEY_USAGE').message).toMatch(
      /digitalSignature/,
    );
    const noKu = await makeCert(root, { uris: [ID], keyUsage: null });
    expectCode(() => verifyX509Svid([noKu.der], bundles), 'SVID_LEAF_KEY_USAGE');
  });

  it('refuses a leaf of a trust domain without bundle', async () => {
    const other = await makeRoot('b.test');
    const leaf = await makeCert(other, { uris: ['spiffe://b.test/w'] });
    expectCode(() => verifyX509Svid([leaf.der], bundles), 'SVID_UNKNOWN_TRUST_DOMAIN');
  });

  it('refuses an expired leaf and a not-yet-valid leaf, honouring options.now', async () => {
    const now = Date.now();
    const expired = await makeCert(root, {
      uris: [ID],
      notBefore: new Date(now - 7200_000),
      notAfter: new Date(now - 20_000),
    });
    expectCode(() => verifyX509Svid([expired.der], bundles), 'SVID_EXPIRED');
    // The root is valid from 60 s ago, so 40 s ago both were valid.
    expect(verifyX509Svid([expired.der], bundles, { now: new Date(now - 40_000) }).toString()).toBe(ID);
    const future = await makeCert(root, {
      uris: [ID],
      notBefore: new Date(now + 600_000),
      notAfter: new Date(now + 1200_000),
    });
    expectCode(() => verifyX509Svid([future.der], bundles), 'SVID_NOT_YET_VALID');
  });

  it('refuses a leaf valid itself but chained to an expired root', async () => {
    const old = await makeRoot('a.test', {
      notBefore: new Date(Date.now() - 7200_000),
      notAfter: new Date(Date.now() - 60_000),
      name: 'CN=old root',
    });
    const leaf = await makeCert(old, { uris: [ID] });
    expectCode(
      () => verifyX509Svid([leaf.der], BundleSet.of(new X509Bundle('a.test', [old.cert]))),
      'SVID_EXPIRED',
    );
  });

  it('refuses a bad signature', async () => {
    const stranger = await newKeys();
    const leaf = await makeCert(root, { uris: [ID], signWith: stranger.privateKey });
    expectCode(() => verifyX509Svid([leaf.der], bundles), 'SVID_UNTRUSTED');
  });

  it('refuses an unknown issuer of the same trust domain name', async () => {
    const impostor = await makeRoot('a.test', { name: 'CN=test root a.test' });
    const leaf = await makeCert(impostor, { uris: [ID] });
    expectCode(() => verifyX509Svid([leaf.der], bundles), 'SVID_UNTRUSTED');
    // Presenting the impostor root in the chain changes nothing.
    expectCode(
      () => verifyX509Svid([leaf.der, new Uint8Array(impostor.cert.rawData)], bundles),
      'SVID_UNTRUSTED',
    );
  });

  // A client that resumes a session verifies the same Node handles on every
  // connection, and the verifier keeps its reading of each handle: what depends
  // on the moment and on the bundle must still be judged anew each time.
  describe('the same Node handles verified again', () => {
    const handles = (...certs: x509.X509Certificate[]) =>
      certs.map((c) => new NodeX509Certificate(Buffer.from(c.rawData)));

    it('refuses them once the leaf has expired, and at a time before it is valid', async () => {
      const now = Date.now();
      const leaf = await makeCert(root, {
        uris: [ID],
        notBefore: new Date(now - 30_000),
        notAfter: new Date(now + 60_000),
      });
      const chain = handles(leaf.cert, root.cert);
      expect(verifyX509Svid(chain, bundles).toString()).toBe(ID);
      expect(verifyX509Svid(chain, bundles).toString()).toBe(ID);
      expectCode(() => verifyX509Svid(chain, bundles, { now: new Date(now + 120_000) }), 'SVID_EXPIRED');
      expectCode(() => verifyX509Svid(chain, bundles, { now: new Date(now - 60_000) }), 'SVID_NOT_YET_VALID');
      expect(verifyX509Svid(chain, bundles).toString()).toBe(ID);
    });

    it('refuses them against a bundle that no longer holds their root, though the root is presented', async () => {
      const leaf = await makeCert(root, { uris: [ID] });
      const chain = handles(leaf.cert, root.cert);
      expect(verifyX509Svid(chain, bundles).toString()).toBe(ID);
      const replaced = await makeRoot('a.test', { name: 'CN=new root a.test' });
      const next = BundleSet.of(new X509Bundle('a.test', [replaced.cert]));
      expectCode(() => verifyX509Svid(chain, next), 'SVID_UNTRUSTED');
      expectCode(() => verifyX509Svid(chain, BundleSet.of()), 'SVID_UNKNOWN_TRUST_DOMAIN');
      // The same root as a new bundle object (an update that kept it) still verifies.
      const again = BundleSet.of(new X509Bundle('a.test', [new x509.X509Certificate(root.cert.rawData)]));
      expect(verifyX509Svid(chain, again).toString()).toBe(ID);
    });

    it('judges a handle of a bad leaf as bad every time', async () => {
      const stranger = await newKeys();
      const forged = await makeCert(root, { uris: [ID], signWith: stranger.privateKey });
      const chain = handles(forged.cert);
      expectCode(() => verifyX509Svid(chain, bundles), 'SVID_UNTRUSTED');
      expectCode(() => verifyX509Svid(chain, bundles), 'SVID_UNTRUSTED');
      const ca = await makeCert(root, { uris: [ID], ca: true, keyUsage: KU.digitalSignature });
      const caChain = handles(ca.cert);
      expectCode(() => verifyX509Svid(caChain, bundles), 'SVID_LEAF_IS_CA');
      expectCode(() => verifyX509Svid(caChain, bundles), 'SVID_LEAF_IS_CA');
    });
  });

  // What RFC 5280 path validation adds to the SPIFFE leaf rules, in crypto/x509's
  // order (go-spiffe's x509svid.Verify is built on it). Every kind of defect is
  // also a shared vector judged by go-spiffe in the interop suite.
  describe('RFC 5280 path validation', () => {
    it('refuses a chain longer than an intermediate allows, and accepts it within the limit', async () => {
      const upper = await makeIntermediate(root, 'a.test', { subject: 'CN=upper', pathLength: 0 });
      const lower = await makeIntermediate(upper, 'a.test', { subject: 'CN=lower' });
      const leaf = await makeCert(lower, { uris: [ID] });
      const err = expectCode(
        () => verifyX509Svid([leaf.cert, lower.cert, upper.cert], bundles),
        'SVID_PATH_LENGTH_EXCEEDED',
      );
      expect(err.message).toMatch(/allows 0 intermediate\(s\) below it, the chain has 1/);
      const direct = await makeCert(upper, { uris: [ID] });
      expect(verifyX509Svid([direct.cert, upper.cert], bundles).toString()).toBe(ID);
    });

    it("applies a bundle authority's own path length", async () => {
      const root0 = await makeRoot('a.test', { pathLength: 0, name: 'CN=root0' });
      const mid = await makeIntermediate(root0, 'a.test');
      const leaf = await makeCert(mid, { uris: [ID] });
      expectCode(
        () => verifyX509Svid([leaf.cert, mid.cert], BundleSet.of(new X509Bundle('a.test', [root0.cert]))),
        'SVID_PATH_LENGTH_EXCEEDED',
      );
    });

    it('refuses a SPIFFE ID outside the URI name constraints of a signer', async () => {
      const mid = await makeIntermediate(root, 'a.test', {
        extensions: [nameConstraints([{ type: 'url', value: 'b.test' }])],
      });
      const leaf = await makeCert(mid, { uris: [ID] });
      const err = expectCode(
        () => verifyX509Svid([leaf.cert, mid.cert], bundles),
        'SVID_NAME_CONSTRAINT_VIOLATION',
      );
      expect(err.message).toMatch(/uri name a\.test .* is not permitted/);
      const inside = await makeIntermediate(root, 'a.test', {
        extensions: [nameConstraints([{ type: 'url', value: 'a.test' }])],
      });
      const insideLeaf = await makeCert(inside, { uris: [ID] });
      expect(verifyX509Svid([insideLeaf.cert, inside.cert], bundles).toString()).toBe(ID);
    });

    it('refuses names in excluded subtrees and IP addresses outside permitted ranges', async () => {
      const excl = await makeIntermediate(root, 'a.test', {
        extensions: [nameConstraints([], [{ type: 'url', value: '.test' }])],
      });
      const excluded = await makeCert(excl, { uris: [ID] });
      expectCode(() => verifyX509Svid([excluded.cert, excl.cert], bundles), 'SVID_NAME_CONSTRAINT_VIOLATION');
      const ipMid = await makeIntermediate(root, 'a.test', {
        extensions: [nameConstraints([{ type: 'ip', value: '10.0.0.0/8' }])],
      });
      const outside = await makeCert(ipMid, { uris: [ID], ips: ['192.168.1.1'] });
      expectCode(() => verifyX509Svid([outside.cert, ipMid.cert], bundles), 'SVID_NAME_CONSTRAINT_VIOLATION');
      const within = await makeCert(ipMid, { uris: [ID], ips: ['10.1.2.3'] });
      expect(verifyX509Svid([within.cert, ipMid.cert], bundles).toString()).toBe(ID);
    });

    it("applies a root's name constraints to the intermediates below it too", async () => {
      const rootNc = await makeRoot('a.test', {
        name: 'CN=root nc',
        extensions: [nameConstraints([{ type: 'url', value: 'a.test' }])],
      });
      const stray = await makeIntermediate(rootNc, 'b.test', { subject: 'CN=stray' });
      const leaf = await makeCert(stray, { uris: [ID] });
      expectCode(
        () => verifyX509Svid([leaf.cert, stray.cert], BundleSet.of(new X509Bundle('a.test', [rootNc.cert]))),
        'SVID_NAME_CONSTRAINT_VIOLATION',
      );
    });

    it('refuses an unknown critical extension on the leaf, an intermediate or the root; ignores a non-critical one', async () => {
      const leaf = await makeCert(root, { uris: [ID], extensions: [unknownExtension()] });
      expect(
        expectCode(() => verifyX509Svid([leaf.cert], bundles), 'SVID_UNKNOWN_CRITICAL_EXTENSION').message,
      ).toMatch(/1\.3\.6\.1\.4\.1\.55555\.1\.1/);
      const mid = await makeIntermediate(root, 'a.test', { extensions: [unknownExtension()] });
      const belowMid = await makeCert(mid, { uris: [ID] });
      expectCode(() => verifyX509Svid([belowMid.cert, mid.cert], bundles), 'SVID_UNKNOWN_CRITICAL_EXTENSION');
      const critRoot = await makeRoot('a.test', { extensions: [unknownExtension()] });
      const belowRoot = await makeCert(critRoot, { uris: [ID] });
      expectCode(
        () => verifyX509Svid([belowRoot.cert], BundleSet.of(new X509Bundle('a.test', [critRoot.cert]))),
        'SVID_UNKNOWN_CRITICAL_EXTENSION',
      );
      const benign = await makeCert(root, { uris: [ID], extensions: [unknownExtension(false)] });
      expect(verifyX509Svid([benign.cert], bundles).toString()).toBe(ID);
    });

    it("keeps go-spiffe's order: leaf rules, then the bundle, then the leaf's extensions, then its validity", async () => {
      const past = { notBefore: new Date(Date.now() - 7200_000), notAfter: new Date(Date.now() - 60_000) };
      // A CA leaf with an unknown critical extension: the leaf rule comes first.
      const caLeaf = await makeCert(root, {
        uris: [ID],
        ca: true,
        keyUsage: KU.digitalSignature,
        extensions: [unknownExtension()],
      });
      expectCode(() => verifyX509Svid([caLeaf.cert], bundles), 'SVID_LEAF_IS_CA');
      // No bundle for the leaf's trust domain beats every path defect.
      const foreign = await makeCert(root, {
        uris: ['spiffe://c.test/w'],
        extensions: [unknownExtension()],
        ...past,
      });
      expectCode(() => verifyX509Svid([foreign.cert], bundles), 'SVID_UNKNOWN_TRUST_DOMAIN');
      // Critical extensions before validity, as crypto/x509's isValid.
      const both = await makeCert(root, { uris: [ID], extensions: [unknownExtension()], ...past });
      expectCode(() => verifyX509Svid([both.cert], bundles), 'SVID_UNKNOWN_CRITICAL_EXTENSION');
    });
  });

  describe('federation', () => {
    let rootB: TestCa;
    let federated: BundleSet;
    beforeAll(async () => {
      rootB = await makeRoot('b.test');
      federated = BundleSet.of(new X509Bundle('a.test', [root.cert]), new X509Bundle('b.test', [rootB.cert]));
    });

    it("verifies a chain of B against B's bundle", async () => {
      const leaf = await makeCert(rootB, { uris: ['spiffe://b.test/api'] });
      expect(verifyX509Svid([leaf.der], federated).toString()).toBe('spiffe://b.test/api');
    });

    it("never accepts a B identity signed by A's root, though A's root is trusted", async () => {
      const forged = await makeCert(root, { uris: ['spiffe://b.test/api'] });
      expectCode(() => verifyX509Svid([forged.der], federated), 'SVID_UNTRUSTED');
    });

    it("never accepts an A identity signed by B's root", async () => {
      const forged = await makeCert(rootB, { uris: [ID] });
      expectCode(() => verifyX509Svid([forged.der], federated), 'SVID_UNTRUSTED');
    });
  });

  // The peer's leaf is read without @peculiar/x509 only when it is plain DER
  // that reading fully understands; every other leaf gets @peculiar/x509's
  // reading, so its verdict (and message) is unchanged.
  it('gives a leaf the fast reading does not vouch for exactly the @peculiar/x509 verdict', async () => {
    const answer = (leaf: Uint8Array | x509.X509Certificate): string => {
      try {
        return `ok ${verifyX509Svid([leaf], bundles).toString()}`;
      } catch (err) {
        expect(err).toBeInstanceOf(X509SvidError);
        return `${(err as X509SvidError).code}: ${(err as X509SvidError).message}`;
      }
    };
    const cases: [string, Promise<{ der: Uint8Array }>, string][] = [
      [
        'malformed cRLDistributionPoints',
        makeCert(root, { uris: [ID], extensions: [new x509.Extension('2.5.29.31', false, NULL)] }),
        'SVID_MALFORMED',
      ],
      [
        'malformed subjectKeyIdentifier (first of two)',
        makeCert(root, { uris: [ID], extensions: [new x509.Extension('2.5.29.14', false, NULL)] }),
        'SVID_MALFORMED',
      ],
      [
        'keyUsage BIT STRING with no bits',
        makeCert(root, {
          uris: [ID],
          keyUsage: null,
          extensions: [new x509.Extension('2.5.29.15', true, new Uint8Array([0x03, 0x01, 0x00]))],
        }),
        'SVID_LEAF_KEY_USAGE',
      ],
      [
        'well-formed cRLDistributionPoints',
        makeCert(root, {
          uris: [ID],
          extensions: [new x509.CRLDistributionPointsExtension(['http://crl.a.test/'])],
        }),
        'ok',
      ],
      [
        'name constraints on the leaf',
        makeCert(root, { uris: [ID], extensions: [nameConstraints([{ type: 'dns', value: 'a.test' }])] }),
        'ok',
      ],
    ];
    for (const [name, made, verdict] of cases) {
      const { der } = await made;
      expect(LeafCertificate.read(der), name).toBeUndefined();
      const got = answer(der);
      expect(got, name).toBe(answer(new x509.X509Certificate(der)));
      expect(got.startsWith(verdict), `${name}: ${got}`).toBe(true);
    }
    // A plain SPIRE-shaped leaf is read without @peculiar/x509.
    const plain = await makeCert(root, { uris: [ID], dns: ['w.a.test'], ips: ['10.0.0.1'] });
    const read = LeafCertificate.read(plain.der);
    expect(read?.uris).toEqual([ID]);
    expect(read?.ca).toBe(false);
    expect(read?.notAfter.getTime()).toBe(plain.cert.notAfter.getTime());
    expect(read?.keyUsage.flags).toBe(plain.cert.getExtension(x509.KeyUsagesExtension)?.usages);
    expect(answer(plain.der)).toBe(`ok ${ID}`);
  });
});

describe('X509Svid.parse', () => {
  let ca: DevCertificateAuthority;
  beforeAll(async () => {
    ca = await DevCertificateAuthority.create({ trustDomain: 'a.test' });
  });

  it('round-trips PEM and DER forms', async () => {
    const svid = await ca.issueX509Svid('spiffe://a.test/w');
    const pem = svid.toPem();
    const fromPem = X509Svid.parse(pem.certChain, pem.privateKey, { hint: 'internal' });
    expect(fromPem.id.toString()).toBe('spiffe://a.test/w');
    expect(fromPem.hint).toBe('internal');
    const der = svid.toDer();
    const fromDer = X509Svid.parse(der.certChain, der.privateKey);
    expect(fromDer.expiresAt.getTime()).toBe(svid.expiresAt.getTime());
    const fromList = X509Svid.parse([der.certChain], der.privateKey);
    expect(fromList.certificates).toHaveLength(1);
    expect(fromList.hint).toBe('');
  });

  it('refuses a key that does not match the leaf', async () => {
    const a = await ca.issueX509Svid('spiffe://a.test/a');
    const b = await ca.issueX509Svid('spiffe://a.test/b');
    expectCode(() => X509Svid.parse(a.toPem().certChain, b.toPem().privateKey), 'SVID_KEY_MISMATCH');
  });

  it('refuses garbage chains and keys', async () => {
    const svid = await ca.issueX509Svid('spiffe://a.test/a');
    expectCode(() => X509Svid.parse('', svid.toPem().privateKey), 'SVID_EMPTY_CHAIN');
    expectCode(() => X509Svid.parse(new Uint8Array([1, 2, 3]), svid.toPem().privateKey), 'SVID_MALFORMED');
    expectCode(() => X509Svid.parse(svid.toPem().certChain, 'not a key'), 'SVID_MALFORMED');
  });

  it('applies the leaf rules to its own SVID', async () => {
    const root = await makeRoot('a.test');
    const bad = await makeCert(root, {
      uris: ['spiffe://a.test/w'],
      keyUsage: KU.digitalSignature | KU.keyCertSign,
    });
    expectCode(() => X509Svid.parse([bad.der], bad.keyPem), 'SVID_LEAF_KEY_USAGE');
    const rootPath = await makeCert(root, { uris: ['spiffe://a.test'] });
    expectCode(() => X509Svid.parse([rootPath.der], rootPath.keyPem), 'SVID_ROOT_PATH');
  });

  it('requires a critical SAN when the subject is empty', async () => {
    const root = await makeRoot('a.test');
    const bad = await makeCert(root, { uris: ['spiffe://a.test/w'], subject: '' });
    expect(bad.cert.subject).toBe('');
    expectCode(() => X509Svid.parse([bad.der], bad.keyPem), 'SVID_MALFORMED');
    const good = await makeCert(root, { uris: ['spiffe://a.test/w'], subject: '', sanCritical: true });
    expect(X509Svid.parse([good.der], good.keyPem).id.toString()).toBe('spiffe://a.test/w');
  });
});
