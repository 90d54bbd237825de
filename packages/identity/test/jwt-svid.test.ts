import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { SignJWT, base64url, type JWK, type JWTPayload } from 'jose';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  BundleSet,
  JwtBundle,
  JwtSvidError,
  parseJwtSvidInsecure,
  validateJwtSvid,
  type JwtSvidErrorCode,
} from '@weave/identity';
import { DevCertificateAuthority } from '@weave/identity/dev';

const SUB = 'spiffe://a.test/caller';
const AUD = 'spiffe://a.test/api';

async function expectCode(p: Promise<unknown> | (() => unknown), code: JwtSvidErrorCode): Promise<void> {
  try {
    await (typeof p === 'function' ? p() : p);
  } catch (err) {
    expect(err).toBeInstanceOf(JwtSvidError);
    expect((err as JwtSvidError).code).toBe(code);
    return;
  }
  throw new Error(`expected ${code}, nothing was thrown`);
}

interface Signer {
  kid: string;
  key: KeyObject;
  jwk: JWK;
}

function ecSigner(kid: string): Signer {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return { kid, key: privateKey, jwk: publicKey.export({ format: 'jwk' }) as JWK };
}

function rsaSigner(kid: string): Signer {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { kid, key: privateKey, jwk: publicKey.export({ format: 'jwk' }) as JWK };
}

const nowSec = (): number => Math.floor(Date.now() / 1000);

async function sign(
  signer: Signer,
  claims: JWTPayload,
  header: Record<string, unknown> = {},
  alg = 'ES256',
): Promise<string> {
  return new SignJWT(claims)
    .setProtectedHeader({ alg, kid: signer.kid, typ: 'JWT', ...header } as { alg: string })
    .sign(signer.key);
}

