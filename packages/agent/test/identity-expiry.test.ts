// Readiness follows the identity: with the dev Workload API server gone, the
// agents' short-lived SVIDs really expire and /ready says so; once the server
// is back, fresh SVIDs arrive, /ready is 200 again and calls go through.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, expect, it, vi } from 'vitest';
import { z } from 'zod';
import { DevWorkloadApiServer } from '@weave/identity/dev';
import { CallError, SecureAgent } from '../src/index.js';
import { ID, POLICY, TD, testLogger } from './helpers.js';

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function startDev(dir: string): Promise<DevWorkloadApiServer> {
  const dev = await DevWorkloadApiServer.start({
    stateDir: dir,
    trustDomain: TD,
    workloads: { search: ID.search, orchestrator: ID.orchestrator },
    // Short enough to expire in the test, long enough for two agents to start on a loaded machine.
    x509SvidTtlSeconds: 5,
    logger: testLogger(),
  });
  cleanups.push(() => dev.close());
  return dev;
}

async function ready(agent: SecureAgent): Promise<{ status: number; body: unknown }> {
  const r = await fetch(`${agent.opsUrl!}/ready`);
  return { status: r.status, body: await r.json() };
}

it('reports not ready while its SVID is expired, with the reason, and ready again when a fresh one arrives', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'weave-expiry-'));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  const policyFile = join(dir, 'policy.yaml');
  await writeFile(policyFile, POLICY);
  const dev = await startDev(dir);
  const sockets = { search: dev.address('search'), orchestrator: dev.address('orchestrator') };

  const search = new SecureAgent({
    logger: testLogger(),
    env: {},
    config: {
      name: 'search',
      authz: { policyFile },
      identity: { workloadApi: { socket: sockets.search } },
      observability: { ops: { port: 0 } },
    },
  }).capability('search', { input: z.object({ q: z.string() }) }, ({ q }) => ({ hits: [q] }));
  cleanups.push(() => search.stop({ drainTimeoutMs: 100 }));
  await search.start();
  const orch = new SecureAgent({
    logger: testLogger(),
    env: {},
    config: {
      name: 'orchestrator',
      authz: { policyFile },
      identity: { workloadApi: { socket: sockets.orchestrator } },
      peers: [{ id: ID.search, url: search.url }],
    },
  });
  cleanups.push(() => orch.stop({ drainTimeoutMs: 100 }));
  await orch.start();
  expect(await ready(search)).toEqual({ status: 200, body: { ready: true } });

  // Nothing renews the 5 s SVIDs any more.
  await dev.close();
  await vi.waitFor(async () => expect((await ready(search)).status).toBe(503), {
    timeout: 15_000,
    interval: 50,
  });
  const down = (await ready(search)).body as { ready: boolean; reason: string };
  expect(down.ready).toBe(false);
  const expected = new RegExp(
    `^no usable X\\.509-SVID: the X\\.509-SVID of ${ID.search.replaceAll('.', '\\.')} expired at ` +
      `\\d{4}-\\d\\d-\\d\\dT[\\d:.]+Z and the Workload API at ${sockets.search} has not delivered a new one`,
  );
  expect(down.reason).toMatch(expected);
  expect(search.notReadyReason()).toMatch(expected);

  // The caller's own SVID has expired too: a call fails at once with an identity
  // error that says so, instead of handshaking with a certificate the callee refuses.
  await vi.waitFor(() => expect(orch.notReadyReason()).toBeDefined(), { timeout: 15_000, interval: 50 });
  const err = (await orch
    .callAgent(ID.search, 'search', { q: 'down' })
    .catch((e: unknown) => e)) as CallError;
  expect(err).toBeInstanceOf(CallError);
  expect(err.code).toBe('AGENT_NO_IDENTITY');
  expect(err.message).toMatch(
    new RegExp(`X\\.509-SVID of ${ID.orchestrator.replaceAll('.', '\\.')} expired at \\d{4}-`),
  );

  // Back with the same trust domain: both agents get fresh SVIDs, serve and call with them.
  await startDev(dir);
  await vi.waitFor(async () => expect(await ready(search)).toEqual({ status: 200, body: { ready: true } }), {
    timeout: 30_000,
    interval: 100,
  });
  expect(search.notReadyReason()).toBeUndefined();
  await vi.waitFor(() => expect(orch.notReadyReason()).toBeUndefined(), { timeout: 30_000, interval: 100 });
  await expect(orch.callAgent(ID.search, 'search', { q: 'back' })).resolves.toMatchObject({ hits: ['back'] });
}, 60_000);
