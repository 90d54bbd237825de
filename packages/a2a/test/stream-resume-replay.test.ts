// streamTaskUpdates resumes a broken stream, and gives up after maxReconnects
// resumes in a row that bring nothing new. A server that answers every
// resume with the same Task event (same event id) and ends the stream brings
// nothing new; the client took every Task as new, reset its count and resumed
// forever (through callAgent, ~10 SubscribeToTask a second until the
// deadline). Here the peer aborts the client's signal at its 12th request: a
// client that would resume forever ends ABORTED instead of STREAM_BROKEN.
import { afterEach, describe, expect, it } from 'vitest';
import { A2AClient, A2AClientError, type StreamEvent } from '../src/index.js';
import { sseEvent, startScriptedPeer, type ScriptedPeer } from './helpers/scripted-peer.js';

const WORKING = { id: 't1', contextId: 'c1', status: { state: 'TASK_STATE_WORKING' } };
const GUARD = 12;

let peer: ScriptedPeer | undefined;
afterEach(async () => {
  await peer?.close();
  peer = undefined;
});

/** Runs streamTaskUpdates to its end against a peer answering every stream with `sse(n)` (n: 1 = the first request). */
async function run(sse: (n: number) => string): Promise<{ events: StreamEvent[]; err: unknown }> {
  const guard = new AbortController();
  const p = await startScriptedPeer((req) => {
    const n = p.requests.length;
    if (n >= GUARD) guard.abort(new Error(`resumed without end (${n} requests)`));
    return { sse: sse(n).replaceAll('"RPC_ID"', JSON.stringify(req.id)) };
  });
  peer = p;
  const client = new A2AClient({ dispatcher: p.channel, timeoutMs: 10_000 });
  const events: StreamEvent[] = [];
  let err: unknown;
  try {
    for await (const e of client.streamTaskUpdates(
      p.url,
      'echo',
      { q: 1 },
      {
        signal: guard.signal,
        maxReconnects: 3,
        resumeBackoffMs: 1,
      },
    ))
      events.push(e);
  } catch (e) {
    err = e;
  }
  await client.close();
  return { events, err };
}

describe('streamTaskUpdates against a peer that replays the same Task on every resume', () => {
  it('with the same event id: not progress, not yielded again; STREAM_BROKEN after maxReconnects', async () => {
    const { events, err } = await run(() => sseEvent('RPC_ID', { task: WORKING }, '1'));
    expect(err).toBeInstanceOf(A2AClientError);
    expect((err as A2AClientError).code).toBe('STREAM_BROKEN');
    expect(events).toHaveLength(1);
    expect(events[0]?.eventId).toBe('1');
    // The stream, then maxReconnects resubscribes, each bringing nothing new.
    expect(peer?.requests.map((r) => r.method)).toEqual([
      'SendStreamingMessage',
      'SubscribeToTask',
      'SubscribeToTask',
      'SubscribeToTask',
    ]);
  });

  it('with an earlier event id: the same', async () => {
    const { events, err } = await run((n) =>
      n === 1
        ? sseEvent('RPC_ID', { task: WORKING }, '1') +
          sseEvent('RPC_ID', { statusUpdate: { taskId: 't1', contextId: 'c1', status: WORKING.status } }, '2')
        : sseEvent('RPC_ID', { task: WORKING }, '1'),
    );
    expect((err as A2AClientError).code).toBe('STREAM_BROKEN');
    expect(events.map((e) => e.eventId)).toEqual(['1', '2']);
    expect(peer?.requests).toHaveLength(4);
  });

  it('without an event id: the first such snapshot stands for the missed events, the same one again is no news', async () => {
    const { events, err } = await run((n) =>
      n === 1 ? sseEvent('RPC_ID', { task: WORKING }, '1') : sseEvent('RPC_ID', { task: WORKING }),
    );
    expect((err as A2AClientError).code).toBe('STREAM_BROKEN');
    expect(events).toHaveLength(2);
    expect(events[1]?.missedEvents).toBe(true);
    // The snapshot was progress (the count restarted), its repeats were not.
    expect(peer?.requests).toHaveLength(5);
  });

  it('a resume that moves on is progress: the count restarts', async () => {
    // Each resume brings the next event id, then the stream breaks again; the
    // sixth request completes the task (more than maxReconnects resumes in all).
    const { events, err } = await run((n) =>
      n < 6
        ? sseEvent('RPC_ID', { task: WORKING }, String(n))
        : sseEvent('RPC_ID', { task: { ...WORKING, status: { state: 'TASK_STATE_COMPLETED' } } }, String(n)),
    );
    expect(err).toBeUndefined();
    expect(events.map((e) => e.eventId)).toEqual(['1', '2', '3', '4', '5', '6']);
  });
});
