// A request the server refuses for its size reads the same through A2AClient
// on every binding, as the server refuses it the same: a message over the
// handler's maxBodyBytes (HTTP 413; gRPC: grpc-js's RESOURCE_EXHAUSTED, which
// the gRPC client reported as TRANSPORT_FAILED) is the A2A error
// PAYLOAD_TOO_LARGE; headers over Node's `http.maxHeaderSize` (HTTP 431, which
// the HTTP clients reported as INVALID_RESPONSE; gRPC: a reset or
// RESOURCE_EXHAUSTED) are the A2AClientError HEADERS_TOO_LARGE, and so are
// the HTTP bindings' refusals over HTTP/2 (a 431, or a stream reset once the
// client has the server's SETTINGS). Nothing runs and no task is created.
// Real mTLS with dev-CA SVIDs, the agent on @weave/transport's fastify and
// grpc-js.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AllowAllEnforcer } from '@weave/authz';
import { authorizeMemberOf, type SpiffeId } from '@weave/identity';
import { createMtlsServer, type MtlsFastifyInstance } from '@weave/transport/server';
import { baseUrl, channel, TRUST_DOMAIN } from '@weave/test-support';
import type { SecureChannel } from '@weave/transport';
import {
  type A2AClient,
  A2AClientError,
  A2AError,
  A2AServer,
  buildMessage,
  jsonRpcTransportFactory,
  restTransportFactory,
} from '../src/index.js';
import { serveEcho, startEchoEverywhere, type EchoEverywhere, type Harness } from './helpers/agents.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const BINDINGS = ['JSONRPC', 'HTTP+JSON', 'GRPC'] as const;

let h: Harness;
let client: EchoEverywhere['client'];
let close: EchoEverywhere['close'] | undefined;
const ran: string[] = [];

beforeAll(async () => {
  ({ h, client, close } = await startEchoEverywhere(ran));
});

afterAll(() => close?.());

/** The caller's tasks, as the agent lists them. */
async function taskCount(): Promise<number> {
  return (await client('JSONRPC').listTasks(h.url, { pageSize: 100 })).tasks.length;
}

interface Send {
  text: string;
  headers?: Record<string, string>;
}

/** The error of a SendMessage to `url`, unary or streaming (SendStreamingMessage); what came if none. */
function failure(c: A2AClient, url: string, how: 'unary' | 'stream', send: Send): Promise<unknown> {
  const options = send.headers ? { headers: send.headers } : {};
  if (how === 'unary') return c.sendTask(url, 'echo', send.text, options).catch((e: unknown) => e);
  return (async () => {
    const events: unknown[] = [];
    for await (const e of c.sendStreamingMessage(
      url,
      { message: buildMessage('echo', send.text) },
      options,
    )) {
      events.push(e);
    }
    return events;
  })().catch((e: unknown) => e);
}

/** What the A2AError of a 413 is on the HTTP bindings: code, JSON-RPC code and the ErrorInfo with the bound. */
function expectPayloadTooLarge(err: unknown, where: string): void {
  expect(err, where).toBeInstanceOf(A2AError);
  expect(err, where).toMatchObject({
    code: 'PAYLOAD_TOO_LARGE',
    jsonRpcCode: -32600,
    data: [expect.objectContaining({ reason: 'PAYLOAD_TOO_LARGE', metadata: { limit: String(MiB) } })],
  });
}

function expectHeadersTooLarge(err: unknown, where: string): void {
  expect(err, where).toBeInstanceOf(A2AClientError);
  expect(err, where).toMatchObject({ code: 'HEADERS_TOO_LARGE' });
  expect((err as Error).message, where).toMatch(/refused: its headers .*are larger than the server accepts/);
}

const CASES: Array<{ name: string; send: Send; expectError: (err: unknown, where: string) => void }> = [
  {
    name: 'a message just over maxBodyBytes (1 MiB): PAYLOAD_TOO_LARGE, the A2AError of the HTTP bindings’ 413',
    send: { text: 'x'.repeat(MiB + 1) },
    expectError: expectPayloadTooLarge,
  },
  {
    name: 'a 5 MiB message: PAYLOAD_TOO_LARGE',
    send: { text: 'x'.repeat(5 * MiB) },
    expectError: expectPayloadTooLarge,
  },
  {
    name: 'headers over http.maxHeaderSize (16 KiB): HEADERS_TOO_LARGE, as HTTP’s 431',
    send: { text: 'x', headers: { 'x-big': 'a'.repeat(16 * KiB) } },
    expectError: expectHeadersTooLarge,
  },
];

