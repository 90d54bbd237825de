import {
  Composer,
  LineCounter,
  Parser,
  YAMLParseError,
  isAlias,
  isMap,
  isNode,
  isPair,
  isScalar,
  isSeq,
  Scalar,
  type CST,
  type Document,
  type Node,
  type YAMLWarning,
} from 'yaml';
import { z } from 'zod';
import { PolicyError, type PolicyIssue } from './errors.js';
import {
  actionPatternProblem,
  MatcherCache,
  MatcherSyntaxError,
  matchAction,
  matchId,
  type ActionMatcher,
  type IdMatcher,
  type RawIdMatcher,
} from './matchers.js';
import { formatKeyPath, lineCol, scanJson, type SpiffeId } from '@weave/identity';
import { ITEMS_PER_YIELD, runNow, type Slices } from './slices.js';

const NAME = /^[A-Za-z0-9][A-Za-z0-9._:-]*$/;
const name = (what: string) =>
  z
    .string({ error: `${what} must be a string` })
    .max(128, `${what} is longer than 128 characters`)
    .regex(NAME, `${what} may contain letters, digits and ". _ : -", starting with a letter or digit`);

const actionSchema = z.string({ error: 'an action pattern must be a string' }).superRefine((p, ctx) => {
  const problem = actionPatternProblem(p);
  if (problem) ctx.addIssue({ code: 'custom', message: problem, input: p });
});

/**
 * The policy document schema (version 1). Matchers are validated by compiling
 * them through `matchers`, so a reload parses only matchers the policy in
 * force did not have, and the compiler reuses what validation built. Linear
 * in the size of the document.
 */
function documentSchema(matchers: MatcherCache) {
  const idMatcherSchema = z
    .union([z.string(), z.strictObject({ prefix: z.string() })], {
      error:
        'a matcher is a string ("*", "spiffe://td", "spiffe://td/path", a glob) or { prefix: "spiffe://td/path" }',
    })
    .superRefine((m, ctx) => {
      try {
        matchers.id(m);
      } catch (err) {
        if (!(err instanceof MatcherSyntaxError)) throw err;
        ctx.addIssue({ code: 'custom', message: err.message, input: m });
      }
    });

  const matcherList = (what: string) =>
    z
      .array(idMatcherSchema, { error: `${what} must be a list of matchers` })
      .min(1, `${what} cannot be empty`);

  const ruleSchema = z.strictObject({
    id: name('rule id'),
    effect: z.enum(['allow', 'deny'], { error: 'effect must be "allow" or "deny"' }),
    callers: matcherList('callers'),
    callees: matcherList('callees').optional(),
    actions: z
      .array(actionSchema, { error: 'actions must be a list of action patterns' })
      .min(1, 'actions cannot be empty'),
    description: z.string().optional(),
  });

  const rules = z.array(ruleSchema, { error: 'rules must be a list' });
  const document = z.strictObject({
    version: z.literal(1, { error: 'version must be 1' }),
    id: name('policy id'),
    default: z.literal('deny', { error: 'default must be "deny": Weave has no default that allows' }),
    description: z.string().optional(),
    rules,
  });
  return { document, rules };
}

/** A validated policy document, as written in YAML or JSON. */
export interface PolicyDocument {
  readonly version: 1;
  readonly id: string;
  readonly default: 'deny';
  readonly description?: string | undefined;
  readonly rules: readonly PolicyRule[];
}

/** One rule of a {@link PolicyDocument}. */
export interface PolicyRule {
  readonly id: string;
  readonly effect: 'allow' | 'deny';
  readonly callers: readonly RawIdMatcher[];
  /** When present, the rule matches only checks whose callee is given and matches. */
  readonly callees?: readonly RawIdMatcher[] | undefined;
  readonly actions: readonly string[];
  readonly description?: string | undefined;
}

const MAX_ISSUES = 20;

function valueAt(root: unknown, path: readonly PropertyKey[]): { found: boolean; value: unknown } {
  let cur: unknown = root;
  for (const k of path) {
    if (cur === null || typeof cur !== 'object' || !Object.hasOwn(cur, k))
      return { found: false, value: undefined };
    cur = (cur as Record<PropertyKey, unknown>)[k];
  }
  return { found: true, value: cur };
}

function zodIssues(
  err: { readonly issues: readonly z.core.$ZodIssue[] },
  root: unknown,
  locate: (path: readonly PropertyKey[]) => { line: number; col: number } | undefined,
): PolicyIssue[] {
  const issues: PolicyIssue[] = [];
  for (const iss of err.issues.slice(0, MAX_ISSUES)) {
    if (iss.code === 'unrecognized_keys') {
      for (const key of iss.keys) {
        const path = [...iss.path, key];
        issues.push({
          ...locate(path),
          path: formatKeyPath(path),
          message: `unknown key ${JSON.stringify(key)}`,
        });
      }
      continue;
    }
    let message = iss.message;
    const last = iss.path[iss.path.length - 1];
    if (last !== undefined && typeof last !== 'number' && !valueAt(root, iss.path).found) {
      message = `missing required key ${JSON.stringify(String(last))}`;
    }
    issues.push({ ...locate(iss.path), path: formatKeyPath(iss.path), message });
  }
  return issues;
}

/**
 * Validates a policy given as a plain object (e.g. JSON already parsed).
 *
 * @throws {PolicyError} listing every problem with its key path.
 */
export function validatePolicy(input: unknown, source = '<object>'): PolicyDocument {
  return validatePolicyWith(input, source, new MatcherCache());
}

/** {@link validatePolicy} compiling matchers through `matchers` (see {@link CompiledPolicy}). */
export function validatePolicyWith(input: unknown, source: string, matchers: MatcherCache): PolicyDocument {
  const res = runNow(checkDocument(input, matchers, undefined));
  if (!res.success)
    throw new PolicyError(
      source,
      zodIssues(res, input, () => undefined),
    );
  return res.data;
}

/**
 * Parses and validates a policy document in YAML or JSON. Text whose first
 * character is `{` is JSON, read by `JSON.parse` (a 100 000-rule file in
 * tens of milliseconds, where the YAML parser takes tens of seconds) with its
 * own duplicate-key check and line numbers; anything else is YAML.
 *
 * @throws {PolicyError} whose issues name the line, the key path and the problem.
 */
