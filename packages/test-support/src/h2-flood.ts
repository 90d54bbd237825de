/**
 * A hostile HTTP/2 client for the stream-bound tests: raw frames over TLS,
 * as no HTTP/2 client library opens more streams than the server advertised.
 * node:tls only, so any layer's tests can use it.
 */
import { once } from 'node:events';
import { constants as h2 } from 'node:http2';
import { connect as tlsConnect, type ConnectionOptions } from 'node:tls';

/** The client connection preface (RFC 9113 §3.4). */
export const H2_PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');

/** One HTTP/2 frame (RFC 9113 §4.1). */
export function frame(
  type: number,
  flags: number,
  stream: number,
  payload: Buffer = Buffer.alloc(0),
): Buffer {
  const head = Buffer.alloc(9);
  head.writeUIntBE(payload.length, 0, 3);
  head[3] = type;
  head[4] = flags;
  head.writeUInt32BE(stream, 5);
  return Buffer.concat([head, payload]);
}

/** A header block of HPACK literals without indexing (RFC 7541 §6.2.2), names and values under 127 bytes. */
export function headerBlock(fields: ReadonlyArray<readonly [string, string]>): Buffer {
  const str = (s: string) => Buffer.concat([Buffer.from([Buffer.byteLength(s)]), Buffer.from(s)]);
  return Buffer.concat(fields.map(([n, v]) => Buffer.concat([Buffer.from([0]), str(n), str(v)])));
}

/** Frame types and flags (RFC 9113 §6) that the tests write or read. */
export const H2_FRAME = {
  DATA: 0x0,
  HEADERS: 0x1,
  RST_STREAM: 0x3,
  SETTINGS: 0x4,
  GOAWAY: 0x7,
  END_STREAM: 0x1,
  ACK: 0x1,
  END_HEADERS: 0x4,
} as const;
const { DATA, HEADERS, RST_STREAM, SETTINGS, GOAWAY, END_STREAM, ACK, END_HEADERS } = H2_FRAME;
const SETTINGS_MAX_CONCURRENT_STREAMS = 0x3;

/** What the server did with a {@link floodStreams}. */
export interface StreamFlood {
  /** SETTINGS_MAX_CONCURRENT_STREAMS the server advertised (undefined: none). */
  advertised?: number;
  /** RST_STREAM frames the server sent with REFUSED_STREAM. */
  refused: number;
  /** The last stream, a complete request, was answered (HEADERS back). */
  lastAnswered: boolean;
  /** The server closed the connection (GOAWAY or TCP). */
  closed: boolean;
}

/** Options of {@link floodStreams}. */
export interface StreamFloodOptions {
  /** Where and how to connect: host, port and the client's TLS credentials (ALPN h2 is added). */
  readonly connect: ConnectionOptions;
  /** How many streams to open and leave waiting for their body. */
  readonly streams: number;
  /** The header fields of each of those streams. */
  readonly open: ReadonlyArray<readonly [string, string]>;
  /** The last stream, sent whole: its header fields and its body (none: the HEADERS end it). */
  readonly last: { readonly headers: ReadonlyArray<readonly [string, string]>; readonly body?: Buffer };
}

/**
 * Opens `streams` streams on one connection whose body never comes, then
 * one complete request. Resolves once that request is answered, reset, or
 * the connection closed: whichever the server does, no waiting on a clock.
 */
export async function floodStreams(options: StreamFloodOptions): Promise<StreamFlood> {
  const sock = tlsConnect({ ...options.connect, ALPNProtocols: ['h2'] });
  sock.on('error', () => undefined);
  await once(sock, 'secureConnect');
  const out: StreamFlood = { refused: 0, lastAnswered: false, closed: false };
  const last = 2 * options.streams + 1;
  const done = new Promise<void>((resolve) => {
    let buf = Buffer.alloc(0);
    sock.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      while (buf.length >= 9 && buf.length >= 9 + buf.readUIntBE(0, 3)) {
        const len = buf.readUIntBE(0, 3);
        const type = buf[3];
        const flags = buf[4] as number;
        const sid = buf.readUInt32BE(5) & 0x7fffffff;
        const payload = buf.subarray(9, 9 + len);
        buf = buf.subarray(9 + len);
        if (type === SETTINGS && !(flags & ACK)) {
          for (let i = 0; i + 6 <= payload.length; i += 6) {
            if (payload.readUInt16BE(i) === SETTINGS_MAX_CONCURRENT_STREAMS) {
              out.advertised = payload.readUInt32BE(i + 2);
            }
          }
        }
        if (type === RST_STREAM && payload.readUInt32BE(0) === h2.NGHTTP2_REFUSED_STREAM) out.refused++;
        if (sid === last && (type === HEADERS || type === RST_STREAM)) {
          out.lastAnswered = type === HEADERS;
          resolve();
        }
        if (type === GOAWAY) {
          out.closed = true;
          resolve();
        }
      }
    });
    sock.once('close', () => {
      out.closed = true;
      resolve();
    });
  });
  const open = headerBlock(options.open);
  const frames: Buffer[] = [H2_PREFACE, frame(SETTINGS, 0, 0)];
  for (let i = 0; i < options.streams; i++) frames.push(frame(HEADERS, END_HEADERS, 2 * i + 1, open));
  const lastHeaders = headerBlock(options.last.headers);
  if (options.last.body === undefined) {
    frames.push(frame(HEADERS, END_HEADERS | END_STREAM, last, lastHeaders));
  } else {
    frames.push(
      frame(HEADERS, END_HEADERS, last, lastHeaders),
      frame(DATA, END_STREAM, last, options.last.body),
    );
  }
  sock.write(Buffer.concat(frames));
  await done;
  sock.destroy();
  return out;
}
