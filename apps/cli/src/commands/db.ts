import type { Command } from 'commander';
import type pg from 'pg';
import type { GlobalOptions } from '../shared.js';
import type { Io } from '../io.js';

interface DbOptions extends GlobalOptions {
  url?: string;
  json?: boolean;
  timeout: string;
}

/** Environment variable naming the agents' PostgreSQL database. */
const DATABASE_URL_ENV = 'WEAVE_DATABASE_URL';

/** `weave db migrate|status`: the schema of the PostgreSQL task store. */
export function dbCommand(program: Command, io: Io): void {
  const db = program
    .command('db')
    .summary('the PostgreSQL schema of the task and push-config stores')
    .description(
      'Manages the schema the PostgreSQL task store (@weave/a2a/postgres) needs. The database is ' +
        `--url or $${DATABASE_URL_ENV} (postgres://user:password@host:port/database).`,
    );
  const urlOption = ['--url <url>', `PostgreSQL URL (default $${DATABASE_URL_ENV})`] as const;

  db.command('migrate')
    .summary('apply the pending migrations')
    .description(
      'Applies, in order and each in its own transaction, every migration this version ships that the ' +
        'database has not recorded yet. Safe to run again and from several replicas at once.',
    )
    .option(...urlOption)
    .option('--json', 'print the result as JSON')
    .option(
      '--timeout <duration>',
      'how long to wait to connect and for each lock (another migrate running, a session holding a ' +
        "table); the migrations' own work is not bounded",
      '1m',
    )
    .action(async (_o: DbOptions, cmd: Command) => {
      const opts = cmd.optsWithGlobals<DbOptions>();
      const { parseDuration } = await import('../shared.js');
      const timeoutMs = parseDuration(opts.timeout, '--timeout', await maxTimeoutMs());
      const url = await databaseUrl(opts.url);
      const { migrate, loadMigrations } = await import('@weave/a2a/postgres');
      const names = new Map((await loadMigrations()).map((m) => [m.version, `${pad(m.version)}_${m.name}`]));
      // A lock wait fails after --timeout; no statement_timeout: a migration may rightly run long
      // (an index on a big table), while a wait for a lock queues every other query on that table
      // behind it, and another replica's migrate holding the migration lock that long is stuck.
      const r = await withPool(
        url,
        { connectionTimeoutMillis: timeoutMs, lock_timeout: timeoutMs },
        (pool) => migrate(pool),
        (err) => dbFailure(err, 'migrate', opts.timeout),
      );
      if (opts.json) {
        io.out(JSON.stringify(r));
        return;
      }
      for (const v of r.applied) io.out(`applied ${names.get(v) ?? pad(v)}`);
      io.out(`${r.applied.length === 0 ? 'up to date' : 'migrated'}: schema version ${r.version}`);
    });

  db.command('status')
    .summary('the schema version of the database and of this version of Weave')
    .option(...urlOption)
    .option('--timeout <duration>', 'how long to wait to connect and for each statement', '30s')
    .action(async (_o: DbOptions, cmd: Command) => {
      const opts = cmd.optsWithGlobals<DbOptions>();
      const { CliError, EXIT, parseDuration } = await import('../shared.js');
      const timeoutMs = parseDuration(opts.timeout, '--timeout', await maxTimeoutMs());
      const url = await databaseUrl(opts.url);
      const { schemaVersion, loadMigrations } = await import('@weave/a2a/postgres');
      const have = await withPool(
        url,
        {
          connectionTimeoutMillis: timeoutMs,
          // The server ends a statement that waits (a lock held on the schema table) or works
          // longer; pg's own read timeout, a little later, covers a server that stopped answering.
          statement_timeout: timeoutMs,
          query_timeout: timeoutMs + 1_000,
        },
        (pool) => schemaVersion(pool),
        (err) => dbFailure(err, 'status', opts.timeout),
      );
      const want = Math.max(0, ...(await loadMigrations()).map((m) => m.version));
      io.out(
        `schema version ${have}, this Weave ships ${want}${have < want ? ' — run `weave db migrate`' : ''}`,
      );
      if (have < want) {
        throw new CliError(
          'SCHEMA_OUTDATED',
          `the database is at schema ${have}, ${want} is needed`,
          EXIT.failed,
        );
      }
    });
}

