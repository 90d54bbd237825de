// Request headers are bounded alike on every binding: the HTTP bindings
// answer 431 above Node's `http.maxHeaderSize` (16 KiB), and the gRPC binding
// refuses metadata above the same bound, at HTTP/2 (SETTINGS_MAX_HEADER_LIST_SIZE,
// enforced by Node as the header block is decoded) and, for the streams a
// client opens before acknowledging that setting, before the request message
// is read. Nothing runs and no task is created; Weave's client reads the
// refusal as HEADERS_TOO_LARGE. Streams per connection are bounded as on the
// HTTP bindings (MAX_CONCURRENT_STREAMS): grpc-js advertises no bound and lifts
// Node's session memory cap, so a client opening calls that never sent their
// message grew the server's heap without end (100 000 streams: +400 MB).
// Real mTLS with dev-CA SVIDs, the agent on fastify and grpc-js, raw HTTP/2
// clients (and raw frames) for what grpc-js's client never does.
import { connect, type ClientHttp2Session, type IncomingHttpHeaders } from 'node:http2';
import { maxHeaderSize } from 'node:http';
import { once } from 'node:events';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAX_CONCURRENT_STREAMS } from '@weave/transport';
import { floodStreams, type StreamFlood } from '@weave/test-support/h2-flood';
import { SEND_MESSAGE_HEADERS, sendMessageBody } from './helpers/grpc-raw.js';
import type { A2AGrpcServer } from '../src/index.js';
import { a2aGrpcService } from '../src/grpc/index.js';
import { startEchoEverywhere, type EchoEverywhere, type Harness } from './helpers/agents.js';

const KiB = 1024;

let h: Harness;
let grpc: A2AGrpcServer;
let client: EchoEverywhere['client'];
let close: EchoEverywhere['close'] | undefined;
const ran: string[] = [];

beforeAll(async () => {
  ({ h, grpc, client, close } = await startEchoEverywhere(ran));
});

afterAll(() => close?.());

/** The caller's tasks, as the agent lists them. */
async function taskCount(): Promise<number> {
  return (await client('JSONRPC').listTasks(h.url, { pageSize: 100 })).tasks.length;
}

/** An HTTP/2 session to the gRPC port with the caller's SVID, the server's SPIFFE ID verified. */
function session(): ClientHttp2Session {
  const o = h.agent.tlsClientOptions();
  const s = connect(`https://${grpc.url as string}`, {
    ...o,
    ALPNProtocols: ['h2'],
    // The server is known by its SPIFFE ID, not by name (an IP address is no SNI name).
    servername: 'localhost',
    // Node's client would refuse to send a header block over 64 KiB itself.
    maxSendHeaderBlockLength: 1024 * KiB,
  });
  s.on('error', () => undefined);
  return s;
}

interface RawOutcome {
  /** RST_STREAM code (0 when the stream ended normally). */
  rstCode: number;
  /** `grpc-status` of the answer, when one came. */
  grpcStatus?: string;
  grpcMessage?: string;
}

/** A SendMessage as grpc-js would send it, with one extra metadata entry of `bytes` bytes. */
function rawSendMessage(s: ClientHttp2Session, bytes: number): Promise<RawOutcome> {
  const req = s.request({
    ':method': 'POST',
    ':path': a2aGrpcService().SendMessage.path,
    'content-type': 'application/grpc',
    te: 'trailers',
    'a2a-version': '1.0',
    'x-big': 'a'.repeat(bytes),
  });
  let answer: IncomingHttpHeaders = {};
  req.on('response', (headers) => (answer = { ...answer, ...headers }));
  req.on('trailers', (trailers) => (answer = { ...answer, ...trailers }));
  req.on('error', () => undefined);
  req.resume();
  req.end(sendMessageBody('raw'));
  return new Promise<void>((resolve) => req.once('close', resolve)).then(() => ({
    rstCode: req.rstCode ?? 0,
    ...(answer['grpc-status'] !== undefined ? { grpcStatus: String(answer['grpc-status']) } : {}),
    ...(answer['grpc-message'] !== undefined
      ? { grpcMessage: decodeURIComponent(String(answer['grpc-message'])) }
      : {}),
  }));
}

