// A PostgreSQL that cannot be reached is TASK_STORE_UNAVAILABLE (a retryable
// 503 on the wire), however the URL reaches it. No server runs here: the
// errors are the real ones node-postgres gets from the operating system.
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { TaskStoreUnavailableError } from '../src/index.js';
import { PostgresTaskStore } from '../src/postgres.js';

const dir = await mkdtemp(join(tmpdir(), 'weave-pg-away-'));
afterAll(() => rm(dir, { recursive: true, force: true }));

/** A loopback port nobody listens on. */
async function closedPort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address() as { port: number };
  await new Promise((r) => s.close(r));
  return port;
}

describe('PostgresTaskStore, database away', () => {
  const cases: [string, () => Promise<string>, string][] = [
    // libpq's form for a Unix socket: the socket file is gone while the server is down.
    [
      'a Unix socket (its file gone)',
      async () => `postgres://weave:pw@localhost/weave?host=${dir}&port=5432`,
      'ENOENT',
    ],
    [
      'a loopback port (refused)',
      async () => `postgres://weave:pw@127.0.0.1:${await closedPort()}/weave`,
      'ECONNREFUSED',
    ],
  ];
  for (const [name, url, errno] of cases) {
    it(`${name}: TaskStoreUnavailableError, with the ${errno} as its cause`, async () => {
      const store = new PostgresTaskStore({ connectionString: await url() });
      try {
        const err = await store.get('t-1').then(
          () => undefined,
          (e: unknown) => e,
        );
        expect(err).toBeInstanceOf(TaskStoreUnavailableError);
        expect((err as Error & { cause?: { code?: string } }).cause?.code).toBe(errno);
      } finally {
        await store.close();
      }
    });
  }
});
