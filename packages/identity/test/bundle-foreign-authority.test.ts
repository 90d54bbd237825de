// Every root of an X.509 bundle vouches for any ID of the bundle's trust
// domain, so a CA that names another trust domain in its SPIFFE URI SAN (a
// partner's CA in a bundle file of two domains concatenated) is refused
// whichever way the bundle is made: it would let the partner mint our IDs.
// A CA that names no trust domain (an upstream root) is taken as before.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type * as grpc from '@grpc/grpc-js';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  BundleError,
  BundleSet,
  SpiffeBundle,
  TrustDomain,
  WorkloadApiClient,
  WorkloadApiError,
  X509Bundle,
  verifyX509Svid,
  type X509Context,
} from '@weave/identity';
import { DevCertificateAuthority } from '@weave/identity/dev';
import { craftedWorkloadApi } from './helpers/crafted-api.js';
import { KU, makeCert, makeIntermediate, newKeys, x509, type TestCa } from './helpers/forge.js';
import { quietLogger } from './helpers/log.js';

const T = 'a.test';
const U = 'b.test';
const FOREIGN = `X.509 bundle of ${T}: authority C=US, O=Weave Dev CA, CN=${U} is a CA of trust domain "${U}", not of ${T}`;

let own: DevCertificateAuthority;
let partner: DevCertificateAuthority;
beforeAll(async () => {
  [own, partner] = await Promise.all([
    DevCertificateAuthority.create({ trustDomain: T, ttlSeconds: 7200 }),
    DevCertificateAuthority.create({ trustDomain: U, ttlSeconds: 7200 }),
  ]);
});

/** The BundleError `fn` throws. */
function bundleError(fn: () => unknown): BundleError {
  let thrown: unknown;
  try {
    fn();
  } catch (err) {
    thrown = err;
  }
  expect(thrown).toBeInstanceOf(BundleError);
  return thrown as BundleError;
}

/** A self-signed CA without a SAN extension, as an upstream (corporate) root is. */
async function upstreamRoot(): Promise<TestCa> {
  const keys = await newKeys();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: '0a01',
    name: 'CN=corporate root',
    notBefore: new Date(Date.now() - 60_000),
    notAfter: new Date(Date.now() + 600_000),
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
    keys,
    extensions: [
      new x509.BasicConstraintsExtension(true, undefined, true),
      new x509.KeyUsagesExtension(KU.keyCertSign | KU.cRLSign, true),
    ],
  });
  return { cert, keys };
}

describe('an X.509 bundle of T refuses a CA of another trust domain U', () => {
  it("is refused with BUNDLE_FOREIGN_AUTHORITY, naming the CA's subject, U and T, from objects, PEM and DER", () => {
    const theirs = partner.x509Bundle.authorities[0]!;
    const ours = own.x509Bundle.authorities[0]!;
    const concatenated = own.x509Bundle.toPem() + partner.x509Bundle.toPem();
    for (const make of [
      () => new X509Bundle(T, [ours, theirs]),
      () => X509Bundle.fromPem(T, concatenated),
      () => X509Bundle.fromDer(T, Buffer.concat([own.x509Bundle.toDer(), partner.x509Bundle.toDer()])),
    ]) {
      const err = bundleError(make);
      expect(err.code).toBe('BUNDLE_FOREIGN_AUTHORITY');
      expect(err.message).toContain(FOREIGN);
    }
    // Each CA as its own domain's bundle is what federation takes.
    const set = BundleSet.of(X509Bundle.fromPem(T, own.x509Bundle.toPem()), partner.x509Bundle);
    expect(set.trustDomains().map(String)).toEqual([T, U]);
  });

  it('from a SPIFFE bundle (JWKS x509-svid keys): parsed as T, and built from bundles', () => {
    const err = bundleError(() => SpiffeBundle.parse(T, JSON.stringify(partner.spiffeBundle.toJSON())));
    expect(err.code).toBe('BUNDLE_FOREIGN_AUTHORITY');
    expect(err.message).toContain(FOREIGN);
    expect(
      bundleError(() => new SpiffeBundle(T, { x509Authorities: partner.x509Bundle.authorities })).code,
    ).toBe('BUNDLE_FOREIGN_AUTHORITY');
    // The same document read as U's is taken.
    expect(
      SpiffeBundle.parse(U, partner.spiffeBundle.toJSON()).toX509Bundle().equals(partner.x509Bundle),
    ).toBe(true);
  });

  it('a CA naming our own domain among others, or with another case of scheme, is still refused', async () => {
    const upstream = await upstreamRoot();
    const both = await makeIntermediate(upstream, T, { uris: [`spiffe://${T}`, `spiffe://${U}`] });
    const shouting = await makeIntermediate(upstream, T, { uris: [`SPIFFE://${U}/ca`] });
    expect(bundleError(() => new X509Bundle(T, [both.cert])).code).toBe('BUNDLE_FOREIGN_AUTHORITY');
    const err = bundleError(() => new X509Bundle(T, [shouting.cert]));
    expect(err.code).toBe('BUNDLE_FOREIGN_AUTHORITY');
    expect(err.message).toContain(`CN=test intermediate is a CA of trust domain "${U}", not of ${T}`);
  });

  it('a CA without a SPIFFE URI SAN (an upstream root) is taken, and verifies SVIDs under it', async () => {
    const upstream = await upstreamRoot();
    const other = await makeIntermediate(upstream, T, { uris: ['https://pki.example.com/ca'] });
    const bundle = X509Bundle.fromPem(T, upstream.cert.toString('pem') + '\n' + other.cert.toString('pem'));
    expect(bundle.authorities.map((c) => c.subject)).toEqual(['CN=corporate root', 'CN=test intermediate']);
    // A SPIRE-shaped chain below the upstream root: intermediate of T, then the leaf.
    const mid = await makeIntermediate(upstream, T);
    const leaf = await makeCert(mid, { uris: [`spiffe://${T}/agent`] });
    const verified = verifyX509Svid([leaf.der, new Uint8Array(mid.cert.rawData)], BundleSet.of(bundle));
    expect(verified.toString()).toBe(`spiffe://${T}/agent`);
    // And the own dev CA (spiffe://a.test) is of course its own domain's authority.
    expect(X509Bundle.fromDer(T, own.x509Bundle.toDer()).equals(own.x509Bundle)).toBe(true);
  });
});

