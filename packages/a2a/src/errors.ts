import { WeaveError, cutText } from '@weave/identity';
import { IDENTIFIER, constructorName } from './depth.js';

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

/**
 * Every error reason Weave sends, with its representation on each binding,
 * exactly as the table of A2A v1.0.1 §5.4 gives them for A2A errors (JSON-RPC
 * code, gRPC status code, HTTP status: the HTTP status is the gRPC status's
 * own, e.g. FAILED_PRECONDITION and 400 for a task that cannot be canceled or
 * an unsupported operation or version, INTERNAL and 500 for an invalid agent
 * response). v1.0.0 had 409, 415, 502 and UNIMPLEMENTED in places; a peer
 * still on it is read by {@link jsonRpcCodeOfRestStatus}. The first
 * reason listed for a JSON-RPC code is the one an error of that code carries
 * by default. Weave's own reasons (PERMISSION_DENIED, RESOURCE_EXHAUSTED,
 * PAYLOAD_TOO_LARGE) reuse a standard JSON-RPC code, as A2A has none for them.
 */
const ERROR_TABLE: Readonly<Record<string, { rpc: number; grpc: number; http: number }>> = {
  PARSE_ERROR: { rpc: -32700, grpc: 3, http: 400 },
  INVALID_REQUEST: { rpc: -32600, grpc: 3, http: 400 },
  METHOD_NOT_FOUND: { rpc: -32601, grpc: 12, http: 404 },
  INVALID_PARAMS: { rpc: -32602, grpc: 3, http: 400 },
  INTERNAL_ERROR: { rpc: -32603, grpc: 13, http: 500 },
  TASK_NOT_FOUND: { rpc: -32001, grpc: 5, http: 404 },
  TASK_NOT_CANCELABLE: { rpc: -32002, grpc: 9, http: 400 },
  PUSH_NOTIFICATION_NOT_SUPPORTED: { rpc: -32003, grpc: 9, http: 400 },
  UNSUPPORTED_OPERATION: { rpc: -32004, grpc: 9, http: 400 },
  CONTENT_TYPE_NOT_SUPPORTED: { rpc: -32005, grpc: 3, http: 400 },
  INVALID_AGENT_RESPONSE: { rpc: -32006, grpc: 13, http: 500 },
  EXTENDED_AGENT_CARD_NOT_CONFIGURED: { rpc: -32007, grpc: 9, http: 400 },
  EXTENSION_SUPPORT_REQUIRED: { rpc: -32008, grpc: 9, http: 400 },
  VERSION_NOT_SUPPORTED: { rpc: -32009, grpc: 9, http: 400 },
  PERMISSION_DENIED: { rpc: -32600, grpc: 7, http: 403 },
  RESOURCE_EXHAUSTED: { rpc: -32603, grpc: 8, http: 503 },
  PAYLOAD_TOO_LARGE: { rpc: -32600, grpc: 8, http: 413 },
  UNAVAILABLE: { rpc: -32603, grpc: 14, http: 503 },
};

/** The `google.rpc.ErrorInfo` reason A2A v1.0 attaches to each error code. */
const REASONS: Readonly<Record<number, string>> = (() => {
  const out: Record<number, string> = {};
  for (const [reason, { rpc }] of Object.entries(ERROR_TABLE)) out[rpc] ??= reason;
  return out;
})();

/** gRPC status code of an error (spec §5.4); INTERNAL for anything that is not an {@link A2AError}. */
export function grpcStatusOf(err: unknown): number {
  if (!(err instanceof A2AError)) return 13;
  return ERROR_TABLE[err.code]?.grpc ?? ERROR_TABLE[REASONS[err.jsonRpcCode] ?? '']?.grpc ?? 13;
}

/** HTTP status of an error on the HTTP+JSON binding (spec §5.4); 500 for anything that is not an {@link A2AError}. */
export function httpStatusOf(err: unknown): number {
  if (!(err instanceof A2AError)) return 500;
  return ERROR_TABLE[err.code]?.http ?? ERROR_TABLE[REASONS[err.jsonRpcCode] ?? '']?.http ?? 500;
}

