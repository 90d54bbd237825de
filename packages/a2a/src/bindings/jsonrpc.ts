/**
 * The JSON-RPC binding (A2A v1.0 §9, and the v0.3 method names): one POST
 * endpoint, JSON-RPC 2.0 envelopes, SSE for the streaming methods with every
 * event a whole JSON-RPC response echoing the request id.
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { A2AError } from '../errors.js';
import { A2AErrorCode, A2AErrors } from '../errors.js';
import { exceedsDepth, MAX_JSON_DEPTH } from '../depth.js';
import type { A2ARequestHandler, CallContext } from '../handler.js';
import { asA2AError, parse } from '../handler.js';
import { TaskEventStream } from '../event-stream.js';
import { SseWriter } from '../sse.js';
import * as v03 from '../wire/v03.js';
import { V1_METHODS, type StreamResponse, type V1Method } from '../wire/v1.js';
import {
  JsonBody,
  callerOf,
  logField,
  parseLastEventId,
  pumpSse,
  requestedVersion,
  responseBody,
  sourceOf,
  warnRated,
  type HttpBindingDeps,
} from './http.js';

type Version = 'v1' | 'v03';
type RpcId = string | number | null;

const NO_PARAMS: Record<string, unknown> = Object.freeze({}) as Record<string, unknown>;

/**
 * Answers one JSON-RPC request. The reply is not handed back to fastify: a
 * handler's promise that settles with the (thenable) reply makes fastify wait
 * for the response to finish, with end-of-stream listeners on every request.
 */
export function serveJsonRpc(deps: HttpBindingDeps, request: FastifyRequest, reply: FastifyReply): void {
  handleRpc(deps, request, reply).catch((err: unknown) => {
    if (!reply.sent) reply.send(err as Error);
  });
}

async function handleRpc(deps: HttpBindingDeps, request: FastifyRequest, reply: FastifyReply): Promise<void> {
  const body = request.body;
  if (!(body instanceof JsonBody)) {
    return void refuse(
      deps,
      reply,
      undefined,
      400,
      null,
      A2AErrors.contentType(request.headers['content-type']),
      'v1',
    );
  }
  if (body.error !== undefined) {
    return void refuse(deps, reply, undefined, 200, null, A2AErrors.parse(body.error), 'v1');
  }
  const msg = body.value;
  if (typeof msg !== 'object' || msg === null) {
    return void refuse(
      deps,
      reply,
      undefined,
      200,
      null,
      A2AErrors.invalidRequest('the body must be a JSON-RPC request object'),
      'v1',
    );
  }
  if (Array.isArray(msg)) {
    return void refuse(
      deps,
      reply,
      undefined,
      200,
      null,
      A2AErrors.invalidRequest('batch requests are not supported'),
      'v1',
    );
  }
  const env = msg as { jsonrpc?: unknown; id?: unknown; method?: unknown; params?: unknown };
  const rawId = env.id;
  const idOk =
    rawId === undefined ||
    rawId === null ||
    typeof rawId === 'string' ||
    (typeof rawId === 'number' && Number.isFinite(rawId));
  const id: RpcId = idOk ? ((rawId as RpcId | undefined) ?? null) : null;
  if (!idOk) {
    return void refuse(
      deps,
      reply,
      undefined,
      200,
      null,
      A2AErrors.invalidRequest('id must be a string, a number or null'),
      'v1',
    );
  }
  if (env.jsonrpc !== '2.0') {
    return void refuse(
      deps,
      reply,
      undefined,
      200,
      id,
      A2AErrors.invalidRequest('jsonrpc must be "2.0"'),
      'v1',
    );
  }
  if (typeof env.method !== 'string' || env.method.length === 0) {
    return void refuse(
      deps,
      reply,
      undefined,
      200,
      id,
      A2AErrors.invalidRequest('method must be a non-empty string'),
      'v1',
    );
  }
  if (!('id' in env)) {
    // A notification. JSON-RPC 2.0 forbids any Response to one, and A2A
    // (§9.3) defines every method as a request with an id: each has a
    // result, and one run unanswered (a task nobody is told of) helps no
    // one. So nothing runs and no JSON-RPC Response is sent: HTTP 204.
    warnRated(
      deps,
      request,
      'notification',
      logField('method', env.method),
      'a2a: JSON-RPC notification (no id) ignored',
    );
    reply.code(204).send();
    return;
  }
  const method = env.method;
  let version: Version;
  try {
    version = negotiate(requestedVersion(request), method);
  } catch (err) {
    return void refuse(deps, reply, method, 200, id, err as A2AError, 'v1');
  }
  const params = env.params;
  if (params !== undefined && (typeof params !== 'object' || params === null || Array.isArray(params))) {
    return void refuse(
      deps,
      reply,
      method,
      200,
      id,
      A2AErrors.invalidParams('params must be an object'),
      version,
    );
  }
  // Refused before any handler runs: see MAX_JSON_DEPTH.
  if (exceedsDepth(msg, MAX_JSON_DEPTH)) {
    return void refuse(
      deps,
      reply,
      method,
      200,
      id,
      A2AErrors.invalidParams(`request nested deeper than ${MAX_JSON_DEPTH} levels`),
      version,
    );
  }
  const caller = callerOf(deps, request);
  if (!caller) {
    warnRated(
      deps,
      request,
      'unauthenticated',
      logField('method', method),
      'a2a: call without an authenticated caller denied',
    );
    return void refuse(
      deps,
      reply,
      method,
      403,
      id,
      A2AErrors.permissionDenied('no authenticated caller'),
      version,
    );
  }
  const ctx: CallContext = { caller, headers: request.headers, binding: 'JSONRPC' };
  const p = (params as Record<string, unknown> | undefined) ?? NO_PARAMS;
  try {
    const result =
      version === 'v03'
        ? await dispatchV03(deps.handler, ctx, method, p, request)
        : await dispatch(deps.handler, ctx, method, p, request);
    if (result instanceof TaskEventStream) {
      const sse = new SseWriter(request, reply, id, deps.heartbeatMs, deps.maxStreamBufferBytes);
      const toWire =
        version === 'v03' ? (e: StreamResponse): unknown => v03.streamResponseToV03(e) : undefined;
      void pumpSse(result, sse, toWire, (e) =>
        deps.handler.requestFailed(e, v1MethodOf(method), 'JSONRPC', sourceOf(deps, request)),
      );
      return;
    }
    reply.header('content-type', 'application/json');
    // Sent from the event loop's check phase, not from inside the read that
    // delivered the request. Measured with bench/ over TLS (Node 20): the
    // same one write per response then costs about half the CPU per call,
    // on the server and on the client alike.
    setImmediate(
      sendLater,
      reply,
      responseBody(`{"jsonrpc":"2.0","id":${JSON.stringify(id)},"result":${JSON.stringify(result ?? null)}}`),
    );
  } catch (err) {
    const e = toA2AError(err, request);
    return void refuse(deps, reply, method, statusFor(e), id, e, version);
  }
}

