// Load generator of the round-trip bench, run as its own process so it never
// shares an event loop with the server under test. Reads its job as JSON on
// stdin, keeps `concurrency` calls in flight for `durationMs` after a warm-up,
// and prints one JSON line with the results.
//
// mode "http":  raw JSON-RPC POSTs over an undici Agent with the client SVID
//               (one keep-alive connection per in-flight request) — drives the
//               bare node mTLS echo and the official SDK server alike.
// mode "agent": a SecureAgent (identity from the dev Workload API socket,
//               local policy) calling `callAgent` — the full Weave path.
import type { PeerCertificate } from 'node:tls';
import { pino } from 'pino';
import { Agent, request } from 'undici';
import { LocalPolicyEnforcer } from '@weave/authz';
import { SecureAgent } from '@weave/agent';

interface Common {
  concurrency: number;
  warmupMs: number;
  durationMs: number;
}
interface HttpJob extends Common {
  mode: 'http';
  url: string;
  body: string;
  /** A substring every successful response body contains. */
  expect: string;
  ca: string;
  cert: string;
  key: string;
  expectPeer: string;
}
interface AgentJob extends Common {
  mode: 'agent';
  socket: string;
  policyFile: string;
  target: string;
  targetUrl: string;
  capability: string;
  input: unknown;
  expect: string;
}
type Job = HttpJob | AgentJob;

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

const job = JSON.parse(await readStdin()) as Job;

let call: () => Promise<string>;
let close: () => Promise<void>;
let decisions = 0;

if (job.mode === 'http') {
  const agent = new Agent({
    connections: job.concurrency,
    pipelining: 1,
    connect: {
      ca: job.ca,
      cert: job.cert,
      key: job.key,
      minVersion: 'TLSv1.3',
      checkServerIdentity: (_host: string, cert: PeerCertificate) =>
        cert.subjectaltname === `URI:${job.expectPeer}`
          ? undefined
          : new Error(`unexpected server ${cert.subjectaltname}`),
    },
  });
  const headers = { 'content-type': 'application/json', accept: 'application/json', 'a2a-version': '1.0' };
  call = async () => {
    const res = await request(job.url, { method: 'POST', dispatcher: agent, headers, body: job.body });
    const text = await res.body.text();
    if (res.statusCode !== 200) throw new Error(`HTTP ${res.statusCode} ${text.slice(0, 200)}`);
    return text;
  };
  close = () => agent.close();
} else {
  const logger = pino({ level: 'warn' });
  const enforcer = await LocalPolicyEnforcer.fromFile(job.policyFile, {
    watch: false,
    logger,
    audit: { record: () => void decisions++ },
  });
  const agent = new SecureAgent({
    config: {
      name: 'loadgen',
      identity: { workloadApi: { socket: job.socket } },
      authz: { policyFile: job.policyFile },
      peers: [{ id: job.target, url: job.targetUrl }],
      logging: { level: 'warn' },
    },
    enforcer,
    logger,
  });
  await agent.start();
  call = async () => JSON.stringify(await agent.callAgent(job.target, job.capability, job.input));
  close = async () => {
    await agent.stop({ drainTimeoutMs: 1000 });
    await enforcer.close();
  };
}

let phase: 'warmup' | 'measure' | 'done' = 'warmup';
const latencies: number[] = [];
let errors = 0;
let total = 0;
let firstError: string | undefined;

async function worker(): Promise<void> {
  while (phase !== 'done') {
    const t0 = process.hrtime.bigint();
    try {
      const text = await call();
      // Count only real successes: the expected answer came back.
      if (!text.includes(job.expect)) {
        errors++;
        firstError ??= `unexpected answer ${text.slice(0, 200)}`;
        continue;
      }
    } catch (err) {
      errors++;
      firstError ??= String(err);
      continue;
    }
    total++;
    if (phase === 'measure') latencies.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
}

const workers = Array.from({ length: job.concurrency }, () => worker());
await new Promise((r) => setTimeout(r, job.warmupMs));
phase = 'measure';
errors = 0;
firstError = undefined;
const cpu0 = process.cpuUsage();
const total0 = total;
const start = process.hrtime.bigint();
await new Promise((r) => setTimeout(r, job.durationMs));
phase = 'done';
const elapsedMs = Number(process.hrtime.bigint() - start) / 1e6;
const cpu = process.cpuUsage(cpu0);
const measuredTotal = total - total0;
await Promise.all(workers);
await close();

latencies.sort((a, b) => a - b);
const q = (p: number) => latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))] ?? NaN;
process.stdout.write(
  JSON.stringify({
    requests: latencies.length,
    totalRequests: total,
    errors,
    firstError,
    rps: (latencies.length / elapsedMs) * 1000,
    p50: q(0.5),
    p99: q(0.99),
    max: latencies[latencies.length - 1] ?? NaN,
    decisions,
    // CPU of this (client) process per request during the measured window, in µs.
    clientCpuUs: (cpu.user + cpu.system) / Math.max(1, measuredTotal),
  }) + '\n',
);
