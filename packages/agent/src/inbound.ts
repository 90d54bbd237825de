import { setMaxListeners } from 'node:events';
import { performance } from 'node:perf_hooks';
import { context as otelContext, type Context } from '@opentelemetry/api';
import type { Logger } from 'pino';
import type { z } from 'zod';
import { Deadlines, FAILURE_TEXT_CHARS, TaskHandedOverError, loggableError, type Deadline } from '@weave/a2a';
import type {
  A2AServer,
  AgentCard,
  AgentSkill,
  Message,
  RouteInfo,
  TaskContext,
  TaskHandler,
  TaskResult,
} from '@weave/a2a';
import { WeaveError, cutText, randomUuid, type IdentityProvider, type SpiffeId } from '@weave/identity';
import type { CapabilityContext, CapabilityDefinition, CapabilityRegistry } from './capability.js';
import { AgentError, CallError } from './errors.js';
import type { AgentMetrics, CallOutcome } from './metrics.js';
import { ERROR_METADATA_KEY, type CallAgentOptions } from './outbound.js';
import {
  DEADLINE_HEADER,
  DEADLINE_KEY,
  deadlineReason,
  isDeadlineReason,
  parseDeadline,
  scopedSignal,
  type CallScope,
} from './scope.js';
import { extractTraceContext, traceIdOf } from './tracing.js';
import { inputOfParts, resultArtifacts, toArtifact } from './reply.js';

/** URI of the agent-card extension that carries each skill's JSON Schemas. */
export const SKILL_SCHEMAS_EXTENSION = 'https://weave.dev/extensions/skill-schemas/v1';

/**
 * How a message that names no capability is routed: `route` first, then
 * `defaultCapability`. The inbound policy is checked on the capability
 * chosen, before its handler runs; the task's `metadata.skill` names it.
 */
export interface CapabilityRouting {
  /** The capability of a message that names none and that `route` leaves undecided. */
  readonly defaultCapability?: string;
  /**
   * Reads the message (its data part, its text, or a model's reading of it)
   * and names a capability, or `undefined` for the default. It runs before
   * the policy check: it must not act on the message, only classify it.
   */
  readonly route?: (message: Message, info: RouteInfo) => string | undefined | Promise<string | undefined>;
}

/** The skills' JSON Schemas as the two cards carry them: an extended skill's only on the extended card. */
export interface SkillSchemas {
  readonly public: Record<string, unknown>;
  readonly extended: Record<string, unknown>;
}

/** Where capabilities are served: the running agent's A2A server, its cards' schemas and its identity. */
export interface ServeTarget {
  readonly a2a: A2AServer;
  readonly skillSchemas: SkillSchemas;
  readonly identity: IdentityProvider;
}

/** What a handler's `ctx.callAgent` runs: a call on behalf of the call being served. */
export type NestedCall = (
  target: SpiffeId | string,
  capability: string,
  input: unknown,
  options: CallAgentOptions<z.ZodType | undefined>,
  scope: CallScope,
) => Promise<unknown>;

/**
 * The inbound side of a `SecureAgent`, beside `Outbound`: which capability a
 * message goes to, each capability's A2A task handler (deadline, trace
 * context, stop signal, metrics and the call log around the handler), and
 * the guard that ends a handler's task when its deadline passes or the agent
 * stops. The inbound policy check itself is the A2A server's: it runs on the
 * capability chosen, before any of this.
 */
export class Inbound {
  readonly #capabilities: CapabilityRegistry;
  readonly #metrics: AgentMetrics;
  readonly #logger: Logger;
  readonly #routing: CapabilityRouting | undefined;
  readonly #nested: NestedCall;
  readonly #stopController = new AbortController();
  // Each running handler's give-up function and its deadline (Infinity when
  // it has none; a stop ends them all). One timer serves them all: a call
  // costs no timer of its own (a setTimeout and clearTimeout per call was
  // about 1.5 % of the server's CPU in the call bench's profile).
  readonly #guards = new Deadlines<HandlerContext>((ctx) => ctx.giveUp(deadlineExpired(), deadlineReason()));
  #runningTasks = 0;