/** The JSON-RPC code an error reason stands for (for errors received on the gRPC and HTTP+JSON bindings). */
export function jsonRpcCodeOfReason(reason: string): number | undefined {
  return ERROR_TABLE[reason]?.rpc;
}

/**
 * The JSON-RPC code a gRPC status stands for when no A2A ErrorInfo came with
 * it. UNIMPLEMENTED is a method not found: no A2A error has it since v1.0.1,
 * a v1.0.0 peer sends an ErrorInfo with the A2A errors it gave it to, and a
 * bare one is what gRPC itself answers for a method the server does not
 * serve. FAILED_PRECONDITION (most A2A refusals since v1.0.1) is an
 * unsupported operation, the broadest of them: a refusal of this call, not a
 * failure of the server.
 */
export function jsonRpcCodeOfGrpcStatus(status: number): number {
  switch (status) {
    case 3:
      return A2AErrorCode.InvalidParams;
    case 5:
      return A2AErrorCode.TaskNotFound;
    case 9:
      return A2AErrorCode.UnsupportedOperation;
    case 12:
      return A2AErrorCode.MethodNotFound;
    case 7:
      return A2AErrorCode.InvalidRequest;
    default:
      return A2AErrorCode.InternalError;
  }
}

/**
 * The JSON-RPC code an HTTP+JSON error without an A2A ErrorInfo stands for,
 * from its HTTP status and the gRPC status the body names (`undefined`: none).
 * A2A v1.0.0 gave 409 and 415 to one error each, and 400 with UNIMPLEMENTED
 * to its unsupported-operation errors; v1.0.1 gives them to none, so they
 * come from a v1.0.0 peer and still name those errors. Otherwise the gRPC
 * status decides, else `undefined` (the caller's own fallback). 502, v1.0.0's
 * InvalidAgentResponse, is left to the status: a gateway in front of an agent
 * answers it too.
 */
function jsonRpcCodeOfRestStatus(httpStatus: number, grpcStatus: number): number;
function jsonRpcCodeOfRestStatus(httpStatus: number, grpcStatus: number | undefined): number | undefined;
function jsonRpcCodeOfRestStatus(httpStatus: number, grpcStatus: number | undefined): number | undefined {
  if (httpStatus === 409) return A2AErrorCode.TaskNotCancelable;
  if (httpStatus === 415) return A2AErrorCode.ContentTypeNotSupported;
  if (httpStatus === 400 && grpcStatus === 12) return A2AErrorCode.UnsupportedOperation;
  return grpcStatus === undefined ? undefined : jsonRpcCodeOfGrpcStatus(grpcStatus);
}

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

  /**
   * The audit id of the policy decision that refused the call, when the
   * refusing agent sent one (ErrorInfo metadata of
   * {@link A2AErrors.permissionDenied}), else `undefined`.
   */
  get auditId(): string | undefined {
    if (!Array.isArray(this.data)) return undefined;
    for (const d of this.data as unknown[]) {
      const id = (d as { metadata?: { auditId?: unknown } } | null)?.metadata?.auditId;
      if (typeof id === 'string' && id.length > 0) return id;
    }
    return undefined;
  }

  /** The JSON-RPC `error` object for this error. */
  toJsonRpc(): JsonRpcErrorObject {
    return this.data === undefined
      ? { code: this.jsonRpcCode, message: this.message }
      : { code: this.jsonRpcCode, message: this.message, data: this.data };
  }

  /**
   * Builds an {@link A2AError} from a JSON-RPC `error` object received on the
   * wire; its code is the first ErrorInfo reason in `data`, else `reasonIfNone`
   * (when given), else the name of the JSON-RPC code.
   */
  static fromJsonRpc(error: JsonRpcErrorObject, reasonIfNone?: string): A2AError {
    let reason: string | undefined;
    if (Array.isArray(error.data)) {
      for (const d of error.data as unknown[]) {
        if (d && typeof d === 'object' && typeof (d as { reason?: unknown }).reason === 'string') {
          reason = (d as { reason: string }).reason;
          break;
        }
      }
    }
    return new A2AError(error.code, error.message, {
      data: error.data,
      reason: peerReason(reason) ?? reasonIfNone,
    });
  }
}

