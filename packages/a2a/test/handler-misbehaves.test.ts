// A task handler that misbehaves — throws a value that cannot be read,
// returns or publishes output no binding can send, publishes a state that
// does not exist, fails with a huge message — seen by a real client on each
// binding (JSON-RPC, HTTP+JSON, gRPC) of one server over mTLS on loopback.
// Each ends its task FAILED with a reason the caller can read, on every
// binding alike; nothing is left WORKING, nothing stored breaks a later read.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WeaveError } from '@weave/identity';
import type { StreamResponse, Task, TaskState } from '../src/index.js';
import { harnessForAll, send, serveGoesOn, skillCard, taskOf } from './helpers/agents.js';
import { BINDINGS } from './helpers/raw-bindings.js';

/** An object whose `message`, `code` and `stack` throw when read. */
function unreadable(): object {
  const boom = () => {
    throw new Error('getter password=hunter2');
  };
  return Object.defineProperties({}, { message: { get: boom }, code: { get: boom }, stack: { get: boom } });
}

function circular(): object {
  const o: Record<string, unknown> = { a: 1 };
  o.self = o;
  return o;
}

/** Data parts no binding can send as they are, and what the failure names. */
const UNSENDABLE: ReadonlyArray<[skill: string, data: () => unknown, named: RegExp]> = [
  ['bigint', () => ({ n: 10n }), /a BigInt at parts\.0\.data\.n/],
  ['function', () => ({ f: () => 1 }), /a function at parts\.0\.data\.f/],
  ['symbol', () => ({ s: Symbol('s') }), /a symbol at parts\.0\.data\.s/],
  ['date', () => ({ at: new Date(0) }), /a Date object at parts\.0\.data\.at/],
  ['map', () => ({ m: new Map([[1, 2]]) }), /a Map object at parts\.0\.data\.m/],
  ['circular', circular, /nested deeper than 40 levels/],
];

/** What `ctx.publishArtifact` and `ctx.publishStatus` threw into the handler, by task. */
const thrownAtHandler = new Map<string, unknown>();
const unhandled: unknown[] = [];
const onUnhandled = (reason: unknown) => unhandled.push(reason);

// Registered before the harness's hooks: on before it starts, off once it is closed.
beforeAll(() => {
  process.on('unhandledRejection', onUnhandled);
});
afterAll(() => {
  process.off('unhandledRejection', onUnhandled);
});

const served = harnessForAll(
  (a2a) => {
    a2a.registerTaskHandler(skillCard('unreadable'), () => {
      throw unreadable();
    });
    for (const [id, data] of UNSENDABLE) {
      a2a.registerTaskHandler(skillCard(id), () => ({ parts: [{ data: data() }] }));
    }
    a2a.registerTaskHandler(skillCard('not-an-artifact'), () => ({ parts: [{ text: 1 }] }) as never);
    serveGoesOn(a2a, 'publishes-bigint', thrownAtHandler, (ctx) => {
      ctx.publishArtifact({ parts: [{ data: { n: 1n } }] });
    });
    serveGoesOn(a2a, 'bogus-state', thrownAtHandler, (ctx) => {
      ctx.publishStatus('TASK_STATE_BOGUS' as TaskState, 'what state?');
    });
    a2a.registerTaskHandler(skillCard('loud'), () => {
      throw new WeaveError('LOUD', `refused: ${'x'.repeat(100_000)}`);
    });
    // Reports why it stopped from its abort listener, as cancel examples tend to.
    a2a.registerTaskHandler(
      skillCard('fails-on-abort'),
      (ctx) =>
        new Promise<void>((resolve) => {
          ctx.signal.addEventListener('abort', () => {
            ctx.publishStatus('TASK_STATE_FAILED', 'stopped');
            resolve();
          });
        }),
    );
    a2a.registerTaskHandler(skillCard('leaky'), () => {
      // Node's own error of a failed connection: it has a code, and names an internal address.
      throw Object.assign(new Error('connect ECONNREFUSED 10.0.0.5:5432'), { code: 'ECONNREFUSED' });
    });
  },
  // Without the fix, a task left WORKING answers after this, not never.
  { limits: { blockingTimeoutMs: 2000 } },
);

const statusText = (t: Task) => t.status.message?.parts[0]?.text;

/** The Task a stream starts with. */
function firstTask(events: readonly StreamResponse[]): Task {
  const first = events[0];
  if (first === undefined || !('task' in first)) throw new Error('the stream did not start with the task');
  return first.task;
}

