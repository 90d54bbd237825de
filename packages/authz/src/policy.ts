import { LineCounter, parseDocument, isNode, type Document } from 'yaml';
import { z } from 'zod';
import { PolicyError, type PolicyIssue } from './errors.js';
import {
  actionPatternProblem,
  compileActions,
  compileIdMatcher,
  MatcherSyntaxError,
  matchAction,
  matchId,
  type ActionMatcher,
  type IdMatcher,
  type RawIdMatcher,
} from './matchers.js';
import type { SpiffeId } from '@weave/identity';

const NAME = /^[A-Za-z0-9][A-Za-z0-9._:-]*$/;
const name = (what: string) =>
  z
    .string({ error: `${what} must be a string` })
    .max(128, `${what} is longer than 128 characters`)
    .regex(NAME, `${what} may contain letters, digits and ". _ : -", starting with a letter or digit`);

/** Validates a matcher by compiling it; the compiled form is thrown away here and rebuilt at compile time. */
const idMatcherSchema = z
  .union([z.string(), z.strictObject({ prefix: z.string() })], {
    error:
      'a matcher is a string ("*", "spiffe://td", "spiffe://td/path", a glob) or { prefix: "spiffe://td/path" }',
  })
  .superRefine((m, ctx) => {
    try {
      compileIdMatcher(m);
    } catch (err) {
      if (!(err instanceof MatcherSyntaxError)) throw err;
      ctx.addIssue({ code: 'custom', message: err.message, input: m });
    }
  });

const matcherList = (what: string) =>
  z.array(idMatcherSchema, { error: `${what} must be a list of matchers` }).min(1, `${what} cannot be empty`);

const actionSchema = z.string({ error: 'an action pattern must be a string' }).superRefine((p, ctx) => {
  const problem = actionPatternProblem(p);
  if (problem) ctx.addIssue({ code: 'custom', message: problem, input: p });
});

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

/** The policy document schema (version 1). */
const policyDocumentSchema = z
  .strictObject({
    version: z.literal(1, { error: 'version must be 1' }),
    id: name('policy id'),
    default: z.literal('deny', { error: 'default must be "deny": Weave has no default that allows' }),
    description: z.string().optional(),
    rules: z.array(ruleSchema, { error: 'rules must be a list' }),
  })
  .superRefine((doc, ctx) => {
    const seen = new Map<string, number>();
    doc.rules.forEach((r, i) => {
      const first = seen.get(r.id);
      if (first !== undefined) {
        ctx.addIssue({
          code: 'custom',
          path: ['rules', i, 'id'],
          message: `duplicate rule id ${JSON.stringify(r.id)} (first used by rules[${first}])`,
        });
      } else seen.set(r.id, i);
    });
  });

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

/** `rules[2].callers[0]` */
function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const k of path) {
    if (typeof k === 'number') out += `[${k}]`;
    else out += out === '' ? String(k) : `.${String(k)}`;
  }
  return out;
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
  err: z.ZodError,
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
          path: formatPath(path),
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
    issues.push({ ...locate(iss.path), path: formatPath(iss.path), message });
  }
  return issues;
}

/**
 * Validates a policy given as a plain object (e.g. JSON already parsed).
 *
 * @throws {PolicyError} listing every problem with its key path.
 */
export function validatePolicy(input: unknown, source = '<object>'): PolicyDocument {
  const res = policyDocumentSchema.safeParse(input);
  if (!res.success)
    throw new PolicyError(
      source,
      zodIssues(res.error, input, () => undefined),
    );
  return res.data;
}

/**
 * Parses and validates a policy document in YAML or JSON (JSON is read by the
 * YAML parser, so both get line numbers).
 *
 * @throws {PolicyError} whose issues name the line, the key path and the problem.
 */
export function parsePolicy(text: string, source = '<string>'): PolicyDocument {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, uniqueKeys: true, prettyErrors: false, strict: true });
  if (doc.errors.length > 0) {
    throw new PolicyError(
      source,
      doc.errors.slice(0, MAX_ISSUES).map((e) => {
        const pos = lineCounter.linePos(e.pos[0]);
        return { line: pos.line, col: pos.col, path: '', message: firstLine(e.message) };
      }),
    );
  }
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
  const res = policyDocumentSchema.safeParse(value);
  if (!res.success)
    throw new PolicyError(
      source,
      zodIssues(res.error, value, (path) => locate(doc, lineCounter, path)),
    );
  return res.data;
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
  readonly callees: readonly IdMatcher[] | undefined;
  readonly actions: ActionMatcher;
}

