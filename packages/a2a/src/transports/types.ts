import type { Dispatcher } from 'undici';
import type { AgentInterface } from '../wire/v1.js';

/** The three standard A2A protocol bindings (spec §5), as named in `supportedInterfaces`. */
export const PROTOCOL_BINDINGS = ['JSONRPC', 'HTTP+JSON', 'GRPC'] as const;
/** A standard protocol binding name. */
export type ProtocolBinding = (typeof PROTOCOL_BINDINGS)[number];

/** The A2A methods answered with one response. */
export type UnaryMethod =
  | 'SendMessage'
  | 'GetTask'
  | 'ListTasks'
  | 'CancelTask'
  | 'CreateTaskPushNotificationConfig'
  | 'GetTaskPushNotificationConfig'
  | 'ListTaskPushNotificationConfigs'
  | 'DeleteTaskPushNotificationConfig'
  | 'GetExtendedAgentCard';

/** The A2A methods answered with a stream of `StreamResponse`s. */
export type StreamMethod = 'SendStreamingMessage' | 'SubscribeToTask';

/** Per-call options a transport honours. */
export interface TransportCallOptions {
  /** Aborts the call at any step (connect, send, read). */
  readonly signal?: AbortSignal | undefined;
  /** Extra headers (HTTP) or metadata (gRPC) of this call only. */
  readonly headers?: Readonly<Record<string, string>> | undefined;
  /**
   * Time left for the call, in ms. A unary call must be answered within it; a
   * stream must be open (response headers received) within it.
   */
  readonly timeoutMs: number;
}

/** Per-call options of a streaming method. */
export interface TransportStreamOptions extends TransportCallOptions {
  /** Resume after this event id (`Last-Event-ID` on the HTTP bindings; Weave servers replay what followed). */
  readonly lastEventId?: string | undefined;
}

/** One event of a stream as received: the `StreamResponse` (not yet validated) and its event id, if any. */
export interface RawStreamEvent {
  readonly value: unknown;
  readonly eventId?: string;
}

/**
 * One A2A protocol binding bound to one interface of an agent (its URL and
 * tenant). A transport frames requests, reads responses and maps the binding's
 * errors to {@link A2AError} (protocol errors, with their JSON-RPC code) or
 * {@link A2AClientError} (transport and framing failures); it returns results
 * in their ProtoJSON shape, unvalidated — {@link A2AClient} validates them,
 * whichever binding carried them.
 *
 * Params are the ProtoJSON request objects of the JSON-RPC binding (e.g.
 * `{id, historyLength}` for GetTask); the interface's tenant is added when the
 * params carry none.
 */
export interface ClientTransport {
  /** The binding, as named in the card (`JSONRPC`, `HTTP+JSON`, `GRPC`). */
  readonly protocolBinding: string;
  /** The interface URL this transport talks to. */
  readonly url: string;
  /** A unary method; resolves with the result in its ProtoJSON shape (`undefined` for an empty result). */
  call(method: UnaryMethod, params: Record<string, unknown>, options: TransportCallOptions): Promise<unknown>;
  /** A streaming method; yields each `StreamResponse` as received. Ending the iteration closes the stream. */
  stream(
    method: StreamMethod,
    params: Record<string, unknown>,
    options: TransportStreamOptions,
  ): AsyncGenerator<RawStreamEvent>;
  /** Releases what the transport holds (gRPC channels); in-flight calls finish first. */
  close(): Promise<void>;
}

/** What a transport is built with: the client's connection and limits. */
export interface TransportContext {
  /** The SPIFFE-verified connection: a `@weave/transport` SecureChannel (or another undici dispatcher). */
  readonly dispatcher: Dispatcher;
  /** Headers (metadata) sent on every call. */
  readonly headers: Readonly<Record<string, string>>;
  /** Largest response or stream event accepted, in bytes. */
  readonly maxResponseBytes: number;
  /**
   * How long an open stream may stay quiet before it is taken as dead, in
   * ms (`A2AClientOptions.streamIdleTimeoutMs` says what counts as quiet on
   * each binding); 0 or absent: no limit, only the caller's signal ends a
   * quiet stream.
   */
  readonly streamIdleTimeoutMs?: number | undefined;
}

/** Builds the transport of one binding. */
export interface ClientTransportFactory {
  /** The binding it speaks, as named in `supportedInterfaces[].protocolBinding`. */
  readonly protocolBinding: string;
  /**
   * Why this factory cannot serve with `ctx` (e.g. gRPC needs a SecureChannel
   * to take its credentials from), or `undefined` when it can. An interface
   * whose factory cannot serve is skipped.
   */
  unavailable?(ctx: TransportContext): string | undefined;
  create(iface: AgentInterface, ctx: TransportContext): ClientTransport;
}
