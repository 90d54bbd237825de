/**
 * A2A errors on the gRPC binding (spec §10.6): a gRPC status code (§5.4), the
 * message, and a `google.rpc.Status` in the `grpc-status-details-bin` trailer
 * whose details carry the A2A `google.rpc.ErrorInfo`.
 */
import { Metadata, status as GrpcStatus, type ServiceError, type StatusObject } from '@grpc/grpc-js';
import { cutText } from '@weave/identity';
import {
  A2A_ERROR_DOMAIN,
  A2AError,
  ERROR_INFO_TYPE,
  grpcStatusOf,
  jsonRpcCodeOfGrpcStatus,
  jsonRpcCodeOfReason,
  peerReason,
  type ErrorInfo,
} from '../errors.js';
import { a2aProtoRoot } from './proto.js';

/** Longest error message a gRPC status carries (in grpc-message and again in the details trailer). */
const MAX_STATUS_MESSAGE_CHARS = 4096;

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
  // Trailers are headers: one over the client's header bound is never read,
  // and the call hangs until its deadline. Errors repeat caller values cut
  // (A2AErrors); this bounds whatever else a message holds.
  const message = cutText(err.message, MAX_STATUS_MESSAGE_CHARS);
  const infos = errorInfosOf(err);
  if (infos.length === 0)
    infos.push({ '@type': ERROR_INFO_TYPE, reason: err.code, domain: A2A_ERROR_DOMAIN });
  const info = errorInfoType();
  const status = statusType();
  const bytes = status
    .encode(
      status.fromObject({
        code,
        message,
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
  return { code, details: message, metadata };
}

/** What a gRPC library's own size refusal stands for; see {@link sizeRefusalOf}. */
export type SizeRefusal = 'PAYLOAD_TOO_LARGE' | 'RESPONSE_TOO_LARGE' | 'HEADERS_TOO_LARGE';

/**
 * grpc-js's wording of an HTTP/2 RST_STREAM with ENHANCE_YOUR_CALM, which
 * Node's HTTP/2 sends when a request's header block is over the bound it
 * advertised (SETTINGS_MAX_HEADER_LIST_SIZE), its header count or its session memory.
 */
const HEADER_BLOCK_RESET = 'Bandwidth exhausted or memory limit exceeded';

/**
 * What a bare RESOURCE_EXHAUSTED (no details trailer) stands for when a gRPC
 * library's own bound, not A2A code, refused the call; `undefined` for any
 * other failure.
 *
 * - A message over a bound ("Received message larger than max (N vs M)"):
 *   grpc-js words its own receive bound as it words a server's refusal of a
 *   request, so M tells them apart: when it is `receiveBound`, the caller's
 *   own bound on answers, the answer was too large (`RESPONSE_TOO_LARGE`);
 *   otherwise the request was, the HTTP bindings' 413 (`PAYLOAD_TOO_LARGE`).
 * - Request metadata over the server's bound, the HTTP bindings' 431
 *   (`HEADERS_TOO_LARGE`): the stream reset Node sends for a header block over
 *   the advertised bound, or `A2AGrpcServer`'s own refusal ("Received metadata
 *   larger than max (N vs M)") of what got past it.
 *
 * @param receiveBound the client's `grpc.max_receive_message_length`, when the caller is that client.
 */
export function sizeRefusalOf(
  err: Pick<ServiceError, 'code' | 'details' | 'metadata'>,
  receiveBound?: number,
): SizeRefusal | undefined {
  if (err.code !== GrpcStatus.RESOURCE_EXHAUSTED) return undefined;
  if ((err.metadata?.get(GRPC_STATUS_DETAILS_KEY).length ?? 0) > 0) return undefined;
  const details = err.details ?? '';
  if (/message larger than max/i.test(details)) {
    const bound = messageBound(details);
    return bound !== undefined && bound === receiveBound ? 'RESPONSE_TOO_LARGE' : 'PAYLOAD_TOO_LARGE';
  }
  if (details === HEADER_BLOCK_RESET || /metadata larger than max/i.test(details)) return 'HEADERS_TOO_LARGE';
  return undefined;
}

/** M of grpc-js's "Received message larger than max (N vs M)": the bound that refused the message. */
function messageBound(details: string): number | undefined {
  const m = /message larger than max \(\d+ vs (\d+)\)/i.exec(details);
  return m ? Number(m[1]) : undefined;
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
  // A request message refused by the gRPC library itself, before any A2A code
  // saw it: the ErrorInfo the HTTP bindings send with their 413, its bound as `limit`.
  if (infos.length === 0 && sizeRefusalOf(err) === 'PAYLOAD_TOO_LARGE') {
    const limit = messageBound(err.details ?? '');
    infos.push({
      '@type': ERROR_INFO_TYPE,
      reason: 'PAYLOAD_TOO_LARGE',
      domain: A2A_ERROR_DOMAIN,
      ...(limit !== undefined ? { metadata: { limit: String(limit) } } : {}),
    });
  }
  const reason = infos.find((i) => i.domain === A2A_ERROR_DOMAIN)?.reason ?? infos[0]?.reason;
  const rpc =
    (reason !== undefined ? jsonRpcCodeOfReason(reason) : undefined) ?? jsonRpcCodeOfGrpcStatus(err.code);
  return new A2AError(rpc, err.details || `gRPC status ${err.code}`, {
    // Without an ErrorInfo (other SDKs' servers send a bare status), a refusal still reads as one,
    // as a bare 403 does on HTTP+JSON: callers tell a denial by this reason.
    reason:
      peerReason(reason) ?? (err.code === GrpcStatus.PERMISSION_DENIED ? 'PERMISSION_DENIED' : undefined),
    data: infos.length > 0 ? infos : undefined,
  });
}
