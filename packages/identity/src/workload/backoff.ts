import { z } from 'zod';

/**
 * Reconnect delays of the Workload API watchers: linear, `initialMs`,
 * `initialMs + stepMs`, … capped at `maxMs`, and reset once a message arrives.
 * The default (1 s, 2 s, … 30 s) is go-spiffe's.
 */
export interface BackoffOptions {
  /** First delay. Default 1000. */
  readonly initialMs?: number;
  /** Added per further failure. Default 1000. */
  readonly stepMs?: number;
  /** Upper bound. Default 30000. */
  readonly maxMs?: number;
}

const BackoffSchema = z
  .object({
    initialMs: z.number().int().positive().default(1000),
    stepMs: z.number().int().nonnegative().default(1000),
    maxMs: z.number().int().positive().default(30_000),
  })
  .strict()
  .refine((b) => b.maxMs >= b.initialMs, { message: 'maxMs must be at least initialMs' });

export type ResolvedBackoff = Required<BackoffOptions>;

/** @internal Validates backoff options and fills in go-spiffe's defaults. */
export function resolveBackoff(options: BackoffOptions | undefined): ResolvedBackoff {
  return BackoffSchema.parse(options ?? {});
}

/** @internal One watcher's backoff state. */
export class LinearBackoff {
  private attempts = 0;

  constructor(private readonly options: ResolvedBackoff) {}

  next(): number {
    const delay = Math.min(this.options.initialMs + this.options.stepMs * this.attempts, this.options.maxMs);
    this.attempts++;
    return delay;
  }

  reset(): void {
    this.attempts = 0;
  }
}