  constructor(opts: {
    capabilities: CapabilityRegistry;
    metrics: AgentMetrics;
    logger: Logger;
    routing?: CapabilityRouting;
    nested: NestedCall;
  }) {
    this.#capabilities = opts.capabilities;
    this.#metrics = opts.metrics;
    this.#logger = opts.logger;
    this.#routing = opts.routing;
    this.#nested = opts.nested;
    // One listener per running handler that reads its signal (see
    // HandlerContext.signal), removed when it settles: more than Node's
    // default of 10 at once is no leak, and warned as one.
    setMaxListeners(0, this.#stopController.signal);
  }

  /** Handlers running now (a drain waits for 0). */
  get runningTasks(): number {
    return this.#runningTasks;
  }

  /**
   * The routing for the A2A server; a default that names no capability is a
   * start error.
   */
  routing(): { defaultSkill?: string; route?: CapabilityRouting['route'] } | undefined {
    const r = this.#routing;
    if (!r) return undefined;
    const d = r.defaultCapability;
    if (d !== undefined && !this.#capabilities.get(d)) {
      throw new AgentError(
        'AGENT_CONFIG_INVALID',
        `routing.defaultCapability ${JSON.stringify(d)} is not a capability of this agent`,
      );
    }
    return { ...(d === undefined ? {} : { defaultSkill: d }), ...(r.route ? { route: r.route } : {}) };
  }

  /** Serves a capability: its skill and schemas on the cards, its handler on the A2A server. */
  serve(target: ServeTarget, def: CapabilityDefinition): void {
    const skill: AgentSkill = {
      id: def.name,
      name: def.name,
      description: def.options.description ?? '',
      tags: [...(def.options.tags ?? [])],
      inputModes: ['application/json'],
      outputModes: ['application/json'],
      ...(def.options.examples ? { examples: [...def.options.examples] } : {}),
    };
    const schemas = {
      input: def.inputJsonSchema,
      ...(def.outputJsonSchema ? { output: def.outputJsonSchema } : {}),
    };
    const extended = def.options.extended === true;
    target.skillSchemas.extended[def.name] = schemas;
    if (!extended) target.skillSchemas.public[def.name] = schemas;
    target.a2a.registerTaskHandler(skill, this.#taskHandler(target, def), {
      rerunnable: def.options.rerunnable === true,
      extended,
    });
  }

