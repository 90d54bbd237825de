import { setMaxListeners } from 'node:events';
import { createContextKey, type Context } from '@opentelemetry/api';
import { MAX_TIMER_MS } from '@weave/identity';

/** Header carrying a call's absolute deadline (Unix epoch milliseconds). */
export const DEADLINE_HEADER = 'x-weave-deadline';

/**
 * What an inbound call hands to the calls its handler makes: its trace
 * context, its deadline and its cancellation. `ctx.callAgent` passes it
 * explicitly, so the next hop continues the trace, never gets more time than
 * the caller has left, and is abandoned when the call it serves is.
 */
export interface CallScope {
  readonly trace: Context;
  /** Absolute deadline in epoch ms, when the caller sent one. */
  readonly deadline?: number | undefined;
  /** Aborts when the call being served is canceled, runs out of time or the agent stops. */
  readonly signal?: AbortSignal | undefined;
}

/**
 * Where the deadline of the call being served lives in an OpenTelemetry
 * context. Handlers run inside that context (`context.with`), so when the
 * application registers a context manager (an OpenTelemetry SDK does), a
 * plain `agent.callAgent()` made from a handler finds the trace and the
 * deadline on its own. Without one this costs nothing: Node 20's
 * AsyncLocalStorage taxes every promise in the process, which a bench
 * measured at a tenth of a round trip's CPU.
 */
export const DEADLINE_KEY = createContextKey('weave.deadline');

// A deadline further away than MAX_TIMER_MS (about 24.8 days) arms no timer at all.

/** Milliseconds until `deadline`, capped for use as a timer or request timeout. */
export function timeLeft(deadline: number): number {
  return Math.min(deadline - Date.now(), MAX_TIMER_MS);
}

/**
 * Parses a deadline header. Only a plain positive integer is accepted; anything
 * else is ignored rather than trusted, since a bad value must not cut a call short.
 */
export function parseDeadline(value: string | string[] | undefined): number | undefined {
  const v = Array.isArray(value) ? value[0] : value;
  if (v === undefined || !/^\d{1,16}$/.test(v)) return undefined;
  const n = Number(v);
  return Number.isSafeInteger(n) && n > 0 ? n : undefined;
}

/** The earlier of two optional deadlines. */
export function earliest(a: number | undefined, b: number | undefined): number | undefined {
  if (a === undefined) return b;
  if (b === undefined) return a;
  return Math.min(a, b);
}

/** The reason a deadline abort carries, recognisable by its name. */
export function deadlineReason(): DOMException {
  return new DOMException('deadline exceeded', 'TimeoutError');
}

/**
 * An abort signal for one unit of work: aborts when any of `parents` aborts
 * or when `deadline` passes. `dispose()` clears the timer and the listeners
 * once the work is over, so a long deadline leaves nothing behind.
 */
export function scopedSignal(
  parents: readonly (AbortSignal | undefined)[],
  deadline: number | undefined,
): { readonly signal: AbortSignal; abort(reason: unknown): void; dispose(): void } {
  const ac = new AbortController();
  // The work's own calls listen on it, one each while they run: a handler
  // fanning out to more than Node's default of 10 peers at once is no leak.
  setMaxListeners(0, ac.signal);
  const cleanups: Array<() => void> = [];
  const dispose = () => {
    for (const c of cleanups.splice(0)) c();
  };
  const abort = (reason: unknown) => {
    dispose();
    if (!ac.signal.aborted) ac.abort(reason);
  };
  for (const p of parents) {
    if (!p) continue;
    if (p.aborted) {
      abort(p.reason);
      return { signal: ac.signal, abort, dispose };
    }
    const on = () => abort(p.reason);
    p.addEventListener('abort', on, { once: true });
    cleanups.push(() => p.removeEventListener('abort', on));
  }
  if (deadline !== undefined) {
    const left = deadline - Date.now();
    if (left <= 0) {
      abort(deadlineReason());
    } else if (left < MAX_TIMER_MS) {
      const t = setTimeout(() => abort(deadlineReason()), left);
      cleanups.push(() => clearTimeout(t));
    }
  }
  return { signal: ac.signal, abort, dispose };
}

/** True when `reason` is the one {@link scopedSignal} uses for a passed deadline. */
export function isDeadlineReason(reason: unknown): boolean {
  return reason instanceof DOMException && reason.name === 'TimeoutError';
}
