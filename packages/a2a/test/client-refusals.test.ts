// A refusal from a server that is not Weave carries no ErrorInfo: the official
// Python SDK's servers (interop/python-a2a.test.ts) answer it with a bare HTTP
// 403 (JSON-RPC, HTTP+JSON) or a bare gRPC PERMISSION_DENIED. The client must
// read it as PERMISSION_DENIED on every binding (callAgent's CALL_DENIED
// depends on it), and nothing else as a refusal. gRPC: grpc-proto.test.ts.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  A2AError,
  jsonRpcTransportFactory,
  restTransportFactory,
  type ClientTransport,
  type TransportContext,
} from '../src/index.js';
import { baseUrl, channel, createPki, mtlsServer, type Pki } from '@weave/test-support';

let pki: Pki;
let url: string;
let ctx: TransportContext;
let close: () => Promise<void>;

const rpcError = (id: unknown, data?: unknown) => ({
  jsonrpc: '2.0',
  id,
  error: { code: -32600, message: 'not you', ...(data === undefined ? {} : { data }) },
});

beforeAll(async () => {
  pki = await createPki();
  const server = await pki.workload('/refuser');
  const caller = await pki.workload('/caller');
  const app = mtlsServer(server);
  // JSON-RPC endpoints: a bare 403, the same error with HTTP 200, a 403 naming another reason.
  app.post('/bare', async (req, reply) => reply.code(403).send(rpcError((req.body as { id: unknown }).id)));
  app.post('/ok-status', async (req) => rpcError((req.body as { id: unknown }).id));
  app.post('/other-reason', async (req, reply) =>
    reply.code(403).send(
      rpcError((req.body as { id: unknown }).id, [
        {
          '@type': 'type.googleapis.com/google.rpc.ErrorInfo',
          reason: 'RESOURCE_EXHAUSTED',
          domain: 'a2a-protocol.org',
        },
      ]),
    ),
  );
  // HTTP+JSON: a google.rpc.Status body without details.
  app.addContentTypeParser('application/a2a+json', { parseAs: 'string' }, (_req, body, done) =>
    done(null, body),
  );
  app.post('/rest/message:send', async (_req, reply) =>
    reply.code(403).send({ error: { code: 403, message: 'not you' } }),
  );
  await app.listen({ port: 0, host: '127.0.0.1' });
  url = baseUrl(app);
  const ch = channel(caller, server.id);
  ctx = { dispatcher: ch, headers: {}, maxResponseBytes: 1 << 20 };
  close = async () => {
    await ch.close();
    await app.close();
    await pki.close();
  };
});
afterAll(() => close());

const rpc = (path: string): ClientTransport =>
  jsonRpcTransportFactory.create(
    { url: `${url}${path}`, protocolBinding: 'JSONRPC', protocolVersion: '1.0' },
    ctx,
  );

async function failure(p: Promise<unknown>): Promise<A2AError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(A2AError);
  return err as A2AError;
}

async function streamFailure(t: ClientTransport): Promise<A2AError> {
  return failure(
    (async () => {
      for await (const _ of t.stream('SendStreamingMessage', { message: {} }, { timeoutMs: 10_000 })) void _;
    })(),
  );
}

describe('a refusal without an ErrorInfo', () => {
  it('JSON-RPC: HTTP 403 reads as PERMISSION_DENIED, unary and streaming; the JSON-RPC code is kept', async () => {
    for (const err of [
      await failure(rpc('/bare').call('GetTask', { id: 't' }, { timeoutMs: 10_000 })),
      await streamFailure(rpc('/bare')),
    ]) {
      expect([err.code, err.jsonRpcCode, err.message]).toEqual(['PERMISSION_DENIED', -32600, 'not you']);
    }
  });

  it('JSON-RPC: the same error with HTTP 200 is not a refusal, and a reason the server names wins', async () => {
    const ok = await failure(rpc('/ok-status').call('GetTask', { id: 't' }, { timeoutMs: 10_000 }));
    expect(ok.code).toBe('INVALID_REQUEST');
    const other = await failure(rpc('/other-reason').call('GetTask', { id: 't' }, { timeoutMs: 10_000 }));
    expect(other.code).toBe('RESOURCE_EXHAUSTED');
  });

  it('HTTP+JSON: a 403 without details reads as PERMISSION_DENIED too', async () => {
    const rest = restTransportFactory.create(
      { url: `${url}/rest`, protocolBinding: 'HTTP+JSON', protocolVersion: '1.0' },
      ctx,
    );
    const err = await failure(rest.call('SendMessage', { message: {} }, { timeoutMs: 10_000 }));
    expect([err.code, err.jsonRpcCode]).toEqual(['PERMISSION_DENIED', -32600]);
  });
});
