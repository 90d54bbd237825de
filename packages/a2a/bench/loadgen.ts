// Load generator for sendmessage.bench.ts, run as its own process so it does
// not share an event loop with the server under test. Reads its job as JSON on
// stdin, keeps `concurrency` JSON-RPC SendMessage calls in flight over mTLS
// (an undici Pool, one keep-alive connection per in-flight request) for
// `durationMs` after a warm-up, and prints one JSON line with the results.
import type { PeerCertificate } from 'node:tls';
import { Pool } from 'undici';

interface Job {
  url: string;
  body: string;
  concurrency: number;
  warmupMs: number;
  durationMs: number;
  ca: string;
  cert: string;
  key: string;
  expectPeer: string;
  /** Content type of the body (default application/json). */
  contentType?: string;
  /** JSON-RPC answers carry `"result"`; HTTP+JSON answers do not (default true). */
  jsonRpc?: boolean;
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

const job = JSON.parse(await readStdin()) as Job;
// A Pool for the one origin: the same client for both servers, as lean as undici gets.
const target = new URL(job.url);
const agent = new Pool(target.origin, {
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

const headers = {
  'content-type': job.contentType ?? 'application/json',
  accept: 'application/json',
  'a2a-version': '1.0',
};
const needsResult = job.jsonRpc !== false;
let phase: 'warmup' | 'measure' | 'done' = 'warmup';
const latencies: number[] = [];
let errors = 0;
let total = 0;
let firstError: string | undefined;

async function worker(): Promise<void> {
  while (phase !== 'done') {
    const t0 = process.hrtime.bigint();
    try {
      const res = await agent.request({ path: target.pathname, method: 'POST', headers, body: job.body });
      const text = await res.body.text();
      // Count only real successes: HTTP 200 with (a JSON-RPC result holding) a completed task.
      if (
        res.statusCode !== 200 ||
        (needsResult && !text.includes('"result"')) ||
        !text.includes('TASK_STATE_COMPLETED')
      ) {
        errors++;
        firstError ??= `${res.statusCode} ${text.slice(0, 200)}`;
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

const cpuStart = process.cpuUsage();
const workers = Array.from({ length: job.concurrency }, () => worker());
await new Promise((r) => setTimeout(r, job.warmupMs));
phase = 'measure';
errors = 0;
const start = process.hrtime.bigint();
await new Promise((r) => setTimeout(r, job.durationMs));
phase = 'done';
const elapsedMs = Number(process.hrtime.bigint() - start) / 1e6;
await Promise.all(workers);
await agent.close();
const cpu = process.cpuUsage(cpuStart);

latencies.sort((a, b) => a - b);
const q = (p: number) => latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))] ?? NaN;
process.stdout.write(
  JSON.stringify({
    requests: latencies.length,
    totalRequests: total,
    /** The load generator's own CPU per request, in µs. */
    clientCpuUs: (cpu.user + cpu.system) / Math.max(1, total),
    errors,
    firstError,
    rps: (latencies.length / elapsedMs) * 1000,
    p50: q(0.5),
    p99: q(0.99),
    max: latencies[latencies.length - 1] ?? NaN,
  }) + '\n',
);
