// How long a task's handler may run (`limits.maxTaskMs`) and how long its
// slot is held, over real mTLS on JSON-RPC. A caller that sends no deadline
// (any non-Weave client) and a handler that ignores its signal used to run
// until the process ended; and after a CancelTask such a handler kept its
// caller's slot while the server-wide limit no longer counted it.
import { setTimeout as delay } from 'node:timers/promises';
import { afterEach, describe, expect, it } from 'vitest';
import type { Workload } from '@weave/test-support';
import {
  A2AConfigError,
  type A2AClient,
  A2AError,
  A2ARequestHandler,
  A2AServer,
  type A2AServerLimits,
  type Task,
} from '../src/index.js';
import {
  refusal,
  serveOnLoopback,
  trustDomainPolicy,
  userMessage,
  workloadsForAll,
} from './helpers/agents.js';

const { server, alice, bob } = workloadsForAll({
  server: '/agent/server',
  alice: '/agent/alice',
  bob: '/agent/bob',
});

const enforcer = trustDomainPolicy('runtime');

interface Line {
  level: 'warn' | 'error';
  obj: Record<string, unknown>;
  msg: string;
}

/** A running JSON-RPC server whose `stubborn` handlers ignore their signal until released. */
interface Setup {
  url: string;
  a2a: A2AServer;
  /** The signal each `stubborn` handler was given, read as it started. */
  signals: AbortSignal[];
  /** `stubborn` handlers that have returned. */
  settled: number;
  /** What each `asks` handler's requestInput ended with. */
  inputs: unknown[];
  lines: Line[];
  release(): void;
  client(w: Workload): A2AClient;
  close(): Promise<void>;
}

async function start(limits: A2AServerLimits): Promise<Setup> {
  const a2a = new A2AServer({
    card: { name: 'runtime', description: 'task runtime bounds', version: '1' },
    selfId: server.id,
    enforcer,
    heartbeatMs: 0,
    bindings: ['JSONRPC'],
    limits,
  });
  let gate!: () => void;
  const held = new Promise<void>((r) => (gate = r));
  const s: Setup = {
    url: '',
    a2a,
    signals: [],
    settled: 0,
    inputs: [],
    lines: [],
    release: () => gate(),
    client: () => {
      throw new Error('not started');
    },
    close: async () => undefined,
  };
  a2a.registerTaskHandler('stubborn', async (ctx) => {
    s.signals.push(ctx.signal);
    // Ignores the signal: only the test lets it go.
    await held;
    s.settled++;
    return 'done at last';
  });
  // Passes its signal to twelve waits of its own at once, as a handler fanning out to twelve calls does.
  a2a.registerTaskHandler('fanout', async (ctx) => {
    await Promise.all(Array.from({ length: 12 }, () => delay(20, undefined, { signal: ctx.signal })));
    return 'fanned out';
  });
  a2a.registerTaskHandler('asks', async (ctx) => {
    try {
      await ctx.requestInput('and then?');
      s.inputs.push('answered');
    } catch (err) {
      s.inputs.push(err);
    }
    return 'after the question';
  });
  const served = await serveOnLoopback(a2a, server);
  const log = (level: Line['level']) => (obj: object, msg: string) =>
    s.lines.push({ level, obj: obj as Record<string, unknown>, msg });
  a2a.handler.setLogger({ warn: log('warn'), error: log('error') });
  s.url = served.url;
  s.client = served.client;
  s.close = async () => {
    gate();
    await served.close();
  };
  return s;
}

/** Starts a task of `skill` without waiting for it to finish. */
async function startTask(c: A2AClient, url: string, skill = 'stubborn'): Promise<Task> {
  const r = await c.sendMessage(url, {
    message: userMessage(skill),
    configuration: { returnImmediately: true },
  });
  if (!('task' in r)) throw new Error('expected a task');
  return r.task;
}

function statusText(t: Task): string {
  return (t.status.message?.parts ?? []).map((p) => ('text' in p ? p.text : '')).join('');
}

let s: Setup | undefined;
afterEach(async () => {
  await s?.close();
  s = undefined;
});

