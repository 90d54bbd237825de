// Push-notification configs, the extended agent card, polling, mounting under a prefix.
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { request } from 'undici';
import { A2AClient, type StreamResponse, type TaskPushNotificationConfig } from '../src/index.js';
import { startHarness, type Harness } from './helpers/agents.js';

let h: Harness;
let client: A2AClient;
/** The extended-card provider: how often it ran, and whether it has a card to give. */
const extended = { built: 0, configured: true };
const pushed: Array<{ config: TaskPushNotificationConfig; event: StreamResponse }> = [];
let release: () => void = () => undefined;

beforeAll(async () => {
  h = await startHarness(
    (a2a) => {
      a2a.registerTaskHandler({ id: 'wait', name: 'Wait', description: '', tags: [] }, async (ctx) => {
        await new Promise<void>((resolve) => {
          release = resolve;
          ctx.signal.addEventListener('abort', () => resolve());
        });
        return 'finished';
      });
    },
    {
      push: {
        enabled: true,
        // A real sender would POST to config.url over a SecureChannel; the seam is what is tested here.
        send: async (config, event) => {
          pushed.push({ config, event });
        },
      },
      extendedCard: (caller) => {
        extended.built++;
        if (!extended.configured) return undefined;
        return {
          name: 'extended',
          description: `for ${caller.toString()}`,
          version: '1.0.0',
          supportedInterfaces: [{ url: 'https://x/', protocolBinding: 'JSONRPC', protocolVersion: '1.0' }],
          capabilities: {},
          defaultInputModes: [],
          defaultOutputModes: [],
          skills: [],
        };
      },
    },
  );
  client = new A2AClient({ dispatcher: h.agent });
});
afterAll(async () => {
  release();
  await h.close();
});

async function call(method: string, params: unknown, version = '1.0') {
  const res = await request(`${h.url}/`, {
    method: 'POST',
    dispatcher: h.agent,
    headers: { 'content-type': 'application/json', 'a2a-version': version },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method, params }),
  });
  return (await res.body.json()) as { result?: Record<string, unknown>; error?: { code: number } };
}

describe('push notification configs (enabled)', () => {
  it('stores configs, never echoes secrets, and delivers every event to every config', async () => {
    pushed.length = 0;
    const sent = await client.sendMessage(h.url, {
      message: { messageId: 'p1', role: 'ROLE_USER', parts: [{ text: 'x' }] },
      configuration: {
        returnImmediately: true,
        taskPushNotificationConfig: {
          url: 'https://hooks.example/a',
          token: 'secret-token',
          authentication: { scheme: 'Bearer', credentials: 'very-secret' },
        },
      },
    });
    const task = 'task' in sent ? sent.task : undefined;
    expect(task?.status.state).not.toBe('TASK_STATE_COMPLETED');
    const id = task?.id ?? '';
    const created = await call('CreateTaskPushNotificationConfig', {
      taskId: id,
      id: 'second',
      url: 'https://hooks.example/b',
      token: 't2',
    });
    expect(created.result).toMatchObject({ taskId: id, id: 'second', url: 'https://hooks.example/b' });
    expect(JSON.stringify(created)).not.toContain('t2');
    const list = await call('ListTaskPushNotificationConfigs', { taskId: id });
    const configs = (list.result as { configs: TaskPushNotificationConfig[] }).configs;
    expect(configs.map((c) => c.url)).toEqual(['https://hooks.example/a', 'https://hooks.example/b']);
    expect(JSON.stringify(list)).not.toMatch(/secret/);
    expect(configs[0]?.authentication).toEqual({ scheme: 'Bearer' });
    const got = await call('GetTaskPushNotificationConfig', { taskId: id, id: 'second' });
    expect(got.result).toMatchObject({ id: 'second' });
    release();
    await h.a2a.manager.waitForCompletion(id);
    // Deliveries run after the event, one at a time per task: wait for the last one.
    await vi.waitFor(
      () =>
        expect(
          pushed.filter(
            (p) => 'statusUpdate' in p.event && p.event.statusUpdate.status.state === 'TASK_STATE_COMPLETED',
          ),
        ).toHaveLength(2),
      { timeout: 20_000 },
    );
    const forA = pushed.filter((p) => p.config.url === 'https://hooks.example/a');
    const forB = pushed.filter((p) => p.config.url === 'https://hooks.example/b');
    // The sender gets the stored config, secrets included, to authenticate to the webhook.
    expect(forA[0]?.config.token).toBe('secret-token');
    expect(forA.at(-1)?.event).toMatchObject({ statusUpdate: { status: { state: 'TASK_STATE_COMPLETED' } } });
    expect(forB.at(-1)?.event).toMatchObject({ statusUpdate: { status: { state: 'TASK_STATE_COMPLETED' } } });
    const del = await call('DeleteTaskPushNotificationConfig', { taskId: id, id: 'second' });
    expect(del.result).toEqual({});
    const after = await call('ListTaskPushNotificationConfigs', { taskId: id });
    expect((after.result as { configs: unknown[] }).configs).toHaveLength(1);
    expect((await call('GetTaskPushNotificationConfig', { taskId: id, id: 'second' })).error?.code).toBe(
      -32001,
    );
  });

  it('rejects a config for another caller’s task as not found', async () => {
    const t = await client.sendMessage(h.url, {
      message: { messageId: 'p2', role: 'ROLE_USER', parts: [{ text: 'x' }] },
      configuration: { returnImmediately: true },
    });
    const id = 'task' in t ? t.task.id : '';
    const res = await request(`${h.url}/`, {
      method: 'POST',
      dispatcher: h.strangerAgent,
      headers: { 'content-type': 'application/json', 'a2a-version': '1.0' },
      body: JSON.stringify({
        jsonrpc: '2.0',
        id: 1,
        method: 'CreateTaskPushNotificationConfig',
        params: { taskId: id, url: 'https://evil.example/' },
      }),
    });
    expect(((await res.body.json()) as { error: { code: number } }).error.code).toBe(-32001);
    release();
  });

  it('speaks the v0.3 push-config shapes', async () => {
    const t = await client.sendMessage(h.url, {
      message: { messageId: 'p3', role: 'ROLE_USER', parts: [{ text: 'x' }] },
      configuration: { returnImmediately: true },
    });
    const id = 'task' in t ? t.task.id : '';
    const set = await call(
      'tasks/pushNotificationConfig/set',
      { taskId: id, pushNotificationConfig: { id: 'c1', url: 'https://hooks.example/v03', token: 'tok' } },
      '0.3',
    );
    expect(set.result).toEqual({
      taskId: id,
      pushNotificationConfig: { id: 'c1', url: 'https://hooks.example/v03' },
    });
    const get = await call('tasks/pushNotificationConfig/get', { id, pushNotificationConfigId: 'c1' }, '0.3');
    expect(get.result).toMatchObject({
      taskId: id,
      pushNotificationConfig: { url: 'https://hooks.example/v03' },
    });
    release();
  });
});

