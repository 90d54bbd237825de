// TLS plumbing shared by the client channel and the server helpers. Internal.
import type { PeerCertificate, DetailedPeerCertificate, TLSSocket } from 'node:tls';
import {
  SpiffeId,
  type IdentityProvider,
  type TrustDomain,
  type X509Bundle,
  X509Svid,
  verifyX509Svid,
} from '@weave/identity';

/** PEM of the bundles of `tds` (all trusted bundles when omitted); empty string when none exist. */
export function bundlesPem(identity: IdentityProvider, tds?: readonly TrustDomain[]): string {
  const set = identity.getBundleSet();
  const wanted = tds ?? set.trustDomains();
  return wanted
    .map((td) => set.getX509Bundle(td))
    .filter((b): b is X509Bundle => b !== undefined && b.authorities.length > 0)
    .map((b) => b.toPem())
    .join('\n');
}

/** Own SVID (the provider's current one, or the one given) as PEM `cert`/`key` for a TLS context. */
export function svidPem(source: IdentityProvider | X509Svid): { cert: string; key: string } {
  const svid = source instanceof X509Svid ? source : source.getX509Svid();
  const { certChain, privateKey } = svid.toPem();
  return { cert: certChain, key: privateKey };
}

/**
 * The chain the peer presented, leaf first, as DER. Node hands it over as a
 * linked list ending in a self-issued root that points at itself.
 */
export function peerChainDer(socket: TLSSocket): Uint8Array[] {
  return certChainDer(socket.getPeerCertificate(true) as DetailedPeerCertificate | PeerCertificate | null);
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