describe('limits.maxTaskMs', () => {
  it('fails a task whose handler ignores its signal once the bound passes; its signal aborts saying why', async () => {
    s = await start({ maxTaskMs: 300, blockingTimeoutMs: 2000 });
    const a = s.client(alice);
    const started = Date.now();
    // A blocking call that sends no deadline: answered when the bound ends the task.
    const r = await a.sendMessage(s.url, { message: userMessage('stubborn') });
    const took = Date.now() - started;
    if (!('task' in r)) throw new Error('expected a task');
    expect(r.task.status.state).toBe('TASK_STATE_FAILED');
    expect(statusText(r.task)).toBe('Task failed: it ran longer than this agent allows a task (300 ms)');
    expect(took).toBeGreaterThanOrEqual(290);
    expect(took).toBeLessThan(3000);
    const signal = s.signals[0] as AbortSignal;
    expect(signal.aborted).toBe(true);
    expect(signal.reason).toMatchObject({ code: 'TASK_TIME_LIMIT' });
    expect(String((signal.reason as Error).message)).toContain('limits.maxTaskMs (300 ms)');
    // Read again from the store: the same ending.
    const again = await a.getTask(s.url, r.task.id);
    expect(again.status.state).toBe('TASK_STATE_FAILED');
    expect(statusText(again)).toBe(statusText(r.task));
    expect(s.lines).toContainEqual(
      expect.objectContaining({ level: 'warn', msg: 'a2a: task ran longer than limits.maxTaskMs; failed' }),
    );
  });

  it('counts the time a task waits for input: a wait cut by the bound fails the task and rejects requestInput', async () => {
    s = await start({ maxTaskMs: 300, inputTimeoutMs: 60_000 });
    const a = s.client(alice);
    const t = await startTask(a, s.url, 'asks');
    const ended = await a.pollUntilComplete(s.url, t.id, {
      intervalMs: 25,
      timeoutMs: 3000,
      terminalOnly: true,
    });
    expect(ended.status.state).toBe('TASK_STATE_FAILED');
    expect(statusText(ended)).toBe('Task failed: it ran longer than this agent allows a task (300 ms)');
    // The handler was woken (not left waiting forever), so its slot is free.
    await expect.poll(() => s?.inputs.length).toBe(1);
    expect(s.inputs[0]).toBeInstanceOf(A2AError);
  });
});

describe('the handler’s signal', () => {
  it('warns of no listener leak when a handler passes it to more than ten calls at once', async () => {
    const warnings: Error[] = [];
    const onWarning = (w: Error) => warnings.push(w);
    process.on('warning', onWarning);
    try {
      s = await start({});
      const r = await s.client(alice).sendMessage(s.url, { message: userMessage('fanout') });
      if (!('task' in r)) throw new Error('expected a task');
      expect(r.task.status.state).toBe('TASK_STATE_COMPLETED');
      // A warning is emitted on the next tick after the listener that passed the bound.
      await new Promise((resolve) => setImmediate(resolve));
      expect(warnings.map((w) => w.name)).not.toContain('MaxListenersExceededWarning');
    } finally {
      process.off('warning', onWarning);
    }
  });
});

describe('task slots are held until the handler settles', () => {
  it('a canceled task whose handler still runs holds its caller’s slot, and the refusal says so', async () => {
    s = await start({ perCaller: { maxConcurrentTasks: 3 } });
    const a = s.client(alice);
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) ids.push((await startTask(a, s.url)).id);
    for (const id of ids) expect((await a.cancelTask(s.url, id)).status.state).toBe('TASK_STATE_CANCELED');
    const err = await refusal(startTask(a, s.url));
    expect(err.code).toBe('RESOURCE_EXHAUSTED');
    expect(err.message).toMatch(/\(limit 3 per caller\)/);
    expect(err.message).toContain(
      '3 of these slots are held by task handlers still running after their tasks ended',
    );
    expect(s.signals).toHaveLength(3);
    // Once the handlers return, the slots are free again.
    s.release();
    await expect.poll(() => s?.settled).toBe(3);
    await startTask(a, s.url);
    expect(s.signals).toHaveLength(4);
  });

  it('counts such a handler against the server-wide limit too, until it returns', async () => {
    s = await start({ maxConcurrentTasks: 2, perCaller: { maxConcurrentTasks: 5 } });
    const a = s.client(alice);
    const first = await startTask(a, s.url);
    await startTask(a, s.url);
    await a.cancelTask(s.url, first.id);
    expect(s.a2a.manager.activeCount).toBe(1);
    // Bob has slots of his own, but the server has none: a handler still runs for each.
    const err = await refusal(startTask(s.client(bob), s.url));
    expect(err.code).toBe('RESOURCE_EXHAUSTED');
    expect(err.message).toBe(
      'Too many concurrent tasks (limit 2); 1 of these slots is held by a task handler still running after its task ended',
    );
    expect(s.signals).toHaveLength(2);
    s.release();
    await expect.poll(() => s?.settled).toBe(2);
    await startTask(s.client(bob), s.url);
    expect(s.signals).toHaveLength(3);
  });

  it('logs a handler still running after its task was canceled', async () => {
    s = await start({ maxTaskMs: 200 });
    const a = s.client(alice);
    const t = await startTask(a, s.url);
    await a.cancelTask(s.url, t.id);
    await expect
      .poll(() => s?.lines.find((l) => l.msg === 'a2a: task handler still running after its task ended'), {
        timeout: 3000,
      })
      .toMatchObject({ level: 'warn', obj: { taskId: t.id, skill: 'stubborn' } });
  });
});

describe('configuration', () => {
  it.each([0, -1, 1.5, Number.NaN, 2 ** 31, Infinity])('refuses maxTaskMs %s when made', (maxTaskMs) => {
    const options = { selfId: server.id, enforcer, limits: { maxTaskMs } };
    expect(() => new A2ARequestHandler(options)).toThrow(A2AConfigError);
    expect(() => new A2ARequestHandler(options)).toThrow(/limits\.maxTaskMs/);
    expect(
      () => new A2AServer({ ...options, card: { name: 'runtime', description: 'bad bound', version: '1' } }),
    ).toThrow(/limits\.maxTaskMs/);
  });
});
