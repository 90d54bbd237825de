// Requests fastify answers before any A2A binding sees them: a URL it cannot
// decode, a method or path no route takes (and the body of such a request).
// Over a real mTLS server (dev-CA SVIDs, @weave/transport's createMtlsServer),
// each must get the binding's own error body with a status below 500 and run
// no handler: HTTP+JSON a §11.6 `google.rpc.Status`, JSON-RPC an envelope.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Dispatcher } from 'undici';
import { startHarness, type Harness } from './helpers/agents.js';

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: unknown;
}

/** Past fastify's default bodyLimit, which bounds what is read of a request no route takes. */
const OVER_SERVER_LIMIT = 1024 * 1024 + 1;

let both: Harness;
let rpcOnly: Harness;
const ran: string[] = [];

/** An A2A server with one skill, mounted under `prefix` on its own mTLS server. */
function start(options: Parameters<typeof startHarness>[1], prefix?: string): Promise<Harness> {
  return startHarness(
    (a2a) =>
      a2a.registerTaskHandler('echo', (ctx) => {
        ran.push(ctx.taskId);
        return 'echo';
      }),
    { limits: { maxBodyBytes: 4096 }, ...options },
    prefix === undefined ? {} : { prefix },
  );
}

beforeAll(async () => {
  // Both HTTP bindings at `/` (the default), and JSON-RPC alone at /a2a/rpc.
  both = await start({});
  rpcOnly = await start({ bindings: ['JSONRPC'], rpcPath: '/rpc' }, '/a2a');
});

afterAll(async () => {
  await both?.close();
  await rpcOnly?.close();
});

/** Sends `path` exactly as written (no URL parsing on the way). */
async function send(
  to: Harness,
  method: string,
  path: string,
  body?: string,
  contentType = 'application/json',
): Promise<Answer> {
  const res = await to.agent.request({
    origin: to.url,
    method: method as Dispatcher.HttpMethod,
    path,
    headers: body === undefined ? {} : { 'content-type': contentType },
    ...(body === undefined ? {} : { body }),
  });
  const text = await res.body.text();
  return { status: res.statusCode, headers: res.headers, body: text === '' ? undefined : JSON.parse(text) };
}

/** A §11.6 error body with this status and ErrorInfo reason. */
function expectRestError(a: Answer, status: number, reason: string): void {
  expect(a.status).toBe(status);
  expect(a.headers['content-type']).toMatch(/^application\/a2a\+json(;|$)/);
  const e = (a.body as { error: { code: number; status: string; message: string; details: unknown[] } })
    .error;
  expect(e.code).toBe(status);
  expect(typeof e.status).toBe('string');
  expect(typeof e.message).toBe('string');
  expect(e.details).toMatchObject([{ reason, domain: 'a2a-protocol.org' }]);
}

/** A JSON-RPC error envelope (id null) with this HTTP status and JSON-RPC code. */
function expectRpcError(a: Answer, status: number, code: number): void {
  expect(a.status).toBe(status);
  expect(a.body).toMatchObject({ jsonrpc: '2.0', id: null, error: { code } });
}

describe('requests no A2A route takes get the binding’s error body', () => {
  it('HTTP+JSON: a URL fastify cannot decode is 400 INVALID_REQUEST (§11.6)', async () => {
    const before = ran.length;
    expectRestError(await send(both, 'GET', '/%/message:send'), 400, 'INVALID_REQUEST');
    expectRestError(await send(both, 'POST', '/%zz/message:send', '{}'), 400, 'INVALID_REQUEST');
    expectRestError(await send(both, 'GET', '/tasks/%ff%fe'), 400, 'INVALID_REQUEST');
    expect(ran.length).toBe(before);
  });

  it('HTTP+JSON: a method no route takes is 404 METHOD_NOT_FOUND (§11.6), whatever its body', async () => {
    const before = ran.length;
    const message = JSON.stringify({
      message: { messageId: 'm', role: 'ROLE_USER', parts: [{ text: 'x' }] },
    });
    expectRestError(await send(both, 'PUT', '/message:send', message), 404, 'METHOD_NOT_FOUND');
    expectRestError(await send(both, 'PATCH', '/tasks/t1', 'plain', 'text/plain'), 404, 'METHOD_NOT_FOUND');
    expectRestError(await send(both, 'OPTIONS', '/tasks'), 404, 'METHOD_NOT_FOUND');
    expectRestError(await send(both, 'PUT', '/', '{}'), 404, 'METHOD_NOT_FOUND');
    expectRestError(await send(both, 'TRACE', '/tasks'), 404, 'METHOD_NOT_FOUND');
    // The body of such a request is read only up to the server's limit (fastify's
    // bodyLimit, 1 MiB here), and one over it is the binding's 413.
    expectRestError(
      await send(both, 'PUT', '/tasks', 'x'.repeat(OVER_SERVER_LIMIT)),
      413,
      'PAYLOAD_TOO_LARGE',
    );
    expect(ran.length).toBe(before);
    // And the routes themselves still answer.
    const ok = await send(both, 'POST', '/message:send', message);
    expect(ok.status).toBe(200);
    expect(ran.length).toBe(before + 1);
  });

  it('JSON-RPC: the endpoint answers other methods 405 (Allow: POST), other paths 404, bad URLs 400, as JSON-RPC errors', async () => {
    const before = ran.length;
    for (const method of ['GET', 'PUT', 'DELETE', 'OPTIONS']) {
      const a = await send(rpcOnly, method, '/a2a/rpc', method === 'GET' ? undefined : '{}');
      expectRpcError(a, 405, -32600);
      expect(a.headers.allow).toBe('POST');
    }
    expectRpcError(await send(rpcOnly, 'POST', '/a2a/other', '{}'), 404, -32600);
    expectRpcError(await send(rpcOnly, 'GET', '/a2a/%zz'), 400, -32600);
    expectRpcError(await send(rpcOnly, 'PUT', '/a2a/rpc', 'x'.repeat(OVER_SERVER_LIMIT)), 413, -32600);
    expect(ran.length).toBe(before);
  });

  it('leaves the paths outside its prefix to the server', async () => {
    // fastify's own answers there, as the server's owner would have them.
    const notFound = await send(rpcOnly, 'GET', '/elsewhere');
    expect(notFound.status).toBe(404);
    expect(notFound.body).toMatchObject({ statusCode: 404, error: 'Not Found' });
    const badUrl = await send(rpcOnly, 'GET', '/%zz');
    expect(badUrl.status).toBe(400);
    expect(badUrl.body).toMatchObject({ statusCode: 400, code: 'FST_ERR_BAD_URL' });
  });
});
