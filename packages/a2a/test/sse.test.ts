// SSE behaviour of the Weave server: ids on every event, heartbeats, the same
// order for concurrent subscribers, and Last-Event-ID replay on reconnect.
import type { Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request } from 'undici';
import { A2AClient, type StreamEvent, type TaskContext } from '../src/index.js';
import { startHarness, type Harness } from './helpers/agents.js';

/** A handler the test drives step by step: each `step()` publishes one artifact chunk. */
class Stepper {
  #ctx: TaskContext | undefined;
  #ready: Array<(ctx: TaskContext) => void> = [];
  #finish: (() => void) | undefined;
  n = 0;

  readonly handler = async (ctx: TaskContext) => {
    this.#ctx = ctx;
    for (const r of this.#ready.splice(0)) r(ctx);
    await new Promise<void>((resolve) => (this.#finish = resolve));
    return undefined;
  };

  started(): Promise<TaskContext> {
    return this.#ctx ? Promise.resolve(this.#ctx) : new Promise((r) => this.#ready.push(r));
  }

  step(): void {
    this.n++;
    this.#ctx?.publishArtifact(
      { artifactId: 'out', parts: [{ text: `chunk ${this.n}` }] },
      { append: this.n > 1 },
    );
  }

  finish(): void {
    this.#finish?.();
  }

  reset(): void {
    this.#ctx = undefined;
    this.#finish = undefined;
    this.n = 0;
  }
}

const stepper = new Stepper();
const dropSockets: Socket[] = [];
let h: Harness;
let client: A2AClient;

beforeAll(async () => {
  h = await startHarness(
    (a2a) => {
      a2a.registerTaskHandler('steps', stepper.handler);
    },
    { heartbeatMs: 25 },
    {
      beforeListen: (app) => {
        // Lets a test cut a stream's connection from the server side, like a network drop.
        app.addHook('onRequest', (req, _reply, done) => {
          if (req.headers['x-test-drop'] !== undefined) dropSockets.push(req.raw.socket);
          done();
        });
      },
    },
  );
  client = new A2AClient({ dispatcher: h.agent });
});
afterAll(async () => {
  stepper.finish();
  await h.close();
});

function describeEvent(e: StreamEvent): string {
  if ('task' in e) return `task:${e.task.status.state}`;
  if ('statusUpdate' in e) return `status:${e.statusUpdate.status.state}`;
  if ('artifactUpdate' in e) return `artifact:${e.artifactUpdate.artifact.parts[0]?.text}`;
  return 'message';
}

async function take(it: AsyncGenerator<StreamEvent>, n: number): Promise<StreamEvent[]> {
  const out: StreamEvent[] = [];
  while (out.length < n) {
    const r = await it.next();
    if (r.done) break;
    out.push(r.value);
  }
  return out;
}

describe('SSE', () => {
  it('echoes the request id on every event, sends heartbeats and ids', async () => {
    stepper.reset();
    const res = await request(`${h.url}/`, {
      method: 'POST',
      dispatcher: h.agent,
      headers: { 'content-type': 'application/json', 'a2a-version': '1.0', accept: 'text/event-stream' },
      body: JSON.stringify({
        jsonrpc: '2.0',
        id: 'req-ü-1',
        method: 'SendStreamingMessage',
        params: { message: { messageId: 'm', role: 'ROLE_USER', parts: [{ text: 'go' }] } },
      }),
    });
    expect(res.headers['content-type']).toBe('text/event-stream');
    let text = '';
    let stepped = false;
    for await (const chunk of res.body) {
      text += (chunk as Buffer).toString();
      // Finish only after a heartbeat went by, so its presence is observed, not timed.
      if (!stepped && text.includes(': keep-alive')) {
        stepped = true;
        await stepper.started();
        stepper.step();
        stepper.finish();
      }
    }
    const blocks = text.split('\n\n').filter((b) => b.includes('data: '));
    const events = blocks.map((b) => {
      const id = /^id: (\d+)$/m.exec(b)?.[1];
      const data = JSON.parse(/^data: (.*)$/m.exec(b)?.[1] ?? 'null') as { jsonrpc: string; id: string };
      return { id, data };
    });
    // The task (SUBMITTED), WORKING, one artifact, COMPLETED.
    expect(events.map((e) => e.id)).toEqual(['1', '2', '3', '4']);
    expect(events.every((e) => e.data.id === 'req-ü-1' && e.data.jsonrpc === '2.0')).toBe(true);
    expect(text).toContain(': keep-alive');
  });

  it('concurrent subscribers see the same events in the same order', async () => {
    stepper.reset();
    const main = client.sendStreamingMessage(h.url, {
      message: { messageId: 'c', role: 'ROLE_USER', parts: [{ text: 'c' }] },
    });
    const [first] = await take(main, 1);
    const taskId = first && 'task' in first ? first.task.id : '';
    await stepper.started();
    const subs = [0, 1, 2].map(() => client.subscribeToTask(h.url, taskId));
    // Each subscriber first gets the current task; only then is the feed live for all.
    const heads = await Promise.all(subs.map((s) => take(s, 1)));
    expect(heads.every((x) => x[0] && 'task' in x[0])).toBe(true);
    for (let i = 0; i < 20; i++) stepper.step();
    stepper.finish();
    const all = await Promise.all([take(main, 100), ...subs.map((s) => take(s, 100))]);
    const seqs = all.map((events) =>
      events.filter((e) => !('task' in e)).map((e) => `${e.eventId}:${describeEvent(e)}`),
    );
    const reference = seqs[1] ?? [];
    expect(reference.length).toBe(21); // 20 chunks + COMPLETED
    for (const s of seqs.slice(2)) expect(s).toEqual(reference);
    expect(seqs[0]?.slice(-21)).toEqual(reference);
  });

  it('a reconnecting subscriber with Last-Event-ID misses no event', async () => {
    stepper.reset();
    const main = client.sendStreamingMessage(h.url, {
      message: { messageId: 'r', role: 'ROLE_USER', parts: [{ text: 'r' }] },
    });
    const head = await take(main, 2); // task, working
    const taskId = head[0] && 'task' in head[0] ? head[0].task.id : '';
    await stepper.started();
    stepper.step();
    stepper.step();
    const got = await take(main, 2);
    const lastId = got.at(-1)?.eventId;
    expect(lastId).toBe('4');
    await main.return(undefined); // the client goes away…
    for (let i = 0; i < 5; i++) stepper.step(); // …while the task moves on
    const resumed = client.subscribeToTask(h.url, taskId, { lastEventId: lastId });
    const missed = await take(resumed, 5);
    expect(missed.map((e) => e.eventId)).toEqual(['5', '6', '7', '8', '9']);
    expect(missed.map(describeEvent)).toEqual([
      'artifact:chunk 3',
      'artifact:chunk 4',
      'artifact:chunk 5',
      'artifact:chunk 6',
      'artifact:chunk 7',
    ]);
    stepper.step();
    stepper.finish();
    const rest = await take(resumed, 10);
    expect(rest.map(describeEvent)).toEqual(['artifact:chunk 8', 'status:TASK_STATE_COMPLETED']);
    // After the task finished, a late reconnect still gets what it missed, then the stream ends.
    const late = await take(client.subscribeToTask(h.url, taskId, { lastEventId: '9' }), 10);
    expect(late.map((e) => e.eventId)).toEqual(['10', '11']);
  });

  it('streamTaskUpdates resumes by itself after the connection drops', async () => {
    stepper.reset();
    const dropping = new A2AClient({ dispatcher: h.agent, headers: { 'x-test-drop': '1' } });
    dropSockets.length = 0;
    const events: StreamEvent[] = [];
    const stream = dropping.streamTaskUpdates(h.url, 'steps', 'x');
    for await (const e of stream) {
      events.push(e);
      if (events.length === 2) {
        await stepper.started();
        stepper.step();
      }
      if (events.length === 3) {
        // Cut the connection under the stream, then let the task move on.
        const [first] = dropSockets;
        first?.destroy();
        stepper.step();
        stepper.step();
        stepper.finish();
      }
    }
    expect(dropSockets.length).toBeGreaterThan(1); // it did reconnect
    const ids = events.map((e) => e.eventId).filter((x) => x !== undefined);
    const texts = events.map(describeEvent);
    expect(texts.filter((t) => t.startsWith('artifact'))).toEqual([
      'artifact:chunk 1',
      'artifact:chunk 2',
      'artifact:chunk 3',
    ]);
    expect(texts.at(-1)).toBe('status:TASK_STATE_COMPLETED');
    expect(new Set(ids).size).toBe(ids.length); // no duplicates
  });
});
