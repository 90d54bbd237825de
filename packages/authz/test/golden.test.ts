/**
 * The golden table in policies/golden.yaml, run against:
 * 1. LocalPolicyEnforcer;
 * 2. OpaEnforcer talking to a STAND-IN for OPA — an HTTP server implementing
 *    the Data API wire contract whose answers come from LocalPolicyEnforcer.
 *    This checks the input shape and result mapping without OPA;
 * 3. OpaEnforcer talking to a real OPA (`opa run --server`, installed by
 *    scripts/infra/setup.sh) loaded with policies/weave.rego and the golden
 *    policy document as data. Skipped loudly when OPA is not installed; under
 *    CI=true a missing OPA fails the run.
 */
import { readFileSync } from 'node:fs';
import { SpiffeId } from '@weave/identity';
import { z } from 'zod';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LocalPolicyEnforcer, OpaEnforcer, type PolicyEnforcer } from '../src/index.js';
import { golden, goldenQuestion, policiesDir } from './helpers/golden.js';
import { startOpaStandin, type OpaStandin } from './helpers/opa-data-api-standin.js';
import { CollectingSink } from './helpers/sinks.js';
import { requireComponent } from '../../../interop/infra.js';
import { startOpa, type Opa } from '../../../interop/opa.js';

const rego = readFileSync(`${policiesDir}weave.rego`, 'utf8');

function runTable(name: string, get: () => PolicyEnforcer) {
  describe(name, () => {
    for (const c of golden.cases) {
      it(c.name, async () => {
        const d = await goldenQuestion(c)(get());
        expect({ allowed: d.allowed, rule: d.ruleId ?? null }).toEqual({ allowed: c.allowed, rule: c.rule });
      });
    }
  });
}

it('golden table covers allow, deny rules and default deny', () => {
  expect(golden.cases.length).toBeGreaterThanOrEqual(20);
  expect(golden.cases.some((c) => c.allowed)).toBe(true);
  expect(golden.cases.some((c) => !c.allowed && c.rule !== null)).toBe(true);
  expect(golden.cases.some((c) => !c.allowed && c.rule === null)).toBe(true);
});

it('weave.rego answers the path OpaEnforcer asks by default (data.weave.authz.decision)', () => {
  expect(rego).toMatch(/^package weave\.authz$/m);
  expect(rego).toMatch(/^decision := /m);
  expect(rego).toContain('data.weave.policy');
});

const local = LocalPolicyEnforcer.fromObject(golden.policy, { audit: new CollectingSink() });
runTable('LocalPolicyEnforcer', () => local);

/** The Data API input shape documented in the README, parsed strictly. */
const idSchema = z.strictObject({ spiffe_id: z.string(), trust_domain: z.string() });
const inputSchema = z.strictObject({
  caller: idSchema,
  callee: idSchema.optional(),
  action: z.string(),
  direction: z.enum(['inbound', 'outbound']),
  context: z.record(z.string(), z.unknown()),
});

describe('OpaEnforcer against a Data API stand-in (not OPA)', () => {
  let standin: OpaStandin;
  let opa: OpaEnforcer;
  const engine = LocalPolicyEnforcer.fromObject(golden.policy, { audit: new CollectingSink() });
  beforeAll(async () => {
    // Answers `data.weave.authz.decision` the way weave.rego is meant to, but
    // computed by the local engine from the documented input shape.
    standin = await startOpaStandin(async (path, raw) => {
      if (path !== 'weave/authz/decision') return undefined;
      const i = inputSchema.parse(raw);
      const caller = SpiffeId.parse(i.caller.spiffe_id);
      expect(caller.trustDomain.name).toBe(i.caller.trust_domain);
      const callee = i.callee ? SpiffeId.parse(i.callee.spiffe_id) : undefined;
      const d = await engine.checkInbound({ caller, ...(callee ? { callee } : {}), action: i.action });
      return {
        allow: d.allowed,
        reason: d.reason,
        policy_id: d.policyId,
        ...(d.ruleId ? { rule_id: d.ruleId } : {}),
      };
    });
    // A generous timeout: a first request on a loaded 2-core box can take more than the 500 ms default.
    opa = new OpaEnforcer({ url: standin.url, audit: new CollectingSink(), timeoutMs: 5_000 });
  });
  afterAll(async () => {
    await opa?.close();
    await standin?.close();
  });
  runTable('golden cases', () => opa);
});

const opaBin = requireComponent('opa');

describe.skipIf(!opaBin)('OpaEnforcer against a real OPA loaded with policies/weave.rego', () => {
  let server: Opa;
  let opa: OpaEnforcer;
  beforeAll(async () => {
    server = await startOpa({ bin: opaBin!.opa, policy: golden.policy });
    opa = new OpaEnforcer({ url: server.url, audit: new CollectingSink(), timeoutMs: 5_000 });
  });
  afterAll(async () => {
    await opa?.close();
    await server?.stop();
  });
  runTable('golden cases', () => opa);
});
