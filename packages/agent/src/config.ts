import { readFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { resolve, dirname } from 'node:path';
import { LineCounter, parseDocument, isMap, isNode, isScalar, isSeq, type Document } from 'yaml';
import { z } from 'zod';
import { CallerLimitsSchema } from '@weave/a2a';
import { OPA_DEFAULT_MAX_RESPONSE_BYTES, OPA_MAX_RESPONSE_BYTES, OPA_MAX_TIMEOUT_MS } from '@weave/authz';
// Every key that ends up on a timer is bounded by MAX_TIMER_MS, or by the
// lower bound of the layer it is handed to.
import { ConnectionLimitsSchema, TRANSPORT_TIMEOUT_LIMITS_MS } from '@weave/transport';
import { formatKeyPath, lineCol, MAX_TIMER_MS, scanJson, SpiffeId, TrustDomain } from '@weave/identity';
import { AgentConfigError, type ConfigIssue } from './errors.js';

const spiffeIdString = z.string().superRefine((s, ctx) => {
  try {
    SpiffeId.parse(s);
  } catch (err) {
    ctx.addIssue({ code: 'custom', message: err instanceof Error ? err.message : String(err) });
  }
});

const workloadSocket = z
  .string()
  .regex(/^(unix:\/\/\/|tcp:\/\/)/, 'must be unix:///absolute/path or tcp://IP:PORT');

/**
 * A host to listen on. An empty one (a templated `WEAVE_SERVER__HOST=` that
 * came out empty) would make Node listen on every interface.
 */
const listenHost = z
  .string()
  .regex(
    /^\S+$/,
    'must be a host name or IP address: an empty one would listen on every interface (write 0.0.0.0 or :: for that)',
  );

/**
 * An `https://` URL: what the agent serves, and how it calls peers, is mutual
 * TLS only. Without a user name or password: the SVID authenticates, and a
 * URL is shown wherever it goes (`weave validate`, the agent card, logs).
 */
const httpsUrl = (why: string) =>
  z.url({ protocol: /^https$/, error: `must be an https:// URL (${why})` }).superRefine((s, ctx) => {
    const u = URL.canParse(s) ? new URL(s) : undefined;
    if (u && (u.username !== '' || u.password !== '')) {
      // The value is not quoted: it holds a secret.
      ctx.addIssue({
        code: 'custom',
        message:
          'must not hold a user name or password (user:password@): the agent authenticates with its SVID, and a URL is printed and logged',
      });
    }
  });

/** `host:port`, as a gRPC interface is advertised (IPv6 in brackets), port 1 to 65535. */
const hostPort = z.string().superRefine((s, ctx) => {
  const port = /^(?:\[[0-9a-f:.]+\]|[a-z0-9.-]+):(\d{1,5})$/i.exec(s)?.[1];
  if (port === undefined || Number(port) < 1 || Number(port) > 65_535) {
    ctx.addIssue({ code: 'custom', message: 'must be host:port (port 1 to 65535), as search.internal:8444' });
  }
});

/**
 * `identity.static.federated`: a partner trust domain (`example.org` or
 * `spiffe://example.org`) → the PEM file of that domain's CAs. Each domain's
 * CAs are kept as that domain's own bundle, so they vouch for its IDs only;
 * the own domain is refused here when `spiffeId` names it, and always when
 * the files are read at `start()`.
 */
const federatedBundleFiles = z.record(z.string(), z.string().min(1)).superRefine((files, ctx) => {
  const named = new Map<string, string>();
  for (const key of Object.keys(files)) {
    let td: TrustDomain;
    try {
      td = TrustDomain.parse(key);
    } catch (err) {
      ctx.addIssue({
        code: 'custom',
        path: [key],
        message: err instanceof Error ? err.message : String(err),
      });
      continue;
    }
    // TrustDomain.parse takes the domain of a whole ID: a key with a path is most likely a mistake.
    if (key !== td.name && key !== td.idString) {
      ctx.addIssue({
        code: 'custom',
        path: [key],
        message: `must name a trust domain (${td.name} or ${td.idString}), not a SPIFFE ID with a path`,
      });
      continue;
    }
    const first = named.get(td.name);
    if (first === undefined) named.set(td.name, key);
    else
      // As a key written twice: the second file would silently replace the first.
      ctx.addIssue({
        code: 'custom',
        path: [key],
        message: `names trust domain ${td.name}, as ${JSON.stringify(first)} does: one entry per trust domain`,
      });
  }
});

const IdentityConfigSchema = z.union([
  z.strictObject({
    workloadApi: z.strictObject({
      /** Defaults to SPIFFE_ENDPOINT_SOCKET. */
      socket: workloadSocket.optional(),
      /** How long start() waits for the first SVID (a timer). */
      timeoutMs: z.number().int().positive().max(MAX_TIMER_MS).default(10_000),
    }),
  }),
  z.strictObject({
    static: z.strictObject({
      certFile: z.string().min(1),
      keyFile: z.string().min(1),
      /**
       * The CAs of the SVID's own trust domain only: a CA whose `spiffe://`
       * URI SAN names another domain is refused at start() (a partner's CA
       * filed as ours could vouch for our IDs). Partners go in `federated`.
       */
      bundleFile: z.string().min(1),
      /** Partner trust domain → PEM file of its CAs, read (and watched) with the other files. */
      federated: federatedBundleFiles.optional(),
    }),
  }),
]);

const AuthzConfigSchema = z.union([
  z.strictObject({ policyFile: z.string().min(1) }),
  z.strictObject({
    opa: z.strictObject({
      url: z.url(),
      /** Data API path of the decision rule (see @weave/authz's policies/weave.rego). */
      path: z.string().min(1).default('weave/authz/decision'),
      /** At most @weave/authz's OpaEnforcer bound. */
      timeoutMs: z.number().int().positive().max(OPA_MAX_TIMEOUT_MS).default(1_000),
      cacheTtlMs: z.number().int().nonnegative().default(0),
      /** Largest answer read from OPA, in bytes: a longer one is a deny. At most @weave/authz's OpaEnforcer bound. */
      maxResponseBytes: z
        .number()
        .int()
        .positive()
        .max(OPA_MAX_RESPONSE_BYTES)
        .default(OPA_DEFAULT_MAX_RESPONSE_BYTES),
    }),
  }),
  /** Tests and local experiments only; refused when NODE_ENV or WEAVE_ENV is production. */
  z.strictObject({ allowAll: z.literal(true) }),
]);

const TransportConfigSchema = z.strictObject({
  tlsMinVersion: z.enum(['TLSv1.2', 'TLSv1.3']).default('TLSv1.3'),
  /** Present only so a `false` can be refused with a clear message. */
  verifyPeer: z.literal(true, { error: 'peer verification cannot be turned off' }).default(true),
  /**
   * A call's TCP + TLS connect, and how long a connection may stay in its TLS
   * handshake on the agent's own mTLS and gRPC ports. At most @weave/transport's
   * bound (else refused at the first call, not at load).
   */
  connectTimeoutMs: z
    .number()
    .int()
    .positive()
    .max(TRANSPORT_TIMEOUT_LIMITS_MS.connectTimeoutMs)
    .default(5_000),
  /** At most @weave/transport's bound (else refused at start() or the first call). */
  requestTimeoutMs: z
    .number()
    .int()
    .positive()
    .max(TRANSPORT_TIMEOUT_LIMITS_MS.requestTimeoutMs)
    .default(30_000),
  retries: z.number().int().min(0).max(10).default(2),
  /**
   * How long a streaming call may wait for a byte (an event or a heartbeat)
   * before it takes the peer, or the network, as gone and resumes the stream
   * on a new connection, in ms; 0 for no limit (only the call's deadline).
   * Keep it above the peers' `server.keepaliveMs`.
   */
  streamIdleTimeoutMs: z.number().int().min(0).max(MAX_TIMER_MS).default(300_000),
  /**
   * How long a peer's outbound channel (connection pool, circuit breaker, TLS
   * sessions) may go unused before it is closed and forgotten, in ms; the next
   * call to that peer makes a new one. A channel with a call in flight is never
   * closed for idleness. At least 1 s.
   */
  channelIdleMs: z.number().int().min(1_000).max(MAX_TIMER_MS).default(600_000),
});

/** The validated agent configuration (defaults applied). */
export const AgentConfigSchema = z.strictObject({
  name: z.string().regex(/^[a-z0-9][a-z0-9-]{0,62}$/, 'must be lowercase letters, digits and dashes'),
  description: z.string().default(''),
  version: z.string().default('0.1.0'),
  /** When set, the SVID served to this agent must carry exactly this ID. */
  spiffeId: spiffeIdString.optional(),
  server: z
    .strictObject({
      host: listenHost.default('127.0.0.1'),
      port: z.number().int().min(0).max(65_535).default(0),
      /** The URL advertised in the agent card (https://); defaults to https://host:port. */
      publicUrl: httpsUrl('callers reach the agent over mutual TLS').optional(),
      bodyLimit: z
        .number()
        .int()
        .positive()
        .default(1024 * 1024),
      maxConcurrentTasks: z.number().int().positive().default(256),
      /**
       * Longest a task's handler may run, in ms of wall time from its start
       * (see @weave/a2a's `limits.maxTaskMs`): past it the task ends FAILED and
       * the handler's signal aborts, whatever deadline the caller sent (a
       * generic A2A client sends none). Time waiting for input counts. Unset:
       * @weave/a2a's default, 1 hour.
       */
      maxTaskMs: z.number().int().positive().max(MAX_TIMER_MS).optional(),
      /**
       * Limits per verified caller (see @weave/a2a's `limits.perCaller`):
       * unfinished tasks (default a quarter of `maxConcurrentTasks`), requests
       * per second (unset: none), overrides per SPIFFE ID pattern in `rules`.
       */
      perCaller: CallerLimitsSchema.optional(),
      /**
       * Memory bound of the embedded task store, in bytes (see @weave/a2a's
       * `limits.retainedBytes`): store-wide (default 256 MiB), per caller
       * (default a quarter of it), per finished task (default the per-caller share).
       * With `store.postgres`, the same three bound the stored bytes instead
       * (defaults 1 GiB, a quarter of it, the per-caller share; see `PostgresTaskStore`).
       */
      retainedBytes: z
        .strictObject({
          total: z.number().int().positive().optional(),
          perCaller: z.number().int().positive().optional(),
          perTask: z.number().int().positive().optional(),
        })
        .optional(),
      /**
       * Connections each port (HTTP and gRPC) holds at most: `maxConnections`
       * in all, those still in their TLS handshake included (default 10 000),
       * `maxConnectionsPerPeer` per verified SPIFFE ID (default 1000), and
       * `maxHandshakesPerAddress` in their TLS handshake per remote address
       * (default 64). One over is closed at once, before any request (see
       * @weave/transport's `ConnectionLimitsSchema`).
       */
      ...ConnectionLimitsSchema.shape,
      /** How long stop() lets in-flight tasks run before it cancels them; 0 cancels them at once. */
      drainTimeoutMs: z.number().int().min(0).max(MAX_TIMER_MS).default(10_000),
      /**
       * How long stop() keeps serving normally before it drains, in ms: `/ready`
       * answers 503 at once, and new calls are still served meanwhile, so that
       * a load balancer that still routes here (it polls readiness) has
       * stopped before the ports close. 0 (default): drain at once.
       */
      shutdownDelayMs: z.number().int().min(0).max(MAX_TIMER_MS).default(0),
      /**
       * How often a quiet task's stream shows it is alive, in ms: an SSE
       * heartbeat comment on JSON-RPC and HTTP+JSON, an HTTP/2 PING to each
       * gRPC client (one left unanswered as long closes its connection, so a
       * vanished client's subscribers are let go). Keep it under the idle
       * timeout of any load balancer or proxy on the way. 0 turns both off.
       */
      keepaliveMs: z.number().int().min(0).max(600_000).default(15_000),
      /**
       * The A2A bindings served, in the order the agent card lists them
       * (first = preferred). All three by default.
       */
      bindings: z
        .array(z.enum(['JSONRPC', 'HTTP+JSON', 'GRPC']))
        .min(1)
        .refine((b) => new Set(b).size === b.length, 'each binding at most once')
        .default(['JSONRPC', 'HTTP+JSON', 'GRPC']),
      /**
       * When the agent card is served in v0.3 shape (see @weave/a2a's
       * `V03CardCompat`): `on-request` (default) to `A2A-Version: 0.3` or
       * `?a2a-version=0.3` only, `headerless` also to requests without
       * `A2A-Version`, `off` never. Other requests get the v1.0 card.
       */
      v03Compat: z.enum(['on-request', 'headerless', 'off']).default('on-request'),
      /**
       * The gRPC binding's own mTLS listener (same SVID, bundle, peer check and
       * policy as the HTTP port). Port 0 picks a free one; host defaults to
       * `server.host`.
       */
      grpc: z
        .strictObject({
          host: listenHost.optional(),
          port: z.number().int().min(0).max(65_535).default(0),
          /** The address advertised on the card (`host:port`); defaults to the bound one. */
          publicAddress: hostPort.optional(),
        })
        .prefault({}),
    })
    .prefault({}),
  identity: IdentityConfigSchema.optional(),
  /**
   * Where the policy comes from. Required unless the agent is given a
   * `PolicyEnforcer` object (then this section may be left out).
   */
  authz: AuthzConfigSchema.optional(),
  transport: TransportConfigSchema.prefault({}),
  /**
   * Where the A2A server keeps its tasks. Without `postgres`: in memory (one
   * replica; lost on restart). With it: PostgreSQL, shared by every replica
   * of this agent (live streams and cancels on any replica, leases). Needs
   * the `pg` package and a schema migrated with `weave db migrate`; the URL
   * (a secret) is read from the environment variable `urlEnv`, never from
   * this file.
   */
  store: z
    .strictObject({
      postgres: z
        .strictObject({
          urlEnv: z
            .string()
            .regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'an environment variable name')
            .default('WEAVE_DATABASE_URL'),
          /** A replica silent this long (ms) is taken for dead; its running tasks fail (or re-run). */
          leaseTtlMs: z.number().int().min(1_000).max(MAX_TIMER_MS).default(30_000),
          /** How long a finished task stays readable (ms). */
          terminalTtlMs: z.number().int().positive().default(3_600_000),
          /**
           * Longest wait (ms) for the answer to one SQL statement: a database
           * that stops answering fails calls as unavailable (retryable) instead of holding them.
           */
          queryTimeoutMs: z.number().int().positive().max(600_000).default(10_000),
        })
        .optional(),
    })
    .prefault({}),
  /** Static discovery: where each peer's A2A endpoint is (one entry per SPIFFE ID). */
  peers: z
    .array(z.strictObject({ id: spiffeIdString, url: httpsUrl('peers are called over mutual TLS') }))
    .superRefine((peers, ctx) => {
      // A second entry would silently replace the first, as a key written twice would.
      const first = new Map<string, number>();
      peers.forEach((p, i) => {
        const at = first.get(p.id);
        if (at === undefined) first.set(p.id, i);
        else
          ctx.addIssue({
            code: 'custom',
            path: [i, 'id'],
            message: `${p.id} is listed twice (also peers[${at}]): one entry per peer`,
          });
      });
    })
    .default([]),
  /** Discovery of peers called by URL (their agent card names their SPIFFE ID). */
  discovery: z
    .strictObject({
      /**
       * The card must be signed by the SVID of the SPIFFE ID it declares
       * (`required`), or may be unsigned but never badly signed
       * (`if-present`, for peers that predate card signing).
       */
      cardSignatures: z.enum(['required', 'if-present']).default('required'),
    })
    .prefault({}),
  observability: z
    .strictObject({
      /**
       * A plain-HTTP listener with /health, /ready and /metrics for probes and
       * Prometheus scrapers that hold no SVID. Off unless set; binds to
       * 127.0.0.1 unless `host` says otherwise (see the README for the trade-off).
       */
      ops: z
        .strictObject({
          host: listenHost.default('127.0.0.1'),
          port: z.number().int().min(0).max(65_535),
        })
        .optional(),
      /** Node process metrics (event loop lag, heap …) in the agent's registry. */
      processMetrics: z.boolean().default(false),
    })
    .prefault({}),
  logging: z
    .strictObject({
      level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
    })
    .prefault({}),
});