describe('extended agent card and polling', () => {
  it('GetExtendedAgentCard returns the card built for the caller; others are denied', async () => {
    const card = await client.getExtendedAgentCard(h.url);
    expect(card.description).toBe(`for ${h.clientId.toString()}`);
    const built = extended.built;
    const stranger = new A2AClient({ dispatcher: h.strangerAgent });
    await expect(stranger.getExtendedAgentCard(h.url)).rejects.toMatchObject({ code: 'PERMISSION_DENIED' });
    // The policy refused before the card was built.
    expect(extended.built).toBe(built);
    const pub = await client.discoverAgent(h.url);
    expect(pub.capabilities.extendedAgentCard).toBe(true);
    expect(pub.capabilities.pushNotifications).toBe(true);
  });

  it('-32007 when the extended card is declared but none is configured', async () => {
    extended.configured = false;
    try {
      await expect(client.getExtendedAgentCard(h.url)).rejects.toMatchObject({
        jsonRpcCode: -32007,
        code: 'EXTENDED_AGENT_CARD_NOT_CONFIGURED',
      });
    } finally {
      extended.configured = true;
    }
  });

  it('pollUntilComplete follows a task started with returnImmediately', async () => {
    const t = await client.sendMessage(h.url, {
      message: { messageId: 'poll', role: 'ROLE_USER', parts: [{ text: 'x' }] },
      configuration: { returnImmediately: true },
    });
    const id = 'task' in t ? t.task.id : '';
    const polling = client.pollUntilComplete(h.url, id, { intervalMs: 10 });
    release();
    const done = await polling;
    expect(done.status.state).toBe('TASK_STATE_COMPLETED');
    expect(done.artifacts?.[0]?.parts[0]?.text).toBe('finished');
  });

  it('GetTask honours historyLength', async () => {
    const t = await client.sendMessage(h.url, {
      message: { messageId: 'hist', role: 'ROLE_USER', parts: [{ text: 'x' }] },
      configuration: { returnImmediately: true },
    });
    const id = 'task' in t ? t.task.id : '';
    release();
    await h.a2a.manager.waitForCompletion(id);
    expect((await client.getTask(h.url, id, 0)).history).toBeUndefined();
    expect((await client.getTask(h.url, id, 1)).history).toHaveLength(1);
  });
});

describe('mounting', () => {
  it('mounts under a prefix on any fastify instance; the card points at the mounted endpoint', async () => {
    const { default: Fastify } = await import('fastify');
    const { A2AServer } = await import('../src/index.js');
    const { AllowAllEnforcer } = await import('@weave/authz');
    const a2a = new A2AServer({
      card: { name: 'mounted', description: '', version: '1' },
      selfId: h.serverId,
      enforcer: new AllowAllEnforcer({ audit: { record: () => undefined } }),
      // A test hook in place of @weave/transport's request.peer.
      getCaller: () => h.clientId,
    });
    a2a.registerTaskHandler('echo', (ctx) => ctx.message.parts[0]?.text ?? '');
    const app = Fastify();
    await app.register(a2a.plugin, { prefix: '/agents/x' });
    const card = (
      await app.inject({
        method: 'GET',
        url: '/agents/x/.well-known/agent-card.json',
        headers: { host: 'agent.example' },
      })
    ).json();
    expect(card.supportedInterfaces[0].url).toBe('http://agent.example/agents/x');
    const old = (await app.inject({ method: 'GET', url: '/agents/x/.well-known/agent.json' })).json();
    expect(old.name).toBe('mounted');
    const res = await app.inject({
      method: 'POST',
      url: '/agents/x',
      headers: { 'content-type': 'application/json', 'a2a-version': '1.0' },
      payload: {
        jsonrpc: '2.0',
        id: 1,
        method: 'SendMessage',
        params: { message: { messageId: 'm', role: 'ROLE_USER', parts: [{ text: 'mounted!' }] } },
      },
    });
    expect(res.json().result.task.artifacts[0].parts[0].text).toBe('mounted!');
    await a2a.close();
    await app.close();
  });
});
