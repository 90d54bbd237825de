/**
 * The HTTP+JSON binding (A2A v1.0 §11): the routes of the proto's
 * `google.api.http` annotations, each with an optional `/{tenant}` prefix;
 * JSON bodies, answered as `application/a2a+json` (§11.1 SHOULD) and taken as
 * that or `application/json` (what the official SDKs' clients send); query
 * parameters in camelCase for GET and DELETE; errors as an HTTP status (§5.4)
 * with a `google.rpc.Status` body carrying the A2A `ErrorInfo` (§11.6);
 * streams as SSE of bare `StreamResponse` objects. SubscribeToTask answers
 * both `POST` (the spec text) and `GET` (the proto), as the official SDK does.
 *
 * Status codes of successful calls: 201 for a created push config, 200
 * otherwise. A deleted one answers 200 `{}`, the proto's `google.protobuf.Empty`
 * as HTTP/JSON transcoding sends it and as a2a-python's server answers: its
 * client reads every success as JSON, and an empty 204 fails there.
 */
import { createHash } from 'node:crypto';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { A2AError } from '../errors.js';
import { A2AErrors, httpStatusOf, restErrorBody } from '../errors.js';
import { exceedsDepth, MAX_JSON_DEPTH } from '../depth.js';
import { asA2AError, assertV1Version, type CallContext } from '../handler.js';
import { TaskEventStream } from '../event-stream.js';
import type { V1Method } from '../wire/v1.js';
import { SseWriter } from '../sse.js';
import { A2A_JSON_MEDIA_TYPE } from '../transports/http.js';
import {
  JsonBody,
  WRONG_CONTENT_TYPE,
  callerOf,
  logField,
  VERSION_PARAM,
  parseLastEventId,
  pumpSse,
  requestedVersion,
  responseBody,
  sourceOf,
  warnRated,
  type HttpBindingDeps,
} from './http.js';

/** The first path segments of the binding's routes; any other first segment is a tenant. */
const ROOTS = new Set(['message:send', 'message:stream', 'tasks', 'extendedAgentCard']);

/** Query parameters read as integers / booleans (the rest stay strings), by JSON and proto name. */
const INT_PARAMS = new Set(['historyLength', 'history_length', 'pageSize', 'page_size']);
const BOOL_PARAMS = new Set(['includeArtifacts', 'include_artifacts']);

type Route =
  | { kind: 'send' | 'stream' | 'list' | 'card' }
  | { kind: 'get' | 'cancel' | 'subscribe'; id: string }
  | { kind: 'pushList' | 'pushCreate'; taskId: string }
  | { kind: 'pushGet' | 'pushDelete'; taskId: string; id: string };

/** The route a method and path stand for; undefined for none (404). */
/** The members a CancelTask request body may have (the path names the task; `name` is its proto form). */
const CANCEL_MEMBERS = new Set(['id', 'name', 'tenant', 'metadata']);

function route(method: string, segs: string[]): Route | undefined {
  const [a, b, c, d] = segs;
  const n = segs.length;
  if (n === 1 && a === 'message:send' && method === 'POST') return { kind: 'send' };
  if (n === 1 && a === 'message:stream' && method === 'POST') return { kind: 'stream' };
  if (n === 1 && a === 'extendedAgentCard' && method === 'GET') return { kind: 'card' };
  if (a !== 'tasks') return undefined;
  if (n === 1) return method === 'GET' ? { kind: 'list' } : undefined;
  if (b === undefined || b === '') return undefined;
  if (n === 2) {
    const colon = b.lastIndexOf(':');
    const verb = colon > 0 ? b.slice(colon + 1) : '';
    const id = colon > 0 ? b.slice(0, colon) : b;
    if (verb === 'cancel' && method === 'POST') return { kind: 'cancel', id };
    if (verb === 'subscribe' && (method === 'POST' || method === 'GET')) return { kind: 'subscribe', id };
    if (verb === '' && method === 'GET') return { kind: 'get', id: b };
    return undefined;
  }
  if (c !== 'pushNotificationConfigs') return undefined;
  if (n === 3) {
    if (method === 'GET') return { kind: 'pushList', taskId: b };
    if (method === 'POST') return { kind: 'pushCreate', taskId: b };
    return undefined;
  }
  if (n === 4 && d !== undefined && d !== '') {
    if (method === 'GET') return { kind: 'pushGet', taskId: b, id: d };
    if (method === 'DELETE') return { kind: 'pushDelete', taskId: b, id: d };
  }
  return undefined;
}

