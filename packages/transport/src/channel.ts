import { EventEmitter } from 'node:events';
import type { Duplex } from 'node:stream';
import type { PeerCertificate, TLSSocket } from 'node:tls';
import { Agent, Client, Dispatcher, Pool, buildConnector, errors } from 'undici';
import {
  SpiffeId,
  verifyX509SvidPath,
  type X509SvidVerification,
  type Authorizer,
  type IdentityProvider,
  type TrustDomain,
  X509SvidError,
  type X509Svid,
} from '@weave/identity';
import { parseTransportConfig, type TransportConfig, type TransportConfigInput } from './config.js';
import { CircuitBreaker } from './circuit-breaker.js';
import { PeerVerificationError, TransportError, TransportIdentityError } from './errors.js';
import { RetryPolicy } from './retry.js';
import type { Deadline } from './deadlines.js';
import {
  bundlesPem,
  certChainForVerify,
  clientSecureContext,
  keepServerVerification,
  lightPeerCertificateForHandshake,
  peerChainForVerify,
  peerLeaf,
  peerIdForMessage,
  peerCertificateEnds,
  peerNotAfter,
  peerIdOfCert,
  type PeerChainInput,
  serverNotAfter,
  sessionWithoutPeerCertificate,
  svidPem,
  x509Bundles,
  TLS_CIPHERS,
  TLS_SECURE_OPTIONS,
} from './tls.js';

/** TLS client options carrying a channel's identity and SPIFFE peer check (see {@link SecureChannel.tlsClientOptions}). */
export interface SpiffeTlsClientOptions {
  /** The current X.509-SVID chain, PEM. */
  readonly cert: string;
  /** Its private key, PEM. */
  readonly key: string;
  /** The trusted roots, PEM. */
  readonly ca: string;
  readonly minVersion: TransportConfig['minTlsVersion'];
  /** AEAD suites with forward secrecy only. */
  readonly ciphers: string;
  /** OpenSSL options: no TLS 1.2 renegotiation. */
  readonly secureOptions: number;
  readonly rejectUnauthorized: true;
  /** The channel's SPIFFE verification of the server; an Error refuses the connection. */
  readonly checkServerIdentity: (host: string, cert: PeerCertificate) => Error | undefined;
}

/**
 * How a failed call of another client stack bears on its peer's health, for
 * {@link SecureChannel.guardCall}; the same reading the channel gives its own
 * requests, whose attempt fails when it ends before a response started.
 *
 * - `'unreachable'`: the peer was not reached or ended the call before any
 *   answer (connection refused or lost, handshake failed or its peer
 *   refused): a failure.
 * - `'answered'`: the peer answered, with an error of its protocol (an A2A
 *   error, a refusal, an answer that breaks the protocol): it is up, a
 *   success, as any HTTP response is whatever its status.
 * - `'caller'`: the caller's own doing (its abort, its time running out on a
 *   call the peer had received, a client it closed): neither; a half-open
 *   trial so ended has not shown the peer healthy, and opens the circuit again.
 */
export type CallFailureKind = 'unreachable' | 'answered' | 'caller';

/** Who a channel will talk to: one SPIFFE ID, or an authorizer that may accept several. */
export type PeerSpec = SpiffeId | string | Authorizer;

/** Emitted as `'peer'` for every new connection whose peer passed verification. */
export interface PeerVerifiedEvent {
  readonly peer: SpiffeId;
  /** Serial number (hex) of the peer's leaf certificate; changes when the peer rotates. */
  readonly serialNumber: string;
  /** Which rotation generation of this channel made the connection (0 = first). */
  readonly generation: number;
}

/** Options of the convenience methods: undici's request options minus what the URL gives. */
export type ChannelRequestOptions = Omit<Dispatcher.RequestOptions, 'origin' | 'path' | 'method'> & {
  method?: Dispatcher.HttpMethod;
};

// Node's own chain-check failures: surfaced as PeerVerificationError like our SPIFFE checks.
const TLS_VERIFY_CODES = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'CERT_SIGNATURE_FAILURE',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'INVALID_CA',
  'INVALID_PURPOSE',
  'ERR_TLS_CERT_ALTNAME_INVALID',
]);

interface PeerMatcher {
  /** Shown as `expected` in errors. */
  readonly description: string;
  /** The only trust domain whose roots go into `ca`; undefined = every trusted bundle. */
  readonly trustDomain: TrustDomain | undefined;
  readonly check: (peer: SpiffeId) => string | undefined;
}

function peerMatcher(peer: PeerSpec): PeerMatcher {
  if (typeof peer === 'function') {
    const authorize = peer;
    return {
      description: `a peer accepted by ${authorize.name || 'the authorizer'}`,
      trustDomain: undefined,
      check: (id) => {
        try {
          const r = authorize(id);
          return r && r.ok === true ? undefined : r && 'reason' in r ? r.reason : 'authorizer refused';
        } catch (err) {
          return `authorizer threw: ${err instanceof Error ? err.message : String(err)}`;
        }
      },
    };
  }
  const want = typeof peer === 'string' ? SpiffeId.parse(peer) : peer;
  if (!(want instanceof SpiffeId))
    throw new TypeError('peer must be a SpiffeId, a SPIFFE ID string or an Authorizer');
  return {
    description: want.toString(),
    trustDomain: want.trustDomain,
    check: (id) => (id.equals(want) ? undefined : 'SPIFFE ID mismatch'),
  };
}

function isReplayable(body: unknown): boolean {
  return body == null || typeof body === 'string' || body instanceof Uint8Array;
}

const errorCode = (err: unknown): unknown => (err as { code?: unknown } | null)?.code;

/**
 * An undici {@link Dispatcher} that speaks mTLS with SPIFFE identities.
 *
 * - presents the identity provider's current X.509-SVID;
 * - trusts only the bundle of the expected peer's trust domain (or, for an
 *   authorizer, every trusted bundle, with the chain-ends-in-the-peer's-own-
 *   trust-domain check done in code);
 * - replaces hostname verification by SPIFFE verification of every new
 *   connection, run before the connection is handed to undici, so a mismatch
 *   fails with {@link PeerVerificationError} before any request byte is sent;
 * - resumes TLS sessions only with servers it verified, and checks the
 *   peer chain of the session again on every resumed connection (Node
 *   skips `checkServerIdentity` there), so no connection skips that check;
 * - on every identity update builds a new inner Agent and closes the old one
 *   once its in-flight requests end;
 * - holds every open connection to its server's verification: it is closed
 *   when the server's certificate expires, or when a bundle update means its
 *   chain no longer verifies, and what it still carries (a stream) fails
 *   with {@link PeerVerificationError}; a request made after that goes over
 *   a new connection, verified anew.
 *
 * Pass it anywhere undici takes a `dispatcher` (`undici.fetch(url, { dispatcher })`).
 */
