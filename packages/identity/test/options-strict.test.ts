// Every options object a public constructor or factory of this package takes
// refuses keys it does not know, with the class's typed config error naming
// them: a misnamed option (`socket` for the Workload API's `address`) was
// dropped silently and its default used, here another workload's identity.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  IdentityConfigError,
  JwtSource,
  StaticMtlsProvider,
  SvidIdentityProvider,
  WorkloadApiClient,
  WorkloadApiIdentityProvider,
  type JwtSourceOptions,
  type StaticMtlsOptions,
  type SvidIdentityOptions,
  type WorkloadApiClientOptions,
  type WorkloadApiIdentityProviderOptions,
} from '@weave/identity';
import {
  DevCaError,
  DevCaIdentityProvider,
  DevCertificateAuthority,
  DevWorkloadApiServer,
  DevWorkloadApiServerError,
  type DevWorkloadApiServerOptions,
} from '@weave/identity/dev';
import { quietLogger } from './helpers/log.js';

const TD = 'demo.weave';
const ME = `spiffe://${TD}/user/me`;
const HELLO = `spiffe://${TD}/agent/hello`;
const SOCKET_HINT = '(the Workload API endpoint is "address")';
const quiet = quietLogger();

let dir: string;
let server: DevWorkloadApiServer;
/** What the stranger had: SPIFFE_ENDPOINT_SOCKET at their own socket, `socket` at the agent's. */
let env: Record<string, string>;
let helloAddress: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'weave-options-strict-'));
  server = await DevWorkloadApiServer.start({
    stateDir: join(dir, 'state'),
    trustDomain: TD,
    workloads: { hello: HELLO, me: ME },
    logger: quiet,
  });
  env = { SPIFFE_ENDPOINT_SOCKET: server.address('me') };
  helloAddress = server.address('hello');
});

afterAll(async () => {
  await server?.close();
  await rm(dir, { recursive: true, force: true });
});

/** Something the call under test made, when it wrongly accepted the options. */
interface Made {
  close(): unknown;
}

/** What `make` threw or rejected with; what it made instead is closed and returned, for the assertion to show. */
async function refusal(make: () => Made | Promise<Made>): Promise<unknown> {
  try {
    const made = await make();
    await made.close();
    return made;
  } catch (err) {
    return err;
  }
}

// The casts stand for what TypeScript cannot see: options built from JSON, a
// spread of another object, or plain JavaScript.
const loose = <T>(options: Record<string, unknown>): T => options as T;