/** Answers one HTTP+JSON request; `path` is the request path below the binding's mount point. */
export function serveRest(
  deps: HttpBindingDeps,
  request: FastifyRequest,
  reply: FastifyReply,
  path: string,
): void {
  handleRest(deps, request, reply, path).catch((err: unknown) => {
    if (!reply.sent) refuse(deps, reply, undefined, toA2AError(err, request));
  });
}

async function handleRest(
  deps: HttpBindingDeps,
  request: FastifyRequest,
  reply: FastifyReply,
  path: string,
): Promise<void> {
  // Split before decoding, each segment decoded once: an encoded `/` (`%2F`)
  // is part of a task id, and `%252F` is the id's `%2F`. `path` has been
  // decoded already by the router, so the request's own URL is read.
  const raw = rawPath(request);
  const decode = raw !== undefined;
  // One pass, no per-request closures; a segment without `%` decodes to itself.
  const segs: string[] = [];
  try {
    for (const s of (raw ?? path).split('/')) {
      if (s.length > 0) segs.push(decode && s.includes('%') ? decodeURIComponent(s) : s);
    }
  } catch {
    return refuse(deps, reply, undefined, A2AErrors.invalidRequest('malformed path'));
  }
  let tenant: string | undefined;
  if (segs.length > 1 && !ROOTS.has(segs[0] as string)) tenant = segs.shift();
  const r = route(request.method, segs);
  if (!r) {
    return refuse(deps, reply, undefined, A2AErrors.methodNotFound(`${request.method} ${path}`));
  }
  let body: Record<string, unknown> = {};
  if (request.method === 'POST') {
    const raw = request.body;
    if (raw === WRONG_CONTENT_TYPE) {
      return refuse(deps, reply, r.kind, A2AErrors.contentType(request.headers['content-type']));
    }
    // An empty (or all-whitespace) body is no params, as no body is.
    if (raw instanceof JsonBody && !raw.blank) {
      if (raw.error !== undefined) return refuse(deps, reply, r.kind, A2AErrors.parse(raw.error));
      const parsed = raw.value;
      if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
        return refuse(deps, reply, r.kind, A2AErrors.invalidRequest('the body must be a JSON object'));
      }
      // Refused before any handler runs: see MAX_JSON_DEPTH.
      if (exceedsDepth(parsed, MAX_JSON_DEPTH)) {
        return refuse(
          deps,
          reply,
          r.kind,
          A2AErrors.invalidParams(`request nested deeper than ${MAX_JSON_DEPTH} levels`),
        );
      }
      body = parsed as Record<string, unknown>;
    }
  }
  const caller = callerOf(deps, request);
  if (!caller) {
    warnRated(
      deps,
      request,
      'unauthenticated',
      logField('path', path),
      'a2a: call without an authenticated caller denied',
    );
    return refuse(deps, reply, r.kind, A2AErrors.permissionDenied('no authenticated caller'));
  }
  let result: unknown;
  let status = 200;
  // Every refusal past this point, the handler's included, with the method known.
  try {
    assertV1Version({ [VERSION_PARAM]: requestedVersion(request) });
    const ctx: CallContext =
      tenant === undefined
        ? { caller, headers: request.headers, binding: 'HTTP+JSON' }
        : { caller, headers: request.headers, binding: 'HTTP+JSON', tenant };
    const h = deps.handler;
    switch (r.kind) {
      case 'send':
        result = await h.sendMessage(ctx, withTenant(body, tenant));
        break;
      case 'stream':
        result = await h.sendStreamingMessage(ctx, withTenant(body, tenant));
        break;
      case 'card':
        result = await h.getExtendedAgentCard(ctx);
        break;
      case 'list':
        result = await h.listTasks(ctx, withTenant(query(request.query), tenant));
        break;
      case 'get':
        result = await h.getTask(ctx, withTenant({ ...query(request.query), id: r.id }, tenant));
        break;
      case 'cancel': {
        // The path alone says "cancel", and a schema drops unknown members: a
        // push notification another agent was made to POST here (a v1
        // StreamResponse, or a v0.3 agent's bare Task) would cancel the task
        // under that agent's identity. Only a CancelTask request's own members.
        const other = Object.keys(body).find((k) => !CANCEL_MEMBERS.has(k));
        if (other !== undefined) {
          throw A2AErrors.invalidParams(`a CancelTask request has no member "${other.slice(0, 64)}"`);
        }
        result = await h.cancelTask(ctx, withTenant({ ...body, id: r.id }, tenant));
        break;
      }
      case 'subscribe':
        result = await h.subscribeToTask(ctx, withTenant({ id: r.id }, tenant), {
          lastEventId: parseLastEventId(request.headers['last-event-id']),
        });
        break;
      case 'pushCreate': {
        // The path names the task; a different taskId (or task_id) in the body does not win.
        const { task_id: _inPath, ...config } = body;
        result = await h.createTaskPushNotificationConfig(
          ctx,
          withTenant({ ...config, taskId: r.taskId }, tenant),
        );
        status = 201;
        break;
      }
      case 'pushList':
        result = await h.listTaskPushNotificationConfigs(
          ctx,
          withTenant({ ...query(request.query), taskId: r.taskId }, tenant),
        );
        break;
      case 'pushGet':
        result = await h.getTaskPushNotificationConfig(
          ctx,
          withTenant({ taskId: r.taskId, id: r.id }, tenant),
        );
        break;
      case 'pushDelete':
        await h.deleteTaskPushNotificationConfig(ctx, withTenant({ taskId: r.taskId, id: r.id }, tenant));
        // google.protobuf.Empty (see above).
        result = {};
        break;
    }
  } catch (err) {
    return refuse(deps, reply, r.kind, toA2AError(err, request));
  }
  if (result instanceof TaskEventStream) {
    const kind = r.kind;
    void pumpSse(
      result,
      new SseWriter(request, reply, undefined, deps.heartbeatMs, deps.maxStreamBufferBytes),
      undefined,
      (e) => deps.handler.requestFailed(e, METHOD_OF[kind], 'HTTP+JSON', sourceOf(deps, request)),
    );
    return;
  }
  const json = JSON.stringify(result);
  if (r.kind === 'card') {
    // Built for this caller (§13.3: caching headers SHOULD be sent): never
    // kept by a shared cache; revalidated by ETag, as the public card is.
    // The caller and the policy were checked above: a caller refused since
    // gets the refusal, not a 304.
    const validators = { etag: cardEtag(json) };
    reply.header('cache-control', `private, max-age=${CARD_MAX_AGE_S}`).header('etag', validators.etag);
    if (notModified(request, validators)) {
      reply.code(304);
      setImmediate(sendLater, reply, '');
      return;
    }
  }
  reply.code(status).header('content-type', A2A_JSON_MEDIA_TYPE);
  // From the check phase, as the JSON-RPC binding does (see there).
  setImmediate(sendLater, reply, responseBody(json));
}

