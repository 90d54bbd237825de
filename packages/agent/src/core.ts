import type { z } from 'zod';
import { A2AError, A2AErrorCode, unsendable } from '@weave/a2a';
import { SpiffeId, randomUuid } from '@weave/identity';
import {
  CapabilityRegistry,
  defineCapability,
  type CapabilityContext,
  type CapabilityHandler,
  type CapabilityOptions,
  type HasCapabilities,
} from './capability.js';
import { AgentError } from './errors.js';
import { checkOutput, type CallAgentOptions } from './outbound.js';
import { resultArtifacts, toArtifact } from './reply.js';

/** Stands in for `ctx.callAgent` in {@link OfflineTestAgent.invoke}: receives what the handler asked for. */
export type CallAgentStub = (
  target: SpiffeId | string,
  capability: string,
  input: unknown,
  options: CallAgentOptions<z.ZodType | undefined>,
) => unknown;

/**
 * What every agent shares: a registry of capabilities, filled by
 * `@capability` decorators or by {@link AgentCore.capability}.
 */
export abstract class AgentCore implements HasCapabilities {
  readonly capabilities = new CapabilityRegistry();

  /**
   * Registers a capability without decorators.
   *
   * ```ts
   * agent.capability('echo', { input: z.object({ text: z.string() }) }, ({ text }) => ({ text }));
   * ```
   */
  capability<I extends z.ZodType>(
    name: string,
    options: CapabilityOptions<I>,
    handler: CapabilityHandler<z.output<I>>,
  ): this {
    this.capabilities.add(defineCapability(name, options, handler));
    return this;
  }
}

/** The caller {@link OfflineTestAgent.invoke} reports when the test names none. */
const LOCAL_TEST_CALLER = SpiffeId.parse('spiffe://local.test/base-agent-caller');

/**
 * The no-network test double of an agent: no identity, no mTLS, no policy,
 * for unit-testing business logic in-process. It can never be started as a
 * server: use `SecureAgent` for that.
 */
export class OfflineTestAgent extends AgentCore {
  /**
   * Validates the input and runs a capability in-process. A handler's
   * `ctx.callAgent` goes to `options.callAgent` (a test's stand-in for the
   * other agents); without one it fails with `AGENT_NOT_STARTED`, since a
   * OfflineTestAgent has no network.
   *
   * @throws {AgentError} as a served call fails: CAPABILITY_NOT_FOUND,
   *   CAPABILITY_INPUT_INVALID, or CAPABILITY_FAILED (the handler threw, or
   *   returned a result no binding can send: a `Date`, a BigInt, `NaN`, a cycle).
   */
  async invoke(
    name: string,
    input: unknown,
    options: { caller?: SpiffeId; signal?: AbortSignal; callAgent?: CallAgentStub } = {},
  ): Promise<unknown> {
    const stub = options.callAgent;
    const ctx: CapabilityContext = {
      caller: options.caller ?? LOCAL_TEST_CALLER,
      signal: options.signal ?? new AbortController().signal,
      correlationId: randomUuid(),
      progress: () => undefined,
      // No caller to stream to: the chunk's id is all there is to give back,
      // once it passed the check a served chunk meets (the A2A server throws
      // the same error into the handler there).
      publishArtifact: (chunk) => {
        const a = toArtifact(chunk);
        const bad = unsendable(a);
        if (bad !== undefined) {
          throw new A2AError(A2AErrorCode.InvalidAgentResponse, `Invalid agent response: ${bad}`);
        }
        return a.artifactId;
      },
      drained: () => Promise.resolve(),
      callAgent: async (target, capability, input, callOptions = {}) => {
        if (!stub) {
          throw new AgentError(
            'AGENT_NOT_STARTED',
            `a OfflineTestAgent has no network: pass options.callAgent to invoke() to stand in for ${String(target)}`,
          );
        }
        // Checked against `output` like a real call's result.
        const out = await stub(target, capability, input, callOptions);
        return checkOutput(out, callOptions.output, { target: String(target), capability }) as never;
      },
    };
    const out = await this.capabilities.invoke(name, input, ctx);
    // The check a served call's result meets when it is published: without
    // it, a result that fails once served (a Date) passed here.
    for (const a of resultArtifacts(out)) {
      const bad = unsendable(a);
      if (bad !== undefined) {
        throw new AgentError(
          'CAPABILITY_FAILED',
          `capability "${name}" returned a result no binding can send: ${bad}`,
        );
      }
    }
    return out;
  }

  /** Always throws: a OfflineTestAgent has no identity and no policy, so it must not listen. */
  start(): never {
    throw new AgentError(
      'BASE_AGENT_NOT_SERVABLE',
      'OfflineTestAgent has no identity, mTLS or policy and cannot be started as a network server; use SecureAgent',
    );
  }
}
