// What a YAML (or JSON) policy may not be beyond its schema: nested past the
// depth bound, or holding something the YAML parser warns about. Each is
// POLICY_INVALID with its line, at load and on a hot reload, which keeps the
// policy in force.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { LocalPolicyEnforcer, parsePolicy, PolicyError, type ReloadEvent } from '../src/index.js';
import { CALLER, policyDirEachTest, policyText } from './helpers/policy-text.js';
import { CollectingSink, memoryLogger } from './helpers/sinks.js';

/** A policy `id` that allows CALLER the action `search`, then `extra` lines at the top level. */
const policy = (id: string, extra = '') => `${policyText(id, 'search')}${extra}`;

/** A policy with no rules: 4 lines, then a description to nest. */
const HEAD = 'version: 1\nid: deep\ndefault: deny\nrules: []\n';
/** `description:` holding `n` nested flow lists on line 5: the document is n + 1 levels deep. */
const flowLists = (n: number) => `${HEAD}description: ${'['.repeat(n)}${']'.repeat(n)}\n`;
/** `description:` holding `n` nested block maps, one a line from line 6. */
const blockMaps = (n: number) =>
  `${HEAD}description:\n${Array.from({ length: n }, (_, i) => `${' '.repeat(i + 1)}a:`).join('\n')} x\n`;

const DEPTH_MESSAGE = 'nested deeper than 32 levels of maps and lists: a policy has 5 at most';

function rejected(text: string): PolicyError {
  try {
    parsePolicy(text, 'test.yaml');
  } catch (err) {
    expect(err).toBeInstanceOf(PolicyError);
    return err as PolicyError;
  }
  throw new Error('policy was accepted');
}

describe('policy nesting depth', () => {
  it('refuses YAML nested 2000 deep with POLICY_INVALID naming the bound and the line', () => {
    // Flow lists: the document is level 1, so the 32nd "[" opens level 33: line 5, column 14 + 31.
    expect(rejected(flowLists(2000))).toMatchObject({
      code: 'POLICY_INVALID',
      issues: [{ line: 5, col: 45, path: '', message: DEPTH_MESSAGE }],
    });
    // Block maps: "description" is level 2 on line 5, each line below one more.
    const block = rejected(blockMaps(2000));
    expect(block.issues).toEqual([{ line: 37, col: 33, path: '', message: DEPTH_MESSAGE }]);
    expect(block.message).toContain(`line 37: ${DEPTH_MESSAGE}`);
  });

  it('refuses YAML one level past the bound; at the bound only the schema speaks', () => {
    expect(rejected(flowLists(32)).issues).toEqual([{ line: 5, col: 45, path: '', message: DEPTH_MESSAGE }]);
    expect(rejected(blockMaps(32)).issues).toEqual([{ line: 37, col: 33, path: '', message: DEPTH_MESSAGE }]);
    for (const atBound of [flowLists(31), blockMaps(31)]) {
      expect(rejected(atBound).issues).toEqual([
        expect.objectContaining({ path: 'description', message: expect.stringMatching(/expected string/) }),
      ]);
    }
  });

  it('gives JSON the same bound, with its line', () => {
    const json = (n: number) =>
      `{"version": 1, "id": "deep", "default": "deny", "rules": [],\n"description": ${'['.repeat(n)}${']'.repeat(n)}}`;
    expect(rejected(json(2000)).issues).toEqual([{ line: 2, col: 47, path: '', message: DEPTH_MESSAGE }]);
    expect(rejected(json(32)).issues).toEqual([{ line: 2, col: 47, path: '', message: DEPTH_MESSAGE }]);
    expect(rejected(json(31)).issues).toEqual([
      expect.objectContaining({ path: 'description', message: expect.stringMatching(/expected string/) }),
    ]);
    // Brackets inside strings do not nest.
    const text = JSON.stringify({ ...parsePolicy(policy('brackets')), description: '['.repeat(100) });
    expect(parsePolicy(text).description).toBe('['.repeat(100));
  });

  it('still loads and decides with a normal policy', async () => {
    const e = LocalPolicyEnforcer.fromString(policy('normal'), { audit: new CollectingSink() });
    expect(e.policyId).toBe('normal');
    expect((await e.checkInbound({ caller: CALLER, action: 'search' })).allowed).toBe(true);
    expect((await e.checkInbound({ caller: CALLER, action: 'write' })).allowed).toBe(false);
  });
});

