// Each connection held to its peer's certificate (a createMtlsServer caller,
// a SecureChannel's server) waits for that certificate's end. Measured
// before: a timer per connection, whose duration (end minus now) was a
// distinct number of ms each time; Node keeps a timer list per duration, and
// an unref'd timer's list, cleared or not, until that duration has passed:
// 4000 connections, one request each, left 4000 empty lists on an agent
// (bounded only by the certificates' life, an hour for a SPIRE SVID). Now the
// ends wait on one timer. Real mTLS on loopback with dev-CA SVIDs; Node's
// lists counted on the heap (`v8.queryObjects`), their class found through a
// timer's own list.
import { queryObjects } from 'node:v8';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DevCaIdentityProvider } from '@weave/identity/dev';
import { SecureChannel } from '../src/index.js';
import { createMtlsServer, type MtlsFastifyInstance } from '../src/server.js';
import { makeTd, portOf, provider, removeTempDirs, type TestTd } from '@weave/test-support/tls-fixtures';

const CONNECTIONS = 300;

let td: TestTd;
let serverId: DevCaIdentityProvider;
let clientId: DevCaIdentityProvider;

beforeAll(async () => {
  td = await makeTd('timers.test');
  [serverId, clientId] = await Promise.all([provider(td, '/server'), provider(td, '/client')]);
});
afterAll(async () => {
  await Promise.all([serverId.close(), clientId.close()]);
  removeTempDirs();
});

/** Node's timer list class: the list a lone timer of a duration of its own sits in. */
function timersListClass(): new () => unknown {
  const probe = setTimeout(() => undefined, 987_654_321);
  const list = (probe as unknown as { _idlePrev?: { constructor: new () => unknown } })._idlePrev;
  clearTimeout(probe);
  if (list?.constructor.name !== 'TimersList') throw new Error('no TimersList behind a timer on this Node');
  return list.constructor;
}

describe('connections held to their peer certificate', () => {
  it('leave no Node timer list behind per connection (createMtlsServer and SecureChannel, one request per connection)', async () => {
    let connections = 0;
    const app: MtlsFastifyInstance = createMtlsServer({
      identity: serverId,
      authorize: () => ({ ok: true }),
      config: { httpVersion: 'http1.1' },
    });
    app.server.on('secureConnection', () => connections++);
    // Every answer ends its connection: the next request opens a new one, held anew on both sides.
    app.get('/', async (_req, reply) => reply.header('connection', 'close').send({ ok: true }));
    await app.listen({ port: 0, host: '127.0.0.1' });
    const channel = new SecureChannel(clientId, `spiffe://${td.name}/server`, {
      retry: { retries: 0 },
      circuitBreaker: false,
    });
    const url = `https://127.0.0.1:${portOf(app.server)}/`;
    const get = async (): Promise<number> => {
      const r = await channel.get(url);
      await r.body.dump();
      return r.statusCode;
    };
    try {
      const TimersList = timersListClass();
      // The lists of the durations that are the same for every connection (server and client timeouts) exist by now.
      for (let i = 0; i < 10; i++) expect(await get()).toBe(200);
      const before = queryObjects(TimersList, { format: 'count' });
      const opened = connections;
      for (let i = 0; i < CONNECTIONS; i++) expect(await get()).toBe(200);
      expect(connections - opened, 'a new connection per request').toBe(CONNECTIONS);
      const grown = queryObjects(TimersList, { format: 'count' }) - before;
      // A timer per connection and side left 358 (connections of the same ms share a duration); now none.
      expect(grown).toBeLessThan(10);
    } finally {
      await channel.close();
      await app.close();
    }
  });
});
