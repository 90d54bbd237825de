// `weave call` giving up must reach the callee: its --timeout travels as the
// deadline header a Weave agent aborts its handler at, and a Ctrl-C (SIGINT)
// or SIGTERM cancels the task it started and exits 128 + the signal's number.
// Before, the callee's handler ran on (up to its maxTaskMs, an hour by default)
// after the command had given up, and a Ctrl-C exited 1.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SecureAgent } from '@weave/agent';
import { DevWorkloadApiServer } from '@weave/identity/dev';
import { collectOutput, spawnWeave, stopWeave, weave } from './helpers.js';

const TD = 'deadline.weave';
const ID = { slow: `spiffe://${TD}/agent/slow`, cli: `spiffe://${TD}/user/cli` };
const silent = pino({ level: 'silent' });

// zod is a dependency of @weave/agent, not of the CLI: the agent's own copy builds its input schemas.
type Schema = Parameters<SecureAgent['capability']>[1]['input'];
const { z } = createRequire(new URL('../../../packages/agent/package.json', import.meta.url))('zod') as {
  z: { object: (shape: Record<string, unknown>) => Schema; number: () => unknown };
};

/** One run of a handler: when it started, and when and why its signal aborted. */
interface HandlerRun {
  readonly started: number;
  /** Resolves with the abort's time and reason name once the handler's signal aborts. */
  readonly aborted: Promise<{ at: number; reason: string }>;
}

const runs: Record<'hang' | 'tick', HandlerRun[]> = { hang: [], tick: [] };

/** Records a handler run and resolves its `aborted` when `signal` aborts. */
function record(which: keyof typeof runs, signal: AbortSignal): void {
  const aborted = new Promise<{ at: number; reason: string }>((resolve) => {
    signal.addEventListener('abort', () => {
      const r = signal.reason as { name?: unknown } | undefined;
      resolve({ at: Date.now(), reason: typeof r?.name === 'string' ? r.name : String(r) });
    });
  });
  runs[which].push({ started: Date.now(), aborted });
}

/** `p`'s value, or `undefined` if it has not settled within `ms`. */
function within<T>(p: Promise<T>, ms: number): Promise<T | undefined> {
  return Promise.race([p, new Promise<undefined>((r) => setTimeout(() => r(undefined), ms).unref())]);
}

let dir: string;
let dev: DevWorkloadApiServer;
let agent: SecureAgent;
let env: { SPIFFE_ENDPOINT_SOCKET: string };
let peer: string[];

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'weave-cli-deadline-'));
  dev = await DevWorkloadApiServer.start({
    stateDir: dir,
    trustDomain: TD,
    workloads: { slow: ID.slow, cli: ID.cli },
    logger: silent,
  });
  const policyFile = join(dir, 'policy.yaml');
  await writeFile(
    policyFile,
    [
      'version: 1',
      'id: slow-inbound',
      'default: deny',
      'rules:',
      `  - {id: cli, effect: allow, callers: ['${ID.cli}'], callees: ['${ID.slow}'], actions: [tick, hang]}`,
      '',
    ].join('\n'),
  );
  agent = new SecureAgent({
    config: {
      name: 'slow',
      identity: { workloadApi: { socket: dev.address('slow') } },
      authz: { policyFile },
    },
    logger: silent,
  });
  // Never answers: ends only when its signal aborts (deadline, cancel, agent stopping).
  agent.capability('hang', { input: z.object({}) }, (_input, ctx) => {
    record('hang', ctx.signal);
    return new Promise((_resolve, reject) => {
      ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason as Error));
    });
  });
  // A progress line every 100 ms for n steps, stopping when its signal aborts.
  agent.capability('tick', { input: z.object({ n: z.number() }) }, async (input, ctx) => {
    record('tick', ctx.signal);
    const { n } = input as { n: number };
    for (let i = 1; i <= n; i++) {
      ctx.signal.throwIfAborted();
      ctx.progress(`tick ${i}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    return { done: n };
  });
  await agent.start();
  env = { SPIFFE_ENDPOINT_SOCKET: dev.address('cli') };
  peer = ['--peer', `${ID.slow}=${agent.url}`];
});

afterAll(async () => {
  await agent?.stop({ drainTimeoutMs: 0 });
  await dev?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('weave call: giving up reaches the callee', () => {
  it("--timeout travels as the deadline: the callee's handler signal aborts at it, not an hour later", async () => {
    const r = await weave(['call', ID.slow, 'hang', '{}', ...peer, '--timeout', '1500ms'], env);
    const exited = Date.now();
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('DEADLINE_EXCEEDED');
    expect(runs.hang).toHaveLength(1);
    const run = runs.hang[0]!;
    // The deadline is 1.5 s after the command started, so less than that after the handler started.
    const aborted = await within(run.aborted, 1500);
    expect(aborted, 'the handler signal aborted').toBeDefined();
    expect(aborted!.reason).toBe('TimeoutError');
    expect(aborted!.at - run.started).toBeLessThanOrEqual(1500);
    // About when the command gave up (it exits once it closed its connection).
    expect(aborted!.at).toBeLessThanOrEqual(exited + 500);
  });

  it("SIGINT during --stream cancels the callee's task and exits 130", async () => {
    const child = spawnWeave(['call', ID.slow, 'tick', '{"n":100}', '--stream', ...peer], env);
    const out = collectOutput(child);
    try {
      // Once progress shows, the task runs on the callee and the CLI knows its id.
      await new Promise<void>((resolve, reject) => {
        child.stderr?.on('data', () => {
          if (/tick 1\b/.test(out.output())) resolve();
        });
        child.once('exit', () => reject(new Error(`weave exited before any progress: ${out.output()}`)));
      });
      const sent = Date.now();
      child.kill('SIGINT');
      const r = await out.done;
      expect(r.code).toBe(130);
      const run = runs.tick.at(-1)!;
      const aborted = await within(run.aborted, 2000);
      expect(aborted, 'the handler signal aborted').toBeDefined();
      expect(aborted!.at - sent).toBeLessThan(2000);
      expect(r.stderr).toMatch(
        /^CALL_INTERRUPTED: stopped by SIGINT; CancelTask sent: task \S+ is canceled$/m,
      );
    } finally {
      await stopWeave(child);
    }
  });

  it('SIGTERM during a unary call exits 143; the task it cannot name ends at the deadline', async () => {
    const before = runs.hang.length;
    const child = spawnWeave(['call', ID.slow, 'hang', '{}', ...peer, '--timeout', '2s'], env);
    const out = collectOutput(child);
    try {
      // Sent once the handler runs: the call is on the wire, its task id not yet known.
      const deadline = Date.now() + 20_000;
      while (runs.hang.length === before && Date.now() < deadline)
        await new Promise((r) => setTimeout(r, 20));
      expect(runs.hang.length).toBe(before + 1);
      child.kill('SIGTERM');
      const r = await out.done;
      expect(r.code).toBe(143);
      expect(r.stderr).toMatch(/^CALL_INTERRUPTED: stopped by SIGTERM; no task id yet/m);
      const aborted = await within(runs.hang[before]!.aborted, 2500);
      expect(aborted?.reason).toBe('TimeoutError');
    } finally {
      await stopWeave(child);
    }
  });
});