/** A validated agent config, every default filled in (what {@link loadAgentConfig} returns). */
export type AgentConfig = z.output<typeof AgentConfigSchema>;
/** An agent config as written (a file, an object): defaulted keys may be left out. */
export type AgentConfigInput = z.input<typeof AgentConfigSchema>;

const isProduction = (env: NodeJS.ProcessEnv) =>
  env.NODE_ENV === 'production' || env.WEAVE_ENV === 'production';

/**
 * Settings that zod accepts as shapes but that would weaken security; `at`
 * names a key (and the environment variable that set it, if one did).
 */
function insecureIssues(
  raw: unknown,
  env: NodeJS.ProcessEnv,
  at: (path: readonly string[]) => string,
): ConfigIssue[] {
  const issues: ConfigIssue[] = [];
  const r = (raw ?? {}) as Record<string, Record<string, unknown> | undefined>;
  if (r.transport?.verifyPeer === false) {
    issues.push({ path: at(['transport', 'verifyPeer']), message: 'peer verification cannot be turned off' });
  }
  const min = r.transport?.tlsMinVersion;
  if (typeof min === 'string' && /^TLSv1(\.[01])?$|^SSL/i.test(min)) {
    issues.push({ path: at(['transport', 'tlsMinVersion']), message: `${min} is below the TLS 1.2 floor` });
  }
  if (r.authz && r.authz.allowAll === true && isProduction(env)) {
    issues.push({ path: at(['authz', 'allowAll']), message: 'allow-all policy is refused in production' });
  }
  const def = (r.authz as { default?: unknown } | undefined)?.default;
  if (def === 'allow')
    issues.push({ path: at(['authz', 'default']), message: 'a default of allow is never accepted' });
  return issues;
}

