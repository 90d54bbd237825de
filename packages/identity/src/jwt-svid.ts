import { compactVerify, decodeJwt, decodeProtectedHeader, type JWTPayload } from 'jose';
import { z } from 'zod';
import type { JwtBundleSource } from './bundle.js';
import { WeaveError } from './errors.js';
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

const claimsSchema = z.looseObject({
  sub: z.string().optional(),
  aud: z.union([z.string(), z.array(z.string())]).optional(),
  exp: z.number().optional(),
  nbf: z.number().optional(),
});

/** A JWT-SVID whose rules were checked. Immutable. */
export class JwtSvid {
  readonly token: string;
  readonly id: SpiffeId;
  readonly audience: string[];
  readonly expiresAt: Date;
  readonly claims: JWTPayload;
  /** Operator hint from the Workload API (`''` when none). */
  readonly hint: string;

  /** @internal use {@link validateJwtSvid} or {@link parseJwtSvidInsecure}. */
  constructor(
    token: string,
    id: SpiffeId,
    audience: string[],
    expiresAt: Date,
    claims: JWTPayload,
    hint = '',
  ) {
    this.token = token;
    this.id = id;
    this.audience = audience;
    this.expiresAt = expiresAt;
    this.claims = claims;
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
  const kid = typeof header.kid === 'string' ? header.kid : '';
  if (requireKid && kid === '') throw new JwtSvidError('JWT_SVID_MISSING_KID', 'token header has no kid');
  const c = claimsSchema.safeParse(claims);
  if (!c.success) throw new JwtSvidError('JWT_SVID_MALFORMED', 'token claims have invalid types');
  if (!c.data.sub) throw new JwtSvidError('JWT_SVID_MISSING_SUB', 'token has no sub claim');
  let id: SpiffeId;
  try {
    id = SpiffeId.parse(c.data.sub);
  } catch (err) {
    throw new JwtSvidError('JWT_SVID_INVALID_SUB', `sub is not a SPIFFE ID: ${(err as Error).message}`, {
      cause: err,
    });
  }
  return { kid, id, claims };
}

function checkClaims(p: Parsed, token: string, audiences: readonly string[], now: Date): JwtSvid {
  const { claims } = p;
  const aud = claims.aud === undefined ? [] : Array.isArray(claims.aud) ? claims.aud : [claims.aud];
  if (aud.length === 0) throw new JwtSvidError('JWT_SVID_MISSING_AUD', 'token has no aud claim');
  // The audience before the times, as go-spiffe (go-jose) checks them: a token for another
  // service is told so, whether or not it has also expired.
  if (audiences.length > 0 && !audiences.some((a) => aud.includes(a)))
    throw new JwtSvidError(
      'JWT_SVID_AUDIENCE_MISMATCH',
      `token audience ${JSON.stringify(aud)} does not include ${JSON.stringify(audiences.length === 1 ? audiences[0] : audiences)}`,
    );
  if (claims.exp === undefined) throw new JwtSvidError('JWT_SVID_MISSING_EXP', 'token has no exp claim');
  const nowSec = now.getTime() / 1000;
  if (claims.exp <= nowSec)
    throw new JwtSvidError(
      'JWT_SVID_EXPIRED',
      `token expired at ${new Date(claims.exp * 1000).toISOString()}`,
    );
  if (claims.nbf !== undefined && claims.nbf > nowSec)
    throw new JwtSvidError(
      'JWT_SVID_NOT_YET_VALID',
      `token is not valid before ${new Date(claims.nbf * 1000).toISOString()}`,
    );
  return new JwtSvid(token, p.id, aud, new Date(claims.exp * 1000), Object.freeze({ ...claims }));
}

/**
 * Validates a JWT-SVID as go-spiffe does: allowed algorithm, `typ` JWT/JOSE if
 * present, `kid` required, `sub` a SPIFFE ID, key found by `kid` in the bundle
 * of **`sub`'s trust domain**, signature valid, then `aud` contains `audience`,
 * `exp` present and in the future.
 *
 * @throws {JwtSvidError} with the code of the first rule broken.
 */
export async function validateJwtSvid(
  token: string,
  bundles: JwtBundleSource,
  audience: string,
  options: { now?: Date } = {},
): Promise<JwtSvid> {
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
  return checkClaims(p, token, [audience], options.now ?? new Date());
}

/**
 * Parses a JWT-SVID WITHOUT checking its signature (as go-spiffe's
 * `ParseInsecure`), for tokens that came straight from the Workload API.
 * Header, `sub`, `aud` (any of `audience`, when given), and `exp` are checked.
 * Never use it on a token received from a peer.
 *
 * @throws {JwtSvidError}
 */
export function parseJwtSvidInsecure(
  token: string,
  audience: readonly string[],
  options: { now?: Date } = {},
): JwtSvid {
  const p = parseHeaderAndSub(token, false);
  return checkClaims(p, token, audience, options.now ?? new Date());
}
