// randomUuid: the ids every call makes (tasks, messages, artifacts, audit
// records). They must be version-4 UUIDs in the canonical form, unique across
// refills of the random pool, and each a string of its own (the buffer the
// digits are written to is reused).
import { describe, expect, it } from 'vitest';
import { randomUuid } from '../src/index.js';

const V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

describe('randomUuid', () => {
  it('makes canonical version-4 UUIDs, unique across several refills of its random pool', () => {
    const ids = Array.from({ length: 3 * 4096 + 7 }, () => randomUuid());
    for (const id of ids) expect(id).toMatch(V4);
    expect(new Set(ids).size).toBe(ids.length);
  });

  it('returns a string that later ids do not change', () => {
    const first = randomUuid();
    const copy = `${first}`.split('').join('');
    for (let i = 0; i < 100; i++) randomUuid();
    expect(first).toBe(copy);
  });

  it('uses every hexadecimal digit outside the fixed version and variant bits', () => {
    const seen = new Set<string>();
    for (let i = 0; i < 2000; i++) for (const c of randomUuid().replaceAll('-', '')) seen.add(c);
    expect([...seen].sort().join('')).toBe('0123456789abcdef');
  });
});
