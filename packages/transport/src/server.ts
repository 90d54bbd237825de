// @weave/transport/server: the fastify side of SPIFFE mTLS (the `mtlsAuth`
// plugin and `createMtlsServer`). A separate entry point so that client-only
// users never load or install fastify (an optional peer dependency).
import type { Server as HttpsServer } from 'node:https';
import {
  constants as h2,
  type Http2SecureServer,
  type Http2ServerRequest,
  type ServerHttp2Session,
  type ServerHttp2Stream,
} from 'node:http2';
import type { Duplex } from 'node:stream';
import { maxHeaderSize, type IncomingMessage, type ServerResponse } from 'node:http';
import type { TLSSocket } from 'node:tls';
import Fastify, {
  type FastifyError,
  type FastifyInstance,
  type FastifyPluginCallback,
  type FastifyReply,
  type FastifyRequest,
  type FastifyServerOptions,
  type RawReplyDefaultExpression,
  type RawRequestDefaultExpression,
} from 'fastify';
import fp from 'fastify-plugin';
import type { Authorizer, IdentityProvider, SpiffeId } from '@weave/identity';
import { parseTransportConfig, type TransportConfigInput } from './config.js';
import { TransportConfigError } from './errors.js';
import {
  ConnectionLimiter,
  LogRate,
  MAX_CONCURRENT_STREAMS,
  closeHttp2ResetFloods,
  headerListBytes,
  parseConnectionLimits,
  type ConnectionLimits,
  type ConnectionRefusals,
  lingerOnEarlyClose,
  logTlsRefusals,
  parseHttp1FromStream,
  secureContextOf,
  watchServerIdentity,
} from './server-options.js';
import { PeerVerifier } from './peer-verifier.js';

export type { ConnectionRefusals } from './server-options.js';

declare module 'fastify' {
  interface FastifyInstance {
    /**
     * Set on a server made by `createMtlsServer` (absent elsewhere): has
     * `answer` answer the requests under this instance's prefix that fastify
     * refuses before any route (see {@link FrameworkErrorAnswer}), so a plugin
     * with its own error bodies keeps them for those too. The longest prefix
     * wins; where none was given, fastify's error handler answers.
     */
    answerFrameworkErrors?: (answer: FrameworkErrorAnswer) => void;
    /**
     * Set on a server made by `createMtlsServer` (absent elsewhere): the
     * connections the server refused since it was made, by the bound that
     * refused them (see {@link ConnectionRefusals}). Three counters read, so
     * a metrics scrape may call it each time; nothing is counted for it.
     */
    connectionRefusals?: () => ConnectionRefusals;
  }
  interface FastifyRequest {
    /**
     * The caller's SPIFFE ID, set by the `mtlsAuth` plugin after its chain
     * verified against the bundle of its own trust domain and the authorizer
     * accepted it. A route never runs for a refused caller.
     */
    peer: SpiffeId;
  }
}

/** Options of {@link mtlsAuth}. */
export interface MtlsAuthOptions {
  /** Source of trusted bundles (read live, so federation changes apply at once). */
  identityProvider: IdentityProvider;
  /** Decides which verified callers may reach any route. */
  authorize: Authorizer;
}

/** JSON body of a refusal. */
export interface MtlsDenial {
  error: { code: 'PEER_VERIFICATION_FAILED' | 'PEER_NOT_AUTHORIZED'; message: string };
}

/**
 * JSON body of the HTTP 408 a {@link createMtlsServer} server answers when a
 * request (headers and body) has not fully arrived within `requestTimeoutMs`.
 * No route runs for such a request.
 */
export interface MtlsRequestTimeout {
  error: { code: 'REQUEST_TIMEOUT'; message: string };
}

/**
 * Answers a request fastify refused before routing it: a URL it cannot decode
 * (`FST_ERR_BAD_URL`, e.g. `/%/x`), a path parameter over `maxParamLength`
 * (`FST_ERR_MAX_PARAM_LENGTH`). No hook ran for such a request (the caller
 * is not identified), and no route runs.
 */
