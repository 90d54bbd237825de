// An agent's calls over the gRPC binding count in the peer's circuit breaker,
// the one its HTTP requests count in (the peer's SecureChannel's). grpc-js
// made the gRPC calls on its own, so a peer down behind that binding never
// opened the breaker: every call went on trying to connect. Now a failure
// before any answer (connections refused, a connect that hangs past the
// call's deadline) counts, an answer of the peer (a policy denial,
// TASK_NOT_FOUND) or a deadline on a call the peer took does not, as on the
// HTTP bindings; an open breaker refuses a call at once, typed as there,
// with no connection made and nothing run; a half-open trial over gRPC that
// is answered closes it. Real agents (dev Workload API, mTLS on loopback); the callee serves
// gRPC only, its card sending callers through a TCP relay the test cuts.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { A2AClient, A2AClientError, A2AError } from '@weave/a2a';
import { LocalPolicyEnforcer, type PolicyEnforcer } from '@weave/authz';
import { freePort, TcpRelay } from '@weave/test-support/tcp-relay';
import { CircuitOpenError, SecureChannel, type TransportConfigInput } from '@weave/transport';
import { CallError, SecureAgent } from '../src/index.js';
import { agentsStoppedAfterEach, ID, startWorld, testLogger, type World } from './helpers.js';

let world: World;

beforeAll(async () => {
  world = await startWorld();
});

afterAll(async () => {
  await world?.close();
});

const agents = agentsStoppedAfterEach();

const relays: TcpRelay[] = [];
afterAll(async () => {
  for (const r of relays.splice(0)) {
    r.release();
    await r.close();
  }
});

/** A callee that denies every inbound call (no rule allows it); the orchestrator's own policy allows `search`. */
const DENY_ALL = `version: 1
id: callee-denies
default: deny
rules:
  - id: nothing-of-use
    effect: allow
    callers: ['${ID.search}']
    actions: ['none']
`;

/**
 * A search agent serving gRPC only, whose card sends callers to a relay in
 * front of its gRPC port; an orchestrator calling it whose channels (one per
 * peer) the test can read, made with the agent's defaults plus `breaker`.
 */
async function setup(
  options: { enforcer?: PolicyEnforcer; breaker?: TransportConfigInput['circuitBreaker'] } = {},
) {
  const relay = new TcpRelay();
  relays.push(relay);
  await relay.listen();
  const grpcPort = await freePort();
  relay.target = grpcPort;
  const runs: string[] = [];
  const search = agents.track(
    new SecureAgent({
      logger: testLogger(),
      env: {},
      ...(options.enforcer ? { enforcer: options.enforcer } : {}),
      config: {
        name: 'search',
        identity: { workloadApi: { socket: world.dev.address('search') } },
        ...(options.enforcer ? {} : { authz: { policyFile: world.policyFile } }),
        server: {
          bindings: ['GRPC'],
          grpc: { port: grpcPort, host: '127.0.0.1', publicAddress: `127.0.0.1:${relay.port}` },
        },
      },
    }).capability('search', { input: z.object({ q: z.string() }) }, async ({ q }) => {
      runs.push(q);
      // Answers after the caller's deadline.
      if (q.startsWith('slow')) await new Promise((resolve) => setTimeout(resolve, 600));
      return { hits: [q] };
    }),
  );
  await search.start();
  const channels: SecureChannel[] = [];
  const orchestrator = agents.track(
    new SecureAgent({
      logger: testLogger(),
      env: {},
      config: {
        name: 'orchestrator',
        identity: { workloadApi: { socket: world.dev.address('orchestrator') } },
        authz: { policyFile: world.policyFile },
        peers: [{ id: ID.search, url: search.url }],
      },
      channel: (peer, identity, defaults) => {
        const c = new SecureChannel(identity, peer, {
          ...defaults,
          ...(options.breaker ? { circuitBreaker: options.breaker } : {}),
        });
        channels.push(c);
        return c;
      },
    }),
  );
  await orchestrator.start();
  const call = (q: string, timeoutMs = 3_000) =>
    orchestrator.callAgent(ID.search, 'search', { q }, { timeoutMs }).then(
      (v) => ({ ok: true as const, value: v }),
      (e: unknown) => ({ ok: false as const, error: e as CallError }),
    );
  /** The peer's breaker: that of the orchestrator's one channel to search. */
  const breaker = () => {
    expect(channels).toHaveLength(1);
    return (channels[0] as SecureChannel).circuitBreaker!;
  };
  return { relay, search, orchestrator, channels, runs, call, breaker };
}

/** Whether `err` or one of its causes is an instance of `type`. */
function causedBy(err: unknown, type: abstract new (...args: never[]) => unknown): boolean {
  for (let e = err; e instanceof Error; e = e.cause) if (e instanceof type) return true;
  return false;
}

