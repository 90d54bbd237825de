// TLS plumbing shared by the client channel and the server helpers. Internal.
import { constants as cryptoConstants } from 'node:crypto';
import {
  createSecureContext,
  type PeerCertificate,
  type DetailedPeerCertificate,
  type SecureContext,
  type SecureVersion,
  type TLSSocket,
} from 'node:tls';
import {
  SpiffeId,
  type IdentityProvider,
  type TrustDomain,
  type X509Bundle,
  X509Svid,
  verifyX509Svid,
} from '@weave/identity';

/**
 * Cipher suites every Weave client and server offers and accepts, in order of
 * preference: AEAD with forward secrecy only. The TLS 1.3 suites all are; with
 * a TLS 1.2 floor this keeps ECDHE with AES-GCM or ChaCha20-Poly1305 and drops
 * what OpenSSL would otherwise accept (CBC with SHA-1 or SHA-2 MACs, static-RSA
 * key exchange).
 */
export const TLS_CIPHERS = [
  'TLS_AES_256_GCM_SHA384',
  'TLS_CHACHA20_POLY1305_SHA256',
  'TLS_AES_128_GCM_SHA256',
  'ECDHE-ECDSA-AES256-GCM-SHA384',
  'ECDHE-ECDSA-CHACHA20-POLY1305',
  'ECDHE-ECDSA-AES128-GCM-SHA256',
  'ECDHE-RSA-AES256-GCM-SHA384',
  'ECDHE-RSA-CHACHA20-POLY1305',
  'ECDHE-RSA-AES128-GCM-SHA256',
].join(':');

/** OpenSSL options of every Weave TLS context: TLS 1.2 renegotiation refused, by either side (TLS 1.3 has none). */
export const TLS_SECURE_OPTIONS: number = cryptoConstants.SSL_OP_NO_RENEGOTIATION;

/** The bundles of `tds` (all trusted bundles when omitted) that hold X.509 authorities. */
export function x509Bundles(identity: IdentityProvider, tds?: readonly TrustDomain[]): X509Bundle[] {
  const set = identity.getBundleSet();
  const wanted = tds ?? set.trustDomains();
  return wanted
    .map((td) => set.getX509Bundle(td))
    .filter((b): b is X509Bundle => b !== undefined && b.authorities.length > 0);
}

/** PEM of the bundles of `tds` (all trusted bundles when omitted); empty string when none exist. */
export function bundlesPem(identity: IdentityProvider, tds?: readonly TrustDomain[]): string {
  return x509Bundles(identity, tds)
    .map((b) => b.toPem())
    .join('\n');
}

interface ContextEntry {
  readonly bundles: readonly X509Bundle[];
  readonly minVersion: SecureVersion;
  readonly context: SecureContext;
}

// SVIDs and bundles are immutable: a rotation or a bundle update brings new
// objects, so a context built for the same objects is still right. Entries go
// away with the SVID they were built for.
const contexts = new WeakMap<X509Svid, ContextEntry[]>();
const MAX_CONTEXTS_PER_SVID = 8;

/**
 * The client TLS secure context for `svid` trusting `bundles`, built once and
 * shared by every channel and connection made with the same SVID and bundle
 * objects. Given PEM `cert`/`key`/`ca`, Node (and undici) build a new context
 * on every connect: parsing the key and the roots costs more than the
 * handshake's own crypto.
 */
export function clientSecureContext(
  svid: X509Svid,
  bundles: readonly X509Bundle[],
  minVersion: SecureVersion,
): SecureContext {
  let list = contexts.get(svid);
  if (!list) contexts.set(svid, (list = []));
  const hit = list.find(
    (e) =>
      e.minVersion === minVersion &&
      e.bundles.length === bundles.length &&
      e.bundles.every((b, i) => b === bundles[i]),
  );
  if (hit) return hit.context;
  const { cert, key } = svidPem(svid);
  const context = createSecureContext({
    cert,
    key,
    ca: bundles.map((b) => b.toPem()).join('\n'),
    minVersion,
    ciphers: TLS_CIPHERS,
    secureOptions: TLS_SECURE_OPTIONS,
  });
  if (list.length >= MAX_CONTEXTS_PER_SVID) list.shift();
  list.push({ bundles: [...bundles], minVersion, context });
  return context;
}

/** Own SVID (the provider's current one, or the one given) as PEM `cert`/`key` for a TLS context. */
export function svidPem(source: IdentityProvider | X509Svid): { cert: string; key: string } {
  const svid = source instanceof X509Svid ? source : source.getX509Svid();
  const { certChain, privateKey } = svid.toPem();
  return { cert: certChain, key: privateKey };
}

/**
 * The chain the peer presented, leaf first, as DER, read through Node's
 * `X509Certificate` handles (each issuer found among the certificates the
 * peer sent). `getPeerCertificate(true)` would decode every field of every
 * certificate into JS objects first: about ten times the CPU per connection.
 */
export function peerChainDer(socket: TLSSocket): Uint8Array[] {
  const out: Uint8Array[] = [];
  let cur = socket.getPeerX509Certificate();
  while (cur && out.length < 17) {
    out.push(cur.raw);
    const next = cur.issuerCertificate;
    // A self-issued root names itself as its issuer.
    if (!next || next.raw.equals(cur.raw)) break;
    cur = next;
  }
  return out;
}

/** The chain of a peer certificate as Node gives it (`getPeerCertificate(true)`, `checkServerIdentity`), leaf first, as DER. */
export function certChainDer(
  leaf: DetailedPeerCertificate | PeerCertificate | null | undefined,
): Uint8Array[] {
  const out: Uint8Array[] = [];
  let cur = leaf as DetailedPeerCertificate | undefined;
  const seen = new Set<unknown>();
  while (cur && cur.raw && !seen.has(cur) && out.length < 17) {
    seen.add(cur);
    out.push(new Uint8Array(cur.raw));
    cur = cur.issuerCertificate;
  }
  return out;
}

/** Verifies the peer's chain against the bundle of its own trust domain; returns its SPIFFE ID. */
export function verifyPeerSocket(socket: TLSSocket, identity: IdentityProvider): SpiffeId {
  return verifyX509Svid(peerChainDer(socket), identity);
}

/**
 * Best-effort read of the URI SAN of the peer's leaf, for error messages only
 * (never for a decision: decisions go through `verifyX509Svid`).
 */
export function peerIdForMessage(socket: TLSSocket | undefined): SpiffeId | undefined {
  try {
    const cert = socket?.getPeerX509Certificate?.();
    return cert ? uriSanForMessage(cert.subjectAltName) : undefined;
  } catch {
    return undefined;
  }
}

/** {@link peerIdForMessage} for a certificate object (`checkServerIdentity`): for messages only. */
export function peerIdOfCert(cert: PeerCertificate | undefined): SpiffeId | undefined {
  return uriSanForMessage(cert?.subjectaltname);
}

function uriSanForMessage(subjectAltName: string | undefined): SpiffeId | undefined {
  const m = /URI:(spiffe:\/\/[^,\s"]+)/.exec(subjectAltName ?? '');
  return m?.[1] ? SpiffeId.tryParse(m[1]) : undefined;
}
