import type { Command } from 'commander';
import type { GlobalOptions } from '../shared.js';
import type { Io } from '../io.js';

interface DbOptions extends GlobalOptions {
  url?: string;
  json?: boolean;
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
    .action(async (_o: DbOptions, cmd: Command) => {
      const opts = cmd.optsWithGlobals<DbOptions>();
      const url = await databaseUrl(opts.url);
      const { migrate, loadMigrations } = await import('@weave/a2a/postgres');
      const names = new Map((await loadMigrations()).map((m) => [m.version, `${pad(m.version)}_${m.name}`]));
      const r = await migrate({ connectionString: url });
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
    .action(async (_o: DbOptions, cmd: Command) => {
      const opts = cmd.optsWithGlobals<DbOptions>();
      const url = await databaseUrl(opts.url);
      const { schemaVersion, loadMigrations } = await import('@weave/a2a/postgres');
      const pg = (await import('pg')).default;
      const pool = new pg.Pool({ connectionString: url, connectionTimeoutMillis: 5_000, max: 1 });
      pool.on('error', () => undefined);
      try {
        const have = await schemaVersion(pool);
        const want = Math.max(0, ...(await loadMigrations()).map((m) => m.version));
        io.out(
          `schema version ${have}, this Weave ships ${want}${have < want ? ' — run `weave db migrate`' : ''}`,
        );
        if (have < want) {
          const { CliError, EXIT } = await import('../shared.js');
          throw new CliError(
            'SCHEMA_OUTDATED',
            `the database is at schema ${have}, ${want} is needed`,
            EXIT.failed,
          );
        }
      } finally {
        await pool.end();
      }
    });
}

function pad(v: number): string {
  return String(v).padStart(3, '0');
}

async function databaseUrl(given: string | undefined): Promise<string> {
  const { usageError } = await import('../shared.js');
  const usage = (message: string) => usageError(message, 'DATABASE_URL_INVALID');
  const url = given ?? process.env[DATABASE_URL_ENV];
  if (url === undefined || url === '') {
    throw usage(`no database: pass --url or set $${DATABASE_URL_ENV}`);
  }
  // Only the scheme is checked here: node-postgres reads the rest, including libpq's forms that
  // are no WHATWG URL (`postgres://user:pw@/db?host=/run/postgresql`, a Unix socket).
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(url)?.[1]?.toLowerCase();
  if (scheme === undefined) throw usage('the database URL is not a URL');
  if (scheme !== 'postgres' && scheme !== 'postgresql') {
    throw usage(`the database URL must be postgres:// or postgresql://, not ${scheme}://`);
  }
  return url;
}
