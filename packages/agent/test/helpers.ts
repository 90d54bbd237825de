// Shared set-up of the end-to-end tests: the real dev Workload API server
// (gRPC over Unix sockets, dev CA), real SecureAgents on loopback mTLS, and a
// local policy file.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pino, type Logger } from 'pino';
import { startWorkloadApi, type WorkloadApiWorld } from '@weave/test-support';
import { SecureAgent, type AgentConfigInput } from '../src/index.js';

export const TD = 'demo.weave';
export const ID = {
  orchestrator: `spiffe://${TD}/agent/orchestrator`,
  search: `spiffe://${TD}/agent/search`,
  summarizer: `spiffe://${TD}/agent/summarizer`,
  intruder: `spiffe://${TD}/agent/intruder`,
} as const;

/** Quiet unless WEAVE_TEST_LOG=debug (or another pino level) is set. */
export function testLogger(): Logger {
  return pino({ level: process.env.WEAVE_TEST_LOG ?? 'silent' });
}

export const POLICY = `
version: 1
id: e2e
default: deny
rules:
  - id: orchestrator-calls-search
    effect: allow
    callers: ['${ID.orchestrator}']
    callees: ['${ID.search}']
    actions: ['search', 'slow', 'steps', 'fail', 'nested', 'stuck']
  - id: search-calls-summarizer
    effect: allow
    callers: ['${ID.search}']
    callees: ['${ID.summarizer}']
    actions: ['summarize']
  - id: orchestrator-reads-metrics
    effect: allow
    callers: ['${ID.orchestrator}']
    actions: ['weave:metrics']
`;

export interface World extends WorkloadApiWorld<string> {
  policyFile: string;
}

export async function startWorld(
  options: { ttlSeconds?: number; extra?: Record<string, string | null> } = {},
): Promise<World> {
  const world = await startWorkloadApi({
    trustDomain: TD,
    workloads: {
      orchestrator: ID.orchestrator,
      search: ID.search,
      summarizer: ID.summarizer,
      intruder: ID.intruder,
      ...options.extra,
    },
    ttlSeconds: options.ttlSeconds,
    logger: testLogger(),
  });
  const policyFile = join(world.dir, 'policy.yaml');
  await writeFile(policyFile, POLICY);
  return { ...world, policyFile };
}

/** The value of one sample of a prom-client metric, 0 when absent. */
export async function sample(
  metric: { get(): Promise<{ values: Array<{ value: number; labels: Record<string, string | number> }> }> },
  labels: Record<string, string>,
): Promise<number> {
  const { values } = await metric.get();
  return values
    .filter((v) => Object.entries(labels).every(([k, want]) => String(v.labels[k]) === want))
    .reduce((n, v) => n + v.value, 0);
}

/**
 * A started orchestrator agent of `world` (its Workload API socket, the shared
 * policy file) that knows the search agent at `searchUrl`.
 */
export async function startOrchestrator(
  world: World,
  searchUrl: string,
  transport?: AgentConfigInput['transport'],
): Promise<SecureAgent> {
  const agent = new SecureAgent({
    config: {
      name: 'orchestrator',
      identity: { workloadApi: { socket: world.dev.address('orchestrator') } },
      authz: { policyFile: world.policyFile },
      peers: [{ id: ID.search, url: searchUrl }],
      ...(transport ? { transport } : {}),
    },
    logger: testLogger(),
  });
  await agent.start();
  return agent;
}
