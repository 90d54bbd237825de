// A2A v1.0.1 changed six rows of the error table (§5.4): TaskNotCancelable,
// PushNotificationNotSupported, UnsupportedOperation and VersionNotSupported
// are FAILED_PRECONDITION / HTTP 400 (v1.0.0: 409 and UNIMPLEMENTED),
// ContentTypeNotSupported is HTTP 400 (415), InvalidAgentResponse HTTP 500
// (502). A Weave server answers them as v1.0.1 says, on HTTP+JSON and gRPC;
// Weave's client still reads a v1.0.0 peer, which sends the old statuses
// (by the ErrorInfo reason, and sensibly without one). Real mTLS with dev-CA
// SVIDs, real fastify and grpc-js servers on loopback.
import {
  Server,
  status as GrpcStatus,
  Metadata,
  type sendUnaryData,
  type ServerUnaryCall,
} from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  A2AError,
  A2AErrorCode,
  grpcTransportFactory,
  restTransportFactory,
  type A2AGrpcServer,
  type ClientTransport,
  type Task,
  type TransportContext,
} from '../src/index.js';
import { MAX_JSON_DEPTH } from '../src/depth.js';
import { a2aGrpcService } from '../src/grpc/index.js';
import { GRPC_STATUS_DETAILS_KEY } from '../src/grpc/status.js';
import { a2aProtoRoot, type WireObject } from '../src/grpc/proto.js';
import { baseUrl, channel, createPki, mtlsServer, type Pki } from '@weave/test-support';
import { listenGrpcMtls, type SdkGrpcServer } from '@weave/test-support/a2a-sdk';
import type { SecureChannel } from '@weave/transport';
import { serveEcho, serveGrpc, startHarness, type Harness } from './helpers/agents.js';
import {
  grpcBinding,
  jsonRpcBinding,
  restBinding,
  type CallOutcome,
  type RawBinding,
} from './helpers/raw-bindings.js';

const ERROR_INFO = 'type.googleapis.com/google.rpc.ErrorInfo';

function nested(levels: number): unknown {
  let v: unknown = 'x';
  for (let i = 0; i < levels; i++) v = { k: v };
  return v;
}

const message = (text: string, skill: string, extra: Record<string, unknown> = {}) => ({
  message: {
    messageId: `m-${Math.random().toString(36).slice(2)}`,
    role: 'ROLE_USER',
    parts: [{ text }],
    metadata: { skill },
    ...extra,
  },
});