  /**
   * Ends every running handler's task with `reason` (`AGENT_STOPPING`): their
   * signals abort and their guards give up on them. Further tasks are refused
   * the same way.
   */
  stop(reason: AgentError): void {
    this.#stopController.abort(reason);
    for (const ctx of this.#guards.keys()) ctx.giveUp(reason);
  }

  #taskHandler(target: ServeTarget, def: CapabilityDefinition): TaskHandler {
    return async (tctx: TaskContext): Promise<TaskResult> => {
      const started = performance.now();
      const trace = extractTraceContext(tctx.headers);
      const correlationId = traceIdOf(trace);
      const deadline = parseDeadline(tctx.headers[DEADLINE_HEADER]);
      const ctx = new HandlerContext(
        tctx,
        correlationId,
        trace,
        deadline,
        this.#stopController.signal,
        this.#nested,
      );
      this.#runningTasks++;
      this.#metrics.taskState('TASK_STATE_SUBMITTED');
      this.#metrics.taskState('TASK_STATE_WORKING');
      let outcome: CallOutcome = 'error';
      // Undefined: the task did not end here (handed to another replica).
      let final: string | undefined = 'TASK_STATE_FAILED';
      let failure: AgentError | undefined;
      try {
        // Inside the call's OpenTelemetry context: with a context manager
        // registered, a plain agent.callAgent() from the handler inherits it.
        const scopeContext = deadline === undefined ? trace : trace.setValue(DEADLINE_KEY, deadline);
        const value = await this.#guard(
          def.name,
          inputOfParts(tctx.message.parts),
          ctx,
          scopeContext,
          deadline,
        );
        // A result that comes after the deadline (say, a handler that returned
        // when its signal fired) is late all the same: the caller has given up.
        if (ctx.expired()) throw new AgentError('DEADLINE_EXCEEDED', 'the call ran past its deadline');
        // Canceled while it ran (a handler that ignored its signal), or failed
        // at the server's bound (`maxTaskMs`): the A2A server settled the
        // task, and what it returned goes nowhere.
        if (!target.a2a.manager.isLive(tctx.taskId)) {
          failure = overran(tctx);
          final = settledAs(tctx, failure);
          return undefined;
        }
        // Published here rather than returned to the A2A server: a result no
        // binding can send (a BigInt, a Date, a cycle) is refused now, and
        // this call fails, counted and logged as a failure, not a success.
        // (Streamed with ctx.publishArtifact and nothing returned: the chunks are the result.)
        if (value !== undefined || !ctx.publishedArtifacts) {
          for (const a of resultArtifacts(value)) tctx.publishArtifact(a);
        }
        outcome = 'success';
        final = 'TASK_STATE_COMPLETED';
        return undefined;
      } catch (err) {
        if (!target.a2a.manager.isLive(tctx.taskId)) {
          // Canceled by the caller, or failed at `maxTaskMs`: the A2A server
          // already settled the task. Or handed to another replica as the agent
          // stopped (the AGENT_STOPPING that may end this wait is not the
          // task's): another replica runs it, and nothing is written for it here.
          failure = overran(tctx);
          final = settledAs(tctx, failure);
          return undefined;
        }
        failure =
          ctx.expired() && !(err instanceof AgentError && err.code === 'AGENT_STOPPING')
            ? new AgentError('DEADLINE_EXCEEDED', 'the call ran past its deadline', { cause: err })
            : err instanceof AgentError
              ? err
              : new AgentError('CAPABILITY_FAILED', 'the capability failed', { cause: err });
        tctx.publishStatus('TASK_STATE_FAILED', failureMessage(failure));
        return undefined;
      } finally {
        ctx.dispose();
        this.#runningTasks--;
        if (final !== undefined) this.#metrics.taskState(final);
        const seconds = (performance.now() - started) / 1000;
        const caller = tctx.caller.toString();
        this.#metrics.observeCall('inbound', def.name, caller, outcome, seconds);
        if (failure || this.#logger.isLevelEnabled('info')) {
          const entry = {
            correlationId,
            caller,
            callee: target.identity.id.toString(),
            capability: def.name,
            direction: 'inbound',
            taskId: tctx.taskId,
            outcome,
            ms: Math.round(seconds * 1e4) / 10,
          };
          if (failure) logFailure(this.#logger, entry, failure);
          else this.#logger.info(entry, servedLine(final));
        }
      }
    };
  }

