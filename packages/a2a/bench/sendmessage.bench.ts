// SendMessage round trips: the Weave A2A server vs the official @a2a-js/sdk
// express server, both over the same mTLS (dev-CA X.509-SVIDs, TLS 1.3,
// HTTP/1.1, client certificate required), driven by the same load generator
// (bench/loadgen.ts, a separate process, undici, 32 in flight) in the same run.
// Both agents do the same work per call: create a task, publish WORKING, one
// text artifact, COMPLETED, and answer with the task. The Weave path also runs
// @weave/transport's mtlsAuth and a LocalPolicyEnforcer check on every call.
//
// Run by hand:  node_modules/.bin/tsx --conditions=weave-source packages/a2a/bench/sendmessage.bench.ts
// Environment:  BENCH_DURATION_MS (default 5000), BENCH_ROUNDS (default 2), BENCH_CONCURRENCY (default 32)
import { createMtlsServerOptions } from '@weave/transport';
import { runLoadgen, startBenchAgents, type LoadResult as Result } from './bench-setup.js';
import { ECHO_SEND_MESSAGE_BODY, startSdkEchoServer } from './sdk-echo-server.js';

const DURATION = Number(process.env.BENCH_DURATION_MS ?? 5000);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 2);
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 32);

const bench = await startBenchAgents();
const { weaveUrl, caPem, clientSvid } = bench;
const sdkServer = await startSdkEchoServer(createMtlsServerOptions(bench.sdkId));
const sdkUrl = sdkServer.url;

function load(url: string, expectPeer: string, durationMs = DURATION): Promise<Result> {
  return runLoadgen('loadgen.ts', {
    url,
    body: ECHO_SEND_MESSAGE_BODY,
    concurrency: CONCURRENCY,
    warmupMs: 1000,
    durationMs,
    ca: caPem,
    cert: clientSvid.certChain,
    key: clientSvid.privateKey,
    expectPeer,
  });
}

const fmt = (r: Result) =>
  `${r.rps.toFixed(0).padStart(6)} req/s  p50 ${r.p50.toFixed(2).padStart(6)} ms  p99 ${r.p99.toFixed(2).padStart(6)} ms  max ${r.max.toFixed(1).padStart(6)} ms  server CPU ${r.cpuUs.toFixed(0).padStart(4)} µs/req  loadgen CPU ${r.clientCpuUs.toFixed(0).padStart(4)} µs/req  errors ${r.errors}${r.firstError ? ` (${r.firstError})` : ''}`;

console.log(
  `SendMessage over mTLS (TLS 1.3, HTTP/1.1, ECDSA P-256 SVIDs), ${CONCURRENCY} in flight, ${DURATION} ms per run, node ${process.version}`,
);
const weaveRuns: Result[] = [];
const sdkRuns: Result[] = [];
// An unreported round first, for both servers alike, so JIT warm-up is not measured.
await load(weaveUrl, 'spiffe://bench.weave/agent/weave', 2000);
await load(sdkUrl, 'spiffe://bench.weave/agent/sdk', 2000);
for (let round = 1; round <= ROUNDS; round++) {
  const w = await load(weaveUrl, 'spiffe://bench.weave/agent/weave');
  console.log(`round ${round}  weave (fastify + A2AServer)   ${fmt(w)}`);
  const s = await load(sdkUrl, 'spiffe://bench.weave/agent/sdk');
  console.log(`round ${round}  @a2a-js/sdk (express)         ${fmt(s)}`);
  weaveRuns.push(w);
  sdkRuns.push(s);
}
const avg = (rs: Result[], k: 'rps' | 'p50' | 'p99' | 'cpuUs') =>
  rs.reduce((a, r) => a + r[k], 0) / rs.length;
const wr = avg(weaveRuns, 'rps');
const sr = avg(sdkRuns, 'rps');
console.log(
  `mean      weave ${wr.toFixed(0)} req/s p99 ${avg(weaveRuns, 'p99').toFixed(2)} ms | sdk ${sr.toFixed(0)} req/s p99 ${avg(sdkRuns, 'p99').toFixed(2)} ms`,
);
console.log(
  `ratio     weave/sdk throughput ${(wr / sr).toFixed(2)}x   p99 weave/sdk ${(avg(weaveRuns, 'p99') / avg(sdkRuns, 'p99')).toFixed(2)}   server CPU per request sdk/weave ${(avg(sdkRuns, 'cpuUs') / avg(weaveRuns, 'cpuUs')).toFixed(2)}x   (policy decisions audited: ${bench.decisions()})`,
);
console.log(
  `load      ${(await import('node:os'))
    .loadavg()
    .map((x) => x.toFixed(2))
    .join(
      ' ',
    )} (1/5/15 min load average at the end; ${(await import('node:os')).availableParallelism()} CPUs)`,
);

await sdkServer.close();
await bench.close();
