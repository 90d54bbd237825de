import { A2AClientError } from './errors.js';

/** One parsed server-sent event. */
export interface SseEvent {
  readonly event: string;
  readonly data: string;
  readonly id?: string;
}

/** Whether the parser is waiting for the body's next chunk, for an idle limit on reads. */
export interface ReadWatch {
  /** `performance.now()` when the parser began to wait for the next chunk; 0 while it is not waiting. */
  waitingSince: number;
}

/** What {@link parseSse} did, for tests that bound its work without timing it. */
export interface SseParseStats {
  /** Characters searched for line ends so far (each one a bounded number of times, however the body is cut). */
  scanned: number;
}

/**
 * Parses a `text/event-stream` body (WHATWG framing: `\n`, `\r\n` or `\r`
 * line ends, `:` comments, multi-line `data`). An event larger than
 * `maxEventBytes` aborts the stream with a typed error. `watch`, when given,
 * is kept telling whether the parser waits for the body: a consumer that
 * holds an event it was yielded is not waiting.
 *
 * Each chunk is searched for line ends once: a line that spans many chunks
 * is kept as its pieces and joined when it ends. (Searching the whole
 * unfinished line again on every chunk made a 4 MiB event cut in 16 KiB
 * chunks cost 75 times as much CPU as in one piece.)
 */
export async function* parseSse(
  body: AsyncIterable<Uint8Array | string>,
  maxEventBytes: number,
  watch?: ReadWatch,
  stats?: SseParseStats,
): AsyncGenerator<SseEvent> {
  const decoder = new TextDecoder();
  // The unfinished line: the pieces of the chunks it spans so far.
  let pieces: string[] = [];
  let pendingLen = 0;
  // The unfinished line ended with a '\r' as its chunk's last character: it
  // is over, but a '\n' at the start of the next chunk belongs to its line end.
  let heldCr = false;
  let event = '';
  let data: string[] = [];
  let dataLen = 0;
  let id: string | undefined;
  /** Takes one line; returns the event it completes, if any. */
  const take = (line: string): SseEvent | undefined => {
    if (line === '') {
      let done: SseEvent | undefined;
      if (data.length > 0) {
        done =
          id === undefined
            ? { event: event || 'message', data: data.join('\n') }
            : { event: event || 'message', data: data.join('\n'), id };
      }
      event = '';
      data = [];
      dataLen = 0;
      return done;
    }
    if (line.charCodeAt(0) === 58) return undefined; // ':' comment (heartbeat)
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.charCodeAt(0) === 32) value = value.slice(1);
    if (field === 'data') {
      // The event's data is the lines joined by '\n': count the joins too,
      // or a run of empty data lines grows an event without bound.
      dataLen += data.length === 0 ? value.length : value.length + 1;
      if (dataLen > maxEventBytes) {
        throw new A2AClientError('SSE_EVENT_TOO_LARGE', `SSE event exceeds ${maxEventBytes} bytes`);
      }
      data.push(value);
    } else if (field === 'event') event = value;
    else if (field === 'id' && !value.includes('\0')) id = value;
    return undefined;
  };
  /** The unfinished line's pieces, then `last`, as one line; the pieces are cleared. */
  const finish = (last: string): string => {
    if (pieces.length === 0) return last;
    const line = last === '' && pieces.length === 1 ? (pieces[0] as string) : pieces.join('') + last;
    pieces = [];
    pendingLen = 0;
    return line;
  };
  if (watch) watch.waitingSince = performance.now();
  for await (const chunk of body) {
    if (watch) watch.waitingSince = 0;
    const text = typeof chunk === 'string' ? chunk : decoder.decode(chunk, { stream: true });
    const len = text.length;
    let start = 0;
    if (heldCr && len > 0) {
      heldCr = false;
      if (text.charCodeAt(0) === 10) start = 1;
      const e = take(finish(''));
      if (e) yield e;
    }
    // The next '\n' and '\r' at or after `start` (-1: none in this chunk),
    // each searched again only once passed: every character is looked at
    // at most twice, however many lines the chunk holds.
    let lf = -2;
    let cr = -2;
    while (start < len) {
      if (lf !== -1 && lf < start) {
        lf = text.indexOf('\n', start);
        if (stats) stats.scanned += (lf < 0 ? len : lf + 1) - start;
      }
      if (cr !== -1 && cr < start) {
        cr = text.indexOf('\r', start);
        if (stats) stats.scanned += (cr < 0 ? len : cr + 1) - start;
      }
      let end: number;
      let next: number;
      if (cr >= 0 && (lf < 0 || cr < lf)) {
        end = cr;
        if (cr + 1 >= len) {
          // A '\r' at the chunk end may be half of '\r\n': the line waits for the next chunk.
          pieces.push(text.slice(start, cr));
          pendingLen += cr - start;
          heldCr = true;
          start = len;
          break;
        }
        next = text.charCodeAt(cr + 1) === 10 ? cr + 2 : cr + 1;
      } else if (lf >= 0) {
        end = lf;
        next = lf + 1;
      } else break;
      const e = take(finish(text.slice(start, end)));
      start = next;
      if (e) yield e;
    }
    if (start < len) {
      pieces.push(start === 0 ? text : text.slice(start));
      pendingLen += len - start;
    }
    if (pendingLen > maxEventBytes) {
      throw new A2AClientError('SSE_EVENT_TOO_LARGE', `SSE line exceeds ${maxEventBytes} bytes`);
    }
    if (watch) watch.waitingSince = performance.now();
  }
  if (watch) watch.waitingSince = 0;
  if (data.length > 0) {
    yield id === undefined
      ? { event: event || 'message', data: data.join('\n') }
      : { event: event || 'message', data: data.join('\n'), id };
  }
}
