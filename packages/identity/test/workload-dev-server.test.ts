// The dev Workload API server's own contract: options, run-time changes,
// rotation cadence, restart. Clients here are the real WorkloadApiClient.
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { WorkloadApiClient, type X509Context } from '@weave/identity';
import {
  DevCertificateAuthority,
  DevWorkloadApiServer,
  DevWorkloadApiServerError,
} from '@weave/identity/dev';

const TD = 'devserver.test';
const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'weave-wds-'));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

async function start(
  dir: string,
  extra: Partial<Parameters<typeof DevWorkloadApiServer.start>[0]> = {},
): Promise<DevWorkloadApiServer> {
  const s = await DevWorkloadApiServer.start({
    stateDir: dir,
    trustDomain: TD,
    workloads: { a: `spiffe://${TD}/a` },
    ...extra,
  });
  cleanups.push(() => s.close());
  return s;
}

function client(address: string): WorkloadApiClient {
  const c = new WorkloadApiClient({ address, backoff: { initialMs: 50, maxMs: 200 } });
  cleanups.push(() => c.close());
  return c;
}

const rejects = async (p: Promise<unknown>, code: string, message: RegExp): Promise<void> => {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(DevWorkloadApiServerError);
  expect((err as DevWorkloadApiServerError).code).toBe(code);
  expect((err as Error).message).toMatch(message);
};

