import { Writable } from 'node:stream';
import { pino, type Logger } from 'pino';
import type { AuditRecord, AuditSink } from '../../src/index.js';

/** Keeps every audit record in memory. */
export class CollectingSink implements AuditSink {
  readonly records: AuditRecord[] = [];
  record(rec: AuditRecord): void {
    this.records.push(rec);
  }
}

/** A pino logger writing JSON lines into `lines` (synchronously, for assertions). */
export function memoryLogger(): { logger: Logger; lines: () => Record<string, unknown>[] } {
  const out: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      out.push(chunk.toString('utf8'));
      cb();
    },
  });
  const logger = pino({ level: 'info' }, stream);
  return {
    logger,
    lines: () =>
      out
        .join('')
        .split('\n')
        .filter((l) => l.trim() !== '')
        .map((l) => JSON.parse(l) as Record<string, unknown>),
  };
}
