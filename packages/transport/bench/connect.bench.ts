// New SPIFFE-verified connections per second: SecureChannel → createMtlsServer
// vs bare node (undici Agent with PEM cert/key/ca → node https with client
// certificates required), same dev-CA certificates, TLS 1.3, in one process.
// Every answer carries `connection: close`, so every request is a new full
// handshake (neither side resumes sessions). Rounds alternate the two paths;
// CPU is the process's (both ends of every connection) per connection.
// Usage: node --conditions=weave-source --import tsx bench/connect.bench.ts [--conns 400 --rounds 5 --inflight 8 --paths weave,bare]
import https from 'node:https';
import { mkdtempSync, rmSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { Agent, request } from 'undici';
import { authorizeId } from '@weave/identity';
import { DevCertificateAuthority } from '@weave/identity/dev';
import { SecureChannel, createMtlsServerOptions } from '../src/index.js';
import { createMtlsServer } from '../src/server.js';
import { CLIENT_ID, SERVER_ID, TRUST_DOMAIN, args, identity } from './common.js';

const a = args();
const CONNS = Number(a.conns ?? 400);
const ROUNDS = Number(a.rounds ?? 5);
const INFLIGHT = Number(a.inflight ?? 8);
// `--paths weave` measures one path only (e.g. under --cpu-prof).
const PATHS = (a.paths ?? 'weave,bare').split(',') as Path[];

const caDir = mkdtempSync(join(tmpdir(), 'weave-connect-'));
await DevCertificateAuthority.create({ trustDomain: TRUST_DOMAIN, dir: caDir });
const serverId = await identity(caDir, SERVER_ID);
const clientId = await identity(caDir, CLIENT_ID);

// bare: node https, client certificate required and chain-verified by OpenSSL.
const bareServer = https.createServer(createMtlsServerOptions(serverId), (_req, res) => {
  res.writeHead(200, { 'content-type': 'text/plain', connection: 'close' });
  res.end('ok');
});
await new Promise<void>((r) => bareServer.listen(0, '127.0.0.1', r));
const barePort = (bareServer.address() as AddressInfo).port;
const { certChain, privateKey } = clientId.getX509Svid().toPem();
const bareAgent = new Agent({
  connect: {
    cert: certChain,
    key: privateKey,
    ca: clientId.getX509Bundle(clientId.id.trustDomain)!.toPem(),
    // The same certificates carry no DNS/IP SAN: hostname checks would refuse them.
    checkServerIdentity: () => undefined,
    rejectUnauthorized: true,
  },
});

// weave: SecureChannel (SPIFFE check of the server) → createMtlsServer (SPIFFE check of the caller).
const app = createMtlsServer({ identity: serverId, authorize: authorizeId(clientId.id) });
app.get('/', (_req, reply) => {
  void reply.header('connection', 'close').send('ok');
});
await app.listen({ port: 0, host: '127.0.0.1' });
const weavePort = (app.server.address() as AddressInfo).port;
const channel = new SecureChannel(clientId, serverId.id, { retry: { retries: 0 } });
let verifiedByClient = 0;
channel.onPeerVerified(() => verifiedByClient++);

type Path = 'weave' | 'bare';
const send: Record<Path, () => Promise<number>> = {
  bare: async () => {
    const res = await request(`https://127.0.0.1:${barePort}/`, { dispatcher: bareAgent });
    const text = await res.body.text();
    return res.statusCode === 200 && text === 'ok' ? 1 : 0;
  },
  weave: async () => {
    const res = await channel.request({ origin: `https://127.0.0.1:${weavePort}`, path: '/', method: 'GET' });
    const text = await res.body.text();
    return res.statusCode === 200 && text === 'ok' ? 1 : 0;
  },
};

interface Round {
  connsPerSec: number;
  cpuUsPerConn: number;
  ok: number;
}

async function round(path: Path, conns: number): Promise<Round> {
  let next = 0;
  let ok = 0;
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: INFLIGHT }, async () => {
      while (next < conns) {
        next++;
        const got = await send[path]();
        ok += got;
      }
    }),
  );
  const ms = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  return { connsPerSec: (ok / ms) * 1000, cpuUsPerConn: (cpu.user + cpu.system) / conns, ok };
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((x, y) => x - y);
  return s[Math.floor(s.length / 2)]!;
};
const load = (): string => {
  const [l1, l5] = loadavg();
  return `load ${l1!.toFixed(2)} / ${l5!.toFixed(2)} (1/5 min) on ${cpus().length} CPUs`;
};

console.log(
  `new mTLS connections: SecureChannel → createMtlsServer (SPIFFE check both sides) vs undici PEM options → node https; ` +
    `TLS 1.3, ECDSA P-256, ${CONNS} connections per round, ${INFLIGHT} in flight, ${ROUNDS} rounds, node ${process.version}`,
);
for (const path of PATHS) await round(path, 50);
const results: Record<Path, Round[]> = { weave: [], bare: [] };
for (let r = 1; r <= ROUNDS; r++) {
  for (const path of PATHS) {
    const res = await round(path, CONNS);
    results[path].push(res);
    console.log(
      `round ${r}  ${path.padEnd(5)}  ${res.connsPerSec.toFixed(0).padStart(6)} conns/s  ` +
        `CPU/conn (both ends) ${res.cpuUsPerConn.toFixed(0).padStart(5)} µs  ok ${res.ok}/${CONNS}  ${load()}`,
    );
  }
}
const m = (path: Path, k: keyof Round): number => median(results[path].map((x) => x[k]));
if (PATHS.length < 2) process.exit(0);
console.log(
  `median: weave ${m('weave', 'connsPerSec').toFixed(0)} conns/s, ${m('weave', 'cpuUsPerConn').toFixed(0)} µs/conn; ` +
    `bare ${m('bare', 'connsPerSec').toFixed(0)} conns/s, ${m('bare', 'cpuUsPerConn').toFixed(0)} µs/conn`,
);
console.log(
  `ratios weave/bare: conns/s ${(m('weave', 'connsPerSec') / m('bare', 'connsPerSec')).toFixed(2)}x (target >= 1.2)  ` +
    `CPU/conn ${(m('weave', 'cpuUsPerConn') / m('bare', 'cpuUsPerConn')).toFixed(2)}x  ` +
    `peers verified by the channel ${verifiedByClient}  ${load()}`,
);

await channel.close();
await bareAgent.close();
await app.close();
bareServer.close();
await serverId.close();
await clientId.close();
rmSync(caDir, { recursive: true, force: true });
