import { z } from 'zod';
import { thrownText } from '@weave/a2a';
import type { SpiffeId } from '@weave/identity';
import { AgentError } from './errors.js';
import type { CallAgentOptions, CallResult } from './outbound.js';
import { CapabilityReply, type ReplyArtifact } from './reply.js';

/** What a capability handler sees besides its validated input. */
export interface CapabilityContext {
  /** The verified SPIFFE ID of the caller (a synthetic local ID in {@link OfflineTestAgent}). */
  readonly caller: SpiffeId;
  /** Aborted when the task is canceled, the deadline passes or the agent stops. */
  readonly signal: AbortSignal;
  /** The A2A task id, when the call arrived over the network. */
  readonly taskId?: string;
  /**
   * The A2A tenant the call was made in (`/{tenant}/` path prefix or the
   * request's `tenant` field), when it named one. Tasks are scoped by it, and
   * the inbound policy saw it as `context.tenant`.
   */
  readonly tenant?: string;
  /** Correlation id carried through logs of this call. */
  readonly correlationId: string;
  /** Publishes an intermediate progress message (streamed to the caller as a status update). */
  progress(text: string): void;
  /**
   * Streams an artifact chunk to the caller (an A2A artifact update): with
   * `append`, its parts extend the artifact of the same `artifactId`;
   * `lastChunk` marks the artifact's end. Returns the artifact id, to append
   * to. A capability that streams its result this way returns nothing.
   */
  publishArtifact(chunk: ReplyArtifact, options?: { append?: boolean; lastChunk?: boolean }): string;
  /**
   * Flow control for a capability that streams many chunks or progress
   * messages: resolves at once while every caller streaming this task keeps up,
   * otherwise once the ones behind have caught up. Awaiting it after each
   * chunk (or each burst) gets every event to a slow reader instead of the
   * reader being cut at the server's stream buffer. Never rejects; it does not
   * wait after a cancel or for a reader that left. Resolves at once when there
   * is nobody to stream to.
   */
  drained(): Promise<void>;
  /**
   * Calls another agent on behalf of this call: like `agent.callAgent`, and
   * the nested call continues this call's trace, never gets more time than
   * this call has left, and is abandoned when this call is canceled or the
   * agent stops. Use it (rather than `agent.callAgent`) inside handlers.
   */
  callAgent<O extends z.ZodType | undefined = undefined>(
    target: SpiffeId | string,
    capability: string,
    input: unknown,
    options?: CallAgentOptions<O>,
  ): Promise<CallResult<O>>;
}

/** Options of a capability: its input schema and how it is described in the agent card. */
export interface CapabilityOptions<I extends z.ZodType = z.ZodType> {
  /** zod schema of the input; published as JSON Schema in the agent card. */
  readonly input: I;
  /**
   * zod schema of the output (optional); validated before the result leaves
   * the agent. Not applied to a `reply.*` result.
   */
  readonly output?: z.ZodType;
  readonly description?: string;
  readonly tags?: readonly string[];
  readonly examples?: readonly string[];
  /**
   * Safe to run again from the start: when the replica running a call dies
   * (several replicas on a shared PostgreSQL store), another replica runs it
   * again instead of failing it. Default false: at most once.
   */
  readonly rerunnable?: boolean;
  /**
   * Listed only on the extended agent card (A2A GetExtendedAgentCard, given
   * to authenticated callers the policy allows `a2a:GetExtendedAgentCard`),
   * never on the public card. Not access control: the policy decides who may
   * call the capability, as for any other. Set it on capabilities registered
   * before `start()`.
   */
  readonly extended?: boolean;
}

/**
 * A capability's code: gets the validated input and the call's context,
 * returns (or resolves with) the result, a plain value or a `reply.*`.
 */
export type CapabilityHandler<I = unknown, O = unknown> = (
  input: I,
  ctx: CapabilityContext,
) => O | Promise<O>;

/** A registered capability (one A2A skill). */
export interface CapabilityDefinition {
  readonly name: string;
  readonly options: CapabilityOptions;
  readonly handler: CapabilityHandler;
  /** The input schema as JSON Schema (draft 2020-12). */
  readonly inputJsonSchema: Record<string, unknown>;
  readonly outputJsonSchema?: Record<string, unknown>;
}

const NAME = /^[a-zA-Z0-9][a-zA-Z0-9._-]{0,127}$/;

function toJsonSchema(schema: z.ZodType, name: string, which: string): Record<string, unknown> {
  try {
    return z.toJSONSchema(schema, { unrepresentable: 'any' }) as Record<string, unknown>;
  } catch (err) {
    throw new AgentError(
      'CAPABILITY_INVALID',
      `capability "${name}": ${which} schema cannot be expressed as JSON Schema`,
      {
        cause: err,
      },
    );
  }
}

