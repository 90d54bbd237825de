/**
 * Real OPA (`opa run --server`, built by scripts/infra/opa.sh) with Weave's
 * policies/weave.rego:
 * - `opa check` and `opa test` on the Rego and its unit tests;
 * - OpaEnforcer deciding both sides of a real callAgent between two SecureAgents
 *   (dev Workload API identities, mTLS on loopback), each agent with its own OPA
 *   sidecar, OPA's decision ids in the audit records;
 * - the callee's OPA killed mid-run: calls are denied with a reason and no
 *   handler runs; when OPA is back, calls are allowed again;
 * - policy documents the local loader refuses: OPA denies every call, naming
 *   the same problem, instead of skipping what it cannot read.
 */
import { join } from 'node:path';
import { pino } from 'pino';
import { request } from 'undici';
import { z } from 'zod';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import {
  LocalPolicyEnforcer,
  OpaEnforcer,
  PolicyError,
  type AuditRecord,
  type AuditSink,
} from '@weave/authz';
import { SpiffeId } from '@weave/identity';
import { DevWorkloadApiServer } from '@weave/identity/dev';
import { CallError, SecureAgent } from '@weave/agent';
import { removeDir, requireComponent, tempDirFor, waitUntil } from '../infra.js';
import { opaCli, policiesDir, startOpa, weaveRego, type Opa } from '../opa.js';

const opaBin = requireComponent('opa');

const TD = 'opa.weave.test';
const ID = {
  orchestrator: `spiffe://${TD}/agent/orchestrator`,
  search: `spiffe://${TD}/agent/search`,
};

class Sink implements AuditSink {
  readonly records: AuditRecord[] = [];
  record(rec: AuditRecord): void {
    this.records.push(rec);
  }
}

describe.skipIf(!opaBin)('weave.rego under the opa CLI', () => {
  it('passes opa check --strict', () => {
    const r = opaCli(opaBin!.opa, ['check', '--strict', weaveRego, join(policiesDir, 'weave_test.rego')]);
    expect(r.out).toBe('');
    expect(r.status).toBe(0);
  });

  it('passes its Rego unit tests (opa test)', () => {
    const r = opaCli(opaBin!.opa, ['test', '--format=json', policiesDir]);
    expect(r.status, r.out).toBe(0);
    const results = z
      .array(z.object({ name: z.string(), fail: z.boolean().optional(), error: z.unknown().optional() }))
      .parse(JSON.parse(r.out));
    expect(results.length).toBeGreaterThanOrEqual(14);
    expect(results.filter((t) => t.fail || t.error)).toEqual([]);
  });
});

