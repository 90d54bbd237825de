import { WeaveError } from '@weave/identity';

/** JSON-RPC error codes used by A2A v1.0 (standard JSON-RPC codes plus the A2A range). */
export const A2AErrorCode = {
  ParseError: -32700,
  InvalidRequest: -32600,
  MethodNotFound: -32601,
  InvalidParams: -32602,
  InternalError: -32603,
  TaskNotFound: -32001,
  TaskNotCancelable: -32002,
  PushNotificationNotSupported: -32003,
  UnsupportedOperation: -32004,
  ContentTypeNotSupported: -32005,
  InvalidAgentResponse: -32006,
  ExtendedAgentCardNotConfigured: -32007,
  ExtensionSupportRequired: -32008,
  VersionNotSupported: -32009,
} as const;

/** The `google.rpc.ErrorInfo` reason A2A v1.0 attaches to each error code. */
const REASONS: Readonly<Record<number, string>> = {
  [-32700]: 'PARSE_ERROR',
  [-32600]: 'INVALID_REQUEST',
  [-32601]: 'METHOD_NOT_FOUND',
  [-32602]: 'INVALID_PARAMS',
  [-32603]: 'INTERNAL_ERROR',
  [-32001]: 'TASK_NOT_FOUND',
  [-32002]: 'TASK_NOT_CANCELABLE',
  [-32003]: 'PUSH_NOTIFICATION_NOT_SUPPORTED',
  [-32004]: 'UNSUPPORTED_OPERATION',
  [-32005]: 'CONTENT_TYPE_NOT_SUPPORTED',
  [-32006]: 'INVALID_AGENT_RESPONSE',
  [-32007]: 'EXTENDED_AGENT_CARD_NOT_CONFIGURED',
  [-32008]: 'EXTENSION_SUPPORT_REQUIRED',
  [-32009]: 'VERSION_NOT_SUPPORTED',
};

export const ERROR_INFO_TYPE = 'type.googleapis.com/google.rpc.ErrorInfo';
export const A2A_ERROR_DOMAIN = 'a2a-protocol.org';

/** `google.rpc.ErrorInfo` as carried in `error.data` of an A2A v1.0 JSON-RPC error. */
export interface ErrorInfo {
  readonly '@type': typeof ERROR_INFO_TYPE;
  readonly reason: string;
  readonly domain: string;
  readonly metadata?: Readonly<Record<string, string>>;
}

/** The `error` member of a JSON-RPC response. */
export interface JsonRpcErrorObject {
  readonly code: number;
  readonly message: string;
  readonly data?: unknown;
}

/**
 * A JSON-RPC error of the A2A protocol, raised by the server (and sent on the
 * wire) or received by the client. `code` is the stable string reason (e.g.
 * `TASK_NOT_FOUND`), `jsonRpcCode` the numeric wire code.
 */
export class A2AError extends WeaveError {
  /** The JSON-RPC numeric code, e.g. -32001. */
  readonly jsonRpcCode: number;
  /** `error.data` as sent or received. */
  readonly data: unknown;

  constructor(
    jsonRpcCode: number,
    message: string,
    options?: { data?: unknown; reason?: string; cause?: unknown },
  ) {
    super(options?.reason ?? REASONS[jsonRpcCode] ?? 'A2A_ERROR', message, { cause: options?.cause });
    this.jsonRpcCode = jsonRpcCode;
    this.data =
      options?.data !== undefined
        ? options.data
        : [errorInfo(options?.reason ?? REASONS[jsonRpcCode] ?? 'A2A_ERROR')];
  }

  /** The JSON-RPC `error` object for this error. */
  toJsonRpc(): JsonRpcErrorObject {
    return this.data === undefined
      ? { code: this.jsonRpcCode, message: this.message }
      : { code: this.jsonRpcCode, message: this.message, data: this.data };
  }

  /** Builds an {@link A2AError} from a JSON-RPC `error` object received on the wire. */
  static fromJsonRpc(error: JsonRpcErrorObject): A2AError {
    let reason: string | undefined;
    if (Array.isArray(error.data)) {
      for (const d of error.data as unknown[]) {
        if (d && typeof d === 'object' && typeof (d as { reason?: unknown }).reason === 'string') {
          reason = (d as { reason: string }).reason;
          break;
        }
      }
    }
    return new A2AError(error.code, error.message, { data: error.data, reason });
  }
}

