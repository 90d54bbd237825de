/**
 * `@weave/a2a/postgres` — PostgreSQL task and push-config stores, shared by
 * the replicas of one agent, with versioned SQL migrations.
 *
 * Needs the `pg` package (node-postgres), an optional peer dependency of
 * `@weave/a2a`: only applications that import this subpath install it.
 *
 * ```ts
 * import pg from 'pg';
 * import { PostgresTaskStore, PostgresPushConfigStore, migrate } from '@weave/a2a/postgres';
 * const pool = new pg.Pool({ connectionString: process.env.WEAVE_DATABASE_URL });
 * await migrate(pool); // or `weave db migrate`
 * const taskStore = new PostgresTaskStore({ pool });
 * ```
 *
 * @packageDocumentation
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import pg from 'pg';
import { z } from 'zod';
import { WeaveError, randomUuid } from '@weave/identity';
import type {
  PushConfigStore,
  StoredEvent,
  TaskNotice,
  TaskNotifier,
  TaskPage,
  TaskQuery,
  TaskRecord,
  TaskScope,
  TaskLeases,
  TaskInbox,
  TaskStore,
} from './store.js';
import {
  byteBounds,
  refuseNeverFitting,
  statusTime,
  TaskLeaseLostError,
  TaskStoreConflictError,
  TaskStoreOverBudgetError,
  TaskStoreRejectedError,
  TaskStoreUnavailableError,
  TaskStoreClosedError,
} from './store.js';

export { TaskStoreRejectedError } from './store.js';
import { A2AConfigError, checkOptions, durationMs, timerMs } from './options.js';
import * as v1 from './wire/v1.js';
import type { Artifact, Message, Part, Task, TaskPushNotificationConfig } from './wire/v1.js';
import { isTerminal } from './wire/v1.js';

/** Where a store gets its connections: a pool of the application's, or one it makes (and ends on close). */
export type PostgresConnection =
  | { readonly pool: pg.Pool; readonly connectionString?: never }
  | { readonly connectionString: string; readonly pool?: never };

/** A failure of the PostgreSQL stores that is not about reaching the database. */
export class PostgresStoreError extends WeaveError {}

/**
 * SQLSTATEs after which the same call may succeed later: connection (08),
 * resources (53), shutdown (57P0x), a statement timeout or cancel (57014), a
 * read-only database (25006: a standby, say during a failover), a
 * serialization failure or deadlock (40001, 40P01), and socket errors.
 */
const UNAVAILABLE_SQLSTATE = /^(08|53|57P0|57014$|25006$|40001$|40P01$)/;
/**
 * SQLSTATEs of what a statement carries, which the same statement can never
 * get past: data exceptions (22: a NUL in a text column, say), integrity
 * constraints (23), and a row too big for an index (54000: an entry of
 * weave_a2a_tasks_tenant_owner_status past btree's 2704 bytes), which was
 * an untyped error, -32603 to the caller.
 */
const REJECTED_SQLSTATE = /^(22|23|54000$)/;
/**
 * SQLSTATEs of a statement naming a column or table the database does not
 * have (42703 undefined_column, 42P01 undefined_table): the schema is
 * behind this code (a store on a database not migrated to it). Untyped,
 * they were a bare internal error with nothing saying what to do.
 */
const SCHEMA_BEHIND_SQLSTATE = /^(42703|42P01)$/;
const UNAVAILABLE_ERRNO = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EPIPE',
  'ENOTFOUND',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EAI_AGAIN',
]);

/**
 * `err` as the seam's {@link TaskStoreUnavailableError} when it means the
 * database cannot be reached (refused, dropped, shutting down, pool timeout,
 * read-only, timed out), as {@link TaskStoreRejectedError} when the database
 * refuses what the statement carries, as a {@link PostgresStoreError}
 * `POSTGRES_SCHEMA_OUTDATED` when the database lacks a table or column of
 * this version's schema (it needs `weave db migrate`), else unchanged.
 */
export function classifyPostgresError(err: unknown): unknown {
  if (err instanceof TaskStoreUnavailableError) return err;
  const e = err as { code?: unknown; message?: unknown; syscall?: unknown } | undefined;
  const code = typeof e?.code === 'string' ? e.code : '';
  const message = typeof e?.message === 'string' ? e.message : '';
  if (
    UNAVAILABLE_SQLSTATE.test(code) ||
    UNAVAILABLE_ERRNO.has(code) ||
    // A Unix-socket URL (`?host=/run/postgresql`): the server removes its socket file when it
    // stops. Only on connect: a missing sslrootcert or sslcert file is ENOENT too, and a config error.
    (code === 'ENOENT' && e?.syscall === 'connect') ||
    /Connection terminated|timeout exceeded when trying to connect|Client has encountered a connection error|Cannot use a pool after calling end|Query read timeout/.test(
      message,
    )
  ) {
    return new TaskStoreUnavailableError(message || code, { cause: err });
  }
  if (REJECTED_SQLSTATE.test(code)) return new TaskStoreRejectedError(`${code} ${message}`, { cause: err });
  if (SCHEMA_BEHIND_SQLSTATE.test(code)) {
    // Still an internal error on the wire (the caller can do nothing about
    // it); the log says what the operator has to do.
    return new PostgresStoreError(
      'POSTGRES_SCHEMA_OUTDATED',
      `the task database's schema is behind this version of Weave (${code} ${message}): run \`weave db migrate\``,
      { cause: err },
    );
  }
  return err;
}

/** The SQLSTATE of `err`, or of the error it classifies. */
function sqlState(err: unknown): unknown {
  const e = err as { code?: unknown; cause?: { code?: unknown } } | undefined;
  return e instanceof TaskStoreRejectedError ? e.cause?.code : e?.code;
}

/** Connection options the stores use when they make their own pool. */
const OWN_POOL: pg.PoolConfig = {
  // New tasks are refused quickly, not after the OS's TCP timeout, while the database is away.
  connectionTimeoutMillis: 5_000,
  // A peer gone without a word (host down, packets dropped) ends an idle connection too.
  keepAlive: true,
  max: 10,
};

/** Expired tasks {@link PostgresTaskStore.sweep} deletes per statement. */
const SWEEP_BATCH = 1000;

/** Default of the stores' `queryTimeoutMs`. */
const QUERY_TIMEOUT_MS = 10_000;

/** A statement with pg's per-query `query_timeout` (read by pg's Client#query; missing from @types/pg). */
type BoundedQuery = pg.QueryConfig & { query_timeout?: number };

/** Statements on one connection held from the pool (a transaction's, a listener's). */
interface Statements {
  query<R extends pg.QueryResultRow>(
    text: string,
    values?: unknown[],
    name?: string,
  ): Promise<pg.QueryResult<R>>;
}

class PoolHolder {
  readonly pool: pg.Pool;
  readonly #own: boolean;
  /**
   * pg's `query_timeout` of every statement, when set: a database that
   * stops answering (hung, or packets dropped: no error ever comes) fails
   * the statement instead of holding its caller and its connection forever.
   * Unset for migrations, whose statements may rightly run long.
   */
  readonly #timeoutMs: number | undefined;

  constructor(conn: PostgresConnection, timeoutMs?: number) {
    this.#timeoutMs = timeoutMs;
    if (conn.pool) {
      this.pool = conn.pool;
      this.#own = false;
    } else if (typeof conn.connectionString === 'string' && conn.connectionString.length > 0) {
      this.pool = new pg.Pool({ ...OWN_POOL, connectionString: conn.connectionString });
      this.#own = true;
    } else {
      throw new A2AConfigError('PostgreSQL store', ['pass { pool } or { connectionString }']);
    }
    // An idle connection that the server drops (restart, failover) is reported
    // here; without a listener the 'error' event would end the process.
    if (this.pool.listenerCount('error') === 0) this.pool.on('error', () => undefined);
  }

