// The SPIFFE Workload API: gRPC client, identity provider, JWT source, and the dev server.
export {
  SPIFFE_ENDPOINT_SOCKET,
  parseWorkloadApiAddress,
  resolveWorkloadApiAddress,
  type WorkloadApiAddress,
} from './address.js';
export { WorkloadApiAddressError, WorkloadApiError } from './errors.js';
export { type BackoffOptions } from './backoff.js';
export { WORKLOAD_API_HEADER } from './proto.js';
