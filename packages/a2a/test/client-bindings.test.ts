// Weave's A2AClient drives the official @a2a-js/sdk 1.3 server on each of
// its bindings — JSON-RPC, HTTP+JSON and gRPC — over real mTLS with dev-CA
// SVIDs: send, stream, get, list, cancel, subscribe and the push-config calls.
// The binding comes from the card (the caller's preference order); the same
// suite runs on each.
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { DevCaIdentityProvider } from '@weave/identity/dev';
import { PeerVerificationError, type SecureChannel } from '@weave/transport';
import {
  A2AClient,
  buildMessage,
  grpcTransportFactory,
  jsonRpcTransportFactory,
  restTransportFactory,
  type StreamEvent,
} from '../src/index.js';
import { channel, createPki, fetchOver, type Pki, type Workload } from '@weave/test-support';
import { startSdkServer, type SdkBinding, type SdkServer } from './helpers/sdk-server.js';
import { sdkEventKind as kind } from '@weave/test-support/a2a-sdk';

const ALL: readonly SdkBinding[] = ['JSONRPC', 'HTTP+JSON', 'GRPC'];

let pki: Pki;
let serverId: Workload;
let me: Workload;
let sdk: SdkServer;
let ch: SecureChannel;
const clients: A2AClient[] = [];

function client(preferred?: readonly string[]): A2AClient {
  const c = new A2AClient({ dispatcher: ch, ...(preferred ? { preferredBindings: preferred } : {}) });
  clients.push(c);
  return c;
}

beforeAll(async () => {
  pki = await createPki();
  serverId = await pki.workload('/agent/sdk-server');
  me = await pki.workload('/agent/client');
  sdk = await startSdkServer(serverId, ALL);
  ch = channel(me, serverId.id);
});

afterAll(async () => {
  await Promise.all(clients.map((c) => c.close()));
  await ch.close();
  await sdk.close();
  await pki.close();
});

describe('the binding is chosen from the card', () => {
  it("takes the card's order by default and the caller's preference when given", async () => {
    expect((await client().discoverAgent(sdk.url)).name).toBe('sdk agent');
    expect((await client().transportFor(sdk.url)).protocolBinding).toBe('JSONRPC');
    expect((await client(['GRPC', 'JSONRPC']).transportFor(sdk.url)).protocolBinding).toBe('GRPC');
    expect((await client(['http+json']).transportFor(sdk.url)).protocolBinding).toBe('HTTP+JSON');
    await expect(client(['SOAP']).transportFor(sdk.url)).rejects.toMatchObject({
      code: 'NO_COMPATIBLE_INTERFACE',
    });
  });

  it('skips gRPC when the dispatcher is not a SecureChannel (no mTLS credentials to take)', async () => {
    const { Agent } = await import('undici');
    const plain = new Agent();
    try {
      const c = new A2AClient({ dispatcher: plain, preferredBindings: ['GRPC'] });
      // The card cannot even be fetched without client certificates; the choice is what is tested.
      await expect(c.transportFor(sdk.url)).rejects.toBeTruthy();
    } finally {
      await plain.close();
    }
  });
});

