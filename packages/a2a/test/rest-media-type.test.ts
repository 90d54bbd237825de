// The media types of the HTTP+JSON binding (spec §11.1: `application/a2a+json`
// SHOULD be used for requests and responses; §14.1 registers it) against those
// of JSON-RPC (§9.1: `application/json`). The official clients (@a2a-js/sdk's
// RestTransport, a2a-sdk's REST transport) send `application/json` and read the
// body whatever its type, so the server takes both and answers the new one.
// Real mTLS with dev-CA SVIDs, a real fastify server on loopback.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request } from 'undici';
import type { IncomingHttpHeaders } from 'node:http';
import { baseUrl, channel, mtlsServer } from '@weave/test-support';
import { A2AClient, RestTransport, restTransportFactory, type Task } from '../src/index.js';
import { serveEcho, startHarness, userMessage, type Harness } from './helpers/agents.js';

let h: Harness;
/** The headers of each request the server received, in order. */
const seen: Array<{ method: string; url: string; headers: IncomingHttpHeaders }> = [];

beforeAll(async () => {
  h = await startHarness(
    (a2a) => serveEcho(a2a),
    {},
    {
      beforeListen: (app) =>
        app.addHook('onRequest', async (req) => {
          seen.push({ method: req.method, url: req.url, headers: req.headers });
        }),
    },
  );
});
afterAll(async () => h?.close());

/** The media type of a Content-Type header, without its parameters. */
function mediaType(header: string | string[] | undefined): string | undefined {
  return typeof header === 'string' ? header.split(';')[0]?.trim() : undefined;
}

/** One HTTP request to the harness over the allowed client's channel; the body read as text. */
async function call(method: 'GET' | 'POST', path: string, body?: unknown, contentType?: string) {
  const res = await request(`${h.url}${path}`, {
    method,
    dispatcher: h.agent,
    headers: {
      'a2a-version': '1.0',
      ...(body === undefined ? {} : { 'content-type': contentType ?? 'application/a2a+json' }),
    },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  return {
    status: res.statusCode,
    type: mediaType(res.headers['content-type']),
    text: await res.body.text(),
  };
}

describe('the HTTP+JSON server', () => {
  it('answers successes and errors as application/a2a+json (§11.1, §11.6)', async () => {
    const sent = await call('POST', '/message:send', { message: userMessage('echo', 'hi') });
    expect(sent.status, sent.text).toBe(200);
    expect(sent.type).toBe('application/a2a+json');
    const task = (JSON.parse(sent.text) as { task: Task }).task;
    const got = await call('GET', `/tasks/${task.id}`);
    expect([got.status, got.type]).toEqual([200, 'application/a2a+json']);
    const missing = await call('GET', '/tasks/no-such-task');
    expect([missing.status, missing.type]).toEqual([404, 'application/a2a+json']);
    expect(JSON.parse(missing.text)).toMatchObject({ error: { details: [{ reason: 'TASK_NOT_FOUND' }] } });
    const unrouted = await call('POST', '/no-such-route', {});
    expect([unrouted.status, unrouted.type]).toEqual([404, 'application/a2a+json']);
  });

  it.each(['application/json', 'application/a2a+json; charset=utf-8', 'application/json; charset=utf-8'])(
    'takes a request body sent as %s (what the official clients send)',
    async (contentType) => {
      const r = await call('POST', '/message:send', { message: userMessage('echo', 'hi') }, contentType);
      expect([r.status, r.type], r.text).toEqual([200, 'application/a2a+json']);
    },
  );

  it('refuses another media type with 400 CONTENT_TYPE_NOT_SUPPORTED, as application/a2a+json', async () => {
    const r = await call('POST', '/message:send', { message: userMessage('echo') }, 'text/plain');
    expect([r.status, r.type]).toEqual([400, 'application/a2a+json']);
    expect(JSON.parse(r.text)).toMatchObject({
      error: {
        // Both are taken, so the answer names both.
        message: 'Unsupported Content-Type "text/plain"; expected application/json or application/a2a+json',
        details: [{ reason: 'CONTENT_TYPE_NOT_SUPPORTED' }],
      },
    });
  });

  it('leaves JSON-RPC at application/json (§9.1)', async () => {
    const r = await call(
      'POST',
      '/',
      { jsonrpc: '2.0', id: 1, method: 'SendMessage', params: { message: userMessage('echo') } },
      'application/json',
    );
    expect([r.status, r.type]).toEqual([200, 'application/json']);
  });
});

describe('the HTTP+JSON client transport', () => {
  it('sends application/a2a+json bodies and accepts both media types', async () => {
    const client = new A2AClient({ dispatcher: h.agent, transports: [restTransportFactory] });
    const from = seen.length;
    const r = await client.sendMessage(h.url, { message: userMessage('echo', 'hi') });
    await client.close();
    const post = seen.slice(from).find((s) => s.method === 'POST');
    expect(post?.url).toBe('/message:send');
    expect(post?.headers['content-type']).toBe('application/a2a+json');
    expect(post?.headers.accept).toBe('application/a2a+json, application/json');
    expect('task' in r && r.task.status.state).toBe('TASK_STATE_COMPLETED');
  });

  it('reads an answer labelled application/json (a server predating §11.1)', async () => {
    const old = await h.pki.workload('/agent/old');
    const app = mtlsServer(old);
    const task: Task = {
      id: 't1',
      contextId: 'c1',
      status: { state: 'TASK_STATE_COMPLETED' },
    };
    app.get('/tasks/:id', async (_req, reply) => reply.header('content-type', 'application/json').send(task));
    await app.listen({ port: 0, host: '127.0.0.1' });
    const dispatcher = channel(h.client, old.id);
    try {
      const rest = new RestTransport(
        { url: baseUrl(app), protocolBinding: 'HTTP+JSON', protocolVersion: '1.0' },
        { dispatcher, headers: {}, maxResponseBytes: 1 << 20 },
      );
      expect(await rest.call('GetTask', { id: 't1' }, { timeoutMs: 5000 })).toEqual(task);
    } finally {
      await dispatcher.close();
      await app.close();
    }
  });
});
