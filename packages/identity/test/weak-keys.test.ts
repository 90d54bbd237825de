// Keys too weak for an SVID or an authority are refused wherever identity
// enters: X509Svid.parse (through which the Workload API client, the identity
// files and the dev CA all pass), verifyX509Svid (peers), the X.509 and JWT
// bundles, and the providers on top of them, which keep their last valid state.
// Accepted: RSA of 2048 to 16384 bits with an exponent below 2^31, EC on P-256, P-384 or P-521.
import {
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  webcrypto,
  type KeyObject,
} from 'node:crypto';
import { mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createSecureContext } from 'node:tls';
import type * as grpc from '@grpc/grpc-js';
import type { JWK } from 'jose';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  BundleError,
  BundleSet,
  IdentityConfigError,
  JwtBundle,
  SpiffeBundle,
  StaticMtlsProvider,
  TrustDomain,
  WorkloadApiError,
  WorkloadApiIdentityProvider,
  X509Bundle,
  X509Svid,
  X509SvidError,
  verifyX509Svid,
  type WorkloadIdentityError,
} from '@weave/identity';
import { callSpiffeTls, startSpiffeTlsServer, type TlsMaterial } from '@weave/test-support/spiffe-tls';
import { craftedWorkloadApi } from './helpers/crafted-api.js';
import { keyWeakness } from '../src/x509-util.js';
import { KU, makeCert, makeRoot, x509, type TestCa } from './helpers/forge.js';
import { quietLogger } from './helpers/log.js';

const TD = 'weak.test';
const ID = `spiffe://${TD}/workload`;

type Kind =
  | 'rsa-512'
  | 'rsa-1024'
  | 'rsa-2048'
  | 'rsa-4096'
  | 'ec-p256'
  | 'ec-p384'
  | 'ec-p521'
  | 'ec-secp256k1'
  | 'ed25519'
  /** RSA-2048 whose public exponent is 100 KB long (the private key is the original's). */
  | 'rsa-huge-exponent';

const keyCache = new Map<Kind, { publicKey: KeyObject; privateKey: KeyObject }>();

/** A key pair of `kind`, made with node:crypto (once per kind: RSA-4096 takes a while). */
function keys(kind: Kind): { publicKey: KeyObject; privateKey: KeyObject } {
  let k = keyCache.get(kind);
  if (!k) {
    const [type, size] = kind.split('-') as [string, string];
    k =
      kind === 'rsa-huge-exponent'
        ? hugeExponent(keys('rsa-2048'))
        : type === 'rsa'
          ? generateKeyPairSync('rsa', { modulusLength: Number(size) })
          : type === 'ec'
            ? generateKeyPairSync('ec', {
                namedCurve: { p256: 'P-256', p384: 'P-384', p521: 'P-521' }[size] ?? size,
              })
            : generateKeyPairSync('ed25519');
    keyCache.set(kind, k);
  }
  return k;
}

function hugeExponent(k: { publicKey: KeyObject; privateKey: KeyObject }): {
  publicKey: KeyObject;
  privateKey: KeyObject;
} {
  const e = Buffer.alloc(100 * 1024, 0xff).toString('base64url');
  const publicKey = createPublicKey({ key: { ...k.publicKey.export({ format: 'jwk' }), e }, format: 'jwk' });
  return { publicKey, privateKey: k.privateKey };
}

const jwk = (kind: Kind, kid: string): JWK => ({
  ...(keys(kind).publicKey.export({ format: 'jwk' }) as JWK),
  kid,
});

const spki = (k: KeyObject): Uint8Array => new Uint8Array(k.export({ format: 'der', type: 'spki' }));
const pkcs8Pem = (k: KeyObject): string => k.export({ format: 'pem', type: 'pkcs8' }).toString();

let serial = 0x5000;

/**
 * A SPIRE-shaped certificate for `kind`'s public key, signed by `issuer`
 * (forge's makeCert makes its own P-256 key; this one takes any key).
 * A CA when `ca`, a leaf of `uri` otherwise.
 */
