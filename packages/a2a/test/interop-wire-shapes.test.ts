// Wire shapes other SDKs' clients require of a Weave server, found by driving
// one with the official Python SDK (a2a-sdk 1.x): the extended card answered
// to a v0.3 JSON-RPC request in the v0.3 shape (a2a-python's v0.3 client
// requires its `url`), and DeleteTaskPushNotificationConfig over HTTP+JSON
// answered 200 `{}` (google.protobuf.Empty; a2a-python's REST client reads
// every success as JSON, so an empty 204 fails there), which Weave's own
// client reads as it still reads a peer's 204. Real mTLS with dev-CA SVIDs.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request } from 'undici';
import {
  ClientFactory as V03ClientFactory,
  ClientFactoryOptions as V03ClientFactoryOptions,
  DefaultAgentCardResolver as V03CardResolver,
  JsonRpcTransportFactory as V03JsonRpcTransportFactory,
} from '@a2a-js/sdk-v03/client';
import { baseUrl, channel, fetchOver, mtlsServer } from '@weave/test-support';
import {
  A2AClient,
  AgentCardSchema,
  V03AgentCardSchema,
  restTransportFactory,
  type AgentCard,
  type Task,
} from '../src/index.js';
import { serveEcho, startHarness, userMessage, type Harness } from './helpers/agents.js';

let h: Harness;
/** Whether the extended card keeps its 0.3 interface (a card without one has no v0.3 shape). */
let listsV03 = true;
/** A JWS over the v1.0 card: it cannot sign the v0.3 shape, which the public v0.3 card leaves unsigned. */
const SIGNATURE = { protected: 'eyJhbGciOiJFUzI1NiJ9', signature: 'c2ln' };

beforeAll(async () => {
  h = await startHarness(
    (a2a) => {
      serveEcho(a2a);
      a2a.registerTaskHandler(
        { id: 'hidden', name: 'Hidden', description: 'on the extended card only', tags: [] },
        async () => 'hidden',
        { extended: true },
      );
    },
    {
      // Configs are kept, never delivered: only their routes are tested here.
      push: { enabled: true, send: async () => undefined },
      extendedCard: (): AgentCard => {
        const card = h.a2a.extendedAgentCard(h.url);
        return {
          ...card,
          supportedInterfaces: listsV03
            ? card.supportedInterfaces
            : card.supportedInterfaces.filter((i) => i.protocolVersion !== '0.3'),
          signatures: [SIGNATURE],
        };
      },
    },
  );
});
afterAll(async () => h?.close());

/** One JSON-RPC call over the allowed client's channel; the `result` (the test fails on an error). */
async function rpc(method: string, headers: Record<string, string>): Promise<Record<string, unknown>> {
  const res = await request(`${h.url}/`, {
    method: 'POST',
    dispatcher: h.agent,
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method, params: {} }),
  });
  const body = (await res.body.json()) as { result?: Record<string, unknown>; error?: unknown };
  expect(body.error, JSON.stringify(body.error)).toBeUndefined();
  return body.result ?? {};
}

/** The public card as a v0.3 client is given it. */
async function publicV03Card(): Promise<Record<string, unknown>> {
  const res = await request(`${h.url}/.well-known/agent-card.json?a2a-version=0.3`, { dispatcher: h.agent });
  return (await res.body.json()) as Record<string, unknown>;
}

