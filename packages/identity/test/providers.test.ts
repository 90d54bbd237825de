import { mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  IdentityConfigError,
  IdentityNotReadyError,
  StaticMtlsProvider,
  TrustDomain,
  verifyX509Svid,
  type IdentityProvider,
  type IdentityUpdate,
  type X509Svid,
} from '@weave/identity';
import { DevCaIdentityProvider, DevCertificateAuthority } from '@weave/identity/dev';
import { rotationDelayMs } from '../src/dev-ca-provider.js';
import { memoryLogger, quietLogger } from './helpers/log.js';

/** Resolves with the next update, or rejects after `ms` (a bound on waiting, not a timing assertion). */
function nextUpdate(p: IdentityProvider, ms = 10_000): Promise<IdentityUpdate> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => {
      off();
      reject(new Error('no identity update arrived'));
    }, ms);
    const off = p.onUpdate((u) => {
      clearTimeout(t);
      off();
      resolve(u);
    });
  });
}

async function waitFor(cond: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not reached');
    await new Promise((r) => setTimeout(r, 20));
  }
}

const serial = (s: X509Svid): string => s.certificates[0]!.serialNumber;

describe('DevCaIdentityProvider', () => {
  let ca: DevCertificateAuthority;
  let providers: IdentityProvider[] = [];
  beforeAll(async () => {
    ca = await DevCertificateAuthority.create({ trustDomain: 'a.test' });
  });
  afterEach(async () => {
    await Promise.all(providers.map((p) => p.close()));
    providers = [];
  });

  async function make(opts: Partial<Parameters<typeof DevCaIdentityProvider.create>[0]> = {}) {
    const p = await DevCaIdentityProvider.create({
      ca,
      id: 'spiffe://a.test/agent',
      logger: quietLogger(),
      ...opts,
    });
    providers.push(p);
    return p;
  }

  it('is ready after create, with its own bundle', async () => {
    const p = await make();
    expect(p.id.toString()).toBe('spiffe://a.test/agent');
    expect(p.getX509Svid().id.toString()).toBe('spiffe://a.test/agent');
    expect(p.getX509Bundle(TrustDomain.parse('a.test'))).toBe(ca.x509Bundle);
    expect(verifyX509Svid(p.getX509Svid().certificates, p).toString()).toBe('spiffe://a.test/agent');
  });

  it('rotates by itself with a short TTL; the new SVID is valid and reported', async () => {
    const p = await make({ ttlSeconds: 2 });
    const first = p.getX509Svid();
    const update = await nextUpdate(p);
    expect(update.reason).toBe('svid');
    expect(serial(update.svid)).not.toBe(serial(first));
    expect(p.getX509Svid()).toBe(update.svid);
    expect(update.svid.privateKey.equals(first.privateKey)).toBe(false);
    expect(verifyX509Svid(update.svid.certificates, update.bundles).toString()).toBe('spiffe://a.test/agent');
  });

  it('rotate() issues a new SVID and notifies; unsubscribe stops notifications', async () => {
    const p = await make();
    const seen: string[] = [];
    const off = p.onUpdate((u) => seen.push(serial(u.svid)));
    p.onUpdate(() => {
      throw new Error('a broken listener does not stop the others');
    });
    await p.rotate();
    expect(seen).toEqual([serial(p.getX509Svid())]);
    off();
    await p.rotate();
    expect(seen).toHaveLength(1);
  });

  it('federated bundles are added and removed with a bundles update; its own cannot be', async () => {
    const caB = await DevCertificateAuthority.create({ trustDomain: 'b.test' });
    const p = await make();
    const added = nextUpdate(p);
    p.addFederatedBundle(caB.x509Bundle);
    expect((await added).reason).toBe('bundles');
    const peer = await caB.issueX509Svid('spiffe://b.test/peer');
    expect(verifyX509Svid(peer.certificates, p).toString()).toBe('spiffe://b.test/peer');
    const removed = nextUpdate(p);
    p.removeFederatedBundle(TrustDomain.parse('b.test'));
    expect((await removed).bundles.getX509Bundle(TrustDomain.parse('b.test'))).toBeUndefined();
    expect(() => verifyX509Svid(peer.certificates, p)).toThrow(/no X.509 bundle/);
    const rogue = await DevCertificateAuthority.create({ trustDomain: 'a.test' });
    expect(() => p.addFederatedBundle(rogue.x509Bundle)).toThrow(IdentityConfigError);
    expect(() => p.removeFederatedBundle(TrustDomain.parse('a.test'))).toThrow(IdentityConfigError);
    expect(p.getX509Bundle(TrustDomain.parse('a.test'))).toBe(ca.x509Bundle);
  });

  it('refuses an ID outside the CA trust domain; is not ready once closed', async () => {
    await expect(DevCaIdentityProvider.create({ ca, id: 'spiffe://b.test/x' })).rejects.toBeInstanceOf(
      IdentityConfigError,
    );
    const p = await make();
    await p.close();
    expect(() => p.getX509Svid()).toThrow(IdentityNotReadyError);
  });
});

