import { generateKeyPairSync } from 'node:crypto';
import type { JWK } from 'jose';
import { beforeAll, describe, expect, it } from 'vitest';
import { BundleError, BundleSet, JwtBundle, SpiffeBundle, TrustDomain, X509Bundle } from '@weave/identity';
import { DevCertificateAuthority } from '@weave/identity/dev';
import { makeRoot, type TestCa } from './helpers/forge.js';

const td = TrustDomain.parse('a.test');

function expectBundleError(fn: () => unknown, code: string): void {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(BundleError);
    expect((err as BundleError).code).toBe(code);
    return;
  }
  throw new Error(`expected ${code}`);
}

describe('X509Bundle', () => {
  let r1: TestCa;
  let r2: TestCa;
  beforeAll(async () => {
    r1 = await makeRoot('a.test', { name: 'CN=r1' });
    r2 = await makeRoot('a.test', { name: 'CN=r2' });
  });

  it('round-trips PEM and concatenated DER', () => {
    const b = new X509Bundle(td, [r1.cert, r2.cert]);
    const fromPem = X509Bundle.fromPem('a.test', b.toPem());
    expect(fromPem.equals(b)).toBe(true);
    const fromDer = X509Bundle.fromDer(td, b.toDer());
    expect(fromDer.authorities.map((c) => c.subject)).toEqual(['CN=r1', 'CN=r2']);
    expect(fromDer.hasAuthority(r2.cert)).toBe(true);
    expect(new X509Bundle(td, [r1.cert]).equals(b)).toBe(false);
  });

  it('refuses empty and malformed input', () => {
    expectBundleError(() => X509Bundle.fromPem(td, ''), 'BUNDLE_EMPTY');
    expectBundleError(() => X509Bundle.fromDer(td, new Uint8Array()), 'BUNDLE_EMPTY');
    expectBundleError(
      () => X509Bundle.fromDer(td, new Uint8Array([0x30, 0x82, 0xff, 0xff, 1])),
      'BUNDLE_MALFORMED',
    );
    expectBundleError(
      () => X509Bundle.fromPem(td, '-----BEGIN CERTIFICATE-----\nMIIB!!\n-----END CERTIFICATE-----\n'),
      'BUNDLE_MALFORMED',
    );
  });
});