  /**
   * Runs capability `name` on `input` (inside the OpenTelemetry context
   * `scope`) until it settles, its deadline passes or the agent stops,
   * whichever is first; a handler that ignores its signal cannot hold a task
   * open past either. When the guard gives up, the handler sees its signal
   * abort. The guard is `ctx` itself, let go by `ctx.dispose()`: no closure
   * per call for it.
   */
  #guard(
    name: string,
    input: unknown,
    ctx: HandlerContext,
    scope: Context,
    deadline: number | undefined,
  ): Promise<unknown> {
    return new Promise<unknown>((resolve, reject) => {
      if (this.#stopController.signal.aborted) {
        return reject(this.#stopController.signal.reason as AgentError);
      }
      if (deadline !== undefined && deadline - Date.now() <= 0) return reject(deadlineExpired());
      ctx.guard(this.#guards, deadline ?? Infinity, reject);
      const caps = this.#capabilities;
      otelContext.with(scope, caps.invoke, caps, name, input, ctx).then(resolve, reject);
    });
  }
}

/**
 * Logs a failed call with what its handler threw, bounded and read without
 * throwing ({@link loggableError}): a 10 MB message was a 20 MB line, and a
 * thrown value whose getters throw made pino's error serializer throw.
 */
function logFailure(logger: Logger, entry: object, failure: AgentError): void {
  logger.warn({ ...entry, err: loggableError(failure.cause ?? failure), code: failure.code }, 'call failed');
}

/**
 * The failure of a task the A2A server ended because it ran past the
 * agent's `server.maxTaskMs` (its signal's reason says so), to be counted
 * and logged as one; `undefined` for a task ended otherwise (a cancel).
 */
function overran(tctx: TaskContext): AgentError | undefined {
  const reason: unknown = tctx.signal.reason;
  return reason instanceof WeaveError && reason.code === 'TASK_TIME_LIMIT'
    ? new AgentError('DEADLINE_EXCEEDED', 'the task ran longer than this agent allows (server.maxTaskMs)', {
        cause: reason,
      })
    : undefined;
}

/**
 * How the task of a handler that settled after its task left this replica
 * ended here: FAILED at the server's bound (`failure`), not at all when the
 * A2A server handed it to another replica (`TaskHandedOverError`), else CANCELED.
 */
function settledAs(tctx: TaskContext, failure: AgentError | undefined): string | undefined {
  if (failure) return 'TASK_STATE_FAILED';
  return tctx.signal.reason instanceof TaskHandedOverError ? undefined : 'TASK_STATE_CANCELED';
}

/** The log line of a call that did not fail, by how its task ended here. */
function servedLine(final: string | undefined): string {
  if (final === undefined) return 'call handed over to another replica';
  return final === 'TASK_STATE_CANCELED' ? 'call canceled' : 'call served';
}

function deadlineExpired(): AgentError {
  return new AgentError('DEADLINE_EXCEEDED', 'the call ran past its deadline');
}

/** The card extension that carries the skills' schemas (`params`). */
export function skillSchemaExtension(params: Record<string, unknown>): {
  uri: string;
  description: string;
  required: boolean;
} {
  // A2A's AgentSkill has no schema field: the schemas ride on a card extension.
  const ext = {
    uri: SKILL_SCHEMAS_EXTENSION,
    description:
      'JSON Schema (draft 2020-12) of each skill input and output; the input is sent as a data part',
    required: false,
    params,
  };
  return ext;
}

/** The extended card: every skill, and the schemas of every skill in the skill-schemas extension. */
export function extendedCard(card: AgentCard, schemas: SkillSchemas): AgentCard {
  const extensions = card.capabilities.extensions?.map((e) =>
    e.uri === SKILL_SCHEMAS_EXTENSION ? { ...e, params: schemas.extended } : e,
  );
  return extensions ? { ...card, capabilities: { ...card.capabilities, extensions } } : card;
}

/** The status message of a failed task: what the caller may know, never a stack or an inner error text. */
function failureMessage(e: AgentError): Message {
  // A handler's own exception text and a downstream call's details stay in this agent's log.
  const internal =
    (e.code === 'CAPABILITY_FAILED' && !(e.cause instanceof AgentError)) || e instanceof CallError;
  // Cut: a handler's AgentError may carry anything, and a 10 MB message made
  // the answer too large for the caller to read at all (nor its error code).
  const text = internal
    ? `${e.code}: see the callee's log for details`
    : cutText(e.message, FAILURE_TEXT_CHARS);
  return {
    messageId: randomUuid(),
    role: 'ROLE_AGENT',
    parts: [{ text }],
    metadata: { [ERROR_METADATA_KEY]: { code: e.code, message: text } },
  };
}

/**
 * The `CapabilityContext` of one inbound call. A class rather than an object
 * literal with closures: one is made per call, and the handler's AbortSignal
 * (with its timer) only when the handler reads it — most never do.
 */
class HandlerContext implements CapabilityContext {
  readonly caller: SpiffeId;
  readonly taskId: string;
  readonly tenant?: string;
  #scoped: ReturnType<typeof scopedSignal> | undefined;

  constructor(
    private readonly tctx: TaskContext,
    readonly correlationId: string,
    private readonly trace: Context,
    private readonly deadline: number | undefined,
    private readonly stopping: AbortSignal,
    private readonly nested: NestedCall,
  ) {
    this.caller = tctx.caller;
    this.taskId = tctx.taskId;
    if (tctx.tenant !== undefined) this.tenant = tctx.tenant;
  }

  get signal(): AbortSignal {
    return (this.#scoped ??= scopedSignal([this.tctx.signal, this.stopping], this.deadline)).signal;
  }

  // Bound on first use, so a handler may destructure them (`{ progress }`).
  #progress: CapabilityContext['progress'] | undefined;
  #callAgent: CapabilityContext['callAgent'] | undefined;
  #drained: CapabilityContext['drained'] | undefined;

  get progress(): CapabilityContext['progress'] {
    return (this.#progress ??= (text: string) => {
      if (!this.#scoped?.signal.aborted) this.tctx.publishMessage(String(text));
    });
  }

  /** Whether the handler streamed an artifact chunk. */
  publishedArtifacts = false;
  #publishArtifact: CapabilityContext['publishArtifact'] | undefined;

  get publishArtifact(): CapabilityContext['publishArtifact'] {
    return (this.#publishArtifact ??= (chunk, options) => {
      const a = toArtifact(chunk);
      if (!this.#scoped?.signal.aborted) {
        this.tctx.publishArtifact(a, options);
        this.publishedArtifacts = true;
      }
      return a.artifactId;
    });
  }

  get drained(): CapabilityContext['drained'] {
    return (this.#drained ??= () => this.tctx.drained());
  }

  get callAgent(): CapabilityContext['callAgent'] {
    return (this.#callAgent ??= (target, capability, input, options = {}) =>
      this.nested(target, capability, input, options, {
        trace: this.trace,
        deadline: this.deadline,
        signal: this.signal,
      }) as never);
  }

  // The guard of the running handler (see Inbound's #guard): where it waits, and how it gives up.
  #guards: Deadlines<HandlerContext> | undefined;
  #guardEntry: Deadline<HandlerContext> | undefined;
  #endWait: ((err: unknown) => void) | undefined;

  /** Puts the handler under guard until `deadline` (epoch ms); `reject` ends its wait. */
  guard(guards: Deadlines<HandlerContext>, deadline: number, reject: (err: unknown) => void): void {
    this.#guards = guards;
    this.#guardEntry = guards.add(this, deadline);
    this.#endWait = reject;
  }

  /** Ends the handler's task with `err` (the guard gave up on it): its signal aborts with `reason`. */
  giveUp(err: unknown, reason: unknown = err): void {
    this.#unguard();
    this.#scoped?.abort(reason);
    this.#endWait?.(err);
  }

  #unguard(): void {
    if (this.#guardEntry !== undefined) this.#guards?.delete(this.#guardEntry);
    this.#guardEntry = undefined;
  }

  /** Past the deadline. Timers may fire a hair early: the abort reason counts too. */
  expired(): boolean {
    const s = this.#scoped?.signal;
    return (
      (s?.aborted === true && isDeadlineReason(s.reason)) ||
      (this.deadline !== undefined && Date.now() >= this.deadline)
    );
  }

  dispose(): void {
    this.#unguard();
    this.#scoped?.dispose();
  }
}