export function parsePolicy(text: string, source = '<string>'): PolicyDocument {
  return runNow(parsePolicyInSlices(text, source, new MatcherCache()));
}

/**
 * {@link parsePolicy} as work in slices (see {@link Slices}), compiling
 * matchers through `matchers` (see {@link CompiledPolicy}); `known` gives the
 * validated rules of the policy in force, whose equals are not validated again.
 */
function parsePolicyInSlices(
  text: string,
  source: string,
  matchers: MatcherCache,
  known?: KnownRules,
): Slices<PolicyDocument> {
  return /^\s*\{/.test(text)
    ? parseJsonPolicy(text, source, matchers, known)
    : parseYamlPolicy(text, source, matchers, known);
}

/**
 * Deepest nesting of maps and lists a policy document may have, counting the
 * document itself. A valid policy has five at most (document, `rules`, a
 * rule, `callers`, `{ prefix }`); the YAML composer recurses once per level
 * and runs out of stack near a thousand, at a depth that depends on the
 * caller's stack. A deeper document is refused with this bound and its
 * line: YAML before the composer sees it, JSON (which `JSON.parse` reads
 * without recursing) before its issues are located.
 */
const MAX_POLICY_DEPTH = 32;

const tooDeepIssue = (pos: { line: number; col: number }): PolicyIssue => ({
  ...pos,
  path: '',
  message: `nested deeper than ${MAX_POLICY_DEPTH} levels of maps and lists: a policy has 5 at most`,
});

/** How a policy is read from YAML: the 1.2 core schema whatever a "%YAML 1.1" line says. */
const YAML_OPTIONS = {
  uniqueKeys: true,
  prettyErrors: false,
  strict: true,
  // No merge keys, no 1.1 booleans ("no" is a string), and no tags beyond the core ones
  // (!!set, !!timestamp … are left unresolved).
  schema: 'core',
  merge: false,
  resolveKnownTags: false,
} as const;

function* parseYamlPolicy(
  text: string,
  source: string,
  matchers: MatcherCache,
  known: KnownRules | undefined,
): Slices<PolicyDocument> {
  const lineCounter = new LineCounter();
  // parseDocument's two stages, with a depth check between them: the parser builds its syntax
  // tree without recursing, the composer recurses per level of nesting.
  const tokens = Array.from(new Parser(lineCounter.addNewLine).parse(text));
  const deep = yield* yamlTooDeep(tokens);
  if (deep !== undefined) throw new PolicyError(source, [tooDeepIssue(lineCounter.linePos(deep))]);
  const doc = composeOne(tokens, text.length);
  if (doc.errors.length > 0) {
    throw new PolicyError(
      source,
      doc.errors.slice(0, MAX_ISSUES).map((e) => {
        const pos = lineCounter.linePos(e.pos[0]);
        return { line: pos.line, col: pos.col, path: '', message: firstLine(e.message) };
      }),
    );
  }
  const hazards = yield* yamlHazards(doc, lineCounter);
  const doubts = yamlWarnings(doc.warnings, hazards.length > 0, lineCounter);
  if (doubts.length > 0 || hazards.length > 0)
    throw new PolicyError(source, [...doubts, ...hazards].slice(0, MAX_ISSUES));
  let value: unknown;
  try {
    value = doc.toJS({ maxAliasCount: 100 });
  } catch (err) {
    throw new PolicyError(
      source,
      [{ path: '', message: `cannot read document: ${(err as Error).message}` }],
      { cause: err },
    );
  }
  if (value === null || value === undefined)
    throw new PolicyError(source, [{ path: '', message: 'the policy document is empty' }]);
  yield;
  const res = yield* checkDocument(value, matchers, known);
  if (!res.success)
    throw new PolicyError(
      source,
      zodIssues(res, value, (path) => locate(doc, lineCounter, path)),
    );
  return res.data;
}

/** The one document of `tokens`, composed as `parseDocument` does (a second one is an error). */
function composeOne(tokens: readonly CST.Token[], length: number): Document.Parsed {
  const composer = new Composer(YAML_OPTIONS);
  let doc: Document.Parsed | undefined;
  for (const next of composer.compose(tokens, true, length)) {
    if (doc === undefined) doc = next;
    else {
      doc.errors.push(
        new YAMLParseError(
          [next.range[0], next.range[1]],
          'MULTIPLE_DOCS',
          'Source contains multiple documents; a policy is one document',
        ),
      );
      break;
    }
  }
  // compose(…, true) always ends with a document, an empty one for empty text.
  return doc as Document.Parsed;
}

/**
 * The offset of the first map or list nested deeper than
 * {@link MAX_POLICY_DEPTH} in the parser's syntax tree, if any. Iterative,
 * in slices.
 */
function* yamlTooDeep(tokens: readonly CST.Token[]): Slices<number | undefined> {
  // Two stacks in reverse, so the first too deep in the text is found first.
  const todo: (CST.Token | null | undefined)[] = [...tokens].reverse();
  const depths: number[] = todo.map(() => 0);
  for (let n = 1; todo.length > 0; n++) {
    if (n % ITEMS_PER_YIELD === 0) yield;
    const token = todo.pop();
    const depth = depths.pop() as number;
    if (!token) continue;
    if (token.type === 'document') {
      todo.push(token.value);
      depths.push(depth);
    } else if (token.type === 'block-map' || token.type === 'block-seq' || token.type === 'flow-collection') {
      if (depth + 1 > MAX_POLICY_DEPTH) return token.offset;
      for (let i = token.items.length - 1; i >= 0; i--) {
        const item = token.items[i] as CST.CollectionItem;
        todo.push(item.value, item.key);
        depths.push(depth + 1, depth + 1);
      }
    }
  }
  return undefined;
}

/** Warnings about tags, each of which the tag check of {@link yamlHazards} reports in its own words. */
const TAG_WARNINGS: ReadonlySet<string> = new Set(['TAG_RESOLVE_FAILED', 'BAD_COLLECTION_TYPE']);

/**
 * The parser's warnings, as issues: each is a place where the document may
 * not mean what it seems to, so none is let through. With the options of
 * {@link YAML_OPTIONS} the parser warns of an unknown directive (`%FOO bar`,
 * ignored: it may have been meant to change how the rest reads), a `%YAML`
 * version it does not implement (read as 1.2 regardless), an anchor or alias
 * ending in `:` (`&k: deny` names the anchor `k:`, where `k` and a key may
 * have been meant), and a tag it cannot resolve; a kind a later version adds
 * is refused too. Tag warnings are left out when `tagsReported`, as the tag
 * check has named the same tags.
 */
function yamlWarnings(
  warnings: readonly YAMLWarning[],
  tagsReported: boolean,
  lc: LineCounter,
): PolicyIssue[] {
  return warnings
    .filter((w) => !(tagsReported && TAG_WARNINGS.has(w.code)))
    .map((w) => ({
      ...lc.linePos(w.pos[0]),
      path: '',
      message: `${firstLine(w.message)} (YAML warning ${w.code}): a policy is refused rather than read in a way the parser doubts`,
    }));
}

/** The tags of YAML 1.2's core schema (and `!`, the non-specific tag), each with the kind of node it must have resolved to. */
const CORE_TAGS: ReadonlyMap<string, (node: Node) => boolean> = new Map<string, (node: Node) => boolean>([
  ['!', (n) => isScalar(n) && typeof n.value === 'string'],
  ['tag:yaml.org,2002:str', (n) => isScalar(n) && typeof n.value === 'string'],
  ['tag:yaml.org,2002:int', (n) => isScalar(n) && typeof n.value === 'number'],
  ['tag:yaml.org,2002:float', (n) => isScalar(n) && typeof n.value === 'number'],
  ['tag:yaml.org,2002:bool', (n) => isScalar(n) && typeof n.value === 'boolean'],
  ['tag:yaml.org,2002:null', (n) => isScalar(n) && n.value === null],
  ['tag:yaml.org,2002:map', isMap],
  ['tag:yaml.org,2002:seq', isSeq],
]);

/** Where a node sits: its parent's place and its key there (none for the root and for map keys). */
interface Place {
  readonly parent: Place | undefined;
  readonly key: PropertyKey | undefined;
}

function placePath(at: Place | undefined): PropertyKey[] {
  const path: PropertyKey[] = [];
  for (let p = at; p !== undefined; p = p.parent) if (p.key !== undefined) path.push(p.key);
  return path.reverse();
}

/**
 * Refuses YAML that reads differently from how it looks, and that the
 * parser's duplicate-key check cannot see through: an alias as a map key
 * (`*k : allow` after `&k effect: deny`; the check compares written keys
 * only), a merge key (`<<`), and a tag outside the core schema (`!deny
 * allow` is the string "allow") or one the parser could not apply
 * (`!!int abc`). Aliases as values stay allowed: the node they repeat is
 * checked where it is written, and `toJS`'s alias count bounds how far they
 * expand. Walks the nodes once, without following aliases, in slices.
 */
function* yamlHazards(doc: Document, lc: LineCounter): Slices<PolicyIssue[]> {
  const issues: PolicyIssue[] = [];
  const report = (node: Node, at: Place | undefined, message: string) => {
    const pos = node.range ? lc.linePos(node.range[0]) : undefined;
    issues.push({ ...pos, path: formatKeyPath(placePath(at)), message });
  };
  // A stack in reverse, so issues come in the order of the text.
  const todo: { node: unknown; at: Place | undefined; isKey: boolean }[] = [
    { node: doc.contents, at: undefined, isKey: false },
  ];
  const pushPair = (key: unknown, value: unknown, at: Place | undefined, name: PropertyKey | undefined) => {
    todo.push({ node: value, at: name === undefined ? at : { parent: at, key: name }, isKey: false });
    todo.push({ node: key, at, isKey: true });
  };
  for (let n = 1; todo.length > 0 && issues.length < MAX_ISSUES; n++) {
    if (n % ITEMS_PER_YIELD === 0) yield;
    const { node, at, isKey } = todo.pop() as (typeof todo)[number];
    if (!isNode(node)) continue;
    if (isAlias(node)) {
      if (isKey)
        report(
          node,
          at,
          `alias *${node.source} as a map key: write the key out, so that a duplicate is found`,
        );
      continue;
    }
    if (
      isKey &&
      isScalar(node) &&
      node.value === '<<' &&
      (node.type === undefined || node.type === Scalar.PLAIN)
    )
      report(node, at, 'merge key "<<": merge keys are not allowed, write each key in the map itself');
    if (node.tag !== undefined) {
      const fits = CORE_TAGS.get(node.tag);
      const tag = doc.directives?.tagString(node.tag) ?? node.tag;
      if (fits === undefined)
        report(
          node,
          at,
          `tag ${tag} is not allowed: a policy uses only the tags of YAML's core schema (!!str, !!int, !!float, !!bool, !!null, !!map, !!seq)`,
        );
      else if (!fits(node)) report(node, at, `tag ${tag} does not fit this value`);
    }
    if (isMap(node)) {
      for (let i = node.items.length - 1; i >= 0; i--) {
        const pair = node.items[i];
        if (pair === undefined) continue;
        const k: unknown = isScalar(pair.key) ? pair.key.value : undefined;
        pushPair(
          pair.key,
          pair.value,
          at,
          typeof k === 'string' || typeof k === 'number' ? String(k) : undefined,
        );
      }
    } else if (isSeq(node)) {
      for (let i = node.items.length - 1; i >= 0; i--) {
        const item: unknown = node.items[i];
        const here: Place = { parent: at, key: i };
        if (isPair(item)) pushPair(item.key, item.value, here, undefined);
        else todo.push({ node: item, at: here, isKey: false });
      }
    }
  }
  return issues;
}

const YAML_FALLBACK_MAX = 1 << 20;

/**
 * The offset of the first `{` or `[` nested deeper than
 * {@link MAX_POLICY_DEPTH} in JSON text that `JSON.parse` accepted, if any.
 */
function jsonTooDeep(text: string): number | undefined {
  let depth = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22 /* " */) {
      // Brackets inside a string do not nest; the text is valid JSON, so the string ends.
      for (i++; ; i++) {
        const d = text.charCodeAt(i);
        if (d === 0x5c /* \ */) i++;
        else if (d === 0x22) break;
      }
    } else if (c === 0x7b /* { */ || c === 0x5b /* [ */) {
      if (++depth > MAX_POLICY_DEPTH) return i;
    } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) depth--;
  }
  return undefined;
}

