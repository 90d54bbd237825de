import { z } from 'zod';
import { spiffeIdPattern } from '@weave/authz';
import type { SpiffeId } from '@weave/identity';
import { A2AErrors } from './errors.js';
import { A2AConfigError } from './options.js';

const positiveInt = z.number().int().positive();
const rate = z.number().positive().finite();

const LimitFields = {
  /** Most unfinished tasks one caller may have at once (a task counts until its handler has returned). */
  maxConcurrentTasks: positiveInt.optional(),
  /** Requests per second one caller may make (any A2A method); unset = no rate limit. */
  requestsPerSecond: rate.optional(),
  /** Requests a caller may make at once above its rate (token bucket size). Default: one second's worth. */
  burst: positiveInt.optional(),
};

const CallerLimitRuleSchema = z.strictObject({
  /** Which callers the rule is for: a SPIFFE ID pattern as in policy rules' `callers`. */
  match: z.union([z.string().min(1), z.strictObject({ prefix: z.string().min(1) })]).superRefine((m, ctx) => {
    try {
      spiffeIdPattern(m);
    } catch (err) {
      ctx.addIssue({ code: 'custom', message: (err as Error).message });
    }
  }),
  ...LimitFields,
});

/** Per-caller limits of an A2A server (see {@link CallerLimits}). */
export const CallerLimitsSchema = z.strictObject({
  ...LimitFields,
  /** Limits for particular callers; the first rule whose `match` matches applies, else the defaults above. */
  rules: z.array(CallerLimitRuleSchema).max(1000).default([]),
});

/** Input form of the per-caller limits. */
export type CallerLimitsInput = z.input<typeof CallerLimitsSchema>;
/** One rule of {@link CallerLimitsInput}. */
export type CallerLimitRule = z.input<typeof CallerLimitRuleSchema>;

interface Effective {
  readonly maxTasks: number;
  /** Tokens per ms; 0 = no rate limit. */
  readonly perMs: number;
  readonly burst: number;
  readonly rps: number | undefined;
}

interface CallerState {
  readonly limits: Effective;
  tasks: number;
  tokens: number;
  refilledAt: number;
}

/** Above this many tracked callers, idle ones (no task, full bucket) are forgotten. */
const PRUNE_AT = 10_000;

/**
 * Per-caller admission of an A2A server, keyed by the verified SPIFFE ID:
 * at most `maxConcurrentTasks` unfinished tasks per caller, and (when set) at
 * most `requestsPerSecond` requests (a token bucket of `burst`). The server's
 * global task limit stays as a backstop. Over a limit, the call is refused
 * before anything runs, with a retryable RESOURCE_EXHAUSTED error that says
 * which limit and when to retry.
 */
export class CallerLimits {
  readonly #defaults: Effective;
  readonly #rules: ReadonlyArray<{ readonly matches: (id: SpiffeId) => boolean; readonly limits: Effective }>;
  readonly #callers = new Map<string, CallerState>();

  /**
   * @param input the limits (validated here)
   * @param defaultMaxTasks per-caller task limit when neither a rule nor the input sets one
   * @throws {A2AConfigError} for invalid limits or a malformed `match` pattern.
   */
  constructor(input: CallerLimitsInput | undefined, defaultMaxTasks: number) {
    const parsed = CallerLimitsSchema.safeParse(input ?? {});
    if (!parsed.success) {
      throw new A2AConfigError(
        'CallerLimits',
        parsed.error.issues.map(
          (i) => `limits.perCaller.${i.path.map(String).join('.') || '(root)'}: ${i.message}`,
        ),
      );
    }
    const cfg = parsed.data;
    this.#defaults = effective(cfg, defaultMaxTasks);
    this.#rules = cfg.rules.map((r) => {
      // Checked by the schema above.
      const matches = spiffeIdPattern(r.match);
      // A rule overrides what it names; a rule's own rate brings its own default burst.
      const merged = {
        maxConcurrentTasks: r.maxConcurrentTasks ?? cfg.maxConcurrentTasks,
        requestsPerSecond: r.requestsPerSecond ?? cfg.requestsPerSecond,
        burst: r.burst ?? (r.requestsPerSecond === undefined ? cfg.burst : undefined),
      };
      return { matches, limits: effective(merged, this.#defaults.maxTasks) };
    });
  }

  /**
   * Counts one request of `caller` against its rate.
   *
   * @throws {A2AError} RESOURCE_EXHAUSTED (retryable, with `retryAfterMs`) when over the rate.
   */
  admitRequest(caller: SpiffeId): void {
    const s = this.#state(caller);
    const l = s.limits;
    if (l.perMs === 0) return;
    const now = performance.now();
    s.tokens = Math.min(l.burst, s.tokens + (now - s.refilledAt) * l.perMs);
    s.refilledAt = now;
    if (s.tokens >= 1) {
      s.tokens -= 1;
      return;
    }
    const retryAfterMs = Math.max(1, Math.ceil((1 - s.tokens) / l.perMs));
    throw A2AErrors.callerRateLimited(caller.toString(), l.rps as number, retryAfterMs);
  }

  /**
   * Takes one task slot of `caller`; call the returned function once when
   * the task is over: for a task, once its handler has returned (it may go
   * on after its task ended, and uses the server until then).
   *
   * @throws {A2AError} RESOURCE_EXHAUSTED (retryable) when the caller has its maximum of unfinished tasks.
   */
  startTask(caller: SpiffeId): () => void {
    const s = this.#state(caller);
    if (s.tasks >= s.limits.maxTasks) {
      throw A2AErrors.callerTooManyTasks(caller.toString(), s.limits.maxTasks);
    }
    s.tasks++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      s.tasks--;
    };
  }

  /** Unfinished tasks counted for `caller` (for tests and metrics). */
  tasksOf(caller: SpiffeId): number {
    return this.#callers.get(caller.toString())?.tasks ?? 0;
  }

  #state(caller: SpiffeId): CallerState {
    const key = caller.toString();
    let s = this.#callers.get(key);
    if (s === undefined) {
      if (this.#callers.size >= PRUNE_AT) this.#prune();
      const limits = this.#rules.find((r) => r.matches(caller))?.limits ?? this.#defaults;
      s = { limits, tasks: 0, tokens: limits.burst, refilledAt: performance.now() };
      this.#callers.set(key, s);
    }
    return s;
  }

  #prune(): void {
    const now = performance.now();
    for (const [k, s] of this.#callers) {
      const full = s.limits.perMs === 0 || s.tokens + (now - s.refilledAt) * s.limits.perMs >= s.limits.burst;
      if (s.tasks === 0 && full) this.#callers.delete(k);
    }
  }
}

function effective(
  c: { maxConcurrentTasks?: number; requestsPerSecond?: number; burst?: number },
  defaultMaxTasks: number,
): Effective {
  const rps = c.requestsPerSecond;
  return {
    maxTasks: c.maxConcurrentTasks ?? defaultMaxTasks,
    perMs: rps === undefined ? 0 : rps / 1000,
    burst: c.burst ?? Math.max(1, Math.ceil(rps ?? 1)),
    rps,
  };
}
