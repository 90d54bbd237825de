/**
 * Deepest nesting of arrays and objects a request document may have, the
 * request envelope included (a JSON-RPC SendMessage's `data` part starts at
 * depth 6). Deeper input is refused where it is parsed, before any handler
 * runs: a value that deep costs recursion everywhere it goes later
 * (validation, storage, `JSON.stringify` of every reply that carries it), and
 * an 8 000-level input overflowed the stack when a reply was written.
 *
 * It is also below what the gRPC binding can carry: each JSON level is two
 * protobuf levels there (`Value` in `Struct`), and protobufjs stops at 100.
 */
export const MAX_JSON_DEPTH = 40;

/**
 * Whether `value` nests arrays/objects deeper than `max` levels. Iterative, so
 * a hostile input cannot overflow the stack here; stops at the first level
 * past `max`.
 */
export function exceedsDepth(value: unknown, max: number = MAX_JSON_DEPTH): boolean {
  if (value === null || typeof value !== 'object') return false;
  // One stack of (value, depth) pairs, and an object's members read with
  // `for...in` rather than `Object.values`: run on every request, this
  // allocated an array per object visited. Parsed JSON has no inherited
  // enumerable keys. Bytes (an ArrayBuffer view) are a leaf, not a list of
  // numbers to visit one by one.
  const stack: unknown[] = [value, 1];
  while (stack.length > 0) {
    const d = stack.pop() as number;
    const v = stack.pop() as object;
    if (d > max) return true;
    if (Array.isArray(v)) {
      for (let i = 0; i < v.length; i++) {
        const c: unknown = v[i];
        if (c !== null && typeof c === 'object') stack.push(c, d + 1);
      }
    } else if (!ArrayBuffer.isView(v)) {
      const o = v as Record<string, unknown>;
      for (const k in o) {
        const c = o[k];
        if (c !== null && typeof c === 'object') stack.push(c, d + 1);
      }
    }
  }
  return false;
}
