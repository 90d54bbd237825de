// Weave's transport alone — SecureChannel (SPIFFE check of the server) →
// createMtlsServer (SPIFFE check of the caller), a JSON echo route — vs bare
// node https mTLS + an undici Pool with the same certificates (PEM options,
// what undici does by default).
//   transport  kept-alive connections, 32 in flight, JSON-RPC-sized POSTs
//   connect    every answer carries `connection: close`, so every request is
//              a new full TLS 1.3 handshake (neither side resumes): conns/s
import type { AddressInfo } from 'node:net';
import { authorizeId } from '@weave/identity';
import { createMtlsServer } from '@weave/transport/server';
import { ID, bareTls, sendMessageBody, startBareEcho, type Env } from '../lib/env.js';
import { ratioCheck, rowOf, type Scenario } from '../lib/harness.js';
import { runLoad } from '../lib/load.js';

/** createMtlsServer answering POST / like the bare echo (parse, answer with the params). */
async function startWeaveEcho(env: Env, close: boolean) {
  const app = createMtlsServer({
    identity: await env.identity('transport'),
    authorize: authorizeId(ID.client),
  });
  app.post('/', async (req, reply) => {
    void reply.header('content-type', 'application/json');
    if (close) void reply.header('connection', 'close');
    const rpc = req.body as { id?: unknown; params?: unknown };
    return JSON.stringify({ jsonrpc: '2.0', id: rpc.id ?? null, result: { echo: rpc.params ?? null } });
  });
  await app.listen({ port: 0, host: '127.0.0.1' });
  return {
    url: `https://127.0.0.1:${(app.server.address() as AddressInfo).port}/`,
    close: () => app.close(),
  };
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
      const weave = await startWeaveEcho(env, close);
      const bare = await startBareEcho(bareTls(await env.identity('bare')), { close });
      const unit = close ? 'conns/s' : 'req/s';
      const timing = { concurrency: close ? 8 : 32, warmupMs: ctx.warmupMs, durationMs: ctx.durationMs };
      const body = sendMessageBody('hello');
      try {
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
        const rows = [
          rowOf(name, 'weave SecureChannel', unit, w, { vs: ['bare'] }),
          rowOf(name, 'bare', unit, b),
        ];
        const checks = close
          ? [ratioCheck(name, rows, 'weave SecureChannel', 'bare', 'rate', { min: 1.2 }, 'conns/s vs bare')]
          : [ratioCheck(name, rows, 'weave SecureChannel', 'bare', 'rate', { min: 0.85 }, 'req/s vs bare')];
        return { rows, checks };
      } finally {
        await weave.close();
        await bare.close();
      }
    },
  };
}

export const transport = transportScenario('transport');
export const connect = transportScenario('connect');
