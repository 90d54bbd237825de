import { SpiffeId } from '@weave/identity';
import { afterEach, describe, expect, it } from 'vitest';
import { AllowAllEnforcer, AuthzConfigError } from '../src/index.js';
import { CollectingSink } from './helpers/sinks.js';

const ORCH = SpiffeId.parse('spiffe://demo.weave/agent/orchestrator');

describe('AllowAllEnforcer', () => {
  const saved = { NODE_ENV: process.env.NODE_ENV, WEAVE_ENV: process.env.WEAVE_ENV };
  afterEach(() => {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  });

  it('allows well-formed checks and audits them', async () => {
    delete process.env.WEAVE_ENV;
    process.env.NODE_ENV = 'test';
    const sink = new CollectingSink();
    const e = new AllowAllEnforcer({ audit: sink });
    const d = await e.checkOutbound({ caller: ORCH, callee: ORCH, action: 'anything' });
    expect(d).toMatchObject({ allowed: true, reason: 'allow-all enforcer (tests only)' });
    expect(sink.records).toHaveLength(1);
    expect(sink.records[0]).toMatchObject({ engine: 'allow-all', decision: 'allow', auditId: d.auditId });
    // Still no permission without a verified caller.
    expect((await e.checkInbound({ caller: 'x', action: 'a' } as never)).allowed).toBe(false);
  });

  it('denies, instead of throwing, a check whose getter throws, and a rejecting async sink', async () => {
    const sink = new CollectingSink();
    const e = new AllowAllEnforcer({ audit: sink });
    const hostile = {
      action: 'a',
      get caller(): never {
        throw new Error('boom');
      },
    };
    const d = await e.checkInbound(hostile as never);
    expect(d).toMatchObject({ allowed: false, reason: 'invalid check: a field could not be read (boom)' });
    expect(sink.records).toHaveLength(1);
    const rejecting = new AllowAllEnforcer({ audit: { record: () => Promise.reject(new Error('down')) } });
    const warned = new Promise((resolve) => process.once('warning', resolve));
    expect(await rejecting.checkInbound({ caller: ORCH, action: 'a' })).toMatchObject({
      allowed: false,
      reason: 'audit sink failed, denying: down',
    });
    await warned;
  });

  for (const [name, value] of [
    ['NODE_ENV', 'production'],
    ['WEAVE_ENV', 'production'],
    ['NODE_ENV', ' Production '],
  ] as const) {
    it(`refuses to construct when ${name}=${JSON.stringify(value)}`, () => {
      delete process.env.NODE_ENV;
      delete process.env.WEAVE_ENV;
      process.env[name] = value;
      let err: unknown;
      try {
        new AllowAllEnforcer({ audit: new CollectingSink() });
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(AuthzConfigError);
      expect(err).toMatchObject({ code: 'ALLOW_ALL_IN_PRODUCTION' });
      expect((err as Error).message).toContain(name);
    });
  }
});
