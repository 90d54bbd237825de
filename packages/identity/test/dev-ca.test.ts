import { execFile, execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { BundleSet, X509SvidError, verifyX509Svid, validateJwtSvid, type X509Svid } from '@weave/identity';
import { DevCaError, DevCertificateAuthority } from '@weave/identity/dev';
import { KU, x509 } from './helpers/forge.js';
import {
  callSpiffeTls,
  startSpiffeTlsServer,
  type SpiffeTlsServer,
  type TlsMaterial,
  type TlsTrust,
} from '@weave/test-support/spiffe-tls';

const dirs: string[] = [];
const tmp = (): string => {
  const d = mkdtempSync(join(tmpdir(), 'weave-devca-'));
  dirs.push(d);
  return d;
};
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

const material = (svid: X509Svid): TlsMaterial => {
  const pem = svid.toPem();
  return { key: pem.privateKey, cert: pem.certChain };
};

describe('DevCertificateAuthority', () => {
  let ca: DevCertificateAuthority;
  beforeAll(async () => {
    ca = await DevCertificateAuthority.create({ trustDomain: 'demo.test' });
  });

  it('issues SVIDs shaped like SPIRE’s', async () => {
    const before = Date.now();
    const svid = await ca.issueX509Svid('spiffe://demo.test/agent/a', { ttlSeconds: 600 });
    const leaf = svid.certificates[0]!;
    expect(svid.certificates).toHaveLength(1);
    expect(svid.privateKey.asymmetricKeyType).toBe('ec');
    expect(svid.privateKey.asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
    expect(leaf.getExtension(x509.BasicConstraintsExtension)?.ca).toBe(false);
    const ku = leaf.getExtension(x509.KeyUsagesExtension)!;
    expect(ku.critical).toBe(true);
    expect(ku.usages).toBe(KU.digitalSignature | KU.keyEncipherment | KU.keyAgreement);
    expect(leaf.getExtension(x509.ExtendedKeyUsageExtension)?.usages).toEqual([
      x509.ExtendedKeyUsage.serverAuth,
      x509.ExtendedKeyUsage.clientAuth,
    ]);
    const sans = leaf.getExtension(x509.SubjectAlternativeNameExtension)!.names.items;
    expect(sans.map((n) => [n.type, n.value])).toEqual([['url', 'spiffe://demo.test/agent/a']]);
    // notBefore backdated 10 s (second precision), notAfter = TTL.
    expect(before - leaf.notBefore.getTime()).toBeGreaterThanOrEqual(9_000);
    expect(before - leaf.notBefore.getTime()).toBeLessThanOrEqual(12_000);
    expect(Math.round((leaf.notAfter.getTime() - leaf.notBefore.getTime()) / 1000)).toBeGreaterThanOrEqual(
      609,
    );
    const other = await ca.issueX509Svid('spiffe://demo.test/agent/a');
    expect(other.certificates[0]!.serialNumber).not.toBe(leaf.serialNumber);
  });

  it('has a CA certificate with the trust domain SAN, cA=true, keyCertSign+cRLSign', () => {
    const c = ca.certificate;
    expect(c.getExtension(x509.BasicConstraintsExtension)?.ca).toBe(true);
    expect(c.getExtension(x509.KeyUsagesExtension)?.usages).toBe(KU.keyCertSign | KU.cRLSign);
    expect(c.getExtension(x509.SubjectAlternativeNameExtension)!.names.items[0]?.value).toBe(
      'spiffe://demo.test',
    );
  });

  it('caps the SVID lifetime at the CA’s', async () => {
    const short = await DevCertificateAuthority.create({ trustDomain: 'short.test', ttlSeconds: 120 });
    const svid = await short.issueX509Svid('spiffe://short.test/x', { ttlSeconds: 3600 });
    expect(svid.expiresAt.getTime()).toBe(short.certificate.notAfter.getTime());
  });

  it('refuses IDs of another trust domain, root IDs and bad TTLs', async () => {
    await expect(ca.issueX509Svid('spiffe://other.test/x')).rejects.toMatchObject({
      code: 'DEV_CA_WRONG_TRUST_DOMAIN',
    });
    await expect(ca.issueJwtSvid('spiffe://other.test/x', 'aud')).rejects.toBeInstanceOf(DevCaError);
    await expect(ca.issueX509Svid('spiffe://demo.test')).rejects.toMatchObject({
      code: 'DEV_CA_INVALID_OPTIONS',
    });
    await expect(ca.issueX509Svid('spiffe://demo.test/x', { ttlSeconds: -1 })).rejects.toMatchObject({
      code: 'DEV_CA_INVALID_OPTIONS',
    });
    await expect(ca.issueJwtSvid('spiffe://demo.test/x', [])).rejects.toMatchObject({
      code: 'DEV_CA_INVALID_OPTIONS',
    });
  });

  it('issues expired and not-yet-valid SVIDs on request, which verification refuses', async () => {
    const now = Date.now();
    const expired = await ca.issueX509Svid('spiffe://demo.test/old', {
      notBefore: new Date(now - 7200_000),
      notAfter: new Date(now - 3600_000),
    });
    expect(() => verifyX509Svid(expired.certificates, ca.x509Bundle)).toThrow(X509SvidError);
    expect(() => verifyX509Svid(expired.certificates, ca.x509Bundle)).toThrow(/expired/);
    const future = await ca.issueX509Svid('spiffe://demo.test/new', {
      notBefore: new Date(now + 3600_000),
      notAfter: new Date(now + 7200_000),
    });
    expect(() => verifyX509Svid(future.certificates, ca.x509Bundle)).toThrow(/not valid before/);
  });

  it('issues ES256 JWT-SVIDs with kid, verifiable against its JWT bundle', async () => {
    const jwt = await ca.issueJwtSvid('spiffe://demo.test/a', 'spiffe://demo.test/b', { ttlSeconds: 60 });
    const [h] = jwt.token.split('.');
    const header = JSON.parse(Buffer.from(h!, 'base64url').toString()) as Record<string, string>;
    expect(header.alg).toBe('ES256');
    expect(ca.jwtBundle.keys.has(header.kid!)).toBe(true);
    const v = await validateJwtSvid(jwt.token, ca.jwtBundle, 'spiffe://demo.test/b');
    expect(v.id.toString()).toBe('spiffe://demo.test/a');
    // exp is the next whole second plus the TTL: never less than asked, at most 1 s more.
    expect(v.expiresAt.getTime() - Date.now()).toBeLessThanOrEqual(61_000);
  });

  it('its SVIDs pass `openssl verify` for server and client purposes', async () => {
    const d = tmp();
    const svid = await ca.issueX509Svid('spiffe://demo.test/agent/openssl');
    writeFileSync(join(d, 'ca.pem'), ca.x509Bundle.toPem());
    writeFileSync(join(d, 'leaf.pem'), svid.toPem().certChain);
    for (const purpose of ['sslserver', 'sslclient']) {
      const out = execFileSync(
        'openssl',
        ['verify', '-purpose', purpose, '-CAfile', join(d, 'ca.pem'), join(d, 'leaf.pem')],
        {
          encoding: 'utf8',
        },
      );
      expect(out.trim()).toBe(`${join(d, 'leaf.pem')}: OK`);
    }
    const text = execFileSync('openssl', ['x509', '-noout', '-text', '-in', join(d, 'leaf.pem')], {
      encoding: 'utf8',
    });
    expect(text).toMatch(/X509v3 Key Usage: critical\s+Digital Signature, Key Encipherment, Key Agreement/);
    expect(text).toMatch(/CA:FALSE/);
    expect(text).toMatch(/URI:spiffe:\/\/demo\.test\/agent\/openssl/);
    expect(text).toMatch(/ASN1 OID: prime256v1/);
    // And a leaf from a different CA does not verify against this one.
    const stranger = await DevCertificateAuthority.create({ trustDomain: 'demo.test' });
    writeFileSync(
      join(d, 'stranger.pem'),
      (await stranger.issueX509Svid('spiffe://demo.test/x')).toPem().certChain,
    );
    expect(() =>
      execFileSync('openssl', ['verify', '-CAfile', join(d, 'ca.pem'), join(d, 'stranger.pem')], {
        stdio: 'pipe',
      }),
    ).toThrow();
  });

  it('persists to dir: created twice, it is the same CA', async () => {
    const d = tmp();
    const a = await DevCertificateAuthority.create({ trustDomain: 'persist.test', dir: join(d, 'ca') });
    const b = await DevCertificateAuthority.create({ trustDomain: 'persist.test', dir: join(d, 'ca') });
    expect(Buffer.from(b.certificate.rawData).equals(Buffer.from(a.certificate.rawData))).toBe(true);
    expect([...b.jwtBundle.keys.keys()]).toEqual([...a.jwtBundle.keys.keys()]);
    // What one issues, the other's bundles accept.
    const svid = await a.issueX509Svid('spiffe://persist.test/w');
    expect(verifyX509Svid(svid.certificates, b.x509Bundle).toString()).toBe('spiffe://persist.test/w');
    const jwt = await b.issueJwtSvid('spiffe://persist.test/w', 'x');
    await expect(validateJwtSvid(jwt.token, a.jwtBundle, 'x')).resolves.toBeTruthy();
    // The key is not world-readable.
    const mode = execFileSync('stat', ['-c', '%a', join(d, 'ca', 'ca-key.pem')], { encoding: 'utf8' }).trim();
    expect(mode).toBe('600');
    await expect(
      DevCertificateAuthority.create({ trustDomain: 'other.test', dir: join(d, 'ca') }),
    ).rejects.toMatchObject({ code: 'DEV_CA_WRONG_TRUST_DOMAIN' });
  });

  it('several creators racing on one dir end up with one CA', async () => {
    const d = join(tmp(), 'shared');
    const cas = await Promise.all(
      [1, 2, 3, 4].map(() => DevCertificateAuthority.create({ trustDomain: 'race.test', dir: d })),
    );
    const ders = new Set(cas.map((c) => Buffer.from(c.certificate.rawData).toString('base64')));
    expect(ders.size).toBe(1);
    const later = await DevCertificateAuthority.create({ trustDomain: 'race.test', dir: d });
    expect(ders.has(Buffer.from(later.certificate.rawData).toString('base64'))).toBe(true);
  });

  it('separate processes starting at once on one dir share one CA', async () => {
    const d = join(tmp(), 'procs');
    const script = fileURLToPath(new URL('./fixtures/create-dev-ca.ts', import.meta.url));
    const tsx = createRequire(import.meta.url).resolve('tsx');
    const run = (): Promise<string> =>
      new Promise((resolve, reject) => {
        execFile(process.execPath, ['--import', pathToFileURL(tsx).href, script, d], (err, stdout, stderr) =>
          err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout),
        );
      });
    const prints = await Promise.all([run(), run(), run()]);
    expect(prints[0]).toMatch(/^[0-9a-f]{64}$/);
    expect(new Set(prints).size).toBe(1);
  });

  it('refuses a persisted CA whose key does not match', async () => {
    const d = tmp();
    await DevCertificateAuthority.create({ trustDomain: 'p.test', dir: d });
    const other = tmp();
    await DevCertificateAuthority.create({ trustDomain: 'p.test', dir: other });
    execFileSync('cp', [join(other, 'ca-key.pem'), join(d, 'ca-key.pem')]);
    await expect(DevCertificateAuthority.create({ trustDomain: 'p.test', dir: d })).rejects.toMatchObject({
      code: 'DEV_CA_STATE_INVALID',
    });
  });
});

describe('mTLS handshake with dev CA SVIDs (node:tls)', () => {
  let ca: DevCertificateAuthority;
  let trust: TlsTrust;
  let serverSvid: X509Svid;
  let server: SpiffeTlsServer | undefined;
  const SERVER_ID = 'spiffe://demo.test/server';
  const CLIENT_ID = 'spiffe://demo.test/client';

  beforeAll(async () => {
    ca = await DevCertificateAuthority.create({ trustDomain: 'demo.test' });
    trust = { ca: ca.x509Bundle.toPem(), bundles: BundleSet.of(ca.x509Bundle) };
    serverSvid = await ca.issueX509Svid(SERVER_ID);
  });
  afterEach(async () => {
    await server?.close();
    server = undefined;
  });

  async function startServer(): Promise<SpiffeTlsServer> {
    server = await startSpiffeTlsServer(material(serverSvid), trust);
    return server;
  }

  const call = (port: number, client: X509Svid, expectServer: string): Promise<string> =>
    callSpiffeTls(port, material(client), trust, expectServer);

  it('both sides verify each other’s SPIFFE ID', async () => {
    const { port, handled } = await startServer();
    const client = await ca.issueX509Svid(CLIENT_ID);
    await expect(call(port, client, SERVER_ID)).resolves.toBe(`hello ${CLIENT_ID}`);
    expect(handled).toEqual([CLIENT_ID]);
  });

  it('the client refuses a server with an unexpected ID, and sends nothing', async () => {
    const { port, handled } = await startServer();
    const client = await ca.issueX509Svid(CLIENT_ID);
    await expect(call(port, client, 'spiffe://demo.test/someone-else')).rejects.toThrow(
      /expected spiffe:\/\/demo.test\/someone-else/,
    );
    expect(handled).toEqual([]);
  });

  it('the server refuses a client certificate from another CA; the handler does not run', async () => {
    const { port, handled } = await startServer();
    const rogue = await DevCertificateAuthority.create({ trustDomain: 'demo.test' });
    const client = await rogue.issueX509Svid(CLIENT_ID);
    // In TLS 1.3 the client may finish its side before the server's alert
    // arrives, so the refusal shows as an error or as a closed, silent stream.
    const out = await call(port, client, SERVER_ID).catch((err: Error) => `refused: ${err.message}`);
    expect(out === '' || out.startsWith('refused')).toBe(true);
    expect(handled).toEqual([]);
  });
});
