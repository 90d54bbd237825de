import { isIP } from 'node:net';
import {
  connect as tlsConnect,
  createSecureContext,
  type ConnectionOptions,
  type PeerCertificate,
  type SecureContext,
} from 'node:tls';
import {
  CallCredentials,
  ChannelCredentials,
  Client,
  Metadata,
  connectivityState,
  status as GrpcStatus,
  type ClientReadableStream,
  type ServiceError,
} from '@grpc/grpc-js';
import { SecureChannel, type CallFailureKind, type PeerVerificationError } from '@weave/transport';
import { cutText } from '@weave/identity';
import { A2AClientError, A2AError } from '../errors.js';
import {
  a2aGrpcService,
  takeEventId,
  type A2AGrpcServiceDefinition,
  type WireObject,
} from '../grpc/proto.js';
import { GRPC_STATUS_DETAILS_KEY, grpcStatusToA2AError, sizeRefusalOf } from '../grpc/status.js';
import type { AgentInterface } from '../wire/v1.js';
import { A2A_VERSION, callFailure, deadlineExceeded } from './http.js';
import { keepaliveOptions } from '../grpc/keepalive.js';
import type {
  ClientTransport,
  ClientTransportFactory,
  RawStreamEvent,
  StreamMethod,
  TransportCallOptions,
  TransportContext,
  TransportStreamOptions,
  UnaryMethod,
} from './types.js';

/** One grpc-js client (one channel) on the credentials of one SVID generation. */
interface Generation {
  readonly client: Client;
  /** Calls in flight on it. */
  active: number;
  /** Replaced (after a rotation, or a call that ran past its deadline): closed once its last call ends. */
  retired: boolean;
  closed?: boolean;
  /** Ends each call in flight on it with the error given (see {@link GrpcTransport}'s lapse). */
  readonly calls: Set<(err: PeerVerificationError) => void>;
  /**
   * The server verified on its connection, held to that verification by the
   * channel (`SecureChannel.holdServer`): `notAfter` is its certificate's end.
   */
  server?: { readonly notAfter: number; readonly release: () => void };
  /** Why its server no longer verifies: it carries no new call. */
  lapsed?: PeerVerificationError;
}

/**
 * `host:port` for grpc-js from an interface URL: `https://host[:port][/path]`
 * (as in the spec's examples; port 443 by default) or a bare `host:port` (as
 * the official SDKs advertise). Plain-text schemes are refused: every Weave
 * connection is mutual TLS.
 *
 * The result names grpc-js's `dns` resolver: grpc-js reads a bare
 * `unix:4444` (or the `unix:1234` of `https://unix:1234`) as a Unix socket
 * path, so a card could send the client to a local socket that was checked
 * here as host `unix`, port 4444. With the scheme spelled out the host is
 * always a host name or IP.
 */
export function grpcTarget(url: string): string {
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(url)) {
    let u: URL;
    try {
      u = new URL(url);
    } catch {
      throw new A2AClientError('INVALID_AGENT_URL', `not a gRPC interface URL: ${JSON.stringify(url)}`);
    }
    if (u.protocol !== 'https:' && u.protocol !== 'grpcs:') {
      throw new A2AClientError('INSECURE_URL', `gRPC interface ${url}: only TLS (https://) is spoken`);
    }
    return `dns:${u.hostname}:${u.port || '443'}`;
  }
  if (!/^(\[[0-9a-f:.]+\]|[a-z0-9.-]+):\d{1,5}$/i.test(url)) {
    throw new A2AClientError('INVALID_AGENT_URL', `not a gRPC interface URL: ${JSON.stringify(url)}`);
  }
  return `dns:${url}`;
}

/** The host of a {@link grpcTarget} (`dns:host:port`), an IPv6 address without its brackets. */
function targetHost(target: string): string {
  const host = target.slice('dns:'.length, target.lastIndexOf(':'));
  return host.startsWith('[') ? host.slice(1, -1) : host;
}

type SecureConnector = ReturnType<ChannelCredentials['_createSecureConnector']>;

/**
 * What `credentials.createFromSecureContext(context, { rejectUnauthorized:
 * true, checkServerIdentity })` makes, but for the TLS ServerName: grpc-js
 * sends the target's host as the ServerName (SNI), an IP address too, which
 * RFC 6066 forbids and Node warns of (DEP0123, "will be ignored in a future
 * version"). Here a target given as an IP address sends none; a host name is
 * sent as grpc-js sends it. The server's verification is the same either
 * way: the channel's secure context (its roots, TLS floor and suites), the
 * handshake's chain check, and `check`, the channel's SPIFFE check, which
 * does not read the host it is given.
 */
