/**
 * LocalPolicyEnforcer with 1 000 rules: per-decision latency percentiles.
 *
 * Run by hand (never by the test suite):
 *   pnpm --filter @weave/authz bench
 *   node_modules/.bin/tsx --conditions=weave-source packages/authz/bench/local.bench.ts
 *
 * Measured in the same run:
 *  - weave:  LocalPolicyEnforcer.checkOutbound (validation, indexed match, frozen decision,
 *            audit record to a no-op sink), awaited, one decision at a time;
 *  - weave + pino: the same with the default PinoAuditSink writing to /dev/null;
 *  - baseline linear: the same rules evaluated by a linear scan (same matchers, no index);
 *  - baseline Set: a bare Set lookup of "caller|callee|action" (the floor for any engine).
 * Target: p99 < 20 µs per decision for `weave`.
 */
import { pino } from 'pino';
import { SpiffeId } from '@weave/identity';
import {
  LocalPolicyEnforcer,
  PinoAuditSink,
  type AuditSink,
  type PolicyDocument,
  type PolicyRule,
} from '../src/index.js';
import { compileActions, compileIdMatcher, matchAction, matchId } from '../src/matchers.js';
import { benchWorkload } from '../test/helpers/random.js';
import { timeEach } from './timing.js';

const RULES = 1_000;
const DECISIONS = Number(process.env.BENCH_DECISIONS ?? 200_000);
const WARMUP = 20_000;

// A deterministic PRNG, so every run measures the same workload.
const { rand, pick, domains, teams, agent, actions } = benchWorkload(42);

function buildPolicy(): PolicyDocument {
  const rules: PolicyRule[] = [];
  for (let i = 0; rules.length < RULES; i++) {
    const td = pick(domains);
    const team = pick(teams);
    const kind = i % 20;
    let callers: PolicyRule['callers'];
    if (kind < 14) callers = [agent(td, team, Math.floor(rand() * 50))];
    else if (kind < 16) callers = [`spiffe://${td}/${team}/*`];
    else if (kind < 18) callers = [{ prefix: `spiffe://${td}/${team}` }];
    else if (kind < 19) callers = [`spiffe://${td}/${team}/**`];
    else callers = [`spiffe://${td}`];
    const callees = rand() < 0.7 ? [agent(pick(domains), pick(teams), Math.floor(rand() * 50))] : undefined;
    const acts = rand() < 0.8 ? [pick(actions)] : [`${pick(['admin', 'billing', 'search'])}.*`];
    rules.push({
      id: `rule-${i}`,
      effect: i % 25 === 0 ? 'deny' : 'allow',
      callers,
      ...(callees ? { callees } : {}),
      actions: acts,
    });
  }
  return { version: 1, id: 'bench', default: 'deny', rules };
}

interface Query {
  caller: SpiffeId;
  callee: SpiffeId;
  action: string;
}

function buildQueries(n: number): Query[] {
  const qs: Query[] = [];
  for (let i = 0; i < n; i++) {
    qs.push({
      caller: SpiffeId.parse(agent(pick(domains), pick(teams), Math.floor(rand() * 50))),
      callee: SpiffeId.parse(agent(pick(domains), pick(teams), Math.floor(rand() * 50))),
      action: pick(actions),
    });
  }
  return qs;
}

interface Stats {
  p50: number;
  p90: number;
  p99: number;
  p999: number;
  mean: number;
}

/** Nanosecond samples → microsecond percentiles. */
function percentiles(ns: Float64Array): Stats {
  const xs = Float64Array.from(ns).sort();
  const at = (p: number) => (xs[Math.min(xs.length - 1, Math.floor(p * xs.length))] as number) / 1000;
  let sum = 0;
  for (const x of xs) sum += x;
  return { p50: at(0.5), p90: at(0.9), p99: at(0.99), p999: at(0.999), mean: sum / xs.length / 1000 };
}

async function measureAsync(name: string, qs: Query[], f: (q: Query) => Promise<unknown>) {
  for (let i = 0; i < WARMUP; i++) await f(qs[i % qs.length] as Query);
  const out = new Float64Array(DECISIONS);
  for (let i = 0; i < DECISIONS; i++) {
    const q = qs[i % qs.length] as Query;
    const t0 = process.hrtime.bigint();
    await f(q);
    out[i] = Number(process.hrtime.bigint() - t0);
  }
  return { name, ...percentiles(out) };
}

