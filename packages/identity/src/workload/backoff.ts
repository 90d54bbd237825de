import { z } from 'zod';

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
  /** First delay. Default 1000. */
  readonly initialMs?: number;
  /** Growth per further failure. Default 2. */
  readonly multiplier?: number;
  /** Upper bound. Default 30000. */
  readonly maxMs?: number;
  /** Upper bound while the SVID is expired or about to. Default 1000 (or `maxMs` if lower). */
  readonly urgentMaxMs?: number;
}

const BackoffSchema = z
  .object({
    initialMs: z.number().int().positive().default(1000),
    multiplier: z.number().min(1).max(10).default(2),
    maxMs: z.number().int().positive().default(30_000),
    urgentMaxMs: z.number().int().positive().optional(),
  })
  .strict()
  .refine((b) => b.maxMs >= b.initialMs, { message: 'maxMs must be at least initialMs' })
  .refine((b) => b.urgentMaxMs === undefined || b.urgentMaxMs <= b.maxMs, {
    message: 'urgentMaxMs must be at most maxMs',
  })
  .transform((b) => ({ ...b, urgentMaxMs: b.urgentMaxMs ?? Math.min(1000, b.maxMs) }));

export type ResolvedBackoff = Required<BackoffOptions>;

/** @internal Validates backoff options and fills in the defaults. */
export function resolveBackoff(options: BackoffOptions | undefined): ResolvedBackoff {
  return BackoffSchema.parse(options ?? {});
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