describe('a request refused for its size reads the same on every binding; nothing runs, no task is created', () => {
  for (const { name, send, expectError } of CASES) {
    it(name, async () => {
      const tasks = await taskCount();
      const before = ran.length;
      for (const binding of BINDINGS) {
        for (const how of ['unary', 'stream'] as const) {
          expectError(await failure(client(binding), h.url, how, send), `${binding} ${how}`);
        }
      }
      expect(ran.length).toBe(before);
      expect(await taskCount()).toBe(tasks);
    });
  }

  it('just under both bounds is served on every binding', async () => {
    const before = ran.length;
    for (const binding of BINDINGS) {
      const task = await client(binding).sendTask(h.url, 'echo', 'x'.repeat(MiB - 4 * KiB), {
        headers: { 'x-big': 'a'.repeat(15 * KiB) },
      });
      expect(task.status.state, binding).toBe('TASK_STATE_COMPLETED');
    }
    expect(ran.length).toBe(before + BINDINGS.length);
  });
});

describe('the HTTP bindings over HTTP/2: headers over the bound are HEADERS_TOO_LARGE too', () => {
  let app: MtlsFastifyInstance;
  let a2a: A2AServer;
  let url: string;
  let serverId: SpiffeId;
  const ranH2: string[] = [];
  const channels: SecureChannel[] = [];

  beforeAll(async () => {
    const server = await h.pki.workload('/agent/h2');
    serverId = server.id;
    a2a = new A2AServer({
      card: { name: 'h2', description: 'size refusals over HTTP/2', version: '1.0.0' },
      selfId: server.id,
      enforcer: new AllowAllEnforcer({ audit: { record: () => undefined } }),
      heartbeatMs: 0,
    });
    serveEcho(a2a, ranH2);
    app = createMtlsServer({
      identity: server.identity,
      authorize: authorizeMemberOf(TRUST_DOMAIN),
      config: { httpVersion: 'http2' },
    });
    await app.register(a2a.plugin);
    await app.listen({ port: 0, host: '127.0.0.1' });
    url = baseUrl(app);
  });

  afterAll(async () => {
    await Promise.all(channels.map((c) => c.close()));
    await a2a.close();
    await app.close();
  });

  function h2Channel(): SecureChannel {
    const c = channel(h.client, serverId, { httpVersion: 'http2' });
    channels.push(c);
    return c;
  }

  it('the first request of a connection (answered 431) and a later one (reset by HTTP/2); nothing runs', async () => {
    const card = await client('JSONRPC', h2Channel()).discoverAgent(url);
    const big = { 'x-big': 'a'.repeat(16 * KiB) };
    const factories = [jsonRpcTransportFactory, restTransportFactory];
    for (const factory of factories) {
      const binding = factory.protocolBinding;
      const iface = card.supportedInterfaces.find((i) => i.protocolBinding === binding);
      if (iface === undefined) throw new Error(`the card offers no ${binding}`);
      const ch = h2Channel();
      // The channel's first request goes out with the connection preface, before
      // the client has acknowledged the server's SETTINGS, which Node holds it to
      // only after: @weave/transport's server answers it 431.
      const transport = factory.create(iface, { dispatcher: ch, headers: {}, maxResponseBytes: MiB });
      const first = await transport
        .call('SendMessage', { message: buildMessage('echo', 'x') }, { headers: big, timeoutMs: 5000 })
        .catch((e: unknown) => e);
      expectHeadersTooLarge(first, `${binding} first`);
      expect((first as Error).cause, `${binding} first: a 431, not a reset`).toBeUndefined();
      // Later requests on that connection are held to the advertised setting: reset.
      const c = client(binding, ch);
      expect((await c.sendTask(url, 'echo', 'ok')).status.state, binding).toBe('TASK_STATE_COMPLETED');
      for (const how of ['unary', 'stream'] as const) {
        const later = await failure(c, url, how, { text: 'x', headers: big });
        expectHeadersTooLarge(later, `${binding} ${how} later`);
        expect((later as Error).cause, `${binding} ${how} later`).toMatchObject({
          code: 'ERR_HTTP2_STREAM_ERROR',
          message: expect.stringContaining('NGHTTP2_ENHANCE_YOUR_CALM'),
        });
      }
    }
    expect(ranH2).toHaveLength(factories.length);
  });
});