class SpiffeChannelCredentials extends ChannelCredentials {
  readonly #options: ConnectionOptions;

  constructor(
    context: SecureContext,
    check: (host: string, cert: PeerCertificate) => Error | undefined,
    host: string,
  ) {
    super();
    this.#options = {
      secureContext: context,
      rejectUnauthorized: true,
      checkServerIdentity: check,
      ALPNProtocols: ['h2'],
      ...(isIP(host) === 0 ? { servername: host } : {}),
    };
  }

  override _isSecure(): boolean {
    return true;
  }

  override _equals(other: ChannelCredentials): boolean {
    return other === this;
  }

  override _createSecureConnector(
    _target: unknown,
    _options: unknown,
    callCredentials?: CallCredentials,
  ): SecureConnector {
    const options = this.#options;
    return {
      connect: (socket) =>
        new Promise((resolve, reject) => {
          const tls = tlsConnect({ ...options, socket }, () => {
            // As grpc-js's own connector: the handshake's verdict on the chain, once more.
            if (!tls.authorized) {
              reject(tls.authorizationError);
              return;
            }
            resolve({ socket: tls, secure: true });
          });
          tls.on('error', reject);
        }),
      waitForReady: () => Promise.resolve(),
      getCallCredentials: () => callCredentials ?? CallCredentials.createEmpty(),
      destroy: () => undefined,
    };
  }
}

/** Codes grpc-js itself produces for a call that never got an answer (no A2A details attached). */
const LOCAL_CODES = new Set<number>([
  GrpcStatus.UNAVAILABLE,
  GrpcStatus.CANCELLED,
  GrpcStatus.DEADLINE_EXCEEDED,
  GrpcStatus.UNKNOWN,
  GrpcStatus.RESOURCE_EXHAUSTED,
]);

/**
 * The gRPC binding (spec §10): `lf.a2a.v1.A2AService` of the spec's proto,
 * server-streaming for SendStreamingMessage and SubscribeToTask, errors as a
 * gRPC status with the A2A ErrorInfo in its details.
 *
 * It runs over the same mutual TLS as the HTTP bindings, taken from the
 * client's `SecureChannel`: the channel's current SVID and trusted bundle,
 * and its own SPIFFE verification of the server, run by Node during the TLS
 * handshake — a server with the wrong SPIFFE ID gets no request byte. When
 * the SVID rotates, new calls go over a new connection with the new SVID;
 * calls in flight finish on the old one, which is closed after them. A
 * connection whose server's certificate expires, or whose chain a bundle
 * update no longer trusts, carries nothing more: its calls in flight (a
 * stream) fail with `TRANSPORT_FAILED` caused by the channel's
 * `PeerVerificationError`, and the next call takes a new connection,
 * verified anew.
 *
 * A call the server refused before running it (its stream refused, or sent
 * as the server closed the connection: above its GOAWAY's last stream id)
 * is sent once more within its deadline, after a GOAWAY on a new
 * connection (a request of up to 1 MiB: what grpc-js keeps to send again);
 * if that attempt fails too, the call fails as it did. No call that may
 * have run is sent again.
 */
export class GrpcTransport implements ClientTransport {
  readonly protocolBinding = 'GRPC';
  readonly url: string;
  readonly #target: string;
  readonly #channel: SecureChannel;
  readonly #ctx: TransportContext;
  readonly #tenant: string | undefined;
  readonly #service: A2AGrpcServiceDefinition;
  #current: Generation;
  /** The last peer refusal of this transport's connections, to explain the UNAVAILABLE it causes. */
  #refusal: { error: Error; at: number } | undefined;
  readonly #unsubscribe: () => void;
  #closed = false;

  constructor(iface: AgentInterface, ctx: TransportContext) {
    if (!(ctx.dispatcher instanceof SecureChannel)) {
      throw new A2AClientError('GRPC_NEEDS_SECURE_CHANNEL', grpcUnavailable);
    }
    this.url = iface.url;
    this.#target = grpcTarget(iface.url);
    this.#channel = ctx.dispatcher;
    this.#ctx = ctx;
    this.#tenant = iface.tenant || undefined;
    this.#service = a2aGrpcService();
    this.#current = this.#open();
    this.#unsubscribe = this.#channel.onRotated(() => this.#renew());
  }

