/**
 * Signed agent cards (A2A v1.0 §8.4): a JWS (RFC 7515) over the RFC 8785
 * canonical JSON of the card without `signatures`.
 *
 * A Weave agent signs with its X.509-SVID key and carries the SVID chain in
 * the protected header's `x5c`, so a verifier needs no key distribution: the
 * chain is checked against the trust bundle of the signer's trust domain
 * (exactly as a TLS peer is) and the leaf's SPIFFE ID must be the one the
 * card declares. Foreign agents' cards, signed with any JWK key, verify when
 * the caller supplies that key (a JWKS, or a `jku` URL the caller allows).
 */
import { createHash, X509Certificate as NodeX509Certificate, type KeyObject } from 'node:crypto';
import canonicalize from 'canonicalize';
import * as jose from 'jose';
import { request, type Dispatcher } from 'undici';
import { z } from 'zod';
import type { SpiffeId } from '@weave/identity';
import {
  X509SvidError,
  verifyX509Svid,
  type IdentityProvider,
  type X509BundleSource,
  type X509Svid,
} from '@weave/identity';
import { MAX_JSON_DEPTH, exceedsDepth } from './depth.js';
import { A2AClientError } from './errors.js';
import { A2AConfigError, checkOptions, durationMs, positiveCount, timerMs } from './options.js';
import { agentSpiffeId } from './server.js';
import { AgentCardSchema, type AgentCard } from './wire/v1.js';

// ---- canonical form ------------------------------------------------------------------

/**
 * Deepest nesting a card may have: a Struct (an extension's `params`) holds
 * what a request may ({@link MAX_JSON_DEPTH}), a few levels down the card;
 * a security scheme's OAuth flows are the deepest standard member (7). Past
 * this a card is hostile: canonicalizing it, or any `JSON.stringify` of it
 * later, would overflow the stack.
 */
export const MAX_CARD_DEPTH = MAX_JSON_DEPTH + 8;

/**
 * Most signatures a card may carry. Each one is checked (an `x5c` chain
 * verified, a JWS) until one passes; a key rotation needs two. Unbounded, a
 * 1 MiB card of ~900 failing `x5c` signatures cost the client 0.7–1 s of CPU
 * on every fetch (a refused card is not cached).
 */
export const MAX_CARD_SIGNATURES = 16;

/**
 * The bytes a card signature covers: the card as its proto message would
 * serialise it (members outside the v1.0 schema dropped, a non-optional
 * `required: false` omitted), then every empty string, empty list and empty
 * object removed recursively, the `signatures` member removed, and the
 * result serialised by RFC 8785 (JCS). The removal of empty values is what
 * `@a2a-js/sdk` and a2a-python do; following them is what makes a card
 * signed by one SDK verify in another.
 *
 * One difference from `@a2a-js/sdk` 1.3: inside `securitySchemes`, members
 * and scheme kinds the proto does not know (and a second kind set in one
 * scheme) are kept here and dropped by the SDK, so such a card signed by one
 * does not verify with the other. It fails closed: what Weave keeps of a
 * card is what its signature covers. See the README, "Signed agent cards".
 *
 * @throws {AgentCardSignatureError} `CARD_INVALID` when `card` is not an agent card, is nested
 *   deeper than {@link MAX_CARD_DEPTH}, or holds a string RFC 8785 cannot serialise (a lone
 *   UTF-16 surrogate).
 */
