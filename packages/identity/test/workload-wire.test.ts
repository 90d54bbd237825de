// Speaks raw gRPC to the dev Workload API server, with no Weave client code:
// the published proto is loaded straight from packages/identity/proto with
// @grpc/proto-loader, so these tests pin the wire names, the header rule and
// the status codes a SPIRE-compatible client relies on.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DevWorkloadApiServer } from '@weave/identity/dev';

const PROTO = fileURLToPath(new URL('../proto/workload.proto', import.meta.url));
const TD = 'wire.test';

interface Raw {
  client: grpc.Client;
  stream(
    method: string,
    md: grpc.Metadata,
  ): Promise<{ msg?: Record<string, unknown>; err?: grpc.ServiceError }>;
  unary(
    method: string,
    req: unknown,
    md: grpc.Metadata,
  ): Promise<{ msg?: Record<string, unknown>; err?: grpc.ServiceError }>;
}

const pkg = loadSync(PROTO, { keepCase: true, defaults: true, oneofs: true });
const service = pkg['SpiffeWorkloadAPI'] as unknown as Record<
  string,
  grpc.MethodDefinition<unknown, unknown>
>;

function raw(address: string): Raw {
  const client = new grpc.Client(address, grpc.credentials.createInsecure());
  const def = (m: string): grpc.MethodDefinition<unknown, unknown> => {
    const d = service[m];
    if (!d) throw new Error(`no method ${m}`);
    // The path is what goes on the wire: no package prefix.
    expect(d.path).toBe(`/SpiffeWorkloadAPI/${m}`);
    return d;
  };
  return {
    client,
    stream: (method, md) =>
      new Promise((resolve) => {
        const d = def(method);
        const call = client.makeServerStreamRequest(
          d.path,
          d.requestSerialize,
          d.responseDeserialize,
          {},
          md,
        );
        call.on('data', (msg: Record<string, unknown>) => {
          resolve({ msg });
          call.cancel();
        });
        call.on('error', (err: grpc.ServiceError) => resolve({ err }));
      }),
    unary: (method, req, md) =>
      new Promise((resolve) => {
        const d = def(method);
        client.makeUnaryRequest(d.path, d.requestSerialize, d.responseDeserialize, req, md, (err, msg) =>
          resolve(err ? { err } : { msg: msg as Record<string, unknown> }),
        );
      }),
  };
}

const withHeader = (): grpc.Metadata => {
  const md = new grpc.Metadata();
  md.set('workload.spiffe.io', 'true');
  return md;
};