export type FrameworkErrorAnswer = (
  error: FastifyError,
  request: FastifyRequest,
  reply: FastifyReply,
) => void;

type AnyRawRequest = IncomingMessage | Http2ServerRequest;

/** The TLS socket under a request, for HTTP/1.1 and HTTP/2 alike. */
function tlsSocketOf(raw: AnyRawRequest): TLSSocket | undefined {
  // HTTP/2: `raw.socket` is a per-stream proxy; the session's socket is the real one (and stable for caching).
  const h2 = (raw as Http2ServerRequest).stream?.session?.socket as TLSSocket | undefined;
  const sock = h2 ?? (raw.socket as TLSSocket | undefined);
  return sock && (sock as { encrypted?: boolean }).encrypted ? sock : undefined;
}

const mtlsAuthPlugin: FastifyPluginCallback<MtlsAuthOptions> = (app, opts, done) => {
  const { identityProvider: identity, authorize } = opts;
  if (!identity || typeof authorize !== 'function') {
    done(
      new TransportConfigError([
        'mtlsAuth needs { identityProvider, authorize } (an IdentityProvider and an Authorizer)',
      ]),
    );
    return;
  }
  // Chain verification is cached per TLS connection (see PeerVerifier).
  const { verifier, release } = PeerVerifier.use(identity);
  app.addHook('onClose', (_app, next) => {
    release();
    next();
  });
  app.decorateRequest('peer', null as unknown as SpiffeId);

  const refuse = (
    request: FastifyRequest,
    reply: FastifyReply,
    code: MtlsDenial['error']['code'],
    message: string,
  ): void => {
    request.log.warn({ code, reason: message }, 'mTLS caller refused');
    // HTTP/1.1: close the connection so a refused client cannot keep using it.
    if (request.raw.httpVersionMajor === 1) void reply.header('connection', 'close');
    void reply.code(403).send({ error: { code, message } } satisfies MtlsDenial);
  };

  app.addHook('onRequest', (request, reply, next) => {
    const socket = tlsSocketOf(request.raw);
    if (!socket || !socket.authorized) {
      refuse(request, reply, 'PEER_VERIFICATION_FAILED', 'no verified client certificate');
      return;
    }
    const v = verifier.verify(socket);
    if (!v.peer) {
      refuse(request, reply, 'PEER_VERIFICATION_FAILED', v.error ?? 'client certificate rejected');
      return;
    }
    let result;
    try {
      result = authorize(v.peer);
    } catch (err) {
      result = { ok: false as const, reason: `authorizer threw: ${String(err)}` };
    }
    if (!result || result.ok !== true) {
      const reason = result && 'reason' in result ? result.reason : 'authorizer refused';
      refuse(request, reply, 'PEER_NOT_AUTHORIZED', `${v.peer.toString()} is not authorized: ${reason}`);
      return;
    }
    request.peer = v.peer;
    // The rest of the request (body, route, reply) runs from the check phase,
    // not inside the TLS read that delivered it. Measured with bench/ over
    // HTTP/1.1 mTLS (Node 20): about 8 µs less server CPU per request.
    setImmediate(next);
  });
  done();
};

/** The name {@link mtlsAuth} registers under: `app.hasPlugin(MTLS_AUTH_PLUGIN)` says callers are identified. */
export const MTLS_AUTH_PLUGIN = '@weave/transport/mtls-auth';

/**
 * Fastify plugin: verifies every caller's client certificate chain against the
 * bundle of the caller's own trust domain (federation-safe), runs `authorize`,
 * and sets `request.peer`. Refused callers get a 403 JSON body with a `code`
 * (`PEER_VERIFICATION_FAILED` or `PEER_NOT_AUTHORIZED`) from an `onRequest`
 * hook, so no route handler runs for them. The check holds at every request
 * of a connection, not only its first: one made after the caller's
 * certificate expired, or after a bundle change that no longer trusts its
 * chain, is refused the same way.
 */
