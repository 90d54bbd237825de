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
import { KU, makeCert, makeIntermediate, makeRoot, newKeys, type TestCa } from './helpers/forge.js';

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