function dispatch(
  h: A2ARequestHandler,
  ctx: CallContext,
  method: string,
  params: Record<string, unknown>,
  request: FastifyRequest,
): Promise<unknown> {
  switch (method) {
    case 'SendMessage':
      return h.sendMessage(ctx, params);
    case 'SendStreamingMessage':
      return h.sendStreamingMessage(ctx, params);
    case 'GetTask':
      return h.getTask(ctx, params);
    case 'ListTasks':
      return h.listTasks(ctx, params);
    case 'CancelTask':
      return h.cancelTask(ctx, params);
    case 'SubscribeToTask':
      return h.subscribeToTask(ctx, params, {
        lastEventId: parseLastEventId(request.headers['last-event-id']),
      });
    case 'CreateTaskPushNotificationConfig':
      return h.createTaskPushNotificationConfig(ctx, params);
    case 'GetTaskPushNotificationConfig':
      return h.getTaskPushNotificationConfig(ctx, params);
    case 'ListTaskPushNotificationConfigs':
      return h.listTaskPushNotificationConfigs(ctx, params);
    case 'DeleteTaskPushNotificationConfig':
      return h.deleteTaskPushNotificationConfig(ctx, params).then(() => ({}));
    case 'GetExtendedAgentCard':
      return h.getExtendedAgentCard(ctx, params);
    default:
      return Promise.reject(A2AErrors.methodNotFound(method));
  }
}

async function dispatchV03(
  h: A2ARequestHandler,
  ctx: CallContext,
  method: string,
  params: Record<string, unknown>,
  request: FastifyRequest,
): Promise<unknown> {
  switch (method) {
    case 'message/send': {
      const p = v03.sendParamsToV1(parse(v03.V03SendParamsSchema, params));
      const r = await h.sendMessage(ctx, p);
      return 'task' in r ? v03.taskToV03(r.task) : v03.messageToV03(r.message);
    }
    case 'message/stream':
      return h.sendStreamingMessage(ctx, v03.sendParamsToV1(parse(v03.V03SendParamsSchema, params)));
    case 'tasks/get': {
      const p = parse(v03.V03TaskQuerySchema, params);
      return v03.taskToV03(await h.getTask(ctx, { id: p.id, historyLength: p.historyLength }));
    }
    case 'tasks/cancel':
      return v03.taskToV03(await h.cancelTask(ctx, { id: parse(v03.V03TaskIdSchema, params).id }));
    case 'tasks/resubscribe':
      return h.subscribeToTask(
        ctx,
        { id: parse(v03.V03TaskIdSchema, params).id },
        { lastEventId: parseLastEventId(request.headers['last-event-id']) },
      );
    case 'tasks/pushNotificationConfig/set': {
      const p = parse(v03.V03SetPushConfigSchema, params);
      const c = await h.createTaskPushNotificationConfig(ctx, {
        ...v03.pushConfigToV1(p.pushNotificationConfig, p.taskId),
        taskId: p.taskId,
      });
      return v03.pushConfigToV03(c);
    }
    case 'tasks/pushNotificationConfig/get': {
      const p = parse(v03.V03GetPushConfigSchema, params);
      if (p.pushNotificationConfigId) {
        const c = await h.getTaskPushNotificationConfig(ctx, {
          taskId: p.id,
          id: p.pushNotificationConfigId,
        });
        return v03.pushConfigToV03(c);
      }
      // v0.3 may leave the config id out: the task's first config.
      const first = (await h.listTaskPushNotificationConfigs(ctx, { taskId: p.id })).configs[0];
      if (!first) throw A2AErrors.pushConfigNotFound(p.id);
      return v03.pushConfigToV03(first);
    }
    case 'tasks/pushNotificationConfig/list': {
      const r = await h.listTaskPushNotificationConfigs(ctx, {
        taskId: parse(v03.V03TaskIdSchema, params).id,
      });
      return r.configs.map(v03.pushConfigToV03);
    }
    case 'tasks/pushNotificationConfig/delete': {
      const p = parse(v03.V03DeletePushConfigSchema, params);
      await h.deleteTaskPushNotificationConfig(ctx, { taskId: p.id, id: p.pushNotificationConfigId });
      return null;
    }
    case 'agent/getAuthenticatedExtendedCard': {
      // A v0.3 AgentCard, as the public card is to a v0.3 request (server.ts,
      // serveCard): v0.3 clients require its `url`, which the v1.0 card has
      // not (a2a-python's fails validation). The v1.0 card when it lists no
      // 0.3 interface, as the public card then is too.
      const card = await h.getExtendedAgentCard(ctx);
      return v03.agentCardToV03(card) ?? card;
    }
    default:
      throw A2AErrors.methodNotFound(method);
  }
}

