// Property-based fuzzing of a running A2AServer over mTLS on loopback (dev-CA
// SVIDs, SecureChannel): arbitrary and structurally mutated JSON-RPC bodies
// and HTTP+JSON requests (paths, methods, headers with A2A-Version, content
// types, bodies: deep nesting, huge numbers, wrong types, both proto field
// spellings, unicode, invalid UTF-8), and arbitrary or corrupted protobuf
// bytes to the gRPC binding. For every request: no 5xx (no gRPC INTERNAL or
// UNKNOWN), a well-formed error (a JSON-RPC error with a protocol code, or a
// §11.6 body whose code is the HTTP status), the handler never runs for a
// request that was refused, never for a caller the policy denies, and the
// server still answers a valid request afterwards. Cases: FUZZ_RUNS
// (@weave/test-support/fuzz).
import { Client, Metadata, type ServiceError } from '@grpc/grpc-js';
import fc from 'fast-check';
import { request, type Dispatcher } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { authorizeMemberOf } from '@weave/identity';
import { A2AErrorCode, A2AGrpcServer } from '../src/index.js';
import { a2aGrpcService } from '../src/grpc/index.js';
import { parseSse } from '../src/sse-parse.js';
import { startHarness, type Harness } from './helpers/agents.js';
import { TRUST_DOMAIN } from '@weave/test-support';
import { grpcCredentials } from './helpers/raw-bindings.js';
import { itHolds, nastyString } from '@weave/test-support/fuzz';
import { mutate, mutation, validCalls, wireJson, wireObject } from './helpers/wire-arbitraries.js';

let h: Harness;
/** Runs of the task handler: a refused request must not add one. */
let handlerRuns = 0;
let taskId: string;
let grpc: A2AGrpcServer;
/** A raw gRPC client (bytes in, bytes out) of the allowed caller and of the denied one. */
let grpcClients: { allowed: Client; denied: Client };

const PROTOCOL_CODES = new Set<number>(Object.values(A2AErrorCode));

interface Sent {
  readonly method: string;
  readonly path: string;
  readonly headers: Record<string, string>;
  readonly body?: string | Uint8Array;
}

interface Answer {
  readonly status: number;
  readonly contentType: string;
  readonly text: string;
}

/**
 * Requests still in flight. A property stopped by the fuzz command's time
 * bound leaves its last request running: the next property waits for it, or
 * that request's handler run would count against the next one.
 */
const inflight = new Set<Promise<unknown>>();

function tracked<T>(p: Promise<T>): Promise<T> {
  inflight.add(p);
  void p.then(
    () => inflight.delete(p),
    () => inflight.delete(p),
  );
  return p;
}

/** handlerRuns once every earlier request has finished. */
async function settledRuns(): Promise<number> {
  while (inflight.size > 0) await Promise.allSettled([...inflight]);
  return handlerRuns;
}

function send(dispatcher: Dispatcher, s: Sent): Promise<Answer> {
  return tracked(sendNow(dispatcher, s));
}

async function sendNow(dispatcher: Dispatcher, s: Sent): Promise<Answer> {
  const res = await request(`${h.url}${s.path}`, {
    method: s.method as Dispatcher.HttpMethod,
    dispatcher,
    headers: s.headers,
    ...(s.body === undefined ? {} : { body: s.body }),
    // A stream that never ends is a failure of the property, not a hang.
    signal: AbortSignal.timeout(20_000),
  });
  const text = Buffer.from(await res.body.arrayBuffer()).toString('utf8');
  const ct = res.headers['content-type'];
  return { status: res.statusCode, contentType: String(ct ?? ''), text };
}

/** A valid JSON-RPC SendMessage of the allowed caller; returns the task it created (completed by the handler). */
async function sendValid(text: string): Promise<{ id: string; state: string }> {
  const a = await send(h.agent, {
    method: 'POST',
    path: '/',
    headers: { 'content-type': 'application/json', 'a2a-version': '1.0' },
    body: JSON.stringify({
      jsonrpc: '2.0',
      id: text,
      method: 'SendMessage',
      params: { message: { messageId: text, role: 'ROLE_USER', parts: [{ text }] } },
    }),
  });
  expect(a.status).toBe(200);
  const task = (JSON.parse(a.text) as { result?: { task?: { id: string; status: { state: string } } } })
    .result?.task;
  return { id: task?.id ?? '', state: task?.status.state ?? '' };
}

