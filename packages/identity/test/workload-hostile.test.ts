// The Workload API clients against a hostile or broken Workload API: a real
// gRPC server on a Unix socket sending what no SPIRE agent would (more SVIDs,
// trust domains or authorities than any workload has, a flood of updates, the
// same state again and again, a stream the endpoint does not implement). Each
// is refused with a typed error before it costs its parse, or costs bounded work.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type * as grpc from '@grpc/grpc-js';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  BundleError,
  IdentityNotReadyError,
  JwtBundle,
  TrustDomain,
  WORKLOAD_API_MAX_AUTHORITIES,
  WORKLOAD_API_MAX_SVIDS,
  WORKLOAD_API_MAX_TRUST_DOMAINS,
  WorkloadApiClient,
  WorkloadApiError,
  WorkloadApiIdentityProvider,
  type BundleSet,
  type X509Context,
} from '@weave/identity';
import { DevCertificateAuthority } from '@weave/identity/dev';
import { craftedWorkloadApi } from './helpers/crafted-api.js';
import { quietLogger } from './helpers/log.js';

const TD = 'hostile.test';
const ID = `spiffe://${TD}/agent`;
const FAST = { initialMs: 50, maxMs: 200 };
// Invalid messages and reconnects are logged as errors and warnings by design.
const logger = quietLogger();

type Stream = grpc.ServerWritableStream<unknown, unknown>;
interface SvidEntry {
  spiffeId: string;
  x509Svid: Uint8Array;
  x509SvidKey: Uint8Array;
  bundle: Uint8Array;
  hint: string;
}

let dir: string;
let ca: DevCertificateAuthority;
let caDer: Uint8Array;
let entry: SvidEntry;
const cleanups: (() => unknown)[] = [];

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'weave-wlhostile-'));
  ca = await DevCertificateAuthority.create({ trustDomain: TD });
  caDer = ca.x509Bundle.toDer();
  const der = (await ca.issueX509Svid(ID)).toDer();
  entry = { spiffeId: ID, x509Svid: der.certChain, x509SvidKey: der.privateKey, bundle: caDer, hint: '' };
});
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

let sockets = 0;
/** A Workload API whose methods are `handlers`; closed after the test. */
async function hostile(handlers: grpc.UntypedServiceImplementation): Promise<string> {
  const path = join(dir, `api-${++sockets}.sock`);
  const srv = await craftedWorkloadApi(path, handlers);
  cleanups.push(() => srv.forceShutdown());
  return `unix://${path}`;
}

function client(address: string): WorkloadApiClient {
  const c = new WorkloadApiClient({ address, backoff: FAST, logger });
  cleanups.push(() => c.close());
  return c;
}

async function until(cond: () => boolean, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not reached');
    await new Promise((r) => setTimeout(r, 10));
  }
}

const x509Response = (svids: SvidEntry[], federatedBundles: Record<string, Uint8Array> = {}) => ({
  svids,
  crl: [],
  federatedBundles,
});
const jwks = (keys: unknown[]): Buffer => Buffer.from(JSON.stringify({ keys }));
/** `n` trust domains `f<i>.test`, each with `bundle`. */
const trustDomains = <B>(n: number, bundle: B): Record<string, B> =>
  Object.fromEntries(Array.from({ length: n }, (_, i) => [`spiffe://f${i}.test`, bundle]));
/** `der` written `n` times over: a bundle of `n` authorities. */
const times = (der: Uint8Array, n: number): Buffer => Buffer.concat(Array.from({ length: n }, () => der));

async function refusal(p: Promise<unknown>): Promise<WorkloadApiError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(WorkloadApiError);
  expect((err as WorkloadApiError).code).toBe('WORKLOAD_API_BAD_RESPONSE');
  return err as WorkloadApiError;
}