  /**
   * Runs one statement. A `name` makes it a prepared statement on each
   * connection (parsed and planned once per connection, not per call): for
   * the statements of every call, whose text never changes.
   */
  async query<R extends pg.QueryResultRow>(
    text: string,
    values: unknown[],
    name?: string,
  ): Promise<pg.QueryResult<R>> {
    if (this.#ended) throw closedStore();
    try {
      return await this.pool.query<R>(this.#statement(text, values, name));
    } catch (err) {
      throw this.classify(err);
    }
  }

  /**
   * `err` as {@link classifyPostgresError} has it; once the store is closed,
   * whatever failed, as the closed store's {@link TaskStoreClosedError}.
   */
  classify(err: unknown): unknown {
    return this.#ended ? closedStore(err) : classifyPostgresError(err);
  }

  /** A connection of the pool for a transaction; refused once the store is closed. */
  async connect(): Promise<pg.PoolClient> {
    if (this.#ended) throw closedStore();
    try {
      return await this.pool.connect();
    } catch (err) {
      throw this.classify(err);
    }
  }

  /** Statements on `client`, bounded as {@link query}; errors as pg gives them. */
  on(client: pg.PoolClient): Statements {
    return {
      query: <R extends pg.QueryResultRow>(text: string, values: unknown[] = [], name?: string) =>
        client.query<R>(this.#statement(text, values, name)),
    };
  }

  #statement(text: string, values: unknown[], name: string | undefined): BoundedQuery {
    const q: BoundedQuery = name === undefined ? { text, values } : { name, text, values };
    if (this.#timeoutMs !== undefined) q.query_timeout = this.#timeoutMs;
    return q;
  }

  /**
   * Set by {@link end}: the store is closed, and its statements fail as a
   * closed store's from then on, also on a pool of the application's (left
   * open for the application).
   */
  #ended = false;

  async end(): Promise<void> {
    if (this.#ended) return;
    this.#ended = true;
    if (this.#own) await this.pool.end();
  }
}

/** What a statement of a closed store fails with. */
function closedStore(cause?: unknown): TaskStoreClosedError {
  return new TaskStoreClosedError('the PostgreSQL store is closed', cause === undefined ? {} : { cause });
}

// ---- migrations --------------------------------------------------------------------

/** One versioned schema change, from `migrations/NNN_name.sql` of this package. */
export interface Migration {
  readonly version: number;
  readonly name: string;
  readonly sql: string;
}

const MIGRATIONS_DIR = new URL('../migrations/', import.meta.url);
const MIGRATIONS_TABLE = 'weave_a2a_schema_migrations';
/** Advisory lock key: replicas starting together migrate one at a time. */
const MIGRATION_LOCK = 7_365_411_002;

/** The migrations shipped with this package, in version order. */
export async function loadMigrations(): Promise<Migration[]> {
  const out: Migration[] = [];
  for (const file of (await readdir(MIGRATIONS_DIR)).sort()) {
    const m = /^(\d{3})_([a-z0-9_]+)\.sql$/.exec(file);
    if (!m) continue;
    out.push({
      version: Number(m[1]),
      name: m[2] as string,
      sql: await readFile(new URL(file, MIGRATIONS_DIR), 'utf8'),
    });
  }
  return out;
}

/** What {@link migrate} did. */
export interface MigrationResult {
  /** Versions applied by this call, in order. */
  readonly applied: readonly number[];
  /** The schema version now. */
  readonly version: number;
}

/**
 * Brings the schema up to date: applies, in order and each in its own
 * transaction, every shipped migration not yet recorded in
 * `weave_a2a_schema_migrations`. Safe to run from several replicas at once
 * (a session advisory lock serialises them) and to run again (it does
 * nothing then).
 */
export async function migrate(conn: PostgresConnection | pg.Pool): Promise<MigrationResult> {
  const holder = new PoolHolder(conn instanceof pg.Pool ? { pool: conn } : conn);
  const migrations = await loadMigrations();
  let client: pg.PoolClient;
  try {
    client = await holder.pool.connect();
  } catch (err) {
    await holder.end();
    throw classifyPostgresError(err);
  }
  const applied: number[] = [];
  try {
    await client.query('SELECT pg_advisory_lock($1)', [MIGRATION_LOCK]);
    try {
      // No DDL when the table is there: a database that is up to date and
      // read-only (a standby) answers as up to date.
      const exists = await client.query<{ t: string | null }>('SELECT to_regclass($1)::text AS t', [
        MIGRATIONS_TABLE,
      ]);
      if (!exists.rows[0]?.t)
        await client.query(
          `CREATE TABLE IF NOT EXISTS ${MIGRATIONS_TABLE} (
           version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`,
        );
      const done = new Set(
        (await client.query<{ version: number }>(`SELECT version FROM ${MIGRATIONS_TABLE}`)).rows.map(
          (r) => r.version,
        ),
      );
      for (const m of migrations) {
        if (done.has(m.version)) continue;
        await client.query('BEGIN');
        try {
          await client.query(m.sql);
          await client.query(`INSERT INTO ${MIGRATIONS_TABLE} (version, name) VALUES ($1, $2)`, [
            m.version,
            m.name,
          ]);
          await client.query('COMMIT');
        } catch (err) {
          await client.query('ROLLBACK');
          throw new PostgresStoreError(
            'MIGRATION_FAILED',
            `migration ${m.version}_${m.name} failed: ${(err as Error).message}`,
            {
              cause: err,
            },
          );
        }
        applied.push(m.version);
      }
      return { applied, version: Math.max(0, ...done, ...applied) };
    } finally {
      await client.query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK]);
    }
  } catch (err) {
    throw classifyPostgresError(err);
  } finally {
    client.release();
    await holder.end();
  }
}

/** The schema version recorded in the database (0 when never migrated). */
export async function schemaVersion(pool: pg.Pool): Promise<number> {
  try {
    const t = await pool.query<{ t: string | null }>('SELECT to_regclass($1)::text AS t', [MIGRATIONS_TABLE]);
    if (!t.rows[0]?.t) return 0;
    const r = await pool.query<{ v: number | null }>(`SELECT max(version) AS v FROM ${MIGRATIONS_TABLE}`);
    return r.rows[0]?.v ?? 0;
  } catch (err) {
    throw classifyPostgresError(err);
  }
}

// ---- the task store ------------------------------------------------------------------

const PgStoreNumbers = z.object({
  terminalTtlMs: durationMs.optional(),
  leaseTtlMs: timerMs.optional(),
  deadReplicaTtlMs: durationMs.optional(),
  queryTimeoutMs: timerMs.optional(),
});

/** Options of {@link PostgresTaskStore}. */
export type PostgresTaskStoreOptions = PostgresConnection & {
  /** How long a finished task stays readable, in ms. Default 1 hour. */
  readonly terminalTtlMs?: number;
  /**
   * How long (ms) a replica may go without renewing its lease before its
   * running tasks are taken for orphans (failed, or re-run when their
   * capability allows). It renews every third of this, and as often checks
   * that its `LISTEN` connection still answers (`SELECT 1`, bounded by
   * `queryTimeoutMs`): one that went silent is replaced, so this replica
   * hears cancels, replies and other replicas' events again. Default 30 000.
   */
  readonly leaseTtlMs?: number;
  /** This replica's id in the lease table. Default: a fresh UUID per store. */
  readonly replicaId?: string;
  /**
   * How long (ms) the lease row of a replica that stopped renewing is kept
   * once it runs no unfinished task: {@link PostgresTaskStore.sweep} removes
   * older ones, so replicas that come and go (pods) leave no rows behind.
   * Default 1 hour.
   */
  readonly deadReplicaTtlMs?: number;
  /**
   * Bytes of task content (the octet length of its stored JSON: messages,
   * artifacts, events) the store keeps at once, counted in the database for
   * every replica. To make room the oldest finished tasks go first; when
   * unfinished tasks hold it all, a new task is refused with
   * {@link TaskStoreOverBudgetError} (scope `store`); a task larger than the
   * bound alone is refused before anything is freed (`neverFits`). A task counts what it
   * was created with, and, once finished, all it holds. Default 1 GiB.
   */
  readonly maxBytes?: number;
  /**
   * The same bound per owner (caller), so one caller cannot take the store:
   * its own oldest finished tasks make room first, then a new task of it is
   * refused (scope `caller`); one larger than the share alone, at once. Default a quarter of `maxBytes`.
   */
  readonly maxBytesPerOwner?: number;
  /**
   * Bytes one finished task keeps. Above it, its event log goes (but the
   * last event), then its history, then its artifacts, and
   * `metadata['weave.truncated']` lists what went, as in the embedded store;
   * done in the transaction of the append that finishes it. Default the
   * owner's share, `maxBytesPerOwner`.
   */
  readonly maxBytesPerTask?: number;
  /**
   * Longest wait (ms) for the answer to one statement. A database that stops
   * answering without an error (hung, or the network drops its packets)
   * then fails the call with {@link TaskStoreUnavailableError} (retryable)
   * instead of holding it, and its connection, until the operating system
   * gives up on the socket. Default 10 000.
   */
  readonly queryTimeoutMs?: number;
};

/**
 * Channel of the notices between replicas. Payloads are ids only (far below
 * NOTIFY's 8000-byte limit): `e:<seq>:<taskId>` when a task's log reaches
 * `seq`, `c:<taskId>` to ask for a cancel, `i:<taskId>` when a reply to its
 * INPUT_REQUIRED waits in `weave_a2a_inbox`, `r:` when a replica handed its
 * lease back (older replicas ignore it and claim at their next lease tick).
 */
const NOTICE_CHANNEL = 'weave_a2a';

/** The database's clock in epoch ms: leases compare times from one clock, whatever the replicas' clocks say. */
const DB_NOW_MS = '(extract(epoch from clock_timestamp()) * 1000)::bigint';

/**
 * The database's clock in epoch ms as the statement started: what a finished
 * task's age is measured against. Stable within the statement (unlike
 * {@link DB_NOW_MS}), so a comparison with it can use an index.
 */
const DB_STATEMENT_MS = '(extract(epoch from statement_timestamp()) * 1000)::bigint';

/**
 * How far (ms) this replica's clock may be from the database's before the
 * times it writes are corrected by the difference, and the longest lease
 * renewal that still measures it (half a round trip is the measure's error).
 */
const CLOCK_SLACK_MS = 1000;

/**
 * The fence of an append of task `id` (an SQL expression) by this replica
 * (`$2`) under lease generation `gen` (an SQL expression; null when this
 * replica does not run the task): the task is still this replica's, under
 * that generation, and the lease is current and unexpired. A replica cut off
 * or paused past its lease cannot write to a task, whether or not another
 * replica took it over yet.
 */
function leaseHeld(id: string, gen: string): string {
  return `(${gen} IS NULL OR EXISTS (
    SELECT 1 FROM weave_a2a_tasks x JOIN weave_a2a_replicas r ON r.id = x.runner
    WHERE x.id = ${id} AND x.runner = $2 AND x.runner_gen = ${gen}
      AND r.generation = ${gen} AND r.expires_at >= ${DB_NOW_MS}))`;
}

/**
 * `+` the octet length of what task `id` (an SQL expression) holds besides
 * its task row (history, artifacts, chunks, events), as the statement that
 * uses it sees them.
 */
function storedBytes(id: string): string {
  return `
  + coalesce((SELECT sum(octet_length(message::text)) FROM weave_a2a_task_history WHERE task_id = ${id}), 0)
  + coalesce((SELECT sum(octet_length(artifact::text)) FROM weave_a2a_task_artifacts WHERE task_id = ${id}), 0)
  + coalesce((SELECT sum(octet_length(parts::text)) FROM weave_a2a_artifact_chunks WHERE task_id = ${id}), 0)
  + coalesce((SELECT sum(octet_length(event::text)) FROM weave_a2a_events WHERE task_id = ${id}), 0)`;
}

/** UTF-8 bytes of the strings among `values` (the JSON a statement stores). */
function byteLength(...values: unknown[]): number {
  let n = 0;
  for (const v of values) if (typeof v === 'string') n += Buffer.byteLength(v);
  return n;
}

/**
 * JSON escapes that PostgreSQL's JSON processing cannot turn into text (a
 * NUL, 22P05; a lone surrogate, 22P02), though its `json` type keeps them as
 * written. `JSON.stringify` writes both as `\u` escapes, lower case.
 */
const UNPROCESSABLE = /\\u(?:0000|d[89a-f])/;

/** Whether the JSON text `json` holds an escape of {@link UNPROCESSABLE}. */
function unprocessable(json: string): boolean {
  // `\u` is rare in JSON text: most content pays for one scan, no regex.
  return json.includes('\\u') && UNPROCESSABLE.test(json);
}

/**
 * The JSON text `json` as the value of an item member read as a `text`
 * column and cast to `json`: as it is, or, when it holds an
 * {@link unprocessable} escape, as a JSON string of it. `json_to_recordset`
 * de-escapes every string of the batch (a NUL or a lone surrogate fails the
 * statement), but only the outer escapes of a string: what it yields is the
 * JSON text, which the cast keeps byte for byte.
 */
function carried(json: string): string {
  return unprocessable(json) ? JSON.stringify(json) : json;
}

/** What the append statement answers per task: whether it wrote, and whether the fence held. */
interface AppendRow {
  written: boolean;
  lease: boolean;
}

/** What the create statement answers per task. */
interface CreateRow {
  /** Why the bytes were refused (`caller`, `store`), or null. */
  refused: 'caller' | 'store' | null;
  inserted: boolean;
  /** The lease generation the task runs under (see heartbeat), or null. */
  gen: string | null;
}

interface TaskRow {
  owner: string;
  tenant: string;
  skill: string;
  /** The task without its history and artifacts (empty arrays mark that it has them). */
  task: unknown;
  /** Its history messages in order, or null for none. */
  history: unknown[] | null;
  /** Its artifacts in order: each the artifact without parts, and its chunks of parts (or null). */
  artifacts: Array<[unknown, unknown[][] | null]> | null;
  created_at: string;
  updated_at: string;
  seq: number;
}

/**
 * The columns of a {@link TaskRow} from a task row named `t`: the history
 * and the artifacts (their chunks joined in order) are gathered from their
 * own tables.
 */
const TASK_COLUMNS = `t.id, t.owner, t.tenant, t.skill, t.task, t.created_at, t.updated_at, t.seq,
  (SELECT json_agg(h.message ORDER BY h.pos) FROM weave_a2a_task_history h WHERE h.task_id = t.id) AS history,
  (SELECT json_agg(json_build_array(a.artifact,
     (SELECT json_agg(c.parts ORDER BY c.chunk) FROM weave_a2a_artifact_chunks c
      WHERE c.task_id = t.id AND c.artifact_pos = a.pos)) ORDER BY a.pos)
   FROM weave_a2a_task_artifacts a WHERE a.task_id = t.id) AS artifacts`;

/** What this store last wrote of one artifact: its object and parts array, and how many parts. */
interface WrittenArtifact {
  readonly ref: Artifact;
  readonly parts: readonly Part[];
  readonly n: number;
  /** Next chunk number of this artifact. */
  readonly chunk: number;
}

/**
 * What this store last wrote of a task's history and artifacts (at `seq`):
 * the next append of the same task writes only what was added since.
 */
interface Written {
  readonly seq: number;
  readonly history: number;
  readonly artifacts: readonly WrittenArtifact[];
}

/** Rows an append adds (or replaces) besides its events, as query parameters. */
interface PartsDelta {
  /** Position of the first new history message. */
  readonly historyFrom: number;
  readonly history: readonly Message[];
  /** Artifacts whose parts are replaced: their chunks go. */
  readonly replaced: readonly number[];
  /** Positions of the artifacts of {@link heads}. */
  readonly headPos: readonly number[];
  /** Artifacts without parts to insert or replace. */
  readonly heads: readonly unknown[];
  /** [artifact position, chunk number] of each of {@link chunks}. */
  readonly chunkPos: ReadonlyArray<readonly [number, number]>;
  /** Parts of the chunks written. */
  readonly chunks: ReadonlyArray<readonly Part[]>;
  readonly next: Written;
}

/** Everything of `task` as new rows (a new task, or a rewrite). */
function fullDelta(task: Task, seq: number): PartsDelta {
  const artifacts = task.artifacts ?? [];
  return {
    historyFrom: 0,
    history: task.history ?? [],
    replaced: [],
    headPos: artifacts.map((_, i) => i),
    heads: artifacts.map((a) => ({ ...a, parts: [] })),
    chunkPos: artifacts.map((_, i) => [i, 0] as const),
    chunks: artifacts.map((a) => a.parts),
    next: {
      seq,
      history: task.history?.length ?? 0,
      artifacts: artifacts.map((a) => ({ ref: a, parts: a.parts, n: a.parts.length, chunk: 1 })),
    },
  };
}

/**
 * What `task` adds to what was written (`w`): history messages past the
 * written ones, new artifacts, parts pushed onto a written artifact's parts
 * array, artifacts replaced by a new object. Work in the number of
 * artifacts, never in their size. Undefined when `task` is not a growth of
 * what was written (history shorter, an artifact gone or moved): rewrite it all.
 */
function partsDelta(w: Written, task: Task, seq: number): PartsDelta | undefined {
  const history = task.history ?? [];
  const artifacts = task.artifacts ?? [];
  if (history.length < w.history || artifacts.length < w.artifacts.length) return undefined;
  const replaced: number[] = [];
  const headPos: number[] = [];
  const heads: unknown[] = [];
  const chunkPos: Array<readonly [number, number]> = [];
  const chunks: Array<readonly Part[]> = [];
  const next: WrittenArtifact[] = [];
  for (let i = 0; i < artifacts.length; i++) {
    const a = artifacts[i] as Artifact;
    const was = w.artifacts[i];
    if (was !== undefined && was.ref.artifactId !== a.artifactId) return undefined;
    if (was !== undefined && was.ref === a && was.parts === a.parts && a.parts.length >= was.n) {
      // The same artifact, its parts array grown in place: the new parts are one chunk.
      if (a.parts.length > was.n) {
        chunkPos.push([i, was.chunk]);
        chunks.push(a.parts.slice(was.n));
        next.push({ ref: a, parts: a.parts, n: a.parts.length, chunk: was.chunk + 1 });
      } else next.push(was);
      continue;
    }
    // A new artifact, or one replaced: its head and all its parts.
    if (was !== undefined) replaced.push(i);
    const chunk = was?.chunk ?? 0;
    headPos.push(i);
    heads.push({ ...a, parts: [] });
    chunkPos.push([i, chunk]);
    chunks.push(a.parts);
    next.push({ ref: a, parts: a.parts, n: a.parts.length, chunk: chunk + 1 });
  }
  return {
    historyFrom: w.history,
    history: history.slice(w.history),
    replaced,
    headPos,
    heads,
    chunkPos,
    chunks,
    next: { seq, history: history.length, artifacts: next },
  };
}

/** The task row's `task`: the task without its history and artifacts, which have rows of their own. */
function taskHead(task: Task): string {
  return JSON.stringify({
    ...task,
    history: task.history === undefined ? undefined : [],
    artifacts: task.artifacts === undefined ? undefined : [],
  });
}

/**
 * A {@link PartsDelta} as the members of an item object the statements read
 * it from (see {@link DELTA_COLUMNS}), and the bytes of its stored JSON.
 */
function deltaJson(d: PartsDelta): { json: string; bytes: number } {
  const history = JSON.stringify(d.history);
  const heads = JSON.stringify(d.heads);
  const chunks = JSON.stringify(d.chunks);
  return {
    json:
      `"hfrom":${d.historyFrom},"history":${carried(history)},"replaced":${JSON.stringify(d.replaced)},` +
      `"hpos":${JSON.stringify(d.headPos)},"heads":${carried(heads)},"cpos":${JSON.stringify(d.chunkPos)},` +
      `"chunks":${carried(chunks)}`,
    bytes: byteLength(history, heads, chunks),
  };
}

/**
 * The columns of a {@link deltaJson} in an item. (Items are read with
 * `json_to_recordset`, which parses the batch once; `->` on a `json` value
 * parses it again for every member taken. Content columns are `text` cast to
 * `json`, which keeps the text as sent, so what is stored is what was
 * counted; see {@link carried}. No content goes through `->` or `->>`, which
 * de-escape every string of their argument: positions travel apart.)
 */
const DELTA_COLUMNS = 'hfrom int, history text, replaced json, hpos json, heads text, cpos json, chunks text';

/**
 * CTEs (after `i`, the items with {@link DELTA_COLUMNS}, and `u`, yielding
 * the id of each task the write goes ahead for) writing each task's
 * {@link PartsDelta}.
 */
const DELTA_CTES = `h AS (
    INSERT INTO weave_a2a_task_history (task_id, pos, message)
    SELECT u.id, i.hfrom + x.n - 1, x.m
    FROM u JOIN i ON i.id = u.id CROSS JOIN LATERAL json_array_elements(i.history::json) WITH ORDINALITY AS x(m, n)
    RETURNING 1),
  ad AS (
    DELETE FROM weave_a2a_artifact_chunks c USING u JOIN i ON i.id = u.id
    WHERE c.task_id = u.id AND c.artifact_pos IN (SELECT p::int FROM json_array_elements_text(i.replaced) AS p)
    RETURNING 1),
  ah AS (
    INSERT INTO weave_a2a_task_artifacts (task_id, pos, artifact)
    SELECT u.id, x.p::int, x.a FROM u JOIN i ON i.id = u.id
    CROSS JOIN LATERAL ROWS FROM (json_array_elements_text(i.hpos), json_array_elements(i.heads::json)) AS x(p, a)
    ON CONFLICT (task_id, pos) DO UPDATE SET artifact = excluded.artifact RETURNING 1),
  ac AS (
    INSERT INTO weave_a2a_artifact_chunks (task_id, artifact_pos, chunk, parts)
    SELECT u.id, (x.at ->> 0)::int, (x.at ->> 1)::int, x.parts
    FROM u JOIN i ON i.id = u.id
    CROSS JOIN LATERAL ROWS FROM (json_array_elements(i.cpos), json_array_elements(i.chunks::json)) AS x(at, parts)
    RETURNING 1)`;

/** Prepared-statement name of the create (a changed text needs a new name). */
const CREATE_STATEMENT = 'weave_a2a_create_11';

/**
 * Creates the tasks of `$1` (a JSON array of items, see `create`), run by
 * replica `$2`, each with its first event and its rows: each takes its bytes
 * first (`weave_a2a_reserve`, in item order, against the caller's share `$3`
 * and the store's bound `$4`), and a task whose id exists already gives them
 * back. One row per item, in item order.
 */
const CREATE_SQL = `WITH i AS (
    SELECT * FROM json_to_recordset($1::json) AS x(n int, id text, owner text, skill text, context_id text,
      state text, terminal boolean, task text, created_at bigint, updated_at bigint, status_at bigint, seq int, event_seq int,
      event text, tenant text, bytes bigint, ${DELTA_COLUMNS})),
  r AS (SELECT o.n, weave_a2a_reserve(o.owner, o.bytes, $3, $4) AS refused FROM (SELECT n, owner, bytes FROM i ORDER BY n) o),
  u AS (
    INSERT INTO weave_a2a_tasks (id, owner, skill, context_id, state, terminal, task, created_at, updated_at, status_at, seq, runner, tenant, counted, runner_gen)
    SELECT i.id, i.owner, i.skill, i.context_id, i.state, i.terminal, i.task::json, i.created_at, i.updated_at, i.status_at, i.seq, $2, i.tenant, i.bytes,
      -- The task runs under this replica's lease as it is now (see heartbeat).
      (SELECT generation FROM weave_a2a_replicas WHERE id = $2)
    FROM i JOIN r ON r.n = i.n WHERE r.refused IS NULL
    ON CONFLICT (id) DO NOTHING
    RETURNING id, runner_gen),
  -- A task whose id was taken: its bytes go back.
  g AS (SELECT weave_a2a_count(i.owner, -i.bytes) FROM i JOIN r ON r.n = i.n
        WHERE r.refused IS NULL AND NOT EXISTS (SELECT 1 FROM u WHERE u.id = i.id)),
  e AS (INSERT INTO weave_a2a_events (task_id, seq, event) SELECT u.id, i.event_seq, i.event::json FROM u JOIN i ON i.id = u.id RETURNING 1),
  ${DELTA_CTES},
  k AS (SELECT count(*) AS given_back FROM g)
  SELECT r.refused, u.id IS NOT NULL AS inserted, u.runner_gen AS gen, k.given_back
  FROM i JOIN r ON r.n = i.n LEFT JOIN u ON u.id = i.id CROSS JOIN k ORDER BY i.n`;

/** Prepared-statement name of the append (a changed text needs a new name). */
const APPEND_STATEMENT = 'weave_a2a_append_14';

/**
 * Appends to the tasks of `$1` (a JSON array of items, see `append`), by
 * replica `$2`. For each, one step: the task moves from seq `prev` to
 * `last`, its events and new rows go in, or (another writer moved it, or
 * the fence does not hold) nothing happens. The notice ("the log of this
 * task reaches `last`") is sent on commit only, so a replica that reads
 * after it finds the events. A task that finishes is counted again, whole:
 * what it holds (`bytes` is its new rows, the rest is read before they go
 * in), and the owner's count and the store's move by the difference to
 * what was counted (weave_a2a_count, not the same two updates written out
 * here: measured, the statement then cost the database about 1 ms more per
 * call). One row per item, in item order.
 *
 * Task rows are looked up one item at a time (a scalar subquery on the key
 * per item; the rows to update by their TIDs), never by joining the table
 * with the batch: the planner takes `json_to_recordset` for 100 rows, and
 * joined by hashing a sequential scan of every task row — on every append,
 * in the plan each connection caches, so the database's work per call grew
 * with the tasks kept (measured: 393 µs of database CPU per call on an
 * analyzed table, 260 µs this way).
 */
const APPEND_SQL = `WITH i AS (
    SELECT * FROM json_to_recordset($1::json) AS x(n int, id text, task text, state text, terminal boolean,
      updated_at bigint, status_at bigint, last int, prev int, events text, gen bigint, bytes bigint, ${DELTA_COLUMNS})),
  o AS (SELECT i.id, (SELECT t.counted FROM weave_a2a_tasks t WHERE t.id = i.id) AS counted FROM i WHERE i.terminal),
  u AS (
    UPDATE weave_a2a_tasks t SET task = i.task::json, state = i.state, terminal = i.terminal, updated_at = i.updated_at,
      status_at = i.status_at, seq = i.last, counted = CASE WHEN i.terminal THEN i.bytes ${storedBytes('t.id')} ELSE t.counted END
    FROM i WHERE t.ctid = ANY (ARRAY(SELECT (SELECT x.ctid FROM weave_a2a_tasks x WHERE x.id = k.id) FROM i k))
      AND t.id = i.id AND t.seq = i.prev AND ${leaseHeld('i.id', 'i.gen')}
    RETURNING t.id, t.owner, t.counted, i.terminal, i.last),
  c AS (SELECT weave_a2a_count(u.owner, sum(u.counted - o.counted)::bigint)
        FROM u JOIN o ON o.id = u.id WHERE u.terminal GROUP BY u.owner),
  e AS (
    INSERT INTO weave_a2a_events (task_id, seq, event)
    SELECT u.id, i.prev + x.n, x.event
    FROM u JOIN i ON i.id = u.id CROSS JOIN LATERAL json_array_elements(i.events::json) WITH ORDINALITY AS x(event, n)
    RETURNING 1),
  ${DELTA_CTES},
  k AS (SELECT (SELECT count(*) FROM c) AS counted,
          (SELECT count(pg_notify('${NOTICE_CHANNEL}', 'e:' || u.last || ':' || u.id)) FROM u) AS notified)
  SELECT u.id IS NOT NULL AS written,
    -- Only a refused append asks why (the fence, or another writer).
    CASE WHEN u.id IS NOT NULL THEN true ELSE ${leaseHeld('i.id', 'i.gen')} END AS lease,
    k.counted, k.notified
  FROM i LEFT JOIN u ON u.id = i.id CROSS JOIN k ORDER BY i.n`;

/** One call's item in a {@link Batcher}. */
interface Queued<R> {
  readonly key: string;
  /** The item: the members of a JSON object, but its position `n`. */
  readonly json: string;
  readonly resolve: (row: R) => void;
  readonly reject: (err: unknown) => void;
}

/** Most items, and most bytes of JSON (past the first item), one batch carries. */
const BATCH_ITEMS = 256;
const BATCH_BYTES = 4 * 1024 * 1024;

/**
 * Sends the writes of concurrent calls as one statement ("group commit"):
 * while a batch is in flight, calls queue, and the next batch carries all
 * that queued. A lone call goes at once, so an idle store waits for nothing;
 * under load the database sees one statement, one transaction and one round
 * trip for many calls, where each call's own cost to wake the database was
 * most of the store's cost per call. Two items of one key (one task) never
 * share a batch: a statement changes a row once. When a batch fails for a
 * reason other than the database being unreachable, each of its items is
 * sent again on its own, so one bad item fails only its own call.
 */
class Batcher<R> {
  readonly #queue: Array<Queued<R>> = [];
  #busy = false;
  readonly #send: (items: string) => Promise<R[]>;

  /** `send` runs the statement on a JSON array of item objects and answers one row per item, in order (`n`). */
  constructor(send: (items: string) => Promise<R[]>) {
    this.#send = send;
  }

  /** The row of `json` (keyed `key`), once the batch carrying it ran. */
  submit(key: string, json: string): Promise<R> {
    return new Promise<R>((resolve, reject) => {
      this.#queue.push({ key, json, resolve, reject });
      if (!this.#busy) this.#next();
    });
  }

  #next(): void {
    if (this.#queue.length === 0) return;
    const batch: Array<Queued<R>> = [];
    const keys = new Set<string>();
    const rest: Array<Queued<R>> = [];
    let bytes = 0;
    for (const q of this.#queue) {
      if (
        keys.has(q.key) ||
        batch.length >= BATCH_ITEMS ||
        (batch.length > 0 && bytes + q.json.length > BATCH_BYTES)
      ) {
        rest.push(q);
        continue;
      }
      keys.add(q.key);
      batch.push(q);
      bytes += q.json.length;
    }
    this.#queue.splice(0, this.#queue.length, ...rest);
    this.#busy = true;
    void this.#run(batch).finally(() => {
      this.#busy = false;
      this.#next();
    });
  }

  async #run(batch: ReadonlyArray<Queued<R>>): Promise<void> {
    let rows: R[];
    try {
      rows = await this.#send(`[${batch.map((q, n) => `{"n":${n},${q.json}}`).join(',')}]`);
      if (rows.length !== batch.length)
        throw new PostgresStoreError(
          'POSTGRES_STORE_BATCH',
          `a batch of ${batch.length} answered ${rows.length} rows`,
        );
    } catch (err) {
      if (batch.length === 1 || err instanceof TaskStoreUnavailableError) {
        for (const q of batch) q.reject(err);
        return;
      }
      // One item may be what failed: each goes again on its own.
      await Promise.all(batch.map((q) => this.#run([q])));
      return;
    }
    batch.forEach((q, k) => q.resolve(rows[k] as R));
  }
}

/**
 * A {@link TaskStore} in PostgreSQL (tables of `migrations/`): one row per
 * task holding its current state, one row per event. An append is one
 * statement that updates the task only if its last event number is the one
 * the writer expects and inserts the events in the same step, so two
 * replicas can never interleave one task's log. Events are kept for as long
 * as their task. Connection failures surface as
 * {@link TaskStoreUnavailableError}.
 */
export class PostgresTaskStore implements TaskStore, TaskNotifier, TaskLeases, TaskInbox {
  readonly #db: PoolHolder;
  readonly #ttl: number;
  readonly replicaId: string;
  readonly leaseTtlMs: number;
  /** LISTENing connections held from the pool: given back before the pool ends. */
  readonly #listeners = new Set<NoticeListener>();
  #closed = false;

  constructor(options: PostgresTaskStoreOptions) {
    // Checked before a pool is made: a refused store leaves nothing open.
    const bounds = byteBounds('PostgresTaskStore', options, 1024 * 1024 * 1024);
    this.#maxBytes = bounds.maxBytes;
    this.#maxOwnerBytes = bounds.maxBytesPerOwner;
    this.#maxTaskBytes = bounds.maxBytesPerTask;
    checkOptions('PostgresTaskStore', PgStoreNumbers, options);
    // The listener holds one connection for as long as the store runs: with
    // one in all, every other statement would wait for it forever.
    const max = (options.pool as { options?: { max?: unknown } } | undefined)?.options?.max;
    if (typeof max === 'number' && max < 2) {
      throw new A2AConfigError('PostgresTaskStore', [
        `pool: max ${max} is too small; the store holds one connection for LISTEN, so it needs at least 2`,
      ]);
    }
    this.#db = new PoolHolder(options, options.queryTimeoutMs ?? QUERY_TIMEOUT_MS);
    this.#ttl = options.terminalTtlMs ?? 3_600_000;
    this.leaseTtlMs = options.leaseTtlMs ?? 30_000;
    this.replicaId = options.replicaId ?? randomUuid();
    this.#deadReplicaTtl = options.deadReplicaTtlMs ?? 3_600_000;
  }

  readonly #maxBytes: number;
  readonly #maxOwnerBytes: number;
  readonly #maxTaskBytes: number;

  readonly #deadReplicaTtl: number;

  /** See {@link TaskStore.maxBytesPerOwner}: bounds a running task's growth, in the manager running it. */
  get maxBytesPerOwner(): number {
    return this.#maxOwnerBytes;
  }

  /** The pool the store queries (e.g. to run {@link migrate} on it). */
  get pool(): pg.Pool {
    return this.#db.pool;
  }

  /** Creates of concurrent calls, sent together (see {@link Batcher}). */
  readonly #creates = new Batcher<CreateRow>(
    async (items) =>
      (
        await this.#db.query<CreateRow>(
          CREATE_SQL,
          [items, this.replicaId, this.#maxOwnerBytes, this.#maxBytes],
          CREATE_STATEMENT,
        )
      ).rows,
  );

  /** Appends of concurrent calls (the common kind: no transaction around them), sent together. */
  readonly #appends = new Batcher<AppendRow>(
    async (items) =>
      (await this.#db.query<AppendRow>(APPEND_SQL, [items, this.replicaId], APPEND_STATEMENT)).rows,
  );

  async create(record: TaskRecord, first: StoredEvent): Promise<void> {
    const t = record.task;
    // Read before any await: the caller goes on changing the task meanwhile.
    const finished = isTerminal(t.status.state);
    const d = fullDelta(t, record.seq);
    const delta = deltaJson(d);
    const head = taskHead(t);
    const event = JSON.stringify(first.event);
    // What the task is stored as, counted against the owner's share and the store's bound.
    const bytes = byteLength(head, event) + delta.bytes;
    const q = JSON.stringify;
    const item =
      `"id":${q(t.id)},"owner":${q(record.owner)},"skill":${q(record.skill)},"context_id":${q(t.contextId)},` +
      `"state":${q(t.status.state)},"terminal":${finished},"task":${carried(head)},` +
      `"created_at":${record.createdAt + this.#clockOffset},"updated_at":${record.updatedAt + this.#clockOffset},` +
      `"status_at":${this.#statusAt(t, record.updatedAt)},` +
      `"seq":${record.seq},"event_seq":${first.seq},"event":${carried(event)},` +
      `"tenant":${q(record.tenant ?? '')},"bytes":${bytes},${delta.json}`;
    // Before the database's reserve function, which frees finished tasks first.
    refuseNeverFitting(record.owner, bytes, this.#maxOwnerBytes, this.#maxBytes);
    const row = await this.#creates.submit(t.id, item);
    if (row.refused) {
      throw new TaskStoreOverBudgetError(
        row.refused,
        row.refused === 'caller' ? this.#maxOwnerBytes : this.#maxBytes,
        record.owner,
      );
    }
    if (!row.inserted) throw new TaskStoreConflictError(t.id, 'already exists');
    const gen = row.gen;
    if (gen !== null && !finished) this.#running.set(t.id, Number(gen));
    // A task created finished (rare) is cut to its bound at once; the create is committed already.
    if (finished && bytes > this.#maxTaskBytes && !unprocessable(head)) {
      await this.#db.query('SELECT weave_a2a_truncate($1, $2)', [t.id, this.#maxTaskBytes]);
    }
    this.#remember(t.id, finished, d.next, byteLength(event) + delta.bytes);
  }

  /**
   * Writes the events and what the task gained since this store last wrote
   * it: new history messages, new artifacts, the parts added to an artifact
   * (one chunk row), the status; never the whole task again, so a long
   * artifact stream costs the same per chunk however long it already is.
   * A task this store has not written (another replica's, adopted), or one
   * that did not just grow, is rewritten whole, once.
   */
  async append(id: string, task: Task, events: readonly StoredEvent[], updatedAt: number): Promise<void> {
    const first = events[0];
    if (first === undefined) return;
    for (let i = 1; i < events.length; i++) {
      if ((events[i] as StoredEvent).seq !== first.seq + i)
        throw new TaskStoreConflictError(id, 'events are not consecutive');
    }
    const last = first.seq + events.length - 1;
    const written = this.#written.get(id);
    const d = written?.seq === first.seq - 1 ? partsDelta(written, task, last) : undefined;
    // Everything is read from `task` now, before any await: the caller goes on changing it.
    const delta = d ?? fullDelta(task, last);
    const parts = deltaJson(delta);
    const head = taskHead(task);
    const eventsJson = `[${events.map((e) => JSON.stringify(e.event)).join(',')}]`;
    const terminal = isTerminal(task.status.state);
    // What the task holds after this append, at most: what this store wrote
    // of it (replaced chunks included, so never less than what is stored)
    // and the new rows.
    const added = byteLength(eventsJson) + parts.bytes;
    // The lease generation this replica runs the task under; null when it does not run it
    // (a cancel or a failure recorded for a task running elsewhere, or nowhere).
    const gen = this.#running.get(id) ?? null;
    const item =
      `"id":${JSON.stringify(id)},"task":${carried(head)},"state":${JSON.stringify(task.status.state)},` +
      `"terminal":${terminal},"updated_at":${updatedAt + this.#clockOffset},"status_at":${this.#statusAt(task, updatedAt)},` +
      `"last":${last},"prev":${first.seq - 1},` +
      `"events":${carried(eventsJson)},"gen":${gen},"bytes":${terminal ? byteLength(head) + added : 0},${parts.json}`;
    this.#written.delete(id);
    // Only a finishing append that may be over the per-task bound pays for
    // a transaction that cuts it; the others are one statement, sent with
    // those of concurrent calls.
    const atMost = d && written ? written.bytes + added + byteLength(head) : Infinity;
    // The cut marks what went in the task's metadata through `jsonb`, which
    // refuses an unprocessable escape: such a task keeps all it holds.
    const cut =
      terminal && atMost > this.#maxTaskBytes && !unprocessable(head) ? this.#maxTaskBytes : undefined;
    const row = !d
      ? await this.#rewrite(id, item, cut)
      : cut === undefined
        ? await this.#appends.submit(id, item)
        : await this.#appendAndCut(id, item, cut);
    if (!row?.written) {
      // The task stays in #running under its old generation: every later write of it from here is refused too.
      if (row?.lease === false) throw new TaskLeaseLostError(id);
      throw new TaskStoreConflictError(
        id,
        `event ${first.seq} does not follow the stored log (or no such task)`,
      );
    }
    // `terminal` is the state this append wrote, not the task's state now:
    // the handler may have finished it meanwhile, and that write, still to
    // come, must find what this one wrote (and run fenced by the lease).
    if (terminal) this.#running.delete(id);
    // After a rewrite the events another replica wrote are not in the estimate: it is unknown.
    this.#remember(id, terminal, delta.next, d && written ? written.bytes + added : Infinity);
  }

  /** Tasks this replica runs, by the generation of the lease it runs them under (see {@link heartbeat}). */
  readonly #running = new Map<string, number>();
  /** This replica's lease generation as last renewed. */
  #generation: number | undefined;

  /**
   * What this store wrote of each task it writes (see {@link partsDelta}),
   * with the bytes of the event and part rows it wrote (an upper bound on
   * what the task holds besides its row); a finished task is forgotten.
   */
  readonly #written = new Map<string, Written & { readonly bytes: number }>();

  /** What was written of task `id`, in a state `finished` or not (a finished task is forgotten). */
  #remember(id: string, finished: boolean, next: Written, bytes: number): void {
    if (finished) this.#written.delete(id);
    else this.#written.set(id, { ...next, bytes });
  }

  /**
   * Runs the append `item` (writing every row of the task) after removing
   * the task's history and artifacts, in one transaction; a task it
   * finishes is cut to `cut` bytes in the same transaction.
   */
  async #rewrite(id: string, item: string, cut: number | undefined): Promise<AppendRow | undefined> {
    const r = await this.#transaction(async (tx) => {
      await tx.query('DELETE FROM weave_a2a_task_history WHERE task_id = $1', [id]);
      await tx.query('DELETE FROM weave_a2a_task_artifacts WHERE task_id = $1', [id]);
      const row = (await tx.query<AppendRow>(APPEND_SQL, [`[{"n":0,${item}}]`, this.replicaId])).rows[0];
      if (!row?.written) return { rollback: row };
      if (cut !== undefined) await tx.query('SELECT weave_a2a_truncate($1, $2)', [id, cut]);
      return row;
    });
    return r !== undefined && 'rollback' in r ? r.rollback : r;
  }

