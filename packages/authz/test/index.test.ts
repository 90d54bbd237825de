/**
 * The indexed engine must decide exactly like the plain reading of the policy
 * format. The oracle here is written independently of src/matchers.ts: a
 * linear scan with matchers as regular expressions.
 */
import { SpiffeId } from '@weave/identity';
import { describe, expect, it } from 'vitest';
import {
  LocalPolicyEnforcer,
  type PolicyDocument,
  type PolicyRule,
  type RawIdMatcher,
} from '../src/index.js';
import { CollectingSink } from './helpers/sinks.js';

const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');

function matcherRegex(m: RawIdMatcher): RegExp {
  if (typeof m === 'object') return new RegExp(`^${esc(m.prefix)}(/.+)?$`);
  if (m === '*') return /^/;
  const [, td = '', path = ''] = /^spiffe:\/\/([^/]+)(.*)$/.exec(m) ?? [];
  if (path === '') return new RegExp(`^spiffe://${esc(td)}(/.+)?$`);
  const segs = path
    .slice(1)
    .split('/')
    .map((s) => (s === '**' ? '[^/]+(/[^/]+)*' : s === '*' ? '[^/]+' : esc(s)));
  return new RegExp(`^spiffe://${esc(td)}/${segs.join('/')}$`);
}

/** Compiles the oracle once per policy; a check is then a plain linear scan. */
function oracle(doc: PolicyDocument) {
  const rules = doc.rules.map((r) => ({
    id: r.id,
    deny: r.effect === 'deny',
    callers: r.callers.map(matcherRegex),
    callees: r.callees?.map(matcherRegex),
    actions: r.actions.map((p) => new RegExp(`^${p.split('*').map(esc).join('.*')}$`)),
  }));
  return (caller: string, callee: string | undefined, action: string) => {
    let allow: string | undefined;
    for (const r of rules) {
      if (!r.callers.some((re) => re.test(caller))) continue;
      if (r.callees && (callee === undefined || !r.callees.some((re) => re.test(callee)))) continue;
      if (!r.actions.some((re) => re.test(action))) continue;
      if (r.deny) return { allowed: false, rule: r.id };
      allow ??= r.id;
    }
    return allow ? { allowed: true, rule: allow } : { allowed: false, rule: null };
  };
}

describe('indexed evaluation agrees with a linear reading of the policy', () => {
  it('on 400 random rules and 3 000 random checks', async () => {
    // mulberry32: small, deterministic, good enough to spread the workload.
    let seed = 7;
    const rand = () => {
      seed = (seed + 0x6d2b79f5) | 0;
      let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
      t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
      return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
    };
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)] as T;
    const tds = ['a.org', 'b.org', 'c.org'];
    const segs = ['x', 'y', 'z'];
    const randomPath = () => Array.from({ length: 1 + Math.floor(rand() * 3) }, () => pick(segs)).join('/');
    const randomId = () => `spiffe://${pick(tds)}${rand() < 0.1 ? '' : `/${randomPath()}`}`;
    const randomMatcher = (): RawIdMatcher => {
      const td = pick(tds);
      switch (Math.floor(rand() * 7)) {
        case 0:
          return '*';
        case 1:
          return `spiffe://${td}`;
        case 2:
          return { prefix: `spiffe://${td}/${randomPath()}` };
        case 3:
          return `spiffe://${td}/${randomPath()}/*`;
        case 4:
          return `spiffe://${td}/*/${pick(segs)}`;
        case 5:
          return `spiffe://${td}/${pick(segs)}/**`;
        default:
          return `spiffe://${td}/${randomPath()}`;
      }
    };
    // 'misc' matches no pattern, so the default deny gets exercised too.
    const actions = ['read', 'write', 'admin.read', 'admin.write', 'ping', 'misc'];
    const patterns = [
      'read',
      'write',
      'admin.read',
      'admin.write',
      'ping',
      'admin.*',
      '*.read',
      'r*d',
      'a*n*e',
    ];
    const rules: PolicyRule[] = Array.from({ length: 400 }, (_, i): PolicyRule => {
      // Deny rules are rarer and narrower, else they would decide every check.
      const deny = rand() < 0.15;
      return {
        id: `r${i}`,
        effect: deny ? 'deny' : 'allow',
        callers: deny
          ? [`spiffe://${pick(tds)}/${randomPath()}`]
          : Array.from({ length: 1 + Math.floor(rand() * 2) }, randomMatcher),
        ...(rand() < 0.5 ? { callees: [randomMatcher()] } : {}),
        actions: [deny ? pick(actions) : pick(patterns)],
      };
    });
    const doc: PolicyDocument = { version: 1, id: 'random', default: 'deny', rules };
    const e = LocalPolicyEnforcer.fromObject(doc, { audit: new CollectingSink() });
    const expected = oracle(doc);
    let allowed = 0;
    let denied = 0;
    for (let i = 0; i < 3_000; i++) {
      const caller = randomId();
      const callee = rand() < 0.8 ? randomId() : undefined;
      const action = pick(actions);
      const d = await e.checkInbound({
        caller: SpiffeId.parse(caller),
        ...(callee ? { callee: SpiffeId.parse(callee) } : {}),
        action,
      });
      const want = expected(caller, callee, action);
      expect({ caller, callee, action, allowed: d.allowed, rule: d.ruleId ?? null }).toEqual({
        caller,
        callee,
        action,
        ...want,
      });
      if (want.allowed) allowed++;
      else if (want.rule) denied++;
    }
    // The random workload exercises allow rules, deny rules and the default.
    expect(allowed).toBeGreaterThan(100);
    expect(denied).toBeGreaterThan(100);
    expect(3_000 - allowed - denied).toBeGreaterThan(10);
  });
});