describe.each(ALL)('Weave client → official SDK server over %s (mTLS)', (binding) => {
  let weave: A2AClient;
  beforeAll(() => {
    weave = client([binding]);
  });

  it('uses that binding', async () => {
    expect((await weave.transportFor(sdk.url)).protocolBinding).toBe(binding);
  });

  it('sends, gets and lists', async () => {
    const before = sdk.callers[binding].length;
    const task = await weave.sendTask(sdk.url, 'echo', 'hello');
    expect(task.status.state).toBe('TASK_STATE_COMPLETED');
    expect(task.artifacts?.[0]?.parts[0]?.text).toBe('sdk echo: hello');
    const got = await weave.getTask(sdk.url, task.id, 1);
    expect(got.id).toBe(task.id);
    expect(got.status.state).toBe('TASK_STATE_COMPLETED');
    const list = await weave.listTasks(sdk.url, { pageSize: 50, includeArtifacts: true });
    expect(list.tasks.map((t) => t.id)).toContain(task.id);
    // Every request came over this binding from our SPIFFE ID.
    const seen = sdk.callers[binding].slice(before);
    expect(seen.length).toBeGreaterThanOrEqual(3);
    expect(new Set(seen)).toEqual(new Set([me.id.toString()]));
  });

  it('sends a large input with multi-byte text whole (sent as bytes above 16 K characters)', async () => {
    const text = 'é€😀x'.repeat(4_000);
    const task = await weave.sendTask(sdk.url, 'echo', text);
    expect(task.artifacts?.[0]?.parts[0]?.text).toBe(`sdk echo: ${text}`);
  });

  it('streams a task to completion', async () => {
    const events: StreamEvent[] = [];
    for await (const e of weave.sendStreamingMessage(sdk.url, buildMessage('echo', 'streamed')))
      events.push(e);
    expect(events.map(kind)).toEqual(['task', 'statusUpdate', 'artifactUpdate', 'statusUpdate']);
    const last = events.at(-1);
    expect(last && 'statusUpdate' in last && last.statusUpdate.status.state).toBe('TASK_STATE_COMPLETED');
  });

  it('subscribes to a running task and cancels it; the subscriber sees the cancellation', async () => {
    let taskId = '';
    const opened: StreamEvent[] = [];
    for await (const e of weave.sendStreamingMessage(sdk.url, buildMessage('echo', 'slow'))) {
      opened.push(e);
      if ('task' in e) taskId = e.task.id;
      if ('statusUpdate' in e && e.statusUpdate.status.state === 'TASK_STATE_WORKING') break;
    }
    expect(opened.map(kind)).toEqual(['task', 'statusUpdate']);
    expect(taskId).not.toBe('');
    const sub = weave.subscribeToTask(sdk.url, taskId);
    const first = await sub.next();
    expect(kind(first.value as object)).toBe('task');
    const canceled = await weave.cancelTask(sdk.url, taskId);
    expect(canceled.status.state).toBe('TASK_STATE_CANCELED');
    const rest: StreamEvent[] = [];
    for await (const e of sub) rest.push(e);
    expect(
      rest.some((e) => 'statusUpdate' in e && e.statusUpdate.status.state === 'TASK_STATE_CANCELED'),
    ).toBe(true);
  });

  it('answers a multi-turn task: INPUT_REQUIRED, then the reply completes it', async () => {
    const asked = await weave.sendTask(sdk.url, 'echo', 'ask');
    expect(asked.status.state).toBe('TASK_STATE_INPUT_REQUIRED');
    const reply = buildMessage('echo', 'here you go');
    const r = await weave.sendMessage(sdk.url, {
      message: { ...reply, taskId: asked.id, contextId: asked.contextId },
    });
    expect('task' in r && r.task.status.state).toBe('TASK_STATE_COMPLETED');
  });

  it('creates, gets, lists and deletes push configs', async () => {
    const task = await weave.sendTask(sdk.url, 'echo', 'push me');
    const hook = 'https://hooks.example/a2a';
    const created = await weave.createTaskPushNotificationConfig(sdk.url, {
      taskId: task.id,
      id: `cfg-${binding}`,
      url: hook,
      token: 'tok',
    });
    expect(created).toMatchObject({ taskId: task.id, id: `cfg-${binding}`, url: hook });
    expect(await weave.getTaskPushNotificationConfig(sdk.url, task.id, `cfg-${binding}`)).toMatchObject({
      id: `cfg-${binding}`,
      url: hook,
    });
    const page = await weave.listTaskPushNotificationConfigs(sdk.url, task.id);
    expect(page.configs.map((c) => c.id)).toEqual([`cfg-${binding}`]);
    await expect(
      weave.deleteTaskPushNotificationConfig(sdk.url, task.id, `cfg-${binding}`),
    ).resolves.toBeUndefined();
    expect((await weave.listTaskPushNotificationConfigs(sdk.url, task.id)).configs).toEqual([]);
  });

  it('maps protocol errors to A2AError with the JSON-RPC code', async () => {
    await expect(weave.getTask(sdk.url, 'missing')).rejects.toMatchObject({
      name: 'A2AError',
      jsonRpcCode: -32001,
      code: 'TASK_NOT_FOUND',
    });
    const done = await weave.sendTask(sdk.url, 'echo', 'finished');
    await expect(weave.cancelTask(sdk.url, done.id)).rejects.toMatchObject({ jsonRpcCode: -32002 });
  });

  it('keeps an id inside its path segment (no route escapes)', async () => {
    await expect(weave.getTask(sdk.url, '../tasks?x=1/..%2F')).rejects.toMatchObject({ jsonRpcCode: -32001 });
  });
});

