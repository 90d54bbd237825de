/**
 * Reading JSON a user wrote (config files, policies, bundles, command-line
 * arguments) more strictly than `JSON.parse` alone: `JSON.parse` keeps the
 * last of two equal keys in one object without a word, so a second
 * `"verifyPeer"` or `"effect"` further down a file would quietly win. The
 * packages that read such JSON call {@link scanJson} after `JSON.parse` and
 * refuse the text with their own typed error, naming the line and key path.
 * Here because `@weave/identity` is the package every other one depends on.
 */

/** A key path into a JSON value: object keys and array indexes. */
export type JsonPath = readonly (string | number)[];

/** The first key written twice within one JSON object. */
export interface DuplicateJsonKey {
  /** The repeated key. */
  readonly key: string;
  /** Its path, ending with the key itself. */
  readonly path: JsonPath;
  /** Character offset of the second occurrence. */
  readonly offset: number;
}

/** `rules[2].callers[0]`: how a key path is written in Weave's error messages. */
export function formatKeyPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const k of path) {
    if (typeof k === 'number') out += `[${k}]`;
    else out += out === '' ? String(k) : `.${String(k)}`;
  }
  return out;
}

/** 1-based line and column of a character offset in `text`. */
export function lineCol(text: string, offset: number): { line: number; col: number } {
  let line = 1;
  let start = 0;
  for (let i = text.indexOf('\n'); i !== -1 && i < offset; i = text.indexOf('\n', i + 1)) {
    line++;
    start = i + 1;
  }
  return { line, col: offset - start + 1 };
}

/** The keys of one JSON object: a short array (most objects have a few keys), a Set past 16. */
class KeySet {
  private list: string[] | undefined = [];
  private set: Set<string> | undefined;

  /** Adds `key`; false when it was there already. */
  add(key: string): boolean {
    const list = this.list;
    if (list !== undefined) {
      if (list.includes(key)) return false;
      list.push(key);
      if (list.length > 16) {
        this.set = new Set(list);
        this.list = undefined;
      }
      return true;
    }
    const set = this.set as Set<string>;
    if (set.has(key)) return false;
    set.add(key);
    return true;
  }
}

/**
 * One pass over JSON text that `JSON.parse` accepted (call it only then: the
 * scan trusts the text's syntax): reports the offset of every value with its
 * key path (when `onValue` is given) and returns the first key repeated
 * within one object. Keys are compared after unescaping, as `JSON.parse`
 * compares them (`"a"` and `"\u0061"` are the same key). Linear in the text
 * and iterative, so nesting depth cannot overflow the stack.
 *
 * @param onValue - called with a path that the scan keeps changing: copy it to keep it.
 */
export function scanJson(
  text: string,
  onValue?: (path: JsonPath, offset: number) => void,
): DuplicateJsonKey | undefined {
  const path: (string | number)[] = [];
  /** Per open container: the keys seen (objects), or undefined (arrays). */
  const open: (KeySet | undefined)[] = [];
  let expectKey = false;
  const n = text.length;
  for (let i = 0; i < n; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09 || c === 0x3a /* : */) continue;
    if (c === 0x22 /* " */) {
      let j = i + 1;
      let escaped = false;
      for (; ; j++) {
        const d = text.charCodeAt(j);
        if (d === 0x5c /* \ */) {
          escaped = true;
          j++;
        } else if (d === 0x22) break;
      }
      if (expectKey) {
        const key = escaped ? (JSON.parse(text.slice(i, j + 1)) as string) : text.slice(i + 1, j);
        if (!(open[open.length - 1] as KeySet).add(key))
          return { key, path: [...path.slice(0, -1), key], offset: i };
        path[path.length - 1] = key;
        expectKey = false;
      } else onValue?.(path, i);
      i = j;
    } else if (c === 0x7b /* { */ || c === 0x5b /* [ */) {
      onValue?.(path, i);
      const isObject = c === 0x7b;
      open.push(isObject ? new KeySet() : undefined);
      path.push(isObject ? '' : 0);
      expectKey = isObject;
    } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) {
      open.pop();
      path.pop();
      expectKey = false;
    } else if (c === 0x2c /* , */) {
      if (open[open.length - 1] === undefined) path[path.length - 1] = (path[path.length - 1] as number) + 1;
      else expectKey = true;
    } else {
      // A number, true, false or null: runs to the next delimiter.
      onValue?.(path, i);
      while (i + 1 < n && !/[\s,\]}]/.test(text[i + 1] as string)) i++;
    }
  }
  return undefined;
}
