// The time, header and immutability rules of JWT-SVIDs, held to go-spiffe's
// (go-jose's): a minute of clock-skew leeway on exp and nbf, an iat ahead of
// the clock refused, no crit or b64 header, and exp/nbf/iat only as times a
// Date can hold (exp 1e20 passed with an Invalid Date expiresAt, exp -1e20
// threw a bare RangeError). And the dev CA's JWT-SVID lifetime.
import { generateKeyPairSync, sign as nodeSign, type KeyObject } from 'node:crypto';
import { SignJWT, base64url, type JWK, type JWTPayload } from 'jose';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  BundleSet,
  IdentityConfigError,
  JwtBundle,
  JwtSvidError,
  parseJwtSvidInsecure,
  validateJwtSvid,
  type JwtSvid,
  type JwtSvidErrorCode,
} from '@weave/identity';
import { DevCaError, DevCertificateAuthority } from '@weave/identity/dev';

const SUB = 'spiffe://checks.test/caller';
const AUD = 'spiffe://checks.test/api';

interface Signer {
  kid: string;
  key: KeyObject;
  jwk: JWK;
}

function ecSigner(kid: string, namedCurve = 'P-256'): Signer {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve });
  return { kid, key: privateKey, jwk: publicKey.export({ format: 'jwk' }) as JWK };
}

const nowSec = (): number => Math.floor(Date.now() / 1000);
const good = (): JWTPayload => ({ sub: SUB, aud: [AUD], exp: nowSec() + 300, iat: nowSec() });
const enc = (o: unknown): string => base64url.encode(JSON.stringify(o));

/** A token signed with ES256 over exactly `header` and the payload text `payload` (what jose would not write). */
function rawSign(signer: Signer, header: Record<string, unknown>, payload: string): string {
  const input = `${enc(header)}.${base64url.encode(payload)}`;
  const sig = nodeSign('sha256', Buffer.from(input), { key: signer.key, dsaEncoding: 'ieee-p1363' });
  return `${input}.${base64url.encode(sig)}`;
}

/** What `fn` threw (or rejected with), or what it returned. */
async function outcome(fn: () => unknown): Promise<unknown> {
  try {
    return await fn();
  } catch (err) {
    return err;
  }
}

async function expectRefused(fn: () => unknown, code: JwtSvidErrorCode, message?: RegExp): Promise<void> {
  const err = await outcome(fn);
  expect(err).toBeInstanceOf(JwtSvidError);
  expect(err).toMatchObject({ code });
  if (message) expect((err as Error).message).toMatch(message);
}