/** The server must still run a valid request (and its handler) after any fuzzed one. */
async function assertStillServes(): Promise<void> {
  const before = handlerRuns;
  expect((await sendValid('still-serves')).state).toBe('TASK_STATE_COMPLETED');
  expect(handlerRuns).toBe(before + 1);
}

/** A JSON-RPC response object: `result` or an `error` carrying a protocol code. Returns whether it is an error. */
function checkRpcResponse(v: unknown): boolean {
  expect(v).toBeTypeOf('object');
  const r = v as { jsonrpc?: unknown; id?: unknown; result?: unknown; error?: unknown };
  expect(r.jsonrpc).toBe('2.0');
  expect(r.id === null || typeof r.id === 'string' || typeof r.id === 'number').toBe(true);
  expect('result' in r !== 'error' in r).toBe(true);
  if (!('error' in r)) return false;
  const e = r.error as { code?: unknown; message?: unknown };
  expect(PROTOCOL_CODES.has(e.code as number)).toBe(true);
  expect(typeof e.message).toBe('string');
  return true;
}

/** Events of an SSE answer, each checked as a JSON-RPC response (`rpc`) or a bare StreamResponse / §11.6 error. */
async function sseEvents(text: string): Promise<unknown[]> {
  const out: unknown[] = [];
  async function* once() {
    yield text;
  }
  for await (const e of parseSse(once(), 1 << 22)) out.push(JSON.parse(e.data));
  return out;
}

/**
 * A §11.6 error body whose code is the HTTP status and whose ErrorInfo names
 * a reason: also for what no route takes (a URL fastify cannot decode, a
 * method the binding has no route for, the body of such a request), which the
 * server answers in the binding's format too.
 */
function checkRestError(a: Answer): void {
  const body = JSON.parse(a.text) as {
    error?: { code?: unknown; status?: unknown; message?: unknown; details?: unknown };
  };
  expect(a.contentType).toMatch(/^application\/(a2a\+)?json/);
  expect(body.error?.code).toBe(a.status);
  expect(typeof body.error?.status).toBe('string');
  expect(typeof body.error?.message).toBe('string');
  expect(Array.isArray(body.error?.details)).toBe(true);
  const info = (body.error?.details as Array<{ reason?: unknown }>)[0];
  expect(typeof info?.reason).toBe('string');
}

// ---- arbitraries --------------------------------------------------------------------

/** Header values undici can send (visible ASCII and spaces). */
const headerText = fc.string({
  unit: fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c)),
  maxLength: 40,
});

/** A header's value: mostly one a client would send, else an odd one, else any visible text. */
const headerValue = (usual: string[], odd: string[]) =>
  fc.oneof({ weight: 5, arbitrary: fc.constantFrom(...usual) }, fc.constantFrom(...odd), headerText);

const contentType = headerValue(
  ['application/json', 'application/a2a+json'],
  [
    'application/json; charset=utf-8',
    'Application/JSON',
    'application/json;charset=latin1',
    'application/json, text/plain',
    'text/plain',
    'text/event-stream',
    'application/x-www-form-urlencoded',
    'multipart/form-data; boundary=x',
    'application/octet-stream',
    'application/',
    ';',
    '',
  ],
);

const version = headerValue(
  ['1.0', '0.3'],
  ['1', '1.0.7', '0.3.0', ' 1.0 ', '2.0', '0.2', '1.1', '', '01.0', '1.0, 0.3', '99999999999999999999.0'],
);

const headers: fc.Arbitrary<Record<string, string>> = fc
  .record(
    {
      'content-type': contentType,
      'a2a-version': version,
      'a2a-extensions': fc.oneof(headerText, fc.constant('https://weave.dev/a2a/extensions/spiffe-id/v1')),
      'last-event-id': fc.oneof(fc.constantFrom('0', '1', '-1', '999999999999999999999'), headerText),
      accept: fc.constantFrom('application/json', 'text/event-stream', '*/*'),
      'x-tenant': headerText,
    },
    { requiredKeys: [] },
  )
  .map((r) => r as Record<string, string>);

/** Invalid UTF-8: a lone continuation byte, an overlong '/', a truncated 3-byte sequence, 0xff. */
const badUtf8 = fc.constantFrom([0x80], [0xc0, 0xaf], [0xe2, 0x82], [0xff], [0xed, 0xa0, 0x80]);

