// Benchmark server process. `--mode bare|weave --http http1.1|http2 --ca-dir DIR`; prints `port N`.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import * as https from 'node:https';
import * as http2 from 'node:http2';
import { authorizeId } from '@weave/identity';
import { createMtlsServerOptions } from '../src/index.js';
import { createMtlsServer } from '../src/server.js';
import { CLIENT_ID, SERVER_ID, args, identity } from './common.js';

const a = args();
const mode = a.mode ?? 'bare';
const httpVersion = (a.http ?? 'http1.1') as 'http1.1' | 'http2';
const id = await identity(a['ca-dir']!, SERVER_ID);

// Exit cleanly on SIGTERM so `--cpu-prof` runs can write their profile.
process.on('SIGTERM', () => process.exit(0));

let served = 0;
// The orchestrator writes `mark` when the load generator starts measuring and `report` when it
// stops; CPU time per request is far less sensitive to other load on the machine than req/s.
let mark = { cpu: process.cpuUsage(), served: 0 };
let stdinBuf = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', (d: string) => {
  stdinBuf += d;
  let i;
  while ((i = stdinBuf.indexOf('\n')) >= 0) {
    const cmd = stdinBuf.slice(0, i);
    stdinBuf = stdinBuf.slice(i + 1);
    if (cmd === 'mark') mark = { cpu: process.cpuUsage(), served };
    if (cmd === 'report') {
      const u = process.cpuUsage(mark.cpu);
      const n = served - mark.served;
      process.stdout.write(
        `cpu ${JSON.stringify({ usPerRequest: (u.user + u.system) / Math.max(1, n), requests: n })}\n`,
      );
    }
  }
});

const reply = (body: string) =>
  JSON.stringify({ jsonrpc: '2.0', id: 1, result: { kind: 'message', echoed: body.length } });

let port: number;
if (mode === 'bare') {
  // The baseline: node's own https/http2 server with the same mTLS settings, no framework, no SPIFFE checks.
  const opts = { ...createMtlsServerOptions(id) };
  const handler = (
    req: IncomingMessage | http2.Http2ServerRequest,
    res: ServerResponse | http2.Http2ServerResponse,
  ) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (c: string) => (body += c));
    req.on('end', () => {
      served++;
      // Parse and re-serialize, as the fastify route does: a JSON-RPC server must read the body.
      res.setHeader('content-type', 'application/json');
      res.end(reply(JSON.stringify(JSON.parse(body))));
    });
  };
  const server =
    httpVersion === 'http2' ? http2.createSecureServer(opts, handler) : https.createServer(opts, handler);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  port = (server.address() as AddressInfo).port;
} else {
  const app = createMtlsServer({ identity: id, authorize: authorizeId(CLIENT_ID), config: { httpVersion } });
  app.post('/rpc', async (req, res) => {
    served++;
    void res.header('content-type', 'application/json');
    return reply(JSON.stringify(req.body));
  });
  await app.listen({ port: 0, host: '127.0.0.1' });
  port = (app.server.address() as AddressInfo).port;
}
process.stdout.write(`port ${port}\n`);