export function canonicalizeAgentCard(card: AgentCard | Omit<AgentCard, 'signatures'>): string {
  // Before anything recursive (the schema's copies, dropEmpty, canonicalize) walks it.
  if (exceedsDepth(card, MAX_CARD_DEPTH)) {
    throw new AgentCardSignatureError('CARD_INVALID', `nested deeper than ${MAX_CARD_DEPTH} levels`);
  }
  const parsed = AgentCardSchema.safeParse(card);
  if (!parsed.success) {
    throw new AgentCardSignatureError(
      'CARD_INVALID',
      `not an agent card: ${parsed.error.issues[0]?.message}`,
    );
  }
  const { signatures: _signatures, ...rest } = parsed.data;
  const exts = rest.capabilities.extensions;
  if (exts) {
    // `AgentExtension.required` is a plain proto3 bool: false is its default and not serialised.
    rest.capabilities = {
      ...rest.capabilities,
      extensions: exts.map(({ required, ...e }) => (required === true ? { ...e, required } : e)),
    };
  }
  try {
    return canonicalize(dropEmpty(rest) ?? {}) ?? '{}';
  } catch (err) {
    // RFC 8785 §3.2.2.2: a string with a lone surrogate has no canonical form
    // (it is not Unicode text), so such a card can be neither signed nor verified.
    throw new AgentCardSignatureError(
      'CARD_INVALID',
      `not representable as RFC 8785 JSON: ${(err as Error).message}`,
    );
  }
}

function dropEmpty(v: unknown): unknown {
  if (v === '' || v === null || v === undefined) return undefined;
  if (Array.isArray(v)) {
    const out = v.map(dropEmpty).filter((x) => x !== undefined);
    return out.length > 0 ? out : undefined;
  }
  if (typeof v === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) {
      const c = dropEmpty(x);
      if (c !== undefined) out[k] = c;
    }
    return Object.keys(out).length > 0 ? out : undefined;
  }
  return v;
}

// ---- errors ----------------------------------------------------------------------------

/** Why a card's signature did not count. */
export type AgentCardSignatureErrorCode =
  /** The policy requires a signature and the card has none. */
  | 'CARD_UNSIGNED'
  /** A signature entry or its protected header is not well-formed, or there are more than {@link MAX_CARD_SIGNATURES}. */
  | 'CARD_SIGNATURE_MALFORMED'
  /** The `alg` is not allowed for the key (e.g. `none`, HS256, or EdDSA on an SVID). */
  | 'CARD_SIGNATURE_ALG'
  /** The signature does not verify: the card was changed after signing, or the wrong key. */
  | 'CARD_SIGNATURE_INVALID'
  /** The `x5c` chain does not verify against the bundle of its trust domain. */
  | 'CARD_SIGNER_UNTRUSTED'
  /** The `x5c` leaf's SPIFFE ID is not the SPIFFE ID the card declares. */
  | 'CARD_SIGNER_MISMATCH'
  /** An `x5c` signature on a card that declares no SPIFFE ID. */
  | 'CARD_NO_SPIFFE_ID'
  /** The signer is not the SPIFFE ID the TLS connection proved for the server (a replayed card). */
  | 'CARD_TLS_PEER_MISMATCH'
  /** No `x5c` and no caller-supplied key for the signature's `kid` / `jku`. */
  | 'CARD_KEY_UNKNOWN'
  /** The value to sign or verify is not an agent card (or is nested deeper than {@link MAX_CARD_DEPTH}). */
  | 'CARD_INVALID';

/** One signature's failure, as listed by {@link AgentCardSignatureError.failures}. */
export interface SignatureFailure {
  readonly index: number;
  readonly code: AgentCardSignatureErrorCode;
  readonly message: string;
}

/**
 * An agent card's signatures did not satisfy the caller's policy. `code`
 * names the reason (for several signatures, the first one's); `failures`
 * lists every signature's.
 */
export class AgentCardSignatureError extends A2AClientError {
  declare readonly code: AgentCardSignatureErrorCode;
  readonly failures: readonly SignatureFailure[];
  constructor(
    code: AgentCardSignatureErrorCode,
    message: string,
    options?: { cause?: unknown; failures?: readonly SignatureFailure[] },
  ) {
    super(code, message, { cause: options?.cause });
    this.failures = options?.failures ?? [];
  }
}

// ---- signing ----------------------------------------------------------------------------

