// TLS options and certificate rotation for any Node TLS server (https, http2,
// tls, or the server under fastify). No HTTP framework here: the fastify
// plugin and factory are in server.ts, the `@weave/transport/server` entry.
import type { Server as HttpsServer } from 'node:https';
import type { Http2SecureServer } from 'node:http2';
import type { Server as TlsServer, TLSSocket } from 'node:tls';
import { wholeNumber, type IdentityProvider } from '@weave/identity';
import { z } from 'zod';
import { parseTransportConfig, type TransportConfig, type TransportConfigInput } from './config.js';
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

/** Where {@link logTlsRefusals} writes (a pino or fastify logger fits). */
export interface TlsRefusalLog {
  warn(obj: object, msg: string): void;
}

/** Rate of {@link logTlsRefusals}: at most `max` lines per `windowMs`. */
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
  max: wholeNumber(
    1,
    Number.MAX_SAFE_INTEGER,
    'a whole number of lines, at least 1 (to log none, do not call logTlsRefusals)',
  ),
  windowMs: wholeNumber(1, Number.MAX_SAFE_INTEGER, 'a whole number of milliseconds, at least 1'),
});

/**
 * Logs each TLS handshake a server refuses (no client certificate, one
 * OpenSSL did not verify, no shared cipher, a renegotiation, ...) as one
 * `warn` line with the reason: OpenSSL's verification error of the client
 * certificate (`CERT_HAS_EXPIRED`, `UNABLE_TO_VERIFY_LEAF_SIGNATURE`, ...),
 * else the TLS error. A refused certificate otherwise shows only as "socket
 * hang up": Node destroys the socket and keeps the reason on
 * `socket.authorizationError`. At most `rate.max` lines per window (default
 * 10 a minute), so a flood of bad handshakes cannot flood the log; the first
 * line after a window that dropped some says how many (`suppressed`).
 * `createMtlsServer` applies it. Returns the function that stops it.
 *
 * @throws {TransportConfigError} when `rate.max` or `rate.windowMs` is not a whole number of at least 1.
 */
export function logTlsRefusals(
  server: TlsServer | HttpsServer | Http2SecureServer,
  log: TlsRefusalLog,
  rate: TlsRefusalLogRate = { max: 10, windowMs: 60_000 },
  msg = 'TLS handshake refused',
): () => void {
  const checked = TlsRefusalLogRateSchema.safeParse(rate);
  if (!checked.success) {
    throw new TransportConfigError(
      checked.error.issues.map((i) => `${['rate', ...i.path.map(String)].join('.')}: ${i.message}`),
    );
  }
  let windowStart = 0;
  let lines = 0;
  let suppressed = 0;
  const onRefusal = (err: Error & { code?: string; reason?: string }, socket: TLSSocket): void => {
    const now = Date.now();
    if (now - windowStart >= rate.windowMs) {
      windowStart = now;
      lines = 0;
    }
    if (lines >= rate.max) {
      suppressed++;
      return;
    }
    lines++;
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
        ...(suppressed ? { suppressed } : {}),
      },
      msg,
    );
    suppressed = 0;
  };
  server.on('tlsClientError', onRefusal);
  return () => server.off('tlsClientError', onRefusal);
}
