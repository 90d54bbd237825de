// `weave svid --write DIR`: the default SVID as PEM files, for a peer that
// cannot speak the Workload API (a Python or Go program in development),
// named as spiffe-helper names them. A real dev Workload API server (gRPC
// on a Unix socket); the files are used for a real mTLS handshake.
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { pino } from 'pino';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { DevCertificateAuthority, DevWorkloadApiServer } from '@weave/identity/dev';
import { collectOutput, spawnWeave, stopWeave, weave } from './helpers.js';

const TD = 'write.weave';
const ID = { a: `spiffe://${TD}/agent/a`, b: `spiffe://${TD}/agent/b` };

let dir: string;
let dev: DevWorkloadApiServer;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'weave-svid-write-'));
  dev = await DevWorkloadApiServer.start({
    stateDir: join(dir, 'state'),
    trustDomain: TD,
    workloads: { a: ID.a, b: ID.b },
    logger: pino({ level: 'silent' }),
  });
});

afterAll(async () => {
  await dev?.close();
  await rm(dir, { recursive: true, force: true });
});

interface Written {
  chain: string;
  key: string;
  bundle: string;
}

async function readWritten(out: string): Promise<Written> {
  const [chain, key, bundle] = await Promise.all(
    ['svid.pem', 'svid_key.pem', 'svid_bundle.pem'].map((f) => readFile(join(out, f), 'utf8')),
  );
  return { chain: chain!, key: key!, bundle: bundle! };
}

/** A TLS server with `server`'s files that requires a client certificate, and a client with `client`'s: both verify against their bundle. */
async function handshake(server: Written, client: Written): Promise<string> {
  const srv = tls.createServer({
    cert: server.chain,
    key: server.key,
    ca: server.bundle,
    requestCert: true,
    rejectUnauthorized: true,
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  try {
    const sock = tls.connect({
      port: (srv.address() as AddressInfo).port,
      host: '127.0.0.1',
      cert: client.chain,
      key: client.key,
      ca: client.bundle,
      // SPIFFE names a peer by its URI SAN, not a host name: checked below.
      checkServerIdentity: () => undefined,
    });
    await new Promise<void>((resolve, reject) => sock.once('secureConnect', resolve).once('error', reject));
    const san = sock.getPeerX509Certificate()?.subjectAltName ?? '';
    sock.destroy();
    return san;
  } finally {
    srv.close();
  }
}

it('writes the chain, a 0600 key that matches it and the bundle that verifies it; two written workloads complete an mTLS handshake', async () => {
  const outA = join(dir, 'a');
  const outB = join(dir, 'b');
  const a = await weave(['svid', '--socket', dev.address('a'), '--write', outA]);
  expect(a.code).toBe(0);
  expect(a.stderr).toContain(`for ${ID.a} into ${outA}`);
  // The usual summary is still printed.
  expect(a.stdout).toMatch(new RegExp(`SPIFFE ID\\s+${ID.a}`));
  expect((await weave(['svid', '--socket', dev.address('b'), '--write', outB])).code).toBe(0);

  expect((await stat(join(outA, 'svid_key.pem'))).mode & 0o777).toBe(0o600);
  const wa = await readWritten(outA);
  const leaf = new X509Certificate(wa.chain);
  expect(leaf.subjectAltName).toBe(`URI:${ID.a}`);
  expect(leaf.checkPrivateKey(createPrivateKey(wa.key))).toBe(true);
  expect(leaf.verify(new X509Certificate(wa.bundle).publicKey)).toBe(true);

  expect(await handshake(wa, await readWritten(outB))).toBe(`URI:${ID.a}`);
});

it('--watch writes the files again when the SVID rotates, and stops on SIGTERM', async () => {
  const out = join(dir, 'watched');
  const child = spawnWeave(['svid', '--socket', dev.address('a'), '--write', out, '--watch']);
  const output = collectOutput(child);
  try {
    // Each write is said on stderr.
    for (const until = Date.now() + 10_000; !/wrote svid\.pem/.test(output.output());) {
      if (Date.now() > until) throw new Error(`no write said: ${output.output()}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    const first = new X509Certificate((await readWritten(out)).chain).serialNumber;
    const rotated = await dev.rotateX509Svid('a');
    const want = rotated.certificates[0]!.serialNumber.toUpperCase();
    const until = Date.now() + 5_000;
    let now = first;
    while (now !== want && Date.now() < until) {
      await new Promise((r) => setTimeout(r, 50));
      now = new X509Certificate((await readWritten(out)).chain).serialNumber;
    }
    expect(now).not.toBe(first);
    expect(now).toBe(want);
  } finally {
    await stopWeave(child);
  }
  expect((await output.done).code).toBe(0);
});

it("writes its own trust domain's authorities only, whatever else is federated", async () => {
  // One file of several domains' authorities would let the partner's CA
  // vouch for IDs of this domain, to any TLS stack (or Weave static identity) given it.
  const partner = await DevCertificateAuthority.create({ trustDomain: 'partner.weave' });
  dev.setFederatedBundle('partner.weave', { x509: partner.x509Bundle });
  try {
    const out = join(dir, 'federated');
    const r = await weave(['svid', '--socket', dev.address('a'), '--write', out]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/bundles\s+partner\.weave, write\.weave/);
    const pem = (await readWritten(out)).bundle;
    expect(pem.match(/BEGIN CERTIFICATE/g)).toHaveLength(1);
    expect(new X509Certificate(pem).raw.equals(new X509Certificate(dev.ca.x509Bundle.toPem()).raw)).toBe(
      true,
    );
  } finally {
    dev.removeFederatedBundle('partner.weave');
  }
});

it('refuses --watch without --write (exit 2)', async () => {
  const r = await weave(['svid', '--socket', dev.address('a'), '--watch']);
  expect(r.code).toBe(2);
  expect(r.stderr).toMatch(/--watch goes with --write DIR/);
});
