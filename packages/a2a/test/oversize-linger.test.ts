// A request body over maxBodyBytes, sent with its Content-Length and no
// `Expect: 100-continue` (as httpx, and so the official Python SDK, and most
// clients send it), gets its 413 PAYLOAD_TOO_LARGE on HTTP/1.1, though the
// client writes its whole body before it reads the answer. The server answers
// from the declared length, before the body arrives, and closes the
// connection: closed at once, the kernel answered the bytes still coming with
// a reset, and the client lost the 413 it had not read yet (EPIPE or
// ECONNRESET, and nothing read). The server now reads and drops what the
// client still sends after the answer, within bounds (@weave/transport's
// `lingerOnEarlyClose`: 16 MiB, 2 s without a byte, 5 s in all): a client that
// never stops is cut at the byte bound, one that stops sending at the time
// bound. Real mTLS (dev-CA SVIDs) on @weave/transport's fastify, a raw TLS
// client.
import { once } from 'node:events';
import { connect as netConnect } from 'node:net';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { serveEcho, startHarness, userMessage, type Harness } from './helpers/agents.js';

const KiB = 1024;
const MiB = 1024 * KiB;
/** What the server reads and drops at most past an answer (transport's LINGER_BOUNDS). */
const LINGER_BYTES = 16 * MiB;
/** How long the server waits for a client's next bytes past an answer, ms. */
const LINGER_IDLE_MS = 2_000;
/** How long it lingers in all, ms. */
const LINGER_MAX_MS = 5_000;

let h: Harness;
const ran: string[] = [];

beforeAll(async () => {
  h = await startHarness((a2a) => serveEcho(a2a, ran));
});

afterAll(() => h?.close());

interface RawPost {
  readonly path: string;
  /** The Content-Length the request declares. */
  readonly declared: number;
  /** Body bytes written before the client stops writing; default `declared`. */
  readonly send?: number;
  /**
   * Keep the client's side open once the server closed its side (a client
   * that stops sending and waits); otherwise the client closes its side as
   * it reads the server's end, as Node's sockets do.
   */
  readonly halfOpen?: boolean;
  /** Whole requests written on the connection ahead of the POST, in the same write (HTTP/1.1 pipelining). */
  readonly pipelined?: readonly string[];
}

/** What a raw client read on its connection, and how the connection ended. */
interface RawAnswer {
  /** Everything the server sent, as text. */
  readonly response: string;
  /** The error that ended the client's side (`EPIPE`, `ECONNRESET`, ...), if any. */
  readonly error?: string;
  /** Body bytes the client handed to its socket. */
  readonly sent: number;
  /** Milliseconds from the client's last body write to the server's close of the connection. */
  readonly closedAfterMs: number;
}

/**
 * POSTs a body in 64 KiB writes, each after the last was handed to the
 * kernel, without `Expect: 100-continue`, and reads the answer only once it
 * wrote all it would (as httpx does): whatever the server sent is read then.
 * Resolves once the server closed its socket and the client read what came.
 */
async function rawPost(post: RawPost): Promise<RawAnswer> {
  const port = (h.app.server.address() as { port: number }).port;
  const serverSocket = new Promise<TLSSocket>((resolve) => h.app.server.once('secureConnection', resolve));
  // The TLS socket keeps the TCP socket's allowHalfOpen.
  const tcp = netConnect({ host: '127.0.0.1', port, allowHalfOpen: post.halfOpen === true });
  const sock = tlsConnect({ ...h.agent.tlsClientOptions(), socket: tcp, servername: 'localhost' });
  await once(sock, 'secureConnect');
  const serverClosed = serverSocket.then(
    (s) => new Promise<number>((resolve) => s.once('close', () => resolve(Date.now()))),
  );
  sock.pause();
  let error: string | undefined;
  sock.on('error', (err: NodeJS.ErrnoException) => (error ??= err.code ?? err.message));
  const chunks: Buffer[] = [];
  // Not `once(sock, 'end')`: it rejects on the socket's error, which is an outcome here.
  const readAll = new Promise<void>((resolve) => {
    sock.once('end', resolve);
    sock.once('close', resolve);
  });
  sock.write(
    (post.pipelined ?? []).join('') +
      `POST ${post.path} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n` +
      `a2a-version: 1.0\r\ncontent-length: ${post.declared}\r\n\r\n`,
  );
  const chunk = Buffer.alloc(64 * KiB, 'x');
  const toSend = post.send ?? post.declared;
  let sent = 0;
  while (sent < toSend && !sock.destroyed && error === undefined) {
    const n = Math.min(chunk.length, toSend - sent);
    await new Promise<void>((resolve) => sock.write(chunk.subarray(0, n), () => resolve()));
    sent += n;
  }
  const lastWrite = Date.now();
  sock.on('data', (d: Buffer) => chunks.push(d));
  sock.resume();
  await readAll;
  const closedAt = await serverClosed;
  sock.destroy();
  return {
    response: Buffer.concat(chunks).toString('utf8'),
    error,
    sent,
    closedAfterMs: closedAt - lastWrite,
  };
}