/** Seconds an agent card may be used without asking again (`Cache-Control: max-age`), public or extended. */
export const CARD_MAX_AGE_S = 300;

/** The validators a card response carries: its ETag, and when its variant last changed (public card only). */
export interface CardValidators {
  readonly etag: string;
  readonly lastModified?: string;
}

/** A strong ETag of a card's body: a hash of its bytes. */
export function cardEtag(body: string): string {
  return `"${createHash('sha256').update(body).digest('base64url').slice(0, 22)}"`;
}

/**
 * A conditional GET the card satisfies (RFC 9110 §13.1): `If-None-Match`
 * listing its ETag (weak comparison) or `*`; without one, `If-Modified-Since`
 * at or after its Last-Modified, when it has one.
 */
export function notModified(request: FastifyRequest, v: CardValidators): boolean {
  const inm = request.headers['if-none-match'];
  if (inm !== undefined) {
    const tags = (Array.isArray(inm) ? inm.join(',') : inm).split(',').map((t) => t.trim());
    const opaque = (t: string) => (t.startsWith('W/') ? t.slice(2) : t);
    return tags.some((t) => t === '*' || opaque(t) === v.etag);
  }
  const ims = request.headers['if-modified-since'];
  if (typeof ims !== 'string' || v.lastModified === undefined) return false;
  const since = Date.parse(ims);
  return Number.isFinite(since) && since >= Date.parse(v.lastModified);
}

