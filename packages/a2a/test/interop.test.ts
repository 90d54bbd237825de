// Interop with the official @a2a-js/sdk client (v1.0 and its v0.3 compat mode,
// and the 0.3.x release itself, installed as @a2a-js/sdk-v03) driving a Weave
// server, over real mTLS with dev-CA X.509-SVIDs. The other
// direction, Weave's client against the SDK server on each binding, is
// client-bindings.test.ts.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TaskState, type AgentCard as SdkAgentCard } from '@a2a-js/sdk';
import {
  ClientFactory,
  ClientFactoryOptions,
  DefaultAgentCardResolver,
  JsonRpcTransportFactory,
} from '@a2a-js/sdk/client';
import { request } from 'undici';
import {
  A2AClient as V03A2AClient,
  ClientFactory as V03ClientFactory,
  ClientFactoryOptions as V03ClientFactoryOptions,
  DefaultAgentCardResolver as V03CardResolver,
  JsonRpcTransportFactory as V03JsonRpcTransportFactory,
} from '@a2a-js/sdk-v03/client';
import {
  AgentCardSchema,
  AgentInterfaceSchema,
  V03AgentCardSchema,
  V03StreamEventSchema,
  V03TaskSchema,
  V03TaskStatusUpdateEventSchema,
} from '../src/index.js';
import { causeCodes, serveEcho, serveSlow, startHarness, type Harness } from './helpers/agents.js';
import { channel, fetchOver } from '@weave/test-support';
import { sdkListParams, sdkReadToFirstArtifact, sdkSendParams, sdkText } from '@weave/test-support/a2a-sdk';
import type { SecureChannel } from '@weave/transport';

/** The official 1.x client's factory: JSON-RPC over `ch`, a channel to the harness's server. */
function sdkFactory(ch: SecureChannel, options: { legacyCompat?: boolean } = {}): ClientFactory {
  const fetchImpl = fetchOver(ch);
  return new ClientFactory(
    ClientFactoryOptions.createFrom(ClientFactoryOptions.default, {
      transports: [
        new JsonRpcTransportFactory({
          fetchImpl,
          ...(options.legacyCompat ? { legacyCompat: { enabled: true } } : {}),
        }),
      ],
      cardResolver: new DefaultAgentCardResolver({ fetchImpl }),
    }),
  );
}

/** The 0.3.x release's client factory: JSON-RPC over `ch`. */
function v03Factory(ch: SecureChannel): V03ClientFactory {
  const fetchImpl = fetchOver(ch);
  return new V03ClientFactory(
    V03ClientFactoryOptions.createFrom(V03ClientFactoryOptions.default, {
      transports: [new V03JsonRpcTransportFactory({ fetchImpl })],
      cardResolver: new V03CardResolver({ fetchImpl }),
    }),
  );
}