describe('JWT-SVID', () => {
  let ec: Signer;
  let rsa: Signer;
  let bundles: BundleSet;
  const good = (): JWTPayload => ({ sub: SUB, aud: [AUD], exp: nowSec() + 300, iat: nowSec() });

  beforeAll(() => {
    ec = ecSigner('ec-1');
    rsa = rsaSigner('rsa-1');
    bundles = BundleSet.of(
      new JwtBundle(
        'a.test',
        new Map([
          [ec.kid, ec.jwk],
          [rsa.kid, rsa.jwk],
        ]),
      ),
    );
  });

  it('accepts ES256, RS256 and PS384 tokens signed by a bundle key', async () => {
    for (const [signer, alg] of [
      [ec, 'ES256'],
      [rsa, 'RS256'],
      [rsa, 'PS384'],
    ] as const) {
      const svid = await validateJwtSvid(await sign(signer, good(), {}, alg), bundles, AUD);
      expect(svid.id.toString()).toBe(SUB);
      expect(svid.audience).toEqual([AUD]);
      expect(svid.expiresAt.getTime()).toBeGreaterThan(Date.now());
      expect(svid.claims.sub).toBe(SUB);
    }
  });

  it('accepts a string aud, typ JOSE, and no typ', async () => {
    await expect(
      validateJwtSvid(await sign(ec, { ...good(), aud: AUD }), bundles, AUD),
    ).resolves.toBeTruthy();
    await expect(
      validateJwtSvid(await sign(ec, good(), { typ: 'JOSE' }), bundles, AUD),
    ).resolves.toBeTruthy();
    await expect(
      validateJwtSvid(await sign(ec, good(), { typ: undefined }), bundles, AUD),
    ).resolves.toBeTruthy();
  });

  it('rejects HS256, even with the public key bytes as the secret', async () => {
    const secret = new TextEncoder().encode(JSON.stringify(ec.jwk));
    const token = await new SignJWT(good()).setProtectedHeader({ alg: 'HS256', kid: ec.kid }).sign(secret);
    await expectCode(validateJwtSvid(token, bundles, AUD), 'JWT_SVID_BAD_ALG');
  });

  it('rejects alg none', async () => {
    const enc = (o: object): string => base64url.encode(JSON.stringify(o));
    const token = `${enc({ alg: 'none', kid: ec.kid })}.${enc(good())}.`;
    await expectCode(validateJwtSvid(token, bundles, AUD), 'JWT_SVID_BAD_ALG');
    await expectCode(() => parseJwtSvidInsecure(token, [AUD]), 'JWT_SVID_BAD_ALG');
  });

  it('rejects EdDSA even when its key is in the bundle', async () => {
    const { privateKey, publicKey } = generateKeyPairSync('ed25519');
    const withEd = BundleSet.of(
      new JwtBundle('a.test', new Map([['ed-1', publicKey.export({ format: 'jwk' }) as JWK]])),
    );
    const token = await new SignJWT(good())
      .setProtectedHeader({ alg: 'EdDSA', kid: 'ed-1' })
      .sign(privateKey);
    await expectCode(validateJwtSvid(token, withEd, AUD), 'JWT_SVID_BAD_ALG');
  });

  it('rejects a bad typ', async () => {
    await expectCode(
      validateJwtSvid(await sign(ec, good(), { typ: 'at+jwt' }), bundles, AUD),
      'JWT_SVID_BAD_TYP',
    );
  });

  it('rejects a missing kid', async () => {
    const token = await new SignJWT(good()).setProtectedHeader({ alg: 'ES256' }).sign(ec.key);
    await expectCode(validateJwtSvid(token, bundles, AUD), 'JWT_SVID_MISSING_KID');
  });

  it('rejects a missing or invalid sub', async () => {
    const { sub: _sub, ...noSub } = good();
    await expectCode(validateJwtSvid(await sign(ec, noSub), bundles, AUD), 'JWT_SVID_MISSING_SUB');
    await expectCode(
      validateJwtSvid(await sign(ec, { ...good(), sub: 'https://a.test/x' }), bundles, AUD),
      'JWT_SVID_INVALID_SUB',
    );
  });

  it('rejects a missing aud', async () => {
    const { aud: _aud, ...noAud } = good();
    await expectCode(validateJwtSvid(await sign(ec, noAud), bundles, AUD), 'JWT_SVID_MISSING_AUD');
    await expectCode(
      validateJwtSvid(await sign(ec, { ...good(), aud: [] }), bundles, AUD),
      'JWT_SVID_MISSING_AUD',
    );
  });

  it('rejects a missing exp', async () => {
    const { exp: _exp, ...noExp } = good();
    await expectCode(validateJwtSvid(await sign(ec, noExp), bundles, AUD), 'JWT_SVID_MISSING_EXP');
  });

  it('rejects an expired token, and honours options.now', async () => {
    const token = await sign(ec, { ...good(), iat: nowSec() - 420, exp: nowSec() - 120 });
    await expectCode(validateJwtSvid(token, bundles, AUD), 'JWT_SVID_EXPIRED');
    await expect(
      validateJwtSvid(token, bundles, AUD, { now: new Date(Date.now() - 180_000) }),
    ).resolves.toBeTruthy();
  });

  it('rejects a token that is not valid yet (nbf)', async () => {
    const token = await sign(ec, { ...good(), nbf: nowSec() + 120 });
    await expectCode(validateJwtSvid(token, bundles, AUD), 'JWT_SVID_NOT_YET_VALID');
  });

  it('rejects the wrong audience', async () => {
    await expectCode(
      validateJwtSvid(await sign(ec, good()), bundles, 'spiffe://a.test/other'),
      'JWT_SVID_AUDIENCE_MISMATCH',
    );
  });

  it('rejects a sub of a trust domain without JWT bundle', async () => {
    await expectCode(
      validateJwtSvid(await sign(ec, { ...good(), sub: 'spiffe://b.test/x' }), bundles, AUD),
      'JWT_SVID_UNKNOWN_TRUST_DOMAIN',
    );
  });

  it('rejects an unknown kid', async () => {
    await expectCode(
      validateJwtSvid(await sign(ec, good(), { kid: 'nope' }), bundles, AUD),
      'JWT_SVID_UNKNOWN_KEY',
    );
  });

  it('rejects a bad signature: other key under a known kid, or a tampered payload', async () => {
    const thief = ecSigner(ec.kid);
    await expectCode(validateJwtSvid(await sign(thief, good()), bundles, AUD), 'JWT_SVID_BAD_SIGNATURE');
    const [h, , s] = (await sign(ec, good())).split('.');
    const forged = `${h}.${base64url.encode(JSON.stringify({ ...good(), sub: 'spiffe://a.test/admin' }))}.${s}`;
    await expectCode(validateJwtSvid(forged, bundles, AUD), 'JWT_SVID_BAD_SIGNATURE');
  });

  it("checks the key in the bundle of sub's trust domain, not any trusted bundle", async () => {
    const bSigner = ecSigner('b-1');
    const both = BundleSet.of(
      new JwtBundle('a.test', new Map([[ec.kid, ec.jwk]])),
      new JwtBundle('b.test', new Map([[bSigner.kid, bSigner.jwk]])),
    );
    // B's key signing an A identity: the kid is not in A's bundle.
    await expectCode(validateJwtSvid(await sign(bSigner, good()), both, AUD), 'JWT_SVID_UNKNOWN_KEY');
    const asB = await validateJwtSvid(
      await sign(bSigner, { ...good(), sub: 'spiffe://b.test/x' }),
      both,
      AUD,
    );
    expect(asB.id.toString()).toBe('spiffe://b.test/x');
  });

  it('rejects garbage', async () => {
    await expectCode(validateJwtSvid('not.a.jwt', bundles, AUD), 'JWT_SVID_MALFORMED');
    await expectCode(validateJwtSvid('abc', bundles, AUD), 'JWT_SVID_MALFORMED');
    await expectCode(
      validateJwtSvid(await sign(ec, { ...good(), exp: 'soon' as never }), bundles, AUD),
      'JWT_SVID_MALFORMED',
    );
  });

  it('validates tokens issued by the dev CA against its JWT bundle', async () => {
    const ca = await DevCertificateAuthority.create({ trustDomain: 'a.test' });
    const svid = await ca.issueJwtSvid(SUB, [AUD, 'other']);
    const checked = await validateJwtSvid(svid.token, ca.jwtBundle, 'other');
    expect(checked.id.toString()).toBe(SUB);
    expect(checked.audience).toEqual([AUD, 'other']);
    await expectCode(validateJwtSvid(svid.token, bundles, AUD), 'JWT_SVID_UNKNOWN_KEY');
  });

  describe('parseJwtSvidInsecure', () => {
    it('parses without a signature check but still checks the claims', async () => {
      const thief = ecSigner('whatever');
      const svid = parseJwtSvidInsecure(await sign(thief, good()), [AUD]);
      expect(svid.id.toString()).toBe(SUB);
      expect(svid.hint).toBe('');
      expect(svid.withHint('h').hint).toBe('h');
      await expectCode(
        async () => parseJwtSvidInsecure(await sign(thief, good()), ['x']),
        'JWT_SVID_AUDIENCE_MISMATCH',
      );
      await expectCode(
        async () => parseJwtSvidInsecure(await sign(thief, { ...good(), exp: nowSec() - 120 }), [AUD]),
        'JWT_SVID_EXPIRED',
      );
      // Several faults: the README's order (aud, then exp, then nbf), as go-spiffe checks them.
      await expectCode(
        async () => parseJwtSvidInsecure(await sign(thief, { ...good(), exp: nowSec() - 120 }), ['x']),
        'JWT_SVID_AUDIENCE_MISMATCH',
      );
      await expectCode(
        async () => parseJwtSvidInsecure(await sign(thief, { ...good(), nbf: nowSec() + 600 }), ['x']),
        'JWT_SVID_AUDIENCE_MISMATCH',
      );
      await expectCode(
        async () =>
          parseJwtSvidInsecure(await sign(thief, { ...good(), exp: nowSec() - 120, nbf: nowSec() + 600 }), [
            AUD,
          ]),
        'JWT_SVID_EXPIRED',
      );
    });
  });
});
