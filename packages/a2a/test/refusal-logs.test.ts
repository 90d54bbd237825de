// What an operator sees of a refused request: one `debug` line per refusal,
// on each binding (JSON-RPC, HTTP+JSON, gRPC), naming the binding, the
// method when known, the A2A error, the verified caller and the connection's
// address, and a short reason; never what the request carried (a secret in
// its body stays out of the line). At most 10 such lines a minute, counted
// only when debug lines are written. A policy denial keeps its own line (a
// warning) and gets no second one. Before, a bad JSON body, an unknown skill
// or a body over the limit logged nothing at all, at any level. Real mTLS,
// real fastify and grpc-js servers on loopback.
import { Writable } from 'node:stream';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { pino, type Logger } from 'pino';
import { channel, type Workload } from '@weave/test-support';
import type { SecureChannel } from '@weave/transport';
import type { A2AGrpcServer, BindingName } from '../src/index.js';
import { serveEcho, serveGrpc, startHarness, type Harness } from './helpers/agents.js';
import {
  grpcBinding,
  jsonRpcBinding,
  refused,
  restBinding,
  type RawBinding,
} from './helpers/raw-bindings.js';

/** One pino record as written. */
interface LogLine {
  readonly level: number;
  readonly msg: string;
  readonly [field: string]: unknown;
}

const REFUSED = 'a2a: request refused';
const DENIED = 'a2a: call denied by policy';
const DEBUG = 20;
const MAX_BODY = 64 * 1024;
/** What each request carries that no log line may repeat. */
const SECRET = 'SECRET-BODY-TEXT-4f1c';

let h: Harness;
let grpc: A2AGrpcServer;
let stranger: Workload;
let strangerChannel: SecureChannel;
let logger: Logger;
const lines: LogLine[] = [];
/** Each test's refusals in a window of their own: the clock jumps past the last one's minute. */
let clock = Date.now();

beforeAll(async () => {
  h = await startHarness((a2a) => serveEcho(a2a), { limits: { maxBodyBytes: MAX_BODY } });
  grpc = await serveGrpc(h);
  stranger = await h.pki.workload('/agent/stranger');
  strangerChannel = channel(stranger, h.serverId);
  logger = pino(
    { level: 'debug' },
    new Writable({
      write(chunk: Buffer, _enc, cb) {
        // pino writes one record per write call.
        lines.push(JSON.parse(chunk.toString('utf8')) as LogLine);
        cb();
      },
    }),
  );
  // In place of the fastify logger the server gave it at mount.
  h.a2a.handler.setLogger(logger);
});

afterAll(async () => {
  await grpc?.close(0);
  await strangerChannel?.close();
  await h?.close();
});

beforeEach(() => {
  lines.length = 0;
  logger.level = 'debug';
  clock += 61_000;
  vi.useFakeTimers({ toFake: ['Date'], now: clock });
});
afterEach(() => {
  vi.useRealTimers();
});

const bindings: BindingName[] = ['JSONRPC', 'HTTP+JSON', 'GRPC'];

function bindingOf(name: BindingName, as: 'client' | 'stranger' = 'client'): RawBinding {
  const ch = as === 'client' ? h.agent : strangerChannel;
  if (name === 'JSONRPC') return jsonRpcBinding(h.url, ch);
  if (name === 'HTTP+JSON') return restBinding(h.url, ch);
  return grpcBinding(grpc.url as string, as === 'client' ? h.client : stranger, h.serverId);
}

const send = (skill: string, text = SECRET) => ({
  message: {
    messageId: `m-${Math.random().toString(36).slice(2)}`,
    role: 'ROLE_USER',
    parts: [{ text }],
    metadata: { skill },
  },
});

const refusedLines = (): LogLine[] => lines.filter((l) => l.msg === REFUSED);

/** The one refusal line logged since the test began: its fields, and nothing of the body. */
function theRefusal(): LogLine {
  const logged = refusedLines();
  expect(logged).toHaveLength(1);
  const line = logged[0] as LogLine;
  expect(line.level).toBe(DEBUG);
  expect(JSON.stringify(lines)).not.toContain(SECRET);
  return line;
}

/** A raw HTTP request from the allowed client: what no raw binding client sends (bad JSON, a large body). */
async function post(path: string, body: string): Promise<number> {
  const res = await h.agent.request({
    origin: h.url,
    method: 'POST',
    path,
    headers: { 'content-type': 'application/json', 'a2a-version': '1.0' },
    body,
  });
  await res.body.text();
  return res.statusCode;
}

/** A JSON text that fails to parse well after the secret it carries (so no parse excerpt holds it). */
const BAD_JSON = `${JSON.stringify({
  jsonrpc: '2.0',
  id: 1,
  method: 'SendMessage',
  params: { message: { parts: [{ text: SECRET }], pad: 'p'.repeat(200) } },
}).slice(0, -1)}!`;

