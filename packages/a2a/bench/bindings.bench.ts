// SendMessage per A2A binding — JSON-RPC, HTTP+JSON and gRPC — Weave vs the
// official @a2a-js/sdk server on the same binding, same mTLS (dev-CA
// X.509-SVIDs, TLS 1.3, client certificate required), same load generators
// (separate processes: bench/loadgen.ts over undici for the HTTP bindings,
// bench/loadgen-grpc.ts over one grpc-js channel for gRPC), same run. Both
// agents do the same work per call (task, WORKING, one text artifact,
// COMPLETED, answer with the task); Weave also runs its peer check and a
// LocalPolicyEnforcer decision (audited) on every call, on every binding.
//
// Run by hand:  node_modules/.bin/tsx --conditions=weave-source packages/a2a/bench/bindings.bench.ts
// Environment:  BENCH_DURATION_MS (default 4000), BENCH_ROUNDS (default 2), BENCH_CONCURRENCY (default 32)
import os from 'node:os';
import { authorizeMemberOf } from '@weave/identity';
import { createMtlsServerOptions } from '@weave/transport';
import { A2AGrpcServer } from '@weave/a2a';
import { runLoadgen, startBenchAgents, type LoadResult as Result } from './bench-setup.js';
import { ECHO_SEND_MESSAGE_BODY, startSdkEchoGrpcServer, startSdkEchoServer } from './sdk-echo-server.js';

const DURATION = Number(process.env.BENCH_DURATION_MS ?? 4000);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 2);
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 32);

const bench = await startBenchAgents();
const { weaveUrl, caPem, clientSvid, weaveId, sdkId } = bench;
const weaveGrpc = new A2AGrpcServer({
  handler: bench.a2a.handler,
  identity: weaveId,
  authorize: authorizeMemberOf('bench.weave'),
});
const weaveGrpcTarget = (await weaveGrpc.listen()).url;

const sdkHttp = await startSdkEchoServer(createMtlsServerOptions(sdkId));
const sdkSvid = sdkId.getX509Svid().toPem();
const sdkGrpc = await startSdkEchoGrpcServer({ ca: caPem, cert: sdkSvid.certChain, key: sdkSvid.privateKey });

const sendParams = (JSON.parse(ECHO_SEND_MESSAGE_BODY) as { params: Record<string, unknown> }).params;
const REST_BODY = JSON.stringify(sendParams);

type Binding = 'JSONRPC' | 'HTTP+JSON' | 'GRPC';

function run(binding: Binding, server: 'weave' | 'sdk', durationMs = DURATION): Promise<Result> {
  const peer = `spiffe://bench.weave/agent/${server}`;
  const common = {
    concurrency: CONCURRENCY,
    warmupMs: 1000,
    durationMs,
    ca: caPem,
    cert: clientSvid.certChain,
    key: clientSvid.privateKey,
    expectPeer: peer,
  };
  let script: 'loadgen.ts' | 'loadgen-grpc.ts';
  let job: object;
  if (binding === 'GRPC') {
    script = 'loadgen-grpc.ts';
    job = { ...common, target: server === 'weave' ? weaveGrpcTarget : sdkGrpc.target, request: sendParams };
  } else if (binding === 'JSONRPC') {
    script = 'loadgen.ts';
    job = { ...common, url: server === 'weave' ? weaveUrl : sdkHttp.url, body: ECHO_SEND_MESSAGE_BODY };
  } else {
    script = 'loadgen.ts';
    const base = server === 'weave' ? weaveUrl.replace(/\/$/, '') : sdkHttp.restUrl;
    job = { ...common, url: `${base}/message:send`, body: REST_BODY, jsonRpc: false };
  }
  return runLoadgen(script, job);
}

/** NaN travels as null in JSON (a run too short to measure anything). */
const n = (x: number | null) => (x ?? Number.NaN).toFixed(2);
const fmt = (r: Result) =>
  `${r.rps.toFixed(0).padStart(6)} req/s  p50 ${n(r.p50).padStart(6)} ms  p99 ${n(r.p99).padStart(7)} ms  server CPU ${r.cpuUs.toFixed(0).padStart(4)} µs/req  errors ${r.errors}${r.firstError ? ` (${r.firstError})` : ''}`;

console.log(
  `SendMessage per binding over mTLS (TLS 1.3, ECDSA P-256 SVIDs), ${CONCURRENCY} in flight, ${DURATION} ms per run, ${ROUNDS} rounds, node ${process.version}`,
);
const bindings: Binding[] = ['JSONRPC', 'HTTP+JSON', 'GRPC'];
const results = new Map<string, Result[]>();
// One unreported run per binding and server first, so JIT warm-up is not measured.
for (const b of bindings) for (const s of ['weave', 'sdk'] as const) await run(b, s, 1500);
for (let round = 1; round <= ROUNDS; round++) {
  for (const b of bindings) {
    for (const s of ['weave', 'sdk'] as const) {
      const r = await run(b, s);
      console.log(`round ${round}  ${b.padEnd(9)} ${s.padEnd(5)}  ${fmt(r)}`);
      const k = `${b}/${s}`;
      results.set(k, [...(results.get(k) ?? []), r]);
    }
  }
}
const mean = (k: string, f: 'rps' | 'cpuUs' | 'p99') => {
  const rs = results.get(k) ?? [];
  return rs.reduce((a, r) => a + r[f], 0) / Math.max(1, rs.length);
};
for (const b of bindings) {
  const w = mean(`${b}/weave`, 'rps');
  const s = mean(`${b}/sdk`, 'rps');
  console.log(
    `ratio     ${b.padEnd(9)} weave ${w.toFixed(0)} req/s vs sdk ${s.toFixed(0)} req/s = ${(w / s).toFixed(2)}x throughput; server CPU per request sdk/weave ${(mean(`${b}/sdk`, 'cpuUs') / mean(`${b}/weave`, 'cpuUs')).toFixed(2)}x (weave ${mean(`${b}/weave`, 'cpuUs').toFixed(0)} µs, sdk ${mean(`${b}/sdk`, 'cpuUs').toFixed(0)} µs)`,
  );
}
const rpc = mean('JSONRPC/weave', 'rps');
console.log(
  `weave     HTTP+JSON/JSON-RPC ${(mean('HTTP+JSON/weave', 'rps') / rpc).toFixed(2)}x   gRPC/JSON-RPC ${(mean('GRPC/weave', 'rps') / rpc).toFixed(2)}x   (policy decisions audited: ${bench.decisions()})`,
);
console.log(
  `load      ${os
    .loadavg()
    .map((x) => x.toFixed(2))
    .join(' ')} (1/5/15 min load average at the end; ${os.availableParallelism()} CPUs)`,
);

await weaveGrpc.close(100);
await sdkHttp.close();
await sdkGrpc.close();
await bench.close();
