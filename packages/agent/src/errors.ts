import { WeaveError } from '@weave/identity';
import type { AuthzDecision } from '@weave/authz';

/** Codes of {@link AgentError}. */
export type AgentErrorCode =
  | 'AGENT_CONFIG_INVALID'
  | 'AGENT_CONFIG_INSECURE'
  | 'AGENT_NOT_STARTED'
  | 'AGENT_STOPPING'
  | 'AGENT_ALREADY_STARTED'
  | 'AGENT_NO_IDENTITY'
  | 'AGENT_STORE_SCHEMA_OUTDATED'
  | 'AGENT_STORE_UNAVAILABLE'
  | 'AGENT_LISTEN_FAILED'
  | 'AGENT_SERVER_CONSUMED'
  | 'CAPABILITY_NOT_FOUND'
  | 'CAPABILITY_INVALID'
  | 'CAPABILITY_INPUT_INVALID'
  | 'CAPABILITY_FAILED'
  | 'CALL_DENIED'
  | 'CALL_FAILED'
  | 'PEER_UNKNOWN'
  | 'DEADLINE_EXCEEDED'
  | 'PEER_VERIFICATION_FAILED'
  | 'CLIENT_CERTIFICATE_REQUIRED'
  | 'BASE_AGENT_NOT_SERVABLE';

/** A local failure of the agent layer. */
export class AgentError extends WeaveError {
  declare readonly code: AgentErrorCode;
  constructor(code: AgentErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}

/** One problem in a config file: the key path and what is wrong with it. */
export interface ConfigIssue {
  readonly path: string;
  readonly message: string;
}

/** A config file or object failed validation; `issues` names every bad key. */
export class AgentConfigError extends AgentError {
  readonly issues: readonly ConfigIssue[];
  readonly source: string;
  constructor(
    source: string,
    issues: readonly ConfigIssue[],
    code: 'AGENT_CONFIG_INVALID' | 'AGENT_CONFIG_INSECURE' = 'AGENT_CONFIG_INVALID',
  ) {
    super(
      code,
      `${code === 'AGENT_CONFIG_INSECURE' ? 'insecure' : 'invalid'} agent config (${source}):\n` +
        issues.map((i) => `  - ${i.path || '(root)'}: ${i.message}`).join('\n'),
    );
    this.issues = issues;
    this.source = source;
  }
}

/** What is known about a failed or refused {@link SecureAgent.callAgent}. */
export interface CallErrorDetails {
  /** The target: a SPIFFE ID as given, a URL without its user info, query or fragment (shown so in errors and logs). */
  readonly target: string;
  readonly capability: string;
  /** The callee's SPIFFE ID, once resolved. */
  readonly callee?: string;
  /** Which side refused a `CALL_DENIED`: this agent's outbound check, or the callee's inbound check. */
  readonly deniedBy?: 'caller' | 'callee';
  /** The outbound decision when this agent refused the call (nothing was sent). */
  readonly decision?: AuthzDecision;
  /** Audit id of the refusing decision (either side, when the callee sent one). */
  readonly auditId?: string;
  /** JSON-RPC error code the callee answered with. */
  readonly jsonRpcCode?: number;
  /** A2A task id and final state, when a task was created. */
  readonly taskId?: string;
  readonly taskState?: string;
  /** The callee's own error code (e.g. `CAPABILITY_INPUT_INVALID`), when it sent one. */
  readonly remoteCode?: string;
}

/**
 * A call to another agent was refused or failed. `code` is `CALL_DENIED`,
 * `CALL_FAILED`, `DEADLINE_EXCEEDED`, `PEER_UNKNOWN`,
 * `PEER_VERIFICATION_FAILED`, `CLIENT_CERTIFICATE_REQUIRED` (a channel factory
 * returned no SecureChannel), `AGENT_CONFIG_INVALID` (the call's own options
 * are invalid, e.g. `timeoutMs`; nothing was sent) or `AGENT_NOT_STARTED`; the
 * fields say where and why.
 */
export class CallError extends AgentError implements CallErrorDetails {
  readonly target: string;
  readonly capability: string;
  // `declare`: present only when known, so logs and serialized errors carry no undefined keys.
  declare readonly callee?: string;
  declare readonly deniedBy?: 'caller' | 'callee';
  declare readonly decision?: AuthzDecision;
  declare readonly auditId?: string;
  declare readonly jsonRpcCode?: number;
  declare readonly taskId?: string;
  declare readonly taskState?: string;
  declare readonly remoteCode?: string;

  constructor(
    code: AgentErrorCode,
    message: string,
    details: CallErrorDetails,
    options?: { cause?: unknown },
  ) {
    super(code, message, options);
    this.target = details.target;
    this.capability = details.capability;
    for (const k of [
      'callee',
      'deniedBy',
      'decision',
      'auditId',
      'jsonRpcCode',
      'taskId',
      'taskState',
      'remoteCode',
    ] as const) {
      if (details[k] !== undefined) Object.defineProperty(this, k, { value: details[k], enumerable: true });
    }
  }
}