/** A JSON text with a byte-level flaw spliced in at `at`. */
const spliced = (text: string) =>
  fc
    .tuple(
      fc.nat(),
      fc.oneof(
        badUtf8.map((b) => Buffer.from(b)),
        fc
          .constantFrom(
            '1e999',
            '-0',
            '123456789012345678901234567890',
            '"',
            '\\',
            '\\ud800',
            '{',
            ']',
            '\u0000',
            ',',
          )
          .map((s) => Buffer.from(s)),
        nastyString.map((s) => Buffer.from(s)),
      ),
    )
    .map(([at, junk]) => {
      const b = Buffer.from(text);
      const i = at % (b.length + 1);
      return Buffer.concat([b.subarray(0, i), junk, b.subarray(i)]);
    });

/** Deeply nested JSON text, around the depth limit and far past it. */
const deep = fc
  .tuple(fc.integer({ min: 30, max: 20_000 }), fc.boolean())
  .map(([n, obj]) => (obj ? `${'{"a":'.repeat(n)}1${'}'.repeat(n)}` : `${'['.repeat(n)}${']'.repeat(n)}`));

const rpcId = fc.oneof(
  fc.nat(),
  nastyString,
  fc.constant(null),
  fc.constant(1.5),
  fc.constant({}),
  fc.constant([1]),
);

/** JSON-RPC bodies: valid envelopes mutated anywhere, A2A-shaped params, raw flaws, arbitrary bytes. */
function rpcBody(): fc.Arbitrary<string | Uint8Array> {
  const calls = validCalls(taskId);
  const envelope = fc
    .tuple(fc.constantFrom(...calls), rpcId, fc.array(mutation, { maxLength: 3 }))
    .map(([c, id, ms]) => mutate({ jsonrpc: '2.0', id, method: c.method, params: c.params }, ms));
  return fc.oneof(
    { weight: 6, arbitrary: envelope.map((e) => JSON.stringify(e)) },
    {
      weight: 2,
      arbitrary: fc
        .tuple(fc.constantFrom(...calls), wireObject)
        .map(([c, p]) => JSON.stringify({ jsonrpc: '2.0', id: 1, method: c.method, params: p })),
    },
    { weight: 2, arbitrary: envelope.chain((e) => spliced(JSON.stringify(e))) },
    deep.map((d) => `{"jsonrpc":"2.0","id":1,"method":"SendMessage","params":{"message":${d}}}`),
    deep,
    wireJson(5).map((v) => JSON.stringify(v) ?? ''),
    fc.uint8Array({ maxLength: 200 }),
    nastyString,
  );
}

/** Every UTF-8 byte of `s` percent-encoded (a lone surrogate becomes U+FFFD, as on any wire). */
const pct = (s: string) => Buffer.from(s).toString('hex').replace(/../g, '%$&');