describe('a Weave server answers the errors v1.0.1 remapped as its table gives them', () => {
  let h: Harness;
  let grpc: A2AGrpcServer;
  /** Every handler run, by skill. */
  const ran: string[] = [];
  /** The body and status of each HTTP error response the server sent. */
  const sent: Array<{ status: number; body: { error?: { code?: unknown; status?: unknown } } }> = [];
  let done: Task;

  beforeAll(async () => {
    h = await startHarness(
      (a2a) => {
        serveEcho(a2a, ran);
        // What ContentTypeNotSupportedError is for (§3.3.2): a part's media type the skill does not take.
        a2a.registerMessageHandler(
          { id: 'text-only', name: 'text', description: 'text', tags: [] },
          (ctx) => {
            const other = ctx.message.parts.find(
              (p) => p.mediaType !== undefined && p.mediaType !== 'text/plain',
            );
            if (other) {
              throw new A2AError(A2AErrorCode.ContentTypeNotSupported, `${other.mediaType} is not accepted`);
            }
            ran.push('text-only');
            return 'read';
          },
        );
        // An answer no reply may carry (deeper than MAX_JSON_DEPTH): InvalidAgentResponse.
        a2a.registerMessageHandler({ id: 'deep', name: 'deep', description: 'deep', tags: [] }, () => {
          ran.push('deep');
          return { messageId: 'd', role: 'ROLE_AGENT', parts: [{ data: nested(MAX_JSON_DEPTH + 5) }] };
        });
      },
      {},
      {
        beforeListen: (app) =>
          app.addHook('onSend', async (_req, reply, payload) => {
            if (reply.statusCode >= 400 && typeof payload === 'string') {
              sent.push({ status: reply.statusCode, body: JSON.parse(payload) as never });
            }
            return payload;
          }),
      },
    );
    grpc = await serveGrpc(h);
    const r = await jsonRpcBinding(h.url, h.agent).call('SendMessage', message('finished', 'echo'));
    done = (r as { result: { task: Task } }).result.task;
    expect(done.status.state).toBe('TASK_STATE_COMPLETED');
  });
  afterAll(async () => {
    await grpc.close(100);
    await h.close();
  });

  interface Row {
    readonly reason: string;
    readonly rpc: number;
    readonly http: number;
    readonly grpc: number;
    /** Which handler the call would run, had it not been refused. */
    readonly skill?: string;
    readonly call: (b: RawBinding) => Promise<CallOutcome>;
  }
  // v1.0.0's answers, for the record: 409, 400 UNIMPLEMENTED, 400 UNIMPLEMENTED, 415, 502, 400 UNIMPLEMENTED.
  const ROWS: Row[] = [
    {
      reason: 'TASK_NOT_CANCELABLE',
      rpc: -32002,
      http: 400,
      grpc: GrpcStatus.FAILED_PRECONDITION,
      call: (b) => b.call('CancelTask', { id: done.id }),
    },
    {
      reason: 'PUSH_NOTIFICATION_NOT_SUPPORTED',
      rpc: -32003,
      http: 400,
      grpc: GrpcStatus.FAILED_PRECONDITION,
      call: (b) =>
        b.call('CreateTaskPushNotificationConfig', {
          taskId: done.id,
          id: 'h',
          url: 'https://127.0.0.1:9/h',
        }),
    },
    {
      // A message to a finished task (§3.1.1).
      reason: 'UNSUPPORTED_OPERATION',
      rpc: -32004,
      http: 400,
      grpc: GrpcStatus.FAILED_PRECONDITION,
      skill: 'echo',
      call: (b) => b.call('SendMessage', message('late', 'echo', { taskId: done.id })),
    },
    {
      reason: 'CONTENT_TYPE_NOT_SUPPORTED',
      rpc: -32005,
      http: 400,
      grpc: GrpcStatus.INVALID_ARGUMENT,
      skill: 'text-only',
      call: (b) =>
        b.call('SendMessage', {
          message: {
            ...message('', 'text-only').message,
            parts: [{ url: 'https://127.0.0.1:9/cat.png', mediaType: 'image/png' }],
          },
        }),
    },
    {
      reason: 'INVALID_AGENT_RESPONSE',
      rpc: -32006,
      http: 500,
      grpc: GrpcStatus.INTERNAL,
      call: (b) => b.call('SendMessage', message('go', 'deep')),
    },
    {
      reason: 'VERSION_NOT_SUPPORTED',
      rpc: -32009,
      http: 400,
      grpc: GrpcStatus.FAILED_PRECONDITION,
      skill: 'echo',
      call: (b) => b.call('SendMessage', message('v', 'echo'), { 'a2a-version': '9.9' }),
    },
  ];
  const STATUS_NAMES = Object.fromEntries(Object.entries(GrpcStatus).map(([k, v]) => [v, k]));

  it.each(ROWS)('HTTP+JSON: $reason is HTTP $http with its gRPC status name and ErrorInfo', async (row) => {
    const before = ran.filter((r) => r === row.skill).length;
    const o = await row.call(restBinding(h.url, h.agent));
    expect(o.ok).toBe(false);
    if (o.ok) return;
    expect([o.status, o.error.code, o.error.jsonRpcCode]).toEqual([row.http, row.reason, row.rpc]);
    expect(o.error.data).toEqual([expect.objectContaining({ '@type': ERROR_INFO, reason: row.reason })]);
    // The §11.6 body: `code` is the HTTP status, `status` the gRPC status name of the same row.
    expect(sent.at(-1)).toEqual({
      status: row.http,
      body: { error: expect.objectContaining({ code: row.http, status: STATUS_NAMES[row.grpc] }) },
    });
    if (row.skill !== undefined) expect(ran.filter((r) => r === row.skill).length).toBe(before);
  });

  it.each(ROWS)('gRPC: $reason is status $grpc with its ErrorInfo', async (row) => {
    const before = ran.filter((r) => r === row.skill).length;
    const b = grpcBinding(grpc.url as string, h.client, h.serverId);
    try {
      const o = await row.call(b);
      expect(o.ok).toBe(false);
      if (o.ok) return;
      expect([o.status, o.error.code, o.error.jsonRpcCode]).toEqual([row.grpc, row.reason, row.rpc]);
      expect(o.error.data).toEqual([
        expect.objectContaining({ reason: row.reason, domain: 'a2a-protocol.org' }),
      ]);
    } finally {
      b.close();
    }
    if (row.skill !== undefined) expect(ran.filter((r) => r === row.skill).length).toBe(before);
  });

  it('the refused calls changed nothing: the finished task is as it was', async () => {
    const b = restBinding(h.url, h.agent);
    const got = await b.call('GetTask', { id: done.id });
    expect(got.ok && (got.result as Task)).toEqual(done);
  });

  it('HTTP+JSON: a request body that is not JSON by its Content-Type is CONTENT_TYPE_NOT_SUPPORTED, HTTP 400 (as @a2a-js/sdk answers), and runs nothing', async () => {
    const before = ran.filter((r) => r === 'echo').length;
    const o = await restBinding(h.url, h.agent).call('SendMessage', message('ct', 'echo'), {
      'content-type': 'text/plain',
    });
    expect(o.ok).toBe(false);
    if (o.ok) return;
    expect([o.status, o.error.code, o.error.jsonRpcCode]).toEqual([
      400,
      'CONTENT_TYPE_NOT_SUPPORTED',
      -32005,
    ]);
    expect(sent.at(-1)?.body.error).toEqual(
      expect.objectContaining({ code: 400, status: 'INVALID_ARGUMENT' }),
    );
    expect(ran.filter((r) => r === 'echo').length).toBe(before);
  });
});

