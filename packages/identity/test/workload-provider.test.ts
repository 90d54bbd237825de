// WorkloadApiIdentityProvider (the production provider) against the real dev
// Workload API server over Unix sockets: first SVID, rotation, restart,
// late socket, expiry while unreachable, federation, and the stop rules.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import {
  IdentityConfigError,
  IdentityNotReadyError,
  TrustDomain,
  WorkloadApiClient,
  WorkloadApiError,
  WorkloadApiIdentityProvider,
  verifyX509Svid,
  type IdentityUpdate,
  type X509Svid,
  type WorkloadIdentityError,
} from '@weave/identity';
import { DevCertificateAuthority, DevWorkloadApiServer } from '@weave/identity/dev';
import { ExponentialBackoff, resolveBackoff, type BackoffOptions } from '../src/workload/backoff.js';
import { workloadApiService } from '../src/workload/proto.js';
import { craftedWorkloadApi } from './helpers/crafted-api.js';
import { memoryLogger, quietLogger } from './helpers/log.js';

const TD = 'provider.test';
const FAST = { initialMs: 50, maxMs: 200 };
const ID = `spiffe://${TD}/agent`;
// Reconnects and refusals are logged as warnings and errors by design.
const quiet = quietLogger();

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function stateDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'weave-wlp-'));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

async function startServer(dir: string, ttl = 3600): Promise<DevWorkloadApiServer> {
  const s = await DevWorkloadApiServer.start({
    stateDir: dir,
    trustDomain: TD,
    workloads: { agent: ID, nobody: null },
    x509SvidTtlSeconds: ttl,
  });
  cleanups.push(() => s.close());
  return s;
}

async function provider(
  address: string,
  extra: { readyTimeoutMs?: number; logger?: Logger; spiffeId?: string } = {},
): Promise<WorkloadApiIdentityProvider> {
  const p = await WorkloadApiIdentityProvider.create({ address, backoff: FAST, logger: quiet, ...extra });
  cleanups.push(() => p.close());
  return p;
}