describe.each(BINDINGS)('a misbehaving task handler, seen on %s', (binding) => {
  it('throws a value whose getters throw: the task ends FAILED "Task failed", nothing unhandled', async () => {
    await served.withBinding(binding, async (b) => {
      const task = taskOf(await b.call('SendMessage', send('unreadable')));
      expect(task.status.state).toBe('TASK_STATE_FAILED');
      expect(statusText(task)).toBe('Task failed');
      expect(JSON.stringify(task)).not.toContain('hunter2');
      expect(unhandled).toEqual([]);
    });
  });

  it.each(UNSENDABLE)(
    'returns %s data: FAILED with -32006 naming it, and the task reads back',
    async (skill, _data, named) => {
      await served.withBinding(binding, async (b) => {
        const task = taskOf(await b.call('SendMessage', send(skill)));
        expect(task.status.state).toBe('TASK_STATE_FAILED');
        expect(statusText(task)).toMatch(/^Task failed: Invalid agent response: /);
        expect(statusText(task)).toMatch(named);
        expect(task.artifacts ?? []).toEqual([]);
        // What was stored reads back on every binding (a BigInt kept with the task broke each read).
        const again = taskOf(await b.call('GetTask', { id: task.id }));
        expect(again.status.state).toBe('TASK_STATE_FAILED');
      });
    },
  );

  it('returns something that is not an artifact: FAILED naming the field, not a bare "Task failed"', async () => {
    await served.withBinding(binding, async (b) => {
      const task = taskOf(await b.call('SendMessage', send('not-an-artifact')));
      expect(task.status.state).toBe('TASK_STATE_FAILED');
      expect(statusText(task)).toMatch(/^Task failed: Invalid agent response: parts\.0\.text: /);
    });
  });

  it('publishes FAILED from its abort listener: a CancelTask that succeeds leaves the task CANCELED', async () => {
    await served.withBinding(binding, async (b) => {
      const started = taskOf(
        await b.call('SendMessage', {
          ...send('fails-on-abort'),
          configuration: { returnImmediately: true },
        }),
      );
      const canceled = taskOf(await b.call('CancelTask', { id: started.id }));
      expect(canceled.status.state).toBe('TASK_STATE_CANCELED');
      expect(taskOf(await b.call('GetTask', { id: started.id })).status.state).toBe('TASK_STATE_CANCELED');
    });
  });

  it('fails with a 100 000-character message: the status repeats at most 1 024 of them', async () => {
    await served.withBinding(binding, async (b) => {
      const task = taskOf(await b.call('SendMessage', send('loud')));
      expect(task.status.state).toBe('TASK_STATE_FAILED');
      expect(statusText(task)).toMatch(/^Task failed: refused: x+… \(100009 characters\)$/);
      expect(statusText(task)!.length).toBeLessThan(1100);
    });
  });
});

describe.each(BINDINGS)('an error that is not a WeaveError, seen on %s', (binding) => {
  it('has a code, as the errors of Node itself do: the task fails "Task failed", its message stays in the log', async () => {
    await served.withBinding(binding, async (b) => {
      const task = taskOf(await b.call('SendMessage', send('leaky')));
      expect(task.status.state).toBe('TASK_STATE_FAILED');
      expect(statusText(task)).toBe('Task failed');
      expect(JSON.stringify(task)).not.toContain('10.0.0.5');
    });
  });
});

describe('what a handler publishes is checked as it is published', () => {
  it('publishArtifact with a BigInt throws INVALID_AGENT_RESPONSE into the handler; nothing is published', async () => {
    const b = served.raw('JSONRPC');
    const stream = await b.stream('SendStreamingMessage', send('publishes-bigint'));
    const task = firstTask(stream.events);
    expect(thrownAtHandler.get(task.id)).toMatchObject({
      code: 'INVALID_AGENT_RESPONSE',
      jsonRpcCode: -32006,
      message: expect.stringMatching(/a BigInt at parts\.0\.data\.n/),
    });
    expect(stream.failure).toBeUndefined();
    // The handler went on: its result is the task's only artifact.
    const artifacts = stream.events.flatMap((e) => ('artifactUpdate' in e ? [e.artifactUpdate] : []));
    expect(artifacts.map((a) => a.artifact.parts[0]?.text)).toEqual(['went on']);
  });

  it('publishStatus with a state that does not exist throws into the handler; no subscriber sees it', async () => {
    const b = served.raw('JSONRPC');
    const stream = await b.stream('SendStreamingMessage', send('bogus-state'));
    const task = firstTask(stream.events);
    expect(thrownAtHandler.get(task.id)).toMatchObject({ code: 'INVALID_AGENT_RESPONSE' });
    const states = stream.events.flatMap((e) => ('statusUpdate' in e ? [e.statusUpdate.status.state] : []));
    expect(states).toEqual(['TASK_STATE_WORKING', 'TASK_STATE_COMPLETED']);
  });
});
