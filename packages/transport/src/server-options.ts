// TLS options and certificate rotation for any Node TLS server (https, http2,
// tls, or the server under fastify), and the bounds every Weave server shares
// (header list size, log rate, connections, HTTP/2 stream resets, lingering close). No HTTP framework here: the fastify plugin and
// factory are in server.ts, the `@weave/transport/server` entry.
import type { Server as HttpsServer } from 'node:https';
import type { IncomingMessage } from 'node:http';
import {
  constants as h2,
  type Http2SecureServer,
  type Http2Server,
  type ServerHttp2Session,
  type ServerHttp2Stream,
} from 'node:http2';
import { Socket, type DropArgument } from 'node:net';
import type { Server as TlsServer, TLSSocket } from 'node:tls';
import { wholeNumber, type IdentityProvider, type SpiffeId } from '@weave/identity';
import { z } from 'zod';
import {
  formatIssues,
  parseTransportConfig,
  type TransportConfig,
  type TransportConfigInput,
} from './config.js';
import { TransportConfigError, TransportIdentityError } from './errors.js';
import { bundlesPem, svidPem, TLS_CIPHERS, TLS_SECURE_OPTIONS } from './tls.js';

/**
 * TLS options for fastify's `https` option, `https.createServer` and
 * `http2.createSecureServer`: own SVID, every trusted root (own and federated)
 * as `ca`, client certificates required and verified, TLS floor from the config,
 * AEAD suites with forward secrecy only, no renegotiation.
 */
export interface MtlsServerOptions {
  cert: string;
  key: string;
  ca: string;
  requestCert: true;
  rejectUnauthorized: true;
  minVersion: TransportConfig['minTlsVersion'];
  /** AEAD suites with forward secrecy only (matters with a TLS 1.2 floor). */
  ciphers: string;
  /** OpenSSL options: no TLS 1.2 renegotiation. */
  secureOptions: number;
  /** HTTP/2 servers also accept HTTP/1.1 clients. */
  allowHTTP1: true;
}

/**
 * Builds the mTLS options of a server from the identity provider's current
 * state. Node's `ca` trusts all roots equally, so pair it with {@link mtlsAuth}
 * (or {@link verifyPeerSocket}-style code) to enforce "the chain ends in the
 * client's own trust domain".
 *
 * @throws {TransportConfigError} for an invalid config.
 * @throws {TransportIdentityError} when the provider has no SVID or no bundle.
 */
export function createMtlsServerOptions(
  identity: IdentityProvider,
  config: TransportConfigInput = {},
): MtlsServerOptions {
  const cfg = parseTransportConfig(config);
  return secureContextOf(identity, cfg);
}

/** @internal {@link createMtlsServerOptions} from an already parsed config. */
export function secureContextOf(identity: IdentityProvider, cfg: TransportConfig): MtlsServerOptions {
  let creds: { cert: string; key: string };
  try {
    creds = svidPem(identity);
  } catch (err) {
    throw new TransportIdentityError('identity provider has no X.509-SVID for the server', { cause: err });
  }
  const ca = bundlesPem(identity);
  // An empty `ca` would make Node fall back to the public Web PKI roots.
  if (ca === '') throw new TransportIdentityError('identity provider has no trusted X.509 bundle');
  return {
    ...creds,
    ca,
    requestCert: true,
    rejectUnauthorized: true,
    minVersion: cfg.minTlsVersion,
    ciphers: TLS_CIPHERS,
    secureOptions: TLS_SECURE_OPTIONS,
    allowHTTP1: true,
  };
}

/**
 * Keeps a node TLS server (https, http2 secure, or `app.server` of fastify) on
 * the provider's current SVID and bundles: on every update it calls
 * `setSecureContext`; existing connections keep working, new ones get the new
 * certificate. Returns the unsubscribe function.
 */