export const mtlsAuth: FastifyPluginCallback<MtlsAuthOptions> = fp(mtlsAuthPlugin, {
  fastify: '5.x',
  name: MTLS_AUTH_PLUGIN,
});
// Annotated: inferred, its declaration named `Fastify.FastifyPluginCallback` through
// the default import, which a consumer with `moduleResolution: bundler` cannot resolve.

/** The fastify instance {@link createMtlsServer} returns (HTTP/1.1 over TLS, or HTTP/2 with HTTP/1.1 fallback). */
export type MtlsFastifyInstance = FastifyInstance<
  HttpsServer | Http2SecureServer,
  RawRequestDefaultExpression<HttpsServer | Http2SecureServer>,
  RawReplyDefaultExpression<HttpsServer | Http2SecureServer>
>;

/** Options of {@link createMtlsServer}. */
export interface CreateMtlsServerOptions {
  identity: IdentityProvider;
  /** Which verified callers may reach the server's routes. */
  authorize: Authorizer;
  config?: TransportConfigInput;
  /** Extra fastify options (`https`, `http2` and `serverFactory` are set by Weave and refused here). */
  fastify?: Omit<FastifyServerOptions, 'https' | 'http2' | 'serverFactory'>;
  /**
   * Open connections the server holds at most, those still in their TLS
   * handshake included; one over it is closed as it is accepted. Default
   * 10 000 (see `ConnectionLimitsSchema` of `@weave/transport`).
   */
  maxConnections?: number;
  /**
   * Open connections one verified SPIFFE ID holds at most; one over it is
   * closed as its handshake completes, before any request is read. Default 1000.
   */
  maxConnectionsPerPeer?: number;
  /**
   * Connections one remote address may hold in their TLS handshake at once;
   * one over it is closed as it is accepted. Default 64: handshakes in
   * progress count against `maxConnections`, so without it one address
   * could fill the server with connections it never authenticates.
   */
  maxHandshakesPerAddress?: number;
}

/**
 * A fastify instance with mTLS options, {@link mtlsAuth} and rotation
 * (`setSecureContext` on identity updates, unsubscribed on close) wired.
 * HTTP version follows `config.httpVersion` (`http2` also accepts HTTP/1.1).
 * A connection whose TLS handshake has not completed within
 * `config.connectTimeoutMs` is closed, and `close()` does not wait for the
 * connections still in their handshake: it closes at once those that have
 * sent nothing, and the others {@link CLOSE_GRACE_MS} after it began (one
 * completing before is answered, see below). Connections
 * are bounded per server (`maxConnections`), per peer SPIFFE ID
 * (`maxConnectionsPerPeer`) and, in their handshake, per remote address
 * (`maxHandshakesPerAddress`), each refusal counted
 * (`app.connectionRefusals()`), and an HTTP/2 connection whose client resets
 * streams in a flood is closed (`closeHttp2ResetFloods`). `close()` answers
 * rather than cuts: an idle keep-alive connection is closed at once, a
 * request arriving on a connection still open is answered 503 with
 * `connection: close` (HTTP/1.1) and an HTTP/2 connection is sent a GOAWAY
 * (a stream past it is refused, REFUSED_STREAM), a request in progress is
 * answered and its connection closed after it; what is still open
 * {@link CLOSE_GRACE_MS} after close() began is cut. When a client's
 * certificate expires, or a bundle change no longer trusts its chain, its
 * connection is closed if it carries a request or response (an SSE stream;
 * an HTTP/2 session always), and any later request on it is refused by
 * {@link mtlsAuth}.
 *
 * @throws {TransportConfigError} for an invalid config or connection bound, or fastify options Weave sets.
 */
