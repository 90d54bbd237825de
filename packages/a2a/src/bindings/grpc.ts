/**
 * The gRPC binding (A2A v1.0 §10): `lf.a2a.v1.A2AService` from the spec's
 * `a2a.proto`, served with @grpc/grpc-js, server streaming for
 * SendStreamingMessage and SubscribeToTask, errors as gRPC status with
 * `google.rpc.ErrorInfo` details.
 *
 * Security is the HTTP bindings' own, not a copy of it: Weave terminates TLS
 * itself with `@weave/transport`'s server options (own SVID, every trusted
 * bundle, client certificate required, TLS floor from the config), keeps the
 * listener on the current SVID and bundle with `watchServerIdentity` (no
 * restart on rotation), and checks every connection with the verifier
 * `mtlsAuth` uses (`PeerVerifier`: the chain must end in the caller's own
 * trust domain) and the same peer `authorize`, before grpc-js sees a single
 * byte of it. Only verified connections are handed to grpc-js (its
 * connection injector, on an h2 server over the already-secured socket).
 * That verifier holds each one as it holds `createMtlsServer`'s: a bundle
 * change re-verifies every open connection's chain and drops those that no
 * longer verify, and a connection is dropped when its caller's certificate
 * expires (a call that finds it expired first is refused). Every call then
 * goes through the request handler, whose policy check and audit run before
 * any task handler.
 */
import { once, setMaxListeners } from 'node:events';
import { maxHeaderSize } from 'node:http';
import type {
  Http2SecureServer,
  Http2Server,
  ServerHttp2Session,
  ServerHttp2Stream,
  ServerOptions as Http2ServerOptions,
} from 'node:http2';
import { createServer as createTlsServer, type Server as TlsServer, type TLSSocket } from 'node:tls';
import type { AddressInfo, Socket } from 'node:net';
import { z } from 'zod';
import type { Metadata } from '@grpc/grpc-js';
import {
  Server,
  ServerCredentials,
  ServerInterceptingCall,
  status as GrpcStatus,
  type ConnectionInjector,
  type ServerInterceptor,
  type sendUnaryData,
  type ServerUnaryCall,
  type ServerWritableStream,
  type UntypedServiceImplementation,
} from '@grpc/grpc-js';
import type { Authorizer, IdentityProvider, SpiffeId } from '@weave/identity';
import {
  ConnectionLimiter,
  ConnectionLimitsSchema,
  LogRate,
  MAX_CONCURRENT_STREAMS,
  PeerVerifier,
  TransportIdentityError,
  closeHttp2ResetFloods,
  createMtlsServerOptions,
  headerListBytes,
  logTlsRefusals,
  parseTransportConfig,
  urlHost,
  watchServerIdentity,
  type ConnectionRefusals,
  type MtlsServerOptions,
  type PeerVerification,
  type TransportConfigInput,
} from '@weave/transport';
import { A2AErrors } from '../errors.js';
import { exceedsDepth, MAX_JSON_DEPTH } from '../depth.js';
import type { TaskEventStream } from '../event-stream.js';
import {
  asA2AError,
  assertV1Version,
  type A2ARequestHandler,
  type CallContext,
  type CallHeaders,
  type HandlerLogger,
  type RequestSource,
} from '../handler.js';
import { a2aGrpcService, withEventId, type A2AGrpcMethod, type WireObject } from '../grpc/proto.js';
import { a2aErrorToGrpcStatus } from '../grpc/status.js';
import { keepaliveOptions } from '../grpc/keepalive.js';
import { A2AConfigError, checkOptions, timerMsOr0 } from '../options.js';

