// What a canceled task's handler is told: its signal's reason (and what a
// pending requestInput rejects with) says the task was canceled —
// TaskCanceledError, code TASK_CANCELED — whether the cancel was asked on the
// replica running it, written to the store by another, or the server closed.
// Before, it was the A2AError "Task … cannot be canceled in state
// TASK_STATE_CANCELED" (TaskNotCancelable, -32002), even for a plain
// CancelTask that succeeded: a handler that logged or rethrew it told
// operators the opposite of what happened.
import { describe, expect, it } from 'vitest';
import { LocalPolicyEnforcer } from '@weave/authz';
import { SpiffeId } from '@weave/identity';
import {
  A2AError,
  A2AServer,
  InMemoryTaskStore,
  TaskCanceledError,
  TaskManager,
  type CallContext,
  type TaskContext,
} from '../src/index.js';

const CALLER = SpiffeId.parse('spiffe://cancel.test/agent/client');
const call: CallContext = { caller: CALLER, headers: {}, binding: 'JSONRPC' };

/** The reason `ctx`'s signal aborts with, once it does. */
const abortReason = (ctx: TaskContext): Promise<unknown> =>
  new Promise((resolve) =>
    ctx.signal.addEventListener('abort', () => resolve(ctx.signal.reason), { once: true }),
  );

function expectCanceled(reason: unknown, taskId: string): void {
  expect(reason).toBeInstanceOf(TaskCanceledError);
  expect(reason).not.toBeInstanceOf(A2AError);
  expect(reason).toMatchObject({ code: 'TASK_CANCELED', message: `task ${taskId} was canceled` });
}

/** A server whose `wait` skill waits for its signal, and whose `ask` skill waits for input. */
function server() {
  const enforcer = LocalPolicyEnforcer.fromObject({
    version: 1,
    id: 'cancel-reason',
    default: 'deny',
    rules: [{ id: 'all', effect: 'allow', callers: ['spiffe://cancel.test'], actions: ['*'] }],
  });
  const a2a = new A2AServer({
    card: { name: 'c', description: 'cancel reason', version: '1' },
    selfId: SpiffeId.parse('spiffe://cancel.test/agent/server'),
    enforcer,
  });
  const aborted = new Map<string, Promise<unknown>>();
  const inputEnded = new Map<string, Promise<unknown>>();
  a2a.registerTaskHandler({ id: 'wait', name: 'wait', description: 'waits', tags: [] }, async (ctx) => {
    const reason = abortReason(ctx);
    aborted.set(ctx.taskId, reason);
    await reason;
    return 'stopped';
  });
  a2a.registerTaskHandler({ id: 'ask', name: 'ask', description: 'asks', tags: [] }, async (ctx) => {
    const asked = ctx.requestInput('more?');
    inputEnded.set(
      ctx.taskId,
      asked.then(
        () => 'answered',
        (err: unknown) => err,
      ),
    );
    await asked;
    return 'done';
  });
  const start = async (skill: string): Promise<string> => {
    const r = await a2a.handler.sendMessage(call, {
      message: { messageId: `m-${skill}`, role: 'ROLE_USER', parts: [{ text: 'go' }], metadata: { skill } },
      configuration: { returnImmediately: true },
    });
    if (!('task' in r)) throw new Error('no task');
    return r.task.id;
  };
  /** Resolves once the handler of task `id` has noted what it waits on, with that (in an object: not awaited). */
  const noted = async (map: Map<string, Promise<unknown>>, id: string) => {
    await expect.poll(() => map.has(id)).toBe(true);
    return { ended: map.get(id) as Promise<unknown> };
  };
  return { a2a, start, aborted, inputEnded, noted };
}

describe("a canceled task's handler", () => {
  it('sees TaskCanceledError as its signal.reason on a CancelTask on the replica running it', async () => {
    const s = server();
    try {
      const id = await s.start('wait');
      const { ended } = await s.noted(s.aborted, id);
      const task = await s.a2a.handler.cancelTask(call, { id });
      expect(task.status.state).toBe('TASK_STATE_CANCELED');
      expectCanceled(await ended, id);
    } finally {
      await s.a2a.close();
    }
  });

  it('has a pending requestInput rejected with TaskCanceledError', async () => {
    const s = server();
    try {
      const id = await s.start('ask');
      const { ended } = await s.noted(s.inputEnded, id);
      await s.a2a.handler.cancelTask(call, { id });
      expectCanceled(await ended, id);
    } finally {
      await s.a2a.close();
    }
  });

  it('sees TaskCanceledError when the server closes with the task running (it ends CANCELED)', async () => {
    const s = server();
    const id = await s.start('wait');
    const { ended } = await s.noted(s.aborted, id);
    await s.a2a.close();
    expectCanceled(await ended, id);
  });

  it('sees TaskCanceledError when another replica wrote the cancel to the shared store', async () => {
    // A store the managers share, written through (not the embedded store's synchronous path).
    class SharedStore extends InMemoryTaskStore {}
    const store = new SharedStore();
    const here = new TaskManager({ store });
    const there = new TaskManager({ store });
    try {
      const { task } = await here.create({
        owner: CALLER.toString(),
        skill: 'wait',
        message: { messageId: 'm-1', role: 'ROLE_USER', parts: [{ text: 'go' }] },
      });
      here.setStatus(task.id, 'TASK_STATE_WORKING');
      await here.flush();
      const signal = here.signalOf(task.id) as AbortSignal;
      expect((await there.cancelStored(task.id))?.task.status.state).toBe('TASK_STATE_CANCELED');
      // The next write here meets the log the cancel moved on: the task is given up as canceled.
      here.setStatus(task.id, 'TASK_STATE_WORKING');
      await expect.poll(() => signal.aborted).toBe(true);
      expectCanceled(signal.reason, task.id);
    } finally {
      await here.close();
      await there.close();
    }
  });
});