describe('StaticMtlsProvider', () => {
  const dirs: string[] = [];
  let providers: StaticMtlsProvider[] = [];
  let ca: DevCertificateAuthority;
  let caB: DevCertificateAuthority;
  beforeAll(async () => {
    ca = await DevCertificateAuthority.create({ trustDomain: 'a.test' });
    caB = await DevCertificateAuthority.create({ trustDomain: 'b.test' });
  });
  afterEach(async () => {
    await Promise.all(providers.map((p) => p.close()));
    providers = [];
  });
  afterAll(() => {
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  /** Replaces a file the way tools do: write aside, then rename over it. */
  function put(path: string, text: string): void {
    writeFileSync(`${path}.tmp`, text);
    renameSync(`${path}.tmp`, path);
  }

  async function setup(svid: X509Svid) {
    const dir = mkdtempSync(join(tmpdir(), 'weave-static-'));
    dirs.push(dir);
    const files = {
      certFile: join(dir, 'svid.pem'),
      keyFile: join(dir, 'svid-key.pem'),
      bundleFile: join(dir, 'bundle.pem'),
      federated: { 'b.test': join(dir, 'b.pem') },
    };
    const pem = svid.toPem();
    put(files.certFile, pem.certChain);
    put(files.keyFile, pem.privateKey);
    put(files.bundleFile, ca.x509Bundle.toPem());
    put(files.federated['b.test'], caB.x509Bundle.toPem());
    const { logger, lines: logs } = memoryLogger();
    const p = await StaticMtlsProvider.create({ ...files, logger, debounceMs: 50 });
    providers.push(p);
    return { p, files, logs };
  }

  it('loads the SVID, own bundle and federated bundles', async () => {
    const { p } = await setup(await ca.issueX509Svid('spiffe://a.test/static'));
    expect(p.id.toString()).toBe('spiffe://a.test/static');
    expect(p.getBundleSet().trustDomains().map(String)).toEqual(['a.test', 'b.test']);
    const peer = await caB.issueX509Svid('spiffe://b.test/peer');
    expect(verifyX509Svid(peer.certificates, p).toString()).toBe('spiffe://b.test/peer');
  });

  it('reloads when the files change and fires onUpdate', async () => {
    const { p, files } = await setup(await ca.issueX509Svid('spiffe://a.test/static'));
    const old = p.getX509Svid();
    const next = (await ca.issueX509Svid('spiffe://a.test/static')).toPem();
    const update = nextUpdate(p);
    put(files.keyFile, next.privateKey);
    put(files.certFile, next.certChain);
    const u = await update;
    expect(u.reason).toBe('svid');
    expect(serial(u.svid)).not.toBe(serial(old));
    expect(p.getX509Svid()).toBe(u.svid);

    const rotatedB = await DevCertificateAuthority.create({ trustDomain: 'b.test' });
    const bundles = nextUpdate(p);
    put(files.federated['b.test'], rotatedB.x509Bundle.toPem());
    const bu = await bundles;
    expect(bu.reason).toBe('bundles');
    expect(bu.bundles.getX509Bundle(TrustDomain.parse('b.test'))?.equals(rotatedB.x509Bundle)).toBe(true);
  });

  it('a bad new file keeps the last good identity and logs why', async () => {
    const { p, files, logs } = await setup(await ca.issueX509Svid('spiffe://a.test/static'));
    const good = p.getX509Svid();
    let updates = 0;
    p.onUpdate(() => updates++);

    put(files.certFile, 'garbage');
    await waitFor(() => logs.some((l) => l.level === 40));
    expect(p.lastReloadError?.message).toMatch(/no certificate|chain/i);
    expect(p.getX509Svid()).toBe(good);

    // A valid SVID whose key is not the one on disk.
    put(files.certFile, (await ca.issueX509Svid('spiffe://a.test/static')).toPem().certChain);
    await waitFor(() => p.lastReloadError?.message.includes('does not match') === true);
    expect(p.getX509Svid()).toBe(good);

    // An SVID of a CA we do not trust.
    const rogue = (
      await (
        await DevCertificateAuthority.create({ trustDomain: 'a.test' })
      ).issueX509Svid('spiffe://a.test/static')
    ).toPem();
    put(files.keyFile, rogue.privateKey);
    put(files.certFile, rogue.certChain);
    await waitFor(() => p.lastReloadError?.message.includes('does not lead to an authority') === true);
    expect(p.getX509Svid()).toBe(good);

    // Another identity is refused as well.
    const other = (await ca.issueX509Svid('spiffe://a.test/someone-else')).toPem();
    put(files.keyFile, other.privateKey);
    put(files.certFile, other.certChain);
    await waitFor(() => p.lastReloadError?.message.includes('changed SPIFFE ID') === true);
    expect(p.getX509Svid()).toBe(good);
    expect(updates).toBe(0);
    expect(logs.filter((l) => l.level === 40).every((l) => l.msg.includes('keeping the last good'))).toBe(
      true,
    );

    // And a good file after the bad ones is taken.
    const fixed = (await ca.issueX509Svid('spiffe://a.test/static')).toPem();
    const update = nextUpdate(p);
    put(files.keyFile, fixed.privateKey);
    put(files.certFile, fixed.certChain);
    expect(serial((await update).svid)).not.toBe(serial(good));
    expect(p.lastReloadError).toBeUndefined();
  });

  it('fails to start on missing or mismatched files', async () => {
    await expect(
      StaticMtlsProvider.create({
        certFile: '/nonexistent/a',
        keyFile: '/nonexistent/b',
        bundleFile: '/nonexistent/c',
      }),
    ).rejects.toBeInstanceOf(IdentityConfigError);
    const { files } = await setup(await ca.issueX509Svid('spiffe://a.test/static'));
    put(files.bundleFile, caB.x509Bundle.toPem());
    await expect(StaticMtlsProvider.create({ ...files, watch: false })).rejects.toMatchObject({
      code: 'IDENTITY_CONFIG_INVALID',
    });
    await expect(
      StaticMtlsProvider.create({ ...files, federated: { 'a.test': files.bundleFile }, watch: false }),
    ).rejects.toThrow(/own trust domain|does not lead/);
  });

  it('refuses a debounceMs that is not a whole number of ms from 0 to 2147483647, naming it', async () => {
    const { files } = await setup(await ca.issueX509Svid('spiffe://a.test/static'));
    for (const debounceMs of [Number.NaN, -1, 1.5, Infinity, 2_147_483_648]) {
      const err = await StaticMtlsProvider.create({ ...files, debounceMs }).catch((e: unknown) => e);
      expect(err, `debounceMs ${debounceMs}`).toBeInstanceOf(IdentityConfigError);
      expect(err).toMatchObject({ code: 'IDENTITY_CONFIG_INVALID' });
      expect((err as Error).message).toContain(
        `debounceMs: must be a whole number of milliseconds from 0 to 2147483647, got ${debounceMs}`,
      );
    }
    // 0 is no quiet period: a half-written pair is refused, and the next change read.
    const p = await StaticMtlsProvider.create({ ...files, debounceMs: 0, logger: quietLogger() });
    providers.push(p);
    const update = nextUpdate(p);
    const next = (await ca.issueX509Svid('spiffe://a.test/static')).toPem();
    put(files.keyFile, next.privateKey);
    put(files.certFile, next.certChain);
    expect((await update).reason).toBe('svid');
  });
});

describe('rotationDelayMs', () => {
  it('rotates at half the remaining lifetime, ±10 %, never in a tight loop', async () => {
    const ca = await DevCertificateAuthority.create({ trustDomain: 'r.test' });
    const issuedAt = Date.now();
    const svid = await ca.issueX509Svid('spiffe://r.test/x', { ttlSeconds: 1000 });
    const half = (svid.expiresAt.getTime() - issuedAt) / 2;
    expect(rotationDelayMs(svid, issuedAt, () => 0)).toBeCloseTo(half * 0.9, 0);
    expect(rotationDelayMs(svid, issuedAt, () => 0.5)).toBeCloseTo(half, 0);
    expect(rotationDelayMs(svid, issuedAt, () => 1)).toBeCloseTo(half * 1.1, 0);
    expect(rotationDelayMs(svid, svid.expiresAt.getTime() + 1000)).toBe(250);
  });
});