const camel = (s: string) => s.toLowerCase().replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());

/** What zod keeps of a schema: its kind and what it wraps or holds. */
interface SchemaDef {
  readonly type: string;
  readonly innerType?: z.ZodType;
  readonly in?: z.ZodType;
  readonly shape?: Record<string, z.ZodType>;
  readonly element?: z.ZodType;
  readonly options?: readonly z.ZodType[];
  readonly values?: readonly unknown[];
}
const defOf = (s: z.ZodType): SchemaDef => (s as unknown as { _zod: { def: SchemaDef } })._zod.def;

/** `s` without its defaults and optionals, and each form of a union. */
function unwrapped(s: z.ZodType): z.ZodType[] {
  const d = defOf(s);
  if (d.innerType) return unwrapped(d.innerType);
  if (d.type === 'pipe' && d.in) return unwrapped(d.in);
  if (d.type === 'union' && d.options) return d.options.flatMap(unwrapped);
  return [s];
}

/** The schemas a value at `path` meets (several below a union); none for a key the config does not have. */
function schemasAt(path: readonly string[]): z.ZodType[] {
  let at = unwrapped(AgentConfigSchema);
  for (const seg of path) {
    at = at.flatMap((s) => {
      const d = defOf(s);
      if (d.type === 'object' && d.shape && Object.hasOwn(d.shape, seg)) return unwrapped(d.shape[seg]!);
      if (d.type === 'array' && d.element && /^\d+$/.test(seg)) return unwrapped(d.element);
      return [];
    });
  }
  return at;
}