/**
 * The request's path below the binding's mount point as sent (still
 * percent-encoded), from its URL and the route it matched (`<mount>/*`);
 * undefined when the URL does not start with the mount point as written.
 */
function rawPath(request: FastifyRequest): string | undefined {
  const routeUrl = request.routeOptions.url;
  if (routeUrl === undefined || !routeUrl.endsWith('/*')) return undefined;
  const mount = routeUrl.slice(0, -1);
  const url = request.url;
  const q = url.indexOf('?');
  const p = q === -1 ? url : url.slice(0, q);
  return p.startsWith(mount) ? p.slice(mount.length) : undefined;
}

/** `params` with the tenant of the path, when the path names one. */
function withTenant(params: Record<string, unknown>, tenant: string | undefined): Record<string, unknown> {
  return tenant === undefined ? params : { ...params, tenant };
}

/**
 * Query parameters as typed params: integers and booleans converted, the
 * first of repeated values kept. The integers are the proto's int32: any
 * decimal string within it is read (as the other bindings read the JSON
 * number or the proto field), one outside it is INVALID_PARAMS. The version
 * service parameter is not a param of the method (see requestedVersion).
 */
function query(raw: unknown): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  if (!raw || typeof raw !== 'object') return out;
  for (const [k, v0] of Object.entries(raw as Record<string, unknown>)) {
    const v = Array.isArray(v0) ? v0[0] : v0;
    if (typeof v !== 'string' || k.toLowerCase() === VERSION_PARAM) continue;
    if (INT_PARAMS.has(k) && /^-?\d+$/.test(v)) out[k] = int32(k, v);
    else if (BOOL_PARAMS.has(k) && (v === 'true' || v === 'false')) out[k] = v === 'true';
    else out[k] = v;
  }
  return out;
}

const INT32_MIN = -(2 ** 31);
const INT32_MAX = 2 ** 31 - 1;

/** A decimal query value as the int32 it names; INVALID_PARAMS when it names none. */
function int32(name: string, v: string): number {
  const n = Number(v);
  if (n < INT32_MIN || n > INT32_MAX) {
    throw A2AErrors.invalidParams(`${name}: ${v.slice(0, 32)} is outside the 32-bit integer range`);
  }
  return n;
}

function sendLater(reply: FastifyReply, body: string | Buffer): void {
  if (!reply.sent) reply.send(body);
}

/** The A2A method of each route. */
const METHOD_OF: Readonly<Record<Route['kind'], V1Method>> = {
  send: 'SendMessage',
  stream: 'SendStreamingMessage',
  card: 'GetExtendedAgentCard',
  list: 'ListTasks',
  get: 'GetTask',
  cancel: 'CancelTask',
  subscribe: 'SubscribeToTask',
  pushCreate: 'CreateTaskPushNotificationConfig',
  pushList: 'ListTaskPushNotificationConfigs',
  pushGet: 'GetTaskPushNotificationConfig',
  pushDelete: 'DeleteTaskPushNotificationConfig',
};

/**
 * Answers a request with an error, told first to the handler's
 * `onRequestError` and logged there (every error reply of this binding's
 * requests goes here); `kind` is the route taken, when one was.
 */
function refuse(
  deps: HttpBindingDeps,
  reply: FastifyReply,
  kind: Route['kind'] | undefined,
  err: A2AError,
): void {
  deps.handler.requestFailed(
    err,
    kind === undefined ? undefined : METHOD_OF[kind],
    'HTTP+JSON',
    sourceOf(deps, reply.request),
  );
  sendRestError(reply, err);
}

/** Writes an A2A error as §11.6 prescribes: HTTP status per §5.4, `google.rpc.Status` body. */
export function sendRestError(reply: FastifyReply, err: A2AError): void {
  void reply
    .code(httpStatusOf(err))
    .header('content-type', A2A_JSON_MEDIA_TYPE)
    .send(JSON.stringify(restErrorBody(err)));
}

function toA2AError(err: unknown, request: FastifyRequest): A2AError {
  return asA2AError(err, request.log);
}
