// mTLS plumbing for the tests of the layers above transport, all from the
// real Weave layers: dev-CA X.509-SVIDs served by DevCaIdentityProvider,
// @weave/transport's createMtlsServer (mTLS + mtlsAuth → request.peer) and
// SecureChannel (an undici Dispatcher that verifies the server's SPIFFE ID on
// every connection). The layers below have their own harnesses beside this
// one: spiffe-tls.ts (identity) and tls-fixtures.ts (transport).
import type { PeerCertificate } from 'node:tls';
import type { FastifyInstance } from 'fastify';
import { pino } from 'pino';
import { SpiffeId, authorizeMemberOf, type IdentityProvider } from '@weave/identity';
import { DevCaIdentityProvider, DevCertificateAuthority } from '@weave/identity/dev';
import { SecureChannel, createMtlsServerOptions, secureFetch } from '@weave/transport';
import { createMtlsServer, type MtlsFastifyInstance } from '@weave/transport/server';

export const TRUST_DOMAIN = 'test.weave';
const silent = pino({ level: 'silent' });

export interface Workload {
  id: SpiffeId;
  identity: IdentityProvider;
}

export interface Pki {
  ca: DevCertificateAuthority;
  /** A workload identity (SVID + bundle, rotating) at `spiffe://test.weave<path>`. */
  workload(path: string): Promise<Workload>;
  /** Everything created here, closed by {@link Pki.close}. */
  close(): Promise<void>;
}

export async function createPki(): Promise<Pki> {
  const ca = await DevCertificateAuthority.create({ trustDomain: TRUST_DOMAIN });
  const providers: IdentityProvider[] = [];
  return {
    ca,
    async workload(path: string) {
      const id = SpiffeId.parse(`spiffe://${TRUST_DOMAIN}${path}`);
      const identity = await DevCaIdentityProvider.create({ ca, id, logger: silent });
      providers.push(identity);
      return { id, identity };
    },
    async close() {
      await Promise.all(providers.map((p) => p.close()));
    },
  };
}

/** A fastify mTLS server (any caller of the test trust domain gets through; policy decides the rest). */
export function mtlsServer(w: Workload): MtlsFastifyInstance {
  return createMtlsServer({ identity: w.identity, authorize: authorizeMemberOf(TRUST_DOMAIN) });
}

/** node `https` server options (mTLS, client certificate required) for the official SDK's express app. */
export function httpsOptions(w: Workload) {
  return createMtlsServerOptions(w.identity);
}

/** A SecureChannel from `client` that only talks to a server whose SPIFFE ID is `server`. */
export function channel(
  client: Workload,
  server: SpiffeId,
  config: ConstructorParameters<typeof SecureChannel>[2] = {},
): SecureChannel {
  return new SecureChannel(client.identity, server, { circuitBreaker: false, ...config });
}

/** A WHATWG fetch over a channel, for the official SDK's `fetchImpl` (the one @weave/transport exports). */
export const fetchOver = secureFetch;

/** The SPIFFE ID in a certificate's URI SAN, if exactly one. */
export function spiffeIdOf(cert: Pick<PeerCertificate, 'subjectaltname'> | undefined): SpiffeId | undefined {
  const uris = (cert?.subjectaltname ?? '')
    .split(', ')
    .filter((s) => s.startsWith('URI:'))
    .map((s) => s.slice(4));
  return uris.length === 1 ? SpiffeId.tryParse(uris[0] as string) : undefined;
}

export function baseUrl(app: FastifyInstance | MtlsFastifyInstance): string {
  const addr = app.server.address();
  if (!addr || typeof addr !== 'object') throw new Error('server not listening');
  return `https://127.0.0.1:${addr.port}`;
}
