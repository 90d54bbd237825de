// readBody: the request-body reader of the HTTP bindings' content-type
// parser. A real node HTTP server on loopback, written to over a raw socket
// so each test decides how the request's bytes arrive.
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { connect, type AddressInfo, type Socket } from 'node:net';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readBody } from '../src/bindings/http.js';

interface Read {
  err: (Error & { code?: string; statusCode?: number }) | null;
  body?: Buffer;
  /** Whether `done` was called before readBody returned. */
  sync: boolean;
}

const LIMIT = 64;
let server: Server;
let port: number;
/** The next request's read, resolved when readBody calls done. */
let nextRead: ((r: Read) => void) | undefined;
/** Called when a request arrives, before its body is read. */
let beforeRead: ((req: IncomingMessage) => Promise<void>) | undefined;

beforeAll(async () => {
  server = createServer((req, res) => {
    const read = async (): Promise<void> => {
      if (beforeRead) await beforeRead(req);
      let returned = false;
      readBody(req, req.headers, LIMIT, (err, body) => {
        nextRead?.({ err: err as Read['err'], body, sync: !returned });
        res.end();
      });
      returned = true;
    };
    void read();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  port = (server.address() as AddressInfo).port;
});
afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

/** Sends `parts` over a new connection, `gapMs` apart, and gives what readBody read. */
async function send(parts: string[], gapMs = 0): Promise<Read> {
  const got = new Promise<Read>((resolve) => (nextRead = resolve));
  const socket: Socket = connect(port, '127.0.0.1');
  socket.on('error', () => {});
  await new Promise<void>((resolve) => socket.once('connect', resolve));
  for (const [i, p] of parts.entries()) {
    if (i > 0 && gapMs > 0) await new Promise((r) => setTimeout(r, gapMs));
    socket.write(p);
  }
  const r = await got;
  socket.destroy();
  return r;
}

/** Waits until node has parsed the whole request (its body is then in the stream's buffer). */
async function untilComplete(req: IncomingMessage): Promise<void> {
  while (!req.complete) await new Promise((r) => setTimeout(r, 2));
}

const head = (headers: string): string => `POST / HTTP/1.1\r\nHost: x\r\n${headers}\r\n`;

describe('readBody', () => {
  it('takes a body that arrived with its headers at once, before it returns', async () => {
    // The server reads once the whole message is there (as it does in an
    // agent, from mtlsAuth's continuation in the check phase).
    beforeRead = untilComplete;
    const r = await send([`${head('Content-Length: 11\r\n')}{"a":"bcd"}`]);
    beforeRead = undefined;
    expect(r.err).toBeNull();
    expect(r.body?.toString()).toBe('{"a":"bcd"}');
    expect(r.sync).toBe(true);
  });

  it('reads a body that arrives after its headers as it comes', async () => {
    const r = await send([head('Content-Length: 11\r\n'), '{"a":', '"bcd"}'], 30);
    expect(r.err).toBeNull();
    expect(r.body?.toString()).toBe('{"a":"bcd"}');
    expect(r.sync).toBe(false);
  });

  it('reads a chunked body sent in pieces', async () => {
    const r = await send(
      [head('Transfer-Encoding: chunked\r\n'), '5\r\n{"a":\r\n', '6\r\n"bcd"}\r\n', '0\r\n\r\n'],
      20,
    );
    expect(r.err).toBeNull();
    expect(r.body?.toString()).toBe('{"a":"bcd"}');
  });

  it('gives an empty body as no bytes', async () => {
    beforeRead = untilComplete;
    const r = await send([head('Content-Length: 0\r\n')]);
    beforeRead = undefined;
    expect(r.err).toBeNull();
    expect(r.body?.length).toBe(0);
    expect(r.sync).toBe(true);
  });

  it('refuses a Content-Length over the limit without waiting for the body', async () => {
    const r = await send([head(`Content-Length: ${LIMIT + 1}\r\n`)]);
    expect(r.err?.code).toBe('FST_ERR_CTP_BODY_TOO_LARGE');
    expect(r.body).toBeUndefined();
  });

  it('refuses a chunked body over the limit, whether it is all there or still coming', async () => {
    const chunk = `${(LIMIT / 2 + 1).toString(16)}\r\n${'x'.repeat(LIMIT / 2 + 1)}\r\n`;
    beforeRead = untilComplete;
    const whole = await send([`${head('Transfer-Encoding: chunked\r\n')}${chunk}${chunk}0\r\n\r\n`]);
    beforeRead = undefined;
    expect(whole.err?.code).toBe('FST_ERR_CTP_BODY_TOO_LARGE');
    expect(whole.sync).toBe(true);
    const trickled = await send([head('Transfer-Encoding: chunked\r\n'), chunk, chunk, '0\r\n\r\n'], 20);
    expect(trickled.err?.code).toBe('FST_ERR_CTP_BODY_TOO_LARGE');
    expect(trickled.sync).toBe(false);
  });

  it('reads a stream that is not a node request (a preParsing hook’s) within the limit', async () => {
    const read = (stream: Readable, headers = {}): Promise<Read> =>
      new Promise((resolve) =>
        readBody(stream, headers, LIMIT, (err, body) => resolve({ err, body, sync: false })),
      );
    const ok = await read(Readable.from([Buffer.from('{"a":'), Buffer.from('1}')]), {
      'content-length': '7',
    });
    expect(ok.body?.toString()).toBe('{"a":1}');
    const over = await read(Readable.from([Buffer.alloc(LIMIT), Buffer.alloc(1)]));
    expect((over.err as Read['err'])?.code).toBe('FST_ERR_CTP_BODY_TOO_LARGE');
    const short = await read(Readable.from([Buffer.from('{}')]), { 'content-length': '7' });
    expect((short.err as Read['err'])?.code).toBe('FST_ERR_CTP_INVALID_CONTENT_LENGTH');
    const failing = new Readable({
      read() {
        this.destroy(new Error('reset'));
      },
    });
    const failed = await read(failing);
    expect(failed.err?.message).toBe('reset');
    expect((failed.err as Read['err'])?.statusCode).toBe(400);
  });
});
