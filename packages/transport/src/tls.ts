// TLS plumbing shared by the client channel and the server helpers. Internal.
import { constants as cryptoConstants, randomBytes, type X509Certificate } from 'node:crypto';
import {
  createSecureContext,
  type PeerCertificate,
  type DetailedPeerCertificate,
  type SecureContext,
  type SecureVersion,
  type Server as TlsServer,
  type TLSSocket,
} from 'node:tls';
import {
  SpiffeId,
  type IdentityProvider,
  type TrustDomain,
  type X509Bundle,
  X509Svid,
  X509SvidError,
  verifyX509SvidPath,
  type X509SvidVerification,
} from '@weave/identity';
import { Deadlines } from './deadlines.js';

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

// The chain a socket's peer presented, read once per socket: on Node 20 a
// client socket's `getPeerX509Certificate()` takes the certificates out of
// OpenSSL's peer chain as it reads them, so a second read finds nothing.
const PEER_CHAIN = Symbol('weave.peerChain');
interface PeerChain {
  readonly der: Uint8Array[];
  /** Node's handles of the certificates the peer presented, leaf first (the start of `der`). */
  readonly presented: X509Certificate[];
  readonly leaf: X509Certificate;
  /** A resumed session's leaf, its issuers taken from those known here (the peer sent none). */
  readonly issuersFromMemory: boolean;
  /**
   * The last verification of this chain that passed ({@link verifyPeerSocketPath},
   * or a client's `checkServerIdentity` through {@link keepServerVerification}):
   * its end is {@link peerNotAfter}'s answer. Cleared when a later one refuses it.
   */
  verification?: X509SvidVerification | undefined;
}
type ChainSocket = TLSSocket & { [PEER_CHAIN]?: PeerChain };

// Intermediate CAs seen in full handshakes. A server's resumed session keeps
// the client's leaf but not the rest of the chain it presented (a ticket does
// not carry it), and verification needs the intermediates to reach the
// bundle. SPIRE-style deployments have many leaves and few intermediates, so
// they are kept per intermediate, not per leaf: a resumed client finds its
// issuers however many other clients came since. They are path candidates
// only: every signature up to the bundle of the leaf's own trust domain is
// still checked, as for a full handshake.
interface KnownIntermediate {
  readonly der: Uint8Array;
  readonly subject: string;
  readonly issuer: string;
}
const intermediates = new Map<string, KnownIntermediate>();
/** @internal How many distinct intermediates a process keeps (least recently presented go first). */
export const INTERMEDIATES_MAX = 64;

function rememberIntermediate(cert: X509Certificate, der: Uint8Array): void {
  const key = Buffer.from(der.buffer, der.byteOffset, der.byteLength).toString('latin1');
  const known = intermediates.get(key);
  intermediates.delete(key);
  if (!known && intermediates.size >= INTERMEDIATES_MAX)
    intermediates.delete(intermediates.keys().next().value!);
  intermediates.set(key, known ?? { der, subject: cert.subject, issuer: cert.issuer });
}

/** Known intermediates that may lead from `leaf` up to an authority: by issuer name, level by level. */
function knownIssuersOf(leaf: X509Certificate): Uint8Array[] {
  const out: Uint8Array[] = [];
  let names = new Set([leaf.issuer]);
  for (let depth = 0; depth < 8 && names.size > 0; depth++) {
    const next = new Set<string>();
    for (const k of intermediates.values()) {
      if (!names.has(k.subject) || out.includes(k.der)) continue;
      out.push(k.der);
      if (k.issuer !== k.subject) next.add(k.issuer);
    }
    names = next;
  }
  return out;
}

