import { createPublicKey, type JsonWebKey as NodeJwk, type KeyObject } from 'node:crypto';
import type { JWK } from 'jose';
import { z } from 'zod';
import { WeaveError } from './errors.js';
import { formatKeyPath, lineCol, scanJson } from './json.js';
import { TrustDomain } from './spiffe-id.js';
import {
  certDer,
  certKeyWeakness,
  certsToPem,
  concatDer,
  keyWeakness,
  parseCertificate,
  parseCertificates,
  sameDer,
  toNodeCert,
  uriSans,
  type x509,
} from './x509-util.js';

/** A bundle could not be parsed or does not fit its trust domain. */
export class BundleError extends WeaveError {
  constructor(
    code:
      | 'BUNDLE_MALFORMED'
      | 'BUNDLE_EMPTY'
      | 'BUNDLE_TRUST_DOMAIN_MISMATCH'
      | 'BUNDLE_WEAK_KEY'
      | 'BUNDLE_FOREIGN_AUTHORITY',
    message: string,
    options?: { cause?: unknown },
  ) {
    super(code, message, options);
  }
}

const toTd = (td: TrustDomain | string): TrustDomain => (typeof td === 'string' ? TrustDomain.parse(td) : td);

/** Anything that can hand out the X.509 authorities of a trust domain. */
export interface X509BundleSource {
  getX509Bundle(trustDomain: TrustDomain): X509Bundle | undefined;
}

/** Anything that can hand out the JWT authorities of a trust domain. */
export interface JwtBundleSource {
  getJwtBundle(trustDomain: TrustDomain): JwtBundle | undefined;
}

/**
 * The trust domain a `spiffe://` URI names (its text up to the first `/`,
 * `?` or `#`, lowercased as a URI's host is compared), or undefined for a URI
 * of another scheme. Not validated: a CA's name only has to differ from the
 * bundle's trust domain to be refused.
 */