async function certFor(
  issuer: TestCa,
  kind: Kind,
  opts: { uri?: string; ca?: boolean } = {},
): Promise<{ cert: x509.X509Certificate; der: Uint8Array; keyPem: string }> {
  const k = keys(kind);
  const pub = spki(k.publicKey);
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: (serial++).toString(16),
    subject: opts.ca ? `CN=${kind} intermediate` : `O=${kind}`,
    issuer: issuer.cert.subjectName,
    notBefore: new Date(Date.now() - 10_000),
    notAfter: new Date(Date.now() + 3600_000),
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
    publicKey: pub,
    signingKey: issuer.keys.privateKey,
    extensions: [
      new x509.BasicConstraintsExtension(opts.ca ?? false, undefined, true),
      new x509.KeyUsagesExtension(
        opts.ca ? KU.keyCertSign | KU.cRLSign : KU.digitalSignature | KU.keyEncipherment,
        true,
      ),
      ...(opts.ca
        ? []
        : [
            new x509.ExtendedKeyUsageExtension([
              x509.ExtendedKeyUsage.serverAuth,
              x509.ExtendedKeyUsage.clientAuth,
            ]),
          ]),
      new x509.SubjectAlternativeNameExtension([{ type: 'url', value: opts.uri ?? `spiffe://${TD}` }]),
      await x509.SubjectKeyIdentifierExtension.create(pub),
      await x509.AuthorityKeyIdentifierExtension.create(issuer.keys.publicKey),
    ],
  });
  return { cert, der: new Uint8Array(cert.rawData), keyPem: pkcs8Pem(k.privateKey) };
}