describe('SpiffeBundle (JWKS)', () => {
  let ca: DevCertificateAuthority;
  beforeAll(async () => {
    ca = await DevCertificateAuthority.create({ trustDomain: 'a.test' });
  });

  it('serializes x509-svid entries with x5c and jwt-svid entries with kid, sequence and refresh hint', () => {
    const doc = ca.spiffeBundle.toJSON();
    expect(doc.spiffe_sequence).toBe(1);
    expect(doc.spiffe_refresh_hint).toBe(300);
    const x = doc.keys.filter((k) => k.use === 'x509-svid');
    const j = doc.keys.filter((k) => k.use === 'jwt-svid');
    expect(x).toHaveLength(1);
    expect(x[0]!.x5c).toEqual([Buffer.from(ca.certificate.rawData).toString('base64')]);
    expect(x[0]!.kty).toBe('EC');
    expect(j).toHaveLength(1);
    expect(j[0]!.kid).toBe([...ca.jwtBundle.keys.keys()][0]);
    expect(j[0]).not.toHaveProperty('d');
  });

  it('round-trips through JSON text', () => {
    const text = JSON.stringify(ca.spiffeBundle);
    const back = SpiffeBundle.parse(td, text);
    expect(back.sequence).toBe(1);
    expect(back.refreshHint).toBe(300);
    expect(back.toX509Bundle().equals(ca.x509Bundle)).toBe(true);
    expect([...back.jwtAuthorities.keys()]).toEqual([...ca.jwtBundle.keys.keys()]);
    expect(JSON.parse(JSON.stringify(back))).toEqual(JSON.parse(text));
  });

  it('ignores unknown use and kty entries, keeps optional fields optional', () => {
    const doc = ca.spiffeBundle.toJSON();
    const parsed = SpiffeBundle.parse(td, {
      keys: [
        ...doc.keys,
        { kty: 'EC', crv: 'P-256', x: 'AA', y: 'AA', use: 'wit-svid', kid: 'w' },
        { kty: 'oct', k: 'c2VjcmV0', use: 'jwt-svid', kid: 'hmac' },
        { kty: 'FANCY', use: 'x509-svid' },
      ],
    });
    expect(parsed.x509Authorities).toHaveLength(1);
    expect([...parsed.jwtAuthorities.keys()]).toEqual([...ca.jwtBundle.keys.keys()]);
    expect(parsed.sequence).toBeUndefined();
    expect(parsed.refreshHint).toBeUndefined();
    expect(JSON.parse(JSON.stringify(parsed))).not.toHaveProperty('spiffe_sequence');
  });

  it('refuses malformed documents', () => {
    const doc = ca.spiffeBundle.toJSON();
    const x = doc.keys.find((k) => k.use === 'x509-svid')!;
    const j = doc.keys.find((k) => k.use === 'jwt-svid')!;
    expectBundleError(() => SpiffeBundle.parse(td, '{'), 'BUNDLE_MALFORMED');
    expectBundleError(() => SpiffeBundle.parse(td, { nokeys: [] }), 'BUNDLE_MALFORMED');
    expectBundleError(() => SpiffeBundle.parse(td, { keys: [{ ...x, x5c: [] }] }), 'BUNDLE_MALFORMED');
    expectBundleError(
      () => SpiffeBundle.parse(td, { keys: [{ ...x, x5c: [x.x5c![0], x.x5c![0]] }] }),
      'BUNDLE_MALFORMED',
    );
    expectBundleError(() => SpiffeBundle.parse(td, { keys: [{ ...x, x5c: ['AAAA'] }] }), 'BUNDLE_MALFORMED');
    // The JWK's key must be the certificate's key.
    expectBundleError(() => SpiffeBundle.parse(td, { keys: [{ ...x, x: j.x, y: j.y }] }), 'BUNDLE_MALFORMED');
    const { kid: _kid, ...noKid } = j;
    expectBundleError(() => SpiffeBundle.parse(td, { keys: [noKid] }), 'BUNDLE_MALFORMED');
    expectBundleError(() => SpiffeBundle.parse(td, { keys: [{ ...j, x: 'AAAA' }] }), 'BUNDLE_MALFORMED');
    expectBundleError(() => SpiffeBundle.parse(td, { keys: [], spiffe_sequence: -1 }), 'BUNDLE_MALFORMED');
  });

  it('refuses bundle text with a key written twice, which JSON.parse would resolve to the last', () => {
    const text = JSON.stringify(ca.spiffeBundle, null, 2);
    const refused = (t: string, path: RegExp): BundleError => {
      let caught: unknown;
      try {
        SpiffeBundle.parse(td, t);
      } catch (err) {
        caught = err;
      }
      expect(caught).toBeInstanceOf(BundleError);
      expect((caught as BundleError).code).toBe('BUNDLE_MALFORMED');
      expect((caught as BundleError).message).toMatch(path);
      return caught as BundleError;
    };
    // A second, empty "keys" would silently leave the trust domain with no authorities.
    refused(
      text.replace(/\n}$/, ',\n  "keys": []\n}'),
      /"keys" appears twice in one object, at keys \(line \d+, column 3\)/,
    );
    // A second "use" in one key would silently turn a JWT authority into an X.509 one or back.
    refused(
      text.replace('"use": "jwt-svid"', '"use": "jwt-svid",\n      "use": "x509-svid"'),
      /"use" appears twice in one object, at keys\[1\]\.use \(line \d+, column 7\)/,
    );
    expect(() => JwtBundle.fromJwks(td, '{"keys": [], "keys": []}')).toThrow(/"keys" appears twice/);
    // The same text without the repeat still parses.
    expect(SpiffeBundle.parse(td, text).toX509Bundle().equals(ca.x509Bundle)).toBe(true);
  });

  it('builds a JwtBundle from a JWKS and drops private members', () => {
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const priv = privateKey.export({ format: 'jwk' }) as JWK;
    const b = new JwtBundle(td, { k1: priv });
    expect(b.keys.get('k1')).not.toHaveProperty('d');
    const back = JwtBundle.fromJwks(td, JSON.stringify(b.toJwks()));
    expect([...back.keys.keys()]).toEqual(['k1']);
  });

  it('reads a JWT bundle as the Workload API sends it: keys with a kid and no use', () => {
    // SPIRE's FetchJWTBundles (go-spiffe's jwtbundle format) omits `use`.
    const pub = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ format: 'jwk' }) as JWK;
    const other = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({
      format: 'jwk',
    }) as JWK;
    const b = JwtBundle.fromJwks(td, {
      keys: [
        { ...pub, kid: 'spire-1' },
        { ...other, kid: 'tls-only', use: 'x509-svid' },
        { kty: 'OKP', crv: 'X25519', x: 'AAAA', kid: 'unknown-kty' },
      ],
    });
    expect([...b.keys.keys()]).toEqual(['spire-1']);
    expect(b.findKey('spire-1')).toBeDefined();
    expectBundleError(() => JwtBundle.fromJwks(td, { keys: [pub] }), 'BUNDLE_MALFORMED');
    expectBundleError(
      () =>
        JwtBundle.fromJwks(td, {
          keys: [
            { ...pub, kid: 'a' },
            { ...other, kid: 'a' },
          ],
        }),
      'BUNDLE_MALFORMED',
    );
    expectBundleError(() => JwtBundle.fromJwks(td, '{'), 'BUNDLE_MALFORMED');
    // A SPIFFE bundle keeps its stricter rule: a key without `use` is not a JWT authority there.
    expect(SpiffeBundle.parse(td, { keys: [{ ...pub, kid: 'spire-1' }] }).jwtAuthorities.size).toBe(0);
  });
});

describe('BundleSet', () => {
  it('keys bundles by trust domain and lists every X.509 authority', async () => {
    const a = await makeRoot('a.test');
    const b = await makeRoot('b.test');
    const set = BundleSet.of(new X509Bundle('a.test', [a.cert]), new X509Bundle('b.test', [b.cert]));
    const ca = await DevCertificateAuthority.create({ trustDomain: 'c.test' });
    set.setJwtBundle(ca.jwtBundle);
    expect(set.trustDomains().map(String)).toEqual(['a.test', 'b.test', 'c.test']);
    expect(set.allX509Authorities()).toHaveLength(2);
    expect(set.getX509Bundle(TrustDomain.parse('b.test'))?.authorities[0]).toBe(b.cert);
    expect(set.getJwtBundle(TrustDomain.parse('c.test'))).toBe(ca.jwtBundle);
    const copy = set.clone();
    expect(set.delete(TrustDomain.parse('b.test'))).toBe(true);
    expect(set.getX509Bundle(TrustDomain.parse('b.test'))).toBeUndefined();
    expect(set.delete(TrustDomain.parse('b.test'))).toBe(false);
    expect(copy.getX509Bundle(TrustDomain.parse('b.test'))).toBeDefined();
  });
});
