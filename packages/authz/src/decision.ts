import { SpiffeId, cutText, randomUuid } from '@weave/identity';
import type { AuditEngine, AuditRecord, AuditSink } from './audit.js';
import type { AuthzDecision, Direction } from './types.js';

/** What an engine concluded, before it gets an audit id. */
export interface Verdict {
  readonly allowed: boolean;
  readonly reason: string;
  readonly policyId?: string | undefined;
  readonly ruleId?: string | undefined;
  readonly cached?: boolean;
  readonly opaDecisionId?: string | undefined;
}

/** A check whose fields were validated: what engines work on. */
export interface NormalizedCheck {
  readonly direction: Direction;
  readonly caller: SpiffeId;
  readonly callee: SpiffeId | undefined;
  readonly action: string;
  readonly context: Readonly<Record<string, unknown>> | undefined;
  /** `context.tenant` when it is a non-empty string, as read once when the check arrived. */
  readonly tenant: string | undefined;
}

const MAX_ACTION_LENGTH = 256;

let lastMs = 0;
let lastIso = new Date(0).toISOString();

/** The time as ISO 8601, formatted once per millisecond (formatting costs more than the decision). */
function isoNow(): string {
  const ms = Date.now();
  if (ms !== lastMs) {
    lastMs = ms;
    lastIso = new Date(ms).toISOString();
  }
  return lastIso;
}

function toSpiffeId(value: unknown): SpiffeId | undefined {
  if (value instanceof SpiffeId) return value;
  // A SpiffeId from another copy of @weave/identity, or a plain string.
  if (typeof value === 'string') return SpiffeId.tryParse(value);
  if (typeof value === 'object' && value !== null) {
    try {
      return SpiffeId.tryParse(String(value));
    } catch {
      // A hostile toString(): not an ID.
      return undefined;
    }
  }
  return undefined;
}

/** Most characters of a caller's value an audit record or a refusal repeats. */
const SHOWN_CHARS = 256;

function shown(value: unknown): string {
  if (value === undefined) return '';
  try {
    return cutText(String(value), SHOWN_CHARS);
  } catch {
    return '<unprintable>';
  }
}

/**
 * Validates a check as it arrives (callers may be untyped JavaScript). Returns
 * the reason for a deny when it is malformed. Each field is read once, here:
 * a getter that throws, or that answers differently on a second read, cannot
 * make a check throw or decide on something other than what was validated.
 */
export function normalizeCheck(
  direction: Direction,
  check: unknown,
  calleeRequired: boolean,
): NormalizedCheck | InvalidCheck {
  let c: { caller: unknown; callee: unknown; action: unknown; context: unknown; tenant: unknown };
  try {
    const o = (typeof check === 'object' && check !== null ? check : {}) as Record<string, unknown>;
    const context = o.context;
    c = {
      caller: o.caller,
      callee: o.callee,
      action: o.action,
      context,
      tenant:
        typeof context === 'object' && context !== null
          ? (context as Record<string, unknown>).tenant
          : undefined,
    };
  } catch (err) {
    return {
      invalid: `invalid check: a field could not be read (${shown(err instanceof Error ? err.message : err)})`,
      caller: UNREADABLE,
      callee: undefined,
      action: UNREADABLE,
    };
  }
  const caller = toSpiffeId(c.caller);
  if (!caller) return invalid(c, 'invalid check: caller is not a valid SPIFFE ID');
  let callee: SpiffeId | undefined;
  if (c.callee !== undefined) {
    callee = toSpiffeId(c.callee);
    if (!callee) return invalid(c, 'invalid check: callee is not a valid SPIFFE ID');
  } else if (calleeRequired) {
    return invalid(c, 'invalid check: callee is required for an outbound check');
  }
  const action = c.action;
  if (typeof action !== 'string' || action.length === 0 || action.length > MAX_ACTION_LENGTH) {
    return invalid(c, `invalid check: action must be a string of 1 to ${MAX_ACTION_LENGTH} characters`);
  }
  const context = c.context;
  if (context !== undefined && (typeof context !== 'object' || context === null || Array.isArray(context))) {
    return invalid(c, 'invalid check: context must be an object');
  }
  return {
    direction,
    caller,
    callee,
    action,
    context: context as Readonly<Record<string, unknown>> | undefined,
    tenant: typeof c.tenant === 'string' && c.tenant !== '' ? c.tenant : undefined,
  };
}