describe('official SDK client → Weave server (mTLS)', () => {
  let h: Harness;
  let releaseSlow: (() => void) | undefined;
  const ran: string[] = [];

  beforeAll(async () => {
    h = await startHarness((a2a) => {
      serveEcho(a2a, ran);
      serveSlow(a2a, (_id, release) => (releaseSlow = release));
      a2a.registerTaskHandler({ id: 'ask', name: 'Ask', description: 'asks', tags: [] }, async (ctx) => {
        const reply = await ctx.requestInput('which city?');
        return `city: ${reply.parts[0]?.text ?? ''}`;
      });
    });
  });
  afterAll(async () => h.close());

  async function sdkClient() {
    return sdkFactory(h.agent).createFromUrl(h.url);
  }

  it('send, get, list', async () => {
    const client = await sdkClient();
    const res = await client.sendMessage(sdkSendParams(sdkText('hi', { metadata: { skill: 'echo' } })));
    expect('id' in res).toBe(true);
    const task = res as Extract<typeof res, { id: string }>;
    expect(task.status?.state).toBe(TaskState.TASK_STATE_COMPLETED);
    const part = task.artifacts[0]?.parts[0]?.content;
    expect(part).toEqual({ $case: 'text', value: 'echo: hi' });
    expect(ran).toContain(h.clientId.toString());

    const got = await client.getTask({ tenant: '', id: task.id, historyLength: undefined });
    expect(got.id).toBe(task.id);
    expect(got.history.length).toBeGreaterThan(0);

    const list = await client.listTasks(sdkListParams());
    expect(list.tasks.map((t) => t.id)).toContain(task.id);
    expect(list.nextPageToken).toBe('');
  });

  it('stream, subscribe and cancel', async () => {
    const client = await sdkClient();
    const { seen, taskId } = await sdkReadToFirstArtifact(
      client.sendMessageStream(sdkSendParams(sdkText('go', { metadata: { skill: 'slow' } }))),
    );
    expect(seen).toEqual(['task', 'statusUpdate', 'artifactUpdate']);

    // A second subscriber (the SDK's resubscribe) sees the current task first, then live events.
    const sub = client.resubscribeTask({ tenant: '', id: taskId });
    const first = await sub.next();
    expect((first.value as { payload?: { $case: string } }).payload?.$case).toBe('task');

    const canceled = await client.cancelTask({ tenant: '', id: taskId, metadata: undefined });
    expect(canceled.status?.state).toBe(TaskState.TASK_STATE_CANCELED);
    const next = await sub.next();
    const payload = (next.value as { payload?: { $case: string; value: { status?: { state: number } } } })
      .payload;
    expect(payload?.$case).toBe('statusUpdate');
    expect(payload?.value.status?.state).toBe(TaskState.TASK_STATE_CANCELED);
    expect((await sub.next()).done).toBe(true);
    void releaseSlow;
  });

  it('resubscribes to an INPUT_REQUIRED task, answers it, and sees it COMPLETED on the subscription', async () => {
    const client = await sdkClient();
    const res = await client.sendMessage(sdkSendParams(sdkText('go', { metadata: { skill: 'ask' } })));
    const task = res as Extract<typeof res, { id: string }>;
    expect(task.status?.state).toBe(TaskState.TASK_STATE_INPUT_REQUIRED);
    const sub = client.resubscribeTask({ tenant: '', id: task.id });
    const first = await sub.next();
    const p0 = (first.value as { payload?: { $case: string; value: { status?: { state: number } } } })
      .payload;
    expect(p0?.$case).toBe('task');
    expect(p0?.value.status?.state).toBe(TaskState.TASK_STATE_INPUT_REQUIRED);
    const answered = await client.sendMessage(sdkSendParams(sdkText('Lyon', { taskId: task.id })));
    expect((answered as { status?: { state: number } }).status?.state).toBe(TaskState.TASK_STATE_COMPLETED);
    const seen: Array<{ $case: string; state?: number; text?: unknown }> = [];
    for await (const ev of sub) {
      const p = (ev as { payload?: { $case: string; value: Record<string, unknown> } }).payload;
      if (!p) continue;
      const status = p.value.status as { state?: number } | undefined;
      const artifact = p.value.artifact as { parts?: Array<{ content?: { value?: unknown } }> } | undefined;
      seen.push({ $case: p.$case, state: status?.state, text: artifact?.parts?.[0]?.content?.value });
    }
    expect(seen.some((e) => e.text === 'city: Lyon')).toBe(true);
    expect(seen[seen.length - 1]).toMatchObject({
      $case: 'statusUpdate',
      state: TaskState.TASK_STATE_COMPLETED,
    });
  });

  it('maps Weave errors to the SDK error classes', async () => {
    const client = await sdkClient();
    await expect(client.getTask({ tenant: '', id: 'nope', historyLength: undefined })).rejects.toMatchObject({
      name: 'TaskNotFoundError',
    });
  });

  it('refuses a server that does not prove the SPIFFE ID its secureFetch expects; nothing reaches it', async () => {
    const before = ran.length;
    const wrong = channel(h.client, h.strangerId); // the server at h.url is h.serverId
    try {
      const err = await sdkFactory(wrong)
        .createFromUrl(h.url)
        .catch((e: unknown) => e);
      expect(causeCodes(err)).toContain('PEER_VERIFICATION_FAILED');
      expect(ran.length).toBe(before);
    } finally {
      await wrong.close();
    }
  });
});