export function createMtlsServer(opts: CreateMtlsServerOptions): MtlsFastifyInstance {
  const cfg = parseTransportConfig(opts.config ?? {});
  const limits = parseConnectionLimits({
    maxConnections: opts.maxConnections,
    maxConnectionsPerPeer: opts.maxConnectionsPerPeer,
    maxHandshakesPerAddress: opts.maxHandshakesPerAddress,
  });
  const fastifyOpts = { ...(opts.fastify ?? {}) } as Record<string, unknown>;
  for (const k of ['https', 'http2', 'serverFactory']) {
    if (k in fastifyOpts)
      throw new TransportConfigError([
        `fastify.${k}: set by createMtlsServer itself and cannot be overridden`,
      ]);
  }
  const https = {
    ...secureContextOf(opts.identity, cfg),
    // Node's default is 120 s: a TCP connection that never completes its
    // handshake holds a connection slot (and close()) that long, unauthenticated.
    handshakeTimeout: cfg.connectTimeoutMs,
  };
  // Longest prefix first: see FastifyInstance.answerFrameworkErrors.
  const answers: Array<{ prefix: string; answer: FrameworkErrorAnswer }> = [];
  const common = {
    logger: false,
    // Idle keep-alive connections only (Node's server.close() ends them): the
    // others are closed by closeGracefully, after their answer, or at its bound.
    forceCloseConnections: 'idle' as const,
    keepAliveTimeout: cfg.idleTimeoutMs,
    requestTimeout: cfg.requestTimeoutMs,
    frameworkErrors: ((error: FastifyError, request: FastifyRequest, reply: FastifyReply) => {
      const url = request.raw.url ?? '';
      const found = answers.find(
        ({ prefix }) => prefix === '' || url === prefix || url.startsWith(`${prefix}/`),
      );
      // Without one, the server's error handler answers, with the error's (4xx) status.
      if (found) found.answer(error, request, reply);
      else void reply.send(error);
      // fastify types this per server kind (HTTP/1.1 or HTTP/2); the function takes either.
    }) as never,
    ...fastifyOpts,
  };
  const app = (cfg.httpVersion === 'http2'
    ? Fastify({
        ...common,
        http2: true,
        // Request headers bounded as on HTTP/1.1 (Node's `http.maxHeaderSize`,
        // 431 above it) and on @weave/a2a's gRPC binding: Node's HTTP/2 has
        // no bound of its own (it advertises none), so it is advertised as
        // SETTINGS_MAX_HEADER_LIST_SIZE, and Node resets a stream whose header
        // block is over it (ENHANCE_YOUR_CALM) before any hook or route runs.
        // What Node lets past it is refused by refuseHttp2HeadersOver.
        // Concurrent streams per connection bounded too (see MAX_CONCURRENT_STREAMS).
        https: {
          ...https,
          settings: { maxHeaderListSize: maxHeaderSize, maxConcurrentStreams: MAX_CONCURRENT_STREAMS },
        },
        http2SessionTimeout: cfg.idleTimeoutMs,
      })
    : Fastify({ ...common, https })) as unknown as MtlsFastifyInstance;
  const unsubscribe = watchServerIdentity(app.server, opts.identity, cfg, (err) =>
    app.log.error({ err }, 'server identity rotation failed; keeping the previous certificate'),
  );
  app.addHook('onClose', (_app, next) => {
    unsubscribe();
    next();
  });
  app.decorate('answerFrameworkErrors', function (this: { prefix: string }, answer: FrameworkErrorAnswer) {
    answers.push({ prefix: this.prefix, answer });
    answers.sort((a, b) => b.prefix.length - a.prefix.length);
  });
  parseHttp1FromStream(app.server);
  lingerOnEarlyClose(app.server);
  logTlsRefusals(app.server, app.log);
  const limiter = limitConnections(app, opts.identity, limits);
  app.decorate('connectionRefusals', () => limiter.refused);
  if (cfg.httpVersion === 'http2') closeHttp2ResetFloods(app.server as Http2SecureServer, app.log);
  enforceRequestTimeout(app, cfg.requestTimeoutMs);
  closeGracefully(app, limiter, CLOSE_GRACE_MS);
  // Before mtlsAuth's hook, as Node's HTTP/1.1 parser refuses before anything runs.
  if (cfg.httpVersion === 'http2') refuseHttp2HeadersOver(app, maxHeaderSize);
  void app.register(mtlsAuth, { identityProvider: opts.identity, authorize: opts.authorize });
  return app;
}

