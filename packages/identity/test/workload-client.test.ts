// The real Workload API client against the real dev server over Unix sockets.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  IdentityConfigError,
  JwtSource,
  JwtSvidError,
  SPIFFE_ENDPOINT_SOCKET,
  TrustDomain,
  WorkloadApiAddressError,
  WorkloadApiClient,
  WorkloadApiError,
  verifyX509Svid,
  type BundleSet,
} from '@weave/identity';
import { DevCertificateAuthority, DevWorkloadApiServer } from '@weave/identity/dev';
import { craftedWorkloadApi } from './helpers/crafted-api.js';
import { quietLogger } from './helpers/log.js';

const TD = 'client.test';
const FOREIGN = 'partner.test';
const FAST = { initialMs: 50, maxMs: 200 };
// Cancelled streams and reconnects are logged as warnings by design.
const logger = quietLogger();

describe('WorkloadApiClient against the dev server', () => {
  let dir: string;
  let server: DevWorkloadApiServer;
  let foreign: DevCertificateAuthority;
  const closers: (() => unknown)[] = [];
  const client = (name: string): WorkloadApiClient => {
    const c = new WorkloadApiClient({ address: server.address(name), backoff: FAST, logger });
    closers.push(() => c.close());
    return c;
  };

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'weave-wlc-'));
    server = await DevWorkloadApiServer.start({
      stateDir: dir,
      trustDomain: TD,
      workloads: {
        web: `spiffe://${TD}/web`,
        db: `spiffe://${TD}/db`,
        stranger: null,
        leaving: `spiffe://${TD}/leaving`,
      },
      jwtSvidTtlSeconds: 120,
    });
    foreign = await DevCertificateAuthority.create({ trustDomain: FOREIGN });
  });
  afterEach(async () => {
    for (const c of closers.splice(0)) await c();
  });
  afterAll(async () => {
    await server.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('fetches the first X.509-SVID with its trust bundle; the SVID verifies against it', async () => {
    const ctx = await client('web').fetchX509Context();
    expect(ctx.svids).toHaveLength(1);
    expect(ctx.defaultSvid.id.toString()).toBe(`spiffe://${TD}/web`);
    expect(ctx.bundles.trustDomains().map(String)).toEqual([TD]);
    expect(ctx.bundles.getX509Bundle(TrustDomain.parse(TD))?.equals(server.ca.x509Bundle)).toBe(true);
    expect(verifyX509Svid(ctx.defaultSvid.certificates, ctx.bundles).toString()).toBe(`spiffe://${TD}/web`);
    expect(ctx.defaultSvid.expiresAt.getTime()).toBeGreaterThan(Date.now());
  });

  it('reads the address from SPIFFE_ENDPOINT_SOCKET and rejects a missing or malformed one', async () => {
    const c = new WorkloadApiClient({ env: { [SPIFFE_ENDPOINT_SOCKET]: server.address('db') }, logger });
    closers.push(() => c.close());
    expect((await c.fetchX509Svid()).id.toString()).toBe(`spiffe://${TD}/db`);
    expect(() => new WorkloadApiClient({ env: {} })).toThrow(WorkloadApiAddressError);
    expect(() => new WorkloadApiClient({ address: 'unix://relative.sock' })).toThrow(WorkloadApiAddressError);
  });

  it('answers PERMISSION_DENIED to a workload without identity', async () => {
    const err = await client('stranger')
      .fetchX509Context()
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(WorkloadApiError);
    expect((err as WorkloadApiError).code).toBe('WORKLOAD_API_PERMISSION_DENIED');
    expect((err as WorkloadApiError).message).toContain('no identity issued');
  });

  it('fetches JWT-SVIDs and has the server validate them (ValidateJWTSVID)', async () => {
    const c = client('web');
    const svid = await c.fetchJwtSvid({ audience: ['orders', 'billing'] });
    expect(svid.id.toString()).toBe(`spiffe://${TD}/web`);
    expect(svid.audience).toEqual(['orders', 'billing']);
    const validated = await c.validateJwtSvid(svid.token, 'billing');
    expect(validated.id.toString()).toBe(`spiffe://${TD}/web`);
    expect(validated.claims['sub']).toBe(`spiffe://${TD}/web`);
    expect(validated.claims['aud']).toEqual(['orders', 'billing']);
    const wrong = await c.validateJwtSvid(svid.token, 'payroll').catch((e: unknown) => e);
    expect((wrong as WorkloadApiError).code).toBe('WORKLOAD_API_INVALID_ARGUMENT');
    const subjectMismatch = await c
      .fetchJwtSvid({ audience: 'orders', subject: `spiffe://${TD}/db` })
      .catch((e: unknown) => e);
    expect((subjectMismatch as WorkloadApiError).code).toBe('WORKLOAD_API_PERMISSION_DENIED');
    await expect(c.fetchJwtSvid({ audience: [] })).rejects.toMatchObject({
      code: 'WORKLOAD_API_INVALID_REQUEST',
    });
  });

  it('JwtSource caches per audience and validates against the watched JWT bundles', async () => {
    const source = await JwtSource.create({ address: server.address('db'), backoff: FAST, logger });
    closers.push(() => source.close());
    const a1 = await source.fetchJwtSvid({ audience: 'orders' });
    const a2 = await source.fetchJwtSvid({ audience: 'orders' });
    expect(a2.token).toBe(a1.token);
    const b = await source.fetchJwtSvid({ audience: 'billing' });
    expect(b.token).not.toBe(a1.token);
    expect(b.audience).toEqual(['billing']);

    // A token of another workload in the same trust domain validates locally.
    const webToken = (await client('web').fetchJwtSvid({ audience: 'db' })).token;
    expect((await source.validateJwtSvid(webToken, 'db')).id.toString()).toBe(`spiffe://${TD}/web`);
    await expect(source.validateJwtSvid(webToken, 'orders')).rejects.toMatchObject({
      code: 'JWT_SVID_AUDIENCE_MISMATCH',
    });
  });

  it('JwtSource refetches once the cached token is near expiry', async () => {
    const shortDir = await mkdtemp(join(tmpdir(), 'weave-wlc-short-'));
    const short = await DevWorkloadApiServer.start({
      stateDir: shortDir,
      trustDomain: TD,
      workloads: { w: `spiffe://${TD}/w` },
      jwtSvidTtlSeconds: 2,
    });
    closers.push(async () => {
      await short.close();
      await rm(shortDir, { recursive: true, force: true });
    });
    const source = await JwtSource.create({ address: short.address('w'), backoff: FAST, logger });
    closers.push(() => source.close());
    const first = await source.fetchJwtSvid({ audience: 'x' });
    // Half of a 2 to 3 s lifetime (exp is rounded up to the next second): after 1.5 s at most the cache must hand out a fresh token.
    await new Promise((r) => setTimeout(r, 1600));
    const second = await source.fetchJwtSvid({ audience: 'x' });
    expect(second.token).not.toBe(first.token);
    expect(second.expiresAt.getTime()).toBeGreaterThan(first.expiresAt.getTime());
  });

  it('a federated bundle added then removed reaches the bundle watches and JwtSource', async () => {
    const c = client('web');
    const x509Updates: BundleSet[] = [];
    const jwtUpdates: BundleSet[] = [];
    const wx = c.watchX509Bundles({ onUpdate: (s) => x509Updates.push(s) });
    const wj = c.watchJwtBundles({ onUpdate: (s) => jwtUpdates.push(s) });
    const source = await JwtSource.create({ address: server.address('db'), backoff: FAST, logger });
    closers.push(() => source.close());
    await until(() => x509Updates.length >= 1 && jwtUpdates.length >= 1);
    expect(x509Updates[0]!.trustDomains().map(String)).toEqual([TD]);

    const partnerToken = (await foreign.issueJwtSvid(`spiffe://${FOREIGN}/agent`, 'db')).token;
    await expect(source.validateJwtSvid(partnerToken, 'db')).rejects.toMatchObject({
      code: 'JWT_SVID_UNKNOWN_TRUST_DOMAIN',
    });

    server.setFederatedBundle(FOREIGN, { x509: foreign.x509Bundle, jwt: foreign.jwtBundle });
    await until(
      () =>
        x509Updates.length >= 2 &&
        jwtUpdates.length >= 2 &&
        !!source.getJwtBundle(TrustDomain.parse(FOREIGN)),
    );
    expect(x509Updates.at(-1)!.trustDomains().map(String)).toEqual([TD, FOREIGN].sort());
    expect(x509Updates.at(-1)!.getX509Bundle(TrustDomain.parse(FOREIGN))?.equals(foreign.x509Bundle)).toBe(
      true,
    );
    expect(jwtUpdates.at(-1)!.getJwtBundle(TrustDomain.parse(FOREIGN))).toBeDefined();
    expect((await source.validateJwtSvid(partnerToken, 'db')).id.toString()).toBe(
      `spiffe://${FOREIGN}/agent`,
    );
    const ctx = await c.fetchX509Context();
    expect(ctx.bundles.getX509Bundle(TrustDomain.parse(FOREIGN))?.equals(foreign.x509Bundle)).toBe(true);

    expect(server.removeFederatedBundle(FOREIGN)).toBe(true);
    await until(
      () =>
        x509Updates.length >= 3 && jwtUpdates.length >= 3 && !source.getJwtBundle(TrustDomain.parse(FOREIGN)),
    );
    expect(x509Updates.at(-1)!.trustDomains().map(String)).toEqual([TD]);
    expect(jwtUpdates.at(-1)!.trustDomains().map(String)).toEqual([TD]);
    const err = await source.validateJwtSvid(partnerToken, 'db').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(JwtSvidError);
    expect((err as JwtSvidError).code).toBe('JWT_SVID_UNKNOWN_TRUST_DOMAIN');
    wx.stop();
    wj.stop();
    expect(await wx.done).toBeUndefined();
  });

  it('a workload removed at run time is denied, and its open stream ends with PERMISSION_DENIED', async () => {
    const c = client('leaving');
    const errors: WorkloadApiError[] = [];
    let updates = 0;
    const w = c.watchX509Context({ onUpdate: () => updates++, onError: (e) => errors.push(e) });
    await until(() => updates === 1);
    server.removeWorkload('leaving');
    await until(() => errors.length >= 1);
    expect(errors[0]!.code).toBe('WORKLOAD_API_PERMISSION_DENIED');
    await expect(c.fetchX509Context()).rejects.toMatchObject({ code: 'WORKLOAD_API_PERMISSION_DENIED' });
    // Registered again on the same socket: the watch (still retrying) recovers by itself.
    await server.addWorkload('leaving', `spiffe://${TD}/leaving`);
    await until(() => updates === 2);
    w.stop();
  });

  it('refuses a per-call timeoutMs that is not a number of ms above 0 and at most 2147483647, before calling', async () => {
    const c = client('web');
    const calls: [string, (timeoutMs: number) => Promise<unknown>][] = [
      ['fetchX509Context', (timeoutMs) => c.fetchX509Context({ timeoutMs })],
      ['fetchJwtBundles', (timeoutMs) => c.fetchJwtBundles({ timeoutMs })],
      ['fetchJwtSvid', (timeoutMs) => c.fetchJwtSvid({ audience: 'orders' }, { timeoutMs })],
      ['validateJwtSvid', (timeoutMs) => c.validateJwtSvid('a.b.c', 'orders', { timeoutMs })],
    ];
    for (const [name, call] of calls) {
      for (const timeoutMs of [Number.NaN, -1, 0, Infinity, 2_147_483_648]) {
        const err = await call(timeoutMs).catch((e: unknown) => e);
        expect(err, `${name} timeoutMs ${timeoutMs}`).toBeInstanceOf(IdentityConfigError);
        expect(err).toMatchObject({ code: 'IDENTITY_CONFIG_INVALID' });
        expect((err as Error).message).toContain(
          `timeoutMs: must be a number of milliseconds above 0 and at most 2147483647, got ${timeoutMs}`,
        );
      }
    }
    // A good one still works, a fraction too (what is left of a deadline).
    expect((await c.fetchX509Svid({ timeoutMs: 5_000 })).id.toString()).toBe(`spiffe://${TD}/web`);
    expect((await c.fetchX509Svid({ timeoutMs: 4_999.5 })).id.toString()).toBe(`spiffe://${TD}/web`);
  });

  it('JwtSource refuses a bad readyTimeoutMs or refreshAtRemainingRatio with IdentityConfigError naming it', async () => {
    const address = server.address('db');
    for (const readyTimeoutMs of [Number.NaN, -1, 0, 1.5, 3e9]) {
      const err = await JwtSource.create({ address, logger, readyTimeoutMs }).catch((e: unknown) => e);
      expect(err, `readyTimeoutMs ${readyTimeoutMs}`).toBeInstanceOf(IdentityConfigError);
      expect(err).toMatchObject({ code: 'IDENTITY_CONFIG_INVALID' });
      expect((err as Error).message).toContain(
        `invalid JwtSource options: readyTimeoutMs: must be a whole number of milliseconds from 1 to 2147483647, got ${readyTimeoutMs}`,
      );
    }
    for (const refreshAtRemainingRatio of [Number.NaN, 0, 1, -0.5, 2]) {
      const err = await JwtSource.create({ address, logger, refreshAtRemainingRatio }).catch(
        (e: unknown) => e,
      );
      expect(err, `refreshAtRemainingRatio ${refreshAtRemainingRatio}`).toBeInstanceOf(IdentityConfigError);
      expect((err as Error).message).toContain(
        `refreshAtRemainingRatio: must be a number between 0 and 1 (both excluded), got ${refreshAtRemainingRatio}`,
      );
    }
    const err = await JwtSource.create({ address, logger, backoff: { maxMs: 3e9 } }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(IdentityConfigError);
    expect((err as Error).message).toContain('backoff.maxMs: must be a whole number of milliseconds');
    const source = await JwtSource.create({
      address,
      logger,
      backoff: FAST,
      readyTimeoutMs: 2_147_483_647,
      refreshAtRemainingRatio: 0.25,
    });
    closers.push(() => source.close());
    expect((await source.fetchJwtSvid({ audience: 'orders' })).id.toString()).toBe(`spiffe://${TD}/db`);
  });

  it('a closed client refuses calls', async () => {
    const c = client('web');
    c.close();
    await expect(c.fetchX509Context()).rejects.toMatchObject({ code: 'WORKLOAD_API_CLOSED' });
  });
});

async function until(cond: () => boolean, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not reached');
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('WorkloadApiClient rejects invalid responses', () => {
  // A gRPC server on a Unix socket speaking the published service, used to send
  // answers the dev server never would: the client must refuse each one.
  let dir: string;
  let srv: grpc.Server;
  let next: Record<string, unknown> = {};
  let ca: DevCertificateAuthority;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'weave-wlbad-'));
    ca = await DevCertificateAuthority.create({ trustDomain: 'bad.test' });
    srv = await craftedWorkloadApi(join(dir, 'bad.sock'), {
      FetchX509SVID: (call: grpc.ServerWritableStream<unknown, unknown>) => call.write(next),
    });
  });
  afterAll(async () => {
    srv.forceShutdown();
    await rm(dir, { recursive: true, force: true });
  });

  const fetchWith = async (msg: Record<string, unknown>): Promise<unknown> => {
    next = msg;
    const c = new WorkloadApiClient({ address: `unix://${join(dir, 'bad.sock')}`, logger });
    try {
      return await c.fetchX509Context().catch((e: unknown) => e);
    } finally {
      c.close();
    }
  };

  it('accepts a well-formed response (control)', async () => {
    const svid = await ca.issueX509Svid('spiffe://bad.test/w');
    const der = svid.toDer();
    const ok = await fetchWith({
      svids: [
        {
          spiffeId: 'spiffe://bad.test/w',
          x509Svid: der.certChain,
          x509SvidKey: der.privateKey,
          bundle: ca.x509Bundle.toDer(),
        },
      ],
    });
    expect(ok).not.toBeInstanceOf(Error);
  });

  it.each([
    ['no SVID', async () => ({ svids: [] }), /no SVID in the response/],
    [
      'a certificate that does not parse',
      async () => ({
        svids: [
          {
            spiffeId: 'spiffe://bad.test/w',
            x509Svid: Buffer.from('junk'),
            x509SvidKey: Buffer.from('k'),
            bundle: Buffer.from('b'),
          },
        ],
      }),
      /SVID chain cannot be parsed/,
    ],
    [
      'a spiffe_id that differs from the certificate',
      async () => {
        const der = (await ca.issueX509Svid('spiffe://bad.test/w')).toDer();
        return {
          svids: [
            {
              spiffeId: 'spiffe://bad.test/admin',
              x509Svid: der.certChain,
              x509SvidKey: der.privateKey,
              bundle: ca.x509Bundle.toDer(),
            },
          ],
        };
      },
      /does not match the certificate/,
    ],
    [
      'a key of another certificate',
      async () => {
        const a = (await ca.issueX509Svid('spiffe://bad.test/w')).toDer();
        const b = (await ca.issueX509Svid('spiffe://bad.test/w')).toDer();
        return {
          svids: [
            {
              spiffeId: 'spiffe://bad.test/w',
              x509Svid: a.certChain,
              x509SvidKey: b.privateKey,
              bundle: ca.x509Bundle.toDer(),
            },
          ],
        };
      },
      /does not match/,
    ],
    [
      'a federated bundle keyed by something other than a trust domain ID',
      async () => {
        const der = (await ca.issueX509Svid('spiffe://bad.test/w')).toDer();
        return {
          svids: [
            {
              spiffeId: 'spiffe://bad.test/w',
              x509Svid: der.certChain,
              x509SvidKey: der.privateKey,
              bundle: ca.x509Bundle.toDer(),
            },
          ],
          federatedBundles: { 'spiffe://other.test/path': ca.x509Bundle.toDer() },
        };
      },
      /is not a trust domain ID/,
    ],
  ])('refuses %s with WORKLOAD_API_BAD_RESPONSE', async (_what, make, reason) => {
    const err = await fetchWith(await make());
    expect(err).toBeInstanceOf(WorkloadApiError);
    expect((err as WorkloadApiError).code).toBe('WORKLOAD_API_BAD_RESPONSE');
    expect((err as WorkloadApiError).message).toMatch(reason);
  });

  it('an aborted fetch fails with WORKLOAD_API_CANCELLED', async () => {
    const c = new WorkloadApiClient({ address: `unix://${join(dir, 'bad.sock')}`, logger });
    try {
      await expect(c.fetchX509Context({ signal: AbortSignal.abort() })).rejects.toMatchObject({
        code: 'WORKLOAD_API_CANCELLED',
      });
    } finally {
      c.close();
    }
  });
});

