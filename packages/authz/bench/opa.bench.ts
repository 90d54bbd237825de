/**
 * Decision latency seen by OpaEnforcer (a real OPA sidecar on loopback,
 * policies/weave.rego with the golden policy as data) against the local
 * engine, in one run, on the inputs of policies/golden.yaml.
 *
 * Run by hand (never by the test suite), after scripts/infra/setup.sh:
 *   node_modules/.bin/tsx --conditions=weave-source packages/authz/bench/opa.bench.ts
 *
 * Measured in the same run, one decision at a time (what an agent's call waits for):
 *  - local: LocalPolicyEnforcer (baseline);
 *  - opa: OpaEnforcer → POST /v1/data/weave/authz/decision on a keep-alive
 *    connection, decision cache off, decision logs off;
 *  - opa + cache: OpaEnforcer with its decision cache (hits after the first round).
 * Prints p50/p99 per decision, decisions/s, the enforcer process's CPU per
 * decision (OPA's own CPU is not in it) and the ratio to the local engine.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';
import { SpiffeId } from '@weave/identity';
import { LocalPolicyEnforcer, OpaEnforcer, type AuditSink, type PolicyEnforcer } from '../src/index.js';
import { requireComponent } from '../../../interop/infra.js';
import { startOpa } from '../../../interop/opa.js';

const DECISIONS = Number(process.env.BENCH_DECISIONS ?? 5_000);
const WARMUP = 500;

const golden = parse(
  readFileSync(fileURLToPath(new URL('../policies/golden.yaml', import.meta.url)), 'utf8'),
) as {
  policy: unknown;
  cases: Array<{ direction: 'inbound' | 'outbound'; caller: string; callee?: string; action: string }>;
};
const checks = golden.cases.map((c) => ({
  direction: c.direction,
  caller: SpiffeId.parse(c.caller),
  callee: c.callee === undefined ? undefined : SpiffeId.parse(c.callee),
  action: c.action,
}));
const noAudit: AuditSink = { record: () => undefined };

async function ask(e: PolicyEnforcer, i: number): Promise<void> {
  const c = checks[i % checks.length]!;
  const d =
    c.direction === 'outbound' && c.callee
      ? await e.checkOutbound({ caller: c.caller, callee: c.callee, action: c.action })
      : await e.checkInbound({
          caller: c.caller,
          ...(c.callee ? { callee: c.callee } : {}),
          action: c.action,
        });
  if (d.reason.includes('timeout') || d.reason.includes('refused'))
    throw new Error(`engine failed: ${d.reason}`);
}

interface Result {
  name: string;
  p50: number;
  p99: number;
  perSec: number;
  cpuUs: number;
}

async function measure(name: string, e: PolicyEnforcer): Promise<Result> {
  for (let i = 0; i < WARMUP; i++) await ask(e, i);
  const lat = new Float64Array(DECISIONS);
  const cpu0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < DECISIONS; i++) {
    const s = process.hrtime.bigint();
    await ask(e, i);
    lat[i] = Number(process.hrtime.bigint() - s) / 1_000;
  }
  const wallUs = Number(process.hrtime.bigint() - t0) / 1_000;
  const cpu = process.cpuUsage(cpu0);
  lat.sort();
  return {
    name,
    p50: lat[Math.floor(DECISIONS * 0.5)]!,
    p99: lat[Math.floor(DECISIONS * 0.99)]!,
    perSec: DECISIONS / (wallUs / 1e6),
    cpuUs: (cpu.user + cpu.system) / DECISIONS,
  };
}

const opaBin = requireComponent('opa');
if (!opaBin) {
  console.error('opa is not installed: run scripts/infra/setup.sh first');
  process.exit(2);
}
const server = await startOpa({ bin: opaBin.opa, policy: golden.policy, decisionLogs: false });
try {
  const local = LocalPolicyEnforcer.fromObject(golden.policy, { audit: noAudit });
  const opa = new OpaEnforcer({ url: server.url, audit: noAudit, timeoutMs: 5_000 });
  const cached = new OpaEnforcer({
    url: server.url,
    audit: noAudit,
    timeoutMs: 5_000,
    cache: { ttlMs: 60_000 },
  });
  const results = [
    await measure('local', local),
    await measure('opa', opa),
    await measure('opa + cache', cached),
  ];
  await opa.close();
  await cached.close();
  const base = results[0]!;
  console.log(`decisions per engine: ${DECISIONS} (golden inputs, ${checks.length} distinct), one at a time`);
  console.log('engine        p50 µs    p99 µs   decisions/s   CPU µs/decision   p50 vs local');
  for (const r of results) {
    console.log(
      `${r.name.padEnd(12)} ${r.p50.toFixed(1).padStart(7)} ${r.p99.toFixed(1).padStart(9)} ${Math.round(
        r.perSec,
      )
        .toString()
        .padStart(13)} ${r.cpuUs.toFixed(1).padStart(17)} ${(r.p50 / base.p50).toFixed(1).padStart(13)}x`,
    );
  }
} finally {
  await server.stop();
}
