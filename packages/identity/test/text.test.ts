import { describe, expect, it } from 'vitest';
import { cutText } from '../src/index.js';

describe('cutText', () => {
  it('keeps a string up to the bound whole', () => {
    expect(cutText('', 3)).toBe('');
    expect(cutText('abc', 3)).toBe('abc');
  });

  it('cuts a longer one at the bound and says how long it was', () => {
    expect(cutText('abcdef', 3)).toBe('abc… (6 characters)');
    const long = 'x'.repeat(100_000);
    expect(cutText(long, 256)).toBe(`${'x'.repeat(256)}… (100000 characters)`);
  });

  it('never splits a surrogate pair: the cut stays well-formed', () => {
    // '😀' is two code units; a cut after its first would leave a lone surrogate.
    const s = `ab😀cd`;
    expect(cutText(s, 3)).toBe('ab… (6 characters)');
    expect(cutText(s, 4)).toBe('ab😀… (6 characters)');
    for (let max = 1; max < s.length; max++) expect(cutText(s, max)).not.toMatch(/\p{Cs}/u);
  });
});
