/**
 * @weave/identity/dev — development identities: a dev certificate authority,
 * an identity provider backed by it, and the dev Workload API server that
 * serves its SVIDs over the SPIFFE Workload API. Never use these in
 * production (SPIRE issues identities there); production code imports only
 * `@weave/identity`, which never loads this module.
 *
 * @packageDocumentation
 */
export { DevCaError, DevCertificateAuthority, JWT_SVID_MAX_TTL_SECONDS } from './dev-ca.js';
export { DevCaIdentityProvider } from './dev-ca-provider.js';
export {
  DevWorkloadApiServer,
  DevWorkloadApiServerError,
  type DevWorkloadApiServerOptions,
} from './workload/dev-server.js';
