// The options objects of this package's methods refuse keys they do not know,
// as its constructors' and factories' do (options-strict.test.ts), with the
// same IdentityConfigError: a misspelt `now` verified a chain against the
// clock instead of the time asked for, a misspelt `timeoutMs` left a call
// without a deadline, without a word.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  IdentityConfigError,
  IdentityProviderBase,
  JwtSource,
  WorkloadApiClient,
  X509Svid,
  X509SvidError,
  verifyX509Svid,
  type FetchOptions,
  type IdentityProviderBaseOptions,
} from '@weave/identity';
import { DevCaError, DevCertificateAuthority, DevWorkloadApiServer } from '@weave/identity/dev';
import { quietLogger } from './helpers/log.js';

const TD = 'strict.test';
const ID = `spiffe://${TD}/agent/a`;
const quiet = quietLogger();

// The casts stand for what TypeScript cannot see: options built from JSON, a
// spread of another object, or plain JavaScript.
const loose = <T>(options: Record<string, unknown>): T => options as T;

/** What `fn` threw, or what it returned when it threw nothing (for the assertion to show). */
function thrown(fn: () => unknown): unknown {
  try {
    return fn();
  } catch (err) {
    return err;
  }
}

let ca: DevCertificateAuthority;
let svid: X509Svid;
let pem: { certChain: string; privateKey: string };

beforeAll(async () => {
  ca = await DevCertificateAuthority.create({ trustDomain: TD });
  // Valid for a minute: an hour from now it has expired.
  svid = await ca.issueX509Svid(ID, { ttlSeconds: 60 });
  pem = svid.toPem();
});

describe('verifyX509Svid', () => {
  const later = new Date(Date.now() + 3_600_000);

  it('checks at `now`: an hour from now the one-minute SVID has expired', () => {
    expect(verifyX509Svid(svid.certificates, ca.x509Bundle).toString()).toBe(ID);
    const err = thrown(() => verifyX509Svid(svid.certificates, ca.x509Bundle, { now: later }));
    expect(err).toBeInstanceOf(X509SvidError);
    expect(err).toMatchObject({ code: 'SVID_EXPIRED' });
  });

  it('refuses a misspelt `now` instead of checking against the clock', () => {
    const err = thrown(() =>
      verifyX509Svid(svid.certificates, ca.x509Bundle, loose<{ now?: Date }>({ at: later })),
    );
    expect(err).toBeInstanceOf(IdentityConfigError);
    expect(err).toMatchObject({
      code: 'IDENTITY_CONFIG_INVALID',
      message: 'invalid verifyX509Svid options: unknown key "at"',
    });
  });
});