function* parseJsonPolicy(
  text: string,
  source: string,
  matchers: MatcherCache,
  known: KnownRules | undefined,
): Slices<PolicyDocument> {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    // Not JSON: may be a YAML flow mapping ("{version: 1, …}"), which YAML always accepted. The
    // YAML parser also locates syntax errors best; above 1 MiB it is too slow for that (seconds
    // on the event loop), so a large file gets the JSON parser's own position.
    if (text.length <= YAML_FALLBACK_MAX) return yield* parseYamlPolicy(text, source, matchers, known);
    // V8 names the offset for most syntax errors ("… in JSON at position 42").
    const message = firstLine((err as Error).message);
    const at = /at position (\d+)/.exec(message);
    const pos = at ? lineCol(text, Number(at[1])) : {};
    throw new PolicyError(source, [{ ...pos, path: '', message: `invalid JSON: ${message}` }], {
      cause: err,
    });
  }
  yield;
  // JSON.parse keeps the last of duplicate keys silently; the YAML parser refuses them, and so
  // must this: a second "effect" further down a rule must not quietly win.
  const dup = scanJson(text);
  if (dup) {
    throw new PolicyError(source, [
      {
        ...lineCol(text, dup.offset),
        path: formatKeyPath(dup.path),
        message: `duplicate key ${JSON.stringify(dup.key)}: map keys must be unique`,
      },
    ]);
  }
  yield;
  const res = yield* checkDocument(value, matchers, known);
  if (!res.success) {
    // Locating a deep document's issues costs the square of its depth (a 40 kB file nested
    // 20 000 deep ran the process out of memory). Only an invalid document is deeper than five,
    // so a valid one is not scanned for it.
    const deep = jsonTooDeep(text);
    if (deep !== undefined) throw new PolicyError(source, [tooDeepIssue(lineCol(text, deep))]);
    // Only a bad document pays for locating its issues: one more pass over the text.
    const offsets = new Map<string, number>();
    scanJson(text, (path, offset) => offsets.set(formatKeyPath(path), offset));
    throw new PolicyError(
      source,
      zodIssues(res, value, (path) => {
        for (let n = path.length; n >= 0; n--) {
          const offset = offsets.get(formatKeyPath(path.slice(0, n)));
          if (offset !== undefined) return lineCol(text, offset);
        }
        return undefined;
      }),
    );
  }
  return res.data;
}