describe.skipIf(!opaBin)('OpaEnforcer on both sides of a real callAgent', () => {
  let dir: string;
  let dev: DevWorkloadApiServer;
  // Each agent has its own OPA sidecar, as in docs/kubernetes: the caller's
  // allows everything the orchestrator may attempt, the callee's is strict, so
  // an inbound denial is the callee's own.
  let callerOpa: Opa;
  let calleeOpa: Opa;
  let callerAuthz: OpaEnforcer;
  let calleeAuthz: OpaEnforcer;
  const callerAudit = new Sink();
  const calleeAudit = new Sink();
  let orchestrator: SecureAgent;
  let search: SecureAgent;
  const handler = vi.fn(({ query }: { query: string }) => ({ hits: [query] }));

  beforeAll(async () => {
    dir = await tempDirFor('weave-opa-agents-');
    dev = await DevWorkloadApiServer.start({
      stateDir: dir,
      trustDomain: TD,
      workloads: { orchestrator: ID.orchestrator, search: ID.search },
      logger: pino({ level: 'silent' }),
    });
    const rule = (id: string, actions: string[]) => ({
      id,
      effect: 'allow',
      callers: [ID.orchestrator],
      callees: [ID.search],
      actions,
    });
    [callerOpa, calleeOpa] = await Promise.all([
      startOpa({
        bin: opaBin!.opa,
        policy: {
          version: 1,
          id: 'caller-side',
          default: 'deny',
          rules: [rule('may-try', ['search', 'admin'])],
        },
      }),
      startOpa({
        bin: opaBin!.opa,
        policy: { version: 1, id: 'callee-side', default: 'deny', rules: [rule('may-search', ['search'])] },
      }),
    ]);
    callerAuthz = new OpaEnforcer({ url: callerOpa.url, audit: callerAudit, timeoutMs: 2_000 });
    calleeAuthz = new OpaEnforcer({ url: calleeOpa.url, audit: calleeAudit, timeoutMs: 2_000 });
    const logger = pino({ level: 'silent' });
    search = new SecureAgent({
      config: {
        name: 'search',
        spiffeId: ID.search,
        identity: { workloadApi: { socket: dev.address('search') } },
        authz: { opa: { url: calleeOpa.url } },
      },
      enforcer: calleeAuthz,
      logger,
    })
      .capability('search', { input: z.object({ query: z.string() }) }, handler)
      .capability('admin', { input: z.object({ query: z.string() }) }, handler);
    await search.start();
    orchestrator = new SecureAgent({
      config: {
        name: 'orchestrator',
        spiffeId: ID.orchestrator,
        identity: { workloadApi: { socket: dev.address('orchestrator') } },
        authz: { opa: { url: callerOpa.url } },
        peers: [{ id: ID.search, url: search.url }],
      },
      enforcer: callerAuthz,
      logger,
    });
    await orchestrator.start();
  });

  afterAll(async () => {
    await orchestrator?.stop();
    await search?.stop();
    await callerAuthz?.close();
    await calleeAuthz?.close();
    await callerOpa?.stop();
    await calleeOpa?.stop();
    await dev?.close();
    if (dir) await removeDir(dir);
  });

  it('allows a permitted call: both decisions come from OPA, with decision ids in the audit records', async () => {
    handler.mockClear();
    await expect(orchestrator.callAgent(ID.search, 'search', { query: 'q' })).resolves.toEqual({
      hits: ['q'],
    });
    expect(handler).toHaveBeenCalledTimes(1);
    const out = callerAudit.records.at(-1)!;
    const inn = calleeAudit.records.at(-1)!;
    expect(out).toMatchObject({
      direction: 'outbound',
      caller: ID.orchestrator,
      callee: ID.search,
      action: 'search',
      decision: 'allow',
      engine: 'opa',
      policyId: 'caller-side',
      ruleId: 'may-try',
      reason: 'opa: allowed by rule "may-try"',
    });
    expect(inn).toMatchObject({
      direction: 'inbound',
      caller: ID.orchestrator,
      callee: ID.search,
      action: 'search',
      decision: 'allow',
      engine: 'opa',
      policyId: 'callee-side',
      ruleId: 'may-search',
    });
    // OPA's decision ids: present, distinct, and the ones OPA itself logged.
    expect(out.opaDecisionId).toMatch(/^[0-9a-f-]{36}$/);
    expect(inn.opaDecisionId).toMatch(/^[0-9a-f-]{36}$/);
    await waitUntil(
      'OPA decision logs to name the decisions',
      () =>
        callerOpa.service.log().includes(out.opaDecisionId!) &&
        calleeOpa.service.log().includes(inn.opaDecisionId!),
    );
  });

  it('denies on the callee side when its OPA says no: the handler does not run', async () => {
    handler.mockClear();
    const err = (await orchestrator
      .callAgent(ID.search, 'admin', { query: 'x' })
      .catch((e: unknown) => e)) as CallError;
    expect(err).toBeInstanceOf(CallError);
    expect(err.code).toBe('CALL_DENIED');
    expect(err.deniedBy).toBe('callee');
    expect(handler).not.toHaveBeenCalled();
    expect(callerAudit.records.at(-1)).toMatchObject({
      direction: 'outbound',
      action: 'admin',
      decision: 'allow',
    });
    expect(calleeAudit.records.at(-1)).toMatchObject({
      direction: 'inbound',
      action: 'admin',
      decision: 'deny',
      reason: 'opa: no rule matched: default deny',
    });
    expect(calleeAudit.records.at(-1)!.opaDecisionId).toBeTruthy();
  });

  it('denies on the caller side when its OPA says no: nothing is sent', async () => {
    handler.mockClear();
    const inboundBefore = calleeAudit.records.length;
    const err = (await orchestrator
      .callAgent(ID.search, 'delete', { query: 'x' })
      .catch((e: unknown) => e)) as CallError;
    expect(err.code).toBe('CALL_DENIED');
    expect(err.deniedBy).toBe('caller');
    expect(err.decision?.reason).toBe('opa: no rule matched: default deny');
    expect(calleeAudit.records.length).toBe(inboundBefore);
    expect(handler).not.toHaveBeenCalled();
  });

  it('fails closed while the callee’s OPA is down, and recovers when it is back', async () => {
    handler.mockClear();
    await expect(orchestrator.callAgent(ID.search, 'search', { query: 'before' })).resolves.toBeTruthy();
    await calleeOpa.service.kill();
    const err = (await orchestrator
      .callAgent(ID.search, 'search', { query: 'during' })
      .catch((e: unknown) => e)) as CallError;
    expect(err).toBeInstanceOf(CallError);
    expect(err.code).toBe('CALL_DENIED');
    expect(err.deniedBy).toBe('callee');
    const down = calleeAudit.records.at(-1)!;
    expect(down).toMatchObject({ direction: 'inbound', decision: 'deny', engine: 'opa' });
    expect(down.reason).toMatch(/^opa: (connection refused|connection reset|unreachable)/);
    expect(handler.mock.calls.map((c) => c[0].query)).toEqual(['before']);
    // Same port, same files: the sidecar restarted by its supervisor.
    await calleeOpa.service.restart();
    await expect(orchestrator.callAgent(ID.search, 'search', { query: 'after' })).resolves.toEqual({
      hits: ['after'],
    });
    expect(handler.mock.calls.map((c) => c[0].query)).toEqual(['before', 'after']);
    expect(calleeAudit.records.at(-1)).toMatchObject({ decision: 'allow', ruleId: 'may-search' });
  });
});

