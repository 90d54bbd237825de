import { createHash, KeyObject, randomBytes, webcrypto } from 'node:crypto';
import { mkdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { calculateJwkThumbprint, SignJWT, type JWK } from 'jose';
import { JwtBundle, SpiffeBundle, X509Bundle } from './bundle.js';
import { WeaveError } from './errors.js';
import { JwtSvid } from './jwt-svid.js';
import { unknownKeysRefusal } from './options.js';
import { SpiffeId, TrustDomain } from './spiffe-id.js';
import { X509Svid } from './x509-svid.js';
import { certDer, isCa, parseCertificates, toNodeCert, uriSans, x509 } from './x509-util.js';

const subtle = webcrypto.subtle;
const EC = { name: 'ECDSA', namedCurve: 'P-256' } as const;
const SIGN = { name: 'ECDSA', hash: 'SHA-256' } as const;

/** The dev CA refused a request (wrong trust domain, bad TTL, unreadable state dir). */
export class DevCaError extends WeaveError {
  constructor(
    code: 'DEV_CA_WRONG_TRUST_DOMAIN' | 'DEV_CA_INVALID_OPTIONS' | 'DEV_CA_STATE_INVALID',
    message: string,
    options?: { cause?: unknown },
  ) {
    super(code, message, options);
  }
}

/** A positive, non-zero 128-bit serial number (RFC 5280 allows up to 20 octets). */
function randomSerial(): string {
  const b = randomBytes(16);
  b[0] = (b[0]! & 0x7f) | 0x40;
  return b.toString('hex');
}

async function pkcs8Pem(key: webcrypto.CryptoKey): Promise<string> {
  return KeyObject.from(key).export({ format: 'pem', type: 'pkcs8' }).toString();
}

async function importSigningKey(pem: string): Promise<webcrypto.CryptoKeyPair> {
  const der = Buffer.from(pem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, ''), 'base64');
  const privateKey = await subtle.importKey('pkcs8', der, EC, true, ['sign']);
  const jwk = await subtle.exportKey('jwk', privateKey);
  const publicKey = await subtle.importKey(
    'jwk',
    { kty: jwk.kty, crv: jwk.crv, x: jwk.x, y: jwk.y } as webcrypto.JsonWebKey,
    EC,
    true,
    ['verify'],
  );
  return { privateKey, publicKey };
}

/** RFC 5280 §4.2.1.2 method 1 (SHA-1 of the public key bits), hashed by node:crypto: @peculiar/x509's is slower. */
async function subjectKeyId(key: webcrypto.CryptoKey): Promise<x509.SubjectKeyIdentifierExtension> {
  const raw = Buffer.from(await subtle.exportKey('raw', key));
  return new x509.SubjectKeyIdentifierExtension(createHash('sha1').update(raw).digest('hex'));
}

const LOCK_WAIT_MS = 15_000;
const STALE_LOCK_MS = 30_000;

/**
 * The longest lifetime of a development JWT-SVID (30 days), in seconds: the
 * bound of `issueJwtSvid`, of the dev Workload API server's
 * `jwtSvidTtlSeconds` and of `weave dev --jwt-ttl`. A longer one gave tokens
 * whose `exp` no JS Date holds, which every validator refuses.
 */
export const JWT_SVID_MAX_TTL_SECONDS = 30 * 24 * 3600;

function checkTtl(ttl: number | undefined, what: string): void {
  if (ttl !== undefined && (!Number.isFinite(ttl) || ttl <= 0))
    throw new DevCaError('DEV_CA_INVALID_OPTIONS', `${what} must be a positive number of seconds`);
}

const OPTION_KEYS = { trustDomain: true, dir: true, ttlSeconds: true } satisfies Record<
  keyof Parameters<typeof DevCertificateAuthority.create>[0],
  true
>;

