// OPA: the decision an agent's call waits for when its policy lives in an
// OPA sidecar — OpaEnforcer asking a real `opa run --server` on loopback
// (packages/authz/policies/weave.rego, the golden policy as data, decision
// logs off) over a keep-alive connection — against the local engine deciding
// the same inputs in process, one decision at a time, in the same run. The
// inputs are the golden table's (packages/authz/policies/golden.yaml); a
// decision counts only when it is the one the table names and came from the
// policy (a deny forced by a timeout or a refused connection is an error).
//
// CPU: `cli µs/u` is the process that asks (the agent's, where the enforcer
// lives); `srv µs/u` is OPA's own process over the same window, read from
// /proc (Linux), so "CPU both sides" compares everything a decision costs.
import { readFileSync } from 'node:fs';
import { LocalPolicyEnforcer, OpaEnforcer, type AuditSink, type PolicyEnforcer } from '@weave/authz';
import { requireComponent } from '../../interop/infra.js';
import { startOpa } from '../../interop/opa.js';
// The authz package's reader of its golden table, the inputs its tests hold every engine to.
import { golden, goldenQuestion } from '../../packages/authz/test/helpers/golden.js';
import { silent } from '../lib/env.js';
import { load1, type Ctx, type Row, type Scenario } from '../lib/harness.js';

const checks = golden.cases.map((c) => ({ ...c, ask: goldenQuestion(c) }));

/** CPU time (user + system) of another process so far, in µs; undefined where /proc is not readable. */
function cpuOfPid(pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // Clock ticks of 1/100 s: USER_HZ is 100 on every Linux Node supports.
    return (Number(f[11]) + Number(f[12])) * 10_000;
  } catch {
    return undefined;
  }
}

/** `n` decisions of `e`, one at a time, after a warm-up; latency in ms, CPU of this process and of `pid`. */
async function measure(
  ctx: Ctx,
  name: string,
  e: PolicyEnforcer,
  n: number,
  more: { pid?: number; vs?: string } = {},
): Promise<Row> {
  let errors = 0;
  let firstError: string | undefined;
  const run = async (i: number): Promise<boolean> => {
    const c = checks[i % checks.length]!;
    const d = await c.ask(e);
    // A failure (timeout, refused, bad answer) is a deny that names no policy.
    if (d.policyId !== undefined && d.allowed === c.allowed && (d.ruleId ?? null) === c.rule) return true;
    errors++;
    firstError ??= `${c.direction} ${c.caller} ${c.action}: ${d.allowed ? 'allowed' : 'denied'} (${d.reason})`;
    return false;
  };
  for (let i = 0; i < (ctx.smoke ? 100 : 500); i++) await run(i);
  const lat = new Float64Array(n);
  let ok = 0;
  const other0 = cpuOfPid(more.pid);
  const cpu0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) {
    const s = process.hrtime.bigint();
    if (await run(i)) lat[ok++] = Number(process.hrtime.bigint() - s) / 1e6;
  }
  const wallS = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpu = process.cpuUsage(cpu0);
  const other1 = cpuOfPid(more.pid);
  const timed = lat.subarray(0, ok).sort();
  const at = (p: number) => (ok ? timed[Math.min(ok - 1, Math.floor(p * ok))]! : null);
  const [p50, p99] = [at(0.5), at(0.99)];
  return {
    scenario: 'opa',
    case: name,
    unit: 'decisions/s',
    rate: ok ? ok / wallS : null,
    serverCpuUs: ok && other0 !== undefined && other1 !== undefined ? (other1 - other0) / ok : null,
    clientCpuUs: ok ? (cpu.user + cpu.system) / ok : null,
    p50,
    p99,
    errors,
    ...(firstError ? { firstError } : {}),
    ...(more.vs ? { vs: [more.vs] } : {}),
    load1: load1(),
    note:
      p50 === null || p99 === null
        ? ''
        : `p50 ${(p50 * 1000).toFixed(1)} µs, p99 ${(p99 * 1000).toFixed(1)} µs`,
  };
}

const LOCAL = 'local engine (in process)';

export const opa: Scenario = {
  name: 'opa',
  title:
    'OpaEnforcer → a real OPA sidecar (with and without its decision cache) vs the local engine, one decision at a time',
  async run(ctx) {
    const found = requireComponent('opa');
    if (!found) {
      // interop/infra.ts has already said so loudly (and thrown under CI=true).
      ctx.log('opa: SKIPPED — OPA is not installed here (scripts/infra/setup.sh installs it)');
      return { rows: [] };
    }
    const n = ctx.smoke ? 1_000 : 5_000;
    const audit: AuditSink = { record: () => undefined };
    const server = await startOpa({ bin: found.opa, policy: golden.policy, decisionLogs: false });
    const local = LocalPolicyEnforcer.fromObject(golden.policy, { audit, logger: silent });
    const remote = new OpaEnforcer({ url: server.url, audit, timeoutMs: 5_000 });
    const cached = new OpaEnforcer({ url: server.url, audit, timeoutMs: 5_000, cache: { ttlMs: 60_000 } });
    try {
      const pid = server.service.proc.pid;
      const rows = [
        await measure(ctx, LOCAL, local, n),
        await measure(ctx, 'weave OpaEnforcer', remote, n, { ...(pid ? { pid } : {}), vs: LOCAL }),
        // After the warm-up every golden input is in the cache: what a repeated (caller, callee, action) costs.
        await measure(ctx, 'weave OpaEnforcer + decision cache', cached, n, {
          ...(pid ? { pid } : {}),
          vs: LOCAL,
        }),
      ];
      const base = rows[0]!;
      for (const r of rows.slice(1)) {
        if (r.p50 !== null && r.p99 !== null && base.p50 && base.p99) {
          r.note += `; ${(r.p50 / base.p50).toFixed(1)}x p50, ${(r.p99 / base.p99).toFixed(1)}x p99 of local`;
        }
      }
      return { rows };
    } finally {
      await remote.close();
      await cached.close();
      await local.close();
      await server.stop();
    }
  },
};