/** Builds a validated {@link CapabilityDefinition}. */
export function defineCapability<I extends z.ZodType>(
  name: string,
  options: CapabilityOptions<I>,
  handler: CapabilityHandler<z.output<I>>,
): CapabilityDefinition {
  if (!NAME.test(name)) {
    throw new AgentError(
      'CAPABILITY_INVALID',
      `capability name ${JSON.stringify(name)} must match ${NAME.source}`,
    );
  }
  if (!options || !(options.input instanceof z.ZodType)) {
    throw new AgentError('CAPABILITY_INVALID', `capability "${name}" needs a zod schema as options.input`);
  }
  // Refused here, not at the first call, where it would fail as the handler's own error.
  if (typeof handler !== 'function') {
    throw new AgentError('CAPABILITY_INVALID', `capability "${name}" needs a handler function`);
  }
  return Object.freeze({
    name,
    options,
    handler: handler as CapabilityHandler,
    inputJsonSchema: toJsonSchema(options.input, name, 'input'),
    ...(options.output ? { outputJsonSchema: toJsonSchema(options.output, name, 'output') } : {}),
  });
}

/** Capabilities of one agent instance, by name. */
export class CapabilityRegistry {
  readonly #caps = new Map<string, CapabilityDefinition>();

  add(def: CapabilityDefinition): void {
    if (this.#caps.has(def.name)) {
      throw new AgentError('CAPABILITY_INVALID', `capability "${def.name}" is registered twice`);
    }
    this.#caps.set(def.name, def);
  }

  get(name: string): CapabilityDefinition | undefined {
    return this.#caps.get(name);
  }

  list(): CapabilityDefinition[] {
    return [...this.#caps.values()];
  }

  /**
   * Validates `input` and runs the handler.
   *
   * @throws {AgentError} CAPABILITY_NOT_FOUND, CAPABILITY_INPUT_INVALID, or
   *   CAPABILITY_FAILED wrapping what the handler threw.
   */
  async invoke(name: string, input: unknown, ctx: CapabilityContext): Promise<unknown> {
    const def = this.#caps.get(name);
    if (!def) throw new AgentError('CAPABILITY_NOT_FOUND', `no capability named "${name}"`);
    const parsed = def.options.input.safeParse(input);
    if (!parsed.success) {
      throw new AgentError(
        'CAPABILITY_INPUT_INVALID',
        `invalid input for "${name}": ${z.prettifyError(parsed.error).replace(/\n/g, '; ')}`,
      );
    }
    let out: unknown;
    try {
      out = await def.handler(parsed.data, ctx);
    } catch (err) {
      if (err instanceof AgentError) throw err;
      // Its text cut to FAILURE_TEXT_CHARS (it stays whole as the cause); a value that cannot be read is named.
      throw new AgentError('CAPABILITY_FAILED', `capability "${name}" failed: ${thrownText(err)}`, {
        cause: err,
      });
    }
    // A reply built with `reply.*` is A2A content, not the value the output schema describes.
    if (def.options.output && !(out instanceof CapabilityReply)) {
      const checked = def.options.output.safeParse(out);
      if (!checked.success) {
        throw new AgentError(
          'CAPABILITY_FAILED',
          `capability "${name}" returned an invalid result: ${z.prettifyError(checked.error)}`,
        );
      }
      return checked.data;
    }
    return out;
  }
}

/** Implemented by agents whose methods are decorated with {@link capability}. */
export interface HasCapabilities {
  readonly capabilities: CapabilityRegistry;
}

/**
 * Method decorator (TypeScript 5 standard decorators) that registers the
 * method as a capability of the agent instance.
 *
 * ```ts
 * class Search extends SecureAgent {
 *   @capability('search', { input: z.object({ query: z.string() }) })
 *   async search(input: { query: string }, ctx: CapabilityContext) { ... }
 * }
 * ```
 */
export function capability<I extends z.ZodType>(name: string, options: CapabilityOptions<I>) {
  // Validate at class definition time so a bad name fails on import, not at start().
  const probe = defineCapability(name, options, () => undefined);
  return function <This extends HasCapabilities>(
    method: (this: This, input: z.output<I>, ctx: CapabilityContext) => unknown,
    context: ClassMethodDecoratorContext<This>,
  ): void {
    if (context.static || context.private) {
      throw new AgentError(
        'CAPABILITY_INVALID',
        `@capability("${name}") must decorate a public instance method`,
      );
    }
    context.addInitializer(function (this: This) {
      this.capabilities.add({
        ...probe,
        handler: (input, ctx) => method.call(this, input as z.output<I>, ctx),
      });
    });
  };
}
