import { spawn } from 'node:child_process';
import type { AddressInfo } from 'node:net';
import https from 'node:https';
import { pino } from 'pino';
import Fastify from 'fastify';
import { DevCaIdentityProvider, DevCertificateAuthority, authorizeMemberOf } from '@weave/identity';
import { createMtlsServer, createMtlsServerOptions } from '@weave/transport';
const silent = pino({ level: 'silent' });
const ca = await DevCertificateAuthority.create({ trustDomain: 'bench.weave' });
const id = await DevCaIdentityProvider.create({ ca, id: 'spiffe://bench.weave/agent/weave', logger: silent });
const cl = (await ca.issueX509Svid('spiffe://bench.weave/agent/loadgen')).toPem();
const caPem = ca.x509Bundle.toPem();
const reply =
  process.argv[3] === 'big'
    ? JSON.stringify({
        jsonrpc: '2.0',
        id: 1,
        result: {
          task: {
            id: '0b0f6c1e-7c1b-4c8e-9d0e-3f1e2d3c4b5a',
            contextId: '1b0f6c1e-7c1b-4c8e-9d0e-3f1e2d3c4b5a',
            status: { state: 'TASK_STATE_COMPLETED', timestamp: new Date().toISOString() },
            history: [
              {
                messageId: 'bench-1',
                role: 'ROLE_USER',
                parts: [{ text: 'hello' }],
                metadata: { skill: 'echo' },
                taskId: '0b0f6c1e-7c1b-4c8e-9d0e-3f1e2d3c4b5a',
                contextId: '1b0f6c1e-7c1b-4c8e-9d0e-3f1e2d3c4b5a',
              },
            ],
            artifacts: [
              { artifactId: '2b0f6c1e-7c1b-4c8e-9d0e-3f1e2d3c4b5a', parts: [{ text: 'echo: hello' }] },
            ],
            metadata: { skill: 'echo' },
          },
        },
      })
    : '{"jsonrpc":"2.0","id":1,"result":{"task":{"status":{"state":"TASK_STATE_COMPLETED"}}}}';
const mode = process.argv[2];
let url: string;
if (mode === 'node') {
  const s = https.createServer(createMtlsServerOptions(id), (req, res) => {
    req.resume();
    req.on('end', () => {
      res.setHeader('content-type', 'application/json');
      res.end(reply);
    });
  });
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  url = `https://127.0.0.1:${(s.address() as AddressInfo).port}/`;
} else if (mode === 'fastify') {
  const app = Fastify({ https: createMtlsServerOptions(id) as never });
  app.post('/', async () => reply);
  await app.listen({ port: 0, host: '127.0.0.1' });
  url = `https://127.0.0.1:${(app.server.address() as AddressInfo).port}/`;
} else {
  const app = createMtlsServer({ identity: id, authorize: authorizeMemberOf('bench.weave') });
  app.post('/', async () => reply);
  await app.listen({ port: 0, host: '127.0.0.1' });
  url = `https://127.0.0.1:${(app.server.address() as AddressInfo).port}/`;
}
const cpu0 = process.cpuUsage();
const child = spawn('node_modules/.bin/tsx', ['packages/a2a/bench/loadgen.ts'], {
  stdio: ['pipe', 'pipe', 'inherit'],
});
child.stdin.end(
  JSON.stringify({
    url,
    body: JSON.stringify({
      jsonrpc: '2.0',
      id: 1,
      method: 'SendMessage',
      params: {
        message: {
          messageId: 'bench-1',
          role: 'ROLE_USER',
          parts: [{ text: 'hello' }],
          metadata: { skill: 'echo' },
        },
      },
    }),
    concurrency: 32,
    warmupMs: 1000,
    durationMs: 3000,
    ca: caPem,
    cert: cl.certChain,
    key: cl.privateKey,
    expectPeer: 'spiffe://bench.weave/agent/weave',
  }),
);
let out = '';
child.stdout.on('data', (d) => (out += d));
child.on('exit', () => {
  const c = process.cpuUsage(cpu0);
  const r = JSON.parse(out);
  console.log(
    mode,
    Math.round(r.rps),
    'req/s',
    ((c.user + c.system) / r.totalRequests).toFixed(0),
    'µs/req server',
    r.clientCpuUs.toFixed(0),
    'µs/req client',
    r.errors,
    'errors',
    r.firstError ?? '',
  );
  process.exit(0);
});