  /** Runs the append `item` and cuts the task it finishes to `cut` bytes, in one transaction. */
  async #appendAndCut(id: string, item: string, cut: number): Promise<AppendRow | undefined> {
    const r = await this.#transaction(async (tx) => {
      const row = (
        await tx.query<AppendRow>(APPEND_SQL, [`[{"n":0,${item}}]`, this.replicaId], APPEND_STATEMENT)
      ).rows[0];
      if (!row?.written) return { rollback: row };
      await tx.query('SELECT weave_a2a_truncate($1, $2)', [id, cut]);
      return row;
    });
    return r !== undefined && 'rollback' in r ? r.rollback : r;
  }

  /**
   * Runs `body` in a transaction on one connection: committed when it
   * returns, rolled back when it throws or returns false or `{ rollback }`.
   */
  async #transaction<T>(body: (tx: Statements) => Promise<T>): Promise<T> {
    const client = await this.#db.connect();
    const tx = this.#db.on(client);
    let broken: unknown;
    try {
      await tx.query('BEGIN');
      const r = await body(tx);
      const keep = r !== false && !(typeof r === 'object' && r !== null && 'rollback' in r);
      await tx.query(keep ? 'COMMIT' : 'ROLLBACK');
      return r;
    } catch (err) {
      broken = err;
      const failure = this.#db.classify(err);
      // A connection that failed or stopped answering is thrown away below, which ends its
      // transaction on the server: a ROLLBACK queued on it would only wait out the timeout again.
      if (!(failure instanceof TaskStoreUnavailableError)) await tx.query('ROLLBACK').catch(() => undefined);
      throw failure;
    } finally {
      client.release(broken instanceof Error ? broken : undefined);
    }
  }

  async get(id: string, scope?: TaskScope): Promise<TaskRecord | undefined> {
    // Scoped in the WHERE clause, so another caller's task is not even
    // assembled (history, artifacts): it costs the round trip a missing one does.
    const r = await this.#db.query<TaskRow & { id: string }>(
      `SELECT ${TASK_COLUMNS} FROM weave_a2a_tasks t
       WHERE t.id = $1 AND NOT (t.terminal AND t.updated_at < ${DB_STATEMENT_MS} - $2)${
         scope === undefined ? '' : ' AND t.owner = $3 AND t.tenant = $4'
       }`,
      scope === undefined ? [id, this.#ttl] : [id, this.#ttl, scope.owner, scope.tenant ?? ''],
    );
    const row = r.rows[0];
    return row ? toRecord(row) : undefined;
  }

  async events(id: string, afterSeq: number, limit: number): Promise<readonly StoredEvent[] | undefined> {
    // One query answers both "which events" and "is there such a task".
    const r = await this.#db.query<{ last: number; seq: number | null; event: unknown }>(
      `SELECT t.seq AS last, e.seq, e.event FROM weave_a2a_tasks t
         LEFT JOIN LATERAL (
           SELECT seq, event FROM weave_a2a_events
           WHERE task_id = t.id AND seq > $2 ORDER BY seq LIMIT $3) e ON true
       WHERE t.id = $1 AND NOT (t.terminal AND t.updated_at < ${DB_STATEMENT_MS} - $4)
       ORDER BY e.seq`,
      // At least one row, so a log cut short (maxBytesPerTask) shows even when none are asked for.
      [id, afterSeq, Math.max(1, limit), this.#ttl],
    );
    const head = r.rows[0];
    if (head === undefined) return undefined;
    // Kept events are consecutive and end at the task's seq: a first one
    // past afterSeq + 1 (or none before the end) means those were cut.
    if (afterSeq < head.last && head.seq !== afterSeq + 1) return undefined;
    const out: StoredEvent[] = [];
    for (const row of r.rows.slice(0, Math.max(0, limit))) {
      if (row.seq === null) continue;
      out.push({ seq: row.seq, event: v1.StreamResponseSchema.parse(row.event) });
    }
    return out;
  }

  async delete(id: string): Promise<void> {
    this.#written.delete(id);
    this.#running.delete(id);
    await this.#db.query('DELETE FROM weave_a2a_tasks WHERE id = $1', [id]);
  }

  /**
   * The `status_at` written with `task` (changed at `updatedAt`, this
   * replica's clock): its {@link statusTime}, the status timestamp as the
   * task shows it, not corrected by the clock offset, since clients filter
   * and page by the timestamps they read; a task without one falls back to
   * `updated_at`, as it is read back.
   */
  #statusAt(task: Task, updatedAt: number): number {
    return statusTime({ task, updatedAt: updatedAt + this.#clockOffset });
  }

  /**
   * A page by `status_at` (the status timestamp), most recent first, ties by
   * id (`COLLATE "C"`: the order the embedded store keeps, whatever the
   * database's collation), read along `weave_a2a_tasks_tenant_owner_status`
   * and stopping at the page's end; the total is counted apart.
   */
  async list(q: TaskQuery): Promise<TaskPage> {
    // No tenant means the tasks created without one (''), never every tenant's.
    const where = ['tenant = $1', 'owner = $2', `NOT (terminal AND updated_at < ${DB_STATEMENT_MS} - $3)`];
    const values: unknown[] = [q.tenant ?? '', q.owner, this.#ttl];
    const add = (clause: (n: number) => string, v: unknown) => {
      values.push(v);
      where.push(clause(values.length));
    };
    if (q.contextId !== undefined) add((n) => `context_id = $${n}`, q.contextId);
    if (q.status !== undefined) add((n) => `state = $${n}`, q.status);
    if (q.updatedAfter !== undefined) add((n) => `status_at >= $${n}`, q.updatedAfter);
    const filter = where.join(' AND ');
    const filterValues = values.slice();
    let cursor = 'true';
    if (q.after && 'statusAt' in q.after) {
      values.push(q.after.statusAt, q.after.id);
      cursor = `(status_at, id COLLATE "C") < ($${values.length - 1}, $${values.length} COLLATE "C")`;
    } else if (q.after) {
      // A creation cursor (see CreationCursor): the place of its task now, if the caller's.
      values.push(q.after.createdAt, q.after.id);
      const [at, id] = [`$${values.length - 1}`, `$${values.length}`];
      cursor = `(status_at, id COLLATE "C") < (coalesce((SELECT c.status_at FROM weave_a2a_tasks c
        WHERE c.id = ${id} AND c.tenant = $1 AND c.owner = $2), ${at}::bigint), ${id} COLLATE "C")`;
    }
    values.push(Math.max(0, q.limit));
    const r = await this.#db.query<TaskRow & { id: string; total: string }>(
      `WITH page AS (SELECT id, status_at FROM weave_a2a_tasks WHERE ${filter} AND ${cursor}
         ORDER BY status_at DESC, id COLLATE "C" DESC LIMIT $${values.length})
       SELECT ${TASK_COLUMNS}, (SELECT count(*) FROM weave_a2a_tasks WHERE ${filter}) AS total
       FROM weave_a2a_tasks t JOIN page USING (id)
       ORDER BY page.status_at DESC, t.id COLLATE "C" DESC`,
      values,
    );
    let total = Number(r.rows[0]?.total ?? 0);
    if (r.rows.length === 0) {
      // An empty page says nothing about the total: count it alone.
      const c = await this.#db.query<{ n: string }>(
        `SELECT count(*) AS n FROM weave_a2a_tasks WHERE ${filter}`,
        filterValues,
      );
      total = Number(c.rows[0]?.n ?? 0);
    }
    return { records: r.rows.map(toRecord), total };
  }

  /**
   * Removes expired finished tasks (returns how many), and the lease rows of
   * replicas expired for longer than `deadReplicaTtlMs` that run no
   * unfinished task (a row still named by one stays: it tells the task is an
   * orphan, and keeps the generation that fences its old runner). A task's
   * age is measured on the database's clock; `now`, when given, is a time
   * on this replica's clock to measure it at instead.
   */
  async sweep(now?: number): Promise<number> {
    const before = now === undefined ? null : now + this.#clockOffset - this.#ttl;
    // In batches: each statement stays short (well inside queryTimeoutMs)
    // however many tasks expired, say after a long outage.
    let removed = 0;
    for (;;) {
      const r = await this.#db.query(
        `DELETE FROM weave_a2a_tasks WHERE id IN (
           SELECT id FROM weave_a2a_tasks WHERE terminal AND updated_at < coalesce($1::bigint, ${DB_STATEMENT_MS} - $3)
           ORDER BY updated_at LIMIT $2)`,
        [before, SWEEP_BATCH, this.#ttl],
      );
      removed += r.rowCount ?? 0;
      if ((r.rowCount ?? 0) < SWEEP_BATCH) break;
    }
    await this.#db.query(
      `DELETE FROM weave_a2a_replicas r WHERE r.expires_at < ${DB_NOW_MS} - $1
         AND NOT EXISTS (SELECT 1 FROM weave_a2a_tasks t WHERE t.runner = r.id AND NOT t.terminal)`,
      [this.#deadReplicaTtl],
    );
    return removed;
  }

  /**
   * LISTENs on one connection held from the pool for as long as it listens.
   * When that connection drops, or goes silent (every third of
   * `leaseTtlMs` it must answer a `SELECT 1` within `queryTimeoutMs`), it is
   * thrown away and another one LISTENs (backoff up to 2 s), which then
   * reports `resync`: notices sent meanwhile are gone, the events are not.
   */
  async listen(onNotice: (notice: TaskNotice) => void): Promise<() => Promise<void>> {
    if (this.#closed) throw new TaskStoreUnavailableError('PostgresTaskStore is closed');
    const listener = new NoticeListener(this.#db, onNotice, Math.max(100, Math.floor(this.leaseTtlMs / 3)));
    // Held before it connects: a close() meanwhile stops it, and the connection
    // it is still making goes back to the pool instead of keeping the pool open.
    this.#listeners.add(listener);
    try {
      await listener.start();
    } catch (err) {
      this.#listeners.delete(listener);
      throw err;
    }
    if (listener.stopped)
      throw new TaskStoreUnavailableError('PostgresTaskStore was closed while it started to listen');
    return async () => {
      this.#listeners.delete(listener);
      await listener.stop();
    };
  }

  /**
   * Renews the lease. One that had expired is renewed under the next
   * generation: the tasks this replica ran under the old one are orphans
   * from then on (another replica, or this one, may claim them) and their
   * writes from here are refused. False when that happened since the last
   * renewal.
   */
  async heartbeat(): Promise<boolean> {
    const sent = Date.now();
    const r = await this.#db.query<{ generation: string; now: string }>(
      `INSERT INTO weave_a2a_replicas AS r (id, expires_at, generation) VALUES ($1, ${DB_NOW_MS} + $2, 1)
       ON CONFLICT (id) DO UPDATE SET expires_at = excluded.expires_at,
         generation = r.generation + CASE WHEN r.expires_at < ${DB_NOW_MS} THEN 1 ELSE 0 END
       RETURNING generation, ${DB_NOW_MS} AS now`,
      [this.replicaId, this.leaseTtlMs],
    );
    this.#measureClock(Number(r.rows[0]?.now), sent, Date.now());
    const generation = Number(r.rows[0]?.generation);
    const kept = this.#generation === undefined || this.#generation === generation;
    this.#generation = generation;
    return kept;
  }

  /**
   * What to add to a time of this replica's clock to have it on the
   * database's: the times a task is written with (its last change starts
   * its `terminalTtlMs`) are compared with those of other replicas and with
   * the database's clock, so a replica whose clock is off would have its
   * tasks expire early or late everywhere (ListTasks orders by the status
   * timestamp the task carries, uncorrected: see `#statusAt`). 0 until
   * measured, and while the clocks are within {@link CLOCK_SLACK_MS}, so
   * times are stored as given then.
   */
  #clockOffset = 0;

  /** Measures {@link #clockOffset} from the database's clock `db` read by a statement sent at `sent` and answered at `back`. */
  #measureClock(db: number, sent: number, back: number): void {
    if (!Number.isFinite(db) || back - sent > CLOCK_SLACK_MS) return;
    const offset = Math.round(db - (sent + back) / 2);
    // Moved only by more than the slack: tasks written one after the other
    // keep their order, not jittered by each measure's error.
    if (Math.abs(offset - this.#clockOffset) > CLOCK_SLACK_MS) this.#clockOffset = offset;
  }

  async claimOrphans(limit: number): Promise<TaskRecord[]> {
    // SKIP LOCKED: replicas reaping at the same moment split the orphans
    // between them; the runner changes in the same statement, so an orphan
    // is claimed once.
    const r = await this.#db.query<TaskRow & { id: string; runner_gen: string | null }>(
      `WITH dead AS (
         SELECT t.id FROM weave_a2a_tasks t LEFT JOIN weave_a2a_replicas r ON r.id = t.runner
         WHERE NOT t.terminal AND t.runner IS NOT NULL
           -- The runner's lease expired, or was renewed after expiring (a
           -- new generation: what ran under the old one is an orphan, also
           -- for this very replica).
           AND (r.expires_at IS NULL OR r.expires_at < ${DB_NOW_MS} OR t.runner_gen <> r.generation)
         ORDER BY t.created_at LIMIT $2 FOR UPDATE OF t SKIP LOCKED),
       claimed AS (
       UPDATE weave_a2a_tasks t SET runner = $1,
         runner_gen = (SELECT generation FROM weave_a2a_replicas WHERE id = $1)
       FROM dead WHERE t.id = dead.id RETURNING t.*)
       SELECT ${TASK_COLUMNS}, t.runner_gen FROM claimed t`,
      [this.replicaId, Math.max(0, limit)],
    );
    for (const row of r.rows) {
      if (row.runner_gen !== null) this.#running.set(row.id, Number(row.runner_gen));
    }
    return r.rows.map(toRecord);
  }

  async retire(): Promise<void> {
    // One statement: the notice goes with the commit that makes the orphans.
    await this.#db.query(
      `WITH r AS (UPDATE weave_a2a_replicas SET expires_at = 0 WHERE id = $1 RETURNING id)
       SELECT pg_notify('${NOTICE_CHANNEL}', 'r:') FROM r`,
      [this.replicaId],
    );
  }

  async postInput(taskId: string, message: Message): Promise<string> {
    const r = await this.#db.query<{ id: string }>(
      `WITH p AS (INSERT INTO weave_a2a_inbox (task_id, message) VALUES ($1, $2) RETURNING id)
       SELECT p.id::text AS id, pg_notify('${NOTICE_CHANNEL}', 'i:' || $1::text) FROM p`,
      [taskId, JSON.stringify(message)],
    );
    const id = r.rows[0]?.id;
    if (id === undefined) throw new TaskStoreConflictError(taskId, 'unknown task');
    return id;
  }

  async takeInput(taskId: string, deliver: (message: Message) => boolean): Promise<boolean> {
    // The reply is removed in the transaction that hands it over, committed
    // only if the handler took it: a withdrawal waits for that decision.
    return this.#transaction(async (tx) => {
      // SKIP LOCKED: two takers never get the same reply.
      const r = await tx.query<{ id: string; message: unknown }>(
        `SELECT id, message FROM weave_a2a_inbox WHERE task_id = $1 ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED`,
        [taskId],
      );
      const row = r.rows[0];
      if (!row || !deliver(v1.MessageSchema.parse(row.message) as Message)) return false;
      await tx.query('DELETE FROM weave_a2a_inbox WHERE id = $1', [row.id]);
      return true;
    });
  }

  async withdrawInput(taskId: string, postId: string): Promise<boolean> {
    const r = await this.#db.query('DELETE FROM weave_a2a_inbox WHERE task_id = $1 AND id = $2', [
      taskId,
      postId,
    ]);
    return (r.rowCount ?? 0) > 0;
  }

  async requestCancel(taskId: string): Promise<void> {
    await this.#db.query(`SELECT pg_notify('${NOTICE_CHANNEL}', 'c:' || $1::text)`, [taskId]);
  }

  /** Stops listening and ends the pool if the store made it. */
  async close(): Promise<void> {
    this.#closed = true;
    const listeners = [...this.#listeners];
    this.#listeners.clear();
    await Promise.all(listeners.map((l) => l.stop()));
    await this.#db.end();
  }
}

