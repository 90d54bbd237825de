// Benchmark load generator. `--mode bare|weave --http http1.1|http2 --port N --ca-dir DIR
// --inflight 32 --warmup-ms 2000 --duration-ms 10000`; prints one JSON line of results.
import { performance } from 'node:perf_hooks';
import { Agent, type Dispatcher } from 'undici';
import { SecureChannel } from '../src/index.js';
import { BODY, CLIENT_ID, SERVER_ID, args, identity } from './common.js';

const a = args();
const mode = a.mode ?? 'bare';
const httpVersion = (a.http ?? 'http1.1') as 'http1.1' | 'http2';
const inflight = Number(a.inflight ?? 32);
const warmupMs = Number(a['warmup-ms'] ?? 2000);
const durationMs = Number(a['duration-ms'] ?? 10000);
const origin = `https://127.0.0.1:${a.port}`;
const id = await identity(a['ca-dir']!, CLIENT_ID);

let send: () => Promise<Dispatcher.ResponseData>;
let close: () => Promise<void>;
const headers = { 'content-type': 'application/json' };
if (mode === 'bare') {
  // The baseline client: a plain undici Agent with the same certificates, no SPIFFE check.
  const { certChain, privateKey } = id.getX509Svid().toPem();
  const agent = new Agent({
    connect: {
      cert: certChain,
      key: privateKey,
      ca: id.getX509Bundle(id.id.trustDomain)!.toPem(),
      checkServerIdentity: () => undefined,
      minVersion: 'TLSv1.3',
    },
    allowH2: httpVersion === 'http2',
    pipelining: httpVersion === 'http2' ? 100 : 1,
    connections: 64,
  });
  send = () => agent.request({ origin, path: '/rpc', method: 'POST', body: BODY, headers });
  close = () => agent.close();
} else {
  const ch = new SecureChannel(id, SERVER_ID, { httpVersion });
  send = () => ch.post(`${origin}/rpc`, { body: BODY, headers });
  close = () => ch.close();
}

const latencies: number[] = [];
let errors = 0;
let measuring = false;
let stop = false;
async function worker(): Promise<void> {
  while (!stop) {
    const t0 = performance.now();
    try {
      const res = await send();
      await res.body.text();
      if (res.statusCode !== 200) errors++;
      else if (measuring) latencies.push(performance.now() - t0);
    } catch {
      errors++;
    }
  }
}
const workers = Array.from({ length: inflight }, worker);
await new Promise((r) => setTimeout(r, warmupMs));
measuring = true;
process.stdout.write('measuring\n');
const cpu0 = process.cpuUsage();
const t0 = performance.now();
await new Promise((r) => setTimeout(r, durationMs));
measuring = false;
const cpu = process.cpuUsage(cpu0);
process.stdout.write('stopped\n');
const elapsed = (performance.now() - t0) / 1000;
stop = true;
await Promise.all(workers);
await close();
await id.close();

latencies.sort((x, y) => x - y);
const pct = (p: number) =>
  latencies[Math.min(latencies.length - 1, Math.floor((p / 100) * latencies.length))] ?? NaN;
process.stdout.write(
  `${JSON.stringify({
    requests: latencies.length,
    rps: latencies.length / elapsed,
    p50: pct(50),
    p99: pct(99),
    errors,
    clientUsPerRequest: (cpu.user + cpu.system) / Math.max(1, latencies.length),
  })}\n`,
);
