// Full round trip of `callAgent` vs two baselines, same machine, same run:
//
//   weave  SecureAgent → SecureAgent: outbound policy check, pooled SPIFFE mTLS
//          channel, A2A v1.0 SendMessage, server mTLS + inbound policy check,
//          capability with zod validation, task + data artifact back, typed result.
//   bare   node `https` echo server with mTLS (client certificate required) and
//          an undici client with the client SVID: the ceiling of mTLS + HTTP/1.1.
//   sdk    the official @a2a-js/sdk (express + DefaultRequestHandler) over the
//          same mTLS, driven by the same undici JSON-RPC load as `bare`.
//
// Every identity comes from the dev Workload API server / dev CA (ECDSA P-256,
// TLS 1.3, HTTP/1.1). The servers live in this process (one loaded at a time);
// the load runs in a separate process (loadgen.ts) with CONCURRENCY calls in
// flight. The client side of `weave` is itself a SecureAgent in that process.
//
// Run by hand (see /bench/README.md):
//   node_modules/.bin/tsx --conditions=weave-source bench/agent.bench.ts
// Environment: BENCH_DURATION_MS (default 4000), BENCH_ROUNDS (default 5), BENCH_CONCURRENCY (default 32),
//              BENCH_SCENARIOS (default "weave,bare,sdk"; for profiling one path),
//              BENCH_CPU_PROF_DIR (write a CPU profile of each load generator there)
import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import { z } from 'zod';
import { LocalPolicyEnforcer } from '@weave/authz';
import { WorkloadApiIdentityProvider } from '@weave/identity';
import { DevWorkloadApiServer } from '@weave/identity/dev';
import { createMtlsServerOptions } from '@weave/transport';
import { SecureAgent } from '@weave/agent';
// The SDK baseline is shared with @weave/a2a's bench (it resolves @a2a-js/sdk and express from there).
import { ECHO_SEND_MESSAGE_BODY, startSdkEchoServer } from '../../a2a/bench/sdk-echo-server.js';
import { PostgresTaskStore } from '@weave/a2a/postgres';
import { startBenchPostgres } from '../../a2a/bench/postgres.js';

const DURATION = Number(process.env.BENCH_DURATION_MS ?? 4000);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 32);
// weave-pg and sdk-pg (PostgreSQL task stores, a private cluster started for the run) only when named.
const SCENARIOS = (process.env.BENCH_SCENARIOS ?? 'weave,bare,sdk').split(',') as Array<
  'weave' | 'bare' | 'sdk' | 'weave-pg' | 'sdk-pg'
>;
const WITH_PG = SCENARIOS.includes('weave-pg') || SCENARIOS.includes('sdk-pg');
const silent = pino({ level: 'silent' });

const TD = 'bench.weave';
const ID = {
  client: `spiffe://${TD}/agent/client`,
  server: `spiffe://${TD}/agent/server`,
  bare: `spiffe://${TD}/agent/bare`,
  sdk: `spiffe://${TD}/agent/sdk`,
};

const dir = await mkdtemp(join(tmpdir(), 'weave-bench-'));
const dev = await DevWorkloadApiServer.start({
  stateDir: dir,
  trustDomain: TD,
  // serverPg is a second replica of the same agent (same SPIFFE ID), on PostgreSQL.
  workloads: { client: ID.client, server: ID.server, serverPg: ID.server, bare: ID.bare, sdk: ID.sdk },
  logger: silent,
});
const policyFile = join(dir, 'policy.yaml');
await writeFile(
  policyFile,
  [
    'version: 1',
    'id: bench',
    'default: deny',
    'rules:',
    '  - id: client-echo',
    '    effect: allow',
    `    callers: ['${ID.client}']`,
    `    callees: ['${ID.server}']`,
    "    actions: ['echo']",
    '',
  ].join('\n'),
);

// ---- weave: the called SecureAgent --------------------------------------------------
let serverDecisions = 0;
const serverEnforcer = await LocalPolicyEnforcer.fromFile(policyFile, {
  watch: false,
  logger: silent,
  audit: { record: () => void serverDecisions++ },
});
const server = new SecureAgent({
  config: {
    name: 'server',
    identity: { workloadApi: { socket: dev.address('server') } },
    authz: { policyFile },
    logging: { level: 'warn' },
    server: { maxConcurrentTasks: 1024 },
  },
  enforcer: serverEnforcer,
  logger: pino({ level: 'warn' }),
}).capability('echo', { input: z.object({ text: z.string() }) }, ({ text }) => ({ text: `echo: ${text}` }));
await server.start();

// ---- weave-pg / sdk-pg: the same agents on PostgreSQL task stores -------------------------
const pgDb = WITH_PG ? await startBenchPostgres() : undefined;
const serverPg = pgDb
  ? new SecureAgent({
      config: {
        name: 'server',
        identity: { workloadApi: { socket: dev.address('serverPg') } },
        authz: { policyFile },
        logging: { level: 'warn' },
        server: { maxConcurrentTasks: 1024 },
      },
      enforcer: serverEnforcer,
      logger: pino({ level: 'warn' }),
      taskStore: new PostgresTaskStore({ pool: pgDb.pool('weave') }),
    }).capability('echo', { input: z.object({ text: z.string() }) }, ({ text }) => ({
      text: `echo: ${text}`,
    }))
  : undefined;
