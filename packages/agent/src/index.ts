/**
 * @weave/agent — `SecureAgent`: capabilities, config, lifecycle,
 * `callAgent()`, health, metrics and tracing on top of the Weave layers.
 *
 * @packageDocumentation
 */
export {
  AgentError,
  AgentConfigError,
  CallError,
  type AgentErrorCode,
  type CallErrorDetails,
  type ConfigIssue,
} from './errors.js';
export {
  AgentConfigSchema,
  parseAgentConfig,
  loadAgentConfig,
  applyEnvOverrides,
  postgresUrlProblem,
  type AgentConfig,
  type AgentConfigInput,
  type ParseAgentConfigOptions,
} from './config.js';
export {
  capability,
  defineCapability,
  CapabilityRegistry,
  type CapabilityContext,
  type CapabilityOptions,
  type CapabilityHandler,
  type CapabilityDefinition,
} from './capability.js';
export { AgentCore, OfflineTestAgent, type CallAgentStub } from './core.js';
export {
  reply,
  CapabilityReply,
  payloadOfParts,
  payloadOfTask,
  type FileContent,
  type FileResult,
  type ReplyArtifact,
  type ReplyPart,
} from './reply.js';
export { AgentMetrics, REFUSAL_REASONS } from './metrics.js';
export {
  identityFromConfig,
  enforcerFromConfig,
  type IdentityFromConfigOptions,
  type EnforcerFromConfigOptions,
} from './wiring.js';
export {
  SecureAgent,
  METRICS_ACTION,
  type SecureAgentOptions,
  type AgentState,
  type StartedAgent,
  type StopOptions,
} from './agent.js';
export { SKILL_SCHEMAS_EXTENSION, type CapabilityRouting } from './inbound.js';
export { WeaveClient, type WeaveClientOptions } from './client.js';
export {
  ERROR_METADATA_KEY,
  type CallAgentOptions,
  type CallResult,
  type ChannelFactory,
} from './outbound.js';
export { DEADLINE_HEADER, DEADLINE_KEY } from './scope.js';
export { extractTraceContext, injectTraceHeaders, outgoingTraceContext, traceIdOf } from './tracing.js';
// The seams a user implements or passes in, re-exported so one import serves.
export type { PolicyEnforcer } from '@weave/authz';
export type { IdentityProvider } from '@weave/identity';
export type { TaskStore } from '@weave/a2a';