describe.skipIf(!opaBin)('weave.rego on a policy document the local loader refuses', () => {
  // Each document has a rule that should stop the call below, followed (but
  // for the last) by an allow for the whole trust domain. OPA used to skip
  // the part it could not read, and allowed the call.
  const billing = `spiffe://${TD}/agent/billing`;
  const block = { id: 'block', effect: 'deny', callers: [ID.orchestrator], actions: ['*'] };
  const everyone = { id: 'everyone', effect: 'allow', callers: [`spiffe://${TD}`], actions: ['*'] };
  const doc = (...rules: unknown[]) => ({ version: 1, id: 'refused', default: 'deny', rules });
  const cases = [
    {
      name: 'a deny rule with effect "Deny"',
      policy: doc({ ...block, effect: 'Deny' }, everyone),
      path: 'rules[0].effect',
      message: 'effect must be "allow" or "deny"',
    },
    {
      name: 'a caller with an uppercase trust domain',
      policy: doc({ ...block, callers: ['spiffe://OPA.weave.test/agent/orchestrator'] }, everyone),
      path: 'rules[0].callers[0]',
      message:
        'invalid SPIFFE ID "spiffe://OPA.weave.test/agent/orchestrator": trust domain characters are limited to lowercase letters, numbers, dots, dashes, and underscores',
    },
    {
      name: 'a prefix with a trailing slash',
      policy: doc({ ...block, callers: [{ prefix: `spiffe://${TD}/agent/` }] }, everyone),
      path: 'rules[0].callers[0]',
      message: `invalid SPIFFE ID in prefix "spiffe://${TD}/agent/": path cannot have a trailing slash`,
    },
    {
      name: 'callers given as a string',
      policy: doc({ ...block, callers: ID.orchestrator }, everyone),
      path: 'rules[0].callers',
      message: 'callers must be a list of matchers',
    },
    {
      name: 'an allow rule with "callee" for "callees"',
      policy: doc({
        id: 'search-only',
        effect: 'allow',
        callers: [ID.orchestrator],
        callee: [ID.search],
        actions: ['*'],
      }),
      path: 'rules[0].callee',
      message: 'unknown key "callee"',
    },
  ];
  let server: Opa;
  let authz: OpaEnforcer;

  beforeAll(async () => {
    server = await startOpa({ bin: opaBin!.opa, decisionLogs: false });
    authz = new OpaEnforcer({ url: server.url, audit: new Sink(), timeoutMs: 5_000 });
  });

  afterAll(async () => {
    await authz?.close();
    await server?.stop();
  });

  const load = async (policy: unknown) => {
    const res = await request(`${server.url}/v1/data/weave/policy`, {
      method: 'PUT',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(policy),
    });
    await res.body.dump();
    expect(res.statusCode).toBe(204);
  };
  const check = () =>
    authz.checkOutbound({
      caller: SpiffeId.parse(ID.orchestrator),
      callee: SpiffeId.parse(billing),
      action: 'admin',
    });

  it('decides by the rules once the document is valid', async () => {
    await load(doc(block, everyone));
    await expect(check()).resolves.toMatchObject({ allowed: false, ruleId: 'block' });
    await load(doc(everyone));
    await expect(check()).resolves.toMatchObject({ allowed: true, ruleId: 'everyone' });
  });

  it.each(cases)('$name: denied, naming what the local loader names', async ({ policy, path, message }) => {
    let refused: unknown;
    try {
      LocalPolicyEnforcer.fromString(JSON.stringify(policy));
    } catch (err) {
      refused = err;
    }
    expect(refused).toBeInstanceOf(PolicyError);
    expect((refused as PolicyError).issues).toEqual([expect.objectContaining({ path, message })]);

    await load(policy);
    const d = await check();
    expect(d).toMatchObject({ allowed: false, reason: `opa: policy invalid: ${path}: ${message}` });
    expect(d.policyId).toBeUndefined();
    expect(d.ruleId).toBeUndefined();
  });
});