describe('JWT-SVID checks as go-spiffe makes them', () => {
  let ec: Signer;
  let p384: Signer;
  let bundles: BundleSet;
  const sign = (claims: JWTPayload, header: Record<string, unknown> = {}): Promise<string> =>
    new SignJWT(claims)
      .setProtectedHeader({ alg: 'ES256', kid: ec.kid, typ: 'JWT', ...header } as { alg: string })
      .sign(ec.key);

  beforeAll(() => {
    ec = ecSigner('ec-1');
    p384 = ecSigner('p384-1', 'P-384');
    bundles = BundleSet.of(
      new JwtBundle(
        'checks.test',
        new Map([
          [ec.kid, ec.jwk],
          [p384.kid, p384.jwk],
        ]),
      ),
    );
  });

  describe('exp, nbf and iat a Date cannot hold', () => {
    for (const [name, claims] of [
      ['exp 1e20', { exp: 1e20 }],
      ['exp -1e20', { exp: -1e20 }],
      ['nbf 1e20', { nbf: 1e20 }],
      ['iat 1e20', { iat: 1e20 }],
      ['iat -1e20', { iat: -1e20 }],
    ] as const) {
      it(`${name}: JWT_SVID_MALFORMED from validateJwtSvid and parseJwtSvidInsecure, never a RangeError or an Invalid Date`, async () => {
        const token = await sign({ ...good(), ...claims });
        await expectRefused(
          () => validateJwtSvid(token, bundles, AUD),
          'JWT_SVID_MALFORMED',
          /is not a time/,
        );
        await expectRefused(() => parseJwtSvidInsecure(token, [AUD]), 'JWT_SVID_MALFORMED', /is not a time/);
      });
    }

    it('exp 1e400 (Infinity once parsed): JWT_SVID_MALFORMED', async () => {
      const token = rawSign(
        ec,
        { alg: 'ES256', kid: ec.kid, typ: 'JWT' },
        `{"sub":"${SUB}","aud":"${AUD}","exp":1e400}`,
      );
      await expectRefused(() => validateJwtSvid(token, bundles, AUD), 'JWT_SVID_MALFORMED');
    });

    it('takes the furthest time a Date holds, and a non-integer exp', async () => {
      const far = await validateJwtSvid(await sign({ ...good(), exp: 8_640_000_000_000 }), bundles, AUD);
      expect(far.expiresAt.toISOString()).toBe('+275760-09-13T00:00:00.000Z');
      const frac = await validateJwtSvid(await sign({ ...good(), exp: nowSec() + 60.5 }), bundles, AUD);
      expect(Number.isNaN(frac.expiresAt.getTime())).toBe(false);
    });

    it('an iat that is not a number is malformed, as go-jose finds it', async () => {
      await expectRefused(
        async () => validateJwtSvid(await sign({ ...good(), iat: 'now' as never }), bundles, AUD),
        'JWT_SVID_MALFORMED',
      );
    });
  });

  describe('clock-skew leeway (go-jose DefaultLeeway, 60 s)', () => {
    it('takes a token expired 30 s ago by default, not with leewaySeconds 0, not one expired 90 s ago', async () => {
      const recent = await sign({ ...good(), exp: nowSec() - 30, iat: nowSec() - 330 });
      expect((await validateJwtSvid(recent, bundles, AUD)).id.toString()).toBe(SUB);
      expect(parseJwtSvidInsecure(recent, [AUD]).id.toString()).toBe(SUB);
      await expectRefused(
        () => validateJwtSvid(recent, bundles, AUD, { leewaySeconds: 0 }),
        'JWT_SVID_EXPIRED',
      );
      await expectRefused(
        () => parseJwtSvidInsecure(recent, [AUD], { leewaySeconds: 0 }),
        'JWT_SVID_EXPIRED',
      );
      const old = await sign({ ...good(), exp: nowSec() - 90, iat: nowSec() - 390 });
      await expectRefused(
        () => validateJwtSvid(old, bundles, AUD),
        'JWT_SVID_EXPIRED',
        /clock skew allowed: 60 s/,
      );
      expect((await validateJwtSvid(old, bundles, AUD, { leewaySeconds: 120 })).id.toString()).toBe(SUB);
    });

    it('takes a token valid from 30 s ahead (nbf), not one valid from 90 s ahead', async () => {
      const soon = await sign({ ...good(), nbf: nowSec() + 30 });
      expect((await validateJwtSvid(soon, bundles, AUD)).id.toString()).toBe(SUB);
      await expectRefused(
        () => validateJwtSvid(soon, bundles, AUD, { leewaySeconds: 0 }),
        'JWT_SVID_NOT_YET_VALID',
      );
      await expectRefused(
        async () => validateJwtSvid(await sign({ ...good(), nbf: nowSec() + 90 }), bundles, AUD),
        'JWT_SVID_NOT_YET_VALID',
      );
    });

    it('refuses a token issued in the future beyond the leeway (iat), as go-jose', async () => {
      const ahead = await sign({ ...good(), iat: nowSec() + 300, exp: nowSec() + 600 });
      await expectRefused(
        () => validateJwtSvid(ahead, bundles, AUD),
        'JWT_SVID_NOT_YET_VALID',
        /issued in the future/,
      );
      await expectRefused(() => parseJwtSvidInsecure(ahead, [AUD]), 'JWT_SVID_NOT_YET_VALID');
      const skewed = await sign({ ...good(), iat: nowSec() + 30 });
      expect((await validateJwtSvid(skewed, bundles, AUD)).id.toString()).toBe(SUB);
      await expectRefused(
        () => validateJwtSvid(skewed, bundles, AUD, { leewaySeconds: 0 }),
        'JWT_SVID_NOT_YET_VALID',
      );
    });

    it('the leeway counts from options.now', async () => {
      const token = await sign({ ...good(), exp: nowSec() + 10 });
      const at = new Date(Date.now() + 60_000);
      expect((await validateJwtSvid(token, bundles, AUD, { now: at })).id.toString()).toBe(SUB);
      await expectRefused(
        () => validateJwtSvid(token, bundles, AUD, { now: at, leewaySeconds: 0 }),
        'JWT_SVID_EXPIRED',
      );
    });

    it('refuses a bad leewaySeconds, an Invalid Date now and an unknown option with IdentityConfigError', async () => {
      const token = await sign(good());
      const bad: Array<[Record<string, unknown>, string]> = [
        [{ leewaySeconds: -1 }, 'leewaySeconds: must be a whole number of seconds from 0 to 300, got -1'],
        [{ leewaySeconds: 1.5 }, 'leewaySeconds: must be a whole number of seconds from 0 to 300, got 1.5'],
        [{ leewaySeconds: 301 }, 'leewaySeconds: must be a whole number of seconds from 0 to 300, got 301'],
        [
          { leewaySeconds: Number.NaN },
          'leewaySeconds: must be a whole number of seconds from 0 to 300, got NaN',
        ],
        [
          { leewaySeconds: '60' },
          'leewaySeconds: must be a whole number of seconds from 0 to 300, got string',
        ],
        [{ now: new Date(Number.NaN) }, 'now: must be a valid Date'],
        [{ leeway: 60 }, 'unknown key "leeway"'],
      ];
      for (const [options, message] of bad) {
        for (const [name, call] of [
          ['validateJwtSvid', () => validateJwtSvid(token, bundles, AUD, options as never)],
          ['parseJwtSvidInsecure', () => parseJwtSvidInsecure(token, [AUD], options as never)],
        ] as const) {
          const err = await outcome(call);
          expect(err, `${name} ${JSON.stringify(options)}`).toBeInstanceOf(IdentityConfigError);
          expect((err as Error).message).toBe(`invalid ${name} options: ${message}`);
        }
      }
      for (const leewaySeconds of [0, 300]) {
        expect((await validateJwtSvid(token, bundles, AUD, { leewaySeconds })).id.toString()).toBe(SUB);
      }
    });
  });

  describe('headers', () => {
    it('refuses crit and b64 (JWS extensions JWT-SVIDs do not use), even when the signature verifies', async () => {
      const payload = JSON.stringify(good());
      for (const extra of [{ b64: false, crit: ['b64'] }, { crit: ['exp'], exp: 1 }, { b64: true }]) {
        // RFC 7797 b64 false signs the payload segment as it is, which this is.
        const header = { alg: 'ES256', kid: ec.kid, typ: 'JWT', ...extra };
        await expectRefused(
          () => validateJwtSvid(rawSign(ec, header, payload), bundles, AUD),
          'JWT_SVID_MALFORMED',
          /token header has (crit|b64)/,
        );
      }
    });

    it('says a kid that is not a string is not one, instead of "has no kid"', async () => {
      const token = rawSign(ec, { alg: 'ES256', kid: 7, typ: 'JWT' }, JSON.stringify(good()));
      await expectRefused(
        () => validateJwtSvid(token, bundles, AUD),
        'JWT_SVID_MALFORMED',
        /^token header kid is a number, not a string$/,
      );
    });

    it("says when the alg does not fit the key's type, instead of jose's words", async () => {
      const rsaAlg = rawSign(ec, { alg: 'RS256', kid: ec.kid, typ: 'JWT' }, JSON.stringify(good()));
      await expectRefused(
        () => validateJwtSvid(rsaAlg, bundles, AUD),
        'JWT_SVID_BAD_SIGNATURE',
        /algorithm RS256 does not fit key "ec-1", an EC P-256 key \(RS256 needs RSA\)/,
      );
      const curve = rawSign(p384, { alg: 'ES256', kid: p384.kid, typ: 'JWT' }, JSON.stringify(good()));
      await expectRefused(
        () => validateJwtSvid(curve, bundles, AUD),
        'JWT_SVID_BAD_SIGNATURE',
        /algorithm ES256 does not fit key "p384-1", an EC P-384 key \(ES256 needs EC P-256\)/,
      );
    });
  });

  describe('a JwtSvid is immutable', () => {
    const frozenThrough = (svid: JwtSvid): void => {
      expect(Object.isFrozen(svid.audience)).toBe(true);
      expect(Object.isFrozen(svid.claims)).toBe(true);
      expect(Object.isFrozen(svid.claims.aud)).toBe(true);
      expect(() => (svid.audience as string[]).push('spiffe://checks.test/admin')).toThrow(TypeError);
      expect(() => (svid.claims.aud as string[]).push('spiffe://checks.test/admin')).toThrow(TypeError);
      expect(svid.audience).not.toContain('spiffe://checks.test/admin');
    };

    it('validated, parsed, and with a hint: audience and claims (nested ones too) cannot be changed', async () => {
      const token = await sign({ ...good(), aud: [AUD, 'other'], ctx: { roles: ['reader'] } });
      for (const svid of [
        await validateJwtSvid(token, bundles, AUD),
        parseJwtSvidInsecure(token, [AUD]),
        parseJwtSvidInsecure(token, [AUD]).withHint('h'),
      ]) {
        frozenThrough(svid);
        const ctx = svid.claims.ctx as { roles: string[] };
        expect(Object.isFrozen(ctx)).toBe(true);
        expect(() => ctx.roles.push('admin')).toThrow(TypeError);
      }
    });

    it('issued by the dev CA: its audience is a frozen copy, not the caller’s array', async () => {
      const ca = await DevCertificateAuthority.create({ trustDomain: 'checks.test' });
      const mine = [AUD];
      const svid = await ca.issueJwtSvid(SUB, mine);
      frozenThrough(svid);
      mine.push('changed');
      expect(svid.audience).toEqual([AUD]);
      expect(svid.claims.aud).toEqual([AUD]);
      expect(Object.isFrozen(mine)).toBe(false);
    });

    it('a claim nested 100 000 deep is frozen without overflowing the stack', () => {
      const payload = `{"sub":"${SUB}","aud":"${AUD}","exp":${nowSec() + 300},"n":${'['.repeat(100_000)}${']'.repeat(100_000)}}`;
      const svid = parseJwtSvidInsecure(`${enc({ alg: 'ES256' })}.${base64url.encode(payload)}.x`, [AUD]);
      expect(Object.isFrozen(svid.claims.n)).toBe(true);
    });
  });
});