/**
 * Answers a request with an error, told first to the handler's
 * `onRequestError` and logged there (every error reply of this binding's
 * requests goes here).
 */
function refuse(
  deps: HttpBindingDeps,
  reply: FastifyReply,
  method: string | undefined,
  status: number,
  id: RpcId,
  err: A2AError,
  version: Version,
): void {
  deps.handler.requestFailed(
    err,
    method === undefined ? undefined : v1MethodOf(method),
    'JSONRPC',
    sourceOf(deps, reply.request),
  );
  sendError(reply, status, id, err, version);
}

const V1_METHOD_SET: ReadonlySet<string> = new Set(V1_METHODS);

/** The v1.0 name of a method named in either version; undefined for one no version has. */
function v1MethodOf(method: string): V1Method | undefined {
  if (V1_METHOD_SET.has(method)) return method as V1Method;
  // Own properties only: `constructor` or `__proto__` are no method.
  return Object.hasOwn(v03.V03_TO_V1_METHOD, method) ? (v03.V03_TO_V1_METHOD[method] as V1Method) : undefined;
}

/** Writes a JSON-RPC error response (v0.3 errors carry no `data`). */
export function sendError(
  reply: FastifyReply,
  status: number,
  id: RpcId,
  err: A2AError,
  version: Version,
): FastifyReply {
  const e = err.toJsonRpc();
  const wire = version === 'v03' ? { code: e.code, message: e.message } : e;
  return reply
    .code(status)
    .header('content-type', 'application/json')
    .send(`{"jsonrpc":"2.0","id":${JSON.stringify(id)},"error":${JSON.stringify(wire)}}`);
}

function sendLater(reply: FastifyReply, body: string | Buffer): void {
  if (!reply.sent) reply.send(body);
}

/** The version of a call from what it asks for (header, else query parameter: see requestedVersion). */
function negotiate(h: string | undefined, method: string): Version {
  // What every v1.0 client sends (Weave's own), without the regular expression below.
  if (h === '1.0') return 'v1';
  if (h === undefined || h.trim() === '') {
    // The spec reads a missing header as 0.3; a v1.0 method name without the
    // header is still understood as v1.0 rather than rejected.
    return method in v03.V03_TO_V1_METHOD ? 'v03' : 'v1';
  }
  const m = /^\s*(\d+)(?:\.(\d+))?(?:\.\d+)?\s*$/.exec(h);
  if (m) {
    const major = Number(m[1]);
    const minor = Number(m[2] ?? '0');
    if (major === 1 && minor === 0) return 'v1';
    if (major === 0 && minor === 3) return 'v03';
  }
  throw A2AErrors.versionNotSupported(h.slice(0, 32));
}

/**
 * HTTP status of a JSON-RPC error: JSON-RPC answers protocol errors with 200;
 * refusals (403), what is too large (413), overload and shutdown (503) and
 * internal errors (500) keep their HTTP meaning so proxies and retries see them.
 */
function statusFor(err: A2AError): number {
  if (err.code === 'PERMISSION_DENIED') return 403;
  // As a body over maxBodyBytes is answered: a task too large to keep, whatever the binding.
  if (err.code === 'PAYLOAD_TOO_LARGE') return 413;
  if (err.code === 'RESOURCE_EXHAUSTED' || err.code === 'UNAVAILABLE') return 503;
  if (err.jsonRpcCode === A2AErrorCode.InternalError) return 500;
  return 200;
}

function toA2AError(err: unknown, request: FastifyRequest): A2AError {
  return asA2AError(err, request.log);
}