describe('DevCertificateAuthority issue options', () => {
  it('issueX509Svid refuses a misspelt `ttlSeconds` instead of issuing for the default hour', async () => {
    const err = await ca.issueX509Svid(ID, loose<{ ttlSeconds?: number }>({ ttl: 60 })).then(
      (v) => v,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(DevCaError);
    expect(err).toMatchObject({
      code: 'DEV_CA_INVALID_OPTIONS',
      message: 'invalid DevCertificateAuthority.issueX509Svid options: unknown key "ttl"',
    });
  });

  it('issueJwtSvid refuses a misspelt `ttlSeconds` too; the known keys still issue', async () => {
    const err = await ca.issueJwtSvid(ID, 'db', loose<{ ttlSeconds?: number }>({ ttl: 60 })).then(
      (v) => v,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(DevCaError);
    expect(err).toMatchObject({
      code: 'DEV_CA_INVALID_OPTIONS',
      message: 'invalid DevCertificateAuthority.issueJwtSvid options: unknown key "ttl"',
    });
    const jwt = await ca.issueJwtSvid(ID, 'db', { ttlSeconds: 60 });
    expect(jwt.expiresAt.getTime() - Date.now()).toBeLessThanOrEqual(61_000);
    const x = await ca.issueX509Svid(ID, { ttlSeconds: 60, notBefore: new Date(Date.now() - 1000) });
    expect(x.expiresAt.getTime() - Date.now()).toBeLessThanOrEqual(60_000);
  });
});

describe('X509Svid.parse', () => {
  it('refuses an unknown key, naming it, instead of dropping it', () => {
    expect(X509Svid.parse(pem.certChain, pem.privateKey, { hint: 'internal' }).hint).toBe('internal');
    const err = thrown(() =>
      X509Svid.parse(pem.certChain, pem.privateKey, loose<{ hint?: string }>({ hnit: 'internal' })),
    );
    expect(err).toBeInstanceOf(IdentityConfigError);
    expect(err).toMatchObject({
      code: 'IDENTITY_CONFIG_INVALID',
      message: 'invalid X509Svid.parse options: unknown key "hnit"',
    });
  });
});

describe('Workload API fetch options', () => {
  let dir: string;
  let server: DevWorkloadApiServer;
  let client: WorkloadApiClient;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'weave-options-strict-methods-'));
    server = await DevWorkloadApiServer.start({
      stateDir: join(dir, 'state'),
      trustDomain: TD,
      workloads: { a: ID },
      logger: quiet,
    });
    client = new WorkloadApiClient({ address: server.address('a'), logger: quiet });
  });

  afterAll(async () => {
    client?.close();
    await server?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('a call with known options answers', async () => {
    expect((await client.fetchX509Svid({ timeoutMs: 5_000 })).id.toString()).toBe(ID);
  });

  it('fetchJwtSvid and fetchJwtSvids refuse a misspelt `subject` instead of fetching every identity’s token', async () => {
    expect((await client.fetchJwtSvid({ audience: 'db', subject: ID })).id.toString()).toBe(ID);
    type Params = Parameters<WorkloadApiClient['fetchJwtSvids']>[0];
    const cases: Array<[string, Params, string]> = [
      [
        'fetchJwtSvid',
        loose<Params>({ audience: 'db', subjet: ID }),
        'invalid Workload API JWT-SVID request options: unknown key "subjet"',
      ],
      [
        'fetchJwtSvids',
        loose<Params>({ audience: 'db', spiffeId: ID }),
        'invalid Workload API JWT-SVID request options: unknown key "spiffeId" (the identity asked for is "subject")',
      ],
    ];
    for (const [name, params, message] of cases) {
      const call = name === 'fetchJwtSvid' ? client.fetchJwtSvid(params) : client.fetchJwtSvids(params);
      const err = await call.then(
        (v) => v,
        (e: unknown) => e,
      );
      expect(err, name).toBeInstanceOf(IdentityConfigError);
      expect(err, name).toMatchObject({ code: 'IDENTITY_CONFIG_INVALID', message });
    }
  });

  it('JwtSource.fetchJwtSvid refuses a misspelt `subject` too, before its cache answers with the default identity’s token', async () => {
    const source = await JwtSource.create({ address: server.address('a'), logger: quiet });
    try {
      // Cached now: the misspelt request below would be answered from it.
      await source.fetchJwtSvid({ audience: 'db' });
      type Params = Parameters<JwtSource['fetchJwtSvid']>[0];
      const err = await source.fetchJwtSvid(loose<Params>({ audience: 'db', sub: ID })).then(
        (v) => v,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(IdentityConfigError);
      expect(err).toMatchObject({
        code: 'IDENTITY_CONFIG_INVALID',
        message:
          'invalid JwtSource JWT-SVID request options: unknown key "sub" (the identity asked for is "subject")',
      });
    } finally {
      await source.close();
    }
  });

  it('every fetch method refuses a misspelt `timeoutMs` before the call, instead of calling with no deadline', async () => {
    const options = loose<FetchOptions>({ timeout: 5_000 });
    const calls: Array<[string, () => Promise<unknown>]> = [
      ['fetchX509Context', () => client.fetchX509Context(options)],
      ['fetchX509Svid', () => client.fetchX509Svid(options)],
      ['fetchX509Bundles', () => client.fetchX509Bundles(options)],
      ['fetchJwtBundles', () => client.fetchJwtBundles(options)],
      ['fetchJwtSvid', () => client.fetchJwtSvid({ audience: 'db' }, options)],
      ['fetchJwtSvids', () => client.fetchJwtSvids({ audience: 'db' }, options)],
      ['validateJwtSvid', () => client.validateJwtSvid('a.b.c', 'db', options)],
    ];
    for (const [name, call] of calls) {
      const err = await call().then(
        (v) => v,
        (e: unknown) => e,
      );
      expect(err, name).toBeInstanceOf(IdentityConfigError);
      expect(err, name).toMatchObject({
        code: 'IDENTITY_CONFIG_INVALID',
        message: 'invalid Workload API call options: unknown key "timeout"',
      });
    }
  });
});

describe('IdentityProviderBase', () => {
  /** A provider whose constructor hands the base whatever it is given. */
  class Passing extends IdentityProviderBase {
    constructor(options?: IdentityProviderBaseOptions) {
      super(options);
    }
  }

  it('takes no options or `logger`, as the documented `super()` and `super({ logger })` pass', async () => {
    for (const p of [new Passing(), new Passing({ logger: quiet })]) {
      await p.close();
    }
  });

  it("refuses a misspelt `logger` and a subclass's own options passed whole", () => {
    for (const [options, key] of [
      [{ loger: quiet }, 'loger'],
      [{ logger: quiet, vault: 'https://vault.internal' }, 'vault'],
    ] as const) {
      const err = thrown(() => new Passing(loose<IdentityProviderBaseOptions>(options)));
      expect(err).toBeInstanceOf(IdentityConfigError);
      expect(err).toMatchObject({
        code: 'IDENTITY_CONFIG_INVALID',
        message: `invalid IdentityProviderBase options: unknown key "${key}"`,
      });
    }
  });
});
