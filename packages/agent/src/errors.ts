import { WeaveError } from '@weave/identity';

/** Codes of {@link AgentError}. */
export type AgentErrorCode =
  | 'AGENT_CONFIG_INVALID'
  | 'AGENT_CONFIG_INSECURE'
  | 'AGENT_NOT_STARTED'
  | 'AGENT_ALREADY_STARTED'
  | 'AGENT_NO_IDENTITY'
  | 'CAPABILITY_NOT_FOUND'
  | 'CAPABILITY_INVALID'
  | 'CAPABILITY_INPUT_INVALID'
  | 'CAPABILITY_FAILED'
  | 'CALL_DENIED'
  | 'CALL_FAILED'
  | 'PEER_UNKNOWN'
  | 'DEADLINE_EXCEEDED'
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