// A server with a valid SVID of the trust domain but not the SPIFFE ID the
// channel expects is refused in the TLS handshake on every binding, reported
// alike: TRANSPORT_FAILED whose cause is the PeerVerificationError, so a
// caller tells a wrong peer from a failed network whatever the binding.
describe('a server that proves another SPIFFE ID', () => {
  const factories = {
    JSONRPC: jsonRpcTransportFactory,
    'HTTP+JSON': restTransportFactory,
    GRPC: grpcTransportFactory,
  } as const;

  it.each(ALL)(
    '%s: refused before any request, the cause typed on every call; the handler does not run',
    async (binding) => {
      // The server at sdk.url proves serverId; this channel accepts only someone-else.
      const other = await pki.workload('/agent/someone-else');
      const wrong = channel(me, other.id);
      const iface = sdk.card.supportedInterfaces.find((i) => i.protocolBinding === binding)!;
      const t = factories[binding].create(iface, {
        dispatcher: wrong,
        headers: {},
        maxResponseBytes: 1 << 20,
      });
      const before = sdk.callers[binding].length;
      try {
        // The later calls too: gRPC, backing off after a refused handshake,
        // fails them at once without a new one.
        for (let i = 0; i < 3; i++) {
          if (i > 0) await new Promise((r) => setTimeout(r, 20));
          const err = (await t
            .call('GetTask', { id: 'x' }, { timeoutMs: 5000 })
            .catch((e: unknown) => e)) as Error;
          expect(err).toMatchObject({ name: 'A2AClientError', code: 'TRANSPORT_FAILED' });
          expect(err.cause).toBeInstanceOf(PeerVerificationError);
          expect(err.cause).toMatchObject({
            code: 'PEER_VERIFICATION_FAILED',
            expected: other.id.toString(),
          });
          expect((err.cause as PeerVerificationError).actual?.toString()).toBe(serverId.id.toString());
        }
        expect(sdk.callers[binding].length).toBe(before);
      } finally {
        await t.close();
        await wrong.close();
      }
    },
  );
});

describe('gRPC over the SPIFFE-verified channel', () => {
  it('an answer over the client’s own maxResponseBytes is RESPONSE_TOO_LARGE, not a refusal of the request', async () => {
    const c = new A2AClient({ dispatcher: ch, preferredBindings: ['GRPC'], maxResponseBytes: 64 * 1024 });
    clients.push(c);
    // The request (100 KB) is far under the server's bound; its echo is over the client's.
    const err = await c.sendTask(sdk.url, 'echo', 'x'.repeat(100_000)).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'RESPONSE_TOO_LARGE' });
  });

  it('follows SVID rotation: calls after it present the new SVID', async () => {
    const c = client(['GRPC']);
    await c.sendTask(sdk.url, 'echo', 'before');
    const serialBefore = sdk.grpcSerials.at(-1);
    const generation = ch.generation;
    await (me.identity as DevCaIdentityProvider).rotate();
    await vi.waitFor(() => expect(ch.generation).toBeGreaterThan(generation));
    const t = await c.sendTask(sdk.url, 'echo', 'after');
    expect(t.status.state).toBe('TASK_STATE_COMPLETED');
    expect(sdk.grpcSerials.at(-1)).not.toBe(serialBefore);
  });
});

// The official SDK's own client over the same server proves the server is
// set up right (so failures above are the Weave client's).
describe('control: the SDK server answers its own client over mTLS', () => {
  it('JSON-RPC card and send work with fetchOver', async () => {
    const res = await fetchOver(ch)(`${sdk.url}/.well-known/agent-card.json`);
    expect(res.status).toBe(200);
  });
});