/** The shape of a `google.rpc.ErrorInfo` reason: UPPER_SNAKE_CASE, at most 63 characters. */
const REASON_SHAPE = /^[A-Z][A-Z0-9_]{0,61}[A-Z0-9]$/;

/**
 * A reason a peer sent, when it has the shape of one ({@link REASON_SHAPE}),
 * else undefined: the error's code is then its JSON-RPC code's. A peer
 * chooses the reason, and it becomes the code callers compare, log and
 * report: a hostile agent's 30 000-character reason was taken whole. It
 * stays whole in the error's `data`.
 */
export function peerReason(reason: string | undefined): string | undefined {
  return reason !== undefined && REASON_SHAPE.test(reason) ? reason : undefined;
}

function errorInfo(reason: string, metadata?: Record<string, string>): ErrorInfo {
  return metadata
    ? { '@type': ERROR_INFO_TYPE, reason, domain: A2A_ERROR_DOMAIN, metadata }
    : { '@type': ERROR_INFO_TYPE, reason, domain: A2A_ERROR_DOMAIN };
}

/**
 * Most characters of a caller's value (an id, a method, a version) an error
 * repeats ({@link cutText}): repeated whole, a 100 KB task id made the gRPC
 * trailers (grpc-message and the ErrorInfo, both carrying it) too large for
 * the client's header bound, and the call hung instead of answering
 * TASK_NOT_FOUND.
 */
const ECHOED_CHARS = 256;

const echoed = (value: string): string => cutText(value, ECHOED_CHARS);

