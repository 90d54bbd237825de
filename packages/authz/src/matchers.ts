import { SpiffeId, SpiffeIdError } from '@weave/identity';

/**
 * A compiled SPIFFE ID matcher. Forms (see README):
 * - `*`                         any verified caller
 * - `spiffe://td`               every ID in trust domain `td`
 * - `spiffe://td/a/b`           exactly that ID
 * - `spiffe://td/a/*`           `*` is exactly one path segment
 * - `spiffe://td/a/**`          `**` (last segment only) is one or more segments
 * - `{ prefix: "spiffe://td/a" }` the ID itself and everything below it, on segment boundaries
 */
export type IdMatcher = (
  | { readonly kind: 'any' }
  | { readonly kind: 'exact'; readonly id: string; readonly td: string }
  | { readonly kind: 'trustDomain'; readonly td: string }
  | {
      readonly kind: 'prefix';
      readonly td: string;
      readonly path: string;
      readonly pathSlash: string;
      readonly first: string | undefined;
    }
  | {
      readonly kind: 'glob';
      readonly td: string;
      /** Segments; `undefined` stands for `*`. */
      readonly segments: readonly (string | undefined)[];
      /** The pattern ends in `/**`: one or more further segments. */
      readonly deep: boolean;
      readonly first: string | undefined;
    }
) & {
  /** Names what the matcher matches, one text per meaning: the compiled policy keys its rule lists by it. */
  readonly key: string;
};

/** The raw matcher as written in a policy document. */
export type RawIdMatcher = string | { readonly prefix: string };

/** Thrown by the compilers; the policy loader turns it into a located issue. */
export class MatcherSyntaxError extends Error {}

/** Parses `text` as a SPIFFE ID; on failure reports `shown` (the matcher as written) with go-spiffe's reason. */
function parseId(text: string, label: string, shown: string = text): SpiffeId {
  try {
    return SpiffeId.parse(text);
  } catch (err) {
    const reason = err instanceof SpiffeIdError ? err.reason : (err as Error).message;
    throw new MatcherSyntaxError(`${label} ${JSON.stringify(shown)}: ${reason}`);
  }
}

/** Compiles one matcher, or throws {@link MatcherSyntaxError} saying what is wrong. */
export function compileIdMatcher(raw: RawIdMatcher): IdMatcher {
  if (typeof raw === 'object') {
    const id = parseId(raw.prefix, 'invalid SPIFFE ID in prefix');
    if (id.path === '') {
      throw new MatcherSyntaxError(
        `prefix ${JSON.stringify(raw.prefix)} has no path; write "${raw.prefix}" to match the whole trust domain`,
      );
    }
    return {
      kind: 'prefix',
      key: `prefix:${id.toString()}`,
      td: id.trustDomain.name,
      path: id.path,
      pathSlash: `${id.path}/`,
      first: id.segments[0],
    };
  }
  if (raw === '*') return { kind: 'any', key: '*' };
  if (!raw.includes('*')) {
    const id = parseId(raw, 'invalid SPIFFE ID');
    return id.path === ''
      ? { kind: 'trustDomain', key: id.toString(), td: id.trustDomain.name }
      : { kind: 'exact', key: id.toString(), id: id.toString(), td: id.trustDomain.name };
  }
  // A glob: validate it as an ID with each wildcard segment replaced by a placeholder.
  if (!raw.startsWith('spiffe://'))
    throw new MatcherSyntaxError(
      `invalid SPIFFE ID glob ${JSON.stringify(raw)}: scheme is missing or invalid`,
    );
  const rest = raw.slice('spiffe://'.length);
  const slash = rest.indexOf('/');
  const td = slash === -1 ? rest : rest.slice(0, slash);
  if (td.includes('*')) throw new MatcherSyntaxError('wildcards are not allowed in the trust domain');
  const segs = slash === -1 ? [] : rest.slice(slash + 1).split('/');
  segs.forEach((s, i) => {
    if (s.includes('*') && s !== '*' && s !== '**') {
      throw new MatcherSyntaxError(`segment ${JSON.stringify(s)}: "*" and "**" must be whole path segments`);
    }
    if (s === '**' && i !== segs.length - 1) {
      throw new MatcherSyntaxError('"**" is only allowed as the last path segment');
    }
  });
  const placeholder = segs.map((s) => (s === '*' || s === '**' ? 'x' : s));
  parseId(`spiffe://${td}/${placeholder.join('/')}`, 'invalid SPIFFE ID glob', raw);
  const deep = segs[segs.length - 1] === '**';
  const fixed = (deep ? segs.slice(0, -1) : segs).map((s) => (s === '*' ? undefined : s));
  return { kind: 'glob', key: raw, td, segments: fixed, deep, first: fixed[0] };
}

/** Does `m` match an ID with this trust domain, path and segments? */
export function matchId(m: IdMatcher, id: SpiffeId, idString: string, segments: readonly string[]): boolean {
  switch (m.kind) {
    case 'any':
      return true;
    case 'exact':
      return m.id === idString;
    case 'trustDomain':
      return m.td === id.trustDomain.name;
    case 'prefix':
      return m.td === id.trustDomain.name && (id.path === m.path || id.path.startsWith(m.pathSlash));
    case 'glob': {
      if (m.td !== id.trustDomain.name) return false;
      const n = m.segments.length;
      if (m.deep ? segments.length <= n : segments.length !== n) return false;
      for (let i = 0; i < n; i++) {
        const want = m.segments[i];
        if (want !== undefined && want !== segments[i]) return false;
      }
      return true;
    }
  }
}

