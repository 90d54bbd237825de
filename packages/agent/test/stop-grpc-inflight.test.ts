// stop() waits for the gRPC calls in flight as it waits for the HTTP ones,
// and closes the gRPC port letting them finish: it counted only the HTTP
// requests, so a gRPC call in flight (here, still in its policy check when
// stop() began) was not waited for, and the gRPC server's close then cut it
// at once ("Connection dropped"), where JSON-RPC and HTTP+JSON gave the
// same call its answer. Real agents (dev Workload API, mTLS on loopback),
// the world's policy behind a gate the case opens.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LocalPolicyEnforcer, type PolicyEnforcer } from '@weave/authz';
import { agentsStoppedAfterEach, ID, POLICY, startOrchestrator, startWorld, type World } from './helpers.js';

let world: World;

beforeAll(async () => {
  world = await startWorld();
});

afterAll(async () => {
  await world?.close();
});

const agents = agentsStoppedAfterEach();

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** The world's policy; while `gate` is set, a decision on the `search` capability waits for it. */
function gatedPolicy(): { enforcer: PolicyEnforcer; close(gate: Promise<void>): void; waiting(): boolean } {
  const inner = LocalPolicyEnforcer.fromString(POLICY, { audit: { record: () => undefined } });
  let gate: Promise<void> | undefined;
  let waiting = false;
  return {
    enforcer: {
      checkOutbound: (check) => inner.checkOutbound(check),
      async checkInbound(check) {
        if (check.action === 'search' && gate) {
          waiting = true;
          await gate;
        }
        return inner.checkInbound(check);
      },
    },
    close: (g) => (gate = g),
    waiting: () => waiting,
  };
}

describe('stop() with a call in flight', () => {
  for (const binding of ['JSONRPC', 'HTTP+JSON', 'GRPC'] as const) {
    it(`${binding}: waits for it, and its caller gets the answer`, async () => {
      const policy = gatedPolicy();
      const search = agents.search({
        enforcer: policy.enforcer,
        config: {
          name: 'search',
          identity: { workloadApi: { socket: world.dev.address('search') } },
          server: { bindings: [binding] },
        },
      });
      await search.start();
      const orchestrator = agents.track(await startOrchestrator(world, search.url));

      let open!: () => void;
      policy.close(new Promise<void>((resolve) => (open = resolve)));
      const call = orchestrator
        .callAgent(ID.search, 'search', { q: 'in flight' }, { timeoutMs: 5_000 })
        .catch((e: unknown) => e);
      for (let i = 0; i < 500 && !policy.waiting(); i++) await sleep(2);
      expect(policy.waiting()).toBe(true);

      const stopping = search.stop({ drainTimeoutMs: 2_000 });
      await sleep(100);
      open();
      expect(await call).toEqual({ hits: ['in flight'] });
      await stopping;
      expect(search.state).toBe('stopped');
    });
  }
});
