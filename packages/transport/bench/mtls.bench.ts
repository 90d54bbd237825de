// SecureChannel → Weave mTLS fastify server vs bare node https mTLS + plain undici,
// in one run, as separate server and load-generator processes (2 cores: one each).
// Usage: pnpm --filter @weave/transport bench [-- --duration-ms 10000 --inflight 32]
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DevCertificateAuthority } from '@weave/identity/dev';
import { TRUST_DOMAIN, args } from './common.js';

const a = args();
const duration = a['duration-ms'] ?? '10000';
const warmup = a['warmup-ms'] ?? '2000';
const inflight = a.inflight ?? '32';
const here = fileURLToPath(new URL('.', import.meta.url));
const caDir = mkdtempSync(join(tmpdir(), 'weave-bench-'));
await DevCertificateAuthority.create({ trustDomain: TRUST_DOMAIN, dir: caDir });

const nodeArgs = ['--conditions=weave-source', '--import', 'tsx'];

function run(
  script: string,
  extra: string[],
  onLine?: (line: string) => void,
): { proc: ChildProcess; done: Promise<string[]> } {
  const proc = spawn(process.execPath, [...nodeArgs, join(here, script), '--ca-dir', caDir, ...extra], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  const lines: string[] = [];
  let buf = '';
  proc.stdout!.on('data', (d: Buffer) => {
    buf += d.toString();
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      lines.push(line);
      onLine?.(line);
    }
  });
  const done = new Promise<string[]>((resolve, reject) =>
    proc.on('exit', (code, sig) =>
      code === 0 || sig === 'SIGTERM' ? resolve(lines) : reject(new Error(`${script} exited ${code ?? sig}`)),
    ),
  );
  return { proc, done };
}

interface Result {
  requests: number;
  rps: number;
  p50: number;
  p99: number;
  errors: number;
  clientUsPerRequest: number;
  serverUsPerRequest: number;
}

async function scenario(
  serverMode: 'bare' | 'weave',
  clientMode: 'bare' | 'weave',
  http: 'http1.1' | 'http2',
): Promise<Result> {
  let resolvePort!: (p: string) => void;
  const port = new Promise<string>((r) => (resolvePort = r));
  let resolveCpu!: (us: number) => void;
  const serverCpu = new Promise<number>((r) => (resolveCpu = r));
  const server = run('server.ts', ['--mode', serverMode, '--http', http], (line) => {
    const m = /^port (\d+)$/.exec(line);
    if (m) resolvePort(m[1]!);
    if (line.startsWith('cpu '))
      resolveCpu((JSON.parse(line.slice(4)) as { usPerRequest: number }).usPerRequest);
  });
  const p = await Promise.race([
    port,
    server.done.then(() => Promise.reject(new Error('server exited early'))),
  ]);
  try {
    const load = run(
      'load.ts',
      [
        '--mode',
        clientMode,
        '--http',
        http,
        '--port',
        p,
        '--inflight',
        inflight,
        '--warmup-ms',
        warmup,
        '--duration-ms',
        duration,
      ],
      (line) => {
        if (line === 'measuring') server.proc.stdin!.write('mark\n');
        if (line === 'stopped') server.proc.stdin!.write('report\n');
      },
    );
    const lines = await load.done;
    const r = JSON.parse(lines.at(-1)!) as Omit<Result, 'serverUsPerRequest'>;
    return { ...r, serverUsPerRequest: await serverCpu };
  } finally {
    server.proc.kill('SIGTERM');
    await server.done.catch(() => undefined);
  }
}

const rounds = Number(a.rounds ?? '3');
type Mode = 'bare' | 'weave';
const scenarios: [string, Mode, Mode, 'http1.1' | 'http2'][] = [
  ['bare node https mTLS + undici Agent (HTTP/1.1) [baseline]', 'bare', 'bare', 'http1.1'],
  ['Weave createMtlsServer + SecureChannel (HTTP/1.1)', 'weave', 'weave', 'http1.1'],
  ['  attribution: bare node https server + SecureChannel', 'bare', 'weave', 'http1.1'],
  ['  attribution: Weave createMtlsServer + undici Agent', 'weave', 'bare', 'http1.1'],
  ['bare node http2 mTLS + undici Agent allowH2 (HTTP/2)', 'bare', 'bare', 'http2'],
  ['Weave createMtlsServer + SecureChannel (HTTP/2)', 'weave', 'weave', 'http2'],
];
console.log(
  `mTLS benchmark: ${inflight} requests in flight, ${duration} ms per run after ${warmup} ms warm-up, ${rounds} interleaved rounds (median shown), JSON-RPC-sized POST, ECDSA P-256, TLS 1.3, node ${process.version}`,
);
const results: Result[][] = scenarios.map(() => []);
for (let round = 1; round <= rounds; round++) {
  for (const [i, [, server, client, http]] of scenarios.entries()) {
    results[i]!.push(await scenario(server, client, http));
  }
  console.log(`  round ${round}/${rounds} done`);
}
rmSync(caDir, { recursive: true, force: true });

const median = (rs: Result[]): Result => {
  const sorted = [...rs].sort((x, y) => x.rps - y.rps);
  return sorted[Math.floor(sorted.length / 2)]!;
};
const rows = scenarios.map(([name], i) => [name, median(results[i]!), results[i]!] as const);
const base = rows[0]![1];
const med = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)]!;
const pad = (s: string, n: number) => s.padEnd(n);
console.log('');
console.log(
  `${pad('scenario', 60)} ${pad('req/s', 7)} ${pad('p50 ms', 7)} ${pad('p99 ms', 7)} ${pad('errors', 6)} ${pad('ratio', 6)} ${pad('client µs/req', 13)} ${pad('server µs/req', 13)} all rounds req/s`,
);
for (const [name, r, all] of rows) {
  console.log(
    [
      pad(name, 60),
      pad(r.rps.toFixed(0), 7),
      pad(r.p50.toFixed(2), 7),
      pad(r.p99.toFixed(2), 7),
      pad(String(all.reduce((n, x) => n + x.errors, 0)), 6),
      pad(`${(r.rps / base.rps).toFixed(2)}x`, 6),
      pad(med(all.map((x) => x.clientUsPerRequest)).toFixed(1), 13),
      pad(med(all.map((x) => x.serverUsPerRequest)).toFixed(1), 13),
      all.map((x) => x.rps.toFixed(0)).join(' / '),
    ].join(' '),
  );
}
// Per-round ratios (each Weave run against the baseline run of the same round) are less noisy than medians.
const perRound = results[1]!.map((w, i) => w.rps / results[0]![i]!.rps);
const cpuOf = (i: number) =>
  med(results[i]!.map((x) => x.clientUsPerRequest)) + med(results[i]!.map((x) => x.serverUsPerRequest));
console.log('');
console.log(
  `Weave HTTP/1.1 vs bare baseline: ${(rows[1]![1].rps / base.rps).toFixed(2)}x req/s (median), per round ${perRound.map((x) => x.toFixed(2)).join(' / ')}, median of per-round ratios ${med(perRound).toFixed(2)}x (target >= 0.85x)`,
);
console.log(
  `CPU per request, client + server: bare ${cpuOf(0).toFixed(1)} µs, Weave ${cpuOf(1).toFixed(1)} µs -> CPU-bound throughput ratio ${(cpuOf(0) / cpuOf(1)).toFixed(2)}x`,
);
console.log(
  `Weave HTTP/2 vs Weave HTTP/1.1: ${(rows[5]![1].rps / rows[1]![1].rps).toFixed(2)}x req/s (median)`,
);
