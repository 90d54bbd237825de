// `weave db` against a real PostgreSQL (a private cluster, or WEAVE_TEST_PG_URL, as the interop
// tests get one) when it cannot do its work: a lock held by another session, a wrong password, no
// TLS, no such database, a role that may not migrate, a server that never answers, a URL
// node-postgres cannot read. Each is a documented code, never a raw SQLSTATE or Node code, and
// no password is ever printed.
import { randomBytes, randomUUID } from 'node:crypto';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { requireComponent, startPostgres, type Postgres } from '../../../interop/infra.js';
import { inproc, type RunResult } from './helpers.js';

const available = process.env.WEAVE_TEST_PG_URL !== undefined || requireComponent('postgres') !== undefined;

/** `url` with its password replaced by `password`. */
function withPassword(url: string, password: string): string {
  const u = new URL(url);
  u.password = password;
  return u.toString();
}

/** `url` naming the database `name`. */
function withDatabase(url: string, name: string): string {
  const u = new URL(url);
  u.pathname = `/${name}`;
  return u.toString();
}

/** Asserts that nothing `r` printed contains any of `secrets`. */
function expectNoSecret(r: RunResult, ...secrets: string[]): void {
  for (const s of secrets) {
    expect(r.stdout).not.toContain(s);
    expect(r.stderr).not.toContain(s);
  }
}

/** `weave db …` in-process, failing the test (rather than hanging it) after `ms`. */
async function weaveDb(args: readonly string[], ms = 20_000): Promise<RunResult & { elapsedMs: number }> {
  const started = Date.now();
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`weave db ${args[0]}: still running after ${ms} ms`)), ms);
  });
  try {
    const r = await Promise.race([inproc(['db', ...args]), late]);
    return { ...r, elapsedMs: Date.now() - started };
  } finally {
    clearTimeout(timer);
  }
}

