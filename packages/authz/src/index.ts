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
