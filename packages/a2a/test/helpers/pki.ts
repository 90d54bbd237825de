// mTLS plumbing for the a2a tests: dev-CA SVIDs, a fastify HTTPS server that
// requires client certificates and exposes the caller's SPIFFE ID as
// `request.peer`, and undici dispatchers that verify the server's SPIFFE ID.
//
// This mirrors @weave/transport's createMtlsServer/SecureChannel contract
// (request.peer: SpiffeId; SPIFFE ID checked in checkServerIdentity) using
// node/fastify TLS options directly; switch to @weave/transport once it lands.
import type { PeerCertificate, TLSSocket } from 'node:tls';
import Fastify, { type FastifyInstance } from 'fastify';
import { Agent, fetch as undiciFetch } from 'undici';
import { DevCertificateAuthority, SpiffeId, type X509Svid } from '@weave/identity';

export const TRUST_DOMAIN = 'test.weave';

export interface Pki {
  ca: DevCertificateAuthority;
  caPem: string;
  issue(path: string): Promise<{ id: SpiffeId; svid: X509Svid; cert: string; key: string }>;
}

export async function createPki(): Promise<Pki> {
  const ca = await DevCertificateAuthority.create({ trustDomain: TRUST_DOMAIN });
  const caPem = ca.x509Bundle.toPem();
  return {
    ca,
    caPem,
    async issue(path: string) {
      const id = SpiffeId.parse(`spiffe://${TRUST_DOMAIN}${path}`);
      const svid = await ca.issueX509Svid(id);
      const pem = svid.toPem();
      return { id, svid, cert: pem.certChain, key: pem.privateKey };
    },
  };
}

declare module 'fastify' {
  interface FastifyRequest {
    peer?: SpiffeId;
  }
}

/** The SPIFFE ID in a certificate's URI SAN, if exactly one. */
export function spiffeIdOf(cert: Pick<PeerCertificate, 'subjectaltname'> | undefined): SpiffeId | undefined {
  const san = cert?.subjectaltname;
  if (!san) return undefined;
  const uris = san
    .split(', ')
    .filter((s) => s.startsWith('URI:'))
    .map((s) => s.slice(4));
  if (uris.length !== 1) return undefined;
  return SpiffeId.tryParse(uris[0] as string);
}

/** A fastify instance over HTTPS that requires and verifies client certificates. */
export function mtlsFastify(
  pki: Pki,
  server: { cert: string; key: string },
  opts: { bodyLimit?: number } = {},
): FastifyInstance {
  const app = Fastify({
    logger: false,
    forceCloseConnections: true,
    bodyLimit: opts.bodyLimit,
    https: {
      requestCert: true,
      rejectUnauthorized: true,
      ca: pki.caPem,
      cert: server.cert,
      key: server.key,
      minVersion: 'TLSv1.3',
    },
  });
  app.decorateRequest('peer', undefined);
  app.addHook('onRequest', async (request) => {
    const socket = request.raw.socket as TLSSocket;
    request.peer = spiffeIdOf(socket.getPeerCertificate());
  });
  return app;
}

/** An undici Agent presenting `client` and accepting only a server whose SPIFFE ID is `expect`. */
export function mtlsAgent(
  pki: Pki,
  client: { cert: string; key: string },
  expect: SpiffeId,
  connections = 8,
): Agent {
  return new Agent({
    connections,
    connect: {
      ca: pki.caPem,
      cert: client.cert,
      key: client.key,
      minVersion: 'TLSv1.3',
      // TLS resumption would skip checkServerIdentity; every handshake is checked.
      maxCachedSessions: 0,
      checkServerIdentity: (_host: string, cert: PeerCertificate) => {
        const got = spiffeIdOf(cert);
        if (!got || !got.equals(expect)) {
          return new Error(`server SPIFFE ID ${got?.toString() ?? '(none)'} is not ${expect.toString()}`);
        }
        return undefined;
      },
    },
  });
}

/** A WHATWG fetch over the mTLS agent, for the official SDK's `fetchImpl`. */
export function mtlsFetch(agent: Agent): typeof fetch {
  return ((input: string | URL | Request, init?: RequestInit) =>
    undiciFetch(
      input as string,
      { ...(init as object), dispatcher: agent } as never,
    )) as unknown as typeof fetch;
}

export function baseUrl(app: FastifyInstance | { address(): unknown }): string {
  const addr = 'server' in app ? (app as FastifyInstance).server.address() : app.address();
  if (!addr || typeof addr !== 'object') throw new Error('server not listening');
  return `https://127.0.0.1:${(addr as { port: number }).port}`;
}