/** Characters allowed in an action pattern: no glob syntax beyond `*`, so OPA's glob.match agrees. */
const ACTION_PATTERN = /^[A-Za-z0-9._:/-]*(\*[A-Za-z0-9._:/-]*)*$/;

/** Compiled `actions` of one rule. */
export interface ActionMatcher {
  readonly any: boolean;
  readonly exact: ReadonlySet<string>;
  /**
   * Globs whose only `*`s end them (`search.*`), as the text before the `*`:
   * a `startsWith` test, and an index key the policy can look up.
   */
  readonly startsWith: readonly string[];
  /** The other globs (a `*` before literal text: `wr*e`). */
  readonly globs: readonly RegExp[];
  /** The literal text before the first `*` of each glob (`''` for a match-all pattern): an index key. */
  readonly prefixes: readonly string[];
}

/** Checks one action pattern; returns the problem, or undefined when valid. */
export function actionPatternProblem(p: string): string | undefined {
  if (p.length === 0) return 'action pattern cannot be empty';
  if (p.length > 256) return 'action pattern is longer than 256 characters';
  if (!ACTION_PATTERN.test(p)) {
    return 'action patterns may contain letters, digits, ". _ : / -" and "*" (any characters) only';
  }
  return undefined;
}

export function compileActions(patterns: readonly string[]): ActionMatcher {
  const exact = new Set<string>();
  const startsWith = new Set<string>();
  const globs: RegExp[] = [];
  const prefixes = new Set<string>();
  let any = false;
  for (const p of patterns) {
    const star = p.indexOf('*');
    if (star === -1) {
      exact.add(p);
      continue;
    }
    const prefix = p.slice(0, star);
    prefixes.add(prefix);
    // "*" runs only at the end: any text after the prefix matches (dots included), as the regex would.
    if (/^\*+$/.test(p.slice(star))) {
      if (prefix === '') any = true;
      else startsWith.add(prefix);
    } else globs.push(new RegExp(`^${p.split('*').map(escapeRegExp).join('.*')}$`, 's'));
  }
  return { any, exact, startsWith: [...startsWith], globs, prefixes: [...prefixes] };
}

export function matchAction(m: ActionMatcher, action: string): boolean {
  if (m.any || m.exact.has(action)) return true;
  for (const p of m.startsWith) if (action.startsWith(p)) return true;
  for (const g of m.globs) if (g.test(action)) return true;
  return false;
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
}

/**
 * Compiled matchers by their text, carried from one version of a policy to
 * the next: a reload validates and compiles only matchers it has not seen in
 * the version in force (parsing a SPIFFE ID costs more than a map lookup),
 * and keeps only those the new version uses.
 */
export class MatcherCache {
  private readonly ids = new Map<string, IdMatcher>();
  // `{ prefix }` matchers apart from strings: the same text means something else.
  private readonly prefixes = new Map<string, IdMatcher>();
  private readonly actionLists = new Map<string, ActionMatcher>();
  private previous: MatcherCache | undefined;

  constructor(previous?: MatcherCache) {
    this.previous = previous;
  }

  /** {@link compileIdMatcher}, cached; throws {@link MatcherSyntaxError} (never cached). */
  id(raw: RawIdMatcher): IdMatcher {
    const map = typeof raw === 'string' ? this.ids : this.prefixes;
    const key = typeof raw === 'string' ? raw : raw.prefix;
    let m = map.get(key);
    if (m === undefined) {
      const prev = this.previous;
      m = (prev && (typeof raw === 'string' ? prev.ids : prev.prefixes).get(key)) ?? compileIdMatcher(raw);
      map.set(key, m);
    }
    return m;
  }

  /** {@link compileActions}, cached by the list (valid patterns contain no newline). */
  actions(patterns: readonly string[]): ActionMatcher {
    const key = patterns.join('\n');
    let m = this.actionLists.get(key);
    if (m === undefined) {
      m = this.previous?.actionLists.get(key) ?? compileActions(patterns);
      this.actionLists.set(key, m);
    }
    return m;
  }

  /** Drops the link to the previous version, so versions do not chain in memory. */
  detach(): void {
    this.previous = undefined;
  }
}

/**
 * A SPIFFE ID pattern, in the forms a policy rule's `callers` take (`*`,
 * `spiffe://td`, an exact ID, `spiffe://td/a/*`, `spiffe://td/a/**`,
 * `{ prefix }`), as a predicate: for other layers that key a setting by
 * caller (e.g. per-caller limits of the A2A server), so patterns mean the
 * same everywhere.
 *
 * @throws {TypeError} naming what is wrong with the pattern.
 */
export function spiffeIdPattern(raw: RawIdMatcher): (id: SpiffeId) => boolean {
  let m: IdMatcher;
  try {
    m = compileIdMatcher(raw);
  } catch (err) {
    if (err instanceof MatcherSyntaxError) throw new TypeError(err.message);
    throw err;
  }
  return (id) => matchId(m, id, id.toString(), id.segments);
}
