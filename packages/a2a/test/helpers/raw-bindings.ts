// Minimal raw clients of the three A2A bindings, for the shared behavioural
// suite: each speaks its binding's wire format directly (JSON-RPC envelopes,
// HTTP+JSON routes and §11.6 error bodies, gRPC with the spec's proto), over
// the same SPIFFE-verified mTLS, and reports results and errors in one shape.
import {
  credentials,
  makeGenericClientConstructor,
  Metadata,
  type Client,
  type ServiceError,
} from '@grpc/grpc-js';
import { request } from 'undici';
import type { Dispatcher } from 'undici';
import type { SpiffeId } from '@weave/identity';
import { A2AError, a2aErrorFromRest, type StreamResponse } from '../../src/index.js';
import { a2aGrpcService, grpcStatusToA2AError } from '../../src/grpc/index.js';
import { takeEventId, type WireObject } from '../../src/grpc/proto.js';
import { parseSse } from '../../src/sse-parse.js';
import type { Workload } from '@weave/test-support';

type RpcFn = (this: Client, ...args: unknown[]) => unknown;

async function* once(text: string): AsyncGenerator<string> {
  yield text;
}

/** The binding names as the card spells them. */
export type BindingUnderTest = 'JSONRPC' | 'HTTP+JSON' | 'GRPC';

/** Every binding, in the order the tests walk them. */
export const BINDINGS: readonly BindingUnderTest[] = ['JSONRPC', 'HTTP+JSON', 'GRPC'];

/** A failed call: the A2A error and the binding's own status (HTTP status or gRPC code). */
interface CallFailure {
  readonly error: A2AError;
  /** HTTP status (JSON-RPC, HTTP+JSON) or gRPC status code. */
  readonly status: number;
}

export type CallOutcome = { ok: true; result: unknown; status: number } | ({ ok: false } & CallFailure);

/** A stream's events, and the error that ended it (before or after the first event). */
interface StreamOutcome {
  readonly events: StreamResponse[];
  /** Each event's sequence id (SSE `id:`; on gRPC the id the server put in the event's metadata, taken out). */
  readonly ids?: Array<string | undefined>;
  readonly failure?: CallFailure;
}

export interface RawBinding {
  readonly name: BindingUnderTest;
  call(
    method: string,
    params: Record<string, unknown>,
    headers?: Record<string, string>,
  ): Promise<CallOutcome>;
  stream(
    method: string,
    params: Record<string, unknown>,
    headers?: Record<string, string>,
  ): Promise<StreamOutcome>;
  close(): void;
}

/** The error of a call that was expected to be refused; throws when it succeeded. */
export function refused(o: CallOutcome): A2AError {
  if (o.ok) throw new Error(`expected a refusal, got ${JSON.stringify(o.result).slice(0, 200)}`);
  return o.error;
}

/** JSON-RPC: POST envelopes to the base URL. */
export function jsonRpcBinding(url: string, dispatcher: Dispatcher): RawBinding {
  let next = 1;
  async function post(method: string, params: object, headers: Record<string, string>) {
    const res = await request(url, {
      method: 'POST',
      dispatcher,
      headers: { 'content-type': 'application/json', 'a2a-version': '1.0', ...headers },
      body: JSON.stringify({ jsonrpc: '2.0', id: next++, method, params }),
    });
    return { status: res.statusCode, text: await res.body.text() };
  }
  const failureOf = (
    status: number,
    body: { error?: { code: number; message: string; data?: unknown } },
  ) => ({
    status,
    error: A2AError.fromJsonRpc(body.error as { code: number; message: string }),
  });
  return {
    name: 'JSONRPC',
    async call(method, params, headers = {}) {
      const { status, text } = await post(method, params, headers);
      const body = JSON.parse(text) as { result?: unknown; error?: { code: number; message: string } };
      if (body.error) return { ok: false, ...failureOf(status, body) };
      return { ok: true, result: body.result, status };
    },
    async stream(method, params, headers = {}) {
      const { status, text } = await post(method, params, headers);
      if (
        !text.startsWith('id:') &&
        !text.startsWith('data:') &&
        !text.startsWith(':') &&
        !text.startsWith('event:')
      ) {
        return { events: [], failure: failureOf(status, JSON.parse(text)) };
      }
      const events: StreamResponse[] = [];
      const ids: Array<string | undefined> = [];
      for await (const e of parseSse(once(text), 16 * 1024 * 1024)) {
        const body = JSON.parse(e.data) as {
          result?: StreamResponse;
          error?: { code: number; message: string };
        };
        if (body.error) return { events, ids, failure: failureOf(status, body) };
        events.push(body.result as StreamResponse);
        ids.push(e.id);
      }
      return { events, ids };
    },
    close() {},
  };
}