// The dev Workload API serves only X509Bundle objects, which can no longer
// hold such a CA: a real gRPC server on a Unix socket sends the crafted messages.
describe("the Workload API client takes a bundle of T holding U's CA as an invalid message", () => {
  const ID = `spiffe://${T}/agent`;
  const logger = quietLogger();
  const cleanups: (() => unknown)[] = [];
  let dir: string;
  let entry: {
    spiffeId: string;
    x509Svid: Uint8Array;
    x509SvidKey: Uint8Array;
    bundle: Uint8Array;
    hint: string;
  };
  /** T's bundle with U's CA appended: what a SPIRE agent never sends. */
  let mixed: Uint8Array;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'weave-foreign-'));
    const der = (await own.issueX509Svid(ID, { ttlSeconds: 300 })).toDer();
    entry = {
      spiffeId: ID,
      x509Svid: der.certChain,
      x509SvidKey: der.privateKey,
      bundle: own.x509Bundle.toDer(),
      hint: '',
    };
    mixed = Buffer.concat([own.x509Bundle.toDer(), partner.x509Bundle.toDer()]);
  });
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  let sockets = 0;
  async function serve(handlers: grpc.UntypedServiceImplementation): Promise<WorkloadApiClient> {
    const path = join(dir, `api-${++sockets}.sock`);
    const srv = await craftedWorkloadApi(path, handlers);
    cleanups.push(() => srv.forceShutdown());
    const c = new WorkloadApiClient({
      address: `unix://${path}`,
      backoff: { initialMs: 50, maxMs: 200 },
      logger,
    });
    cleanups.push(() => c.close());
    return c;
  }

  /** The WORKLOAD_API_BAD_RESPONSE `p` rejects with, caused by the bundle's refusal. */
  async function refusal(p: Promise<unknown>): Promise<WorkloadApiError> {
    const err = await p.then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(WorkloadApiError);
    expect((err as WorkloadApiError).code).toBe('WORKLOAD_API_BAD_RESPONSE');
    const cause = (err as WorkloadApiError).cause as BundleError;
    expect(cause).toBeInstanceOf(BundleError);
    expect(cause.code).toBe('BUNDLE_FOREIGN_AUTHORITY');
    return err as WorkloadApiError;
  }

  it("a fetch is refused with WORKLOAD_API_BAD_RESPONSE, whether the SVID's bundle, a federated one or FetchX509Bundles holds it", async () => {
    type Stream = grpc.ServerWritableStream<unknown, unknown>;
    const c = await serve({
      FetchX509SVID: (call: Stream) =>
        call.write({ svids: [{ ...entry, bundle: mixed }], crl: [], federatedBundles: {} }),
      FetchX509Bundles: (call: Stream) =>
        call.write({
          crl: [],
          bundles: { [`spiffe://${T}`]: own.x509Bundle.toDer(), [`spiffe://${U}`]: mixed },
        }),
    });
    const err = await refusal(c.fetchX509Context());
    expect(err.message).toBe(
      `invalid X509SVID response from the Workload API: ${(err.cause as Error).message}`,
    );
    expect(err.message).toContain(FOREIGN);
    // A federated bundle of U holding T's CA: T's CA would then mint U's IDs.
    const theirs = await refusal(c.fetchX509Bundles());
    expect(theirs.message).toContain(
      `X.509 bundle of ${U}: authority C=US, O=Weave Dev CA, CN=${T} is a CA of trust domain "${T}", not of ${U}`,
    );
  });

  it('a watch ignores the message (onError, no update), keeps the last good state and takes the next good one', async () => {
    type Stream = grpc.ServerWritableStream<unknown, unknown>;
    const good = {
      svids: [entry],
      crl: [],
      federatedBundles: { [`spiffe://${U}`]: partner.x509Bundle.toDer() },
    };
    const bad = { ...good, federatedBundles: { [`spiffe://${U}`]: mixed } };
    let stream: Stream | undefined;
    const c = await serve({
      FetchX509SVID: (call: Stream) => {
        stream = call;
        call.write(good);
      },
    });
    const updates: X509Context[] = [];
    const errors: WorkloadApiError[] = [];
    const handle = c.watchX509Context({
      onUpdate: (ctx) => updates.push(ctx),
      onError: (e) => errors.push(e),
    });
    cleanups.push(() => handle.stop());
    await until(() => updates.length === 1);
    // Past the watch's quiet interval (100 ms), so the bad message is parsed, not skipped.
    await new Promise((r) => setTimeout(r, 150));
    stream!.write(bad);
    await until(() => errors.length === 1);
    await refusal(Promise.reject(errors[0]!));
    expect(updates).toHaveLength(1);
    expect(updates[0]!.bundles.getX509Bundle(TrustDomain.parse(U))?.equals(partner.x509Bundle)).toBe(true);
    // The stream stays open: the next good message is taken.
    await new Promise((r) => setTimeout(r, 150));
    stream!.write(good);
    await until(() => updates.length === 2);
    expect(errors).toHaveLength(1);
  });
});

async function until(cond: () => boolean, timeoutMs = 5_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not reached');
    await new Promise((r) => setTimeout(r, 10));
  }
}
