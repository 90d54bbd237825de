import { SpiffeId } from '@weave/identity';
import { describe, expect, it, vi } from 'vitest';
import { LocalPolicyEnforcer, PinoAuditSink, type PolicyDocument } from '../src/index.js';
import { CollectingSink, memoryLogger } from './helpers/sinks.js';

const id = (s: string) => SpiffeId.parse(s);
const ORCH = id('spiffe://demo.weave/agent/orchestrator');
const SEARCH = id('spiffe://demo.weave/agent/search');

function policy(rules: PolicyDocument['rules']): PolicyDocument {
  return { version: 1, id: 'test-policy', default: 'deny', rules };
}

function enforcer(rules: PolicyDocument['rules']) {
  const sink = new CollectingSink();
  return { e: LocalPolicyEnforcer.fromObject(policy(rules), { audit: sink }), sink };
}

describe('LocalPolicyEnforcer decisions', () => {
  it('denies by default when no rule matches, and says so', async () => {
    const { e } = enforcer([]);
    const d = await e.checkOutbound({ caller: ORCH, callee: SEARCH, action: 'search' });
    expect(d.allowed).toBe(false);
    expect(d.reason).toBe('no rule matched: default deny');
    expect(d.policyId).toBe('test-policy');
    expect(d.ruleId).toBeUndefined();
    expect(Object.isFrozen(d)).toBe(true);
  });

  it('allows when a rule matches and names the rule', async () => {
    const { e } = enforcer([
      {
        id: 'orch-search',
        effect: 'allow',
        callers: [ORCH.toString()],
        callees: [SEARCH.toString()],
        actions: ['search'],
      },
    ]);
    const d = await e.checkOutbound({ caller: ORCH, callee: SEARCH, action: 'search' });
    expect(d).toMatchObject({ allowed: true, ruleId: 'orch-search', policyId: 'test-policy' });
    expect(d.reason).toBe('allowed by rule "orch-search"');
    expect(d.auditId).toMatch(/^[0-9a-f-]{36}$/);
    expect(Object.isFrozen(d)).toBe(true);
    // Different action → default deny.
    expect((await e.checkOutbound({ caller: ORCH, callee: SEARCH, action: 'delete' })).allowed).toBe(false);
  });

  it('lets a deny rule override an allow rule regardless of order', async () => {
    for (const order of ['allow-first', 'deny-first'] as const) {
      const allow = {
        id: 'allow-all-search',
        effect: 'allow' as const,
        callers: ['spiffe://demo.weave'],
        actions: ['*'],
      };
      const deny = {
        id: 'no-orch',
        effect: 'deny' as const,
        callers: [ORCH.toString()],
        actions: ['search'],
      };
      const { e } = enforcer(order === 'allow-first' ? [allow, deny] : [deny, allow]);
      const d = await e.checkInbound({ caller: ORCH, action: 'search' });
      expect(d).toMatchObject({ allowed: false, ruleId: 'no-orch', reason: 'denied by rule "no-orch"' });
      expect((await e.checkInbound({ caller: SEARCH, action: 'search' })).ruleId).toBe('allow-all-search');
    }
  });

  it('names the first matching rule in file order when several match', async () => {
    const { e } = enforcer([
      { id: 'a', effect: 'allow', callers: ['spiffe://demo.weave'], actions: ['x'] },
      { id: 'b', effect: 'allow', callers: [ORCH.toString()], actions: ['x'] },
    ]);
    expect((await e.checkInbound({ caller: ORCH, action: 'x' })).ruleId).toBe('a');
  });

  describe('caller matchers', () => {
    const cases: {
      matcher: PolicyDocument['rules'][number]['callers'][number];
      yes: string[];
      no: string[];
    }[] = [
      {
        matcher: 'spiffe://td.org/agent/a',
        yes: ['spiffe://td.org/agent/a'],
        no: [
          'spiffe://td.org/agent/ab',
          'spiffe://td.org/agent/a/b',
          'spiffe://td.org/agent',
          'spiffe://other.org/agent/a',
        ],
      },
      {
        matcher: 'spiffe://td.org',
        yes: ['spiffe://td.org', 'spiffe://td.org/a', 'spiffe://td.org/a/b/c'],
        no: ['spiffe://td.org.evil/a', 'spiffe://xtd.org/a', 'spiffe://other.org'],
      },
      {
        matcher: { prefix: 'spiffe://td.org/agent' },
        yes: ['spiffe://td.org/agent', 'spiffe://td.org/agent/a', 'spiffe://td.org/agent/a/b'],
        no: [
          'spiffe://td.org/agents',
          'spiffe://td.org/agentx/a',
          'spiffe://td.org',
          'spiffe://other.org/agent/a',
        ],
      },
      {
        matcher: 'spiffe://td.org/agent/*',
        yes: ['spiffe://td.org/agent/a', 'spiffe://td.org/agent/b'],
        no: [
          'spiffe://td.org/agent',
          'spiffe://td.org/agent/a/b',
          'spiffe://td.org/other/a',
          'spiffe://other.org/agent/a',
        ],
      },
      {
        matcher: 'spiffe://td.org/*/worker',
        yes: ['spiffe://td.org/ns1/worker', 'spiffe://td.org/ns2/worker'],
        no: ['spiffe://td.org/ns1/worker/x', 'spiffe://td.org/ns1/a/worker', 'spiffe://td.org/worker'],
      },
      {
        matcher: 'spiffe://td.org/agent/**',
        yes: ['spiffe://td.org/agent/a', 'spiffe://td.org/agent/a/b', 'spiffe://td.org/agent/a/b/c/d'],
        no: ['spiffe://td.org/agent', 'spiffe://td.org/agents/a', 'spiffe://other.org/agent/a'],
      },
      {
        matcher: 'spiffe://td.org/**',
        yes: ['spiffe://td.org/a', 'spiffe://td.org/a/b/c'],
        no: ['spiffe://td.org', 'spiffe://other.org/a'],
      },
      {
        matcher: '*',
        yes: ['spiffe://td.org', 'spiffe://td.org/a', 'spiffe://other.org/x/y'],
        no: [],
      },
    ];
    for (const c of cases) {
      it(`${JSON.stringify(c.matcher)}`, async () => {
        const { e } = enforcer([{ id: 'r', effect: 'allow', callers: [c.matcher], actions: ['go'] }]);
        for (const caller of c.yes) {
          const d = await e.checkInbound({ caller: id(caller), action: 'go' });
          expect({ caller, allowed: d.allowed }).toEqual({ caller, allowed: true });
        }
        for (const caller of c.no) {
          const d = await e.checkInbound({ caller: id(caller), action: 'go' });
          expect({ caller, allowed: d.allowed }).toEqual({ caller, allowed: false });
        }
      });
    }
  });

  it('"*" in a caller glob is one segment while "**" is any depth', async () => {
    const { e } = enforcer([
      { id: 'one', effect: 'allow', callers: ['spiffe://td.org/a/*'], actions: ['one'] },
      { id: 'deep', effect: 'allow', callers: ['spiffe://td.org/a/**'], actions: ['deep'] },
    ]);
    const deep = id('spiffe://td.org/a/b/c');
    const shallow = id('spiffe://td.org/a/b');
    expect((await e.checkInbound({ caller: shallow, action: 'one' })).allowed).toBe(true);
    expect((await e.checkInbound({ caller: deep, action: 'one' })).allowed).toBe(false);
    expect((await e.checkInbound({ caller: shallow, action: 'deep' })).allowed).toBe(true);
    expect((await e.checkInbound({ caller: deep, action: 'deep' })).allowed).toBe(true);
  });

  it('matches callees the same way, and a rule with callees needs a callee on inbound checks', async () => {
    const { e } = enforcer([
      {
        id: 'to-agents',
        effect: 'allow',
        callers: ['*'],
        callees: ['spiffe://demo.weave/agent/*'],
        actions: ['call'],
      },
      { id: 'anywhere', effect: 'allow', callers: ['*'], actions: ['ping'] },
    ]);
    expect((await e.checkOutbound({ caller: ORCH, callee: SEARCH, action: 'call' })).ruleId).toBe(
      'to-agents',
    );
    expect(
      (await e.checkOutbound({ caller: ORCH, callee: id('spiffe://demo.weave/db/x'), action: 'call' }))
        .allowed,
    ).toBe(false);
    expect((await e.checkInbound({ caller: ORCH, action: 'call' })).allowed).toBe(false);
    expect((await e.checkInbound({ caller: ORCH, callee: SEARCH, action: 'call' })).allowed).toBe(true);
    // A rule without callees applies with or without one.
    expect((await e.checkInbound({ caller: ORCH, action: 'ping' })).allowed).toBe(true);
    expect((await e.checkOutbound({ caller: ORCH, callee: SEARCH, action: 'ping' })).allowed).toBe(true);
  });

  it('matches action globs where "*" is any characters', async () => {
    const { e } = enforcer([
      { id: 'r', effect: 'allow', callers: ['*'], actions: ['search', 'search.*', '*.read', 'a*b*c'] },
    ]);
    // '*' may match nothing, so 'search.' matches 'search.*'.
    const yes = [
      'search',
      'search.',
      'search.web',
      'search.web.deep',
      'files.read',
      'x.y.read',
      'abc',
      'aXXbYYc',
      'a.b.c',
    ];
    const no = ['searchx', 'Search', 'read', 'files.write', 'ab', 'acb'];
    for (const action of yes) {
      expect({ action, allowed: (await e.checkInbound({ caller: ORCH, action })).allowed }).toEqual({
        action,
        allowed: true,
      });
    }
    for (const action of no) {
      expect({ action, allowed: (await e.checkInbound({ caller: ORCH, action })).allowed }).toEqual({
        action,
        allowed: false,
      });
    }
  });

  it('keeps file order and deny-over-allow among exact and prefix actions of one caller’s many rules', async () => {
    // More than a handful of rules for one caller: they are looked up by key (exact action, or
    // "p*" for a pattern whose "*"s end it), with and without callees, not tested one by one.
    const OTHER = id('spiffe://demo.weave/agent/other');
    const orch = ORCH.toString();
    const search = SEARCH.toString();
    const { e } = enforcer([
      { id: 'r0', effect: 'allow', callers: [orch], callees: [search], actions: ['search.*'] },
      { id: 'r1', effect: 'allow', callers: [orch], callees: [search], actions: ['search.web'] },
      { id: 'r2', effect: 'deny', callers: [orch], actions: ['search.web.*'] },
      { id: 'r3', effect: 'deny', callers: [orch], callees: [search], actions: ['admin**'] },
      { id: 'r4', effect: 'allow', callers: [orch], callees: [OTHER.toString()], actions: ['*'] },
      { id: 'r5', effect: 'allow', callers: [orch], actions: ['report'] },
      { id: 'r6', effect: 'deny', callers: [orch], callees: [search], actions: ['search.web'] },
      { id: 'r7', effect: 'deny', callers: [orch], actions: ['search.web'] },
      { id: 'r8', effect: 'allow', callers: [orch], actions: ['search.*'] },
    ]);
    const cases: [SpiffeId | undefined, string, string][] = [
      [SEARCH, 'search.web', 'denied by rule "r6"'], // deny overrides the earlier allows r0, r1; r6 before r7
      [SEARCH, 'search.images', 'allowed by rule "r0"'], // r0 before r8
      [SEARCH, 'search.web.deep', 'denied by rule "r2"'],
      [SEARCH, 'search.*', 'allowed by rule "r0"'], // the literal text "search.*" starts with "search."
      [SEARCH, 'search', 'no rule matched: default deny'], // "search.*" needs the dot
      [SEARCH, 'admin', 'denied by rule "r3"'],
      [SEARCH, 'administer', 'denied by rule "r3"'],
      [SEARCH, 'admi', 'no rule matched: default deny'],
      [OTHER, 'admin', 'allowed by rule "r4"'], // r3 names another callee
      [OTHER, 'search.x', 'allowed by rule "r4"'], // r4 before r8
      [OTHER, 'search.web', 'denied by rule "r7"'], // r6 names another callee
      [OTHER, 'search.web.x', 'denied by rule "r2"'],
      [undefined, 'report', 'allowed by rule "r5"'],
      [undefined, 'search.x', 'allowed by rule "r8"'], // r0 needs a callee
      [undefined, 'search', 'no rule matched: default deny'],
      [undefined, 'admin', 'no rule matched: default deny'],
    ];
    for (const [callee, action, reason] of cases) {
      const d = await (callee
        ? e.checkOutbound({ caller: ORCH, callee, action })
        : e.checkInbound({ caller: ORCH, action }));
      expect({ callee: callee?.toString(), action, reason: d.reason, allowed: d.allowed }).toEqual({
        callee: callee?.toString(),
        action,
        reason,
        allowed: reason.startsWith('allowed'),
      });
    }
    // Another caller has no rules: default deny, whatever it asks.
    const d = await e.checkOutbound({ caller: SEARCH, callee: OTHER, action: 'report' });
    expect(d).toMatchObject({ allowed: false, reason: 'no rule matched: default deny' });
  });

  it('denies malformed checks with a reason instead of throwing', async () => {
    const { e, sink } = enforcer([{ id: 'r', effect: 'allow', callers: ['*'], actions: ['*'] }]);
    const bad: unknown[] = [
      undefined,
      {},
      { caller: 'not-an-id', action: 'x' },
      { caller: ORCH, action: '' },
      { caller: ORCH, action: 42 },
      { caller: ORCH, callee: 'spiffe://BAD', action: 'x' },
      { caller: ORCH, action: 'x', context: 'nope' },
      {
        caller: {
          toString() {
            throw new Error('hostile');
          },
        },
        action: 'x',
      },
      { caller: Object.create(null), action: 'x' },
    ];
    for (const check of bad) {
      const d = await e.checkInbound(check as never);
      expect(d.allowed).toBe(false);
      expect(d.reason).toMatch(/^invalid check: /);
    }
    const missingCallee = await e.checkOutbound({ caller: ORCH, action: 'x' } as never);
    expect(missingCallee).toMatchObject({
      allowed: false,
      reason: 'invalid check: callee is required for an outbound check',
    });
    expect(sink.records).toHaveLength(bad.length + 1);
    expect(sink.records.every((r) => r.decision === 'deny')).toBe(true);
  });

  it('accepts SPIFFE IDs given as strings', async () => {
    const { e } = enforcer([{ id: 'r', effect: 'allow', callers: [ORCH.toString()], actions: ['x'] }]);
    const d = await e.checkInbound({ caller: ORCH.toString() as unknown as SpiffeId, action: 'x' });
    expect(d.allowed).toBe(true);
  });
});

