import { compactVerify, decodeJwt, decodeProtectedHeader, type JWK, type JWTPayload } from 'jose';
import { z } from 'zod';
import type { JwtBundleSource } from './bundle.js';
import { WeaveError } from './errors.js';
import { checkKnownKeys, checkOptions, wholeNumber } from './options.js';
import { SpiffeId } from './spiffe-id.js';

/** Why a JWT-SVID was rejected. */
export type JwtSvidErrorCode =
  | 'JWT_SVID_MALFORMED'
  | 'JWT_SVID_BAD_ALG'
  | 'JWT_SVID_BAD_TYP'
  | 'JWT_SVID_MISSING_KID'
  | 'JWT_SVID_MISSING_SUB'
  | 'JWT_SVID_INVALID_SUB'
  | 'JWT_SVID_MISSING_AUD'
  | 'JWT_SVID_MISSING_EXP'
  | 'JWT_SVID_EXPIRED'
  | 'JWT_SVID_NOT_YET_VALID'
  | 'JWT_SVID_AUDIENCE_MISMATCH'
  | 'JWT_SVID_UNKNOWN_TRUST_DOMAIN'
  | 'JWT_SVID_UNKNOWN_KEY'
  | 'JWT_SVID_BAD_SIGNATURE';

/** A JWT-SVID broke a SPIFFE rule or did not verify. */
export class JwtSvidError extends WeaveError {
  declare readonly code: JwtSvidErrorCode;
  constructor(code: JwtSvidErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}

/** The algorithms the JWT-SVID standard allows; EdDSA, HS* and `none` are not among them. */
export const JWT_SVID_ALGORITHMS = Object.freeze([
  'RS256',
  'RS384',
  'RS512',
  'ES256',
  'ES384',
  'ES512',
  'PS256',
  'PS384',
  'PS512',
] as const);
const ALGS: ReadonlySet<string> = new Set(JWT_SVID_ALGORITHMS);

/**
 * The clock skew {@link validateJwtSvid} allows on `exp`, `nbf` and `iat` by
 * default, in seconds: go-jose's `DefaultLeeway`, which go-spiffe validates with.
 */
export const JWT_SVID_DEFAULT_LEEWAY_SECONDS = 60;

/**
 * The largest clock-skew leeway taken, in seconds. More would accept a
 * SPIRE-default token (5 min) for twice its lifetime.
 */
const JWT_SVID_MAX_LEEWAY_SECONDS = 300;

/**
 * The furthest a time claim may be from 1970 in seconds: the range of a JS
 * `Date` (±8.64e15 ms). Beyond it `expiresAt` was an Invalid Date, the
 * checks compared against it wrongly, and `toISOString` threw a RangeError.
 */
const MAX_NUMERIC_DATE = 8_640_000_000_000;

/** @internal The zod schema of a `leewaySeconds` option (also {@link JwtSource}'s). */
export const leewaySecondsOption = wholeNumber(
  0,
  JWT_SVID_MAX_LEEWAY_SECONDS,
  `a whole number of seconds from 0 to ${JWT_SVID_MAX_LEEWAY_SECONDS}`,
);

/** Options of {@link validateJwtSvid} and {@link parseJwtSvidInsecure}. */
export interface JwtSvidCheckOptions {
  /** The time `exp`, `nbf` and `iat` are checked at (a valid Date). Default: the clock. */
  readonly now?: Date;
  /**
   * The clock skew allowed between the issuer and this process, as go-jose
   * allows it: a token is taken until `leewaySeconds` after its `exp`, from
   * `leewaySeconds` before its `nbf`, and refused when its `iat` is more
   * than `leewaySeconds` ahead. A whole number of seconds from 0 to 300.
   * Default 60 ({@link JWT_SVID_DEFAULT_LEEWAY_SECONDS}, go-spiffe's).
   */
  readonly leewaySeconds?: number;
}

const CHECK_OPTION_KEYS = { now: true, leewaySeconds: true } satisfies Record<
  keyof JwtSvidCheckOptions,
  true
>;

const CheckOptionsSchema = z.object({
  // z.date() refuses an Invalid Date, against which every time check would pass.
  now: z.date({ error: 'must be a valid Date' }).optional(),
  leewaySeconds: leewaySecondsOption.default(JWT_SVID_DEFAULT_LEEWAY_SECONDS),
});

interface CheckOptions {
  now: Date | undefined;
  leewaySeconds: number;
}

const DEFAULT_CHECK: CheckOptions = { now: undefined, leewaySeconds: JWT_SVID_DEFAULT_LEEWAY_SECONDS };

function checkOptionsOf(owner: string, options: JwtSvidCheckOptions): CheckOptions {
  // First: a misspelt `now` or `leewaySeconds` would otherwise be dropped and its default used.
  checkKnownKeys(owner, options, CHECK_OPTION_KEYS);
  // The common call passes none: no zod on that path (validation can be per request).
  if (options.now === undefined && options.leewaySeconds === undefined) return DEFAULT_CHECK;
  const o = checkOptions(owner, CheckOptionsSchema, {
    now: options.now,
    leewaySeconds: options.leewaySeconds,
  });
  return { now: o.now, leewaySeconds: o.leewaySeconds };
}

const claimsSchema = z.looseObject({
  sub: z.string().optional(),
  aud: z.union([z.string(), z.array(z.string())]).optional(),
  exp: z.number().optional(),
  nbf: z.number().optional(),
  iat: z.number().optional(),
});

/**
 * Freezes `value` and every object and array in it, without recursion (a
 * claim nested 200 000 deep must not overflow the stack). Stops at objects
 * already frozen: this module freezes its own values whole.
 */
function deepFreeze<T>(value: T): T {
  const stack: unknown[] = [value];
  while (stack.length > 0) {
    const v = stack.pop();
    if (typeof v !== 'object' || v === null || Object.isFrozen(v)) continue;
    Object.freeze(v);
    for (const child of Object.values(v)) stack.push(child);
  }
  return value;
}

/**
 * A JWT-SVID whose rules were checked. Immutable: `audience` and `claims`
 * (with every object and array in them) are frozen, so one holder (e.g. a
 * caller of {@link JwtSource.fetchJwtSvid}, which hands the same object to
 * every caller) cannot change what another reads.
 */
export class JwtSvid {
  readonly token: string;
  readonly id: SpiffeId;
  readonly audience: readonly string[];
  readonly expiresAt: Date;
  readonly claims: Readonly<JWTPayload>;
  /** Operator hint from the Workload API (`''` when none). */
  readonly hint: string;