async function until(cond: () => boolean, timeoutMs = 15_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not reached');
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** The provider serves a valid SVID that expires later than `held`. */
function renewedAfter(p: WorkloadApiIdentityProvider, held: { expiresAt: Date }): boolean {
  try {
    return p.getX509Svid().expiresAt > held.expiresAt;
  } catch {
    return false;
  }
}

const serial = (p: WorkloadApiIdentityProvider): string => p.getX509Svid().certificates[0]!.serialNumber;

describe('WorkloadApiIdentityProvider', () => {
  it('resolves with the first SVID and serves bundles of both kinds', async () => {
    const server = await startServer(await stateDir());
    const p = await provider(server.address('agent'));
    expect(p.id.toString()).toBe(ID);
    const svid = p.getX509Svid();
    expect(verifyX509Svid(svid.certificates, p).toString()).toBe(ID);
    expect(p.getX509Bundle(TrustDomain.parse(TD))?.equals(server.ca.x509Bundle)).toBe(true);
    await until(() => !!p.getBundleSet().getJwtBundle(TrustDomain.parse(TD)));
  });

  it('rotates with a short TTL and never has a moment without a valid SVID', async () => {
    const server = await startServer(await stateDir(), 2);
    const p = await provider(server.address('agent'));
    const updates: IdentityUpdate[] = [];
    p.onUpdate((u) => updates.push(u));
    const seen = new Set<string>();
    // Sample continuously across ~3 rotations (the server rotates at about half of the 2 s TTL).
    const end = Date.now() + 3500;
    while (Date.now() < end) {
      const svid = p.getX509Svid();
      const now = Date.now();
      expect(svid.certificates[0]!.notBefore.getTime()).toBeLessThanOrEqual(now);
      expect(svid.expiresAt.getTime()).toBeGreaterThan(now);
      verifyX509Svid(svid.certificates, p);
      seen.add(svid.certificates[0]!.serialNumber);
      await new Promise((r) => setTimeout(r, 20));
    }
    expect(seen.size).toBeGreaterThanOrEqual(3);
    const svidUpdates = updates.filter((u) => u.reason === 'svid' || u.reason === 'both');
    expect(svidUpdates.length).toBeGreaterThanOrEqual(2);
    expect(svidUpdates.at(-1)!.svid.id.toString()).toBe(ID);
  });

  it('keeps the last SVID while the server is down and continues after a restart with the same trust domain', async () => {
    const dir = await stateDir();
    const first = await startServer(dir);
    const p = await provider(first.address('agent'));
    const before = serial(p);
    const caBefore = first.ca.certificate.serialNumber;
    const errors: WorkloadIdentityError[] = [];
    p.onError((e) => errors.push(e));
    const updates: IdentityUpdate[] = [];
    p.onUpdate((u) => updates.push(u));

    await first.close();
    await until(() => errors.length >= 2);
    expect(serial(p)).toBe(before);

    const second = await startServer(dir);
    expect(second.ca.certificate.serialNumber).toBe(caBefore);
    await until(() => updates.some((u) => u.reason !== 'bundles'));
    expect(serial(p)).not.toBe(before);
    expect(p.getX509Bundle(TrustDomain.parse(TD))?.equals(second.ca.x509Bundle)).toBe(true);
    expect(verifyX509Svid(p.getX509Svid().certificates, p).toString()).toBe(ID);
  });

  it('waits for a socket that is absent at start and appears later', async () => {
    const dir = await stateDir();
    const address = `unix://${join(dir, 'sockets', 'agent.sock')}`;
    const errors: WorkloadIdentityError[] = [];
    const pending = WorkloadApiIdentityProvider.create({
      address,
      backoff: FAST,
      logger: quiet,
      readyTimeoutMs: 15_000,
    });
    await new Promise((r) => setTimeout(r, 300));
    const server = await startServer(dir);
    expect(server.address('agent')).toBe(address);
    const p = await pending;
    cleanups.push(() => p.close());
    p.onError((e) => errors.push(e));
    expect(p.id.toString()).toBe(ID);
  });

  it('fails with a clear error when no SVID arrives in time (absent socket, or a caller without identity)', async () => {
    const dir = await stateDir();
    const absent = `unix://${join(dir, 'nothing.sock')}`;
    const e1 = await WorkloadApiIdentityProvider.create({
      address: absent,
      backoff: FAST,
      logger: quiet,
      readyTimeoutMs: 400,
    }).catch((e: unknown) => e);
    expect(e1).toBeInstanceOf(IdentityNotReadyError);
    expect((e1 as Error).message).toContain(`no X.509-SVID from the Workload API at ${absent} within 400 ms`);
    expect((e1 as Error).message).toContain('UNAVAILABLE');

    const server = await startServer(dir);
    const e2 = await WorkloadApiIdentityProvider.create({
      address: server.address('nobody'),
      backoff: FAST,
      logger: quiet,
      readyTimeoutMs: 400,
    }).catch((e: unknown) => e);
    expect(e2).toBeInstanceOf(IdentityNotReadyError);
    expect((e2 as Error).message).toContain('PERMISSION_DENIED');
  });

  it('refuses a readyTimeoutMs that is not a whole number of ms from 1 to 2147483647, naming it', async () => {
    const server = await startServer(await stateDir());
    const address = server.address('agent');
    // 3e9 ms would fire after about 1 ms (Node's timer overflow), failing a provider that was fine.
    for (const readyTimeoutMs of [Number.NaN, -1, 0, 1.5, Infinity, 3e9]) {
      const err = await WorkloadApiIdentityProvider.create({ address, logger: quiet, readyTimeoutMs }).catch(
        (e: unknown) => e,
      );
      expect(err, `readyTimeoutMs ${readyTimeoutMs}`).toBeInstanceOf(IdentityConfigError);
      expect(err).toMatchObject({ code: 'IDENTITY_CONFIG_INVALID' });
      expect((err as Error).message).toContain(
        `invalid Workload API provider options: readyTimeoutMs: must be a whole number of milliseconds from 1 to 2147483647, got ${readyTimeoutMs}`,
      );
    }
    const p = await provider(address, { readyTimeoutMs: 2_147_483_647 });
    expect(p.id.toString()).toBe(ID);
  });

  it('with a hint, waits for an SVID carrying that hint and says so', async () => {
    const server = await startServer(await stateDir());
    const err = await WorkloadApiIdentityProvider.create({
      address: server.address('agent'),
      backoff: FAST,
      logger: quiet,
      readyTimeoutMs: 300,
      hint: 'external',
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(IdentityNotReadyError);
    expect((err as Error).message).toContain('no X.509-SVID with hint "external"');
  });

  it('with a spiffeId, takes the SVID carrying that ID, waits for it otherwise, and rejects an invalid one', async () => {
    const server = await startServer(await stateDir());
    const p = await provider(server.address('agent'), { spiffeId: ID });
    expect(p.id.toString()).toBe(ID);
    const err = await WorkloadApiIdentityProvider.create({
      address: server.address('agent'),
      backoff: FAST,
      logger: quiet,
      readyTimeoutMs: 1_000,
      spiffeId: `spiffe://${TD}/other`,
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(IdentityNotReadyError);
    expect((err as Error).message).toContain(`no X.509-SVID with ID spiffe://${TD}/other (it sent ${ID})`);
    const bad = await WorkloadApiIdentityProvider.create({
      address: server.address('agent'),
      spiffeId: 'spiffe://Bad/x',
    }).catch((e: unknown) => e);
    expect(bad).toBeInstanceOf(IdentityConfigError);
    expect((bad as Error).message).toContain('spiffeId');
  });

  it('reports loudly when the held SVID expires while the server is unreachable, then recovers', async () => {
    const dir = await stateDir();
    const server = await startServer(dir, 2);
    const address = server.address('agent');
    const { logger, lines } = memoryLogger('error');
    const p = await provider(address, { logger });
    const expired: WorkloadIdentityError[] = [];
    p.onError((e) => {
      if (e instanceof IdentityNotReadyError) expired.push(e);
    });
    await server.close();
    const held = p.getX509Svid();
    await until(() => expired.length === 1, 5000);
    expect(expired[0]!.code).toBe('IDENTITY_NOT_READY');
    expect(expired[0]!.message).toContain(
      `the X.509-SVID of ${ID} expired at ${held.expiresAt.toISOString()}`,
    );
    expect(() => p.getX509Svid()).toThrow(/expired/);
    // Loudly: one error record naming the SVID and its expiry, besides the listeners.
    const reports = lines.filter((l) => l.msg === expired[0]!.message);
    expect(reports).toHaveLength(1);
    expect(reports[0]).toMatchObject({ level: 50, address, id: ID });

    await startServer(dir, 2);
    await until(() => renewedAfter(p, held));
  });

  it('reconnects within urgentMaxMs while its SVID is expired, so a fresh one arrives soon after the server returns', async () => {
    const dir = await stateDir();
    const server = await startServer(dir, 2);
    const address = server.address('agent');
    const { logger, lines } = memoryLogger('debug');
    const p = await WorkloadApiIdentityProvider.create({
      address,
      // Without the urgent bound, an outage of a few seconds grows the wait toward 20 s.
      backoff: { initialMs: 100, maxMs: 20_000, urgentMaxMs: 250 },
      logger,
    });
    cleanups.push(() => p.close());
    let expiredAt = 0;
    p.onExpired(() => (expiredAt = Date.now()));
    const held = p.getX509Svid();
    await server.close();
    await until(() => expiredAt > 0, 10_000);
    // A few seconds without the server: unbounded growth would reach several seconds by now.
    await new Promise((r) => setTimeout(r, 2500));
    const retries = lines.filter(
      (l) => l.rpc === 'FetchX509SVID' && typeof l.retryInMs === 'number' && (l.time as number) >= expiredAt,
    );
    expect(retries.length).toBeGreaterThanOrEqual(3);
    expect(retries.every((l) => (l.retryInMs as number) <= 250)).toBe(true);
    expect(() => p.getX509Svid()).toThrow(IdentityNotReadyError);

    const back = Date.now();
    await startServer(dir, 2);
    await until(() => renewedAfter(p, held));
    // One urgent retry plus a connect and a signing; generous for a loaded machine.
    expect(Date.now() - back).toBeLessThan(4000);
  });

  /**
   * A real gRPC Workload API server on a Unix socket in front of the dev
   * server, relaying its streams, except that X.509 streams are held back:
   * `first-stuck`: the first X.509 stream stops after its first message and
   * stays open, as a server that lost the subscriber without closing its
   * stream; `frozen`: every X.509 stream sends the first SVID ever sent and
   * nothing more, as an agent that cannot get a newer one.
   */
  async function heldBackRelay(dir: string, server: DevWorkloadApiServer, mode: 'first-stuck' | 'frozen') {
    const svc = workloadApiService();
    const dev = new grpc.Client(server.address('agent'), grpc.credentials.createInsecure());
    cleanups.push(() => dev.close());
    const state = { x509Calls: 0 };
    let firstX509: unknown;
    const relay =
      (method: 'FetchX509SVID' | 'FetchJWTBundles') =>
      (call: grpc.ServerWritableStream<unknown, unknown>): void => {
        const x509 = method === 'FetchX509SVID';
        if (x509) state.x509Calls++;
        if (x509 && mode === 'frozen' && firstX509 !== undefined) {
          call.write(firstX509);
          return;
        }
        const stuck = x509 && (mode === 'frozen' || state.x509Calls === 1);
        const md = new grpc.Metadata();
        md.set('workload.spiffe.io', 'true');
        const def = svc[method] as grpc.MethodDefinition<object, unknown>;
        const up = dev.makeServerStreamRequest(
          def.path,
          def.requestSerialize,
          def.responseDeserialize,
          {},
          md,
        );
        let sent = 0;
        up.on('data', (msg: unknown) => {
          if (x509) firstX509 ??= msg;
          if (!stuck || sent++ === 0) call.write(msg);
        });
        up.on('error', () => undefined);
        call.on('cancelled', () => up.cancel());
      };
    const path = join(dir, 'relay.sock');
    const srv = await craftedWorkloadApi(path, {
      FetchX509SVID: relay('FetchX509SVID'),
      FetchJWTBundles: relay('FetchJWTBundles'),
    });
    cleanups.push(() => srv.forceShutdown());
    return { address: `unix://${path}`, state };
  }

  it('restarts a stream that stays open but stops bringing updates (a stuck subscription), in time to fetch the SVID rotated meanwhile', async () => {
    const dir = await stateDir();
    const server = await startServer(dir, 8); // rotated at half its life: 4 s
    const relay = await heldBackRelay(dir, server, 'first-stuck');
    const p = await provider(relay.address);
    const held = p.getX509Svid();
    let expired = false;
    p.onExpired(() => (expired = true));
    // The rotation at 4 s never comes on the stuck stream; a new stream brings it.
    await until(() => renewedAfter(p, held), 10_000);
    expect(Date.now()).toBeLessThan(held.expiresAt.getTime());
    expect(expired).toBe(false);
    expect(relay.state.x509Calls).toBe(2);
  });

  it('restarts a stale stream once per SVID: a new stream that brings the same SVID again is left alone', async () => {
    const dir = await stateDir();
    const server = await startServer(dir, 4);
    const relay = await heldBackRelay(dir, server, 'frozen');
    const p = await provider(relay.address);
    const held = p.getX509Svid();
    let expired = false;
    p.onExpired(() => (expired = true));
    // Restarted once before the SVID expires; the new stream brings the same SVID.
    await until(() => relay.state.x509Calls === 2, 10_000);
    await until(() => expired, 10_000);
    // Two seconds past its expiry: no stream restarted again (a restart a reconnect apart would be dozens).
    await new Promise((r) => setTimeout(r, 2_000));
    expect(relay.state.x509Calls).toBe(2);
    expect(Date.now()).toBeGreaterThan(held.expiresAt.getTime() + 1_500);
  });

  it('adds and removes a federated bundle at run time', async () => {
    const server = await startServer(await stateDir());
    const p = await provider(server.address('agent'));
    const partner = await DevCertificateAuthority.create({ trustDomain: 'partner.test' });
    const partnerTd = TrustDomain.parse('partner.test');
    const partnerSvid = await partner.issueX509Svid('spiffe://partner.test/search');
    const updates: IdentityUpdate[] = [];
    p.onUpdate((u) => updates.push(u));
    expect(() => verifyX509Svid(partnerSvid.certificates, p)).toThrow();

    server.setFederatedBundle(partnerTd, { x509: partner.x509Bundle, jwt: partner.jwtBundle });
    await until(() => !!p.getX509Bundle(partnerTd) && !!p.getBundleSet().getJwtBundle(partnerTd));
    expect(verifyX509Svid(partnerSvid.certificates, p).toString()).toBe('spiffe://partner.test/search');
    expect(updates.some((u) => u.reason === 'bundles' && !!u.bundles.getX509Bundle(partnerTd))).toBe(true);

    server.removeFederatedBundle(partnerTd);
    await until(() => !p.getX509Bundle(partnerTd) && !p.getBundleSet().getJwtBundle(partnerTd));
    expect(() => verifyX509Svid(partnerSvid.certificates, p)).toThrow();
    expect(updates.at(-1)!.bundles.getX509Bundle(partnerTd)).toBeUndefined();
    expect(p.getX509Svid().id.toString()).toBe(ID);
  });

  it('stops (no retry) when the server answers INVALID_ARGUMENT', async () => {
    // A Workload API server that rejects every request, as SPIRE does for a
    // request without the security header: a real gRPC server on a Unix socket
    // speaking the published service, used to inject that one answer.
    const dir = await stateDir();
    const path = join(dir, 'reject.sock');
    let calls = 0;
    const reject = (call: grpc.ServerWritableStream<unknown, unknown>): void => {
      calls++;
      call.emit('error', {
        code: grpc.status.INVALID_ARGUMENT,
        details: 'security header missing from request',
      });
    };
    const srv = await craftedWorkloadApi(path, { FetchX509SVID: reject, FetchJWTBundles: reject });
    cleanups.push(() => srv.forceShutdown());

    const err = await WorkloadApiIdentityProvider.create({
      address: `unix://${path}`,
      backoff: FAST,
      logger: quiet,
      readyTimeoutMs: 10_000,
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(WorkloadApiError);
    expect((err as WorkloadApiError).code).toBe('WORKLOAD_API_INVALID_ARGUMENT');
    const after = calls;
    // Several backoff periods later, nothing has been retried.
    await new Promise((r) => setTimeout(r, 400));
    expect(calls).toBe(after);
    expect(after).toBeLessThanOrEqual(2);
  });
});

describe('Workload API backoff', () => {
  const top = () => 1; // jitter at the top of each step
  const bottom = () => 0; // ... at the bottom (half the step)

  it('doubles from 1 s to a 30 s cap, with jitter in the upper half of each step, and resets after a message', () => {
    const b = new ExponentialBackoff(resolveBackoff(undefined), top);
    expect(Array.from({ length: 8 }, () => b.next())).toEqual([
      1000, 2000, 4000, 8000, 16_000, 30_000, 30_000, 30_000,
    ]);
    b.reset();
    expect(b.next()).toBe(1000);
    const low = new ExponentialBackoff(resolveBackoff(undefined), bottom);
    expect([low.next(), low.next(), low.next()]).toEqual([500, 1000, 2000]);
    const any = new ExponentialBackoff(resolveBackoff(undefined));
    for (let i = 0; i < 50; i++) {
      const d = any.next();
      expect(d).toBeGreaterThanOrEqual(500);
      expect(d).toBeLessThanOrEqual(30_000);
    }
  });

  it('retries within urgentMaxMs once the SVID has expired or would expire before the next attempt', () => {
    const now = 1_000_000;
    const b = new ExponentialBackoff(resolveBackoff(undefined), top);
    for (let i = 0; i < 6; i++) b.next();
    // Far from expiry: the full capped step.
    expect(b.next(now + 3_600_000, now)).toBe(30_000);
    // Expiring in 10 s, before the next 30 s attempt: brought forward.
    expect(b.next(now + 10_000, now)).toBe(1000);
    // Already expired.
    expect(b.next(now - 1, now)).toBe(1000);
    const fast = new ExponentialBackoff(
      resolveBackoff({ initialMs: 100, maxMs: 20_000, urgentMaxMs: 250 }),
      top,
    );
    for (let i = 0; i < 10; i++) fast.next();
    expect(fast.next(now - 1, now)).toBe(250);
  });

  it('refuses bad values with IdentityConfigError naming the option, through every entry point', async () => {
    const address = 'unix:///nonexistent/workload.sock';
    const bad: [BackoffOptions, string][] = [
      [
        { initialMs: Number.NaN },
        'backoff.initialMs: must be a whole number of milliseconds from 1 to 2147483647, got NaN',
      ],
      [
        { initialMs: -1 },
        'backoff.initialMs: must be a whole number of milliseconds from 1 to 2147483647, got -1',
      ],
      [
        { initialMs: 0 },
        'backoff.initialMs: must be a whole number of milliseconds from 1 to 2147483647, got 0',
      ],
      [
        { initialMs: 1.5 },
        'backoff.initialMs: must be a whole number of milliseconds from 1 to 2147483647, got 1.5',
      ],
      // Above Node's longest timer: a reconnect loop every millisecond, not every 35 days.
      [
        { maxMs: 3e9 },
        'backoff.maxMs: must be a whole number of milliseconds from 1 to 2147483647, got 3000000000',
      ],
      [
        { maxMs: Infinity },
        'backoff.maxMs: must be a whole number of milliseconds from 1 to 2147483647, got Infinity',
      ],
      [
        { urgentMaxMs: -1 },
        'backoff.urgentMaxMs: must be a whole number of milliseconds from 1 to 2147483647, got -1',
      ],
      [{ maxMs: 500, urgentMaxMs: 1000 }, 'backoff.urgentMaxMs: must be at most maxMs'],
      [{ initialMs: 100, maxMs: 50 }, 'backoff.maxMs: must be at least initialMs'],
      [{ multiplier: Number.NaN }, 'backoff.multiplier: must be a number from 1 to 10, got NaN'],
      [{ multiplier: 0.5 }, 'backoff.multiplier: must be a number from 1 to 10, got 0.5'],
      [{ multiplier: Infinity }, 'backoff.multiplier: must be a number from 1 to 10, got Infinity'],
    ];
    for (const [backoff, message] of bad) {
      const attempts: [string, () => unknown][] = [
        ['resolveBackoff', () => resolveBackoff(backoff)],
        ['WorkloadApiClient', () => new WorkloadApiClient({ address, backoff })],
        [
          'WorkloadApiIdentityProvider.create',
          () => WorkloadApiIdentityProvider.create({ address, backoff }),
        ],
      ];
      for (const [where, attempt] of attempts) {
        const err = await Promise.resolve()
          .then(attempt)
          .catch((e: unknown) => e);
        expect(err, `${where} ${JSON.stringify(backoff)}`).toBeInstanceOf(IdentityConfigError);
        expect(err).toMatchObject({ code: 'IDENTITY_CONFIG_INVALID' });
        expect((err as Error).message).toContain(message);
      }
    }
    expect(resolveBackoff({ initialMs: 1, maxMs: 2_147_483_647, multiplier: 10 }).maxMs).toBe(2_147_483_647);
  });

  it('is configurable and rejects nonsense', () => {
    const b = new ExponentialBackoff(resolveBackoff({ initialMs: 10, multiplier: 3, maxMs: 50 }), top);
    expect([b.next(), b.next(), b.next(), b.next()]).toEqual([10, 30, 50, 50]);
    // The urgent bound never exceeds maxMs.
    expect(resolveBackoff({ initialMs: 50, maxMs: 200 }).urgentMaxMs).toBe(200);
    expect(() => resolveBackoff({ initialMs: 0 })).toThrow();
    expect(() => resolveBackoff({ initialMs: 100, maxMs: 50 })).toThrow();
    expect(() => resolveBackoff({ maxMs: 500, urgentMaxMs: 1000 })).toThrow(/urgentMaxMs/);
    expect(() => resolveBackoff({ multiplier: 0.5 })).toThrow();
    expect(() => resolveBackoff({ stepMs: 5 } as never)).toThrow();
  });
});

describe('an X.509-SVID that does not verify against the bundle sent with it', () => {
  /**
   * A Workload API whose FetchX509SVID stream sends `good` and then, once
   * `next(svid)` is called, that SVID with `ca`'s bundle: what a buggy or
   * compromised agent could send as a rotation.
   */
  async function scripted(dir: string, ca: DevCertificateAuthority, good: X509Svid) {
    const streams: Array<grpc.ServerWritableStream<unknown, unknown>> = [];
    const response = (svid: X509Svid, bundleOf: DevCertificateAuthority, federated = {}) => {
      const der = svid.toDer();
      return {
        svids: [
          {
            spiffeId: svid.id.toString(),
            x509Svid: der.certChain,
            x509SvidKey: der.privateKey,
            bundle: bundleOf.x509Bundle.toDer(),
            hint: '',
          },
        ],
        crl: [],
        federatedBundles: federated,
      };
    };
    const path = join(dir, 'scripted.sock');
    const srv = await craftedWorkloadApi(path, {
      FetchX509SVID: (call: grpc.ServerWritableStream<unknown, unknown>) => {
        streams.push(call);
        call.write(response(good, ca));
      },
      FetchJWTBundles: (call: grpc.ServerWritableStream<unknown, unknown>) => {
        call.write({ bundles: {} });
      },
    });
    cleanups.push(() => srv.forceShutdown());
    return {
      address: `unix://${path}`,
      next: (svid: X509Svid, bundleOf: DevCertificateAuthority = ca, federated = {}) => {
        for (const s of streams) s.write(response(svid, bundleOf, federated));
      },
    };
  }

  it('is refused as WORKLOAD_API_BAD_RESPONSE and the last valid SVID stays (expired, not yet valid, another CA)', async () => {
    const dir = await stateDir();
    const ca = await DevCertificateAuthority.create({ trustDomain: TD });
    const other = await DevCertificateAuthority.create({ trustDomain: TD });
    const good = await ca.issueX509Svid(ID, { ttlSeconds: 3600 });
    const api = await scripted(dir, ca, good);
    const p = await provider(api.address);
    expect(serial(p)).toBe(good.certificates[0]!.serialNumber);
    const errors: Error[] = [];
    p.onError((e) => errors.push(e));
    const now = Date.now();
    const bad = {
      expired: await ca.issueX509Svid(ID, {
        notBefore: new Date(now - 7_200_000),
        notAfter: new Date(now - 3_600_000),
      }),
      'not yet valid': await ca.issueX509Svid(ID, {
        notBefore: new Date(now + 3_600_000),
        notAfter: new Date(now + 7_200_000),
      }),
    };
    for (const [what, svid] of Object.entries(bad)) {
      api.next(svid);
      await until(() => errors.length > 0);
      const err = errors.splice(0)[0] as WorkloadApiError;
      expect(err, what).toBeInstanceOf(WorkloadApiError);
      expect(err.code).toBe('WORKLOAD_API_BAD_RESPONSE');
      expect(err.message).toMatch(/does not verify against its bundle/);
      expect(serial(p), what).toBe(good.certificates[0]!.serialNumber);
    }
    // Chained to another CA than the bundle it came with.
    api.next(await other.issueX509Svid(ID), ca);
    await until(() => errors.length > 0);
    expect((errors[0] as WorkloadApiError).code).toBe('WORKLOAD_API_BAD_RESPONSE');
    expect(serial(p)).toBe(good.certificates[0]!.serialNumber);
    // The bundles of a message whose SVID is refused are still taken.
    const partner = await DevCertificateAuthority.create({ trustDomain: 'partner.test' });
    api.next(bad.expired, ca, { 'spiffe://partner.test': partner.x509Bundle.toDer() });
    await until(() => errors.length > 1);
    expect(serial(p)).toBe(good.certificates[0]!.serialNumber);
    await until(() => p.getBundleSet().getX509Bundle(TrustDomain.parse('partner.test')) !== undefined);
    // A valid rotation still goes through.
    const rotated = await ca.issueX509Svid(ID, { ttlSeconds: 3600 });
    api.next(rotated);
    await until(() => serial(p) === rotated.certificates[0]!.serialNumber);
  });
});
