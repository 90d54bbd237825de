import { pino, type Logger } from 'pino';
import type { Direction } from './types.js';

/** Which engine made a decision. */
export type AuditEngine = 'local' | 'opa' | 'allow-all';

/**
 * One authorization decision, recorded exactly once. Field names are stable:
 * log pipelines may index them.
 */
export interface AuditRecord {
  /** Same value as `AuthzDecision.auditId`. */
  readonly auditId: string;
  /** ISO-8601 time the decision was made (not `time`: pino owns that key). */
  readonly decidedAt: string;
  readonly direction: Direction;
  /** Caller SPIFFE ID (as given, when it was not a valid ID). */
  readonly caller: string;
  readonly callee?: string;
  readonly action: string;
  /** The A2A tenant of the request (`context.tenant`), when it named one. */
  readonly tenant?: string;
  readonly decision: 'allow' | 'deny';
  readonly reason: string;
  readonly engine: AuditEngine;
  readonly policyId?: string;
  readonly ruleId?: string;
  /** Time spent deciding, in microseconds (fractional). */
  readonly latencyUs: number;
  /** True when an OPA answer came from the decision cache. */
  readonly cached?: boolean;
  /** OPA's `decision_id`, present when OPA's decision logging is on. */
  readonly opaDecisionId?: string;
}

/**
 * Where audit records go. `record` is called once per decision, before the
 * decision is given. An implementation that throws makes the decision a deny
 * (fail closed). One that returns a promise (an async function, a write to a
 * database) is waited for, and a rejection makes the decision a deny too;
 * the check's answer waits for it, so a slow sink slows every call.
 */
export interface AuditSink {
  // `void`, not `void | PromiseLike<void>`: a sink written as
  // `record: (r) => records.push(r)` returns a number, which `void` accepts
  // and the union would refuse. A promise is still told apart at run time.
  record(rec: AuditRecord): void;
}

/** The default sink: one pino record per decision, message `authz decision`. */
export class PinoAuditSink implements AuditSink {
  readonly logger: Logger;

  /** @param logger defaults to `pino({ name: 'weave-authz' })` on stdout. */
  constructor(logger?: Logger) {
    this.logger = logger ?? pino({ name: 'weave-authz' });
  }

  record(rec: AuditRecord): void {
    this.logger.info({ event: 'authz.decision', ...rec }, 'authz decision');
  }
}