/** JWS algorithms a SPIFFE X.509-SVID key may sign with (as for JWT-SVIDs: no EdDSA, no HMAC, no none). */
const SVID_ALGORITHMS = ['ES256', 'ES384', 'ES512', 'RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512'];
/** With a caller-supplied key any asymmetric JWS algorithm is fine. */
const KEY_ALGORITHMS = [...SVID_ALGORITHMS, 'EdDSA', 'Ed25519'];

function algorithmFor(key: KeyObject): string {
  const type = key.asymmetricKeyType;
  if (type === 'ec') {
    const curve = key.asymmetricKeyDetails?.namedCurve;
    if (curve === 'prime256v1' || curve === 'P-256') return 'ES256';
    if (curve === 'secp384r1' || curve === 'P-384') return 'ES384';
    if (curve === 'secp521r1' || curve === 'P-521') return 'ES512';
    throw new AgentCardSignatureError('CARD_SIGNATURE_ALG', `no JWS algorithm for EC curve ${curve}`);
  }
  if (type === 'rsa') return 'RS256';
  if (type === 'rsa-pss') return 'PS256';
  throw new AgentCardSignatureError('CARD_SIGNATURE_ALG', `an SVID key of type ${type} cannot sign a card`);
}

/** The JWS entry of a card's `signatures`. */
export interface AgentCardSignature {
  readonly protected: string;
  readonly signature: string;
  readonly header?: Record<string, unknown>;
}

/**
 * Signs `card` with `svid`: a JWS over {@link canonicalizeAgentCard} whose
 * protected header carries `alg` (from the key: ES256 for SPIRE's P-256),
 * `kid` (the RFC 7638 thumbprint of the SVID's public key), `typ: "JOSE"`
 * and `x5c` (the SVID chain, leaf first, base64 DER). Earlier signatures
 * made with the same key are replaced; others are kept.
 */
export async function signAgentCard(card: AgentCard, svid: X509Svid): Promise<AgentCard> {
  const payload = canonicalizeAgentCard(card);
  const alg = algorithmFor(svid.privateKey);
  const publicJwk = await jose.exportJWK(svid.privateKey);
  const kid = await jose.calculateJwkThumbprint(publicJwk);
  const x5c = svid.certificates.map((c) => Buffer.from(c.rawData).toString('base64'));
  const jws = await new jose.FlattenedSign(new TextEncoder().encode(payload))
    .setProtectedHeader({ alg, kid, typ: 'JOSE', x5c })
    .sign(svid.privateKey);
  const kept = (card.signatures ?? []).filter((s) => headerOf(s)?.kid !== kid);
  return { ...card, signatures: [...kept, { protected: jws.protected, signature: jws.signature }] };
}

/**
 * Signs the agent's card with its current SVID, and again after every SVID
 * rotation (the cache is keyed by the SVID's serial number and the card's
 * canonical form, so a changed card is signed anew as well).
 */
export class AgentCardSigner {
  readonly #identity: IdentityProvider;
  readonly #cache = new Map<string, Promise<AgentCard>>();
  readonly #unsubscribe: () => void;