function measureSync(name: string, qs: Query[], f: (q: Query) => unknown) {
  return { name, ...percentiles(timeEach(qs, DECISIONS, WARMUP, f)) };
}

const doc = buildPolicy();
const queries = buildQueries(10_000);
// Make a quarter of the queries hit an exact allow rule, so both paths are exercised.
for (let i = 0; i < queries.length; i += 4) {
  const r = doc.rules[i % doc.rules.length] as PolicyRule;
  const c = r.callers[0];
  if (
    typeof c === 'string' &&
    !c.includes('*') &&
    c.split('/').length > 3 &&
    r.callees?.[0] &&
    typeof r.callees[0] === 'string'
  ) {
    queries[i] = {
      caller: SpiffeId.parse(c),
      callee: SpiffeId.parse(r.callees[0]),
      action: r.actions[0]?.replace('*', 'x') ?? 'x',
    };
  }
}

const noop: AuditSink = { record() {} };
const weave = LocalPolicyEnforcer.fromObject(doc, { audit: noop });
const weavePino = LocalPolicyEnforcer.fromObject(doc, {
  audit: new PinoAuditSink(pino(pino.destination({ dest: '/dev/null', sync: true }))),
});

// Baseline: the same rules, same matchers, evaluated by scanning every rule.
const linear = doc.rules.map((r) => ({
  deny: r.effect === 'deny',
  callers: r.callers.map(compileIdMatcher),
  callees: r.callees?.map(compileIdMatcher),
  actions: compileActions(r.actions),
}));
function linearDecide(q: Query): boolean {
  const cs = q.caller.toString();
  const csegs = q.caller.segments;
  const es = q.callee.toString();
  const esegs = q.callee.segments;
  let allowed = false;
  for (const r of linear) {
    if (!r.callers.some((m) => matchId(m, q.caller, cs, csegs))) continue;
    if (r.callees && !r.callees.some((m) => matchId(m, q.callee, es, esegs))) continue;
    if (!matchAction(r.actions, q.action)) continue;
    if (r.deny) return false;
    allowed = true;
  }
  return allowed;
}

// Floor: a Set of allowed (caller, callee, action) triples.
const set = new Set<string>();
for (const q of queries)
  if (linearDecide(q)) set.add(`${q.caller.toString()}|${q.callee.toString()}|${q.action}`);

// Sanity: the indexed engine and the linear scan agree on every query.
let allowedCount = 0;
for (const q of queries) {
  const d = await weave.checkOutbound(q);
  if (d.allowed !== linearDecide(q))
    throw new Error(`engines disagree on ${q.caller} → ${q.callee} ${q.action}`);
  if (d.allowed) allowedCount++;
}

const w = await measureAsync('weave (LocalPolicyEnforcer, no-op audit sink)', queries, (q) =>
  weave.checkOutbound(q),
);
const wp = await measureAsync('weave + pino audit to /dev/null', queries, (q) => weavePino.checkOutbound(q));
const lin = measureSync('baseline: linear scan of 1 000 rules', queries, linearDecide);
const setRes = measureSync('baseline: bare Set lookup', queries, (q) =>
  set.has(`${q.caller.toString()}|${q.callee.toString()}|${q.action}`),
);
const results = [w, wp, lin, setRes];

console.log(
  `LocalPolicyEnforcer bench: ${doc.rules.length} rules, ${DECISIONS} decisions per engine, ` +
    `${queries.length} distinct queries (${allowedCount} allowed), Node ${process.version}`,
);
console.table(
  results.map((r) => ({
    engine: r.name,
    'p50 µs': r.p50.toFixed(2),
    'p90 µs': r.p90.toFixed(2),
    'p99 µs': r.p99.toFixed(2),
    'p99.9 µs': r.p999.toFixed(2),
    'mean µs': r.mean.toFixed(2),
  })),
);
console.log(`ratio p99 linear scan / weave: ${(lin.p99 / w.p99).toFixed(1)}x`);
console.log(`ratio p99 weave / bare Set:    ${(w.p99 / setRes.p99).toFixed(1)}x`);
console.log(`target p99 < 20 µs: ${w.p99 < 20 ? 'MET' : 'NOT MET'} (${w.p99.toFixed(2)} µs)`);
await weave.close();
await weavePino.close();
