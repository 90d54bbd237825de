// Checks of the numbers in constructor options (timeouts, sizes, counts).
// Each class checks its own when made, so a bad value fails there, with the
// option named, instead of at run time: a NaN or negative timer fires at once
// (Node clamps it to 1 ms), one above 2^31 - 1 ms fires at once with a mere
// warning, and a size of 0 or -1 refuses every request.
import { z } from 'zod';
import {
  MAX_TIMER_MS,
  WeaveError,
  budgetRefusal,
  timerMs as identityTimerMs,
  wholeNumber,
} from '@weave/identity';

/**
 * Options given to a class or function of `@weave/a2a` were refused when it
 * was made; `issues` names each bad option (dotted path) and why.
 */
export class A2AConfigError extends WeaveError {
  readonly issues: readonly string[];
  constructor(owner: string, issues: readonly string[]) {
    super('A2A_CONFIG_INVALID', `${owner}: ${issues.join('; ')}`);
    this.issues = issues;
  }
}

/** A delay or timeout a timer waits: 1 to `MAX_TIMER_MS` ms. */
export const timerMs = identityTimerMs();

/**
 * `value`, the per-call time budget `name` of `owner`, once checked (see
 * `budgetRefusal`). Plain comparisons: it runs on every call that takes one.
 *
 * @throws {A2AConfigError} naming `owner` and `name` when it is not one.
 */
export function checkBudget(owner: string, name: string, value: number): number {
  const refusal = budgetRefusal(value);
  if (refusal !== undefined) throw new A2AConfigError(owner, [`${name} ${refusal}`]);
  return value;
}

/** A timer's delay, or 0 for the `zero` case ("off", "no limit"). */
export function timerMsOr0(zero: string): z.ZodNumber {
  return wholeNumber(0, MAX_TIMER_MS, `0 (${zero}) or a whole number of milliseconds up to ${MAX_TIMER_MS}`);
}

/**
 * A duration compared with clocks, never set on a timer (a cache or retention
 * TTL): any whole number of ms, 0 for "not kept".
 */
export const durationMs = wholeNumber(
  0,
  Number.MAX_SAFE_INTEGER,
  'a whole number of milliseconds, 0 or more',
);

/** A size or count that must allow at least one: a whole number > 0. */
export const positiveCount = wholeNumber(1, Number.MAX_SAFE_INTEGER, 'a positive whole number');

/** A count where 0 means none: a whole number ≥ 0. */
export const countOr0 = wholeNumber(0, Number.MAX_SAFE_INTEGER, '0 or a positive whole number');

/**
 * `input` parsed by `schema`: the numbers of `owner`'s options, each optional
 * (unset keeps the owner's default).
 *
 * @throws {A2AConfigError} listing every option `schema` refuses.
 */
export function checkOptions<S extends z.ZodType>(owner: string, schema: S, input: unknown): z.output<S> {
  const parsed = schema.safeParse(input ?? {});
  if (parsed.success) return parsed.data;
  throw new A2AConfigError(
    owner,
    parsed.error.issues.map((i) => `${i.path.map(String).join('.') || '(options)'} ${i.message}`),
  );
}

/**
 * `value`, the option `name` of `owner`, once checked to be a positive whole number.
 *
 * @throws {A2AConfigError} naming `owner` and `name` when it is not.
 */
export function positiveInteger(owner: string, name: string, value: number): number {
  return checkOptions(owner, z.object({ [name]: positiveCount }), { [name]: value })[name] as number;
}
