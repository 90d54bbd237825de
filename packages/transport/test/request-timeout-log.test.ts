// The `REQUEST_TIMEOUT` warn line of createMtlsServer is bounded like the
// other lines a caller can cause at will (refused handshakes, connection
// bounds): at most 10 a minute. Measured before: one line per cut request
// (8 730 lines in one run). Real mTLS on loopback; the callers send their
// headers and never their body, over HTTP/1.1 and HTTP/2 alike.
import { once } from 'node:events';
import { connect as h2Connect } from 'node:http2';
import { connect as tlsConnect } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { authorizeId } from '@weave/identity';
import type { DevCaIdentityProvider } from '@weave/identity/dev';
import { createMtlsServer, type MtlsFastifyInstance } from '../src/server.js';
import { makeTd, portOf, provider, removeTempDirs, type TestTd } from '@weave/test-support/tls-fixtures';

const TIMEOUT_MS = 300;
/** Requests cut per HTTP version: together more than the 10 lines a minute allowed. */
const PER_VERSION = 8;

let td: TestTd;
let serverId: DevCaIdentityProvider;
let clientId: DevCaIdentityProvider;
let app: MtlsFastifyInstance;
const lines: Array<Record<string, unknown>> = [];
let handled = 0;

beforeAll(async () => {
  td = await makeTd('timeout-log.test');
  [serverId, clientId] = await Promise.all([provider(td, '/server'), provider(td, '/client')]);
  app = createMtlsServer({
    identity: serverId,
    authorize: authorizeId(clientId.id),
    // HTTP/2, which serves HTTP/1.1 callers too: both kinds of cut in one server.
    config: { requestTimeoutMs: TIMEOUT_MS, httpVersion: 'http2' },
    fastify: {
      logger: {
        level: 'warn',
        stream: { write: (line: string) => lines.push(JSON.parse(line) as Record<string, unknown>) },
      },
    },
  });
  app.post('/', async () => {
    handled++;
    return { ok: true };
  });
  await app.listen({ port: 0, host: '127.0.0.1' });
});

afterAll(async () => {
  await app.close();
  await Promise.all([serverId.close(), clientId.close()]);
  removeTempDirs();
});

function clientTls() {
  const svid = clientId.getX509Svid().toPem();
  return { cert: svid.certChain, key: svid.privateKey, ca: td.ca.x509Bundle.toPem() };
}

/** An HTTP/1.1 POST whose body never comes: resolves when the server closes the connection. */
async function http1Cut(port: number): Promise<void> {
  const sock = tlsConnect({
    host: '127.0.0.1',
    port,
    ALPNProtocols: ['http/1.1'],
    checkServerIdentity: () => undefined,
    ...clientTls(),
  });
  sock.on('error', () => undefined);
  await once(sock, 'secureConnect');
  sock.write('POST / HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 10\r\n\r\n');
  sock.resume();
  await once(sock, 'close');
}

/** HTTP/2 POSTs on one session whose bodies never come: resolves when the server has closed every stream. */
async function http2Cuts(port: number, n: number): Promise<void> {
  const session = h2Connect(`https://127.0.0.1:${port}`, {
    ...clientTls(),
    checkServerIdentity: () => undefined,
  });
  session.on('error', () => undefined);
  try {
    await Promise.all(
      Array.from({ length: n }, async () => {
        const stream = session.request({
          ':method': 'POST',
          ':path': '/',
          'content-type': 'application/json',
          'content-length': '10',
        });
        stream.on('error', () => undefined);
        stream.resume();
        await once(stream, 'close');
      }),
    );
  } finally {
    session.destroy();
  }
}

describe('REQUEST_TIMEOUT lines', () => {
  it(`at most 10 a minute however many requests are cut (${2 * PER_VERSION} here, HTTP/1.1 and HTTP/2)`, async () => {
    const port = portOf(app.server);
    await Promise.all([
      ...Array.from({ length: PER_VERSION }, () => http1Cut(port)),
      http2Cuts(port, PER_VERSION),
    ]);
    const cuts = lines.filter((l) => l.code === 'REQUEST_TIMEOUT');
    expect(cuts).toHaveLength(10);
    expect(cuts[0]).toMatchObject({
      timeoutMs: TIMEOUT_MS,
      msg: 'request cut: not received within requestTimeoutMs',
    });
    expect(handled).toBe(0);
  });
});
