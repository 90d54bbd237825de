// Loggers for tests: the code under test logs warnings and errors on purpose
// (reconnects, expiry), which must not land in the suite's output.
import { Writable } from 'node:stream';
import { pino, type Logger } from 'pino';

/** Quiet unless WEAVE_TEST_LOG names a pino level (e.g. `debug`) to watch a test run. */
export function quietLogger(): Logger {
  return pino({ level: process.env.WEAVE_TEST_LOG ?? 'silent' });
}

/** One pino record as written: `level` is pino's number (40 warn, 50 error). */
export interface LogLine {
  readonly level: number;
  readonly msg: string;
  readonly [field: string]: unknown;
}

/** A pino logger whose records are kept in memory (synchronously), for tests that assert on them. */
export function memoryLogger(level: pino.Level = 'info'): { logger: Logger; lines: LogLine[] } {
  const lines: LogLine[] = [];
  const logger = pino(
    { level },
    new Writable({
      write(chunk: Buffer, _enc, cb) {
        // pino writes one record per write call.
        lines.push(JSON.parse(chunk.toString('utf8')) as LogLine);
        cb();
      },
    }),
  );
  return { logger, lines };
}
