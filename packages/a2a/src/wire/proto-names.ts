/**
 * ProtoJSON field names. A ProtoJSON parser must accept both the lowerCamelCase
 * JSON name of a field (`historyLength`) and its original proto name
 * (`history_length`); servers write the JSON name. Requests are brought to the
 * JSON names here, once, before their zod schema reads them, so a filter sent
 * as `context_id` is applied rather than dropped as an unknown member.
 */
import { A2AErrors } from '../errors.js';

/**
 * Members whose value is a `google.protobuf.Struct` or `Value` (free JSON):
 * their keys are the caller's data, not field names, and are left as they are.
 */
const OPAQUE = new Set(['metadata', 'data', 'params']);

/** A proto field name with at least one underscore, as the spec's proto spells them. */
const PROTO_NAME = /^[a-z][a-z0-9]*(?:_[a-z0-9]+)+$/;

/** `history_length` → `historyLength` (proto3's JSON name rule); other keys stay as they are. */
function jsonName(key: string): string {
  if (!PROTO_NAME.test(key)) return key;
  return key.replace(/_([a-z0-9])/g, (_m, c: string) => c.toUpperCase());
}

/**
 * `value` with every proto field name (`snake_case`) replaced by its JSON
 * name, at any depth except inside Struct/Value members. Returns `value`
 * itself when it has no such name (the common case costs no copy).
 *
 * @throws {A2AError} INVALID_PARAMS when one object carries a field under
 *   both of its names: which one was meant is not the server's guess.
 */
export function withJsonNames(value: unknown, path = ''): unknown {
  // Every request goes through here and almost none carries a proto name:
  // a walk that only looks (no key lists, no path) finds that out first.
  return hasProtoName(value) ? convert(value, path, []) : value;
}

/**
 * Whether a key {@link convert} would rename is anywhere in `value` outside
 * Struct/Value members. `for...in` rather than `Object.keys`, so the walk
 * allocates nothing: it also visits inherited enumerable keys (parsed JSON
 * has none), which can only send a value to `convert`, never keep one from it.
 */
function hasProtoName(value: unknown): boolean {
  if (value === null || typeof value !== 'object') return false;
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) if (hasProtoName(value[i])) return true;
    return false;
  }
  const obj = value as Record<string, unknown>;
  for (const k in obj) {
    if (k.includes('_')) return true;
    const v = obj[k];
    if (v !== null && typeof v === 'object' && !OPAQUE.has(k) && hasProtoName(v)) return true;
  }
  return false;
}

/**
 * {@link withJsonNames} below `root`; `at` is the way down from it (keys and
 * array indexes), turned into a path string only for an error: building one
 * per member visited was most of this function's cost on every request.
 */
function convert(value: unknown, root: string, at: Array<string | number>): unknown {
  if (Array.isArray(value)) {
    let out: unknown[] | undefined;
    for (let i = 0; i < value.length; i++) {
      const v = value[i] as unknown;
      if (v === null || typeof v !== 'object') continue;
      at.push(i);
      const n = convert(v, root, at);
      at.pop();
      if (n !== v) (out ??= value.slice())[i] = n;
    }
    return out ?? value;
  }
  if (value === null || typeof value !== 'object') return value;
  const obj = value as Record<string, unknown>;
  let out: Record<string, unknown> | undefined;
  const keys = Object.keys(obj);
  for (const k of keys) {
    const v = obj[k];
    const name = k.includes('_') ? jsonName(k) : k;
    if (name !== k && Object.prototype.hasOwnProperty.call(obj, name)) {
      const where = pathString(root, at);
      throw A2AErrors.invalidParams(
        `${where}${where ? '.' : ''}${name} is given twice, as ${JSON.stringify(name)} and ${JSON.stringify(k)}`,
      );
    }
    let n = v;
    if (!OPAQUE.has(name) && v !== null && typeof v === 'object') {
      at.push(name);
      n = convert(v, root, at);
      at.pop();
    }
    if (name !== k || n !== v) {
      if (!out) {
        out = {};
        // Keys before this one are unchanged: copy them in order.
        for (const before of keys) {
          if (before === k) break;
          define(out, before, obj[before]);
        }
      }
    }
    if (out) define(out, name, n);
  }
  return out ?? value;
}

/** `root` followed by the way down, as `a.b[2].c`. */
function pathString(root: string, at: ReadonlyArray<string | number>): string {
  let p = root;
  for (const seg of at) p = typeof seg === 'number' ? `${p}[${seg}]` : `${p}${p ? '.' : ''}${seg}`;
  return p;
}

/** Sets an own data property, also for a key such as `__proto__` that plain assignment would not. */
function define(o: Record<string, unknown>, key: string, value: unknown): void {
  Object.defineProperty(o, key, { value, enumerable: true, writable: true, configurable: true });
}
