import { performance } from 'node:perf_hooks';

/**
 * Long work written as a generator that yields between slices of it, so the
 * same code runs at once ({@link runNow}, for the synchronous constructors)
 * or with the event loop served between slices ({@link runSliced}, for file
 * loads and reloads): compiling a policy of 100 000 rules then no longer
 * holds up the process's decisions and requests for its whole length.
 * Nothing the work builds is visible until it returns, so a turn of the
 * event loop in between sees the policy in force, unchanged.
 */
export type Slices<T> = Generator<void, T, void>;

/** Items a loop handles between two yields: a yield costs a clock read. */
export const ITEMS_PER_YIELD = 256;

/** The longest run of work between two turns of the event loop, in ms. */
const SLICE_MS = 8;

/** Runs the work to its end without yielding to the event loop. */
export function runNow<T>(work: Slices<T>): T {
  for (;;) {
    const step = work.next();
    if (step.done) return step.value;
  }
}

/**
 * Runs the work, letting the event loop turn whenever a slice took
 * {@link SLICE_MS}, and once before the first: the caller may have just
 * worked too (reading and hashing a file). With `stop`, asked between
 * slices: once it says so, the work is dropped and the result is undefined
 * (a reload of an enforcer being closed does not compile on for nothing).
 */
export function runSliced<T>(work: Slices<T>): Promise<T>;
export function runSliced<T>(work: Slices<T>, stop: () => boolean): Promise<T | undefined>;
export async function runSliced<T>(work: Slices<T>, stop?: () => boolean): Promise<T | undefined> {
  await nextTurn();
  let since = performance.now();
  for (;;) {
    if (stop?.()) {
      work.return(undefined as never);
      return undefined;
    }
    const step = work.next();
    if (step.done) return step.value;
    if (performance.now() - since >= SLICE_MS) {
      await nextTurn();
      since = performance.now();
    }
  }
}

const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));