describe("an agent's gRPC calls and the peer's circuit breaker", () => {
  it('failures open it; while open a call is refused at once, typed as on HTTP, with no connection and nothing run', async () => {
    const s = await setup();
    // Answered over gRPC, through the relay: the binding the test cuts is the one in use.
    expect(await s.call('first')).toEqual({ ok: true, value: { hits: ['first'] } });
    expect(s.relay.accepted).toBe(1);
    expect(s.breaker().state).toBe('closed');

    // The gRPC port is gone (connections refused); the callee's HTTP port is still up.
    await s.relay.close();
    const failures: unknown[] = [];
    // The default breaker: 10 calls in the window, half or more of them failed.
    for (let i = 0; i < 12 && s.breaker().state === 'closed'; i++) {
      const r = await s.call(`down ${i}`);
      expect(r.ok).toBe(false);
      failures.push(r.ok ? undefined : r.error);
    }
    expect(s.breaker().state).toBe('open');
    for (const e of failures) {
      expect(e).toBeInstanceOf(CallError);
      expect((e as CallError).code).toBe('CALL_FAILED');
      expect(causedBy(e, CircuitOpenError)).toBe(false);
    }

    // The peer is back, but the circuit is open: the call is refused without connecting.
    await s.relay.listen();
    const started = Date.now();
    const refused = await s.call('while open');
    const ms = Date.now() - started;
    expect(refused.ok).toBe(false);
    const err = refused.ok ? undefined : refused.error;
    expect(err).toBeInstanceOf(CallError);
    expect(err?.code).toBe('CALL_FAILED');
    expect(err?.message).toMatch(/circuit open/);
    // What the HTTP bindings give for an open circuit: TRANSPORT_FAILED caused by the CircuitOpenError.
    expect(err?.cause).toBeInstanceOf(A2AClientError);
    expect((err?.cause as A2AClientError).code).toBe('TRANSPORT_FAILED');
    expect((err?.cause as Error).cause).toBeInstanceOf(CircuitOpenError);
    expect(ms).toBeLessThan(500);
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(s.relay.accepted).toBe(1);
    expect(s.runs).toEqual(['first']);
  });

  it("the peer's answers do not count: a denial and TASK_NOT_FOUND over gRPC leave it closed", async () => {
    const s = await setup({
      enforcer: LocalPolicyEnforcer.fromString(DENY_ALL, { audit: { record: () => undefined } }),
    });
    for (let i = 0; i < 12; i++) {
      const r = await s.call(`denied ${i}`);
      expect(r.ok).toBe(false);
      expect((r.ok ? undefined : r.error)?.code).toBe('CALL_DENIED');
    }
    // Over the same channel, as any A2A client of it: an A2A error the callee answers.
    const client = new A2AClient({ dispatcher: s.channels[0] as SecureChannel, timeoutMs: 3_000 });
    expect((await client.transportFor(s.search.url)).protocolBinding).toBe('GRPC');
    for (let i = 0; i < 12; i++) {
      const err = await client.getTask(s.search.url, `no-such-task-${i}`).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(A2AError);
      expect((err as A2AError).code).toBe('TASK_NOT_FOUND');
    }
    expect(s.relay.accepted).toBeGreaterThan(0);
    expect(s.runs).toEqual([]);
    expect(s.breaker().state).toBe('closed');
    expect(s.breaker().metrics().failures).toBe(0);
  });

  it("a connect that hangs past the call's deadline counts; a deadline on a call the callee took does not", async () => {
    const s = await setup({ breaker: { volumeThreshold: 3 } });
    expect((await s.call('first')).ok).toBe(true);
    // The callee runs each call and answers after its deadline: the caller's time ran out, not the peer.
    for (let i = 0; i < 2; i++) {
      const r = await s.call(`slow ${i}`, 300);
      expect((r.ok ? undefined : r.error)?.code).toBe('DEADLINE_EXCEEDED');
    }
    expect(s.runs).toEqual(['first', 'slow 0', 'slow 1']);
    expect(s.breaker().state).toBe('closed');
    expect(s.breaker().metrics().failures).toBe(0);
    // New connections are taken and never answered (their TLS handshake hangs).
    s.relay.hold();
    s.relay.drop();
    for (let i = 0; i < 8 && s.breaker().state === 'closed'; i++) {
      const r = await s.call(`held ${i}`, 200);
      expect((r.ok ? undefined : r.error)?.code).toBe('DEADLINE_EXCEEDED');
    }
    expect(s.breaker().state).toBe('open');
    expect(s.runs).toEqual(['first', 'slow 0', 'slow 1']);
  });

  it('a half-open trial over gRPC that the peer answers closes it', async () => {
    const s = await setup({ breaker: { volumeThreshold: 3, resetTimeoutMs: 300 } });
    expect((await s.call('first')).ok).toBe(true);
    await s.relay.close();
    for (let i = 0; i < 5 && s.breaker().state === 'closed'; i++) await s.call(`down ${i}`);
    expect(s.breaker().state).toBe('open');
    await s.relay.listen();
    await new Promise((resolve) => setTimeout(resolve, 400));
    expect(s.breaker().state).toBe('half-open');
    expect(await s.call('trial')).toEqual({ ok: true, value: { hits: ['trial'] } });
    expect(s.breaker().state).toBe('closed');
    expect(s.runs).toEqual(['first', 'trial']);
  });
});