describe('Workload API options', () => {
  it('WorkloadApiIdentityProvider.create refuses `socket`, saying the endpoint is `address`, instead of taking SPIFFE_ENDPOINT_SOCKET', async () => {
    const err = await refusal(() =>
      WorkloadApiIdentityProvider.create(
        loose<WorkloadApiIdentityProviderOptions>({ socket: helloAddress, env, logger: quiet }),
      ),
    );
    expect(err).toBeInstanceOf(IdentityConfigError);
    expect(err).toMatchObject({
      code: 'IDENTITY_CONFIG_INVALID',
      message: `invalid Workload API provider options: unknown key "socket" ${SOCKET_HINT}`,
    });
  });

  it('the same options with `address` give the identity asked for', async () => {
    const p = await WorkloadApiIdentityProvider.create({ address: helloAddress, env, logger: quiet });
    try {
      expect(p.id.toString()).toBe(HELLO);
    } finally {
      await p.close();
    }
  });

  it('WorkloadApiClient refuses `socket` before resolving an address', async () => {
    const err = await refusal(
      () =>
        new WorkloadApiClient(loose<WorkloadApiClientOptions>({ socket: helloAddress, env, logger: quiet })),
    );
    expect(err).toBeInstanceOf(IdentityConfigError);
    expect(err).toMatchObject({
      code: 'IDENTITY_CONFIG_INVALID',
      message: `invalid Workload API client options: unknown key "socket" ${SOCKET_HINT}`,
    });
    // With no SPIFFE_ENDPOINT_SOCKET either, the unknown key is named, not a missing address.
    expect(
      () => new WorkloadApiClient(loose<WorkloadApiClientOptions>({ socket: helloAddress, env: {} })),
    ).toThrow(`unknown key "socket" ${SOCKET_HINT}`);
  });

  it('JwtSource.create refuses `socket`', async () => {
    const err = await refusal(() =>
      JwtSource.create(loose<JwtSourceOptions>({ socket: helloAddress, env, logger: quiet })),
    );
    expect(err).toBeInstanceOf(IdentityConfigError);
    expect(err).toMatchObject({
      code: 'IDENTITY_CONFIG_INVALID',
      message: `invalid JwtSource options: unknown key "socket" ${SOCKET_HINT}`,
    });
  });

  it('names every unknown key, before an invalid value of a known one', async () => {
    const err = await refusal(() =>
      WorkloadApiIdentityProvider.create(
        loose<WorkloadApiIdentityProviderOptions>({
          address: helloAddress,
          readyTimeout: 100,
          spiffeID: HELLO,
          readyTimeoutMs: -1,
          logger: quiet,
        }),
      ),
    );
    expect(err).toBeInstanceOf(IdentityConfigError);
    expect((err as Error).message).toBe(
      'invalid Workload API provider options: unknown keys "readyTimeout", "spiffeID"',
    );
  });

  it('an unknown backoff option reads the same, under its path', () => {
    expect(() => new WorkloadApiClient({ address: helloAddress, backoff: loose({ initial: 5 }) })).toThrow(
      'invalid Workload API client options: backoff: unknown key "initial"',
    );
  });

  it('bounds the keys it repeats: five named, each cut, the rest counted', () => {
    const options: Record<string, unknown> = { address: helloAddress, ['k'.repeat(1000)]: 1 };
    for (let i = 0; i < 99; i++) options[`extra${i}`] = i;
    let err: unknown;
    try {
      new WorkloadApiClient(loose<WorkloadApiClientOptions>(options)).close();
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(IdentityConfigError);
    const message = (err as Error).message;
    expect(message).toMatch(/^invalid Workload API client options: unknown keys "k+… \(1000 characters\)", /);
    expect(message).toContain('"extra3" and 95 more');
    expect(message.length).toBeLessThan(300);
  });
});

describe('providers and the dev CA and server', () => {
  let ca: DevCertificateAuthority;
  let pem: { certChain: string; key: string; bundle: string };
  let files: Pick<StaticMtlsOptions, 'certFile' | 'keyFile' | 'bundleFile'>;

  beforeAll(async () => {
    ca = await DevCertificateAuthority.create({ trustDomain: TD });
    const { certChain, privateKey } = (await ca.issueX509Svid(ME, { ttlSeconds: 600 })).toPem();
    pem = { certChain, key: privateKey, bundle: ca.x509Bundle.toPem() };
    files = {
      certFile: join(dir, 'cert.pem'),
      keyFile: join(dir, 'key.pem'),
      bundleFile: join(dir, 'bundle.pem'),
    };
    await writeFile(files.certFile, pem.certChain);
    await writeFile(files.keyFile, pem.key);
    await writeFile(files.bundleFile, pem.bundle);
  });

  it('StaticMtlsProvider.create refuses an unknown key (a misspelt `watch`)', async () => {
    const err = await refusal(() =>
      StaticMtlsProvider.create(loose<StaticMtlsOptions>({ ...files, whatch: false, logger: quiet })),
    );
    expect(err).toBeInstanceOf(IdentityConfigError);
    expect(err).toMatchObject({
      code: 'IDENTITY_CONFIG_INVALID',
      message: 'invalid StaticMtlsProvider options: unknown key "whatch"',
    });
  });

  it('SvidIdentityProvider.create refuses an unknown key', async () => {
    const err = await refusal(() =>
      SvidIdentityProvider.create(
        loose<SvidIdentityOptions>({
          svid: { certChain: pem.certChain, key: pem.key },
          bundles: pem.bundle,
          federated: pem.bundle,
          logger: quiet,
        }),
      ),
    );
    expect(err).toBeInstanceOf(IdentityConfigError);
    expect(err).toMatchObject({
      code: 'IDENTITY_CONFIG_INVALID',
      message: 'invalid SvidIdentityProvider options: unknown key "federated"',
    });
  });

  it('DevCaIdentityProvider.create refuses an unknown key', async () => {
    const err = await refusal(() =>
      DevCaIdentityProvider.create(
        loose<Parameters<typeof DevCaIdentityProvider.create>[0]>({ ca, id: ME, ttl: 60, logger: quiet }),
      ),
    );
    expect(err).toBeInstanceOf(IdentityConfigError);
    expect(err).toMatchObject({
      code: 'IDENTITY_CONFIG_INVALID',
      message: 'invalid DevCaIdentityProvider options: unknown key "ttl"',
    });
  });

  it('DevCertificateAuthority.create refuses an unknown key with DEV_CA_INVALID_OPTIONS', async () => {
    const err = await refusal(async () => {
      await DevCertificateAuthority.create(
        loose<Parameters<typeof DevCertificateAuthority.create>[0]>({
          trustDomain: TD,
          directory: join(dir, 'ca'),
        }),
      );
      return { close: () => undefined };
    });
    expect(err).toBeInstanceOf(DevCaError);
    expect(err).toMatchObject({
      code: 'DEV_CA_INVALID_OPTIONS',
      message: 'invalid DevCertificateAuthority options: unknown key "directory"',
    });
  });

  it('DevWorkloadApiServer.start refuses an unknown key with DEV_WORKLOAD_API_INVALID_OPTIONS', async () => {
    const err = await refusal(() =>
      DevWorkloadApiServer.start(
        loose<DevWorkloadApiServerOptions>({
          stateDir: join(dir, 'state2'),
          trustDomain: TD,
          workloads: { hello: HELLO },
          socketDirectory: join(dir, 'sockets2'),
          logger: quiet,
        }),
      ),
    );
    expect(err).toBeInstanceOf(DevWorkloadApiServerError);
    expect(err).toMatchObject({
      code: 'DEV_WORKLOAD_API_INVALID_OPTIONS',
      message: 'invalid dev Workload API server options: unknown key "socketDirectory"',
    });
  });
});
