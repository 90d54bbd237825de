import { z } from 'zod';
import { checkOptions, shown, timerMs } from '../options.js';

/**
 * Reconnect delays of the Workload API watchers: exponential from
 * `initialMs` (times `multiplier` per failure) up to `maxMs`, each with
 * jitter (a random point in the upper half of the step, so many workloads of
 * one node do not reconnect in step), and reset once a message arrives.
 *
 * While the workload's SVID has expired, or would expire before the next
 * attempt, the delay is capped at `urgentMaxMs`: a workload without a usable
 * identity retries about once a second (a local socket: cheap), so it has a
 * fresh SVID within about a second of the Workload API coming back.
 */
export interface BackoffOptions {
  /** First delay, in whole ms from 1 to 2147483647. Default 1000. */
  readonly initialMs?: number;
  /** Growth per further failure, from 1 to 10. Default 2. */
  readonly multiplier?: number;
  /** Upper bound, in whole ms from `initialMs` to 2147483647. Default 30000. */
  readonly maxMs?: number;
  /** Upper bound while the SVID is expired or about to, at most `maxMs`. Default 1000 (or `maxMs` if lower). */
  readonly urgentMaxMs?: number;
}

const multiplierError = (issue: { input?: unknown }): string =>
  `must be a number from 1 to 10, got ${shown(issue.input)}`;

// Every delay is set on a timer, so each is capped at Node's longest: a
// longer maxMs would make a dropped stream reconnect every millisecond.
const BackoffSchema = z
  .object({
    initialMs: timerMs().default(1000),
    multiplier: z
      .number({ error: multiplierError })
      .min(1, { error: multiplierError })
      .max(10, { error: multiplierError })
      .default(2),
    maxMs: timerMs().default(30_000),
    urgentMaxMs: timerMs().optional(),
  })
  .strict()
  .refine((b) => b.maxMs >= b.initialMs, { message: 'must be at least initialMs', path: ['maxMs'] })
  .refine((b) => b.urgentMaxMs === undefined || b.urgentMaxMs <= b.maxMs, {
    message: 'must be at most maxMs',
    path: ['urgentMaxMs'],
  })
  .transform((b) => ({ ...b, urgentMaxMs: b.urgentMaxMs ?? Math.min(1000, b.maxMs) }));

export type ResolvedBackoff = Required<BackoffOptions>;

/**
 * @internal Validates backoff options and fills in the defaults.
 * @throws {IdentityConfigError} naming each bad option (`backoff.maxMs: …`).
 */
export function resolveBackoff(options: BackoffOptions | undefined): ResolvedBackoff {
  return checkOptions('Workload API client', BackoffSchema, options ?? {}, 'backoff');
}

/** @internal One watcher's backoff state. */
export class ExponentialBackoff {
  #attempts = 0;

  constructor(
    private readonly options: ResolvedBackoff,
    private readonly random: () => number = Math.random,
  ) {}

  /**
   * The next delay. `needBy` is when a new message is needed (the held SVID's
   * expiry, epoch ms): an attempt that would come later is brought forward to
   * at most `urgentMaxMs`.
   */
  next(needBy?: number, now = Date.now()): number {
    const o = this.options;
    const step = Math.min(o.initialMs * o.multiplier ** Math.min(this.#attempts, 64), o.maxMs);
    this.#attempts++;
    const delay = this.#jitter(step);
    if (needBy !== undefined && needBy - now <= delay) return this.#jitter(Math.min(step, o.urgentMaxMs));
    return delay;
  }

  reset(): void {
    this.#attempts = 0;
  }

  #jitter(step: number): number {
    return Math.max(1, Math.round(step / 2 + this.random() * (step / 2)));
  }
}