export function watchServerIdentity(
  server: TlsServer | HttpsServer | Http2SecureServer,
  identity: IdentityProvider,
  config: TransportConfigInput = {},
  onError?: (err: unknown) => void,
): () => void {
  const cfg = parseTransportConfig(config);
  return identity.onUpdate(() => {
    try {
      server.setSecureContext(secureContextOf(identity, cfg));
    } catch (err) {
      // Keep the previous context: a broken update must not take the server down.
      onError?.(err);
    }
  });
}

/**
 * Makes a TLS server's HTTP/1.1 connections feed Node's HTTP parser through
 * the socket's stream instead of straight from the TLS layer in C++.
 *
 * Why: when a request arrives while the previous answer on the connection is
 * still being flushed (an answer above the socket's 16 KiB high-water mark,
 * flushed after the current event-loop turn), Node pauses the parser. Fed from
 * C++, the parser still receives the rest of what one TLS read decrypted — the
 * next records of a body above 16 KiB — fails with `HPE_PAUSED`, and the
 * server resets the connection (Node 20). Through the stream, a paused socket
 * holds those bytes back until the answer is flushed. HTTP/2 sessions are
 * left alone: they own their socket.
 *
 * `createMtlsServer` (`@weave/transport/server`) applies it; call it on a TLS server built otherwise.
 */
export function parseHttp1FromStream(server: TlsServer | HttpsServer | Http2SecureServer): void {
  server.on('secureConnection', (socket: TLSSocket) => {
    // Node's HTTP server hands the socket back to its stream as soon as
    // anyone listens for 'data' (its own listener already feeds the parser).
    if (socket.alpnProtocol !== 'h2') socket.on('data', noop);
  });
}

function noop(): void {}

/**
 * Bounds of {@link lingerOnEarlyClose}: how long, and how much, a closing
 * connection still reads of a request it answered before the request arrived.
 */
interface LingerBounds {
  /** Longest wait for the client's next bytes, ms. */
  readonly idleMs: number;
  /** Longest linger in all, ms. */
  readonly maxMs: number;
  /** Most bytes read (and dropped) in all. */
  readonly maxBytes: number;
}

/**
 * The bounds {@link lingerOnEarlyClose} lingers within. nginx waits 5 s for
 * the next bytes and 30 s in all, Apache 2 s per read: shorter in all here,
 * as each lingering connection holds a slot of `maxConnections`. A client
 * sending more than 16 MiB past an answer, or for more than 5 s, is cut as
 * before (a reset), so it loses the answer if it had not read it.
 */
const LINGER_BOUNDS: LingerBounds = { idleMs: 2_000, maxMs: 5_000, maxBytes: 16 * 1024 * 1024 };

/**
 * Makes a server's HTTP/1.1 connections close "lingering" (RFC 9112 §9.6, as
 * nginx and Apache do) when the server closes one whose request has not fully
 * arrived: an answer given from the request's headers, with `connection:
 * close` (a 413 on the declared Content-Length, mtlsAuth's 403), while the
 * client is still sending its body. After the answer the connection is
 * half-closed, and what the client still sends is read and dropped, never
 * kept, until it closes its side, or stops sending for `idleMs`, or `maxMs`
 * or `maxBytes` are reached; then it is destroyed.
 *
 * Why: closed at once, the socket still had the client's unread bytes, and
 * more kept coming; the kernel answers those with a reset, which makes the
 * client drop the answer it had not read yet. A client that writes its whole
 * body before it reads (httpx, so the official Python A2A SDK, and most
 * clients without `Expect: 100-continue`) got a bare connection reset for
 * every body over the server's limit instead of its 413. HTTP/2 needs none of
 * this: an answered stream is reset alone, its connection stays open.
 *
 * The closing goes through `socket.destroySoon()`, which Node's HTTP server
 * calls to close a connection after an answer with `connection: close`, and
 * only then is the HTTP parser taken off the socket: what arrives after the
 * answer is never read as a next request. Whether the request had fully
 * arrived is read off that parser there (see {@link HttpConnection}), so no
 * request costs anything. `createMtlsServer` applies it.
 */
