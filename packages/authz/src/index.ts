/**
 * @weave/authz — policy checks on every call: the `PolicyEnforcer` seam, a
 * local default-deny engine, an OPA client and an audit log.
 *
 * @packageDocumentation
 */
export type {
  Direction,
  AuthzContext,
  InboundCheck,
  OutboundCheck,
  AuthzDecision,
  PolicyEnforcer,
} from './types.js';
export { PolicyError, AuthzConfigError, type PolicyIssue } from './errors.js';
export { PinoAuditSink, type AuditSink, type AuditRecord, type AuditEngine } from './audit.js';
export { parsePolicy, validatePolicy, type PolicyDocument, type PolicyRule } from './policy.js';
export { spiffeIdPattern, type RawIdMatcher } from './matchers.js';
export {
  LocalPolicyEnforcer,
  type LocalPolicyOptions,
  type LocalPolicyFileOptions,
  type ReloadEvent,
} from './local.js';
export {
  OPA_DEFAULT_MAX_RESPONSE_BYTES,
  OPA_MAX_RESPONSE_BYTES,
  OPA_MAX_TIMEOUT_MS,
  OpaEnforcer,
  type OpaAvailability,
  type OpaEnforcerOptions,
  type OpaHealth,
} from './opa.js';
export { AllowAllEnforcer } from './allow-all.js';