describe('WorkloadApiClient watch backoff', () => {
  // A gRPC server on a Unix socket speaking the published service that drops
  // every stream with UNAVAILABLE, after one valid message or none: the
  // reconnect cadence shows that the delay grows on failures and resets once a
  // message arrived. Backoff 100 ms then x10 per failure (jittered into the
  // upper half of each step) makes the two cases far apart.
  const BACKOFF = { initialMs: 100, multiplier: 10, maxMs: 5000 };
  let dir: string;
  let srv: grpc.Server;
  let sendFirst = true;
  let message: Record<string, unknown> = {};

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'weave-wlbo-'));
    const ca = await DevCertificateAuthority.create({ trustDomain: 'backoff.test' });
    const der = (await ca.issueX509Svid('spiffe://backoff.test/w')).toDer();
    message = {
      svids: [
        {
          spiffeId: 'spiffe://backoff.test/w',
          x509Svid: der.certChain,
          x509SvidKey: der.privateKey,
          bundle: ca.x509Bundle.toDer(),
        },
      ],
    };
    srv = await craftedWorkloadApi(join(dir, 'flaky.sock'), {
      FetchX509SVID: (call: grpc.ServerWritableStream<unknown, unknown>) => {
        if (sendFirst) call.write(message);
        setTimeout(
          () => call.emit('error', { code: grpc.status.UNAVAILABLE, details: 'agent restarting' }),
          5,
        );
      },
    });
  });
  afterAll(async () => {
    srv.forceShutdown();
    await rm(dir, { recursive: true, force: true });
  });

  const watchFor = async (ms: number): Promise<{ updates: number; errors: WorkloadApiError[] }> => {
    const c = new WorkloadApiClient({
      address: `unix://${join(dir, 'flaky.sock')}`,
      backoff: BACKOFF,
      logger,
    });
    const errors: WorkloadApiError[] = [];
    let updates = 0;
    const w = c.watchX509Context({ onUpdate: () => updates++, onError: (e) => errors.push(e) });
    await new Promise((r) => setTimeout(r, ms));
    w.stop();
    c.close();
    expect(await w.done).toBeUndefined();
    return { updates, errors };
  };

  it('resets the delay after each message, so a flapping stream reconnects quickly', async () => {
    sendFirst = true;
    const { updates, errors } = await watchFor(1200);
    // Each cycle is 50-100 ms of backoff; without the reset the second wait alone would be 0.5-1 s.
    expect(updates).toBeGreaterThanOrEqual(5);
    expect(errors.every((e) => e.code === 'WORKLOAD_API_UNAVAILABLE')).toBe(true);
  });

  it('grows the delay exponentially while no message arrives', async () => {
    sendFirst = false;
    const { updates, errors } = await watchFor(1200);
    // Attempts at 0 ms, +50-100 ms, then +500-1000 ms: two or three failures in 1.2 s (constant
    // 100 ms retries would give about ten). Counted on the client: a call the
    // previous test left in flight may still reach the server.
    expect(updates).toBe(0);
    expect(errors.length).toBeGreaterThanOrEqual(2);
    expect(errors.length).toBeLessThanOrEqual(3);
    expect(errors.every((e) => e.code === 'WORKLOAD_API_UNAVAILABLE')).toBe(true);
  });
});