export function lingerOnEarlyClose(server: HttpsServer | Http2SecureServer): void {
  // One function for every connection: no closure per connection, and
  // nothing done per request (no 'request' listener, no map of requests).
  const destroySoon = function (this: HttpConnection): void {
    // The request the connection closes on, if its body is still coming; else none.
    if (this.parser?.incoming?.complete === false && this.writable) lingeringClose(this, LINGER_BOUNDS);
    else Socket.prototype.destroySoon.call(this);
  };
  server.on('secureConnection', (socket: TLSSocket) => {
    if (socket.alpnProtocol !== 'h2') socket.destroySoon = destroySoon;
  });
}

/**
 * An HTTP/1.1 connection's socket as Node's HTTP server keeps it. `parser` is
 * Node's internal field, not in its typings, but stable: the server sets it
 * on every connection (`connectionListenerInternal`), whether the parser is
 * fed from C++ or through the socket's stream as {@link parseHttp1FromStream}
 * makes it, and reads `parser.incoming` itself (`socketOnTimeout`).
 * `incoming` is the last request the parser read, or null once that
 * request's body was read to its end (`clearIncoming`, which Node runs just
 * before it calls `destroySoon()`): a request there not yet `complete` is one
 * the connection closes on while its body is still coming. Checked in Node
 * 20.20, 22.23 and 24.22 (`_http_server.js`, `_http_common.js`), with the
 * stream-fed parser on each.
 */
type HttpConnection = TLSSocket & { parser?: { incoming?: IncomingMessage | null } | null };

/** Half-closes `socket` once its answer is written, then reads and drops what comes, within `bounds`. */
function lingeringClose(socket: TLSSocket, bounds: LingerBounds): void {
  // The rest of a request already answered: the HTTP parser must not read it as a next one.
  socket.removeAllListeners('data');
  let left = bounds.maxBytes;
  const cut = (): void => {
    socket.destroy();
  };
  const idle = setTimeout(cut, bounds.idleMs);
  const total = setTimeout(cut, bounds.maxMs);
  socket.once('close', () => {
    clearTimeout(idle);
    clearTimeout(total);
  });
  socket.on('data', (chunk: Buffer) => {
    left -= chunk.length;
    if (left <= 0) cut();
    else idle.refresh();
  });
  // The client is done: close once the answer is written (the timers still bound
  // a client that does not read it). Before Node's own listener, whose parser
  // then reports the body cut short: fastify's clientError handler, finding the
  // socket closed already, does not destroy it again with that error.
  socket.prependOnceListener('end', () => Socket.prototype.destroySoon.call(socket));
  socket.end();
  socket.resume();
}

/** Where {@link logTlsRefusals} writes (a pino or fastify logger fits). */
export interface TlsRefusalLog {
  warn(obj: object, msg: string): void;
}

/** Rate of {@link logTlsRefusals} and {@link LogRate}: at most `max` lines per `windowMs`. */
export interface TlsRefusalLogRate {
  /** Lines per window: a whole number, at least 1. */
  readonly max: number;
  /** Length of the window: a whole number of ms, at least 1. */
  readonly windowMs: number;
}

// The window is compared with the clock, never set on a timer, so it needs no
// timer cap. Each bad value would fail silently instead: a NaN max logs every
// refusal, a max under 1 none; a NaN window stays open forever (silent after
// the first max lines), a window under 1 ms never limits.
const TlsRefusalLogRateSchema = z.object({
  max: wholeNumber(1, Number.MAX_SAFE_INTEGER, 'a whole number of lines, at least 1'),
  windowMs: wholeNumber(1, Number.MAX_SAFE_INTEGER, 'a whole number of milliseconds, at least 1'),
});

/**
 * Limits one kind of log line to `rate.max` per window of `rate.windowMs`
 * (default 10 a minute), for lines anyone can cause at will (a refused
 * handshake, a refused call), so a flood of them cannot flood the log. A
 * window opens with the first line after the previous one ended; the first
 * line let through after a window that dropped some says how many
 * (`suppressed`). Read off `Date.now()`, never a timer, so nothing needs
 * stopping. {@link logTlsRefusals} and the A2A HTTP bindings use it.
 *
 * @example
 * ```ts
 * const rate = new LogRate();
 * const extra = rate.take();
 * if (extra) log.warn({ ...fields, ...extra }, 'call refused');
 * ```
 */
