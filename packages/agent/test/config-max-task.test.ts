// `server.maxTaskMs`: the longest a task's handler may run, whatever deadline
// the caller sent (@weave/a2a's `limits.maxTaskMs`). Read from the config and
// the environment, refused out of range, and handed to the agent's A2A
// server: a handler that ignores its signal is failed at the bound.
import { describe, expect, it, vi } from 'vitest';
import { z } from 'zod';
import { AgentConfigError, CallError, applyEnvOverrides, parseAgentConfig } from '../src/index.js';
import { ID, memoryLogger, sample, worldForAllTests } from './helpers.js';

const minimal = { name: 'search', authz: { policyFile: 'policy.yaml' } };

function issuePaths(fn: () => unknown): string[] {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(AgentConfigError);
    return (err as AgentConfigError).issues.map((i) => i.path);
  }
  throw new Error('expected AgentConfigError');
}

describe('server.maxTaskMs in the config', () => {
  it('is unset by default (the A2A server’s own default applies) and taken when given', () => {
    expect(parseAgentConfig(minimal, { env: {} }).server.maxTaskMs).toBeUndefined();
    const c = parseAgentConfig({ ...minimal, server: { maxTaskMs: 7_200_000 } }, { env: {} });
    expect(c.server.maxTaskMs).toBe(7_200_000);
  });

  it('is read from the environment as a number', () => {
    const env = { WEAVE_SERVER__MAX_TASK_MS: '600000' };
    const c = parseAgentConfig(applyEnvOverrides(minimal, env), { env });
    expect(c.server.maxTaskMs).toBe(600_000);
  });

  it.each([0, -5, 1.5, 2 ** 31])('refuses %s, naming the key', (maxTaskMs) => {
    expect(issuePaths(() => parseAgentConfig({ ...minimal, server: { maxTaskMs } }, { env: {} }))).toContain(
      'server.maxTaskMs',
    );
  });
});

describe('server.maxTaskMs on a running agent', () => {
  const w = worldForAllTests();

  it('fails a task whose handler ignores its signal at the bound, long before the caller’s deadline', async () => {
    const search = w
      .search({ server: { maxTaskMs: 300 } })
      // Never settles and never looks at ctx.signal.
      .capability('stuck', { input: z.object({}) }, () => new Promise<never>(() => {}));
    const orch = await w.startWithOrchestrator(search);
    const t0 = performance.now();
    const err = (await orch
      .callAgent(ID.search, 'stuck', {}, { timeoutMs: 20_000 })
      .catch((e: unknown) => e)) as CallError;
    const ms = performance.now() - t0;
    expect(err).toBeInstanceOf(CallError);
    expect(err.code).toBe('CALL_FAILED');
    expect(err.taskState).toBe('TASK_STATE_FAILED');
    expect(err.message).toContain('it ran longer than this agent allows a task (300 ms)');
    expect(ms).toBeLessThan(5000);
  });

  it('counts and logs a task failed at the bound as a failure (DEADLINE_EXCEEDED), not as a cancel', async () => {
    const { logger, lines } = memoryLogger();
    const search = w
      .search({ logger, server: { maxTaskMs: 300 } })
      // Slow, but stops when its signal aborts.
      .capability(
        'slow',
        { input: z.object({}) },
        (_input, ctx) =>
          new Promise<never>((_resolve, reject) =>
            ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason as Error)),
          ),
      );
    const orch = await w.startWithOrchestrator(search);
    const err = (await orch.callAgent(ID.search, 'slow', {}).catch((e: unknown) => e)) as CallError;
    expect(err.taskState).toBe('TASK_STATE_FAILED');
    const inbound = (outcome: string) =>
      sample(search.metrics.calls, { direction: 'inbound', capability: 'slow', outcome });
    await vi.waitFor(async () => expect(await inbound('error')).toBe(1));
    expect(await inbound('success')).toBe(0);
    const line = lines.find((l) => l.capability === 'slow' && l.direction === 'inbound');
    expect(line).toMatchObject({ msg: 'call failed', code: 'DEADLINE_EXCEEDED', outcome: 'error' });
  });
});
