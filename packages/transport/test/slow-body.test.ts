// A request body that trickles in is cut at the configured requestTimeoutMs
// (issue 19 item 9: it ran to ~86 s against a 30 s limit), with a typed 408,
// and no route runs. Real mTLS on loopback; the callers are a raw TLS socket
// and a raw HTTP/2 session with the client SVID, sending one byte of a
// 1000-byte body every 100 ms.
import { connect as tlsConnect } from 'node:tls';
import { connect as h2Connect } from 'node:http2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { authorizeId } from '@weave/identity';
import type { DevCaIdentityProvider } from '@weave/identity/dev';
import { createMtlsServer, type MtlsFastifyInstance, type MtlsRequestTimeout } from '../src/server.js';
import { makeTd, portOf, provider, removeTempDirs, type TestTd } from '@weave/test-support/tls-fixtures';

const TIMEOUT_MS = 1500;
/** How long a case waits for the cut: before the fix nothing happened for tens of seconds. */
const GIVE_UP_MS = TIMEOUT_MS + 5000;

let td: TestTd;
let serverId: DevCaIdentityProvider;
let clientId: DevCaIdentityProvider;
const apps: Record<'http1.1' | 'http2', MtlsFastifyInstance> = {} as never;
let handled = 0;

beforeAll(async () => {
  td = await makeTd('slow.test');
  serverId = await provider(td, '/server');
  clientId = await provider(td, '/client');
  for (const httpVersion of ['http1.1', 'http2'] as const) {
    const app = createMtlsServer({
      identity: serverId,
      authorize: authorizeId(clientId.id),
      config: { requestTimeoutMs: TIMEOUT_MS, httpVersion },
    });
    app.post('/', async () => {
      handled++;
      return { ok: true };
    });
    await app.listen({ port: 0, host: '127.0.0.1' });
    apps[httpVersion] = app;
  }
});

afterAll(async () => {
  await Promise.all(Object.values(apps).map((a) => a.close()));
  await serverId.close();
  await clientId.close();
  removeTempDirs();
});

function clientTls() {
  const svid = clientId.getX509Svid().toPem();
  return {
    cert: svid.certChain,
    key: svid.privateKey,
    ca: td.ca.x509Bundle.toPem(),
    checkServerIdentity: () => undefined,
  };
}

/** HTTP/1.1 over a raw TLS socket: headers at once, then one body byte per 100 ms. */
function trickleHttp1(port: number): Promise<{ closedAfterMs: number; answer: string }> {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const sock = tlsConnect({ host: '127.0.0.1', port, ALPNProtocols: ['http/1.1'], ...clientTls() });
    let answer = '';
    let timer: NodeJS.Timeout | undefined;
    const giveUp = setTimeout(() => {
      clearInterval(timer);
      sock.destroy();
      reject(new Error(`the server did not cut the request within ${GIVE_UP_MS} ms`));
    }, GIVE_UP_MS);
    sock.on('secureConnect', () => {
      sock.write(
        'POST / HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n',
      );
      timer = setInterval(() => {
        if (!sock.destroyed) sock.write(' ');
      }, 100);
    });
    sock.on('data', (d: Buffer) => (answer += d.toString()));
    sock.on('error', () => undefined);
    sock.on('close', () => {
      clearInterval(timer);
      clearTimeout(giveUp);
      resolve({ closedAfterMs: Date.now() - started, answer });
    });
  });
}

function expectCutInTime(closedAfterMs: number): void {
  expect(closedAfterMs).toBeGreaterThanOrEqual(TIMEOUT_MS - 100);
  // The limit plus one check interval (a quarter of it), with room for a loaded machine.
  expect(closedAfterMs).toBeLessThan(TIMEOUT_MS + 3000);
}

function expectTimeoutBody(json: string): void {
  const body = JSON.parse(json) as MtlsRequestTimeout;
  expect(body.error.code).toBe('REQUEST_TIMEOUT');
  expect(body.error.message).toContain(`${TIMEOUT_MS} ms`);
}

describe(`a request body trickling in is cut at requestTimeoutMs (${TIMEOUT_MS} ms); no route runs`, () => {
  for (const server of ['http1.1', 'http2'] as const) {
    it(`HTTP/1.1 caller, ${server} server: 408 REQUEST_TIMEOUT, connection closed`, async () => {
      const before = handled;
      const { closedAfterMs, answer } = await trickleHttp1(portOf(apps[server].server));
      expectCutInTime(closedAfterMs);
      expect(answer).toMatch(/^HTTP\/1\.1 408 /);
      expectTimeoutBody(answer.slice(answer.indexOf('\r\n\r\n') + 4));
      expect(handled).toBe(before);
    });
  }

  it('HTTP/2 caller: 408 REQUEST_TIMEOUT on the stream, the session stays usable', async () => {
    const before = handled;
    const session = h2Connect(`https://127.0.0.1:${portOf(apps.http2.server)}`, clientTls());
    try {
      const started = Date.now();
      const stream = session.request({
        ':method': 'POST',
        ':path': '/',
        'content-type': 'application/json',
        'content-length': '1000',
      });
      const timer = setInterval(() => {
        if (!stream.destroyed && stream.writable) stream.write(' ');
      }, 100);
      const { status, body, closedAfterMs } = await new Promise<{
        status: number;
        body: string;
        closedAfterMs: number;
      }>((resolve, reject) => {
        let status = 0;
        let body = '';
        const giveUp = setTimeout(
          () => reject(new Error(`the server did not cut the stream within ${GIVE_UP_MS} ms`)),
          GIVE_UP_MS,
        );
        stream.on('response', (h) => (status = Number(h[':status'])));
        stream.on('data', (d: Buffer) => (body += d.toString()));
        stream.on('error', () => undefined);
        stream.on('close', () => {
          clearTimeout(giveUp);
          resolve({ status, body, closedAfterMs: Date.now() - started });
        });
      }).finally(() => clearInterval(timer));
      expectCutInTime(closedAfterMs);
      expect(status).toBe(408);
      expectTimeoutBody(body);
      expect(handled).toBe(before);

      // A complete request on the same session is answered normally.
      const ok = session.request({ ':method': 'POST', ':path': '/', 'content-type': 'application/json' });
      ok.end('{}');
      ok.setEncoding('utf8');
      let okBody = '';
      ok.on('data', (d: string) => (okBody += d));
      const okStatus = await new Promise<number>((resolve) =>
        ok.on('response', (h) => resolve(Number(h[':status']))),
      );
      await new Promise((resolve) => ok.on('end', resolve));
      expect(okStatus).toBe(200);
      expect(JSON.parse(okBody)).toEqual({ ok: true });
      expect(handled).toBe(before + 1);
    } finally {
      session.close();
    }
  });

  it('a request whose body arrives in time, more slowly than one check interval, is answered', async () => {
    const before = handled;
    const res = await new Promise<string>((resolve, reject) => {
      const sock = tlsConnect({ host: '127.0.0.1', port: portOf(apps['http1.1'].server), ...clientTls() });
      let answer = '';
      sock.on('secureConnect', () => {
        sock.write(
          'POST / HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{',
        );
        setTimeout(() => sock.write('}'), TIMEOUT_MS / 2);
      });
      sock.on('data', (d: Buffer) => {
        answer += d.toString();
        if (answer.includes('{"ok":true}')) {
          sock.destroy();
          resolve(answer);
        }
      });
      sock.on('error', reject);
    });
    expect(res).toMatch(/^HTTP\/1\.1 200 /);
    expect(handled).toBe(before + 1);
  });
});
