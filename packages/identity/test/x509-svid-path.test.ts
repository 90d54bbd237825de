// verifyX509SvidPath: the same verification as verifyX509Svid, and until when
// it holds — the earliest notAfter of the path that verified (leaf,
// intermediates, bundle authority). A connection held on a verification ended
// at the leaf's notAfter only: a chain through an intermediate CA that expired
// before the leaf kept working on a held connection until the next bundle
// update. Candidates the path did not go through (an old intermediate of the
// same name, rotated out) must play no part.
import { describe, expect, it, beforeAll } from 'vitest';
import {
  BundleSet,
  IdentityConfigError,
  X509Bundle,
  X509SvidError,
  verifyX509Svid,
  verifyX509SvidPath,
} from '@weave/identity';
import { makeCert, makeIntermediate, makeRoot, type TestCa } from './helpers/forge.js';
import { renewed as renewal } from './helpers/renew.js';

const ID = 'spiffe://a.test/workload';
const HOUR = 3_600_000;
/** Certificate times are whole seconds: a time some way from now, on a second. */
const at = (ms: number): Date => new Date(Math.floor((Date.now() + ms) / 1000) * 1000);

describe('verifyX509SvidPath', () => {
  let root: TestCa;
  let bundles: BundleSet;

  beforeAll(async () => {
    root = await makeRoot('a.test', { notAfter: at(24 * HOUR) });
    bundles = BundleSet.of(new X509Bundle('a.test', [root.cert]));
  });

  it("ends at the leaf's notAfter when the leaf expires first", async () => {
    const leaf = await makeCert(root, { uris: [ID], notAfter: at(HOUR) });
    const v = verifyX509SvidPath([leaf.der], bundles);
    expect(v.id.toString()).toBe(ID);
    expect(v.expiresAt.getTime()).toBe(leaf.cert.notAfter.getTime());
    expect(v.expiringCertificate.role).toBe('leaf');
  });

  it('ends at an intermediate that expires before the leaf, and names it', async () => {
    const mid = await makeIntermediate(root, 'a.test', { subject: 'CN=short mid', notAfter: at(60_000) });
    const leaf = await makeCert(mid, { uris: [ID], notAfter: at(HOUR) });
    const v = verifyX509SvidPath([leaf.cert, mid.cert], bundles);
    expect(v.id.toString()).toBe(ID);
    expect(v.expiresAt.getTime()).toBe(mid.cert.notAfter.getTime());
    expect(v.expiresAt.getTime()).toBeLessThan(leaf.cert.notAfter.getTime());
    expect(v.expiringCertificate).toMatchObject({ role: 'intermediate', subject: 'CN=short mid' });
    // The same verification: verifyX509Svid answers the same ID.
    expect(verifyX509Svid([leaf.cert, mid.cert], bundles).toString()).toBe(ID);
  });

  it('ends at the bundle authority the path ends in when it expires first', async () => {
    const shortRoot = await makeRoot('a.test', { name: 'CN=short root', notAfter: at(60_000) });
    const mid = await makeIntermediate(shortRoot, 'a.test', { notAfter: at(HOUR) });
    const leaf = await makeCert(mid, { uris: [ID], notAfter: at(HOUR) });
    const trusted = BundleSet.of(new X509Bundle('a.test', [shortRoot.cert]));
    const v = verifyX509SvidPath([leaf.der, new Uint8Array(mid.cert.rawData)], trusted);
    expect(v.expiresAt.getTime()).toBe(shortRoot.cert.notAfter.getTime());
    expect(v.expiringCertificate).toMatchObject({ role: 'authority', subject: 'CN=short root' });
  });

  it('ignores a certificate the path does not go through: another intermediate of the same name', async () => {
    const current = await makeIntermediate(root, 'a.test', { subject: 'CN=rotating', notAfter: at(HOUR) });
    // Rotated out: same name, another key, expiring sooner (and one already expired).
    const old = await makeIntermediate(root, 'a.test', { subject: 'CN=rotating', notAfter: at(60_000) });
    const gone = await makeIntermediate(root, 'a.test', {
      subject: 'CN=rotating',
      notBefore: new Date(Date.now() - 2 * HOUR),
      notAfter: new Date(Date.now() - HOUR),
    });
    const leaf = await makeCert(current, { uris: [ID], notAfter: at(2 * HOUR) });
    for (const chain of [
      [leaf.cert, old.cert, gone.cert, current.cert],
      [leaf.cert, current.cert, gone.cert, old.cert],
    ]) {
      const v = verifyX509SvidPath(chain, bundles);
      expect(v.expiresAt.getTime()).toBe(current.cert.notAfter.getTime());
      expect(v.expiringCertificate.role).toBe('intermediate');
    }
  });

  it('of two paths that verify (an intermediate renewed with its key), takes the one that verifies longer', async () => {
    const old = await makeIntermediate(root, 'a.test', { subject: 'CN=renewed', notAfter: at(60_000) });
    const renewed = await renewal(old, root, at(2 * HOUR));
    const leaf = await makeCert(old, { uris: [ID], notAfter: at(3 * HOUR) });
    // Either is a valid issuer; whichever comes first, the path through the renewal holds longer.
    for (const chain of [
      [leaf.cert, old.cert, renewed.cert],
      [leaf.cert, renewed.cert, old.cert],
    ]) {
      expect(verifyX509SvidPath(chain, bundles).expiresAt.getTime()).toBe(renewed.cert.notAfter.getTime());
    }
    // Once the old one has expired, only the renewal's path is left, with the same end.
    const later = new Date(old.cert.notAfter.getTime() + 1000);
    expect(
      verifyX509SvidPath([leaf.cert, old.cert, renewed.cert], bundles, { now: later }).expiresAt.getTime(),
    ).toBe(renewed.cert.notAfter.getTime());
  });

  it('refuses as verifyX509Svid does: an expired intermediate is SVID_EXPIRED from both', async () => {
    const mid = await makeIntermediate(root, 'a.test', { subject: 'CN=short mid', notAfter: at(60_000) });
    const leaf = await makeCert(mid, { uris: [ID], notAfter: at(HOUR) });
    const later = { now: new Date(mid.cert.notAfter.getTime() + 1000) };
    for (const verify of [verifyX509SvidPath, verifyX509Svid]) {
      let err: unknown;
      try {
        verify([leaf.cert, mid.cert], bundles, later);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(X509SvidError);
      expect(err).toMatchObject({ code: 'SVID_EXPIRED', message: expect.stringContaining('CN=short mid') });
    }
  });

  it('refuses a misspelt `now`, naming itself', async () => {
    const leaf = await makeCert(root, { uris: [ID] });
    let err: unknown;
    try {
      verifyX509SvidPath([leaf.der], bundles, { at: new Date() } as { now?: Date });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(IdentityConfigError);
    expect(err).toMatchObject({ message: 'invalid verifyX509SvidPath options: unknown key "at"' });
  });
});