describe('v0.3 clients → Weave server', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startHarness((a2a) => {
      serveEcho(a2a);
    });
  });
  afterAll(async () => h.close());

  it('answers a raw v0.3 message/send (no A2A-Version header) in v0.3 shape', async () => {
    const res = await request(`${h.url}/`, {
      method: 'POST',
      dispatcher: h.agent,
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        jsonrpc: '2.0',
        id: 'v03-1',
        method: 'message/send',
        params: {
          message: { kind: 'message', messageId: 'm1', role: 'user', parts: [{ kind: 'text', text: 'old' }] },
        },
      }),
    });
    const body = (await res.body.json()) as { id: string; result: Record<string, unknown> };
    expect(body.id).toBe('v03-1');
    expect(body.result).toMatchObject({
      kind: 'task',
      status: { state: 'completed' },
      artifacts: [{ parts: [{ kind: 'text', text: 'echo: old' }] }],
      history: [{ kind: 'message', role: 'user', parts: [{ kind: 'text', text: 'old' }] }],
    });
    // The whole result conforms to the v0.3 Task schema.
    expect(V03TaskSchema.safeParse(body.result).success).toBe(true);
    const id = body.result.id as string;
    const got = await request(`${h.url}/`, {
      method: 'POST',
      dispatcher: h.agent,
      headers: { 'content-type': 'application/json', 'a2a-version': '0.3' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 2, method: 'tasks/get', params: { id } }),
    });
    expect(await got.body.json()).toMatchObject({
      id: 2,
      result: { kind: 'task', id, status: { state: 'completed' } },
    });
  });

  it('streams v0.3 events with kind tags and final', async () => {
    const res = await request(`${h.url}/`, {
      method: 'POST',
      dispatcher: h.agent,
      headers: { 'content-type': 'application/json', 'a2a-version': '0.3', accept: 'text/event-stream' },
      body: JSON.stringify({
        jsonrpc: '2.0',
        id: 7,
        method: 'message/stream',
        params: {
          message: { kind: 'message', messageId: 'm2', role: 'user', parts: [{ kind: 'text', text: 's' }] },
        },
      }),
    });
    const text = await res.body.text();
    const events = text
      .split('\n')
      .filter((l) => l.startsWith('data: '))
      .map((l) => JSON.parse(l.slice(6)) as { id: number; result: { kind: string; final?: boolean } });
    expect(events.every((e) => e.id === 7)).toBe(true);
    expect(events.map((e) => e.result.kind)).toEqual([
      'task',
      'status-update',
      'artifact-update',
      'status-update',
    ]);
    expect(events.at(-1)?.result.final).toBe(true);
    for (const e of events)
      expect(V03StreamEventSchema.safeParse(e.result).success, JSON.stringify(e.result)).toBe(true);
    expect(V03TaskStatusUpdateEventSchema.parse(events.at(-1)?.result).status.state).toBe('completed');
  });

  it("the official SDK's v0.3 compat client drives the Weave server", async () => {
    const fetchImpl = fetchOver(h.agent);
    const resolver = new DefaultAgentCardResolver({ fetchImpl });
    const card = (await resolver.resolve(h.url)) as SdkAgentCard;
    // Keep only the 0.3 interface so the SDK picks its legacy transport.
    const legacyCard = {
      ...card,
      supportedInterfaces: card.supportedInterfaces.filter((i) => i.protocolVersion === '0.3'),
    };
    const client = await sdkFactory(h.agent, { legacyCompat: true }).createFromAgentCard(legacyCard);
    expect(client.protocolVersion).toBe('0.3');
    const res = await client.sendMessage(sdkSendParams(sdkText('compat')));
    const task = res as Extract<typeof res, { id: string }>;
    expect(task.status?.state).toBe(TaskState.TASK_STATE_COMPLETED);
    expect(task.artifacts[0]?.parts[0]?.content).toEqual({ $case: 'text', value: 'echo: compat' });
    const got = await client.getTask({ tenant: '', id: task.id, historyLength: undefined });
    expect(got.status?.state).toBe(TaskState.TASK_STATE_COMPLETED);
  });

  async function card(headers: Record<string, string>, query = ''): Promise<Record<string, unknown>> {
    const res = await request(`${h.url}/.well-known/agent-card.json${query}`, {
      dispatcher: h.agent,
      headers,
    });
    expect(res.headers.vary).toContain('A2A-Version');
    return (await res.body.json()) as Record<string, unknown>;
  }

  const v03Text = (text: string) => ({
    kind: 'message' as const,
    messageId: `v03-${Math.random().toString(36).slice(2)}`,
    role: 'user' as const,
    parts: [{ kind: 'text' as const, text }],
    metadata: { skill: 'echo' },
  });

  it('the v1.0 card by default (no A2A-Version, or 1.0); the v0.3 card to A2A-Version 0.3 or ?a2a-version=0.3', async () => {
    for (const headers of [{}, { 'a2a-version': '1.0' }] as Array<Record<string, string>>) {
      const v1 = await card(headers);
      expect(AgentCardSchema.safeParse(v1).success).toBe(true);
      // Exactly the v1.0 members: the spec's JSON schema and strict ProtoJSON parsers refuse the v0.3 ones.
      expect(v1).not.toHaveProperty('url');
      expect(v1).not.toHaveProperty('preferredTransport');
      expect(v1).not.toHaveProperty('protocolVersion');
      expect(v1).not.toHaveProperty('security');
    }
    for (const [query, headers] of [
      ['', { 'a2a-version': '0.3' }],
      ['', { 'a2a-version': '0.3.0' }],
      ['?a2a-version=0.3', {}],
      // The card URL names the version: it wins over the header.
      ['?a2a-version=0.3', { 'a2a-version': '1.0' }],
    ] as Array<[string, Record<string, string>]>) {
      const c = await card(headers, query);
      const v03 = V03AgentCardSchema.parse(c);
      expect(v03.url.replace(/\/$/, '')).toBe(h.url.replace(/\/$/, ''));
      expect(v03.preferredTransport).toBe('JSONRPC');
      expect(v03.protocolVersion).toBe('0.3.0');
      expect(v03.securitySchemes?.mtls?.type).toBe('mutualTLS');
      const ifaces = AgentInterfaceSchema.array().parse(c.supportedInterfaces);
      expect(ifaces.map((i) => `${i.protocolBinding} ${i.protocolVersion}`)).toContain('JSONRPC 1.0');
    }
  });

  it('the 0.3.x client discovers the agent and sends, gets and streams with the v0.3 method names', async () => {
    // A v0.3 client is given the card URL that asks for the v0.3 card.
    const client = await v03Factory(h.agent).createFromUrl(
      h.url,
      '/.well-known/agent-card.json?a2a-version=0.3',
    );
    const res = await client.sendMessage({
      message: v03Text('old friend'),
    });
    expect(res.kind).toBe('task');
    const task = res as Extract<typeof res, { kind: 'task' }>;
    expect(task.status.state).toBe('completed');
    expect(task.artifacts?.[0]?.parts[0]).toMatchObject({ kind: 'text', text: 'echo: old friend' });
    const got = await client.getTask({ id: task.id });
    expect(got.id).toBe(task.id);
    const kinds: string[] = [];
    for await (const e of client.sendMessageStream({
      message: v03Text('stream'),
    })) {
      kinds.push(e.kind);
    }
    expect(kinds[0]).toBe('task');
    expect(kinds).toContain('artifact-update');
  });

  it('the deprecated 0.3.x A2AClient, which insists on the card `url`, works too', async () => {
    const client = await V03A2AClient.fromCardUrl(`${h.url}/.well-known/agent-card.json?a2a-version=0.3`, {
      fetchImpl: fetchOver(h.agent),
    });
    const res = await client.sendMessage({
      message: v03Text('legacy'),
    });
    expect('result' in res).toBe(true);
    const result = (res as { result: { kind: string; status: { state: string } } }).result;
    expect(result.kind).toBe('task');
    expect(result.status.state).toBe('completed');
  });
});

