// What a verified but hostile peer answers must not reach the application
// when it is malformed in ways the schema does not see:
// - a result nested arbitrarily deep (500 000 levels were accepted, and the
//   application's JSON.stringify of it then overflowed the stack): refused
//   like any invalid answer (-32006), unary and per stream event, while the
//   deepest result a Weave server can produce passes;
// - a stream event of another task (its completion ended the call as if it
//   were the call's task): refused the same way;
// - a card naming a relative interface URL: INVALID_AGENT_URL, as on gRPC,
//   not a bare TypeError.
import { afterEach, describe, expect, it } from 'vitest';
import { A2AClient, A2AClientError, A2AError, MAX_JSON_DEPTH } from '../src/index.js';
import { sseEvent, startScriptedPeer, type Answer, type ScriptedPeer } from './helpers/scripted-peer.js';

let peer: ScriptedPeer | undefined;
let client: A2AClient | undefined;
afterEach(async () => {
  await client?.close();
  await peer?.close();
  peer = undefined;
  client = undefined;
});

async function start(
  answer: (req: { id: unknown; method: string }) => Answer,
  options: { interfaceUrl?: string } = {},
): Promise<{ client: A2AClient; url: string }> {
  peer = await startScriptedPeer(answer, options);
  client = new A2AClient({ dispatcher: peer.channel, timeoutMs: 10_000 });
  return { client, url: peer.url };
}

/** The JSON text of arrays `levels` deep (too deep for JSON.stringify to write). */
const deepText = (levels: number): string => '['.repeat(levels) + ']'.repeat(levels);
const nested = (levels: number): unknown => JSON.parse(deepText(levels));
/** `value`'s JSON with the string "DEEP" in it replaced by arrays `levels` deep. */
const withDeep = (value: unknown, levels: number): string =>
  JSON.stringify(value).replace('"DEEP"', deepText(levels));

const task = (id: string, state: string, data?: unknown) => ({
  id,
  contextId: 'c1',
  status: { state },
  ...(data === undefined ? {} : { artifacts: [{ artifactId: 'a1', parts: [{ data }] }] }),
});

async function failure(p: Promise<unknown>): Promise<unknown> {
  return p.then(
    () => new Error('expected a refusal'),
    (e: unknown) => e,
  );
}

function expectInvalidResponse(err: unknown, says: string): void {
  expect(err).toBeInstanceOf(A2AError);
  expect((err as A2AError).jsonRpcCode).toBe(-32006);
  expect((err as A2AError).message).toContain(says);
}

async function drain(events: AsyncIterable<unknown>): Promise<unknown[]> {
  const out: unknown[] = [];
  for await (const e of events) out.push(e);
  return out;
}

describe('a result nested deeper than any Weave server sends', () => {
  it('unary: refused with -32006', async () => {
    const { client, url } = await start((req) => ({
      json: withDeep(
        { jsonrpc: '2.0', id: req.id, result: { task: task('t1', 'TASK_STATE_COMPLETED', 'DEEP') } },
        500_000,
      ),
    }));
    expectInvalidResponse(await failure(client.sendTask(url, 'echo', 'x')), 'nested deeper');
  });

  it('in a stream event: refused with -32006, the events before it delivered', async () => {
    const { client, url } = await start((req) => ({
      sse:
        sseEvent(req.id, { task: task('t1', 'TASK_STATE_WORKING') }, '1') +
        `id: 2\ndata: ${withDeep(
          {
            jsonrpc: '2.0',
            id: req.id,
            result: {
              artifactUpdate: {
                taskId: 't1',
                contextId: 'c1',
                artifact: { artifactId: 'a1', parts: [{ data: 'DEEP' }] },
              },
            },
          },
          100_000,
        )}\n\n`,
    }));
    const seen: unknown[] = [];
    const err = await failure(
      (async () => {
        for await (const e of client.sendStreamingMessage(url, {
          messageId: 'm1',
          role: 'ROLE_USER',
          parts: [],
        }))
          seen.push(e);
      })(),
    );
    expectInvalidResponse(err, 'nested deeper');
    expect(seen).toHaveLength(1);
  });

  it('the deepest a Weave server keeps (an artifact MAX_JSON_DEPTH deep) inside a ListTasks page passes', async () => {
    // Artifact (1) > parts (2) > part (3) > data: the data fills the rest of MAX_JSON_DEPTH.
    const data = nested(MAX_JSON_DEPTH - 3);
    const { client, url } = await start(() => ({
      result: {
        tasks: [task('t1', 'TASK_STATE_COMPLETED', data)],
        nextPageToken: '',
        pageSize: 1,
        totalSize: 1,
      },
    }));
    const page = await client.listTasks(url);
    expect(page.tasks[0]?.artifacts?.[0]?.parts[0]?.data).toEqual(data);
  });
});

describe('a stream event of another task', () => {
  it("is refused with -32006: another task's completion does not end this one's stream", async () => {
    const { client, url } = await start((req) => ({
      sse:
        sseEvent(req.id, { task: task('t1', 'TASK_STATE_WORKING') }, '1') +
        sseEvent(
          req.id,
          { statusUpdate: { taskId: 't2', contextId: 'c1', status: { state: 'TASK_STATE_COMPLETED' } } },
          '2',
        ),
    }));
    expectInvalidResponse(
      await failure(drain(client.streamTaskUpdates(url, 'echo', 'x', { maxReconnects: 0 }))),
      'an event of task t2 in the stream of task t1',
    );
  });

  it('on SubscribeToTask, from the first event on', async () => {
    const { client, url } = await start((req) => ({
      sse: sseEvent(req.id, { task: task('t2', 'TASK_STATE_COMPLETED') }, '1'),
    }));
    expectInvalidResponse(
      await failure(drain(client.subscribeToTask(url, 't1'))),
      'an event of task t2 in the stream of task t1',
    );
  });
});

describe('a card naming a relative interface URL', () => {
  it('fails a call with INVALID_AGENT_URL, unary and streaming', async () => {
    const { client, url } = await start(() => ({ result: {} }), { interfaceUrl: '/rpc' });
    for (const call of [
      () => client.sendTask(url, 'echo', 'x'),
      () => drain(client.streamTaskUpdates(url, 'echo', 'x')),
    ]) {
      const err = await failure(call());
      expect(err).toBeInstanceOf(A2AClientError);
      expect((err as A2AClientError).code).toBe('INVALID_AGENT_URL');
    }
    expect(peer?.requests).toEqual([]);
  });
});
