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

/**
 * Parses a `text/event-stream` body (WHATWG framing: `\n`, `\r\n` or `\r`
 * line ends, `:` comments, multi-line `data`). An event larger than
 * `maxEventBytes` aborts the stream with a typed error. `watch`, when given,
 * is kept telling whether the parser waits for the body: a consumer that
 * holds an event it was yielded is not waiting.
 */
export async function* parseSse(
  body: AsyncIterable<Uint8Array | string>,
  maxEventBytes: number,
  watch?: ReadWatch,
): AsyncGenerator<SseEvent> {
  const decoder = new TextDecoder();
  let buf = '';
  let event = '';
  let data: string[] = [];
  let dataLen = 0;
  let id: string | undefined;
  if (watch) watch.waitingSince = performance.now();
  for await (const chunk of body) {
    if (watch) watch.waitingSince = 0;
    buf += typeof chunk === 'string' ? chunk : decoder.decode(chunk, { stream: true });
    let start = 0;
    for (;;) {
      let end = -1;
      let next = -1;
      for (let i = start; i < buf.length; i++) {
        const c = buf.charCodeAt(i);
        if (c === 10) {
          end = i;
          next = i + 1;
          break;
        }
        if (c === 13) {
          // A lone \r at the chunk end may be half of \r\n: wait for more.
          if (i + 1 >= buf.length) break;
          end = i;
          next = buf.charCodeAt(i + 1) === 10 ? i + 2 : i + 1;
          break;
        }
      }
      if (end < 0) break;
      const line = buf.slice(start, end);
      start = next;
      if (line === '') {
        if (data.length > 0) {
          yield id === undefined
            ? { event: event || 'message', data: data.join('\n') }
            : { event: event || 'message', data: data.join('\n'), id };
        }
        event = '';
        data = [];
        dataLen = 0;
        continue;
      }
      if (line.charCodeAt(0) === 58) continue; // ':' comment (heartbeat)
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
    }
    buf = buf.slice(start);
    if (buf.length > maxEventBytes) {
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