/** A key that takes text only (a string, one of a list of words). */
function takesText(path: readonly string[]): boolean {
  const at = schemasAt(path);
  return (
    at.length > 0 &&
    at.every((s) => {
      const d = defOf(s);
      if (d.type === 'literal') return (d.values ?? []).every((v) => typeof v === 'string');
      return d.type === 'string' || d.type === 'enum';
    })
  );
}

/**
 * The value of the variable `name` for the key at `path`. A key that takes
 * text gets the text as it is (`WEAVE_VERSION=2` is version "2"). For the
 * others `true`, `false`, a number or JSON become typed values; anything
 * else stays a string (text that only looks like JSON, too). JSON with a key
 * written twice in one object is refused: `JSON.parse` would silently keep the last one.
 */
function coerceEnvValue(name: string, path: readonly string[], v: string): unknown {
  if (takesText(path)) return v;
  if (v === 'true') return true;
  if (v === 'false') return false;
  if (/^-?\d+(\.\d+)?$/.test(v)) return Number(v);
  if (/^[[{]/.test(v)) {
    let value: unknown;
    try {
      value = JSON.parse(v);
    } catch {
      return v;
    }
    const dup = scanJson(v);
    if (dup) {
      const { line } = lineCol(v, dup.offset);
      throw new AgentConfigError(`environment variable ${name}`, [
        {
          path: `${formatKeyPath([...path, ...dup.path])} (line ${line})`,
          message: duplicateKeyMessage(dup.key),
        },
      ]);
    }
    return value;
  }
  return v;
}

const duplicateKeyMessage = (key: string) =>
  `duplicate key ${JSON.stringify(key)}: a key may appear once per mapping`;

/** `serverPort` is `server` and then a key: the name of `WEAVE_SERVER_PORT`. */
const misspeltUnder = (name: string, section: string): boolean =>
  name.length > section.length && name.startsWith(section) && /[A-Z0-9]/.test(name[section.length]!);

/** `spiffeId` → `SPIFFE_ID`: a config key as its env variable writes it. */
const snake = (k: string): string => k.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase();

/** The config's top-level keys: the first level of an env override names one of them. */
const TOP_LEVEL_KEYS: ReadonlySet<string> = new Set(Object.keys(AgentConfigSchema.shape));

/** A key (or a section it made) that an environment variable set. */
interface EnvOrigin {
  readonly path: readonly string[];
  readonly name: string;
}

/**
 * Which variables set what in a config {@link applyEnvOverrides} returned:
 * an error about such a value names the variable, not a line of the file.
 */
const envOrigins = new WeakMap<object, readonly EnvOrigin[]>();

/** The variable that set the key at `path` (or a section holding it), as an error names it. */
function envSource(raw: unknown, path: readonly PropertyKey[]): string | undefined {
  const origins = typeof raw === 'object' && raw !== null ? envOrigins.get(raw) : undefined;
  let best: EnvOrigin | undefined;
  for (const o of origins ?? []) {
    const holds = o.path.length <= path.length && o.path.every((seg, i) => seg === String(path[i]));
    if (holds && (!best || o.path.length > best.path.length)) best = o;
  }
  return best && `environment variable ${best.name}`;
}

/** The variable `store.postgres.urlEnv` names in `config`, when it has `store.postgres`. */
function storeUrlEnv(config: Record<string, unknown>): string | undefined {
  const pg = (config.store as { postgres?: unknown } | undefined)?.postgres;
  if (typeof pg !== 'object' || pg === null) return undefined;
  const name = (pg as { urlEnv?: unknown }).urlEnv;
  return typeof name === 'string' ? name : 'WEAVE_DATABASE_URL';
}

/**
 * Applies `WEAVE_<SECTION>__<KEY>` environment overrides: `WEAVE_SERVER__PORT=9000`
 * sets `server.port`; `__` separates levels and `SNAKE_CASE` becomes `camelCase`.
 * `WEAVE_<SECTION>` alone sets a whole top-level key (`WEAVE_PEERS='[…]'`).
 * A key that takes text gets the variable's text as it is (`WEAVE_VERSION=2`);
 * for the others `true`, `false`, numbers and JSON are typed.
 * Other `WEAVE_` variables are not config (`WEAVE_ENV`, `WEAVE_LOG_LEVEL`, the
 * variable `store.postgres.urlEnv` names, `WEAVE_DATABASE_URL` by default, …) and are left alone.
 * `SPIFFE_ENDPOINT_SOCKET` fills `identity.workloadApi.socket` when no identity is configured.
 * {@link parseAgentConfig} names the variable in an error about a value one set.
 *
 * @throws {AgentConfigError} (`AGENT_CONFIG_INVALID`) when a JSON value repeats
 *   a key within one object, or a variable looks like a misspelt override (a
 *   section and one underscore, `WEAVE_SERVER_PORT`; a `WEAVE_<SECTION>__<KEY>`
 *   naming no top-level key), which would otherwise be ignored; `raw` is left as it was.
 */
export function applyEnvOverrides(
  raw: Record<string, unknown>,
  env: NodeJS.ProcessEnv = process.env,
): Record<string, unknown> {
  let applied = overridden(raw, env, undefined);
  // The database URL's variable is the config's to name (`WEAVE_STORE_URL` too, though it
  // looks like a misspelt override): known once the overrides are in, then left alone.
  const urlEnv = storeUrlEnv(applied.out);
  if (urlEnv !== undefined && env[urlEnv] !== undefined) applied = overridden(raw, env, urlEnv);
  if (applied.refused) throw applied.refused;
  envOrigins.set(applied.out, applied.origins);
  return applied.out;
}

/** `raw` with the overrides of `env` but `skip`, which variables set what, and the first refusal. */
function overridden(
  raw: Record<string, unknown>,
  env: NodeJS.ProcessEnv,
  skip: string | undefined,
): { out: Record<string, unknown>; origins: EnvOrigin[]; refused: AgentConfigError | undefined } {
  const out = structuredClone(raw);
  const origins: EnvOrigin[] = [];
  let refused: AgentConfigError | undefined;
  for (const [key, value] of Object.entries(env)) {
    if (!key.startsWith('WEAVE_') || value === undefined || key === skip) continue;
    const path = key.slice('WEAVE_'.length).split('__').map(camel);
    if (!TOP_LEVEL_KEYS.has(path[0]!)) {
      // `WEAVE_SERVER_PORT` (one underscore) is a misspelt `WEAVE_SERVER__PORT`: dropping it
      // would silently lose the setting (a hardening one, as likely as any other).
      const section =
        path.length === 1 ? [...TOP_LEVEL_KEYS].find((k) => misspeltUnder(path[0]!, k)) : undefined;
      if (path.length === 1 && section === undefined) continue;
      refused ??= new AgentConfigError(`environment variable ${key}`, [
        {
          // A misspelt override names no key ("serverPort" is nobody's): the variable is what was written.
          path: section === undefined ? path.join('.') : key,
          message:
            section === undefined
              ? `"${path[0]}" is not a top-level config key (${[...TOP_LEVEL_KEYS].join(', ')})`
              : `not an override: levels are separated by "__" (WEAVE_${snake(section)}__${key.slice(`WEAVE_${snake(section)}_`.length)})`,
        },
      ]);
      continue;
    }
    let node: Record<string, unknown> = out;
    for (const [i, seg] of path.slice(0, -1).entries()) {
      const next = node[seg];
      if (typeof next !== 'object' || next === null || Array.isArray(next)) {
        node[seg] = {};
        origins.push({ path: path.slice(0, i + 1), name: key });
      }
      node = node[seg] as Record<string, unknown>;
    }
    node[path[path.length - 1]!] = coerceEnvValue(key, path, value);
    origins.push({ path, name: key });
  }
  if (out.identity === undefined && env.SPIFFE_ENDPOINT_SOCKET) {
    out.identity = { workloadApi: { socket: env.SPIFFE_ENDPOINT_SOCKET } };
    origins.push({ path: ['identity'], name: 'SPIFFE_ENDPOINT_SOCKET' });
  }
  return { out, origins, refused };
}

/**
 * The issues of the one form of a union (`identity`, `authz`) whose keys the
 * input has, under the union's path: a bad value inside it is then named by
 * its own key (`identity.workloadApi.timeoutMs: …`), not reported as "matches
 * no form". Undefined when no form, or more than one, has the input's keys.
 */
function formIssues(issue: z.core.$ZodIssue): z.core.$ZodIssue[] | undefined {
  if (issue.code !== 'invalid_union') return undefined;
  // A form lacking the input's key, or having another, fails at its top level.
  const shapeMiss = (i: z.core.$ZodIssue) =>
    i.path.length <= 1 &&
    (i.code === 'invalid_type' || i.code === 'unrecognized_keys' || i.code === 'invalid_value');
  const fits = issue.errors.filter((form) => !form.some(shapeMiss));
  if (fits.length !== 1) return undefined;
  return fits[0]!.map((i) => ({ ...i, path: [...issue.path, ...i.path] }));
}

/** The one key that names each form of the union sections. */
const UNION_FORMS: Readonly<Record<string, readonly string[]>> = {
  identity: IdentityConfigSchema.options.flatMap((o) => Object.keys(o.shape)),
  authz: AuthzConfigSchema.options.flatMap((o) => Object.keys(o.shape)),
};

/**
 * Why a union section (`identity`, `authz`) matches none of its forms, when
 * its keys tell: none of the forms' keys, or several (as when an env override
 * such as `WEAVE_AUTHZ__OPA__URL` meets a file's `authz.policyFile`).
 */
function unionMessage(
  path: readonly PropertyKey[],
  raw: unknown,
  env: NodeJS.ProcessEnv,
): string | undefined {
  const forms = path.length === 1 ? UNION_FORMS[String(path[0])] : undefined;
  const value = (raw as Record<string, unknown> | null | undefined)?.[String(path[0])];
  if (!forms || typeof value !== 'object' || value === null || Array.isArray(value)) return undefined;
  const keys = Object.keys(value);
  const named = keys.filter((k) => forms.includes(k));
  const oneOf = forms.map((f) => JSON.stringify(f)).join(', ');
  if (named.length > 1) {
    // Said only when an env variable did set something in this section.
    const prefix = `WEAVE_${snake(String(path[0]))}_`;
    const fromEnv = Object.keys(env).some((k) => k.startsWith(prefix) && env[k] !== undefined);
    return (
      `takes exactly one of ${oneOf}, not ${named.map((f) => JSON.stringify(f)).join(' and ')} together` +
      (fromEnv
        ? ` (an environment override adds a key to the file's ${String(path[0])} section; it does not replace the section)`
        : '')
    );
  }
  if (named.length === 0) {
    return `takes one of ${oneOf}; it has ${keys.length > 0 ? keys.map((k) => JSON.stringify(k)).join(', ') : 'no key'}`;
  }
  return undefined;
}

function zodIssues(
  error: z.ZodError,
  where?: (path: PropertyKey[]) => string | undefined,
  raw?: unknown,
  env: NodeJS.ProcessEnv = {},
): ConfigIssue[] {
  return error.issues
    .flatMap((i) => formIssues(i) ?? [i])
    .map((issue) => {
      const path = formatKeyPath(issue.path);
      // A value an environment variable set is named by the variable: the file may not have it.
      const fromEnv =
        envSource(raw, issue.path) ??
        (issue.code === 'unrecognized_keys'
          ? issue.keys.map((k) => envSource(raw, [...issue.path, k])).find((s) => s !== undefined)
          : undefined);
      const line = fromEnv ?? where?.(issue.path);
      let message = issue.message;
      if (issue.code === 'unrecognized_keys')
        message = `unknown key(s) ${issue.keys.map((k) => JSON.stringify(k)).join(', ')}`;
      if (issue.code === 'invalid_union')
        message =
          unionMessage(issue.path, raw, env) ?? 'does not match any accepted form; see the config reference';
      return { path: line ? `${path || '(root)'} (${line})` : path, message };
    });
}

/**
 * What is wrong with `url` as the task database's URL, read as node-postgres
 * reads it (`start()`, `weave validate` and `weave db` check it): postgres:// or postgresql://,
 * libpq's Unix-socket form (`postgres://user:pw@/db?host=/run/postgresql`)
 * included, with a port from 1 to 65535 if it has one. Undefined when
 * nothing is wrong. Never quotes the URL, so never its password.
 */
export function postgresUrlProblem(url: string): string | undefined {
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(url)?.[1]?.toLowerCase();
  if (scheme === undefined)
    return 'the database URL is not a URL (postgres://user:password@host:port/database)';
  if (scheme !== 'postgres' && scheme !== 'postgresql') {
    return `the database URL must be postgres:// or postgresql://, not ${scheme}://`;
  }
  let parsed: URL | undefined;
  try {
    // As node-postgres parses it: spaces and stray `%` encoded, then a URL without a host
    // (a Unix socket, named in `?host=`) with a stand-in one.
    const text = / |%[^a-f0-9]|%[a-f0-9][^a-f0-9]/i.test(url)
      ? encodeURI(url).replace(/%25(\d\d)/g, '%$1')
      : url;
    parsed = URL.canParse(text) ? new URL(text) : new URL(text.replace('@/', '@___DUMMY___/'));
  } catch {
    parsed = undefined;
  }
  if (!parsed) return `the database URL cannot be parsed: ${badPort(url) ?? 'Invalid URL'}`;
  const port = parsed.searchParams.get('port') || parsed.port;
  if (port !== '' && !(/^\d+$/.test(port) && Number(port) >= 1 && Number(port) <= 65_535)) {
    return `the database URL's port must be from 1 to 65535, got ${JSON.stringify(port)}`;
  }
  return undefined;
}

/**
 * What is wrong with the port of `url`, if that is what is wrong. Read after
 * the last `@`, which ends the user and password part, so nothing of a
 * password is ever quoted.
 */
function badPort(url: string): string | undefined {
  const at = url.lastIndexOf('@');
  const rest = at >= 0 ? url.slice(at + 1) : url.replace(/^[^:]*:\/\//, '');
  const port = /^(?:\[[^\]]*\]|[^:/?#]*):([^/?#]*)/.exec(rest)?.[1];
  if (port === undefined || (/^\d+$/.test(port) && Number(port) >= 1 && Number(port) <= 65_535))
    return undefined;
  return `the port ${JSON.stringify(port)} is not a number from 1 to 65535`;
}

/** A bad database URL in `variable`, under the key that names the variable. */
const storeUrlIssue = (variable: string, problem: string): ConfigIssue => ({
  path: `store.postgres.urlEnv (environment variable ${variable})`,
  message: problem,
});

/**
 * Checks the task database's URL, read from the environment variable
 * `variable` (`store.postgres.urlEnv`), before anything connects: the URL of
 * another kind of database, or one node-postgres cannot read, is a config
 * error, not a database that cannot be reached (which a caller retries).
 *
 * @throws {AgentConfigError} (`AGENT_CONFIG_INVALID`) naming the variable;
 *   the message never quotes the URL, so never its password.
 */
export function checkPostgresUrl(variable: string, url: string): void {
  const problem = postgresUrlProblem(url);
  if (problem !== undefined) {
    throw new AgentConfigError(`environment variable ${variable}`, [storeUrlIssue(variable, problem)]);
  }
}

/**
 * Validates a config object (after env overrides) and applies defaults.
 *
 * @throws {AgentConfigError} naming each bad key (and the environment
 *   variable that set it, for a value one did); code `AGENT_CONFIG_INSECURE`
 *   when a setting would weaken security.
 */
export function parseAgentConfig(raw: unknown, options: ParseAgentConfigOptions = {}): AgentConfig {
  const env = options.env ?? process.env;
  const source = options.source ?? 'object';
  const at = (path: readonly string[]) => {
    const from = envSource(raw, path);
    return from ? `${path.join('.')} (${from})` : path.join('.');
  };
  const insecure = insecureIssues(raw, env, at);
  if (insecure.length > 0) throw new AgentConfigError(source, insecure, 'AGENT_CONFIG_INSECURE');
  const result = AgentConfigSchema.safeParse(raw);
  const issues = result.success ? [] : zodIssues(result.error, options.where, raw, env);
  // No implicit policy: without an enforcer object, a config must say where its policy is.
  if (!options.enforcer && (raw as { authz?: unknown } | null | undefined)?.authz === undefined) {
    issues.unshift({ path: 'authz', message: MISSING_AUTHZ });
  }
  if (result.success) {
    const where = (path: string[]) => envSource(raw, path) ?? options.where?.(path);
    issues.push(...sharedPortIssues(result.data, where), ...ownFederatedIssues(result.data, where));
  }
  const pg = result.success && options.checkDatabaseUrl ? result.data.store.postgres : undefined;
  const url = pg && env[pg.urlEnv];
  const problem = url ? postgresUrlProblem(url) : undefined;
  if (pg && problem !== undefined) issues.push(storeUrlIssue(pg.urlEnv, problem));
  if (!result.success || issues.length > 0) throw new AgentConfigError(source, issues);
  return result.data;
}

/**
 * Two of the agent's listeners (`server`, `server.grpc` when the GRPC binding
 * is served, `observability.ops`) on one fixed port where their hosts may be
 * the same address: the second would fail to listen at start() (EADDRINUSE).
 * Port 0 (any free one) never collides. `where` names the place of a key.
 */
function sharedPortIssues(config: AgentConfig, where: (path: string[]) => string | undefined): ConfigIssue[] {
  const { server, observability } = config;
  const listeners: Array<{ path: string[]; host: string; port: number }> = [
    { path: ['server', 'port'], host: server.host, port: server.port },
  ];
  if (server.bindings.includes('GRPC')) {
    listeners.push({
      path: ['server', 'grpc', 'port'],
      host: server.grpc.host ?? server.host,
      port: server.grpc.port,
    });
  }
  if (observability.ops) {
    listeners.push({ path: ['observability', 'ops', 'port'], ...observability.ops });
  }
  const issues: ConfigIssue[] = [];
  for (const [i, b] of listeners.entries()) {
    const a = listeners.slice(0, i).find((l) => l.port === b.port && hostsMayCollide(l.host, b.host));
    if (b.port === 0 || a === undefined) continue;
    const from = where(b.path);
    issues.push({
      path: from ? `${b.path.join('.')} (${from})` : b.path.join('.'),
      message:
        `the same port as ${a.path.join('.')} (${b.port}` +
        (a.host === b.host ? ` on ${a.host}` : `, on ${a.host} and ${b.host}`) +
        '): each listener needs a port of its own (or 0 for any free one)',
    });
  }
  return issues;
}

/**
 * A federated bundle file named for the agent's own trust domain (known from
 * `spiffeId`): its CAs are the own `bundleFile`'s to give. Without
 * `spiffeId` the provider refuses it at start(), knowing the SVID's domain.
 */
function ownFederatedIssues(
  config: AgentConfig,
  where: (path: string[]) => string | undefined,
): ConfigIssue[] {
  const federated =
    config.identity && 'static' in config.identity ? config.identity.static.federated : undefined;
  const own = config.spiffeId === undefined ? undefined : SpiffeId.parse(config.spiffeId).trustDomain;
  if (!federated || !own) return [];
  return Object.keys(federated)
    .filter((key) => own.equals(TrustDomain.parse(key)))
    .map((key) => {
      const path = ['identity', 'static', 'federated', key];
      const from = where(path);
      return {
        path: from ? `${path.join('.')} (${from})` : path.join('.'),
        message: `${own.name} is this agent's own trust domain (spiffeId): its CAs go in identity.static.bundleFile, not federated`,
      };
    });
}

/**
 * Whether listening on `a` and on `b` may take the same address: the same
 * host, or a wildcard (`::` takes IPv4 too; `0.0.0.0` every IPv4 address
 * and any name, which may resolve to one).
 */
function hostsMayCollide(a: string, b: string): boolean {
  const [x, y] = [a, b].map((h) => h.replace(/^\[(.*)\]$/, '$1').toLowerCase()) as [string, string];
  if (x === y) return true;
  const anyV6 = (h: string) => h.includes(':') && /^[0:]+$/.test(h);
  if (anyV6(x) || anyV6(y)) return true;
  if (x === '0.0.0.0') return isIP(y) !== 6;
  if (y === '0.0.0.0') return isIP(x) !== 6;
  return false;
}

/** The message of a config that has no `authz` section and no enforcer object to stand in for it. */
const MISSING_AUTHZ =
  'the authz section is missing: set authz.policyFile, authz.opa or authz.allowAll (tests only), ' +
  'or give the agent a PolicyEnforcer (new SecureAgent({ config, enforcer }))';

/** Options of {@link parseAgentConfig} and {@link loadAgentConfig}. */
export interface ParseAgentConfigOptions {
  /** Names the config in errors (a file path; default `object`). */
  readonly source?: string;
  /** Environment read for production checks (default `process.env`). */
  readonly env?: NodeJS.ProcessEnv;
  /** Maps an issue's path to a location (e.g. `line 5`). */
  readonly where?: (path: PropertyKey[]) => string | undefined;
  /** The caller supplies a `PolicyEnforcer`, so `authz` may be left out. */
  readonly enforcer?: boolean;
  /**
   * Also check the database URL in the variable `store.postgres.urlEnv`
   * names, when `env` has it (as `weave validate` does; the agent checks it
   * at `start()`, where it reads it).
   */
  readonly checkDatabaseUrl?: boolean;
}

/**
 * Loads a YAML (or JSON) config file, applies env overrides, validates it, and
 * resolves relative file paths (policy, certificates) against the file's folder.
 */
export async function loadAgentConfig(
  file: string,
  env: NodeJS.ProcessEnv = process.env,
  options: Pick<ParseAgentConfigOptions, 'enforcer' | 'checkDatabaseUrl'> = {},
): Promise<AgentConfig> {
  const text = await readFile(file, 'utf8').catch((err: unknown) => {
    throw new AgentConfigError(file, [{ path: '', message: `cannot read file: ${(err as Error).message}` }]);
  });
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: true });
  if (doc.errors.length > 0) {
    throw new AgentConfigError(
      file,
      doc.errors.map((e) => {
        const line = `line ${e.linePos?.[0].line ?? '?'}`;
        // The parser names only the place of a repeated key; the key path says which setting it is.
        const dup = e.code === 'DUPLICATE_KEY' ? keyPathAt(doc, e.pos[0]) : undefined;
        if (dup)
          return {
            path: `${formatKeyPath(dup)} (${line})`,
            message: duplicateKeyMessage(String(dup.at(-1))),
          };
        return { path: line, message: e.message.split('\n')[0] ?? e.message };
      }),
    );
  }
  const raw = doc.toJS() as unknown;
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new AgentConfigError(file, [
      { path: '', message: 'the file must hold a mapping (key: value) at the top' },
    ]);
  }
  const where = (path: PropertyKey[]) => {
    // Point at the deepest node that exists in the file.
    for (let n = path.length; n >= 0; n--) {
      const node = doc.getIn(path.slice(0, n) as (string | number)[], true);
      if (isNode(node) && node.range) return `line ${lineCounter.linePos(node.range[0]).line}`;
    }
    return undefined;
  };
  const config = parseAgentConfig(applyEnvOverrides(raw as Record<string, unknown>, env), {
    source: file,
    env,
    where,
    ...options,
  });
  return resolveConfigPaths(config, dirname(resolve(file)));
}

/**
 * The path of the mapping key that starts at `offset`: the parser keeps both
 * pairs of a repeated key and reports where the second begins. Descends only
 * into the node holding `offset`.
 */
function keyPathAt(doc: Document, offset: number): (string | number)[] | undefined {
  const path: (string | number)[] = [];
  let node: unknown = doc.contents;
  const holds = (n: unknown) => isNode(n) && !!n.range && n.range[0] <= offset && offset < n.range[2];
  for (;;) {
    if (isMap(node)) {
      const pair = node.items.find((p) => holds(p.key) || holds(p.value));
      if (!pair) return undefined;
      const key = isScalar(pair.key) ? String(pair.key.value) : String(pair.key);
      path.push(key);
      if (isNode(pair.key) && pair.key.range?.[0] === offset) return path;
      node = pair.value;
    } else if (isSeq(node)) {
      const i = node.items.findIndex(holds);
      if (i === -1) return undefined;
      path.push(i);
      node = node.items[i];
    } else return undefined;
  }
}

function resolveConfigPaths(config: AgentConfig, base: string): AgentConfig {
  const out = structuredClone(config);
  if (out.authz && 'policyFile' in out.authz) out.authz.policyFile = resolve(base, out.authz.policyFile);
  if (out.identity && 'static' in out.identity) {
    const s = out.identity.static;
    s.certFile = resolve(base, s.certFile);
    s.keyFile = resolve(base, s.keyFile);
    s.bundleFile = resolve(base, s.bundleFile);
    if (s.federated)
      s.federated = Object.fromEntries(
        Object.entries(s.federated).map(([td, file]) => [td, resolve(base, file)]),
      );
  }
  return out;
}
