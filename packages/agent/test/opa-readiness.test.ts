// /ready follows the policy engine: an agent whose `authz.opa.url` points at
// an OPA that cannot be reached denies every call (fail closed), and used to
// answer /ready 200 {"ready":true} throughout, with nothing logged at start,
// so a rollout sent it traffic it could only refuse. Now it warns at start,
// /ready is 503 from the first failed exchange with OPA until one gets an
// answer, and /ready itself probes OPA's /health so that an OPA that is back
// is seen with no call. Real agents on the dev Workload API, and a real OPA
// (interop/opa.ts, as packages/authz/test/golden.test.ts starts it: skipped
// loudly when not installed, a failure under CI=true) killed and restarted on
// its port.
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { z } from 'zod';
import { A2AClient, A2AError, buildMessage } from '@weave/a2a';
import { SpiffeId } from '@weave/identity';
import { SecureChannel } from '@weave/transport';
import { SecureAgent } from '../src/index.js';
import { ID, memoryLogger, opsReady, sample, startWorld, type World } from './helpers.js';
import { requireComponent, waitUntil } from '../../../interop/infra.js';
import { startOpa, type Opa } from '../../../interop/opa.js';

const opaBin = requireComponent('opa');

/** The Weave policy document OPA is loaded with (as data.weave.policy, read by weave.rego). */
const POLICY = {
  version: 1,
  id: 'opa-readiness',
  default: 'deny',
  rules: [
    {
      id: 'orchestrator-calls-search',
      effect: 'allow',
      callers: [ID.orchestrator],
      callees: [ID.search],
      actions: ['search'],
    },
  ],
};

describe.skipIf(!opaBin)('/ready and the policy engine (a real OPA)', () => {
  let world: World;
  let opa: Opa;
  beforeAll(async () => {
    world = await startWorld();
    opa = await startOpa({ bin: opaBin!.opa, policy: POLICY, decisionLogs: false });
  });
  afterAll(async () => {
    await opa?.stop();
    await world?.close();
  });

  /** The search agent asking the OPA at `opa.url`, with its ops listener, and what it logged. */
  function searchAgent() {
    const handler = vi.fn(({ query }: { query: string }) => ({ hits: [query] }));
    const log = memoryLogger();
    const agent = new SecureAgent({
      config: {
        name: 'search',
        identity: { workloadApi: { socket: world.dev.address('search') } },
        authz: { opa: { url: opa.url } },
        observability: { ops: { host: '127.0.0.1', port: 0 } },
      },
      logger: log.logger,
    }).capability('search', { input: z.object({ query: z.string() }) }, handler);
    return { agent, handler, log };
  }

  /** One `search` message from the orchestrator: 'ok', or the A2A error code. */
  async function call(agent: SecureAgent): Promise<string> {
    const channel = new SecureChannel(await world.provider('orchestrator'), SpiffeId.parse(ID.search));
    try {
      const client = new A2AClient({ dispatcher: channel });
      await client.sendMessage(agent.url, { message: buildMessage('search', { query: 'q' }) });
      return 'ok';
    } catch (err) {
      if (err instanceof A2AError) return err.code;
      throw err;
    } finally {
      await channel.close();
    }
  }

  const readyAgain = (agent: SecureAgent) =>
    waitUntil('/ready 200', async () => (await opsReady(agent.opsUrl!)).status === 200, {
      timeoutMs: 5_000,
      intervalMs: 50,
    });

  it('is 503 from the first call OPA could not decide, with no handler run, and 200 again once OPA is back, with no call', async () => {
    const { agent, handler } = searchAgent();
    try {
      await agent.start();
      expect(await opsReady(agent.opsUrl!)).toEqual({ status: 200, body: { ready: true } });
      expect(await call(agent)).toBe('ok');

      await opa.service.kill();
      expect(await call(agent)).toBe('PERMISSION_DENIED');
      expect(handler).toHaveBeenCalledTimes(1);
      const down = await opsReady(agent.opsUrl!);
      expect(down.status).toBe(503);
      expect(down.body.reason).toMatch(
        new RegExp(
          `^the policy engine cannot be reached \\(last failure at \\d{4}-.+Z: opa: connection refused \\(${opa.url}\\)\\)$`,
        ),
      );
      // The engine failure is told apart from a policy's deny.
      expect(await sample(agent.metrics.authzEngineErrors, { direction: 'inbound' })).toBe(1);
      expect(await sample(agent.metrics.authzDecisions, { direction: 'inbound', decision: 'deny' })).toBe(1);

      await opa.service.restart();
      await readyAgain(agent);
      expect(await call(agent)).toBe('ok');
      expect(handler).toHaveBeenCalledTimes(2);
      expect(await sample(agent.metrics.authzEngineErrors, { direction: 'inbound' })).toBe(1);
    } finally {
      await agent.stop({ drainTimeoutMs: 0 });
    }
  });

  it('starts with a warning and /ready 503 when OPA cannot be reached, and is ready once OPA comes up', async () => {
    await opa.service.kill();
    const { agent, handler, log } = searchAgent();
    try {
      await agent.start();
      expect(log.lines).toContainEqual(
        expect.objectContaining({
          level: 40,
          reason: `opa health: connection refused (${opa.url})`,
          msg: expect.stringMatching(/^the policy engine \(OPA\) failed its health check/),
        }),
      );
      const atStart = await opsReady(agent.opsUrl!);
      expect(atStart.status).toBe(503);
      expect(atStart.body.reason).toMatch(/^the policy engine cannot be reached \(last failure at /);
      expect(await call(agent)).toBe('PERMISSION_DENIED');
      expect(handler).not.toHaveBeenCalled();
      expect((await opsReady(agent.opsUrl!)).status).toBe(503);

      await opa.service.restart();
      await readyAgain(agent);
      expect(await call(agent)).toBe('ok');
      expect(handler).toHaveBeenCalledTimes(1);
    } finally {
      await agent.stop({ drainTimeoutMs: 0 });
    }
  });
});
