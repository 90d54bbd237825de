// IdentityProvider.onExpired for every provider, with real certificates that
// really expire: the Workload API provider cut off from the dev server, PEM
// files nobody renews, and a dev CA that itself expires.
import { mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterEach, describe, expect, it, vi } from 'vitest';
import {
  IdentityNotReadyError,
  StaticMtlsProvider,
  WorkloadApiIdentityProvider,
  verifyX509Svid,
  type IdentityExpiry,
  type IdentityProvider,
  type IdentityUpdate,
  type WorkloadIdentityError,
} from '@weave/identity';
import { DevCaIdentityProvider, DevCertificateAuthority, DevWorkloadApiServer } from '@weave/identity/dev';

// Expiry and reconnects are logged as errors and warnings by design.
const logger = pino({ level: process.env.WEAVE_TEST_LOG ?? 'silent' });
const WAIT = { timeout: 15_000, interval: 20 };

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'weave-expiry-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Everything a provider reports, in order, with whether each announced SVID was valid when announced. */
function record(p: IdentityProvider) {
  const expiries: IdentityExpiry[] = [];
  const updates: { update: IdentityUpdate; validWhenSent: boolean }[] = [];
  p.onExpired((e) => expiries.push(e));
  p.onUpdate((update) =>
    updates.push({ update, validWhenSent: update.svid.expiresAt.getTime() > Date.now() }),
  );
  return { expiries, updates };
}

describe('WorkloadApiIdentityProvider.onExpired', () => {
  const TD = 'expiry.test';
  const ID = `spiffe://${TD}/agent`;

  async function startServer(dir: string): Promise<DevWorkloadApiServer> {
    const s = await DevWorkloadApiServer.start({
      stateDir: dir,
      trustDomain: TD,
      workloads: { agent: ID },
      // X.509 times are whole seconds and the server rotates at about half the
      // lifetime: with 2 s an SVID could expire before the next one arrived on a
      // loaded machine, before the test had cut the server off.
      x509SvidTtlSeconds: 4,
      logger,
    });
    cleanups.push(() => s.close());
    return s;
  }

  it('reports the SVID that expired while the server was down, once; the next SVID update ends it', async () => {
    const dir = tempDir();
    const server = await startServer(dir);
    const address = server.address('agent');
    const p = await WorkloadApiIdentityProvider.create({
      address,
      backoff: { initialMs: 50, maxMs: 200 },
      logger,
    });
    cleanups.push(() => p.close());
    const first = p.getX509Svid();
    const { expiries, updates } = record(p);
    const errors: WorkloadIdentityError[] = [];
    p.onError((e) => errors.push(e));

    await server.close();
    await vi.waitFor(() => expect(expiries).toHaveLength(1), WAIT);
    // The SVID held when the server went away is the last one announced (read
    // from the events, not from the provider at some moment, which on a loaded
    // machine may already be past its expiry).
    const held = updates.at(-1)?.update.svid ?? first;
    expect(held.expiresAt.getTime()).toBeLessThanOrEqual(Date.now());
    expect(expiries[0]!.svid).toBe(held);
    expect(expiries[0]!.expiredAt).toEqual(held.expiresAt);
    expect(expiries[0]!.message).toContain(
      `the X.509-SVID of ${ID} expired at ${held.expiresAt.toISOString()} and the Workload API at ` +
        `${address} has not delivered a new one`,
    );
    expect(() => p.getX509Svid()).toThrow(IdentityNotReadyError);
    // onError listeners, which predate onExpired, still hear of it.
    expect(errors.filter((e) => e instanceof IdentityNotReadyError).map((e) => e.message)).toEqual([
      expiries[0]!.message,
    ]);
    const before = updates.length;

    await startServer(dir);
    await vi.waitFor(
      () => expect(updates.slice(before).some(({ update }) => update.reason !== 'bundles')).toBe(true),
      WAIT,
    );
    const recovery = updates.slice(before).find(({ update }) => update.reason !== 'bundles')!;
    expect(recovery.validWhenSent).toBe(true);
    expect(recovery.update.svid.expiresAt > held.expiresAt).toBe(true);
    expect(verifyX509Svid(recovery.update.svid.certificates, p).toString()).toBe(ID);
    expect(p.getX509Svid().id.toString()).toBe(ID);
    expect(expiries).toHaveLength(1);
  });
});