  constructor(identity: IdentityProvider) {
    this.#identity = identity;
    // A rotated SVID makes every cached signature stale: its x5c names the old leaf.
    this.#unsubscribe = identity.onUpdate((u) => {
      if (u.reason !== 'bundles') this.#cache.clear();
    });
  }

  /** `card` signed by the current SVID. @throws {IdentityNotReadyError} without a valid SVID. */
  sign(card: AgentCard): Promise<AgentCard> {
    const svid = this.#identity.getX509Svid();
    const serial = svid.certificates[0]?.serialNumber ?? '';
    const key = `${serial}\n${createHash('sha256').update(canonicalizeAgentCard(card)).digest('base64url')}`;
    let signed = this.#cache.get(key);
    if (signed === undefined) {
      if (this.#cache.size >= 64) this.#cache.clear();
      signed = signAgentCard(card, svid);
      signed.catch(() => this.#cache.delete(key));
      this.#cache.set(key, signed);
    }
    return signed;
  }

  /** Stops following the identity's rotations. */
  close(): void {
    this.#unsubscribe();
    this.#cache.clear();
  }
}

// ---- verification ----------------------------------------------------------------------

/**
 * How strictly a client treats a card's signatures:
 * - `required` — at least one signature must verify (the default for Weave peers);
 * - `if-present` — an unsigned card is accepted, but a signed one must verify
 *   (a bad signature is never ignored);
 * - `off` — signatures are not looked at (for foreign agents that sign nothing).
 */
export type CardSignaturePolicy = 'required' | 'if-present' | 'off';

export const CardSignaturePolicySchema = z.enum(['required', 'if-present', 'off']);

/** A caller-supplied key for a signature without `x5c`: found by `kid` (and `jku`, when the header has one). */
export type CardKeyResolver = (header: {
  readonly kid: string;
  readonly alg: string;
  readonly jku?: string;
}) => Promise<KeyObject | jose.JWK | jose.CryptoKey | undefined>;

/** Options of {@link verifyAgentCard}. */
export interface VerifyAgentCardOptions {
  readonly policy: CardSignaturePolicy;
  /**
   * Trust bundles for `x5c` chains (an `IdentityProvider` is one): a chain
   * counts only against the bundle of its leaf's own trust domain.
   */
  readonly bundles?: X509BundleSource;
  /** Keys for signatures without `x5c`: a JWKS, or a resolver (see {@link jkuKeyResolver}). */
  readonly keys?: jose.JSONWebKeySet | CardKeyResolver;
  /**
   * The SPIFFE ID the TLS handshake proved for the server the card came
   * from. An `x5c` signer other than this one is refused, so a card signed
   * by one agent and served by another does not pass.
   */
  readonly tlsPeer?: SpiffeId | string;
  /** Time at which the `x5c` chain must be valid. Default now. */
  readonly now?: Date;
}

/** What {@link verifyAgentCard} established. */
export type CardVerification =
  | {
      readonly status: 'verified';
      /** `x5c`: an SVID chain checked against the trust bundle; `key`: a caller-supplied key. */
      readonly via: 'x5c' | 'key';
      readonly kid: string;
      readonly alg: string;
      /** The signer's SPIFFE ID (`x5c` signatures only). */
      readonly spiffeId?: SpiffeId;
    }
  /** Policy `if-present` and the card has no signature. */
  | { readonly status: 'unsigned' }
  /** Policy `off`. */
  | { readonly status: 'not-checked' };

const SignatureEntrySchema = z.object({
  protected: z.string().min(1),
  signature: z.string().min(1),
  header: z.record(z.string(), z.unknown()).optional(),
});

const ProtectedHeaderSchema = z.object({
  alg: z.string().min(1),
  kid: z.string().min(1),
  typ: z.string().optional(),
  jku: z.string().optional(),
  x5c: z.array(z.string().min(1)).min(1).max(16).optional(),
});
type ProtectedHeader = z.infer<typeof ProtectedHeaderSchema>;

function headerOf(sig: unknown): ProtectedHeader | undefined {
  try {
    const p = SignatureEntrySchema.safeParse(sig);
    if (!p.success) return undefined;
    const h = ProtectedHeaderSchema.safeParse(jose.decodeProtectedHeader({ protected: p.data.protected }));
    return h.success ? h.data : undefined;
  } catch {
    return undefined;
  }
}

class Failure extends Error {
  constructor(
    readonly code: AgentCardSignatureErrorCode,
    message: string,
  ) {
    super(message);
  }
}

/**
 * Checks a card's signatures under `policy`. A signature counts when its
 * JWS verifies over the card's canonical form and its key is trusted:
 * - with `x5c`: the chain verifies as an X.509-SVID against `bundles` (the
 *   bundle of the leaf's own trust domain), the leaf's SPIFFE ID equals the
 *   card's SPIFFE ID extension and, when given, `tlsPeer`; `alg` must be one
 *   of the JWT-SVID algorithms;
 * - without `x5c`: `keys` supplies the key for the header's `kid` (`jku`).
 *
 * @throws {AgentCardSignatureError} naming the reason when the policy is not met.
 */
export async function verifyAgentCard(
  card: AgentCard,
  options: VerifyAgentCardOptions,
): Promise<CardVerification> {
  const policy = CardSignaturePolicySchema.parse(options.policy);
  if (policy === 'off') return { status: 'not-checked' };
  const signatures = card.signatures ?? [];
  if (signatures.length === 0) {
    if (policy === 'if-present') return { status: 'unsigned' };
    throw new AgentCardSignatureError('CARD_UNSIGNED', `the agent card of ${card.name} carries no signature`);
  }
  if (signatures.length > MAX_CARD_SIGNATURES) {
    // Refused whole rather than the first ones checked: a card is not trusted on a part of what it sent.
    throw new AgentCardSignatureError(
      'CARD_SIGNATURE_MALFORMED',
      `the agent card of ${card.name} carries ${signatures.length} signatures, more than ${MAX_CARD_SIGNATURES}`,
    );
  }
  const payload = jose.base64url.encode(canonicalizeAgentCard(card));
  const keys = typeof options.keys === 'function' ? options.keys : jwksResolver(options.keys);
  const tlsPeer = options.tlsPeer === undefined ? undefined : String(options.tlsPeer);
  const failures: SignatureFailure[] = [];
  for (const [index, sig] of signatures.entries()) {
    try {
      const entry = SignatureEntrySchema.safeParse(sig);
      if (!entry.success) throw new Failure('CARD_SIGNATURE_MALFORMED', 'not a {protected, signature} entry');
      let raw: unknown;
      try {
        raw = jose.decodeProtectedHeader({ protected: entry.data.protected });
      } catch {
        throw new Failure('CARD_SIGNATURE_MALFORMED', 'the protected header is not base64url JSON');
      }
      const h = ProtectedHeaderSchema.safeParse(raw);
      if (!h.success) {
        const issue = h.error.issues[0];
        throw new Failure(
          'CARD_SIGNATURE_MALFORMED',
          `protected header ${issue?.path.join('.') || ''}: ${issue?.message}`,
        );
      }
      const header = h.data;
      if (header.typ !== undefined && header.typ !== 'JOSE' && header.typ !== 'JWT') {
        throw new Failure('CARD_SIGNATURE_MALFORMED', `typ ${JSON.stringify(header.typ)} is not JOSE`);
      }
      const jws = { payload, protected: entry.data.protected, signature: entry.data.signature };
      if (header.x5c) {
        const spiffeId = await verifyX5c(card, header, jws, options, tlsPeer);
        return { status: 'verified', via: 'x5c', kid: header.kid, alg: header.alg, spiffeId };
      }
      if (!KEY_ALGORITHMS.includes(header.alg)) {
        throw new Failure('CARD_SIGNATURE_ALG', `alg ${header.alg} is not an asymmetric JWS algorithm`);
      }
      let key: Awaited<ReturnType<CardKeyResolver>>;
      try {
        key = await keys({ kid: header.kid, alg: header.alg, ...(header.jku ? { jku: header.jku } : {}) });
      } catch (err) {
        throw new Failure(
          'CARD_KEY_UNKNOWN',
          `no key for kid ${JSON.stringify(header.kid)}: ${(err as Error).message}`,
        );
      }
      if (key === undefined) {
        throw new Failure(
          'CARD_KEY_UNKNOWN',
          `no x5c, and no key was supplied for kid ${JSON.stringify(header.kid)}${header.jku ? ` (jku ${header.jku})` : ''}`,
        );
      }
      await jwsVerify(jws, key, KEY_ALGORITHMS);
      return { status: 'verified', via: 'key', kid: header.kid, alg: header.alg };
    } catch (err) {
      if (!(err instanceof Failure)) throw err;
      failures.push({ index, code: err.code, message: err.message });
    }
  }
  const first = failures[0] as SignatureFailure;
  const list = failures.map((f) => `#${f.index} ${f.code}: ${f.message}`).join('; ');
  throw new AgentCardSignatureError(
    first.code,
    `no signature of the agent card of ${card.name} is valid (${list})`,
    { failures },
  );
}

async function verifyX5c(
  card: AgentCard,
  header: ProtectedHeader,
  jws: jose.FlattenedJWSInput,
  options: VerifyAgentCardOptions,
  tlsPeer: string | undefined,
): Promise<SpiffeId> {
  if (!SVID_ALGORITHMS.includes(header.alg)) {
    throw new Failure('CARD_SIGNATURE_ALG', `alg ${header.alg} is not allowed for an X.509-SVID key`);
  }
  // RFC 7515 §4.1.6: standard base64 (not base64url) DER, leaf first.
  const chain = (header.x5c ?? []).map((c) => {
    if (!/^[A-Za-z0-9+/]+={0,2}$/.test(c))
      throw new Failure('CARD_SIGNATURE_MALFORMED', 'x5c is not base64 DER');
    return new Uint8Array(Buffer.from(c, 'base64'));
  });
  if (!options.bundles) {
    throw new Failure('CARD_SIGNER_UNTRUSTED', 'the signature carries x5c but no trust bundles were given');
  }
  let signer: SpiffeId;
  try {
    signer = verifyX509Svid(chain, options.bundles, options.now ? { now: options.now } : {});
  } catch (err) {
    if (err instanceof X509SvidError) {
      throw new Failure(
        err.code === 'SVID_MALFORMED' ? 'CARD_SIGNATURE_MALFORMED' : 'CARD_SIGNER_UNTRUSTED',
        `x5c: ${err.code}: ${err.message}`,
      );
    }
    throw err;
  }
  const declared = agentSpiffeId(card);
  if (declared === undefined) {
    throw new Failure(
      'CARD_NO_SPIFFE_ID',
      `signed by ${signer.toString()} but the card declares no SPIFFE ID`,
    );
  }
  if (declared !== signer.toString()) {
    throw new Failure(
      'CARD_SIGNER_MISMATCH',
      `signed by ${signer.toString()} but the card declares ${declared}`,
    );
  }
  if (tlsPeer !== undefined && tlsPeer !== signer.toString()) {
    throw new Failure(
      'CARD_TLS_PEER_MISMATCH',
      `signed by ${signer.toString()} but served by ${tlsPeer} (as proven by TLS)`,
    );
  }
  const leaf = new NodeX509Certificate(Buffer.from(chain[0] as Uint8Array));
  await jwsVerify(jws, leaf.publicKey, SVID_ALGORITHMS);
  return signer;
}

async function jwsVerify(
  jws: jose.FlattenedJWSInput,
  key: NonNullable<Awaited<ReturnType<CardKeyResolver>>>,
  algorithms: string[],
): Promise<void> {
  try {
    await jose.flattenedVerify(jws, key, { algorithms });
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code === 'ERR_JOSE_ALG_NOT_ALLOWED' || code === 'ERR_JOSE_NOT_SUPPORTED') {
      throw new Failure('CARD_SIGNATURE_ALG', (err as Error).message);
    }
    if (err instanceof TypeError || code === 'ERR_JWK_INVALID') {
      throw new Failure('CARD_SIGNATURE_ALG', `the key does not fit the alg: ${(err as Error).message}`);
    }
    throw new Failure('CARD_SIGNATURE_INVALID', 'the signature does not verify over the card as received');
  }
}