await serverPg?.start();

// ---- bare: node https mTLS echo ---------------------------------------------------------
const bareId = await WorkloadApiIdentityProvider.create({ address: dev.address('bare'), logger: silent });
const bare = https.createServer(createMtlsServerOptions(bareId), (req, res) => {
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    const body = Buffer.concat(chunks).toString('utf8');
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(`{"jsonrpc":"2.0","id":1,"result":{"echo":${JSON.stringify(body.length)}}}`);
  });
});
await new Promise<void>((r) => bare.listen(0, '127.0.0.1', r));
const bareUrl = `https://127.0.0.1:${(bare.address() as AddressInfo).port}/`;

// ---- sdk: @a2a-js/sdk over the same mTLS ---------------------------------------------------
const sdkId = await WorkloadApiIdentityProvider.create({ address: dev.address('sdk'), logger: silent });
const sdk = await startSdkEchoServer(createMtlsServerOptions(sdkId));
const sdkUrl = sdk.url;
const sdkPg = pgDb ? await startSdkEchoServer(createMtlsServerOptions(sdkId), pgDb.sdkStore) : undefined;

// ---- load ------------------------------------------------------------------------------------
// The JSON-RPC SendMessage both HTTP baselines receive (the bare server echoes its length).
const sendMessageBody = ECHO_SEND_MESSAGE_BODY;
const clientPem = (await dev.ca.issueX509Svid(ID.client)).toPem();
const caPem = dev.ca.x509Bundle.toPem();

interface Result {
  requests: number;
  totalRequests: number;
  errors: number;
  firstError?: string;
  rps: number;
  p50: number;
  p99: number;
  max: number;
  decisions: number;
  /** CPU (user + system) of this process — the loaded server — per request, in µs (warm-up included). */
  cpuUs: number;
  /** CPU of the load process — the calling side — per request in the measured window, in µs. */
  clientCpuUs: number;
}

function load(job: Record<string, unknown>, durationMs = DURATION): Promise<Result> {
  const loadgen = fileURLToPath(new URL('./loadgen.ts', import.meta.url));
  return new Promise((resolve, reject) => {
    const cpu0 = process.cpuUsage();
    const prof = process.env.BENCH_CPU_PROF_DIR;
    // The load process runs like this one (same loader, same export conditions).
    const child = spawn(
      process.execPath,
      [...process.execArgv, ...(prof ? ['--cpu-prof', `--cpu-prof-dir=${prof}`] : []), loadgen],
      { stdio: ['pipe', 'pipe', 'inherit'] },
    );
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.on('error', reject);
    child.on('exit', (code) => {
      if (code !== 0) return reject(new Error(`loadgen exited with ${code}`));
      const cpu = process.cpuUsage(cpu0);
      const r = JSON.parse(out.trim().split('\n').at(-1)!) as Result;
      r.cpuUs = (cpu.user + cpu.system) / Math.max(1, r.totalRequests);
      resolve(r);
    });
    child.stdin.end(JSON.stringify({ concurrency: CONCURRENCY, warmupMs: 1000, durationMs, ...job }));
  });
}

const http = (url: string, expectPeer: string, expect: string, durationMs?: number) =>
  load(
    {
      mode: 'http',
      url,
      body: sendMessageBody,
      expect,
      ca: caPem,
      cert: clientPem.certChain,
      key: clientPem.privateKey,
      expectPeer,
    },
    durationMs,
  );

/** The `weave` load: a SecureAgent in the load process calling `echo` at `targetUrl`. */
const agentLoad = (targetUrl: string, durationMs?: number) =>
  load(
    {
      mode: 'agent',
      socket: dev.address('client'),
      policyFile,
      target: ID.server,
      targetUrl,
      capability: 'echo',
      input: { text: 'hello' },
      expect: 'echo: hello',
    },
    durationMs,
  );

const scenarios = {
  weave: (durationMs?: number) => agentLoad(server.url, durationMs),
  bare: (durationMs?: number) => http(bareUrl, ID.bare, '"echo"', durationMs),
  sdk: (durationMs?: number) => http(sdkUrl, ID.sdk, 'TASK_STATE_COMPLETED', durationMs),
  'weave-pg': (durationMs?: number) => agentLoad(serverPg!.url, durationMs),
  'sdk-pg': (durationMs?: number) => http(sdkPg!.url, ID.sdk, 'TASK_STATE_COMPLETED', durationMs),
};
const labels = {
  weave: 'weave callAgent (2 agents)     ',
  bare: 'bare node https mTLS echo      ',
  sdk: '@a2a-js/sdk express over mTLS  ',
  'weave-pg': 'weave callAgent, PostgreSQL    ',
  'sdk-pg': '@a2a-js/sdk, DatabaseTaskStore ',
};