  /** @internal use {@link validateJwtSvid} or {@link parseJwtSvidInsecure}. */
  constructor(
    token: string,
    id: SpiffeId,
    audience: readonly string[],
    expiresAt: Date,
    claims: JWTPayload,
    hint = '',
  ) {
    this.token = token;
    this.id = id;
    // Copies: the caller's arrays and objects stay the caller's, and stay writable.
    this.audience = Object.isFrozen(audience) ? audience : Object.freeze([...audience]);
    this.expiresAt = expiresAt;
    this.claims = Object.isFrozen(claims) ? claims : deepFreeze(structuredClone(claims));
    this.hint = hint;
    Object.freeze(this);
  }

  /** Same SVID with an operator hint attached (the Workload API client uses this). */
  withHint(hint: string): JwtSvid {
    return new JwtSvid(this.token, this.id, this.audience, this.expiresAt, this.claims, hint);
  }

  /** The compact token, e.g. for `Authorization: Bearer …`. */
  toString(): string {
    return this.token;
  }
}

interface Parsed {
  kid: string;
  alg: string;
  id: SpiffeId;
  claims: JWTPayload;
}

function parseHeaderAndSub(token: string, requireKid: boolean): Parsed {
  if (typeof token !== 'string' || token.split('.').length !== 3)
    throw new JwtSvidError('JWT_SVID_MALFORMED', 'token is not a compact JWS');
  let header: ReturnType<typeof decodeProtectedHeader>;
  let claims: JWTPayload;
  try {
    header = decodeProtectedHeader(token);
    claims = decodeJwt(token);
  } catch (err) {
    throw new JwtSvidError('JWT_SVID_MALFORMED', `token cannot be decoded: ${(err as Error).message}`, {
      cause: err,
    });
  }
  if (typeof header.alg !== 'string' || !ALGS.has(header.alg))
    throw new JwtSvidError(
      'JWT_SVID_BAD_ALG',
      `algorithm ${JSON.stringify(header.alg)} is not allowed for JWT-SVIDs`,
    );
  if (header.typ !== undefined && header.typ !== 'JWT' && header.typ !== 'JOSE')
    throw new JwtSvidError('JWT_SVID_BAD_TYP', `typ ${JSON.stringify(header.typ)} is not JWT or JOSE`);
  // JWT-SVIDs use no JWS extension (JWT-SVID §2), and go-jose refuses them: with
  // b64 false (RFC 7797) the signed payload is not the one decoded for the claims.
  for (const name of ['crit', 'b64'] as const) {
    if (Object.hasOwn(header, name))
      throw new JwtSvidError(
        'JWT_SVID_MALFORMED',
        `token header has ${name}: JWT-SVIDs use no JWS extensions`,
      );
  }
  if (header.kid !== undefined && typeof header.kid !== 'string')
    throw new JwtSvidError('JWT_SVID_MALFORMED', `token header kid is a ${typeOf(header.kid)}, not a string`);
  const kid = header.kid ?? '';
  if (requireKid && kid === '') throw new JwtSvidError('JWT_SVID_MISSING_KID', 'token header has no kid');
  const c = claimsSchema.safeParse(claims);
  if (!c.success) throw new JwtSvidError('JWT_SVID_MALFORMED', 'token claims have invalid types');
  for (const name of ['exp', 'nbf', 'iat'] as const) {
    const v = c.data[name];
    if (v !== undefined && !(Math.abs(v) <= MAX_NUMERIC_DATE))
      throw new JwtSvidError(
        'JWT_SVID_MALFORMED',
        `token ${name} ${v} is not a time: a NumericDate is at most ${MAX_NUMERIC_DATE} seconds from 1970`,
      );
  }
  if (!c.data.sub) throw new JwtSvidError('JWT_SVID_MISSING_SUB', 'token has no sub claim');
  let id: SpiffeId;
  try {
    id = SpiffeId.parse(c.data.sub);
  } catch (err) {
    throw new JwtSvidError('JWT_SVID_INVALID_SUB', `sub is not a SPIFFE ID: ${(err as Error).message}`, {
      cause: err,
    });
  }
  return { kid, alg: header.alg, id, claims };
}

/** `null`, `array` or the `typeof` of `v`, for a message. */
const typeOf = (v: unknown): string => (v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v);

const iso = (seconds: number): string => new Date(seconds * 1000).toISOString();

function checkClaims(p: Parsed, token: string, audiences: readonly string[], o: CheckOptions): JwtSvid {
  // Frozen in place (decodeJwt made them): the JwtSvid then keeps them without a copy.
  const claims = deepFreeze(p.claims);
  const aud: readonly string[] =
    claims.aud === undefined ? [] : Array.isArray(claims.aud) ? claims.aud : Object.freeze([claims.aud]);
  if (aud.length === 0) throw new JwtSvidError('JWT_SVID_MISSING_AUD', 'token has no aud claim');
  // The audience before the times, as go-spiffe (go-jose) checks them: a token for another
  // service is told so, whether or not it has also expired.
  if (audiences.length > 0 && !audiences.some((a) => aud.includes(a)))
    throw new JwtSvidError(
      'JWT_SVID_AUDIENCE_MISMATCH',
      `token audience ${JSON.stringify(aud)} does not include ${JSON.stringify(audiences.length === 1 ? audiences[0] : audiences)}`,
    );
  if (claims.exp === undefined) throw new JwtSvidError('JWT_SVID_MISSING_EXP', 'token has no exp claim');
  const leeway = o.leewaySeconds;
  const nowSec = (o.now ?? new Date()).getTime() / 1000;
  const allowing = leeway > 0 ? ` (clock skew allowed: ${leeway} s)` : '';
  // go-jose's checks: expired once now - leeway is past exp (RFC 7519: at exp
  // itself it has expired), not valid while now + leeway is before nbf, and an
  // iat ahead of now + leeway is refused (a misconfigured issuer, not to be trusted).
  if (claims.exp <= nowSec - leeway)
    throw new JwtSvidError('JWT_SVID_EXPIRED', `token expired at ${iso(claims.exp)}${allowing}`);
  if (claims.nbf !== undefined && claims.nbf > nowSec + leeway)
    throw new JwtSvidError(
      'JWT_SVID_NOT_YET_VALID',
      `token is not valid before ${iso(claims.nbf)}${allowing}`,
    );
  if (claims.iat !== undefined && claims.iat > nowSec + leeway)
    throw new JwtSvidError(
      'JWT_SVID_NOT_YET_VALID',
      `token was issued in the future, at ${iso(claims.iat)}${allowing}`,
    );
  return new JwtSvid(token, p.id, aud, new Date(claims.exp * 1000), claims);
}

/** The key type and curve an allowed `alg` signs with. */
function keyFor(alg: string): { kty: string; crv?: string } {
  if (alg.startsWith('ES')) return { kty: 'EC', crv: { ES256: 'P-256', ES384: 'P-384' }[alg] ?? 'P-521' };
  return { kty: 'RSA' };
}

/**
 * Why `alg` cannot be verified with `jwk`, or undefined when it can: said in
 * the token's terms, not jose's ("Invalid or unsupported JWK alg").
 */
function algMismatch(alg: string, jwk: JWK | undefined, kid: string): string | undefined {
  if (!jwk) return undefined;
  const want = keyFor(alg);
  if (jwk.kty === want.kty && (want.crv === undefined || jwk.crv === want.crv)) return undefined;
  const have = jwk.kty === 'EC' || jwk.kty === 'OKP' ? `${jwk.kty} ${jwk.crv}` : String(jwk.kty);
  return `algorithm ${alg} does not fit key ${JSON.stringify(kid)}, an ${have} key (${alg} needs ${want.kty}${want.crv ? ` ${want.crv}` : ''})`;
}

/**
 * Validates a JWT-SVID as go-spiffe does: allowed algorithm, `typ` JWT/JOSE if
 * present, no `crit` or `b64` header, `kid` a string and required, `sub` a
 * SPIFFE ID, key found by `kid` in the bundle of **`sub`'s trust domain**,
 * `alg` fitting that key, signature valid, then `aud` contains `audience`,
 * `exp` present and not past, `nbf` not ahead and `iat` not ahead, each
 * allowing `options.leewaySeconds` of clock skew (default 60 s, as go-jose).
 * `exp`, `nbf` and `iat` must be numbers a `Date` can hold (else
 * `JWT_SVID_MALFORMED`).
 *
 * @throws {JwtSvidError} with the code of the first rule broken.
 * @throws {IdentityConfigError} when `options` has an unknown key, `now` is
 *   not a valid Date or `leewaySeconds` is not a whole number from 0 to 300.
 */
export async function validateJwtSvid(
  token: string,
  bundles: JwtBundleSource,
  audience: string,
  options: JwtSvidCheckOptions = {},
): Promise<JwtSvid> {
  const o = checkOptionsOf('validateJwtSvid', options);
  if (typeof audience !== 'string' || audience === '')
    throw new JwtSvidError('JWT_SVID_AUDIENCE_MISMATCH', 'an expected audience is required');
  const p = parseHeaderAndSub(token, true);
  const bundle = bundles.getJwtBundle(p.id.trustDomain);
  if (!bundle)
    throw new JwtSvidError(
      'JWT_SVID_UNKNOWN_TRUST_DOMAIN',
      `no JWT bundle for trust domain ${p.id.trustDomain.name}`,
    );
  const key = bundle.findKey(p.kid);
  if (!key)
    throw new JwtSvidError(
      'JWT_SVID_UNKNOWN_KEY',
      `no key ${JSON.stringify(p.kid)} in the JWT bundle of ${p.id.trustDomain.name}`,
    );
  const mismatch = algMismatch(p.alg, bundle.keys.get(p.kid), p.kid);
  if (mismatch)
    throw new JwtSvidError('JWT_SVID_BAD_SIGNATURE', `token signature does not verify: ${mismatch}`);
  try {
    await compactVerify(token, key, { algorithms: [...JWT_SVID_ALGORITHMS] });
  } catch (err) {
    throw new JwtSvidError(
      'JWT_SVID_BAD_SIGNATURE',
      `token signature does not verify: ${(err as Error).message}`,
      {
        cause: err,
      },
    );
  }
  return checkClaims(p, token, [audience], o);
}

/**
 * Parses a JWT-SVID WITHOUT checking its signature (as go-spiffe's
 * `ParseInsecure`), for tokens that came straight from the Workload API.
 * Header, `sub`, `aud` (any of `audience`, when given), `exp`, `nbf` and
 * `iat` are checked as {@link validateJwtSvid} checks them, with the same
 * `options`. Never use it on a token received from a peer.
 *
 * @throws {JwtSvidError}
 * @throws {IdentityConfigError} for bad `options`, as {@link validateJwtSvid}.
 */
export function parseJwtSvidInsecure(
  token: string,
  audience: readonly string[],
  options: JwtSvidCheckOptions = {},
): JwtSvid {
  const o = checkOptionsOf('parseJwtSvidInsecure', options);
  const p = parseHeaderAndSub(token, false);
  return checkClaims(p, token, audience, o);
}
