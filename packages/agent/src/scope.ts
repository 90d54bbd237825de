import { AsyncLocalStorage } from 'node:async_hooks';
import type { Context } from '@opentelemetry/api';

/** Header carrying a call's absolute deadline (Unix epoch milliseconds). */
export const DEADLINE_HEADER = 'x-weave-deadline';

/**
 * What an inbound call hands to the code it runs: its trace context and its
 * deadline. Set per request on the server, read by the capability wrapper and
 * by `callAgent` made from inside a handler (so the next hop continues the
 * trace and never gets more time than the caller has left).
 */
export interface CallScope {
  readonly trace: Context;
  readonly correlationId: string;
  /** Absolute deadline in epoch ms, when the caller sent one. */
  readonly deadline?: number;
}

/**
 * Longest delay a Node timer takes (about 24.8 days). Longer ones fire after
 * 1 ms, so a deadline further away than this arms no timer at all.
 */
export const MAX_TIMER_MS = 2_147_483_647;

/** Milliseconds until `deadline`, capped for use as a timer or request timeout. */
export function timeLeft(deadline: number): number {
  return Math.min(deadline - Date.now(), MAX_TIMER_MS);
}

/** One store for the whole process: every agent in it reads the scope of its own request. */
export const callScope = new AsyncLocalStorage<CallScope>();

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