describe('StaticMtlsProvider.onExpired', () => {
  /** Replaces a file the way tools do: write aside, then rename over it. */
  function put(path: string, text: string): void {
    writeFileSync(`${path}.tmp`, text);
    renameSync(`${path}.tmp`, path);
  }

  it('reports when the certificate in the files expires, names a refused expired file, ends with fresh files', async () => {
    const ca = await DevCertificateAuthority.create({ trustDomain: 'a.test' });
    const dir = tempDir();
    const files = {
      certFile: join(dir, 'svid.pem'),
      keyFile: join(dir, 'svid-key.pem'),
      bundleFile: join(dir, 'bundle.pem'),
    };
    const write = (pem: { certChain: string; privateKey: string }): void => {
      put(files.keyFile, pem.privateKey);
      put(files.certFile, pem.certChain);
    };
    write(
      // Long enough that the provider reads it before it expires on a loaded machine.
      (await ca.issueX509Svid('spiffe://a.test/static', { notAfter: new Date(Date.now() + 4000) })).toPem(),
    );
    put(files.bundleFile, ca.x509Bundle.toPem());
    const p = await StaticMtlsProvider.create({ ...files, logger, debounceMs: 50 });
    cleanups.push(() => p.close());
    const held = p.getX509Svid();
    const { expiries, updates } = record(p);

    await vi.waitFor(() => expect(expiries).toHaveLength(1), WAIT);
    expect(expiries[0]!.svid).toBe(held);
    expect(expiries[0]!.message).toBe(
      `the X.509-SVID of spiffe://a.test/static in ${files.certFile} expired at ` +
        `${held.expiresAt.toISOString()} and no valid replacement was written`,
    );
    expect(() => p.getX509Svid()).toThrow(IdentityNotReadyError);

    // Files that are themselves expired are refused, and the refusal is named.
    write(
      (await ca.issueX509Svid('spiffe://a.test/static', { notAfter: new Date(Date.now() - 60_000) })).toPem(),
    );
    await vi.waitFor(() => expect(p.lastReloadError?.message).toMatch(/expired/), WAIT);
    expect(() => p.getX509Svid()).toThrow(
      /no valid replacement was written \(last reload refused: .*expired/,
    );
    expect(updates).toHaveLength(0);

    write((await ca.issueX509Svid('spiffe://a.test/static')).toPem());
    await vi.waitFor(() => expect(updates).toHaveLength(1), WAIT);
    expect(updates[0]!.update.reason).toBe('svid');
    expect(updates[0]!.validWhenSent).toBe(true);
    expect(p.getX509Svid()).toBe(updates[0]!.update.svid);
    expect(expiries).toHaveLength(1);
  });
});

describe('DevCaIdentityProvider.onExpired', () => {
  it('reports once when the dev CA itself expired, and announces none of the expired SVIDs issued after', async () => {
    // SVIDs never outlive their CA: with a 4 s CA every SVID ends with it, and
    // those issued afterwards are born expired. (X.509 times are whole seconds;
    // 2 s could leave the provider's first SVID born expired on a loaded machine.)
    const ca = await DevCertificateAuthority.create({ trustDomain: 'a.test', ttlSeconds: 4 });
    const issued = vi.spyOn(ca, 'issueX509Svid');
    const p = await DevCaIdentityProvider.create({ ca, id: 'spiffe://a.test/agent', logger });
    cleanups.push(() => p.close());
    expect(p.getX509Svid().expiresAt).toEqual(ca.certificate.notAfter);
    const { expiries, updates } = record(p);

    await vi.waitFor(() => expect(expiries).toHaveLength(1), WAIT);
    expect(expiries[0]!.expiredAt).toEqual(ca.certificate.notAfter);
    expect(expiries[0]!.message).toBe(
      `the X.509-SVID of spiffe://a.test/agent expired at ${ca.certificate.notAfter.toISOString()} and ` +
        `the dev CA of a.test has not issued a valid new one (the dev CA itself expired at ` +
        `${ca.certificate.notAfter.toISOString()})`,
    );
    expect(() => p.getX509Svid()).toThrow(IdentityNotReadyError);
    const announced = updates.length;

    // Rotation goes on issuing, now expired SVIDs: none is announced, the expiry is not repeated.
    const calls = issued.mock.calls.length;
    await vi.waitFor(() => expect(issued.mock.calls.length).toBeGreaterThanOrEqual(calls + 2), WAIT);
    expect(updates).toHaveLength(announced);
    expect(updates.every((u) => u.validWhenSent)).toBe(true);
    expect(expiries).toHaveLength(1);
    expect(() => p.getX509Svid()).toThrow(IdentityNotReadyError);
  });
});
