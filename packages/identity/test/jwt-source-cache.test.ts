// JwtSource's cache of its own JWT-SVIDs: a token whose signing key left its
// trust domain's JWT bundle (a JWT authority rotated out or revoked) is not
// handed out again, nor the old identity's token after the workload's
// identity changed; expired entries are dropped and the cache is bounded
// (4000 one-off audiences kept ~7.8 MB for good). Also the leeway JwtSource
// validates with, and the dev server's bounded JWT-SVID lifetime.
import { generateKeyPairSync } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import v8 from 'node:v8';
import vm from 'node:vm';
import { SignJWT, decodeProtectedHeader, type JWK } from 'jose';
import { afterEach, describe, expect, it } from 'vitest';
import { IdentityConfigError, JwtBundle, JwtSource, TrustDomain } from '@weave/identity';
import { DevWorkloadApiServer, DevWorkloadApiServerError } from '@weave/identity/dev';
import { quietLogger } from './helpers/log.js';

const TD = 'cache.test';
const ID = `spiffe://${TD}/svc/a`;
const FAST = { initialMs: 50, maxMs: 200 };
const logger = quietLogger();

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'weave-jwtc-'));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

async function until(cond: () => boolean | Promise<boolean>, timeoutMs = 5_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error('condition not reached');
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function devServer(
  stateDir: string,
  socketDir: string,
  opts: { id?: string; jwtSvidTtlSeconds?: number } = {},
): Promise<DevWorkloadApiServer> {
  const server = await DevWorkloadApiServer.start({
    stateDir,
    socketDir,
    trustDomain: TD,
    workloads: { a: opts.id ?? ID },
    ...(opts.jwtSvidTtlSeconds ? { jwtSvidTtlSeconds: opts.jwtSvidTtlSeconds } : {}),
    logger,
  });
  return server;
}

async function source(address: string, extra: Record<string, unknown> = {}): Promise<JwtSource> {
  const s = await JwtSource.create({ address, backoff: FAST, logger, ...extra });
  cleanups.push(() => s.close());
  return s;
}

const kidOf = (token: string): string => decodeProtectedHeader(token).kid as string;

describe('JwtSource cache', () => {
  it('drops a cached token once its key left the own JWT bundle (JWT authority replaced), and hands out one receivers take', async () => {
    const dir = await tempDir();
    const sockets = join(dir, 'sockets');
    let server = await devServer(join(dir, 'ca1'), sockets);
    cleanups.push(() => server.close());
    const src = await source(server.address('a'));
    const before = await src.fetchJwtSvid({ audience: 'api' });
    const oldKid = kidOf(before.token);
    const ownKids = (): string[] => [...(src.getJwtBundle(TrustDomain.parse(TD))?.keys.keys() ?? [])];
    expect(ownKids()).toEqual([oldKid]);

    // Another CA on the same socket: the old JWT key is gone from the bundle.
    await server.close();
    server = await devServer(join(dir, 'ca2'), sockets);
    await until(() => ownKids().length === 1 && !ownKids().includes(oldKid));

    const after = await src.fetchJwtSvid({ audience: 'api' });
    expect(after.token).not.toBe(before.token);
    expect(ownKids()).toContain(kidOf(after.token));
    expect((await src.validateJwtSvid(after.token, 'api')).id.toString()).toBe(ID);
    // And it is cached in its turn.
    expect((await src.fetchJwtSvid({ audience: 'api' })).token).toBe(after.token);
  });

  it("stops handing out the old identity's token once the workload's identity changed", async () => {
    const dir = await tempDir();
    const server = await devServer(join(dir, 'state'), join(dir, 'sockets'));
    cleanups.push(() => server.close());
    const src = await source(server.address('a'));
    expect((await src.fetchJwtSvid({ audience: 'api' })).id.toString()).toBe(ID);

    server.removeWorkload('a');
    await server.addWorkload('a', `spiffe://${TD}/svc/renamed`);
    // The token of svc/a is valid for 5 minutes (refresh at half): the cache must not wait for that.
    await until(async () => {
      const svid = await src.fetchJwtSvid({ audience: 'api' }).catch(() => undefined);
      return svid?.id.toString() === `spiffe://${TD}/svc/renamed`;
    });
  });

  it('holds at most maxCachedSvids tokens, the least recently used out', async () => {
    const dir = await tempDir();
    const server = await devServer(join(dir, 'state'), join(dir, 'sockets'));
    cleanups.push(() => server.close());
    const src = await source(server.address('a'), { maxCachedSvids: 2 });
    const a = await src.fetchJwtSvid({ audience: 'a' });
    const b = await src.fetchJwtSvid({ audience: 'b' });
    expect((await src.fetchJwtSvid({ audience: 'a' })).token).toBe(a.token); // a used last now
    await src.fetchJwtSvid({ audience: 'c' }); // b out
    expect((await src.fetchJwtSvid({ audience: 'a' })).token).toBe(a.token);
    const b2 = await src.fetchJwtSvid({ audience: 'b' }); // fetched again; c out
    expect(b2.token).not.toBe(b.token);
    expect((await src.fetchJwtSvid({ audience: 'a' })).token).toBe(a.token);
  });

  it('refuses a bad maxCachedSvids or leewaySeconds with IdentityConfigError naming it', async () => {
    const dir = await tempDir();
    const server = await devServer(join(dir, 'state'), join(dir, 'sockets'));
    cleanups.push(() => server.close());
    for (const [key, value, message] of [
      ['maxCachedSvids', 0, 'maxCachedSvids: must be a whole number from 1 to 100000, got 0'],
      ['maxCachedSvids', 1.5, 'maxCachedSvids: must be a whole number from 1 to 100000, got 1.5'],
      ['leewaySeconds', -1, 'leewaySeconds: must be a whole number of seconds from 0 to 300, got -1'],
      ['leewaySeconds', 3600, 'leewaySeconds: must be a whole number of seconds from 0 to 300, got 3600'],
    ] as const) {
      const err = await JwtSource.create({ address: server.address('a'), logger, [key]: value }).catch(
        (e: unknown) => e,
      );
      expect(err, `${key} ${value}`).toBeInstanceOf(IdentityConfigError);
      expect((err as Error).message).toBe(`invalid JwtSource options: ${message}`);
    }
  });

  it('lets go of a token once it is due for refresh, used or not', async () => {
    // A heap check through a WeakRef: the cache is private, what it holds is not.
    v8.setFlagsFromString('--expose-gc');
    const gc = vm.runInNewContext('gc') as () => void;
    const dir = await tempDir();
    const server = await devServer(join(dir, 'state'), join(dir, 'sockets'), { jwtSvidTtlSeconds: 1 });
    cleanups.push(() => server.close());
    const src = await source(server.address('a'));
    const refs: WeakRef<object>[] = [];
    for (let i = 0; i < 20; i++) refs.push(new WeakRef(await src.fetchJwtSvid({ audience: `one-off-${i}` })));
    // Lifetime 1-2 s, refreshed at half: all due within 1 s; swept at most a second later.
    await until(async () => {
      gc();
      await new Promise((r) => setTimeout(r, 0));
      return refs.every((r) => r.deref() === undefined);
    }, 6_000);
  });

  it('validates with the leewaySeconds it was created with (default 60 s, as go-spiffe)', async () => {
    const dir = await tempDir();
    const server = await devServer(join(dir, 'state'), join(dir, 'sockets'));
    cleanups.push(() => server.close());
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    server.setFederatedBundle('partner.test', {
      jwt: new JwtBundle('partner.test', { p1: publicKey.export({ format: 'jwk' }) as JWK }),
    });
    const now = Math.floor(Date.now() / 1000);
    const token = await new SignJWT({})
      .setProtectedHeader({ alg: 'ES256', kid: 'p1', typ: 'JWT' })
      .setSubject('spiffe://partner.test/p')
      .setAudience('api')
      .setIssuedAt(now - 330)
      .setExpirationTime(now - 30)
      .sign(privateKey);
    const lenient = await source(server.address('a'));
    const strict = await source(server.address('a'), { leewaySeconds: 0 });
    await until(() => !!strict.getJwtBundle(TrustDomain.parse('partner.test')));
    await until(() => !!lenient.getJwtBundle(TrustDomain.parse('partner.test')));
    expect((await lenient.validateJwtSvid(token, 'api')).id.toString()).toBe('spiffe://partner.test/p');
    await expect(strict.validateJwtSvid(token, 'api')).rejects.toMatchObject({ code: 'JWT_SVID_EXPIRED' });
  });
});

describe('DevWorkloadApiServer jwtSvidTtlSeconds', () => {
  it('refuses a lifetime that is not a whole number of seconds from 1 to 30 days', async () => {
    const dir = await tempDir();
    for (const jwtSvidTtlSeconds of [0, 1.5, 2_592_001, 3.6e13]) {
      const err = await DevWorkloadApiServer.start({
        stateDir: join(dir, 'state'),
        trustDomain: TD,
        workloads: { a: ID },
        jwtSvidTtlSeconds,
        logger,
      }).then(
        async (s) => {
          await s.close();
          return s;
        },
        (e: unknown) => e,
      );
      expect(err, `jwtSvidTtlSeconds ${jwtSvidTtlSeconds}`).toBeInstanceOf(DevWorkloadApiServerError);
      expect(err).toMatchObject({
        code: 'DEV_WORKLOAD_API_INVALID_OPTIONS',
        message: `invalid dev Workload API server options: jwtSvidTtlSeconds: must be a whole number of seconds from 1 to 2592000 (30 days), got ${jwtSvidTtlSeconds}`,
      });
    }
  });
});
