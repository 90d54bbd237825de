import { describe, expect, it } from 'vitest';
import { MAX_JSON_DEPTH, exceedsDepth } from '../src/depth.js';

/** `levels` levels of nesting, objects and arrays in turn, with a leaf at the bottom. */
function nested(levels: number, leaf: unknown = 'x'): unknown {
  let v: unknown = leaf;
  for (let i = 0; i < levels; i++) v = i % 2 === 0 ? { k: v } : [1, v];
  return v;
}

describe('exceedsDepth', () => {
  it('allows exactly the limit and refuses one level more, for objects and arrays alike', () => {
    expect(exceedsDepth(nested(MAX_JSON_DEPTH))).toBe(false);
    expect(exceedsDepth(nested(MAX_JSON_DEPTH + 1))).toBe(true);
    expect(exceedsDepth(nested(3), 3)).toBe(false);
    expect(exceedsDepth(nested(4), 3)).toBe(true);
    // The deep branch may be anywhere among shallow siblings.
    expect(exceedsDepth({ a: 1, b: [2, 3], c: { d: nested(3) } }, 4)).toBe(true);
    expect(exceedsDepth({ a: 1, b: [2, 3], c: { d: nested(2) } }, 4)).toBe(false);
    expect(exceedsDepth('text')).toBe(false);
    expect(exceedsDepth(null)).toBe(false);
  });

  it('counts bytes as one level, whatever their length', () => {
    expect(exceedsDepth({ raw: Buffer.alloc(1_000_000) }, 2)).toBe(false);
    expect(exceedsDepth({ raw: Buffer.alloc(1_000_000) }, 1)).toBe(true);
    expect(exceedsDepth(nested(2, new Uint8Array(8)), 3)).toBe(false);
    expect(exceedsDepth(nested(2, { deeper: new Uint8Array(8) }), 3)).toBe(true);
    expect(exceedsDepth(nested(2, { deeper: new Uint8Array(8) }), 4)).toBe(false);
  });

  it('refuses a 100 000-level value without overflowing the stack', () => {
    expect(exceedsDepth(nested(100_000))).toBe(true);
  });
});