/** HTTP+JSON requests: every route with valid inputs, then the method, path, query and body mutated. */
function restRequest(): fc.Arbitrary<Omit<Sent, 'headers'>> {
  const message = { messageId: 'r', role: 'ROLE_USER', parts: [{ text: 'hi' }] };
  const routes: Array<{ method: string; segs: string[]; body?: Record<string, unknown>; query?: string }> = [
    { method: 'POST', segs: ['message:send'], body: { message } },
    {
      method: 'POST',
      segs: ['message:send'],
      body: { message, configuration: { return_immediately: true } },
    },
    { method: 'POST', segs: ['message:stream'], body: { message } },
    { method: 'GET', segs: ['tasks', taskId], query: 'historyLength=1' },
    { method: 'GET', segs: ['tasks'], query: 'pageSize=2&include_artifacts=true' },
    { method: 'POST', segs: ['tasks', `${taskId}:cancel`], body: {} },
    { method: 'GET', segs: ['tasks', `${taskId}:subscribe`] },
    { method: 'POST', segs: ['tasks', `${taskId}:subscribe`] },
    {
      method: 'POST',
      segs: ['tasks', taskId, 'pushNotificationConfigs'],
      body: { url: 'https://127.0.0.1:1/h' },
    },
    { method: 'GET', segs: ['tasks', taskId, 'pushNotificationConfigs'] },
    { method: 'GET', segs: ['tasks', taskId, 'pushNotificationConfigs', 'c'] },
    { method: 'DELETE', segs: ['tasks', taskId, 'pushNotificationConfigs', 'c'] },
    { method: 'GET', segs: ['extendedAgentCard'] },
  ];
  const segment = fc.oneof(
    fc.constantFrom(
      'tasks',
      'message:send',
      'message:stream',
      'extendedAgentCard',
      'pushNotificationConfigs',
      taskId,
      `${taskId}:cancel`,
      ':cancel',
      ':subscribe',
    ),
    nastyString.map(pct),
    fc.constantFrom('%', '%zz', '%ff', '%00', '%c0%af', '%2F', '..', '.', ';', '~'),
  );
  const query = fc
    .array(
      fc.tuple(
        fc.oneof(
          fc.constantFrom(
            'historyLength',
            'history_length',
            'pageSize',
            'page_size',
            'includeArtifacts',
            'include_artifacts',
            'pageToken',
            'tenant',
            'id',
            'status',
            '__proto__',
          ),
          nastyString,
        ),
        fc.oneof(fc.constantFrom('1', '-1', '0', '1e999', '99999999999', 'true', 'false', ''), nastyString),
      ),
      { maxLength: 4 },
    )
    .map((kv) => kv.map(([k, v]) => `${pct(k)}=${pct(v)}`).join('&'));
  return fc
    .record({
      route: fc.constantFrom(...routes),
      method: fc.option(fc.constantFrom('GET', 'POST', 'DELETE', 'PUT', 'PATCH', 'HEAD', 'OPTIONS'), {
        freq: 4,
        nil: undefined,
      }),
      tenant: fc.option(segment, { freq: 4, nil: undefined }),
      segEdits: fc.array(fc.tuple(fc.nat(), fc.option(segment, { nil: undefined })), { maxLength: 2 }),
      query: fc.option(query, { freq: 2, nil: undefined }),
      bodyMutations: fc.array(mutation, { maxLength: 3 }),
      rawBody: fc.option(
        fc.oneof(
          fc.uint8Array({ maxLength: 100 }),
          deep,
          nastyString,
          wireObject.map((o) => JSON.stringify(o)),
        ),
        { freq: 4, nil: undefined },
      ),
    })
    .chain((r) => {
      const segs = [...r.route.segs];
      for (const [at, seg] of r.segEdits) {
        const i = at % (segs.length + 1);
        if (seg === undefined) segs.splice(i, 1);
        else segs.splice(i, 0, seg);
      }
      if (r.tenant !== undefined) segs.unshift(r.tenant);
      const method = r.method ?? r.route.method;
      const q = r.query ?? r.route.query;
      const path = `/${segs.join('/')}${q ? `?${q}` : ''}`;
      const canHaveBody = method !== 'GET' && method !== 'HEAD';
      const base =
        r.route.body === undefined ? undefined : JSON.stringify(mutate(r.route.body, r.bodyMutations));
      const body = r.rawBody ?? base;
      if (!canHaveBody || body === undefined) return fc.constant({ method, path });
      // Sometimes the JSON text itself gets a flaw (invalid UTF-8, a huge number, a cut).
      return fc.oneof(
        { weight: 3, arbitrary: fc.constant({ method, path, body }) },
        typeof body === 'string'
          ? spliced(body).map((b) => ({ method, path, body: b }))
          : fc.constant({ method, path, body }),
      );
    });
}

interface GrpcRequest {
  readonly path: string;
  readonly stream: boolean;
  readonly bytes: Uint8Array;
  readonly version: string | undefined;
}