describe('a response carrying more than the bounds is refused before it is parsed', () => {
  it(`more than WORKLOAD_API_MAX_SVIDS (${WORKLOAD_API_MAX_SVIDS}) X.509-SVIDs or JWT-SVIDs`, async () => {
    const token = (await ca.issueJwtSvid(ID, 'db')).token;
    let n = WORKLOAD_API_MAX_SVIDS + 1;
    const address = await hostile({
      FetchX509SVID: (call: Stream) => call.write(x509Response(Array.from({ length: n }, () => entry))),
      FetchJWTSVID: (_call: unknown, cb: grpc.sendUnaryData<unknown>) =>
        cb(null, { svids: Array.from({ length: n }, () => ({ spiffeId: ID, svid: token, hint: '' })) }),
    });
    const c = client(address);
    const x509 = await refusal(c.fetchX509Context());
    expect(x509.message).toBe(
      `invalid X509SVID response from the Workload API: it carries ${n} SVIDs, more than the ${WORKLOAD_API_MAX_SVIDS} taken`,
    );
    const jwt = await refusal(c.fetchJwtSvids({ audience: 'db' }));
    expect(jwt.message).toBe(
      `invalid JWTSVID response from the Workload API: it carries ${n} JWT-SVIDs, more than the ${WORKLOAD_API_MAX_SVIDS} taken`,
    );
    // The bound itself is taken.
    n = WORKLOAD_API_MAX_SVIDS;
    expect((await c.fetchX509Context()).svids).toHaveLength(n);
    expect(await c.fetchJwtSvids({ audience: 'db' })).toHaveLength(n);
  });

  it(`bundles of more than WORKLOAD_API_MAX_TRUST_DOMAINS (${WORKLOAD_API_MAX_TRUST_DOMAINS}) trust domains`, async () => {
    const n = WORKLOAD_API_MAX_TRUST_DOMAINS + 1;
    const jwtKey = ca.jwtBundle.toJwks().keys[0]!;
    const address = await hostile({
      FetchX509SVID: (call: Stream) => call.write(x509Response([entry], trustDomains(n, caDer))),
      FetchX509Bundles: (call: Stream) => call.write({ crl: [], bundles: trustDomains(n, caDer) }),
      FetchJWTBundles: (call: Stream) => call.write({ bundles: trustDomains(n, jwks([jwtKey])) }),
    });
    const c = client(address);
    expect((await refusal(c.fetchX509Context())).message).toMatch(
      new RegExp(`it carries ${n} federated bundles, more than the ${WORKLOAD_API_MAX_TRUST_DOMAINS} taken$`),
    );
    expect((await refusal(c.fetchX509Bundles())).message).toMatch(
      new RegExp(`it carries ${n} bundles, more than the ${WORKLOAD_API_MAX_TRUST_DOMAINS} taken$`),
    );
    expect((await refusal(c.fetchJwtBundles())).message).toMatch(
      new RegExp(`it carries ${n} bundles, more than the ${WORKLOAD_API_MAX_TRUST_DOMAINS} taken$`),
    );
  });

  it(`bundles holding more than WORKLOAD_API_MAX_AUTHORITIES (${WORKLOAD_API_MAX_AUTHORITIES}) authorities, over all trust domains`, async () => {
    const max = WORKLOAD_API_MAX_AUTHORITIES;
    const jwtKey = ca.jwtBundle.toJwks().keys[0]!;
    const keys = (n: number, td: string) =>
      Array.from({ length: n }, (_, i) => ({ ...jwtKey, kid: `${td}-${i}` }));
    const address = await hostile({
      // One bundle over the bound.
      FetchX509SVID: (call: Stream) =>
        call.write(x509Response([{ ...entry, bundle: times(caDer, max + 1) }])),
      // Two bundles within it, together over it.
      FetchX509Bundles: (call: Stream) =>
        call.write({ crl: [], bundles: { [`spiffe://${TD}`]: caDer, 'spiffe://f.test': times(caDer, max) } }),
      FetchJWTBundles: (call: Stream) =>
        call.write({ bundles: { [`spiffe://${TD}`]: jwks(keys(max + 1, 'k')) } }),
    });
    const c = client(address);
    expect((await refusal(c.fetchX509Context())).message).toMatch(
      new RegExp(`its bundles hold at least ${max + 1} authorities, more than the ${max} taken$`),
    );
    expect((await refusal(c.fetchX509Bundles())).message).toMatch(
      new RegExp(`its bundles hold at least ${max + 1} authorities, more than the ${max} taken$`),
    );
    expect((await refusal(c.fetchJwtBundles())).message).toMatch(
      new RegExp(`its bundles hold at least ${max + 1} authorities, more than the ${max} taken$`),
    );
  });
});

