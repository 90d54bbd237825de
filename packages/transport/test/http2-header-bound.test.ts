// Request headers are bounded alike on HTTP/1.1 and HTTP/2: Node's HTTP/1.1
// parser answers 431 above `http.maxHeaderSize` (16 KiB), and the HTTP/2
// server createMtlsServer makes advertises the same bound as
// SETTINGS_MAX_HEADER_LIST_SIZE, which Node enforces as it decodes a header
// block: a stream over it is reset (ENHANCE_YOUR_CALM) and no hook or route
// runs; a request sent before the client acknowledged the setting, which
// Node does not hold to it, is answered 431 as on HTTP/1.1. (Without either,
// Node advertised no bound and served 60 KB of headers.)
// Streams per connection are bounded too (MAX_CONCURRENT_STREAMS): Node
// advertised no bound, and a client that opened streams and never sent their
// body held each one (some 6 KB of heap, a request timer) until the session's
// memory cap, about 15 000 streams later.
// Real mTLS on loopback with dev-CA SVIDs; the caller is a raw HTTP/2 session
// with the client SVID, which checks the advertised setting itself, or raw
// frames over TLS (no HTTP/2 client library exceeds an advertised bound).
import { once } from 'node:events';
import { maxHeaderSize } from 'node:http';
import { connect as h2Connect, constants as h2, type ClientHttp2Session } from 'node:http2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { authorizeId } from '@weave/identity';
import type { DevCaIdentityProvider } from '@weave/identity/dev';
import { MAX_CONCURRENT_STREAMS } from '../src/index.js';
import { createMtlsServer, type MtlsFastifyInstance } from '../src/server.js';
import { floodStreams, type StreamFlood } from '@weave/test-support/h2-flood';
import { makeTd, portOf, provider, removeTempDirs, type TestTd } from '@weave/test-support/tls-fixtures';

const KiB = 1024;

let td: TestTd;
let serverId: DevCaIdentityProvider;
let clientId: DevCaIdentityProvider;
let app: MtlsFastifyInstance;
let handled = 0;
let streamsSeen = 0;

beforeAll(async () => {
  td = await makeTd('h2-headers.test');
  serverId = await provider(td, '/server');
  clientId = await provider(td, '/client');
  app = createMtlsServer({
    identity: serverId,
    authorize: authorizeId(clientId.id),
    config: { httpVersion: 'http2' },
  });
  app.server.on('stream', () => streamsSeen++);
  app.get('/', async () => {
    handled++;
    return { ok: true };
  });
  app.post('/', async () => {
    handled++;
    return { ok: true };
  });
  await app.listen({ port: 0, host: '127.0.0.1' });
});

afterAll(async () => {
  await app.close();
  await serverId.close();
  await clientId.close();
  removeTempDirs();
});

/** The client SVID's TLS options. */
function tlsOptions() {
  const svid = clientId.getX509Svid().toPem();
  return {
    cert: svid.certChain,
    key: svid.privateKey,
    ca: td.ca.x509Bundle.toPem(),
    checkServerIdentity: () => undefined,
  };
}

/** An HTTP/2 session with the client SVID. */
function session(): ClientHttp2Session {
  const s = h2Connect(`https://127.0.0.1:${portOf(app.server)}`, {
    ...tlsOptions(),
    // Node's client would refuse to send a header block over 64 KiB itself.
    maxSendHeaderBlockLength: 1024 * KiB,
  });
  s.on('error', () => undefined);
  return s;
}

interface Outcome {
  /** `:status` of the answer; 0 when none came. */
  status: number;
  /** RST_STREAM code; 0 when the stream ended normally. */
  rstCode: number;
  body: string;
}

/** A GET with one extra header of `bytes` bytes. */
function get(s: ClientHttp2Session, bytes: number): Promise<Outcome> {
  const req = s.request({ ':method': 'GET', ':path': '/', 'x-big': 'a'.repeat(bytes) });
  let status = 0;
  let body = '';
  req.setEncoding('utf8');
  req.on('response', (headers) => (status = Number(headers[':status'])));
  req.on('data', (d: string) => (body += d));
  req.on('error', () => undefined);
  req.end();
  // Not events.once: it rejects on the stream's error, which a reset is.
  return new Promise((resolve) =>
    req.once('close', () => resolve({ status, rstCode: req.rstCode ?? 0, body })),
  );
}