/** gRPC requests: each method's valid request encoded, then bytes flipped, cut or spliced; or any bytes; unknown paths. */
function grpcRequest(): fc.Arbitrary<GrpcRequest> {
  const methods = Object.values(a2aGrpcService());
  const message = { messageId: 'g', role: 'ROLE_USER', parts: [{ text: 'hi' }] };
  const valid: Record<string, unknown> = {
    SendMessage: { message },
    SendStreamingMessage: { message },
    GetTask: { id: taskId },
    ListTasks: {},
    CancelTask: { id: taskId },
    SubscribeToTask: { id: taskId },
    CreateTaskPushNotificationConfig: { taskId, url: 'https://127.0.0.1:1/h' },
    GetTaskPushNotificationConfig: { taskId, id: 'c' },
    ListTaskPushNotificationConfigs: { taskId },
    DeleteTaskPushNotificationConfig: { taskId, id: 'c' },
    GetExtendedAgentCard: {},
  };
  const edit = fc.tuple(
    fc.nat(),
    fc.constantFrom('flip', 'cut', 'insert'),
    fc.uint8Array({ minLength: 1, maxLength: 8 }),
  );
  return fc
    .record({
      method: fc.constantFrom(...methods),
      kind: fc.constantFrom('mutated', 'mutated', 'wire', 'bytes'),
      edits: fc.array(edit, { maxLength: 3 }),
      wire: wireObject,
      bytes: fc.uint8Array({ maxLength: 200 }),
      unknownPath: fc.option(fc.constantFrom('/lf.a2a.v1.A2AService/Nope', '/x.Y/Z'), {
        freq: 10,
        nil: undefined,
      }),
      version: fc.option(headerValue(['1.0'], ['0.3', '2.0', '']), { nil: undefined }),
    })
    .map((r) => {
      const name = r.method.originalName as string;
      let bytes: Uint8Array = r.bytes;
      if (r.kind !== 'bytes') {
        try {
          bytes = r.method.requestSerialize((r.kind === 'wire' ? r.wire : valid[name]) as never);
        } catch {
          // A wire object the encoder refuses: send the arbitrary bytes instead.
        }
      }
      if (r.kind === 'mutated') {
        for (const [at, op, junk] of r.edits) {
          const i = at % (bytes.length + 1);
          const b = Buffer.from(bytes);
          if (op === 'flip' && i < b.length) b[i] = (b[i] as number) ^ (junk[0] as number);
          bytes =
            op === 'cut'
              ? b.subarray(0, i)
              : op === 'insert'
                ? Buffer.concat([b.subarray(0, i), junk, b.subarray(i)])
                : b;
        }
      }
      return {
        path: r.unknownPath ?? r.method.path,
        stream: r.method.responseStream,
        bytes,
        version: r.version,
      };
    });
}

/** One raw gRPC call: the status code it ended with (0 = OK), and a unary call's response bytes. */
function grpcCall(client: Client, req: GrpcRequest): Promise<{ code: number; response?: Buffer }> {
  return tracked(grpcCallNow(client, req));
}

function grpcCallNow(client: Client, req: GrpcRequest): Promise<{ code: number; response?: Buffer }> {
  const md = new Metadata();
  if (req.version !== undefined) md.set('a2a-version', req.version);
  const same = (b: Buffer) => b;
  const deadline = Date.now() + 20_000;
  return new Promise((resolve) => {
    if (!req.stream) {
      client.makeUnaryRequest(
        req.path,
        same,
        same,
        Buffer.from(req.bytes),
        md,
        { deadline },
        (err: ServiceError | null, response?: Buffer) =>
          resolve(err ? { code: err.code } : { code: 0, ...(response ? { response } : {}) }),
      );
      return;
    }
    const call = client.makeServerStreamRequest(req.path, same, same, Buffer.from(req.bytes), md, {
      deadline,
    });
    call.on('data', () => undefined);
    // The final status, OK or not; 'error' repeats a failed one.
    call.on('error', () => undefined);
    call.on('status', (status: { code: number }) => resolve({ code: status.code }));
  });
}

// ---- properties -------------------------------------------------------------------------

beforeAll(async () => {
  h = await startHarness((a2a) => {
    a2a.registerTaskHandler('echo', () => {
      handlerRuns++;
      return 'ok';
    });
  });
  taskId = (await sendValid('seed')).id;
  grpc = new A2AGrpcServer({
    handler: h.a2a.handler,
    identity: h.server.identity,
    authorize: authorizeMemberOf(TRUST_DOMAIN),
  });
  const { url } = await grpc.listen();
  const stranger = await h.pki.workload('/agent/stranger');
  grpcClients = {
    allowed: new Client(url, grpcCredentials(h.client, h.serverId)),
    denied: new Client(url, grpcCredentials(stranger, h.serverId)),
  };
});

afterAll(async () => {
  grpcClients?.allowed.close();
  grpcClients?.denied.close();
  await grpc?.close(0);
  await h?.close();
});

/** Every 25th case and the last one also check that the server still serves. */
function everyFew(): () => Promise<void> {
  let n = 0;
  return async () => {
    if (++n % 25 === 0) await assertStillServes();
  };
}

/** An answer of the JSON-RPC endpoint: nothing (a notification), a stream of responses, or one response. */
async function checkRpcAnswer(a: Answer, before: number): Promise<void> {
  if (a.status === 204) {
    // A notification (no id): nothing runs, nothing is answered.
    expect(a.text).toBe('');
    expect(handlerRuns).toBe(before);
  } else if (a.contentType.startsWith('text/event-stream')) {
    const events = await sseEvents(a.text);
    expect(events.length).toBeGreaterThan(0);
    for (const e of events) checkRpcResponse(e);
  } else {
    expect(a.contentType).toMatch(/^application\/json/);
    if (checkRpcResponse(JSON.parse(a.text))) expect(handlerRuns).toBe(before);
  }
}

