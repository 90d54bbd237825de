// A server's check of its callers' chains, cached per connection and held
// for the connection's life: mtlsAuth, createMtlsServer's connection bounds
// and the A2A gRPC binding share it (no fastify here, so servers that are not
// fastify import it from the package root).
import type { TLSSocket } from 'node:tls';
import {
  type IdentityProvider,
  type SpiffeId,
  X509SvidError,
  type X509SvidPathCertificate,
} from '@weave/identity';
import type { Deadline } from './deadlines.js';
import { peerCertificateEnds, verifyPeerSocketPath } from './tls.js';

/**
 * What {@link PeerVerifier.verify} found for one connection: the peer's
 * SPIFFE ID, or why its chain was refused.
 *
 * @internal
 */
export interface PeerVerification {
  /** The verifier that verified (verifiers of different providers may trust different bundles). */
  readonly owner: PeerVerifier;
  readonly epoch: number;
  /**
   * Until when the result holds (epoch ms): the earliest notAfter of the
   * path the peer's chain verified through (leaf, intermediates, bundle
   * authority), past which it no longer verifies; a refusal holds for its epoch.
   */
  readonly until: number;
  /** The certificate of that path that expires at `until` (a verified peer only). */
  readonly expiring?: X509SvidPathCertificate;
  readonly peer?: SpiffeId;
  readonly error?: string;
}

// The verification result lives on the TLS socket itself: a property read is
// cheaper per request than a WeakMap lookup, and it goes away with the socket.
const VERIFIED = Symbol('weave.mtlsAuth.verified');
type CachingSocket = TLSSocket & { [VERIFIED]?: PeerVerification };

/** What a held connection's peer lost: its chain expired (a certificate of its path), or a bundle change refused it. */
type Lapse = (reason: string, expired: boolean) => boolean;

const verifiers = new WeakMap<IdentityProvider, PeerVerifier>();

/**
 * Verifies a connection's peer chain against the bundle of the
 * peer's own trust domain, once per connection and bundle generation of one
 * identity provider, until the peer's chain expires: a bundle change
 * invalidates every result, and a result past the earliest notAfter of the
 * path it verified through (the leaf, an intermediate CA or the bundle
 * authority) is verified again (and refused as expired), so a keep-alive
 * connection or an HTTP/2 session does not outlive its peer's chain. One per provider
 * ({@link PeerVerifier.use}), shared by every mtlsAuth on it, by
 * createMtlsServer's per-peer connection bound, which verifies as the
 * handshake completes so that the connection's first request finds the
 * result instead of verifying again (some 0.4 ms per connection), and by the
 * A2A gRPC binding, which admits a connection with it and holds it
 * ({@link PeerVerifier.hold}).
 *
 * @internal
 */
export class PeerVerifier {
  readonly #identity: IdentityProvider;
  #epoch = 0;
  /** Open connections held to their verification (see hold): how to close each, and its chain's end. */
  readonly #held = new Map<TLSSocket, { readonly close: Lapse; end: Deadline<() => void> }>();
  /** How many servers and plugins use it (see use). */
  #users = 0;
  readonly #unsubscribe: () => void;

  private constructor(identity: IdentityProvider) {
    this.#identity = identity;
    this.#unsubscribe = identity.onUpdate((update) => {
      this.#epoch++;
      // Only bundles decide whether a peer verifies: a rotation of our own SVID changes none.
      if (update.reason !== 'svid') this.#verifyHeld();
    });
  }

  /**
   * The verifier of `identity`, shared until every user has called
   * `release` (then it stops listening to the provider's updates).
   */
  static use(identity: IdentityProvider): { verifier: PeerVerifier; release: () => void } {
    let verifier = verifiers.get(identity);
    if (!verifier) {
      verifier = new PeerVerifier(identity);
      verifiers.set(identity, verifier);
    }
    verifier.#users++;
    const used = verifier;
    let released = false;
    return {
      verifier: used,
      release() {
        if (released) return;
        released = true;
        if (--used.#users > 0) return;
        used.#unsubscribe();
        if (verifiers.get(identity) === used) verifiers.delete(identity);
      },
    };
  }

  /** The socket's peer verified, or the result still holding from its last verification. */
  verify(socket: TLSSocket): PeerVerification {
    const cached = (socket as CachingSocket)[VERIFIED];
    // One clock read per request: the chain's end is found once per verification.
    if (cached && cached.owner === this && cached.epoch === this.#epoch && Date.now() < cached.until)
      return cached;
    let v: PeerVerification;
    try {
      const found = verifyPeerSocketPath(socket, this.#identity);
      v = {
        owner: this,
        epoch: this.#epoch,
        until: found.expiresAt.getTime(),
        expiring: found.expiringCertificate,
        peer: found.id,
      };
    } catch (err) {
      v = {
        owner: this,
        epoch: this.#epoch,
        until: Number.POSITIVE_INFINITY,
        error:
          err instanceof X509SvidError
            ? `${err.code}: ${err.message}`
            : `client certificate rejected: ${String(err)}`,
      };
    }
    (socket as CachingSocket)[VERIFIED] = v;
    return v;
  }

  /**
   * Holds an open connection whose peer verified (`v`) to that verification
   * for its whole life, not only at its requests: `close` is called when the
   * peer's chain expires — the first certificate of the path it verified
   * through, leaf, intermediate CA or bundle authority (`expired` true) — or
   * as soon as a bundle change refuses its chain, so that a response still
   * running to that peer (an SSE stream, a long download, a gRPC stream)
   * ends too. The chain's end waits on the process's one timer for them
   * (`peerCertificateEnds`), not a timer per connection, and is forgotten
   * when the connection closes. `close` says whether it closed the
   * connection: one it left open (idle, every later request refused) stays
   * held while a bundle change may still trust it again.
   */
  hold(socket: TLSSocket, v: PeerVerification, close: Lapse): void {
    // #verifyHeld may move its end (a new path after a bundle change): the record holds the current one.
    const held = { close, end: this.#endAt(socket, v, close) };
    this.#held.set(socket, held);
    socket.once('close', () => {
      peerCertificateEnds.delete(held.end);
      this.#held.delete(socket);
    });
  }

  /** The end of `socket`'s hold at `v.until`, on the process's one timer. */
  #endAt(socket: TLSSocket, v: PeerVerification, close: Lapse): Deadline<() => void> {
    return peerCertificateEnds.add(() => {
      this.#held.delete(socket);
      close(`${expiredText(v)} expired at ${new Date(v.until).toISOString()}`, true);
    }, v.until);
  }

  /**
   * Verifies every held connection against the current bundles; closes those
   * refused. One still verified may now verify through another path (a new
   * authority), whose end is then the connection's.
   */
  #verifyHeld(): void {
    for (const [socket, held] of this.#held) {
      const v = this.verify(socket);
      if (v.peer) {
        if (v.until !== held.end.at) {
          peerCertificateEnds.delete(held.end);
          held.end = this.#endAt(socket, v, held.close);
        }
        continue;
      }
      if (!held.close(v.error ?? 'client certificate rejected', false)) continue;
      this.#held.delete(socket);
      peerCertificateEnds.delete(held.end);
    }
  }
}

/** Which certificate of a held peer's path ran out, for the message that ends its connection. */
function expiredText(v: PeerVerification): string {
  switch (v.expiring?.role) {
    case 'intermediate':
      return `the intermediate CA ${v.expiring.subject} of the client's chain`;
    case 'authority':
      return `the bundle authority ${v.expiring.subject} the client's chain ends in`;
    default:
      return 'the client certificate';
  }
}
