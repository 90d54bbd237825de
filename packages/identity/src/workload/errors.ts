import { status as GrpcStatus, type ServiceError } from '@grpc/grpc-js';
import { WeaveError } from '../errors.js';

/** A Workload API address (option or `SPIFFE_ENDPOINT_SOCKET`) is malformed. */
export class WorkloadApiAddressError extends WeaveError {
  /** The rejected address, as given. */
  readonly address: string;

  constructor(address: string, reason: string) {
    super(
      'INVALID_WORKLOAD_API_ADDRESS',
      `invalid Workload API address ${JSON.stringify(address)}: ${reason}`,
    );
    this.address = address;
  }
}

/**
 * A Workload API call failed. `code` is `WORKLOAD_API_<GRPC STATUS>` for gRPC
 * failures (e.g. `WORKLOAD_API_PERMISSION_DENIED`), `WORKLOAD_API_BAD_RESPONSE`
 * when the server sent something that is not a valid answer, and
 * `WORKLOAD_API_CLOSED` after the client was closed.
 */
export class WorkloadApiError extends WeaveError {
  /** The gRPC status code, when the failure came from gRPC. */
  readonly grpcStatus: GrpcStatus | undefined;

  constructor(code: string, message: string, options?: { cause?: unknown; grpcStatus?: GrpcStatus }) {
    super(code, message, options);
    this.grpcStatus = options?.grpcStatus;
  }

  /** @internal Wraps a gRPC failure, keeping its status. */
  static fromGrpc(err: unknown, what: string): WorkloadApiError {
    if (err instanceof WorkloadApiError) return err;
    const se = err as Partial<ServiceError> | undefined;
    const st = typeof se?.code === 'number' ? (se.code as GrpcStatus) : GrpcStatus.UNKNOWN;
    const name = GrpcStatus[st] ?? 'UNKNOWN';
    // grpc-js ends a failed connection's details with "Resolution note: "
    // and its note, empty for a Unix socket: a dangling label in every message.
    const detail = (se?.details || (err instanceof Error ? err.message : String(err))).replace(
      /\. Resolution note: $/,
      '',
    );
    return new WorkloadApiError(`WORKLOAD_API_${name}`, `${what} failed: ${name}: ${detail}`, {
      cause: err,
      grpcStatus: st,
    });
  }
}

/** The Workload API sent a response that does not hold a valid identity document. */
export function badResponse(what: string, reason: string, cause?: unknown): WorkloadApiError {
  return new WorkloadApiError(
    'WORKLOAD_API_BAD_RESPONSE',
    `invalid ${what} response from the Workload API: ${reason}`,
    {
      cause,
    },
  );
}
