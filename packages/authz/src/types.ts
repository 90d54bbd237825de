import type { SpiffeId } from '@weave/identity';

/** Which side of a call a decision is made on. */
export type Direction = 'inbound' | 'outbound';

/**
 * Free-form request attributes handed to the policy engine (trace id, method,
 * deadline …). Never part of a decision cache key.
 */
export type AuthzContext = Readonly<Record<string, unknown>>;

/** May `caller` invoke `action` on this agent? Asked by the server side. */
export interface InboundCheck {
  readonly caller: SpiffeId;
  /** This agent's own ID, when known; lets one policy file serve many agents. */
  readonly callee?: SpiffeId;
  readonly action: string;
  readonly context?: AuthzContext;
}

/** May this agent (`caller`) invoke `action` on `callee`? Asked before anything is sent. */
export interface OutboundCheck {
  readonly caller: SpiffeId;
  readonly callee: SpiffeId;
  readonly action: string;
  readonly context?: AuthzContext;
}

/** The result of a policy check. Always frozen. */
export interface AuthzDecision {
  readonly allowed: boolean;
  /** Why: the deciding rule, the default, or the failure that forced a deny. */
  readonly reason: string;
  /** Unique id of this decision; the same id is in the audit record. */
  readonly auditId: string;
  readonly policyId?: string;
  readonly ruleId?: string;
}

/**
 * The seam between Weave and a policy engine. Implementations must fail
 * closed: any error becomes `allowed: false` with a reason, never a throw that
 * a caller could mistake for permission.
 */
export interface PolicyEnforcer {
  checkInbound(check: InboundCheck): Promise<AuthzDecision>;
  checkOutbound(check: OutboundCheck): Promise<AuthzDecision>;
  /** Releases watchers, timers and connections. */
  close?(): Promise<void>;
}