function errorInfo(reason: string, metadata?: Record<string, string>): ErrorInfo {
  return metadata
    ? { '@type': ERROR_INFO_TYPE, reason, domain: A2A_ERROR_DOMAIN, metadata }
    : { '@type': ERROR_INFO_TYPE, reason, domain: A2A_ERROR_DOMAIN };
}

/** Shorthands for the errors the server raises. */
export const A2AErrors = {
  parse: (detail?: string) =>
    new A2AError(A2AErrorCode.ParseError, detail ? `Parse error: ${detail}` : 'Parse error'),
  invalidRequest: (detail: string) => new A2AError(A2AErrorCode.InvalidRequest, `Invalid request: ${detail}`),
  methodNotFound: (method: string) =>
    new A2AError(A2AErrorCode.MethodNotFound, `Method not found: ${method}`),
  invalidParams: (detail: string) => new A2AError(A2AErrorCode.InvalidParams, `Invalid params: ${detail}`),
  internal: (detail = 'Internal error') => new A2AError(A2AErrorCode.InternalError, detail),
  taskNotFound: (id: string) =>
    new A2AError(A2AErrorCode.TaskNotFound, `Task not found: ${id}`, {
      data: [errorInfo('TASK_NOT_FOUND', { taskId: id })],
    }),
  taskNotCancelable: (id: string, state: string) =>
    new A2AError(A2AErrorCode.TaskNotCancelable, `Task ${id} cannot be canceled in state ${state}`, {
      data: [errorInfo('TASK_NOT_CANCELABLE', { taskId: id, state })],
    }),
  pushNotSupported: () =>
    new A2AError(
      A2AErrorCode.PushNotificationNotSupported,
      'Push notifications are not supported by this agent',
    ),
  unsupportedOperation: (detail: string) => new A2AError(A2AErrorCode.UnsupportedOperation, detail),
  contentType: (got: string | undefined) =>
    new A2AError(
      A2AErrorCode.ContentTypeNotSupported,
      `Unsupported Content-Type ${JSON.stringify(got ?? '')}; expected application/json`,
    ),
  invalidAgentResponse: (detail: string) =>
    new A2AError(A2AErrorCode.InvalidAgentResponse, `Invalid agent response: ${detail}`),
  extendedCardNotConfigured: () =>
    new A2AError(A2AErrorCode.ExtendedAgentCardNotConfigured, 'This agent has no extended agent card'),
  extensionRequired: (uri: string) =>
    new A2AError(A2AErrorCode.ExtensionSupportRequired, `This agent requires the extension ${uri}`, {
      data: [errorInfo('EXTENSION_SUPPORT_REQUIRED', { uri })],
    }),
  versionNotSupported: (version: string) =>
    new A2AError(
      A2AErrorCode.VersionNotSupported,
      `A2A protocol version ${JSON.stringify(version)} is not supported; supported: 1.0, 0.3`,
    ),
  /**
   * The caller may not invoke the skill. A2A v1.0 has no JSON-RPC code for
   * authorization, so this is -32600 with ErrorInfo reason PERMISSION_DENIED
   * (sent with HTTP 403).
   */
  permissionDenied: (detail: string, auditId?: string) =>
    new A2AError(A2AErrorCode.InvalidRequest, `Permission denied: ${detail}`, {
      reason: 'PERMISSION_DENIED',
      data: [errorInfo('PERMISSION_DENIED', auditId === undefined ? undefined : { auditId })],
    }),
  tooManyTasks: (limit: number) =>
    new A2AError(A2AErrorCode.InternalError, `Too many concurrent tasks (limit ${limit})`, {
      reason: 'RESOURCE_EXHAUSTED',
      data: [errorInfo('RESOURCE_EXHAUSTED', { limit: String(limit) })],
    }),
  payloadTooLarge: (limit: number) =>
    new A2AError(A2AErrorCode.InvalidRequest, `Request body exceeds ${limit} bytes`, {
      reason: 'PAYLOAD_TOO_LARGE',
      data: [errorInfo('PAYLOAD_TOO_LARGE', { limit: String(limit) })],
    }),
} as const;

/** A local (non-wire) failure of the A2A client, e.g. transport errors or bad responses. */
export class A2AClientError extends WeaveError {}
