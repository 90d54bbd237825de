/**
 * @weave/identity — SPIFFE workload identity for Weave.
 *
 * @packageDocumentation
 */
export { WeaveError, SpiffeIdError } from './errors.js';
export { SpiffeId, TrustDomain, SpiffeIdReason } from './spiffe-id.js';
export {
  type Authorizer,
  type AuthorizerResult,
  PeerNotAuthorizedError,
  authorizeAny,
  authorizeId,
  authorizeOneOf,
  authorizeMemberOf,
  authorizeMatching,
  assertAuthorized,
} from './authorizer.js';
export {
  BundleError,
  BundleSet,
  JwtBundle,
  SpiffeBundle,
  X509Bundle,
  type JwtBundleSource,
  type X509BundleSource,
} from './bundle.js';
export {
  X509Svid,
  X509SvidError,
  verifyX509Svid,
  verifyX509SvidPath,
  type X509ChainEntry,
  type X509SvidErrorCode,
  type X509SvidPathCertificate,
  type X509SvidVerification,
} from './x509-svid.js';
export {
  JWT_SVID_ALGORITHMS,
  JWT_SVID_DEFAULT_LEEWAY_SECONDS,
  JwtSvid,
  JwtSvidError,
  parseJwtSvidInsecure,
  validateJwtSvid,
  type JwtSvidCheckOptions,
  type JwtSvidErrorCode,
} from './jwt-svid.js';
export {
  IdentityConfigError,
  IdentityNotReadyError,
  type IdentityExpiry,
  type IdentityProvider,
  type IdentityUpdate,
} from './provider.js';
export {
  IdentityProviderBase,
  type IdentityChange,
  type IdentityProviderBaseOptions,
} from './provider-base.js';
export { StaticMtlsProvider, type StaticMtlsOptions } from './static-provider.js';
export {
  SvidIdentityProvider,
  type HeldBundles,
  type HeldSvid,
  type SvidIdentityChange,
  type SvidIdentityOptions,
} from './svid-provider.js';
// Shared with the packages that read JSON a user wrote: one duplicate-key check for all of them.
export { formatKeyPath, lineCol, scanJson, type DuplicateJsonKey, type JsonPath } from './json.js';
export { randomUuid } from './uuid.js';
// How every package repeats a string someone else chose, bounded.
export { cutText } from './text.js';
// The bounds every package puts on the numbers of its options (timeouts above all).
export { MAX_TIMER_MS, budgetMs, budgetRefusal, timerMs, wholeNumber } from './options.js';
export type { X509Certificate } from '@peculiar/x509';
export * from './workload/index.js';
// What one Workload API response may carry at most: more is refused before it is parsed.
export {
  WORKLOAD_API_MAX_AUTHORITIES,
  WORKLOAD_API_MAX_SVIDS,
  WORKLOAD_API_MAX_TRUST_DOMAINS,
} from './workload/client.js';