describe('audit', () => {
  it('gives each decision its own random version-4 UUID, across refills of the random bytes', async () => {
    const { e, sink } = enforcer([{ id: 'r', effect: 'allow', callers: ['*'], actions: ['x'] }]);
    const ids = new Set<string>();
    // More decisions than one refill of the audit ids' random bytes serves (4 096).
    for (let i = 0; i < 10_000; i++) {
      const d = await e.checkInbound({ caller: ORCH, action: i % 2 === 0 ? 'x' : 'y' });
      expect(d.auditId).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
      ids.add(d.auditId);
    }
    expect(ids.size).toBe(10_000);
    expect(new Set(sink.records.map((r) => r.auditId))).toEqual(ids);
  });

  it('records each decision exactly once with the decision fields', async () => {
    const { e, sink } = enforcer([
      { id: 'orch', effect: 'allow', callers: [ORCH.toString()], actions: ['search'] },
    ]);
    const allow = await e.checkOutbound({
      caller: ORCH,
      callee: SEARCH,
      action: 'search',
      context: { traceId: 't1' },
    });
    const deny = await e.checkInbound({ caller: SEARCH, action: 'search' });
    expect(sink.records).toHaveLength(2);
    const [a, d] = sink.records;
    expect(a).toMatchObject({
      auditId: allow.auditId,
      direction: 'outbound',
      caller: ORCH.toString(),
      callee: SEARCH.toString(),
      action: 'search',
      decision: 'allow',
      reason: allow.reason,
      engine: 'local',
      policyId: 'test-policy',
      ruleId: 'orch',
    });
    expect(a?.latencyUs).toBeGreaterThan(0);
    expect(Number.isNaN(Date.parse(a?.decidedAt ?? ''))).toBe(false);
    expect(d).toMatchObject({
      auditId: deny.auditId,
      direction: 'inbound',
      decision: 'deny',
      reason: 'no rule matched: default deny',
    });
    expect(d).not.toHaveProperty('callee');
    expect(d).not.toHaveProperty('ruleId');
    expect(allow.auditId).not.toBe(deny.auditId);
  });

  it('names the A2A tenant (context.tenant) in the audit record, and nothing when there is none', async () => {
    const { e, sink } = enforcer([
      { id: 'orch', effect: 'allow', callers: [ORCH.toString()], actions: ['search'] },
    ]);
    await e.checkInbound({ caller: ORCH, action: 'search', context: { tenant: 'acme', method: 'GetTask' } });
    await e.checkInbound({ caller: SEARCH, action: 'search', context: { tenant: 'globex' } });
    await e.checkInbound({ caller: ORCH, action: 'search', context: { method: 'GetTask' } });
    await e.checkInbound({ caller: ORCH, action: 'search', context: { tenant: 42 } });
    const [a, d, none, odd] = sink.records;
    expect(a).toMatchObject({ decision: 'allow', tenant: 'acme' });
    expect(d).toMatchObject({ decision: 'deny', tenant: 'globex' });
    expect(none).not.toHaveProperty('tenant');
    // Only a string names a tenant.
    expect(odd).not.toHaveProperty('tenant');
  });

  it('writes one structured pino record per decision with the default sink', async () => {
    const { logger, lines } = memoryLogger();
    const e = LocalPolicyEnforcer.fromObject(
      policy([{ id: 'orch', effect: 'allow', callers: [ORCH.toString()], actions: ['search'] }]),
      {
        audit: new PinoAuditSink(logger),
      },
    );
    const d1 = await e.checkOutbound({ caller: ORCH, callee: SEARCH, action: 'search' });
    const d2 = await e.checkOutbound({ caller: SEARCH, callee: ORCH, action: 'search' });
    const out = lines();
    expect(out).toHaveLength(2);
    expect(out[0]).toMatchObject({
      level: 30,
      msg: 'authz decision',
      event: 'authz.decision',
      auditId: d1.auditId,
      decision: 'allow',
      caller: ORCH.toString(),
      callee: SEARCH.toString(),
      action: 'search',
      direction: 'outbound',
      ruleId: 'orch',
      policyId: 'test-policy',
    });
    expect(typeof out[0]?.latencyUs).toBe('number');
    expect(out[1]).toMatchObject({
      auditId: d2.auditId,
      decision: 'deny',
      reason: 'no rule matched: default deny',
    });
  });

  it('turns an allow into a deny when the audit sink fails', async () => {
    const failing = {
      record() {
        throw new Error('disk full');
      },
    };
    const e = LocalPolicyEnforcer.fromObject(
      policy([{ id: 'r', effect: 'allow', callers: ['*'], actions: ['*'] }]),
      { audit: failing },
    );
    // Captured rather than printed: the warning is the operator's signal, asserted here.
    const emitWarning = vi.spyOn(process, 'emitWarning').mockImplementation(() => undefined);
    try {
      const d = await e.checkInbound({ caller: ORCH, action: 'x' });
      expect(d.allowed).toBe(false);
      expect(d.reason).toBe('audit sink failed, denying: disk full');
      expect(emitWarning).toHaveBeenCalledTimes(1);
      expect(emitWarning).toHaveBeenCalledWith(
        `weave authz: audit sink failed for ${d.auditId}: Error: disk full`,
        'WeaveAuditWarning',
      );
    } finally {
      emitWarning.mockRestore();
    }
  });

  it('waits for an async audit sink and turns an allow into a deny when it rejects', async () => {
    const failing = {
      // An async function fits `record(rec): void` too: its failure is a rejection, not a throw.
      async record() {
        await Promise.resolve();
        throw new Error('audit db down');
      },
    };
    const e = LocalPolicyEnforcer.fromObject(
      policy([{ id: 'r', effect: 'allow', callers: ['*'], actions: ['*'] }]),
      { audit: failing },
    );
    const emitWarning = vi.spyOn(process, 'emitWarning').mockImplementation(() => undefined);
    const unhandled = vi.fn();
    process.on('unhandledRejection', unhandled);
    try {
      const d = await e.checkInbound({ caller: ORCH, action: 'x' });
      expect(d).toMatchObject({ allowed: false, reason: 'audit sink failed, denying: audit db down' });
      expect(emitWarning).toHaveBeenCalledWith(
        `weave authz: audit sink failed for ${d.auditId}: Error: audit db down`,
        'WeaveAuditWarning',
      );
      // A turn for a rejection nobody handled to be reported.
      await new Promise((r) => setImmediate(r));
      expect(unhandled).not.toHaveBeenCalled();
    } finally {
      process.off('unhandledRejection', unhandled);
      emitWarning.mockRestore();
    }
  });

  it('gives the decision only once an async audit sink has recorded it', async () => {
    let release!: () => void;
    const records: string[] = [];
    const slow = {
      record(rec: { decision: string }) {
        return new Promise<void>((resolve) => {
          release = () => {
            records.push(rec.decision);
            resolve();
          };
        });
      },
    };
    const e = LocalPolicyEnforcer.fromObject(
      policy([{ id: 'r', effect: 'allow', callers: ['*'], actions: ['*'] }]),
      { audit: slow },
    );
    let settled = false;
    const pending = e.checkInbound({ caller: ORCH, action: 'x' }).then((d) => {
      settled = true;
      return d;
    });
    await new Promise((r) => setImmediate(r));
    expect(settled).toBe(false);
    release();
    const d = await pending;
    expect(d.allowed).toBe(true);
    expect(records).toEqual(['allow']);
  });
});