export class LogRate {
  readonly #max: number;
  readonly #windowMs: number;
  #windowStart = 0;
  #lines = 0;
  #suppressed = 0;

  /**
   * @throws {TransportConfigError} when `rate.max` or `rate.windowMs` is not a whole number of at least 1.
   */
  constructor(rate: TlsRefusalLogRate = { max: 10, windowMs: 60_000 }) {
    const checked = TlsRefusalLogRateSchema.safeParse(rate);
    if (!checked.success) {
      throw new TransportConfigError(
        checked.error.issues.map((i) => `${['rate', ...i.path.map(String)].join('.')}: ${i.message}`),
      );
    }
    this.#max = checked.data.max;
    this.#windowMs = checked.data.windowMs;
  }

  /**
   * Counts one line: the fields to add to it when it is to be logged
   * (`suppressed` when lines were dropped since the last one), undefined
   * when it is to be dropped.
   */
  take(): { suppressed?: number } | undefined {
    const now = Date.now();
    if (now - this.#windowStart >= this.#windowMs) {
      this.#windowStart = now;
      this.#lines = 0;
    }
    if (this.#lines >= this.#max) {
      this.#suppressed++;
      return undefined;
    }
    this.#lines++;
    const suppressed = this.#suppressed;
    this.#suppressed = 0;
    return suppressed ? { suppressed } : {};
  }
}

/**
 * Logs each TLS handshake a server refuses (no client certificate, one
 * OpenSSL did not verify, no shared cipher, a renegotiation, ...) as one
 * `warn` line with the reason: OpenSSL's verification error of the client
 * certificate (`CERT_HAS_EXPIRED`, `UNABLE_TO_VERIFY_LEAF_SIGNATURE`, ...),
 * else the TLS error. A refused certificate otherwise shows only as "socket
 * hang up": Node destroys the socket and keeps the reason on
 * `socket.authorizationError`. At most `rate.max` lines per window (default
 * 10 a minute; see {@link LogRate}), so a flood of bad handshakes cannot
 * flood the log; the first line after a window that dropped some says how
 * many (`suppressed`). `createMtlsServer` applies it. Returns the function
 * that stops it.
 *
 * @throws {TransportConfigError} when `rate.max` or `rate.windowMs` is not a whole number of at least 1.
 */
export function logTlsRefusals(
  server: TlsServer | HttpsServer | Http2SecureServer,
  log: TlsRefusalLog,
  rate?: TlsRefusalLogRate,
  msg = 'TLS handshake refused',
): () => void {
  const limit = new LogRate(rate);
  const onRefusal = (err: Error & { code?: string; reason?: string }, socket: TLSSocket): void => {
    const extra = limit.take();
    if (!extra) return;
    // Node sets it to OpenSSL's verification code (a string, whatever the typings say).
    const certError = socket.authorizationError as unknown;
    const reason = certError
      ? `client certificate refused: ${String(certError)}`
      : (err.reason ?? err.message);
    log.warn(
      {
        reason,
        code: err.code,
        remoteAddress: socket.remoteAddress,
        ...extra,
      },
      msg,
    );
  };
  server.on('tlsClientError', onRefusal);
  return () => server.off('tlsClientError', onRefusal);
}

/**
 * SETTINGS_MAX_CONCURRENT_STREAMS of an HTTP/2 server made by
 * `createMtlsServer` (the A2A gRPC binding advertises the same). Node
 * advertises no bound by default, so one authenticated connection could hold
 * streams that never send their body until the session's memory cap (about
 * 15 000 on Node 20, some 6 KB of heap each) refused more. Over the bound
 * nghttp2 refuses a stream (REFUSED_STREAM) before any hook or route runs,
 * and Node closes a connection that keeps opening them. 1000 is four times
 * an A2A caller's default task limit: room for a stream per task
 * subscription, a client that needs more opens another connection.
 */