function jwksResolver(jwks: jose.JSONWebKeySet | undefined): CardKeyResolver {
  if (jwks === undefined) return () => Promise.resolve(undefined);
  const keys = JwksSchema.parse(jwks).keys;
  return ({ kid, alg }) => {
    const candidates = keys.filter((k) => k.kid === kid && (k.alg === undefined || k.alg === alg));
    if (candidates.length > 1)
      return Promise.reject(new Error(`the JWKS holds ${candidates.length} keys with that kid`));
    const jwk = candidates[0];
    if (jwk === undefined) return Promise.resolve(undefined);
    return jose.importJWK(jwk as jose.JWK, alg).then((k) => {
      // A symmetric key would let anyone holding it (every verifier) sign.
      if (k instanceof Uint8Array) throw new Error('a symmetric (oct) key cannot vouch for a card');
      return k;
    });
  };
}

const JwksSchema = z.object({
  keys: z.array(
    z.object({ kty: z.string(), kid: z.string().optional(), alg: z.string().optional() }).loose(),
  ),
});

/** Options of {@link jkuKeyResolver}. */
export interface JkuKeyResolverOptions {
  /**
   * The JWKS URLs the caller trusts. A signature's `jku` is fetched only when
   * it is one of them: the header comes with the card, and a card must not
   * pick the key that vouches for it, nor make the client fetch any URL.
   */
  readonly allow: readonly string[];
  /** The transport to the JWKS, e.g. a SecureChannel or an undici Agent for Web PKI. Required. */
  readonly dispatcher: Dispatcher;
  /** How long a fetched JWKS is reused, in ms. Default 5 minutes. */
  readonly ttlMs?: number;
  /** Largest JWKS accepted, in bytes. Default 64 KiB. */
  readonly maxBytes?: number;
  readonly timeoutMs?: number;
}