/** A whole, small JSON-RPC SendMessage of `text` to the echo skill, as raw HTTP/1.1 (keep-alive). */
function smallSend(text: string): string {
  const body = JSON.stringify({
    jsonrpc: '2.0',
    id: text,
    method: 'SendMessage',
    params: { message: userMessage('echo', text) },
  });
  return (
    `POST / HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n` +
    `a2a-version: 1.0\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`
  );
}

/** The A2A error reason in a JSON-RPC or HTTP+JSON error body. */
function reasonOf(response: string): unknown {
  const body = JSON.parse(response.slice(response.indexOf('\r\n\r\n') + 4)) as {
    error?: { data?: Array<{ reason?: string }>; details?: Array<{ reason?: string }> };
  };
  return (body.error?.data ?? body.error?.details)?.[0]?.reason;
}

describe('a body over maxBodyBytes sent without Expect: 100-continue (HTTP/1.1)', () => {
  const routes = [
    { binding: 'JSON-RPC', path: '/' },
    { binding: 'HTTP+JSON', path: '/message:send' },
  ];
  for (const { binding, path } of routes) {
    it(`${binding}: the client reads its 413 PAYLOAD_TOO_LARGE after sending 3 MiB, 10 times in a row`, async () => {
      for (let i = 0; i < 10; i++) {
        const a = await rawPost({ path, declared: 3 * MiB });
        expect({ i, error: a.error, status: a.response.slice(0, 12) }).toEqual({
          i,
          error: undefined,
          status: 'HTTP/1.1 413',
        });
        expect(a.response).toMatch(/\r\nconnection: close\r\n/i);
        expect(reasonOf(a.response)).toBe('PAYLOAD_TOO_LARGE');
        expect(a.sent).toBe(3 * MiB);
      }
      expect(ran).toEqual([]);
    });
  }

  it('a client that never stops sending is cut once the server dropped 16 MiB', async () => {
    const a = await rawPost({ path: '/', declared: 1024 * MiB });
    // Cut: the client's next writes failed, long before its declared gigabyte.
    expect(a.error).toBeDefined();
    expect(a.sent).toBeGreaterThanOrEqual(LINGER_BYTES);
    // What the kernels of both ends buffer past the bound: a few MiB on loopback.
    expect(a.sent).toBeLessThan(LINGER_BYTES + 32 * MiB);
    expect(a.closedAfterMs).toBeLessThan(LINGER_IDLE_MS);
  });

  it('a client that stops sending, its side kept open, reads its 413 and is cut after 2 s', async () => {
    const a = await rawPost({ path: '/message:send', declared: 3 * MiB, send: 1536 * KiB, halfOpen: true });
    expect(a.error).toBeUndefined();
    expect(a.response.slice(0, 12)).toBe('HTTP/1.1 413');
    expect(reasonOf(a.response)).toBe('PAYLOAD_TOO_LARGE');
    // Cut at the idle bound (timers fire late on a busy machine, never early), not the total one.
    expect(a.closedAfterMs).toBeGreaterThanOrEqual(LINGER_IDLE_MS - 100);
    expect(a.closedAfterMs).toBeLessThan(LINGER_MAX_MS);
  });

  it('the connection is closed as soon as a client that sent its whole body closes its side', async () => {
    // rawPost's client closes its side as it reads the server's end (after its 3 MiB).
    const a = await rawPost({ path: '/', declared: 3 * MiB });
    expect(a.response.slice(0, 12)).toBe('HTTP/1.1 413');
    expect(a.closedAfterMs).toBeLessThan(500);
  });

  it('on a keep-alive connection, two small pipelined requests are answered, then the oversized one gets its 413', async () => {
    // The lingering close must look at the request the connection closes on (the
    // oversized one, its body still coming), not at the complete ones before it.
    const before = ran.length;
    const a = await rawPost({
      path: '/',
      declared: 3 * MiB,
      pipelined: [smallSend('one'), smallSend('two')],
    });
    expect(a.error).toBeUndefined();
    // Each answer follows the last one's body, with no line break between.
    const answers = a.response.split(/(?=HTTP\/1\.1 \d{3} )/);
    expect(answers.map((r) => r.slice(0, 12))).toEqual(['HTTP/1.1 200', 'HTTP/1.1 200', 'HTTP/1.1 413']);
    // The small ones kept the connection open, and ran the skill, in order.
    expect(answers[0]).not.toMatch(/\r\nconnection: close\r\n/i);
    expect(answers[1]).not.toMatch(/\r\nconnection: close\r\n/i);
    expect(answers[0]).toContain('echo: one');
    expect(answers[1]).toContain('echo: two');
    expect(ran.length - before).toBe(2);
    expect(answers[2]).toMatch(/\r\nconnection: close\r\n/i);
    expect(reasonOf(answers[2]!)).toBe('PAYLOAD_TOO_LARGE');
    expect(a.sent).toBe(3 * MiB);
  });
});