/**
 * A v1.0.0 peer's answer to SendMessage, picked by the message's text: the
 * HTTP status, the gRPC status (HTTP+JSON: its name in the body), and the
 * ErrorInfo reason, when it sends one.
 */
interface OldAnswer {
  readonly http: number;
  readonly grpc?: number;
  readonly reason?: string;
}

describe("Weave's client reads a v1.0.0 peer's errors", () => {
  let pki: Pki;
  let ch: SecureChannel;
  let restUrl: string;
  let grpcPeer: SdkGrpcServer;
  let close: () => Promise<void>;
  const answers = new Map<string, OldAnswer>();

  const statusBytes = (code: number, msg: string, reason: string | undefined): Buffer => {
    const root = a2aProtoRoot();
    const info = root.lookupType('google.rpc.ErrorInfo');
    const status = root.lookupType('google.rpc.Status');
    const details =
      reason === undefined
        ? []
        : [
            {
              type_url: ERROR_INFO,
              value: info.encode(info.fromObject({ reason, domain: 'a2a-protocol.org' })).finish(),
            },
          ];
    return Buffer.from(status.encode(status.fromObject({ code, message: msg, details })).finish());
  };

  beforeAll(async () => {
    pki = await createPki();
    const peer = await pki.workload('/old-peer');
    const caller = await pki.workload('/caller');
    // HTTP+JSON, as v1.0.0 maps errors.
    const app = mtlsServer(peer);
    app.addContentTypeParser('application/a2a+json', { parseAs: 'string' }, (_req, body, done) =>
      done(null, JSON.parse(body as string)),
    );
    app.post('/rest/message:send', async (req, reply) => {
      const text = (req.body as { message: { parts: Array<{ text: string }> } }).message.parts[0]!.text;
      const a = answers.get(text)!;
      const name = Object.entries(GrpcStatus).find(([, v]) => v === a.grpc)?.[0];
      return reply.code(a.http).send({
        error: {
          code: a.http,
          ...(name === undefined ? {} : { status: name }),
          message: text,
          ...(a.reason === undefined
            ? {}
            : { details: [{ '@type': ERROR_INFO, reason: a.reason, domain: 'a2a-protocol.org' }] }),
        },
      });
    });
    await app.listen({ port: 0, host: '127.0.0.1' });
    restUrl = `${baseUrl(app)}/rest`;
    // gRPC, as v1.0.0 maps errors; SendMessage only (grpc-js answers the rest UNIMPLEMENTED itself).
    const server = new Server();
    server.addService(a2aGrpcService(), {
      SendMessage: (call: ServerUnaryCall<WireObject, WireObject>, cb: sendUnaryData<WireObject>) => {
        const text = (call.request as { message: { parts: Array<{ text: string }> } }).message.parts[0]!.text;
        const a = answers.get(text)!;
        const metadata = new Metadata();
        if (a.reason !== undefined)
          metadata.set(GRPC_STATUS_DETAILS_KEY, statusBytes(a.grpc!, text, a.reason));
        cb({ code: a.grpc!, details: text, metadata });
      },
    });
    const { certChain, privateKey } = peer.identity.getX509Svid().toPem();
    const ca = peer.identity
      .getBundleSet()
      .allX509Authorities()
      .map((c) => c.toString('pem'))
      .join('\n');
    grpcPeer = await listenGrpcMtls(server, { ca, cert: certChain, key: privateKey });
    ch = channel(caller, peer.id);
    close = async () => {
      await ch.close();
      await grpcPeer.close();
      await app.close();
      await pki.close();
    };
  });
  afterAll(() => close());

  const ctx = (): TransportContext => ({ dispatcher: ch, headers: {}, maxResponseBytes: 1 << 20 });
  const rest = (): ClientTransport =>
    restTransportFactory.create(
      { url: restUrl, protocolBinding: 'HTTP+JSON', protocolVersion: '1.0' },
      ctx(),
    );
  const grpcClient = (): ClientTransport =>
    grpcTransportFactory.create(
      { url: `https://${grpcPeer.target}`, protocolBinding: 'GRPC', protocolVersion: '1.0' },
      ctx(),
    );

  async function failure(t: ClientTransport, text: string, answer: OldAnswer): Promise<A2AError> {
    answers.set(text, answer);
    try {
      const err = await t.call('SendMessage', message(text, 'echo'), { timeoutMs: 10_000 }).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err, text).toBeInstanceOf(A2AError);
      return err as A2AError;
    } finally {
      await t.close();
    }
  }

  // v1.0.0's table (§5.4) for the rows v1.0.1 changed.
  const OLD: Array<[reason: string, rpc: number, http: number, grpc: number]> = [
    ['TASK_NOT_CANCELABLE', -32002, 409, GrpcStatus.FAILED_PRECONDITION],
    ['PUSH_NOTIFICATION_NOT_SUPPORTED', -32003, 400, GrpcStatus.UNIMPLEMENTED],
    ['UNSUPPORTED_OPERATION', -32004, 400, GrpcStatus.UNIMPLEMENTED],
    ['CONTENT_TYPE_NOT_SUPPORTED', -32005, 415, GrpcStatus.INVALID_ARGUMENT],
    ['INVALID_AGENT_RESPONSE', -32006, 502, GrpcStatus.INTERNAL],
    ['VERSION_NOT_SUPPORTED', -32009, 400, GrpcStatus.UNIMPLEMENTED],
  ];

  it.each(OLD)(
    '%s with its ErrorInfo, on the old statuses, reads as itself on both bindings',
    async (reason, rpc, http, grpc) => {
      for (const t of [rest(), grpcClient()]) {
        const err = await failure(t, `old ${reason}`, { http, grpc, reason });
        expect([t.protocolBinding, err.code, err.jsonRpcCode]).toEqual([t.protocolBinding, reason, rpc]);
      }
    },
  );

  it('HTTP+JSON without an ErrorInfo: 409 and 415, each one error in v1.0.0 and none in v1.0.1, still name it; 400 UNIMPLEMENTED is an unsupported operation', async () => {
    const read = async (a: OldAnswer) => {
      const e = await failure(rest(), `bare ${a.http} ${a.grpc ?? '-'}`, a);
      return [e.code, e.jsonRpcCode];
    };
    expect(await read({ http: 409, grpc: GrpcStatus.FAILED_PRECONDITION })).toEqual([
      'TASK_NOT_CANCELABLE',
      -32002,
    ]);
    expect(await read({ http: 409 })).toEqual(['TASK_NOT_CANCELABLE', -32002]);
    expect(await read({ http: 415, grpc: GrpcStatus.INVALID_ARGUMENT })).toEqual([
      'CONTENT_TYPE_NOT_SUPPORTED',
      -32005,
    ]);
    expect(await read({ http: 415 })).toEqual(['CONTENT_TYPE_NOT_SUPPORTED', -32005]);
    expect(await read({ http: 400, grpc: GrpcStatus.UNIMPLEMENTED })).toEqual([
      'UNSUPPORTED_OPERATION',
      -32004,
    ]);
    // v1.0.1's statuses without an ErrorInfo: FAILED_PRECONDITION is a refusal of the call, not an internal error.
    expect(await read({ http: 400, grpc: GrpcStatus.FAILED_PRECONDITION })).toEqual([
      'UNSUPPORTED_OPERATION',
      -32004,
    ]);
    // 502 stays a failure on the far side: a gateway in front of the agent answers it too.
    expect(await read({ http: 502, grpc: GrpcStatus.INTERNAL })).toEqual(['INTERNAL_ERROR', -32603]);
    // What did not change: a route no peer takes is still a method not found.
    expect(await read({ http: 404, grpc: GrpcStatus.UNIMPLEMENTED })).toEqual(['METHOD_NOT_FOUND', -32601]);
  });

  it('gRPC without an ErrorInfo: FAILED_PRECONDITION is an unsupported operation; UNIMPLEMENTED stays a method not found', async () => {
    const bare = await failure(grpcClient(), 'bare 9', { http: 400, grpc: GrpcStatus.FAILED_PRECONDITION });
    expect([bare.code, bare.jsonRpcCode]).toEqual(['UNSUPPORTED_OPERATION', -32004]);
    // A bare UNIMPLEMENTED is what grpc-js itself answers for a method a server does not serve.
    const t = grpcClient();
    try {
      const own = await t.call('GetTask', { id: 't' }, { timeoutMs: 10_000 }).then(
        () => undefined,
        (e: unknown) => e as A2AError,
      );
      expect([own?.code, own?.jsonRpcCode]).toEqual(['METHOD_NOT_FOUND', -32601]);
    } finally {
      await t.close();
    }
    const old = await failure(grpcClient(), 'bare 12', { http: 400, grpc: GrpcStatus.UNIMPLEMENTED });
    expect([old.code, old.jsonRpcCode]).toEqual(['METHOD_NOT_FOUND', -32601]);
  });
});
