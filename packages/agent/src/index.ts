/**
 * @weave/agent — `SecureAgent`: capabilities, config, lifecycle,
 * `callAgent()`, health, metrics and tracing on top of the Weave layers.
 *
 * @packageDocumentation
 */
export { AgentError, AgentConfigError, type AgentErrorCode, type ConfigIssue } from './errors.js';
export {
  AgentConfigSchema,
  parseAgentConfig,
  loadAgentConfig,
  applyEnvOverrides,
  type AgentConfig,
  type AgentConfigInput,
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
export { AgentCore, BaseAgent } from './core.js';
export { AgentMetrics } from './metrics.js';
