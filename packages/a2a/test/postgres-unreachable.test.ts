// A PostgreSQL that cannot be reached is TASK_STORE_UNAVAILABLE (a retryable
// 503 on the wire), however the URL reaches it. No server runs here: the
// errors are the real ones node-postgres gets from the operating system.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { freePort } from '@weave/test-support/tcp-relay';
import { TaskStoreUnavailableError } from '../src/index.js';
import { PostgresTaskStore } from '../src/postgres.js';

const dir = await mkdtemp(join(tmpdir(), 'weave-pg-away-'));
afterAll(() => rm(dir, { recursive: true, force: true }));

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
      async () => `postgres://weave:pw@127.0.0.1:${await freePort()}/weave`,
      'ECONNREFUSED',
    ],
  ];
  it('a certificate file the URL names that does not exist is no outage: the error is left as it is', async () => {
    const store = new PostgresTaskStore({
      connectionString: `postgres://weave:pw@127.0.0.1:${await freePort()}/weave?sslmode=verify-full&sslrootcert=${join(dir, 'missing-ca.pem')}`,
    });
    try {
      const err = await store.get('t-1').then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toMatchObject({ code: 'ENOENT', syscall: 'open' });
      expect(err).not.toBeInstanceOf(TaskStoreUnavailableError);
    } finally {
      await store.close();
    }
  });

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
