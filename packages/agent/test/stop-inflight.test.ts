// stop() of an agent whose own call to another agent is still running ends
// that call and its connection. The outbound channel gets 1 s to close
// gracefully, then is destroyed; the destroy used to reach no connection
// (undici's Agent forgets its pools once closed), so the stopped agent's call
// ran on over its mTLS connection and succeeded seconds after stop()
// resolved, and the process could not exit before the callee answered. Real
// agents (dev Workload API, mTLS on loopback, local policy); a TCP relay
// between them shows which connections are still open.
//
// A streaming call cut that way then tried to resume its stream three times
// (100/200/400 ms apart) over the closed channel and failed ~0.7 s after
// stop() resolved, saying its stream "broke 4 times in a row: … The circuit
// has been shutdown.": the agent now aborts its calls once the grace is over,
// and they end saying the agent stopped, without resuming.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { TcpRelay, settledWithin as within } from '@weave/test-support/tcp-relay';
import { LocalPolicyEnforcer, type OutboundCheck, type PolicyEnforcer } from '@weave/authz';
import { CallError, SecureAgent } from '../src/index.js';
import { ID, startOrchestrator, startWorld, testLogger, type World } from './helpers.js';

/** How long the callee's capability takes to answer. */
const ANSWER_MS = 5_000;
/** How long the callee's quick capability takes: less than stop() at 500 ms plus the channel's 1 s grace. */
const QUICK_MS = 800;

let world: World;
let search: SecureAgent;
let relay: TcpRelay;

beforeAll(async () => {
  world = await startWorld();
  search = new SecureAgent({
    config: {
      name: 'search',
      identity: { workloadApi: { socket: world.dev.address('search') } },
      authz: { policyFile: world.policyFile },
    },
    logger: testLogger(),
  })
    .capability('slow', { input: z.object({}) }, async (_input, ctx) => {
      // Progress keeps a streaming call's events flowing; the answer comes late either way.
      for (let left = ANSWER_MS; left > 0; left -= 250) {
        ctx.progress('working');
        await new Promise((resolve) => setTimeout(resolve, 250));
      }
      return 'done';
    })
    .capability('steps', { input: z.object({}) }, async (_input, ctx) => {
      // Answers within the channel's grace when stop() comes 500 ms into the call.
      for (let left = QUICK_MS; left > 0; left -= 200) {
        ctx.progress('working');
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
      return 'quick';
    });
  await search.start();
  relay = new TcpRelay(Number(new URL(search.url).port));
  await relay.listen();
});

const callers: SecureAgent[] = [];

afterEach(async () => {
  await Promise.all(callers.splice(0).map((a) => a.stop({ drainTimeoutMs: 0 })));
  relay.drop();
});

afterAll(async () => {
  await relay?.close();
  await search?.stop({ drainTimeoutMs: 0 });
  await world?.close();
});

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('stop() while the agent is calling another agent', () => {
  for (const stream of [false, true]) {
    it(`${stream ? 'streaming' : 'unary'}: the call fails, and its connection is closed when stop() resolves`, async () => {
      const orchestrator = await startOrchestrator(world, `https://127.0.0.1:${relay.port}`);
      callers.push(orchestrator);
      const started = Date.now();
      // Settled here, so that a case that fails early leaves no rejection unhandled.
      const call = orchestrator
        .callAgent(ID.search, 'slow', {}, { stream, timeoutMs: 30_000, onProgress: () => undefined })
        .then(
          (v: unknown) => v,
          (e: unknown) => e,
        );
      // The call is running on the callee, over a connection through the relay.
      await sleep(500);
      expect(relay.serverSide).toBe(1);
      const connections = relay.accepted;

      await orchestrator.stop({ drainTimeoutMs: 0 });
      // 1 s of grace for the channel, then the destroy: long before the answer.
      expect(Date.now() - started).toBeLessThan(ANSWER_MS - 1_000);
      // The call has ended by then, without trying to resume (a streaming one used to, for ~0.7 s more).
      const err = await within(call, 50);
      expect(err).toBeInstanceOf(CallError);
      expect((err as CallError).code).toBe('CALL_FAILED');
      expect((err as CallError).message).toMatch(/the agent stopped while the call was in flight/);
      // The caller closed it: the relay passes the close on to the callee's side at once.
      for (let i = 0; i < 50 && relay.serverSide > 0; i++) await sleep(10);
      expect(relay.serverSide).toBe(0);
      // Nothing more reaches the callee: no new connection over the time the resumes took.
      await sleep(800);
      expect(relay.accepted).toBe(connections);
    }, 15_000);
  }

  it('streaming: a call that ends within the channel grace still gets its answer', async () => {
    const orchestrator = await startOrchestrator(world, `https://127.0.0.1:${relay.port}`);
    callers.push(orchestrator);
    const call = orchestrator
      .callAgent(ID.search, 'steps', {}, { stream: true, timeoutMs: 30_000, onProgress: () => undefined })
      .then(
        (v: unknown) => v,
        (e: unknown) => e,
      );
    await sleep(500);
    await orchestrator.stop({ drainTimeoutMs: 0 });
    expect(await within(call, 50)).toBe('quick');
  }, 15_000);

  it('a call still awaiting its policy check when stop() came is refused, and opens no connection', async () => {
    const policy = await LocalPolicyEnforcer.fromFile(world.policyFile, { watch: false });
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    let asked!: () => void;
    const checking = new Promise<void>((resolve) => (asked = resolve));
    // The shared policy allows the call; its outbound check waits until stop() has resolved.
    const enforcer: PolicyEnforcer = {
      checkInbound: (c) => policy.checkInbound(c),
      async checkOutbound(c: OutboundCheck) {
        asked();
        await gate;
        return policy.checkOutbound(c);
      },
      close: () => policy.close(),
    };
    const orchestrator = new SecureAgent({
      config: {
        name: 'orchestrator',
        identity: { workloadApi: { socket: world.dev.address('orchestrator') } },
        authz: { policyFile: world.policyFile },
        peers: [{ id: ID.search, url: `https://127.0.0.1:${relay.port}` }],
      },
      enforcer,
      logger: testLogger(),
    });
    callers.push(orchestrator);
    await orchestrator.start();
    const before = relay.accepted;
    const call = orchestrator.callAgent(ID.search, 'steps', {}, { timeoutMs: 30_000 }).then(
      (v: unknown) => v,
      (e: unknown) => e,
    );
    await checking;
    await orchestrator.stop({ drainTimeoutMs: 0 });
    release();
    const err = await within(call, 2_000);
    expect(err).toBeInstanceOf(CallError);
    expect((err as CallError).code).toBe('AGENT_NOT_STARTED');
    expect(relay.accepted).toBe(before);
  }, 15_000);
});