/**
 * The largest `--timeout`: the transport's request limit, the bound of
 * `weave call` and `weave card` too. Imported here, not at the top, so that
 * `weave --help` does not load the transport.
 */
async function maxTimeoutMs(): Promise<number> {
  const { TRANSPORT_TIMEOUT_LIMITS_MS } = await import('@weave/transport');
  return TRANSPORT_TIMEOUT_LIMITS_MS.requestTimeoutMs;
}

function pad(v: number): string {
  return String(v).padStart(3, '0');
}

/**
 * Runs `body` on a one-connection pool to `url` and ends the pool; what it
 * throws goes through `failure` first.
 */
async function withPool<T>(
  url: string,
  options: pg.PoolConfig,
  body: (pool: pg.Pool) => Promise<T>,
  failure: (err: unknown) => Promise<unknown>,
): Promise<T> {
  const { default: pg } = await import('pg');
  const pool = new pg.Pool({ keepAlive: true, max: 1, ...options, connectionString: url });
  // pool.end() closes its connections without waiting for them: one the server ends meanwhile
  // (a shutdown) must not end the command with an uncaught error.
  pool.on('error', () => undefined);
  pool.on('connect', (client) => client.on('error', () => undefined));
  try {
    return await body(pool);
  } catch (err) {
    throw await failure(err);
  } finally {
    await pool.end();
  }
}

/**
 * The error `weave db <command>` reports for `err`, under the codes the
 * README lists. What the server or Node said stays in the message; none of
 * it carries the URL, so the password is never printed.
 */
async function dbFailure(err: unknown, command: 'migrate' | 'status', timeout: string): Promise<unknown> {
  const { CliError, EXIT } = await import('../shared.js');
  if (err instanceof CliError) return err;
  // The store's WeaveError (TASK_STORE_UNAVAILABLE, MIGRATION_FAILED), if any, and what pg or
  // Node said under it.
  const top = err as { code?: unknown; message?: unknown };
  const weaveCode =
    typeof top?.code === 'string' && /^[A-Z][A-Z0-9_]+$/.test(top.code) ? top.code : undefined;
  const topMessage = typeof top?.message === 'string' ? top.message : String(err);
  const root = rootCause(err);
  const detail = typeof root.message === 'string' && root.message !== '' ? root.message : topMessage;
  // A server's ErrorResponse (pg's DatabaseError) has a severity; its code is the SQLSTATE.
  const sqlState = typeof root.severity === 'string' && typeof root.code === 'string' ? root.code : undefined;
  const withState = sqlState === undefined ? detail : `${detail} (SQLSTATE ${sqlState})`;
  // The cause is what pg or Node said: the store's TASK_STORE_UNAVAILABLE under a lock timeout
  // would be printed as its cause, and contradict it.
  const fail = (code: string, message: string) => new CliError(code, message, EXIT.failed, { cause: root });

  if (sqlState?.startsWith('28') || /^SASL: |client password must be a string/.test(detail)) {
    // 28P01 a wrong password, 28000 no pg_hba.conf entry; pg's own words when none was given.
    return fail('DATABASE_AUTH_FAILED', `the database refused the login: ${withState}`);
  }
  if (
    sqlState === '55P03' ||
    (sqlState === '57014' && /statement timeout/.test(detail)) ||
    detail === 'Query read timeout'
  ) {
    return fail(
      'DATABASE_TIMEOUT',
      command === 'migrate'
        ? `waited longer than --timeout ${timeout} for a lock: another \`weave db migrate\` still ` +
            `running, or a session holding a table the migrations need: ${weaveCode === 'MIGRATION_FAILED' ? topMessage : withState}`
        : `no answer within --timeout ${timeout} (a session holding a lock on the schema table, say): ${withState}`,
    );
  }
  if (sqlState === undefined && isTlsFailure(root.code, detail)) {
    return fail(
      'DATABASE_TLS_FAILED',
      `no TLS connection to the database (see sslmode in the URL): ${detail}`,
    );
  }
  if (/timeout exceeded when trying to connect|due to connection timeout/.test(`${topMessage}\n${detail}`)) {
    return fail(
      'TASK_STORE_UNAVAILABLE',
      `task store unavailable: no connection within --timeout ${timeout} (${topMessage.replace(/^task store unavailable: /, '')})`,
    );
  }
  if (weaveCode === 'TASK_STORE_UNAVAILABLE' || weaveCode === 'MIGRATION_FAILED') return err;
  // 3D000: the database named in the URL does not exist, as unavailable as one that is down.
  if (sqlState !== undefined && sqlState !== '3D000') {
    return command === 'migrate'
      ? fail('MIGRATION_FAILED', `cannot migrate: ${withState}`)
      : fail('TASK_STORE_UNAVAILABLE', `cannot read the schema version: ${withState}`);
  }
  const nodeCode =
    sqlState === undefined && typeof root.code === 'string' && !detail.startsWith(root.code)
      ? `${root.code}: `
      : '';
  return fail('TASK_STORE_UNAVAILABLE', `task store unavailable: ${nodeCode}${withState}`);
}