function parseNotice(payload: string | undefined): TaskNotice | undefined {
  if (payload === undefined) return undefined;
  const m = /^e:(\d+):(.+)$/.exec(payload);
  if (m) return { kind: 'events', seq: Number(m[1]), taskId: m[2] as string };
  if (payload.startsWith('c:') && payload.length > 2) return { kind: 'cancel', taskId: payload.slice(2) };
  if (payload.startsWith('i:') && payload.length > 2) return { kind: 'input', taskId: payload.slice(2) };
  if (payload === 'r:') return { kind: 'retired' };
  return undefined;
}

/**
 * One LISTENing connection that comes back after it drops, or after it goes
 * silent: a connection whose packets are dropped (a NAT or firewall that
 * lost its state, a peer gone without a word) raises no error until the
 * operating system gives up on it, hours later by default, and delivers no
 * notice meanwhile. So every `checkMs` it must answer a `SELECT 1` (bounded
 * by the store's `queryTimeoutMs`); this works with any pool, whatever its
 * TCP keep-alive settings.
 */
class NoticeListener {
  readonly #db: PoolHolder;
  readonly #onNotice: (notice: TaskNotice) => void;
  readonly #checkMs: number;
  #client: pg.PoolClient | undefined;
  #stopped = false;
  #timer: NodeJS.Timeout | undefined;
  #check: NodeJS.Timeout | undefined;
  #failures = 0;