/** The HTTP+JSON route of a method (spec §5.3), with the params that go in the body or query. */
function restRoute(
  method: string,
  p: Record<string, unknown>,
): { verb: string; path: string; body?: object } {
  const enc = (v: unknown) => encodeURIComponent(String(v));
  const qs = (o: Record<string, unknown>) => {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(o)) if (v !== undefined) q.set(k, String(v));
    const s = q.toString();
    return s ? `?${s}` : '';
  };
  const { id, ...rest } = p;
  // A raw client may spell it as the proto does; the path takes it either way.
  const taskId = p.taskId ?? p.task_id;
  delete rest.taskId;
  switch (method) {
    case 'SendMessage':
      return { verb: 'POST', path: '/message:send', body: p };
    case 'SendStreamingMessage':
      return { verb: 'POST', path: '/message:stream', body: p };
    case 'GetTask':
      return { verb: 'GET', path: `/tasks/${enc(id)}${qs(rest)}` };
    case 'ListTasks':
      return { verb: 'GET', path: `/tasks${qs(p)}` };
    case 'CancelTask':
      return { verb: 'POST', path: `/tasks/${enc(id)}:cancel`, body: rest };
    case 'SubscribeToTask':
      return { verb: 'POST', path: `/tasks/${enc(id)}:subscribe` };
    case 'CreateTaskPushNotificationConfig':
      return { verb: 'POST', path: `/tasks/${enc(taskId)}/pushNotificationConfigs`, body: p };
    case 'GetTaskPushNotificationConfig':
      return { verb: 'GET', path: `/tasks/${enc(taskId)}/pushNotificationConfigs/${enc(id)}` };
    case 'ListTaskPushNotificationConfigs':
      return { verb: 'GET', path: `/tasks/${enc(taskId)}/pushNotificationConfigs${qs(rest)}` };
    case 'DeleteTaskPushNotificationConfig':
      return { verb: 'DELETE', path: `/tasks/${enc(taskId)}/pushNotificationConfigs/${enc(id)}` };
    case 'GetExtendedAgentCard':
      return { verb: 'GET', path: '/extendedAgentCard' };
    default:
      throw new Error(`no route for ${method}`);
  }
}