export class SecureChannel extends Dispatcher {
  readonly config: TransportConfig;
  /** What this channel accepts as a peer (a SPIFFE ID or an authorizer description). */
  readonly expectedPeer: string;
  readonly #identity: IdentityProvider;
  readonly #matcher: PeerMatcher;
  readonly #retry: RetryPolicy;
  readonly #breaker: CircuitBreaker | undefined;
  readonly #retiring = new Set<Promise<void>>();
  /**
   * Sockets between TCP connect and the end of the TLS handshake. undici's
   * destroy() ends the connections it holds, not one still connecting: that
   * socket would live on until `connectTimeoutMs` against a peer that accepts
   * TCP and never answers the handshake.
   */
  readonly #connecting = new Set<TLSSocket>();
  /**
   * Every pool the inner Agents made that is not destroyed yet, the current
   * Agent's and those of Agents retired by a rotation. undici 7's Agent forgets
   * its pools when it is closed, so its destroy() after a close() (ours, or a
   * rotation's) reaches none of them: {@link destroy} ends these itself.
   */
  readonly #pools = new Set<Pool | Client>();
  /** Settled when {@link destroy} has ended everything: a close() still waiting ends with it. */
  readonly #destroyed: Promise<void>;
  #markDestroyed!: () => void;
  #destroying: Promise<void> | undefined;
  #agent: Agent;
  /** When the SVID the current Agent presents expires (epoch ms). */
  #notAfter = 0;
  /** Servers verified on the connections still open (see {@link #hold}). */
  readonly #live = new Set<LiveServer>();
  /**
   * The earliest certificate end of {@link #live}'s servers (epoch ms), or an
   * earlier time whose server has gone since: one clock read per request
   * tells that none has expired.
   */
  #serversNotAfter = Number.POSITIVE_INFINITY;
  #generation = 0;
  #closed = false;
  #unsubscribe: (() => void) | undefined;

