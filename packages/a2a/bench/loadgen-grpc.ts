// gRPC load generator for bindings.bench.ts, its own process like loadgen.ts:
// keeps `concurrency` SendMessage calls in flight on one grpc-js channel over
// mTLS (HTTP/2 multiplexes them, as any gRPC client does) for `durationMs`
// after a warm-up, and prints one JSON line with the results. The same client
// and the same request bytes for every server.
import type { PeerCertificate } from 'node:tls';
import { credentials, makeGenericClientConstructor, Metadata, type ServiceError } from '@grpc/grpc-js';
import { a2aGrpcService, type WireObject } from '../src/grpc/index.js';

interface Job {
  target: string;
  request: WireObject;
  concurrency: number;
  warmupMs: number;
  durationMs: number;
  ca: string;
  cert: string;
  key: string;
  expectPeer: string;
}

const chunks: Buffer[] = [];
for await (const c of process.stdin) chunks.push(c as Buffer);
const job = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Job;

const Ctor = makeGenericClientConstructor(a2aGrpcService(), 'A2AService');
const client = new Ctor(
  job.target,
  credentials.createSsl(Buffer.from(job.ca), Buffer.from(job.key), Buffer.from(job.cert), {
    checkServerIdentity: (_host: string, cert: PeerCertificate) =>
      cert.subjectaltname === `URI:${job.expectPeer}`
        ? undefined
        : new Error(`unexpected server ${cert.subjectaltname}`),
  }),
) as unknown as {
  SendMessage(req: WireObject, md: Metadata, cb: (err: ServiceError | null, res?: WireObject) => void): void;
  close(): void;
};

let phase: 'warmup' | 'measure' | 'done' = 'warmup';
const latencies: number[] = [];
let errors = 0;
let total = 0;
let firstError: string | undefined;

function call(): Promise<WireObject> {
  return new Promise((resolve, reject) => {
    const md = new Metadata();
    md.set('a2a-version', '1.0');
    client.SendMessage(job.request, md, (err, res) => (err ? reject(err) : resolve(res ?? {})));
  });
}

async function worker(): Promise<void> {
  while (phase !== 'done') {
    const t0 = process.hrtime.bigint();
    try {
      const res = await call();
      const state = (res.task as { status?: { state?: string } } | undefined)?.status?.state;
      if (state !== 'TASK_STATE_COMPLETED') {
        errors++;
        firstError ??= JSON.stringify(res).slice(0, 200);
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
client.close();
const cpu = process.cpuUsage(cpuStart);
latencies.sort((a, b) => a - b);
const q = (p: number) => latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))] ?? NaN;
process.stdout.write(
  JSON.stringify({
    requests: latencies.length,
    totalRequests: total,
    clientCpuUs: (cpu.user + cpu.system) / Math.max(1, total),
    errors,
    firstError,
    rps: (latencies.length / elapsedMs) * 1000,
    p50: q(0.5),
    p99: q(0.99),
    max: latencies[latencies.length - 1] ?? NaN,
  }) + '\n',
);