/**
 * Rules whose caller matcher already matched, narrowed further by callee and
 * action. Up to {@link SMALL_TABLE} rules are scanned; above that they are
 * indexed (callee: exact ID, trust domain of a pattern, `*`, none; action:
 * exact name, literal text before a glob's first `*`), with one list per
 * effect in file order, so a check stops at the first full match of each
 * list: its cost does not grow with the number of rules.
 */
class RuleTable {
  private readonly rules: CompiledRule[] = [];
  private index: CalleeIndex | undefined;

  add(rule: CompiledRule): void {
    if (this.rules[this.rules.length - 1] !== rule) this.rules.push(rule);
  }

  seal(): void {
    if (this.rules.length > SMALL_TABLE) this.index = calleeIndex(this.rules);
  }

  collect(st: MatchState): void {
    const ix = this.index;
    if (ix === undefined) {
      for (const r of this.rules) consider(st, r);
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

const SMALL_TABLE = 16;

/** One list per effect, in file order. */
interface Split {
  readonly deny: CompiledRule[];
  readonly allow: CompiledRule[];
}

interface ActionIndex {
  readonly exact: Map<string, Split>;
  readonly byPrefix: Map<string, Split>;
  /** Lengths of the keys of `byPrefix`, ascending. */
  prefixLengths: number[];
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

const newActionIndex = (): ActionIndex => ({ exact: new Map(), byPrefix: new Map(), prefixLengths: [] });

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

function calleeIndex(rules: readonly CompiledRule[]): CalleeIndex {
  const ix: CalleeIndex = { none: newActionIndex(), exact: new Map(), any: undefined, byTd: new Map() };
  const at = (map: Map<string, ActionIndex>, key: string): ActionIndex => {
    let a = map.get(key);
    if (!a) map.set(key, (a = newActionIndex()));
    return a;
  };
  for (const rule of rules) {
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
  const lengths = (a: ActionIndex): void => {
    a.prefixLengths = [...new Set([...a.byPrefix.keys()].map((k) => k.length))].sort((x, y) => x - y);
  };
  lengths(ix.none);
  if (ix.any) lengths(ix.any);
  for (const a of ix.exact.values()) lengths(a);
  for (const a of ix.byTd.values()) lengths(a);
  return ix;
}

function collectActions(st: MatchState, ix: ActionIndex): void {
  const exact = ix.exact.get(st.action);
  if (exact) collectSplit(st, exact);
  for (const n of ix.prefixLengths) {
    if (n > st.action.length) break;
    const split = ix.byPrefix.get(n === 0 ? '' : st.action.slice(0, n));
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
  private readonly exact = new Map<string, RuleTable>();
  private readonly domains = new Map<string, DomainBucket>();
  private readonly anyCaller = new RuleTable();

  constructor(doc: PolicyDocument) {
    this.id = doc.id;
    this.ruleCount = doc.rules.length;
    const tables = new Set<RuleTable>([this.anyCaller]);
    doc.rules.forEach((r, index) => {
      const rule: CompiledRule = {
        index,
        id: r.id,
        deny: r.effect === 'deny',
        callees: r.callees?.map(compileIdMatcher),
        actions: compileActions(r.actions),
      };
      for (const raw of r.callers) tables.add(this.add(rule, compileIdMatcher(raw)));
    });
    for (const t of tables) t.seal();
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
    return { deny: st.deny, allow: st.allow };
  }
}

/** The deciding candidates of one check. */
export interface MatchResult {
  readonly deny: CompiledRule | undefined;
  readonly allow: CompiledRule | undefined;
}

interface MatchState {
  readonly callee: SpiffeId | undefined;
  readonly calleeString: string | undefined;
  calleeSegments: readonly string[] | undefined;
  readonly action: string;
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
