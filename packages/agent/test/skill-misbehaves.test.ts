// A capability handler that misbehaves — returns what no binding can send,
// throws a value that cannot be read or an AgentError too large to carry,
// returns after its task was canceled — seen by a real caller on each A2A
// binding (two SecureAgents, the dev Workload API, mTLS on loopback, a local
// policy file) and by the operator (metrics, the call log). The caller gets a
// typed failure it can read, the task reads back as it ended, and the
// callee's counts and log say what happened.
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { z } from 'zod';
import { A2AClient, buildMessage, type Task } from '@weave/a2a';
import { SpiffeId } from '@weave/identity';
import { SecureChannel } from '@weave/transport';
import { AgentError, CallError, OfflineTestAgent, type SecureAgent } from '../src/index.js';
import { ID, memoryLogger, sample, startCalleeAndCaller, startWorld, type World } from './helpers.js';

const CAPS = ['bigint', 'date', 'unreadable', 'stuck', 'loud'];

/** A thrown object whose `message`, `code` and `stack` throw when read. */
function unreadable(): object {
  const boom = () => {
    throw new Error('getter password=hunter2');
  };
  return Object.defineProperties({}, { message: { get: boom }, code: { get: boom }, stack: { get: boom } });
}

/** The `stuck` handlers waiting to be let go, by task id. */
const stuck = new Map<string, () => void>();

function withCapabilities<A extends OfflineTestAgent | SecureAgent>(agent: A): A {
  const any = z.any();
  agent
    .capability('bigint', { input: any, output: z.object({ n: z.bigint() }) }, () => ({ n: 10n }))
    .capability('date', { input: any }, () => ({ at: new Date(0) }))
    .capability('unreadable', { input: any }, () => {
      throw unreadable();
    })
    // Ignores its signal: a cancel does not stop it.
    .capability('stuck', { input: any }, async (_input, ctx) => {
      await new Promise<void>((resolve) => stuck.set(ctx.taskId as string, resolve));
      return { late: true };
    })
    .capability('loud', { input: any }, () => {
      throw new AgentError('CAPABILITY_INPUT_INVALID', `refused: ${'x'.repeat(3 * 1024 * 1024)}`);
    });
  return agent;
}

/** The callee's log lines, parsed. */
const { logger: calleeLogger, lines: logLines } = memoryLogger();

let world: World;
let callee: SecureAgent;
let caller: SecureAgent;
let channel: SecureChannel;
const clients: A2AClient[] = [];

beforeAll(async () => {
  world = await startWorld();
  ({ callee, caller } = await startCalleeAndCaller(
    world,
    { policyId: 'misbehaves', capabilities: CAPS, logger: calleeLogger },
    withCapabilities,
  ));
  channel = new SecureChannel(await world.provider('orchestrator'), SpiffeId.parse(ID.search));
}, 60_000);

afterAll(async () => {
  for (const release of stuck.values()) release();
  await Promise.all(clients.map((c) => c.close()));
  await channel?.close();
  await caller?.stop();
  await callee?.stop({ drainTimeoutMs: 0 });
  await world?.close();
});

/** An A2A client of the orchestrator's that speaks only `binding`. */
function clientOn(binding: string): A2AClient {
  const c = new A2AClient({ dispatcher: channel, preferredBindings: [binding] });
  clients.push(c);
  return c;
}

const inbound = (capability: string, outcome: string) =>
  sample(callee.metrics.calls, { direction: 'inbound', capability, outcome });

const failedLines = (capability: string) =>
  logLines.filter((l) => l.msg === 'call failed' && l.capability === capability);