export const MAX_CONCURRENT_STREAMS = 1000;

/**
 * The size of a header list as HTTP/2 counts it against
 * SETTINGS_MAX_HEADER_LIST_SIZE (RFC 9113 §6.5.2: name and value in bytes,
 * plus 32 per field), as Node and nghttp2 count it. `headers` is either
 * Node's raw form (`rawHeaders`: name, value, name, value, …; a trailing
 * name without a value is not counted) or a headers object, in which an
 * array value is one field per element and an undefined one no field (as
 * Node sends it). Binary values are counted as sent (gRPC's `-bin` ones in
 * base64, as `Metadata.toHttp2Headers()` gives them). For a bound the same
 * on every server and binding (Node's `http.maxHeaderSize` on HTTP/1.1).
 */
export function headerListBytes(
  headers: readonly string[] | Readonly<Record<string, string | number | readonly string[] | undefined>>,
): number {
  let n = 0;
  if (isStringArray(headers)) {
    for (let i = 0; i + 1 < headers.length; i += 2) {
      n += Buffer.byteLength(headers[i] as string) + Buffer.byteLength(headers[i + 1] as string) + 32;
    }
    return n;
  }
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined) continue;
    const nameBytes = Buffer.byteLength(name) + 32;
    if (!isStringArray(value)) n += nameBytes + Buffer.byteLength(String(value));
    else for (const v of value) n += nameBytes + Buffer.byteLength(v);
  }
  return n;
}

// Array.isArray does not narrow a readonly array out of a union.
function isStringArray(v: unknown): v is readonly string[] {
  return Array.isArray(v);
}

const connectionCount = wholeNumber(1, Number.MAX_SAFE_INTEGER, 'a whole number of connections, at least 1');

/**
 * Bounds on the connections one server holds, taken by `createMtlsServer`
 * and the A2A gRPC binding as options of the same names. Measured on
 * loopback (Node 20, dev-CA SVIDs), an open connection holds 50 KiB
 * (HTTP/1.1) to 100 KiB (HTTP/2 with a stream waiting for its body) of the
 * server's memory, and one client opened 15 000 of them in 80 s: without a
 * bound, its handshake rate and the file descriptor limit were the only ones.
 */
export const ConnectionLimitsSchema = z.object({
  /**
   * Open connections per server, those still in their TLS handshake
   * included: one over it is closed as it is accepted, before any TLS (Node's
   * `server.maxConnections`). Default 10 000, about 1 GB of the server's
   * memory at the figures above; keep it under the process's file
   * descriptor limit.
   */
  maxConnections: connectionCount.default(10_000),
  /**
   * Open connections per verified peer SPIFFE ID: a connection over it is
   * closed as its handshake completes, before any request is read. Default
   * 1000, a tenth of the server's default, so that it takes ten identities
   * to fill a server; raise it when many replicas share one SPIFFE ID and
   * each keeps many connections.
   */
  maxConnectionsPerPeer: connectionCount.default(1_000),
  /**
   * Connections one remote address may hold in their TLS handshake at once:
   * one over it is closed as it is accepted. Default 64. Why: handshakes in
   * progress count against `maxConnections` for up to `connectTimeoutMs`,
   * unauthenticated, so one address opening connections and never finishing
   * them (3 000 in 1.8 s) filled a server of 1000 and locked every caller
   * out; a handshake takes a few ms, so honest clients, even many behind one
   * NAT or proxy address, seldom have more than a few in progress.
   */
  maxHandshakesPerAddress: connectionCount.default(64),
});
/** What callers may pass to {@link parseConnectionLimits}: each bound optional. */
export type ConnectionLimitsInput = z.input<typeof ConnectionLimitsSchema>;
/** Connection bounds with every default filled in. */
export type ConnectionLimits = z.output<typeof ConnectionLimitsSchema>;

/**
 * Validates connection bounds and fills in defaults.
 *
 * @throws {TransportConfigError} naming each bound that is not a whole number of at least 1.
 */
