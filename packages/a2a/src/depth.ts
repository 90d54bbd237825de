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
  const stack: unknown[] = [value];
  const depths: number[] = [1];
  while (stack.length > 0) {
    const v = stack.pop() as object;
    const d = depths.pop() as number;
    if (d > max) return true;
    const children = Array.isArray(v) ? v : Object.values(v);
    for (const c of children) {
      if (c !== null && typeof c === 'object') {
        stack.push(c);
        depths.push(d + 1);
      }
    }
  }
  return false;
}