/** Options of {@link A2AGrpcServer}. */
export interface A2AGrpcServerOptions {
  /** The request handler the HTTP bindings also serve (one task state for all bindings). */
  readonly handler: A2ARequestHandler;
  /** Own SVID and trusted bundles (rotating). */
  readonly identity: IdentityProvider;
  /** Which verified callers may connect at all (as `mtlsAuth`'s `authorize`); policy decides per call. */
  readonly authorize: Authorizer;
  /**
   * TLS floor and the rest of the transport config, as for the HTTP server:
   * a connection not through its TLS handshake within `connectTimeoutMs` is closed.
   */
  readonly config?: TransportConfigInput;
  /**
   * Interval of HTTP/2 PINGs to each client connection, in ms; a ping left
   * unanswered for as long (at most 20 s) closes the connection and ends its
   * calls, so a subscriber whose client or network vanished without a word
   * is let go: a quiet task's stream writes nothing, so nothing else would
   * notice (the HTTP bindings' heartbeats play this part there). 0 disables.
   * Default 15 000, the HTTP bindings' heartbeat.
   */
  readonly keepaliveMs?: number;
  /**
   * Open connections the listener holds at most, those still in their TLS
   * handshake included; one over it is closed as it is accepted, before any
   * TLS. An idle gRPC connection is never closed (about 80 KiB of the
   * server's memory each, measured), so this is what bounds them. Default
   * 10 000 (`ConnectionLimitsSchema` of `@weave/transport`).
   */
  readonly maxConnections?: number;
  /**
   * Open connections one admitted SPIFFE ID holds at most; one over it is
   * closed as it is admitted, before grpc-js reads a byte of it. Default 1000.
   */
  readonly maxConnectionsPerPeer?: number;
  /**
   * Connections one remote address may hold in their TLS handshake at once;
   * one over it is closed as it is accepted. Default 64, so that one address
   * cannot fill `maxConnections` with connections it never authenticates.
   */
  readonly maxHandshakesPerAddress?: number;
  readonly logger?: HandlerLogger;
}

/** A refused decode: the handler answers INVALID_ARGUMENT before anything runs. */
const UNDECODABLE = Symbol('undecodable');
type Decoded = WireObject & { [UNDECODABLE]?: unknown };

/** An admitted connection's caller: its SPIFFE ID and its certificate's end (epoch ms). */
interface AdmittedPeer {
  readonly id: SpiffeId;
  readonly until: number;
}

const SILENT: HandlerLogger = { warn: () => undefined, error: () => undefined };

const GrpcServerNumbers = z.object({
  keepaliveMs: timerMsOr0('off').optional(),
  // The HTTP servers' bounds, with their defaults.
  ...ConnectionLimitsSchema.shape,
});

/**
 * The A2A gRPC binding on its own mTLS port. `listen()` then hand
 * {@link url} to the card (`A2AServer.advertiseGrpc`).
 *
 * A call's metadata is bounded as the HTTP bindings' headers are (Node's
 * `http.maxHeaderSize`, 16 KiB by default): over it, the call is refused
 * before anything runs (an HTTP/2 stream reset, or RESOURCE_EXHAUSTED), which
 * Weave's client reports as `HEADERS_TOO_LARGE`.
 */
