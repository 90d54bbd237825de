/**
 * LocalPolicyEnforcer decision latency as the policy grows: 1 000, 10 000 and
 * 100 000 rules of one caller-matcher kind each (exact IDs, trust-domain wide,
 * prefixes, globs, and a mix of all), against a bare Set lookup of
 * "caller|callee|action" measured in the same run. Also the compile time of
 * each policy (what a hot reload of that file costs after parsing).
 *
 * Run by hand (never by the test suite):
 *   node_modules/.bin/tsx --conditions=weave-source packages/authz/bench/scale.bench.ts
 * Environment: BENCH_SIZES (default 1000,10000,100000), BENCH_MIXES, BENCH_DECISIONS (default 20000 per cell).
 * Target: p99 < 20 µs per decision at 100 000 rules for every mix.
 */
import { cpus, loadavg } from 'node:os';
import { performance } from 'node:perf_hooks';
import { SpiffeId } from '@weave/identity';
import { LocalPolicyEnforcer, type AuditSink, type PolicyDocument, type PolicyRule } from '../src/index.js';
import { compileActions, compileIdMatcher, matchAction, matchId } from '../src/matchers.js';
import { benchWorkload } from '../test/helpers/random.js';
import { timeEach } from './timing.js';

const SIZES = (process.env.BENCH_SIZES ?? '1000,10000,100000').split(',').map(Number);
type Mix = 'exact' | 'trust-domain' | 'prefix' | 'glob' | 'mixed';
const MIXES = (process.env.BENCH_MIXES ?? 'exact,trust-domain,prefix,glob,mixed').split(',') as Mix[];
const DECISIONS = Number(process.env.BENCH_DECISIONS ?? 20_000);
// Queries checked against a linear scan of the same rules (the engines must agree).
const AGREEMENT = 300;

const { rand, pick, domains, teams, agent, actions } = benchWorkload(42);

function callers(mix: Mix, i: number): PolicyRule['callers'] {
  const td = pick(domains);
  const team = pick(teams);
  const kind: Mix =
    mix === 'mixed' ? (['exact', 'exact', 'trust-domain', 'prefix', 'glob'] as const)[i % 5]! : mix;
  switch (kind) {
    case 'exact':
      return [agent(td, team, Math.floor(rand() * 50))];
    case 'trust-domain':
      return [`spiffe://${td}`];
    case 'prefix':
      return [{ prefix: rand() < 0.5 ? `spiffe://${td}/${team}` : agent(td, team, Math.floor(rand() * 50)) }];
    default:
      return [rand() < 0.5 ? `spiffe://${td}/${team}/*` : `spiffe://${td}/*/agent${Math.floor(rand() * 50)}`];
  }
}

function buildPolicy(mix: Mix, n: number): PolicyDocument {
  const rules: PolicyRule[] = [];
  for (let i = 0; i < n; i++) {
    const callees = rand() < 0.7 ? [agent(pick(domains), pick(teams), Math.floor(rand() * 50))] : undefined;
    const acts = rand() < 0.8 ? [pick(actions)] : [`${pick(['admin', 'billing', 'search'])}.*`];
    rules.push({
      id: `rule-${i}`,
      effect: i % 25 === 0 ? 'deny' : 'allow',
      callers: callers(mix, i),
      ...(callees ? { callees } : {}),
      actions: acts,
    });
  }
  return { version: 1, id: `bench-${mix}-${n}`, default: 'deny', rules };
}

interface Query {
  caller: SpiffeId;
  callee: SpiffeId;
  action: string;
}

function buildQueries(doc: PolicyDocument, n: number): Query[] {
  const qs: Query[] = [];
  for (let i = 0; i < n; i++) {
    // Every other query names the callee and action of some rule, so allows are found too.
    const r = i % 2 === 0 ? pick(doc.rules) : undefined;
    const callee = r?.callees?.[0];
    qs.push({
      caller: SpiffeId.parse(agent(pick(domains), pick(teams), Math.floor(rand() * 50))),
      callee: SpiffeId.parse(typeof callee === 'string' ? callee : agent(pick(domains), pick(teams), 7)),
      action: r ? (r.actions[0] as string).replace('*', 'x') : pick(actions),
    });
  }
  return qs;
}