  #open(): Generation {
    const o = this.#channel.tlsClientOptions();
    // Set before any connection is made: the check below runs during its handshake.
    const made: { gen?: Generation } = {};
    const context = createSecureContext({
      cert: o.cert,
      key: o.key,
      ca: o.ca,
      minVersion: o.minVersion,
      ciphers: o.ciphers,
      secureOptions: o.secureOptions,
    });
    const creds = new SpiffeChannelCredentials(
      context,
      (host, cert) => {
        const refused = o.checkServerIdentity(host, cert);
        if (refused) this.#refusal = { error: refused, at: Date.now() };
        else if (made.gen && !made.gen.lapsed) {
          // A new connection of this client (grpc-js reconnects): its server is the one held now.
          const held = made.gen;
          held.server?.release();
          held.server = this.#channel.holdServer(cert, (err) => this.#lapse(held, err));
        }
        return refused;
      },
      targetHost(this.#target),
    );
    const client = new Client(this.#target, creds, {
      // Responses are capped like on the HTTP bindings.
      'grpc.max_receive_message_length': this.#ctx.maxResponseBytes,
      // This channel's connections are its own: never shared with another client's credentials.
      'grpc.use_local_subchannel_pool': 1,
      // grpc-js's transparent retries, and no other: a call the server
      // provably never ran goes out again within its deadline. One whose
      // stream it refused (RST_STREAM REFUSED_STREAM, or above the last
      // stream id of its GOAWAY: then over a new connection) once, one the
      // connection would not start on a new connection. Every other
      // failure, a dropped connection included, fails the call at once:
      // SendMessage is not idempotent.
      'grpc.enable_retries': 1,
      // Nor any retry or hedging policy a DNS TXT record (a service config)
      // would give: it sends again calls that may have run.
      'grpc.service_config_disable_resolution': 1,
      // A stream carries nothing while its task is quiet: a dead peer or
      // network shows as a ping left unanswered (streamIdleTimeoutMs).
      ...keepaliveOptions(this.#ctx.streamIdleTimeoutMs ?? 0),
    });
    made.gen = { client, active: 0, retired: false, calls: new Set() };
    return made.gen;
  }