describe.skipIf(!available)('weave db against a real PostgreSQL that refuses or waits', () => {
  let db: Postgres;
  let admin: pg.Pool;
  /** A migrated database of the cluster, dropped afterwards. */
  let url: string;
  let password: string;
  const name = `cli_errors_${randomUUID().replaceAll('-', '')}`;

  beforeAll(async () => {
    db = (await startPostgres()) as Postgres;
    password = decodeURIComponent(new URL(db.url).password);
    admin = new pg.Pool({ connectionString: db.url, max: 2 });
    // pool.end() resolves before its connections have closed: the cluster's shutdown in afterAll
    // may reach one still closing, which the pool reports as its 'error'.
    admin.on('error', () => undefined);
    await admin.query(`CREATE DATABASE ${name}`);
    url = withDatabase(db.url, name);
    const r = await weaveDb(['migrate', '--url', url]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
  });
  afterAll(async () => {
    await admin?.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
    await admin?.end();
    await db?.stop();
  });

  /** Runs `body` while another session holds `lock` (a statement run in an open transaction). */
  async function whileLocked(lock: string, body: () => Promise<void>): Promise<void> {
    const holder = new pg.Client({ connectionString: url });
    await holder.connect();
    try {
      await holder.query('BEGIN');
      await holder.query(lock);
      await body();
    } finally {
      await holder.query('ROLLBACK');
      await holder.end();
    }
  }

  const tableLock = 'LOCK TABLE weave_a2a_schema_migrations IN ACCESS EXCLUSIVE MODE';

  it('status gives up after --timeout while another session locks the schema table: DATABASE_TIMEOUT, exit 1', async () => {
    await whileLocked(tableLock, async () => {
      const r = await weaveDb(['status', '--url', url, '--timeout', '2s']);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(
        /^DATABASE_TIMEOUT: no answer within --timeout 2s .*canceling statement due to statement timeout \(SQLSTATE 57014\)\n$/,
      );
      expect(r.stdout).toBe('');
      expect(r.elapsedMs).toBeLessThan(10_000);
      expectNoSecret(r, password);
    });
    // The lock gone, the same command answers.
    const after = await weaveDb(['status', '--url', url, '--timeout', '2s']);
    expect(after.code).toBe(0);
  });

  it('migrate gives up after --timeout waiting for a lock, and records nothing', async () => {
    const sessions = async () =>
      (
        await admin.query<{ n: number }>(
          `SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1`,
          [name],
        )
      ).rows[0]?.n;
    const before = await sessions();
    const rows = async () => {
      const c = new pg.Client({ connectionString: url });
      await c.connect();
      try {
        return (await c.query('SELECT version, applied_at FROM weave_a2a_schema_migrations ORDER BY version'))
          .rows;
      } finally {
        await c.end();
      }
    };
    const recorded = await rows();
    await whileLocked(tableLock, async () => {
      const r = await weaveDb(['migrate', '--url', url, '--timeout', '2s']);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(
        /^DATABASE_TIMEOUT: waited longer than --timeout 2s for a lock: .*canceling statement due to lock timeout \(SQLSTATE 55P03\)\n$/,
      );
      expect(r.elapsedMs).toBeLessThan(10_000);
      expectNoSecret(r, password);
    });
    expect(await rows()).toEqual(recorded);
    // The command's connection is closed, not left waiting (its server process may take a moment
    // to leave pg_stat_activity).
    for (let i = 0; i < 40 && (await sessions()) !== before; i++) await new Promise((r) => setTimeout(r, 50));
    expect(await sessions()).toBe(before);
  });

  it('a wrong password is DATABASE_AUTH_FAILED (exit 1), and neither password is printed', async () => {
    const wrong = `Wr0ng${randomBytes(6).toString('hex')}`;
    for (const args of [
      ['migrate', '--url', withPassword(url, wrong)],
      ['status', '--url', withPassword(url, wrong)],
      ['status', '--url', withPassword(url, wrong), '--debug'],
    ]) {
      const r = await weaveDb(args);
      expect(r.code, args.join(' ')).toBe(1);
      expect(r.stderr).toMatch(
        /^DATABASE_AUTH_FAILED: the database refused the login: password authentication failed for user "weave" \(SQLSTATE 28P01\)\n/,
      );
      expectNoSecret(r, wrong, password);
    }
  });

  it('sslmode=require against a server without TLS is DATABASE_TLS_FAILED (exit 1)', async () => {
    const r = await weaveDb(['migrate', '--url', `${url}?sslmode=require`]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^DATABASE_TLS_FAILED: .*The server does not support SSL connections\n$/);
    expectNoSecret(r, password);
  });

  it('a database that does not exist is TASK_STORE_UNAVAILABLE (exit 1), not a bare SQLSTATE', async () => {
    for (const cmd of ['migrate', 'status']) {
      const r = await weaveDb([cmd, '--url', withDatabase(url, 'no_such_db')]);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(
        /^TASK_STORE_UNAVAILABLE: task store unavailable: database "no_such_db" does not exist \(SQLSTATE 3D000\)\n$/,
      );
      expectNoSecret(r, password);
    }
  });

  it('a role that may not create the schema table: MIGRATION_FAILED (exit 1), nothing created', async () => {
    // PostgreSQL 15: only the database owner may create in `public`.
    const role = `cli_reader_${randomBytes(4).toString('hex')}`;
    const rolePassword = `Rd${randomBytes(8).toString('hex')}`;
    const fresh = `cli_fresh_${randomUUID().replaceAll('-', '')}`;
    await admin.query(`CREATE ROLE ${role} LOGIN PASSWORD '${rolePassword}'`);
    await admin.query(`CREATE DATABASE ${fresh}`);
    try {
      const u = new URL(withDatabase(db.url, fresh));
      u.username = role;
      u.password = rolePassword;
      const r = await weaveDb(['migrate', '--url', u.toString()]);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(
        /^MIGRATION_FAILED: .*permission denied for schema public \(SQLSTATE 42501\)\n$/,
      );
      expectNoSecret(r, rolePassword, password);
      const c = new pg.Client({ connectionString: withDatabase(db.url, fresh) });
      await c.connect();
      try {
        const t = await c.query<{ t: string | null }>(
          `SELECT to_regclass('weave_a2a_schema_migrations')::text AS t`,
        );
        expect(t.rows[0]?.t).toBeNull();
      } finally {
        await c.end();
      }
    } finally {
      await admin.query(`DROP DATABASE ${fresh} WITH (FORCE)`);
      await admin.query(`DROP ROLE ${role}`);
    }
  });
});

describe('weave db and a server that never answers', () => {
  let server: Server;
  let port: number;
  const sockets = new Set<Socket>();
  beforeAll(async () => {
    // Accepts the connection and reads the startup message, then says nothing.
    server = createServer((s) => {
      sockets.add(s);
      s.on('error', () => undefined);
      s.on('close', () => sockets.delete(s));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    port = (server.address() as AddressInfo).port;
  });
  afterAll(async () => {
    for (const s of sockets) s.destroy();
    await new Promise<void>((r) => server.close(() => r()));
  });

  it.each(['status', 'migrate'])(
    '%s gives up after --timeout: TASK_STORE_UNAVAILABLE, exit 1',
    async (cmd) => {
      const secret = `S3cret${randomBytes(6).toString('hex')}`;
      const r = await weaveDb([
        cmd,
        '--url',
        `postgres://weave:${secret}@127.0.0.1:${port}/weave`,
        '--timeout',
        '1s',
      ]);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(
        /^TASK_STORE_UNAVAILABLE: task store unavailable: no connection within --timeout 1s /,
      );
      expect(r.elapsedMs).toBeLessThan(8_000);
      expectNoSecret(r, secret);
    },
  );
});

describe('weave db and a URL node-postgres cannot read', () => {
  const secret = `S3cret${randomBytes(6).toString('hex')}`;

  it.each([
    [
      'port 99999',
      `postgres://weave:${secret}@127.0.0.1:99999/weave`,
      'cannot be parsed: the port "99999" is not a number from 1 to 65535',
    ],
    [
      'port 5x32',
      `postgres://weave:${secret}@127.0.0.1:5x32/weave`,
      'cannot be parsed: the port "5x32" is not a number from 1 to 65535',
    ],
    ['port 0', `postgres://weave:${secret}@127.0.0.1:0/weave`, 'port must be from 1 to 65535, got "0"'],
    [
      'an sslrootcert file that is not there',
      `postgres://weave:${secret}@127.0.0.1:5432/weave?sslrootcert=/nonexistent/ca.pem`,
      "cannot be used: ENOENT: no such file or directory, open '/nonexistent/ca.pem'",
    ],
  ])('%s: DATABASE_URL_INVALID, exit 2', async (_what, url, says) => {
    for (const cmd of ['migrate', 'status']) {
      const r = await weaveDb([cmd, '--url', url]);
      expect(r.code).toBe(2);
      expect(r.stderr).toBe(
        `DATABASE_URL_INVALID: the database URL${says.startsWith('port') ? "'s" : ''} ${says}\n`,
      );
      expectNoSecret(r, secret);
    }
  });

  it('never quotes a password as a port, whatever it holds', async () => {
    // An unencoded `/` ends the authority early: read naively, the port would be "99999".
    const r = await weaveDb(['status', '--url', 'postgres://weave:99999/pw@127.0.0.1:99999x/weave']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^DATABASE_URL_INVALID: /);
    expect(r.stderr).not.toContain('99999/pw');
    expect(r.stderr).toContain('"99999x"');
  });
});
