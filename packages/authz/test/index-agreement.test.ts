// The compiled policy answers from an index (callers by ID, trust domain and a
// tree of path segments; within each set of rules by callee and action). These
// tests hold it to a plain reading of the rules: every rule in file order,
// the first matching deny wins, else the first matching allow, else deny.
import { describe, expect, it } from 'vitest';
import { SpiffeId } from '@weave/identity';
import { CompiledPolicy, type PolicyDocument, type PolicyRule } from '../src/policy.js';
import { compileIdMatcher, matchId } from '../src/matchers.js';
import { seededRandom } from './helpers/random.js';

const { rand, pick } = seededRandom(7);
// Few domains, teams and names: many rules land in the same index lists.
const tds = ['a.test', 'b.test'];
const teams = ['t0', 't1', 't2'];
const names = ['n0', 'n1', 'n2', 'n3'];
const actions = ['read', 'write', 'admin.read', 'admin.write', 'x'];
const id = (): string => `spiffe://${pick(tds)}/${pick(teams)}/${pick(names)}`;

/** A random check: now and then a bare trust-domain-level caller, or no callee (an inbound check). */
function randomQuery(): { caller: SpiffeId; callee: SpiffeId | undefined; action: string } {
  const caller = SpiffeId.parse(rand() < 0.05 ? `spiffe://${pick(tds)}/${pick(teams)}` : id());
  const callee = rand() < 0.2 ? undefined : SpiffeId.parse(id());
  const action = pick([...actions, 'admin.', 'admin.*', 'write', 'wre', 'wr*', '*', 'other']);
  return { caller, callee, action };
}

function matcher(): PolicyRule['callers'][number] {
  const td = pick(tds);
  switch (Math.floor(rand() * 8)) {
    case 0:
      return '*';
    case 1:
      return `spiffe://${td}`;
    case 2:
      return { prefix: `spiffe://${td}/${pick(teams)}` };
    case 3:
      return { prefix: `spiffe://${td}/${pick(teams)}/${pick(names)}` };
    case 4:
      return `spiffe://${td}/${pick(teams)}/*`;
    case 5:
      return `spiffe://${td}/*/${pick(names)}`;
    case 6:
      return `spiffe://${td}/${pick(teams)}/**`;
    default:
      return id();
  }
}

function policy(n: number): PolicyDocument {
  const rules: PolicyRule[] = [];
  for (let i = 0; i < n; i++) {
    const callees = rand() < 0.6 ? [matcher(), ...(rand() < 0.3 ? [matcher()] : [])] : undefined;
    const acts = [pick([...actions, 'admin.*', '*', 'wr*e', 'a*', 'admin.**', 'wr*'])];
    if (rand() < 0.2) acts.push(pick(actions));
    rules.push({
      id: `r${i}`,
      effect: i % 7 === 3 ? 'deny' : 'allow',
      callers: [matcher(), ...(rand() < 0.2 ? [matcher()] : [])],
      ...(callees ? { callees } : {}),
      actions: acts,
    });
  }
  return { version: 1, id: 'agreement', default: 'deny', rules };
}

interface Plain {
  readonly id: string;
  readonly deny: boolean;
  readonly callers: ReturnType<typeof compileIdMatcher>[];
  readonly callees: ReturnType<typeof compileIdMatcher>[] | undefined;
  /** Each action pattern as a regular expression, `*` standing for any characters. */
  readonly actions: RegExp[];
}

// Independent of the engine's action matching (exact names, prefixes, regexes): a plain translation.
// Valid patterns hold letters, digits, ". _ : / -" and "*" only, so "." is the one character to escape.
const patternRegExp = (p: string): RegExp =>
  new RegExp(`^${p.replaceAll('.', '\\.').replaceAll('*', '.*')}$`, 's');

const plain = (doc: PolicyDocument): Plain[] =>
  doc.rules.map((r) => ({
    id: r.id,
    deny: r.effect === 'deny',
    callers: r.callers.map(compileIdMatcher),
    callees: r.callees?.map(compileIdMatcher),
    actions: r.actions.map(patternRegExp),
  }));

