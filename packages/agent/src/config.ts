import { readFile } from 'node:fs/promises';
import { resolve, dirname } from 'node:path';
import { LineCounter, parseDocument, isMap, isNode, isScalar, isSeq, type Document } from 'yaml';
import { z } from 'zod';
import { CallerLimitsSchema } from '@weave/a2a';
import { OPA_DEFAULT_MAX_RESPONSE_BYTES, OPA_MAX_RESPONSE_BYTES, OPA_MAX_TIMEOUT_MS } from '@weave/authz';
// Every key that ends up on a timer is bounded by MAX_TIMER_MS, or by the
// lower bound of the layer it is handed to.
import { TRANSPORT_TIMEOUT_LIMITS_MS } from '@weave/transport';
import { formatKeyPath, lineCol, MAX_TIMER_MS, scanJson, SpiffeId } from '@weave/identity';
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
      bundleFile: z.string().min(1),
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
  /** At most @weave/transport's bound (else refused at the first call, not at load). */
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
      host: z.string().default('127.0.0.1'),
      port: z.number().int().min(0).max(65_535).default(0),
      /** The URL advertised in the agent card; defaults to https://host:port. */
      publicUrl: z.url().optional(),
      bodyLimit: z
        .number()
        .int()
        .positive()
        .default(1024 * 1024),
      maxConcurrentTasks: z.number().int().positive().default(256),
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
      /** How long stop() lets in-flight tasks run before it cancels them. */
      drainTimeoutMs: z.number().int().positive().max(MAX_TIMER_MS).default(10_000),
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
          host: z.string().optional(),
          port: z.number().int().min(0).max(65_535).default(0),
          /** The address advertised on the card (`host:port`); defaults to the bound one. */
          publicAddress: z.string().min(1).optional(),
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
  /** Static discovery: where each peer's A2A endpoint is. */
  peers: z.array(z.strictObject({ id: spiffeIdString, url: z.url() })).default([]),
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
          host: z.string().min(1).default('127.0.0.1'),
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

export type AgentConfig = z.output<typeof AgentConfigSchema>;
export type AgentConfigInput = z.input<typeof AgentConfigSchema>;

const isProduction = (env: NodeJS.ProcessEnv) =>
  env.NODE_ENV === 'production' || env.WEAVE_ENV === 'production';

/** Settings that zod accepts as shapes but that would weaken security. */
function insecureIssues(raw: unknown, env: NodeJS.ProcessEnv): ConfigIssue[] {
  const issues: ConfigIssue[] = [];
  const r = (raw ?? {}) as Record<string, Record<string, unknown> | undefined>;
  if (r.transport?.verifyPeer === false) {
    issues.push({ path: 'transport.verifyPeer', message: 'peer verification cannot be turned off' });
  }
  const min = r.transport?.tlsMinVersion;
  if (typeof min === 'string' && /^TLSv1(\.[01])?$|^SSL/i.test(min)) {
    issues.push({ path: 'transport.tlsMinVersion', message: `${min} is below the TLS 1.2 floor` });
  }
  if (r.authz && r.authz.allowAll === true && isProduction(env)) {
    issues.push({ path: 'authz.allowAll', message: 'allow-all policy is refused in production' });
  }
  const def = (r.authz as { default?: unknown } | undefined)?.default;
  if (def === 'allow')
    issues.push({ path: 'authz.default', message: 'a default of allow is never accepted' });
  return issues;
}

const camel = (s: string) => s.toLowerCase().replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());

/**
 * `true`, `false`, a number or JSON become typed values; anything else stays a
 * string (text that only looks like JSON, too). JSON with a key written twice
 * in one object is refused: `JSON.parse` would silently keep the last one.
 */
function coerceEnvValue(name: string, path: readonly string[], v: string): unknown {
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

/**
 * Applies `WEAVE_<SECTION>__<KEY>` environment overrides: `WEAVE_SERVER__PORT=9000`
 * sets `server.port`; `__` separates levels and `SNAKE_CASE` becomes `camelCase`.
 * `WEAVE_<SECTION>` alone sets a whole top-level key (`WEAVE_PEERS='[…]'`).
 * Other `WEAVE_` variables are not config (`WEAVE_ENV`, `WEAVE_LOG_LEVEL`,
 * `WEAVE_DATABASE_URL` named by `store.postgres.urlEnv`, …) and are left alone.
 * `SPIFFE_ENDPOINT_SOCKET` fills `identity.workloadApi.socket` when no identity is configured.
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
  const out = structuredClone(raw);
  for (const [key, value] of Object.entries(env)) {
    if (!key.startsWith('WEAVE_') || value === undefined) continue;
    const path = key.slice('WEAVE_'.length).split('__').map(camel);
    if (!TOP_LEVEL_KEYS.has(path[0]!)) {
      // `WEAVE_SERVER_PORT` (one underscore) is a misspelt `WEAVE_SERVER__PORT`: dropping it
      // would silently lose the setting (a hardening one, as likely as any other).
      const section =
        path.length === 1 ? [...TOP_LEVEL_KEYS].find((k) => misspeltUnder(path[0]!, k)) : undefined;
      if (path.length === 1 && section === undefined) continue;
      throw new AgentConfigError(`environment variable ${key}`, [
        {
          path: path.join('.'),
          message:
            section === undefined
              ? `"${path[0]}" is not a top-level config key (${[...TOP_LEVEL_KEYS].join(', ')})`
              : `not an override: levels are separated by "__" (WEAVE_${snake(section)}__${key.slice(`WEAVE_${snake(section)}_`.length)})`,
        },
      ]);
    }
    let node: Record<string, unknown> = out;
    for (const seg of path.slice(0, -1)) {
      const next = node[seg];
      if (typeof next !== 'object' || next === null || Array.isArray(next)) node[seg] = {};
      node = node[seg] as Record<string, unknown>;
    }
    node[path[path.length - 1]!] = coerceEnvValue(key, path, value);
  }
  if (out.identity === undefined && env.SPIFFE_ENDPOINT_SOCKET) {
    out.identity = { workloadApi: { socket: env.SPIFFE_ENDPOINT_SOCKET } };
  }
  return out;
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
      const line = where?.(issue.path);
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
 * Validates a config object (after env overrides) and applies defaults.
 *
 * @throws {AgentConfigError} naming each bad key; code `AGENT_CONFIG_INSECURE`
 *   when a setting would weaken security.
 */
export function parseAgentConfig(raw: unknown, options: ParseAgentConfigOptions = {}): AgentConfig {
  const env = options.env ?? process.env;
  const source = options.source ?? 'object';
  const insecure = insecureIssues(raw, env);
  if (insecure.length > 0) throw new AgentConfigError(source, insecure, 'AGENT_CONFIG_INSECURE');
  const result = AgentConfigSchema.safeParse(raw);
  const issues = result.success ? [] : zodIssues(result.error, options.where, raw, env);
  // No implicit policy: without an enforcer object, a config must say where its policy is.
  if (!options.enforcer && (raw as { authz?: unknown } | null | undefined)?.authz === undefined) {
    issues.unshift({ path: 'authz', message: MISSING_AUTHZ });
  }
  if (!result.success || issues.length > 0) throw new AgentConfigError(source, issues);
  return result.data;
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
}

/**
 * Loads a YAML (or JSON) config file, applies env overrides, validates it, and
 * resolves relative file paths (policy, certificates) against the file's folder.
 */
export async function loadAgentConfig(
  file: string,
  env: NodeJS.ProcessEnv = process.env,
  options: Pick<ParseAgentConfigOptions, 'enforcer'> = {},
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
  }
  return out;
}
