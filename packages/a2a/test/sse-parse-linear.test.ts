// The SSE parser's work is linear in the bytes it gets, however they are cut.
// It used to search the whole unfinished line for a line end again on every
// chunk: a 4 MiB event in 16 KiB chunks (as TLS records deliver it) cost
// 1370 ms of CPU against 18 ms in one piece. The parser counts the
// characters it searches (SseParseStats), so the bound is checked without
// timing anything. That the events are the same whatever the chunking is a
// property in fuzz-parsers.test.ts; here, the large cases.
import { describe, expect, it } from 'vitest';
import { parseSse, type SseEvent, type SseParseStats } from '../src/sse-parse.js';

async function parse(
  text: string,
  chunkChars: number,
  max = 8 << 20,
): Promise<{ events: SseEvent[]; stats: SseParseStats }> {
  const bytes = Buffer.from(text);
  async function* body() {
    for (let i = 0; i < bytes.length; i += chunkChars) yield bytes.subarray(i, i + chunkChars);
  }
  const stats: SseParseStats = { scanned: 0 };
  const events: SseEvent[] = [];
  for await (const e of parseSse(body(), max, undefined, stats)) events.push(e);
  return { events, stats };
}

describe('parseSse work', () => {
  it('a 2 MiB event in 4 KiB chunks: each character searched at most twice, the event intact', async () => {
    const text = `id: 7\ndata: ${'x'.repeat(2 << 20)}\n\n`;
    const { events, stats } = await parse(text, 4096);
    expect(events).toEqual([{ event: 'message', data: 'x'.repeat(2 << 20), id: '7' }]);
    // Every character was looked at (the count measures the work done)...
    expect(stats.scanned).toBeGreaterThanOrEqual(text.length);
    // ...and none more than twice (once for '\n', once for '\r').
    expect(stats.scanned).toBeLessThanOrEqual(2 * text.length);
  });

  it('many short lines in one chunk: no line end searched for again past each line', async () => {
    const text = Array.from({ length: 20_000 }, (_, i) => `data: ${i}\n\n`).join('');
    const { events, stats } = await parse(text, text.length);
    expect(events).toHaveLength(20_000);
    expect(events[19_999]?.data).toBe('19999');
    expect(stats.scanned).toBeLessThanOrEqual(2 * text.length);
  });

  it('mixed line ends cut everywhere: the same events as in one piece, with the same bound', async () => {
    const ends = ['\n', '\r\n', '\r'];
    const text = Array.from(
      { length: 300 },
      (_, i) =>
        // The blank line repeats the line end before it: a '\r' then '\n' would be one CRLF.
        `id: ${i}${ends[i % 3]}data: ${'é'.repeat(i)}${ends[(i + 1) % 3]}data: z${ends[(i + 2) % 3]}${ends[(i + 2) % 3]}`,
    ).join('');
    const whole = await parse(text, text.length * 4);
    expect(whole.events).toHaveLength(300);
    for (const size of [1, 2, 3, 7, 64]) {
      const cut = await parse(text, size);
      expect(cut.events).toEqual(whole.events);
      expect(cut.stats.scanned).toBeLessThanOrEqual(2 * text.length);
    }
  });

  it('keeps the size cap on a line that never ends', async () => {
    await expect(parse(`data: ${'x'.repeat(100_000)}`, 1000, 50_000)).rejects.toMatchObject({
      code: 'SSE_EVENT_TOO_LARGE',
    });
  });
});