function readPeerChain(socket: TLSSocket): PeerChain | undefined {
  const s = socket as ChainSocket;
  const kept = s[PEER_CHAIN];
  if (kept) return kept;
  // Node reads a client's peer from the chain OpenSSL keeps, which a resumed
  // session has not: nothing then (the channel keeps each ticket's chain).
  const leaf = socket.getPeerX509Certificate();
  if (!leaf) return undefined;
  const der: Uint8Array[] = [];
  const presented: X509Certificate[] = [];
  let cur: X509Certificate | undefined = leaf;
  while (cur && der.length < 17) {
    const raw = cur.raw;
    der.push(raw);
    presented.push(cur);
    // A root (self-issued: its own names and key identifiers, OpenSSL's
    // check) is no intermediate. OpenSSL clients send their authority along
    // (it completes the chain from the trust store), and a root kept here
    // would make every resumed connection look its leaf's issuers up. The
    // bundle holds the roots a path may end in.
    if (der.length > 1 && !cur.checkIssued(cur)) rememberIntermediate(cur, raw);
    const next: X509Certificate | undefined = cur.issuerCertificate;
    // A self-issued root names itself as its issuer.
    if (!next || next.raw.equals(raw)) break;
    cur = next;
  }
  const issuersFromMemory = der.length === 1 && socket.isSessionReused();
  // Only when some intermediate is known: finding a leaf's issuers reads its
  // issuer name (OpenSSL formats it on every read), which a resumed leaf
  // signed by an authority itself — most deployments — would pay on every
  // connection for nothing (bench `connect` profile: about 3 % of the
  // server's busy time, with the root it found parsed and compared again).
  if (issuersFromMemory && intermediates.size > 0) der.push(...knownIssuersOf(leaf));
  return (s[PEER_CHAIN] = { der, presented, leaf, issuersFromMemory });
}

/**
 * The peer chain to verify, leaf first, read through Node's `X509Certificate`
 * handles (each issuer found among the certificates the peer sent) once per
 * socket: the handles of what the peer presented, then (a resumed server
 * session) the known issuers as DER. `getPeerCertificate(true)` would decode
 * every field of every certificate into JS objects and look each issuer up
 * in the context's store: about ten times the CPU per connection. The
 * verifier keeps its reading of each handle, so a caller that verifies the
 * same chain again later (the channel, on each resumed connection) keeps
 * this, not DER.
 */
export function peerChainForVerify(socket: TLSSocket): PeerChainInput {
  const chain = readPeerChain(socket);
  return chain ? [...chain.presented, ...chain.der.slice(chain.presented.length)] : [];
}

/** The leaf certificate the socket's peer presented (kept with {@link peerChainForVerify}). */
export function peerLeaf(socket: TLSSocket): X509Certificate | undefined {
  return readPeerChain(socket)?.leaf;
}

/**
 * When the verification of the socket's peer stops holding (epoch ms): the
 * earliest notAfter of the path its chain verified through — leaf,
 * intermediates, bundle authority — as the last verification that passed
 * found it ({@link verifyPeerSocket}; on a client, {@link keepServerVerification}).
 * Past it, the chain no longer verifies, however long the connection stays
 * open. Read off the chain kept with the socket (the verifier read the dates
 * once per certificate). A socket never verified that way (or whose last
 * verification refused it) answers its leaf's notAfter, Node's text parsed
 * on each call: call it once per connection, not per request. 0 (long past)
 * when there is no leaf.
 */
export function peerNotAfter(socket: TLSSocket): number {
  const chain = readPeerChain(socket);
  if (!chain) return 0;
  return chain.verification ? chain.verification.expiresAt.getTime() : certTimeMs(chain.leaf.validTo);
}

/**
 * A certificate time as Node writes it (`validTo`, `valid_to`), in epoch
 * ms; 0 (long past) when it cannot be read, so that what depends on it
 * fails closed.
 */
function certTimeMs(text: string | undefined): number {
  return (text === undefined ? 0 : Date.parse(text)) || 0;
}

/**
 * The certificate ends of the peers of every held connection in the process
 * (a server's callers, `PeerVerifier.hold`; a SecureChannel's servers), each
 * key the function that ends its connection: one timer for them all, at
 * wall-clock time and past Node's timer limit. A timer per connection left
 * Node, for each, a timer list of that connection's own duration until the
 * duration had passed, cleared or not: under connection churn, thousands of
 * empty lists. One for the process rather than one per verifier or channel:
 * an agent has a channel per peer, and each timer armed anew at a duration
 * of its own leaves such a list too.
 */