describe('dev Workload API server on the wire', () => {
  let dir: string;
  let server: DevWorkloadApiServer;
  const clients: grpc.Client[] = [];
  const open = (name: string): Raw => {
    const r = raw(server.address(name));
    clients.push(r.client);
    return r;
  };

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'weave-wire-'));
    server = await DevWorkloadApiServer.start({
      stateDir: dir,
      trustDomain: TD,
      workloads: { web: `spiffe://${TD}/web`, stranger: null },
    });
  });
  afterAll(async () => {
    for (const c of clients) c.close();
    await server.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('/SpiffeWorkloadAPI/FetchX509SVID with the header returns an SVID (leaf, PKCS#8 key, bundle)', async () => {
    const { msg, err } = await open('web').stream('FetchX509SVID', withHeader());
    expect(err).toBeUndefined();
    const svids = msg!['svids'] as {
      spiffe_id: string;
      x509_svid: Buffer;
      x509_svid_key: Buffer;
      bundle: Buffer;
    }[];
    expect(svids).toHaveLength(1);
    const s = svids[0]!;
    expect(s.spiffe_id).toBe(`spiffe://${TD}/web`);
    const leaf = new X509Certificate(s.x509_svid);
    expect(leaf.subjectAltName).toBe(`URI:spiffe://${TD}/web`);
    expect(
      leaf.checkPrivateKey(createPrivateKey({ key: s.x509_svid_key, format: 'der', type: 'pkcs8' })),
    ).toBe(true);
    const root = new X509Certificate(s.bundle);
    expect(leaf.verify(root.publicKey)).toBe(true);
    expect(msg!['federated_bundles']).toEqual({});
  });

  it('answers INVALID_ARGUMENT on every method when the header is missing or not "true"', async () => {
    const r = open('web');
    for (const m of [
      'FetchX509SVID',
      'FetchX509Bundles',
      'FetchJWTBundles',
      'FetchWITSVID',
      'FetchWITBundles',
    ]) {
      const { msg, err } = await r.stream(m, new grpc.Metadata());
      expect(msg, m).toBeUndefined();
      expect(err?.code, m).toBe(grpc.status.INVALID_ARGUMENT);
      expect(err?.details).toBe('security header missing from request');
    }
    const wrong = new grpc.Metadata();
    wrong.set('workload.spiffe.io', 'yes');
    expect((await r.stream('FetchX509SVID', wrong)).err?.code).toBe(grpc.status.INVALID_ARGUMENT);
    const jwt = await r.unary('FetchJWTSVID', { audience: ['a'] }, new grpc.Metadata());
    expect(jwt.err?.code).toBe(grpc.status.INVALID_ARGUMENT);
    const val = await r.unary('ValidateJWTSVID', { audience: 'a', svid: 'x' }, new grpc.Metadata());
    expect(val.err?.code).toBe(grpc.status.INVALID_ARGUMENT);
  });

  it('answers PERMISSION_DENIED to a caller with no identity', async () => {
    const r = open('stranger');
    for (const m of ['FetchX509SVID', 'FetchX509Bundles', 'FetchJWTBundles']) {
      const { msg, err } = await r.stream(m, withHeader());
      expect(msg, m).toBeUndefined();
      expect(err?.code, m).toBe(grpc.status.PERMISSION_DENIED);
      expect(err?.details).toBe('no identity issued');
    }
    expect((await r.unary('FetchJWTSVID', { audience: ['a'] }, withHeader())).err?.code).toBe(
      grpc.status.PERMISSION_DENIED,
    );
  });

  it('answers UNIMPLEMENTED for the incubating WIT-SVID methods', async () => {
    const r = open('web');
    expect((await r.stream('FetchWITSVID', withHeader())).err?.code).toBe(grpc.status.UNIMPLEMENTED);
    expect((await r.stream('FetchWITBundles', withHeader())).err?.code).toBe(grpc.status.UNIMPLEMENTED);
  });

  it('FetchJWTSVID needs an audience and refuses another identity; ValidateJWTSVID checks the token', async () => {
    const r = open('web');
    expect((await r.unary('FetchJWTSVID', { audience: [] }, withHeader())).err?.code).toBe(
      grpc.status.INVALID_ARGUMENT,
    );
    const other = await r.unary(
      'FetchJWTSVID',
      { audience: ['a'], spiffe_id: `spiffe://${TD}/db` },
      withHeader(),
    );
    expect(other.err?.code).toBe(grpc.status.PERMISSION_DENIED);

    const ok = await r.unary('FetchJWTSVID', { audience: ['svc-a'] }, withHeader());
    const token = (ok.msg!['svids'] as { spiffe_id: string; svid: string }[])[0]!;
    expect(token.spiffe_id).toBe(`spiffe://${TD}/web`);

    const valid = await r.unary('ValidateJWTSVID', { audience: 'svc-a', svid: token.svid }, withHeader());
    expect(valid.msg!['spiffe_id']).toBe(`spiffe://${TD}/web`);
    const claims = valid.msg!['claims'] as { fields: Record<string, { stringValue?: string }> };
    expect(claims.fields['sub']?.stringValue).toBe(`spiffe://${TD}/web`);

    const wrongAud = await r.unary('ValidateJWTSVID', { audience: 'svc-b', svid: token.svid }, withHeader());
    expect(wrongAud.err?.code).toBe(grpc.status.INVALID_ARGUMENT);
    const tampered = token.svid.slice(0, -4) + (token.svid.endsWith('AAAA') ? 'BBBB' : 'AAAA');
    const bad = await r.unary('ValidateJWTSVID', { audience: 'svc-a', svid: tampered }, withHeader());
    expect(bad.err?.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(
      (await r.unary('ValidateJWTSVID', { audience: '', svid: token.svid }, withHeader())).err?.code,
    ).toBe(grpc.status.INVALID_ARGUMENT);
  });

  it('bundle streams are keyed by spiffe://<td> (DER for X.509, JWKS JSON for JWT)', async () => {
    const r = open('web');
    const x = await r.stream('FetchX509Bundles', withHeader());
    const xb = x.msg!['bundles'] as Record<string, Buffer>;
    expect(Object.keys(xb)).toEqual([`spiffe://${TD}`]);
    expect(new X509Certificate(xb[`spiffe://${TD}`]!).ca).toBe(true);
    const j = await r.stream('FetchJWTBundles', withHeader());
    const jb = j.msg!['bundles'] as Record<string, Buffer>;
    const jwks = JSON.parse(jb[`spiffe://${TD}`]!.toString('utf8')) as {
      keys: { kid: string; use: string }[];
    };
    expect(jwks.keys[0]?.use).toBe('jwt-svid');
    expect(jwks.keys[0]?.kid).toBeTruthy();
  });
});