  /**
   * The server of `gen`'s connection no longer verifies (its certificate
   * expired, or a bundle update refuses its chain): the calls in flight on it
   * end with `err`, and the next call goes over a new client (connection).
   */
  #lapse(gen: Generation, err: PeerVerificationError): void {
    if (gen.lapsed) return;
    gen.lapsed = err;
    for (const cut of gen.calls) cut(err);
    this.#renew(gen);
    // Also when no new client could be made (no bundle left): nothing more goes over this one.
    gen.retired = true;
    if (gen.active === 0) this.#close(gen);
  }

  #close(gen: Generation): void {
    if (gen.closed) return;
    gen.closed = true;
    gen.server?.release();
    gen.client.close();
  }

  /**
   * New calls go over a new client (and connection); calls in flight finish
   * on `old`, which is closed after them. After an SVID rotation, and after
   * a call on `old` ran past its deadline: its connection may be one Node
   * left for dead without a word. nghttp2 gives a connection up when the
   * server sends a header field over its 64 KiB HPACK bound (a 100 KB
   * grpc-message): it sends GOAWAY and stops reading and writing, and Node
   * emits nothing, so the call waiting on it can only end at its deadline,
   * and every later call on it would wait for its own deadline too.
   */
  #renew(old: Generation = this.#current): void {
    if (this.#closed || old !== this.#current) return;
    let next: Generation;
    try {
      next = this.#open();
    } catch {
      // The channel keeps its previous credentials too; the next update tries again.
      return;
    }
    this.#current = next;
    old.retired = true;
    if (old.active === 0) this.#close(old);
  }

  /** Takes the current client for one call; `done` releases it. */
  #acquire(what: string): { gen: Generation; done: () => void } {
    if (this.#closed) throw new A2AClientError('TRANSPORT_CLOSED', `gRPC transport to ${this.url} is closed`);
    let gen = this.#current;
    // One clock read per call: the channel's timer may not have ended a connection whose server just expired.
    if (gen.server !== undefined && Date.now() >= gen.server.notAfter) {
      this.#renew(gen);
      gen = this.#current;
    }
    // Its server no longer verifies and no new client could be made: refused as a refused handshake is.
    if (gen.lapsed) {
      throw new A2AClientError('TRANSPORT_FAILED', `${what} failed: ${gen.lapsed.message}`, {
        cause: gen.lapsed,
      });
    }
    gen.active++;
    let released = false;
    return {
      gen,
      done: () => {
        if (released) return;
        released = true;
        if (--gen.active === 0 && gen.retired) this.#close(gen);
      },
    };
  }

  #metadata(options: TransportCallOptions, lastEventId?: string): Metadata {
    const md = new Metadata();
    for (const [k, v] of Object.entries(this.#ctx.headers)) md.set(k.toLowerCase(), v);
    md.set('a2a-version', A2A_VERSION);
    if (options.headers) for (const [k, v] of Object.entries(options.headers)) md.set(k.toLowerCase(), v);
    if (lastEventId !== undefined) md.set('last-event-id', lastEventId);
    return md;
  }

  #params(params: Record<string, unknown>): WireObject {
    return this.#tenant !== undefined && params.tenant === undefined
      ? { ...params, tenant: this.#tenant }
      : params;
  }

  /**
   * Starts `method` as a server-streaming call, the unary methods too: the
   * wire is the same, and grpc-js's own unary call reads one message, so
   * behind a second one it never sees the status and waits for its deadline.
   * What the answer breaks (its content type, a message that does not
   * decode) is kept in the call's state, and the call cancelled.
   */
  #begin(
    method: UnaryMethod | StreamMethod,
    params: Record<string, unknown>,
    options: TransportStreamOptions,
    what: string,
    deadline?: number,
  ): BegunCall {
    const def = this.#service[method];
    const started = Date.now();
    const { gen, done } = this.#acquire(what);
    const state: CallState = { started, gen, answered: false };
    const deserialize = (bytes: Buffer): WireObject => {
      try {
        return def.responseDeserialize(bytes);
      } catch (err) {
        state.invalid ??= new A2AClientError(
          'INVALID_RESPONSE',
          `${what}: a message of the answer is not valid: ${(err as Error).message}`,
          { cause: err },
        );
        throw err;
      }
    };
    const call = gen.client.makeServerStreamRequest(
      def.path,
      def.requestSerialize,
      deserialize,
      this.#params(params),
      this.#metadata(options, options.lastEventId),
      deadline === undefined ? {} : { deadline },
    );
    const cut = (err: PeerVerificationError): void => {
      state.lapsed ??= err;
      call.cancel();
    };
    gen.calls.add(cut);
    call.once('metadata', (md: Metadata) => {
      state.answered = true;
      // grpc-js reads any body as gRPC frames: an HTML page's first bytes made a 1.7 GB "message".
      const type = String(md.get('content-type')[0] ?? '');
      if (!GRPC_CONTENT_TYPE.test(type)) {
        state.invalid ??= new A2AClientError(
          'INVALID_RESPONSE',
          `${what}: the answer is not gRPC (content type ${type ? JSON.stringify(cutText(type, 64)) : 'none'})`,
        );
        call.cancel();
      }
    });
    return {
      call,
      state,
      end: () => {
        gen.calls.delete(cut);
        done();
      },
    };
  }

  /**
   * The typed error of a failed call. One that ran past its deadline (grpc-js's,
   * or a caller's signal with a timeout reason) renews the client: see {@link GrpcTransport.#renew}.
   */
  #failure(what: string, err: ServiceError, signal: AbortSignal | undefined, state: CallState): Error {
    // Read before a renewal below closes the client.
    state.connected = connected(state.gen);
    const failure = this.#typedFailure(what, err, signal, state);
    // Node 22 and 24 fail the call at once instead (TRANSPORT_FAILED), and the
    // connection refuses new streams thereafter ("Failed to start HTTP/2 stream").
    if (
      failure instanceof A2AClientError &&
      (failure.code === 'DEADLINE_EXCEEDED' || failure.code === 'TRANSPORT_FAILED')
    ) {
      this.#renew(state.gen);
    }
    return failure;
  }

  #typedFailure(what: string, err: ServiceError, signal: AbortSignal | undefined, state: CallState): Error {
    if (signal?.aborted) return callFailure(what, signal.reason, signal);
    if (state.invalid) return state.invalid;
    if (state.lapsed) return callFailure(what, state.lapsed);
    // grpc-js passes on a grpc-status that is no number as NaN, and its own
    // refusal of a message it cannot unframe (compressed, no grpc-encoding) with no code at all.
    if (!Number.isInteger(err.code)) {
      return new A2AClientError(
        'INVALID_RESPONSE',
        `${what}: the answer is not valid gRPC (status code ${String(err.code)})`,
        { cause: err },
      );
    }
    const hasDetails = err.metadata?.get(GRPC_STATUS_DETAILS_KEY).length > 0;
    // A status grpc-js made up for an answer that brought none: no error the agent sent.
    const local = hasDetails ? null : LOCAL_STATUS.exec(err.details ?? '');
    if (local && (local[1] === '0' || local[2] === '200')) {
      return new A2AClientError('INVALID_RESPONSE', `${what}: the answer ended without a gRPC status`, {
        cause: err,
      });
    }
    if ((local && err.code === GrpcStatus.INTERNAL) || STREAM_NOT_STARTED.test(err.details ?? '')) {
      return new A2AClientError('TRANSPORT_FAILED', `${what} failed: ${err.details}`, { cause: err });
    }
    const tooLarge = sizeRefusalOf(err, this.#ctx.maxResponseBytes);
    if (tooLarge === 'RESPONSE_TOO_LARGE') {
      return new A2AClientError(
        'RESPONSE_TOO_LARGE',
        `response from ${what} exceeds ${this.#ctx.maxResponseBytes} bytes`,
        { cause: err },
      );
    }
    if (tooLarge === 'PAYLOAD_TOO_LARGE') {
      // The server's refusal of the request message, the HTTP bindings' 413:
      // the same A2A error as theirs, not a local failure (RESOURCE_EXHAUSTED is in LOCAL_CODES).
      return grpcStatusToA2AError(err);
    }
    if (tooLarge === 'HEADERS_TOO_LARGE' && !state.answered) {
      // The HTTP bindings' 431: the server never read the request.
      return new A2AClientError(
        'HEADERS_TOO_LARGE',
        `${what} refused: its headers (gRPC metadata) are larger than the server accepts`,
        { cause: err },
      );
    }
    if (!hasDetails && LOCAL_CODES.has(err.code)) {
      if (err.code === GrpcStatus.DEADLINE_EXCEEDED) return deadlineExceeded(what, err);
      // A connection refused for its SPIFFE ID: the cause is the verifier's
      // error, as on the HTTP bindings, so a wrong peer is told from a failed
      // network. Refused during this call, or earlier: while grpc-js backs off
      // after a refused handshake it fails calls at once, with no new
      // handshake, naming that refusal as its last error.
      const refusal = this.#refusal;
      const refused =
        refusal !== undefined &&
        (refusal.at >= state.started - 1 || (err.details ?? '').includes(refusal.error.message));
      return new A2AClientError('TRANSPORT_FAILED', `${what} failed: ${err.details || err.message}`, {
        cause: refused ? refusal.error : err,
      });
    }
    return grpcStatusToA2AError(err) as A2AError;
  }

  /**
   * A unary method. Each call goes through the channel's circuit breaker
   * (`SecureChannel.guardCall`), in the peer's one breaker with the HTTP
   * bindings' requests: see {@link failureKind} for what counts.
   */
  call(
    method: UnaryMethod,
    params: Record<string, unknown>,
    options: TransportCallOptions,
  ): Promise<unknown> {
    const what = `${method} to ${this.url}`;
    const signal = options.signal;
    if (signal?.aborted) return Promise.reject(callFailure(what, signal.reason, signal));
    // The deadline covers connect, send and read.
    const deadline = Date.now() + Math.max(1, options.timeoutMs);
    return this.#channel.guardCall(
      () => this.#unary(method, this.#begin(method, params, options, what, deadline), signal, what),
      kindOfFailed,
      // The channel's refusal (an open circuit, a closed channel) typed as on the HTTP bindings.
      (err) => callFailure(what, err),
    );
  }

  #unary(
    method: UnaryMethod,
    { call, state, end }: BegunCall,
    signal: AbortSignal | undefined,
    what: string,
  ): Promise<unknown> {
    return new Promise((resolve, reject) => {
      let value: WireObject | undefined;
      let settled = false;
      const onAbort = () => call.cancel();
      const settle = (err: Error | undefined): void => {
        if (settled) return;
        settled = true;
        signal?.removeEventListener('abort', onAbort);
        end();
        if (err) reject(failed(err, state));
        else resolve(method === 'DeleteTaskPushNotificationConfig' ? undefined : value);
      };
      call.on('data', (v: WireObject) => {
        if (value === undefined) {
          value = v;
          return;
        }
        state.invalid ??= new A2AClientError(
          'INVALID_RESPONSE',
          `${what}: answered with more than one message`,
        );
        call.cancel();
      });
      call.on('error', (err: ServiceError) => settle(this.#failure(what, err, signal, state)));
      call.on('end', () =>
        settle(
          state.invalid ??
            (value === undefined
              ? new A2AClientError('INVALID_RESPONSE', `${what}: answered OK with no message`)
              : undefined),
        ),
      );
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  /**
   * A streaming method. The stream goes through the channel's circuit
   * breaker as a unary call does, counted once it opens (its response
   * headers) or fails before that: what it carries later says nothing more
   * of the peer's health, as for the HTTP bindings' streams.
   */
  async *stream(
    method: StreamMethod,
    params: Record<string, unknown>,
    options: TransportStreamOptions,
  ): AsyncGenerator<RawStreamEvent> {
    const what = `${method} to ${this.url}`;
    const signal = options.signal;
    if (signal?.aborted) throw callFailure(what, signal.reason, signal);
    // Set when the breaker admits the call: guardCall runs it at once.
    const started: { begun?: BegunCall; opening?: { ok: () => void; fail: (err: unknown) => void } } = {};
    const admitted = this.#channel.guardCall(
      () =>
        new Promise<void>((ok, fail) => {
          started.opening = { ok, fail };
          started.begun = this.#begin(method, params, options, what);
        }),
      (err) => failureKind(err, started.begun?.state),
    );
    const { begun, opening } = started;
    if (begun === undefined || opening === undefined) {
      // Refused (an open circuit, a closed channel or transport): nothing was sent.
      try {
        await admitted;
      } catch (err) {
        throw callFailure(what, err);
      }
      throw new A2AClientError('TRANSPORT_FAILED', `${what} failed: the call was not started`);
    }
    // Only the breaker's: the stream's failure is thrown below.
    admitted.catch(() => undefined);
    const { call, state, end } = begun;
    // The stream must be open (response headers in) within the budget; after that only the signal bounds it.
    let opened = false;
    let timedOut = false;
    call.once('metadata', () => {
      opened = true;
      opening.ok();
      clearTimeout(timer);
    });
    const timer = setTimeout(
      () => {
        if (opened) return;
        timedOut = true;
        call.cancel();
      },
      Math.max(1, options.timeoutMs),
    );
    const onAbort = () => call.cancel();
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      for await (const value of call as AsyncIterable<WireObject>) {
        const eventId = takeEventId(value);
        yield eventId === undefined ? { value } : { value, eventId };
      }
      if (state.invalid) throw state.invalid;
      opening.ok();
    } catch (err) {
      let failure: Error;
      if (timedOut && !signal?.aborted) {
        state.connected = connected(state.gen);
        this.#renew(state.gen);
        failure = deadlineExceeded(what, err);
      } else {
        failure =
          err === state.invalid ? (err as Error) : this.#failure(what, err as ServiceError, signal, state);
      }
      // A no-op once the stream opened.
      opening.fail(failure);
      throw failure;
    } finally {
      // Settled by now (an event comes after the headers); a no-op that keeps the breaker from waiting on it.
      opening.ok();
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      // Ending the iteration early (a consumer's break) ends the call.
      call.cancel();
      end();
    }
  }

  /** Closes the channel; calls in flight finish first. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#unsubscribe();
    const gen = this.#current;
    gen.retired = true;
    if (gen.active === 0) this.#close(gen);
  }
}

/** A call {@link GrpcTransport} started: grpc-js's call, what it hears, and `end` to release its client. */
interface BegunCall {
  readonly call: ClientReadableStream<WireObject>;
  readonly state: CallState;
  readonly end: () => void;
}

/** What one call has heard, for {@link GrpcTransport}'s reading of its failure. */
interface CallState {
  readonly started: number;
  readonly gen: Generation;
  /** Response headers came: the server read the request's. */
  answered: boolean;
  /** Whether grpc-js had a connection to the server when the call failed (read before the client is renewed). */
  connected?: boolean;
  /** How the answer broke the protocol (a content type, a message that does not decode, a second message). */
  invalid?: A2AClientError;
  /** The server no longer verifies: the call was ended for it (see GrpcTransport's lapse). */
  lapsed?: PeerVerificationError;
}

/** Whether `gen`'s client has a connection to its server now (grpc-js's channel is READY). */
function connected(gen: Generation): boolean {
  return gen.client.getChannel().getConnectivityState(false) === connectivityState.READY;
}

/**
 * How a failed call bears on the peer's health, for the channel's circuit
 * breaker (`SecureChannel.guardCall`), read as the channel reads its own
 * requests, whose attempt fails when it ends before a response started:
 *
 * - the peer answered (`'answered'`, a success): response headers came, or
 *   an A2A error (whatever its code: a policy denial, TASK_NOT_FOUND, a
 *   draining server's UNAVAILABLE with its ErrorInfo, as an HTTP 503 is an
 *   answer), or an answer that breaks the protocol or the size bounds;
 * - the caller's own (`'caller'`, neither): its abort, this transport
 *   closed, or its time running out on a call the server had a connection
 *   for (the HTTP bindings' deadline is the caller's abort too);
 * - anything else failed before an answer (`'unreachable'`, a failure): a
 *   connection refused or lost, a handshake failed or its peer refused,
 *   grpc-js's own UNAVAILABLE, a stream reset, a server whose verification
 *   lapsed, and the time running out while no connection to the server
 *   could be made (a connect that hangs).
 */
function failureKind(err: unknown, state: CallState | undefined): CallFailureKind {
  if (err instanceof A2AError || state?.answered === true) return 'answered';
  if (!(err instanceof A2AClientError)) return 'unreachable';
  switch (err.code) {
    case 'INVALID_RESPONSE':
    case 'RESPONSE_TOO_LARGE':
    case 'HEADERS_TOO_LARGE':
      return 'answered';
    case 'DEADLINE_EXCEEDED':
      return state?.connected === false ? 'unreachable' : 'caller';
    case 'ABORTED':
    case 'TRANSPORT_CLOSED':
      return 'caller';
    default:
      return 'unreachable';
  }
}

/** The kind of a unary call's failure, read as it failed (see {@link failed}). */
const failedKinds = new WeakMap<Error, CallFailureKind>();

/**
 * `err`, the failure of a unary call in `state`, with its {@link failureKind}
 * kept for {@link kindOfFailed}: one function for every call, not a closure per call.
 */
function failed(err: Error, state: CallState): Error {
  failedKinds.set(err, failureKind(err, state));
  return err;
}

/**
 * {@link failureKind} of a unary call's failure, for the channel's breaker:
 * as read when it failed, or of the error alone for one thrown before the call began.
 */
function kindOfFailed(err: unknown): CallFailureKind {
  return (err instanceof Error ? failedKinds.get(err) : undefined) ?? failureKind(err, undefined);
}

/**
 * grpc-js's wording of the status it makes up when a stream closes without
 * one ("Received RST_STREAM with code N …", code 0 when the server ended the
 * stream without trailers) and when trailers hold no grpc-status ("Received
 * HTTP status code N").
 */
const LOCAL_STATUS = /^Received (?:RST_STREAM with code (\d+)|HTTP status code (\d+)$)/;

/**
 * grpc-js's wording when the connection will not take a new stream (a session
 * that got a GOAWAY), for a call it did not send again on a new connection:
 * one whose request is over the 1 MiB it keeps per call to send again.
 */
const STREAM_NOT_STARTED = /^Failed to start HTTP\/2 stream/;

/** `application/grpc`, alone or as `+proto`, parameters allowed (gRPC over HTTP/2, "Content-Type"). */
const GRPC_CONTENT_TYPE = /^application\/grpc(?:\+proto)?(?:\s*;|$)/i;

const grpcUnavailable =
  "the gRPC binding takes its mTLS credentials from a @weave/transport SecureChannel (the client's dispatcher is not one)";

/** Builds {@link GrpcTransport}s; usable when the client's dispatcher is a `SecureChannel`. */
export const grpcTransportFactory: ClientTransportFactory = {
  protocolBinding: 'GRPC',
  unavailable: (ctx) => (ctx.dispatcher instanceof SecureChannel ? undefined : grpcUnavailable),
  create: (iface, ctx) => new GrpcTransport(iface, ctx),
};