/**
 * How long `close()` of a {@link createMtlsServer} server lets its open
 * connections end by themselves (see {@link closeGracefully}) before it cuts
 * them, ms. The agent's gRPC binding closes with the same bound: by then
 * SecureAgent.stop() has drained its calls, so what is left is requests that
 * came late (answered in a few ms) or a handler that does not end.
 */
export const CLOSE_GRACE_MS = 1_000;

/**
 * Makes `close()` answer the requests that come while it runs instead of
 * cutting their connections, within `graceMs`. Cut at once (fastify's
 * `forceCloseConnections: true` and the limiter's handshakes, as before),
 * every connection whose request had arrived but not yet been read was
 * reset, as was one whose handshake the client had completed (TLS 1.3: the
 * client sends its request along with its last handshake message) but the
 * server not yet: the client could not tell whether anything ran, so a call
 * that is not idempotent (A2A SendMessage) could not be retried, though
 * nothing had run (seen under load at an agent's SIGTERM: requests fully
 * written, reset, no task).
 *
 * From the moment close() begins (its preClose hooks, before the server
 * stops listening):
 * - HTTP/1.1, an idle keep-alive connection: closed at once by Node's
 *   `server.close()` (`forceCloseConnections: 'idle'`). A connection with no
 *   request yet is not idle to Node: its request, as any request read from
 *   now on, is answered 503 with `connection: close` by fastify
 *   (`return503OnClosing`), and no hook or route runs for it.
 * - HTTP/1.1, a request in progress: its answer carries `connection: close`
 *   (or, if its headers are already out, as a stream, the connection is
 *   closed once it ends).
 * - HTTP/2: a GOAWAY (`session.close()`) naming the last stream the server
 *   took: its streams in progress end normally, a stream the client opened
 *   past it is refused (REFUSED_STREAM: the client knows nothing ran), and
 *   Node closes the connection once its last stream has ended. A
 *   connection that completes its handshake later gets one at once.
 * - A handshake in progress is left to complete, and then treated as above,
 *   unless its client has sent nothing yet (not even a ClientHello): ended
 *   at once, as before, since it cannot have sent a request.
 * Whatever is still open `graceMs` after close() began (a client that sends
 * nothing, a handler that does not end, a handshake that does not complete)
 * is destroyed and logged (`warn`), so close() ends.
 */
function closeGracefully(app: MtlsFastifyInstance, limiter: ConnectionLimiter, graceMs: number): void {
  const server = app.server;
  // One Set entry per connection, nothing per request: read only at close.
  const http1 = new Set<TLSSocket>();
  const sessions = new Set<ServerHttp2Session>();
  let closing = false;
  server.on('secureConnection', (socket: TLSSocket) => {
    if (socket.alpnProtocol === 'h2') return;
    http1.add(socket);
    socket.once('close', () => http1.delete(socket));
  });
  server.on('session', (session: ServerHttp2Session) => {
    if (closing) session.close();
    sessions.add(session);
    session.once('close', () => sessions.delete(session));
  });
  // Node's own check: the connection is idle now that its stream has ended,
  // unless a next request has begun. Http2SecureServer has it too (for its
  // HTTP/1.1 connections), though @types/node omits it.
  const closeIfIdle = (): void => (server as HttpsServer).closeIdleConnections();
  app.addHook('preClose', (done) => {
    closing = true;
    // A connection that has sent nothing cannot have sent a request: it need not hold close() up.
    limiter.closeHandshakes('silent');
    for (const socket of http1) {
      const res = (socket as { _httpMessage?: ServerResponse | null })._httpMessage;
      if (!res || res.writableEnded) continue;
      if (!res.headersSent) res.setHeader('connection', 'close');
      else res.once('finish', closeIfIdle);
    }
    for (const session of sessions) session.close();
    const cut = setTimeout(() => {
      const open = limiter.closeHandshakes() + http1.size + sessions.size;
      for (const socket of http1) socket.destroy();
      for (const session of sessions) session.destroy();
      if (open > 0) {
        app.log.warn(
          { connections: open, graceMs },
          'server close: connections still open after the grace were cut',
        );
      }
    }, graceMs);
    cut.unref();
    server.once('close', () => clearTimeout(cut));
    done();
  });
}