function spiffeUriTrustDomain(uri: string): string | undefined {
  return /^spiffe:\/\/([^/?#]*)/i.exec(uri)?.[1]?.toLowerCase();
}

/**
 * Refuses an authority whose key is weak or of a refused kind, as a key that
 * does not parse refuses the bundle: a bundle is taken whole or not at all.
 * Also refuses one whose `spiffe://` URI SAN names a trust domain other than
 * `td`: every root of a bundle vouches for any ID of the bundle's trust
 * domain, so a partner's CA filed under our own domain (a bundle file of two
 * domains concatenated) would mint our IDs. A CA without a SPIFFE URI SAN (an
 * upstream root) names no trust domain and is taken.
 */
function checkAuthority(cert: x509.X509Certificate, td: TrustDomain, what: string): void {
  let weakness: string | undefined;
  let named: string | undefined;
  try {
    weakness = certKeyWeakness(toNodeCert(cert));
    named = uriSans(cert)
      .map(spiffeUriTrustDomain)
      .find((name) => name !== undefined && name !== td.name);
  } catch (err) {
    throw new BundleError('BUNDLE_MALFORMED', `${what}: authority ${cert.subject} cannot be read`, {
      cause: err,
    });
  }
  if (weakness !== undefined)
    throw new BundleError('BUNDLE_WEAK_KEY', `${what}: authority ${cert.subject} has ${weakness}`);
  if (named !== undefined)
    throw new BundleError(
      'BUNDLE_FOREIGN_AUTHORITY',
      `${what}: authority ${cert.subject} is a CA of trust domain ${JSON.stringify(named)}, not of ${td.name}: give each trust domain's CAs as that domain's own (federated) bundle`,
    );
}

/** The X.509 root certificates trusted for one trust domain. Immutable. */
export class X509Bundle implements X509BundleSource {
  readonly trustDomain: TrustDomain;
  readonly authorities: readonly x509.X509Certificate[];

  /**
   * Every way a bundle is made (PEM, DER, the Workload API, a SPIFFE bundle,
   * the dev CA) comes through here, so each authority is checked once, when
   * the bundle is made, never per connection.
   * @throws {BundleError} `BUNDLE_WEAK_KEY` when an authority's key is not RSA of 2048 to
   *   16384 bits with an exponent below 2^31, nor EC on P-256, P-384 or P-521;
   *   `BUNDLE_FOREIGN_AUTHORITY` when an authority carries a `spiffe://` URI SAN
   *   naming another trust domain.
   */
  constructor(trustDomain: TrustDomain | string, authorities: readonly x509.X509Certificate[]) {
    this.trustDomain = toTd(trustDomain);
    for (const a of authorities)
      checkAuthority(a, this.trustDomain, `X.509 bundle of ${this.trustDomain.name}`);
    this.authorities = Object.freeze([...authorities]);
  }

  /**
   * Parses the PEM CERTIFICATE blocks of a bundle file.
   * @throws {BundleError} `BUNDLE_EMPTY` when there is no certificate, `BUNDLE_MALFORMED` when one cannot be read,
   *   `BUNDLE_WEAK_KEY` when one's key is weak, `BUNDLE_FOREIGN_AUTHORITY` when one is a CA of
   *   another trust domain (see the constructor).
   */
  static fromPem(trustDomain: TrustDomain | string, pem: string): X509Bundle {
    return X509Bundle.from(trustDomain, pem);
  }

  /**
   * Parses concatenated DER certificates, as the Workload API sends them.
   * @throws {BundleError} as {@link X509Bundle.fromPem} does.
   */
  static fromDer(trustDomain: TrustDomain | string, der: Uint8Array): X509Bundle {
    return X509Bundle.from(trustDomain, der);
  }

  private static from(trustDomain: TrustDomain | string, input: string | Uint8Array): X509Bundle {
    const td = toTd(trustDomain);
    let certs: x509.X509Certificate[];
    try {
      certs = parseCertificates(input);
    } catch (err) {
      throw new BundleError('BUNDLE_MALFORMED', `X.509 bundle of ${td.name}: ${(err as Error).message}`, {
        cause: err,
      });
    }
    if (certs.length === 0)
      throw new BundleError('BUNDLE_EMPTY', `X.509 bundle of ${td.name} has no certificate`);
    return new X509Bundle(td, certs);
  }

  /** PEM text of all authorities. */
  toPem(): string {
    return certsToPem(this.authorities);
  }

  /** Concatenated DER of all authorities (the Workload API encoding). */
  toDer(): Uint8Array {
    return concatDer(this.authorities);
  }

  /** True when `cert` is one of the authorities (byte-equal). */
  hasAuthority(cert: x509.X509Certificate): boolean {
    return this.authorities.some((a) => sameDer(a, cert));
  }

  /** True when both bundles hold the same trust domain and authorities. */
  equals(other: X509Bundle | undefined): boolean {
    return (
      !!other &&
      other.trustDomain.equals(this.trustDomain) &&
      other.authorities.length === this.authorities.length &&
      this.authorities.every((a, i) => sameDer(a, other.authorities[i]!))
    );
  }

  getX509Bundle(trustDomain: TrustDomain): X509Bundle | undefined {
    return trustDomain.equals(this.trustDomain) ? this : undefined;
  }
}

const jwkSchema = z.looseObject({ kty: z.string(), kid: z.string().optional(), use: z.string().optional() });

/** Key types usable for JWT-SVID signatures (RS*, PS*, ES*). */
const JWT_KTYS = new Set(['EC', 'RSA']);

function importJwk(jwk: JWK, what: string): KeyObject {
  let key: KeyObject;
  try {
    key = createPublicKey({ key: jwk as NodeJwk, format: 'jwk' });
    if (key.type !== 'public') throw new Error('not a public key');
  } catch (err) {
    throw new BundleError('BUNDLE_MALFORMED', `${what}: invalid JWK: ${(err as Error).message}`, {
      cause: err,
    });
  }
  // Refused like an invalid JWK. Keys of other types can verify no JWT-SVID
  // (their algorithms are not allowed) and were never held to this rule.
  const weakness = JWT_KTYS.has(jwk.kty ?? '') ? keyWeakness(key) : undefined;
  if (weakness !== undefined) throw new BundleError('BUNDLE_WEAK_KEY', `${what}: ${weakness}`);
  return key;
}

/** Public members of a JWK: private parts are never kept in a bundle. */
function publicJwk(jwk: JWK): JWK {
  const { kty, crv, x, y, n, e, kid } = jwk;
  const out: JWK = { kty };
  if (crv !== undefined) out.crv = crv;
  if (x !== undefined) out.x = x;
  if (y !== undefined) out.y = y;
  if (n !== undefined) out.n = n;
  if (e !== undefined) out.e = e;
  if (kid !== undefined) out.kid = kid;
  return out;
}

const jwksSchema = z.looseObject({
  keys: z.array(z.unknown()),
  spiffe_sequence: z.number().int().nonnegative().optional(),
  spiffe_refresh_hint: z.number().int().nonnegative().optional(),
});

/**
 * The JWK Set envelope of a bundle document (JSON text or parsed object);
 * `fail` throws. `known` is the value of the text when the caller has
 * already parsed it: the text is then only scanned for repeated keys.
 */
function parseJwksDocument(
  json: unknown,
  fail: (msg: string, cause?: unknown) => never,
  known?: { readonly doc: unknown },
): z.infer<typeof jwksSchema> {
  let doc: unknown = json;
  if (typeof json === 'string') {
    if (known) doc = known.doc;
    else {
      try {
        doc = JSON.parse(json);
      } catch (err) {
        fail('not JSON', err);
      }
    }
    // JSON.parse would keep the last of two "keys" (or two "use" in one key) without a word.
    const dup = scanJson(json);
    if (dup) {
      const { line, col } = lineCol(json, dup.offset);
      fail(
        `the key ${JSON.stringify(dup.key)} appears twice in one object, at ${formatKeyPath(dup.path)} (line ${line}, column ${col})`,
      );
    }
  }
  const parsed = jwksSchema.safeParse(doc);
  if (!parsed.success) return fail(`not a JWK Set: ${parsed.error.issues[0]?.message ?? 'invalid'}`);
  return parsed.data;
}

/** The JWT signing keys trusted for one trust domain, by key ID. Immutable. */
export class JwtBundle implements JwtBundleSource {
  readonly trustDomain: TrustDomain;
  readonly keys: ReadonlyMap<string, JWK>;
  readonly #imported = new Map<string, KeyObject>();

  /**
   * @throws {BundleError} `BUNDLE_MALFORMED` when a key is not a valid public JWK, `BUNDLE_WEAK_KEY`
   *   when an RSA key has fewer than 2048 bits or an EC key is not on P-256, P-384 or P-521.
   */
  constructor(trustDomain: TrustDomain | string, keys: ReadonlyMap<string, JWK> | Record<string, JWK>) {
    this.trustDomain = toTd(trustDomain);
    const entries = keys instanceof Map ? [...keys.entries()] : Object.entries(keys);
    const map = new Map<string, JWK>();
    for (const [kid, jwk] of entries) {
      if (!kid)
        throw new BundleError('BUNDLE_MALFORMED', `JWT bundle of ${this.trustDomain.name}: empty key ID`);
      const pub = { ...publicJwk(jwk), kid };
      this.#imported.set(kid, importJwk(pub, `JWT bundle of ${this.trustDomain.name}, key ${kid}`));
      map.set(kid, Object.freeze(pub));
    }
    this.keys = map;
  }

  /**
   * Parses a JWT bundle: a JWKS document (JSON text or object) as the Workload
   * API's FetchJWTBundles sends it. Its keys carry a `kid` and usually no `use`
   * (go-spiffe's `jwtbundle` format), so a key counts unless it says it is for
   * something else (`use` other than `jwt-svid`). Keys without `kid` are
   * rejected, unknown `kty` ignored. A SPIFFE bundle (federation endpoint, with
   * `use` on every key) goes through {@link SpiffeBundle.parse} instead.
   * @throws {BundleError} `BUNDLE_MALFORMED`, or `BUNDLE_WEAK_KEY` for a weak key (see the constructor).
   */
  static fromJwks(trustDomain: TrustDomain | string, jwks: string | unknown): JwtBundle {
    return readJwtBundle(toTd(trustDomain), jwks);
  }

  /** The JWKS document of this bundle. */
  toJwks(): { keys: JWK[] } {
    return { keys: [...this.keys.values()].map((k) => ({ ...k, use: 'jwt-svid' })) };
  }

  /** @internal the key imported for verification. */
  findKey(kid: string): KeyObject | undefined {
    return this.#imported.get(kid);
  }

  getJwtBundle(trustDomain: TrustDomain): JwtBundle | undefined {
    return trustDomain.equals(this.trustDomain) ? this : undefined;
  }
}

/**
 * @internal {@link JwtBundle.fromJwks} of JWKS `text` whose JSON value `doc`
 * the caller already has: the Workload API client parses a bundle to count its
 * keys before it pays for importing them, and this saves parsing it again. The
 * text is still scanned for a key written twice, which `JSON.parse` hides.
 */
export function jwtBundleFromParsedJwks(trustDomain: TrustDomain, text: string, doc: unknown): JwtBundle {
  return readJwtBundle(trustDomain, text, { doc });
}

function readJwtBundle(td: TrustDomain, jwks: unknown, known?: { readonly doc: unknown }): JwtBundle {
  const fail = (msg: string, cause?: unknown): never => {
    throw new BundleError('BUNDLE_MALFORMED', `JWT bundle of ${td.name}: ${msg}`, { cause });
  };
  const keys = new Map<string, JWK>();
  parseJwksDocument(jwks, fail, known).keys.forEach((raw, i) => {
    const k = jwkSchema.safeParse(raw);
    if (!k.success) return fail(`keys[${i}] is not a JWK`);
    const jwk = k.data as JWK & { use?: string };
    if (!JWT_KTYS.has(jwk.kty ?? '')) return;
    if (jwk.use !== undefined && jwk.use !== 'jwt-svid') return;
    if (!jwk.kid) return fail(`keys[${i}] has no kid`);
    if (keys.has(jwk.kid)) return fail(`keys[${i}]: duplicate kid ${jwk.kid}`);
    keys.set(jwk.kid, jwk);
  });
  return new JwtBundle(td, keys);
}

/**
 * A SPIFFE bundle: the JWK Set a trust domain publishes (bundle endpoint,
 * SPIRE's `bundle show -format spiffe`), holding its X.509 and JWT authorities.
 */
export class SpiffeBundle {
  readonly trustDomain: TrustDomain;
  readonly x509Authorities: readonly x509.X509Certificate[];
  readonly jwtAuthorities: ReadonlyMap<string, JWK>;
  /** `spiffe_sequence`: grows with every change of the bundle. */
  readonly sequence: number | undefined;
  /** `spiffe_refresh_hint` in seconds. */
  readonly refreshHint: number | undefined;

  constructor(
    trustDomain: TrustDomain | string,
    opts: {
      x509Authorities?: readonly x509.X509Certificate[];
      jwtAuthorities?: ReadonlyMap<string, JWK>;
      sequence?: number;
      refreshHint?: number;
    } = {},
  ) {
    this.trustDomain = toTd(trustDomain);
    // Validates the keys once, both kinds by the rules of their own bundles.
    this.x509Authorities = new X509Bundle(this.trustDomain, opts.x509Authorities ?? []).authorities;
    this.jwtAuthorities = new JwtBundle(this.trustDomain, opts.jwtAuthorities ?? new Map()).keys;
    this.sequence = opts.sequence;
    this.refreshHint = opts.refreshHint;
  }

  /**
   * Parses a SPIFFE bundle JWKS (JSON text or parsed object).
   * `x509-svid` entries need exactly one certificate in `x5c` whose key equals
   * the JWK; `jwt-svid` entries need a `kid`. Unknown `use` or `kty` are ignored.
   * @throws {BundleError} `BUNDLE_MALFORMED`, `BUNDLE_WEAK_KEY` when a key of either kind is weak,
   *   or `BUNDLE_FOREIGN_AUTHORITY` when an `x509-svid` certificate is a CA of another trust domain.
   */
  static parse(trustDomain: TrustDomain | string, json: string | unknown): SpiffeBundle {
    const td = toTd(trustDomain);
    const fail = (msg: string, cause?: unknown): never => {
      throw new BundleError('BUNDLE_MALFORMED', `SPIFFE bundle of ${td.name}: ${msg}`, { cause });
    };
    const parsed = parseJwksDocument(json, fail);
    const x509s: x509.X509Certificate[] = [];
    const jwts = new Map<string, JWK>();
    parsed.keys.forEach((raw, i) => {
      const k = jwkSchema.safeParse(raw);
      if (!k.success) return fail(`keys[${i}] is not a JWK`);
      const jwk = k.data as JWK & { use?: string };
      if (!JWT_KTYS.has(jwk.kty ?? '')) return; // unknown or unusable kty: ignored, as the standard asks
      if (jwk.use === 'x509-svid') {
        const x5c = jwk.x5c;
        if (!Array.isArray(x5c) || x5c.length !== 1 || typeof x5c[0] !== 'string')
          return fail(`keys[${i}]: x509-svid entry needs exactly one certificate in x5c`);
        const cert = parseX5c(x5c[0], () => fail(`keys[${i}]: x5c is not a certificate`));
        const certJwk = toNodeCert(cert).publicKey.export({ format: 'jwk' }) as JWK;
        for (const f of ['kty', 'crv', 'x', 'y', 'n', 'e'] as const) {
          if (certJwk[f] !== undefined && jwk[f] !== certJwk[f])
            return fail(`keys[${i}]: JWK does not match the x5c certificate's key`);
        }
        x509s.push(cert);
      } else if (jwk.use === 'jwt-svid') {
        if (!jwk.kid) return fail(`keys[${i}]: jwt-svid entry has no kid`);
        if (jwts.has(jwk.kid)) return fail(`keys[${i}]: duplicate kid ${jwk.kid}`);
        jwts.set(jwk.kid, jwk);
      }
    });
    try {
      return new SpiffeBundle(td, {
        x509Authorities: x509s,
        jwtAuthorities: jwts,
        ...(parsed.spiffe_sequence !== undefined ? { sequence: parsed.spiffe_sequence } : {}),
        ...(parsed.spiffe_refresh_hint !== undefined ? { refreshHint: parsed.spiffe_refresh_hint } : {}),
      });
    } catch (err) {
      if (err instanceof BundleError) throw err;
      return fail((err as Error).message, err);
    }
  }

  /** Builds a SPIFFE bundle from an X.509 and/or JWT bundle of the same trust domain. */
  static fromBundles(
    x509Bundle: X509Bundle | undefined,
    jwtBundle: JwtBundle | undefined,
    opts: { sequence?: number; refreshHint?: number } = {},
  ): SpiffeBundle {
    const td = x509Bundle?.trustDomain ?? jwtBundle?.trustDomain;
    if (!td) throw new BundleError('BUNDLE_EMPTY', 'a SPIFFE bundle needs an X.509 or JWT bundle');
    if (x509Bundle && jwtBundle && !x509Bundle.trustDomain.equals(jwtBundle.trustDomain))
      throw new BundleError(
        'BUNDLE_TRUST_DOMAIN_MISMATCH',
        'X.509 and JWT bundles are of different trust domains',
      );
    return new SpiffeBundle(td, {
      x509Authorities: x509Bundle?.authorities ?? [],
      jwtAuthorities: jwtBundle?.keys ?? new Map(),
      ...opts,
    });
  }

  /** The JWKS document (`JSON.stringify` it to publish). */
  toJSON(): { keys: JWK[]; spiffe_sequence?: number; spiffe_refresh_hint?: number } {
    const keys: JWK[] = [];
    for (const cert of this.x509Authorities) {
      const jwk = toNodeCert(cert).publicKey.export({ format: 'jwk' }) as JWK;
      keys.push({
        ...publicJwk(jwk),
        use: 'x509-svid',
        x5c: [Buffer.from(certDer(cert)).toString('base64')],
      });
    }
    for (const [kid, jwk] of this.jwtAuthorities) keys.push({ ...publicJwk(jwk), kid, use: 'jwt-svid' });
    return {
      keys,
      ...(this.sequence !== undefined ? { spiffe_sequence: this.sequence } : {}),
      ...(this.refreshHint !== undefined ? { spiffe_refresh_hint: this.refreshHint } : {}),
    };
  }

  toX509Bundle(): X509Bundle {
    return new X509Bundle(this.trustDomain, this.x509Authorities);
  }

  toJwtBundle(): JwtBundle {
    return new JwtBundle(this.trustDomain, this.jwtAuthorities);
  }
}

function parseX5c(b64: string, onError: () => never): x509.X509Certificate {
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(b64)) onError();
  try {
    return parseCertificate(new Uint8Array(Buffer.from(b64, 'base64')));
  } catch {
    return onError();
  }
}

/**
 * The trusted bundles of every trust domain we talk to (our own plus
 * federated ones), keyed by trust domain. Mutable; sources read it live.
 */
export class BundleSet implements X509BundleSource, JwtBundleSource {
  readonly #x509 = new Map<string, X509Bundle>();
  readonly #jwt = new Map<string, JwtBundle>();

  /** A set holding the given bundles (a later bundle of the same trust domain wins). */
  static of(...bundles: (X509Bundle | JwtBundle)[]): BundleSet {
    const set = new BundleSet();
    for (const b of bundles) {
      if (b instanceof X509Bundle) set.setX509Bundle(b);
      else set.setJwtBundle(b);
    }
    return set;
  }

  getX509Bundle(trustDomain: TrustDomain): X509Bundle | undefined {
    return this.#x509.get(trustDomain.name);
  }

  getJwtBundle(trustDomain: TrustDomain): JwtBundle | undefined {
    return this.#jwt.get(trustDomain.name);
  }

  setX509Bundle(bundle: X509Bundle): void {
    this.#x509.set(bundle.trustDomain.name, bundle);
  }

  setJwtBundle(bundle: JwtBundle): void {
    this.#jwt.set(bundle.trustDomain.name, bundle);
  }

  /** Removes both bundles of a trust domain. */
  delete(trustDomain: TrustDomain): boolean {
    const a = this.#x509.delete(trustDomain.name);
    const b = this.#jwt.delete(trustDomain.name);
    return a || b;
  }

  /** Every trust domain that has an X.509 or JWT bundle, sorted by name. */
  trustDomains(): TrustDomain[] {
    const names = new Set([...this.#x509.keys(), ...this.#jwt.keys()]);
    return [...names].sort().map((n) => TrustDomain.parse(n));
  }

  /**
   * Every trusted X.509 root of every trust domain, e.g. for a TLS server's `ca`
   * option. Node trusts these equally: still verify the peer with `verifyX509Svid`.
   */
  allX509Authorities(): x509.X509Certificate[] {
    return [...this.#x509.values()].flatMap((b) => [...b.authorities]);
  }

  /** An independent copy (bundles themselves are immutable and shared). */
  clone(): BundleSet {
    const c = new BundleSet();
    for (const b of this.#x509.values()) c.setX509Bundle(b);
    for (const b of this.#jwt.values()) c.setJwtBundle(b);
    return c;
  }
}
