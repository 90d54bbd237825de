// What never resuming TLS sessions costs: full vs resumed TLS 1.3 handshakes
// against the same server, plus the per-connection SPIFFE verification.
// Usage: node --conditions=weave-source --import tsx bench/handshake.bench.ts [--duration-ms 3000]
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import * as tls from 'node:tls';
import { fileURLToPath } from 'node:url';
import { verifyX509Svid } from '@weave/identity';
import { DevCertificateAuthority } from '@weave/identity/dev';
import { CLIENT_ID, SERVER_ID, TRUST_DOMAIN, args, identity } from './common.js';

const a = args();
const durationMs = Number(a['duration-ms'] ?? 3000);
const here = fileURLToPath(new URL('.', import.meta.url));
const caDir = mkdtempSync(join(tmpdir(), 'weave-hs-'));
await DevCertificateAuthority.create({ trustDomain: TRUST_DOMAIN, dir: caDir });
const server = spawn(
  process.execPath,
  [
    '--conditions=weave-source',
    '--import',
    'tsx',
    join(here, 'server.ts'),
    '--mode',
    'bare',
    '--ca-dir',
    caDir,
  ],
  { stdio: ['pipe', 'pipe', 'inherit'] },
);
const port = await new Promise<number>((resolve) =>
  server.stdout!.on('data', (d: Buffer) => {
    const m = /port (\d+)/.exec(d.toString());
    if (m) resolve(Number(m[1]));
  }),
);
const id = await identity(caDir, CLIENT_ID);
const { certChain, privateKey } = id.getX509Svid().toPem();
const ca = id.getX509Bundle(id.id.trustDomain)!.toPem();

function handshake(
  session: Buffer | undefined,
  wantTicket: boolean,
): Promise<{ session?: Buffer; reused: boolean; socket: tls.TLSSocket }> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({
      host: '127.0.0.1',
      port,
      cert: certChain,
      key: privateKey,
      ca,
      checkServerIdentity: () => undefined,
      ...(session ? { session } : {}),
    });
    s.once('secureConnect', () => {
      const done = (got?: Buffer) => {
        resolve({ ...(got ? { session: got } : {}), reused: s.isSessionReused(), socket: s });
        s.end();
      };
      // A resumed connection needs no new ticket; a full one waits for its TLS 1.3 ticket
      // (sent just after the handshake) so the next connection can resume.
      if (s.isSessionReused() || !wantTicket) done();
      else s.once('session', (x: Buffer) => done(x));
    });
    s.on('error', reject);
  });
}

async function rate(label: string, resume: boolean, verify: boolean): Promise<number> {
  let session: Buffer | undefined;
  let n = 0;
  let reused = 0;
  const t0 = performance.now();
  while (performance.now() - t0 < durationMs) {
    const r = await handshake(resume ? session : undefined, resume);
    if (verify) {
      const chain: Uint8Array[] = [];
      let c = r.socket.getPeerCertificate(true) as tls.DetailedPeerCertificate | undefined;
      const seen = new Set<unknown>();
      while (c?.raw && !seen.has(c)) {
        seen.add(c);
        chain.push(new Uint8Array(c.raw));
        c = c.issuerCertificate;
      }
      if (!verifyX509Svid(chain, id).equals(SERVER_ID)) throw new Error('wrong peer');
    }
    if (r.session) session = r.session;
    if (r.reused) reused++;
    n++;
  }
  const ms = (performance.now() - t0) / n;
  console.log(`${label.padEnd(58)} ${ms.toFixed(3)} ms/connection  (${n} connections, ${reused} resumed)`);
  return ms;
}

console.log(
  `TLS 1.3 mTLS handshakes, sequential, ${durationMs} ms each, ECDSA P-256, node ${process.version}`,
);
const resumed = await rate('resumed session, no SPIFFE check (what resumption would give)', true, false);
const full = await rate('full handshake, no SPIFFE check', false, false);
const weave = await rate('full handshake + verifyX509Svid (SecureChannel per connection)', false, true);
console.log('');
console.log(
  `never resuming costs ${(full - resumed).toFixed(3)} ms per new connection (${(full / resumed).toFixed(2)}x a resumed one)`,
);
console.log(
  `the SPIFFE check adds ${(weave - full).toFixed(3)} ms per new connection; keep-alive amortizes both over every request on it`,
);
server.kill('SIGTERM');
await id.close();
rmSync(caDir, { recursive: true, force: true });