/**
 * Holds the server to `limits` (see ConnectionLimiter). The peer is verified
 * as the handshake completes, with the verifier mtlsAuth uses, so the first
 * request finds the result: a connection is counted against the SPIFFE ID
 * its chain proves in its own trust domain, never one a federated CA wrote
 * into a certificate. A peer that does not verify is refused at each request
 * by mtlsAuth and bounded by `maxConnections` only. An admitted connection
 * still carrying a response (or any HTTP/2 session) is closed when its peer's
 * certificate expires or a bundle change refuses its chain (see
 * PeerVerifier.hold), each closing logged as a `warn` line, at most 10 a
 * minute ({@link LogRate}). Returns the limiter, whose refusal counts the
 * server's `connectionRefusals` reads.
 */
function limitConnections(
  app: MtlsFastifyInstance,
  identity: IdentityProvider,
  limits: ConnectionLimits,
): ConnectionLimiter {
  const limiter = new ConnectionLimiter(app.server, limits, app.log);
  const { verifier, release } = PeerVerifier.use(identity);
  const lines = new LogRate();
  app.server.prependListener('secureConnection', (socket: TLSSocket) => {
    const v = verifier.verify(socket);
    if (!v.peer) return;
    if (!limiter.admit(socket, v.peer)) {
      socket.destroy();
      return;
    }
    const peer = v.peer;
    verifier.hold(socket, v, (reason) => {
      // An idle HTTP/1.1 connection is left to its next request, which mtlsAuth
      // refuses with its typed 403 (and closes), or to idleTimeoutMs: closed
      // now, that request would race the close and fail as a bare socket error.
      // One carrying a request or a response not ended yet (an SSE stream)
      // ends now; an HTTP/2 session tells no such state, so it ends too.
      if (socket.alpnProtocol !== 'h2') {
        const inFlight = (socket as { _httpMessage?: { writableEnded?: boolean } | null })._httpMessage;
        if (!inFlight || inFlight.writableEnded) return false;
      }
      const extra = lines.take();
      if (extra) {
        app.log.warn(
          {
            code: 'PEER_VERIFICATION_FAILED',
            peer: peer.toString(),
            reason,
            remoteAddress: socket.remoteAddress,
            ...extra,
          },
          'mTLS connection closed: its peer no longer verifies',
        );
      }
      socket.destroy();
      return true;
    });
  });
  app.addHook('onClose', (_app, next) => {
    limiter.stop();
    release();
    next();
  });
  return limiter;
}

/**
 * Answers an HTTP/2 request whose header list is over `max` bytes, counted as
 * HTTP/2 counts it (RFC 9113 §6.5.2: name, value and 32 per field, as Node
 * does), with the 431 and body fastify gives an HTTP/1.1 request over
 * `http.maxHeaderSize`, before any other hook or route. Node applies the
 * SETTINGS_MAX_HEADER_LIST_SIZE it advertises only once the client
 * acknowledged it, so the streams a client opens with its connection preface
 * (a SecureChannel's first request on every connection) get past it: 60 KB of
 * headers were served.
 */