export class A2AGrpcServer {
  readonly #opts: A2AGrpcServerOptions;
  readonly #log: HandlerLogger;
  readonly #tls: TlsServer;
  readonly #grpc: Server;
  readonly #injector: ConnectionInjector;
  readonly #sockets = new Set<TLSSocket>();
  /** Set by `close()`: a handshake that completes after it is not admitted. */
  #closing = false;
  /**
   * Verified callers by their connection's remote address (`ip:port`, as
   * grpc-js's `getPeer()` gives it): one entry per open admitted connection,
   * set when it is admitted, so a call finds its caller without reading the
   * peer certificate again (grpc-js's auth context builds it on every call).
   */
  readonly #peers = new Map<string, { peer: AdmittedPeer; socket: TLSSocket }>();
  /** Lines of connections dropped as their caller's certificate expired: at most 10 a minute. */
  readonly #expiredLines = new LogRate();
  readonly #unsubscribe: Array<() => void> = [];
  readonly #limiter: ConnectionLimiter;
  /** The identity's verifier, shared with the HTTP servers on it: admits connections and holds them (see #keep). */
  readonly #verifier: PeerVerifier;
  #url: string | undefined;
  /** The HTTP/2 session of each admitted connection still open. */
  readonly #sessions = new Set<ServerHttp2Session>();
  /** Calls whose HTTP/2 stream is open: see {@link callsInFlight}. */
  #calls = 0;
  /** TLS handshakes on this port: see {@link tlsHandshakes}. */
  readonly #handshakes = { ok: 0, error: 0 };
  // One listener of each kind shared by every call: no closure made per call.
  readonly #callEnded = (): void => {
    this.#calls--;
  };
  readonly #callStarted = (stream: ServerHttp2Stream): void => {
    this.#calls++;
    stream.on('close', this.#callEnded);
  };

  /**
   * @throws {A2AConfigError} when no authorizer, or `keepaliveMs`, `maxConnections`
   *   or `maxConnectionsPerPeer` out of range; nothing is started.
   */
  constructor(options: A2AGrpcServerOptions) {
    if (typeof options?.authorize !== 'function') {
      throw new A2AConfigError('A2AGrpcServer', ['authorize (an Authorizer) is required']);
    }
    const limits = checkOptions('A2AGrpcServer', GrpcServerNumbers, options);
    this.#opts = options;
    this.#log = options.logger ?? SILENT;
    const config = options.config ?? {};
    const { connectTimeoutMs } = parseTransportConfig(config);
    // The HTTP servers' TLS options, verbatim; gRPC needs HTTP/2 by ALPN.
    let tlsOptions: Omit<MtlsServerOptions, 'allowHTTP1'> | undefined;
    try {
      const { allowHTTP1: _h1, ...o } = createMtlsServerOptions(options.identity, config);
      tlsOptions = o;
    } catch (err) {
      if (!(err instanceof TransportIdentityError)) throw err;
      // The SVID is between two rotations (expired, the next not there yet):
      // no certificate until the identity's next update sets one, and no
      // handshake succeeds meanwhile. Never anything weaker.
      this.#log.warn({ err }, 'a2a grpc: no usable SVID yet; serving from the next identity update');
    }
    this.#tls = createTlsServer({
      requestCert: true,
      rejectUnauthorized: true,
      ...tlsOptions,
      ALPNProtocols: ['h2'],
      // Node's default is 120 s: a connection that never completes its
      // handshake would hold a slot (and close()) that long, unauthenticated.
      handshakeTimeout: connectTimeoutMs,
    });
    this.#limiter = new ConnectionLimiter(this.#tls, limits, this.#log, 'a2a grpc: connection refused');
    this.#unsubscribe.push(() => this.#limiter.stop());
    this.#unsubscribe.push(
      watchServerIdentity(this.#tls, options.identity, config, (err) =>
        this.#log.error({ err }, 'a2a grpc: identity rotation failed; keeping the previous certificate'),
      ),
    );
    const { verifier, release } = PeerVerifier.use(options.identity);
    this.#verifier = verifier;
    this.#unsubscribe.push(release);
    this.#grpc = new Server({
      // The handler's bound on a request, as the HTTP bindings serving it
      // apply it to a body: a larger message is refused (RESOURCE_EXHAUSTED)
      // from its length prefix, before it is read, and nothing runs.
      'grpc.max_receive_message_length': options.handler.maxBodyBytes,
      // Channelz (grpc-js's introspection registry, which Weave never serves)
      // otherwise counts every call and message with a timestamp each.
      'grpc.enable_channelz': 0,
      // grpc-js advertises no stream bound and lifts Node's session memory cap
      // (`grpc-node.max_session_memory`), so one connection's streams that never
      // sent their message grew the heap without end (100 000 streams, +400 MB).
      // The bound of the HTTP/2 server `createMtlsServer` makes: over it a stream
      // is refused before grpc-js sees a call.
      'grpc.max_concurrent_streams': MAX_CONCURRENT_STREAMS,
      ...keepaliveOptions(options.keepaliveMs ?? 15_000),
      interceptors: [refuseMetadataOver(maxHeaderSize)],
    });
    boundHeaderList(this.#grpc, maxHeaderSize);
    this.#grpc.addService(serverService(), this.#implementation());
    this.#injector = this.#grpc.createConnectionInjector(ServerCredentials.createInsecure());
    // Rapid reset: as on the HTTP bindings' HTTP/2, a client resetting calls
    // in a flood has its connection closed at once. Without it, 734 of the
    // SendMessage calls a client opened and reset on one connection ran
    // their task, and nghttp2's GOAWAY left the connection open until the
    // keepalive gave up on it (30 s).
    for (const server of http2ServersOf(this.#grpc)) {
      closeHttp2ResetFloods(server, this.#log, 'a2a grpc: connection closed: too many calls reset');
      // Each call is one HTTP/2 stream: counted until it has closed, answer sent (see callsInFlight).
      server.on('stream', this.#callStarted);
      // Each connection's HTTP/2 session, for close() to tell it to take no new call.
      server.on('session', (session: ServerHttp2Session) => {
        this.#sessions.add(session);
        session.once('close', () => this.#sessions.delete(session));
      });
    }
    // The limiter knows the handshakes in progress, and ends them when the server closes.
    this.#tls.on('secureConnection', (socket: TLSSocket) => {
      this.#handshakes.ok++;
      const v = this.#closing ? undefined : this.#admit(socket);
      if (!v?.peer || !this.#limiter.admit(socket, v.peer)) {
        socket.destroy();
        return;
      }
      this.#keep(socket, v, v.peer);
      this.#injector.injectConnection(socket);
    });
    // Handshake failures (no or untrusted client certificate) never reach 'secureConnection'.
    logTlsRefusals(this.#tls, this.#log, undefined, 'a2a grpc: TLS handshake refused');
    // A plain TLS server leaves the socket open on a handshake timeout (only
    // HTTP servers destroy it, on 'clientError'): the timeout would free nothing.
    this.#tls.on('tlsClientError', (_err: Error, socket: TLSSocket) => {
      this.#handshakes.error++;
      socket.destroy();
    });
  }

  /** `host:port` of the listener (the card's GRPC interface URL), once listening. */
  get url(): string | undefined {
    return this.#url;
  }

  /**
   * Connections this listener refused since it was made, by the bound that
   * refused them: `server` by `maxConnections`, `peer` by
   * `maxConnectionsPerPeer`, `address` by `maxHandshakesPerAddress`. Three
   * counters read, so a metrics scrape may read it each time.
   */
  get connectionRefusals(): ConnectionRefusals {
    return this.#limiter.refused;
  }

  /**
   * TLS handshakes on this port since the listener was made: `ok` completed
   * (client certificate verified; a connection then refused at a bound is
   * counted here too), `error` refused or failed (no or untrusted client
   * certificate, timeout, protocol error). Two counters read, so a metrics
   * scrape may read it each time; a copy, not the live counts.
   */
  get tlsHandshakes(): { readonly ok: number; readonly error: number } {
    return { ...this.#handshakes };
  }

  /**
   * Calls in progress: received and not yet ended (answer sent, or the call
   * reset or cut). A server stopping waits for it to fall to 0, as it waits
   * for its HTTP requests in flight.
   */
  get callsInFlight(): number {
    return this.#calls;
  }

  /** Starts listening; resolves with the bound address. */
  async listen(
    options: { host?: string; port?: number } = {},
  ): Promise<{ host: string; port: number; url: string }> {
    const host = options.host ?? '127.0.0.1';
    this.#tls.listen(options.port ?? 0, host);
    await once(this.#tls, 'listening');
    const addr = this.#tls.address() as AddressInfo;
    this.#url = `${urlHost(addr.address)}:${addr.port}`;
    return { host: addr.address, port: addr.port, url: this.#url };
  }

  /**
   * Stops accepting connections, closes those still in their TLS handshake,
   * lets running calls finish for up to `graceMs`, then cuts what is left.
   * Each open connection is told at once to take no new call (an HTTP/2
   * GOAWAY: a call sent after it is refused, and the client may send it
   * elsewhere); its calls in flight go on and get their answers. Resolves
   * once every connection has closed, or at `graceMs`, when those still open
   * are cut and their calls end with UNAVAILABLE at the client.
   */
  async close(graceMs = 5_000): Promise<void> {
    for (const u of this.#unsubscribe.splice(0)) u();
    this.#closing = true;
    // Node's close() would otherwise wait for each handshake in progress until its timeout.
    this.#limiter.closeHandshakes();
    const closed = new Promise<void>((resolve) => this.#tls.close(() => resolve()));
    // A GOAWAY on every connection, which Node closes once its last call has
    // ended. Not grpc-js's tryShutdown(): it counts a connection told to
    // close as closed, so it answered at once and everything was cut with
    // the calls still running. Nor its injector's drain(): at graceMs it
    // resets the calls left with CANCEL, which their clients read as
    // CANCELLED, as if they had given up themselves; cut below, they end
    // UNAVAILABLE (retryable), as calls on a connection lost.
    for (const session of this.#sessions) session.close();
    await this.#connectionsClosed(graceMs);
    this.#grpc.forceShutdown();
    this.#injector.destroy();
    for (const s of this.#sockets) s.destroy();
    await closed;
  }

  /** Resolves once every admitted connection has closed, or after `ms`. */
  #connectionsClosed(ms: number): Promise<void> {
    let open = this.#sockets.size;
    if (open === 0) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, ms);
      const one = (): void => {
        if (--open > 0) return;
        clearTimeout(timer);
        resolve();
      };
      for (const s of this.#sockets) s.once('close', one);
    });
  }

  /**
   * mtlsAuth's check for one connection: chain to the caller's own trust
   * domain (the verifier's result, kept for `#keep`), then `authorize`.
   */
  #admit(socket: TLSSocket): PeerVerification | undefined {
    if (!socket.authorized) {
      this.#log.warn({ reason: 'no verified client certificate' }, 'a2a grpc: caller refused');
      return undefined;
    }
    const v = this.#verifier.verify(socket);
    const peer = v.peer;
    if (!peer) {
      this.#log.warn({ reason: v.error }, 'a2a grpc: caller refused');
      return undefined;
    }
    let ok: boolean;
    let reason = 'authorizer refused';
    try {
      const r = this.#opts.authorize(peer);
      ok = r?.ok === true;
      if (r && r.ok === false) reason = r.reason;
    } catch (err) {
      ok = false;
      reason = `authorizer threw: ${String(err)}`;
    }
    if (!ok) {
      this.#log.warn({ peer: peer.toString(), reason }, 'a2a grpc: caller not authorized');
      return undefined;
    }
    return v;
  }

  /**
   * Keeps an admitted connection: its calls find their caller `id` by its
   * address until it closes (`#callerOf`), and it is destroyed, with the
   * calls it carries (a stream), when its caller's certificate expires
   * (logged at most 10 lines a minute) or a bundle change refuses its chain
   * (the verifier's hold).
   */
  #keep(socket: TLSSocket, v: PeerVerification, id: SpiffeId): void {
    const address = peerAddress(socket);
    // The certificate's end as the verifier read it, once per connection, never per call.
    const caller: AdmittedPeer = { id, until: v.until };
    this.#peers.set(address, { peer: caller, socket });
    this.#sockets.add(socket);
    const forget = (): void => {
      // A new connection from the same address may have been admitted before this one's close.
      if (this.#peers.get(address)?.socket === socket) this.#peers.delete(address);
    };
    socket.once('close', () => {
      this.#sockets.delete(socket);
      forget();
    });
    this.#verifier.hold(socket, v, (reason, expired) => {
      if (!expired) {
        this.#log.warn({ reason }, 'a2a grpc: caller refused');
        forget();
      } else {
        const extra = this.#expiredLines.take();
        if (extra) {
          this.#log.warn(
            { peer: id.toString(), expiredAt: new Date(caller.until).toISOString(), ...extra },
            "a2a grpc: connection closed: the caller's certificate expired",
          );
        }
      }
      socket.destroy();
      return true;
    });
  }

  /**
   * The verified caller of a call: the admitted connection it came on, by
   * remote address, so the ID is the one the verifier returned for that
   * connection, never re-read from the certificate. A call whose connection
   * is gone (or was never admitted) has no caller.
   */
  #callerOf(call: AnyCall): AdmittedPeer | undefined {
    return this.#peers.get(call.getPeer())?.peer;
  }

  /**
   * Where a call came from, for the line its refusal is logged with: the
   * caller verified on its connection, when it was admitted, and the
   * connection's remote address.
   */
  #sourceOf(call: AnyCall): RequestSource {
    const peer = call.getPeer();
    const admitted = this.#peers.get(peer);
    if (admitted === undefined) return addressOf(peer);
    const { remoteAddress, remotePort } = admitted.socket;
    return {
      caller: admitted.peer.id,
      ...(remoteAddress === undefined ? {} : { remoteAddress }),
      ...(remotePort === undefined ? {} : { remotePort }),
    };
  }

  #implementation(): UntypedServiceImplementation {
    const h = this.#opts.handler;
    const log = this.#log;
    /**
     * The status a call of `method` ends with for `err`, told first to the
     * handler's `onRequestError` and logged there: every error status of a
     * call goes here. Made once per method, not per call.
     */
    const failure =
      (method: A2AGrpcMethod) =>
      (err: unknown, call: AnyCall): GrpcStatusObject => {
        const e = asA2AError(err, log);
        h.requestFailed(e, method, 'GRPC', this.#sourceOf(call));
        return a2aErrorToGrpcStatus(e);
      };
    const unary = (method: A2AGrpcMethod, fn: (ctx: CallContext, req: WireObject) => Promise<unknown>) => {
      const fail = failure(method);
      return (call: ServerUnaryCall<Decoded, unknown>, callback: sendUnaryData<unknown>): void => {
        let ctx: CallContext;
        try {
          ctx = this.#context(call);
        } catch (err) {
          callback(fail(err, call));
          return;
        }
        fn(ctx, call.request).then(
          (res) => callback(null, res),
          (err: unknown) => callback(fail(err, call)),
        );
      };
    };
    const streaming = (
      method: A2AGrpcMethod,
      fn: (
        ctx: CallContext,
        req: WireObject,
        call: ServerWritableStream<Decoded, unknown>,
      ) => Promise<TaskEventStream>,
    ) => {
      const fail = failure(method);
      return (call: ServerWritableStream<Decoded, unknown>): void => {
        let ctx: CallContext;
        try {
          ctx = this.#context(call);
        } catch (err) {
          call.emit('error', fail(err, call));
          return;
        }
        fn(ctx, call.request, call).then(
          (stream) => void pump(stream, call, fail),
          (err: unknown) => call.emit('error', fail(err, call)),
        );
      };
    };
    const impl: Record<A2AGrpcMethod, unknown> = {
      SendMessage: unary('SendMessage', (ctx, req) => h.sendMessage(ctx, req)),
      SendStreamingMessage: streaming('SendStreamingMessage', (ctx, req) => h.sendStreamingMessage(ctx, req)),
      GetTask: unary('GetTask', (ctx, req) => h.getTask(ctx, req)),
      ListTasks: unary('ListTasks', (ctx, req) => h.listTasks(ctx, req)),
      CancelTask: unary('CancelTask', (ctx, req) => h.cancelTask(ctx, req)),
      SubscribeToTask: streaming('SubscribeToTask', (ctx, req, call) =>
        h.subscribeToTask(ctx, req, { lastEventId: lastEventIdOf(call.metadata) }),
      ),
      CreateTaskPushNotificationConfig: unary('CreateTaskPushNotificationConfig', (ctx, req) =>
        h.createTaskPushNotificationConfig(ctx, req),
      ),
      GetTaskPushNotificationConfig: unary('GetTaskPushNotificationConfig', (ctx, req) =>
        h.getTaskPushNotificationConfig(ctx, req),
      ),
      ListTaskPushNotificationConfigs: unary('ListTaskPushNotificationConfigs', (ctx, req) =>
        h.listTaskPushNotificationConfigs(ctx, req),
      ),
      DeleteTaskPushNotificationConfig: unary('DeleteTaskPushNotificationConfig', (ctx, req) =>
        h.deleteTaskPushNotificationConfig(ctx, req).then(() => ({})),
      ),
      GetExtendedAgentCard: unary('GetExtendedAgentCard', (ctx, req) => h.getExtendedAgentCard(ctx, req)),
    };
    return impl as UntypedServiceImplementation;
  }

  /**
   * The call context of a gRPC call: the caller verified on its connection,
   * the metadata as headers, a signal aborted when the client cancels. Throws
   * (as an A2A error) for a request that could not be decoded or nests too deep.
   */
  #context(call: ServerUnaryCall<Decoded, unknown> | ServerWritableStream<Decoded, unknown>): CallContext {
    const caller = this.#callerOf(call);
    if (!caller) throw A2AErrors.permissionDenied('no authenticated caller');
    // One clock read per call: the connection's timer may not have dropped it yet.
    if (!(Date.now() < caller.until)) {
      throw A2AErrors.permissionDenied(
        `the caller's certificate expired at ${new Date(caller.until).toISOString()}`,
      );
    }
    const req = call.request;
    if (req[UNDECODABLE] !== undefined) {
      throw A2AErrors.invalidParams(String((req[UNDECODABLE] as Error)?.message ?? 'undecodable request'));
    }
    if (exceedsDepth(req, MAX_JSON_DEPTH)) {
      throw A2AErrors.invalidParams(`request nested deeper than ${MAX_JSON_DEPTH} levels`);
    }
    const headers = headersOf(call.metadata);
    assertV1Version(headers);
    const tenant = typeof req.tenant === 'string' && req.tenant !== '' ? req.tenant : undefined;
    return new GrpcCallContext(caller.id, headers, tenant, call);
  }
}

