// Settings and runner of the property-based fuzz suites (packages/*/test/fuzz-*.test.ts).
// `npm test` runs a bounded number of cases with a fixed seed, so a failure
// reproduces; `npm run fuzz` (scripts/fuzz.mjs) runs the same properties with
// many more cases, a seed of its own and a time bound per property.
//   FUZZ_RUNS     cases per property (default: each property's own small number)
//   FUZZ_SEED     the seed (default a fixed one)
//   FUZZ_TIME_MS  stop a property after this long, counting what ran (default: no bound)
//   FUZZ_SUMMARY  a file that gets one JSON line per property run (read by scripts/fuzz.mjs)
import { appendFileSync } from 'node:fs';
import fc from 'fast-check';
import { it } from 'vitest';

const FIXED_SEED = 0x19f022;

function envInt(name: string): number | undefined {
  const raw = process.env[name];
  if (raw === undefined || raw.trim() === '') return undefined;
  const n = Number(raw);
  if (!Number.isSafeInteger(n)) throw new Error(`${name} must be an integer, got ${JSON.stringify(raw)}`);
  return n;
}

/** The seed every property of this run uses. */
const FUZZ_SEED = envInt('FUZZ_SEED') ?? FIXED_SEED;
const RUNS = envInt('FUZZ_RUNS');
const TIME_MS = envInt('FUZZ_TIME_MS');

/**
 * Vitest timeout of a fuzz test: the time bound plus room for set-up when one
 * is set (the fuzz command), the shared default otherwise.
 */
function fuzzTimeout(properties = 1): number {
  return TIME_MS === undefined ? 30_000 : properties * TIME_MS + 60_000;
}

/**
 * Runs `property` with this run's seed and number of cases (`FUZZ_RUNS`, else
 * `defaultRuns`), prints one summary line (cases, seed, duration), and fails
 * with fast-check's report (counterexample, seed and path to replay it).
 */
async function checkProperty<Ts>(
  name: string,
  property: fc.IAsyncProperty<Ts> | fc.IProperty<Ts>,
  defaultRuns: number,
): Promise<void> {
  const started = performance.now();
  const details = await fc.check(property as fc.IRawProperty<Ts>, {
    seed: FUZZ_SEED,
    numRuns: RUNS ?? defaultRuns,
    // The time bound only stops the fuzz command early; what ran is reported.
    ...(TIME_MS === undefined ? {} : { plugins: [fc.interruptAfterTimeLimit(TIME_MS)] }),
  });
  const ms = Math.round(performance.now() - started);
  const summary = {
    property: name,
    cases: details.numRuns,
    seed: details.seed,
    ms,
    interrupted: details.interrupted,
    failed: details.failed,
  };
  console.log(
    `fuzz: ${name}: ${details.numRuns} cases, seed ${details.seed}, ${ms} ms${details.interrupted ? ' (time bound reached)' : ''}${details.failed ? ' FAILED' : ''}`,
  );
  const file = process.env.FUZZ_SUMMARY;
  if (file) appendFileSync(file, `${JSON.stringify(summary)}\n`);
  if (details.failed) {
    const cause = details.errorInstance;
    throw new Error(
      `${fc.defaultReportMessage(details) ?? `${name} failed`}\nFailure: ${cause instanceof Error ? cause.message : String(cause)}`,
      { cause },
    );
  }
}

/** Strings that have broken parsers before: unicode, lone surrogates, NUL, control and RTL characters. */
export const nastyString: fc.Arbitrary<string> = fc.oneof(
  fc.string({ unit: 'binary', maxLength: 40 }),
  fc.constantFrom(
    '',
    ' ',
    '\u0000',
    '\ud800',
    '\udfff',
    'a\ud83d',
    '😀',
    '\u202e',
    '\r\n',
    '__proto__',
    'constructor',
    '%',
    '%zz',
    '%c0%af',
    '%ff',
    'x'.repeat(300),
  ),
);

/** Numbers a schema may not expect: huge, tiny, negative zero, fractional, beyond 2^53. */
export const nastyNumber: fc.Arbitrary<number> = fc.oneof(
  fc.integer(),
  fc.double({ noNaN: true, noDefaultInfinity: true }),
  fc.constantFrom(0, -0, -1, 1e308, -1e308, 5e-324, 2 ** 53 + 2, 2 ** 31, 4294967296, 0.5),
);

/**
 * A vitest test that checks one property with {@link checkProperty}; the
 * property is built when the test runs (after the suite's set-up).
 */
export function itHolds<Ts>(
  title: string,
  name: string,
  property: () => fc.IAsyncProperty<Ts> | fc.IProperty<Ts>,
  defaultRuns: number,
): void {
  it(title, () => checkProperty(name, property(), defaultRuns), fuzzTimeout());
}