/**
 * Parses, validates and compiles policy text, reusing what `previous`
 * compiled (its matchers, and its rules that are unchanged). In slices: a
 * file load or reload runs it with the event loop turning between them (the
 * policy in force decides meanwhile), a string is compiled at once.
 */
export function* compileText(
  text: string,
  source: string,
  previous?: CompiledPolicy,
): Slices<CompiledPolicy> {
  const matchers = new MatcherCache(previous?.matchers);
  const known = previous && ((id: string) => previous.rule(id)?.source);
  const doc = yield* parsePolicyInSlices(text, source, matchers, known);
  return yield* CompiledPolicy.inSlices(doc, previous, matchers);
}

/** The validated rules of the policy in force, by id. */
type KnownRules = (id: string) => PolicyRule | undefined;

type Checked =
  | { readonly success: true; readonly data: PolicyDocument }
  | { readonly success: false; readonly issues: readonly z.core.$ZodIssue[] };

/**
 * Validates a document with the schema, except rules equal (as JSON values)
 * to a rule of the policy in force: those were validated when it was loaded,
 * and its validated object is kept, so a reload runs zod over the changed
 * rules only. Then checks that rule ids are unique across all of them.
 * Linear in the size of the document; the rules are validated in slices of
 * {@link ITEMS_PER_YIELD}, and validation stops once a page of issues
 * ({@link MAX_ISSUES}, all a {@link PolicyError} shows) is found.
 */
function* checkDocument(
  value: unknown,
  matchers: MatcherCache,
  known: KnownRules | undefined,
): Slices<Checked> {
  const schema = documentSchema(matchers);
  const rules = (value as { rules?: unknown } | null)?.rules;
  if (!Array.isArray(rules) || typeof value !== 'object') {
    const res = schema.document.safeParse(value);
    return res.success ? yield* uniqueIds(res.data) : { success: false, issues: res.error.issues };
  }
  const kept: (PolicyRule | undefined)[] = new Array<PolicyRule | undefined>(rules.length);
  const fresh: number[] = [];
  for (let i = 0; i < rules.length; i++) {
    const k = known === undefined ? undefined : unchanged(rules[i], known);
    kept[i] = k;
    if (k === undefined) fresh.push(i);
    if (i % ITEMS_PER_YIELD === ITEMS_PER_YIELD - 1) yield;
  }
  // The document around its rules, then the rules to validate, a slice at a time.
  const head = schema.document.safeParse({ ...value, rules: [] });
  const issues: z.core.$ZodIssue[] = head.success ? [] : [...head.error.issues];
  for (let j = 0; j < fresh.length && issues.length < MAX_ISSUES; j += ITEMS_PER_YIELD) {
    const slice = fresh.slice(j, j + ITEMS_PER_YIELD);
    const res = schema.rules.safeParse(slice.map((i) => rules[i] as unknown));
    if (res.success) res.data.forEach((r, m) => (kept[slice[m] as number] = r));
    else {
      // Issue paths name the position in the whole list, not in the slice.
      for (const iss of res.error.issues)
        issues.push({
          ...iss,
          path: ['rules', slice[iss.path[0] as number] as number, ...iss.path.slice(1)],
        });
    }
    yield;
  }
  if (!head.success || issues.length > 0) return { success: false, issues };
  return yield* uniqueIds({ ...head.data, rules: kept as PolicyRule[] });
}

