/**
 * The helpers other interop suites stand on: a private PostgreSQL cluster and an
 * HAProxy started from a config, both really serving on loopback, and both gone
 * after teardown.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createServer, createConnection, type Server } from 'node:net';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { freePort, requireComponent, startHaproxy, startPostgres, tcpReady } from './infra.js';

const pg = requireComponent('postgres');

describe.skipIf(!pg)('startPostgres', () => {
  it('serves SQL on a loopback port with a password, and stops on teardown', async () => {
    const db = await startPostgres();
    if (!db) throw new Error('postgres vanished');
    const url = new URL(db.url);
    expect(url.hostname).toBe('127.0.0.1');
    const psql = (u: string) =>
      spawnSync(join(pg!.binDir, 'psql'), [u, '-tAc', 'select 40 + 2'], { encoding: 'utf8' });
    const ok = psql(db.url);
    expect(ok.stderr).toBe('');
    expect(ok.stdout.trim()).toBe('42');
    // Wrong password: scram-sha-256 is enforced on the TCP listener.
    const bad = new URL(db.url);
    bad.password = 'wrong';
    expect(psql(bad.toString()).status).not.toBe(0);
    await db.stop();
    expect(await tcpReady(Number(url.port))()).toBe(false);
  });
});

const haproxy = requireComponent('haproxy');

describe.skipIf(!haproxy)('startHaproxy', () => {
  let backend: Server | undefined;
  afterAll(() => backend?.close());

  it('proxies TCP to a backend per the given config', async () => {
    // HAProxy's readiness probe (a connect-and-close on the front port) makes it open
    // a backend connection it then resets; that reset is expected, not a failure.
    backend = createServer((s) => {
      s.on('error', () => {});
      s.on('data', (d) => s.end(`echo:${d.toString()}`));
    });
    await new Promise<void>((r) => backend!.listen(0, '127.0.0.1', r));
    const backendPort = (backend.address() as { port: number }).port;
    const front = await freePort();
    const h = await startHaproxy(
      [
        'defaults',
        '  mode tcp',
        '  timeout connect 2s',
        '  timeout client 5s',
        '  timeout server 5s',
        'frontend f',
        `  bind 127.0.0.1:${front}`,
        '  default_backend b',
        'backend b',
        `  server s1 127.0.0.1:${backendPort}`,
        '',
      ].join('\n'),
      { waitForPorts: [front] },
    );
    if (!h) throw new Error('haproxy vanished');
    const reply = await new Promise<string>((resolve, reject) => {
      const c = createConnection({ port: front, host: '127.0.0.1' }, () => c.write('hi'));
      let got = '';
      c.on('data', (d) => (got += d.toString()));
      c.on('end', () => resolve(got));
      c.on('error', reject);
    });
    expect(reply).toBe('echo:hi');
    await h.stop();
    expect(existsSync(h.configPath)).toBe(false);
    expect(await tcpReady(front)()).toBe(false);
  });

  it('rejects an invalid config with HAProxy’s own message', async () => {
    await expect(startHaproxy('frontend f\n  bind 127.0.0.1:1\n  no_such_keyword yes\n')).rejects.toThrow(
      /haproxy rejected the config/,
    );
  });
});