/**
 * Requests of the allowed caller: each answered below 500 and checked by
 * `check` (given handlerRuns from before it); every few, a valid request
 * must still be served.
 */
function allowedCaller<T extends Omit<Sent, 'headers'>>(
  requests: fc.Arbitrary<T>,
  check: (a: Answer, req: T, before: number) => Promise<void>,
): fc.IAsyncProperty<[T, Record<string, string>]> {
  const tick = everyFew();
  return fc.asyncProperty(requests, headers, async (req, hdrs) => {
    const before = await settledRuns();
    const a = await send(h.agent, { ...req, headers: hdrs });
    expect(a.status).toBeLessThan(500);
    await check(a, req, before);
    await tick();
  });
}

describe('fuzz: A2AServer over mTLS', () => {
  itHolds(
    'answers any JSON-RPC request below 500 with a result or a protocol error, and runs no handler for an error',
    'server-jsonrpc',
    () =>
      allowedCaller(
        rpcBody().map((body) => ({ method: 'POST', path: '/', body })),
        (a, _req, before) => checkRpcAnswer(a, before),
      ),
    80,
  );

  itHolds(
    'answers any HTTP+JSON request below 500, every error as a §11.6 body with its status, and runs no handler for an error',
    'server-rest',
    () =>
      allowedCaller(restRequest(), async (a, req, before) => {
        // The path as sent: the client resolves dot segments (`/..`, `/%2e%2e`) first.
        if (req.method === 'POST' && new URL(`${h.url}${req.path}`).pathname === '/') {
          // What is left of the path is the JSON-RPC endpoint's.
          await checkRpcAnswer(a, before);
        } else if (a.status >= 400) {
          expect(handlerRuns).toBe(before);
          if (req.method !== 'HEAD') checkRestError(a);
        } else if (a.contentType.startsWith('text/event-stream')) {
          const events = await sseEvents(a.text);
          expect(events.length).toBeGreaterThan(0);
        } else if (a.status !== 204 && req.method !== 'HEAD') {
          expect(a.contentType).toMatch(/^application\/(a2a\+)?json/);
          JSON.parse(a.text);
        }
      }),
    60,
  );

  itHolds(
    'never runs a handler or answers a result for a caller the policy denies, whatever it sends',
    'server-denied',
    () =>
      fc.asyncProperty(
        fc.oneof(
          rpcBody().map((body) => ({ method: 'POST', path: '/', body })),
          restRequest(),
        ),
        headers,
        async (req, hdrs) => {
          const before = await settledRuns();
          const a = await send(h.strangerAgent, { ...req, headers: hdrs });
          expect(a.status).toBeLessThan(500);
          expect(handlerRuns).toBe(before);
          if (a.status < 300 && a.status !== 204 && req.method !== 'HEAD') {
            // Only a refusal: never a result (not even an empty ListTasks), never a stream.
            expect(a.contentType).toMatch(/^application\/json/);
            const body = JSON.parse(a.text) as Record<string, unknown>;
            expect('jsonrpc' in body).toBe(true);
            expect(checkRpcResponse(body)).toBe(true);
          }
        },
      ),
    40,
  );

  itHolds(
    'answers any gRPC request bytes with a status that is not INTERNAL or UNKNOWN, and runs no handler for an error',
    'server-grpc',
    () =>
      fc.asyncProperty(grpcRequest(), fc.boolean(), async (req, denied) => {
        const before = await settledRuns();
        const r = await grpcCall(denied ? grpcClients.denied : grpcClients.allowed, req);
        if (r.code !== 0) {
          // 2 UNKNOWN and 13 INTERNAL are what a crash in a handler or a decoder turns into.
          expect([2, 13]).not.toContain(r.code);
          expect(handlerRuns).toBe(before);
        }
        if (denied) {
          // As over HTTP: a refusal, never an answer (not even an empty ListTasks).
          expect(handlerRuns).toBe(before);
          expect(r.code).not.toBe(0);
        }
      }),
    40,
  );

  it('still serves a valid request after the fuzzing', () => assertStillServes());
});