describe('a JWT bundle from the Workload API is read as JwtBundle.fromJwks reads its text', () => {
  it(`one of more than WORKLOAD_API_MAX_AUTHORITIES (${WORKLOAD_API_MAX_AUTHORITIES}) keys is refused by its count, before any key is imported`, async () => {
    const max = WORKLOAD_API_MAX_AUTHORITIES;
    // No key imports (not on the curve): importing even the first would refuse the bundle as malformed.
    const keys = Array.from({ length: max + 1 }, (_, i) => ({
      kty: 'EC',
      crv: 'P-256',
      x: 'AA',
      y: 'AA',
      kid: `k${i}`,
    }));
    expect(() => JwtBundle.fromJwks(TD, { keys })).toThrow(/key k0: invalid JWK/);
    const address = await hostile({
      FetchJWTBundles: (call: Stream) => call.write({ bundles: { [`spiffe://${TD}`]: jwks(keys) } }),
    });
    expect((await refusal(client(address).fetchJwtBundles())).message).toBe(
      `invalid JWTBundles response from the Workload API: its bundles hold at least ${max + 1} authorities, more than the ${max} taken`,
    );
  });

  it("text that is no JSON, or writes a key twice in one object, is refused with the parser's words", async () => {
    const jwtKey = ca.jwtBundle.toJwks().keys[0]!;
    const key = JSON.stringify({ ...jwtKey, use: undefined });
    const texts = [
      '{"keys": [',
      `{"keys": [], "keys": [${key}]}`,
      `{"keys": [${key.replace('{', '{"use": "x509-svid", "use": "jwt-svid", ')}]}`,
    ];
    let n = 0;
    const address = await hostile({
      FetchJWTBundles: (call: Stream) =>
        call.write({ bundles: { [`spiffe://${TD}`]: Buffer.from(texts[n++ % texts.length]!) } }),
    });
    const c = client(address);
    for (const text of texts) {
      let parserError: unknown;
      try {
        JwtBundle.fromJwks(TD, text);
      } catch (err) {
        parserError = err;
      }
      expect(parserError, text).toBeInstanceOf(BundleError);
      const err = await refusal(c.fetchJwtBundles());
      expect(err.message).toBe(
        `invalid JWTBundles response from the Workload API: ${(parserError as BundleError).message}`,
      );
    }
    // The same key, written once, is taken: what is refused is the repetition.
    expect(JwtBundle.fromJwks(TD, `{"keys": [${key}]}`).keys.size).toBe(1);
  });
});

describe('a watch against a server that resends or floods', () => {
  it('takes parts it already holds as they were: the same SVID and bundles resent are not parsed again', async () => {
    const other = await ca.issueX509Svid(`spiffe://${TD}/other`);
    const otherEntry = {
      ...entry,
      spiffeId: other.id.toString(),
      x509Svid: other.toDer().certChain,
      x509SvidKey: other.toDer().privateKey,
    };
    const jwtKey = ca.jwtBundle.toJwks().keys[0]!;
    // f.test's own CA: a bundle of f.test holding this domain's CA is refused (BUNDLE_FOREIGN_AUTHORITY).
    const fDer = (await DevCertificateAuthority.create({ trustDomain: 'f.test' })).x509Bundle.toDer();
    const sends: (() => void)[] = [];
    const address = await hostile({
      FetchX509SVID: (call: Stream) => {
        const same = x509Response([entry], { 'spiffe://f.test': fDer });
        call.write(same);
        sends.push(() => call.write(same));
        sends.push(() => call.write(x509Response([otherEntry, entry], { 'spiffe://f.test': fDer })));
      },
      FetchJWTBundles: (call: Stream) => {
        const same = { bundles: { [`spiffe://${TD}`]: jwks([jwtKey]) } };
        call.write(same);
        sends.push(() => call.write(same));
      },
    });
    const c = client(address);
    const contexts: X509Context[] = [];
    const jwtSets: BundleSet[] = [];
    c.watchX509Context({ onUpdate: (ctx) => contexts.push(ctx) });
    c.watchJwtBundles({ onUpdate: (set) => jwtSets.push(set) });
    await until(() => contexts.length === 1 && jwtSets.length === 1 && sends.length === 3);
    // One message at a time, each past the watch's quiet interval so that none is skipped.
    for (const send of sends) {
      await new Promise((r) => setTimeout(r, 150));
      send();
    }
    await until(() => contexts.length === 3 && jwtSets.length === 2);
    const [first, again, changed] = contexts as [X509Context, X509Context, X509Context];
    const td = TrustDomain.parse(TD);
    const f = TrustDomain.parse('f.test');
    expect(again.defaultSvid).toBe(first.defaultSvid);
    expect(again.bundles.getX509Bundle(td)).toBe(first.bundles.getX509Bundle(td));
    expect(again.bundles.getX509Bundle(f)).toBe(first.bundles.getX509Bundle(f));
    expect(jwtSets[1]!.getJwtBundle(td)).toBe(jwtSets[0]!.getJwtBundle(td));
    // What changed is new; what did not is still the same object.
    expect(changed.defaultSvid.id.toString()).toBe(other.id.toString());
    expect(changed.svids[1]).toBe(first.defaultSvid);
    expect(changed.bundles.getX509Bundle(f)).toBe(first.bundles.getX509Bundle(f));
  });

  it('a message every millisecond: the watcher is called a few times a second, and the latest state arrives', async () => {
    let flood: NodeJS.Timeout | undefined;
    let sent = 0;
    const address = await hostile({
      FetchX509SVID: (call: Stream) => {
        call.write(x509Response([{ ...entry, hint: 'first' }]));
        flood = setInterval(() => call.write(x509Response([{ ...entry, hint: `n${++sent}` }])), 1);
        cleanups.push(() => clearInterval(flood));
        setTimeout(() => {
          clearInterval(flood);
          call.write(x509Response([{ ...entry, hint: 'last' }]));
        }, 1_000);
      },
    });
    const c = client(address);
    const hints: string[] = [];
    c.watchX509Context({ onUpdate: (ctx) => hints.push(ctx.defaultSvid.hint) });
    await until(() => hints.at(-1) === 'last');
    // One message at most every 100 ms over the second of the flood, the first and the last.
    expect(hints.length).toBeLessThanOrEqual(14);
    expect(hints[0]).toBe('first');
    expect(sent).toBeGreaterThan(100);
  });
});

