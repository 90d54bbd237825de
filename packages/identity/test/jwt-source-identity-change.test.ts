// JwtSource and a change of the workload's identity (a registration entry
// changed) that the Workload API shows only on the X.509-SVID stream, with no
// PERMISSION_DENIED on the way: the cached tokens of the old identity are
// dropped, and a caller after the change does not join a fetch begun before
// it (whose token is the old identity's). A crafted Workload API answers.
import type * as grpc from '@grpc/grpc-js';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { JwtSource } from '../src/index.js';
import { DevCertificateAuthority } from '../src/dev.js';
import { craftedWorkloadApi } from './helpers/crafted-api.js';
import { quietLogger } from './helpers/log.js';

it('drops the old identity’s tokens, and a fetch after the change does not get one', async () => {
  const TD = 'race.test';
  const ca = await DevCertificateAuthority.create({ trustDomain: TD });
  const [old, neu] = [`spiffe://${TD}/old`, `spiffe://${TD}/new`];
  let current = old;
  const x509 = async (id: string) => {
    const der = (await ca.issueX509Svid(id)).toDer();
    return {
      svids: [
        { spiffeId: id, x509Svid: der.certChain, x509SvidKey: der.privateKey, bundle: ca.x509Bundle.toDer() },
      ],
    };
  };
  const x509Streams: grpc.ServerWritableStream<unknown, unknown>[] = [];
  const path = join(await mkdtemp(join(tmpdir(), 'rv-')), 'api.sock');
  const srv = await craftedWorkloadApi(path, {
    FetchJWTBundles: (call: grpc.ServerWritableStream<unknown, unknown>) => {
      call.write({ bundles: { [`spiffe://${TD}`]: Buffer.from(JSON.stringify(ca.jwtBundle.toJwks())) } });
    },
    FetchX509SVID: (call: grpc.ServerWritableStream<unknown, unknown>) => {
      x509Streams.push(call);
      void x509(current).then((m) => call.write(m));
    },
    FetchJWTSVID: (
      call: grpc.ServerUnaryCall<{ audience: string[] }, unknown>,
      cb: grpc.sendUnaryData<unknown>,
    ) => {
      // The token of the identity at the time the request came in, answered 600 ms later.
      const id = current;
      const aud = call.request.audience;
      const ms = aud[0] === 'db' ? 600 : 0;
      void ca
        .issueJwtSvid(id, aud)
        .then((t) => setTimeout(() => cb(null, { svids: [{ spiffeId: id, svid: t.token, hint: '' }] }), ms));
    },
  });
  const src = await JwtSource.create({ address: `unix://${path}`, logger: quietLogger() });
  try {
    // Warm: identities watched (old), one token cached.
    expect((await src.fetchJwtSvid({ audience: 'warm' })).id.toString()).toBe(old);
    // A fetch for 'db' begins (answer in 600 ms, old identity)...
    const first = src.fetchJwtSvid({ audience: 'db' });
    await new Promise((r) => setTimeout(r, 100));
    // ...the registration changes: the X.509 stream says so, the cache is cleared.
    current = neu;
    for (const s of x509Streams) s.write(await x509(neu));
    await new Promise((r) => setTimeout(r, 200));
    // Cleared: fetched again, for the new identity.
    expect((await src.fetchJwtSvid({ audience: 'warm' })).id.toString()).toBe(neu);
    // A caller after the change, for the audience whose fetch is still in flight:
    const later = await src.fetchJwtSvid({ audience: 'db' });
    expect((await first).id.toString()).toBe(old);
    expect(later.id.toString()).toBe(neu);
  } finally {
    await src.close();
    srv.forceShutdown();
  }
});