describe('WorkloadApiClient with no server', () => {
  it("names the connect error without grpc-js's empty resolution note", async () => {
    const dir = await mkdtemp(join(tmpdir(), 'weave-wlnone-'));
    const path = join(dir, 'none.sock');
    const c = new WorkloadApiClient({ address: `unix://${path}`, logger });
    try {
      const err = await c.fetchX509Context({ timeoutMs: 5000 }).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(WorkloadApiError);
      expect((err as WorkloadApiError).code).toBe('WORKLOAD_API_UNAVAILABLE');
      expect((err as WorkloadApiError).message).toBe(
        `FetchX509SVID failed: UNAVAILABLE: No connection established. Last error: Error: connect ENOENT ${path}`,
      );
    } finally {
      c.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('FetchJWTSVID answers that must not be taken', () => {
  /**
   * A Workload API serving `ca`'s JWT bundle, whose FetchJWTSVID answers by
   * `answer(call number, requested subject)`: a token, or nothing ever (a stall).
   */
  async function scripted(
    ca: DevCertificateAuthority,
    answer: (n: number, subject: string) => Promise<{ id: string; token: string } | 'stall'>,
  ) {
    const dir = await mkdtemp(join(tmpdir(), 'weave-jwt-'));
    const path = join(dir, 'api.sock');
    let calls = 0;
    const srv = await craftedWorkloadApi(path, {
      FetchJWTBundles: (call: grpc.ServerWritableStream<unknown, unknown>) => {
        call.write({ bundles: { [`spiffe://${TD}`]: Buffer.from(JSON.stringify(ca.jwtBundle.toJwks())) } });
      },
      FetchJWTSVID: (
        call: grpc.ServerUnaryCall<{ audience: string[]; spiffeId: string }, unknown>,
        cb: grpc.sendUnaryData<unknown>,
      ) => {
        void answer(++calls, call.request.spiffeId).then((a) => {
          if (a !== 'stall') cb(null, { svids: [{ spiffeId: a.id, svid: a.token, hint: '' }] });
        });
      },
    });
    return {
      address: `unix://${path}`,
      calls: () => calls,
      close: async () => {
        srv.forceShutdown();
        await rm(dir, { recursive: true, force: true });
      },
    };
  }

  it('JwtSource: a fetch that never answers fails at fetchTimeoutMs, and the next call for that audience fetches again', async () => {
    const ca = await DevCertificateAuthority.create({ trustDomain: TD });
    const me = `spiffe://${TD}/me`;
    const api = await scripted(ca, async (n) =>
      n === 1 ? 'stall' : { id: me, token: (await ca.issueJwtSvid(me, 'db')).token },
    );
    const source = await JwtSource.create({
      address: api.address,
      backoff: FAST,
      logger,
      fetchTimeoutMs: 300,
    });
    try {
      await expect(source.fetchJwtSvid({ audience: 'db' })).rejects.toMatchObject({
        code: 'WORKLOAD_API_DEADLINE_EXCEEDED',
      });
      const svid = await source.fetchJwtSvid({ audience: 'db' });
      expect(svid.id.toString()).toBe(me);
      expect(api.calls()).toBe(2);
    } finally {
      await source.close();
      await api.close();
    }
  });

  it('a JWT-SVID asked for one subject and answered for another is WORKLOAD_API_BAD_RESPONSE', async () => {
    const ca = await DevCertificateAuthority.create({ trustDomain: TD });
    const other = `spiffe://${TD}/zzz`;
    const api = await scripted(ca, async () => ({
      id: other,
      token: (await ca.issueJwtSvid(other, 'db')).token,
    }));
    const c = new WorkloadApiClient({ address: api.address, backoff: FAST, logger });
    try {
      const err = await c
        .fetchJwtSvid({ audience: 'db', subject: `spiffe://${TD}/me` })
        .catch((e: unknown) => e);
      expect(err).toBeInstanceOf(WorkloadApiError);
      expect((err as WorkloadApiError).code).toBe('WORKLOAD_API_BAD_RESPONSE');
      expect((err as Error).message).toMatch(/asked for a JWT-SVID of spiffe:\/\/client\.test\/me/);
      // Without a subject, the workload's first identity is whatever it is.
      expect((await c.fetchJwtSvid({ audience: 'db' })).id.toString()).toBe(other);
    } finally {
      c.close();
      await api.close();
    }
  });
});
