// The README's policy example decides as the README says it does.
import { readFileSync } from 'node:fs';
import { SpiffeId } from '@weave/identity';
import { describe, expect, it } from 'vitest';
import { LocalPolicyEnforcer } from '../src/index.js';
import { CollectingSink } from './helpers/sinks.js';

const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');

/** The first yaml code block after `heading`. */
function yamlAfter(heading: string): string {
  const at = readme.indexOf(heading);
  expect(at, heading).toBeGreaterThan(-1);
  const block = /```yaml\n([\s\S]*?)```/.exec(readme.slice(at));
  if (!block) throw new Error(`no yaml block after ${heading}`);
  return block[1] as string;
}

describe('README', () => {
  it('"Policy format": the example allows by its allow rule and denies by quarantine', async () => {
    const authz = LocalPolicyEnforcer.fromString(yamlAfter('## Policy format'), {
      audit: new CollectingSink(),
    });
    const id = (s: string) => SpiffeId.parse(s);
    const orchestrator = id('spiffe://demo.weave/agent/orchestrator');
    const search = id('spiffe://demo.weave/agent/search');
    expect(
      await authz.checkOutbound({ caller: orchestrator, callee: search, action: 'search.web' }),
    ).toMatchObject({
      allowed: true,
      reason: 'allowed by rule "orchestrator-calls-search"',
    });
    for (const caller of ['spiffe://demo.weave/quarantine/x', 'spiffe://partner.example/untrusted/y']) {
      expect(
        await authz.checkOutbound({ caller: id(caller), callee: search, action: 'search' }),
      ).toMatchObject({
        allowed: false,
        reason: 'denied by rule "quarantine"',
      });
    }
    expect(
      await authz.checkOutbound({ caller: search, callee: orchestrator, action: 'search' }),
    ).toMatchObject({
      allowed: false,
      reason: 'no rule matched: default deny',
    });
  });
});