  constructor(db: PoolHolder, onNotice: (notice: TaskNotice) => void, checkMs: number) {
    this.#db = db;
    this.#onNotice = onNotice;
    this.#checkMs = checkMs;
  }

  async start(): Promise<void> {
    let client: pg.PoolClient;
    try {
      client = await this.#db.pool.connect();
    } catch (err) {
      throw classifyPostgresError(err);
    }
    if (this.#stopped) {
      client.release(true);
      return;
    }
    const lost = (err?: unknown) => this.#lost(client, err);
    client.on('notification', (m) => {
      if (m.channel !== NOTICE_CHANNEL) return;
      const notice = parseNotice(m.payload);
      if (notice) this.#onNotice(notice);
    });
    client.on('error', lost);
    client.on('end', lost);
    try {
      await this.#db.on(client).query(`LISTEN ${NOTICE_CHANNEL}`);
    } catch (err) {
      client.release(true);
      throw classifyPostgresError(err);
    }
    if (this.#stopped) {
      client.release(true);
      return;
    }
    this.#client = client;
    this.#scheduleCheck(client);
  }

  /** Checks in `checkMs` that `client` still answers; one that does not (error or timeout) is lost. */
  #scheduleCheck(client: pg.PoolClient): void {
    this.#check = setTimeout(() => {
      if (this.#client !== client) return;
      this.#db
        .on(client)
        .query('SELECT 1')
        .then(
          () => {
            if (this.#client === client) this.#scheduleCheck(client);
          },
          (err: unknown) => this.#lost(client, err),
        );
    }, this.#checkMs);
    this.#check.unref();
  }

