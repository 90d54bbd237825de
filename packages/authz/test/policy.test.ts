import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SpiffeId } from '@weave/identity';
import { describe, expect, it } from 'vitest';
import { LocalPolicyEnforcer, parsePolicy, PolicyError, validatePolicy } from '../src/index.js';
import { CollectingSink } from './helpers/sinks.js';

const GOOD = `version: 1
id: demo-policy
default: deny
rules:
  - id: orchestrator-calls-search
    effect: allow
    callers: ["spiffe://demo.weave/agent/orchestrator"]
    callees: ["spiffe://demo.weave/agent/search"]
    actions: ["search", "search.*"]
  - id: ops
    effect: deny
    callers:
      - prefix: spiffe://demo.weave/ops
    actions: ["*"]
`;

function rejected(text: string): PolicyError {
  try {
    parsePolicy(text, 'test.yaml');
  } catch (err) {
    expect(err).toBeInstanceOf(PolicyError);
    return err as PolicyError;
  }
  throw new Error('policy was accepted');
}

/** Replace one line of GOOD (1-based) with `line`. */
function withLine(n: number, line: string): string {
  const lines = GOOD.split('\n');
  lines[n - 1] = line;
  return lines.join('\n');
}

describe('policy documents', () => {
  it('accepts the documented YAML shape', () => {
    const doc = parsePolicy(GOOD);
    expect(doc.id).toBe('demo-policy');
    expect(doc.rules).toHaveLength(2);
    expect(doc.rules[1]?.callers[0]).toEqual({ prefix: 'spiffe://demo.weave/ops' });
  });

  it('accepts the same document as JSON', () => {
    const json = JSON.stringify(parsePolicy(GOOD), null, 2);
    expect(parsePolicy(json)).toEqual(parsePolicy(GOOD));
    expect(LocalPolicyEnforcer.fromString(json).policyId).toBe('demo-policy');
  });

  it('reads JSON with JSON.parse and still accepts YAML flow style, which also starts with "{"', () => {
    const flow = `{version: 1, id: flow, default: deny, rules: [{id: r, effect: allow, callers: ["*"], actions: [x]}]}`;
    expect(parsePolicy(flow).rules[0]?.callers).toEqual(['*']);
  });

  it('locates a syntax error in a large JSON file (past the YAML fallback) by line and column', () => {
    const rules = Array.from({ length: 12_000 }, (_, i) => ({
      id: `r${i}`,
      effect: 'allow',
      callers: [`spiffe://demo.weave/agent/a${i}`],
      actions: ['search'],
    }));
    const text = JSON.stringify({ version: 1, id: 'big', default: 'deny', rules }, null, 1);
    expect(text.length).toBeGreaterThan(1 << 20);
    const lines = text.split('\n');
    const at = lines.findIndex((l) => l.includes('"r11000"'));
    lines[at] = lines[at]!.replace('"r11000",', '"r11000"');
    const err = rejected(lines.join('\n'));
    expect(err.issues).toHaveLength(1);
    expect(err.issues[0]).toMatchObject({ line: at + 2, path: '' });
    expect(err.message).toMatch(new RegExp(`line ${at + 2}: invalid JSON: .*position`));
  });

  const bad: { name: string; text: string; code?: string; line?: number; path: string; message: RegExp }[] = [
    {
      name: 'default allow',
      text: withLine(3, 'default: allow'),
      line: 3,
      path: 'default',
      message: /default must be "deny"/,
    },
    {
      name: 'missing default',
      text: withLine(3, '# no default'),
      line: 1,
      path: 'default',
      message: /^missing required key "default"$/,
    },
    {
      name: 'wrong version',
      text: withLine(1, 'version: 2'),
      line: 1,
      path: 'version',
      message: /version must be 1/,
    },
    {
      name: 'bad effect',
      text: withLine(6, '    effect: permit'),
      line: 6,
      path: 'rules[0].effect',
      message: /effect must be "allow" or "deny"/,
    },
    {
      name: 'invalid SPIFFE ID in callers',
      text: withLine(7, '    callers: ["spiffe://Demo.weave/agent"]'),
      line: 7,
      path: 'rules[0].callers[0]',
      message: /trust domain characters are limited/,
    },
    {
      name: 'invalid SPIFFE ID in callees',
      text: withLine(8, '    callees: ["https://demo.weave/agent/search"]'),
      line: 8,
      path: 'rules[0].callees[0]',
      message: /scheme is missing or invalid/,
    },
    {
      name: 'partial-segment glob',
      text: withLine(7, '    callers: ["spiffe://demo.weave/agent-*"]'),
      line: 7,
      path: 'rules[0].callers[0]',
      message: /must be whole path segments/,
    },
    {
      name: '** not last',
      text: withLine(7, '    callers: ["spiffe://demo.weave/**/admin"]'),
      line: 7,
      path: 'rules[0].callers[0]',
      message: /only allowed as the last path segment/,
    },
    {
      name: 'wildcard trust domain',
      text: withLine(7, '    callers: ["spiffe://*.weave/agent"]'),
      line: 7,
      path: 'rules[0].callers[0]',
      message: /not allowed in the trust domain/,
    },
    {
      name: 'prefix without path',
      text: withLine(13, '      - prefix: spiffe://demo.weave'),
      line: 13,
      path: 'rules[1].callers[0]',
      message: /has no path/,
    },
    {
      name: 'empty callers',
      text: withLine(7, '    callers: []'),
      line: 7,
      path: 'rules[0].callers',
      message: /callers cannot be empty/,
    },
    {
      name: 'empty actions',
      text: withLine(9, '    actions: []'),
      line: 9,
      path: 'rules[0].actions',
      message: /actions cannot be empty/,
    },
    {
      name: 'glob syntax in actions',
      text: withLine(9, '    actions: ["search.[ab]"]'),
      line: 9,
      path: 'rules[0].actions[0]',
      message: /action patterns may contain/,
    },
    {
      name: 'unknown key',
      text: withLine(6, '    efect: allow'),
      line: 6,
      path: 'rules[0].efect',
      message: /unknown key "efect"/,
    },
    {
      name: 'duplicate rule id',
      text: withLine(10, '  - id: orchestrator-calls-search'),
      line: 10,
      path: 'rules[1].id',
      message: /duplicate rule id "orchestrator-calls-search" \(first used by rules\[0\]\)/,
    },
    {
      name: 'bad rule id',
      text: withLine(5, '  - id: "has space"'),
      line: 5,
      path: 'rules[0].id',
      message: /rule id may contain/,
    },
    {
      name: 'YAML syntax error',
      text: withLine(7, '    callers: ["spiffe://demo.weave/agent"'),
      line: 8,
      path: '',
      message: /./,
    },
    {
      name: 'duplicate key',
      text: withLine(2, 'version: 1'),
      line: 2,
      path: '',
      message: /[Mm]ap keys must be unique/,
    },
    {
      name: 'an alias as a key in a rule (a second "effect" the duplicate-key check does not see)',
      text: withLine(6, '    &k effect: deny').replace(
        'actions: ["search", "search.*"]',
        'actions: ["search", "search.*"]\n    *k : allow',
      ),
      line: 10,
      path: 'rules[0]',
      message: /^alias \*k as a map key: write the key out, so that a duplicate is found$/,
    },
    {
      name: 'an alias as a top-level key',
      text: withLine(3, '&d default: deny\n*d : deny'),
      line: 4,
      path: '',
      message: /^alias \*d as a map key/,
    },
    {
      name: 'an explicit alias key',
      text: withLine(6, '    &k effect: deny\n    ? *k\n    : allow'),
      line: 7,
      path: 'rules[0]',
      message: /^alias \*k as a map key/,
    },
    {
      name: 'a merge key under %YAML 1.1 (where it would merge)',
      text: `%YAML 1.1\n---\n${withLine(6, '    <<: {effect: deny}\n    effect: allow')}`,
      line: 8,
      path: 'rules[0]',
      message: /^merge key "<<": merge keys are not allowed/,
    },
    {
      name: 'a merge key',
      text: withLine(6, '    <<: {effect: deny}\n    effect: allow'),
      line: 6,
      path: 'rules[0]',
      message: /^merge key "<<"/,
    },
    {
      name: 'a custom tag',
      text: withLine(6, '    effect: !deny allow'),
      line: 6,
      path: 'rules[0].effect',
      message: /^tag !deny is not allowed: a policy uses only the tags of YAML's core schema/,
    },
    {
      name: 'a custom tag on a key',
      text: withLine(6, '    !deny effect: allow'),
      line: 6,
      path: 'rules[0]',
      message: /^tag !deny is not allowed/,
    },
    {
      name: 'a YAML 1.1 tag',
      text: withLine(6, '    effect: allow\n    description: !!timestamp 2024-01-01'),
      line: 7,
      path: 'rules[0].description',
      message: /^tag !!timestamp is not allowed/,
    },
    {
      name: 'a core tag the value does not fit (left a string)',
      text: withLine(6, '    effect: !!bool allow'),
      line: 6,
      path: 'rules[0].effect',
      message: /^tag !!bool does not fit this value$/,
    },
    { name: 'not a mapping', text: '- 1\n- 2\n', line: 1, path: '', message: /expected object/ },
    { name: 'empty file', text: '', path: '', message: /the policy document is empty/ },
  ];

  for (const c of bad) {
    it(`rejects ${c.name} with a located, clear message`, () => {
      const err = rejected(c.text);
      expect(err.code).toBe('POLICY_INVALID');
      const issue = err.issues.find((i) => i.path === c.path && c.message.test(i.message));
      expect(issue, `issues were: ${err.message}`).toBeDefined();
      if (c.line !== undefined) expect(issue?.line).toBe(c.line);
      // The message alone is enough to fix the file.
      expect(err.message).toContain('test.yaml');
      if (c.line !== undefined) expect(err.message).toContain(`line ${c.line}`);
      if (c.path !== '') expect(err.message).toContain(c.path);
    });
  }

  const CALLER = SpiffeId.parse('spiffe://demo.weave/agent/orchestrator');
  const QUARANTINE = `version: 1
id: quarantine-policy
default: deny
rules:
  - id: quarantine
    &k effect: deny
    callers: ["spiffe://demo.weave/agent/orchestrator"]
    actions: ["*"]
    *k : allow
  - id: rest
    effect: allow
    callers: ["*"]
    actions: ["*"]
`;

  it('refuses an alias key hiding a second "effect", from a string and from a file', async () => {
    expect(() => LocalPolicyEnforcer.fromString(QUARANTINE)).toThrow(
      /line 9, rules\[0\]: alias \*k as a map key/,
    );
    const dir = await mkdtemp(join(tmpdir(), 'weave-authz-'));
    try {
      const file = join(dir, 'policy.yaml');
      await writeFile(file, QUARANTINE);
      await expect(LocalPolicyEnforcer.fromFile(file, { watch: false })).rejects.toMatchObject({
        code: 'POLICY_INVALID',
        issues: [{ line: 9, col: 5, path: 'rules[0]', message: expect.stringMatching(/^alias \*k/) }],
      });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('still loads anchors, aliases as values, core tags and quoted keys', async () => {
    const text = `%YAML 1.1
---
version: !!int 1
id: !!str anchors
default: ! deny
rules:
  - id: quarantine
    &k effect: deny
    callers: &ops ["spiffe://demo.weave/agent/orchestrator"]
    actions: ["*"]
  - id: ops
    "effect": allow
    callers: *ops
    actions: !!seq ["search"]
    description: !!str no
`;
    const doc = parsePolicy(text);
    expect(doc.rules[0]?.effect).toBe('deny');
    expect(doc.rules[1]).toEqual({
      id: 'ops',
      effect: 'allow',
      callers: ['spiffe://demo.weave/agent/orchestrator'],
      actions: ['search'],
      description: 'no',
    });
    const e = LocalPolicyEnforcer.fromString(text, { audit: new CollectingSink() });
    expect(await e.checkInbound({ caller: CALLER, action: 'search' })).toMatchObject({
      allowed: false,
      reason: 'denied by rule "quarantine"',
    });
    // The same text with the alias written out reads the same.
    expect(parsePolicy(text.replace('*ops', '["spiffe://demo.weave/agent/orchestrator"]'))).toEqual(doc);
  });

  it('refuses an alias bomb before it expands', () => {
    const lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]'];
    for (let i = 1; i < 9; i++) {
      const [prev, cur] = [String.fromCharCode(96 + i), String.fromCharCode(97 + i)];
      lines.push(`${cur}: &${cur} [${Array.from({ length: 9 }, () => `*${prev}`).join(', ')}]`);
    }
    const started = performance.now();
    const err = rejected(`${lines.join('\n')}\n${withLine(1, 'version: 1')}`);
    expect(err.code).toBe('POLICY_INVALID');
    expect(err.message).toMatch(/cannot read document: Excessive alias count/);
    expect(performance.now() - started).toBeLessThan(2_000);
  });

  it('reports every problem, not only the first', () => {
    const text = withLine(6, '    effect: permit').replace('default: deny', 'default: allow');
    const err = rejected(text);
    expect(err.issues.map((i) => i.path)).toEqual(expect.arrayContaining(['default', 'rules[0].effect']));
    expect(err.message).toMatch(/2 problems/);
  });

  it('names the place of a bad rule deep in a large list (its rules are validated a slice at a time)', () => {
    const rules = Array.from({ length: 3_000 }, (_, i) => ({
      id: `r${i}`,
      effect: 'allow',
      callers: [`spiffe://demo.weave/agent/a${i}`],
      actions: ['search'],
    }));
    const text = (list: unknown[]) =>
      JSON.stringify({ version: 1, id: 'big', default: 'deny', rules: list }, null, 1);
    const lines = text(rules).split('\n');
    const at = lines.findIndex((l) => l.includes('"r2700"'));
    lines[at + 1] = lines[at + 1]!.replace('"allow"', '"permit"');
    const one = rejected(lines.join('\n'));
    expect(one.issues).toEqual([
      {
        line: at + 2,
        col: expect.any(Number),
        path: 'rules[2700].effect',
        message: 'effect must be "allow" or "deny"',
      },
    ]);
    // With the top of the document wrong too, both are named, the top first.
    const both = rejected(lines.join('\n').replace('"deny"', '"allow"'));
    expect(both.issues.map((i) => i.path)).toEqual(['default', 'rules[2700].effect']);

    // Every rule bad: a page of issues (20) in file order, not 3 000.
    const all = rejected(text(rules.map((r) => ({ ...r, effect: 'permit' }))));
    expect(all.issues.map((i) => i.path)).toEqual(Array.from({ length: 20 }, (_, i) => `rules[${i}].effect`));
  });

  it('validates objects with key paths (no lines)', () => {
    expect(() => validatePolicy({ version: 1, id: 'p', default: 'allow', rules: [] })).toThrow(
      /default: default must be "deny"/,
    );
    expect(() =>
      LocalPolicyEnforcer.fromObject({
        version: 1,
        id: 'p',
        default: 'deny',
        rules: [{ id: 'r', effect: 'allow', callers: ['spiffe://td/a/../b'], actions: ['x'] }],
      }),
    ).toThrow(
      /rules\[0\]\.callers\[0\]: invalid SPIFFE ID "spiffe:\/\/td\/a\/..\/b": path cannot contain dot segments/,
    );
    expect(() => validatePolicy(null)).toThrow(PolicyError);
  });
});
