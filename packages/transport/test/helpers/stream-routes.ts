import { portOf } from '@weave/test-support/tls-fixtures';
import type { MtlsFastifyInstance } from '../../src/server.js';

/** What {@link streamRoutes} counts on a server. */
export interface Served {
  readonly origin: string;
  /** Verified connections the server accepted. */
  readonly connections: () => number;
  /** Requests a route ran for: a refused request runs none. */
  readonly ran: () => number;
}

/**
 * The routes the expiry tests read a held connection with: `/` answers at
 * once, `/stream` writes an event every 100 ms until the caller goes (HTTP/1.1
 * or HTTP/2 alike), so a connection cut mid-stream shows when it was cut.
 */
export function streamRoutes(app: MtlsFastifyInstance): Served {
  let ran = 0;
  let connections = 0;
  app.server.on('secureConnection', () => connections++);
  app.get('/', async () => {
    ran++;
    return { ok: true };
  });
  app.get('/stream', (request, reply) => {
    ran++;
    const raw = reply.raw as unknown as NodeJS.WritableStream & {
      writeHead(status: number, h: object): void;
    };
    raw.writeHead(200, { 'content-type': 'text/event-stream' });
    const timer = setInterval(() => raw.write('data: x\n\n'), 100);
    request.raw.once('close', () => clearInterval(timer));
  });
  return {
    get origin() {
      return `https://127.0.0.1:${portOf(app.server)}`;
    },
    connections: () => connections,
    ran: () => ran,
  };
}