describe('the extended card to a v0.3 JSON-RPC request', () => {
  it.each([
    ['the v0.3 method name alone', {}],
    ['A2A-Version: 0.3', { 'a2a-version': '0.3' }],
  ] as Array<[string, Record<string, string>]>)(
    'is a v0.3 AgentCard, shaped as the public v0.3 card (%s)',
    async (_name, headers) => {
      const card = await rpc('agent/getAuthenticatedExtendedCard', headers);
      const v03 = V03AgentCardSchema.parse(card);
      expect(v03.url).toBe(h.url);
      expect(v03.preferredTransport).toBe('JSONRPC');
      expect(v03.protocolVersion).toBe('0.3.0');
      expect(v03.skills.map((s) => s.id)).toEqual(['echo', 'hidden']);
      // As the public v0.3 card: the v1.0 signature does not cover this shape.
      expect(card).not.toHaveProperty('signatures');
      expect(Object.keys(card).sort()).toEqual(Object.keys(await publicV03Card()).sort());
    },
  );

  it('is read by the 0.3.x release client', async () => {
    const fetchImpl = fetchOver(h.agent);
    const client = await new V03ClientFactory(
      V03ClientFactoryOptions.createFrom(V03ClientFactoryOptions.default, {
        transports: [new V03JsonRpcTransportFactory({ fetchImpl })],
        cardResolver: new V03CardResolver({ fetchImpl }),
      }),
    ).createFromUrl(h.url, '/.well-known/agent-card.json?a2a-version=0.3');
    // The public card declares the extended one: the client fetches it.
    const card = await client.getAgentCard();
    expect(card.url).toBe(h.url);
    expect(card.skills.map((s) => s.id)).toEqual(['echo', 'hidden']);
  });

  it('stays the v1.0 card, signatures kept, to a v1.0 request', async () => {
    const card = await rpc('GetExtendedAgentCard', { 'a2a-version': '1.0' });
    expect(AgentCardSchema.safeParse(card).success).toBe(true);
    expect(card).not.toHaveProperty('url');
    expect(card.signatures).toEqual([SIGNATURE]);
  });

  it('is the v1.0 card when it lists no 0.3 interface, as the public card then is', async () => {
    listsV03 = false;
    try {
      const card = await rpc('agent/getAuthenticatedExtendedCard', { 'a2a-version': '0.3' });
      expect(AgentCardSchema.safeParse(card).success).toBe(true);
      expect(card).not.toHaveProperty('url');
    } finally {
      listsV03 = true;
    }
  });
});

describe('DeleteTaskPushNotificationConfig over HTTP+JSON', () => {
  /** One HTTP+JSON request over the allowed client's channel. */
  async function rest(method: 'POST' | 'DELETE', path: string, body?: unknown) {
    const res = await request(`${h.url}${path}`, {
      method,
      dispatcher: h.agent,
      headers: {
        'a2a-version': '1.0',
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    const type = res.headers['content-type'];
    // The media type, without its parameters.
    return {
      status: res.statusCode,
      type: typeof type === 'string' ? type.split(';')[0]?.trim() : undefined,
      text: await res.body.text(),
    };
  }

  it('answers 200 {} as application/a2a+json, also for a config already gone', async () => {
    const sent = await rest('POST', '/message:send', { message: userMessage('echo', 'hi') });
    const task = (JSON.parse(sent.text) as { task: Task }).task;
    const created = await rest('POST', `/tasks/${task.id}/pushNotificationConfigs`, {
      id: 'c1',
      url: 'https://hooks.example/a2a',
    });
    expect(created.status, created.text).toBe(201);
    for (let i = 0; i < 2; i++) {
      const del = await rest('DELETE', `/tasks/${task.id}/pushNotificationConfigs/c1`);
      expect([del.status, del.type, del.text]).toEqual([200, 'application/a2a+json', '{}']);
    }
  });

  it("Weave's client deletes through it, and through a peer that answers 204", async () => {
    const client = new A2AClient({ dispatcher: h.agent, transports: [restTransportFactory] });
    const task = await client.sendTask(h.url, 'echo', 'push me');
    await client.createTaskPushNotificationConfig(h.url, {
      taskId: task.id,
      id: 'c2',
      url: 'https://hooks.example/a2a',
    });
    await expect(client.deleteTaskPushNotificationConfig(h.url, task.id, 'c2')).resolves.toBeUndefined();
    expect((await client.listTaskPushNotificationConfigs(h.url, task.id)).configs).toEqual([]);
    await client.close();

    // A peer answering as @a2a-js/sdk 1.3's server does: 204, no body.
    const peer = await h.pki.workload('/agent/peer');
    const app = mtlsServer(peer);
    const deleted: string[] = [];
    app.get('/.well-known/agent-card.json', async () => ({
      name: 'peer',
      description: 'answers 204',
      version: '1.0.0',
      supportedInterfaces: [{ url: baseUrl(app), protocolBinding: 'HTTP+JSON', protocolVersion: '1.0' }],
      capabilities: {},
      defaultInputModes: [],
      defaultOutputModes: [],
      skills: [],
    }));
    app.delete('/tasks/:task/pushNotificationConfigs/:id', async (req, reply) => {
      deleted.push(req.url);
      return reply.code(204).send();
    });
    await app.listen({ port: 0, host: '127.0.0.1' });
    const dispatcher = channel(h.client, peer.id);
    const toPeer = new A2AClient({ dispatcher, transports: [restTransportFactory] });
    try {
      await expect(
        toPeer.deleteTaskPushNotificationConfig(baseUrl(app), 't1', 'c1'),
      ).resolves.toBeUndefined();
      expect(deleted).toEqual(['/tasks/t1/pushNotificationConfigs/c1']);
    } finally {
      await toPeer.close();
      await dispatcher.close();
      await app.close();
    }
  });
});