const UNREADABLE = '<unreadable>';

/** A malformed check: the reason, and its fields made printable for the audit record. */
export interface InvalidCheck {
  readonly invalid: string;
  readonly caller: string;
  readonly callee: string | undefined;
  readonly action: string;
}

/** Who and what a decision is about, as the audit record names them. */
export interface AuditSubject {
  readonly caller: string;
  readonly callee: string | undefined;
  readonly action: string;
  readonly tenant?: string | undefined;
}

/** The audit subject of a valid check; the tenant is `context.tenant` when it is a string. */
export function auditSubject(n: NormalizedCheck): AuditSubject {
  return {
    caller: n.caller.toString(),
    callee: n.callee?.toString(),
    action: n.action,
    tenant: n.tenant !== undefined ? shown(n.tenant) : undefined,
  };
}

function invalid(c: { caller: unknown; callee: unknown; action: unknown }, reason: string): InvalidCheck {
  return {
    invalid: reason,
    caller: shown(c.caller),
    callee: c.callee === undefined ? undefined : shown(c.callee),
    action: shown(c.action),
  };
}

/**
 * Turns verdicts into frozen decisions and records each exactly once. Shared
 * by every enforcer so audit behaviour cannot drift between engines.
 */
export class DecisionRecorder {
  constructor(
    private readonly sink: AuditSink,
    private readonly engine: AuditEngine,
  ) {}

  /**
   * The decision of `verdict`, recorded. A sink that returns a promise is
   * waited for, and the decision is a promise too; a sink that throws, or
   * whose promise rejects, turns an allow into a deny: a call that cannot be
   * audited does not go through.
   */
  finish(
    startNs: bigint,
    direction: Direction,
    who: AuditSubject,
    verdict: Verdict,
  ): AuthzDecision | Promise<AuthzDecision> {
    const auditId = randomUuid();
    const latencyUs = Number(process.hrtime.bigint() - startNs) / 1000;
    // Built by assignment rather than conditional spreads: this is the hot path.
    const rec: { -readonly [K in keyof AuditRecord]: AuditRecord[K] } = {
      auditId,
      decidedAt: isoNow(),
      direction,
      caller: who.caller,
      action: who.action,
      decision: verdict.allowed ? 'allow' : 'deny',
      reason: verdict.reason,
      engine: this.engine,
      latencyUs,
    };
    if (who.callee !== undefined) rec.callee = who.callee;
    if (who.tenant !== undefined) rec.tenant = who.tenant;
    if (verdict.policyId !== undefined) rec.policyId = verdict.policyId;
    if (verdict.ruleId !== undefined) rec.ruleId = verdict.ruleId;
    if (verdict.cached) rec.cached = true;
    if (verdict.opaDecisionId !== undefined) rec.opaDecisionId = verdict.opaDecisionId;
    let pending: unknown;
    try {
      pending = this.sink.record(Object.freeze(rec));
    } catch (err) {
      return decisionOf(auditId, sinkFailed(auditId, verdict, err));
    }
    // A sink typed `void` may still be an async function: its rejection is
    // the same failure as a throw, not an unhandled rejection after an allow.
    if (typeof (pending as PromiseLike<unknown> | undefined)?.then === 'function') {
      return Promise.resolve(pending).then(
        () => decisionOf(auditId, verdict),
        (err: unknown) => decisionOf(auditId, sinkFailed(auditId, verdict, err)),
      );
    }
    return decisionOf(auditId, verdict);
  }
}

/** The verdict after its audit failed: a deny, and a warning for the operator. */
function sinkFailed(auditId: string, verdict: Verdict, err: unknown): Verdict {
  process.emitWarning(`weave authz: audit sink failed for ${auditId}: ${String(err)}`, 'WeaveAuditWarning');
  if (!verdict.allowed) return verdict;
  return {
    ...verdict,
    allowed: false,
    reason: `audit sink failed, denying: ${err instanceof Error ? err.message : String(err)}`,
  };
}

function decisionOf(auditId: string, verdict: Verdict): AuthzDecision {
  const decision: { -readonly [K in keyof AuthzDecision]: AuthzDecision[K] } = {
    allowed: verdict.allowed,
    reason: verdict.reason,
    auditId,
  };
  if (verdict.policyId !== undefined) decision.policyId = verdict.policyId;
  if (verdict.ruleId !== undefined) decision.ruleId = verdict.ruleId;
  return Object.freeze(decision);
}
