// The SPIFFE Workload API: gRPC client, identity provider, and JWT source (the dev server is in `@weave/identity/dev`).
export {
  SPIFFE_ENDPOINT_SOCKET,
  parseWorkloadApiAddress,
  resolveWorkloadApiAddress,
  type WorkloadApiAddress,
} from './address.js';
export { WorkloadApiAddressError, WorkloadApiError } from './errors.js';
export { type BackoffOptions } from './backoff.js';
export { WORKLOAD_API_HEADER, type JsonValue } from './proto.js';
export {
  WorkloadApiClient,
  type FetchOptions,
  type ValidatedJwtSvid,
  type WatchHandle,
  type Watcher,
  type WorkloadApiClientOptions,
  type X509Context,
} from './client.js';
export {
  WorkloadApiIdentityProvider,
  type WorkloadApiIdentityProviderOptions,
  type WorkloadIdentityError,
} from './provider.js';
export { JwtSource, type JwtSourceOptions } from './jwt-source.js';
