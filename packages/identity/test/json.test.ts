import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { formatKeyPath, lineCol, scanJson, type JsonPath } from '@weave/identity';

/** Every value's path in document order, as `JSON.stringify` writes them. */
function pathsOf(v: unknown, path: (string | number)[] = [], out: string[] = []): string[] {
  out.push(formatKeyPath(path));
  if (Array.isArray(v)) v.forEach((x, i) => pathsOf(x, [...path, i], out));
  else if (v !== null && typeof v === 'object')
    for (const k of Object.keys(v)) pathsOf((v as Record<string, unknown>)[k], [...path, k], out);
  return out;
}

function scanned(text: string): { dup: ReturnType<typeof scanJson>; paths: string[]; offsets: number[] } {
  const paths: string[] = [];
  const offsets: number[] = [];
  const dup = scanJson(text, (p: JsonPath, offset) => {
    paths.push(formatKeyPath(p));
    offsets.push(offset);
  });
  return { dup, paths, offsets };
}

const MANY_KEYS = JSON.stringify(
  Object.fromEntries(Array.from({ length: 40 }, (_, i) => [`k${i}`, i])),
).replace(/}$/, ',"k7":0}');

describe('scanJson', () => {
  it('finds no duplicate in what JSON.stringify writes, and reports every value at its path and offset', () => {
    fc.assert(
      fc.property(fc.jsonValue(), fc.constantFrom(undefined, 1, 2, '\t'), (v, indent) => {
        const text = JSON.stringify(v, null, indent);
        const { dup, paths, offsets } = scanned(text);
        expect(dup).toBeUndefined();
        expect(paths).toEqual(pathsOf(JSON.parse(text)));
        // Each offset is where that value's text begins.
        for (const o of offsets) expect(text[o]).toMatch(/["{[\-0-9tfn]/);
      }),
      { numRuns: 300 },
    );
  });

  const dups: { name: string; text: string; key: string; path: string; line: number; col: number }[] = [
    { name: 'top level', text: '{"a": 1,\n "b": 2,\n "a": 3}', key: 'a', path: 'a', line: 3, col: 2 },
    {
      name: 'nested in an array',
      text: '{"rules": [{"id": "x"}, {"id": "y",\n  "effect": "allow", "effect": "deny"}]}',
      key: 'effect',
      path: 'rules[1].effect',
      line: 2,
      col: 22,
    },
    {
      // JSON.parse unescapes keys before comparing them: "\u0061" is "a".
      name: 'spelled with an escape',
      text: '{"t": {"a": true, "\\u0061": false}}',
      key: 'a',
      path: 't.a',
      line: 1,
      col: 19,
    },
    {
      name: 'past the 16 keys a short list holds',
      text: MANY_KEYS,
      key: 'k7',
      path: 'k7',
      line: 1,
      col: MANY_KEYS.lastIndexOf('"k7"') + 1,
    },
  ];
  for (const c of dups) {
    it(`finds a key written twice, ${c.name}, with its path and place`, () => {
      expect(() => JSON.parse(c.text)).not.toThrow();
      const dup = scanJson(c.text);
      expect(dup).toMatchObject({ key: c.key });
      expect(formatKeyPath(dup!.path)).toBe(c.path);
      expect(lineCol(c.text, dup!.offset)).toEqual({ line: c.line, col: c.col });
    });
  }

  it('is not misled by braces, quotes and escapes inside strings, nor by equal keys in sibling objects', () => {
    const text = JSON.stringify({
      a: '{"a": 1, "a": 2}',
      b: 'say \\"a\\": [',
      c: [{ a: 1 }, { a: 2 }],
      d: { a: { a: { a: 1 } } },
    });
    expect(scanJson(text)).toBeUndefined();
    expect(scanJson(text.replace(/}$/, ',"d":null}'))).toMatchObject({ key: 'd', path: ['d'] });
  });

  it('nests deeper than the stack would allow a recursive reader', () => {
    const depth = 100_000;
    const text = `${'['.repeat(depth)}{"a":1,"a":2}${']'.repeat(depth)}`;
    const dup = scanJson(text);
    expect(dup?.path).toHaveLength(depth + 1);
    expect(dup?.path.at(-1)).toBe('a');
  });
});