/** Every option of {@link DevCertificateAuthority.issueX509Svid}. */
const X509_SVID_OPTION_KEYS = { ttlSeconds: true, notBefore: true, notAfter: true } satisfies Record<
  keyof NonNullable<Parameters<DevCertificateAuthority['issueX509Svid']>[1]>,
  true
>;

/** Every option of {@link DevCertificateAuthority.issueJwtSvid}. */
const JWT_SVID_OPTION_KEYS = { ttlSeconds: true } satisfies Record<
  keyof NonNullable<Parameters<DevCertificateAuthority['issueJwtSvid']>[2]>,
  true
>;

/**
 * Refuses the keys of `opts` that `owner` does not know, with the CA's own
 * error (as {@link DevCertificateAuthority.create}): a misspelt `ttlSeconds`
 * (`{ ttl: 60 }`) would otherwise issue with the default lifetime, silently.
 */
function checkIssueKeys(owner: string, opts: unknown, known: Readonly<Record<string, true>>): void {
  const unknown = unknownKeysRefusal(opts, known);
  if (unknown !== undefined)
    throw new DevCaError(
      'DEV_CA_INVALID_OPTIONS',
      `invalid DevCertificateAuthority.${owner} options: ${unknown}`,
    );
}

interface CaState {
  keys: webcrypto.CryptoKeyPair;
  cert: x509.X509Certificate;
  jwtKeys: webcrypto.CryptoKeyPair;
}

/**
 * A development certificate authority for one trust domain. It issues exactly
 * what SPIRE issues (ECDSA P-256 SVIDs, one URI SAN, `cA=false`, keyUsage
 * digitalSignature+keyEncipherment+keyAgreement, EKU serverAuth+clientAuth,
 * ES256 JWT-SVIDs with `kid`), so everything built on it runs unchanged
 * against SPIRE. Never use it in production.
 */
export class DevCertificateAuthority {
  readonly trustDomain: TrustDomain;
  readonly certificate: x509.X509Certificate;
  readonly #keys: webcrypto.CryptoKeyPair;
  readonly #jwtPrivate: KeyObject;
  readonly #kid: string;
  readonly #x509Bundle: X509Bundle;
  readonly #jwtBundle: JwtBundle;
  #aki: Promise<x509.AuthorityKeyIdentifierExtension> | undefined;

  private constructor(td: TrustDomain, state: CaState, jwtKid: string, jwtPublic: JWK) {
    this.trustDomain = td;
    this.certificate = state.cert;
    this.#keys = state.keys;
    this.#jwtPrivate = KeyObject.from(state.jwtKeys.privateKey);
    this.#kid = jwtKid;
    this.#x509Bundle = new X509Bundle(td, [state.cert]);
    this.#jwtBundle = new JwtBundle(td, new Map([[jwtKid, jwtPublic]]));
  }

  /**
   * Creates a CA, or reloads the one persisted in `dir` (`ca-key.pem`,
   * `ca-cert.pem`, `jwt-key.pem`). A persisted CA that expired, or expires
   * within the hour, is replaced by a new one.
   *
   * @throws {DevCaError} `DEV_CA_INVALID_OPTIONS` on bad or unknown options; on a persisted CA of another trust domain.
   */
  static async create(opts: {
    trustDomain: string | TrustDomain;
    dir?: string;
    ttlSeconds?: number;
  }): Promise<DevCertificateAuthority> {
    // A misspelt `dir` would otherwise give a new CA on every run, nothing persisted.
    const unknown = unknownKeysRefusal(opts, OPTION_KEYS);
    if (unknown !== undefined)
      throw new DevCaError('DEV_CA_INVALID_OPTIONS', `invalid DevCertificateAuthority options: ${unknown}`);
    const td = typeof opts.trustDomain === 'string' ? TrustDomain.parse(opts.trustDomain) : opts.trustDomain;
    checkTtl(opts.ttlSeconds, 'ttlSeconds');
    const ttl = opts.ttlSeconds ?? 24 * 3600;
    const state = opts.dir
      ? await DevCertificateAuthority.loadOrCreate(opts.dir, td, ttl)
      : await DevCertificateAuthority.generate(td, ttl);
    const pubJwk = (await subtle.exportKey('jwk', state.jwtKeys.publicKey)) as JWK;
    const jwtPublic: JWK = { kty: pubJwk.kty!, crv: pubJwk.crv!, x: pubJwk.x!, y: pubJwk.y! };
    const kid = await calculateJwkThumbprint(jwtPublic);
    return new DevCertificateAuthority(td, state, kid, jwtPublic);
  }

