// weave_calls_total counts calls: a denied message that would have started
// one is a denied call of the capability it named; any other denial (a
// GetTask, CancelTask, reply or ListTasks on a task, a ListTasks asked about
// every served skill, a /metrics scrape) is a policy decision, counted in
// weave_authz_decisions_total, and no call. Each of those used to be a denied
// call too: a caller refused ListTasks made one per served skill, of
// capabilities it never named, and a refused scrape a call of `weave:metrics`.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { A2AClient, A2AError, buildMessage } from '@weave/a2a';
import { LocalPolicyEnforcer } from '@weave/authz';
import { SpiffeId } from '@weave/identity';
import { SecureChannel } from '@weave/transport';
import { AgentMetrics, REFUSAL_REASONS } from '../src/metrics.js';
import { SecureAgent } from '../src/index.js';
import { ID, POLICY, sample, startWorld, testLogger, type World } from './helpers.js';

let world: World;
let policyFile: string;
let policy: LocalPolicyEnforcer;
let search: SecureAgent;
const ran = { search: 0, slow: 0 };

/** The shared policy without the orchestrator's rules. */
const REVOKED = `
version: 1
id: revoked
default: deny
rules:
  - id: nobody
    effect: allow
    callers: ['spiffe://demo.weave/agent/nobody']
    actions: ['search']
`;

beforeAll(async () => {
  world = await startWorld();
  policyFile = join(world.dir, 'metrics-counts-policy.yaml');
  await writeFile(policyFile, POLICY);
  policy = await LocalPolicyEnforcer.fromFile(policyFile, { watch: false, logger: testLogger() });
  search = new SecureAgent({
    config: {
      name: 'search',
      identity: { workloadApi: { socket: world.dev.address('search') } },
      authz: { policyFile },
      observability: { ops: { host: '127.0.0.1', port: 0 } },
    },
    enforcer: policy,
    logger: testLogger(),
  })
    .capability('search', { input: z.object({ query: z.string() }) }, ({ query }) => {
      ran.search++;
      return { hits: [query] };
    })
    .capability('slow', { input: z.object({}) }, async (_input, ctx) => {
      ran.slow++;
      // Runs until canceled: a task that is there to be asked about.
      await new Promise((resolve) => ctx.signal.addEventListener('abort', resolve));
      return {};
    });
  await search.start();
});

afterAll(async () => {
  await search?.stop();
  await policy?.close();
  await world?.close();
});

async function client(who: 'orchestrator' | 'intruder') {
  const channel = new SecureChannel(await world.provider(who), SpiffeId.parse(ID.search));
  return { a2a: new A2AClient({ dispatcher: channel }), channel };
}

async function refusal(p: Promise<unknown>): Promise<string> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(A2AError);
  return (err as A2AError).code;
}

/** The inbound samples of weave_calls_total as the ops listener serves them. */
async function inboundCalls(): Promise<string[]> {
  const text = await (await fetch(`${search.opsUrl}/metrics`)).text();
  return text.split('\n').filter((l) => l.startsWith('weave_calls_total{direction="inbound"'));
}

describe('weave_calls_total, inbound denials', () => {
  it('counts a denied message that starts a task as a denied call, and no other denial', async () => {
    const orch = await client('orchestrator');
    const intr = await client('intruder');
    try {
      const started = await orch.a2a.sendMessage(search.url, {
        message: buildMessage('slow', {}),
        configuration: { returnImmediately: true },
      });
      if (!('task' in started)) throw new Error('no task');
      const task = started.task;
      expect(task.id).toBeTruthy();
      const decisions = () =>
        sample(search.metrics.authzDecisions, { direction: 'inbound', decision: 'deny' });
      const deniesBefore = await decisions();

      // The intruder: a message (a call), a ListTasks (asked about both skills), a scrape.
      expect(
        await refusal(intr.a2a.sendMessage(search.url, { message: buildMessage('search', { query: 'x' }) })),
      ).toBe('PERMISSION_DENIED');
      expect(await refusal(intr.a2a.listTasks(search.url))).toBe('PERMISSION_DENIED');
      const scrape = await intr.channel.get(`${search.url}/metrics`);
      expect(scrape.statusCode).toBe(403);
      await scrape.body.text();

      // The orchestrator, once revoked: its running task read, canceled, replied to, listed; a new message.
      await writeFile(policyFile, REVOKED);
      await policy.reload();
      expect(await refusal(orch.a2a.getTask(search.url, task.id))).toBe('PERMISSION_DENIED');
      expect(await refusal(orch.a2a.cancelTask(search.url, task.id))).toBe('PERMISSION_DENIED');
      const reply = { ...buildMessage('slow', {}), taskId: task.id };
      expect(await refusal(orch.a2a.sendMessage(search.url, { message: reply }))).toBe('PERMISSION_DENIED');
      expect(await refusal(orch.a2a.listTasks(search.url))).toBe('PERMISSION_DENIED');
      expect(
        await refusal(orch.a2a.sendMessage(search.url, { message: buildMessage('search', { query: 'y' }) })),
      ).toBe('PERMISSION_DENIED');

      // Every decision counted: 1 + 2 + 1 for the intruder, 5 for the orchestrator.
      expect((await decisions()) - deniesBefore).toBe(9);
      // Two calls denied, of the capability each message named; nothing else is a call.
      const denied = (await inboundCalls()).filter((l) => l.includes('outcome="denied"'));
      expect(denied).toEqual([
        `weave_calls_total{direction="inbound",capability="search",peer="${ID.intruder}",outcome="denied",agent="search"} 1`,
        `weave_calls_total{direction="inbound",capability="search",peer="${ID.orchestrator}",outcome="denied",agent="search"} 1`,
      ]);
      // No denied message ran a handler; the task denied a cancel still runs.
      expect(ran).toEqual({ search: 0, slow: 1 });
      await writeFile(policyFile, POLICY);
      await policy.reload();
      expect((await orch.a2a.getTask(search.url, task.id)).status.state).toBe('TASK_STATE_WORKING');
      expect((await orch.a2a.cancelTask(search.url, task.id)).status.state).toBe('TASK_STATE_CANCELED');
    } finally {
      await orch.channel.close();
      await intr.channel.close();
    }
  });
});

describe('weave_requests_refused_total', () => {
  it('counts refusals by A2A reason, and whatever else under one `other`', async () => {
    const m = new AgentMetrics({ agent: 'a' });
    for (let i = 0; i < 3; i++) m.requestRefused('UNAVAILABLE');
    m.requestRefused('RESOURCE_EXHAUSTED');
    // A reason is never taken from the request as is: 5000 made-up ones are one series.
    for (let i = 0; i < 5000; i++) m.requestRefused(`made-up-${i}`);
    m.requestRefused('__proto__');
    expect(await sample(m.requestsRefused, { reason: 'UNAVAILABLE' })).toBe(3);
    expect(await sample(m.requestsRefused, { reason: 'RESOURCE_EXHAUSTED' })).toBe(1);
    expect(await sample(m.requestsRefused, { reason: 'other' })).toBe(5001);
    const series = (await m.render()).body
      .split('\n')
      .filter((l) => l.startsWith('weave_requests_refused_total{'));
    expect(series).toHaveLength(3);
    for (const r of REFUSAL_REASONS) m.requestRefused(r);
    expect((await m.requestsRefused.get()).values).toHaveLength(REFUSAL_REASONS.length);
  });
});
