// Weave's transport alone — SecureChannel (SPIFFE check of the server) →
// createMtlsServer (SPIFFE check of the caller), a JSON echo route — vs bare
// node https mTLS + an undici Pool with the same certificates (PEM options,
// what undici does by default).
//   transport  kept-alive connections, 32 in flight, JSON-RPC-sized POSTs
//   connect    every answer carries `connection: close`, so every request is
//              a new TLS 1.3 connection (each client resumes the sessions its
//              cache holds, Weave with the SPIFFE check on each): conns/s
//   verify     every connection from a client certificate the server has
//              never seen (one request each, no resumption): the server's CPU
//              per new verified connection, createMtlsServer (chain to the
//              caller's own trust domain, SPIFFE ID, authorizer) vs node https
import type { AddressInfo } from 'node:net';
import type { Server as TlsServer, TLSSocket } from 'node:tls';
import { authorizeId, authorizeMemberOf, type Authorizer } from '@weave/identity';
import { createMtlsServer } from '@weave/transport/server';
import { ID, TD, bareTls, sendMessageBody, startBareEcho, type Env } from '../lib/env.js';
import type { PemSvid } from '../lib/load.js';
import { ratioCheck, rowOf, type Scenario } from '../lib/harness.js';
import { runLoad } from '../lib/load.js';
import { withServers } from '../lib/servers.js';

/** createMtlsServer answering POST / like the bare echo (parse, answer with the params). */
async function startWeaveEcho(env: Env, close: boolean, authorize: Authorizer = authorizeId(ID.client)) {
  const app = createMtlsServer({ identity: await env.identity('transport'), authorize });
  app.post('/', async (req, reply) => {
    void reply.header('content-type', 'application/json');
    if (close) void reply.header('connection', 'close');
    const rpc = req.body as { id?: unknown; params?: unknown };
    return JSON.stringify({ jsonrpc: '2.0', id: rpc.id ?? null, result: { echo: rpc.params ?? null } });
  });
  await app.listen({ port: 0, host: '127.0.0.1' });
  return {
    url: `https://127.0.0.1:${(app.server.address() as AddressInfo).port}/`,
    server: app.server as TlsServer,
    close: () => app.close(),
  };
}

/**
 * Counts the TLS connections `server` accepts and how many resumed a session,
 * so a `connect` row shows both sides did the same kind of handshake (undici's
 * own session cache on the bare side, the channel's on Weave's).
 */
function countResumed(server: TlsServer): () => string {
  let all = 0;
  let resumed = 0;
  server.on('secureConnection', (s: TLSSocket) => {
    all++;
    if (s.isSessionReused()) resumed++;
  });
  return () => `${resumed} of ${all} connections resumed`;
}

function transportScenario(name: 'transport' | 'connect'): Scenario {
  const close = name === 'connect';
  return {
    name,
    title: close
      ? 'new SPIFFE-verified connections: SecureChannel → createMtlsServer vs undici PEM options → node https, 8 in flight'
      : 'SecureChannel → createMtlsServer vs undici → node https mTLS, kept-alive, 32 in flight',
    async run(ctx) {
      const { env } = ctx;
      const unit = close ? 'conns/s' : 'req/s';
      const timing = { concurrency: close ? 8 : 32, warmupMs: ctx.warmupMs, durationMs: ctx.durationMs };
      const body = sendMessageBody('hello');
      const start = {
        weave: () => startWeaveEcho(env, close),
        bare: async () => startBareEcho(bareTls(await env.identity('bare')), { close }),
      };
      return withServers(start, async ({ weave, bare }) => {
        const resumed = { weave: countResumed(weave.server), bare: countResumed(bare.server) };
        const w = await runLoad({
          kind: 'channel',
          ...timing,
          socket: env.dev.address('client'),
          url: weave.url,
          body,
          expect: ['"echo"'],
          expectPeer: ID.transport,
        });
        const b = await runLoad({
          kind: 'http',
          ...timing,
          url: bare.url,
          body,
          expect: ['"echo"'],
          svid: env.clientPem,
          expectPeer: ID.bare,
        });
        // Kept-alive loads open a few connections only: the count says something for `connect`.
        const note = (side: keyof typeof resumed) => (close ? { note: resumed[side]() } : {});
        const rows = [
          rowOf(name, 'weave SecureChannel', unit, w, { vs: ['bare'], ...note('weave') }),
          rowOf(name, 'bare', unit, b, note('bare')),
        ];
        const checks = close
          ? [ratioCheck(name, rows, 'weave SecureChannel', 'bare', 'rate', { min: 1.2 }, 'conns/s vs bare')]
          : [ratioCheck(name, rows, 'weave SecureChannel', 'bare', 'rate', { min: 0.85 }, 'req/s vs bare')];
        return { rows, checks };
      });
    },
  };
}

export const transport = transportScenario('transport');
export const connect = transportScenario('connect');

/** Client SVIDs nobody has presented yet: one per connection of the `verify` scenario. */
async function freshClientSvids(env: Env, n: number): Promise<PemSvid[]> {
  const ca = env.clientPem.ca;
  const out: PemSvid[] = [];
  for (let i = 0; i < n; i++) {
    const svid = (await env.dev.ca.issueX509Svid(`spiffe://${TD}/verify/c${i}`)).toPem();
    out.push({ ca, cert: svid.certChain, key: svid.privateKey });
  }
  return out;
}

export const verify: Scenario = {
  name: 'verify',
  title:
    'server CPU per new verified connection, each from a certificate never seen before: createMtlsServer vs node https, 4 in flight',
  async run(ctx) {
    const { env } = ctx;
    // More certificates than the verifier's parse cache holds (512), so none is seen twice.
    const calls = ctx.smoke ? 40 : 600;
    const warmupCalls = 8;
    const body = sendMessageBody('hello');
    const common = {
      kind: 'new-certs' as const,
      concurrency: 4,
      warmupMs: 0,
      durationMs: 0,
      calls,
      warmupCalls,
    };
    const start = {
      weave: () => startWeaveEcho(env, true, authorizeMemberOf(TD)),
      bare: async () => startBareEcho(bareTls(await env.identity('bare')), { close: true }),
    };
    return withServers(start, async ({ weave, bare }) => {
      const load = async (url: string, expectPeer: string) =>
        runLoad({
          ...common,
          url,
          body,
          expect: ['"echo"'],
          certs: await freshClientSvids(env, calls + warmupCalls),
          expectPeer,
        });
      const w = await load(weave.url, ID.transport);
      const b = await load(bare.url, ID.bare);
      const rows = [
        rowOf('verify', 'weave createMtlsServer', 'conns/s', w, {
          vs: ['bare'],
          note: 'a new client certificate per connection',
        }),
        rowOf('verify', 'bare', 'conns/s', b, { note: 'a new client certificate per connection' }),
      ];
      const weaveRow = rows[0]!;
      const bareRow = rows[1]!;
      const extra =
        weaveRow.serverCpuUs !== null && bareRow.serverCpuUs !== null
          ? weaveRow.serverCpuUs - bareRow.serverCpuUs
          : null;
      const checks = [
        {
          scenario: 'verify',
          target: 'server CPU per new verified connection vs bare (printed)',
          met: extra !== null,
          detail: `${extra === null ? 'n/a' : extra.toFixed(0)} µs more than bare per connection (weave ${weaveRow.serverCpuUs?.toFixed(0) ?? '-'} µs, bare ${bareRow.serverCpuUs?.toFixed(0) ?? '-'} µs)`,
        },
      ];
      return { rows, checks };
    });
  },
};
