import { createSecureContext } from 'node:tls';
import {
  Client,
  Metadata,
  credentials,
  status as GrpcStatus,
  type ClientReadableStream,
  type ServiceError,
} from '@grpc/grpc-js';
import { SecureChannel } from '@weave/transport';
import { A2AClientError, type A2AError } from '../errors.js';
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
  /** Replaced after a rotation: closed once its last call ends. */
  retired: boolean;
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
 * calls in flight finish on the old one, which is closed after them.
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
    this.#unsubscribe = this.#channel.onRotated(() => this.#rotate());
  }

  #open(): Generation {
    const o = this.#channel.tlsClientOptions();
    const context = createSecureContext({
      cert: o.cert,
      key: o.key,
      ca: o.ca,
      minVersion: o.minVersion,
      ciphers: o.ciphers,
      secureOptions: o.secureOptions,
    });
    const creds = credentials.createFromSecureContext(context, {
      rejectUnauthorized: true,
      checkServerIdentity: (host, cert) => {
        const refused = o.checkServerIdentity(host, cert);
        if (refused) this.#refusal = { error: refused, at: Date.now() };
        return refused;
      },
    });
    const client = new Client(this.#target, creds, {
      // Responses are capped like on the HTTP bindings.
      'grpc.max_receive_message_length': this.#ctx.maxResponseBytes,
      // This channel's connections are its own: never shared with another client's credentials.
      'grpc.use_local_subchannel_pool': 1,
      // A broken connection fails the calls on it rather than waiting for a reconnect.
      'grpc.enable_retries': 0,
      // A stream carries nothing while its task is quiet: a dead peer or
      // network shows as a ping left unanswered (streamIdleTimeoutMs).
      ...keepaliveOptions(this.#ctx.streamIdleTimeoutMs ?? 0),
    });
    return { client, active: 0, retired: false };
  }

  #rotate(): void {
    if (this.#closed) return;
    let next: Generation;
    try {
      next = this.#open();
    } catch {
      // The channel keeps its previous credentials too; the next update tries again.
      return;
    }
    const old = this.#current;
    this.#current = next;
    old.retired = true;
    if (old.active === 0) old.client.close();
  }

  /** Takes the current client for one call; `done` releases it. */
  #acquire(): { gen: Generation; done: () => void } {
    if (this.#closed) throw new A2AClientError('TRANSPORT_CLOSED', `gRPC transport to ${this.url} is closed`);
    const gen = this.#current;
    gen.active++;
    let released = false;
    return {
      gen,
      done: () => {
        if (released) return;
        released = true;
        if (--gen.active === 0 && gen.retired) gen.client.close();
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

  /** The typed error of a failed call. */
  #failure(what: string, err: ServiceError, signal: AbortSignal | undefined, started: number): Error {
    if (signal?.aborted) return callFailure(what, signal.reason, signal);
    const hasDetails = err.metadata?.get(GRPC_STATUS_DETAILS_KEY).length > 0;
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
    if (tooLarge === 'HEADERS_TOO_LARGE') {
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
        (refusal.at >= started - 1 || (err.details ?? '').includes(refusal.error.message));
      return new A2AClientError('TRANSPORT_FAILED', `${what} failed: ${err.details || err.message}`, {
        cause: refused ? refusal.error : err,
      });
    }
    return grpcStatusToA2AError(err) as A2AError;
  }

  call(
    method: UnaryMethod,
    params: Record<string, unknown>,
    options: TransportCallOptions,
  ): Promise<unknown> {
    const what = `${method} to ${this.url}`;
    const def = this.#service[method];
    const signal = options.signal;
    if (signal?.aborted) return Promise.reject(callFailure(what, signal.reason, signal));
    const started = Date.now();
    const { gen, done } = this.#acquire();
    return new Promise((resolve, reject) => {
      const onAbort = () => call.cancel();
      const call = gen.client.makeUnaryRequest(
        def.path,
        def.requestSerialize,
        def.responseDeserialize,
        this.#params(params),
        this.#metadata(options),
        // The deadline covers connect, send and read.
        { deadline: started + Math.max(1, options.timeoutMs) },
        (err: ServiceError | null, value?: WireObject) => {
          signal?.removeEventListener('abort', onAbort);
          done();
          if (err) reject(this.#failure(what, err, signal, started));
          else resolve(method === 'DeleteTaskPushNotificationConfig' ? undefined : value);
        },
      );
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  async *stream(
    method: StreamMethod,
    params: Record<string, unknown>,
    options: TransportStreamOptions,
  ): AsyncGenerator<RawStreamEvent> {
    const what = `${method} to ${this.url}`;
    const def = this.#service[method];
    const signal = options.signal;
    if (signal?.aborted) throw callFailure(what, signal.reason, signal);
    const started = Date.now();
    const { gen, done } = this.#acquire();
    const call: ClientReadableStream<WireObject> = gen.client.makeServerStreamRequest(
      def.path,
      def.requestSerialize,
      def.responseDeserialize,
      this.#params(params),
      this.#metadata(options, options.lastEventId),
    );
    // The stream must be open (response headers in) within the budget; after that only the signal bounds it.
    let opened = false;
    let timedOut = false;
    call.once('metadata', () => {
      opened = true;
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
    } catch (err) {
      if (timedOut && !signal?.aborted) throw deadlineExceeded(what, err);
      throw this.#failure(what, err as ServiceError, signal, started);
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      // Ending the iteration early (a consumer's break) ends the call.
      call.cancel();
      done();
    }
  }

  /** Closes the channel; calls in flight finish first. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#unsubscribe();
    const gen = this.#current;
    gen.retired = true;
    if (gen.active === 0) gen.client.close();
  }
}

const grpcUnavailable =
  "the gRPC binding takes its mTLS credentials from a @weave/transport SecureChannel (the client's dispatcher is not one)";

/** Builds {@link GrpcTransport}s; usable when the client's dispatcher is a `SecureChannel`. */
export const grpcTransportFactory: ClientTransportFactory = {
  protocolBinding: 'GRPC',
  unavailable: (ctx) => (ctx.dispatcher instanceof SecureChannel ? undefined : grpcUnavailable),
  create: (iface, ctx) => new GrpcTransport(iface, ctx),
};