describe('HTTP/2 request headers over HTTP/1.1’s bound (http.maxHeaderSize)', () => {
  it('is the 16 KiB HTTP/1.1 answers 431 above', () => {
    expect(maxHeaderSize).toBe(16 * KiB);
  });

  it('is advertised as SETTINGS_MAX_HEADER_LIST_SIZE; a header block over it is reset and no route runs; just under it is served', async () => {
    const s = session();
    try {
      await once(s, 'remoteSettings');
      expect(s.remoteSettings.maxHeaderListSize).toBe(maxHeaderSize);
      // A PING answered: the server has read the acknowledgement sent before it, so the bound applies to what follows.
      await new Promise((resolve) => s.ping(resolve));
      const before = handled;
      for (const bytes of [16 * KiB, 60 * KiB]) {
        expect(await get(s, bytes), `${bytes} bytes`).toEqual({
          status: 0,
          rstCode: h2.NGHTTP2_ENHANCE_YOUR_CALM,
          body: '',
        });
      }
      expect(handled).toBe(before);
      expect(await get(s, 15 * KiB)).toEqual({ status: 200, rstCode: 0, body: '{"ok":true}' });
      expect(handled).toBe(before + 1);
    } finally {
      s.close();
    }
  });

  it('a request sent with the connection preface, before the client acknowledged that setting, is answered 431 as on HTTP/1.1; no route runs', async () => {
    const before = handled;
    for (const bytes of [16 * KiB, 60 * KiB]) {
      // A new session each time: the request goes out in the client's first flight.
      const s = session();
      try {
        const over = await get(s, bytes);
        expect({ status: over.status, rstCode: over.rstCode }, `${bytes} bytes`).toEqual({
          status: 431,
          rstCode: 0,
        });
        expect(JSON.parse(over.body)).toEqual({
          error: 'Request Header Fields Too Large',
          message: 'Exceeded maximum allowed HTTP header size',
          statusCode: 431,
        });
      } finally {
        s.close();
      }
    }
    expect(handled).toBe(before);
    const s = session();
    try {
      expect(await get(s, 15 * KiB)).toEqual({ status: 200, rstCode: 0, body: '{"ok":true}' });
      expect(handled).toBe(before + 1);
    } finally {
      s.close();
    }
  });
});

/**
 * Opens `n` POST streams whose body never comes on one connection, then one
 * complete GET (see floodStreams).
 */
function flood(n: number): Promise<StreamFlood> {
  const to = [
    [':scheme', 'https'],
    [':authority', 'localhost'],
    [':path', '/'],
  ] as const;
  return floodStreams({
    connect: { host: '127.0.0.1', port: portOf(app.server), ...tlsOptions() },
    streams: n,
    open: [[':method', 'POST'], ...to, ['content-type', 'application/json']],
    last: { headers: [[':method', 'GET'], ...to] },
  });
}

describe('HTTP/2 streams per connection', () => {
  it('is bounded at MAX_CONCURRENT_STREAMS, advertised; the streams a client opens over it are refused, no route runs for it, and other clients are served', async () => {
    expect(MAX_CONCURRENT_STREAMS).toBe(1000);
    const seenBefore = streamsSeen;
    const handledBefore = handled;
    const result = await flood(MAX_CONCURRENT_STREAMS + 200);
    expect(result.advertised).toBe(MAX_CONCURRENT_STREAMS);
    // Refused (REFUSED_STREAM), or the connection already closed for the streams refused before it.
    expect(result.lastAnswered).toBe(false);
    expect(result.refused > 0 || result.closed).toBe(true);
    // Node never made a request object for a refused stream.
    expect(streamsSeen - seenBefore).toBeLessThanOrEqual(MAX_CONCURRENT_STREAMS);
    expect(handled).toBe(handledBefore);

    // Another client, on its own connection, is answered.
    const s = h2Connect(`https://127.0.0.1:${portOf(app.server)}`, tlsOptions());
    s.on('error', () => undefined);
    try {
      const req = s.request({ ':method': 'GET', ':path': '/' });
      const [headers] = (await once(req, 'response')) as [Record<string, unknown>];
      req.resume();
      expect(headers[':status']).toBe(200);
    } finally {
      s.close();
    }
  });
});