describe('DevWorkloadApiServer', () => {
  it('validates its options with clear errors', async () => {
    const dir = await tempDir();
    const bad = 'DEV_WORKLOAD_API_INVALID_OPTIONS';
    await rejects(start(dir, { workloads: { 'no/slash': `spiffe://${TD}/a` } }), bad, /workload names/);
    await rejects(
      start(dir, { workloads: { a: 'spiffe://other.test/a' } }),
      bad,
      /in trust domain devserver.test/,
    );
    await rejects(start(dir, { workloads: { a: `spiffe://${TD}` } }), bad, /with a path/);
    await rejects(start(dir, { workloads: { a: 'not an id' } }), bad, /invalid SPIFFE ID/);
    await rejects(start(dir, { x509SvidTtlSeconds: 1 }), bad, /x509SvidTtlSeconds/);
    await rejects(start(dir, { socketDir: join(dir, 'x'.repeat(110)) }), bad, /longer than 107 bytes/);
  });

  it('replaces a stale socket file but never deletes a regular file in the way', async () => {
    const dir = await tempDir();
    const sockets = join(dir, 'sockets');
    // A socket left behind by a server that died: a process binds it and is killed.
    await mkdir(sockets, { recursive: true });
    const stalePath = join(sockets, 'a.sock');
    const child = spawn(process.execPath, [
      '-e',
      `require('node:net').createServer().listen(${JSON.stringify(stalePath)}, () => process.kill(process.pid, 'SIGKILL'))`,
    ]);
    await new Promise((r) => child.once('exit', r));
    expect((await stat(stalePath)).isSocket()).toBe(true);
    const s = await start(dir);
    expect((await client(s.address('a')).fetchX509Svid()).id.toString()).toBe(`spiffe://${TD}/a`);
    await s.close();

    await writeFile(join(sockets, 'b.sock'), 'not a socket');
    await rejects(
      start(dir, { workloads: { b: `spiffe://${TD}/b` } }),
      'DEV_WORKLOAD_API_INVALID_OPTIONS',
      /is not a socket/,
    );
    expect((await stat(join(sockets, 'b.sock'))).isFile()).toBe(true);
  });

  it('a start refused for its workloads writes nothing to the state directory (no CA for the wrong trust domain)', async () => {
    const dir = await tempDir();
    const state = join(dir, 'state');
    await rejects(
      start(state, { trustDomain: 'b.test', workloads: { a: 'spiffe://a.test/x' } }),
      'DEV_WORKLOAD_API_INVALID_OPTIONS',
      /in trust domain b.test/,
    );
    await rejects(
      start(state, { workloads: { 'no/slash': `spiffe://${TD}/a` } }),
      'DEV_WORKLOAD_API_INVALID_OPTIONS',
      /workload names/,
    );
    expect(await readdir(state).catch(() => [])).toEqual([]);
    // So the corrected start goes through.
    const s = await start(state, { trustDomain: 'a.test', workloads: { a: 'spiffe://a.test/x' } });
    expect(s.trustDomain.name).toBe('a.test');
    await s.close();
  });

  it('does not take the sockets of a dev server still running on the same state directory', async () => {
    const dir = await tempDir();
    const first = await start(dir);
    const address = first.address('a');
    await rejects(start(dir), 'DEV_WORKLOAD_API_SOCKET_IN_USE', /in use by a running server/);
    // The first server's socket is still there and still answers.
    expect((await stat(address.slice('unix://'.length))).isSocket()).toBe(true);
    expect((await client(address).fetchX509Svid()).id.toString()).toBe(`spiffe://${TD}/a`);
    await first.close();
  });

  it('keeps the trust domain across restarts (CA persisted in stateDir) and refuses another one', async () => {
    const dir = await tempDir();
    const first = await start(dir);
    const ca = first.ca.certificate.serialNumber;
    await first.close();
    const second = await start(dir);
    expect(second.ca.certificate.serialNumber).toBe(ca);
    const ctx = await client(second.address('a')).fetchX509Context();
    expect(ctx.bundles.getX509Bundle(second.trustDomain)?.authorities[0]?.serialNumber).toBe(ca);
    await second.close();
    await expect(start(dir, { trustDomain: 'other.test', workloads: {} })).rejects.toMatchObject({
      code: 'DEV_CA_WRONG_TRUST_DOMAIN',
    });
  });

  it('rotates at about half the TTL: a few rotations, never a tight loop', async () => {
    const s = await start(await tempDir(), { x509SvidTtlSeconds: 2 });
    const seen: X509Context[] = [];
    const w = client(s.address('a')).watchX509Context({ onUpdate: (c) => seen.push(c) });
    cleanups.push(() => w.stop());
    await new Promise((r) => setTimeout(r, 2500));
    const serials = new Set(seen.map((c) => c.defaultSvid.certificates[0]!.serialNumber));
    expect(serials.size).toBe(seen.length);
    // 2.5 s at a rotation every ~0.5-1.1 s: the first message plus 2-6 rotations.
    expect(seen.length).toBeGreaterThanOrEqual(3);
    expect(seen.length).toBeLessThanOrEqual(7);
    for (const c of seen) expect(c.defaultSvid.expiresAt.getTime() - Date.now()).toBeLessThanOrEqual(2000);
  });

  it('an SVID whose half-life is beyond the longest timer is not rotated at once, over and over', async () => {
    // A CA of a year, persisted where the server loads it, and SVIDs of 120 days:
    // half of that is more than 2^31 - 1 ms, which Node's timers fire after 1 ms.
    const dir = await tempDir();
    await DevCertificateAuthority.create({ trustDomain: TD, dir, ttlSeconds: 365 * 24 * 3600 });
    const s = await start(dir, { x509SvidTtlSeconds: 120 * 24 * 3600 });
    const seen: X509Context[] = [];
    const errors: Error[] = [];
    const w = client(s.address('a')).watchX509Context({
      onUpdate: (c) => seen.push(c),
      onError: (e) => errors.push(e),
      // As the identity provider asks: a new SVID by the held one's expiry.
      needBy: () => seen.at(-1)?.defaultSvid.expiresAt.getTime(),
    });
    cleanups.push(() => w.stop());
    await new Promise((r) => setTimeout(r, 1000));
    expect(seen[0]!.defaultSvid.expiresAt.getTime() - Date.now()).toBeGreaterThan(119 * 24 * 3600 * 1000);
    expect(seen).toHaveLength(1);
    // Nor does the client take the quiet stream for a stale one (its check is a timer too).
    expect(errors).toEqual([]);
  });

  it('manages workloads and federation at run time', async () => {
    const s = await start(await tempDir());
    const other = await DevCertificateAuthority.create({ trustDomain: 'partner.test' });
    expect(() => s.address('nope')).toThrow(DevWorkloadApiServerError);
    await rejects(
      s.addWorkload('a', `spiffe://${TD}/again`),
      'DEV_WORKLOAD_API_INVALID_OPTIONS',
      /already registered/,
    );
    const addr = await s.addWorkload('late', `spiffe://${TD}/late`);
    expect(addr).toBe(s.address('late'));
    expect((await client(addr).fetchX509Svid()).id.toString()).toBe(`spiffe://${TD}/late`);
    expect(s.workloadNames().sort()).toEqual(['a', 'late']);

    expect(() => s.setFederatedBundle(TD, { x509: s.ca.x509Bundle })).toThrow(/own trust domain/);
    expect(() => s.setFederatedBundle('third.test', { x509: other.x509Bundle })).toThrow(
      /cannot be federated as/,
    );
    expect(() => s.setFederatedBundle('partner.test', {})).toThrow(/needs an X.509 or a JWT bundle/);
    expect(s.removeFederatedBundle('partner.test')).toBe(false);

    const rotated = await s.rotateX509Svid('a');
    const got = await client(s.address('a')).fetchX509Svid();
    expect(got.certificates[0]!.serialNumber).toBe(rotated.certificates[0]!.serialNumber);
    s.removeWorkload('a');
    await rejects(s.rotateX509Svid('a'), 'DEV_WORKLOAD_API_UNKNOWN_WORKLOAD', /has no identity/);

    await s.close();
    await s.close();
    await rejects(s.addWorkload('x', `spiffe://${TD}/x`), 'DEV_WORKLOAD_API_CLOSED', /closed/);
  });
});
