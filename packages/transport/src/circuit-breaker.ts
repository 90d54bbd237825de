import Opossum from 'opossum';
import {
  CircuitBreakerOptionsSchema,
  formatIssues,
  type CircuitBreakerOptions,
  type CircuitBreakerOptionsInput,
} from './config.js';
import { CircuitOpenError, TransportConfigError } from './errors.js';

/** The three states of a breaker. */
export const CircuitState = {
  Closed: 'closed',
  Open: 'open',
  HalfOpen: 'half-open',
} as const;
export type CircuitState = (typeof CircuitState)[keyof typeof CircuitState];

/** Counters of one breaker over its rolling window, plus its state. */
export interface CircuitMetrics {
  readonly name: string;
  readonly state: CircuitState;
  readonly fires: number;
  readonly successes: number;
  readonly failures: number;
  readonly rejects: number;
  readonly latencyMean: number;
}

/** Options of a single {@link CircuitBreaker}. */
export interface CircuitBreakerInit extends CircuitBreakerOptionsInput {
  /** Shown in errors and metrics; a channel uses the peer it verifies. */
  readonly name?: string;
  /**
   * Returns false for errors that say nothing about the peer's health (e.g. the
   * caller's own abort). Such errors pass through without counting as failures.
   */
  readonly isFailure?: (err: unknown) => boolean;
  /** Called on every state change. */
  readonly onStateChange?: (state: CircuitState, name: string) => void;
}

type Action = () => Promise<unknown>;

/**
 * A circuit breaker on opossum. `execute(fn)` runs `fn` while the circuit is
 * closed; after `volumeThreshold` calls with at least `errorThresholdPercentage`
 * failures in the rolling window it opens and refuses calls with
 * {@link CircuitOpenError} without running them; after `resetTimeoutMs` it
 * half-opens and lets one trial call decide.
 */
export class CircuitBreaker {
  readonly name: string;
  readonly options: CircuitBreakerOptions;
  readonly #breaker: Opossum<[Action], unknown>;

  constructor(init: CircuitBreakerInit = {}) {
    const { name, isFailure, onStateChange, ...rest } = init;
    const res = CircuitBreakerOptionsSchema.safeParse(rest);
    if (!res.success)
      throw new TransportConfigError(formatIssues(res.error).map((m) => `circuitBreaker.${m}`));
    this.options = res.data;
    this.name = name ?? 'circuit';
    this.#breaker = new Opossum<[Action], unknown>((fn: Action) => fn(), {
      name: this.name,
      // Request deadlines belong to the HTTP layer; a breaker timeout would leave the request running.
      timeout: false,
      errorThresholdPercentage: this.options.errorThresholdPercentage,
      volumeThreshold: this.options.volumeThreshold,
      resetTimeout: this.options.resetTimeoutMs,
      rollingCountTimeout: this.options.rollingWindowMs,
      rollingCountBuckets: 10,
      rollingPercentilesEnabled: false,
      // opossum's errorFilter returning true means "do not count this error" (opossum then
      // counts it as a success). Not for a half-open trial: opossum closes the circuit on a
      // success then, and an error that says nothing about the peer has not shown it healthy;
      // as a failure, it opens the circuit again for another resetTimeout.
      ...(isFailure ? { errorFilter: (err: unknown) => !isFailure(err) && !this.#breaker.halfOpen } : {}),
    });
    if (onStateChange) {
      this.#breaker.on('open', () => onStateChange(CircuitState.Open, this.name));
      this.#breaker.on('halfOpen', () => onStateChange(CircuitState.HalfOpen, this.name));
      this.#breaker.on('close', () => onStateChange(CircuitState.Closed, this.name));
    }
  }

  /** Current state. */
  get state(): CircuitState {
    if (this.#breaker.opened) return CircuitState.Open;
    if (this.#breaker.halfOpen) return CircuitState.HalfOpen;
    return CircuitState.Closed;
  }

  /**
   * Runs `fn` through the breaker.
   *
   * @throws {CircuitOpenError} when the circuit is open (fn is not called).
   */
  execute<T>(fn: () => Promise<T>): Promise<T> {
    // Closed (the usual case): opossum cannot refuse the call, so its promise
    // is returned as is, without one more async layer per request.
    if (this.#breaker.closed && !this.#breaker.isShutdown) return this.#breaker.fire(fn) as Promise<T>;
    return this.#executeGuarded(fn);
  }

  async #executeGuarded<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return (await this.#breaker.fire(fn)) as T;
    } catch (err) {
      if ((err as { code?: unknown })?.code === 'EOPENBREAKER') throw new CircuitOpenError(this.name);
      throw err;
    }
  }

  /** Counters over the rolling window. */
  metrics(): CircuitMetrics {
    const s = this.#breaker.stats;
    return {
      name: this.name,
      state: this.state,
      fires: s.fires,
      successes: s.successes,
      failures: s.failures,
      rejects: s.rejects,
      latencyMean: s.latencyMean,
    };
  }

  /** Stops the breaker's timers. Further calls run nothing and fail. */
  shutdown(): void {
    this.#breaker.shutdown();
  }
}