function reference(rules: Plain[], caller: SpiffeId, callee: SpiffeId | undefined, action: string) {
  let deny: string | undefined;
  let allow: string | undefined;
  const matches = (m: Plain['callers'][number], who: SpiffeId): boolean =>
    matchId(m, who, who.toString(), who.segments);
  for (const r of rules) {
    if (!r.callers.some((m) => matches(m, caller))) continue;
    if (r.callees && (!callee || !r.callees.some((m) => matches(m, callee)))) continue;
    if (!r.actions.some((re) => re.test(action))) continue;
    if (r.deny) deny ??= r.id;
    else allow ??= r.id;
  }
  return { deny, allow };
}

/** The reference scans every rule for every check: seconds of CPU, many more on a loaded machine. */
const SCAN_TIMEOUT_MS = 120_000;

describe('CompiledPolicy index', () => {
  for (const n of [12, 200, 3000]) {
    it(
      `names the same deciding rules as a scan of every rule (${n} rules, outbound and inbound checks)`,
      () => {
        const doc = policy(n);
        const compiled = new CompiledPolicy(doc);
        const rules = plain(doc);
        let withAllow = 0;
        let withDeny = 0;
        for (let i = 0; i < 1500; i++) {
          const { caller, callee, action } = randomQuery();
          const got = compiled.decide(caller, callee, action);
          const want = reference(rules, caller, callee, action);
          expect({ deny: got.deny?.id, allow: got.allow?.id }, `${caller} → ${callee} ${action}`).toEqual(
            want,
          );
          if (want.deny) withDeny++;
          if (want.allow) withAllow++;
        }
        // Both kinds of deciding rule are found, so agreement is not about empty answers only.
        expect(withAllow).toBeGreaterThan(0);
        expect(withDeny).toBeGreaterThan(0);
      },
      SCAN_TIMEOUT_MS,
    );
  }
});

/** `doc` edited as a reload would see it: some rules changed, some removed, some added, a few moved. */
function edited(doc: PolicyDocument): PolicyDocument {
  const fresh = policy(doc.rules.length);
  const rules: PolicyRule[] = [];
  doc.rules.forEach((r, i) => {
    const roll = rand();
    if (roll < 0.05) return; // removed
    if (roll < 0.1)
      rules.push({ ...(fresh.rules[i] as PolicyRule), id: r.id }); // changed in place
    else rules.push(r); // unchanged
    if (rand() < 0.03) rules.push({ ...(fresh.rules[i] as PolicyRule), id: `${r.id}-new` }); // added
  });
  return { ...doc, id: 'agreement-2', rules };
}

describe('CompiledPolicy built from the version in force (a reload)', () => {
  it(
    'decides exactly like a policy compiled from scratch, and reuses the unchanged rules',
    () => {
      const before = policy(1000);
      const old = new CompiledPolicy(before);
      const after = edited(before);
      const incremental = new CompiledPolicy(after, old);
      const scratch = new CompiledPolicy(after);
      const rules = plain(after);
      for (let i = 0; i < 800; i++) {
        const { caller, callee, action } = randomQuery();
        const got = incremental.decide(caller, callee, action);
        const want = reference(rules, caller, callee, action);
        expect({ deny: got.deny?.id, allow: got.allow?.id }, `${caller} → ${callee} ${action}`).toEqual(want);
        const fresh = scratch.decide(caller, callee, action);
        expect({ deny: got.deny?.id, allow: got.allow?.id }).toEqual({
          deny: fresh.deny?.id,
          allow: fresh.allow?.id,
        });
      }
      // A rule at the same position with the same content is the same compiled object; a changed
      // one, or one whose position moved (its precedence index), is compiled again.
      let reused = 0;
      after.rules.forEach((r, index) => {
        const prev = before.rules.findIndex((b) => b.id === r.id);
        const same = prev === index && before.rules[prev] === r;
        if (same) {
          expect(incremental.rule(r.id)).toBe(old.rule(r.id));
          reused++;
        } else expect(incremental.rule(r.id)).not.toBe(old.rule(r.id));
        expect(incremental.rule(r.id)?.index).toBe(index);
      });
      expect(reused).toBeGreaterThan(0);
      expect(incremental.rulesCompiled).toBe(after.rules.length - reused);
      expect(scratch.rulesCompiled).toBe(after.rules.length);
      // Removed rules are gone.
      for (const r of before.rules)
        if (!after.rules.some((a) => a.id === r.id)) expect(incremental.rule(r.id)).toBeUndefined();
    },
    SCAN_TIMEOUT_MS,
  );
});
