/**
 * A2A errors on the gRPC binding (spec §10.6): a gRPC status code (§5.4), the
 * message, and a `google.rpc.Status` in the `grpc-status-details-bin` trailer
 * whose details carry the A2A `google.rpc.ErrorInfo`.
 */
import { Metadata, status as GrpcStatus, type ServiceError, type StatusObject } from '@grpc/grpc-js';
import {
  A2A_ERROR_DOMAIN,
  A2AError,
  ERROR_INFO_TYPE,
  grpcStatusOf,
  jsonRpcCodeOfGrpcStatus,
  jsonRpcCodeOfReason,
  type ErrorInfo,
} from '../errors.js';
import { a2aProtoRoot } from './proto.js';

/** Trailer carrying the binary `google.rpc.Status`. */
export const GRPC_STATUS_DETAILS_KEY = 'grpc-status-details-bin';

function statusType() {
  return a2aProtoRoot().lookupType('google.rpc.Status');
}
function errorInfoType() {
  return a2aProtoRoot().lookupType('google.rpc.ErrorInfo');
}

/** The ErrorInfo entries of an A2A error's `data`. */
function errorInfosOf(err: A2AError): ErrorInfo[] {
  const data = Array.isArray(err.data) ? (err.data as unknown[]) : [];
  return data.filter(
    (d): d is ErrorInfo =>
      !!d &&
      typeof d === 'object' &&
      (d as { '@type'?: unknown })['@type'] === ERROR_INFO_TYPE &&
      typeof (d as { reason?: unknown }).reason === 'string',
  );
}

/**
 * The gRPC status of an A2A error: code per §5.4, message, and the
 * ErrorInfo details as `google.rpc.Status` in the details trailer.
 */
export function a2aErrorToGrpcStatus(
  err: A2AError,
): Partial<StatusObject> & { code: number; details: string } {
  const code = grpcStatusOf(err);
  const infos = errorInfosOf(err);
  if (infos.length === 0)
    infos.push({ '@type': ERROR_INFO_TYPE, reason: err.code, domain: A2A_ERROR_DOMAIN });
  const info = errorInfoType();
  const status = statusType();
  const bytes = status
    .encode(
      status.fromObject({
        code,
        message: err.message,
        details: infos.map((i) => ({
          type_url: ERROR_INFO_TYPE,
          value: info
            .encode(info.fromObject({ reason: i.reason, domain: i.domain, metadata: i.metadata ?? {} }))
            .finish(),
        })),
      }),
    )
    .finish();
  const metadata = new Metadata();
  metadata.set(GRPC_STATUS_DETAILS_KEY, Buffer.from(bytes));
  return { code, details: err.message, metadata };
}

/**
 * The A2A error a gRPC failure stands for: the ErrorInfo reason from the
 * details trailer when present (its JSON-RPC code), else a code derived from
 * the gRPC status.
 */
export function grpcStatusToA2AError(err: Pick<ServiceError, 'code' | 'details' | 'metadata'>): A2AError {
  const infos: ErrorInfo[] = [];
  const raw = err.metadata?.get(GRPC_STATUS_DETAILS_KEY)[0];
  if (raw instanceof Uint8Array) {
    try {
      const decoded = statusType().toObject(statusType().decode(raw)) as {
        details?: { type_url?: string; typeUrl?: string; value?: Uint8Array }[];
      };
      for (const any of decoded.details ?? []) {
        if ((any.type_url ?? any.typeUrl) !== ERROR_INFO_TYPE || !any.value) continue;
        const i = errorInfoType().toObject(errorInfoType().decode(any.value)) as {
          reason?: string;
          domain?: string;
          metadata?: Record<string, string>;
        };
        if (!i.reason) continue;
        const entry: ErrorInfo =
          i.metadata && Object.keys(i.metadata).length > 0
            ? { '@type': ERROR_INFO_TYPE, reason: i.reason, domain: i.domain ?? '', metadata: i.metadata }
            : { '@type': ERROR_INFO_TYPE, reason: i.reason, domain: i.domain ?? '' };
        infos.push(entry);
      }
    } catch {
      // A malformed details trailer leaves only the status code to go by.
    }
  }
  const reason =
    infos.find((i) => i.domain === A2A_ERROR_DOMAIN)?.reason ??
    infos[0]?.reason ??
    // A message over the receiver's bound is refused by the gRPC library
    // itself (grpc-js, grpc-go: "…message larger than max…"), before any A2A
    // code sees it, so with no ErrorInfo: it is the HTTP bindings' 413.
    (err.code === GrpcStatus.RESOURCE_EXHAUSTED && /message larger than max/i.test(err.details ?? '')
      ? 'PAYLOAD_TOO_LARGE'
      : undefined);
  const rpc =
    (reason !== undefined ? jsonRpcCodeOfReason(reason) : undefined) ?? jsonRpcCodeOfGrpcStatus(err.code);
  return new A2AError(rpc, err.details || `gRPC status ${err.code}`, {
    // Without an ErrorInfo (other SDKs' servers send a bare status), a refusal still reads as one,
    // as a bare 403 does on HTTP+JSON: callers tell a denial by this reason.
    reason: reason ?? (err.code === GrpcStatus.PERMISSION_DENIED ? 'PERMISSION_DENIED' : undefined),
    data: infos.length > 0 ? infos : undefined,
  });
}
