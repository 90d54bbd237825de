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
import { spawn } from 'node:child_process';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import { LocalPolicyEnforcer } from '@weave/authz';
import { authorizeMemberOf } from '@weave/identity';
import { DevCaIdentityProvider, DevCertificateAuthority } from '@weave/identity/dev';
import { createMtlsServerOptions } from '@weave/transport';
import { createMtlsServer } from '@weave/transport/server';
import { A2AServer } from '@weave/a2a';
import { ECHO_SEND_MESSAGE_BODY, startSdkEchoServer } from './sdk-echo-server.js';

const DURATION = Number(process.env.BENCH_DURATION_MS ?? 5000);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 2);
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 32);
const silent = pino({ level: 'silent' });

const ca = await DevCertificateAuthority.create({ trustDomain: 'bench.weave' });
const weaveId = await DevCaIdentityProvider.create({
  ca,
  id: 'spiffe://bench.weave/agent/weave',
  logger: silent,
});
const sdkId = await DevCaIdentityProvider.create({
  ca,
  id: 'spiffe://bench.weave/agent/sdk',
  logger: silent,
});
const clientSvid = (await ca.issueX509Svid('spiffe://bench.weave/agent/loadgen')).toPem();
const caPem = ca.x509Bundle.toPem();

// ---- Weave server --------------------------------------------------------------
let decisions = 0;
const enforcer = LocalPolicyEnforcer.fromObject(
  {
    version: 1,
    id: 'bench',
    default: 'deny',
    rules: [
      { id: 'loadgen', effect: 'allow', callers: ['spiffe://bench.weave/agent/loadgen'], actions: ['echo'] },
    ],
  },
  { audit: { record: () => void decisions++ }, logger: silent },
);
const a2a = new A2AServer({
  card: { name: 'weave bench', description: 'echo', version: '1.0.0' },
  selfId: weaveId.getX509Svid().id,
  enforcer,
});
a2a.registerTaskHandler({ id: 'echo', name: 'Echo', description: 'echo', tags: [] }, (ctx) => {
  const p = ctx.message.parts[0];
  return `echo: ${p?.text ?? ''}`;
});
const weaveApp = createMtlsServer({ identity: weaveId, authorize: authorizeMemberOf('bench.weave') });
await weaveApp.register(a2a.plugin);
await weaveApp.listen({ port: 0, host: '127.0.0.1' });
const weaveUrl = `https://127.0.0.1:${(weaveApp.server.address() as AddressInfo).port}/`;

// ---- official SDK server ----------------------------------------------------------
const sdkServer = await startSdkEchoServer(createMtlsServerOptions(sdkId));
const sdkUrl = sdkServer.url;
// The SDK logs every request error to console.error; keep the run quiet only if nothing fails.

// ---- load -------------------------------------------------------------------------
const body = ECHO_SEND_MESSAGE_BODY;

interface Result {
  requests: number;
  totalRequests: number;
  /** Server CPU (user + system) per request, in µs, over warm-up and measurement. */
  cpuUs: number;
  clientCpuUs: number;
  errors: number;
  firstError?: string;
  rps: number;
  p50: number;
  p99: number;
  max: number;
}

function load(url: string, expectPeer: string, durationMs = DURATION): Promise<Result> {
  const loadgen = fileURLToPath(new URL('./loadgen.ts', import.meta.url));
  const tsx = fileURLToPath(new URL('../../../node_modules/.bin/tsx', import.meta.url));
  return new Promise((resolve, reject) => {
    // Both servers live in this process and only one is loaded at a time, so this
    // process's CPU time is the loaded server's: a figure that machine noise
    // (other processes) does not distort the way it distorts req/s.
    const cpu0 = process.cpuUsage();
    const child = spawn(tsx, [loadgen], { stdio: ['pipe', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.on('error', reject);
    child.on('exit', (code) => {
      if (code !== 0) reject(new Error(`loadgen exited with ${code}`));
      else {
        const cpu = process.cpuUsage(cpu0);
        const r = JSON.parse(out) as Result;
        r.cpuUs = (cpu.user + cpu.system) / Math.max(1, r.totalRequests);
        resolve(r);
      }
    });
    child.stdin.end(
      JSON.stringify({
        url,
        body,
        concurrency: CONCURRENCY,
        warmupMs: 1000,
        durationMs,
        ca: caPem,
        cert: clientSvid.certChain,
        key: clientSvid.privateKey,
        expectPeer,
      }),
    );
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
  `ratio     weave/sdk throughput ${(wr / sr).toFixed(2)}x   p99 weave/sdk ${(avg(weaveRuns, 'p99') / avg(sdkRuns, 'p99')).toFixed(2)}   server CPU per request sdk/weave ${(avg(sdkRuns, 'cpuUs') / avg(weaveRuns, 'cpuUs')).toFixed(2)}x   (policy decisions audited: ${decisions})`,
);
console.log(
  `load      ${(await import('node:os'))
    .loadavg()
    .map((x) => x.toFixed(2))
    .join(
      ' ',
    )} (1/5/15 min load average at the end; ${(await import('node:os')).availableParallelism()} CPUs)`,
);

await a2a.close();
await weaveApp.close();
await sdkServer.close();
await weaveId.close();
await sdkId.close();
await enforcer.close?.();