  /** True once {@link stop} was called; a start that finishes after it holds nothing. */
  get stopped(): boolean {
    return this.#stopped;
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    clearTimeout(this.#check);
    const client = this.#client;
    this.#client = undefined;
    if (!client) return;
    // Thrown away, not given back: closing the connection ends its LISTEN, with no
    // UNLISTEN to wait on (a database that stopped answering would not answer that either).
    client.release(true);
  }

  #lost(client: pg.PoolClient, err: unknown): void {
    if (this.#client !== client) return;
    this.#client = undefined;
    clearTimeout(this.#check);
    // Released with an error, the pool removes the connection; with a check
    // still waiting on it (a silent one), pg destroys its socket rather than
    // say goodbye on it, so it is not left open.
    client.release(err instanceof Error ? err : true);
    this.#reconnect();
  }

  #reconnect(): void {
    if (this.#stopped) return;
    const delay = Math.min(2000, 50 * 2 ** Math.min(this.#failures, 6));
    this.#timer = setTimeout(() => {
      this.start().then(
        () => {
          this.#failures = 0;
          if (!this.#stopped) this.#onNotice({ kind: 'resync' });
        },
        () => {
          this.#failures++;
          this.#reconnect();
        },
      );
    }, delay);
    this.#timer.unref();
  }
}

function toRecord(row: TaskRow & { id: string }): TaskRecord {
  const task = row.task as { history?: unknown; artifacts?: unknown };
  const whole = {
    ...task,
    ...(task.history === undefined ? {} : { history: row.history ?? [] }),
    ...(task.artifacts === undefined
      ? {}
      : {
          artifacts: (row.artifacts ?? []).map(([a, chunks]) => ({
            ...(a as object),
            parts: (chunks ?? []).flat(),
          })),
        }),
  };
  return {
    task: v1.TaskSchema.parse(whole) as Task,
    owner: row.owner,
    ...(row.tenant ? { tenant: row.tenant } : {}),
    skill: row.skill,
    // bigint columns arrive as strings; epoch ms fit a double exactly.
    createdAt: Number(row.created_at),
    updatedAt: Number(row.updated_at),
    seq: row.seq,
  };
}

// ---- the push-config store ----------------------------------------------------------

/** Environment variable read for the push-config key when none is passed. */
export const PUSH_CONFIG_KEY_ENV = 'WEAVE_PUSH_CONFIG_KEY';

/** Options of {@link PostgresPushConfigStore}. */
export type PostgresPushConfigStoreOptions = PostgresConnection & {
  /**
   * 32-byte AES-256-GCM key (bytes, or 64 hex / 44 base64 characters).
   * Default: `process.env.WEAVE_PUSH_CONFIG_KEY`. Required: the store
   * refuses to exist without one.
   */
  readonly key?: Uint8Array | string;
  /** As {@link PostgresTaskStoreOptions.queryTimeoutMs}. Default 10 000. */
  readonly queryTimeoutMs?: number;
};

/** Parses a 32-byte key given as bytes, hex or base64. */
export function parsePushConfigKey(key: Uint8Array | string | undefined): Buffer {
  if (key === undefined || key === '') {
    throw new PostgresStoreError(
      'PUSH_CONFIG_KEY_MISSING',
      `push configs in PostgreSQL are stored encrypted: pass a key or set ${PUSH_CONFIG_KEY_ENV} (32 bytes, hex or base64)`,
    );
  }
  let bytes: Buffer;
  if (typeof key !== 'string') bytes = Buffer.from(key);
  else if (/^[0-9a-fA-F]{64}$/.test(key)) bytes = Buffer.from(key, 'hex');
  else bytes = Buffer.from(key, 'base64');
  if (bytes.length !== 32) {
    throw new PostgresStoreError(
      'PUSH_CONFIG_KEY_INVALID',
      'the push-config key must be 32 bytes (hex or base64)',
    );
  }
  return bytes;
}

/**
 * A {@link PushConfigStore} in PostgreSQL. Each config (URL, token,
 * credentials) is stored as AES-256-GCM ciphertext with a fresh 12-byte
 * nonce, its task and config ids bound as associated data so a row copied
 * onto another task does not decrypt. Configs go with their task (foreign
 * key, cascade).
 */
export class PostgresPushConfigStore implements PushConfigStore {
  readonly #db: PoolHolder;
  readonly #key: Buffer;

  constructor(options: PostgresPushConfigStoreOptions) {
    // The key is checked before anything else: no key, no store.
    this.#key = parsePushConfigKey(options.key ?? process.env[PUSH_CONFIG_KEY_ENV]);
    checkOptions('PostgresPushConfigStore', z.object({ queryTimeoutMs: timerMs.optional() }), options);
    this.#db = new PoolHolder(options, options.queryTimeoutMs ?? QUERY_TIMEOUT_MS);
  }

  async setPushConfig(config: TaskPushNotificationConfig): Promise<void> {
    const id = config.id;
    if (!id) throw new TaskStoreRejectedError('a push config needs an id');
    const sealed = this.#seal(config, id);
    try {
      await this.#db.query(
        `INSERT INTO weave_a2a_push_configs (task_id, id, config) VALUES ($1, $2, $3)
         ON CONFLICT (task_id, id) DO UPDATE SET config = excluded.config`,
        [config.taskId, id, sealed],
      );
    } catch (err) {
      if (sqlState(err) === '23503') throw new TaskStoreConflictError(config.taskId, 'unknown task');
      throw err;
    }
  }

  async listPushConfigs(taskId: string): Promise<TaskPushNotificationConfig[]> {
    const r = await this.#db.query<{ id: string; config: Buffer }>(
      'SELECT id, config FROM weave_a2a_push_configs WHERE task_id = $1 ORDER BY position',
      [taskId],
    );
    return r.rows.map((row) => this.#open(taskId, row.id, row.config));
  }

  async deletePushConfig(taskId: string, id: string): Promise<boolean> {
    const r = await this.#db.query('DELETE FROM weave_a2a_push_configs WHERE task_id = $1 AND id = $2', [
      taskId,
      id,
    ]);
    return (r.rowCount ?? 0) > 0;
  }