export const peerCertificateEnds = new Deadlines<() => void>((end) => end());

/**
 * Makes the next `getPeerCertificate(true)` of a client socket — the one
 * Node's handshake makes for `checkServerIdentity` — answer from the
 * chain {@link peerChainForVerify} reads instead: a certificate object carrying `raw`,
 * `subjectaltname`, `serialNumber` and `issuerCertificate`, which is all a
 * SPIFFE check reads. Node's own detailed read decodes every field of every
 * certificate and looks each issuer up in the secure context's store: about
 * 0.7–1.2 ms of client CPU per new connection on Node 20 (a full TLS 1.3
 * handshake costs about 2 ms). Call it right after `tls.connect`, before the
 * handshake completes; later calls reach Node's own method again.
 */
export function lightPeerCertificateForHandshake(socket: TLSSocket): void {
  const own = socket as TLSSocket & { getPeerCertificate: TLSSocket['getPeerCertificate'] };
  own.getPeerCertificate = function (this: TLSSocket, detailed?: boolean) {
    delete (this as Partial<typeof own>).getPeerCertificate;
    if (!detailed) return this.getPeerCertificate(false);
    return chainAsPeerCertificate(this) ?? this.getPeerCertificate(true);
  } as TLSSocket['getPeerCertificate'];
}

// Node's parsed leaf rides on the certificate object handed to checkServerIdentity,
// so verification does not parse it from DER again; so does the socket's kept
// chain, so what checkServerIdentity verified can be kept with the socket.
const NODE_LEAF = Symbol('weave.nodeLeaf');
const CARRIED_CHAIN = Symbol('weave.carriedChain');
type LeafCarrier = DetailedPeerCertificate & { [NODE_LEAF]?: X509Certificate; [CARRIED_CHAIN]?: PeerChain };

/** The socket's peer chain as linked certificate objects of Node's shape (the fields a SPIFFE check reads). */
function chainAsPeerCertificate(socket: TLSSocket): DetailedPeerCertificate | undefined {
  const chain = readPeerChain(socket);
  if (!chain) return undefined;
  let head: DetailedPeerCertificate | undefined;
  for (let i = chain.der.length - 1; i >= 0; i--) {
    const der = chain.der[i]!;
    head = {
      raw: Buffer.from(der.buffer, der.byteOffset, der.byteLength),
      issuerCertificate: head,
    } as unknown as DetailedPeerCertificate;
  }
  // The leaf's fields that error messages and 'peer' events read.
  const leaf = head! as LeafCarrier;
  leaf.subjectaltname = chain.leaf.subjectAltName ?? '';
  leaf.serialNumber = chain.leaf.serialNumber;
  leaf[NODE_LEAF] = chain.leaf;
  leaf[CARRIED_CHAIN] = chain;
  return leaf;
}

// What a client's checkServerIdentity verified, per certificate object it was given.
const serverVerifications = new WeakMap<object, X509SvidVerification>();

/**
 * Keeps what a client's `checkServerIdentity` found for `cert`
 * ({@link verifyX509SvidPath} on {@link certChainForVerify}`(cert)`), so that
 * what holds the connection ends it when that verification stops holding,
 * not at the leaf's notAfter: read back by {@link serverNotAfter}`(cert)`,
 * and by {@link peerNotAfter} of the socket when `cert` came from
 * {@link lightPeerCertificateForHandshake}.
 */
export function keepServerVerification(cert: PeerCertificate, verification: X509SvidVerification): void {
  serverVerifications.set(cert, verification);
  const chain = (cert as LeafCarrier)[CARRIED_CHAIN];
  if (chain) chain.verification = verification;
}

/**
 * When the verification a client's `checkServerIdentity` kept for `cert`
 * ({@link keepServerVerification}) stops holding (epoch ms); the leaf's
 * notAfter when none was kept, 0 when that cannot be read.
 */
export function serverNotAfter(cert: PeerCertificate): number {
  return serverVerifications.get(cert)?.expiresAt.getTime() ?? certTimeMs(cert.valid_to);
}

