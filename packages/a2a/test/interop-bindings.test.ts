// The official @a2a-js/sdk 1.3 client drives a Weave agent over its
// HTTP+JSON and gRPC bindings (JSON-RPC: interop.test.ts), over real mTLS
// with dev-CA SVIDs: send, stream, get, list, cancel, subscribe and the
// push-config calls.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TaskState } from '@a2a-js/sdk';
import {
  ClientFactory,
  ClientFactoryOptions,
  DefaultAgentCardResolver,
  RestTransportFactory,
  type Client,
} from '@a2a-js/sdk/client';
import { GrpcTransportFactory } from '@a2a-js/sdk/client/grpc';
import type { A2AGrpcServer } from '../src/index.js';
import { serveEcho, serveGrpc, serveSlow, startHarness, type Harness } from './helpers/agents.js';
import { fetchOver } from '@weave/test-support';
import { grpcCredentials } from './helpers/raw-bindings.js';
import { sdkListParams, sdkReadToFirstArtifact, sdkSendParams, sdkText } from '@weave/test-support/a2a-sdk';

let h: Harness;
let grpc: A2AGrpcServer;
const ran: string[] = [];
const release = new Map<string, () => void>();

beforeAll(async () => {
  h = await startHarness(
    (a2a) => {
      serveEcho(a2a, ran);
      serveSlow(a2a, (id, r) => release.set(id, r), 'done');
    },
    { push: { enabled: true, send: async () => undefined } },
  );
  grpc = await serveGrpc(h);
});
afterAll(async () => {
  await grpc.close(100);
  await h.close();
});

async function sdkClient(binding: 'HTTP+JSON' | 'GRPC'): Promise<Client> {
  const fetchImpl = fetchOver(h.agent);
  const transport =
    binding === 'HTTP+JSON'
      ? new RestTransportFactory({ fetchImpl })
      : new GrpcTransportFactory({ grpcChannelCredentials: grpcCredentials(h.client, h.serverId) });
  const factory = new ClientFactory(
    ClientFactoryOptions.createFrom(ClientFactoryOptions.default, {
      transports: [transport],
      // The card lists JSON-RPC first; this client is to use the binding under test.
      preferredTransports: [binding],
      cardResolver: new DefaultAgentCardResolver({ fetchImpl }),
    }),
  );
  return factory.createFromUrl(h.url);
}

type Payload = { payload?: { $case: string; value: { id?: string; status?: { state: number } } } };

describe.each(['HTTP+JSON', 'GRPC'] as const)('official SDK client over %s → Weave (mTLS)', (binding) => {
  it('send, get, list', async () => {
    const client = await sdkClient(binding);
    const before = ran.length;
    const res = await client.sendMessage(sdkSendParams(sdkText('hi', { metadata: { skill: 'echo' } })));
    const task = res as Extract<typeof res, { id: string }>;
    expect(task.status?.state).toBe(TaskState.TASK_STATE_COMPLETED);
    expect(task.artifacts[0]?.parts[0]?.content).toEqual({ $case: 'text', value: 'echo: hi' });
    expect(ran.slice(before)).toEqual([h.clientId.toString()]);
    const got = await client.getTask({ tenant: '', id: task.id, historyLength: undefined });
    expect(got.id).toBe(task.id);
    expect(got.history.length).toBeGreaterThan(0);
    const list = await client.listTasks(sdkListParams(task.contextId));
    expect(list.tasks.map((t) => t.id)).toEqual([task.id]);
    await expect(client.getTask({ tenant: '', id: 'nope', historyLength: undefined })).rejects.toMatchObject({
      name: 'TaskNotFoundError',
    });
  });

  it('stream, subscribe and cancel', async () => {
    const client = await sdkClient(binding);
    const { seen, taskId } = await sdkReadToFirstArtifact(
      client.sendMessageStream(sdkSendParams(sdkText('go', { metadata: { skill: 'slow' } }))),
    );
    expect(seen).toEqual(['task', 'statusUpdate', 'artifactUpdate']);
    const sub = client.resubscribeTask({ tenant: '', id: taskId });
    const first = await sub.next();
    expect((first.value as Payload).payload?.$case).toBe('task');
    const canceled = await client.cancelTask({ tenant: '', id: taskId, metadata: undefined });
    expect(canceled.status?.state).toBe(TaskState.TASK_STATE_CANCELED);
    const next = (await sub.next()).value as Payload;
    expect(next.payload?.$case).toBe('statusUpdate');
    expect(next.payload?.value.status?.state).toBe(TaskState.TASK_STATE_CANCELED);
    expect((await sub.next()).done).toBe(true);
  });

  it('subscribes to a running task and sees it complete', async () => {
    const client = await sdkClient(binding);
    const res = await client.sendMessage({
      ...sdkSendParams(sdkText('bg', { metadata: { skill: 'slow' } })),
      configuration: {
        acceptedOutputModes: [],
        taskPushNotificationConfig: undefined,
        historyLength: undefined,
        returnImmediately: true,
      },
    });
    const id = (res as { id: string }).id;
    const states: number[] = [];
    const sub = client.resubscribeTask({ tenant: '', id });
    const first = await sub.next();
    expect((first.value as Payload).payload?.$case).toBe('task');
    release.get(id)?.();
    for await (const ev of sub) {
      const p = (ev as Payload).payload;
      if (p?.$case === 'statusUpdate' && p.value.status) states.push(p.value.status.state);
    }
    expect(states[states.length - 1]).toBe(TaskState.TASK_STATE_COMPLETED);
  });

  it('push-config calls: create, get, list, delete (secrets never echoed)', async () => {
    const client = await sdkClient(binding);
    const res = await client.sendMessage(sdkSendParams(sdkText('p', { metadata: { skill: 'echo' } })));
    const taskId = (res as { id: string }).id;
    const created = await client.createTaskPushNotificationConfig({
      tenant: '',
      id: 'hook',
      taskId,
      url: 'https://hooks.example/a2a',
      token: 'secret-token',
      authentication: undefined,
    });
    expect(created).toMatchObject({ id: 'hook', taskId, url: 'https://hooks.example/a2a', token: '' });
    const got = await client.getTaskPushNotificationConfig({ tenant: '', taskId, id: 'hook' });
    expect(got.url).toBe('https://hooks.example/a2a');
    const list = await client.listTaskPushNotificationConfig({
      tenant: '',
      taskId,
      pageSize: 0,
      pageToken: '',
    });
    expect(list.configs.map((c) => c.id)).toEqual(['hook']);
    await client.deleteTaskPushNotificationConfig({ tenant: '', taskId, id: 'hook' });
    const after = await client.listTaskPushNotificationConfig({
      tenant: '',
      taskId,
      pageSize: 0,
      pageToken: '',
    });
    expect(after.configs).toEqual([]);
  });
});
