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
export * from './workload/index.js';