describe('DevCertificateAuthority.issueJwtSvid lifetime', () => {
  let ca: DevCertificateAuthority;
  beforeAll(async () => {
    ca = await DevCertificateAuthority.create({ trustDomain: 'checks.test' });
  });

  it('a token lives at least ttlSeconds from issue (exp rounded up, not down with iat)', async () => {
    for (let i = 0; i < 20; i++) {
      const before = Date.now();
      const svid = await ca.issueJwtSvid(SUB, AUD, { ttlSeconds: 1 });
      expect(svid.expiresAt.getTime()).toBeGreaterThanOrEqual(before + 1000);
      expect(svid.expiresAt.getTime()).toBeLessThan(before + 2000 + 50);
      const claims = svid.claims as { iat: number; exp: number };
      expect(Number.isInteger(claims.exp)).toBe(true);
      expect(claims.iat * 1000).toBeLessThanOrEqual(before + 50);
      await new Promise((r) => setTimeout(r, 37));
    }
  });

  it('refuses a ttlSeconds that is not a whole number from 1 to 30 days', async () => {
    for (const ttlSeconds of [0.4, 1.5, 0, -1, Number.NaN, 2_592_001, 3.6e13]) {
      const err = await outcome(() => ca.issueJwtSvid(SUB, AUD, { ttlSeconds }));
      expect(err, `ttlSeconds ${ttlSeconds}`).toBeInstanceOf(DevCaError);
      expect(err).toMatchObject({
        code: 'DEV_CA_INVALID_OPTIONS',
        message: `ttlSeconds must be a whole number of seconds from 1 to 2592000, got ${ttlSeconds}`,
      });
    }
    const month = await ca.issueJwtSvid(SUB, AUD, { ttlSeconds: 2_592_000 });
    expect((await validateJwtSvid(month.token, ca.jwtBundle, AUD)).id.toString()).toBe(SUB);
  });
});
