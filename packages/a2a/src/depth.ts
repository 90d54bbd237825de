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
 * past `max`. Bytes (an ArrayBuffer view) are a leaf, not a list of numbers
 * to visit one by one.
 */
export function exceedsDepth(value: unknown, max: number = MAX_JSON_DEPTH): boolean {
  return firstProblem(value, max, false) !== undefined;
}

/**
 * Why `value` cannot be sent alike on every binding, or `undefined` when it
 * can: nested deeper than `max` levels (a cycle never ends), or holding
 * anything but plain objects, arrays, strings, finite numbers, booleans and
 * null (`undefined` members are left out by every binding). {@link exceedsDepth}'s
 * walk, strict about what it meets, for values made by application code
 * rather than parsed from JSON: a handler's output (a BigInt made every later
 * read of its task fail; a `Date` was a string on JSON-RPC and `{}` on gRPC;
 * `NaN` and ±`Infinity` were `null` on the JSON bindings, themselves on gRPC).
 *
 * The reason names what and where (`output holds a Date object at
 * parts.0.data.at: …`). Use it to check a value before a transport of your
 * own sends it, as Weave's task handler does with what a handler produces.
 *
 * @param max - deepest nesting allowed (arrays and objects, `value` itself
 *   at level 1); default {@link MAX_JSON_DEPTH}.
 */
export function unsendable(value: unknown, max: number = MAX_JSON_DEPTH): string | undefined {
  return firstProblem(value, max, true);
}

/**
 * The walk of {@link exceedsDepth} (`strict` false: only the depth counts)
 * and {@link unsendable} (`strict`: also what is not JSON). One stack of
 * (value, depth) pairs, and an object's members read with `for...in` rather
 * than `Object.values`: run on every request, this allocated an array per
 * object visited. Parsed JSON has no inherited enumerable keys.
 */
function firstProblem(value: unknown, max: number, strict: boolean): string | undefined {
  if (value === null || typeof value !== 'object') return strict ? notJson(value, value, max) : undefined;
  const stack: unknown[] = [value, 1];
  while (stack.length > 0) {
    const d = stack.pop() as number;
    const v = stack.pop() as object;
    if (d > max) return `output nested deeper than ${max} levels (or circular)`;
    if (Array.isArray(v)) {
      const a = v as unknown[];
      for (let i = 0; i < a.length; i++) {
        const c = a[i];
        if (typeof c === 'object') {
          if (c !== null) stack.push(c, d + 1);
        } else if (strict && !isJsonLeaf(c)) return notJson(value, c, max);
      }
    } else if (strict ? isPlainObject(v) : !ArrayBuffer.isView(v)) {
      const o = v as Record<string, unknown>;
      for (const k in o) {
        const c = o[k];
        if (typeof c === 'object') {
          if (c !== null) stack.push(c, d + 1);
        } else if (strict && !isJsonLeaf(c)) return notJson(value, c, max);
      }
    } else if (strict) return notJson(value, v, max);
  }
  return undefined;
}

/**
 * A string, finite number, boolean or `undefined` (a member JSON leaves out,
 * as every binding does). `NaN` and ±`Infinity` are not: JSON has no way to
 * write them (JSON-RPC and HTTP+JSON sent `null`), while gRPC's double
 * carries them, so the bindings disagreed on what the caller got.
 */
function isJsonLeaf(c: unknown): boolean {
  return (
    typeof c === 'string' ||
    (typeof c === 'number' && Number.isFinite(c)) ||
    typeof c === 'boolean' ||
    c === undefined
  );
}

function isPlainObject(v: object): boolean {
  const proto: unknown = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

/** Why `bad`, found in `root`, cannot be sent, and where it is; `undefined` for a value JSON carries. */
function notJson(root: unknown, bad: unknown, max: number): string | undefined {
  let what: string;
  switch (typeof bad) {
    case 'bigint':
      what = 'a BigInt';
      break;
    case 'function':
      what = 'a function';
      break;
    case 'symbol':
      what = 'a symbol';
      break;
    case 'number':
      if (Number.isFinite(bad)) return undefined;
      what = `a non-finite number (${String(bad)})`;
      break;
    case 'object':
      what = `${className(bad as object)} object`;
      break;
    default:
      return undefined;
  }
  const at = pathTo(root, bad, max);
  return `output holds ${what}${at ? ` at ${at}` : ''}: only plain objects, arrays, strings, finite numbers, booleans and null can be sent`;
}

/** The class an object was made by (`Date`, `Map`, a class of the application), or `a non-plain`. */
function className(o: object): string {
  const name = constructorName(o);
  return name === undefined ? 'a non-plain' : `a ${name}`;
}

/** A name that reads as an identifier of at most 64 characters (a class, a field): not an index or a 10 KB key. */
export const IDENTIFIER = /^[A-Za-z_$][\w$]{0,63}$/;

/**
 * The name of the class `o` was made by (`Date`, `TypeError`, a class of the
 * application), when it reads as one: at most 64 characters of an
 * identifier. Never throws: a prototype whose getters throw (a Proxy's
 * traps) has no name here.
 */
export function constructorName(o: object): string | undefined {
  try {
    const name: unknown = (Object.getPrototypeOf(o) as { constructor?: { name?: unknown } } | null)
      ?.constructor?.name;
    if (typeof name === 'string' && IDENTIFIER.test(name)) return name;
  } catch {
    // A prototype whose getters throw: no name.
  }
  return undefined;
}

/**
 * The dotted path of `target` in `root` (found on the error's path only), each
 * object looked at once. Compared with `Object.is`, so that a `NaN` is found.
 */
function pathTo(root: unknown, target: unknown, max: number): string | undefined {
  const seen = new Set<object>();
  const look = (v: unknown, depth: number): string | undefined => {
    if (v === null || typeof v !== 'object' || depth > max || seen.has(v)) return undefined;
    seen.add(v);
    for (const k of Object.keys(v)) {
      const c = (v as Record<string, unknown>)[k];
      if (Object.is(c, target)) return k;
      const below = look(c, depth + 1);
      if (below !== undefined) return `${k}.${below}`;
    }
    return undefined;
  };
  return Object.is(root, target) ? undefined : look(root, 1);
}