/** Refuses a document whose rule ids are not unique. */
function* uniqueIds(data: PolicyDocument): Slices<Checked> {
  const issues: z.core.$ZodIssue[] = [];
  const seen = new Map<string, number>();
  for (let i = 0; i < data.rules.length; i++) {
    const r = data.rules[i] as PolicyRule;
    const first = seen.get(r.id);
    if (first === undefined) seen.set(r.id, i);
    else
      issues.push({
        code: 'custom',
        input: r.id,
        path: ['rules', i, 'id'],
        message: `duplicate rule id ${JSON.stringify(r.id)} (first used by rules[${first}])`,
      });
    if (i % ITEMS_PER_YIELD === ITEMS_PER_YIELD - 1) yield;
  }
  return issues.length > 0 ? { success: false, issues } : { success: true, data };
}

/** The validated rule of the policy in force that `raw` equals, if any. */
function unchanged(raw: unknown, known: KnownRules): PolicyRule | undefined {
  if (typeof raw !== 'object' || raw === null) return undefined;
  const id = (raw as { id?: unknown }).id;
  if (typeof id !== 'string') return undefined;
  const k = known(id);
  return k !== undefined && sameJson(raw, k) ? k : undefined;
}

/** Deep equality of JSON-like values; recursion is bounded by the depth of `b` (a validated rule). */
function sameJson(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  const ka = Object.keys(a);
  if (ka.length !== Object.keys(b).length) return false;
  for (const key of ka) {
    if (!Object.hasOwn(b, key)) return false;
    if (!sameJson((a as Record<string, unknown>)[key], (b as Record<string, unknown>)[key])) return false;
  }
  return true;
}

function firstLine(s: string): string {
  const i = s.indexOf('\n');
  return i === -1 ? s : s.slice(0, i);
}

/** Line of the deepest node that exists along `path` (a missing key points at its parent). */
function locate(
  doc: Document,
  lc: LineCounter,
  path: readonly PropertyKey[],
): { line: number; col: number } | undefined {
  for (let n = path.length; n >= 0; n--) {
    const node: unknown = n === 0 ? doc.contents : doc.getIn(path.slice(0, n) as unknown[], true);
    if (isNode(node) && node.range) return lc.linePos(node.range[0]);
  }
  return undefined;
}

/** A rule ready for evaluation. */
export interface CompiledRule {
  readonly index: number;
  readonly id: string;
  readonly deny: boolean;
  readonly callers: readonly IdMatcher[];
  readonly callees: readonly IdMatcher[] | undefined;
  readonly actions: ActionMatcher;
  /** The decision's `reason` when this rule decides, built once rather than per decision. */
  readonly reason: string;
  /** The rule as written: a reload reuses this compiled rule when it is unchanged. */
  readonly source: PolicyRule;
}

/** The earliest rule of each effect under one exact key: an exact key needs no further test. */
interface First {
  deny: CompiledRule | undefined;
  allow: CompiledRule | undefined;
}

/**
 * Rules whose caller matcher already matched, narrowed further by callee and
 * action. Up to {@link SMALL_TABLE} rules are scanned. Above that, rules
 * whose action patterns are exact names or end in their only `*`s
 * (`search.*`, `*`) and whose callees are exact IDs (or absent) go into two
 * maps keyed by `callee\naction` and by action (a pattern `p*` under the key
 * `p*`), holding only the earliest deny and allow per key; a check looks up
 * its action, and `p*` for each such prefix `p` of the policy its action
 * starts with ({@link ActionPrefixes}: usually none or one). The other rules
 * (other globs, callee patterns) are scanned when few, else indexed on callee
 * and action (exact name, literal text before a glob's first `*`), with one
 * list per effect in file order, so a check stops at the first full match of
 * each list. A check thus touches a few map entries, not every rule: its cost
 * (and the memory it pulls into the CPU cache, which is what a decision over
 * 100 000 rules waits on) does not grow with the number of rules.
 *
 * A key `p*` cannot be confused with an exact action: exact patterns contain
 * no `*`, and a checked action that is literally `p*` starts with `p`, so the
 * rules under that key match it anyway.
 */
class RuleTable {
  private readonly rules: CompiledRule[] = [];
  private pairs: Map<string, First> | undefined;
  private noCallee: Map<string, First> | undefined;
  /** `pairs` / `noCallee` hold `p*` keys: a check also looks up its action's prefixes. */
  private pairGlobs = false;
  private noCalleeGlobs = false;
  private rest: CompiledRule[] = this.rules;
  private index: CalleeIndex | undefined;

  add(rule: CompiledRule): void {
    if (this.rules[this.rules.length - 1] !== rule) this.rules.push(rule);
  }

  /**
   * Takes over the sealed index of `old` when it holds the very same rule
   * objects in the same order (a reload that left them alone), else seals anew.
   */
  *sealReusing(old: RuleTable | undefined): Slices<void> {
    const a = this.rules;
    const b = old?.rules;
    if (b === undefined || a.length !== b.length || a.some((r, i) => r !== b[i])) {
      yield* this.seal();
      return;
    }
    const o = old as RuleTable;
    this.pairs = o.pairs;
    this.noCallee = o.noCallee;
    this.pairGlobs = o.pairGlobs;
    this.noCalleeGlobs = o.noCalleeGlobs;
    this.rest = o.rest;
    this.index = o.index;
  }

  *seal(): Slices<void> {
    if (this.rules.length <= SMALL_TABLE) return;
    const rest: CompiledRule[] = [];
    for (let i = 0; i < this.rules.length; i++) {
      if (i % ITEMS_PER_YIELD === ITEMS_PER_YIELD - 1) yield;
      const rule = this.rules[i] as CompiledRule;
      const keys = actionKeys(rule);
      if (keys === undefined) {
        rest.push(rule);
        continue;
      }
      const globs = keys.length > rule.actions.exact.size;
      if (rule.callees === undefined) {
        const map = (this.noCallee ??= new Map());
        for (const k of keys) keepFirst(map, k, rule);
        this.noCalleeGlobs ||= globs;
      } else {
        const map = (this.pairs ??= new Map());
        for (const m of rule.callees)
          for (const k of keys) keepFirst(map, `${(m as { id: string }).id}\n${k}`, rule);
        this.pairGlobs ||= globs;
      }
    }
    this.rest = rest;
    if (rest.length > SMALL_TABLE) this.index = yield* calleeIndex(rest);
  }