  /**
   * Several processes may start on one `dir` at once (the demo does): a lock
   * directory makes exactly one of them create the CA while the others wait
   * for it and load it.
   */
  private static async loadOrCreate(dir: string, td: TrustDomain, ttl: number): Promise<CaState> {
    const tryLoad = async (): Promise<CaState | undefined> => {
      try {
        return await DevCertificateAuthority.load(dir, td);
      } catch (err) {
        // Half-written by another process: wait for the lock holder instead.
        if (err instanceof DevCaError && err.code === 'DEV_CA_STATE_INVALID') return undefined;
        throw err;
      }
    };
    const existing = await tryLoad();
    if (existing) return existing;
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const lock = join(dir, '.lock');
    const deadline = Date.now() + LOCK_WAIT_MS;
    for (;;) {
      try {
        await mkdir(lock);
        break;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST')
          throw new DevCaError('DEV_CA_STATE_INVALID', `cannot lock ${dir}`, { cause: err });
      }
      const st = await stat(lock).catch(() => undefined);
      if (st && Date.now() - st.mtimeMs > STALE_LOCK_MS) {
        // Left behind by a process that died while creating.
        await rm(lock, { recursive: true, force: true });
        continue;
      }
      if (Date.now() > deadline)
        throw new DevCaError(
          'DEV_CA_STATE_INVALID',
          `timed out waiting for another process to create the CA in ${dir}`,
        );
      await new Promise((r) => setTimeout(r, 50));
      const loaded = await tryLoad();
      if (loaded) return loaded;
    }
    try {
      // Under the lock an invalid state is real, not a write in progress.
      const again = await DevCertificateAuthority.load(dir, td);
      if (again) return again;
      const state = await DevCertificateAuthority.generate(td, ttl);
      await DevCertificateAuthority.save(dir, state);
      return state;
    } finally {
      await rm(lock, { recursive: true, force: true });
    }
  }