export function parseConnectionLimits(input: ConnectionLimitsInput = {}): ConnectionLimits {
  const res = ConnectionLimitsSchema.safeParse(input ?? {});
  if (!res.success) throw new TransportConfigError(formatIssues(res.error));
  return res.data;
}

/**
 * Connections a server refused since it was made, by the bound that refused
 * them: `server` by `maxConnections`, `peer` by `maxConnectionsPerPeer`,
 * `address` by `maxHandshakesPerAddress`. Each only grows.
 */
export interface ConnectionRefusals {
  readonly server: number;
  readonly peer: number;
  readonly address: number;
}

/**
 * Holds a TLS server to {@link ConnectionLimits}: `maxConnections` at once
 * (Node's `server.maxConnections`: a connection over it is closed as it is
 * accepted), `maxHandshakesPerAddress` handshakes in progress per remote
 * address (closed as accepted), and `maxConnectionsPerPeer` for each SPIFFE ID the server
 * {@link ConnectionLimiter.admit | admits}. Each refusal is counted and
 * logged as a `warn` line with the count so far (`refused`), at most
 * 10 lines a minute per kind ({@link LogRate}), so a flood of them cannot
 * flood the log. It also knows every handshake in progress, so that a
 * server closing can end them ({@link ConnectionLimiter.closeHandshakes}).
 * `createMtlsServer` and the A2A gRPC binding apply it.
 */