describe('WorkloadApiIdentityProvider names why no X.509-SVID came', () => {
  it('the X.509 stream failure, not the JWT bundle stream the endpoint does not implement', async () => {
    const address = await hostile({
      // Valid gRPC, but no SVID in it; FetchJWTBundles is UNIMPLEMENTED on every reconnect.
      FetchX509SVID: (call: Stream) => call.write(x509Response([])),
    });
    const err = await WorkloadApiIdentityProvider.create({
      address,
      backoff: FAST,
      logger,
      readyTimeoutMs: 1_000,
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(IdentityNotReadyError);
    expect((err as Error).message).toBe(
      `no X.509-SVID from the Workload API at ${address} within 1000 ms (last error: invalid X509SVID response from the Workload API: svids: no SVID in the response)`,
    );
  });

  it(`none of ${WORKLOAD_API_MAX_SVIDS} SVIDs with 2 KB IDs being the one asked for: names a few, cut, and how many more`, async () => {
    const n = WORKLOAD_API_MAX_SVIDS;
    const idOf = (i: number) => `spiffe://${TD}/${'a'.repeat(2000)}/${i}`;
    // 16 SVIDs sent 16 times each, in turn: issuing 256 would take seconds.
    const distinct = await Promise.all(
      Array.from({ length: 16 }, async (_, i) => {
        const der = (await ca.issueX509Svid(idOf(i))).toDer();
        return { ...entry, spiffeId: idOf(i), x509Svid: der.certChain, x509SvidKey: der.privateKey };
      }),
    );
    const entries = Array.from({ length: n }, (_, i) => distinct[i % distinct.length]!);
    const address = await hostile({ FetchX509SVID: (call: Stream) => call.write(x509Response(entries)) });
    const err = await WorkloadApiIdentityProvider.create({
      address,
      backoff: FAST,
      logger,
      readyTimeoutMs: 500,
      spiffeId: `spiffe://${TD}/other`,
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(IdentityNotReadyError);
    const message = (err as Error).message;
    // Every ID whole would be over 500 KB, repeated in the logs on every update.
    expect(message.length).toBeLessThan(1_500);
    expect(message).toContain(`no X.509-SVID with ID spiffe://${TD}/other (it sent spiffe://${TD}/aaa`);
    expect(message.split(`… (${idOf(0).length} characters)`)).toHaveLength(6);
    expect(message).toMatch(new RegExp(`characters\\) and ${n - 5} more\\)\\)$`));
  });
});