/** HTTP+JSON: the spec's routes below the base URL. */
export function restBinding(url: string, dispatcher: Dispatcher): RawBinding {
  const base = url.replace(/\/+$/, '');
  async function send(method: string, all: Record<string, unknown>, headers: Record<string, string>) {
    // The tenant goes in the path prefix (`/{tenant}/...`), as the proto's HTTP annotations say.
    const { tenant, ...params } = all;
    const r = restRoute(method, params);
    const prefix = typeof tenant === 'string' ? `/${encodeURIComponent(tenant)}` : '';
    const res = await request(`${base}${prefix}${r.path}`, {
      method: r.verb as 'GET',
      dispatcher,
      headers: {
        'a2a-version': '1.0',
        ...(r.body ? { 'content-type': 'application/a2a+json' } : {}),
        ...headers,
      },
      ...(r.body ? { body: JSON.stringify(r.body) } : {}),
    });
    return {
      status: res.statusCode,
      type: String(res.headers['content-type'] ?? ''),
      text: await res.body.text(),
    };
  }
  return {
    name: 'HTTP+JSON',
    async call(method, params, headers = {}) {
      const { status, text } = await send(method, params, headers);
      if (status >= 400) return { ok: false, status, error: a2aErrorFromRest(JSON.parse(text), status) };
      return { ok: true, status, result: text === '' ? {} : JSON.parse(text) };
    },
    async stream(method, params, headers = {}) {
      const { status, type, text } = await send(method, params, headers);
      if (!type.startsWith('text/event-stream')) {
        return { events: [], failure: { status, error: a2aErrorFromRest(JSON.parse(text), status) } };
      }
      const events: StreamResponse[] = [];
      const ids: Array<string | undefined> = [];
      for await (const e of parseSse(once(text), 16 * 1024 * 1024)) {
        if (e.event === 'error') {
          return { events, ids, failure: { status, error: a2aErrorFromRest(JSON.parse(e.data), status) } };
        }
        events.push(JSON.parse(e.data) as StreamResponse);
        ids.push(e.id);
      }
      return { events, ids };
    },
    close() {},
  };
}

/**
 * gRPC: grpc-js with the spec's service definition, TLS with the client's SVID
 * and bundle, and the server's SPIFFE ID checked in `checkServerIdentity`.
 */
export function grpcBinding(target: string, client: Workload, serverId: SpiffeId): RawBinding {
  const c = grpcClient(target, client, serverId);
  const failure = (err: ServiceError): CallFailure => ({
    status: err.code,
    error: grpcStatusToA2AError(err),
  });
  const md = (headers: Record<string, string>) => {
    const m = new Metadata();
    m.set('a2a-version', '1.0');
    for (const [k, v] of Object.entries(headers)) m.set(k, v);
    return m;
  };
  return {
    name: 'GRPC',
    call(method, params, headers = {}) {
      return new Promise((resolve) => {
        const fn = (c as unknown as Record<string, RpcFn>)[method] as RpcFn;
        fn.call(c, params, md(headers), (err: ServiceError | null, res: unknown) => {
          if (err) resolve({ ok: false, ...failure(err) });
          else resolve({ ok: true, result: res, status: 0 });
        });
      });
    },
    stream(method, params, headers = {}) {
      return new Promise((resolve) => {
        const fn = (c as unknown as Record<string, RpcFn>)[method] as RpcFn;
        const call = fn.call(c, params, md(headers)) as NodeJS.EventEmitter;
        const events: StreamResponse[] = [];
        const ids: Array<string | undefined> = [];
        call.on('data', (e: StreamResponse) => {
          ids.push(takeEventId(e as unknown as WireObject));
          events.push(e);
        });
        call.on('error', (err: ServiceError) => resolve({ events, ids, failure: failure(err) }));
        call.on('end', () => resolve({ events, ids }));
      });
    },
    close() {
      c.close();
    },
  };
}

/** A grpc-js client of the A2A service over SPIFFE mTLS. */
function grpcClient(target: string, client: Workload, serverId: SpiffeId): Client {
  const Ctor = makeGenericClientConstructor(a2aGrpcService(), 'A2AService');
  return new Ctor(target, grpcCredentials(client, serverId));
}

/** grpc-js channel credentials from a workload's SVID and bundle, checking the server's SPIFFE ID. */
export function grpcCredentials(client: Workload, serverId: SpiffeId) {
  const svid = client.identity.getX509Svid().toPem();
  const bundle = client.identity.getBundleSet().getX509Bundle(client.id.trustDomain)?.toPem() ?? '';
  return credentials.createSsl(
    Buffer.from(bundle),
    Buffer.from(svid.privateKey),
    Buffer.from(svid.certChain),
    {
      checkServerIdentity: (_host, cert) =>
        (cert.subjectaltname ?? '').split(', ').includes(`URI:${serverId.toString()}`)
          ? undefined
          : new Error(`server is not ${serverId.toString()}`),
    },
  );
}