/**
 * A {@link CardKeyResolver} for signatures whose header names a `jku`
 * (spec §8.4.2): the JWKS at that URL, when the URL is allow-listed, fetched
 * over `dispatcher` without following redirects.
 */
export function jkuKeyResolver(options: JkuKeyResolverOptions): CardKeyResolver {
  if (!options?.dispatcher) throw new A2AConfigError('jkuKeyResolver', ['dispatcher is required']);
  checkOptions(
    'jkuKeyResolver',
    z.object({
      ttlMs: durationMs.optional(),
      maxBytes: positiveCount.optional(),
      timeoutMs: timerMs.optional(),
    }),
    options,
  );
  const allow = new Set(options.allow.map((u) => new URL(u).toString()));
  const ttl = options.ttlMs ?? 300_000;
  const max = options.maxBytes ?? 64 * 1024;
  const timeout = options.timeoutMs ?? 10_000;
  const cache = new Map<string, { at: number; resolve: CardKeyResolver }>();
  return async (h) => {
    if (h.jku === undefined) return undefined;
    let url: string;
    try {
      url = new URL(h.jku).toString();
    } catch {
      throw new Error(`jku ${JSON.stringify(h.jku)} is not a URL`);
    }
    if (!allow.has(url)) throw new Error(`jku ${url} is not among the allowed JWKS URLs`);
    let hit = cache.get(url);
    if (hit === undefined || Date.now() - hit.at > ttl) {
      const res = await request(url, {
        dispatcher: options.dispatcher,
        headers: { accept: 'application/json' },
        headersTimeout: timeout,
        bodyTimeout: timeout,
      });
      const chunks: Buffer[] = [];
      let n = 0;
      for await (const c of res.body) {
        n += (c as Buffer).length;
        if (n > max) {
          res.body.destroy();
          throw new Error(`the JWKS at ${url} exceeds ${max} bytes`);
        }
        chunks.push(c as Buffer);
      }
      if (res.statusCode !== 200) throw new Error(`the JWKS at ${url} answered HTTP ${res.statusCode}`);
      hit = { at: Date.now(), resolve: jwksResolver(JSON.parse(Buffer.concat(chunks).toString('utf8'))) };
      cache.set(url, hit);
    }
    return hit.resolve(h);
  };
}