  collect(st: MatchState): void {
    const noCallee = this.noCallee;
    if (noCallee !== undefined) {
      takeFirst(st, noCallee.get(st.action));
      if (this.noCalleeGlobs) for (const p of prefixesOf(st)) takeFirst(st, noCallee.get(p.key));
    }
    const pairs = this.pairs;
    if (pairs !== undefined && st.calleeString !== undefined) {
      takeFirst(st, pairs.get((st.pairKey ??= `${st.calleeString}\n${st.action}`)));
      if (this.pairGlobs) {
        st.pairPrefixKeys ??= prefixesOf(st).map((p) => `${st.calleeString as string}\n${p.key}`);
        for (const k of st.pairPrefixKeys) takeFirst(st, pairs.get(k));
      }
    }
    const ix = this.index;
    if (ix === undefined) {
      for (const r of this.rest) consider(st, r);
      return;
    }
    collectActions(st, ix.none);
    const callee = st.callee;
    if (callee === undefined) return;
    const exact = ix.exact.get(st.calleeString as string);
    if (exact) collectActions(st, exact);
    if (ix.any) collectActions(st, ix.any);
    const byTd = ix.byTd.get(callee.trustDomain.name);
    if (byTd) collectActions(st, byTd);
  }
}

/**
 * The map keys of a rule's action patterns (exact names; `p*` for a pattern
 * whose `*`s all end it), when the rule can be looked up by key: no other
 * globs, and no callees or exact ones, in a bounded number of keys. Else
 * undefined: the rule is tested in full.
 */
function actionKeys(rule: CompiledRule): string[] | undefined {
  const a = rule.actions;
  if (a.globs.length > 0) return undefined;
  const keys = [...a.exact];
  for (const p of a.startsWith) keys.push(`${p}*`);
  if (a.any) keys.push('*');
  if (rule.callees === undefined) return keys;
  if (rule.callees.length * keys.length > MAX_PAIRS) return undefined;
  return rule.callees.every((m) => m.kind === 'exact') ? keys : undefined;
}

/** A rule naming more callee × action pairs than this goes to the indexed rest, not the pair map. */
const MAX_PAIRS = 64;

function keepFirst(map: Map<string, First>, key: string, rule: CompiledRule): void {
  let f = map.get(key);
  if (f === undefined) map.set(key, (f = { deny: undefined, allow: undefined }));
  // Rules are added in file order: the first of each effect stays.
  if (rule.deny) f.deny ??= rule;
  else f.allow ??= rule;
}

function takeFirst(st: MatchState, f: First | undefined): void {
  if (f === undefined) return;
  if (f.deny !== undefined && (st.deny === undefined || f.deny.index < st.deny.index)) st.deny = f.deny;
  if (f.allow !== undefined && (st.allow === undefined || f.allow.index < st.allow.index)) st.allow = f.allow;
}

const SMALL_TABLE = 4;

/** One list per effect, in file order. */
interface Split {
  readonly deny: CompiledRule[];
  readonly allow: CompiledRule[];
}

interface ActionIndex {
  readonly exact: Map<string, Split>;
  /** By the literal text before a glob's first `*`. */
  readonly byPrefix: Map<string, Split>;
}

interface CalleeIndex {
  /** Rules without `callees`. */
  readonly none: ActionIndex;
  readonly exact: Map<string, ActionIndex>;
  /** Rules with a `*` callee. */
  any: ActionIndex | undefined;
  /** Rules with a trust-domain, prefix or glob callee, by its trust domain. */
  readonly byTd: Map<string, ActionIndex>;
}

const newActionIndex = (): ActionIndex => ({ exact: new Map(), byPrefix: new Map() });

function pushTo(map: Map<string, Split>, key: string, rule: CompiledRule): void {
  let split = map.get(key);
  if (!split) map.set(key, (split = { deny: [], allow: [] }));
  const list = rule.deny ? split.deny : split.allow;
  if (list[list.length - 1] !== rule) list.push(rule);
}

function addAction(ix: ActionIndex, rule: CompiledRule): void {
  for (const a of rule.actions.exact) pushTo(ix.exact, a, rule);
  for (const p of rule.actions.prefixes) pushTo(ix.byPrefix, p, rule);
}

function* calleeIndex(rules: readonly CompiledRule[]): Slices<CalleeIndex> {
  const ix: CalleeIndex = { none: newActionIndex(), exact: new Map(), any: undefined, byTd: new Map() };
  const at = (map: Map<string, ActionIndex>, key: string): ActionIndex => {
    let a = map.get(key);
    if (!a) map.set(key, (a = newActionIndex()));
    return a;
  };
  for (let i = 0; i < rules.length; i++) {
    if (i % ITEMS_PER_YIELD === ITEMS_PER_YIELD - 1) yield;
    const rule = rules[i] as CompiledRule;
    if (rule.callees === undefined) {
      addAction(ix.none, rule);
      continue;
    }
    for (const m of rule.callees) {
      if (m.kind === 'any') addAction((ix.any ??= newActionIndex()), rule);
      else if (m.kind === 'exact') addAction(at(ix.exact, m.id), rule);
      else addAction(at(ix.byTd, m.td), rule);
    }
  }
  return ix;
}

function collectActions(st: MatchState, ix: ActionIndex): void {
  const exact = ix.exact.get(st.action);
  if (exact) collectSplit(st, exact);
  if (ix.byPrefix.size === 0) return;
  for (const p of prefixesOf(st)) {
    const split = ix.byPrefix.get(p.prefix);
    if (split) collectSplit(st, split);
  }
}

function collectSplit(st: MatchState, split: Split): void {
  for (const r of split.deny) {
    if (st.deny !== undefined && st.deny.index <= r.index) break;
    if (matchesRest(st, r)) {
      st.deny = r;
      break;
    }
  }
  for (const r of split.allow) {
    if (st.allow !== undefined && st.allow.index <= r.index) break;
    if (matchesRest(st, r)) {
      st.allow = r;
      break;
    }
  }
}