describe.each(bindings)('refusals on %s', (binding) => {
  it('an unknown skill: one debug line with the binding, method, error, caller and address', async () => {
    const b = bindingOf(binding);
    try {
      const err = refused(await b.call('SendMessage', send('nope')));
      expect(err.code).toBe('INVALID_PARAMS');
    } finally {
      b.close();
    }
    const line = theRefusal();
    expect(line).toMatchObject({
      binding,
      method: 'SendMessage',
      code: 'INVALID_PARAMS',
      jsonRpcCode: -32602,
      caller: h.clientId.toString(),
      remoteAddress: '127.0.0.1',
    });
    expect(line.remotePort).toEqual(expect.any(Number));
    expect(line.reason).toMatch(/unknown skill "nope"/);
  });

  it('a version the binding does not speak: one debug line', async () => {
    const b = bindingOf(binding);
    try {
      // JSON-RPC speaks 0.3 and 1.0, the others 1.0 only.
      const err = refused(await b.call('GetTask', { id: 'x' }, { 'a2a-version': '7.0' }));
      expect(err.code).toBe('VERSION_NOT_SUPPORTED');
    } finally {
      b.close();
    }
    expect(theRefusal()).toMatchObject({
      binding,
      method: 'GetTask',
      code: 'VERSION_NOT_SUPPORTED',
      jsonRpcCode: -32009,
      caller: h.clientId.toString(),
      remoteAddress: '127.0.0.1',
    });
  });

  it('a policy denial keeps its own warning and gets no second line', async () => {
    const b = bindingOf(binding, 'stranger');
    try {
      const err = refused(await b.call('SendMessage', send('echo')));
      expect(err.code).toBe('PERMISSION_DENIED');
    } finally {
      b.close();
    }
    expect(refusedLines()).toEqual([]);
    const denied = lines.filter((l) => l.msg === DENIED);
    expect(denied).toHaveLength(1);
    expect(denied[0]).toMatchObject({ binding, method: 'SendMessage', caller: stranger.id.toString() });
    expect(JSON.stringify(lines)).not.toContain(SECRET);
  });
});

describe('refusals before the method is read (HTTP bindings)', () => {
  it('a body that is not JSON on JSON-RPC: PARSE_ERROR, no method', async () => {
    expect(await post('/', BAD_JSON)).toBe(200);
    const line = theRefusal();
    expect(line).toMatchObject({
      binding: 'JSONRPC',
      code: 'PARSE_ERROR',
      jsonRpcCode: -32700,
      caller: h.clientId.toString(),
      remoteAddress: '127.0.0.1',
    });
    expect(line.method).toBeUndefined();
  });

  it('a body that is not JSON on HTTP+JSON: PARSE_ERROR, the route’s method', async () => {
    expect(await post('/message:send', BAD_JSON)).toBe(400);
    expect(theRefusal()).toMatchObject({
      binding: 'HTTP+JSON',
      method: 'SendMessage',
      code: 'PARSE_ERROR',
      caller: h.clientId.toString(),
      remoteAddress: '127.0.0.1',
    });
  });

  it('a body over maxBodyBytes: PAYLOAD_TOO_LARGE, one line', async () => {
    const params = send('echo', `${SECRET}${'x'.repeat(2 * MAX_BODY)}`);
    expect(await post('/', JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'SendMessage', params }))).toBe(
      413,
    );
    // Refused by the server before any binding reads it: who sent it is in the line all the same.
    expect(theRefusal()).toMatchObject({
      binding: 'JSONRPC',
      code: 'PAYLOAD_TOO_LARGE',
      caller: h.clientId.toString(),
      remoteAddress: '127.0.0.1',
    });
  });
});

describe('volume', () => {
  it('at most 10 lines a minute; the next window says how many were dropped', async () => {
    const b = bindingOf('JSONRPC');
    try {
      for (let i = 0; i < 13; i++) refused(await b.call('SendMessage', send('nope')));
      expect(refusedLines()).toHaveLength(10);
      vi.setSystemTime(clock + 61_000);
      refused(await b.call('SendMessage', send('nope')));
    } finally {
      b.close();
    }
    const logged = refusedLines();
    expect(logged).toHaveLength(11);
    expect(logged[10]?.suppressed).toBe(3);
    expect(JSON.stringify(lines)).not.toContain(SECRET);
  });

  it('refusals while debug lines are off are neither written nor counted as dropped', async () => {
    const b = bindingOf('HTTP+JSON');
    try {
      logger.level = 'info';
      for (let i = 0; i < 12; i++) refused(await b.call('SendMessage', send('nope')));
      expect(refusedLines()).toEqual([]);
      logger.level = 'debug';
      refused(await b.call('SendMessage', send('nope')));
    } finally {
      b.close();
    }
    const line = theRefusal();
    expect(line.suppressed).toBeUndefined();
  });
});
