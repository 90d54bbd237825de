// Checks of the numbers in the options of this package's classes (timeouts,
// delays, ratios). Each class checks its own where it is made, so a bad value
// fails there with the option named, instead of at run time: a NaN or negative
// timer fires at once (Node clamps it to 1 ms), and one above 2^31 - 1 ms
// also fires after 1 ms, with no more than a TimeoutOverflowWarning.
import { z } from 'zod';
import { IdentityConfigError } from './provider.js';
import { cutText } from './text.js';

/**
 * The longest delay Node's timers take (2^31 - 1 ms). A longer one fires
 * after 1 ms, with no more than a TimeoutOverflowWarning: every option that
 * ends up on a timer is bounded by it.
 */
export const MAX_TIMER_MS = 2_147_483_647;

/** @internal `v` for an error message: numbers as written (`NaN`, `-1`, `1.5`), anything else by its type. */
export function shown(v: unknown): string {
  return typeof v === 'number' ? String(v) : typeof v;
}

/**
 * A zod schema for a whole number from `min` to `max` (NaN, infinities and
 * fractions refused), whose one message is `must be <what>, got <value>`:
 * the bounded numbers of every Weave package's options, each package
 * wrapping the issues in its own config error.
 */
export function wholeNumber(min: number, max: number, what: string): z.ZodNumber {
  const error = (issue: { input?: unknown }): string => `must be ${what}, got ${shown(issue.input)}`;
  // abort: a value that is not a whole number fails once, not once per bound too.
  return z.number({ error }).int({ error, abort: true }).min(min, { error }).max(max, { error });
}

/**
 * A delay or timeout set on a timer: a whole number of milliseconds from
 * `min` (1 unless 0 means something) to {@link MAX_TIMER_MS}.
 */
export function timerMs(min = 1): z.ZodNumber {
  return wholeNumber(min, MAX_TIMER_MS, `a whole number of milliseconds from ${min} to ${MAX_TIMER_MS}`);
}

const BUDGET_MS = `a number of milliseconds above 0 and at most ${MAX_TIMER_MS}`;

/**
 * Why `v` cannot be a call's time budget (`must be …, got …`), or undefined
 * when it can: a number of milliseconds above 0 and at most
 * {@link MAX_TIMER_MS}, fractions taken (a caller passes what is left of a
 * deadline). A plain check, no zod: it runs on every call.
 */
export function budgetRefusal(v: unknown): string | undefined {
  return typeof v === 'number' && v > 0 && v <= MAX_TIMER_MS
    ? undefined
    : `must be ${BUDGET_MS}, got ${shown(v)}`;
}

/** A zod schema for an option that is a call's time budget ({@link budgetRefusal}). */
export const budgetMs = z.number({ error: (i) => budgetRefusal(i.input) }).superRefine((v, ctx) => {
  const refusal = budgetRefusal(v);
  if (refusal !== undefined) ctx.addIssue({ code: 'custom', message: refusal });
});

/**
 * How many unknown keys a refusal names, and how many characters of each: the
 * keys are the caller's, and an object of thousands of them is one mistake.
 */
const SHOWN_KEYS = 5;
const SHOWN_KEY_CHARS = 64;

/**
 * `unknown key "x"` or `unknown keys "x", "y"` (the wording of the agent
 * config's and the policy's refusals), then the hint `hints` has for any of
 * them: what the caller most likely meant (`socket` for `address`).
 */
function unknownKeysText(keys: readonly string[], hints: ReadonlyMap<string, string> = new Map()): string {
  const shown = keys.slice(0, SHOWN_KEYS).map((k) => JSON.stringify(cutText(k, SHOWN_KEY_CHARS)));
  const more = keys.length - shown.length;
  const hinted = [...new Set(keys.flatMap((k) => hints.get(k) ?? []))];
  return (
    `unknown key${keys.length > 1 ? 's' : ''} ${shown.join(', ')}` +
    (more > 0 ? ` and ${more} more` : '') +
    (hinted.length > 0 ? ` (${hinted.join('; ')})` : '')
  );
}

/**
 * @internal Why the own keys of `input` outside `known` are refused
 * (`unknown key "socket" (the Workload API endpoint is "address")`), or
 * undefined when it has none, or is no object (the owner refuses that its
 * own way). Without it a misspelt or misnamed option is dropped silently and
 * its default used: `{ socket }` for `{ address }` read `SPIFFE_ENDPOINT_SOCKET`
 * and served another workload's identity, with no error.
 *
 * @param known - every option of the owner, as a record so its type can be
 *   checked against the options interface (`satisfies Record<keyof O, true>`).
 * @param hints - for a key a caller may well write by mistake, what to write instead.
 */
export function unknownKeysRefusal(
  input: unknown,
  known: Readonly<Record<string, true>>,
  hints?: ReadonlyMap<string, string>,
): string | undefined {
  if (typeof input !== 'object' || input === null) return undefined;
  const unknown = Object.keys(input).filter((k) => !Object.hasOwn(known, k));
  return unknown.length > 0 ? unknownKeysText(unknown, hints) : undefined;
}

/**
 * @internal Refuses the own keys of `input` outside `known` ({@link unknownKeysRefusal}).
 * @throws {IdentityConfigError} naming `owner` and every unknown key.
 */
export function checkKnownKeys(
  owner: string,
  input: unknown,
  known: Readonly<Record<string, true>>,
  hints?: ReadonlyMap<string, string>,
): void {
  const refusal = unknownKeysRefusal(input, known, hints);
  if (refusal !== undefined) throw new IdentityConfigError(`invalid ${owner} options: ${refusal}`);
}

/**
 * @internal Zod issues as `path: message` (the path under `at`, when given),
 * joined for one error message. Keys a strict schema does not know read as
 * {@link unknownKeysRefusal} words them, under the path of their object.
 */
export function issueText(error: z.ZodError, at?: string): string {
  return error.issues
    .map((i) => {
      const path = [...(at ? [at] : []), ...i.path.map(String)].join('.');
      if (i.code === 'unrecognized_keys') return `${path ? `${path}: ` : ''}${unknownKeysText(i.keys)}`;
      return `${path || '(options)'}: ${i.message}`;
    })
    .join('; ');
}

/** An optional `signal` option: an AbortSignal, or refused naming what was given. */
export const signalOption = z.instanceof(AbortSignal, { message: 'must be an AbortSignal' }).optional();

/**
 * @internal `input` parsed by `schema`; `at` is where the options sit in the
 * owner's (`backoff`), for the paths in the message.
 * @throws {IdentityConfigError} naming `owner` and every option `schema` refuses.
 */
export function checkOptions<S extends z.ZodType>(
  owner: string,
  schema: S,
  input: unknown,
  at?: string,
): z.output<S> {
  const parsed = schema.safeParse(input);
  if (parsed.success) return parsed.data;
  throw new IdentityConfigError(`invalid ${owner} options: ${issueText(parsed.error, at)}`);
}

/**
 * @internal `value`, the option `name` of `owner`, when it is a whole number
 * of milliseconds from `min` to {@link MAX_TIMER_MS}.
 * @throws {IdentityConfigError} naming `owner` and `name` when it is not.
 */
export function checkTimerMs(owner: string, name: string, value: number, min = 1): number {
  if (Number.isSafeInteger(value) && value >= min && value <= MAX_TIMER_MS) return value;
  throw new IdentityConfigError(
    `invalid ${owner} options: ${name}: must be a whole number of milliseconds from ${min} to ${MAX_TIMER_MS}, got ${shown(value)}`,
  );
}