/** Shorthands for the errors the server raises. */
export const A2AErrors = {
  parse: (detail?: string) =>
    new A2AError(A2AErrorCode.ParseError, detail ? `Parse error: ${detail}` : 'Parse error'),
  invalidRequest: (detail: string) => new A2AError(A2AErrorCode.InvalidRequest, `Invalid request: ${detail}`),
  methodNotFound: (method: string) =>
    new A2AError(A2AErrorCode.MethodNotFound, `Method not found: ${echoed(method)}`),
  invalidParams: (detail: string) => new A2AError(A2AErrorCode.InvalidParams, `Invalid params: ${detail}`),
  internal: (detail = 'Internal error') => new A2AError(A2AErrorCode.InternalError, detail),
  taskNotFound: (id: string) =>
    new A2AError(A2AErrorCode.TaskNotFound, `Task not found: ${echoed(id)}`, {
      data: [errorInfo('TASK_NOT_FOUND', { taskId: echoed(id) })],
    }),
  /**
   * A push notification config the task does not have (§3.1.8 lists
   * TaskNotFoundError for it; §3.3.2: a missing resource is a not-found
   * error). Without `configId`: the task has none at all.
   */
  pushConfigNotFound: (taskId: string, configId?: string) =>
    new A2AError(
      A2AErrorCode.TaskNotFound,
      configId === undefined
        ? `Task ${echoed(taskId)} has no push notification config`
        : `Push notification config ${JSON.stringify(echoed(configId))} does not exist on task ${echoed(taskId)}`,
      {
        data: [
          errorInfo('TASK_NOT_FOUND', {
            taskId: echoed(taskId),
            ...(configId === undefined ? {} : { configId: echoed(configId) }),
          }),
        ],
      },
    ),
  taskNotCancelable: (id: string, state: string) =>
    new A2AError(A2AErrorCode.TaskNotCancelable, `Task ${echoed(id)} cannot be canceled in state ${state}`, {
      data: [errorInfo('TASK_NOT_CANCELABLE', { taskId: echoed(id), state })],
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
      `Unsupported Content-Type ${JSON.stringify(echoed(got ?? ''))}; expected application/json or application/a2a+json`,
    ),
  invalidAgentResponse: (detail: string) =>
    new A2AError(A2AErrorCode.InvalidAgentResponse, `Invalid agent response: ${detail}`),
  extendedCardNotConfigured: () =>
    new A2AError(A2AErrorCode.ExtendedAgentCardNotConfigured, 'This agent has no extended agent card'),
  extensionRequired: (uri: string) =>
    new A2AError(A2AErrorCode.ExtensionSupportRequired, `This agent requires the extension ${uri}`, {
      data: [errorInfo('EXTENSION_SUPPORT_REQUIRED', { uri })],
    }),
  /** `supported`: what the refusing binding speaks (JSON-RPC 1.0 and 0.3; the others 1.0 only). */
  versionNotSupported: (version: string, supported = '1.0, 0.3') =>
    new A2AError(
      A2AErrorCode.VersionNotSupported,
      `A2A protocol version ${JSON.stringify(echoed(version))} is not supported; supported: ${supported}`,
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
  /**
   * Retryable refusal: the task store's memory bound (the caller's share, or
   * the whole store) is held by unfinished tasks; retry once some finish.
   */
  retainedBytesExhausted: (scope: 'caller' | 'store' | 'task', limitBytes: number, caller: string) =>
    new A2AError(
      A2AErrorCode.InternalError,
      scope === 'caller'
        ? `Unfinished tasks of caller ${caller} hold its share of task memory (${limitBytes} bytes); retry once one of them has finished`
        : `Task memory is held by unfinished tasks (${limitBytes} bytes); retry later`,
      {
        reason: 'RESOURCE_EXHAUSTED',
        data: [errorInfo('RESOURCE_EXHAUSTED', { scope, limitBytes: String(limitBytes) })],
      },
    ),
  /** Retryable refusal: one caller has its share of unfinished tasks (others are unaffected). */
  callerTooManyTasks: (caller: string, limit: number) =>
    new A2AError(
      A2AErrorCode.InternalError,
      `Too many concurrent tasks for caller ${caller} (limit ${limit} per caller); retry once one of its tasks has finished`,
      {
        reason: 'RESOURCE_EXHAUSTED',
        data: [errorInfo('RESOURCE_EXHAUSTED', { scope: 'caller', limit: String(limit) })],
      },
    ),
  /** Retryable refusal: one caller is over its request rate; `retryAfterMs` says when a request is admitted again. */
  callerRateLimited: (caller: string, perSecond: number, retryAfterMs: number) =>
    new A2AError(
      A2AErrorCode.InternalError,
      `Request rate of caller ${caller} is over its limit (${perSecond}/s); retry after ${retryAfterMs} ms`,
      {
        reason: 'RESOURCE_EXHAUSTED',
        data: [
          errorInfo('RESOURCE_EXHAUSTED', {
            scope: 'caller',
            limit: `${perSecond}/s`,
            retryAfterMs: String(retryAfterMs),
          }),
        ],
      },
    ),
  /**
   * Retryable refusal: the server is shutting down (new tasks go to another
   * instance), a stream subscriber fell too far behind (it resumes), or the
   * task store's database cannot be reached. ErrorInfo says `retryable`.
   */
  unavailable: (detail: string) =>
    new A2AError(A2AErrorCode.InternalError, detail, {
      reason: 'UNAVAILABLE',
      data: [errorInfo('UNAVAILABLE', { retryable: 'true' })],
    }),
  /**
   * Not retryable: the new task alone, as stored, is larger than the caller's
   * whole share of task memory (or the store's); nothing finishing makes room.
   */
  taskTooLarge: (scope: 'caller' | 'store' | 'task', limitBytes: number, taskBytes: number) =>
    new A2AError(
      A2AErrorCode.InvalidRequest,
      scope === 'task'
        ? `The task would grow to ${taskBytes} bytes while running, over its bound (${limitBytes} bytes); send less`
        : `The task (${taskBytes} bytes as stored) is larger than ${scope === 'caller' ? "the caller's whole share of task memory" : 'the task memory of this agent'} (${limitBytes} bytes); send less`,
      {
        reason: 'PAYLOAD_TOO_LARGE',
        // `limit` as the body limit's error has it; `scope` and `limitBytes` as RESOURCE_EXHAUSTED's.
        data: [
          errorInfo('PAYLOAD_TOO_LARGE', {
            limit: String(limitBytes),
            scope,
            limitBytes: String(limitBytes),
          }),
        ],
      },
    ),
  payloadTooLarge: (limit: number) =>
    new A2AError(A2AErrorCode.InvalidRequest, `Request body exceeds ${limit} bytes`, {
      reason: 'PAYLOAD_TOO_LARGE',
      data: [errorInfo('PAYLOAD_TOO_LARGE', { limit: String(limit) })],
    }),
} as const;

/**
 * Most characters of a failure's text Weave repeats: the message of what a
 * handler threw, in a failed task's status, in the error that wraps it and in
 * the log ({@link loggableError}); {@link cutText} marks what was cut. The
 * whole text may be anything: a 10 MB message made an answer too large for
 * the caller to read, and a log line of 20 MB.
 */
export const FAILURE_TEXT_CHARS = 1024;

/**
 * Most characters of a logged stack ({@link loggableError}): a message of
 * {@link FAILURE_TEXT_CHARS} and the frames after it (V8 keeps ten by default).
 */
const LOGGED_STACK_CHARS = 3072;

/** Most characters of a logged `code` or other string field. */
const LOGGED_FIELD_CHARS = 128;

/** Most fields besides type, message, stack, code and cause a logged error keeps. */
const LOGGED_FIELDS = 8;

/** Fields {@link loggableError} sets itself, never copied from the error. */
const OWN_FIELDS: ReadonlySet<string> = new Set(['type', 'name', 'message', 'stack', 'code', 'cause']);

/**
 * A thrown value as {@link loggableError} hands it to a logger: a plain
 * object (no prototype) of about 10 KB of text at most, whatever was thrown.
 */
export interface LoggedError {
  /** The class the value was made by (`Error`, `A2AError`), else its `typeof` (`string`, `null`). */
  readonly type: string;
  /** `type` again: pino names an error-like object without a class by its `name`. */
  readonly name: string;
  /** Its `message` (else the value as a string), cut to {@link FAILURE_TEXT_CHARS}. */
  readonly message: string;
  /** Its stack, cut: a long message it starts with is cut as `message` is, the frames after it kept. */
  readonly stack?: string;
  /** Its `code`, when a string (a `WeaveError`'s, a Node error's `ECONNREFUSED`). */
  readonly code?: string;
  /** What its `cause` is, one level deep (the cause's own cause and fields left out). */
  readonly cause?: LoggedError;
  /** Up to 8 more own fields of it that are strings (cut), numbers or booleans (`taskId`, `errno`). */
  readonly [field: string]: unknown;
}

/**
 * The text of a value application code threw: its `message` when a string,
 * else the value as a string, cut to `max` characters ({@link cutText}).
 * Never throws: a value whose getters throw, or that has no way to become a
 * string (no prototype), reads as `a thrown object that cannot be read`.
 *
 * @param max - most characters kept; default {@link FAILURE_TEXT_CHARS}.
 */
export function thrownText(err: unknown, max: number = FAILURE_TEXT_CHARS): string {
  return cutText(wholeText(err), max);
}

/**
 * What to log of a value application code threw (a handler's error), as the
 * `err` field of a log line: its type, message, stack and `code`, a few more
 * of its fields, and the same of its `cause`, each cut, so that it is about
 * 10 KB of text at most (a few KB for a usual error) whatever was thrown; a
 * 10 MB message was logged whole, twice (message and stack). Never throws,
 * and reads each property of the value once at most, guarded: a value whose
 * getters throw made the logger's error serializer throw, and the line was
 * lost.
 *
 * The object has no prototype and a `name`: pino's error serializer, which
 * takes it for an error, then gives it the same `type` (not `Object`), and
 * appends the cause's message and stack to its own, as it does for an Error.
 *
 * ```ts
 * logger.warn({ taskId, err: loggableError(err) }, 'task failed');
 * ```
 */
export function loggableError(err: unknown): LoggedError {
  return summary(err, true);
}

/** {@link loggableError}: `top` for the value itself (its fields and cause kept), not for its cause. */
function summary(err: unknown, top: boolean): LoggedError {
  const out = Object.create(null) as Record<string, unknown>;
  const isObject = (typeof err === 'object' && err !== null) || typeof err === 'function';
  const type = isObject ? (constructorName(err) ?? typeof err) : err === null ? 'null' : typeof err;
  out.type = type;
  out.name = type;
  const text = wholeText(err);
  out.message = cutText(text, FAILURE_TEXT_CHARS);
  if (isObject) {
    const stack = read(err, 'stack');
    if (typeof stack === 'string') out.stack = cutStack(stack, text);
    const code = read(err, 'code');
    if (typeof code === 'string') out.code = cutText(code, LOGGED_FIELD_CHARS);
    if (top) {
      copyFields(err, out);
      const cause = read(err, 'cause');
      if (cause !== undefined) out.cause = summary(cause, false);
    }
  }
  return out as LoggedError;
}

/** The whole text {@link thrownText} cuts. */
function wholeText(err: unknown): string {
  try {
    const m: unknown = (err as Error | null | undefined)?.message;
    return typeof m === 'string' ? m : String(err);
  } catch {
    return `a thrown ${typeof err} that cannot be read`;
  }
}

/** `o[key]`, or `undefined` when its getter throws. */
function read(o: object, key: string): unknown {
  try {
    return (o as Record<string, unknown>)[key];
  } catch {
    return undefined;
  }
}

/**
 * `stack` cut to {@link LOGGED_STACK_CHARS}. V8's stack starts with the
 * message (`TypeError: message`): one longer than {@link FAILURE_TEXT_CHARS}
 * is cut there first, so that the frames, which say where it was thrown, are
 * not what the cut leaves out.
 */
function cutStack(stack: string, message: string): string {
  if (message.length > FAILURE_TEXT_CHARS) {
    // Looked for only in the first line's head (the class name before it), by its start.
    const at = stack.slice(0, 256 + 64).indexOf(message.slice(0, 64));
    if (at >= 0 && stack.startsWith(message, at)) {
      stack = `${stack.slice(0, at)}${cutText(message, FAILURE_TEXT_CHARS)}${stack.slice(at + message.length)}`;
    }
  }
  return cutText(stack, LOGGED_STACK_CHARS);
}

/** Up to {@link LOGGED_FIELDS} own fields of `err` that are strings (cut), numbers or booleans, into `out`. */
function copyFields(err: object, out: Record<string, unknown>): void {
  let keys: string[];
  try {
    keys = Object.keys(err);
  } catch {
    return; // A Proxy whose ownKeys trap throws: no fields.
  }
  let kept = 0;
  for (const k of keys) {
    if (kept === LOGGED_FIELDS) return;
    if (OWN_FIELDS.has(k) || !IDENTIFIER.test(k)) continue;
    const v = read(err, k);
    if (typeof v === 'string') out[k] = cutText(v, LOGGED_FIELD_CHARS);
    else if (typeof v === 'number' || typeof v === 'boolean') out[k] = v;
    else continue;
    kept++;
  }
}

/** A local (non-wire) failure of the A2A client, e.g. transport errors or bad responses. */
export class A2AClientError extends WeaveError {}

/**
 * The task was canceled: what a running task's handler's signal aborts with
 * (its `reason`) and a pending `requestInput` rejects with, whether the
 * cancel was asked on this replica or another, or the server closed with the
 * task still running. The task is CANCELED already; what its handler
 * returns or throws from now on is not kept. Never sent on the wire: a
 * CancelTask of a task that already ended is answered TaskNotCancelable
 * (`A2AError`), which this is not.
 */
export class TaskCanceledError extends WeaveError {
  constructor(taskId: string) {
    super('TASK_CANCELED', `task ${taskId} was canceled`);
  }
}

/**
 * The server stopped with the task still running, and handed it to another
 * replica instead of ending it: what the handler's signal aborts with (its
 * `reason`) and a pending `requestInput` rejects with. Only for a task of a
 * re-runnable skill, with a task store that keeps leases (PostgreSQL). The
 * task is not ended: what it published so far is kept, nothing more of it
 * is written from here, and another replica runs it again from its last
 * user message. What the handler returns or throws from now on is not kept.
 * Not `TaskLeaseLostError`: this replica still held its lease and wrote
 * what the task had published; nothing was cut off.
 */
export class TaskHandedOverError extends WeaveError {
  constructor(taskId: string) {
    super(
      'TASK_HANDED_OVER',
      `task ${taskId}: this replica is stopping; the task is handed to another replica, which runs it again`,
    );
  }
}

const GRPC_STATUS_NAMES = [
  'OK',
  'CANCELLED',
  'UNKNOWN',
  'INVALID_ARGUMENT',
  'DEADLINE_EXCEEDED',
  'NOT_FOUND',
  'ALREADY_EXISTS',
  'PERMISSION_DENIED',
  'RESOURCE_EXHAUSTED',
  'FAILED_PRECONDITION',
  'ABORTED',
  'OUT_OF_RANGE',
  'UNIMPLEMENTED',
  'INTERNAL',
  'UNAVAILABLE',
  'DATA_LOSS',
  'UNAUTHENTICATED',
] as const;

/** The HTTP+JSON error body (spec §11.6): `google.rpc.Status` in ProtoJSON under `error`. */
export interface RestErrorBody {
  readonly error: {
    readonly code: number;
    readonly status: string;
    readonly message: string;
    readonly details: readonly unknown[];
  };
}

/** The §11.6 error body of an A2A error (HTTP status as `code`, the gRPC status name, ErrorInfo details). */
export function restErrorBody(err: A2AError): RestErrorBody {
  const details = Array.isArray(err.data) ? (err.data as unknown[]) : [];
  return {
    error: {
      code: httpStatusOf(err),
      status: GRPC_STATUS_NAMES[grpcStatusOf(err)] ?? 'UNKNOWN',
      message: err.message,
      details,
    },
  };
}

/** The gRPC status an HTTP status stands for, when the body names none (google.api's HTTP mapping). */
function grpcStatusOfHttp(status: number): number {
  switch (status) {
    case 400:
      return 3; // INVALID_ARGUMENT
    case 401:
      return 16; // UNAUTHENTICATED
    case 403:
      return 7; // PERMISSION_DENIED
    case 404:
      return 5; // NOT_FOUND
    case 409:
      return 10; // ABORTED
    case 429:
      return 8; // RESOURCE_EXHAUSTED
    case 501:
      return 12; // UNIMPLEMENTED
    case 503:
      return 14; // UNAVAILABLE
    case 504:
      return 4; // DEADLINE_EXCEEDED
    default:
      return 13; // INTERNAL
  }
}

/**
 * The A2A error an HTTP+JSON error body stands for (spec §11.6: a
 * `google.rpc.Status` as JSON, `{error: {code, status, message, details}}`):
 * the A2A ErrorInfo reason in `details` gives the JSON-RPC code; without one,
 * the status the body names (else the one the HTTP status stands for), see
 * {@link jsonRpcCodeOfRestStatus}. A body with no `error` object reads from
 * the HTTP status alone.
 */
export function a2aErrorFromRest(body: unknown, httpStatus: number): A2AError {
  const found = (body as { error?: unknown } | null)?.error;
  const e = (typeof found === 'object' && found !== null ? found : {}) as {
    status?: unknown;
    message?: unknown;
    details?: unknown;
  };
  const details = Array.isArray(e.details) ? (e.details as unknown[]) : [];
  const infos = details.filter(
    (d): d is ErrorInfo =>
      !!d &&
      typeof d === 'object' &&
      (d as { '@type'?: unknown })['@type'] === ERROR_INFO_TYPE &&
      typeof (d as { reason?: unknown }).reason === 'string',
  );
  const reason = infos[0]?.reason;
  const named = typeof e.status === 'string' ? GRPC_STATUS_NAMES.indexOf(e.status as never) : -1;
  const grpc = named >= 0 ? named : grpcStatusOfHttp(httpStatus);
  const rpc =
    (reason !== undefined ? jsonRpcCodeOfReason(reason) : undefined) ??
    jsonRpcCodeOfRestStatus(httpStatus, grpc);
  const message = typeof e.message === 'string' && e.message !== '' ? e.message : `HTTP ${httpStatus}`;
  return new A2AError(rpc, message, {
    // Without an ErrorInfo, a refusal still reads as one.
    reason: peerReason(reason) ?? (grpc === 7 ? 'PERMISSION_DENIED' : undefined),
    data: details.length > 0 ? details : undefined,
  });
}
