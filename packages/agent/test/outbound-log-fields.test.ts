// The caller's log line of a failed or denied call said only that it failed
// (`{"direction":"outbound","outcome":"error","msg":"call failed"}`): not
// why, and not a denial's audit id, which the callee's inbound line and the
// CallError carry. Real agent (dev Workload API); the peer's port is closed.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { CallError, SecureAgent } from '../src/index.js';
import { ID, memoryLogger, startWorld, type MemoryLogger, type World } from './helpers.js';

let world: World;
let agent: SecureAgent;
let log: MemoryLogger;

beforeAll(async () => {
  world = await startWorld();
  log = memoryLogger();
  agent = new SecureAgent({
    config: {
      name: 'orchestrator',
      identity: { workloadApi: { socket: world.dev.address('orchestrator') } },
      authz: { policyFile: world.policyFile },
      // Nothing listens on port 1: a call the policy allows fails to connect.
      peers: [{ id: ID.search, url: 'https://127.0.0.1:1' }],
    },
    logger: log.logger,
    env: {},
  });
  await agent.start();
});

afterAll(async () => {
  await agent?.stop();
  await world?.close();
});

/** The one outbound line with message `msg`, parsed. */
function lineOf(msg: string): Record<string, unknown> {
  const lines = log.raw.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.msg === msg);
  expect(lines).toHaveLength(1);
  return lines[0]!;
}

it("a denied call's line names the code, who denied it and the decision's audit id", async () => {
  log.raw.length = 0;
  const err = (await agent
    .callAgent(ID.search, 'not-in-the-policy', {})
    .catch((e: unknown) => e)) as CallError;
  expect(err).toBeInstanceOf(CallError);
  expect(err.auditId).toMatch(/^[0-9a-f-]{36}$/);
  expect(lineOf('call denied')).toMatchObject({
    direction: 'outbound',
    outcome: 'denied',
    code: 'CALL_DENIED',
    deniedBy: 'caller',
    auditId: err.auditId,
  });
});

it("a failed call's line names the code", async () => {
  log.raw.length = 0;
  const err = (await agent
    .callAgent(ID.search, 'search', {}, { timeoutMs: 2_000 })
    .catch((e: unknown) => e)) as CallError;
  expect(err).toBeInstanceOf(CallError);
  expect(lineOf('call failed')).toMatchObject({ direction: 'outbound', outcome: 'error', code: err.code });
});
