// Push notifications end to end: the A2A server delivers each event to a
// webhook over mTLS (SecureChannel → createMtlsServer), in order, with the token.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SecureChannel } from '@weave/transport';
import type { MtlsFastifyInstance } from '@weave/transport/server';
import {
  A2AConfigError,
  A2AClient,
  createWebhookSender,
  type StreamResponse,
  type TaskPushNotificationConfig,
} from '../src/index.js';
import { startHarness, type Harness } from './helpers/agents.js';
import { baseUrl, channel, mtlsServer } from '@weave/test-support';

let h: Harness;
let hook: MtlsFastifyInstance;
let hookUrl: string;
let toHook: SecureChannel | undefined;
const received: Array<{ headers: Record<string, unknown>; body: StreamResponse }> = [];
let arrived: () => void = () => undefined;

beforeAll(async () => {
  // Filled in once the webhook exists; the agent has to be configured first.
  const hookSender: { send?: (c: TaskPushNotificationConfig, e: StreamResponse) => Promise<void> } = {};
  h = await startHarness(
    (a2a) => {
      a2a.registerTaskHandler('steps', (ctx) => {
        for (let i = 0; i < 5; i++)
          ctx.publishArtifact({ artifactId: 'o', parts: [{ text: `${i}` }] }, { append: i > 0 });
        return undefined;
      });
    },
    {
      push: { enabled: true, send: (c, e) => (hookSender.send as NonNullable<typeof hookSender.send>)(c, e) },
    },
  );
  const webhook = await h.pki.workload('/webhook');
  hook = mtlsServer(webhook);
  hook.addContentTypeParser('application/a2a+json', { parseAs: 'string' }, (_r, body, done) =>
    done(null, JSON.parse(body as string)),
  );
  hook.post('/hook', async (req) => {
    received.push({ headers: req.headers, body: req.body as StreamResponse });
    if (received.length >= 8) arrived();
    return { ok: true };
  });
  await hook.listen({ port: 0, host: '127.0.0.1' });
  hookUrl = `${baseUrl(hook)}/hook`;
  // The agent pushes with its own SVID and only to the webhook's SPIFFE ID.
  toHook = channel(h.server, webhook.id);
  // The webhook listens on loopback, which the SSRF guard refuses unless allowed.
  hookSender.send = createWebhookSender({ dispatcher: toHook, allowAddresses: ['127.0.0.0/8'] });
});
afterAll(async () => {
  await toHook?.close();
  await hook.close();
  await h.close();
});

describe('webhook push notifications', () => {
  it('delivers every event in order, authenticated with the token', async () => {
    const done = new Promise<void>((resolve) => (arrived = resolve));
    const client = new A2AClient({ dispatcher: h.agent });
    const r = await client.sendMessage(h.url, {
      message: { messageId: 'push', role: 'ROLE_USER', parts: [{ text: 'go' }] },
      configuration: { taskPushNotificationConfig: { url: hookUrl, token: 'tok-123' } },
    });
    await done;
    const id = 'task' in r ? r.task.id : '';
    // task, WORKING, 5 artifact chunks, COMPLETED
    expect(received.map((x) => Object.keys(x.body)[0])).toEqual([
      'task',
      'statusUpdate',
      'artifactUpdate',
      'artifactUpdate',
      'artifactUpdate',
      'artifactUpdate',
      'artifactUpdate',
      'statusUpdate',
    ]);
    const chunks = received.flatMap((x) =>
      'artifactUpdate' in x.body ? [x.body.artifactUpdate.artifact.parts[0]?.text] : [],
    );
    expect(chunks).toEqual(['0', '1', '2', '3', '4']);
    expect(received.every((x) => x.headers['x-a2a-notification-token'] === 'tok-123')).toBe(true);
    expect(received.every((x) => x.headers['content-type'] === 'application/a2a+json')).toBe(true);
    const last = received.at(-1)?.body;
    expect(last && 'statusUpdate' in last && last.statusUpdate.taskId).toBe(id);
  });

  it('A2AClient manages push configs: create, get, list, delete', async () => {
    const client = new A2AClient({ dispatcher: h.agent });
    const task = await client.sendTask(h.url, 'steps', 'go');
    const created = await client.createTaskPushNotificationConfig(h.url, {
      taskId: task.id,
      url: hookUrl,
      token: 'secret-1',
      authentication: { scheme: 'Bearer', credentials: 'cred-1' },
    });
    expect(created).toMatchObject({ taskId: task.id, url: hookUrl, authentication: { scheme: 'Bearer' } });
    expect(created.id).toBeTruthy();
    // Secrets are write-only.
    expect(JSON.stringify(created)).not.toMatch(/secret-1|cred-1/);
    const named = await client.createTaskPushNotificationConfig(h.url, {
      taskId: task.id,
      id: 'mine',
      url: hookUrl,
    });
    expect(named.id).toBe('mine');
    expect(await client.getTaskPushNotificationConfig(h.url, task.id, 'mine')).toMatchObject({
      id: 'mine',
      taskId: task.id,
      url: hookUrl,
    });
    const page = await client.listTaskPushNotificationConfigs(h.url, task.id);
    expect(page.configs.map((c) => c.id).sort()).toEqual([created.id, 'mine'].sort());
    expect(page.nextPageToken).toBe('');
    await expect(client.deleteTaskPushNotificationConfig(h.url, task.id, 'mine')).resolves.toBeUndefined();
    expect((await client.listTaskPushNotificationConfigs(h.url, task.id)).configs.map((c) => c.id)).toEqual([
      created.id,
    ]);
    await expect(client.getTaskPushNotificationConfig(h.url, task.id, 'mine')).rejects.toMatchObject({
      jsonRpcCode: -32001,
    });
    // Another caller's task is not there for a stranger.
    const stranger = new A2AClient({ dispatcher: h.strangerAgent });
    await expect(stranger.listTaskPushNotificationConfigs(h.url, task.id)).rejects.toMatchObject({
      name: 'A2AError',
    });
  });

  it('refuses to enable push without a sender', async () => {
    const { A2AServer } = await import('../src/index.js');
    const { AllowAllEnforcer } = await import('@weave/authz');
    expect(
      () =>
        new A2AServer({
          card: { name: 'x', description: '', version: '1' },
          selfId: h.serverId,
          enforcer: new AllowAllEnforcer({ audit: { record: () => undefined } }),
          push: { enabled: true },
        }),
    ).toThrow(A2AConfigError);
  });
});
