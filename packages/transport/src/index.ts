/**
 * @weave/transport — SPIFFE mTLS for Weave: a verifying undici client
 * (`SecureChannel`) with its retry rule and circuit breaker, and TLS options
 * and rotation for any Node TLS server. The fastify plugin and server factory are in
 * `@weave/transport/server`.
 *
 * @packageDocumentation
 */
export {
  TransportError,
  PeerVerificationError,
  CircuitOpenError,
  TransportConfigError,
  TransportIdentityError,
  ClientCertificateRequiredError,
} from './errors.js';
export {
  TransportConfigSchema,
  RetryOptionsSchema,
  CircuitBreakerOptionsSchema,
  parseTransportConfig,
  TLS_VERSIONS,
  TRANSPORT_TIMEOUT_LIMITS_MS,
  HTTP_VERSIONS,
  type TransportConfig,
  type TransportConfigInput,
  type TlsVersion,
  type HttpVersion,
  type RetryOptions,
  type RetryOptionsInput,
  type CircuitBreakerOptions,
  type CircuitBreakerOptionsInput,
} from './config.js';
export {
  RetryPolicy,
  isIdempotentMethod,
  provesNothingSent,
  isTransientNetworkError,
  type RetryContext,
} from './retry.js';
export {
  CircuitBreaker,
  CircuitState,
  type CircuitBreakerInit,
  type CircuitMetrics,
} from './circuit-breaker.js';
export {
  SecureChannel,
  type PeerSpec,
  type PeerVerifiedEvent,
  type ChannelRequestOptions,
  type SpiffeTlsClientOptions,
  type CallFailureKind,
} from './channel.js';
export { secureFetch } from './fetch.js';
export { requireSecureChannel } from './require-channel.js';
export {
  MAX_CONCURRENT_STREAMS,
  HTTP2_RESET_LIMIT,
  ConnectionLimiter,
  ConnectionLimitsSchema,
  closeHttp2ResetFloods,
  createMtlsServerOptions,
  headerListBytes,
  LogRate,
  logTlsRefusals,
  parseConnectionLimits,
  parseHttp1FromStream,
  watchServerIdentity,
  type ConnectionLimits,
  type ConnectionLimitsInput,
  type ConnectionRefusals,
  type MtlsServerOptions,
  type TlsRefusalLog,
  type TlsRefusalLogRate,
} from './server-options.js';
/**
 * The check `mtlsAuth` runs on every caller, for servers that are not
 * fastify (the A2A gRPC binding): the peer's chain verified against the
 * bundle of its own trust domain, its SPIFFE ID returned.
 */
export { verifyPeerSocket } from './tls.js';
/**
 * For servers that are not fastify (the A2A gRPC binding): the verifier
 * `mtlsAuth` and `createMtlsServer` share per identity provider, to admit a
 * connection and end it when its peer's certificate expires or a bundle
 * change refuses its chain.
 */
export { PeerVerifier, type PeerVerification } from './peer-verifier.js';
/** The cipher suites every Weave client and server offers and accepts: AEAD with forward secrecy only. */
export { TLS_CIPHERS } from './tls.js';
/**
 * One timer for many wall-clock deadlines (calls, waits, connections'
 * certificate ends), for what would otherwise set a timer each.
 */
export { Deadlines, type Deadline } from './deadlines.js';
export { urlHost } from './url-host.js';
