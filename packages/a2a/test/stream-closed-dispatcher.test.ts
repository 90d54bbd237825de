// A stream whose dispatcher is closed for good (the caller's SecureChannel
// destroyed, e.g. by an agent's stop()) is not resumed: every resume would
// fail at once on the closed channel, and the call ended only after
// `maxReconnects` of them, as STREAM_BROKEN with "the circuit has been
// shutdown" (or undici's "The client is destroyed") as its reason.
import { afterEach, describe, expect, it } from 'vitest';
import { A2AClient, A2AClientError, type StreamEvent } from '../src/index.js';
import { causeCodes } from './helpers/agents.js';
import { sseEvent, startScriptedPeer, type ScriptedPeer } from './helpers/scripted-peer.js';

const WORKING = { id: 't1', contextId: 'c1', status: { state: 'TASK_STATE_WORKING' } };

let peer: ScriptedPeer | undefined;
afterEach(async () => {
  await peer?.close();
  peer = undefined;
});

describe('a stream whose channel is destroyed before it resumes', () => {
  it('ends at once with the closed channel as its cause, without resuming on it', async () => {
    // One event, then the stream ends before the task settled: the client would resume.
    const p = await startScriptedPeer((req) => ({
      sse: sseEvent(req.id, { task: WORKING }, '1'),
    }));
    peer = p;
    const client = new A2AClient({ dispatcher: p.channel, timeoutMs: 10_000 });
    const events: StreamEvent[] = [];
    const resumes: string[] = [];
    let err: unknown;
    try {
      for await (const e of client.streamTaskUpdates(
        p.url,
        'echo',
        { q: 1 },
        {
          maxReconnects: 3,
          resumeBackoffMs: 1,
          onResume: (r) => {
            resumes.push(String((r.error as Error)?.message));
            // The caller's channel goes away for good before the resubscribe is sent.
            if (r.attempt === 1) void p.channel.destroy();
          },
        },
      ))
        events.push(e);
    } catch (e) {
      err = e;
    }
    expect(events).toHaveLength(1);
    expect(err).toBeInstanceOf(A2AClientError);
    expect((err as A2AClientError).code).not.toBe('STREAM_BROKEN');
    expect(causeCodes(err)).toContain('CHANNEL_CLOSED');
    // The first resume (after the stream ended) was the only one: none was tried on the closed channel.
    expect(resumes).toHaveLength(1);
    expect(p.requests.map((r) => r.method)).toEqual(['SendStreamingMessage']);
  });
});