/**
 * Literal path segments of caller patterns (prefixes and globs) of one trust
 * domain, as a tree: a check walks the caller's own segments, visiting only
 * the patterns that can match it.
 */
interface SegmentNode {
  children?: Map<string, SegmentNode>;
  /** The `*` segment of globs. */
  star?: SegmentNode;
  /** `{ prefix }` matchers ending here: this ID and everything below it. */
  prefix?: RuleTable;
  /** Globs ending here. */
  end?: RuleTable;
  /** Globs ending here in `/**`: one or more further segments. */
  deep?: RuleTable;
}

function insertPattern(root: SegmentNode, m: IdMatcher, rule: CompiledRule): RuleTable {
  let node = root;
  const step = (seg: string | undefined): void => {
    if (seg === undefined) node = node.star ??= {};
    else {
      const children = (node.children ??= new Map());
      let next = children.get(seg);
      if (!next) children.set(seg, (next = {}));
      node = next;
    }
  };
  let table: RuleTable;
  if (m.kind === 'prefix') {
    for (const seg of m.path.slice(1).split('/')) step(seg);
    table = node.prefix ??= new RuleTable();
  } else if (m.kind === 'glob') {
    for (const seg of m.segments) step(seg);
    table = m.deep ? (node.deep ??= new RuleTable()) : (node.end ??= new RuleTable());
  } else throw new TypeError(`not a path pattern: ${m.kind}`);
  table.add(rule);
  return table;
}

function walkPatterns(node: SegmentNode, segments: readonly string[], i: number, st: MatchState): void {
  if (i > 0) node.prefix?.collect(st);
  if (i === segments.length) {
    node.end?.collect(st);
    return;
  }
  node.deep?.collect(st);
  const next = node.children?.get(segments[i] as string);
  if (next) walkPatterns(next, segments, i + 1, st);
  if (node.star) walkPatterns(node.star, segments, i + 1, st);
}

interface DomainBucket {
  /** Rules whose caller matcher is the whole trust domain. */
  readonly whole: RuleTable;
  /** Prefix and glob caller matchers. */
  readonly patterns: SegmentNode;
}

/**
 * A policy compiled into an index: on the caller (exact IDs in a map, trust
 * domain wide matchers per domain, prefixes and globs in a tree of path
 * segments per domain), then within each set of caller-matched rules on the
 * callee and the action (see {@link RuleTable}). A check visits a handful of
 * short lists, whatever the number of rules.
 */
export class CompiledPolicy {
  readonly id: string;
  readonly ruleCount: number;
  /**
   * Rules this version compiled rather than took as they were from
   * `previous`: every rule without one; on a reload, the rules changed, added
   * or moved to another position (their precedence changed).
   */
  get rulesCompiled(): number {
    return this.compiled;
  }
  private compiled = 0;
  /** The matchers of this version, for the next one to reuse. */
  readonly matchers: MatcherCache;
  private readonly exact = new Map<string, RuleTable>();
  private readonly domains = new Map<string, DomainBucket>();
  private readonly anyCaller = new RuleTable();
  private readonly byId = new Map<string, CompiledRule>();
  private readonly actionPrefixes = new ActionPrefixes();
  /** Every rule list by the caller matcher key that leads to it. */
  private readonly tables = new Map<string, RuleTable>();

  /**
   * @param previous the version in force: a rule with the same id, position
   *   and content is reused as is, and matchers seen there are not compiled again.
   * @param matchers the cache the document was validated with (see
   *   {@link parsePolicyInSlices}), so validation and compilation share it.
   * @param now false for {@link CompiledPolicy.inSlices}: the rules are left to it.
   */
  constructor(doc: PolicyDocument, previous?: CompiledPolicy, matchers?: MatcherCache, now = true) {
    this.id = doc.id;
    this.ruleCount = doc.rules.length;
    this.matchers = matchers ?? new MatcherCache(previous?.matchers);
    this.tables.set('*', this.anyCaller);
    if (now) runNow(this.fill(doc, previous));
  }

  /** The constructor's work in slices (see {@link Slices}). */
  static *inSlices(
    doc: PolicyDocument,
    previous?: CompiledPolicy,
    matchers?: MatcherCache,
  ): Slices<CompiledPolicy> {
    const policy = new CompiledPolicy(doc, previous, matchers, false);
    yield* policy.fill(doc, previous);
    return policy;
  }

  private *fill(doc: PolicyDocument, previous: CompiledPolicy | undefined): Slices<void> {
    let compiled = 0;
    for (let index = 0; index < doc.rules.length; index++) {
      const r = doc.rules[index] as PolicyRule;
      const old = previous?.byId.get(r.id);
      const reused = old !== undefined && old.index === index && sameRule(old.source, r);
      if (!reused) compiled++;
      const rule = reused ? old : this.compile(r, index);
      this.byId.set(r.id, rule);
      for (const p of rule.actions.prefixes) this.actionPrefixes.add(p);
      for (const m of rule.callers) {
        if (!this.tables.has(m.key)) this.tables.set(m.key, this.add(rule, m));
        else this.add(rule, m);
      }
      if (index % ITEMS_PER_YIELD === ITEMS_PER_YIELD - 1) yield;
    }
    // Lists whose rules are all unchanged keep their index: only what changed is indexed again.
    let n = 0;
    for (const [key, t] of this.tables) {
      yield* t.sealReusing(previous?.tables.get(key));
      if (++n % ITEMS_PER_YIELD === 0) yield;
    }
    this.actionPrefixes.seal();
    this.matchers.detach();
    this.compiled = compiled;
  }

  /** The compiled rule with this id (a reload reuses unchanged ones: same object). */
  rule(id: string): CompiledRule | undefined {
    return this.byId.get(id);
  }

  private compile(r: PolicyRule, index: number): CompiledRule {
    const deny = r.effect === 'deny';
    return {
      index,
      id: r.id,
      deny,
      callers: r.callers.map((m) => this.matchers.id(m)),
      callees: r.callees?.map((m) => this.matchers.id(m)),
      actions: this.matchers.actions(r.actions),
      reason: `${deny ? 'denied' : 'allowed'} by rule ${JSON.stringify(r.id)}`,
      source: r,
    };
  }