  private static async generate(td: TrustDomain, ttlSeconds: number): Promise<CaState> {
    const keys = (await subtle.generateKey(EC, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
    const jwtKeys = (await subtle.generateKey(EC, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
    const now = Date.now();
    const cert = await x509.X509CertificateGenerator.createSelfSigned({
      serialNumber: randomSerial(),
      name: `C=US, O=Weave Dev CA, CN=${td.name}`,
      notBefore: new Date(now - 10_000),
      notAfter: new Date(now + ttlSeconds * 1000),
      signingAlgorithm: SIGN,
      keys: keys,
      extensions: [
        new x509.BasicConstraintsExtension(true, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
        new x509.SubjectAlternativeNameExtension([{ type: 'url', value: td.idString }]),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      ],
    });
    return { keys, cert, jwtKeys };
  }

  private static async load(dir: string, td: TrustDomain): Promise<CaState | undefined> {
    let keyPem: string, certPem: string, jwtPem: string;
    try {
      [keyPem, certPem, jwtPem] = await Promise.all([
        readFile(join(dir, 'ca-key.pem'), 'utf8'),
        readFile(join(dir, 'ca-cert.pem'), 'utf8'),
        readFile(join(dir, 'jwt-key.pem'), 'utf8'),
      ]);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw new DevCaError('DEV_CA_STATE_INVALID', `cannot read dev CA state in ${dir}`, { cause: err });
    }
    try {
      const cert = parseCertificates(certPem)[0];
      if (!cert) throw new Error('ca-cert.pem holds no certificate');
      const sans = uriSans(cert);
      if (sans.length !== 1 || sans[0] !== td.idString || !isCa(cert)) {
        throw new DevCaError(
          'DEV_CA_WRONG_TRUST_DOMAIN',
          `dev CA in ${dir} is for ${sans.join(', ') || 'no trust domain'}, not ${td.idString}: use another state directory, or delete this one to start a new CA`,
        );
      }
      const keys = await importSigningKey(keyPem);
      if (!toNodeCert(cert).checkPrivateKey(KeyObject.from(keys.privateKey)))
        throw new Error('ca-key.pem does not match ca-cert.pem');
      if (cert.notAfter.getTime() - Date.now() < 3600_000) return undefined;
      return { keys, cert, jwtKeys: await importSigningKey(jwtPem) };
    } catch (err) {
      if (err instanceof DevCaError) throw err;
      throw new DevCaError(
        'DEV_CA_STATE_INVALID',
        `dev CA state in ${dir} is invalid: ${(err as Error).message}`,
        {
          cause: err,
        },
      );
    }
  }

  private static async save(dir: string, state: CaState): Promise<void> {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    // Each file is written whole then renamed, so a reader never sees half a file.
    const put = async (name: string, text: string, mode: number): Promise<void> => {
      const tmp = join(dir, `.${name}.${process.pid}.${randomBytes(4).toString('hex')}`);
      await writeFile(tmp, text, { mode });
      await rename(tmp, join(dir, name));
    };
    await put('ca-key.pem', await pkcs8Pem(state.keys.privateKey), 0o600);
    await put('jwt-key.pem', await pkcs8Pem(state.jwtKeys.privateKey), 0o600);
    await put('ca-cert.pem', state.cert.toString('pem') + '\n', 0o644);
  }

  /** The CA certificate as this trust domain's X.509 bundle. */
  get x509Bundle(): X509Bundle {
    return this.#x509Bundle;
  }

  /** The JWT signing key as this trust domain's JWT bundle. */
  get jwtBundle(): JwtBundle {
    return this.#jwtBundle;
  }

  /** Both authorities as a SPIFFE bundle (JWKS) document. */
  get spiffeBundle(): SpiffeBundle {
    return SpiffeBundle.fromBundles(this.#x509Bundle, this.#jwtBundle, { sequence: 1, refreshHint: 300 });
  }

  private toId(id: SpiffeId | string): SpiffeId {
    const sid = typeof id === 'string' ? SpiffeId.parse(id) : id;
    if (!sid.isMemberOf(this.trustDomain))
      throw new DevCaError(
        'DEV_CA_WRONG_TRUST_DOMAIN',
        `${sid.toString()} is not in trust domain ${this.trustDomain.name} of this CA`,
      );
    return sid;
  }

  /**
   * Issues an X.509-SVID. `notBefore`/`notAfter` override the validity (tests
   * use them for expired or not-yet-valid SVIDs); otherwise it is valid from
   * 10 s ago for `ttlSeconds` (default 3600), capped at the CA's expiry.
   *
   * @throws {DevCaError} for an ID of another trust domain, a bad TTL, or an
   *   unknown key in `opts` (`DEV_CA_INVALID_OPTIONS`).
   */
  async issueX509Svid(
    id: SpiffeId | string,
    opts: { ttlSeconds?: number; notBefore?: Date; notAfter?: Date } = {},
  ): Promise<X509Svid> {
    checkIssueKeys('issueX509Svid', opts, X509_SVID_OPTION_KEYS);
    const sid = this.toId(id);
    if (sid.path === '')
      throw new DevCaError('DEV_CA_INVALID_OPTIONS', 'an X.509-SVID needs a SPIFFE ID with a path');
    checkTtl(opts.ttlSeconds, 'ttlSeconds');
    const now = Date.now();
    const notBefore = opts.notBefore ?? new Date(now - 10_000);
    let notAfter = opts.notAfter ?? new Date(now + (opts.ttlSeconds ?? 3600) * 1000);
    if (notAfter > this.certificate.notAfter) notAfter = this.certificate.notAfter;
    const keys = (await subtle.generateKey(EC, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: randomSerial(),
      subject: 'C=US, O=SPIRE',
      issuer: this.certificate.subjectName,
      notBefore,
      notAfter,
      signingAlgorithm: SIGN,
      publicKey: keys.publicKey,
      signingKey: this.#keys.privateKey,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(
          x509.KeyUsageFlags.digitalSignature |
            x509.KeyUsageFlags.keyEncipherment |
            x509.KeyUsageFlags.keyAgreement,
          true,
        ),
        new x509.ExtendedKeyUsageExtension([
          x509.ExtendedKeyUsage.serverAuth,
          x509.ExtendedKeyUsage.clientAuth,
        ]),
        new x509.SubjectAlternativeNameExtension([{ type: 'url', value: sid.toString() }]),
        await subjectKeyId(keys.publicKey),
        await (this.#aki ??= x509.AuthorityKeyIdentifierExtension.create(this.#keys.publicKey)),
      ],
    });
    const key = new Uint8Array(
      KeyObject.from(keys.privateKey as webcrypto.CryptoKey).export({ format: 'der', type: 'pkcs8' }),
    );
    // Like SPIRE, the chain holds the leaf only; the root travels in the bundle.
    return X509Svid.parse([certDer(cert)], key);
  }

  /**
   * Issues an ES256 JWT-SVID (header `kid` = the key in {@link jwtBundle}),
   * valid for at least `ttlSeconds` from now: a whole number of seconds from
   * 1 to 2592000 (30 days), default 300. `iat` is the current second and
   * `exp` the next whole second after now + `ttlSeconds`.
   *
   * @throws {DevCaError} for an ID of another trust domain, a bad TTL or
   *   audience, or an unknown key in `opts` (`DEV_CA_INVALID_OPTIONS`).
   */
  async issueJwtSvid(
    id: SpiffeId | string,
    audience: string | string[],
    opts: { ttlSeconds?: number } = {},
  ): Promise<JwtSvid> {
    checkIssueKeys('issueJwtSvid', opts, JWT_SVID_OPTION_KEYS);
    const sid = this.toId(id);
    // Whole seconds, as exp is: a fraction was dropped, and 0.4 gave a token
    // expired at issue. At most 30 days (the dev server's bound): a larger one
    // gave an exp no JS Date holds, which every validator refuses.
    const ttl = opts.ttlSeconds ?? 300;
    if (!Number.isSafeInteger(ttl) || ttl < 1 || ttl > JWT_SVID_MAX_TTL_SECONDS)
      throw new DevCaError(
        'DEV_CA_INVALID_OPTIONS',
        `ttlSeconds must be a whole number of seconds from 1 to ${JWT_SVID_MAX_TTL_SECONDS}, got ${typeof ttl === 'number' ? ttl : typeof ttl}`,
      );
    const aud = Array.isArray(audience) ? audience : [audience];
    if (aud.length === 0 || aud.some((a) => typeof a !== 'string' || a === ''))
      throw new DevCaError('DEV_CA_INVALID_OPTIONS', 'a JWT-SVID needs at least one non-empty audience');
    const nowSec = Date.now() / 1000;
    const iat = Math.floor(nowSec);
    // Rounded up: exp floored with iat ended the token up to 1 s before now + ttl.
    const exp = Math.ceil(nowSec) + ttl;
    const token = await new SignJWT({})
      .setProtectedHeader({ alg: 'ES256', kid: this.#kid, typ: 'JWT' })
      .setSubject(sid.toString())
      .setAudience(aud)
      .setIssuedAt(iat)
      .setExpirationTime(exp)
      .sign(this.#jwtPrivate);
    return new JwtSvid(token, sid, aud, new Date(exp * 1000), { sub: sid.toString(), aud, iat, exp });
  }
}