function refuseHttp2HeadersOver(app: MtlsFastifyInstance, max: number): void {
  const body = JSON.stringify({
    error: 'Request Header Fields Too Large',
    message: 'Exceeded maximum allowed HTTP header size',
    statusCode: 431,
  });
  app.addHook('onRequest', (request, reply, done) => {
    if (request.raw.httpVersionMajor !== 2 || headerListBytes(request.raw.rawHeaders) <= max) {
      done();
      return;
    }
    void reply.code(431).header('content-type', 'application/json').send(body);
  });
}

/**
 * Holds a server to `requestTimeoutMs` for the whole request, body included:
 * a caller that trickles its body is answered 408 `REQUEST_TIMEOUT` and
 * disconnected, and no route runs.
 *
 * Why each setting: Node checks its HTTP/1.1 deadlines only every
 * `connectionsCheckingInterval` (default 30 s), and when `headersTimeout`
 * (default 60 s; fastify leaves it) exceeds `requestTimeout` Node swaps the
 * two, so a trickled body ran to ~60 s + 30 s against a 30 s limit. HTTP/2
 * streams have no request deadline in Node at all, so each gets a timer.
 * Each cut is logged as a `warn` line, at most 10 a minute ({@link LogRate}):
 * any caller can cause them at will, and a flood of them must not flood the log.
 */
function enforceRequestTimeout(app: MtlsFastifyInstance, timeoutMs: number): void {
  const message = `request not received within ${timeoutMs} ms (requestTimeoutMs)`;
  const lines = new LogRate();
  const logCut = (): void => {
    const extra = lines.take();
    if (extra) {
      app.log.warn(
        { code: 'REQUEST_TIMEOUT', timeoutMs, ...extra },
        'request cut: not received within requestTimeoutMs',
      );
    }
  };
  const body = JSON.stringify({ error: { code: 'REQUEST_TIMEOUT', message } } satisfies MtlsRequestTimeout);
  // `connectionsCheckingInterval` is read when the server starts listening (Node types omit the property).
  const server = app.server as HttpsServer & { connectionsCheckingInterval: number };
  server.requestTimeout = timeoutMs;
  server.headersTimeout = timeoutMs;
  // Checked at a quarter of the limit (between 50 ms and 1 s): cut within that of it.
  server.connectionsCheckingInterval = Math.max(50, Math.min(1000, Math.floor(timeoutMs / 4)));
  // Before fastify's own listener, which then finds the socket destroyed and stays quiet.
  server.prependListener('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => {
    if (err.code !== 'ERR_HTTP_REQUEST_TIMEOUT' || socket.destroyed) return;
    logCut();
    // As Node does: a 408 only where no answer has started on this connection.
    const inFlight = (socket as { _httpMessage?: { headersSent?: boolean } })._httpMessage;
    if (socket.writable && !inFlight?.headersSent) {
      socket.write(
        `HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-type: application/json\r\n` +
          `content-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
      );
    }
    socket.destroy();
  });
  app.server.on('stream', (stream: ServerHttp2Stream) => {
    const timer = setTimeout(() => {
      if (stream.destroyed || !remoteStillSending(stream)) return;
      logCut();
      if (!stream.headersSent) {
        stream.respond({ ':status': 408, 'content-type': 'application/json' });
        stream.end(body);
      }
      // RFC 9113 §8.1: a server that answered early stops the rest of the body with NO_ERROR.
      stream.close(h2.NGHTTP2_NO_ERROR);
    }, timeoutMs);
    timer.unref();
    stream.once('close', () => clearTimeout(timer));
  });
}

/** True while the peer has not ended its side of an HTTP/2 stream (the request is incomplete). */
function remoteStillSending(stream: ServerHttp2Stream): boolean {
  const state = stream.state.state;
  return state === h2.NGHTTP2_STREAM_STATE_OPEN || state === h2.NGHTTP2_STREAM_STATE_HALF_CLOSED_LOCAL;
}