  private bucket(td: string): DomainBucket {
    let b = this.domains.get(td);
    if (!b) {
      b = { whole: new RuleTable(), patterns: {} };
      this.domains.set(td, b);
    }
    return b;
  }

  private add(rule: CompiledRule, m: IdMatcher): RuleTable {
    let table: RuleTable;
    switch (m.kind) {
      case 'any':
        table = this.anyCaller;
        break;
      case 'exact': {
        const t = this.exact.get(m.id);
        if (t) table = t;
        else this.exact.set(m.id, (table = new RuleTable()));
        break;
      }
      case 'trustDomain':
        table = this.bucket(m.td).whole;
        break;
      case 'prefix':
      case 'glob':
        return insertPattern(this.bucket(m.td).patterns, m, rule);
    }
    table.add(rule);
    return table;
  }

  /**
   * The first matching deny rule and the first matching allow rule (in file
   * order) for this check. Deny overrides allow; neither means default deny.
   */
  decide(caller: SpiffeId, callee: SpiffeId | undefined, action: string): MatchResult {
    const st: MatchState = {
      callee,
      calleeString: callee?.toString(),
      calleeSegments: undefined,
      action,
      policyPrefixes: this.actionPrefixes,
      prefixes: undefined,
      pairKey: undefined,
      pairPrefixKeys: undefined,
      deny: undefined,
      allow: undefined,
    };
    this.exact.get(caller.toString())?.collect(st);
    this.anyCaller.collect(st);
    const b = this.domains.get(caller.trustDomain.name);
    if (b) {
      b.whole.collect(st);
      if (b.patterns.children !== undefined || b.patterns.star !== undefined || b.patterns.deep !== undefined)
        walkPatterns(b.patterns, caller.segments, 0, st);
    }
    return st;
  }
}

/** The literal text before the first `*` of an action glob of the policy. */
interface ActionPrefix {
  /** Key of the rest's action index ({@link ActionIndex}). */
  readonly prefix: string;
  /** `${prefix}*`: key of a pattern whose `*`s all end it, in a {@link RuleTable}'s maps. */
  readonly key: string;
}

const NO_PREFIXES: readonly ActionPrefix[] = [];

/**
 * The glob prefixes of every action pattern in a policy: a check finds once
 * which of them its action starts with (a few lookups in one small map the
 * CPU cache keeps), and looks up only those in each rule list it visits,
 * instead of slicing its action for every prefix length of every list.
 */
class ActionPrefixes {
  private readonly byText = new Map<string, ActionPrefix>();
  /** Distinct lengths of the prefixes, ascending. */
  private lengths: number[] = [];

  add(prefix: string): void {
    if (!this.byText.has(prefix)) this.byText.set(prefix, { prefix, key: `${prefix}*` });
  }

  seal(): void {
    this.lengths = [...new Set([...this.byText.keys()].map((k) => k.length))].sort((a, b) => a - b);
  }

  /** The prefixes `action` starts with (`''`, for a match-all pattern, always). */
  of(action: string): readonly ActionPrefix[] {
    let found: ActionPrefix[] | undefined;
    for (const n of this.lengths) {
      if (n > action.length) break;
      const p = this.byText.get(action.slice(0, n));
      if (p !== undefined) (found ??= []).push(p);
    }
    return found ?? NO_PREFIXES;
  }
}

function prefixesOf(st: MatchState): readonly ActionPrefix[] {
  return (st.prefixes ??= st.policyPrefixes.of(st.action));
}

function sameMatchers(
  a: readonly RawIdMatcher[] | undefined,
  b: readonly RawIdMatcher[] | undefined,
): boolean {
  if (a === undefined || b === undefined) return a === b;
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) {
    const x = a[i] as RawIdMatcher;
    const y = b[i] as RawIdMatcher;
    if (typeof x === 'string' ? x !== y : typeof y === 'string' || x.prefix !== y.prefix) return false;
  }
  return true;
}

/** Same effect, matchers and actions (the description does not decide anything). */
function sameRule(a: PolicyRule, b: PolicyRule): boolean {
  if (a === b) return true;
  return (
    a.id === b.id &&
    a.effect === b.effect &&
    sameMatchers(a.callers, b.callers) &&
    sameMatchers(a.callees, b.callees) &&
    a.actions.length === b.actions.length &&
    a.actions.every((x, i) => x === b.actions[i])
  );
}

/** The deciding candidates of one check. */
export interface MatchResult {
  readonly deny: CompiledRule | undefined;
  readonly allow: CompiledRule | undefined;
}

/** One check in progress; the decision returns it as its {@link MatchResult} (no copy). */
interface MatchState {
  readonly callee: SpiffeId | undefined;
  readonly calleeString: string | undefined;
  calleeSegments: readonly string[] | undefined;
  readonly action: string;
  readonly policyPrefixes: ActionPrefixes;
  /** The policy's glob prefixes the action starts with, found when a list first needs them. */
  prefixes: readonly ActionPrefix[] | undefined;
  /** `callee\naction`, built when a table with exact pairs is visited. */
  pairKey: string | undefined;
  /** `callee\np*` for each of `prefixes`, built when a table's pairs hold such keys. */
  pairPrefixKeys: readonly string[] | undefined;
  deny: CompiledRule | undefined;
  allow: CompiledRule | undefined;
}

/** Caller already matched: test callee and action, keep the earliest rule per effect. */
function consider(st: MatchState, rule: CompiledRule): void {
  const best = rule.deny ? st.deny : st.allow;
  if (best !== undefined && best.index <= rule.index) return;
  if (!matchesRest(st, rule)) return;
  if (rule.deny) st.deny = rule;
  else st.allow = rule;
}

/** Caller already matched: do the action and the callee match? */
function matchesRest(st: MatchState, rule: CompiledRule): boolean {
  if (!matchAction(rule.actions, st.action)) return false;
  if (rule.callees === undefined) return true;
  const callee = st.callee;
  if (callee === undefined) return false;
  st.calleeSegments ??= callee.segments;
  for (const m of rule.callees) {
    if (matchId(m, callee, st.calleeString as string, st.calleeSegments)) return true;
  }
  return false;
}