  /** Ends the pool if the store made it. */
  async close(): Promise<void> {
    await this.#db.end();
  }

  #seal(config: TaskPushNotificationConfig, id: string): Buffer {
    const iv = randomBytes(12);
    const cipher = createCipheriv('aes-256-gcm', this.#key, iv);
    cipher.setAAD(aad(config.taskId, id));
    const body = Buffer.concat([cipher.update(JSON.stringify(config), 'utf8'), cipher.final()]);
    return Buffer.concat([iv, cipher.getAuthTag(), body]);
  }

  #open(taskId: string, id: string, sealed: Buffer): TaskPushNotificationConfig {
    try {
      const decipher = createDecipheriv('aes-256-gcm', this.#key, sealed.subarray(0, 12));
      decipher.setAAD(aad(taskId, id));
      decipher.setAuthTag(sealed.subarray(12, 28));
      const json = Buffer.concat([decipher.update(sealed.subarray(28)), decipher.final()]).toString('utf8');
      return v1.TaskPushNotificationConfigSchema.parse(JSON.parse(json)) as TaskPushNotificationConfig;
    } catch (err) {
      throw new PostgresStoreError(
        'PUSH_CONFIG_UNREADABLE',
        `push config ${id} of task ${taskId} does not decrypt with this key (wrong key, or the row was altered)`,
        { cause: err },
      );
    }
  }
}

function aad(taskId: string, id: string): Buffer {
  return Buffer.from(JSON.stringify([taskId, id]), 'utf8');
}