describe.each(['JSONRPC', 'HTTP+JSON', 'GRPC'])(
  'a capability result no binding can send, on %s',
  (binding) => {
    it.each([
      ['bigint', /a BigInt at parts\.0\.data\.n/],
      ['date', /a Date object at parts\.0\.data\.at/],
    ])(
      '%s: the task ends FAILED CAPABILITY_FAILED, reads back, and counts as a failure',
      async (cap, named) => {
        const client = clientOn(binding);
        const before = { success: await inbound(cap, 'success'), error: await inbound(cap, 'error') };
        const logged = failedLines(cap).length;
        const r = await client.sendMessage(callee.url, { message: buildMessage(cap, {}) });
        const task = (r as { task: Task }).task;
        expect(task.status.state).toBe('TASK_STATE_FAILED');
        expect(task.status.message?.metadata?.['weave.dev/error']).toEqual({
          code: 'CAPABILITY_FAILED',
          message: "CAPABILITY_FAILED: see the callee's log for details",
        });
        expect(task.artifacts ?? []).toEqual([]);
        expect((await client.getTask(callee.url, task.id)).status.state).toBe('TASK_STATE_FAILED');
        expect(await inbound(cap, 'success')).toBe(before.success);
        expect(await inbound(cap, 'error')).toBe(before.error + 1);
        // The operator's log names what could not be sent.
        const line = failedLines(cap)[logged];
        expect(line).toMatchObject({ code: 'CAPABILITY_FAILED', taskId: task.id });
        expect((line?.err as { message?: string }).message).toMatch(named);
      },
    );
  },
);

describe('a capability that throws a value whose getters throw', () => {
  it('fails the call as CAPABILITY_FAILED, and the call log keeps its line', async () => {
    const err = (await caller.callAgent(ID.search, 'unreadable', {}).catch((e: unknown) => e)) as CallError;
    expect(err).toBeInstanceOf(CallError);
    expect(err.remoteCode).toBe('CAPABILITY_FAILED');
    expect(err.message).not.toContain('hunter2');
    await vi.waitFor(() => expect(failedLines('unreadable')).toHaveLength(1));
    expect(failedLines('unreadable')[0]).toMatchObject({ code: 'CAPABILITY_FAILED', taskId: err.taskId });
  });

  it('is an AgentError CAPABILITY_FAILED from OfflineTestAgent.invoke, not what its getter threw', async () => {
    const agent = withCapabilities(new OfflineTestAgent());
    const err = (await agent.invoke('unreadable', {}).catch((e: unknown) => e)) as AgentError;
    expect(err).toBeInstanceOf(AgentError);
    expect(err.code).toBe('CAPABILITY_FAILED');
    expect(err.message).toBe('capability "unreadable" failed: a thrown object that cannot be read');
  });
});

describe('an AgentError with a 3 MB message', () => {
  it('reaches the caller with its code (the text cut), instead of an answer too large to read', async () => {
    const err = (await caller.callAgent(ID.search, 'loud', {}).catch((e: unknown) => e)) as CallError;
    expect(err).toBeInstanceOf(CallError);
    expect(err.remoteCode).toBe('CAPABILITY_INPUT_INVALID');
    expect(err.taskState).toBe('TASK_STATE_FAILED');
    expect(err.message).toMatch(/refused: x+… \(3145737 characters\)$/);
    expect(err.message.length).toBeLessThan(2000);
  });
});

describe('a capability that ignores its cancel and returns later', () => {
  it('leaves the task CANCELED, and is counted and logged as canceled, not as served', async () => {
    const client = clientOn('JSONRPC');
    const r = await client.sendMessage(callee.url, {
      message: buildMessage('stuck', {}),
      configuration: { returnImmediately: true },
    });
    const id = (r as { task: Task }).task.id;
    await vi.waitFor(() => expect(stuck.has(id)).toBe(true));
    expect((await client.cancelTask(callee.url, id)).status.state).toBe('TASK_STATE_CANCELED');
    stuck.get(id)?.();
    await vi.waitFor(async () => expect(await inbound('stuck', 'error')).toBe(1));
    expect(await inbound('stuck', 'success')).toBe(0);
    const line = logLines.find((l) => l.taskId === id && l.capability === 'stuck');
    expect(line).toMatchObject({ msg: 'call canceled', outcome: 'error' });
    const task = await client.getTask(callee.url, id);
    expect(task.status.state).toBe('TASK_STATE_CANCELED');
    expect(task.artifacts ?? []).toEqual([]);
  });
});
