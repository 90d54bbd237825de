import { describe, expect, it } from 'vitest';
import { A2AClientError } from '../src/index.js';
import { parseSse, type SseEvent } from '../src/sse-parse.js';

async function collect(chunks: string[], max = 1024): Promise<SseEvent[]> {
  async function* body() {
    for (const c of chunks) yield Buffer.from(c);
  }
  const out: SseEvent[] = [];
  for await (const e of parseSse(body(), max)) out.push(e);
  return out;
}

describe('parseSse', () => {
  it('handles LF, CRLF and CR line ends split across chunks', async () => {
    const events = await collect([
      'id: 1\r',
      '\ndata: a\r\n\r',
      '\ndata: b\rdata: c\r\r',
      'event: error\ndata: d\n\n',
    ]);
    expect(events).toEqual([
      { event: 'message', data: 'a', id: '1' },
      { event: 'message', data: 'b\nc', id: '1' },
      { event: 'error', data: 'd', id: '1' },
    ]);
  });

  it('skips comments (heartbeats) and unknown fields, keeps the last id', async () => {
    const events = await collect([
      ': keep-alive\n\n',
      'retry: 10\nfoo: bar\nid: 7\ndata:x\n\n',
      'data: y\n\n',
    ]);
    expect(events).toEqual([
      { event: 'message', data: 'x', id: '7' },
      { event: 'message', data: 'y', id: '7' },
    ]);
  });

  it('dispatches a last event that lacks the blank line (as the official SDK does) and splits multi-byte characters safely', async () => {
    const bytes = Buffer.from('data: é\n\ndata: end\ndata: cut-off');
    async function* body() {
      yield bytes.subarray(0, 7); // cuts "é" in half
      yield bytes.subarray(7);
    }
    const out: SseEvent[] = [];
    for await (const e of parseSse(body(), 1024)) out.push(e);
    // An unterminated last line is an incomplete field and is dropped.
    expect(out.map((e) => e.data)).toEqual(['é', 'end']);
  });

  it('refuses an event larger than the limit', async () => {
    await expect(collect([`data: ${'x'.repeat(100)}\n\n`], 50)).rejects.toBeInstanceOf(A2AClientError);
    await expect(collect(['data: ' + 'x'.repeat(100)], 50)).rejects.toMatchObject({
      code: 'SSE_EVENT_TOO_LARGE',
    });
  });

  it('counts the line break between data lines, so empty data lines cannot grow an event past the limit', async () => {
    // 100 000 empty data lines: no data characters, a 99 999-character event.
    await expect(collect(['data:\n'.repeat(100_000), '\n'], 50)).rejects.toMatchObject({
      code: 'SSE_EVENT_TOO_LARGE',
    });
    // At the limit still passes: 'ab' + '\n' + 'cd' is 5 characters.
    expect(await collect(['data: ab\ndata: cd\n\n'], 5)).toEqual([{ event: 'message', data: 'ab\ncd' }]);
  });
});