/** The innermost error under `err`'s causes (at most a few levels down). */
function rootCause(err: unknown): { code?: unknown; message?: unknown; severity?: unknown } {
  type Cause = { code?: unknown; message?: unknown; severity?: unknown; cause?: unknown };
  let e = err as Cause | null | undefined;
  for (let i = 0; i < 5 && e?.cause !== null && typeof e?.cause === 'object'; i++) e = e.cause as typeof e;
  return e !== null && typeof e === 'object' ? e : {};
}

/** A refused or failed TLS connection: no TLS on the server, or a certificate that does not verify. */
function isTlsFailure(code: unknown, message: string): boolean {
  return (
    /\b(SSL|TLS)\b|certificate/i.test(message) ||
    (typeof code === 'string' && /CERT|SSL|TLS|SIGNATURE|ISSUER/.test(code))
  );
}

/**
 * `--url` or `$WEAVE_DATABASE_URL`, checked as node-postgres will read it:
 * a usage error (exit 2, `DATABASE_URL_INVALID`) when there is none, it is
 * no postgres:// URL, or node-postgres cannot parse it (a port out of range,
 * an `sslrootcert` file that cannot be read …).
 */
async function databaseUrl(given: string | undefined): Promise<string> {
  const { usageError } = await import('../shared.js');
  const usage = (message: string) => usageError(message, 'DATABASE_URL_INVALID');
  const url = given ?? process.env[DATABASE_URL_ENV];
  if (url === undefined || url === '') {
    throw usage(`no database: pass --url or set $${DATABASE_URL_ENV}`);
  }
  // The agent's own check (what its start() refuses), so both read a URL alike.
  const { postgresUrlProblem } = await import('@weave/agent');
  const problem = postgresUrlProblem(url);
  if (problem !== undefined) throw usage(problem);
  // Then as node-postgres builds a client from it, which also reads what the URL
  // names (an `sslrootcert` file). A client that is never connected opens nothing.
  const { default: pg } = await import('pg');
  try {
    new pg.Client({ connectionString: url });
  } catch (err) {
    // Never the URL: Node's ERR_INVALID_URL keeps it, password and all, in its `input`.
    throw usage(`the database URL cannot be used: ${String((err as { message?: unknown }).message)}`);
  }
  return url;
}
