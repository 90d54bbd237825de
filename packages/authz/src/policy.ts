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
export const policyDocumentSchema = z
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
export function formatPath(path: readonly PropertyKey[]): string {
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

/** Rule references in one index bucket, with the caller matcher that placed them there. */
export interface Entry {
  readonly rule: CompiledRule;
  readonly matcher: IdMatcher;
}

interface DomainBucket {
  /** Rules whose caller matcher is the whole trust domain: no further test needed. */
  readonly whole: CompiledRule[];
  /** Prefix/glob matchers keyed by their literal first path segment. */
  readonly byFirst: Map<string, Entry[]>;
  /** Prefix/glob matchers whose first segment is a wildcard. */
  readonly other: Entry[];
}

/**
 * A policy compiled into an index on the caller: exact IDs in a map, trust
 * domain wide matchers per domain, prefixes and globs per (domain, first
 * segment). A check looks at a handful of candidates instead of every rule.
 */
export class CompiledPolicy {
  readonly id: string;
  readonly ruleCount: number;
  private readonly exact = new Map<string, CompiledRule[]>();
  private readonly domains = new Map<string, DomainBucket>();
  private readonly anyCaller: CompiledRule[] = [];

  constructor(doc: PolicyDocument) {
    this.id = doc.id;
    this.ruleCount = doc.rules.length;
    doc.rules.forEach((r, index) => {
      const rule: CompiledRule = {
        index,
        id: r.id,
        deny: r.effect === 'deny',
        callees: r.callees?.map(compileIdMatcher),
        actions: compileActions(r.actions),
      };
      for (const raw of r.callers) this.add(rule, compileIdMatcher(raw));
    });
  }

  private bucket(td: string): DomainBucket {
    let b = this.domains.get(td);
    if (!b) {
      b = { whole: [], byFirst: new Map(), other: [] };
      this.domains.set(td, b);
    }
    return b;
  }

  private add(rule: CompiledRule, m: IdMatcher): void {
    switch (m.kind) {
      case 'any':
        this.anyCaller.push(rule);
        return;
      case 'exact': {
        const list = this.exact.get(m.id);
        if (list) list.push(rule);
        else this.exact.set(m.id, [rule]);
        return;
      }
      case 'trustDomain':
        this.bucket(m.td).whole.push(rule);
        return;
      case 'prefix':
      case 'glob': {
        const b = this.bucket(m.td);
        if (m.first === undefined) {
          b.other.push({ rule, matcher: m });
        } else {
          const list = b.byFirst.get(m.first);
          if (list) list.push({ rule, matcher: m });
          else b.byFirst.set(m.first, [{ rule, matcher: m }]);
        }
        return;
      }
    }
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
    const callerString = caller.toString();
    const exact = this.exact.get(callerString);
    if (exact) for (const r of exact) consider(st, r);
    for (const r of this.anyCaller) consider(st, r);
    const td = caller.trustDomain.name;
    const b = this.domains.get(td);
    if (b) {
      for (const r of b.whole) consider(st, r);
      let segments: readonly string[] | undefined;
      if (b.other.length > 0) {
        segments = caller.segments;
        for (const e of b.other) if (matchId(e.matcher, caller, callerString, segments)) consider(st, e.rule);
      }
      if (b.byFirst.size > 0 && caller.path !== '') {
        segments ??= caller.segments;
        const list = b.byFirst.get(segments[0] as string);
        if (list)
          for (const e of list) if (matchId(e.matcher, caller, callerString, segments)) consider(st, e.rule);
      }
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
  if (!matchAction(rule.actions, st.action)) return;
  if (rule.callees !== undefined) {
    const callee = st.callee;
    if (callee === undefined) return;
    st.calleeSegments ??= callee.segments;
    let ok = false;
    for (const m of rule.callees) {
      if (matchId(m, callee, st.calleeString as string, st.calleeSegments)) {
        ok = true;
        break;
      }
    }
    if (!ok) return;
  }
  if (rule.deny) st.deny = rule;
  else st.allow = rule;
}