export class ConnectionLimiter {
  readonly #limits: ConnectionLimits;
  readonly #server: TlsServer | HttpsServer | Http2SecureServer;
  readonly #log: TlsRefusalLog;
  readonly #msg: string;
  /** Connections held per verified SPIFFE ID. */
  readonly #perPeer = new Counts();
  /** Handshakes in progress per remote address. */
  readonly #handshaking = new Counts();
  /** Each handshake in progress, by its raw connection's {@link endpointOf}: the socket, and how to release its count. */
  readonly #handshakeOf = new Map<string, { readonly socket: Socket; readonly release: () => void }>();
  /** Set by {@link closeHandshakes}: every connection from then on is closed as it is accepted. */
  #closing = false;
  /** Each bound's refusals so far, and the rate of its log lines. */
  readonly #refusals = {
    maxConnections: { refused: 0, lines: new LogRate() },
    maxConnectionsPerPeer: { refused: 0, lines: new LogRate() },
    maxHandshakesPerAddress: { refused: 0, lines: new LogRate() },
  };

  readonly #onDrop = (data?: DropArgument): void => {
    this.#refuse('maxConnections', { remoteAddress: data?.remoteAddress }, 'the server holds maxConnections');
  };

  readonly #onConnection = (socket: Socket): void => {
    if (this.#closing) {
      socket.destroy();
      return;
    }
    const address = socket.remoteAddress;
    const endpoint = endpointOf(socket);
    // No address: the peer is already gone.
    if (address === undefined || endpoint === undefined) return;
    if (this.#handshaking.of(address) >= this.#limits.maxHandshakesPerAddress) {
      this.#refuse(
        'maxHandshakesPerAddress',
        { remoteAddress: address },
        'the address holds maxHandshakesPerAddress handshakes in progress',
      );
      socket.destroy();
      return;
    }
    this.#handshaking.add(address);
    let released = false;
    const release = (): void => {
      if (released) return;
      released = true;
      if (this.#handshakeOf.get(endpoint)?.release === release) this.#handshakeOf.delete(endpoint);
      this.#handshaking.remove(address);
    };
    // The TLS socket Node wraps around a raw one does not lead back to it;
    // both report the same endpoint.
    this.#handshakeOf.set(endpoint, { socket, release });
    socket.once('close', release);
  };

  readonly #onSecureConnection = (socket: TLSSocket): void => {
    const endpoint = endpointOf(socket);
    if (endpoint !== undefined) this.#handshakeOf.get(endpoint)?.release();
  };

  /**
   * Sets `server.maxConnections` and logs the connections it drops; bounds
   * the handshakes in progress per remote address. `msg` starts each log line.
   */
  constructor(
    server: TlsServer | HttpsServer | Http2SecureServer,
    limits: ConnectionLimits,
    log: TlsRefusalLog,
    msg = 'connection refused',
  ) {
    this.#server = server;
    this.#limits = limits;
    this.#log = log;
    this.#msg = msg;
    server.maxConnections = limits.maxConnections;
    server.on('drop', this.#onDrop);
    // First, so that a connection refused here reaches no other listener alive.
    server.prependListener('connection', this.#onConnection);
    server.on('secureConnection', this.#onSecureConnection);
  }

  /**
   * Counts `socket`, whose handshake verified `peer`, against the peer's
   * bound until it closes. False, with nothing counted and the refusal
   * logged, when the peer already holds `maxConnectionsPerPeer`: the caller
   * then closes the socket. Call it once per connection.
   */
  admit(socket: Socket, peer: SpiffeId): boolean {
    const key = peer.toString();
    if (this.#perPeer.of(key) >= this.#limits.maxConnectionsPerPeer) {
      this.#refuse(
        'maxConnectionsPerPeer',
        { peer: key, remoteAddress: socket.remoteAddress },
        'the peer holds maxConnectionsPerPeer',
      );
      return false;
    }
    this.#perPeer.add(key);
    socket.once('close', () => this.#perPeer.remove(key));
    return true;
  }

  /** Connections refused so far, by bound (see {@link ConnectionRefusals}). */
  get refused(): ConnectionRefusals {
    const r = this.#refusals;
    return {
      server: r.maxConnections.refused,
      peer: r.maxConnectionsPerPeer.refused,
      address: r.maxHandshakesPerAddress.refused,
    };
  }

  /**
   * For a server that is closing: ends every handshake still in progress,
   * and every connection accepted from now on. Node's `server.close()` waits
   * for them all, and an HTTP server's close ends only the connections it
   * already knows (handshaken; fastify's `forceCloseConnections` too), so a
   * TCP connection that never sent a ClientHello held the close until the
   * handshake timeout (Node's default: 120 s). With `'silent'`, only the
   * handshakes whose client has sent nothing yet: a client further on may
   * have completed its side and sent its request with its last handshake
   * message (TLS 1.3), which a server closing gently still answers.
   * Returns how many handshakes it ended.
   */
  closeHandshakes(which: 'all' | 'silent' = 'all'): number {
    this.#closing = true;
    let ended = 0;
    for (const { socket } of [...this.#handshakeOf.values()]) {
      if (which === 'silent' && socket.bytesRead > 0) continue;
      socket.destroy();
      ended++;
    }
    return ended;
  }

  /** Stops logging dropped connections and bounding handshakes per address (the server's `maxConnections` stays). */
  stop(): void {
    this.#server.off('drop', this.#onDrop);
    this.#server.off('connection', this.#onConnection);
    this.#server.off('secureConnection', this.#onSecureConnection);
  }

  /** Counts a refusal by `bound` and logs it, with the bound and the count so far, at its line rate. */
  #refuse(bound: keyof ConnectionLimits, fields: object, why: string): void {
    const kind = this.#refusals[bound];
    kind.refused++;
    const extra = kind.lines.take();
    if (!extra) return;
    this.#log.warn(
      { code: 'CONNECTION_LIMIT', ...fields, [bound]: this.#limits[bound], refused: kind.refused, ...extra },
      `${this.#msg}: ${why}`,
    );
  }
}

/** How many of something each key holds; a key whose count falls to 0 is forgotten. */
class Counts {
  readonly #counts = new Map<string, number>();

  of(key: string): number {
    return this.#counts.get(key) ?? 0;
  }

  add(key: string): void {
    this.#counts.set(key, this.of(key) + 1);
  }

  remove(key: string): void {
    const left = this.of(key) - 1;
    if (left > 0) this.#counts.set(key, left);
    else this.#counts.delete(key);
  }
}

/**
 * `address:port` of a connection's peer, undefined once the socket is closed:
 * how a raw connection and the TLS socket Node wraps around it are matched
 * (the second does not lead back to the first).
 */
function endpointOf(socket: Socket): string | undefined {
  return socket.remoteAddress === undefined ? undefined : `${socket.remoteAddress}:${socket.remotePort}`;
}

/**
 * How many HTTP/2 streams a client may reset before {@link closeHttp2ResetFloods}
 * closes its connection: `burst` at once, then `perSecond` more each second
 * (nghttp2's own rate, a fifth of its burst).
 */
export const HTTP2_RESET_LIMIT = { burst: 200, perSecond: 33 } as const;

const RESETS = Symbol('weave.http2.resets');
type ResetCountingSession = ServerHttp2Session & { [RESETS]?: { tokens: number; at: number } };

/**
 * Closes an HTTP/2 connection (GOAWAY ENHANCE_YOUR_CALM, then the socket) as
 * soon as its client has reset more streams than {@link HTTP2_RESET_LIMIT}
 * allows: rapid reset (CVE-2023-44487), where each stream opened and reset
 * at once still starts its request (a route or call handler ran for 1200 of
 * them on one connection), and streams the server resets because the client
 * sent something invalid on them. Why here: nghttp2's own limit (1000 resets,
 * then 33 a second) answers with a GOAWAY, but Node then stops reading and
 * keeps the socket open until the session's idle timeout (forever on a server
 * without one), so the connection still held its slot and memory. A stream
 * counts as reset when it closes before the server ended its answer. Logs
 * each closed connection as a `warn` line, at most 10 a minute
 * ({@link LogRate}). `createMtlsServer` and the A2A gRPC binding apply it.
 * Returns the function that stops it.
 */
export function closeHttp2ResetFloods(
  server: Http2Server | Http2SecureServer,
  log: TlsRefusalLog,
  msg = 'HTTP/2 connection closed: too many streams reset',
): () => void {
  const lines = new LogRate();
  let closed = 0;
  // One function for every stream, no closure per stream: it runs for each aborted stream only.
  const onAborted = function (this: ServerHttp2Stream): void {
    const session = this.session as ResetCountingSession | undefined;
    // A session being torn down aborts its open streams: those are not the client's resets.
    if (!session || session.destroyed) return;
    const now = Date.now();
    let bucket = session[RESETS];
    if (!bucket) {
      bucket = { tokens: HTTP2_RESET_LIMIT.burst, at: now };
      session[RESETS] = bucket;
    } else {
      const seconds = Math.floor((now - bucket.at) / 1000);
      if (seconds > 0) {
        bucket.tokens = Math.min(
          HTTP2_RESET_LIMIT.burst,
          bucket.tokens + seconds * HTTP2_RESET_LIMIT.perSecond,
        );
        bucket.at += seconds * 1000;
      }
    }
    if (--bucket.tokens >= 0) return;
    closed++;
    const extra = lines.take();
    if (extra) {
      log.warn(
        {
          code: 'HTTP2_RESET_FLOOD',
          remoteAddress: session.socket?.remoteAddress,
          limit: HTTP2_RESET_LIMIT,
          closed,
          ...extra,
        },
        msg,
      );
    }
    // The error goes to the server's 'sessionError' listeners; the code to the client's GOAWAY.
    // After this turn, not inside it: 'aborted' can fire while nghttp2 is
    // still handing over the connection's data, and a session destroyed
    // there made Node 22 abort the whole process (stream_base.cc:
    // "Assertion failed: onread->IsFunction()") when the next frame came.
    bucket.tokens = Number.POSITIVE_INFINITY;
    setImmediate(() => {
      if (!session.destroyed) session.destroy(new Error(msg), h2.NGHTTP2_ENHANCE_YOUR_CALM);
    });
  };
  const onStream = (stream: ServerHttp2Stream): void => {
    stream.once('aborted', onAborted);
  };
  server.on('stream', onStream);
  return () => server.off('stream', onStream);
}
