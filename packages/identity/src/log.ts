import { pino, type Logger } from 'pino';

let root: Logger | undefined;

/** The package's default logger: quiet unless WEAVE_LOG_LEVEL says otherwise. */
export function defaultLogger(component: string): Logger {
  root ??= pino({ name: 'weave-identity', level: process.env.WEAVE_LOG_LEVEL ?? 'warn' });
  return root.child({ component });
}

export type { Logger };