describe('card v0.3 compatibility modes (card.v03Compat)', () => {
  const cardOptions = { name: 'test agent', description: 'a2a tests', version: '1.0.0' };
  /** A harness serving `echo` in the compatibility mode `v03Compat`, for the tests of one describe. */
  function harnessIn(v03Compat: 'headerless' | 'off'): () => Harness {
    let h: Harness | undefined;
    beforeAll(async () => {
      h = await startHarness((a2a) => serveEcho(a2a), { card: { ...cardOptions, v03Compat } });
    });
    afterAll(async () => h?.close());
    return () => h!;
  }
  const v03Message = (text: string) => ({
    kind: 'message' as const,
    messageId: `v03-${Math.random().toString(36).slice(2)}`,
    role: 'user' as const,
    parts: [{ kind: 'text' as const, text }],
  });

  describe("'headerless': a request without A2A-Version gets the v0.3 card", () => {
    const harness = harnessIn('headerless');

    it('a stock 0.3.x client discovers the agent at the default card URL and calls it', async () => {
      const h = harness();
      const client = await v03Factory(h.agent).createFromUrl(h.url);
      const res = await client.sendMessage({ message: v03Message('headerless') });
      expect(res).toMatchObject({ kind: 'task', status: { state: 'completed' } });
      const task = res as Extract<typeof res, { kind: 'task' }>;
      expect(task.artifacts?.[0]?.parts[0]).toMatchObject({ kind: 'text', text: 'echo: headerless' });
    });

    it('the official 1.x client (it sends A2A-Version: 1.0) still gets the v1.0 card and calls on 1.0', async () => {
      const h = harness();
      const fetchImpl = fetchOver(h.agent);
      const resolver = new DefaultAgentCardResolver({ fetchImpl });
      const c = (await resolver.resolve(h.url)) as SdkAgentCard & Record<string, unknown>;
      expect(c.url).toBeUndefined();
      const client = await sdkFactory(h.agent).createFromAgentCard(c);
      expect(client.protocolVersion).toBe('1.0');
      const res = await client.sendMessage(sdkSendParams(sdkText('v1')));
      expect((res as Extract<typeof res, { id: string }>).status?.state).toBe(TaskState.TASK_STATE_COMPLETED);
    });
  });

  describe("'off': never the v0.3 card", () => {
    const harness = harnessIn('off');

    it('A2A-Version 0.3 and ?a2a-version=0.3 get the v1.0 card; the v0.3 method names still answer', async () => {
      const h = harness();
      for (const [query, headers] of [
        ['', { 'a2a-version': '0.3' }],
        ['?a2a-version=0.3', {}],
        ['', {}],
      ] as Array<[string, Record<string, string>]>) {
        const res = await request(`${h.url}/.well-known/agent-card.json${query}`, {
          dispatcher: h.agent,
          headers,
        });
        const c = (await res.body.json()) as Record<string, unknown>;
        expect(AgentCardSchema.safeParse(c).success).toBe(true);
        expect(c).not.toHaveProperty('url');
      }
      const res = await request(`${h.url}/`, {
        method: 'POST',
        dispatcher: h.agent,
        headers: { 'content-type': 'application/json', 'a2a-version': '0.3' },
        body: JSON.stringify({
          jsonrpc: '2.0',
          id: 1,
          method: 'message/send',
          params: { message: { ...v03Message('off'), metadata: { skill: 'echo' } } },
        }),
      });
      expect(await res.body.json()).toMatchObject({
        id: 1,
        result: { kind: 'task', status: { state: 'completed' } },
      });
    });
  });
});