  /**
   * @throws {TransportConfigError} for an invalid config (including `verifyPeer: false` or a TLS floor below 1.2).
   * @throws {SpiffeIdError} for an invalid peer SPIFFE ID string.
   * @throws {TransportIdentityError} when the provider has no SVID yet.
   */
  constructor(identity: IdentityProvider, peer: PeerSpec, config: TransportConfigInput = {}) {
    super();
    this.#destroyed = new Promise((resolve) => (this.#markDestroyed = resolve));
    this.config = parseTransportConfig(config);
    this.#identity = identity;
    this.#matcher = peerMatcher(peer);
    this.expectedPeer = this.#matcher.description;
    this.#retry = new RetryPolicy(this.config.retry);
    // Built first: it throws when the provider has no SVID yet, and then nothing else was started.
    this.#agent = this.#buildAgent(0);
    this.#notAfter = this.#pendingNotAfter;
    this.#breaker =
      this.config.circuitBreaker === false
        ? undefined
        : new CircuitBreaker({
            ...this.config.circuitBreaker,
            name: this.expectedPeer,
            // The caller's own abort says nothing about the peer's health.
            isFailure: (err) => errorCode(err) !== 'UND_ERR_ABORTED' && err !== CALLER_ABORTED,
          });
    this.#unsubscribe = identity.onUpdate((update) => {
      this.#rotate();
      // Only bundles decide whether a server verifies: a rotation of our own SVID changes none.
      if (update.reason !== 'svid') this.#verifyLive();
    });
  }

  /** How many times the inner Agent was replaced after identity updates. */
  get generation(): number {
    return this.#generation;
  }

  /** True once {@link close} or {@link destroy} was called. */
  get closed(): boolean {
    return this.#closed;
  }

  /** The channel's circuit breaker (undefined when disabled in the config). */
  get circuitBreaker(): CircuitBreaker | undefined {
    return this.#breaker;
  }

  /** Expiry of the SVID in the Agent {@link #buildAgent} built last. */
  #pendingNotAfter = 0;

  /** The TLS material of a connection made now (the current SVID, the trusted roots, the floor) and the SVID's expiry. */
  #tlsMaterial(): {
    material: Omit<SpiffeTlsClientOptions, 'rejectUnauthorized' | 'checkServerIdentity'>;
    notAfter: number;
  } {
    let tlsCreds: { cert: string; key: string };
    let notAfter: number;
    try {
      const svid = this.#identity.getX509Svid();
      tlsCreds = svidPem(svid);
      notAfter = svid.expiresAt.getTime();
    } catch (err) {
      throw new TransportIdentityError(
        `identity provider has no X.509-SVID for the channel: ${err instanceof Error ? err.message : String(err)}`,
        { cause: err },
      );
    }
    const td = this.#matcher.trustDomain;
    const ca = bundlesPem(this.#identity, td ? [td] : undefined);
    return {
      material: {
        ...tlsCreds,
        ca,
        minVersion: this.config.minTlsVersion,
        ciphers: TLS_CIPHERS,
        secureOptions: TLS_SECURE_OPTIONS,
      },
      notAfter,
    };
  }

  #noBundle(): PeerVerificationError {
    const td = this.#matcher.trustDomain;
    return new PeerVerificationError(
      this.expectedPeer,
      undefined,
      `no trusted X.509 bundle${td ? ` for trust domain ${td.name}` : ''}`,
      { notConnected: true },
    );
  }

  /**
   * TLS client options for another client stack on this channel's identity and
   * peer check, e.g. grpc-js (`credentials.createFromSecureContext(
   * tls.createSecureContext(o), { checkServerIdentity: o.checkServerIdentity })`):
   * the current SVID, the roots this channel trusts, its TLS floor, and a
   * `checkServerIdentity` that runs this channel's SPIFFE verification of the
   * server's chain — the same verifier as on the channel's own connections.
   * Node runs it during the handshake, before the connection is handed over,
   * so a refused peer receives no request byte. A verified peer is reported
   * to {@link onPeerVerified}. The options hold the SVID of the moment: build
   * new ones after {@link onRotated}. The consumer must not resume TLS sessions
   * (Node skips `checkServerIdentity` on a resumed session), and runs each
   * call through {@link guardCall}, so that the peer's circuit breaker sees it.
   *
   * @throws {TransportIdentityError} when the provider has no SVID.
   * @throws {PeerVerificationError} when no bundle for the peer is trusted.
   */
  tlsClientOptions(): SpiffeTlsClientOptions {
    const m = this.#tlsMaterial().material;
    if (m.ca === '') throw this.#noBundle();
    return { ...m, rejectUnauthorized: true, checkServerIdentity: this.#serverCheck(this.#generation) };
  }

  /**
   * Runs `call`, one call to this channel's peer that another client stack
   * makes on {@link tlsClientOptions} (grpc-js, for the A2A gRPC binding),
   * through this channel's circuit breaker, so that it counts for the peer's
   * health as the channel's own requests do, in the same breaker. While the
   * circuit is open it is refused with {@link CircuitOpenError}, and on a
   * closed channel with `CHANNEL_CLOSED`, without running `call`: no
   * connection is made. Admitted, `call` runs at once (synchronously), so a
   * caller that needs it started can tell. `kindOf` says how a failure of
   * `call` bears on the peer ({@link CallFailureKind}); the caller gets the
   * failure as it was, or `typed` of it when given, as it gets the channel's
   * refusal (so a caller typing both needs no promise of its own after this
   * one). `call`'s promise should settle once the peer has
   * answered (for a stream: once it is open), as the channel's own requests
   * count when their response starts.
   */
  guardCall<T>(
    call: () => Promise<T>,
    kindOf: (err: unknown) => CallFailureKind,
    typed?: (err: unknown) => Error,
  ): Promise<T> {
    // The shut-down breaker of a closed channel would refuse it untyped.
    if (this.#closed) {
      const closed = this.#closedError();
      return Promise.reject(typed ? typed(closed) : closed);
    }
    const breaker = this.#breaker;
    if (breaker !== undefined) return throughBreaker(breaker, call, kindOf, typed);
    const p = invoke(call);
    return typed ? p.catch((err: unknown) => Promise.reject(typed(err))) : p;
  }

  /**
   * Holds a connection made with {@link tlsClientOptions}, whose server
   * passed its `checkServerIdentity` with `cert`, to that verification while
   * it stays open, as the channel holds its own connections: `onLapse` is
   * called once, with the {@link PeerVerificationError} that says why, when
   * the server's certificate expires, or when an identity update brings
   * bundles under which its chain no longer verifies. From then on the
   * connection must carry nothing more: end what it carries, and take a new
   * connection (verified anew) for what comes next. Returns when the
   * verification ends (epoch ms: the first notAfter of the path the server's
   * chain verified through, which a bundle update may move, so read it at
   * each check), for a clock check before each new call, and `release`, to
   * call when the connection closes.
   */
  holdServer(
    cert: PeerCertificate,
    onLapse: (err: PeerVerificationError) => void,
  ): { readonly notAfter: number; readonly release: () => void } {
    return this.#hold(certChainForVerify(cert), serverNotAfter(cert), onLapse, () => peerIdOfCert(cert));
  }

  /**
   * The SPIFFE verification of a server, as a `checkServerIdentity`: the
   * chain Node read during the handshake against the bundle, then the expected
   * peer; a verified peer is reported to {@link onPeerVerified}.
   */
  #serverCheck(generation: number): SpiffeTlsClientOptions['checkServerIdentity'] {
    return (_host, cert) => {
      try {
        const verified = this.#verifyChain(certChainForVerify(cert), () => peerIdOfCert(cert));
        // Its end (the first notAfter of the path that verified) is the connection's: see #hold.
        keepServerVerification(cert, verified);
        this.#emit('peer', {
          peer: verified.id,
          serialNumber: cert.serialNumber ?? '',
          generation,
        } satisfies PeerVerifiedEvent);
        return undefined;
      } catch (err) {
        return err as Error;
      }
    };
  }

  #buildAgent(generation: number): Agent {
    let svid: X509Svid;
    try {
      svid = this.#identity.getX509Svid();
    } catch (err) {
      throw new TransportIdentityError(
        `identity provider has no X.509-SVID for the channel: ${err instanceof Error ? err.message : String(err)}`,
        { cause: err },
      );
    }
    this.#pendingNotAfter = svid.expiresAt.getTime();
    const td = this.#matcher.trustDomain;
    const bundles = x509Bundles(this.#identity, td ? [td] : undefined);
    const http2 = this.config.httpVersion === 'http2';
    // One secure context per SVID and bundle update, shared by every connection
    // (and every channel on the same identity): undici given PEM options would
    // build one per connect.
    const secureContext =
      bundles.length > 0 ? clientSecureContext(svid, bundles, this.config.minTlsVersion) : undefined;
    const tlsOptions = {
      ...(secureContext ? { secureContext } : {}),
      minVersion: this.config.minTlsVersion,
      rejectUnauthorized: true as const,
      // Hostnames mean nothing for SPIFFE: the SPIFFE verification replaces
      // Node's check. Node runs it during a full handshake with the chain it
      // has already read, so a refused peer never sees the socket handed to undici.
      checkServerIdentity: this.#serverCheck(generation),
      // undici's own session cache is off: sessions are kept below, only
      // from connections whose peer passed the check.
      maxCachedSessions: 0,
      allowH2: http2,
      timeout: this.config.connectTimeoutMs,
    };
    const full = buildConnector(tlsOptions);
    // TLS session tickets of verified servers, by server name, for this
    // generation only: a new SVID or bundle builds a new Agent and starts
    // empty. A resumed connection skips the certificate exchange (about half
    // the CPU of a new connection on both sides), not the SPIFFE check: Node
    // does not call checkServerIdentity on a resumed session, so the
    // connector below verifies the chain the session was made with, at the
    // time of the connection, against the current bundle and the expected
    // peer, before undici gets the socket.
    const sessions = new SessionStore();
    const connect: buildConnector.connector = (opts, callback) => {
      if (opts.protocol !== 'https:') {
        callback(insecureOrigin(opts.protocol), null);
        return;
      }
      if (!secureContext) {
        callback(this.#noBundle(), null);
        return;
      }
      const key = opts.servername || opts.hostname;
      let session = sessions.get(key);
      // Node 20's tls.connect decodes a `session` option twice (in the socket's
      // constructor and again before connecting): each decode parses the
      // server's certificate kept in it, about a tenth of the client's CPU per
      // resumed connection (connect bench profile). The ticket is set once,
      // below, unless the socket is already connected (an upgraded one starts
      // its handshake inside tls.connect).
      const base =
        session && opts.httpSocket ? buildConnector({ ...tlsOptions, session: session.ticket }) : full;
      // undici's typings say void, but the connector returns the socket (used for error details).
      const socket = base(opts, (err, sock) => {
        if (socket) this.#connecting.delete(socket);
        if (err) {
          // A ticket the server no longer accepts is not offered again.
          if (session) sessions.drop(key, session);
          callback(this.#wrapTlsError(err, socket), null);
          return;
        }
        const tls = sock as TLSSocket;
        let kept: KeptSession['peer'];
        let notAfter: number;
        // Who the server is, for the messages of a later lapse (see #hold).
        let idForMessage = (): SpiffeId | undefined => peerIdForMessage(tls);
        if (tls.isSessionReused()) {
          // The server proved it holds the session made with the chain kept
          // beside the ticket (Node has no peer certificate on a resumed
          // client session): that chain is checked now, as on a full handshake.
          kept = session?.peer ?? { chain: [], serialNumber: '', notAfter: 0 };
          try {
            const verified = this.#verifyChain(kept.chain, () => undefined);
            const peer = verified.id;
            // Now's path: the bundle may have changed since the ticket's handshake.
            notAfter = verified.expiresAt.getTime();
            idForMessage = () => peer;
            this.#emit('peer', {
              peer,
              serialNumber: kept.serialNumber,
              generation,
            } satisfies PeerVerifiedEvent);
          } catch (e) {
            sessions.drop(key, session);
            tls.destroy();
            callback(e as Error, null);
            return;
          }
        } else {
          // Node's handles, not DER: the verifier keeps its reading of each, so checking
          // this chain again on every resumed connection skips reading it from the bytes.
          kept = {
            chain: peerChainForVerify(tls),
            serialNumber: peerLeaf(tls)?.serialNumber ?? '',
            // What checkServerIdentity kept (keepServerVerification): its path's end.
            notAfter: peerNotAfter(tls),
          };
          notAfter = kept.notAfter;
        }
        const held = this.#hold(kept.chain, notAfter, (e) => tls.destroy(e), idForMessage);
        tls.once('close', held.release);
        // Tickets arrive after the handshake (TLS 1.3); only a verified connection's are kept,
        // without the server certificate inside (never read on resumption; decoding it was
        // most of what resuming cost this side, see sessionWithoutPeerCertificate).
        tls.on('session', (ticket: Buffer) =>
          sessions.set(key, { ticket: sessionWithoutPeerCertificate(ticket), peer: kept }),
        );
        callback(null, tls);
      }) as unknown as TLSSocket | undefined;
      if (socket) {
        this.#connecting.add(socket);
        if (session && base === full) {
          // What tls.connect does with the option, before the TCP connection
          // (and so the handshake) starts. A ticket OpenSSL cannot decode is
          // dropped: the connection is then a full handshake, checked by
          // checkServerIdentity like any other.
          try {
            // Documented (tlsSocket.setSession), missing from @types/node.
            (socket as TLSSocket & { setSession(ticket: Buffer): void }).setSession(session.ticket);
          } catch {
            sessions.drop(key, session);
            session = undefined;
          }
        }
        // Node's handshake hands checkServerIdentity a fully decoded chain; the check reads only the DER.
        lightPeerCertificateForHandshake(socket);
      }
    };
    // undici's default factory, with every pool it makes remembered (see #pools).
    const factory = (origin: string | URL, opts: object): Pool | Client => {
      for (const d of this.#pools) if (d.destroyed) this.#pools.delete(d);
      const d =
        (opts as { connections?: unknown }).connections === 1
          ? new Client(origin, opts as Client.Options)
          : new Pool(origin, opts as Pool.Options);
      this.#pools.add(d);
      return d;
    };
    return new Agent({
      factory,
      connect,
      allowH2: http2,
      // undici 7 caps concurrent HTTP/2 streams per session at `pipelining`.
      pipelining: http2 ? this.config.maxConcurrentStreams : 1,
      connections: this.config.connectionsPerOrigin,
      keepAliveTimeout: this.config.idleTimeoutMs,
      keepAliveMaxTimeout: this.config.idleTimeoutMs,
      headersTimeout: this.config.requestTimeoutMs,
      bodyTimeout: this.config.requestTimeoutMs,
    });
  }

  /**
   * Calls `listener` for every new connection whose peer passed verification
   * (e.g. to observe a peer's certificate rotation). Returns the unsubscribe function.
   */
  onPeerVerified(listener: (event: PeerVerifiedEvent) => void): () => void {
    return this.#listen('peer', listener as (...args: unknown[]) => void);
  }

  /** Calls `listener` with the new generation after each credential rotation. */
  onRotated(listener: (generation: number) => void): () => void {
    return this.#listen('rotated', listener as (...args: unknown[]) => void);
  }

  /** Calls `listener` when an identity update could not be applied (the previous credentials stay in use). */
  onRotationError(listener: (err: unknown) => void): () => void {
    return this.#listen('rotationError', listener as (...args: unknown[]) => void);
  }

  #listen(event: string, listener: (...args: unknown[]) => void): () => void {
    EventEmitter.prototype.on.call(this, event, listener);
    return () => void EventEmitter.prototype.off.call(this, event, listener);
  }

  // Dispatcher's typings only know undici's own events.
  #emit(event: 'peer' | 'rotated' | 'rotationError', ...args: unknown[]): void {
    try {
      EventEmitter.prototype.emit.call(this, event, ...args);
    } catch {
      // A throwing observer must not break a connection or a rotation.
    }
  }

  /** The SPIFFE check of every connection: the chain against the bundle, then the expected peer. */
  #verifyChain(chain: PeerChainInput, idForMessage: () => SpiffeId | undefined): X509SvidVerification {
    let verified: X509SvidVerification;
    try {
      verified = verifyX509SvidPath(chain, this.#identity);
    } catch (err) {
      const reason = err instanceof X509SvidError ? `${err.code}: ${err.message}` : String(err);
      throw new PeerVerificationError(this.expectedPeer, idForMessage(), reason, { cause: err });
    }
    const refused = this.#matcher.check(verified.id);
    if (refused !== undefined) throw new PeerVerificationError(this.expectedPeer, verified.id, refused);
    return verified;
  }

  #wrapTlsError(err: Error, socket: TLSSocket | undefined): Error {
    const code = errorCode(err);
    if (typeof code === 'string' && TLS_VERIFY_CODES.has(code)) {
      return new PeerVerificationError(
        this.expectedPeer,
        peerIdForMessage(socket),
        `${code}: ${err.message}`,
        {
          cause: err,
        },
      );
    }
    return err;
  }

  /**
   * Undefined while the SVID this channel presents is valid (one clock read
   * per request). Past its expiry: a newer SVID the provider holds is taken
   * (a missed update); without one, the error that says so — a call made now
   * fails at once instead of handshaking with an expired certificate the
   * peer will refuse.
   */
  #expired(now = Date.now()): TransportIdentityError | undefined {
    if (now < this.#notAfter) return undefined;
    let reason: string;
    let cause: unknown;
    try {
      const svid = this.#identity.getX509Svid();
      if (svid.expiresAt.getTime() > Date.now()) {
        this.#rotate();
        if (Date.now() < this.#notAfter) return undefined;
      }
      reason = `the X.509-SVID of ${svid.id.toString()} expired at ${svid.expiresAt.toISOString()} and no newer one is available`;
    } catch (err) {
      reason = err instanceof Error ? err.message : String(err);
      cause = err;
    }
    return new TransportIdentityError(
      `not calling ${this.expectedPeer}: this workload has no valid X.509-SVID (${reason})`,
      cause === undefined ? undefined : { cause },
    );
  }

  /**
   * Holds a connection whose server verified with `chain` to that
   * verification while it stays open: `lapse` is called, once, when the
   * path it verified through expires (`peerCertificateEnds`, or the first
   * request that finds it past `notAfter`, which a bundle update may move),
   * or when a bundle update refuses the chain ({@link #verifyLive}).
   * `release` when the connection closes.
   */
  #hold(
    chain: PeerChainInput,
    notAfter: number,
    lapse: (err: PeerVerificationError) => void,
    idForMessage: () => SpiffeId | undefined,
  ): { readonly notAfter: number; readonly release: () => void } {
    const expire = (): void => this.#lapse(live, this.#expiredServer(live));
    const live: LiveServer = {
      chain,
      notAfter,
      lapse,
      idForMessage,
      expire,
      end: peerCertificateEnds.add(expire, notAfter),
    };
    this.#live.add(live);
    if (notAfter < this.#serversNotAfter) this.#serversNotAfter = notAfter;
    return {
      // Read at each call: a bundle update may move it (#verifyLive).
      get notAfter() {
        return live.notAfter;
      },
      release: () => {
        peerCertificateEnds.delete(live.end);
        this.#live.delete(live);
      },
    };
  }

  #lapse(live: LiveServer, err: PeerVerificationError): void {
    if (!this.#live.delete(live)) return;
    peerCertificateEnds.delete(live.end);
    live.lapse(err);
  }

  #expiredServer(live: LiveServer): PeerVerificationError {
    // The verifier's own words (SVID_EXPIRED and the dates) where it can say them.
    try {
      this.#verifyChain(live.chain, live.idForMessage);
    } catch (err) {
      if (err instanceof PeerVerificationError) return err;
    }
    return new PeerVerificationError(
      this.expectedPeer,
      live.idForMessage(),
      `the server's certificate expired at ${new Date(live.notAfter).toISOString()}`,
    );
  }

  /**
   * Ends the connections whose server's certificate has expired by `now`
   * (`peerCertificateEnds` may not have fired yet); true when it ended any.
   * Sets {@link #serversNotAfter} to the earliest end left.
   */
  #endExpiredServers(now: number): boolean {
    let ended = false;
    let next = Number.POSITIVE_INFINITY;
    for (const live of this.#live) {
      if (now < live.notAfter) next = Math.min(next, live.notAfter);
      else {
        this.#lapse(live, this.#expiredServer(live));
        ended = true;
      }
    }
    this.#serversNotAfter = next;
    return ended;
  }

  /**
   * Verifies every open connection's server against the current bundles;
   * ends those refused. One still verified may now verify through another
   * path (a renewed or new authority), whose end is then the connection's,
   * earlier or later than the one it had (as PeerVerifier does for a server's callers).
   */
  #verifyLive(): void {
    for (const live of this.#live) {
      let end: number;
      try {
        end = this.#verifyChain(live.chain, live.idForMessage).expiresAt.getTime();
      } catch (err) {
        this.#lapse(live, err as PeerVerificationError);
        continue;
      }
      if (end === live.notAfter) continue;
      peerCertificateEnds.delete(live.end);
      live.notAfter = end;
      live.end = peerCertificateEnds.add(live.expire, end);
      // A later end leaves #serversNotAfter early: the next request past it finds the true earliest.
      if (end < this.#serversNotAfter) this.#serversNotAfter = end;
    }
  }

  #rotate(): void {
    if (this.#closed) return;
    let next: Agent;
    try {
      next = this.#buildAgent(this.#generation + 1);
    } catch (err) {
      // Keep serving with the previous credentials; the provider will send another update.
      this.#emit('rotationError', err);
      return;
    }
    const old = this.#agent;
    this.#agent = next;
    this.#notAfter = this.#pendingNotAfter;
    this.#generation++;
    // close() lets in-flight requests finish before the old connections go away.
    const p = old
      .close()
      .catch(() => undefined)
      .finally(() => this.#retiring.delete(p));
    this.#retiring.add(p);
    this.#emit('rotated', this.#generation);
  }

  /**
   * undici's low-level entry point (used by `fetch`, `undici.request` and the
   * A2A client): routes the request to the current inner Agent, through the
   * circuit breaker, and repeats a failed attempt when
   * {@link RetryPolicy.shouldRetry} says it is safe (the rule of
   * {@link SecureChannel.request} too, here knowing whether a connection
   * carried the request), so a GOAWAY or an idle-session close does not fail
   * a request that can safely be repeated. Handlers of undici's classic shape
   * (every client above) get both; a handler of the newer shape
   * (`onRequestStart`, from interceptors) is passed through as is.
   */
  override dispatch(options: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean {
    if (!isHttpsOrigin(options.origin)) {
      const err = insecureOrigin(String(options.origin));
      if (typeof handler.onError === 'function') {
        handler.onError(err);
        return false;
      }
      throw err;
    }
    if (this.#closed) {
      const err = this.#closedError();
      if (typeof handler.onError === 'function') {
        setImmediate(() => handler.onError?.(err));
        return false;
      }
      throw err;
    }
    const now = Date.now();
    // The request goes to the Agent from the next turn, after undici has seen these connections end.
    if (now >= this.#serversNotAfter) this.#endExpiredServers(now);
    const expired = this.#expired(now);
    if (expired) {
      if (typeof handler.onError === 'function') {
        // From the next turn, as any failure: a caller that retries at once must not spin the loop.
        setImmediate(() => handler.onError?.(expired));
        return false;
      }
      throw expired;
    }
    const classic = typeof handler.onError === 'function' && typeof handler.onRequestStart !== 'function';
    if (!classic || (this.config.retry.retries === 0 && !this.#breaker)) {
      // Written from the event loop's check phase rather than from inside the
      // socket read that settled the previous request (where a caller's next
      // request usually comes from): over TLS on Node 20 the same request then
      // costs far less CPU to send (bench/: about 9 µs per call on the caller).
      // The Agent current at that moment takes it: a rotation may come in between, or a close.
      setImmediate(() => {
        if (this.#closed) handler.onError?.(this.#closedError());
        else this.#agent.dispatch(options, handler);
      });
      return true;
    }
    const h = new ChannelHandler(this.#attemptDeps, options, handler);
    setImmediate(() => h.attempt());
    return true;
  }

  // What a dispatched request's handler runs each attempt through: the breaker, then the current Agent.
  readonly #attemptDeps: AttemptDeps = {
    send: (options, handler) => {
      // Closed since the request was dispatched: the Agent and the breaker would refuse it untyped.
      if (this.#closed) {
        handler.onError(this.#closedError());
        return;
      }
      const breaker = this.#breaker;
      if (!breaker) {
        this.#agent.dispatch(options, handler);
        return;
      }
      let ran = false;
      breaker
        .execute(
          () =>
            new Promise<void>((resolve, reject) => {
              ran = true;
              handler.watch(resolve, reject);
              this.#agent.dispatch(options, handler);
            }),
        )
        .catch((err: unknown) => {
          // Refused by an open (or shut down) circuit: the attempt never ran.
          // Otherwise the handler has already seen the failure.
          if (!ran) handler.onError(err as Error);
        });
    },
    isClosed: () => this.#closed,
    policy: () => this.#retry,
  };

  /**
   * Sends a request and resolves with undici's response data. Accepts undici's
   * option object (with `origin` and `path`) or a URL plus options. Goes
   * through the circuit breaker and the retry policy.
   */
  override request<TOpaque = null>(
    options: Dispatcher.RequestOptions<TOpaque>,
    callback: (err: Error | null, data: Dispatcher.ResponseData<TOpaque>) => void,
  ): void;
  override request<TOpaque = null>(
    options: Dispatcher.RequestOptions<TOpaque>,
  ): Promise<Dispatcher.ResponseData<TOpaque>>;
  override request(url: string | URL, options?: ChannelRequestOptions): Promise<Dispatcher.ResponseData>;
  override request(
    a: Dispatcher.RequestOptions<unknown> | string | URL,
    b?: ChannelRequestOptions | ((err: Error | null, data: Dispatcher.ResponseData<unknown>) => void),
  ): Promise<Dispatcher.ResponseData<unknown>> | void {
    let p: Promise<Dispatcher.ResponseData<unknown>>;
    try {
      p = this.#send(toRequestOptions(a, typeof b === 'function' ? undefined : b));
    } catch (err) {
      p = Promise.reject(err as Error);
    }
    if (typeof b === 'function') {
      p.then(
        (data) => b(null, data),
        (err: Error) => b(err, undefined as never),
      );
      return;
    }
    return p;
  }

  // The hot path: no async wrappers and no p-retry on the first attempt; the
  // retry policy only comes in once an attempt failed.
  #send(opts: Dispatcher.RequestOptions<unknown>): Promise<Dispatcher.ResponseData<unknown>> {
    const first = this.#attempt(opts);
    if (this.#retry.options.retries === 0) return first;
    return first.then(undefined, (err: unknown) => this.#retryAfter(err, opts));
  }

  #attempt(opts: Dispatcher.RequestOptions<unknown>): Promise<Dispatcher.ResponseData<unknown>> {
    if (this.#closed) {
      const err = this.#closedError();
      return new Promise((_, reject) => setImmediate(reject, err));
    }
    const now = Date.now();
    if (now >= this.#serversNotAfter && this.#endExpiredServers(now)) {
      // From the next turn: undici fails the requests queued on a connection
      // that ended with an error until it has seen that end, so this one
      // would fail with the expired server's error instead of taking a new connection.
      return new Promise((resolve) => setImmediate(() => resolve(this.#attempt(opts))));
    }
    const expired = this.#expired(now);
    if (expired) {
      // Settled from the next turn, as any failure: a caller that retries at once must not spin the loop.
      return new Promise((_, reject) => setImmediate(reject, expired));
    }
    const breaker = this.#breaker;
    if (breaker === undefined) return this.#agent.request(opts);
    const signal = opts.signal;
    if (!(signal instanceof AbortSignal)) return breaker.execute(() => this.#agent.request(opts));
    // A caller's abort rejects with its signal's reason, which says nothing about the peer.
    return throughBreaker(
      breaker,
      () => this.#agent.request(opts),
      // undici rejects an aborted call with the signal's reason: only that is the caller's.
      (err) => (signal.aborted && err === signal.reason ? 'caller' : 'unreachable'),
    );
  }

  async #retryAfter(
    first: unknown,
    opts: Dispatcher.RequestOptions<unknown>,
  ): Promise<Dispatcher.ResponseData<unknown>> {
    const ctx = {
      method: opts.method,
      replayable: isReplayable(opts.body),
      ...(opts.signal instanceof AbortSignal ? { signal: opts.signal } : {}),
    };
    return this.#retry.retryAfterFirst(first, () => this.#attempt(opts), ctx);
  }

  #url(
    url: string | URL,
    options: Omit<ChannelRequestOptions, 'method'>,
    method: Dispatcher.HttpMethod,
  ): Promise<Dispatcher.ResponseData> {
    let parts: { origin: string; path: string };
    try {
      parts = typeof url === 'string' ? splitUrl(url) : checkedParts(url);
    } catch (err) {
      return Promise.reject(err as Error);
    }
    return this.#send(
      withTarget(options, parts.origin, parts.path, method),
    ) as Promise<Dispatcher.ResponseData>;
  }

  /** `GET url`. */
  get(
    url: string | URL,
    options: Omit<ChannelRequestOptions, 'method'> = {},
  ): Promise<Dispatcher.ResponseData> {
    return this.#url(url, options, 'GET');
  }

  /** `POST url` (never retried once sent: POST is not idempotent). */
  post(
    url: string | URL,
    options: Omit<ChannelRequestOptions, 'method'> = {},
  ): Promise<Dispatcher.ResponseData> {
    return this.#url(url, options, 'POST');
  }

  /** `PUT url`. */
  put(
    url: string | URL,
    options: Omit<ChannelRequestOptions, 'method'> = {},
  ): Promise<Dispatcher.ResponseData> {
    return this.#url(url, options, 'PUT');
  }

  /** `DELETE url`. */
  delete(
    url: string | URL,
    options: Omit<ChannelRequestOptions, 'method'> = {},
  ): Promise<Dispatcher.ResponseData> {
    return this.#url(url, options, 'DELETE');
  }

  /**
   * Stops following identity updates and closes gracefully: in-flight requests
   * finish first. A {@link destroy} meanwhile ends them, and this close with it.
   */
  override close(): Promise<void>;
  override close(callback: () => void): void;
  override close(callback?: () => void): Promise<void> | void {
    this.#stopFollowing();
    const graceful = Promise.all([this.#agent.close().catch(() => undefined), ...this.#retiring]);
    const p = Promise.race([graceful.then(() => undefined), this.#destroyed]);
    if (callback) {
      void p.then(callback, callback);
      return;
    }
    return p;
  }

  /**
   * Aborts everything in flight and closes: the requests fail (with `err`, or
   * undici's `ClientDestroyedError`) and every connection ends, one still in
   * its TLS handshake included, also after {@link close} or a rotation began
   * closing them gracefully.
   */
  override destroy(err: Error | null, callback: () => void): void;
  override destroy(callback: () => void): void;
  override destroy(err?: Error | null): Promise<void>;
  override destroy(a?: Error | null | (() => void), b?: () => void): Promise<void> | void {
    const err = typeof a === 'function' ? null : (a ?? null);
    const cb = typeof a === 'function' ? a : b;
    const p = (this.#destroying ??= this.#destroyAll(err));
    if (cb) {
      void p.then(cb, cb);
      return;
    }
    return p;
  }

  #destroyAll(err: Error | null): Promise<void> {
    this.#stopFollowing();
    // Not waiting for the graceful closes under way (the retired Agents'): they end with their pools.
    const ended = [this.#agent, ...this.#pools].map((d) => d.destroy(err).catch(() => undefined));
    this.#pools.clear();
    // After the pools: the requests waiting on these sockets are already failed.
    for (const s of this.#connecting) s.destroy(err ?? new errors.ClientDestroyedError());
    this.#connecting.clear();
    return Promise.all(ended).then(() => this.#markDestroyed());
  }

  /**
   * What a request on a closed channel fails with: the inner Agent (undici's
   * `ClientClosedError` / `ClientDestroyedError`) and the shut-down breaker
   * (opossum's untyped error) would each refuse it in their own words.
   */
  #closedError(): TransportError {
    return new TransportError(
      'CHANNEL_CLOSED',
      `the SecureChannel to ${this.expectedPeer} is closed (close() or destroy() was called): not sending`,
    );
  }

  #stopFollowing(): void {
    this.#closed = true;
    this.#unsubscribe?.();
    this.#unsubscribe = undefined;
    this.#breaker?.shutdown();
  }

  /** `await using channel = new SecureChannel(...)` closes it at scope end. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

// Agents call the same few URLs and origins over and over: each is parsed
// once and remembered (up to PARSED_MAX of each kind, the oldest forgotten
// first). Parsing them on every request was about a tenth of the caller's CPU
// that SecureChannel adds to undici's (bench/, `transport`).
const PARSED_MAX = 512;

/** `map`'s value for `key`, made by `parse` the first time; a `parse` that throws is not remembered. */
function remembered<V>(map: Map<string, V>, key: string, parse: (key: string) => V): V {
  let value = map.get(key);
  if (value === undefined) {
    value = parse(key);
    if (map.size >= PARSED_MAX) map.delete(map.keys().next().value!);
    map.set(key, value);
  }
  return value;
}

const httpsOrigins = new Map<string, boolean>();
// The last origin is kept apart: comparing a string with it is cheaper than
// hashing it, and each request usually brings a fresh copy of the same origin.
let lastOrigin: { readonly origin: string; readonly https: boolean } = { origin: '', https: false };

function parseHttps(origin: string): boolean {
  try {
    return new URL(origin).protocol === 'https:';
  } catch {
    return false;
  }
}

function isHttpsOrigin(origin: string | URL | undefined): boolean {
  if (origin === undefined) return false;
  if (origin instanceof URL) return origin.protocol === 'https:';
  const key = String(origin);
  if (key === lastOrigin.origin) return lastOrigin.https;
  const https = remembered(httpsOrigins, key, parseHttps);
  lastOrigin = { origin: key, https };
  return https;
}

function insecureOrigin(what: string): TransportError {
  return new TransportError('INSECURE_URL', `SecureChannel only speaks https, got ${what}`);
}

function checkedParts(url: URL): { origin: string; path: string } {
  if (url.protocol !== 'https:') throw insecureOrigin(`${url.protocol}//`);
  return { origin: url.origin, path: `${url.pathname}${url.search}` };
}

const urlParts = new Map<string, { origin: string; path: string }>();

function parseUrlParts(url: string): { origin: string; path: string } {
  return checkedParts(new URL(url));
}

function splitUrl(url: string): { origin: string; path: string } {
  return remembered(urlParts, url, parseUrlParts);
}

function toRequestOptions(
  a: Dispatcher.RequestOptions<unknown> | string | URL,
  extra: ChannelRequestOptions | undefined,
): Dispatcher.RequestOptions<unknown> {
  if (typeof a === 'string' || a instanceof URL) {
    const { origin, path } = typeof a === 'string' ? splitUrl(a) : checkedParts(a);
    return withTarget(extra, origin, path, extra?.method ?? 'GET');
  }
  if (!isHttpsOrigin(a.origin)) throw insecureOrigin(String(a.origin));
  return a;
}

/**
 * The caller's options plus the target. Our fields are written first and
 * again after the copy, so the caller's options cannot replace them: building
 * it as `{ ...options, origin, path, method }` instead measured about 8 µs more
 * client CPU per request inside undici (bench: the same request through a
 * plain Agent, only the options object built differently).
 */
function withTarget(
  options: Omit<ChannelRequestOptions, 'method'> | undefined,
  origin: string,
  path: string,
  method: Dispatcher.HttpMethod,
): Dispatcher.RequestOptions<unknown> {
  const o: Dispatcher.RequestOptions<unknown> = { origin, path, method, ...options };
  o.origin = origin;
  o.path = path;
  o.method = method;
  return o;
}

/** What an attempt of a dispatched request goes through (see {@link SecureChannel.dispatch}). */
interface AttemptDeps {
  /** Dispatches one attempt on the current Agent, through the breaker. */
  readonly send: (options: Dispatcher.DispatchOptions, handler: ChannelHandler) => void;
  readonly isClosed: () => boolean;
  readonly policy: () => RetryPolicy;
}

/** What the breaker counts for an attempt the caller aborted: nothing against the peer. */
const CALLER_ABORTED = new Error('aborted by the caller');

/**
 * `call()`; what it throws before returning a promise, rejected: read like
 * any other failure of the call, not as the breaker's own.
 */
function invoke<T>(call: () => Promise<T>): Promise<T> {
  try {
    return call();
  } catch (err) {
    return Promise.reject(err as Error);
  }
}

/**
 * Runs `call` through `breaker`, which is told how a failure bears on the
 * peer ({@link CallFailureKind}, read by `kindOf`): an unreachable peer is a
 * failure, an answer a success, the caller's own doing `CALLER_ABORTED`
 * (neither). The caller gets the failure itself (`typed` of it, when given),
 * as it gets the breaker's refusal: the one path of the channel's requests
 * with a signal and of {@link SecureChannel.guardCall}.
 */
function throughBreaker<T>(
  breaker: CircuitBreaker,
  call: () => Promise<T>,
  kindOf: (err: unknown) => CallFailureKind,
  typed?: (err: unknown) => Error,
): Promise<T> {
  let failure: unknown;
  let answered = false;
  return breaker
    .execute(() =>
      invoke(call).catch((err: unknown) => {
        const kind = kindOf(err);
        if (kind === 'unreachable') throw err;
        failure = err;
        if (kind === 'caller') throw CALLER_ABORTED;
        answered = true;
        return undefined;
      }),
    )
    .then(
      (value) => {
        if (answered) throw typed ? typed(failure) : failure;
        return value as T;
      },
      (err: unknown) => {
        const e = err === CALLER_ABORTED ? failure : err;
        throw typed ? typed(e) : e;
      },
    );
}

/**
 * Wraps a classic undici handler for the attempts of one request: tells the
 * breaker how each attempt ended (a response started, or a failure before
 * one) and repeats it when {@link RetryPolicy.shouldRetry} allows, knowing
 * whether a connection carried it (`onConnect`) and whether a response
 * started.
 */
class ChannelHandler implements Dispatcher.DispatchHandler {
  #sent = false;
  #responded = false;
  #callerAborted = false;
  readonly #deps: AttemptDeps;
  readonly #opts: Dispatcher.DispatchOptions;
  readonly #inner: Dispatcher.DispatchHandler;
  #attempt = 0;
  #outcome: { ok: () => void; fail: (err: unknown) => void } | undefined;

  constructor(deps: AttemptDeps, opts: Dispatcher.DispatchOptions, inner: Dispatcher.DispatchHandler) {
    this.#deps = deps;
    this.#opts = opts;
    this.#inner = inner;
  }

  /** Runs the next attempt. */
  attempt(): void {
    try {
      this.#deps.send(this.#opts, this);
    } catch (e) {
      this.#inner.onError?.(e as Error);
    }
  }

  /** Reports the current attempt's outcome to the breaker. */
  watch(ok: () => void, fail: (err: unknown) => void): void {
    this.#outcome = { ok, fail };
  }

  #settle(err?: Error): void {
    const o = this.#outcome;
    if (!o) return;
    this.#outcome = undefined;
    if (err === undefined) o.ok();
    else o.fail(this.#callerAborted ? CALLER_ABORTED : err);
  }

  onConnect(abort: (err?: Error) => void): void {
    this.#sent = true;
    // The caller (its signal, its timeout) aborts through this function: such
    // a failure is neither the peer's fault nor to be repeated.
    this.#inner.onConnect?.((err) => {
      this.#callerAborted = true;
      abort(err);
    });
  }

  onResponseStarted(): void {
    this.#responded = true;
    this.#settle();
    this.#inner.onResponseStarted?.();
  }

  onHeaders(statusCode: number, headers: Buffer[], resume: () => void, statusText: string): boolean {
    this.#responded = true;
    this.#settle();
    return this.#inner.onHeaders?.(statusCode, headers, resume, statusText) ?? true;
  }

  onUpgrade(statusCode: number, headers: Buffer[] | string[] | null, socket: Duplex): void {
    this.#responded = true;
    this.#settle();
    this.#inner.onUpgrade?.(statusCode, headers, socket);
  }

  onData(chunk: Buffer): boolean {
    return this.#inner.onData?.(chunk) ?? true;
  }

  onComplete(trailers: string[] | null): void {
    this.#inner.onComplete?.(trailers);
  }

  onBodySent(chunkSize: number, totalBytesSent: number): void {
    this.#inner.onBodySent?.(chunkSize, totalBytesSent);
  }

  onError(err: Error): void {
    this.#settle(err);
    const policy = this.#deps.policy();
    const retry =
      !this.#callerAborted &&
      !this.#deps.isClosed() &&
      this.#attempt < policy.options.retries &&
      policy.shouldRetry(err, {
        method: this.#opts.method,
        replayable: isReplayable(this.#opts.body),
        sent: this.#sent,
        responded: this.#responded,
      });
    if (!retry) {
      this.#inner.onError?.(err);
      return;
    }
    this.#attempt++;
    this.#sent = false;
    // Not unref'd: a caller awaiting this request must keep the process alive.
    setTimeout(() => this.attempt(), policy.delayFor(this.#attempt));
  }
}

/** A TLS session ticket and the peer chain verified on the connection it came from. */
interface KeptSession {
  readonly ticket: Buffer;
  readonly peer: {
    readonly chain: PeerChainInput;
    readonly serialNumber: string;
    /** When the leaf expires (epoch ms), read once at the full handshake. */
    readonly notAfter: number;
  };
}

/** A server verified on a connection still open, held to that verification (see SecureChannel's #hold). */
interface LiveServer {
  readonly chain: PeerChainInput;
  /** The end of the path its chain verified through (epoch ms); a bundle update may move it. */
  notAfter: number;
  /** The server's SPIFFE ID, for messages only. */
  readonly idForMessage: () => SpiffeId | undefined;
  /** Ends the connection and what it carries, with why. */
  readonly lapse: (err: PeerVerificationError) => void;
  /** Lapses it as expired: what {@link end} calls. */
  readonly expire: () => void;
  /** Its path's end at `notAfter`, on the process's one timer for them (`peerCertificateEnds`). */
  end: Deadline<() => void>;
}

/**
 * TLS session tickets by server name, at most {@link SessionStore.MAX} names
 * (the least recently stored go first); the newest ticket of a name replaces
 * the one before.
 */
class SessionStore {
  static readonly MAX = 100;
  readonly #byName = new Map<string, KeptSession>();

  get(name: string): KeptSession | undefined {
    return this.#byName.get(name);
  }

  set(name: string, session: KeptSession): void {
    this.#byName.delete(name);
    if (this.#byName.size >= SessionStore.MAX) this.#byName.delete(this.#byName.keys().next().value!);
    this.#byName.set(name, session);
  }

  /** Forgets `session` (a refused or failed resumption); a newer one stored meanwhile stays. */
  drop(name: string, session: KeptSession | undefined): void {
    if (session !== undefined && this.#byName.get(name) === session) this.#byName.delete(name);
  }
}