const fmt = (r: Result) =>
  `${r.rps.toFixed(0).padStart(6)} req/s  p50 ${r.p50.toFixed(2).padStart(6)} ms  p99 ${r.p99.toFixed(2).padStart(6)} ms  CPU/req server ${r.cpuUs.toFixed(0).padStart(4)} µs + caller ${r.clientCpuUs.toFixed(0).padStart(4)} µs  errors ${r.errors}${r.firstError ? ` (${r.firstError})` : ''}`;

console.log(
  `callAgent round trip vs bare mTLS vs @a2a-js/sdk — TLS 1.3, HTTP/1.1, ECDSA P-256 SVIDs, ${CONCURRENCY} in flight, ${DURATION} ms per run, ${ROUNDS} rounds, node ${process.version}`,
);
const handshakes = async () =>
  (await server.metrics.tlsHandshakes.get()).values.reduce((n, v) => n + v.value, 0);
const runs: Record<keyof typeof scenarios, Result[]> = {
  weave: [],
  bare: [],
  sdk: [],
  'weave-pg': [],
  'sdk-pg': [],
};
// One unreported round first, so every server is warm (JIT, connections) before measuring.
for (const name of SCENARIOS) await scenarios[name](2000);
for (let round = 1; round <= ROUNDS; round++) {
  for (const name of SCENARIOS) {
    const before = serverDecisions;
    const hs0 = await handshakes();
    const r = await scenarios[name]();
    runs[name].push(r);
    const authz =
      name === 'weave' || name === 'weave-pg'
        ? `  policy decisions: caller ${r.decisions}, callee ${serverDecisions - before}; TLS handshakes ${(await handshakes()) - hs0}`
        : '';
    console.log(`round ${round}  ${labels[name]} ${fmt(r)}${authz}`);
  }
}
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
};
type Key = 'rps' | 'p50' | 'p99' | 'cpuUs' | 'clientCpuUs';
const m = (name: keyof typeof runs, k: Key) => median(runs[name].map((r) => r[k]));
const cpu = (name: keyof typeof runs) => m(name, 'cpuUs') + m(name, 'clientCpuUs');
console.log('median of the rounds:');
for (const name of SCENARIOS) {
  console.log(
    `  ${labels[name]} ${m(name, 'rps').toFixed(0).padStart(6)} req/s  p50 ${m(name, 'p50').toFixed(2).padStart(6)} ms  p99 ${m(name, 'p99').toFixed(2).padStart(6)} ms  CPU/req ${m(name, 'cpuUs').toFixed(0).padStart(4)} + ${m(name, 'clientCpuUs').toFixed(0).padStart(4)} = ${cpu(name).toFixed(0).padStart(4)} µs`,
  );
}
if (SCENARIOS.includes('weave-pg')) {
  const ratio = (a: keyof typeof runs, b: keyof typeof runs) =>
    SCENARIOS.includes(b) ? `${(m(a, 'rps') / m(b, 'rps')).toFixed(2)}x` : 'n/a';
  const cpuRatio = (a: keyof typeof runs, b: keyof typeof runs) =>
    SCENARIOS.includes(b) ? `${(cpu(a) / cpu(b)).toFixed(2)}x` : 'n/a';
  console.log(
    `ratios (req/s): weave-pg/weave ${ratio('weave-pg', 'weave')} (target >= 0.5)   weave-pg/sdk-pg ${ratio('weave-pg', 'sdk-pg')} (target >= 3)`,
  );
  console.log(
    `ratios (CPU per request, both sides; lower is better): weave-pg/weave ${cpuRatio('weave-pg', 'weave')}   weave-pg/sdk-pg ${cpuRatio('weave-pg', 'sdk-pg')}`,
  );
}
if (['weave', 'bare', 'sdk'].every((n) => SCENARIOS.includes(n as 'weave'))) {
  const vsBare = m('weave', 'rps') / m('bare', 'rps');
  const vsSdk = m('weave', 'rps') / m('sdk', 'rps');
  console.log(
    `ratios (req/s): weave/bare ${vsBare.toFixed(2)}x (target >= 0.5)   weave/sdk ${vsSdk.toFixed(2)}x (target >= 3)   p99 weave/sdk ${(m('weave', 'p99') / m('sdk', 'p99')).toFixed(2)}`,
  );
  // On a shared 2-core box req/s swings with other load; CPU per request much less so.
  console.log(
    `ratios (CPU per request, both sides; lower is better): weave/bare ${(cpu('weave') / cpu('bare')).toFixed(2)}x   weave/sdk ${(cpu('weave') / cpu('sdk')).toFixed(2)}x`,
  );
}
const [l1, l5] = loadavg();
console.log(
  `load average at the end: ${l1!.toFixed(2)} (1 min), ${l5!.toFixed(2)} (5 min) on ${cpus().length} CPUs`,
);

await server.stop({ drainTimeoutMs: 1000 });
await serverPg?.stop({ drainTimeoutMs: 1000 });
await sdkPg?.close();
await pgDb?.stop();
await serverEnforcer.close();
await new Promise<void>((r) => bare.close(() => r()));
await sdk.close();
await bareId.close();
await sdkId.close();
await dev.close();
await rm(dir, { recursive: true, force: true });