/**
 * A gRPC call's context. Its abort signal is made when first read: most
 * unary calls never read it, and an AbortController per call was about a
 * sixth of the binding's own CPU per SendMessage (bench `bindings`, gRPC
 * server profile). A call cancelled before the read gets an aborted signal.
 */
class GrpcCallContext implements CallContext {
  readonly binding = 'GRPC' as const;
  declare readonly tenant?: string;
  #controller: AbortController | undefined;
  #cancelled = false;

  constructor(
    readonly caller: SpiffeId,
    readonly headers: CallHeaders,
    tenant: string | undefined,
    call: ServerUnaryCall<Decoded, unknown> | ServerWritableStream<Decoded, unknown>,
  ) {
    if (tenant !== undefined) (this as { tenant?: string }).tenant = tenant;
    call.once('cancelled', () => {
      this.#cancelled = true;
      this.#controller?.abort();
    });
  }

  get signal(): AbortSignal {
    if (!this.#controller) {
      this.#controller = new AbortController();
      // A handler passes it to each call it makes: more than 10 listeners at once is no leak.
      setMaxListeners(0, this.#controller.signal);
      if (this.#cancelled) this.#controller.abort();
    }
    return this.#controller.signal;
  }
}

/**
 * Bounds the request headers (gRPC metadata) of every call on `server` to
 * `max` bytes, the bound Node's HTTP server puts on the HTTP bindings'
 * headers (`http.maxHeaderSize`, 16 KiB by default; 431 above it), so every
 * binding refuses the same request. It is advertised to the client as
 * HTTP/2 SETTINGS_MAX_HEADER_LIST_SIZE, which Node enforces as it decodes the
 * header block, field by field (RFC 9113 §6.5.2: name, value and 32 bytes per
 * field): a stream over it is reset (ENHANCE_YOUR_CALM) with no more than
 * `max` bytes of it kept (and the one field being decoded, which nghttp2
 * caps at 64 KiB), before grpc-js sees a call. grpc-js has no option
 * for it (only `grpc.max_concurrent_streams` reaches the HTTP/2 settings), so
 * it goes into the options grpc-js creates its HTTP/2 servers with, which
 * must happen before the connection injector is created.
 *
 * Node applies its advertised bound only once the client acknowledged it:
 * the streams a client opens before (in its first flight, with the
 * preface) are left to {@link refuseMetadataOver}.
 */
function boundHeaderList(server: Server, max: number): void {
  const options = (server as unknown as { commonServerOptions?: Http2ServerOptions }).commonServerOptions;
  // A grpc-js without it still has the bound of refuseMetadataOver, only later.
  if (typeof options !== 'object' || options === null) return;
  options.settings = { ...options.settings, maxHeaderListSize: max };
}

/**
 * The HTTP/2 servers grpc-js made (here, the connection injector's), whose
 * streams are the calls: grpc-js has no API for them, so a grpc-js without
 * the field gives none, and calls reset in a flood are then left to
 * nghttp2's own limit.
 */
function http2ServersOf(server: Server): Array<Http2Server | Http2SecureServer> {
  const servers = (server as unknown as { http2Servers?: unknown }).http2Servers;
  return servers instanceof Map ? [...(servers.keys() as Iterable<Http2Server | Http2SecureServer>)] : [];
}

/**
 * Refuses a call whose metadata is over `max` bytes, counted as HTTP/2 counts
 * a header list, with RESOURCE_EXHAUSTED before its request message is read,
 * so nothing runs: the calls the HTTP/2 bound cannot reach yet
 * ({@link boundHeaderList}) are refused like those it does.
 */
function refuseMetadataOver(max: number): ServerInterceptor {
  return (_method, call) =>
    new ServerInterceptingCall(call, {
      start: (next) =>
        next({
          onReceiveMetadata: (metadata, pass) => {
            // As sent: binary (`-bin`) values in base64.
            const size = headerListBytes(metadata.toHttp2Headers());
            if (size <= max) pass(metadata);
            else
              call.sendStatus({
                code: GrpcStatus.RESOURCE_EXHAUSTED,
                details: `Received metadata larger than max (${size} vs ${max})`,
              });
          },
        }),
    });
}

/** The service definition with decoders that hand refusals to the handler instead of throwing in grpc-js. */
function serverService(): ReturnType<typeof a2aGrpcService> {
  const base = a2aGrpcService();
  const out: Record<string, unknown> = {};
  for (const [name, def] of Object.entries(base)) {
    out[name] = {
      ...def,
      requestDeserialize: (b: Buffer): Decoded => {
        try {
          return def.requestDeserialize(b);
        } catch (err) {
          return { [UNDECODABLE]: err } as Decoded;
        }
      },
    };
  }
  return out as ReturnType<typeof a2aGrpcService>;
}

/** A connection's remote address exactly as grpc-js's `getPeer()` writes it. */
function peerAddress(socket: Socket): string {
  return socket.remotePort ? `${socket.remoteAddress}:${socket.remotePort}` : String(socket.remoteAddress);
}

/**
 * The address and port of a `getPeer()` string ({@link peerAddress}: an
 * IPv6 address is not bracketed, so the port is what follows the last
 * colon); nothing for grpc-js's `unknown` (no socket).
 */
function addressOf(peer: string): RequestSource {
  if (peer === 'unknown' || peer === '') return {};
  const colon = peer.lastIndexOf(':');
  const port = colon > 0 ? Number(peer.slice(colon + 1)) : Number.NaN;
  return Number.isInteger(port) && port > 0
    ? { remoteAddress: peer.slice(0, colon), remotePort: port }
    : { remoteAddress: peer };
}

function headersOf(md: Metadata): CallHeaders {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(md.getMap())) if (typeof v === 'string') out[k] = v;
  return out;
}

function lastEventIdOf(md: Metadata): number | undefined {
  const v = md.get('last-event-id')[0];
  return typeof v === 'string' && /^\d{1,15}$/.test(v.trim()) ? Number(v.trim()) : undefined;
}

/** Writes a task stream as gRPC messages at the client's pace; ends with OK or the stream's error. */
async function pump(
  stream: TaskEventStream,
  call: ServerWritableStream<unknown, unknown>,
  fail: (err: unknown, call: AnyCall) => GrpcStatusObject,
): Promise<void> {
  let gone = false;
  // Ends a wait for 'drain' that can no longer come (the caller left).
  const left = new AbortController();
  const leave = () => {
    gone = true;
    left.abort();
    stream.close();
  };
  call.once('cancelled', leave);
  call.once('close', leave);
  // Flow control: a producer waiting in `ctx.drained()` waits while the call asks to wait.
  let backedUp = false;
  stream.attachSink(() => backedUp);
  try {
    for (;;) {
      const e = await stream.next();
      if (e === undefined || gone) break;
      // The sequence number rides in the event's metadata: gRPC has no SSE `id:`.
      if (!call.write(withEventId(e.event, e.seq))) {
        backedUp = true;
        await once(call, 'drain', { signal: left.signal });
        backedUp = false;
        stream.sinkDrained();
      }
    }
    if (!gone) call.end();
  } catch (err) {
    if (!gone) call.emit('error', fail(err, call));
  }
}

type GrpcStatusObject = ReturnType<typeof a2aErrorToGrpcStatus>;

/** A call of either kind this binding serves (unary, or server streaming). */
type AnyCall = ServerUnaryCall<unknown, unknown> | ServerWritableStream<unknown, unknown>;
