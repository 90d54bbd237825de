/**
 * From an agent config to the objects it names: the identity provider and
 * the policy enforcer. One home for this wiring, shared by `SecureAgent`
 * and the `weave` CLI, so a config means the same thing to both.
 */
import type { Logger } from 'pino';
import {
  AllowAllEnforcer,
  LocalPolicyEnforcer,
  OpaEnforcer,
  PinoAuditSink,
  type AuditSink,
  type OpaEnforcerOptions,
  type PolicyEnforcer,
} from '@weave/authz';
import { StaticMtlsProvider, WorkloadApiIdentityProvider, type IdentityProvider } from '@weave/identity';
import type { AgentConfig } from './config.js';
import { AgentError } from './errors.js';

/** Options of {@link identityFromConfig}. */
export interface IdentityFromConfigOptions {
  readonly logger: Logger;
  /** The SVID to take when the workload is entitled to several (`spiffeId` of the config). */
  readonly spiffeId?: string | undefined;
  /** Where `SPIFFE_ENDPOINT_SOCKET` is read when the config names no socket (default `process.env`). */
  readonly env?: Readonly<Record<string, string | undefined>>;
  /** How long to wait for the first SVID (default: the config's `workloadApi.timeoutMs`). */
  readonly readyTimeoutMs?: number;
  /**
   * Cancels the wait for the first SVID from the Workload API: the call
   * rejects with the signal's reason as soon as it aborts, having closed the
   * connection it opened.
   */
  readonly signal?: AbortSignal;
}

/** How long an identity from `identity` may take to serve its first SVID. */
export function identityTimeoutMs(identity: AgentConfig['identity']): number {
  return identity && 'workloadApi' in identity ? identity.workloadApi.timeoutMs : 10_000;
}

/**
 * The identity provider an agent config's `identity` section names: static
 * files, or the Workload API at its socket (else at `SPIFFE_ENDPOINT_SOCKET`),
 * ready with a first SVID. The caller owns it and closes it.
 *
 * @throws {AgentError} `AGENT_NO_IDENTITY` when no source is named at all.
 * Failures of the provider itself (a bad socket address, no SVID in time,
 * unreadable files) are thrown as the provider threw them, and the reason of
 * `signal` when it aborted first.
 */
export async function identityFromConfig(
  identity: AgentConfig['identity'],
  options: IdentityFromConfigOptions,
): Promise<IdentityProvider> {
  if (identity && 'static' in identity) {
    return StaticMtlsProvider.create({ ...identity.static, logger: options.logger });
  }
  const socket = identity?.workloadApi.socket ?? (options.env ?? process.env).SPIFFE_ENDPOINT_SOCKET;
  if (!socket) {
    throw new AgentError(
      'AGENT_NO_IDENTITY',
      'no identity source: set identity.workloadApi.socket, identity.static, or SPIFFE_ENDPOINT_SOCKET',
    );
  }
  return WorkloadApiIdentityProvider.create({
    address: socket,
    // A workload entitled to several SVIDs takes the one it is configured as.
    ...(options.spiffeId === undefined ? {} : { spiffeId: options.spiffeId }),
    readyTimeoutMs: options.readyTimeoutMs ?? identityTimeoutMs(identity),
    logger: options.logger,
    ...(options.signal === undefined ? {} : { signal: options.signal }),
  });
}

/** Options of {@link enforcerFromConfig}. */
export interface EnforcerFromConfigOptions {
  readonly logger: Logger;
  /** Where decisions are recorded (default: one structured log line each, on `logger`). */
  readonly audit?: AuditSink;
  /** Reload a policy file when it changes (default true; a one-shot command has no use for it). */
  readonly watch?: boolean;
  /**
   * Told whether the OPA of `authz.opa` answers, after each decision asked and
   * each `health()` probe (the enforcer's `onAvailability`); unused for
   * another policy.
   */
  readonly onAvailability?: OpaEnforcerOptions['onAvailability'];
}

/**
 * The policy enforcer an agent config's `authz` section names: a local
 * policy file, an OPA sidecar, or allow-all (refused in production by the
 * config parser and again by `AllowAllEnforcer`). The caller owns it and
 * closes it.
 *
 * Failures (an invalid policy file, a bad OPA URL) are thrown as the
 * enforcer threw them.
 */
export async function enforcerFromConfig(
  authz: NonNullable<AgentConfig['authz']>,
  options: EnforcerFromConfigOptions,
): Promise<PolicyEnforcer> {
  const { logger } = options;
  const audit = options.audit ?? new PinoAuditSink(logger);
  if ('policyFile' in authz) {
    return LocalPolicyEnforcer.fromFile(authz.policyFile, {
      logger,
      audit,
      ...(options.watch === undefined ? {} : { watch: options.watch }),
    });
  }
  if ('opa' in authz) {
    const o = authz.opa;
    return new OpaEnforcer({
      url: o.url,
      path: o.path,
      timeoutMs: o.timeoutMs,
      maxResponseBytes: o.maxResponseBytes,
      audit,
      ...(o.cacheTtlMs > 0 ? { cache: { ttlMs: o.cacheTtlMs } } : {}),
      ...(options.onAvailability === undefined ? {} : { onAvailability: options.onAvailability }),
    });
  }
  logger.warn('authz.allowAll is on: every verified caller may call every capability (tests only)');
  return new AllowAllEnforcer({ audit });
}