describe('request headers over the HTTP bindings’ bound', () => {
  it('is the same 16 KiB on every binding', () => {
    expect(maxHeaderSize).toBe(16 * KiB);
  });

  it('gRPC metadata over it is refused (HEADERS_TOO_LARGE), runs nothing and creates no task, as HTTP’s 431 does; just under it is served', async () => {
    const tasks = await taskCount();
    const before = ran.length;
    for (const binding of ['GRPC', 'JSONRPC', 'HTTP+JSON']) {
      const err = await client(binding)
        .sendTask(h.url, 'echo', 'big', { headers: { 'x-big': 'a'.repeat(16 * KiB) } })
        .catch((e: unknown) => e);
      expect(err, binding).toBeInstanceOf(Error);
      if (binding === 'GRPC') {
        expect(err).toMatchObject({ code: 'HEADERS_TOO_LARGE' });
        expect((err as Error).message).toMatch(
          /headers \(gRPC metadata\) are larger than the server accepts/,
        );
      }
    }
    expect(ran.length).toBe(before);
    expect(await taskCount()).toBe(tasks);
    for (const binding of ['GRPC', 'JSONRPC', 'HTTP+JSON']) {
      const task = await client(binding).sendTask(h.url, 'echo', 'under', {
        headers: { 'x-big': 'a'.repeat(15 * KiB) },
      });
      expect(task.status.state, binding).toBe('TASK_STATE_COMPLETED');
    }
    expect(ran.length).toBe(before + 3);
  });

  it('is HTTP/2’s own bound: advertised in SETTINGS, and a header block over it is reset as it is decoded, before grpc-js sees a call', async () => {
    const s = session();
    try {
      await once(s, 'remoteSettings');
      expect(s.remoteSettings.maxHeaderListSize).toBe(maxHeaderSize);
      // A PING answered: the server has read the acknowledgement sent before it, so the next streams are under the bound.
      await new Promise((resolve) => s.ping(resolve));
      const before = ran.length;
      const over = await rawSendMessage(s, 16 * KiB);
      expect(over).toEqual({ rstCode: 11 }); // ENHANCE_YOUR_CALM, no answer
      expect(ran.length).toBe(before);
      const under = await rawSendMessage(s, 15 * KiB);
      expect(under).toMatchObject({ rstCode: 0, grpcStatus: '0' });
      expect(ran.length).toBe(before + 1);
    } finally {
      s.close();
    }
  });

  it('a call sent before the client acknowledged that setting is refused too, before its message is read', async () => {
    const tasks = await taskCount();
    const before = ran.length;
    // The request goes out with the connection preface, before the server's SETTINGS can be acknowledged.
    const s = session();
    try {
      const first = await rawSendMessage(s, 64 * KiB);
      expect(first).toMatchObject({
        grpcStatus: '8', // RESOURCE_EXHAUSTED
        grpcMessage: expect.stringMatching(/^Received metadata larger than max \(\d+ vs 16384\)$/),
      });
      expect(ran.length).toBe(before);
      expect(await taskCount()).toBe(tasks);
    } finally {
      s.close();
    }
  });
});

/**
 * Opens `n` SendMessage calls whose message never comes on one connection,
 * then one complete SendMessage (see floodStreams).
 */
function flood(n: number): Promise<StreamFlood> {
  const [host, port] = (grpc.url as string).split(':') as [string, string];
  return floodStreams({
    connect: { ...h.agent.tlsClientOptions(), host, port: Number(port), servername: 'localhost' },
    streams: n,
    open: SEND_MESSAGE_HEADERS,
    last: { headers: SEND_MESSAGE_HEADERS, body: sendMessageBody('last') },
  });
}

describe('gRPC streams per connection', () => {
  it('are bounded at 1000, advertised, as on the HTTP bindings; the calls a client opens over it are refused and run nothing; other clients are served', async () => {
    const before = ran.length;
    const result = await flood(MAX_CONCURRENT_STREAMS + 200);
    expect(result.advertised).toBe(MAX_CONCURRENT_STREAMS);
    // Refused (REFUSED_STREAM), or the connection already closed for the streams refused before it.
    expect(result.lastAnswered).toBe(false);
    expect(result.refused > 0 || result.closed).toBe(true);
    expect(ran.length).toBe(before);

    // Another client, on its own connection, is answered.
    const task = await client('GRPC').sendTask(h.url, 'echo', 'after');
    expect(task.status.state).toBe('TASK_STATE_COMPLETED');
    expect(ran.length).toBe(before + 1);
  });
});