/** The chain of a peer certificate as Node gives it (`getPeerCertificate(true)`, `checkServerIdentity`), leaf first, as DER. */
function certChainDer(leaf: DetailedPeerCertificate | PeerCertificate | null | undefined): Uint8Array[] {
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

/** A chain to verify: leaf first, each as DER or (the leaf) as Node's parsed certificate. */
export type PeerChainInput = readonly (Uint8Array | X509Certificate)[];

/**
 * The chain of a certificate object given to `checkServerIdentity`, leaf
 * first, for {@link verifyX509SvidPath}: the leaf as Node's parsed certificate
 * when the object came from {@link lightPeerCertificateForHandshake} (no second
 * parse), else as DER.
 */
export function certChainForVerify(
  leaf: DetailedPeerCertificate | PeerCertificate | null | undefined,
): PeerChainInput {
  const der = certChainDer(leaf);
  const node = (leaf as LeafCarrier | null | undefined)?.[NODE_LEAF];
  return node && der.length > 0 ? [node, ...der.slice(1)] : der;
}

/** One DER element: tag, content `[start, end)`, whole element `[at, end)`; undefined when it does not fit `limit`. */
function derElement(
  der: Uint8Array,
  at: number,
  limit: number,
): { tag: number; at: number; start: number; end: number } | undefined {
  if (at + 2 > limit) return undefined;
  const tag = der[at]!;
  const first = der[at + 1]!;
  let len = first;
  let start = at + 2;
  if (first >= 0x80) {
    const n = first & 0x7f;
    if (n < 1 || n > 4 || at + 2 + n > limit) return undefined;
    len = 0;
    for (let k = 0; k < n; k++) len = len * 256 + der[at + 2 + k]!;
    start = at + 2 + n;
  }
  const end = start + len;
  return end <= limit ? { tag, at, start, end } : undefined;
}

/** DER header of a SEQUENCE of `len` content bytes (minimal length form). */
function sequenceHeader(len: number): Buffer {
  if (len < 0x80) return Buffer.from([0x30, len]);
  const bytes: number[] = [];
  for (let v = len; v > 0; v = Math.floor(v / 256)) bytes.unshift(v % 256);
  return Buffer.from([0x30, 0x80 | bytes.length, ...bytes]);
}

/**
 * A client's TLS 1.3 session (Node's `'session'` event: OpenSSL's DER
 * `SSL_SESSION`) without the server certificate kept in it, or the session
 * unchanged when it is anything else (TLS 1.2, or not the layout read here).
 *
 * Why: handing a session to OpenSSL (`setSession`) decodes it, and decoding
 * the certificate inside is nearly all of that (on Node 20, OpenSSL 3.0:
 * about 180 µs of an idle core per resumed connection against 3 µs without
 * it; measured). A client that resumes never reads that certificate: Node
 * runs no `checkServerIdentity` on a resumed session and counts a resumed
 * TLS 1.3 session as verified whether or not the certificate is there
 * (`authorized`), and the channel verifies the chain it kept beside the
 * ticket instead. TLS 1.2 sessions stay whole: Node counts a resumed TLS 1.2
 * session without a peer certificate as unverified.
 *
 * Layout (OpenSSL's `SSL_SESSION_ASN1`): SEQUENCE { version INTEGER,
 * ssl_version INTEGER, ..., peer [3] EXPLICIT Certificate OPTIONAL, ... };
 * only that one field is removed. Node 20 (OpenSSL 3.0) hands out sessions
 * in that form; Node 22 and 24 (OpenSSL 3.5) hand out another encoding,
 * which comes back unchanged, so there this saves nothing (and changes
 * nothing).
 */
export function sessionWithoutPeerCertificate(session: Buffer): Buffer {
  const top = derElement(session, 0, session.length);
  if (!top || top.tag !== 0x30 || top.end !== session.length) return session;
  const version = derElement(session, top.start, top.end);
  if (!version || version.tag !== 0x02) return session;
  const protocol = derElement(session, version.end, top.end);
  // ssl_version 0x0304: TLS 1.3, as INTEGER 772 (two content bytes).
  if (
    !protocol ||
    protocol.tag !== 0x02 ||
    protocol.end - protocol.start !== 2 ||
    session[protocol.start] !== 0x03 ||
    session[protocol.start + 1] !== 0x04
  )
    return session;
  let peer: { at: number; end: number } | undefined;
  for (let at = protocol.end; at < top.end;) {
    const e = derElement(session, at, top.end);
    if (!e) return session;
    if (e.tag === 0xa3) {
      // [3] holds exactly one certificate (a SEQUENCE); anything else is not the layout read here.
      const cert = derElement(session, e.start, e.end);
      if (peer || !cert || cert.tag !== 0x30 || cert.end !== e.end) return session;
      peer = { at: e.at, end: e.end };
    }
    at = e.end;
  }
  if (!peer) return session;
  const before = session.subarray(top.start, peer.at);
  const after = session.subarray(peer.end, top.end);
  return Buffer.concat([sequenceHeader(before.length + after.length), before, after]);
}

// Renewing a server's ticket keys is rate-limited: a peer that keeps being
// refused must not make every client pay full handshakes continuously.
const ticketRenewals = new WeakMap<object, number>();
const TICKET_RENEWAL_MIN_MS = 10_000;

/**
 * Makes every session ticket the socket's server issued so far unusable, so
 * each client's next connection is a full handshake that presents its whole
 * chain (at most once per {@link TICKET_RENEWAL_MIN_MS} per server).
 */
function renewTicketKeys(socket: TLSSocket): void {
  const server = (socket as TLSSocket & { server?: TlsServer }).server;
  if (!server || typeof server.setTicketKeys !== 'function') return;
  const last = ticketRenewals.get(server) ?? -Infinity;
  if (Date.now() - last < TICKET_RENEWAL_MIN_MS) return;
  ticketRenewals.set(server, Date.now());
  server.setTicketKeys(randomBytes(48));
}

/**
 * Verifies the peer's chain against the bundle of its own trust domain;
 * returns its SPIFFE ID. Until when that holds — the earliest notAfter of
 * the path that verified, an intermediate or the bundle authority possibly
 * before the leaf — is kept with the socket: {@link peerNotAfter} answers it.
 *
 * A resumed session whose chain cannot be rebuilt here (its intermediates
 * were forgotten) is refused like any unverifiable chain — never accepted
 * on the strength of the earlier handshake — and the server's session
 * tickets are renewed, so that client's next connection is a full handshake
 * that presents its chain again.
 */
export function verifyPeerSocket(socket: TLSSocket, identity: IdentityProvider): SpiffeId {
  return verifyPeerSocketPath(socket, identity).id;
}

/**
 * {@link verifyPeerSocket}, answering the whole verification: the peer's ID,
 * until when it holds and which certificate of its path ends it.
 */
export function verifyPeerSocketPath(socket: TLSSocket, identity: IdentityProvider): X509SvidVerification {
  const chain = readPeerChain(socket);
  try {
    // What the peer presented goes as the handles Node already parsed; remembered issuers as DER.
    const verification = verifyX509SvidPath(
      chain ? [...chain.presented, ...chain.der.slice(chain.presented.length)] : [],
      identity,
    );
    if (chain) chain.verification = verification;
    return verification;
  } catch (err) {
    if (chain) chain.verification = undefined;
    if (chain?.issuersFromMemory && err instanceof X509SvidError && err.code === 'SVID_UNTRUSTED')
      renewTicketKeys(socket);
    throw err;
  }
}

/**
 * Best-effort read of the URI SAN of the peer's leaf, for error messages only
 * (never for a decision: decisions go through `verifyX509SvidPath`).
 */
export function peerIdForMessage(socket: TLSSocket | undefined): SpiffeId | undefined {
  try {
    const leaf = socket ? readPeerChain(socket)?.leaf : undefined;
    return leaf ? uriSanForMessage(leaf.subjectAltName) : undefined;
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
