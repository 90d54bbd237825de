import { PinoAuditSink, type AuditSink } from './audit.js';
import { auditSubject, DecisionRecorder, normalizeCheck } from './decision.js';
import { AuthzConfigError } from './errors.js';
import type { AuthzDecision, Direction, InboundCheck, OutboundCheck, PolicyEnforcer } from './types.js';

function isProduction(value: string | undefined): boolean {
  return value !== undefined && value.trim().toLowerCase() === 'production';
}

/**
 * Allows every well-formed check. **For tests only**: the constructor throws
 * when `NODE_ENV` or `WEAVE_ENV` is `production`. Decisions are still audited,
 * and malformed checks (no valid caller) are still denied.
 */
export class AllowAllEnforcer implements PolicyEnforcer {
  private readonly recorder: DecisionRecorder;

  /** @throws {AuthzConfigError} (`ALLOW_ALL_IN_PRODUCTION`) in production. */
  constructor(options: { audit?: AuditSink } = {}) {
    for (const name of ['NODE_ENV', 'WEAVE_ENV'] as const) {
      if (isProduction(process.env[name])) {
        throw new AuthzConfigError(
          'ALLOW_ALL_IN_PRODUCTION',
          `AllowAllEnforcer is for tests only and refuses to run with ${name}=${process.env[name]}`,
        );
      }
    }
    this.recorder = new DecisionRecorder(options.audit ?? new PinoAuditSink(), 'allow-all');
  }

  checkInbound(check: InboundCheck): Promise<AuthzDecision> {
    return Promise.resolve(this.decide('inbound', check, false));
  }

  checkOutbound(check: OutboundCheck): Promise<AuthzDecision> {
    return Promise.resolve(this.decide('outbound', check, true));
  }

  private decide(
    direction: Direction,
    check: unknown,
    calleeRequired: boolean,
  ): AuthzDecision | Promise<AuthzDecision> {
    const start = process.hrtime.bigint();
    const n = normalizeCheck(direction, check, calleeRequired);
    if ('invalid' in n)
      return this.recorder.finish(start, direction, n, { allowed: false, reason: n.invalid });
    return this.recorder.finish(start, direction, auditSubject(n), {
      allowed: true,
      reason: 'allow-all enforcer (tests only)',
    });
  }
}