describe('YAML parser warnings', () => {
  const cases: { name: string; text: string; line: number; message: string }[] = [
    {
      name: 'an unknown directive (ignored by the parser)',
      text: `%FOO bar\n---\n${policy('p')}`,
      line: 1,
      message: 'Unknown directive %FOO (YAML warning BAD_DIRECTIVE)',
    },
    {
      name: 'a YAML version the parser does not implement (read as 1.2)',
      text: `%YAML 1.3\n---\n${policy('p')}`,
      line: 1,
      message: 'Unsupported YAML version 1.3 (YAML warning BAD_DIRECTIVE)',
    },
    {
      name: 'an anchor ending in ":" (the anchor is "e:")',
      text: policy('p').replace('effect: allow', 'effect: &e: allow'),
      line: 6,
      message: 'Anchor ending in : is ambiguous (YAML warning BAD_ALIAS)',
    },
    {
      name: 'an alias ending in ":" (of the anchor "d:")',
      text: policy('p', 'description: &d: x\nx-note: *d:\n'),
      line: 10,
      message: 'Alias ending in : is ambiguous (YAML warning BAD_ALIAS)',
    },
  ];
  for (const c of cases) {
    it(`refuses ${c.name}, naming the warning and its line`, () => {
      const err = rejected(c.text);
      expect(err.code).toBe('POLICY_INVALID');
      expect(err.issues).toContainEqual({
        line: c.line,
        col: expect.any(Number),
        path: '',
        message: `${c.message}: a policy is refused rather than read in a way the parser doubts`,
      });
      expect(err.message).toContain(`line ${c.line}: ${c.message}`);
      expect(() => LocalPolicyEnforcer.fromString(c.text)).toThrow(PolicyError);
    });
  }

  it('names a tag once, in the tag check words, not again as a warning', () => {
    const err = rejected(policy('p').replace('effect: allow', 'effect: !allow allow'));
    expect(err.issues).toEqual([
      expect.objectContaining({
        line: 6,
        path: 'rules[0].effect',
        message: expect.stringMatching(/^tag !allow/),
      }),
    ]);
  });

  it('still loads a %YAML 1.1 or 1.2 line', () => {
    for (const v of ['1.1', '1.2']) expect(parsePolicy(`%YAML ${v}\n---\n${policy('p')}`).id).toBe('p');
  });
});

describe('hot reload of a refused document', () => {
  const scratch = policyDirEachTest();

  it('keeps the policy in force for a too-deep document and one the parser warns about', async () => {
    const file = join(scratch.dir, 'policy.yaml');
    await writeFile(file, policy('v1'));
    const events: ReloadEvent[] = [];
    let wake: (() => void) | undefined;
    const log = memoryLogger();
    scratch.enforcer = await LocalPolicyEnforcer.fromFile(file, {
      audit: new CollectingSink(),
      logger: log.logger,
      debounceMs: 20,
      onReload: (e) => {
        events.push(e);
        wake?.();
      },
    });
    const e = scratch.enforcer;
    const nextFailure = (after: number) =>
      new Promise<ReloadEvent>((resolve) => {
        const check = () => {
          const hit = events.slice(after).find((x) => !x.ok);
          if (hit) resolve(hit);
          else wake = check;
        };
        check();
      });

    for (const [text, message] of [
      [blockMaps(2000).replace('id: deep', 'id: v2'), `line 37: ${DEPTH_MESSAGE}`],
      [`%FOO bar\n---\n${policy('v3').replace('"search"', '"write"')}`, 'line 1: Unknown directive %FOO'],
    ] as const) {
      const failed = nextFailure(events.length);
      await writeFile(file, text);
      const ev = await failed;
      expect(ev.ok).toBe(false);
      if (!ev.ok) {
        expect(ev.error).toBeInstanceOf(PolicyError);
        expect(ev.error.message).toContain(message);
      }
      expect(e.policyId).toBe('v1');
      expect((await e.checkInbound({ caller: CALLER, action: 'search' })).allowed).toBe(true);
      expect((await e.checkInbound({ caller: CALLER, action: 'write' })).allowed).toBe(false);
    }
    expect(events.filter((x) => x.ok && x.changed)).toEqual([]);
  });
});