/** An RSA-1024 intermediate CA that can sign (WebCrypto takes the short key). */
async function weakIntermediate(root: TestCa): Promise<TestCa> {
  const { cert } = await certFor(root, 'rsa-1024', { ca: true });
  const alg = { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' };
  const k = keys('rsa-1024');
  const privateKey = await webcrypto.subtle.importKey(
    'pkcs8',
    k.privateKey.export({ format: 'der', type: 'pkcs8' }),
    alg,
    false,
    ['sign'],
  );
  const publicKey = await webcrypto.subtle.importKey('spki', spki(k.publicKey), alg, true, ['verify']);
  return { cert, keys: { privateKey, publicKey } };
}

function caught(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  return undefined;
}

function expectCode(err: unknown, type: new (...a: never[]) => Error, code: string, message: RegExp): void {
  expect(err).toBeInstanceOf(type);
  expect((err as { code: string }).code).toBe(code);
  expect((err as Error).message).toMatch(message);
}

const WEAK: [Kind, RegExp][] = [
  ['rsa-1024', /an RSA key of 1024 bits/],
  ['ec-secp256k1', /an EC key on curve secp256k1/],
  ['ed25519', /a key of type ed25519/],
];
const STRONG: Kind[] = ['ec-p256', 'ec-p384', 'rsa-2048', 'rsa-4096', 'ec-p521'];

let root: TestCa;
beforeAll(async () => {
  root = await makeRoot(TD);
});

describe('X.509-SVID keys', () => {
  it.each(STRONG)('takes a %s leaf (what SPIRE issues, and P-521), own and a peer’s', async (kind) => {
    const leaf = await certFor(root, kind, { uri: ID });
    expect(X509Svid.parse([leaf.der], leaf.keyPem).id.toString()).toBe(ID);
    const bundles = BundleSet.of(new X509Bundle(TD, [root.cert]));
    expect(verifyX509Svid([leaf.der], bundles).toString()).toBe(ID);
  });

  it.each(WEAK)('refuses a %s leaf with SVID_WEAK_KEY, own and a peer’s', async (kind, message) => {
    const leaf = await certFor(root, kind, { uri: ID });
    expectCode(
      caught(() => X509Svid.parse([leaf.der], leaf.keyPem)),
      X509SvidError,
      'SVID_WEAK_KEY',
      message,
    );
    const bundles = BundleSet.of(new X509Bundle(TD, [root.cert]));
    // Both readings of a peer's leaf: the DER walk and @peculiar/x509's.
    for (const presented of [leaf.der, leaf.cert]) {
      expectCode(
        caught(() => verifyX509Svid([presented], bundles)),
        X509SvidError,
        'SVID_WEAK_KEY',
        message,
      );
    }
  });

  it('refuses a chain through an RSA-1024 intermediate, own and a peer’s', async () => {
    const mid = await weakIntermediate(root);
    const leaf = await makeCert(mid, { uris: [ID] });
    const chain = [leaf.der, new Uint8Array(mid.cert.rawData)];
    expectCode(
      caught(() => X509Svid.parse(chain, leaf.keyPem)),
      X509SvidError,
      'SVID_WEAK_KEY',
      /signing certificate CN=rsa-1024 intermediate has an RSA key of 1024 bits/,
    );
    expectCode(
      caught(() => verifyX509Svid(chain, BundleSet.of(new X509Bundle(TD, [root.cert])))),
      X509SvidError,
      'SVID_WEAK_KEY',
      /intermediate certificate CN=rsa-1024 intermediate has an RSA key of 1024 bits/,
    );
  });

  it('refuses a leaf whose RSA exponent is 100 KB before its path is checked (it cost 1.5 s, 55 s at 200 KB, before any refusal), from any issuer', async () => {
    const rogue = await makeRoot(TD, { name: 'CN=rogue root' });
    const leaf = await certFor(rogue, 'rsa-huge-exponent', { uri: ID });
    expectCode(
      caught(() => verifyX509Svid([leaf.der], BundleSet.of(new X509Bundle(TD, [root.cert])))),
      X509SvidError,
      'SVID_WEAK_KEY',
      /leaf certificate of spiffe:\/\/weak\.test\/workload has an RSA key whose public exponent has 819200 bits/,
    );
  });

  it('a peer with an RSA-1024 SVID is refused over real mTLS, by the SPIFFE check where Node’s TLS accepts the key; the handler does not run', async () => {
    const material = (l: { keyPem: string; cert: x509.X509Certificate }): TlsMaterial => ({
      key: l.keyPem,
      cert: l.cert.toString('pem'),
    });
    const trust = { ca: root.cert.toString('pem'), bundles: BundleSet.of(new X509Bundle(TD, [root.cert])) };
    const serverId = `spiffe://${TD}/server`;
    const server = await startSpiffeTlsServer(material(await makeCert(root, { uris: [serverId] })), trust);
    try {
      const weak = await certFor(root, 'rsa-1024', { uri: ID });
      const out = await callSpiffeTls(server.port, material(weak), trust, serverId).catch(
        (err: Error) => `refused: ${err.message}`,
      );
      // Node 24's OpenSSL (security level 2) will not even load a 1024-bit RSA
      // key ("ee key too small"), so its TLS refuses the peer before the SPIFFE
      // check; Node 20 and 22 take it, and the check must refuse it.
      const tlsRefuses = (() => {
        try {
          createSecureContext(material(weak));
          return false;
        } catch {
          return true;
        }
      })();
      expect(out.startsWith('hello')).toBe(false);
      expect(server.refused).toEqual(tlsRefuses ? [] : ['SVID_WEAK_KEY']);
      expect(server.handled).toEqual([]);
    } finally {
      await server.close();
    }
  });
});

describe('bundle keys', () => {
  it('takes X.509 and JWT authorities with the accepted keys', async () => {
    const authorities = await Promise.all(STRONG.map((k) => certFor(root, k, { ca: true })));
    const pem = authorities.map((a) => a.cert.toString('pem')).join('\n');
    expect(X509Bundle.fromPem(TD, pem).authorities).toHaveLength(STRONG.length);
    const jwks = { keys: STRONG.map((k) => jwk(k, k)) };
    expect([...JwtBundle.fromJwks(TD, JSON.stringify(jwks)).keys.keys()]).toEqual(STRONG);
  });

  it.each(WEAK)(
    'refuses an X.509 bundle holding a %s authority with BUNDLE_WEAK_KEY',
    async (kind, message) => {
      const weak = await certFor(root, kind, { ca: true });
      const pem = [root.cert, weak.cert].map((c) => c.toString('pem')).join('\n');
      expectCode(
        caught(() => X509Bundle.fromPem(TD, pem)),
        BundleError,
        'BUNDLE_WEAK_KEY',
        message,
      );
      expectCode(
        caught(() => new X509Bundle(TD, [root.cert, weak.cert])),
        BundleError,
        'BUNDLE_WEAK_KEY',
        message,
      );
    },
  );

  it.each<[Kind, RegExp]>([
    ['rsa-512', /an RSA key of 512 bits/],
    ['rsa-1024', /an RSA key of 1024 bits/],
    ['ec-secp256k1', /an EC key on curve secp256k1/],
  ])('refuses a JWT bundle holding a %s key with BUNDLE_WEAK_KEY', (kind, message) => {
    const jwks = JSON.stringify({ keys: [jwk('ec-p256', 'good'), jwk(kind, 'weak')] });
    expectCode(
      caught(() => JwtBundle.fromJwks(TD, jwks)),
      BundleError,
      'BUNDLE_WEAK_KEY',
      message,
    );
    expectCode(
      caught(() => new JwtBundle(TD, { weak: jwk(kind, 'weak') })),
      BundleError,
      'BUNDLE_WEAK_KEY',
      message,
    );
  });

  it('refuses an RSA JWT key with a huge exponent or modulus with BUNDLE_WEAK_KEY (it was taken, after 1.5 s of reading a 100 KB exponent)', () => {
    const good = keys('rsa-2048').publicKey.export({ format: 'jwk' }) as JWK;
    // A valid odd exponent of 100 KB, and a modulus of 17 408 bits (past OpenSSL's 16 384).
    const e = Buffer.alloc(100 * 1024, 0xff);
    const n = Buffer.alloc(2176, 0xff);
    for (const [label, key, message] of [
      ['e of 100 KB', { ...good, e: e.toString('base64url') }, /public exponent has 819200 bits/],
      [
        'e of 2^31',
        { ...good, e: Buffer.from([0x80, 0, 0, 0]).toString('base64url') },
        /public exponent has 32 bits/,
      ],
      ['n of 17 408 bits', { ...good, n: n.toString('base64url') }, /an RSA key of 17408 bits/],
    ] as const) {
      const err = caught(() => new JwtBundle(TD, { [label]: { ...key, kid: label } }));
      expectCode(err, BundleError, 'BUNDLE_WEAK_KEY', message);
    }
    // The accepted extremes: e = 2^31 - 1 and 3, a modulus of 16 384 bits.
    for (const [label, key] of [
      ['e = 2^31 - 1', { ...good, e: Buffer.from([0x7f, 0xff, 0xff, 0xff]).toString('base64url') }],
      ['e = 3', { ...good, e: Buffer.from([3]).toString('base64url') }],
      ['n of 16 384 bits', { ...good, n: Buffer.alloc(2048, 0xff).toString('base64url') }],
    ] as const) {
      expect(new JwtBundle(TD, { [label]: { ...key, kid: label } }).keys.size, label).toBe(1);
    }
  });

  it('reads the size of an RSA-PSS key as of an RSA one', () => {
    const pss = generateKeyPairSync('rsa-pss', { modulusLength: 1024 }).publicKey;
    expect(keyWeakness(pss)).toMatch(/an RSA key of 1024 bits/);
    expect(keyWeakness(generateKeyPairSync('rsa-pss', { modulusLength: 2048 }).publicKey)).toBeUndefined();
  });

  it('refuses a SPIFFE bundle whose X.509 or JWT authority is weak', async () => {
    const weak = await certFor(root, 'rsa-1024', { ca: true });
    const x509Entry = {
      ...(keys('rsa-1024').publicKey.export({ format: 'jwk' }) as JWK),
      use: 'x509-svid',
      x5c: [Buffer.from(weak.der).toString('base64')],
    };
    expectCode(
      caught(() => SpiffeBundle.parse(TD, { keys: [x509Entry] })),
      BundleError,
      'BUNDLE_WEAK_KEY',
      /authority CN=rsa-1024 intermediate has an RSA key of 1024 bits/,
    );
    const jwtEntry = { ...jwk('rsa-512', 'weak'), use: 'jwt-svid' };
    expectCode(
      caught(() => SpiffeBundle.parse(TD, { keys: [jwtEntry] })),
      BundleError,
      'BUNDLE_WEAK_KEY',
      /an RSA key of 512 bits/,
    );
  });
});

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'weave-weak-'));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

