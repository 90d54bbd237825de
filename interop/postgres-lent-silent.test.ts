// A PostgresTaskStore lent as `taskStore`, on the application's pg.Pool (no
// connect or query timeout: pg's defaults) and a database that accepts TCP
// and never answers: start() checks the store's schema version, bounded, and
// goes on unchecked (not ready until the database answers), as it started
// before the check existed; it used to wait for ever.
import net from 'node:net';
import pg from 'pg';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { z } from 'zod';
import { PostgresTaskStore } from '@weave/a2a/postgres';
import { SecureAgent } from '@weave/agent';
import { ID, startWorld, testLogger, type World } from '../packages/agent/test/helpers.js';

let world: World;
let silent: net.Server;
const sockets: net.Socket[] = [];

beforeAll(async () => {
  world = await startWorld();
  silent = net.createServer((s) => sockets.push(s));
  await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
});
afterAll(async () => {
  await world?.close();
});

it('start() with a lent PostgresTaskStore on a database that never answers starts within the check bound', async () => {
  const port = (silent.address() as net.AddressInfo).port;
  const pool = new pg.Pool({ host: '127.0.0.1', port, user: 'x', database: 'x' });
  const agent = new SecureAgent({
    config: {
      name: 'search',
      spiffeId: ID.search,
      identity: { workloadApi: { socket: world.dev.address('search') } },
      authz: { policyFile: world.policyFile },
    },
    taskStore: new PostgresTaskStore({ pool }),
    logger: testLogger(),
  }).capability('search', { input: z.object({}) }, () => ({}));
  try {
    const outcome = await Promise.race([
      agent.start().then(
        () => 'started',
        (e: unknown) => `refused: ${String(e)}`,
      ),
      new Promise<string>((resolve) => setTimeout(() => resolve('still pending after 15 s'), 15_000)),
    ]);
    expect(outcome).toBe('started');
  } finally {
    // The database goes away (refused from now on), so the stop's store writes fail fast.
    silent.close();
    for (const s of sockets) s.destroy();
    await agent.stop({ drainTimeoutMs: 0 });
    await pool.end().catch(() => undefined);
  }
}, 30_000);