type LinearRule = {
  deny: boolean;
  callers: ReturnType<typeof compileIdMatcher>[];
  callees: ReturnType<typeof compileIdMatcher>[] | undefined;
  actions: ReturnType<typeof compileActions>;
};
const linearRules = (doc: PolicyDocument): LinearRule[] =>
  doc.rules.map((r) => ({
    deny: r.effect === 'deny',
    callers: r.callers.map(compileIdMatcher),
    callees: r.callees?.map(compileIdMatcher),
    actions: compileActions(r.actions),
  }));

/** The reference: every rule in file order, deny overrides allow. */
function linearDecide(rules: LinearRule[], q: Query): boolean {
  const cs = q.caller.toString();
  const es = q.callee.toString();
  let allowed = false;
  for (const r of rules) {
    if (!r.callers.some((m) => matchId(m, q.caller, cs, q.caller.segments))) continue;
    if (r.callees && !r.callees.some((m) => matchId(m, q.callee, es, q.callee.segments))) continue;
    if (!matchAction(r.actions, q.action)) continue;
    if (r.deny) return false;
    allowed = true;
  }
  return allowed;
}

function percentiles(ns: Float64Array): { p50: number; p99: number } {
  const xs = Float64Array.from(ns).sort();
  const at = (p: number): number => (xs[Math.min(xs.length - 1, Math.floor(p * xs.length))] as number) / 1000;
  return { p50: at(0.5), p99: at(0.99) };
}

function measure(qs: Query[], f: (q: Query) => unknown): { p50: number; p99: number } {
  return percentiles(timeEach(qs, DECISIONS, 5_000, f));
}

const load = (): string => {
  const [l1, l5] = loadavg();
  return `load ${l1!.toFixed(2)} / ${l5!.toFixed(2)} (1/5 min) on ${cpus().length} CPUs`;
};
const noop: AuditSink = { record() {} };

console.log(
  `LocalPolicyEnforcer decision latency by policy size and caller-matcher mix vs a bare Set lookup; ` +
    `${DECISIONS} decisions per cell (decide + frozen decision + audit record to a no-op sink), node ${process.version}`,
);
for (const mix of MIXES) {
  for (const n of SIZES) {
    const doc = buildPolicy(mix, n);
    const t0 = performance.now();
    const weave = LocalPolicyEnforcer.fromObject(doc, { audit: noop });
    const compileMs = performance.now() - t0;
    const qs = buildQueries(doc, 5_000);
    let allowed = 0;
    const linear = linearRules(doc);
    for (const q of qs.slice(0, AGREEMENT)) {
      const d = await weave.checkOutbound(q);
      if (d.allowed !== linearDecide(linear, q))
        throw new Error(`engines disagree on ${q.caller} → ${q.callee} ${q.action}`);
      if (d.allowed) allowed++;
    }
    const set = new Set<string>();
    for (const q of qs) set.add(`${q.caller.toString()}|${q.callee.toString()}|${q.action}`);
    // The enforcer answers synchronously inside a resolved promise; time the decision itself.
    const decideSync = (
      weave as unknown as { decide(d: string, c: unknown, r: boolean): unknown }
    ).decide.bind(weave);
    const w = measure(qs, (q) => decideSync('outbound', q, true));
    const s = measure(qs, (q) => set.has(`${q.caller.toString()}|${q.callee.toString()}|${q.action}`));
    console.log(
      `${mix.padEnd(12)} ${String(n).padStart(6)} rules  weave p50 ${w.p50.toFixed(2).padStart(7)} µs  p99 ${w.p99.toFixed(2).padStart(7)} µs  ` +
        `Set p50 ${s.p50.toFixed(2).padStart(5)} µs  p99 ${s.p99.toFixed(2).padStart(5)} µs  p99 ratio ${(w.p99 / s.p99).toFixed(1).padStart(6)}x  ` +
        `compile ${compileMs.toFixed(0).padStart(5)} ms  agree ${AGREEMENT}/${AGREEMENT} (${allowed} allowed)  ${load()}`,
    );
    await weave.close();
  }
}