async function until(cond: () => boolean, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not reached');
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('a Workload API that sends weak keys (hostile or misconfigured)', () => {
  interface Sent {
    leaf: { der: Uint8Array; keyPem: string };
    authorities?: x509.X509Certificate[];
  }

  /** A gRPC Workload API whose streams send `first` and `firstJwks`, then what `next*` is given. */
  async function scripted(dir: string, first: Sent, firstJwks: object) {
    const x509Streams: grpc.ServerWritableStream<unknown, unknown>[] = [];
    const jwtStreams: grpc.ServerWritableStream<unknown, unknown>[] = [];
    const x509Message = (s: Sent) => ({
      svids: [
        {
          spiffeId: ID,
          x509Svid: s.leaf.der,
          x509SvidKey: createPrivateKey(s.leaf.keyPem).export({ format: 'der', type: 'pkcs8' }),
          bundle: Buffer.concat((s.authorities ?? [root.cert]).map((c) => Buffer.from(c.rawData))),
          hint: '',
        },
      ],
      crl: [],
      federatedBundles: {},
    });
    const jwtMessage = (jwks: object) => ({
      bundles: { [`spiffe://${TD}`]: Buffer.from(JSON.stringify(jwks)) },
    });
    const path = join(dir, 'weak.sock');
    const srv = await craftedWorkloadApi(path, {
      FetchX509SVID: (call: grpc.ServerWritableStream<unknown, unknown>) => {
        x509Streams.push(call);
        call.write(x509Message(first));
      },
      FetchJWTBundles: (call: grpc.ServerWritableStream<unknown, unknown>) => {
        jwtStreams.push(call);
        call.write(jwtMessage(firstJwks));
      },
    });
    cleanups.push(() => srv.forceShutdown());
    return {
      address: `unix://${path}`,
      nextX509: (s: Sent) => x509Streams.forEach((c) => c.write(x509Message(s))),
      nextJwks: (jwks: object) => jwtStreams.forEach((c) => c.write(jwtMessage(jwks))),
    };
  }

  it('refuses an RSA-1024 SVID, an RSA-1024 authority and an RSA-512 JWT key as WORKLOAD_API_BAD_RESPONSE; the last valid state stays', async () => {
    const td = TrustDomain.parse(TD);
    const good = await makeCert(root, { uris: [ID] });
    const api = await scripted(await tempDir(), { leaf: good }, { keys: [jwk('ec-p256', 'jwt-1')] });
    const p = await WorkloadApiIdentityProvider.create({
      address: api.address,
      backoff: { initialMs: 50, maxMs: 200 },
      logger: quietLogger(),
    });
    cleanups.push(() => p.close());
    const serialNow = (): string => p.getX509Svid().certificates[0]!.serialNumber;
    expect(serialNow()).toBe(good.cert.serialNumber);
    await until(() => p.getBundleSet().getJwtBundle(td) !== undefined);
    const jwtBefore = p.getBundleSet().getJwtBundle(td);
    const errors: WorkloadIdentityError[] = [];
    p.onError((e) => errors.push(e));
    const nextError = async (): Promise<WorkloadIdentityError> => {
      await until(() => errors.length > 0);
      return errors.shift()!;
    };

    api.nextX509({ leaf: await certFor(root, 'rsa-1024', { uri: ID }) });
    expectCode(
      await nextError(),
      WorkloadApiError,
      'WORKLOAD_API_BAD_RESPONSE',
      /leaf certificate of spiffe:\/\/weak.test\/workload has an RSA key of 1024 bits/,
    );
    expect(serialNow()).toBe(good.cert.serialNumber);

    // A valid SVID whose bundle also holds a weak authority: the message is refused whole.
    const rotated = await makeCert(root, { uris: [ID] });
    const weakCa = await certFor(root, 'rsa-1024', { ca: true });
    api.nextX509({ leaf: rotated, authorities: [root.cert, weakCa.cert] });
    expectCode(
      await nextError(),
      WorkloadApiError,
      'WORKLOAD_API_BAD_RESPONSE',
      /authority CN=rsa-1024 intermediate has an RSA key of 1024 bits/,
    );
    expect(serialNow()).toBe(good.cert.serialNumber);
    expect(p.getX509Bundle(td)?.authorities.map((c) => c.serialNumber)).toEqual([root.cert.serialNumber]);

    api.nextJwks({ keys: [jwk('ec-p256', 'jwt-1'), jwk('rsa-512', 'jwt-weak')] });
    expectCode(await nextError(), WorkloadApiError, 'WORKLOAD_API_BAD_RESPONSE', /an RSA key of 512 bits/);
    expect(p.getBundleSet().getJwtBundle(td)).toBe(jwtBefore);
    expect([...p.getBundleSet().getJwtBundle(td)!.keys.keys()]).toEqual(['jwt-1']);

    // A valid rotation still goes through.
    api.nextX509({ leaf: rotated });
    await until(() => serialNow() === rotated.cert.serialNumber);
    expect(errors).toEqual([]);
  });
});

describe('identity files with weak keys', () => {
  it('an RSA-1024 SVID refuses the start; a reload to a weak bundle or SVID is refused and the last good identity stays', async () => {
    const dir = await tempDir();
    const files = {
      certFile: join(dir, 'svid.pem'),
      keyFile: join(dir, 'svid-key.pem'),
      bundleFile: join(dir, 'bundle.pem'),
    };
    // Written aside, then renamed over, as tools do.
    const put = async (path: string, text: string): Promise<void> => {
      await writeFile(`${path}.tmp`, text);
      await rename(`${path}.tmp`, path);
    };
    const putSvid = async (l: { cert: x509.X509Certificate; keyPem: string }): Promise<void> => {
      await put(files.certFile, l.cert.toString('pem'));
      await put(files.keyFile, l.keyPem);
    };
    const weakLeaf = await certFor(root, 'rsa-1024', { uri: ID });
    await putSvid(weakLeaf);
    await put(files.bundleFile, root.cert.toString('pem'));
    const err = await StaticMtlsProvider.create({ ...files, watch: false }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(IdentityConfigError);
    expectCode((err as Error).cause, X509SvidError, 'SVID_WEAK_KEY', /an RSA key of 1024 bits/);

    const good = await makeCert(root, { uris: [ID] });
    await putSvid(good);
    const p = await StaticMtlsProvider.create({ ...files, watch: false, logger: quietLogger() });
    cleanups.push(() => p.close());

    const weakCa = await certFor(root, 'rsa-1024', { ca: true });
    await put(files.bundleFile, [root.cert, weakCa.cert].map((c) => c.toString('pem')).join('\n'));
    expect(await p.reload()).toBe(false);
    expectCode(p.lastReloadError, BundleError, 'BUNDLE_WEAK_KEY', /an RSA key of 1024 bits/);

    await put(files.bundleFile, root.cert.toString('pem'));
    await putSvid(weakLeaf);
    expect(await p.reload()).toBe(false);
    expectCode(p.lastReloadError, X509SvidError, 'SVID_WEAK_KEY', /an RSA key of 1024 bits/);

    expect(p.getX509Svid().certificates[0]!.serialNumber).toBe(good.cert.serialNumber);
    expect(p.getX509Bundle(TrustDomain.parse(TD))?.authorities.map((c) => c.serialNumber)).toEqual([
      root.cert.serialNumber,
    ]);
  });
});