describe('hostile checks', () => {
  const allowAll = policy([{ id: 'r', effect: 'allow', callers: ['*'], actions: ['*'] }]);
  const throwing = (field: string) => {
    const check: Record<string, unknown> = { caller: ORCH, action: 'x', context: { tenant: 't' } };
    Object.defineProperty(check, field, {
      enumerable: true,
      get() {
        throw new Error(`${field} boom`);
      },
    });
    return check;
  };

  for (const field of ['caller', 'action', 'context']) {
    it(`denies, audited once, a check whose ${field} getter throws`, async () => {
      const sink = new CollectingSink();
      const e = LocalPolicyEnforcer.fromObject(allowAll, { audit: sink });
      const d = await e.checkInbound(throwing(field) as never);
      expect(d).toMatchObject({
        allowed: false,
        reason: `invalid check: a field could not be read (${field} boom)`,
      });
      expect(sink.records).toHaveLength(1);
      expect(sink.records[0]).toMatchObject({ decision: 'deny', caller: '<unreadable>' });
    });
  }

  it('denies a check whose context.tenant getter throws', async () => {
    const sink = new CollectingSink();
    const e = LocalPolicyEnforcer.fromObject(allowAll, { audit: sink });
    const context = {};
    Object.defineProperty(context, 'tenant', {
      get() {
        throw new Error('tenant boom');
      },
    });
    const d = await e.checkInbound({ caller: ORCH, action: 'x', context });
    expect(d.allowed).toBe(false);
    expect(d.reason).toBe('invalid check: a field could not be read (tenant boom)');
    expect(sink.records).toHaveLength(1);
  });

  it('reads each field of a check once: a getter cannot answer one thing to the check and another to the decision', async () => {
    const sink = new CollectingSink();
    const e = LocalPolicyEnforcer.fromObject(
      policy([{ id: 'orch', effect: 'allow', callers: [ORCH.toString()], actions: ['*'] }]),
      { audit: sink },
    );
    let reads = 0;
    const check = {
      action: 'x',
      get caller() {
        reads += 1;
        return reads === 1 ? ORCH : SEARCH;
      },
    };
    const d = await e.checkInbound(check as never);
    expect(reads).toBe(1);
    expect(d.allowed).toBe(true);
    expect(sink.records[0]).toMatchObject({ caller: ORCH.toString(), decision: 'allow' });
  });
});
